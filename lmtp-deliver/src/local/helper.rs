//! The delivery helper: `local` runs a short-lived copy of itself with the target user's
//! uid and gid (std's `CommandExt::uid/gid`, which also clears supplementary groups) for
//! every write into a mailbox, file or Maildir and every read of a `.forward` or
//! `:include:` file, so the root process never writes or reads such a path itself.
//!
//! Protocol: `local --local-helper KIND ARGS...`; the data to write arrives on standard
//! input; the answer is one line on standard output (`ok`, `defer DSN TEXT`,
//! `bounce DSN TEXT`, `none`), followed by the file content for `read`.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use nix::fcntl::OFlag;

use super::mbox::{self, AppendOptions};

/// First argument that selects helper mode.
pub const HELPER_ARG: &str = "--local-helper";

/// Largest `.forward` / `:include:` file read.
pub const MAX_READ: u64 = 1 << 20;

/// A helper's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ok(Vec<u8>),
    None,
    Fail { soft: bool, dsn: String, reason: String },
}

/// What the helper does.
#[derive(Debug, Clone)]
pub enum Task {
    /// Append to an mbox file.
    Mbox { path: PathBuf, opts: AppendOptions },
    /// Store into a Maildir (created when missing).
    Maildir { path: PathBuf },
    /// Read a file that must be a regular file (not a symlink); the answer carries
    /// `uid mode` on its first line, then the content.
    Read { path: PathBuf },
}

fn b(v: bool) -> &'static str {
    if v { "1" } else { "0" }
}

impl Task {
    fn args(&self) -> Vec<String> {
        match self {
            Task::Mbox { path, opts } => vec![
                "mbox".into(),
                path.display().to_string(),
                format!(
                    "{},{},{},{},{},{},{},{},{}",
                    b(opts.dotlock),
                    b(opts.dotlock_may_fail),
                    b(opts.fcntl),
                    b(opts.flock),
                    opts.owner.map_or("-".to_string(), |u| u.to_string()),
                    opts.size_limit,
                    opts.lock_attempts,
                    opts.lock_delay.as_millis(),
                    opts.stale_lock.as_secs()
                ),
            ],
            Task::Maildir { path } => vec!["maildir".into(), path.display().to_string()],
            Task::Read { path } => vec!["read".into(), path.display().to_string()],
        }
    }
}

/// Runs a helper as `creds` (`None`: as ourselves) and returns its answer.
pub fn run(exe: &Path, creds: Option<(u32, u32)>, task: &Task, input: &[u8]) -> Answer {
    let mut cmd = Command::new(exe);
    cmd.arg(HELPER_ARG)
        .args(task.args())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some((uid, gid)) = creds {
        cmd.uid(uid).gid(gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(true, "4.3.0", format!("cannot start the delivery helper {}: {e}", exe.display())),
    };
    let mut stdin = child.stdin.take();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&input);
        }
    });
    let mut out = Vec::new();
    if let Some(s) = child.stdout.take() {
        let _ = s.take(MAX_READ + 4096).read_to_end(&mut out);
    }
    let _ = feeder.join();
    let status = child.wait();
    parse_answer(&out).unwrap_or_else(|| {
        fail(true, "4.3.0", format!("delivery helper failed ({})", status.map(|s| s.to_string()).unwrap_or_default()))
    })
}

fn fail(soft: bool, dsn: &str, reason: String) -> Answer {
    Answer::Fail { soft, dsn: dsn.to_string(), reason }
}

/// Parses a helper's standard output.
pub fn parse_answer(out: &[u8]) -> Option<Answer> {
    let nl = out.iter().position(|&c| c == b'\n')?;
    let line = std::str::from_utf8(&out[..nl]).ok()?;
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "ok" => {
            let mut data = rest.as_bytes().to_vec();
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(&out[nl + 1..]);
            Some(Answer::Ok(data))
        }
        "none" => Some(Answer::None),
        "defer" | "bounce" => {
            let (dsn, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(fail(word == "defer", dsn, reason.to_string()))
        }
        _ => None,
    }
}

/// Helper-mode main: `args` are the arguments after [`HELPER_ARG`].
pub fn main(args: &[String]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let answer = match args.first().map(String::as_str) {
        Some("mbox") if args.len() == 3 => mbox_task(Path::new(&args[1]), &args[2]),
        Some("maildir") if args.len() == 2 => maildir_task(Path::new(&args[1])),
        Some("read") if args.len() == 2 => return read_task(Path::new(&args[1]), &mut out),
        _ => {
            eprintln!("usage: local {HELPER_ARG} mbox|maildir|read PATH [OPTIONS] (used by the local delivery agent)");
            return ExitCode::from(64);
        }
    };
    let line = match answer {
        Ok(extra) if extra.is_empty() => "ok\n".to_string(),
        Ok(extra) => format!("ok {extra}\n"),
        Err((soft, dsn, reason)) => {
            format!("{} {dsn} {}\n", if soft { "defer" } else { "bounce" }, reason.replace('\n', " "))
        }
    };
    let _ = out.write_all(line.as_bytes());
    rpost_maildir::release_lock_seeds();
    ExitCode::SUCCESS
}

/// `Ok(text)`: success, with text for the `ok` line (the mbox offset, for biff).
type TaskResult = Result<String, (bool, String, String)>;

fn read_stdin() -> Result<Vec<u8>, (bool, String, String)> {
    let mut data = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut data)
        .map_err(|e| (true, "4.3.0".into(), format!("reading the message: {e}")))?;
    Ok(data)
}

fn mbox_task(path: &Path, opts: &str) -> TaskResult {
    let f: Vec<&str> = opts.split(',').collect();
    let bad = || (true, "4.3.0".to_string(), format!("bad helper options {opts:?}"));
    if f.len() != 9 {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
    let o = AppendOptions {
        dotlock: f[0] == "1",
        dotlock_may_fail: f[1] == "1",
        fcntl: f[2] == "1",
        flock: f[3] == "1",
        owner: if f[4] == "-" { None } else { Some(num(f[4])? as u32) },
        size_limit: num(f[5])?,
        lock_attempts: num(f[6])? as u32,
        lock_delay: Duration::from_millis(num(f[7])?),
        stale_lock: Duration::from_secs(num(f[8])?),
    };
    let data = read_stdin()?;
    mbox::append(path, &data, &o).map(|offset| offset.to_string()).map_err(|e| (e.soft, e.dsn.to_string(), e.reason))
}

fn maildir_task(path: &Path) -> TaskResult {
    let data = read_stdin()?;
    let md = rpost_maildir::Maildir::open(path);
    match md.deliver(&mut &data[..], "") {
        Ok(_) => Ok(String::new()),
        Err(e) if e.is_over_quota() => Err((false, "5.2.2".into(), format!("maildir {}: {e}", path.display()))),
        Err(e) => Err((true, "4.2.0".into(), format!("cannot deliver to maildir {}: {e}", path.display()))),
    }
}

fn read_task(path: &Path, out: &mut dyn Write) -> ExitCode {
    let flags = (OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits();
    let answer: Result<Option<(u32, u32, Vec<u8>)>, String> =
        match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
                Err(format!("{} is a symbolic link", path.display()))
            }
            Err(e) => Err(format!("cannot open {}: {e}", path.display())),
            Ok(f) => match f.metadata() {
                Err(e) => Err(format!("cannot stat {}: {e}", path.display())),
                Ok(m) if !m.file_type().is_file() => Err(format!("{} is not a regular file", path.display())),
                Ok(m) if m.len() > MAX_READ => Err(format!("{} is larger than {MAX_READ} bytes", path.display())),
                Ok(m) => {
                    let mut data = Vec::new();
                    match f.take(MAX_READ).read_to_end(&mut data) {
                        Ok(_) => Ok(Some((m.uid(), m.mode(), data))),
                        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                    }
                }
            },
        };
    let _ = match answer {
        Ok(None) => out.write_all(b"none\n"),
        Ok(Some((uid, mode, data))) => {
            out.write_all(format!("ok {uid} {mode}\n").as_bytes()).and_then(|()| out.write_all(&data))
        }
        Err(e) => out.write_all(format!("defer 4.3.0 {}\n", e.replace('\n', " ")).as_bytes()),
    };
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        assert_eq!(parse_answer(b"ok\n"), Some(Answer::Ok(Vec::new())));
        assert_eq!(parse_answer(b"ok 1000 33188\nline\n"), Some(Answer::Ok(b"1000 33188\nline\n".to_vec())));
        assert_eq!(parse_answer(b"none\n"), Some(Answer::None));
        assert_eq!(
            parse_answer(b"bounce 5.2.2 mailbox full\n"),
            Some(Answer::Fail { soft: false, dsn: "5.2.2".into(), reason: "mailbox full".into() })
        );
        assert_eq!(
            parse_answer(b"defer 4.2.0 x y\n").map(|a| matches!(a, Answer::Fail { soft: true, .. })),
            Some(true)
        );
        assert_eq!(parse_answer(b"garbage"), None);
        assert_eq!(parse_answer(b""), None);
    }

    #[test]
    fn read_task_refuses_symlinks_and_fifos() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, "hello\n").unwrap();
        let mut out = Vec::new();
        read_task(&f, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("ok ") && text.ends_with("\nhello\n"), "{text}");
        let l = t.path().join("l");
        std::os::unix::fs::symlink(&f, &l).unwrap();
        let mut out = Vec::new();
        read_task(&l, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("symbolic link"));
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut out = Vec::new();
        read_task(&fifo, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("not a regular file"));
        let mut out = Vec::new();
        read_task(&t.path().join("missing"), &mut out);
        assert_eq!(out, b"none\n");
    }
}

//! Delivery to `|command` and `mailbox_command`: `/bin/sh -c` with the message on stdin, a
//! clean environment, the target's uid/gid (set by std between fork and exec, no unsafe
//! code), `command_time_limit`, and Postfix's mapping of exit codes (sysexits.h).

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Command output kept for the log and the bounce reason.
pub const OUTPUT_LIMIT: usize = 2000;

/// One command to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub command: String,
    /// local_command_shell, e.g. `["/usr/sbin/smrsh", "-c"]`; empty: `/bin/sh -c`.
    pub shell: Vec<String>,
    /// uid and gid to run as; `None` keeps ours (not root).
    pub creds: Option<(u32, u32)>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub time_limit: Duration,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    NotStarted(String),
}

/// Runs `job` with `input` on its standard input; returns how it ended and its combined
/// standard output and error (cut at [`OUTPUT_LIMIT`] bytes).
pub fn run(job: &Job, input: &[u8]) -> (Ended, String) {
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return (Ended::NotStarted(format!("pipe: {e}")), String::new()),
    };
    let writer2 = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return (Ended::NotStarted(format!("pipe: {e}")), String::new()),
    };
    let mut cmd = match job.shell.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c");
            c
        }
    };
    cmd.arg(&job.command)
        .env_clear()
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&job.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        // Its own process group, so a time-out kills everything it started.
        .process_group(0);
    if let Some((uid, gid)) = job.creds {
        // std clears the supplementary groups when it sets the uid.
        cmd.uid(uid).gid(gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (Ended::NotStarted(e.to_string()), String::new()),
    };
    drop(cmd);
    let mut stdin = child.stdin.take();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // A command that does not read its input is not an error (EPIPE).
            let _ = s.write_all(&input);
        }
    });
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + job.time_limit;
    let ended = loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                break match (st.code(), st.signal()) {
                    (Some(c), _) => Ended::Exited(c),
                    (None, Some(s)) => Ended::Signaled(s),
                    _ => Ended::Exited(-1),
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break Ended::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break Ended::NotStarted(format!("wait: {e}")),
        }
    };
    let _ = feeder.join();
    // The output pipe closes when the last process holding it exits; a background process
    // the command left behind gets a moment, not forever.
    let mut out = Vec::new();
    let grace = Instant::now() + Duration::from_secs(2);
    while let Some(left) = grace.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                if out.len() < OUTPUT_LIMIT {
                    out.extend_from_slice(&chunk);
                }
            }
            Err(_) => break,
        }
    }
    out.truncate(OUTPUT_LIMIT);
    (ended, printable(&out))
}

/// Output as one printable line.
fn printable(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s: String = s.trim().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    s
}

/// sysexits.h codes as Postfix's sys_exits.c words them: (dsn, text). `4.x` is retried.
pub fn sysexit(code: i32) -> Option<(&'static str, &'static str)> {
    Some(match code {
        64 => ("5.3.0", "command line usage error"),
        65 => ("5.6.0", "data format error"),
        66 => ("5.3.0", "cannot open input"),
        67 => ("5.1.1", "user unknown"),
        68 => ("5.1.2", "host name unknown"),
        69 => ("5.3.0", "service unavailable"),
        70 => ("5.3.0", "internal software error"),
        71 => ("4.3.0", "system resource problem"),
        72 => ("5.3.0", "critical OS file missing"),
        73 => ("5.2.0", "can't create user output file"),
        74 => ("5.3.0", "input/output error"),
        75 => ("4.3.0", "temporary failure"),
        76 => ("5.5.0", "remote error in protocol"),
        77 => ("5.7.0", "permission denied"),
        78 => ("4.3.5", "local configuration error"),
        _ => return None,
    })
}

/// The delivery result of a command: `Ok(())` for exit 0, else `(soft, dsn, reason)`.
pub fn outcome(ended: &Ended, output: &str) -> Result<(), (bool, &'static str, String)> {
    let with_output = |text: String| {
        if output.is_empty() { text } else { format!("{text}. Command output: {output}") }
    };
    match ended {
        Ended::Exited(0) => Ok(()),
        Ended::Exited(code) => match sysexit(*code) {
            Some((dsn, text)) => Err((dsn.starts_with('4'), dsn, with_output(text.to_string()))),
            None => Err((false, "5.3.0", with_output(format!("Command died with status {code}")))),
        },
        Ended::Signaled(sig) => Err((true, "4.3.0", with_output(format!("Command killed by signal {sig}")))),
        Ended::TimedOut => Err((true, "4.3.0", with_output("Command time limit exceeded".to_string()))),
        Ended::NotStarted(e) => Err((true, "4.3.0", format!("cannot run command: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cmd: &str) -> Job {
        Job {
            command: cmd.into(),
            shell: Vec::new(),
            creds: None,
            env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("RECIPIENT".into(), "a@b".into())],
            cwd: "/".into(),
            time_limit: Duration::from_secs(30),
        }
    }

    #[test]
    fn exit_codes_map_like_postfix() {
        assert_eq!(outcome(&Ended::Exited(0), "x"), Ok(()));
        assert_eq!(outcome(&Ended::Exited(75), ""), Err((true, "4.3.0", "temporary failure".into())));
        assert_eq!(
            outcome(&Ended::Exited(67), "no such user"),
            Err((false, "5.1.1", "user unknown. Command output: no such user".into()))
        );
        assert_eq!(outcome(&Ended::Exited(1), ""), Err((false, "5.3.0", "Command died with status 1".into())));
        assert!(outcome(&Ended::Exited(71), "").unwrap_err().0);
        assert!(outcome(&Ended::Exited(78), "").unwrap_err().0);
        assert!(outcome(&Ended::TimedOut, "").unwrap_err().0);
        assert!(outcome(&Ended::Signaled(9), "").unwrap_err().0);
    }

    #[test]
    fn runs_with_input_environment_and_output() {
        let (ended, out) = run(&job("read l; echo \"$l to $RECIPIENT\"; echo err >&2; exit 3"), b"hello\n");
        assert_eq!(ended, Ended::Exited(3));
        assert_eq!(out, "hello to a@b err");
        let (ended, _) = run(&job("exit 0"), &vec![b'x'; 1 << 20]);
        assert_eq!(ended, Ended::Exited(0), "a command that ignores its input");
    }

    #[test]
    fn local_command_shell_replaces_bin_sh() {
        let j = Job { shell: vec!["/bin/echo".into(), "via".into()], ..job("the command") };
        assert_eq!(run(&j, b""), (Ended::Exited(0), "via the command".to_string()));
    }

    #[test]
    fn time_limit_kills_the_process_group() {
        let j = Job { time_limit: Duration::from_millis(300), ..job("sleep 30 & sleep 30") };
        let (ended, _) = run(&j, b"");
        assert_eq!(ended, Ended::TimedOut);
    }
}

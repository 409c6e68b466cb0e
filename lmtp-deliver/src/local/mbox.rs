//! Message copies as local(8) writes them (Postfix mail_copy): the `From ` envelope line,
//! `Return-Path:` and `Delivered-To:` headers, `>From ` quoting and the blank line that
//! ends an mbox message; and the locked, all-or-nothing append to an mbox file.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::OFlag;

/// What goes around the content (Postfix MAIL_COPY_* flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy<'a> {
    /// Envelope sender ("" for the null sender).
    pub sender: &'a str,
    /// `Delivered-To:` value (lower-case recipient), when one is prepended.
    pub delivered_to: Option<&'a str>,
    /// The `From sender date` line (mbox files, commands).
    pub from_line: bool,
    /// `>From ` quoting and a trailing blank line (mbox files only).
    pub mbox: bool,
    /// Time for the `From ` line.
    pub time: SystemTime,
}

/// `Thu Jan  1 00:00:00 1970` (asctime, UTC).
pub fn asctime(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        WD[days.rem_euclid(7) as usize],
        MON[(month - 1) as usize],
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        year
    )
}

/// Sanitises an address for a header or the `From ` line: no line breaks, no spaces.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// The copy of `content` (queue-file content: CRLF line endings) to write: LF line endings,
/// envelope line and trace headers first.
pub fn format(content: &[u8], c: &Copy<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 256);
    if c.from_line {
        let sender = if c.sender.is_empty() { "MAILER-DAEMON".to_string() } else { clean(c.sender).replace(' ', "_") };
        out.extend_from_slice(format!("From {sender}  {}\n", asctime(c.time)).as_bytes());
    }
    out.extend_from_slice(format!("Return-Path: <{}>\n", clean(c.sender)).as_bytes());
    if let Some(d) = c.delivered_to {
        out.extend_from_slice(format!("Delivered-To: {}\n", clean(d)).as_bytes());
    }
    let mut rest = content;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if c.mbox && line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
        out.push(b'\n');
        rest = next;
    }
    if c.mbox {
        out.push(b'\n');
    }
    out
}

/// Why an append failed: `soft` failures are retried later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendError {
    pub soft: bool,
    pub dsn: &'static str,
    pub reason: String,
}

impl AppendError {
    fn soft(dsn: &'static str, reason: String) -> AppendError {
        AppendError { soft: true, dsn, reason }
    }
    fn hard(dsn: &'static str, reason: String) -> AppendError {
        AppendError { soft: false, dsn, reason }
    }
}

/// How to lock and check an mbox file.
#[derive(Debug, Clone)]
pub struct AppendOptions {
    /// Create `PATH.lock` (Postfix dotlock); `dotlock_may_fail`: go on without it when the
    /// directory is not writable (files named in aliases, as Postfix).
    pub dotlock: bool,
    pub dotlock_may_fail: bool,
    pub fcntl: bool,
    pub flock: bool,
    /// The file must be owned by this uid (strict_mailbox_ownership).
    pub owner: Option<u32>,
    /// mailbox_size_limit (0: none): largest size the file may reach.
    pub size_limit: u64,
    pub lock_attempts: u32,
    pub lock_delay: Duration,
    pub stale_lock: Duration,
}

impl Default for AppendOptions {
    fn default() -> AppendOptions {
        AppendOptions {
            dotlock: true,
            dotlock_may_fail: true,
            fcntl: true,
            flock: false,
            owner: None,
            size_limit: 0,
            lock_attempts: 20,
            lock_delay: Duration::from_secs(1),
            stale_lock: Duration::from_secs(500),
        }
    }
}

/// Postfix's mbox_dsn(): a full disk or file system quota is the user's problem (5.2.2).
fn io_dsn(e: &io::Error) -> (bool, &'static str) {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EDQUOT) | Some(Errno::EFBIG) => (false, "5.2.2"),
        Some(Errno::ENOSPC) => (true, "4.3.0"),
        _ => (true, "4.2.0"),
    }
}

/// A dot-lock file, removed on drop.
#[derive(Debug)]
pub struct DotLock {
    path: PathBuf,
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates `PATH.lock` exclusively (never through a symlink), retrying `attempts` times and
/// removing a lock older than `stale`.
pub fn dotlock(path: &Path, attempts: u32, delay: Duration, stale: Duration) -> io::Result<DotLock> {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let mut last = io::Error::from(io::ErrorKind::WouldBlock);
    for attempt in 0..attempts.max(1) {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&lock)
        {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                return Ok(DotLock { path: lock });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let old = std::fs::symlink_metadata(&lock)
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > stale);
                if old {
                    tracing::warn!("{}: removing stale lock file", lock.display());
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                last = io::Error::new(io::ErrorKind::WouldBlock, format!("{} exists", lock.display()));
            }
            Err(e) => return Err(e),
        }
        if attempt + 1 < attempts {
            std::thread::sleep(delay);
        }
    }
    Err(last)
}

fn fcntl_lock(f: &File, attempts: u32, delay: Duration) -> io::Result<()> {
    let lock = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    for attempt in 0..attempts.max(1) {
        match nix::fcntl::fcntl(f.as_fd(), nix::fcntl::FcntlArg::F_SETLK(&lock)) {
            Ok(_) => return Ok(()),
            Err(Errno::EAGAIN) | Err(Errno::EACCES) if attempt + 1 < attempts => std::thread::sleep(delay),
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Err(io::Error::from(io::ErrorKind::WouldBlock))
}

fn flock_lock(f: &File, attempts: u32, delay: Duration) -> io::Result<()> {
    for attempt in 0..attempts.max(1) {
        match f.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if attempt + 1 < attempts => std::thread::sleep(delay),
            Err(std::fs::TryLockError::WouldBlock) => return Err(io::Error::from(io::ErrorKind::WouldBlock)),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    Err(io::Error::from(io::ErrorKind::WouldBlock))
}

/// Opens (or creates, mode 0600) `path` for appending without following a symlink, and
/// refuses anything but a regular file with one link (a hard link planted to another
/// file would redirect the write).
pub fn open_append(path: &Path, owner: Option<u32>) -> Result<File, AppendError> {
    let flags = (OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits();
    let opened = std::fs::OpenOptions::new().append(true).custom_flags(flags).open(path);
    let file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match std::fs::OpenOptions::new().append(true).create_new(true).mode(0o600).custom_flags(flags).open(path) {
                Ok(f) => f,
                Err(e) => {
                    let (soft, dsn) = io_dsn(&e);
                    return Err(AppendError {
                        soft,
                        dsn: if soft { "4.2.0" } else { dsn },
                        reason: format!("cannot create file {}: {e}", path.display()),
                    });
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(Errno::ELOOP as i32) => {
            return Err(AppendError::hard(
                "5.2.0",
                format!("cannot open file {}: it is a symbolic link", path.display()),
            ));
        }
        Err(e) => return Err(AppendError::soft("4.2.0", format!("cannot open file {}: {e}", path.display()))),
    };
    let md = file.metadata().map_err(|e| AppendError::soft("4.2.0", format!("cannot stat {}: {e}", path.display())))?;
    if !md.file_type().is_file() {
        return Err(AppendError::hard("5.2.0", format!("cannot append to {}: not a regular file", path.display())));
    }
    if md.nlink() != 1 {
        return Err(AppendError::hard(
            "5.2.0",
            format!("cannot append to {}: file has {} hard links", path.display(), md.nlink()),
        ));
    }
    if let Some(uid) = owner
        && md.uid() != uid
    {
        return Err(AppendError::soft(
            "4.2.0",
            format!("destination {} is not owned by recipient (uid {} instead of {uid})", path.display(), md.uid()),
        ));
    }
    // Back to blocking writes.
    let _ = nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND));
    Ok(file)
}

/// Appends one formatted message to an mbox file: locks, checks the size limit, writes,
/// fsyncs; on any error the file is truncated back to where it was, so a failed delivery
/// never leaves half a message behind. Returns the offset the message starts at.
pub fn append(path: &Path, data: &[u8], o: &AppendOptions) -> Result<u64, AppendError> {
    let _dot = if o.dotlock {
        match dotlock(path, o.lock_attempts, o.lock_delay, o.stale_lock) {
            Ok(l) => Some(l),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(AppendError::soft("4.2.0", format!("cannot lock {}: {e}", path.display())));
            }
            Err(_) if o.dotlock_may_fail => None,
            Err(e) => {
                return Err(AppendError::soft("4.2.0", format!("cannot create lock file for {}: {e}", path.display())));
            }
        }
    } else {
        None
    };
    let mut file = open_append(path, o.owner)?;
    let lock_err = |e: io::Error| AppendError::soft("4.2.0", format!("cannot lock {}: {e}", path.display()));
    if o.fcntl {
        fcntl_lock(&file, o.lock_attempts, o.lock_delay).map_err(lock_err)?;
    }
    if o.flock {
        flock_lock(&file, o.lock_attempts, o.lock_delay).map_err(lock_err)?;
    }
    let before = file
        .metadata()
        .map(|m| m.len())
        .map_err(|e| AppendError::soft("4.2.0", format!("cannot stat {}: {e}", path.display())))?;
    if o.size_limit > 0 && before + data.len() as u64 > o.size_limit {
        return Err(AppendError::hard(
            "5.2.2",
            format!("cannot update mailbox {}: File too large (mailbox_size_limit {})", path.display(), o.size_limit),
        ));
    }
    let written = file.write_all(data).and_then(|()| file.sync_data());
    if let Err(e) = written {
        let _ = file.set_len(before);
        let _ = file.sync_all();
        let (soft, dsn) = io_dsn(&e);
        return Err(AppendError { soft, dsn, reason: format!("cannot update mailbox {}: {e}", path.display()) });
    }
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(mbox: bool) -> Copy<'static> {
        Copy {
            sender: "bob@example.org",
            delivered_to: Some("root@mail.example.test"),
            from_line: true,
            mbox,
            time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn asctime_is_ctime() {
        assert_eq!(asctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "Tue Nov 14 22:13:20 2023");
        assert_eq!(asctime(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn mbox_format() {
        let content = b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nend";
        let out = format(content, &copy(true));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From bob@example.org  Tue Nov 14 22:13:20 2023\nReturn-Path: <bob@example.org>\nDelivered-To: root@mail.example.test\nSubject: x\n\n>From here\n>From there\nend\n\n"
        );
        // Commands get the From line but no quoting and no blank line.
        let out = format(content, &copy(false));
        assert!(String::from_utf8(out).unwrap().ends_with("\n\nFrom here\n>From there\nend\n"));
        let null = Copy { sender: "", delivered_to: None, from_line: true, mbox: true, ..copy(true) };
        let out = String::from_utf8(format(b"a\r\n", &null)).unwrap();
        assert_eq!(out, "From MAILER-DAEMON  Tue Nov 14 22:13:20 2023\nReturn-Path: <>\na\n\n");
    }

    #[test]
    fn append_locks_and_rolls_back() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("mbox");
        let o = AppendOptions { lock_attempts: 2, lock_delay: Duration::from_millis(10), ..AppendOptions::default() };
        append(&p, b"From a\n\n", &o).unwrap();
        append(&p, b"From b\n\n", &o).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"From a\n\nFrom b\n\n");
        assert!(!t.path().join("mbox.lock").exists());
        // Over the size limit: refused, nothing written.
        let small = AppendOptions { size_limit: 20, ..o.clone() };
        let e = append(&p, b"From c\n\n", &small).unwrap_err();
        assert_eq!((e.soft, e.dsn), (false, "5.2.2"));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 16);
        // A held dot-lock makes the delivery wait, then defer.
        let held = dotlock(&p, 1, Duration::ZERO, Duration::from_secs(500)).unwrap();
        let e = append(&p, b"x", &o).unwrap_err();
        assert!(e.soft && e.reason.contains("cannot lock"), "{e:?}");
        drop(held);
        // Symlinks and hard links are refused.
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = append(&link, b"x", &o).unwrap_err();
        assert!(!e.soft && e.reason.contains("symbolic link"), "{e:?}");
        let hard = t.path().join("hard");
        std::fs::hard_link(&p, &hard).unwrap();
        let e = append(&hard, b"x", &o).unwrap_err();
        assert!(e.reason.contains("2 hard links"), "{e:?}");
        // Ownership check.
        std::fs::remove_file(&hard).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let strict = AppendOptions { owner: Some(me + 1), ..o.clone() };
        assert!(append(&p, b"x", &strict).unwrap_err().reason.contains("not owned by recipient"));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 16);
    }
}

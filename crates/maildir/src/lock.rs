//! Dovecot-compatible dot-locks (`<file>.lock`, created with `O_EXCL`, holding `pid:host`).

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::MaildirError;
use crate::dir::{Dir, Owner};
use crate::name::raw_hostname;

/// Dovecot's MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT: a lock not touched for this long is stale.
pub const UIDLIST_STALE: Duration = Duration::from_secs(120);
/// A lock younger than this is not checked for a dead owner (Dovecot STALE_PID_CHECK_SECS).
const PID_CHECK_AGE: i64 = 2;

/// A held dot-lock; removed on drop.
#[derive(Debug)]
pub(crate) struct DotLock {
    dir: Dir,
    lock_name: String,
    owner: Option<Owner>,
    // Declared last: dropped after the lock file is gone, so the next thread finds it free.
    _gate: Gate,
}

/// Threads of one process queue for a lock path here, woken as soon as it is released,
/// instead of polling the lock file with growing sleeps: twenty LMTP deliveries to one
/// mailbox in one lmtp-deliver otherwise spend most of their time asleep. The dot-lock file
/// still excludes other processes (imapd, Dovecot).
#[derive(Debug)]
struct Gate(PathBuf);

static GATES: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
static GATE_FREED: Condvar = Condvar::new();

impl Gate {
    /// Waits until no other thread of this process holds `path`, or returns None at `deadline`.
    fn enter(path: PathBuf, deadline: Instant) -> Option<Gate> {
        let mut held = GATES.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let set = held.get_or_insert_with(HashSet::new);
            if !set.contains(&path) {
                set.insert(path.clone());
                return Some(Gate(path));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            held = GATE_FREED.wait_timeout(held, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut held = GATES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = held.as_mut() {
            set.remove(&self.0);
        }
        GATE_FREED.notify_all();
    }
}

/// Test-only: how many times each lock file was taken (tests run in parallel, hence per path).
#[cfg(test)]
static ACQUISITIONS: Mutex<Option<std::collections::HashMap<PathBuf, u64>>> = Mutex::new(None);

#[cfg(test)]
fn count_acquisition(path: PathBuf) {
    let mut m = ACQUISITIONS.lock().unwrap_or_else(|e| e.into_inner());
    *m.get_or_insert_with(Default::default).entry(path).or_default() += 1;
}

#[cfg(test)]
pub(crate) fn acquisitions(path: &std::path::Path) -> u64 {
    let m = ACQUISITIONS.lock().unwrap_or_else(|e| e.into_inner());
    m.as_ref().and_then(|m| m.get(path)).copied().unwrap_or(0)
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl DotLock {
    /// Takes `<target>.lock` in `dir`, waiting up to `timeout`. A lock is overridden when its
    /// owner (`pid:host` on this host) is gone, or when neither it nor `target` changed for
    /// `stale`. A lock held by this very process (another thread) is waited for.
    pub(crate) fn acquire(
        dir: &Dir,
        target: &str,
        stale: Duration,
        timeout: Duration,
        owner: Option<Owner>,
    ) -> Result<DotLock, MaildirError> {
        let lock_name = format!("{target}.lock");
        let io_err = |e: io::Error| MaildirError::io(dir.path().join(&lock_name), e);
        let deadline = Instant::now() + timeout;
        let gate = Gate::enter(dir.path().join(&lock_name), deadline)
            .ok_or_else(|| MaildirError::LockTimeout(dir.path().join(&lock_name)))?;
        // Only other processes are left to wait for: poll, briefly, as Dovecot does.
        let mut wait = Duration::from_millis(1);
        loop {
            match dir.create_new(&lock_name, 0o600, owner) {
                Ok(mut f) => {
                    let _ = f.write_all(format!("{}:{}", std::process::id(), raw_hostname()).as_bytes());
                    #[cfg(test)]
                    count_acquisition(dir.path().join(&lock_name));
                    return Ok(DotLock { dir: dir.try_clone().map_err(io_err)?, lock_name, owner, _gate: gate });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(e)),
            }
            if Self::is_stale(dir, &lock_name, target, stale) {
                tracing::warn!("{}: overriding stale lock", dir.path().join(&lock_name).display());
                match dir.unlink(&lock_name) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(e)),
                }
            }
            if Instant::now() >= deadline {
                return Err(MaildirError::LockTimeout(dir.path().join(&lock_name)));
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_millis(25));
        }
    }

    fn is_stale(dir: &Dir, lock_name: &str, target: &str, stale: Duration) -> bool {
        let Ok(st) = dir.stat(lock_name) else { return false };
        let now = now_secs();
        if st.st_mtime < now - PID_CHECK_AGE
            && let Some(pid) = read_local_pid(dir, lock_name)
            && pid != std::process::id() as i32
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)
        {
            return true;
        }
        // An empty lock: its owner was killed between creating it and writing `pid:host`
        // (the next system call). A live owner writes within microseconds, so after the pid
        // check age it is abandoned; waiting out the full stale time would stall every
        // delivery into the mailbox for two minutes.
        if st.st_size == 0 && st.st_mtime < now - PID_CHECK_AGE {
            return true;
        }
        let target_mtime = dir.stat(target).map(|s| s.st_mtime).unwrap_or(0);
        let last_change = st.st_mtime.max(st.st_ctime).max(target_mtime);
        now > last_change + stale.as_secs() as i64
    }

    /// Replaces `target` with `content` while the lock is held: `<target>.tmp` is written,
    /// fsync'd and renamed over the target, then the lock is released. (Dovecot renames the
    /// lock file itself over the target; a separate file keeps `pid:host` in the lock, so a
    /// writer killed half-way leaves a lock that the next one can tell is abandoned.)
    /// Consumes the lock.
    pub(crate) fn replace(self, content: &[u8]) -> Result<(), MaildirError> {
        let target = self.lock_name.trim_end_matches(".lock").to_string();
        let tmp = format!("{target}.tmp");
        let r = (|| {
            match self.dir.unlink(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = self.dir.create_new(&tmp, 0o600, self.owner)?;
            f.write_all(content)?;
            f.sync_all()?;
            self.dir.rename(&tmp, &self.dir, &target)?;
            self.dir.fsync()
        })();
        if r.is_err() {
            let _ = self.dir.unlink(&tmp);
        }
        r.map_err(|e| MaildirError::io(self.dir.path().join(&tmp), e))
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = self.dir.unlink(&self.lock_name);
    }
}

fn read_local_pid(dir: &Dir, name: &str) -> Option<i32> {
    let mut buf = String::new();
    dir.open_read(name).ok()?.take(512).read_to_string(&mut buf).ok()?;
    let (pid, host) = buf.trim_end_matches('\n').split_once(':')?;
    if host != raw_hostname() {
        return None;
    }
    pid.parse().ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(t: &tempfile::TempDir) -> Dir {
        Dir::walk(t.path(), false, None, false).unwrap()
    }

    #[test]
    fn an_empty_lock_left_by_a_killed_owner_is_taken_over() {
        let t = tempfile::tempdir().unwrap();
        let d = dir(&t);
        let lock = t.path().join("dovecot-uidlist.lock");
        std::fs::write(&lock, "").unwrap();
        // Young: it may be an owner between create and write.
        assert!(!DotLock::is_stale(&d, "dovecot-uidlist.lock", "dovecot-uidlist", UIDLIST_STALE));
        let old = std::time::SystemTime::now() - Duration::from_secs(10);
        std::fs::File::options().write(true).open(&lock).unwrap().set_modified(old).unwrap();
        assert!(DotLock::is_stale(&d, "dovecot-uidlist.lock", "dovecot-uidlist", UIDLIST_STALE));
        let l = DotLock::acquire(&d, "dovecot-uidlist", UIDLIST_STALE, Duration::from_secs(1), None).unwrap();
        drop(l);
        assert!(!lock.exists());
    }

    #[test]
    fn lock_excludes_and_is_released() {
        let t = tempfile::tempdir().unwrap();
        let d = dir(&t);
        let l = DotLock::acquire(&d, "dovecot-uidlist", UIDLIST_STALE, Duration::from_secs(1), None).unwrap();
        let content = std::fs::read_to_string(t.path().join("dovecot-uidlist.lock")).unwrap();
        assert_eq!(content, format!("{}:{}", std::process::id(), raw_hostname()));
        let err = DotLock::acquire(&d, "dovecot-uidlist", UIDLIST_STALE, Duration::from_millis(50), None).unwrap_err();
        assert!(matches!(err, MaildirError::LockTimeout(_)), "{err}");
        drop(l);
        assert!(!t.path().join("dovecot-uidlist.lock").exists());
        DotLock::acquire(&d, "dovecot-uidlist", UIDLIST_STALE, Duration::from_secs(1), None).unwrap();
    }

    #[test]
    fn lock_of_a_dead_process_is_overridden() {
        let t = tempfile::tempdir().unwrap();
        let d = dir(&t);
        let lock = t.path().join("x.lock");
        // A pid that cannot exist (above pid_max), written three seconds ago.
        std::fs::write(&lock, format!("99999999:{}", raw_hostname())).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3);
        std::fs::File::options().write(true).open(&lock).unwrap().set_modified(old).unwrap();
        DotLock::acquire(&d, "x", UIDLIST_STALE, Duration::from_secs(2), None).unwrap();
        // Another host's lock is only overridden when stale.
        std::fs::write(&lock, "1:some.other.host").unwrap();
        assert!(DotLock::acquire(&d, "x", UIDLIST_STALE, Duration::from_millis(30), None).is_err());
        DotLock::acquire(&d, "x", Duration::ZERO, Duration::from_secs(3), None).unwrap();
    }

    #[test]
    fn replace_renames_a_new_file_over_the_target() {
        let t = tempfile::tempdir().unwrap();
        let d = dir(&t);
        std::fs::write(t.path().join("subscriptions"), "old").unwrap();
        let l = DotLock::acquire(&d, "subscriptions", Duration::from_secs(30), Duration::from_secs(1), None).unwrap();
        l.replace(b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(t.path().join("subscriptions")).unwrap(), "new\n");
        assert!(!t.path().join("subscriptions.lock").exists());
        assert!(!t.path().join("subscriptions.tmp").exists());
    }
}

//! Dovecot-compatible dot-locks (`<file>.lock`, holding `pid:host`).
//!
//! A lock is taken by hard-linking a per-process seed file in the mailbox's `tmp/` to the
//! lock name (the classic NFS-safe dot-lock, which Dovecot's own `file_dotlock` also uses),
//! and released by unlinking the name, so a lock cycle allocates and frees no inode. With
//! `O_EXCL` creation each cycle freed one, and ext4 without a journal scans every inode freed
//! in the last five minutes (while its inode table block is dirty) on each new allocation in
//! the block group: at hundreds of deliveries a second that scan was the largest single cost
//! of smtpd and lmtp-deliver. Where linking cannot work (no `tmp/`, a seed someone swapped),
//! the lock is created with `O_EXCL` as before; the two kinds exclude each other, and
//! Dovecot's.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
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
        // Only other processes are left to wait for. They are waited for by watching the
        // directory for the lock's removal (inotify); without it, by polling with growing
        // sleeps, as Dovecot does. Sleeps of up to 25 ms made concurrent APPENDs from
        // sixteen imapd processes take 57 ms at the median.
        let mut wait = Duration::from_millis(1);
        let mut removal: Option<Option<Removal>> = None;
        loop {
            match take(dir, &lock_name, owner) {
                Ok(()) => {
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
            let now = Instant::now();
            if now >= deadline {
                return Err(MaildirError::LockTimeout(dir.path().join(&lock_name)));
            }
            match &removal {
                // Watch first, then try again: a removal in between is not missed.
                None => {
                    removal = Some(Removal::watch(dir));
                    continue;
                }
                // Woken early by any removal; stale locks are still checked now and then.
                Some(Some(r)) => r.wait(&lock_name, (deadline - now).min(STALE_CHECK_EVERY)),
                Some(None) => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_millis(25));
                }
            }
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

/// How often a waiter woken by nothing looks whether the lock went stale.
const STALE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Wakes a waiter when a name in the lock's directory is removed or renamed away (an unlock:
/// ours or Dovecot's, which renames its lock over the target).
struct Removal(nix::sys::inotify::Inotify);

impl Removal {
    /// None: inotify is not available (no /proc, too many watches): the caller polls.
    fn watch(dir: &Dir) -> Option<Removal> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        // The open directory itself, not its path, which may have changed since.
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(dir)));
        ino.add_watch(path.as_str(), AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM).ok()?;
        Some(Removal(ino))
    }

    /// Waits until `name` is removed (or anything goes wrong), at most `limit`.
    fn wait(&self, name: &str, limit: Duration) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let timeout = PollTimeout::try_from(left.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(&self.0), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
            match self.0.read_events() {
                Ok(events) if events.iter().any(|e| e.name.as_deref().is_some_and(|n| n == name)) => return,
                Ok(_) if Instant::now() < end => continue,
                _ => return,
            }
        }
    }
}

/// What a lock file holds: who owns it.
fn lock_content() -> String {
    format!("{}:{}", std::process::id(), raw_hostname())
}

/// Creates the lock `name` in `dir`: linked from this process's seed when it can be, else
/// created with `O_EXCL`. `AlreadyExists` when someone holds it.
fn take(dir: &Dir, name: &str, owner: Option<Owner>) -> io::Result<()> {
    match seeds::link(dir, name, owner) {
        Ok(true) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Ok(false) | Err(_) => {}
    }
    let mut f = dir.create_new(name, 0o600, owner)?;
    let _ = f.write_all(lock_content().as_bytes());
    Ok(())
}

/// The per-process seed files that locks are linked from, one in the `tmp/` of each mailbox
/// directory this process locked in lately (the most recent [`seeds::KEEP`]; an older one is
/// removed when a new one is made). [`release_seeds`] removes them at exit; those of a killed
/// process stay in `tmp/` like any interrupted delivery's file.
mod seeds {
    use super::*;
    use nix::sys::stat::SFlag;

    /// Mailbox directories whose seed a process keeps.
    pub(super) const KEEP: usize = 64;

    #[derive(Debug)]
    struct Seed {
        /// The lock directory, as opened (the cache key).
        dir: PathBuf,
        tmp: Dir,
        ino: u64,
        /// False once linking failed for another reason than a missing seed (a file system
        /// without hard links): locks here are created instead, without making seeds again.
        usable: std::sync::atomic::AtomicBool,
    }

    /// Most recently used first.
    static SEEDS: Mutex<Vec<Arc<Seed>>> = Mutex::new(Vec::new());

    pub(super) fn name() -> String {
        format!("rpost-lock.{}.{}", std::process::id(), raw_hostname())
    }

    fn cached(dir: &Dir) -> Option<Arc<Seed>> {
        let mut seeds = SEEDS.lock().unwrap_or_else(|e| e.into_inner());
        let i = seeds.iter().position(|s| s.dir == dir.path())?;
        let seed = seeds.remove(i);
        seeds.insert(0, seed.clone());
        Some(seed)
    }

    fn forget(seed: &Arc<Seed>) {
        SEEDS.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| !Arc::ptr_eq(s, seed));
    }

    /// Makes this process's seed in `dir/tmp`, replacing a leftover of the same name (a
    /// dead process that had our pid).
    fn make(dir: &Dir, owner: Option<Owner>) -> io::Result<Arc<Seed>> {
        let tmp = dir.sub("tmp")?;
        let name = name();
        match tmp.unlink(&name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = tmp.create_new(&name, 0o600, owner)?;
        f.write_all(lock_content().as_bytes())?;
        let ino = nix::sys::stat::fstat(&f)?.st_ino;
        let seed = Arc::new(Seed { dir: dir.path().to_path_buf(), tmp, ino, usable: true.into() });
        let evicted = {
            let mut seeds = SEEDS.lock().unwrap_or_else(|e| e.into_inner());
            seeds.retain(|s| s.dir != seed.dir);
            seeds.insert(0, seed.clone());
            let keep = seeds.len().min(KEEP);
            seeds.split_off(keep)
        };
        for old in evicted {
            let _ = old.tmp.unlink(&name);
        }
        Ok(seed)
    }

    /// Links the seed to `lock` in `dir`. Ok(false): no seed can be used here (the caller
    /// creates the lock itself); `AlreadyExists`: the lock is held.
    pub(super) fn link(dir: &Dir, lock: &str, owner: Option<Owner>) -> io::Result<bool> {
        let name = name();
        let mut fresh = false;
        loop {
            let seed = match cached(dir) {
                Some(s) => s,
                None => {
                    fresh = true;
                    make(dir, owner)?
                }
            };
            if !seed.usable.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(false);
            }
            match seed.tmp.link(&name, dir, lock) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
                // The seed (or its tmp/) is gone: a tmp/ clean-up, or a mailbox deleted
                // and made again. Made again once.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !fresh => {
                    forget(&seed);
                    continue;
                }
                Err(e) => {
                    seed.usable.store(false, std::sync::atomic::Ordering::Relaxed);
                    return Err(e);
                }
            }
            // The mail user owns tmp/ and could have put something else under the seed's
            // name: the lock must be our seed's inode, or it is not used.
            let ours = dir.stat(lock).is_ok_and(|st| crate::dir::is_type(&st, SFlag::S_IFREG) && st.st_ino == seed.ino);
            if ours {
                return Ok(true);
            }
            let _ = dir.unlink(lock);
            forget(&seed);
            return Ok(false);
        }
    }

    pub(super) fn release() {
        let all = std::mem::take(&mut *SEEDS.lock().unwrap_or_else(|e| e.into_inner()));
        let name = name();
        for seed in all {
            let _ = seed.tmp.unlink(&name);
        }
    }
}

/// Removes the seed files this process's locks were linked from (see the module text). Call
/// at exit; a lock still held keeps working.
pub fn release_seeds() {
    seeds::release();
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

    /// The seed tests run one at a time: one of them releases every seed of the process.
    static SEED_TESTS: Mutex<()> = Mutex::new(());

    /// A mailbox directory as Maildir has it: with tmp/, where the seeds live.
    fn mailbox(t: &tempfile::TempDir) -> Dir {
        std::fs::create_dir(t.path().join("tmp")).unwrap();
        dir(t)
    }

    fn ino(p: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(p).unwrap().ino()
    }

    #[test]
    fn a_lock_cycle_links_the_seed_and_frees_no_inode() {
        let _serial = SEED_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let t = tempfile::tempdir().unwrap();
        let d = mailbox(&t);
        let lock = t.path().join("dovecot-uidlist.lock");
        let seed = t.path().join("tmp").join(seeds::name());
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let l = DotLock::acquire(&d, "dovecot-uidlist", UIDLIST_STALE, Duration::from_secs(1), None).unwrap();
            assert_eq!(ino(&lock), ino(&seed), "the lock is the seed, linked");
            assert_eq!(std::fs::read_to_string(&lock).unwrap(), lock_content());
            // Held by link, it still excludes.
            let again = DotLock::acquire(&d, "dovecot-uidlist", UIDLIST_STALE, Duration::from_millis(30), None);
            assert!(matches!(again, Err(MaildirError::LockTimeout(_))));
            seen.insert(ino(&lock));
            drop(l);
            assert!(!lock.exists());
            assert!(seed.exists(), "the seed stays for the next cycle");
        }
        assert_eq!(seen.len(), 1, "one inode for every cycle");
        assert_eq!(std::fs::read_dir(t.path().join("tmp")).unwrap().count(), 1);
    }

    #[test]
    fn a_seed_swapped_by_the_mail_user_is_not_used() {
        let _serial = SEED_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let t = tempfile::tempdir().unwrap();
        let d = mailbox(&t);
        let seed = t.path().join("tmp").join(seeds::name());
        drop(DotLock::acquire(&d, "x", UIDLIST_STALE, Duration::from_secs(1), None).unwrap());
        // Replaced by another file (made first, so it cannot reuse the seed's inode number),
        // and by a symlink: the lock is then made with O_EXCL.
        std::fs::write(t.path().join("tmp/other"), "not ours").unwrap();
        std::fs::rename(t.path().join("tmp/other"), &seed).unwrap();
        let l = DotLock::acquire(&d, "x", UIDLIST_STALE, Duration::from_secs(1), None).unwrap();
        assert_ne!(ino(&t.path().join("x.lock")), ino(&seed));
        assert_eq!(std::fs::read_to_string(t.path().join("x.lock")).unwrap(), lock_content());
        drop(l);
        std::fs::remove_file(&seed).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &seed).unwrap();
        let l = DotLock::acquire(&d, "x", UIDLIST_STALE, Duration::from_secs(1), None).unwrap();
        let md = std::fs::symlink_metadata(t.path().join("x.lock")).unwrap();
        assert!(md.file_type().is_file(), "never a link to what the seed name pointed at");
        drop(l);
    }

    #[test]
    fn a_seed_removed_meanwhile_is_made_again_and_release_removes_it() {
        let _serial = SEED_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let t = tempfile::tempdir().unwrap();
        let d = mailbox(&t);
        let seed = t.path().join("tmp").join(seeds::name());
        drop(DotLock::acquire(&d, "y", UIDLIST_STALE, Duration::from_secs(1), None).unwrap());
        std::fs::remove_file(&seed).unwrap();
        let l = DotLock::acquire(&d, "y", UIDLIST_STALE, Duration::from_secs(1), None).unwrap();
        assert_eq!(ino(&t.path().join("y.lock")), ino(&seed));
        drop(l);
        release_seeds();
        assert!(!seed.exists());
    }

    #[test]
    fn a_lock_of_another_live_process_is_waited_for_until_removed_or_renamed_away() {
        let t = tempfile::tempdir().unwrap();
        let d = mailbox(&t);
        // pid 1 is alive: never stale. Released by unlink (rpost) and by rename (Dovecot).
        for by_rename in [false, true] {
            let lock = t.path().join("dovecot-uidlist.lock");
            std::fs::write(&lock, format!("1:{}", raw_hostname())).unwrap();
            let releaser = {
                let (lock, target) = (lock.clone(), t.path().join("dovecot-uidlist"));
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(200));
                    if by_rename { std::fs::rename(&lock, &target) } else { std::fs::remove_file(&lock) }.unwrap();
                })
            };
            let l = DotLock::acquire(&d, "dovecot-uidlist", UIDLIST_STALE, Duration::from_secs(10), None).unwrap();
            releaser.join().unwrap();
            assert_eq!(std::fs::read_to_string(&lock).unwrap(), lock_content());
            drop(l);
        }
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

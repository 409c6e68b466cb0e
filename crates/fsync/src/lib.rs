//! rpost-fsync - group commit for fsyncs that many writers need at once
//!
//! # SUMMARY
//! [`GroupSync::sync`] returns once an fsync that *began after the call* has completed; when
//! many threads need one at the same time, a single fsync serves them all. [`GroupSyncs`]
//! keeps one [`GroupSync`] per path (one per Maildir `new/`, one per uidlist file).
//!
//! # DESCRIPTION
//! A writer that created or renamed a file must fsync the directory before it may say "stored"
//! (smtpd's 250 after DATA, lmtp-deliver's 250): otherwise a crash can lose the name. Twenty
//! concurrent deliveries into one mailbox would queue twenty directory fsyncs one behind the
//! other; with group commit the first runs, the others that arrived meanwhile wait for the
//! next one, which covers all of them. Each writer's own file fsync is never serialized.
//!
//! The fsync itself is the caller's closure (a directory or a file, by path or descriptor):
//! any descriptor of the same inode makes the same data durable, so the waiter need not be
//! the one whose descriptor is synced. An error is reported to every writer it covered.
//!
//! # SECURITY
//! No I/O of its own, no privileges. The path key is only a name for the group.
//!
//! # CONFIGURATION
//! None.
//!
//! # STANDARDS
//! POSIX fsync(2) semantics: a directory fsync makes the entries created in it durable.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// One group-commit point (a directory, a file).
#[derive(Debug, Default)]
pub struct GroupSync {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// fsyncs started / finished so far.
    started: u64,
    finished: u64,
    running: bool,
    /// Outcome of the most recently finished fsync.
    last_error: Option<(io::ErrorKind, String)>,
}

fn poisoned() -> io::Error {
    io::Error::other("group fsync lock poisoned")
}

impl GroupSync {
    /// Returns once a run of `fsync` that began after this call has completed (run by this
    /// thread or by another one waiting at the same point).
    pub fn sync(&self, fsync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut fsync = Some(fsync);
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        // One already running may have begun before our write: we need the next one.
        let needed = st.started + 1;
        loop {
            if st.finished >= needed {
                return match &st.last_error {
                    None => Ok(()),
                    Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
                };
            }
            if !st.running
                && let Some(f) = fsync.take()
            {
                st.running = true;
                st.started += 1;
                let mine = st.started;
                drop(st);
                let result = f();
                st = self.state.lock().map_err(|_| poisoned())?;
                st.running = false;
                st.finished = mine;
                st.last_error = result.err().map(|e| (e.kind(), e.to_string()));
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).map_err(|_| poisoned())?;
        }
    }
}

/// [`GroupSync`]s by path, created on first use. Entries are few (one per mailbox or spool
/// directory in use) and small, so they are kept for the life of the process.
#[derive(Debug, Default)]
pub struct GroupSyncs {
    // An Option so that `new` can be const (a static in the caller).
    points: Mutex<Option<HashMap<PathBuf, Arc<GroupSync>>>>,
}

impl GroupSyncs {
    pub const fn new() -> GroupSyncs {
        GroupSyncs { points: Mutex::new(None) }
    }

    /// [`GroupSync::sync`] at the point named `path`.
    pub fn sync(&self, path: &Path, fsync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let point = {
            let mut guard = self.points.lock().map_err(|_| poisoned())?;
            let points = guard.get_or_insert_with(HashMap::new);
            // Bounded: a long-lived lmtp-deliver serving many mailboxes drops idle points.
            if points.len() >= 4096 {
                points.retain(|_, p| Arc::strong_count(p) > 1);
            }
            points.entry(path.to_path_buf()).or_default().clone()
        };
        point.sync(fsync)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn concurrent_callers_share_fsyncs_and_each_gets_a_later_one() {
        let g = Arc::new(GroupSync::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (g, runs) = (g.clone(), runs.clone());
                std::thread::spawn(move || {
                    g.sync(|| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        Ok(())
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = runs.load(Ordering::SeqCst);
        assert!((1..16).contains(&n), "16 callers, {n} fsyncs");
        // Alone, a caller always runs its own.
        g.sync(|| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), n + 1);
    }

    #[test]
    fn an_error_reaches_the_callers_it_covered() {
        let g = GroupSync::default();
        let e = g.sync(|| Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        g.sync(|| Ok(())).unwrap();
    }

    #[test]
    fn points_are_per_path() {
        let s = GroupSyncs::new();
        let t = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            s.sync(&t.path().join(name), || Ok(())).unwrap();
        }
        assert_eq!(s.points.lock().unwrap().as_ref().unwrap().len(), 2);
    }
}

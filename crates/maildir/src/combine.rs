//! Flat combining of UID assignments: the deliveries of one process into one mailbox that
//! need a UID at the same time are served by a single uidlist lock cycle.
//!
//! Every delivery must record its file in `dovecot-uidlist` under `dovecot-uidlist.lock`.
//! Taken one by one, each creates and unlinks the lock file (a fresh inode per message, which
//! ext4 without a journal makes slow to allocate) and appends one line. Instead a delivery
//! queues its request on the mailbox's [`Queue`]; the first one finding no lock cycle in
//! progress becomes the leader: it takes the lock, then every request queued by then (its own
//! and those that arrived while it waited for the lock), numbers them all
//! ([`UidlistLock::append_batch`], or a whole rewrite of the list), writes the new records in
//! one append, releases the lock, fdatasyncs once, and hands every request its own result (a
//! UID or an error). Requests queued after the leader took its batch form the next batch,
//! led by one of their own threads as soon as the lock is released (while the previous
//! batch's fdatasync may still run).
//!
//! A leader waits for the lock up to its own deadline; when that passes, the requests out
//! of time get the timeout and the others stay queued for the next leader, so each request
//! fails only once its own time is up (or that of a leader that queued after it). A leader
//! that panics still answers every request it took (with an error) and ends its cycle from
//! [`Leader`]'s `Drop`, so no waiter is left hanging.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::dir::{Dir, Owner};
use crate::uidlist::{self, ListMark, UidlistLock};
use crate::{FILE_SYNCS, MaildirError};

/// One mailbox directory, as opened: requests are combined only for the very same directory
/// (inode) written for the same owner, whatever happened to the path in between.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    path: PathBuf,
    dev: u64,
    ino: u64,
    owner: Option<(u32, u32)>,
}

/// A delivery waiting for its UID.
#[derive(Debug)]
struct Request {
    ticket: u64,
    filename: String,
    before: Option<ListMark>,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Queue {
    /// A leader is in its lock cycle (from taking the batch until the lock is released).
    busy: bool,
    pending: Vec<Request>,
    /// Requests taken by a leader and not answered yet.
    in_flight: usize,
    done: HashMap<u64, Result<u32, MaildirError>>,
    wake: Arc<Condvar>,
}

impl Queue {
    fn idle(&self) -> bool {
        !self.busy && self.pending.is_empty() && self.in_flight == 0 && self.done.is_empty()
    }
}

type Queues = Option<HashMap<Key, Queue>>;
static QUEUES: Mutex<Queues> = Mutex::new(None);
static TICKETS: AtomicU64 = AtomicU64::new(0);

fn queues() -> MutexGuard<'static, Queues> {
    // Nothing in this module panics while holding it; should it, the state is still whole.
    QUEUES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Test-only: the requests queued (not yet taken by a leader) for the mailbox at `path`.
#[cfg(test)]
pub(crate) fn pending(path: &std::path::Path) -> usize {
    let guard = queues();
    guard.as_ref().map_or(0, |m| m.iter().filter(|(k, _)| k.path == path).map(|(_, q)| q.pending.len()).sum())
}

/// Test-only: the requests taken by a leader and not answered yet, for the mailbox at `path`.
#[cfg(test)]
pub(crate) fn in_flight(path: &std::path::Path) -> usize {
    let guard = queues();
    guard.as_ref().map_or(0, |m| m.iter().filter(|(k, _)| k.path == path).map(|(_, q)| q.in_flight).sum())
}

/// Test-only: a batch holding a request for this file name makes its leader panic.
#[cfg(test)]
pub(crate) const PANIC_NAME: &str = "panic-in-the-leader";

fn lost(path: &std::path::Path) -> MaildirError {
    MaildirError::io(path.to_path_buf(), io::Error::other("uidlist update abandoned (the thread doing it failed)"))
}

/// The UID of `filename`, just linked into the mailbox `mbox` (of the store `store`), given
/// together with the requests of other threads for the same mailbox. `before`: where the
/// uidlist stood before the link (see [`UidlistLock::append_batch`]). Waits for the lock
/// up to `timeout`.
pub(crate) fn assign_uid(
    mbox: &Dir,
    store: &Dir,
    owner: Option<Owner>,
    filename: &str,
    before: Option<ListMark>,
    timeout: Duration,
) -> Result<u32, MaildirError> {
    let st = mbox.fstat().map_err(|e| MaildirError::io(mbox.path().to_path_buf(), e))?;
    let key =
        Key { path: mbox.path().to_path_buf(), dev: st.st_dev, ino: st.st_ino, owner: owner.map(|o| (o.uid, o.gid)) };
    let ticket = TICKETS.fetch_add(1, Ordering::Relaxed);
    let deadline = Instant::now() + timeout;
    let request = Request { ticket, filename: filename.to_string(), before, deadline };
    let mut guard = queues();
    guard.get_or_insert_with(HashMap::new).entry(key.clone()).or_default().pending.push(request);
    loop {
        let Some(q) = guard.as_mut().and_then(|m| m.get_mut(&key)) else { return Err(lost(&key.path)) };
        if let Some(result) = q.done.remove(&ticket) {
            if q.idle()
                && let Some(m) = guard.as_mut()
            {
                m.remove(&key);
            }
            return result;
        }
        if !q.busy && q.pending.iter().any(|r| r.ticket == ticket) {
            q.busy = true;
            drop(guard);
            lead(Leader::new(key.clone(), ticket), mbox, store, owner, deadline);
            guard = queues();
            continue;
        }
        let wake = q.wake.clone();
        guard = wake.wait(guard).unwrap_or_else(|e| e.into_inner());
    }
}

/// A leader's batch: answers every request it took when dropped, panic or not, and ends
/// its lock cycle if that is still open.
struct Leader {
    key: Key,
    /// The leader's own request (not answered when it panics: nobody would read it).
    own: u64,
    tickets: Vec<u64>,
    results: Vec<Option<Result<u32, MaildirError>>>,
    busy: bool,
}

impl Leader {
    fn new(key: Key, own: u64) -> Leader {
        Leader { key, own, tickets: Vec::new(), results: Vec::new(), busy: true }
    }

    /// Takes the queued requests that `take` selects (the leader's own always) as the batch.
    fn take(&mut self, take: impl Fn(&Request) -> bool) -> Vec<Request> {
        let mut guard = queues();
        let Some(q) = guard.as_mut().and_then(|m| m.get_mut(&self.key)) else { return Vec::new() };
        let (batch, rest): (Vec<Request>, Vec<Request>) =
            std::mem::take(&mut q.pending).into_iter().partition(|r| r.ticket == self.own || take(r));
        q.pending = rest;
        q.in_flight += batch.len();
        self.tickets = batch.iter().map(|r| r.ticket).collect();
        self.results = batch.iter().map(|_| None).collect();
        batch
    }

    /// The lock cycle is over: the next batch may start.
    fn release(&mut self) {
        let mut guard = queues();
        if let Some(q) = guard.as_mut().and_then(|m| m.get_mut(&self.key)) {
            q.busy = false;
            q.wake.notify_all();
        }
        self.busy = false;
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let mut guard = queues();
        let Some(q) = guard.as_mut().and_then(|m| m.get_mut(&self.key)) else { return };
        if self.busy {
            q.busy = false;
        }
        for (ticket, result) in self.tickets.iter().zip(&mut self.results) {
            q.in_flight -= 1;
            if panicking && *ticket == self.own {
                continue;
            }
            q.done.insert(*ticket, result.take().unwrap_or_else(|| Err(lost(&self.key.path))));
        }
        q.wake.notify_all();
    }
}

/// One lock cycle: takes the lock (waiting up to the leader's own `deadline`), then every
/// request queued by then as the batch; every result goes into `leader`.
fn lead(mut leader: Leader, mbox: &Dir, store: &Dir, owner: Option<Owner>, deadline: Instant) {
    let path = mbox.path().join(uidlist::UIDLIST_NAME);
    let io = |e| MaildirError::io(mbox.path().to_path_buf(), e);
    let timeout = deadline.saturating_duration_since(Instant::now());
    let lock = mbox
        .try_clone()
        .and_then(|m| Ok((m, store.try_clone()?)))
        .map_err(io)
        .and_then(|(m, s)| UidlistLock::acquire(m, s, owner, timeout));
    let lock = match lock {
        Ok(l) => l,
        Err(e) => {
            // A timeout fails only the requests out of time (the leader's own among them):
            // the others may still wait, in the next cycle. Any other error fails them all.
            let now = Instant::now();
            let timed_out = matches!(e, MaildirError::LockTimeout(_));
            let batch = leader.take(|r| !timed_out || r.deadline <= now);
            for r in leader.results.iter_mut().take(batch.len()) {
                *r = Some(Err(e.duplicate()));
            }
            return;
        }
    };
    // Everything that queued while the lock was being taken joins this cycle.
    let batch = leader.take(|_| true);
    #[cfg(test)]
    if batch.iter().any(|r| r.filename == PANIC_NAME) {
        panic!("test: the leader panics holding the uidlist lock");
    }
    // A name that cannot be a record fails alone (never expected: names are ours).
    let mut valid = Vec::with_capacity(batch.len());
    for (i, r) in batch.iter().enumerate() {
        if uidlist::valid_record_name(&r.filename) {
            valid.push(i);
        } else {
            let reason = "bad file name for the uidlist".to_string();
            leader.results[i] = Some(Err(MaildirError::Corrupt { path: path.clone(), reason }));
        }
    }
    let names: Vec<(&str, Option<&ListMark>)> =
        valid.iter().map(|&i| (batch[i].filename.as_str(), batch[i].before.as_ref())).collect();
    // An IMAP session may have seen a file in new/ and given it a UID already, between its
    // link() and this lock: that UID is kept (append_batch looks for it in what was written
    // to the list since the file's `before`; Dovecot syncs under the lock too).
    let appended = match lock.append_batch(&names) {
        Ok(Some(done)) => Ok((done.uids, done.file)),
        // The whole list is written instead (under the lock, synced before the rename).
        Ok(None) => lock
            .load()
            .and_then(|mut list| {
                let uids: Vec<u32> = names.iter().map(|(n, _)| list.assign(n)).collect();
                lock.save(&list).map(|()| uids)
            })
            .map(|uids| (uids, None)),
        Err(e) => Err(e),
    };
    drop(lock);
    leader.release();
    let (uids, file) = match appended {
        Ok(v) => v,
        Err(e) => {
            for &i in &valid {
                leader.results[i] = Some(Err(e.duplicate()));
            }
            return;
        }
    };
    // Appends of concurrent batches share one fdatasync of the list, too.
    let synced = match file {
        Some(f) => FILE_SYNCS.sync(&path, || f.sync_data()).map_err(|e| MaildirError::io(path.clone(), e)),
        None => Ok(()),
    };
    for (&i, uid) in valid.iter().zip(uids) {
        leader.results[i] = Some(match &synced {
            Ok(()) => Ok(uid),
            Err(e) => Err(e.duplicate()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one batch of `names` on this thread, as a leader would, and returns its results.
    fn one_batch(mbox: &Dir, store: &Dir, names: &[&str]) -> Vec<Result<u32, MaildirError>> {
        let st = mbox.fstat().unwrap();
        let key = Key { path: mbox.path().to_path_buf(), dev: st.st_dev, ino: st.st_ino, owner: None };
        let deadline = Instant::now() + Duration::from_secs(10);
        let tickets: Vec<u64> = names.iter().map(|_| TICKETS.fetch_add(1, Ordering::Relaxed)).collect();
        {
            let mut guard = queues();
            let q = guard.get_or_insert_with(HashMap::new).entry(key.clone()).or_default();
            q.busy = true;
            for (n, &ticket) in names.iter().zip(&tickets) {
                q.pending.push(Request { ticket, filename: n.to_string(), before: None, deadline });
            }
        }
        lead(Leader::new(key.clone(), tickets[0]), mbox, store, None, deadline);
        let mut guard = queues();
        let q = guard.as_mut().unwrap().get_mut(&key).unwrap();
        assert!(!q.busy && q.in_flight == 0 && q.pending.is_empty());
        let results = tickets.iter().map(|t| q.done.remove(t).unwrap()).collect();
        guard.as_mut().unwrap().remove(&key);
        results
    }

    #[test]
    fn a_batch_on_a_list_that_must_be_rewritten_is_numbered_in_one_rewrite() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::walk(t.path(), false, None, false).unwrap();
        let list = t.path().join(uidlist::UIDLIST_NAME);
        // Version 1: no appends; "b" was numbered already.
        std::fs::write(&list, "1 1234 8\n7 b\n").unwrap();
        let got: Vec<u32> = one_batch(&d, &d, &["a", "b:2,S", "c", "a"]).into_iter().map(Result::unwrap).collect();
        assert_eq!(got, vec![8, 7, 9, 8]);
        let text = std::fs::read_to_string(&list).unwrap();
        assert!(text.starts_with("3 V1234 N10 G"), "{text}");
        assert!(text.ends_with("\n7 :b\n8 :a\n9 :c\n"), "{text}");
        // No list at all: a new one, numbered from 1.
        std::fs::remove_file(&list).unwrap();
        let got: Vec<u32> = one_batch(&d, &d, &["x", "y"]).into_iter().map(Result::unwrap).collect();
        assert_eq!(got, vec![1, 2]);
        // A name that cannot be a record fails alone.
        let got = one_batch(&d, &d, &["z", "bad/name", "w"]);
        assert!(matches!(got[1], Err(MaildirError::Corrupt { .. })), "{:?}", got[1]);
        assert_eq!((got[0].as_ref().unwrap(), got[2].as_ref().unwrap()), (&3, &4));
        let text = std::fs::read_to_string(&list).unwrap();
        assert!(text.ends_with(":y\n3 :z\n4 :w\n"), "{text}");
    }
}

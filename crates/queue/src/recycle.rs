//! Queue-file recycling: a delivered message's inode (and its data blocks) is kept in
//! `recycle/` for the next message instead of being freed.
//!
//! Why: freeing is what costs. On ext4 without a journal every inode allocation scans past
//! each inode freed in the last seconds to minutes of its block group (`recently_deleted()`),
//! so creating one file and unlinking another per message made each creation slower the
//! faster mail flowed; and on a file system mounted with `discard` every freed block range is
//! discarded synchronously, about a millisecond each, which made qmgr's truncation of each
//! retired file the step that paced all delivery. A recycled file keeps both: the next
//! message is written over the old one and the file is cut to its new length at commit.
//!
//! The protocol, and why each step is there:
//! * retire (qmgr, all recipients done): rename `active/ID` to `recycle/ID` (never over an
//!   existing name). Its content stays until the file is reused: `recycle/` is as private as
//!   `active/` (the queue owner's), and nothing ever reads a file there. A file larger than
//!   [`KEEP_BYTES`] is then emptied under its flock, so the pool never holds much disk space.
//! * take ([`Queue::create`](crate::Queue::create)): open `recycle/NAME` without following
//!   links or blocking, take its flock without waiting, check that it is a plain file of ours
//!   with one link still named `recycle/NAME`, then make it 0600 and overwrite its magic
//!   *before* it leaves `recycle/` (a retired file still carries the complete mark and the
//!   whole message from its old life: should a crash keep the rename but lose the mode
//!   change, the old message is then corrupt, never delivered twice), and rename it to
//!   `incoming/NEWID` without replacing anything. The flock stays held until commit or
//!   abort, exactly as for a freshly created file; the writer starts at offset 0 and commit
//!   cuts the file after the END record. Any failure means: try the next name, and in the
//!   end create a new file as before.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, Flock, FlockArg, OFlag, RenameFlags, renameat2};

use crate::QueueId;

/// The spool subdirectory holding emptied files for reuse. Not a [`QueueDir`](crate::QueueDir):
/// it never holds a message, so nothing that lists the queue looks at it.
pub const RECYCLE_DIR: &str = "recycle";
/// Default of `queue_file_recycle_limit`.
pub const DEFAULT_RECYCLE_LIMIT: usize = 10_000;
/// A retired file up to this size keeps its blocks for the next message; a larger one is
/// emptied at once (a rare big message can afford the freeing), so a full pool holds at most
/// this much disk space per file.
pub const KEEP_BYTES: u64 = 16 * 1024;
/// Names read from `recycle/` per readdir.
const READDIR_BATCH: usize = 256;
/// After a readdir found nothing, how long creations skip the pool.
const EMPTY_BACKOFF: Duration = Duration::from_secs(1);
/// Retirements between two recounts of `recycle/` (takes by other processes are not seen
/// otherwise).
const RECOUNT_EVERY: u32 = 256;
/// A full pool is recounted at most this often.
const RECOUNT_FULL_AFTER: Duration = Duration::from_secs(1);
/// Names tried per creation before falling back to a new file.
const TAKE_ATTEMPTS: usize = 16;
/// Fresh IDs tried when the new name in incoming/ is taken.
const RENAME_ATTEMPTS: usize = 100;
/// The pool has not been counted yet.
const UNCOUNTED: usize = usize::MAX;

/// The recycling state of one [`Queue`](crate::Queue), shared by its clones.
#[derive(Debug)]
pub(crate) struct Pool {
    limit: AtomicUsize,
    /// Approximate number of files in `recycle/`: our own retirements and takes are counted,
    /// other processes' are seen at the next recount.
    count: AtomicUsize,
    retired_since_count: AtomicU32,
    last_count: Mutex<Option<Instant>>,
    names: Mutex<Names>,
}

#[derive(Debug, Default)]
struct Names {
    /// Names read from `recycle/`, taken from the end.
    cached: Vec<OsString>,
    /// The last readdir found nothing: skip the pool until then.
    empty_until: Option<Instant>,
}

impl Pool {
    pub(crate) fn new(limit: usize) -> Pool {
        Pool {
            limit: AtomicUsize::new(limit),
            count: AtomicUsize::new(UNCOUNTED),
            retired_since_count: AtomicU32::new(0),
            last_count: Mutex::new(None),
            names: Mutex::new(Names::default()),
        }
    }

    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Whether one more retired file may go into `dir`.
    pub(crate) fn has_room(&self, dir: &Path) -> bool {
        let limit = self.limit();
        if limit == 0 {
            return false;
        }
        let mut count = self.count.load(Ordering::Relaxed);
        let recount = count == UNCOUNTED
            || self.retired_since_count.load(Ordering::Relaxed) >= RECOUNT_EVERY
            || (count >= limit && self.count_is_older_than(RECOUNT_FULL_AFTER));
        if recount {
            count = self.recount(dir, limit);
        }
        count < limit
    }

    fn count_is_older_than(&self, age: Duration) -> bool {
        match self.last_count.lock() {
            Ok(last) => last.is_none_or(|t| t.elapsed() >= age),
            Err(_) => true,
        }
    }

    /// Counts the entries of `dir`; unreadable (or missing, in a spool made before recycling)
    /// counts as full, tried again later.
    fn recount(&self, dir: &Path, limit: usize) -> usize {
        let count = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter(|e| e.is_ok()).count(),
            Err(_) => limit,
        };
        self.count.store(count, Ordering::Relaxed);
        self.retired_since_count.store(0, Ordering::Relaxed);
        if let Ok(mut last) = self.last_count.lock() {
            *last = Some(Instant::now());
        }
        count
    }

    pub(crate) fn retired(&self) {
        let _ = self.count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| (c != UNCOUNTED).then(|| c + 1));
        self.retired_since_count.fetch_add(1, Ordering::Relaxed);
    }

    fn taken(&self) {
        let _ = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| (c != UNCOUNTED).then(|| c.saturating_sub(1)));
    }

    /// The next name to try in `dir`, and whether `dir` was read for it; `None` when the
    /// pool looks empty (or the cache is, and `may_read` is false).
    fn next_name(&self, dir: &Path, may_read: bool) -> Option<(OsString, bool)> {
        let mut names = self.names.lock().ok()?;
        if let Some(name) = names.cached.pop() {
            return Some((name, false));
        }
        if !may_read || names.empty_until.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        names.cached = read_names(dir);
        if names.cached.is_empty() {
            names.empty_until = Some(Instant::now() + EMPTY_BACKOFF);
            return None;
        }
        names.empty_until = None;
        // Concurrent processes read the same names in the same order: each starts at its
        // own random place so they rarely race for one file.
        let len = names.cached.len();
        names.cached.rotate_left((RandomState::new().hash_one(Instant::now()) % len as u64) as usize);
        names.cached.pop().map(|n| (n, true))
    }

    /// Nothing in a fresh batch of names could be taken (files others hold, or that are not
    /// ours): leave the pool alone for a while instead of trying them on every creation.
    fn back_off(&self) {
        if let Ok(mut names) = self.names.lock() {
            names.cached.clear();
            names.empty_until = Some(Instant::now() + EMPTY_BACKOFF);
        }
    }

    /// Takes a file from `recycle_dir` and renames it, empty and mode 0600, to a fresh name in
    /// `incoming_dir`. Returns the new ID and the file, flocked. `None`: the pool is empty or
    /// every candidate failed; the caller creates a new file.
    pub(crate) fn take(&self, recycle_dir: &Path, incoming_dir: &Path) -> Option<(QueueId, Flock<File>)> {
        // One readdir per creation at most: stale cached names first, then one fresh batch.
        let mut may_read = true;
        for _ in 0..TAKE_ATTEMPTS {
            let (name, read) = self.next_name(recycle_dir, may_read)?;
            may_read &= !read;
            let from = recycle_dir.join(&name);
            let Some(file) = claim(&from) else { continue };
            let Some(id) = rename_into(&from, incoming_dir) else {
                // Left where it was, empty: the next taker may try again.
                continue;
            };
            self.taken();
            // Under our flock nobody else moves it: this only fails if the invariants do.
            if crate::writer::still_linked(&file, &incoming_dir.join(id.as_str())) {
                return Some((id, file));
            }
        }
        if !may_read {
            self.back_off();
        }
        None
    }
}

/// Up to [`READDIR_BATCH`] names in `dir` that could be recycled files.
fn read_names(dir: &Path) -> Vec<OsString> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n.to_str().is_some_and(|s| QueueId::parse(s).is_ok()))
        .take(READDIR_BATCH)
        .collect()
}

/// Opens and locks `path` if it is a recycled file we may reuse, and empties it. Never blocks:
/// someone else holding it, or anything odd about it, means `None`.
fn claim(path: &Path) -> Option<Flock<File>> {
    // O_NONBLOCK: a FIFO planted here must not hang the caller (no effect on plain files).
    let file = OpenOptions::new()
        .write(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .ok()?;
    let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
    let md = file.metadata().ok()?;
    // nlink 1 and still linked here: not a file that has meanwhile become a message (a taker
    // before us renamed it, and may since have committed it).
    if !md.file_type().is_file()
        || md.nlink() != 1
        || md.uid() != nix::unistd::geteuid().as_raw()
        || !crate::writer::still_linked(&file, path)
    {
        return None;
    }
    // Before it leaves recycle/: a retired file is 0700 (complete) and holds its old message;
    // it must never show up in incoming/ like that. The new message is written over it.
    file.set_permissions(std::fs::Permissions::from_mode(crate::writer::MODE_INCOMPLETE)).ok()?;
    std::os::unix::fs::FileExt::write_all_at(&*file, b"\0", 0).ok()?;
    Some(file)
}

/// Renames `from` to `incoming_dir/NEWID` without replacing anything; the new ID.
fn rename_into(from: &Path, incoming_dir: &Path) -> Option<QueueId> {
    for _ in 0..RENAME_ATTEMPTS {
        let id = QueueId::generate();
        let to = incoming_dir.join(id.as_str());
        match renameat2(AT_FDCWD, from, AT_FDCWD, &to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Some(id),
            Err(Errno::EEXIST) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Moves `from` (a message whose recipients are all done) to `recycle_dir/ID`.
/// `Ok(false)`: `recycle/` cannot take it (missing, or the name exists); the caller unlinks.
pub(crate) fn retire(from: &Path, recycle_dir: &Path, id: &QueueId) -> io::Result<bool> {
    let to = recycle_dir.join(id.as_str());
    match renameat2(AT_FDCWD, from, AT_FDCWD, &to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => {}
        Err(Errno::ENOENT) if std::fs::symlink_metadata(from).is_err() => return Err(io::Error::from(Errno::ENOENT)),
        Err(_) => return Ok(false),
    }
    if std::fs::symlink_metadata(&to).is_ok_and(|m| m.len() > KEEP_BYTES) {
        empty_retired(&to);
    }
    Ok(true)
}

/// Empties a large just-retired file. Under the flock, and only while it is still
/// `recycle/ID`: a taker may have claimed it already and be writing a new message into it.
/// Failures are harmless: the taker writes over it, and nothing reads a file in recycle/.
fn empty_retired(path: &Path) {
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
    else {
        return;
    };
    let Ok(file) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { return };
    if file.metadata().is_ok_and(|m| m.file_type().is_file()) && crate::writer::still_linked(&file, path) {
        let _ = file.set_len(0);
    }
}

//! Open mailbox directories kept between deliveries.
//!
//! Opening a mailbox for a delivery walks its path one component at a time (`openat` with
//! `O_NOFOLLOW`, see [`Dir::walk`]), makes sure `cur/ new/ tmp/` exist and opens `tmp/` and
//! the destination: about 25 system calls for `/var/vmail/example.com/alice/Maildir`, more
//! than the delivery itself makes. A process that delivers again and again into the same
//! mailboxes (lmtp-deliver) keeps the open descriptors here instead, and checks them before
//! each use with a `stat` per directory it uses: the mailbox's path (and the store's, for a
//! folder) must still name the very directory (device and inode) the secure walk opened,
//! and `tmp/` and the destination must still be the directories opened below it. Anything
//! else (a mailbox renamed, removed, replaced, a subdirectory swapped for a link) drops the
//! entry and the caller walks again, with every check of the walk.
//!
//! Comparing identities is enough: following a link the user planted cannot mislead the
//! check, because it only ever accepts the inode the secure walk itself reached.
//!
//! At most [`CAPACITY`] mailboxes are kept, each holding five descriptors; the least
//! recently used goes first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::stat::FileStat;

use crate::dir::{Dir, Owner};

/// Mailboxes kept open per process.
pub(crate) const CAPACITY: usize = 16;

/// A mailbox opened for delivery: the store (INBOX's directory), the mailbox itself and its
/// three subdirectories.
#[derive(Debug)]
pub(crate) struct Handles {
    pub store: Dir,
    pub mbox: Dir,
    pub tmp: Dir,
    pub new: Dir,
    pub cur: Dir,
    /// (device, inode) of each, in the order above.
    ids: [(u64, u64); 5],
}

impl Handles {
    pub(crate) fn new(store: Dir, mbox: Dir, tmp: Dir, new: Dir, cur: Dir) -> std::io::Result<Handles> {
        let ids = [id(&store.fstat()?), id(&mbox.fstat()?), id(&tmp.fstat()?), id(&new.fstat()?), id(&cur.fstat()?)];
        Ok(Handles { store, mbox, tmp, new, cur, ids })
    }

    /// Whether the paths still lead to these directories (see the module documentation).
    /// `folder`: the mailbox is not the store itself. `dest_new`: the delivery goes to
    /// `new/` (else `cur/`).
    fn valid(&self, folder: bool, dest_new: bool) -> bool {
        let at_path = |path: &Path, want: (u64, u64)| nix::sys::stat::stat(path).is_ok_and(|st| id(&st) == want);
        let below = |name: &str, want: (u64, u64)| self.mbox.stat(name).is_ok_and(|st| id(&st) == want);
        at_path(self.mbox.path(), self.ids[1])
            && (!folder || at_path(self.store.path(), self.ids[0]))
            && below("tmp", self.ids[2])
            && if dest_new { below("new", self.ids[3]) } else { below("cur", self.ids[4]) }
    }
}

fn id(st: &FileStat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

/// Which mailbox, opened for whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub mbox: PathBuf,
    pub owner: Option<Owner>,
    pub secure: bool,
}

struct Entry {
    handles: Arc<Handles>,
    used: u64,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    clock: u64,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn cache() -> MutexGuard<'static, Option<Cache>> {
    // Nothing panics while holding it; should something, the map is still whole.
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kept handles of `key`, if the paths still lead to them; a stale entry is dropped.
pub(crate) fn get(key: &Key, folder: bool, dest_new: bool) -> Option<Arc<Handles>> {
    let handles = {
        let mut guard = cache();
        let c = guard.as_mut()?;
        c.clock += 1;
        let clock = c.clock;
        let e = c.entries.get_mut(key)?;
        e.used = clock;
        e.handles.clone()
    };
    // The checks run without the lock: they are system calls.
    if handles.valid(folder, dest_new) {
        return Some(handles);
    }
    let mut guard = cache();
    if let Some(c) = guard.as_mut()
        && c.entries.get(key).is_some_and(|e| Arc::ptr_eq(&e.handles, &handles))
    {
        c.entries.remove(key);
    }
    None
}

/// Keeps `handles` for `key`, making room by dropping the least recently used.
pub(crate) fn put(key: Key, handles: Arc<Handles>) {
    let mut guard = cache();
    let c = guard.get_or_insert_with(Cache::default);
    c.clock += 1;
    let used = c.clock;
    if !c.entries.contains_key(&key)
        && c.entries.len() >= CAPACITY
        && let Some(oldest) = c.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone())
    {
        c.entries.remove(&oldest);
    }
    c.entries.insert(key, Entry { handles, used });
}

/// Test-only: how many mailboxes are kept.
#[cfg(test)]
pub(crate) fn len() -> usize {
    cache().as_ref().map_or(0, |c| c.entries.len())
}

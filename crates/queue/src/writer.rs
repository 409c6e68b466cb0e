//! Creating queue files and moving them between the spool directories.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

use crate::format::{self, BLOCK};
use crate::recycle::{self, Pool, RECYCLE_DIR};
use crate::{Envelope, QueueDir, QueueError, QueueFile, QueueId};

/// Mode of a file still being written.
pub(crate) const MODE_INCOMPLETE: u32 = 0o600;
/// Mode of a committed file: the owner execute bit is the "complete" mark.
const MODE_COMPLETE: u32 = 0o700;
const COMPLETE_BIT: u32 = 0o100;
/// Fresh IDs to try when `O_EXCL` finds the name taken.
const CREATE_ATTEMPTS: usize = 1000;

/// A queue directory tree (`queue_directory`). Cheap to clone; share it
/// between threads freely.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
    /// Shared by all clones: concurrent commits share `incoming/` fsyncs.
    incoming_sync: Arc<rpost_fsync::GroupSync>,
    /// Shared by all clones: the `recycle/` pool's count, limit and cached names.
    pool: Arc<Pool>,
}

impl Queue {
    /// A queue whose pool of recycled files holds at most
    /// [`DEFAULT_RECYCLE_LIMIT`](crate::DEFAULT_RECYCLE_LIMIT) files.
    pub fn new(root: impl Into<PathBuf>) -> Queue {
        Queue {
            root: root.into(),
            incoming_sync: Arc::new(rpost_fsync::GroupSync::default()),
            pool: Arc::new(Pool::new(recycle::DEFAULT_RECYCLE_LIMIT)),
        }
    }

    /// Sets how many delivered files [`retire`](Queue::retire) keeps in `recycle/` for reuse
    /// (`queue_file_recycle_limit`; 0: none, every retired file is unlinked). For this queue
    /// and all its clones.
    pub fn with_recycle_limit(self, limit: usize) -> Queue {
        self.pool.set_limit(limit);
        self
    }

    /// The pool limit in force.
    pub fn recycle_limit(&self) -> usize {
        self.pool.limit()
    }

    /// The directory of delivered files kept for reuse. Never holds a message: nothing that
    /// lists or searches the queue looks at it.
    pub fn recycle_dir(&self) -> PathBuf {
        self.root.join(RECYCLE_DIR)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of one spool subdirectory.
    pub fn dir(&self, d: QueueDir) -> PathBuf {
        self.root.join(d.name())
    }

    /// The path of a queue file.
    pub fn path(&self, d: QueueDir, id: &QueueId) -> PathBuf {
        self.dir(d).join(id.as_str())
    }

    /// Creates the root and any missing subdirectories, mode 0700. (The
    /// owner is whoever runs this; rmaster chowns them to `mail_owner`.)
    pub fn ensure_dirs(&self) -> Result<(), QueueError> {
        let mut b = DirBuilder::new();
        b.recursive(true).mode(0o700);
        b.create(&self.root).map_err(|e| QueueError::io(&self.root, e))?;
        for p in QueueDir::ALL.into_iter().map(|d| self.dir(d)).chain([self.recycle_dir()]) {
            b.create(&p).map_err(|e| QueueError::io(&p, e))?;
        }
        Ok(())
    }

    /// Starts a new message: a fresh ID, `incoming/ID` with mode 0600, and
    /// the envelope written (buffered) from its start. The file is a retired
    /// one from `recycle/` when there is one (see [`retire`](Queue::retire);
    /// its old bytes are overwritten, and cut at commit), else created
    /// exclusively. Fails before touching the disk if the
    /// envelope exceeds a format limit.
    pub fn create(&self, env: &Envelope) -> Result<IncomingMessage, QueueError> {
        let header = format::encode_header(env)?;
        let mut crc = crc32fast::Hasher::new();
        header.hash_into(&mut crc);
        let dir = self.dir(QueueDir::Incoming);
        let (id, path, file) = match self.pool.take(&self.recycle_dir(), &dir) {
            Some((id, file)) => {
                let path = dir.join(id.as_str());
                (id, path, file)
            }
            None => create_new(&dir)?,
        };
        let mut msg = IncomingMessage {
            id,
            path,
            dir,
            dir_sync: self.incoming_sync.clone(),
            out: Some(BufWriter::with_capacity(BLOCK, Locked(file))),
            crc,
            content_len: 0,
            nrcpt: env.recipients.len() as u32,
            poisoned: false,
            committed: false,
        };
        // Already hashed above, with the status bytes masked.
        msg.write_raw(&header.bytes, false)?;
        Ok(msg)
    }

    /// Reads and verifies a queue file.
    pub fn open(&self, d: QueueDir, id: &QueueId) -> Result<QueueFile, QueueError> {
        QueueFile::open(&self.path(d, id))
    }

    /// The committed queue files in `d`, oldest first. Names that are not
    /// queue IDs, non-regular files and files without the complete mark
    /// (still being written, or left by a crash) are skipped.
    pub fn scan(&self, d: QueueDir) -> Result<Vec<QueueId>, QueueError> {
        let mut ids: Vec<QueueId> = self.entries(d)?.into_iter().filter(|e| e.complete).map(|e| e.id).collect();
        ids.sort();
        Ok(ids)
    }

    /// Moves a file between directories (rename, then fsync of both
    /// directories: the new name first, so the file is never durably in
    /// neither place).
    pub fn move_to(&self, id: &QueueId, from: QueueDir, to: QueueDir) -> Result<(), QueueError> {
        if from == to {
            return Ok(());
        }
        let src = self.path(from, id);
        let dst = self.path(to, id);
        fs::rename(&src, &dst).map_err(|e| QueueError::io(&src, e))?;
        sync_dir(&self.dir(to))?;
        sync_dir(&self.dir(from))
    }

    /// Moves a file between directories without the directory fsyncs, for qmgr's own moves
    /// (incoming or deferred to active, active to deferred): rename() is atomic, and if a
    /// crash undoes it the file is in a directory qmgr scans anyway, so the worst case is an
    /// earlier retry. Postfix's qmgr does not sync these renames either.
    pub fn move_without_sync(&self, id: &QueueId, from: QueueDir, to: QueueDir) -> Result<(), QueueError> {
        if from == to {
            return Ok(());
        }
        let src = self.path(from, id);
        fs::rename(&src, self.path(to, id)).map_err(|e| QueueError::io(&src, e))
    }

    /// Disposes of a message whose recipients are all done, without a directory fsync: if a
    /// crash undoes it the message is delivered again (at least once), never lost. Saves
    /// one fsync per delivered message.
    ///
    /// While `recycle/` holds fewer files than the limit, the file is renamed there as it is
    /// instead of unlinked, and [`create`](Queue::create) writes a new message over it:
    /// freeing and allocating an inode per message is what made creation slow on ext4
    /// without a journal (each allocation scans past the recently freed inodes), and freeing
    /// its blocks costs a synchronous discard on a file system mounted with `discard`.
    /// Otherwise it is unlinked.
    pub fn retire(&self, d: QueueDir, id: &QueueId) -> Result<(), QueueError> {
        let p = self.path(d, id);
        let rdir = self.recycle_dir();
        if self.pool.has_room(&rdir) {
            match recycle::retire(&p, &rdir, id) {
                Ok(true) => {
                    self.pool.retired();
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => return Err(QueueError::io(&p, e)),
            }
        }
        fs::remove_file(&p).map_err(|e| QueueError::io(&p, e))
    }

    /// Deletes a file (all recipients done, or `queue delete`).
    pub fn remove(&self, d: QueueDir, id: &QueueId) -> Result<(), QueueError> {
        let p = self.path(d, id);
        fs::remove_file(&p).map_err(|e| QueueError::io(&p, e))?;
        sync_dir(&self.dir(d))
    }

    /// The directory holding `id`, if any.
    pub fn find(&self, id: &QueueId) -> Option<QueueDir> {
        QueueDir::ALL.into_iter().find(|&d| fs::symlink_metadata(self.path(d, id)).is_ok_and(|m| m.is_file()))
    }

    /// Removes incoming files that were never committed (a crash or kill
    /// mid-DATA) and were last modified more than `older_than` ago.
    /// Committed files are never touched, nor is a file whose writer is
    /// still alive (it holds an flock). Returns the removed IDs, sorted.
    pub fn cleanup_incoming(&self, older_than: Duration) -> Result<Vec<QueueId>, QueueError> {
        let now = SystemTime::now();
        let mut removed = Vec::new();
        for e in self.entries(QueueDir::Incoming)? {
            let age = now.duration_since(e.mtime).unwrap_or(Duration::ZERO);
            if e.complete || age < older_than {
                continue;
            }
            let file = match OpenOptions::new().read(true).custom_flags(OFlag::O_NOFOLLOW.bits()).open(&e.path) {
                Ok(f) => f,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(QueueError::io(&e.path, err)),
            };
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                Err((_, Errno::EWOULDBLOCK)) => continue,
                Err((_, errno)) => return Err(QueueError::io(&e.path, io::Error::from(errno))),
            };
            // Under the lock the mode cannot change any more: a writer
            // commits only while holding it.
            let md = file.metadata().map_err(|err| QueueError::io(&e.path, err))?;
            if md.mode() & COMPLETE_BIT != 0 || !still_linked(&file, &e.path) {
                continue;
            }
            match fs::remove_file(&e.path) {
                Ok(()) => removed.push(e.id),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(QueueError::io(&e.path, err)),
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.dir(QueueDir::Incoming))?;
        }
        removed.sort();
        Ok(removed)
    }

    /// Removes temporary files that [`QueueFile::set_attr`] left in `d` when it was
    /// interrupted before its rename (the original file is intact then). Only the owner of
    /// the directory's files (qmgr, at start-up) may call this. Returns how many it removed.
    pub fn remove_stale_rewrites(&self, d: QueueDir) -> Result<usize, QueueError> {
        let dir = self.dir(d);
        let rd = fs::read_dir(&dir).map_err(|e| QueueError::io(&dir, e))?;
        let mut removed = 0;
        for ent in rd {
            let ent = ent.map_err(|e| QueueError::io(&dir, e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_rewrite = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(crate::reader::REWRITE_SUFFIX))
                .is_some_and(|id| QueueId::parse(id).is_ok());
            if is_rewrite && fs::remove_file(ent.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&dir)?;
        }
        Ok(removed)
    }

    /// Regular files named by a queue ID in `d`, with their mark and mtime.
    fn entries(&self, d: QueueDir) -> Result<Vec<Entry>, QueueError> {
        let dir = self.dir(d);
        let rd = fs::read_dir(&dir).map_err(|e| QueueError::io(&dir, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| QueueError::io(&dir, e))?;
            let Some(Ok(id)) = ent.file_name().to_str().map(QueueId::parse) else { continue };
            // lstat: symlinks are not queue files.
            let md = match ent.metadata() {
                Ok(m) => m,
                // Moved or removed since readdir.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(QueueError::io(ent.path(), e)),
            };
            if !md.file_type().is_file() {
                continue;
            }
            let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(Entry { id, path: ent.path(), complete: md.mode() & COMPLETE_BIT != 0, mtime });
        }
        Ok(out)
    }
}

#[derive(Debug)]
struct Entry {
    id: QueueId,
    path: PathBuf,
    complete: bool,
    mtime: SystemTime,
}

/// Creates `dir/ID` for a fresh ID, exclusively, mode 0600, flocked.
fn create_new(dir: &Path) -> Result<(QueueId, PathBuf, Flock<File>), QueueError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let id = QueueId::generate();
        let path = dir.join(id.as_str());
        let file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE_INCOMPLETE)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < CREATE_ATTEMPTS => continue,
            Err(e) => return Err(QueueError::io(&path, e)),
        };
        // Held until commit or abort, so cleanup_incoming() never
        // removes a file someone is still writing; a crash drops it.
        let file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| QueueError::io(&path, io::Error::from(errno)))?;
        // cleanup_incoming() may have taken the lock between our open
        // and flock and unlinked the name (only with a tiny
        // `older_than`); then this inode is orphaned: try again.
        if still_linked(&file, &path) {
            return Ok((id, path, file));
        }
    }
}

/// Whether `path` still names the inode open as `file`.
pub(crate) fn still_linked(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// fsync a directory, making renames, creations and removals in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    fsync_dir(dir).map_err(|e| QueueError::io(dir, e))
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(dir)
        .and_then(|d| d.sync_all())
}

/// The locked file, writable through the lock guard.
#[derive(Debug)]
struct Locked(Flock<File>);

impl Write for Locked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A message being received into `incoming/`. Dropping it without
/// [`commit`](IncomingMessage::commit) removes the file.
#[derive(Debug)]
pub struct IncomingMessage {
    id: QueueId,
    path: PathBuf,
    dir: PathBuf,
    /// Group commit of the incoming/ fsync: one fsync serves every commit waiting for it.
    dir_sync: Arc<rpost_fsync::GroupSync>,
    out: Option<BufWriter<Locked>>,
    crc: crc32fast::Hasher,
    content_len: u64,
    nrcpt: u32,
    /// A write failed: the file no longer matches the CRC we hold.
    poisoned: bool,
    committed: bool,
}

impl IncomingMessage {
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// The path of the file in `incoming/`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends message content: the message as received (CRLF line
    /// endings, dot-unstuffed), stored verbatim. Buffered.
    pub fn write_content(&mut self, bytes: &[u8]) -> Result<(), QueueError> {
        self.write_raw(bytes, true)?;
        self.content_len += bytes.len() as u64;
        Ok(())
    }

    /// Content bytes written so far.
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    fn write_raw(&mut self, bytes: &[u8], hash: bool) -> Result<(), QueueError> {
        let Some(out) = self.out.as_mut().filter(|_| !self.poisoned) else {
            return Err(QueueError::Poisoned { path: self.path.clone() });
        };
        if let Err(e) = out.write_all(bytes) {
            self.poisoned = true;
            return Err(QueueError::io(&self.path, e));
        }
        if hash {
            self.crc.update(bytes);
        }
        Ok(())
    }

    /// Makes the message durable and visible to qmgr: flush, write END,
    /// fchmod 0700 (the complete mark), fsync, fsync `incoming/`. Only after this returns `Ok` may the client be told
    /// 250. On error the file is removed.
    pub fn commit(mut self) -> Result<QueueId, QueueError> {
        let out = match self.out.take() {
            Some(out) if !self.poisoned => out,
            _ => return Err(QueueError::Poisoned { path: self.path.clone() }),
        };
        let end = format::encode_end(self.content_len, self.nrcpt, self.crc.clone().finalize());
        let file = finish(out, &end).map_err(|e| QueueError::io(&self.path, e))?;
        // Put the file back so Drop unlinks it (under the lock) on error.
        self.out = Some(BufWriter::new(file));
        self.dir_sync.sync(|| fsync_dir(&self.dir)).map_err(|e| QueueError::io(&self.dir, e))?;
        self.committed = true;
        Ok(self.id.clone())
    }

    /// Gives up on the message (RSET, error, client gone): removes the file.
    pub fn abort(self) {
        drop(self);
    }
}

/// Everything in commit() that touches the file itself.
fn finish(mut out: BufWriter<Locked>, end: &[u8]) -> io::Result<Locked> {
    out.write_all(end)?;
    let locked = out.into_inner().map_err(|e| e.into_error())?;
    let mut file: &File = &locked.0;
    // A recycled file still holds its previous message past what was written now: cut it
    // to the END record (frees blocks only when the new message needs fewer).
    let len = std::io::Seek::stream_position(&mut file)?;
    if file.metadata()?.len() > len {
        file.set_len(len)?;
    }
    // One fsync for content and mark, as Postfix's mail_stream_finish does. A power loss
    // before it completes may keep the new mode without all of the data: such a file fails
    // its END record or CRC check and is reported, never delivered, and its client never
    // heard 250.
    file.set_permissions(fs::Permissions::from_mode(MODE_COMPLETE))?;
    file.sync_all()?;
    if file.metadata()?.nlink() == 0 {
        return Err(io::Error::other("queue file was unlinked while being written"));
    }
    Ok(locked)
}

impl Drop for IncomingMessage {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Unlink while still holding the lock, and throw away buffered
        // data instead of flushing it into a file that is going away.
        let _ = fs::remove_file(&self.path);
        if let Some(out) = self.out.take() {
            let (locked, _unwritten) = out.into_parts();
            drop(locked);
        }
    }
}

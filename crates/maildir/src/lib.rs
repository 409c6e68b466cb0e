//! rpost-maildir - the Maildir++ mail store, as Dovecot keeps it
//!
//! # SUMMARY
//! ```text
//! let inbox = Maildir::open("/var/vmail/example.com/alice/Maildir")
//!     .with_owner(5000, 5000)                       // root writing for the mail user
//!     .with_quota(Some(Quota::lda(1 << 30)));        // userdb quota_rule=*:storage=1G
//! let d = inbox.deliver(&mut message, "")?;          // new/<time>.M<usec>P<pid>.<host>,S=..,W=..
//! println!("{} uid {:?}", d.path.display(), d.uid);
//! let sent = inbox.folder("Sent")?;                  // <root>/.Sent
//! let list = inbox.uidlist()?;                       // dovecot-uidlist
//! ```
//!
//! # DESCRIPTION
//! A user's mail store is a Maildir (`cur/ new/ tmp/`) holding INBOX, with one Maildir per
//! other mailbox directly below it, named in Maildir++ style: IMAP `Sent` is `.Sent`, IMAP
//! `a/b` is `.a.b` (Dovecot's default `LAYOUT=maildir++`; IMAP names use `/` as hierarchy
//! separator here, `.` on disk), each with an empty `maildirfolder` file. See
//! [`name::folder_dir_name`] for the mapping and the names refused.
//!
//! [`Maildir::deliver`] stores a message the way Dovecot's LMTP does: the content is written
//! to `tmp/<unique>` with LF line endings (CRLF becomes LF, Dovecot's `mail_save_crlf = no`),
//! fsync'd, hard-linked into `new/` (or `cur/` with `:2,<flags>` when flags are given) under
//! the name `<secs>.M<usecs>P<pid>.<host>,S=<size>,W=<vsize>`, where S is the file's size and
//! W its size with CRLF line endings (IMAP RFC822.SIZE); then `new/` itself is fsync'd and the
//! tmp name removed. Only then is the message durable, and only then does `deliver` return.
//! A process keeps the directories of the last mailboxes it delivered into open (see the
//! `handles` module: each use is checked against the paths with one `stat` per directory).
//! Then the message gets its IMAP UID in `dovecot-uidlist` under the `dovecot-uidlist.lock`
//! dot-lock (a new list takes its UIDVALIDITY from `dovecot-uidvalidity` in the store root),
//! so Dovecot and rpost's imapd see the same UIDs. Concurrent deliveries of one process into
//! one mailbox share that step: the first takes the lock once for all that are waiting and
//! appends their records in one write (flat combining; one lock file, one fdatasync per
//! batch instead of per message). A failure at that step does not undo the delivery
//! ([`Delivered::uid`] is then `None`; the next IMAP session assigns the UID). The dot-lock
//! is a hard link from a per-process seed file in the mailbox's `tmp/`, so a lock cycle
//! frees no inode (see `lock.rs`); [`Maildir::clean_tmp`] removes seeds of killed processes
//! and partial deliveries after 36 hours, as Dovecot cleans `tmp/`.
//!
//! Also: [`Uidlist`] (read, assign, write `dovecot-uidlist` v3), [`Keywords`]
//! (`dovecot-keywords`), subscriptions ([`Maildir::subscriptions`], [`Maildir::subscribe`]),
//! and a simple quota ([`Quota`]: the sizes of all messages in `cur/` and `new/` of every
//! mailbox, as Dovecot's maildir quota counts them, taken from `,S=` when present).
//!
//! # SECURITY
//! Mailbox names come from the network (IMAP, LMTP `+detail`): [`Maildir::folder`] refuses
//! anything that could leave the Maildir root or alias another mailbox (`..`, `/` at either
//! end or doubled, `.` inside a name, control characters, non-ASCII, IMAP wildcards).
//!
//! Files are created mode 0600 and directories 0700, exclusively (`O_EXCL`). Every operation
//! inside the store goes through directory descriptors (`openat`, `linkat`, `renameat`) with
//! `O_NOFOLLOW`. With [`Maildir::with_owner`] (a process running as root on behalf of a mail
//! user) everything created is chown'ed to that user, the path to the store is walked one
//! component at a time and a symbolic link is followed only inside directories that belong
//! to root and are writable by nobody else, `..` is refused, and an existing file is updated
//! in place only if it belongs to the user and has one link: links planted by a mail user
//! cannot make root write elsewhere.
//!
//! # CONFIGURATION
//! This crate has no parameters of its own; callers map Dovecot's: `mail_location =
//! maildir:~/Maildir` (the store root, `~` being the user's home; `maildir:/path` absolute),
//! `mail_home`, `mail_uid`/`mail_gid` (the owner), the userdb `quota_rule` (the quota).
//!
//! # STANDARDS
//! Maildir (<https://cr.yp.to/proto/maildir.html>); Maildir++ folders (Courier,
//! <https://www.courier-mta.org/imap/README.maildirquota.html>); Dovecot's Maildir extensions:
//! `dovecot-uidlist` version 3 (read also version 1), `dovecot-uidvalidity`,
//! `dovecot-keywords`, `subscriptions` (version 2 format), `,S=`/`,W=` file name fields and
//! the `pid:host` dot-lock (Dovecot 2.3 `src/lib-storage/index/maildir`).

pub mod keywords;
pub mod name;
pub mod uidlist;

mod combine;
mod dir;
mod handles;
mod lock;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use dir::Owner;
pub use keywords::Keywords;
pub use lock::release_seeds as release_lock_seeds;
pub use name::{FileName, folder_dir_name, folder_from_dir_name, normalize_flags, parse_filename, unique_base};
pub use uidlist::{UIDLIST_LOCK_TIMEOUT, UidRecord, Uidlist, UidlistLock};

use dir::Dir;
use handles::Handles;
use lock::DotLock;
use std::sync::Arc;

/// Group commits of directory fsyncs (new/, cur/) and of uidlist fdatasyncs, per path.
static DIR_SYNCS: rpost_fsync::GroupSyncs = rpost_fsync::GroupSyncs::new();
static FILE_SYNCS: rpost_fsync::GroupSyncs = rpost_fsync::GroupSyncs::new();

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    #[error("invalid mailbox name \"{name}\": {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid maildir flags \"{0}\"")]
    InvalidFlags(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("quota exceeded: {used} bytes used, {size} more would pass the limit of {limit}")]
    OverQuota { used: u64, size: u64, limit: u64 },
    #[error("{}: timeout waiting for the lock", .0.display())]
    LockTimeout(PathBuf),
    #[error("broken file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("mailbox {0} does not exist")]
    NoMailbox(String),
}

impl MaildirError {
    pub(crate) fn io(path: PathBuf, source: io::Error) -> MaildirError {
        MaildirError::Io { path, source }
    }

    /// The same error again, for each of the deliveries a shared lock cycle failed for
    /// (`io::Error` cannot be cloned: its kind, errno and message are kept).
    pub(crate) fn duplicate(&self) -> MaildirError {
        match self {
            MaildirError::InvalidName { name, reason } => MaildirError::InvalidName { name: name.clone(), reason },
            MaildirError::InvalidFlags(f) => MaildirError::InvalidFlags(f.clone()),
            MaildirError::Io { path, source } => {
                let source = match source.raw_os_error() {
                    Some(errno) if source.get_ref().is_none() => io::Error::from_raw_os_error(errno),
                    _ => io::Error::new(source.kind(), source.to_string()),
                };
                MaildirError::Io { path: path.clone(), source }
            }
            MaildirError::OverQuota { used, size, limit } => {
                MaildirError::OverQuota { used: *used, size: *size, limit: *limit }
            }
            MaildirError::LockTimeout(p) => MaildirError::LockTimeout(p.clone()),
            MaildirError::Corrupt { path, reason } => {
                MaildirError::Corrupt { path: path.clone(), reason: reason.clone() }
            }
            MaildirError::NoMailbox(m) => MaildirError::NoMailbox(m.clone()),
        }
    }

    /// True for "mailbox full" (the LMTP reply differs from other failures).
    pub fn is_over_quota(&self) -> bool {
        matches!(self, MaildirError::OverQuota { .. })
    }
}

/// A storage quota over the whole store (all mailboxes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The limit in bytes.
    pub limit: u64,
    /// How far the last message may take a user who is still under the limit above it.
    pub grace: u64,
}

impl Quota {
    /// A limit with Dovecot's default `quota_grace = 10%%`, which applies to LDA/LMTP
    /// deliveries: the message that takes the user over the limit is still accepted.
    pub fn lda(limit: u64) -> Quota {
        Quota { limit, grace: limit / 10 }
    }

    /// A limit without grace (IMAP APPEND).
    pub fn strict(limit: u64) -> Quota {
        Quota { limit, grace: 0 }
    }

    /// Whether `size` more bytes may be stored when `used` are.
    pub fn allows(&self, used: u64, size: u64) -> bool {
        let total = used.saturating_add(size);
        total <= self.limit || (used <= self.limit && total <= self.limit.saturating_add(self.grace))
    }
}

/// A message just delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Final path, in `new/` (or `cur/` when flags were given).
    pub path: PathBuf,
    /// The file name in `new/` or `cur/`.
    pub filename: String,
    /// The IMAP UID recorded in `dovecot-uidlist`; `None` when that update failed (logged; the
    /// message is delivered all the same and gets its UID at the next IMAP sync).
    pub uid: Option<u32>,
    /// Stored size (LF line endings): the `S=` field.
    pub size: u64,
    /// Size with CRLF line endings: the `W=` field.
    pub vsize: u64,
}

/// One mailbox of a Maildir++ store: INBOX (the store root) or a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maildir {
    /// The store root: INBOX's directory, which holds the folders.
    store: PathBuf,
    /// `.a.b` for folder `a/b`; `None` for INBOX.
    dir_name: Option<String>,
    owner: Option<Owner>,
    quota: Option<Quota>,
    /// How long a delivery waits for the uidlist lock.
    lock_timeout: Duration,
}

/// How often [`Maildir::clean_tmp`] looks at `tmp/` (Dovecot's MAILDIR_TMP_SCAN_SECS).
pub const TMP_SCAN_INTERVAL: Duration = Duration::from_secs(8 * 3600);
/// Files in `tmp/` this old are left over (Dovecot's MAILDIR_TMP_DELETE_SECS).
pub const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);

const MARKER: &str = "maildirfolder";
const SUBSCRIPTIONS: &str = "subscriptions";

impl Maildir {
    /// The store whose INBOX is the Maildir `root` (which need not exist yet).
    pub fn open(root: impl Into<PathBuf>) -> Maildir {
        Maildir { store: root.into(), dir_name: None, owner: None, quota: None, lock_timeout: UIDLIST_LOCK_TIMEOUT }
    }

    /// Everything created is given to `uid:gid`, and paths are walked without following
    /// links a mail user could plant (see SECURITY). For a process running as root on the
    /// user's behalf; a process running as the user itself does not need it.
    pub fn with_owner(mut self, uid: u32, gid: u32) -> Maildir {
        self.owner = Some(Owner { uid, gid });
        self
    }

    /// Deliveries are refused with [`MaildirError::OverQuota`] past this quota.
    pub fn with_quota(mut self, quota: Option<Quota>) -> Maildir {
        self.quota = quota;
        self
    }

    /// Deliveries wait this long for the uidlist lock (tests; the default is Dovecot's).
    #[cfg(test)]
    pub(crate) fn with_lock_timeout(mut self, timeout: Duration) -> Maildir {
        self.lock_timeout = timeout;
        self
    }

    /// This mailbox's directory.
    pub fn path(&self) -> PathBuf {
        match &self.dir_name {
            Some(d) => self.store.join(d),
            None => self.store.clone(),
        }
    }

    /// The store root (INBOX).
    pub fn store_path(&self) -> &Path {
        &self.store
    }

    /// The IMAP name: `INBOX`, or the folder name with `/` as separator.
    pub fn name(&self) -> String {
        match &self.dir_name {
            Some(d) => folder_from_dir_name(d).unwrap_or_default(),
            None => "INBOX".to_string(),
        }
    }

    /// The mailbox `name` of the same store (`INBOX` or a folder), which need not exist yet.
    /// The name is validated: see [`name::folder_dir_name`].
    pub fn folder(&self, name: &str) -> Result<Maildir, MaildirError> {
        let dir_name = folder_dir_name(name)?;
        Ok(Maildir { dir_name, ..self.clone() })
    }

    fn secure(&self) -> bool {
        self.owner.is_some()
    }

    fn open_store(&self, create: bool) -> Result<Dir, MaildirError> {
        Dir::walk(&self.store, create, self.owner, self.secure()).map_err(|e| MaildirError::io(self.store.clone(), e))
    }

    /// Opens (and with `create`, creates) the store and this mailbox.
    fn open_dirs(&self, create: bool) -> Result<(Dir, Dir), MaildirError> {
        let store = self.open_store(create)?;
        let io = |e| MaildirError::io(self.path(), e);
        let mbox = match &self.dir_name {
            None => store.try_clone().map_err(io)?,
            Some(d) if create => {
                let m = store.sub_create(d, self.owner).map_err(io)?;
                match m.create_new(MARKER, 0o600, self.owner) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io(e)),
                    _ => {}
                }
                m
            }
            Some(d) => store.sub(d).map_err(io)?,
        };
        if create {
            for sub in ["cur", "new", "tmp"] {
                mbox.mkdir(sub.as_ref(), self.owner).map_err(|e| MaildirError::io(self.path().join(sub), e))?;
            }
        }
        Ok((store, mbox))
    }

    /// Creates the mailbox (`mkdir -p` of the store and `cur/ new/ tmp/`, mode 0700, plus the
    /// `maildirfolder` marker for a folder). Existing parts are left as they are.
    pub fn create(&self) -> Result<(), MaildirError> {
        self.open_dirs(true).map(|_| ())
    }

    /// Whether the mailbox exists (its directory does).
    pub fn exists(&self) -> bool {
        self.open_dirs(false).is_ok()
    }

    /// Stores a message (see DESCRIPTION). INBOX is created when missing, as Dovecot does; a
    /// folder must exist ([`MaildirError::NoMailbox`]: IMAP's TRYCREATE; see
    /// [`Maildir::create`]). `content` may use CRLF or LF line endings; it is stored with LF.
    /// `flags`: Maildir flags (`S`, `FS`, ...), empty for a new message in `new/`.
    pub fn deliver(&self, content: &mut dyn Read, flags: &str) -> Result<Delivered, MaildirError> {
        let flags = normalize_flags(flags)?;
        let h = self.delivery_handles(flags.is_empty())?;
        let (store, mbox, tmp) = (&h.store, &h.mbox, &h.tmp);
        let dest = if flags.is_empty() { &h.new } else { &h.cur };

        // tmp/<unique>, exclusively.
        let mut base = unique_base();
        let mut file = None;
        for _ in 0..10 {
            match tmp.create_new(&base, 0o600, self.owner) {
                Ok(f) => {
                    file = Some(f);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => base = unique_base(),
                Err(e) => return Err(MaildirError::io(tmp.path().join(&base), e)),
            }
        }
        let Some(file) = file else {
            return Err(MaildirError::io(tmp.path().join(&base), io::Error::from(io::ErrorKind::AlreadyExists)));
        };
        let tmp_path = tmp.path().join(&base);
        let cleanup = |e: MaildirError| {
            let _ = tmp.unlink(&base);
            e
        };
        let mut w = LfWriter::new(io::BufWriter::with_capacity(64 * 1024, file));
        let written = io::copy(content, &mut w).and_then(|_| w.finish());
        let (size, vsize, file) = match written {
            Ok(v) => v,
            Err(e) => return Err(cleanup(MaildirError::io(tmp_path, e))),
        };
        if let Err(e) = file.sync_all() {
            return Err(cleanup(MaildirError::io(tmp_path, e)));
        }
        drop(file);

        if let Some(q) = &self.quota {
            let used = match self.usage_of(store) {
                Ok(u) => u,
                Err(e) => return Err(cleanup(e)),
            };
            if !q.allows(used, size) {
                return Err(cleanup(MaildirError::OverQuota { used, size, limit: q.limit }));
            }
        }

        // Where the uidlist stands before the file becomes visible (see assign_uid).
        let before =
            mbox.open_read(uidlist::UIDLIST_NAME).and_then(|f| f.metadata()).ok().map(|m| uidlist::ListMark::of(&m));
        // link() into new/ (or cur/), under a fresh name if one is taken (never expected).
        let mut final_base = base.clone();
        let mut filename = String::new();
        for _ in 0..10 {
            filename = format!("{final_base},S={size},W={vsize}");
            if !flags.is_empty() {
                filename.push_str(":2,");
                filename.push_str(&flags);
            }
            match tmp.link(&base, dest, &filename) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    final_base = unique_base();
                    filename.clear();
                }
                Err(e) => return Err(cleanup(MaildirError::io(dest.path().join(&filename), e))),
            }
        }
        if filename.is_empty() {
            return Err(cleanup(MaildirError::io(
                dest.path().to_path_buf(),
                io::Error::from(io::ErrorKind::AlreadyExists),
            )));
        }
        // Group commit: concurrent deliveries into this mailbox share one fsync of new/.
        if let Err(e) = DIR_SYNCS.sync(dest.path(), || dest.fsync()) {
            // The link may not be durable: take it back so the caller can retry cleanly.
            let _ = dest.unlink(&filename);
            return Err(cleanup(MaildirError::io(dest.path().to_path_buf(), e)));
        }
        let path = dest.path().join(&filename);
        // The UID first, the tmp/ name after: the deliveries that one fsync of new/ released
        // together then reach assign_uid together and share its lock cycle (measured: a
        // quarter fewer cycles in bench/e2e-delivery.sh). The tmp/ name is only a second link.
        let uid = match self.assign_uid(mbox, store, &filename, before) {
            Ok(uid) => Some(uid),
            Err(e) => {
                tracing::warn!("{}: no UID assigned yet: {e}", path.display());
                None
            }
        };
        if let Err(e) = tmp.unlink(&base) {
            tracing::warn!("unlink({}): {e}", tmp_path.display());
        }
        Ok(Delivered { path, filename, uid, size, vsize })
    }

    /// The mailbox's directories for a delivery into `new/` (`dest_new`) or `cur/`: kept
    /// open from an earlier delivery of this process when the paths still lead to them (see
    /// the `handles` module), else opened (INBOX and `cur/ new/ tmp/` created when missing)
    /// and kept.
    fn delivery_handles(&self, dest_new: bool) -> Result<Arc<Handles>, MaildirError> {
        let key = handles::Key { mbox: self.path(), owner: self.owner, secure: self.secure() };
        if let Some(h) = handles::get(&key, self.dir_name.is_some(), dest_new) {
            return Ok(h);
        }
        if self.dir_name.is_some() {
            match self.open_dirs(false) {
                Err(MaildirError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    return Err(MaildirError::NoMailbox(self.name()));
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        let (store, mbox) = self.open_dirs(true)?;
        let sub = |name: &str| mbox.sub(name).map_err(|e| MaildirError::io(self.path().join(name), e));
        let (tmp, new, cur) = (sub("tmp")?, sub("new")?, sub("cur")?);
        let h = Handles::new(store, mbox, tmp, new, cur).map_err(|e| MaildirError::io(self.path(), e))?;
        let h = Arc::new(h);
        handles::put(key, h.clone());
        Ok(h)
    }

    /// The UID of `filename`, in one lock cycle with the concurrent deliveries of this process
    /// into the same mailbox (see the `combine` module).
    fn assign_uid(
        &self,
        mbox: &Dir,
        store: &Dir,
        filename: &str,
        before: Option<uidlist::ListMark>,
    ) -> Result<u32, MaildirError> {
        combine::assign_uid(mbox, store, self.owner, filename, before, self.lock_timeout)
    }

    /// The mailbox's `dovecot-uidlist`, `None` when it has none yet.
    pub fn uidlist(&self) -> Result<Option<Uidlist>, MaildirError> {
        let (_, mbox) = self.open_dirs(false)?;
        uidlist::read_uidlist(&mbox)
    }

    /// Takes the mailbox's uidlist lock (waiting up to `timeout`; Dovecot waits
    /// [`UIDLIST_LOCK_TIMEOUT`]), for changing the uidlist or the keywords.
    pub fn lock_uidlist(&self, timeout: Duration) -> Result<UidlistLock, MaildirError> {
        let (store, mbox) = self.open_dirs(false)?;
        UidlistLock::acquire(mbox, store, self.owner, timeout)
    }

    /// Removes what interrupted deliveries and killed processes left in `tmp/` (partial
    /// messages, lock seeds), as Dovecot does when it opens a mailbox: at most every
    /// [`TMP_SCAN_INTERVAL`] (the access time of `tmp/` records the last scan, as in
    /// Dovecot), the regular files whose access, modification and change times are all
    /// older than [`TMP_MAX_AGE`]. Returns how many were removed. A file in use is younger:
    /// a delivery writes its file within seconds, and each lock taken through a seed
    /// changes the seed's ctime.
    pub fn clean_tmp(&self) -> Result<usize, MaildirError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        self.clean_tmp_at(now - TMP_SCAN_INTERVAL.as_secs() as i64, now - TMP_MAX_AGE.as_secs() as i64)
    }

    /// [`Maildir::clean_tmp`] with its two times (seconds since the epoch): scan when
    /// `tmp/` was last scanned before `scan_before`, remove files all of whose times are
    /// before `cutoff`.
    pub(crate) fn clean_tmp_at(&self, scan_before: i64, cutoff: i64) -> Result<usize, MaildirError> {
        let (_, mbox) = match self.open_dirs(false) {
            Ok(d) => d,
            Err(MaildirError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let tmp_path = self.path().join("tmp");
        let io_err = |e: io::Error| MaildirError::io(tmp_path.clone(), e);
        let tmp = match mbox.sub("tmp") {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(e)),
        };
        let st = tmp.fstat().map_err(io_err)?;
        if st.st_atime >= scan_before {
            return Ok(0);
        }
        let mut removed = 0;
        for (name, is_dir) in tmp.list().map_err(io_err)? {
            if is_dir == Some(true) {
                continue;
            }
            let Ok(st) = tmp.stat(&name) else { continue };
            if dir::is_type(&st, nix::sys::stat::SFlag::S_IFREG)
                && st.st_atime < cutoff
                && st.st_mtime < cutoff
                && st.st_ctime < cutoff
                && tmp.unlink(&name).is_ok()
            {
                removed += 1;
            }
        }
        tmp.touch_atime().map_err(io_err)?;
        if removed > 0 {
            tracing::info!("{}: removed {removed} files older than 36 hours from tmp/", self.path().display());
        }
        Ok(removed)
    }

    /// Bytes stored in the whole store: `cur/` and `new/` of INBOX and of every folder.
    pub fn usage(&self) -> Result<u64, MaildirError> {
        match self.open_store(false) {
            Ok(store) => self.usage_of(&store),
            Err(MaildirError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn usage_of(&self, store: &Dir) -> Result<u64, MaildirError> {
        let mut total = mailbox_usage(store)?;
        for name in self.folder_dirs(store)? {
            if let Ok(d) = store.sub(&name) {
                total += mailbox_usage(&d)?;
            }
        }
        Ok(total)
    }

    fn folder_dirs(&self, store: &Dir) -> Result<Vec<String>, MaildirError> {
        let entries = store.list().map_err(|e| MaildirError::io(self.store.clone(), e))?;
        Ok(entries
            .into_iter()
            .filter(|(n, is_dir)| {
                folder_from_dir_name(n).is_some()
                    && match is_dir {
                        Some(d) => *d,
                        None => store.stat(n).is_ok_and(|s| dir::is_type(&s, nix::sys::stat::SFlag::S_IFDIR)),
                    }
            })
            .map(|(n, _)| n)
            .collect())
    }

    /// The folders of the store (IMAP names, `/` separated), sorted; INBOX not included.
    pub fn folders(&self) -> Result<Vec<String>, MaildirError> {
        let store = match self.open_store(false) {
            Ok(s) => s,
            Err(MaildirError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names: Vec<String> = self.folder_dirs(&store)?.iter().filter_map(|d| folder_from_dir_name(d)).collect();
        names.sort();
        Ok(names)
    }

    /// The mailbox's `dovecot-keywords` (empty when there is none).
    pub fn keywords(&self) -> Result<Keywords, MaildirError> {
        let (_, mbox) = self.open_dirs(false)?;
        keywords::read(&mbox)
    }

    /// Replaces the mailbox's `dovecot-keywords` (under its own dot-lock, then rename).
    pub fn save_keywords(&self, k: &Keywords) -> Result<(), MaildirError> {
        let (_, mbox) = self.open_dirs(false)?;
        let lock =
            DotLock::acquire(&mbox, keywords::KEYWORDS_NAME, lock::UIDLIST_STALE, Duration::from_secs(30), self.owner)?;
        lock.replace(k.to_text().as_bytes())
    }

    /// The subscribed mailbox names (from `subscriptions` in the store root).
    pub fn subscriptions(&self) -> Result<Vec<String>, MaildirError> {
        let store = match self.open_store(false) {
            Ok(s) => s,
            Err(MaildirError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let path = self.store.join(SUBSCRIPTIONS);
        let mut text = String::new();
        match store.open_read(SUBSCRIPTIONS) {
            Ok(f) => {
                f.take(16 << 20).read_to_string(&mut text).map_err(|e| MaildirError::io(path, e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(MaildirError::io(path, e)),
        }
        Ok(parse_subscriptions(&text))
    }

    /// Subscribes (`set`) or unsubscribes `name`, as Dovecot does: under `subscriptions.lock`,
    /// the new file is written into the lock and renamed over `subscriptions`. New files use
    /// Dovecot's version 2 format (`V\t2` header, hierarchy levels separated by tabs).
    pub fn subscribe(&self, name: &str, set: bool) -> Result<(), MaildirError> {
        folder_dir_name(name)?;
        let name = if name.eq_ignore_ascii_case("INBOX") { "INBOX" } else { name };
        let store = self.open_store(true)?;
        let lock =
            DotLock::acquire(&store, SUBSCRIPTIONS, Duration::from_secs(30), Duration::from_secs(120), self.owner)?;
        let mut old = String::new();
        match store.open_read(SUBSCRIPTIONS) {
            Ok(f) => {
                f.take(16 << 20)
                    .read_to_string(&mut old)
                    .map_err(|e| MaildirError::io(self.store.join(SUBSCRIPTIONS), e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(MaildirError::io(self.store.join(SUBSCRIPTIONS), e)),
        }
        let v2 = old.is_empty() || old.starts_with(V2_HEADER);
        let escaped = if v2 { encode_subscription(name) } else { name.to_string() };
        let body = old.strip_prefix(V2_HEADER).unwrap_or(&old);
        let mut out = String::new();
        if v2 {
            out.push_str(V2_HEADER);
        }
        let mut found = false;
        for line in body.lines() {
            if line == escaped {
                found = true;
                if !set {
                    continue;
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        if set && !found {
            out.push_str(&escaped);
            out.push('\n');
        }
        if found == set {
            return Ok(()); // nothing changes; the lock is dropped
        }
        lock.replace(out.as_bytes())
    }
}

const V2_HEADER: &str = "V\t2\n\n";

/// Dovecot's str_append_tabescaped, per hierarchy level, levels joined by tabs.
fn encode_subscription(name: &str) -> String {
    name.split('/')
        .map(|level| {
            let mut s = String::with_capacity(level.len());
            for c in level.chars() {
                match c {
                    '\x01' => s.push_str("\x011"),
                    '\t' => s.push_str("\x01t"),
                    '\r' => s.push_str("\x01r"),
                    '\n' => s.push_str("\x01n"),
                    c => s.push(c),
                }
            }
            s
        })
        .collect::<Vec<_>>()
        .join("\t")
}

fn decode_level(level: &str) -> String {
    let mut out = String::with_capacity(level.len());
    let mut it = level.chars();
    while let Some(c) = it.next() {
        if c == '\x01' {
            match it.next() {
                Some('1') => out.push('\x01'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_subscriptions(text: &str) -> Vec<String> {
    match text.strip_prefix(V2_HEADER) {
        Some(body) => body
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(decode_level).collect::<Vec<_>>().join("/"))
            .collect(),
        None => text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect(),
    }
}

/// Sum of the message sizes in `cur/` and `new/` of one mailbox.
fn mailbox_usage(mbox: &Dir) -> Result<u64, MaildirError> {
    let mut total = 0u64;
    for sub in ["cur", "new"] {
        let d = match mbox.sub(sub) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(MaildirError::io(mbox.path().join(sub), e)),
        };
        for (name, _) in d.list().map_err(|e| MaildirError::io(d.path().to_path_buf(), e))? {
            if name.starts_with('.') {
                continue;
            }
            total += match parse_filename(&name).size {
                Some(s) => s,
                None => d.stat(&name).map(|s| s.st_size.max(0) as u64).unwrap_or(0),
            };
        }
    }
    Ok(total)
}

/// Writes content with CRLF turned into LF and counts the stored size and the CRLF size.
struct LfWriter<W: Write> {
    inner: W,
    held_cr: bool,
    last: u8,
    size: u64,
    extra: u64,
    buf: Vec<u8>,
}

impl<W: Write> LfWriter<W> {
    fn new(inner: W) -> Self {
        LfWriter { inner, held_cr: false, last: 0, size: 0, extra: 0, buf: Vec::new() }
    }

    fn push(&mut self, b: u8) {
        if b == b'\n' && self.last != b'\r' {
            self.extra += 1;
        }
        self.last = b;
        self.buf.push(b);
    }

    fn finish(mut self) -> io::Result<(u64, u64, std::fs::File)>
    where
        W: IntoFile,
    {
        if self.held_cr {
            self.held_cr = false;
            self.push(b'\r');
        }
        self.flush_buf()?;
        let file = self.inner.into_file()?;
        Ok((self.size, self.size + self.extra, file))
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        self.inner.write_all(&self.buf)?;
        self.size += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

trait IntoFile {
    fn into_file(self) -> io::Result<std::fs::File>;
}

impl IntoFile for io::BufWriter<std::fs::File> {
    fn into_file(self) -> io::Result<std::fs::File> {
        self.into_inner().map_err(|e| e.into_error())
    }
}

impl<W: Write> Write for LfWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        for &b in data {
            if self.held_cr {
                self.held_cr = false;
                if b == b'\n' {
                    self.push(b'\n');
                    continue;
                }
                self.push(b'\r');
            }
            if b == b'\r' {
                self.held_cr = true;
            } else {
                self.push(b);
            }
        }
        if self.buf.len() >= 64 * 1024 {
            self.flush_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;

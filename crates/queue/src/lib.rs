//! # rpost-queue - the on-disk queue file
//!
//! ## SUMMARY
//!
//! ```text
//! let queue = rpost_queue::Queue::new("/var/spool/rpost");
//! let mut msg = queue.create(&envelope)?;          // incoming/ID, mode 0600
//! msg.write_content(b"Subject: hi\r\n\r\nbody\r\n")?;
//! let id = msg.commit()?;                          // fsync'd, mode 0700: now say 250
//!
//! for id in queue.scan(QueueDir::Incoming)? {      // committed files only
//!     queue.move_to(&id, QueueDir::Incoming, QueueDir::Active)?;
//!     let mut file = queue.open(QueueDir::Active, &id)?;   // read + verify
//!     file.mark_recipient(0, RcptStatus::Delivered)?;      // one byte, in place
//!     if file.all_done() { queue.retire(QueueDir::Active, &id)?; }  // kept for reuse
//! }
//! ```
//!
//! ## DESCRIPTION
//!
//! One file per message, named by its [`QueueId`] (16 uppercase hex digits
//! that sort in arrival order). A file moves through the spool directories
//! by rename only: smtpd creates it in `incoming/`; qmgr moves it to
//! `active/` while delivering, to `deferred/` when a delivery must be
//! retried, and removes it when every recipient is done. `rmaster queue
//! hold` moves it to `hold/`; a file that fails verification goes to
//! `corrupt/` for the admin to inspect.
//!
//! The format ([`mod@format`]) is versioned and binary: the magic line
//! `RPOSTQ 1\n`, envelope records (type byte, u32 big-endian length,
//! payload), a content-start record, the message content verbatim (CRLF
//! line endings, dot-unstuffed, exactly as received), and a fixed-size END
//! record holding the content length, the recipient count and a CRC32 of
//! everything before it. Each recipient's delivery status is one byte at a
//! known offset, rewritten in place with `pwrite` when a recipient is done
//! (as Postfix does); the CRC treats those bytes as zero so marking does not
//! invalidate it, and the status values are chosen so that any single bit
//! flip of a status byte yields an invalid value.
//!
//! Commit protocol ([`IncomingMessage::commit`]): flush the content, write
//! END, `fchmod` the file to 0700, `fsync` it (one sync for both, as Postfix
//! does), then `fsync` `incoming/`. Only then may smtpd answer 250. The
//! execute bit is the "complete" mark (as in Postfix): [`Queue::scan`] lists
//! only files that carry it, so a file still being written is never picked
//! up. A file system may persist the new mode ahead of delayed-allocation
//! data; a power loss before the fsync completes can then leave a marked
//! file with part of its data, which fails the END record or CRC check
//! below (its client never heard 250). A file left without the
//! mark by a crash mid-DATA was never acknowledged; [`Queue::cleanup_incoming`]
//! removes it. The writer holds an `flock` on its file until commit or
//! abort, so cleanup never removes a file whose writer is alive, however
//! slowly its client sends (a crash releases the lock). Even so, every reader verifies the END record and CRC, so a
//! torn, truncated or bit-flipped file is reported, never delivered.
//!
//! Recycling ([`Queue::retire`]): when every recipient is done, qmgr does
//! not unlink the file but renames it to `recycle/`, as it is, and
//! [`Queue::create`] takes such a file before creating a new one: it locks
//! it, makes it 0600 and overwrites its magic while it is still in
//! `recycle/`, renames it to `incoming/NEWID` without replacing anything,
//! and writes the new message over the old one; commit cuts the file after
//! the END record. Why: freeing costs. On ext4 without a journal each inode
//! allocation scans past every recently freed inode of the block group, and
//! on a file system mounted with `discard` each freed block range is
//! discarded synchronously (about 1 ms, which made qmgr's truncation of
//! retired files pace all delivery); a reused file frees neither its inode
//! nor, while messages are alike in size, its blocks. A retired file over
//! [`RECYCLE_KEEP_BYTES`] is emptied, so the pool holds little disk space.
//! `recycle/` holds at most
//! `queue_file_recycle_limit` files (counted approximately, recounted now
//! and then; beyond it files are unlinked as before). It is not a
//! [`QueueDir`]: it never holds a message, so scans, lookups and listings
//! never see it. A spool without `recycle/` works as before.
//!
//! [`QueueFile::set_attr`] records a fact qmgr must remember across
//! restarts (the delay warning was sent) by rewriting the file beside the
//! old one and renaming it over it: same format, so nothing else changes.
//!
//! Commits from many threads overlap freely: there is no lock around
//! `fsync`; each commit syncs its own file and the directory.
//!
//! ## SECURITY
//!
//! Queue files are 0600 while written and 0700 when committed, owned by
//! `mail_owner`, in 0700 directories; rmaster creates the directories and
//! the daemons run as `mail_owner`. Files are opened with `O_NOFOLLOW` and
//! created with `O_EXCL`, and queue IDs are validated before they are used
//! in a path, so no name can escape the spool.
//!
//! Files in `recycle/` hold delivered messages (as private as `active/`)
//! and are never read. A file is reused only if it
//! is a regular file owned by the caller's euid, with one link, still named
//! where it was found, and not locked by anyone (opened with `O_NOFOLLOW`
//! and `O_NONBLOCK`, so a planted symlink or FIFO is refused without
//! blocking); it loses the complete mark and its magic before it leaves
//! `recycle/`, so an old message can never reappear in `incoming/`. A
//! reader that outlives its message (a delivery agent qmgr gave up waiting
//! for) could otherwise read a recycled inode's next message: opening and
//! streaming a file both check at the end that its name still points to the
//! inode read, and fail if not.
//!
//! The reader treats file contents as untrusted: every length is bounded
//! (envelope records at most 64 KiB, at most 100,000 recipients and 1,000
//! attributes, 256 MiB of envelope in all) and checked against the file
//! size before anything is allocated, text must be UTF-8, and every defect
//! is a typed [`QueueError`], never a panic. The human-readable dump in
//! [`show`] escapes control characters so a hostile message cannot drive
//! the admin's terminal. This crate contains no unsafe code.
//!
//! ## CONFIGURATION
//!
//! `queue_directory` (default `/var/spool/rpost`) is the root given to
//! [`Queue::new`]; the subdirectories are `incoming`, `active`,
//! `deferred`, `hold` and `corrupt`, plus `recycle`.
//! `queue_file_recycle_limit` (rpost only, default 10000, 0 = off) is the
//! most files `recycle/` keeps, given with [`Queue::with_recycle_limit`]
//! by qmgr, the only process that retires files.
//!
//! ## STANDARDS
//!
//! None for the file format itself. The DSN fields stored (NOTIFY, ORCPT,
//! RET, ENVID) are those of RFC 3461; BODY of RFC 6152/RFC 3030 and
//! SMTPUTF8 of RFC 6531.

mod envelope;
pub mod format;
mod id;
mod reader;
mod recycle;
pub mod show;
mod writer;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use envelope::{BodyType, ClientInfo, Envelope, RcptStatus, Recipient, Ret};
pub use id::QueueId;
pub use reader::{ContentReader, QueueFile};
pub use recycle::{DEFAULT_RECYCLE_LIMIT, KEEP_BYTES as RECYCLE_KEEP_BYTES, RECYCLE_DIR};
pub use show::{QueueEntry, QueueEntryRecipient};
pub use writer::{IncomingMessage, Queue};

/// Everything that can go wrong with a queue file. Each message is one
/// line and names the file where there is one.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A system call failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is torn, truncated, tampered with or otherwise unreadable.
    #[error("{}: corrupt queue file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The file was written by a newer (or unknown) format version.
    #[error("{}: queue file version {version} not supported", path.display())]
    Version { path: PathBuf, version: u32 },
    /// Not a queue ID: 16 characters `[0-9A-F]`.
    #[error("invalid queue ID {0:?}")]
    BadId(String),
    /// The envelope cannot be stored (it exceeds a format limit).
    #[error("envelope cannot be queued: {0}")]
    Envelope(String),
    /// `mark_recipient` with an index past the last recipient.
    #[error("{}: no recipient #{index}", path.display())]
    NoRecipient { path: PathBuf, index: usize },
    /// An earlier write to this incoming file failed; it cannot be committed.
    #[error("{}: an earlier write failed; message not committed", path.display())]
    Poisoned { path: PathBuf },
}

impl QueueError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> QueueError {
        QueueError::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> QueueError {
        QueueError::Corrupt { path: path.into(), reason: reason.into() }
    }
}

/// The spool subdirectories a queue file lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueDir {
    Incoming,
    Active,
    Deferred,
    Hold,
    Corrupt,
}

impl QueueDir {
    /// All directories, in the order a message normally visits them.
    pub const ALL: [QueueDir; 5] =
        [QueueDir::Incoming, QueueDir::Active, QueueDir::Deferred, QueueDir::Hold, QueueDir::Corrupt];

    /// The directory name under `queue_directory`.
    pub fn name(self) -> &'static str {
        match self {
            QueueDir::Incoming => "incoming",
            QueueDir::Active => "active",
            QueueDir::Deferred => "deferred",
            QueueDir::Hold => "hold",
            QueueDir::Corrupt => "corrupt",
        }
    }
}

impl fmt::Display for QueueDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QueueDir {
    type Err = String;

    fn from_str(s: &str) -> Result<QueueDir, String> {
        QueueDir::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| format!("unknown queue directory {s:?}"))
    }
}

//! Reading and verifying queue files; marking recipients done in place.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::format::{self, BLOCK};
use crate::{Envelope, QueueError, QueueId, RcptStatus, Recipient};

/// Name suffix of the temporary file [`QueueFile::set_attr`] writes (`.ID.rewrite`).
pub(crate) const REWRITE_SUFFIX: &str = ".rewrite";

/// A verified queue file: its envelope in memory, its content on disk.
#[derive(Debug, Clone)]
pub struct QueueFile {
    pub id: QueueId,
    /// Where the file was read from. A [`Queue::move_to`](crate::Queue::move_to)
    /// does not update it: reopen the file after moving it.
    pub path: PathBuf,
    pub envelope: Envelope,
    content_offset: u64,
    content_len: u64,
    /// File offset of each recipient's status byte.
    status_offsets: Vec<u64>,
}

impl QueueFile {
    /// Parses and verifies a whole file held in memory (tests, fuzzing).
    /// `path` names the file in errors and its last component must be the
    /// queue ID; [`content`](QueueFile::content) and
    /// [`mark_recipient`](QueueFile::mark_recipient) use it.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<QueueFile, QueueError> {
        let id = id_from_path(path)?;
        let p = format::parse(bytes, bytes.len() as u64).map_err(|f| f.with_path(path))?;
        Ok(QueueFile::from_parsed(id, path, p))
    }

    /// Reads and verifies the file at `path`, streaming the content
    /// through the checksum without holding it in memory.
    pub fn open(path: &Path) -> Result<QueueFile, QueueError> {
        let id = id_from_path(path)?;
        let file = open_nofollow(path, false)?;
        let md = file.metadata().map_err(|e| QueueError::io(path, e))?;
        if !md.is_file() {
            return Err(QueueError::corrupt(path, "not a regular file"));
        }
        let p = format::parse(BufReader::with_capacity(BLOCK, &file), md.len()).map_err(|f| f.with_path(path))?;
        // Retired and reused while we read (see Queue::retire): what we read may be another
        // message's; it verified, so say the file is gone rather than that it is corrupt.
        if !crate::writer::still_linked(&file, path) {
            let gone = io::Error::new(io::ErrorKind::NotFound, "queue file was removed while being read");
            return Err(QueueError::io(path, gone));
        }
        Ok(QueueFile::from_parsed(id, path, p))
    }

    fn from_parsed(id: QueueId, path: &Path, p: format::Parsed) -> QueueFile {
        QueueFile {
            id,
            path: path.to_owned(),
            envelope: p.envelope,
            content_offset: p.content_offset,
            content_len: p.content_len,
            status_offsets: p.status_offsets,
        }
    }

    /// The message content, read from disk.
    pub fn content(&self) -> Result<Vec<u8>, QueueError> {
        let mut r = self.content_reader()?;
        let mut v = Vec::new();
        v.try_reserve_exact(self.content_len as usize).map_err(|e| QueueError::io(&self.path, io::Error::other(e)))?;
        r.read_to_end(&mut v).map_err(|e| QueueError::io(&self.path, e))?;
        Ok(v)
    }

    /// The message content as a stream (unbuffered: wrap it in a
    /// `BufReader` for small reads). Fails with `UnexpectedEof` if the file
    /// has shrunk since it was verified, and at the end (instead of the
    /// final `Ok(0)`) if the file no longer has its name: it was retired
    /// while being read, and its inode may hold another message by now.
    pub fn content_reader(&self) -> Result<ContentReader, QueueError> {
        let mut file = open_nofollow(&self.path, false)?;
        file.seek(SeekFrom::Start(self.content_offset)).map_err(|e| QueueError::io(&self.path, e))?;
        Ok(ContentReader { file, path: self.path.clone(), left: self.content_len, checked: false })
    }

    /// The content size in bytes (Postfix's message_size).
    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    /// The file offset of recipient `index`'s status byte.
    pub fn status_offset(&self, index: usize) -> Option<u64> {
        self.status_offsets.get(index).copied()
    }

    /// Records a recipient's new status: one byte rewritten in place, then
    /// fdatasync. The checksum does not cover status bytes, so the file
    /// stays valid.
    pub fn mark_recipient(&mut self, index: usize, status: RcptStatus) -> Result<(), QueueError> {
        self.mark_recipients(&[(index, status)])
    }

    /// Like [`mark_recipient`](QueueFile::mark_recipient) for several
    /// recipients at once, with a single fdatasync.
    pub fn mark_recipients(&mut self, updates: &[(usize, RcptStatus)]) -> Result<(), QueueError> {
        self.write_marks(updates, true)
    }

    /// Like [`mark_recipients`](QueueFile::mark_recipients) without the fdatasync, for a
    /// caller that either removes the file next (a lost mark is moot) or calls
    /// [`sync_marks`](QueueFile::sync_marks) before the file leaves `active/`. A mark lost in
    /// a crash means one more delivery, never a lost message.
    pub fn mark_recipients_unsynced(&mut self, updates: &[(usize, RcptStatus)]) -> Result<(), QueueError> {
        self.write_marks(updates, false)
    }

    /// Makes the marks written so far durable (fdatasync).
    pub fn sync_marks(&self) -> Result<(), QueueError> {
        let file = open_nofollow(&self.path, true)?;
        file.sync_data().map_err(|e| QueueError::io(&self.path, e))
    }

    fn write_marks(&mut self, updates: &[(usize, RcptStatus)], sync: bool) -> Result<(), QueueError> {
        for &(index, _) in updates {
            if index >= self.status_offsets.len() {
                return Err(QueueError::NoRecipient { path: self.path.clone(), index });
            }
        }
        let file = open_nofollow(&self.path, true)?;
        let io_err = |e| QueueError::io(&self.path, e);
        for &(index, status) in updates {
            let off = self.status_offsets[index];
            // Refuse to scribble on a file that is not the one we parsed.
            let mut cur = [0u8];
            file.read_exact_at(&mut cur, off).map_err(io_err)?;
            if format::status_from_byte(cur[0]).is_none() {
                return Err(QueueError::corrupt(&self.path, format!("no status byte at offset {off}")));
            }
            file.write_all_at(&[format::status_byte(status)], off).map_err(io_err)?;
        }
        if sync {
            file.sync_data().map_err(io_err)?;
        }
        for &(index, status) in updates {
            self.envelope.recipients[index].status = status;
        }
        Ok(())
    }

    /// Sets extension attribute `name` to `value` (replacing every earlier
    /// value of it) by rewriting the whole file: a new file beside it
    /// (written, fdatasync'd, marked complete, fsync'd), renamed over the
    /// old one, then an fsync of the directory. A crash leaves either the
    /// old file or the new one, never a mix; the recipient statuses are
    /// carried over. The format stays version 1 (`A` records), so older
    /// readers read the result. Only the file's single owner (qmgr, while
    /// no delivery agent reads it) may call this.
    pub fn set_attr(&mut self, name: &str, value: &str) -> Result<(), QueueError> {
        let mut env = self.envelope.clone();
        env.attrs.retain(|(n, _)| n != name);
        env.attrs.push((name.to_owned(), value.to_owned()));
        let header = format::encode_header(&env)?;
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        // Not a queue ID, so scan() and cleanup never take it for a message.
        let tmp = dir.join(format!(".{}{REWRITE_SUFFIX}", self.id));
        let _ = std::fs::remove_file(&tmp);
        let result = (|| -> io::Result<()> {
            let out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(OFlag::O_NOFOLLOW.bits())
                .open(&tmp)?;
            let mut crc = crc32fast::Hasher::new();
            header.hash_into(&mut crc);
            let mut w = io::BufWriter::with_capacity(BLOCK, &out);
            w.write_all(&header.bytes)?;
            let mut content = self.content_reader().map_err(|e| io::Error::other(e.to_string()))?;
            let mut block = vec![0u8; BLOCK];
            loop {
                let n = content.read(&mut block)?;
                if n == 0 {
                    break;
                }
                crc.update(&block[..n]);
                w.write_all(&block[..n])?;
            }
            w.write_all(&format::encode_end(self.content_len, env.recipients.len() as u32, crc.finalize()))?;
            w.flush()?;
            drop(w);
            out.sync_data()?;
            out.set_permissions(std::fs::Permissions::from_mode(0o700))?;
            out.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(QueueError::io(&self.path, e));
        }
        crate::writer::sync_dir(&dir)?;
        self.content_offset = header.bytes.len() as u64;
        self.status_offsets = header.status_offsets;
        self.envelope = env;
        Ok(())
    }

    /// True when no recipient is pending any more.
    pub fn all_done(&self) -> bool {
        self.envelope.recipients.iter().all(|r| r.status.is_done())
    }

    /// The recipients still pending, with their indexes.
    pub fn pending(&self) -> impl Iterator<Item = (usize, &Recipient)> {
        self.envelope.recipients.iter().enumerate().filter(|(_, r)| !r.status.is_done())
    }
}

fn id_from_path(path: &Path) -> Result<QueueId, QueueError> {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    QueueId::parse(&name)
}

fn open_nofollow(path: &Path, write: bool) -> Result<File, QueueError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|e| QueueError::io(path, e))
}

/// Streams a queue file's content; see [`QueueFile::content_reader`].
#[derive(Debug)]
pub struct ContentReader {
    file: File,
    path: PathBuf,
    left: u64,
    /// The end-of-content name check passed.
    checked: bool,
}

impl ContentReader {
    /// Bytes not yet read.
    pub fn remaining(&self) -> u64 {
        self.left
    }
}

impl Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 && !self.checked {
            // A retired inode is reused for a new message (see Queue::retire). A reader that
            // outlived its delivery request (qmgr gave up waiting, delivered the message by
            // another way and retired it) must not pass off what it read as this message: a
            // retired file never gets its old name back, so the name still pointing to our
            // inode at the end proves nothing was retired while we read.
            if !crate::writer::still_linked(&self.file, &self.path) {
                return Err(io::Error::other("queue file was removed while being read"));
            }
            self.checked = true;
        }
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let got = self.file.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "queue file shrank since it was verified"));
        }
        self.left -= got as u64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Envelope, Queue, QueueDir, RcptStatus, Recipient};

    #[test]
    fn set_attr_rewrites_the_file_and_keeps_statuses_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        q.ensure_dirs().unwrap();
        let mut env = Envelope::new("a@example.test");
        env.recipients.push(Recipient::new("b@example.test"));
        env.recipients.push(Recipient::new("c@example.test"));
        env.attrs.push(("keep".into(), "me".into()));
        let mut m = q.create(&env).unwrap();
        m.write_content(b"Subject: x\r\n\r\nbody\r\n").unwrap();
        let id = m.commit().unwrap();
        let mut f = q.open(QueueDir::Incoming, &id).unwrap();
        f.mark_recipient(1, RcptStatus::Delivered).unwrap();
        f.set_attr("delay_warning", "sent").unwrap();
        f.set_attr("delay_warning", "again").unwrap();
        // The in-memory view matches a fresh read, and marking still works afterwards.
        f.mark_recipient(0, RcptStatus::Bounced).unwrap();
        let g = q.open(QueueDir::Incoming, &id).unwrap();
        assert_eq!(g.envelope, f.envelope);
        assert_eq!(g.envelope.attr("delay_warning"), Some("again"));
        assert_eq!(g.envelope.attr("keep"), Some("me"));
        assert_eq!(g.envelope.attrs.len(), 2);
        assert_eq!(g.envelope.recipients[0].status, RcptStatus::Bounced);
        assert_eq!(g.envelope.recipients[1].status, RcptStatus::Delivered);
        assert_eq!(g.content().unwrap(), b"Subject: x\r\n\r\nbody\r\n");
        // Still committed (scan sees it), and no temporary file is left behind.
        assert_eq!(q.scan(QueueDir::Incoming).unwrap(), vec![id.clone()]);
        assert_eq!(std::fs::read_dir(q.dir(QueueDir::Incoming)).unwrap().count(), 1);
        // What an interrupted rewrite leaves behind is cleaned up; nothing else is touched.
        std::fs::write(q.dir(QueueDir::Incoming).join(format!(".{id}.rewrite")), b"partial").unwrap();
        std::fs::write(q.dir(QueueDir::Incoming).join(".other.rewrite"), b"not ours").unwrap();
        assert_eq!(q.remove_stale_rewrites(QueueDir::Incoming).unwrap(), 1);
        assert_eq!(std::fs::read_dir(q.dir(QueueDir::Incoming)).unwrap().count(), 2);
        assert_eq!(q.scan(QueueDir::Incoming).unwrap(), vec![id]);
    }
}

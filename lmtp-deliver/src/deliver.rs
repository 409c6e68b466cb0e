//! One message to one user's Maildir: the content spool of a transaction, the trace headers
//! and the store call. Blocking code, run off the async runtime.

use std::fs::File;
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rpost_maildir::{Maildir, Quota};

use crate::settings::Settings;
use crate::userdb::User;

/// Content up to this size stays in memory; larger messages go to a temporary file.
pub const SPOOL_MEMORY: usize = 1 << 20;

/// The message content of a transaction, as received (CRLF, dot-unstuffed): in memory, or in
/// an unnamed temporary file under `mail_temp_dir` once it is larger than [`SPOOL_MEMORY`].
#[derive(Debug)]
pub struct Spool {
    mem: Vec<u8>,
    file: Option<File>,
    len: u64,
    temp_dir: PathBuf,
    /// The first write error; the transaction is then answered 451 for every recipient.
    pub failed: Option<String>,
}

impl Spool {
    pub fn new(temp_dir: &Path) -> Spool {
        Spool { mem: Vec::new(), file: None, len: 0, temp_dir: temp_dir.to_path_buf(), failed: None }
    }

    /// Appends content. Writes go to the page cache (no fsync: the spool is scratch, the
    /// Maildir file is what gets synced).
    pub fn write(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.len += data.len() as u64;
        if self.file.is_none() && self.mem.len() + data.len() <= SPOOL_MEMORY {
            self.mem.extend_from_slice(data);
            return;
        }
        let r = (|| -> io::Result<()> {
            if self.file.is_none() {
                let mut f = tempfile::tempfile_in(&self.temp_dir)?;
                f.write_all(&self.mem)?;
                self.mem = Vec::new();
                self.file = Some(f);
            }
            match &mut self.file {
                Some(f) => f.write_all(data),
                None => Ok(()),
            }
        })();
        if let Err(e) = r {
            self.failed = Some(format!("temporary file in {}: {e}", self.temp_dir.display()));
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the content went to a temporary file.
    pub fn on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// A reader from the start (any number of them, one per recipient).
    pub fn reader(&self) -> Box<dyn Read + '_> {
        match &self.file {
            Some(f) => Box::new(FileReader { f, pos: 0 }),
            None => Box::new(Cursor::new(&self.mem[..])),
        }
    }
}

struct FileReader<'a> {
    f: &'a File,
    pos: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.f.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// One recipient's delivery.
#[derive(Debug, Clone)]
pub struct Job {
    /// The recipient as given in RCPT TO.
    pub rcpt: String,
    pub user: User,
    /// Envelope sender ("" for `<>`).
    pub sender: String,
    /// Transaction id (the "Saved" reply and Received: id).
    pub id: String,
    pub lhlo: String,
    /// Client IP address, when it came over TCP.
    pub client_ip: Option<String>,
    pub time: SystemTime,
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored, fsync'd and in `new/`.
    Saved { mailbox: String, uid: Option<u32>, path: PathBuf, size: u64 },
    /// The user's quota would be exceeded.
    OverQuota(String),
    /// Larger than mailbox_size_limit.
    TooBig,
    /// Anything else (I/O, configuration): try again later.
    Failed(String),
}

fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).take(500).collect()
}

/// The headers Dovecot's LMTP prepends: Return-Path, Delivered-To and its Received: trace.
pub fn trace_headers(job: &Job, hostname: &str) -> String {
    let from = match &job.client_ip {
        Some(ip) => format!("{} ([{}])", clean(&job.lhlo), ip),
        None => clean(&job.lhlo),
    };
    format!(
        "Return-Path: <{sender}>\r\nDelivered-To: {rcpt}\r\nReceived: from {from}\r\n\tby {host} with LMTP\r\n\tid {id}\r\n\t(envelope-from <{sender}>)\r\n\tfor <{rcpt}>; {date}\r\n",
        sender = clean(&job.sender),
        rcpt = clean(&job.rcpt),
        host = hostname,
        id = job.id,
        date = rpost_log::rfc5322_date(job.time),
    )
}

/// The mailbox a job goes to: INBOX, or with lmtp_save_to_detail_mailbox the mailbox named by
/// the address detail when it exists (or may be created); a detail that is not a valid
/// mailbox name goes to INBOX, as Dovecot falls back when the mailbox cannot be opened.
fn target(s: &Settings, inbox: &Maildir, user: &User) -> Maildir {
    let Some(detail) = user.detail.as_deref().filter(|_| s.save_to_detail_mailbox) else {
        return inbox.clone();
    };
    let folder = match inbox.folder(detail) {
        Ok(f) => f,
        Err(e) => {
            tracing::info!("{}: mailbox {detail:?} not usable ({e}): saving to INBOX", user.name);
            return inbox.clone();
        }
    };
    if folder.exists() {
        return folder;
    }
    if !s.mailbox_autocreate {
        tracing::info!("{}: mailbox {detail:?} does not exist: saving to INBOX", user.name);
        return inbox.clone();
    }
    if let Err(e) = folder.create() {
        tracing::warn!("{}: creating mailbox {detail:?}: {e}: saving to INBOX", user.name);
        return inbox.clone();
    }
    if s.mailbox_autosubscribe
        && let Err(e) = inbox.subscribe(detail, true)
    {
        tracing::warn!("{}: subscribing to {detail:?}: {e}", user.name);
    }
    folder
}

/// The user's INBOX with owner and quota set.
pub fn inbox_of(user: &User) -> Maildir {
    let mut m = Maildir::open(&user.maildir).with_quota(user.quota.map(Quota::lda));
    if let Some((uid, gid)) = user.owner {
        m = m.with_owner(uid, gid);
    }
    m
}

/// Delivers the spooled message to one recipient.
pub fn deliver(s: &Settings, job: &Job, spool: &Spool) -> Outcome {
    let headers = trace_headers(job, &s.hostname);
    if s.mailbox_size_limit > 0 && headers.len() as u64 + spool.len() > s.mailbox_size_limit {
        return Outcome::TooBig;
    }
    let inbox = inbox_of(&job.user);
    let mbox = target(s, &inbox, &job.user);
    let mut content = Cursor::new(headers.into_bytes()).chain(spool.reader());
    match mbox.deliver(&mut content, "") {
        Ok(d) => Outcome::Saved { mailbox: mbox.name(), uid: d.uid, path: d.path, size: d.size },
        Err(e) if e.is_over_quota() => Outcome::OverQuota(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_moves_to_disk_past_a_mebibyte() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Spool::new(t.path());
        s.write(b"small\r\n");
        assert!(!s.on_disk());
        let big = vec![b'x'; SPOOL_MEMORY];
        s.write(&big);
        assert!(s.on_disk());
        assert_eq!(s.len(), 7 + SPOOL_MEMORY as u64);
        for _ in 0..2 {
            let mut out = Vec::new();
            s.reader().read_to_end(&mut out).unwrap();
            assert_eq!(out.len() as u64, s.len());
            assert!(out.starts_with(b"small\r\nxxx"));
        }
        // Unnamed: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
        let mut bad = Spool::new(Path::new("/nonexistent/dir"));
        bad.write(&big);
        bad.write(b"more");
        assert!(bad.failed.is_some());
    }

    #[test]
    fn trace_headers_are_dovecots() {
        let job = Job {
            rcpt: "alice@example.test".into(),
            user: User {
                name: "alice@example.test".into(),
                home: None,
                maildir: "/x".into(),
                owner: None,
                quota: None,
                detail: None,
            },
            sender: "bob@example.org".into(),
            id: "AbCd".into(),
            lhlo: "mail.example.test".into(),
            client_ip: None,
            time: SystemTime::UNIX_EPOCH,
        };
        let h = trace_headers(&job, "lmtp.example.test");
        assert_eq!(
            h,
            "Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.test\r\nReceived: from mail.example.test\r\n\tby lmtp.example.test with LMTP\r\n\tid AbCd\r\n\t(envelope-from <bob@example.org>)\r\n\tfor <alice@example.test>; Thu, 1 Jan 1970 00:00:00 +0000 (UTC)\r\n"
        );
        let job = Job { client_ip: Some("192.0.2.1".into()), sender: String::new(), ..job };
        let h = trace_headers(&job, "h");
        assert!(h.starts_with("Return-Path: <>\r\n"));
        assert!(h.contains("Received: from mail.example.test ([192.0.2.1])\r\n"));
    }
}

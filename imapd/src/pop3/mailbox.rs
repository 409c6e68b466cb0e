//! The POP3 maildrop: a user's INBOX Maildir as one POP3 session sees it, and the UIDL
//! format.
//!
//! Opening syncs the Maildir as Dovecot does: under the `dovecot-uidlist.lock` dot-lock,
//! files in `new/` are moved to `cur/`, every message gets its IMAP UID in
//! `dovecot-uidlist` (new ones in file name order), and the list of messages (by UID, as
//! Dovecot's POP3 orders them) is taken. The lock is then released, unless
//! `pop3_lock_session = yes` keeps it for the whole session (other POP3 sessions then get
//! `[IN-USE]`, and deliveries wait for it to assign UIDs, as with Dovecot).
//!
//! Deletions are kept by the session in memory; [`Maildrop::commit`] at QUIT unlinks them
//! all under the uidlist lock and drops their uidlist records, and marks retrieved messages
//! seen (`:2,S`) unless `pop3_no_flag_updates`. With `pop3_deleted_flag = $POP3Deleted`
//! (a keyword, as in Dovecot) deleted messages get that keyword instead of being unlinked,
//! and POP3 no longer lists them. A connection that drops before QUIT changes nothing.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rpost_maildir::{Maildir, MaildirError, UidlistLock, parse_filename};

use super::session::{MessageInfo, wire_size};

/// Largest message read for RETR (a bigger one is refused rather than exhausting memory).
pub const MAX_MESSAGE: u64 = 1 << 30;

/// Why the maildrop could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("{0}")]
    Maildir(#[from] MaildirError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the mailbox is locked by another session")]
    InUse,
    #[error("pop3_uidl_format {0:?}: {1}")]
    Format(String, String),
}

/// A parsed `pop3_uidl_format` (Dovecot's `%08Xu%08Xv` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidlFormat(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// (variable, width, zero-padded, hex: None / upper / lower)
    Var {
        var: char,
        width: usize,
        zero: bool,
        hex: Option<bool>,
    },
}

impl UidlFormat {
    /// Parses the format. Supported: `%u` (IMAP UID), `%v` (UIDVALIDITY), `%f` and `%g`
    /// (the Maildir base file name, which is Dovecot's GUID for Maildir), `%%`, with an
    /// optional width (`08`) and `X`/`x` for hexadecimal. `%m` (MD5 of the header) is not.
    pub fn parse(s: &str) -> Result<UidlFormat, MailboxError> {
        let err = |m: &str| MailboxError::Format(s.to_string(), m.to_string());
        let mut out = Vec::new();
        let mut text = String::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            if it.peek() == Some(&'%') {
                it.next();
                text.push('%');
                continue;
            }
            let zero = it.peek() == Some(&'0');
            let mut width = 0usize;
            while let Some(d) = it.peek().and_then(|c| c.to_digit(10)) {
                width = width * 10 + d as usize;
                it.next();
                if width > 64 {
                    return Err(err("width too large"));
                }
            }
            let mut hex = None;
            if let Some(&h) = it.peek()
                && (h == 'X' || h == 'x')
            {
                hex = Some(h == 'X');
                it.next();
            }
            let var = it.next().ok_or_else(|| err("'%' at the end"))?;
            if !matches!(var, 'u' | 'v' | 'f' | 'g') {
                return Err(err(&format!("variable %{var} is not supported (use %u, %v, %f or %g)")));
            }
            if hex.is_some() && !matches!(var, 'u' | 'v') {
                return Err(err("X/x only apply to %u and %v"));
            }
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text)));
            }
            out.push(Piece::Var { var, width, zero, hex });
        }
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        Ok(UidlFormat(out))
    }

    /// The UIDL of a message.
    pub fn render(&self, uid: u32, uid_validity: u32, base: &str) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var { var, width, zero, hex } => {
                    let v = match (var, hex) {
                        ('u', Some(true)) => format!("{uid:X}"),
                        ('u', Some(false)) => format!("{uid:x}"),
                        ('u', None) => uid.to_string(),
                        ('v', Some(true)) => format!("{uid_validity:X}"),
                        ('v', Some(false)) => format!("{uid_validity:x}"),
                        ('v', None) => uid_validity.to_string(),
                        _ => base.to_string(),
                    };
                    let pad = if *zero { '0' } else { ' ' };
                    for _ in v.len()..*width {
                        out.push(pad);
                    }
                    out.push_str(&v);
                }
            }
        }
        out
    }
}

/// How the maildrop behaves (pop3_* parameters).
#[derive(Debug, Clone)]
pub struct Options {
    pub uidl_format: UidlFormat,
    pub lock_session: bool,
    pub no_flag_updates: bool,
    /// `pop3_deleted_flag`: a keyword set on DELE'd messages instead of expunging them;
    /// messages carrying it are hidden from POP3 (IMAP still sees them).
    pub deleted_flag: Option<String>,
}

/// One message of the maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: u32,
    /// The base name (before `:`), which identifies the file across flag renames.
    pub base: String,
    /// The file name in `cur/` when the session started.
    pub name: String,
    pub info: MessageInfo,
}

/// A user's INBOX opened for one POP3 session.
#[derive(Debug)]
pub struct Maildrop {
    inbox: Maildir,
    dir: PathBuf,
    pub uid_validity: u32,
    pub entries: Vec<Entry>,
    /// Held for the whole session with pop3_lock_session.
    session_lock: Option<UidlistLock>,
    opts: Options,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> MailboxError + '_ {
    move |source| MailboxError::Io { path: path.to_path_buf(), source }
}

/// Lists a Maildir subdirectory: file names that look like messages.
fn list(dir: &Path) -> Result<Vec<String>, MailboxError> {
    let mut names = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for e in rd {
        let e = e.map_err(io_err(dir))?;
        let Ok(name) = e.file_name().into_string() else { continue };
        if name.starts_with('.') {
            continue;
        }
        names.push(name);
    }
    Ok(names)
}

fn base_of(name: &str) -> &str {
    name.split(':').next().unwrap_or(name)
}

impl Maildrop {
    /// Opens (and creates, when missing) the INBOX and syncs it.
    pub fn open(inbox: &Maildir, opts: Options) -> Result<Maildrop, MailboxError> {
        if !inbox.exists() {
            inbox.create()?;
        }
        if let Err(e) = inbox.clean_tmp() {
            tracing::warn!("{}: tmp/ clean-up: {e}", inbox.path().display());
        }
        let lock_timeout = if opts.lock_session { Duration::from_secs(1) } else { rpost_maildir::UIDLIST_LOCK_TIMEOUT };
        let lock = match inbox.lock_uidlist(lock_timeout) {
            Ok(l) => l,
            Err(MaildirError::LockTimeout(_)) if opts.lock_session => return Err(MailboxError::InUse),
            Err(e) => return Err(e.into()),
        };
        let dir = inbox.path();
        let (cur, new) = (dir.join("cur"), dir.join("new"));
        // new/ -> cur/, as Dovecot does when a session opens the mailbox read-write.
        let mut fresh = list(&new)?;
        fresh.sort();
        for name in &fresh {
            match fs::rename(new.join(name), cur.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&new)(e)),
            }
        }
        let mut names = list(&cur)?;
        names.sort();
        let mut uidlist = lock.load()?;
        let before = uidlist.clone();
        let known: std::collections::HashMap<String, u32> =
            uidlist.records.iter().map(|r| (r.base().to_string(), r.uid)).collect();
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            let base = base_of(&name).to_string();
            let uid = match known.get(&base) {
                Some(u) => *u,
                None => uidlist.assign(&base),
            };
            found.push((uid, base, name));
        }
        if uidlist != before {
            lock.save(&uidlist)?;
        }
        found.sort_by_key(|(uid, ..)| *uid);
        let hidden = match &opts.deleted_flag {
            Some(k) => inbox.keywords()?.letter(k),
            None => None,
        };
        if let Some(letter) = hidden {
            found.retain(|(_, _, name)| !flags_of(name).contains(letter));
        }
        let mut entries = Vec::with_capacity(found.len());
        for (uid, base, name) in found {
            let size = match parse_filename(&name).vsize {
                Some(w) => w,
                None => {
                    // No W= (delivered by another program): read it once to count CRLFs.
                    let path = cur.join(&name);
                    match read_limited(&path) {
                        Ok(c) => wire_size(&c),
                        Err(MailboxError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => continue,
                        // Too large or unreadable: its file size stands in; RETR reports the error.
                        Err(e) => {
                            tracing::warn!("{}: {e}", path.display());
                            fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
                        }
                    }
                }
            };
            let uidl = opts.uidl_format.render(uid, uidlist.uid_validity, &base);
            entries.push(Entry { uid, base, name, info: MessageInfo { size, uidl } });
        }
        let session_lock = if opts.lock_session { Some(lock) } else { None };
        Ok(Maildrop { inbox: inbox.clone(), dir, uid_validity: uidlist.uid_validity, entries, session_lock, opts })
    }

    /// What the session needs.
    pub fn infos(&self) -> Vec<MessageInfo> {
        self.entries.iter().map(|e| e.info.clone()).collect()
    }

    /// The current path of message `index`: its file may have been renamed (flags changed
    /// by an IMAP session) since the session started.
    fn current_path(&self, index: usize) -> Result<Option<PathBuf>, MailboxError> {
        let e = &self.entries[index];
        let cur = self.dir.join("cur");
        let p = cur.join(&e.name);
        if p.exists() {
            return Ok(Some(p));
        }
        Ok(list(&cur)?.into_iter().find(|n| base_of(n) == e.base).map(|n| cur.join(n)))
    }

    /// The content of message `index`, `None` when it is gone.
    pub fn read(&self, index: usize) -> Result<Option<Vec<u8>>, MailboxError> {
        let Some(path) = self.current_path(index)? else { return Ok(None) };
        match read_limited(&path) {
            Ok(c) => Ok(Some(c)),
            Err(MailboxError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// QUIT: deletes `delete` and marks `seen` read, under the uidlist lock. Returns the
    /// number of messages deleted (ones already gone count as deleted).
    pub fn commit(&mut self, delete: &[usize], seen: &[usize]) -> Result<usize, MailboxError> {
        let lock = match self.session_lock.take() {
            Some(l) => l,
            None => self.inbox.lock_uidlist(rpost_maildir::UIDLIST_LOCK_TIMEOUT)?,
        };
        let mut deleted = 0;
        if let Some(k) = &self.opts.deleted_flag {
            let mut kw = self.inbox.keywords()?;
            let letter = match kw.letter(k) {
                Some(l) => l,
                None => {
                    let l = kw.add(k).ok_or_else(|| {
                        MailboxError::Format(k.clone(), "no keyword letter left for pop3_deleted_flag".into())
                    })?;
                    self.inbox.save_keywords(&kw)?;
                    l
                }
            };
            for &i in delete {
                if let Some(p) = self.current_path(i)? {
                    add_flag(&p, letter)?;
                }
                deleted += 1;
            }
        } else {
            for &i in delete {
                if let Some(p) = self.current_path(i)? {
                    match fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&p)(e)),
                    }
                }
                deleted += 1;
            }
            if !delete.is_empty() {
                let mut list = lock.load()?;
                let gone: Vec<u32> = delete.iter().map(|&i| self.entries[i].uid).collect();
                list.records.retain(|r| !gone.contains(&r.uid));
                lock.save(&list)?;
            }
        }
        if !self.opts.no_flag_updates {
            for &i in seen {
                let Some(p) = self.current_path(i)? else { continue };
                // A concurrent rename by another session only costs the \Seen flag.
                let _ = add_flag(&p, 'S');
            }
        }
        drop(lock);
        Ok(deleted)
    }
}

/// The Maildir flags of a file name (after `:2,`).
fn flags_of(name: &str) -> &str {
    name.split_once(":2,").map_or("", |(_, f)| f)
}

/// Renames a message file to carry `flag` too (flags kept in ASCII order, as Maildir wants).
fn add_flag(path: &Path, flag: char) -> Result<(), MailboxError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let flags = flags_of(name);
    if flags.contains(flag) {
        return Ok(());
    }
    let mut f: Vec<char> = flags.chars().chain([flag]).collect();
    f.sort_unstable();
    let new_name = format!("{}:2,{}", base_of(name), f.into_iter().collect::<String>());
    match fs::rename(path, path.with_file_name(new_name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Reads a message whole; one over [`MAX_MESSAGE`] is an error, never sent cut short.
fn read_limited(path: &Path) -> Result<Vec<u8>, MailboxError> {
    let f = fs::File::open(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    f.take(MAX_MESSAGE + 1).read_to_end(&mut out).map_err(io_err(path))?;
    if out.len() as u64 > MAX_MESSAGE {
        return Err(io_err(path)(io::Error::new(io::ErrorKind::FileTooLarge, "message larger than 1 GiB")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidl_formats() {
        let d = UidlFormat::parse("%08Xu%08Xv").unwrap();
        assert_eq!(d.render(1, 1_700_000_000, "x"), "000000016553F100");
        assert_eq!(d.render(0x1234_5678, 0xabc, "x"), "1234567800000ABC");
        assert_eq!(UidlFormat::parse("%v.%u").unwrap().render(7, 42, "b"), "42.7");
        assert_eq!(UidlFormat::parse("%f%%%4xu").unwrap().render(255, 1, "1700.M1P2.h"), "1700.M1P2.h%  ff");
        assert!(UidlFormat::parse("%m").is_err());
        assert!(UidlFormat::parse("%Xf").is_err());
        assert!(UidlFormat::parse("%08X").is_err());
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rpost-pop3-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn opts(lock_session: bool) -> Options {
        Options {
            uidl_format: UidlFormat::parse("%08Xu%08Xv").unwrap(),
            lock_session,
            no_flag_updates: false,
            deleted_flag: None,
        }
    }

    #[test]
    fn open_sync_read_commit() {
        let root = tmpdir("sync");
        let inbox = Maildir::open(root.join("Maildir"));
        let a = inbox.deliver(&mut &b"Subject: a\n\nbody a\n"[..], "").unwrap();
        let b = inbox.deliver(&mut &b"Subject: b\n\nbody b\n"[..], "").unwrap();
        // A file without S=/W= from another program, straight into cur/.
        fs::write(inbox.path().join("cur/1.other:2,"), b"X: 1\n\nz\n").unwrap();
        let mut m = Maildrop::open(&inbox, opts(false)).unwrap();
        assert_eq!(m.entries.len(), 3);
        assert!(fs::read_dir(inbox.path().join("new")).unwrap().next().is_none(), "new/ moved to cur/");
        assert_eq!(m.entries[0].uid, a.uid.unwrap());
        assert_eq!(m.entries[1].uid, b.uid.unwrap());
        assert_eq!(m.entries[2].info.size, 11);
        let list = inbox.uidlist().unwrap().unwrap();
        assert_eq!(m.entries[0].info.uidl, format!("{:08X}{:08X}", a.uid.unwrap(), list.uid_validity));
        assert_eq!(m.read(0).unwrap().unwrap(), b"Subject: a\n\nbody a\n");
        // Opening again gives the same UIDLs (nothing renumbered).
        let again = Maildrop::open(&inbox, opts(false)).unwrap();
        assert_eq!(again.infos(), m.infos());
        assert_eq!(m.commit(&[0], &[1]).unwrap(), 1);
        let left = Maildrop::open(&inbox, opts(false)).unwrap();
        assert_eq!(left.entries.len(), 2);
        assert!(left.entries[0].name.ends_with(":2,S"), "{:?}", left.entries[0]);
        assert_eq!(left.entries[0].info.uidl, m.entries[1].info.uidl);
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn session_lock_refuses_a_second_session() {
        let root = tmpdir("lock");
        let inbox = Maildir::open(root.join("Maildir"));
        inbox.create().unwrap();
        let mut first = Maildrop::open(&inbox, opts(true)).unwrap();
        assert!(matches!(Maildrop::open(&inbox, opts(true)), Err(MailboxError::InUse)));
        first.commit(&[], &[]).unwrap();
        assert!(Maildrop::open(&inbox, opts(true)).is_ok());
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn deleted_flag_hides_instead_of_expunging() {
        let root = tmpdir("delflag");
        let inbox = Maildir::open(root.join("Maildir"));
        inbox.deliver(&mut &b"Subject: a\n\na\n"[..], "").unwrap();
        inbox.deliver(&mut &b"Subject: b\n\nb\n"[..], "").unwrap();
        let o = Options { deleted_flag: Some("$POP3Deleted".into()), ..opts(false) };
        let mut m = Maildrop::open(&inbox, o.clone()).unwrap();
        assert_eq!(m.commit(&[0], &[]).unwrap(), 1);
        assert_eq!(count(&inbox), 2, "nothing unlinked");
        let letter = inbox.keywords().unwrap().letter("$POP3Deleted").unwrap();
        let again = Maildrop::open(&inbox, o).unwrap();
        assert_eq!(again.entries.len(), 1);
        assert_eq!(again.entries[0].uid, m.entries[1].uid);
        // Without the setting the flagged message is listed again (it was never expunged).
        let all = Maildrop::open(&inbox, opts(false)).unwrap();
        assert_eq!(all.entries.len(), 2);
        assert!(flags_of(&all.entries[0].name).contains(letter), "{:?}", all.entries[0]);
        let _ = fs::remove_dir_all(root);
    }

    fn count(inbox: &Maildir) -> usize {
        fs::read_dir(inbox.path().join("cur")).unwrap().count()
    }
}

//! A selected Maildir mailbox as one IMAP session sees it: messages in UID order with their
//! sequence numbers, flags kept in the file names (`:2,<letters>`, keywords as the letters
//! of `dovecot-keywords`), UIDs from `dovecot-uidlist` (assigned under its lock), and the
//! synchronisation that finds what other sessions and deliveries changed.
//!
//! \Recent: a message is recent for the one session that moves it from `new/` to `cur/`
//! (rename is atomic, so exactly one session wins); read-only sessions move nothing.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rpost_maildir::{Keywords, Maildir, MaildirError, Uidlist, parse_filename};

/// How long a session waits for the uidlist lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// System flags and their Maildir letters.
pub const SYSTEM_FLAGS: [(&str, char); 5] =
    [("\\Draft", 'D'), ("\\Flagged", 'F'), ("\\Answered", 'R'), ("\\Seen", 'S'), ("\\Deleted", 'T')];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    New,
    Cur,
}

impl Sub {
    fn dir(self) -> &'static str {
        match self {
            Sub::New => "new",
            Sub::Cur => "cur",
        }
    }
}

/// One message of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub uid: u32,
    pub sub: Sub,
    /// The file name (with `:2,<flags>` when it has one).
    pub name: String,
    /// Gone from disk, EXPUNGE not reported yet.
    pub gone: bool,
}

impl Msg {
    pub fn base(&self) -> &str {
        parse_filename(&self.name).base
    }

    /// The Maildir info letters (flags and keyword letters).
    pub fn letters(&self) -> &str {
        parse_filename(&self.name).flags.unwrap_or("")
    }

    pub fn has(&self, letter: char) -> bool {
        self.letters().contains(letter)
    }
}

/// What a synchronisation found for the client.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Sequence numbers to report as EXPUNGE, in the order to send them.
    pub expunged: Vec<u32>,
    /// The new message count, when it grew.
    pub exists: Option<u32>,
    /// The new \Recent count, when messages arrived.
    pub recent: Option<u32>,
    /// Sequence numbers whose flags another session changed.
    pub flags: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("{0}")]
    Store(#[from] MaildirError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("mailbox does not exist")]
    NoSuchMailbox,
    #[error("UIDVALIDITY changed from {old} to {new}")]
    UidValidityChanged { old: u32, new: u32 },
}

fn ioerr(path: &Path) -> impl Fn(io::Error) -> MailboxError + '_ {
    move |source| MailboxError::Io { path: path.to_path_buf(), source }
}

/// A selected mailbox.
#[derive(Debug)]
pub struct Mailbox {
    pub md: Maildir,
    /// The IMAP name (`INBOX`, `Sent`, `a/b`).
    pub name: String,
    pub read_only: bool,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub msgs: Vec<Msg>,
    pub keywords: Keywords,
    /// UIDs recent in this session.
    pub recent: HashSet<u32>,
}

/// Lists `new/` and `cur/`: base name -> (sub, file name).
fn list_files(dir: &Path) -> Result<HashMap<String, (Sub, String)>, MailboxError> {
    let mut out = HashMap::new();
    for sub in [Sub::New, Sub::Cur] {
        let p = dir.join(sub.dir());
        let rd = match std::fs::read_dir(&p) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(MailboxError::Io { path: p, source: e }),
        };
        for ent in rd {
            let ent = ent.map_err(ioerr(&p))?;
            let Ok(name) = ent.file_name().into_string() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let base = parse_filename(&name).base.to_string();
            out.insert(base, (sub, name));
        }
    }
    Ok(out)
}

impl Mailbox {
    /// Opens (SELECT/EXAMINE) a mailbox and reads its messages.
    pub fn open(md: Maildir, read_only: bool) -> Result<(Mailbox, Changes), MailboxError> {
        if !md.exists() {
            return Err(MailboxError::NoSuchMailbox);
        }
        // A Maildir some other tool left without cur/ or tmp/ gets them, as Dovecot does.
        if !md.path().join("cur").is_dir() || !md.path().join("new").is_dir() || !md.path().join("tmp").is_dir() {
            md.create()?;
        }
        if !read_only && let Err(e) = md.clean_tmp() {
            tracing::warn!("{}: tmp/ clean-up: {e}", md.path().display());
        }
        let keywords = md.keywords()?;
        let name = md.name();
        let mut mb = Mailbox {
            md,
            name,
            read_only,
            uid_validity: 0,
            uid_next: 1,
            msgs: Vec::new(),
            keywords,
            recent: HashSet::new(),
        };
        let ch = mb.sync(true)?;
        Ok((mb, ch))
    }

    pub fn path(&self) -> PathBuf {
        self.md.path()
    }

    pub fn exists_count(&self) -> u32 {
        self.msgs.len() as u32
    }

    /// Moves new/ mail to cur/ (claiming \Recent), assigns missing UIDs, and diffs the result
    /// against the view. With `allow_expunge` false, vanished messages stay in the view
    /// (marked gone) so that sequence numbers do not move (RFC 3501 7.4.1).
    pub fn sync(&mut self, allow_expunge: bool) -> Result<Changes, MailboxError> {
        let dir = self.path();
        if !dir.join("cur").is_dir() {
            return Err(MailboxError::NoSuchMailbox);
        }
        let mut files = list_files(&dir)?;
        let mut claimed = HashSet::new();
        if !self.read_only {
            for (base, (sub, name)) in files.iter_mut() {
                if *sub != Sub::New {
                    continue;
                }
                let new_name = if name.contains(':') { name.clone() } else { format!("{name}:2,") };
                match std::fs::rename(dir.join("new").join(&*name), dir.join("cur").join(&new_name)) {
                    Ok(()) => {
                        claimed.insert(base.clone());
                        *sub = Sub::Cur;
                        *name = new_name;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Another session moved it first: it is recent there.
                        if let Some(n) = find_in(&dir.join("cur"), base) {
                            *sub = Sub::Cur;
                            *name = n;
                        }
                    }
                    Err(e) => return Err(MailboxError::Io { path: dir.join("new").join(&*name), source: e }),
                }
            }
        }
        let mut list = self.md.uidlist()?;
        // (Hash sets, not Uidlist::uid_of: that is a linear search, per file.)
        let complete = list.as_ref().is_some_and(|l| {
            let known: HashSet<&str> = l.records.iter().map(|r| r.base()).collect();
            files.keys().all(|b| known.contains(b.as_str()))
        });
        if !complete {
            list = Some(self.assign_uids()?);
            files = list_files(&dir)?;
        }
        let list = list.unwrap_or_else(|| Uidlist::new(1));
        if self.uid_validity != 0 && list.uid_validity != self.uid_validity {
            // The list was rebuilt (by hand, or after a broken file): every UID the client
            // knows is void, and a selected mailbox cannot say so; the session must end.
            return Err(MailboxError::UidValidityChanged { old: self.uid_validity, new: list.uid_validity });
        }
        self.uid_validity = list.uid_validity;
        self.uid_next = self.uid_next.max(list.next_uid);
        self.keywords = self.md.keywords().unwrap_or_default();

        let mut now: Vec<Msg> = Vec::with_capacity(files.len());
        let mut seen = HashSet::new();
        for r in &list.records {
            // A file recorded twice keeps its first (lowest) UID.
            if !seen.insert(r.base()) {
                continue;
            }
            if let Some((sub, name)) = files.get(r.base()) {
                now.push(Msg { uid: r.uid, sub: *sub, name: name.clone(), gone: false });
                if claimed.contains(r.base()) {
                    self.recent.insert(r.uid);
                }
            }
        }
        // readdir() may miss a file that another session renames meanwhile (flag changes):
        // before calling a message gone, look again.
        let missing: Vec<u32> = {
            let present: HashSet<u32> = now.iter().map(|m| m.uid).collect();
            self.msgs.iter().filter(|m| !present.contains(&m.uid)).map(|m| m.uid).collect()
        };
        if !missing.is_empty() {
            let again = list_files(&dir)?;
            for uid in missing {
                let Some(old) = self.msgs.iter().find(|m| m.uid == uid) else { continue };
                let found = again
                    .get(old.base())
                    .cloned()
                    .or_else(|| dir.join(old.sub.dir()).join(&old.name).exists().then(|| (old.sub, old.name.clone())));
                if let Some((sub, name)) = found {
                    now.push(Msg { uid, sub, name, gone: false });
                }
            }
            now.sort_by_key(|m| m.uid);
        }
        let by_uid: HashMap<u32, &Msg> = now.iter().map(|m| (m.uid, m)).collect();
        let mut ch = Changes::default();
        let last_uid = self.msgs.last().map_or(0, |m| m.uid);
        // Vanished and changed messages.
        let mut i = self.msgs.len();
        while i > 0 {
            i -= 1;
            match by_uid.get(&self.msgs[i].uid) {
                None => {
                    if allow_expunge {
                        ch.expunged.push(i as u32 + 1);
                        self.recent.remove(&self.msgs[i].uid);
                        self.msgs.remove(i);
                    } else {
                        self.msgs[i].gone = true;
                    }
                }
                Some(m) => {
                    let old = &mut self.msgs[i];
                    if old.letters() != m.letters() {
                        ch.flags.push(i as u32 + 1);
                    }
                    old.sub = m.sub;
                    old.name = m.name.clone();
                }
            }
        }
        if !ch.expunged.is_empty() {
            // Flag changes were numbered before the removals: renumber by UID.
            ch.flags.clear();
        }
        let before = self.msgs.len();
        for m in now.iter().filter(|m| m.uid > last_uid) {
            self.msgs.push(m.clone());
        }
        if self.msgs.len() != before {
            ch.exists = Some(self.msgs.len() as u32);
            ch.recent = Some(self.recent.len() as u32);
            self.uid_next = self.uid_next.max(self.msgs.last().map_or(1, |m| m.uid + 1));
        }
        if !ch.expunged.is_empty() {
            // Report changed flags of the renumbered messages.
            for (i, m) in self.msgs.iter().enumerate() {
                if let Some(n) = by_uid.get(&m.uid)
                    && n.letters() != m.letters()
                {
                    ch.flags.push(i as u32 + 1);
                }
            }
        }
        ch.flags.sort_unstable();
        Ok(ch)
    }

    /// Under the uidlist lock: gives every file without a UID the next one and writes the
    /// list (also when the mailbox had none yet, so that its UIDVALIDITY is fixed from the
    /// first SELECT on). Records are never dropped here: a directory listing can miss a file
    /// that is being renamed, and a dropped record would give the message a new UID.
    fn assign_uids(&self) -> Result<Uidlist, MailboxError> {
        let lock = self.md.lock_uidlist(LOCK_TIMEOUT)?;
        let mut list = lock.load()?;
        let files = list_files(&self.path())?;
        let known: HashSet<String> = list.records.iter().map(|r| r.base().to_string()).collect();
        let mut unknown: Vec<&String> = files.keys().filter(|b| !known.contains(b.as_str())).collect();
        // Delivery order: Dovecot names start with the time.
        unknown.sort();
        for b in unknown {
            let uid = list.next_uid;
            list.next_uid += 1;
            list.records.push(rpost_maildir::UidRecord { uid, ext: Vec::new(), filename: b.clone() });
        }
        lock.save(&list)?;
        Ok(list)
    }

    /// Drops the records of the messages this session removed (after EXPUNGE), under the lock.
    fn prune_uidlist(&self, bases: &HashSet<String>) -> Result<(), MailboxError> {
        let lock = self.md.lock_uidlist(LOCK_TIMEOUT)?;
        let mut list = lock.load()?;
        let before = list.records.len();
        list.records.retain(|r| !bases.contains(r.base()));
        if list.records.len() != before {
            lock.save(&list)?;
        }
        Ok(())
    }

    /// IMAP flags of a message.
    pub fn flags_of(&self, m: &Msg) -> Vec<String> {
        let mut v = Vec::new();
        let letters = m.letters();
        for (flag, l) in SYSTEM_FLAGS {
            if letters.contains(l) {
                v.push(flag.to_string());
            }
        }
        for c in letters.chars().filter(char::is_ascii_lowercase) {
            if let Some(k) = self.keywords.keyword(c) {
                v.push(k.to_string());
            }
        }
        if self.recent.contains(&m.uid) {
            v.push("\\Recent".into());
        }
        v
    }

    /// All keywords defined in this mailbox.
    pub fn keyword_names(&self) -> Vec<String> {
        ('a'..='z').filter_map(|c| self.keywords.keyword(c).map(str::to_string)).collect()
    }

    /// The letters for a set of IMAP flags; unknown keywords are added to dovecot-keywords
    /// (keywords past the 26 letters are dropped, as Dovecot's Maildir can store no more).
    pub fn letters_for(&mut self, flags: &[String]) -> Result<String, MailboxError> {
        letters_for(&self.md, &mut self.keywords, flags)
    }

    /// Sets the letters of message `idx` (the file is renamed); `Ok(false)` when the message
    /// is gone.
    pub fn set_letters(&mut self, idx: usize, letters: &str) -> Result<bool, MailboxError> {
        let dir = self.path();
        let m = &self.msgs[idx];
        if m.gone {
            return Ok(false);
        }
        let letters = rpost_maildir::normalize_flags(letters)?;
        let base = m.base().to_string();
        let new_name = format!("{base}:2,{letters}");
        if new_name == m.name && m.sub == Sub::Cur {
            return Ok(true);
        }
        let mut from = dir.join(m.sub.dir()).join(&m.name);
        for _ in 0..3 {
            match std::fs::rename(&from, dir.join("cur").join(&new_name)) {
                Ok(()) => {
                    let m = &mut self.msgs[idx];
                    m.sub = Sub::Cur;
                    m.name = new_name;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Renamed by another session meanwhile: find its current name.
                    match find_in(&dir.join("cur"), &base).map(|n| dir.join("cur").join(n)) {
                        Some(p) => from = p,
                        None => return Ok(false),
                    }
                }
                Err(e) => return Err(MailboxError::Io { path: from, source: e }),
            }
        }
        Ok(false)
    }

    /// The message file's path.
    pub fn file(&self, m: &Msg) -> PathBuf {
        self.path().join(m.sub.dir()).join(&m.name)
    }

    /// Reads a message, relocating it when another session renamed it.
    pub fn read(&self, m: &Msg) -> Result<Option<(Vec<u8>, SystemTime)>, MailboxError> {
        let p = self.file(m);
        let read = |p: &Path| -> io::Result<(Vec<u8>, SystemTime)> {
            let f = std::fs::File::open(p)?;
            let mtime = f.metadata()?.modified().unwrap_or(UNIX_EPOCH);
            let mut v = Vec::new();
            io::Read::read_to_end(&mut io::Read::take(f, 1 << 31), &mut v)?;
            Ok((v, mtime))
        };
        match read(&p) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let dir = self.path();
                for sub in ["cur", "new"] {
                    if let Some(n) = find_in(&dir.join(sub), m.base()) {
                        return read(&dir.join(sub).join(n)).map(Some).map_err(ioerr(&p));
                    }
                }
                Ok(None)
            }
            Err(e) => Err(MailboxError::Io { path: p, source: e }),
        }
    }

    /// Removes messages (EXPUNGE): the files of the messages at `idxs` are unlinked and the
    /// uidlist pruned; the view is updated at the next sync.
    pub fn remove_files(&mut self, idxs: &[usize]) -> Result<usize, MailboxError> {
        let mut removed = HashSet::new();
        for &i in idxs {
            let m = &self.msgs[i];
            let p = self.file(m);
            match std::fs::remove_file(&p) {
                Ok(()) => {
                    removed.insert(m.base().to_string());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Some(name) = find_in(&self.path().join("cur"), m.base())
                        && std::fs::remove_file(self.path().join("cur").join(name)).is_ok()
                    {
                        removed.insert(m.base().to_string());
                    }
                }
                Err(e) => return Err(MailboxError::Io { path: p, source: e }),
            }
        }
        if !removed.is_empty() {
            self.prune_uidlist(&removed)?;
        }
        Ok(removed.len())
    }

    /// Index of the message with `uid`.
    pub fn index_of_uid(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }
}

/// Finds the current file name of `base` in a directory.
fn find_in(dir: &Path, base: &str) -> Option<String> {
    let rd = std::fs::read_dir(dir).ok()?;
    for ent in rd.flatten() {
        if let Ok(name) = ent.file_name().into_string()
            && parse_filename(&name).base == base
        {
            return Some(name);
        }
    }
    None
}

/// The Maildir letters for IMAP flags in mailbox `md` (see [`Mailbox::letters_for`]).
/// Keywords new to the mailbox are added to `dovecot-keywords` under the uidlist lock, as
/// Dovecot does, re-reading the file first: two sessions adding different keywords at once
/// must not both take the same letter.
pub fn letters_for(md: &Maildir, keywords: &mut Keywords, flags: &[String]) -> Result<String, MailboxError> {
    let keyword_names: Vec<&String> = flags.iter().filter(|f| !f.starts_with('\\')).collect();
    if keyword_names.iter().any(|k| keywords.letter(k).is_none()) {
        let _lock = md.lock_uidlist(LOCK_TIMEOUT)?;
        let mut fresh = md.keywords().unwrap_or_default();
        let before = fresh.clone();
        for k in &keyword_names {
            // Past 26 keywords Dovecot's Maildir stores no more: the keyword is dropped.
            let _ = fresh.add(k);
        }
        if fresh != before {
            md.save_keywords(&fresh)?;
        }
        *keywords = fresh;
    }
    let mut letters = String::new();
    for f in flags {
        if let Some((_, l)) = SYSTEM_FLAGS.iter().find(|(n, _)| n.eq_ignore_ascii_case(f)) {
            letters.push(*l);
        } else if !f.starts_with('\\')
            && let Some(l) = keywords.letter(f)
        {
            letters.push(l);
        }
    }
    Ok(rpost_maildir::normalize_flags(&letters)?)
}

/// Sets a file's modification time (the IMAP INTERNALDATE, as Dovecot keeps it in Maildir).
pub fn set_mtime(path: &Path, t: SystemTime) -> io::Result<()> {
    let f = std::fs::File::options().write(true).open(path)?;
    f.set_modified(t)
}

/// Unix seconds of a time.
pub fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

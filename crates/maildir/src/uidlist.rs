//! `dovecot-uidlist` (IMAP UIDs of the messages of one mailbox) and `dovecot-uidvalidity`
//! (the source of new UIDVALIDITY values), in Dovecot's formats.
//!
//! ```text
//! 3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1
//! 25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394
//! 25017 W2481 :1276533073.M242911P3632.kurkku
//! ```
//!
//! Header: version 3, then `<key><value>` fields in any order: `V` UIDVALIDITY, `N` next UID,
//! `G` the mailbox GUID (32 hex digits); other keys are kept and written back. Records:
//! `<uid> [<key><value> ...] :<file name>`, UIDs ascending; the file name is written without
//! its `:2,<flags>` part (Dovecot's writer cuts at `:`), so flag changes do not need a rewrite.
//! Version 1 (`1 <uidvalidity> <nextuid>`, records `<uid> <file name>`, as Courier's
//! courierimapuiddb) is read too and written back as version 3, as Dovecot does.
//!
//! A writer holds `dovecot-uidlist.lock`. A new message gets its record appended to the end of
//! the file, as Dovecot does (the header's `N` may then lag behind: a reader takes the highest
//! UID plus one when that is larger); any other change replaces the file with rename().
//! Readers need no lock: a last line without its newline that does not parse is an append
//! still being written (or torn by a crash) and is ignored; the next writer rewrites the file.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::MaildirError;
use crate::dir::{Dir, Owner};
use crate::lock::{DotLock, UIDLIST_STALE};

pub const UIDLIST_NAME: &str = "dovecot-uidlist";
pub const UIDVALIDITY_NAME: &str = "dovecot-uidvalidity";
/// Largest uidlist read (a million messages are about 60 MB).
const MAX_UIDLIST: u64 = 512 << 20;

/// One uidlist record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidRecord {
    pub uid: u32,
    /// Extension fields as written (`W2481`, `G<guid>`, ...).
    pub ext: Vec<String>,
    /// The last known file name (base name; older writers may have included `:2,<flags>`).
    pub filename: String,
}

impl UidRecord {
    /// The part of the file name before `:`, which identifies the message.
    pub fn base(&self) -> &str {
        base_of(&self.filename)
    }
}

/// One record line of a version 1 or 3 list; `prev` is the UID of the record before it.
fn parse_record(line: &str, version: &str, prev: u32) -> Result<UidRecord, String> {
    let digits = line.bytes().take_while(u8::is_ascii_digit).count();
    let uid: u32 = line[..digits].parse().unwrap_or(0);
    let rest = &line[digits..];
    if uid == 0 || !rest.starts_with(' ') {
        return Err("invalid data".into());
    }
    if uid <= prev {
        return Err(format!("UIDs not ordered ({uid} <= {prev})"));
    }
    if uid == u32::MAX {
        return Err("UID too high".into());
    }
    let rest = rest.trim_start_matches(' ');
    let mut ext = Vec::new();
    let filename = if version == "3" {
        let mut r = rest;
        loop {
            if let Some(f) = r.strip_prefix(':') {
                break f;
            }
            if r.is_empty() {
                return Err("invalid extended fields".into());
            }
            let (field, tail) = r.split_once(' ').unwrap_or((r, ""));
            if field.as_bytes()[0].is_ascii_uppercase() {
                ext.push(field.to_string());
            }
            r = tail.trim_start_matches(' ');
        }
    } else {
        rest
    };
    // The base name (before any ":2,flags") is what identifies the file.
    if base_of(filename).is_empty() || filename.contains('/') {
        return Err("broken filename".into());
    }
    Ok(UidRecord { uid, ext, filename: filename.to_string() })
}

/// Whether `name` can be written as a record's file name (one line, no directory part).
pub(crate) fn valid_record_name(name: &str) -> bool {
    let base = base_of(name);
    !base.is_empty() && !base.contains(['/', '\n'])
}

fn base_of(name: &str) -> &str {
    name.split_once(':').map_or(name, |(b, _)| b)
}

/// The contents of a `dovecot-uidlist` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uidlist {
    pub uid_validity: u32,
    pub next_uid: u32,
    /// Mailbox GUID, 32 lower-case hex digits.
    pub guid: String,
    /// Header fields other than V, N and G, kept as read.
    pub hdr_ext: Vec<String>,
    /// Records in ascending UID order.
    pub records: Vec<UidRecord>,
}

impl Uidlist {
    /// An empty list for a new mailbox.
    pub fn new(uid_validity: u32) -> Uidlist {
        Uidlist { uid_validity, next_uid: 1, guid: new_guid(), hdr_ext: Vec::new(), records: Vec::new() }
    }

    /// Parses a uidlist (version 3, or version 1).
    pub fn parse(text: &str) -> Result<Uidlist, String> {
        let mut lines = text.split('\n');
        let header = lines.next().unwrap_or("");
        let (version, rest) = header.split_once(' ').ok_or("corrupted header (invalid version number)")?;
        let mut list =
            Uidlist { uid_validity: 0, next_uid: 0, guid: String::new(), hdr_ext: Vec::new(), records: Vec::new() };
        match version {
            "1" => {
                let mut it = rest.split_whitespace();
                list.uid_validity = it.next().and_then(|v| v.parse().ok()).ok_or("corrupted header (version 1)")?;
                list.next_uid = it.next().and_then(|v| v.parse().ok()).ok_or("corrupted header (version 1)")?;
            }
            "3" => {
                for field in rest.split(' ').filter(|f| !f.is_empty()) {
                    let key_len = field.chars().next().map_or(0, char::len_utf8);
                    let (key, value) = field.split_at(key_len);
                    match key {
                        "V" => list.uid_validity = value.parse().map_err(|_| "invalid mailbox UID_VALIDITY")?,
                        "N" => list.next_uid = value.parse().map_err(|_| "invalid mailbox NEXT_UID")?,
                        "G" => {
                            if value.len() != 32 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return Err("invalid mailbox GUID".into());
                            }
                            list.guid = value.to_ascii_lowercase();
                        }
                        _ => list.hdr_ext.push(field.to_string()),
                    }
                }
            }
            v => return Err(format!("unsupported version {}", crate::name::printable(v))),
        }
        if list.uid_validity == 0 || list.next_uid == 0 {
            return Err(format!("broken header (uidvalidity = {}, next_uid={})", list.uid_validity, list.next_uid));
        }
        let mut prev = 0u32;
        let complete = text.ends_with('\n');
        let mut lines = lines.enumerate().peekable();
        while let Some((n, line)) = lines.next() {
            if line.is_empty() {
                continue;
            }
            match parse_record(line, version, prev) {
                Ok(record) => {
                    prev = record.uid;
                    list.records.push(record);
                }
                // A last line without its newline that does not parse is an append cut short
                // (by a crash, or still being written): the record is not there yet.
                Err(_) if !complete && lines.peek().is_none() => {}
                Err(e) => return Err(format!("line {}: {e}", n + 2)),
            }
        }
        if list.next_uid <= prev {
            list.next_uid = prev + 1;
        }
        if list.guid.is_empty() {
            list.guid = new_guid();
        }
        Ok(list)
    }

    /// The canonical version 3 text, as Dovecot writes it.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(64 + self.records.len() * 64);
        let _ = write!(out, "3 V{} N{} G{}", self.uid_validity, self.next_uid, self.guid);
        for e in &self.hdr_ext {
            out.push(' ');
            out.push_str(e);
        }
        out.push('\n');
        for r in &self.records {
            let _ = write!(out, "{}", r.uid);
            for e in &r.ext {
                out.push(' ');
                out.push_str(e);
            }
            out.push_str(" :");
            out.push_str(r.base());
            out.push('\n');
        }
        out
    }

    /// The UID of a message file (matched on the part before `:`).
    pub fn uid_of(&self, filename: &str) -> Option<u32> {
        let base = base_of(filename);
        self.records.iter().find(|r| r.base() == base).map(|r| r.uid)
    }

    /// The UID of `filename`: its existing one, or the next free UID, recorded.
    pub fn assign(&mut self, filename: &str) -> u32 {
        if let Some(uid) = self.uid_of(filename) {
            return uid;
        }
        let uid = self.next_uid;
        self.next_uid += 1;
        self.records.push(UidRecord { uid, ext: Vec::new(), filename: base_of(filename).to_string() });
        uid
    }

    /// Reads `dir/dovecot-uidlist`; `None` when there is none. No lock is needed to read.
    pub fn load(dir: &Path) -> Result<Option<Uidlist>, MaildirError> {
        let d = Dir::walk(dir, false, None, false).map_err(|e| MaildirError::io(dir.to_path_buf(), e))?;
        read_uidlist(&d)
    }

    /// Writes `dir/dovecot-uidlist` (temporary file, fdatasync, rename). The caller must hold
    /// the uidlist lock ([`crate::Maildir::lock_uidlist`]).
    pub fn save(&self, dir: &Path) -> Result<(), MaildirError> {
        let d = Dir::walk(dir, false, None, false).map_err(|e| MaildirError::io(dir.to_path_buf(), e))?;
        write_uidlist(&d, self, None)
    }
}

pub(crate) fn read_uidlist(d: &Dir) -> Result<Option<Uidlist>, MaildirError> {
    let path = d.path().join(UIDLIST_NAME);
    let f = match d.open_read(UIDLIST_NAME) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MaildirError::io(path, e)),
    };
    let mut bytes = Vec::new();
    f.take(MAX_UIDLIST).read_to_end(&mut bytes).map_err(|e| MaildirError::io(path.clone(), e))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| MaildirError::Corrupt { path: path.clone(), reason: "not UTF-8".into() })?;
    Uidlist::parse(&text).map(Some).map_err(|reason| MaildirError::Corrupt { path, reason })
}

pub(crate) fn write_uidlist(d: &Dir, list: &Uidlist, owner: Option<Owner>) -> Result<(), MaildirError> {
    const TMP: &str = "dovecot-uidlist.tmp";
    let path = d.path().join(TMP);
    let r = (|| {
        match d.unlink(TMP) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = d.create_new(TMP, 0o600, owner)?;
        f.write_all(list.to_text().as_bytes())?;
        f.sync_data()?;
        d.rename(TMP, d, UIDLIST_NAME)
    })();
    r.map_err(|e| {
        let _ = d.unlink(TMP);
        MaildirError::io(path, e)
    })
}

/// A new mailbox GUID: 128 random bits in hex (Dovecot's guid_128_t form).
pub(crate) fn new_guid() -> String {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_ok();
    if !ok {
        // No /dev/urandom (a bare chroot): time, pid and a counter are unique enough.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        b[..8].copy_from_slice(&t.as_nanos().to_le_bytes()[..8]);
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        b[12..].copy_from_slice(&N.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
    }
    b.iter().fold(String::with_capacity(32), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// The next UIDVALIDITY, from `dovecot-uidvalidity` in the Maildir root, exactly as Dovecot's
/// mailbox_uidvalidity_next(): the file holds the last value given out (8 hex digits), and an
/// empty file `dovecot-uidvalidity.<hex>` is renamed to the next value, so concurrent
/// processes never hand out the same one. The first value is the current time.
pub(crate) fn next_uid_validity(store: &Dir, owner: Option<Owner>) -> u32 {
    match fast_path(store, owner) {
        Some(v) => v,
        None => rescan(store, owner),
    }
}

fn fast_path(store: &Dir, owner: Option<Owner>) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let f = store.open_update(UIDVALIDITY_NAME, owner).ok()?;
    let mut buf = [0u8; 8];
    let n = f.read_at(&mut buf, 0).ok()?;
    if n != 8 {
        return None;
    }
    let mut cur = u32::from_str_radix(std::str::from_utf8(&buf).ok()?, 16).ok()?;
    rename_next(store, &mut cur, false).ok()?;
    if let Err(e) = f.write_all_at(format!("{cur:08x}").as_bytes(), 0) {
        tracing::warn!("write({}): {e}", store.path().join(UIDVALIDITY_NAME).display());
    }
    Some(cur)
}

/// Renames `dovecot-uidvalidity.<cur>` to `<cur+1>` (retrying upwards on races).
fn rename_next(store: &Dir, cur: &mut u32, log: bool) -> io::Result<()> {
    let mut last = Ok(());
    for _ in 0..10 {
        let src = format!("{UIDVALIDITY_NAME}.{:08x}", *cur);
        *cur = cur.wrapping_add(1);
        let dst = format!("{UIDVALIDITY_NAME}.{:08x}", *cur);
        match store.rename(&src, store, &dst) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => last = Err(e),
            Err(e) => {
                last = Err(e);
                break;
            }
        }
    }
    if let (true, Err(e)) = (log, &last) {
        tracing::warn!("rename in {}: {e}", store.path().display());
    }
    last
}

fn fallback() -> u32 {
    static LAST: std::sync::Mutex<u32> = std::sync::Mutex::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    *last = if *last < now { now } else { *last + 1 };
    *last
}

fn write_main(store: &Dir, value: u32, owner: Option<Owner>) {
    let text = format!("{value:08x}");
    let r = match store.open_update(UIDVALIDITY_NAME, owner) {
        Ok(f) => {
            use std::os::unix::fs::FileExt;
            f.write_all_at(text.as_bytes(), 0)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            store.create_new(UIDVALIDITY_NAME, 0o600, owner).and_then(|mut f| f.write_all(text.as_bytes()))
        }
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        tracing::warn!("{}: {e}", store.path().join(UIDVALIDITY_NAME).display());
    }
}

fn rescan(store: &Dir, owner: Option<Owner>) -> u32 {
    let prefix = format!("{UIDVALIDITY_NAME}.");
    let mut min = u32::MAX;
    let mut max = 0u32;
    match store.list() {
        Ok(entries) => {
            for (name, _) in entries {
                if let Some(hex) = name.strip_prefix(&prefix)
                    && !hex.is_empty()
                    && let Ok(v) = u32::from_str_radix(hex, 16)
                {
                    min = min.min(v);
                    max = max.max(v);
                }
            }
        }
        Err(e) => {
            tracing::warn!("opendir({}): {e}", store.path().display());
            return fallback();
        }
    }
    if max == 0 {
        let mut value = fallback();
        for _ in 0..10 {
            match store.create_new(&format!("{prefix}{value:08x}"), 0o444, owner) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => value = fallback(),
                Err(e) => {
                    tracing::warn!("creat({}{prefix}{value:08x}): {e}", store.path().display());
                    return value;
                }
            }
        }
        write_main(store, value, owner);
        return value;
    }
    if min != max {
        let _ = store.unlink(&format!("{prefix}{min:08x}"));
    }
    let mut cur = max;
    if rename_next(store, &mut cur, true).is_err() {
        return fallback();
    }
    write_main(store, cur, owner);
    cur
}

/// The uidlist lock of one mailbox (`dovecot-uidlist.lock`), held until dropped. While it is
/// held, [`UidlistLock::load`] sees the latest list and [`UidlistLock::save`] replaces it.
#[derive(Debug)]
pub struct UidlistLock {
    _lock: DotLock,
    mbox: Dir,
    store: Dir,
    owner: Option<Owner>,
}

/// How long to wait for the uidlist lock (Dovecot: the stale timeout plus two seconds).
pub const UIDLIST_LOCK_TIMEOUT: Duration = Duration::from_secs(122);

impl UidlistLock {
    pub(crate) fn acquire(
        mbox: Dir,
        store: Dir,
        owner: Option<Owner>,
        timeout: Duration,
    ) -> Result<UidlistLock, MaildirError> {
        let lock = DotLock::acquire(&mbox, UIDLIST_NAME, UIDLIST_STALE, timeout, owner)?;
        Ok(UidlistLock { _lock: lock, mbox, store, owner })
    }

    /// The current uidlist, or a new empty one (with a new UIDVALIDITY) when the mailbox has
    /// none yet or its list is broken (Dovecot also starts over on a broken file).
    pub fn load(&self) -> Result<Uidlist, MaildirError> {
        match read_uidlist(&self.mbox) {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Ok(Uidlist::new(next_uid_validity(&self.store, self.owner))),
            Err(MaildirError::Corrupt { path, reason }) => {
                tracing::warn!("broken file {}: {reason}: starting a new one", path.display());
                Ok(Uidlist::new(next_uid_validity(&self.store, self.owner)))
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces the uidlist with `list`.
    pub fn save(&self, list: &Uidlist) -> Result<(), MaildirError> {
        write_uidlist(&self.mbox, list, self.owner)
    }

    /// Appends records for `names`, files new to the mailbox, without rewriting the list
    /// (Dovecot does the same for new mail), all in one write. Returns the UID of each name,
    /// in order, and the list's file when something was appended, which the caller
    /// fdatasyncs after dropping the lock, so that concurrent deliveries share one journal
    /// commit. `None` when the list has to be written whole instead: it is missing, version
    /// 1, broken, or does not end with a complete line.
    ///
    /// Each name comes with where the list stood before its file was linked into the mailbox:
    /// an IMAP session that saw the file since then and numbered it can only have written
    /// that record after it, so only those bytes are searched (all of them when the list was
    /// rewritten meanwhile). Such an existing UID is kept, and nothing is appended for it.
    /// A name given twice gets one record.
    pub(crate) fn append_batch(&self, names: &[(&str, Option<&ListMark>)]) -> Result<Option<Appended>, MaildirError> {
        use std::os::unix::fs::FileExt;
        const WINDOW: u64 = 4096;
        let path = self.mbox.path().join(UIDLIST_NAME);
        let io = |e| MaildirError::io(path.clone(), e);
        if names.iter().any(|(n, _)| !valid_record_name(n)) {
            return Err(MaildirError::Corrupt { path, reason: "bad file name for the uidlist".into() });
        }
        let f = match self.mbox.open_update(UIDLIST_NAME, self.owner) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let meta = f.metadata().map_err(io)?;
        let len = meta.len();
        let read_at = |off: u64, n: u64| -> io::Result<Vec<u8>> {
            let mut buf = vec![0; n as usize];
            f.read_exact_at(&mut buf, off)?;
            Ok(buf)
        };
        let froms: Vec<u64> = names
            .iter()
            .map(|(_, before)| match before {
                Some(mark) if mark.same_file(&meta) && mark.size <= len => mark.size,
                _ => 0,
            })
            .collect();
        // Read once from the earliest mark; each name searches from its own.
        let low = froms.iter().copied().min().unwrap_or(len);
        let fresh = if low < len { read_at(low, len - low).map_err(io)? } else { Vec::new() };
        let mut uids: Vec<Option<u32>> = names
            .iter()
            .zip(&froms)
            .map(
                |((n, _), &from)| {
                    if from < len { find_record(&fresh[(from - low) as usize..], base_of(n)) } else { None }
                },
            )
            .collect();
        if uids.iter().all(Option::is_some) {
            return Ok(Some(Appended { uids: uids.into_iter().flatten().collect(), file: None }));
        }
        let head = read_at(0, len.min(WINDOW)).map_err(io)?;
        let Some(hdr_end) = head.iter().position(|&b| b == b'\n') else { return Ok(None) };
        let Ok(header) = std::str::from_utf8(&head[..=hdr_end]) else { return Ok(None) };
        if !header.starts_with("3 ") {
            return Ok(None);
        }
        let Ok(hdr) = Uidlist::parse(header) else { return Ok(None) };
        // The last record's UID: the line before the final newline.
        let tail_off = len.saturating_sub(WINDOW);
        let tail = read_at(tail_off, len - tail_off).map_err(io)?;
        if tail.last() != Some(&b'\n') {
            return Ok(None);
        }
        let body = &tail[..tail.len() - 1];
        // The line after the last newline is a record (a header-only list has no newline
        // left in `body`: handled below).
        let last_uid = match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                let line = &body[i + 1..];
                let digits = line.iter().take_while(|b| b.is_ascii_digit()).count();
                match std::str::from_utf8(&line[..digits]).ok().and_then(|d| d.parse::<u32>().ok()) {
                    Some(uid) if uid > 0 && line.get(digits) == Some(&b' ') => uid,
                    _ => return Ok(None),
                }
            }
            None if tail_off == 0 => 0,
            None => return Ok(None),
        };
        let mut next = hdr.next_uid.max(last_uid.saturating_add(1));
        let mut lines = String::new();
        for i in 0..names.len() {
            if uids[i].is_some() {
                continue;
            }
            let name = base_of(names[i].0);
            // The same file twice in one batch: one record.
            if let Some(j) = (0..i).find(|&j| base_of(names[j].0) == name) {
                uids[i] = uids[j];
                continue;
            }
            if next >= u32::MAX - 1 {
                return Ok(None);
            }
            let _ = writeln!(lines, "{next} :{name}");
            uids[i] = Some(next);
            next += 1;
        }
        let file = if lines.is_empty() {
            None
        } else {
            f.write_all_at(lines.as_bytes(), len).map_err(io)?;
            Some(f)
        };
        Ok(Some(Appended { uids: uids.into_iter().flatten().collect(), file }))
    }

    /// The directory of the mailbox (for keyword files and the like).
    pub fn path(&self) -> &Path {
        self.mbox.path()
    }
}

/// What [`UidlistLock::append_batch`] did: the UID of each name, in order, and the list's
/// file when records were appended (to be fdatasync'd).
#[derive(Debug)]
pub(crate) struct Appended {
    pub(crate) uids: Vec<u32>,
    pub(crate) file: Option<std::fs::File>,
}

/// Where a uidlist stood at some moment: which file (a rewrite renames a new one in, whose
/// inode number may be a recycled one, hence the birth time too) and how long it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListMark {
    ino: u64,
    born: Option<SystemTime>,
    size: u64,
}

impl ListMark {
    pub(crate) fn of(meta: &std::fs::Metadata) -> ListMark {
        use std::os::unix::fs::MetadataExt;
        ListMark { ino: meta.ino(), born: meta.created().ok(), size: meta.len() }
    }

    /// The same file (appended to since, perhaps). Without birth times, never.
    fn same_file(&self, meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.born.is_some() && self.ino == meta.ino() && self.born == meta.created().ok()
    }
}

/// The UID of the record for base name `name` in `bytes` (whole lines of a version 3 list:
/// `<uid> [ext...] :<name>[:flags]`), without parsing the rest.
fn find_record(bytes: &[u8], name: &str) -> Option<u32> {
    let needle = format!(":{name}");
    let mut at = 0;
    while let Some(i) = find(&bytes[at..], needle.as_bytes()) {
        let start = at + i;
        let end = start + needle.len();
        at = end;
        // Whole name: followed by the end of the line or a flags part.
        if !matches!(bytes.get(end), None | Some(b'\n') | Some(b':')) {
            continue;
        }
        let line_start = bytes[..start].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        let line = &bytes[line_start..start];
        // The `:` must open the file name: preceded by a space, after the UID field.
        if line.last() != Some(&b' ') {
            continue;
        }
        let digits = line.iter().take_while(|b| b.is_ascii_digit()).count();
        if let Some(uid) = std::str::from_utf8(&line[..digits]).ok().and_then(|d| d.parse().ok())
            && uid > 0
        {
            return Some(uid);
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #[test]
    fn records_are_found_by_base_name() {
        let text = b"3 V1 N9 G0\n7 :a.b,S=1\n8 W12 :c.d,S=2:2,S\n9 :e\n";
        assert_eq!(find_record(text, "c.d,S=2"), Some(8));
        assert_eq!(find_record(text, "a.b,S=1"), Some(7));
        assert_eq!(find_record(text, "e"), Some(9));
        assert_eq!(find_record(text, "a.b"), None, "a prefix of a name is not the name");
        assert_eq!(find_record(b"7 :xe\n", "e"), None);
        assert_eq!(find_record(b"", "e"), None);
    }

    #[test]
    fn a_record_without_a_base_name_is_refused() {
        // Found by fuzzing: "25 :" in a version 1 list would be written back as a record
        // with an empty name, which no reader accepts.
        assert!(Uidlist::parse("1 2 2\n25   :\n").is_err());
        assert!(Uidlist::parse("3 V1 N2\n1 :\n").is_err());
    }

    use super::*;

    /// As Dovecot 2.3 writes it after two deliveries and a flag change of the first message:
    /// the second record carries a W extension (the vsize was not in the file name).
    const GOLDEN: &str = "3 V1700000000 N3 G5f0a2b3c4d5e6f708192a3b4c5d6e7f8\n\
                          1 :1700000000.M100P4242.mx.example.com,S=1355,W=1394\n\
                          2 W2481 :1700000001.M200P4243.mx.example.com,S=2400\n";

    #[test]
    fn golden_v3_round_trips() {
        let l = Uidlist::parse(GOLDEN).unwrap();
        assert_eq!(l.uid_validity, 1_700_000_000);
        assert_eq!(l.next_uid, 3);
        assert_eq!(l.guid, "5f0a2b3c4d5e6f708192a3b4c5d6e7f8");
        assert_eq!(l.records.len(), 2);
        assert_eq!(l.records[1].ext, vec!["W2481".to_string()]);
        assert_eq!(l.uid_of("1700000000.M100P4242.mx.example.com,S=1355,W=1394:2,S"), Some(1));
        assert_eq!(l.to_text(), GOLDEN);
    }

    #[test]
    fn reading_is_tolerant() {
        // Flags part kept by older writers, unknown header fields, appended records after a
        // stale N (Dovecot appends without rewriting the header), no trailing newline.
        let text = "3 N2 V99 G5F0A2B3C4D5E6F708192A3B4C5D6E7F8 Xfoo\n7 :a:2,S\n9  G0123 :b";
        let mut l = Uidlist::parse(text).unwrap();
        assert_eq!((l.uid_validity, l.next_uid), (99, 10));
        assert_eq!(l.hdr_ext, vec!["Xfoo".to_string()]);
        assert_eq!(l.records[0].filename, "a:2,S");
        assert_eq!(l.uid_of("a"), Some(7));
        assert_eq!(l.assign("c,S=1,W=2"), 10);
        assert_eq!(l.assign("b:2,T"), 9);
        assert_eq!(l.to_text(), "3 V99 N11 G5f0a2b3c4d5e6f708192a3b4c5d6e7f8 Xfoo\n7 :a\n9 G0123 :b\n10 :c,S=1,W=2\n");
        // Version 1 (Courier courierimapuiddb compatible).
        let l = Uidlist::parse("1 1234 5\n3 x.y.z:2,S\n").unwrap();
        assert_eq!((l.uid_validity, l.next_uid, l.records[0].uid), (1234, 5, 3));
        assert_eq!(l.records[0].base(), "x.y.z");
        assert!(l.to_text().starts_with("3 V1234 N5 G"));
    }

    #[test]
    fn broken_lists_are_refused() {
        for bad in [
            "",
            "3",
            "3 V0 N1 G5f0a2b3c4d5e6f708192a3b4c5d6e7f8",
            "3 V1 N1 Gshort",
            "9 V1 N1",
            "3 V1 N5\n2 :a\n1 :b\n",
            "3 V1 N5\n0 :a\n",
            "3 V1 N5\nx :a\n",
            "3 V1 N5\n1 :../../etc/passwd\n",
            "3 V1 N5\n1 W12\n",
        ] {
            assert!(Uidlist::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uidvalidity_follows_dovecot() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::walk(t.path(), false, None, false).unwrap();
        let first = next_uid_validity(&d, None);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32;
        // The time, or just above it when other tests of this process took values this second.
        assert!(first + 5 >= now && first <= now + 1000, "{first} vs {now}");
        assert_eq!(std::fs::read_to_string(t.path().join(UIDVALIDITY_NAME)).unwrap(), format!("{first:08x}"));
        assert!(t.path().join(format!("{UIDVALIDITY_NAME}.{first:08x}")).exists());
        let second = next_uid_validity(&d, None);
        assert_eq!(second, first + 1);
        assert!(!t.path().join(format!("{UIDVALIDITY_NAME}.{first:08x}")).exists());
        assert!(t.path().join(format!("{UIDVALIDITY_NAME}.{second:08x}")).exists());
        // A lost main file: rescan from the marker file.
        std::fs::remove_file(t.path().join(UIDVALIDITY_NAME)).unwrap();
        assert_eq!(next_uid_validity(&d, None), second + 1);
        // A garbled main file: rescan too.
        std::fs::write(t.path().join(UIDVALIDITY_NAME), "zz").unwrap();
        assert_eq!(next_uid_validity(&d, None), second + 2);
    }
}

//! The authenticated and selected states of an IMAP session: commands in, response bytes
//! out, over the user's Maildir++ store. No network here: the driver ([`super::server`])
//! handles the not-authenticated state, TLS, literals, IDLE's waiting and the socket; tests
//! drive this directly on a Maildir.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rpost_imap_proto::types::civil_from_days;
use rpost_imap_proto::write;
use rpost_imap_proto::{Command, CommandBody, FetchAttr, SearchKey, SeqNum, SeqSet, StatusItem, StoreMode, utf7};
use rpost_maildir::Maildir;

use super::mailbox::{Changes, Mailbox, MailboxError, Msg, Sub, letters_for, set_mtime, unix};
use super::mime;

/// Special-use mailboxes created at login (Dovecot's `auto = subscribe`), with attributes.
pub const SPECIAL_USE: [(&str, &str); 5] =
    [("Drafts", "\\Drafts"), ("Sent", "\\Sent"), ("Trash", "\\Trash"), ("Junk", "\\Junk"), ("Archive", "\\Archive")];

/// Bytes of parsed messages kept per session.
const CACHE_BYTES: usize = 32 << 20;

/// A parsed message, cached by UID.
#[derive(Debug)]
pub struct Parsed {
    /// The message with CRLF line ends, as IMAP serves it.
    pub raw: Vec<u8>,
    pub root: mime::Part,
    pub internal: i64,
    pub envelope: Vec<u8>,
    pub bodystructure: Vec<u8>,
    pub body: Vec<u8>,
}

/// Counters for the logout line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub deleted: u64,
    pub expunged: u64,
    /// Messages copied or moved into the \Trash mailbox.
    pub trashed: u64,
    pub fetch_hdr_count: u64,
    pub fetch_hdr_bytes: u64,
    pub fetch_body_count: u64,
    pub fetch_body_bytes: u64,
    /// Messages parsed (cache misses), for tests of the cache.
    pub parses: u64,
}

impl Stats {
    fn count_fetch(&mut self, header: bool, bytes: usize) {
        if header {
            self.fetch_hdr_count += 1;
            self.fetch_hdr_bytes += bytes as u64;
        } else {
            self.fetch_body_count += 1;
            self.fetch_body_bytes += bytes as u64;
        }
    }

    /// Dovecot's `imap_logout_format`: `%i`/`%o` (bytes in and out, given), `%{deleted}`,
    /// `%{expunged}`, `%{trashed}`, `%{fetch_hdr_count}`, `%{fetch_hdr_bytes}`,
    /// `%{fetch_body_count}`, `%{fetch_body_bytes}`, `%%`; unknown variables expand to nothing.
    pub fn logout_line(&self, format: &str, bytes_in: u64, bytes_out: u64) -> String {
        let mut out = String::new();
        let mut it = format.chars().peekable();
        while let Some(c) = it.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let var: String = match it.next() {
                Some('{') => it.by_ref().take_while(|&c| c != '}').collect(),
                Some(v) => v.to_string(),
                None => break,
            };
            let value = match var.as_str() {
                "%" => "%".to_string(),
                "i" | "input" => bytes_in.to_string(),
                "o" | "output" => bytes_out.to_string(),
                "deleted" => self.deleted.to_string(),
                "expunged" => self.expunged.to_string(),
                "trashed" => self.trashed.to_string(),
                "fetch_hdr_count" => self.fetch_hdr_count.to_string(),
                "fetch_hdr_bytes" => self.fetch_hdr_bytes.to_string(),
                "fetch_body_count" => self.fetch_body_count.to_string(),
                "fetch_body_bytes" => self.fetch_body_bytes.to_string(),
                _ => String::new(),
            };
            out.push_str(&value);
        }
        out
    }
}

/// An IMAP session after login.
#[derive(Debug)]
pub struct Session {
    /// The store root (folders live below it).
    store: Maildir,
    inbox: Maildir,
    pub selected: Option<Mailbox>,
    cache: HashMap<u32, Parsed>,
    cache_order: VecDeque<u32>,
    cache_bytes: usize,
    pub stats: Stats,
    closing: bool,
    /// Modification times seen by the last [`Session::idle_poll`].
    idle_stamp: Option<Vec<Option<SystemTime>>>,
}

fn lf_to_crlf(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() + v.len() / 30);
    let mut prev = 0u8;
    for &b in v {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// IMAP date-time of Unix seconds (UTC).
pub fn imap_date_time(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn flag_list(flags: &[String]) -> String {
    format!("({})", flags.join(" "))
}

fn tagged(out: &mut Vec<u8>, tag: &str, status: &str, text: &str) {
    out.extend_from_slice(format!("{tag} {status} {text}\r\n").as_bytes());
}

/// Normalised ranges of a set (`*` = `largest`), sorted and merged.
fn ranges(set: &SeqSet, largest: u32) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = set
        .0
        .iter()
        .map(|&(a, b)| {
            let (a, b) = (a.resolve(largest), b.resolve(largest));
            if a <= b { (a, b) } else { (b, a) }
        })
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(l) if a <= l.1.saturating_add(1) => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn in_ranges(r: &[(u32, u32)], n: u32) -> bool {
    let i = r.partition_point(|&(_, hi)| hi < n);
    r.get(i).is_some_and(|&(lo, _)| lo <= n)
}

/// Mailbox name validity beyond the store's: modified UTF-7 must decode.
fn check_name(name: &str) -> Result<(), String> {
    if utf7::decode(name).is_none() {
        return Err("Invalid mailbox name: not valid modified UTF-7".into());
    }
    Ok(())
}

/// `*` matches anything, `%` anything but the hierarchy separator.
fn wildmatch(pat: &[u8], name: &[u8]) -> bool {
    match pat.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|i| wildmatch(&pat[1..], &name[i..])),
        Some(b'%') => {
            for i in 0..=name.len() {
                if wildmatch(&pat[1..], &name[i..]) {
                    return true;
                }
                if name.get(i) == Some(&b'/') {
                    return false;
                }
            }
            false
        }
        Some(&c) => name.first() == Some(&c) && wildmatch(&pat[1..], &name[1..]),
    }
}

fn list_match(pattern: &str, name: &str) -> bool {
    // INBOX is case-insensitive, as its own name and as a hierarchy prefix.
    let fold = |s: &str| {
        if s.len() >= 5 && s[..5].eq_ignore_ascii_case("INBOX") && (s.len() == 5 || s.as_bytes()[5] == b'/') {
            format!("INBOX{}", &s[5..])
        } else {
            s.to_string()
        }
    };
    if pattern.matches(['*', '%']).count() > 20 {
        return false;
    }
    wildmatch(fold(pattern).as_bytes(), fold(name).as_bytes())
}

impl Session {
    pub fn new(store: Maildir, inbox: Maildir) -> Session {
        Session {
            store,
            inbox,
            selected: None,
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            cache_bytes: 0,
            stats: Stats::default(),
            closing: false,
            idle_stamp: None,
        }
    }

    /// Creates INBOX and the special-use mailboxes that are missing, subscribed. Failures
    /// are logged: the session goes on without them.
    pub fn autocreate(&self) {
        if let Err(e) = self.inbox.create() {
            tracing::warn!("cannot create INBOX: {e}");
        }
        for (name, _) in SPECIAL_USE {
            let Ok(md) = self.store.folder(name) else { continue };
            if md.exists() {
                continue;
            }
            match md.create() {
                Ok(()) => {
                    if let Err(e) = self.store.subscribe(name, true) {
                        tracing::warn!("cannot subscribe {name}: {e}");
                    }
                }
                Err(e) => tracing::warn!("cannot create {name}: {e}"),
            }
        }
    }

    fn mailbox(&self, name: &str) -> Result<Maildir, String> {
        if name == "INBOX" {
            return Ok(self.inbox.clone());
        }
        check_name(name)?;
        self.store.folder(name).map_err(|e| format!("{e}"))
    }

    fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_order.clear();
        self.cache_bytes = 0;
    }

    /// Changes since the last report, as untagged responses (NOOP, IDLE, after commands).
    pub fn poll(&mut self, allow_expunge: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let Some(mb) = self.selected.as_mut() else { return out };
        match mb.sync(allow_expunge) {
            Ok(ch) => {
                for &uid in ch_expunged_uids(mb, &ch).iter() {
                    self.cache.remove(&uid);
                }
                Self::report(mb, &ch, &mut out);
            }
            Err(MailboxError::NoSuchMailbox) => {
                out.extend_from_slice(b"* BYE Selected mailbox was deleted, have to disconnect.\r\n");
                self.closing = true;
            }
            Err(e @ MailboxError::UidValidityChanged { .. }) => {
                tracing::warn!("{}: {e}: disconnecting", mb.name);
                out.extend_from_slice(b"* BYE Mailbox UIDVALIDITY changed, have to disconnect.\r\n");
                self.closing = true;
            }
            Err(e) => {
                tracing::warn!("{}: sync: {e}", mb.name);
            }
        }
        out
    }

    /// IDLE's once-a-second look: a full sync only when `new/`, `cur/`, the uidlist or the
    /// keywords changed (their modification times), or `force` (a periodic full sync covers
    /// changes within one timestamp tick). Keeps many idle sessions cheap.
    pub fn idle_poll(&mut self, force: bool) -> Vec<u8> {
        let Some(mb) = self.selected.as_ref() else { return Vec::new() };
        let dir = mb.path();
        let stamp: Vec<Option<SystemTime>> = ["new", "cur", "dovecot-uidlist", "dovecot-keywords"]
            .iter()
            .map(|n| std::fs::metadata(dir.join(n)).and_then(|m| m.modified()).ok())
            .collect();
        if !force && self.idle_stamp.as_ref() == Some(&stamp) {
            return Vec::new();
        }
        self.idle_stamp = Some(stamp);
        self.poll(true)
    }

    /// The selected mailbox's directory, which IDLE watches.
    pub fn idle_dir(&self) -> Option<std::path::PathBuf> {
        self.selected.as_ref().map(|mb| mb.path().to_path_buf())
    }

    /// True once the session told the client `* BYE` (its mailbox went away): the driver
    /// closes the connection after sending what it has.
    pub fn closing(&self) -> bool {
        self.closing
    }

    fn report(mb: &Mailbox, ch: &Changes, out: &mut Vec<u8>) {
        for seq in &ch.expunged {
            out.extend_from_slice(format!("* {seq} EXPUNGE\r\n").as_bytes());
        }
        if let Some(n) = ch.exists {
            out.extend_from_slice(format!("* {n} EXISTS\r\n").as_bytes());
        }
        if let Some(n) = ch.recent {
            out.extend_from_slice(format!("* {n} RECENT\r\n").as_bytes());
        }
        for &seq in &ch.flags {
            if let Some(m) = mb.msgs.get(seq as usize - 1) {
                let f = flag_list(&mb.flags_of(m));
                out.extend_from_slice(format!("* {seq} FETCH (UID {} FLAGS {f})\r\n", m.uid).as_bytes());
            }
        }
    }

    /// Runs one command of the authenticated or selected state; returns every response line,
    /// the tagged one last.
    pub fn execute(&mut self, cmd: &Command) -> Vec<u8> {
        let mut out = Vec::new();
        let tag = cmd.tag.as_str();
        let allow_expunge = !matches!(
            cmd.body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
        );
        let needs_selected = matches!(
            cmd.body,
            CommandBody::Check
                | CommandBody::Close
                | CommandBody::Unselect
                | CommandBody::Expunge
                | CommandBody::UidExpunge(_)
                | CommandBody::Search { .. }
                | CommandBody::Fetch { .. }
                | CommandBody::Store { .. }
                | CommandBody::Copy { .. }
                | CommandBody::Move { .. }
        );
        if needs_selected && self.selected.is_none() {
            tagged(&mut out, tag, "BAD", "No mailbox selected.");
            return out;
        }
        let result = self.run(cmd, &mut out);
        let (status, text) = match result {
            Ok(text) => ("OK", text),
            Err(Reply::No(t)) => ("NO", t),
            Err(Reply::Bad(t)) => ("BAD", t),
        };
        // Untagged news before the tagged reply (not after SELECT: that reported already).
        if !matches!(
            cmd.body,
            CommandBody::Select { .. } | CommandBody::Examine { .. } | CommandBody::Close | CommandBody::Unselect
        ) {
            out.extend(self.poll(allow_expunge));
        }
        tagged(&mut out, tag, status, &text);
        out
    }

    fn run(&mut self, cmd: &Command, out: &mut Vec<u8>) -> Result<String, Reply> {
        use CommandBody as C;
        match &cmd.body {
            C::Noop => Ok("NOOP completed.".into()),
            C::Check => Ok("Check completed.".into()),
            C::Namespace => {
                out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                Ok("Namespace completed.".into())
            }
            C::Enable(_) => {
                out.extend_from_slice(b"* ENABLED\r\n");
                Ok("Enabled.".into())
            }
            C::Select { mailbox } => self.select(mailbox, false, out),
            C::Examine { mailbox } => self.select(mailbox, true, out),
            C::Create { mailbox } => self.create(mailbox),
            C::Delete { mailbox } => self.delete(mailbox),
            C::Rename { from, to } => self.rename(from, to),
            C::Subscribe { mailbox } | C::Unsubscribe { mailbox } => {
                let set = matches!(cmd.body, C::Subscribe { .. });
                if set {
                    let md = self.mailbox(mailbox).map_err(Reply::No)?;
                    if !md.exists() {
                        return Err(Reply::No("[NONEXISTENT] Mailbox doesn't exist.".into()));
                    }
                } else {
                    check_name(mailbox).map_err(Reply::No)?;
                }
                self.store.subscribe(mailbox, set).map_err(|e| Reply::No(format!("[SERVERBUG] {e}")))?;
                Ok(format!("{} completed.", if set { "Subscribe" } else { "Unsubscribe" }))
            }
            C::List { reference, pattern } => self.list(reference, pattern, false, out),
            C::Lsub { reference, pattern } => self.list(reference, pattern, true, out),
            C::Status { mailbox, items } => self.status(mailbox, items, out),
            C::Append { mailbox, flags, date, message } => self.append(mailbox, flags, date.map(|d| d.unix), message),
            C::Close => {
                if let Some(mb) = self.selected.as_mut()
                    && !mb.read_only
                {
                    let del: Vec<usize> =
                        mb.msgs.iter().enumerate().filter(|(_, m)| m.has('T') && !m.gone).map(|(i, _)| i).collect();
                    let n = mb.remove_files(&del).map_err(server_err)?;
                    self.stats.expunged += n as u64;
                }
                self.selected = None;
                self.clear_cache();
                Ok("Close completed.".into())
            }
            C::Unselect => {
                self.selected = None;
                self.clear_cache();
                Ok("Unselect completed.".into())
            }
            C::Expunge => self.expunge(None),
            C::UidExpunge(set) => self.expunge(Some(set)),
            C::Search { uid, charset, key } => self.search(*uid, charset.as_deref(), key, out),
            C::Fetch { uid, set, attrs } => self.fetch(*uid, set, attrs, out),
            C::Store { uid, set, mode, silent, flags } => self.store(*uid, set, *mode, *silent, flags, out),
            C::Copy { uid, set, mailbox } => self.copy(*uid, set, mailbox, false, out),
            C::Move { uid, set, mailbox } => self.copy(*uid, set, mailbox, true, out),
            other => Err(Reply::Bad(format!("{} is not allowed now.", other.name()))),
        }
    }

    fn select(&mut self, name: &str, read_only: bool, out: &mut Vec<u8>) -> Result<String, Reply> {
        self.selected = None;
        self.clear_cache();
        let md = self.mailbox(name).map_err(Reply::No)?;
        let (mb, _) = match Mailbox::open(md, read_only) {
            Ok(v) => v,
            Err(MailboxError::NoSuchMailbox) => return Err(Reply::No("[NONEXISTENT] Mailbox doesn't exist.".into())),
            Err(e) => return Err(server_err(e)),
        };
        let mut kw = mb.keyword_names();
        let mut flags: Vec<String> =
            ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"].iter().map(|s| s.to_string()).collect();
        flags.append(&mut kw);
        out.extend_from_slice(format!("* FLAGS {}\r\n", flag_list(&flags)).as_bytes());
        let mut perm = flags.clone();
        perm.push("\\*".into());
        out.extend_from_slice(
            format!(
                "* OK [PERMANENTFLAGS {}] {}\r\n",
                if read_only { "()".into() } else { flag_list(&perm) },
                if read_only { "Read-only mailbox." } else { "Flags permitted." }
            )
            .as_bytes(),
        );
        out.extend_from_slice(format!("* {} EXISTS\r\n* {} RECENT\r\n", mb.msgs.len(), mb.recent.len()).as_bytes());
        if let Some(i) = mb.msgs.iter().position(|m| !m.has('S')) {
            out.extend_from_slice(format!("* OK [UNSEEN {}] First unseen.\r\n", i + 1).as_bytes());
        }
        out.extend_from_slice(
            format!(
                "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {}] Predicted next UID\r\n",
                mb.uid_validity, mb.uid_next
            )
            .as_bytes(),
        );
        self.selected = Some(mb);
        Ok(if read_only { "[READ-ONLY] Examine completed.".into() } else { "[READ-WRITE] Select completed.".into() })
    }

    fn create(&mut self, name: &str) -> Result<String, Reply> {
        let name = name.trim_end_matches('/');
        if name.eq_ignore_ascii_case("INBOX") {
            return Err(Reply::No("[ALREADYEXISTS] Mailbox already exists.".into()));
        }
        let md = self.mailbox(name).map_err(Reply::No)?;
        if md.exists() {
            return Err(Reply::No("[ALREADYEXISTS] Mailbox already exists.".into()));
        }
        md.create().map_err(|e| Reply::No(format!("[SERVERBUG] {e}")))?;
        Ok("Create completed.".into())
    }

    fn delete(&mut self, name: &str) -> Result<String, Reply> {
        if name == "INBOX" {
            return Err(Reply::No("INBOX can't be deleted.".into()));
        }
        let md = self.mailbox(name).map_err(Reply::No)?;
        if !md.exists() {
            return Err(Reply::No("[NONEXISTENT] Mailbox doesn't exist.".into()));
        }
        if self.selected.as_ref().is_some_and(|s| s.md == md) {
            self.selected = None;
            self.clear_cache();
        }
        // Rename out of the namespace first (atomic), then remove at leisure.
        let trash = self.store.store_path().join(format!("..deleted-{}", rpost_maildir::unique_base()));
        std::fs::rename(md.path(), &trash).map_err(|e| Reply::No(format!("[SERVERBUG] {e}")))?;
        if let Err(e) = std::fs::remove_dir_all(&trash) {
            tracing::warn!("remove {}: {e}", trash.display());
        }
        Ok("Delete completed.".into())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<String, Reply> {
        let to = to.trim_end_matches('/');
        if from == "INBOX" {
            return self.rename_inbox(to);
        }
        let src = self.mailbox(from).map_err(Reply::No)?;
        let dst = self.mailbox(to).map_err(Reply::No)?;
        if !src.exists() {
            return Err(Reply::No("[NONEXISTENT] Mailbox doesn't exist.".into()));
        }
        if to == "INBOX" || dst.exists() {
            return Err(Reply::No("[ALREADYEXISTS] Target mailbox already exists.".into()));
        }
        let children: Vec<String> = self
            .store
            .folders()
            .map_err(|e| Reply::No(format!("[SERVERBUG] {e}")))?
            .into_iter()
            .filter(|f| f.starts_with(&format!("{from}/")))
            .collect();
        std::fs::rename(src.path(), dst.path()).map_err(|e| Reply::No(format!("[SERVERBUG] {e}")))?;
        for c in children {
            let new = format!("{to}{}", &c[from.len()..]);
            if let (Ok(a), Ok(b)) = (self.store.folder(&c), self.store.folder(&new)) {
                let _ = std::fs::rename(a.path(), b.path());
            }
        }
        if self.selected.as_ref().is_some_and(|s| s.md == src) {
            self.selected = None;
            self.clear_cache();
        }
        Ok("Rename completed.".into())
    }

    /// RENAME INBOX (RFC 3501 6.3.5): every message moves to the new mailbox, INBOX stays,
    /// empty. The files keep their names and flags; they get UIDs in the new mailbox.
    fn rename_inbox(&mut self, to: &str) -> Result<String, Reply> {
        let dst = self.mailbox(to).map_err(Reply::No)?;
        if to == "INBOX" || dst.exists() {
            return Err(Reply::No("[ALREADYEXISTS] Target mailbox already exists.".into()));
        }
        dst.create().map_err(|e| Reply::No(format!("[SERVERBUG] {e}")))?;
        let src = self.inbox.path();
        for sub in ["new", "cur"] {
            let Ok(rd) = std::fs::read_dir(src.join(sub)) else { continue };
            for ent in rd.flatten() {
                let name = ent.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                if let Err(e) = std::fs::rename(ent.path(), dst.path().join(sub).join(&name)) {
                    tracing::warn!("rename {}: {e}", ent.path().display());
                }
            }
        }
        Ok("Rename completed.".into())
    }

    fn list(&mut self, reference: &str, pattern: &str, lsub: bool, out: &mut Vec<u8>) -> Result<String, Reply> {
        let cmd = if lsub { "LSUB" } else { "LIST" };
        if pattern.is_empty() {
            out.extend_from_slice(format!("* {cmd} (\\Noselect) \"/\" \"\"\r\n").as_bytes());
            return Ok(format!("{cmd} completed."));
        }
        let pattern = if reference.is_empty() || pattern.starts_with('/') {
            pattern.to_string()
        } else if reference.ends_with('/') {
            format!("{reference}{pattern}")
        } else {
            format!("{reference}/{pattern}")
        };
        let mut names: Vec<String> = vec!["INBOX".into()];
        names.extend(self.store.folders().map_err(|e| Reply::No(format!("[SERVERBUG] {e}")))?);
        let subs = self.store.subscriptions().unwrap_or_default();
        // Parents that exist only as hierarchy (a/b without a).
        let mut all: Vec<(String, bool)> = names.iter().map(|n| (n.clone(), true)).collect();
        for n in &names {
            let mut p = n.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if !all.iter().any(|(x, _)| x == parent) {
                    all.push((parent.to_string(), false));
                }
                p = parent;
            }
        }
        all.sort();
        let candidates: Vec<(String, bool)> = if lsub {
            subs.iter().map(|s| (s.clone(), all.iter().any(|(n, sel)| n == s && *sel))).collect()
        } else {
            all.clone()
        };
        for (name, selectable) in candidates {
            if !list_match(&pattern, &name) {
                continue;
            }
            let mut attrs: Vec<&str> = Vec::new();
            if !selectable {
                attrs.push("\\Noselect");
            }
            if !lsub {
                let prefix = format!("{name}/");
                let children = all.iter().any(|(n, _)| n.starts_with(&prefix));
                attrs.push(if children { "\\HasChildren" } else { "\\HasNoChildren" });
                if let Some((_, a)) = SPECIAL_USE.iter().find(|(n, _)| *n == name) {
                    attrs.push(a);
                }
            }
            let mut line = format!("* {cmd} ({}) \"/\" ", attrs.join(" ")).into_bytes();
            write::mailbox(&mut line, &name);
            line.extend_from_slice(b"\r\n");
            out.extend(line);
        }
        Ok(format!("{cmd} completed."))
    }

    fn status(&mut self, name: &str, items: &[StatusItem], out: &mut Vec<u8>) -> Result<String, Reply> {
        let md = self.mailbox(name).map_err(Reply::No)?;
        let values = |mb: &Mailbox, news: usize| {
            items
                .iter()
                .map(|i| match i {
                    StatusItem::Messages => format!("MESSAGES {}", mb.msgs.len()),
                    StatusItem::Recent => format!("RECENT {}", news),
                    StatusItem::UidNext => format!("UIDNEXT {}", mb.uid_next),
                    StatusItem::UidValidity => format!("UIDVALIDITY {}", mb.uid_validity),
                    StatusItem::Unseen => format!("UNSEEN {}", mb.msgs.iter().filter(|m| !m.has('S')).count()),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let text = match &self.selected {
            Some(mb) if mb.md == md => values(mb, mb.recent.len()),
            _ => {
                let (mb, _) = match Mailbox::open(md, true) {
                    Ok(v) => v,
                    Err(MailboxError::NoSuchMailbox) => {
                        return Err(Reply::No("[NONEXISTENT] Mailbox doesn't exist.".into()));
                    }
                    Err(e) => return Err(server_err(e)),
                };
                let news = mb.msgs.iter().filter(|m| m.sub == Sub::New).count();
                values(&mb, news)
            }
        };
        let mut line = b"* STATUS ".to_vec();
        write::mailbox(&mut line, name);
        line.extend_from_slice(format!(" ({text})\r\n").as_bytes());
        out.extend(line);
        Ok("Status completed.".into())
    }

    fn append(&mut self, name: &str, flags: &[String], date: Option<i64>, message: &[u8]) -> Result<String, Reply> {
        let md = self.mailbox(name).map_err(Reply::No)?;
        if !md.exists() {
            return Err(Reply::No("[TRYCREATE] Mailbox doesn't exist.".into()));
        }
        if message.is_empty() {
            return Err(Reply::No("Can't save a zero byte message.".into()));
        }
        let mut kw = md.keywords().unwrap_or_default();
        let letters = letters_for(&md, &mut kw, flags).map_err(server_err)?;
        let d = md.deliver(&mut &message[..], &letters).map_err(|e| Reply::No(format!("[SERVERBUG] {e}")))?;
        if let Some(t) = date {
            let when = if t >= 0 {
                UNIX_EPOCH + Duration::from_secs(t as u64)
            } else {
                UNIX_EPOCH - Duration::from_secs(t.unsigned_abs())
            };
            if let Err(e) = set_mtime(&d.path, when) {
                tracing::warn!("{}: cannot set the internal date: {e}", d.path.display());
            }
        }
        let validity = md.uidlist().ok().flatten().map(|l| l.uid_validity);
        Ok(match (validity, d.uid) {
            (Some(v), Some(uid)) => format!("[APPENDUID {v} {uid}] Append completed."),
            _ => "Append completed.".into(),
        })
    }

    fn expunge(&mut self, set: Option<&SeqSet>) -> Result<String, Reply> {
        let mb = self.selected.as_mut().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
        if mb.read_only {
            return Err(Reply::No("[READ-ONLY] Mailbox is read-only.".into()));
        }
        let largest = mb.msgs.last().map_or(0, |m| m.uid);
        let r = set.map(|s| ranges(s, largest));
        let del: Vec<usize> = mb
            .msgs
            .iter()
            .enumerate()
            .filter(|(_, m)| m.has('T') && !m.gone && r.as_ref().is_none_or(|r| in_ranges(r, m.uid)))
            .map(|(i, _)| i)
            .collect();
        let n = mb.remove_files(&del).map_err(server_err)?;
        self.stats.expunged += n as u64;
        Ok("Expunge completed.".into())
    }

    /// Indexes of the messages a set names; `Err` for sequence numbers past the end.
    fn resolve(&self, uid: bool, set: &SeqSet) -> Result<Vec<usize>, Reply> {
        let mb = self.selected.as_ref().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
        let n = mb.msgs.len() as u32;
        if uid {
            let largest = mb.msgs.last().map_or(0, |m| m.uid);
            let r = ranges(set, largest);
            return Ok(mb.msgs.iter().enumerate().filter(|(_, m)| in_ranges(&r, m.uid)).map(|(i, _)| i).collect());
        }
        let explicit_past_end =
            set.0.iter().any(|&(a, b)| [a, b].iter().any(|x| matches!(x, SeqNum::Value(v) if *v > n)));
        if explicit_past_end {
            return Err(Reply::Bad("Error in IMAP command: Invalid messageset".into()));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let r = ranges(set, n);
        Ok((0..n as usize).filter(|i| in_ranges(&r, *i as u32 + 1)).collect())
    }

    fn parsed(&mut self, idx: usize) -> Result<Option<&Parsed>, Reply> {
        let mb = self.selected.as_ref().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
        let m = &mb.msgs[idx];
        let uid = m.uid;
        if !self.cache.contains_key(&uid) {
            let Some((content, mtime)) = mb.read(m).map_err(server_err)? else { return Ok(None) };
            let raw = lf_to_crlf(&content);
            let root = mime::parse(&raw);
            let mut envelope = Vec::new();
            mime::envelope(&mut envelope, &raw[root.header.0..root.header.1]);
            let mut bodystructure = Vec::new();
            mime::body_structure(&mut bodystructure, &raw, &root, true);
            let mut body = Vec::new();
            mime::body_structure(&mut body, &raw, &root, false);
            self.stats.parses += 1;
            let size = raw.len() + envelope.len() + bodystructure.len();
            while self.cache_bytes + size > CACHE_BYTES
                && let Some(old) = self.cache_order.pop_front()
            {
                if let Some(p) = self.cache.remove(&old) {
                    self.cache_bytes -= p.raw.len() + p.envelope.len() + p.bodystructure.len();
                }
            }
            self.cache.insert(uid, Parsed { raw, root, internal: unix(mtime), envelope, bodystructure, body });
            self.cache_order.push_back(uid);
            self.cache_bytes += size;
        }
        Ok(self.cache.get(&uid))
    }

    fn fetch(&mut self, uid: bool, set: &SeqSet, attrs: &[FetchAttr], out: &mut Vec<u8>) -> Result<String, Reply> {
        let idxs = self.resolve(uid, set)?;
        let read_only = self.selected.as_ref().is_some_and(|m| m.read_only);
        let sets_seen = !read_only
            && attrs.iter().any(|a| {
                matches!(a, FetchAttr::Rfc822 | FetchAttr::Rfc822Text | FetchAttr::BodySection { peek: false, .. })
            });
        let needs_content = attrs
            .iter()
            .any(|a| !matches!(a, FetchAttr::Flags | FetchAttr::Uid | FetchAttr::Rfc822Size | FetchAttr::InternalDate));
        let mut gone = false;
        for idx in idxs {
            let (seq, msg_uid, was_gone) = {
                let mb = self.selected.as_ref().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
                let m = &mb.msgs[idx];
                (idx + 1, m.uid, m.gone)
            };
            if was_gone {
                gone = true;
                continue;
            }
            let mut flags_changed = false;
            if sets_seen {
                let mb = self.selected.as_mut().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
                if !mb.msgs[idx].has('S') {
                    let letters = format!("{}S", mb.msgs[idx].letters());
                    flags_changed = mb.set_letters(idx, &letters).map_err(server_err)?;
                }
            }
            let parsed_ok = if needs_content { self.parsed(idx)?.is_some() } else { true };
            if !parsed_ok {
                gone = true;
                continue;
            }
            let mb = self.selected.as_ref().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
            let m: &Msg = &mb.msgs[idx];
            let p = self.cache.get(&msg_uid);
            let mut items: Vec<Vec<u8>> = Vec::new();
            if uid {
                items.push(format!("UID {msg_uid}").into_bytes());
            }
            let mut flags_sent = false;
            for a in attrs {
                let mut item = Vec::new();
                match a {
                    FetchAttr::Uid => {
                        if uid {
                            continue;
                        }
                        item.extend(format!("UID {msg_uid}").bytes());
                    }
                    FetchAttr::Flags => {
                        flags_sent = true;
                        item.extend(format!("FLAGS {}", flag_list(&mb.flags_of(m))).bytes());
                    }
                    FetchAttr::InternalDate => {
                        let t = match p {
                            Some(p) => p.internal,
                            None => std::fs::metadata(mb.file(m)).and_then(|md| md.modified()).map(unix).unwrap_or(0),
                        };
                        item.extend(format!("INTERNALDATE \"{}\"", imap_date_time(t)).bytes());
                    }
                    FetchAttr::Rfc822Size => {
                        let size = match (p, rpost_maildir::parse_filename(&m.name).vsize) {
                            (Some(p), _) => p.raw.len() as u64,
                            (None, Some(v)) => v,
                            (None, None) => std::fs::read(mb.file(m)).map(|v| lf_to_crlf(&v).len() as u64).unwrap_or(0),
                        };
                        item.extend(format!("RFC822.SIZE {size}").bytes());
                    }
                    FetchAttr::Envelope => {
                        item.extend_from_slice(b"ENVELOPE ");
                        item.extend_from_slice(&p.map(|p| p.envelope.clone()).unwrap_or_default());
                    }
                    FetchAttr::BodyStructure => {
                        item.extend_from_slice(b"BODYSTRUCTURE ");
                        item.extend_from_slice(&p.map(|p| p.bodystructure.clone()).unwrap_or_default());
                    }
                    FetchAttr::Body => {
                        item.extend_from_slice(b"BODY ");
                        item.extend_from_slice(&p.map(|p| p.body.clone()).unwrap_or_default());
                    }
                    FetchAttr::Rfc822 | FetchAttr::Rfc822Header | FetchAttr::Rfc822Text => {
                        let Some(p) = p else { continue };
                        let (name, bytes) = match a {
                            FetchAttr::Rfc822 => ("RFC822", &p.raw[..]),
                            FetchAttr::Rfc822Header => ("RFC822.HEADER", &p.raw[p.root.header.0..p.root.header.1]),
                            _ => ("RFC822.TEXT", &p.raw[p.root.body.0..p.root.body.1]),
                        };
                        item.extend(format!("{name} ").bytes());
                        write::literal(&mut item, bytes);
                        self.stats.count_fetch(matches!(a, FetchAttr::Rfc822Header), bytes.len());
                    }
                    FetchAttr::BodySection { section, partial, .. } => {
                        let Some(p) = p else { continue };
                        let bytes = mime::section_bytes(&p.raw, &p.root, section).unwrap_or_default();
                        let mut name = b"BODY[".to_vec();
                        name.extend(section_name(section).bytes());
                        name.push(b']');
                        let bytes = match partial {
                            Some((start, len)) => {
                                name.extend(format!("<{start}>").bytes());
                                let s = (*start as usize).min(bytes.len());
                                let e = s.saturating_add(*len as usize).min(bytes.len());
                                bytes[s..e].to_vec()
                            }
                            None => bytes,
                        };
                        item.extend(name);
                        item.push(b' ');
                        write::literal(&mut item, &bytes);
                        let header_only = matches!(
                            section.text,
                            Some(
                                rpost_imap_proto::SectionText::Header
                                    | rpost_imap_proto::SectionText::HeaderFields(_)
                                    | rpost_imap_proto::SectionText::HeaderFieldsNot(_)
                                    | rpost_imap_proto::SectionText::Mime
                            )
                        );
                        self.stats.count_fetch(header_only, bytes.len());
                    }
                }
                items.push(item);
            }
            if flags_changed && !flags_sent {
                items.push(format!("FLAGS {}", flag_list(&mb.flags_of(m))).into_bytes());
            }
            out.extend(format!("* {seq} FETCH (").bytes());
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(it);
            }
            out.extend_from_slice(b")\r\n");
        }
        if gone {
            return Err(Reply::No("[EXPUNGEISSUED] Some of the requested messages no longer exist.".into()));
        }
        Ok(format!("{} completed.", if uid { "UID FETCH" } else { "Fetch" }))
    }

    fn store(
        &mut self,
        uid: bool,
        set: &SeqSet,
        mode: StoreMode,
        silent: bool,
        flags: &[String],
        out: &mut Vec<u8>,
    ) -> Result<String, Reply> {
        let idxs = self.resolve(uid, set)?;
        let mb = self.selected.as_mut().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
        if mb.read_only {
            return Err(Reply::No("[READ-ONLY] Mailbox is read-only.".into()));
        }
        let given = mb.letters_for(flags).map_err(server_err)?;
        let mut gone = false;
        for idx in idxs {
            if mb.msgs[idx].gone {
                gone = true;
                continue;
            }
            let old = mb.msgs[idx].letters().to_string();
            let new: String = match mode {
                StoreMode::Replace => {
                    // Keep letters IMAP cannot see (P: passed).
                    let mut s: String = old.chars().filter(|c| *c == 'P').collect();
                    s.push_str(&given);
                    s
                }
                StoreMode::Add => format!("{old}{given}"),
                StoreMode::Remove => old.chars().filter(|c| !given.contains(*c)).collect(),
            };
            let new = rpost_maildir::normalize_flags(&new).map_err(|e| server_err(e.into()))?;
            if new != old {
                if new.contains('T') && !old.contains('T') {
                    self.stats.deleted += 1;
                }
                if !mb.set_letters(idx, &new).map_err(server_err)? {
                    gone = true;
                    continue;
                }
            }
            if !silent {
                let m = &mb.msgs[idx];
                let uid_part = if uid { format!("UID {} ", m.uid) } else { String::new() };
                out.extend(format!("* {} FETCH ({uid_part}FLAGS {})\r\n", idx + 1, flag_list(&mb.flags_of(m))).bytes());
            }
        }
        if gone {
            return Err(Reply::No("[EXPUNGEISSUED] Some of the messages no longer exist.".into()));
        }
        Ok(format!("{} completed.", if uid { "UID STORE" } else { "Store" }))
    }

    fn copy(&mut self, uid: bool, set: &SeqSet, name: &str, mv: bool, out: &mut Vec<u8>) -> Result<String, Reply> {
        let idxs = self.resolve(uid, set)?;
        let dest = self.mailbox(name).map_err(Reply::No)?;
        if !dest.exists() {
            return Err(Reply::No("[TRYCREATE] Mailbox doesn't exist.".into()));
        }
        let mb = self.selected.as_mut().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
        if mv && mb.read_only {
            return Err(Reply::No("[READ-ONLY] Mailbox is read-only.".into()));
        }
        let mut dest_kw = dest.keywords().unwrap_or_default();
        let (mut src_uids, mut dst_uids) = (Vec::new(), Vec::new());
        let mut moved = Vec::new();
        for idx in idxs {
            let m = mb.msgs[idx].clone();
            if m.gone {
                continue;
            }
            let Some((content, mtime)) = mb.read(&m).map_err(server_err)? else { continue };
            let flags: Vec<String> = mb.flags_of(&m).into_iter().filter(|f| f != "\\Recent").collect();
            let letters = letters_for(&dest, &mut dest_kw, &flags).map_err(server_err)?;
            let d = dest.deliver(&mut &content[..], &letters).map_err(|e| Reply::No(format!("[SERVERBUG] {e}")))?;
            let _ = set_mtime(&d.path, mtime);
            src_uids.push(m.uid);
            if let Some(u) = d.uid {
                dst_uids.push(u);
            }
            moved.push(idx);
        }
        if SPECIAL_USE.iter().any(|(n, a)| *a == "\\Trash" && *n == name) {
            self.stats.trashed += src_uids.len() as u64;
        }
        let validity = dest.uidlist().ok().flatten().map(|l| l.uid_validity);
        let code = match validity {
            Some(v) if !src_uids.is_empty() && dst_uids.len() == src_uids.len() => {
                format!("[COPYUID {v} {} {}] ", uid_set(&src_uids), uid_set(&dst_uids))
            }
            _ => String::new(),
        };
        if mv {
            if !code.is_empty() {
                out.extend(format!("* OK {code}Moved UIDs.\r\n").bytes());
            }
            let n = mb.remove_files(&moved).map_err(server_err)?;
            self.stats.expunged += n as u64;
            return Ok("Move completed.".into());
        }
        Ok(format!("{code}Copy completed."))
    }

    fn search(
        &mut self,
        uid: bool,
        charset: Option<&str>,
        key: &SearchKey,
        out: &mut Vec<u8>,
    ) -> Result<String, Reply> {
        if let Some(cs) = charset
            && !matches!(cs, "UTF-8" | "US-ASCII")
        {
            return Err(Reply::No("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset.".into()));
        }
        let n = self.selected.as_ref().map_or(0, |m| m.msgs.len());
        let mut hits = Vec::new();
        for idx in 0..n {
            let gone = self.selected.as_ref().is_some_and(|m| m.msgs[idx].gone);
            if gone {
                continue;
            }
            let mut ctx = Ctx { idx, text: None };
            if self.matches(key, &mut ctx)? {
                let mb = self.selected.as_ref().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
                hits.push(if uid { mb.msgs[idx].uid } else { idx as u32 + 1 });
            }
        }
        let mut line = b"* SEARCH".to_vec();
        for h in hits {
            line.extend(format!(" {h}").bytes());
        }
        line.extend_from_slice(b"\r\n");
        out.extend(line);
        Ok(format!("{} completed.", if uid { "UID SEARCH" } else { "Search" }))
    }

    fn matches(&mut self, key: &SearchKey, ctx: &mut Ctx) -> Result<bool, Reply> {
        use SearchKey as K;
        let (seq, m, largest_uid, count, recent) = {
            let mb = self.selected.as_ref().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
            let m = mb.msgs[ctx.idx].clone();
            let recent = mb.recent.contains(&m.uid);
            (ctx.idx as u32 + 1, m, mb.msgs.last().map_or(0, |l| l.uid), mb.msgs.len() as u32, recent)
        };
        let flag = |l: char| m.has(l);
        Ok(match key {
            K::All => true,
            K::Answered => flag('R'),
            K::Deleted => flag('T'),
            K::Draft => flag('D'),
            K::Flagged => flag('F'),
            K::Seen => flag('S'),
            K::Unanswered => !flag('R'),
            K::Undeleted => !flag('T'),
            K::Undraft => !flag('D'),
            K::Unflagged => !flag('F'),
            K::Unseen => !flag('S'),
            K::Recent => recent,
            K::New => recent && !flag('S'),
            K::Old => !recent,
            K::Keyword(k) | K::Unkeyword(k) => {
                let mb = self.selected.as_ref().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
                let has = mb.flags_of(&m).iter().any(|f| f.eq_ignore_ascii_case(k));
                if matches!(key, K::Keyword(_)) { has } else { !has }
            }
            K::Uid(set) => set.contains(m.uid, largest_uid),
            K::SeqSet(set) => set.contains(seq, count),
            K::Not(k) => !self.matches(k, ctx)?,
            K::Or(a, b) => self.matches(a, ctx)? || self.matches(b, ctx)?,
            K::And(v) => {
                for k in v {
                    if !self.matches(k, ctx)? {
                        return Ok(false);
                    }
                }
                true
            }
            K::Larger(n) | K::Smaller(n) => {
                let size = match rpost_maildir::parse_filename(&m.name).vsize {
                    Some(v) => v,
                    None => self.parsed(ctx.idx)?.map_or(0, |p| p.raw.len() as u64),
                };
                if matches!(key, K::Larger(_)) { size > *n } else { size < *n }
            }
            K::Before(d) | K::On(d) | K::Since(d) => {
                let mb = self.selected.as_ref().ok_or_else(|| Reply::Bad("No mailbox selected.".into()))?;
                let t = std::fs::metadata(mb.file(&m)).and_then(|md| md.modified()).map(unix).unwrap_or(0);
                let day = t.div_euclid(86400);
                match key {
                    K::Before(_) => day < d.days(),
                    K::On(_) => day == d.days(),
                    _ => day >= d.days(),
                }
            }
            K::SentBefore(d) | K::SentOn(d) | K::SentSince(d) => {
                let Some(p) = self.parsed(ctx.idx)? else { return Ok(false) };
                let hdr = &p.raw[p.root.header.0..p.root.header.1];
                let parsed = mail_parser::MessageParser::default().parse_headers(hdr);
                let Some(dt) = parsed.as_ref().and_then(|m| m.date()) else { return Ok(false) };
                let day = rpost_imap_proto::types::days_from_civil(dt.year as i64, dt.month as i64, dt.day as i64);
                match key {
                    K::SentBefore(_) => day < d.days(),
                    K::SentOn(_) => day == d.days(),
                    _ => day >= d.days(),
                }
            }
            K::From(s) | K::To(s) | K::Cc(s) | K::Bcc(s) | K::Subject(s) => {
                let field = match key {
                    K::From(_) => "From",
                    K::To(_) => "To",
                    K::Cc(_) => "Cc",
                    K::Bcc(_) => "Bcc",
                    _ => "Subject",
                };
                let Some(p) = self.parsed(ctx.idx)? else { return Ok(false) };
                header_contains(&p.raw[p.root.header.0..p.root.header.1], field, s)
            }
            K::Header(field, s) => {
                let Some(p) = self.parsed(ctx.idx)? else { return Ok(false) };
                header_contains(&p.raw[p.root.header.0..p.root.header.1], field, s)
            }
            K::Body(s) | K::Text(s) => {
                if ctx.text.is_none() {
                    let Some(p) = self.parsed(ctx.idx)? else { return Ok(false) };
                    ctx.text = Some(search_text(p));
                }
                let (hdr, body) = ctx.text.as_ref().map(|(h, b)| (h.as_str(), b.as_str())).unwrap_or_default();
                let needle = s.to_lowercase();
                body.contains(&needle) || (matches!(key, K::Text(_)) && hdr.contains(&needle))
            }
        })
    }
}

/// Per-message search state (decoded text, computed once per message).
struct Ctx {
    idx: usize,
    text: Option<(String, String)>,
}

/// Lower-cased decoded header text and body text of a message.
fn search_text(p: &Parsed) -> (String, String) {
    let msg = mail_parser::MessageParser::default().parse(&p.raw[..]);
    let mut hdr = String::from_utf8_lossy(&p.raw[p.root.header.0..p.root.header.1]).to_lowercase();
    let mut body = String::new();
    if let Some(m) = &msg {
        if let Some(s) = m.subject() {
            hdr.push('\n');
            hdr.push_str(&s.to_lowercase());
        }
        for i in 0..m.text_body_count().max(m.html_body_count()) {
            if let Some(t) = m.body_text(i) {
                body.push_str(&t.to_lowercase());
                body.push('\n');
            }
        }
    }
    body.push_str(&String::from_utf8_lossy(&p.raw[p.root.body.0..p.root.body.1]).to_lowercase());
    (hdr, body)
}

/// Whether a header field's value (raw or decoded) contains `needle` (case-insensitive); an
/// empty needle matches every message that has the field.
fn header_contains(hdr: &[u8], field: &str, needle: &str) -> bool {
    let needle = needle.to_lowercase();
    let fields = mime::header_fields(hdr);
    let values: Vec<&String> = fields.iter().filter(|(k, _)| k.eq_ignore_ascii_case(field)).map(|(_, v)| v).collect();
    if values.is_empty() {
        return false;
    }
    if values.iter().any(|v| v.to_lowercase().contains(&needle)) {
        return true;
    }
    // Decoded (RFC 2047) form.
    let mut block = Vec::new();
    for v in &values {
        block.extend_from_slice(format!("{field}: {v}\r\n").as_bytes());
    }
    block.extend_from_slice(b"\r\n");
    let Some(m) = mail_parser::MessageParser::default().parse_headers(&block[..]) else { return false };
    let decoded: String = match field.to_ascii_lowercase().as_str() {
        "subject" => m.subject().unwrap_or("").to_string(),
        "from" | "to" | "cc" | "bcc" => {
            let a = match field.to_ascii_lowercase().as_str() {
                "from" => m.from(),
                "to" => m.to(),
                "cc" => m.cc(),
                _ => m.bcc(),
            };
            a.map(|a| {
                a.iter()
                    .map(|x| format!("{} <{}>", x.name.as_deref().unwrap_or(""), x.address.as_deref().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
        }
        _ => String::new(),
    };
    decoded.to_lowercase().contains(&needle)
}

fn section_name(s: &rpost_imap_proto::Section) -> String {
    use rpost_imap_proto::SectionText as T;
    let mut out: Vec<String> = s.part.iter().map(u32::to_string).collect();
    if let Some(t) = &s.text {
        out.push(match t {
            T::Header => "HEADER".into(),
            T::Text => "TEXT".into(),
            T::Mime => "MIME".into(),
            T::HeaderFields(f) => format!("HEADER.FIELDS ({})", f.join(" ")),
            T::HeaderFieldsNot(f) => format!("HEADER.FIELDS.NOT ({})", f.join(" ")),
        });
    }
    out.join(".")
}

/// `1:3,7` for a list of UIDs (in the given order: COPYUID pairs them up by position).
fn uid_set(uids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { uids[i].to_string() } else { format!("{}:{}", uids[i], uids[j]) });
        i = j + 1;
    }
    parts.join(",")
}

fn ch_expunged_uids(_mb: &Mailbox, _ch: &Changes) -> Vec<u32> {
    // Expunged messages' UIDs are never reused, so stale cache entries are harmless; they
    // fall out of the LRU.
    Vec::new()
}

/// A refused command.
#[derive(Debug)]
enum Reply {
    No(String),
    Bad(String),
}

fn server_err(e: MailboxError) -> Reply {
    tracing::warn!("{e}");
    Reply::No("[SERVERBUG] Internal error occurred. Refer to server log for more information.".into())
}

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    unix(SystemTime::now())
}

#[cfg(test)]
mod tests;

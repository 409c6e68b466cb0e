//! One pass over `maildrop/`: every complete file becomes a committed queue file in
//! `incoming/`, or goes to `corrupt/` with a warning.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::OFlag;
use rpost_config::{ConfigError, Params};
use rpost_queue::{ClientInfo, Envelope, Queue, QueueId, RcptStatus, Recipient};

use crate::headers::{Missing, complete};
use crate::maildrop::{self, DropFile};

/// Files without the complete mark are left alone this long (a slow writer), then removed.
pub const STALE_INCOMPLETE: Duration = Duration::from_secs(24 * 3600);

/// pickup's view of main.cf.
#[derive(Debug)]
pub struct Settings {
    pub myhostname: String,
    pub myorigin: String,
    pub mail_name: String,
    /// message_size_limit; 0 = none.
    pub size_limit: u64,
    pub undisclosed: String,
    pub domains: rpost_address::Domains,
    pub expand: rpost_lookup::ExpandOptions,
    /// authorized_submit_users (root and mail_owner are always allowed).
    pub submit_users: Vec<String>,
    /// local_login_sender_maps; `Err` when a table failed to open (then nothing is taken
    /// until a reload fixes it: unchecked senders would be a silent policy bypass).
    pub login_sender_maps: Result<Vec<Box<dyn rpost_lookup::Table>>, String>,
    /// empty_address_local_login_sender_maps_lookup_key.
    pub null_sender_key: String,
    /// mail_owner's uid, when it exists.
    pub owner_uid: Option<u32>,
}

/// Why pickup cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PickupError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Lookup(#[from] rpost_lookup::LookupError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl Settings {
    pub fn from_params(p: &Params) -> Result<Settings, PickupError> {
        Ok(Settings {
            myhostname: p.get("myhostname")?,
            myorigin: p.get("myorigin")?,
            mail_name: p.get("mail_name")?,
            size_limit: p.get_size("message_size_limit")?,
            undisclosed: p.get("undisclosed_recipients_header")?,
            domains: rpost_address::Domains::from_params(p)?,
            expand: rpost_lookup::ExpandOptions::from_params(p)?,
            submit_users: p.get_list("authorized_submit_users")?,
            login_sender_maps: rpost_lookup::open_param(p, "local_login_sender_maps").map_err(|e| {
                tracing::warn!("local_login_sender_maps: {e}");
                format!("local_login_sender_maps: {e}")
            }),
            null_sender_key: p.get("empty_address_local_login_sender_maps_lookup_key")?,
            owner_uid: nix::unistd::User::from_name(&p.get("mail_owner")?).ok().flatten().map(|u| u.uid.as_raw()),
        })
    }
}

/// What happened to one maildrop entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Queued(QueueId),
    /// Not complete yet (or vanished): left for a later pass.
    Skipped,
    /// Refused and moved to corrupt/ (or removed when it could not be moved).
    Corrupt(String),
    /// An incomplete file older than [`STALE_INCOMPLETE`], removed.
    Stale,
    /// Could not be queued now (queue or table trouble): left in maildrop for a later pass,
    /// and the rest of this pass is skipped (they would fail the same way).
    Deferred(String),
    /// This message cannot be queued as it is (an alias loop or limit, a queue-file format
    /// limit): left in maildrop, with a warning each pass, for the admin; other files go on.
    Held(String),
}

/// Why [`Pickup::enqueue`] failed.
#[derive(Debug)]
enum EnqueueError {
    /// The system (queue directory, a table): retry later.
    Transient(String),
    /// This message.
    Message(String),
}

fn transient(e: impl std::fmt::Display) -> EnqueueError {
    EnqueueError::Transient(e.to_string())
}

/// The maildrop reader.
#[derive(Debug)]
pub struct Pickup {
    queue: Queue,
    settings: Settings,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> PickupError + '_ {
    move |source| PickupError::Io { path: path.to_path_buf(), source }
}

impl Pickup {
    pub fn new(queue_root: PathBuf, settings: Settings) -> Pickup {
        Pickup { queue: Queue::new(queue_root), settings }
    }

    pub fn maildrop(&self) -> PathBuf {
        self.queue.root().join("maildrop")
    }

    /// One pass: handles every entry once; returns the IDs queued.
    pub fn scan(&self) -> Result<Vec<QueueId>, PickupError> {
        let dir = self.maildrop();
        let mut names: Vec<_> =
            fs::read_dir(&dir).map_err(io_at(&dir))?.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        let mut queued = Vec::new();
        for name in names {
            match self.take(&name) {
                Outcome::Queued(id) => queued.push(id),
                Outcome::Deferred(why) => {
                    // The rest would most likely fail the same way: try again at the next wakeup.
                    tracing::warn!("maildrop/{}: {why}; will retry", name.to_string_lossy());
                    break;
                }
                Outcome::Held(why) => {
                    tracing::warn!("maildrop/{}: cannot be queued: {why}; left in maildrop", name.to_string_lossy());
                }
                _ => {}
            }
        }
        Ok(queued)
    }

    /// Handles one maildrop entry. Never panics on what a user put there.
    pub fn take(&self, name: &OsStr) -> Outcome {
        let path = self.maildrop().join(name);
        let shown = format!("maildrop/{}", name.to_string_lossy());
        let Ok(lmeta) = fs::symlink_metadata(&path) else { return Outcome::Skipped };
        if !lmeta.file_type().is_file() {
            return self.corrupt(&path, name, &shown, "not a regular file".into());
        }
        // Owner execute bit = complete (set by the writer after fsync).
        if lmeta.mode() & 0o100 == 0 {
            let age =
                SystemTime::now().duration_since(lmeta.modified().unwrap_or(SystemTime::now())).unwrap_or_default();
            if age > STALE_INCOMPLETE {
                tracing::warn!(
                    "{shown}: incomplete file from uid {} older than {}h: removed",
                    lmeta.uid(),
                    age.as_secs() / 3600
                );
                let _ = fs::remove_file(&path);
                return Outcome::Stale;
            }
            return Outcome::Skipped;
        }
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::Skipped,
            // What a user can do to a file of theirs (chmod, swap in a symlink or a device):
            // refused. Anything else (EMFILE, ENFILE, EIO...) is our trouble: try again later.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(
                        libc_errno::EACCES
                            | libc_errno::EPERM
                            | libc_errno::ELOOP
                            | libc_errno::ENXIO
                            | libc_errno::ENODEV
                    )
                ) =>
            {
                return self.corrupt(&path, name, &shown, format!("uid={}: cannot open: {e}", lmeta.uid()));
            }
            Err(e) => return Outcome::Deferred(format!("open: {e}")),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return self.corrupt(&path, name, &shown, format!("fstat: {e}")),
        };
        // The identity is the owner of the file we opened, never what the file says.
        let uid = meta.uid();
        if !meta.file_type().is_file() {
            return self.corrupt(&path, name, &shown, "not a regular file".into());
        }
        if meta.nlink() != 1 {
            // A hard link to someone else's file would lend us its owner.
            return self.corrupt(&path, name, &shown, format!("uid={uid}: file has {} links", meta.nlink()));
        }
        if meta.dev() != lmeta.dev() || meta.ino() != lmeta.ino() {
            return Outcome::Skipped; // replaced between lstat and open: next pass
        }
        let limit = match self.settings.size_limit {
            0 => u64::MAX,
            n => n.saturating_add(maildrop::MAX_ENVELOPE).saturating_add(maildrop::END.len() as u64),
        };
        if meta.len() > limit {
            return self.corrupt(&path, name, &shown, format!("uid={uid}: file too large ({} bytes)", meta.len()));
        }
        let mut bytes = Vec::with_capacity(meta.len().min(1 << 24) as usize);
        if let Err(e) = (&file).take(limit.saturating_add(1)).read_to_end(&mut bytes) {
            // Not the content's fault: keep the file, go on with the others.
            return Outcome::Held(format!("uid={uid}: read: {e}"));
        }
        let parsed = match maildrop::parse(&bytes, self.settings.size_limit) {
            Ok(d) => d,
            Err(e) => return self.corrupt(&path, name, &shown, format!("uid={uid}: {e}")),
        };
        let user = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
            Ok(Some(u)) => u,
            Ok(None) => {
                return self.corrupt(&path, name, &shown, format!("uid={uid}: no such user in the password file"));
            }
            // NSS trouble (an LDAP server down...) says nothing about the message.
            Err(e) => return Outcome::Deferred(format!("uid={uid}: user lookup: {e}")),
        };
        match self.authorize(&parsed, uid, &user.name) {
            Ok(None) => {}
            Ok(Some(refusal)) => return self.corrupt(&path, name, &shown, refusal),
            Err(e) => return Outcome::Deferred(e),
        }
        match self.enqueue(&parsed, uid, &user) {
            Ok(id) => {
                if let Err(e) = fs::remove_file(&path).and_then(|()| sync_dir(&self.maildrop())) {
                    // The message is queued; if the file stays it will be queued again:
                    // a duplicate, never a loss.
                    tracing::error!("{shown}: remove after queueing as {id}: {e}");
                }
                drop(file);
                Outcome::Queued(id)
            }
            Err(EnqueueError::Transient(e)) => Outcome::Deferred(e),
            Err(EnqueueError::Message(e)) => Outcome::Held(e),
        }
    }

    /// authorized_submit_users and local_login_sender_maps, as Postfix's postdrop/sendmail
    /// apply them: `Ok(Some(why))` refuses, `Err` is a table failure (try again later).
    fn authorize(&self, d: &DropFile, uid: u32, login: &str) -> Result<Option<String>, String> {
        let s = &self.settings;
        let privileged = uid == 0 || Some(uid) == s.owner_uid;
        if !privileged && !crate::policy::user_listed(&s.submit_users, login).map_err(|e| e.to_string())? {
            return Ok(Some(format!("User {login}({uid}) is not allowed to submit mail")));
        }
        let maps = s.login_sender_maps.as_ref().map_err(Clone::clone)?;
        let sender = d.sender.as_deref().unwrap_or(login);
        if !crate::policy::sender_allowed(maps, login, sender, &s.null_sender_key).map_err(|e| e.to_string())? {
            return Ok(Some(format!(
                "User {login}({uid}) is not allowed to submit mail as <{sender}> (local_login_sender_maps)"
            )));
        }
        Ok(None)
    }

    /// Builds the envelope and writes the queue file, durable before this returns.
    fn enqueue(&self, d: &DropFile, uid: u32, user: &nix::unistd::User) -> Result<QueueId, EnqueueError> {
        let s = &self.settings;
        let qualify = |a: &str| {
            if a.contains('@') || s.myorigin.is_empty() { a.to_string() } else { format!("{a}@{}", s.myorigin) }
        };
        let sender = match &d.sender {
            Some(x) if x.is_empty() => String::new(),
            Some(x) => qualify(x),
            None => qualify(&user.name),
        };
        if let Some(broken) = &s.domains.virtual_alias_maps.broken {
            // Delivering unexpanded would send mail to the wrong place.
            return Err(EnqueueError::Transient(format!("virtual alias table unavailable: {broken}")));
        }
        let mut recipients: Vec<Recipient> = Vec::new();
        for raw in &d.recipients {
            let original = qualify(raw);
            let targets = match rpost_lookup::expand_virtual(&s.domains.virtual_alias_maps.tables, &original, &s.expand)
            {
                Ok(rpost_lookup::Expansion::Unchanged) => vec![original.clone()],
                Ok(rpost_lookup::Expansion::To(list)) => list,
                Err(e) => {
                    let why = format!("virtual alias expansion of {original}: {e}");
                    // Loops, limits and unusable results belong to this message; a table
                    // that does not answer is everyone's problem.
                    return Err(match e {
                        rpost_lookup::LookupError::AliasLoop { .. }
                        | rpost_lookup::LookupError::RecursionLimit { .. }
                        | rpost_lookup::LookupError::ExpansionLimit { .. }
                        | rpost_lookup::LookupError::BadResult { .. }
                        | rpost_lookup::LookupError::KeyTooLong { .. } => EnqueueError::Message(why),
                        _ => EnqueueError::Transient(why),
                    });
                }
            };
            for address in targets {
                if recipients.iter().any(|r| r.address == address) {
                    continue;
                }
                recipients.push(Recipient {
                    address,
                    original: original.clone(),
                    orcpt: None,
                    notify: d.notify,
                    status: RcptStatus::Pending,
                });
            }
        }
        let now = SystemTime::now();
        // Non-ASCII addresses need an SMTPUTF8 path onward (RFC 6531).
        let smtputf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.address.is_ascii());
        let env = Envelope {
            sender: sender.clone(),
            recipients,
            arrival: now,
            client: ClientInfo { name: "localhost".into(), addr: "127.0.0.1".into(), ..ClientInfo::default() },
            body: None,
            smtputf8,
            ret: d.ret,
            envid: d.envid.clone(),
            attrs: vec![("rewrite_context".into(), "local".into()), ("uid".into(), uid.to_string())],
        };
        let mut msg = self.queue.create(&env).map_err(|e| match e {
            rpost_queue::QueueError::Envelope(why) => EnqueueError::Message(why),
            e => transient(e),
        })?;
        let id = msg.id().clone();
        let date = rpost_log::rfc5322_date(now);
        let received =
            format!("Received: by {} ({}, from userid {uid})\r\n\tid {id}; {date}\r\n", s.myhostname, s.mail_name);
        let gecos;
        let fullname = match &d.fullname {
            Some(f) => Some(f.as_str()),
            None => {
                gecos = user.gecos.to_string_lossy().split(',').next().unwrap_or("").trim().to_string();
                Some(gecos.as_str()).filter(|g| !g.is_empty())
            }
        };
        let message_id = format!("{}.{id}@{}", message_id_stamp(now), s.myhostname);
        let done = complete(
            &d.content,
            &Missing {
                date: &date,
                message_id: &message_id,
                sender: &sender,
                fullname,
                undisclosed: &s.undisclosed,
                origin: &s.myorigin,
            },
        );
        msg.write_content(received.as_bytes()).map_err(transient)?;
        msg.write_content(&done.content).map_err(transient)?;
        let id = msg.commit().map_err(transient)?;
        tracing::info!("{id}: uid={uid} from=<{sender}>");
        tracing::info!("{id}: message-id=<{}>", done.message_id);
        Ok(id)
    }

    /// Moves a refused file to corrupt/ (`maildrop-NAME`), or removes it when even that fails.
    fn corrupt(&self, path: &Path, name: &OsStr, shown: &str, why: String) -> Outcome {
        let safe: String = name
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' { c } else { '_' })
            .take(100)
            .collect();
        let corrupt = self.queue.root().join("corrupt");
        let target = corrupt.join(format!("maildrop-{safe}"));
        let target =
            if target.exists() { corrupt.join(format!("maildrop-{safe}-{}", QueueId::generate())) } else { target };
        match fs::rename(path, &target) {
            Ok(()) => {
                let _ = sync_dir(&corrupt);
                let _ = sync_dir(&self.maildrop());
                tracing::warn!(
                    "{shown}: {why}: moved to {}",
                    target.strip_prefix(self.queue.root()).unwrap_or(&target).display()
                );
            }
            Err(e) => {
                let removed = fs::remove_file(path).or_else(|_| fs::remove_dir(path));
                tracing::warn!(
                    "{shown}: {why}; cannot move it to corrupt/ ({e}): {}",
                    if removed.is_ok() { "removed" } else { "left in place" }
                );
            }
        }
        Outcome::Corrupt(why)
    }
}

/// `YYYYMMDDhhmmss` in UTC, as Postfix's Message-ID prefix.
fn message_id_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// errno values (the libc crate is not a dependency here; nix re-exports them).
mod libc_errno {
    pub const EPERM: i32 = nix::errno::Errno::EPERM as i32;
    pub const ENXIO: i32 = nix::errno::Errno::ENXIO as i32;
    pub const EACCES: i32 = nix::errno::Errno::EACCES as i32;
    pub const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;
    pub const ELOOP: i32 = nix::errno::Errno::ELOOP as i32;
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new().read(true).custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits()).open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile_dir::Dir, Pickup) {
        let dir = tempfile_dir::Dir::new();
        let q = Queue::new(dir.0.clone());
        q.ensure_dirs().unwrap();
        fs::create_dir_all(dir.0.join("maildrop")).unwrap();
        let settings = Settings {
            myhostname: "mail.example.test".into(),
            myorigin: "example.test".into(),
            mail_name: "rpost".into(),
            size_limit: 1000,
            undisclosed: String::new(),
            domains: rpost_address::Domains::default(),
            expand: rpost_lookup::ExpandOptions::default(),
            submit_users: vec!["static:anyone".into()],
            login_sender_maps: Ok(vec![rpost_lookup::open("static:*").unwrap()]),
            null_sender_key: "<>".into(),
            owner_uid: None,
        };
        let p = Pickup::new(dir.0.clone(), settings);
        (dir, p)
    }

    /// A temporary directory without a dev-dependency.
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let p = std::env::temp_dir().join(format!("rpost-pickup-{}-{n}", std::process::id()));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn put(p: &Pickup, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = p.maildrop().join(name);
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn good(content: &str) -> Vec<u8> {
        format!("RPOSTDROP 1\nsender a@x.test\nrcpt bob\nsize {}\n\n{content}END\n", content.len()).into_bytes()
    }

    #[test]
    fn a_good_file_is_queued_and_removed() {
        let (_d, p) = setup();
        let path = put(&p, "A1", &good("Subject: s\n\nbody\n"), 0o744);
        let Outcome::Queued(id) = p.take(OsStr::new("A1")) else { panic!("not queued") };
        assert!(!path.exists());
        let f = p.queue.open(rpost_queue::QueueDir::Incoming, &id).unwrap();
        assert_eq!(f.envelope.sender, "a@x.test");
        assert_eq!(f.envelope.recipients[0].address, "bob@example.test", "bare recipients get @myorigin");
        let text = String::from_utf8(f.content().unwrap()).unwrap();
        assert!(text.starts_with("Received: by mail.example.test (rpost, from userid "), "{text}");
        assert!(text.contains(&format!("\tid {id}; ")) && text.contains("\r\nSubject: s\r\nDate: "), "{text}");
        assert!(text.ends_with("\r\n\r\nbody\r\n"), "{text}");
    }

    #[test]
    fn sender_policy_is_enforced() {
        let (_d, mut p) = setup();
        let me = nix::unistd::User::from_uid(nix::unistd::getuid()).unwrap().unwrap().name;
        let spec = format!("inline:{{ {{ {me} = {me} @example.test }} }}");
        p.settings.login_sender_maps = Ok(vec![rpost_lookup::open(&spec).unwrap()]);
        // a@x.test is not among the senders this login may use.
        put(&p, "P1", &good("x\n"), 0o744);
        match p.take(OsStr::new("P1")) {
            Outcome::Corrupt(why) => assert!(why.contains("is not allowed to submit mail as <a@x.test>"), "{why}"),
            other => panic!("{other:?}"),
        }
        let own = "RPOSTDROP 1\nsender any@example.test\nrcpt bob\nsize 2\n\nx\nEND\n";
        put(&p, "P2", own.as_bytes(), 0o744);
        assert!(matches!(p.take(OsStr::new("P2")), Outcome::Queued(_)));
        // No sender line: the login name itself, which is allowed.
        put(&p, "P3", b"RPOSTDROP 1\nrcpt bob\nsize 2\n\nx\nEND\n", 0o744);
        assert!(matches!(p.take(OsStr::new("P3")), Outcome::Queued(_)));
        // A broken table stops pickup from taking anything rather than skipping the check.
        p.settings.login_sender_maps = Err("local_login_sender_maps: broken".into());
        put(&p, "P4", &good("x\n"), 0o744);
        assert!(matches!(p.take(OsStr::new("P4")), Outcome::Deferred(_)));
        assert!(p.maildrop().join("P4").exists());
    }

    #[test]
    fn a_message_that_cannot_be_queued_does_not_block_the_others() {
        let (_d, mut p) = setup();
        p.settings.domains.virtual_alias_maps.tables =
            vec![rpost_lookup::open("inline:{ loop1@x.test=loop2@x.test, loop2@x.test=loop1@x.test }").unwrap()];
        put(&p, "H1", b"RPOSTDROP 1\nrcpt loop1@x.test\nsize 2\n\nx\nEND\n", 0o744);
        put(&p, "H2", &good("x\n"), 0o744);
        assert!(matches!(p.take(OsStr::new("H1")), Outcome::Held(why) if why.contains("loop")));
        assert_eq!(p.scan().unwrap().len(), 1, "H2 still queued");
        assert!(p.maildrop().join("H1").exists(), "H1 kept for the admin");
    }

    #[test]
    fn incomplete_files_wait() {
        let (_d, p) = setup();
        let path = put(&p, "B1", &good("x\n"), 0o600);
        assert_eq!(p.take(OsStr::new("B1")), Outcome::Skipped);
        assert!(path.exists());
    }

    #[test]
    fn hostile_entries_go_to_corrupt() {
        let (_d, p) = setup();
        let corrupt = p.queue.root().join("corrupt");
        // Garbage, oversized, hard-linked, symlink, FIFO, directory.
        put(&p, "G1", b"garbage", 0o744);
        put(&p, "G2", &good(&"x".repeat(2000)), 0o744);
        let linked = put(&p, "G3", &good("x\n"), 0o744);
        fs::hard_link(&linked, p.queue.root().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.maildrop().join("G4")).unwrap();
        nix::unistd::mkfifo(&p.maildrop().join("G5"), nix::sys::stat::Mode::from_bits_truncate(0o744)).unwrap();
        fs::create_dir(p.maildrop().join("G6")).unwrap();
        let bad = [
            ("G1", "bad magic"),
            ("G2", "exceeds message_size_limit"),
            ("G3", "2 links"),
            ("G4", "not a regular file"),
            ("G5", "not a regular file"),
            ("G6", "not a regular file"),
        ];
        for (name, why) in bad {
            match p.take(OsStr::new(name)) {
                Outcome::Corrupt(r) => assert!(r.contains(why), "{name}: {r}"),
                other => panic!("{name}: {other:?}"),
            }
            assert!(fs::symlink_metadata(p.maildrop().join(name)).is_err(), "{name} left in maildrop");
            assert!(fs::symlink_metadata(corrupt.join(format!("maildrop-{name}"))).is_ok(), "{name} not kept");
        }
        // Nothing was queued, and a good file after all that still goes through.
        assert!(p.queue.scan(rpost_queue::QueueDir::Incoming).unwrap().is_empty());
        put(&p, "OK", &good("x\n"), 0o744);
        assert_eq!(p.scan().unwrap().len(), 1);
    }

    #[test]
    fn message_id_stamp_is_utc_civil_time() {
        // 2026-11-21 23:19:51 UTC
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_303_191);
        assert_eq!(message_id_stamp(t), "20261121231951");
        assert_eq!(message_id_stamp(SystemTime::UNIX_EPOCH), "19700101000000");
    }
}

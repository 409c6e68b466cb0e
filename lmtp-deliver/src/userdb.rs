//! Recipients to mail users: the userdb lookup through authd, the home directory, the Maildir
//! location and the uid/gid the mail is written for.
//!
//! lmtp-deliver reads no password or user data itself: authd is the only process that does
//! (DESIGN.md). Each recipient is a `USER` request on authd's auth-userdb socket
//! (`auth_socket_path`, default `private/auth-userdb`), as Dovecot's lmtp asks its auth
//! service. Order, for a recipient `local+detail@domain`:
//! 1. the detail is split off at `recipient_delimiter`;
//! 2. a local part or domain that could not stand as one path component (`/`, `.`, `..`,
//!    control characters) is refused with `550 5.1.3` before anything is asked;
//! 3. authd is asked for `local@domain` (service `lmtp`); it applies `auth_username_format`
//!    and answers with the user's canonical name and fields (`uid`, `gid`, `home`, `mail`,
//!    `quota_rule`, already `%`-expanded), `NOTFOUND` (`550 5.1.1`), or `FAIL`;
//! 4. what is missing comes from `mail_home`, `mail_location` (default `maildir:~/Maildir`),
//!    `mail_uid` and `mail_gid`, expanded here with rpost-auth-proto's `%` variables.
//!
//! authd down, slow (`ipc_timeout`, at most 60 s here) or failing gives `451 4.3.0`: the
//! client retries later and nothing is lost. Connections to authd are kept and reused; one
//! that fails is dropped and the request is tried once more on a fresh one.
//!
//! Security: the local part and domain come from the network. Values expanded here into path
//! templates (`mail_home`, `mail_location`) must be single safe path components (authd does
//! the same for its `home`/`mail`), and the resulting Maildir path must be absolute without
//! `..`; otherwise the recipient is refused, so a local part like `../../etc` never names a
//! directory outside the configured base. Values from authd are not expanded again: a `%` in
//! a user name stays a `%`.

use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rpost_auth_proto::fields::{ExpandError, Vars, expand};
use rpost_auth_proto::{MasterClient, MasterReply, Params, param};
use rpost_config::{ConfigError, Params as Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What a recipient resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(User),
    /// Not a user here: `550 5.1.1`.
    Unknown,
    /// The address cannot be used in a path: `550 5.1.3`.
    BadAddress(String),
    /// Lookup or configuration failure: `451 4.3.0`; the reason is for the log.
    TempFail(String),
}

/// A mail user, ready for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name as authd canonicalised it (auth_username_format).
    pub name: String,
    pub home: Option<PathBuf>,
    /// INBOX: the Maildir++ store root.
    pub maildir: PathBuf,
    /// uid and gid the files are given (only when running as root).
    pub owner: Option<(u32, u32)>,
    /// Storage quota in bytes (userdb `quota_rule=*:storage=...`).
    pub quota: Option<u64>,
    /// The address extension without its delimiter (`detail` of `user+detail@domain`).
    pub detail: Option<String>,
}

/// The service name lmtp-deliver gives authd (`%s`, Dovecot's `service=lmtp`).
pub const SERVICE: &str = "lmtp";
/// Idle authd connections kept for reuse.
const POOL_MAX: usize = 16;
/// The longest wait for one authd answer, whatever ipc_timeout says: a client waits for
/// the RCPT reply meanwhile.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A value that may stand as one path component: not `.` or `..`, no `/`, no control
/// characters. (Empty is allowed: `/var/vmail//alice` is still inside `/var/vmail`.)
fn safe_component(v: &str) -> bool {
    v != "." && v != ".." && !v.chars().any(|c| c == '/' || c.is_control())
}

/// One connection to authd's auth-userdb socket.
#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    client: MasterClient,
}

impl Conn {
    async fn open(path: &Path) -> std::io::Result<Conn> {
        let mut stream = UnixStream::connect(path).await?;
        let (client, hello) = MasterClient::new();
        stream.write_all(hello.as_bytes()).await?;
        Ok(Conn { stream, client })
    }

    /// One `USER` request and its answer.
    async fn user(&mut self, name: &str) -> Result<MasterReply, String> {
        let (id, line) = self.client.user(name, SERVICE);
        self.stream.write_all(line.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(reply) = self.client.poll().map_err(|e| e.to_string())? {
                // Requests go one at a time and a connection given up on is dropped, so
                // an answer to another id is a confused server.
                if reply.id() != id {
                    return Err(format!("authd answered request {} instead of {id}", reply.id()));
                }
                return Ok(reply);
            }
            let n = self.stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("authd closed the connection".into());
            }
            self.client.feed(&buf[..n]);
        }
    }
}

/// The user database side of lmtp-deliver: an auth-userdb client and the local defaults.
#[derive(Debug)]
pub struct UserDb {
    socket: PathBuf,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    delimiter: String,
    mail_home: String,
    mail_location: String,
    mail_uid: String,
    mail_gid: String,
    first_valid_uid: u32,
    first_valid_gid: u32,
    /// Running as root: deliveries need a uid/gid to give the files to.
    privileged: bool,
}

/// Why the user database cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// `auth_socket_path`: absolute, or a name in `queue_directory/private/`.
pub fn socket_path(p: &Config) -> Result<PathBuf, ConfigError> {
    let name = p.get("auth_socket_path")?;
    if name.starts_with('/') {
        return Ok(PathBuf::from(name));
    }
    Ok(Path::new(&p.get("queue_directory")?).join("private").join(name))
}

impl UserDb {
    /// Reads the parameters; authd is first asked at the first RCPT. `privileged`: the
    /// process runs as root and must give each delivery's files to the mail user.
    pub fn from_params(p: &Config, privileged: bool) -> Result<UserDb, UserDbError> {
        for name in ["auth_passdb", "auth_userdb"] {
            if !p.get(name)?.trim().is_empty() {
                tracing::debug!("{name} is authd's: lmtp-deliver asks authd on auth_socket_path");
            }
        }
        let num = |name: &str| -> Result<u32, ConfigError> { Ok(p.get_int(name)?.clamp(0, u32::MAX as i64) as u32) };
        let timeout = p.get_time("ipc_timeout")?.min(MAX_WAIT);
        Ok(UserDb {
            socket: socket_path(p)?,
            timeout,
            idle: Mutex::new(Vec::new()),
            delimiter: p.get("recipient_delimiter")?,
            mail_home: p.get("mail_home")?,
            mail_location: p.get("mail_location")?,
            mail_uid: p.get("mail_uid")?,
            mail_gid: p.get("mail_gid")?,
            first_valid_uid: num("first_valid_uid")?,
            first_valid_gid: num("first_valid_gid")?,
            privileged,
        })
    }

    /// The auth-userdb socket asked.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Resolves the recipient `local@domain` (`domain` empty for a bare local part).
    pub async fn lookup(&self, local: &str, domain: &str) -> Lookup {
        let (user_part, ext) = rpost_lookup::split_extension(local, &self.delimiter);
        let detail = ext.map(|e| e[e.chars().next().map_or(0, char::len_utf8)..].to_string()).filter(|d| !d.is_empty());
        for part in [user_part, domain] {
            if !safe_component(part) {
                return Lookup::BadAddress(format!(
                    "address part {:?} cannot be used in a mailbox path",
                    printable(part)
                ));
            }
        }
        let full = if domain.is_empty() { user_part.to_string() } else { format!("{user_part}@{domain}") };
        match self.ask(&full).await {
            Ok(MasterReply::User { user, fields, .. }) => {
                let name = if user.is_empty() { full } else { user };
                self.resolve(name, &fields, detail)
            }
            Ok(MasterReply::NotFound { .. }) => Lookup::Unknown,
            Ok(MasterReply::Fail { reason, .. }) => {
                Lookup::TempFail(format!("authd: {}", reason.as_deref().unwrap_or("lookup failed")))
            }
            Ok(other) => Lookup::TempFail(format!("authd: unexpected reply {other:?}")),
            Err(e) => Lookup::TempFail(format!("auth-userdb {}: {e}", self.socket.display())),
        }
    }

    /// Asks authd, on an idle connection when there is one. A reused connection may have
    /// been closed by an authd restart: then once more on a fresh one.
    async fn ask(&self, name: &str) -> Result<MasterReply, String> {
        let pooled = self.idle.lock().expect("pool lock").pop();
        if let Some(conn) = pooled {
            match self.ask_on(conn, name).await {
                Ok(r) => return Ok(r),
                Err(e) => tracing::debug!("reused auth-userdb connection failed ({e}): reconnecting"),
            }
        }
        let conn = match tokio::time::timeout(self.timeout, Conn::open(&self.socket)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(format!("connect: {e} (is the auth-userdb service in master.cf?)")),
            Err(_) => return Err("connect: timed out".into()),
        };
        self.ask_on(conn, name).await
    }

    /// One request on `conn`; the connection goes back to the pool only after a clean answer.
    async fn ask_on(&self, mut conn: Conn, name: &str) -> Result<MasterReply, String> {
        match tokio::time::timeout(self.timeout, conn.user(name)).await {
            Ok(Ok(reply)) => {
                let mut idle = self.idle.lock().expect("pool lock");
                if idle.len() < POOL_MAX {
                    idle.push(conn);
                }
                Ok(reply)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer in {}s", self.timeout.as_secs())),
        }
    }

    /// A user from authd's fields (already expanded there) and the local defaults.
    pub fn resolve(&self, name: String, fields: &Params, detail: Option<String>) -> Lookup {
        match self.build(name, fields, detail) {
            Ok(u) => Lookup::Found(u),
            Err(ExpandError::Unsafe(v)) => {
                Lookup::BadAddress(format!("address part {:?} cannot be used in a mailbox path", printable(&v)))
            }
            Err(ExpandError::Template(e)) => Lookup::TempFail(e),
        }
    }

    fn build(&self, name: String, f: &Params, detail: Option<String>) -> Result<User, ExpandError> {
        let field = |k: &str| param(f, k).filter(|v| !v.is_empty());
        let vars = Vars { user: &name, service: SERVICE, ..Vars::default() };
        let home = match field("home") {
            Some(h) => Some(h.to_string()),
            None if !self.mail_home.is_empty() => Some(expand(&self.mail_home, &vars, true)?),
            None => None,
        };
        if let Some(h) = &home {
            if !h.starts_with('/') {
                return Err(ExpandError::Template(format!("relative home directory {h:?} not supported")));
            }
            check_path(Path::new(h)).map_err(ExpandError::Template)?;
        }
        let maildir = match field("mail") {
            Some(m) => location_path(m, home.as_deref(), None)?,
            None => {
                let vars = Vars { home: home.as_deref(), ..vars };
                let location = if self.mail_location.is_empty() { "maildir:~/Maildir" } else { &self.mail_location };
                location_path(location, home.as_deref(), Some(&vars))?
            }
        };
        let quota = match field("quota_rule") {
            Some(r) => parse_quota_rule(r).map_err(ExpandError::Template)?,
            None => None,
        };
        let owner = if self.privileged { Some(self.owner(field("uid"), field("gid"))?) } else { None };
        Ok(User { name, home: home.map(PathBuf::from), maildir, owner, quota, detail })
    }

    fn owner(&self, uid: Option<&str>, gid: Option<&str>) -> Result<(u32, u32), ExpandError> {
        let uid_spec = uid.or(Some(self.mail_uid.as_str()).filter(|s| !s.is_empty()));
        let Some(uid_spec) = uid_spec else {
            return Err(ExpandError::Template(
                "no uid: set mail_uid (or uid in the userdb); lmtp-deliver runs as root and does not write mail as root"
                    .into(),
            ));
        };
        let gid_spec = gid.or(Some(self.mail_gid.as_str()).filter(|s| !s.is_empty()));
        let (uid, primary_gid) = rpost_privilege::resolve_uid(uid_spec, gid_spec.is_none())
            .map_err(|e| ExpandError::Template(format!("{e} (mail_uid or userdb uid)")))?;
        let gid = match gid_spec {
            Some(g) => rpost_privilege::resolve_gid(g)
                .map_err(|e| ExpandError::Template(format!("{e} (mail_gid or userdb gid)")))?,
            None => primary_gid
                .ok_or_else(|| ExpandError::Template("no gid: set mail_gid (or gid in the userdb)".into()))?,
        };
        if uid == 0 || uid < self.first_valid_uid {
            return Err(ExpandError::Template(format!(
                "Mail access for users with UID {uid} not permitted (see first_valid_uid)"
            )));
        }
        if gid < self.first_valid_gid {
            return Err(ExpandError::Template(format!(
                "Mail access for users with GID {gid} not permitted (see first_valid_gid)"
            )));
        }
        Ok((uid, gid))
    }
}

fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).take(200).collect()
}

/// The INBOX path of a `mail_location` (`maildir:~/Maildir`, `maildir:/var/mail/%d/%n`,
/// with Dovecot's `:KEY=value` options after the path). `vars`: expand `%` variables (a
/// local template); `None` for a value authd already expanded.
pub fn location_path(location: &str, home: Option<&str>, vars: Option<&Vars<'_>>) -> Result<PathBuf, ExpandError> {
    let Some(rest) = location.strip_prefix("maildir:") else {
        return Err(ExpandError::Template(format!("mail_location {location:?}: only maildir: is supported")));
    };
    let mut parts = rest.split(':');
    let path_template = parts.next().unwrap_or("");
    for opt in parts {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        match k.to_ascii_uppercase().as_str() {
            "LAYOUT" if !v.eq_ignore_ascii_case("maildir++") => {
                return Err(ExpandError::Template(format!("mail_location LAYOUT={v}: only maildir++ is supported")));
            }
            "INBOX" => return Err(ExpandError::Template("mail_location INBOX= is not supported".into())),
            // INDEX=, CONTROL=, VOLATILEDIR=, UTF-8 and the like are Dovecot's own business.
            _ => {}
        }
    }
    let expanded = match vars {
        Some(v) => expand(path_template, v, true)?,
        None => path_template.to_string(),
    };
    let path = if expanded == "~" || expanded.starts_with("~/") {
        let Some(home) = home else {
            return Err(ExpandError::Template(format!("mail_location {location:?} uses ~ but the user has no home")));
        };
        PathBuf::from(format!("{home}{}", &expanded[1..]))
    } else {
        PathBuf::from(expanded)
    };
    check_path(&path).map_err(ExpandError::Template)?;
    Ok(path)
}

/// Absolute, no `..`, no NUL.
fn check_path(p: &Path) -> Result<(), String> {
    if !p.is_absolute() {
        return Err(format!("mail location {} is not an absolute path", p.display()));
    }
    if p.components().any(|c| c == Component::ParentDir) || p.to_string_lossy().contains('\0') {
        return Err(format!("mail location {} contains \"..\"", p.display()));
    }
    Ok(())
}

/// Dovecot's `quota_rule` for the whole store: `*:storage=1G` (bare numbers are kilobytes,
/// suffixes b k M G T), `*:bytes=N` (bytes). Other mailbox rules, `messages=`, relative and
/// percentage limits are not supported and ignored. `Ok(None)` = no limit.
pub fn parse_quota_rule(rule: &str) -> Result<Option<u64>, String> {
    let Some((mailbox, limits)) = rule.split_once(':') else {
        return Err(format!("quota_rule {rule:?}: expected <mailbox>:<limits>"));
    };
    if mailbox != "*" {
        return Ok(None);
    }
    let mut limit = None;
    for item in limits.split([':', ' ']).filter(|s| !s.is_empty()) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        let default_unit = match key {
            "storage" => 1024,
            "bytes" => 1,
            _ => continue,
        };
        if value.starts_with(['+', '-']) || value.ends_with('%') {
            continue;
        }
        let digits = value.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = value[..digits].parse().map_err(|_| format!("quota_rule {rule:?}: bad number"))?;
        let unit: u64 = match value[digits..].to_ascii_lowercase().as_str() {
            "" => default_unit,
            "b" => 1,
            "k" | "kb" => 1 << 10,
            "m" | "mb" => 1 << 20,
            "g" | "gb" => 1 << 30,
            "t" | "tb" => 1 << 40,
            other => return Err(format!("quota_rule {rule:?}: unknown unit {other:?}")),
        };
        limit = if n == 0 { None } else { Some(n.saturating_mul(unit)) };
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpost_auth_proto::{MasterRequest, MasterServer};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn vars(user: &str) -> Vars<'_> {
        Vars { user, service: SERVICE, home: Some("/home/x"), ..Vars::default() }
    }

    #[test]
    fn address_parts_never_escape_a_path() {
        for user in ["../../etc@example.test", "a/b@example.test", "..@example.test", "x@..", "x@a/b", "a\nb@x", ".@x"]
        {
            let r = location_path("maildir:/var/vmail/%d/%n", None, Some(&vars(user)));
            assert!(matches!(r, Err(ExpandError::Unsafe(_))), "{user}");
        }
        // Dots inside a name are fine.
        assert_eq!(
            location_path("maildir:/v/%d/%n", None, Some(&vars("first.last@example.test"))).unwrap(),
            PathBuf::from("/v/example.test/first.last")
        );
    }

    #[test]
    fn mail_locations() {
        let v = vars("alice@example.test");
        let home = Some("/home/x");
        assert_eq!(location_path("maildir:~/Maildir", home, Some(&v)).unwrap(), PathBuf::from("/home/x/Maildir"));
        assert_eq!(location_path("maildir:~", home, Some(&v)).unwrap(), PathBuf::from("/home/x"));
        assert_eq!(
            location_path("maildir:/var/mail/%d/%n:LAYOUT=maildir++:INDEX=/idx/%u", home, Some(&v)).unwrap(),
            PathBuf::from("/var/mail/example.test/alice")
        );
        // A value authd expanded is not expanded again.
        assert_eq!(location_path("maildir:/m/100%n", home, None).unwrap(), PathBuf::from("/m/100%n"));
        for bad in
            ["mbox:~/mail", "maildir:~/M:LAYOUT=fs", "maildir:relative/path", "maildir:/a/../b", "maildir:~/M:INBOX=/x"]
        {
            assert!(location_path(bad, home, Some(&v)).is_err(), "{bad}");
            assert!(location_path(bad, home, None).is_err(), "{bad}");
        }
        assert!(location_path("maildir:~/M", None, None).is_err());
    }

    #[test]
    fn quota_rules() {
        assert_eq!(parse_quota_rule("*:storage=1G").unwrap(), Some(1 << 30));
        assert_eq!(parse_quota_rule("*:storage=100M").unwrap(), Some(100 << 20));
        assert_eq!(parse_quota_rule("*:storage=2048").unwrap(), Some(2 << 20), "kilobytes");
        assert_eq!(parse_quota_rule("*:bytes=1000").unwrap(), Some(1000));
        assert_eq!(parse_quota_rule("*:storage=0").unwrap(), None);
        assert_eq!(parse_quota_rule("*:storage=1k:messages=10").unwrap(), Some(1024));
        assert_eq!(parse_quota_rule("Trash:storage=+100M").unwrap(), None);
        assert_eq!(parse_quota_rule("*:storage=10%").unwrap(), None);
        assert!(parse_quota_rule("storage=1G").is_err());
        assert!(parse_quota_rule("*:storage=1Q").is_err());
    }

    fn params(extra: &[(&str, &str)]) -> Config {
        let mut p = Config::empty();
        for (k, v) in extra {
            p.set(k, v);
        }
        p
    }

    fn fields(f: &[(&str, &str)]) -> Params {
        f.iter().map(|(k, v)| (k.to_string(), Some(v.to_string()))).collect()
    }

    fn found(l: Lookup) -> User {
        match l {
            Lookup::Found(u) => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn authd_fields_and_local_defaults() {
        let p = params(&[("mail_home", "/var/vmail/%d/%n"), ("mail_location", "maildir:~/mail")]);
        let db = UserDb::from_params(&p, false).unwrap();
        let a = found(db.resolve("alice@example.test".into(), &Params::new(), Some("lists".into())));
        assert_eq!(a.maildir, PathBuf::from("/var/vmail/example.test/alice/mail"));
        assert_eq!(a.home, Some(PathBuf::from("/var/vmail/example.test/alice")));
        assert_eq!(a.detail.as_deref(), Some("lists"));
        assert_eq!((a.owner, a.quota), (None, None));
        let b = found(db.resolve(
            "bob@example.test".into(),
            &fields(&[
                ("uid", "1234"),
                ("gid", "1235"),
                ("home", "/srv/bob"),
                ("mail", "maildir:~/M"),
                ("quota_rule", "*:storage=1M"),
            ]),
            None,
        ));
        assert_eq!(b.maildir, PathBuf::from("/srv/bob/M"));
        assert_eq!(b.quota, Some(1 << 20));
        // authd's values are used as they are, but must still be absolute and without "..".
        assert!(matches!(db.resolve("c".into(), &fields(&[("home", "rel/c")]), None), Lookup::TempFail(_)));
        assert!(matches!(db.resolve("c".into(), &fields(&[("home", "/v/../c")]), None), Lookup::TempFail(_)));
        assert!(matches!(db.resolve("c".into(), &fields(&[("mail", "maildir:/v/../c")]), None), Lookup::TempFail(_)));
        // A canonical name that cannot be a path component never reaches mail_home.
        assert!(matches!(db.resolve("../x@y".into(), &Params::new(), None), Lookup::BadAddress(_)));

        // Running as root: authd's uid/gid, else mail_uid/mail_gid; never root.
        let db = UserDb::from_params(&p, true).unwrap();
        let bob = fields(&[("uid", "1234"), ("gid", "1235")]);
        assert_eq!(found(db.resolve("bob@example.test".into(), &bob, None)).owner, Some((1234, 1235)));
        assert!(
            matches!(db.resolve("a@example.test".into(), &Params::new(), None), Lookup::TempFail(e) if e.contains("mail_uid"))
        );
        let mut p2 = p.clone();
        p2.set("mail_uid", "0");
        p2.set("mail_gid", "0");
        let db = UserDb::from_params(&p2, true).unwrap();
        assert!(
            matches!(db.resolve("a@example.test".into(), &Params::new(), None), Lookup::TempFail(e) if e.contains("UID 0 not permitted"))
        );
        p2.set("mail_uid", "nobody");
        p2.set("mail_gid", "65534");
        let db = UserDb::from_params(&p2, true).unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid.as_raw();
        assert_eq!(found(db.resolve("a@example.test".into(), &Params::new(), None)).owner, Some((nobody, 65534)));
        p2.set("mail_uid", "no-such-user-here");
        let db = UserDb::from_params(&p2, true).unwrap();
        assert!(
            matches!(db.resolve("a@example.test".into(), &Params::new(), None), Lookup::TempFail(e) if e.contains("unknown user"))
        );
    }

    /// A small auth-userdb server: `alice@example.test` exists (the name is answered lower
    /// case, as authd's auth_username_format does), `fail@example.test` fails, others are
    /// unknown. Counts connections; closes each after `per_conn` requests.
    async fn userdb_server(path: PathBuf, per_conn: usize, conns: Arc<AtomicUsize>) {
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            conns.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                s.write_all(rpost_auth_proto::master::server_hello(1).as_bytes()).await.unwrap();
                let mut server = MasterServer::new();
                let mut buf = [0u8; 1024];
                let mut served = 0;
                while served < per_conn {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    server.feed(&buf[..n]);
                    while let Ok(Some(MasterRequest::User { id, user, params })) = server.next_request() {
                        assert_eq!(param(&params, "service"), Some("lmtp"));
                        let user = user.to_lowercase();
                        let r = match user.as_str() {
                            "alice@example.test" => {
                                MasterReply::User { id, user, fields: fields(&[("quota_rule", "*:storage=1k")]) }
                            }
                            "fail@example.test" => MasterReply::Fail { id, reason: Some("db down".into()) },
                            _ => MasterReply::NotFound { id },
                        };
                        s.write_all(r.to_line().as_bytes()).await.unwrap();
                        served += 1;
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn lookups_through_authd() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("auth-userdb");
        let p = params(&[
            ("auth_socket_path", sock.to_str().unwrap()),
            ("mail_home", "/var/vmail/%d/%n"),
            ("recipient_delimiter", "+"),
        ]);
        let db = UserDb::from_params(&p, false).unwrap();
        assert_eq!(db.socket(), sock);
        // authd down: a temporary failure that names the socket.
        assert!(matches!(db.lookup("alice", "example.test").await, Lookup::TempFail(e) if e.contains("auth-userdb")));

        let conns = Arc::new(AtomicUsize::new(0));
        tokio::spawn(userdb_server(sock.clone(), 3, conns.clone()));
        while !sock.exists() {
            tokio::task::yield_now().await;
        }
        let a = found(db.lookup("Alice+lists", "Example.TEST").await);
        assert_eq!(a.name, "alice@example.test");
        assert_eq!(a.maildir, PathBuf::from("/var/vmail/example.test/alice/Maildir"));
        assert_eq!((a.detail.as_deref(), a.quota), (Some("lists"), Some(1024)));
        assert_eq!(db.lookup("carol", "example.test").await, Lookup::Unknown);
        assert!(matches!(db.lookup("fail", "example.test").await, Lookup::TempFail(e) if e.contains("db down")));
        assert_eq!(conns.load(Ordering::SeqCst), 1, "one connection, reused");
        // The server closed that connection after three requests: the next lookup notices
        // and asks again on a fresh one, transparently.
        assert!(matches!(db.lookup("alice", "example.test").await, Lookup::Found(_)));
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        // Path tricks are refused before authd is asked.
        for (l, d) in [("../../etc", "example.test"), ("a/b", "example.test"), ("..", "x"), ("x", ".."), ("a\nb", "x")]
        {
            assert!(matches!(db.lookup(l, d).await, Lookup::BadAddress(_)), "{l}@{d}");
        }
    }
}

//! imapd::login - the login layer shared by imapd and pop3d
//!
//! # SUMMARY
//! ```text
//! let mode = login::prepare_process(&daemon)?;               // before serve(): see SECURITY
//! let auth = Arc::new(Authenticator::new(Settings::from_params(daemon.params(), Service::Pop3)?));
//! // in the session (async):
//! let mechs = auth.mechanisms().await?;                        // CAPA / CAPABILITY AUTH=
//! let user = auth.plain("alice", "secret", &conn).await?;      // USER/PASS, LOGIN
//! let (mut ex, step) = auth.begin("PLAIN", Some(b64), &conn).await?;   // AUTH / AUTHENTICATE
//! let step = ex.respond(b64_answer).await?;                    // Step::Challenge | Step::Done(user)
//! let logged_in = auth.lookup(&user, &conn).await?;            // userdb: uid, gid, home, mail
//! logged_in.enter()?;                                          // become the mail user, for good
//! ```
//!
//! # DESCRIPTION
//! Authentication is authd's (or a real Dovecot's) business: every attempt opens the auth
//! client socket (`private/$login_auth_socket_path`, default `private/auth`) and runs one
//! SASL exchange there with `service=imap|pop3`, `lip`/`lport`/`rip`/`rport` and `secured`
//! (TLS, or a loopback/same-address client), so authd applies `auth_mechanisms`,
//! `disable_plaintext_auth`, its failure delay and its per-address penalty exactly as for
//! Dovecot's login processes. After `OK user=<canonical name>`, the user is looked up on the
//! auth-userdb socket (`private/$auth_socket_path`, default `private/auth-userdb`) for `uid`,
//! `gid`, `home` and `mail`; missing fields come from `mail_uid`, `mail_gid`, `mail_home` and
//! `mail_location` (default `maildir:~/Maildir`; `%u %n %d %s %h` and `%L`/`%U` are expanded,
//! `:INBOX=` and `:LAYOUT=maildir++` are understood; see [`location`]). The uid and gid must
//! lie within `first_valid_uid`..`last_valid_uid` (and the gid limits); uid 0 never serves.
//!
//! Log lines have Dovecot's shape, under the daemon's syslog name:
//! `Login: user=<alice>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2, mpid=4242, TLS` and, for
//! clients that never log in, `Aborted login (auth failed, 1 attempts in 2 secs): user=<alice>,
//! method=PLAIN, rip=..., lip=..., TLS` or `Disconnected (no auth attempts in 10 secs): ...`
//! ([`Attempts`]).
//!
//! # SECURITY
//! Process model (Dovecot's `service_count = 1` "high-security" login mode, folded into one
//! process): the service runs with master.cf's unpriv column `n` (root), one client per
//! process. Before reading a byte from the client, [`prepare_process`] switches real and
//! effective ids to `mail_owner`, keeping only the saved uid 0 ([`rpost_privilege::suspend_root`]):
//! before login the process holds no mail user's rights and can touch no mailbox. After a
//! successful login and userdb lookup, [`LoggedIn::enter`] switches real, effective and
//! saved uid/gid to the mail user for good ([`rpost_privilege::become_user`]), and the
//! session then runs as that user; the process exits after it ([`finish_process`]), so no
//! later client is ever served with another user's rights. The residual risk is code
//! execution before login regaining root through the saved uid; pre-login code is safe Rust
//! (command parsing, rustls) with bounded lines, and the auth exchange happens in authd. A
//! split into an unprivileged pre-login process that hands the connection to a per-user
//! process (Dovecot's imap-login/imap pair) would close that gap. imapd has taken the first
//! half of that step: its login processes serve many clients and never become a mail user;
//! a logged-in session moves to a worker process that runs as the mail user from exec on
//! (see `imap::worker`). pop3d keeps the one-client model described here.
//! Passwords and SASL data are never logged; user names are logged with control characters
//! replaced. The userdb is trusted (it is root's configuration), the client is not: user names
//! cannot escape mail path templates (`%n` of `../x` is refused).
//!
//! When the daemon does not run as root (trial runs, tests as non-root), no switch is
//! possible: only users whose uid is the process's own can log in; others get a temporary
//! failure and a log line saying why.
//!
//! # CONFIGURATION
//! login_auth_socket_path, auth_socket_path, mail_location, mail_home, mail_uid, mail_gid,
//! first_valid_uid, last_valid_uid, first_valid_gid, last_valid_gid, disable_plaintext_auth,
//! ssl (`no`, `yes`, `required`), ssl_cert, ssl_key (else the default certificate
//! `rmaster check` creates), mail_owner, queue_directory.
//!
//! # STANDARDS
//! RFC 4422 (SASL), RFC 4616 (PLAIN), Dovecot's auth client and auth-userdb protocols and
//! its `mail_location`, `service_count = 1` login process model and login log lines.

pub mod authconn;
pub mod location;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpost_auth_proto::client::AuthRequest;
use rpost_config::Params;

use authconn::{Answer, AuthConn, UserdbAnswer};
use location::UserRules;

/// How long one step with authd may take (its failure delay and penalties are a few seconds).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(60);

/// The service name sent to authd (`service=`), Dovecot's `%s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Imap,
    Pop3,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Imap => "imap",
            Service::Pop3 => "pop3",
        }
    }
}

/// Why a login did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The credentials were refused (or the mechanism, or plaintext without TLS). `reason`
    /// is authd's text for the client.
    #[error("authentication failed{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Failed { reason: Option<String>, user: Option<String> },
    /// authd said it could not decide now (`temp`).
    #[error("temporary authentication failure{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    TempFailed { reason: Option<String> },
    /// authd is unreachable or broke its protocol.
    #[error("{0}")]
    AuthServer(String),
    /// The user authenticated but has no userdb entry.
    #[error("user {0} authenticated but is unknown to the userdb")]
    UnknownUser(String),
    /// The user cannot be served (bad uid, mail location...); a configuration problem.
    #[error("user {user}: {reason}")]
    BadUser { user: String, reason: String },
    /// Switching to the mail user failed.
    #[error("cannot switch to the mail user: {0}")]
    Privilege(#[from] rpost_privilege::PrivError),
    /// The service is set up in a way a login daemon cannot run (master.cf columns).
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Config(#[from] rpost_config::ConfigError),
    #[error("{0}")]
    Tls(#[from] rpost_tls::TlsError),
}

impl LoginError {
    /// A failure the client caused (wrong password), as opposed to a server-side problem.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, LoginError::Failed { .. })
    }
}

/// Dovecot's `ssl` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    No,
    Yes,
    /// Every authentication needs TLS (even from loopback), as Dovecot's `ssl = required`.
    Required,
}

/// The login settings of one daemon.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: Service,
    pub auth_client_socket: PathBuf,
    pub auth_userdb_socket: PathBuf,
    pub rules: UserRules,
    pub disable_plaintext_auth: bool,
    pub ssl: SslMode,
    /// The server TLS configuration, when TLS is on and a certificate was loaded.
    pub tls: Option<Arc<rpost_tls::rustls::ServerConfig>>,
    pub timeout: Duration,
}

fn socket_path(p: &Params, name: &str) -> Result<PathBuf, rpost_config::ConfigError> {
    let v = p.get(name)?;
    if v.starts_with('/') {
        return Ok(PathBuf::from(v));
    }
    Ok(PathBuf::from(p.get("queue_directory")?).join("private").join(v))
}

fn num(p: &Params, name: &str) -> Result<u32, rpost_config::ConfigError> {
    Ok(p.get_int(name)?.clamp(0, u32::MAX as i64) as u32)
}

impl Settings {
    /// Reads the settings and loads the certificate (call before privileges change: the key
    /// may be readable by root only). TLS problems are warnings with `ssl = yes` (no TLS is
    /// offered) and errors with `ssl = required`.
    pub fn from_params(p: &Params, service: Service) -> Result<Settings, LoginError> {
        let ssl = match p.get("ssl")?.to_ascii_lowercase().as_str() {
            "no" => SslMode::No,
            "required" => SslMode::Required,
            _ => SslMode::Yes,
        };
        let tls = if ssl == SslMode::No {
            None
        } else {
            match load_tls(p) {
                Ok(cfg) => Some(cfg),
                Err(e) if ssl == SslMode::Required => return Err(e),
                Err(e) => {
                    tracing::warn!("{e}: TLS is not offered");
                    None
                }
            }
        };
        Ok(Settings {
            service,
            auth_client_socket: socket_path(p, "login_auth_socket_path")?,
            auth_userdb_socket: socket_path(p, "auth_socket_path")?,
            rules: UserRules {
                mail_location: p.get("mail_location")?,
                mail_home: p.get("mail_home")?,
                mail_uid: p.get("mail_uid")?,
                mail_gid: p.get("mail_gid")?,
                first_valid_uid: num(p, "first_valid_uid")?,
                last_valid_uid: num(p, "last_valid_uid")?,
                first_valid_gid: num(p, "first_valid_gid")?,
                last_valid_gid: num(p, "last_valid_gid")?,
            },
            disable_plaintext_auth: p.get_bool("disable_plaintext_auth")?,
            ssl,
            tls,
            timeout: AUTH_TIMEOUT,
        })
    }
}

/// `ssl_cert`/`ssl_key` (Dovecot's `<file` form or PEM text), else the pair `rmaster check`
/// generates under `$config_directory/tls/`.
fn load_tls(p: &Params) -> Result<Arc<rpost_tls::rustls::ServerConfig>, LoginError> {
    let cert = p.get("ssl_cert")?;
    let id = if !cert.trim().is_empty() {
        rpost_tls::Identity::from_dovecot(&cert, &p.get("ssl_key")?)?
    } else {
        let (c, k) = rpost_tls::default_identity_paths(p.get("config_directory")?.as_ref());
        rpost_tls::Identity::from_files(&c, &k)?
    };
    Ok(rpost_tls::server_config(&id)?)
}

/// The client connection as the login layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub local: Option<SocketAddr>,
    /// `None` for a UNIX-domain client.
    pub remote: Option<SocketAddr>,
    /// TLS is active (STARTTLS/STLS done, or implicit TLS).
    pub tls: bool,
}

impl ConnInfo {
    /// Dovecot's "secured": TLS, or a client on loopback or on the server's own address,
    /// where nobody can listen in.
    pub fn secured(&self) -> bool {
        if self.tls {
            return true;
        }
        match self.remote {
            None => true,
            Some(r) => r.ip().is_loopback() || self.local.is_some_and(|l| l.ip() == r.ip()),
        }
    }

    /// The client's address for logs and per-address limits (`local` for a UNIX client).
    pub fn rip(&self) -> String {
        self.remote.map(|r| r.ip().to_string()).unwrap_or_else(|| "local".into())
    }

    fn lip(&self) -> String {
        self.local.map(|l| l.ip().to_string()).unwrap_or_else(|| "local".into())
    }

    /// `rip=..., lip=...` for log lines.
    pub fn addr_fields(&self) -> String {
        format!("rip={}, lip={}", self.rip(), self.lip())
    }

    /// `rip=..., lip=...[, TLS]` for log lines.
    pub fn log_fields(&self) -> String {
        format!("rip={}, lip={}{}", self.rip(), self.lip(), if self.tls { ", TLS" } else { "" })
    }
}

/// What the protocol may offer and accept on this connection.
impl Settings {
    /// Plaintext authentication (USER/PASS, LOGIN, AUTH PLAIN) is allowed here now.
    pub fn plaintext_allowed(&self, conn: &ConnInfo) -> bool {
        match self.ssl {
            SslMode::Required => conn.tls,
            _ => !self.disable_plaintext_auth || conn.secured(),
        }
    }

    /// STARTTLS/STLS can be offered (TLS configured and not active yet).
    pub fn starttls_available(&self, conn: &ConnInfo) -> bool {
        self.tls.is_some() && !conn.tls
    }
}

/// One step of a SASL exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this base64 challenge to the client and pass its answer to [`Exchange::respond`].
    Challenge(String),
    /// Authenticated as this user (authd's canonical name); next: [`Authenticator::lookup`].
    Done(String),
}

/// A SASL exchange in progress with authd.
#[derive(Debug)]
pub struct Exchange {
    conn: AuthConn,
    id: u32,
    pub mech: String,
}

fn step(a: Answer) -> Result<Step, LoginError> {
    match a {
        Answer::Ok(user) => Ok(Step::Done(user)),
        Answer::Cont(data) => Ok(Step::Challenge(data)),
        Answer::Fail { temp: true, reason, .. } => Err(LoginError::TempFailed { reason }),
        Answer::Fail { reason, user, .. } => Err(LoginError::Failed { reason, user }),
    }
}

impl Exchange {
    /// The client's base64 answer to the last challenge.
    pub async fn respond(&mut self, data: &str) -> Result<Step, LoginError> {
        step(self.conn.cont(self.id, data).await?)
    }
}

/// A logged-in user, ready to be served.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub home: Option<PathBuf>,
    /// The store root (INBOX and its Maildir++ folders).
    pub maildir: rpost_maildir::Maildir,
    /// INBOX (the root, or `:INBOX=`).
    pub inbox: rpost_maildir::Maildir,
    /// All userdb fields, for protocol extras (quota_rule...).
    pub fields: rpost_auth_proto::Params,
}

impl LoggedIn {
    /// Switches this process to the mail user for good (see SECURITY). After this the
    /// process must serve only this session: call [`finish_process`] when it ends.
    pub fn enter(&self) -> Result<(), LoginError> {
        match rpost_privilege::become_user(self.uid, self.gid)? {
            rpost_privilege::Became::Switched => {}
            rpost_privilege::Became::AlreadyThere => {
                tracing::debug!("not root: serving {} as uid {}", rpost_auth_proto::printable(&self.user), self.uid)
            }
        }
        if let Some(home) = &self.home {
            // Dovecot chdirs to the home; a missing home is not an error (created on demand).
            let _ = std::env::set_current_dir(home);
        }
        Ok(())
    }

    /// `Login: user=<alice>, method=PLAIN, rip=..., lip=..., mpid=..., TLS`
    pub fn log_line(&self, method: &str, conn: &ConnInfo) -> String {
        format!(
            "Login: user=<{}>, method={}, rip={}, lip={}, mpid={}{}",
            rpost_auth_proto::printable(&self.user),
            method,
            conn.rip(),
            conn.lip(),
            std::process::id(),
            if conn.tls { ", TLS" } else { "" }
        )
    }
}

/// Authenticates users against authd and looks them up in its userdb.
#[derive(Debug)]
pub struct Authenticator {
    pub settings: Settings,
}

impl Authenticator {
    pub fn new(settings: Settings) -> Authenticator {
        Authenticator { settings }
    }

    fn request(&self, mech: &str, initial: Option<&str>, conn: &ConnInfo) -> AuthRequest {
        let mut req = AuthRequest::new(0, mech, self.settings.service.name());
        if let Some(l) = conn.local {
            req = req.with("lip", Some(&l.ip().to_string())).with("lport", Some(&l.port().to_string()));
        }
        if let Some(r) = conn.remote {
            req = req.with("rip", Some(&r.ip().to_string())).with("rport", Some(&r.port().to_string()));
        }
        // ssl=required: only TLS counts as secured, so authd refuses plaintext from loopback too.
        let secured = if self.settings.ssl == SslMode::Required { conn.tls } else { conn.secured() };
        if secured {
            req = req.with("secured", None);
        }
        if let Some(r) = initial {
            req = req.with("resp", Some(r));
        }
        req
    }

    /// The mechanisms authd offers: (name, plaintext). Plaintext ones should be hidden by
    /// the caller when [`Settings::plaintext_allowed`] is false.
    pub async fn mechanisms(&self) -> Result<Vec<(String, bool)>, LoginError> {
        let c = AuthConn::connect(&self.settings.auth_client_socket, self.settings.timeout).await?;
        Ok(c.mechanisms())
    }

    /// Starts a SASL exchange with `mech` (the client's name, any case) and an optional
    /// initial response (base64; `=` for an empty one is the caller's to translate to "").
    pub async fn begin(
        &self,
        mech: &str,
        initial: Option<&str>,
        conn: &ConnInfo,
    ) -> Result<(Exchange, Step), LoginError> {
        let mech = mech.to_ascii_uppercase();
        let mut c = AuthConn::connect(&self.settings.auth_client_socket, self.settings.timeout).await?;
        let (id, answer) = c.auth(self.request(&mech, initial, conn)).await?;
        let s = step(answer)?;
        Ok((Exchange { conn: c, id, mech }, s))
    }

    /// USER/PASS or IMAP LOGIN: PLAIN with the credentials as initial response. Returns the
    /// canonical user name.
    pub async fn plain(&self, user: &str, pass: &str, conn: &ConnInfo) -> Result<String, LoginError> {
        let mut blob = Vec::with_capacity(user.len() + pass.len() + 2);
        blob.push(0);
        blob.extend_from_slice(user.as_bytes());
        blob.push(0);
        blob.extend_from_slice(pass.as_bytes());
        let b64 = rpost_auth_proto::b64_encode(&blob);
        match self.begin("PLAIN", Some(&b64), conn).await? {
            (_, Step::Done(u)) => Ok(u),
            (_, Step::Challenge(_)) => Err(LoginError::AuthServer("auth server asked for more after PLAIN".into())),
        }
    }

    /// The userdb lookup after authentication: the user's ids and mail store.
    pub async fn lookup(&self, user: &str) -> Result<LoggedIn, LoginError> {
        let service = self.settings.service.name();
        match authconn::userdb_lookup(&self.settings.auth_userdb_socket, user, service, self.settings.timeout).await? {
            UserdbAnswer::NotFound => Err(LoginError::UnknownUser(rpost_auth_proto::printable(user))),
            UserdbAnswer::Found { user: name, fields } => {
                let name = if name.is_empty() { user.to_string() } else { name };
                let u = location::resolve(&name, service, &fields, &self.settings.rules)
                    .map_err(|reason| LoginError::BadUser { user: rpost_auth_proto::printable(&name), reason })?;
                let maildir = rpost_maildir::Maildir::open(&u.location.root);
                let inbox = match &u.location.inbox {
                    Some(p) => rpost_maildir::Maildir::open(p),
                    None => maildir.clone(),
                };
                Ok(LoggedIn { user: name, uid: u.uid, gid: u.gid, home: u.home, maildir, inbox, fields })
            }
        }
    }
}

/// Counts a client's authentication attempts for the log line when it leaves without
/// logging in.
#[derive(Debug, Clone)]
pub struct Attempts {
    start: Instant,
    count: u32,
    user: Option<String>,
    method: Option<String>,
}

impl Default for Attempts {
    fn default() -> Self {
        Attempts { start: Instant::now(), count: 0, user: None, method: None }
    }
}

/// How a client that never logged in left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// QUIT/LOGOUT.
    Quit,
    /// The connection dropped.
    Disconnected,
    /// The idle timer ran out.
    Timeout,
}

impl Attempts {
    /// Notes a failed attempt.
    pub fn failed(&mut self, user: Option<&str>, method: &str) {
        self.count += 1;
        if let Some(u) = user {
            self.user = Some(rpost_auth_proto::printable(u));
        }
        self.method = Some(method.to_string());
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Dovecot's line: `Aborted login (auth failed, 1 attempts in 2 secs): user=<alice>,
    /// method=PLAIN, rip=..., lip=..., TLS`.
    pub fn end_line(&self, how: End, conn: &ConnInfo) -> String {
        let secs = self.start.elapsed().as_secs();
        let what = match how {
            End::Quit => "Aborted login",
            End::Disconnected => "Disconnected",
            End::Timeout => "Disconnected: Inactivity",
        };
        let detail = if self.count == 0 {
            format!("no auth attempts in {secs} secs")
        } else {
            format!("auth failed, {} attempts in {secs} secs", self.count)
        };
        let mut s = format!("{what} ({detail}): ");
        if let Some(u) = &self.user {
            s.push_str(&format!("user=<{u}>, "));
        }
        if let Some(m) = &self.method {
            s.push_str(&format!("method={m}, "));
        }
        s.push_str(&conn.log_fields());
        s
    }
}

/// Prepares a login daemon before `serve` (see SECURITY): refuses a chroot (mail homes are
/// outside the queue directory), and when running as root switches to `mail_owner` keeping
/// only the saved uid 0. Returns the skeleton options: one client per process.
pub fn prepare_process(daemon: &rpost_daemon::Daemon, program: &str) -> Result<rpost_daemon::Options, LoginError> {
    let env = daemon.env();
    if env.chroot {
        return Err(LoginError::Setup(format!(
            "{program} cannot run chrooted (mail homes are outside the queue directory): set the master.cf chroot column to n"
        )));
    }
    if env.unpriv {
        tracing::warn!(
            "{program}: the master.cf unpriv column is not n: the process runs as mail_owner and can serve only users with that uid"
        );
    } else {
        let owner = daemon.params().get("mail_owner")?;
        match rpost_privilege::suspend_root(&owner)? {
            rpost_privilege::Suspended::To(id) => {
                tracing::debug!("pre-login: running as {} (uid {}), saved uid 0", id.name, id.uid)
            }
            rpost_privilege::Suspended::NotRoot { uid } => {
                tracing::info!("not started as root: running as uid {uid}; only that uid's users can log in")
            }
        }
    }
    Ok(rpost_daemon::Options { max_clients: 1, ..rpost_daemon::Options::default() })
}

/// Ends the process after a session that ran as a mail user: it must never accept another
/// client with that user's rights.
pub fn finish_process() -> ! {
    rpost_maildir::release_lock_seeds();
    std::process::exit(0)
}

/// Parses an address for [`ConnInfo`] from the daemon's stream.
pub fn conn_info(stream: &rpost_daemon::Stream) -> ConnInfo {
    match stream {
        rpost_daemon::Stream::Tcp { peer, local, .. } => {
            ConnInfo { local: Some(*local), remote: Some(*peer), tls: false }
        }
        rpost_daemon::Stream::Unix(_) => ConnInfo { local: None, remote: None, tls: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ssl: SslMode, disable: bool) -> Settings {
        Settings {
            service: Service::Pop3,
            auth_client_socket: "/nonexistent/auth".into(),
            auth_userdb_socket: "/nonexistent/auth-userdb".into(),
            rules: UserRules::default(),
            disable_plaintext_auth: disable,
            ssl,
            tls: None,
            timeout: AUTH_TIMEOUT,
        }
    }

    fn conn(remote: &str, tls: bool) -> ConnInfo {
        ConnInfo { local: Some("192.0.2.1:110".parse().unwrap()), remote: Some(remote.parse().unwrap()), tls }
    }

    #[test]
    fn plaintext_rules() {
        let s = settings(SslMode::Yes, true);
        assert!(!s.plaintext_allowed(&conn("198.51.100.7:4000", false)));
        assert!(s.plaintext_allowed(&conn("198.51.100.7:4000", true)));
        assert!(s.plaintext_allowed(&conn("127.0.0.1:4000", false)), "loopback counts as secured");
        assert!(s.plaintext_allowed(&conn("192.0.2.1:4000", false)), "the server's own address too");
        assert!(settings(SslMode::Yes, false).plaintext_allowed(&conn("198.51.100.7:4000", false)));
        let req = settings(SslMode::Required, false);
        assert!(!req.plaintext_allowed(&conn("127.0.0.1:4000", false)), "ssl=required: TLS only");
        assert!(req.plaintext_allowed(&conn("127.0.0.1:4000", true)));
    }

    #[test]
    fn auth_request_as_dovecot_login_sends_it() {
        let a = Authenticator::new(settings(SslMode::Yes, true));
        let mut c = rpost_auth_proto::ClientConnection::new(1).0;
        let (_, line) = c.auth(a.request("PLAIN", Some("AGEAYg=="), &conn("127.0.0.1:4000", true)));
        assert_eq!(
            line,
            "AUTH\t1\tPLAIN\tservice=pop3\tlip=192.0.2.1\tlport=110\trip=127.0.0.1\trport=4000\tsecured\tresp=AGEAYg==\n"
        );
        let (_, line) = c.auth(a.request("LOGIN", None, &conn("198.51.100.7:4000", false)));
        assert!(!line.contains("secured"), "{line}");
        let r = Authenticator::new(settings(SslMode::Required, false));
        let (_, line) = c.auth(r.request("PLAIN", None, &conn("127.0.0.1:4000", false)));
        assert!(!line.contains("secured"), "ssl=required: loopback is not enough: {line}");
    }

    #[test]
    fn log_lines() {
        let c = conn("198.51.100.7:4000", true);
        let mut a = Attempts::default();
        assert_eq!(
            a.end_line(End::Disconnected, &c),
            "Disconnected (no auth attempts in 0 secs): rip=198.51.100.7, lip=192.0.2.1, TLS"
        );
        a.failed(Some("al\nice"), "PLAIN");
        assert_eq!(
            a.end_line(End::Quit, &c),
            "Aborted login (auth failed, 1 attempts in 0 secs): user=<al?ice>, method=PLAIN, rip=198.51.100.7, lip=192.0.2.1, TLS"
        );
    }

    #[tokio::test]
    async fn an_absent_auth_server_is_a_server_error_not_a_refusal() {
        let a = Authenticator::new(settings(SslMode::Yes, true));
        let e = a.plain("alice", "pw", &conn("127.0.0.1:1", false)).await.unwrap_err();
        assert!(matches!(e, LoginError::AuthServer(_)), "{e:?}");
        assert!(!e.is_auth_failure());
    }

    /// A scripted authd on both sockets: a LOGIN exchange with two challenges, then the
    /// userdb lookup gives the ids and the mail location.
    #[tokio::test]
    async fn sasl_steps_and_userdb_lookup_against_scripted_sockets() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let dir = std::env::temp_dir().join(format!("rpost-login-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (client_path, userdb_path) = (dir.join("auth"), dir.join("auth-userdb"));
        let auth = tokio::net::UnixListener::bind(&client_path).unwrap();
        let userdb = tokio::net::UnixListener::bind(&userdb_path).unwrap();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            // The first connection only reads the mechanisms (CAPA); the second one logs in.
            for _ in 0..2 {
                let (s, _) = auth.accept().await.unwrap();
                let mut s = BufReader::new(s);
                s.get_mut()
                    .write_all(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\tab\nDONE\n")
                    .await
                    .unwrap();
                let mut replies =
                    ["CONT\t1\tVXNlcm5hbWU6\n", "CONT\t1\tUGFzc3dvcmQ6\n", "OK\t1\tuser=alice@example.test\n"]
                        .into_iter();
                loop {
                    let mut l = String::new();
                    if s.read_line(&mut l).await.unwrap() == 0 {
                        break;
                    }
                    if l.starts_with("AUTH") || l.starts_with("CONT") {
                        seen.push(l);
                        s.get_mut().write_all(replies.next().unwrap().as_bytes()).await.unwrap();
                    }
                }
            }
            let (s, _) = userdb.accept().await.unwrap();
            let mut s = BufReader::new(s);
            s.get_mut().write_all(b"VERSION\t1\t0\nSPID\t1\n").await.unwrap();
            loop {
                let mut l = String::new();
                s.read_line(&mut l).await.unwrap();
                if l.starts_with("USER") {
                    seen.push(l);
                    s.get_mut()
                        .write_all(b"USER\t1\talice@example.test\tuid=5000\tgid=5001\thome=/var/vmail/example.test/alice\tmail=maildir:~/Maildir:INBOX=~/inbox\n")
                        .await
                        .unwrap();
                    break;
                }
            }
            seen
        });
        let settings = Settings {
            auth_client_socket: client_path,
            auth_userdb_socket: userdb_path,
            rules: UserRules { first_valid_uid: 500, ..UserRules::default() },
            ..settings(SslMode::Yes, true)
        };
        let a = Authenticator::new(settings);
        let c = conn("127.0.0.1:4000", true);
        assert_eq!(a.mechanisms().await.unwrap(), vec![("PLAIN".to_string(), true), ("LOGIN".to_string(), true)]);
        let (mut ex, step) = a.begin("login", None, &c).await.unwrap();
        assert_eq!(step, Step::Challenge("VXNlcm5hbWU6".into()));
        assert_eq!(ex.respond("YWxpY2U=").await.unwrap(), Step::Challenge("UGFzc3dvcmQ6".into()));
        let Step::Done(user) = ex.respond("c2VjcmV0").await.unwrap() else { panic!() };
        assert_eq!(user, "alice@example.test");
        drop(ex); // the scripted server serves its sockets one after the other
        let li = a.lookup(&user).await.unwrap();
        assert_eq!((li.uid, li.gid), (5000, 5001));
        assert_eq!(li.maildir.path(), std::path::Path::new("/var/vmail/example.test/alice/Maildir"));
        assert_eq!(li.inbox.path(), std::path::Path::new("/var/vmail/example.test/alice/inbox"));
        assert!(
            li.log_line("LOGIN", &c)
                .starts_with("Login: user=<alice@example.test>, method=LOGIN, rip=127.0.0.1, lip=192.0.2.1, mpid=")
        );
        let seen = server.await.unwrap();
        assert!(seen[0].starts_with("AUTH\t1\tLOGIN\tservice=pop3\t"), "{seen:?}");
        assert!(seen[0].contains("\tsecured"), "{seen:?}");
        assert_eq!(seen[1], "CONT\t1\tYWxpY2U=\n");
        assert_eq!(seen[3], "USER\t1\talice@example.test\tservice=pop3\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}

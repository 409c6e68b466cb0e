//! The tokio driver of one IMAP connection: greeting, TLS (STARTTLS or implicit), the
//! not-authenticated state (LOGIN, AUTHENTICATE through [`crate::login`]), literals'
//! continuation requests, IDLE, timeouts, and the log lines; everything after login is
//! [`super::session::Session`]'s.

use std::sync::Arc;
use std::time::Duration;

use rpost_imap_proto::{Command, CommandBody, Event, Limits, Reader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::session::Session;
use crate::login::{self, Authenticator, ConnInfo, End, LoginError, Step};

/// Autologout after login (RFC 3501 5.4: at least 30 minutes).
pub const AUTOLOGOUT: Duration = Duration::from_secs(30 * 60);
/// Inactivity allowed before login.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(180);
/// How often an IDLE session looks at the Maildir.
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often IDLE syncs fully even when no directory changed its modification time.
pub const IDLE_FULL_SYNC: Duration = Duration::from_secs(30);
/// Invalid commands tolerated before the connection is closed.
const MAX_BAD: u32 = 20;

/// A client stream, plaintext or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the driver needs from the configuration.
#[derive(Debug)]
pub struct Config {
    pub auth: Authenticator,
    pub limits: Limits,
    /// Implicit TLS (port 993): `imapd_tls_wrappermode`.
    pub wrapper: bool,
    /// `imap_capability`: replaces the list after login, or extends it when it starts with `+`.
    pub capability: String,
    pub idle_notify: Duration,
    /// `mail_max_userip_connections` (0: no limit).
    pub max_userip: u32,
    /// `imap_logout_format`.
    pub logout_format: String,
    /// `imap_id_send`: the fields of the ID reply.
    pub id_send: String,
}

struct Conn {
    io: Box<dyn Io>,
    reader: Reader,
    info: ConnInfo,
    bytes_in: u64,
    bytes_out: u64,
    bad: u32,
}

#[derive(Debug)]
enum Closed {
    /// The client went away or broke the protocol; nothing more to send.
    Gone,
    Timeout,
}

impl Conn {
    async fn send(&mut self, data: &[u8]) -> Result<(), Closed> {
        self.bytes_out += data.len() as u64;
        match tokio::time::timeout(Duration::from_secs(300), async {
            self.io.write_all(data).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(Closed::Gone),
        }
    }

    async fn fill(&mut self, timeout: Duration) -> Result<(), Closed> {
        let mut buf = [0u8; 16384];
        match tokio::time::timeout(timeout, self.io.read(&mut buf)).await {
            Err(_) => Err(Closed::Timeout),
            Ok(Err(_)) | Ok(Ok(0)) => Err(Closed::Gone),
            Ok(Ok(n)) => {
                self.bytes_in += n as u64;
                self.reader.feed(&buf[..n]);
                Ok(())
            }
        }
    }

    /// The next command; continuation requests and refusals are answered here.
    async fn command(&mut self, timeout: Duration) -> Result<Command, Closed> {
        loop {
            while let Some(ev) = self.reader.next() {
                match ev {
                    Event::Command(c) => return Ok(c),
                    Event::Continue => self.send(b"+ Ready for literal data\r\n").await?,
                    Event::Bad { tag, message } => {
                        self.bad += 1;
                        let line = format!("{} BAD {message}\r\n", tag.as_deref().unwrap_or("*"));
                        self.send(line.as_bytes()).await?;
                        if self.bad >= MAX_BAD {
                            self.send(b"* BYE Too many invalid IMAP commands.\r\n").await?;
                            return Err(Closed::Gone);
                        }
                    }
                    Event::TooBig { tag, size } => {
                        let line = format!(
                            "{} NO [TOOBIG] Literal of {size} bytes is larger than allowed.\r\n",
                            tag.as_deref().unwrap_or("*")
                        );
                        self.send(line.as_bytes()).await?;
                    }
                    Event::Fatal(msg) => {
                        self.send(format!("* BYE {msg}\r\n").as_bytes()).await?;
                        return Err(Closed::Gone);
                    }
                }
            }
            self.fill(timeout).await?;
        }
    }

    /// A raw line (AUTHENTICATE answers, IDLE's DONE).
    async fn line(&mut self, timeout: Duration) -> Result<Vec<u8>, Closed> {
        loop {
            match self.reader.take_line() {
                Some(Ok(l)) => return Ok(l),
                Some(Err(())) => return Err(Closed::Gone),
                None => self.fill(timeout).await?,
            }
        }
    }
}

const BASE_CAPS: &str = "IMAP4rev1 SASL-IR ID ENABLE IDLE";
const POST_LOGIN_CAPS: &str = "NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE";

/// LITERAL+ or, with `imap_literal_minus = yes`, LITERAL-.
fn literal_cap(cfg: &Config) -> &'static str {
    if cfg.limits.literal_minus { "LITERAL-" } else { "LITERAL+" }
}

async fn pre_login_caps(cfg: &Config, info: &ConnInfo) -> String {
    let s = &cfg.auth.settings;
    let mut caps = format!("{BASE_CAPS} {}", literal_cap(cfg));
    if s.starttls_available(info) {
        caps.push_str(" STARTTLS");
    }
    let plain_ok = s.plaintext_allowed(info);
    if !plain_ok {
        caps.push_str(" LOGINDISABLED");
    }
    // The greeting must not wait long for a slow authd: without its answer no AUTH= is listed.
    if let Ok(Ok(mechs)) = tokio::time::timeout(Duration::from_secs(5), cfg.auth.mechanisms()).await {
        for (m, plaintext) in mechs {
            if plain_ok || !plaintext {
                caps.push_str(" AUTH=");
                caps.push_str(&m);
            }
        }
    }
    caps
}

fn post_login_caps(cfg: &Config) -> String {
    let c = cfg.capability.trim();
    let base = format!("{BASE_CAPS} {} {POST_LOGIN_CAPS}", literal_cap(cfg));
    if c.is_empty() {
        base
    } else if let Some(extra) = c.strip_prefix('+') {
        format!("{base} {}", extra.trim())
    } else {
        c.to_string()
    }
}

/// The ID reply from `imap_id_send` (`name *` and `version *` give rpost's own values,
/// `key "value"` a fixed one; Dovecot's syntax); `* ID NIL` when it is empty.
fn id_reply(spec: &str) -> Vec<u8> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut words = spec.split_whitespace();
    while let Some(key) = words.next() {
        let Some(mut value) = words.next().map(str::to_string) else { break };
        if value.starts_with('"') && !(value.len() > 1 && value.ends_with('"')) {
            for w in words.by_ref() {
                value.push(' ');
                value.push_str(w);
                if w.ends_with('"') {
                    break;
                }
            }
        }
        let value = match (key.to_ascii_lowercase().as_str(), value.as_str()) {
            ("name", "*") => "rpost".to_string(),
            ("version", "*") => env!("CARGO_PKG_VERSION").to_string(),
            ("vendor", "*") => "rpost".to_string(),
            (_, "*") => continue,
            (_, v) => v.trim_matches('"').to_string(),
        };
        fields.push((key.to_string(), value));
    }
    if fields.is_empty() {
        return b"* ID NIL\r\n".to_vec();
    }
    let mut out = b"* ID (".to_vec();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        rpost_imap_proto::write::string(&mut out, k.as_bytes());
        out.push(b' ');
        rpost_imap_proto::write::string(&mut out, v.as_bytes());
    }
    out.extend_from_slice(b")\r\n");
    out
}

/// Before login nobody may APPEND: no literal larger than a command line is buffered for
/// a client that has not authenticated.
fn pre_login_limits(l: Limits) -> Limits {
    Limits { max_append: 0, ..l }
}

/// Serves one client connection to its end.
pub async fn serve(cfg: Arc<Config>, client: rpost_daemon::Client) {
    let rpost_daemon::Client::Stream(stream) = client else { return };
    let info = login::conn_info(&stream);
    let io: Box<dyn Io> = Box::new(stream);
    let mut conn =
        Conn { io, reader: Reader::new(pre_login_limits(cfg.limits)), info, bytes_in: 0, bytes_out: 0, bad: 0 };
    if cfg.wrapper {
        let Some(tls) = cfg.auth.settings.tls.clone() else {
            tracing::warn!("imapd_tls_wrappermode = yes but no TLS certificate is loaded: connection refused");
            return;
        };
        match rpost_tls::accept(tls, conn.io, Duration::from_secs(60)).await {
            Ok(s) => {
                conn.io = Box::new(s);
                conn.info.tls = true;
            }
            Err(e) => {
                tracing::info!("imap-login: Disconnected: TLS handshaking failed: {e}: {}", conn.info.log_fields());
                return;
            }
        }
    }
    let caps = pre_login_caps(&cfg, &conn.info).await;
    if conn.send(format!("* OK [CAPABILITY {caps}] rpost ready.\r\n").as_bytes()).await.is_err() {
        return;
    }
    let mut attempts = login::Attempts::default();
    let (user, method) = loop {
        let cmd = match conn.command(LOGIN_TIMEOUT).await {
            Ok(c) => c,
            Err(e) => {
                let how = if matches!(e, Closed::Timeout) { End::Timeout } else { End::Disconnected };
                if matches!(e, Closed::Timeout) {
                    let _ = conn.send(b"* BYE Disconnected for inactivity.\r\n").await;
                }
                tracing::info!("imap-login: {}", attempts.end_line(how, &conn.info));
                return;
            }
        };
        let tag = cmd.tag.clone();
        let r = match cmd.body {
            CommandBody::Capability => {
                let caps = pre_login_caps(&cfg, &conn.info).await;
                conn.send(format!("* CAPABILITY {caps}\r\n{tag} OK Pre-login capabilities listed, post-login capabilities have more.\r\n").as_bytes()).await
            }
            CommandBody::Noop => conn.send(format!("{tag} OK NOOP completed.\r\n").as_bytes()).await,
            CommandBody::Id(_) => {
                let mut out = id_reply(&cfg.id_send);
                out.extend(format!("{tag} OK ID completed.\r\n").bytes());
                conn.send(&out).await
            }
            CommandBody::Logout => {
                let _ = conn.send(format!("* BYE Logging out\r\n{tag} OK Logout completed.\r\n").as_bytes()).await;
                tracing::info!("imap-login: {}", attempts.end_line(End::Quit, &conn.info));
                return;
            }
            CommandBody::StartTls => {
                let Some(tls) = cfg.auth.settings.tls.clone().filter(|_| !conn.info.tls) else {
                    let _ = conn.send(format!("{tag} BAD TLS is not available.\r\n").as_bytes()).await;
                    continue;
                };
                if conn.send(format!("{tag} OK Begin TLS negotiation now.\r\n").as_bytes()).await.is_err() {
                    return;
                }
                // Anything pipelined after STARTTLS came in plaintext: thrown away.
                let dropped = conn.reader.discard_input();
                if dropped > 0 {
                    tracing::info!("{} bytes pipelined after STARTTLS dropped: {}", dropped, conn.info.log_fields());
                }
                let io = std::mem::replace(&mut conn.io, Box::new(tokio::io::duplex(1).0));
                match rpost_tls::accept(tls, io, Duration::from_secs(60)).await {
                    Ok(s) => {
                        conn.io = Box::new(s);
                        conn.info.tls = true;
                        conn.reader = Reader::new(pre_login_limits(cfg.limits));
                        Ok(())
                    }
                    Err(e) => {
                        tracing::info!(
                            "imap-login: Disconnected: TLS handshaking failed: {e}: {}",
                            conn.info.log_fields()
                        );
                        return;
                    }
                }
            }
            CommandBody::Login { user, password } => {
                if !cfg.auth.settings.plaintext_allowed(&conn.info) {
                    attempts.failed(None, "PLAIN");
                    conn.send(format!("{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n").as_bytes()).await
                } else {
                    let (Ok(u), Ok(p)) = (String::from_utf8(user), String::from_utf8(password)) else {
                        let _ = conn.send(format!("{tag} BAD Invalid UTF-8 in credentials.\r\n").as_bytes()).await;
                        continue;
                    };
                    match cfg.auth.plain(&u, &p, &conn.info).await {
                        Ok(name) => break (Some((tag, name)), "PLAIN"),
                        Err(e) => auth_failed(&mut conn, &mut attempts, &tag, Some(&u), "PLAIN", e).await,
                    }
                }
            }
            CommandBody::Authenticate { mechanism, initial } => {
                match authenticate(&cfg, &mut conn, &tag, &mechanism, initial.as_deref()).await {
                    Ok(Some(name)) => break (Some((tag, name)), leak(&mechanism)),
                    Ok(None) => Ok(()),
                    Err(AuthEnd::Closed(_)) => {
                        tracing::info!("imap-login: {}", attempts.end_line(End::Disconnected, &conn.info));
                        return;
                    }
                    Err(AuthEnd::Failed(e)) => auth_failed(&mut conn, &mut attempts, &tag, None, &mechanism, e).await,
                }
            }
            other => {
                conn.send(format!("{tag} BAD Error in IMAP command {}: Not logged in.\r\n", other.name()).as_bytes())
                    .await
            }
        };
        if r.is_err() {
            tracing::info!("imap-login: {}", attempts.end_line(End::Disconnected, &conn.info));
            return;
        }
    };
    let Some((tag, name)) = user else { return };
    let logged_in = match cfg.auth.lookup(&name).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("user {name}: {e}");
            let _ = conn.send(format!("{tag} NO [UNAVAILABLE] Temporary user lookup failure.\r\n").as_bytes()).await;
            return;
        }
    };
    if let Err(e) = logged_in.enter() {
        tracing::warn!("user {name}: {e}");
        let _ = conn.send(format!("{tag} NO [UNAVAILABLE] Temporary server failure.\r\n").as_bytes()).await;
        return;
    }
    let mut session = Session::new(logged_in.maildir.clone(), logged_in.inbox.clone());
    tokio::task::block_in_place(|| session.autocreate());
    let rip = conn.info.remote.map(|r| r.ip().to_string()).unwrap_or_else(|| "local".into());
    let _registration = match super::limit::register(logged_in.maildir.store_path(), &rip, cfg.max_userip) {
        Ok(r) => r,
        Err(n) => {
            tracing::info!(
                "imap-login: Maximum number of connections from user+IP exceeded (mail_max_userip_connections={}): user=<{}>, {}",
                cfg.max_userip,
                rpost_auth_proto::printable(&name),
                conn.info.log_fields()
            );
            let _ = conn
                .send(
                    format!(
                        "{tag} NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections={}, {n} open)\r\n",
                        cfg.max_userip
                    )
                    .as_bytes(),
                )
                .await;
            login::finish_process();
        }
    };
    tracing::info!("imap-login: {}", logged_in.log_line(method, &conn.info));
    let user = logged_in.user.clone();
    conn.reader.set_limits(cfg.limits);
    let caps = post_login_caps(&cfg);
    let ok = conn.send(format!("{tag} OK [CAPABILITY {caps}] Logged in\r\n").as_bytes()).await.is_ok();
    let reason = if ok { run_session(&cfg, &mut conn, &mut session, &caps).await } else { "Disconnected" };
    tracing::info!(
        "imap({}): {reason} {}",
        rpost_auth_proto::printable(&user),
        session.stats.logout_line(&cfg.logout_format, conn.bytes_in, conn.bytes_out)
    );
    let _ = conn.io.shutdown().await;
    drop(_registration);
    // This process ran as the mail user: it must not serve anyone else.
    login::finish_process();
}

fn leak(m: &str) -> &'static str {
    match m.to_ascii_uppercase().as_str() {
        "PLAIN" => "PLAIN",
        "LOGIN" => "LOGIN",
        "CRAM-MD5" => "CRAM-MD5",
        "SCRAM-SHA-256" => "SCRAM-SHA-256",
        "SCRAM-SHA-1" => "SCRAM-SHA-1",
        _ => "SASL",
    }
}

enum AuthEnd {
    Closed(#[allow(dead_code)] Closed),
    Failed(LoginError),
}

/// One AUTHENTICATE exchange: `Ok(Some(user))` on success, `Ok(None)` when the client
/// cancelled or the command was refused (already answered).
async fn authenticate(
    cfg: &Config,
    conn: &mut Conn,
    tag: &str,
    mech: &str,
    initial: Option<&str>,
) -> Result<Option<String>, AuthEnd> {
    let s = &cfg.auth.settings;
    let plaintext = matches!(mech.to_ascii_uppercase().as_str(), "PLAIN" | "LOGIN");
    if plaintext && !s.plaintext_allowed(&conn.info) {
        conn.send(format!("{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n").as_bytes())
            .await
            .map_err(AuthEnd::Closed)?;
        return Ok(None);
    }
    let initial = initial.map(|i| if i == "=" { "" } else { i });
    let (mut ex, mut step) = cfg.auth.begin(mech, initial, &conn.info).await.map_err(AuthEnd::Failed)?;
    loop {
        match step {
            Step::Done(user) => return Ok(Some(user)),
            Step::Challenge(c) => {
                conn.send(format!("+ {c}\r\n").as_bytes()).await.map_err(AuthEnd::Closed)?;
                let line = conn.line(LOGIN_TIMEOUT).await.map_err(AuthEnd::Closed)?;
                if line == b"*" {
                    conn.send(format!("{tag} BAD Authentication aborted by client.\r\n").as_bytes())
                        .await
                        .map_err(AuthEnd::Closed)?;
                    return Ok(None);
                }
                let ok = line.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
                if !ok {
                    conn.send(format!("{tag} BAD Invalid base64 data in continued response\r\n").as_bytes())
                        .await
                        .map_err(AuthEnd::Closed)?;
                    return Ok(None);
                }
                step = ex.respond(&String::from_utf8_lossy(&line)).await.map_err(AuthEnd::Failed)?;
            }
        }
    }
}

async fn auth_failed(
    conn: &mut Conn,
    attempts: &mut login::Attempts,
    tag: &str,
    user: Option<&str>,
    method: &str,
    e: LoginError,
) -> Result<(), Closed> {
    let line = match &e {
        LoginError::Failed { user: u, .. } => {
            attempts.failed(u.as_deref().or(user), &method.to_ascii_uppercase());
            format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
        }
        LoginError::TempFailed { .. } => format!("{tag} NO [UNAVAILABLE] Temporary authentication failure.\r\n"),
        other => {
            tracing::warn!("authentication: {other}");
            format!("{tag} NO [UNAVAILABLE] Temporary authentication failure.\r\n")
        }
    };
    conn.send(line.as_bytes()).await
}

/// The authenticated/selected states until LOGOUT or the end; returns the log reason.
async fn run_session(cfg: &Config, conn: &mut Conn, session: &mut Session, caps: &str) -> &'static str {
    loop {
        let cmd = match conn.command(AUTOLOGOUT).await {
            Ok(c) => c,
            Err(Closed::Timeout) => {
                let _ = conn.send(b"* BYE Disconnected for inactivity.\r\n").await;
                return "Disconnected for inactivity";
            }
            Err(Closed::Gone) => return "Disconnected",
        };
        let tag = cmd.tag.clone();
        let r = match &cmd.body {
            CommandBody::Capability => {
                conn.send(format!("* CAPABILITY {caps}\r\n{tag} OK Capability completed.\r\n").as_bytes()).await
            }
            CommandBody::Logout => {
                let _ = conn.send(format!("* BYE Logging out\r\n{tag} OK Logout completed.\r\n").as_bytes()).await;
                return "Logged out";
            }
            CommandBody::Id(_) => {
                let mut out = id_reply(&cfg.id_send);
                out.extend(format!("{tag} OK ID completed.\r\n").bytes());
                conn.send(&out).await
            }
            CommandBody::StartTls | CommandBody::Login { .. } | CommandBody::Authenticate { .. } => {
                conn.send(format!("{tag} BAD Already logged in.\r\n").as_bytes()).await
            }
            CommandBody::Idle => match idle(cfg, conn, session, &tag).await {
                Ok(()) => Ok(()),
                Err(Closed::Timeout) => {
                    let _ = conn.send(b"* BYE Disconnected for inactivity.\r\n").await;
                    return "Disconnected for inactivity";
                }
                Err(Closed::Gone) => return "Disconnected",
            },
            _ => {
                // Maildir work is blocking file I/O; this process serves one client, so it
                // may block its own runtime.
                let out = tokio::task::block_in_place(|| session.execute(&cmd));
                conn.send(&out).await
            }
        };
        if r.is_err() {
            return "Disconnected";
        }
        if session.closing() {
            return "Disconnected: Selected mailbox went away";
        }
    }
}

/// IDLE: changes are pushed as they are found until DONE (every second the Maildir's
/// modification times are compared, a full sync follows a change and runs every 30 s).
async fn idle(cfg: &Config, conn: &mut Conn, session: &mut Session, tag: &str) -> Result<(), Closed> {
    conn.send(b"+ idling\r\n").await?;
    let started = tokio::time::Instant::now();
    let mut last_note = started;
    let mut tick = tokio::time::interval(IDLE_POLL);
    let mut last_full = started;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(line) = conn.reader.take_line() {
            let line = line.map_err(|_| Closed::Gone)?;
            if line.eq_ignore_ascii_case(b"DONE") {
                let out = tokio::task::block_in_place(|| session.poll(true));
                let mut out = out;
                out.extend(format!("{tag} OK Idle completed.\r\n").bytes());
                return conn.send(&out).await;
            }
            return conn.send(format!("{tag} BAD Expected DONE.\r\n").as_bytes()).await;
        }
        tokio::select! {
            r = conn.io.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Err(Closed::Gone),
                Ok(n) => {
                    conn.bytes_in += n as u64;
                    conn.reader.feed(&buf[..n]);
                }
            },
            _ = tick.tick() => {
                if started.elapsed() > AUTOLOGOUT {
                    return Err(Closed::Timeout);
                }
                let force = last_full.elapsed() >= IDLE_FULL_SYNC;
                if force {
                    last_full = tokio::time::Instant::now();
                }
                let out = tokio::task::block_in_place(|| session.idle_poll(force));
                if !out.is_empty() {
                    conn.send(&out).await?;
                }
                if session.closing() {
                    return Err(Closed::Gone);
                }
                if last_note.elapsed() >= cfg.idle_notify && !cfg.idle_notify.is_zero() {
                    last_note = tokio::time::Instant::now();
                    conn.send(b"* OK Still here\r\n").await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_reply_follows_imap_id_send() {
        assert_eq!(id_reply("name *"), b"* ID (\"name\" \"rpost\")\r\n");
        let v =
            String::from_utf8(id_reply("name * version * support-url \"https://example.test/help me\" os *")).unwrap();
        assert_eq!(
            v,
            format!(
                "* ID (\"name\" \"rpost\" \"version\" \"{}\" \"support-url\" \"https://example.test/help me\")\r\n",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert_eq!(id_reply(""), b"* ID NIL\r\n");
    }
}

//! The login process's tokio driver of one IMAP connection: greeting, TLS (STARTTLS or
//! implicit), the not-authenticated state (LOGIN, AUTHENTICATE through [`crate::login`]),
//! literals' continuation requests, timeouts and the log lines; then the hand-over of the
//! logged-in connection to the process serving its mail user ([`super::worker`]).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use rpost_imap_proto::{CommandBody, Limits, Reader};

use super::conn::{Closed, Conn, Transport};
use super::worker::{Handover, MAX_PIPELINED, Workers};
use crate::login::{self, Authenticator, ConnInfo, End, LoginError, Step};

/// Inactivity allowed before login.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(180);

/// What the login driver needs from the configuration.
#[derive(Debug)]
pub struct Config {
    pub auth: Authenticator,
    pub limits: Limits,
    /// Implicit TLS (port 993): `imapd_tls_wrappermode`.
    pub wrapper: bool,
    /// `imap_id_send`: the fields of the ID reply.
    pub id_send: String,
    /// The post-login processes, one per mail uid.
    pub workers: Arc<Workers>,
}

pub(crate) const BASE_CAPS: &str = "IMAP4rev1 SASL-IR ID ENABLE IDLE";
pub(crate) const POST_LOGIN_CAPS: &str = "NAMESPACE UIDPLUS MOVE UNSELECT CHILDREN SPECIAL-USE";

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

/// The ID reply from `imap_id_send` (`name *` and `version *` give rpost's own values,
/// `key "value"` a fixed one; Dovecot's syntax); `* ID NIL` when it is empty.
pub(crate) fn id_reply(spec: &str) -> Vec<u8> {
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

/// Serves one client connection until it logs in (then hands it over) or leaves.
pub async fn serve(cfg: Arc<Config>, client: rpost_daemon::Client) {
    let rpost_daemon::Client::Stream(stream) = client else { return };
    let info = login::conn_info(&stream);
    let io = match stream {
        rpost_daemon::Stream::Tcp { stream, .. } => Transport::Tcp(stream),
        rpost_daemon::Stream::Unix(s) => Transport::Unix(s),
    };
    let mut conn = Conn::new(io, Reader::new(pre_login_limits(cfg.limits)), info);
    if cfg.wrapper {
        let Some(tls) = cfg.auth.settings.tls.clone() else {
            tracing::warn!("imapd_tls_wrappermode = yes but no TLS certificate is loaded: connection refused");
            return;
        };
        if !start_tls(&mut conn, tls).await {
            return;
        }
    }
    let caps = pre_login_caps(&cfg, &conn.info).await;
    if conn.send(format!("* OK [CAPABILITY {caps}] rpost ready.\r\n").as_bytes()).await.is_err() {
        return;
    }
    let mut attempts = login::Attempts::default();
    let (tag, name, method) = loop {
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
                if !start_tls(&mut conn, tls).await {
                    return;
                }
                conn.reader = Reader::new(pre_login_limits(cfg.limits));
                Ok(())
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
                        Ok(name) => break (tag, name, "PLAIN"),
                        Err(e) => auth_failed(&mut conn, &mut attempts, &tag, Some(&u), "PLAIN", e).await,
                    }
                }
            }
            CommandBody::Authenticate { mechanism, initial } => {
                match authenticate(&cfg, &mut conn, &tag, &mechanism, initial.as_deref()).await {
                    Ok(Some(name)) => break (tag, name, leak(&mechanism)),
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
    let logged_in = match cfg.auth.lookup(&name).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("user {name}: {e}");
            let _ = conn.send(format!("{tag} NO [UNAVAILABLE] Temporary user lookup failure.\r\n").as_bytes()).await;
            return;
        }
    };
    let pending = conn.reader.take_input();
    if pending.len() > MAX_PIPELINED {
        let _ = conn.send(b"* BYE Too much input pipelined after login.\r\n").await;
        return;
    }
    let mut handover = Handover {
        user: logged_in.user.clone(),
        home: logged_in.home.clone(),
        root: logged_in.maildir.path().to_path_buf(),
        inbox: (logged_in.inbox.path() != logged_in.maildir.path()).then(|| logged_in.inbox.path().to_path_buf()),
        local: conn.info.local,
        remote: conn.info.remote,
        tls: conn.info.tls,
        unix: !matches!(conn.io, Transport::Tcp(_)),
        method: method.to_string(),
        tag: tag.clone(),
        pending,
        bytes_in: conn.bytes_in,
        bytes_out: conn.bytes_out,
    };
    let (uid, gid) = (logged_in.uid, logged_in.gid);
    let fail = |e: super::worker::HandoverError| {
        tracing::warn!("user {name}: {e}");
        format!("{tag} NO [UNAVAILABLE] Temporary server failure.\r\n")
    };
    // A plain socket moves to the worker; TLS stays here: the worker gets one end of a
    // socket pair and this process relays.
    let plain = match &conn.io {
        Transport::Tcp(s) => Some(s.as_fd()),
        Transport::Unix(s) => Some(s.as_fd()),
        Transport::Wrapped(_) => None,
    };
    if let Some(fd) = plain {
        if let Err(e) = cfg.workers.hand_over(uid, gid, &handover, fd).await {
            let _ = conn.send(fail(e).as_bytes()).await;
        }
        return;
    }
    let (mut ours, theirs) = match tokio::net::UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("socketpair: {e}");
            let _ = conn.send(format!("{tag} NO [UNAVAILABLE] Temporary server failure.\r\n").as_bytes()).await;
            return;
        }
    };
    handover.unix = true;
    if let Err(e) = cfg.workers.hand_over(uid, gid, &handover, theirs.as_fd()).await {
        let _ = conn.send(fail(e).as_bytes()).await;
        return;
    }
    drop(theirs);
    if let Transport::Wrapped(mut tls) = conn.io {
        let _ = tokio::io::copy_bidirectional(&mut tls, &mut ours).await;
    }
}

/// TLS on the connection (implicit, or after STARTTLS); false when the handshake failed.
async fn start_tls(conn: &mut Conn, tls: Arc<rpost_tls::rustls::ServerConfig>) -> bool {
    let io = std::mem::replace(&mut conn.io, Transport::Wrapped(Box::new(tokio::io::duplex(1).0)));
    let boxed: Box<dyn super::conn::Io> = match io {
        Transport::Tcp(s) => Box::new(s),
        Transport::Unix(s) => Box::new(s),
        Transport::Wrapped(w) => w,
    };
    match rpost_tls::accept(tls, boxed, Duration::from_secs(60)).await {
        Ok(s) => {
            conn.io = Transport::Wrapped(Box::new(s));
            conn.info.tls = true;
            true
        }
        Err(e) => {
            tracing::info!("imap-login: Disconnected: TLS handshaking failed: {e}: {}", conn.info.log_fields());
            false
        }
    }
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

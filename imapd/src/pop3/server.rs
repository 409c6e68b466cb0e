//! The tokio driver of one POP3 connection: moves bytes between the client (plain or TLS)
//! and the [`Session`], and carries out its requests through [`crate::login`] and the
//! [`Maildrop`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rpost_config::Params;
use rpost_daemon::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::mailbox::{MailboxError, Maildrop, Options, UidlFormat};
use super::session::{Config, Event, LoginOutcome, Session, logout_line};
use crate::login::{Attempts, Authenticator, ConnInfo, End, Exchange, LoggedIn, LoginError, Step};

/// Idle time allowed before login (Dovecot's login processes: 3 minutes).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(180);
/// Idle time allowed after login (RFC 1939 §3: at least 10 minutes).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(600);
/// Time for a TLS handshake.
pub const TLS_TIMEOUT: Duration = Duration::from_secs(60);

/// pop3d's settings.
#[derive(Debug)]
pub struct Pop3Settings {
    pub greeting: String,
    /// Implicit TLS (pop3s, port 995).
    pub wrappermode: bool,
    pub mailbox: Options,
    pub logout_format: String,
}

impl Pop3Settings {
    pub fn from_params(p: &Params) -> Result<Pop3Settings, String> {
        let s = |n: &str| p.get(n).map_err(|e| e.to_string());
        let b = |n: &str| p.get_bool(n).map_err(|e| e.to_string());
        Ok(Pop3Settings {
            greeting: s("login_greeting")?,
            wrappermode: b("pop3d_tls_wrappermode")?,
            mailbox: Options {
                uidl_format: UidlFormat::parse(&s("pop3_uidl_format")?).map_err(|e| e.to_string())?,
                lock_session: b("pop3_lock_session")?,
                no_flag_updates: b("pop3_no_flag_updates")?,
                deleted_flag: deleted_flag(&s("pop3_deleted_flag")?)?,
            },
            logout_format: s("pop3_logout_format")?,
        })
    }
}

/// `pop3_deleted_flag`: empty, or a keyword (system flags such as `\Deleted` would make
/// the message disappear for IMAP too, which is not what the setting is for).
fn deleted_flag(v: &str) -> Result<Option<String>, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.starts_with('\\') || v.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!("pop3_deleted_flag = {v}: only a keyword (such as $POP3Deleted) can be used"));
    }
    Ok(Some(v.to_string()))
}

/// Everything a connection needs, shared by the process.
#[derive(Debug)]
pub struct Server {
    pub auth: Authenticator,
    pub pop3: Pop3Settings,
}

enum Conn {
    Plain(Stream),
    Tls(Box<rpost_tls::server::TlsStream<Stream>>),
    /// Only while a handshake has the stream.
    Gone,
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// How the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Quit,
    Dropped,
    Timeout,
}

struct Client {
    server: Arc<Server>,
    conn: Conn,
    info: ConnInfo,
    session: Session,
    exchange: Option<Exchange>,
    maildrop: Option<Maildrop>,
    user: Option<LoggedIn>,
    /// The process now runs as the mail user and must end with this client.
    entered: bool,
    attempts: Attempts,
}

/// Serves one client to the end. Returns true when the process switched to a mail user
/// (the caller must then end the process, see [`crate::login::finish_process`]).
pub async fn serve(server: Arc<Server>, stream: Stream) -> bool {
    let mut info = crate::login::conn_info(&stream);
    let mut conn = Conn::Plain(stream);
    if server.pop3.wrappermode {
        let Some(cfg) = server.auth.settings.tls.clone() else {
            tracing::warn!("pop3d_tls_wrappermode is on but no certificate is loaded: {}", info.log_fields());
            return false;
        };
        let Conn::Plain(s) = std::mem::replace(&mut conn, Conn::Gone) else { return false };
        match rpost_tls::accept(cfg, s, TLS_TIMEOUT).await {
            Ok(t) => conn = Conn::Tls(Box::new(t)),
            Err(e) => {
                tracing::info!("Disconnected (TLS handshake failed: {e}): {}", info.log_fields());
                return false;
            }
        }
        info.tls = true;
    }
    let mechanisms = match server.auth.mechanisms().await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("auth server: {e}");
            Vec::new()
        }
    };
    let s = &server.auth.settings;
    let cfg = Config {
        greeting: server.pop3.greeting.clone(),
        starttls: s.starttls_available(&info),
        tls: info.tls,
        plaintext_allowed: s.plaintext_allowed(&info),
        mechanisms,
    };
    let mut c = Client {
        server: server.clone(),
        conn,
        info,
        session: Session::new(cfg),
        exchange: None,
        maildrop: None,
        user: None,
        entered: false,
        attempts: Attempts::default(),
    };
    let ending = c.run().await;
    let _ = c.conn.shutdown().await;
    c.log_end(ending);
    c.entered
}

impl Client {
    async fn run(&mut self) -> Ending {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(ev) = self.session.next_event() {
                match ev {
                    Event::Send(b) => {
                        if self.conn.write_all(&b).await.is_err() {
                            return Ending::Dropped;
                        }
                    }
                    Event::Close => {
                        let _ = self.conn.flush().await;
                        return Ending::Quit;
                    }
                    other => {
                        if self.conn.flush().await.is_err() {
                            return Ending::Dropped;
                        }
                        if !self.request(other).await {
                            return Ending::Dropped;
                        }
                    }
                }
            }
            if self.conn.flush().await.is_err() {
                return Ending::Dropped;
            }
            let timeout = if self.session.logged_in() { SESSION_TIMEOUT } else { LOGIN_TIMEOUT };
            match tokio::time::timeout(timeout, self.conn.read(&mut buf)).await {
                Err(_) => {
                    let _ = self.conn.write_all(b"-ERR Disconnected for inactivity.\r\n").await;
                    return Ending::Timeout;
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Ending::Dropped,
                Ok(Ok(n)) => self.session.feed(&buf[..n]),
            }
        }
    }

    /// Carries out one request; false when the connection is lost.
    async fn request(&mut self, ev: Event) -> bool {
        match ev {
            Event::StartTls => {
                let Some(cfg) = self.server.auth.settings.tls.clone() else {
                    self.session.tls_started(false, false);
                    return true;
                };
                let Conn::Plain(s) = std::mem::replace(&mut self.conn, Conn::Gone) else { return false };
                match rpost_tls::accept(cfg, s, TLS_TIMEOUT).await {
                    Ok(t) => {
                        self.conn = Conn::Tls(Box::new(t));
                        self.info.tls = true;
                        let plain = self.server.auth.settings.plaintext_allowed(&self.info);
                        self.session.tls_started(true, plain);
                    }
                    Err(e) => {
                        tracing::info!("STLS failed: {e}: {}", self.info.log_fields());
                        return false;
                    }
                }
            }
            Event::Login { user, pass } => {
                let r = self.server.auth.plain(&user, &pass, &self.info).await;
                drop(pass);
                match r {
                    Ok(u) => self.logged_in(&u, "PLAIN").await,
                    Err(e) => self.failed(e, Some(&user), "PLAIN"),
                }
            }
            Event::Authenticate { mech, initial } => {
                match self.server.auth.begin(&mech, initial.as_deref(), &self.info).await {
                    Ok((ex, step)) => {
                        self.exchange = Some(ex);
                        self.step(step, &mech).await;
                    }
                    Err(e) => self.failed(e, None, &mech),
                }
            }
            Event::SaslResponse(data) => {
                let Some(mut ex) = self.exchange.take() else {
                    self.session.login_result(LoginOutcome::TempFailed);
                    return true;
                };
                let mech = ex.mech.clone();
                match ex.respond(&data).await {
                    Ok(step) => {
                        self.exchange = Some(ex);
                        self.step(step, &mech).await;
                    }
                    Err(e) => self.failed(e, None, &mech),
                }
            }
            Event::SaslAborted => {
                if let Some(ex) = self.exchange.take() {
                    self.attempts.failed(None, &ex.mech);
                }
            }
            Event::Retrieve { index, .. } => {
                let content = match &self.maildrop {
                    Some(m) => match m.read(index) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!("{}: RETR {}: {e}", self.who(), index + 1);
                            None
                        }
                    },
                    None => None,
                };
                self.session.message_result(content.as_deref());
            }
            Event::Commit { delete, seen } => {
                let r = match &mut self.maildrop {
                    Some(m) => m.commit(&delete, &seen).map_err(|e| {
                        tracing::error!("{}: QUIT: {e}: nothing deleted", self.user.as_ref().map_or("", |u| &u.user));
                    }),
                    None => Ok(0),
                };
                self.session.commit_result(r);
            }
            Event::Send(_) | Event::Close => {}
        }
        true
    }

    fn who(&self) -> String {
        self.user.as_ref().map(|u| rpost_auth_proto::printable(&u.user)).unwrap_or_default()
    }

    async fn step(&mut self, step: Step, mech: &str) {
        match step {
            Step::Challenge(c) => self.session.auth_challenge(&c),
            Step::Done(user) => {
                self.exchange = None;
                self.logged_in(&user, mech).await;
            }
        }
    }

    fn failed(&mut self, e: LoginError, user: Option<&str>, mech: &str) {
        self.exchange = None;
        match e {
            LoginError::Failed { reason, user: who } => {
                self.attempts.failed(who.as_deref().or(user), mech);
                self.session.login_result(LoginOutcome::Failed(reason));
            }
            other => {
                tracing::error!("login failed on the server side: {other}: {}", self.info.log_fields());
                self.session.login_result(LoginOutcome::TempFailed);
            }
        }
    }

    /// After authd's OK: userdb, switch to the user, open the maildrop.
    async fn logged_in(&mut self, user: &str, mech: &str) {
        let li = match self.server.auth.lookup(user).await {
            Ok(li) => li,
            Err(e) => {
                tracing::error!("{e}: {}", self.info.log_fields());
                self.session.login_result(LoginOutcome::TempFailed);
                return;
            }
        };
        if let Err(e) = li.enter() {
            tracing::error!("user {}: {e}", rpost_auth_proto::printable(&li.user));
            self.session.login_result(LoginOutcome::TempFailed);
            return;
        }
        self.entered = true;
        tracing::info!("{}", li.log_line(mech, &self.info));
        let opts = self.server.pop3.mailbox.clone();
        let inbox = li.inbox.clone();
        self.user = Some(li);
        match tokio::task::spawn_blocking(move || Maildrop::open(&inbox, opts)).await {
            Ok(Ok(m)) => {
                let infos = m.infos();
                self.maildrop = Some(m);
                self.session.login_result(LoginOutcome::Ok(infos));
            }
            Ok(Err(MailboxError::InUse)) => {
                tracing::info!("{}: mailbox in use by another POP3 session", self.who());
                self.session.login_result(LoginOutcome::MailboxFailed { in_use: true });
            }
            Ok(Err(e)) => {
                tracing::error!("{}: cannot open INBOX: {e}", self.who());
                self.session.login_result(LoginOutcome::MailboxFailed { in_use: false });
            }
            Err(e) => {
                tracing::error!("{}: cannot open INBOX: {e}", self.who());
                self.session.login_result(LoginOutcome::MailboxFailed { in_use: false });
            }
        }
    }

    fn log_end(&self, ending: Ending) {
        if self.user.is_some() {
            let stats = logout_line(&self.server.pop3.logout_format, &self.session.stats());
            let why = match ending {
                Ending::Quit if self.session.is_done() => "Logged out",
                Ending::Timeout => "Inactivity",
                _ => "Connection closed",
            };
            tracing::info!("Disconnected: {why} {stats}: user=<{}>, {}", self.who(), self.info.log_fields());
        } else {
            let how = match ending {
                Ending::Quit => End::Quit,
                Ending::Dropped => End::Disconnected,
                Ending::Timeout => End::Timeout,
            };
            tracing::info!("{}", self.attempts.end_line(how, &self.info));
        }
    }
}

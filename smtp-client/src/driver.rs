//! The tokio driver: moves bytes between the socket, the reply parser and the session, and
//! streams the message body from the queue file through the dot-stuffer. [`rset`] checks
//! that a cached connection is still alive before it is reused. [`Stream`] is a connection
//! that STARTTLS (or wrapper mode) turns into a TLS stream in place.

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rpost_smtp_proto::DotStuffer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::reply::ReplyParser;
use crate::session::{IoFailure, Session, Stage, Step};

/// The message body: the queue file's content (CRLF, dot-unstuffed), read on a blocking
/// thread in pieces.
pub type Content = Box<dyn Read + Send>;

/// Bytes read from the content per piece.
const CHUNK: usize = 64 * 1024;

/// Per-stage time limits (`None`: no limit of our own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Completing a TCP or UNIX-domain connection.
    pub connect: Option<Duration>,
    /// The greeting and the EHLO/HELO/LHLO reply.
    pub helo: Option<Duration>,
    pub mail: Option<Duration>,
    pub rcpt: Option<Duration>,
    pub data_init: Option<Duration>,
    /// Each write of message content.
    pub data_xfer: Option<Duration>,
    pub data_done: Option<Duration>,
    pub quit: Option<Duration>,
    /// The TLS handshake after STARTTLS (`*_starttls_timeout`).
    pub starttls: Option<Duration>,
}

impl Timeouts {
    /// The same limit everywhere (tests).
    pub fn uniform(d: Duration) -> Timeouts {
        let d = Some(d);
        Timeouts {
            connect: d,
            helo: d,
            mail: d,
            rcpt: d,
            data_init: d,
            data_xfer: d,
            data_done: d,
            quit: d,
            starttls: d,
        }
    }

    pub fn of(&self, stage: Stage) -> Option<Duration> {
        match stage {
            Stage::Helo => self.helo,
            Stage::Mail => self.mail,
            Stage::Rcpt => self.rcpt,
            Stage::DataInit => self.data_init,
            Stage::DataDone => self.data_done,
            Stage::Quit => self.quit,
            Stage::Tls => self.starttls,
        }
    }
}

/// Runs `fut` with an optional time limit; `Err(())` when it ran out.
pub async fn limit<F: Future>(d: Option<Duration>, fut: F) -> Result<F::Output, ()> {
    match d {
        Some(d) => tokio::time::timeout(d, fut).await.map_err(|_| ()),
        None => Ok(fut.await),
    }
}

/// How to run TLS on a connection, when the session asks for it.
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub config: Arc<rpost_tls::rustls::ClientConfig>,
    /// The name the certificate must carry at verify/secure (the MX host, or the address
    /// of a literal next hop).
    pub server_name: String,
    /// `host[addr]:port` for the log line.
    pub relay: String,
    pub level: rpost_tls::ClientLevel,
}

impl TlsClient {
    /// Postfix's log line after a handshake.
    fn log(&self, info: &rpost_tls::TlsInfo) {
        let trust = if self.level.verifies() { "Verified" } else { "Untrusted" };
        tracing::info!("{trust} TLS connection established to {}: {}", self.relay, info.summary());
    }
}

/// A connection, plaintext or TLS.
#[derive(Debug)]
pub enum Stream<S> {
    Plain(S),
    Tls(Box<rpost_tls::client::TlsStream<S>>),
    /// A handshake consumed the plaintext stream and failed.
    Gone,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream<S> {
    /// Runs the client handshake in place.
    pub async fn start_tls(&mut self, tls: &TlsClient, d: Option<Duration>) -> Result<rpost_tls::TlsInfo, String> {
        let Stream::Plain(plain) = std::mem::replace(self, Stream::Gone) else {
            return Err("TLS is already active".into());
        };
        let d = d.unwrap_or(Duration::from_secs(300));
        match rpost_tls::connect(tls.config.clone(), &tls.server_name, plain, d).await {
            Ok(t) => {
                let info = rpost_tls::TlsInfo::of(t.get_ref().1);
                tls.log(&info);
                *self = Stream::Tls(Box::new(t));
                Ok(info)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The plaintext stream, if TLS never started (for the connection cache).
    pub fn into_plain(self) -> Option<S> {
        match self {
            Stream::Plain(s) => Some(s),
            _ => None,
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "connection lost in the TLS handshake")
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

enum BodyError {
    Io(IoFailure),
    Local(String),
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8], d: Option<Duration>) -> Result<(), IoFailure> {
    match limit(d, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(IoFailure::Lost),
        Err(()) => Err(IoFailure::Timeout),
    }
}

async fn send_body<S: AsyncWrite + Unpin>(
    stream: &mut S,
    content: &mut Option<Content>,
    d: Option<Duration>,
) -> Result<(), BodyError> {
    let mut reader = content.take().ok_or_else(|| BodyError::Local("message content already sent".into()))?;
    let mut stuffer = DotStuffer::new();
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 16);
    loop {
        let (back, piece) = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; CHUNK];
            let res = reader.read(&mut buf).map(|n| {
                buf.truncate(n);
                buf
            });
            (reader, res)
        })
        .await
        .map_err(|e| BodyError::Local(format!("reading the queue file: {e}")))?;
        reader = back;
        let piece = match piece {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BodyError::Local(format!("error reading the queue file: {e}"))),
        };
        out.clear();
        if piece.is_empty() {
            stuffer.finish(&mut out);
            return write(stream, &out, d).await.map_err(BodyError::Io);
        }
        stuffer.feed(&piece, &mut out);
        write(stream, &out, d).await.map_err(BodyError::Io)?;
    }
}

/// Talks to the server until the session is done. Returns when the handshake (greeting and
/// EHLO) completed, if it did, for the `delays=` split.
pub async fn converse<S>(
    stream: &mut Stream<S>,
    session: &mut Session,
    content: Content,
    t: &Timeouts,
    tls: Option<&TlsClient>,
) -> Option<Instant>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let step = session.start();
    converse_from(stream, session, step, content, t, tls).await
}

/// As [`converse`], from a first step already taken (e.g. [`Session::resume`] on a cached
/// connection). A session that ends [`Session::reusable`] leaves the connection open.
pub async fn converse_from<S>(
    stream: &mut Stream<S>,
    session: &mut Session,
    first: Step,
    content: Content,
    t: &Timeouts,
    tls: Option<&TlsClient>,
) -> Option<Instant>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut content = Some(content);
    let mut parser = ReplyParser::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut handshake = None;
    let mut step = first;
    loop {
        for w in session.take_warnings() {
            tracing::warn!("{w}");
        }
        if handshake.is_none() && session.handshake_done() {
            handshake = Some(Instant::now());
        }
        let Step { send, body, wait } = std::mem::take(&mut step);
        if !send.is_empty() {
            let d = wait.map(|s| t.of(s)).unwrap_or(t.quit);
            if let Err(f) = write(stream, &send, d).await {
                step = session.io_error(f, false);
                continue;
            }
        }
        if body {
            match send_body(stream, &mut content, t.data_xfer).await {
                Ok(()) => {}
                Err(BodyError::Io(f)) => {
                    step = session.io_error(f, true);
                    continue;
                }
                Err(BodyError::Local(reason)) => {
                    step = session.local_error(&reason);
                    continue;
                }
            }
        }
        let Some(stage) = wait else { break };
        if stage == Stage::Tls {
            // Whatever the server sent after its 220 in plaintext is never read as if it
            // came over TLS (the client side of CVE-2011-0411).
            parser = ReplyParser::new();
            let result = match tls {
                Some(tls) => stream.start_tls(tls, t.starttls).await,
                None => Err("no TLS client configuration".into()),
            };
            step = match result {
                Ok(_) => session.tls_started(),
                Err(e) => {
                    tracing::info!("{}: {e}", tls.map(|t| t.relay.as_str()).unwrap_or("server"));
                    session.tls_failed(&e)
                }
            };
            continue;
        }
        step = loop {
            if let Some(r) = parser.next_reply() {
                break match r {
                    Ok(r) => session.reply(r),
                    Err(e) => session.malformed(e),
                };
            }
            match limit(t.of(stage), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break session.io_error(IoFailure::Lost, false),
                Ok(Ok(n)) => parser.feed(&buf[..n]),
                Err(()) => break session.io_error(IoFailure::Timeout, false),
            }
        };
    }
    if !session.reusable() {
        let _ = limit(Some(Duration::from_secs(5)), stream.shutdown()).await;
    }
    handshake
}

/// Sends RSET and waits for a 2xx reply: a cached connection is alive and back in the
/// initial transaction state. False on anything else (the caller closes it).
pub async fn rset<S>(stream: &mut S, d: Duration) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if write(stream, b"RSET\r\n", Some(d)).await.is_err() {
        return false;
    }
    let mut parser = ReplyParser::new();
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            if let Some(r) = parser.next_reply() {
                return r.is_ok_and(|r| r.class() == 2);
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => parser.feed(&buf[..n]),
            }
        }
    };
    limit(Some(d), read).await.unwrap_or(false)
}

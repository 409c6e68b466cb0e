//! The tokio driver: moves bytes between the socket, the reply parser and the session, and
//! streams the message body from the queue file through the dot-stuffer. [`rset`] checks
//! that a cached connection is still alive before it is reused.

use std::future::Future;
use std::io::Read;
use std::time::{Duration, Instant};

use rpost_smtp_proto::DotStuffer;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
}

impl Timeouts {
    /// The same limit everywhere (tests).
    pub fn uniform(d: Duration) -> Timeouts {
        let d = Some(d);
        Timeouts { connect: d, helo: d, mail: d, rcpt: d, data_init: d, data_xfer: d, data_done: d, quit: d }
    }

    pub fn of(&self, stage: Stage) -> Option<Duration> {
        match stage {
            Stage::Helo => self.helo,
            Stage::Mail => self.mail,
            Stage::Rcpt => self.rcpt,
            Stage::DataInit => self.data_init,
            Stage::DataDone => self.data_done,
            Stage::Quit => self.quit,
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
pub async fn converse<S>(stream: &mut S, session: &mut Session, content: Content, t: &Timeouts) -> Option<Instant>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let step = session.start();
    converse_from(stream, session, step, content, t).await
}

/// As [`converse`], from a first step already taken (e.g. [`Session::resume`] on a cached
/// connection). A session that ends [`Session::reusable`] leaves the connection open.
pub async fn converse_from<S>(
    stream: &mut S,
    session: &mut Session,
    first: Step,
    content: Content,
    t: &Timeouts,
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

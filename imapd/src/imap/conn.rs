//! One client connection as both halves of imapd see it: the transport (a TCP or UNIX
//! socket, or TLS over one), the command reader, byte counters and the invalid-command
//! count. Reading from a plain socket waits for readiness first and only then reads into a
//! buffer on the stack, so a connection that sits idle (IDLE, or between commands) holds no
//! read buffer: ten thousand idle sessions cost their session state and little else.

use std::io;
use std::time::Duration;

use rpost_imap_proto::{Command, Event, Reader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::login::ConnInfo;

/// A client stream carried inside TLS (or any other wrapper).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long a write to the client may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(300);
/// Invalid commands tolerated before the connection is closed.
const MAX_BAD: u32 = 20;
/// One read's worth of input.
const READ_CHUNK: usize = 16384;

/// The client's transport.
pub enum Transport {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS (the login process keeps these: a TLS session cannot move between processes).
    Wrapped(Box<dyn Io>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp(_) => "Transport::Tcp",
            Transport::Unix(_) => "Transport::Unix",
            Transport::Wrapped(_) => "Transport::Wrapped",
        })
    }
}

impl Transport {
    /// Reads what is available into `reader`: the number of bytes, 0 at end of file.
    /// Cancel-safe: bytes are fed only after a read that completed.
    pub async fn read_into(&mut self, reader: &mut Reader) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => loop {
                s.readable().await?;
                match read_now(|b| s.try_read(b), reader) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            },
            Transport::Unix(s) => loop {
                s.readable().await?;
                match read_now(|b| s.try_read(b), reader) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            },
            Transport::Wrapped(s) => {
                // A heap buffer: the TLS connection keeps its own buffers anyway, and a stack
                // array here would make every connection's future this large.
                let mut buf = vec![0u8; READ_CHUNK];
                let n = s.read(&mut buf).await?;
                reader.feed(&buf[..n]);
                Ok(n)
            }
        }
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.write_all(data).await,
            Transport::Unix(s) => s.write_all(data).await,
            Transport::Wrapped(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = match self {
            Transport::Tcp(s) => s.shutdown().await,
            Transport::Unix(s) => s.shutdown().await,
            Transport::Wrapped(s) => s.shutdown().await,
        };
    }
}

/// One non-blocking read into a stack buffer (outside any future's state).
fn read_now(read: impl FnOnce(&mut [u8]) -> io::Result<usize>, reader: &mut Reader) -> io::Result<usize> {
    let mut buf = [0u8; READ_CHUNK];
    let n = read(&mut buf)?;
    reader.feed(&buf[..n]);
    Ok(n)
}

#[derive(Debug)]
pub enum Closed {
    /// The client went away or broke the protocol; nothing more to send.
    Gone,
    Timeout,
}

/// A client connection with its reader.
#[derive(Debug)]
pub struct Conn {
    pub io: Transport,
    pub reader: Reader,
    pub info: ConnInfo,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub bad: u32,
}

impl Conn {
    pub fn new(io: Transport, reader: Reader, info: ConnInfo) -> Conn {
        Conn { io, reader, info, bytes_in: 0, bytes_out: 0, bad: 0 }
    }

    pub async fn send(&mut self, data: &[u8]) -> Result<(), Closed> {
        self.bytes_out += data.len() as u64;
        match tokio::time::timeout(WRITE_TIMEOUT, self.io.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Closed::Gone),
        }
    }

    /// Waits up to `timeout` for input and feeds it to the reader.
    pub async fn fill(&mut self, timeout: Duration) -> Result<(), Closed> {
        match tokio::time::timeout(timeout, self.io.read_into(&mut self.reader)).await {
            Err(_) => Err(Closed::Timeout),
            Ok(Err(_)) | Ok(Ok(0)) => Err(Closed::Gone),
            Ok(Ok(n)) => {
                self.bytes_in += n as u64;
                Ok(())
            }
        }
    }

    /// The next command; continuation requests and refusals are answered here.
    pub async fn command(&mut self, timeout: Duration) -> Result<Command, Closed> {
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
            // Nothing pending: give back large buffers before waiting (idle connections).
            self.reader.compact();
            self.fill(timeout).await?;
        }
    }

    /// A raw line (AUTHENTICATE answers, IDLE's DONE).
    pub async fn line(&mut self, timeout: Duration) -> Result<Vec<u8>, Closed> {
        loop {
            match self.reader.take_line() {
                Some(Ok(l)) => return Ok(l),
                Some(Err(())) => return Err(Closed::Gone),
                None => self.fill(timeout).await?,
            }
        }
    }
}

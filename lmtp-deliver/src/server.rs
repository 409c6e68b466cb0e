//! The tokio driver: moves bytes between the socket, the codec, the session and the spool,
//! and runs the Maildir deliveries on a blocking thread.

use std::sync::Arc;
use std::time::SystemTime;

use rpost_smtp_proto::{Event, Limits, ServerCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::deliver::{Outcome, Spool};
use crate::session::{Next, Session, Step};
use crate::settings::Settings;

/// State shared by all sessions of one lmtp-deliver process.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
}

impl Shared {
    pub fn new(settings: Settings) -> Shared {
        Shared { settings }
    }
}

/// Serves one LMTP client to the end. `client_ip`: the peer of a TCP client (`None` for the
/// usual UNIX-domain socket).
pub async fn serve<S>(shared: Arc<Shared>, mut stream: S, client_ip: Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let s = &shared.settings;
    let session = Session::new(s, client_ip);
    tracing::info!("connect from {}", session.client);
    let mut driver = Driver {
        shared: shared.clone(),
        codec: ServerCodec::new(Limits { max_line: s.line_length_limit, ..Limits::default() }),
        session,
        out: Vec::new(),
        spool: None,
        discarding: false,
        chunk: 0,
    };
    driver.run(&mut stream).await;
    tracing::info!("disconnect from {}", driver.session.client);
}

struct Driver<'a> {
    shared: Arc<Shared>,
    codec: ServerCodec,
    session: Session<'a>,
    out: Vec<u8>,
    spool: Option<Spool>,
    discarding: bool,
    chunk: u64,
}

enum Flow {
    Go,
    Stop,
}

impl Driver<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: &mut S) {
        let step = self.session.greeting();
        if let Flow::Stop = self.apply(step) {
            let _ = self.flush(stream).await;
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let timeout = self.shared.settings.timeout;
        loop {
            while let Some(ev) = self.codec.next_event() {
                if let Flow::Stop = self.event(ev, stream).await {
                    let _ = self.flush(stream).await;
                    return;
                }
            }
            if self.flush(stream).await.is_err() {
                return;
            }
            match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => self.codec.feed(&buf[..n]),
                Ok(Err(e)) => {
                    tracing::info!("lost connection from {}: {e}", self.session.client);
                    return;
                }
                Err(_) => {
                    let r = self.session.timeout();
                    let _ = stream.write_all(&r.to_bytes()).await;
                    return;
                }
            }
        }
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        if !self.out.is_empty() {
            stream.write_all(&self.out).await?;
            self.out.clear();
        }
        stream.flush().await
    }

    async fn event<S: AsyncRead + AsyncWrite + Unpin>(&mut self, ev: Event, stream: &mut S) -> Flow {
        match ev {
            Event::Command(cmd) => {
                let mut step = self.session.command(cmd);
                if let Next::Lookup(rcpt) = step.next {
                    let s = &self.shared.settings;
                    let lookup = s.userdb.lookup(&rcpt.local, &rcpt.domain).await;
                    step = self.session.rcpt_lookup(rcpt, lookup);
                }
                self.apply(step)
            }
            Event::LineTooLong => {
                let step = self.session.line_too_long();
                self.apply(step)
            }
            Event::BareLineEnding => {
                let step = self.session.bare_line_ending();
                self.apply(step)
            }
            Event::Data(bytes) | Event::Chunk(bytes) => {
                if !self.discarding
                    && self.session.data_bytes(bytes.len())
                    && let Some(spool) = &mut self.spool
                {
                    spool.write(&bytes);
                }
                Flow::Go
            }
            // The codec hands the content over CRLF-normalised; LMTP comes from our own MTA,
            // so a bare line ending is taken as a line ending rather than refused.
            Event::DataBareLineEnding => Flow::Go,
            Event::DataEnd => {
                // The replies of everything pipelined before the dot go out first.
                if self.flush(stream).await.is_err() {
                    return Flow::Stop;
                }
                self.content_end().await
            }
            Event::ChunkEnd { last } => {
                if std::mem::take(&mut self.discarding) {
                    return Flow::Go;
                }
                if last {
                    if self.flush(stream).await.is_err() {
                        return Flow::Stop;
                    }
                    self.content_end().await
                } else {
                    let step = self.session.chunk_done(self.chunk);
                    self.apply(step)
                }
            }
        }
    }

    /// Delivers to every recipient, then answers once per recipient.
    async fn content_end(&mut self) -> Flow {
        let spool = self.spool.take();
        let failed =
            spool.as_ref().and_then(|s| s.failed.clone()).or_else(|| spool.is_none().then(|| "no content".into()));
        let jobs = match self.session.jobs(SystemTime::now(), failed.as_deref()) {
            Ok(jobs) => jobs,
            Err(step) => return self.apply(step),
        };
        let n = jobs.len();
        let shared = self.shared.clone();
        let outcomes = match spool {
            Some(spool) => tokio::task::spawn_blocking(move || {
                jobs.iter().map(|j| crate::deliver::deliver(&shared.settings, j, &spool)).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_else(|e| vec![Outcome::Failed(format!("delivery task: {e}")); n]),
            None => vec![Outcome::Failed("no content".into()); n],
        };
        let step = self.session.delivered(outcomes);
        self.apply(step)
    }

    fn apply(&mut self, step: Step) -> Flow {
        for r in &step.replies {
            self.out.extend_from_slice(&r.to_bytes());
        }
        if self.session.tx.is_none() {
            // RSET, LHLO or a refused transaction: chunks spooled so far are dropped.
            self.spool = None;
        }
        match step.next {
            Next::Continue => Flow::Go,
            Next::Close => Flow::Stop,
            // Resolved in `event` before a step is applied.
            Next::Lookup(_) => Flow::Go,
            Next::Data => {
                self.spool = Some(Spool::new(&self.shared.settings.temp_dir));
                self.codec.start_data();
                Flow::Go
            }
            Next::Chunk { size, last } => {
                if self.spool.is_none() {
                    self.spool = Some(Spool::new(&self.shared.settings.temp_dir));
                }
                self.chunk = size;
                self.codec.start_bdat(size, last);
                Flow::Go
            }
            Next::Discard { size } => {
                self.discarding = true;
                self.codec.start_bdat(size, false);
                Flow::Go
            }
        }
    }
}

//! The tokio driver: moves bytes between the socket, the codec, the session and the queue.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rpost_queue::{ClientInfo, Envelope, Queue, Recipient};
use rpost_smtp_proto::{Event, Limits, Reply, ServerCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::dnscheck;
use crate::sasl::{self, ServerReply};
use crate::session::{AuthAnswer, AuthOutcome, AuthStart, Client, Content, Next, Session, Step};
use crate::settings::Settings;

/// State shared by all sessions of one smtpd process.
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    pub queue: Queue,
    /// The queue directory as this process sees it (`/` when chrooted): base of
    /// smtpd_sasl_path.
    queue_root: PathBuf,
    /// Wakes the task that tells qmgr about new mail.
    qmgr: Arc<tokio::sync::Notify>,
    qmgr_socket: PathBuf,
    qmgr_task: std::sync::Once,
    conns: Mutex<HashMap<IpAddr, usize>>,
    /// For the client's name and the DNS restrictions.
    dns: rpost_dns::Resolver,
}

impl Shared {
    pub fn new(settings: Settings, queue_root: PathBuf) -> Shared {
        Shared {
            qmgr: Arc::new(tokio::sync::Notify::new()),
            qmgr_socket: queue_root.join("public").join("qmgr"),
            qmgr_task: std::sync::Once::new(),
            queue: Queue::new(queue_root.clone()),
            queue_root,
            conns: Mutex::new(HashMap::new()),
            dns: rpost_dns::Resolver::new(&settings.dns_servers),
            settings,
        }
    }

    /// Tells qmgr about new mail. One trigger task per process (started on first use, inside
    /// the runtime): commits that happen while a trigger is being sent are covered by one
    /// more trigger after it (Notify keeps a single permit), so qmgr always hears of the
    /// newest mail, yet a busy smtpd sends far fewer triggers than it queues messages.
    fn wake_qmgr(&self) {
        self.qmgr_task.call_once(|| {
            let wake = self.qmgr.clone();
            let socket = self.qmgr_socket.clone();
            tokio::spawn(async move {
                loop {
                    wake.notified().await;
                    trigger_qmgr(&socket).await;
                }
            });
        });
        self.qmgr.notify_one();
    }
}

/// Counts a client's connection for smtpd_client_connection_count_limit; released on drop.
struct ConnSlot<'a> {
    shared: &'a Shared,
    addr: IpAddr,
}

impl Drop for ConnSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.shared.conns.lock()
            && let Some(n) = m.get_mut(&self.addr)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.addr);
            }
        }
    }
}

/// The client's names (Postfix's smtpd_peername_lookup; see
/// [`dnscheck::client_names`]). `None`: no lookup wanted, the client stays `unknown`.
async fn client_names(shared: &Shared, addr: IpAddr) -> Option<dnscheck::ClientNames> {
    if !shared.settings.peername_lookup {
        return None;
    }
    Some(dnscheck::client_names(&shared.dns, addr).await)
}

/// Serves one SMTP client to the end.
pub async fn serve<S>(shared: Arc<Shared>, stream: S, client: Client)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    serve_at(shared, stream, client, None).await
}

/// As [`serve`], knowing our own address (passed to the SASL server as `lip`/`lport`).
pub async fn serve_at<S>(shared: Arc<Shared>, mut stream: S, client: Client, local: Option<std::net::SocketAddr>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let s = &shared.settings;
    let mut client = client;
    // TCP clients only: a local (UNIX socket) client is localhost.
    if local.is_some()
        && let Some(names) = client_names(&shared, client.addr).await
    {
        client.set_names(names);
    }
    tracing::info!("connect from {}", client.display());
    let over = {
        let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        let n = conns.entry(client.addr).or_insert(0);
        *n += 1;
        s.connection_count_limit > 0 && *n > s.connection_count_limit && !s.mynetworks.contains(client.addr)
    };
    let _slot = ConnSlot { shared: &shared, addr: client.addr };
    if over {
        tracing::warn!("Connection concurrency limit exceeded: {} from {}", s.connection_count_limit, client.display());
        let r = Reply::new(421, "4.7.0", format!("{} Error: too many connections from {}", s.myhostname, client.addr));
        let _ = stream.write_all(&r.to_bytes()).await;
        tracing::info!("disconnect from {}", client.display());
        return;
    }
    let mut driver = Driver {
        shared: &shared,
        codec: ServerCodec::new(Limits { max_line: s.line_length_limit, ..Limits::default() }),
        session: Session::new(s, client),
        out: Vec::new(),
        writer: None,
        bare: false,
        discarding: false,
        chunk: 0,
        sasl: None,
        local,
    };
    let tls = s.tls.clone();
    match tls {
        // smtps: TLS from the first byte, then the greeting inside it.
        Some(cfg) if s.tls_wrapper => match rpost_tls::accept(cfg, stream, s.starttls_timeout).await {
            Ok(mut tls) => {
                driver.session.tls_started(rpost_tls::TlsInfo::of(tls.get_ref().1));
                driver.run(&mut tls, true).await;
            }
            Err(e) => driver.session.tls_failed(&e.to_string()),
        },
        _ => {
            if let End::StartTls = driver.run(&mut stream, true).await {
                // The session offers STARTTLS only with a configuration.
                if let Some(cfg) = s.tls.clone() {
                    match rpost_tls::accept(cfg, stream, s.starttls_timeout).await {
                        Ok(mut tls) => {
                            driver.session.tls_started(rpost_tls::TlsInfo::of(tls.get_ref().1));
                            // A second STARTTLS is refused by the session, so this run ends the session.
                            driver.run(&mut tls, false).await;
                        }
                        Err(e) => driver.session.tls_failed(&e.to_string()),
                    }
                }
            }
        }
    }
    if let Some(w) = driver.writer.take() {
        w.abort().await;
    }
    tracing::info!("{}", driver.session.disconnect_line());
}

struct Driver<'a> {
    shared: &'a Shared,
    codec: ServerCodec,
    session: Session<'a>,
    /// Replies not yet sent: flushed before every read, so pipelined commands get their
    /// replies in one write.
    out: Vec<u8>,
    writer: Option<MessageWriter>,
    bare: bool,
    discarding: bool,
    /// Size of the BDAT chunk being received, for its 250 reply.
    chunk: u64,
    /// The connection to the SASL server (smtpd_sasl_path), opened at connect time for the
    /// mechanism list; dropped after a cancelled or broken exchange, reopened on demand.
    sasl: Option<sasl::Conn>,
    local: Option<std::net::SocketAddr>,
}

enum Flow {
    Go,
    Stop,
    StartTls,
}

/// How a run over one stream ended.
enum End {
    Done,
    /// The client asked for TLS: the caller runs the handshake and a new run over it.
    StartTls,
}

/// Longest SASL response line, with CRLF (Postfix's limit).
const MAX_AUTH_LINE: usize = 12288;

impl Driver<'_> {
    /// Looks up what the session's restrictions miss for `cmd` (`None`: the greeting;
    /// `end`: the end of the content), one answer at a time, until nothing is missing.
    async fn look_up(&mut self, cmd: Option<&rpost_smtp_proto::Command>, end: bool) {
        // Each round answers one query, and every query is a new one: this bounds the loop
        // by the restrictions configured; the cap is a guard.
        for _ in 0..64 {
            let next = if end { self.session.next_lookup_at_end_of_data() } else { self.session.next_lookup(cmd) };
            let Some(l) = next else { return };
            let s = &self.shared.settings;
            let v = match &l.query {
                dnscheck::Query::Policy { endpoint, .. } => {
                    crate::policysvc::ask(
                        endpoint,
                        &self.shared.queue_root,
                        &l.request,
                        s.policy_timeout,
                        s.policy_try_limit,
                    )
                    .await
                }
                q => dnscheck::resolve(&self.shared.dns, q).await,
            };
            tracing::debug!("lookup {:?}: {v:?}", l.query);
            self.session.answer(l.query, v);
        }
        tracing::warn!("restriction lookups: gave up after 64 answers for one command");
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: &mut S, greet: bool) -> End {
        if greet {
            if self.session.wants_sasl() {
                self.sasl_connect().await;
            }
            self.look_up(None, false).await;
            let step = self.session.greeting();
            if let Flow::Stop = self.apply(step, stream).await {
                let _ = self.flush(stream).await;
                return End::Done;
            }
        }
        let mut buf = vec![0u8; 64 * 1024];
        let timeout = self.shared.settings.timeout;
        loop {
            while let Some(ev) = self.codec.next_event() {
                match self.event(ev, stream).await {
                    Flow::Go => {}
                    Flow::Stop => {
                        let _ = self.flush(stream).await;
                        return End::Done;
                    }
                    Flow::StartTls => return End::StartTls,
                }
            }
            if self.flush(stream).await.is_err() {
                return End::Done;
            }
            match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
                Ok(Ok(0)) => {
                    tracing::info!("lost connection after {} from {}", "read", self.session.client.display());
                    return End::Done;
                }
                Ok(Ok(n)) => self.codec.feed(&buf[..n]),
                Ok(Err(e)) => {
                    tracing::info!("lost connection from {}: {e}", self.session.client.display());
                    return End::Done;
                }
                Err(_) => {
                    let r = self.session.timeout();
                    let _ = stream.write_all(&r.to_bytes()).await;
                    return End::Done;
                }
            }
        }
    }

    /// Opens the SASL server connection and tells the session its mechanisms. Failure is a
    /// warning: AUTH is then not offered.
    async fn sasl_connect(&mut self) -> bool {
        let Some(cfg) = &self.shared.settings.sasl else { return false };
        let path = if cfg.path.is_absolute() { cfg.path.clone() } else { self.shared.queue_root.join(&cfg.path) };
        let timeout = self.shared.settings.timeout.min(Duration::from_secs(30));
        match sasl::Conn::connect(&path, timeout).await {
            Ok(conn) => {
                self.session.set_mechanisms(conn.mechanisms.clone());
                self.sasl = Some(conn);
                true
            }
            Err(e) => {
                tracing::warn!("SASL: Connect to {} failed: {e}", path.display());
                self.session.set_mechanisms(Vec::new());
                false
            }
        }
    }

    /// Reads one raw line from the client (a SASL response). None: gone or timed out
    /// (already logged and answered).
    async fn read_line<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: &mut S) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 16 * 1024];
        let timeout = self.shared.settings.timeout;
        loop {
            match self.codec.next_line(MAX_AUTH_LINE) {
                // Not base64: the session answers "Cannot decode response".
                Some(Err(_)) => return Some(b"\x00".to_vec()),
                Some(Ok(line)) => return Some(line),
                None => {}
            }
            match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    tracing::info!("lost connection after AUTH from {}", self.session.client.display());
                    return None;
                }
                Ok(Ok(n)) => self.codec.feed(&buf[..n]),
                Err(_) => {
                    let r = self.session.timeout();
                    let _ = stream.write_all(&r.to_bytes()).await;
                    return None;
                }
            }
        }
    }

    /// Runs one AUTH exchange between the client and the SASL server.
    async fn sasl_exchange<S: AsyncRead + AsyncWrite + Unpin>(&mut self, start: AuthStart, stream: &mut S) -> Flow {
        if self.sasl.is_none() && !self.sasl_connect().await {
            let step = self.session.auth_done(AuthOutcome::TempFail("authentication server unavailable".into()));
            return self.apply(step, stream).await;
        }
        let Some(mut conn) = self.sasl.take() else { return Flow::Stop };
        let service = self.shared.settings.sasl.as_ref().map(|s| s.service.clone()).unwrap_or_else(|| "smtp".into());
        let client = &self.session.client;
        let peer = sasl::Peer {
            local: self.local.map(|a| (a.ip(), a.port())),
            remote: (client.addr, client.port),
            secured: self.session.tls.is_some(),
        };
        let mut id = 0;
        let mut reply = conn.auth(&start.mechanism, &service, &peer, start.initial.as_deref()).await.map(|(i, r)| {
            id = i;
            r
        });
        loop {
            let outcome = match reply {
                Err(e) => AuthOutcome::TempFail(e.to_string()),
                Ok(ServerReply::Ok { user }) => AuthOutcome::Success { user },
                Ok(ServerReply::Fail { reason, temp: true }) => {
                    AuthOutcome::TempFail(reason.unwrap_or_else(|| "temporary failure".into()))
                }
                Ok(ServerReply::Fail { reason, temp: false }) => AuthOutcome::Failure { reason },
                Ok(ServerReply::Cont(challenge)) => {
                    let r = self.session.auth_challenge(&challenge);
                    self.out.extend_from_slice(&r);
                    if self.flush(stream).await.is_err() {
                        return Flow::Stop;
                    }
                    let Some(line) = self.read_line(stream).await else { return Flow::Stop };
                    match self.session.auth_response(&line) {
                        AuthAnswer::Send(resp) => {
                            reply = conn.cont(id, &resp).await;
                            continue;
                        }
                        // Dovecot's protocol has no cancel: the connection is dropped and a
                        // new one opened for the next AUTH.
                        AuthAnswer::Abort(step) => return self.apply(step, stream).await,
                    }
                }
            };
            if !matches!(outcome, AuthOutcome::TempFail(_)) {
                self.sasl = Some(conn);
            }
            let step = self.session.auth_done(outcome);
            return self.apply(step, stream).await;
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
                let pipelined = self.codec.buffered() > 0;
                // What the restrictions will ask DNS about this command, asked first: the
                // session itself does no I/O.
                if let Ok(c) = &cmd {
                    self.look_up(Some(c), false).await;
                }
                let step = self.session.command(cmd, pipelined);
                self.apply(step, stream).await
            }
            Event::LineTooLong => {
                let step = self.session.line_too_long();
                self.apply(step, stream).await
            }
            Event::BareLineEnding => {
                let step = self.session.bare_line_ending();
                self.apply(step, stream).await
            }
            Event::Data(bytes) | Event::Chunk(bytes) => {
                if !self.discarding && self.session.data_bytes(bytes.len()) && self.writer.is_some() {
                    let ok = match &self.writer {
                        Some(w) => w.write(bytes).await,
                        None => false,
                    };
                    if !ok {
                        tracing::warn!("queue file write failed; the message will be refused at its end");
                    }
                }
                Flow::Go
            }
            Event::DataBareLineEnding => {
                self.bare = true;
                Flow::Go
            }
            Event::DataEnd => self.content_end(stream).await,
            Event::ChunkEnd { last } => {
                if self.discarding {
                    self.discarding = false;
                    return Flow::Go;
                }
                if last {
                    self.content_end(stream).await
                } else {
                    let step = self.session.chunk_done(self.chunk);
                    if self.session.tx.is_none() {
                        self.abort_writer().await;
                    }
                    self.apply(step, stream).await
                }
            }
        }
    }

    async fn abort_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.abort().await;
        }
    }

    async fn content_end<S: AsyncRead + AsyncWrite + Unpin>(&mut self, stream: &mut S) -> Flow {
        let bare = std::mem::take(&mut self.bare);
        if !bare {
            self.look_up(None, true).await;
        }
        if let Some(step) = self.session.content_end(bare) {
            self.abort_writer().await;
            return self.apply(step, stream).await;
        }
        let result = match self.writer.take() {
            Some(w) => w.commit().await,
            None => Err("no queue file".to_string()),
        };
        if result.is_ok() {
            self.shared.wake_qmgr();
        }
        let step = self.session.committed(result);
        self.apply(step, stream).await
    }

    /// Carries out a step: delay, reply, and the codec/queue consequences.
    async fn apply<S: AsyncRead + AsyncWrite + Unpin>(&mut self, step: Step, stream: &mut S) -> Flow {
        if let Some(d) = step.delay {
            if self.flush(stream).await.is_err() {
                return Flow::Stop;
            }
            tokio::time::sleep(d).await;
        }
        if let Some(r) = &step.reply {
            self.out.extend_from_slice(&r.to_bytes());
        }
        match step.next {
            Next::Continue => Flow::Go,
            Next::Close => Flow::Stop,
            Next::StartTls => {
                if self.flush(stream).await.is_err() {
                    return Flow::Stop;
                }
                // CVE-2011-0411: whatever the client sent after STARTTLS in plaintext is
                // thrown away, never read as if it came over TLS.
                let injected = self.codec.take_buffered();
                if !injected.is_empty() {
                    tracing::warn!(
                        "{}: discarding {} bytes of plaintext pipelined after STARTTLS",
                        self.session.client.display(),
                        injected.len()
                    );
                }
                Flow::StartTls
            }
            Next::Auth(start) => Box::pin(self.sasl_exchange(start, stream)).await,
            Next::Chunk { size, last } => {
                self.chunk = size;
                self.codec.start_bdat(size, last);
                Flow::Go
            }
            Next::Discard { size } => {
                self.discarding = true;
                self.codec.start_bdat(size, false);
                Flow::Go
            }
            Next::Open(content) => {
                let opened = self.open().await;
                let ok = opened.is_ok();
                let step = self.session.data_opened(content, opened);
                if ok && content == Content::Data {
                    self.codec.start_data();
                }
                if ok && let Some(w) = &self.writer {
                    let header = self.session.received_header(SystemTime::now());
                    self.session.data_bytes(header.len());
                    w.write(header.into_bytes()).await;
                }
                Box::pin(self.apply(step, stream)).await
            }
        }
    }

    /// Expands virtual aliases and creates the queue file.
    async fn open(&mut self) -> Result<String, String> {
        let env = build_envelope(&self.session, &self.shared.settings)?;
        let (writer, id) = MessageWriter::start(self.shared.queue.clone(), env).await?;
        self.writer = Some(writer);
        Ok(id)
    }
}

/// The queue-file envelope of the session's transaction, recipients alias-expanded.
fn build_envelope(session: &Session<'_>, s: &Settings) -> Result<Envelope, String> {
    let tx = session.tx.as_ref().ok_or("no transaction")?;
    let opts = &s.alias_expansion;
    if let Some(broken) = &s.domains.virtual_alias_maps.broken {
        // Delivering unexpanded would send mail to the wrong place: refuse for now.
        return Err(format!("virtual alias table unavailable: {broken}"));
    }
    let mut recipients: Vec<Recipient> = Vec::new();
    for r in &tx.rcpts {
        let targets = match rpost_lookup::expand_virtual(&s.domains.virtual_alias_maps.tables, &r.address, opts) {
            Ok(rpost_lookup::Expansion::Unchanged) => vec![r.address.clone()],
            Ok(rpost_lookup::Expansion::To(list)) => list,
            Err(e) => return Err(format!("virtual alias expansion of {}: {e}", r.address)),
        };
        for address in targets {
            if recipients.iter().any(|x| x.address == address) {
                continue;
            }
            recipients.push(Recipient {
                address,
                original: r.address.clone(),
                orcpt: r.orcpt.clone(),
                notify: r.notify,
                status: rpost_queue::RcptStatus::Pending,
            });
        }
    }
    Ok(Envelope {
        sender: tx.sender.clone(),
        recipients,
        arrival: SystemTime::now(),
        client: ClientInfo {
            name: session.client.name.clone(),
            addr: session.client.addr.to_string(),
            port: session.client.port,
            helo: session.helo.clone().unwrap_or_default(),
            protocol: if session.esmtp { "ESMTP".into() } else { "SMTP".into() },
            sasl_username: session.sasl_user.clone(),
        },
        body: tx.params.body.map(|b| match b {
            rpost_smtp_proto::Body::SevenBit => rpost_queue::BodyType::SevenBit,
            rpost_smtp_proto::Body::EightBitMime => rpost_queue::BodyType::EightBitMime,
            rpost_smtp_proto::Body::BinaryMime => rpost_queue::BodyType::BinaryMime,
        }),
        smtputf8: tx.params.smtputf8,
        ret: tx.params.ret.map(|r| match r {
            rpost_smtp_proto::Ret::Full => rpost_queue::Ret::Full,
            rpost_smtp_proto::Ret::Hdrs => rpost_queue::Ret::Hdrs,
        }),
        envid: tx.params.envid.clone(),
        attrs: Vec::new(),
    })
}

enum WriterMsg {
    Data(Vec<u8>),
    Commit(oneshot::Sender<Result<String, String>>),
    Abort(oneshot::Sender<()>),
}

/// A queue file being written on a blocking thread, so neither disk writes nor fsync stall
/// the sessions on this runtime; fsyncs of concurrent sessions overlap.
struct MessageWriter {
    tx: mpsc::Sender<WriterMsg>,
}

impl MessageWriter {
    async fn start(queue: Queue, env: Envelope) -> Result<(MessageWriter, String), String> {
        let (tx, mut rx) = mpsc::channel::<WriterMsg>(64);
        let (id_tx, id_rx) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let mut msg = match queue.create(&env) {
                Ok(m) => {
                    let _ = id_tx.send(Ok(m.id().to_string()));
                    m
                }
                Err(e) => {
                    let _ = id_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let mut failed: Option<String> = None;
            while let Some(m) = rx.blocking_recv() {
                match m {
                    WriterMsg::Data(bytes) => {
                        if failed.is_none()
                            && let Err(e) = msg.write_content(&bytes)
                        {
                            failed = Some(e.to_string());
                        }
                    }
                    WriterMsg::Commit(done) => {
                        let result = match failed {
                            Some(e) => {
                                msg.abort();
                                Err(e)
                            }
                            None => msg.commit().map(|id| id.to_string()).map_err(|e| e.to_string()),
                        };
                        let _ = done.send(result);
                        return;
                    }
                    WriterMsg::Abort(done) => {
                        msg.abort();
                        let _ = done.send(());
                        return;
                    }
                }
            }
            // Channel closed without commit: the client went away or the message was refused.
            msg.abort();
        });
        let id = id_rx.await.map_err(|_| "queue writer died".to_string())??;
        Ok((MessageWriter { tx }, id))
    }

    async fn write(&self, bytes: Vec<u8>) -> bool {
        self.tx.send(WriterMsg::Data(bytes)).await.is_ok()
    }

    async fn commit(self) -> Result<String, String> {
        let (done_tx, done_rx) = oneshot::channel();
        self.tx.send(WriterMsg::Commit(done_tx)).await.map_err(|_| "queue writer died".to_string())?;
        done_rx.await.map_err(|_| "queue writer died".to_string())?
    }

    /// Removes the unfinished file, and returns once it is gone.
    async fn abort(self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Abort(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

/// Tells qmgr there is new mail in incoming/ (Postfix's 'I' trigger); best effort: qmgr also
/// scans periodically.
async fn trigger_qmgr(path: &std::path::Path) {
    let send = async {
        let mut s = tokio::net::UnixStream::connect(path).await?;
        s.write_all(b"I").await?;
        s.shutdown().await
    };
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), send).await {
        tracing::debug!("qmgr trigger {}: {e}", path.display());
    }
}

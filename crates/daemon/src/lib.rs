//! rpost-daemon - the skeleton every master.cf service runs in
//!
//! # SUMMARY
//! The part of each daemon that is the same for all of them, as Postfix's
//! `single_server`/`multi_server`/`trigger_server` skeletons: read what rmaster handed over,
//! load main.cf with the service's `-o` overrides, set up logging, drop privileges, accept
//! clients on the inherited listeners and keep rmaster informed.
//!
//! # DESCRIPTION
//! A daemon's `main` calls [`Daemon::start`] (configuration and logging; still privileged,
//! so it may open key files), does its own pre-jail set-up, then calls [`Daemon::serve`] with
//! a per-client handler. `serve` chroots and drops to `mail_owner` as master.cf says, builds
//! the tokio runtime and accepts on every inherited listener.
//!
//! Life cycle, as in Postfix:
//! * the child reports `Available`/`Taken` (and its use count) on its status pipe, on change
//!   only; it is `Taken` while it runs [`Options::max_clients`] clients and will not accept
//!   more, so rmaster starts another process (up to the service's maxproc) when the listener
//!   has connections waiting;
//! * a quarter of `max_use` before the end it reports `Retiring`: still accepting, but no
//!   longer counted as available; rmaster starts its successor then, so nobody waits for a
//!   process start when it stops;
//! * after `max_use` clients it takes no new one (it reports `Taken`, so rmaster starts a
//!   fresh process for them) and exits as soon as it has no client left: a busy process is
//!   never cut off, and, unlike Postfix's multi_server, a process under steady overlapping
//!   load is still recycled; it exits after `max_idle` without clients (unless
//!   [`Options::long_running`]);
//! * end-of-file on the status pipe (rmaster reloaded, or is gone) or SIGTERM: stop
//!   accepting at once, let current clients finish, exit. On SIGTERM (`rmaster stop`) the
//!   daemon's [`Options::on_terminate`] runs first and is awaited, so work the process handed
//!   on (imapd's per-user processes) is told before the process is gone.
//!
//! Stream listeners (`inet`, `unix`) yield [`Client::Stream`]; `fifo` services yield each
//! batch of bytes written into the FIFO as a [`Client::Trigger`], and so do stream clients of
//! a trigger server ([`Options::triggers`]), such as rmaster's wakeup requests.
//!
//! The configuration is the main.cf snapshot rmaster loaded (passed as a sealed memory
//! file), not whatever main.cf holds on disk now: an edit takes effect at `rmaster reload`,
//! and a broken edit never reaches new processes of a running system.
//!
//! # SECURITY
//! Privileges are dropped before the first byte is read from any client. When the process
//! is not root it cannot drop, runs as it is, and logs that once. The program refuses to run
//! when it was not started by rmaster (no inherited descriptors), so it cannot be pointed at
//! a terminal by mistake.
//!
//! # CONFIGURATION
//! `mail_owner`, `queue_directory` (chroot jail), `max_use`, `max_idle`, `syslog_name`,
//! `maillog_file`, plus `-o name=value` and `-v` from the master.cf command line.
//!
//! # STANDARDS
//! None.

pub mod delivery;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rpost_config::{Config, Params};
use rpost_ipc::{ChildEnv, ChildState, ChildStatus};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Notify, watch};

/// Start-up errors (each is fatal for the daemon).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("this program is started by rmaster from master.cf, not by hand ({0})")]
    NotFromMaster(rpost_ipc::IpcError),
    #[error("{0}")]
    Config(#[from] rpost_config::ConfigError),
    #[error("{0}")]
    Log(#[from] rpost_log::LogError),
    #[error("{0}")]
    Privilege(#[from] rpost_privilege::PrivError),
    #[error("bad command-line argument: {0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

/// How a daemon wants the skeleton to behave.
#[derive(Debug, Clone)]
pub struct Options {
    /// Clients served at once before the process reports itself taken.
    pub max_clients: usize,
    /// Ignore max_use and max_idle (queue manager style daemons).
    pub long_running: bool,
    /// A trigger server (Postfix trigger_server): a stream client's bytes, up to
    /// [`MAX_TRIGGER`] and until it closes, are handed over as one [`Client::Trigger`].
    pub triggers: bool,
    /// Replaces the `max_use` parameter (0: no limit), for a daemon whose clients leave no
    /// state behind in it (imapd's login processes hand sessions on to per-user processes).
    pub max_use: Option<u64>,
    /// Awaited on SIGTERM before the process finishes its clients and exits.
    pub on_terminate: Option<OnTerminate>,
}

/// What a daemon does when rmaster stops the system (SIGTERM), before it exits: a spawned
/// task would race the runtime's shutdown, so the skeleton awaits this itself.
#[derive(Clone)]
pub struct OnTerminate(pub Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>);

impl std::fmt::Debug for OnTerminate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnTerminate")
    }
}

/// Longest trigger request a trigger server reads from one client.
pub const MAX_TRIGGER: usize = 1024;

impl Default for Options {
    fn default() -> Self {
        Options { max_clients: 1000, long_running: false, triggers: false, max_use: None, on_terminate: None }
    }
}

/// A daemon between start-up and serving.
#[derive(Debug)]
pub struct Daemon {
    program: &'static str,
    env: ChildEnv,
    params: Params,
    args: Vec<String>,
    verbose: bool,
    status: OwnedFd,
    listeners: Vec<OwnedFd>,
}

/// A client handed to the daemon's handler.
#[derive(Debug)]
pub enum Client {
    /// A connection on an `inet` or `unix` listener.
    Stream(Stream),
    /// Bytes written into a `fifo` service.
    Trigger(Vec<u8>),
}

/// A connected client stream.
#[derive(Debug)]
pub enum Stream {
    Tcp { stream: TcpStream, peer: SocketAddr, local: SocketAddr },
    Unix(UnixStream),
}

impl Stream {
    /// The client's address in Postfix log form: `host[addr]` is the caller's job; this is the
    /// address (`127.0.0.1`, `::1`) or `local` for a UNIX-domain client.
    pub fn peer_addr(&self) -> String {
        match self {
            Stream::Tcp { peer, .. } => peer.ip().to_string(),
            Stream::Unix(_) => "local".into(),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp { stream, .. } => Pin::new(stream).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp { stream, .. } => Pin::new(stream).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp { stream, .. } => Pin::new(stream).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp { stream, .. } => Pin::new(stream).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A daemon's command line as master.cf gives it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// `-o name=value`, in order (line 0: the line is the master's business).
    pub overrides: Vec<(String, String, usize)>,
    /// `-v`: log debug lines.
    pub verbose: bool,
    /// Everything else, for the daemon.
    pub rest: Vec<String>,
}

/// Splits the master.cf command-line arguments into `-o` overrides, the `-v` flag, and the
/// rest.
pub fn parse_args(args: &[String]) -> Result<Args, DaemonError> {
    let mut overrides = Vec::new();
    let mut verbose = false;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let pair = if arg == "-o" {
            Some(it.next().ok_or_else(|| DaemonError::Usage("-o needs name=value".into()))?.as_str())
        } else {
            arg.strip_prefix("-o")
        };
        match pair {
            Some(pair) => {
                let (name, value) = pair
                    .split_once('=')
                    .ok_or_else(|| DaemonError::Usage(format!("-o {pair}: expected name=value")))?;
                overrides.push((name.trim().to_string(), value.trim().to_string(), 0));
            }
            None if arg == "-v" => verbose = true,
            None => rest.push(arg.clone()),
        }
    }
    Ok(Args { overrides, verbose, rest })
}

/// Reads the whole snapshot with pread: sibling processes share the file offset.
fn read_snapshot(file: std::fs::File) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = file.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

impl Daemon {
    /// Reads the hand-over from rmaster, loads the configuration and installs logging.
    pub fn start(program: &'static str) -> Result<Daemon, DaemonError> {
        let env = ChildEnv::from_env().map_err(DaemonError::NotFromMaster)?;
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let Args { overrides, verbose, rest: args } = parse_args(&argv)?;
        let snapshot = rpost_privilege::adopt_inherited(ChildEnv::CONFIG_FD, 1)?.remove(0);
        let text = read_snapshot(std::fs::File::from(snapshot))
            .map_err(|source| DaemonError::Io { what: "main.cf snapshot from rmaster".into(), source })?;
        let main = rpost_config::maincf::MainCf::parse_bytes(&env.config_dir.join("main.cf"), &text)?;
        let config = Config::from_parts(&env.config_dir, &main, rpost_config::MasterCf::default())?;
        let params = config.params.with_overrides("master.cf", &overrides);
        rpost_log::init(&rpost_log::LogOptions {
            syslog_name: params.get("syslog_name")?,
            program: program.to_string(),
            maillog_file: params.get("maillog_file")?,
            verbose,
            detached: std::env::var_os("RPOST_DETACHED").is_some(),
            chroot: env.chroot,
        })?;
        let status = rpost_privilege::adopt_inherited(ChildEnv::STATUS_FD, 1)?.remove(0);
        let listeners = rpost_privilege::adopt_inherited(ChildEnv::LISTEN_FD_START, env.listen_fds)?;
        Ok(Daemon { program, env, params, args, verbose, status, listeners })
    }

    /// main.cf with this service's `-o` overrides.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// `-v` was given in master.cf (verbose logging).
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// Command-line arguments other than `-o` and `-v`.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The queue directory as this process will see it after start-up: `/` when master.cf
    /// chroots the service into it, else `queue_directory`.
    pub fn queue_root(&self) -> Result<PathBuf, rpost_config::ConfigError> {
        if self.env.chroot { Ok(PathBuf::from("/")) } else { Ok(PathBuf::from(self.params.get("queue_directory")?)) }
    }

    /// What rmaster handed over.
    pub fn env(&self) -> &ChildEnv {
        &self.env
    }

    /// Drops privileges and serves clients until told to stop. Returns the process exit code.
    pub fn serve<H, F>(self, options: Options, handler: H) -> ExitCode
    where
        H: Fn(Client) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        match self.serve_inner(options, handler) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("fatal: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn serve_inner<H, F>(self, options: Options, handler: H) -> Result<(), DaemonError>
    where
        H: Fn(Client) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let jail = self.env.chroot.then(|| self.params.get("queue_directory")).transpose()?.map(PathBuf::from);
        let owner = self.params.get("mail_owner")?;
        if self.env.unpriv {
            match rpost_privilege::drop_privileges(&owner, jail.as_deref())? {
                rpost_privilege::Dropped::To(id) => tracing::debug!("running as {} (uid {})", id.name, id.uid),
                rpost_privilege::Dropped::NotRoot { uid } => {
                    tracing::info!("not started as root: running as uid {uid}, privileges not dropped")
                }
            }
        }
        let limits = Limits {
            max_use: match options.max_use {
                _ if options.long_running => 0,
                Some(n) => n,
                None => self.params.get_int("max_use")?.max(0) as u64,
            },
            max_idle: if options.long_running { None } else { Some(self.params.get_time("max_idle")?) },
            max_clients: options.max_clients.max(1),
            triggers: options.triggers,
        };
        // Worker threads carry the program's name, so top -H and perf tell the daemons apart.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(self.program)
            .build()
            .map_err(|source| DaemonError::Io { what: "tokio runtime".into(), source })?;
        let generation = self.env.generation;
        let program = self.program;
        rt.block_on(run(self.status, self.listeners, generation, limits, options.on_terminate, Arc::new(handler)))?;
        tracing::debug!("{program}: exiting");
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    /// 0 = unlimited.
    max_use: u64,
    max_idle: Option<Duration>,
    max_clients: usize,
    triggers: bool,
}

/// Shared accounting between the accept loops and the supervisor task.
struct Shared {
    active: AtomicUsize,
    uses: AtomicU64,
    /// Woken when a client finishes.
    done: Notify,
    /// Wakes the status writer; it reports the current state and use count.
    report: Notify,
    /// The use count of the last report written, and its wake-up (see `accept_loop`).
    reported_uses: AtomicU64,
    reported: Notify,
    /// Served max_use clients: exit as soon as none is left (Postfix multi_server).
    exhausted: std::sync::atomic::AtomicBool,
    stop: watch::Sender<bool>,
    limits: Limits,
}

impl Shared {
    /// Takes no more clients: at max_clients, or done with max_use (then it only finishes
    /// the clients it has, and rmaster starts another process for new ones).
    fn full(&self) -> bool {
        self.active.load(Ordering::SeqCst) >= self.limits.max_clients || self.exhausted.load(Ordering::SeqCst)
    }

    /// Use count from which the process reports [`ChildState::Retiring`]: a quarter of
    /// `max_use` before the end (never for a `max_use` under 4, or none).
    fn retire_at(&self) -> Option<u64> {
        let m = self.limits.max_use;
        (m >= 4).then(|| m - m / 4)
    }

    fn state(&self) -> ChildState {
        if self.full() {
            ChildState::Taken
        } else if self.retire_at().is_some_and(|at| self.uses.load(Ordering::SeqCst) >= at) {
            ChildState::Retiring
        } else {
            ChildState::Available
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    Fifo(tokio::net::unix::pipe::Receiver),
}

fn classify(fd: OwnedFd) -> Result<Listener, DaemonError> {
    use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
    use std::os::fd::AsRawFd;
    let io_err = |what: &str, source| DaemonError::Io { what: what.to_string(), source };
    if let Ok(addr) = getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
        let std_listener = |fd: OwnedFd| -> Result<std::net::TcpListener, DaemonError> {
            let l = std::net::TcpListener::from(fd);
            l.set_nonblocking(true).map_err(|e| io_err("listener", e))?;
            Ok(l)
        };
        return match addr.family() {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                Ok(Listener::Tcp(TcpListener::from_std(std_listener(fd)?).map_err(|e| io_err("listener", e))?))
            }
            _ => {
                let l = std::os::unix::net::UnixListener::from(fd);
                l.set_nonblocking(true).map_err(|e| io_err("listener", e))?;
                Ok(Listener::Unix(UnixListener::from_std(l).map_err(|e| io_err("listener", e))?))
            }
        };
    }
    let fifo = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(|e| io_err("fifo", e))?;
    Ok(Listener::Fifo(fifo))
}

async fn run<H, F>(
    status: OwnedFd,
    listeners: Vec<OwnedFd>,
    generation: u64,
    limits: Limits,
    on_terminate: Option<OnTerminate>,
    handler: Arc<H>,
) -> Result<(), DaemonError>
where
    H: Fn(Client) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let io_err = |what: &str, source| DaemonError::Io { what: what.to_string(), source };
    let status = std::os::unix::net::UnixStream::from(status);
    status.set_nonblocking(true).map_err(|e| io_err("status pipe", e))?;
    let status = UnixStream::from_std(status).map_err(|e| io_err("status pipe", e))?;
    let (mut status_rx, mut status_tx) = status.into_split();

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        active: AtomicUsize::new(0),
        uses: AtomicU64::new(0),
        done: Notify::new(),
        report: Notify::new(),
        reported_uses: AtomicU64::new(0),
        reported: Notify::new(),
        exhausted: std::sync::atomic::AtomicBool::new(false),
        stop: stop_tx.clone(),
        limits,
    });
    // Status writer: reports only changes (available/taken, and the use count at most about
    // once per wake-up), so a busy daemon costs rmaster next to nothing. A write error means
    // rmaster is gone, which the reader below notices too.
    let pid = std::process::id();
    let reporter = shared.clone();
    tokio::spawn(async move {
        let mut last: Option<(ChildState, u64)> = None;
        loop {
            let state = reporter.state();
            let uses = reporter.uses.load(Ordering::SeqCst);
            if last != Some((state, uses)) {
                last = Some((state, uses));
                let Ok(frame) = rpost_ipc::encode(&ChildStatus { pid, generation, state, uses }) else { return };
                if status_tx.write_all(&frame).await.is_err() {
                    return;
                }
                reporter.reported_uses.store(uses, Ordering::SeqCst);
                reporter.reported.notify_waiters();
            }
            reporter.report.notified().await;
        }
    });

    let mut accept_tasks = Vec::new();
    for fd in listeners {
        let listener = classify(fd)?;
        accept_tasks.push(tokio::spawn(accept_loop(listener, shared.clone(), handler.clone(), stop_rx.clone())));
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| io_err("SIGTERM handler", e))?;
    let mut buf = [0u8; 64];
    let mut stop_rx2 = stop_rx.clone();
    let mut last_busy = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut terminated = false;
    loop {
        tokio::select! {
            r = status_rx.read(&mut buf) => {
                // rmaster never writes; readable means end-of-file (reload or master exit).
                if matches!(r, Ok(0) | Err(_)) {
                    tracing::debug!("status pipe closed by rmaster: finishing");
                    break;
                }
            }
            _ = sigterm.recv() => {
                tracing::debug!("terminating on SIGTERM");
                terminated = true;
                break;
            }
            _ = stop_rx2.changed() => break,
            _ = tick.tick() => {
                // Use counts changed by clients are reported here, at most once a second.
                shared.report.notify_one();
                if shared.active.load(Ordering::SeqCst) > 0 {
                    last_busy = Instant::now();
                } else if let Some(idle) = limits.max_idle
                    && last_busy.elapsed() >= idle
                {
                    tracing::debug!("idle for {}s: exiting", idle.as_secs());
                    break;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
    if terminated && let Some(hook) = on_terminate {
        (hook.0)().await;
    }
    // Listeners are closed now: rmaster's copies keep accepting into its backlog. Finish the
    // clients in progress.
    while shared.active.load(Ordering::SeqCst) > 0 {
        let notified = shared.done.notified();
        if shared.active.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = sigterm.recv() => {
                tracing::debug!("SIGTERM while finishing clients: exiting now");
                break;
            }
        }
    }
    Ok(())
}

async fn accept_loop<H, F>(listener: Listener, shared: Arc<Shared>, handler: Arc<H>, mut stop: watch::Receiver<bool>)
where
    H: Fn(Client) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        // Back-pressure: at max_clients (or past max_use), stop accepting and stay "taken" so
        // rmaster can start another process for the connections waiting in the backlog.
        while shared.full() {
            let notified = shared.done.notified();
            if !shared.full() {
                break;
            }
            tokio::select! {
                _ = notified => {}
                _ = stop.changed() => return,
            }
        }
        let client = tokio::select! {
            _ = stop.changed() => return,
            c = next_client(&listener) => c,
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: log, breathe, retry; never spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
        let uses = shared.uses.fetch_add(1, Ordering::SeqCst) + 1;
        // rmaster must know at once when this process is full or retiring (to start another)
        // and that it has served someone (a later crash then is no start-up failure); other
        // changes wait for the periodic report.
        if uses == 1 || active == shared.limits.max_clients || shared.retire_at() == Some(uses) {
            shared.report.notify_one();
        }
        if uses == 1 {
            // The first client waits until rmaster has heard of it: a crash after its
            // greeting must not look like a start-up failure that throttles the service.
            // Bounded, in case the status pipe is stuck.
            let wait = async {
                loop {
                    let reported = shared.reported.notified();
                    if shared.reported_uses.load(Ordering::SeqCst) >= 1 {
                        break;
                    }
                    reported.await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
        }
        if shared.limits.max_use > 0 && uses == shared.limits.max_use {
            tracing::debug!("served {uses} clients (max_use): exiting when idle");
            shared.exhausted.store(true, Ordering::SeqCst);
            shared.report.notify_one();
        }
        let triggers = shared.limits.triggers;
        let handler = handler.clone();
        let task_shared = shared.clone();
        tokio::spawn(async move {
            let client = match client {
                Client::Stream(stream) if triggers => {
                    let t = read_trigger(stream).await;
                    tracing::debug!("trigger {:?}", String::from_utf8_lossy(&t));
                    Some(t).filter(|t| !t.is_empty()).map(Client::Trigger)
                }
                other => Some(other),
            };
            // A trigger client that sent nothing (timed out, or only connected) has no request.
            if let Some(client) = client {
                handler(client).await;
            }
            let left = task_shared.active.fetch_sub(1, Ordering::SeqCst) - 1;
            task_shared.done.notify_waiters();
            if left + 1 == task_shared.limits.max_clients {
                task_shared.report.notify_one();
            }
            // As Postfix's multi_server: after max_use, exit once no client is left, so a
            // busy process is never cut off and an idle one is recycled.
            if left == 0 && task_shared.exhausted.load(Ordering::SeqCst) {
                let _ = task_shared.stop.send(true);
            }
        });
    }
}

/// Reads one trigger request: what the client writes before closing, bounded in size and
/// time so a stuck client cannot hold a trigger server.
async fn read_trigger(mut stream: Stream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut limited = (&mut stream).take(MAX_TRIGGER as u64);
    let _ = tokio::time::timeout(Duration::from_secs(10), limited.read_to_end(&mut buf)).await;
    buf
}

async fn next_client(listener: &Listener) -> io::Result<Client> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            let local = stream.local_addr()?;
            Ok(Client::Stream(Stream::Tcp { stream, peer, local }))
        }
        Listener::Unix(l) => Ok(Client::Stream(Stream::Unix(l.accept().await?.0))),
        Listener::Fifo(rx) => loop {
            rx.readable().await?;
            let mut buf = vec![0u8; 1024];
            match rx.try_read(&mut buf) {
                Ok(n) if n > 0 => {
                    buf.truncate(n);
                    return Ok(Client::Trigger(buf));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        },
    }
}

/// For daemons whose protocol is not built yet: log the client, send `reply` (a protocol's
/// own "service not available" line) if any, and close. Honest about what it is; it accepts
/// nothing and claims nothing.
pub async fn refuse_unimplemented(program: &str, client: Client, reply: Option<String>) {
    match client {
        Client::Stream(mut stream) => {
            let peer = stream.peer_addr();
            tracing::info!("connect from {peer}: {program} is not implemented yet, closing");
            if let Some(reply) = reply {
                let _ = stream.write_all(reply.as_bytes()).await;
            }
            let _ = stream.shutdown().await;
        }
        Client::Trigger(bytes) => {
            // Debug level: triggers come once per message; Postfix does not log them either.
            tracing::debug!("trigger {:?}: {program} is not implemented yet", String::from_utf8_lossy(&bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_cf_arguments_are_split() {
        let args: Vec<String> =
            ["-o", "syslog_name=rpost/submission", "-osmtpd_tls_security_level=encrypt", "-v", "extra"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let a = parse_args(&args).unwrap();
        assert_eq!(a.overrides[0].0, "syslog_name");
        assert_eq!(a.overrides[0].1, "rpost/submission");
        assert_eq!(a.overrides[1].0, "smtpd_tls_security_level");
        assert!(a.verbose);
        assert_eq!(a.rest, vec!["extra".to_string()]);
        assert!(parse_args(&["-o".to_string()]).is_err());
        assert!(parse_args(&["-o".to_string(), "novalue".to_string()]).is_err());
    }
}

//! The post-login side of imapd: a few processes per mail user id (`imap_worker_count`)
//! serving the logged-in sessions of that id, and the login process's side of the
//! hand-over.
//!
//! After authd accepted a login and the userdb gave the user's uid, gid and mail store, the
//! login process (which runs as `mail_owner` and keeps only a saved uid 0) hands the
//! connection to one of the workers for that uid/gid (round robin), starting it if needed: the same
//! `imapd` program executed with `RPOST_IMAP_WORKER=1`, whose ids are set to the mail
//! user's for good in the forked child before exec ([`rpost_privilege::command_as_user`]).
//! Between the two runs a `SOCK_SEQPACKET` socket pair: first a [`WorkerConfig`], then one
//! [`Handover`] per session with the client's socket attached (SCM_RIGHTS); the worker
//! answers one byte per finished session so the login process knows when it is idle, and
//! closes it after [`WORKER_LINGER`] without sessions. A TLS session cannot move between
//! processes: the login process keeps it and relays the plaintext over a socket pair, whose
//! other end is what the worker gets (Dovecot's imap-login proxies the same way).
//!
//! This is Dovecot's `service imap { client_limit > 1 }` with all users of one uid sharing a
//! process (as virtual users under `mail_uid = vmail` do): an idle session costs its
//! connection state in a process that exists anyway, not a process of its own. The worker
//! never had root and cannot regain it; it can only reach what its uid can.
//!
//! IDLE: sessions watching the same mailbox share one watcher that looks at the
//! modification times of `new/`, `cur/`, `dovecot-uidlist` and `dovecot-keywords` once a
//! second ([`Watcher`]); a change wakes every session idling there, each of which then
//! syncs as before.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use rpost_imap_proto::{CommandBody, Limits, Reader};
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::conn::{Closed, Conn, Transport};
use super::session::Session;
use crate::login::ConnInfo;

/// Environment variable that makes `imapd` run as a worker.
pub const WORKER_ENV: &str = "RPOST_IMAP_WORKER";
/// The worker's end of the socket pair.
const WORKER_FD: i32 = 3;
/// How long a worker without sessions is kept for the next login of its uid.
pub const WORKER_LINGER: Duration = Duration::from_secs(60);
/// Largest hand-over message (pipelined input after LOGIN included).
const MAX_MESSAGE: usize = 128 * 1024;
/// Pipelined input after LOGIN that is moved with the connection.
pub const MAX_PIPELINED: usize = 64 * 1024;

/// Autologout after login (RFC 3501 5.4: at least 30 minutes).
pub const AUTOLOGOUT: Duration = Duration::from_secs(30 * 60);
/// How often a watched mailbox is looked at.
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often IDLE syncs fully even when no watched time changed (changes within one
/// timestamp tick).
pub const IDLE_FULL_SYNC: Duration = Duration::from_secs(30);

/// What a session needs from main.cf after login; sent to the worker once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub max_line: usize,
    pub max_append: u64,
    pub literal_minus: bool,
    /// `imap_capability`.
    pub capability: String,
    pub idle_notify: Duration,
    /// `mail_max_userip_connections` (0: no limit).
    pub max_userip: u32,
    pub logout_format: String,
    pub id_send: String,
    pub syslog_name: String,
    pub maillog_file: String,
    pub verbose: bool,
    pub detached: bool,
    /// The login process opened `maillog_file` and passed it as descriptor 4 (the worker,
    /// running as the mail user, may not open it).
    pub log_inherited: bool,
}

impl WorkerConfig {
    pub fn limits(&self) -> Limits {
        Limits { max_line: self.max_line, max_append: self.max_append, literal_minus: self.literal_minus }
    }

    /// The CAPABILITY list after login.
    pub fn caps(&self) -> String {
        let literal = if self.literal_minus { "LITERAL-" } else { "LITERAL+" };
        let base = format!("{} {literal} {}", super::server::BASE_CAPS, super::server::POST_LOGIN_CAPS);
        let c = self.capability.trim();
        if c.is_empty() {
            base
        } else if let Some(extra) = c.strip_prefix('+') {
            format!("{base} {}", extra.trim())
        } else {
            c.to_string()
        }
    }
}

/// One logged-in session moving to a worker (the client socket travels beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handover {
    pub user: String,
    pub home: Option<PathBuf>,
    /// The store root and INBOX (`:INBOX=`), as the userdb resolved them.
    pub root: PathBuf,
    pub inbox: Option<PathBuf>,
    pub local: Option<std::net::SocketAddr>,
    pub remote: Option<std::net::SocketAddr>,
    pub tls: bool,
    /// The socket is a UNIX-domain one (a TLS relay, or a UNIX listener), not TCP.
    pub unix: bool,
    pub method: String,
    /// The LOGIN/AUTHENTICATE tag: the worker sends the tagged OK.
    pub tag: String,
    /// Input the client pipelined after its login command.
    pub pending: Vec<u8>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum ToWorker {
    Config(WorkerConfig),
    Session(Handover),
    /// rmaster stops the system (SIGTERM to the login process): end every session with
    /// `* BYE` and exit. (A reload only closes the socket: sessions go on.)
    Stop,
}

/// Why a hand-over failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("cannot start the IMAP process for uid {uid}: {reason}")]
    Spawn { uid: u32, reason: String },
    #[error("IMAP process for uid {uid} is gone: {source}")]
    Send { uid: u32, source: io::Error },
    #[error("{0}")]
    Encode(#[from] rpost_ipc::IpcError),
}

/// A running worker, seen from the login process.
#[derive(Debug)]
struct Worker {
    uid: u32,
    pid: u32,
    ctl: AsyncFd<OwnedFd>,
    sessions: AtomicUsize,
    dead: AtomicBool,
    /// Becomes true when the process has exited.
    exited: watch::Receiver<bool>,
}

/// One message on the socket pair (both sides), with a descriptor attached or not.
async fn send(ctl: &AsyncFd<OwnedFd>, msg: &[u8], fd: Option<std::os::fd::BorrowedFd<'_>>) -> io::Result<()> {
    loop {
        let mut guard = ctl.writable().await?;
        match guard.try_io(|inner| rpost_privilege::send_with_fd(inner.get_ref().as_fd(), msg, fd)) {
            Ok(r) => return r.map(|_| ()),
            Err(_would_block) => continue,
        }
    }
}

/// One message from the socket pair: its length (0 at end of file) and its descriptor.
/// Which worker: the mail uid and gid, and a slot: sessions of one uid are spread round robin
/// over `imap_worker_count` workers. One process runs its sessions' blocking Maildir work on
/// a shared tokio runtime, and measured at about half the commands/s of one process per
/// session on two cores; eight processes per uid measured the same as one per session, and
/// sixteen a little better at fifty clients.
type Key = (u32, u32, u32);

/// The login process's workers, per (uid, gid) and slot.
#[derive(Debug)]
pub struct Workers {
    exe: PathBuf,
    config: WorkerConfig,
    /// `maillog_file`, opened at start-up while the process could.
    log_file: Option<std::fs::File>,
    map: Mutex<HashMap<Key, Arc<Worker>>>,
    /// Round robin over the slots.
    next_slot: AtomicUsize,
    slots: u32,
}

impl Workers {
    /// `exe`: this program, resolved at start-up; `slots`: workers per uid
    /// (`imap_worker_count`). Call before giving up root: the log file is opened here for
    /// the workers.
    pub fn new(exe: PathBuf, config: WorkerConfig, slots: u32) -> io::Result<Workers> {
        let log_file = match config.maillog_file.as_str() {
            "" | "/dev/stdout" | "/dev/stderr" => None,
            path => Some(std::fs::OpenOptions::new().append(true).create(true).open(path)?),
        };
        let slots = slots.max(1);
        Ok(Workers { exe, config, log_file, map: Mutex::new(HashMap::new()), next_slot: AtomicUsize::new(0), slots })
    }

    /// Hands a logged-in session (and its socket) to the worker of `uid`/`gid`.
    pub async fn hand_over(
        self: &Arc<Self>,
        uid: u32,
        gid: u32,
        h: &Handover,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<u32, HandoverError> {
        let msg = rpost_ipc::encode(&ToWorker::Session(h.clone()))?;
        // A worker that died or is being closed is replaced once.
        let mut retried = false;
        loop {
            let key = (uid, gid, (self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots as usize) as u32);
            let (worker, pid) = self.worker(key)?;
            worker.sessions.fetch_add(1, Ordering::SeqCst);
            let Err(e) = send(&worker.ctl, &msg, Some(fd)).await else { return Ok(pid) };
            worker.sessions.fetch_sub(1, Ordering::SeqCst);
            worker.dead.store(true, Ordering::SeqCst);
            self.forget(key, &worker);
            if retried {
                return Err(HandoverError::Send { uid, source: e });
            }
            retried = true;
        }
    }

    fn forget(&self, key: Key, w: &Arc<Worker>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&key).is_some_and(|cur| Arc::ptr_eq(cur, w)) {
            map.remove(&key);
        }
    }

    /// The live worker for the ids, started when there is none; with its pid.
    fn worker(self: &Arc<Self>, key: Key) -> Result<(Arc<Worker>, u32), HandoverError> {
        let (uid, gid, _) = key;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = map.get(&key)
            && !w.dead.load(Ordering::SeqCst)
        {
            return Ok((w.clone(), w.pid));
        }
        let spawn_err = |reason: String| HandoverError::Spawn { uid, reason };
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| spawn_err(format!("socketpair: {e}")))?;
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.env_clear();
        for var in ["PATH", "TZ", "LANG", "LC_ALL", "RUST_BACKTRACE", "JOURNAL_STREAM"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.env(WORKER_ENV, "1")
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        let mut config = self.config.clone();
        let log_fd = match &self.log_file {
            Some(f) => Some(OwnedFd::from(f.try_clone().map_err(|e| spawn_err(format!("maillog_file: {e}")))?)),
            None => None,
        };
        config.log_inherited = log_fd.is_some();
        let mut fds = vec![&theirs];
        fds.extend(log_fd.as_ref());
        rpost_privilege::inherit_fds(&mut cmd, &fds, WORKER_FD).map_err(|e| spawn_err(e.to_string()))?;
        rpost_privilege::command_as_user(&mut cmd, uid, gid).map_err(|e| spawn_err(e.to_string()))?;
        let mut child = tokio::process::Command::from(cmd).spawn().map_err(|e| spawn_err(e.to_string()))?;
        drop(theirs);
        let pid = child.id().unwrap_or(0);
        let ctl = rpost_privilege::async_fd(ours).map_err(|e| spawn_err(e.to_string()))?;
        let (exit_tx, exited) = watch::channel(false);
        let w = Arc::new(Worker { uid, pid, ctl, sessions: AtomicUsize::new(0), dead: AtomicBool::new(false), exited });
        drop(log_fd);
        let config = rpost_ipc::encode(&ToWorker::Config(config))?;
        // The socket is empty and new: the first message always fits.
        rpost_privilege::send_with_fd(w.ctl.get_ref().as_fd(), &config, None)
            .map_err(|e| spawn_err(format!("configuration: {e}")))?;
        map.insert(key, w.clone());
        tracing::debug!("started IMAP process {pid} for uid {uid}");
        let me = Arc::downgrade(self);
        let watched = w.clone();
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = exit_tx.send(true);
        });
        tokio::spawn(async move { watch_worker(me, watched, key).await });
        Ok((w, pid))
    }

    /// rmaster stops the system (SIGTERM to this login process; its reload only closes the
    /// status pipe): every worker ends its sessions with `* BYE` and exits, or they would
    /// outlive the system they belong to. Returns when they have exited, or after
    /// [`STOP_WAIT`], so `rmaster stop` returns with the sessions closed.
    pub async fn stop(&self) {
        let list: Vec<Arc<Worker>> = self.map.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let Ok(stop) = rpost_ipc::encode(&ToWorker::Stop) else { return };
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        for w in &list {
            let _ = tokio::time::timeout_at(deadline, send(&w.ctl, &stop, None)).await;
        }
        for w in list {
            let mut exited = w.exited.clone();
            let _ = tokio::time::timeout_at(deadline, exited.wait_for(|e| *e)).await;
        }
    }
}

/// How long a stopping login process waits for its workers to close their sessions: each
/// session's BYE has one second to be written.
pub const STOP_WAIT: Duration = Duration::from_secs(3);

/// Reads the worker's session-end bytes; closes its socket after [`WORKER_LINGER`] without
/// sessions (the worker then exits), forgets it when it dies.
async fn watch_worker(workers: Weak<Workers>, w: Arc<Worker>, key: Key) {
    let mut buf = [0u8; 64];
    loop {
        let idle = w.sessions.load(Ordering::SeqCst) == 0;
        tokio::select! {
            r = recv(&w.ctl, &mut buf) => match r {
                Ok((n, _)) if n > 0 => {
                    let _ = w.sessions.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| s.checked_sub(n));
                }
                _ => break,
            },
            _ = tokio::time::sleep(WORKER_LINGER), if idle => {
                // Taken out of the map first, so no new session can be sent while it closes.
                let Some(all) = workers.upgrade() else { break };
                {
                    let mut map = all.map.lock().unwrap_or_else(|e| e.into_inner());
                    if w.sessions.load(Ordering::SeqCst) != 0 {
                        continue;
                    }
                    if map.get(&key).is_some_and(|cur| Arc::ptr_eq(cur, &w)) {
                        map.remove(&key);
                    }
                    w.dead.store(true, Ordering::SeqCst);
                }
                let _ = nix::sys::socket::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(w.ctl.get_ref()),
                    nix::sys::socket::Shutdown::Both,
                );
                tracing::debug!("IMAP process for uid {} closed after {}s without sessions", w.uid, WORKER_LINGER.as_secs());
                break;
            }
        }
    }
    w.dead.store(true, Ordering::SeqCst);
    if let Some(all) = workers.upgrade() {
        all.forget(key, &w);
    }
}

// ---------------------------------------------------------------------------------------
// The worker process.

/// `imapd` started as a worker: serves the sessions handed over until the login process
/// closes the socket and the last session has ended.
pub fn main() -> ExitCode {
    // The log file, when one was passed, is descriptor 4: adopted (close-on-exec) before
    // anything else can take that number.
    let log_file =
        rpost_privilege::adopt_inherited(WORKER_FD + 1, 1).ok().map(|mut v| std::fs::File::from(v.remove(0)));
    let ctl = match rpost_privilege::adopt_inherited(WORKER_FD, 1) {
        Ok(mut v) => v.remove(0),
        Err(e) => {
            eprintln!("imapd: fatal: worker without its socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("imapd").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imapd: fatal: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run_worker(ctl, log_file))
}

async fn recv(ctl: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    loop {
        let mut guard = ctl.readable().await?;
        match guard.try_io(|inner| rpost_privilege::recv_with_fd(inner.get_ref().as_fd(), buf)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

fn decode(bytes: &[u8]) -> Option<ToWorker> {
    let mut d = rpost_ipc::FrameDecoder::new();
    d.feed(bytes);
    d.decode().ok().flatten()
}

async fn run_worker(ctl: OwnedFd, log_file: Option<std::fs::File>) -> ExitCode {
    let ctl = match rpost_privilege::async_fd(ctl) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("imapd: fatal: worker socket: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    let cfg = match recv(&ctl, &mut buf).await {
        Ok((n, _)) if n > 0 => match decode(&buf[..n]) {
            Some(ToWorker::Config(c)) => Arc::new(c),
            _ => {
                eprintln!("imapd: fatal: worker: bad configuration message");
                return ExitCode::FAILURE;
            }
        },
        _ => return ExitCode::FAILURE,
    };
    let opts = rpost_log::LogOptions {
        syslog_name: cfg.syslog_name.clone(),
        program: "imapd".into(),
        maillog_file: cfg.maillog_file.clone(),
        verbose: cfg.verbose,
        detached: cfg.detached,
        chroot: false,
    };
    let logging = match log_file {
        Some(f) if cfg.log_inherited => rpost_log::init_with_file(&opts, f),
        _ => rpost_log::init(&opts),
    };
    if let Err(e) = logging {
        eprintln!("imapd: fatal: logging: {e}");
        return ExitCode::FAILURE;
    }
    let watcher = Arc::new(Watcher::default());
    let live = Arc::new((AtomicUsize::new(0), tokio::sync::Notify::new()));
    let (stop_tx, stop) = watch::channel(false);
    loop {
        let (n, fd) = match recv(&ctl, &mut buf).await {
            Ok((0, _)) | Err(_) => break,
            Ok(v) => v,
        };
        let (h, fd) = match (decode(&buf[..n]), fd) {
            (Some(ToWorker::Session(h)), Some(fd)) => (h, fd),
            (Some(ToWorker::Stop), _) => {
                let _ = stop_tx.send(true);
                break;
            }
            _ => {
                tracing::warn!("worker: malformed hand-over message ignored");
                continue;
            }
        };
        live.0.fetch_add(1, Ordering::SeqCst);
        let (cfg, watcher, live, ctl, stop) = (cfg.clone(), watcher.clone(), live.clone(), ctl.clone(), stop.clone());
        tokio::spawn(async move {
            serve_session(&cfg, &watcher, stop, h, fd).await;
            // Tell the login process (it closes an idle worker); a failure means it is gone.
            let _ = send(&ctl, b"E", None).await;
            if live.0.fetch_sub(1, Ordering::SeqCst) == 1 {
                live.1.notify_waiters();
            }
        });
    }
    // The login process closed the socket: finish the sessions there are, take no more.
    loop {
        let notified = live.1.notified();
        if live.0.load(Ordering::SeqCst) == 0 {
            break;
        }
        notified.await;
    }
    rpost_maildir::release_lock_seeds();
    ExitCode::SUCCESS
}

fn transport(h: &Handover, fd: OwnedFd) -> io::Result<Transport> {
    if h.unix {
        let s = std::os::unix::net::UnixStream::from(fd);
        s.set_nonblocking(true)?;
        Ok(Transport::Unix(tokio::net::UnixStream::from_std(s)?))
    } else {
        let s = std::net::TcpStream::from(fd);
        s.set_nonblocking(true)?;
        Ok(Transport::Tcp(tokio::net::TcpStream::from_std(s)?))
    }
}

async fn serve_session(
    cfg: &WorkerConfig,
    watcher: &Arc<Watcher>,
    mut stop: watch::Receiver<bool>,
    h: Handover,
    fd: OwnedFd,
) {
    let io = match transport(&h, fd) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("worker: unusable client socket: {e}");
            return;
        }
    };
    let info = ConnInfo { local: h.local, remote: h.remote, tls: h.tls };
    let mut reader = Reader::new(cfg.limits());
    reader.feed(&h.pending);
    let mut conn = Conn::new(io, reader, info);
    conn.bytes_in = h.bytes_in;
    conn.bytes_out = h.bytes_out;
    let tag = &h.tag;
    let store = rpost_maildir::Maildir::open(&h.root);
    let inbox = h.inbox.as_ref().map(rpost_maildir::Maildir::open).unwrap_or_else(|| store.clone());
    let mut session = Session::new(store.clone(), inbox);
    tokio::task::block_in_place(|| session.autocreate());
    let registration = match super::limit::register(store.store_path(), &conn.info.rip(), cfg.max_userip) {
        Ok(r) => r,
        Err(n) => {
            tracing::info!(
                "imap-login: Maximum number of connections from user+IP exceeded (mail_max_userip_connections={}): user=<{}>, {}",
                cfg.max_userip,
                rpost_auth_proto::printable(&h.user),
                conn.info.log_fields()
            );
            let line = format!(
                "{tag} NO [LIMIT] Maximum number of connections from user+IP exceeded (mail_max_userip_connections={}, {n} open)\r\n",
                cfg.max_userip
            );
            let _ = conn.send(line.as_bytes()).await;
            conn.io.shutdown().await;
            return;
        }
    };
    tracing::info!(
        "imap-login: Login: user=<{}>, method={}, {}, mpid={}{}",
        rpost_auth_proto::printable(&h.user),
        h.method,
        conn.info.addr_fields(),
        std::process::id(),
        if conn.info.tls { ", TLS" } else { "" }
    );
    let caps = cfg.caps();
    let ok = conn.send(format!("{tag} OK [CAPABILITY {caps}] Logged in\r\n").as_bytes()).await.is_ok();
    let reason = if !ok {
        "Disconnected"
    } else {
        tokio::select! {
            r = run_session(cfg, watcher, &mut conn, &mut session, &caps) => r,
            _ = stop.wait_for(|s| *s) => "Disconnected: Server shutting down",
        }
    };
    if reason == "Disconnected: Server shutting down" {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.send(b"* BYE Server shutting down.\r\n")).await;
    }
    tracing::info!(
        "imap({}): {reason} {}",
        rpost_auth_proto::printable(&h.user),
        session.stats.logout_line(&cfg.logout_format, conn.bytes_in, conn.bytes_out)
    );
    conn.io.shutdown().await;
    drop(registration);
}

/// The authenticated/selected states until LOGOUT or the end; returns the log reason.
async fn run_session(
    cfg: &WorkerConfig,
    watcher: &Arc<Watcher>,
    conn: &mut Conn,
    session: &mut Session,
    caps: &str,
) -> &'static str {
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
                let mut out = super::server::id_reply(&cfg.id_send);
                out.extend(format!("{tag} OK ID completed.\r\n").bytes());
                conn.send(&out).await
            }
            CommandBody::StartTls | CommandBody::Login { .. } | CommandBody::Authenticate { .. } => {
                conn.send(format!("{tag} BAD Already logged in.\r\n").as_bytes()).await
            }
            CommandBody::Idle => match idle(cfg, watcher, conn, session, &tag).await {
                Ok(()) => Ok(()),
                Err(Closed::Timeout) => {
                    let _ = conn.send(b"* BYE Disconnected for inactivity.\r\n").await;
                    return "Disconnected for inactivity";
                }
                Err(Closed::Gone) => return "Disconnected",
            },
            _ => {
                // Maildir work is blocking file I/O: off the runtime's core threads.
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

/// IDLE: changes are pushed as they are found until DONE. The selected mailbox's watcher
/// wakes the session when one of its watched times changes; a full sync runs every
/// [`IDLE_FULL_SYNC`] regardless.
async fn idle(
    cfg: &WorkerConfig,
    watcher: &Arc<Watcher>,
    conn: &mut Conn,
    session: &mut Session,
    tag: &str,
) -> Result<(), Closed> {
    conn.send(b"+ idling\r\n").await?;
    let deadline = tokio::time::Instant::now() + AUTOLOGOUT;
    let mut watch = session.idle_dir().map(|d| watcher.watch(&d));
    let mut full = tokio::time::interval_at(tokio::time::Instant::now() + IDLE_FULL_SYNC, IDLE_FULL_SYNC);
    let notify_every = if cfg.idle_notify.is_zero() { AUTOLOGOUT * 2 } else { cfg.idle_notify };
    let mut note = tokio::time::interval_at(tokio::time::Instant::now() + notify_every, notify_every);
    loop {
        if let Some(line) = conn.reader.take_line() {
            let line = line.map_err(|_| Closed::Gone)?;
            if line.eq_ignore_ascii_case(b"DONE") {
                let mut out = tokio::task::block_in_place(|| session.poll(true));
                out.extend(format!("{tag} OK Idle completed.\r\n").bytes());
                return conn.send(&out).await;
            }
            return conn.send(format!("{tag} BAD Expected DONE.\r\n").as_bytes()).await;
        }
        conn.reader.compact();
        let changed = async {
            match watch.as_mut() {
                Some((_, rx)) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let force = tokio::select! {
            r = conn.io.read_into(&mut conn.reader) => match r {
                Ok(0) | Err(_) => return Err(Closed::Gone),
                Ok(n) => {
                    conn.bytes_in += n as u64;
                    continue;
                }
            },
            true = changed => false,
            _ = full.tick() => true,
            _ = note.tick(), if !cfg.idle_notify.is_zero() => {
                conn.send(b"* OK Still here\r\n").await?;
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => return Err(Closed::Timeout),
        };
        let out = tokio::task::block_in_place(|| session.idle_poll(force));
        if !out.is_empty() {
            conn.send(&out).await?;
        }
        if session.closing() {
            return Err(Closed::Gone);
        }
    }
}

/// Mailboxes watched for IDLE in this process: one poller per mailbox however many
/// sessions idle there.
#[derive(Debug, Default)]
pub struct Watcher {
    map: Mutex<HashMap<PathBuf, Weak<Watched>>>,
}

/// One watched mailbox; the poller stops when the last session lets go.
#[derive(Debug)]
pub struct Watched {
    tx: watch::Sender<u64>,
}

/// The modification times IDLE cares about.
fn stamp(dir: &Path) -> [Option<SystemTime>; 4] {
    ["new", "cur", "dovecot-uidlist", "dovecot-keywords"]
        .map(|n| std::fs::metadata(dir.join(n)).and_then(|m| m.modified()).ok())
}

impl Watcher {
    /// Subscribes to changes of the mailbox directory `dir`.
    pub fn watch(self: &Arc<Self>, dir: &Path) -> (Arc<Watched>, watch::Receiver<u64>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = map.get(dir).and_then(Weak::upgrade) {
            let rx = w.tx.subscribe();
            return (w, rx);
        }
        let (tx, rx) = watch::channel(0u64);
        let w = Arc::new(Watched { tx });
        map.insert(dir.to_path_buf(), Arc::downgrade(&w));
        let weak = Arc::downgrade(&w);
        let (me, dir) = (Arc::downgrade(self), dir.to_path_buf());
        tokio::spawn(async move {
            let mut last = stamp(&dir);
            let mut tick = tokio::time::interval(IDLE_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(w) = weak.upgrade() else { break };
                let now = stamp(&dir);
                if now != last {
                    last = now;
                    w.tx.send_modify(|g| *g += 1);
                }
            }
            if let Some(me) = me.upgrade() {
                let mut map = me.map.lock().unwrap_or_else(|e| e.into_inner());
                if map.get(&dir).is_some_and(|w| w.strong_count() == 0) {
                    map.remove(&dir);
                }
            }
        });
        (w, rx)
    }
}

/// Whether this process was started as a worker.
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_ENV).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handover_round_trips_through_a_frame() {
        let h = Handover {
            user: "alice@example.test".into(),
            home: Some("/var/vmail/example.test/alice".into()),
            root: "/var/vmail/example.test/alice/mail".into(),
            inbox: None,
            local: Some("127.0.0.1:143".parse().unwrap()),
            remote: Some("127.0.0.2:40000".parse().unwrap()),
            tls: false,
            unix: false,
            method: "PLAIN".into(),
            tag: "a1".into(),
            pending: b"a2 SELECT INBOX\r\n".to_vec(),
            bytes_in: 30,
            bytes_out: 200,
        };
        let bytes = rpost_ipc::encode(&ToWorker::Session(h.clone())).unwrap();
        let Some(ToWorker::Session(back)) = decode(&bytes) else { panic!("not a session") };
        assert_eq!(back.user, h.user);
        assert_eq!(back.pending, h.pending);
        assert_eq!(back.remote, h.remote);
        assert_eq!(back.tag, "a1");
    }

    #[test]
    fn a_session_and_its_socket_cross_a_seqpacket_pair() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let (client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        rpost_privilege::send_with_fd(a.as_fd(), b"hello", Some(server.as_fd())).unwrap();
        drop(server);
        let mut buf = [0u8; 64];
        let (n, fd) = rpost_privilege::recv_with_fd(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let mut passed = std::os::unix::net::UnixStream::from(fd.expect("a descriptor came along"));
        use std::io::{Read, Write};
        (&client).write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        passed.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }
}

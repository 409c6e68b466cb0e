//! The running master: services, children, reloads and shutdown.
//!
//! One task owns all state and handles [`Event`]s in order; helper tasks only watch file
//! descriptors, timers and child processes and report back. This mirrors Postfix's master
//! event loop and keeps the bookkeeping free of locks.
//!
//! * A service has its listeners bound for its whole life. While no child of the service is
//!   available and fewer than maxproc run, a watcher waits for a client on the listeners and
//!   the master then starts a child, exactly as Postfix starts daemons on demand.
//! * A child that exits abnormally before serving anyone throttles its service for
//!   `service_throttle_time` (a broken binary or config must not fork-loop).
//! * Reload: re-read main.cf and master.cf; if they are broken, keep running as before.
//!   Otherwise every current child is told to finish (its status pipe is closed), listeners
//!   of services that still exist at the same address stay open, removed ones are closed and
//!   added ones bound. No listener of an unchanged service is ever closed, so no client is
//!   refused during a reload.
//! * Stop: close listeners, SIGTERM the children, SIGKILL what is left after
//!   `master_stop_timeout`.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rpost_config::{Config, Params, Service, ServiceType};
use rpost_ipc::{ChildEnv, ChildState, ChildStatus, ControlRequest, ControlResponse, FrameDecoder};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::endpoint::{self, Spec};

/// Errors that stop the master from starting.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("{0}")]
    Config(#[from] rpost_config::ConfigError),
    #[error("{0}")]
    Endpoint(#[from] endpoint::EndpointError),
    #[error("{0}")]
    Privilege(#[from] rpost_privilege::PrivError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MasterError {
    let what = what.into();
    move |source| MasterError::Io { what, source }
}

/// A configuration as loaded by the master, with the exact main.cf bytes it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    main_cf: Vec<u8>,
}

impl Loaded {
    /// Reads and validates DIR/main.cf and DIR/master.cf.
    pub fn load(dir: &Path) -> Result<Loaded, rpost_config::ConfigError> {
        let path = dir.join("main.cf");
        let main_cf =
            std::fs::read(&path).map_err(|source| rpost_config::ConfigError::Io { path: path.clone(), source })?;
        let main = rpost_config::maincf::MainCf::parse_bytes(&path, &main_cf)?;
        let master = rpost_config::MasterCf::load(&dir.join("master.cf"))?;
        let config = Config::from_parts(dir, &main, master)?;
        Ok(Loaded { config, main_cf })
    }

    /// The main.cf text in a sealed memory file that children read their configuration from.
    fn snapshot(&self) -> Result<OwnedFd, MasterError> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        use nix::sys::memfd::{MFdFlags, memfd_create};
        use std::io::Write;
        let fd = memfd_create("rpost-main.cf", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
            .map_err(|e| MasterError::Io { what: "memfd_create".into(), source: e.into() })?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&self.main_cf).map_err(io_err("main.cf snapshot"))?;
        // Sealed: a compromised child cannot change what its siblings will read.
        let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals))
            .map_err(|e| MasterError::Io { what: "seal main.cf snapshot".into(), source: e.into() })?;
        Ok(file.into())
    }
}

/// How the master was started.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// Running detached from a terminal (children log to syslog rather than stderr).
    pub detached: bool,
}

type Key = (String, ServiceType);

/// A bound listener shared between the service and its watcher task.
#[derive(Debug, Clone)]
struct Bound {
    spec: Spec,
    shown: String,
    fd: Arc<AsyncFd<OwnedFd>>,
}

#[derive(Debug)]
struct ServiceRt {
    def: Service,
    path: PathBuf,
    maxproc: u32,
    throttle_time: Duration,
    endpoints: Vec<Bound>,
    tasks: Vec<JoinHandle<()>>,
    want: watch::Sender<bool>,
    throttled_until: Option<Instant>,
    used: Arc<AtomicBool>,
    /// Bumped per reload so stale watcher events are ignored.
    generation: u64,
}

impl Drop for ServiceRt {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Debug)]
struct ChildRec {
    key: Key,
    generation: u64,
    state: ChildState,
    draining: bool,
    uses: u64,
    started: SystemTime,
    path: PathBuf,
    /// Dropping this closes the status pipe: "finish your clients and exit".
    status_tx: Option<OwnedWriteHalf>,
}

#[derive(Debug)]
enum Event {
    Readable(Key, u64),
    Status(u32, ChildStatus),
    Exited(u32, std::io::Result<ExitStatus>),
    Unthrottle(Key),
    Control(ControlRequest, oneshot::Sender<ControlResponse>),
    Reload,
    Stop(&'static str),
}

/// The master's state; see the module documentation.
#[derive(Debug)]
pub struct Master {
    config: Config,
    /// main.cf as loaded, handed to every child of this generation.
    snapshot: OwnedFd,
    opts: MasterOptions,
    generation: u64,
    started: SystemTime,
    services: HashMap<Key, ServiceRt>,
    children: HashMap<u32, ChildRec>,
    tx: mpsc::UnboundedSender<Event>,
    owner: Option<(u32, u32)>,
}

/// Runs the master until SIGTERM/SIGINT (or `shutdown` resolves). The caller holds the pid
/// file lock and has prepared the spool.
pub async fn run(
    loaded: Loaded,
    opts: MasterOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MasterError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let owner = mail_owner_ids(&loaded.config.params)?;
    let mut master = Master {
        snapshot: loaded.snapshot()?,
        config: loaded.config,
        opts,
        generation: 1,
        started: SystemTime::now(),
        services: HashMap::new(),
        children: HashMap::new(),
        tx: tx.clone(),
        owner,
    };
    let services = master.build_services(&master.config.clone(), HashMap::new(), true)?;
    master.services = services;
    let queue_dir = PathBuf::from(master.config.params.get("queue_directory")?);
    let control = start_control(&queue_dir, tx.clone())?;
    spawn_signal_tasks(tx.clone())?;
    let stop_tx = tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(Event::Stop("shutdown request"));
    });
    for key in master.services.keys().cloned().collect::<Vec<_>>() {
        master.update_want(&key);
    }
    tracing::info!(
        "daemon started -- version {}, configuration {}",
        env!("CARGO_PKG_VERSION"),
        master.config.dir.display()
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let why = loop {
        let Some(ev) = rx.recv().await else { break "event channel closed" };
        match ev {
            Event::Stop(why) => break why,
            ev => master.handle(ev),
        }
    };
    tracing::info!("terminating on {why}");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    control.abort();
    let _ = std::fs::remove_file(crate::control::socket_path(&queue_dir));
    master.shutdown(&mut rx).await;
    Ok(())
}

fn mail_owner_ids(params: &Params) -> Result<Option<(u32, u32)>, MasterError> {
    if !rpost_privilege::is_root() {
        return Ok(None);
    }
    let id = rpost_privilege::lookup_user(&params.get("mail_owner")?)?;
    Ok(Some((id.uid, id.gid)))
}

fn spawn_signal_tasks(tx: mpsc::UnboundedSender<Event>) -> Result<(), MasterError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(io_err("SIGHUP handler"))?;
    let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler"))?;
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = hup.recv() => Event::Reload,
                _ = term.recv() => Event::Stop("signal 15"),
                _ = int.recv() => Event::Stop("signal 2"),
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    Ok(())
}

fn start_control(queue_dir: &Path, tx: mpsc::UnboundedSender<Event>) -> Result<JoinHandle<()>, MasterError> {
    use std::os::unix::fs::PermissionsExt;
    let path = crate::control::socket_path(queue_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).map_err(io_err(format!("bind {}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(path.display().to_string()))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                // Out of descriptors or similar: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let exchange = async {
                    let req: ControlRequest = crate::control::read_frame(&mut stream).await.ok()?;
                    let (rtx, rrx) = oneshot::channel();
                    tx.send(Event::Control(req, rtx)).ok()?;
                    let resp = rrx.await.ok()?;
                    let frame = rpost_ipc::encode(&resp).ok()?;
                    stream.write_all(&frame).await.ok()
                };
                let _ = tokio::time::timeout(crate::control::TIMEOUT, exchange).await;
            });
        }
    }))
}

impl Master {
    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Readable(key, generation) => {
                if self.services.get(&key).is_some_and(|s| s.generation == generation) && self.can_spawn(&key) {
                    self.spawn(&key);
                }
                self.update_want(&key);
            }
            Event::Status(pid, status) => {
                if let Some(child) = self.children.get_mut(&pid) {
                    child.uses = status.uses;
                    let retiring = status.state == ChildState::Retiring && child.state != ChildState::Retiring;
                    child.state = status.state;
                    let key = child.key.clone();
                    // Its successor starts now, not at the next client: the retiring child
                    // still accepts, so a waiting client is rarely seen by the watcher, and
                    // a start takes milliseconds that clients would wait once it stops.
                    if retiring && self.can_spawn(&key) {
                        self.spawn(&key);
                    }
                    self.update_want(&key);
                }
            }
            Event::Exited(pid, status) => self.reap(pid, status),
            Event::Unthrottle(key) => {
                if let Some(svc) = self.services.get_mut(&key)
                    && svc.throttled_until.is_some_and(|t| t <= Instant::now())
                {
                    svc.throttled_until = None;
                    tracing::info!("{}: throttle ended", svc.path.display());
                }
                self.update_want(&key);
            }
            Event::Control(req, reply) => {
                let resp = match req {
                    ControlRequest::Status => ControlResponse::Status(self.status()),
                };
                let _ = reply.send(resp);
            }
            Event::Reload => self.reload(),
            Event::Stop(_) => {}
        }
    }

    /// Binds listeners and starts watcher/wakeup tasks for every master.cf service. Listeners
    /// in `reuse` (from before a reload) are kept when their address is still wanted.
    /// `strict`: any service error is fatal (start-up); otherwise it is logged and the
    /// service skipped (reload).
    fn build_services(
        &self,
        config: &Config,
        mut reuse: HashMap<Spec, Bound>,
        strict: bool,
    ) -> Result<HashMap<Key, ServiceRt>, MasterError> {
        let daemon_dir = PathBuf::from(config.params.get("daemon_directory")?);
        let mut planned = Vec::new();
        for def in &config.master.services {
            let params = config.service_params(def);
            match endpoint::specs(def, &params) {
                Ok(specs) => planned.push((def.clone(), params, specs)),
                Err(e) if strict => return Err(e.into()),
                Err(e) => tracing::error!("{e}; service not started"),
            }
        }
        // Close what is no longer wanted before binding anew: an address may move from one
        // service to another.
        let wanted: HashSet<&Spec> = planned.iter().flat_map(|(_, _, s)| s.iter()).collect();
        reuse.retain(|spec, _| wanted.contains(spec));

        let mut services = HashMap::new();
        'svc: for (def, params, specs) in planned {
            let mut endpoints = Vec::new();
            for spec in specs {
                let bound = match reuse.remove(&spec) {
                    Some(b) => b,
                    None => match self.bind(&def.name, &spec) {
                        Ok(b) => b,
                        Err(e) if strict => return Err(e),
                        Err(e) => {
                            tracing::error!("{e}; service not started");
                            continue 'svc;
                        }
                    },
                };
                endpoints.push(bound);
            }
            let maxproc = match def.maxproc {
                Some(n) => n,
                None => params.get_int("default_process_limit")?.clamp(0, u32::MAX as i64) as u32,
            };
            let (want, _) = watch::channel(false);
            let mut svc = ServiceRt {
                path: daemon_dir.join(&def.command),
                maxproc,
                throttle_time: params.get_time("service_throttle_time")?,
                endpoints,
                tasks: Vec::new(),
                want,
                throttled_until: None,
                used: Arc::new(AtomicBool::new(false)),
                generation: self.generation,
                def,
            };
            self.start_tasks(&mut svc);
            services.insert(svc.def.key(), svc);
        }
        Ok(services)
    }

    fn bind(&self, service: &str, spec: &Spec) -> Result<Bound, MasterError> {
        let ep = endpoint::bind(service, spec, self.owner)?;
        let shown = endpoint::local_addr(&ep);
        let fd = rpost_privilege::async_fd(ep.fd).map_err(io_err(format!("service {service}: register {shown}")))?;
        Ok(Bound { spec: ep.spec, shown, fd: Arc::new(fd) })
    }

    fn start_tasks(&self, svc: &mut ServiceRt) {
        let key = svc.def.key();
        for ep in &svc.endpoints {
            let task =
                watch_endpoint(ep.fd.clone(), key.clone(), svc.generation, svc.want.subscribe(), self.tx.clone());
            svc.tasks.push(tokio::spawn(task));
        }
        if let Some(w) = svc.def.wakeup {
            if svc.def.kind == ServiceType::Inet {
                tracing::warn!("service {}: wakeup is ignored for inet services", svc.def.name);
            } else if let Some(ep) = svc.endpoints.first() {
                let task = wakeup_loop(
                    ep.spec.clone(),
                    Duration::from_secs(u64::from(w.seconds)),
                    w.conditional,
                    svc.used.clone(),
                );
                svc.tasks.push(tokio::spawn(task));
            }
        }
    }

    fn live_children(&self, key: &Key) -> impl Iterator<Item = &ChildRec> {
        self.children.values().filter(move |c| &c.key == key && !c.draining)
    }

    fn can_spawn(&self, key: &Key) -> bool {
        let Some(svc) = self.services.get(key) else { return false };
        if svc.throttled_until.is_some() {
            return false;
        }
        let live = self.live_children(key).count();
        // A retiring child still accepts but is not counted: its successor starts before it
        // stops.
        let available = self.live_children(key).filter(|c| c.state == ChildState::Available).count();
        available == 0 && (svc.maxproc == 0 || live < svc.maxproc as usize)
    }

    fn update_want(&self, key: &Key) {
        let want = self.can_spawn(key);
        if let Some(svc) = self.services.get(key) {
            // send_replace always wakes the watcher, which waits for exactly that after
            // reporting a readable listener.
            svc.want.send_replace(want);
        }
    }

    fn spawn(&mut self, key: &Key) {
        let Some(svc) = self.services.get(key) else { return };
        match self.spawn_process(svc) {
            Ok((pid, rec)) => {
                svc.used.store(true, Ordering::Relaxed);
                tracing::debug!("spawned {} pid {pid} for service {}", svc.path.display(), svc.def.name);
                self.children.insert(pid, rec);
            }
            Err(e) => {
                tracing::warn!("spawn {}: {e}", svc.path.display());
                self.throttle(key);
            }
        }
    }

    fn spawn_process(&self, svc: &ServiceRt) -> Result<(u32, ChildRec), MasterError> {
        let (master_end, child_end) = std::os::unix::net::UnixStream::pair().map_err(io_err("socketpair"))?;
        let mut cmd = std::process::Command::new(&svc.path);
        std::os::unix::process::CommandExt::arg0(&mut cmd, &svc.def.command);
        for (name, value, _) in &svc.def.overrides {
            cmd.arg("-o").arg(format!("{name}={value}"));
        }
        cmd.args(&svc.def.args);
        // A clean environment, as Postfix's import_environment: nothing from the admin's shell
        // leaks into daemons except what they need.
        cmd.env_clear();
        for name in ["PATH", "TZ", "LANG", "LC_ALL", "JOURNAL_STREAM", "RUST_BACKTRACE"] {
            if let Some(v) = std::env::var_os(name) {
                cmd.env(name, v);
            }
        }
        if self.opts.detached {
            cmd.env("RPOST_DETACHED", "1");
        }
        let env = ChildEnv {
            service: svc.def.name.clone(),
            kind: svc.def.kind.to_string(),
            config_dir: self.config.dir.clone(),
            listen_fds: svc.endpoints.len() as u32,
            unpriv: svc.def.unpriv,
            chroot: svc.def.chroot,
            generation: self.generation,
        };
        cmd.envs(env.to_env());
        cmd.stdin(std::process::Stdio::null());
        let child_fd: OwnedFd = child_end.into();
        let mut fds: Vec<&OwnedFd> = vec![&child_fd, &self.snapshot];
        fds.extend(svc.endpoints.iter().map(|e| e.fd.get_ref()));
        rpost_privilege::inherit_fds(&mut cmd, &fds, ChildEnv::STATUS_FD)?;
        let mut child = tokio::process::Command::from(cmd).spawn().map_err(io_err("exec"))?;
        drop(child_fd);
        let pid = child.id().unwrap_or(0);

        master_end.set_nonblocking(true).map_err(io_err("status pipe"))?;
        let stream = tokio::net::UnixStream::from_std(master_end).map_err(io_err("status pipe"))?;
        let (mut rd, wr) = stream.into_split();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut dec = FrameDecoder::new();
            let mut buf = [0u8; 512];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => dec.feed(&buf[..n]),
                }
                loop {
                    match dec.decode::<ChildStatus>() {
                        Ok(Some(st)) => {
                            let _ = tx.send(Event::Status(pid, st));
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("pid {pid}: bad status message: {e}");
                            return;
                        }
                    }
                }
            }
        });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Event::Exited(pid, status));
        });
        let rec = ChildRec {
            key: svc.def.key(),
            generation: self.generation,
            // Counted as available until it says otherwise, so one waiting client does not
            // start a crowd of processes.
            state: ChildState::Available,
            draining: false,
            uses: 0,
            started: SystemTime::now(),
            path: svc.path.clone(),
            status_tx: Some(wr),
        };
        Ok((pid, rec))
    }

    fn reap(&mut self, pid: u32, status: std::io::Result<ExitStatus>) {
        let Some(child) = self.children.remove(&pid) else { return };
        let path = child.path.display();
        let abnormal = match &status {
            Ok(s) if s.success() => false,
            Ok(s) => {
                match (s.code(), s.signal()) {
                    (Some(code), _) => tracing::warn!("process {path} pid {pid} exit status {code}"),
                    (None, Some(sig)) => tracing::warn!("process {path} pid {pid} killed by signal {sig}"),
                    _ => tracing::warn!("process {path} pid {pid} ended abnormally"),
                }
                true
            }
            Err(e) => {
                tracing::warn!("process {path} pid {pid}: wait: {e}");
                true
            }
        };
        let key = child.key.clone();
        if abnormal && child.uses == 0 && !child.draining && child.generation == self.generation {
            tracing::warn!("{path}: bad command startup -- throttling");
            self.throttle(&key);
        }
        self.update_want(&key);
    }

    fn throttle(&mut self, key: &Key) {
        let Some(svc) = self.services.get_mut(key) else { return };
        let delay = svc.throttle_time;
        svc.throttled_until = Some(Instant::now() + delay);
        let tx = self.tx.clone();
        let key = key.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Event::Unthrottle(key));
        });
    }

    fn reload(&mut self) {
        // systemd's Type=notify-reload wants the reload's start time with RELOADING=1.
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading, now]);
            }
            Err(_) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
            }
        }
        let dir = self.config.dir.clone();
        let loaded = match Loaded::load(&dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("reload failed, still running the previous configuration: {e}");
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                return;
            }
        };
        let snapshot = match loaded.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("reload failed, still running the previous configuration: {e}");
                return;
            }
        };
        let config = loaded.config;
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        self.snapshot = snapshot;
        self.generation += 1;
        for child in self.children.values_mut() {
            child.draining = true;
            child.status_tx = None;
        }
        let mut reuse = HashMap::new();
        for (_, mut svc) in self.services.drain() {
            for ep in std::mem::take(&mut svc.endpoints) {
                reuse.insert(ep.spec.clone(), ep);
            }
        }
        self.config = config.clone();
        if let Ok(owner) = mail_owner_ids(&config.params) {
            self.owner = owner;
        }
        match self.build_services(&config, reuse, false) {
            Ok(services) => self.services = services,
            Err(e) => tracing::error!("reload: {e}"),
        }
        for key in self.services.keys().cloned().collect::<Vec<_>>() {
            self.update_want(&key);
        }
        tracing::info!("reload -- version {}, configuration {}", env!("CARGO_PKG_VERSION"), dir.display());
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }

    fn status(&self) -> rpost_ipc::MasterStatus {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let now = Instant::now();
        let mut services: Vec<rpost_ipc::ServiceStatus> = self
            .config
            .master
            .services
            .iter()
            .filter_map(|def| self.services.get(&def.key()))
            .map(|svc| {
                let key = svc.def.key();
                let mut children: Vec<rpost_ipc::ChildInfo> = self
                    .children
                    .iter()
                    .filter(|(_, c)| c.key == key)
                    .map(|(&pid, c)| rpost_ipc::ChildInfo {
                        pid,
                        generation: c.generation,
                        state: match (c.draining, c.state) {
                            (true, _) => "draining",
                            (false, ChildState::Available) => "available",
                            (false, ChildState::Taken) => "busy",
                            (false, ChildState::Retiring) => "retiring",
                        }
                        .into(),
                        uses: c.uses,
                        started: secs(c.started),
                    })
                    .collect();
                children.sort_by_key(|c| c.pid);
                rpost_ipc::ServiceStatus {
                    name: svc.def.name.clone(),
                    kind: svc.def.kind.to_string(),
                    command: svc.def.command.clone(),
                    listen: svc.endpoints.iter().map(|e| e.shown.clone()).collect(),
                    maxproc: svc.maxproc,
                    throttled_for: svc.throttled_until.map(|t| t.saturating_duration_since(now).as_secs()),
                    children,
                }
            })
            .collect();
        // Children of services removed by a reload that are still finishing.
        for (&pid, c) in &self.children {
            if !self.services.contains_key(&c.key) {
                services.push(rpost_ipc::ServiceStatus {
                    name: c.key.0.clone(),
                    kind: c.key.1.to_string(),
                    command: c.path.display().to_string(),
                    listen: Vec::new(),
                    maxproc: 0,
                    throttled_for: None,
                    children: vec![rpost_ipc::ChildInfo {
                        pid,
                        generation: c.generation,
                        state: "draining".into(),
                        uses: c.uses,
                        started: secs(c.started),
                    }],
                });
            }
        }
        rpost_ipc::MasterStatus {
            pid: std::process::id(),
            started: secs(self.started),
            generation: self.generation,
            config_dir: self.config.dir.display().to_string(),
            services,
        }
    }

    async fn shutdown(mut self, rx: &mut mpsc::UnboundedReceiver<Event>) {
        // Closing the listeners first: new clients are refused rather than left waiting for
        // a master that will not start anyone.
        self.services.clear();
        let timeout = self.config.params.get_time("master_stop_timeout").unwrap_or(Duration::from_secs(10));
        // SIGTERM alone: a child finishes its clients; closing the status pipe as well would
        // be a second request, which a child takes as "exit now".
        for &pid in self.children.keys() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut killed = false;
        while !self.children.is_empty() {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(Event::Exited(pid, _)) => { self.children.remove(&pid); }
                    Some(Event::Control(_, reply)) => { let _ = reply.send(ControlResponse::Error("shutting down".into())); }
                    Some(_) => {}
                    None => break,
                },
                _ = &mut deadline, if !killed => {
                    for (&pid, child) in &self.children {
                        tracing::warn!("process {} pid {pid} still running after {}s: killing it", child.path.display(), timeout.as_secs());
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                    killed = true;
                }
            }
        }
    }
}

/// Waits for a client on one listener whenever the service wants a new child.
async fn watch_endpoint(
    fd: Arc<AsyncFd<OwnedFd>>,
    key: Key,
    generation: u64,
    mut want: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<Event>,
) {
    loop {
        while !*want.borrow_and_update() {
            if want.changed().await.is_err() {
                return;
            }
        }
        let guard = tokio::select! {
            g = fd.readable() => g,
            r = want.changed() => {
                if r.is_err() { return; }
                continue;
            }
        };
        let Ok(mut guard) = guard else { return };
        if !poll_readable(fd.get_ref()) {
            // Readiness was stale (a child took the client): wait for the next edge.
            guard.clear_ready();
            continue;
        }
        drop(guard);
        if tx.send(Event::Readable(key.clone(), generation)).is_err() {
            return;
        }
        // The master always answers a Readable event with a fresh `want` value.
        if want.changed().await.is_err() {
            return;
        }
    }
}

fn poll_readable(fd: &OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Sends Postfix's wakeup trigger ('W') to a unix or fifo service every `every`, the first
/// one at once (so qmgr-like services start with the master).
async fn wakeup_loop(spec: Spec, every: Duration, conditional: bool, used: Arc<AtomicBool>) {
    let mut iv = tokio::time::interval(every.max(Duration::from_secs(1)));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        if conditional && !used.load(Ordering::Relaxed) {
            continue;
        }
        let sent = tokio::time::timeout(Duration::from_secs(10), trigger(&spec)).await;
        if let Ok(Err(e)) = sent {
            tracing::warn!("wakeup {spec}: {e}");
        }
    }
}

async fn trigger(spec: &Spec) -> std::io::Result<()> {
    match spec {
        Spec::Unix(path) => {
            let mut s = tokio::net::UnixStream::connect(path).await?;
            s.write_all(b"W").await?;
            s.shutdown().await
        }
        Spec::Fifo(path) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(path)?;
            f.write_all(b"W")
        }
        Spec::Tcp(_) => Ok(()),
    }
}

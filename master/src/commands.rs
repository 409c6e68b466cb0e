//! The command-line verbs: start, stop, reload, status, check.
//!
//! Messages follow postfix(1): `rmaster: fatal: ...` and a non-zero exit for errors,
//! nothing on stdout for success unless there is something to report.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rpost_config::Config;
use rpost_ipc::{ControlRequest, ControlResponse, MasterStatus};

use crate::supervisor::MasterOptions;

/// Errors of the verbs, printed as `rmaster: fatal: ...`.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Config(#[from] rpost_config::ConfigError),
    #[error("{0}")]
    Master(#[from] crate::supervisor::MasterError),
    #[error("{0}")]
    Spool(#[from] crate::spool::SpoolError),
    #[error("{0}")]
    Control(#[from] crate::control::ControlError),
    #[error("{0}")]
    Log(#[from] rpost_log::LogError),
    #[error("the rpost mail system is not running")]
    NotRunning,
    #[error("the rpost mail system is already running (pid {0})")]
    AlreadyRunning(i32),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CommandError {
    let what = what.into();
    move |source| CommandError::Io { what, source }
}

/// Loads the configuration and prints its warnings.
pub fn load(dir: &Path) -> Result<Config, CommandError> {
    let config = Config::load(dir)?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    Ok(config)
}

fn queue_dir(config: &Config) -> Result<PathBuf, CommandError> {
    Ok(PathBuf::from(config.params.get("queue_directory")?))
}

fn pid_path(config: &Config) -> Result<PathBuf, CommandError> {
    Ok(queue_dir(config)?.join("pid").join("master.pid"))
}

/// The pid of a running master, if its pid file is locked.
pub fn running_pid(config: &Config) -> Result<Option<i32>, CommandError> {
    let path = pid_path(config)?;
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path.display().to_string())(e)),
    };
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err(path.display().to_string()))?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // We could lock it: nobody holds it, the pid inside is stale.
        Ok(_) => Ok(None),
        Err(_) => Ok(text.trim().parse().ok()),
    }
}

/// Takes the master's pid file lock and writes our pid (Postfix's `%10d\n` format).
fn lock_pid_file(config: &Config) -> Result<Flock<std::fs::File>, CommandError> {
    let path = pid_path(config)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(path.display().to_string()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err(_) => return Err(CommandError::AlreadyRunning(running_pid(config)?.unwrap_or(0))),
    };
    lock.set_len(0).map_err(io_err(path.display().to_string()))?;
    lock.rewind().map_err(io_err(path.display().to_string()))?;
    writeln!(lock, "{:>10}", std::process::id()).map_err(io_err(path.display().to_string()))?;
    Ok(lock)
}

fn owner_ids(config: &Config) -> Result<Option<crate::spool::Owners>, CommandError> {
    if !rpost_privilege::is_root() {
        return Ok(None);
    }
    let owner = config.params.get("mail_owner")?;
    let id = rpost_privilege::lookup_user(&owner).map_err(|e| CommandError::Other(format!("mail_owner: {e}")))?;
    if id.uid == 0 {
        return Err(CommandError::Other(format!("mail_owner = {owner}: must not be root")));
    }
    Ok(Some(crate::spool::Owners { root: (0, 0), mail: (id.uid, id.gid) }))
}

/// Daemons run as mail_owner: they must be able to reach the queue directory.
fn check_reachable(config: &Config, ids: crate::spool::Owners) -> Result<(), CommandError> {
    let queue = queue_dir(config)?;
    match crate::spool::unreachable(&queue, ids.mail.0, ids.mail.1) {
        None => Ok(()),
        Some((dir, mode)) => Err(CommandError::Other(format!(
            "mail_owner {} (uid {}) cannot reach queue_directory {}: {} has mode {mode:04o}",
            config.params.get("mail_owner")?,
            ids.mail.0,
            queue.display(),
            dir.display()
        ))),
    }
}

/// `rmaster start --foreground`: become the master. Does not return until it stops.
pub fn start_foreground(dir: &Path, detached: bool, verbose: bool) -> Result<(), CommandError> {
    if detached {
        rpost_privilege::new_session().map_err(|e| CommandError::Other(e.to_string()))?;
    }
    let loaded = crate::supervisor::Loaded::load(dir)?;
    let config = &loaded.config;
    rpost_log::init(&rpost_log::LogOptions {
        syslog_name: config.params.get("syslog_name")?,
        program: "master".into(),
        maillog_file: config.params.get("maillog_file")?,
        verbose,
        detached,
        chroot: false,
    })?;
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if !rpost_privilege::is_root() {
        tracing::info!("not running as root: children keep uid {} and are not chrooted", nix::unistd::getuid());
    }
    let ids = owner_ids(config)?;
    for repair in crate::spool::ensure(&queue_dir(config)?, ids)? {
        tracing::info!("spool: {repair}");
    }
    match crate::tls::ensure_default_certificate(config) {
        Ok(Some(cert)) => tracing::info!("created a self-signed TLS certificate: {}", cert.display()),
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    if let Some(ids) = ids {
        check_reachable(config, ids)?;
    }
    let pid_lock = lock_pid_file(config)?;
    let pid_file = pid_path(config)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io_err("tokio runtime"))?;
    let result = rt.block_on(crate::supervisor::run(loaded, MasterOptions { detached }, std::future::pending()));
    // Remove the pid file while still holding its lock, so no new master sees a stale one.
    let _ = std::fs::remove_file(&pid_file);
    drop(pid_lock);
    match &result {
        Ok(()) => tracing::info!("stopped"),
        Err(e) => tracing::error!("fatal: {e}"),
    }
    result.map_err(CommandError::from)
}

/// `rmaster start`: start a detached master and wait until it answers.
pub fn start_background(dir: &Path, verbose: bool) -> Result<(), CommandError> {
    let config = load(dir)?;
    if let Some(pid) = running_pid(&config)? {
        return Err(CommandError::AlreadyRunning(pid));
    }
    // Fail here, on the terminal, for what would make the detached master fail.
    let ids = owner_ids(&config)?;
    crate::spool::ensure(&queue_dir(&config)?, ids)?;
    if let Some(ids) = ids {
        check_reachable(&config, ids)?;
    }
    let exe = std::env::current_exe().map_err(io_err("current executable"))?;
    let mut child = std::process::Command::new(exe)
        .arg("-c")
        .arg(dir)
        .args(["start", "--foreground", "--detached"])
        .args(verbose.then_some("-v"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(io_err("start master"))?;
    let queue = queue_dir(&config)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let rt = runtime()?;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(io_err("wait"))? {
            return Err(CommandError::Other(format!(
                "the master exited during start-up ({status}); see the mail log for why"
            )));
        }
        if let Ok(ControlResponse::Status(st)) = rt.block_on(crate::control::request(&queue, &ControlRequest::Status)) {
            println!("rmaster: started the rpost mail system (pid {})", st.pid);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(CommandError::Other("the master did not answer within 15s; see the mail log".into()))
}

fn runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io_err("tokio runtime"))
}

/// True while `pid` runs; a zombie waiting for its parent to reap it has stopped running.
fn pid_alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// `rmaster stop`: SIGTERM the master, wait, and SIGKILL its process group if it hangs.
pub fn stop(dir: &Path) -> Result<(), CommandError> {
    let config = load(dir)?;
    let pid = running_pid(&config)?.ok_or(CommandError::NotRunning)?;
    let grace = config.params.get_time("master_stop_timeout")? + Duration::from_secs(5);
    kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| io_err(format!("kill {pid}"))(e.into()))?;
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if running_pid(&config)?.is_none() && !pid_alive(pid) {
            println!("rmaster: stopped the rpost mail system");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The master hangs: end it and everything in its process group the hard way.
    let target =
        if nix::unistd::getpgid(Some(Pid::from_raw(pid))).ok() == Some(Pid::from_raw(pid)) { -pid } else { pid };
    let _ = kill(Pid::from_raw(target), Signal::SIGKILL);
    println!("rmaster: the master did not stop within {}s: killed", grace.as_secs());
    Ok(())
}

/// `rmaster reload`: validate the configuration, SIGHUP the master, wait for the new generation.
pub fn reload(dir: &Path) -> Result<(), CommandError> {
    let config = load(dir)?;
    let pid = running_pid(&config)?.ok_or(CommandError::NotRunning)?;
    let queue = queue_dir(&config)?;
    let rt = runtime()?;
    let before = master_status(&rt, &queue)?.generation;
    kill(Pid::from_raw(pid), Signal::SIGHUP).map_err(|e| io_err(format!("kill {pid}"))(e.into()))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if master_status(&rt, &queue).is_ok_and(|st| st.generation > before) {
            println!("rmaster: refreshed the rpost mail system");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CommandError::Other("the master did not confirm the reload within 15s; see the mail log".into()))
}

fn master_status(rt: &tokio::runtime::Runtime, queue: &Path) -> Result<MasterStatus, CommandError> {
    match rt.block_on(crate::control::request(queue, &ControlRequest::Status))? {
        ControlResponse::Status(st) => Ok(st),
        ControlResponse::Error(e) => Err(CommandError::Other(e)),
    }
}

/// `rmaster status`: is it running, and what runs under it.
pub fn status(dir: &Path) -> Result<(), CommandError> {
    let config = load(dir)?;
    if running_pid(&config)?.is_none() {
        return Err(CommandError::NotRunning);
    }
    let st = master_status(&runtime()?, &queue_dir(&config)?)?;
    print!("{}", format_status(&st, std::time::SystemTime::now()));
    Ok(())
}

/// Human-readable status report.
pub fn format_status(st: &MasterStatus, now: std::time::SystemTime) -> String {
    use std::fmt::Write as _;
    let now = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rpost is running: master pid {}, up {}s, generation {}, configuration {}",
        st.pid,
        now.saturating_sub(st.started),
        st.generation,
        st.config_dir
    );
    for svc in &st.services {
        let maxproc = if svc.maxproc == 0 { "unlimited".to_string() } else { svc.maxproc.to_string() };
        let _ = write!(out, "service {} {} command {} maxproc {}", svc.name, svc.kind, svc.command, maxproc);
        if !svc.listen.is_empty() {
            let _ = write!(out, " listen {}", svc.listen.join(" "));
        }
        if let Some(t) = svc.throttled_for {
            let _ = write!(out, " throttled {t}s");
        }
        out.push('\n');
        for c in &svc.children {
            let _ = writeln!(
                out,
                "    pid {} {} uses {} up {}s generation {}",
                c.pid,
                c.state,
                c.uses,
                now.saturating_sub(c.started),
                c.generation
            );
        }
    }
    out
}

/// Transports named by the routing parameters that master.cf does not provide: mail for
/// them would wait in the queue with "mail transport unavailable".
pub fn transport_warnings(config: &Config) -> Result<Vec<String>, CommandError> {
    let mut out = Vec::new();
    for param in ["local_transport", "virtual_transport", "relay_transport", "default_transport"] {
        let value = config.params.get(param)?;
        let transport = value.split(':').next().unwrap_or("").trim();
        if transport.is_empty() {
            continue;
        }
        if config.master.find(transport, rpost_config::ServiceType::Unix).is_none() {
            out.push(format!(
                "{param} = {value}: master.cf has no \"{transport} unix\" service; such mail stays queued \
                 (mail transport unavailable)"
            ));
        }
    }
    Ok(out)
}

/// `rmaster check`: validate the configuration, the daemons it names, and the spool.
/// Returns the number of problems found (repairs are not problems).
pub fn check(dir: &Path) -> Result<ExitCode, CommandError> {
    let config = load(dir)?;
    let mut problems = 0;
    let daemon_dir = PathBuf::from(config.params.get("daemon_directory")?);
    for svc in &config.master.services {
        let params = config.service_params(svc);
        if let Err(e) = crate::endpoint::specs(svc, &params) {
            tracing::error!("{}:{}: {e}", config.master.path.display(), svc.line);
            problems += 1;
        }
        let path = daemon_dir.join(&svc.command);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0 => {}
            _ => {
                tracing::error!(
                    "{}:{}: service {}: {} is not an executable file (daemon_directory = {})",
                    config.master.path.display(),
                    svc.line,
                    svc.name,
                    path.display(),
                    daemon_dir.display()
                );
                problems += 1;
            }
        }
    }
    for w in transport_warnings(&config)? {
        tracing::warn!("{w}");
    }
    let ids = match owner_ids(&config) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!("{e}");
            problems += 1;
            None
        }
    };
    for repair in crate::spool::ensure(&queue_dir(&config)?, ids)? {
        println!("rmaster: repaired: {repair}");
    }
    match crate::tls::ensure_default_certificate(&config) {
        Ok(Some(cert)) => println!("rmaster: created a self-signed TLS certificate: {}", cert.display()),
        Ok(None) => {}
        Err(e) => {
            tracing::error!("{e}");
            problems += 1;
        }
    }
    if let Some(ids) = ids
        && let Err(e) = check_reachable(&config, ids)
    {
        tracing::error!("{e}");
        problems += 1;
    }
    Ok(if problems == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

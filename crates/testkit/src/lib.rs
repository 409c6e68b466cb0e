//! rpost-testkit - start the real suite in a test, and leave nothing behind
//!
//! # SUMMARY
//! `Suite::builder().inet("smtp", "n - n - - smtpd").start()` writes a temporary config
//! directory and spool, picks a free loopback port for every `inet` service, runs the real
//! `rmaster start --foreground`, waits until its control socket answers, and kills the whole
//! process group on drop, whether the test passed or panicked.
//!
//! # DESCRIPTION
//! Binaries are taken from the cargo target directory of the running test (or
//! `RPOST_BIN_DIR`), and `daemon_directory` points there, so the suite under test is the one
//! just built: `cargo build --workspace --bins` must have run (the README's test command
//! does). All processes log to `maillog` in the temporary directory; [`Suite::log`] and
//! [`Suite::wait_log`] read it.
//!
//! # SECURITY
//! Tests run as whoever runs them. As root, `mail_owner` is `nobody` so privilege dropping
//! is exercised for real.
//!
//! # CONFIGURATION
//! Builder methods add main.cf parameters and master.cf lines.
//!
//! # STANDARDS
//! None.

pub mod dns;
pub mod dovecot;
pub mod postfix;
pub mod smtp;
pub mod sqldb;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rpost_ipc::{ControlRequest, ControlResponse, FrameDecoder, MasterStatus};

/// Directory holding the suite's binaries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RPOST_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test binary directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of one suite binary; panics with the fix when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A TCP port free on every one of `addrs` (loopback addresses such as 127.0.0.2), for
/// suites that must listen on the same port at different addresses (MX relaying uses one
/// `smtp_tcp_port` for every server).
pub fn free_port_on(addrs: &[Ipv4Addr]) -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if addrs.iter().all(|a| TcpListener::bind((*a, port)).is_ok()) {
            return port;
        }
    }
    panic!("no port free on all of {addrs:?}");
}

/// Builds a [`Suite`].
#[derive(Debug, Default)]
pub struct SuiteBuilder {
    main: Vec<(String, String)>,
    /// master.cf lines; `{port:NAME}` is replaced by NAME's port.
    master: Vec<String>,
    inet: Vec<String>,
    env: Vec<(String, String)>,
    /// Services added with [`SuiteBuilder::inet_at`]: their name and chosen port.
    fixed_ports: Vec<(String, u16)>,
}

impl SuiteBuilder {
    /// Adds `name = value` to main.cf (after the harness defaults, so it wins).
    pub fn main(mut self, name: &str, value: &str) -> Self {
        self.main.push((name.into(), value.into()));
        self
    }

    /// Adds an inet service on a free loopback port: `rest` is everything after the type
    /// column, e.g. `"n - n - - smtpd"`. The port is [`Suite::port`]`(name)`.
    pub fn inet(mut self, name: &str, rest: &str) -> Self {
        self.inet.push(name.into());
        self.master.push(format!("127.0.0.1:{{port:{name}}} inet {rest}"));
        self
    }

    /// Adds an inet service on a chosen address and port (e.g. 127.0.0.2 and a port from
    /// [`free_port_on`]); `rest` as in [`SuiteBuilder::inet`]. [`Suite::port`]`(name)` is
    /// `port`. Pair it with `.main("inet_interfaces", "127.0.0.2")` so the instance knows
    /// its own address.
    pub fn inet_at(mut self, name: &str, addr: Ipv4Addr, port: u16, rest: &str) -> Self {
        self.fixed_ports.push((name.into(), port));
        self.master.push(format!("{addr}:{port} inet {rest}"));
        self
    }

    /// Sets an environment variable for rmaster (e.g. `NOTIFY_SOCKET`).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The seed walkthrough's virtual mailboxes: domain `example.test`, users in the
    /// passwd-file `etc/users` (the test writes it), mail in `{root}/vmail/%d/%n/mail`, owned
    /// by [`mail_user`]. Delivery services still come from the test's master.cf lines, except
    /// authd's auth-userdb service, through which lmtp-deliver looks the users up.
    pub fn virtual_delivery(self) -> Self {
        let (uid, gid) = mail_user();
        self.master_line("auth-userdb unix - - n - 1 authd userdb")
            .main("virtual_mailbox_domains", "example.test")
            .main("auth_passdb", "passwd-file:{root}/etc/users")
            .main("mail_home", "{root}/vmail/%d/%n")
            .main("mail_location", "maildir:~/mail")
            .main("mail_uid", &uid.to_string())
            .main("mail_gid", &gid.to_string())
            .main("first_valid_uid", "1")
            .main("first_valid_gid", "1")
            .main("local_recipient_maps", "")
            .main("alias_maps", "")
    }

    /// The seed documents' domains for smtpd tests: local `mail.example.test`, virtual
    /// `example.test` with its users in the passwd-file `etc/users` (the test writes it),
    /// mynetworks = 127.0.0.1 only (so 127.0.0.2 is "the Internet"), no alias or local
    /// recipient tables.
    pub fn seed_domains(self) -> Self {
        self.main("mydomain", "example.test")
            .main("myhostname", "mail.$mydomain")
            .main("mydestination", "$myhostname, localhost")
            .main("mynetworks", "127.0.0.1/32")
            .main("virtual_mailbox_domains", "example.test")
            .main("auth_passdb", "passwd-file:{root}/etc/users")
            .main("alias_maps", "")
            .main("local_recipient_maps", "")
    }

    /// Adds a raw master.cf line.
    pub fn master_line(mut self, line: &str) -> Self {
        self.master.push(line.into());
        self
    }

    /// Writes the configuration and starts rmaster.
    pub fn start(mut self) -> Suite {
        let env = std::mem::take(&mut self.env);
        let suite = self.prepare();
        suite.spawn(&env)
    }

    /// Writes the configuration, lets `f` add files (users, maps) to it, and starts rmaster.
    pub fn start_with(mut self, f: impl FnOnce(&Suite)) -> Suite {
        let env = std::mem::take(&mut self.env);
        let suite = self.prepare();
        f(&suite);
        suite.spawn(&env)
    }

    /// Writes the configuration without starting anything (for CLI tests).
    /// `{root}` in main.cf values stands for the temporary root directory.
    pub fn prepare(self) -> Suite {
        let tmp = tempfile::Builder::new().prefix("rpost-test-").tempdir().expect("tempdir");
        // Daemons that drop to mail_owner must be able to reach the spool below it.
        std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let root = tmp.path().to_path_buf();
        let config_dir = root.join("etc");
        std::fs::create_dir_all(&config_dir).expect("config dir");
        let mut ports: Vec<(String, u16)> = self.inet.iter().map(|n| (n.clone(), free_port())).collect();
        ports.extend(self.fixed_ports.iter().cloned());
        let suite = Suite { tmp, root, config_dir, ports, master: None };
        let mut main = format!(
            "# written by rpost-testkit\nqueue_directory = {}\ndaemon_directory = {}\nmaillog_file = {}\nmyhostname = mail.example.test\ninet_interfaces = loopback-only\ninet_protocols = ipv4\nmail_owner = {}\nmaster_stop_timeout = 5s\n# no DNS queries leave a test: a closed loopback port (tests with a DnsServer override it)\ndns_resolver_servers = 127.0.0.1:1\n",
            suite.root.join("spool").display(),
            bin_dir().display(),
            suite.log_path().display(),
            if nix::unistd::getuid().is_root() { "nobody".to_string() } else { current_user() },
        );
        for (name, value) in &self.main {
            let value = value.replace("{root}", &suite.root.display().to_string());
            main.push_str(&format!("{name} = {value}\n"));
        }
        suite.write_config("main.cf", &main);
        let master = self.master.iter().map(|l| suite.expand_ports(l)).collect::<Vec<_>>().join("\n");
        suite.write_config("master.cf", &format!("{master}\n"));
        suite
    }
}

/// The uid:gid that mail_owner and mailbox files have in the suite: `nobody` when the tests
/// run as root, else the caller.
pub fn mail_user() -> (u32, u32) {
    match nix::unistd::User::from_name("nobody") {
        Ok(Some(u)) if nix::unistd::geteuid().is_root() => (u.uid.as_raw(), u.gid.as_raw()),
        _ => (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw()),
    }
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

/// A running (or prepared) rpost instance in a temporary directory.
#[derive(Debug)]
pub struct Suite {
    tmp: tempfile::TempDir,
    root: PathBuf,
    config_dir: PathBuf,
    ports: Vec<(String, u16)>,
    master: Option<Child>,
}

impl Suite {
    pub fn builder() -> SuiteBuilder {
        SuiteBuilder::default()
    }

    /// Starts rmaster on a suite made with [`SuiteBuilder::prepare`].
    pub fn start_prepared(self) -> Suite {
        self.spawn(&[])
    }

    fn spawn(mut self, env: &[(String, String)]) -> Suite {
        let stderr = std::fs::File::create(self.root.join("master.stderr")).expect("stderr file");
        let child = Command::new(bin("rmaster"))
            .arg("-c")
            .arg(&self.config_dir)
            .args(["start", "--foreground"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .envs(env.iter().map(|(k, v)| (k, v)))
            // Own process group: Drop kills rmaster and every daemon under it at once.
            .process_group(0)
            .spawn()
            .expect("spawn rmaster");
        self.master = Some(child);
        self.wait_ready();
        self
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.master.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("rmaster exited at start-up ({status}):\n{}\n{}", self.stderr(), self.log());
            }
            if self.try_status().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("rmaster did not become ready:\n{}\n{}", self.stderr(), self.log());
    }

    /// The temporary root (config in `etc/`, spool in `spool/`).
    /// The messages in the Maildir directory `dir` (a `new/` or `cur/`), sorted; none if it
    /// does not exist yet.
    pub fn messages_in(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()).map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Waits (`timeout` at most, then panics with the log) until `dir` holds at least `n`
    /// messages; returns them, sorted.
    pub fn wait_for_messages(&self, dir: &Path, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = Suite::messages_in(dir);
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{} has {} of {n} messages\n{}", dir.display(), got.len(), self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Delivers each of `messages` (header and body, CRLF, without the final dot) from
    /// sender@example.org to `rcpt` over the suite's `private/lmtp-deliver` socket, as qmgr's
    /// LMTP client would, asserting every reply is positive.
    pub fn lmtp_deliver(&self, rcpt: &str, messages: &[String]) {
        use std::io::BufRead;
        let path = self.queue_dir().join("private/lmtp-deliver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = UnixStream::connect(&path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = std::io::BufReader::new(s);
        let mut reply = || {
            let mut all = String::new();
            loop {
                let mut l = String::new();
                assert!(r.read_line(&mut l).unwrap() > 0, "lmtp-deliver closed: {all}");
                all.push_str(&l);
                if l.as_bytes().get(3) != Some(&b'-') {
                    return all;
                }
            }
        };
        assert!(reply().starts_with("220"));
        w.write_all(b"LHLO test\r\n").unwrap();
        assert!(reply().starts_with("250"));
        for msg in messages {
            w.write_all(format!("MAIL FROM:<sender@example.org>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes()).unwrap();
            for _ in 0..3 {
                let l = reply();
                assert!(l.starts_with('2') || l.starts_with('3'), "{l}");
            }
            w.write_all(msg.as_bytes()).unwrap();
            w.write_all(b".\r\n").unwrap();
            let l = reply();
            assert!(l.starts_with("250"), "{l}");
        }
        w.write_all(b"QUIT\r\n").unwrap();
    }

    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.root.join("spool")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("maillog")
    }

    /// rmaster's pid.
    pub fn master_pid(&self) -> u32 {
        self.master.as_ref().expect("suite not started").id()
    }

    /// Port of an inet service added with [`SuiteBuilder::inet`] (or [`Suite::add_port`]).
    pub fn port(&self, name: &str) -> u16 {
        self.ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p).unwrap_or_else(|| panic!("no port {name}"))
    }

    /// Allocates a port for a service a test adds later (for reload tests).
    pub fn add_port(&mut self, name: &str) -> u16 {
        let port = free_port();
        self.ports.push((name.into(), port));
        port
    }

    /// Replaces `{port:NAME}` with the port of NAME.
    pub fn expand_ports(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, port) in &self.ports {
            out = out.replace(&format!("{{port:{name}}}"), &port.to_string());
        }
        out
    }

    /// Writes a file into the config directory.
    pub fn write_config(&self, file: &str, text: &str) {
        std::fs::write(self.config_dir.join(file), text).expect("write config");
    }

    pub fn read_config(&self, file: &str) -> String {
        std::fs::read_to_string(self.config_dir.join(file)).expect("read config")
    }

    /// Everything the suite logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// rmaster's standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.root.join("master.stderr")).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "log never contained {needle:?}:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the master for its status over the control socket.
    pub fn try_status(&self) -> std::io::Result<MasterStatus> {
        let mut s = UnixStream::connect(self.queue_dir().join("pid").join("master.sock"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(&rpost_ipc::encode(&ControlRequest::Status).map_err(std::io::Error::other)?)?;
        let mut dec = FrameDecoder::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(resp) = dec.decode::<ControlResponse>().map_err(std::io::Error::other)? {
                return match resp {
                    ControlResponse::Status(st) => Ok(st),
                    ControlResponse::Error(e) => Err(std::io::Error::other(e)),
                };
            }
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            dec.feed(&buf[..n]);
        }
    }

    pub fn status(&self) -> MasterStatus {
        self.try_status().expect("master status")
    }

    /// Polls status until `pred` holds; panics with the last status after `timeout`.
    pub fn wait_status(&self, timeout: Duration, pred: impl Fn(&MasterStatus) -> bool) -> MasterStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(st) = self.try_status()
                && pred(&st)
            {
                return st;
            }
            if Instant::now() >= deadline {
                panic!("status condition not met: {:#?}\n{}", self.try_status(), self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `rmaster -c DIR ARGS...` and returns its output. A command that has not finished
    /// after a minute (say, a `start --foreground` that was expected to fail) is stopped
    /// with SIGTERM, so a regression fails the test instead of hanging it.
    pub fn rmaster(&self, args: &[&str]) -> Output {
        let mut child = Command::new(bin("rmaster"))
            .arg("-c")
            .arg(&self.config_dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rmaster");
        // Drain both pipes while waiting: a large output must not block the child.
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("stdout")));
        let err = drain(Box::new(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait rmaster") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
                break child.wait().expect("wait rmaster");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
    }

    /// Connects to an inet service and reads its first line.
    pub fn greeting(&self, name: &str) -> String {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port(name))).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut out = Vec::new();
        let mut byte = [0u8; 1];
        while s.read(&mut byte).unwrap_or(0) == 1 {
            out.push(byte[0]);
            if byte[0] == b'\n' {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Pids of every live process in the suite's process group (rmaster and its children).
    pub fn processes(&self) -> Vec<u32> {
        let Some(master) = &self.master else { return Vec::new() };
        processes_in_group(master.id())
    }

    /// Stops the master the way an admin does and waits for it; returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let out = self.rmaster(&["stop"]);
        assert!(out.status.success(), "rmaster stop: {}", String::from_utf8_lossy(&out.stderr));
        self.master.take().expect("running").wait().expect("wait rmaster")
    }
}

/// Live processes whose process group is `pgid`, from /proc.
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return pids };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the parenthesised command: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            pids.push(pid);
        }
    }
    pids
}

/// True while `pid` runs (exists and is not a zombie waiting to be reaped).
pub fn pid_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
}

/// (ppid, uid) of a process, from /proc.
pub fn process_owner(pid: u32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    Some((field("PPid:")?, field("Uid:")?))
}

impl Drop for Suite {
    fn drop(&mut self) {
        // A master the test started itself (`rmaster start` daemonizes into its own session):
        // found through the pid file, killed with its whole process group.
        if let Ok(text) = std::fs::read_to_string(self.queue_dir().join("pid/master.pid"))
            && let Ok(pid) = text.trim().parse::<i32>()
            && pid > 1
            && self.master.as_ref().is_none_or(|m| m.id() as i32 != pid)
            && pid_running(pid as u32)
            && nix::unistd::getpgid(Some(Pid::from_raw(pid))).ok() == Some(Pid::from_raw(pid))
        {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
        if let Some(mut child) = self.master.take() {
            let pgid = child.id() as i32;
            let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
            let _ = child.wait();
            // Daemons reparented elsewhere are still in the group: wait until none is left.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !processes_in_group(pgid as u32).is_empty() && Instant::now() < deadline {
                let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

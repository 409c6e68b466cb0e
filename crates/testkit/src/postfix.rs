//! A private instance of Debian's Postfix for interop tests: its own config directory, queue
//! and data directory under /tmp, smtpd on a free loopback port, stopped and removed on drop.
//! The system's Postfix, if any, is not touched.
//!
//! Postfix's master refuses to run as anyone but root, so [`Postfix::start`] returns `None`
//! (after saying why on stderr) when the tests do not run as root or Postfix is not installed:
//! the caller skips its test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::free_port;

/// A running private Postfix.
#[derive(Debug)]
pub struct Postfix {
    dir: PathBuf,
    port: u16,
}

/// The services a queue-and-deliver instance needs, nothing else (no pickup, no local);
/// tlsmgr for instances that use TLS.
const MASTER_CF: &str = "cleanup unix n - n - 0 cleanup\n\
                         qmgr unix n - n 300 1 qmgr\n\
                         rewrite unix - - n - - trivial-rewrite\n\
                         bounce unix - - n - 0 bounce\n\
                         defer unix - - n - 0 bounce\n\
                         trace unix - - n - 0 bounce\n\
                         verify unix - - n - 1 verify\n\
                         proxymap unix - - n - - proxymap\n\
                         error unix - - n - - error\n\
                         retry unix - - n - - error\n\
                         lmtp unix - - n - - lmtp\n\
                         smtp unix - - n - - smtp\n\
                         anvil unix - - n - 1 anvil\n\
                         scache unix - - n - 1 scache\n\
                         postlog unix-dgram n - n - 1 postlogd\n\
                         tlsmgr unix - - n 1000? 1 tlsmgr\n";

impl Postfix {
    /// Starts Postfix with smtpd on a free 127.0.0.1 port. `main` lines are appended to a
    /// minimal main.cf (`myhostname = postfix.example.test`, `mynetworks = 127.0.0.0/8`, no
    /// local delivery, no DNS); `smtpd_options` are `-o name=value` words for the smtpd line.
    pub fn start(main: &[(&str, &str)], smtpd_options: &str) -> Option<Postfix> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: Postfix interop skipped (Postfix's master needs root)");
            return None;
        }
        if !Path::new("/usr/sbin/postfix").exists() || nix::unistd::User::from_name("postfix").ok()?.is_none() {
            eprintln!("Postfix is not installed: interop skipped (.ci/run installs it)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("rpost-postfix-{}-{}", std::process::id(), free_port()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["etc", "spool", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let postfix_user = nix::unistd::User::from_name("postfix").unwrap().unwrap();
        nix::unistd::chown(&dir.join("data"), Some(postfix_user.uid), None).unwrap();
        let port = free_port();
        let d = dir.display();
        let mut cf = format!(
            "compatibility_level = 3.6\nqueue_directory = {d}/spool\ndata_directory = {d}/data\n\
             mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = postfix.example.test\n\
             mydestination =\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
             maillog_file = {d}/postfix.log\nmaillog_file_prefixes = {d}\n\
             alias_maps =\nalias_database =\nsmtp_dns_support_level = disabled\n"
        );
        for (name, value) in main {
            cf.push_str(&format!("{name} = {value}\n"));
        }
        std::fs::write(dir.join("etc/main.cf"), cf).unwrap();
        std::fs::write(
            dir.join("etc/master.cf"),
            format!("127.0.0.1:{port} inet n - n - - smtpd {smtpd_options}\n{MASTER_CF}"),
        )
        .unwrap();
        let pf = Postfix { dir, port };
        let out = Command::new("/usr/sbin/postfix").arg("-c").arg(pf.dir.join("etc")).arg("start").output().unwrap();
        assert!(out.status.success(), "postfix start failed: {}\n{}", String::from_utf8_lossy(&out.stderr), pf.log());
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Postfix smtpd never listened:\n{}", pf.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(pf)
    }

    /// The smtpd port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance's directory (`etc/`, `spool/`, `data/`, `postfix.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Postfix's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postfix.log")).unwrap_or_default()
    }

    /// Waits until the log has `needle` and returns the log; panics with it after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {needle:?} in Postfix's log:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix").arg("-c").arg(self.dir.join("etc")).arg("abort").output();
        // `abort` returns before the master has gone; its pid file says whom to wait for.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("spool/pid/master.pid"))
            && let Ok(pid) = pid.trim().parse::<u32>()
        {
            let deadline = Instant::now() + Duration::from_secs(10);
            while crate::pid_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! A private Dovecot (Debian's dovecot-core) for interop tests: the caller's configuration in
//! a directory of its own (`base_dir`, `state_dir`, `log_path` inside it), started with
//! `dovecot -c`, stopped on drop. The system's Dovecot, if any, is not touched.
//!
//! [`Dovecot::start`] returns `None` (after saying why on stderr) when Dovecot is not installed
//! or does not start: the caller skips its test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running private Dovecot.
#[derive(Debug)]
pub struct Dovecot {
    dir: PathBuf,
    remove_dir: bool,
}

impl Dovecot {
    /// Writes `dir/dovecot.conf` from the common lines (base_dir, state_dir, log_path, ssl = no,
    /// listen = 127.0.0.1) and `conf`, starts Dovecot and waits until `dir/ready` (a socket the
    /// configuration listens on) exists. With `remove_dir`, `dir` goes on drop.
    pub fn start(dir: &Path, conf: &str, ready: &str, remove_dir: bool) -> Option<Dovecot> {
        let dovecot = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"].into_iter().find(|p| Path::new(p).exists());
        let Some(dovecot) = dovecot else {
            eprintln!("Dovecot is not installed: interop skipped (.ci/run installs it)");
            return None;
        };
        let d = dir.display();
        let text = format!(
            "base_dir = {d}/base\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\nssl = no\nlisten = 127.0.0.1\n{conf}"
        );
        std::fs::write(dir.join("dovecot.conf"), text).ok()?;
        let dc = Dovecot { dir: dir.to_path_buf(), remove_dir };
        let ok = Command::new(dovecot).arg("-c").arg(dir.join("dovecot.conf")).status().ok()?.success();
        if !ok {
            eprintln!("dovecot did not start: {}", dc.log());
            return None;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join(ready).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(dc)
    }

    /// The directory holding the configuration, the sockets and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("base/master.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while crate::pid_running(pid as u32) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

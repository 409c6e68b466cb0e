//! `mail_max_userip_connections`: how many IMAP sessions one user may have from one address.
//! Each session is its own process, so the count lives in the user's store: a file
//! `rpost-imap-sessions/<ip>-<pid>` per session, removed when it ends; entries of processes
//! that no longer exist (a crash) are ignored and cleaned up. Dovecot keeps this count in its
//! anvil process; the limit and the refusal are the same.

use std::path::{Path, PathBuf};

/// The directory below the store root.
pub const DIR: &str = "rpost-imap-sessions";

/// A registered session; the entry is removed on drop.
#[derive(Debug)]
pub struct Registration(PathBuf);

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn alive(pid: i32) -> bool {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// Registers this process's session from `ip` in `store`; `Err(n)` when `limit` sessions
/// (`n`) from that address are already running. A limit of 0 means no limit. Failures to
/// keep the count (an unwritable store) never refuse a login.
pub fn register(store: &Path, ip: &str, limit: u32) -> Result<Option<Registration>, u32> {
    if !store.is_dir() {
        return Ok(None);
    }
    let dir = store.join(DIR);
    {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    }
    if !dir.is_dir() {
        return Ok(None);
    }
    let ip: String = ip.chars().map(|c| if c == '/' { '_' } else { c }).collect();
    let prefix = format!("{ip}-");
    let mut count = 0;
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for ent in rd.flatten() {
            let Ok(name) = ent.file_name().into_string() else { continue };
            let Some(pid) = name.rsplit_once('-').and_then(|(_, p)| p.parse::<i32>().ok()) else { continue };
            if !alive(pid) {
                let _ = std::fs::remove_file(ent.path());
                continue;
            }
            if name.starts_with(&prefix) {
                count += 1;
            }
        }
    }
    if limit > 0 && count >= limit {
        return Err(count);
    }
    let path = dir.join(format!("{ip}-{}", std::process::id()));
    match std::fs::write(&path, b"") {
        Ok(()) => Ok(Some(Registration(path))),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_live_sessions_per_address() {
        let d = std::env::temp_dir().join(format!("imapd-limit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join(DIR)).unwrap();
        // Two live sessions (this process's pid and pid 1) and a dead one.
        std::fs::write(d.join(DIR).join("192.0.2.1-1"), "").unwrap();
        std::fs::write(d.join(DIR).join("192.0.2.1-999999999"), "").unwrap();
        std::fs::write(d.join(DIR).join("192.0.2.9-1"), "").unwrap();
        assert_eq!(register(&d, "192.0.2.1", 1).unwrap_err(), 1);
        assert!(!d.join(DIR).join("192.0.2.1-999999999").exists(), "dead entries are cleaned up");
        let r = register(&d, "192.0.2.1", 2).unwrap().unwrap();
        assert!(d.join(DIR).join(format!("192.0.2.1-{}", std::process::id())).exists());
        drop(r);
        assert!(!d.join(DIR).join(format!("192.0.2.1-{}", std::process::id())).exists());
        assert!(register(&d, "192.0.2.1", 0).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! `mail_max_userip_connections`: how many IMAP sessions one user may have from one address.
//! Sessions of one user can live in several processes (one per login process), so the count
//! lives in the user's store: a file `rpost-imap-sessions/<ip>-<pid>` per process and client
//! address holding how many sessions that process serves from there, rewritten as they come
//! and go and removed at zero; files of processes that no longer exist (a crash) are ignored
//! and cleaned up. Dovecot keeps this count in its anvil process; the limit and the refusal
//! are the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The directory below the store root.
pub const DIR: &str = "rpost-imap-sessions";

/// This process's sessions per count file. Held while a file is checked and rewritten, so
/// the sessions of one process never race each other.
static LOCAL: Mutex<Option<HashMap<PathBuf, u32>>> = Mutex::new(None);

/// A registered session; the count goes down on drop.
#[derive(Debug)]
pub struct Registration(PathBuf);

impl Drop for Registration {
    fn drop(&mut self) {
        let mut local = LOCAL.lock().unwrap_or_else(|e| e.into_inner());
        let map = local.get_or_insert_with(HashMap::new);
        let n = map.get(&self.0).copied().unwrap_or(1).saturating_sub(1);
        if n == 0 {
            map.remove(&self.0);
            let _ = std::fs::remove_file(&self.0);
        } else {
            map.insert(self.0.clone(), n);
            let _ = std::fs::write(&self.0, n.to_string());
        }
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

/// Registers a session of this process from `ip` in `store`; `Err(n)` when `limit` sessions
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
    let me = std::process::id() as i32;
    let mine = dir.join(format!("{prefix}{me}"));
    let mut local = LOCAL.lock().unwrap_or_else(|e| e.into_inner());
    let map = local.get_or_insert_with(HashMap::new);
    let ours = map.get(&mine).copied().unwrap_or(0);
    let mut count = ours;
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for ent in rd.flatten() {
            let Ok(name) = ent.file_name().into_string() else { continue };
            let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<i32>().ok()) else { continue };
            if pid == me {
                continue;
            }
            if !alive(pid) {
                let _ = std::fs::remove_file(ent.path());
                continue;
            }
            // An empty or unreadable file counts as one session.
            let n = std::fs::read_to_string(ent.path()).ok().and_then(|t| t.trim().parse::<u32>().ok());
            count += n.unwrap_or(1).max(1);
        }
    }
    if limit > 0 && count >= limit {
        return Err(count);
    }
    match std::fs::write(&mine, (ours + 1).to_string()) {
        Ok(()) => {
            map.insert(mine.clone(), ours + 1);
            Ok(Some(Registration(mine)))
        }
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
        let mine = d.join(DIR).join(format!("192.0.2.1-{}", std::process::id()));
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "1");
        // A second session of this process is counted in the same file.
        let r2 = register(&d, "192.0.2.1", 3).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "2");
        assert_eq!(register(&d, "192.0.2.1", 3).unwrap_err(), 3);
        drop(r2);
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "1");
        drop(r);
        assert!(!d.join(DIR).join(format!("192.0.2.1-{}", std::process::id())).exists());
        assert!(register(&d, "192.0.2.1", 0).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}

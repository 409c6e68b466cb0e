//! The queue directory: create what is missing, repair what is wrong.
//!
//! Layout (Postfix's, trimmed to what rpost uses): the queue directory itself and `pid/` are
//! root's; the queue subdirectories and `private/` belong to `mail_owner` and nobody else may
//! enter them; `public/` lets others reach the sockets in it but not list it.
//!
//! `maildrop/` (1733, mail_owner) is where local users' `sendmail` drops messages for pickup:
//! anyone may create files there, only mail_owner may list it, and the sticky bit keeps users
//! from removing or renaming each other's files. Postfix reaches maildrop/ and public/ through
//! the setgid `postdrop` group (0730 and 0710); rpost has no setgid programs, so `public/` is
//! 0711: local users reach the public services (pickup and qmgr wakeups, showq), as Postfix's
//! setgid sendmail/postqueue let them, and still cannot list the directory.
//!
//! `recycle/` (0700, mail_owner, rpost only) holds emptied queue files that qmgr keeps for
//! the next message instead of unlinking them (see rpost-queue's `Queue::retire`); it never
//! holds a message.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who owns a spool directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Root,
    MailOwner,
}

/// The directories `rmaster check` and `rmaster start` guarantee, with mode and owner.
pub const LAYOUT: &[(&str, u32, Owner)] = &[
    ("", 0o755, Owner::Root),
    ("pid", 0o755, Owner::Root),
    ("incoming", 0o700, Owner::MailOwner),
    ("active", 0o700, Owner::MailOwner),
    ("deferred", 0o700, Owner::MailOwner),
    ("hold", 0o700, Owner::MailOwner),
    ("corrupt", 0o700, Owner::MailOwner),
    ("recycle", 0o700, Owner::MailOwner),
    ("private", 0o700, Owner::MailOwner),
    ("public", 0o711, Owner::MailOwner),
    ("maildrop", 0o1733, Owner::MailOwner),
];

/// (uid, gid) pairs for the two kinds of spool owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owners {
    pub root: (u32, u32),
    pub mail: (u32, u32),
}

impl Owners {
    fn of(&self, owner: Owner) -> (u32, u32) {
        if owner == Owner::Root { self.root } else { self.mail }
    }
}

/// A spool problem that could not be repaired.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct SpoolError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Makes the spool match [`LAYOUT`]. `ids` are given when running as root; `None` leaves
/// ownership alone. Returns one line per repair made.
pub fn ensure(queue_dir: &Path, ids: Option<Owners>) -> Result<Vec<String>, SpoolError> {
    let mut repairs = Vec::new();
    for &(name, mode, owner) in LAYOUT {
        let path = if name.is_empty() { queue_dir.to_path_buf() } else { queue_dir.join(name) };
        let err = |source| SpoolError { path: path.clone(), source };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                // Something that is not a directory sits where one belongs: keep it for
                // inspection under another name rather than deleting what may be mail.
                let aside = path.with_extension(format!("broken.{}", std::process::id()));
                std::fs::rename(&path, &aside).map_err(err)?;
                repairs.push(format!("moved non-directory {} to {}", path.display(), aside.display()));
                std::fs::create_dir_all(&path).map_err(err)?;
                repairs.push(format!("created {}", path.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&path).map_err(err)?;
                repairs.push(format!("created {}", path.display()));
                // A new directory gets its mode and owner without a line for each.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
                if let Some(ids) = ids {
                    let (uid, gid) = ids.of(owner);
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(err)?;
                }
            }
            Err(e) => return Err(err(e)),
        }
        let meta = std::fs::metadata(&path).map_err(err)?;
        if meta.mode() & 0o7777 != mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
            repairs.push(format!("set mode {mode:04o} on {} (was {:04o})", path.display(), meta.mode() & 0o7777));
        }
        if let Some(ids) = ids {
            let (uid, gid) = ids.of(owner);
            if meta.uid() != uid || meta.gid() != gid {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(err)?;
                repairs.push(format!(
                    "set owner {uid}:{gid} on {} (was {}:{})",
                    path.display(),
                    meta.uid(),
                    meta.gid()
                ));
            }
        }
    }
    Ok(repairs)
}

/// Whether a process running as (uid, gid), with no other groups (as rpost daemons run),
/// can reach `queue_dir`: every ancestor must be searchable by it. Returns the first
/// directory that is not.
pub fn unreachable(queue_dir: &Path, uid: u32, gid: u32) -> Option<(PathBuf, u32)> {
    let mut dirs: Vec<&Path> = queue_dir.ancestors().collect();
    dirs.reverse();
    for dir in dirs {
        let Ok(meta) = std::fs::metadata(dir) else { continue };
        let mode = meta.mode();
        let bit = if meta.uid() == uid {
            0o100
        } else if meta.gid() == gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Some((dir.to_path_buf(), mode & 0o7777));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_spool_is_found() {
        let tmp = tempfile::tempdir().unwrap();
        let outer = tmp.path().join("outer");
        let q = outer.join("spool");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::set_permissions(&outer, std::fs::Permissions::from_mode(0o700)).unwrap();
        // uid/gid that own nothing here.
        let found = unreachable(&q, 54321, 54321).expect("0700 parent blocks others");
        assert_eq!(found.0, outer);
        std::fs::set_permissions(&outer, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(unreachable(&q, 54321, 54321), None);
    }

    #[test]
    fn creates_then_repairs() {
        let tmp = tempfile::tempdir().unwrap();
        let q = tmp.path().join("spool");
        let first = ensure(&q, None).unwrap();
        assert_eq!(first.iter().filter(|r| r.starts_with("created")).count(), LAYOUT.len());
        assert!(ensure(&q, None).unwrap().is_empty(), "second run must find nothing to do");

        std::fs::remove_dir(q.join("incoming")).unwrap();
        std::fs::set_permissions(q.join("private"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::remove_dir(q.join("hold")).unwrap();
        std::fs::write(q.join("hold"), b"not a dir").unwrap();
        let repairs = ensure(&q, None).unwrap();
        assert!(repairs.iter().any(|r| r.contains("created") && r.ends_with("incoming")), "{repairs:?}");
        assert!(repairs.iter().any(|r| r.contains("set mode 0700") && r.contains("private")), "{repairs:?}");
        assert!(repairs.iter().any(|r| r.starts_with("moved non-directory")), "{repairs:?}");
        assert!(q.join("hold").is_dir());
        assert_eq!(std::fs::metadata(q.join("private")).unwrap().mode() & 0o777, 0o700);
    }
}

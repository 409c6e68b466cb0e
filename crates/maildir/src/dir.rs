//! Directory handles: every operation inside a mailbox is relative to an open directory
//! descriptor (`openat`, `mkdirat`, `linkat`, `renameat`, `unlinkat`) and never follows a
//! symbolic link, so a process running as root for a mail user (lmtp-deliver) cannot be
//! redirected outside the mailbox by links the mail user planted.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

/// Owner given to every file and directory created for a mail user (set when the writing
/// process runs as root on the user's behalf).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

const DIR_MODE: u32 = 0o700;

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW
}

/// An open directory and the path it was opened as (for messages only).
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Why a secure walk refused a path.
pub(crate) fn refused(path: &Path, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: {what}", path.display()))
}

impl Dir {
    /// Opens `path`, creating missing directories (mode 0700, given to `owner`) when `create`.
    ///
    /// `secure`: walk the path one component at a time with `O_NOFOLLOW`; a symbolic link is
    /// followed only when the directory holding it belongs to root and is writable by nobody
    /// else (an administrator's `/var/vmail -> /srv/vmail`), never inside directories a mail
    /// user can write. `..` components are refused. Without `secure` the path is opened as
    /// the operating system resolves it (for processes that already run as the mail user).
    pub(crate) fn walk(path: &Path, create: bool, owner: Option<Owner>, secure: bool) -> io::Result<Dir> {
        let start = if path.is_absolute() { Path::new("/") } else { Path::new(".") };
        if secure && !path.is_absolute() {
            return Err(refused(path, "relative path refused"));
        }
        let fd = nix::fcntl::open(start, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        let mut cur = Dir { fd, path: start.to_path_buf() };
        for comp in path.components() {
            let name = match comp {
                Component::RootDir | Component::CurDir => continue,
                Component::Prefix(_) => return Err(refused(path, "unsupported path")),
                Component::ParentDir if secure => return Err(refused(path, "\"..\" refused")),
                Component::ParentDir => OsStr::new(".."),
                Component::Normal(n) => n,
            };
            cur = cur.step(name, create, owner, secure)?;
        }
        cur.path = path.to_path_buf();
        Ok(cur)
    }

    fn step(&self, name: &OsStr, create: bool, owner: Option<Owner>, secure: bool) -> io::Result<Dir> {
        let path = self.path.join(name);
        match nix::fcntl::openat(&self.fd, name, dir_flags(), Mode::empty()) {
            Ok(fd) => return Ok(Dir { fd, path }),
            Err(Errno::ENOENT) if create => {
                self.mkdir(name, owner)?;
                let fd = nix::fcntl::openat(&self.fd, name, dir_flags(), Mode::empty())?;
                return Ok(Dir { fd, path });
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
        // A symbolic link (or not a directory at all).
        let st = nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if !is_type(&st, SFlag::S_IFLNK) {
            return Err(io::Error::from(Errno::ENOTDIR));
        }
        if secure {
            let parent = nix::sys::stat::fstat(&self.fd)?;
            if parent.st_uid != 0 || parent.st_mode & 0o022 != 0 {
                return Err(refused(&path, "symbolic link in a directory not owned by root refused"));
            }
        }
        let fd =
            nix::fcntl::openat(&self.fd, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Dir { fd, path })
    }

    /// `mkdir name` (0700, then chown); an existing directory is fine. Returns whether it
    /// was created.
    pub(crate) fn mkdir(&self, name: &OsStr, owner: Option<Owner>) -> io::Result<bool> {
        match nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(DIR_MODE)) {
            Ok(()) => {
                if let Some(o) = owner {
                    nix::unistd::fchownat(
                        &self.fd,
                        name,
                        Some(Uid::from_raw(o.uid)),
                        Some(Gid::from_raw(o.gid)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )?;
                }
                Ok(true)
            }
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Opens the subdirectory `name` (no symlinks).
    pub(crate) fn sub(&self, name: &str) -> io::Result<Dir> {
        let fd = nix::fcntl::openat(&self.fd, name, dir_flags(), Mode::empty())?;
        Ok(Dir { fd, path: self.path.join(name) })
    }

    /// Opens the subdirectory `name`, creating it first when missing.
    pub(crate) fn sub_create(&self, name: &str, owner: Option<Owner>) -> io::Result<Dir> {
        match self.sub(name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.mkdir(OsStr::new(name), owner)?;
                self.sub(name)
            }
            other => other,
        }
    }

    /// Creates `name` exclusively (O_EXCL, no symlinks), mode `mode`, owned by `owner`.
    pub(crate) fn create_new(&self, name: &str, mode: u32, owner: Option<Owner>) -> io::Result<File> {
        let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.fd, name, flags, Mode::from_bits_truncate(mode))?;
        if let Some(o) = owner {
            nix::unistd::fchown(&fd, Some(Uid::from_raw(o.uid)), Some(Gid::from_raw(o.gid)))?;
        }
        Ok(File::from(fd))
    }

    /// Opens an existing regular file for reading (no symlinks).
    pub(crate) fn open_read(&self, name: &str) -> io::Result<File> {
        let fd =
            nix::fcntl::openat(&self.fd, name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(File::from(fd))
    }

    /// Opens an existing file for update in place. With an `owner` (root writing for a mail
    /// user), the file must belong to that user and have a single link, so a hard link to a
    /// file of someone else is never written.
    pub(crate) fn open_update(&self, name: &str, owner: Option<Owner>) -> io::Result<File> {
        let fd =
            nix::fcntl::openat(&self.fd, name, OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())?;
        let st = nix::sys::stat::fstat(&fd)?;
        if !is_type(&st, SFlag::S_IFREG) {
            return Err(refused(&self.path.join(name), "not a regular file"));
        }
        if let Some(o) = owner
            && (st.st_uid != o.uid || st.st_nlink != 1)
        {
            return Err(refused(&self.path.join(name), "not owned by the mail user, or linked elsewhere"));
        }
        Ok(File::from(fd))
    }

    /// `link(self/name, to/to_name)`; never follows a symlink.
    pub(crate) fn link(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        nix::unistd::linkat(&self.fd, name, &to.fd, to_name, AtFlags::empty())?;
        Ok(())
    }

    /// `rename(self/name, to/to_name)`.
    pub(crate) fn rename(&self, name: &str, to: &Dir, to_name: &str) -> io::Result<()> {
        nix::fcntl::renameat(&self.fd, name, &to.fd, to_name)?;
        Ok(())
    }

    pub(crate) fn unlink(&self, name: &str) -> io::Result<()> {
        nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir)?;
        Ok(())
    }

    /// `lstat` of an entry.
    pub(crate) fn stat(&self, name: &str) -> io::Result<FileStat> {
        Ok(nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)?)
    }

    /// Sets the directory's access time to now, leaving its modification time.
    pub(crate) fn touch_atime(&self) -> io::Result<()> {
        use nix::sys::time::TimeSpec;
        nix::sys::stat::futimens(&self.fd, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_OMIT)?;
        Ok(())
    }

    /// `fstat` of the directory itself.
    pub(crate) fn fstat(&self) -> io::Result<FileStat> {
        Ok(nix::sys::stat::fstat(&self.fd)?)
    }

    /// Makes the directory's entries durable (after a link or rename into it).
    pub(crate) fn fsync(&self) -> io::Result<()> {
        nix::unistd::fsync(&self.fd)?;
        Ok(())
    }

    /// Entry names (without `.` and `..`), with whether each is a directory when the file
    /// system says so cheaply (`None`: unknown, stat it).
    pub(crate) fn list(&self) -> io::Result<Vec<(String, Option<bool>)>> {
        let mut d = nix::dir::Dir::openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut out = Vec::new();
        for entry in d.iter() {
            let entry = entry?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            // Names that are not UTF-8 are not ours (Dovecot writes ASCII): skipped.
            let Ok(name) = std::str::from_utf8(bytes) else { continue };
            let is_dir = entry.file_type().map(|t| t == nix::dir::Type::Directory);
            out.push((name.to_string(), is_dir));
        }
        Ok(out)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir { fd: self.fd.try_clone()?, path: self.path.clone() })
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub(crate) fn is_type(st: &FileStat, ty: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == ty
}

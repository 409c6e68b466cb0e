//! rpost-privilege - who a process runs as, and what it inherits
//!
//! # SUMMARY
//! Looks up system users, drops root privileges (optionally into a chroot jail), and arranges
//! for listening sockets to be inherited at fixed descriptor numbers across `exec`.
//!
//! # DESCRIPTION
//! [`drop_privileges`] is called by every rpost daemon right after start-up, before it reads a
//! byte from the network: it optionally chroots into the queue directory, sets the
//! supplementary groups to the user's primary group only, then the gid, then the uid, and
//! verifies that root cannot be regained. When the process is not root it changes nothing and
//! reports [`Dropped::NotRoot`], so the suite also runs unprivileged (tests, trial runs).
//!
//! [`suspend_root`] and [`become_user`] serve the mailbox-side daemons (pop3d, imapd), which
//! switch to a different mail user per login: before login the process runs as
//! `mail_owner` with only the saved uid left at 0; after a successful login it switches real,
//! effective and saved ids to the mail user for good and serves that one session.
//!
//! [`inherit_fds`] is the master's half of descriptor passing: each listener is duplicated
//! to a descriptor above every target number in the parent, and moved onto its target
//! (clearing close-on-exec) in the forked child just before `exec`.
//!
//! # SECURITY
//! This is the only crate allowed `unsafe` code: the `pre_exec` hook, which runs between fork
//! and exec and therefore calls nothing but `dup2(2)`, which is async-signal-safe, and the
//! adoption of descriptors returned by `fcntl(F_DUPFD_CLOEXEC)`.
//! A failed privilege drop is an error the caller must treat as fatal; nothing here falls back
//! to running as root.
//!
//! # CONFIGURATION
//! The caller passes the user (`mail_owner`) and chroot directory (`queue_directory` when the
//! master.cf chroot column says `y`).
//!
//! # STANDARDS
//! POSIX setgroups/setgid/setuid ordering (groups before ids, gid before uid).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::unistd::{Gid, Uid, User};

/// Privilege errors.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("unknown group {0}")]
    UnknownGroup(String),
    #[error("user {0} is root: refusing to run a daemon as root")]
    RootUser(String),
    #[error("chroot {dir}: {source}")]
    Chroot { dir: String, source: nix::Error },
    #[error("{what}: {source}")]
    Sys { what: &'static str, source: nix::Error },
    #[error("privileges were not dropped: uid 0 could be regained")]
    StillRoot,
}

/// A resolved system user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Now running as this user.
    To(Identity),
    /// The process was not root; nothing changed.
    NotRoot { uid: u32 },
}

/// True when the effective uid is 0.
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// Looks a user up by name (or numeric uid) in the system user database.
pub fn lookup_user(name: &str) -> Result<Identity, PrivError> {
    let user = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    }
    .map_err(|source| PrivError::Sys { what: "getpwnam", source })?
    .ok_or_else(|| PrivError::UnknownUser(name.to_string()))?;
    Ok(Identity { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw() })
}

/// A user given by name or number (a userdb `uid=`, `mail_uid`): the uid, and the primary
/// gid when the system knows the user. A number needs no passwd entry (virtual mail owners),
/// and is not looked up at all unless `want_gid` (deliveries call this per recipient: no
/// passwd file read when uid and gid are both given as numbers).
pub fn resolve_uid(spec: &str, want_gid: bool) -> Result<(u32, Option<u32>), PrivError> {
    if let Ok(n) = spec.parse::<u32>() {
        let gid = want_gid.then(|| User::from_uid(Uid::from_raw(n)).ok().flatten().map(|u| u.gid.as_raw())).flatten();
        return Ok((n, gid));
    }
    match User::from_name(spec) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), Some(u.gid.as_raw()))),
        Ok(None) => Err(PrivError::UnknownUser(spec.to_string())),
        Err(source) => Err(PrivError::Sys { what: "getpwnam", source }),
    }
}

/// A group given by name or number (a userdb `gid=`, `mail_gid`).
pub fn resolve_gid(spec: &str) -> Result<u32, PrivError> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(PrivError::UnknownGroup(spec.to_string())),
        Err(source) => Err(PrivError::Sys { what: "getgrnam", source }),
    }
}

/// Drops root privileges to `user`, chrooting into `jail` first when given.
/// Does nothing (and says so) when not running as root.
pub fn drop_privileges(user: &str, jail: Option<&Path>) -> Result<Dropped, PrivError> {
    if !is_root() {
        return Ok(Dropped::NotRoot { uid: Uid::effective().as_raw() });
    }
    // Resolve before chroot: /etc/passwd is not inside the jail.
    let id = lookup_user(user)?;
    if id.uid == 0 {
        return Err(PrivError::RootUser(id.name));
    }
    if let Some(dir) = jail {
        let chroot_err = |source| PrivError::Chroot { dir: dir.display().to_string(), source };
        nix::unistd::chdir(dir).map_err(chroot_err)?;
        nix::unistd::chroot(dir).map_err(chroot_err)?;
        nix::unistd::chdir("/").map_err(chroot_err)?;
    }
    let gid = Gid::from_raw(id.gid);
    let sys = |what| move |source| PrivError::Sys { what, source };
    nix::unistd::setgroups(&[gid]).map_err(sys("setgroups"))?;
    nix::unistd::setgid(gid).map_err(sys("setgid"))?;
    nix::unistd::setuid(Uid::from_raw(id.uid)).map_err(sys("setuid"))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivError::StillRoot);
    }
    Ok(Dropped::To(id))
}

/// What [`suspend_root`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Suspended {
    /// Effective and real ids are now `user`'s; the saved uid stays 0 for [`become_user`].
    To(Identity),
    /// The process was not root; nothing changed.
    NotRoot { uid: u32 },
}

/// For a daemon that must switch to a mail user after a login (pop3d, imapd, as Dovecot's
/// post-login processes): runs as `user` (`mail_owner`) from now on, keeping only the saved
/// uid 0 so that [`become_user`] can later switch once, for good. Files, sockets and signals
/// see `user`'s rights only; code execution in the process could regain root through the
/// saved id, which is why such a daemon serves one login per process and calls
/// [`become_user`] (which clears it) before it touches a mailbox.
pub fn suspend_root(user: &str) -> Result<Suspended, PrivError> {
    if !is_root() {
        return Ok(Suspended::NotRoot { uid: Uid::effective().as_raw() });
    }
    let id = lookup_user(user)?;
    if id.uid == 0 {
        return Err(PrivError::RootUser(id.name));
    }
    let sys = |what| move |source| PrivError::Sys { what, source };
    let (uid, gid) = (Uid::from_raw(id.uid), Gid::from_raw(id.gid));
    nix::unistd::setgroups(&[gid]).map_err(sys("setgroups"))?;
    nix::unistd::setresgid(gid, gid, Gid::from_raw(0)).map_err(sys("setresgid"))?;
    nix::unistd::setresuid(uid, uid, Uid::from_raw(0)).map_err(sys("setresuid"))?;
    Ok(Suspended::To(id))
}

/// What [`become_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Became {
    /// Real, effective and saved ids are now `uid`/`gid`; root cannot be regained.
    Switched,
    /// The process already ran as `uid` without root to give up (a non-root trial run).
    AlreadyThere,
}

/// Switches the whole process (every thread: glibc applies set*id to all of them) to the
/// mail user `uid`/`gid` for good: real, effective and saved ids, supplementary groups
/// reduced to `gid`. Works from root or from [`suspend_root`]'s state. Refuses uid 0, and a
/// process that is neither root nor able to regain it can only "become" its own uid.
pub fn become_user(uid: u32, gid: u32) -> Result<Became, PrivError> {
    if uid == 0 {
        return Err(PrivError::RootUser("uid 0".into()));
    }
    let sys = |what| move |source| PrivError::Sys { what, source };
    let root = Uid::from_raw(0);
    if !is_root() && nix::unistd::setresuid(Uid::from_raw(u32::MAX), root, Uid::from_raw(u32::MAX)).is_err() {
        // No root to regain: only our own uid (and its groups) can be served.
        if Uid::effective().as_raw() == uid && Uid::current().as_raw() == uid {
            return Ok(Became::AlreadyThere);
        }
        return Err(PrivError::Sys { what: "become mail user without root", source: nix::Error::EPERM });
    }
    let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
    nix::unistd::setgroups(&[g]).map_err(sys("setgroups"))?;
    nix::unistd::setresgid(g, g, g).map_err(sys("setresgid"))?;
    nix::unistd::setresuid(u, u, u).map_err(sys("setresuid"))?;
    if nix::unistd::setresuid(Uid::from_raw(u32::MAX), root, Uid::from_raw(u32::MAX)).is_ok() {
        return Err(PrivError::StillRoot);
    }
    Ok(Became::Switched)
}

/// Makes `cmd` execute its program as the mail user `uid`/`gid` for good (real, effective and
/// saved ids, supplementary groups reduced to `gid`), from a process in [`suspend_root`]'s
/// state or root: the forked child regains root through the saved uid and gives it up again
/// before exec, so the parent's own ids never change (no window in which its other threads
/// run as root). Refuses uid 0. A process without root to regain can only start programs as
/// its own uid: then the child is left as it is, and any other uid fails before the fork.
pub fn command_as_user(cmd: &mut std::process::Command, uid: u32, gid: u32) -> Result<(), PrivError> {
    if uid == 0 {
        return Err(PrivError::RootUser("uid 0".into()));
    }
    let mut saved = (0, 0, 0);
    // SAFETY: getresuid writes three ids into the locals it is given.
    unsafe { libc::getresuid(&mut saved.0, &mut saved.1, &mut saved.2) };
    let can_regain = saved.0 == 0 || saved.1 == 0 || saved.2 == 0;
    if !can_regain {
        if Uid::effective().as_raw() == uid {
            return Ok(());
        }
        return Err(PrivError::Sys { what: "start a program as a mail user without root", source: nix::Error::EPERM });
    }
    // SAFETY: the hook runs in the forked child before exec and only makes raw set*id system
    // calls (async-signal-safe, no allocation); the child has a single thread, so glibc's
    // all-threads set*id broadcast is not involved.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::syscall(libc::SYS_setresuid, u32::MAX, 0u32, u32::MAX) != 0 {
                return fail();
            }
            let groups = [gid as libc::gid_t];
            if libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr()) != 0
                || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            {
                return fail();
            }
            // Root must be gone for good.
            if libc::syscall(libc::SYS_setresuid, u32::MAX, 0u32, u32::MAX) == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
            }
            Ok(())
        });
    }
    Ok(())
}

/// Arranges for `fds[i]` to appear as descriptor `first + i` in the program `cmd` executes.
/// The originals stay open in the parent; the duplicates made here are closed when `cmd` is
/// dropped.
pub fn inherit_fds(cmd: &mut std::process::Command, fds: &[&OwnedFd], first: RawFd) -> Result<(), PrivError> {
    let above = first + fds.len() as RawFd;
    let mut moved: Vec<OwnedFd> = Vec::with_capacity(fds.len());
    for fd in fds {
        // Parking each descriptor above the target range means the dup2 calls in the child
        // can never overwrite a source that is still to be moved.
        let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(above))
            .map_err(|source| PrivError::Sys { what: "fcntl(F_DUPFD_CLOEXEC)", source })?;
        // SAFETY: fcntl just returned this new descriptor, owned by nobody else.
        moved.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    // SAFETY: the hook runs in the forked child before exec and calls only dup2(2), which is
    // async-signal-safe; it reads the captured Vec without allocating. Capturing `moved` also
    // keeps the parked descriptors open until the command is dropped.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in moved.iter().enumerate() {
                if libc::dup2(fd.as_raw_fd(), first + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Takes ownership of `count` descriptors inherited at exec, starting at `first`, and marks
/// them close-on-exec so they go no further. Fails if one of them is not open.
pub fn adopt_inherited(first: RawFd, count: u32) -> Result<Vec<OwnedFd>, PrivError> {
    let mut fds = Vec::with_capacity(count as usize);
    for raw in first..first + count as RawFd {
        // SAFETY: fcntl on a plain descriptor number touches no memory; a closed number just
        // fails with EBADF.
        if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(PrivError::Sys { what: "inherited descriptor", source: nix::Error::last() });
        }
        // SAFETY: the descriptor is open (checked above) and was handed to this process by its
        // parent for exactly this purpose; nothing else in the process claims it.
        fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
    }
    Ok(fds)
}

/// Registers a descriptor with the tokio reactor, to wait for readiness without doing I/O
/// (rmaster watches listeners it never accepts on). Must run inside a tokio runtime.
pub fn async_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open for as long as it lives and always reports the same number,
    // which is all `register` requires; the AsyncFd owns it from here on.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

/// Sends `data` as one message on the UNIX socket `sock` (best a `SOCK_SEQPACKET`), with
/// `fd`, if any, attached (SCM_RIGHTS): how imapd hands a logged-in connection to the
/// process serving its user. Non-blocking sockets give `WouldBlock` as usual.
pub fn send_with_fd(
    sock: std::os::fd::BorrowedFd<'_>,
    data: &[u8],
    fd: Option<std::os::fd::BorrowedFd<'_>>,
) -> std::io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [std::io::IoSlice::new(data)];
    let fds = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = fds.as_ref().map(|f| ControlMessage::ScmRights(f)).into_iter().collect();
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None).map_err(std::io::Error::from)
}

/// Receives one message from the UNIX socket `sock` into `buf`: its length (0 at end of
/// file) and the descriptor that came with it, if any (close-on-exec; any further ones are
/// closed). A message longer than `buf` is an error (`InvalidData`), its descriptors closed.
pub fn recv_with_fd(sock: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(std::io::Error::from)?;
    let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    let mut first = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor in our table for this
                // message; nothing else knows its number, so the OwnedFd is its only owner.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if first.is_none() {
                    first = Some(owned);
                }
            }
        }
    }
    if truncated {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "message longer than the buffer"));
    }
    Ok((msg.bytes, first))
}

/// Detaches from the controlling terminal by starting a new session.
pub fn new_session() -> Result<(), PrivError> {
    nix::unistd::setsid().map(|_| ()).map_err(|source| PrivError::Sys { what: "setsid", source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_root_and_unknown() {
        assert_eq!(lookup_user("root").unwrap().uid, 0);
        assert_eq!(lookup_user("0").unwrap().name, "root");
        assert!(matches!(lookup_user("no-such-user-rpost"), Err(PrivError::UnknownUser(_))));
    }

    #[test]
    fn inherited_descriptors_land_on_their_numbers() {
        let (a, _keep_a) = std::os::unix::net::UnixStream::pair().unwrap();
        let (b, _keep_b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a: OwnedFd = a.into();
        let b: OwnedFd = b.into();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg("test -S /proc/self/fd/5 && test -S /proc/self/fd/6 && ! test -e /proc/self/fd/7");
        inherit_fds(&mut cmd, &[&a, &b], 5).unwrap();
        assert!(cmd.status().unwrap().success());
    }
}

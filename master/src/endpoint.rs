//! Listening endpoints: where a master.cf service accepts clients.
//!
//! `inet` services bind `[host:]port` (host absent: every address of `inet_interfaces`,
//! filtered by `inet_protocols`); `unix` services create a stream socket and `fifo` services a
//! named pipe under `public/` or `private/` of the queue directory, by the private column.
//! The master owns these descriptors for as long as the service exists, across reloads and
//! child restarts, so a connection is queued in the backlog rather than refused while no
//! child is running.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, sockopt};
use rpost_config::{Params, Service, ServiceType};

/// Endpoint errors name the service and what failed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("service {service}: {message}")]
    Spec { service: String, message: String },
    #[error("service {service}: bind {addr}: {source}")]
    Bind { service: String, addr: String, source: std::io::Error },
    #[error("{0}")]
    Config(#[from] rpost_config::ConfigError),
}

/// Where one listener of a service is, in a form that compares equal across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Spec {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Fifo(PathBuf),
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spec::Tcp(a) => write!(f, "{a}"),
            Spec::Unix(p) | Spec::Fifo(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A bound listener.
#[derive(Debug)]
pub struct Endpoint {
    pub spec: Spec,
    pub fd: OwnedFd,
}

/// Well-known ports, for machines without /etc/services.
const WELL_KNOWN: &[(&str, u16)] = &[
    ("smtp", 25),
    ("submission", 587),
    ("submissions", 465),
    ("smtps", 465),
    ("urd", 465),
    ("lmtp", 24),
    ("imap", 143),
    ("imap2", 143),
    ("imaps", 993),
    ("pop3", 110),
    ("pop3s", 995),
    ("sieve", 4190),
];

/// Resolves a port name or number as getservbyname(3) would, with a built-in fallback.
pub fn port_of(name: &str) -> Option<u16> {
    if let Ok(n) = name.parse::<u16>() {
        return Some(n);
    }
    if let Ok(text) = std::fs::read_to_string("/etc/services") {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(svc), Some(port)) = (words.next(), words.next()) else { continue };
            let Some((num, "tcp")) = port.split_once('/') else { continue };
            if (svc == name || words.any(|alias| alias == name))
                && let Ok(n) = num.parse()
            {
                return Some(n);
            }
        }
    }
    WELL_KNOWN.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// The addresses `inet_interfaces` and `inet_protocols` stand for.
pub fn interface_addrs(params: &Params) -> Result<Vec<IpAddr>, EndpointError> {
    let protocols = params.get_list("inet_protocols")?;
    let (v4, v6) = if protocols.iter().any(|p| p == "all") {
        (true, ipv6_available())
    } else {
        (protocols.iter().any(|p| p == "ipv4"), protocols.iter().any(|p| p == "ipv6"))
    };
    let mut out = Vec::new();
    for iface in params.get_list("inet_interfaces")? {
        match iface.as_str() {
            "all" => {
                if v4 {
                    out.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                }
                if v6 {
                    out.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                }
            }
            "loopback-only" | "localhost" => {
                if v4 {
                    out.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
                }
                if v6 {
                    out.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
                }
            }
            other => {
                let host = other.trim_start_matches('[').trim_end_matches(']');
                let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
                    Ok(ip) => vec![ip],
                    Err(_) => (host, 0)
                        .to_socket_addrs()
                        .map_err(|e| EndpointError::Spec {
                            service: "inet_interfaces".into(),
                            message: format!("{host}: {e}"),
                        })?
                        .map(|a| a.ip())
                        .collect(),
                };
                out.extend(addrs.into_iter().filter(|ip| if ip.is_ipv4() { v4 } else { v6 }));
            }
        }
    }
    out.dedup();
    Ok(out)
}

fn ipv6_available() -> bool {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// The listener specs of a service, without binding anything.
pub fn specs(service: &Service, params: &Params) -> Result<Vec<Spec>, EndpointError> {
    let spec_err = |message: String| EndpointError::Spec { service: service.name.clone(), message };
    match service.kind {
        ServiceType::Inet => {
            let (host, port) = split_host_port(&service.name);
            let port = port_of(port).ok_or_else(|| spec_err(format!("unknown service port '{port}'")))?;
            let addrs = match host {
                None => interface_addrs(params)?,
                Some(h) => {
                    let h = h.trim_start_matches('[').trim_end_matches(']');
                    match h.parse::<IpAddr>() {
                        Ok(ip) => vec![ip],
                        Err(_) => (h, port)
                            .to_socket_addrs()
                            .map_err(|e| spec_err(format!("host {h}: {e}")))?
                            .map(|a| a.ip())
                            .collect(),
                    }
                }
            };
            if addrs.is_empty() {
                return Err(spec_err("no address to listen on (check inet_interfaces and inet_protocols)".into()));
            }
            Ok(addrs.into_iter().map(|ip| Spec::Tcp(SocketAddr::new(ip, port))).collect())
        }
        ServiceType::Unix | ServiceType::Fifo => {
            if service.name.contains('/') || service.name.starts_with('.') {
                return Err(spec_err("a unix or fifo service name must be a plain file name".into()));
            }
            let dir = if service.private { "private" } else { "public" };
            let path = PathBuf::from(params.get("queue_directory")?).join(dir).join(&service.name);
            Ok(vec![if service.kind == ServiceType::Unix { Spec::Unix(path) } else { Spec::Fifo(path) }])
        }
        ServiceType::UnixDgram | ServiceType::Pass => {
            Err(spec_err(format!("service type {} is not supported by rpost", service.kind)))
        }
    }
}

/// Splits `host:port`, `[v6]:port` and bare `port`.
fn split_host_port(name: &str) -> (Option<&str>, &str) {
    if let Some(rest) = name.strip_prefix('[')
        && let Some((host, port)) = rest.split_once("]:")
    {
        return (Some(host), port);
    }
    match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (Some(host), port),
        _ => (None, name),
    }
}

/// Binds one listener. `owner` is the (uid, gid) that gets UNIX-domain sockets and FIFOs.
pub fn bind(service: &str, spec: &Spec, owner: Option<(u32, u32)>) -> Result<Endpoint, EndpointError> {
    let bind_err =
        |source: std::io::Error| EndpointError::Bind { service: service.to_string(), addr: spec.to_string(), source };
    let fd = match spec {
        Spec::Tcp(addr) => bind_tcp(*addr).map_err(bind_err)?,
        Spec::Unix(path) => {
            remove_stale(path).map_err(bind_err)?;
            let l = std::os::unix::net::UnixListener::bind(path).map_err(bind_err)?;
            // Access is governed by the directory (private/ is 0700 mail_owner), as in Postfix.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(bind_err)?;
            chown(path, owner).map_err(bind_err)?;
            l.into()
        }
        Spec::Fifo(path) => {
            remove_stale(path).map_err(bind_err)?;
            nix::unistd::mkfifo(path.as_path(), nix::sys::stat::Mode::from_bits_truncate(0o622))
                .map_err(|e| bind_err(e.into()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o622)).map_err(bind_err)?;
            chown(path, owner).map_err(bind_err)?;
            // Read-write so the FIFO never reports end-of-file when a writer goes away.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc_nonblock())
                .open(path)
                .map_err(bind_err)?
                .into()
        }
    };
    Ok(Endpoint { spec: spec.clone(), fd })
}

fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

use std::os::unix::fs::OpenOptionsExt;

fn remove_stale(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        // One socket per family, as Postfix does, so "all" works on v4-only and dual stacks.
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    match addr {
        SocketAddr::V4(a) => socket::bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?,
    }
    socket::listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}

/// The address a TCP endpoint really got (port 0 resolved), for status output and tests.
pub fn local_addr(ep: &Endpoint) -> String {
    match &ep.spec {
        Spec::Tcp(_) => socket::getsockname::<socket::SockaddrStorage>(ep.fd.as_raw_fd())
            .ok()
            .and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6))))
            })
            .map(|a| a.to_string())
            .unwrap_or_else(|| ep.spec.to_string()),
        _ => ep.spec.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("smtp"), (None, "smtp"));
        assert_eq!(split_host_port("127.0.0.1:2525"), (Some("127.0.0.1"), "2525"));
        assert_eq!(split_host_port("[::1]:25"), (Some("::1"), "25"));
        assert_eq!(split_host_port("localhost:submission"), (Some("localhost"), "submission"));
    }

    #[test]
    fn ports_by_name() {
        assert_eq!(port_of("smtp"), Some(25));
        assert_eq!(port_of("submission"), Some(587));
        assert_eq!(port_of("2525"), Some(2525));
        assert_eq!(port_of("no-such-service-name"), None);
    }

    #[test]
    fn tcp_listener_binds_and_accepts() {
        let ep = bind("test", &Spec::Tcp("127.0.0.1:0".parse().unwrap()), None).unwrap();
        let addr = local_addr(&ep);
        assert!(std::net::TcpStream::connect(&addr).is_ok(), "{addr}");
    }
}

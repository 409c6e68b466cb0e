//! Next-hop syntax, as Postfix's smtp(8) and lmtp(8) take it from the transport table,
//! `relayhost`, `virtual_transport` and friends.
//!
//! | next hop | protocol | where |
//! |---|---|---|
//! | `unix:PATH` | LMTP | UNIX-domain socket; a relative PATH is below `queue_directory` (`unix:private/dovecot-lmtp`) |
//! | `inet:host:port`, `inet:[host]:port`, `inet:host` | LMTP | TCP, port default `lmtp_tcp_port` (24) |
//! | `[host]:port`, `[host]` | SMTP (LMTP for the `lmtp` service) | TCP to that host, no MX lookup |
//! | `host:port` | same | TCP to that host's addresses, no MX lookup |
//! | `domain` | same | the domain's MX hosts ([`crate::mx`]) on `smtp_tcp_port` |
//!
//! Ports are numbers or one of the service names `smtp`, `submission`, `smtps`,
//! `submissions`, `lmtp`. IPv6 addresses are written `[2001:db8::1]` or `[ipv6:2001:db8::1]`.

use std::path::{Path, PathBuf};

/// The wire protocol spoken to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Lmtp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "SMTP",
            Protocol::Lmtp => "LMTP",
        }
    }
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A UNIX-domain socket: the path as written (for logs) and resolved.
    Unix { shown: String, path: PathBuf },
    /// A TCP host (name or address literal) and port.
    Tcp { host: String, port: u16 },
    /// A domain whose MX records would have to be looked up.
    Domain(String),
}

/// A parsed next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub protocol: Protocol,
    pub target: Target,
}

/// Default ports of the two protocols (`smtp_tcp_port`, `lmtp_tcp_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub smtp: u16,
    pub lmtp: u16,
}

impl Default for Ports {
    fn default() -> Ports {
        Ports { smtp: 25, lmtp: 24 }
    }
}

/// A port number or a well-known service name.
pub fn parse_port(s: &str) -> Option<u16> {
    match s.to_ascii_lowercase().as_str() {
        "smtp" => Some(25),
        "submission" => Some(587),
        "smtps" | "submissions" => Some(465),
        "lmtp" => Some(24),
        n => n.parse().ok().filter(|&p| p > 0),
    }
}

/// Parses a next hop. `lmtp_service` says whether this agent runs as an LMTP service (so
/// plain host next hops speak LMTP); `queue_root` anchors relative UNIX socket paths.
pub fn parse(nexthop: &str, lmtp_service: bool, ports: Ports, queue_root: &Path) -> Result<NextHop, String> {
    let s = nexthop.trim();
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() || path.contains('\0') {
            return Err(format!("bad next hop {nexthop:?}: empty socket path"));
        }
        let p = Path::new(path);
        let resolved = if p.is_absolute() { p.to_path_buf() } else { queue_root.join(p) };
        return Ok(NextHop { protocol: Protocol::Lmtp, target: Target::Unix { shown: path.into(), path: resolved } });
    }
    let (protocol, rest, default_port) = match s.strip_prefix("inet:") {
        Some(rest) => (Protocol::Lmtp, rest, ports.lmtp),
        None if lmtp_service => (Protocol::Lmtp, s, ports.lmtp),
        None => (Protocol::Smtp, s, ports.smtp),
    };
    let bad = |why: &str| format!("bad next hop {nexthop:?}: {why}");
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let (host, port, literal) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(|| bad("missing ]"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        let host = strip_ipv6_tag(host);
        (host, port, true)
    } else {
        match rest.rsplit_once(':') {
            // A bare IPv6 address has several colons and no brackets: take it whole.
            Some((h, _)) if h.contains(':') => (rest, None, false),
            Some((h, p)) => (h, Some(p), false),
            None => (rest, None, false),
        }
    };
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b)) {
        return Err(bad("bad host name"));
    }
    let port = match port {
        None => default_port,
        Some(p) => parse_port(p).ok_or_else(|| bad("bad port"))?,
    };
    // LMTP never looks up MX records (Postfix lmtp(8)); nor does SMTP with [host] or host:port.
    let target =
        if literal || protocol == Protocol::Lmtp || rest.contains(':') || host.parse::<std::net::IpAddr>().is_ok() {
            Target::Tcp { host: host.to_owned(), port }
        } else {
            Target::Domain(host.to_owned())
        };
    Ok(NextHop { protocol, target })
}

fn strip_ipv6_tag(host: &str) -> &str {
    match host.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => &host[5..],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str, lmtp: bool) -> Result<NextHop, String> {
        parse(s, lmtp, Ports::default(), Path::new("/var/spool/rpost"))
    }

    fn tcp(proto: Protocol, host: &str, port: u16) -> NextHop {
        NextHop { protocol: proto, target: Target::Tcp { host: host.into(), port } }
    }

    #[test]
    fn unix_sockets() {
        let hop = p("unix:private/dovecot-lmtp", false).unwrap();
        assert_eq!(hop.protocol, Protocol::Lmtp);
        assert_eq!(
            hop.target,
            Target::Unix {
                shown: "private/dovecot-lmtp".into(),
                path: PathBuf::from("/var/spool/rpost/private/dovecot-lmtp")
            }
        );
        let hop = p("unix:/run/dovecot/lmtp", true).unwrap();
        assert_eq!(hop.target, Target::Unix { shown: "/run/dovecot/lmtp".into(), path: "/run/dovecot/lmtp".into() });
        assert!(p("unix:", false).is_err());
    }

    #[test]
    fn tcp_hosts() {
        use Protocol::*;
        assert_eq!(p("inet:127.0.0.1:2424", false).unwrap(), tcp(Lmtp, "127.0.0.1", 2424));
        assert_eq!(p("inet:[lmtp.example]:lmtp", false).unwrap(), tcp(Lmtp, "lmtp.example", 24));
        assert_eq!(p("inet:lmtp.example", false).unwrap(), tcp(Lmtp, "lmtp.example", 24));
        assert_eq!(p("[relay.example]:587", false).unwrap(), tcp(Smtp, "relay.example", 587));
        assert_eq!(p("[relay.example]", false).unwrap(), tcp(Smtp, "relay.example", 25));
        assert_eq!(p("[relay.example]", true).unwrap(), tcp(Lmtp, "relay.example", 24));
        assert_eq!(p("relay.example:submission", false).unwrap(), tcp(Smtp, "relay.example", 587));
        assert_eq!(p("[192.0.2.1]:2525", false).unwrap(), tcp(Smtp, "192.0.2.1", 2525));
        assert_eq!(p("192.0.2.1", false).unwrap(), tcp(Smtp, "192.0.2.1", 25));
        assert_eq!(p("[ipv6:2001:db8::1]:26", false).unwrap(), tcp(Smtp, "2001:db8::1", 26));
        assert_eq!(p("[2001:db8::1]", false).unwrap(), tcp(Smtp, "2001:db8::1", 25));
        assert_eq!(p("lmtp.example", true).unwrap(), tcp(Lmtp, "lmtp.example", 24));
    }

    #[test]
    fn domains_need_mx() {
        let hop = p("example.com", false).unwrap();
        assert_eq!(hop, NextHop { protocol: Protocol::Smtp, target: Target::Domain("example.com".into()) });
    }

    #[test]
    fn errors() {
        for bad in ["", "[x", "[x]y", "[x]:", "[x]:0", "host:99999", "ho st", "[a\r\nb]", "inet:"] {
            assert!(p(bad, false).is_err(), "{bad:?}");
        }
    }
}

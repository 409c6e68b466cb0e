//! rpost-dns - DNS queries for the daemons that need them
//!
//! # SUMMARY
//! ```text
//! let dns = Resolver::new(&parse_servers(&params.get_list("dns_resolver_servers")?)?);
//! match dns.query("example.com", Qtype::Mx).await {
//!     Answer::Found(rrs) => ..., Answer::NoData | Answer::NxDomain => ..., Answer::TempFail => ...
//! }
//! dns.query(&reverse_name(ip), Qtype::Ptr).await;           // 4.3.2.1.in-addr.arpa
//! ```
//!
//! # DESCRIPTION
//! One query at a time, reduced to what mail routing and SMTP restrictions decide on: the
//! records found ([`Rr`]: MX, A/AAAA, PTR, TXT), "no such name", "no records of this type",
//! or "try again later" ([`Answer`]). The [`Dns`] trait is what the protocol logic asks, so
//! tests and sans-IO code can answer from a table; [`Resolver`] answers with
//! hickory-resolver: the servers of `dns_resolver_servers`, else those of
//! `/etc/resolv.conf`. Names are always absolute (no search list) and never looked up in
//! `/etc/hosts` (that is [`Dns::native`], getaddrinfo, for `smtp_host_lookup = native`).
//!
//! Users: smtp-client (MX and address lookups for delivery), smtpd (the client's reverse
//! name, and the restrictions `reject_unknown_*`, `reject_rbl_client` and friends).
//!
//! # SECURITY
//! Answers are untrusted input: names come back as ASCII text (IDNA as sent), TXT data is
//! decoded lossily to UTF-8 and callers bound what they echo. Nothing here touches files
//! after start-up: the resolver configuration is read by [`Resolver::new`], before a
//! daemon chroots, and the resolver is built on first use inside the tokio runtime.
//!
//! # CONFIGURATION
//! `dns_resolver_servers` (rpost: `ip` or `ip:port`, comma or space separated; empty: the
//! system's resolver configuration).
//!
//! # STANDARDS
//! RFC 1035 (DNS), RFC 3596 (AAAA), RFC 1034 section 5.2.1 and RFC 3596 section 2.5
//! (in-addr.arpa and ip6.arpa reverse names), RFC 7505 (null MX: an MX whose exchange is `.`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

/// DNS record types asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qtype {
    Mx,
    A,
    Aaaa,
    Ptr,
    Txt,
}

impl Qtype {
    pub fn name(self) -> &'static str {
        match self {
            Qtype::Mx => "MX",
            Qtype::A => "A",
            Qtype::Aaaa => "AAAA",
            Qtype::Ptr => "PTR",
            Qtype::Txt => "TXT",
        }
    }
}

/// One record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rr {
    /// Preference and exchange, as the answer has it (`mx.example.com.`; `.` for a null MX).
    Mx(u16, String),
    Addr(IpAddr),
    /// A PTR target, without the trailing dot.
    Name(String),
    /// A TXT record's strings, joined.
    Text(String),
}

/// The outcome of one DNS query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Found(Vec<Rr>),
    /// The name exists, but has no records of this type.
    NoData,
    /// The name does not exist.
    NxDomain,
    /// SERVFAIL, timeout, no server reachable: try again later.
    TempFail,
}

/// What protocol logic needs from the outside world.
pub trait Dns: Sync {
    /// One DNS query (absolute name, no search list).
    fn query(&self, name: &str, qtype: Qtype) -> impl Future<Output = Answer> + Send;
    /// The system resolver (getaddrinfo). `Err((temporary, message))`.
    fn native(&self, host: &str) -> impl Future<Output = Result<Vec<IpAddr>, (bool, String)>> + Send;
}

/// The name a PTR query for `ip` asks: `4.3.2.1.in-addr.arpa` for 1.2.3.4, the 32 nibbles
/// under `ip6.arpa` for IPv6 (an IPv4-mapped IPv6 address counts as IPv4).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
        IpAddr::V6(v6) => reverse_name(IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED))),
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
    }
}

/// The prefix a DNSBL query puts before the zone: the address's reversed octets (IPv4,
/// `4.3.2.1`) or nibbles (IPv6), as [`reverse_name`] without its `.in-addr.arpa` suffix.
pub fn dnsbl_prefix(ip: IpAddr) -> String {
    let r = reverse_name(ip);
    r.trim_end_matches(".in-addr.arpa").trim_end_matches(".ip6.arpa").to_string()
}

/// Parses `dns_resolver_servers`: `ip`, `ip:port` or `[ipv6]:port`, separated by commas
/// or spaces. Empty: use /etc/resolv.conf.
pub fn parse_servers(list: &[String]) -> Result<Vec<SocketAddr>, String> {
    list.iter()
        .map(|s| {
            if let Ok(ip) = s.parse::<IpAddr>() {
                return Ok(SocketAddr::new(ip, 53));
            }
            s.parse::<SocketAddr>().map_err(|_| format!("{s:?} is not an address or address:port"))
        })
        .collect()
}

/// The resolver: its configuration is read at start-up (before a chroot hides
/// /etc/resolv.conf), the resolver itself is built on first use inside the tokio runtime.
pub struct Resolver {
    config: Result<(ResolverConfig, ResolverOpts), String>,
    built: OnceLock<Result<TokioResolver, String>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("config", &self.config.as_ref().map(|(c, _)| c)).finish_non_exhaustive()
    }
}

impl Resolver {
    /// `servers` from `dns_resolver_servers`; empty: the system's resolver configuration.
    pub fn new(servers: &[SocketAddr]) -> Resolver {
        let config = if servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the resolver configuration (/etc/resolv.conf): {e}"))
        } else {
            let servers = servers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            Ok((ResolverConfig::from_name_servers(servers), ResolverOpts::default()))
        };
        Resolver { config, built: OnceLock::new() }
    }

    fn build(&self) -> Result<TokioResolver, String> {
        let (config, opts) = self.config.clone()?;
        let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *builder.options_mut() = opts;
        let opts: &mut ResolverOpts = builder.options_mut();
        // DNS means DNS: /etc/hosts is smtp_host_lookup = native's business.
        opts.use_hosts_file = ResolveHosts::Never;
        // Names are always absolute: no search list, no ndots games.
        opts.ndots = 0;
        builder.build().map_err(|e| format!("cannot set up the DNS resolver: {e}"))
    }

    fn get(&self) -> Result<&TokioResolver, String> {
        self.built.get_or_init(|| self.build()).as_ref().map_err(Clone::clone)
    }
}

fn classify(e: &NetError) -> Answer {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) if nr.response_code == ResponseCode::NXDomain => Answer::NxDomain,
        NetError::Dns(DnsError::NoRecordsFound(nr)) if nr.response_code == ResponseCode::NoError => Answer::NoData,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => Answer::NxDomain,
        _ => Answer::TempFail,
    }
}

impl Dns for Resolver {
    fn query(&self, name: &str, qtype: Qtype) -> impl Future<Output = Answer> + Send {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let resolver = self.get().cloned();
        async move {
            let resolver = match resolver {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("{e}");
                    return Answer::TempFail;
                }
            };
            let rtype = match qtype {
                Qtype::Mx => RecordType::MX,
                Qtype::A => RecordType::A,
                Qtype::Aaaa => RecordType::AAAA,
                Qtype::Ptr => RecordType::PTR,
                Qtype::Txt => RecordType::TXT,
            };
            match resolver.lookup(fqdn.as_str(), rtype).await {
                Ok(lookup) => {
                    let rrs: Vec<Rr> = lookup
                        .answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::MX(mx) => Some(Rr::Mx(mx.preference, mx.exchange.to_ascii())),
                            RData::A(a) => Some(Rr::Addr(IpAddr::V4(a.0))),
                            RData::AAAA(a) => Some(Rr::Addr(IpAddr::V6(a.0))),
                            RData::PTR(p) => Some(Rr::Name(p.0.to_ascii().trim_end_matches('.').to_string())),
                            RData::TXT(t) => Some(Rr::Text(
                                t.txt_data.iter().map(|s| String::from_utf8_lossy(s)).collect::<String>(),
                            )),
                            _ => None,
                        })
                        .collect();
                    if rrs.is_empty() { Answer::NoData } else { Answer::Found(rrs) }
                }
                Err(e) => {
                    let answer = classify(&e);
                    if answer == Answer::TempFail {
                        tracing::info!("DNS lookup of {fqdn} type {}: {e}", qtype.name());
                    }
                    answer
                }
            }
        }
    }

    fn native(&self, host: &str) -> impl Future<Output = Result<Vec<IpAddr>, (bool, String)>> + Send {
        let host = host.to_owned();
        async move {
            match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(it) => Ok(it.map(|a| a.ip()).collect()),
                Err(e) => {
                    let msg = e.to_string();
                    let msg = msg.strip_prefix("failed to lookup address information: ").unwrap_or(&msg).to_owned();
                    // EAI_AGAIN: "Temporary failure in name resolution".
                    Err((msg.contains("Temporary failure") || msg.contains("try again"), msg))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists() {
        let l = |s: &[&str]| parse_servers(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(l(&[]).unwrap(), []);
        assert_eq!(
            l(&["127.0.0.1:5353", "192.0.2.1", "[::1]:53"]).unwrap(),
            ["127.0.0.1:5353".parse().unwrap(), "192.0.2.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
                as [SocketAddr; 3]
        );
        assert!(l(&["dns.example"]).is_err());
    }

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name("192.0.2.10".parse().unwrap()), "10.2.0.192.in-addr.arpa");
        assert_eq!(reverse_name("::ffff:192.0.2.10".parse().unwrap()), "10.2.0.192.in-addr.arpa");
        assert_eq!(
            reverse_name("2001:db8::567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
        assert_eq!(dnsbl_prefix("127.0.0.2".parse().unwrap()), "2.0.0.127");
    }
}

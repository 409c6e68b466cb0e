//! The [`mx::Dns`](crate::mx::Dns) the agent uses: hickory-resolver for DNS queries (the
//! servers of `dns_resolver_servers`, else `/etc/resolv.conf`), tokio's getaddrinfo for
//! `smtp_host_lookup = native`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::mx::{Answer, Dns, Qtype, Rr};

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
}

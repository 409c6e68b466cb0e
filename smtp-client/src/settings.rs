//! smtp-client's view of main.cf (with the service's `-o` overrides), read once at start-up.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use rpost_config::{ConfigError, Params};

use crate::driver::Timeouts;
use crate::nexthop::{Ports, Protocol, parse_port};

/// Why smtp-client cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{name} = {value}: {why}")]
    Invalid { name: &'static str, value: String, why: &'static str },
}

/// Settings of one protocol (the `smtp_*` or the `lmtp_*` parameters).
#[derive(Debug, Clone)]
pub struct ProtoSettings {
    /// `smtp_helo_name` / `lmtp_lhlo_name`.
    pub helo_name: String,
    pub timeouts: Timeouts,
    /// `*_tls_security_level` as configured.
    pub tls_level: String,
    /// The TLS level (or `smtp_tls_wrappermode`) demands TLS: no plaintext delivery.
    pub tls_required: bool,
    /// The parsed level (`smtp_use_tls = yes` with an empty level is `may`).
    pub tls: rpost_tls::ClientLevel,
    /// `smtp_tls_wrappermode`: TLS from the first byte (SMTPS, port 465).
    pub tls_wrapper: bool,
    /// The rustls client configuration for the level (None for `none`, or when it could not
    /// be built: then `tls_problem` says why and mandatory levels defer).
    pub tls_config: Option<std::sync::Arc<rpost_tls::rustls::ClientConfig>>,
    pub tls_problem: Option<String>,
    /// `smtp_skip_5xx_greeting` (lmtp(8) has no parameter of its own here).
    pub skip_5xx_greeting: bool,
    /// Postfix's `smtp_skip_quit_response` (default yes) / `lmtp_skip_quit_response` (no);
    /// not in the registry yet, so these defaults are fixed.
    pub skip_quit_response: bool,
    /// `*_bind_address`, `smtp_bind_address6`.
    pub bind4: Option<IpAddr>,
    pub bind6: Option<IpAddr>,
}

/// Everything a delivery needs to know, resolved from parameters.
#[derive(Debug, Clone)]
pub struct Settings {
    pub myhostname: String,
    /// `queue_directory`, or `/` when chrooted into it.
    pub queue_root: PathBuf,
    /// This service speaks LMTP to plain host next hops (service `lmtp`, or the `lmtp`
    /// command-line argument).
    pub lmtp_service: bool,
    pub ports: Ports,
    pub smtp: ProtoSettings,
    pub lmtp: ProtoSettings,
    /// `inet_protocols`.
    pub ipv4: bool,
    pub ipv6: bool,
    /// `smtp_mx_address_limit`: addresses tried per delivery (0 = no limit).
    pub address_limit: usize,
    /// `smtp_mx_session_limit`: sessions (past the EHLO handshake) per delivery (0 = no limit).
    pub session_limit: usize,
    /// `smtp_host_lookup` has `dns` and `disable_dns_lookups` is off.
    pub lookup_dns: bool,
    /// `smtp_host_lookup` has `native` (or `disable_dns_lookups = yes`).
    pub lookup_native: bool,
    /// `smtp_defer_if_no_mx_address_found`.
    pub defer_if_no_mx_address: bool,
    /// `dns_resolver_servers` (empty: /etc/resolv.conf).
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// Our own addresses, for the MX loop check (`inet_interfaces`, `proxy_interfaces`).
    pub own: OwnAddrs,
    /// The connection cache (`smtp_connection_cache_*`, `smtp_connection_reuse_*`).
    pub cache: CacheSettings,
    /// The same for LMTP (`lmtp_connection_cache_*`, `lmtp_connection_reuse_*`).
    pub lmtp_cache: CacheSettings,
    /// `ipc_timeout`: how long qmgr may take to send its request.
    pub ipc_timeout: Duration,
}

impl Settings {
    pub fn proto(&self, p: Protocol) -> &ProtoSettings {
        match p {
            Protocol::Smtp => &self.smtp,
            Protocol::Lmtp => &self.lmtp,
        }
    }

    /// Resolves the parameters. `lmtp_service` as in [`Settings::lmtp_service`].
    pub fn from_params(p: &Params, lmtp_service: bool, queue_root: PathBuf) -> Result<Settings, SettingsError> {
        let protocols = p.get_list("inet_protocols")?;
        let all = protocols.iter().any(|s| s.eq_ignore_ascii_case("all"));
        let ipv4 = all || protocols.iter().any(|s| s.eq_ignore_ascii_case("ipv4"));
        let ipv6 = all || protocols.iter().any(|s| s.eq_ignore_ascii_case("ipv6"));
        let port = |name: &'static str| -> Result<u16, SettingsError> {
            let value = p.get(name)?;
            parse_port(&value).ok_or(SettingsError::Invalid { name, value, why: "not a port number or service name" })
        };
        let lookup = p.get_list("smtp_host_lookup")?;
        let no_dns = p.get_bool("disable_dns_lookups")?;
        let lookup_dns = !no_dns && lookup.iter().any(|m| m.eq_ignore_ascii_case("dns"));
        let lookup_native = no_dns || lookup.iter().any(|m| m.eq_ignore_ascii_case("native"));
        if let Some(bad) = lookup.iter().find(|m| !m.eq_ignore_ascii_case("dns") && !m.eq_ignore_ascii_case("native")) {
            return Err(SettingsError::Invalid {
                name: "smtp_host_lookup",
                value: bad.clone(),
                why: "not dns or native",
            });
        }
        let servers = p.get_list("dns_resolver_servers")?;
        let dns_servers = rpost_dns::parse_servers(&servers).map_err(|_| SettingsError::Invalid {
            name: "dns_resolver_servers",
            value: servers.join(" "),
            why: "not a list of ip or ip:port",
        })?;
        Ok(Settings {
            myhostname: p.get("myhostname")?,
            queue_root,
            lmtp_service,
            ports: Ports { smtp: port("smtp_tcp_port")?, lmtp: port("lmtp_tcp_port")? },
            smtp: proto(p, "smtp", "smtp_helo_name", "smtp_helo_timeout")?,
            lmtp: proto(p, "lmtp", "lmtp_lhlo_name", "lmtp_lhlo_timeout")?,
            ipv4: ipv4 || !ipv6,
            ipv6,
            address_limit: p.get_int("smtp_mx_address_limit")?.max(0) as usize,
            session_limit: p.get_int("smtp_mx_session_limit")?.max(0) as usize,
            lookup_dns,
            lookup_native,
            defer_if_no_mx_address: p.get_bool("smtp_defer_if_no_mx_address_found")?,
            dns_servers,
            own: OwnAddrs::from_params(&p.get_list("inet_interfaces")?, &p.get_list("proxy_interfaces")?),
            cache: cache_settings(p, "smtp")?,
            lmtp_cache: cache_settings(p, "lmtp")?,
            ipc_timeout: p.get_time("ipc_timeout")?,
        })
    }
}

/// The connection cache: idle sessions kept per destination after a delivery.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `smtp_connection_cache_on_demand` (qmgr sends no backlog hint, so "on demand" is
    /// every delivery).
    pub enabled: bool,
    /// `smtp_connection_cache_destinations`: next hops cached even without on-demand
    /// caching, compared without case (`example.com`, `[relay.example]:587`).
    pub destinations: Vec<String>,
    /// `smtp_connection_cache_time_limit`: longest idle time.
    pub idle: Duration,
    /// `smtp_connection_reuse_time_limit`: no reuse once a connection is this old.
    pub reuse_time: Duration,
    /// `smtp_connection_reuse_count_limit` (0 = no limit).
    pub reuse_count: u32,
    /// `smtp_rset_timeout`: the liveness check before reuse.
    pub rset_timeout: Duration,
}

/// Which addresses are ours, as Postfix's own_inet_addr()/proxy_inet_addr() see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnAddrs {
    /// `inet_interfaces = all`: every address of this host's interfaces.
    pub all: bool,
    /// Listed addresses (loopback-only: 127.0.0.1 and ::1), proxy_interfaces included.
    pub listed: Vec<IpAddr>,
}

impl OwnAddrs {
    /// Names in the lists are resolved once, here (Postfix does the same at start-up).
    pub fn from_params(inet: &[String], proxy: &[String]) -> OwnAddrs {
        let mut own = OwnAddrs { all: false, listed: Vec::new() };
        for item in inet.iter().chain(proxy) {
            let item = item.trim_start_matches('[').trim_end_matches(']');
            match item.to_ascii_lowercase().as_str() {
                "all" => own.all = true,
                "loopback-only" | "localhost" => {
                    own.listed.extend([IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)])
                }
                _ => match item.parse::<IpAddr>() {
                    Ok(ip) => own.listed.push(ip),
                    Err(_) => {
                        use std::net::ToSocketAddrs;
                        match (item, 0).to_socket_addrs() {
                            Ok(it) => own.listed.extend(it.map(|a| a.ip())),
                            Err(e) => tracing::warn!("inet_interfaces/proxy_interfaces: {item}: {e}"),
                        }
                    }
                },
            }
        }
        own
    }

    /// Is `ip` one of ours? With `all`, an address is ours when a socket can be bound to
    /// it (it is on one of our interfaces); on loopback only 127.0.0.1 and ::1 count, as
    /// Postfix compares exact interface addresses, so test instances on 127.0.0.2 and
    /// 127.0.0.3 are not each other.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if self.listed.contains(&ip) {
            return true;
        }
        if !self.all {
            return false;
        }
        if ip.is_loopback() {
            return ip == IpAddr::from([127, 0, 0, 1]) || ip == IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        }
        !ip.is_unspecified() && !ip.is_multicast() && std::net::UdpSocket::bind((ip, 0)).is_ok()
    }
}

fn proto(p: &Params, prefix: &str, helo: &str, helo_timeout: &str) -> Result<ProtoSettings, SettingsError> {
    let time = |name: &str| -> Result<Option<Duration>, ConfigError> {
        let d = p.get_time(&format!("{prefix}_{name}"))?;
        Ok((!d.is_zero()).then_some(d))
    };
    let addr = |name: String| -> Result<Option<IpAddr>, SettingsError> {
        let Some(param) = rpost_config::registry::lookup(&name) else {
            return Ok(None);
        };
        let value = p.get(param.name)?;
        if value.trim().is_empty() {
            return Ok(None);
        }
        value.trim().parse().map(Some).map_err(|_| SettingsError::Invalid {
            name: param.name,
            value,
            why: "not an IP address",
        })
    };
    let tls_level = p.get(&format!("{prefix}_tls_security_level"))?;
    let wrapper = prefix == "smtp" && p.get_bool("smtp_tls_wrappermode")?;
    let level_param: &'static str =
        if prefix == "smtp" { "smtp_tls_security_level" } else { "lmtp_tls_security_level" };
    let mut tls = rpost_tls::ClientLevel::parse(&tls_level).map_err(|_| SettingsError::Invalid {
        name: level_param,
        value: tls_level.clone(),
        why: "expected none, may, encrypt, dane, verify or secure (dane-only and fingerprint are not supported)",
    })?;
    if tls == rpost_tls::ClientLevel::None && tls_level.trim().is_empty() && p.get_bool(&format!("{prefix}_use_tls"))? {
        tls = rpost_tls::ClientLevel::May;
    }
    if wrapper && tls == rpost_tls::ClientLevel::None {
        // Wrapper mode is TLS or nothing; without a level, Postfix's wrapper mode is encrypt.
        tls = rpost_tls::ClientLevel::Encrypt;
    }
    // Never silently weaker than configured: per-destination policies and client
    // certificates are not supported yet.
    if prefix == "smtp" && !p.get("smtp_tls_policy_maps")?.trim().is_empty() {
        tracing::warn!(
            "smtp_tls_policy_maps is not supported yet: smtp_tls_security_level = {tls_level} applies to every destination"
        );
    }
    if !p.get(&format!("{prefix}_tls_cert_file"))?.trim().is_empty() {
        tracing::warn!("{prefix}_tls_cert_file: client certificates are not supported yet: none is presented");
    }
    let ca = p.get(&format!("{prefix}_tls_CAfile"))?;
    let (tls_config, tls_problem) =
        match rpost_tls::client_config(tls, (!ca.is_empty()).then(|| std::path::Path::new(&ca))) {
            Ok(c) => (c, None),
            Err(e) => {
                tracing::warn!("{level_param} = {tls_level}: {e}");
                (None, Some(e.to_string()))
            }
        };
    let helo_timeout = p.get_time(helo_timeout)?;
    Ok(ProtoSettings {
        helo_name: p.get(helo)?,
        timeouts: Timeouts {
            connect: time("connect_timeout")?,
            helo: (!helo_timeout.is_zero()).then_some(helo_timeout),
            mail: time("mail_timeout")?,
            rcpt: time("rcpt_timeout")?,
            data_init: time("data_init_timeout")?,
            data_xfer: time("data_xfer_timeout")?,
            data_done: time("data_done_timeout")?,
            quit: time("quit_timeout")?,
            starttls: time("starttls_timeout")?,
        },
        tls_required: tls.mandatory() || wrapper,
        tls,
        tls_wrapper: wrapper,
        tls_config,
        tls_problem,
        tls_level,
        skip_5xx_greeting: p.get_bool("smtp_skip_5xx_greeting")?,
        skip_quit_response: prefix == "smtp",
        bind4: addr(format!("{prefix}_bind_address"))?,
        bind6: addr(format!("{prefix}_bind_address6"))?,
    })
}

/// `<proto>_connection_cache_*`, `<proto>_connection_reuse_*` and `<proto>_rset_timeout`.
fn cache_settings(p: &Params, proto: &str) -> Result<CacheSettings, SettingsError> {
    let get = |name: &str| format!("{proto}_{name}");
    Ok(CacheSettings {
        enabled: p.get_bool(&get("connection_cache_on_demand"))?,
        destinations: p
            .get_list(&get("connection_cache_destinations"))?
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        idle: p.get_time(&get("connection_cache_time_limit"))?,
        reuse_time: p.get_time(&get("connection_reuse_time_limit"))?,
        reuse_count: p.get_int(&get("connection_reuse_count_limit"))?.max(0) as u32,
        rset_timeout: p.get_time(&get("rset_timeout"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_postfix_defaults() {
        let mut p = Params::empty();
        p.set("myhostname", "mail.example.test");
        let s = Settings::from_params(&p, false, "/q".into()).unwrap();
        assert_eq!(s.smtp.helo_name, "mail.example.test");
        assert_eq!(s.lmtp.helo_name, "mail.example.test");
        assert_eq!(s.ports, Ports { smtp: 25, lmtp: 24 });
        assert_eq!(s.smtp.timeouts.connect, Some(Duration::from_secs(30)));
        assert_eq!(s.lmtp.timeouts.connect, None);
        assert_eq!(s.smtp.timeouts.helo, Some(Duration::from_secs(300)));
        assert_eq!(s.smtp.timeouts.data_init, Some(Duration::from_secs(120)));
        assert_eq!(s.smtp.timeouts.data_xfer, Some(Duration::from_secs(180)));
        assert_eq!(s.smtp.timeouts.data_done, Some(Duration::from_secs(600)));
        assert!(!s.smtp.tls_required && s.smtp.skip_5xx_greeting && s.smtp.skip_quit_response);
        assert!(!s.lmtp.skip_quit_response);
        assert!(s.ipv4 && s.ipv6);
    }

    #[test]
    fn overrides() {
        let mut p = Params::empty();
        p.set("myhostname", "mail.example.test");
        p.set("smtp_helo_name", "out.example.test");
        p.set("smtp_tls_security_level", "encrypt");
        p.set("smtp_tcp_port", "2525");
        p.set("inet_protocols", "ipv4");
        p.set("smtp_bind_address", "127.0.0.1");
        let s = Settings::from_params(&p, true, "/q".into()).unwrap();
        assert_eq!(s.smtp.helo_name, "out.example.test");
        assert!(s.smtp.tls_required && !s.lmtp.tls_required);
        assert_eq!(s.ports.smtp, 2525);
        assert!(s.ipv4 && !s.ipv6);
        assert_eq!(s.smtp.bind4, Some("127.0.0.1".parse().unwrap()));
        p.set("smtp_bind_address", "nowhere");
        assert!(Settings::from_params(&p, true, "/q".into()).is_err());
    }

    #[test]
    fn tls_levels() {
        use rpost_tls::ClientLevel;
        let mut p = Params::empty();
        p.set("myhostname", "mail.example.test");
        let s = Settings::from_params(&p, false, "/q".into()).unwrap();
        assert_eq!((s.smtp.tls, s.lmtp.tls), (ClientLevel::None, ClientLevel::None));
        assert!(s.smtp.tls_config.is_none());
        p.set("smtp_use_tls", "yes");
        p.set("lmtp_tls_security_level", "encrypt");
        let s = Settings::from_params(&p, false, "/q".into()).unwrap();
        assert_eq!((s.smtp.tls, s.lmtp.tls), (ClientLevel::May, ClientLevel::Encrypt));
        assert!(!s.smtp.tls_required && s.lmtp.tls_required && s.lmtp.tls_config.is_some());
        // verify without CA certificates: the level stands, the configuration is missing,
        // and delivery will defer (never fall back to plaintext).
        p.set("smtp_tls_security_level", "verify");
        p.set("smtp_tls_CAfile", "/nonexistent/ca.pem");
        let s = Settings::from_params(&p, false, "/q".into()).unwrap();
        assert!(s.smtp.tls_required && s.smtp.tls_config.is_none() && s.smtp.tls_problem.is_some());
        p.set("smtp_tls_security_level", "fingerprint");
        assert!(Settings::from_params(&p, false, "/q".into()).is_err());
        p.set("smtp_tls_security_level", "");
        p.set("smtp_use_tls", "no");
        p.set("smtp_tls_wrappermode", "yes");
        let s = Settings::from_params(&p, false, "/q".into()).unwrap();
        assert!(s.smtp.tls_wrapper && s.smtp.tls_required && s.smtp.tls == ClientLevel::Encrypt);
    }

    #[test]
    fn lookups_and_the_cache() {
        let mut p = Params::empty();
        p.set("myhostname", "mail.example.test");
        let s = Settings::from_params(&p, false, "/q".into()).unwrap();
        assert!(s.lookup_dns && !s.lookup_native && s.dns_servers.is_empty());
        assert_eq!((s.address_limit, s.session_limit), (5, 2));
        assert!(s.cache.enabled && s.cache.destinations.is_empty() && !s.defer_if_no_mx_address);
        assert_eq!(s.cache.idle, Duration::from_secs(2));
        assert_eq!(s.cache.reuse_time, Duration::from_secs(300));
        assert_eq!(s.cache.reuse_count, 0);
        p.set("smtp_host_lookup", "dns, native");
        p.set("dns_resolver_servers", "127.0.0.1:5353 [::1]:53");
        let s = Settings::from_params(&p, false, "/q".into()).unwrap();
        assert!(s.lookup_dns && s.lookup_native);
        assert_eq!(s.dns_servers, ["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        p.set("disable_dns_lookups", "yes");
        let s = Settings::from_params(&p, false, "/q".into()).unwrap();
        assert!(!s.lookup_dns && s.lookup_native);
        p.set("smtp_host_lookup", "dns, nis");
        assert!(Settings::from_params(&p, false, "/q".into()).is_err());
        p.set("smtp_host_lookup", "dns");
        p.set("dns_resolver_servers", "dns.example");
        assert!(Settings::from_params(&p, false, "/q".into()).is_err());
    }

    #[test]
    fn own_addresses_are_exact() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let own = OwnAddrs::from_params(&l(&["127.0.0.2"]), &l(&["192.0.2.7"]));
        assert!(own.contains("127.0.0.2".parse().unwrap()));
        assert!(own.contains("192.0.2.7".parse().unwrap()), "proxy_interfaces count");
        assert!(!own.contains("127.0.0.3".parse().unwrap()));
        assert!(!own.contains("127.0.0.1".parse().unwrap()));
        let own = OwnAddrs::from_params(&l(&["loopback-only"]), &[]);
        assert!(own.contains("127.0.0.1".parse().unwrap()) && own.contains("::1".parse().unwrap()));
        assert!(!own.contains("127.0.0.2".parse().unwrap()));
        // all: interface addresses; on loopback only 127.0.0.1 itself, as Postfix sees lo.
        let own = OwnAddrs::from_params(&l(&["all"]), &[]);
        assert!(own.contains("127.0.0.1".parse().unwrap()));
        assert!(!own.contains("127.0.0.3".parse().unwrap()));
        assert!(!own.contains("192.0.2.1".parse().unwrap()), "TEST-NET-1 is nobody's interface");
    }
}

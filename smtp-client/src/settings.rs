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
    /// The TLS level (or `smtp_tls_wrappermode`) demands TLS, which is not implemented yet.
    pub tls_required: bool,
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
    /// `smtp_mx_address_limit`: addresses of one host tried per delivery (0 = no limit).
    pub address_limit: usize,
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
            ipc_timeout: p.get_time("ipc_timeout")?,
        })
    }
}

/// TLS levels that refuse to deliver without TLS.
fn level_requires_tls(level: &str) -> bool {
    ["encrypt", "dane-only", "fingerprint", "verify", "secure"].iter().any(|l| level.eq_ignore_ascii_case(l))
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
        },
        tls_required: level_requires_tls(&tls_level) || wrapper,
        tls_level,
        skip_5xx_greeting: p.get_bool("smtp_skip_5xx_greeting")?,
        skip_quit_response: prefix == "smtp",
        bind4: addr(format!("{prefix}_bind_address"))?,
        bind6: addr(format!("{prefix}_bind_address6"))?,
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
}

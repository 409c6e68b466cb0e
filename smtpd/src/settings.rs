//! smtpd's view of main.cf, read once at start-up (a reload starts new processes).

use std::time::Duration;

use rpost_config::{ConfigError, Params};

use crate::addr::{Domains, NetList};
use crate::policy::{Codes, Restriction, parse_list};

/// Why smtpd cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Lookup(#[from] rpost_lookup::LookupError),
    #[error("{param} = {value}: {detail}")]
    Value { param: &'static str, value: String, detail: String },
}

/// smtpd_tls_security_level (Postfix: empty means smtpd_use_tls/smtpd_enforce_tls decide).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsLevel {
    None,
    /// Offer STARTTLS.
    May,
    /// Offer STARTTLS and refuse MAIL and AUTH before it.
    Encrypt,
}

/// SASL (AUTH) settings, present when smtpd_sasl_auth_enable = yes.
#[derive(Debug)]
pub struct Sasl {
    /// The Dovecot auth client socket: smtpd_sasl_path, relative to queue_directory
    /// (the chroot) unless absolute.
    pub path: std::path::PathBuf,
    pub service: String,
    /// broken_sasl_auth_clients: also announce `AUTH=...`.
    pub broken_clients: bool,
    /// smtpd_sasl_authenticated_header.
    pub authenticated_header: bool,
    /// smtpd_sasl_security_options / smtpd_sasl_tls_security_options.
    pub security: Vec<String>,
    pub tls_security: Vec<String>,
    /// smtpd_sasl_exceptions_networks: clients that are not offered AUTH.
    pub exceptions: NetList,
}

/// Restriction lists by stage.
#[derive(Debug, Default)]
pub struct Restrictions {
    pub client: Vec<Restriction>,
    pub helo: Vec<Restriction>,
    pub sender: Vec<Restriction>,
    pub relay: Vec<Restriction>,
    pub recipient: Vec<Restriction>,
    pub data: Vec<Restriction>,
    pub end_of_data: Vec<Restriction>,
    /// Some list needs answers (DNS, policy services) looked up before commands
    /// ([`crate::policy::needs_lookups`]).
    pub lookups: bool,
}

/// Everything a session needs to know, resolved from parameters.
#[derive(Debug)]
pub struct Settings {
    /// `dns_resolver_servers` (empty: /etc/resolv.conf).
    pub dns_servers: Vec<std::net::SocketAddr>,
    /// `smtpd_peername_lookup`: look the client's name up in DNS.
    pub peername_lookup: bool,
    /// check_policy_service: smtpd_policy_service_default_action, _timeout, _try_limit.
    pub policy_default_action: String,
    pub policy_timeout: std::time::Duration,
    pub policy_try_limit: u32,
    pub myhostname: String,
    pub myorigin: String,
    pub mail_name: String,
    pub banner: String,
    pub helo_required: bool,
    pub delay_reject: bool,
    pub disable_vrfy: bool,
    pub smtputf8: bool,
    /// 0 = unlimited.
    pub message_size_limit: u64,
    pub recipient_limit: usize,
    pub timeout: Duration,
    pub soft_error_limit: u32,
    pub hard_error_limit: u32,
    pub junk_command_limit: u32,
    pub error_sleep: Duration,
    /// 0 = unlimited.
    pub connection_count_limit: usize,
    pub recipient_delimiter: String,
    pub reject_unlisted_recipient: bool,
    pub reject_unlisted_sender: bool,
    pub domains: Domains,
    pub mynetworks: NetList,
    pub restrictions: Restrictions,
    pub codes: Codes,
    pub alias_expansion: rpost_lookup::ExpandOptions,
    pub line_length_limit: usize,
    pub tls_level: TlsLevel,
    /// smtpd_tls_wrappermode = yes: TLS from the first byte (port 465).
    pub tls_wrapper: bool,
    /// smtpd_tls_auth_only: AUTH neither offered nor accepted before TLS.
    pub tls_auth_only: bool,
    /// smtpd_tls_received_header: protocol and cipher in Received:.
    pub tls_received_header: bool,
    /// smtpd_starttls_timeout.
    pub starttls_timeout: Duration,
    /// The server TLS configuration: None when no certificate could be loaded (or TLS is
    /// off), then STARTTLS is not offered.
    pub tls: Option<std::sync::Arc<rpost_tls::rustls::ServerConfig>>,
    pub sasl: Option<Sasl>,
    /// smtpd_sender_login_maps.
    pub sender_login_maps: Vec<Box<dyn rpost_lookup::Table>>,
    /// smtpd_sender_login_maps could not be opened: login-mismatch checks answer 451.
    pub sender_login_broken: Option<String>,
}

/// Postfix TLS settings rpost does not honour yet: said once at start, never silently
/// ignored. (TLS 1.2 and 1.3 only, rustls' AEAD suites: stricter than any Postfix default.)
fn unsupported_tls_settings(p: &Params) -> Result<(), ConfigError> {
    if p.get_bool("smtpd_tls_ask_ccert")? || p.get_bool("smtpd_tls_req_ccert")? {
        tracing::warn!(
            "smtpd_tls_ask_ccert/smtpd_tls_req_ccert: client certificates are not supported: none are requested"
        );
    }
    for name in ["smtpd_tls_protocols", "smtpd_tls_mandatory_protocols"] {
        let v = p.get(name)?;
        if v.contains("TLSv1.3") && (v.contains(">=TLSv1.3") || v.contains("!TLSv1.2")) {
            tracing::warn!("{name} = {v}: rpost always accepts TLSv1.2 and TLSv1.3; TLSv1.2 is not excluded");
        }
    }
    Ok(())
}

/// Loads the certificate smtpd serves: smtpd_tls_chain_files, else smtpd_tls_cert_file +
/// smtpd_tls_key_file, else the pair `rmaster check`/`rmaster start` generates under
/// `$config_directory/tls/`. Problems are warnings: the service then does not offer TLS
/// (and, at level encrypt or in wrapper mode, refuses mail) rather than not starting.
fn load_tls(p: &Params) -> Result<Option<std::sync::Arc<rpost_tls::rustls::ServerConfig>>, ConfigError> {
    let chain: Vec<std::path::PathBuf> = p.get_list("smtpd_tls_chain_files")?.into_iter().map(Into::into).collect();
    let cert = p.get("smtpd_tls_cert_file")?;
    let identity = if !chain.is_empty() {
        rpost_tls::Identity::from_chain_files(&chain)
    } else if !cert.is_empty() {
        let key = p.get("smtpd_tls_key_file")?;
        let key = if key.is_empty() { cert.clone() } else { key };
        rpost_tls::Identity::from_files(cert.as_ref(), key.as_ref())
    } else {
        let (c, k) = rpost_tls::default_identity_paths(p.get("config_directory")?.as_ref());
        if !c.exists() {
            tracing::warn!(
                "no server certificate: smtpd_tls_cert_file is empty and {} does not exist (rmaster check creates it): TLS is not offered",
                c.display()
            );
            return Ok(None);
        }
        rpost_tls::Identity::from_files(&c, &k)
    };
    match identity.and_then(|id| rpost_tls::server_config(&id)) {
        Ok(cfg) => Ok(Some(cfg)),
        Err(e) => {
            tracing::warn!("cannot load the server certificate: {e}: TLS is not offered");
            Ok(None)
        }
    }
}

fn int(p: &Params, name: &str) -> Result<i64, ConfigError> {
    p.get_int(name)
}

fn code(p: &Params, name: &str) -> Result<u16, ConfigError> {
    Ok(int(p, name)?.clamp(400, 599) as u16)
}

impl Settings {
    /// Resolves the smtpd parameters. Table open failures are warnings that turn the
    /// affected checks into temporary failures, never into silent passes.
    pub fn from_params(p: &Params) -> Result<Settings, SettingsError> {
        let list = |name: &str| -> Result<Vec<Restriction>, ConfigError> { Ok(parse_list(&p.get_list(name)?)) };
        let forbid = p.get("smtpd_forbid_bare_newline")?;
        if !forbid.eq_ignore_ascii_case("reject") {
            tracing::warn!(
                "smtpd_forbid_bare_newline = {forbid}: rpost always rejects bare CR/LF (SMTP smuggling defence)"
            );
        }
        let level = p.get("smtpd_tls_security_level")?;
        let tls_level = match level.trim().to_ascii_lowercase().as_str() {
            "" if p.get_bool("smtpd_enforce_tls").unwrap_or(false) => TlsLevel::Encrypt,
            "" if p.get_bool("smtpd_use_tls")? => TlsLevel::May,
            "" | "none" => TlsLevel::None,
            "may" => TlsLevel::May,
            "encrypt" => TlsLevel::Encrypt,
            _ => {
                return Err(SettingsError::Value {
                    param: "smtpd_tls_security_level",
                    value: level,
                    detail: "expected none, may or encrypt".into(),
                });
            }
        };
        let tls_wrapper = p.get_bool("smtpd_tls_wrappermode")?;
        unsupported_tls_settings(p)?;
        let tls = if tls_level != TlsLevel::None || tls_wrapper { load_tls(p)? } else { None };
        if tls.is_none() && (tls_level == TlsLevel::Encrypt || tls_wrapper) {
            tracing::warn!("TLS is required on this service but no certificate is usable: mail is refused");
        }
        let sasl = if p.get_bool("smtpd_sasl_auth_enable")? {
            let kind = p.get("smtpd_sasl_type")?;
            if !kind.eq_ignore_ascii_case("dovecot") {
                return Err(SettingsError::Value {
                    param: "smtpd_sasl_type",
                    value: kind,
                    detail: "rpost speaks only the Dovecot auth protocol (dovecot)".into(),
                });
            }
            let path = std::path::PathBuf::from(p.get("smtpd_sasl_path")?);
            Some(Sasl {
                path,
                service: p.get("smtpd_sasl_service")?,
                broken_clients: p.get_bool("broken_sasl_auth_clients")?,
                authenticated_header: p.get_bool("smtpd_sasl_authenticated_header")?,
                security: p.get_list("smtpd_sasl_security_options")?,
                tls_security: p.get_list("smtpd_sasl_tls_security_options")?,
                exceptions: NetList::parse(&p.get_list("smtpd_sasl_exceptions_networks")?),
            })
        } else {
            None
        };
        let mut sender_login_maps = Vec::new();
        let mut sender_login_broken = None;
        for spec in p.get_list("smtpd_sender_login_maps")? {
            match crate::addr::open_table(&spec) {
                Ok(t) => sender_login_maps.push(t),
                Err(e) => {
                    tracing::warn!("smtpd_sender_login_maps {spec}: {e}");
                    sender_login_broken = Some(format!("{spec}: {e}"));
                }
            }
        }
        let dns_servers =
            rpost_dns::parse_servers(&p.get_list("dns_resolver_servers")?).map_err(|detail| SettingsError::Value {
                param: "dns_resolver_servers",
                value: p.get("dns_resolver_servers").unwrap_or_default(),
                detail,
            })?;
        Ok(Settings {
            dns_servers,
            peername_lookup: p.get_bool("smtpd_peername_lookup")?,
            policy_default_action: p.get("smtpd_policy_service_default_action")?,
            policy_timeout: p.get_time("smtpd_policy_service_timeout")?,
            policy_try_limit: p.get_int("smtpd_policy_service_try_limit")?.clamp(1, 10) as u32,
            tls_level,
            tls_wrapper,
            tls_auth_only: p.get_bool("smtpd_tls_auth_only")?,
            tls_received_header: p.get_bool("smtpd_tls_received_header")?,
            starttls_timeout: p.get_time("smtpd_starttls_timeout")?,
            tls,
            sasl,
            sender_login_maps,
            sender_login_broken,
            myhostname: p.get("myhostname")?,
            myorigin: p.get("myorigin")?,
            mail_name: p.get("mail_name")?,
            banner: p.get("smtpd_banner")?,
            helo_required: p.get_bool("smtpd_helo_required")?,
            delay_reject: p.get_bool("smtpd_delay_reject")?,
            disable_vrfy: p.get_bool("disable_vrfy_command")?,
            smtputf8: p.get_bool("smtputf8_enable")?,
            message_size_limit: p.get_size("message_size_limit")?,
            recipient_limit: int(p, "smtpd_recipient_limit")?.max(1) as usize,
            timeout: p.get_time("smtpd_timeout")?,
            soft_error_limit: int(p, "smtpd_soft_error_limit")?.max(0) as u32,
            hard_error_limit: int(p, "smtpd_hard_error_limit")?.max(1) as u32,
            junk_command_limit: int(p, "smtpd_junk_command_limit")?.max(1) as u32,
            error_sleep: p.get_time("smtpd_error_sleep_time")?,
            connection_count_limit: int(p, "smtpd_client_connection_count_limit")?.max(0) as usize,
            recipient_delimiter: p.get("recipient_delimiter")?,
            reject_unlisted_recipient: p.get_bool("smtpd_reject_unlisted_recipient")?,
            reject_unlisted_sender: p.get_bool("smtpd_reject_unlisted_sender")?,
            domains: Domains::from_params(p)?,
            mynetworks: NetList::parse(&if p.is_explicit("mynetworks") {
                p.get_list("mynetworks")?
            } else {
                crate::addr::mynetworks_from_style(&p.get("mynetworks_style")?)
            }),
            restrictions: {
                let mut r = Restrictions {
                    client: list("smtpd_client_restrictions")?,
                    helo: list("smtpd_helo_restrictions")?,
                    sender: list("smtpd_sender_restrictions")?,
                    relay: list("smtpd_relay_restrictions")?,
                    recipient: list("smtpd_recipient_restrictions")?,
                    data: list("smtpd_data_restrictions")?,
                    end_of_data: list("smtpd_end_of_data_restrictions")?,
                    lookups: false,
                };
                r.lookups = [&r.client, &r.helo, &r.sender, &r.relay, &r.recipient, &r.data, &r.end_of_data]
                    .iter()
                    .any(|l| crate::policy::needs_lookups(l));
                r
            },
            codes: Codes {
                relay: code(p, "relay_domains_reject_code")?,
                access_reject: code(p, "access_map_reject_code")?,
                access_defer: code(p, "access_map_defer_code")?,
                reject: code(p, "reject_code")?,
                defer: code(p, "defer_code")?,
                non_fqdn: code(p, "non_fqdn_reject_code")?,
                invalid_hostname: code(p, "invalid_hostname_reject_code")?,
                unknown_local: code(p, "unknown_local_recipient_reject_code")?,
                unknown_virtual_mailbox: code(p, "unknown_virtual_mailbox_reject_code")?,
                unknown_virtual_alias: code(p, "unknown_virtual_alias_reject_code")?,
                unknown_relay: code(p, "unknown_relay_recipient_reject_code")?,
                unknown_client: code(p, "unknown_client_reject_code")?,
                unknown_hostname: code(p, "unknown_hostname_reject_code")?,
                unknown_address: code(p, "unknown_address_reject_code")?,
                maps_rbl: code(p, "maps_rbl_reject_code")?,
            },
            alias_expansion: rpost_lookup::ExpandOptions::from_params(p)?,
            line_length_limit: int(p, "line_length_limit")?.max(512) as usize,
        })
    }
}

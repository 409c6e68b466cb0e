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
}

/// Everything a session needs to know, resolved from parameters.
#[derive(Debug)]
pub struct Settings {
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
    /// smtpd_tls_security_level = encrypt: mail only after STARTTLS.
    pub tls_required: bool,
    /// smtpd_tls_wrappermode = yes: TLS from the first byte (port 465).
    pub tls_wrapper: bool,
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
        let tls_required = p.get("smtpd_tls_security_level")?.eq_ignore_ascii_case("encrypt");
        let tls_wrapper = p.get_bool("smtpd_tls_wrappermode")?;
        // TLS and SASL land with the next issue. Until then a service that demands them refuses
        // mail instead of quietly accepting it in the clear.
        if tls_required || tls_wrapper {
            tracing::warn!("TLS is not implemented yet: this service refuses mail until it is");
        }
        if p.get_bool("smtpd_sasl_auth_enable")? {
            tracing::warn!("smtpd_sasl_auth_enable = yes: SASL AUTH is not implemented yet and is not offered");
        }
        Ok(Settings {
            tls_required,
            tls_wrapper,
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
            restrictions: Restrictions {
                client: list("smtpd_client_restrictions")?,
                helo: list("smtpd_helo_restrictions")?,
                sender: list("smtpd_sender_restrictions")?,
                relay: list("smtpd_relay_restrictions")?,
                recipient: list("smtpd_recipient_restrictions")?,
                data: list("smtpd_data_restrictions")?,
                end_of_data: list("smtpd_end_of_data_restrictions")?,
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
            },
            alias_expansion: rpost_lookup::ExpandOptions::from_params(p)?,
            line_length_limit: int(p, "line_length_limit")?.max(512) as usize,
        })
    }
}

//! The restriction engine: smtpd_{client,helo,sender,relay,recipient,data}_restrictions.
//!
//! Postfix semantics: each list is read left to right and the first restriction that
//! decides (PERMIT, REJECT or DEFER) ends that list; a PERMIT only ends its own list, so a
//! later list can still reject. With `smtpd_delay_reject = yes` (the default) the client,
//! HELO and sender lists are evaluated at RCPT time. Lookup keys come from the network and are
//! never compiled as patterns; table failures answer 451 4.3.0 rather than letting mail
//! through.

use std::net::IpAddr;

use rpost_lookup::Table;
use rpost_smtp_proto::Reply;

use crate::addr::{Address, Class, Domains, NetList};
use crate::dnscheck::{self, Query, ReplyFilter, Verdict};

/// What a restriction list concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Permit,
    /// No restriction decided: the list ran out.
    Dunno,
    Reject(Reply),
}

/// One parsed restriction.
#[derive(Debug)]
pub enum Restriction {
    Permit,
    Reject,
    Defer,
    PermitMynetworks,
    PermitSaslAuthenticated,
    RejectUnauthDestination,
    DeferUnauthDestination,
    PermitAuthDestination,
    RejectUnauthPipelining,
    RejectNonFqdnSender,
    RejectNonFqdnRecipient,
    RejectNonFqdnHelo,
    RejectInvalidHelo,
    RejectUnlistedRecipient,
    RejectUnlistedSender,
    /// reject_sender_login_mismatch and its variants (smtpd_sender_login_maps).
    SenderLogin(LoginCheck),
    /// reject_unknown_client_hostname (old name reject_unknown_client): no verified name.
    RejectUnknownClientHostname,
    /// reject_unknown_reverse_client_hostname: no PTR name at all.
    RejectUnknownReverseClientHostname,
    /// reject_unknown_helo_hostname (old name reject_unknown_hostname).
    RejectUnknownHelo,
    RejectUnknownSenderDomain,
    RejectUnknownRecipientDomain,
    /// reject_rbl_client and reject_rhsbl_*: the name whose entry under `zone` rejects
    /// (only entries that pass the `=d.d.d.d` filter, when given).
    ///
    /// `permit`: permit_dnswl_client (the client address) or permit_rhswl_client (its name):
    /// a listed client is permitted instead, except where that would let it relay.
    DnsList {
        listed: ListedName,
        zone: String,
        filter: Option<ReplyFilter>,
        permit: bool,
    },
    CheckAccess(AccessKind, Vec<Box<dyn Table>>, String),
    /// check_policy_service: `unix:path` (relative to the queue directory) or
    /// `inet:host:port`; its `action=` reply is taken as an access(5) action.
    Policy(String),
    /// Restrictions rpost does not implement yet (address verification, reject_mx_backup):
    /// accepted in the configuration, they warn once per process and decide nothing: never
    /// a silent "checked".
    NotYet(String),
    /// A table that could not be opened: every evaluation answers 451, as Postfix does.
    Broken(String),
    /// An unknown restriction name: 451 4.3.5 Server configuration error.
    Unknown(String),
}

/// What a DNS list restriction looks up under its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedName {
    /// reject_rbl_client: the client address, reversed.
    ClientAddr,
    /// reject_rhsbl_client: the verified client name.
    ClientName,
    /// reject_rhsbl_reverse_client: the PTR name.
    ReverseClientName,
    /// reject_rhsbl_helo.
    Helo,
    /// reject_rhsbl_sender: the sender's domain.
    SenderDomain,
    /// reject_rhsbl_recipient: the recipient's domain.
    RecipientDomain,
}

/// Which half of Postfix's sender-login check applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginCheck {
    /// An authenticated client must own the sender address.
    pub authenticated: bool,
    /// ... unless the address has no owner in the table (reject_known_sender_login_mismatch).
    pub only_known: bool,
    /// An unauthenticated client must not use an address that has an owner.
    pub unauthenticated: bool,
}

/// What an access table is keyed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Client,
    Helo,
    Sender,
    Recipient,
}

/// The stage a list belongs to: decides the wording of a plain `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Client,
    Helo,
    Sender,
    Recipient,
    Data,
}

/// Everything a restriction may look at.
#[derive(Debug)]
pub struct Facts<'a> {
    pub client_addr: IpAddr,
    pub client_name: &'a str,
    pub helo: Option<&'a str>,
    /// `Some("")` is the null sender.
    pub sender: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub sasl_user: Option<&'a str>,
    /// The client sent more input before we replied, without the right to (no EHLO).
    pub improper_pipelining: bool,
    /// The PTR name (unverified), or `unknown`.
    pub client_reverse_name: &'a str,
    /// The name or the PTR name is `unknown` because a lookup failed for now.
    pub client_name_tempfail: bool,
    pub client_reverse_tempfail: bool,
    /// DNS and policy answers looked up for this session (see [`crate::dnscheck`]).
    pub answers: &'a dnscheck::Facts,
    /// Set while the session probes for missing answers: the first one a restriction
    /// needs is put here and the evaluation stops.
    pub probe: Option<&'a std::cell::RefCell<Option<dnscheck::Lookup>>>,
    /// Where the session is, for policy requests: CONNECT, EHLO, HELO, MAIL, RCPT, DATA,
    /// END-OF-MESSAGE.
    pub protocol_state: &'static str,
    pub esmtp: bool,
    pub sasl_method: Option<&'a str>,
    /// MAIL FROM's SIZE (0: not given).
    pub size: u64,
    /// Recipients accepted so far.
    pub recipient_count: usize,
    /// Identifies the transaction for policy services (Postfix's `instance`).
    pub instance: &'a str,
    pub tls: Option<&'a rpost_tls::TlsInfo>,
}

/// Static context the engine needs besides the facts.
#[derive(Debug)]
pub struct Env<'a> {
    pub domains: &'a Domains,
    pub mynetworks: &'a NetList,
    pub codes: &'a Codes,
    pub myorigin: &'a str,
    pub recipient_delimiter: &'a str,
    /// smtpd_sender_login_maps.
    pub sender_login_maps: &'a [Box<dyn Table>],
    /// Why smtpd_sender_login_maps could not be opened (login checks then answer 451).
    pub sender_login_broken: Option<&'a str>,
    /// smtpd_policy_service_default_action: the action when a policy service fails.
    pub policy_default_action: &'a str,
}

/// Configurable reply codes.
#[derive(Debug, Clone)]
pub struct Codes {
    pub relay: u16,
    pub access_reject: u16,
    pub access_defer: u16,
    pub reject: u16,
    pub defer: u16,
    pub non_fqdn: u16,
    pub invalid_hostname: u16,
    pub unknown_local: u16,
    pub unknown_virtual_mailbox: u16,
    pub unknown_virtual_alias: u16,
    pub unknown_relay: u16,
    pub unknown_client: u16,
    pub unknown_hostname: u16,
    pub unknown_address: u16,
    pub maps_rbl: u16,
}

const MAX_NESTING: usize = 10;

/// Parses a restriction list (`smtpd_recipient_restrictions` etc.).
pub fn parse_list(items: &[String]) -> Vec<Restriction> {
    let mut out = Vec::new();
    let mut it = items.iter();
    while let Some(item) = it.next() {
        let name = item.to_ascii_lowercase();
        let access = match name.as_str() {
            "check_client_access" => Some(AccessKind::Client),
            "check_helo_access" => Some(AccessKind::Helo),
            "check_sender_access" => Some(AccessKind::Sender),
            "check_recipient_access" => Some(AccessKind::Recipient),
            _ => None,
        };
        if let Some(kind) = access {
            let Some(spec) = it.next() else {
                out.push(Restriction::Unknown(format!("{name} without a table")));
                continue;
            };
            match crate::addr::open_table(spec) {
                Ok(t) => out.push(Restriction::CheckAccess(kind, vec![t], spec.clone())),
                Err(e) => {
                    tracing::warn!("{name} {spec}: {e}");
                    out.push(Restriction::Broken(format!("{spec}: {e}")));
                }
            }
            continue;
        }
        let r = match name.as_str() {
            "permit" | "ok" => Restriction::Permit,
            "reject" => Restriction::Reject,
            "defer" => Restriction::Defer,
            "permit_mynetworks" => Restriction::PermitMynetworks,
            "permit_sasl_authenticated" => Restriction::PermitSaslAuthenticated,
            "reject_unauth_destination" => Restriction::RejectUnauthDestination,
            "defer_unauth_destination" => Restriction::DeferUnauthDestination,
            "permit_auth_destination" => Restriction::PermitAuthDestination,
            "reject_unauth_pipelining" => Restriction::RejectUnauthPipelining,
            "reject_non_fqdn_sender" => Restriction::RejectNonFqdnSender,
            "reject_non_fqdn_recipient" => Restriction::RejectNonFqdnRecipient,
            "reject_non_fqdn_helo_hostname" | "reject_non_fqdn_hostname" => Restriction::RejectNonFqdnHelo,
            "reject_invalid_helo_hostname" | "reject_invalid_hostname" => Restriction::RejectInvalidHelo,
            "reject_unlisted_recipient" | "check_recipient_maps" => Restriction::RejectUnlistedRecipient,
            "reject_unlisted_sender" => Restriction::RejectUnlistedSender,
            "reject_sender_login_mismatch" => {
                Restriction::SenderLogin(LoginCheck { authenticated: true, only_known: false, unauthenticated: true })
            }
            "reject_authenticated_sender_login_mismatch" => {
                Restriction::SenderLogin(LoginCheck { authenticated: true, only_known: false, unauthenticated: false })
            }
            "reject_known_sender_login_mismatch" => {
                Restriction::SenderLogin(LoginCheck { authenticated: true, only_known: true, unauthenticated: true })
            }
            "reject_unauthenticated_sender_login_mismatch" => {
                Restriction::SenderLogin(LoginCheck { authenticated: false, only_known: false, unauthenticated: true })
            }
            "reject_unknown_client_hostname" | "reject_unknown_client" => Restriction::RejectUnknownClientHostname,
            "reject_unknown_reverse_client_hostname" => Restriction::RejectUnknownReverseClientHostname,
            "reject_unknown_helo_hostname" | "reject_unknown_hostname" => Restriction::RejectUnknownHelo,
            "reject_unknown_sender_domain" => Restriction::RejectUnknownSenderDomain,
            "reject_unknown_recipient_domain" => Restriction::RejectUnknownRecipientDomain,
            "reject_unverified_sender" | "reject_unverified_recipient" | "reject_mx_backup" => {
                Restriction::NotYet(name)
            }
            "reject_rbl_client"
            | "reject_rhsbl_client"
            | "reject_rhsbl_sender"
            | "reject_rhsbl_helo"
            | "reject_rhsbl_recipient"
            | "reject_rhsbl_reverse_client"
            | "permit_dnswl_client"
            | "permit_rhswl_client" => {
                let listed = match name.as_str() {
                    "reject_rbl_client" | "permit_dnswl_client" => ListedName::ClientAddr,
                    "reject_rhsbl_client" | "permit_rhswl_client" => ListedName::ClientName,
                    "reject_rhsbl_sender" => ListedName::SenderDomain,
                    "reject_rhsbl_helo" => ListedName::Helo,
                    "reject_rhsbl_recipient" => ListedName::RecipientDomain,
                    _ => ListedName::ReverseClientName,
                };
                let arg = it.next().cloned().unwrap_or_default().to_ascii_lowercase();
                let (zone, filter) = match arg.split_once('=') {
                    Some((zone, f)) => (zone, Some(ReplyFilter::parse(f))),
                    None => (arg.as_str(), None),
                };
                let zone = zone.trim_end_matches('.').to_string();
                let permit = name.starts_with("permit_");
                match filter {
                    _ if zone.is_empty() || !zone.contains('.') => Restriction::Unknown(format!("{name} {arg}")),
                    Some(None) => Restriction::Unknown(format!("{name} {arg}")),
                    Some(filter) => Restriction::DnsList { listed, zone, filter, permit },
                    None => Restriction::DnsList { listed, zone, filter: None, permit },
                }
            }
            "check_policy_service" => {
                let arg = it.next().cloned().unwrap_or_default();
                if crate::policysvc::Endpoint::parse(&arg).is_some() {
                    Restriction::Policy(arg)
                } else {
                    Restriction::Unknown(format!("{name} {arg}"))
                }
            }
            _ => Restriction::Unknown(name),
        };
        if let Restriction::NotYet(what) = &r {
            tracing::warn!("{what}: not implemented yet: skipped, mail is NOT checked by it");
        }
        out.push(r);
    }
    out
}

fn obj_prefix(kind: AccessKind, f: &Facts<'_>) -> String {
    match kind {
        AccessKind::Client => format!("<{}[{}]>: Client host rejected", f.client_name, f.client_addr),
        AccessKind::Helo => format!("<{}>: Helo command rejected", f.helo.unwrap_or("")),
        AccessKind::Sender => format!("<{}>: Sender address rejected", f.sender.unwrap_or("")),
        AccessKind::Recipient => format!("<{}>: Recipient address rejected", f.recipient.unwrap_or("")),
    }
}

fn stage_kind(stage: Stage) -> Option<AccessKind> {
    match stage {
        Stage::Client => Some(AccessKind::Client),
        Stage::Helo => Some(AccessKind::Helo),
        Stage::Sender => Some(AccessKind::Sender),
        Stage::Recipient => Some(AccessKind::Recipient),
        Stage::Data => None,
    }
}

fn stage_prefix(stage: Stage, f: &Facts<'_>) -> String {
    match stage_kind(stage) {
        Some(kind) => obj_prefix(kind, f),
        None => "<DATA>: Data command rejected".to_string(),
    }
}

/// Builds a reply, taking an enhanced status code from the text when it starts with one.
fn reply(code: u16, text: &str) -> Reply {
    let class = code / 100;
    let (enhanced, rest) = match text.split_once(' ') {
        Some((e, rest)) if is_enhanced(e) && e.starts_with(&class.to_string()) => (e.to_string(), rest),
        _ => (format!("{class}.7.1"), text),
    };
    Reply::new(code, &enhanced, rest)
}

fn is_enhanced(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn temp_failure(what: &str) -> Reply {
    Reply::new(451, "4.3.0", format!("{what}: Temporary lookup failure"))
}

/// Evaluates one list.
pub fn eval(list: &[Restriction], stage: Stage, f: &Facts<'_>, env: &Env<'_>) -> Decision {
    eval_depth(list, stage, f, env, 0)
}

fn eval_depth(list: &[Restriction], stage: Stage, f: &Facts<'_>, env: &Env<'_>, depth: usize) -> Decision {
    for r in list {
        match eval_one(r, stage, f, env, depth) {
            Decision::Dunno => continue,
            d => return d,
        }
    }
    Decision::Dunno
}

fn eval_one(r: &Restriction, stage: Stage, f: &Facts<'_>, env: &Env<'_>, depth: usize) -> Decision {
    let rcpt = || f.recipient.map(|r| Address::parse(r, env.myorigin));
    match r {
        Restriction::Permit => Decision::Permit,
        Restriction::Reject => {
            Decision::Reject(reply(env.codes.reject, &format!("{}: Access denied", stage_prefix(stage, f))))
        }
        Restriction::Defer => {
            Decision::Reject(reply(env.codes.defer, &format!("{}: Access denied", stage_prefix(stage, f))))
        }
        Restriction::PermitMynetworks => {
            if env.mynetworks.contains(f.client_addr) {
                Decision::Permit
            } else {
                Decision::Dunno
            }
        }
        Restriction::PermitSaslAuthenticated => {
            if f.sasl_user.is_some() {
                Decision::Permit
            } else {
                Decision::Dunno
            }
        }
        Restriction::RejectUnauthDestination | Restriction::DeferUnauthDestination => {
            let Some(addr) = rcpt() else { return Decision::Dunno };
            if env.domains.authorized_destination(&addr) {
                return Decision::Dunno;
            }
            let code = if matches!(r, Restriction::DeferUnauthDestination) { 454 } else { env.codes.relay };
            Decision::Reject(reply(code, &format!("<{}>: Relay access denied", f.recipient.unwrap_or(""))))
        }
        Restriction::PermitAuthDestination => match rcpt() {
            Some(addr) if env.domains.authorized_destination(&addr) => Decision::Permit,
            _ => Decision::Dunno,
        },
        Restriction::RejectUnauthPipelining => {
            if f.improper_pipelining {
                Decision::Reject(Reply::new(503, "5.5.0", "Error: improper use of SMTP command pipelining"))
            } else {
                Decision::Dunno
            }
        }
        Restriction::RejectNonFqdnSender => match f.sender {
            Some(s) if !s.is_empty() && !Address::parse(s, "").has_fqdn_domain() => Decision::Reject(reply(
                env.codes.non_fqdn,
                &format!("5.5.2 {}: need fully-qualified address", obj_prefix(AccessKind::Sender, f)),
            )),
            _ => Decision::Dunno,
        },
        Restriction::RejectNonFqdnRecipient => match f.recipient {
            Some(r) if !Address::parse(r, "").has_fqdn_domain() => Decision::Reject(reply(
                env.codes.non_fqdn,
                &format!("5.5.2 {}: need fully-qualified address", obj_prefix(AccessKind::Recipient, f)),
            )),
            _ => Decision::Dunno,
        },
        Restriction::RejectNonFqdnHelo => match f.helo {
            Some(h) if !crate::addr::is_fqdn(h) && !crate::addr::is_address_literal(h) => Decision::Reject(reply(
                env.codes.non_fqdn,
                &format!("5.5.2 {}: need fully-qualified hostname", obj_prefix(AccessKind::Helo, f)),
            )),
            _ => Decision::Dunno,
        },
        Restriction::RejectInvalidHelo => match f.helo {
            Some(h) if !crate::addr::is_valid_hostname(h) && !crate::addr::is_address_literal(h) => Decision::Reject(
                reply(env.codes.invalid_hostname, &format!("5.5.2 {}: Invalid name", obj_prefix(AccessKind::Helo, f))),
            ),
            _ => Decision::Dunno,
        },
        Restriction::RejectUnlistedRecipient => match f.recipient {
            Some(r) => unlisted(r, AccessKind::Recipient, f, env),
            None => Decision::Dunno,
        },
        Restriction::RejectUnlistedSender => match f.sender {
            Some(s) if !s.is_empty() => unlisted(s, AccessKind::Sender, f, env),
            _ => Decision::Dunno,
        },
        Restriction::SenderLogin(check) => sender_login(*check, f, env),
        Restriction::CheckAccess(kind, tables, spec) => check_access(*kind, tables, spec, stage, f, env, depth),
        Restriction::RejectUnknownClientHostname => {
            unknown_client(f.client_name, f.client_name_tempfail, "hostname", f, env)
        }
        Restriction::RejectUnknownReverseClientHostname => {
            unknown_client(f.client_reverse_name, f.client_reverse_tempfail, "reverse hostname", f, env)
        }
        Restriction::RejectUnknownHelo => {
            let Some(q) = helo_query(f) else { return Decision::Dunno };
            let Some(v) = lookup(f, q, String::new()) else { return probe_stop() };
            match v {
                Verdict::NotFound | Verdict::Malformed | Verdict::NullMx => Decision::Reject(reply(
                    env.codes.unknown_hostname,
                    &format!("{}: Host not found", obj_prefix(AccessKind::Helo, f)),
                )),
                Verdict::TempFail => {
                    Decision::Reject(reply(450, &format!("{}: Host not found", obj_prefix(AccessKind::Helo, f))))
                }
                _ => Decision::Dunno,
            }
        }
        Restriction::RejectUnknownSenderDomain => match f.sender.and_then(|s| mail_domain(s, env)) {
            Some(d) => unknown_domain(d, AccessKind::Sender, "1.8", f, env),
            None => Decision::Dunno,
        },
        Restriction::RejectUnknownRecipientDomain => match f.recipient.and_then(|r| mail_domain(r, env)) {
            Some(d) => unknown_domain(d, AccessKind::Recipient, "1.2", f, env),
            None => Decision::Dunno,
        },
        Restriction::DnsList { listed, zone, filter, permit } => {
            let Some(name) = listed_name(*listed, f, env) else { return Decision::Dunno };
            let Some(v) = lookup(f, Query::Listed(format!("{name}.{zone}")), String::new()) else {
                return probe_stop();
            };
            let text = match v {
                Verdict::Listed { addrs, text }
                    if addrs.iter().any(|a| filter.as_ref().is_none_or(|f| f.matches(*a))) =>
                {
                    text
                }
                Verdict::TempFail => {
                    // As Postfix: a list that does not answer lists nobody.
                    tracing::warn!("{name}.{zone}: DNS list lookup failed for now: not listed");
                    return Decision::Dunno;
                }
                _ => return Decision::Dunno,
            };
            if *permit {
                // As Postfix: an allow list never overrides reject_unauth_destination.
                return match rcpt() {
                    Some(addr) if stage == Stage::Recipient && !env.domains.authorized_destination(&addr) => {
                        Decision::Dunno
                    }
                    _ => Decision::Permit,
                };
            }
            let class = match listed {
                ListedName::ClientAddr | ListedName::ClientName => "Client host",
                ListedName::ReverseClientName => "Unverified Client host",
                ListedName::Helo => "Helo command",
                ListedName::SenderDomain => "Sender address",
                ListedName::RecipientDomain => "Recipient address",
            };
            let what = if *listed == ListedName::ClientAddr { f.client_addr.to_string() } else { name };
            let reason = text.map(|t| format!("; {t}")).unwrap_or_default();
            let code = env.codes.maps_rbl;
            Decision::Reject(reply(
                code,
                &format!("{}.7.1 Service unavailable; {class} [{what}] blocked using {zone}{reason}", code / 100),
            ))
        }
        Restriction::Policy(endpoint) => {
            let (query, request) = policy_query(endpoint, f);
            let action = match lookup(f, query, request) {
                None => return probe_stop(),
                Some(Verdict::Action(a)) => a,
                // The service failed.
                Some(_) => env.policy_default_action.to_string(),
            };
            action_result(&action, &stage_prefix(stage, f), stage, f, env, depth)
        }
        // Warned about when the list was parsed (start-up), not on every message.
        Restriction::NotYet(_) => Decision::Dunno,
        Restriction::Broken(what) => {
            tracing::warn!("restriction table {what}: answering 451");
            Decision::Reject(Reply::new(451, "4.3.5", "Server configuration error"))
        }
        Restriction::Unknown(name) => {
            tracing::warn!("unknown smtpd restriction: \"{name}\"");
            Decision::Reject(Reply::new(451, "4.3.5", "Server configuration error"))
        }
    }
}

/// Postfix's sender-login check: the owners of the MAIL FROM address are looked up in
/// smtpd_sender_login_maps (address, then domain and user@ forms, as access maps) and
/// compared with the SASL login, case-insensitively.
/// reject_unknown_(reverse_)client_hostname: `name` is `unknown` (450 when only for now).
fn unknown_client(name: &str, tempfail: bool, what: &str, f: &Facts<'_>, env: &Env<'_>) -> Decision {
    if name != "unknown" {
        return Decision::Dunno;
    }
    let code = if tempfail { 450 } else { env.codes.unknown_client };
    let text = format!("{}.7.25 Client host rejected: cannot find your {what}, [{}]", code / 100, f.client_addr);
    Decision::Reject(reply(code, &text))
}

/// Whether any restriction in `list` decides on answers (DNS, policy services) the driver
/// must look up first.
pub fn needs_lookups(list: &[Restriction]) -> bool {
    list.iter().any(|r| {
        matches!(
            r,
            Restriction::RejectUnknownHelo
                | Restriction::RejectUnknownSenderDomain
                | Restriction::RejectUnknownRecipientDomain
                | Restriction::DnsList { .. }
                | Restriction::Policy(_)
        )
    })
}

/// The answer looked up for `q` (`request`: a policy request, else empty). In a probe a
/// missing one is recorded (the first only: it decides what is reached next) and `None`
/// returned, and the restriction stops the evaluation with [`probe_stop`]. Outside a probe
/// a missing answer (a restriction the probe did not reach, see `Restrictions::lookups`)
/// counts as a failure, logged.
fn lookup(f: &Facts<'_>, q: Query, request: String) -> Option<Verdict> {
    if let Some(v) = f.answers.get(&q) {
        return Some(v.clone());
    }
    if let Some(probe) = f.probe {
        probe.borrow_mut().get_or_insert(dnscheck::Lookup { query: q, request });
        return None;
    }
    tracing::warn!("{q:?}: not looked up before the restriction needed it: treated as a temporary failure");
    Some(Verdict::TempFail)
}

/// Ends a probe's evaluation (see [`lookup`]); never a reply anyone sees.
fn probe_stop() -> Decision {
    Decision::Reject(Reply::new(451, "4.3.0", "probe"))
}

/// The query and request of check_policy_service `endpoint` with these facts (Postfix's
/// policy delegation protocol: `name=value` lines, an empty line at the end).
fn policy_query(endpoint: &str, f: &Facts<'_>) -> (Query, String) {
    let helo = f.helo.unwrap_or("");
    let sender = f.sender.unwrap_or("");
    let recipient = f.recipient.unwrap_or("");
    // Not the instance: a probe before MAIL knows only the previous one.
    let key = format!("{}\n{helo}\n{sender}\n{recipient}", f.protocol_state);
    let attrs: [(&str, String); 20] = [
        ("request", "smtpd_access_policy".into()),
        ("protocol_state", f.protocol_state.into()),
        ("protocol_name", if f.esmtp { "ESMTP" } else { "SMTP" }.into()),
        ("client_address", f.client_addr.to_string()),
        ("client_name", f.client_name.into()),
        ("reverse_client_name", f.client_reverse_name.into()),
        ("helo_name", helo.into()),
        ("sender", sender.into()),
        ("recipient", recipient.into()),
        ("recipient_count", f.recipient_count.to_string()),
        ("queue_id", String::new()),
        ("instance", f.instance.into()),
        ("size", f.size.to_string()),
        ("etrn_domain", String::new()),
        ("stress", String::new()),
        ("sasl_method", f.sasl_method.unwrap_or("").into()),
        ("sasl_username", f.sasl_user.unwrap_or("").into()),
        ("encryption_protocol", f.tls.map(|t| t.protocol.clone()).unwrap_or_default()),
        ("encryption_cipher", f.tls.map(|t| t.cipher.clone()).unwrap_or_default()),
        ("encryption_keysize", f.tls.map(|t| t.bits.to_string()).unwrap_or_else(|| "0".into())),
    ];
    let mut request = String::new();
    for (name, value) in attrs {
        // A value never holds a line break (addresses and names are checked on input), but
        // the protocol could not carry one: cut it.
        let value = value.split(['\r', '\n']).next().unwrap_or("");
        request.push_str(name);
        request.push('=');
        request.push_str(value);
        request.push('\n');
    }
    request.push('\n');
    (Query::Policy { endpoint: endpoint.to_string(), key }, request)
}

fn helo_query(f: &Facts<'_>) -> Option<Query> {
    let h = f.helo?;
    if h.is_empty() || crate::addr::is_address_literal(h) {
        return None;
    }
    Some(Query::Host(h.trim_end_matches('.').to_ascii_lowercase()))
}

/// The domain of `address` when Postfix would check it: not the null sender, not a domain
/// literal, not a domain we are final destination for.
fn mail_domain(address: &str, env: &Env<'_>) -> Option<String> {
    if address.is_empty() {
        return None;
    }
    let a = Address::parse(address, env.myorigin);
    let d = a.domain_key();
    if d.is_empty() || d.starts_with('[') {
        return None;
    }
    match env.domains.classify(&a) {
        Class::Local | Class::VirtualAlias | Class::VirtualMailbox => None,
        Class::Relay | Class::Remote => Some(d.trim_end_matches('.').to_string()),
    }
}

/// reject_unknown_sender_domain / reject_unknown_recipient_domain, as Postfix words them.
fn unknown_domain(domain: String, kind: AccessKind, detail: &str, f: &Facts<'_>, env: &Env<'_>) -> Decision {
    let prefix = obj_prefix(kind, f);
    let Some(v) = lookup(f, Query::MailDomain(domain.clone()), String::new()) else { return probe_stop() };
    let (code, why) = match v {
        Verdict::NotFound => (env.codes.unknown_address, "Domain not found".to_string()),
        Verdict::Malformed => (env.codes.unknown_address, "Malformed DNS server reply".to_string()),
        Verdict::TempFail => (450, "Domain not found".to_string()),
        Verdict::NullMx => {
            return Decision::Reject(reply(
                556,
                &format!("5.1.10 {prefix}: Domain {domain} does not accept mail (nullMX)"),
            ));
        }
        _ => return Decision::Dunno,
    };
    Decision::Reject(reply(code, &format!("{}.{detail} {prefix}: {why}", code / 100)))
}

/// The name a DNS list restriction looks up under its zone (`None`: nothing to look up).
fn listed_name(listed: ListedName, f: &Facts<'_>, env: &Env<'_>) -> Option<String> {
    let known = |n: &str| (n != "unknown" && !n.is_empty()).then(|| n.trim_end_matches('.').to_ascii_lowercase());
    match listed {
        ListedName::ClientAddr => Some(rpost_dns::dnsbl_prefix(f.client_addr)),
        ListedName::ClientName => known(f.client_name),
        ListedName::ReverseClientName => known(f.client_reverse_name),
        ListedName::Helo => f.helo.filter(|h| !crate::addr::is_address_literal(h)).and_then(known),
        ListedName::SenderDomain => f
            .sender
            .filter(|s| !s.is_empty())
            .map(|s| Address::parse(s, env.myorigin).domain_key())
            .and_then(|d| known(&d)),
        ListedName::RecipientDomain => {
            f.recipient.map(|r| Address::parse(r, env.myorigin).domain_key()).and_then(|d| known(&d))
        }
    }
}

fn sender_login(check: LoginCheck, f: &Facts<'_>, env: &Env<'_>) -> Decision {
    let Some(sender) = f.sender.filter(|s| !s.is_empty()) else { return Decision::Dunno };
    if let Some(broken) = env.sender_login_broken {
        tracing::warn!("smtpd_sender_login_maps {broken}: answering 451");
        return Decision::Reject(temp_failure(&obj_prefix(AccessKind::Sender, f)));
    }
    let key = Address::parse(sender, env.myorigin).full();
    let owners = match rpost_lookup::lookup_access_address(env.sender_login_maps, &key, env.recipient_delimiter) {
        Ok(found) => found.map(|(v, _)| v),
        Err(e) => {
            tracing::warn!("smtpd_sender_login_maps: lookup error for {key}: {e}");
            return Decision::Reject(temp_failure(&obj_prefix(AccessKind::Sender, f)));
        }
    };
    let prefix = obj_prefix(AccessKind::Sender, f);
    match (f.sasl_user, owners) {
        (Some(user), owners) if check.authenticated => {
            let owned = owners.as_deref().is_some_and(|o| {
                o.split(|c: char| c == ',' || c.is_whitespace()).any(|x| x.eq_ignore_ascii_case(user))
            });
            if owned || (owners.is_none() && check.only_known) {
                Decision::Dunno
            } else {
                Decision::Reject(reply(553, &format!("5.7.1 {prefix}: not owned by user {user}")))
            }
        }
        (None, Some(_)) if check.unauthenticated => {
            Decision::Reject(reply(553, &format!("5.7.1 {prefix}: not logged in")))
        }
        _ => Decision::Dunno,
    }
}

/// reject_unlisted_recipient / _sender: the address must be known to the table that owns its
/// domain class.
pub fn unlisted(address: &str, kind: AccessKind, f: &Facts<'_>, env: &Env<'_>) -> Decision {
    let addr = Address::parse(address, env.myorigin);
    match env.domains.is_listed(&addr, env.recipient_delimiter) {
        Ok(crate::addr::Listed::Yes) => Decision::Dunno,
        Ok(crate::addr::Listed::No(table)) => {
            let code = match table {
                crate::addr::Class::Local => env.codes.unknown_local,
                crate::addr::Class::VirtualMailbox => env.codes.unknown_virtual_mailbox,
                crate::addr::Class::VirtualAlias => env.codes.unknown_virtual_alias,
                crate::addr::Class::Relay | crate::addr::Class::Remote => env.codes.unknown_relay,
            };
            Decision::Reject(reply(
                code,
                &format!("5.1.1 {}: User unknown in {}", obj_prefix(kind, f), table.table_name()),
            ))
        }
        Err(e) => {
            tracing::warn!("{address}: recipient table lookup: {e}");
            Decision::Reject(temp_failure(&format!("<{address}>")))
        }
    }
}

fn check_access(
    kind: AccessKind,
    tables: &[Box<dyn Table>],
    spec: &str,
    stage: Stage,
    f: &Facts<'_>,
    env: &Env<'_>,
    depth: usize,
) -> Decision {
    let found = match kind {
        AccessKind::Client => rpost_lookup::lookup_client(tables, f.client_name, f.client_addr),
        AccessKind::Helo => match f.helo {
            Some(h) => rpost_lookup::lookup_domain(tables, h),
            None => return Decision::Dunno,
        },
        AccessKind::Sender | AccessKind::Recipient => {
            let addr = if kind == AccessKind::Sender { f.sender } else { f.recipient };
            let Some(addr) = addr else { return Decision::Dunno };
            // The null sender is looked up as "<>", Postfix's smtpd_null_access_lookup_key.
            let key = if addr.is_empty() { "<>".to_string() } else { Address::parse(addr, env.myorigin).full() };
            rpost_lookup::lookup_access_address(tables, &key, env.recipient_delimiter)
        }
    };
    let value = match found {
        Ok(Some((v, _key))) => v,
        Ok(None) => return Decision::Dunno,
        Err(e) => {
            tracing::warn!("{spec}: lookup error: {e}");
            return Decision::Reject(temp_failure(&obj_prefix(kind, f)));
        }
    };
    access_result(&value, kind, stage, f, env, depth)
}

/// Applies an access(5) result.
fn access_result(value: &str, kind: AccessKind, stage: Stage, f: &Facts<'_>, env: &Env<'_>, depth: usize) -> Decision {
    action_result(value, &obj_prefix(kind, f), stage, f, env, depth)
}

/// An access(5) action (an access table's value or a policy service's `action=`); `prefix`
/// starts a rejection's text (`<addr>: Recipient address rejected`).
fn action_result(value: &str, prefix: &str, stage: Stage, f: &Facts<'_>, env: &Env<'_>, depth: usize) -> Decision {
    let value = value.trim();
    let (word, text) = match value.split_once(char::is_whitespace) {
        Some((w, t)) => (w, t.trim()),
        None => (value, ""),
    };
    let upper = word.to_ascii_uppercase();
    match upper.as_str() {
        "OK" | "PERMIT" => Decision::Permit,
        _ if word.bytes().all(|b| b.is_ascii_digit()) && word.len() != 3 => Decision::Permit,
        "DUNNO" => Decision::Dunno,
        "REJECT" => {
            let text = if text.is_empty() { "Access denied" } else { text };
            Decision::Reject(reply(env.codes.access_reject, &with_prefix(prefix, text)))
        }
        "DEFER" | "DEFER_IF_REJECT" | "DEFER_IF_PERMIT" => {
            let text = if text.is_empty() { "Access denied" } else { text };
            Decision::Reject(reply(env.codes.access_defer, &with_prefix(prefix, text)))
        }
        _ if word.len() == 3 && (word.starts_with('4') || word.starts_with('5')) && word.parse::<u16>().is_ok() => {
            let code = word.parse::<u16>().unwrap_or(554);
            let text = if text.is_empty() { "Access denied" } else { text };
            Decision::Reject(reply(code, &with_prefix(prefix, text)))
        }
        "WARN" | "INFO" => {
            tracing::info!("{}: {} {}", prefix, upper.to_ascii_lowercase(), text);
            Decision::Dunno
        }
        "HOLD" | "DISCARD" | "FILTER" | "REDIRECT" | "PREPEND" | "BCC" => {
            tracing::warn!("access table action {upper} is not supported yet: ignored");
            Decision::Dunno
        }
        _ => {
            // A restriction (list) as the result, as Postfix allows.
            if depth >= MAX_NESTING {
                tracing::warn!("access table result nesting too deep: {value}");
                return Decision::Reject(Reply::new(451, "4.3.5", "Server configuration error"));
            }
            let items: Vec<String> = value
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let list = parse_list(&items);
            eval_depth(&list, stage, f, env, depth + 1)
        }
    }
}

/// Places an enhanced status code from the admin's text before the object prefix.
fn with_prefix(prefix: &str, text: &str) -> String {
    match text.split_once(' ') {
        Some((e, rest)) if is_enhanced(e) => format!("{e} {prefix}: {rest}"),
        _ => format!("{prefix}: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes_in_text_are_recognised() {
        assert!(is_enhanced("5.7.1"));
        assert!(!is_enhanced("5.7"));
        assert!(!is_enhanced("hello"));
        let r = reply(554, "5.7.1 <x>: Relay access denied");
        assert_eq!(r.to_bytes(), b"554 5.7.1 <x>: Relay access denied\r\n");
        let r = reply(450, "<x>: Access denied");
        assert_eq!(r.to_bytes(), b"450 4.7.1 <x>: Access denied\r\n");
        assert_eq!(
            with_prefix("<a>: Sender address rejected", "5.7.0 go away"),
            "5.7.0 <a>: Sender address rejected: go away"
        );
    }

    #[test]
    fn unknown_restrictions_are_kept_for_a_451() {
        let l = parse_list(&[
            "permit_mynetworks".into(),
            "frobnicate".into(),
            "reject_rbl_client".into(),
            "zen.example".into(),
        ]);
        assert!(matches!(l[0], Restriction::PermitMynetworks));
        assert!(matches!(&l[1], Restriction::Unknown(n) if n == "frobnicate"));
        assert!(
            matches!(&l[2], Restriction::DnsList { listed: ListedName::ClientAddr, zone, filter: None, permit: false } if zone == "zen.example")
        );
        assert_eq!(l.len(), 3);
    }
}

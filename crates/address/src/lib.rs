//! rpost-address - addresses and address classes, as Postfix's trivial-rewrite sees them
//!
//! # SUMMARY
//! Address splitting, domain classes, recipient validity, mynetworks. Shared by smtpd (relay
//! control, unknown recipients) and qmgr (which transport delivers a recipient).
//!
//! # DESCRIPTION
//! A recipient domain is local (mydestination, or an address literal of this host), virtual
//! alias, virtual mailbox, relay, or remote, checked in that order. Bare addresses get
//! `@$myorigin`. Whether a recipient is "listed" (known) is decided by the table of its class:
//! local_recipient_maps, virtual_alias_maps, virtual_mailbox_maps (falling back to
//! auth_passdb, rpost's user database, when virtual_mailbox_maps is empty), relay_recipient_maps.
//!
//! # SECURITY
//! Addresses come from the network. Routing operators in the local part (`%`, `!`, `@`)
//! never make an address ours; table failures are errors, never "not found".
//!
//! # CONFIGURATION
//! mydestination, virtual_alias_domains, virtual_mailbox_domains, relay_domains, the
//! recipient maps named above, mynetworks, mynetworks_style, auth_passdb.
//!
//! # STANDARDS
//! RFC 5321 address literals; Postfix ADDRESS_CLASS_README.

use std::net::IpAddr;

use rpost_config::{ConfigError, Params};
use rpost_lookup::{AddressLookup, LookupError, Table};

/// An envelope address split for routing decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub local: String,
    /// As given (case kept, as Postfix keeps it in the envelope); empty only when there is no
    /// myorigin to append. Compare with [`Address::domain_key`].
    pub domain: String,
}

impl Address {
    /// Splits at the last `@`; a bare local part gets `myorigin`.
    pub fn parse(addr: &str, myorigin: &str) -> Address {
        match addr.rsplit_once('@') {
            Some((local, domain)) => Address { local: local.to_string(), domain: normalize_domain(domain) },
            None => Address { local: addr.to_string(), domain: normalize_domain(myorigin) },
        }
    }

    /// The domain in the form domain lists and tables are matched with.
    pub fn domain_key(&self) -> String {
        self.domain.to_ascii_lowercase()
    }

    /// `local@domain` (just `local` when there is no domain).
    pub fn full(&self) -> String {
        if self.domain.is_empty() { self.local.clone() } else { format!("{}@{}", self.local, self.domain) }
    }

    /// Domain in fully-qualified form (or an address literal).
    pub fn has_fqdn_domain(&self) -> bool {
        is_fqdn(&self.domain) || is_address_literal(&self.domain)
    }

    /// Source-routing operators in the local part (`user@other@here`, `user%other@here`,
    /// `other!user@here`): the classic open-relay tricks.
    pub fn has_routing(&self) -> bool {
        self.local.contains(['@', '%', '!'])
    }
}

fn normalize_domain(d: &str) -> String {
    d.trim_end_matches('.').to_string()
}

/// `a.b` form (a trailing dot does not count).
pub fn is_fqdn(name: &str) -> bool {
    let n = name.trim_end_matches('.');
    n.contains('.') && !n.starts_with('.')
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
pub fn is_address_literal(name: &str) -> bool {
    literal_ip(name).is_some()
}

fn literal_ip(name: &str) -> Option<IpAddr> {
    let inner = name.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.strip_prefix("IPv6:").or_else(|| inner.strip_prefix("ipv6:")).unwrap_or(inner);
    inner.parse().ok()
}

/// RFC 1035 host name syntax (letters, digits, hyphens; underscores tolerated as Postfix does).
pub fn is_valid_hostname(name: &str) -> bool {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() || n.len() > 255 {
        return false;
    }
    let labels: Vec<&str> = n.split('.').collect();
    if labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return false; // all-numeric top-level label: an IP address in disguise
    }
    labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A domain class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Local,
    VirtualAlias,
    VirtualMailbox,
    Relay,
    Remote,
}

impl Class {
    /// The table named in "User unknown in ..." replies.
    pub fn table_name(self) -> &'static str {
        match self {
            Class::Local => "local recipient table",
            Class::VirtualAlias => "virtual alias table",
            Class::VirtualMailbox => "virtual mailbox table",
            Class::Relay | Class::Remote => "relay recipient table",
        }
    }
}

/// Is an address known to the table of its class?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Yes,
    No(Class),
}

/// A Postfix domain list: names, `type:table` lookups keyed by domain, or `/file` of names.
#[derive(Debug, Default)]
pub struct DomainList {
    names: Vec<String>,
    tables: Vec<Box<dyn Table>>,
}

impl DomainList {
    fn parse(items: &[String], what: &str) -> DomainList {
        let mut list = DomainList::default();
        for item in items {
            if item.starts_with('/') {
                match std::fs::read_to_string(item) {
                    Ok(text) => list.names.extend(
                        text.lines()
                            .map(|l| l.split('#').next().unwrap_or("").trim())
                            .filter(|l| !l.is_empty())
                            .flat_map(|l| l.split([',', ' ', '\t']))
                            .filter(|l| !l.is_empty())
                            .map(|d| normalize_domain(d).to_ascii_lowercase()),
                    ),
                    Err(e) => tracing::warn!("{what}: {item}: {e}"),
                }
            } else if item.contains(':') && !item.starts_with('[') {
                match open_table(item) {
                    Ok(t) => list.tables.push(t),
                    Err(e) => tracing::warn!("{what}: {item}: {e}"),
                }
            } else {
                list.names.push(normalize_domain(item).to_ascii_lowercase());
            }
        }
        list
    }

    /// Whether `domain` (lower case) is listed. Table errors count as "not listed" after a
    /// warning; the recipient checks then fail safe (reject_unauth_destination).
    pub fn contains(&self, domain: &str) -> bool {
        self.names.iter().any(|n| n == domain)
            || self.tables.iter().any(|t| match t.lookup(domain) {
                Ok(found) => found.is_some(),
                Err(e) => {
                    tracing::warn!("{}: lookup {domain}: {e}", t.spec());
                    false
                }
            })
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.tables.is_empty()
    }
}

/// The address classes and their recipient tables.
#[derive(Debug, Default)]
pub struct Domains {
    pub local: DomainList,
    pub virtual_alias: DomainList,
    pub virtual_mailbox: DomainList,
    pub relay: DomainList,
    pub local_maps: Maps,
    pub virtual_alias_maps: Maps,
    pub virtual_mailbox_maps: Maps,
    pub relay_recipient_maps: Maps,
}

/// Recipient tables of one class. A table that failed to open makes every lookup in the
/// class a temporary failure (as Postfix's "table is unavailable"), never a pass.
#[derive(Debug, Default)]
pub struct Maps {
    pub tables: Vec<Box<dyn Table>>,
    pub broken: Option<String>,
}

impl Maps {
    fn open(params: &Params, name: &str) -> Result<Maps, ConfigError> {
        let mut maps = Maps::default();
        for spec in params.get_list(name)? {
            maps.add(name, &spec);
        }
        Ok(maps)
    }

    fn add(&mut self, name: &str, spec: &str) {
        match open_table(spec) {
            Ok(t) => self.tables.push(t),
            Err(e) => {
                tracing::warn!("{name}: {spec} is unavailable: {e}");
                self.broken = Some(format!("{name}: {spec}: {e}"));
            }
        }
    }

    /// No table configured (broken ones count as configured).
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.broken.is_none()
    }
}

impl Domains {
    /// Reads the address-class parameters and opens their tables.
    pub fn from_params(params: &Params) -> Result<Domains, ConfigError> {
        let mut virtual_mailbox_maps = Maps::open(params, "virtual_mailbox_maps")?;
        if virtual_mailbox_maps.is_empty() {
            // rpost keeps virtual users in its own passdb: that is the mailbox table then.
            let passdb = params.get("auth_passdb")?;
            if !passdb.is_empty() && !passdb.starts_with("static:") {
                virtual_mailbox_maps.add("auth_passdb", &passdb);
            }
        }
        Ok(Domains {
            local: DomainList::parse(&params.get_list("mydestination")?, "mydestination"),
            virtual_alias: DomainList::parse(&params.get_list("virtual_alias_domains")?, "virtual_alias_domains"),
            virtual_mailbox: DomainList::parse(&params.get_list("virtual_mailbox_domains")?, "virtual_mailbox_domains"),
            relay: DomainList::parse(&params.get_list("relay_domains")?, "relay_domains"),
            local_maps: Maps::open(params, "local_recipient_maps")?,
            virtual_alias_maps: Maps::open(params, "virtual_alias_maps")?,
            virtual_mailbox_maps,
            relay_recipient_maps: Maps::open(params, "relay_recipient_maps")?,
        })
    }

    /// The class of an address's domain.
    pub fn classify(&self, addr: &Address) -> Class {
        let key = addr.domain_key();
        let d = key.as_str();
        if self.local.contains(d) || literal_ip(d).is_some_and(is_local_ip) {
            Class::Local
        } else if self.virtual_alias.contains(d) {
            Class::VirtualAlias
        } else if self.virtual_mailbox.contains(d) {
            Class::VirtualMailbox
        } else if self.relay.contains(d) {
            Class::Relay
        } else {
            Class::Remote
        }
    }

    /// permit_auth_destination: mail to a domain we are responsible for, without routing tricks.
    pub fn authorized_destination(&self, addr: &Address) -> bool {
        !addr.has_routing() && self.classify(addr) != Class::Remote
    }

    /// reject_unlisted_recipient: is the address known to its class's table?
    pub fn is_listed(&self, addr: &Address, delimiter: &str) -> Result<Listed, LookupError> {
        let class = self.classify(addr);
        let key = addr.full();
        let found = |maps: &Maps, localpart: bool, domain: bool| -> Result<bool, LookupError> {
            if let Some(broken) = &maps.broken {
                return Err(LookupError::Unavailable(broken.clone()));
            }
            let opts = AddressLookup {
                recipient_delimiter: delimiter.to_string(),
                try_localpart: localpart,
                try_domain: domain,
            };
            Ok(rpost_lookup::lookup_address(&maps.tables, &key, &opts)?.is_some())
        };
        // Any class: an alias (or an @domain catch-all) makes the address valid.
        if !self.virtual_alias_maps.is_empty() && found(&self.virtual_alias_maps, class == Class::Local, true)? {
            return Ok(Listed::Yes);
        }
        let (maps, localpart) = match class {
            Class::Local => (&self.local_maps, true),
            Class::VirtualAlias => return Ok(Listed::No(Class::VirtualAlias)),
            Class::VirtualMailbox => (&self.virtual_mailbox_maps, false),
            Class::Relay => (&self.relay_recipient_maps, false),
            Class::Remote => return Ok(Listed::Yes),
        };
        if maps.is_empty() || found(maps, localpart, false)? { Ok(Listed::Yes) } else { Ok(Listed::No(class)) }
    }
}

/// An address of this host (bindable here).
fn is_local_ip(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The `mynetworks` Postfix derives when it is not set, from `mynetworks_style` and this
/// host's interfaces: `host` (each address alone), `subnet` (each interface's subnet) or
/// `class` (the class A/B/C network of each IPv4 address; subnets for IPv6).
pub fn mynetworks_from_style(style: &str) -> Vec<String> {
    let mut out = vec!["127.0.0.0/8".to_string(), "[::1]/128".to_string()];
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return out };
    for ifa in addrs {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else { continue };
        let (ip, prefix): (IpAddr, u32) = if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            (IpAddr::V4(a.ip()), u32::from(m.ip()).count_ones())
        } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            (IpAddr::V6(a.ip()), u128::from(m.ip()).count_ones())
        } else {
            continue;
        };
        if ip.is_loopback() {
            continue;
        }
        let prefix = match (style, ip) {
            ("subnet", _) => prefix,
            ("class", IpAddr::V4(v4)) => match v4.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            },
            ("class", IpAddr::V6(_)) => prefix,
            _ => {
                if style != "host" {
                    tracing::warn!("mynetworks_style = {style}: unknown style, using host");
                }
                if ip.is_ipv4() { 32 } else { 128 }
            }
        };
        let net = network(ip, prefix);
        out.push(match net {
            IpAddr::V4(n) => format!("{n}/{prefix}"),
            IpAddr::V6(n) => format!("[{n}]/{prefix}"),
        });
    }
    out.dedup();
    out
}

fn network(ip: IpAddr, prefix: u32) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix.min(32)) };
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix.min(128)) };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// Opens a table for smtpd, saying so when its indexed file is older than its source
/// (Postfix: "database X.db is older than source file X").
pub fn open_table(spec: &str) -> Result<Box<dyn Table>, LookupError> {
    let t = rpost_lookup::open(spec)?;
    if let Some(w) = t.stale() {
        tracing::warn!("{w}");
    }
    for w in t.warnings() {
        tracing::warn!("{spec}: {w}");
    }
    Ok(t)
}

/// mynetworks: CIDR blocks, `!` exceptions, and `type:table` client lookups.
#[derive(Debug, Default)]
pub struct NetList {
    nets: Vec<(bool, rpost_lookup::cidr::Cidr)>,
    tables: Vec<Box<dyn Table>>,
}

impl NetList {
    pub fn parse(items: &[String]) -> NetList {
        let mut list = NetList::default();
        for item in items {
            let (negate, spec) = match item.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, item.as_str()),
            };
            if spec.contains(':') && !spec.starts_with('[') && spec.parse::<IpAddr>().is_err() {
                match open_table(spec) {
                    Ok(t) => list.tables.push(t),
                    Err(e) => tracing::warn!("mynetworks: {spec}: {e}"),
                }
                continue;
            }
            match rpost_lookup::cidr::Cidr::parse(spec) {
                Ok(c) => list.nets.push((negate, c)),
                Err(e) => tracing::warn!("mynetworks: {spec}: {e}"),
            }
        }
        list
    }

    /// First match wins; a `!` match means "not in mynetworks".
    pub fn contains(&self, ip: IpAddr) -> bool {
        for (negate, net) in &self.nets {
            if net.contains(ip) {
                return !negate;
            }
        }
        self.tables.iter().any(|t| matches!(t.lookup(&ip.to_string()), Ok(Some(v)) if !v.eq_ignore_ascii_case("DUNNO")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        let a = Address::parse("Root", "Mail.Example.TEST");
        assert_eq!(a.full(), "Root@Mail.Example.TEST", "case is kept in the envelope");
        let a = Address::parse("user@Example.COM.", "x");
        assert_eq!(a.domain_key(), "example.com");
        assert!(Address::parse("a%b@c.d", "").has_routing());
        assert!(Address::parse("a@b@c.d", "").has_routing());
        assert!(!Address::parse("a.b+c@c.d", "").has_routing());
    }

    #[test]
    fn hostnames() {
        assert!(is_valid_hostname("mail.example.com"));
        assert!(is_valid_hostname("localhost"));
        assert!(!is_valid_hostname("bad..name"));
        assert!(!is_valid_hostname("-x.example"));
        assert!(!is_valid_hostname("1.2.3.4"));
        assert!(!is_valid_hostname("has space"));
        assert!(is_fqdn("a.b"));
        assert!(!is_fqdn("localhost"));
        assert!(is_address_literal("[127.0.0.1]"));
        assert!(is_address_literal("[IPv6:::1]"));
        assert!(!is_address_literal("[nonsense]"));
    }

    #[test]
    fn classes_in_postfix_order() {
        let mut p = Params::empty();
        p.set("myhostname", "mail.example.test");
        p.set("mydestination", "$myhostname, localhost");
        p.set("virtual_mailbox_domains", "example.test");
        p.set("relay_domains", "relay.test");
        p.set("local_recipient_maps", "");
        let d = Domains::from_params(&p).unwrap();
        let c = |a: &str| d.classify(&Address::parse(a, "mail.example.test"));
        assert_eq!(c("root"), Class::Local);
        assert_eq!(c("x@LOCALHOST"), Class::Local);
        assert_eq!(c("x@[127.0.0.1]"), Class::Local);
        assert_eq!(c("x@example.test"), Class::VirtualMailbox);
        assert_eq!(c("x@relay.test"), Class::Relay);
        assert_eq!(c("x@elsewhere.test"), Class::Remote);
        assert!(!d.authorized_destination(&Address::parse("x%elsewhere.test@example.test", "")));
    }

    #[test]
    fn mynetworks_styles() {
        let host = mynetworks_from_style("host");
        assert_eq!(&host[..2], ["127.0.0.0/8", "[::1]/128"]);
        assert!(host[2..].iter().all(|n| n.ends_with("/32") || n.ends_with("/128")), "{host:?}");
        assert_eq!(network("192.168.7.9".parse().unwrap(), 16), "192.168.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(network("2001:db8::1".parse().unwrap(), 32), "2001:db8::".parse::<IpAddr>().unwrap());
        for n in mynetworks_from_style("subnet").iter().chain(&mynetworks_from_style("class")) {
            assert!(NetList::parse(std::slice::from_ref(n)).nets.len() == 1, "{n} must parse");
        }
    }

    #[test]
    fn mynetworks_with_exceptions() {
        let n = NetList::parse(&["!127.0.0.2".into(), "127.0.0.0/8".into(), "[::1]/128".into()]);
        assert!(n.contains("127.0.0.1".parse().unwrap()));
        assert!(!n.contains("127.0.0.2".parse().unwrap()));
        assert!(n.contains("::1".parse().unwrap()));
        assert!(!n.contains("192.0.2.1".parse().unwrap()));
    }
}

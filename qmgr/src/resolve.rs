//! Which transport delivers a recipient, and to which next hop (Postfix's trivial-rewrite
//! "resolve" service, as a library).
//!
//! transport_maps first (full address, then domain, then `.parent` domains); otherwise by
//! address class: local -> local_transport, virtual mailbox -> virtual_transport, relay ->
//! relay_transport, anything else -> default_transport. A transport is `name[:nexthop]`; an
//! empty next hop means relayhost (when set) for relay/default, else the recipient domain.

use rpost_address::{Address, Class, Domains};
use rpost_config::{ConfigError, Params};
use rpost_lookup::Table;

/// Where a recipient goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    /// master.cf service that delivers (`smtp`, `lmtp`, `relay`, `local`, ...).
    pub transport: String,
    pub nexthop: String,
}

/// A recipient that cannot be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unroutable {
    /// Permanent (bounce) or not (defer).
    pub permanent: bool,
    pub dsn: &'static str,
    pub reason: String,
}

/// The routing configuration.
#[derive(Debug)]
pub struct Resolver {
    domains: Domains,
    myorigin: String,
    local_transport: String,
    virtual_transport: String,
    relay_transport: String,
    default_transport: String,
    relayhost: String,
    transport_maps: Vec<Box<dyn Table>>,
}

/// Splits `name:nexthop` (the next hop itself may contain colons: `lmtp:unix:private/x`).
pub fn split_transport(spec: &str) -> (String, String) {
    match spec.split_once(':') {
        Some((t, n)) => (t.trim().to_string(), n.trim().to_string()),
        None => (spec.trim().to_string(), String::new()),
    }
}

impl Resolver {
    pub fn from_params(p: &Params) -> Result<Resolver, ConfigError> {
        let mut transport_maps = Vec::new();
        for spec in p.get_list("transport_maps")? {
            match rpost_address::open_table(&spec) {
                Ok(t) => transport_maps.push(t),
                Err(e) => tracing::warn!("transport_maps: {spec}: {e}"),
            }
        }
        Ok(Resolver {
            domains: Domains::from_params(p)?,
            myorigin: p.get("myorigin")?,
            local_transport: p.get("local_transport")?,
            virtual_transport: p.get("virtual_transport")?,
            relay_transport: p.get("relay_transport")?,
            default_transport: p.get("default_transport")?,
            relayhost: p.get("relayhost")?,
            transport_maps,
        })
    }

    fn transport_map(&self, addr: &Address) -> Result<Option<String>, Unroutable> {
        if self.transport_maps.is_empty() {
            return Ok(None);
        }
        let domain = addr.domain_key();
        let mut keys = vec![addr.full().to_ascii_lowercase(), domain.clone()];
        let mut rest = domain.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            keys.push(format!(".{parent}"));
            rest = parent;
        }
        for t in &self.transport_maps {
            for k in &keys {
                match t.lookup(k) {
                    Ok(Some(v)) => return Ok(Some(v)),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(Unroutable {
                            permanent: false,
                            dsn: "4.3.0",
                            reason: format!("transport_maps lookup failure: {e}"),
                        });
                    }
                }
            }
        }
        Ok(None)
    }

    /// Whether `recipient` is `local_part` at a local domain (mydestination), compared
    /// without regard to case, as Postfix matches the double-bounce address.
    pub fn is_local_address(&self, recipient: &str, local_part: &str) -> bool {
        let addr = Address::parse(recipient, &self.myorigin);
        addr.local.eq_ignore_ascii_case(local_part) && self.domains.classify(&addr) == Class::Local
    }

    /// Routes one recipient.
    pub fn resolve(&self, recipient: &str) -> Result<Route, Unroutable> {
        let addr = Address::parse(recipient, &self.myorigin);
        let class = self.domains.classify(&addr);
        let (base, relay_like) = match class {
            Class::Local => (self.local_transport.as_str(), false),
            Class::VirtualMailbox => (self.virtual_transport.as_str(), false),
            Class::Relay => (self.relay_transport.as_str(), true),
            Class::Remote => (self.default_transport.as_str(), true),
            // smtpd expands aliases before the queue; what is left here has no alias.
            Class::VirtualAlias => {
                return Err(Unroutable {
                    permanent: true,
                    dsn: "5.1.1",
                    reason: format!("<{recipient}>: User unknown in virtual alias table"),
                });
            }
        };
        let (mut transport, mut nexthop) = split_transport(base);
        if let Some(over) = self.transport_map(&addr)? {
            let (t, n) = split_transport(&over);
            if !t.is_empty() {
                transport = t;
            }
            if !n.is_empty() {
                nexthop = n;
            }
        }
        if nexthop.is_empty() {
            nexthop = if relay_like && !self.relayhost.is_empty() { self.relayhost.clone() } else { addr.domain_key() };
        }
        Ok(Route { transport, nexthop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(extra: &[(&str, &str)]) -> Resolver {
        let mut p = Params::empty();
        for (k, v) in [
            ("myhostname", "mail.example.test"),
            ("mydestination", "$myhostname, localhost"),
            ("virtual_mailbox_domains", "example.test"),
            ("relay_domains", "relay.test"),
            ("local_recipient_maps", ""),
            ("alias_maps", ""),
        ] {
            p.set(k, v);
        }
        for (k, v) in extra {
            p.set(k, v);
        }
        Resolver::from_params(&p).unwrap()
    }

    fn route(t: &str, n: &str) -> Route {
        Route { transport: t.into(), nexthop: n.into() }
    }

    #[test]
    fn classes_pick_their_transports() {
        let r = resolver(&[]);
        assert_eq!(r.resolve("root").unwrap(), route("local", "mail.example.test"));
        assert_eq!(r.resolve("alice@Example.TEST").unwrap(), route("lmtp", "unix:private/lmtp-deliver"));
        assert_eq!(r.resolve("x@relay.test").unwrap(), route("relay", "relay.test"));
        assert_eq!(r.resolve("x@elsewhere.test").unwrap(), route("smtp", "elsewhere.test"));
        assert!(r.is_local_address("Double-Bounce@mail.example.test", "double-bounce"));
        assert!(r.is_local_address("double-bounce", "double-bounce"));
        assert!(!r.is_local_address("double-bounce@elsewhere.test", "double-bounce"));
    }

    #[test]
    fn relayhost_and_transport_maps() {
        let r = resolver(&[
            ("relayhost", "[smarthost.test]:587"),
            ("transport_maps", "inline:{ special.test=smtp:[10.0.0.1]:2525, .sub.test=lmtp: }"),
        ]);
        assert_eq!(r.resolve("x@elsewhere.test").unwrap(), route("smtp", "[smarthost.test]:587"));
        assert_eq!(r.resolve("x@special.test").unwrap(), route("smtp", "[10.0.0.1]:2525"));
        assert_eq!(r.resolve("x@a.sub.test").unwrap(), route("lmtp", "[smarthost.test]:587"));
    }

    #[test]
    fn transport_specs() {
        assert_eq!(split_transport("lmtp:unix:private/x"), ("lmtp".into(), "unix:private/x".into()));
        assert_eq!(split_transport("smtp"), ("smtp".into(), String::new()));
    }
}

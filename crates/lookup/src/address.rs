//! Postfix multi-key lookups: addresses (virtual(5), access(5)), domains
//! with their parents, and client host name/address.
//!
//! Each function builds the Postfix key sequence, then asks every table for
//! the first key before any table for the next one. Keys marked partial
//! (all but the first, usually) go only to fixed-string tables
//! ([`Table::address_keys`]), as Postfix's DICT_FLAG_FIXED does: a regexp
//! table sees `user+ext@domain` once, never `@domain`.

use std::net::IpAddr;

use crate::{LookupError, Table};

/// How [`lookup_address`] forms its keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressLookup {
    /// `recipient_delimiter`: each character delimits an extension; empty =
    /// no extensions.
    pub recipient_delimiter: String,
    /// Also try the bare local part (`user+ext`, then `user`). Postfix does
    /// this only when the domain is local (`$myorigin`, `$mydestination`,
    /// `$inet_interfaces`); the caller decides.
    pub try_localpart: bool,
    /// Also try the catch-all `@domain` (last).
    pub try_domain: bool,
}

impl AddressLookup {
    /// Options from main.cf: `recipient_delimiter`, no local-part keys,
    /// `@domain` on.
    pub fn from_params(params: &rpost_config::Params) -> Result<AddressLookup, LookupError> {
        Ok(AddressLookup {
            recipient_delimiter: params.get("recipient_delimiter")?,
            try_localpart: false,
            try_domain: true,
        })
    }
}

/// Splits a local part at the first recipient delimiter character:
/// `user+foo` → (`user`, Some(`+foo`)), the extension keeping its
/// delimiter. Like Postfix's split_addr(), never splits `postmaster`,
/// `MAILER-DAEMON`, `double-bounce`, and, when `-` is a delimiter,
/// `owner-*` and `*-request` (mailing list conventions); nor when the
/// delimiter is the first character (no user name left).
pub fn split_extension<'a>(localpart: &'a str, delimiters: &str) -> (&'a str, Option<&'a str>) {
    if delimiters.is_empty() {
        return (localpart, None);
    }
    let lower = localpart.to_ascii_lowercase();
    if ["postmaster", "mailer-daemon", "double-bounce"].contains(&lower.as_str()) {
        return (localpart, None);
    }
    if delimiters.contains('-') && (lower.starts_with("owner-") || (lower.len() > 8 && lower.ends_with("-request"))) {
        return (localpart, None);
    }
    match localpart.find(|c| delimiters.contains(c)) {
        Some(i) if i > 0 => (&localpart[..i], Some(&localpart[i..])),
        _ => (localpart, None),
    }
}

/// Tries `keys` (key, partial) in order against all tables.
fn lookup_keys(tables: &[Box<dyn Table>], keys: &[(String, bool)]) -> Result<Option<(String, String)>, LookupError> {
    for (key, partial) in keys {
        for table in tables {
            if *partial && !table.address_keys() {
                continue;
            }
            if let Some(value) = table.lookup(key)? {
                return Ok(Some((value, key.clone())));
            }
        }
    }
    Ok(None)
}

/// Splits at the last `@`: (local part, domain).
fn split_at(address: &str) -> (&str, Option<&str>) {
    match address.rfind('@') {
        Some(i) => (&address[..i], Some(&address[i + 1..])),
        None => (address, None),
    }
}

/// virtual(5)/canonical(5) lookup. For `user+ext@domain` the keys are:
/// `user+ext@domain`, `user@domain`, then with `try_localpart` `user+ext`
/// and `user`, then with `try_domain` `@domain`. An address without `@`
/// tries `user+ext`, then `user`. Returns (value, matched key).
pub fn lookup_address(
    tables: &[Box<dyn Table>],
    address: &str,
    opts: &AddressLookup,
) -> Result<Option<(String, String)>, LookupError> {
    let (local, domain) = split_at(address);
    let (base, ext) = split_extension(local, &opts.recipient_delimiter);
    let mut keys = vec![(address.to_string(), false)];
    match domain {
        Some(domain) => {
            if ext.is_some() {
                keys.push((format!("{base}@{domain}"), true));
            }
            if opts.try_localpart {
                keys.push((local.to_string(), true));
                if ext.is_some() {
                    keys.push((base.to_string(), true));
                }
            }
            if opts.try_domain {
                keys.push((format!("@{domain}"), true));
            }
        }
        None if ext.is_some() => keys.push((base.to_string(), true)),
        None => {}
    }
    lookup_keys(tables, &keys)
}

/// Keys for a domain and its parents: `a.example.com`, then
/// `example.com`, `com` (`parent_matches_subdomains`) or `.example.com`,
/// `.com` (otherwise). The first key is partial when `first_partial`.
fn domain_keys(domain: &str, parent_matches_subdomains: bool, first_partial: bool, keys: &mut Vec<(String, bool)>) {
    if domain.is_empty() {
        return;
    }
    keys.push((domain.to_string(), first_partial));
    // An address literal has no parents.
    if domain.starts_with('[') {
        return;
    }
    let mut rest = domain;
    // Byte search: '.' is ASCII, so every index found is a char boundary.
    while let Some(dot) = rest.as_bytes().iter().skip(1).position(|&b| b == b'.').map(|i| i + 1) {
        let parent = &rest[dot..];
        rest = parent;
        let key = if parent_matches_subdomains { &parent[1..] } else { parent };
        if !key.is_empty() && key != "." {
            keys.push((key.to_string(), true));
        }
    }
}

/// access(5) host or domain lookup: the name itself (all tables), then its
/// parent domains `example.com`, `com` (fixed-string tables), as Postfix
/// does for smtpd access maps with the default
/// `parent_domain_matches_subdomains`. See [`lookup_domain_with`].
pub fn lookup_domain(tables: &[Box<dyn Table>], domain: &str) -> Result<Option<(String, String)>, LookupError> {
    lookup_domain_with(tables, domain, true)
}

/// [`lookup_domain`] with the parent style chosen: `parent_matches_subdomains`
/// says whether the caller's class (`smtpd_access_maps`, ...) is listed in
/// `parent_domain_matches_subdomains`. If so the parents of
/// `a.example.com` are `example.com`, `com`; otherwise `.example.com`, `.com`.
pub fn lookup_domain_with(
    tables: &[Box<dyn Table>],
    domain: &str,
    parent_matches_subdomains: bool,
) -> Result<Option<(String, String)>, LookupError> {
    let mut keys = Vec::new();
    domain_keys(domain, parent_matches_subdomains, false, &mut keys);
    lookup_keys(tables, &keys)
}

/// access(5) lookup for check_sender_access/check_recipient_access:
/// `user+ext@domain`, `user@domain`, the domain and its parents (see
/// [`lookup_domain`]), `user+ext@`, `user@`. Only the first key goes to
/// pattern tables.
pub fn lookup_access_address(
    tables: &[Box<dyn Table>],
    address: &str,
    recipient_delimiter: &str,
) -> Result<Option<(String, String)>, LookupError> {
    lookup_access_address_with(tables, address, recipient_delimiter, true)
}

/// [`lookup_access_address`] with the parent style of [`lookup_domain_with`].
pub fn lookup_access_address_with(
    tables: &[Box<dyn Table>],
    address: &str,
    recipient_delimiter: &str,
    parent_matches_subdomains: bool,
) -> Result<Option<(String, String)>, LookupError> {
    let (local, domain) = split_at(address);
    let (base, ext) = split_extension(local, recipient_delimiter);
    let mut keys = vec![(address.to_string(), false)];
    if let Some(domain) = domain {
        if ext.is_some() {
            keys.push((format!("{base}@{domain}"), true));
        }
        domain_keys(domain, parent_matches_subdomains, true, &mut keys);
    }
    if !local.is_empty() {
        keys.push((format!("{local}@"), true));
        if ext.is_some() {
            keys.push((format!("{base}@"), true));
        }
    }
    lookup_keys(tables, &keys)
}

/// access(5) lookup for check_client_access: the host name and its parent
/// domains, then the address and its prefixes (`192.0.2.7`, `192.0.2`,
/// `192.0`, `192`; IPv6 is cut at `:` the same way). The full name and the
/// full address go to every table (so `cidr:` sees the address); the
/// shorter keys only to fixed-string tables. An empty host name is skipped.
/// An IPv4-mapped IPv6 address is looked up as IPv4, as Postfix's smtpd
/// normalizes it. Parent domains as in [`lookup_domain`]; see
/// [`lookup_client_with`].
pub fn lookup_client(
    tables: &[Box<dyn Table>],
    hostname: &str,
    addr: IpAddr,
) -> Result<Option<(String, String)>, LookupError> {
    lookup_client_with(tables, hostname, addr, true)
}

/// [`lookup_client`] with the parent style of [`lookup_domain_with`].
pub fn lookup_client_with(
    tables: &[Box<dyn Table>],
    hostname: &str,
    addr: IpAddr,
    parent_matches_subdomains: bool,
) -> Result<Option<(String, String)>, LookupError> {
    let mut keys = Vec::new();
    domain_keys(hostname, parent_matches_subdomains, false, &mut keys);
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    let addr = addr.to_string();
    let delim = if addr.contains(':') { ':' } else { '.' };
    let mut prefix = addr.as_str();
    let mut partial = false;
    while !prefix.is_empty() {
        keys.push((prefix.to_string(), partial));
        partial = true;
        match prefix.rfind(delim) {
            Some(i) => prefix = &prefix[..i],
            None => break,
        }
    }
    lookup_keys(tables, &keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open;
    use crate::testutil::Dir;
    use std::sync::{Arc, Mutex};

    /// A table that records every key it is asked and never matches, so
    /// tests can see the exact key sequence.
    #[derive(Debug)]
    struct Recorder {
        keys: Arc<Mutex<Vec<String>>>,
        fixed: bool,
    }

    impl Table for Recorder {
        fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
            self.keys.lock().unwrap().push(key.to_string());
            Ok(None)
        }
        fn spec(&self) -> &str {
            "recorder:"
        }
        fn address_keys(&self) -> bool {
            self.fixed
        }
    }

    fn recorded(fixed: bool, run: impl FnOnce(&[Box<dyn Table>])) -> Vec<String> {
        let keys = Arc::new(Mutex::new(Vec::new()));
        let tables: Vec<Box<dyn Table>> = vec![Box::new(Recorder { keys: keys.clone(), fixed })];
        run(&tables);
        keys.lock().unwrap().clone()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn opts(delim: &str, local: bool, domain: bool) -> AddressLookup {
        AddressLookup { recipient_delimiter: delim.to_string(), try_localpart: local, try_domain: domain }
    }

    #[test]
    fn extension_splitting() {
        let cases = [
            ("user+foo", "+", ("user", Some("+foo"))),
            ("user+foo+bar", "+", ("user", Some("+foo+bar"))),
            ("user-foo+bar", "+-", ("user", Some("-foo+bar"))),
            ("user", "+", ("user", None)),
            ("+foo", "+", ("+foo", None)),
            ("user+foo", "", ("user+foo", None)),
            ("owner-list", "-", ("owner-list", None)),
            ("list-request", "+-", ("list-request", None)),
            ("owner+x", "+", ("owner", Some("+x"))),
            ("Postmaster", "+-", ("Postmaster", None)),
            ("MAILER-DAEMON", "-", ("MAILER-DAEMON", None)),
            ("-request", "-", ("-request", None)),
        ];
        for (local, delim, want) in cases {
            assert_eq!(split_extension(local, delim), want, "{local} {delim}");
        }
    }

    #[test]
    fn address_key_order() {
        let cases: [(&str, AddressLookup, &[&str]); 6] = [
            (
                "user+ext@example.com",
                opts("+", true, true),
                &["user+ext@example.com", "user@example.com", "user+ext", "user", "@example.com"],
            ),
            (
                "user+ext@example.com",
                opts("+", false, true),
                &["user+ext@example.com", "user@example.com", "@example.com"],
            ),
            ("user-ext@example.com", opts("+-", false, false), &["user-ext@example.com", "user@example.com"]),
            ("user+ext@example.com", opts("", true, true), &["user+ext@example.com", "user+ext", "@example.com"]),
            ("user@example.com", opts("+", true, true), &["user@example.com", "user", "@example.com"]),
            ("user+ext", opts("+", true, true), &["user+ext", "user"]),
        ];
        for (address, o, want) in cases {
            let got = recorded(true, |t| assert!(lookup_address(t, address, &o).unwrap().is_none()));
            assert_eq!(got, want, "{address} {o:?}");
            let got = recorded(false, |t| assert!(lookup_address(t, address, &o).unwrap().is_none()));
            assert_eq!(got, [address], "pattern tables see the full address once");
        }
    }

    #[test]
    fn access_key_orders() {
        let got = recorded(true, |t| {
            lookup_access_address(t, "user+ext@mail.example.com", "+").unwrap();
        });
        let want = [
            "user+ext@mail.example.com",
            "user@mail.example.com",
            "mail.example.com",
            "example.com",
            "com",
            "user+ext@",
            "user@",
        ];
        assert_eq!(got, want);
        let got = recorded(true, |t| {
            lookup_access_address_with(t, "user@example.com", "+", false).unwrap();
        });
        assert_eq!(got, ["user@example.com", "example.com", ".com", "user@"]);
        let got = recorded(true, |t| {
            lookup_access_address(t, "@example.com", "+").unwrap();
        });
        assert_eq!(got, ["@example.com", "example.com", "com"]);

        let got = recorded(true, |t| {
            lookup_domain_with(t, "a.b.example.com", false).unwrap();
        });
        assert_eq!(got, ["a.b.example.com", ".b.example.com", ".example.com", ".com"]);
        let got = recorded(false, |t| {
            lookup_domain(t, "a.b.example.com").unwrap();
        });
        assert_eq!(got, ["a.b.example.com"]);
        let got = recorded(true, |t| {
            lookup_domain(t, "\u{e9}.\u{fc}.example").unwrap();
        });
        assert_eq!(got, ["\u{e9}.\u{fc}.example", "\u{fc}.example", "example"]);
        let got = recorded(true, |t| {
            lookup_domain_with(t, "example.com.", false).unwrap();
        });
        assert_eq!(got, ["example.com.", ".com."]);
        let got = recorded(true, |t| {
            lookup_domain(t, "[192.0.2.1]").unwrap();
        });
        assert_eq!(got, ["[192.0.2.1]"]);

        let got = recorded(true, |t| {
            lookup_client(t, "mx.example.com", ip("192.0.2.7")).unwrap();
        });
        assert_eq!(got, ["mx.example.com", "example.com", "com", "192.0.2.7", "192.0.2", "192.0", "192"]);
        let got = recorded(true, |t| {
            lookup_client_with(t, "", ip("2001:DB8::1"), false).unwrap();
        });
        assert_eq!(got, ["2001:db8::1", "2001:db8:", "2001:db8", "2001"]);
        let got = recorded(true, |t| {
            lookup_client(t, "", ip("::ffff:192.0.2.9")).unwrap();
        });
        assert_eq!(got, ["192.0.2.9", "192.0.2", "192.0", "192"]);
        let got = recorded(false, |t| {
            lookup_client(t, "mx.example.com", ip("192.0.2.7")).unwrap();
        });
        assert_eq!(got, ["mx.example.com", "192.0.2.7"]);
    }

    #[test]
    fn first_match_keys_outer_tables_inner() {
        let dir = Dir::new();
        let re = dir.write("re", "/^user@/ regexp-hit\n");
        let tables = crate::open_list(&[
            "inline:{ @example.com=catchall, user=local }".to_string(),
            format!("regexp:{}", re.display()),
            "inline:{ user@example.com=exact }".to_string(),
        ])
        .unwrap();
        let o = opts("+", true, true);
        let hit = |a: &str| lookup_address(&tables, a, &o).unwrap();
        assert_eq!(hit("user@example.com"), Some(("regexp-hit".into(), "user@example.com".into())));
        // user@example.com in table 3 beats the earlier tables' shorter keys.
        assert_eq!(hit("user+x@example.com"), Some(("exact".into(), "user@example.com".into())));
        assert_eq!(hit("other@example.com"), Some(("catchall".into(), "@example.com".into())));
        assert_eq!(hit("other@example.org"), None);
        let o = opts("+", false, false);
        assert_eq!(lookup_address(&tables, "USER+x@EXAMPLE.COM", &o).unwrap().unwrap().0, "exact");
    }

    #[test]
    fn client_with_cidr_and_hash() {
        let dir = Dir::new();
        let cidr = dir.write("cidr", "192.0.2.0/24 REJECT cidr\n");
        let access = dir.write("access", "example.com OK\n10.1 REJECT ten-one\n");
        crate::build_indexed(&access, false).unwrap();
        let tables =
            crate::open_list(&[format!("cidr:{}", cidr.display()), format!("hash:{}", access.display())]).unwrap();
        let hit = |h: &str, a: &str| lookup_client(&tables, h, ip(a)).unwrap().map(|(v, _)| v);
        assert_eq!(hit("mx.example.com", "192.0.2.1").as_deref(), Some("OK"), "host name first");
        assert_eq!(hit("unknown", "192.0.2.1").as_deref(), Some("REJECT cidr"));
        assert_eq!(hit("", "10.1.2.3").as_deref(), Some("REJECT ten-one"));
        assert_eq!(hit("", "10.2.2.3"), None);
        let t = open("static:x").unwrap();
        assert_eq!(lookup_client(&[t], "", ip("::")).unwrap(), Some(("x".into(), "::".into())));
    }
}

//! Virtual alias expansion, as cleanup(8) does it with
//! `virtual_alias_maps`.
//!
//! Each address is looked up with [`lookup_address`] (`user+ext@domain`,
//! `user@domain`, for local domains `user+ext` and `user`, then
//! `@domain`). A hit is a list of addresses (commas and/or whitespace);
//! each is expanded in turn, depth first, and addresses that are not found
//! are the final recipients, in order, without duplicates (compared
//! without regard to case). When the match was on a key with the
//! extension stripped (`user@domain`, `user`), the extension is put back
//! into each result (`propagate_unmatched_extensions` with `virtual`, the
//! Postfix default); a catch-all `@domain` match does not propagate, as in
//! Postfix. Results without a domain get `@$myorigin`.
//!
//! An address that lists itself (`a@x -> a@x, b@x`) keeps itself as a
//! recipient: that is how mail is delivered and copied at once, and it is
//! not a loop; reaching such an address again further down is fine too. Any
//! other cycle (`a -> b`, `b -> a`) is an error, where Postfix would run
//! into the nesting limit and defer; both end as a 4xx. So do nesting
//! deeper than the recursion limit, more results than the expansion limit,
//! and results over [`MAX_ADDRESS_LEN`]. The work is bounded too: an
//! address already expanded is not expanded again, and the number of
//! lookups is limited to `2 * expansion_limit + recursion_limit`. The
//! expansion runs on an explicit stack, so a large recursion limit cannot
//! overflow a thread's stack.

use std::collections::HashSet;

use crate::address::split_extension;
use crate::{AddressLookup, LookupError, Table, lookup_address, printable};

/// Longest address accepted from a virtual alias result
/// (virtual_alias_address_length_limit).
pub const MAX_ADDRESS_LEN: usize = 1000;

/// Parameters of [`expand_virtual`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandOptions {
    /// `recipient_delimiter`.
    pub recipient_delimiter: String,
    /// `virtual_alias_recursion_limit`: maximal nesting of lookups.
    pub recursion_limit: usize,
    /// `virtual_alias_expansion_limit`: maximal number of final addresses.
    pub expansion_limit: usize,
    /// Domains whose bare local parts are looked up (`$mydestination`;
    /// `myorigin` counts too).
    pub local_domains: Vec<String>,
    /// Appended as `@myorigin` to results without a domain (if not empty).
    pub myorigin: String,
}

impl Default for ExpandOptions {
    /// Postfix defaults, no local domains, no myorigin.
    fn default() -> ExpandOptions {
        ExpandOptions {
            recipient_delimiter: String::new(),
            recursion_limit: 1000,
            expansion_limit: 1000,
            local_domains: Vec::new(),
            myorigin: String::new(),
        }
    }
}

impl ExpandOptions {
    /// Options from main.cf. `local_domains` takes the literal names in
    /// `mydestination`; table and file entries there are not consulted.
    pub fn from_params(params: &rpost_config::Params) -> Result<ExpandOptions, LookupError> {
        let limit = |name: &str| -> Result<usize, LookupError> { Ok(params.get_int(name)?.max(0) as usize) };
        Ok(ExpandOptions {
            recipient_delimiter: params.get("recipient_delimiter")?,
            recursion_limit: limit("virtual_alias_recursion_limit")?,
            expansion_limit: limit("virtual_alias_expansion_limit")?,
            local_domains: params
                .get_list("mydestination")?
                .into_iter()
                .filter(|d| !d.contains([':', '/']))
                .map(|d| d.to_lowercase())
                .collect(),
            myorigin: params.get("myorigin")?,
        })
    }

    fn is_local(&self, domain: &str) -> bool {
        let domain = domain.to_lowercase();
        !domain.is_empty()
            && (domain == self.myorigin.to_lowercase() || self.local_domains.iter().any(|d| d.to_lowercase() == domain))
    }
}

/// The outcome of [`expand_virtual`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expansion {
    /// No table had the address: deliver it as it is.
    Unchanged,
    /// The address is an alias for these (possibly including itself).
    To(Vec<String>),
}

/// Splits a table result into addresses: commas and whitespace separate,
/// except inside `"quoted strings"`; `<addr>` brackets are removed.
pub fn split_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut flush = |cur: &mut String| {
        let item = cur.trim();
        let item = item.strip_prefix('<').and_then(|i| i.strip_suffix('>')).unwrap_or(item);
        if !item.is_empty() {
            out.push(item.to_string());
        }
        cur.clear();
    };
    for c in value.chars() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted && (c == ',' || c.is_whitespace()) {
            flush(&mut cur);
            continue;
        }
        cur.push(c);
    }
    flush(&mut cur);
    out
}

/// An address being expanded: its results and how far we got.
struct Frame {
    address: String,
    norm: String,
    results: Vec<String>,
    next: usize,
    /// It lists itself among its results: reaching it again is not a loop.
    self_ref: bool,
}

struct Expander<'a> {
    tables: &'a [Box<dyn Table>],
    opts: &'a ExpandOptions,
    root: &'a str,
    stack: Vec<Frame>,
    done: HashSet<String>,
    out: Vec<String>,
    out_seen: HashSet<String>,
    lookups: usize,
    max_lookups: usize,
    matched: bool,
}

/// Expands `address` through virtual alias tables; see the module docs.
pub fn expand_virtual(
    tables: &[Box<dyn Table>],
    address: &str,
    opts: &ExpandOptions,
) -> Result<Expansion, LookupError> {
    let mut ex = Expander {
        tables,
        opts,
        root: address,
        stack: Vec::new(),
        done: HashSet::new(),
        out: Vec::new(),
        out_seen: HashSet::new(),
        lookups: 0,
        max_lookups: opts.expansion_limit.saturating_mul(2).saturating_add(opts.recursion_limit),
        matched: false,
    };
    ex.visit(address)?;
    while let Some(top) = ex.stack.last_mut() {
        if top.next == top.results.len() {
            let frame = ex.stack.pop().expect("non-empty");
            ex.done.insert(frame.norm);
            continue;
        }
        let result = top.results[top.next].clone();
        top.next += 1;
        if result.to_lowercase() == top.norm {
            ex.emit(result)?;
        } else {
            ex.visit(&result)?;
        }
    }
    Ok(if ex.matched { Expansion::To(ex.out) } else { Expansion::Unchanged })
}

impl Expander<'_> {
    /// Looks `address` up: a leaf is emitted, an alias gets a frame.
    fn visit(&mut self, address: &str) -> Result<(), LookupError> {
        let norm = address.to_lowercase();
        if self.done.contains(&norm) {
            return Ok(());
        }
        if let Some(i) = self.stack.iter().position(|f| f.norm == norm) {
            if self.stack[i].self_ref {
                return self.emit(address.to_string());
            }
            let mut chain: Vec<String> = self.stack[i..].iter().map(|f| printable(&f.address)).collect();
            chain.push(printable(address));
            return Err(LookupError::AliasLoop { address: printable(self.root), chain });
        }
        if self.stack.len() >= self.opts.recursion_limit {
            return Err(LookupError::RecursionLimit {
                address: printable(self.root),
                limit: self.opts.recursion_limit,
            });
        }
        self.lookups += 1;
        if self.lookups > self.max_lookups {
            return self.too_many();
        }
        let Some(results) = self.lookup(address)? else {
            self.done.insert(norm);
            return self.emit(address.to_string());
        };
        self.matched = true;
        let self_ref = results.iter().any(|r| r.to_lowercase() == norm);
        self.stack.push(Frame { address: address.to_string(), norm, results, next: 0, self_ref });
        Ok(())
    }

    /// One table lookup with extension propagation and @myorigin.
    fn lookup(&self, address: &str) -> Result<Option<Vec<String>>, LookupError> {
        let (local, domain) = match address.rfind('@') {
            Some(i) => (&address[..i], Some(&address[i + 1..])),
            None => (address, None),
        };
        let opts = AddressLookup {
            recipient_delimiter: self.opts.recipient_delimiter.clone(),
            try_localpart: domain.is_some_and(|d| self.opts.is_local(d)),
            try_domain: true,
        };
        let Some((value, key)) = lookup_address(self.tables, address, &opts)? else { return Ok(None) };
        let (base, ext) = split_extension(local, &self.opts.recipient_delimiter);
        // Propagate only when the key was the address minus its extension.
        let ext = ext.filter(|_| key == base || domain.is_some_and(|d| key == format!("{base}@{d}")));
        let bad = |message: String| LookupError::BadResult { address: printable(address), message };
        let mut results = split_addresses(&value);
        if results.is_empty() {
            return Err(bad(format!("empty result from key \"{}\"", printable(&key))));
        }
        for r in &mut results {
            if let Some(ext) = ext {
                match r.rfind('@') {
                    Some(i) => r.insert_str(i, ext),
                    None => r.push_str(ext),
                }
            }
            if !r.contains('@') && !self.opts.myorigin.is_empty() {
                r.push('@');
                r.push_str(&self.opts.myorigin);
            }
            if r.len() > MAX_ADDRESS_LEN {
                return Err(bad(format!("address longer than {MAX_ADDRESS_LEN} bytes: {}", printable(r))));
            }
        }
        Ok(Some(results))
    }

    fn emit(&mut self, address: String) -> Result<(), LookupError> {
        if self.out_seen.insert(address.to_lowercase()) {
            if self.out.len() >= self.opts.expansion_limit {
                return self.too_many();
            }
            self.out.push(address);
        }
        Ok(())
    }

    fn too_many(&self) -> Result<(), LookupError> {
        Err(LookupError::ExpansionLimit { address: printable(self.root), limit: self.opts.expansion_limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open;

    fn tables(inline: &str) -> Vec<Box<dyn Table>> {
        vec![open(&format!("inline:{{ {inline} }}")).unwrap()]
    }

    fn opts() -> ExpandOptions {
        ExpandOptions {
            recipient_delimiter: "+".into(),
            local_domains: vec!["local.test".into()],
            myorigin: "origin.test".into(),
            ..ExpandOptions::default()
        }
    }

    fn to(list: &[&str]) -> Expansion {
        Expansion::To(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn split() {
        assert_eq!(split_addresses("a@x, b@x  c@x,,<d@x>"), ["a@x", "b@x", "c@x", "d@x"]);
        assert_eq!(split_addresses("\"john doe\"@x, \"a\\\"b, c\"@y"), ["\"john doe\"@x", "\"a\\\"b, c\"@y"]);
        assert!(split_addresses(" , ").is_empty());
    }

    #[test]
    fn expansion_cases() {
        let t = tables(
            "{ info@ex.com = alice@ex.com, bob@ex.com }, \
             { @catch.com = catchall@ex.com }, \
             { list@ex.com = team@ex.com carol }, \
             { team@ex.com = alice@ex.com, dave@ex.com }, \
             { user@ex.com = user@mailbox.ex.com }, \
             { self@ex.com = self@ex.com, copy@ex.com }, \
             { a@ex.com = b@ex.com }, { b@ex.com = c@ex.com }, { c@ex.com = a@ex.com }, \
             { loop1@ex.com = loop1@ex.com, loop2@ex.com }, { loop2@ex.com = loop1@ex.com, end@ex.com }, \
             { postmaster = root@ex.com }, \
             { upper@ex.com = Alice@EX.com, alice@ex.com }, \
             { empty@ex.com = , }",
        );
        let o = opts();
        let cases: Vec<(&str, Result<Expansion, &str>)> = vec![
            ("nobody@ex.com", Ok(Expansion::Unchanged)),
            ("info@ex.com", Ok(to(&["alice@ex.com", "bob@ex.com"]))),
            ("INFO@EX.COM", Ok(to(&["alice@ex.com", "bob@ex.com"]))),
            ("anyone@catch.com", Ok(to(&["catchall@ex.com"]))),
            ("x+tag@catch.com", Ok(to(&["catchall@ex.com"]))),
            ("list@ex.com", Ok(to(&["alice@ex.com", "dave@ex.com", "carol@origin.test"]))),
            ("user+tag@ex.com", Ok(to(&["user+tag@mailbox.ex.com"]))),
            ("user@ex.com", Ok(to(&["user@mailbox.ex.com"]))),
            ("self@ex.com", Ok(to(&["self@ex.com", "copy@ex.com"]))),
            ("loop1@ex.com", Ok(to(&["loop1@ex.com", "end@ex.com"]))),
            ("postmaster@local.test", Ok(to(&["root@ex.com"]))),
            ("postmaster@origin.test", Ok(to(&["root@ex.com"]))),
            ("postmaster@remote.test", Ok(Expansion::Unchanged)),
            ("upper@ex.com", Ok(to(&["Alice@EX.com"]))),
            ("a@ex.com", Err("virtual alias loop for a@ex.com: a@ex.com -> b@ex.com -> c@ex.com -> a@ex.com")),
            ("b@ex.com", Err("virtual alias loop for b@ex.com: b@ex.com -> c@ex.com -> a@ex.com -> b@ex.com")),
            ("empty@ex.com", Err("virtual alias table result for empty@ex.com is unusable: empty result")),
        ];
        for (address, want) in cases {
            match (expand_virtual(&t, address, &o), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{address}"),
                (Err(got), Err(want)) => assert!(got.to_string().starts_with(want), "{address}: {got}"),
                (got, want) => panic!("{address}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn localpart_keys_with_extension() {
        let t = tables("{ joe = joe@mailbox.test }, { @local.test = catch@x.test }");
        let o = opts();
        assert_eq!(expand_virtual(&t, "joe+x@local.test", &o).unwrap(), to(&["joe+x@mailbox.test"]));
        assert_eq!(expand_virtual(&t, "ann+x@local.test", &o).unwrap(), to(&["catch@x.test"]));
        assert_eq!(expand_virtual(&t, "joe@remote.test", &o).unwrap(), Expansion::Unchanged);
        let o = ExpandOptions { recipient_delimiter: "+-".into(), ..opts() };
        assert_eq!(expand_virtual(&t, "joe-x@local.test", &o).unwrap(), to(&["joe-x@mailbox.test"]));
    }

    #[test]
    fn limits() {
        // A chain a0 -> a1 -> ... -> a5 (leaf): six lookups deep.
        let chain: Vec<String> = (0..5).map(|i| format!("{{ a{i}@x = a{}@x }}", i + 1)).collect();
        let t = tables(&chain.join(", "));
        let with = |recursion_limit, expansion_limit| ExpandOptions { recursion_limit, expansion_limit, ..opts() };
        assert_eq!(expand_virtual(&t, "a0@x", &with(6, 10)).unwrap(), to(&["a5@x"]));
        let e = expand_virtual(&t, "a0@x", &with(5, 10)).unwrap_err();
        assert!(matches!(e, LookupError::RecursionLimit { limit: 5, .. }), "{e}");
        assert!(e.to_string().contains("virtual_alias_recursion_limit = 5"));

        let wide: Vec<String> = (0..5).map(|i| format!("u{i}@x")).collect();
        let t = tables(&format!("{{ list@x = {} }}", wide.join(" ")));
        assert_eq!(expand_virtual(&t, "list@x", &with(10, 5)).unwrap(), Expansion::To(wide.clone()));
        let e = expand_virtual(&t, "list@x", &with(10, 4)).unwrap_err();
        assert!(matches!(e, LookupError::ExpansionLimit { limit: 4, .. }), "{e}");

        // Duplicates do not count against the limit.
        let t = tables("{ d@x = a@x, A@x, a@x, b@x }");
        assert_eq!(expand_virtual(&t, "d@x", &with(10, 2)).unwrap(), to(&["a@x", "b@x"]));
    }

    #[test]
    fn diamonds_are_linear() {
        // Each level lists both nodes of the next level: 2^40 paths, 80 nodes.
        let mut items = Vec::new();
        for level in 0..40 {
            for side in ["l", "r"] {
                items.push(format!("{{ {side}{level}@x = l{n}@x, r{n}@x }}", n = level + 1));
            }
        }
        items.push("{ root@x = l0@x, r0@x }".to_string());
        let t = tables(&items.join(", "));
        let got = expand_virtual(&t, "root@x", &opts()).unwrap();
        assert_eq!(got, to(&["l40@x", "r40@x"]));
    }

    #[test]
    fn long_results_and_errors_propagate() {
        let long = format!("{}@x", "a".repeat(MAX_ADDRESS_LEN));
        let t = tables(&format!("{{ big@x = {long} }}"));
        assert!(matches!(expand_virtual(&t, "big@x", &opts()), Err(LookupError::BadResult { .. })));
        let t = vec![open("fail:x").unwrap()];
        assert!(matches!(expand_virtual(&t, "a@x", &opts()), Err(LookupError::Lookup { .. })));
        let t: Vec<Box<dyn Table>> = Vec::new();
        assert_eq!(expand_virtual(&t, "a@x", &opts()).unwrap(), Expansion::Unchanged);
    }

    #[test]
    fn options_from_params() {
        let mut p = rpost_config::Params::empty();
        p.set_system_hostname("mx.example.com");
        p.set("recipient_delimiter", "+-");
        p.set("mydestination", "$myhostname, localhost, hash:/etc/rpost/local_domains");
        p.set("virtual_alias_recursion_limit", "7");
        let o = ExpandOptions::from_params(&p).unwrap();
        assert_eq!(o.recipient_delimiter, "+-");
        assert_eq!(o.recursion_limit, 7);
        assert_eq!(o.expansion_limit, 1000);
        assert_eq!(o.local_domains, ["mx.example.com", "localhost"]);
        assert_eq!(o.myorigin, "mx.example.com");
        let a = AddressLookup::from_params(&p).unwrap();
        assert_eq!(a.recipient_delimiter, "+-");
    }
}

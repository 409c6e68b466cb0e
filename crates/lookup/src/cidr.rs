//! `cidr:` tables (cidr_table(5)): `network/prefix result` lines, first
//! match wins. The key is an IP address; anything else is not found.
//! [`Cidr`] is the network pattern on its own, for lists such as
//! `mynetworks`.
//!
//! ```text
//! 192.168.0.0/16      REJECT
//! 192.0.2.7           OK              bare address = /32 (/128 for IPv6)
//! 2001:db8::/32       REJECT          IPv6 with or without brackets
//! [2001:db8:1::]/48   OK
//! ```
//!
//! A network with host bits set (`10.1.2.3/8`) is an error, as in Postfix:
//! it almost always means a typo. IPv4 and IPv6 never match each other
//! (`0.0.0.0/0` matches every IPv4 address and no IPv6 one); an
//! IPv4-mapped IPv6 key (`::ffff:192.0.2.1`) is IPv6 here, so callers pass
//! client addresses in the form smtpd logs them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::{FileStamp, LookupError, Table, check_key, logical_lines, read_file};

/// An IP network: `192.168.0.0/16`, `2001:db8::/32`, `[2001:db8::]/32`,
/// or a bare address (`/32`, `/128`). Host bits must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// IPv6 rather than IPv4; the families never match each other.
    v6: bool,
    /// The network address, left-aligned (IPv4 in the top 32 bits).
    bits: u128,
    prefix: u32,
}

impl Cidr {
    /// Parses `addr`, `addr/len`, `[addr]` or `[addr]/len`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        parse_net(text)
    }

    /// Whether `addr` is inside this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (v6, bits) = to_bits(&addr);
        v6 == self.v6 && (bits ^ self.bits) & mask(self.prefix) == 0
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u32 {
        self.prefix
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        if self.v6 { IpAddr::V6(self.bits.into()) } else { IpAddr::V4(((self.bits >> 96) as u32).into()) }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        parse_net(text)
    }
}

/// The address as a left-aligned 128-bit number (IPv4 in the top 32 bits).
fn to_bits(addr: &IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(a) => (false, u128::from(u32::from(*a)) << 96),
        IpAddr::V6(a) => (true, u128::from(*a)),
    }
}

fn mask(prefix: u32) -> u128 {
    if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) }
}

/// Parses `addr`, `addr/len`, `[addr]`, `[addr]/len`.
fn parse_net(text: &str) -> Result<Cidr, String> {
    let (addr, len) = match text.rsplit_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr);
    let ip: IpAddr = addr.parse().map_err(|_| format!("bad network address \"{text}\""))?;
    let (v6, bits) = to_bits(&ip);
    let max = if v6 { 128 } else { 32 };
    let prefix = match len {
        None => max,
        Some(l) => match l.parse::<u32>() {
            Ok(p) if p <= max && l.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => return Err(format!("bad prefix length \"/{l}\" in \"{text}\" (0 to {max})")),
        },
    };
    // IPv4 sits in the top 32 bits and the rest is zero, so one mask serves both.
    if bits & !mask(prefix) != 0 {
        return Err(format!("non-null host address bits in \"{text}\""));
    }
    Ok(Cidr { v6, bits, prefix })
}

#[derive(Debug)]
pub(crate) struct CidrTable {
    spec: String,
    path: PathBuf,
    stamp: Option<FileStamp>,
    rules: Vec<(Cidr, String)>,
}

impl CidrTable {
    pub(crate) fn open(spec: &str, path: &Path) -> Result<Box<dyn Table>, LookupError> {
        let stamp = FileStamp::of(path);
        let data = read_file(path)?;
        let file = path.display().to_string();
        let mut rules = Vec::new();
        for ll in logical_lines(&file, &data)? {
            let err = |m: String| LookupError::syntax(&file, ll.line, m);
            let Some((net, result)) = ll.text.split_once(|c: char| c.is_ascii_whitespace()) else {
                return Err(err(format!("no result after \"{}\"", ll.text)));
            };
            let result = result.trim();
            if result.is_empty() {
                return Err(err(format!("no result after \"{net}\"")));
            }
            rules.push((parse_net(net).map_err(err)?, result.to_string()));
        }
        Ok(Box::new(CidrTable { spec: spec.to_string(), path: path.to_path_buf(), stamp, rules }))
    }
}

impl Table for CidrTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        check_key(&self.spec, key)?;
        let Ok(addr) = key.parse::<IpAddr>() else { return Ok(None) };
        Ok(self.rules.iter().find(|(net, _)| net.contains(addr)).map(|(_, r)| r.clone()))
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn address_keys(&self) -> bool {
        false
    }

    fn changed(&self) -> bool {
        self.stamp.is_none_or(|s| s.changed(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open;
    use crate::testutil::Dir;

    const TABLE: &str = "# client access\n\
                         192.0.2.7            exact\n\
                         192.168.0.0/16       private\n\
                         10.0.0.0/8           ten\n\
                         [2001:db8::1]        v6-exact\n\
                         2001:db8::/32        v6-doc\n\
                         [fe80::]/10          link-local\n\
                         0.0.0.0/0            any-v4\n\
                         ::/0                 any-v6\n";

    #[test]
    fn matches() {
        let dir = Dir::new();
        let path = dir.write("cidr", TABLE);
        let t = open(&format!("cidr:{}", path.display())).unwrap();
        assert!(!t.address_keys());
        let cases = [
            ("192.0.2.7", Some("exact")),
            ("192.0.2.8", Some("any-v4")),
            ("192.168.255.255", Some("private")),
            ("192.169.0.0", Some("any-v4")),
            ("10.255.0.1", Some("ten")),
            ("2001:db8::1", Some("v6-exact")),
            ("2001:0db8:0000::0001", Some("v6-exact")),
            ("2001:db8:ffff::2", Some("v6-doc")),
            ("2001:db9::1", Some("any-v6")),
            ("fe80::1", Some("link-local")),
            ("febf:ffff::1", Some("link-local")),
            ("fec0::1", Some("any-v6")),
            ("::ffff:192.168.1.1", Some("any-v6")),
            ("not-an-address", None),
            ("[192.0.2.7]", None),
            ("", None),
        ];
        for (key, want) in cases {
            assert_eq!(t.lookup(key).unwrap().as_deref(), want, "{key}");
        }
    }

    #[test]
    fn families_do_not_mix() {
        let dir = Dir::new();
        let path = dir.write("cidr", "0.0.0.0/0 v4\n");
        let t = open(&format!("cidr:{}", path.display())).unwrap();
        assert_eq!(t.lookup("::").unwrap(), None);
        assert_eq!(t.lookup("::1").unwrap(), None);
        assert_eq!(t.lookup("0.0.0.0").unwrap().as_deref(), Some("v4"));
        let path = dir.write("cidr6", "::/0 v6\n");
        let t = open(&format!("cidr:{}", path.display())).unwrap();
        assert_eq!(t.lookup("0.0.0.0").unwrap(), None);
        assert_eq!(t.lookup("255.255.255.255").unwrap(), None);
    }

    #[test]
    fn edge_prefixes() {
        let cases = [
            ("1.2.3.4/32", "1.2.3.4", true),
            ("1.2.3.4/32", "1.2.3.5", false),
            ("1.2.3.4", "1.2.3.4", true),
            ("255.255.255.255/32", "255.255.255.255", true),
            ("128.0.0.0/1", "200.1.1.1", true),
            ("128.0.0.0/1", "127.255.255.255", false),
            ("1.2.3.0/31", "1.2.3.1", true),
            ("1.2.3.0/31", "1.2.3.2", false),
            ("::1/128", "::1", true),
            ("::1", "::2", false),
            ("8000::/1", "ffff::", true),
            ("8000::/1", "7fff::", false),
            ("2001:db8::/127", "2001:db8::1", true),
        ];
        for (net, addr, want) in cases {
            let n = Cidr::parse(net).unwrap();
            assert_eq!(n.contains(addr.parse().unwrap()), want, "{net} {addr}");
        }
    }

    #[test]
    fn cidr_type() {
        let c: Cidr = "[2001:DB8::]/32".parse().unwrap();
        assert_eq!(c.to_string(), "2001:db8::/32");
        assert_eq!(c.prefix_len(), 32);
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("192.0.2.1").unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().network(), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert!(Cidr::parse("10.0.0.1/8").is_err());
    }

    #[test]
    fn errors() {
        let cases = [
            ("1.2.3.4/24 x\n", "1: non-null host address bits in \"1.2.3.4/24\""),
            ("10.0.0.1/0 x\n", "1: non-null host address bits"),
            ("2001:db8::1/32 x\n", "1: non-null host address bits"),
            ("1.2.3.0/33 x\n", "1: bad prefix length \"/33\" in \"1.2.3.0/33\" (0 to 32)"),
            ("::/129 x\n", "1: bad prefix length \"/129\""),
            ("1.2.3.0/+8 x\n", "1: bad prefix length"),
            ("1.2.3.0/ x\n", "1: bad prefix length"),
            ("# c\n1.2.3 x\n", "2: bad network address \"1.2.3\""),
            ("example.com x\n", "1: bad network address"),
            ("1.2.3.4\n", "1: no result after \"1.2.3.4\""),
        ];
        let dir = Dir::new();
        for (text, want) in cases {
            let path = dir.write("cidr", text);
            let e = open(&format!("cidr:{}", path.display())).unwrap_err().to_string();
            assert!(e.strip_prefix(&format!("{}:", path.display())).unwrap_or(&e).starts_with(want), "{e}");
        }
    }
}

//! Facts for the restrictions from outside: the client's names, the DNS lookups behind
//! `reject_unknown_*` and the DNS lists (`reject_rbl_client`, `reject_rhsbl_*`,
//! `permit_dnswl_client`), and policy service actions (`check_policy_service`, asked by
//! [`crate::policysvc`]).
//!
//! The restriction engine ([`crate::policy`]) does no I/O. Before the session handles a
//! command, the driver asks it for the first answer its lists would miss while handling
//! that command ([`crate::session::Session::next_lookup`]: the evaluation runs as the
//! command would run it and stops there), looks it up and hands it back ([`Verdict`] per
//! [`Query`]), until nothing is missing; then the command runs and the engine decides from
//! the answers. So a policy service is asked exactly where the lists reach it, and
//! answers are kept for the session: a sender domain is looked up once for all its
//! recipients.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rpost_dns::{Answer, Dns, Qtype, Rr};

/// Longest wait for one fact (several queries may make it up); past it, a temporary failure.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest TXT text of a DNS list quoted in a reply.
const MAX_TEXT: usize = 200;

/// One fact a restriction decides on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    /// Does this host name have an A, AAAA or MX record (reject_unknown_helo_hostname)?
    Host(String),
    /// Can this mail domain receive mail: an MX record, or else an A or AAAA record
    /// (reject_unknown_sender_domain, reject_unknown_recipient_domain)?
    MailDomain(String),
    /// A DNS list entry: the A records (and TXT text) at this name.
    Listed(String),
    /// A policy service's action (check_policy_service) for one request: `endpoint` as
    /// configured, `key` what identifies the request (protocol state, HELO name, sender,
    /// recipient, transaction). The request text travels beside it ([`Lookup`]).
    Policy { endpoint: String, key: String },
}

/// A fact to look up: the query, and for a policy service the request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub query: Query,
    /// The policy request (attribute lines and the empty line); empty for DNS.
    pub request: String,
}

/// What DNS said about a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Found,
    NotFound,
    /// RFC 7505: the domain says it accepts no mail.
    NullMx,
    /// An MX record whose exchange is no host name (Postfix: "Malformed DNS server reply").
    Malformed,
    TempFail,
    /// A DNS list entry: its A records and TXT text.
    Listed {
        addrs: Vec<Ipv4Addr>,
        text: Option<String>,
    },
    /// A policy service's `action=` value.
    Action(String),
}

/// The answers of one session.
pub type Facts = HashMap<Query, Verdict>;

/// The client's names as Postfix has them: `name` is the verified name (the PTR name whose
/// A/AAAA records include the address), `reverse_name` the PTR name alone; `unknown` when
/// missing. `tempfail`: a lookup failed for now, so "unknown" is not final (restrictions
/// then answer 450 whatever their code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNames {
    pub name: String,
    pub reverse_name: String,
    pub name_tempfail: bool,
    pub reverse_tempfail: bool,
}

impl ClientNames {
    pub fn unknown() -> ClientNames {
        ClientNames {
            name: "unknown".into(),
            reverse_name: "unknown".into(),
            name_tempfail: false,
            reverse_tempfail: false,
        }
    }

    /// Loopback clients are `localhost` without asking DNS (what /etc/hosts says).
    fn localhost() -> ClientNames {
        ClientNames { name: "localhost".into(), reverse_name: "localhost".into(), ..ClientNames::unknown() }
    }
}

async fn query(dns: &impl Dns, name: &str, qtype: Qtype) -> Answer {
    tokio::time::timeout(LOOKUP_TIMEOUT, dns.query(name, qtype)).await.unwrap_or(Answer::TempFail)
}

/// The client's names (see [`ClientNames`]): PTR, then the A or AAAA records of the first
/// PTR name that has the address among them. A loopback client is `localhost` without
/// asking: RFC 6761 reserves those names, and resolvers (hickory among them) answer them
/// locally.
pub async fn client_names(dns: &impl Dns, addr: IpAddr) -> ClientNames {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    if addr.is_loopback() {
        return ClientNames::localhost();
    }
    let mut out = ClientNames::unknown();
    let names: Vec<String> = match query(dns, &rpost_dns::reverse_name(addr), Qtype::Ptr).await {
        Answer::Found(rrs) => rrs
            .into_iter()
            .filter_map(|r| match r {
                Rr::Name(n) if valid_hostname(n.trim_end_matches('.')) => {
                    Some(n.trim_end_matches('.').to_ascii_lowercase())
                }
                _ => None,
            })
            .collect(),
        Answer::TempFail => {
            out.name_tempfail = true;
            out.reverse_tempfail = true;
            return out;
        }
        _ => Vec::new(),
    };
    let Some(first) = names.first() else { return out };
    out.reverse_name = first.clone();
    let qtype = if addr.is_ipv4() { Qtype::A } else { Qtype::Aaaa };
    for name in &names {
        match query(dns, name, qtype).await {
            Answer::Found(rrs) if rrs.contains(&Rr::Addr(addr)) => {
                out.name = name.clone();
                return out;
            }
            Answer::TempFail => out.name_tempfail = true,
            _ => {}
        }
    }
    out
}

/// A syntactically valid host name (letters, digits, hyphens; dots between labels).
fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Resolves one DNS fact (a [`Query::Policy`] is the policy client's: TempFail here).
pub async fn resolve(dns: &impl Dns, q: &Query) -> Verdict {
    match q {
        Query::Policy { .. } => Verdict::TempFail,
        Query::Host(name) => {
            let mut tempfail = false;
            for qtype in [Qtype::A, Qtype::Aaaa, Qtype::Mx] {
                match query(dns, name, qtype).await {
                    Answer::Found(_) => return Verdict::Found,
                    // No such name: no other type can exist either.
                    Answer::NxDomain => return if tempfail { Verdict::TempFail } else { Verdict::NotFound },
                    Answer::TempFail => tempfail = true,
                    Answer::NoData => {}
                }
            }
            if tempfail { Verdict::TempFail } else { Verdict::NotFound }
        }
        Query::MailDomain(domain) => match query(dns, domain, Qtype::Mx).await {
            Answer::Found(rrs) => {
                let exchanges: Vec<&str> = rrs
                    .iter()
                    .filter_map(|r| match r {
                        Rr::Mx(_, host) => Some(host.trim_end_matches('.')),
                        _ => None,
                    })
                    .collect();
                if exchanges.len() == 1 && exchanges[0].is_empty() {
                    Verdict::NullMx
                } else if exchanges.iter().any(|h| valid_hostname(h)) {
                    Verdict::Found
                } else {
                    Verdict::Malformed
                }
            }
            Answer::NxDomain => Verdict::NotFound,
            Answer::TempFail => Verdict::TempFail,
            // No MX: the domain's own address is its mail host (RFC 5321 5.1).
            Answer::NoData => resolve_addr(dns, domain).await,
        },
        Query::Listed(name) => match query(dns, name, Qtype::A).await {
            Answer::Found(rrs) => {
                let addrs: Vec<Ipv4Addr> = rrs
                    .iter()
                    .filter_map(|r| match r {
                        Rr::Addr(IpAddr::V4(a)) => Some(*a),
                        _ => None,
                    })
                    .collect();
                if addrs.is_empty() {
                    return Verdict::NotFound;
                }
                let text = match query(dns, name, Qtype::Txt).await {
                    Answer::Found(rrs) => rrs.into_iter().find_map(|r| match r {
                        Rr::Text(t) => Some(printable(&t)),
                        _ => None,
                    }),
                    _ => None,
                };
                Verdict::Listed { addrs, text }
            }
            Answer::TempFail => Verdict::TempFail,
            _ => Verdict::NotFound,
        },
    }
}

async fn resolve_addr(dns: &impl Dns, name: &str) -> Verdict {
    let mut tempfail = false;
    for qtype in [Qtype::A, Qtype::Aaaa] {
        match query(dns, name, qtype).await {
            Answer::Found(_) => return Verdict::Found,
            Answer::TempFail => tempfail = true,
            _ => {}
        }
    }
    if tempfail { Verdict::TempFail } else { Verdict::NotFound }
}

/// DNS list text as it may appear in a reply: printable ASCII, bounded.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(MAX_TEXT).collect()
}

/// The `=d.d.d.d` filter of `reject_rbl_client zone=127.0.0.[2..11]`: each octet a number,
/// a range `[n..m]` or a list `[a;b;c]`. Without a filter, any A record lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyFilter {
    octets: [Vec<(u8, u8)>; 4],
}

impl ReplyFilter {
    pub fn parse(s: &str) -> Option<ReplyFilter> {
        // Dots inside brackets belong to a range, not between octets.
        let mut parts: Vec<&str> = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in s.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                '.' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        if parts.len() != 4 {
            return None;
        }
        let mut octets: [Vec<(u8, u8)>; 4] = Default::default();
        for (i, p) in parts.iter().enumerate() {
            octets[i] = match p.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                Some(inner) if inner.contains("..") => {
                    let (a, b) = inner.split_once("..")?;
                    vec![(a.parse().ok()?, b.parse().ok()?)]
                }
                Some(inner) => inner.split(';').map(|n| n.parse().ok().map(|n| (n, n))).collect::<Option<_>>()?,
                None => {
                    let n = p.parse().ok()?;
                    vec![(n, n)]
                }
            };
        }
        Some(ReplyFilter { octets })
    }

    pub fn matches(&self, a: Ipv4Addr) -> bool {
        a.octets().iter().zip(&self.octets).all(|(o, ranges)| ranges.iter().any(|(lo, hi)| lo <= o && o <= hi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    /// Answers from a table; anything else NXDOMAIN.
    struct Table(Vec<(&'static str, Qtype, Answer)>);

    impl Dns for Table {
        fn query(&self, name: &str, qtype: Qtype) -> impl Future<Output = Answer> + Send {
            let a = self.0.iter().find(|(n, t, _)| *n == name && *t == qtype).map(|(_, _, a)| a.clone());
            async move { a.unwrap_or(Answer::NxDomain) }
        }
        async fn native(&self, _host: &str) -> Result<Vec<IpAddr>, (bool, String)> {
            Err((false, "none".to_string()))
        }
    }

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
    }

    fn addr(s: &str) -> Rr {
        Rr::Addr(s.parse().unwrap())
    }

    #[test]
    fn client_names_need_the_forward_lookup_to_confirm() {
        let t = Table(vec![
            ("10.2.0.192.in-addr.arpa", Qtype::Ptr, Answer::Found(vec![Rr::Name("Mail.Example.com".into())])),
            ("mail.example.com", Qtype::A, Answer::Found(vec![addr("192.0.2.10")])),
            ("11.2.0.192.in-addr.arpa", Qtype::Ptr, Answer::Found(vec![Rr::Name("liar.example.com".into())])),
            ("liar.example.com", Qtype::A, Answer::Found(vec![addr("192.0.2.99")])),
            ("12.2.0.192.in-addr.arpa", Qtype::Ptr, Answer::TempFail),
        ]);
        let n = run(client_names(&t, "192.0.2.10".parse().unwrap()));
        assert_eq!((n.name.as_str(), n.reverse_name.as_str()), ("mail.example.com", "mail.example.com"));
        let n = run(client_names(&t, "192.0.2.11".parse().unwrap()));
        assert_eq!((n.name.as_str(), n.reverse_name.as_str()), ("unknown", "liar.example.com"));
        assert!(!n.name_tempfail);
        let n = run(client_names(&t, "192.0.2.12".parse().unwrap()));
        assert_eq!(n.name, "unknown");
        assert!(n.name_tempfail && n.reverse_tempfail);
        assert_eq!(run(client_names(&t, "192.0.2.13".parse().unwrap())), ClientNames::unknown());
        // Loopback: localhost, without asking (the table would answer NXDOMAIN).
        assert_eq!(run(client_names(&t, "127.0.0.2".parse().unwrap())), ClientNames::localhost());
        assert_eq!(run(client_names(&t, "::ffff:127.0.0.1".parse().unwrap())), ClientNames::localhost());
    }

    #[test]
    fn mail_domains_hosts_and_lists() {
        let t = Table(vec![
            ("mx.example", Qtype::Mx, Answer::Found(vec![Rr::Mx(10, "mail.mx.example".into())])),
            ("a-only.example", Qtype::Mx, Answer::NoData),
            ("a-only.example", Qtype::A, Answer::Found(vec![addr("192.0.2.1")])),
            ("nothing.example", Qtype::Mx, Answer::NoData),
            ("nothing.example", Qtype::A, Answer::NoData),
            ("nothing.example", Qtype::Aaaa, Answer::NoData),
            ("null.example", Qtype::Mx, Answer::Found(vec![Rr::Mx(0, String::new())])),
            ("broken.example", Qtype::Mx, Answer::TempFail),
            ("2.0.0.127.bl.example", Qtype::A, Answer::Found(vec![addr("127.0.0.4")])),
            ("2.0.0.127.bl.example", Qtype::Txt, Answer::Found(vec![Rr::Text("spam\r\nsource".into())])),
            ("helo.example", Qtype::A, Answer::NoData),
            ("helo.example", Qtype::Aaaa, Answer::NoData),
            ("helo.example", Qtype::Mx, Answer::Found(vec![Rr::Mx(10, "x.example".into())])),
        ]);
        let r = |q: Query| run(resolve(&t, &q));
        assert_eq!(r(Query::MailDomain("mx.example".into())), Verdict::Found);
        assert_eq!(r(Query::MailDomain("a-only.example".into())), Verdict::Found);
        assert_eq!(r(Query::MailDomain("nothing.example".into())), Verdict::NotFound);
        assert_eq!(r(Query::MailDomain("nx.example".into())), Verdict::NotFound);
        assert_eq!(r(Query::MailDomain("null.example".into())), Verdict::NullMx);
        assert_eq!(r(Query::MailDomain("broken.example".into())), Verdict::TempFail);
        assert_eq!(r(Query::Host("helo.example".into())), Verdict::Found);
        assert_eq!(r(Query::Host("nx.example".into())), Verdict::NotFound);
        assert_eq!(
            r(Query::Listed("2.0.0.127.bl.example".into())),
            Verdict::Listed { addrs: vec!["127.0.0.4".parse().unwrap()], text: Some("spam??source".into()) }
        );
        assert_eq!(r(Query::Listed("3.0.0.127.bl.example".into())), Verdict::NotFound);
    }

    #[test]
    fn reply_filters() {
        let f = ReplyFilter::parse("127.0.0.[2..11]").unwrap();
        assert!(f.matches("127.0.0.2".parse().unwrap()) && f.matches("127.0.0.11".parse().unwrap()));
        assert!(!f.matches("127.0.0.12".parse().unwrap()) && !f.matches("127.0.1.2".parse().unwrap()));
        let f = ReplyFilter::parse("127.0.0.[2;4]").unwrap();
        assert!(f.matches("127.0.0.4".parse().unwrap()) && !f.matches("127.0.0.3".parse().unwrap()));
        assert!(ReplyFilter::parse("127.0.0.2").unwrap().matches("127.0.0.2".parse().unwrap()));
        for bad in ["127.0.0", "127.0.0.x", "127.0.0.[1..]", "127.0.0.256"] {
            assert!(ReplyFilter::parse(bad).is_none(), "{bad}");
        }
    }
}

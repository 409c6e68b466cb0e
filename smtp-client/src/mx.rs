//! From a next hop to the ordered list of addresses to try, as Postfix's smtp(8) does it
//! (`smtp_addr.c`), without I/O of its own: lookups go through the [`Dns`] trait, so the
//! tests feed it answers from a table and the agent feeds it hickory-resolver
//! (`rpost_dns::Resolver`).
//!
//! * A domain: its MX records, sorted by preference, equal preferences shuffled; no MX
//!   records (NOERROR, no data): the domain's own A/AAAA records (implicit MX, RFC 5321
//!   section 5.1); NXDOMAIN: bounced (5.4.4); a temporary failure: deferred (4.4.3); a null
//!   MX (RFC 7505, `MX 0 .`): bounced with 5.1.10. Each MX host's A/AAAA records follow in
//!   preference order; the list is cut at `smtp_mx_address_limit`.
//! * An MX host that is one of our own addresses (`inet_interfaces`, `proxy_interfaces`):
//!   that host and every one at its preference or worse are dropped, so we only ever hand
//!   mail to a better MX. Nothing left: "mail for DOMAIN loops back to myself" (5.4.6) when
//!   we are the best MX, else "unable to find primary relay for DOMAIN" (4.4.4).
//! * A host (`[host]`, `host:port`): its A/AAAA records, no MX lookup.
//! * `smtp_host_lookup = native` (or `disable_dns_lookups = yes`): no MX lookups at all,
//!   host addresses from the system resolver (getaddrinfo, /etc/hosts); `dns, native` tries
//!   DNS first.

use std::net::IpAddr;

use rpost_ipc::Outcome;

pub use rpost_dns::{Answer, Dns, Qtype, Rr};

/// One address to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The MX host (or the host itself), for `host[addr]` in logs and reasons.
    pub host: String,
    pub addr: IpAddr,
    /// MX preference (0 for hosts without MX lookup).
    pub pref: u16,
}

/// Why there is nothing to try: applies to every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub outcome: Outcome,
    pub dsn: String,
    pub reason: String,
}

impl Failure {
    fn new(outcome: Outcome, dsn: &str, reason: String) -> Failure {
        Failure { outcome, dsn: dsn.into(), reason }
    }
}

/// How to look things up (from main.cf).
pub struct Policy<'a> {
    pub ipv4: bool,
    pub ipv6: bool,
    /// `smtp_mx_address_limit` (0: no limit).
    pub address_limit: usize,
    /// `smtp_host_lookup` has `dns` (and `disable_dns_lookups` is off).
    pub dns: bool,
    /// `smtp_host_lookup` has `native`.
    pub native: bool,
    /// `smtp_defer_if_no_mx_address_found`.
    pub defer_if_no_mx_address: bool,
    /// Is this one of our own addresses (for the MX loop check)?
    pub is_self: &'a (dyn Fn(IpAddr) -> bool + Sync),
    /// A random number source, for shuffling equal preferences.
    pub random: &'a (dyn Fn() -> u64 + Sync),
}

impl std::fmt::Debug for Policy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("ipv4", &self.ipv4)
            .field("ipv6", &self.ipv6)
            .field("address_limit", &self.address_limit)
            .field("dns", &self.dns)
            .field("native", &self.native)
            .field("defer_if_no_mx_address", &self.defer_if_no_mx_address)
            .finish_non_exhaustive()
    }
}

/// Postfix's wording for a failed lookup.
fn name_error(name: &str, qtype: Qtype, answer: &Answer) -> String {
    let why = match answer {
        Answer::NxDomain => "Host not found",
        Answer::NoData => "Host found but no data record of requested type",
        _ => "Host not found, try again",
    };
    format!("Host or domain name not found. Name service error for name={name} type={}: {why}", qtype.name())
}

/// Shuffles runs of equal keys in a list already sorted by key.
fn shuffle_equal<T>(v: &mut [T], key: impl Fn(&T) -> u16, random: &dyn Fn() -> u64) {
    let mut start = 0;
    while start < v.len() {
        let k = key(&v[start]);
        let end = start + v[start..].iter().take_while(|x| key(x) == k).count();
        // Fisher-Yates over v[start..end].
        for i in (start + 1..end).rev() {
            let j = start + (random() % (i - start + 1) as u64) as usize;
            v.swap(i, j);
        }
        start = end;
    }
}

/// Sorts MX records by preference and shuffles equal preferences (RFC 5321 5.1).
/// `None` when the answer is a null MX (RFC 7505).
pub fn order_mx(records: &[Rr], random: &dyn Fn() -> u64) -> Option<Vec<(u16, String)>> {
    let mut mx: Vec<(u16, String)> = records
        .iter()
        .filter_map(|r| match r {
            Rr::Mx(p, h) => Some((*p, h.trim_end_matches('.').to_ascii_lowercase())),
            Rr::Addr(_) | Rr::Name(_) | Rr::Text(_) => None,
        })
        .collect();
    // RFC 7505: a single MX with the root as exchange. A "." among real MX records is a
    // misconfiguration: ignore that record and use the others.
    if mx.len() == 1 && mx[0].1.is_empty() {
        return None;
    }
    mx.retain(|(_, h)| !h.is_empty());
    mx.sort_by_key(|(p, _)| *p);
    mx.dedup();
    shuffle_equal(&mut mx, |(p, _)| *p, random);
    Some(mx)
}

/// The addresses of one host: A and/or AAAA as `inet_protocols` says, DNS then native.
/// `Err((temporary, reason))`.
async fn host_addrs<D: Dns>(dns: &D, host: &str, p: &Policy<'_>) -> Result<Vec<IpAddr>, (bool, String)> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let mut last: Option<(bool, String)> = None;
    if p.dns {
        let types: Vec<Qtype> =
            [(p.ipv4, Qtype::A), (p.ipv6, Qtype::Aaaa)].into_iter().filter(|(on, _)| *on).map(|(_, t)| t).collect();
        let mut found = Vec::new();
        let mut temp: Option<String> = None;
        let mut nx: Option<String> = None;
        let mut nodata: Option<String> = None;
        for t in types {
            let answer = dns.query(host, t).await;
            match &answer {
                Answer::Found(rrs) => found.extend(rrs.iter().filter_map(|r| match r {
                    Rr::Addr(ip) if (ip.is_ipv4() && t == Qtype::A) || (ip.is_ipv6() && t == Qtype::Aaaa) => Some(*ip),
                    _ => None,
                })),
                Answer::TempFail => temp = temp.or(Some(name_error(host, t, &answer))),
                Answer::NxDomain => nx = nx.or(Some(name_error(host, t, &answer))),
                Answer::NoData => nodata = nodata.or(Some(name_error(host, t, &answer))),
            }
        }
        if !found.is_empty() {
            return Ok(found);
        }
        last = Some(match (temp, nx, nodata) {
            (Some(t), _, _) => (true, t),
            (None, Some(n), _) => (false, n),
            (None, None, Some(n)) => (false, n),
            (None, None, None) => (false, format!("no usable address for host {host}")),
        });
    }
    if p.native {
        match dns.native(host).await {
            Ok(addrs) => {
                let addrs: Vec<IpAddr> =
                    addrs.into_iter().filter(|a| (a.is_ipv4() && p.ipv4) || (a.is_ipv6() && p.ipv6)).collect();
                if !addrs.is_empty() {
                    return Ok(addrs);
                }
                last = Some((false, format!("unable to look up host {host}: No address associated with hostname")));
            }
            Err((temp, msg)) => last = Some((temp, format!("unable to look up host {host}: {msg}"))),
        }
    }
    Err(last.unwrap_or((true, format!("unable to look up host {host}: no lookup method enabled"))))
}

fn dedup_addrs(list: &mut Vec<Candidate>) {
    let mut seen = Vec::new();
    list.retain(|c| {
        let new = !seen.contains(&c.addr);
        seen.push(c.addr);
        new
    });
}

fn limit(mut list: Vec<Candidate>, p: &Policy<'_>) -> Vec<Candidate> {
    if p.address_limit > 0 {
        list.truncate(p.address_limit);
    }
    list
}

fn lookup_failure((temp, reason): (bool, String)) -> Failure {
    if temp {
        Failure::new(Outcome::Deferred, "4.4.3", reason)
    } else {
        Failure::new(Outcome::Bounced, "5.4.4", reason)
    }
}

/// A host next hop (`[host]`, `host:port`): its addresses, no MX lookup.
pub async fn resolve_host<D: Dns>(dns: &D, host: &str, p: &Policy<'_>) -> Result<Vec<Candidate>, Failure> {
    let mut addrs = host_addrs(dns, host, p).await.map_err(lookup_failure)?;
    addrs.retain(|a| (a.is_ipv4() && p.ipv4) || (a.is_ipv6() && p.ipv6));
    if addrs.is_empty() {
        return Err(Failure::new(
            Outcome::Deferred,
            "4.4.3",
            format!("Host or domain name not found. Name service error for name={host}: no usable address"),
        ));
    }
    let mut list: Vec<Candidate> =
        addrs.into_iter().map(|addr| Candidate { host: host.to_owned(), addr, pref: 0 }).collect();
    dedup_addrs(&mut list);
    shuffle_equal(&mut list, |_| 0, p.random);
    Ok(limit(list, p))
}

/// A domain next hop: MX lookup and everything that follows from it (see the module doc).
pub async fn resolve_domain<D: Dns>(dns: &D, domain: &str, p: &Policy<'_>) -> Result<Vec<Candidate>, Failure> {
    let domain = domain.trim_end_matches('.');
    if !p.dns {
        // No DNS: the domain is looked up as a host.
        return resolve_host(dns, domain, p).await;
    }
    let answer = dns.query(domain, Qtype::Mx).await;
    let mx = match &answer {
        Answer::Found(rrs) => match order_mx(rrs, p.random) {
            None => {
                return Err(Failure::new(
                    Outcome::Bounced,
                    "5.1.10",
                    format!("Domain {domain} does not accept mail (nullMX)"),
                ));
            }
            Some(mx) if mx.is_empty() => None,
            Some(mx) => Some(mx),
        },
        Answer::NoData => None,
        Answer::NxDomain => {
            return Err(Failure::new(Outcome::Bounced, "5.4.4", name_error(domain, Qtype::Mx, &answer)));
        }
        Answer::TempFail => {
            return Err(Failure::new(Outcome::Deferred, "4.4.3", name_error(domain, Qtype::Mx, &answer)));
        }
    };
    // No MX records: the domain itself is the (implicit) MX host, preference 0.
    let mx = mx.unwrap_or_else(|| vec![(0, domain.to_owned())]);
    let best_pref = mx[0].0;
    let mut list = Vec::new();
    let mut failure: Option<(bool, String)> = None;
    for (pref, host) in &mx {
        match host_addrs(dns, host, p).await {
            Ok(addrs) => {
                let mut group: Vec<Candidate> = addrs
                    .into_iter()
                    .filter(|a| (a.is_ipv4() && p.ipv4) || (a.is_ipv6() && p.ipv6))
                    .map(|addr| Candidate { host: host.clone(), addr, pref: *pref })
                    .collect();
                shuffle_equal(&mut group, |_| 0, p.random);
                list.extend(group);
            }
            // A temporary failure wins over "not found": the mail is deferred, not bounced.
            Err(f) => {
                if failure.as_ref().is_none_or(|(temp, _)| !temp || f.0) {
                    failure = Some(f);
                }
            }
        }
    }
    dedup_addrs(&mut list);
    if list.is_empty() {
        let (temp, reason) = failure.unwrap_or((false, format!("no usable address for the MX hosts of {domain}")));
        return Err(if temp || p.defer_if_no_mx_address {
            Failure::new(Outcome::Deferred, if temp { "4.4.3" } else { "4.4.4" }, reason)
        } else {
            Failure::new(Outcome::Bounced, "5.4.4", reason)
        });
    }
    // Equal-preference addresses of different hosts are shuffled too (smtp_randomize_addresses).
    list.sort_by_key(|c| c.pref);
    shuffle_equal(&mut list, |c| c.pref, p.random);
    let best_found = list[0].pref;
    if let Some(own) = list.iter().find(|c| (p.is_self)(c.addr)).map(|c| c.pref) {
        list.retain(|c| c.pref < own);
        if list.is_empty() {
            return Err(if best_pref != best_found {
                Failure::new(Outcome::Deferred, "4.4.4", format!("unable to find primary relay for {domain}"))
            } else {
                Failure::new(Outcome::Bounced, "5.4.6", format!("mail for {domain} loops back to myself"))
            });
        }
    }
    Ok(limit(list, p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Answers from a table; anything not in it is NXDOMAIN.
    #[derive(Default)]
    struct Table {
        answers: HashMap<(String, Qtype), Answer>,
        native: HashMap<String, Result<Vec<IpAddr>, (bool, String)>>,
    }

    impl Table {
        fn mx(mut self, name: &str, records: &[(u16, &str)]) -> Table {
            let rrs = records.iter().map(|(p, h)| Rr::Mx(*p, (*h).into())).collect();
            self.answers.insert((name.into(), Qtype::Mx), Answer::Found(rrs));
            self
        }
        fn addr(mut self, name: &str, ips: &[&str]) -> Table {
            for ip in ips {
                let ip: IpAddr = ip.parse().unwrap();
                let t = if ip.is_ipv4() { Qtype::A } else { Qtype::Aaaa };
                let e = self.answers.entry((name.into(), t)).or_insert(Answer::Found(Vec::new()));
                if let Answer::Found(v) = e {
                    v.push(Rr::Addr(ip));
                }
            }
            self.set(name, Qtype::Mx, Answer::NoData)
        }
        fn set(mut self, name: &str, t: Qtype, a: Answer) -> Table {
            self.answers.entry((name.into(), t)).or_insert(a);
            self
        }
    }

    impl Dns for Table {
        fn query(&self, name: &str, qtype: Qtype) -> impl Future<Output = Answer> + Send {
            let a = self.answers.get(&(name.to_owned(), qtype)).cloned().unwrap_or_else(|| {
                // A name with other records exists: NODATA; else NXDOMAIN.
                if self.answers.keys().any(|(n, _)| n == name) { Answer::NoData } else { Answer::NxDomain }
            });
            async move { a }
        }
        fn native(&self, host: &str) -> impl Future<Output = Result<Vec<IpAddr>, (bool, String)>> + Send {
            let r = self.native.get(host).cloned().unwrap_or(Err((false, "Name or service not known".into())));
            async move { r }
        }
    }

    fn no_self(_: IpAddr) -> bool {
        false
    }

    fn fixed() -> u64 {
        0
    }

    fn policy<'a>(is_self: &'a (dyn Fn(IpAddr) -> bool + Sync), random: &'a (dyn Fn() -> u64 + Sync)) -> Policy<'a> {
        Policy {
            ipv4: true,
            ipv6: true,
            address_limit: 5,
            dns: true,
            native: false,
            defer_if_no_mx_address: false,
            is_self,
            random,
        }
    }

    fn run<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    fn hosts(r: &Result<Vec<Candidate>, Failure>) -> Vec<String> {
        r.as_ref().unwrap().iter().map(|c| format!("{}[{}]/{}", c.host, c.addr, c.pref)).collect()
    }

    #[test]
    fn mx_records_are_tried_by_preference() {
        let t = Table::default()
            .mx("a.test", &[(20, "mx2.a.test."), (10, "MX1.a.test"), (30, "mx3.a.test")])
            .addr("mx1.a.test", &["192.0.2.1", "2001:db8::1"])
            .addr("mx2.a.test", &["192.0.2.2"])
            .set("mx3.a.test", Qtype::A, Answer::TempFail);
        let r = run(resolve_domain(&t, "a.test", &policy(&no_self, &fixed)));
        assert_eq!(
            hosts(&r),
            ["mx1.a.test[192.0.2.1]/10", "mx1.a.test[2001:db8::1]/10", "mx2.a.test[192.0.2.2]/20"],
            "a host whose lookup fails is skipped while others have addresses"
        );
        // inet_protocols = ipv4; smtp_mx_address_limit = 1.
        let mut p = policy(&no_self, &fixed);
        p.ipv6 = false;
        p.address_limit = 1;
        assert_eq!(hosts(&run(resolve_domain(&t, "a.test", &p))), ["mx1.a.test[192.0.2.1]/10"]);
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let t = Table::default()
            .mx("a.test", &[(10, "x.a.test"), (10, "y.a.test"), (5, "best.a.test")])
            .addr("x.a.test", &["192.0.2.1"])
            .addr("y.a.test", &["192.0.2.2"])
            .addr("best.a.test", &["192.0.2.9"]);
        let counter = AtomicU64::new(0);
        // A tiny LCG: deterministic, but not so regular that swaps cancel out.
        let random = || {
            let x = counter.fetch_add(1, Ordering::Relaxed);
            x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 33
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let r = run(resolve_domain(&t, "a.test", &policy(&no_self, &random)));
            let h = hosts(&r);
            assert_eq!(h[0], "best.a.test[192.0.2.9]/5", "the best preference always comes first");
            seen.insert(h[1].clone());
        }
        assert_eq!(seen.len(), 2, "both equal-preference hosts come second at times: {seen:?}");
    }

    #[test]
    fn no_mx_means_the_domain_itself() {
        let t = Table::default().addr("a.test", &["192.0.2.7"]);
        let r = run(resolve_domain(&t, "a.test", &policy(&no_self, &fixed)));
        assert_eq!(hosts(&r), ["a.test[192.0.2.7]/0"]);
        // Neither MX nor address records.
        let t = Table::default().set("a.test", Qtype::Mx, Answer::NoData);
        let e = run(resolve_domain(&t, "a.test", &policy(&no_self, &fixed))).unwrap_err();
        assert_eq!((e.outcome, e.dsn.as_str()), (Outcome::Bounced, "5.4.4"));
        assert_eq!(
            e.reason,
            "Host or domain name not found. Name service error for name=a.test type=A: \
             Host found but no data record of requested type"
        );
    }

    #[test]
    fn dns_errors_map_like_postfix() {
        let t = Table::default().set("broken.test", Qtype::Mx, Answer::TempFail).null_mx_for_test();
        let p = policy(&no_self, &fixed);
        let e = run(resolve_domain(&t, "nowhere.test", &p)).unwrap_err();
        assert_eq!(
            e,
            Failure::new(
                Outcome::Bounced,
                "5.4.4",
                "Host or domain name not found. Name service error for name=nowhere.test type=MX: Host not found"
                    .into()
            )
        );
        let e = run(resolve_domain(&t, "broken.test", &p)).unwrap_err();
        assert_eq!((e.outcome, e.dsn.as_str()), (Outcome::Deferred, "4.4.3"));
        assert!(e.reason.ends_with("name=broken.test type=MX: Host not found, try again"), "{}", e.reason);
        let e = run(resolve_domain(&t, "nomail.test", &p)).unwrap_err();
        assert_eq!(
            e,
            Failure::new(Outcome::Bounced, "5.1.10", "Domain nomail.test does not accept mail (nullMX)".into())
        );
        // MX hosts without addresses: bounced when they do not exist, deferred when a
        // lookup failed for now or when smtp_defer_if_no_mx_address_found says so.
        let t = Table::default().mx("a.test", &[(10, "gone.a.test")]);
        let e = run(resolve_domain(&t, "a.test", &p)).unwrap_err();
        assert_eq!((e.outcome, e.dsn.as_str()), (Outcome::Bounced, "5.4.4"));
        assert!(e.reason.contains("name=gone.a.test type=A: Host not found"), "{}", e.reason);
        let mut p2 = policy(&no_self, &fixed);
        p2.defer_if_no_mx_address = true;
        let e = run(resolve_domain(&t, "a.test", &p2)).unwrap_err();
        assert_eq!((e.outcome, e.dsn.as_str()), (Outcome::Deferred, "4.4.4"));
        let t =
            t.mx("b.test", &[(10, "gone.a.test"), (20, "slow.b.test")]).set("slow.b.test", Qtype::A, Answer::TempFail);
        let e = run(resolve_domain(&t, "b.test", &p)).unwrap_err();
        assert_eq!((e.outcome, e.dsn.as_str()), (Outcome::Deferred, "4.4.3"));
    }

    impl Table {
        fn null_mx_for_test(self) -> Table {
            self.mx("nomail.test", &[(0, ".")])
        }
    }

    #[test]
    fn a_dot_among_real_mx_records_is_ignored() {
        let rr = [Rr::Mx(0, ".".into()), Rr::Mx(10, "mx.a.test".into())];
        assert_eq!(order_mx(&rr, &fixed), Some(vec![(10, "mx.a.test".into())]));
        assert_eq!(order_mx(&[Rr::Mx(0, "".into())], &fixed), None);
    }

    #[test]
    fn mail_to_ourselves_loops() {
        let t = Table::default()
            .mx("a.test", &[(10, "me.a.test"), (20, "backup.a.test")])
            .addr("me.a.test", &["127.0.0.2"])
            .addr("backup.a.test", &["127.0.0.3"])
            .mx("b.test", &[(10, "primary.b.test"), (20, "me.a.test"), (30, "worse.b.test")])
            .addr("primary.b.test", &["127.0.0.4"])
            .addr("worse.b.test", &["127.0.0.5"])
            .mx("c.test", &[(10, "dead.c.test"), (20, "me.a.test")]);
        let me = |ip: IpAddr| ip == "127.0.0.2".parse::<IpAddr>().unwrap();
        let p = policy(&me, &fixed);
        // We are the best MX: a loop, whatever the backups are.
        let e = run(resolve_domain(&t, "a.test", &p)).unwrap_err();
        assert_eq!(e, Failure::new(Outcome::Bounced, "5.4.6", "mail for a.test loops back to myself".into()));
        // We are a backup MX: only better MX hosts are tried.
        assert_eq!(hosts(&run(resolve_domain(&t, "b.test", &p))), ["primary.b.test[127.0.0.4]/10"]);
        // We are a backup and the primary has no address: defer, do not loop.
        let e = run(resolve_domain(&t, "c.test", &p)).unwrap_err();
        assert_eq!(e, Failure::new(Outcome::Deferred, "4.4.4", "unable to find primary relay for c.test".into()));
        // Exact addresses: 127.0.0.3 is not us.
        let t = Table::default().mx("d.test", &[(10, "backup.a.test")]).addr("backup.a.test", &["127.0.0.3"]);
        assert_eq!(hosts(&run(resolve_domain(&t, "d.test", &p))), ["backup.a.test[127.0.0.3]/10"]);
    }

    #[test]
    fn hosts_skip_mx_and_native_lookups() {
        let mut t = Table::default().mx("relay.test", &[(10, "elsewhere.test")]).addr("relay.test", &["192.0.2.5"]);
        let p = policy(&no_self, &fixed);
        assert_eq!(hosts(&run(resolve_host(&t, "relay.test", &p))), ["relay.test[192.0.2.5]/0"]);
        assert_eq!(hosts(&run(resolve_host(&t, "192.0.2.1", &p))), ["192.0.2.1[192.0.2.1]/0"]);
        let e = run(resolve_host(&t, "nothere.test", &p)).unwrap_err();
        assert_eq!((e.outcome, e.dsn.as_str()), (Outcome::Bounced, "5.4.4"));
        // native only: getaddrinfo, and domains are hosts.
        t.native.insert("relay.test".into(), Ok(vec!["192.0.2.6".parse().unwrap()]));
        t.native.insert("slow.test".into(), Err((true, "Temporary failure in name resolution".into())));
        let mut p = policy(&no_self, &fixed);
        p.dns = false;
        p.native = true;
        assert_eq!(hosts(&run(resolve_domain(&t, "relay.test", &p))), ["relay.test[192.0.2.6]/0"]);
        let e = run(resolve_host(&t, "slow.test", &p)).unwrap_err();
        assert_eq!(
            e,
            Failure::new(
                Outcome::Deferred,
                "4.4.3",
                "unable to look up host slow.test: Temporary failure in name resolution".into()
            )
        );
        // dns, native: DNS first, then the system resolver.
        p.dns = true;
        t.native.insert("hosts-file.test".into(), Ok(vec!["192.0.2.8".parse().unwrap()]));
        assert_eq!(hosts(&run(resolve_host(&t, "hosts-file.test", &p))), ["hosts-file.test[192.0.2.8]/0"]);
    }
}

//! smtpd's DNS restrictions end to end, with the seed walkthrough's recipient restrictions
//! (seeds/003) and a DNS server on loopback: reject_unknown_helo_hostname,
//! reject_unknown_sender_domain, reject_unknown_recipient_domain, reject_rbl_client,
//! reject_rhsbl_sender and permit_dnswl_client, each with Postfix's reply, and
//! reject_unknown_client_hostname for a client without a name. Clients here come from
//! 127/8, whose names are `localhost` by RFC 6761 (resolvers answer them without asking a
//! server), so the PTR-and-A check of other addresses is tested in smtpd's `dnscheck` unit
//! tests.

use std::net::Ipv4Addr;

use rpost_testkit::Suite;
use rpost_testkit::dns::{DnsServer, Zone};
use rpost_testkit::smtp::SmtpClient;

const GOOD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const LISTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

fn zone() -> Zone {
    Zone::new()
        .a("5.0.0.127.bl.test", Ipv4Addr::new(127, 0, 0, 2))
        .txt("5.0.0.127.bl.test", "listed for testing")
        .a("helo.good.test", GOOD)
        .mx("mx.sender.test", 10, "mail.sender.test")
        .a("a.sender.test", GOOD)
        .null_mx("null.sender.test")
        .servfail("broken.sender.test")
        .mx("spam.example", 10, "mail.spam.example")
        .a("spam.example.dbl.test", Ipv4Addr::new(127, 0, 1, 2))
        .mx("remote.test", 10, "mail.remote.test")
        .a("5.0.0.127.wl.test", Ipv4Addr::new(127, 0, 0, 2))
}

/// The seed's restrictions (including its missing comma, which Postfix also accepts), with
/// two DNS lists added.
fn suite(dns: &DnsServer, extra: &[(&str, &str)]) -> Suite {
    let mut b = Suite::builder()
        .seed_domains()
        .main("dns_resolver_servers", &dns.servers_param())
        .main("smtpd_helo_required", "yes")
        // As before Postfix 2.10: relay control in smtpd_recipient_restrictions alone, so
        // that reject_unknown_recipient_domain meets remote recipients.
        .main("smtpd_relay_restrictions", "")
        .main(
            "smtpd_recipient_restrictions",
            "permit_mynetworks, reject_unknown_recipient_domain, permit_sasl_authenticated, \
             reject_unauth_pipelining, reject_unauth_destination, reject_unknown_client_hostname, \
             reject_unknown_helo_hostname reject_unknown_sender_domain, reject_rbl_client bl.test, \
             reject_rhsbl_sender dbl.test=127.0.1.[1..5], permit",
        )
        .inet("smtp", "n - n - - smtpd");
    for (k, v) in extra {
        b = b.main(k, v);
    }
    b.start_with(|s| s.write_config("users", "alice@example.test:{PLAIN}secret::::::\n"))
}

/// One transaction from `from_addr`: EHLO, MAIL, RCPT; the RCPT reply.
fn rcpt(suite: &Suite, from_addr: Ipv4Addr, helo: &str, sender: &str, rcpt: &str) -> String {
    let mut c = SmtpClient::connect_from(from_addr, suite.port("smtp"));
    assert!(c.cmd(&format!("EHLO {helo}")).starts_with("250"));
    let r = c.cmd(&format!("MAIL FROM:<{sender}>"));
    assert!(r.starts_with("250"), "{r}");
    c.cmd(&format!("RCPT TO:<{rcpt}>"))
}

#[test]
fn the_seed_walkthroughs_dns_restrictions() {
    let dns = DnsServer::start(zone());
    let s = suite(&dns, &[]);
    let alice = "alice@example.test";

    // A client with a name, a HELO name and a sender domain in DNS gets through.
    assert_eq!(rcpt(&s, GOOD, "helo.good.test", "a@mx.sender.test", alice), "250 2.1.5 Ok\r\n");
    s.wait_log("connect from localhost[127.0.0.2]", std::time::Duration::from_secs(10));
    // A sender domain with an address and no MX is fine too.
    assert_eq!(rcpt(&s, GOOD, "helo.good.test", "a@a.sender.test", alice), "250 2.1.5 Ok\r\n");

    // reject_unknown_helo_hostname.
    assert_eq!(
        rcpt(&s, GOOD, "nohost.test", "a@mx.sender.test", alice),
        "450 4.7.1 <nohost.test>: Helo command rejected: Host not found\r\n"
    );

    // reject_unknown_sender_domain: no such domain, a null MX, DNS failing.
    assert_eq!(
        rcpt(&s, GOOD, "helo.good.test", "a@nx.sender.test", alice),
        "450 4.1.8 <a@nx.sender.test>: Sender address rejected: Domain not found\r\n"
    );
    assert_eq!(
        rcpt(&s, GOOD, "helo.good.test", "a@null.sender.test", alice),
        "556 5.1.10 <a@null.sender.test>: Sender address rejected: Domain null.sender.test does not accept mail (nullMX)\r\n"
    );
    assert_eq!(
        rcpt(&s, GOOD, "helo.good.test", "a@broken.sender.test", alice),
        "450 4.1.8 <a@broken.sender.test>: Sender address rejected: Domain not found\r\n"
    );
    // The null sender has no domain to check.
    assert_eq!(rcpt(&s, GOOD, "helo.good.test", "", alice), "250 2.1.5 Ok\r\n");

    // reject_unknown_recipient_domain comes before the relay check in the seed's list.
    assert_eq!(
        rcpt(&s, GOOD, "helo.good.test", "a@mx.sender.test", "x@nx.remote.test"),
        "450 4.1.2 <x@nx.remote.test>: Recipient address rejected: Domain not found\r\n"
    );
    assert_eq!(
        rcpt(&s, GOOD, "helo.good.test", "a@mx.sender.test", "x@remote.test"),
        "554 5.7.1 <x@remote.test>: Relay access denied\r\n"
    );
    // From mynetworks nothing is asked.
    assert_eq!(
        rcpt(&s, Ipv4Addr::LOCALHOST, "nohost.test", "a@nx.sender.test", "x@nx.remote.test"),
        "250 2.1.5 Ok\r\n"
    );

    // reject_rbl_client, with the list's TXT text; reject_rhsbl_sender with a reply filter.
    assert_eq!(
        rcpt(&s, LISTED, "helo.good.test", "a@mx.sender.test", alice),
        "554 5.7.1 Service unavailable; Client host [127.0.0.5] blocked using bl.test; listed for testing\r\n"
    );
    assert_eq!(
        rcpt(&s, GOOD, "helo.good.test", "x@spam.example", alice),
        "554 5.7.1 Service unavailable; Sender address [spam.example] blocked using dbl.test\r\n"
    );
    // Every answer was looked up before the restriction needed it, and finding one missing
    // while probing is no DNS failure.
    let log = s.log();
    assert!(!log.contains("not looked up") && !log.contains("lookup failed for now"), "{log}");
}

#[test]
fn a_client_without_a_name_is_refused_by_reject_unknown_client_hostname() {
    let dns = DnsServer::start(zone());
    // No lookup: the client is "unknown", as Postfix has it then.
    let s = suite(&dns, &[("smtpd_peername_lookup", "no")]);
    assert_eq!(
        rcpt(&s, GOOD, "helo.good.test", "a@mx.sender.test", "alice@example.test"),
        "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.2]\r\n"
    );
    s.wait_log("connect from unknown[127.0.0.2]", std::time::Duration::from_secs(10));
}

#[test]
fn an_allow_listed_client_passes_later_lists_but_never_relays() {
    let dns = DnsServer::start(zone());
    let s = suite(
        &dns,
        &[(
            "smtpd_recipient_restrictions",
            "permit_dnswl_client wl.test, reject_unauth_destination, reject_rbl_client bl.test, permit",
        )],
    );
    // Listed under both: the allow list comes first.
    assert_eq!(rcpt(&s, LISTED, "helo.good.test", "a@mx.sender.test", "alice@example.test"), "250 2.1.5 Ok\r\n");
    assert_eq!(
        rcpt(&s, LISTED, "helo.good.test", "a@mx.sender.test", "x@remote.test"),
        "554 5.7.1 <x@remote.test>: Relay access denied\r\n"
    );
    assert_eq!(rcpt(&s, GOOD, "helo.good.test", "a@mx.sender.test", "alice@example.test"), "250 2.1.5 Ok\r\n");
}

#[test]
fn a_listed_client_is_refused_at_connect_time_without_delay_reject() {
    let dns = DnsServer::start(zone());
    let s = suite(&dns, &[("smtpd_delay_reject", "no"), ("smtpd_client_restrictions", "reject_rbl_client bl.test")]);
    let mut c = SmtpClient::connect_from(LISTED, s.port("smtp"));
    c.cmd("EHLO helo.good.test");
    assert_eq!(
        c.cmd("MAIL FROM:<a@mx.sender.test>"),
        "554 5.7.1 Service unavailable; Client host [127.0.0.5] blocked using bl.test; listed for testing\r\n"
    );
    let mut c = SmtpClient::connect_from(GOOD, s.port("smtp"));
    c.cmd("EHLO helo.good.test");
    assert_eq!(c.cmd("MAIL FROM:<a@mx.sender.test>"), "250 2.1.0 Ok\r\n");
}

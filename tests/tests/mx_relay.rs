//! MX delivery end to end: two rpost instances, A on 127.0.0.2 and B on 127.0.0.3, both
//! listening on the same SMTP port (their `smtp_tcp_port`), find each other through MX
//! records served by a loopback DNS server (`rpost_testkit::dns`). Two more addresses have
//! in-test SMTP servers that refuse (550) or greylist (450) every recipient; another has
//! nothing listening.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use rpost_testkit::Suite;
use rpost_testkit::dns::{DnsServer, Zone};
use rpost_testkit::smtp::SmtpClient;

const T: Duration = Duration::from_secs(60);

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Nothing listens here: connections are refused.
const DOWN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
/// An SMTP server that refuses every recipient with 550.
const REJECT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// An SMTP server that greylists every recipient with 450.
const GREY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

fn zone() -> Zone {
    Zone::new()
        .mx("a.test", 10, "mx.a.test")
        .a("mx.a.test", A)
        .mx("b.test", 10, "mx.b.test")
        .a("mx.b.test", B)
        // The first MX is down, the second is B.
        .mx("two.test", 10, "down.two.test")
        .a("down.two.test", DOWN)
        .mx("two.test", 20, "mx.b.test")
        .mx("reject.test", 10, "mx.reject.test")
        .a("mx.reject.test", REJECT)
        // The first MX greylists, the second is B.
        .mx("grey.test", 10, "mx.grey.test")
        .a("mx.grey.test", GREY)
        .mx("grey.test", 20, "mx.b.test")
        // Someone points their MX at A.
        .mx("loop.test", 10, "mx.a.test")
        .null_mx("nomail.test")
        .servfail("broken.test")
}

/// One instance: `name.test` (and `extra_domains`) are its virtual mailbox domains.
fn instance(me: Ipv4Addr, name: &str, port: u16, dns: &DnsServer, domains: &str, users: &str) -> Suite {
    let users = users.to_owned();
    Suite::builder()
        .main("myhostname", &format!("mx.{name}.test"))
        .main("mydomain", &format!("{name}.test"))
        .main("mydestination", "$myhostname, localhost")
        .virtual_delivery()
        .main("virtual_mailbox_domains", domains)
        .main("inet_interfaces", &me.to_string())
        .main("smtp_tcp_port", &port.to_string())
        .main("dns_resolver_servers", &dns.servers_param())
        .main("smtp_connect_timeout", "10s")
        .main("smtp_helo_timeout", "20s")
        // Long enough that a second message finds the connection still open.
        .main("smtp_connection_cache_time_limit", "60s")
        .inet_at("smtp", me, port, "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("smtp unix - - n - - smtp-client")
        .master_line("lmtp unix - - n - - smtp-client")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver")
        .start_with(move |s| s.write_config("users", &users))
}

fn new_dir(suite: &Suite, domain: &str, user: &str) -> std::path::PathBuf {
    suite.root().join("vmail").join(domain).join(user).join("mail/new")
}

fn wait_for_mail(suite: &Suite, domain: &str, user: &str, n: usize) -> Vec<String> {
    suite.wait_for_messages(&new_dir(suite, domain, user), n, T)
}

fn submit(suite: &Suite, at: Ipv4Addr, from: &str, to: &str, subject: &str) -> String {
    let mut c = SmtpClient::connect_to(SocketAddr::from((at, suite.port("smtp"))));
    assert!(c.greeting.starts_with("220 "), "{}", c.greeting);
    c.cmd("EHLO client.example");
    c.send_mail(from, &[to], &format!("Subject: {subject}\r\n\r\nhello\r\n")).expect("queued")
}

/// Answers every RCPT with `rcpt_reply` (a server that knows nobody, or greylists).
/// Serves until the test ends.
fn refusing_server(addr: Ipv4Addr, port: u16, rcpt_reply: &'static str) {
    let listener = TcpListener::bind((addr, port)).expect("bind a loopback address");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(T));
            let mut out = conn.try_clone().expect("clone");
            let mut rd = BufReader::new(conn);
            let _ = out.write_all(b"220 mx.reject.test ESMTP\r\n");
            let mut line = String::new();
            loop {
                line.clear();
                if rd.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let cmd = line.trim_end().to_ascii_uppercase();
                let reply = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                    "250 mx.reject.test\r\n"
                } else if cmd.starts_with("MAIL") || cmd == "RSET" {
                    "250 2.1.0 Ok\r\n"
                } else if cmd.starts_with("RCPT") {
                    rcpt_reply
                } else if cmd == "QUIT" {
                    let _ = out.write_all(b"221 2.0.0 Bye\r\n");
                    break;
                } else {
                    "503 5.5.1 Error: need RCPT command\r\n"
                };
                if out.write_all(reply.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
}

fn loopback_aliases_work(addrs: &[Ipv4Addr]) -> bool {
    // Linux routes all of 127/8 to lo; elsewhere only 127.0.0.1 may exist.
    addrs.iter().all(|a| TcpListener::bind((*a, 0)).is_ok())
}

struct World {
    dns: DnsServer,
    a: Suite,
    b: Suite,
}

fn world() -> Option<World> {
    if !loopback_aliases_work(&[A, B, DOWN, REJECT, GREY]) {
        eprintln!("127.0.0.2-6 cannot be bound here: skipped");
        return None;
    }
    let dns = DnsServer::start(zone());
    let port = rpost_testkit::free_port_on(&[A, B, DOWN, REJECT, GREY]);
    refusing_server(REJECT, port, "550 5.1.1 <nobody@reject.test>: Recipient address rejected: User unknown\r\n");
    refusing_server(GREY, port, "450 4.7.1 <bob@grey.test>: Recipient address rejected: Greylisted\r\n");
    let a = instance(A, "a", port, &dns, "a.test", "alice@a.test:{PLAIN}secret::::::\n");
    let b = instance(
        B,
        "b",
        port,
        &dns,
        "b.test two.test grey.test",
        "bob@b.test:{PLAIN}secret::::::\nbob@two.test:{PLAIN}secret::::::\nbob@grey.test:{PLAIN}secret::::::\n",
    );
    Some(World { dns, a, b })
}

fn bounces(suite: &Suite, user_domain: (&str, &str), n: usize) -> Vec<String> {
    wait_for_mail(suite, user_domain.1, user_domain.0, n)
}

#[test]
fn instances_relay_to_each_other_by_mx() {
    let Some(w) = world() else { return };
    let id = submit(&w.a, A, "alice@a.test", "bob@b.test", "a to b");
    let got = wait_for_mail(&w.b, "b.test", "bob", 1);
    assert!(got[0].contains("Subject: a to b") && got[0].contains("Return-Path: <alice@a.test>"), "{}", got[0]);
    let log = w.a.wait_log(&format!("{id}: to=<bob@b.test>, relay=mx.b.test[127.0.0.3]:{}", w.a.port("smtp")), T);
    assert!(log.contains("status=sent (250 2.0.0"), "{log}");

    // And back: B finds A through a.test's MX.
    submit(&w.b, B, "bob@b.test", "alice@a.test", "b to a");
    let got = wait_for_mail(&w.a, "a.test", "alice", 1);
    assert!(got[0].contains("Subject: b to a"), "{}", got[0]);
    w.b.wait_log("relay=mx.a.test[127.0.0.2]", T);

    // A second message from A while the first connection idles in the cache: reused,
    // and logged with conn_use=2 as Postfix does.
    let id2 = submit(&w.a, A, "alice@a.test", "bob@b.test", "again");
    wait_for_mail(&w.b, "b.test", "bob", 2);
    let log = w.a.wait_log(&format!("{id2}: to=<bob@b.test>"), T);
    let line = log.lines().find(|l| l.contains(&format!("{id2}: to=<bob@b.test>"))).unwrap();
    assert!(line.contains(", conn_use=2, delay="), "{line}");
    assert!(w.dns.queries() > 0);
}

#[test]
fn the_second_mx_takes_the_mail_when_the_first_is_down() {
    let Some(w) = world() else { return };
    let port = w.a.port("smtp");
    let id = submit(&w.a, A, "alice@a.test", "bob@two.test", "via backup");
    let got = wait_for_mail(&w.b, "two.test", "bob", 1);
    assert!(got[0].contains("Subject: via backup"), "{}", got[0]);
    let log = w.a.wait_log(&format!("{id}: to=<bob@two.test>, relay=mx.b.test[127.0.0.3]:{port}"), T);
    assert!(log.contains(&format!("connect to down.two.test[127.0.0.4]:{port}: Connection refused")), "{log}");

    // A 4xx to RCPT at the first MX: Postfix tries the next MX, and so do we.
    let id = submit(&w.a, A, "alice@a.test", "bob@grey.test", "past the greylist");
    let got = wait_for_mail(&w.b, "grey.test", "bob", 1);
    assert!(got[0].contains("Subject: past the greylist"), "{}", got[0]);
    let log = w.a.wait_log(&format!("{id}: to=<bob@grey.test>, relay=mx.b.test[127.0.0.3]:{port}"), T);
    assert!(
        log.contains(&format!(
            "{id}: host mx.grey.test[127.0.0.6] said: 450 4.7.1 <bob@grey.test>: Recipient address rejected: \
             Greylisted (in reply to RCPT TO command)"
        )),
        "{log}"
    );
}

#[test]
fn refusals_and_dns_failures_bounce_once_to_the_sender() {
    let Some(w) = world() else { return };
    // 5xx from the MX: one bounce to alice.
    let id = submit(&w.a, A, "alice@a.test", "nobody@reject.test", "refused");
    let got = bounces(&w.a, ("alice", "a.test"), 1);
    assert!(got[0].contains("multipart/report") && got[0].contains("nobody@reject.test"), "{}", got[0]);
    assert!(got[0].contains("550 5.1.1"), "{}", got[0]);
    let log = w.a.wait_log(&format!("{id}: to=<nobody@reject.test>"), T);
    assert!(log.contains("status=bounced (host mx.reject.test[127.0.0.5] said: 550 5.1.1"), "{log}");

    // An MX that is ourselves: "loops back to myself".
    let id = submit(&w.a, A, "alice@a.test", "someone@loop.test", "loop");
    bounces(&w.a, ("alice", "a.test"), 2);
    let log = w.a.wait_log(&format!("{id}: to=<someone@loop.test>"), T);
    assert!(log.contains("dsn=5.4.6, status=bounced (mail for loop.test loops back to myself)"), "{log}");

    // A null MX and a domain that does not exist.
    let id = submit(&w.a, A, "alice@a.test", "x@nomail.test", "nullmx");
    bounces(&w.a, ("alice", "a.test"), 3);
    let log = w.a.wait_log(&format!("{id}: to=<x@nomail.test>"), T);
    assert!(log.contains("dsn=5.1.10, status=bounced (Domain nomail.test does not accept mail (nullMX))"), "{log}");
    let id = submit(&w.a, A, "alice@a.test", "x@nowhere.test", "nxdomain");
    let got = bounces(&w.a, ("alice", "a.test"), 4);
    let log = w.a.wait_log(&format!("{id}: to=<x@nowhere.test>"), T);
    assert!(
        log.contains(
            "dsn=5.4.4, status=bounced (Host or domain name not found. Name service error for name=nowhere.test \
             type=MX: Host not found)"
        ),
        "{log}"
    );
    assert_eq!(got.len(), 4, "one bounce per message");

    // SERVFAIL: deferred, no bounce.
    let id = submit(&w.a, A, "alice@a.test", "x@broken.test", "servfail");
    let log = w.a.wait_log(&format!("{id}: to=<x@broken.test>"), T);
    assert!(log.contains("dsn=4.4.3, status=deferred (Host or domain name not found."), "{log}");
    assert_eq!(Suite::messages_in(&new_dir(&w.a, "a.test", "alice")).len(), 4);
}

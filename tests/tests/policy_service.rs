//! check_policy_service end to end: smtpd asks a policy server (Postfix's delegation
//! protocol, here a small greylisting-style server on loopback) exactly where its
//! restriction list reaches it, and takes its `action=` as an access(5) action.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};

use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A policy server answering by recipient; returns its port and the requests it got.
fn policy_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut request = String::new();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\n" {
                            break;
                        }
                        request.push_str(&line);
                    }
                    let action = if request.contains("recipient=grey@example.test\n") {
                        "DEFER_IF_PERMIT Greylisted, try later"
                    } else if request.contains("recipient=bad@example.test\n") {
                        "REJECT go away"
                    } else {
                        "DUNNO"
                    };
                    log.lock().unwrap().push(request);
                    if w.write_all(format!("action={action}\n\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

fn suite(policy: &str) -> Suite {
    Suite::builder()
        .seed_domains()
        .main("smtpd_policy_service_timeout", "5s")
        .main("smtpd_recipient_restrictions", &format!("reject_unauth_destination, check_policy_service {policy}"))
        .inet("smtp", "n - n - - smtpd")
        .start_with(|s| s.write_config("users", "alice@example.test:{PLAIN}secret::::::\n"))
}

#[test]
fn the_policy_service_decides_where_the_list_reaches_it() {
    let (port, seen) = policy_server();
    let s = suite(&format!("inet:127.0.0.1:{port}"));
    let mut c = SmtpClient::connect_from(OUTSIDE, s.port("smtp"));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@sender.example> SIZE=1234");
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>"), "250 2.1.5 Ok\r\n");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        for attr in [
            "request=smtpd_access_policy\n",
            "protocol_state=RCPT\n",
            "protocol_name=ESMTP\n",
            "client_address=127.0.0.2\n",
            "client_name=localhost\n",
            "helo_name=client.example\n",
            "sender=a@sender.example\n",
            "recipient=alice@example.test\n",
            "size=1234\n",
        ] {
            assert!(seen[0].contains(attr), "{attr:?} missing in {:?}", seen[0]);
        }
    }
    assert_eq!(
        c.cmd("RCPT TO:<grey@example.test>"),
        "450 4.7.1 <grey@example.test>: Recipient address rejected: Greylisted, try later\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bad@example.test>"),
        "554 5.7.1 <bad@example.test>: Recipient address rejected: go away\r\n"
    );
    // Refused before the list reaches the policy service: it is not asked.
    assert_eq!(c.cmd("RCPT TO:<x@remote.example>"), "554 5.7.1 <x@remote.example>: Relay access denied\r\n");
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[test]
fn a_policy_service_that_does_not_answer_takes_the_default_action() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = suite(&format!("inet:127.0.0.1:{port}"));
    let mut c = SmtpClient::connect_from(OUTSIDE, s.port("smtp"));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@sender.example>");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test>"),
        "451 4.3.5 <alice@example.test>: Recipient address rejected: Server configuration problem\r\n"
    );
}

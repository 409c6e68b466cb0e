//! Delivery status notifications and the scheduler, end to end with the real suite: smtpd,
//! qmgr, smtp-client (smtp and lmtp) and lmtp-deliver into the seed's virtual Maildirs.
//! Notifications are read where a user would read them: in the sender's (or the
//! postmaster's) mailbox. `dead.test` is routed by transport_maps to a loopback port where
//! nothing listens, so every attempt there fails with "Connection refused"; `reject.test`
//! to a scripted SMTP server that refuses every recipient with 550; `dsn.test` and
//! `nodsn.test` to scripted servers that accept everything, with and without DSN.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;

const T: Duration = Duration::from_secs(60);

/// How a scripted server answers.
#[derive(Clone, Copy)]
enum Script {
    /// 550 for every RCPT TO.
    Refuse,
    /// 250 for everything; `true`: EHLO advertises DSN.
    Accept(bool),
}

/// A scripted SMTP server on loopback. Returns its port.
fn scripted_server(script: Script) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let _ = out.write_all(b"220 scripted.test ESMTP\r\n");
                let mut in_data = false;
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { return };
                    if in_data {
                        in_data = line != ".";
                        if !in_data && out.write_all(b"250 2.0.0 Ok: queued as SCRIPTED\r\n").is_err() {
                            return;
                        }
                        continue;
                    }
                    let cmd = line.to_ascii_uppercase();
                    let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        match script {
                            Script::Accept(true) => b"250-scripted.test\r\n250-ENHANCEDSTATUSCODES\r\n250 DSN\r\n",
                            _ => b"250-scripted.test\r\n250 ENHANCEDSTATUSCODES\r\n",
                        }
                    } else if let (Script::Accept(_), true) = (script, cmd.starts_with("DATA")) {
                        in_data = true;
                        b"354 End data with <CR><LF>.<CR><LF>\r\n"
                    } else if let (Script::Accept(_), true) = (script, cmd.starts_with("RCPT")) {
                        b"250 2.1.5 Ok\r\n"
                    } else if cmd.starts_with("RCPT") {
                        b"550 5.1.1 User unknown\r\n"
                    } else if cmd.starts_with("QUIT") {
                        let _ = out.write_all(b"221 2.0.0 Bye\r\n");
                        return;
                    } else if cmd.starts_with("DATA") {
                        b"554 5.5.1 No valid recipients\r\n"
                    } else {
                        b"250 2.0.0 Ok\r\n"
                    };
                    if out.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn suite(extra: &[(&str, &str)]) -> Suite {
    let closed = rpost_testkit::free_port();
    let refusing = scripted_server(Script::Refuse);
    let (dsn, nodsn) = (scripted_server(Script::Accept(true)), scripted_server(Script::Accept(false)));
    let mut b = Suite::builder()
        .main("mydomain", "example.test")
        .main("myhostname", "mail.example.test")
        .main("mydestination", "$myhostname, localhost")
        .main("mynetworks", "127.0.0.0/8")
        .virtual_delivery()
        .main(
            "transport_maps",
            &format!(
                "inline:{{ dead.test=smtp:[127.0.0.1]:{closed}, reject.test=smtp:[127.0.0.1]:{refusing}, \
                 dsn.test=smtp:[127.0.0.1]:{dsn}, nodsn.test=smtp:[127.0.0.1]:{nodsn} }}"
            ),
        )
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("lmtp unix - - n - - smtp-client")
        .master_line("smtp unix - - n - - smtp-client")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver");
    for (k, v) in extra {
        b = b.main(k, v);
    }
    b.start_with(|s| {
        let users: String = ["sender", "alice", "postmaster"]
            .iter()
            .map(|u| format!("{u}@example.test:{{PLAIN}}secret::::::\n"))
            .collect();
        s.write_config("users", &users);
    })
}

/// The messages in a virtual user's `mail/new`, oldest name first.
fn mailbox(suite: &Suite, user: &str) -> Vec<String> {
    let dir = suite.root().join("vmail/example.test").join(user).join("mail/new");
    let mut names: Vec<_> =
        std::fs::read_dir(&dir).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    names.sort();
    names.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
}

/// Waits until `user` has a message containing `needle`; returns the mailbox.
fn wait_mail(suite: &Suite, user: &str, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + T;
    loop {
        let mail = mailbox(suite, user);
        if mail.iter().any(|m| m.contains(needle)) {
            return mail;
        }
        assert!(Instant::now() < deadline, "{user} never got {needle:?}: {mail:#?}\n{}", suite.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One SMTP transaction with raw MAIL/RCPT lines (for DSN parameters); returns the queue ID.
fn send(suite: &Suite, mail_from: &str, rcpts: &[&str], body: &str) -> String {
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    let r = c.cmd(&format!("MAIL FROM:{mail_from}"));
    assert!(r.starts_with("250"), "{r}");
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:{rcpt}"));
        assert!(r.starts_with("250"), "{rcpt}: {r}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let r = c.body(body);
    rpost_testkit::smtp::queued_id(&r).unwrap_or_else(|| panic!("not queued: {r}"))
}

fn count(mail: &[String], needle: &str) -> usize {
    mail.iter().filter(|m| m.contains(needle)).count()
}

#[test]
fn notify_success_brings_a_delivery_report() {
    let suite = suite(&[]);
    let id = send(
        &suite,
        "<sender@example.test> RET=HDRS ENVID=track-1",
        &["<alice@example.test> NOTIFY=SUCCESS ORCPT=rfc822;alice@example.test"],
        "Subject: please confirm\r\n\r\nsecret body\r\n",
    );
    wait_mail(&suite, "alice", "Subject: please confirm");
    let mail = wait_mail(&suite, "sender", "Subject: Successful Mail Delivery Report");
    let report = mail.iter().find(|m| m.contains("Successful Mail Delivery Report")).unwrap();
    for needle in [
        "Return-Path: <>",
        "From: MAILER-DAEMON@mail.example.test (Mail Delivery System)",
        "Content-Type: multipart/report; report-type=\"delivery-status\"",
        "This is the mail system at host mail.example.test.",
        "Your message was successfully delivered to the destination(s)",
        "Content-Type: message/delivery-status",
        "Reporting-MTA: dns; mail.example.test",
        &format!("X-Postfix-Queue-ID: {id}"),
        "X-Postfix-Sender: rfc822; sender@example.test",
        "Original-Envelope-Id: track-1",
        "Final-Recipient: rfc822; alice@example.test",
        "Original-Recipient: rfc822;alice@example.test",
        "Action: delivered",
        "Status: 2.",
        "Content-Type: text/rfc822-headers",
        "Subject: please confirm",
    ] {
        assert!(report.contains(needle), "{needle:?} missing:\n{report}");
    }
    assert!(!report.contains("secret body"), "success reports carry headers only");
    let log = suite.wait_log(&format!("{id}: sender delivery status notification: "), T);
    assert_eq!(mailbox(&suite, "sender").len(), 1, "exactly one report\n{log}");
}

/// Postfix's rule: NOTIFY=SUCCESS relayed to a server that advertised DSN went on with the
/// message, so that server reports; relayed to one without DSN, we report "relayed".
#[test]
fn notify_success_relayed_is_reported_only_where_the_next_hop_cannot() {
    let suite = suite(&[]);
    let id = send(
        &suite,
        "<sender@example.test>",
        &["<one@dsn.test> NOTIFY=SUCCESS", "<two@nodsn.test> NOTIFY=SUCCESS"],
        "Subject: relayed both ways\r\n\r\nbody\r\n",
    );
    let mail = wait_mail(&suite, "sender", "Subject: Successful Mail Delivery Report");
    let log = suite.wait_log(&format!("{id}: removed"), T);
    assert!(log.contains(&format!("{id}: to=<one@dsn.test>")) && log.contains("status=sent"), "{log}");
    let report = mail.iter().find(|m| m.contains("Successful Mail Delivery Report")).unwrap();
    for needle in ["Final-Recipient: rfc822; two@nodsn.test", "Action: relayed", "Subject: relayed both ways"] {
        assert!(report.contains(needle), "{needle:?} missing:\n{report}");
    }
    assert!(!report.contains("one@dsn.test"), "the DSN-capable hop reports for one@dsn.test:\n{report}");
    assert_eq!(mailbox(&suite, "sender").len(), 1, "exactly one report\n{log}");
}

#[test]
fn a_deferring_destination_gets_one_delay_warning_then_one_bounce() {
    let suite = suite(&[
        ("delay_warning_time", "2s"),
        ("minimal_backoff_time", "1s"),
        ("maximal_backoff_time", "2s"),
        ("queue_run_delay", "1s"),
        ("maximal_queue_lifetime", "12s"),
    ]);
    let id = send(&suite, "<sender@example.test>", &["<someone@dead.test>"], "Subject: slow one\r\n\r\nbody\r\n");
    // The same trouble for a sender who asked never to hear about it.
    let quiet =
        send(&suite, "<sender@example.test>", &["<other@dead.test> NOTIFY=NEVER"], "Subject: quiet\r\n\r\nbody\r\n");
    let mail = wait_mail(&suite, "sender", "Subject: Delayed Mail (still being retried)");
    let warning = mail.iter().find(|m| m.contains("Delayed Mail")).unwrap();
    for needle in [
        "THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE.",
        "Final-Recipient: rfc822; someone@dead.test",
        "Action: delayed",
        "Status: 4.4.1",
        "Connection refused",
        "Will-Retry-Until: ",
        "Content-Type: text/rfc822-headers",
        "Subject: slow one",
    ] {
        assert!(warning.contains(needle), "{needle:?} missing:\n{warning}");
    }
    // The lifetime runs out: one non-delivery notification with the whole message.
    let mail = wait_mail(&suite, "sender", "Subject: Undelivered Mail Returned to Sender");
    let bounce = mail.iter().find(|m| m.contains("Undelivered Mail Returned")).unwrap();
    for needle in ["Action: failed", "Final-Recipient: rfc822; someone@dead.test", "Content-Type: message/rfc822"] {
        assert!(bounce.contains(needle), "{needle:?} missing:\n{bounce}");
    }
    let log = suite.wait_log(&format!("{id}: removed"), T);
    assert!(log.contains(&format!("{id}: to=<someone@dead.test>, relay=none, delay=")), "{log}");
    assert!(log.contains("status=expired, returned to sender"), "{log}");
    // Several retries happened, yet only one warning was sent (recorded in the queue file).
    let retries = log
        .lines()
        .filter(|l| l.contains(&format!("{id}: to=<someone@dead.test>")) && l.contains("status=deferred"))
        .count();
    assert!(retries >= 2, "retried with backoff:\n{log}");
    assert_eq!(log.matches(&format!("{id}: sender delay notification: ")).count(), 1, "{log}");
    let log = suite.wait_log(&format!("{quiet}: removed"), T);
    assert!(!log.contains(&format!("{quiet}: sender")), "NOTIFY=NEVER: no warning, no bounce\n{log}");
    let mail = mailbox(&suite, "sender");
    assert!(!mail.iter().any(|m| m.contains("Subject: quiet")), "{mail:#?}");
    assert_eq!(count(&mail, "Subject: Delayed Mail"), 1, "{mail:#?}");
    assert_eq!(count(&mail, "Subject: Undelivered Mail Returned to Sender"), 1, "{mail:#?}");
}

#[test]
fn an_undeliverable_bounce_goes_to_the_postmaster_and_stops_there() {
    let suite = suite(&[
        ("notify_classes", "resource, software, 2bounce"),
        ("2bounce_notice_recipient", "postmaster@example.test"),
    ]);
    // reject.test knows nobody, so neither the message nor its bounce can be delivered.
    let id = send(&suite, "<ghost@reject.test>", &["<nobody@reject.test>"], "Subject: doomed\r\n\r\nbody\r\n");
    let mail = wait_mail(&suite, "postmaster", "Subject: Postmaster Copy: Undelivered Mail");
    let double = &mail[0];
    for needle in [
        "Return-Path: <double-bounce@mail.example.test>",
        "X-Postfix-Sender: rfc822; \r\n",
        "Final-Recipient: rfc822; ghost@reject.test",
        "Remote-MTA: dns; 127.0.0.1",
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown",
        "Action: failed",
        "Status: 5.",
        "Content-Type: message/rfc822",
        // The whole bounce comes back, with the original's headers inside it.
        "Subject: Undelivered Mail Returned to Sender",
        "Subject: doomed",
    ] {
        assert!(
            double.contains(needle) || double.contains(&needle.replace("\r\n", "\n")),
            "{needle:?} missing:\n{double}"
        );
    }
    let log = suite.wait_log(&format!("{id}: sender non-delivery notification: "), T);
    let bounce_id = log
        .lines()
        .find_map(|l| l.split(&format!("{id}: sender non-delivery notification: ")).nth(1))
        .unwrap()
        .trim()
        .to_string();
    let log = suite.wait_log(&format!("{bounce_id}: removed"), T);
    assert_eq!(log.matches(&format!("{bounce_id}: postmaster non-delivery notification: ")).count(), 1, "{log}");
    assert!(!log.contains(&format!("{bounce_id}: sender non-delivery notification")), "a bounce never bounces:\n{log}");
    // Nothing else is queued or delivered afterwards.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mailbox(&suite, "postmaster").len(), 1);
    assert!(String::from_utf8_lossy(&suite.rmaster(&["queue", "list"]).stdout).contains("Mail queue is empty"));
}

#[test]
fn an_undeliverable_double_bounce_is_discarded() {
    let suite =
        suite(&[("notify_classes", "resource, software, 2bounce"), ("2bounce_notice_recipient", "lost@reject.test")]);
    let id = send(&suite, "<ghost@reject.test>", &["<nobody@reject.test>"], "Subject: doomed\r\n\r\nbody\r\n");
    let log = suite.wait_log("undeliverable postmaster notification discarded", T);
    assert!(log.contains(&format!("{id}: sender non-delivery notification: ")), "{log}");
    assert_eq!(log.matches("postmaster non-delivery notification: ").count(), 1, "{log}");
    // Everything leaves the queue; nobody gets anything.
    let deadline = Instant::now() + T;
    while !String::from_utf8_lossy(&suite.rmaster(&["queue", "list"]).stdout).contains("Mail queue is empty") {
        assert!(Instant::now() < deadline, "queue never emptied:\n{}", suite.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(mailbox(&suite, "postmaster").is_empty());
    assert_eq!(suite.log().matches("postmaster non-delivery notification: ").count(), 1);
}

#[test]
fn a_dead_destination_is_suspended_while_other_mail_flows() {
    // Two recipients per request: twelve recipients for dead.test are six requests, five of
    // them at once (initial_destination_concurrency). Each is refused; the failed
    // pseudo-cohort (1/5 + 1/4 + 1/3 + 1/2 with the default feedback) makes the destination
    // dead, and the request still waiting is deferred without an attempt.
    let suite = suite(&[("smtp_destination_recipient_limit", "2")]);
    let rcpts: Vec<String> = (0..12).map(|n| format!("<u{n}@dead.test>")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let id = send(&suite, "<sender@example.test>", &rcpts, "Subject: x\r\n\r\nx\r\n");
    suite.wait_log(&format!("{id}: to=<u11@dead.test>"), T);
    let log = suite.wait_log("delivery temporarily suspended", T);
    assert!(log.contains("destination dead, delivery suspended"), "{log}");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&format!("{id}: to=<u"))).collect();
    let refused = lines.iter().filter(|l| l.contains("Connection refused") && !l.contains("suspended")).count();
    let suspended: Vec<&&str> =
        lines.iter().filter(|l| l.contains("delivery temporarily suspended: connect to ")).collect();
    assert!((4..=5).contains(&(refused / 2)), "four or five requests were tried:\n{log}");
    assert!(!suspended.is_empty(), "{log}");
    assert!(
        suspended[0]
            .contains("dsn=4.4.1, status=deferred (delivery temporarily suspended: connect to 127.0.0.1[127.0.0.1]:"),
        "{log}"
    );
    // New mail for the dead destination is deferred at once, without a connection.
    let id2 = send(&suite, "<sender@example.test>", &["<late@dead.test>"], "Subject: y\r\n\r\ny\r\n");
    let log = suite.wait_log(&format!("{id2}: to=<late@dead.test>, relay=none"), T);
    let tried: Vec<&str> = log.lines().filter(|l| l.contains(&format!("{id2}: to=<late@dead.test>"))).collect();
    assert_eq!(tried.len(), 1, "{log}");
    assert!(tried[0].contains("delivery temporarily suspended"), "{log}");
    // Mail for other destinations still flows.
    send(&suite, "<sender@example.test>", &["<alice@example.test>"], "Subject: still flowing\r\n\r\nx\r\n");
    wait_mail(&suite, "alice", "Subject: still flowing");
}

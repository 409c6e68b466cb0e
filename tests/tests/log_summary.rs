//! `rmaster log summary` over the maillog of a real run: one message delivered to two virtual
//! users, one relay attempt rejected, one unknown-user bounce; the report counts what the
//! daemons logged.

use std::time::{Duration, Instant};

use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;

const T: Duration = Duration::from_secs(30);

fn summary(suite: &Suite) -> String {
    let out = suite.rmaster(&["log", "summary", suite.log_path().to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 report")
}

fn count(report: &str, what: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().strip_suffix(what).and_then(|n| n.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no '{what}' line in\n{report}"))
}

#[test]
fn counts_a_real_maillog() {
    let suite = Suite::builder()
        .main("mydomain", "example.test")
        .main("myhostname", "mail.example.test")
        .main("mydestination", "$myhostname, localhost")
        // The test client on 127.0.0.1 is a stranger: no relaying for it.
        .main("mynetworks", "192.0.2.1/32")
        .virtual_delivery()
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("lmtp unix - - n - - smtp-client")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver")
        .start_with(|s| {
            s.write_config("users", "alice@example.test:{PLAIN}secret::::::\nbob@example.test:{PLAIN}secret::::::\n");
        });
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    let id = c
        .send_mail("Sender@Client.Example", &["alice@example.test", "bob@example.test"], "Subject: hi\r\n\r\nhello")
        .expect("queued");
    // Relaying for a stranger is refused at RCPT.
    c.cmd("MAIL FROM:<spam@bad.example>");
    let reply = c.cmd("RCPT TO:<victim@elsewhere.example>");
    assert!(reply.starts_with("554"), "{reply}");
    c.cmd("RSET");
    c.cmd("QUIT");
    suite.wait_log(&format!("{id}: removed"), T);

    let deadline = Instant::now() + T;
    let report = loop {
        let r = summary(&suite);
        if count(&r, "delivered") >= 2 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(count(&report, "received"), 1, "{report}");
    assert_eq!(count(&report, "delivered"), 2, "lmtp-deliver's own lines are not counted twice:\n{report}");
    assert_eq!(count(&report, "rejected"), 1, "{report}");
    assert_eq!(count(&report, "bounced"), 0, "{report}");
    assert!(report.contains("sender@client.example"), "senders are listed, case-folded:\n{report}");
    assert!(report.contains("alice@example.test") && report.contains("bob@example.test"), "{report}");
    assert!(report.contains("Relay access denied"), "reject reasons are listed:\n{report}");

    // Standard input works too, and a missing file is a clear error.
    let missing = suite.rmaster(&["log", "summary", "/nonexistent/maillog"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/maillog"));
}

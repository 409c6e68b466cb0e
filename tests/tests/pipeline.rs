//! The whole way in: SMTP to smtpd, qmgr, smtp-client speaking LMTP, lmtp-deliver, Maildir.
//! The seed walkthrough's delivery step: a virtual user gets mail in
//! `mail_home/mail/new` (mail_home = .../vmail/%d/%n, mail_location = maildir:~/mail).

use std::time::{Duration, Instant};

use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;

const T: Duration = Duration::from_secs(30);

fn suite() -> Suite {
    Suite::builder()
        .main("mydomain", "example.test")
        .main("myhostname", "mail.example.test")
        .main("mydestination", "$myhostname, localhost")
        .virtual_delivery()
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("lmtp unix - - n - - smtp-client")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver")
        .start_with(|s| {
            s.write_config("users", "alice@example.test:{PLAIN}secret::::::\nbob@example.test:{PLAIN}secret::::::\n");
        })
}

fn new_mail(suite: &Suite, user: &str) -> Vec<String> {
    let dir = suite.root().join("vmail/example.test").join(user).join("mail/new");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn wait_for_mail(suite: &Suite, user: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + T;
    loop {
        let mail = new_mail(suite, user);
        if mail.len() >= n {
            return mail;
        }
        assert!(Instant::now() < deadline, "{user} has {} of {n} messages\n{}", mail.len(), suite.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn smtp_to_maildir() {
    let suite = suite();
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    let id = c
        .send_mail(
            "sender@client.example",
            &["alice@example.test", "bob@example.test"],
            "Subject: all the way\r\n\r\nhello",
        )
        .expect("queued");
    let alice = wait_for_mail(&suite, "alice", 1);
    let bob = wait_for_mail(&suite, "bob", 1);
    for m in [&alice[0], &bob[0]] {
        assert!(m.starts_with("Return-Path: <sender@client.example>\n"), "{m}");
        assert!(m.contains("Subject: all the way\n") && m.ends_with("hello\n"), "{m}");
        assert!(m.contains(&format!("with ESMTP id {id}")), "smtpd's Received: header survives: {m}");
    }
    // The queue is empty again and every hop logged in the Postfix shape.
    let log = suite.wait_log(&format!("{id}: removed"), T);
    assert!(log.contains(&format!("{id}: to=<alice@example.test>")) && log.contains("status=sent"), "{log}");
    assert!(String::from_utf8_lossy(&suite.rmaster(&["queue", "list"]).stdout).contains("Mail queue is empty"));
}

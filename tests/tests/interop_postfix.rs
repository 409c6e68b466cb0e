//! Interop with a real Postfix (Debian's postfix package): Postfix's lmtp(8) client delivers
//! into rpost's lmtp-deliver, as a site does that keeps Postfix as its MTA and replaces
//! Dovecot with rpost (`virtual_transport = lmtp:inet:127.0.0.1:24`, or a unix socket that the
//! Postfix user may reach).
//!
//! A private Postfix instance ([`rpost_testkit::postfix`]) needs root; without root or without
//! Postfix the tests say so and pass.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rpost_testkit::postfix::Postfix;
use rpost_testkit::smtp::SmtpClient;
use rpost_testkit::{Suite, free_port, mail_user};

/// rpost with only lmtp-deliver (no smtpd, no qmgr): the mailbox half, as behind a Postfix.
fn mailbox_suite(master_line: &str, mail_owner: Option<&str>) -> Suite {
    let mut b = Suite::builder().virtual_delivery().master_line(master_line);
    if let Some(owner) = mail_owner {
        b = b.main("mail_owner", owner);
    }
    b.start_with(|s| s.write_config("users", "alice@example.test:{PLAIN}secret::::::\n"))
}

fn maildir_new(suite: &Suite, user: &str) -> Vec<PathBuf> {
    let new = suite.root().join(format!("vmail/example.test/{user}/mail/new"));
    std::fs::read_dir(new).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

/// Sends one message to Postfix's smtpd and waits until Postfix logs its LMTP delivery.
fn send_through_postfix(pf: &Postfix, ours: &Suite, to: &str, subject: &str) -> String {
    let mut c = SmtpClient::connect(pf.port());
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.starts_with("250"), "{ehlo}");
    let id = c.send_mail("sender@client.example", &[to], &format!("Subject: {subject}\r\n\r\nvia postfix\r\n"));
    let id = id.unwrap_or_else(|e| panic!("Postfix refused: {e}\n{}", pf.log()));
    c.cmd("QUIT");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = pf.log();
        if log.contains(&format!("{id}: removed")) {
            return log;
        }
        assert!(Instant::now() < deadline, "{id} not delivered; Postfix:\n{log}\nrpost:\n{}", ours.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn postfix_delivers_over_lmtp_inet_into_our_maildir() {
    let port = free_port();
    let suite = mailbox_suite(&format!("127.0.0.1:{port} inet n n n - - lmtp-deliver"), None);
    let Some(pf) = Postfix::start(
        &[
            ("virtual_mailbox_domains", "example.test"),
            ("virtual_transport", &format!("lmtp:inet:127.0.0.1:{port}")),
            ("smtpd_recipient_restrictions", "permit_mynetworks, reject"),
        ],
        "",
    ) else {
        return;
    };

    let log = send_through_postfix(&pf, &suite, "alice@example.test", "postfix over tcp");
    assert!(log.contains("to=<alice@example.test>") && log.contains("status=sent (250 2.0.0"), "{log}");
    assert!(log.contains(&format!("relay=127.0.0.1[127.0.0.1]:{port}")), "{log}");
    let files = maildir_new(&suite, "alice");
    assert_eq!(files.len(), 1, "{files:?}\n{}", suite.log());
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.contains("Subject: postfix over tcp") && text.contains("Return-Path: <sender@client.example>"),
        "{text}"
    );
    let meta = std::fs::metadata(&files[0]).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), mail_user().0);

    // An unknown user gets LMTP 550 from us, and Postfix bounces it (5.1.1, not a retry).
    let log = send_through_postfix(&pf, &suite, "nobody-here@example.test", "unknown");
    assert!(
        log.contains("to=<nobody-here@example.test>") && log.contains("dsn=5.1.1") && log.contains("status=bounced"),
        "{log}"
    );
}

#[test]
fn postfix_delivers_over_a_unix_socket_owned_by_its_user() {
    // The seed's layout with Dovecot (`unix_listener /var/spool/postfix/private/dovecot-lmtp`,
    // user postfix) becomes: rpost's mail_owner is postfix, and Postfix connects to
    // private/lmtp-deliver in rpost's spool.
    if nix::unistd::User::from_name("postfix").ok().flatten().is_none() || !nix::unistd::geteuid().is_root() {
        eprintln!("needs root and the postfix user: skipped");
        return;
    }
    let suite = mailbox_suite("lmtp-deliver unix - n n - - lmtp-deliver", Some("postfix"));
    let socket = suite.queue_dir().join("private/lmtp-deliver");
    let Some(pf) = Postfix::start(
        &[
            ("virtual_mailbox_domains", "example.test"),
            ("virtual_transport", &format!("lmtp:unix:{}", socket.display())),
            ("smtpd_recipient_restrictions", "permit_mynetworks, reject"),
        ],
        "",
    ) else {
        return;
    };

    let log = send_through_postfix(&pf, &suite, "alice@example.test", "postfix over unix");
    assert!(log.contains("status=sent (250 2.0.0"), "{log}");
    let files = maildir_new(&suite, "alice");
    assert_eq!(files.len(), 1, "{files:?}\n{}", suite.log());
    // The UID we assigned is in the uidlist, where Dovecot (or our imapd) will find it.
    let uidlist = std::fs::read_to_string(suite.root().join("vmail/example.test/alice/mail/dovecot-uidlist")).unwrap();
    let name = files[0].file_name().unwrap().to_str().unwrap().split(':').next().unwrap().to_string();
    assert!(uidlist.lines().any(|l| l.starts_with("1 ") && l.contains(&name)), "{uidlist}");
}

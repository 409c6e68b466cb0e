//! Interop with a real Postfix (Debian's postfix package): Postfix's smtpd with
//! `smtpd_sasl_type = dovecot` authenticates its SMTP clients against rpost's authd, as a
//! site does that keeps Postfix as its MTA and replaces Dovecot with rpost.
//!
//! Socket access, as at a real site: Dovecot's auth socket sits in Postfix's queue
//! (`/var/spool/postfix/private/auth`, owned by postfix). authd's socket is rpost's
//! `private/auth` (0700, mail_owner); here rpost runs with `mail_owner = postfix`, so
//! Postfix's smtpd (user postfix) reaches it by absolute `smtpd_sasl_path`. A site with
//! different owners gives both the same mail_owner, or lets the socket's directory be
//! traversed by Postfix's user.
//!
//! A private Postfix instance ([`rpost_testkit::postfix`]) needs root; without root or without
//! Postfix the test says so and passes.

use std::time::Duration;

use rpost_testkit::Suite;
use rpost_testkit::postfix::Postfix;
use rpost_testkit::smtp::SmtpClient;

const PASSWORD: &str = "Postfix-Sasl-5r&";

fn b64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            out.push(if i <= chunk.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[test]
fn postfix_authenticates_against_authd() {
    if !nix::unistd::geteuid().is_root() || nix::unistd::User::from_name("postfix").ok().flatten().is_none() {
        eprintln!("not root or no postfix user: Postfix SASL interop skipped");
        return;
    }
    let prepared = Suite::builder()
        .main("mail_owner", "postfix")
        .main("auth_passdb", "passwd-file:{root}/etc/users")
        .main("auth_mechanisms", "plain login")
        .master_line("auth unix - - n - 1 authd -v")
        .prepare();
    let out = prepared.rmaster(&["pw", "-s", "SHA512-CRYPT", "-p", PASSWORD]);
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    prepared.write_config("users", &format!("alice@example.test:{hash}::::::\n"));
    let ours = prepared.start_prepared();
    let socket = ours.queue_dir().join("private/auth");

    let sasl_path = socket.display().to_string();
    let Some(pf) = Postfix::start(
        &[
            ("smtpd_sasl_type", "dovecot"),
            ("smtpd_sasl_path", &sasl_path),
            ("smtpd_sasl_auth_enable", "yes"),
            ("smtpd_tls_auth_only", "no"),
            ("smtpd_relay_restrictions", "permit_sasl_authenticated, reject_unauth_destination"),
            ("mynetworks", "127.0.0.2/32"),
        ],
        "",
    ) else {
        return;
    };

    // AUTH PLAIN with an initial response.
    let mut c = SmtpClient::connect(pf.port());
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN") || ehlo.contains("AUTH LOGIN PLAIN"), "{ehlo}\n{}", pf.log());
    let r = c.cmd(&format!("AUTH PLAIN {}", b64(format!("\0alice@example.test\0{PASSWORD}").as_bytes())));
    assert!(r.starts_with("235 2.7.0"), "{r}\n{}\n{}", pf.log(), ours.log());
    // Authenticated: relaying to a foreign domain is accepted.
    assert!(c.cmd("MAIL FROM:<alice@example.test>").starts_with("250"));
    let rcpt = c.cmd("RCPT TO:<someone@elsewhere.example>");
    assert!(rcpt.starts_with("250"), "{rcpt}");
    c.cmd("QUIT");

    // AUTH LOGIN, step by step.
    let mut c = SmtpClient::connect(pf.port());
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("AUTH LOGIN").trim_end(), format!("334 {}", b64(b"Username:")));
    assert_eq!(c.cmd(&b64(b"alice@example.test")).trim_end(), format!("334 {}", b64(b"Password:")));
    let r = c.cmd(&b64(PASSWORD.as_bytes()));
    assert!(r.starts_with("235 2.7.0"), "{r}\n{}", pf.log());
    c.cmd("QUIT");

    // A wrong password is refused, and without AUTH relaying is denied.
    let mut c = SmtpClient::connect(pf.port());
    c.cmd("EHLO client.example");
    let r = c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice@example.test\0wrong")));
    assert!(r.starts_with("535 5.7.8"), "{r}\n{}", pf.log());
    assert!(c.cmd("MAIL FROM:<x@client.example>").starts_with("250"));
    let rcpt = c.cmd("RCPT TO:<someone@elsewhere.example>");
    assert!(rcpt.starts_with("454") || rcpt.starts_with("554"), "{rcpt}");
    c.cmd("QUIT");

    // Postfix names the SASL user at MAIL FROM; Dovecot gives no reason for a wrong password.
    let log = pf.wait_log("SASL PLAIN authentication failed", Duration::from_secs(30));
    assert!(log.contains("sasl_method=PLAIN, sasl_username=alice@example.test"), "{log}");
    let ours_log = ours.wait_log("Password mismatch", Duration::from_secs(10));
    assert!(!ours_log.contains(PASSWORD) && !ours_log.contains(&hash), "a secret in rpost's log");
}

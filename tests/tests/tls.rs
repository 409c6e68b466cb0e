//! TLS end to end: the self-signed certificate `rmaster check` creates, our smtp-client
//! delivering to our smtpd over STARTTLS (log lines and Received: as Postfix writes them),
//! a replaced certificate taking effect at `rmaster reload`, and both directions against a
//! real Postfix with mandatory TLS (skipped without root or Postfix).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use rpost_queue::{Queue, QueueDir, QueueId};
use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;

const T: Duration = Duration::from_secs(60);

#[test]
fn rmaster_check_creates_a_self_signed_certificate_once() {
    let suite = Suite::builder().inet("smtp", "n - n - - smtpd -o smtpd_tls_security_level=may").prepare();
    let out = suite.rmaster(&["check"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let cert = suite.config_dir().join("tls/rpost.pem");
    let key = suite.config_dir().join("tls/rpost.key");
    assert!(text.contains(&format!("created a self-signed TLS certificate: {}", cert.display())), "{text}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let pem = std::fs::read_to_string(&cert).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let out = suite.rmaster(&["check"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("created a self-signed"), "{text}");
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), pem, "an existing certificate is kept");
}

#[test]
fn no_certificate_is_created_when_no_service_wants_tls() {
    let suite = Suite::builder().inet("smtp", "n - n - - smtpd").prepare();
    suite.rmaster(&["check"]);
    assert!(!suite.config_dir().join("tls/rpost.pem").exists());
}

#[test]
fn smtp_client_delivers_to_smtpd_over_starttls() {
    // The receiving side: TLS may, no qmgr (the message stays in incoming/).
    let b = Suite::builder()
        .main("myhostname", "mx.b.test")
        .main("virtual_mailbox_domains", "b.test")
        .main("local_recipient_maps", "")
        .main("alias_maps", "")
        .main("smtpd_tls_received_header", "yes")
        .inet("smtp", "n - n - - smtpd -o smtpd_tls_security_level=may")
        .start();
    let a = Suite::builder()
        .main("myhostname", "mail.a.test")
        .main("relayhost", &format!("[127.0.0.1]:{}", b.port("smtp")))
        .main("smtp_tls_security_level", "may")
        .main("local_recipient_maps", "")
        .main("alias_maps", "")
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("smtp unix - - n - - smtp-client")
        .start();
    let mut c = SmtpClient::connect(a.port("smtp"));
    c.cmd("EHLO client.example");
    let id = c.send_mail("sender@a.test", &["bob@b.test"], "Subject: over tls\r\n\r\nhello\r\n").expect("queued");
    let log = a.wait_log(&format!("{id}: removed"), T);
    let port = b.port("smtp");
    assert!(
        log.contains(&format!(
            "Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{port}: TLSv1.3 with cipher TLS_"
        )),
        "{log}"
    );
    let sent = log.lines().find(|l| l.contains(&format!("{id}: to=<bob@b.test>"))).expect("delivery line");
    assert!(sent.contains("status=sent (250 2.0.0 Ok: queued as "), "{sent}");
    let theirs = sent.rsplit("queued as ").next().unwrap().trim_end_matches(')').to_string();
    let blog = b.wait_log("Anonymous TLS connection established", T);
    assert!(
        blog.contains("Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher TLS_"),
        "{blog}"
    );
    let q = Queue::new(b.queue_dir());
    let f = q.open(QueueDir::Incoming, &QueueId::parse(&theirs).unwrap()).unwrap();
    let content = String::from_utf8(f.content().unwrap()).unwrap();
    assert!(content.contains("\r\n\t(using TLSv1.3 with cipher TLS_"), "{content}");
    assert!(
        content.contains("(No client certificate requested)\r\n\tby mx.b.test (rpost) with ESMTPS id"),
        "{content}"
    );
}

/// The SHA-256 of the certificate the server presents after STARTTLS (Python's ssl).
fn fingerprint(port: u16) -> Option<String> {
    let script = format!(
        "import smtplib, ssl, hashlib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n\
         s.starttls(context=ssl._create_unverified_context())\n\
         print(hashlib.sha256(s.sock.getpeercert(True)).hexdigest())\ns.quit()\n"
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && text.len() == 64).then_some(text)
}

#[test]
fn a_replaced_certificate_is_served_after_reload() {
    if Command::new("openssl").arg("version").output().is_err() || fingerprint_tools_missing() {
        eprintln!("openssl or python3 missing: test skipped");
        return;
    }
    let suite = Suite::builder().inet("smtp", "n - n - - smtpd -o smtpd_tls_security_level=may").start();
    let port = suite.port("smtp");
    let before = fingerprint(port).expect("STARTTLS with the generated certificate");
    let dir = suite.config_dir().join("tls");
    let (new_cert, new_key) = (dir.join("new.pem"), dir.join("new.key"));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=replaced.example.test", "-keyout"])
        .arg(&new_key)
        .arg("-out")
        .arg(&new_cert)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    std::fs::rename(&new_key, dir.join("rpost.key")).unwrap();
    std::fs::rename(&new_cert, dir.join("rpost.pem")).unwrap();
    let out = suite.rmaster(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // New clients get new processes, which read the new files.
    let deadline = Instant::now() + T;
    loop {
        let now = fingerprint(port);
        if now.as_ref().is_some_and(|f| *f != before) {
            break;
        }
        assert!(Instant::now() < deadline, "still the old certificate after reload: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn fingerprint_tools_missing() -> bool {
    Command::new("python3").arg("-c").arg("import ssl, smtplib").output().map(|o| !o.status.success()).unwrap_or(true)
}

/// A real Postfix (Debian's) with `smtp_tls_security_level = encrypt` relays to our smtpd:
/// its smtp client must find STARTTLS and complete the handshake, or the mail would stay.
#[test]
fn postfix_relays_to_our_smtpd_with_mandatory_tls() {
    let ours = Suite::builder()
        .main("myhostname", "mx.b.test")
        .main("virtual_mailbox_domains", "b.test")
        .main("local_recipient_maps", "")
        .main("alias_maps", "")
        .inet("smtp", "n - n - - smtpd -o smtpd_tls_security_level=may")
        .start();
    let port = ours.port("smtp");
    let Some(pf) = rpost_testkit::postfix::Postfix::start(
        &[
            ("relayhost", &format!("[127.0.0.1]:{port}")),
            ("smtp_tls_security_level", "encrypt"),
            ("smtp_tls_loglevel", "1"),
        ],
        "",
    ) else {
        return;
    };
    let mut c = SmtpClient::connect(pf.port());
    c.cmd("EHLO client.example");
    c.send_mail("sender@client.example", &["bob@b.test"], "Subject: via postfix\r\n\r\nhi\r\n").expect("queued");
    let log = pf.wait_log("status=sent", T);
    assert!(log.contains(&format!("TLS connection established to 127.0.0.1[127.0.0.1]:{port}: TLSv1.3")), "{log}");
    let ours_log = ours.wait_log("Anonymous TLS connection established", T);
    assert!(ours_log.contains("from localhost[127.0.0.1]: TLSv1.3 with cipher"), "{ours_log}");
}

/// Our smtp-client with `smtp_tls_security_level = encrypt` delivers to a real Postfix
/// smtpd that offers STARTTLS with the certificate `rmaster check` made.
#[test]
fn our_smtp_client_relays_to_postfix_with_mandatory_tls() {
    // The certificate for Postfix: made by our own `rmaster check` in a throwaway suite.
    let certs = Suite::builder().inet("smtp", "n - n - - smtpd -o smtpd_tls_security_level=may").prepare();
    certs.rmaster(&["check"]);
    let cert = certs.config_dir().join("tls/rpost.pem");
    let key = certs.config_dir().join("tls/rpost.key");
    let Some(pf) = rpost_testkit::postfix::Postfix::start(
        &[
            ("smtpd_tls_cert_file", &cert.display().to_string()),
            ("smtpd_tls_key_file", &key.display().to_string()),
            ("smtpd_tls_security_level", "may"),
            ("smtpd_tls_loglevel", "1"),
            ("relay_domains", "b.test"),
            ("smtpd_recipient_restrictions", "permit_mynetworks, reject"),
            ("defer_transports", "smtp"),
        ],
        "",
    ) else {
        return;
    };
    let a = Suite::builder()
        .main("myhostname", "mail.a.test")
        .main("relayhost", &format!("[127.0.0.1]:{}", pf.port()))
        .main("smtp_tls_security_level", "encrypt")
        .main("local_recipient_maps", "")
        .main("alias_maps", "")
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("smtp unix - - n - - smtp-client")
        .start();
    let mut c = SmtpClient::connect(a.port("smtp"));
    c.cmd("EHLO client.example");
    let id = c.send_mail("sender@a.test", &["bob@b.test"], "Subject: to postfix\r\n\r\nhi\r\n").expect("queued");
    let log = a.wait_log(&format!("{id}: removed"), T);
    assert!(
        log.contains(&format!("Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{}: TLSv1.3", pf.port())),
        "{log}"
    );
    assert!(log.contains("status=sent (250 2.0.0 Ok: queued as "), "{log}");
    let pf_log = pf.wait_log("Anonymous TLS connection established from", T);
    assert!(pf_log.contains("TLSv1.3 with cipher"), "{pf_log}");
}

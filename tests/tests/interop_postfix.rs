//! Interop with a real Postfix (Debian's postfix package): Postfix's lmtp(8) client delivers
//! into rpost's lmtp-deliver, as a site does that keeps Postfix as its MTA and replaces
//! Dovecot with rpost (`virtual_transport = lmtp:inet:127.0.0.1:24`, or a unix socket that the
//! Postfix user may reach).
//!
//! A private Postfix instance runs from a temporary config directory (`postfix -c DIR start`,
//! its own queue and data directories), so the system's Postfix, if any, is not touched. It
//! needs root (Postfix's master refuses anything else); without root or without Postfix the
//! tests say so and pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rpost_testkit::smtp::SmtpClient;
use rpost_testkit::{Suite, free_port, mail_user};

/// A private Postfix instance; stopped (and its directory removed) on drop.
struct Postfix {
    dir: PathBuf,
    port: u16,
}

impl Postfix {
    /// Starts Postfix with smtpd on a free loopback port and `transport` as the
    /// virtual_transport for `example.test`. None when Postfix cannot run here.
    fn start(transport: &str) -> Option<Postfix> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("not root: Postfix interop skipped (Postfix's master needs root)");
            return None;
        }
        if !Path::new("/usr/sbin/postfix").exists() || nix::unistd::User::from_name("postfix").ok()?.is_none() {
            eprintln!("Postfix is not installed: interop skipped (.ci/run installs it)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("rpost-postfix-{}-{}", std::process::id(), free_port()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["etc", "spool", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let postfix_user = nix::unistd::User::from_name("postfix").unwrap().unwrap();
        nix::unistd::chown(&dir.join("data"), Some(postfix_user.uid), None).unwrap();
        let port = free_port();
        let d = dir.display();
        std::fs::write(
            dir.join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/spool\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nsetgid_group = postdrop\nmyhostname = postfix.example.test\n\
                 mydestination =\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\n\
                 maillog_file = {d}/postfix.log\nmaillog_file_prefixes = {d}\n\
                 virtual_mailbox_domains = example.test\nvirtual_transport = {transport}\n\
                 smtpd_recipient_restrictions = permit_mynetworks, reject\nalias_maps =\nalias_database =\n\
                 smtp_dns_support_level = disabled\n"
            ),
        )
        .unwrap();
        // The services a queue-and-deliver instance needs, nothing else.
        std::fs::write(
            dir.join("etc/master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n\
                 cleanup unix n - n - 0 cleanup\n\
                 qmgr unix n - n 300 1 qmgr\n\
                 rewrite unix - - n - - trivial-rewrite\n\
                 bounce unix - - n - 0 bounce\n\
                 defer unix - - n - 0 bounce\n\
                 trace unix - - n - 0 bounce\n\
                 verify unix - - n - 1 verify\n\
                 proxymap unix - - n - - proxymap\n\
                 error unix - - n - - error\n\
                 retry unix - - n - - error\n\
                 lmtp unix - - n - - lmtp\n\
                 anvil unix - - n - 1 anvil\n\
                 scache unix - - n - 1 scache\n\
                 postlog unix-dgram n - n - 1 postlogd\n"
            ),
        )
        .unwrap();
        let pf = Postfix { dir, port };
        let out = Command::new("/usr/sbin/postfix").arg("-c").arg(pf.dir.join("etc")).arg("start").output().unwrap();
        if !out.status.success() {
            panic!("postfix start failed: {}\n{}", String::from_utf8_lossy(&out.stderr), pf.log());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Postfix smtpd never listened:\n{}", pf.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(pf)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postfix.log")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/postfix").arg("-c").arg(self.dir.join("etc")).arg("abort").output();
        // `abort` returns before the master has gone; its pid file says whom to wait for.
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("spool/pid/master.pid"))
            && let Ok(pid) = pid.trim().parse::<u32>()
        {
            let deadline = Instant::now() + Duration::from_secs(10);
            while rpost_testkit::pid_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
    let mut c = SmtpClient::connect(pf.port);
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
    let Some(pf) = Postfix::start(&format!("lmtp:inet:127.0.0.1:{port}")) else { return };

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
    let Some(pf) = Postfix::start(&format!("lmtp:unix:{}", socket.display())) else { return };

    let log = send_through_postfix(&pf, &suite, "alice@example.test", "postfix over unix");
    assert!(log.contains("status=sent (250 2.0.0"), "{log}");
    let files = maildir_new(&suite, "alice");
    assert_eq!(files.len(), 1, "{files:?}\n{}", suite.log());
    // The UID we assigned is in the uidlist, where Dovecot (or our imapd) will find it.
    let uidlist = std::fs::read_to_string(suite.root().join("vmail/example.test/alice/mail/dovecot-uidlist")).unwrap();
    let name = files[0].file_name().unwrap().to_str().unwrap().split(':').next().unwrap().to_string();
    assert!(uidlist.lines().any(|l| l.starts_with("1 ") && l.contains(&name)), "{uidlist}");
}

//! Interop with a real Dovecot (Debian's dovecot-lmtpd): rpost's smtp-client delivers to
//! Dovecot's LMTP socket, as a Postfix + Dovecot site does with
//! `virtual_transport = lmtp:unix:private/dovecot-lmtp`. Skipped when Dovecot is not installed
//! (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rpost_testkit::Suite;
use rpost_testkit::dovecot::Dovecot;
use rpost_testkit::smtp::SmtpClient;

/// A private Dovecot with LMTP only, mail under `dir/mail/%d/%n/Maildir`, written as the
/// mail user (nobody as root, else the caller).
fn lmtp_dovecot(dir: &Path) -> Option<Dovecot> {
    let (user, group) = if nix::unistd::geteuid().is_root() {
        (
            "nobody".to_string(),
            nix::unistd::Group::from_gid(nix::unistd::User::from_name("nobody").ok()??.gid).ok()??.name,
        )
    } else {
        let u = nix::unistd::User::from_uid(nix::unistd::getuid()).ok()??;
        (u.name, nix::unistd::Group::from_gid(nix::unistd::getgid()).ok()??.name)
    };
    std::fs::create_dir_all(dir.join("mail")).ok()?;
    if nix::unistd::geteuid().is_root() {
        let u = nix::unistd::User::from_name("nobody").ok()??;
        std::os::unix::fs::chown(dir.join("mail"), Some(u.uid.as_raw()), None).ok()?;
    }
    std::fs::write(dir.join("users"), "alice@example.test:{PLAIN}x::::::\n").ok()?;
    let conf = format!(
        "protocols = lmtp\nmail_location = maildir:{d}/mail/%d/%n/Maildir\nmail_uid = {user}\nmail_gid = {group}\n\
         first_valid_uid = 1\nfirst_valid_gid = 1\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         userdb {{\n  driver = static\n  args = uid={user} gid={group} home={d}/mail/%d/%n\n}}\n\
         service lmtp {{\n  unix_listener {d}/lmtp {{\n    mode = 0666\n  }}\n}}\n",
        d = dir.display()
    );
    Dovecot::start(dir, &conf, "lmtp", false)
}

#[test]
fn smtp_client_delivers_to_a_real_dovecot_lmtp() {
    let tmp = tempfile_dir();
    let Some(dovecot) = lmtp_dovecot(&tmp) else { return };
    let socket = dovecot.dir().join("lmtp");
    let suite = Suite::builder()
        .main("myhostname", "mail.example.test")
        .main("virtual_mailbox_domains", "example.test")
        .main("virtual_transport", &format!("lmtp:unix:{}", socket.display()))
        .main("local_recipient_maps", "")
        .main("alias_maps", "")
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("lmtp unix - - n - - smtp-client")
        .start();
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    let id = c
        .send_mail("sender@client.example", &["alice@example.test"], "Subject: to dovecot\r\n\r\nhello dovecot")
        .expect("queued");
    let log = suite.wait_log(&format!("{id}: removed"), Duration::from_secs(30));
    assert!(log.contains("status=sent (250 2.0.0 <alice@example.test>") && log.contains("Saved)"), "{log}");
    let new = dovecot.dir().join("mail/example.test/alice/Maildir/new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Subject: to dovecot") && text.contains(&format!("id {id}")), "{text}");
    drop(dovecot);
    let _ = std::fs::remove_dir_all(tmp);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("rpost-dovecot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d
}

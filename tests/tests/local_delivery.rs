//! The local delivery agent end to end: smtpd -> qmgr -> local (master.cf line
//! `local unix - n n - - local`), and for forwarded mail local -> incoming/ -> qmgr ->
//! smtp-client -> lmtp-deliver. Aliases with a virtual user, a file and a command; an
//! unknown user's bounce; a system user's mbox under mail_spool_directory and Maildir in its
//! home; `.forward`; a forwarding loop. As root the file and command run as default_privs
//! (`nobody`) and a throwaway user is created with useradd; as another user those parts
//! deliver as that user (and the home Maildir part is skipped).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rpost_testkit::smtp::SmtpClient;
use rpost_testkit::{Suite, SuiteBuilder};

const T: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn builder() -> SuiteBuilder {
    Suite::builder()
        .main("mydomain", "example.test")
        .main("myhostname", "mail.example.test")
        .main("mydestination", "$myhostname, localhost")
        .virtual_delivery()
        .main("recipient_delimiter", "+")
        .main("mail_spool_directory", "{root}/mail")
        .main("alias_maps", "hash:{root}/etc/aliases")
        .main("default_privs", "nobody")
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("lmtp unix - - n - - smtp-client")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver")
        .master_line("local unix - n n - - local")
}

/// Virtual users, the mail spool and an aliases database (`rmaster map build --aliases`).
fn common(s: &Suite, aliases: &str) {
    s.write_config("users", "alice@example.test:{PLAIN}secret::::::\nbob@example.test:{PLAIN}secret::::::\n");
    let spool = s.root().join("mail");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::set_permissions(&spool, PermissionsExt::from_mode(0o755)).unwrap();
    s.write_config("aliases", aliases);
    let path = s.config_dir().join("aliases");
    let out = s.rmaster(&["map", "build", "--aliases", path.to_str().unwrap()]);
    assert!(out.status.success(), "map build: {}", String::from_utf8_lossy(&out.stderr));
}

fn send(suite: &Suite, from: &str, to: &str, body: &str) -> String {
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    c.send_mail(from, &[to], body).expect("queued")
}

fn new_mail(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| (e.path(), std::fs::read_to_string(e.path()).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn virtual_new(suite: &Suite, user: &str) -> PathBuf {
    suite.root().join("vmail/example.test").join(user).join("mail/new")
}

fn wait_for(suite: &Suite, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", suite.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_mail(suite: &Suite, dir: &Path, n: usize) -> Vec<(PathBuf, String)> {
    wait_for(suite, &format!("{n} messages in {}", dir.display()), || new_mail(dir).len() >= n);
    new_mail(dir)
}

/// Waits until `id` and every message queued because of it (bounces, forwarded copies)
/// have left the queue.
fn wait_settled(suite: &Suite, id: &str) {
    suite.wait_log(&format!("{id}: removed"), T);
    wait_for(suite, "an empty queue", || {
        let q = suite.queue_dir();
        ["incoming", "active", "deferred"]
            .iter()
            .all(|d| std::fs::read_dir(q.join(d)).map(|mut r| r.next().is_none()).unwrap_or(true))
    });
}

fn mail_ids() -> (u32, u32) {
    rpost_testkit::mail_user()
}

#[test]
fn aliases_deliver_to_a_virtual_user_a_file_and_a_command() {
    let out_dir: std::cell::OnceCell<PathBuf> = std::cell::OnceCell::new();
    let suite = builder().start_with(|s| {
        let out = s.root().join("out");
        std::fs::create_dir_all(&out).unwrap();
        // default_privs must be able to create the file there.
        std::fs::set_permissions(&out, PermissionsExt::from_mode(0o1777)).unwrap();
        let o = out.display();
        common(s, &format!("# system aliases\npostmaster: root\nroot: alice@example.test, {o}/file.mbox,\n  \"|/bin/sh -c 'cat > {o}/cmd.out'\"\n"));
        let _ = out_dir.set(out);
    });
    let out = out_dir.get().unwrap();
    let id =
        send(&suite, "bob@example.test", "root@mail.example.test", "Subject: to root\r\n\r\nFrom the test\r\nbody");
    wait_settled(&suite, &id);

    let alice = wait_mail(&suite, &virtual_new(&suite, "alice"), 1);
    assert_eq!(alice.len(), 1);
    let m = &alice[0].1;
    assert!(m.starts_with("Return-Path: <bob@example.test>\nDelivered-To: alice@example.test\n"), "{m}");
    assert!(m.contains("\nDelivered-To: root@mail.example.test\n") && m.contains("Subject: to root\n"), "{m}");

    let mbox = std::fs::read_to_string(out.join("file.mbox")).unwrap();
    assert!(mbox.starts_with("From bob@example.test  "), "{mbox}");
    assert!(mbox.contains("\nReturn-Path: <bob@example.test>\nDelivered-To: root@mail.example.test\n"), "{mbox}");
    assert!(mbox.ends_with("\n\n>From the test\nbody\n\n"), "{mbox:?}");
    let cmd = std::fs::read_to_string(out.join("cmd.out")).unwrap();
    assert!(cmd.starts_with("From bob@example.test  ") && cmd.ends_with("\n\nFrom the test\nbody\n"), "{cmd:?}");

    // Never as root: the alias database is root's, so default_privs (nobody) wrote both.
    let want = if is_root() { mail_ids().0 } else { nix::unistd::geteuid().as_raw() };
    for f in ["file.mbox", "cmd.out"] {
        let md = std::fs::metadata(out.join(f)).unwrap();
        assert_eq!(md.uid(), want, "{f} owner");
    }
    let log = suite.log();
    for needle in [
        format!("{id}: to=<root@mail.example.test>, relay=local, "),
        "status=sent (forwarded as ".to_string(),
        format!("status=sent (delivered to file: {}/file.mbox)", out.display()),
        "status=sent (delivered to command: /bin/sh -c 'cat > ".to_string(),
    ] {
        assert!(log.contains(&needle), "{needle}\n{log}");
    }
    assert!(log.contains("rpost/local["), "{log}");
}

#[test]
fn unknown_local_user_bounces_once() {
    let suite = builder().start_with(|s| common(s, "root: alice@example.test\n"));
    let id = send(&suite, "alice@example.test", "nosuchuser@mail.example.test", "Subject: lost\r\n\r\nhello");
    wait_settled(&suite, &id);
    let log = suite.log();
    assert!(
        log.contains(&format!("{id}: to=<nosuchuser@mail.example.test>, relay=local, "))
            && log.contains("dsn=5.1.1, status=bounced (unknown user: \"nosuchuser\")"),
        "{log}"
    );
    let mail = new_mail(&virtual_new(&suite, "alice"));
    assert_eq!(mail.len(), 1, "exactly one bounce\n{log}");
    let b = &mail[0].1;
    assert!(b.starts_with("Return-Path: <>\n"), "{b}");
    assert!(b.contains("multipart/report") && b.contains("report-type=\"delivery-status\""), "{b}");
    assert!(b.contains("Final-Recipient: rfc822; nosuchuser@mail.example.test"), "{b}");
    assert!(b.contains("Status: 5.1.1") && b.contains("unknown user"), "{b}");
}

/// A system user for the test: a throwaway account when root (removed on drop), else the
/// current user.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    created: bool,
}

impl TestUser {
    fn new(tag: &str) -> TestUser {
        if !is_root() {
            let u = nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap();
            eprintln!("not root: delivering to the current user {}, home Maildir part skipped", u.name);
            return TestUser { name: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), home: u.dir, created: false };
        }
        let name = format!("rpl{tag}{}", std::process::id());
        let home = std::env::temp_dir().join(format!("rpost-local-home-{name}"));
        let _ = Command::new("userdel").arg(&name).output();
        // Tests run in parallel: useradd may find /etc/passwd locked for a moment.
        let mut tries = 0;
        loop {
            let out =
                Command::new("useradd").args(["-M", "-s", "/bin/sh", "-d"]).arg(&home).arg(&name).output().unwrap();
            if out.status.success() {
                break;
            }
            tries += 1;
            assert!(tries < 50, "useradd {name}: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(200));
        }
        let u = nix::unistd::User::from_name(&name).unwrap().unwrap();
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, PermissionsExt::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&home, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
        TestUser { name, uid: u.uid.as_raw(), gid: u.gid.as_raw(), home, created: true }
    }

    /// Writes a file as the user owns it (mode 0644).
    fn write(&self, path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, PermissionsExt::from_mode(0o644)).unwrap();
        if self.created {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).unwrap();
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if self.created {
            let _ = Command::new("userdel").arg(&self.name).output();
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}

#[test]
fn system_user_mailbox_forward_and_loop() {
    let user = TestUser::new("f");
    let name = user.name.clone();
    let suite = builder()
        .main("forward_path", "{root}/fwd/$user/.forward${recipient_delimiter}${extension}, {root}/fwd/$user/.forward")
        .main("virtual_alias_domains", "loop.test")
        .main("virtual_alias_maps", "texthash:{root}/etc/virtual")
        .start_with(|s| {
            common(s, "root: alice@example.test\n");
            s.write_config("virtual", &format!("loop@loop.test {name}+loop@mail.example.test\n"));
        });
    let spool = suite.root().join("mail").join(&name);
    // biff = yes: comsat on 127.0.0.1:512 hears "user@offset" (only root may listen there).
    let comsat = std::net::UdpSocket::bind("127.0.0.1:512").ok();

    // 1. Mailbox under mail_spool_directory, owned by the user.
    let id =
        send(&suite, "alice@example.test", &format!("{name}@mail.example.test"), "Subject: one\r\n\r\nFrom here\r\n");
    wait_settled(&suite, &id);
    if let Some(c) = &comsat {
        c.set_read_timeout(Some(T)).unwrap();
        let mut buf = [0u8; 200];
        let n = c.recv(&mut buf).expect("biff notification");
        assert_eq!(&buf[..n], format!("{name}@0\n").as_bytes());
    }
    let mbox = std::fs::read_to_string(&spool).unwrap_or_else(|e| panic!("{}: {e}\n{}", spool.display(), suite.log()));
    assert!(mbox.starts_with("From alice@example.test  "), "{mbox}");
    assert!(
        mbox.contains(&format!("\nReturn-Path: <alice@example.test>\nDelivered-To: {name}@mail.example.test\n")),
        "{mbox}"
    );
    assert!(mbox.ends_with("Subject: one\n\n>From here\n\n"), "{mbox:?}");
    let md = std::fs::metadata(&spool).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (user.uid, 0o600));
    assert!(!suite.root().join(format!("mail/{name}.lock")).exists(), "dot-lock removed");
    assert!(suite.log().contains(&format!("to=<{name}@mail.example.test>, relay=local, ")));
    assert!(suite.log().contains("status=sent (delivered to mailbox)"));

    // 2. .forward: a copy in the mailbox (\user) and one forwarded to a virtual user.
    let fwd = suite.root().join("fwd").join(&name);
    user.write(&fwd.join(".forward"), &format!("# keep a copy\n\\{name}, bob@example.test\n"));
    let id = send(&suite, "alice@example.test", &format!("{name}@mail.example.test"), "Subject: two\r\n\r\nsecond");
    wait_settled(&suite, &id);
    let bob = wait_mail(&suite, &virtual_new(&suite, "bob"), 1);
    assert!(bob[0].1.contains(&format!("\nDelivered-To: {name}@mail.example.test\n")), "{}", bob[0].1);
    let mbox = std::fs::read_to_string(&spool).unwrap();
    assert_eq!(mbox.matches("\nFrom alice@example.test  ").count() + 1, 2, "{mbox}");
    assert!(mbox.ends_with("Subject: two\n\nsecond\n\n"), "{mbox:?}");

    // A world-writable .forward is ignored (the mail goes to the mailbox only).
    std::fs::set_permissions(fwd.join(".forward"), PermissionsExt::from_mode(0o666)).unwrap();
    let id = send(&suite, "alice@example.test", &format!("{name}@mail.example.test"), "Subject: three\r\n\r\nthird");
    wait_settled(&suite, &id);
    assert_eq!(new_mail(&virtual_new(&suite, "bob")).len(), 1, "{}", suite.log());
    assert!(std::fs::read_to_string(&spool).unwrap().ends_with("Subject: three\n\nthird\n\n"));
    assert!(suite.log().contains("is group or world writable: ignored"));

    // 3. A forwarding loop through the queue: .forward+loop -> loop@loop.test, which the
    //    virtual alias table maps back. The second pass sees its own Delivered-To.
    user.write(&fwd.join(".forward+loop"), "loop@loop.test\n");
    let rcpt = format!("{name}+loop@mail.example.test");
    let id = send(&suite, "alice@example.test", &rcpt, "Subject: loop\r\n\r\nround and round");
    wait_settled(&suite, &id);
    let log = suite.log();
    assert!(log.contains(&format!("dsn=5.4.6, status=bounced (mail forwarding loop for {rcpt})")), "{log}");
    let alice = new_mail(&virtual_new(&suite, "alice"));
    assert_eq!(alice.len(), 1, "exactly one bounce\n{log}");
    assert!(alice[0].1.contains("multipart/report") && alice[0].1.contains("mail forwarding loop"), "{}", alice[0].1);
}

#[test]
fn home_maildir_is_the_users() {
    if !is_root() {
        eprintln!("skipped: needs root to create a throwaway user (home_mailbox writes into the home)");
        return;
    }
    let user = TestUser::new("m");
    let name = user.name.clone();
    let suite = builder().main("home_mailbox", "Maildir/").start_with(|s| common(s, "root: alice@example.test\n"));
    let id = send(&suite, "alice@example.test", &format!("{name}@localhost"), "Subject: md\r\n\r\nmaildir");
    wait_settled(&suite, &id);
    let new = wait_mail(&suite, &user.home.join("Maildir/new"), 1);
    assert_eq!(new.len(), 1);
    assert!(
        new[0].1.starts_with(&format!("Return-Path: <alice@example.test>\nDelivered-To: {name}@localhost\n")),
        "{}",
        new[0].1
    );
    for p in [new[0].0.clone(), user.home.join("Maildir"), user.home.join("Maildir/new")] {
        assert_eq!(std::fs::metadata(&p).unwrap().uid(), user.uid, "{}", p.display());
    }
    assert!(suite.log().contains("status=sent (delivered to maildir)"));
}

#[test]
fn include_files_deliver_addresses_but_not_files_by_default() {
    let suite = builder().start_with(|s| {
        let etc = s.config_dir().display().to_string();
        common(s, &format!("staff: :include:{etc}/staff.list\n"));
        s.write_config("staff.list", &format!("# the team\nbob@example.test\n{etc}/never-written\n"));
    });
    let id = send(&suite, "alice@example.test", "staff@mail.example.test", "Subject: team\r\n\r\nhi all");
    wait_settled(&suite, &id);
    let bob = wait_mail(&suite, &virtual_new(&suite, "bob"), 1);
    assert!(bob[0].1.contains("\nDelivered-To: staff@mail.example.test\n"), "{}", bob[0].1);
    assert!(!suite.config_dir().join("never-written").exists());
    let log = suite.log();
    assert!(log.contains("dsn=5.7.1, status=bounced (mail to file is restricted: "), "{log}");
    // The file's failure bounces the recipient: one notification to the sender.
    let alice = new_mail(&virtual_new(&suite, "alice"));
    assert_eq!(alice.len(), 1, "{log}");
    assert!(alice[0].1.contains("mail to file is restricted"), "{}", alice[0].1);
}

#[test]
fn owner_alias_gets_the_errors_of_its_list() {
    let suite =
        builder().start_with(|s| common(s, "list: bob@example.test, gone-user\nowner-list: alice@example.test\n"));
    let id = send(&suite, "bob@example.test", "list@mail.example.test", "Subject: to the list\r\n\r\nhello list");
    wait_settled(&suite, &id);
    let log = suite.log();
    // The member's copy comes from the owner, so remote errors go there too.
    let bob = new_mail(&virtual_new(&suite, "bob"));
    assert_eq!(bob.len(), 1, "the list copy only, no bounce to the poster\n{log}");
    assert!(bob[0].1.starts_with("Return-Path: <owner-list@mail.example.test>\n"), "{}", bob[0].1);
    // The unknown member is reported to the owner, not to the poster.
    let alice = new_mail(&virtual_new(&suite, "alice"));
    assert_eq!(alice.len(), 1, "{log}");
    let n = &alice[0].1;
    assert!(n.starts_with("Return-Path: <>\n") && n.contains("To: owner-list@mail.example.test\n"), "{n}");
    assert!(n.contains("Final-Recipient: rfc822; gone-user@mail.example.test\nOriginal-Recipient: rfc822; list@mail.example.test\nAction: failed\nStatus: 5.1.1\n"), "{n}");
    assert!(n.contains("text/rfc822-headers\n\n") && n.contains("Subject: to the list\n"), "{n}");
    assert!(log.contains("status=bounced (unknown user: \"gone-user\")"), "{log}");
    assert!(
        log.contains(&format!("{id}: sender non-delivery notification to owner-list@mail.example.test: ")),
        "{log}"
    );
}

#[test]
fn a_symlinked_mailbox_is_never_written_through() {
    let user = TestUser::new("s");
    let name = user.name.clone();
    let victim: std::cell::OnceCell<PathBuf> = std::cell::OnceCell::new();
    let suite = builder().start_with(|s| {
        common(s, "root: alice@example.test\n");
        let v = s.root().join("victim");
        std::fs::write(&v, "precious\n").unwrap();
        std::os::unix::fs::symlink(&v, s.root().join("mail").join(&name)).unwrap();
        let _ = victim.set(v);
    });
    let id = send(&suite, "alice@example.test", &format!("{name}@mail.example.test"), "Subject: x\r\n\r\nx");
    wait_settled(&suite, &id);
    assert_eq!(std::fs::read_to_string(victim.get().unwrap()).unwrap(), "precious\n");
    let log = suite.log();
    assert!(log.contains("is a symbolic link"), "{log}");
    assert!(log.contains(&format!("{id}: to=<{name}@mail.example.test>, relay=local, ")), "{log}");
}

#[test]
fn fallback_transport_takes_unknown_users() {
    // Users without a system account are handed to the LMTP transport, as a Postfix with
    // `fallback_transport = lmtp:unix:private/dovecot-lmtp` hands them to Dovecot.
    let suite = builder().main("fallback_transport", "lmtp:unix:private/lmtp-deliver").start_with(|s| {
        common(s, "root: alice@example.test\n");
        s.write_config(
            "users",
            "alice@example.test:{PLAIN}secret::::::\nbob@example.test:{PLAIN}secret::::::\nwebuser@mail.example.test:{PLAIN}secret::::::\n",
        );
    });
    let id = send(&suite, "alice@example.test", "webuser@mail.example.test", "Subject: fb\r\n\r\nfallback");
    wait_settled(&suite, &id);
    let dir = suite.root().join("vmail/mail.example.test/webuser/mail/new");
    let got = wait_mail(&suite, &dir, 1);
    assert!(
        got[0].1.starts_with("Return-Path: <alice@example.test>\nDelivered-To: webuser@mail.example.test\n"),
        "{}",
        got[0].1
    );
    let log = suite.log();
    assert!(log.contains(&format!("{id}: to=<webuser@mail.example.test>, relay=local, ")), "{log}");
    assert!(log.contains("status=sent (delivered via lmtp service ("), "{log}");
}

#[test]
fn a_missing_alias_database_defers_until_it_is_built() {
    let suite = builder().main("minimal_backoff_time", "1s").main("queue_run_delay", "1s").start_with(|s| {
        common(s, "");
        // The source is edited but `rmaster map build` has not run: no .db yet.
        std::fs::remove_file(s.config_dir().join("aliases.db")).unwrap();
        s.write_config("aliases", "root: alice@example.test\n");
    });
    let id = send(&suite, "bob@example.test", "root@mail.example.test", "Subject: wait\r\n\r\nfor the aliases");
    suite.wait_log(&format!("{id}: to=<root@mail.example.test>, relay=local, "), T);
    let log = suite.wait_log("status=deferred (alias database unavailable: ", T);
    assert!(new_mail(&virtual_new(&suite, "alice")).is_empty(), "{log}");
    let path = suite.config_dir().join("aliases");
    assert!(suite.rmaster(&["map", "build", "--aliases", path.to_str().unwrap()]).status.success());
    let _ = suite.rmaster(&["queue", "flush"]);
    wait_settled(&suite, &id);
    let alice = wait_mail(&suite, &virtual_new(&suite, "alice"), 1);
    assert!(alice[0].1.contains("Subject: wait\n"), "{}", alice[0].1);
}

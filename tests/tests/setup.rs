//! The first ten minutes: `rmaster setup DOMAIN --user ADDRESS` writes a working virtual-domain
//! configuration (checked by running it: the quickstart user logs in through authd and gets
//! mail over SMTP into the Maildir), refuses to clobber an edited main.cf, rejects hostile
//! names; `rmaster gen-man` documents every parameter `rmaster conf -d` prints (rpost(5)).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rpost_testkit::smtp::SmtpClient;
use rpost_testkit::{bin, free_port};

const T: Duration = Duration::from_secs(30);

fn rmaster(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("rmaster")).arg("-c").arg(dir).args(args).env_remove("RPOST_CONFIG").output().expect("run rmaster")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn setup(etc: &Path, vmail: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["setup", "example.test", "--mail-dir", vmail.to_str().unwrap()];
    args.extend_from_slice(extra);
    rmaster(etc, &args)
}

#[test]
fn setup_writes_config_user_and_dns_records() {
    let tmp = tempdir();
    let (etc, vmail) = (tmp.join("etc"), tmp.join("vmail"));
    let out = setup(&etc, &vmail, &["--user", "Alice@example.test"]);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    let password = report.lines().find_map(|l| l.strip_prefix("  password: ")).expect("password printed").to_string();
    assert!(password.len() >= 16, "{report}");
    for needle in [
        "example.test.\tIN MX 10 mail.example.test.",
        "mail.example.test.\tIN A",
        "example.test.\tIN TXT \"v=spf1 mx -all\"",
        "_dmarc.example.test.\tIN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@example.test\"",
        "port 993",
        "port 587 STARTTLS (or 465 SSL/TLS)",
    ] {
        assert!(report.contains(needle), "missing {needle:?} in\n{report}");
    }
    // The hash, not the password, is stored; it verifies as doveadm pw -t would.
    let users = std::fs::read_to_string(etc.join("users")).unwrap();
    assert!(!users.contains(&password), "{users}");
    let hash = users.strip_prefix("alice@example.test:").and_then(|r| r.split("::").next()).expect(&users);
    assert!(hash.starts_with("{SHA512-CRYPT}$6$"), "{users}");
    assert!(rmaster(&etc, &["pw", "-t", hash, "-p", &password]).status.success());
    assert!(!rmaster(&etc, &["pw", "-t", hash, "-p", "wrong"]).status.success());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(etc.join("users")).unwrap().permissions().mode() & 0o777, 0o640);

    let conf = text(&rmaster(&etc, &["conf", "-n"]));
    for line in [
        "myhostname = mail.example.test",
        "mydomain = example.test",
        "virtual_mailbox_domains = example.test",
        &format!("auth_passdb = passwd-file:{}", etc.join("users").display()),
        &format!("mail_home = {}/%d/%n", vmail.display()),
        "mail_location = maildir:~/Maildir",
        "smtpd_sasl_type = dovecot",
    ] {
        assert!(conf.lines().any(|l| l == line), "missing {line:?} in\n{conf}");
    }
    let master = text(&rmaster(&etc, &["conf", "-M"]));
    assert!(master.contains("submission") && master.contains("smtps"), "{master}");

    // An edited main.cf is not clobbered; --force keeps the old one.
    let before = std::fs::read_to_string(etc.join("main.cf")).unwrap();
    let again = setup(&etc, &vmail, &[]);
    assert!(!again.status.success() && text(&again).contains("has been edited"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(etc.join("main.cf")).unwrap(), before);
    // The existing user is not silently reset either.
    let forced = setup(&etc, &vmail, &["--force", "--hostname", "mx.example.test"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_eq!(std::fs::read_to_string(etc.join("main.cf.bak")).unwrap(), before);
    assert!(text(&rmaster(&etc, &["conf", "-n"])).contains("myhostname = mx.example.test"));
    assert_eq!(std::fs::read_to_string(etc.join("users")).unwrap(), users, "no --user: the user file is kept");
}

#[test]
fn setup_rejects_hostile_names_and_writes_nothing() {
    let tmp = tempdir();
    let (etc, vmail) = (tmp.join("etc"), tmp.join("vmail"));
    for args in [
        vec!["setup", "example.test\nrelayhost = [evil.example]", "--mail-dir", vmail.to_str().unwrap()],
        vec!["setup", "example.test", "--user", "alice@other.example", "--mail-dir", vmail.to_str().unwrap()],
        vec!["setup", "example.test", "--user", "a:b@example.test", "--mail-dir", vmail.to_str().unwrap()],
        vec!["setup", "example.test", "--user", "a b@example.test", "--mail-dir", vmail.to_str().unwrap()],
        vec!["setup", "example.test", "--mail-dir", "relative/dir"],
        vec!["setup", "example.test", "--mail-dir", "/var/vmail/$evil"],
        vec!["setup", "localhost"],
    ] {
        let out = rmaster(&etc, &args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(text(&out).contains("rmaster: fatal: "), "{}", text(&out));
        assert!(!etc.join("main.cf").exists(), "{args:?} wrote main.cf");
    }
    // A user that exists already keeps its password without --force.
    assert!(setup(&etc, &vmail, &["--user", "bob@example.test"]).status.success());
    let users = std::fs::read_to_string(etc.join("users")).unwrap();
    std::fs::write(etc.join("main.cf"), rpost_main_cf_default()).unwrap();
    let out = setup(&etc, &vmail, &["--user", "bob@example.test"]);
    assert!(!out.status.success() && text(&out).contains("already exists"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(etc.join("users")).unwrap(), users);
}

/// The packaged main.cf, which counts as unedited.
fn rpost_main_cf_default() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/main.cf")).unwrap()
}

/// The quickstart configuration runs: with only the test's paths and ports changed, the
/// first user authenticates through authd and receives mail over SMTP into its Maildir.
#[test]
fn setup_config_delivers_to_the_first_user() {
    let tmp = tempdir();
    let (etc, vmail) = (tmp.join("etc"), tmp.join("vmail"));
    let out = setup(&etc, &vmail, &["--user", "alice@example.test"]);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    let password = report.lines().find_map(|l| l.strip_prefix("  password: ")).unwrap().to_string();
    let (uid, gid) = rpost_testkit::mail_user();
    let me = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).unwrap().unwrap().name;
    let port = free_port();
    let spool = tmp.join("spool");
    let edits = [
        format!("queue_directory = {}", spool.display()),
        format!("daemon_directory = {}", rpost_testkit::bin_dir().display()),
        format!("maillog_file = {}", tmp.join("maillog").display()),
        format!("mail_owner = {me}"),
        format!("mail_uid = {uid}"),
        format!("mail_gid = {gid}"),
        "inet_interfaces = loopback-only".into(),
        "inet_protocols = ipv4".into(),
        "dns_resolver_servers = 127.0.0.1:1".into(),
        "master_stop_timeout = 5s".into(),
    ];
    let mut args = vec!["conf", "-e"];
    args.extend(edits.iter().map(String::as_str));
    assert!(rmaster(&etc, &args).status.success());
    // Test ports instead of 25/587/465/143; everything else as setup wrote it.
    let master_cf = std::fs::read_to_string(etc.join("master.cf")).unwrap();
    let master_cf: String = master_cf
        .lines()
        .filter(|l| !l.starts_with("submission ") && !l.starts_with("smtps ") && !l.starts_with("imap"))
        .filter(|l| !l.starts_with("  -o"))
        .map(|l| {
            if l.starts_with("smtp ") && l.contains(" inet ") {
                l.replacen("smtp ", &format!("127.0.0.1:{port} "), 1)
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    std::fs::write(etc.join("master.cf"), master_cf).unwrap();
    // setup gave the mailbox root to vmail; the suite delivers as mail_user().
    nix::unistd::chown(&vmail, Some(nix::unistd::Uid::from_raw(uid)), Some(nix::unistd::Gid::from_raw(gid))).ok();
    // The users file must be readable by mail_owner (authd).
    nix::unistd::chown(&etc.join("users"), None, Some(nix::unistd::Gid::from_raw(gid))).ok();
    let check = rmaster(&etc, &["check"]);
    assert!(check.status.success(), "{}", text(&check));
    let mut master = Command::new(bin("rmaster"))
        .arg("-c")
        .arg(&etc)
        .args(["start", "--foreground"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        let deadline = Instant::now() + T;
        let auth = loop {
            let o = rmaster(&etc, &["auth", "test", "alice@example.test", &password]);
            if o.status.success() || Instant::now() > deadline {
                break o;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(auth.status.success(), "{}", text(&auth));
        let mut c = SmtpClient::connect(port);
        c.cmd("EHLO client.example");
        c.send_mail("someone@client.example", &["alice@example.test"], "Subject: quickstart\r\n\r\nhi")
            .expect("queued");
        let new = vmail.join("example.test/alice/Maildir/new");
        let deadline = Instant::now() + T;
        while std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0) == 0 {
            let log = std::fs::read_to_string(tmp.join("maillog")).unwrap_or_default();
            assert!(Instant::now() < deadline, "no mail in {}\n{log}", new.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        // postmaster@ the domain reaches the first user through setup's virtual table.
        let mut c = SmtpClient::connect(port);
        c.cmd("EHLO client.example");
        c.send_mail("someone@client.example", &["postmaster@example.test"], "Subject: pm\r\n\r\nhi").expect("queued");
        let deadline = Instant::now() + T;
        while std::fs::read_dir(&new).map(|d| d.count()).unwrap_or(0) < 2 {
            let log = std::fs::read_to_string(tmp.join("maillog")).unwrap_or_default();
            assert!(Instant::now() < deadline, "postmaster mail not in {}\n{log}", new.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let _ = rmaster(&etc, &["stop"]);
    let _ = master.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn man_page_documents_every_parameter() {
    let tmp = tempdir();
    let man = tmp.join("man");
    let out = Command::new(bin("rmaster")).arg("gen-man").arg(&man).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let page = std::fs::read_to_string(man.join("rpost.5")).unwrap();
    std::fs::write(tmp.join("main.cf"), "").unwrap();
    std::fs::write(tmp.join("master.cf"), "").unwrap();
    let defaults = text(&rmaster(&tmp, &["conf", "-d"]));
    let mut n = 0;
    for line in defaults.lines() {
        let name = line.split(" =").next().unwrap();
        assert!(page.contains(&format!("\n.B {}\n", name.replace('-', "\\-"))), "rpost(5) lacks {name}");
        n += 1;
    }
    assert!(n > 300, "rmaster conf -d printed {n} parameters");
    for p in ["rmaster.8", "rmaster-setup.8", "rmaster-queue.8", "rmaster-log-summary.8"] {
        assert!(man.join(p).is_file(), "{p} missing");
    }
    let comp = tmp.join("comp");
    assert!(Command::new(bin("rmaster")).arg("gen-completions").arg(&comp).status().unwrap().success());
    let bash = std::fs::read_to_string(comp.join("rmaster.bash")).unwrap();
    assert!(bash.contains("setup") && bash.contains("complete"), "{bash}");
    assert!(std::fs::read_to_string(comp.join("_rmaster")).unwrap().contains("#compdef rmaster"));
}

/// A fresh directory under the system temp dir, removed when the test ends.
struct TmpDir(std::path::PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TmpDir {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir().join(format!(
        "rpost-setup-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    // Daemons running as mail_owner must reach the spool and maildir below it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    TmpDir(base)
}

//! pop3d end to end: the real rmaster runs authd (auth client and auth-userdb sockets),
//! lmtp-deliver (mail goes in through LMTP) and pop3d on a STLS port and an implicit-TLS
//! port, as packaging/master.cf describes them. Real clients: Python's poplib (STLS and
//! POP3_SSL) and fetchmail. Skipped with a message when python3 or fetchmail is missing
//! (`.ci/run` installs fetchmail).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rpost_testkit::Suite;

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool} >/dev/null")).status().is_ok_and(|s| s.success())
}

fn suite() -> Suite {
    Suite::builder()
        .virtual_delivery()
        .main("auth_mechanisms", "plain login")
        .main("auth_failure_delay", "0s")
        .master_line("auth unix - - n - 1 authd")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver")
        .inet("pop3", "n n n - - pop3d")
        .inet("pop3s", "n n n - - pop3d -o pop3d_tls_wrappermode=yes")
        .start_with(|s| {
            s.write_config("users", "alice@example.test:{PLAIN}secret::::::\nbob@example.test:{PLAIN}secret::::::\n")
        })
}

fn maildir(suite: &Suite, user: &str) -> PathBuf {
    suite.root().join(format!("vmail/example.test/{user}/mail"))
}

/// Delivers one message per subject to `user` through lmtp-deliver.
fn deliver(suite: &Suite, user: &str, subjects: &[&str]) {
    let messages: Vec<String> = subjects
        .iter()
        .map(|subject| {
            format!(
            "From: sender@example.org\r\nTo: {user}@example.test\r\nSubject: {subject}\r\n\r\nfirst line\r\n..dotted\r\nlast line of {subject}\r\n"
        )
        })
        .collect();
    suite.lmtp_deliver(&format!("{user}@example.test"), &messages);
}

/// The UIDLs Dovecot would give (`%08Xu%08Xv`), from the mailbox's dovecot-uidlist, in UID
/// order.
fn dovecot_uidls(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("dovecot-uidlist")).expect("dovecot-uidlist");
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let validity: u32 = header.split(' ').find_map(|f| f.strip_prefix('V')).unwrap().parse().unwrap();
    let mut uids: Vec<u32> = lines.filter_map(|l| l.split(' ').next()?.parse().ok()).collect();
    uids.sort_unstable();
    uids.into_iter().map(|u| format!("{u:08X}{validity:08X}")).collect()
}

/// Runs a Python script with the suite's ports substituted; returns stdout+stderr.
fn python(suite: &Suite, script: &str) -> String {
    let script =
        script.replace("{pop3}", &suite.port("pop3").to_string()).replace("{pop3s}", &suite.port("pop3s").to_string());
    let prelude = "import poplib, ssl, sys\nctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n";
    let out = Command::new("python3").arg("-c").arg(format!("{prelude}{script}")).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn count_files(dir: &Path) -> usize {
    ["cur", "new"].iter().map(|d| std::fs::read_dir(dir.join(d)).map(|r| r.count()).unwrap_or(0)).sum()
}

#[test]
fn poplib_over_stls_and_pop3s() {
    if !have("python3") {
        eprintln!("python3 missing: test skipped");
        return;
    }
    let suite = suite();
    deliver(&suite, "alice", &["one", "two", "three"]);
    let dir = maildir(&suite, "alice");

    // Before STLS: USER is neither advertised nor accepted from a non-local... loopback is
    // "secured" for Dovecot, so here the CAPA check is on what STLS offers.
    let out = python(
        &suite,
        r#"
p = poplib.POP3('127.0.0.1', {pop3}, timeout=60)
print('GREETING', p.getwelcome().decode())
print('CAPA1', sorted(p.capa().keys()))
p.stls(ctx)
print('CAPA2', sorted(p.capa().keys()))
print(p.user('alice@example.test').decode())
print(p.pass_('secret').decode())
print('STAT', p.stat())
print('LIST', [l.decode() for l in p.list()[1]])
print('UIDL', [l.decode() for l in p.uidl()[1]])
top = p.top(1, 1)[1]
print('TOP', [l.decode() for l in top])
r = p.retr(2)
print('RETR', r[0].decode(), [l.decode() for l in r[1]])
print(p.quit().decode())
"#,
    );
    assert!(out.contains("GREETING +OK "), "{out}");
    assert!(
        out.contains(
            "CAPA1 ['AUTH-RESP-CODE', 'CAPA', 'PIPELINING', 'RESP-CODES', 'SASL', 'STLS', 'TOP', 'UIDL', 'USER']"
        ),
        "{out}"
    );
    assert!(
        out.contains("CAPA2 ['AUTH-RESP-CODE', 'CAPA', 'PIPELINING', 'RESP-CODES', 'SASL', 'TOP', 'UIDL', 'USER']"),
        "{out}"
    );
    assert!(out.contains("+OK Logged in."), "{out}");
    assert!(out.contains("STAT (3, "), "{out}");
    // UIDLs as Dovecot computes them from the same uidlist (in UID order = message order).
    let uidls = dovecot_uidls(&dir);
    assert_eq!(uidls.len(), 3);
    let want: Vec<String> = uidls.iter().enumerate().map(|(i, u)| format!("'{} {u}'", i + 1)).collect();
    assert!(out.contains(&format!("UIDL [{}]", want.join(", "))), "{out}\nwant {want:?}");
    // TOP 1 1: the header, the blank line and one body line.
    assert!(out.contains("'To: alice@example.test', 'Subject: one', '', 'first line']\nRETR"), "{out}");
    // The stored ".dotted" (LMTP removed the stuffing) went out as "..dotted", and poplib
    // removed it again.
    assert!(out.contains("'Subject: two', '', 'first line', '.dotted', 'last line of two']"), "{out}");
    assert!(out.contains("+OK Logging out."), "{out}");
    let log = suite.wait_log(
        "Login: user=<alice@example.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=",
        Duration::from_secs(30),
    );
    assert!(log.contains(", TLS"), "{log}");
    // new/ was moved to cur/, and RETR marked message 2 seen.
    assert_eq!(std::fs::read_dir(dir.join("new")).unwrap().count(), 0);
    let seen = std::fs::read_dir(dir.join("cur"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(":2,S"))
        .count();
    assert_eq!(seen, 1);

    // pop3s: DELE + a dropped connection deletes nothing.
    let out = python(
        &suite,
        r#"
p = poplib.POP3_SSL('127.0.0.1', {pop3s}, context=ctx, timeout=60)
p.user('alice@example.test'); p.pass_('secret')
print(p.dele(1).decode(), p.dele(2).decode())
print('STAT', p.stat())
p.sock.close()
"#,
    );
    assert!(out.contains("+OK Marked to be deleted. +OK Marked to be deleted."), "{out}");
    assert!(out.contains("STAT (1, "), "{out}");
    suite.wait_log("Disconnected: Connection closed", Duration::from_secs(30));
    assert_eq!(count_files(&dir), 3, "a dropped connection deletes nothing");

    // pop3s: DELE + QUIT really deletes; UIDLs of the rest do not change.
    let out = python(
        &suite,
        r#"
p = poplib.POP3_SSL('127.0.0.1', {pop3s}, context=ctx, timeout=60)
p.user('alice@example.test'); p.pass_('secret')
print('UIDL1', [l.decode() for l in p.uidl()[1]])
print(p.dele(1).decode())
print(p.quit().decode())
p = poplib.POP3_SSL('127.0.0.1', {pop3s}, context=ctx, timeout=60)
p.user('alice@example.test'); p.pass_('secret')
print('STAT', p.stat())
print('UIDL2', [l.decode() for l in p.uidl()[1]])
p.quit()
"#,
    );
    assert!(out.contains("+OK Logging out, messages deleted."), "{out}");
    assert!(out.contains("STAT (2, "), "{out}");
    assert!(out.contains(&format!("UIDL2 ['1 {}', '2 {}']", uidls[1], uidls[2])), "{out}");
    assert_eq!(count_files(&dir), 2);
    assert_eq!(dovecot_uidls(&dir), uidls[1..].to_vec(), "the uidlist dropped the deleted message");

    // A wrong password is refused, and logged as Dovecot does.
    let out = python(
        &suite,
        r#"
p = poplib.POP3_SSL('127.0.0.1', {pop3s}, context=ctx, timeout=60)
p.user('alice@example.test')
try:
    p.pass_('wrong')
    print('ACCEPTED')
except poplib.error_proto as e:
    print('REFUSED', e)
p.quit()
"#,
    );
    assert!(out.contains("REFUSED b'-ERR [AUTH] Authentication failed.'"), "{out}");
    let log = suite.wait_log("Aborted login (auth failed, 1 attempts in", Duration::from_secs(30));
    assert!(log.contains("user=<alice@example.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, TLS"), "{log}");

    // SASL AUTH PLAIN with an initial response (RFC 5034), over STLS.
    let out = python(
        &suite,
        r#"
import base64
p = poplib.POP3('127.0.0.1', {pop3}, timeout=60)
p.stls(ctx)
print(p._shortcmd('AUTH PLAIN ' + base64.b64encode(b'\0alice@example.test\0secret').decode()).decode())
print('STAT', p.stat())
p.quit()
"#,
    );
    assert!(out.contains("+OK Logged in.") && out.contains("STAT (2, "), "{out}");

    // SASL AUTH LOGIN: two challenges (RFC 5034 continuation lines).
    let out = python(
        &suite,
        r#"
import base64
p = poplib.POP3_SSL('127.0.0.1', {pop3s}, context=ctx, timeout=60)
print('C1', p._shortcmd('AUTH LOGIN').decode())
print('C2', p._shortcmd(base64.b64encode(b'alice@example.test').decode()).decode())
print(p._shortcmd(base64.b64encode(b'secret').decode()).decode())
print('STAT', p.stat())
p.quit()
"#,
    );
    assert!(out.contains("C1 + VXNlcm5hbWU6") && out.contains("C2 + UGFzc3dvcmQ6"), "{out}");
    assert!(out.contains("+OK Logged in.") && out.contains("STAT (2, "), "{out}");
    suite.wait_log("Login: user=<alice@example.test>, method=LOGIN,", Duration::from_secs(30));
}

#[test]
fn sessions_run_as_the_mail_user() {
    if !have("python3") {
        eprintln!("python3 missing: test skipped");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: pop3d cannot switch users here; privilege check skipped");
        return;
    }
    let suite = suite();
    deliver(&suite, "bob", &["hello"]);
    let dir = maildir(&suite, "bob");
    // Hold a session open and look at the process serving it.
    let script = r#"
import time
p = poplib.POP3_SSL('127.0.0.1', {pop3s}, context=ctx, timeout=60)
p.user('bob@example.test'); p.pass_('secret')
print('STAT', p.stat(), flush=True)
sys.stdin.readline()
p.quit()
"#
    .replace("{pop3s}", &suite.port("pop3s").to_string());
    let prelude = "import poplib, ssl, sys\nctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}{script}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("STAT (1, "), "{line}");
    let log = suite.wait_log("Login: user=<bob@example.test>", Duration::from_secs(30));
    let mpid: u32 = log
        .lines()
        .find(|l| l.contains("Login: user=<bob@example.test>"))
        .and_then(|l| l.split("mpid=").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .expect("mpid in the login line");
    let (uid, gid) = rpost_testkit::mail_user();
    let status = std::fs::read_to_string(format!("/proc/{mpid}/status")).unwrap();
    let ids = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid:"), vec![uid; 4], "real, effective, saved, fs uid: {status}");
    assert_eq!(ids("Gid:"), vec![gid; 4], "{status}");
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    // The process ended with its session.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while rpost_testkit::pid_running(mpid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!rpost_testkit::pid_running(mpid), "the logged-in process exits after its session");
    assert_eq!(count_files(&dir), 1);
}

#[test]
fn fetchmail_fetches_over_tls() {
    if !have("fetchmail") {
        eprintln!("fetchmail missing: test skipped (apt-get install fetchmail)");
        return;
    }
    let suite = suite();
    deliver(&suite, "alice", &["fetch me", "and me"]);
    let work = suite.root().join("fetchmail");
    std::fs::create_dir_all(&work).unwrap();
    let mbox = work.join("mbox");
    let rc = work.join("fetchmailrc");
    for (port, ssl) in [(suite.port("pop3"), "sslproto tls1.2+"), (suite.port("pop3s"), "ssl")] {
        std::fs::write(
            &rc,
            format!(
                "poll 127.0.0.1 service {port} protocol pop3 uidl\n  user 'alice@example.test' there with password 'secret' is 'alice' here\n  {ssl} no sslcertck\n  mda \"/bin/sh -c 'cat >> {}'\"\n",
                mbox.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let out = Command::new("fetchmail")
            .args(["-f"])
            .arg(&rc)
            .args(["--nodetach", "--nosyslog", "-v", "--idfile"])
            .arg(work.join("fetchids"))
            .env("FETCHMAILHOME", &work)
            .env("HOME", &work)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if port == suite.port("pop3") {
            // Both messages over STLS; fetchmail deletes them (no keep).
            assert!(out.status.success(), "{text}");
            assert!(text.contains("STLS"), "fetchmail used STLS: {text}");
            assert!(text.contains("2 messages"), "{text}");
            deliver(&suite, "alice", &["third over pop3s"]);
        } else {
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 message"), "{text}");
        }
    }
    let got = std::fs::read_to_string(&mbox).unwrap();
    for s in ["Subject: fetch me", "Subject: and me", "Subject: third over pop3s"] {
        assert!(got.contains(s), "{s} in {got}");
    }
    assert!(got.contains("\n.dotted\n") && !got.contains("..dotted"), "dot-stuffing undone: {got}");
    assert_eq!(count_files(&maildir(&suite, "alice")), 0, "fetchmail deleted what it fetched");
}

/// Dovecot itself reads the Maildir after pop3d deleted a message and marked one seen, and
/// sees the same UIDs and UIDVALIDITY, hence the same POP3 UIDLs (`%08Xu%08Xv`):
/// a client moved between the two fetches nothing again.
#[test]
fn dovecot_agrees_on_uidls() {
    if !have("python3") || !have("doveadm") {
        eprintln!("python3 or doveadm missing: test skipped (.ci/run installs dovecot-core)");
        return;
    }
    let suite = suite();
    deliver(&suite, "alice", &["a", "b", "c"]);
    let dir = maildir(&suite, "alice");
    let out = python(
        &suite,
        r#"
p = poplib.POP3_SSL('127.0.0.1', {pop3s}, context=ctx, timeout=60)
p.user('alice@example.test'); p.pass_('secret')
p.retr(3)
p.dele(2)
p.quit()
p = poplib.POP3_SSL('127.0.0.1', {pop3s}, context=ctx, timeout=60)
p.user('alice@example.test'); p.pass_('secret')
print('UIDL', ' '.join(l.decode().split(' ')[1] for l in p.uidl()[1]))
p.quit()
"#,
    );
    let ours: Vec<&str> = out.lines().find_map(|l| l.strip_prefix("UIDL ")).expect(&out).split(' ').collect();
    assert_eq!(ours.len(), 2, "{out}");
    let (uid, gid) = rpost_testkit::mail_user();
    let run = suite.root().join("dovecot-run");
    std::fs::create_dir_all(&run).unwrap();
    let conf = suite.root().join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "base_dir = {run}\nstate_dir = {run}\nlog_path = /dev/stderr\nssl = no\nprotocols =\n\
             first_valid_uid = 1\nfirst_valid_gid = 1\nmail_uid = {uid}\nmail_gid = {gid}\n\
             mail_location = maildir:{maildir}\npop3_uidl_format = %08Xu%08Xv\n\
             namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n",
            run = run.display(),
            maildir = dir.display(),
        ),
    )
    .unwrap();
    let doveadm = |args: &[&str]| -> String {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(&conf)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("USER", "alice@example.test")
            .env("HOME", suite.root())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "doveadm {args:?}: {}\n{text}", String::from_utf8_lossy(&out.stderr));
        text
    };
    // Dovecot's pop3 builds the UIDL from its own view of UID and UIDVALIDITY (pop3.uidl
    // is only filled when saved): compute it from what doveadm reports.
    let status = doveadm(&["mailbox", "status", "uidvalidity", "INBOX"]);
    let uv: u32 = status.trim().rsplit('=').next().unwrap().parse().expect(&status);
    let text = doveadm(&["fetch", "uid flags", "mailbox", "INBOX"]);
    let theirs: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("uid: "))
        .map(|u| format!("{:08X}{uv:08X}", u.parse::<u32>().unwrap()))
        .collect();
    assert_eq!(theirs, ours, "{text}");
    // RETR 3 left \Seen for Dovecot too.
    assert!(text.contains("flags: \\Seen"), "{text}");
}

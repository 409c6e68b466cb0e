//! imapd end to end: the real rmaster runs authd, lmtp-deliver (mail arrives through LMTP)
//! and imapd on a STARTTLS port and an implicit-TLS port, as packaging/master.cf describes
//! them. Clients: Python's imaplib (STARTTLS and IMAP4_SSL) and a small raw client here for
//! IDLE, hostile input and a 20-client concurrency run. Python parts are skipped with a
//! message when python3 is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rpost_testkit::Suite;

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool} >/dev/null")).status().is_ok_and(|s| s.success())
}

fn suite() -> Suite {
    suite_with(&[])
}

fn suite_with(extra: &[(&str, &str)]) -> Suite {
    let mut b = Suite::builder();
    for (k, v) in extra {
        b = b.main(k, v);
    }
    b.virtual_delivery()
        .main("auth_mechanisms", "plain login")
        .main("auth_failure_delay", "0s")
        .master_line("auth unix - - n - 1 authd")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver")
        .inet("imap", "n n n - - imapd")
        .inet("imaps", "n n n - - imapd -o imapd_tls_wrappermode=yes")
        .inet("imapr", "n n n - - imapd -o ssl=required")
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
                "From: Sender <sender@example.org>\r\nTo: {user}@example.test\r\nSubject: {subject}\r\n\
Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nbody of {subject}\r\n--b1\r\n\
Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b1--\r\n"
            )
        })
        .collect();
    suite.lmtp_deliver(&format!("{user}@example.test"), &messages);
}

/// Runs a Python script with the suite's ports substituted; returns stdout+stderr.
fn python(suite: &Suite, script: &str) -> String {
    let script =
        script.replace("{imap}", &suite.port("imap").to_string()).replace("{imaps}", &suite.port("imaps").to_string());
    let prelude = "import imaplib, ssl, sys\nctx = ssl.create_default_context()\nctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n";
    let out = Command::new("python3").arg("-c").arg(format!("{prelude}{script}")).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A raw IMAP client over plaintext TCP (loopback counts as secured).
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    n: u32,
}

impl Client {
    fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let w = s.try_clone().unwrap();
        let mut c = Client { r: BufReader::new(s), w, n: 0 };
        let g = c.line();
        assert!(g.starts_with("* OK [CAPABILITY IMAP4rev1"), "{g}");
        c
    }

    /// One response line, literals included; empty at EOF.
    fn line(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let mut l = Vec::new();
            if self.r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                return String::from_utf8_lossy(&out).into_owned();
            }
            out.extend_from_slice(&l);
            let t = l.strip_suffix(b"\r\n").unwrap_or(&l);
            if t.ends_with(b"}")
                && let Some(open) = t.iter().rposition(|&b| b == b'{')
                && let Ok(n) = std::str::from_utf8(&t[open + 1..t.len() - 1]).unwrap_or("x").parse::<usize>()
            {
                let mut buf = vec![0; n];
                self.r.read_exact(&mut buf).unwrap();
                out.extend_from_slice(&buf);
                continue;
            }
            return String::from_utf8_lossy(&out).into_owned();
        }
    }

    fn send(&mut self, raw: &[u8]) {
        self.w.write_all(raw).unwrap();
    }

    /// Runs a command; returns all lines up to and including the tagged one.
    fn cmd(&mut self, c: &str) -> String {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.send(format!("{tag} {c}\r\n").as_bytes());
        self.until(&tag)
    }

    fn until(&mut self, tag: &str) -> String {
        let mut all = String::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed: {all}");
            all.push_str(&l);
            if l.starts_with(&format!("{tag} ")) {
                return all;
            }
        }
    }

    fn login(&mut self, user: &str) {
        let r = self.cmd(&format!("LOGIN {user} secret"));
        assert!(r.contains(" OK [CAPABILITY "), "{r}");
    }

    fn append(&mut self, mailbox: &str, msg: &str) -> String {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.send(format!("{tag} APPEND {mailbox} {{{}+}}\r\n{msg}\r\n", msg.len()).as_bytes());
        self.until(&tag)
    }
}

fn uidlist_uids(dir: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(dir.join("dovecot-uidlist")).unwrap_or_default();
    text.lines().skip(1).filter_map(|l| l.split(' ').next()?.parse().ok()).collect()
}

#[test]
fn imaplib_over_starttls_and_imaps() {
    if !have("python3") {
        eprintln!("python3 missing: test skipped");
        return;
    }
    let suite = suite();
    deliver(&suite, "alice", &["one", "two", "three"]);
    let out = python(
        &suite,
        r#"
m = imaplib.IMAP4('127.0.0.1', {imap}, timeout=60)
print('GREETING', m.welcome.decode())
m.starttls(ctx)
print('CAPS', ' '.join(m.capabilities))
print('LOGIN', m.login('alice@example.test', 'secret'))
print('LIST', m.list())
print('SELECT', m.select('INBOX'))
print('UIDVALIDITY', m.response('UIDVALIDITY'))
typ, data = m.fetch('1', '(UID FLAGS ENVELOPE BODYSTRUCTURE)')
print('FETCH1', data)
typ, data = m.fetch('2', '(BODY.PEEK[1] BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[2.MIME] BODY.PEEK[]<0.20>)')
print('FETCH2', data)
print('STORE', m.store('1', '+FLAGS', '(\\Flagged $Important)'))
print('SEARCH', m.search(None, 'FLAGGED'), m.search('UTF-8', 'OR', 'SUBJECT', 'two', 'BODY', '"body of three"'))
print('UIDSEARCH', m.uid('SEARCH', 'UNSEEN'))
print('COPY', m.copy('1', 'Archive'))
print('MOVE', m.uid('MOVE', '3', 'Trash'))
print('STORE2', m.store('2', '+FLAGS', '\\Deleted'))
print('EXPUNGE', m.expunge())
print('APPEND', m.append('Sent', '(\\Seen)', None, b'Subject: sent\r\n\r\nsent body\r\n'))
print('STATUS', m.status('Sent', '(MESSAGES UIDNEXT UNSEEN)'))
print('CREATE', m.create('../escape'))
print('LOGOUT', m.logout())
s = imaplib.IMAP4_SSL('127.0.0.1', {imaps}, ssl_context=ctx, timeout=60)
s.login('alice@example.test', 'secret')
print('SSL_SELECT', s.select('INBOX', readonly=True))
print('SSL_FETCH', s.fetch('1:*', '(UID FLAGS)'))
print('SSL_ARCHIVE', s.select('Archive'), s.fetch('1', '(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])'))
s.logout()
"#,
    );
    assert!(out.contains("GREETING * OK [CAPABILITY IMAP4rev1 "), "{out}");
    assert!(out.contains("STARTTLS") && out.contains(" ready."), "{out}");
    for cap in ["UIDPLUS", "MOVE", "IDLE", "SPECIAL-USE", "NAMESPACE", "UNSELECT", "CHILDREN", "LITERAL+"] {
        assert!(out.contains(cap), "{cap}: {out}");
    }
    assert!(out.contains("LOGIN ('OK', [b'[CAPABILITY"), "{out}");
    assert!(out.contains(r#"b'(\\HasNoChildren \\Sent) "/" "Sent"'"#), "{out}");
    assert!(out.contains("SELECT ('OK', [b'3'])"), "{out}");
    assert!(
        out.contains(r#"ENVELOPE ("Mon, 1 Jan 2024 10:00:00 +0000" "one" (("Sender" NIL "sender" "example.org"))"#),
        "{out}"
    );
    assert!(
        out.contains(r#"BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 11 1 NIL NIL NIL NIL)("application" "octet-stream" NIL NIL NIL "base64" 4 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)"#),
        "{out}"
    );
    assert!(out.contains(r"b'body of two'"), "{out}");
    assert!(out.contains(r"b'Subject: two\r\n\r\n'"), "{out}");
    assert!(out.contains(r"Content-Transfer-Encoding: base64\r\n\r\n'"), "{out}");
    assert!(out.contains(r"b'Return-Path: <sender'"), "{out}");
    assert!(out.contains(r"FLAGS (\\Flagged $Important \\Recent)"), "{out}");
    assert!(out.contains("SEARCH ('OK', [b'1']) ('OK', [b'2 3'])"), "{out}");
    assert!(out.contains("UIDSEARCH ('OK', [b'1 2 3'])"), "{out}");
    assert!(out.contains("COPY ('OK', [b'[COPYUID "), "{out}");
    assert!(out.contains("MOVE ('OK'"), "{out}");
    // MOVE's expunge of message 3 came first, then EXPUNGE's of message 2.
    assert!(out.contains("EXPUNGE ('OK', [b'3', b'2'])"), "{out}");
    assert!(out.contains("APPEND ('OK', [b'[APPENDUID "), "{out}");
    assert!(out.contains(r#"STATUS ('OK', [b'"Sent" (MESSAGES 1 UIDNEXT 2 UNSEEN 0)'])"#), "{out}");
    assert!(out.contains("CREATE ('NO'"), "{out}");
    assert!(out.contains("LOGOUT ('BYE'"), "{out}");
    assert!(out.contains("SSL_SELECT ('OK', [b'1'])"), "{out}");
    assert!(out.contains(r"SSL_FETCH ('OK', [b'1 (UID 1 FLAGS (\\Flagged $Important))'])"), "{out}");
    assert!(
        out.contains(r"b'1 (FLAGS (\\Flagged $Important) BODY[HEADER.FIELDS (SUBJECT)] {16}', b'Subject: one"),
        "{out}"
    );
    // Dovecot-compatible storage: flags and keyword letters in the file name, the keyword
    // in dovecot-keywords, UIDs in dovecot-uidlist.
    let dir = maildir(&suite, "alice");
    let cur: Vec<String> =
        std::fs::read_dir(dir.join("cur")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(cur.len(), 1, "{cur:?}");
    assert!(cur[0].ends_with(":2,Fa"), "{cur:?}");
    assert_eq!(std::fs::read_to_string(dir.join("dovecot-keywords")).unwrap(), "0 $Important\n");
    assert_eq!(uidlist_uids(&dir), vec![1]);
    assert!(!suite.root().join("vmail/example.test/alice/escape").exists());
    let log = suite.wait_log("Logged out", Duration::from_secs(30));
    assert!(
        log.contains("imap-login: Login: user=<alice@example.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid="),
        "{log}"
    );
    assert!(log.contains(", TLS"), "{log}");
    assert!(log.contains("imap(alice@example.test): Logged out in="), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("imapd[") && l.contains("warning")).collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn idle_sees_delivery_and_sessions_see_each_other() {
    let suite = suite();
    deliver(&suite, "bob", &["first", "second"]);
    let port = suite.port("imap");
    let mut a = Client::connect(port);
    let mut b = Client::connect(port);
    a.login("bob@example.test");
    b.login("bob@example.test");
    let ra = a.cmd("SELECT INBOX");
    let rb = b.cmd("SELECT INBOX");
    assert!(ra.contains("* 2 EXISTS") && rb.contains("* 2 EXISTS"), "{ra}{rb}");
    // \Recent went to exactly one of them.
    assert!(ra.contains("* 2 RECENT") != rb.contains("* 2 RECENT"), "{ra}{rb}");
    // Flag changes and expunges cross sessions.
    let r = a.cmd("STORE 1 +FLAGS.SILENT (\\Seen)");
    assert!(r.contains("OK"), "{r}");
    let r = b.cmd("NOOP");
    assert!(r.contains("* 1 FETCH (UID 1 FLAGS (\\Seen"), "{r}");
    a.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)");
    let r = a.cmd("EXPUNGE");
    assert!(r.contains("* 2 EXPUNGE"), "{r}");
    // IDLE: b hears the expunge, then a new LMTP delivery.
    b.send(b"i1 IDLE\r\n");
    assert_eq!(b.line(), "+ idling\r\n");
    let l = b.line();
    assert_eq!(l, "* 2 EXPUNGE\r\n");
    deliver(&suite, "bob", &["third"]);
    let l = b.line();
    assert_eq!(l, "* 2 EXISTS\r\n");
    let l = b.line();
    assert!(l.starts_with("* ") && l.ends_with(" RECENT\r\n"), "{l}");
    b.send(b"DONE\r\n");
    let r = b.until("i1");
    assert!(r.ends_with("i1 OK Idle completed.\r\n"), "{r}");
    let r = b.cmd("UID FETCH 1:* (UID FLAGS)");
    assert!(r.contains("* 1 FETCH (UID 1 FLAGS (\\Seen") && r.contains("* 2 FETCH (UID 3 FLAGS"), "{r}");
    let r = a.cmd("LOGOUT");
    assert!(r.contains("* BYE"), "{r}");
}

#[test]
fn hostile_input_is_refused_and_the_server_stays_up() {
    let suite = suite();
    // The mail user may not create its home in the test's root-owned directory: a delivery
    // creates it.
    deliver(&suite, "alice", &["seed"]);
    let port = suite.port("imap");
    let mut c = Client::connect(port);
    // Before login.
    let r = c.cmd("SELECT INBOX");
    assert!(r.contains("BAD") && r.contains("Not logged in"), "{r}");
    c.send(b"x1 LOGIN {2147483648}\r\n");
    let r = c.until("x1");
    assert!(r.starts_with("x1 NO [TOOBIG]"), "{r}");
    // No APPEND literal is taken before login.
    c.send(b"x0 APPEND INBOX {1000}\r\n");
    let r = c.until("x0");
    assert!(r.starts_with("x0 NO [TOOBIG]"), "{r}");
    c.login("alice@example.test");
    c.send(b"x2 APPEND INBOX {2147483648}\r\n");
    let r = c.until("x2");
    assert!(r.starts_with("x2 NO [TOOBIG]"), "{r}");
    let deep = format!("SEARCH {}ALL{}", "(".repeat(5000), ")".repeat(5000));
    let r = c.cmd(&deep);
    assert!(r.contains(" BAD "), "{r}");
    for name in ["../../etc", "a/../../b", "/tmp/x", ".hidden", "a.b"] {
        let r = c.cmd(&format!("CREATE \"{name}\""));
        assert!(r.contains(" NO "), "{name}: {r}");
        let r = c.cmd(&format!("SELECT \"{name}\""));
        assert!(r.contains(" NO "), "{name}: {r}");
    }
    c.cmd("SELECT INBOX");
    let set: Vec<String> = (1..=100_000).map(|i| i.to_string()).collect();
    let r = c.cmd(&format!("FETCH {} FLAGS", set.join(",")));
    assert!(r.contains(" BAD "), "{}", &r[..r.len().min(300)]);
    let r = c.cmd("NOOP");
    assert!(r.contains("OK NOOP"), "{r}");
    // An unterminated literal: the client goes away mid-literal.
    c.send(b"x3 APPEND INBOX {100}\r\n");
    assert!(c.line().starts_with("+ "));
    c.send(b"only a part");
    drop(c);
    // A non-synchronizing literal too large ends that connection only.
    let mut d = Client::connect(port);
    d.login("alice@example.test");
    d.send(b"x4 APPEND INBOX {2147483648+}\r\nxxxx");
    let l = d.line();
    assert!(l.starts_with("* BYE"), "{l}");
    // The server still serves.
    let mut e = Client::connect(port);
    e.login("alice@example.test");
    let r = e.cmd("SELECT INBOX");
    assert!(r.contains("* 1 EXISTS"), "{r}");
    assert!(!maildir(&suite, "alice").join("../../etc").join("cur").exists());
}

#[test]
fn twenty_concurrent_clients_stay_consistent() {
    // Dovecot's default of 10 sessions per user and address would refuse half of them.
    let suite = suite_with(&[("mail_max_userip_connections", "25")]);
    deliver(&suite, "alice", &["seed"]);
    let port = suite.port("imap");
    let threads: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                c.login("alice@example.test");
                let r = c.cmd("SELECT INBOX");
                assert!(r.contains("OK [READ-WRITE]"), "{r}");
                let mut appended = Vec::new();
                for j in 0..5 {
                    let r = c.append("INBOX", &format!("Subject: c{i} m{j}\r\n\r\nbody {i} {j}\r\n"));
                    let uid: u32 = r
                        .split("[APPENDUID ")
                        .nth(1)
                        .and_then(|s| s.split(' ').nth(1))
                        .and_then(|s| s.trim_end_matches(']').parse().ok())
                        .unwrap_or_else(|| panic!("{r}"));
                    appended.push(uid);
                    let r = c.cmd("FETCH 1:* (UID FLAGS)");
                    assert!(r.contains(" OK "), "{r}");
                    let r = c.cmd(&format!("UID STORE {uid} +FLAGS (\\Seen)"));
                    assert!(r.contains(" OK "), "{r}");
                }
                // Delete two of ours.
                let del = format!("{},{}", appended[0], appended[1]);
                let r = c.cmd(&format!("UID STORE {del} +FLAGS.SILENT (\\Deleted)"));
                assert!(r.contains(" OK "), "{r}");
                let r = c.cmd(&format!("UID EXPUNGE {del}"));
                assert!(r.contains(" OK "), "{r}");
                let r = c.cmd("LOGOUT");
                assert!(r.contains("BYE"), "{r}");
                appended[2..].to_vec()
            })
        })
        .collect();
    let mut kept: Vec<u32> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    kept.push(1);
    kept.sort_unstable();
    let n = kept.len();
    kept.dedup();
    assert_eq!(kept.len(), n, "a UID was handed out twice");
    assert_eq!(n, 61);
    let dir = maildir(&suite, "alice");
    let mut listed = uidlist_uids(&dir);
    listed.sort_unstable();
    let files: usize = ["cur", "new"].iter().map(|d| std::fs::read_dir(dir.join(d)).unwrap().count()).sum();
    assert_eq!(files, 61);
    // A fresh session sees exactly the surviving messages, under their UIDs.
    let mut c = Client::connect(port);
    c.login("alice@example.test");
    let r = c.cmd("SELECT INBOX");
    assert!(r.contains("* 61 EXISTS"), "{r}");
    let r = c.cmd("UID SEARCH ALL");
    let found: Vec<u32> = r
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("* SEARCH")
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(found, kept);
    assert!(listed.iter().all(|u| kept.contains(u)), "{listed:?}");
}

#[test]
fn connection_limit_and_ssl_required() {
    let suite = suite_with(&[("mail_max_userip_connections", "2")]);
    deliver(&suite, "alice", &["seed"]);
    let port = suite.port("imap");
    let mut a = Client::connect(port);
    a.login("alice@example.test");
    let mut b = Client::connect(port);
    b.login("alice@example.test");
    let mut c = Client::connect(port);
    let r = c.cmd("LOGIN alice@example.test secret");
    assert!(r.contains(" NO [LIMIT] Maximum number of connections from user+IP exceeded"), "{r}");
    // Another user is not affected.
    let mut d = Client::connect(port);
    d.login("bob@example.test");
    a.cmd("LOGOUT");
    // The slot is free again once a session has ended.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut e = Client::connect(port);
        let r = e.cmd("LOGIN alice@example.test secret");
        if r.contains(" OK [CAPABILITY") {
            break;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = suite.log();
    assert!(
        log.contains("Maximum number of connections from user+IP exceeded (mail_max_userip_connections=2)"),
        "{log}"
    );

    // ssl = required: no plaintext login before STARTTLS, even from loopback.
    let s = TcpStream::connect(("127.0.0.1", suite.port("imapr"))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut g = String::new();
    r.read_line(&mut g).unwrap();
    assert!(g.contains(" STARTTLS") && g.contains(" LOGINDISABLED") && !g.contains("AUTH=PLAIN"), "{g}");
    w.write_all(b"a LOGIN alice@example.test secret\r\nb AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n")
        .unwrap();
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("a NO [PRIVACYREQUIRED]"), "{l}");
    l.clear();
    r.read_line(&mut l).unwrap();
    assert!(l.starts_with("b NO [PRIVACYREQUIRED]"), "{l}");
}

#[test]
fn authenticate_plain_with_sasl_ir_and_login_exchange() {
    let suite = suite();
    deliver(&suite, "bob", &["x"]);
    let mut c = Client::connect(suite.port("imap"));
    let r = c.cmd("AUTHENTICATE PLAIN AGJvYkBleGFtcGxlLnRlc3QAd3Jvbmc=");
    assert!(r.contains(" NO [AUTHENTICATIONFAILED]"), "{r}");
    // AUTHENTICATE LOGIN: two challenges.
    c.send(b"l1 AUTHENTICATE LOGIN\r\n");
    assert!(c.line().starts_with("+ "));
    c.send(b"Ym9iQGV4YW1wbGUudGVzdA==\r\n");
    assert!(c.line().starts_with("+ "));
    c.send(b"c2VjcmV0\r\n");
    let r = c.until("l1");
    assert!(r.contains("l1 OK [CAPABILITY IMAP4rev1"), "{r}");
    let r = c.cmd("SELECT INBOX");
    assert!(r.contains("* 1 EXISTS"), "{r}");
    let mut d = Client::connect(suite.port("imap"));
    let r = d.cmd("AUTHENTICATE PLAIN AGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0");
    assert!(r.contains(" OK [CAPABILITY"), "{r}");
    let mut f = Client::connect(suite.port("imap"));
    let r = f.cmd("LOGIN bob@example.test wrong");
    assert!(r.contains(" NO [AUTHENTICATIONFAILED]"), "{r}");
    f.cmd("LOGOUT");
    let log = suite.wait_log("imap-login: Aborted login (auth failed, 1 attempts", Duration::from_secs(30));
    assert!(log.contains("user=<bob@example.test>, method=PLAIN, rip=127.0.0.1"), "{log}");
    let log = suite.wait_log("method=LOGIN", Duration::from_secs(30));
    assert!(log.contains("imap-login: Login: user=<bob@example.test>, method=LOGIN, rip=127.0.0.1"), "{log}");
}

/// Runs doveadm with a private configuration: users come from our authd's auth-userdb
/// socket, mail from `mail_location = maildir:~/mail` as in the suite.
fn doveadm(suite: &Suite, conf_dir: &Path, args: &[&str]) -> String {
    let (uid, gid) = rpost_testkit::mail_user();
    let conf = conf_dir.join("dovecot.conf");
    if !conf.exists() {
        std::fs::create_dir_all(conf_dir.join("base")).unwrap();
        std::fs::create_dir_all(conf_dir.join("state")).unwrap();
        let text = format!(
            "base_dir = {d}/base\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\nssl = no\n\
             mail_home = {r}/vmail/%d/%n\nmail_location = maildir:~/mail\nmail_uid = {uid}\nmail_gid = {gid}\n\
             first_valid_uid = 1\nfirst_valid_gid = 1\nauth_socket_path = {a}\n",
            d = conf_dir.display(),
            a = suite.queue_dir().join("private/auth-userdb").display(),
            r = suite.root().display(),
        );
        std::fs::write(&conf, text).unwrap();
    }
    let out = Command::new("doveadm").arg("-c").arg(&conf).args(args).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn dovecot_reads_our_mailbox_and_we_read_its() {
    if !have("doveadm") {
        eprintln!("doveadm missing: test skipped");
        return;
    }
    let suite = suite();
    deliver(&suite, "alice", &["one", "two", "three"]);
    let port = suite.port("imap");
    let mut c = Client::connect(port);
    c.login("alice@example.test");
    let r = c.cmd("SELECT INBOX");
    let validity: String = r.split("[UIDVALIDITY ").nth(1).unwrap().split(']').next().unwrap().to_string();
    c.cmd("STORE 1 +FLAGS (\\Seen $Work)");
    c.cmd("STORE 2 +FLAGS.SILENT (\\Deleted)");
    c.cmd("EXPUNGE");
    let r = c.append("INBOX", "Subject: four\r\n\r\nfour\r\n");
    assert!(r.contains("[APPENDUID "), "{r}");
    c.cmd("STORE 3 +FLAGS (\\Flagged)");
    c.cmd("LOGOUT");

    let dir = maildir(&suite, "alice");
    let conf = suite.root().join("dovecot");
    let user = "alice@example.test";
    let out = doveadm(&suite, &conf, &["fetch", "-u", user, "uid flags", "mailbox", "INBOX", "all"]);
    let got: Vec<String> = out.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    let expect = ["uid: 1", "flags: \\Seen $Work", "uid: 3", "flags:", "uid: 4", "flags: \\Flagged"];
    for e in expect {
        assert!(got.iter().any(|l| l == e), "{e}: {out}");
    }
    assert!(!got.iter().any(|l| l == "uid: 2"), "{out}");
    let status = doveadm(&suite, &conf, &["mailbox", "status", "-u", user, "uidvalidity uidnext messages", "INBOX"]);
    assert!(status.contains(&format!("uidvalidity={validity}")) && status.contains("messages=3"), "{status}");
    assert!(status.contains("uidnext=5"), "{status}");

    // Dovecot changes the mailbox: a flag, an expunge and a new message.
    let o = doveadm(&suite, &conf, &["flags", "add", "-u", user, "\\Answered $Dove", "mailbox", "INBOX", "uid", "3"]);
    assert!(o.trim().is_empty(), "{o}");
    let o = doveadm(&suite, &conf, &["expunge", "-u", user, "mailbox", "INBOX", "uid", "1"]);
    assert!(o.trim().is_empty(), "{o}");
    let mut save = Command::new("doveadm")
        .arg("-c")
        .arg(conf.join("dovecot.conf"))
        .args(["save", "-u", user, "-m", "INBOX"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    save.stdin.take().unwrap().write_all(b"Subject: from dovecot\n\nsaved by doveadm\n").unwrap();
    assert!(save.wait().unwrap().success());

    // We read what Dovecot wrote, under the same UIDs.
    let mut c = Client::connect(port);
    c.login("alice@example.test");
    let r = c.cmd("SELECT INBOX");
    assert!(r.contains(&format!("[UIDVALIDITY {validity}]")) && r.contains("* 3 EXISTS"), "{r}");
    let r = c.cmd("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(r.contains("* 1 FETCH (UID 3 FLAGS (\\Answered $Dove"), "{r}");
    assert!(r.contains("* 2 FETCH (UID 4 FLAGS (\\Flagged)"), "{r}");
    assert!(r.contains("* 3 FETCH (UID 5 FLAGS (") && r.contains("Subject: from dovecot"), "{r}");
    let mut uids = uidlist_uids(&dir);
    uids.sort_unstable();
    // Dovecot drops the record of an expunged message lazily, at its next rewrite.
    assert!(uids.ends_with(&[3, 4, 5]), "{uids:?}");
}

/// Files of a local Maildir folder: (subdir/name).
fn local_files(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd.flatten() {
                v.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    v.sort();
    v
}

#[test]
fn mbsync_two_way_sync_with_flags_and_deletes() {
    if !have("mbsync") {
        eprintln!("mbsync missing: test skipped");
        return;
    }
    let suite = suite();
    deliver(&suite, "alice", &["one", "two", "three"]);
    let local = suite.root().join("mbsync");
    std::fs::create_dir_all(local.join("mail")).unwrap();
    let cert = suite.config_dir().join("tls/rpost.pem");
    let conf = format!(
        "IMAPAccount rpost\nHost 127.0.0.1\nPort {port}\nUser alice@example.test\nPass secret\n\
         SSLType IMAPS\nCertificateFile {cert}\n\n\
         IMAPStore remote\nAccount rpost\n\n\
         MaildirStore local\nPath {l}/mail/\nInbox {l}/mail/INBOX\nSubFolders Verbatim\n\n\
         Channel sync\nFar :remote:\nNear :local:\nPatterns INBOX Archive\nCreate Both\nExpunge Both\n\
         SyncState *\nSync All\n",
        port = suite.port("imaps"),
        cert = cert.display(),
        l = local.display()
    );
    std::fs::write(local.join("mbsyncrc"), conf).unwrap();
    let mbsync = || {
        let out = Command::new("mbsync").arg("-c").arg(local.join("mbsyncrc")).arg("-a").output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "mbsync failed: {text}\n{}", suite.log());
        text
    };
    mbsync();
    let inbox = local.join("mail/INBOX");
    let files = local_files(&inbox);
    assert_eq!(files.len(), 3, "{files:?}");
    // Locally: the first message read, the second deleted; a new one in Archive.
    let rename_flags = |f: &str, flags: &str| {
        let (base, _) = f.split_once(":2,").unwrap_or((f, ""));
        let to = format!("cur/{}:2,{flags}", base.split_once('/').unwrap().1);
        std::fs::rename(inbox.join(f), inbox.join(to)).unwrap();
    };
    rename_flags(&files[0], "S");
    rename_flags(&files[1], "T");
    mbsync();
    let mut c = Client::connect(suite.port("imap"));
    c.login("alice@example.test");
    let r = c.cmd("SELECT INBOX");
    assert!(r.contains("* 2 EXISTS"), "{r}");
    let r = c.cmd("UID FETCH 1:* (FLAGS)");
    assert!(r.contains("FLAGS (\\Seen") && !r.contains("\\Deleted"), "{r}");
    // Server side: flag the remaining unread message, add one; mbsync brings both down.
    let r = c.cmd("UID STORE 3 +FLAGS (\\Flagged)");
    assert!(r.contains(" OK "), "{r}");
    let r = c.append("INBOX", "Subject: appended\r\n\r\nnew on the server\r\n");
    assert!(r.contains("[APPENDUID "), "{r}");
    c.cmd("LOGOUT");
    mbsync();
    let files = local_files(&inbox);
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(":2,F")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with(":2,S")), "{files:?}");
    // Nothing changes on a sync without changes.
    mbsync();
    assert_eq!(local_files(&inbox), files);
}

#[test]
fn sessions_of_one_uid_share_its_workers_and_idle_sessions_all_hear_a_delivery() {
    let suite = suite_with(&[("mail_max_userip_connections", "0"), ("imap_worker_count", "2")]);
    deliver(&suite, "alice", &["first"]);
    let port = suite.port("imap");
    let mut clients: Vec<Client> = (0..30).map(|_| Client::connect(port)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        // Both users have the same mail uid here, so the same two workers serve them all.
        c.login(if i % 2 == 0 { "alice@example.test" } else { "bob@example.test" });
        if i % 2 == 0 {
            let r = c.cmd("SELECT INBOX");
            assert!(r.contains("* 1 EXISTS"), "{r}");
            c.send(b"i IDLE\r\n");
            assert_eq!(c.line(), "+ idling\r\n");
        }
    }
    // The workers' Login lines name the process serving the session (mpid=).
    let log = suite.log();
    let mpids: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("imap-login: Login: user=<"))
        .filter_map(|l| l.split("mpid=").nth(1).and_then(|m| m.split(',').next()))
        .collect();
    assert_eq!(mpids.len(), 2, "imap_worker_count = 2 workers for one uid: {mpids:?}\n{log}");
    // The workers run as the mail user: the owner of the Maildir they created.
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(maildir(&suite, "alice")).unwrap().uid();
    for mpid in &mpids {
        let status = std::fs::read_to_string(format!("/proc/{}/status", mpid.trim())).unwrap();
        let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
        let want = format!("{owner}\t{owner}\t{owner}\t{owner}");
        assert!(uids.ends_with(&want), "worker ids {uids:?}, mail owner {owner}");
    }
    deliver(&suite, "alice", &["second"]);
    for c in clients.iter_mut().step_by(2) {
        assert_eq!(c.line(), "* 2 EXISTS\r\n");
        c.send(b"DONE\r\n");
        let r = c.until("i");
        assert!(r.ends_with("i OK Idle completed.\r\n"), "{r}");
    }
    for c in clients.iter_mut() {
        let r = c.cmd("LOGOUT");
        assert!(r.contains("* BYE"), "{r}");
    }
}

#[test]
fn rmaster_stop_ends_worker_sessions_with_bye() {
    let mut suite = suite();
    deliver(&suite, "alice", &["x"]);
    let mut c = Client::connect(suite.port("imap"));
    c.login("alice@example.test");
    let r = c.cmd("SELECT INBOX");
    assert!(r.contains(" OK "), "{r}");
    c.send(b"i IDLE\r\n");
    assert_eq!(c.line(), "+ idling\r\n");
    let log = suite.log();
    let mpid = log.split("mpid=").nth(1).and_then(|m| m.split(|c: char| !c.is_ascii_digit()).next()).unwrap();
    let mpid: u32 = mpid.parse().unwrap();
    assert!(rpost_testkit::pid_running(mpid), "worker {mpid} serves the session");
    suite.stop();
    // The worker runs as the mail user, outside rmaster's children: the stop reaches it
    // through its login process, which waits for it, and the session ends with BYE, not a
    // silent close. (The login process used to tell the workers from a task of its own,
    // which lost the race with its exit on a busy machine.)
    assert!(!rpost_testkit::pid_running(mpid), "rmaster stop returned with worker {mpid} still running");
    assert_eq!(c.line(), "* BYE Server shutting down.\r\n");
    assert_eq!(c.line(), "", "then the connection closes");
}

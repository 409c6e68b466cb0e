//! lmtp-deliver end to end: the real rmaster starts lmtp-deliver on its UNIX socket, a plain
//! LMTP client delivers, and the message lands in the user's Maildir with Dovecot's layout
//! and UIDs. When Debian's Dovecot (`doveadm`) is installed, Dovecot itself reads the result.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rpost_testkit::Suite;

/// A plain LMTP client.
struct Lmtp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Lmtp {
    fn connect(path: &Path) -> (Lmtp, String) {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Lmtp { writer: s.try_clone().unwrap(), reader: BufReader::new(s) };
        let greeting = c.reply();
        (c, greeting)
    }

    /// One reply, all its lines.
    fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return out;
            }
            out.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return out;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.reply()
    }

    /// Sends the content and its final dot; returns `n` replies (one per recipient).
    fn data(&mut self, content: &str, n: usize) -> Vec<String> {
        assert_eq!(self.cmd("DATA"), "354 OK\r\n");
        self.writer.write_all(content.as_bytes()).unwrap();
        self.writer.write_all(b".\r\n").unwrap();
        (0..n).map(|_| self.reply()).collect()
    }
}

fn suite() -> Suite {
    Suite::builder().virtual_delivery().master_line("lmtp-deliver unix - n n - - lmtp-deliver").start_with(|s| {
        s.write_config("users", "alice@example.test:{PLAIN}secret::::::\nbob@example.test:{PLAIN}secret::::::\n");
    })
}

fn new_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn transaction(suite: &Suite, rcpts: &[&str], body: &str) -> Vec<String> {
    let (mut c, greeting) = Lmtp::connect(&suite.queue_dir().join("private/lmtp-deliver"));
    assert_eq!(greeting, "220 mail.example.test rpost LMTP ready\r\n");
    let lhlo = c.cmd("LHLO mx.example.test");
    assert!(lhlo.starts_with("250-mail.example.test\r\n") && lhlo.contains("250-PIPELINING\r\n"), "{lhlo}");
    assert!(lhlo.ends_with("250 SMTPUTF8\r\n"), "{lhlo}");
    assert_eq!(c.cmd("MAIL FROM:<sender@example.org>"), "250 2.1.0 OK\r\n");
    let mut accepted = 0;
    let mut out = Vec::new();
    for r in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{r}>"));
        if reply.starts_with("250") {
            accepted += 1;
        }
        out.push(reply);
    }
    out.extend(c.data(body, accepted));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
    out
}

#[test]
fn delivers_into_dovecot_maildir() {
    let suite = suite();
    let r = transaction(
        &suite,
        &["alice@example.test", "unknown@example.test", "bob@example.test"],
        "Subject: e2e\r\nMessage-ID: <e2e-1@example.org>\r\n\r\nhello\r\n",
    );
    assert_eq!(r[0], "250 2.1.5 OK\r\n");
    assert_eq!(r[1], "550 5.1.1 <unknown@example.test> User doesn't exist: unknown@example.test\r\n");
    assert_eq!(r[2], "250 2.1.5 OK\r\n");
    assert!(r[3].starts_with("250 2.0.0 <alice@example.test> ") && r[3].ends_with(" Saved\r\n"), "{r:?}");
    assert!(r[4].starts_with("250 2.0.0 <bob@example.test> ") && r[4].ends_with(" Saved\r\n"), "{r:?}");
    assert_eq!(r.len(), 5);

    let home = suite.root().join("vmail/example.test/alice");
    let maildir = home.join("mail");
    let new = new_files(&maildir.join("new"));
    assert_eq!(new.len(), 1, "{}", suite.log());
    let text = std::fs::read_to_string(&new[0]).unwrap();
    assert!(
        text.starts_with("Return-Path: <sender@example.org>\nDelivered-To: alice@example.test\nReceived: "),
        "{text}"
    );
    assert!(text.ends_with("\nSubject: e2e\nMessage-ID: <e2e-1@example.org>\n\nhello\n"), "{text:?}");
    let md = std::fs::metadata(&new[0]).unwrap();
    assert_eq!((md.uid(), md.gid()), rpost_testkit::mail_user());
    assert_eq!(md.mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&home).unwrap().mode() & 0o777, 0o700);
    let name = new[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with(&format!(",S={},W={}", md.len(), md.len() + text.matches('\n').count() as u64)), "{name}");
    let uidlist = std::fs::read_to_string(maildir.join("dovecot-uidlist")).unwrap();
    assert!(
        uidlist.starts_with("3 V")
            && uidlist.ends_with(&format!(
                " N2 G{}\n1 :{name}\n",
                &uidlist[uidlist.find(" G").unwrap() + 2..uidlist.find('\n').unwrap()]
            )),
        "{uidlist}"
    );
    assert_eq!(new_files(&suite.root().join("vmail/example.test/bob/mail/new")).len(), 1);
    suite.wait_log("to=<alice@example.test>, user=alice@example.test", Duration::from_secs(10));
    suite.wait_log("mailbox=INBOX, uid=1", Duration::from_secs(10));

    // The second delivery gets UID 2.
    let r = transaction(&suite, &["alice@example.test"], "Subject: two\r\n\r\nagain\r\n");
    assert!(r[1].ends_with(" Saved\r\n"), "{r:?}");
    let uidlist = std::fs::read_to_string(maildir.join("dovecot-uidlist")).unwrap();
    // Appended, as Dovecot appends new mail: the header's N stays behind the last record.
    assert!(uidlist.contains(" N2 ") && uidlist.contains("\n2 :"), "{uidlist}");
    assert_eq!(new_files(&maildir.join("new")).len(), 2);

    dovecot_reads_it(&suite, &home, &maildir, &uidlist);
}

/// Dovecot itself opens the Maildir and sees the same UIDs and UIDVALIDITY; then a delivery
/// after Dovecot has built its index files continues the numbering.
fn dovecot_reads_it(suite: &Suite, home: &Path, maildir: &Path, uidlist: &str) {
    let available = Command::new("doveadm").arg("-h").output().is_ok();
    if !available {
        eprintln!("doveadm not installed: skipping the Dovecot interoperability check");
        return;
    }
    let (uid, gid) = rpost_testkit::mail_user();
    let run = suite.root().join("dovecot-run");
    std::fs::create_dir_all(&run).unwrap();
    let conf = suite.root().join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "base_dir = {run}\nstate_dir = {run}\nlog_path = /dev/stderr\nssl = no\nprotocols =\n\
             first_valid_uid = 1\nfirst_valid_gid = 1\nmail_uid = {uid}\nmail_gid = {gid}\n\
             mail_location = maildir:{maildir}\n\
             namespace inbox {{\n  inbox = yes\n  separator = /\n}}\n",
            run = run.display(),
            maildir = maildir.display(),
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
            .env("HOME", home)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "doveadm {args:?}: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let uv: u32 = uidlist[3..].split(' ').next().unwrap().trim_start_matches('V').parse().unwrap();
    let status = doveadm(&["mailbox", "status", "messages uidnext uidvalidity", "INBOX"]);
    assert_eq!(status.trim(), format!("INBOX messages=2 uidnext=3 uidvalidity={uv}"));
    let fetched = doveadm(&["fetch", "uid hdr.subject", "mailbox", "INBOX"]);
    assert!(
        fetched.contains("uid: 1\nhdr.subject: e2e\n") && fetched.contains("uid: 2\nhdr.subject: two\n"),
        "{fetched}"
    );

    let r = transaction(suite, &["alice@example.test"], "Subject: three\r\n\r\nafter dovecot\r\n");
    assert!(r[1].ends_with(" Saved\r\n"), "{r:?}");
    let fetched = doveadm(&["fetch", "uid hdr.subject", "mailbox", "INBOX"]);
    assert!(fetched.contains("uid: 3\nhdr.subject: three\n"), "{fetched}");
    let status = doveadm(&["mailbox", "status", "messages uidnext uidvalidity", "INBOX"]);
    assert_eq!(status.trim(), format!("INBOX messages=3 uidnext=4 uidvalidity={uv}"));
}

/// Dovecot's lmtp has no use limit; nor has lmtp-deliver unless max_use is set explicitly,
/// so all LMTP connections meet in one process (whose deliveries share uidlist lock cycles).
#[test]
fn one_process_takes_more_connections_than_max_use_unless_max_use_is_set() {
    let t = Duration::from_secs(10);
    let lmtp_pids = |st: &rpost_ipc::MasterStatus| -> Vec<u32> {
        st.services.iter().filter(|s| s.name == "lmtp-deliver").flat_map(|s| s.children.iter().map(|c| c.pid)).collect()
    };
    for (explicit, expect_one) in [(None, true), (Some("3"), false)] {
        let mut b = Suite::builder().virtual_delivery().master_line("lmtp-deliver unix - n n - - lmtp-deliver");
        if let Some(n) = explicit {
            b = b.main("max_use", n);
        }
        let suite = b.start_with(|s| s.write_config("users", "alice@example.test:{PLAIN}secret::::::\n"));
        let socket = suite.queue_dir().join("private/lmtp-deliver");
        let mut seen = std::collections::BTreeSet::new();
        // Postfix's default max_use is 100.
        for _ in 0..105 {
            let (mut c, greeting) = Lmtp::connect(&socket);
            assert!(greeting.starts_with("220 "), "{greeting}");
            c.cmd("QUIT");
            seen.extend(lmtp_pids(&suite.status()));
        }
        let st = suite.wait_status(t, |st| !lmtp_pids(st).is_empty());
        seen.extend(lmtp_pids(&st));
        assert_eq!(seen.len() == 1, expect_one, "max_use {explicit:?}: lmtp-deliver processes {seen:?}");
    }
}

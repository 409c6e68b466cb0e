//! Local submission end to end: sendmail (-f, -t, -bs, as another user) -> maildrop/ ->
//! pickup -> qmgr -> lmtp-deliver -> Maildir; mailq through showq; newaliases; garbage in
//! maildrop goes to corrupt/.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rpost_testkit::Suite;

const T: Duration = Duration::from_secs(30);

fn builder() -> rpost_testkit::SuiteBuilder {
    Suite::builder()
        .main("mydomain", "example.test")
        .main("myhostname", "mail.example.test")
        .main("mydestination", "$myhostname, localhost")
        .virtual_delivery()
        .master_line("pickup unix n - n 60 1 pickup")
        .master_line("showq unix n - n - - showq")
}

fn delivering_suite() -> Suite {
    delivering_suite_with(&[], &[])
}

fn delivering_suite_with(extra: &[(&str, &str)], files: &[(&str, &str)]) -> Suite {
    let mut b = builder();
    for (k, v) in extra {
        b = b.main(k, v);
    }
    b.master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("lmtp unix - - n - - smtp-client")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver")
        .start_with(|s| {
            s.write_config("users", "alice@example.test:{PLAIN}secret::::::\nbob@example.test:{PLAIN}secret::::::\n");
            for (name, text) in files {
                s.write_config(name, text);
            }
        })
}

/// Runs a suite binary with `-C etc` semantics through RPOST_CONFIG, `input` on stdin,
/// optionally as another uid/gid.
fn run(suite: &Suite, program: &str, args: &[&str], input: &[u8], as_user: Option<(u32, u32)>) -> Output {
    let mut cmd = Command::new(rpost_testkit::bin(program));
    cmd.args(args)
        .env("RPOST_CONFIG", suite.config_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = as_user {
        // Supplementary groups stay root's (group 0), which owns nothing in the spool.
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn new_mail(suite: &Suite, user: &str) -> Vec<String> {
    let dir = suite.root().join("vmail/example.test").join(user).join("mail/new");
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn wait_for_mail(suite: &Suite, user: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + T;
    loop {
        let mail = new_mail(suite, user);
        if mail.len() >= n {
            return mail;
        }
        assert!(Instant::now() < deadline, "{user} has {} of {n} messages\n{}", mail.len(), suite.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn find<'a>(mail: &'a [String], needle: &str) -> &'a String {
    mail.iter().find(|m| m.contains(needle)).unwrap_or_else(|| panic!("no message with {needle:?} in {mail:#?}"))
}

#[test]
fn sendmail_f_and_t_deliver_into_the_maildir() {
    let suite = delivering_suite();
    let uid = nix::unistd::getuid().as_raw();

    // Recipients on the command line, explicit sender, a lone dot ends the input.
    let out = run(
        &suite,
        "sendmail",
        &["-f", "a@x.test", "-F", "Alice Sender", "alice@example.test"],
        b"Subject: first\n\nhello\n.\nnot part of it\n",
        None,
    );
    assert!(out.status.success(), "sendmail: {}", text(&out.stderr));
    let mail = wait_for_mail(&suite, "alice", 1);
    let m = &mail[0];
    assert!(m.starts_with("Return-Path: <a@x.test>\n"), "{m}");
    assert!(m.contains(&format!("Received: by mail.example.test (rpost, from userid {uid})\n\tid ")), "{m}");
    assert!(m.contains("Subject: first\n") && m.contains("\nDate: ") && m.contains("\nMessage-Id: <"), "{m}");
    assert!(m.contains("\nFrom: Alice Sender <a@x.test>\n"), "{m}");
    assert!(m.ends_with("\n\nhello\n"), "the dot ended the message: {m}");
    let log = suite.wait_log(&format!("uid={uid} from=<a@x.test>"), T);
    assert!(log.contains("pickup["), "{log}");

    // -t: To/Cc/Bcc are the recipients, Bcc is gone from every copy; -i keeps lone dots.
    let msg = b"From: Me <me@x.test>\nTo: Alice <alice@example.test>\nBcc: bob@example.test\nReply-To: Me Myself <me>\nSubject: second\n\nline\n.\nafter the dot\n";
    let out = run(&suite, "sendmail", &["-t", "-i"], msg, None);
    assert!(out.status.success(), "sendmail -t: {}", text(&out.stderr));
    let alice = wait_for_mail(&suite, "alice", 2);
    let bob = wait_for_mail(&suite, "bob", 1);
    for m in [find(&alice, "Subject: second"), &bob[0]] {
        assert!(!m.contains("Bcc:") && !m.contains("bcc:"), "Bcc leaked: {m}");
        assert!(m.contains("From: Me <me@x.test>\n") && m.contains("\n.\nafter the dot\n"), "{m}");
        assert!(m.contains("\nMessage-Id: <"), "{m}");
        // Bare user names in address headers get @$myorigin (here $myhostname).
        assert!(m.contains("\nReply-To: Me Myself <me@mail.example.test>\n"), "{m}");
    }
    // No -f: the sender is the submitting user at $myorigin.
    let me = nix::unistd::User::from_uid(nix::unistd::getuid()).unwrap().unwrap().name;
    assert!(bob[0].starts_with(&format!("Return-Path: <{me}@mail.example.test>\n")), "{}", bob[0]);

    // -q asks qmgr to flush.
    let out = run(&suite, "sendmail", &["-q"], b"", None);
    assert!(out.status.success(), "sendmail -q: {}", text(&out.stderr));

    // Usage errors are EX_USAGE, and nothing is submitted.
    let out = run(&suite, "sendmail", &[], b"Subject: x\n\nx\n", None);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let out = run(&suite, "sendmail", &["-bz"], b"", None);
    assert_eq!(out.status.code(), Some(64));

    // -bv: how each address would be delivered.
    let out = run(&suite, "sendmail", &["-bv", "alice@example.test", "nobody@example.test"], b"", None);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(67), "{report}");
    assert!(report.contains("<alice@example.test>: deliverable: virtual mailbox domain"), "{report}");
    assert!(report.contains("<nobody@example.test>: undeliverable: User unknown in virtual mailbox table"), "{report}");
}

#[test]
fn another_user_submits_and_is_on_record() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: submitting as another user needs root to switch uid");
        return;
    }
    let suite = delivering_suite_with(
        &[
            ("local_login_sender_maps", "texthash:{root}/etc/login_senders, static:*"),
            ("authorized_submit_users", "!bin, static:anyone"),
            ("authorized_mailq_users", "daemon"),
        ],
        &[("login_senders", "daemon daemon, daemon@mail.example.test, <>\n")],
    );
    // `daemon` (uid 1): not root, not mail_owner (nobody), cannot read the queue.
    let user = nix::unistd::User::from_name("daemon").unwrap().expect("a daemon user");
    let ids = (user.uid.as_raw(), user.gid.as_raw());
    let out = run(&suite, "sendmail", &["bob@example.test"], b"Subject: from daemon\n\nhi\n", Some(ids));
    assert!(out.status.success(), "sendmail as daemon: {}", text(&out.stderr));
    let bob = wait_for_mail(&suite, "bob", 1);
    let m = &bob[0];
    assert!(m.starts_with("Return-Path: <daemon@mail.example.test>\n"), "{m}");
    assert!(m.contains(&format!("(rpost, from userid {})", ids.0)), "{m}");
    assert!(
        m.contains("From: daemon@mail.example.test\n") || m.contains("From: daemon <daemon@mail.example.test>\n"),
        "{m}"
    );
    suite.wait_log(&format!("uid={} from=<daemon@mail.example.test>", ids.0), T);
    // The user cannot read the queue, yet mailq works for them through showq.
    let out = run(&suite, "mailq", &[], b"", Some(ids));
    assert!(out.status.success(), "mailq as daemon: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Mail queue is empty") || text(&out.stdout).contains("-Queue ID-"));
    assert!(std::fs::read_dir(suite.queue_dir().join("maildrop")).is_ok());
    // local_login_sender_maps: daemon may not pose as someone else, on the command line or
    // in -bs; authorized_submit_users and authorized_mailq_users keep `bin` out.
    let out = run(&suite, "sendmail", &["-f", "boss@x.test", "bob@example.test"], b"Subject: forged\n\nx\n", Some(ids));
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not allowed to submit mail as <boss@x.test>"), "{}", text(&out.stderr));
    let out = run(&suite, "sendmail", &["-bs"], b"HELO me\r\nMAIL FROM:<boss@x.test>\r\nQUIT\r\n", Some(ids));
    assert!(
        text(&out.stdout).contains("553 5.7.1 <boss@x.test>: Sender address rejected: not owned by user daemon"),
        "{}",
        text(&out.stdout)
    );
    let bin = nix::unistd::User::from_name("bin").unwrap().expect("a bin user");
    let bin = (bin.uid.as_raw(), bin.gid.as_raw());
    let out = run(&suite, "sendmail", &["bob@example.test"], b"Subject: no\n\nx\n", Some(bin));
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("User bin(2) is not allowed to submit mail"), "{}", text(&out.stderr));
    let out = run(&suite, "mailq", &[], b"", Some(bin));
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("User bin(2) is not allowed to view the mail queue"), "{}", text(&out.stderr));
    // And -bs works for them too.
    let out = run(
        &suite,
        "sendmail",
        &["-bs"],
        b"HELO me\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: bs\r\n\r\nx\r\n.\r\nQUIT\r\n",
        Some(ids),
    );
    assert!(text(&out.stdout).contains("250 2.0.0 Ok: queued as"), "{}", text(&out.stdout));
    let bob = wait_for_mail(&suite, "bob", 2);
    let m = find(&bob, "Subject: bs");
    assert!(m.starts_with("Return-Path: <>\n") && m.contains(&format!("from userid {}", ids.0)), "{m}");
}

#[test]
fn sendmail_bs_speaks_smtp() {
    let suite = delivering_suite();
    let dialogue = "EHLO client.example\r\nMAIL FROM:<s@x.test>\r\nRCPT TO:<nosuchcommand\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<bob@example.test> NOTIFY=NEVER\r\nDATA\r\nSubject: over smtp\r\n\r\n..stuffed\r\n.\r\nNOOP\r\nRSET\r\nVRFY alice@example.test\r\nHELP\r\nQUIT\r\n";
    let out = run(&suite, "sendmail", &["-bs"], dialogue.as_bytes(), None);
    let replies = text(&out.stdout);
    assert!(out.status.success(), "{replies}{}", text(&out.stderr));
    let codes: Vec<&str> = replies.lines().filter(|l| l.as_bytes().get(3) == Some(&b' ')).map(|l| &l[..3]).collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "501", "250", "250", "354", "250", "250", "250", "252", "502", "221"],
        "{replies}"
    );
    assert!(replies.starts_with("220 mail.example.test ESMTP rpost\r\n"), "{replies}");
    assert!(replies.contains("250-PIPELINING\r\n") && replies.contains("250 DSN\r\n"), "{replies}");
    assert!(replies.contains("354 End data with <CR><LF>.<CR><LF>\r\n"), "{replies}");
    assert!(replies.contains("250 2.0.0 Ok: queued as "), "{replies}");
    for user in ["alice", "bob"] {
        let mail = wait_for_mail(&suite, user, 1);
        assert!(mail[0].contains("Subject: over smtp\n") && mail[0].ends_with("\n\n.stuffed\n"), "{}", mail[0]);
        assert!(mail[0].starts_with("Return-Path: <s@x.test>\n"), "{}", mail[0]);
    }
}

#[test]
fn mailq_lists_held_mail_and_newaliases_builds_the_db() {
    // No qmgr: what pickup queues stays in incoming/ until the test holds it.
    let suite = builder().main("alias_database", "hash:{root}/etc/aliases").start_with(|s| {
        s.write_config("aliases", "# test aliases\npostmaster: root\nroot: alice@example.test, bob@example.test\n");
    });
    let out = run(
        &suite,
        "sendmail",
        &["-f", "held@x.test", "-N", "success,delay", "-R", "hdrs", "-V", "env-42", "someone@remote.test"],
        b"Subject: held\n\nx\n",
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = suite.wait_log("from=<held@x.test>", T);
    let line = log.lines().find(|l| l.contains("from=<held@x.test>")).unwrap();
    let id = line.split("pickup[").nth(1).unwrap().split(": ").nth(1).unwrap().to_string();
    // The DSN options and the submitter travel in the queue file.
    let shown = text(&suite.rmaster(&["queue", "show", &id]).stdout);
    for want in [
        "dsn_ret: HDRS",
        "dsn_envid: env-42",
        "dsn_notify: SUCCESS,DELAY",
        "named_attribute: uid=",
        "sender: held@x.test",
    ] {
        assert!(shown.contains(want), "{want}: {shown}");
    }
    let held = suite.rmaster(&["queue", "hold", &id]);
    assert!(held.status.success(), "{}", text(&held.stderr));

    let mailq = run(&suite, "mailq", &[], b"", None);
    assert!(mailq.status.success(), "{}", text(&mailq.stderr));
    let listing = text(&mailq.stdout);
    assert!(listing.starts_with("-Queue ID-"), "{listing}");
    assert!(
        listing.contains(&format!("{id}!"))
            && listing.contains("held@x.test")
            && listing.contains("someone@remote.test"),
        "{listing}"
    );
    assert!(listing.ends_with("Kbytes in 1 Request.\n"), "{listing}");
    // The same listing as the admin command, and as sendmail -bp.
    assert_eq!(listing, text(&suite.rmaster(&["queue", "list"]).stdout));
    assert_eq!(listing, text(&run(&suite, "sendmail", &["-bp"], b"", None).stdout));

    // newaliases builds every alias_database; rmaster map query reads the result.
    let aliases = suite.config_dir().join("aliases");
    let out = run(&suite, "newaliases", &[], b"", None);
    assert!(out.status.success(), "newaliases: {}", text(&out.stderr));
    assert!(Path::new(&format!("{}.db", aliases.display())).is_file());
    let q = suite.rmaster(&["map", "query", &format!("hash:{}", aliases.display()), "root"]);
    assert!(q.status.success(), "{}", text(&q.stderr));
    assert_eq!(text(&q.stdout).trim(), "alice@example.test, bob@example.test");
    // No qmgr in this suite: a flush request has nobody to go to.
    let out = run(&suite, "sendmail", &["-q"], b"", None);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Cannot flush mail queue - mail system is down"));

    // With the mail system down, the privileged read the queue themselves (as postqueue -p).
    let mut suite = suite;
    suite.stop();
    let direct = run(&suite, "mailq", &[], b"", None);
    assert!(direct.status.success(), "{}", text(&direct.stderr));
    assert!(
        text(&direct.stderr).contains("Mail system is down -- accessing queue directly"),
        "{}",
        text(&direct.stderr)
    );
    assert_eq!(text(&direct.stdout), listing);

    // sendmail -bi is the same thing.
    std::fs::remove_file(format!("{}.db", aliases.display())).unwrap();
    assert!(run(&suite, "sendmail", &["-bi"], b"", None).status.success());
    assert!(Path::new(&format!("{}.db", aliases.display())).is_file());
}

#[test]
fn garbage_in_maildrop_goes_to_corrupt_and_pickup_carries_on() {
    let suite = delivering_suite();
    let maildrop = suite.queue_dir().join("maildrop");
    // A complete-looking file that is not a maildrop file, a truncated one, and a symlink.
    let garbage = maildrop.join("GARBAGE1");
    std::fs::write(&garbage, b"this is not mail\n").unwrap();
    std::fs::set_permissions(&garbage, std::os::unix::fs::PermissionsExt::from_mode(0o744)).unwrap();
    let torn = maildrop.join("TORN2");
    std::fs::write(&torn, b"RPOSTDROP 1\nrcpt alice@example.test\nsize 100\n\nshort").unwrap();
    std::fs::set_permissions(&torn, std::os::unix::fs::PermissionsExt::from_mode(0o744)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", maildrop.join("LINK3")).unwrap();
    // A file still being written (no execute bit) is left alone.
    let partial = maildrop.join("PARTIAL4");
    std::fs::write(&partial, b"RPOSTDROP 1\n").unwrap();
    std::fs::set_permissions(&partial, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // A good message after them: its wakeup makes pickup look at everything.
    let out = run(&suite, "sendmail", &["-f", "good@x.test", "alice@example.test"], b"Subject: good\n\nok\n", None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mail = wait_for_mail(&suite, "alice", 1);
    assert!(mail[0].contains("Subject: good"), "{}", mail[0]);
    let log = suite.wait_log("maildrop/LINK3", T);
    assert!(
        log.contains("maildrop/GARBAGE1:")
            && log.contains("bad magic")
            && log.contains("moved to corrupt/maildrop-GARBAGE1"),
        "{log}"
    );
    assert!(log.contains("maildrop/TORN2:") && log.contains("moved to corrupt/maildrop-TORN2"), "{log}");
    assert!(log.contains("warning"), "{log}");
    let corrupt = suite.queue_dir().join("corrupt");
    for name in ["maildrop-GARBAGE1", "maildrop-TORN2"] {
        assert!(corrupt.join(name).is_file(), "{name} kept for inspection");
    }
    assert!(std::fs::symlink_metadata(corrupt.join("maildrop-LINK3")).is_ok_and(|m| m.file_type().is_symlink()));
    assert!(!garbage.exists() && !torn.exists());
    assert!(partial.exists(), "an incomplete file is not touched");
    // Pickup is still working: another message goes through.
    let out = run(&suite, "sendmail", &["alice@example.test"], b"Subject: still going\n\nok\n", None);
    assert!(out.status.success());
    let mail = wait_for_mail(&suite, "alice", 2);
    find(&mail, "Subject: still going");
}

//! smtpd end to end: the seed documents' telnet dialogues, relay control, unknown users,
//! smuggling, pipelining, BDAT, limits, and the queue file behind every 250.

use std::net::Ipv4Addr;
use std::time::Duration;

use rpost_testkit::Suite;
use rpost_testkit::smtp::{SmtpClient, queued_id};

/// The seed's setup: local domain mail.example.test, virtual domain example.test with users
/// in a passwd-file, and mynetworks = 127.0.0.1 only (so 127.0.0.2 is "the Internet").
fn seed_suite(extra: &[(&str, &str)]) -> Suite {
    let mut b = Suite::builder().seed_domains().main("myorigin", "$myhostname").inet("smtp", "n - n - - smtpd");
    for (k, v) in extra {
        b = b.main(k, v);
    }
    b.start_with(|s| {
        s.write_config("users", "alice@example.test:{PLAIN}secret::::::\nbob@example.test:{PLAIN}secret::::::\n");
    })
}

fn queue_file(suite: &Suite, id: &str) -> rpost_queue::QueueFile {
    let q = rpost_queue::Queue::new(suite.queue_dir());
    let id = rpost_queue::QueueId::parse(id).expect("queue id");
    q.open(rpost_queue::QueueDir::Incoming, &id).expect("committed queue file")
}

#[test]
fn seed_dialogue_local_recipient() {
    let suite = seed_suite(&[]);
    let mut c = SmtpClient::connect(suite.port("smtp"));
    assert_eq!(c.greeting, "220 mail.example.test ESMTP rpost\r\n");
    assert_eq!(c.cmd("HELO EXTHOST.EXTDOMAIN"), "250 mail.example.test\r\n");
    assert_eq!(c.cmd("MAIL FROM: EXTUSER@EXTDOMAIN"), "250 2.1.0 Ok\r\n");
    assert_eq!(c.cmd("RCPT TO: root"), "250 2.1.5 Ok\r\n");
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    let r = c.body("Test B");
    let id = queued_id(&r).unwrap_or_else(|| panic!("{r}"));
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");

    let f = queue_file(&suite, &id);
    assert_eq!(f.envelope.sender, "EXTUSER@EXTDOMAIN");
    assert_eq!(f.envelope.recipients.len(), 1);
    assert_eq!(f.envelope.recipients[0].address, "root@mail.example.test", "myorigin appended");
    assert_eq!(f.envelope.client.helo, "EXTHOST.EXTDOMAIN");
    let content = String::from_utf8(f.content().unwrap()).unwrap();
    assert!(
        content.starts_with(
            "Received: from EXTHOST.EXTDOMAIN (localhost [127.0.0.1])\r\n\tby mail.example.test (rpost) with SMTP id "
        ),
        "{content}"
    );
    assert!(content.contains(&format!("id {id}\r\n\tfor <root@mail.example.test>; ")), "{content}");
    assert!(content.ends_with("\r\n\r\nTest B\r\n") || content.ends_with("Test B\r\n"), "{content:?}");
    let log = suite.wait_log(&format!("{id}: client=localhost[127.0.0.1]"), Duration::from_secs(10));
    assert!(log.contains("connect from localhost[127.0.0.1]"));
    suite.wait_log(
        "disconnect from localhost[127.0.0.1] helo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        Duration::from_secs(10),
    );
}

#[test]
fn seed_dialogue_relay_denied_from_outside() {
    let suite = seed_suite(&[]);
    let mut c = SmtpClient::connect_from(Ipv4Addr::new(127, 0, 0, 2), suite.port("smtp"));
    c.cmd("HELO EXTDOMAIN");
    assert_eq!(c.cmd("MAIL FROM: EXTUSER@EXTDOMAIN"), "250 2.1.0 Ok\r\n");
    assert_eq!(c.cmd("RCPT TO: EXTUSER@EXTDOMAIN"), "554 5.7.1 <EXTUSER@EXTDOMAIN>: Relay access denied\r\n");
    // Mail for our own domains is still welcome from outside.
    assert_eq!(c.cmd("RCPT TO: root"), "250 2.1.5 Ok\r\n");
    assert_eq!(c.cmd("RCPT TO: alice@example.test"), "250 2.1.5 Ok\r\n");
    // The classic open-relay tricks do not count as ours.
    for trick in [
        "<EXTUSER%EXTDOMAIN@mail.example.test>",
        "<EXTDOMAIN!EXTUSER@mail.example.test>",
        "<@mail.example.test:EXTUSER@EXTDOMAIN>",
    ] {
        let r = c.cmd(&format!("RCPT TO:{trick}"));
        assert!(r.starts_with("554 5.7.1 ") && r.contains("Relay access denied"), "{trick}: {r}");
    }
    suite.wait_log(
        "NOQUEUE: reject: RCPT from localhost[127.0.0.2]: 554 5.7.1 <EXTUSER@EXTDOMAIN>: Relay access denied; from=<EXTUSER@EXTDOMAIN> to=<EXTUSER@EXTDOMAIN> proto=SMTP helo=<EXTDOMAIN>",
        Duration::from_secs(10),
    );
    // From inside mynetworks the same recipient is relayed.
    let mut inside = SmtpClient::connect(suite.port("smtp"));
    inside.cmd("EHLO inside.example");
    inside.cmd("MAIL FROM:<root>");
    assert_eq!(inside.cmd("RCPT TO:<EXTUSER@EXTDOMAIN>"), "250 2.1.5 Ok\r\n");
}

#[test]
fn unknown_virtual_user_is_refused_at_rcpt() {
    let suite = seed_suite(&[]);
    let mut c = SmtpClient::connect_from(Ipv4Addr::new(127, 0, 0, 2), suite.port("smtp"));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<someone@elsewhere.example>");
    assert_eq!(
        c.cmd("RCPT TO:<nobody@example.test>"),
        "550 5.1.1 <nobody@example.test>: Recipient address rejected: User unknown in virtual mailbox table\r\n"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>"), "250 2.1.5 Ok\r\n");
    assert_eq!(c.cmd("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n");
    let id = queued_id(&c.body("Subject: hi\r\n\r\nhello")).expect("queued");
    let f = queue_file(&suite, &id);
    assert_eq!(f.envelope.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(), ["alice@example.test"]);
}

#[test]
fn ehlo_advertises_the_extensions() {
    let suite = seed_suite(&[]);
    let mut c = SmtpClient::connect(suite.port("smtp"));
    let r = c.cmd("EHLO client.example");
    assert_eq!(
        r,
        "250-mail.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n"
    );
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
    assert_eq!(c.cmd("VRFY alice@example.test"), "252 2.0.0 alice@example.test\r\n");
    assert!(c.cmd("VRFY nobody@example.test").starts_with("550 5.1.1 "));
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>"), "503 5.5.1 Error: need MAIL command\r\n");
    assert_eq!(c.cmd("DATA"), "503 5.5.1 Error: need RCPT command\r\n");
    assert_eq!(c.cmd("FOO"), "502 5.5.2 Error: command not recognized\r\n");
    assert_eq!(c.cmd("MAIL FROM:<a@b.example> SIZE=99999999"), "552 5.3.4 Message size exceeds fixed limit\r\n");
    assert_eq!(c.cmd("MAIL FROM:<a@b.example> FROB=1"), "555 5.5.4 Unsupported option: FROB=1\r\n");
    assert_eq!(c.cmd("MAIL FROM:<a@b.example> BODY=BINARYMIME"), "555 5.5.4 Unsupported option: BODY=BINARYMIME\r\n");
    assert_eq!(c.cmd("MAIL FROM:<a@b.example> BODY=8BITMIME RET=HDRS ENVID=x+2By"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.test"),
        "250 2.1.5 Ok\r\n"
    );
    assert_eq!(c.cmd("RCPT TO:<bob@example.test> XYZZY"), "555 5.5.4 Unsupported option: XYZZY\r\n");
    assert_eq!(c.cmd("MAIL FROM:<a@b.example>"), "503 5.5.1 Error: nested MAIL command\r\n");
    assert_eq!(c.cmd("RSET"), "250 2.0.0 Ok\r\n");
    assert_eq!(c.cmd("QUIT"), "221 2.0.0 Bye\r\n");
}

#[test]
fn smuggled_end_of_data_is_never_taken_as_the_end() {
    let suite = seed_suite(&[]);
    for smuggle in ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n"] {
        let mut c = SmtpClient::connect(suite.port("smtp"));
        c.cmd("EHLO attacker.example");
        c.cmd("MAIL FROM:<a@attacker.example>");
        c.cmd("RCPT TO:<alice@example.test>");
        assert!(c.cmd("DATA").starts_with("354"));
        let payload = format!(
            "Subject: first\r\n\r\nbody{smuggle}MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
        );
        c.send(payload.as_bytes());
        let r = c.reply();
        assert!(r.starts_with("521 5.5.2 "), "{smuggle:?}: {r}");
        assert_eq!(c.reply(), "", "connection closed after a smuggling attempt");
    }
    // Nothing at all was queued.
    let q = rpost_queue::Queue::new(suite.queue_dir());
    assert!(q.scan(rpost_queue::QueueDir::Incoming).unwrap().is_empty());
}

#[test]
fn bare_lf_in_a_command_is_refused() {
    let suite = seed_suite(&[]);
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.send(b"EHLO x.example\n");
    assert!(c.reply().starts_with("521 5.5.2 "));
}

#[test]
fn pipelined_commands_get_ordered_replies() {
    let suite = seed_suite(&[]);
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    c.send(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
    assert_eq!(c.reply(), "250 2.1.0 Ok\r\n");
    assert_eq!(c.reply(), "250 2.1.5 Ok\r\n");
    assert!(c.reply().starts_with("550 5.1.1 <nobody@example.test>"));
    assert_eq!(c.reply(), "250 2.1.5 Ok\r\n");
    assert!(c.reply().starts_with("354 "));
    let id = queued_id(&c.body("pipelined")).expect("queued");
    assert_eq!(queue_file(&suite, &id).envelope.recipients.len(), 2);
}

#[test]
fn bdat_chunks_make_one_message() {
    let suite = seed_suite(&[]);
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@client.example>");
    c.cmd("RCPT TO:<alice@example.test>");
    let part1 = "Subject: chunks\r\n\r\nline one\r\n.\r\n";
    c.send(format!("BDAT {}\r\n{part1}", part1.len()).as_bytes());
    assert_eq!(c.reply(), format!("250 2.0.0 Ok: {} bytes\r\n", part1.len()));
    let part2 = "line two\r\n";
    c.send(format!("BDAT {} LAST\r\n{part2}", part2.len()).as_bytes());
    let id = queued_id(&c.reply()).expect("queued");
    let content = String::from_utf8(queue_file(&suite, &id).content().unwrap()).unwrap();
    assert!(content.ends_with("Subject: chunks\r\n\r\nline one\r\n.\r\nline two\r\n"), "{content:?}");
    // BDAT without a transaction: refused, and its bytes do not become commands.
    let junk = "RSET\r\nQUIT\r\n";
    c.send(format!("BDAT {} LAST\r\n{junk}", junk.len()).as_bytes());
    assert_eq!(c.reply(), "503 5.5.1 Error: need RCPT command\r\n");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n");
}

#[test]
fn oversized_messages_and_lines_are_refused() {
    let suite = seed_suite(&[("message_size_limit", "2000")]);
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<a@client.example>");
    c.cmd("RCPT TO:<alice@example.test>");
    c.cmd("DATA");
    let big = "x".repeat(100) + "\r\n";
    let r = c.body(&big.repeat(50));
    assert_eq!(r, "552 5.3.4 Message size exceeds fixed limit\r\n");
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 Ok\r\n", "the session goes on");
    let r = c.cmd(&format!("HELO {}", "a".repeat(5000)));
    assert_eq!(r, "500 5.5.2 Error: line too long\r\n");
    assert!(c.cmd("QUIT").starts_with("221"));
}

#[test]
fn too_many_errors_end_the_session() {
    let suite = seed_suite(&[("smtpd_hard_error_limit", "3"), ("smtpd_soft_error_limit", "10")]);
    let mut c = SmtpClient::connect(suite.port("smtp"));
    assert!(c.cmd("BOGUS").starts_with("502"));
    assert!(c.cmd("BOGUS").starts_with("502"));
    assert_eq!(c.cmd("BOGUS"), "421 4.7.0 mail.example.test Error: too many errors\r\n");
    assert_eq!(c.reply(), "");
}

#[test]
fn access_tables_and_helo_checks() {
    let suite = seed_suite(&[
        ("smtpd_helo_required", "yes"),
        (
            "smtpd_sender_restrictions",
            "check_sender_access inline:{ { spammer@bad.example = REJECT Go away }, { bad.example = 550 5.7.0 Domain blocked } }",
        ),
        ("smtpd_helo_restrictions", "reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname"),
    ]);
    let mut c = SmtpClient::connect_from(Ipv4Addr::new(127, 0, 0, 2), suite.port("smtp"));
    assert_eq!(c.cmd("MAIL FROM:<x@y.example>"), "503 5.5.1 Error: send HELO/EHLO first\r\n");
    c.cmd("EHLO localhost");
    c.cmd("MAIL FROM:<spammer@bad.example>");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test>"),
        "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname\r\n"
    );
    c.cmd("RSET");
    c.cmd("EHLO client.good.example");
    c.cmd("MAIL FROM:<spammer@bad.example>");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test>"),
        "554 5.7.1 <spammer@bad.example>: Sender address rejected: Go away\r\n"
    );
    c.cmd("RSET");
    c.cmd("MAIL FROM:<other@bad.example>");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test>"),
        "550 5.7.0 <other@bad.example>: Sender address rejected: Domain blocked\r\n"
    );
    c.cmd("RSET");
    c.cmd("MAIL FROM:<fine@good.example>");
    assert_eq!(c.cmd("RCPT TO:<alice@example.test>"), "250 2.1.5 Ok\r\n");
}

#[test]
fn virtual_aliases_are_expanded_before_the_queue() {
    let suite = seed_suite(&[
        (
            "virtual_alias_maps",
            "inline:{ { sales@example.test = alice@example.test, bob@example.test }, @alias.test=bob@example.test }",
        ),
        ("virtual_alias_domains", "alias.test"),
    ]);
    let mut c = SmtpClient::connect_from(Ipv4Addr::new(127, 0, 0, 2), suite.port("smtp"));
    c.cmd("EHLO client.example");
    let id = c.send_mail("x@client.example", &["sales@example.test", "anyone@alias.test"], "hello").expect("queued");
    let f = queue_file(&suite, &id);
    let got: Vec<(&str, &str)> =
        f.envelope.recipients.iter().map(|r| (r.address.as_str(), r.original.as_str())).collect();
    assert_eq!(
        got,
        [("alice@example.test", "sales@example.test"), ("bob@example.test", "sales@example.test")],
        "bob once, though two aliases lead to him"
    );
}

#[test]
fn queue_list_and_show_read_what_smtpd_wrote() {
    let suite = seed_suite(&[]);
    let empty = suite.rmaster(&["queue", "list"]);
    assert_eq!(String::from_utf8_lossy(&empty.stdout), "Mail queue is empty\n");
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    let id = c
        .send_mail("sender@client.example", &["alice@example.test", "bob@example.test"], "Subject: q\r\n\r\nhello")
        .expect("queued");

    let out = suite.rmaster(&["queue", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("-Queue ID-"), "{text}");
    let line = text.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{id} missing: {text}"));
    assert!(line.ends_with("sender@client.example"), "{line}");
    assert!(text.contains("alice@example.test") && text.contains("bob@example.test"));
    assert!(text.trim_end().ends_with("in 1 Request."), "{text}");

    let json = suite.rmaster(&["queue", "list", "--json"]);
    let json = String::from_utf8_lossy(&json.stdout);
    assert!(json.contains(&format!("\"{id}\"")) && json.contains("\"incoming\""), "{json}");

    let show = suite.rmaster(&["queue", "show", &id]);
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("*** ENVELOPE RECORDS ***") && show.contains("hello"), "{show}");
    let missing = suite.rmaster(&["queue", "show", "0000000000000000"]);
    assert!(!missing.status.success());
    let bad = suite.rmaster(&["queue", "show", "../../etc/passwd"]);
    assert!(!bad.status.success(), "path traversal through a queue ID must fail");
}

#[test]
fn map_build_and_query_like_postmap() {
    let suite = seed_suite(&[]);
    let dir = suite.config_dir();
    std::fs::write(
        dir.join("virtual"),
        "# comment\nsales@example.test alice@example.test\nInfo@Example.TEST bob@example.test\n",
    )
    .unwrap();
    let table = format!("hash:{}", dir.join("virtual").display());
    let out = suite.rmaster(&["map", "build", &table]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("virtual.db").exists());
    let q = suite.rmaster(&["map", "query", &table, "sales@example.test"]);
    assert!(q.status.success());
    assert_eq!(String::from_utf8_lossy(&q.stdout), "alice@example.test\n");
    let q = suite.rmaster(&["map", "query", &table, "info@example.test"]);
    assert_eq!(String::from_utf8_lossy(&q.stdout), "bob@example.test\n", "keys are case-folded as postmap does");
    let q = suite.rmaster(&["map", "query", &table, "nobody@example.test"]);
    assert!(!q.status.success());

    std::fs::write(dir.join("aliases"), "postmaster: root\nroot: alice@example.test,\n  bob@example.test\n").unwrap();
    let out = suite.rmaster(&["map", "build", "--aliases", dir.join("aliases").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let q = suite.rmaster(&["map", "query", &format!("hash:{}", dir.join("aliases").display()), "root"]);
    let v = String::from_utf8_lossy(&q.stdout);
    assert!(v.contains("alice@example.test") && v.contains("bob@example.test"), "{v}");
}

#[test]
fn unauthorized_pipelining_is_refused() {
    let suite = seed_suite(&[("smtpd_data_restrictions", "reject_unauth_pipelining")]);
    // HELO, not EHLO: the client was never offered PIPELINING, yet sends DATA and content
    // without waiting (a typical spamware shortcut).
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("HELO client.example");
    c.send(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: x\r\n\r\nspam\r\n.\r\n");
    assert_eq!(c.reply(), "250 2.1.0 Ok\r\n");
    assert_eq!(c.reply(), "250 2.1.5 Ok\r\n");
    assert_eq!(c.reply(), "503 5.5.0 Error: improper use of SMTP command pipelining\r\n");
    // A well-behaved EHLO client may pipeline.
    let mut ok = SmtpClient::connect(suite.port("smtp"));
    ok.cmd("EHLO client.example");
    ok.send(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n");
    assert_eq!(ok.reply(), "250 2.1.0 Ok\r\n");
    assert_eq!(ok.reply(), "250 2.1.5 Ok\r\n");
    assert!(ok.reply().starts_with("354 "));
}

#[test]
fn services_that_demand_tls_refuse_mail_in_the_clear() {
    let suite = Suite::builder()
        .inet("submission", "n - n - - smtpd -o smtpd_tls_security_level=encrypt")
        .inet("smtps", "n - n - - smtpd -o smtpd_tls_wrappermode=yes")
        .start();
    let mut c = SmtpClient::connect(suite.port("submission"));
    let ehlo = c.cmd("EHLO client.example");
    assert!(ehlo.contains("250-STARTTLS\r\n"), "{ehlo}");
    assert_eq!(c.cmd("MAIL FROM:<a@client.example>"), "530 5.7.0 Must issue a STARTTLS command first\r\n");
    // smtps: TLS from the first byte; a plaintext client never gets a plaintext greeting.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", suite.port("smtps"))).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    raw.write_all(b"EHLO client.example\r\n").unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(!got.windows(4).any(|w| w == b"220 "), "{:?}", String::from_utf8_lossy(&got));
}

#[test]
fn dsn_parameters_reach_the_queue_file() {
    let suite = seed_suite(&[]);
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("MAIL FROM:<a@client.example> RET=HDRS ENVID=QQ+2B314"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alice+2Bx@example.test"),
        "250 2.1.5 Ok\r\n"
    );
    c.cmd("DATA");
    let id = queued_id(&c.body("x")).expect("queued");
    let env = queue_file(&suite, &id).envelope;
    assert_eq!(env.ret, Some(rpost_queue::Ret::Hdrs));
    assert_eq!(env.envid.as_deref(), Some("QQ+314"));
    assert_eq!(env.recipients[0].notify, Some(2 | 4));
    assert_eq!(env.recipients[0].orcpt.as_deref(), Some("rfc822;Alice+x@example.test"));
}

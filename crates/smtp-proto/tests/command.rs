//! Command parsing: tolerant forms, ESMTP parameters, and the exact Postfix error replies.

use rpost_smtp_proto::{
    Address, AddressError, Body, Command, CommandError, MailParams, Notify, Path, RcptParams, Ret, ReversePath,
    parse_command, parse_path, xtext_decode, xtext_encode,
};

fn parse(line: &str) -> Result<Command, CommandError> {
    parse_command(line.as_bytes())
}

fn addr(local: &str, domain: &str, raw: &str) -> Address {
    Address { local: local.into(), domain: domain.into(), raw: raw.into() }
}

/// The wire reply for a line that must fail.
fn reply(line: &[u8]) -> String {
    match parse_command(line) {
        Ok(c) => panic!("{:?} parsed as {c:?}", String::from_utf8_lossy(line)),
        Err(e) => String::from_utf8(e.reply().to_bytes()).unwrap(),
    }
}

fn mail_from(line: &str) -> (ReversePath, MailParams) {
    match parse(line) {
        Ok(Command::Mail { from, params }) => (from, params),
        other => panic!("{line:?}: {other:?}"),
    }
}

fn rcpt_to(line: &str) -> (Address, RcptParams) {
    match parse(line) {
        Ok(Command::Rcpt { to: Path(a), params }) => (a, params),
        other => panic!("{line:?}: {other:?}"),
    }
}

#[test]
fn tolerant_mail_from_forms() {
    let a = addr("alice", "example.org", "alice@example.org");
    let cases = [
        "MAIL FROM:<alice@example.org>",
        "mail from:<alice@example.org>",
        "Mail From:<alice@example.org>",
        "MAIL FROM: <alice@example.org>",
        "MAIL FROM:   <alice@example.org>   ",
        "MAIL\tFROM:\t<alice@example.org>",
        "MAIL FROM:alice@example.org",
        "MAIL FROM: alice@example.org",
    ];
    for line in cases {
        let (from, params) = mail_from(line);
        assert_eq!(from, ReversePath::Path(a.clone()), "{line}");
        assert_eq!(params, MailParams::default(), "{line}");
    }
    assert_eq!(mail_from("MAIL FROM:<>").0, ReversePath::Null);
    assert_eq!(mail_from("MAIL FROM: <>").0, ReversePath::Null);
    assert_eq!(mail_from("MAIL FROM:<> SIZE=0").1.size, Some(0));
    // The seed tutorial's telnet dialogue.
    assert_eq!(
        mail_from("MAIL FROM: EXTUSER@EXTDOMAIN").0,
        ReversePath::Path(addr("EXTUSER", "EXTDOMAIN", "EXTUSER@EXTDOMAIN"))
    );
}

#[test]
fn tolerant_rcpt_to_forms() {
    let cases: &[(&str, Address)] = &[
        ("RCPT TO:<bob@example.com>", addr("bob", "example.com", "bob@example.com")),
        ("rcpt to: <bob@example.com>", addr("bob", "example.com", "bob@example.com")),
        ("RCPT TO: root", addr("root", "", "root")),
        ("RCPT TO:<postmaster>", addr("postmaster", "", "postmaster")),
        ("RCPT TO:<Postmaster>", addr("Postmaster", "", "Postmaster")),
        (
            "RCPT TO:<@hosta.example,@hostb.example:user@domain.example>",
            addr("user", "domain.example", "@hosta.example,@hostb.example:user@domain.example"),
        ),
        ("RCPT TO:<@[IPv6:::1]:u@d.example>", addr("u", "d.example", "@[IPv6:::1]:u@d.example")),
        ("RCPT TO:<\"john doe\"@example.com>", addr("john doe", "example.com", "\"john doe\"@example.com")),
        ("RCPT TO:<\"a\\\"b\"@example.com>", addr("a\"b", "example.com", "\"a\\\"b\"@example.com")),
        ("RCPT TO:<\"\"@example.com>", addr("", "example.com", "\"\"@example.com")),
        ("RCPT TO:<user@[192.0.2.1]>", addr("user", "[192.0.2.1]", "user@[192.0.2.1]")),
        ("RCPT TO:<user@[IPv6:2001:db8::1]>", addr("user", "[IPv6:2001:db8::1]", "user@[IPv6:2001:db8::1]")),
        ("RCPT TO:<user@[ipv6:::ffff:1.2.3.4]>", addr("user", "[ipv6:::ffff:1.2.3.4]", "user@[ipv6:::ffff:1.2.3.4]")),
        ("RCPT TO:<jöran@exämple.de>", addr("jöran", "exämple.de", "jöran@exämple.de")),
        ("RCPT TO:<用户@例子.广告>", addr("用户", "例子.广告", "用户@例子.广告")),
        ("RCPT TO:<a@example.com.>", addr("a", "example.com", "a@example.com.")),
        ("RCPT TO:<john..doe@example.com>", addr("john..doe", "example.com", "john..doe@example.com")),
        ("RCPT TO:<a+tag@sub_domain.example>", addr("a+tag", "sub_domain.example", "a+tag@sub_domain.example")),
        ("RCPT TO:< a@b.example >", addr("a", "b.example", " a@b.example ")),
        ("RCPT TO:<a@1.2.3.example>", addr("a", "1.2.3.example", "a@1.2.3.example")),
    ];
    for (line, want) in cases {
        let (got, params) = rcpt_to(line);
        assert_eq!(&got, want, "{line}");
        assert_eq!(params, RcptParams::default(), "{line}");
    }
    assert!(rcpt_to("RCPT TO:<jöran@exämple.de>").0.is_utf8());
    assert!(!rcpt_to("RCPT TO:<a@b.example>").0.is_utf8());
}

#[test]
fn address_display_requotes() {
    let cases = [
        ("RCPT TO:<\"john doe\"@example.com>", "\"john doe\"@example.com"),
        ("RCPT TO:<\"a\\\"b\"@x.example>", "\"a\\\"b\"@x.example"),
        ("RCPT TO:<\"plain\"@x.example>", "plain@x.example"),
        ("RCPT TO:<john..doe@x.example>", "\"john..doe\"@x.example"),
        ("RCPT TO:<\".a\"@x.example>", "\".a\"@x.example"),
        ("RCPT TO:<\"\"@x.example>", "\"\"@x.example"),
        ("RCPT TO:<postmaster>", "postmaster"),
        ("RCPT TO:<@r.example:u.v@x.example>", "u.v@x.example"),
        ("RCPT TO:<jöran@exämple.de>", "jöran@exämple.de"),
        ("RCPT TO:<a@[IPv6:::1]>", "a@[IPv6:::1]"),
    ];
    for (line, want) in cases {
        assert_eq!(rcpt_to(line).0.to_string(), want, "{line}");
    }
}

#[test]
fn mail_parameters() {
    let (from, p) = mail_from(
        "MAIL FROM:<a@b.example> size=1000 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B314159 AUTH=<> XVERP FOO=bar",
    );
    assert_eq!(from, ReversePath::Path(addr("a", "b.example", "a@b.example")));
    assert_eq!(
        p,
        MailParams {
            size: Some(1000),
            body: Some(Body::EightBitMime),
            smtputf8: true,
            ret: Some(Ret::Hdrs),
            envid: Some("QQ+314159".into()),
            auth: Some("<>".into()),
            unknown: vec![("XVERP".into(), None), ("FOO".into(), Some("bar".into()))],
        }
    );
    assert_eq!(
        String::from_utf8(p.reject_unknown().unwrap_err().reply().to_bytes()).unwrap(),
        "555 5.5.4 Unsupported option: XVERP\r\n"
    );
    let p = mail_from("MAIL FROM:<a@b.example> BODY=7BIT RET=FULL AUTH=user+40example.com").1;
    assert_eq!((p.body, p.ret, p.auth.as_deref()), (Some(Body::SevenBit), Some(Ret::Full), Some("user@example.com")));
    assert_eq!(p.reject_unknown(), Ok(()));
    assert_eq!(mail_from("MAIL FROM:<a@b.example> BODY=BINARYMIME").1.body, Some(Body::BinaryMime));
    assert_eq!(mail_from("MAIL FROM:<a@b.example> SIZE=18446744073709551615").1.size, Some(u64::MAX));
    // Postfix lets a later SIZE override an earlier one.
    assert_eq!(mail_from("MAIL FROM:<a@b.example> SIZE=1 SIZE=2").1.size, Some(2));
}

#[test]
fn rcpt_parameters() {
    let (_, p) = rcpt_to("RCPT TO:<a@b.example> NOTIFY=SUCCESS,delay ORCPT=rfc822;a+40b.example");
    assert_eq!(p.notify, Some(Notify { success: true, failure: false, delay: true }));
    assert_eq!(p.orcpt, Some(("rfc822".into(), "a@b.example".into())));
    let (_, p) = rcpt_to("RCPT TO:<a@b.example> notify=never");
    assert!(p.notify.unwrap().is_never());
    let (_, p) = rcpt_to("RCPT TO:<a@b.example> NOTIFY=FAILURE,FAILURE ORCPT=utf-8;j\\x{F6}ran@x.example X-FOO");
    assert_eq!(p.notify, Some(Notify { failure: true, ..Notify::NEVER }));
    assert_eq!(p.orcpt, Some(("utf-8".into(), "j\\x{F6}ran@x.example".into())));
    assert_eq!(p.unknown, vec![("X-FOO".into(), None)]);
    // Postfix's DSN_NOTIFY bits, as the queue file keeps them.
    assert_eq!(Notify::NEVER.bits(), 1);
    assert_eq!(Notify { success: true, failure: true, delay: true }.bits(), 14);
    for bits in 0..=255u8 {
        match Notify::from_bits(bits) {
            Some(n) => assert_eq!(n.bits(), bits),
            None => assert!(bits == 0 || bits > 15 || (bits & 1 == 1 && bits != 1)),
        }
    }
    assert_eq!(
        String::from_utf8(p.reject_unknown().unwrap_err().reply().to_bytes()).unwrap(),
        "555 5.5.4 Unsupported option: X-FOO\r\n"
    );
}

#[test]
fn other_commands() {
    let ok: &[(&str, Command)] = &[
        ("EHLO client.example.org", Command::Ehlo("client.example.org".into())),
        ("ehlo [192.0.2.1]", Command::Ehlo("[192.0.2.1]".into())),
        ("HELO  my   host ", Command::Helo("my host".into())),
        ("LHLO lmtp.example", Command::Lhlo("lmtp.example".into())),
        ("DATA", Command::Data),
        ("data", Command::Data),
        ("RSET", Command::Rset),
        ("NOOP", Command::Noop),
        ("NOOP anything at all", Command::Noop),
        ("QUIT", Command::Quit),
        ("QUIT now", Command::Quit),
        ("HELP", Command::Help(None)),
        ("HELP mail", Command::Help(Some("mail".into()))),
        ("VRFY root", Command::Vrfy("root".into())),
        ("VRFY <John Doe> x", Command::Vrfy("<John Doe> x".into())),
        ("EXPN staff", Command::Expn("staff".into())),
        ("STARTTLS", Command::StartTls),
        ("starttls", Command::StartTls),
        ("AUTH PLAIN", Command::Auth { mechanism: "PLAIN".into(), initial: None }),
        (
            "auth plain dGVzdAB0ZXN0AHRlc3Q=",
            Command::Auth { mechanism: "PLAIN".into(), initial: Some("dGVzdAB0ZXN0AHRlc3Q=".into()) },
        ),
        ("AUTH EXTERNAL =", Command::Auth { mechanism: "EXTERNAL".into(), initial: Some("=".into()) }),
        ("ETRN @example.com", Command::Etrn("@example.com".into())),
        ("BDAT 1000", Command::Bdat { size: 1000, last: false }),
        ("BDAT 0 LAST", Command::Bdat { size: 0, last: true }),
        ("bdat 42 last", Command::Bdat { size: 42, last: true }),
        ("XCLIENT NAME=x", Command::Unknown("XCLIENT".into())),
        ("GET / HTTP/1.0", Command::Unknown("GET".into())),
        ("Subject: hello", Command::Unknown("Subject:".into())),
    ];
    for (line, want) in ok {
        assert_eq!(parse(line).as_ref(), Ok(want), "{line}");
        assert_eq!(parse(line).unwrap().verb(), want.verb());
    }
    assert_eq!(parse("RCPT TO:<a@b.example>").unwrap().verb(), "RCPT");
}

#[test]
fn error_replies_match_postfix() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "500 5.5.2 Error: bad syntax"),
        (b"   \t ", "500 5.5.2 Error: bad syntax"),
        (b"NOOP\0", "500 5.5.2 Error: bad syntax"),
        (b"MAIL FROM:<a@b>\x1b", "500 5.5.2 Error: bad syntax"),
        (b"RSET\x7f", "500 5.5.2 Error: bad syntax"),
        (b"MAIL FROM:<\xff@b.example>", "500 5.5.2 Error: bad UTF-8 syntax"),
        (b"MAIL", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"MAIL TO:<a@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"MAIL FROM :<a@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"MAIL FROMX:<a@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"RCPT <a@b.example>", "501 5.5.4 Syntax: RCPT TO:<address>"),
        (b"RCPT FROM:<a@b.example>", "501 5.5.4 Syntax: RCPT TO:<address>"),
        (b"MAIL FROM:<a@b.example", "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:a@b.example>", "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a b@c.example>", "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a@@b.example>", "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a@>", "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<@b.example>", "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<a@b.example>SIZE=1", "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<<a@b.example>>", "501 5.1.7 Bad sender address syntax"),
        (b"MAIL FROM:<\"unclosed@b.example>", "501 5.1.7 Bad sender address syntax"),
        (b"RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@b..example>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@.b.example>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@-b.example>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@b.example->", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@1.2.3.4>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@[300.1.1.1]>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@[IPv6:zz::1]>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@[1.2.3.4>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a@[tag:stuff]>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<a(comment)@b.example>", "501 5.1.3 Bad recipient address syntax"),
        (b"RCPT TO:<\"a\"x@b.example>", "501 5.1.3 Bad recipient address syntax"),
        (b"MAIL FROM:<a@b.example> SIZE=abc", "501 5.5.4 Bad message size syntax"),
        (b"MAIL FROM:<a@b.example> SIZE=", "501 5.5.4 Bad message size syntax"),
        (b"MAIL FROM:<a@b.example> SIZE=-1", "501 5.5.4 Bad message size syntax"),
        (
            b"MAIL FROM:<a@b.example> SIZE=18446744073709551616",
            "552 5.3.4 Message size exceeds file system imposed limit",
        ),
        (b"MAIL FROM:<a@b.example> BODY=FOO", "555 5.5.4 Unsupported option: BODY=FOO"),
        (b"MAIL FROM:<a@b.example> RET=BOTH", "501 5.5.4 Bad RET parameter syntax"),
        (b"MAIL FROM:<a@b.example> RET=FULL RET=HDRS", "501 5.5.4 Bad RET parameter syntax"),
        (b"MAIL FROM:<a@b.example> ENVID=a+ZZ", "501 5.5.4 Bad ENVID parameter syntax"),
        (b"MAIL FROM:<a@b.example> ENVID=a+0", "501 5.5.4 Bad ENVID parameter syntax"),
        (b"MAIL FROM:<a@b.example> ENVID=a+00b", "501 5.5.4 Bad ENVID parameter syntax"),
        (b"MAIL FROM:<a@b.example> ENVID=x ENVID=y", "501 5.5.4 Bad ENVID parameter syntax"),
        (b"MAIL FROM:<a@b.example> AUTH=<> AUTH=<>", "503 5.5.4 Error: multiple AUTH= options"),
        (b"MAIL FROM:<a@b.example> AUTH=+0D+0A", "501 5.5.4 Bad AUTH parameter syntax"),
        (b"RCPT TO:<a@b.example> NOTIFY=NEVER,SUCCESS", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
        (b"RCPT TO:<a@b.example> NOTIFY=", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
        (b"RCPT TO:<a@b.example> NOTIFY=SOMETIMES", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
        (b"RCPT TO:<a@b.example> NOTIFY=DELAY NOTIFY=DELAY", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
        (b"RCPT TO:<a@b.example> ORCPT=rfc822", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
        (b"RCPT TO:<a@b.example> ORCPT=;a@b.example", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
        (b"RCPT TO:<a@b.example> ORCPT=rfc822;", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
        (b"RCPT TO:<a@b.example> ORCPT=rfc822;a+4", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
        (b"HELO", "501 Syntax: HELO hostname"),
        (b"EHLO", "501 Syntax: EHLO hostname"),
        (b"ehlo   ", "501 Syntax: EHLO hostname"),
        (b"LHLO", "501 Syntax: LHLO hostname"),
        (b"DATA now", "501 5.5.4 Syntax: DATA"),
        (b"RSET all", "501 5.5.4 Syntax: RSET"),
        (b"STARTTLS please", "501 5.5.4 Syntax: STARTTLS"),
        (b"VRFY", "501 5.5.4 Syntax: VRFY address"),
        (b"EXPN", "501 5.5.4 Syntax: EXPN mailing-list"),
        (b"AUTH", "501 5.5.4 Syntax: AUTH mechanism"),
        (b"AUTH PLAIN a b", "501 5.5.4 Syntax: AUTH mechanism"),
        (b"ETRN", "500 Syntax: ETRN domain"),
        (b"ETRN a b", "500 Syntax: ETRN domain"),
        (b"BDAT", "521 5.5.4 Syntax: BDAT count [LAST]"),
        (b"BDAT x", "521 5.5.4 Syntax: BDAT count [LAST]"),
        (b"BDAT -1", "521 5.5.4 Syntax: BDAT count [LAST]"),
        (b"BDAT 10 FIRST", "521 5.5.4 Syntax: BDAT count [LAST]"),
        (b"BDAT 10 LAST x", "521 5.5.4 Syntax: BDAT count [LAST]"),
        (b"BDAT 99999999999999999999999", "521 5.5.4 Syntax: BDAT count [LAST]"),
    ];
    for (line, want) in cases {
        assert_eq!(reply(line), format!("{want}\r\n"), "{:?}", String::from_utf8_lossy(line));
    }
    assert!(parse("BDAT x").unwrap_err().is_fatal());
    assert!(!parse("DATA x").unwrap_err().is_fatal());
    assert_eq!(
        String::from_utf8(CommandError::Unrecognized("FOO".into()).reply().to_bytes()).unwrap(),
        "502 5.5.2 Error: command not recognized\r\n"
    );
    assert_eq!(parse("RCPT TO:<>"), Err(CommandError::BadRecipient(AddressError::Empty)));
    assert_eq!(parse("MAIL FROM:<a@b.example"), Err(CommandError::BadSender(AddressError::Unbalanced)));
}

#[test]
fn path_and_address_helpers() {
    assert_eq!(parse_path("<>"), Ok(None));
    assert_eq!(parse_path("< >"), Ok(None));
    assert_eq!(parse_path("<a@b.example>"), Ok(Some(addr("a", "b.example", "a@b.example"))));
    assert_eq!(parse_path("a@b.example"), Ok(Some(addr("a", "b.example", "a@b.example"))));
    assert_eq!(parse_path("<a@b.example"), Err(AddressError::Unbalanced));
    assert_eq!(Address::parse("x@y.example"), Ok(addr("x", "y.example", "x@y.example")));
    assert_eq!(Address::parse("x@y@z.example"), Err(AddressError::BadDomain));
    assert_eq!(Address::parse("\"x\"y"), Err(AddressError::Junk));
    assert_eq!(Address::parse(&format!("a@{}.example", "l".repeat(64))), Err(AddressError::BadDomain));
    assert!(Address::parse(&format!("a@{}.example", "l".repeat(63))).is_ok());
}

#[test]
fn xtext() {
    assert_eq!(xtext_decode("abc"), Some("abc".into()));
    assert_eq!(xtext_decode("a+2Bb+3dc"), Some("a+b=c".into()));
    assert_eq!(xtext_decode("+C3+A9"), Some("é".into()));
    assert_eq!(xtext_decode("+FF"), None);
    assert_eq!(xtext_decode("+0A"), None);
    assert_eq!(xtext_decode("+"), None);
    for s in ["plain", "a+b=c d", "é\"x\\", ""] {
        let enc = xtext_encode(s);
        assert!(enc.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'='));
        assert_eq!(xtext_decode(&enc).as_deref(), Some(s));
    }
    assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
}

/// parse_command never panics, whatever bytes: every prefix of a set of nasty lines, and
/// each byte value in each position of a template.
#[test]
fn no_panics_on_odd_lines() {
    let lines: &[&[u8]] = &[
        b"MAIL FROM:<\"a\\\xc3\xa9\"@b> SIZE=1",
        b"RCPT TO:<@[IPv6:\xc3\xa9:1]:x@y>",
        b"MAIL FROM:\\\xc3\xa9<\"<\">\"",
        b"RCPT TO:<\"\\",
        b"HELO \"<<<<<<\"\"\"\\",
        b"MAIL FROM:<a@b.example> ENVID=+\xc3\xa9 AUTH=+",
    ];
    for line in lines {
        for end in 0..=line.len() {
            let _ = parse_command(&line[..end]);
        }
    }
    let template = b"MAIL FROM:<a\"b@c> X=+4";
    for pos in 0..template.len() {
        for b in 0..=255u8 {
            let mut l = template.to_vec();
            l[pos] = b;
            let _ = parse_command(&l);
            l.insert(pos, 0xc3);
            let _ = parse_command(&l);
        }
    }
}

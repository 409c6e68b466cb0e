use crate::*;

fn one(input: &[u8]) -> Vec<Event> {
    let mut r = Reader::new(Limits::default());
    r.feed(input);
    let mut v = Vec::new();
    while let Some(e) = r.next() {
        v.push(e);
    }
    v
}

fn cmd(input: &str) -> CommandBody {
    match one(input.as_bytes()).as_slice() {
        [Event::Command(c)] => c.body.clone(),
        [Event::Continue, Event::Command(c)] => c.body.clone(),
        other => panic!("{input:?}: {other:?}"),
    }
}

fn bad(input: &str) -> String {
    match one(input.as_bytes()).as_slice() {
        [Event::Bad { message, .. }] => message.clone(),
        other => panic!("{input:?} should be BAD: {other:?}"),
    }
}

#[test]
fn simple_commands() {
    assert_eq!(cmd("a CAPABILITY\r\n"), CommandBody::Capability);
    assert_eq!(cmd("a noop\n"), CommandBody::Noop);
    assert_eq!(
        cmd("a LOGIN alice \"se\\\"cret\"\r\n"),
        CommandBody::Login { user: b"alice".to_vec(), password: b"se\"cret".to_vec() }
    );
    assert_eq!(cmd("a select inbox\r\n"), CommandBody::Select { mailbox: "INBOX".into() });
    assert_eq!(cmd("a SELECT \"Entwürfe\"\r\n"), CommandBody::Select { mailbox: "Entw&APw-rfe".into() });
    assert_eq!(cmd("a LIST \"\" *\r\n"), CommandBody::List { reference: "".into(), pattern: "*".into() });
    assert_eq!(cmd("a LIST \"\" %/x\r\n"), CommandBody::List { reference: "".into(), pattern: "%/x".into() });
    assert_eq!(
        cmd("a STATUS Sent (MESSAGES UIDNEXT)\r\n"),
        CommandBody::Status { mailbox: "Sent".into(), items: vec![StatusItem::Messages, StatusItem::UidNext] }
    );
    assert_eq!(
        cmd("a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        CommandBody::Authenticate { mechanism: "PLAIN".into(), initial: Some("AGFsaWNlAHNlY3JldA==".into()) }
    );
    assert_eq!(cmd("a authenticate login\r\n"), CommandBody::Authenticate { mechanism: "LOGIN".into(), initial: None });
    assert_eq!(
        cmd("a UID EXPUNGE 1:3\r\n"),
        CommandBody::UidExpunge(SeqSet(vec![(SeqNum::Value(1), SeqNum::Value(3))]))
    );
    assert_eq!(
        cmd("a ID (\"name\" \"mutt\" \"version\" NIL)\r\n"),
        CommandBody::Id(Some(vec![("name".into(), Some("mutt".into())), ("version".into(), None)]))
    );
    assert_eq!(cmd("a ID NIL\r\n"), CommandBody::Id(None));
    assert_eq!(cmd("a ENABLE UTF8=ACCEPT\r\n"), CommandBody::Enable(vec!["UTF8=ACCEPT".into()]));
    assert_eq!(
        cmd("a UID MOVE 4:* Trash\r\n"),
        CommandBody::Move { uid: true, set: SeqSet(vec![(SeqNum::Value(4), SeqNum::Star)]), mailbox: "Trash".into() }
    );
}

#[test]
fn fetch_attributes() {
    let CommandBody::Fetch { uid, set, attrs } =
        cmd("a UID FETCH 1:*,7 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS (From \"To\")]<0.100> BODY[] RFC822.SIZE)\r\n")
    else {
        panic!()
    };
    assert!(uid);
    assert_eq!(set.0, vec![(SeqNum::Value(1), SeqNum::Star), (SeqNum::Value(7), SeqNum::Value(7))]);
    assert_eq!(
        attrs,
        vec![
            FetchAttr::Flags,
            FetchAttr::BodySection {
                peek: true,
                section: Section {
                    part: vec![1, 2],
                    text: Some(SectionText::HeaderFields(vec!["From".into(), "To".into()]))
                },
                partial: Some((0, 100))
            },
            FetchAttr::BodySection { peek: false, section: Section::default(), partial: None },
            FetchAttr::Rfc822Size,
        ]
    );
    let CommandBody::Fetch { attrs, .. } = cmd("a FETCH 1 ALL\r\n") else { panic!() };
    assert_eq!(attrs.len(), 4);
    let CommandBody::Fetch { attrs, .. } = cmd("a FETCH 1 body[2.MIME]\r\n") else { panic!() };
    assert_eq!(
        attrs,
        vec![FetchAttr::BodySection {
            peek: false,
            section: Section { part: vec![2], text: Some(SectionText::Mime) },
            partial: None
        }]
    );
    bad("a FETCH 1 BODY[MIME]\r\n");
    bad("a FETCH 0 FLAGS\r\n");
    bad("a FETCH 1 BOGUS\r\n");
}

#[test]
fn store_and_search() {
    assert_eq!(
        cmd("a STORE 2 +FLAGS.SILENT (\\seen $Junk)\r\n"),
        CommandBody::Store {
            uid: false,
            set: SeqSet(vec![(SeqNum::Value(2), SeqNum::Value(2))]),
            mode: StoreMode::Add,
            silent: true,
            flags: vec!["\\Seen".into(), "$Junk".into()]
        }
    );
    let CommandBody::Search { charset, key, .. } =
        cmd("a SEARCH CHARSET UTF-8 OR FROM alice (NOT SEEN SINCE 1-Feb-2024) UID 1:5 HEADER X-Y \"z\"\r\n")
    else {
        panic!()
    };
    assert_eq!(charset.as_deref(), Some("UTF-8"));
    use SearchKey as K;
    assert_eq!(
        key,
        K::And(vec![
            K::Or(
                Box::new(K::From("alice".into())),
                Box::new(K::And(vec![K::Not(Box::new(K::Seen)), K::Since(Date { year: 2024, month: 2, day: 1 })]))
            ),
            K::Uid(SeqSet(vec![(SeqNum::Value(1), SeqNum::Value(5))])),
            K::Header("X-Y".into(), "z".into()),
        ])
    );
    let CommandBody::Search { key, .. } = cmd("a SEARCH SUBJECT {4}\r\nsmth\r\n") else { panic!() };
    assert_eq!(key, K::Subject("smth".into()));
    bad("a SEARCH BEFORE 31-Foo-2020\r\n");
    bad("a SEARCH\r\n");
}

#[test]
fn append_with_literals() {
    let ev = one(b"a APPEND Drafts (\\Draft) \"05-Jan-2024 10:00:00 +0100\" {10}\r\nhello\r\nyou\r\n");
    assert_eq!(ev[0], Event::Continue);
    let Event::Command(c) = &ev[1] else { panic!("{ev:?}") };
    let CommandBody::Append { mailbox, flags, date, message } = &c.body else { panic!() };
    assert_eq!(mailbox, "Drafts");
    assert_eq!(flags, &vec!["\\Draft".to_string()]);
    assert_eq!(date.unwrap().unix, 1704445200);
    assert_eq!(message, b"hello\r\nyou");
    // LITERAL+: no continuation.
    let ev = one(b"a APPEND INBOX {3+}\r\nabc\r\nb NOOP\r\n");
    assert!(matches!(&ev[0], Event::Command(Command { body: CommandBody::Append { .. }, .. })), "{ev:?}");
    assert!(matches!(&ev[1], Event::Command(Command { body: CommandBody::Noop, .. })));
}

#[test]
fn every_split_gives_the_same_events() {
    let script: &[u8] = b"a1 LOGIN {5}\r\nalice {6+}\r\nsecret\r\na2 SELECT \"INBOX\"\r\n\
a3 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\na4 APPEND x {3}\r\nabc\r\n\
a5 SEARCH OR (SEEN) NOT DELETED\r\nbad line\r\na6 STORE 1 -FLAGS (\\Seen)\r\n";
    let whole = one(script);
    assert_eq!(whole.len(), 9, "{whole:?}");
    for split in 0..=script.len() {
        let mut r = Reader::new(Limits::default());
        let mut got = Vec::new();
        r.feed(&script[..split]);
        while let Some(e) = r.next() {
            got.push(e);
        }
        r.feed(&script[split..]);
        while let Some(e) = r.next() {
            got.push(e);
        }
        assert_eq!(got, whole, "split at {split}");
    }
    // One byte at a time.
    let mut r = Reader::new(Limits::default());
    let mut got = Vec::new();
    for b in script {
        r.feed(std::slice::from_ref(b));
        while let Some(e) = r.next() {
            got.push(e);
        }
    }
    assert_eq!(got, whole);
}

#[test]
fn hostile_input() {
    // 2 GiB literal announcements: refused without reading or allocating.
    let ev = one(b"a APPEND INBOX {2147483648}\r\n");
    assert_eq!(ev, vec![Event::TooBig { tag: Some("a".into()), size: 2147483648 }]);
    let ev = one(b"a LOGIN {2147483648}\r\n");
    assert!(matches!(&ev[0], Event::TooBig { .. }));
    let ev = one(b"a APPEND INBOX {99999999999999999999999}\r\n");
    assert!(matches!(&ev[0], Event::TooBig { .. }));
    let ev = one(b"a APPEND INBOX {2147483648+}\r\nxxxx");
    assert!(matches!(&ev[0], Event::Fatal(_)), "{ev:?}");
    // Unterminated literal: nothing comes out, the reader waits.
    assert!(one(b"a LOGIN {50}\r\nabc").len() == 1);
    // Over-long lines: BAD with the tag, the next command is fine.
    let mut long = b"t1 NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 100_000));
    long.extend_from_slice(b"\r\nt2 NOOP\r\n");
    let ev = one(&long);
    assert_eq!(ev[0], Event::Bad { tag: Some("t1".into()), message: "Command line too long".into() });
    assert!(matches!(&ev[1], Event::Command(Command { body: CommandBody::Noop, .. })));
    // Deep nesting.
    let deep = format!("a SEARCH {}ALL{}\r\n", "(".repeat(1000), ")".repeat(1000));
    assert!(bad(&deep).contains("deep"));
    let nots = format!("a SEARCH {}ALL\r\n", "NOT ".repeat(1000));
    assert!(bad(&nots).contains("deep"));
    // 100k-item sets.
    let set: Vec<String> = (1..=20_000).map(|i| (i * 2).to_string()).collect();
    let line = format!("a FETCH {} FLAGS\r\n", set.join(","));
    let mut r = Reader::new(Limits { max_line: 1 << 20, ..Limits::default() });
    r.feed(line.as_bytes());
    assert!(matches!(r.next(), Some(Event::Bad { .. })));
    let set: Vec<String> = (1..=100_000).map(|i| i.to_string()).collect();
    let line = format!("a FETCH {} FLAGS\r\n", set.join(","));
    assert!(bad(&line).contains("too long"));
    // Garbage.
    assert!(matches!(one(b"\r\n").as_slice(), [Event::Bad { tag: None, .. }]));
    assert!(matches!(one(b"+ x\r\n").as_slice(), [Event::Bad { tag: None, .. }]));
    bad("a LOGIN \"unterminated\r\n");
    bad("a SELECT\r\n");
    bad("a FOO\r\n");
    bad("a NOOP extra\r\n");
}

#[test]
fn raw_lines_for_idle_and_sasl() {
    let mut r = Reader::new(Limits::default());
    r.feed(b"DO");
    assert_eq!(r.take_line(), None);
    r.feed(b"NE\r\na NOOP\r\n");
    assert_eq!(r.take_line(), Some(Ok(b"DONE".to_vec())));
    assert!(matches!(r.next(), Some(Event::Command(_))));
}

#[test]
fn dates() {
    assert_eq!(parse::parse_date("1-Feb-1994"), Some(Date { year: 1994, month: 2, day: 1 }));
    assert_eq!(Date { year: 1970, month: 1, day: 2 }.days(), 1);
    assert_eq!(civil_from_days(19723), (2024, 1, 1));
    assert_eq!(parse::parse_date_time("17-Jul-1996 02:44:25 -0700").unwrap().unix, 837596665);
    assert!(parse::parse_date_time("17-Jul-1996 25:44:25 -0700").is_none());
}

#[test]
fn literal_minus_limits_non_synchronizing_literals() {
    let mut r = Reader::new(Limits { literal_minus: true, ..Limits::default() });
    r.feed(b"a APPEND INBOX {4096+}\r\n");
    r.feed(&[b'x'; 4096]);
    r.feed(b"\r\n");
    assert!(matches!(r.next(), Some(Event::Command(_))));
    r.feed(b"b APPEND INBOX {4097+}\r\n");
    assert!(matches!(r.next(), Some(Event::Fatal(_))));
    // Synchronizing literals are not limited by LITERAL-.
    let mut r = Reader::new(Limits { literal_minus: true, ..Limits::default() });
    r.feed(b"c APPEND INBOX {5000}\r\n");
    assert_eq!(r.next(), Some(Event::Continue));
}

#[test]
fn take_input_moves_pipelined_bytes_and_compact_keeps_small_buffers_only() {
    let mut r = Reader::new(Limits { max_line: 65536, max_append: 1 << 20, literal_minus: false });
    r.feed(b"a LOGIN u p\r\nb SELECT INBOX\r\nc NO");
    assert!(matches!(r.next(), Some(Event::Command(_))));
    assert_eq!(r.take_input(), b"b SELECT INBOX\r\nc NO");
    assert!(r.next().is_none());
    // A long command grows the buffers; once it is consumed they are given back.
    let long = format!("d NOOP {}\r\n", "x".repeat(8000));
    r.feed(long.as_bytes());
    assert!(r.next().is_some());
    assert!(r.buffer_capacity() > 1024);
    r.compact();
    assert_eq!(r.buffer_capacity(), 0);
    // An ordinary line's buffer stays for the next command.
    r.feed(b"e NOOP\r\n");
    assert!(r.next().is_some());
    let cap = r.buffer_capacity();
    assert!(cap > 0);
    r.compact();
    assert_eq!(r.buffer_capacity(), cap);
}

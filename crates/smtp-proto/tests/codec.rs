//! ServerCodec: whole sessions split at every byte, SMTP smuggling, limits, random input.

use rpost_smtp_proto::{Command, CommandError, Event, Limits, LineError, ServerCodec};

/// A minimal server loop: switches the codec to DATA/BDAT mode on the commands that ask for
/// it, as a session does after its 354 / after reading BDAT. Returns the events with
/// consecutive Data (and Chunk) pieces merged, so any split of the input compares equal.
struct Server {
    codec: ServerCodec,
    events: Vec<Event>,
    max_buffered: usize,
}

impl Server {
    fn new(limits: Limits) -> Self {
        Server { codec: ServerCodec::new(limits), events: Vec::new(), max_buffered: 0 }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.codec.feed(bytes);
        while let Some(ev) = self.codec.next_event() {
            match &ev {
                Event::Command(Ok(Command::Data)) => self.codec.start_data(),
                Event::Command(Ok(Command::Bdat { size, last })) => self.codec.start_bdat(*size, *last),
                _ => {}
            }
            push_merged(&mut self.events, ev);
        }
        self.max_buffered = self.max_buffered.max(self.codec.buffered());
    }
}

fn push_merged(events: &mut Vec<Event>, ev: Event) {
    match (events.last_mut(), ev) {
        (Some(Event::Data(prev)), Event::Data(more)) => prev.extend_from_slice(&more),
        (Some(Event::Chunk(prev)), Event::Chunk(more)) => prev.extend_from_slice(&more),
        (_, ev) => events.push(ev),
    }
}

fn run_pieces(limits: Limits, pieces: &[&[u8]]) -> Vec<Event> {
    let mut s = Server::new(limits);
    for p in pieces {
        s.feed(p);
    }
    s.events
}

fn run(input: &[u8]) -> Vec<Event> {
    run_pieces(Limits::default(), &[input])
}

/// Feeds `input` whole, split at every position, split at every pair of positions (short
/// inputs) and one byte at a time; all must give the same events.
fn assert_split_invariant(limits: Limits, input: &[u8]) -> Vec<Event> {
    let whole = run_pieces(limits, &[input]);
    for cut in 0..=input.len() {
        let got = run_pieces(limits, &[&input[..cut], &input[cut..]]);
        assert_eq!(got, whole, "split at {cut} of {:?}", String::from_utf8_lossy(input));
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_pieces(limits, &bytes), whole, "byte at a time");
    if input.len() <= 160 {
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let got = run_pieces(limits, &[&input[..a], &input[a..b], &input[b..]]);
                assert_eq!(got, whole, "splits at {a},{b}");
            }
        }
    }
    whole
}

fn cmd(line: &str) -> Event {
    Event::Command(rpost_smtp_proto::parse_command(line.as_bytes()))
}

fn data(s: &str) -> Event {
    Event::Data(s.as_bytes().to_vec())
}

const SESSION: &str = "EHLO client.example.org\r\n\
    MAIL FROM:<alice@example.org> SIZE=123 BODY=8BITMIME\r\n\
    RCPT TO:<bob@example.com>\r\n\
    RCPT TO:<carol@example.com> NOTIFY=SUCCESS,FAILURE\r\n\
    DATA\r\n\
    Subject: hi\r\n\
    \r\n\
    ..leading dot\r\n\
    ..\r\n\
    .x\r\n\
    . \r\n\
    last line\r\n\
    .\r\n\
    MAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nQUIT\r\n";

#[test]
fn full_session_any_split() {
    let events = assert_split_invariant(Limits::default(), SESSION.as_bytes());
    assert_eq!(
        events,
        vec![
            cmd("EHLO client.example.org"),
            cmd("MAIL FROM:<alice@example.org> SIZE=123 BODY=8BITMIME"),
            cmd("RCPT TO:<bob@example.com>"),
            cmd("RCPT TO:<carol@example.com> NOTIFY=SUCCESS,FAILURE"),
            cmd("DATA"),
            data("Subject: hi\r\n\r\n.leading dot\r\n.\r\nx\r\n \r\nlast line\r\n"),
            Event::DataEnd,
            cmd("MAIL FROM:<>"),
            cmd("RCPT TO:<postmaster>"),
            cmd("QUIT"),
        ]
    );
    assert!(matches!(&events[0], Event::Command(Ok(Command::Ehlo(h))) if h == "client.example.org"));
}

#[test]
fn small_data_line_limit_splits_events_but_not_content() {
    let limits = Limits { max_data_line: 0, ..Limits::default() };
    let input = format!("DATA\r\n{}\r\n.\r\n", "y".repeat(1000));
    let mut codec = ServerCodec::new(limits);
    codec.feed(input.as_bytes());
    assert_eq!(codec.next_event(), Some(cmd("DATA")));
    codec.start_data();
    let mut total = 0;
    let mut pieces = 0;
    loop {
        match codec.next_event() {
            Some(Event::Data(d)) => {
                assert!(d.len() <= 64 + 2);
                total += d.len();
                pieces += 1;
            }
            Some(Event::DataEnd) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(total, 1002);
    assert!(pieces >= 15);
    assert_eq!(codec.next_event(), None);
}

#[test]
fn empty_message_right_after_354() {
    let events = assert_split_invariant(Limits::default(), b"DATA\r\n.\r\nQUIT\r\n");
    assert_eq!(events, vec![cmd("DATA"), Event::DataEnd, cmd("QUIT")]);
    // A message that is just a stuffed dot line.
    let events = assert_split_invariant(Limits::default(), b"DATA\r\n..\r\n.\r\n");
    assert_eq!(events, vec![cmd("DATA"), data(".\r\n"), Event::DataEnd]);
}

#[test]
fn bdat_session_any_split() {
    let chunk1: &[u8] = b"hello\r\n.\r\nQUIT\r\n";
    let chunk2: &[u8] = b"\r\n.\r\n";
    let mut input = b"EHLO x\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n".to_vec();
    input.extend_from_slice(format!("BDAT {}\r\n", chunk1.len()).as_bytes());
    input.extend_from_slice(chunk1);
    input.extend_from_slice(b"BDAT 0\r\n");
    input.extend_from_slice(format!("BDAT {} LAST\r\n", chunk2.len()).as_bytes());
    input.extend_from_slice(chunk2);
    input.extend_from_slice(b"QUIT\r\n");
    let events = assert_split_invariant(Limits::default(), &input);
    assert_eq!(
        events,
        vec![
            cmd("EHLO x"),
            cmd("MAIL FROM:<a@b.example> BODY=BINARYMIME"),
            cmd("RCPT TO:<c@d.example>"),
            cmd("BDAT 16"),
            Event::Chunk(chunk1.to_vec()),
            Event::ChunkEnd { last: false },
            cmd("BDAT 0"),
            Event::ChunkEnd { last: false },
            cmd("BDAT 5 LAST"),
            Event::Chunk(chunk2.to_vec()),
            Event::ChunkEnd { last: true },
            cmd("QUIT"),
        ]
    );
}

#[test]
fn bdat_chunk_is_binary_and_bounded_per_event() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let mut codec = ServerCodec::new(Limits { max_data_line: 1000, ..Limits::default() });
    codec.start_bdat(payload.len() as u64, true);
    codec.feed(&payload);
    codec.feed(b"NOOP\r\n");
    let mut got = Vec::new();
    loop {
        match codec.next_event() {
            Some(Event::Chunk(c)) => {
                assert!(c.len() <= 1000);
                got.extend_from_slice(&c);
            }
            Some(Event::ChunkEnd { last: true }) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, payload);
    assert_eq!(codec.next_event(), Some(cmd("NOOP")));
}

/// Every way to fake an end of data with bare CR or LF. Each must be reported and must not
/// end DATA: the "MAIL FROM:<smuggled@...>" after it stays message content.
#[test]
fn smuggling_variants_never_end_data() {
    let fakes: &[&str] = &[
        "\n.\n",
        "\r\n.\n",
        "\n.\r\n",
        "\r.\r",
        "\r\n.\r",
        "\r.\r\n",
        "\n.\r",
        "\r.\n",
        "\r\n.\rx",
        "\n..\n",
        "\r\n.\n\r\n",
        "\n\r\n.\n",
        "\r\r\n.\n",
        "\n",
        "\r",
        "\r\n.\r\r\n",
    ];
    for fake in fakes {
        for prefix in ["", "line one"] {
            let body = format!("{prefix}{fake}MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@example.com>\r\n");
            let input = format!("DATA\r\n{body}\r\n.\r\nQUIT\r\n");
            let events = assert_split_invariant(Limits::default(), input.as_bytes());
            let bare = events.iter().filter(|e| **e == Event::DataBareLineEnding).count();
            assert_eq!(bare, 1, "{fake:?}: {events:?}");
            let ends: Vec<usize> =
                events.iter().enumerate().filter(|(_, e)| **e == Event::DataEnd).map(|(i, _)| i).collect();
            assert_eq!(ends.len(), 1, "{fake:?}: {events:?}");
            assert_eq!(events.last(), Some(&cmd("QUIT")), "{fake:?}");
            assert_eq!(events[ends[0] + 1], cmd("QUIT"), "{fake:?}");
            assert!(
                !events.iter().any(|e| matches!(e, Event::Command(Ok(Command::Mail { .. } | Command::Rcpt { .. })))),
                "{fake:?} smuggled a command: {events:?}"
            );
            // The content delivered is CRLF-normalized and keeps the smuggled text as text.
            let content: Vec<u8> = events
                .iter()
                .filter_map(|e| if let Event::Data(d) = e { Some(d.clone()) } else { None })
                .flatten()
                .collect();
            assert_no_bare_line_endings(&content);
            let text = String::from_utf8(content).unwrap();
            assert!(text.contains("MAIL FROM:<smuggled@evil.example>\r\n"), "{fake:?}: {text:?}");
        }
    }
}

fn assert_no_bare_line_endings(d: &[u8]) {
    for (i, &b) in d.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(d.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
        if b == b'\n' {
            assert!(i > 0 && d[i - 1] == b'\r', "bare LF at {i}");
        }
    }
}

#[test]
fn bare_line_ending_reported_once_per_message() {
    let input = b"DATA\r\na\nb\nc\rd\r\n.\r\nDATA\r\nclean\r\n.\r\nDATA\r\nx\ny\r\n.\r\n";
    let events = assert_split_invariant(Limits::default(), input);
    assert_eq!(
        events,
        vec![
            cmd("DATA"),
            data("a\r\n"),
            Event::DataBareLineEnding,
            data("b\r\nc\r\nd\r\n"),
            Event::DataEnd,
            cmd("DATA"),
            data("clean\r\n"),
            Event::DataEnd,
            cmd("DATA"),
            data("x\r\n"),
            Event::DataBareLineEnding,
            data("y\r\n"),
            Event::DataEnd,
        ]
    );
}

#[test]
fn bare_line_endings_in_commands() {
    let events = assert_split_invariant(Limits::default(), b"EHLO x\nNOOP\r\nNO\rOP\r\nRSET\r\n\n\r\n");
    assert_eq!(
        events,
        vec![
            Event::BareLineEnding,
            cmd("NOOP"),
            Event::BareLineEnding,
            cmd("RSET"),
            Event::BareLineEnding,
            Event::Command(Err(CommandError::BadSyntax)),
        ]
    );
    // The bare-LF line is never a command, even a valid-looking DATA.
    let events = run(b"DATA\n.\nQUIT\r\n");
    assert_eq!(events, vec![Event::BareLineEnding, Event::BareLineEnding, cmd("QUIT")]);
}

#[test]
fn long_command_line_then_recovery() {
    let mut input = b"NOOP\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'A', 3000));
    input.extend_from_slice(b"\r\nMAIL FROM:<a@b.example>\r\n");
    let events = assert_split_invariant(Limits::default(), &input);
    assert_eq!(events, vec![cmd("NOOP"), Event::LineTooLong, cmd("MAIL FROM:<a@b.example>")]);
}

#[test]
fn line_limit_is_exact_and_counts_crlf() {
    let limits = Limits { max_line: 40, ..Limits::default() };
    let ok = format!("NOOP {}\r\n", "x".repeat(40 - 7));
    assert_eq!(ok.len(), 40);
    let events = assert_split_invariant(limits, ok.as_bytes());
    assert_eq!(events, vec![cmd(ok.trim_end())]);
    let long = format!("NOOP {}\r\nQUIT\r\n", "x".repeat(40 - 6));
    let events = assert_split_invariant(limits, long.as_bytes());
    assert_eq!(events, vec![Event::LineTooLong, cmd("QUIT")]);
    // A long bare-LF line is "too long" first, whatever the split.
    let long_bare = format!("{}\nQUIT\r\n", "x".repeat(50));
    assert_eq!(assert_split_invariant(limits, long_bare.as_bytes()), vec![Event::LineTooLong, cmd("QUIT")]);
}

#[test]
fn flood_without_line_end_is_bounded() {
    let mut s = Server::new(Limits::default());
    let junk = vec![b'A'; 64 * 1024];
    for _ in 0..32 {
        s.feed(&junk);
        assert!(s.codec.buffered() < 2048, "buffered {}", s.codec.buffered());
    }
    s.feed(b"\r\nQUIT\r\n");
    assert_eq!(s.events, vec![Event::LineTooLong, cmd("QUIT")]);
}

#[test]
fn ten_mib_data_line_is_streamed() {
    const LEN: usize = 10 << 20;
    let mut s = Server::new(Limits::default());
    s.feed(b"DATA\r\n");
    let piece = vec![b'z'; 64 * 1024];
    let mut total = 0;
    let mut largest = 0;
    let mut sent = 0;
    while sent < LEN {
        s.codec.feed(&piece);
        sent += piece.len();
        while let Some(ev) = s.codec.next_event() {
            match ev {
                Event::Data(d) => {
                    largest = largest.max(d.len());
                    total += d.len();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(s.codec.buffered(), 0, "DATA input must not be held back");
    }
    s.codec.feed(b"\r\n.\r\nQUIT\r\n");
    let mut tail = Vec::new();
    while let Some(ev) = s.codec.next_event() {
        tail.push(ev);
    }
    assert_eq!(tail, vec![data("\r\n"), Event::DataEnd, cmd("QUIT")]);
    assert_eq!(total, LEN);
    assert!(largest <= 64 * 1024, "largest piece {largest}");
}

#[test]
fn pipelining_is_visible() {
    let mut codec = ServerCodec::new(Limits::default());
    codec.feed(b"EHLO x\r\n");
    assert_eq!(codec.next_event(), Some(cmd("EHLO x")));
    assert_eq!(codec.buffered(), 0);
    codec.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n");
    assert_eq!(codec.next_event(), Some(cmd("MAIL FROM:<a@b.example>")));
    assert!(codec.buffered() > 0, "client sent more before our reply");
    assert_eq!(codec.next_event(), Some(cmd("RCPT TO:<c@d.example>")));
    assert_eq!(codec.next_event(), Some(cmd("DATA")));
    assert_eq!(codec.buffered(), 0);
    assert_eq!(codec.next_event(), None);
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut codec = ServerCodec::new(Limits::default());
    codec.feed(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\nRC");
    assert_eq!(codec.next_event(), Some(cmd("STARTTLS")));
    assert!(codec.buffered() > 0);
    assert_eq!(codec.take_buffered(), b"MAIL FROM:<injected@evil.example>\r\nRC");
    assert_eq!(codec.buffered(), 0);
    assert_eq!(codec.next_event(), None);
    codec.feed(b"EHLO x\r\n");
    assert_eq!(codec.next_event(), Some(cmd("EHLO x")));
}

#[test]
fn sasl_response_line() {
    let mut codec = ServerCodec::new(Limits::default());
    codec.feed(b"AUTH LOGIN\r\ndXNlcg");
    assert_eq!(codec.next_event(), Some(cmd("AUTH LOGIN")));
    assert_eq!(codec.next_line(12288), None);
    codec.feed(b"==\r\nNOOP\r\n");
    assert_eq!(codec.next_line(12288), Some(Ok(b"dXNlcg==".to_vec())));
    assert_eq!(codec.next_event(), Some(cmd("NOOP")));
    // A SASL response may exceed the command limit but not its own.
    let long = format!("{}\r\n", "Q".repeat(3000));
    codec.feed(long.as_bytes());
    assert!(matches!(codec.next_line(4000), Some(Ok(l)) if l.len() == 3000));
    codec.feed(long.as_bytes());
    codec.feed(b"*\r\n");
    assert_eq!(codec.next_line(100), Some(Err(LineError::TooLong)));
    assert_eq!(codec.next_line(100), Some(Ok(b"*".to_vec())));
    // Overlong before its LF arrives: skipped to the LF, whichever pull comes next.
    codec.feed(&[b'Q'; 200]);
    assert_eq!(codec.next_line(100), Some(Err(LineError::TooLong)));
    codec.feed(b"QQ\r\nRSET\r\n");
    assert_eq!(codec.next_event(), Some(cmd("RSET")));
    codec.feed(b"abc\n");
    assert_eq!(codec.next_line(100), Some(Err(LineError::BareLineEnding)));
    // Not in DATA mode.
    codec.start_data();
    codec.feed(b"x\r\n");
    assert_eq!(codec.next_line(100), None);
    assert_eq!(codec.next_event(), Some(data("x\r\n")));
}

#[test]
fn dot_stuffed_round_trip() {
    let bodies: &[&[u8]] = &[b"", b".", b"..\r\n.\r\n", b"a\nb\r\n.c\rd", b"\r\n\r\n.\r\n\r\n", b"end without newline"];
    for body in bodies {
        let mut input = b"DATA\r\n".to_vec();
        input.extend_from_slice(&rpost_smtp_proto::dot_stuff(body));
        input.extend_from_slice(b"QUIT\r\n");
        let events = assert_split_invariant(Limits::default(), &input);
        // Normalized like the stuffer does: every line ending CRLF, final CRLF added.
        let mut expect = String::from_utf8(body.to_vec()).unwrap().replace("\r\n", "\n").replace('\r', "\n");
        if !expect.is_empty() && !expect.ends_with('\n') {
            expect.push('\n');
        }
        let expect = expect.replace('\n', "\r\n");
        let mut want = vec![cmd("DATA")];
        if !expect.is_empty() {
            want.push(data(&expect));
        }
        want.extend([Event::DataEnd, cmd("QUIT")]);
        assert_eq!(events, want, "{:?}", String::from_utf8_lossy(body));
    }
}

/// xorshift64*: deterministic randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_input(rng: &mut Rng) -> Vec<u8> {
    const PIECES: &[&[u8]] = &[
        b"\r",
        b"\n",
        b"\r\n",
        b".",
        b"\r\n.\r\n",
        b"DATA\r\n",
        b"BDAT 7\r\n",
        b"BDAT 3 LAST\r\n",
        b"BDAT 0\r\n",
        b"MAIL FROM:<a@b.example> SIZE=10\r\n",
        b"RCPT TO:<\"x y\"@[1.2.3.4]>\r\n",
        b"EHLO h\r\n",
        b"\0",
        b"<",
        b"\"",
        b"\xff",
        b"\xc3\xa9",
        b" ",
        b"AUTH PLAIN =\r\n",
    ];
    let len = rng.below(600);
    let mut v = Vec::with_capacity(len + 32);
    while v.len() < len {
        match rng.below(4) {
            0 => v.push(rng.next() as u8),
            1 => v.extend(std::iter::repeat_n(b'x', rng.below(300))),
            _ => v.extend_from_slice(PIECES[rng.below(PIECES.len())]),
        }
    }
    v
}

#[test]
fn random_input_random_splits() {
    let limits = Limits { max_line: 100, max_data_line: 128 };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..1500 {
        let input = random_input(&mut rng);
        let whole = run_pieces(limits, &[&input]);
        for _ in 0..4 {
            let mut s = Server::new(limits);
            let mut rest = &input[..];
            let mut biggest_feed = 0;
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(64));
                biggest_feed = biggest_feed.max(n);
                s.feed(&rest[..n]);
                rest = &rest[n..];
            }
            assert_eq!(s.events, whole, "round {round}");
            // Only a partial command line is ever held back.
            assert!(s.max_buffered < limits.max_line, "round {round}: held {}", s.max_buffered);
        }
        for ev in &whole {
            if let Event::Data(d) = ev {
                assert_no_bare_line_endings(d);
            }
        }
    }
}

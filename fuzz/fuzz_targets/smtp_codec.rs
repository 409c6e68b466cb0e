//! ServerCodec under arbitrary input and arbitrary splits, driven like smtpd drives it.
//! Checks: no panic; the same events whatever the split; only a partial command line is
//! ever held back; DATA content never carries a bare CR or LF; dot_stuff round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpost_smtp_proto::{Command, Event, Limits, LineError, ServerCodec, dot_stuff};

const LIMITS: Limits = Limits { max_line: 64, max_data_line: 64 };
const SASL_MAX: usize = 100;

#[derive(Debug, PartialEq)]
enum Out {
    Ev(Event),
    Sasl(Result<Vec<u8>, LineError>),
}

struct Sim {
    codec: ServerCodec,
    sasl: bool,
    out: Vec<Out>,
}

impl Sim {
    fn new() -> Self {
        Sim { codec: ServerCodec::new(LIMITS), sasl: false, out: Vec::new() }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.codec.feed(bytes);
        loop {
            if self.sasl {
                // AUTH: the next line is a SASL response, not a command.
                let Some(r) = self.codec.next_line(SASL_MAX) else { break };
                self.sasl = false;
                self.out.push(Out::Sasl(r));
                continue;
            }
            let Some(ev) = self.codec.next_event() else { break };
            match &ev {
                Event::Command(Ok(Command::Data)) => self.codec.start_data(),
                Event::Command(Ok(Command::Bdat { size, last })) => self.codec.start_bdat(*size, *last),
                Event::Command(Ok(Command::Auth { .. })) => self.sasl = true,
                _ => {}
            }
            match (self.out.last_mut(), ev) {
                (Some(Out::Ev(Event::Data(a))), Event::Data(b)) => a.extend_from_slice(&b),
                (Some(Out::Ev(Event::Chunk(a))), Event::Chunk(b)) => a.extend_from_slice(&b),
                (_, ev) => self.out.push(Out::Ev(ev)),
            }
        }
        assert!(self.codec.buffered() < LIMITS.max_line.max(SASL_MAX), "held {}", self.codec.buffered());
    }
}

fn no_bare(d: &[u8]) -> bool {
    d.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => d.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && d[i - 1] == b'\r',
        _ => true,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };

    let mut whole = Sim::new();
    whole.feed(stream);

    let mut split = Sim::new();
    let mut state = u64::from(seed) | 0x9e37_79b9_0000_0000;
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = 1 + (state % 17) as usize;
        let n = n.min(rest.len());
        split.feed(&rest[..n]);
        rest = &rest[n..];
    }
    assert_eq!(whole.out, split.out);
    for o in &whole.out {
        if let Out::Ev(Event::Data(d)) = o {
            assert!(no_bare(d));
        }
    }

    // Client side: whatever dot_stuff makes, the server reads back as the normalized body.
    let mut codec = ServerCodec::new(LIMITS);
    codec.start_data();
    codec.feed(&dot_stuff(stream));
    let mut got = Vec::new();
    loop {
        match codec.next_event() {
            Some(Event::Data(d)) => got.extend_from_slice(&d),
            Some(Event::DataEnd) => break,
            other => panic!("dot_stuff output read back as {other:?}"),
        }
    }
    assert_eq!(codec.buffered(), 0);
    let mut want = Vec::with_capacity(stream.len() + 2);
    let mut i = 0;
    while i < stream.len() {
        match stream[i] {
            b'\r' if stream.get(i + 1) == Some(&b'\n') => {
                want.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => want.extend_from_slice(b"\r\n"),
            b => want.push(b),
        }
        i += 1;
    }
    if !want.is_empty() && !want.ends_with(b"\r\n") {
        want.extend_from_slice(b"\r\n");
    }
    assert_eq!(got, want);
});

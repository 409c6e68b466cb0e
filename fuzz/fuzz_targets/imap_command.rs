//! imapd reads commands from untrusted clients: arbitrary bytes in arbitrary splits must give
//! the same events, raw lines (IDLE, AUTHENTICATE) must not disturb framing, and nothing may
//! panic or allocate past the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpost_imap_proto::{Event, Limits, Reader};

fn run(chunks: &[&[u8]], literal_minus: bool) -> Vec<Event> {
    let mut r = Reader::new(Limits { max_line: 4096, max_append: 65536, literal_minus });
    let mut out = Vec::new();
    for c in chunks {
        r.feed(c);
        while let Some(e) = r.next() {
            let fatal = matches!(e, Event::Fatal(_));
            out.push(e);
            if fatal {
                return out;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|&b| b as usize % (data.len() + 1)).unwrap_or(0);
    let (a, b) = (&data[..split], &data[split..]);
    // Both literal modes: LITERAL+ (any size) and LITERAL- (small ones only).
    let literal_minus = data.len() % 2 == 0;
    assert_eq!(run(&[data], literal_minus), run(&[a, b], literal_minus));
    let _ = rpost_imap_proto::utf7::decode(&String::from_utf8_lossy(data));
});

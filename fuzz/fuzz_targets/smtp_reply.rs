//! The SMTP/LMTP client's reply parser reads whatever a remote server sends: arbitrary bytes
//! in arbitrary splits must give the same replies, and never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtp_client::reply::ReplyParser;

fn replies(chunks: &[&[u8]]) -> Vec<String> {
    let mut p = ReplyParser::new();
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c);
        while let Some(r) = p.next_reply() {
            out.push(format!("{r:?}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = replies(&[data]);
    let split = data.first().map(|&b| b as usize % (data.len() + 1)).unwrap_or(0);
    assert_eq!(whole, replies(&[&data[..split], &data[split..]]));
});

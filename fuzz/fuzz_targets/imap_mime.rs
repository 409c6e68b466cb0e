//! imapd parses stored messages, which come from anyone who can send mail: the MIME
//! structure, ENVELOPE, BODYSTRUCTURE and every section fetch must never panic, and the
//! byte ranges must stay inside the message.
#![no_main]

use imapd::imap::mime;
use libfuzzer_sys::fuzz_target;
use rpost_imap_proto::{Section, SectionText};

fuzz_target!(|data: &[u8]| {
    let root = mime::parse(data);
    let mut out = Vec::new();
    mime::body_structure(&mut out, data, &root, true);
    mime::body_structure(&mut out, data, &root, false);
    mime::envelope(&mut out, &data[root.header.0..root.header.1]);
    let texts = [
        None,
        Some(SectionText::Header),
        Some(SectionText::Text),
        Some(SectionText::Mime),
        Some(SectionText::HeaderFields(vec!["subject".into(), "from".into()])),
        Some(SectionText::HeaderFieldsNot(vec!["received".into()])),
    ];
    for part in [vec![], vec![1], vec![2], vec![1, 1], vec![2, 1, 3], vec![1, 2, 1, 1]] {
        for t in &texts {
            if let Some(b) = mime::section_bytes(data, &root, &Section { part: part.clone(), text: t.clone() }) {
                assert!(b.len() <= data.len() + 2);
            }
        }
    }
});

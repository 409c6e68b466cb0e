//! pickup's maildrop file parser on arbitrary bytes: maildrop/ is written by local users, so
//! any file must give a typed error (it goes to corrupt/), never a panic. A file that parses
//! must be consistent (declared size = content, at least one recipient), obey the size
//! limit, and its content must go through the header completion pickup applies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pickup::headers::{Missing, complete, normalize_crlf};
use pickup::maildrop::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = parse(data, 0) else { return };
    assert!(!file.recipients.is_empty());
    assert!(file.recipients.iter().all(|r| !r.is_empty()));
    let size = file.content.len() as u64;
    // The size limit is checked against the declared size, which is the content's.
    assert!(parse(data, size.max(1)).is_ok());
    if size > 1 {
        assert!(parse(data, size - 1).is_err());
    }
    let m = Missing {
        date: "Sun, 22 Nov 2026 02:00:00 +0000",
        message_id: "20261122020000.ABC@example.test",
        sender: file.sender.as_deref().unwrap_or("user"),
        fullname: file.fullname.as_deref(),
        undisclosed: "To: undisclosed-recipients:;",
        origin: "example.test",
    };
    let done = complete(&file.content, &m);
    assert!(!done.message_id.is_empty());
    // Already normalized content stays as it is.
    assert_eq!(normalize_crlf(&done.content), done.content);
});

//! QueueFile::parse on arbitrary bytes: a damaged or hostile queue file must give a typed
//! error, never a panic or a huge allocation. When a file does parse, its pieces must be
//! consistent and the admin views must render.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rpost_queue::format::status_byte;
use rpost_queue::show::{QueueEntry, postqueue_line};
use rpost_queue::{QueueDir, QueueFile};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/nonexistent/incoming/0123456789ABCDEF");
    let Ok(file) = QueueFile::parse(path, data) else { return };
    assert!(file.content_len() < data.len() as u64);
    for (i, r) in file.envelope.recipients.iter().enumerate() {
        let off = file.status_offset(i).expect("status offset for every recipient") as usize;
        assert_eq!(data[off], status_byte(r.status));
    }
    let _ = postqueue_line(&file, QueueDir::Active);
    let _ = QueueEntry::new(&file, QueueDir::Deferred);
    // Reads the content from disk: must fail cleanly here.
    let _ = rpost_queue::show::show(&file);
});

//! dovecot-uidlist and dovecot-keywords live in directories the mail user can write, and
//! lmtp-deliver (root) reads them: any bytes must parse or fail cleanly, and a uidlist that
//! parses must survive a write/read round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpost_maildir::{Keywords, Uidlist};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Keywords::parse(text);
    let Ok(mut list) = Uidlist::parse(text) else { return };
    let again = Uidlist::parse(&list.to_text()).expect("what we write, we read");
    assert_eq!(again.to_text(), list.to_text());
    let uid = list.assign("1795303191.M1P1.host,S=1,W=1");
    assert_eq!(list.uid_of("1795303191.M1P1.host,S=1,W=1"), Some(uid));
});

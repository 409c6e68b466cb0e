//! parse_command on arbitrary bytes: no panic; parsed addresses print and parse back to
//! themselves; error replies and arbitrary reply text format as valid reply lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpost_smtp_proto::{Address, Command, Path, Reply, ReversePath, parse_command};

fn check_address(a: &Address) {
    let printed = a.to_string();
    let back = Address::parse(&printed).expect("printed address parses");
    assert_eq!((&back.local, &back.domain), (&a.local, &a.domain), "{printed}");
}

fn check_reply(r: &Reply) {
    let wire = r.to_bytes();
    assert!(wire.ends_with(b"\r\n"));
    for line in wire.split_inclusive(|&b| b == b'\n') {
        assert!(line.len() <= 512);
        assert!(line.ends_with(b"\r\n"));
        assert!(!line[..line.len() - 2].iter().any(|&b| b == b'\r' || b == b'\n'));
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_command(data) {
        Ok(Command::Mail { from: ReversePath::Path(a), .. }) | Ok(Command::Rcpt { to: Path(a), .. }) => {
            check_address(&a)
        }
        Ok(_) => {}
        Err(e) => check_reply(&e.reply()),
    }
    check_reply(&Reply::new(550, "5.7.1", String::from_utf8_lossy(data)));
});

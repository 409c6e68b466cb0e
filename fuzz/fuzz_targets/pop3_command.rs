//! pop3d reads commands from untrusted clients: arbitrary bytes in arbitrary splits must
//! give the same replies and requests whatever the split, nothing may panic, and the wire
//! form of a message (dot-stuffing) must keep every line's content and never contain a
//! bare terminating dot line.
#![no_main]

use imapd::pop3::session::{Config, Event, LoginOutcome, MessageInfo, Session, dot_stuff, wire_size};
use libfuzzer_sys::fuzz_target;

fn config(flags: u8) -> Config {
    Config {
        greeting: "rpost ready.".into(),
        starttls: flags & 1 != 0,
        tls: flags & 2 != 0,
        plaintext_allowed: flags & 4 != 0,
        mechanisms: vec![("PLAIN".into(), true), ("LOGIN".into(), true), ("SCRAM-SHA-256".into(), false)],
    }
}

/// A deterministic driver: passwords starting with 's' log in, SASL asks once then logs in.
fn answer(s: &mut Session, e: &Event, content: &[u8]) {
    let msgs = || (0..3).map(|i| MessageInfo { size: 10 + i, uidl: format!("{i:08X}00000001") }).collect::<Vec<_>>();
    match e {
        Event::StartTls => s.tls_started(true, true),
        Event::Login { pass, .. } => {
            s.login_result(if pass.starts_with('s') { LoginOutcome::Ok(msgs()) } else { LoginOutcome::Failed(None) })
        }
        Event::Authenticate { initial: None, .. } => s.auth_challenge(""),
        Event::Authenticate { .. } | Event::SaslResponse(_) => s.login_result(LoginOutcome::Ok(msgs())),
        Event::Retrieve { .. } => s.message_result(Some(content)),
        Event::Commit { delete, .. } => s.commit_result(Ok(delete.len())),
        _ => {}
    }
}

fn run(input: &[u8], split: usize, flags: u8) -> Vec<String> {
    let mut s = Session::new(config(flags));
    let mut out = Vec::new();
    // STLS drops what was buffered with it: only a split at line ends is comparable then.
    for chunk in input.split_inclusive(|&b| b == b'\n').flat_map(|l| l.chunks(split.max(1))) {
        s.feed(chunk);
        while let Some(e) = s.next_event() {
            answer(&mut s, &e, input);
            out.push(format!("{e:?}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else { return };
    let whole = run(input, input.len(), flags);
    assert_eq!(whole, run(input, 1, flags));
    assert_eq!(whole, run(input, 3, flags));

    let wire = dot_stuff(input, None);
    assert!(wire.is_empty() || wire.ends_with(b"\r\n"));
    let lines = wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    assert!(!wire.split(|&b| b == b'\n').any(|l| l == b".\r"), "a bare dot line would end the reply");
    let stuffed = wire.split(|&b| b == b'\n').filter(|l| l.starts_with(b"..")).count() as u64;
    assert!(wire.len() as u64 >= wire_size(input) && wire.len() as u64 <= wire_size(input) + stuffed);
    assert!(lines as u64 <= wire_size(input));
    let top = dot_stuff(input, Some(u64::from(flags)));
    assert!(wire.starts_with(&top));

    if let Ok(text) = std::str::from_utf8(input) {
        if let Ok(f) = imapd::pop3::mailbox::UidlFormat::parse(text) {
            let _ = f.render(u32::from(flags), 7, "base");
        }
        let _ = imapd::pop3::session::logout_line(text, &Default::default());
    }
});

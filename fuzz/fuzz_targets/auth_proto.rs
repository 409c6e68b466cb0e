//! authd reads the auth client and auth-userdb protocols from untrusted clients, and smtpd
//! reads the server side from a socket: arbitrary bytes in arbitrary splits must give the
//! same events on every side, re-encoded requests must parse back the same, and nothing
//! may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rpost_auth_proto::{ClientConnection, ClientEvent, MasterClient, MasterServer, ServerConnection};

fn server(chunks: &[&[u8]]) -> Vec<String> {
    let mut s = ServerConnection::new();
    let mut out = Vec::new();
    for c in chunks {
        s.feed(c);
        loop {
            match s.next_event() {
                Ok(Some(e)) => {
                    if let ClientEvent::Auth(r) = &e {
                        // What we would forward must parse back to the same request.
                        let line = r.to_line();
                        let again = rpost_auth_proto::ClientLine::parse(line.trim_end_matches('\n')).unwrap();
                        assert_eq!(again, rpost_auth_proto::ClientLine::Auth(r.clone()));
                    }
                    out.push(format!("{e:?}"));
                }
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error {e}"));
                    return out;
                }
            }
        }
    }
    out
}

fn client(chunks: &[&[u8]]) -> Vec<String> {
    let (mut c, _) = ClientConnection::new(1);
    for _ in 0..4 {
        c.auth(rpost_auth_proto::AuthRequest::new(0, "PLAIN", "smtp"));
    }
    let mut out = Vec::new();
    for ch in chunks {
        c.feed(ch);
        loop {
            match c.poll() {
                Ok(Some(u)) => out.push(format!("{u:?}")),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error {e}"));
                    return out;
                }
            }
        }
    }
    out
}

fn master(chunks: &[&[u8]]) -> Vec<String> {
    let mut s = MasterServer::new();
    let (mut c, _) = MasterClient::new();
    let mut out = Vec::new();
    let (mut s_done, mut c_done) = (false, false);
    for ch in chunks {
        s.feed(ch);
        c.feed(ch);
        while !s_done {
            match s.next_request() {
                Ok(Some(r)) => out.push(format!("s {r:?}")),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("s error {e}"));
                    s_done = true;
                }
            }
        }
        while !c_done {
            match c.poll() {
                Ok(Some(r)) => out.push(format!("c {r:?}")),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("c error {e}"));
                    c_done = true;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|&b| b as usize % (data.len() + 1)).unwrap_or(0);
    let (a, b) = (&data[..split], &data[split..]);
    assert_eq!(server(&[data]), server(&[a, b]));
    assert_eq!(client(&[data]), client(&[a, b]));
    let m1 = master(&[data]);
    let m2 = master(&[a, b]);
    // Events interleave differently across the two sides, but each side sees the same.
    let side = |v: &[String], p: &str| v.iter().filter(|l| l.starts_with(p)).cloned().collect::<Vec<_>>();
    assert_eq!(side(&m1, "s "), side(&m2, "s "));
    assert_eq!(side(&m1, "c "), side(&m2, "c "));
});

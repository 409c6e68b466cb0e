//! "A 250 is a promise": smtpd is killed with SIGKILL at random moments while 20 clients send
//! 1,000 messages; every message that got its 250 must be in the queue, intact, and no
//! half-written file may ever pass for a message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpost_testkit::Suite;
use rpost_testkit::smtp::{SmtpClient, queued_id};

const CLIENTS: usize = 20;
const PER_CLIENT: usize = 50;

/// Tries one message on `c`; None when the connection broke underneath.
fn try_send(c: &mut SmtpClient, marker: &str) -> Option<Result<String, String>> {
    let r = c.cmd("MAIL FROM:<sender@client.example>");
    if r.is_empty() {
        return None;
    }
    let r = c.cmd("RCPT TO:<rcpt@remote.example>");
    if r.is_empty() {
        return None;
    }
    let r = c.cmd("DATA");
    if !r.starts_with("354") {
        return if r.is_empty() { None } else { Some(Err(r)) };
    }
    let body = format!("Subject: {marker}\r\n\r\n{}\r\n{marker}\r\n", "0123456789abcdef".repeat(200));
    let r = c.body(&body);
    if r.is_empty() {
        return None;
    }
    Some(queued_id(&r).ok_or(r))
}

#[test]
fn sigkill_of_smtpd_never_loses_an_acknowledged_message() {
    let suite = Suite::builder().main("service_throttle_time", "1s").inet("smtp", "n - n - - smtpd").start();
    let port = suite.port("smtp");
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                let mut c: Option<SmtpClient> = None;
                let deadline = Instant::now() + Duration::from_secs(120);
                while sent < PER_CLIENT {
                    assert!(Instant::now() < deadline, "client {n} stuck");
                    let conn = c.get_or_insert_with(|| {
                        let mut c = SmtpClient::connect(port);
                        c.cmd("EHLO client.example");
                        c
                    });
                    let marker = format!("msg-{n}-{sent}");
                    match try_send(conn, &marker) {
                        Some(Ok(id)) => {
                            acked.lock().unwrap().insert(id, marker);
                            sent += 1;
                        }
                        Some(Err(r)) if r.starts_with('4') || r.starts_with("421") => c = None,
                        Some(Err(r)) => panic!("unexpected reply: {r}"),
                        None => c = None, // smtpd was killed: reconnect, try again
                    }
                }
            })
        })
        .collect();

    // Kill every smtpd process at random intervals until all clients are done.
    let mut kills = 0;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    while clients.iter().any(|h| !h.is_finished()) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(5 + seed % 40));
        if let Ok(st) = suite.try_status() {
            for c in &st.services[0].children {
                let pid = nix::unistd::Pid::from_raw(c.pid as i32);
                if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                    kills += 1;
                }
            }
        }
    }
    for c in clients {
        c.join().unwrap();
    }
    assert!(kills >= 5, "the test must actually kill smtpd (killed {kills} times)");

    let acked = acked.lock().unwrap();
    assert_eq!(acked.len(), CLIENTS * PER_CLIENT);
    let q = rpost_queue::Queue::new(suite.queue_dir());
    for (id, marker) in acked.iter() {
        let qid = rpost_queue::QueueId::parse(id).unwrap();
        let f = q
            .open(rpost_queue::QueueDir::Incoming, &qid)
            .unwrap_or_else(|e| panic!("acknowledged message {id} ({marker}) lost: {e}"));
        let content = String::from_utf8(f.content().unwrap()).unwrap();
        assert!(
            content.contains(&format!("Subject: {marker}\r\n")) && content.ends_with(&format!("{marker}\r\n")),
            "{id} damaged"
        );
    }
    // Whatever else is in incoming/ is either a complete message or not a message at all.
    for id in q.scan(rpost_queue::QueueDir::Incoming).unwrap() {
        q.open(rpost_queue::QueueDir::Incoming, &id).unwrap_or_else(|e| panic!("scan offered a broken file {id}: {e}"));
    }
    eprintln!("killed smtpd {kills} times; {} acknowledged messages all intact", acked.len());
}

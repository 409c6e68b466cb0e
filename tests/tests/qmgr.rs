//! qmgr end to end, with the test itself as the delivery agent: it listens on
//! `private/lmtp`, where qmgr sends virtual-domain recipients (virtual_transport =
//! lmtp:unix:private/lmtp-deliver), and answers what each test needs.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, SystemTime};

use rpost_ipc::{DeliveryRequest, DeliveryResponse, FrameDecoder, Outcome, RecipientStatus};
use rpost_queue::{Queue, QueueDir};
use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;

const T: Duration = Duration::from_secs(20);

fn suite(extra: &[(&str, &str)]) -> Suite {
    let mut b = Suite::builder()
        .main("mydomain", "example.test")
        .main("myhostname", "mail.example.test")
        .main("mydestination", "$myhostname")
        .main("virtual_mailbox_domains", "example.test")
        .main("local_recipient_maps", "")
        .main("alias_maps", "")
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr");
    for (k, v) in extra {
        b = b.main(k, v);
    }
    b.start()
}

/// A fake delivery agent: answers `n` requests with `answer(request)`; returns the requests.
fn agent(
    suite: &Suite,
    n: usize,
    answer: impl Fn(&DeliveryRequest) -> Vec<Outcome> + Send + 'static,
) -> std::thread::JoinHandle<Vec<DeliveryRequest>> {
    let path = suite.queue_dir().join("private/lmtp");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    // qmgr runs as mail_owner when the tests run as root.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            let mut dec = FrameDecoder::new();
            let mut buf = [0u8; 4096];
            let req = loop {
                if let Some(r) = dec.decode::<DeliveryRequest>().unwrap() {
                    break r;
                }
                let k = s.read(&mut buf).unwrap();
                assert!(k > 0, "qmgr closed before sending a request");
                dec.feed(&buf[..k]);
            };
            let statuses = req
                .recipients
                .iter()
                .zip(answer(&req))
                .map(|(r, outcome)| RecipientStatus {
                    index: r.index,
                    outcome,
                    dsn: match outcome {
                        Outcome::Sent => "2.0.0",
                        Outcome::Deferred => "4.0.0",
                        Outcome::Bounced => "5.1.1",
                    }
                    .into(),
                    relay: "test".into(),
                    reason: "test".into(),
                    next_hop_dsn: false,
                })
                .collect();
            s.write_all(&rpost_ipc::encode(&DeliveryResponse { statuses }).unwrap()).unwrap();
            seen.push(req);
        }
        seen
    })
}

fn send(suite: &Suite, to: &[&str]) -> String {
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    c.send_mail("sender@client.example", to, "Subject: t\r\n\r\nbody").expect("queued")
}

fn wait_gone(suite: &Suite, id: &str) {
    let q = Queue::new(suite.queue_dir());
    let id = rpost_queue::QueueId::parse(id).unwrap();
    let deadline = std::time::Instant::now() + T;
    while q.find(&id).is_some() {
        assert!(std::time::Instant::now() < deadline, "{id} still queued in {:?}\n{}", q.find(&id), suite.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn delivered_messages_leave_the_queue() {
    let suite = suite(&[]);
    let agent = agent(&suite, 1, |r| r.recipients.iter().map(|_| Outcome::Sent).collect());
    let id = send(&suite, &["alice@example.test", "bob@example.test"]);
    wait_gone(&suite, &id);
    let reqs = agent.join().unwrap();
    assert_eq!(reqs[0].queue_id, id);
    assert_eq!(reqs[0].transport, "lmtp");
    assert_eq!(reqs[0].nexthop, "unix:private/lmtp-deliver");
    assert_eq!(reqs[0].sender, "sender@client.example");
    assert_eq!(reqs[0].recipients.len(), 2, "one request per route, both recipients in it");
    let log = suite.wait_log(&format!("{id}: removed"), T);
    assert!(log.contains(&format!("{id}: from=<sender@client.example>, size=")), "{log}");
}

#[test]
fn deferred_recipients_wait_in_deferred_with_a_retry_time() {
    let suite = suite(&[("minimal_backoff_time", "300s")]);
    // alice is delivered, bob deferred: only bob is pending afterwards.
    let agent = agent(&suite, 1, |r| {
        r.recipients
            .iter()
            .map(|x| if x.address.starts_with("bob") { Outcome::Deferred } else { Outcome::Sent })
            .collect()
    });
    let id = send(&suite, &["alice@example.test", "bob@example.test"]);
    agent.join().unwrap();
    let q = Queue::new(suite.queue_dir());
    let qid = rpost_queue::QueueId::parse(&id).unwrap();
    let deadline = std::time::Instant::now() + T;
    while q.find(&qid) != Some(QueueDir::Deferred) {
        assert!(std::time::Instant::now() < deadline, "not deferred: {:?}", q.find(&qid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let f = q.open(QueueDir::Deferred, &qid).unwrap();
    let pending: Vec<&str> = f.pending().map(|(_, r)| r.address.as_str()).collect();
    assert_eq!(pending, ["bob@example.test"]);
    let retry = std::fs::metadata(q.path(QueueDir::Deferred, &qid)).unwrap().modified().unwrap();
    assert!(retry > SystemTime::now() + Duration::from_secs(200), "retry time is minimal_backoff_time ahead");
    // `rmaster queue list` shows it with the pending recipient only.
    let out = String::from_utf8(suite.rmaster(&["queue", "list"]).stdout).unwrap();
    assert!(out.contains(&id) && out.contains("bob@example.test") && !out.contains("alice@example.test"), "{out}");
}

#[test]
fn a_missing_transport_defers_and_bounces_are_final() {
    let suite = suite(&[]);
    // No agent listening: "mail transport unavailable", deferred, nothing lost.
    let id = send(&suite, &["alice@example.test"]);
    suite.wait_log(
        &format!("{id}: to=<alice@example.test>, relay=none, dsn=4.3.0, status=deferred (mail transport unavailable)"),
        T,
    );
    // A permanent failure is final: the message leaves the queue, and the sender gets one
    // RFC 3464 notification from the null sender.
    let agent = agent(&suite, 1, |r| r.recipients.iter().map(|_| Outcome::Bounced).collect());
    let id2 = send(&suite, &["carol@example.test"]);
    wait_gone(&suite, &id2);
    agent.join().unwrap();
    let log = suite.wait_log(&format!("{id2}: sender non-delivery notification: "), T);
    let bounce_id = log
        .lines()
        .find_map(|l| l.split(&format!("{id2}: sender non-delivery notification: ")).nth(1))
        .unwrap()
        .trim()
        .to_string();
    let q = Queue::new(suite.queue_dir());
    let bid = rpost_queue::QueueId::parse(&bounce_id).unwrap();
    // It is in the queue somewhere (qmgr may already be trying to deliver it).
    let mut bounce = None;
    for _ in 0..100 {
        if let Some(d) = q.find(&bid)
            && let Ok(f) = q.open(d, &bid)
        {
            bounce = Some(f);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let bounce = bounce.expect("bounce queued");
    assert_eq!(bounce.envelope.sender, "", "bounces come from the null sender");
    assert_eq!(bounce.envelope.recipients[0].address, "sender@client.example");
    let text = String::from_utf8(bounce.content().unwrap()).unwrap();
    for needle in [
        "From: MAILER-DAEMON@mail.example.test (Mail Delivery System)",
        "Subject: Undelivered Mail Returned to Sender",
        "Content-Type: multipart/report; report-type=\"delivery-status\";",
        "Content-Type: message/delivery-status",
        "Final-Recipient: rfc822; carol@example.test",
        "Action: failed",
        "Status: 5.1.1",
        "Content-Type: message/rfc822",
        "Subject: t",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
}

#[test]
fn messages_left_in_active_are_delivered_after_a_restart() {
    let suite = Suite::builder()
        .main("virtual_mailbox_domains", "example.test")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .prepare();
    let q = Queue::new(suite.queue_dir());
    let out = suite.rmaster(&["check"]);
    assert!(out.status.success());
    let mut env = rpost_queue::Envelope::new("s@client.example");
    env.recipients.push(rpost_queue::Recipient::new("dave@example.test"));
    let mut m = q.create(&env).unwrap();
    m.write_content(b"Subject: left behind\r\n\r\nx\r\n").unwrap();
    let id = m.commit().unwrap();
    q.move_to(&id, QueueDir::Incoming, QueueDir::Active).unwrap();
    // As if a previous qmgr died mid-delivery: the file sits in active/.
    let path = suite.queue_dir().join("private");
    std::fs::create_dir_all(&path).unwrap();
    let listener = UnixListener::bind(path.join("lmtp")).unwrap();
    std::fs::set_permissions(path.join("lmtp"), std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    // The files a root test created must belong to mail_owner, as smtpd's would.
    let _ = suite.rmaster(&["check"]);
    chown_tree(&suite.queue_dir().join("active"));
    let suite = suite.start_prepared();
    let (mut s, _) = listener.accept().unwrap();
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    let req = loop {
        if let Some(r) = dec.decode::<DeliveryRequest>().unwrap() {
            break r;
        }
        let k = s.read(&mut buf).unwrap();
        dec.feed(&buf[..k]);
    };
    assert_eq!(req.queue_id, id.to_string());
    let statuses = vec![RecipientStatus {
        index: 0,
        outcome: Outcome::Sent,
        dsn: "2.0.0".into(),
        relay: "test".into(),
        reason: "ok".into(),
        next_hop_dsn: false,
    }];
    s.write_all(&rpost_ipc::encode(&DeliveryResponse { statuses }).unwrap()).unwrap();
    wait_gone(&suite, id.as_str());
}

/// Gives the queue files a test wrote as root to mail_owner (nobody when root).
fn chown_tree(dir: &std::path::Path) {
    if !nix::unistd::getuid().is_root() {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        std::os::unix::fs::chown(&p, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
    }
}

#[test]
fn admin_queue_operations() {
    let suite = suite(&[("minimal_backoff_time", "300s")]);
    // Deferred by an agent that cannot deliver yet.
    let first = agent(&suite, 1, |r| r.recipients.iter().map(|_| Outcome::Deferred).collect());
    let id = send(&suite, &["erin@example.test"]);
    first.join().unwrap();
    let q = Queue::new(suite.queue_dir());
    let qid = rpost_queue::QueueId::parse(&id).unwrap();
    let wait_in = |d: QueueDir| {
        let deadline = std::time::Instant::now() + T;
        while q.find(&qid) != Some(d) {
            assert!(std::time::Instant::now() < deadline, "{id} not in {d:?} but {:?}", q.find(&qid));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_in(QueueDir::Deferred);

    let shape = String::from_utf8(suite.rmaster(&["queue", "shape"]).stdout).unwrap();
    let row = shape.lines().find(|l| l.trim_start().starts_with("example.test")).unwrap_or_else(|| panic!("{shape}"));
    assert_eq!(row.split_whitespace().nth(1), Some("1"), "{shape}");

    let out = suite.rmaster(&["queue", "hold", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Placed on hold: 1 message"));
    wait_in(QueueDir::Hold);
    let list = String::from_utf8(suite.rmaster(&["queue", "list"]).stdout).unwrap();
    assert!(list.contains(&format!("{id}!")), "held messages are marked with '!': {list}");

    // Released and flushed: qmgr tries again at once, and this time it works.
    let second = agent(&suite, 1, |r| r.recipients.iter().map(|_| Outcome::Sent).collect());
    let out = suite.rmaster(&["queue", "release", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Released from hold: 1 message"));
    wait_gone(&suite, &id);
    second.join().unwrap();

    // delete ALL empties what is left.
    let id2 = send(&suite, &["frank@example.test"]);
    let _ = suite.rmaster(&["queue", "hold", "ALL"]);
    let _ = id2;
    let out = suite.rmaster(&["queue", "delete", "ALL"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = suite.rmaster(&["queue", "hold", "../../../etc/passwd"]);
    assert!(!bad.status.success());
}

//! smtp-client end to end: the real rmaster runs the `lmtp` and `smtp` services of
//! master.cf; the test plays qmgr (one DeliveryRequest over `private/<transport>`, one
//! DeliveryResponse back) and the next hop (a scripted LMTP/SMTP server thread, or Debian's
//! smtp-sink when installed). A last test lets the real smtpd and qmgr feed it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rpost_ipc::{DeliveryRecipient, DeliveryRequest, DeliveryResponse, FrameDecoder, Outcome};
use rpost_queue::{Envelope, Queue, QueueDir, QueueFile, Recipient};
use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;

const T: Duration = Duration::from_secs(20);

const BODY: &[u8] = b"Subject: e2e\r\n\r\nfirst\r\n.dot at the start\r\n.\r\n..\r\nend\r\n";

fn suite() -> Suite {
    Suite::builder()
        .main("smtp_helo_timeout", "10s")
        .main("lmtp_lhlo_timeout", "10s")
        // The fake LMTP servers expect QUIT after each delivery.
        .main("lmtp_connection_cache_on_demand", "no")
        .master_line("lmtp unix - - n - - smtp-client")
        .master_line("smtp unix - - n - - smtp-client")
        .start()
}

/// As root the daemons run as nobody: hand them what they must read or connect to.
fn give_to_mail_owner(path: &Path) {
    if nix::unistd::getuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
        nix::unistd::chown(path, Some(nobody.uid), Some(nobody.gid)).unwrap();
    }
}

/// Queues a message in active/ as qmgr would have it; returns its ID and path.
fn queue(suite: &Suite, rcpts: &[(&str, &str)]) -> (String, PathBuf) {
    let q = Queue::new(suite.queue_dir());
    let mut env = Envelope::new("sender@example.test");
    for (addr, orig) in rcpts {
        let mut r = Recipient::new(*addr);
        r.original = (*orig).into();
        env.recipients.push(r);
    }
    let mut msg = q.create(&env).unwrap();
    msg.write_content(BODY).unwrap();
    let id = msg.commit().unwrap();
    q.move_to(&id, QueueDir::Incoming, QueueDir::Active).unwrap();
    let path = q.path(QueueDir::Active, &id);
    give_to_mail_owner(&path);
    (id.as_str().to_owned(), path)
}

fn request(id: &str, transport: &str, nexthop: &str, rcpts: &[&str]) -> DeliveryRequest {
    DeliveryRequest {
        queue_id: id.into(),
        queue_dir: "active".into(),
        transport: transport.into(),
        nexthop: nexthop.into(),
        sender: "sender@example.test".into(),
        recipients: rcpts
            .iter()
            .enumerate()
            .map(|(i, a)| DeliveryRecipient { index: i as u32, address: (*a).into(), orcpt: None, notify: None })
            .collect(),
        eight_bit: false,
        smtputf8: false,
        envid: None,
        ret_full: None,
    }
}

/// Plays qmgr: one request to `private/<transport>`, one response back.
fn qmgr(suite: &Suite, req: &DeliveryRequest) -> DeliveryResponse {
    let mut s = UnixStream::connect(suite.queue_dir().join("private").join(&req.transport)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&rpost_ipc::encode(req).unwrap()).unwrap();
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(resp) = dec.decode::<DeliveryResponse>().unwrap() {
            return resp;
        }
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("no response: {e}\n{}", suite.log()));
        assert!(n > 0, "agent closed without a response:\n{}", suite.log());
        dec.feed(&buf[..n]);
    }
}

/// What the fake next hop received.
#[derive(Debug, Default)]
struct Captured {
    commands: Vec<String>,
    /// DATA as it came over the wire: dot-stuffed, with the final dot.
    data: Vec<u8>,
}

/// Answers one client: greeting, then `answer(line)` per command and `answer(".")` after
/// the data.
fn converse(stream: impl Read, mut out: impl Write, greeting: &str, answer: impl Fn(&str) -> String) -> Captured {
    let mut got = Captured::default();
    let mut rd = BufReader::new(stream);
    out.write_all(format!("{greeting}\r\n").as_bytes()).unwrap();
    let mut in_data = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return got;
        }
        if in_data {
            got.data.extend_from_slice(&line);
            if line == b".\r\n" {
                in_data = false;
                out.write_all(answer(".").as_bytes()).unwrap();
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        got.commands.push(text.clone());
        let reply = answer(&text);
        if text == "QUIT" {
            // A client closing an idle cached session does not wait for this reply.
            let _ = out.write_all(reply.as_bytes());
            return got;
        }
        out.write_all(reply.as_bytes()).unwrap();
        in_data = text == "DATA" && reply.starts_with("354");
    }
}

/// A well-behaved server with PIPELINING that refuses `unknown@...` and, after the dot,
/// answers `dot`.
fn answers(dot: &'static str) -> impl Fn(&str) -> String {
    move |line: &str| {
        let reply = if line.starts_with("EHLO") || line.starts_with("LHLO") {
            "250-next.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 ENHANCEDSTATUSCODES"
        } else if line.starts_with("MAIL FROM:") {
            "250 2.1.0 Ok"
        } else if line.starts_with("RCPT TO:<unknown") {
            "550 5.1.1 <unknown@example.test>: Recipient address rejected: User unknown"
        } else if line.starts_with("RCPT TO:") {
            "250 2.1.5 Ok"
        } else if line == "DATA" {
            "354 End data with <CR><LF>.<CR><LF>"
        } else if line == "." {
            dot
        } else if line == "QUIT" {
            "221 2.0.0 Bye"
        } else {
            "502 5.5.2 Error: command not recognized"
        };
        format!("{reply}\r\n")
    }
}

fn lmtp_server(path: &Path, dot: &'static str) -> JoinHandle<Captured> {
    let listener = UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        converse(s.try_clone().unwrap(), s, "220 next.example LMTP ready", answers(dot))
    })
}

fn smtp_server(dot: &'static str) -> (u16, JoinHandle<Captured>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        converse(s.try_clone().unwrap(), s, "220 next.example ESMTP", answers(dot))
    });
    (port, t)
}

fn unstuff(data: &[u8]) -> Vec<u8> {
    let text = data.strip_suffix(b".\r\n").expect("final dot");
    let mut out = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

#[test]
fn lmtp_over_a_unix_socket() {
    let suite = suite();
    let sock = suite.root().join("next-lmtp.sock");
    let server = lmtp_server(&sock, "250 2.0.0 <alice@example.test> Saved\r\n250 2.0.0 <bob@example.test> Saved");
    let (id, path) =
        queue(&suite, &[("alice@example.test", "alice@example.test"), ("bob@example.test", "info@example.test")]);
    let nexthop = format!("unix:{}", sock.display());
    let resp = qmgr(&suite, &request(&id, "lmtp", &nexthop, &["alice@example.test", "bob@example.test"]));
    let got = server.join().unwrap();

    let relay = format!("mail.example.test[{}]", sock.display());
    assert_eq!(resp.statuses.len(), 2, "{resp:?}");
    for (i, st) in resp.statuses.iter().enumerate() {
        assert_eq!((st.index, st.outcome, st.dsn.as_str()), (i as u32, Outcome::Sent, "2.0.0"), "{st:?}");
        assert_eq!(st.relay, relay);
    }
    assert_eq!(resp.statuses[1].reason, "250 2.0.0 <bob@example.test> Saved");
    assert_eq!(
        got.commands,
        [
            "LHLO mail.example.test",
            &format!("MAIL FROM:<sender@example.test> SIZE={}", BODY.len()),
            "RCPT TO:<alice@example.test>",
            "RCPT TO:<bob@example.test>",
            "DATA",
            "QUIT"
        ]
    );
    assert_eq!(got.data, b"Subject: e2e\r\n\r\nfirst\r\n..dot at the start\r\n..\r\n...\r\nend\r\n.\r\n");
    assert_eq!(unstuff(&got.data), BODY);

    let log = suite.wait_log(&format!("{id}: to=<bob@example.test>"), T);
    let line = |to: &str| log.lines().find(|l| l.contains(&format!("{id}: to=<{to}>"))).unwrap().to_owned();
    let alice = line("alice@example.test");
    assert!(alice.contains("rpost/lmtp["), "{alice}");
    assert!(
        alice.contains(&format!("{id}: to=<alice@example.test>, relay={relay}, delay=")),
        "no orig_to when it is the same address: {alice}"
    );
    assert!(alice.contains(", dsn=2.0.0, status=sent (250 2.0.0 <alice@example.test> Saved)"), "{alice}");
    let bob = line("bob@example.test");
    assert!(bob.contains("to=<bob@example.test>, orig_to=<info@example.test>, relay="), "{bob}");
    assert!(bob.contains(", delays="), "{bob}");

    // The agent only reads the queue file; marking recipients is qmgr's job.
    let file = QueueFile::open(&path).unwrap();
    assert!(file.pending().count() == 2);
}

#[test]
fn smtp_to_a_relay_host() {
    let suite = suite();
    let (port, server) = smtp_server("250 2.0.0 Ok: queued as NEXT1");
    let (id, _) = queue(&suite, &[("bob@example.test", "bob@example.test"), ("unknown@example.test", "x@y")]);
    let nexthop = format!("[127.0.0.1]:{port}");
    let resp = qmgr(&suite, &request(&id, "smtp", &nexthop, &["bob@example.test", "unknown@example.test"]));
    let got = server.join().unwrap();

    let relay = format!("127.0.0.1[127.0.0.1]:{port}");
    let (ok, bad) = (&resp.statuses[0], &resp.statuses[1]);
    assert_eq!((ok.outcome, ok.dsn.as_str(), ok.relay.as_str()), (Outcome::Sent, "2.0.0", relay.as_str()));
    assert_eq!(ok.reason, "250 2.0.0 Ok: queued as NEXT1");
    assert_eq!((bad.outcome, bad.dsn.as_str()), (Outcome::Bounced, "5.1.1"));
    assert_eq!(
        bad.reason,
        "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <unknown@example.test>: Recipient address rejected: \
         User unknown (in reply to RCPT TO command)"
    );
    assert_eq!(got.commands[0], "EHLO mail.example.test");
    assert_eq!(unstuff(&got.data), BODY);

    let log = suite.wait_log("status=bounced", T);
    assert!(log.contains("rpost/smtp["), "{log}");
    assert!(log.contains(&format!("{id}: to=<bob@example.test>, relay={relay}, delay=")), "{log}");
    assert!(log.contains("dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as NEXT1)"), "{log}");
    assert!(log.contains("to=<unknown@example.test>, orig_to=<x@y>, relay="), "{log}");
    assert!(log.contains("dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1"), "{log}");
}

#[test]
fn unreachable_next_hops_are_deferred() {
    let suite = suite();
    let (id, _) = queue(&suite, &[("bob@example.test", "bob@example.test")]);
    let port = rpost_testkit::free_port();
    let resp = qmgr(&suite, &request(&id, "smtp", &format!("[127.0.0.1]:{port}"), &["bob@example.test"]));
    let st = &resp.statuses[0];
    assert_eq!((st.outcome, st.dsn.as_str(), st.relay.as_str()), (Outcome::Deferred, "4.4.1", "none"));
    assert_eq!(st.reason, format!("connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"));
    let log = suite.wait_log("status=deferred (connect to 127.0.0.1[127.0.0.1]", T);
    assert!(log.contains("dsn=4.4.1"), "{log}");

    let resp = qmgr(&suite, &request(&id, "smtp", "example.com", &["bob@example.test"]));
    assert_eq!((resp.statuses[0].outcome, resp.statuses[0].dsn.as_str()), (Outcome::Deferred, "4.4.3"));
}

/// Debian's smtp-sink, when the postfix package is installed.
fn smtp_sink(lmtp: bool) -> Option<(Child, u16)> {
    let bin = Path::new("/usr/sbin/smtp-sink");
    if !bin.is_file() {
        eprintln!("smtp-sink not installed: skipped");
        return None;
    }
    let port = rpost_testkit::free_port();
    let mut cmd = Command::new(bin);
    if nix::unistd::getuid().is_root() {
        cmd.args(["-u", "nobody"]);
    }
    if lmtp {
        cmd.arg("-L");
    }
    let child = cmd
        .arg(format!("127.0.0.1:{port}"))
        .arg("10")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "smtp-sink did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((child, port))
}

#[test]
fn delivers_to_postfix_smtp_sink() {
    let Some((mut sink, port)) = smtp_sink(false) else { return };
    let suite = suite();
    let (id, _) = queue(&suite, &[("a@example.test", "a@example.test"), ("b@example.test", "b@example.test")]);
    let resp =
        qmgr(&suite, &request(&id, "smtp", &format!("[127.0.0.1]:{port}"), &["a@example.test", "b@example.test"]));
    let _ = sink.kill();
    let _ = sink.wait();
    assert!(resp.statuses.iter().all(|s| s.outcome == Outcome::Sent), "{resp:?}\n{}", suite.log());

    let Some((mut sink, port)) = smtp_sink(true) else { return };
    let resp =
        qmgr(&suite, &request(&id, "lmtp", &format!("inet:127.0.0.1:{port}"), &["a@example.test", "b@example.test"]));
    let _ = sink.kill();
    let _ = sink.wait();
    assert!(resp.statuses.iter().all(|s| s.outcome == Outcome::Sent), "{resp:?}\n{}", suite.log());
    suite.wait_log("rpost/lmtp[", T);
}

#[test]
fn smtpd_qmgr_and_lmtp_together() {
    // The whole chain: smtpd queues, qmgr routes to lmtp:unix:private/lmtp-deliver, and our
    // fake LMTP server listens there in place of lmtp-deliver.
    let suite = Suite::builder()
        .main("mydomain", "example.test")
        .main("mydestination", "$myhostname")
        .main("virtual_mailbox_domains", "example.test")
        .main("local_recipient_maps", "")
        .main("alias_maps", "")
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("lmtp unix - - n - - smtp-client")
        .start();
    let sock = suite.queue_dir().join("private/lmtp-deliver");
    let server = lmtp_server(&sock, "250 2.0.0 <alice@example.test> Saved");
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    let id =
        c.send_mail("sender@client.example", &["alice@example.test"], "Subject: chain\r\n\r\n.hi\r\n").expect("queued");
    let got = server.join().unwrap();
    assert!(got.commands.contains(&"RCPT TO:<alice@example.test>".to_string()), "{:?}", got.commands);
    assert!(got.data.windows(5).any(|w| w == b"\r\n..h"), "dot-stuffed: {:?}", String::from_utf8_lossy(&got.data));
    let log =
        suite.wait_log(&format!("{id}: to=<alice@example.test>, relay=mail.example.test[private/lmtp-deliver]"), T);
    assert!(log.contains("status=sent (250 2.0.0 <alice@example.test> Saved)"), "{log}");
    suite.wait_log(&format!("{id}: removed"), T);
}

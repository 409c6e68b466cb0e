//! In-process deliveries: the real driver, session and queue reader against fake SMTP/LMTP
//! servers on loopback TCP and UNIX-domain sockets; no rmaster.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rpost_config::Params;
use rpost_ipc::{DeliveryRecipient, DeliveryRequest, DeliveryResponse, FrameDecoder, Outcome};
use rpost_queue::{Envelope, Queue, QueueDir, Recipient};
use smtp_client::deliver::{Agent, deliver, serve};
use smtp_client::settings::Settings;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};

/// What a fake server received.
#[derive(Debug, Default, Clone)]
struct Captured {
    commands: Vec<String>,
    /// The DATA content as it came over the wire (dot-stuffed, with the final dot).
    data: Vec<u8>,
}

/// A scripted server: greets, then answers each command line with `answer(line)`; after
/// DATA's 354 it collects the content up to the dot and answers `answer(".")`.
async fn fake<S, F>(stream: S, greeting: &str, mut answer: F, captured: Arc<Mutex<Captured>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: FnMut(&str) -> String,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    wr.write_all(format!("{greeting}\r\n").as_bytes()).await.unwrap();
    let mut line = Vec::new();
    let mut in_data = false;
    loop {
        line.clear();
        if rd.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
            return;
        }
        if in_data {
            captured.lock().unwrap().data.extend_from_slice(&line);
            if line == b".\r\n" {
                in_data = false;
                let r = answer(".");
                if !r.is_empty() {
                    wr.write_all(r.as_bytes()).await.unwrap();
                }
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        captured.lock().unwrap().commands.push(text.clone());
        let r = answer(&text);
        if r.is_empty() {
            // Say nothing (timeout tests) or hang up.
            if text == "HANGUP" {
                return;
            }
            continue;
        }
        if r == "CLOSE" {
            return;
        }
        if text.eq_ignore_ascii_case("QUIT") {
            // A client closing an idle cached session does not wait for this reply.
            let _ = wr.write_all(r.as_bytes()).await;
            return;
        }
        wr.write_all(r.as_bytes()).await.unwrap();
        if text.eq_ignore_ascii_case("DATA") && r.starts_with("354") {
            in_data = true;
        }
    }
}

/// Answers like a well-behaved ESMTP server with PIPELINING; `rcpt` decides per address.
fn smtp_answers(rcpt: impl Fn(&str) -> String) -> impl FnMut(&str) -> String {
    move |line: &str| {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("LHLO") {
            "250-fake.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250 DSN\r\n".into()
        } else if upper.starts_with("MAIL") {
            "250 2.1.0 Ok\r\n".into()
        } else if upper.starts_with("RCPT") {
            let addr = line.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(a, _)| a).unwrap_or("");
            rcpt(addr)
        } else if upper == "DATA" {
            "354 End data with <CR><LF>.<CR><LF>\r\n".into()
        } else if line == "." {
            "250 2.0.0 Ok: queued as FAKE1\r\n".into()
        } else if upper == "QUIT" {
            "221 2.0.0 Bye\r\n".into()
        } else {
            "502 5.5.2 Error: command not recognized\r\n".into()
        }
    }
}

fn accept_all(_: &str) -> String {
    "250 2.1.5 Ok\r\n".into()
}

struct Env {
    dir: tempfile::TempDir,
    queue_id: String,
}

const BODY: &[u8] = b"Subject: test\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n";

fn queue_message(rcpts: &[&str], body: &[u8]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::new(dir.path());
    q.ensure_dirs().unwrap();
    let mut env = Envelope::new("alice@example.test");
    for r in rcpts {
        let mut rcpt = Recipient::new(*r);
        if r.starts_with("bob") {
            rcpt.original = "postmaster@example.test".into();
        }
        env.recipients.push(rcpt);
    }
    let mut msg = q.create(&env).unwrap();
    msg.write_content(body).unwrap();
    let id = msg.commit().unwrap();
    q.move_to(&id, QueueDir::Incoming, QueueDir::Active).unwrap();
    Env { dir, queue_id: id.as_str().to_owned() }
}

/// An agent without connection caching (each test server expects its QUIT) whose DNS
/// server is a closed loopback port, so no test asks a real resolver.
fn settings(root: &Path, lmtp: bool, extra: &[(&str, &str)]) -> Agent {
    let mut p = Params::empty();
    p.set("myhostname", "mail.example.test");
    p.set("inet_protocols", "ipv4");
    // The fake servers expect QUIT after one delivery; the cache tests turn it back on.
    p.set("smtp_connection_cache_on_demand", "no");
    p.set("lmtp_connection_cache_on_demand", "no");
    p.set("dns_resolver_servers", "127.0.0.1:1");
    for (k, v) in extra {
        p.set(k, v);
    }
    Agent::new(Settings::from_params(&p, lmtp, root.to_path_buf()).unwrap())
}

fn request(env: &Env, nexthop: &str, rcpts: &[&str]) -> DeliveryRequest {
    DeliveryRequest {
        queue_id: env.queue_id.clone(),
        queue_dir: "active".into(),
        transport: "smtp".into(),
        nexthop: nexthop.into(),
        sender: "alice@example.test".into(),
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

/// Undoes dot-stuffing and drops the final dot.
fn unstuff(data: &[u8]) -> Vec<u8> {
    let text = data.strip_suffix(b".\r\n").expect("ends with the dot");
    let mut out = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

async fn tcp_server<F>(greeting: &'static str, answer: F) -> (u16, Arc<Mutex<Captured>>, tokio::task::JoinHandle<()>)
where
    F: FnMut(&str) -> String + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let captured = Arc::new(Mutex::new(Captured::default()));
    let c = captured.clone();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        fake(stream, greeting, answer, c).await;
    });
    (port, captured, task)
}

#[tokio::test]
async fn smtp_delivery_with_pipelining() {
    let env = queue_message(&["bob@example.com", "nobody@example.com"], BODY);
    let (port, captured, task) = tcp_server(
        "220 fake.example ESMTP",
        smtp_answers(|a| {
            if a.starts_with("nobody") {
                "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown\r\n".into()
            } else {
                accept_all(a)
            }
        }),
    )
    .await;
    let s = settings(env.dir.path(), false, &[]);
    let req = request(&env, &format!("[127.0.0.1]:{port}"), &["bob@example.com", "nobody@example.com"]);
    let resp = deliver(&s, &req).await;
    task.await.unwrap();
    let relay = format!("127.0.0.1[127.0.0.1]:{port}");
    assert_eq!(resp.statuses.len(), 2);
    let (ok, bad) = (&resp.statuses[0], &resp.statuses[1]);
    assert_eq!((ok.index, ok.outcome, ok.dsn.as_str()), (0, Outcome::Sent, "2.0.0"));
    assert_eq!(ok.reason, "250 2.0.0 Ok: queued as FAKE1");
    assert_eq!(ok.relay, relay);
    assert_eq!((bad.index, bad.outcome, bad.dsn.as_str()), (1, Outcome::Bounced, "5.1.1"));
    assert_eq!(
        bad.reason,
        "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown \
         (in reply to RCPT TO command)"
    );
    let got = captured.lock().unwrap().clone();
    assert_eq!(
        got.commands,
        [
            "EHLO mail.example.test",
            &format!("MAIL FROM:<alice@example.test> SIZE={}", BODY.len()),
            "RCPT TO:<bob@example.com>",
            "RCPT TO:<nobody@example.com>",
            "DATA",
            "QUIT"
        ]
    );
    assert!(
        got.data.starts_with(b"Subject: test\r\n\r\nline one\r\n..leading dot\r\n...two dots\r\n..\r\nlast\r\n.\r\n")
    );
    assert_eq!(unstuff(&got.data), BODY);
}

#[tokio::test]
async fn lmtp_over_a_unix_socket_below_the_queue_directory() {
    let env = queue_message(&["a@example.test", "b@example.test", "c@example.test"], BODY);
    std::fs::create_dir(env.dir.path().join("private")).unwrap();
    let listener = UnixListener::bind(env.dir.path().join("private/fake-lmtp")).unwrap();
    let captured = Arc::new(Mutex::new(Captured::default()));
    let c = captured.clone();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        // One reply per accepted recipient after the dot, in RCPT order.
        let dot = "250 2.0.0 <a@example.test> Saved\r\n452 4.2.2 <c@example.test> Quota exceeded\r\n";
        let mut smtp = smtp_answers(|a| {
            if a.starts_with('b') { "550 5.1.1 <b@example.test> User doesn't exist\r\n".into() } else { accept_all(a) }
        });
        let answer = move |line: &str| if line == "." { dot.to_string() } else { smtp(line) };
        fake(stream, "220 mail.example.test Dovecot ready.", answer, c).await;
    });
    let s = settings(env.dir.path(), true, &[]);
    let rcpts = ["a@example.test", "b@example.test", "c@example.test"];
    let resp = deliver(&s, &request(&env, "unix:private/fake-lmtp", &rcpts)).await;
    task.await.unwrap();
    let outcomes: Vec<_> = resp.statuses.iter().map(|s| (s.outcome, s.dsn.as_str())).collect();
    assert_eq!(outcomes, [(Outcome::Sent, "2.0.0"), (Outcome::Bounced, "5.1.1"), (Outcome::Deferred, "4.2.2")]);
    assert!(resp.statuses.iter().all(|s| s.relay == "mail.example.test[private/fake-lmtp]"));
    assert_eq!(resp.statuses[0].reason, "250 2.0.0 <a@example.test> Saved");
    assert_eq!(
        resp.statuses[2].reason,
        "host mail.example.test[private/fake-lmtp] said: 452 4.2.2 <c@example.test> Quota exceeded \
         (in reply to end of DATA command)"
    );
    let got = captured.lock().unwrap().clone();
    assert_eq!(got.commands[0], "LHLO mail.example.test");
    assert_eq!(got.commands.last().unwrap(), "QUIT");
    assert_eq!(unstuff(&got.data), BODY);
}

#[tokio::test]
async fn connection_refused_is_deferred() {
    let env = queue_message(&["a@example.com"], BODY);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = settings(env.dir.path(), false, &[]);
    let resp = deliver(&s, &request(&env, &format!("[127.0.0.1]:{port}"), &["a@example.com"])).await;
    let st = &resp.statuses[0];
    assert_eq!((st.outcome, st.dsn.as_str(), st.relay.as_str()), (Outcome::Deferred, "4.4.1", "none"));
    assert_eq!(st.reason, format!("connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"));

    let resp = deliver(&s, &request(&env, "unix:private/nobody-here", &["a@example.com"])).await;
    let st = &resp.statuses[0];
    assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Deferred, "4.4.1"));
    assert_eq!(st.reason, "connect to mail.example.test[private/nobody-here]: No such file or directory");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let env = queue_message(&["a@example.com"], BODY);
    let (port, _captured, task) = tcp_server("220 fake.example ESMTP", |_: &str| String::new()).await;
    let s = settings(env.dir.path(), false, &[("smtp_helo_timeout", "1s")]);
    let resp = deliver(&s, &request(&env, &format!("[127.0.0.1]:{port}"), &["a@example.com"])).await;
    task.abort();
    let st = &resp.statuses[0];
    assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Deferred, "4.4.2"));
    assert_eq!(st.reason, "conversation with 127.0.0.1[127.0.0.1] timed out while performing the EHLO handshake");
    assert_eq!(st.relay, format!("127.0.0.1[127.0.0.1]:{port}"));
}

#[tokio::test]
async fn a_server_that_hangs_up_defers() {
    let env = queue_message(&["a@example.com"], BODY);
    let mut answers = smtp_answers(accept_all);
    let (port, _captured, task) =
        tcp_server(
            "220 fake.example ESMTP",
            move |l: &str| {
                if l.starts_with("MAIL") { "CLOSE".into() } else { answers(l) }
            },
        )
        .await;
    let s = settings(env.dir.path(), false, &[]);
    let resp = deliver(&s, &request(&env, &format!("[127.0.0.1]:{port}"), &["a@example.com"])).await;
    task.await.unwrap();
    let st = &resp.statuses[0];
    assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Deferred, "4.4.2"));
    assert_eq!(st.reason, "lost connection with 127.0.0.1[127.0.0.1] while sending MAIL FROM");
}

/// A DNS server on loopback UDP that answers every query with SERVFAIL.
fn servfail_dns() -> std::net::SocketAddr {
    use hickory_proto::op::{Message, ResponseCode};
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::error_msg(q.metadata.id, q.metadata.op_code, ResponseCode::ServFail);
            r.queries = q.queries.clone();
            let _ = sock.send_to(&r.to_vec().unwrap(), peer);
        }
    });
    addr
}

#[tokio::test]
async fn what_cannot_be_delivered_yet_is_deferred_honestly() {
    let env = queue_message(&["a@example.com"], BODY);
    // The DNS server answers SERVFAIL: the MX lookup fails for now.
    let dns = servfail_dns();
    let s = settings(env.dir.path(), false, &[("dns_resolver_servers", &dns.to_string())]);
    let st = deliver(&s, &request(&env, "example.com", &["a@example.com"])).await.statuses.remove(0);
    assert_eq!((st.outcome, st.dsn.as_str(), st.relay.as_str()), (Outcome::Deferred, "4.4.3", "none"));
    assert_eq!(
        st.reason,
        "Host or domain name not found. Name service error for name=example.com type=MX: Host not found, try again"
    );

    // Mandatory TLS and a server without STARTTLS: deferred, the mail is never sent in clear.
    let s = settings(env.dir.path(), false, &[("smtp_tls_security_level", "encrypt")]);
    let (port, captured, _srv) = tcp_server("220 fake.example ESMTP", smtp_answers(accept_all)).await;
    let st = deliver(&s, &request(&env, &format!("[127.0.0.1]:{port}"), &["a@example.com"])).await.statuses.remove(0);
    assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Deferred, "4.7.4"));
    assert_eq!(st.reason, "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]");
    assert!(!captured.lock().unwrap().commands.iter().any(|c| c.starts_with("MAIL")));

    let mut req = request(&env, "[127.0.0.1]:1", &["a@example.com"]);
    req.queue_id = "0000000000000001".into();
    let st = deliver(&s, &req).await.statuses.remove(0);
    assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Deferred, "4.3.0"));
    req.queue_dir = "../etc".into();
    assert_eq!(deliver(&s, &req).await.statuses[0].outcome, Outcome::Deferred);
}

#[tokio::test]
async fn a_large_message_is_streamed_intact() {
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..20_000 {
        body.extend_from_slice(
            format!(".{i} a line that starts with a dot, and some more text to make it long\r\n").as_bytes(),
        );
    }
    let env = queue_message(&["a@example.com"], &body);
    let (port, captured, task) = tcp_server("220 fake.example ESMTP", smtp_answers(accept_all)).await;
    let s = settings(env.dir.path(), false, &[]);
    let resp = deliver(&s, &request(&env, &format!("[127.0.0.1]:{port}"), &["a@example.com"])).await;
    task.await.unwrap();
    assert_eq!(resp.statuses[0].outcome, Outcome::Sent);
    assert_eq!(unstuff(&captured.lock().unwrap().data), body);
}

#[tokio::test]
async fn one_request_one_response_over_ipc() {
    let env = queue_message(&["a@example.com"], BODY);
    let (port, _captured, task) = tcp_server("220 fake.example ESMTP", smtp_answers(accept_all)).await;
    let s = settings(env.dir.path(), false, &[]);
    let req = request(&env, &format!("[127.0.0.1]:{port}"), &["a@example.com"]);
    let (mut qmgr, agent) = tokio::net::UnixStream::pair().unwrap();
    let agent_task = tokio::spawn(async move { serve(&s, agent).await });
    // The request arrives in two pieces, as it may on a socket.
    let frame = rpost_ipc::encode(&req).unwrap();
    qmgr.write_all(&frame[..3]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    qmgr.write_all(&frame[3..]).await.unwrap();
    let mut bytes = Vec::new();
    qmgr.read_to_end(&mut bytes).await.unwrap();
    let mut dec = FrameDecoder::new();
    dec.feed(&bytes);
    let resp: DeliveryResponse = dec.decode().unwrap().unwrap();
    assert_eq!(resp.statuses.len(), 1);
    assert_eq!(resp.statuses[0].outcome, Outcome::Sent);
    assert!(dec.is_empty());
    agent_task.await.unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn connections_are_reused_with_rset() {
    // One accepted connection serves both deliveries: the second starts with RSET and goes
    // straight to MAIL FROM, and the idle connection is closed with QUIT after the cache
    // time limit.
    let first = queue_message(&["a@example.com"], BODY);
    let root = first.dir.path().to_path_buf();
    let second = {
        let q = Queue::new(&root);
        let mut env = Envelope::new("alice@example.test");
        env.recipients.push(Recipient::new("b@example.com"));
        let mut msg = q.create(&env).unwrap();
        msg.write_content(BODY).unwrap();
        let id = msg.commit().unwrap();
        q.move_to(&id, QueueDir::Incoming, QueueDir::Active).unwrap();
        id.as_str().to_owned()
    };
    let mut answers = smtp_answers(accept_all);
    let (port, captured, task) =
        tcp_server(
            "220 fake.example ESMTP",
            move |l: &str| {
                if l == "RSET" { "250 2.0.0 Ok\r\n".into() } else { answers(l) }
            },
        )
        .await;
    let s = settings(
        &root,
        false,
        &[("smtp_connection_cache_on_demand", "yes"), ("smtp_connection_cache_time_limit", "1s")],
    );
    let nexthop = format!("[127.0.0.1]:{port}");
    let resp = deliver(&s, &request(&first, &nexthop, &["a@example.com"])).await;
    assert_eq!(resp.statuses[0].outcome, Outcome::Sent, "{resp:?}");
    assert_eq!(s.cache.idle_count(), 1);
    let env2 = Env { dir: tempfile::tempdir().unwrap(), queue_id: second };
    let resp = deliver(&s, &request(&env2, &nexthop, &["b@example.com"])).await;
    assert_eq!(resp.statuses[0].outcome, Outcome::Sent, "{resp:?}");
    // The server quits after the idle limit; its task ends then.
    tokio::time::timeout(std::time::Duration::from_secs(30), task).await.unwrap().unwrap();
    let got = captured.lock().unwrap().clone();
    let size = BODY.len();
    assert_eq!(
        got.commands,
        [
            "EHLO mail.example.test".to_string(),
            format!("MAIL FROM:<alice@example.test> SIZE={size}"),
            "RCPT TO:<a@example.com>".into(),
            "DATA".into(),
            "RSET".into(),
            format!("MAIL FROM:<alice@example.test> SIZE={size}"),
            "RCPT TO:<b@example.com>".into(),
            "DATA".into(),
            "QUIT".into(),
        ]
    );
    assert_eq!(s.cache.idle_count(), 0);
}

#[tokio::test]
async fn lmtp_unix_sessions_are_reused_with_rset() {
    // As with TCP: lmtp-deliver's socket serves consecutive requests over one connection.
    let first = queue_message(&["a@example.test"], BODY);
    let root = first.dir.path().to_path_buf();
    let second = {
        let q = Queue::new(&root);
        let mut env = Envelope::new("alice@example.test");
        env.recipients.push(Recipient::new("b@example.test"));
        let mut msg = q.create(&env).unwrap();
        msg.write_content(BODY).unwrap();
        let id = msg.commit().unwrap();
        q.move_to(&id, QueueDir::Incoming, QueueDir::Active).unwrap();
        id.as_str().to_owned()
    };
    std::fs::create_dir(root.join("private")).unwrap();
    let listener = UnixListener::bind(root.join("private/fake-lmtp")).unwrap();
    let captured = Arc::new(Mutex::new(Captured::default()));
    let c = captured.clone();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut smtp = smtp_answers(accept_all);
        let answer = move |line: &str| match line {
            "." => "250 2.0.0 <x@example.test> Saved\r\n".to_string(),
            "RSET" => "250 2.0.0 OK\r\n".to_string(),
            l => smtp(l),
        };
        fake(stream, "220 mail.example.test LMTP ready.", answer, c).await;
    });
    let s = settings(
        &root,
        true,
        &[("lmtp_connection_cache_on_demand", "yes"), ("lmtp_connection_cache_time_limit", "1s")],
    );
    let resp = deliver(&s, &request(&first, "unix:private/fake-lmtp", &["a@example.test"])).await;
    assert_eq!(resp.statuses[0].outcome, Outcome::Sent, "{resp:?}");
    assert_eq!(s.unix_cache.idle_count(), 1);
    let env2 = Env { dir: tempfile::tempdir().unwrap(), queue_id: second };
    let resp = deliver(&s, &request(&env2, "unix:private/fake-lmtp", &["b@example.test"])).await;
    assert_eq!(resp.statuses[0].outcome, Outcome::Sent, "{resp:?}");
    tokio::time::timeout(std::time::Duration::from_secs(30), task).await.unwrap().unwrap();
    let got = captured.lock().unwrap().clone();
    let size = BODY.len();
    assert_eq!(
        got.commands,
        [
            "LHLO mail.example.test".to_string(),
            format!("MAIL FROM:<alice@example.test> SIZE={size}"),
            "RCPT TO:<a@example.test>".into(),
            "DATA".into(),
            "RSET".into(),
            format!("MAIL FROM:<alice@example.test> SIZE={size}"),
            "RCPT TO:<b@example.test>".into(),
            "DATA".into(),
            "QUIT".into(),
        ]
    );
    assert_eq!(s.unix_cache.idle_count(), 0);
}

/// A DNS server on loopback UDP answering from `zone` (name, record); NXDOMAIN otherwise.
fn zone_dns(zone: Vec<(&'static str, hickory_proto::rr::RData)>) -> std::net::SocketAddr {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::Record;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.queries = q.queries.clone();
            let Some(query) = q.queries.first() else { continue };
            let name = query.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
            let known = zone.iter().any(|(n, _)| *n == name);
            for (n, data) in &zone {
                if *n == name && data.record_type() == query.query_type {
                    r.answers.push(Record::from_rdata(query.name.clone(), 1, data.clone()));
                }
            }
            if !known {
                r.metadata.response_code = ResponseCode::NXDomain;
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), peer);
        }
    });
    addr
}

/// One scripted server on `addr:port` for one connection.
async fn server_at<F>(
    addr: &str,
    port: u16,
    greeting: &'static str,
    answer: F,
) -> (Arc<Mutex<Captured>>, tokio::task::JoinHandle<()>)
where
    F: FnMut(&str) -> String + Send + 'static,
{
    let listener = TcpListener::bind((addr, port)).await.unwrap();
    let captured = Arc::new(Mutex::new(Captured::default()));
    let c = captured.clone();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        fake(stream, greeting, answer, c).await;
    });
    (captured, task)
}

#[tokio::test]
async fn the_next_mx_after_temporary_trouble_not_after_a_refusal() {
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::{A, MX};
    let mx = |p: u16, h: &str| RData::MX(MX::new(p, hickory_proto::rr::Name::from_ascii(format!("{h}.")).unwrap()));
    let a = |ip: [u8; 4]| RData::A(A(ip.into()));
    let hosts = ["127.0.0.7", "127.0.0.8", "127.0.0.9", "127.0.0.10", "127.0.0.11"];
    let Some(port) = (0..50).find_map(|_| {
        let p = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        hosts.iter().all(|h| std::net::TcpListener::bind((*h, p)).is_ok()).then_some(p)
    }) else {
        eprintln!("no port free on 127.0.0.7-11: skipped");
        return;
    };
    let dns = zone_dns(vec![
        ("busy.test", mx(10, "s1.test")),
        ("busy.test", mx(20, "s2.test")),
        ("grey.test", mx(10, "s3.test")),
        ("grey.test", mx(20, "s4.test")),
        ("grey.test", mx(30, "s5.test")),
        ("refuse.test", mx(10, "s3.test")),
        ("refuse.test", mx(20, "s5.test")),
        ("s1.test", a([127, 0, 0, 7])),
        ("s2.test", a([127, 0, 0, 8])),
        ("s3.test", a([127, 0, 0, 9])),
        ("s4.test", a([127, 0, 0, 10])),
        ("s5.test", a([127, 0, 0, 11])),
    ]);
    let env = queue_message(&["a@x.test"], BODY);
    let s = settings(
        env.dir.path(),
        false,
        &[("dns_resolver_servers", &dns.to_string()), ("smtp_tcp_port", &port.to_string())],
    );

    // 421 greeting at the best MX: the next one takes it.
    let (c1, t1) = server_at("127.0.0.7", port, "421 4.3.2 s1 busy", |_: &str| String::new()).await;
    let (c2, t2) = server_at("127.0.0.8", port, "220 s2 ESMTP", smtp_answers(accept_all)).await;
    let st = deliver(&s, &request(&env, "busy.test", &["a@x.test"])).await.statuses.remove(0);
    t1.await.unwrap();
    t2.await.unwrap();
    assert_eq!((st.outcome, st.relay.as_str()), (Outcome::Sent, format!("s2.test[127.0.0.8]:{port}").as_str()));
    assert!(c1.lock().unwrap().commands.is_empty());
    assert_eq!(c2.lock().unwrap().commands.last().unwrap(), "QUIT");

    // 4xx to RCPT twice: smtp_mx_session_limit = 2 stops there, the third MX is not tried,
    // and the last server's words are the reason.
    let greylist = |_: &str| "450 4.7.1 Greylisted\r\n".to_string();
    let (_c3, t3) = server_at("127.0.0.9", port, "220 s3 ESMTP", smtp_answers(greylist)).await;
    let (_c4, t4) = server_at("127.0.0.10", port, "220 s4 ESMTP", smtp_answers(greylist)).await;
    let s5 = std::net::TcpListener::bind(("127.0.0.11", port)).unwrap();
    s5.set_nonblocking(true).unwrap();
    let st = deliver(&s, &request(&env, "grey.test", &["a@x.test"])).await.statuses.remove(0);
    t3.await.unwrap();
    t4.await.unwrap();
    assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Deferred, "4.7.1"));
    assert_eq!(st.reason, "host s4.test[127.0.0.10] said: 450 4.7.1 Greylisted (in reply to RCPT TO command)");
    assert!(s5.accept().is_err(), "the third MX is beyond smtp_mx_session_limit");

    // 5xx is final: no other MX is asked.
    let refuse = |_: &str| "550 5.1.1 No such user\r\n".to_string();
    let (_c3, t3) = server_at("127.0.0.9", port, "220 s3 ESMTP", smtp_answers(refuse)).await;
    let st = deliver(&s, &request(&env, "refuse.test", &["a@x.test"])).await.statuses.remove(0);
    t3.await.unwrap();
    assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Bounced, "5.1.1"));
    assert!(s5.accept().is_err(), "no second MX after a 5xx");
}

/// RFC 3461 through the delivery protocol: a server that advertises DSN gets NOTIFY and
/// takes over the success report (`next_hop_dsn`, so qmgr sends no "relayed" notice); one
/// that does not gets no DSN parameters, and qmgr must report "relayed" itself.
#[tokio::test]
async fn the_response_says_whether_the_next_hop_took_dsn() {
    for dsn in [true, false] {
        let env = queue_message(&["bob@example.com", "nobody@example.com"], BODY);
        let mut answers =
            smtp_answers(|a| if a.starts_with("nobody") { "550 5.1.1 unknown\r\n".into() } else { accept_all(a) });
        let answer = move |line: &str| {
            let r = answers(line);
            if !dsn && line.starts_with("EHLO") {
                r.replace("250-8BITMIME\r\n250 DSN\r\n", "250 8BITMIME\r\n")
            } else {
                r
            }
        };
        let (port, captured, task) = tcp_server("220 fake.example ESMTP", answer).await;
        let s = settings(env.dir.path(), false, &[]);
        let mut req = request(&env, &format!("[127.0.0.1]:{port}"), &["bob@example.com", "nobody@example.com"]);
        for r in &mut req.recipients {
            r.notify = Some(2 | 4);
        }
        let resp = deliver(&s, &req).await;
        task.await.unwrap();
        let (ok, bad) = (&resp.statuses[0], &resp.statuses[1]);
        assert_eq!((ok.outcome, bad.outcome), (Outcome::Sent, Outcome::Bounced));
        assert_eq!(ok.next_hop_dsn, dsn, "dsn advertised: {dsn}");
        assert!(!bad.next_hop_dsn, "a refusal is ours to report");
        let got = captured.lock().unwrap().clone();
        let rcpt = got.commands.iter().find(|c| c.starts_with("RCPT TO:<bob")).unwrap();
        assert_eq!(rcpt.contains(" NOTIFY=SUCCESS,FAILURE"), dsn, "{rcpt}");
    }
}

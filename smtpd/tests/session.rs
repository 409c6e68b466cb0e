//! In-process sessions: the real driver and session over an in-memory stream, with a real
//! queue in a temporary directory; no sockets, no rmaster.

use std::sync::Arc;

use rpost_config::Params;
use smtpd::server::{Shared, serve};
use smtpd::session::Client;
use smtpd::settings::Settings;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn shared(extra: &[(&str, &str)], queue: &std::path::Path) -> Arc<Shared> {
    let mut p = Params::empty();
    for (k, v) in [
        ("myhostname", "mx.example.test"),
        ("mydestination", "$myhostname"),
        ("virtual_mailbox_domains", "example.test"),
        ("local_recipient_maps", ""),
        ("alias_maps", ""),
        ("mynetworks", "127.0.0.0/8"),
    ] {
        p.set(k, v);
    }
    for (k, v) in extra {
        p.set(k, v);
    }
    rpost_queue::Queue::new(queue).ensure_dirs().unwrap();
    Arc::new(Shared::new(Settings::from_params(&p).unwrap(), queue.to_path_buf()))
}

/// Runs a session against `input` (all sent at once, as a pipelining client may) and returns
/// every reply line the server wrote.
async fn session(shared: Arc<Shared>, input: &[u8]) -> Vec<String> {
    let (client, server) = tokio::io::duplex(1 << 16);
    let peer = Client::new("127.0.0.1".parse().unwrap(), 4711, "localhost");
    let task = tokio::spawn(serve(shared, server, peer));
    let (rd, mut wr) = tokio::io::split(client);
    wr.write_all(input).await.unwrap();
    // End of input: a client that has said all it will say, or vanished.
    wr.shutdown().await.unwrap();
    let mut lines = Vec::new();
    let mut rd = BufReader::new(rd).lines();
    while let Ok(Some(l)) = rd.next_line().await {
        lines.push(l);
    }
    task.await.unwrap();
    lines
}

#[tokio::test]
async fn a_pipelined_transaction_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(&[], dir.path());
    let replies = session(
        sh,
        b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(replies[0], "220 mx.example.test ESMTP rpost");
    assert!(replies.iter().any(|l| l == "250 2.1.0 Ok"));
    assert!(replies.iter().any(|l| l == "354 End data with <CR><LF>.<CR><LF>"));
    let queued = replies.iter().find(|l| l.starts_with("250 2.0.0 Ok: queued as ")).expect("queued");
    let id = queued.rsplit(' ').next().unwrap();
    assert_eq!(replies.last().unwrap(), "221 2.0.0 Bye");
    let q = rpost_queue::Queue::new(dir.path());
    let f = q.open(rpost_queue::QueueDir::Incoming, &rpost_queue::QueueId::parse(id).unwrap()).unwrap();
    assert_eq!(f.envelope.sender, "a@c.example");
    assert_eq!(f.envelope.client.protocol, "ESMTP");
    assert!(String::from_utf8(f.content().unwrap()).unwrap().ends_with("Subject: x\r\n\r\nhi\r\n"));
}

#[tokio::test]
async fn a_silent_client_is_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(&[("smtpd_timeout", "1s")], dir.path());
    let (client, server) = tokio::io::duplex(1024);
    let peer = Client::new("127.0.0.1".parse().unwrap(), 1, "localhost");
    let task = tokio::spawn(serve(sh, server, peer));
    let mut rd = BufReader::new(client).lines();
    assert_eq!(rd.next_line().await.unwrap().unwrap(), "220 mx.example.test ESMTP rpost");
    assert_eq!(rd.next_line().await.unwrap().unwrap(), "421 4.4.2 mx.example.test Error: timeout exceeded");
    task.await.unwrap();
}

#[tokio::test]
async fn a_client_that_vanishes_mid_data_leaves_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(&[], dir.path());
    let replies = session(
        sh,
        b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<u@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhalf",
    )
    .await;
    assert!(replies.iter().any(|l| l.starts_with("354")));
    assert!(!replies.iter().any(|l| l.contains("queued as")));
    let q = rpost_queue::Queue::new(dir.path());
    assert!(q.scan(rpost_queue::QueueDir::Incoming).unwrap().is_empty());
    assert_eq!(std::fs::read_dir(dir.path().join("incoming")).unwrap().count(), 0, "the partial file is removed");
}

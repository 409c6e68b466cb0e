//! In-process STARTTLS deliveries: the real agent against a scripted SMTP server on loopback
//! TCP that really runs TLS (rustls, a self-signed certificate for localhost).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpost_config::Params;
use rpost_ipc::{DeliveryRecipient, DeliveryRequest, Outcome};
use rpost_queue::{Envelope, Queue, QueueDir, Recipient};
use smtp_client::deliver::{Agent, deliver};
use smtp_client::settings::Settings;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the scripted server treats STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Offers it and runs the handshake.
    Good,
    /// Does not offer it.
    NotOffered,
    /// Offers it, answers 454.
    Refuses,
    /// Offers it, answers 220, then sends garbage instead of a handshake (only on the
    /// first connection).
    BrokenHandshake,
}

/// What the server saw: per connection, the commands and whether TLS was on.
type Log = Arc<Mutex<Vec<(String, bool)>>>;

async fn serve_commands<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    tls: bool,
    offer: bool,
    log: &Log,
) -> Option<&'static str> {
    let mut in_data = false;
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if in_data {
            if line == ".\r\n" {
                in_data = false;
                s.get_mut().write_all(b"250 2.0.0 Ok: queued as TLSTEST\r\n").await.ok()?;
            }
            continue;
        }
        let cmd = line.trim_end().to_string();
        log.lock().unwrap().push((cmd.clone(), tls));
        let upper = cmd.to_ascii_uppercase();
        let reply: &str = if upper.starts_with("EHLO") {
            if offer {
                "250-fake.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
            } else {
                "250-fake.example\r\n250 PIPELINING\r\n"
            }
        } else if upper == "STARTTLS" {
            return Some("STARTTLS");
        } else if upper == "DATA" {
            in_data = true;
            "354 go ahead\r\n"
        } else if upper == "QUIT" {
            let _ = s.get_mut().write_all(b"221 bye\r\n").await;
            return None;
        } else {
            "250 2.0.0 Ok\r\n"
        };
        s.get_mut().write_all(reply.as_bytes()).await.ok()?;
    }
}

async fn server(mode: Mode, dir: &Path) -> (u16, Log) {
    let (cert, key, _) = rpost_tls::ensure_default_identity(dir, "localhost").unwrap();
    let cfg = rpost_tls::server_config(&rpost_tls::Identity::from_files(&cert, &key).unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((stream, _)) = listener.accept().await {
            let mut s = BufReader::new(stream);
            s.get_mut().write_all(b"220 fake.example ESMTP\r\n").await.unwrap();
            let offer = (first || mode != Mode::BrokenHandshake) && mode != Mode::NotOffered;
            if serve_commands(&mut s, false, offer, &l).await.is_none() {
                first = false;
                continue;
            }
            match mode {
                Mode::Refuses => {
                    s.get_mut().write_all(b"454 4.7.0 TLS not available due to local problem\r\n").await.unwrap();
                    serve_commands(&mut s, false, offer, &l).await;
                }
                Mode::BrokenHandshake if first => {
                    s.get_mut().write_all(b"220 2.0.0 Ready to start TLS\r\nthis is not TLS\r\n").await.unwrap();
                }
                _ => {
                    s.get_mut().write_all(b"220 2.0.0 Ready to start TLS\r\n").await.unwrap();
                    if let Ok(t) = rpost_tls::accept(cfg.clone(), s.into_inner(), Duration::from_secs(30)).await {
                        serve_commands(&mut BufReader::new(t), true, false, &l).await;
                    }
                }
            }
            first = false;
        }
    });
    (port, log)
}

struct Env {
    dir: tempfile::TempDir,
    queue_id: String,
}

fn queue_message() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::new(dir.path());
    q.ensure_dirs().unwrap();
    let mut env = Envelope::new("alice@example.test");
    env.recipients.push(Recipient::new("bob@example.com"));
    let mut msg = q.create(&env).unwrap();
    msg.write_content(b"Subject: tls\r\n\r\nhello\r\n").unwrap();
    let id = msg.commit().unwrap();
    q.move_to(&id, QueueDir::Incoming, QueueDir::Active).unwrap();
    Env { dir, queue_id: id.as_str().to_owned() }
}

fn agent(root: &Path, extra: &[(&str, &str)]) -> Agent {
    let mut p = Params::empty();
    p.set("myhostname", "mail.example.test");
    p.set("inet_protocols", "ipv4");
    p.set("smtp_connection_cache_on_demand", "no");
    p.set("dns_resolver_servers", "127.0.0.1:1");
    p.set("smtp_host_lookup", "native");
    for (k, v) in extra {
        p.set(k, v);
    }
    Agent::new(Settings::from_params(&p, false, root.to_path_buf()).unwrap())
}

async fn send(env: &Env, agent: &Agent, nexthop: &str) -> rpost_ipc::RecipientStatus {
    let req = DeliveryRequest {
        queue_id: env.queue_id.clone(),
        queue_dir: "active".into(),
        transport: "smtp".into(),
        nexthop: nexthop.into(),
        sender: "alice@example.test".into(),
        recipients: vec![DeliveryRecipient { index: 0, address: "bob@example.com".into(), orcpt: None, notify: None }],
        eight_bit: false,
        smtputf8: false,
        envid: None,
        ret_full: None,
    };
    deliver(agent, &req).await.statuses.remove(0)
}

fn mail_over_tls(log: &Log) -> Option<bool> {
    log.lock().unwrap().iter().find(|(c, _)| c.starts_with("MAIL FROM")).map(|(_, tls)| *tls)
}

#[tokio::test]
async fn may_uses_starttls_when_offered_and_says_ehlo_again() {
    let env = queue_message();
    let (port, log) = server(Mode::Good, env.dir.path()).await;
    let a = agent(env.dir.path(), &[("smtp_tls_security_level", "may")]);
    let st = send(&env, &a, &format!("[127.0.0.1]:{port}")).await;
    assert_eq!(st.outcome, Outcome::Sent, "{}", st.reason);
    assert_eq!(mail_over_tls(&log), Some(true));
    let cmds: Vec<(String, bool)> = log.lock().unwrap().clone();
    assert_eq!(cmds.iter().filter(|(c, _)| c.starts_with("EHLO")).count(), 2, "EHLO before and after TLS: {cmds:?}");
}

#[tokio::test]
async fn none_never_starts_tls() {
    let env = queue_message();
    let (port, log) = server(Mode::Good, env.dir.path()).await;
    let a = agent(env.dir.path(), &[]);
    let st = send(&env, &a, &format!("[127.0.0.1]:{port}")).await;
    assert_eq!(st.outcome, Outcome::Sent, "{}", st.reason);
    assert_eq!(mail_over_tls(&log), Some(false));
    assert!(!log.lock().unwrap().iter().any(|(c, _)| c == "STARTTLS"));
}

#[tokio::test]
async fn may_falls_back_to_plaintext_after_a_failed_handshake_or_refusal() {
    for mode in [Mode::BrokenHandshake, Mode::Refuses, Mode::NotOffered] {
        let env = queue_message();
        let (port, log) = server(mode, env.dir.path()).await;
        let a = agent(env.dir.path(), &[("smtp_tls_security_level", "may")]);
        let st = send(&env, &a, &format!("[127.0.0.1]:{port}")).await;
        assert_eq!(st.outcome, Outcome::Sent, "{mode:?}: {}", st.reason);
        assert_eq!(mail_over_tls(&log), Some(false), "{mode:?}");
    }
}

#[tokio::test]
async fn encrypt_defers_instead_of_sending_in_clear() {
    for (mode, dsn, reason) in [
        (Mode::NotOffered, "4.7.4", "TLS is required, but was not offered by host"),
        (Mode::Refuses, "4.7.5", "refused to start TLS: 454 4.7.0 TLS not available due to local problem"),
        (Mode::BrokenHandshake, "4.7.5", "Cannot start TLS: handshake failure"),
    ] {
        let env = queue_message();
        let (port, log) = server(mode, env.dir.path()).await;
        let a = agent(env.dir.path(), &[("smtp_tls_security_level", "encrypt")]);
        let st = send(&env, &a, &format!("[127.0.0.1]:{port}")).await;
        assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Deferred, dsn), "{mode:?}: {}", st.reason);
        assert!(st.reason.contains(reason), "{mode:?}: {}", st.reason);
        assert_eq!(mail_over_tls(&log), None, "{mode:?}: no MAIL in clear");
    }
}

#[tokio::test]
async fn verify_checks_the_chain_and_the_name() {
    let env = queue_message();
    let (port, log) = server(Mode::Good, env.dir.path()).await;
    let ca = env.dir.path().join("tls/rpost.pem").display().to_string();
    let a = agent(env.dir.path(), &[("smtp_tls_security_level", "verify"), ("smtp_tls_CAfile", &ca)]);
    // The certificate names localhost, not 127.0.0.1.
    let st = send(&env, &a, &format!("[127.0.0.1]:{port}")).await;
    assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Deferred, "4.7.5"), "{}", st.reason);
    assert_eq!(mail_over_tls(&log), None);
    let st = send(&env, &a, &format!("[localhost]:{port}")).await;
    assert_eq!(st.outcome, Outcome::Sent, "{}", st.reason);
    assert_eq!(mail_over_tls(&log), Some(true));
    // No CA file at all: nothing can be verified, the mail waits.
    let a = agent(env.dir.path(), &[("smtp_tls_security_level", "verify"), ("smtp_tls_CAfile", "/nonexistent/ca.pem")]);
    let st = send(&env, &a, &format!("[localhost]:{port}")).await;
    assert_eq!((st.outcome, st.dsn.as_str()), (Outcome::Deferred, "4.7.5"), "{}", st.reason);
}

//! In-process STARTTLS, implicit TLS and AUTH sessions: the real driver and session over an
//! in-memory stream, a real rustls client, and a small Dovecot-protocol auth server on a
//! UNIX socket in a temporary directory (it knows alice/secret).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rpost_config::Params;
use smtpd::server::{Shared, serve};
use smtpd::session::Client;
use smtpd::settings::Settings;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

const T: Duration = Duration::from_secs(30);

fn shared(extra: &[(&str, &str)], dir: &Path) -> Arc<Shared> {
    let queue = dir.join("queue");
    let mut p = Params::empty();
    rpost_tls::ensure_default_identity(dir, "mx.example.test").unwrap();
    for (k, v) in [
        ("myhostname", "mx.example.test"),
        ("mydestination", "$myhostname"),
        ("virtual_mailbox_domains", "example.test"),
        ("local_recipient_maps", ""),
        ("alias_maps", ""),
        ("mynetworks", "192.0.2.0/24"),
        ("config_directory", &dir.display().to_string()),
        ("smtpd_tls_security_level", "may"),
        ("smtpd_sasl_auth_enable", "yes"),
        ("smtpd_sasl_path", &dir.join("auth").display().to_string()),
    ] {
        p.set(k, v);
    }
    for (k, v) in extra {
        p.set(k, v);
    }
    rpost_queue::Queue::new(&queue).ensure_dirs().unwrap();
    Arc::new(Shared::new(Settings::from_params(&p).unwrap(), queue))
}

/// A Dovecot auth client-socket server that knows one user: PLAIN and LOGIN.
fn auth_server(dir: &Path) {
    let listener = tokio::net::UnixListener::bind(dir.join("auth")).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                use base64::Engine;
                let b64 = base64::engine::general_purpose::STANDARD;
                let (rd, mut wr) = s.into_split();
                wr.write_all(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nMECH\tANONYMOUS\tanonymous\nSPID\t1\nCUID\t1\nCOOKIE\t00\nDONE\n").await.unwrap();
                let mut lines = BufReader::new(rd).lines();
                let mut login_user: Option<String> = None;
                let check = |u: &str, p: &str| u == "alice" && p == "secret";
                while let Ok(Some(l)) = lines.next_line().await {
                    let f: Vec<&str> = l.split('\t').collect();
                    let reply = match f[0] {
                        "AUTH" => {
                            let id = f[1];
                            let resp = f.iter().find_map(|a| a.strip_prefix("resp="));
                            match (f[2], resp) {
                                ("PLAIN", None) => format!("CONT\t{id}\t\n"),
                                ("PLAIN", Some(r)) => plain(id, &b64.decode(r).unwrap_or_default(), check),
                                ("LOGIN", _) => format!("CONT\t{id}\t{}\n", b64.encode("Username:")),
                                _ => format!("FAIL\t{id}\treason=unsupported\n"),
                            }
                        }
                        "CONT" => {
                            let (id, data) = (f[1], b64.decode(f.get(2).unwrap_or(&"")).unwrap_or_default());
                            let data = String::from_utf8_lossy(&data).to_string();
                            match login_user.take() {
                                // PLAIN's response after an empty challenge, or LOGIN's user name.
                                None if data.contains('\0') => plain(id, data.as_bytes(), check),
                                None => {
                                    login_user = Some(data);
                                    format!("CONT\t{id}\t{}\n", b64.encode("Password:"))
                                }
                                Some(u) if check(&u, &data) => format!("OK\t{id}\tuser={u}\n"),
                                Some(u) => format!("FAIL\t{id}\tuser={u}\n"),
                            }
                        }
                        _ => continue,
                    };
                    if wr.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn plain(id: &str, data: &[u8], check: impl Fn(&str, &str) -> bool) -> String {
    let parts: Vec<String> = data.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).to_string()).collect();
    match parts.as_slice() {
        [_, u, p] if check(u, p) => format!("OK\t{id}\tuser={u}\n"),
        [_, u, _] => format!("FAIL\t{id}\tuser={u}\n"),
        _ => format!("FAIL\t{id}\treason=Invalid input\n"),
    }
}

/// The client end of a session: reads whole replies, writes lines.
struct Peer<S> {
    rd: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Peer<S> {
    async fn reply(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            let n = tokio::time::timeout(T, self.rd.read_line(&mut l)).await.unwrap().unwrap();
            assert!(n > 0, "connection closed; had {out:?}");
            let l = l.trim_end_matches(['\r', '\n']).to_string();
            let last = l.as_bytes().get(3) != Some(&b'-');
            out.push(l);
            if last {
                return out;
            }
        }
    }

    async fn send(&mut self, s: &str) -> Vec<String> {
        self.rd.get_mut().write_all(s.as_bytes()).await.unwrap();
        self.rd.get_mut().flush().await.unwrap();
        self.reply().await
    }

    /// Reads to the end: everything the server sent before closing.
    async fn rest(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut all = Vec::new();
        let _ = tokio::time::timeout(T, self.rd.read_to_end(&mut all)).await.unwrap();
        all
    }
}

fn start(sh: Arc<Shared>) -> Peer<tokio::io::DuplexStream> {
    let (client, server) = tokio::io::duplex(1 << 16);
    let peer = Client::new("198.51.100.7".parse().unwrap(), 4711, "unknown");
    tokio::spawn(serve(sh, server, peer));
    Peer { rd: BufReader::new(client) }
}

async fn tls(
    dir: &Path,
    p: Peer<tokio::io::DuplexStream>,
) -> Peer<rpost_tls::client::TlsStream<tokio::io::DuplexStream>> {
    let cfg =
        rpost_tls::client_config(rpost_tls::ClientLevel::Verify, Some(&dir.join("tls/rpost.pem"))).unwrap().unwrap();
    let s = rpost_tls::connect(cfg, "mx.example.test", p.rd.into_inner(), T).await.unwrap();
    Peer { rd: BufReader::new(s) }
}

#[tokio::test]
async fn starttls_discards_injected_plaintext_and_resets_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(&[("smtpd_helo_required", "yes")], dir.path());
    let mut p = start(sh);
    assert!(p.reply().await[0].starts_with("220 "));
    let ehlo = p.send("EHLO c.example\r\n").await;
    assert!(ehlo.iter().any(|l| l == "250-STARTTLS"), "{ehlo:?}");
    // CVE-2011-0411: commands in the same packet as STARTTLS must never be executed.
    let r = p.send("STARTTLS\r\nMAIL FROM:<evil@c.example>\r\n").await;
    assert_eq!(r, ["220 2.0.0 Ready to start TLS"]);
    let mut t = tls(dir.path(), p).await;
    // The EHLO before TLS is forgotten: MAIL needs a new one, and no injected MAIL is open.
    assert_eq!(t.send("MAIL FROM:<a@c.example>\r\n").await, ["503 5.5.1 Error: send HELO/EHLO first"]);
    let ehlo = t.send("EHLO c.example\r\n").await;
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "not offered twice: {ehlo:?}");
    assert_eq!(t.send("STARTTLS\r\n").await, ["554 5.5.1 Error: TLS already active"]);
    assert_eq!(t.send("MAIL FROM:<a@c.example>\r\n").await, ["250 2.1.0 Ok"]);
    assert_eq!(t.send("RCPT TO:<u@example.test>\r\n").await, ["250 2.1.5 Ok"]);
    assert_eq!(t.send("DATA\r\n").await[0], "354 End data with <CR><LF>.<CR><LF>");
    let r = t.send("Subject: t\r\n\r\nbody\r\n.\r\n").await;
    let id = r[0].strip_prefix("250 2.0.0 Ok: queued as ").expect("queued").to_string();
    assert_eq!(t.send("QUIT\r\n").await, ["221 2.0.0 Bye"]);
    let q = rpost_queue::Queue::new(dir.path().join("queue"));
    let f = q.open(rpost_queue::QueueDir::Incoming, &rpost_queue::QueueId::parse(&id).unwrap()).unwrap();
    let content = String::from_utf8(f.content().unwrap()).unwrap();
    assert!(content.contains("with ESMTPS id"), "{content}");
    assert!(!content.contains("(using TLS"), "smtpd_tls_received_header = no: {content}");
}

#[tokio::test]
async fn encrypt_level_refuses_mail_and_auth_before_starttls_and_records_tls() {
    let dir = tempfile::tempdir().unwrap();
    auth_server(dir.path());
    let sh = shared(&[("smtpd_tls_security_level", "encrypt"), ("smtpd_tls_received_header", "yes")], dir.path());
    let mut p = start(sh);
    p.reply().await;
    let ehlo = p.send("EHLO c.example\r\n").await;
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "no AUTH before TLS at encrypt: {ehlo:?}");
    assert_eq!(p.send("MAIL FROM:<a@c.example>\r\n").await, ["530 5.7.0 Must issue a STARTTLS command first"]);
    assert_eq!(p.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").await, ["530 5.7.0 Must issue a STARTTLS command first"]);
    p.send("STARTTLS\r\n").await;
    let mut t = tls(dir.path(), p).await;
    let ehlo = t.send("EHLO c.example\r\n").await;
    assert!(ehlo.iter().any(|l| l == "250-AUTH PLAIN LOGIN"), "{ehlo:?}");
    t.send("MAIL FROM:<a@c.example>\r\n").await;
    t.send("RCPT TO:<u@example.test>\r\n").await;
    t.send("DATA\r\n").await;
    let r = t.send("Subject: t\r\n\r\nbody\r\n.\r\n").await;
    let id = r[0].strip_prefix("250 2.0.0 Ok: queued as ").expect("queued").to_string();
    let q = rpost_queue::Queue::new(dir.path().join("queue"));
    let f = q.open(rpost_queue::QueueDir::Incoming, &rpost_queue::QueueId::parse(&id).unwrap()).unwrap();
    let content = String::from_utf8(f.content().unwrap()).unwrap();
    assert!(content.contains("\r\n\t(using TLSv1.3 with cipher TLS_"), "{content}");
    assert!(content.contains("bits))\r\n"), "{content}");
}

#[tokio::test]
async fn wrapper_mode_speaks_tls_from_the_first_byte() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(&[("smtpd_tls_wrappermode", "yes"), ("smtpd_tls_security_level", "")], dir.path());
    let p = start(sh);
    let cfg = rpost_tls::client_config(rpost_tls::ClientLevel::Encrypt, None).unwrap().unwrap();
    let s = rpost_tls::connect(cfg, "mx.example.test", p.rd.into_inner(), T).await.unwrap();
    let mut t = Peer { rd: BufReader::new(s) };
    assert_eq!(t.reply().await, ["220 mx.example.test ESMTP rpost"]);
    let ehlo = t.send("EHLO c.example\r\n").await;
    assert!(!ehlo.iter().any(|l| l.contains("STARTTLS")), "{ehlo:?}");
    assert_eq!(t.send("STARTTLS\r\n").await, ["554 5.5.1 Error: TLS already active"]);
}

#[tokio::test]
async fn wrapper_mode_drops_a_plaintext_client() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(&[("smtpd_tls_wrappermode", "yes")], dir.path());
    let mut p = start(sh);
    p.rd.get_mut().write_all(b"EHLO c.example\r\n").await.unwrap();
    let rest = p.rest().await;
    assert!(!rest.windows(3).any(|w| w == b"220"), "no plaintext greeting, no plaintext session: {rest:?}");
}

#[tokio::test]
async fn auth_dialogues() {
    let dir = tempfile::tempdir().unwrap();
    auth_server(dir.path());
    let sh = shared(&[("broken_sasl_auth_clients", "yes"), ("smtpd_sasl_authenticated_header", "yes")], dir.path());
    let mut p = start(sh);
    p.reply().await;
    let ehlo = p.send("EHLO c.example\r\n").await;
    assert!(ehlo.contains(&"250-AUTH PLAIN LOGIN".to_string()), "ANONYMOUS filtered (noanonymous): {ehlo:?}");
    assert!(ehlo.contains(&"250-AUTH=PLAIN LOGIN".to_string()), "{ehlo:?}");
    // Unknown mechanism, bad base64, cancel, wrong password.
    assert_eq!(p.send("AUTH ANONYMOUS\r\n").await, ["504 5.5.4 Unsupported authentication mechanism"]);
    assert_eq!(p.send("AUTH PLAIN not-base64!\r\n").await, ["501 5.5.2 Cannot decode response"]);
    assert_eq!(p.send("AUTH LOGIN\r\n").await, ["334 VXNlcm5hbWU6"]);
    assert_eq!(p.send("*\r\n").await, ["501 5.7.0 Authentication aborted"]);
    assert_eq!(
        p.send("AUTH PLAIN AGFsaWNlAHdyb25n\r\n").await,
        ["535 5.7.8 Error: authentication failed: authentication failure"]
    );
    // "=" is an empty initial response; PLAIN with an empty challenge; then LOGIN.
    assert_eq!(p.send("AUTH PLAIN =\r\n").await, ["535 5.7.8 Error: authentication failed: Invalid input"]);
    assert_eq!(p.send("AUTH PLAIN\r\n").await, ["334 "]);
    assert_eq!(
        p.send("AGFsaWNlAHdyb25n\r\n").await[0],
        "535 5.7.8 Error: authentication failed: authentication failure"
    );
    assert_eq!(p.send("AUTH LOGIN\r\n").await, ["334 VXNlcm5hbWU6"]);
    assert_eq!(p.send("YWxpY2U=\r\n").await, ["334 UGFzc3dvcmQ6"]);
    assert_eq!(p.send("c2VjcmV0\r\n").await, ["235 2.7.0 Authentication successful"]);
    assert_eq!(p.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").await, ["503 5.5.1 Error: already authenticated"]);
    // Authenticated: relaying to a foreign domain is allowed (permit_sasl_authenticated).
    assert_eq!(p.send("MAIL FROM:<alice@example.test>\r\n").await, ["250 2.1.0 Ok"]);
    assert_eq!(p.send("RCPT TO:<someone@elsewhere.example>\r\n").await, ["250 2.1.5 Ok"]);
    p.send("DATA\r\n").await;
    let r = p.send("Subject: t\r\n\r\nbody\r\n.\r\n").await;
    let id = r[0].strip_prefix("250 2.0.0 Ok: queued as ").expect("queued").to_string();
    let q = rpost_queue::Queue::new(dir.path().join("queue"));
    let f = q.open(rpost_queue::QueueDir::Incoming, &rpost_queue::QueueId::parse(&id).unwrap()).unwrap();
    assert_eq!(f.envelope.client.sasl_username.as_deref(), Some("alice"));
    let content = String::from_utf8(f.content().unwrap()).unwrap();
    assert!(content.contains("(Authenticated sender: alice)\r\n\tby mx.example.test"), "{content}");
    assert!(content.contains("with ESMTPA id"), "{content}");
}

#[tokio::test]
async fn relay_without_auth_is_denied_and_auth_only_hides_auth_before_tls() {
    let dir = tempfile::tempdir().unwrap();
    auth_server(dir.path());
    let sh = shared(&[("smtpd_tls_auth_only", "yes")], dir.path());
    let mut p = start(sh);
    p.reply().await;
    let ehlo = p.send("EHLO c.example\r\n").await;
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    assert_eq!(
        p.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").await,
        ["538 5.7.11 Encryption required for requested authentication mechanism"]
    );
    p.send("MAIL FROM:<a@c.example>\r\n").await;
    assert_eq!(
        p.send("RCPT TO:<someone@elsewhere.example>\r\n").await,
        ["554 5.7.1 <someone@elsewhere.example>: Relay access denied"]
    );
    p.send("RSET\r\n").await;
    p.send("STARTTLS\r\n").await;
    let mut t = tls(dir.path(), p).await;
    let ehlo = t.send("EHLO c.example\r\n").await;
    assert!(ehlo.iter().any(|l| l == "250-AUTH PLAIN LOGIN"), "{ehlo:?}");
    assert_eq!(t.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").await, ["235 2.7.0 Authentication successful"]);
}

#[tokio::test]
async fn sender_login_maps() {
    let dir = tempfile::tempdir().unwrap();
    auth_server(dir.path());
    let map = dir.path().join("logins");
    std::fs::write(&map, "alice@example.test alice\nbob@example.test bob\n").unwrap();
    let spec = format!("texthash:{}", map.display());
    let sh = shared(
        &[("smtpd_sender_login_maps", &spec), ("smtpd_sender_restrictions", "reject_sender_login_mismatch")],
        dir.path(),
    );
    // Unauthenticated use of an owned address.
    let mut p = start(sh.clone());
    p.reply().await;
    p.send("EHLO c.example\r\n").await;
    p.send("MAIL FROM:<bob@example.test>\r\n").await;
    assert_eq!(
        p.send("RCPT TO:<u@example.test>\r\n").await,
        ["553 5.7.1 <bob@example.test>: Sender address rejected: not logged in"]
    );
    // alice may send as alice, not as bob, nor as an address nobody owns.
    let mut p = start(sh);
    p.reply().await;
    p.send("EHLO c.example\r\n").await;
    assert_eq!(p.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").await[0], "235 2.7.0 Authentication successful");
    for (from, ok) in [("alice@example.test", true), ("bob@example.test", false), ("nobody@example.test", false)] {
        p.send(&format!("MAIL FROM:<{from}>\r\n")).await;
        let r = p.send("RCPT TO:<u@example.test>\r\n").await;
        if ok {
            assert_eq!(r, ["250 2.1.5 Ok"]);
        } else {
            assert_eq!(r, [format!("553 5.7.1 <{from}>: Sender address rejected: not owned by user alice")]);
        }
        p.send("RSET\r\n").await;
    }
}

#[tokio::test]
async fn an_unreachable_auth_server_means_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let sh = shared(&[], dir.path());
    let mut p = start(sh);
    p.reply().await;
    let ehlo = p.send("EHLO c.example\r\n").await;
    assert!(!ehlo.iter().any(|l| l.contains("AUTH")), "{ehlo:?}");
    assert_eq!(p.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").await[0], "454 4.7.0 Temporary authentication failure");
}

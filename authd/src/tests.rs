//! In-process tests of the connection handlers over an in-memory stream.

use std::sync::Arc;
use std::time::Duration;

use rpost_auth_proto::{
    AuthRequest, ClientConnection, ClientUpdate, MasterClient, MasterReply, ServerReply, b64_encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::db::Db;
use crate::server::{Auth, Settings, serve_client, serve_userdb};

fn users_file() -> (tempfile_dir::Dir, String) {
    let d = tempfile_dir::Dir::new();
    let cram = rpost_password::generate("CRAM-MD5", b"cramsecret").unwrap();
    let sha = rpost_password::generate("SHA512-CRYPT", b"hashsecret").unwrap();
    let path = d.write(
        "users",
        &format!(
            "alice@example.com:{{PLAIN}}plainsecret:5000:5000::/var/vmail/example.com/alice::\n\
             carol@example.com:{cram}::::::\nbob@example.com:{sha}::::::userdb_uid=6000\n"
        ),
    );
    (d, format!("passwd-file:{path}"))
}

mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let mut r = [0u8; 8];
            getrandom::getrandom(&mut r).unwrap();
            let p = std::env::temp_dir().join(format!("authd-test-{}", u64::from_le_bytes(r)));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn write(&self, name: &str, text: &str) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn auth(spec: &str, disable_plaintext: bool) -> Arc<Auth> {
    let settings = Settings {
        mechs: vec!["PLAIN".into(), "LOGIN".into(), "CRAM-MD5".into()],
        failure_delay: Duration::ZERO,
        disable_plaintext,
        hostname: "mail.example.test".into(),
    };
    Arc::new(Auth::new(settings, Db::from_specs(Some(spec), None).unwrap()))
}

struct Client {
    io: DuplexStream,
    conn: ClientConnection,
}

impl Client {
    async fn connect(auth: Arc<Auth>) -> Client {
        let (a, b) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_client(auth, b));
        let (conn, hello) = ClientConnection::new(1);
        let mut c = Client { io: a, conn };
        c.io.write_all(hello.as_bytes()).await.unwrap();
        assert_eq!(c.next().await, ClientUpdate::Ready);
        c
    }

    async fn next(&mut self) -> ClientUpdate {
        loop {
            if let Some(u) = self.conn.poll().unwrap() {
                return u;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(30), self.io.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "server closed");
            self.conn.feed(&buf[..n]);
        }
    }

    async fn send(&mut self, line: String) {
        self.io.write_all(line.as_bytes()).await.unwrap();
    }

    async fn plain(&mut self, user: &str, pass: &str, rip: &str, secured: bool) -> ServerReply {
        let mut req = AuthRequest::new(0, "PLAIN", "smtp")
            .with("lip", Some("192.0.2.100"))
            .with("rip", Some(rip))
            .with("resp", Some(&b64_encode(format!("\0{user}\0{pass}").as_bytes())));
        if secured {
            req = req.with("secured", None);
        }
        let (_, line) = self.conn.auth(req);
        self.send(line).await;
        match self.next().await {
            ClientUpdate::Reply(r) => r,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn plain_login_and_cram_md5() {
    let (_d, spec) = users_file();
    let a = auth(&spec, true);
    let mut c = Client::connect(a.clone()).await;
    assert_eq!(c.conn.mechanisms().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["PLAIN", "LOGIN", "CRAM-MD5"]);
    // User names are normalised by auth_username_format (%Lu).
    let r = c.plain("Alice@Example.com", "plainsecret", "127.0.0.1", false).await;
    assert!(matches!(&r, ServerReply::Ok { user, .. } if user == "alice@example.com"), "{r:?}");
    let r = c.plain("bob@example.com", "hashsecret", "192.0.2.7", true).await;
    assert!(matches!(r, ServerReply::Ok { .. }), "{r:?}");
    let r = c.plain("bob@example.com", "wrong", "192.0.2.7", true).await;
    assert!(matches!(&r, ServerReply::Fail(f) if !f.temp), "{r:?}");
    let r = c.plain("nobody@example.com", "x", "192.0.2.8", true).await;
    assert!(matches!(r, ServerReply::Fail(_)), "{r:?}");
    // disable_plaintext_auth: a remote client on a non-secured connection is refused.
    let r = c.plain("alice@example.com", "plainsecret", "192.0.2.9", false).await;
    assert!(matches!(&r, ServerReply::Fail(f) if f.reason.as_deref().unwrap_or("").contains("Plaintext")), "{r:?}");

    // LOGIN, without an initial response.
    let (id, line) = c.conn.auth(AuthRequest::new(0, "LOGIN", "smtp").with("rip", Some("127.0.0.1")));
    c.send(line).await;
    assert_eq!(c.next().await, ClientUpdate::Reply(ServerReply::Cont { id, data: b64_encode(b"Username:") }));
    c.send(c.conn.cont(id, &b64_encode(b"alice@example.com"))).await;
    assert_eq!(c.next().await, ClientUpdate::Reply(ServerReply::Cont { id, data: b64_encode(b"Password:") }));
    c.send(c.conn.cont(id, &b64_encode(b"plainsecret"))).await;
    assert!(matches!(c.next().await, ClientUpdate::Reply(ServerReply::Ok { .. })));

    // CRAM-MD5 for a {CRAM-MD5} user, a {PLAIN} user, and (refused) a hashed one.
    for (user, pass, ok) in [
        ("carol@example.com", "cramsecret", true),
        ("alice@example.com", "plainsecret", true),
        ("bob@example.com", "hashsecret", false),
        ("carol@example.com", "bad", false),
    ] {
        let (id, line) = c.conn.auth(AuthRequest::new(0, "CRAM-MD5", "imap").with("rip", Some("192.0.2.20")));
        c.send(line).await;
        let ClientUpdate::Reply(ServerReply::Cont { data, .. }) = c.next().await else { panic!() };
        let challenge = rpost_auth_proto::b64_decode(&data).unwrap();
        let digest = rpost_password::cram_md5_digest(&rpost_password::cram_md5_context(pass.as_bytes()), &challenge);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        c.send(c.conn.cont(id, &b64_encode(format!("{user} {hex}").as_bytes()))).await;
        let r = c.next().await;
        assert_eq!(matches!(r, ClientUpdate::Reply(ServerReply::Ok { .. })), ok, "{user}: {r:?}");
    }
    // Bad base64, unsupported mechanism, cancel.
    let (_, line) = c.conn.auth(AuthRequest::new(0, "PLAIN", "smtp").with("resp", Some("!!!")));
    c.send(line).await;
    assert!(
        matches!(c.next().await, ClientUpdate::Reply(ServerReply::Fail(f)) if f.code.as_deref() == Some("invalid_base64"))
    );
    let (_, line) = c.conn.auth(AuthRequest::new(0, "GSSAPI", "smtp"));
    c.send(line).await;
    assert!(matches!(c.next().await, ClientUpdate::Reply(ServerReply::Fail(_))));
    let (id, line) = c.conn.auth(AuthRequest::new(0, "LOGIN", "smtp"));
    c.send(line).await;
    c.next().await;
    c.send(c.conn.cont(id, "*")).await;
    assert!(matches!(c.next().await, ClientUpdate::Reply(ServerReply::Fail(_))));
}

#[tokio::test]
async fn penalty_counts_per_address() {
    let (_d, spec) = users_file();
    let a = auth(&spec, false);
    let mut c = Client::connect(a.clone()).await;
    for _ in 0..3 {
        assert!(matches!(c.plain("alice@example.com", "bad", "198.51.100.1", false).await, ServerReply::Fail(_)));
        // No penalty for the first request above: it was the first from the address. The
        // later ones waited (in their own task); the others' address is untouched:
    }
    let ip = crate::penalty::key("198.51.100.1").unwrap();
    assert_eq!(a.penalty.delay(ip, std::time::Instant::now()), Duration::from_secs(8));
    let other = crate::penalty::key("198.51.100.2").unwrap();
    assert_eq!(a.penalty.delay(other, std::time::Instant::now()), Duration::ZERO);
    assert!(matches!(c.plain("alice@example.com", "plainsecret", "198.51.100.2", false).await, ServerReply::Ok { .. }));
}

#[tokio::test]
async fn protocol_errors_disconnect() {
    let (_d, spec) = users_file();
    let (mut io, b) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(serve_client(auth(&spec, false), b));
    io.write_all(b"AUTH\t1\tPLAIN\tservice=smtp\n").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}

#[tokio::test]
async fn userdb_protocol() {
    let (_d, spec) = users_file();
    let (mut io, b) = tokio::io::duplex(64 * 1024);
    tokio::spawn(serve_userdb(auth(&spec, false), b));
    let (mut mc, hello) = MasterClient::new();
    let (_, u1) = mc.user("Alice@example.com", "lmtp");
    let (_, u2) = mc.user("zed@example.com", "lmtp");
    let (_, p1) = mc.pass("bob@example.com", "lmtp");
    let (_, l1) = mc.list(vec![]);
    io.write_all(format!("{hello}{u1}{u2}{p1}{l1}").as_bytes()).await.unwrap();
    let mut replies = Vec::new();
    let mut all = String::new();
    while replies.len() < 7 {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), io.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        all.push_str(&String::from_utf8_lossy(&buf[..n]));
        mc.feed(&buf[..n]);
        while let Some(r) = mc.poll().unwrap() {
            replies.push(r);
        }
    }
    let MasterReply::User { user, fields, .. } = &replies[0] else { panic!("{replies:?}") };
    assert_eq!(user, "alice@example.com");
    assert_eq!(rpost_auth_proto::param(fields, "home"), Some("/var/vmail/example.com/alice"));
    assert_eq!(replies[1], MasterReply::NotFound { id: 2 });
    assert!(
        matches!(&replies[2], MasterReply::Pass { fields, .. } if rpost_auth_proto::param(fields, "user") == Some("bob@example.com"))
    );
    assert!(!all.contains("$6$") && !all.contains("plainsecret"), "no password data on the userdb socket: {all}");
    let listed: Vec<&MasterReply> = replies[3..].iter().collect();
    assert_eq!(
        listed,
        [
            &MasterReply::ListUser { id: 4, user: "alice@example.com".into() },
            &MasterReply::ListUser { id: 4, user: "carol@example.com".into() },
            &MasterReply::ListUser { id: 4, user: "bob@example.com".into() },
            &MasterReply::ListDone { id: 4, failed: false },
        ]
    );
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// A SCRAM-SHA-256 client run against authd; returns the final reply.
async fn scram(c: &mut Client, user: &str, pass: &str) -> ServerReply {
    let bare = format!("n={user},r=clientnonce123");
    let (id, line) = c.conn.auth(
        AuthRequest::new(0, "SCRAM-SHA-256", "imap").with("resp", Some(&b64_encode(format!("n,,{bare}").as_bytes()))),
    );
    c.send(line).await;
    let first = match c.next().await {
        ClientUpdate::Reply(ServerReply::Cont { data, .. }) => {
            String::from_utf8(rpost_auth_proto::b64_decode(&data).unwrap()).unwrap()
        }
        ClientUpdate::Reply(r) => return r,
        other => panic!("{other:?}"),
    };
    let mut nonce = "";
    let mut salt = Vec::new();
    let mut iter = 0;
    for f in first.split(',') {
        match f.split_at(2) {
            ("r=", v) => nonce = v,
            ("s=", v) => salt = rpost_auth_proto::b64_decode(v).unwrap(),
            ("i=", v) => iter = v.parse().unwrap(),
            _ => {}
        }
    }
    assert!(nonce.starts_with("clientnonce123") && nonce.len() > 20, "{first}");
    let salted = rpost_password::scram_salted_password(pass.as_bytes(), &salt, iter);
    let client_key = hmac256(&salted, b"Client Key");
    let stored: Vec<u8> = <sha2::Sha256 as sha2::Digest>::digest(&client_key).to_vec();
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{bare},{first},{without_proof}");
    let sig = hmac256(&stored, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(sig).map(|(a, b)| a ^ b).collect();
    c.send(c.conn.cont(id, &b64_encode(format!("{without_proof},p={}", b64_encode(&proof)).as_bytes()))).await;
    match c.next().await {
        ClientUpdate::Reply(ServerReply::Cont { data, .. }) => {
            let fin = String::from_utf8(rpost_auth_proto::b64_decode(&data).unwrap()).unwrap();
            let server_key = hmac256(&salted, b"Server Key");
            assert_eq!(
                fin,
                format!("v={}", b64_encode(&hmac256(&server_key, auth_message.as_bytes()))),
                "server proof"
            );
            c.send(c.conn.cont(id, "")).await;
            match c.next().await {
                ClientUpdate::Reply(r) => r,
                other => panic!("{other:?}"),
            }
        }
        ClientUpdate::Reply(r) => r,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn scram_sha_256() {
    let d = tempfile_dir::Dir::new();
    let stored = rpost_password::generate("SCRAM-SHA-256", b"scramsecret").unwrap();
    let sha = rpost_password::generate("SHA512-CRYPT", b"x").unwrap();
    let path = d.write(
        "users",
        &format!("dave@example.com:{stored}::::::\nalice@example.com:{{PLAIN}}plainsecret::::::\nbob@example.com:{sha}::::::\n"),
    );
    let settings = Settings {
        mechs: vec!["SCRAM-SHA-256".into()],
        failure_delay: Duration::ZERO,
        disable_plaintext: true,
        hostname: "h".into(),
    };
    let a = Arc::new(Auth::new(settings, Db::from_specs(Some(&format!("passwd-file:{path}")), None).unwrap()));
    let mut c = Client::connect(a).await;
    assert!(
        matches!(scram(&mut c, "dave@example.com", "scramsecret").await, ServerReply::Ok { user, .. } if user == "dave@example.com")
    );
    assert!(matches!(scram(&mut c, "alice@example.com", "plainsecret").await, ServerReply::Ok { .. }));
    assert!(matches!(scram(&mut c, "dave@example.com", "wrong").await, ServerReply::Fail(_)));
    assert!(
        matches!(scram(&mut c, "bob@example.com", "x").await, ServerReply::Fail(_)),
        "a one-way hash cannot serve SCRAM"
    );
    assert!(matches!(scram(&mut c, "nobody@example.com", "x").await, ServerReply::Fail(_)));
}

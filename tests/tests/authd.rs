//! authd end to end: the real rmaster starts authd on private/auth, and these tests speak
//! Dovecot's auth client protocol to it by hand (no shared client code, so both sides are
//! checked independently): PLAIN, LOGIN, CRAM-MD5, unknown users, the per-address penalty
//! under a flood, the auth-userdb socket, `rmaster auth test`, `rmaster pw` against Debian's
//! `doveadm pw`, and that no secret ever reaches the log (authd runs with -v).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rpost_testkit::Suite;

const ALICE_PW: &str = "Alice-Plain-7x!";
const BOB_PW: &str = "Bob-Hashed-9q#";
const CAROL_PW: &str = "Carol-Cram-3k%";

fn b64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = bits << 6 | T.iter().position(|&t| t == c).expect("base64") as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// A hand-written auth client.
struct Auth {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    handshake: Vec<String>,
}

impl Auth {
    fn connect(path: &Path) -> Auth {
        let s = UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut a = Auth { writer: s.try_clone().unwrap(), reader: BufReader::new(s), handshake: Vec::new() };
        a.send("VERSION\t1\t2\nCPID\t4242\n");
        loop {
            let line = a.line();
            let done = line == "DONE";
            a.handshake.push(line);
            if done {
                return a;
            }
        }
    }

    fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        assert!(self.reader.read_line(&mut l).unwrap() > 0, "authd closed the connection");
        l.trim_end_matches('\n').to_string()
    }

    fn plain(&mut self, id: u32, user: &str, pass: &str, rip: &str) -> String {
        let resp = b64(format!("\0{user}\0{pass}").as_bytes());
        self.send(&format!("AUTH\t{id}\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip={rip}\tresp={resp}\n"));
        self.line()
    }
}

fn users(bob_hash: &str, carol_hash: &str) -> String {
    format!(
        "alice@example.test:{{PLAIN}}{ALICE_PW}:5000:5000::/var/vmail/example.test/alice::\n\
         bob@example.test:{bob_hash}::::::userdb_quota_rule=*:storage=1G\n\
         carol@example.test:{carol_hash}::::::\n"
    )
}

/// A suite with authd (verbose) on private/auth and private/auth-userdb; hashes made by
/// our own `rmaster pw`.
fn suite(failure_delay: &str) -> (Suite, Vec<String>) {
    let prepared = Suite::builder()
        .main("auth_passdb", "passwd-file:{root}/etc/users")
        .main("auth_userdb", "static:uid=5000 gid=5000 home=/var/vmail/%d/%n")
        .main("auth_mechanisms", "plain login cram-md5")
        .main("auth_failure_delay", failure_delay)
        .master_line("auth unix - - n - 1 authd -v")
        .master_line("auth-userdb unix - - n - 1 authd -v userdb")
        .prepare();
    let pw = |scheme: &str, pass: &str| {
        let out = prepared.rmaster(&["pw", "-s", scheme, "-p", pass]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let bob = pw("SHA512-CRYPT", BOB_PW);
    assert!(bob.starts_with("{SHA512-CRYPT}$6$"), "{bob}");
    let carol = pw("CRAM-MD5", CAROL_PW);
    prepared.write_config("users", &users(&bob, &carol));
    let secrets = vec![
        ALICE_PW.to_string(),
        BOB_PW.to_string(),
        CAROL_PW.to_string(),
        bob,
        carol.trim_start_matches("{CRAM-MD5}").to_string(),
    ];
    (prepared.start_prepared(), secrets)
}

fn socket(s: &Suite, name: &str) -> std::path::PathBuf {
    s.queue_dir().join("private").join(name)
}

fn assert_no_secrets(s: &Suite, secrets: &[String]) {
    let log = s.log();
    assert!(log.contains("authd"), "authd logged nothing?\n{log}");
    for secret in secrets {
        assert!(!log.contains(secret.as_str()), "secret {secret:?} in the log:\n{log}");
        let b = b64(secret.as_bytes());
        assert!(!log.contains(&b), "base64 of a secret in the log");
    }
}

fn hmac_md5_hex(key: &str, data: &[u8]) -> Option<String> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-md5", "-hmac", key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(data).ok()?;
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.rsplit(' ').next()?.trim().to_string())
}

#[test]
fn plain_login_cram_md5_and_failures() {
    let (s, secrets) = suite("0");
    let mut a = Auth::connect(&socket(&s, "auth"));
    assert_eq!(a.handshake[0], "VERSION\t1\t2");
    assert!(a.handshake.contains(&"MECH\tPLAIN\tplaintext".to_string()), "{:?}", a.handshake);
    assert!(a.handshake.contains(&"MECH\tLOGIN\tplaintext".to_string()));
    assert!(a.handshake.iter().any(|l| l.starts_with("MECH\tCRAM-MD5")));
    assert!(a.handshake.iter().any(|l| l.starts_with("SPID\t")));
    assert!(a.handshake.iter().any(|l| l.starts_with("CUID\t")));
    assert!(a.handshake.iter().any(|l| l.starts_with("COOKIE\t") && l.len() == "COOKIE\t".len() + 32));

    // PLAIN: plaintext and SHA512-CRYPT users; the name is normalised (%Lu).
    assert_eq!(a.plain(1, "Alice@Example.TEST", ALICE_PW, "127.0.0.1"), "OK\t1\tuser=alice@example.test");
    assert_eq!(a.plain(2, "bob@example.test", BOB_PW, "127.0.0.1"), "OK\t2\tuser=bob@example.test");
    assert_eq!(a.plain(3, "bob@example.test", "wrong", "127.0.0.1"), "FAIL\t3\tuser=bob@example.test");
    assert_eq!(a.plain(4, "nobody@example.test", "x", "127.0.0.1"), "FAIL\t4\tuser=nobody@example.test");
    // disable_plaintext_auth (default yes): remote and not secured is refused...
    let r = a.plain(5, "alice@example.test", ALICE_PW, "192.0.2.5");
    assert!(r.starts_with("FAIL\t5\t") && r.contains("Plaintext authentication disallowed"), "{r}");
    // ...secured is fine.
    let resp = b64(format!("\0alice@example.test\0{ALICE_PW}").as_bytes());
    a.send(&format!("AUTH\t6\tPLAIN\tservice=smtp\tlip=192.0.2.1\trip=192.0.2.5\tsecured\tresp={resp}\n"));
    assert_eq!(a.line(), "OK\t6\tuser=alice@example.test");

    // LOGIN without an initial response.
    a.send("AUTH\t7\tLOGIN\tservice=smtp\tlip=127.0.0.1\trip=127.0.0.1\n");
    assert_eq!(a.line(), format!("CONT\t7\t{}", b64(b"Username:")));
    a.send(&format!("CONT\t7\t{}\n", b64(b"bob@example.test")));
    assert_eq!(a.line(), format!("CONT\t7\t{}", b64(b"Password:")));
    a.send(&format!("CONT\t7\t{}\n", b64(BOB_PW.as_bytes())));
    assert_eq!(a.line(), "OK\t7\tuser=bob@example.test");
    a.send("AUTH\t8\tLOGIN\tservice=smtp\n");
    a.line();
    a.send(&format!("CONT\t8\t{}\n", b64(b"alice@example.test")));
    a.line();
    a.send(&format!("CONT\t8\t{}\n", b64(b"nope")));
    assert!(a.line().starts_with("FAIL\t8"));

    // CRAM-MD5: {CRAM-MD5} and {PLAIN} users work; a SHA512-CRYPT user cannot.
    if Command::new("openssl").arg("version").output().is_ok() {
        for (id, user, pass, ok) in [
            (9, "carol@example.test", CAROL_PW, true),
            (10, "alice@example.test", ALICE_PW, true),
            (11, "bob@example.test", BOB_PW, false),
            (12, "carol@example.test", "wrong", false),
        ] {
            a.send(&format!("AUTH\t{id}\tCRAM-MD5\tservice=imap\trip=127.0.0.1\n"));
            let cont = a.line();
            let challenge = unb64(cont.rsplit('\t').next().unwrap());
            assert!(challenge.starts_with(b"<") && challenge.ends_with(b"@mail.example.test>"), "{cont}");
            let digest = hmac_md5_hex(pass, &challenge).expect("openssl");
            a.send(&format!("CONT\t{id}\t{}\n", b64(format!("{user} {digest}").as_bytes())));
            let r = a.line();
            assert_eq!(r.starts_with(&format!("OK\t{id}\t")), ok, "{user}: {r}");
        }
        s.wait_log("CRAM-MD5 cannot use the stored password (a one-way hash)", Duration::from_secs(10));
    } else {
        eprintln!("openssl missing: CRAM-MD5 part skipped");
    }
    // Broken input: bad base64 fails the request; a protocol violation ends the connection.
    a.send("AUTH\t13\tPLAIN\tservice=smtp\tresp=!!\n");
    assert!(a.line().starts_with("FAIL\t13\tcode=invalid_base64"));
    a.send("AUTH\t13\tPLAIN\n");
    let mut rest = String::new();
    assert_eq!(a.reader.read_line(&mut rest).unwrap_or(0), 0, "connection closed after a protocol error: {rest}");

    // The userdb socket.
    let mut u = UnixStream::connect(socket(&s, "auth-userdb")).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    u.write_all(b"VERSION\t1\t0\nUSER\t1\tAlice@example.test\tservice=lmtp\nUSER\t2\tzed@example.test\tservice=lmtp\nPASS\t3\tbob@example.test\tservice=lmtp\n").unwrap();
    let mut r = BufReader::new(u);
    let lines: Vec<String> = (0..5)
        .map(|_| {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            l.trim_end().to_string()
        })
        .collect();
    assert_eq!(lines[0], "VERSION\t1\t0");
    assert!(lines[1].starts_with("SPID\t"));
    assert_eq!(lines[2], "USER\t1\talice@example.test\tuid=5000\tgid=5000\thome=/var/vmail/example.test/alice");
    assert_eq!(lines[3], "NOTFOUND\t2");
    assert_eq!(lines[4], "PASS\t3\tuser=bob@example.test");

    // rmaster auth test, as doveadm auth test.
    let out = s.rmaster(&["auth", "test", "alice@example.test", ALICE_PW]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text, "passdb: alice@example.test auth succeeded\nextra fields:\n  user=alice@example.test\n");
    let out = s.rmaster(&["auth", "test", "alice@example.test", "wrong"]);
    assert_eq!(out.status.code(), Some(77));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("passdb: alice@example.test auth failed\n"));

    // Dovecot's own client: doveadm auth test against our socket.
    if Command::new("doveadm").arg("help").output().is_ok() {
        let sock = socket(&s, "auth");
        let d = Command::new("doveadm")
            .args(["auth", "test", "-a", sock.to_str().unwrap(), "alice@example.test", ALICE_PW])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&d.stdout);
        assert!(d.status.success(), "{text}{}", String::from_utf8_lossy(&d.stderr));
        assert!(text.starts_with("passdb: alice@example.test auth succeeded"), "{text}");
        let d = Command::new("doveadm")
            .args(["auth", "test", "-a", sock.to_str().unwrap(), "alice@example.test", "wrong"])
            .output()
            .unwrap();
        assert_eq!(d.status.code(), out.status.code(), "same exit status as rmaster auth test");
        let usock = socket(&s, "auth-userdb");
        let d =
            Command::new("doveadm").args(["user", "-a", usock.to_str().unwrap(), "bob@example.test"]).output().unwrap();
        let text = String::from_utf8_lossy(&d.stdout);
        assert!(d.status.success(), "{text}{}", String::from_utf8_lossy(&d.stderr));
        assert!(
            text.contains("uid") && text.contains("5000") && text.contains("/var/vmail/example.test/bob"),
            "{text}"
        );
    }

    // rmaster auth user, as doveadm user, through the auth-userdb socket.
    let out = s.rmaster(&["auth", "user", "Bob@example.test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "field\tvalue\nuser\tbob@example.test\nuid\t5000\ngid\t5000\nhome\t/var/vmail/example.test/bob\n"
    );
    let out = s.rmaster(&["auth", "user", "zed@example.test"]);
    assert_eq!(out.status.code(), Some(67));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user zed@example.test doesn't exist"));

    s.wait_log("Password mismatch", Duration::from_secs(10));
    s.wait_log("unknown user", Duration::from_secs(10));
    assert_no_secrets(&s, &secrets);
}

/// 1,000 wrong passwords from one address: answered, counted, logged, and the address is
/// slowed to 15 s per request, while a client from another address is served at once.
#[test]
fn penalty_slows_a_flood_without_blocking_others() {
    let (s, secrets) = suite("0");
    let path = socket(&s, "auth");
    let flooders: Vec<std::thread::JoinHandle<usize>> = (0..10)
        .map(|c| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut a = Auth::connect(&path);
                let resp = b64(b"\0alice@example.test\0guess");
                let batch: String = (0..100)
                    .map(|i| {
                        format!(
                            "AUTH\t{}\tPLAIN\tservice=smtp\trip=192.0.2.66\tsecured\tresp={resp}\n",
                            c * 1000 + i + 1
                        )
                    })
                    .collect();
                a.send(&batch);
                (0..100).filter(|_| a.line().starts_with("FAIL\t")).count()
            })
        })
        .collect();
    let failed: usize = flooders.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(failed, 1000);
    let log = s.wait_log("192.0.2.66: 1000 authentication failures", Duration::from_secs(60));
    assert!(log.contains("requests from this address are delayed 15s"), "{log}");

    // One more guess from the flooder waits out its penalty in its own task...
    let mut slow = Auth::connect(&path);
    let resp = b64(format!("\0alice@example.test\0{ALICE_PW}").as_bytes());
    slow.send(&format!("AUTH\t1\tPLAIN\tservice=smtp\trip=192.0.2.66\tsecured\tresp={resp}\n"));
    // ...while another address, on another connection and on the same one, is served now.
    let mut other = Auth::connect(&path);
    assert_eq!(other.plain(1, "alice@example.test", ALICE_PW, "127.0.0.2"), "OK\t1\tuser=alice@example.test");
    slow.send(&format!("AUTH\t2\tPLAIN\tservice=smtp\trip=127.0.0.3\tresp={resp}\n"));
    assert_eq!(slow.line(), "OK\t2\tuser=alice@example.test", "request 2 overtakes the penalised request 1");
    // The penalised request is answered in the end (the right password clears the address).
    assert_eq!(slow.line(), "OK\t1\tuser=alice@example.test");
    assert_no_secrets(&s, &secrets);
}

/// `rmaster pw` and Debian's `doveadm pw` accept each other's hashes.
#[test]
fn pw_interop_with_doveadm() {
    let s = Suite::builder().prepare();
    if Command::new("doveadm").arg("help").output().is_err() {
        eprintln!("doveadm missing: interop skipped (.ci/run installs dovecot-core)");
        return;
    }
    let pass = "p\u{e4}ss w0rd";
    for scheme in [
        "SHA512-CRYPT",
        "SHA256-CRYPT",
        "BLF-CRYPT",
        "ARGON2ID",
        "ARGON2I",
        "CRAM-MD5",
        "MD5-CRYPT",
        "PLAIN",
        "CRYPT",
        "SSHA512",
        "SCRAM-SHA-256",
        "SSHA",
        "SHA",
    ] {
        // Ours -> doveadm.
        let out = s.rmaster(&["pw", "-s", scheme, "-p", pass]);
        assert!(out.status.success(), "{scheme}: {}", String::from_utf8_lossy(&out.stderr));
        let ours = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(ours.starts_with(&format!("{{{scheme}}}")), "{ours}");
        let d = Command::new("doveadm").args(["pw", "-t", &ours, "-p", pass]).output().unwrap();
        assert!(d.status.success(), "doveadm refused our {scheme} hash {ours}: {}", String::from_utf8_lossy(&d.stderr));
        assert_eq!(String::from_utf8_lossy(&d.stdout).trim(), format!("{ours} (verified)"));
        // doveadm -> ours.
        let d = Command::new("doveadm").args(["pw", "-s", scheme, "-p", pass]).output().unwrap();
        assert!(d.status.success());
        let theirs = String::from_utf8(d.stdout).unwrap().trim().to_string();
        let out = s.rmaster(&["pw", "-t", &theirs, "-p", pass]);
        assert!(
            out.status.success(),
            "we refused doveadm's {scheme} hash {theirs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{theirs} (verified)"));
        // A wrong password: the same exit status as doveadm.
        let ours_wrong = s.rmaster(&["pw", "-t", &theirs, "-p", "wrong"]);
        let theirs_wrong = Command::new("doveadm").args(["pw", "-t", &theirs, "-p", "wrong"]).output().unwrap();
        assert_eq!(ours_wrong.status.code(), theirs_wrong.status.code(), "{scheme}");
        assert_ne!(ours_wrong.status.code(), Some(0));
    }
}

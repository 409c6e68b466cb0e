//! In-process LMTP sessions: the real driver, session and Maildir store over an in-memory
//! stream; users come from a small auth-userdb server on a socket in a temporary directory
//! (serving a passwd-file's users as authd would); no rmaster.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use lmtp_deliver::server::{Shared, serve};
use lmtp_deliver::settings::Settings;
use rpost_auth_proto::fields::{ExpandError, Vars, expand, parse_fields, userdb_fields};
use rpost_auth_proto::{MasterReply, MasterRequest, MasterServer};
use rpost_config::Params;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const USERS: &str = "alice@example.test:{PLAIN}secret::::::\n\
                     bob@example.test:{PLAIN}secret::::::userdb_quota_rule=*:bytes=1000\n";

/// As root, deliveries are written for `nobody`; otherwise as ourselves.
fn mail_owner() -> (u32, u32) {
    if nix::unistd::geteuid().is_root() {
        (65534, 65534)
    } else {
        (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw())
    }
}

/// Where the test auth-userdb server finds its users.
#[derive(Debug, Clone)]
enum Users {
    /// A passwd-file (`name:password:uid:gid:gecos:home:shell:extra`), read per request; a
    /// missing file is a lookup failure (`FAIL`), as for authd.
    File(PathBuf),
    /// Every user, with this `home` template (authd's `static:` userdb with allow_all_users).
    Static(String),
}

fn answer(users: &Users, id: u32, user: String) -> MasterReply {
    let user = user.to_lowercase();
    match users {
        Users::File(path) => {
            let Ok(text) = std::fs::read_to_string(path) else {
                return MasterReply::Fail { id, reason: Some("Temporary lookup failure".into()) };
            };
            for line in text.lines() {
                let cols: Vec<&str> = line.splitn(8, ':').collect();
                if cols[0] == user {
                    let fields = userdb_fields(&parse_fields(cols.get(7).copied().unwrap_or("")));
                    return MasterReply::User { id, user, fields };
                }
            }
            MasterReply::NotFound { id }
        }
        Users::Static(home) => match expand(home, &Vars { user: &user, ..Vars::default() }, true) {
            Ok(h) => MasterReply::User { id, user, fields: vec![("home".into(), Some(h))] },
            Err(ExpandError::Unsafe(_)) => MasterReply::NotFound { id },
            Err(e) => panic!("{e}"),
        },
    }
}

/// Serves auth-userdb `USER` requests on `path` (in the test's runtime).
fn userdb_server(path: &Path, users: Users) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let users = users.clone();
            tokio::spawn(async move {
                s.write_all(rpost_auth_proto::master::server_hello(1).as_bytes()).await.unwrap();
                let mut server = MasterServer::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    server.feed(&buf[..n]);
                    while let Some(req) = server.next_request().unwrap() {
                        let MasterRequest::User { id, user, .. } = req else { panic!("{req:?}") };
                        s.write_all(answer(&users, id, user).to_line().as_bytes()).await.unwrap();
                    }
                }
            });
        }
    });
}

fn shared(dir: &Path, extra: &[(&str, &str)]) -> Arc<Shared> {
    std::fs::write(dir.join("users"), USERS).unwrap();
    shared_with(dir, extra, Some(Users::File(dir.join("users"))))
}

/// Settings with the users served on a fresh socket in `dir` (`None`: authd is down).
fn shared_with(dir: &Path, extra: &[(&str, &str)], users: Option<Users>) -> Arc<Shared> {
    static N: AtomicU32 = AtomicU32::new(0);
    let socket = dir.join(format!("auth-userdb.{}", N.fetch_add(1, Ordering::Relaxed)));
    if let Some(users) = users {
        userdb_server(&socket, users);
    }
    let (uid, gid) = mail_owner();
    let mut p = Params::empty();
    let home = format!("{}/vmail/%d/%n", dir.display());
    let (uid, gid) = (uid.to_string(), gid.to_string());
    for (k, v) in [
        ("myhostname", "lmtp.example.test"),
        ("auth_socket_path", socket.to_str().unwrap()),
        ("mail_home", home.as_str()),
        ("mail_location", "maildir:~/mail"),
        ("mail_uid", uid.as_str()),
        ("mail_gid", gid.as_str()),
        ("first_valid_uid", "1"),
        ("first_valid_gid", "1"),
        ("recipient_delimiter", "+"),
    ] {
        p.set(k, v);
    }
    for (k, v) in extra {
        p.set(k, v);
    }
    let privileged = nix::unistd::geteuid().is_root();
    Arc::new(Shared::new(Settings::from_params(&p, privileged).unwrap()))
}

/// Runs a session against `input` (all sent at once, as a pipelining client may) and returns
/// every reply line.
async fn session(shared: Arc<Shared>, input: &[u8]) -> Vec<String> {
    let (client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(serve(shared, server, None));
    let (rd, mut wr) = tokio::io::split(client);
    let input = input.to_vec();
    // Write concurrently: the server's replies must be read while a large input goes in.
    let writer = tokio::spawn(async move {
        wr.write_all(&input).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let mut lines = Vec::new();
    let mut rd = BufReader::new(rd).lines();
    while let Ok(Some(l)) = rd.next_line().await {
        lines.push(l);
    }
    writer.await.unwrap();
    task.await.unwrap();
    lines
}

fn maildir(dir: &Path, user: &str) -> PathBuf {
    dir.join("vmail/example.test").join(user).join("mail")
}

fn messages(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

#[tokio::test]
async fn pipelined_transaction_answers_per_recipient() {
    let t = tempfile::tempdir().unwrap();
    let sh = shared(t.path(), &[]);
    let r = session(
        sh.clone(),
        b"LHLO mx.example.test\r\nMAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@example.test>\r\n\
          RCPT TO:<nobody@example.test>\r\nRCPT TO:<Alice+x@Example.Test>\r\nDATA\r\n\
          Subject: hi\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert_eq!(
        &r[..7],
        [
            "220 lmtp.example.test rpost LMTP ready",
            "250-lmtp.example.test",
            "250-PIPELINING",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-CHUNKING",
            "250 SMTPUTF8",
        ]
    );
    assert_eq!(r[7], "250 2.1.0 OK");
    assert_eq!(r[8], "250 2.1.5 OK");
    assert_eq!(r[9], "550 5.1.1 <nobody@example.test> User doesn't exist: nobody@example.test");
    assert_eq!(r[10], "250 2.1.5 OK");
    assert_eq!(r[11], "354 OK");
    assert!(r[12].starts_with("250 2.0.0 <alice@example.test> ") && r[12].ends_with(" Saved"), "{r:?}");
    assert!(r[13].starts_with("250 2.0.0 <Alice+x@Example.Test> ") && r[13].ends_with(" Saved"), "{r:?}");
    assert_eq!(r[14], "221 2.0.0 Bye");
    assert_eq!(r.len(), 15);

    let new = messages(&maildir(t.path(), "alice").join("new"));
    assert_eq!(new.len(), 2, "both recipients are alice");
    let text = std::fs::read_to_string(&new[0]).unwrap();
    assert!(text.starts_with("Return-Path: <sender@example.org>\nDelivered-To: alice@example.test\nReceived: from mx.example.test\n\tby lmtp.example.test with LMTP\n\tid "), "{text}");
    assert!(text.ends_with("\nSubject: hi\n\nhello\n.dot\n"), "{text:?}");
    assert!(!text.contains('\r'));
    let name = new[0].file_name().unwrap().to_string_lossy().into_owned();
    let size = std::fs::metadata(&new[0]).unwrap().len();
    let lines = text.matches('\n').count() as u64;
    assert!(name.ends_with(&format!(",S={size},W={}", size + lines)), "{name}");
    let md = std::fs::metadata(&new[0]).unwrap();
    assert_eq!((md.uid(), md.gid()), mail_owner());
    let list = std::fs::read_to_string(maildir(t.path(), "alice").join("dovecot-uidlist")).unwrap();
    // Records are appended as Dovecot appends them; the header's next UID may lag behind.
    assert!(list.starts_with("3 V"), "{list}");
    assert!(list.contains(&format!("\n1 :{name}\n")) || list.contains(&format!("\n2 :{name}\n")), "{list}");

    // The next delivery gets the next UID.
    let r = session(sh, b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nx\r\n.\r\n").await;
    assert!(r.last().unwrap().ends_with(" Saved"), "{r:?}");
    let list = std::fs::read_to_string(maildir(t.path(), "alice").join("dovecot-uidlist")).unwrap();
    assert!(list.contains("\n3 :"), "{list}");
    let newest = messages(&maildir(t.path(), "alice").join("new"));
    assert_eq!(newest.len(), 3);
}

#[tokio::test]
async fn commands_out_of_sequence() {
    let t = tempfile::tempdir().unwrap();
    let r = session(
        shared(t.path(), &[]),
        b"MAIL FROM:<a@b>\r\nEHLO x\r\nLHLO x\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nMAIL FROM:<a@b>\r\nDATA\r\n\
          MAIL FROM:<a@b>\r\nRSET\r\nNOOP\r\nBDAT 3 LAST\r\nabcQUIT\r\n",
    )
    .await;
    assert_eq!(
        &r[1..],
        [
            "503 5.5.1 Error: send LHLO first",
            "500 5.5.1 Error: this is an LMTP server, use LHLO",
            "250-lmtp.example.test",
            "250-PIPELINING",
            "250-ENHANCEDSTATUSCODES",
            "250-8BITMIME",
            "250-CHUNKING",
            "250 SMTPUTF8",
            "503 5.5.1 Error: need MAIL command",
            "503 5.5.1 Error: need MAIL command",
            "250 2.1.0 OK",
            "503 5.5.1 Error: need RCPT command",
            "503 5.5.1 Error: nested MAIL command",
            "250 2.0.0 OK",
            "250 2.0.0 OK",
            "503 5.5.1 Error: need MAIL command",
            "221 2.0.0 Bye",
        ]
    );
}

#[tokio::test]
async fn addresses_never_reach_outside_the_mail_base() {
    let t = tempfile::tempdir().unwrap();
    // A static userdb accepts every name: only the path checks stand between a hostile
    // local part and the file system.
    let home = format!("{}/vmail/%d/%n", t.path().display());
    let sh = shared_with(t.path(), &[], Some(Users::Static(home)));
    let r = session(
        sh,
        b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<\"../../etc\"@example.test>\r\nRCPT TO:<\"a/b\"@example.test>\r\n\
          RCPT TO:<x@..>\r\nRCPT TO:<carol+../../x@example.test>\r\nDATA\r\nx\r\n.\r\n",
    )
    .await;
    assert_eq!(r[8], "550 5.1.3 <\"../../etc\"@example.test> Invalid recipient address");
    assert_eq!(r[9], "550 5.1.3 <a/b@example.test> Invalid recipient address");
    assert!(r[10].starts_with("550 5.1.3") || r[10].starts_with("501"), "{r:?}");
    // The detail is not part of the path (and with lmtp_save_to_detail_mailbox it must be a
    // valid mailbox name): carol gets it in INBOX.
    assert_eq!(r[11], "250 2.1.5 OK");
    assert!(r[13].starts_with("250 2.0.0 <\"carol+../../x\"@example.test>"), "{r:?}");
    assert_eq!(messages(&maildir(t.path(), "carol").join("new")).len(), 1);
    let mut all = Vec::new();
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            out.push(p.clone());
            if p.is_dir() && !p.is_symlink() {
                walk(&p, out);
            }
        }
    }
    walk(t.path(), &mut all);
    let ours = |p: &PathBuf| {
        p.starts_with(t.path().join("vmail"))
            || p.to_string_lossy().starts_with(&*t.path().join("auth-userdb.").to_string_lossy())
    };
    assert!(all.iter().all(ours), "{all:?}");
    assert!(!t.path().join("etc").exists());
}

#[tokio::test]
async fn quota_and_mixed_replies() {
    let t = tempfile::tempdir().unwrap();
    let sh = shared(t.path(), &[]);
    let msg = |n: usize| {
        format!(
            "LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n\
             Subject: q\r\n\r\n{}\r\n.\r\n",
            "x".repeat(n)
        )
    };
    // bob may store 1000 bytes (+10% grace for the message that crosses the limit).
    let r = session(sh.clone(), msg(1500).as_bytes()).await;
    assert_eq!(r[11], "452 4.2.2 <bob@example.test> Quota exceeded (mailbox for user is full)");
    assert!(r[12].starts_with("250 2.0.0 <alice@example.test> "), "{r:?}");
    assert!(messages(&maildir(t.path(), "bob").join("new")).is_empty());
    assert!(messages(&maildir(t.path(), "bob").join("tmp")).is_empty());
    let r = session(sh.clone(), msg(10).as_bytes()).await;
    assert!(r[11].starts_with("250 2.0.0 <bob@example.test>"), "{r:?}");
    // The message that crosses the limit is taken (grace), the next one is not.
    let r = session(sh.clone(), msg(600).as_bytes()).await;
    assert!(r[11].starts_with("250 2.0.0 <bob@example.test>"), "{r:?}");
    let r = session(sh, msg(10).as_bytes()).await;
    assert!(r[11].starts_with("452 4.2.2 <bob@example.test>"), "{r:?}");
    // lmtp_rcpt_check_quota refuses at RCPT once the user is over.
    let sh = shared(t.path(), &[("lmtp_rcpt_check_quota", "yes")]);
    let r = session(sh, b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\n")
        .await;
    assert_eq!(&r[8..], ["452 4.2.2 <bob@example.test> Quota exceeded (mailbox for user is full)", "250 2.1.5 OK"]);
    // mailbox_size_limit bounds a single message file.
    let sh = shared(t.path(), &[("mailbox_size_limit", "200")]);
    let r = session(sh, msg(300).as_bytes()).await;
    assert_eq!(
        r[11],
        "552 5.2.3 <bob@example.test> Mail size is larger than the maximum size allowed by server configuration"
    );
    assert!(r[12].starts_with("552 5.2.3 <alice@example.test>"));
}

#[tokio::test]
async fn bdat_and_large_messages() {
    let t = tempfile::tempdir().unwrap();
    let tmp = t.path().join("spool");
    std::fs::create_dir(&tmp).unwrap();
    let sh = shared(t.path(), &[("mail_temp_dir", tmp.to_str().unwrap())]);
    let line = format!("{}\r\n", "y".repeat(998));
    let big: String = std::iter::repeat_n(line.as_str(), 1500).collect();
    let mut input = format!(
        "LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nBDAT 14\r\nSubject: b\r\n\r\nBDAT {} LAST\r\n",
        big.len()
    );
    input.push_str(&big);
    input.push_str("QUIT\r\n");
    let r = session(sh.clone(), input.as_bytes()).await;
    assert_eq!(r[9], "250 2.0.0 OK: 14 octets received");
    assert!(r[10].starts_with("250 2.0.0 <alice@example.test> ") && r[10].ends_with(" Saved"), "{r:?}");
    let new = messages(&maildir(t.path(), "alice").join("new"));
    let text = std::fs::read_to_string(&new[0]).unwrap();
    assert!(text.contains("\nSubject: b\n\nyyyy"));
    assert_eq!(text.matches(&"y".repeat(998)).count(), 1500);
    assert!(std::fs::read_dir(&tmp).unwrap().next().is_none(), "the spool file is unnamed");

    // RSET between chunks drops what was sent.
    let r = session(
        sh,
        b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3\r\nabcRSET\r\nBDAT 3 LAST\r\nabc",
    )
    .await;
    assert_eq!(&r[9..], ["250 2.0.0 OK: 3 octets received", "250 2.0.0 OK", "503 5.5.1 Error: need MAIL command"]);
    assert_eq!(messages(&maildir(t.path(), "alice").join("new")).len(), 1);
}

#[tokio::test]
async fn detail_goes_to_its_mailbox() {
    let t = tempfile::tempdir().unwrap();
    let sh = shared(
        t.path(),
        &[
            ("lmtp_save_to_detail_mailbox", "yes"),
            ("lda_mailbox_autocreate", "yes"),
            ("lda_mailbox_autosubscribe", "yes"),
        ],
    );
    let r = session(
        sh,
        b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice+Lists@example.test>\r\nRCPT TO:<alice+a.b@example.test>\r\nDATA\r\nx\r\n.\r\n",
    )
    .await;
    assert!(r[11].ends_with(" Saved") && r[12].ends_with(" Saved"), "{r:?}");
    let m = maildir(t.path(), "alice");
    assert_eq!(messages(&m.join(".Lists/new")).len(), 1);
    assert!(m.join(".Lists/maildirfolder").exists());
    assert_eq!(std::fs::read_to_string(m.join("subscriptions")).unwrap(), "V\t2\n\nLists\n");
    assert_eq!(messages(&m.join("new")).len(), 1, "an invalid mailbox name falls back to INBOX");
    // Without autocreate a missing mailbox means INBOX.
    let sh = shared(t.path(), &[("lmtp_save_to_detail_mailbox", "yes")]);
    session(sh, b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice+Other@example.test>\r\nDATA\r\nx\r\n.\r\n").await;
    assert_eq!(messages(&m.join("new")).len(), 2);
    assert!(!m.join(".Other").exists());
}

#[tokio::test]
async fn a_client_that_vanishes_mid_data_leaves_no_message() {
    let t = tempfile::tempdir().unwrap();
    let r = session(
        shared(t.path(), &[]),
        b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhalf",
    )
    .await;
    assert_eq!(r.last().unwrap(), "354 OK");
    assert!(messages(&maildir(t.path(), "alice").join("new")).is_empty());
}

#[tokio::test]
async fn user_lookup_failures_are_temporary() {
    let t = tempfile::tempdir().unwrap();
    let sh = shared(t.path(), &[]);
    std::fs::remove_file(t.path().join("users")).unwrap();
    let r = session(sh, b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\n").await;
    assert_eq!(r[8], "451 4.3.0 <alice@example.test> Temporary user lookup failure");
    // authd not running at all: the same temporary failure, and the session goes on.
    let sh = shared_with(t.path(), &[], None);
    let r = session(sh, b"LHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nRSET\r\n").await;
    assert_eq!(&r[8..], ["451 4.3.0 <alice@example.test> Temporary user lookup failure", "250 2.0.0 OK"]);
}

//! Queue file tests through the public API, on a real directory.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rpost_queue::format::{self, status_byte, status_from_byte};
use rpost_queue::show::{self, QueueEntry};
use rpost_queue::{
    BodyType, ClientInfo, Envelope, Queue, QueueDir, QueueError, QueueFile, QueueId, RcptStatus, Recipient, Ret,
};

fn queue() -> (tempfile::TempDir, Queue) {
    let tmp = tempfile::tempdir().unwrap();
    let q = Queue::new(tmp.path().join("spool"));
    q.ensure_dirs().unwrap();
    (tmp, q)
}

fn rich_envelope() -> Envelope {
    Envelope {
        sender: String::new(),
        recipients: vec![
            Recipient {
                address: "jörg@exämple.test".to_owned(),
                original: "Jörg@Exämple.test".to_owned(),
                orcpt: Some("utf-8;j\\x{00F6}rg@ex\\x{00E4}mple.test".to_owned()),
                notify: Some(Recipient::NOTIFY_FAILURE | Recipient::NOTIFY_DELAY),
                status: RcptStatus::Pending,
            },
            Recipient {
                address: "bob@example.test".to_owned(),
                original: "bob-alias@example.test".to_owned(),
                orcpt: Some("rfc822;bob-alias@example.test".to_owned()),
                notify: Some(Recipient::NOTIFY_NEVER),
                status: RcptStatus::Pending,
            },
            Recipient::new("carol@example.test"),
        ],
        arrival: UNIX_EPOCH + Duration::new(1_606_000_791, 987_654_321),
        client: ClientInfo {
            name: "mail.example.net".to_owned(),
            addr: "2001:db8::25".to_owned(),
            port: 50_025,
            helo: "mail.example.net".to_owned(),
            protocol: "ESMTPSA".to_owned(),
            sasl_username: Some("alice".to_owned()),
        },
        body: Some(BodyType::EightBitMime),
        smtputf8: true,
        ret: Some(Ret::Hdrs),
        envid: Some("QQ314159".to_owned()),
        attrs: vec![
            ("rewrite_context".to_owned(), "remote".to_owned()),
            ("encoding".to_owned(), "8bit".to_owned()),
            ("empty".to_owned(), String::new()),
        ],
    }
}

fn commit(q: &Queue, env: &Envelope, content: &[u8]) -> QueueId {
    let mut m = q.create(env).unwrap();
    m.write_content(content).unwrap();
    m.commit().unwrap()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn content_of(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 100);
    let mut i = 0u64;
    while v.len() < n {
        v.extend_from_slice(format!("line {i} \u{fc}\u{e9} ").as_bytes());
        v.extend_from_slice(b"\x00\xff binary ok\r\n");
        i += 1;
    }
    v.truncate(n);
    v
}

#[test]
fn rich_round_trip_with_marking() {
    let (_tmp, q) = queue();
    let env = rich_envelope();
    let content = content_of(1 << 20);
    let mut m = q.create(&env).unwrap();
    let id = m.id().clone();
    assert_eq!(mode(m.path()), 0o600);
    // Uneven chunks, as DATA arrives.
    for chunk in content.chunks(7919) {
        m.write_content(chunk).unwrap();
    }
    assert_eq!(m.content_len(), content.len() as u64);
    assert_eq!(m.commit().unwrap(), id);
    let path = q.path(QueueDir::Incoming, &id);
    assert_eq!(mode(&path), 0o700);
    assert_eq!(q.scan(QueueDir::Incoming).unwrap(), vec![id.clone()]);

    let mut f = q.open(QueueDir::Incoming, &id).unwrap();
    assert_eq!(f.id, id);
    assert_eq!(f.envelope, env);
    assert_eq!(f.content_len(), content.len() as u64);
    assert!(f.content().unwrap() == content);
    let mut streamed = Vec::new();
    f.content_reader().unwrap().read_to_end(&mut streamed).unwrap();
    assert!(streamed == content);
    assert!(fs::metadata(&path).unwrap().len() > f.content_len() + format::END_LEN);

    // The in-memory parser agrees with the streaming one.
    let mem = QueueFile::parse(&path, &fs::read(&path).unwrap()).unwrap();
    assert_eq!(mem.envelope, f.envelope);

    assert!(!f.all_done());
    f.mark_recipient(1, RcptStatus::Delivered).unwrap();
    assert_eq!(f.pending().map(|(i, _)| i).collect::<Vec<_>>(), vec![0, 2]);
    assert!(matches!(f.mark_recipient(3, RcptStatus::Delivered), Err(QueueError::NoRecipient { index: 3, .. })));

    let mut f2 = q.open(QueueDir::Incoming, &id).unwrap();
    assert_eq!(f2.envelope.recipients[1].status, RcptStatus::Delivered);
    assert!(!f2.all_done());
    f2.mark_recipients(&[(0, RcptStatus::Bounced), (2, RcptStatus::Expired)]).unwrap();
    assert!(f2.all_done());

    let f3 = q.open(QueueDir::Incoming, &id).unwrap();
    let st: Vec<_> = f3.envelope.recipients.iter().map(|r| r.status).collect();
    assert_eq!(st, [RcptStatus::Bounced, RcptStatus::Delivered, RcptStatus::Expired]);
    assert!(f3.all_done());

    // Lifecycle through the directories.
    q.move_to(&id, QueueDir::Incoming, QueueDir::Active).unwrap();
    assert_eq!(q.find(&id), Some(QueueDir::Active));
    assert!(q.scan(QueueDir::Incoming).unwrap().is_empty());
    q.move_to(&id, QueueDir::Active, QueueDir::Deferred).unwrap();
    assert_eq!(q.open(QueueDir::Deferred, &id).unwrap().envelope.sender, "");
    q.remove(QueueDir::Deferred, &id).unwrap();
    assert_eq!(q.find(&id), None);
    assert!(matches!(q.open(QueueDir::Deferred, &id), Err(QueueError::Io { .. })));
}

#[test]
fn qmgr_fast_path_marks_moves_and_removes() {
    let (_tmp, q) = queue();
    let id = commit(&q, &rich_envelope(), b"Subject: t\r\n\r\nhi\r\n");
    q.move_without_sync(&id, QueueDir::Incoming, QueueDir::Active).unwrap();
    assert_eq!(q.find(&id), Some(QueueDir::Active));
    let mut f = q.open(QueueDir::Active, &id).unwrap();
    f.mark_recipients_unsynced(&[(1, RcptStatus::Delivered)]).unwrap();
    f.sync_marks().unwrap();
    // Written to the file, not only to memory.
    let again = q.open(QueueDir::Active, &id).unwrap();
    assert_eq!(again.envelope.recipients[1].status, RcptStatus::Delivered);
    assert!(f.mark_recipients_unsynced(&[(99, RcptStatus::Delivered)]).is_err());
    q.move_without_sync(&id, QueueDir::Active, QueueDir::Deferred).unwrap();
    q.retire(QueueDir::Deferred, &id).unwrap();
    assert_eq!(q.find(&id), None);
}

/// A small committed file, for the exhaustive damage loops.
fn small_file() -> (tempfile::TempDir, Queue, QueueId, Vec<u8>, Vec<u64>) {
    let (tmp, q) = queue();
    let id = commit(&q, &rich_envelope(), b"Subject: t\r\n\r\nhi\r\n");
    let bytes = fs::read(q.path(QueueDir::Incoming, &id)).unwrap();
    let f = q.open(QueueDir::Incoming, &id).unwrap();
    let offsets = (0..3).map(|i| f.status_offset(i).unwrap()).collect();
    (tmp, q, id, bytes, offsets)
}

#[test]
fn every_truncation_is_detected() {
    let (_tmp, q, id, bytes, _) = small_file();
    let path = q.path(QueueDir::Incoming, &id);
    assert!(QueueFile::parse(&path, &bytes).is_ok());
    for len in 0..bytes.len() {
        let r = QueueFile::parse(&path, &bytes[..len]);
        assert!(matches!(r, Err(QueueError::Corrupt { .. })), "truncated to {len}: {r:?}");
    }
    // The streaming reader, on disk, too.
    for len in (0..bytes.len()).rev() {
        fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len as u64).unwrap();
        assert!(q.open(QueueDir::Incoming, &id).is_err(), "truncated to {len}");
    }
}

#[test]
fn trailing_garbage_is_detected() {
    let (_tmp, q, id, bytes, _) = small_file();
    let path = q.path(QueueDir::Incoming, &id);
    let end = &bytes[bytes.len() - format::END_LEN as usize..];
    for extra in [&b"x"[..], b"\0", end, &bytes[..]] {
        let mut b = bytes.clone();
        b.extend_from_slice(extra);
        let err = QueueFile::parse(&path, &b).unwrap_err();
        assert!(matches!(err, QueueError::Corrupt { .. }), "{err}");
        fs::write(&path, &b).unwrap();
        assert!(q.open(QueueDir::Incoming, &id).is_err());
    }
}

/// Every single-bit flip and every byte inversion is detected. The only
/// undetectable change is rewriting a recipient status byte to another
/// valid status, which is exactly what mark_recipient does: status bytes
/// are outside the checksum by design, and their values differ pairwise in
/// at least two bits, so no single flip turns one into another.
#[test]
fn every_bit_flip_is_detected() {
    let (_tmp, q, id, bytes, offsets) = small_file();
    let path = q.path(QueueDir::Incoming, &id);
    let mut checked = 0;
    for i in 0..bytes.len() {
        for mask in [1u8, 2, 4, 8, 16, 32, 64, 128, 0xFF] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            let r = QueueFile::parse(&path, &b);
            let valid_status = offsets.contains(&(i as u64)) && status_from_byte(b[i]).is_some();
            if valid_status {
                assert!(r.is_ok());
            } else {
                assert!(r.is_err(), "flip {mask:#x} at {i} accepted");
            }
            assert!(!valid_status, "a flip produced a valid status at {i}");
            checked += 1;
        }
    }
    assert_eq!(checked, bytes.len() * 9);
    // Rewriting a status byte to another valid status is accepted.
    for st in [RcptStatus::Delivered, RcptStatus::Bounced, RcptStatus::Expired, RcptStatus::Pending] {
        let mut b = bytes.clone();
        b[offsets[1] as usize] = status_byte(st);
        assert_eq!(QueueFile::parse(&path, &b).unwrap().envelope.recipients[1].status, st);
    }
}

#[test]
fn big_file_sampled_flips_detected_when_streaming() {
    let (_tmp, q) = queue();
    let id = commit(&q, &rich_envelope(), &content_of(300_000));
    let path = q.path(QueueDir::Incoming, &id);
    let orig = fs::read(&path).unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..60 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % orig.len() as u64) as usize;
        let mut b = orig.clone();
        b[i] ^= 1 << (x >> 60 & 7);
        fs::write(&path, &b).unwrap();
        assert!(q.open(QueueDir::Incoming, &id).is_err(), "flip at {i} accepted");
    }
    fs::write(&path, &orig).unwrap();
    assert!(q.open(QueueDir::Incoming, &id).is_ok());
}

#[test]
fn uncommitted_files_are_skipped_and_cleaned() {
    let (_tmp, q) = queue();
    let done = commit(&q, &rich_envelope(), b"done\r\n");

    // Left behind by a crash mid-DATA: a prefix of a real file, mode 0600.
    let crashed = QueueId::generate();
    let full = fs::read(q.path(QueueDir::Incoming, &done)).unwrap();
    let crashed_path = q.path(QueueDir::Incoming, &crashed);
    fs::write(&crashed_path, &full[..full.len() / 2]).unwrap();
    fs::set_permissions(&crashed_path, fs::Permissions::from_mode(0o600)).unwrap();

    // A complete file that never got its mark is not picked up either.
    let unmarked = QueueId::generate();
    let unmarked_path = q.path(QueueDir::Incoming, &unmarked);
    fs::write(&unmarked_path, &full).unwrap();
    fs::set_permissions(&unmarked_path, fs::Permissions::from_mode(0o600)).unwrap();

    // A live session: uncommitted, but its writer holds the lock.
    let mut live = q.create(&rich_envelope()).unwrap();
    live.write_content(b"still arriving\r\n").unwrap();

    // Noise that must be ignored.
    let inc = q.dir(QueueDir::Incoming);
    fs::write(inc.join("README"), b"x").unwrap();
    fs::write(inc.join("0123456789abcdef"), b"x").unwrap();
    fs::create_dir(inc.join("0123456789ABCDEF")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", inc.join("FEDCBA9876543210")).unwrap();

    assert_eq!(q.scan(QueueDir::Incoming).unwrap(), vec![done.clone()]);
    assert!(q.open(QueueDir::Incoming, &crashed).is_err());
    assert!(q.open(QueueDir::Incoming, &QueueId::parse("FEDCBA9876543210").unwrap()).is_err());

    // Too young: nothing removed.
    assert!(q.cleanup_incoming(Duration::from_secs(3600)).unwrap().is_empty());
    let mut want = vec![crashed.clone(), unmarked.clone()];
    want.sort();
    assert_eq!(q.cleanup_incoming(Duration::ZERO).unwrap(), want);
    assert!(!crashed_path.exists() && !unmarked_path.exists());
    assert!(live.path().exists(), "a file with a live writer was removed");
    assert!(q.path(QueueDir::Incoming, &done).exists());
    assert!(inc.join("README").exists());

    let live_id = live.commit().unwrap();
    assert!(q.cleanup_incoming(Duration::ZERO).unwrap().is_empty());
    let mut all = vec![done, live_id];
    all.sort();
    assert_eq!(q.scan(QueueDir::Incoming).unwrap(), all);
}

#[test]
fn abort_and_drop_remove_the_file() {
    let (_tmp, q) = queue();
    let m = q.create(&rich_envelope()).unwrap();
    let p = m.path().to_owned();
    assert!(p.exists());
    m.abort();
    assert!(!p.exists());
    {
        let mut m = q.create(&rich_envelope()).unwrap();
        m.write_content(&content_of(200_000)).unwrap();
        assert!(m.path().exists());
    }
    assert_eq!(fs::read_dir(q.dir(QueueDir::Incoming)).unwrap().count(), 0);
}

#[test]
fn envelope_over_limits_is_refused_before_touching_disk() {
    let (_tmp, q) = queue();
    let mut env = rich_envelope();
    env.recipients[2].address = "x".repeat(format::MAX_RECORD_LEN);
    let err = q.create(&env).unwrap_err();
    assert!(matches!(err, QueueError::Envelope(_)), "{err}");
    env = rich_envelope();
    env.arrival = UNIX_EPOCH - Duration::from_secs(1);
    assert!(matches!(q.create(&env), Err(QueueError::Envelope(_))));
    assert_eq!(fs::read_dir(q.dir(QueueDir::Incoming)).unwrap().count(), 0);
}

#[test]
fn many_recipients() {
    let (_tmp, q) = queue();
    let mut env = Envelope::new("a@example.test");
    env.recipients = (0..5000).map(|i| Recipient::new(format!("user{i}@example.test"))).collect();
    let id = commit(&q, &env, b"x\r\n");
    let mut f = q.open(QueueDir::Incoming, &id).unwrap();
    assert_eq!(f.envelope, env);
    f.mark_recipients(&(0..5000).map(|i| (i, RcptStatus::Delivered)).collect::<Vec<_>>()).unwrap();
    assert!(q.open(QueueDir::Incoming, &id).unwrap().all_done());
}

#[test]
fn concurrent_commits() {
    fn assert_traits<T: Clone + Send + Sync>() {}
    assert_traits::<Queue>();
    let (_tmp, q) = queue();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let mut env = Envelope::new(format!("t{t}@example.test"));
                        env.recipients.push(Recipient::new(format!("r{i}@example.test")));
                        commit(&q, &env, format!("thread {t} message {i}\r\n").as_bytes())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: Vec<QueueId> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(ids.len(), 400);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 400);
    let mut scanned = q.scan(QueueDir::Incoming).unwrap();
    scanned.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(scanned, sorted);
    for id in &ids {
        let f = q.open(QueueDir::Incoming, id).unwrap();
        let c = String::from_utf8(f.content().unwrap()).unwrap();
        let t = &f.envelope.sender[1..2];
        assert!(c.starts_with(&format!("thread {t} message ")));
    }
}

#[test]
fn version_mismatch_and_errors_name_the_path() {
    let (_tmp, q, id, mut bytes, _) = small_file();
    let path = q.path(QueueDir::Incoming, &id);
    bytes[7] = b'7';
    fs::write(&path, &bytes).unwrap();
    let err = q.open(QueueDir::Incoming, &id).unwrap_err();
    assert!(matches!(err, QueueError::Version { version: 7, .. }));
    let msg = err.to_string();
    assert_eq!(msg, format!("{}: queue file version 7 not supported", path.display()));

    bytes[0] = b'X';
    let msg = QueueFile::parse(&path, &bytes).unwrap_err().to_string();
    assert!(msg.starts_with(&path.display().to_string()) && msg.contains("corrupt") && !msg.contains('\n'), "{msg}");
}

#[test]
fn bad_ids_are_rejected() {
    for bad in ["../etc", "0123456789abcdef", "0123456789ABCDE", "/etc/passwd", "0123456789ABCDEF/"] {
        assert!(matches!(QueueId::parse(bad), Err(QueueError::BadId(_))), "{bad}");
    }
    let err = QueueFile::parse(Path::new("/spool/incoming/../etc"), b"").unwrap_err();
    assert!(matches!(err, QueueError::BadId(_)));
    assert_eq!(QueueId::parse("../etc").unwrap_err().to_string(), "invalid queue ID \"../etc\"");
}

#[test]
fn human_output() {
    let (_tmp, q) = queue();
    let mut env = rich_envelope();
    env.recipients[1].status = RcptStatus::Delivered;
    env.recipients[2].address = "evil\x1b[2J@example.test".to_owned();
    let id = commit(&q, &env, b"Subject: hi\r\n\r\nbody \x1b[31m\r\nend");
    let f = q.open(QueueDir::Incoming, &id).unwrap();

    let line = show::postqueue_line(&f, QueueDir::Active);
    let lines: Vec<&str> = line.split('\n').collect();
    assert_eq!(lines[0], format!("{id}*      30 Sat Nov 21 23:19:51  MAILER-DAEMON"));
    assert_eq!(lines[1], format!("{:47}jörg@exämple.test", ""));
    assert_eq!(lines[2], format!("{:47}evil\\x1b[2J@example.test", ""));
    assert_eq!(&lines[3..], ["", ""]);
    assert!(show::postqueue_line(&f, QueueDir::Hold).starts_with(&format!("{id}!")));
    assert!(show::postqueue_line(&f, QueueDir::Deferred).starts_with(&format!("{id} ")));
    assert_eq!(show::postqueue_header().find("-Sender"), Some(47));

    let dump = show::show(&f);
    for want in [
        "*** ENVELOPE RECORDS ***\n",
        "message_size: 30\n",
        "message_arrival_time: Sat Nov 21 23:19:51 2020\n",
        "sender: \n",
        "named_attribute: rewrite_context=remote\n",
        "dsn_notify: FAILURE,DELAY\n",
        "recipient: bob@example.test (delivered)\n",
        "recipient: jörg@exämple.test (pending)\n",
        "*** MESSAGE CONTENTS ***\nSubject: hi\n\nbody \\x1b[31m\nend\n*** END OF MESSAGE ***\n",
    ] {
        assert!(dump.contains(want), "missing {want:?} in\n{dump}");
    }

    let e = QueueEntry::new(&f, QueueDir::Incoming);
    assert_eq!((e.size, e.arrival, e.recipients.len()), (30, 1_606_000_791, 3));
    assert_eq!(e.recipients[1].status, RcptStatus::Delivered);
}

// ------------------------------------------------------------ crash safety

const CRASH_ENV: &str = "RPOST_QUEUE_CRASH_DIR";

struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        Rng((seed ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The child side of `crash_safety`: does nothing unless started by it.
/// Writes messages in a loop and reports each committed ID on stdout.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_ENV) else { return };
    let q = Queue::new(dir);
    let mut rng = Rng::new();
    let mut out = std::io::stdout();
    let start = Instant::now();
    // Bounded, in case the parent dies without killing us.
    while start.elapsed() < Duration::from_secs(20) {
        let mut env = rich_envelope();
        env.recipients.truncate(1 + rng.next(3) as usize);
        let mut m = q.create(&env).unwrap();
        // Mostly small messages, now and then one spanning many blocks.
        let size = if rng.next(8) == 0 { rng.next(300_000) } else { rng.next(16_000) } as usize;
        let content = content_of(size);
        for chunk in content.chunks(1 + rng.next(20_000) as usize) {
            m.write_content(chunk).unwrap();
            // Like a network session; also keeps the file count (and the
            // slow unlinks at the end) down.
            std::thread::sleep(Duration::from_micros(rng.next(800)));
        }
        if rng.next(10) == 0 {
            m.abort();
            continue;
        }
        let id = m.commit().unwrap();
        writeln!(out, "COMMITTED {id}").unwrap();
        out.flush().unwrap();
    }
}

/// Kills a writer process at random moments: every ID it reported is
/// present and verifies, scan() never yields a partial file, and what
/// cleanup_incoming() leaves behind is all complete.
#[test]
fn crash_safety() {
    let (_tmp, q) = queue();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new();
    let mut reported = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut rounds = 0;
    while rounds < 3 || (Instant::now() < deadline && rounds < 15) {
        rounds += 1;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1", "--quiet"])
            .env(CRASH_ENV, q.root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("COMMITTED ").map(|id| QueueId::parse(id).unwrap()))
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(20 + rng.next(250)));
        child.kill().unwrap();
        child.wait().unwrap();
        let ids = reader.join().unwrap();

        for id in &ids {
            let f = q.open(QueueDir::Incoming, id).unwrap_or_else(|e| panic!("reported {id} lost: {e}"));
            assert!(!f.envelope.recipients.is_empty());
        }
        for id in q.scan(QueueDir::Incoming).unwrap() {
            q.open(QueueDir::Incoming, &id).unwrap_or_else(|e| panic!("scan() returned a bad file: {e}"));
        }
        let removed = q.cleanup_incoming(Duration::ZERO).unwrap();
        for id in &removed {
            assert!(!ids.contains(id) && !reported.contains(id), "committed {id} removed");
        }
        // Everything left is committed and verifies; move it out of the way.
        for ent in fs::read_dir(q.dir(QueueDir::Incoming)).unwrap() {
            let name = ent.unwrap().file_name().into_string().unwrap();
            let id = QueueId::parse(&name).unwrap();
            assert_eq!(mode(&q.path(QueueDir::Incoming, &id)), 0o700);
            q.open(QueueDir::Incoming, &id).unwrap();
            q.move_to(&id, QueueDir::Incoming, QueueDir::Active).unwrap();
        }
        reported.extend(ids);
    }
    assert!(!reported.is_empty(), "the child never committed anything in {rounds} rounds");
    eprintln!("crash_safety: {rounds} rounds, {} reported commits", reported.len());
    for id in &reported {
        q.open(QueueDir::Active, id).unwrap();
    }
}

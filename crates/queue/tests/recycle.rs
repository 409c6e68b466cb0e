//! Queue-file recycling: retire() keeps delivered files (inode and blocks) in recycle/,
//! create() writes the next message over one of them.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Barrier};

use nix::fcntl::{Flock, FlockArg};
use rpost_queue::{Envelope, Queue, QueueDir, QueueId, RECYCLE_DIR, Recipient};

fn queue() -> (tempfile::TempDir, Queue) {
    let tmp = tempfile::tempdir().unwrap();
    let q = Queue::new(tmp.path().join("spool"));
    q.ensure_dirs().unwrap();
    (tmp, q)
}

/// Another process's view of the same spool: its own name cache, so a pool found empty a
/// moment ago (and skipped for a second) is looked at again.
fn other(q: &Queue) -> Queue {
    Queue::new(q.root()).with_recycle_limit(q.recycle_limit())
}

fn envelope(rcpt: &str) -> Envelope {
    let mut env = Envelope::new("sender@example.test");
    env.recipients.push(Recipient::new(rcpt));
    env
}

fn commit(q: &Queue, rcpt: &str, content: &[u8]) -> QueueId {
    let mut m = q.create(&envelope(rcpt)).unwrap();
    m.write_content(content).unwrap();
    m.commit().unwrap()
}

/// Committed, moved to active/ and retired, as qmgr does after the last recipient.
fn deliver(q: &Queue, id: &QueueId) -> u64 {
    q.move_without_sync(id, QueueDir::Incoming, QueueDir::Active).unwrap();
    let ino = fs::metadata(q.path(QueueDir::Active, id)).unwrap().ino();
    q.retire(QueueDir::Active, id).unwrap();
    ino
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn recycled(q: &Queue) -> Vec<fs::Metadata> {
    fs::read_dir(q.recycle_dir()).unwrap().map(|e| e.unwrap().path().symlink_metadata().unwrap()).collect()
}

fn long_content() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..20_000 {
        v.extend_from_slice(format!("OLD-SECRET line {i}\r\n").as_bytes());
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn retire_then_create_reuses_the_inode_and_keeps_no_old_bytes() {
    let (_tmp, q) = queue();
    let old = commit(&q, "a@example.test", &long_content());
    let ino = deliver(&q, &old);
    // Out of every queue directory; a file this large is emptied (see the next test).
    let pool = recycled(&q);
    assert_eq!(pool.len(), 1);
    assert_eq!((pool[0].ino(), pool[0].len()), (ino, 0));
    assert_eq!(q.find(&old), None);

    let q2 = other(&q);
    let mut m = q2.create(&envelope("b@example.test")).unwrap();
    assert_ne!(m.id(), &old);
    let path = m.path().to_owned();
    assert_eq!(fs::metadata(&path).unwrap().ino(), ino, "the retired inode is reused");
    assert_eq!(mode(&path), 0o600, "written with the incomplete mode");
    assert!(q2.scan(QueueDir::Incoming).unwrap().is_empty());
    m.write_content(b"Subject: short\r\n\r\nnew\r\n").unwrap();
    assert!(q2.scan(QueueDir::Incoming).unwrap().is_empty());
    let new = m.commit().unwrap();
    assert_eq!(mode(&path), 0o700, "complete after commit");
    assert_eq!(q2.scan(QueueDir::Incoming).unwrap(), vec![new.clone()]);
    assert!(recycled(&q).is_empty());

    let f = q2.open(QueueDir::Incoming, &new).unwrap();
    assert_eq!(f.envelope.recipients[0].address, "b@example.test");
    assert_eq!(f.content().unwrap(), b"Subject: short\r\n\r\nnew\r\n");
    let raw = fs::read(&path).unwrap();
    assert!(!contains(&raw, b"OLD-SECRET") && !contains(&raw, b"a@example.test"));
    assert!(raw.len() < 1000, "cut after END at commit, no old tail: {} bytes", raw.len());
}

#[test]
fn a_small_retired_file_keeps_its_blocks_and_the_next_message_is_written_over_it() {
    let (_tmp, q) = queue();
    let old = commit(&q, "a@example.test", &vec![b'O'; 6000]);
    let old_len = fs::metadata(q.path(QueueDir::Incoming, &old)).unwrap().len();
    assert!(old_len <= rpost_queue::RECYCLE_KEEP_BYTES);
    let ino = deliver(&q, &old);
    // Kept whole: freeing its blocks is what recycling avoids (a synchronous discard each on a
    // file system mounted with `discard`).
    let pool = recycled(&q);
    assert_eq!((pool[0].ino(), pool[0].len()), (ino, old_len));
    let q2 = other(&q);
    let mut m = q2.create(&envelope("b@example.test")).unwrap();
    let path = m.path().to_owned();
    assert_eq!(fs::metadata(&path).unwrap().ino(), ino);
    m.write_content(b"short\r\n").unwrap();
    let new = m.commit().unwrap();
    assert_eq!(q2.open(QueueDir::Incoming, &new).unwrap().content().unwrap(), b"short\r\n");
    assert!(fs::metadata(&path).unwrap().len() < 1000, "cut after END");
}

/// A retired file is complete (0700) and whole in recycle/. Reusing it must never show it in
/// incoming/ as a committed message, nor as a readable one should a crash undo the mode change.
#[test]
fn a_retired_file_is_incomplete_and_unreadable_before_it_leaves_recycle() {
    let (_tmp, q) = queue();
    let old = commit(&q, "a@example.test", &long_content());
    let leftover = q.recycle_dir().join(old.as_str());
    fs::rename(q.path(QueueDir::Incoming, &old), &leftover).unwrap();
    assert_eq!(mode(&leftover), 0o700);
    assert!(q.scan(QueueDir::Incoming).unwrap().is_empty());
    assert_eq!(q.find(&old), None);

    let q2 = other(&q);
    let m = q2.create(&envelope("b@example.test")).unwrap();
    let path = m.path().to_owned();
    assert!(!leftover.exists());
    let md = fs::metadata(&path).unwrap();
    assert_eq!(md.mode() & 0o777, 0o600, "incomplete in incoming/");
    assert!(q2.scan(QueueDir::Incoming).unwrap().is_empty());
    // Its magic is overwritten before the rename: as if a crash had kept the old mode.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
    let err = q2.open(QueueDir::Incoming, &m.id().clone()).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    // An abandoned message is removed as always; nothing of the old one comes back.
    m.abort();
    assert!(!path.exists());
    assert!(q2.scan(QueueDir::Incoming).unwrap().is_empty());
    assert_eq!(fs::read_dir(q.dir(QueueDir::Incoming)).unwrap().count(), 0);
}

#[test]
fn concurrent_creators_never_share_a_recycled_file() {
    for round in 0..20 {
        let (_tmp, q) = queue();
        let id = commit(&q, "a@example.test", b"x\r\n");
        let ino = deliver(&q, &id);
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|t| {
                // Separate caches, as two smtpd processes: both see the one name.
                let q = other(&q);
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut m = q.create(&envelope(&format!("t{t}@example.test"))).unwrap();
                    let ino = fs::metadata(m.path()).unwrap().ino();
                    m.write_content(format!("from thread {t}\r\n").as_bytes()).unwrap();
                    (m.commit().unwrap(), ino, t)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_ne!(results[0].1, results[1].1, "round {round}: both got one inode");
        assert_eq!(results.iter().filter(|r| r.1 == ino).count(), 1, "round {round}: exactly one reuses it");
        for (id, _, t) in &results {
            let f = q.open(QueueDir::Incoming, id).unwrap();
            assert_eq!(f.content().unwrap(), format!("from thread {t}\r\n").as_bytes());
        }
        assert!(recycled(&q).is_empty());
    }
}

#[test]
fn the_pool_limit_is_respected_and_zero_turns_recycling_off() {
    let (_tmp, q) = queue();
    let q = q.with_recycle_limit(3);
    let ids: Vec<_> = (0..6).map(|i| commit(&q, "a@example.test", format!("m{i}\r\n").as_bytes())).collect();
    for id in &ids {
        deliver(&q, id);
        assert_eq!(q.find(id), None);
    }
    assert_eq!(recycled(&q).len(), 3);
    assert!(fs::read_dir(q.dir(QueueDir::Active)).unwrap().next().is_none());

    let (_tmp, q) = queue();
    let q = q.with_recycle_limit(0);
    let id = commit(&q, "a@example.test", b"x\r\n");
    deliver(&q, &id);
    assert_eq!(q.find(&id), None);
    assert!(recycled(&q).is_empty(), "limit 0 recycles nothing");
    commit(&other(&q), "b@example.test", b"y\r\n");
}

#[test]
fn recycle_is_invisible_to_listings() {
    let (_tmp, q) = queue();
    let kept = commit(&q, "kept@example.test", b"kept\r\n");
    let gone = commit(&q, "gone@example.test", b"gone\r\n");
    deliver(&q, &gone);
    // Even a full, complete-looking leftover (crash during retire) is not a message.
    let leftover = commit(&q, "left@example.test", b"left\r\n");
    fs::rename(q.path(QueueDir::Incoming, &leftover), q.recycle_dir().join(leftover.as_str())).unwrap();
    assert_eq!(recycled(&q).len(), 2);

    for d in QueueDir::ALL {
        let want = if d == QueueDir::Incoming { vec![kept.clone()] } else { vec![] };
        assert_eq!(q.scan(d).unwrap(), want, "{d}");
    }
    assert_eq!(q.find(&gone), None);
    assert_eq!(q.find(&leftover), None);
    let mut seen = Vec::new();
    let warnings = rpost_queue::show::visit_queue(&q, |f, d| seen.push((f.id.clone(), d)));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(seen, vec![(kept.clone(), QueueDir::Incoming)]);
    assert!(QueueDir::ALL.iter().all(|d| d.name() != RECYCLE_DIR));
    // Cleanup of crashed sessions does not reach into recycle/ either.
    assert!(q.cleanup_incoming(std::time::Duration::ZERO).unwrap().is_empty());
    assert_eq!(recycled(&q).len(), 2);
}

#[test]
fn old_spools_without_recycle_still_work() {
    let (_tmp, q) = queue();
    fs::remove_dir(q.recycle_dir()).unwrap();
    let id = commit(&q, "a@example.test", b"x\r\n");
    deliver(&q, &id);
    assert_eq!(q.find(&id), None);
    assert!(!q.recycle_dir().exists());
    let q2 = other(&q);
    let id = commit(&q2, "b@example.test", b"y\r\n");
    assert_eq!(q2.scan(QueueDir::Incoming).unwrap(), vec![id]);
    q2.ensure_dirs().unwrap();
    assert_eq!(mode(&q2.recycle_dir()), 0o700);
}

/// Whatever is planted in recycle/ under a queue-ID name, only our own plain, singly linked,
/// unlocked files are taken, and nothing else is truncated or moved.
#[test]
fn odd_files_in_recycle_are_left_alone() {
    let (tmp, q) = queue();
    let r = q.recycle_dir();
    // A symlink to a file outside.
    let target = tmp.path().join("precious");
    fs::write(&target, b"precious").unwrap();
    std::os::unix::fs::symlink(&target, r.join("0000000000000001")).unwrap();
    // A file with a second link (still a message elsewhere).
    let linked = commit(&q, "a@example.test", b"still queued\r\n");
    fs::hard_link(q.path(QueueDir::Incoming, &linked), r.join("0000000000000002")).unwrap();
    // A FIFO: opening it for writing must not hang.
    nix::unistd::mkfifo(&r.join("0000000000000003"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A directory.
    fs::create_dir(r.join("0000000000000004")).unwrap();
    // A file someone else holds locked (a taker in the middle of claiming it).
    let locked_path = r.join("0000000000000005");
    fs::write(&locked_path, b"locked").unwrap();
    let lock = Flock::lock(fs::File::open(&locked_path).unwrap(), FlockArg::LockExclusive).unwrap();

    let q2 = other(&q);
    let new = commit(&q2, "b@example.test", b"new\r\n");
    let md = fs::metadata(q2.path(QueueDir::Incoming, &new)).unwrap();
    assert_eq!(md.nlink(), 1);
    assert_eq!(fs::read(&target).unwrap(), b"precious");
    assert_eq!(q.open(QueueDir::Incoming, &linked).unwrap().content().unwrap(), b"still queued\r\n");
    assert_eq!(fs::read(&locked_path).unwrap(), b"locked");
    for n in 1..=5 {
        assert!(fs::symlink_metadata(r.join(format!("{n:016X}"))).is_ok(), "{n} was moved");
    }
    let mut incoming = q.scan(QueueDir::Incoming).unwrap();
    incoming.sort();
    let mut want = vec![linked, new];
    want.sort();
    assert_eq!(incoming, want);
    drop(lock);
    // Released: now it is fair game (our own plain file), its magic overwritten before reuse.
    let ino = fs::metadata(&locked_path).unwrap().ino();
    let third = other(&q).create(&envelope("c@example.test")).unwrap();
    let md = fs::metadata(third.path()).unwrap();
    assert_eq!((md.ino(), md.mode() & 0o777), (ino, 0o600));
    assert_eq!(fs::read(third.path()).unwrap()[0], 0);
    assert!(!locked_path.exists());
}

/// A delivery agent still reading a message that was retired meanwhile (qmgr gave up on it
/// and delivered the message another way) must not take the inode's next message for it.
#[test]
fn a_reader_of_a_retired_file_gets_an_error_not_another_message() {
    let (_tmp, q) = queue();
    let old = commit(&q, "a@example.test", &long_content());
    q.move_without_sync(&old, QueueDir::Incoming, QueueDir::Active).unwrap();
    let f = q.open(QueueDir::Active, &old).unwrap();
    let mut reader = f.content_reader().unwrap();
    let mut first = vec![0u8; 100];
    reader.read_exact(&mut first).unwrap();
    q.retire(QueueDir::Active, &old).unwrap();
    // The inode gets a new message at least as long as the old one.
    let q2 = other(&q);
    let mut m = q2.create(&envelope("b@example.test")).unwrap();
    m.write_content(&vec![b'N'; long_content().len() + 1000]).unwrap();
    m.commit().unwrap();
    let mut rest = Vec::new();
    let err = reader.read_to_end(&mut rest).unwrap_err();
    assert!(err.to_string().contains("removed while being read"), "{err}");
    // Reading it afresh by its old name: gone.
    assert!(q.open(QueueDir::Active, &old).is_err());

    // An undisturbed reader reads to the end as before.
    let id = commit(&q, "c@example.test", b"whole\r\n");
    let f = q.open(QueueDir::Incoming, &id).unwrap();
    let mut all = Vec::new();
    f.content_reader().unwrap().read_to_end(&mut all).unwrap();
    assert_eq!(all, b"whole\r\n");
}

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// What a delivery left in tmp/: everything but this process's lock seeds, which stay there
/// on purpose (see `lock.rs`).
fn leftovers(tmp: &Path) -> Vec<String> {
    files(tmp).into_iter().filter(|n| !n.starts_with("rpost-lock.")).collect()
}

fn me() -> (u32, u32) {
    (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw())
}

#[test]
fn delivery_names_sizes_and_lf_storage() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("home/alice/Maildir");
    let m = Maildir::open(&root);
    let msg = b"Subject: hi\r\n\r\nline one\r\nline two\r\n";
    let d = m.deliver(&mut &msg[..], "").unwrap();
    let stored = std::fs::read(&d.path).unwrap();
    assert_eq!(stored, b"Subject: hi\n\nline one\nline two\n");
    assert_eq!(d.size, stored.len() as u64);
    assert_eq!(d.vsize, msg.len() as u64, "W= is the CRLF size");
    assert!(d.filename.ends_with(&format!(",S={},W={}", d.size, d.vsize)), "{}", d.filename);
    assert!(d.filename.split('.').next().unwrap().parse::<u64>().is_ok(), "{}", d.filename);
    assert!(d.filename.contains(&format!("P{}.", std::process::id())));
    assert_eq!(d.path.parent().unwrap(), root.join("new"));
    assert_eq!(d.uid, Some(1));
    assert!(leftovers(&root.join("tmp")).is_empty(), "tmp/ is cleaned up");
    for (p, mode) in [(&root, 0o700), (&root.join("new"), 0o700), (&root.join("cur"), 0o700), (&d.path, 0o600)] {
        assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, mode, "{}", p.display());
    }

    // LF content is stored as is; bare CR stays; W counts the CRs an LF needs.
    let d2 = m.deliver(&mut &b"a\nb\r\r\nc\rd"[..], "").unwrap();
    assert_eq!(std::fs::read(&d2.path).unwrap(), b"a\nb\r\nc\rd");
    assert_eq!((d2.size, d2.vsize), (8, 9));
    assert_eq!(d2.uid, Some(2));

    let list = m.uidlist().unwrap().unwrap();
    assert_eq!(list.next_uid, 3);
    assert_eq!(list.uid_of(&d.filename), Some(1));
    assert_eq!(list.uid_of(&d2.filename), Some(2));
    let text = std::fs::read_to_string(root.join("dovecot-uidlist")).unwrap();
    let uv = list.uid_validity;
    assert_eq!(
        text,
        format!("3 V{uv} N2 G{}\n1 :{}\n2 :{}\n", list.guid, d.filename, d2.filename),
        "Dovecot's v3 layout; the second record was appended, as Dovecot does, so N lags"
    );
    assert_eq!(std::fs::read_to_string(root.join("dovecot-uidvalidity")).unwrap(), format!("{uv:08x}"));
    assert!(root.join(format!("dovecot-uidvalidity.{uv:08x}")).exists());
    assert!(!root.join("dovecot-uidlist.lock").exists());
    assert_eq!(m.usage().unwrap(), d.size + d2.size);
}

#[test]
fn flags_put_the_message_in_cur() {
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("Maildir"));
    let d = m.deliver(&mut &b"x\r\n"[..], "SF").unwrap();
    assert_eq!(d.path.parent().unwrap(), t.path().join("Maildir/cur"));
    assert!(d.filename.ends_with(",S=2,W=3:2,FS"), "{}", d.filename);
    assert_eq!(m.uidlist().unwrap().unwrap().records[0].filename, d.filename.split(':').next().unwrap());
    assert!(matches!(m.deliver(&mut &b"x"[..], "S:"), Err(MaildirError::InvalidFlags(_))));
}

#[test]
fn folders_are_maildirplusplus() {
    let t = tempfile::tempdir().unwrap();
    let inbox = Maildir::open(t.path().join("Maildir"));
    let f = inbox.folder("Lists/rust").unwrap();
    assert_eq!(f.path(), t.path().join("Maildir/.Lists.rust"));
    assert_eq!(f.name(), "Lists/rust");
    assert!(!f.exists());
    assert!(matches!(f.deliver(&mut &b"x"[..], ""), Err(MaildirError::NoMailbox(n)) if n == "Lists/rust"));
    assert!(!f.path().exists());
    f.create().unwrap();
    assert!(f.exists());
    assert_eq!(files(&f.path()), ["cur", "maildirfolder", "new", "tmp"]);
    assert_eq!(std::fs::metadata(f.path().join("maildirfolder")).unwrap().len(), 0);
    let d = f.deliver(&mut &b"hello\n"[..], "").unwrap();
    assert_eq!(d.uid, Some(1));
    // Each mailbox has its own uidlist; UIDVALIDITY values come from the store root's file.
    let d2 = inbox.deliver(&mut &b"hello\n"[..], "").unwrap();
    assert_eq!(d2.uid, Some(1));
    let (a, b) = (f.uidlist().unwrap().unwrap().uid_validity, inbox.uidlist().unwrap().unwrap().uid_validity);
    assert_eq!(b, a + 1);
    assert!(!f.path().join("dovecot-uidvalidity").exists());
    inbox.folder("Sent").unwrap().create().unwrap();
    assert_eq!(inbox.folders().unwrap(), ["Lists/rust", "Sent"]);
    assert_eq!(inbox.folder("inbox").unwrap(), inbox);
    assert_eq!(inbox.usage().unwrap(), 12);
    for bad in ["../x", "..", "a/../../b", "/etc", "a.b", ".x"] {
        assert!(matches!(inbox.folder(bad), Err(MaildirError::InvalidName { .. })), "{bad}");
    }
}

#[test]
fn quota_refuses_and_cleans_up() {
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M")).with_quota(Some(Quota::lda(100)));
    m.deliver(&mut &[b'x'; 60][..], "").unwrap();
    // 60 + 45 = 105: over the limit, within the 10% grace of an LDA delivery.
    m.deliver(&mut &[b'x'; 45][..], "").unwrap();
    let err = m.deliver(&mut &[b'x'; 1][..], "").unwrap_err();
    assert!(err.is_over_quota(), "{err}");
    assert!(leftovers(&t.path().join("M/tmp")).is_empty());
    assert_eq!(files(&t.path().join("M/new")).len(), 2);
    let strict = Quota::strict(100);
    assert!(strict.allows(99, 1) && !strict.allows(99, 2));
    assert!(!Quota::lda(100).allows(50, 61) && Quota::lda(100).allows(50, 60));
}

#[test]
fn planted_symlinks_are_not_followed() {
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let root = t.path().join("Maildir");
    let m = Maildir::open(&root);
    m.create().unwrap();
    // new/ replaced by a link to a directory elsewhere.
    std::fs::remove_dir(root.join("new")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("new")).unwrap();
    assert!(m.deliver(&mut &b"x"[..], "").is_err());
    assert!(files(&outside).is_empty());
    assert!(leftovers(&root.join("tmp")).is_empty());
    // A planted uidlist lock link does not make the lock writer follow it.
    std::fs::remove_file(root.join("new")).unwrap();
    std::fs::create_dir(root.join("new")).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), root.join("dovecot-uidlist.tmp")).unwrap();
    let d = m.deliver(&mut &b"x"[..], "").unwrap();
    assert_eq!(d.uid, Some(1));
    assert!(!outside.join("victim").exists());

    // With an owner (root delivering for a user): a link in a directory others can write is
    // refused on the way to the store, a link in a root-owned 0755 directory is followed.
    let (uid, gid) = me();
    let shared = t.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&outside, shared.join("alice")).unwrap();
    let m = Maildir::open(shared.join("alice/Maildir")).with_owner(uid, gid);
    let err = m.deliver(&mut &b"x"[..], "").unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(files(&outside).is_empty());
    // The same without an owner follows it (the process runs as the user anyway).
    Maildir::open(shared.join("alice/Maildir")).deliver(&mut &b"x"[..], "").unwrap();
    // ".." is refused when walking for another user.
    let m = Maildir::open(t.path().join("shared/../outside/M")).with_owner(uid, gid);
    assert!(m.create().is_err());
}

#[test]
fn owner_gets_everything_created() {
    let (uid, gid) = me();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("vmail/example.com/alice/Maildir");
    // As root, hand the files to nobody; otherwise to ourselves (chown to self is allowed).
    let (ou, og) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
    let m = Maildir::open(&root).with_owner(ou, og);
    let d = m.deliver(&mut &b"x\r\n"[..], "").unwrap();
    for p in [
        t.path().join("vmail"),
        t.path().join("vmail/example.com/alice"),
        root.clone(),
        root.join("new"),
        root.join("tmp"),
        d.path.clone(),
        root.join("dovecot-uidlist"),
        root.join("dovecot-uidvalidity"),
    ] {
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (ou, og), "{}", p.display());
    }
    let f = m.folder("Sent").unwrap();
    f.create().unwrap();
    assert_eq!(std::fs::metadata(f.path().join("maildirfolder")).unwrap().uid(), ou);
    // dovecot-uidvalidity hard-linked elsewhere is not written through.
    if uid == 0 {
        let victim = t.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::remove_file(root.join("dovecot-uidvalidity")).unwrap();
        std::fs::hard_link(&victim, f.path().join("../dovecot-uidvalidity")).unwrap();
        f.deliver(&mut &b"x"[..], "").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}

#[test]
fn concurrent_deliveries_get_distinct_uids() {
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M"));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                (0..5).map(|_| m.deliver(&mut &b"x\n"[..], "").unwrap().uid.unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut uids: Vec<u32> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    uids.sort();
    assert_eq!(uids, (1..=40).collect::<Vec<_>>());
    let list = m.uidlist().unwrap().unwrap();
    assert_eq!(list.records.len(), 40);
    assert_eq!(files(&t.path().join("M/new")).len(), 40);
}

#[test]
fn uidlist_load_and_save_by_path() {
    let t = tempfile::tempdir().unwrap();
    assert_eq!(Uidlist::load(t.path()).unwrap(), None);
    let mut l = Uidlist::new(1234);
    assert_eq!(l.assign("a,S=1,W=1"), 1);
    l.save(t.path()).unwrap();
    assert_eq!(Uidlist::load(t.path()).unwrap().unwrap(), l);
    std::fs::write(t.path().join("dovecot-uidlist"), "garbage").unwrap();
    assert!(matches!(Uidlist::load(t.path()), Err(MaildirError::Corrupt { .. })));
    // A broken list is started over at the next delivery, as Dovecot does.
    let m = Maildir::open(t.path());
    assert_eq!(m.deliver(&mut &b"x"[..], "").unwrap().uid, Some(1));
}

#[test]
fn subscriptions_use_dovecots_v2_format() {
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M"));
    assert!(m.subscriptions().unwrap().is_empty());
    m.subscribe("Lists/rust", true).unwrap();
    m.subscribe("inbox", true).unwrap();
    m.subscribe("Sent", true).unwrap();
    m.subscribe("Sent", true).unwrap();
    assert_eq!(
        std::fs::read_to_string(t.path().join("M/subscriptions")).unwrap(),
        "V\t2\n\nLists\trust\nINBOX\nSent\n"
    );
    assert_eq!(m.subscriptions().unwrap(), ["Lists/rust", "INBOX", "Sent"]);
    m.subscribe("INBOX", false).unwrap();
    assert_eq!(m.subscriptions().unwrap(), ["Lists/rust", "Sent"]);
    assert!(m.subscribe("../x", true).is_err());
    // Version 1 files (one name per line) are kept in their format.
    std::fs::write(t.path().join("M/subscriptions"), "Trash\n").unwrap();
    m.subscribe("Drafts", true).unwrap();
    assert_eq!(std::fs::read_to_string(t.path().join("M/subscriptions")).unwrap(), "Trash\nDrafts\n");
    assert!(!t.path().join("M/subscriptions.lock").exists());
}

#[test]
fn keywords_round_trip_on_disk() {
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M"));
    m.create().unwrap();
    assert_eq!(m.keywords().unwrap(), Keywords::default());
    let mut k = Keywords::default();
    k.add("$Junk");
    m.save_keywords(&k).unwrap();
    assert_eq!(std::fs::read_to_string(t.path().join("M/dovecot-keywords")).unwrap(), "0 $Junk\n");
    assert_eq!(m.keywords().unwrap(), k);
}

#[test]
fn new_mail_is_appended_to_the_uidlist() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("M");
    let m = Maildir::open(&root);
    let list_path = root.join("dovecot-uidlist");
    m.deliver(&mut &b"a\n"[..], "").unwrap();
    let before = std::fs::read_to_string(&list_path).unwrap();
    let b = m.deliver(&mut &b"b\n"[..], "").unwrap();
    assert_eq!(std::fs::read_to_string(&list_path).unwrap(), format!("{before}2 :{}\n", b.filename));

    // A header N ahead of the last record (expunged mail): the next UID follows N.
    let guid = m.uidlist().unwrap().unwrap().guid;
    std::fs::write(&list_path, format!("3 V7 N50 G{guid}\n1 :a\n")).unwrap();
    assert_eq!(m.deliver(&mut &b"c\n"[..], "").unwrap().uid, Some(50));
    // A header N behind the last record (appended by Dovecot): the record wins.
    std::fs::write(&list_path, format!("3 V7 N2 G{guid}\n1 :a\n60 :b\n")).unwrap();
    assert_eq!(m.deliver(&mut &b"d\n"[..], "").unwrap().uid, Some(61));

    // An append torn by a crash: readers skip the broken line, the next delivery rewrites.
    std::fs::write(&list_path, format!("3 V7 N2 G{guid}\n1 :a\n60 :b\n6")).unwrap();
    assert_eq!(m.uidlist().unwrap().unwrap().records.len(), 2);
    let e = m.deliver(&mut &b"e\n"[..], "").unwrap();
    assert_eq!(e.uid, Some(61));
    let text = std::fs::read_to_string(&list_path).unwrap();
    assert_eq!(text, format!("3 V7 N62 G{guid}\n1 :a\n60 :b\n61 :{}\n", e.filename));
}

#[test]
fn a_uid_given_between_link_and_lock_is_kept() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("M");
    let m = Maildir::open(&root);
    m.deliver(&mut &b"a\n"[..], "").unwrap();
    let list_path = root.join("dovecot-uidlist");
    let before = crate::uidlist::ListMark::of(&std::fs::metadata(&list_path).unwrap());
    let before = Some(&before);
    // An IMAP session numbers the new file first (it appends, as Dovecot does).
    let mut text = std::fs::read_to_string(&list_path).unwrap();
    text.push_str("5 :1700000000.M1P1.host,S=3\n");
    std::fs::write(&list_path, &text).unwrap();
    let lock = m.lock_uidlist(Duration::from_secs(5)).unwrap();
    let got = lock.append_batch(&[("1700000000.M1P1.host,S=3,W=3", before)]).unwrap().unwrap();
    assert_eq!((got.uids, got.file.is_some()), (vec![6], true), "another name: a new record");
    let got = lock.append_batch(&[("1700000000.M1P1.host,S=3", before)]).unwrap().unwrap();
    assert_eq!((got.uids, got.file.is_none()), (vec![5], true));
    // Rewritten meanwhile (another inode): the whole list is searched.
    let got = lock.append_batch(&[("1700000000.M1P1.host,S=3", None)]).unwrap().unwrap();
    assert_eq!(got.uids, vec![5]);
    // A batch: the numbered file keeps its UID, the new ones get the next ones, in one
    // append; a name given twice gets one record.
    let got = lock
        .append_batch(&[("b", None), ("1700000000.M1P1.host,S=3:2,S", before), ("c", before), ("b:2,T", None)])
        .unwrap()
        .unwrap();
    assert_eq!(got.uids, vec![7, 5, 8, 7]);
    assert!(std::fs::read_to_string(&list_path).unwrap().ends_with("6 :1700000000.M1P1.host,S=3,W=3\n7 :b\n8 :c\n"));
    assert!(matches!(lock.append_batch(&[("ok", None), ("a/b", None)]), Err(MaildirError::Corrupt { .. })));
}

#[test]
fn appends_after_a_header_only_list_number_on_from_the_first_record() {
    // STATUS or SELECT of an empty folder writes a list with a header and no record; the
    // first delivery appends record 1 without touching N1, and the next must not read the
    // header's N as the next UID again (it did: two files had UID 1).
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("M");
    let m = Maildir::open(&root);
    m.create().unwrap();
    let list_path = root.join("dovecot-uidlist");
    std::fs::write(&list_path, "3 V7 N1 Gd24ba313062f55fc4f43e05c34148f54\n").unwrap();
    let uids: Vec<Option<u32>> =
        (0..3).map(|i| m.deliver(&mut format!("m{i}\n").as_bytes(), "").unwrap().uid).collect();
    assert_eq!(uids, vec![Some(1), Some(2), Some(3)]);
    let list = m.uidlist().unwrap().unwrap();
    let got: Vec<u32> = list.records.iter().map(|r| r.uid).collect();
    assert_eq!(got, vec![1, 2, 3]);
}

/// Polls `cond` (generously: the machine may be busy) until it holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks the list against new/: one record per file, none for anything else, and returns
/// the UIDs by file name.
fn check_list_matches_files(m: &Maildir) -> std::collections::HashMap<String, u32> {
    let list = m.uidlist().unwrap().unwrap();
    let on_disk = files(&m.path().join("new"));
    let mut by_name = std::collections::HashMap::new();
    for r in &list.records {
        assert!(by_name.insert(r.base().to_string(), r.uid).is_none(), "{} has two UIDs", r.base());
    }
    let mut listed: Vec<String> = by_name.keys().cloned().collect();
    listed.sort();
    assert_eq!(listed, on_disk, "the uidlist names exactly the files in new/");
    by_name
}

#[test]
fn concurrent_deliveries_share_uidlist_lock_cycles() {
    const THREADS: usize = 16;
    const EACH: usize = 25;
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M"));
    m.create().unwrap();
    let lock_path = m.path().join("dovecot-uidlist.lock");
    // Held by "an IMAP session" of this process at the start, so that requests surely meet
    // at least once, however fast this machine delivers.
    let held = m.lock_uidlist(Duration::from_secs(5)).unwrap();
    let base = lock::acquisitions(&lock_path);
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                (0..EACH)
                    .map(|_| {
                        let d = m.deliver(&mut &b"x\n"[..], "").unwrap();
                        (d.filename, d.uid.expect("a UID"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    wait_until("every thread's first request waits", || {
        combine::pending(&m.path()) + combine::in_flight(&m.path()) == THREADS
    });
    drop(held);
    let got: Vec<(String, u32)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let mut uids: Vec<u32> = got.iter().map(|(_, u)| *u).collect();
    uids.sort();
    assert_eq!(uids, (1..=(THREADS * EACH) as u32).collect::<Vec<_>>(), "distinct, without gaps");
    let listed = check_list_matches_files(&m);
    for (name, uid) in &got {
        assert_eq!(listed.get(name), Some(uid), "{name}");
    }
    let cycles = lock::acquisitions(&lock_path) - base;
    assert!(cycles >= 2 && cycles < (THREADS * EACH) as u64, "{cycles} lock cycles for {} deliveries", THREADS * EACH);
    assert!(!lock_path.exists());
}

/// Sixteen deliveries queued while a session of this process holds the uidlist lock, released
/// once all of them wait; their UIDs, sorted.
fn sixteen_deliveries_behind_a_held_lock(m: &Maildir) -> Vec<u32> {
    let held = m.lock_uidlist(Duration::from_secs(5)).unwrap();
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || m.deliver(&mut &b"x\n"[..], "").unwrap().uid.expect("a UID"))
        })
        .collect();
    wait_until("16 requests are queued", || combine::pending(&m.path()) == 16);
    drop(held);
    let mut uids: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    uids.sort();
    uids
}

#[test]
fn requests_queued_behind_a_lock_cycle_form_one_batch() {
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M"));
    m.deliver(&mut &b"first\n"[..], "").unwrap();
    let lock_path = m.path().join("dovecot-uidlist.lock");
    let base = lock::acquisitions(&lock_path);
    // An IMAP session of this process holds the lock: the first delivery's leader waits for
    // it, the other fifteen queue meanwhile and join its cycle.
    let uids = sixteen_deliveries_behind_a_held_lock(&m);
    assert_eq!(uids, (2..=17).collect::<Vec<_>>());
    check_list_matches_files(&m);
    // The session's cycle, and one for the sixteen.
    assert_eq!(lock::acquisitions(&lock_path) - base, 2);
    let list_path = m.path().join("dovecot-uidlist");
    let text = std::fs::read_to_string(&list_path).unwrap();
    assert_eq!(text.lines().count(), 18, "appended, not rewritten: header and 17 records\n{text}");

    // A version 1 list cannot be appended to: the batch is numbered in one whole rewrite.
    let list = m.uidlist().unwrap().unwrap();
    let mut v1 = format!("1 {} {}\n", list.uid_validity, list.next_uid);
    for r in &list.records {
        v1.push_str(&format!("{} {}\n", r.uid, r.filename));
    }
    std::fs::write(&list_path, v1).unwrap();
    let base = lock::acquisitions(&lock_path);
    let uids = sixteen_deliveries_behind_a_held_lock(&m);
    assert_eq!(uids, (18..=33).collect::<Vec<_>>());
    check_list_matches_files(&m);
    assert_eq!(lock::acquisitions(&lock_path) - base, 2);
    let text = std::fs::read_to_string(&list_path).unwrap();
    assert!(text.starts_with(&format!("3 V{} N34 G", list.uid_validity)), "rewritten as version 3:\n{text}");
    assert_eq!(text.lines().count(), 34);
}

#[test]
fn an_imap_sync_racing_the_deliveries_never_gives_a_file_two_uids() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M"));
    m.create().unwrap();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // As imapd's sync does: under the lock, number every file of new/ the list lacks, and
    // write the whole list (a rename: the deliveries' marks then see another file).
    let imap = {
        let (imap, stop) = (Maildir::open(m.path()), stop.clone());
        std::thread::spawn(move || {
            let mut syncs = 0;
            while !stop.load(Ordering::Relaxed) || syncs == 0 {
                let lock = imap.lock_uidlist(Duration::from_secs(60)).unwrap();
                let mut list = lock.load().unwrap();
                let mut names = files(&imap.path().join("new"));
                names.retain(|n| list.uid_of(n).is_none());
                for n in &names {
                    list.assign(n);
                }
                lock.save(&list).unwrap();
                drop(lock);
                syncs += 1;
                std::thread::yield_now();
            }
            syncs
        })
    };
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| {
                        let d = m.deliver(&mut &b"x\n"[..], "").unwrap();
                        (d.filename, d.uid.expect("a UID"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let got: Vec<(String, u32)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    assert!(imap.join().unwrap() > 0);
    let listed = check_list_matches_files(&m);
    for (name, uid) in &got {
        assert_eq!(listed.get(name), Some(uid), "{name}: the delivery and the list agree");
    }
    let mut uids: Vec<u32> = got.iter().map(|(_, u)| *u).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), got.len(), "distinct UIDs");
}

#[test]
fn a_lock_held_by_another_process_times_out_every_waiter() {
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M")).with_lock_timeout(Duration::from_millis(500));
    m.create().unwrap();
    let Ok(mut other) = std::process::Command::new("sleep").arg("300").spawn() else {
        eprintln!("skipped: cannot run sleep(1) for a live lock owner");
        return;
    };
    let lock_path = m.path().join("dovecot-uidlist.lock");
    std::fs::write(&lock_path, format!("{}:{}", other.id(), crate::name::raw_hostname())).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let m = m.clone();
            std::thread::spawn(move || {
                let d = m.deliver(&mut &b"x\n"[..], "").unwrap();
                let (store, mbox) = m.open_dirs(false).unwrap();
                let err = m.assign_uid(&mbox, &store, &format!("direct{i}"), None).unwrap_err();
                (d, err)
            })
        })
        .collect();
    for h in handles {
        let (d, err) = h.join().unwrap();
        assert_eq!(d.uid, None, "delivered, without a UID yet");
        assert!(d.path.exists());
        assert!(matches!(&err, MaildirError::LockTimeout(p) if *p == lock_path), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), format!("{}:{}", other.id(), crate::name::raw_hostname()));
    // A leader out of time fails only the requests out of time: a patient one queued
    // behind it stays queued, leads the next cycle and gets its UID once the lock is free.
    let assign = |m: Maildir, name: &'static str| {
        std::thread::spawn(move || {
            let (store, mbox) = m.open_dirs(false).unwrap();
            m.assign_uid(&mbox, &store, name, None)
        })
    };
    let impatient = assign(m.clone(), "impatient");
    // Queued and leading: both happen under one hold of the queue's mutex.
    wait_until("the impatient request leads", || combine::pending(&m.path()) == 1);
    let patient = assign(m.clone().with_lock_timeout(Duration::from_secs(300)), "patient");
    wait_until("the patient request is queued", || combine::pending(&m.path()) == 2);
    assert!(matches!(impatient.join().unwrap(), Err(MaildirError::LockTimeout(_))));
    assert_eq!(combine::pending(&m.path()), 1, "the patient request is still queued");
    let _ = other.kill();
    let _ = other.wait();
    std::fs::remove_file(&lock_path).unwrap();
    assert_eq!(patient.join().unwrap().unwrap(), 1);
    // The lock is free again: the next delivery numbers its own file.
    let d = m.deliver(&mut &b"y\n"[..], "").unwrap();
    assert_eq!(d.uid, Some(2));
    assert_eq!(files(&m.path().join("new")).len(), 9);
}

#[test]
fn a_panicking_leader_answers_its_waiters() {
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M"));
    m.deliver(&mut &b"first\n"[..], "").unwrap();
    let held = m.lock_uidlist(Duration::from_secs(5)).unwrap();
    let assign = |name: String| {
        let m = m.clone();
        std::thread::spawn(move || {
            let (store, mbox) = m.open_dirs(false).unwrap();
            m.assign_uid(&mbox, &store, &name, None)
        })
    };
    // Five requests queue while the lock is held, so they form one batch.
    let mut batch: Vec<_> = (0..4).map(|i| assign(format!("b{i}"))).collect();
    batch.push(assign(combine::PANIC_NAME.into()));
    wait_until("five requests are queued", || combine::pending(&m.path()) == 5);
    drop(held);
    let (mut panicked, mut failed) = (0, 0);
    for h in batch {
        match h.join() {
            Err(_) => panicked += 1,
            Ok(Err(MaildirError::Io { .. })) => failed += 1,
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((panicked, failed), (1, 4), "one leader panicked, the other four got an error");
    // The queue is usable again.
    assert_eq!(assign("c".into()).join().unwrap().unwrap(), 2);
}

#[test]
fn tmp_cleanup_removes_only_old_files_and_at_most_every_eight_hours() {
    let t = tempfile::tempdir().unwrap();
    let m = Maildir::open(t.path().join("M"));
    m.create().unwrap();
    let tmp = t.path().join("M/tmp");
    std::fs::write(tmp.join("1795000000.M1P2.host"), "partial").unwrap();
    std::fs::create_dir(tmp.join("a-directory")).unwrap();
    // tmp/ was just made: its access time says "scanned now", so nothing is looked at.
    assert_eq!(m.clean_tmp().unwrap(), 0);
    // Scanned eight hours ago, but the file changed just now: kept (its ctime cannot be
    // backdated, which is also why a seed in use, relinked for every lock, is never removed).
    let day_and_half = std::time::SystemTime::now() - Duration::from_secs(40 * 3600);
    let old = std::fs::FileTimes::new().set_accessed(day_and_half).set_modified(day_and_half);
    std::fs::File::options().write(true).open(tmp.join("1795000000.M1P2.host")).unwrap().set_times(old).unwrap();
    let set_tmp_atime = |secs_ago: u64| {
        let when = std::time::SystemTime::now() - Duration::from_secs(secs_ago);
        let f = std::fs::File::open(&tmp).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(when)).unwrap();
    };
    set_tmp_atime(9 * 3600);
    assert_eq!(m.clean_tmp().unwrap(), 0);
    assert!(tmp.join("1795000000.M1P2.host").exists());
    // The scan recorded itself in tmp/'s access time.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    use std::os::unix::fs::MetadataExt;
    assert!(std::fs::metadata(&tmp).unwrap().atime() >= now - 5);
    // With every time past the cutoff the file goes; directories stay.
    set_tmp_atime(9 * 3600);
    assert_eq!(m.clean_tmp_at(now - 8 * 3600, now + 10).unwrap(), 1);
    assert_eq!(files(&tmp), ["a-directory"]);
    // And not again within eight hours.
    std::fs::write(tmp.join("another"), "x").unwrap();
    assert_eq!(m.clean_tmp_at(now - 8 * 3600, now + 10).unwrap(), 0);
    assert!(tmp.join("another").exists());
}

#[test]
fn kept_directory_handles_are_used_only_while_the_paths_lead_to_them() {
    let (uid, gid) = me();
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let home = t.path().join("vmail/alice");
    let root = home.join("Maildir");
    let m = Maildir::open(&root).with_owner(uid, gid);
    let key = handles::Key { mbox: root.clone(), owner: Some(Owner { uid, gid }), secure: true };
    m.deliver(&mut &b"1"[..], "").unwrap();
    let kept = handles::get(&key, false, true).expect("kept after a delivery");
    m.deliver(&mut &b"2"[..], "").unwrap();
    let again = handles::get(&key, false, true).unwrap();
    assert!(Arc::ptr_eq(&kept, &again), "the second delivery reused the handles");
    drop((kept, again));
    assert_eq!(files(&root.join("new")).len(), 2);

    // new/ swapped for a link: the kept handles are dropped and the fresh walk refuses it.
    std::fs::rename(root.join("new"), t.path().join("new.away")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("new")).unwrap();
    assert!(m.deliver(&mut &b"3"[..], "").is_err());
    assert!(files(&outside).is_empty());
    std::fs::remove_file(root.join("new")).unwrap();
    m.deliver(&mut &b"3"[..], "").unwrap();

    // The mailbox renamed away: the next delivery goes to a new mailbox at the path.
    std::fs::rename(&root, t.path().join("Maildir.old")).unwrap();
    m.deliver(&mut &b"4"[..], "").unwrap();
    assert_eq!(files(&root.join("new")).len(), 1);
    assert_eq!(files(&t.path().join("Maildir.old/new")).len(), 1);

    // tmp/ removed: created again.
    std::fs::remove_dir_all(root.join("tmp")).unwrap();
    m.deliver(&mut &b"5"[..], "").unwrap();
    assert_eq!(files(&root.join("new")).len(), 2);

    // A directory above the mailbox replaced by a link in a directory the user can write:
    // refused as by a first walk, although handles were kept for the path.
    std::fs::set_permissions(t.path().join("vmail"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir_all(outside.join("Maildir")).unwrap();
    std::fs::rename(&home, t.path().join("alice.old")).unwrap();
    std::os::unix::fs::symlink(&outside, &home).unwrap();
    let err = m.deliver(&mut &b"6"[..], "").unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert!(!outside.join("Maildir/new").exists());

    // Folders: the store's path is checked too.
    let inbox = Maildir::open(t.path().join("b/Maildir"));
    let sent = inbox.folder("Sent").unwrap();
    sent.create().unwrap();
    sent.deliver(&mut &b"7"[..], "").unwrap();
    std::fs::rename(t.path().join("b"), t.path().join("b.old")).unwrap();
    assert!(matches!(sent.deliver(&mut &b"8"[..], ""), Err(MaildirError::NoMailbox(_))));
}

#[test]
fn at_most_capacity_mailboxes_are_kept_open() {
    let t = tempfile::tempdir().unwrap();
    for i in 0..handles::CAPACITY + 4 {
        Maildir::open(t.path().join(format!("u{i}/Maildir"))).deliver(&mut &b"x"[..], "").unwrap();
        assert!(handles::len() <= handles::CAPACITY);
    }
}

use super::*;
use rpost_imap_proto::{Event, Limits, Reader};

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("imapd-session-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn session(root: &std::path::Path) -> Session {
    let md = Maildir::open(root.join("Maildir"));
    let s = Session::new(md.clone(), md);
    s.autocreate();
    s
}

fn run(s: &mut Session, line: &str) -> String {
    let mut r = Reader::new(Limits::default());
    r.feed(line.as_bytes());
    r.feed(b"\r\n");
    loop {
        match r.next() {
            Some(Event::Command(c)) => return String::from_utf8(s.execute(&c)).unwrap(),
            Some(Event::Continue) => continue,
            other => panic!("{line}: {other:?}"),
        }
    }
}

fn deliver(root: &std::path::Path, subject: &str) -> u32 {
    let md = Maildir::open(root.join("Maildir"));
    let msg = format!(
        "From: Alice <alice@example.test>\nTo: bob@example.test\nSubject: {subject}\nDate: Mon, 1 Jan 2024 10:00:00 +0000\n\nHello {subject}\n"
    );
    md.deliver(&mut msg.as_bytes(), "").unwrap().uid.unwrap()
}

fn ok(out: &str) {
    let last = out.lines().last().unwrap_or("");
    assert!(last.split(' ').nth(1) == Some("OK"), "not OK: {out}");
}

#[test]
fn select_fetch_store_search_expunge() {
    let t = TempDir::new("core");
    let mut s = session(&t.0);
    let u1 = deliver(&t.0, "one");
    let u2 = deliver(&t.0, "two");
    deliver(&t.0, "three");
    let out = run(&mut s, "a SELECT INBOX");
    ok(&out);
    assert!(out.contains("* 3 EXISTS\r\n* 3 RECENT\r\n"), "{out}");
    assert!(out.contains("[UIDNEXT 4]") && out.contains("[UNSEEN 1]") && out.contains("[READ-WRITE]"), "{out}");
    let out = run(&mut s, "b FETCH 1:2 (UID FLAGS RFC822.SIZE ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    ok(&out);
    assert!(out.contains(&format!("* 1 FETCH (UID {u1} FLAGS (\\Recent) RFC822.SIZE 121 ENVELOPE (\"Mon, 1 Jan 2024 10:00:00 +0000\" \"one\" ((\"Alice\" NIL \"alice\" \"example.test\"))")), "{out}");
    assert!(out.contains("BODY[HEADER.FIELDS (SUBJECT)] {16}\r\nSubject: two\r\n\r\n)"), "{out}");
    // BODY[] sets \Seen and says so.
    let out = run(&mut s, "c FETCH 2 BODY[TEXT]");
    assert!(out.contains("* 2 FETCH (BODY[TEXT] {11}\r\nHello two\r\n FLAGS (\\Seen \\Recent))"), "{out}");
    let cur: Vec<String> = std::fs::read_dir(t.0.join("Maildir/cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cur.iter().filter(|n| n.ends_with(":2,S")).count(), 1, "{cur:?}");
    let out = run(&mut s, "d SEARCH UNSEEN");
    assert!(out.starts_with("* SEARCH 1 3\r\n"), "{out}");
    let out = run(&mut s, "e UID SEARCH OR SUBJECT three BODY \"hello TWO\"");
    assert!(out.starts_with(&format!("* SEARCH {u2} 3\r\n")), "{out}");
    let out = run(&mut s, "f STORE 1 +FLAGS (\\Deleted $Junk)");
    assert!(out.contains("* 1 FETCH (FLAGS (\\Deleted $Junk \\Recent))"), "{out}");
    assert_eq!(std::fs::read_to_string(t.0.join("Maildir/dovecot-keywords")).unwrap(), "0 $Junk\n");
    let out = run(&mut s, "g EXPUNGE");
    assert!(out.starts_with("* 1 EXPUNGE\r\n"), "{out}");
    ok(&out);
    let list = std::fs::read_to_string(t.0.join("Maildir/dovecot-uidlist")).unwrap();
    assert!(!list.lines().any(|l| l.starts_with(&format!("{u1} "))), "{list}");
    // UIDs are never reused.
    let u4 = deliver(&t.0, "four");
    assert_eq!(u4, 4);
    let out = run(&mut s, "h NOOP");
    assert!(out.contains("* 3 EXISTS\r\n* 3 RECENT\r\n"), "{out}");
    let out = run(&mut s, "i FETCH 1:* (UID)");
    assert!(out.contains("* 3 FETCH (UID 4)"), "{out}");
}

#[test]
fn two_sessions_see_each_other() {
    let t = TempDir::new("two");
    let mut a = session(&t.0);
    let mut b = session(&t.0);
    deliver(&t.0, "one");
    deliver(&t.0, "two");
    let out_a = run(&mut a, "a SELECT INBOX");
    let out_b = run(&mut b, "b SELECT INBOX");
    // \Recent belongs to exactly one session.
    assert!(out_a.contains("* 2 RECENT"), "{out_a}");
    assert!(out_b.contains("* 0 RECENT"), "{out_b}");
    ok(&run(&mut a, "a STORE 2 +FLAGS.SILENT (\\Flagged)"));
    let out = run(&mut b, "b NOOP");
    assert!(out.contains("* 2 FETCH (UID 2 FLAGS (\\Flagged))"), "{out}");
    ok(&run(&mut a, "a STORE 1 +FLAGS.SILENT (\\Deleted)"));
    ok(&run(&mut a, "a EXPUNGE"));
    // No EXPUNGE during FETCH: sequence numbers stay put.
    let out = run(&mut b, "b FETCH 2 (UID)");
    assert!(!out.contains("EXPUNGE") && out.contains("* 2 FETCH (UID 2)"), "{out}");
    let out = run(&mut b, "b FETCH 1 (FLAGS)");
    assert!(out.contains("NO [EXPUNGEISSUED]"), "{out}");
    let out = run(&mut b, "b NOOP");
    assert!(out.starts_with("* 1 EXPUNGE\r\n"), "{out}");
    // A delivery is seen by both, recent in one.
    deliver(&t.0, "three");
    let out_b = run(&mut b, "b NOOP");
    assert!(out_b.contains("* 2 EXISTS\r\n* 1 RECENT"), "{out_b}");
    let out_a = run(&mut a, "a NOOP");
    assert!(out_a.contains("* 2 EXISTS"), "{out_a}");
    let fa = run(&mut a, "a FETCH 2 FLAGS");
    let fb = run(&mut b, "b FETCH 2 FLAGS");
    assert!(fb.contains("FLAGS (\\Recent)") && fa.contains("FLAGS ()"), "{fa} {fb}");
}

#[test]
fn second_fetch_uses_the_cache() {
    let t = TempDir::new("cache");
    let mut s = session(&t.0);
    deliver(&t.0, "one");
    run(&mut s, "a EXAMINE INBOX");
    ok(&run(&mut s, "b FETCH 1 (ENVELOPE BODYSTRUCTURE)"));
    ok(&run(&mut s, "c FETCH 1 (BODY.PEEK[] BODY[1])"));
    assert_eq!(s.stats.parses, 1);
    // EXAMINE is read-only: no \Seen.
    let out = run(&mut s, "d FETCH 1 FLAGS");
    assert!(out.contains("FLAGS ()"), "{out}");
}

#[test]
fn names_list_append_copy_move() {
    let t = TempDir::new("names");
    let mut s = session(&t.0);
    for bad in ["../x", "a/../b", "a.b", "/etc", "&Jjo"] {
        let out = run(&mut s, &format!("a CREATE \"{bad}\""));
        assert!(out.starts_with("a NO "), "{bad}: {out}");
    }
    assert!(!t.0.join("x").exists());
    ok(&run(&mut s, "b CREATE Projects/2024"));
    ok(&run(&mut s, "c CREATE \"Entwürfe\""));
    assert!(t.0.join("Maildir/.Entw&APw-rfe").is_dir());
    let out = run(&mut s, "d LIST \"\" *");
    for want in [
        "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
        "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"",
        "* LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"",
        "* LIST (\\Noselect \\HasChildren) \"/\" \"Projects\"",
        "* LIST (\\HasNoChildren) \"/\" \"Projects/2024\"",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let out = run(&mut s, "e LIST \"\" %");
    assert!(!out.contains("Projects/2024"), "{out}");
    let out = run(&mut s, "f LSUB \"\" *");
    assert!(out.contains("\"Drafts\"") && !out.contains("Projects"), "{out}");
    let out = run(&mut s, "g APPEND Nowhere {3}\r\nabc");
    assert!(out.starts_with("g NO [TRYCREATE]"), "{out}");
    let out = run(
        &mut s,
        "h APPEND Drafts (\\Draft \\Seen) \"05-Jan-2024 10:00:00 +0100\" {21}\r\nSubject: d\r\n\r\ndraft\r\n",
    );
    assert!(out.starts_with("h OK [APPENDUID "), "{out}");
    ok(&run(&mut s, "i SELECT Drafts"));
    let out = run(&mut s, "j FETCH 1 (FLAGS INTERNALDATE)");
    assert!(out.contains("FLAGS (\\Draft \\Seen) INTERNALDATE \"05-Jan-2024 09:00:00 +0000\""), "{out}");
    let out = run(&mut s, "k UID COPY 1 Trash");
    assert!(out.contains("OK [COPYUID "), "{out}");
    let out = run(&mut s, "l MOVE 1 Archive");
    assert!(out.contains("* OK [COPYUID ") && out.contains("* 1 EXPUNGE"), "{out}");
    let out = run(&mut s, "m STATUS Archive (MESSAGES UNSEEN UIDNEXT)");
    assert!(out.contains("* STATUS \"Archive\" (MESSAGES 1 UNSEEN 0 UIDNEXT 2)"), "{out}");
    ok(&run(&mut s, "n DELETE Projects/2024"));
    ok(&run(&mut s, "o RENAME Trash Bin"));
    assert!(t.0.join("Maildir/.Bin/cur").is_dir());
    deliver(&t.0, "inbox mail");
    ok(&run(&mut s, "p RENAME INBOX Old"));
    let out = run(&mut s, "q STATUS Old (MESSAGES)");
    assert!(out.contains("(MESSAGES 1)"), "{out}");
    let out = run(&mut s, "r STATUS INBOX (MESSAGES)");
    assert!(out.contains("(MESSAGES 0)"), "{out}");
}

#[test]
fn bad_sets_and_states() {
    let t = TempDir::new("states");
    let mut s = session(&t.0);
    let out = run(&mut s, "a FETCH 1 FLAGS");
    assert!(out.starts_with("a BAD No mailbox"), "{out}");
    deliver(&t.0, "one");
    ok(&run(&mut s, "b SELECT inbox"));
    let out = run(&mut s, "c FETCH 5 FLAGS");
    assert!(out.starts_with("c BAD"), "{out}");
    let out = run(&mut s, "d UID FETCH 5:* FLAGS");
    assert!(out.contains("* 1 FETCH (UID 1 FLAGS"), "{out}");
    let out = run(&mut s, "e SEARCH CHARSET KOI8-R ALL");
    assert!(out.starts_with("e NO [BADCHARSET"), "{out}");
    ok(&run(&mut s, "f UNSELECT"));
}

#[test]
fn keywords_from_two_sessions_get_their_own_letters() {
    let t = TempDir::new("kw");
    let mut a = session(&t.0);
    let mut b = session(&t.0);
    deliver(&t.0, "one");
    deliver(&t.0, "two");
    ok(&run(&mut a, "a SELECT INBOX"));
    ok(&run(&mut b, "b SELECT INBOX"));
    // b's keyword table is stale when it adds its own keyword.
    ok(&run(&mut a, "a STORE 1 +FLAGS ($Alpha)"));
    ok(&run(&mut b, "b STORE 2 +FLAGS.SILENT ($Beta)"));
    assert_eq!(std::fs::read_to_string(t.0.join("Maildir/dovecot-keywords")).unwrap(), "0 $Alpha\n1 $Beta\n");
    let out = run(&mut a, "a NOOP");
    assert!(out.contains("* 2 FETCH (UID 2 FLAGS ($Beta \\Recent))"), "{out}");
    let out = run(&mut a, "a FETCH 1:2 FLAGS");
    assert!(out.contains("* 1 FETCH (FLAGS ($Alpha \\Recent))"), "{out}");
    assert!(out.contains("* 2 FETCH (FLAGS ($Beta \\Recent))"), "{out}");
    let out = run(&mut a, "a SEARCH KEYWORD $Beta");
    assert!(out.starts_with("* SEARCH 2\r\n"), "{out}");
}

#[test]
fn logout_line_follows_dovecots_format() {
    let t = TempDir::new("logout");
    let mut s = session(&t.0);
    deliver(&t.0, "one");
    ok(&run(&mut s, "a SELECT INBOX"));
    ok(&run(&mut s, "b FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[TEXT])"));
    ok(&run(&mut s, "c COPY 1 Trash"));
    ok(&run(&mut s, "d STORE 1 +FLAGS (\\Deleted)"));
    ok(&run(&mut s, "e EXPUNGE"));
    let format = "in=%i out=%o deleted=%{deleted} expunged=%{expunged} trashed=%{trashed} hdr_count=%{fetch_hdr_count} hdr_bytes=%{fetch_hdr_bytes} body_count=%{fetch_body_count} body_bytes=%{fetch_body_bytes}%{unknown} 100%%";
    assert_eq!(
        s.stats.logout_line(format, 10, 20),
        "in=10 out=20 deleted=1 expunged=1 trashed=1 hdr_count=1 hdr_bytes=110 body_count=1 body_bytes=11 100%"
    );
}

#[test]
fn a_deleted_selected_mailbox_ends_the_session() {
    let t = TempDir::new("gone");
    let mut a = session(&t.0);
    let mut b = session(&t.0);
    ok(&run(&mut a, "a SELECT Junk"));
    ok(&run(&mut b, "b DELETE Junk"));
    let out = run(&mut a, "a NOOP");
    assert!(out.starts_with("* BYE Selected mailbox was deleted"), "{out}");
    assert!(a.closing());
}

#[test]
fn idle_poll_syncs_only_after_a_change() {
    let t = TempDir::new("idle");
    let mut s = session(&t.0);
    deliver(&t.0, "one");
    ok(&run(&mut s, "a SELECT INBOX"));
    let _ = s.idle_poll(false);
    assert!(s.idle_poll(false).is_empty());
    deliver(&t.0, "two");
    let out = String::from_utf8(s.idle_poll(false)).unwrap();
    assert!(out.starts_with("* 2 EXISTS\r\n"), "{out}");
    assert!(s.idle_poll(true).is_empty());
}

#[test]
fn search_decodes_headers_and_bodies() {
    let t = TempDir::new("search");
    let md = Maildir::open(t.0.join("Maildir"));
    let mut s = session(&t.0);
    let m1 = "From: =?utf-8?q?J=C3=B6rg?= <joerg@example.test>\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n\
Date: Tue, 2 Jan 2024 10:00:00 +0000\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
Sch=C3=B6ne Gr=C3=BC=C3=9Fe\n";
    let m2 =
        "From: other@example.test\nSubject: plain\nDate: Fri, 5 Jan 2024 10:00:00 +0000\nX-Tag: yes\n\nnothing here\n";
    md.deliver(&mut m1.as_bytes(), "").unwrap();
    md.deliver(&mut m2.as_bytes(), "S").unwrap();
    ok(&run(&mut s, "a SELECT INBOX"));
    let search = |s: &mut Session, q: &str| {
        let out = run(s, &format!("s SEARCH {q}"));
        out.lines().next().unwrap_or("").to_string()
    };
    assert_eq!(search(&mut s, "CHARSET UTF-8 SUBJECT {7}\r\ngrüße"), "* SEARCH 1");
    assert_eq!(search(&mut s, "CHARSET UTF-8 FROM \"jörg\""), "* SEARCH 1");
    assert_eq!(search(&mut s, "CHARSET UTF-8 BODY \"schöne\""), "* SEARCH 1");
    assert_eq!(search(&mut s, "TEXT nothing"), "* SEARCH 2");
    assert_eq!(search(&mut s, "HEADER X-Tag \"\""), "* SEARCH 2");
    assert_eq!(search(&mut s, "SENTBEFORE 3-Jan-2024"), "* SEARCH 1");
    assert_eq!(search(&mut s, "SENTSINCE 3-Jan-2024 SEEN"), "* SEARCH 2");
    assert_eq!(search(&mut s, "NOT SEEN"), "* SEARCH 1");
    assert_eq!(search(&mut s, "LARGER 150 SMALLER 100000"), "* SEARCH 1");
    assert_eq!(search(&mut s, "SINCE 1-Jan-2000 NEW"), "* SEARCH 1");
    assert_eq!(search(&mut s, "OR 2 UID 1 NOT ALL"), "* SEARCH");
    assert_eq!(search(&mut s, "OR 2 UID 1"), "* SEARCH 1 2");
}

#[test]
fn a_large_mailbox_without_uidlist_is_numbered_in_delivery_order() {
    let t = TempDir::new("large");
    let root = t.0.join("Maildir");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // 20,000 messages as another Maildir program left them, no dovecot-uidlist.
    for i in 0..20_000u32 {
        let name = format!("{}.M{i}P1.host,S=20:2,S", 1_600_000_000 + i);
        std::fs::write(root.join("cur").join(name), format!("Subject: m{i}\n\nbody\n")).unwrap();
    }
    let mut s = session(&t.0);
    let out = run(&mut s, "a SELECT INBOX");
    assert!(out.contains("* 20000 EXISTS") && out.contains("[UIDNEXT 20001]"), "{}", &out[..out.len().min(400)]);
    let out = run(&mut s, "b UID FETCH 20000 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(out.contains("Subject: m19999"), "{out}");
    for _ in 0..20 {
        ok(&run(&mut s, "c NOOP"));
    }
}

#[test]
fn a_maildir_without_cur_is_completed_at_select() {
    let t = TempDir::new("nocur");
    let mut s = session(&t.0);
    std::fs::create_dir_all(t.0.join("Maildir/.Old/new")).unwrap();
    std::fs::write(t.0.join("Maildir/.Old/new/1700000000.M1P1.host"), "Subject: old\n\nx\n").unwrap();
    let out = run(&mut s, "a SELECT Old");
    assert!(out.contains("* 1 EXISTS"), "{out}");
    assert!(t.0.join("Maildir/.Old/cur").is_dir() && t.0.join("Maildir/.Old/tmp").is_dir());
}

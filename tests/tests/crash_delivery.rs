//! Delivery under fire: qmgr, smtp-client and lmtp-deliver are SIGKILLed at random moments
//! while messages flow from SMTP to Maildir. Every accepted message must end up in the
//! Maildir (at least once: duplicates are allowed, losses are not), and the queue must drain.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;

const MESSAGES: usize = 2000;

#[test]
fn killing_delivery_daemons_loses_nothing() {
    let suite = Suite::builder()
        .main("myhostname", "mail.example.test")
        .virtual_delivery()
        // Quick retries, so the test does not wait out Postfix's real backoff.
        .main("minimal_backoff_time", "1s")
        .main("maximal_backoff_time", "2s")
        .main("queue_run_delay", "1s")
        .main("service_throttle_time", "1s")
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 1 1 qmgr")
        .master_line("lmtp unix - - n - - smtp-client")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver")
        .start_with(|s| s.write_config("users", "alice@example.test:{PLAIN}x::::::\n"));

    let port = suite.port("smtp");
    let sender = std::thread::spawn(move || {
        let mut c = SmtpClient::connect(port);
        c.cmd("EHLO client.example");
        for n in 0..MESSAGES {
            let body = format!("Subject: crash-{n}\r\n\r\nbody {n}\r\n");
            c.send_mail("s@client.example", &["alice@example.test"], &body).expect("queued");
        }
    });

    // Kill a random delivery daemon every few tens of milliseconds while mail flows.
    let mut kills = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    while !sender.is_finished() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(10 + seed % 60));
        let Ok(st) = suite.try_status() else { continue };
        let victims: Vec<u32> = st
            .services
            .iter()
            .filter(|s| ["qmgr", "smtp-client", "lmtp-deliver"].contains(&s.command.as_str()))
            .flat_map(|s| s.children.iter().map(|c| c.pid))
            .collect();
        if victims.is_empty() {
            continue;
        }
        let pid = victims[(seed as usize / 7) % victims.len()];
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).is_ok() {
            kills += 1;
        }
    }
    sender.join().unwrap();
    assert!(kills >= 5, "the test must actually kill daemons ({kills})");

    // Everything drains: every message is in alice's Maildir at least once.
    let new = suite.root().join("vmail/example.test/alice/mail/new");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = HashSet::new();
    loop {
        seen.clear();
        for e in std::fs::read_dir(&new).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if let Some(n) = text.lines().find_map(|l| l.strip_prefix("Subject: crash-")) {
                seen.insert(n.to_string());
            }
        }
        if seen.len() == MESSAGES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} delivered after the kills ({kills} kills)\n{}\nlast log lines:\n{}",
            seen.len(),
            String::from_utf8_lossy(&suite.rmaster(&["queue", "list"]).stdout)
                .lines()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n"),
            suite.log().lines().rev().take(150).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The queue drains too, and the uidlist names every file once.
    let q = rpost_queue::Queue::new(suite.queue_dir());
    let deadline = Instant::now() + Duration::from_secs(60);
    while [rpost_queue::QueueDir::Incoming, rpost_queue::QueueDir::Active, rpost_queue::QueueDir::Deferred]
        .iter()
        .any(|d| !q.scan(*d).unwrap().is_empty())
    {
        assert!(Instant::now() < deadline, "queue not drained");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Maildir consistency: UIDs ascend (so they are unique; the header's N may lag behind the
    // records appended after it, as with Dovecot), every line is complete, and every uidlist
    // entry names a file that exists. (A file without a UID is fine: lmtp-deliver was killed
    // between new/ and the uidlist; the next IMAP session numbers it, as Dovecot does.)
    let names: HashSet<String> =
        std::fs::read_dir(&new).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let files = names.len();
    let uidlist = std::fs::read_to_string(suite.root().join("vmail/example.test/alice/mail/dovecot-uidlist")).unwrap();
    assert!(uidlist.ends_with('\n'), "torn last line: {uidlist}");
    let mut lines = uidlist.lines();
    lines.next().unwrap();
    let mut uids = HashSet::new();
    let mut prev = 0;
    for line in lines {
        let (uid, name) = line.split_once(':').unwrap_or_else(|| panic!("bad uidlist line {line:?}"));
        let uid: u32 = uid.split_whitespace().next().unwrap().parse().unwrap();
        assert!(uid > prev, "UID {uid} after {prev}");
        prev = uid;
        uids.insert(uid);
        assert!(names.contains(name), "uidlist names {name}, which is not in new/");
    }
    eprintln!(
        "{kills} kills; {MESSAGES} messages delivered as {files} files (duplicates allowed), {} with UIDs",
        uids.len()
    );
}

//! Alias and forward expansion without the helper program: addresses, loops, owner-
//! aliases, restrictions and command deliveries (which need no helper).

use std::collections::HashSet;
use std::path::PathBuf;

use rpost_config::Params;
use rpost_ipc::Outcome;

use super::expand::{AliasTable, Expander, Forward};
use super::settings::{Account, Settings};
use super::{Message, delivered_to_headers};

fn params(extra: &[(&str, &str)]) -> Params {
    let mut p = Params::empty();
    p.set("myhostname", "mail.example.test");
    p.set("mydestination", "$myhostname, localhost");
    p.set("recipient_delimiter", "+");
    // No forward files: reading one needs the helper program, which unit tests do not have.
    p.set("forward_path", "");
    for (k, v) in extra {
        p.set(k, v);
    }
    p
}

fn me() -> Account {
    Account::by_uid(nix::unistd::geteuid().as_raw()).unwrap().unwrap()
}

fn aliases(inline: &str) -> Vec<AliasTable> {
    vec![AliasTable {
        table: rpost_lookup::open(&format!("inline:{{ {inline} }}")).unwrap(),
        privs: Ok(me()),
        broken: false,
    }]
}

fn message(content: &str) -> Message {
    let c = content.replace('\n', "\r\n").into_bytes();
    Message {
        queue_id: "0123456789ABCDEF".into(),
        sender: "sender@example.org".into(),
        delivered_to: delivered_to_headers(&c),
        content: c,
        original: "root@mail.example.test".into(),
        envelope: rpost_queue::Envelope::new("sender@example.org"),
        queue_dir: "active".into(),
        index: 0,
        orcpt: None,
        notify: None,
    }
}

/// Runs the expansion of `rcpt` unprivileged; returns (leaves, forwards).
fn run(
    extra: &[(&str, &str)],
    table: &str,
    content: &str,
    rcpt: &str,
) -> (Vec<(String, super::expand::Status, String)>, Vec<Forward>) {
    let p = params(extra);
    let s = Settings::from_params(&p, PathBuf::from("/nonexistent"), false).unwrap();
    let domains = rpost_address::Domains::from_params(&p).unwrap();
    let t = aliases(table);
    let msg = message(content);
    let mut ex = Expander::new(&s, &domains, &t, &msg);
    ex.deliver(rcpt);
    (ex.leaves, ex.forwards)
}

#[test]
fn aliases_expand_to_addresses_commands_and_unknown_users() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmd.out");
    let table = format!(
        "{{ root = alice@virtual.test, nosuchuser-xyz, \"|cat > {}\", Bob@Remote.Test }}, {{ Admin = root }}",
        out.display()
    );
    let (leaves, forwards) = run(&[], &table, "Subject: hi\n\nFrom me\n", "admin+ext@mail.example.test");
    let fw: Vec<&str> = forwards.iter().map(|f| f.address.as_str()).collect();
    assert_eq!(fw, ["alice@virtual.test", "Bob@Remote.Test"]);
    assert!(forwards.iter().all(|f| f.delivered == "root@mail.example.test" && f.sender == "sender@example.org"));
    assert_eq!(leaves.len(), 2, "{leaves:?}");
    assert_eq!(leaves[0].0, "nosuchuser-xyz@mail.example.test");
    assert_eq!((leaves[0].1.outcome, leaves[0].1.dsn.as_str()), (Outcome::Bounced, "5.1.1"));
    assert_eq!(leaves[0].1.reason, "unknown user: \"nosuchuser-xyz\"");
    assert_eq!(leaves[1].1.outcome, Outcome::Sent, "{leaves:?}");
    assert!(leaves[1].1.reason.starts_with("delivered to command: cat > "));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("From sender@example.org  "), "{text}");
    assert!(
        text.contains(
            "\nReturn-Path: <sender@example.org>\nDelivered-To: root@mail.example.test\nSubject: hi\n\nFrom me\n"
        ),
        "{text:?}"
    );
}

#[test]
fn loops_are_bounced() {
    let (leaves, _) = run(&[], "{ a = b }, { b = c, a }, { c = x@remote.test }", "", "a@mail.example.test");
    assert_eq!(leaves.len(), 1, "{leaves:?}");
    assert_eq!(leaves[0].1.dsn, "5.4.6");
    assert_eq!(leaves[0].1.reason, "mail forwarding loop for a@mail.example.test");
    // A message that was delivered to this address before.
    let (leaves, forwards) = run(
        &[],
        "{ a = x@remote.test }",
        "Delivered-To: other@x\nDelivered-To:\n A@mail.example.test\n\nbody\n",
        "a@mail.example.test",
    );
    assert!(forwards.is_empty());
    assert_eq!(leaves[0].1.reason, "mail forwarding loop for a@mail.example.test");
    assert_eq!(leaves[0].1.outcome, Outcome::Bounced);
}

#[test]
fn an_alias_listing_itself_means_its_mailbox() {
    let (leaves, forwards) =
        run(&[], "{ ghost-user-q = ghost-user-q, copy@remote.test }", "", "ghost-user-q@localhost");
    assert_eq!(forwards.len(), 1);
    // Not a loop: the mailbox of a user that does not exist.
    assert_eq!(leaves.len(), 1);
    assert_eq!(leaves[0].1.reason, "unknown user: \"ghost-user-q\"");
}

#[test]
fn owner_alias_becomes_the_sender() {
    let table = "{ list = a@remote.test, b@remote.test }, { owner-list = admin@remote.test }";
    let (_, forwards) = run(&[], table, "", "list@mail.example.test");
    assert_eq!(forwards.len(), 2);
    assert!(forwards.iter().all(|f| f.sender == "owner-list@mail.example.test"), "{forwards:?}");
    let (_, forwards) = run(&[("expand_owner_alias", "yes")], table, "", "list@mail.example.test");
    assert!(forwards.iter().all(|f| f.sender == "admin@remote.test"), "{forwards:?}");
    let (_, forwards) = run(&[("owner_request_special", "no")], table, "", "list@mail.example.test");
    assert!(forwards.iter().all(|f| f.sender == "sender@example.org"), "{forwards:?}");
}

#[test]
fn commands_and_files_can_be_restricted() {
    let table = "{ root = \"|true\", /tmp/never-written-by-this-test }";
    let (leaves, _) =
        run(&[("allow_mail_to_commands", "forward"), ("allow_mail_to_files", "include")], table, "", "root@localhost");
    let reasons: Vec<&str> = leaves.iter().map(|l| l.1.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "mail to command is restricted (from alias)",
            "mail to file is restricted: /tmp/never-written-by-this-test (from alias)"
        ]
    );
    assert!(leaves.iter().all(|l| l.1.dsn == "5.7.1"));
}

#[test]
fn command_exit_codes_reach_the_status() {
    let (leaves, _) = run(&[], "{ t = \"|exit 75\" }, { b = \"|echo nope; exit 1\" }", "", "t@localhost");
    assert_eq!((leaves[0].1.outcome, leaves[0].1.dsn.as_str()), (Outcome::Deferred, "4.3.0"));
    let (leaves, _) = run(&[], "{ t = \"|exit 75\" }, { b = \"|echo nope; exit 1\" }", "", "b@localhost");
    assert_eq!(leaves[0].1.outcome, Outcome::Bounced);
    assert_eq!(leaves[0].1.reason, "Command died with status 1. Command output: nope");
}

#[test]
fn delivered_to_headers_stop_at_the_body() {
    let c = b"Delivered-To: A@X\r\nSubject: s\r\nDelivered-to: b@y\r\n\r\nDelivered-To: c@z\r\n";
    let got = delivered_to_headers(c);
    assert_eq!(got, HashSet::from(["a@x".to_string(), "b@y".to_string()]));
}

#[test]
fn mailbox_command_runs_for_system_users() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = format!("cat > {}/$USER.out; echo \"$EXTENSION\" > {}/ext", dir.path().display(), dir.path().display());
    let user = me();
    let rcpt = format!("{}+box@localhost", user.name);
    let (leaves, forwards) = run(&[("mailbox_command", &cmd)], "{ postmaster = root }", "Subject: m\n\nbody\n", &rcpt);
    assert!(forwards.is_empty());
    assert_eq!(leaves.len(), 1, "{leaves:?}");
    assert_eq!(leaves[0].1.outcome, Outcome::Sent, "{leaves:?}");
    let out = std::fs::read_to_string(dir.path().join(format!("{}.out", user.name))).unwrap();
    assert!(out.starts_with("From sender@example.org  "), "{out}");
    assert!(out.contains(&format!("\nDelivered-To: {}\nSubject: m\n\nbody\n", rcpt.to_lowercase())), "{out}");
    assert_eq!(std::fs::read_to_string(dir.path().join("ext")).unwrap(), "box\n");
}

#[test]
fn luser_relay_catches_unknown_users() {
    let relay = [("luser_relay", "catch+$local@remote.test")];
    let (leaves, forwards) = run(&relay, "{ postmaster = root }", "", "ghost-q+x@localhost");
    assert!(leaves.is_empty(), "{leaves:?}");
    assert_eq!(forwards.len(), 1);
    assert_eq!(forwards[0].address, "catch+ghost-q+x@remote.test");
    assert_eq!(forwards[0].delivered, "ghost-q+x@localhost");
    // A relay that is itself unknown ends as a loop, not forever.
    let (leaves, _) = run(&[("luser_relay", "ghost-r@localhost")], "{ postmaster = root }", "", "ghost-q@localhost");
    assert_eq!(leaves.len(), 1, "{leaves:?}");
    assert_eq!(leaves[0].1.reason, "mail forwarding loop for ghost-r@localhost");
}

#[test]
fn mailbox_command_maps_win_over_mailbox_command() {
    let dir = tempfile::tempdir().unwrap();
    let user = me();
    let map = format!("inline:{{ {{ {} = echo map > {}/which }} }}", user.name, dir.path().display());
    let other = format!("echo plain > {}/which", dir.path().display());
    let extra = [("mailbox_command_maps", map.as_str()), ("mailbox_command", other.as_str())];
    let (leaves, _) = run(&extra, "{ postmaster = root }", "", &format!("{}@localhost", user.name));
    assert_eq!(leaves[0].1.outcome, Outcome::Sent, "{leaves:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("which")).unwrap(), "map\n");
}

/// Parsers of untrusted text (.forward files, message headers, local variables) on many
/// pseudo-random inputs: no panics, and the invariants hold.
#[test]
fn parsers_survive_arbitrary_input() {
    const ALPHABET: &[u8] = b"ab@|/:\\\"'$ {}()?+-,.#\r\n\tFrom Delivered-To:include";
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let len = (next() % 80) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize]).collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        for d in super::dest::parse_file(&text) {
            if let super::dest::Dest::File(p) = d {
                assert!(p.starts_with('/'));
            }
        }
        let _ = super::dest::expand(&text, &|n: &str| (n == "a").then(|| "v".to_string()));
        let _ = delivered_to_headers(&bytes);
        let copy = super::mbox::Copy {
            sender: &text,
            delivered_to: Some(&text),
            from_line: true,
            mbox: true,
            time: std::time::SystemTime::UNIX_EPOCH,
        };
        let out = super::mbox::format(&bytes, &copy);
        let body = &out[out.iter().position(|&b| b == b'\n').unwrap() + 1..];
        // One envelope line only: nothing in the body starts a new message.
        assert!(!body.windows(6).any(|w| w == b"\nFrom "), "{text:?}");
        assert!(out.ends_with(b"\n\n"));
    }
}

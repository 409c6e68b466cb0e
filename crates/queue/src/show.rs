//! Human-readable output for `rmaster queue list|show` (postqueue -p,
//! postcat -q) and the `--json` entry shape.
//!
//! Times are shown in UTC: the daemons carry no time zone database.
//! Control characters from envelopes and content are escaped, so a hostile
//! message cannot send escape sequences to the admin's terminal.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Queue, QueueDir, QueueFile, QueueId, RcptStatus, Recipient};

/// Printed by `queue list` when there is nothing to list.
pub const QUEUE_EMPTY: &str = "Mail queue is empty";

/// Column where the sender and recipients start: a 16-character ID, the
/// status mark, an 8-wide size, the 19-character time and the gaps.
const ADDR_COLUMN: usize = 16 + 1 + 8 + 1 + 19 + 2;

/// The column header line of `queue list`, with a newline.
pub fn postqueue_header() -> String {
    format!("{:<17}{:>8} {:<20} {}\n", "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
}

/// One message in `postqueue -p` shape: ID (`*` when active, `!` when on
/// hold), size, arrival time, sender (`MAILER-DAEMON` for the null sender),
/// then one line per pending recipient and an empty line, each ending in a
/// newline.
pub fn postqueue_line(file: &QueueFile, dir: QueueDir) -> String {
    let mark = match dir {
        QueueDir::Active => '*',
        QueueDir::Hold => '!',
        _ => ' ',
    };
    let env = &file.envelope;
    let sender = if env.sender.is_empty() { "MAILER-DAEMON".to_owned() } else { escape(&env.sender) };
    let mut s = format!("{}{mark}{:>8} {}  {sender}\n", file.id, file.content_len(), short_time(secs(env.arrival)));
    for (_, r) in file.pending() {
        let _ = writeln!(s, "{:ADDR_COLUMN$}{}", "", escape(&r.address));
    }
    s.push('\n');
    s
}

/// The last line of `queue list`, with a newline.
pub fn postqueue_trailer(total_bytes: u64, count: usize) -> String {
    let plural = if count == 1 { "" } else { "s" };
    format!("-- {} Kbytes in {count} Request{plural}.\n", total_bytes / 1024)
}

/// Hands every message in incoming/, active/, deferred/ and hold/ (in that order, oldest
/// first per directory) to `visit`. Directories and files that could not be read come back
/// as warnings; a file that vanished between the scan and the open (qmgr moved or removed
/// it) is no warning. The listing tools (`mailq`, the showq service, `rmaster queue list`)
/// all walk the queue with this.
pub fn visit_queue(queue: &Queue, mut visit: impl FnMut(&QueueFile, QueueDir)) -> Vec<String> {
    let mut warnings = Vec::new();
    for d in [QueueDir::Incoming, QueueDir::Active, QueueDir::Deferred, QueueDir::Hold] {
        let ids = match queue.scan(d) {
            Ok(ids) => ids,
            Err(e) => {
                warnings.push(format!("scan {}: {e}", d.name()));
                continue;
            }
        };
        for id in ids {
            match queue.open(d, &id) {
                Ok(file) => visit(&file, d),
                Err(e) => {
                    if queue.find(&id).is_some() {
                        warnings.push(format!("{id}: {e}"));
                    }
                }
            }
        }
    }
    warnings
}

/// The whole `postqueue -p` listing ([`QUEUE_EMPTY`] when there is nothing), and the
/// warnings of [`visit_queue`].
pub fn postqueue_listing(queue: &Queue) -> (String, Vec<String>) {
    let mut out = String::new();
    let (mut bytes, mut count) = (0u64, 0usize);
    let warnings = visit_queue(queue, |file, d| {
        bytes += file.content_len();
        count += 1;
        if count == 1 {
            out.push_str(&postqueue_header());
        }
        out.push_str(&postqueue_line(file, d));
    });
    if count == 0 {
        return (format!("{QUEUE_EMPTY}\n"), warnings);
    }
    out.push_str(&postqueue_trailer(bytes, count));
    (out, warnings)
}

/// A `postcat -q` style dump of the whole file: envelope fields one per
/// line, then the content (lossy UTF-8, CRLF shown as LF).
pub fn show(file: &QueueFile) -> String {
    let env = &file.envelope;
    let c = &env.client;
    let mut s = String::from("*** ENVELOPE RECORDS ***\n");
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(s, "{name}: {}", escape(value));
    };
    field("queue_id", file.id.as_str());
    field("queue_file", &file.path.to_string_lossy());
    field("message_size", &file.content_len().to_string());
    field("message_arrival_time", &long_time(secs(env.arrival)));
    field("client_name", &c.name);
    field("client_address", &c.addr);
    field("client_port", &c.port.to_string());
    field("helo_name", &c.helo);
    field("protocol_name", &c.protocol);
    if let Some(u) = &c.sasl_username {
        field("sasl_username", u);
    }
    if let Some(b) = env.body {
        field("body_type", b.keyword());
    }
    if env.smtputf8 {
        field("smtputf8", "yes");
    }
    if let Some(r) = env.ret {
        field("dsn_ret", r.keyword());
    }
    if let Some(e) = &env.envid {
        field("dsn_envid", e);
    }
    for (k, v) in &env.attrs {
        field("named_attribute", &format!("{k}={v}"));
    }
    field("sender", &env.sender);
    for r in &env.recipients {
        if r.original != r.address {
            field("original_recipient", &r.original);
        }
        if let Some(o) = &r.orcpt {
            field("dsn_orig_rcpt", o);
        }
        if let Some(n) = r.notify {
            field("dsn_notify", &notify_names(n));
        }
        field("recipient", &format!("{} ({})", r.address, r.status.name()));
    }
    s.push_str("*** MESSAGE CONTENTS ***\n");
    match file.content() {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
            let body = escape_keep_newlines(&text);
            s.push_str(&body);
            if !body.is_empty() && !body.ends_with('\n') {
                s.push('\n');
            }
        }
        Err(e) => {
            let _ = writeln!(s, "*** ERROR: {} ***", escape(&e.to_string()));
        }
    }
    s.push_str("*** END OF MESSAGE ***\n");
    s
}

/// One message for `queue list --json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueEntry {
    pub id: QueueId,
    pub dir: QueueDir,
    /// Content size in bytes.
    pub size: u64,
    /// Arrival time, seconds since the epoch.
    pub arrival: u64,
    /// `""` for the null sender.
    pub sender: String,
    /// All recipients, done ones included.
    pub recipients: Vec<QueueEntryRecipient>,
}

/// One recipient of a [`QueueEntry`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueEntryRecipient {
    pub address: String,
    pub status: RcptStatus,
}

impl QueueEntry {
    pub fn new(file: &QueueFile, dir: QueueDir) -> QueueEntry {
        let env = &file.envelope;
        QueueEntry {
            id: file.id.clone(),
            dir,
            size: file.content_len(),
            arrival: secs(env.arrival),
            sender: env.sender.clone(),
            recipients: env
                .recipients
                .iter()
                .map(|r| QueueEntryRecipient { address: r.address.clone(), status: r.status })
                .collect(),
        }
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn notify_names(bits: u8) -> String {
    let names: Vec<&str> = [
        (Recipient::NOTIFY_NEVER, "NEVER"),
        (Recipient::NOTIFY_SUCCESS, "SUCCESS"),
        (Recipient::NOTIFY_FAILURE, "FAILURE"),
        (Recipient::NOTIFY_DELAY, "DELAY"),
    ]
    .into_iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| n)
    .collect();
    names.join(",")
}

/// Escapes control characters (C0 except tab, DEL, C1) as `\xNN`.
fn escape(s: &str) -> String {
    escape_with(s, false)
}

fn escape_keep_newlines(s: &str) -> String {
    escape_with(s, true)
}

fn escape_with(s: &str, newlines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        let c = ch as u32;
        if (ch == '\n' && newlines) || ch == '\t' || !(c < 0x20 || (0x7f..0xa0).contains(&c)) {
            out.push(ch);
        } else {
            let _ = write!(out, "\\x{c:02x}");
        }
    }
    out
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

struct Tm {
    year: i64,
    month: usize,
    day: u32,
    wday: usize,
    hour: u64,
    min: u64,
    sec: u64,
}

/// UTC calendar fields (Howard Hinnant's days-to-civil algorithm).
fn tm(secs: u64) -> Tm {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as usize;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Tm {
        year,
        month,
        day,
        wday: (days + 4).rem_euclid(7) as usize,
        hour: rem / 3600,
        min: rem / 60 % 60,
        sec: rem % 60,
    }
}

/// `Sat Nov 21 23:19:51`, as postqueue -p shows it.
fn short_time(secs: u64) -> String {
    let t = tm(secs);
    format!("{} {} {:2} {:02}:{:02}:{:02}", DAYS[t.wday], MONTHS[t.month - 1], t.day, t.hour, t.min, t.sec)
}

/// `Sat Nov 21 23:19:51 2020`, as postcat shows it.
fn long_time(secs: u64) -> String {
    format!("{} {}", short_time(secs), tm(secs).year)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(short_time(0), "Thu Jan  1 00:00:00");
        assert_eq!(long_time(1_606_000_791), "Sat Nov 21 23:19:51 2020");
        assert_eq!(long_time(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(long_time(4_102_444_799), "Thu Dec 31 23:59:59 2099");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a\x1b[2Jb\tc\n"), "a\\x1b[2Jb\tc\\x0a");
        assert_eq!(escape_keep_newlines("x\ny\u{9b}"), "x\ny\\x9b");
        assert_eq!(escape("jörg"), "jörg");
    }

    #[test]
    fn trailer_and_header() {
        assert_eq!(postqueue_trailer(1234, 1), "-- 1 Kbytes in 1 Request.\n");
        assert_eq!(postqueue_trailer(0, 3), "-- 0 Kbytes in 3 Requests.\n");
        assert_eq!(postqueue_header().find("-Sender"), Some(ADDR_COLUMN));
    }

    #[test]
    fn listing_walks_every_directory() {
        let t = tempfile::tempdir().unwrap();
        let q = Queue::new(t.path());
        q.ensure_dirs().unwrap();
        assert_eq!(postqueue_listing(&q), (format!("{QUEUE_EMPTY}\n"), Vec::new()));
        let mut ids = Vec::new();
        for sender in ["", "alice@example.test"] {
            let mut env = crate::Envelope::new(sender);
            env.recipients.push(Recipient::new("bob@example.test"));
            let mut m = q.create(&env).unwrap();
            m.write_content(&[b'x'; 2048]).unwrap();
            ids.push(m.commit().unwrap());
        }
        q.move_to(&ids[1], QueueDir::Incoming, QueueDir::Hold).unwrap();
        // A damaged queue file: a warning, the rest is listed.
        let junk = QueueId::generate();
        std::fs::write(q.path(QueueDir::Deferred, &junk), b"junk").unwrap();
        let complete = std::os::unix::fs::PermissionsExt::from_mode(0o700);
        std::fs::set_permissions(q.path(QueueDir::Deferred, &junk), complete).unwrap();
        let (text, warnings) = postqueue_listing(&q);
        assert!(text.starts_with(&postqueue_header()), "{text}");
        assert!(text.contains("MAILER-DAEMON") && text.contains(&format!("{}!", ids[1])), "{text}");
        assert!(text.ends_with("-- 4 Kbytes in 2 Requests.\n"), "{text}");
        let mut seen = Vec::new();
        visit_queue(&q, |f, d| seen.push((f.id.clone(), d)));
        assert_eq!(seen, [(ids[0].clone(), QueueDir::Incoming), (ids[1].clone(), QueueDir::Hold)]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with(&format!("{junk}: ")), "{warnings:?}");
    }

    #[test]
    fn notify() {
        assert_eq!(notify_names(Recipient::NOTIFY_FAILURE | Recipient::NOTIFY_DELAY), "FAILURE,DELAY");
    }
}

//! Delivery status notifications (RFC 3464), as Postfix's bounce(8) writes them, built
//! with mail-builder: a multipart/report (report-type=delivery-status) with a
//! human-readable part in Postfix's words, a message/delivery-status part, and the original
//! message (message/rfc822) or only its headers (text/rfc822-headers).
//!
//! Who gets what (Postfix's bounce_notify_service, bounce_warn_service, bounce_trace_service):
//! * a failure of ordinary mail: a non-delivery notification from the null sender to the
//!   envelope sender (the whole message, or its headers for RET=HDRS or when it is larger
//!   than `bounce_size_limit`), plus a copy with headers only from `double_bounce_sender` to
//!   `bounce_notice_recipient` when `notify_classes` has `bounce`;
//! * a failure of a bounce (null sender): a "double bounce" with the whole message from
//!   `double_bounce_sender` to `2bounce_notice_recipient` when `notify_classes` has
//!   `2bounce` or `bounce`, else nothing;
//! * a failure of mail from `double_bounce_sender`: nothing ("undeliverable postmaster
//!   notification discarded"), so notifications can never loop;
//! * delay warnings (Action: delayed) and success reports (Action: delivered or relayed)
//!   go to the sender with headers only; with the `delay` class in `notify_classes` a
//!   copy of each delay warning goes to `delay_notice_recipient` (for a delayed bounce,
//!   that copy is the only report).
//!
//! mail-builder writes the MIME structure (boundary, part headers, transfer encodings of the
//! text part). The message/delivery-status, message/rfc822 and text/rfc822-headers parts are
//! handed to it as raw bytes with an explicit `Content-Transfer-Encoding`, which makes it
//! copy them verbatim: a report must not be re-encoded (RFC 3464 section 2.1 and RFC 2046
//! section 5.2.1 allow only 7bit/8bit/binary there). `From:` is written raw too, in Postfix's
//! `MAILER-DAEMON@host (Mail Delivery System)` form, which mail-builder's address type
//! cannot express (it writes a display name instead of a comment).

use std::borrow::Cow;
use std::io::Read;
use std::time::{Duration, SystemTime};

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use rpost_config::{ConfigError, Params};
use rpost_queue::{BodyType, Envelope, QueueFile, Recipient};

/// What happened to a recipient, as RFC 3464's Action field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
        }
    }
}

/// One recipient in a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub address: String,
    /// The address as the client gave it (shown as "expanded from" when it differs).
    pub original: String,
    /// DSN ORCPT as stored (`rfc822;addr`).
    pub orcpt: Option<String>,
    pub action: Action,
    /// Enhanced status code (`5.1.1`).
    pub dsn: String,
    /// `host[addr]:port` of the next hop that answered, or `none`.
    pub relay: String,
    /// The reason in Postfix log style.
    pub reason: String,
}

impl Entry {
    pub fn new(r: &Recipient, action: Action, dsn: &str, relay: &str, reason: &str) -> Entry {
        Entry {
            address: r.address.clone(),
            original: r.original.clone(),
            orcpt: r.orcpt.clone(),
            action,
            dsn: dsn.to_string(),
            relay: relay.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// What the notifications need to know about the mail system (main.cf).
#[derive(Debug, Clone)]
pub struct Reporter {
    pub myhostname: String,
    pub mail_name: String,
    pub myorigin: String,
    /// `double_bounce_sender`, qualified with myorigin.
    pub double_bounce: String,
    pub notify_classes: Vec<String>,
    pub bounce_notice_recipient: String,
    pub twobounce_notice_recipient: String,
    pub delay_notice_recipient: String,
    pub delay_warning_time: Duration,
    pub queue_lifetime: Duration,
    /// The lifetime of mail from the null sender (for Will-Retry-Until).
    pub bounce_lifetime: Duration,
    pub bounce_size_limit: u64,
}

impl Reporter {
    pub fn from_params(p: &Params) -> Result<Reporter, ConfigError> {
        let myorigin = p.get("myorigin")?;
        let qualify = |a: String| if a.contains('@') || a.is_empty() { a } else { format!("{a}@{myorigin}") };
        Ok(Reporter {
            myhostname: p.get("myhostname")?,
            mail_name: p.get("mail_name")?,
            // Never empty: an empty one would make every bounce look like a double bounce.
            double_bounce: qualify(
                Some(p.get("double_bounce_sender")?)
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "double-bounce".into()),
            ),
            notify_classes: p.get_list("notify_classes")?.into_iter().map(|c| c.to_ascii_lowercase()).collect(),
            bounce_notice_recipient: qualify(p.get("bounce_notice_recipient")?),
            twobounce_notice_recipient: qualify(p.get("2bounce_notice_recipient")?),
            delay_notice_recipient: qualify(p.get("delay_notice_recipient")?),
            delay_warning_time: p.get_time("delay_warning_time")?,
            queue_lifetime: p.get_time("maximal_queue_lifetime")?,
            bounce_lifetime: p.get_time("bounce_queue_lifetime")?,
            bounce_size_limit: p.get_size("bounce_size_limit")?,
            myorigin,
        })
    }

    /// Postfix's defaults with this host name (tests).
    pub fn with_hostname(host: &str) -> Reporter {
        Reporter {
            myhostname: host.into(),
            mail_name: "rpost".into(),
            myorigin: host.into(),
            double_bounce: format!("double-bounce@{host}"),
            notify_classes: vec!["resource".into(), "software".into()],
            bounce_notice_recipient: format!("postmaster@{host}"),
            twobounce_notice_recipient: format!("postmaster@{host}"),
            delay_notice_recipient: format!("postmaster@{host}"),
            delay_warning_time: Duration::ZERO,
            queue_lifetime: Duration::from_secs(5 * 86400),
            bounce_lifetime: Duration::from_secs(5 * 86400),
            bounce_size_limit: 50000,
        }
    }

    fn class(&self, name: &str) -> bool {
        self.notify_classes.iter().any(|c| c == name)
    }

    /// Mail from `double_bounce_sender`: its failures are never reported.
    pub fn is_double_bounce(&self, sender: &str) -> bool {
        let local = self.double_bounce.split('@').next().unwrap_or_default();
        !sender.is_empty()
            && !local.is_empty()
            && (sender.eq_ignore_ascii_case(&self.double_bounce) || sender.eq_ignore_ascii_case(local))
    }
}

/// Whether the sender wants to hear about failures: NOTIFY absent or with FAILURE.
pub fn wants_failure_notice(notify: Option<u8>) -> bool {
    notify.is_none_or(|bits| bits & Recipient::NOTIFY_FAILURE != 0)
}

/// Whether the sender wants delay warnings: NOTIFY absent (Postfix's default) or with DELAY.
pub fn wants_delay_notice(notify: Option<u8>) -> bool {
    notify.is_none_or(|bits| bits & Recipient::NOTIFY_DELAY != 0)
}

/// Whether the sender asked for a success report (NOTIFY=SUCCESS).
pub fn wants_success_notice(notify: Option<u8>) -> bool {
    notify.is_some_and(|bits| bits & Recipient::NOTIFY_SUCCESS != 0)
}

/// One notification ready to be queued.
#[derive(Debug, Clone)]
pub struct Notice {
    pub envelope: Envelope,
    pub content: Vec<u8>,
    /// For the log line `QID: <what>: NEWID`, in Postfix's words.
    pub what: &'static str,
}

/// What to do about failed recipients of one message.
#[derive(Debug)]
pub enum Plan {
    Send(Vec<Notice>),
    /// The failed message was itself a postmaster notification: it is dropped, with
    /// Postfix's warning, never reported again.
    Discard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failure,
    Delay,
    Success,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Returned {
    Full,
    Headers,
}

/// Notifications for recipients that failed for good (already filtered by NOTIFY).
pub fn failures(r: &Reporter, original: &QueueFile, entries: &[Entry], now: SystemTime) -> Plan {
    let sender = original.envelope.sender.as_str();
    if r.is_double_bounce(sender) {
        return Plan::Discard;
    }
    if entries.is_empty() {
        return Plan::Send(Vec::new());
    }
    let mut out = Vec::new();
    if sender.is_empty() {
        if r.class("2bounce") || r.class("bounce") {
            let to = r.twobounce_notice_recipient.as_str();
            if let Some(n) = compose(r, original, Kind::Failure, true, to, entries, Returned::Full, now) {
                out.push(Notice { what: "postmaster non-delivery notification", ..n });
            }
        }
        return Plan::Send(out);
    }
    let returned =
        if original.envelope.ret == Some(rpost_queue::Ret::Hdrs) { Returned::Headers } else { Returned::Full };
    if let Some(n) = compose(r, original, Kind::Failure, false, sender, entries, returned, now) {
        out.push(Notice { what: "sender non-delivery notification", ..n });
    }
    if r.class("bounce") {
        let to = r.bounce_notice_recipient.as_str();
        if let Some(n) = compose(r, original, Kind::Failure, true, to, entries, Returned::Headers, now) {
            out.push(Notice { what: "postmaster non-delivery notification", ..n });
        }
    }
    Plan::Send(out)
}

/// The delay warnings for recipients still pending (already filtered by NOTIFY): to the
/// sender, and with the `delay` class a copy to `delay_notice_recipient`.
pub fn delays(r: &Reporter, original: &QueueFile, entries: &[Entry], now: SystemTime) -> Vec<Notice> {
    let sender = original.envelope.sender.as_str();
    let mut out = Vec::new();
    if entries.is_empty() || r.is_double_bounce(sender) {
        return out;
    }
    if !sender.is_empty()
        && let Some(n) = compose(r, original, Kind::Delay, false, sender, entries, Returned::Headers, now)
    {
        out.push(Notice { what: "sender delay notification", ..n });
    }
    // The delay class: the postmaster hears of delayed mail too (of delayed bounces only so).
    if r.class("delay") {
        let to = r.delay_notice_recipient.as_str();
        if let Some(n) = compose(r, original, Kind::Delay, true, to, entries, Returned::Headers, now) {
            out.push(Notice { what: "postmaster delay notification", ..n });
        }
    }
    out
}

/// The success report for recipients that asked for one. Never for the null sender.
pub fn successes(r: &Reporter, original: &QueueFile, entries: &[Entry], now: SystemTime) -> Option<Notice> {
    let sender = original.envelope.sender.as_str();
    if entries.is_empty() || sender.is_empty() || r.is_double_bounce(sender) {
        return None;
    }
    let n = compose(r, original, Kind::Success, false, sender, entries, Returned::Headers, now)?;
    Some(Notice { what: "sender delivery status notification", ..n })
}

/// Builds one notification to `to`. None only when the original cannot be read at all.
#[allow(clippy::too_many_arguments)]
fn compose(
    r: &Reporter,
    original: &QueueFile,
    kind: Kind,
    postmaster: bool,
    to: &str,
    entries: &[Entry],
    returned: Returned,
    now: SystemTime,
) -> Option<Notice> {
    let env = &original.envelope;
    let id = &original.id;
    // A large message comes back as its headers only (bounce_size_limit).
    let returned = if returned == Returned::Full && original.content_len() > r.bounce_size_limit {
        Returned::Headers
    } else {
        returned
    };
    let returned_bytes = match returned {
        Returned::Full => original.content().ok()?,
        Returned::Headers => headers_of(original)?,
    };

    let subject = match (kind, postmaster) {
        (Kind::Failure, false) => "Undelivered Mail Returned to Sender",
        (Kind::Failure, true) => "Postmaster Copy: Undelivered Mail",
        (Kind::Delay, false) => "Delayed Mail (still being retried)",
        (Kind::Delay, true) => "Postmaster Warning: Delayed Mail",
        (Kind::Success, _) => "Successful Mail Delivery Report",
    };
    let text = human_text(r, env, kind, postmaster, entries);
    let status = delivery_status(r, original, entries, now);
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);

    let eight_bit = |b: &[u8]| !b.is_ascii();
    let cte = |b: &[u8]| if eight_bit(b) { "8bit" } else { "7bit" };
    let status_part = MimePart::new("message/delivery-status", BodyPart::Binary(Cow::Owned(status.clone())))
        .header("Content-Description", Raw::new("Delivery report"))
        .transfer_encoding(cte(&status));
    let (desc, ctype) = match (returned, kind) {
        (Returned::Full, _) => ("Undelivered Message", "message/rfc822"),
        (Returned::Headers, Kind::Success) => ("Message Headers", "text/rfc822-headers"),
        (Returned::Headers, _) => ("Undelivered Message Headers", "text/rfc822-headers"),
    };
    let any_8bit = eight_bit(text.as_bytes()) || eight_bit(&status) || eight_bit(&returned_bytes);
    let returned_part = MimePart::new(ctype, BodyPart::Binary(Cow::Owned(returned_bytes.clone())))
        .header("Content-Description", Raw::new(desc))
        .transfer_encoding(cte(&returned_bytes));
    let text_part =
        MimePart::new(ContentType::new("text/plain").attribute("charset", "utf-8"), BodyPart::Text(Cow::Owned(text)))
            .header("Content-Description", Raw::new("Notification"));
    let mut report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![text_part, status_part, returned_part],
    );
    if any_8bit {
        report = report.header("Content-Transfer-Encoding", Raw::new("8bit"));
    }
    let content = MessageBuilder::new()
        .header("From", Raw::new(format!("MAILER-DAEMON@{} (Mail Delivery System)", one_line(&r.myhostname))))
        .header("Subject", Raw::new(subject))
        .header("To", Raw::new(one_line(to)))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .header("Message-ID", Raw::new(format!("<{secs}.{id}.{}@{}>", kind_tag(kind, postmaster), r.myhostname)))
        .header("Date", Raw::new(rpost_log::rfc5322_date(now)))
        .body(report)
        .write_to_vec()
        .ok()?;

    // Postmaster notifications come from double_bounce_sender, so that their own failure
    // is recognised and dropped; everything else from the null sender.
    let mut notice = Envelope::new(if postmaster { r.double_bounce.clone() } else { String::new() });
    notice.recipients.push(Recipient::new(to));
    notice.smtputf8 = env.smtputf8 && !to.is_ascii();
    notice.body = any_8bit.then_some(BodyType::EightBitMime);
    notice.client.protocol = "local".into();
    notice.arrival = now;
    Some(Notice { envelope: notice, content, what: "" })
}

fn kind_tag(kind: Kind, postmaster: bool) -> &'static str {
    match (kind, postmaster) {
        (Kind::Failure, false) => "bounce",
        (Kind::Failure, true) => "pmbounce",
        (Kind::Delay, _) => "delay",
        (Kind::Success, _) => "success",
    }
}

/// The human-readable part, in Postfix's words (bounce(5) default templates).
fn human_text(r: &Reporter, env: &Envelope, kind: Kind, postmaster: bool, entries: &[Entry]) -> String {
    let mut t = format!("This is the mail system at host {}.\r\n\r\n", one_line(&r.myhostname));
    let signature = format!("{}The {} program\r\n\r\n", " ".repeat(19), one_line(&r.mail_name));
    if postmaster {
        let sender = if env.sender.is_empty() { "MAILER-DAEMON".to_string() } else { one_line(&env.sender) };
        t.push_str(&format!(
            "This is a copy of the report about a message from <{sender}>\r\n\
             that could not be delivered{}.\r\n\r\n",
            if kind == Kind::Delay { " yet" } else { "" }
        ));
    } else {
        match kind {
            Kind::Failure => t.push_str(
                "I'm sorry to have to inform you that your message could not\r\n\
                 be delivered to one or more recipients. It's attached below.\r\n\r\n\
                 For further assistance, please send mail to postmaster.\r\n\r\n\
                 If you do so, please include this problem report. You can\r\n\
                 delete your own text from the attached returned message.\r\n\r\n",
            ),
            Kind::Delay => {
                let hours = r.delay_warning_time.as_secs().div_ceil(3600).max(1);
                let days = r.queue_lifetime.as_secs().div_ceil(86400).max(1);
                t.push_str(&format!(
                    "####################################################################\r\n\
                     # THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n\
                     ####################################################################\r\n\r\n\
                     Your message could not be delivered for more than {hours} hour(s).\r\n\
                     It will be retried until it is {days} day(s) old.\r\n\r\n\
                     For further assistance, please send mail to postmaster.\r\n\r\n\
                     If you do so, please include this problem report. You can\r\n\
                     delete your own text from the attached returned message.\r\n\r\n"
                ));
            }
            Kind::Success => t.push_str(
                "Your message was successfully delivered to the destination(s)\r\n\
                 listed below. If the message was delivered to mailbox you will\r\n\
                 receive no further notifications. Otherwise you may still receive\r\n\
                 notifications of mail delivery errors from other systems.\r\n\r\n",
            ),
        }
        t.push_str(&signature);
    }
    for e in entries {
        let expanded = if !e.original.is_empty() && e.original != e.address {
            format!(" (expanded from <{}>)", one_line(&e.original))
        } else {
            String::new()
        };
        let line = format!("<{}>{expanded}: {}", one_line(&e.address), one_line(&e.reason));
        t.push_str(&wrap(&line, 76, "    "));
        t.push_str("\r\n");
    }
    t
}

/// Folds a long line at spaces into lines of at most `width` characters (a longer word
/// stays whole), continuation lines indented, as Postfix's bounce text is, so the text
/// part stays plain 7bit instead of quoted-printable.
fn wrap(line: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut cur = String::new();
    for word in line.split(' ') {
        let len = cur.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width && !cur.trim().is_empty() {
            out.push_str(cur.trim_end());
            out.push_str("\r\n");
            cur = indent.to_string();
        } else if len > 0 {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    out.push_str(cur.trim_end());
    out.push_str("\r\n");
    out
}

/// The message/delivery-status body: per-message fields, then one group per recipient.
fn delivery_status(r: &Reporter, original: &QueueFile, entries: &[Entry], now: SystemTime) -> Vec<u8> {
    let env = &original.envelope;
    let mut s = format!(
        "Reporting-MTA: dns; {}\r\nX-Postfix-Queue-ID: {}\r\nX-Postfix-Sender: rfc822; {}\r\nArrival-Date: {}\r\n",
        one_line(&r.myhostname),
        original.id,
        one_line(&env.sender),
        rpost_log::rfc5322_date(env.arrival),
    );
    if let Some(envid) = &env.envid {
        s.push_str(&format!("Original-Envelope-Id: {}\r\n", one_line(envid)));
    }
    for e in entries {
        s.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", one_line(&e.address)));
        if let Some(o) = &e.orcpt {
            s.push_str(&format!("Original-Recipient: {}\r\n", one_line(o)));
        }
        s.push_str(&format!("Action: {}\r\nStatus: {}\r\n", e.action.name(), one_line(&e.dsn)));
        if let Some(host) = remote_mta(&e.relay) {
            s.push_str(&format!("Remote-MTA: dns; {host}\r\n"));
        }
        let (kind, text) = diagnostic(&e.reason);
        s.push_str(&format!("Diagnostic-Code: {kind}; {text}\r\n"));
        if e.action == Action::Delayed {
            let notification = env.sender.is_empty() || r.is_double_bounce(&env.sender);
            let until = env.arrival + if notification { r.bounce_lifetime } else { r.queue_lifetime };
            s.push_str(&format!("Will-Retry-Until: {}\r\n", rpost_log::rfc5322_date(until.max(now))));
        }
    }
    s.into_bytes()
}

/// `mx.example.test[192.0.2.1]:25` -> `mx.example.test`; nothing for `none` or a socket.
fn remote_mta(relay: &str) -> Option<String> {
    let (host, _) = relay.split_once('[')?;
    let host = one_line(host);
    (!host.is_empty()).then_some(host)
}

/// A remote server's reply is an `smtp` diagnostic ("host X said: 550 ..." -> "550 ...");
/// anything else is our own (`X-Postfix`, as Postfix writes it).
fn diagnostic(reason: &str) -> (&'static str, String) {
    let reason = one_line(reason);
    if let Some((_, said)) = reason.split_once(" said: ") {
        let said = said.split(" (in reply to ").next().unwrap_or(said);
        return ("smtp", said.trim_end().to_string());
    }
    let code = reason.get(..3).is_some_and(|c| c.bytes().all(|b| b.is_ascii_digit()));
    (if code { "smtp" } else { "X-Postfix" }, reason)
}

/// The original's header section (up to and including the blank line), read without
/// loading a large body.
fn headers_of(original: &QueueFile) -> Option<Vec<u8>> {
    const MAX: u64 = 1024 * 1024;
    let mut buf = Vec::new();
    original.content_reader().ok()?.take(MAX).read_to_end(&mut buf).ok()?;
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2).unwrap_or(buf.len());
    buf.truncate(end);
    if !buf.ends_with(b"\r\n") {
        buf.extend_from_slice(b"\r\n");
    }
    Some(buf)
}

/// Reasons come from remote servers: keep them on one header-safe line.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(900).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpost_queue::{Queue, QueueDir};

    fn queued(dir: &std::path::Path, sender: &str, ret: Option<rpost_queue::Ret>) -> QueueFile {
        let q = Queue::new(dir);
        q.ensure_dirs().unwrap();
        let mut env = Envelope::new(sender);
        env.ret = ret;
        env.envid = Some("env-42".into());
        env.recipients.push(Recipient::new("bob@example.test"));
        let mut m = q.create(&env).unwrap();
        m.write_content(b"Subject: hello\r\nX-Secret: body follows\r\n\r\nthe body\r\n").unwrap();
        let id = m.commit().unwrap();
        q.open(QueueDir::Incoming, &id).unwrap()
    }

    fn failure() -> Entry {
        Entry {
            address: "bob@example.test".into(),
            original: "robert@example.test".into(),
            orcpt: Some("rfc822;robert@example.test".into()),
            action: Action::Failed,
            dsn: "5.1.1".into(),
            relay: "mx.example.test[192.0.2.1]:25".into(),
            reason: "host mx.example.test[192.0.2.1] said: 550 5.1.1 no such user\r\n(in reply to RCPT TO command)"
                .into(),
        }
    }

    fn reporter() -> Reporter {
        Reporter::with_hostname("mail.example.test")
    }

    type Fields = Vec<(String, String)>;
    type Part = (Fields, Vec<u8>);

    /// A minimal MIME reader for checking our own output: header fields (unfolded) and body.
    fn split(msg: &[u8]) -> Part {
        let end = msg.windows(4).position(|w| w == b"\r\n\r\n").expect("header/body separator");
        let head = std::str::from_utf8(&msg[..end]).unwrap();
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                fields.last_mut().expect("continuation after a field").1.push_str(line);
            } else {
                let (n, v) = line.split_once(':').unwrap_or_else(|| panic!("not a field: {line:?}"));
                fields.push((n.to_string(), v.trim().to_string()));
            }
        }
        (fields, msg[end + 4..].to_vec())
    }

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn boundary(ctype: &str) -> String {
        let at = ctype.find("boundary=").expect("boundary parameter") + "boundary=".len();
        ctype[at..].trim_start_matches('"').split(['"', ';']).next().unwrap().to_string()
    }

    /// The parts of a multipart body, each split into fields and body.
    fn parts(body: &[u8], boundary: &str) -> Vec<Part> {
        let text = body.to_vec();
        let delim = format!("\r\n--{boundary}");
        let mut s = Vec::from(&b"\r\n"[..]);
        s.extend_from_slice(&text);
        let s = String::from_utf8(s).unwrap();
        let mut chunks: Vec<&str> = s.split(&delim).collect();
        assert!(chunks.last().unwrap().starts_with("--"), "closing delimiter");
        chunks.remove(0); // preamble
        chunks.pop(); // epilogue
        chunks.iter().map(|c| split(c.strip_prefix("\r\n").expect("CRLF after delimiter").as_bytes())).collect()
    }

    /// The decoded body of a leaf part (our text part may be quoted-printable).
    fn decoded(part: &Part) -> String {
        let body = String::from_utf8(part.1.clone()).unwrap();
        if field(&part.0, "Content-Transfer-Encoding") != Some("quoted-printable") {
            return body;
        }
        let joined = body.replace("=\r\n", "");
        let b = joined.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' && i + 2 < b.len() + 1 {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// Parses a whole notification: top fields, then (text, delivery-status groups, returned part).
    fn parse(msg: &[u8]) -> (Fields, Vec<Part>, Vec<Fields>) {
        let (top, body) = split(msg);
        let ctype = field(&top, "Content-Type").unwrap();
        assert!(ctype.starts_with("multipart/report"), "{ctype}");
        assert!(ctype.contains("report-type=delivery-status") || ctype.contains("report-type=\"delivery-status\""));
        let ps = parts(&body, &boundary(ctype));
        assert_eq!(ps.len(), 3, "human text, delivery-status, returned message");
        let status = &ps[1];
        assert_eq!(field(&status.0, "Content-Type"), Some("message/delivery-status"));
        let groups = String::from_utf8(status.1.clone())
            .unwrap()
            .split("\r\n\r\n")
            .filter(|g| !g.trim().is_empty())
            .map(|g| split(format!("{g}\r\n\r\n").as_bytes()).0)
            .collect();
        (top, ps, groups)
    }

    #[test]
    fn a_bounce_is_a_multipart_report_from_the_null_sender() {
        let dir = tempfile::tempdir().unwrap();
        let f = queued(dir.path(), "alice@example.test", None);
        let Plan::Send(notices) = failures(&reporter(), &f, &[failure()], SystemTime::now()) else { panic!() };
        assert_eq!(notices.len(), 1, "no postmaster copy with the default notify_classes");
        let n = &notices[0];
        assert_eq!(n.what, "sender non-delivery notification");
        assert_eq!(n.envelope.sender, "");
        assert_eq!(n.envelope.recipients[0].address, "alice@example.test");
        let (top, ps, groups) = parse(&n.content);
        assert_eq!(field(&top, "From"), Some("MAILER-DAEMON@mail.example.test (Mail Delivery System)"));
        assert_eq!(field(&top, "Subject"), Some("Undelivered Mail Returned to Sender"));
        assert_eq!(field(&top, "To"), Some("alice@example.test"));
        assert_eq!(field(&top, "Auto-Submitted"), Some("auto-replied"));
        assert_eq!(field(&top, "MIME-Version"), Some("1.0"));
        assert!(field(&top, "Message-ID").is_some() && field(&top, "Date").is_some());
        let human = decoded(&ps[0]);
        assert!(human.contains("This is the mail system at host mail.example.test."), "{human}");
        assert!(human.contains("I'm sorry to have to inform you that your message could not"));
        let unfolded = human.replace("\r\n    ", " ");
        assert!(unfolded.contains("<bob@example.test> (expanded from <robert@example.test>): host mx.example.test"));
        assert_eq!(field(&ps[0].0, "Content-Transfer-Encoding"), Some("7bit"), "folded, so plain text");
        // Per-message group, then one per recipient.
        assert_eq!(groups.len(), 2);
        assert_eq!(field(&groups[0], "Reporting-MTA"), Some("dns; mail.example.test"));
        assert_eq!(field(&groups[0], "X-Postfix-Queue-ID"), Some(f.id.as_str()));
        assert_eq!(field(&groups[0], "X-Postfix-Sender"), Some("rfc822; alice@example.test"));
        assert_eq!(field(&groups[0], "Original-Envelope-Id"), Some("env-42"));
        assert!(field(&groups[0], "Arrival-Date").is_some());
        let g = &groups[1];
        assert_eq!(field(g, "Final-Recipient"), Some("rfc822; bob@example.test"));
        assert_eq!(field(g, "Original-Recipient"), Some("rfc822;robert@example.test"));
        assert_eq!(field(g, "Action"), Some("failed"));
        assert_eq!(field(g, "Status"), Some("5.1.1"));
        assert_eq!(field(g, "Remote-MTA"), Some("dns; mx.example.test"));
        // A remote reason with a line break cannot add fields; only the reply is the code.
        assert_eq!(field(g, "Diagnostic-Code"), Some("smtp; 550 5.1.1 no such user"));
        assert_eq!(g.len(), 6, "{g:?}");
        // RET absent: the whole message comes back, verbatim.
        assert_eq!(field(&ps[2].0, "Content-Type"), Some("message/rfc822"));
        assert_eq!(ps[2].1, b"Subject: hello\r\nX-Secret: body follows\r\n\r\nthe body\r\n");
    }

    #[test]
    fn ret_hdrs_and_size_limit_return_headers_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = queued(dir.path(), "alice@example.test", Some(rpost_queue::Ret::Hdrs));
        let Plan::Send(n) = failures(&reporter(), &f, &[failure()], SystemTime::now()) else { panic!() };
        let (_, ps, _) = parse(&n[0].content);
        assert_eq!(field(&ps[2].0, "Content-Type"), Some("text/rfc822-headers"));
        assert_eq!(ps[2].1, b"Subject: hello\r\nX-Secret: body follows\r\n");
        let f = queued(dir.path(), "alice@example.test", None);
        let small = Reporter { bounce_size_limit: 10, ..reporter() };
        let Plan::Send(n) = failures(&small, &f, &[failure()], SystemTime::now()) else { panic!() };
        let (_, ps, _) = parse(&n[0].content);
        assert_eq!(field(&ps[2].0, "Content-Type"), Some("text/rfc822-headers"));
    }

    #[test]
    fn bounces_of_bounces_go_to_the_postmaster_only_when_asked_and_never_loop() {
        let dir = tempfile::tempdir().unwrap();
        let bounce = queued(dir.path(), "", None);
        // Postfix's default notify_classes (resource, software): dropped.
        let Plan::Send(n) = failures(&reporter(), &bounce, &[failure()], SystemTime::now()) else { panic!() };
        assert!(n.is_empty());
        let r = Reporter { notify_classes: vec!["2bounce".into()], ..reporter() };
        let Plan::Send(n) = failures(&r, &bounce, &[failure()], SystemTime::now()) else { panic!() };
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].what, "postmaster non-delivery notification");
        assert_eq!(n[0].envelope.sender, "double-bounce@mail.example.test");
        assert_eq!(n[0].envelope.recipients[0].address, "postmaster@mail.example.test");
        let (top, ps, _) = parse(&n[0].content);
        assert_eq!(field(&top, "Subject"), Some("Postmaster Copy: Undelivered Mail"));
        assert_eq!(field(&ps[2].0, "Content-Type"), Some("message/rfc822"), "the whole bounce");
        // The double bounce failing in turn: discarded, whatever notify_classes says.
        let double = queued(dir.path(), "double-bounce@mail.example.test", None);
        assert!(matches!(failures(&r, &double, &[failure()], SystemTime::now()), Plan::Discard));
        let bare = queued(dir.path(), "double-bounce", None);
        assert!(matches!(failures(&r, &bare, &[failure()], SystemTime::now()), Plan::Discard));
        // The bounce class: the sender's bounce plus a headers-only copy to the postmaster.
        let f = queued(dir.path(), "alice@example.test", None);
        let r = Reporter { notify_classes: vec!["bounce".into()], ..reporter() };
        let Plan::Send(n) = failures(&r, &f, &[failure()], SystemTime::now()) else { panic!() };
        assert_eq!(n.len(), 2);
        assert_eq!(n[1].envelope.sender, "double-bounce@mail.example.test");
        let (_, ps, _) = parse(&n[1].content);
        assert_eq!(field(&ps[2].0, "Content-Type"), Some("text/rfc822-headers"));
    }

    #[test]
    fn delay_warnings_and_success_reports() {
        let dir = tempfile::tempdir().unwrap();
        let f = queued(dir.path(), "alice@example.test", None);
        let r = Reporter { delay_warning_time: Duration::from_secs(4 * 3600), ..reporter() };
        let delayed = Entry {
            action: Action::Delayed,
            dsn: "4.4.1".into(),
            relay: "none".into(),
            reason: "connect to mx.example.test[192.0.2.1]:25: Connection refused".into(),
            ..failure()
        };
        let n = delays(&r, &f, std::slice::from_ref(&delayed), SystemTime::now());
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].what, n[0].envelope.sender.as_str()), ("sender delay notification", ""));
        let (top, ps, groups) = parse(&n[0].content);
        assert_eq!(field(&top, "Subject"), Some("Delayed Mail (still being retried)"));
        let human = decoded(&ps[0]);
        assert!(human.contains("THIS IS A WARNING ONLY") && human.contains("for more than 4 hour(s)"), "{human}");
        assert!(human.contains("until it is 5 day(s) old"));
        let g = &groups[1];
        assert_eq!(field(g, "Action"), Some("delayed"));
        assert_eq!(field(g, "Status"), Some("4.4.1"));
        assert_eq!(field(g, "Remote-MTA"), None, "nobody answered");
        assert_eq!(
            field(g, "Diagnostic-Code"),
            Some("X-Postfix; connect to mx.example.test[192.0.2.1]:25: Connection refused")
        );
        assert!(field(g, "Will-Retry-Until").is_some());
        assert_eq!(field(&ps[2].0, "Content-Type"), Some("text/rfc822-headers"));
        // A delayed bounce: the postmaster hears of it only with the delay class.
        let bounce = queued(dir.path(), "", None);
        assert!(delays(&r, &bounce, std::slice::from_ref(&delayed), SystemTime::now()).is_empty());
        let rd = Reporter { notify_classes: vec!["delay".into()], ..r.clone() };
        let n = delays(&rd, &bounce, std::slice::from_ref(&delayed), SystemTime::now());
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].envelope.recipients[0].address, "postmaster@mail.example.test");
        assert_eq!(n[0].envelope.sender, "double-bounce@mail.example.test");
        let (top, _, _) = parse(&n[0].content);
        assert_eq!(field(&top, "Subject"), Some("Postmaster Warning: Delayed Mail"));
        // ... and of ordinary mail, besides the sender's warning.
        let n = delays(&rd, &f, std::slice::from_ref(&delayed), SystemTime::now());
        assert_eq!(
            n.iter().map(|n| n.what).collect::<Vec<_>>(),
            ["sender delay notification", "postmaster delay notification"]
        );

        let ok = Entry {
            action: Action::Delivered,
            dsn: "2.0.0".into(),
            relay: "mail.example.test[private/lmtp-deliver]".into(),
            reason: "250 2.0.0 <bob@example.test> Saved".into(),
            ..failure()
        };
        let n = successes(&r, &f, std::slice::from_ref(&ok), SystemTime::now()).unwrap();
        assert_eq!(n.what, "sender delivery status notification");
        let (top, _, groups) = parse(&n.content);
        assert_eq!(field(&top, "Subject"), Some("Successful Mail Delivery Report"));
        assert_eq!(field(&groups[1], "Action"), Some("delivered"));
        assert_eq!(field(&groups[1], "Diagnostic-Code"), Some("smtp; 250 2.0.0 <bob@example.test> Saved"));
        assert!(successes(&r, &bounce, &[ok], SystemTime::now()).is_none(), "never to the null sender");
    }

    #[test]
    fn long_reasons_are_folded_like_postfix_does() {
        let w = wrap(&format!("<bob@example.test>: {}", "word ".repeat(40)), 76, "    ");
        assert!(w.lines().all(|l| l.chars().count() <= 76), "{w}");
        assert!(w.lines().skip(1).all(|l| l.starts_with("    word")), "{w}");
        assert_eq!(w.split_whitespace().filter(|x| *x == "word").count(), 40);
        assert!(w.ends_with("\r\n") && !w.contains(" \r\n"));
        let long = "x".repeat(100);
        assert_eq!(wrap(&long, 76, "    "), format!("{long}\r\n"), "a long word stays whole");
    }

    #[test]
    fn notify_decides_who_hears_what() {
        assert!(wants_failure_notice(None));
        assert!(wants_failure_notice(Some(Recipient::NOTIFY_FAILURE | Recipient::NOTIFY_DELAY)));
        assert!(!wants_failure_notice(Some(Recipient::NOTIFY_NEVER)));
        assert!(!wants_failure_notice(Some(Recipient::NOTIFY_SUCCESS)));
        assert!(wants_delay_notice(None));
        assert!(wants_delay_notice(Some(Recipient::NOTIFY_DELAY)));
        assert!(!wants_delay_notice(Some(Recipient::NOTIFY_FAILURE)));
        assert!(!wants_delay_notice(Some(Recipient::NOTIFY_NEVER)));
        assert!(!wants_success_notice(None));
        assert!(wants_success_notice(Some(Recipient::NOTIFY_SUCCESS)));
    }

    #[test]
    fn hostile_text_stays_on_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = queued(dir.path(), "alice@example.test", None);
        let evil = Entry {
            reason: "550 no\r\nAction: delivered\r\n\r\nFinal-Recipient: rfc822; x@evil".into(),
            relay: "evil\r\nX: y[1.2.3.4]:25".into(),
            ..failure()
        };
        let Plan::Send(n) = failures(&reporter(), &f, &[evil], SystemTime::now()) else { panic!() };
        let (_, _, groups) = parse(&n[0].content);
        assert_eq!(groups.len(), 2);
        assert_eq!(field(&groups[1], "Action"), Some("failed"));
        assert_eq!(field(&groups[1], "Remote-MTA"), Some("dns; evil  X: y"));
    }
}

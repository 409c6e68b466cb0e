//! Non-delivery notifications (RFC 3464 delivery status notifications), as Postfix's
//! bounce(8) writes them: a multipart/report with a human-readable part, a
//! message/delivery-status part and the returned message (or only its headers, for RET=HDRS),
//! sent from MAILER-DAEMON with the null sender so it can never bounce back.

use std::fmt::Write as _;
use std::time::SystemTime;

use rpost_ipc::RecipientStatus;
use rpost_queue::{Envelope, QueueFile};

/// A recipient that failed for good.
#[derive(Debug, Clone)]
pub struct Failure {
    pub address: String,
    pub orcpt: Option<String>,
    pub status: RecipientStatus,
    /// Gave up after maximal_queue_lifetime rather than a permanent error.
    pub expired: bool,
}

/// What the bounce needs to know about the mail system.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub myhostname: String,
    pub mail_name: String,
}

/// Whether the sender asked not to hear about failures for this recipient (NOTIFY without
/// FAILURE, or NOTIFY=NEVER).
pub fn wants_failure_notice(notify: Option<u8>) -> bool {
    match notify {
        None => true,
        Some(bits) => bits & rpost_queue::Recipient::NOTIFY_FAILURE != 0,
    }
}

/// Builds the bounce for `failures` of `original`, or None for the null sender (a bounce is
/// never bounced).
pub fn build(r: &Reporter, original: &QueueFile, failures: &[Failure], now: SystemTime) -> Option<(Envelope, Vec<u8>)> {
    let env = &original.envelope;
    if env.sender.is_empty() || failures.is_empty() {
        return None;
    }
    let id = &original.id;
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let boundary = format!("{id}.{secs}/{}", r.myhostname);
    let mut m = String::new();
    let _ = write!(
        m,
        "From: MAILER-DAEMON@{host} (Mail Delivery System)\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         To: {to}\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         Message-Id: <{secs}.{id}@{host}>\r\n\
         Date: {date}\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This is the mail system at host {host}.\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients. It's attached below.\r\n\
         \r\n\
         For further assistance, please send mail to postmaster.\r\n\
         \r\n\
         If you do so, please include this problem report. You can\r\n\
         delete your own text from the attached returned message.\r\n\
         \r\n\
         {pad}The {name} program\r\n\
         \r\n",
        host = r.myhostname,
        to = env.sender,
        date = rpost_log::rfc5322_date(now),
        pad = " ".repeat(19),
        name = r.mail_name,
    );
    for f in failures {
        let why = if f.expired { "message expired: delivery temporarily suspended" } else { f.status.reason.as_str() };
        let _ = write!(m, "<{}>: {}\r\n\r\n", f.address, one_line(why));
    }
    let _ = write!(
        m,
        "--{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {host}\r\n\
         X-Postfix-Queue-ID: {id}\r\n\
         X-Postfix-Sender: rfc822; {sender}\r\n\
         Arrival-Date: {arrival}\r\n",
        host = r.myhostname,
        sender = env.sender,
        arrival = rpost_log::rfc5322_date(env.arrival),
    );
    if let Some(envid) = &env.envid {
        let _ = write!(m, "Original-Envelope-Id: {}\r\n", one_line(envid));
    }
    for f in failures {
        let _ = write!(m, "\r\nFinal-Recipient: rfc822; {}\r\n", f.address);
        if let Some(o) = &f.orcpt {
            let _ = write!(m, "Original-Recipient: {}\r\n", one_line(o));
        }
        let status = if f.expired { "4.4.7" } else { f.status.dsn.as_str() };
        let _ = write!(m, "Action: failed\r\nStatus: {status}\r\n");
        if f.status.relay != "none" && !f.status.relay.is_empty() {
            let _ = write!(m, "Remote-MTA: dns; {}\r\n", one_line(&f.status.relay));
        }
        if !f.expired {
            let _ = write!(m, "Diagnostic-Code: smtp; {}\r\n", one_line(&f.status.reason));
        }
    }
    let headers_only = env.ret == Some(rpost_queue::Ret::Hdrs);
    let _ = write!(
        m,
        "\r\n--{boundary}\r\n\
         Content-Description: {desc}\r\n\
         Content-Type: {ctype}\r\n\
         \r\n",
        desc = if headers_only { "Undelivered Message Headers" } else { "Undelivered Message" },
        ctype = if headers_only { "text/rfc822-headers" } else { "message/rfc822" },
    );
    let mut bytes = m.into_bytes();
    let content = original.content().ok()?;
    if headers_only {
        let end = find(&content, b"\r\n\r\n").map(|i| i + 2).unwrap_or(content.len());
        bytes.extend_from_slice(&content[..end]);
    } else {
        bytes.extend_from_slice(&content);
    }
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let mut bounce = Envelope::new("");
    bounce.recipients.push(rpost_queue::Recipient::new(env.sender.clone()));
    bounce.smtputf8 = env.smtputf8;
    bounce.client.protocol = "local".into();
    Some((bounce, bytes))
}

/// Reasons come from remote servers: keep them on one header-safe line.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(900).collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpost_ipc::Outcome;
    use rpost_queue::{Queue, QueueDir, Recipient};

    fn queued(dir: &std::path::Path, sender: &str, ret: Option<rpost_queue::Ret>) -> QueueFile {
        let q = Queue::new(dir);
        q.ensure_dirs().unwrap();
        let mut env = Envelope::new(sender);
        env.ret = ret;
        env.recipients.push(Recipient::new("bob@example.test"));
        let mut m = q.create(&env).unwrap();
        m.write_content(b"Subject: hello\r\nX-Secret: body follows\r\n\r\nthe body\r\n").unwrap();
        let id = m.commit().unwrap();
        q.open(QueueDir::Incoming, &id).unwrap()
    }

    fn failure() -> Failure {
        Failure {
            address: "bob@example.test".into(),
            orcpt: Some("rfc822;bob@example.test".into()),
            status: RecipientStatus {
                index: 0,
                outcome: Outcome::Bounced,
                dsn: "5.1.1".into(),
                relay: "mx.example.test[192.0.2.1]:25".into(),
                reason: "host mx.example.test[192.0.2.1] said: 550 5.1.1 no such user\r\n(in reply to RCPT TO command)"
                    .into(),
            },
            expired: false,
        }
    }

    fn reporter() -> Reporter {
        Reporter { myhostname: "mail.example.test".into(), mail_name: "rpost".into() }
    }

    #[test]
    fn a_bounce_is_a_multipart_report_from_the_null_sender() {
        let dir = tempfile::tempdir().unwrap();
        let f = queued(dir.path(), "alice@example.test", None);
        let (env, body) = build(&reporter(), &f, &[failure()], SystemTime::now()).unwrap();
        assert_eq!(env.sender, "");
        assert_eq!(env.recipients[0].address, "alice@example.test");
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("Remote-MTA: dns; mx.example.test[192.0.2.1]:25\r\n"));
        assert!(text.contains("Original-Recipient: rfc822;bob@example.test\r\n"));
        assert!(text.contains("the body"), "RET absent: the whole message comes back");
        // A remote reason with a line break cannot add header lines.
        assert!(!text.contains("\r\n(in reply to"));
        assert!(text.trim_end().ends_with("--"));
    }

    #[test]
    fn ret_hdrs_returns_headers_only_and_null_senders_get_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = queued(dir.path(), "alice@example.test", Some(rpost_queue::Ret::Hdrs));
        let (_, body) = build(&reporter(), &f, &[failure()], SystemTime::now()).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.contains("Content-Type: text/rfc822-headers") && text.contains("X-Secret: body follows"));
        assert!(!text.contains("the body"));
        let f = queued(dir.path(), "", None);
        assert!(build(&reporter(), &f, &[failure()], SystemTime::now()).is_none());
    }

    #[test]
    fn notify_decides_who_hears_about_failures() {
        assert!(wants_failure_notice(None));
        assert!(wants_failure_notice(Some(Recipient::NOTIFY_FAILURE | Recipient::NOTIFY_DELAY)));
        assert!(!wants_failure_notice(Some(Recipient::NOTIFY_NEVER)));
        assert!(!wants_failure_notice(Some(Recipient::NOTIFY_SUCCESS)));
    }
}

//! Failure notices `local` sends itself: a delivery inside an owner- alias's expansion
//! that fails for good is reported to the owner (the expansion's envelope sender), not to
//! the original sender, as Postfix's local(8) does (its bounce_workaround). The report is
//! RFC 3464 (multipart/report with message/delivery-status and the original headers), from
//! the null sender, queued like any other message.

use std::time::SystemTime;

use rpost_queue::{Envelope, Recipient};

use super::Message;
use super::expand::Status;
use super::requeue;
use super::settings::Settings;

/// One failed delivery to report.
#[derive(Debug, Clone)]
pub struct Failed<'a> {
    /// The address that failed (to= in the log).
    pub address: &'a str,
    pub status: &'a Status,
}

fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The header section of the message (CRLF), for text/rfc822-headers.
fn headers(content: &[u8]) -> &[u8] {
    match content.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => &content[..i + 2],
        None => content,
    }
}

/// Builds the notice (CRLF line endings).
pub fn build(s: &Settings, msg: &Message, owner: &str, failed: &[Failed<'_>], now: SystemTime) -> Vec<u8> {
    let boundary = format!("{}.rpost-local/{}", msg.queue_id, s.myhostname);
    let date = rpost_log::rfc5322_date(now);
    let mut text = format!(
        "From: MAILER-DAEMON@{host} (Mail Delivery System)\r\n\
         To: {owner}\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.local-notice@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\
         \r\n\
         This is the mail system at host {host}.\r\n\
         \r\n\
         I'm sorry to have to inform you that your message could not\r\n\
         be delivered to one or more recipients. You get this report as the\r\n\
         owner of the mailing list or alias it was sent to.\r\n\
         \r\n",
        host = s.myhostname,
        owner = clean(owner),
        id = msg.queue_id,
    );
    for f in failed {
        text.push_str(&format!("<{}>: {}\r\n", clean(f.address), clean(&f.status.reason)));
    }
    text.push_str(&format!(
        "\r\n--{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         Reporting-MTA: dns; {host}\r\n\
         X-Postfix-Queue-ID: {id}\r\n\
         X-Postfix-Sender: rfc822; {sender}\r\n\
         Arrival-Date: {arrival}\r\n",
        host = s.myhostname,
        id = msg.queue_id,
        sender = clean(&msg.sender),
        arrival = rpost_log::rfc5322_date(msg.envelope.arrival),
    ));
    for f in failed {
        text.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nOriginal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\nDiagnostic-Code: X-Postfix; {}\r\n",
            clean(f.address),
            clean(&msg.original),
            clean(&f.status.dsn),
            clean(&f.status.reason),
        ));
    }
    text.push_str(&format!(
        "\r\n--{boundary}\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    ));
    let mut out = text.into_bytes();
    out.extend_from_slice(headers(&msg.content));
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Queues the notice to `owner` from the null sender; returns the queue ID.
pub fn send(s: &Settings, msg: &Message, owner: &str, failed: &[Failed<'_>]) -> Result<String, String> {
    let content = build(s, msg, owner, failed, SystemTime::now());
    let mut env = Envelope::new("");
    env.recipients.push(Recipient::new(owner));
    requeue::commit(s, &env, &[&content])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_is_a_delivery_status_report() {
        let mut p = rpost_config::Params::empty();
        p.set("myhostname", "mail.example.test");
        let s = Settings::from_params(&p, "/nonexistent".into(), false).unwrap();
        let content = b"Subject: list mail\r\nFrom: a@b\r\n\r\nsecret body\r\n".to_vec();
        let msg = Message {
            queue_id: "0123456789ABCDEF".into(),
            sender: "a@b".into(),
            delivered_to: Default::default(),
            content,
            original: "list@mail.example.test".into(),
            envelope: rpost_queue::Envelope::new("a@b"),
            queue_dir: "active".into(),
            index: 0,
            orcpt: None,
            notify: None,
        };
        let st = Status::fail(false, "5.1.1", "unknown user: \"gone\"");
        let out = build(
            &s,
            &msg,
            "owner-list@mail.example.test",
            &[Failed { address: "gone@mail.example.test", status: &st }],
            SystemTime::UNIX_EPOCH,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "From: MAILER-DAEMON@mail.example.test (Mail Delivery System)\r\nTo: owner-list@mail.example.test\r\n"
        ));
        assert!(text.contains(
            "report-type=delivery-status;\r\n\tboundary=\"0123456789ABCDEF.rpost-local/mail.example.test\"\r\n"
        ));
        assert!(text.contains("<gone@mail.example.test>: unknown user: \"gone\"\r\n"));
        assert!(text.contains("\r\nFinal-Recipient: rfc822; gone@mail.example.test\r\nOriginal-Recipient: rfc822; list@mail.example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("text/rfc822-headers\r\n\r\nSubject: list mail\r\nFrom: a@b\r\n\r\n--"));
        assert!(!text.contains("secret body"), "headers only");
        assert!(text.ends_with("--0123456789ABCDEF.rpost-local/mail.example.test--\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'), "CRLF only");
    }
}

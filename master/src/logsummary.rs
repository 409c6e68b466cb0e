//! `rmaster log summary [FILE|--journal]`: a pflogsumm-like report from rpost's maillog.
//!
//! Reads the lines the daemons write (Postfix shapes, see crates/log): qmgr's
//! `QID: from=<s>, size=N, nrcpt=M (queue active)` counts a message as received (once per
//! queue ID) with its size and sender; delivery agents' `QID: to=<r>, ..., relay=..., status=X`
//! lines count deliveries (`status=sent`, `forwarded as` for forwards), deferrals and bounces
//! (`bounced`, `expired`); smtpd's `reject:` lines count rejections grouped by reply, and
//! `hold:`/`discard:` lines count held and discarded mail. lmtp-deliver's own `status=saved`
//! lines are skipped: the lmtp client's `status=sent` line is the delivery that counts.
//!
//! Input is untrusted text (a log may contain anything a client sent): lines are read as
//! lossy UTF-8, unparsable lines are ignored, and memory is bounded by the number of distinct
//! queue IDs and addresses, as in pflogsumm.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;

/// Counters for one log.
#[derive(Debug, Default)]
pub struct Summary {
    /// Messages received (distinct queue IDs seen by qmgr).
    pub received: u64,
    /// Bytes of the received messages.
    pub bytes_received: u64,
    /// Recipients delivered (`status=sent`, not forwards).
    pub delivered: u64,
    /// Bytes delivered (message size once per delivered recipient).
    pub bytes_delivered: u64,
    /// Recipients forwarded (`status=sent (forwarded as ...)`).
    pub forwarded: u64,
    /// Delivery attempts deferred.
    pub deferred: u64,
    /// Recipients bounced (including expired).
    pub bounced: u64,
    /// SMTP rejections.
    pub rejected: u64,
    /// Messages put on hold.
    pub held: u64,
    /// Messages discarded.
    pub discarded: u64,
    senders: HashMap<String, (u64, u64)>,
    sender_domains: HashMap<String, (u64, u64)>,
    recipients: HashMap<String, (u64, u64)>,
    recipient_domains: HashMap<String, (u64, u64)>,
    reject_reasons: HashMap<String, u64>,
    defer_reasons: HashMap<String, u64>,
    bounce_reasons: HashMap<String, u64>,
    sizes: HashMap<String, u64>,
}

/// The value of `key=<...>` in a log text.
fn angle(text: &str, key: &str) -> Option<String> {
    let start = text.find(&format!("{key}=<"))? + key.len() + 2;
    let end = text[start..].find('>')? + start;
    Some(text[start..end].to_string())
}

/// The value of `key=VALUE` up to the next `,` or space.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let start = text.find(&pat)? + pat.len();
    let rest = &text[start..];
    Some(&rest[..rest.find([',', ' ']).unwrap_or(rest.len())])
}

fn domain_of(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((_, d)) => d.to_ascii_lowercase(),
        None if addr.is_empty() => "(bounce)".into(),
        None => "(local)".into(),
    }
}

/// The text in the parentheses after `status=X `.
fn status_text(text: &str) -> String {
    let Some(i) = text.find(" status=") else { return String::new() };
    let rest = &text[i..];
    match (rest.find('('), rest.rfind(')')) {
        (Some(a), Some(b)) if b > a => rest[a + 1..b].to_string(),
        _ => String::new(),
    }
}

/// A reason with the per-message parts (addresses, queue IDs) removed so equal causes group.
fn generalize(reason: &str) -> String {
    let mut out = String::new();
    let mut rest = reason;
    while let Some(a) = rest.find('<') {
        out.push_str(&rest[..a]);
        match rest[a..].find('>') {
            Some(b) => {
                rest = &rest[a + b + 1..];
                rest = rest.strip_prefix(": ").unwrap_or(rest);
            }
            None => {
                rest = &rest[a..];
                break;
            }
        }
    }
    out.push_str(rest);
    let mut s = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 120 {
        let mut cut = 120;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn bump(map: &mut HashMap<String, (u64, u64)>, key: String, bytes: u64) {
    let e = map.entry(key).or_default();
    e.0 += 1;
    e.1 += bytes;
}

/// Splits a syslog/maillog/journal line into (program, text): `... rpost/submission/smtpd[12]: text`
/// gives ("smtpd", "text").
fn split_line(line: &str) -> Option<(&str, &str)> {
    let i = line.find("]: ")?;
    let head = &line[..i];
    let ident = head.rsplit(' ').next()?;
    let ident = &ident[..ident.find('[')?];
    let program = ident.rsplit('/').next()?;
    Some((program, &line[i + 3..]))
}

impl Summary {
    /// Reads every line of a log.
    pub fn read(input: impl BufRead) -> std::io::Result<Summary> {
        let mut s = Summary::default();
        for line in input.split(b'\n') {
            s.line(&String::from_utf8_lossy(&line?));
        }
        Ok(s)
    }

    /// Accounts one log line.
    pub fn line(&mut self, line: &str) {
        let Some((program, text)) = split_line(line) else { return };
        let Some((qid, rest)) = text.split_once(": ") else { return };
        if qid.is_empty() || !qid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return;
        }
        let rest_sp = format!(" {rest}");
        if let Some(r) = rest.strip_prefix("reject: ") {
            self.rejected += 1;
            // "RCPT from host[ip]: 554 5.7.1 <x>: Relay access denied; from=<..> ..."
            let reply = r.split_once("]: ").map(|(_, t)| t).unwrap_or(r);
            let reply = reply.split_once("; from=<").map(|(t, _)| t).unwrap_or(reply);
            let what = r.split(' ').next().unwrap_or("");
            *self.reject_reasons.entry(format!("{what}: {}", generalize(reply.trim_end_matches(';')))).or_default() +=
                1;
            return;
        }
        if rest.starts_with("hold: ") {
            self.held += 1;
            return;
        }
        if rest.starts_with("discard: ") {
            self.discarded += 1;
            return;
        }
        if program == "qmgr" && rest.starts_with("from=<") && rest.contains(", size=") {
            if self.sizes.contains_key(qid) {
                return;
            }
            let sender = angle(&rest_sp, "from").unwrap_or_default();
            let size = field(&rest_sp, "size").and_then(|v| v.parse().ok()).unwrap_or(0);
            self.sizes.insert(qid.to_string(), size);
            self.received += 1;
            self.bytes_received += size;
            bump(&mut self.senders, if sender.is_empty() { "<>".into() } else { sender.to_ascii_lowercase() }, size);
            bump(&mut self.sender_domains, domain_of(&sender), size);
            return;
        }
        // Delivery agents' result lines; lmtp-deliver's own "status=saved" lines are not.
        if !(rest.starts_with("to=<") && rest_sp.contains(" relay=")) {
            return;
        }
        let Some(status) = field(&rest_sp, "status") else { return };
        let rcpt = angle(&rest_sp, "to").unwrap_or_default().to_ascii_lowercase();
        let size = self.sizes.get(qid).copied().unwrap_or(0);
        let why = status_text(&rest_sp);
        match status {
            "sent" if why.starts_with("forwarded as ") => self.forwarded += 1,
            "sent" => {
                self.delivered += 1;
                self.bytes_delivered += size;
                bump(&mut self.recipient_domains, domain_of(&rcpt), size);
                bump(&mut self.recipients, rcpt, size);
            }
            "deferred" => {
                self.deferred += 1;
                *self.defer_reasons.entry(generalize(&why)).or_default() += 1;
            }
            "bounced" | "expired" => {
                self.bounced += 1;
                let why =
                    if status == "expired" { "message expired in the queue".to_string() } else { generalize(&why) };
                *self.bounce_reasons.entry(why).or_default() += 1;
            }
            _ => {}
        }
    }

    /// The report: totals, then the top `top` entries of each table.
    pub fn render(&self, top: usize) -> String {
        let mut o = String::new();
        let w = &mut o;
        let _ = writeln!(w, "Grand Totals\n------------\nmessages\n");
        for (n, what) in [
            (self.received, "received"),
            (self.delivered, "delivered"),
            (self.forwarded, "forwarded"),
            (self.deferred, "deferred"),
            (self.bounced, "bounced"),
            (self.rejected, "rejected"),
            (self.held, "held"),
            (self.discarded, "discarded"),
        ] {
            let _ = writeln!(w, "{n:>8}   {what}");
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "{:>8}   bytes received", human(self.bytes_received));
        let _ = writeln!(w, "{:>8}   bytes delivered", human(self.bytes_delivered));
        let _ = writeln!(w, "{:>8}   senders", self.senders.len());
        let _ = writeln!(w, "{:>8}   sending hosts/domains", self.sender_domains.len());
        let _ = writeln!(w, "{:>8}   recipients", self.recipients.len());
        let _ = writeln!(w, "{:>8}   recipient hosts/domains", self.recipient_domains.len());
        table(w, "Senders by message count", &self.senders, top);
        table(w, "Recipients by message count", &self.recipients, top);
        table(w, "Sending domains by message count", &self.sender_domains, top);
        table(w, "Recipient domains by message count", &self.recipient_domains, top);
        reasons(w, "Reject reasons", &self.reject_reasons, top);
        reasons(w, "Deferral reasons", &self.defer_reasons, top);
        reasons(w, "Bounce reasons", &self.bounce_reasons, top);
        o
    }
}

/// Bytes the way pflogsumm prints them: 1234, 56k, 7m.
fn human(n: u64) -> String {
    match n {
        0..=99_999 => n.to_string(),
        100_000..=99_999_999 => format!("{}k", n / 1024),
        _ => format!("{}m", n / (1024 * 1024)),
    }
}

fn sorted<V: Copy + Ord>(map: &HashMap<String, V>, top: usize, key: impl Fn(V) -> u64) -> Vec<(&String, V)> {
    let mut v: Vec<(&String, V)> = map.iter().map(|(k, v)| (k, *v)).collect();
    v.sort_by(|a, b| key(b.1).cmp(&key(a.1)).then_with(|| a.0.cmp(b.0)));
    v.truncate(top);
    v
}

fn table(w: &mut String, title: &str, map: &HashMap<String, (u64, u64)>, top: usize) {
    let _ = writeln!(w, "\n{title}\n{}", "-".repeat(title.len()));
    if map.is_empty() {
        let _ = writeln!(w, " none");
    }
    let _ = writeln!(w, "{}", if map.is_empty() { "" } else { " count     bytes  address/domain" });
    for (k, (n, b)) in sorted(map, top, |v| v.0) {
        let _ = writeln!(w, "{n:>6}  {:>8}  {k}", human(b));
    }
}

fn reasons(w: &mut String, title: &str, map: &HashMap<String, u64>, top: usize) {
    let _ = writeln!(w, "\n{title}\n{}", "-".repeat(title.len()));
    if map.is_empty() {
        let _ = writeln!(w, " none");
    }
    for (k, n) in sorted(map, top, |v| v) {
        let _ = writeln!(w, "{n:>6}  {k}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
Nov 22 01:51:24 vm rpost/smtpd[12768]: 660D3B6FC3B9A0ED: client=localhost[127.0.0.1]
Nov 22 01:51:24 vm rpost/qmgr[12643]: 660D3B6FC3B9A0ED: from=<Bench@Example.test>, size=4402, nrcpt=2 (queue active)
Nov 22 01:51:24 vm rpost/lmtp-deliver[12799]: awJKnCVNt2kAADH/AAAABA: from=<bench@example.test>, to=<alice@example.test>, user=alice@example.test, size=4402, mailbox=INBOX, uid=1, stored=4604, status=saved (x)
Nov 22 01:51:24 vm rpost/lmtp[12791]: 660D3B6FC3B9A0ED: to=<alice@example.test>, relay=mail.example.test[private/lmtp-deliver], delay=0.02, delays=0.01/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 <alice@example.test> x Saved)
Nov 22 01:51:25 vm rpost/smtp[12792]: 660D3B6FC3B9A0ED: to=<bob@remote.test>, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (connect to mx.remote.test[192.0.2.9]:25: Connection refused)
Nov 22 01:51:30 vm rpost/qmgr[12643]: 660D3B6FC3B9A0ED: from=<bench@example.test>, size=4402, nrcpt=1 (queue active)
Nov 22 01:51:31 vm rpost/smtp[12792]: 660D3B6FC3B9A0ED: to=<bob@remote.test>, relay=none, delay=7, dsn=5.1.1, status=bounced (host mx.remote.test[192.0.2.9] said: 550 5.1.1 <bob@remote.test>: no such user)
Nov 22 01:51:32 vm rpost/local[12793]: 77AAAAAAAAAAAAAA: to=<carol@vm.example.test>, orig_to=<c@vm.example.test>, relay=local, delay=0.1, delays=0.1/0/0/0, dsn=2.0.0, status=sent (forwarded as 88BBBBBBBBBBBBBB)
Nov 22 01:51:33 vm rpost/submission/smtpd[12800]: NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 <x@elsewhere.test>: Relay access denied; from=<spam@bad.test> to=<x@elsewhere.test> proto=ESMTP helo=<bad>
Nov 22 01:51:34 vm rpost/smtpd[12801]: NOQUEUE: reject: RCPT from unknown[192.0.2.8]: 554 5.7.1 <y@elsewhere.test>: Relay access denied; from=<spam2@bad.test> to=<y@elsewhere.test> proto=ESMTP helo=<bad>
Nov 22 01:51:35 vm rpost/smtpd[12802]: 99CCCCCCCCCCCCCC: hold: RCPT from unknown[192.0.2.8]: <z@example.test>: Recipient address triggers HOLD action
garbage without structure
Nov 22 01:51:36 vm rpost/smtpd[12803]: warning: something odd: with colons
";

    #[test]
    fn counts_like_pflogsumm() {
        let s = Summary::read(LOG.as_bytes()).unwrap();
        assert_eq!(s.received, 1, "one queue ID, seen twice by qmgr");
        assert_eq!(s.bytes_received, 4402);
        assert_eq!(s.delivered, 1, "the lmtp-deliver status=saved line does not count twice");
        assert_eq!(s.bytes_delivered, 4402);
        assert_eq!(s.forwarded, 1);
        assert_eq!(s.deferred, 1);
        assert_eq!(s.bounced, 1);
        assert_eq!(s.rejected, 2);
        assert_eq!(s.held, 1);
        assert_eq!(s.discarded, 0);
        assert_eq!(s.senders.get("bench@example.test"), Some(&(1, 4402)));
        assert_eq!(s.recipient_domains.get("example.test"), Some(&(1, 4402)));
        assert_eq!(s.reject_reasons.get("RCPT: 554 5.7.1 Relay access denied"), Some(&2));
        assert_eq!(s.bounce_reasons.len(), 1);
        let out = s.render(10);
        assert!(out.contains("       1   received\n"), "{out}");
        assert!(out.contains("       2   rejected\n"), "{out}");
        assert!(out.contains("     2  RCPT: 554 5.7.1 Relay access denied"), "{out}");
        assert!(out.contains("bench@example.test"), "{out}");
    }

    #[test]
    fn hostile_lines_are_ignored() {
        let mut s = Summary::default();
        for l in [
            "]: ",
            "x[: a: b",
            "a b[1]: : status=sent",
            "a b[1]: Q: to=<",
            "a b[1]: Q: to=<x relay= status=sent (",
            "\u{0}\u{ff}]: é: reject: é",
        ] {
            s.line(l);
        }
        // Only the well-formed (if truncated) delivery line counts; nothing was received.
        assert_eq!((s.delivered, s.received, s.rejected), (1, 0, 0));
        assert_eq!(generalize(&"é".repeat(200)).len(), 120);
    }
}

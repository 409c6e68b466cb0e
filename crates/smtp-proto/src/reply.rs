//! SMTP replies: building, sanitizing and formatting them for the wire.

use std::fmt::{self, Write as _};

/// Longest reply line on the wire, CRLF included (RFC 5321 section 4.5.3.1.5).
pub const MAX_REPLY_LINE: usize = 512;

/// One SMTP reply, possibly multi-line.
///
/// The fields are public so a session can adjust a reply; [`Reply::to_bytes`] sanitizes again
/// whatever was put there, so no caller-provided text can inject a line break or exceed the
/// line limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    /// Three-digit reply code, 200..=599 for anything a server sends.
    pub code: u16,
    /// RFC 3463 enhanced status code (class, subject, detail), repeated on every line.
    pub enhanced: Option<(u8, u16, u16)>,
    /// Text lines, without code and without line endings. Never empty after [`Reply::new`].
    pub lines: Vec<String>,
}

impl Reply {
    /// Builds a reply. `enhanced` is `"2.0.0"` style or `""` for none (HELO/EHLO replies and
    /// the greeting carry none, RFC 2034); a malformed enhanced code is ignored rather than
    /// sent. `text` may contain `\n` (or `\r\n`) to make a multi-line reply.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        let text = text.into();
        let lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned()).collect();
        Reply { code, enhanced: parse_enhanced(enhanced), lines }
    }

    /// A reply built from already separated lines (EHLO capabilities, HELP text).
    pub fn from_lines(code: u16, enhanced: &str, lines: impl IntoIterator<Item = String>) -> Reply {
        let mut lines: Vec<String> = lines.into_iter().collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Reply { code, enhanced: parse_enhanced(enhanced), lines }
    }

    /// Wire form: `"250-first\r\n250 last\r\n"`, the enhanced code after the code on every
    /// line as Postfix does. Control characters become `?` and each line is cut to 512 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let code = self.code.min(999);
        let enhanced = self.enhanced.map(|(c, s, d)| format!("{c}.{s}.{d}"));
        let count = self.lines.len().max(1);
        let mut out = Vec::with_capacity(count * 64);
        for i in 0..count {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let start = out.len();
            out.extend_from_slice(format!("{code:03}").as_bytes());
            out.push(if i + 1 < count { b'-' } else { b' ' });
            if let Some(e) = &enhanced {
                out.extend_from_slice(e.as_bytes());
                if !text.is_empty() {
                    out.push(b' ');
                }
            }
            // Room left on this line for text, keeping two bytes for CRLF.
            let room = MAX_REPLY_LINE.saturating_sub(out.len() - start + 2);
            push_sanitized(&mut out, text, room);
            // "250 " with no text at all: drop the trailing space for a tidy "250\r\n".
            if enhanced.is_none() && text.is_empty() && out.last() == Some(&b' ') {
                out.pop();
            }
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

/// One-line form for logs, as Postfix logs a reject: `554 5.7.1 text`; the lines of a
/// multi-line reply are joined with a space.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.code.min(999))?;
        if let Some((c, s, d)) = self.enhanced {
            write!(f, " {c}.{s}.{d}")?;
        }
        for line in &self.lines {
            if !line.is_empty() {
                f.write_str(" ")?;
                for ch in line.chars() {
                    f.write_char(if ch.is_control() { '?' } else { ch })?;
                }
            }
        }
        Ok(())
    }
}

/// The EHLO reply: first line the host name, then one capability per line, and no enhanced
/// status codes (RFC 2034 exempts EHLO; Postfix sends none there).
pub fn ehlo_reply(hostname: &str, capabilities: &[String]) -> Reply {
    let mut lines = Vec::with_capacity(capabilities.len() + 1);
    lines.push(hostname.to_owned());
    lines.extend(capabilities.iter().cloned());
    Reply { code: 250, enhanced: None, lines }
}

/// Parses `"x.y.z"`; anything else (including `""`) is `None`.
fn parse_enhanced(s: &str) -> Option<(u8, u16, u16)> {
    let mut it = s.split('.');
    let class: u8 = it.next()?.parse().ok()?;
    let subject: u16 = it.next()?.parse().ok()?;
    let detail: u16 = it.next()?.parse().ok()?;
    if it.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
        return None;
    }
    Some((class, subject, detail))
}

/// Appends `text` with control characters (CR and LF above all: reply injection) replaced by
/// `?`, cut at a character boundary so that at most `room` bytes are written.
fn push_sanitized(out: &mut Vec<u8>, text: &str, room: usize) {
    let mut used = 0;
    let mut buf = [0u8; 4];
    for ch in text.chars() {
        let ch = if ch.is_control() { '?' } else { ch };
        let enc = ch.encode_utf8(&mut buf);
        if used + enc.len() > room {
            break;
        }
        out.extend_from_slice(enc.as_bytes());
        used += enc.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &Reply) -> String {
        String::from_utf8(r.to_bytes()).unwrap()
    }

    #[test]
    fn single_line() {
        assert_eq!(wire(&Reply::new(250, "2.0.0", "Ok")), "250 2.0.0 Ok\r\n");
        assert_eq!(wire(&Reply::new(221, "2.0.0", "Bye")), "221 2.0.0 Bye\r\n");
        assert_eq!(
            wire(&Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")),
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        assert_eq!(wire(&Reply::new(250, "", "")), "250\r\n");
        assert_eq!(wire(&Reply::new(250, "2.0.0", "")), "250 2.0.0\r\n");
    }

    #[test]
    fn multi_line_repeats_enhanced_code() {
        let r = Reply::new(550, "5.7.1", "first\nsecond\r\nthird");
        assert_eq!(wire(&r), "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n");
        assert!(r.is_permanent() && !r.is_transient() && !r.is_positive());
        assert_eq!(r.to_string(), "550 5.7.1 first second third");
    }

    #[test]
    fn ehlo_has_no_enhanced_codes() {
        let caps: Vec<String> = ["PIPELINING", "SIZE 10240000", "8BITMIME", "CHUNKING"].map(String::from).into();
        let r = ehlo_reply("mail.example.com", &caps);
        assert_eq!(
            wire(&r),
            "250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250 CHUNKING\r\n"
        );
        assert_eq!(wire(&ehlo_reply("h", &[])), "250 h\r\n");
    }

    #[test]
    fn sanitizes_injection() {
        // A hostname with CRLF must not produce a second reply line.
        let r = ehlo_reply("evil\r\n250 fake", &[]);
        assert_eq!(wire(&r), "250 evil??250 fake\r\n");
        let mut r = Reply::new(250, "2.0.0", "ok");
        r.lines[0] = "a\rb\nc\0d".into();
        assert_eq!(wire(&r), "250 2.0.0 a?b?c?d\r\n");
    }

    #[test]
    fn truncates_long_lines_at_char_boundary() {
        let r = Reply::new(250, "2.0.0", "x".repeat(2000));
        let w = r.to_bytes();
        assert_eq!(w.len(), MAX_REPLY_LINE);
        assert!(w.ends_with(b"\r\n"));
        let r = Reply::new(550, "5.1.1", "ä".repeat(600));
        let w = r.to_bytes();
        assert!(w.len() <= MAX_REPLY_LINE);
        assert!(String::from_utf8(w).is_ok());
    }

    #[test]
    fn classes_and_enhanced_parsing() {
        assert!(Reply::new(354, "", "go").is_positive());
        assert!(Reply::new(451, "4.3.0", "later").is_transient());
        assert_eq!(Reply::new(250, "2.1.5", "Ok").enhanced, Some((2, 1, 5)));
        assert_eq!(Reply::new(250, "garbage", "Ok").enhanced, None);
        assert_eq!(Reply::new(250, "3.0.0", "Ok").enhanced, None);
        assert_eq!(Reply::new(250, "2.0.0.0", "Ok").enhanced, None);
        assert_eq!(wire(&Reply::from_lines(214, "2.0.0", Vec::new())), "214 2.0.0\r\n");
    }
}

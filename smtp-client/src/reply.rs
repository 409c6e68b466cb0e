//! Client-side reply parsing, sans I/O: bytes from the server in, whole (multi-line) replies out.
//!
//! Lenient where Postfix's smtp(8) is lenient (bare LF line endings, a bare `250` without
//! text, continuation lines with a different code: the last line's code counts), strict
//! where it matters: a line that does not start with a three-digit 2xx..5xx code is a
//! [`ReplyError::Malformed`], and a reply of more than [`MAX_LINES`] lines is
//! [`ReplyError::TooLong`], so a server cannot make the client buffer without bound. Lines
//! longer than [`MAX_LINE`] bytes are cut (the rest of the line is discarded).

use std::collections::VecDeque;

/// Longest reply line kept, in bytes; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 4096;

/// Most lines in one reply (a long EHLO reply has a few dozen).
pub const MAX_LINES: usize = 1000;

/// Longest one-line form of a reply ([`ServerReply::text`]) in bytes, for reasons and logs.
pub const MAX_TEXT: usize = 2000;

/// One complete server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// The code of the last line, 200..=599.
    pub code: u16,
    /// The lines as received (code and separator included, line ending removed), with
    /// control characters replaced by `?` and invalid UTF-8 replaced.
    pub lines: Vec<String>,
}

/// A reply the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error("reply longer than {MAX_LINES} lines")]
    TooLong,
}

impl ServerReply {
    /// Builds a reply from lines as they would appear on the wire (tests, fake servers).
    pub fn parse(wire: &str) -> Result<ServerReply, ReplyError> {
        let mut p = ReplyParser::new();
        p.feed(wire.as_bytes());
        p.next_reply().unwrap_or(Err(ReplyError::Malformed(wire.to_owned())))
    }

    /// 2, 3, 4 or 5.
    pub fn class(&self) -> u8 {
        (self.code / 100) as u8
    }

    pub fn is_positive(&self) -> bool {
        self.class() == 2
    }

    /// The text after `ddd-` / `ddd ` of each line.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|l| l.get(4..).unwrap_or(""))
    }

    /// The first word of the first line's text: the server's host name in a greeting or
    /// an EHLO reply.
    pub fn first_word(&self) -> &str {
        self.texts().next().unwrap_or("").split_ascii_whitespace().next().unwrap_or("")
    }

    /// One-line form as Postfix logs it: the lines joined with a space, e.g.
    /// `550-5.7.1 first 550 5.7.1 second`, cut at [`MAX_TEXT`] bytes.
    pub fn text(&self) -> String {
        let mut s = self.lines.join(" ");
        if s.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    }

    /// The RFC 3463 enhanced status code: taken from the text of the first line when it starts
    /// with one of the reply's class (Postfix's rule), else derived (`2.0.0`, `4.0.0`, `5.0.0`).
    pub fn dsn(&self) -> String {
        self.enhanced().unwrap_or_else(|| format!("{}.0.0", self.class()))
    }

    /// The enhanced status code of the reply, if it carries a valid one.
    pub fn enhanced(&self) -> Option<String> {
        let text = self.texts().next()?;
        let word = text.split_ascii_whitespace().next()?;
        let mut parts = word.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        let digits = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
        let ok = parts.next().is_none()
            && class.len() == 1
            && class.as_bytes()[0] == b'0' + self.class()
            && digits(subject, 3)
            && digits(detail, 3);
        ok.then(|| word.to_owned())
    }
}

/// Incremental reply parser.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// The line being received.
    cur: Vec<u8>,
    /// `cur` hit [`MAX_LINE`]: drop bytes until the line ends.
    overflow: bool,
    /// Complete lines not yet assembled into replies.
    ready: VecDeque<Vec<u8>>,
    /// Lines of the reply being assembled.
    acc: Vec<String>,
    /// The reply being assembled passed [`MAX_LINES`]; report it once it ends.
    too_long: bool,
}

impl ReplyParser {
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Appends bytes read from the server.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (line, end) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], true),
                None => (bytes, false),
            };
            if !self.overflow {
                let room = MAX_LINE - self.cur.len();
                if line.len() > room {
                    self.cur.extend_from_slice(&line[..room]);
                    self.overflow = true;
                } else {
                    self.cur.extend_from_slice(line);
                }
            }
            if end {
                let mut l = std::mem::take(&mut self.cur);
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                self.ready.push_back(l);
                self.overflow = false;
                bytes = &bytes[line.len() + 1..];
            } else {
                bytes = &[];
            }
        }
    }

    /// True when bytes of an incomplete reply are buffered.
    pub fn has_partial(&self) -> bool {
        !self.cur.is_empty() || !self.ready.is_empty() || !self.acc.is_empty()
    }

    /// The next complete reply, `None` when more bytes are needed. After an error the parser
    /// carries on with the next line.
    pub fn next_reply(&mut self) -> Option<Result<ServerReply, ReplyError>> {
        while let Some(raw) = self.ready.pop_front() {
            let line = clean(&raw);
            let Some((code, last)) = classify(&line) else {
                self.acc.clear();
                self.too_long = false;
                return Some(Err(ReplyError::Malformed(line)));
            };
            if self.acc.len() < MAX_LINES {
                self.acc.push(line);
            } else {
                self.too_long = true;
            }
            if last {
                let lines = std::mem::take(&mut self.acc);
                if std::mem::take(&mut self.too_long) {
                    return Some(Err(ReplyError::TooLong));
                }
                return Some(Ok(ServerReply { code, lines }));
            }
        }
        None
    }
}

/// `(code, is_last_line)` for a well-formed reply line.
fn classify(line: &str) -> Option<(u16, bool)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&b[0]) {
        return None;
    }
    let code = u16::from(b[0] - b'0') * 100 + u16::from(b[1] - b'0') * 10 + u16::from(b[2] - b'0');
    match b.get(3) {
        None | Some(b' ') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        _ => None,
    }
}

/// Lossy UTF-8 with tabs as spaces and other control characters as `?`.
fn clean(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(wire: &[u8]) -> Vec<Result<ServerReply, ReplyError>> {
        let mut p = ReplyParser::new();
        p.feed(wire);
        std::iter::from_fn(|| p.next_reply()).collect()
    }

    #[test]
    fn single_and_multi_line() {
        let wire = b"220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n";
        let got = all(wire);
        assert_eq!(got.len(), 2);
        let greet = got[0].as_ref().unwrap();
        assert_eq!(greet.code, 220);
        assert_eq!(greet.first_word(), "mx.example");
        let ehlo = got[1].as_ref().unwrap();
        assert_eq!(ehlo.code, 250);
        assert_eq!(ehlo.texts().collect::<Vec<_>>(), ["mx.example", "PIPELINING", "SIZE 1000"]);
        assert_eq!(ehlo.text(), "250-mx.example 250-PIPELINING 250 SIZE 1000");
    }

    #[test]
    fn every_split_gives_the_same_replies() {
        let wire: &[u8] =
            b"220 a b\r\n250-x\r\n250 y\r\n550-5.1.1 no\n550 5.1.1 such user\r\n250\r\nbogus\r\n354 go\r\n";
        let whole = all(wire);
        assert_eq!(whole.len(), 6);
        for cut in 0..=wire.len() {
            let mut p = ReplyParser::new();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                p.feed(part);
                while let Some(r) = p.next_reply() {
                    got.push(r);
                }
            }
            assert_eq!(got, whole, "cut at {cut}");
        }
        let mut p = ReplyParser::new();
        let mut got = Vec::new();
        for b in wire {
            p.feed(std::slice::from_ref(b));
            while let Some(r) = p.next_reply() {
                got.push(r);
            }
        }
        assert_eq!(got, whole);
        assert!(!p.has_partial());
    }

    #[test]
    fn enhanced_codes() {
        let r = ServerReply::parse("550 5.1.1 <x>: User unknown\r\n").unwrap();
        assert_eq!(r.dsn(), "5.1.1");
        let r = ServerReply::parse("550 User unknown\r\n").unwrap();
        assert_eq!(r.dsn(), "5.0.0");
        // Class mismatch: derived from the code.
        let r = ServerReply::parse("450 5.1.1 odd\r\n").unwrap();
        assert_eq!(r.dsn(), "4.0.0");
        let r = ServerReply::parse("250 2.0.0\r\n").unwrap();
        assert_eq!(r.dsn(), "2.0.0");
        let r = ServerReply::parse("250 2.1.0Ok\r\n").unwrap();
        assert_eq!(r.dsn(), "2.0.0");
        let r = ServerReply::parse("452-4.5.3 Too many\r\n452 4.5.3 recipients\r\n").unwrap();
        assert_eq!(r.dsn(), "4.5.3");
        let r = ServerReply::parse("250 2.1234.0 x\r\n").unwrap();
        assert_eq!(r.dsn(), "2.0.0");
    }

    #[test]
    fn malformed_lines() {
        let got = all(b"hello\r\n25 x\r\n250x\r\n650 x\r\n250 ok\r\n");
        assert_eq!(got.len(), 5);
        assert!(got[..4].iter().all(|r| matches!(r, Err(ReplyError::Malformed(_)))));
        assert_eq!(got[4].as_ref().unwrap().code, 250);
        // A malformed line in the middle of a multi-line reply abandons it.
        let got = all(b"250-a\r\nxx\r\n250 b\r\n");
        assert!(matches!(got[0], Err(ReplyError::Malformed(_))));
        assert_eq!(got[1].as_ref().unwrap().lines, ["250 b"]);
    }

    #[test]
    fn control_characters_are_replaced() {
        let r = ServerReply::parse("550 a\u{1b}[31mb\tc\r\n").unwrap();
        assert_eq!(r.lines, ["550 a?[31mb c"]);
        let mut p = ReplyParser::new();
        p.feed(b"250 \xff\xfe\r\n");
        assert_eq!(p.next_reply().unwrap().unwrap().lines, ["250 \u{fffd}\u{fffd}"]);
    }

    #[test]
    fn limits() {
        let mut p = ReplyParser::new();
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        for chunk in long.chunks(1000) {
            p.feed(chunk);
        }
        p.feed(b"\r\n");
        let r = p.next_reply().unwrap().unwrap();
        assert_eq!(r.lines[0].len(), MAX_LINE);

        let r = ServerReply { code: 250, lines: vec!["250-ä".repeat(1000); 3] };
        assert!(r.text().len() <= MAX_TEXT && r.text().len() > MAX_TEXT - 4);

        let mut p = ReplyParser::new();
        for _ in 0..MAX_LINES + 5 {
            p.feed(b"250-x\r\n");
        }
        p.feed(b"250 end\r\n250 next\r\n");
        assert_eq!(p.next_reply(), Some(Err(ReplyError::TooLong)));
        assert_eq!(p.next_reply().unwrap().unwrap().lines, ["250 next"]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator; the fuzz target would do this at scale.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let alphabet = b"0123456789 -\r\n.25xX\xff";
        for _ in 0..2000 {
            let mut p = ReplyParser::new();
            let mut buf = Vec::new();
            for _ in 0..64 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            p.feed(&buf);
            while let Some(r) = p.next_reply() {
                if let Ok(r) = r {
                    assert!((200..600).contains(&r.code));
                    let _ = (r.dsn(), r.text(), r.first_word());
                }
            }
        }
    }
}

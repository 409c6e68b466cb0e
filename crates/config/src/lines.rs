//! Incremental assembly of Postfix logical lines (sans-IO).
//!
//! Both main.cf(5) and master.cf(5) share these rules:
//!
//! * a logical line starts with non-whitespace text;
//! * a physical line that starts with whitespace continues the previous
//!   logical line; the pieces are joined with one space after trimming;
//! * empty or whitespace-only lines, and lines whose first non-whitespace
//!   character is `#`, are ignored: they neither end nor continue a logical
//!   line (so a comment between a line and its continuation is skipped);
//! * `#` anywhere else is ordinary text;
//! * lines end in LF or CRLF.
//!
//! The assembler takes bytes in arbitrary pieces, so callers can feed it
//! straight from a read buffer; the result does not depend on where the
//! input was split.
//!
//! Error reporting: [`LogicalLines::feed`] never fails. The first error
//! (invalid UTF-8, an over-long line, a continuation line with nothing to
//! continue) is remembered, all later input is ignored, and
//! [`LogicalLines::finish`] reports it. Lines completed before the error are
//! still returned by `feed`, but a caller must treat the whole input as bad
//! when `finish` fails.

/// Longest physical line accepted, excluding its line terminator. The files
/// are small and root-owned; this only guards against feeding a binary file
/// by mistake.
pub const MAX_PHYSICAL_LINE: usize = 64 * 1024;

/// Longest logical line accepted (after joining continuation lines).
pub const MAX_LOGICAL_LINE: usize = 1024 * 1024;

/// One logical line: the joined text and where it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    /// 1-based number of the first physical line.
    pub line: usize,
    /// The joined text, trimmed, continuation pieces joined by one space.
    pub text: String,
    /// `(byte offset in text, physical line)` where each joined piece
    /// starts, in order; the first is `(0, line)`. Lets a parser name the
    /// physical line of something inside a long logical line.
    pub pieces: Vec<(usize, usize)>,
}

impl LogicalLine {
    /// Physical line holding byte `offset` of `text`.
    pub fn line_at(&self, offset: usize) -> usize {
        self.pieces.iter().take_while(|(start, _)| *start <= offset).last().map_or(self.line, |&(_, line)| line)
    }
}

/// Incremental logical-line assembler; see the module documentation.
#[derive(Debug, Default)]
pub struct LogicalLines {
    /// Bytes of the physical line not yet terminated by LF.
    partial: Vec<u8>,
    /// Number of physical lines completed so far.
    physical: usize,
    /// The logical line being assembled (it may still get continuations).
    current: Option<LogicalLine>,
    /// First error seen; once set, input is ignored.
    error: Option<(usize, String)>,
}

impl LogicalLines {
    /// A fresh assembler.
    pub fn new() -> LogicalLines {
        LogicalLines::default()
    }

    /// Feeds more bytes; returns the logical lines that are now complete
    /// (a logical line is complete once the next one starts).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LogicalLine> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while self.error.is_none() && !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    self.partial.extend_from_slice(&rest[..pos]);
                    rest = &rest[pos + 1..];
                    let line = std::mem::take(&mut self.partial);
                    self.physical_line(line, &mut out);
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    rest = &[];
                    // +1 leaves room for the CR of a CRLF not yet seen.
                    if self.partial.len() > MAX_PHYSICAL_LINE + 1 {
                        self.fail(self.physical + 1, "line too long");
                    }
                }
            }
        }
        out
    }

    /// Ends the input: handles a final line without terminator and returns
    /// the last logical line, or the first error as (line, message).
    pub fn finish(mut self) -> Result<Vec<LogicalLine>, (usize, String)> {
        let mut out = Vec::new();
        if self.error.is_none() && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.physical_line(line, &mut out);
        }
        if let Some(err) = self.error {
            return Err(err);
        }
        out.extend(self.current.take());
        Ok(out)
    }

    fn fail(&mut self, line: usize, message: &str) {
        if self.error.is_none() {
            self.error = Some((line, message.to_string()));
        }
    }

    fn physical_line(&mut self, mut bytes: Vec<u8>, out: &mut Vec<LogicalLine>) {
        self.physical += 1;
        let number = self.physical;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if bytes.len() > MAX_PHYSICAL_LINE {
            self.fail(number, "line too long");
            return;
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(_) => {
                self.fail(number, "invalid UTF-8");
                return;
            }
        };
        let trimmed = text.trim_matches(is_space);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return;
        }
        if text.starts_with(is_space) {
            match self.current.as_mut() {
                Some(cur) => {
                    if cur.text.len() + 1 + trimmed.len() > MAX_LOGICAL_LINE {
                        self.fail(number, "logical line too long");
                        return;
                    }
                    cur.text.push(' ');
                    cur.pieces.push((cur.text.len(), number));
                    cur.text.push_str(trimmed);
                }
                None => self.fail(number, "line starts with whitespace but there is no line to continue"),
            }
        } else {
            out.extend(self.current.replace(LogicalLine {
                line: number,
                text: trimmed.to_string(),
                pieces: vec![(0, number)],
            }));
        }
    }
}

/// Postfix's ISSPACE for our purposes: ASCII whitespace.
fn is_space(c: char) -> bool {
    c.is_ascii_whitespace()
}

/// Splits a whole buffer into logical lines.
pub fn split(bytes: &[u8]) -> Result<Vec<LogicalLine>, (usize, String)> {
    let mut ll = LogicalLines::new();
    let mut out = ll.feed(bytes);
    out.extend(ll.finish()?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Built from pieces because a `\` line continuation in a string literal
    // would eat the leading whitespace this test is about.
    const SAMPLE: &[u8] = concat!(
        "# comment\r\n",
        "myhostname = mail.example.com\n",
        "smtpd_recipient_restrictions =\n",
        "    permit_mynetworks,\r\n",
        "# a comment between a line and its continuation\n",
        "\n",
        "  \t \n",
        "\treject_unauth_destination  \n",
        "   # indented comment\n",
        "smtpd_banner = $myhostname ESMTP # not a comment\n",
        "uni = caf\u{e9} \u{2709}\n",
        "last = no newline",
    )
    .as_bytes();

    fn expected() -> Vec<LogicalLine> {
        let l = |line, text: &str| LogicalLine { line, text: text.to_string(), pieces: vec![(0, line)] };
        let mut joined = l(3, "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination");
        joined.pieces = vec![(0, 3), (31, 4), (50, 8)];
        vec![
            l(2, "myhostname = mail.example.com"),
            joined,
            l(10, "smtpd_banner = $myhostname ESMTP # not a comment"),
            l(11, "uni = café ✉"),
            l(12, "last = no newline"),
        ]
    }

    fn run_split(parts: &[&[u8]]) -> Result<Vec<LogicalLine>, (usize, String)> {
        let mut ll = LogicalLines::new();
        let mut out = Vec::new();
        for p in parts {
            out.extend(ll.feed(p));
        }
        out.extend(ll.finish()?);
        Ok(out)
    }

    #[test]
    fn whole_input() {
        assert_eq!(split(SAMPLE).unwrap(), expected());
    }

    #[test]
    fn every_split_point_gives_same_result() {
        for i in 0..=SAMPLE.len() {
            let (a, b) = SAMPLE.split_at(i);
            assert_eq!(run_split(&[a, b]).unwrap(), expected(), "split at {i}");
        }
        for i in 0..=SAMPLE.len() {
            for j in i..=SAMPLE.len() {
                let parts = [&SAMPLE[..i], &SAMPLE[i..j], &SAMPLE[j..]];
                assert_eq!(run_split(&parts).unwrap(), expected(), "split {i}/{j}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let parts: Vec<&[u8]> = SAMPLE.chunks(1).collect();
        assert_eq!(run_split(&parts).unwrap(), expected());
    }

    #[test]
    fn line_at_maps_offsets_to_physical_lines() {
        let ll = &expected()[1];
        assert_eq!(&ll.text[31..48], "permit_mynetworks");
        assert_eq!(&ll.text[50..], "reject_unauth_destination");
        assert_eq!(ll.line_at(0), 3);
        assert_eq!(ll.line_at(30), 3);
        assert_eq!(ll.line_at(31), 4);
        assert_eq!(ll.line_at(49), 4);
        assert_eq!(ll.line_at(50), 8);
        assert_eq!(ll.line_at(10_000), 8);
    }

    #[test]
    fn lines_are_returned_as_soon_as_complete() {
        let mut ll = LogicalLines::new();
        assert!(ll.feed(b"a = 1\n").is_empty());
        assert!(ll.feed(b"  more\n").is_empty());
        let got = ll.feed(b"b = 2\n");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].text, "a = 1 more");
        let rest = ll.finish().unwrap();
        assert_eq!(rest[0].text, "b = 2");
        assert_eq!(rest[0].line, 3);
    }

    #[test]
    fn orphan_continuation_is_an_error() {
        let input = b"# header\n\n  orphan = 1\nx = y\n";
        let err = split(input).unwrap_err();
        assert_eq!(err.0, 3);
        assert!(err.1.contains("no line to continue"), "{}", err.1);
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(run_split(&[a, b]).unwrap_err(), err);
        }
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let input = b"a = 1\nb = \xff\xfe\nc = 3\n";
        assert_eq!(split(input).unwrap_err(), (2, "invalid UTF-8".to_string()));
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(run_split(&[a, b]).unwrap_err().0, 2);
        }
        // Also on a final line without a terminator.
        assert_eq!(split(b"a = 1\nb = \xff").unwrap_err().0, 2);
    }

    #[test]
    fn long_lines() {
        let mut ok = b"a = ".to_vec();
        ok.resize(MAX_PHYSICAL_LINE, b'x');
        ok.extend_from_slice(b"\r\n");
        assert_eq!(split(&ok).unwrap().len(), 1);

        let mut long = b"a = 1\nb = ".to_vec();
        long.resize(6 + MAX_PHYSICAL_LINE + 1, b'x');
        long.push(b'\n');
        assert_eq!(split(&long).unwrap_err(), (2, "line too long".to_string()));
        // Without a terminator the error comes while still feeding.
        let mut ll = LogicalLines::new();
        let _ = ll.feed(&long[..long.len() - 1]);
        let _ = ll.feed(&[b'y'; 10]);
        assert_eq!(ll.finish().unwrap_err().0, 2);
        let parts: Vec<&[u8]> = long.chunks(4096).collect();
        assert_eq!(run_split(&parts).unwrap_err().0, 2);
    }

    #[test]
    fn empty_and_comment_only_inputs() {
        assert!(split(b"").unwrap().is_empty());
        assert!(split(b"# only\n\n   \n").unwrap().is_empty());
    }
}

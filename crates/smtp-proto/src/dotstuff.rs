//! Client-side DATA encoding: dot-stuffing (RFC 5321 section 4.5.2) and line-ending repair.

use memchr::memchr2;

/// Encodes a whole message for sending after 354: every line ending becomes CRLF (bare LF
/// and bare CR included, so locally submitted text goes out valid and cannot smuggle), a
/// leading `.` is doubled, a final CRLF is added when missing, and `.\r\n` ends it.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32 + 8);
    let mut s = DotStuffer::new();
    s.feed(body, &mut out);
    s.finish(&mut out);
    out
}

/// Incremental [`dot_stuff`] for messages streamed from a queue file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DotStuffer {
    at_line_start: bool,
    /// A CR ended the previous chunk; whether it is CRLF or bare depends on the next byte.
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    /// At the start of the message, which is the start of a line.
    pub fn new() -> Self {
        DotStuffer { at_line_start: true, pending_cr: false }
    }

    /// Encodes the next piece of the message, appending to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<u8>) {
        while let Some((&c, rest)) = chunk.split_first() {
            if self.pending_cr {
                // CRLF, or a bare CR: both end the line as CRLF.
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if c == b'\n' {
                    chunk = rest;
                    continue;
                }
            }
            match c {
                b'\r' => {
                    self.pending_cr = true;
                    chunk = rest;
                }
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                    chunk = rest;
                }
                _ => {
                    if self.at_line_start && c == b'.' {
                        out.push(b'.');
                    }
                    // Copy the rest of the line in one go.
                    let n = memchr2(b'\r', b'\n', chunk).unwrap_or(chunk.len());
                    out.extend_from_slice(&chunk[..n]);
                    self.at_line_start = false;
                    chunk = &chunk[n..];
                }
            }
        }
    }

    /// Ends the message: CRLF if the last line lacks one, then `.\r\n`.
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b"a"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b".a\r\n..b\r\n.\r\nc.d\r\n"), b"..a\r\n...b\r\n..\r\nc.d\r\n.\r\n");
        assert_eq!(dot_stuff(b"."), b"..\r\n.\r\n");
    }

    #[test]
    fn repairs_line_endings() {
        assert_eq!(dot_stuff(b"a\nb\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\rb\r"), b"a\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b"\r\r\n.\r"), b"\r\n\r\n..\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\r\n.\n"), b"x\r\n..\r\n.\r\n");
    }

    #[test]
    fn incremental_matches_whole_at_every_split() {
        let msg: &[u8] = b".start\r\nline\n.\r..x\r\r\nend.\r";
        let whole = dot_stuff(msg);
        for cut in 0..=msg.len() {
            let mut out = Vec::new();
            let mut s = DotStuffer::new();
            s.feed(&msg[..cut], &mut out);
            s.feed(&msg[cut..], &mut out);
            s.finish(&mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
        let mut out = Vec::new();
        let mut s = DotStuffer::default();
        for b in msg {
            s.feed(std::slice::from_ref(b), &mut out);
        }
        s.finish(&mut out);
        assert_eq!(out, whole);
    }
}

//! Dovecot's tab-escaping (`str_tabescape`) and the line splitter both protocols share.

use crate::ProtoError;

/// Escapes a parameter value: `\001` → `\0011`, TAB → `\001t`, CR → `\001r`, LF → `\001n`,
/// NUL → `\0010`, so a value can never end a field or a line.
pub fn tab_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\u{1}' => out.push_str("\u{1}1"),
            '\t' => out.push_str("\u{1}t"),
            '\r' => out.push_str("\u{1}r"),
            '\n' => out.push_str("\u{1}n"),
            '\0' => out.push_str("\u{1}0"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`tab_escape`]. `\001` followed by anything else stands for that character (as
/// Dovecot's `str_tabunescape`); `l` is accepted for LF as the protocol document spells it.
/// A trailing lone `\001` is an error.
pub fn tab_unescape(field: &str) -> Result<String, ProtoError> {
    if !field.contains('\u{1}') {
        return Ok(field.to_string());
    }
    let mut out = String::with_capacity(field.len());
    let mut it = field.chars();
    while let Some(c) = it.next() {
        if c != '\u{1}' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('1') => out.push('\u{1}'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n' | 'l') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => return Err(ProtoError::Syntax("escape character at the end of a field".into())),
        }
    }
    Ok(out)
}

/// Collects bytes from the peer and hands out complete lines (without the LF, a CR before
/// it removed), refusing lines longer than the limit so a peer cannot make us buffer
/// without bound. Works whatever the split of the input into reads.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    max: usize,
    /// Start of the unconsumed data in `buf`.
    start: usize,
}

impl LineBuffer {
    /// A buffer that refuses lines over `max` bytes (LF not counted).
    pub fn new(max: usize) -> LineBuffer {
        LineBuffer { buf: Vec::new(), max, start: 0 }
    }

    /// Adds bytes read from the peer.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next complete line as UTF-8 text; `Ok(None)` when more bytes are needed.
    /// Errors: a line over the limit (also detected before its LF arrives) or not UTF-8.
    pub fn next_line(&mut self) -> Result<Option<String>, ProtoError> {
        let pending = &self.buf[self.start..];
        match pending.iter().position(|&b| b == b'\n') {
            Some(n) => {
                if n > self.max {
                    return Err(ProtoError::LineTooLong(self.max));
                }
                let mut line = &pending[..n];
                if let Some(l) = line.strip_suffix(b"\r") {
                    line = l;
                }
                let text = std::str::from_utf8(line).map_err(|_| ProtoError::Syntax("line is not UTF-8".into()))?;
                let text = text.to_string();
                self.start += n + 1;
                if self.start > 64 * 1024 {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                Ok(Some(text))
            }
            None if pending.len() > self.max => Err(ProtoError::LineTooLong(self.max)),
            None => Ok(None),
        }
    }

    /// Bytes received but not yet returned as a line.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Splits a line into its TAB-separated fields, unescaping each.
pub fn split_line(line: &str) -> Result<Vec<String>, ProtoError> {
    line.split('\t').map(tab_unescape).collect()
}

/// Optional parameters (`name=value` or a bare boolean `name`), in order.
pub type Params = Vec<(String, Option<String>)>;

/// Parses optional parameters from unescaped fields.
pub fn parse_params(fields: &[String]) -> Params {
    fields
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (f.clone(), None),
        })
        .collect()
}

/// Writes parameters as TAB-separated, escaped fields (each preceded by a TAB).
pub fn write_params(out: &mut String, params: &[(String, Option<String>)]) {
    for (k, v) in params {
        out.push('\t');
        out.push_str(&tab_escape(k));
        if let Some(v) = v {
            out.push('=');
            out.push_str(&tab_escape(v));
        }
    }
}

/// The value of parameter `name` (the first one).
pub fn param<'a>(params: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.as_deref())
}

/// Whether boolean parameter `name` is present.
pub fn flag(params: &[(String, Option<String>)], name: &str) -> bool {
    params.iter().any(|(k, _)| k == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trip() {
        let v = "a\tb\nc\rd\u{1}e\0f";
        let e = tab_escape(v);
        assert!(!e.contains('\t') && !e.contains('\n') && !e.contains('\r') && !e.contains('\0'));
        assert_eq!(e, "a\u{1}tb\u{1}nc\u{1}rd\u{1}1e\u{1}0f");
        assert_eq!(tab_unescape(&e).unwrap(), v);
        assert_eq!(tab_unescape("x\u{1}ly").unwrap(), "x\ny");
        assert_eq!(tab_unescape("x\u{1}zy").unwrap(), "xzy");
        assert!(tab_unescape("x\u{1}").is_err());
    }

    #[test]
    fn lines_split_anywhere() {
        let input = b"VERSION\t1\t2\r\nCPID\t42\nAUTH\t1\tPLAIN\n";
        for split in 0..input.len() {
            let mut lb = LineBuffer::new(100);
            let mut got = Vec::new();
            for part in [&input[..split], &input[split..]] {
                lb.push(part);
                while let Some(l) = lb.next_line().unwrap() {
                    got.push(l);
                }
            }
            assert_eq!(got, vec!["VERSION\t1\t2", "CPID\t42", "AUTH\t1\tPLAIN"], "split at {split}");
            assert_eq!(lb.pending(), 0);
        }
        // Byte by byte.
        let mut lb = LineBuffer::new(100);
        let mut got = Vec::new();
        for b in input {
            lb.push(std::slice::from_ref(b));
            while let Some(l) = lb.next_line().unwrap() {
                got.push(l);
            }
        }
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn long_lines_are_refused_early() {
        let mut lb = LineBuffer::new(8);
        lb.push(b"123456789");
        assert!(matches!(lb.next_line(), Err(ProtoError::LineTooLong(8))));
        let mut lb = LineBuffer::new(8);
        lb.push(b"12345678\n");
        assert_eq!(lb.next_line().unwrap().as_deref(), Some("12345678"));
        let mut lb = LineBuffer::new(8);
        lb.push(b"\xff\n");
        assert!(lb.next_line().is_err());
    }

    #[test]
    fn params_parse_and_write() {
        let f: Vec<String> = ["service=smtp", "secured", "resp=AGEAYg==", ""].iter().map(|s| s.to_string()).collect();
        let p = parse_params(&f);
        assert_eq!(param(&p, "service"), Some("smtp"));
        assert_eq!(param(&p, "resp"), Some("AGEAYg=="));
        assert!(flag(&p, "secured"));
        assert!(!flag(&p, "nologin"));
        let mut out = String::new();
        write_params(&mut out, &[("user".into(), Some("a\tb".into())), ("temp".into(), None)]);
        assert_eq!(out, "\tuser=a\u{1}tb\ttemp");
    }
}

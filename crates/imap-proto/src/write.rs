//! Response side: strings as atoms, quoted strings or literals, as their content needs.

/// An IMAP string: quoted when it is short printable text, else a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() <= 1024 && s.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, s);
    }
}

/// A literal `{N}\r\n<bytes>`.
pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// `NIL` or a string.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// An astring: the bare atom when every byte allows it, else a string.
pub fn astring(out: &mut Vec<u8>, s: &[u8]) {
    let atom = !s.is_empty()
        && !s.eq_ignore_ascii_case(b"NIL")
        && s.iter().all(|&b| b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\'));
    if atom {
        out.extend_from_slice(s);
    } else {
        string(out, s);
    }
}

/// A mailbox name in a response: always quoted (or a literal), as Dovecot sends them.
pub fn mailbox(out: &mut Vec<u8>, name: &str) {
    string(out, name.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn golden_strings() {
        assert_eq!(s(|o| string(o, b"hello")), "\"hello\"");
        assert_eq!(s(|o| string(o, b"a\"b\\c")), "\"a\\\"b\\\\c\"");
        assert_eq!(s(|o| string(o, b"line\r\nbreak")), "{11}\r\nline\r\nbreak");
        assert_eq!(s(|o| string(o, "ü".as_bytes())), "{2}\r\nü");
        assert_eq!(s(|o| nstring(o, None)), "NIL");
        assert_eq!(s(|o| astring(o, b"INBOX")), "INBOX");
        assert_eq!(s(|o| astring(o, b"NIL")), "\"NIL\"");
        assert_eq!(s(|o| astring(o, b"a b")), "\"a b\"");
        assert_eq!(s(|o| astring(o, b"")), "\"\"");
    }
}

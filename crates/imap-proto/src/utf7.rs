//! Modified UTF-7 of IMAP mailbox names (RFC 3501 5.1.3): `&` starts a base64 run of
//! UTF-16 (alphabet with `,` instead of `/`), `-` ends it, `&-` is `&`.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// UTF-8 -> modified UTF-7.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run: Vec<u16> = Vec::new();
    let flush = |run: &mut Vec<u16>, out: &mut String| {
        if run.is_empty() {
            return;
        }
        out.push('&');
        let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
        for chunk in bytes.chunks(3) {
            let n = chunk.len();
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..=n {
                out.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out.push('-');
        run.clear();
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Modified UTF-7 -> UTF-8; `None` when `s` is not valid modified UTF-7 (including
/// non-canonical forms such as an encoded printable ASCII character).
pub fn decode(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(0x20..0x7f).contains(&c) {
            return None;
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = i + 1 + b[i + 1..].iter().position(|&x| x == b'-')?;
        let run = &b[i + 1..end];
        i = end + 1;
        if run.is_empty() {
            out.push('&');
            continue;
        }
        let mut bits = 0u32;
        let mut nbits = 0;
        let mut units = Vec::new();
        for &x in run {
            let v = B64.iter().position(|&y| y == x)? as u32;
            bits = (bits << 6) | v;
            nbits += 6;
            if nbits >= 16 {
                nbits -= 16;
                units.push(((bits >> nbits) & 0xffff) as u16);
            }
        }
        if nbits >= 6 || (bits & ((1 << nbits) - 1)) != 0 {
            return None;
        }
        let text = String::from_utf16(&units).ok()?;
        if text.chars().any(|c| (' '..='~').contains(&c)) {
            return None;
        }
        out.push_str(&text);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_examples() {
        assert_eq!(encode("~peter/mail/台北/日本語"), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(), "~peter/mail/台北/日本語");
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode("a&b"), "a&-b");
        assert_eq!(decode("a&-b").unwrap(), "a&b");
        assert_eq!(encode("😀"), "&2D3eAA-");
        assert_eq!(decode("&2D3eAA-").unwrap(), "😀");
        assert!(decode("&AGE-").is_none(), "encoded ASCII is not canonical");
        assert!(decode("&U,BTFw").is_none());
        assert!(decode("caf\u{e9}").is_none());
    }
}

//! The message on standard input: dot handling, size limit, `-t` recipient extraction and
//! Bcc removal, and RFC 5322 address lists.

use std::io::{BufRead, Read};

/// Why the input was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("message file too big (message_size_limit = {0})")]
    TooBig(u64),
    #[error("error reading standard input: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the message. With `dot_ends`, a line holding only `.` ends it (sendmail's default;
/// `-i` turns it off); nothing else is changed (no dot-unstuffing, as in Postfix).
/// `limit` (0 = none) bounds the bytes kept.
pub fn read_message<R: BufRead>(mut r: R, dot_ends: bool, limit: u64) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bounded per read: a line without newline cannot exceed the limit by much.
        let n = std::io::Read::by_ref(&mut r).take(64 * 1024).read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let at_line_start = out.is_empty() || out.ends_with(b"\n");
        if dot_ends && at_line_start && matches!(line.as_slice(), b".\n" | b".\r\n" | b".") {
            break;
        }
        out.extend_from_slice(&line);
        if limit > 0 && out.len() as u64 > limit {
            return Err(InputError::TooBig(limit));
        }
    }
    Ok(out)
}

/// Drops leading UNIX mbox `From ` envelope lines, as Postfix's sendmail does: they are not
/// headers, and would end the header block.
pub fn strip_from_lines(mut content: Vec<u8>) -> Vec<u8> {
    let mut start = 0;
    while content[start..].starts_with(b"From ") {
        match content[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start += i + 1,
            None => start = content.len(),
        }
    }
    content.drain(..start);
    content
}

/// Byte ranges of the header lines (each with its line ending) and where the body starts.
fn header_lines(content: &[u8]) -> (Vec<(usize, usize)>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < content.len() {
        let end = content[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i + 1).unwrap_or(content.len());
        let line = &content[pos..end];
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare.is_empty() {
            return (out, pos);
        }
        let continuation = matches!(bare[0], b' ' | b'\t') && !out.is_empty();
        let is_field = bare
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|c| c > 0 && bare[..c].iter().all(|&b| (33..=126).contains(&b)));
        if !continuation && !is_field {
            return (out, pos);
        }
        out.push((pos, end));
        pos = end;
    }
    (out, pos)
}

fn field_name(line: &[u8]) -> &[u8] {
    let c = line.iter().position(|&b| b == b':').unwrap_or(0);
    &line[..c]
}

/// The result of `-t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub recipients: Vec<String>,
    /// The content with Bcc: (and Resent-Bcc:) removed.
    pub content: Vec<u8>,
}

/// `-t`: recipients from To:, Cc: and Bcc: (Resent-To/Cc/Bcc instead when the message has
/// Resent- headers, RFC 5322 section 3.6.6), and the message without its Bcc headers.
pub fn extract(content: &[u8]) -> Extracted {
    let (lines, _) = header_lines(content);
    // Group each field with its continuation lines.
    let mut fields: Vec<(usize, usize)> = Vec::new();
    for &(s, e) in &lines {
        if matches!(content[s], b' ' | b'\t') {
            if let Some(last) = fields.last_mut() {
                last.1 = e;
            }
        } else {
            fields.push((s, e));
        }
    }
    let name_is = |f: &(usize, usize), names: &[&str]| {
        let n = field_name(&content[f.0..f.1]);
        names.iter().any(|x| n.eq_ignore_ascii_case(x.as_bytes()))
    };
    let resent = fields.iter().any(|f| name_is(f, &["Resent-To", "Resent-Cc", "Resent-Bcc"]));
    let wanted: &[&str] = if resent { &["Resent-To", "Resent-Cc", "Resent-Bcc"] } else { &["To", "Cc", "Bcc"] };
    let mut recipients = Vec::new();
    for f in fields.iter().filter(|f| name_is(f, wanted)) {
        let text = String::from_utf8_lossy(&content[f.0..f.1]);
        let value = text.split_once(':').map(|(_, v)| v).unwrap_or("");
        for a in parse_address_list(value) {
            if !recipients.contains(&a) {
                recipients.push(a);
            }
        }
    }
    let mut out = Vec::with_capacity(content.len());
    let mut pos = 0;
    for f in fields.iter().filter(|f| name_is(f, &["Bcc", "Resent-Bcc"])) {
        out.extend_from_slice(&content[pos..f.0]);
        pos = f.1;
    }
    out.extend_from_slice(&content[pos..]);
    Extracted { recipients, content: out }
}

/// The addresses in an RFC 5322 address list: `Name <a@b>`, `a@b (comment)`, quoted
/// display names and local parts, groups (`team: a@b, c@d;`, `undisclosed-recipients:;`).
/// Also used for command-line recipients, as Postfix parses those the same way.
pub fn parse_address_list(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new(); // the mailbox text outside comments
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut quoted = false;
    let mut depth = 0usize;
    let mut chars = text.chars();
    let finish = |cur: &mut String, angle: &mut Option<String>, out: &mut Vec<String>| {
        let addr = match angle.take() {
            // A source route (@a,@b:user@c) is dropped.
            Some(a) => a.rsplit_once(':').map(|(_, x)| x.to_string()).unwrap_or(a),
            None => cur.trim().to_string(),
        };
        let addr = addr.trim().to_string();
        if !addr.is_empty() {
            out.push(addr);
        }
        cur.clear();
    };
    while let Some(c) = chars.next() {
        if quoted {
            cur.push(c);
            if in_angle && let Some(a) = angle.as_mut() {
                a.push(c);
            }
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                        if in_angle && let Some(a) = angle.as_mut() {
                            a.push(n);
                        }
                    }
                }
                '"' => quoted = false,
                _ => {}
            }
            continue;
        }
        if depth > 0 {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                '\\' => {
                    chars.next();
                }
                _ => {}
            }
            continue;
        }
        match c {
            '(' => depth = 1,
            '"' => {
                quoted = true;
                cur.push(c);
                if in_angle && let Some(a) = angle.as_mut() {
                    a.push(c);
                }
            }
            '<' if !in_angle => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            // A group's display name ends at the colon; its members follow.
            ':' if !in_angle => cur.clear(),
            ',' | ';' if !in_angle => finish(&mut cur, &mut angle, &mut out),
            c if in_angle => {
                if let Some(a) = angle.as_mut()
                    && !c.is_whitespace()
                {
                    a.push(c);
                }
            }
            c => cur.push(c),
        }
    }
    finish(&mut cur, &mut angle, &mut out);
    out
}

/// Whether an envelope address is acceptable for the maildrop file: no control characters,
/// no angle brackets, no white space outside quotes, at most 1000 bytes.
pub fn valid_address(a: &str) -> bool {
    let mut quoted = false;
    if a.is_empty() || a.len() > 1000 {
        return false;
    }
    for c in a.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if c.is_control() || c == '<' || c == '>' || (c.is_whitespace() && !quoted) {
            return false;
        }
    }
    !quoted
}

/// `-f` as typed: `<>`, `""` and `<>`-wrapped forms.
pub fn sender_arg(text: &str) -> String {
    let t = text.trim();
    let t = t.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(t);
    t.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_dot_ends_input_unless_i() {
        let input = b"Subject: x\n\nline\n.\nafter\n";
        assert_eq!(read_message(&input[..], true, 0).unwrap(), b"Subject: x\n\nline\n");
        assert_eq!(read_message(&input[..], false, 0).unwrap(), input);
        // CRLF, at EOF without newline, and dots that are not alone.
        assert_eq!(read_message(&b"a\r\n.\r\nb"[..], true, 0).unwrap(), b"a\r\n");
        assert_eq!(read_message(&b"a\n."[..], true, 0).unwrap(), b"a\n");
        assert_eq!(read_message(&b"a\n..\n. \n.x\n"[..], true, 0).unwrap(), b"a\n..\n. \n.x\n");
        assert_eq!(read_message(&b".\n"[..], true, 0).unwrap(), b"");
    }

    #[test]
    fn mbox_from_lines_are_dropped() {
        assert_eq!(
            strip_from_lines(b"From a@b Sun Nov 22 01:00:00 2026\nSubject: x\n\nFrom here\n".to_vec()),
            b"Subject: x\n\nFrom here\n"
        );
        assert_eq!(strip_from_lines(b"Subject: x\n".to_vec()), b"Subject: x\n");
        assert_eq!(strip_from_lines(b"From x".to_vec()), b"");
    }

    #[test]
    fn size_limit() {
        let input = vec![b'x'; 1000];
        assert!(matches!(read_message(&input[..], true, 999), Err(InputError::TooBig(999))));
        assert_eq!(read_message(&input[..], true, 1000).unwrap().len(), 1000);
    }

    #[test]
    fn address_lists() {
        assert_eq!(parse_address_list(" a@x, B <b@y>"), vec!["a@x", "b@y"]);
        assert_eq!(parse_address_list("\"Doe, John\" <j@x> (work, really), c@z (C)"), vec!["j@x", "c@z"]);
        assert_eq!(parse_address_list("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(parse_address_list("team: a@x, b@y; c@z"), vec!["a@x", "b@y", "c@z"]);
        assert_eq!(parse_address_list("<@relay.example:u@x>"), vec!["u@x"]);
        assert_eq!(parse_address_list("\"odd one\"@x"), vec!["\"odd one\"@x"]);
        assert_eq!(parse_address_list("user"), vec!["user"]);
    }

    #[test]
    fn extract_takes_to_cc_bcc_and_drops_bcc() {
        let msg = b"From: me@x\nTo: A <a@x>,\n  b@y\nCc: c@z\nBcc: secret@w,\n\tother@w\nSubject: s\n\nBcc: body@x\n";
        let e = extract(msg);
        assert_eq!(e.recipients, vec!["a@x", "b@y", "c@z", "secret@w", "other@w"]);
        assert_eq!(e.content, b"From: me@x\nTo: A <a@x>,\n  b@y\nCc: c@z\nSubject: s\n\nBcc: body@x\n");
    }

    #[test]
    fn extract_prefers_resent_headers() {
        let msg = b"To: old@x\nResent-To: new@y\nResent-Bcc: hidden@z\n\nbody\n";
        let e = extract(msg);
        assert_eq!(e.recipients, vec!["new@y", "hidden@z"]);
        assert_eq!(e.content, b"To: old@x\nResent-To: new@y\n\nbody\n");
    }

    #[test]
    fn arbitrary_headers_never_panic() {
        let mut seed: u64 = 0x853C_49E6_748F_EA9B;
        let alphabet = "ab@<>\",;:()\\ \t\r\nTo:Bcc:é";
        let chars: Vec<char> = alphabet.chars().collect();
        for _ in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 50) as usize;
            let text: String = (0..len).map(|i| chars[((seed >> (i % 60)) as usize + i) % chars.len()]).collect();
            let _ = parse_address_list(&text);
            let e = extract(text.as_bytes());
            assert!(e.content.len() <= text.len());
        }
    }

    #[test]
    fn addresses_are_checked() {
        assert!(valid_address("a@x"));
        assert!(valid_address("\"a b\"@x"));
        assert!(!valid_address("a b@x"));
        assert!(!valid_address("<a@x>"));
        assert!(!valid_address("a@x\r\nrcpt evil@y"));
        assert!(!valid_address(""));
        assert_eq!(sender_arg("<>"), "");
        assert_eq!(sender_arg("<a@x>"), "a@x");
    }
}

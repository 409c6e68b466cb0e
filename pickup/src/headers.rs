//! Message headers of local submissions: CRLF normalization and the headers Postfix's
//! cleanup adds to locally posted mail when they are missing (Date:, Message-ID:, From:,
//! and `undisclosed_recipients_header` when there is no To/Cc/Bcc), and `@$myorigin` for
//! bare user names in address headers.

/// What the added headers say.
#[derive(Debug, Clone)]
pub struct Missing<'a> {
    /// RFC 5322 date of arrival.
    pub date: &'a str,
    /// The Message-ID to add, without angle brackets.
    pub message_id: &'a str,
    /// Envelope sender ("" = null sender) and the full name for From:.
    pub sender: &'a str,
    pub fullname: Option<&'a str>,
    /// `undisclosed_recipients_header` ("" = add nothing).
    pub undisclosed: &'a str,
    /// `$myorigin`, appended to bare user names in address headers ("" = leave them).
    pub origin: &'a str,
}

/// The result of [`complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// CRLF-normalized content with the missing headers in place.
    pub content: Vec<u8>,
    /// The message's Message-ID (its own, or the one added), without angle brackets.
    pub message_id: String,
}

/// Every line ending (LF, CRLF, lone CR) becomes CRLF; a last line without one gets one.
pub fn normalize_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32 + 2);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A header field line: `name:` where name is printable ASCII without space or colon.
fn header_name(line: &[u8]) -> Option<&[u8]> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b))).then_some(name)
}

/// Splits CRLF content into its header lines (with continuations, each line without CRLF)
/// and the offset where the body starts. `blank` tells whether an empty line separates them.
fn split(content: &[u8]) -> (Vec<&[u8]>, usize, bool) {
    let mut lines = Vec::new();
    let mut pos = 0;
    while pos < content.len() {
        let end = content[pos..].windows(2).position(|w| w == b"\r\n").map(|i| pos + i).unwrap_or(content.len());
        let line = &content[pos..end];
        let next = (end + 2).min(content.len());
        if line.is_empty() {
            return (lines, next, true);
        }
        let continuation = matches!(line[0], b' ' | b'\t') && !lines.is_empty();
        if !continuation && header_name(line).is_none() {
            return (lines, pos, false);
        }
        lines.push(line);
        pos = next;
    }
    (lines, pos, false)
}

/// The (unfolded) values of every header named `name` (case-insensitive).
pub fn values(content: &[u8], name: &str) -> Vec<String> {
    let (lines, _, _) = split(content);
    let mut out: Vec<String> = Vec::new();
    let mut current = false;
    for line in lines {
        if matches!(line[0], b' ' | b'\t') {
            if current && let Some(last) = out.last_mut() {
                last.push_str(&String::from_utf8_lossy(line));
            }
            continue;
        }
        let n = header_name(line).unwrap_or_default();
        current = n.eq_ignore_ascii_case(name.as_bytes());
        if current {
            out.push(String::from_utf8_lossy(&line[n.len() + 1..]).trim().to_string());
        }
    }
    out
}

/// `"Full Name" <addr>` in header_from_format = standard shape; the name is quoted when it
/// holds RFC 5322 specials.
fn from_header(sender: &str, fullname: Option<&str>) -> String {
    let addr = if sender.is_empty() { "MAILER-DAEMON".to_string() } else { sender.to_string() };
    match fullname.map(str::trim).filter(|n| !n.is_empty()) {
        None => format!("From: {addr}"),
        Some(name) => {
            let plain = name.chars().all(|c| c.is_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c));
            if plain {
                format!("From: {name} <{addr}>")
            } else {
                let q: String =
                    name.chars().flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] }).collect();
                format!("From: \"{q}\" <{addr}>")
            }
        }
    }
}

/// Headers whose addresses Postfix's cleanup rewrites for local submissions.
const ADDRESS_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Resent-Bcc",
    "Errors-To",
    "Return-Receipt-To",
    "Disposition-Notification-To",
];

/// A bare user name, the only form rewritten (anything fancier is left exactly as it is).
fn is_bare_user(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._+-=".contains(c))
}

/// Where `@origin` goes in one list item `value[start..end]`, if the item is a bare user
/// name: alone (comments aside) or inside `<>` (`angle`, the inner range).
fn bare_item_end(value: &str, start: usize, end: usize, angle: Option<(usize, usize)>) -> Option<usize> {
    if let Some((a, z)) = angle {
        return is_bare_user(value[a..z].trim()).then_some(z);
    }
    // Outside comments, the item must be exactly one token.
    let mut tokens: Vec<(usize, usize)> = Vec::new();
    let (mut depth, mut t0): (usize, Option<usize>) = (0, None);
    for (k, c) in value[start..end].char_indices() {
        let k = start + k;
        match c {
            '(' => {
                if let Some(s0) = t0.take() {
                    tokens.push((s0, k));
                }
                depth += 1;
            }
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            c if c.is_whitespace() => {
                if let Some(s0) = t0.take() {
                    tokens.push((s0, k));
                }
            }
            _ => {
                if t0.is_none() {
                    t0 = Some(k);
                }
            }
        }
    }
    if let Some(s0) = t0 {
        tokens.push((s0, end));
    }
    match tokens[..] {
        [(a, z)] if is_bare_user(&value[a..z]) => Some(z),
        _ => None,
    }
}

/// Appends `@origin` to each bare user name in an address list (`root`, `Root <root>`,
/// `root (Cron Daemon)`), as Postfix's append_at_myorigin does to local submissions' headers.
/// Quoted strings, comments, groups and everything already qualified stay untouched.
pub fn qualify_list(value: &str, origin: &str) -> String {
    let b = value.as_bytes();
    let mut inserts: Vec<usize> = Vec::new();
    let (mut quoted, mut depth) = (false, 0usize);
    let mut angle_open: Option<usize> = None;
    let mut angle: Option<(usize, usize)> = None;
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if quoted {
            match c {
                b'\\' => i += 1,
                b'"' => quoted = false,
                _ => {}
            }
        } else if depth > 0 {
            match c {
                b'\\' => i += 1,
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {}
            }
        } else {
            match c {
                b'"' => quoted = true,
                b'(' => depth = 1,
                b'<' if angle_open.is_none() => angle_open = Some(i + 1),
                b'>' if angle_open.is_some() => angle = angle_open.take().map(|a| (a, i)),
                // A group's display name is not an address.
                b':' if angle_open.is_none() => start = i + 1,
                b',' | b';' if angle_open.is_none() => {
                    inserts.extend(bare_item_end(value, start, i, angle.take()));
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    // Unbalanced quotes, comments or brackets: leave the whole field alone.
    if quoted || depth > 0 || angle_open.is_some() {
        return value.to_string();
    }
    inserts.extend(bare_item_end(value, start, b.len(), angle.take()));
    let mut out = String::with_capacity(value.len() + inserts.len() * (origin.len() + 1));
    let mut last = 0;
    for at in inserts {
        out.push_str(&value[last..at]);
        out.push('@');
        out.push_str(origin);
        last = at;
    }
    out.push_str(&value[last..]);
    out
}

/// [`qualify_list`] over every address header of CRLF content; other bytes are unchanged.
fn qualify_headers(content: &[u8], origin: &str) -> Vec<u8> {
    if origin.is_empty() {
        return content.to_vec();
    }
    let (lines, _, _) = split(content);
    let header_end: usize = lines.iter().map(|l| l.len() + 2).sum::<usize>().min(content.len());
    let line_end = |from: usize| {
        content[from..].windows(2).position(|w| w == b"\r\n").map(|i| from + i + 2).unwrap_or(content.len())
    };
    let mut out = Vec::with_capacity(content.len() + 64);
    let mut pos = 0;
    while pos < header_end {
        // One field: its first line and its continuation lines.
        let mut end = line_end(pos);
        while end < header_end && matches!(content[end], b' ' | b'\t') {
            end = line_end(end);
        }
        let end = end.min(header_end);
        let field = &content[pos..end];
        let name = header_name(field).unwrap_or_default();
        match std::str::from_utf8(field) {
            Ok(text) if ADDRESS_HEADERS.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name)) => {
                let (head, value) = text.split_at(name.len() + 1);
                out.extend_from_slice(head.as_bytes());
                out.extend_from_slice(qualify_list(value, origin).as_bytes());
            }
            _ => out.extend_from_slice(field),
        }
        pos = end;
    }
    out.extend_from_slice(&content[header_end..]);
    out
}

/// Normalizes line endings and adds the missing headers at the end of the header block.
pub fn complete(input: &[u8], m: &Missing<'_>) -> Completed {
    let content = qualify_headers(&normalize_crlf(input), m.origin);
    let (lines, body_at, _) = split(&content);
    let has = |name: &str| {
        lines.iter().any(|l| {
            !matches!(l[0], b' ' | b'\t') && header_name(l).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
        })
    };
    let mut added: Vec<String> = Vec::new();
    let mut message_id = values(&content, "Message-ID")
        .first()
        .map(|v| v.trim().trim_start_matches('<').trim_end_matches('>').to_string())
        .unwrap_or_default();
    if !has("Date") {
        added.push(format!("Date: {}", m.date));
    }
    if !has("Message-ID") || message_id.is_empty() {
        message_id = m.message_id.to_string();
        added.push(format!("Message-Id: <{}>", m.message_id));
    }
    if !has("From") {
        added.push(from_header(m.sender, m.fullname));
    }
    if !m.undisclosed.is_empty() && !["To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"].iter().any(|h| has(h))
    {
        added.push(m.undisclosed.to_string());
    }
    let header_end: usize = lines.iter().map(|l| l.len() + 2).sum();
    let mut out = Vec::with_capacity(content.len() + 256);
    out.extend_from_slice(&content[..header_end]);
    for h in &added {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // The separator: the message's own, or one we owe it when headers ran into the body.
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&content[body_at..]);
    Completed { content: out, message_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Missing<'static> {
        Missing {
            date: "Sun, 22 Nov 2026 01:00:00 +0000",
            message_id: "X.1@h",
            sender: "u@h",
            fullname: Some("U. Ser"),
            undisclosed: "",
            origin: "",
        }
    }

    #[test]
    fn line_endings_become_crlf() {
        assert_eq!(normalize_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(normalize_crlf(b""), b"");
    }

    #[test]
    fn missing_headers_are_added_after_the_existing_ones() {
        let c = complete(b"Subject: hi\nTo: b@y\n\nbody\n", &m());
        let text = String::from_utf8(c.content).unwrap();
        assert_eq!(
            text,
            "Subject: hi\r\nTo: b@y\r\nDate: Sun, 22 Nov 2026 01:00:00 +0000\r\nMessage-Id: <X.1@h>\r\nFrom: \"U. Ser\" <u@h>\r\n\r\nbody\r\n"
        );
        assert_eq!(c.message_id, "X.1@h");
    }

    #[test]
    fn present_headers_are_kept() {
        let input = b"From: me@x\nDate: yesterday\nMessage-ID:\n <abc@x>\n\nbody\n";
        let c = complete(input, &m());
        assert_eq!(c.content, normalize_crlf(input));
        assert_eq!(c.message_id, "abc@x");
    }

    #[test]
    fn body_without_headers_gets_a_separator() {
        let c = complete(
            b"just text\nmore\n",
            &Missing { fullname: None, undisclosed: "To: undisclosed-recipients:;", ..m() },
        );
        let text = String::from_utf8(c.content).unwrap();
        assert!(text.starts_with("Date: "), "{text}");
        assert!(text.contains("From: u@h\r\nTo: undisclosed-recipients:;\r\n\r\njust text\r\nmore\r\n"), "{text}");
        // Empty input: headers and the blank line.
        let c = complete(b"", &m());
        assert!(c.content.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn arbitrary_content_never_panics_and_keeps_the_body() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let alphabet = b"ab:\r\n \t.Fm-\x80\xff";
        for _ in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let input: Vec<u8> =
                (0..len).map(|i| alphabet[((seed >> (i % 60)) as usize + i) % alphabet.len()]).collect();
            let c = complete(&input, &Missing { origin: "o.test", ..m() });
            // Every line ends in CRLF and the normalized input is all there, in order.
            assert!(c.content.ends_with(b"\r\n"));
            assert!(!c.content.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
            let norm = normalize_crlf(&input);
            let mut it = c.content.iter();
            assert!(norm.iter().all(|b| it.any(|x| x == b)), "{input:?}");
        }
    }

    #[test]
    fn bare_user_names_get_myorigin() {
        let q = |v: &str| qualify_list(v, "example.test");
        assert_eq!(q(" root"), " root@example.test");
        assert_eq!(q(" Cron Daemon <root>"), " Cron Daemon <root@example.test>");
        assert_eq!(
            q(" root (Cron Daemon), bob@x.test, alice"),
            " root@example.test (Cron Daemon), bob@x.test, alice@example.test"
        );
        assert_eq!(q(" \"a, b\" <c>, d"), " \"a, b\" <c@example.test>, d@example.test");
        assert_eq!(q(" team: a, b@y;"), " team: a@example.test, b@y;");
        assert_eq!(q(" undisclosed-recipients:;"), " undisclosed-recipients:;");
        // Left alone: already qualified, quoted local parts, two words, broken syntax.
        for v in [" a@b", " \"odd one\"", " two words", " <unclosed", " (only a comment)", " ", " x (open"] {
            assert_eq!(q(v), v);
        }
        let c = complete(
            b"From: root\nTo: bob,\n  carol\nSubject: root\n\nTo: body\n",
            &Missing { origin: "example.test", ..m() },
        );
        let text = String::from_utf8(c.content).unwrap();
        assert!(
            text.starts_with(
                "From: root@example.test\r\nTo: bob@example.test,\r\n  carol@example.test\r\nSubject: root\r\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\nTo: body\r\n"), "{text}");
    }

    #[test]
    fn values_unfold() {
        let c = normalize_crlf(b"To: a@x,\n  b@y\ncc: c@z\nSubject: s\n\nTo: not@header\n");
        assert_eq!(values(&c, "to"), vec!["a@x,  b@y".to_string()]);
        assert_eq!(values(&c, "Cc"), vec!["c@z".to_string()]);
    }
}

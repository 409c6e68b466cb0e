//! Message headers of local submissions: CRLF normalization and the headers Postfix's
//! cleanup adds to locally posted mail when they are missing (Date:, Message-ID:, From:,
//! and `undisclosed_recipients_header` when there is no To/Cc/Bcc).

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

/// Normalizes line endings and adds the missing headers at the end of the header block.
pub fn complete(input: &[u8], m: &Missing<'_>) -> Completed {
    let content = normalize_crlf(input);
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
            let c = complete(&input, &m());
            // Every line ends in CRLF and the normalized input is all there, in order.
            assert!(c.content.ends_with(b"\r\n"));
            assert!(!c.content.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
            let norm = normalize_crlf(&input);
            let mut it = c.content.iter();
            assert!(norm.iter().all(|b| it.any(|x| x == b)), "{input:?}");
        }
    }

    #[test]
    fn values_unfold() {
        let c = normalize_crlf(b"To: a@x,\n  b@y\ncc: c@z\nSubject: s\n\nTo: not@header\n");
        assert_eq!(values(&c, "to"), vec!["a@x,  b@y".to_string()]);
        assert_eq!(values(&c, "Cc"), vec!["c@z".to_string()]);
    }
}

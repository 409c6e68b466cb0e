//! The maildrop file: what `sendmail` writes into `maildrop/` and pickup reads.
//!
//! ```text
//! RPOSTDROP 1\n
//! sender alice@example.test\n        optional, at most once; "sender " alone = null sender
//! fullname Alice Example\n           optional, at most once
//! notify SUCCESS,FAILURE\n           optional: NEVER or a list of SUCCESS, FAILURE, DELAY
//! ret HDRS\n                         optional: FULL or HDRS
//! envid abc123\n                     optional
//! rcpt bob@example.test\n            one or more
//! size 1234\n                        required, the last envelope line
//! \n
//! <exactly size bytes of message content>
//! END\n
//! ```
//!
//! The writer (the `sendmail` crate's `drop` module) creates the file mode 0600, writes it,
//! fsyncs it and only then sets the owner execute bit (mode 0744): like Postfix's queue
//! files, the execute bit means "complete". Everything here is untrusted: the file was written
//! by an arbitrary local user. Parsing is strict (known keys only, each in its place, lengths
//! bounded, no control characters, the exact size, the END marker, nothing after it); anything
//! else is refused and the file is kept in `corrupt/` for the admin.
//!
//! Deliberately absent: the submitting user's identity. pickup takes it from the file's owner
//! (fstat), which the user cannot forge.

/// First line of every maildrop file.
pub const MAGIC: &[u8] = b"RPOSTDROP 1\n";
/// Trailer after the content.
pub const END: &[u8] = b"END\n";
/// Longest envelope line, newline included.
pub const MAX_LINE: usize = 2048;
/// Most recipients in one file.
pub const MAX_RECIPIENTS: usize = 10_000;
/// Largest envelope part (all lines before the content).
pub const MAX_ENVELOPE: u64 = (MAX_RECIPIENTS as u64 + 16) * MAX_LINE as u64;

/// A parsed maildrop file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DropFile {
    /// `None`: the owner's login name at `$myorigin`; `Some("")`: the null sender.
    pub sender: Option<String>,
    pub fullname: Option<String>,
    /// Postfix DSN_NOTIFY bits (NEVER 1, SUCCESS 2, FAILURE 4, DELAY 8), for every recipient.
    pub notify: Option<u8>,
    pub ret: Option<rpost_queue::Ret>,
    pub envid: Option<String>,
    pub recipients: Vec<String>,
    /// The message as the user gave it (line endings not yet normalized).
    pub content: Vec<u8>,
}

/// Why a maildrop file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropError {
    #[error("not a maildrop file (bad magic)")]
    BadMagic,
    #[error("envelope line {0} is too long or has no newline")]
    LineTooLong(usize),
    #[error("envelope line {line}: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("envelope has more than {MAX_RECIPIENTS} recipients")]
    TooManyRecipients,
    #[error("no recipients")]
    NoRecipients,
    #[error("no size line")]
    NoSize,
    #[error("message size {size} exceeds message_size_limit {limit}")]
    TooBig { size: u64, limit: u64 },
    #[error("content is {actual} bytes, the envelope says {declared} (truncated or padded file)")]
    SizeMismatch { declared: u64, actual: u64 },
    #[error("missing END marker")]
    NoEnd,
}

/// DSN NOTIFY= text to Postfix's bits; `None` for a malformed list.
pub fn parse_notify(text: &str) -> Option<u8> {
    if text.eq_ignore_ascii_case("NEVER") {
        return Some(rpost_queue::Recipient::NOTIFY_NEVER);
    }
    let mut bits = 0u8;
    for word in text.split(',') {
        bits |= match word.trim().to_ascii_uppercase().as_str() {
            "SUCCESS" => rpost_queue::Recipient::NOTIFY_SUCCESS,
            "FAILURE" => rpost_queue::Recipient::NOTIFY_FAILURE,
            "DELAY" => rpost_queue::Recipient::NOTIFY_DELAY,
            _ => return None,
        };
    }
    Some(bits)
}

/// A field value: UTF-8, no control characters, at most 1000 bytes (RFC 5321 path limits
/// are smaller; this only bounds what ends up in queue files and logs).
fn value(line: usize, key: &str, raw: &[u8]) -> Result<String, DropError> {
    let bad = |reason: &str| DropError::BadLine { line, reason: format!("{key}: {reason}") };
    let text = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    if text.len() > 1000 {
        return Err(bad("value longer than 1000 bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("control character"));
    }
    if text != text.trim() {
        return Err(bad("leading or trailing white space"));
    }
    Ok(text.to_string())
}

/// An envelope address: a value without angle brackets or unquoted white space.
fn address(line: usize, key: &str, raw: &[u8]) -> Result<String, DropError> {
    let text = value(line, key, raw)?;
    let mut quoted = false;
    for c in text.chars() {
        let bad = match c {
            '"' => {
                quoted = !quoted;
                false
            }
            '<' | '>' => true,
            c => c.is_whitespace() && !quoted,
        };
        if bad {
            return Err(DropError::BadLine { line, reason: format!("{key}: not an address: {text:?}") });
        }
    }
    Ok(text)
}

/// Parses and validates a whole maildrop file. `size_limit` is message_size_limit (0 means
/// no limit) and applies to the content.
pub fn parse(bytes: &[u8], size_limit: u64) -> Result<DropFile, DropError> {
    let mut rest = bytes.strip_prefix(MAGIC).ok_or(DropError::BadMagic)?;
    let mut out = DropFile::default();
    let mut size = None;
    let mut line = 1;
    let mut envelope_len = MAGIC.len() as u64;
    loop {
        line += 1;
        let nl = rest.iter().take(MAX_LINE).position(|&b| b == b'\n').ok_or(DropError::LineTooLong(line))?;
        let text = &rest[..nl];
        rest = &rest[nl + 1..];
        envelope_len += nl as u64 + 1;
        if envelope_len > MAX_ENVELOPE {
            return Err(DropError::TooManyRecipients);
        }
        if text.is_empty() {
            // The blank line: only right after `size`.
            if size.is_none() {
                return Err(DropError::NoSize);
            }
            break;
        }
        if size.is_some() {
            return Err(DropError::BadLine { line, reason: "envelope line after size".into() });
        }
        let (key, val) = match text.iter().position(|&b| b == b' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, &b""[..]),
        };
        let key = std::str::from_utf8(key).unwrap_or("?");
        let once = |set: bool| {
            if set { Err(DropError::BadLine { line, reason: format!("{key}: given twice") }) } else { Ok(()) }
        };
        match key {
            "sender" => {
                once(out.sender.is_some())?;
                out.sender = Some(if val.is_empty() { String::new() } else { address(line, key, val)? });
            }
            "fullname" => {
                once(out.fullname.is_some())?;
                out.fullname = Some(value(line, key, val)?);
            }
            "notify" => {
                once(out.notify.is_some())?;
                let v = value(line, key, val)?;
                out.notify = Some(
                    parse_notify(&v)
                        .ok_or_else(|| DropError::BadLine { line, reason: format!("notify: bad value {v:?}") })?,
                );
            }
            "ret" => {
                once(out.ret.is_some())?;
                out.ret = Some(match value(line, key, val)?.to_ascii_uppercase().as_str() {
                    "FULL" => rpost_queue::Ret::Full,
                    "HDRS" => rpost_queue::Ret::Hdrs,
                    v => return Err(DropError::BadLine { line, reason: format!("ret: bad value {v:?}") }),
                });
            }
            "envid" => {
                once(out.envid.is_some())?;
                out.envid = Some(value(line, key, val)?);
            }
            "rcpt" => {
                if out.recipients.len() >= MAX_RECIPIENTS {
                    return Err(DropError::TooManyRecipients);
                }
                let a = address(line, key, val)?;
                if a.is_empty() {
                    return Err(DropError::BadLine { line, reason: "rcpt: empty address".into() });
                }
                out.recipients.push(a);
            }
            "size" => {
                let v = value(line, key, val)?;
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(DropError::BadLine { line, reason: format!("size: bad value {v:?}") });
                }
                size =
                    Some(v.parse::<u64>().map_err(|_| DropError::BadLine { line, reason: "size: too large".into() })?);
            }
            other => {
                return Err(DropError::BadLine { line, reason: format!("unknown record {:?}", other) });
            }
        }
    }
    if out.recipients.is_empty() {
        return Err(DropError::NoRecipients);
    }
    let size = size.ok_or(DropError::NoSize)?;
    if size_limit > 0 && size > size_limit {
        return Err(DropError::TooBig { size, limit: size_limit });
    }
    let actual = (rest.len() as u64).saturating_sub(END.len() as u64);
    if actual != size {
        return Err(DropError::SizeMismatch { declared: size, actual });
    }
    let (content, end) = rest.split_at(size as usize);
    if end != END {
        return Err(DropError::NoEnd);
    }
    out.content = content.to_vec();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(envelope: &str, content: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(envelope.as_bytes());
        v.extend_from_slice(format!("size {}\n\n", content.len()).as_bytes());
        v.extend_from_slice(content);
        v.extend_from_slice(END);
        v
    }

    #[test]
    fn good_file_parses() {
        let f = file(
            "sender a@x.test\nfullname Alice A.\nnotify SUCCESS,DELAY\nret HDRS\nenvid e1\nrcpt b@y.test\nrcpt \"c d\"@y.test\n",
            b"Subject: hi\n\nbody\n",
        );
        let d = parse(&f, 0).unwrap();
        assert_eq!(d.sender.as_deref(), Some("a@x.test"));
        assert_eq!(d.fullname.as_deref(), Some("Alice A."));
        assert_eq!(d.notify, Some(2 | 8));
        assert_eq!(d.ret, Some(rpost_queue::Ret::Hdrs));
        assert_eq!(d.envid.as_deref(), Some("e1"));
        assert_eq!(d.recipients, vec!["b@y.test".to_string(), "\"c d\"@y.test".to_string()]);
        assert_eq!(d.content, b"Subject: hi\n\nbody\n");
        // The null sender and no sender at all.
        assert_eq!(parse(&file("sender \nrcpt b@y\n", b""), 0).unwrap().sender.as_deref(), Some(""));
        assert_eq!(parse(&file("rcpt b@y\n", b"x"), 0).unwrap().sender, None);
    }

    #[test]
    fn every_truncation_is_refused() {
        let f = file("sender a@x\nrcpt b@y\n", b"Subject: hi\n\nbody\n");
        for n in 0..f.len() {
            assert!(parse(&f[..n], 0).is_err(), "a file cut at {n} bytes was accepted");
        }
        let mut padded = f.clone();
        padded.push(b'x');
        assert!(matches!(parse(&padded, 0), Err(DropError::SizeMismatch { .. })));
    }

    #[test]
    fn hostile_envelopes_are_refused() {
        let bad = [
            "rcpt b@y\nrcpt c@y\nbogus 1\n",
            "sender a@x\nsender b@x\nrcpt b@y\n",
            "rcpt b@y\r\n",
            "rcpt b@y\u{7}\n",
            "rcpt <b@y>\n",
            "rcpt b@y c@y\n",
            "rcpt \n",
            "notify SOMETIMES\nrcpt b@y\n",
            "ret ALL\nrcpt b@y\n",
            "sender  a@x\nrcpt b@y\n",
        ];
        for env in bad {
            assert!(parse(&file(env, b"x"), 0).is_err(), "accepted {env:?}");
        }
        assert_eq!(parse(&file("", b"x"), 0), Err(DropError::NoRecipients));
        assert_eq!(parse(b"RPOSTQ 1\n", 0), Err(DropError::BadMagic));
        // Line after size, size twice.
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(b"rcpt b@y\nsize 1\nrcpt c@y\n\nx");
        f.extend_from_slice(END);
        assert!(parse(&f, 0).is_err());
        // A huge line without newline is refused without reading past MAX_LINE.
        let mut f = MAGIC.to_vec();
        f.extend(std::iter::repeat_n(b'a', MAX_LINE * 4));
        assert_eq!(parse(&f, 0), Err(DropError::LineTooLong(2)));
        // Size lies.
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(b"rcpt b@y\nsize 99999999999999999999999\n\nx");
        assert!(parse(&f, 0).is_err());
    }

    #[test]
    fn size_limit_applies_to_content() {
        let f = file("rcpt b@y\n", &[b'x'; 100]);
        assert!(parse(&f, 100).is_ok());
        assert_eq!(parse(&f, 99), Err(DropError::TooBig { size: 100, limit: 99 }));
    }

    /// A poor man's fuzzer until fuzz/ has a target for this parser: thousands of mutated
    /// files (flipped, inserted and deleted bytes) must parse or fail cleanly, never panic,
    /// and whatever parses must hold only what the rules allow.
    #[test]
    fn mutated_files_never_panic() {
        let base = file("sender a@x\nfullname F\nnotify NEVER\nret FULL\nenvid e\nrcpt b@y\n", b"Subject: s\n\nbody\n");
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut f = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % (f.len() + 1);
                match next() % 3 {
                    0 if at < f.len() => f[at] = next() as u8,
                    1 => f.insert(at, next() as u8),
                    _ if at < f.len() => {
                        f.remove(at);
                    }
                    _ => {}
                }
            }
            if let Ok(d) = parse(&f, 1000) {
                assert!(!d.recipients.is_empty());
                for a in d.recipients.iter().chain(d.sender.iter()) {
                    assert!(!a.contains(['<', '>', '\n', '\r']), "{a:?}");
                }
            }
        }
    }

    #[test]
    fn too_many_recipients() {
        let env: String = (0..=MAX_RECIPIENTS).map(|i| format!("rcpt u{i}@y\n")).collect();
        assert_eq!(parse(&file(&env, b""), 0), Err(DropError::TooManyRecipients));
    }
}

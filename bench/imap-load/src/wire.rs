//! Just enough of the IMAP response grammar (RFC 3501 section 7) for a load generator: where
//! a response ends (a line, plus any `{n}` literals consumed by length and the rest of the
//! line after each), whether it is the tagged completion of a command, and the few untagged
//! data the mix needs (EXISTS, FETCH UID). Pure functions on bytes, so they are tested here
//! without a server; the reading itself is `Conn::response` in main.rs.

/// A tagged completion's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// The longest literal a response may announce: far above a bench message, far below what
/// would let a broken server make the generator allocate without bound.
pub const MAX_LITERAL: usize = 64 << 20;

/// If `line` (one line including its CRLF) ends with a literal announcement `{n}` (or the
/// `{n+}` form), the literal's length. A line ending in `}` that is not a literal (e.g. a
/// quoted string) does not match because the braces must hold only digits.
pub fn literal_len(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The status of `resp` if it is the tagged completion for `tag` (`tag OK ...`).
pub fn tagged(resp: &[u8], tag: &str) -> Option<Status> {
    let rest = resp.strip_prefix(tag.as_bytes())?.strip_prefix(b" ")?;
    let word: Vec<u8> = rest.iter().take_while(|b| b.is_ascii_alphabetic()).map(u8::to_ascii_uppercase).collect();
    match &word[..] {
        b"OK" => Some(Status::Ok),
        b"NO" => Some(Status::No),
        b"BAD" => Some(Status::Bad),
        _ => None,
    }
}

/// `* N EXISTS` -> N.
pub fn exists(resp: &[u8]) -> Option<u32> {
    let rest = resp.strip_prefix(b"* ")?;
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let word = rest[n..].strip_prefix(b" ")?;
    if n == 0 || !word.get(..6)?.eq_ignore_ascii_case(b"EXISTS") {
        return None;
    }
    std::str::from_utf8(&rest[..n]).ok()?.parse().ok()
}

/// `* STATUS name (... MESSAGES n ...)` -> n.
pub fn status_messages(resp: &[u8]) -> Option<u32> {
    if !resp.get(..9)?.eq_ignore_ascii_case(b"* STATUS ") {
        return None;
    }
    let open = resp.iter().rposition(|&b| b == b'(')?;
    let items = &resp[open..];
    let at = items.windows(9).position(|w| w.eq_ignore_ascii_case(b"MESSAGES "))?;
    let digits: Vec<u8> = items[at + 9..].iter().copied().take_while(u8::is_ascii_digit).collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// `* N FETCH (... UID u ...)` -> (N, u). Only the response's first line is looked at: the
/// UID item comes before any literal in the responses the mix asks for (FLAGS UID).
pub fn fetch_uid(resp: &[u8]) -> Option<(u32, u32)> {
    let rest = resp.strip_prefix(b"* ")?;
    let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(&rest[..n]).ok()?.parse().ok()?;
    let after = rest[n..].strip_prefix(b" ")?;
    if !after.get(..5)?.eq_ignore_ascii_case(b"FETCH") {
        return None;
    }
    let line_end = after.iter().position(|&b| b == b'\n').unwrap_or(after.len());
    let line = &after[..line_end];
    let at = line.windows(5).position(|w| w.eq_ignore_ascii_case(b" UID ") || w.eq_ignore_ascii_case(b"(UID "))?;
    let digits: Vec<u8> = line[at + 5..].iter().copied().take_while(u8::is_ascii_digit).collect();
    Some((seq, std::str::from_utf8(&digits).ok()?.parse().ok()?))
}

/// A string as an IMAP quoted string (RFC 3501 `quoted`): backslash and double quote
/// escaped. Refuses CR, LF and NUL, which a quoted string cannot carry.
pub fn quoted(s: &str) -> Option<String> {
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return None;
    }
    Some(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_announcements() {
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {4096}\r\n"), Some(4096));
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {0}\r\n"), Some(0));
        assert_eq!(literal_len(b"A1 APPEND x {12+}\r\n"), Some(12));
        assert_eq!(literal_len(b"* OK done\r\n"), None);
        assert_eq!(literal_len(b"* OK \"{x}\"\r\n"), None);
        assert_eq!(literal_len(b"* OK {}\r\n"), None);
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {4096}"), None, "no line end: not complete");
        assert_eq!(literal_len(b"* OK {99999999999}\r\n"), None, "too many digits");
    }

    #[test]
    fn tagged_completions() {
        assert_eq!(tagged(b"a7 OK FETCH completed\r\n", "a7"), Some(Status::Ok));
        assert_eq!(tagged(b"a7 no [LIMIT] too many\r\n", "a7"), Some(Status::No));
        assert_eq!(tagged(b"a7 BAD syntax\r\n", "a7"), Some(Status::Bad));
        assert_eq!(tagged(b"a70 OK x\r\n", "a7"), None, "another tag with the same prefix");
        assert_eq!(tagged(b"* OK still here\r\n", "a7"), None);
        assert_eq!(tagged(b"a7 OKAY\r\n", "a7"), None);
    }

    #[test]
    fn untagged_data() {
        assert_eq!(exists(b"* 21 EXISTS\r\n"), Some(21));
        assert_eq!(exists(b"* 21 exists\r\n"), Some(21));
        assert_eq!(exists(b"* 21 EXPUNGE\r\n"), None);
        assert_eq!(exists(b"* OK [UIDNEXT 5]\r\n"), None);
        assert_eq!(status_messages(b"* STATUS bench-1 (MESSAGES 20)\r\n"), Some(20));
        assert_eq!(status_messages(b"* STATUS \"a (b\" (UIDNEXT 5 MESSAGES 0)\r\n"), Some(0));
        assert_eq!(status_messages(b"* LIST () \".\" x\r\n"), None);
        assert_eq!(fetch_uid(b"* 3 FETCH (FLAGS (\\Seen) UID 17)\r\n"), Some((3, 17)));
        assert_eq!(fetch_uid(b"* 3 FETCH (UID 17 FLAGS ())\r\n"), Some((3, 17)));
        assert_eq!(fetch_uid(b"* 3 FETCH (FLAGS ())\r\n"), None);
        assert_eq!(fetch_uid(b"* 3 EXISTS\r\n"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted("se\"c\\ret").as_deref(), Some("\"se\\\"c\\\\ret\""));
        assert_eq!(quoted("a\r\nb"), None);
    }
}

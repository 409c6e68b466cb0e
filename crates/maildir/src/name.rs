//! Mailbox names (IMAP name -> Maildir++ directory) and message file names.

use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::MaildirError;

/// IMAP hierarchy separator of the names this crate takes.
pub const SEPARATOR: char = '/';

/// Longest directory name a file system takes.
const MAX_DIR_NAME: usize = 255;

/// Maps an IMAP mailbox name (hierarchy separator `/`) to its Maildir++ directory name:
/// `Sent` -> `.Sent`, `a/b` -> `.a.b`. `None` for INBOX (any case), which is the Maildir root.
///
/// Refused, so that no name can reach outside the Maildir or alias another one: the empty
/// name, a leading, trailing or doubled `/`, a `.` anywhere (it is the Maildir++ separator on
/// disk, so `a.b` would alias `a/b`, and `..` must never appear), control characters, `*` and
/// `%` (IMAP wildcards), and non-ASCII characters (names reach us in modified UTF-7, as Dovecot
/// stores them). Dovecot refuses the same names unless its listescape plugin is used.
pub fn folder_dir_name(name: &str) -> Result<Option<String>, MaildirError> {
    let bad = |reason: &'static str| MaildirError::InvalidName { name: printable(name), reason };
    if name.eq_ignore_ascii_case("INBOX") {
        return Ok(None);
    }
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.starts_with(SEPARATOR) || name.ends_with(SEPARATOR) {
        return Err(bad("leading or trailing hierarchy separator"));
    }
    for c in name.chars() {
        match c {
            c if c.is_ascii_control() => return Err(bad("control character")),
            c if !c.is_ascii() => return Err(bad("non-ASCII character (use modified UTF-7)")),
            '.' => return Err(bad("'.' is the Maildir++ hierarchy separator")),
            '*' | '%' => return Err(bad("IMAP wildcard character")),
            _ => {}
        }
    }
    if name.split(SEPARATOR).any(str::is_empty) {
        return Err(bad("empty hierarchy level"));
    }
    let dir = format!(".{}", name.replace(SEPARATOR, "."));
    if dir.len() > MAX_DIR_NAME {
        return Err(bad("name too long"));
    }
    Ok(Some(dir))
}

/// The inverse of [`folder_dir_name`]: `.a.b` -> `a/b`; `None` for names that are not
/// Maildir++ folders (or that [`folder_dir_name`] would refuse).
pub fn folder_from_dir_name(dir: &str) -> Option<String> {
    let rest = dir.strip_prefix('.')?;
    if rest.is_empty() || rest.starts_with('.') {
        return None;
    }
    let name = rest.replace('.', "/");
    match folder_dir_name(&name) {
        Ok(Some(d)) if d == dir => Some(name),
        _ => None,
    }
}

/// Replaces control and non-printable characters for error messages and logs.
pub(crate) fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).take(300).collect()
}

/// Validates and normalises Maildir info flags: ASCII letters (`D F P R S T` and the keyword
/// letters `a`-`z`), sorted and without duplicates, as the Maildir specification asks.
pub fn normalize_flags(flags: &str) -> Result<String, MaildirError> {
    let mut v: Vec<char> = Vec::new();
    for c in flags.chars() {
        if !c.is_ascii_alphabetic() {
            return Err(MaildirError::InvalidFlags(printable(flags)));
        }
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v.sort_unstable();
    Ok(v.into_iter().collect())
}

/// The host name part of message file names: `/` and `:` escaped as `\057` and `\072`, as the
/// Maildir specification and Dovecot do.
pub fn escape_hostname(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    for c in host.chars() {
        match c {
            '/' => out.push_str("\\057"),
            ':' => out.push_str("\\072"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if out.is_empty() { "localhost".to_string() } else { out }
}

/// The escaped host name of this machine (computed once).
pub(crate) fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let h = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
        escape_hostname(&h)
    })
}

/// The raw host name, for dotlock contents (`pid:host`, as Dovecot writes them).
pub(crate) fn raw_hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default())
}

/// A new unique base name `<secs>.M<usecs>P<pid>.<host>`, as Dovecot's
/// maildir_filename_generate(): seconds and microseconds of now, bumped by one microsecond
/// when the clock has not moved since the last name, so names are unique within the process;
/// the pid makes them unique between processes on the host.
pub fn unique_base() -> String {
    static LAST: Mutex<(u64, u32)> = Mutex::new((0, 0));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut t = (now.as_secs(), now.subsec_micros());
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if t <= *last {
            t = *last;
            t.1 += 1;
            if t.1 == 1_000_000 {
                t = (t.0 + 1, 0);
            }
        }
        *last = t;
    }
    format!("{}.M{}P{}.{}", t.0, t.1, std::process::id(), hostname())
}

/// The parts of a message file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName<'a> {
    /// Everything before `:` (the part the uidlist keys on), `,S=` and `,W=` included.
    pub base: &'a str,
    /// `,S=<size>`: the file's size.
    pub size: Option<u64>,
    /// `,W=<vsize>`: the size with CRLF line endings (IMAP RFC822.SIZE).
    pub vsize: Option<u64>,
    /// The info after `:2,` (standard flags and keyword letters), if any.
    pub flags: Option<&'a str>,
}

/// Splits a message file name: `1.M2P3.host,S=10,W=12:2,S` ->
/// base `1.M2P3.host,S=10,W=12`, size 10, vsize 12, flags `S`.
pub fn parse_filename(name: &str) -> FileName<'_> {
    let (base, info) = match name.split_once(':') {
        Some((b, i)) => (b, Some(i)),
        None => (name, None),
    };
    let mut size = None;
    let mut vsize = None;
    for field in base.split(',').skip(1) {
        if let Some(v) = field.strip_prefix("S=") {
            size = v.parse().ok();
        } else if let Some(v) = field.strip_prefix("W=") {
            vsize = v.parse().ok();
        }
    }
    // Dovecot: "<flags>[,<non-standard fields>]" after "2,".
    let flags = info.and_then(|i| i.strip_prefix("2,")).map(|f| f.split(',').next().unwrap_or(""));
    FileName { base, size, vsize, flags }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_map_to_maildirplusplus() {
        assert_eq!(folder_dir_name("INBOX").unwrap(), None);
        assert_eq!(folder_dir_name("inbox").unwrap(), None);
        assert_eq!(folder_dir_name("Sent").unwrap().as_deref(), Some(".Sent"));
        assert_eq!(folder_dir_name("a/b").unwrap().as_deref(), Some(".a.b"));
        assert_eq!(folder_dir_name("Entw&APw-rfe").unwrap().as_deref(), Some(".Entw&APw-rfe"));
        assert_eq!(folder_dir_name("INBOX/x").unwrap().as_deref(), Some(".INBOX.x"));
        for bad in [
            "",
            "/",
            "/a",
            "a/",
            "a//b",
            ".",
            "..",
            "../x",
            "a/../b",
            "a/..",
            ".hidden",
            "a.b",
            "a/.b",
            "a\nb",
            "a\0b",
            "a\tb",
            "tab\u{7f}",
            "ümlaut",
            "a*",
            "50%",
            "x/./y",
        ] {
            assert!(folder_dir_name(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(folder_dir_name(&"x".repeat(255)).is_err());
        assert!(folder_dir_name(&"x".repeat(254)).is_ok());
        assert_eq!(folder_from_dir_name(".a.b").as_deref(), Some("a/b"));
        assert_eq!(folder_from_dir_name(".Sent").as_deref(), Some("Sent"));
        for not in ["..", ".", "cur", "..a", ".a..b", ".a.", "dovecot-uidlist"] {
            assert_eq!(folder_from_dir_name(not), None, "{not}");
        }
    }

    #[test]
    fn flags_are_sorted_letters() {
        assert_eq!(normalize_flags("").unwrap(), "");
        assert_eq!(normalize_flags("SFa").unwrap(), "FSa");
        assert_eq!(normalize_flags("SS").unwrap(), "S");
        assert!(normalize_flags("S,").is_err());
        assert!(normalize_flags("S/").is_err());
    }

    #[test]
    fn hostnames_are_escaped_as_the_maildir_spec_says() {
        assert_eq!(escape_hostname("mx.example.com"), "mx.example.com");
        assert_eq!(escape_hostname("a/b:c"), "a\\057b\\072c");
        assert_eq!(escape_hostname(""), "localhost");
        assert!(!hostname().contains('/') && !hostname().contains(':'));
    }

    #[test]
    fn unique_bases_are_unique_and_dovecot_shaped() {
        let a = unique_base();
        let b = unique_base();
        assert_ne!(a, b);
        let (secs, rest) = a.split_once(".M").unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000);
        let (usec, rest) = rest.split_once('P').unwrap();
        assert!(usec.parse::<u32>().unwrap() < 1_000_000);
        let (pid, host) = rest.split_once('.').unwrap();
        assert_eq!(pid.parse::<u32>().unwrap(), std::process::id());
        assert_eq!(host, hostname());
    }

    #[test]
    fn file_names_parse() {
        let f = parse_filename("1276528487.M364837P9451.kurkku,S=1355,W=1394:2,FS");
        assert_eq!(f.base, "1276528487.M364837P9451.kurkku,S=1355,W=1394");
        assert_eq!((f.size, f.vsize, f.flags), (Some(1355), Some(1394), Some("FS")));
        let f = parse_filename("1276533073.M242911P3632.kurkku");
        assert_eq!((f.size, f.vsize, f.flags), (None, None, None));
        let f = parse_filename("x:2,S,extra");
        assert_eq!(f.flags, Some("S"));
    }
}

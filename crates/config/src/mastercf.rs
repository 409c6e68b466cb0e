//! master.cf(5) parsing.
//!
//! Each logical line is one service:
//!
//! ```text
//! service type private unpriv chroot wakeup maxproc command [args...]
//! ```
//!
//! `-` selects the default of a column. Arguments may be `-o name=value`,
//! `-oname=value` or (Postfix 3.0) `-o { name = value with spaces }`
//! parameter overrides, and `{ text with spaces }` groups that become one
//! argument. A later entry with the same service name and type replaces an
//! earlier one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::ConfigError;
use crate::lines::{self, LogicalLine};
use crate::registry::valid_name;

/// The transport a service listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceType {
    /// TCP socket (`inet`).
    Inet,
    /// UNIX-domain stream socket (`unix`).
    Unix,
    /// UNIX-domain datagram socket (`unix-dgram`).
    UnixDgram,
    /// Named pipe (`fifo`).
    Fifo,
    /// Descriptor passing socket (`pass`).
    Pass,
}

impl ServiceType {
    /// The master.cf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Inet => "inet",
            ServiceType::Unix => "unix",
            ServiceType::UnixDgram => "unix-dgram",
            ServiceType::Fifo => "fifo",
            ServiceType::Pass => "pass",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServiceType {
    type Err = String;

    fn from_str(s: &str) -> Result<ServiceType, String> {
        Ok(match s {
            "inet" => ServiceType::Inet,
            "unix" => ServiceType::Unix,
            "unix-dgram" => ServiceType::UnixDgram,
            "fifo" => ServiceType::Fifo,
            "pass" => ServiceType::Pass,
            _ => return Err(format!("unknown service type '{s}'")),
        })
    }
}

/// The wakeup column: trigger the service every `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    /// Interval in seconds (never 0: 0 means no wakeup).
    pub seconds: u32,
    /// Trailing `?`: only wake the service once it has been used.
    pub conditional: bool,
}

/// One master.cf entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Service name (for inet: `[host:]port`).
    pub name: String,
    /// Service type.
    pub kind: ServiceType,
    /// Access restricted to the mail system (`-` = yes, except inet).
    pub private: bool,
    /// Runs with the privileges of mail_owner (`-` = yes).
    pub unpriv: bool,
    /// Runs chrooted to the queue directory (`-` = no, as Postfix >= 3.0).
    pub chroot: bool,
    /// Periodic wakeup; `None` for `-` or 0.
    pub wakeup: Option<Wakeup>,
    /// Process limit; `None` for `-` (default_process_limit), 0 = no limit.
    pub maxproc: Option<u32>,
    /// The program to run (first word of the command column).
    pub command: String,
    /// Remaining arguments without `-o` options, `{ }` groups unwrapped.
    /// As with the daemons' getopt, `-o` is only an override before the
    /// first non-option argument; after it (e.g. in pipe(8)'s `argv=...`)
    /// it is an ordinary argument.
    pub args: Vec<String>,
    /// `-o name=value` overrides as (name, value, line), in order.
    pub overrides: Vec<(String, String, usize)>,
    /// 1-based line where the entry starts.
    pub line: usize,
}

impl Service {
    /// Identity of the service: a later entry with the same key replaces an
    /// earlier one, and master reload matches old and new entries by it.
    pub fn key(&self) -> (String, ServiceType) {
        (self.name.clone(), self.kind)
    }

    /// The value of the last `-o name=...` override, if any.
    pub fn override_value(&self, name: &str) -> Option<&str> {
        self.overrides.iter().rev().find(|(n, _, _)| n == name).map(|(_, v, _)| v.as_str())
    }
}

/// A parsed master.cf.
#[derive(Debug, Clone, Default)]
pub struct MasterCf {
    /// The file as given.
    pub path: PathBuf,
    /// Services in file order (after replacement of duplicates).
    pub services: Vec<Service>,
}

impl MasterCf {
    /// Parses master.cf text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<MasterCf, ConfigError> {
        MasterCf::parse_bytes(path, text.as_bytes())
    }

    /// Parses raw file contents (which must be UTF-8).
    pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<MasterCf, ConfigError> {
        let file = path.display().to_string();
        let logical = lines::split(bytes).map_err(|(line, msg)| ConfigError::syntax(&file, line, msg))?;
        let mut services: Vec<Service> = Vec::new();
        for ll in logical {
            let svc = parse_service(&ll).map_err(|(line, msg)| ConfigError::syntax(&file, line, msg))?;
            services.retain(|s| s.key() != svc.key());
            services.push(svc);
        }
        Ok(MasterCf { path: path.to_path_buf(), services })
    }

    /// Reads and parses a master.cf file.
    pub fn load(path: &Path) -> Result<MasterCf, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError::io(path, e))?;
        MasterCf::parse_bytes(path, &bytes)
    }

    /// The service with this name and type.
    pub fn find(&self, name: &str, kind: ServiceType) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name && s.kind == kind)
    }
}

/// Parses one logical line into a service; errors are (physical line,
/// message) so they name the line the admin sees even inside a long
/// continued entry.
fn parse_service(ll: &LogicalLine) -> Result<Service, (usize, String)> {
    let tokens = tokenize(&ll.text).map_err(|(off, m)| (ll.line_at(off), m))?;
    let at = |i: usize| ll.line_at(tokens[i].0);
    let tok = |i: usize| tokens[i].1;
    if tokens.len() < 8 {
        return Err((
            ll.line,
            format!(
                "expected at least 8 fields (service type private unpriv chroot wakeup maxproc command), found {}",
                tokens.len()
            ),
        ));
    }
    let kind: ServiceType = tok(1).parse().map_err(|m| (at(1), m))?;
    let private = match yes_no(tok(2), "private").map_err(|m| (at(2), m))? {
        Some(true) if kind == ServiceType::Inet => {
            return Err((at(2), "inet services cannot be private".to_string()));
        }
        Some(v) => v,
        None => kind != ServiceType::Inet,
    };
    let mut svc = Service {
        name: tok(0).to_string(),
        kind,
        private,
        unpriv: yes_no(tok(3), "unpriv").map_err(|m| (at(3), m))?.unwrap_or(true),
        chroot: yes_no(tok(4), "chroot").map_err(|m| (at(4), m))?.unwrap_or(false),
        wakeup: parse_wakeup(tok(5)).map_err(|m| (at(5), m))?,
        maxproc: match tok(6) {
            "-" => None,
            v => Some(v.parse::<u32>().map_err(|_| (at(6), format!("bad maxproc value '{v}'")))?),
        },
        command: tok(7).to_string(),
        args: Vec::new(),
        overrides: Vec::new(),
        line: ll.line,
    };
    // Like the daemons' getopt ("+" mode), options end at the first
    // non-option argument: a pipe(8) entry's "argv=deliver -o x=y" passes
    // -o to the external command, it is not a parameter override.
    let mut options = true;
    let mut i = 8;
    while i < tokens.len() {
        let t = tok(i);
        if options && t == "-o" {
            if i + 1 >= tokens.len() {
                return Err((at(i), "-o option without name=value".to_string()));
            }
            i += 1;
            svc.overrides.push(parse_override(tok(i), at(i)).map_err(|m| (at(i), m))?);
        } else if let Some(opt) = t.strip_prefix("-o").filter(|_| options) {
            svc.overrides.push(parse_override(opt, at(i)).map_err(|m| (at(i), m))?);
        } else if options && t.starts_with('-') && t.len() > 1 && t != "--" {
            svc.args.push(t.to_string());
            // Daemon options that take a value (Postfix mail_server.c).
            if matches!(t, "-i" | "-m" | "-n" | "-s" | "-t") && i + 1 < tokens.len() {
                i += 1;
                svc.args.push(unwrap_group(tok(i)).unwrap_or(tok(i)).to_string());
            }
        } else {
            options = false;
            svc.args.push(unwrap_group(t).unwrap_or(t).to_string());
        }
        i += 1;
    }
    Ok(svc)
}

/// y/n/- column; `None` for `-`.
fn yes_no(value: &str, column: &str) -> Result<Option<bool>, String> {
    match value {
        "y" => Ok(Some(true)),
        "n" => Ok(Some(false)),
        "-" => Ok(None),
        _ => Err(format!("bad {column} field '{value}': expected y, n or -")),
    }
}

fn parse_wakeup(value: &str) -> Result<Option<Wakeup>, String> {
    if value == "-" {
        return Ok(None);
    }
    let (digits, conditional) = match value.strip_suffix('?') {
        Some(d) => (d, true),
        None => (value, false),
    };
    let seconds: u32 = digits
        .parse()
        .map_err(|_| format!("bad wakeup time '{value}': expected seconds, optionally followed by '?', or -"))?;
    Ok((seconds > 0).then_some(Wakeup { seconds, conditional }))
}

/// `name=value` or `{ name = value }` after `-o`.
fn parse_override(opt: &str, line: usize) -> Result<(String, String, usize), String> {
    let body = unwrap_group(opt).unwrap_or(opt);
    let Some((name, value)) = body.split_once('=') else {
        return Err(format!("-o option without '=': '{opt}'"));
    };
    let name = name.trim();
    if !valid_name(name) {
        return Err(format!("bad parameter name '{name}' in -o option"));
    }
    Ok((name.to_string(), value.trim().to_string(), line))
}

/// `{ text }` → `text` (outer braces and surrounding whitespace removed).
fn unwrap_group(tok: &str) -> Option<&str> {
    tok.strip_prefix('{')?.strip_suffix('}').map(str::trim)
}

/// Splits on whitespace, except inside `{ }` (Postfix mystrtokq());
/// returns (byte offset, token), or (offset of the unclosed '{', message).
fn tokenize(text: &str) -> Result<Vec<(usize, &str)>, (usize, String)> {
    let mut tokens = Vec::new();
    let mut start: Option<usize> = None;
    let mut depth = 0usize;
    let mut group_start = 0;
    for (i, c) in text.char_indices() {
        if depth == 0 && c.is_ascii_whitespace() {
            if let Some(s) = start.take() {
                tokens.push((s, &text[s..i]));
            }
            continue;
        }
        if start.is_none() {
            start = Some(i);
        }
        match c {
            '{' => {
                if depth == 0 {
                    group_start = i;
                }
                depth += 1;
            }
            // A '}' with no '{' is ordinary text, as in Postfix.
            '}' if depth > 0 => depth -= 1,
            _ => {}
        }
    }
    if depth > 0 {
        return Err((group_start, "missing '}' (unbalanced '{')".to_string()));
    }
    if let Some(s) = start {
        tokens.push((s, &text[s..]));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MasterCf, ConfigError> {
        MasterCf::parse(Path::new("master.cf"), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn columns_and_defaults() {
        let m = parse(
            "smtp      inet  n       -       y       -       -       smtpd\n\
             pickup    unix  n       -       y       60      1       pickup\n\
             tlsmgr    unix  -       -       y       1000?   1       tlsmgr\n\
             postlog   unix-dgram n  -       n       -       1       postlogd\n\
             qmgr      fifo  -       n       -       0       0       qmgr\n\
             smtpd     pass  -       -       -       -       -       smtpd\n",
        )
        .unwrap();
        let smtp = m.find("smtp", ServiceType::Inet).unwrap();
        assert!(!smtp.private && smtp.unpriv && smtp.chroot);
        assert_eq!((smtp.wakeup, smtp.maxproc), (None, None));
        assert_eq!(smtp.command, "smtpd");
        let pickup = m.find("pickup", ServiceType::Unix).unwrap();
        assert!(!pickup.private);
        assert_eq!(pickup.wakeup, Some(Wakeup { seconds: 60, conditional: false }));
        assert_eq!(pickup.maxproc, Some(1));
        let tlsmgr = m.find("tlsmgr", ServiceType::Unix).unwrap();
        assert!(tlsmgr.private);
        assert_eq!(tlsmgr.wakeup, Some(Wakeup { seconds: 1000, conditional: true }));
        assert_eq!(m.find("postlog", ServiceType::UnixDgram).unwrap().command, "postlogd");
        let qmgr = m.find("qmgr", ServiceType::Fifo).unwrap();
        assert!(!qmgr.unpriv && !qmgr.chroot);
        assert_eq!((qmgr.wakeup, qmgr.maxproc), (None, Some(0)));
        assert!(m.find("smtpd", ServiceType::Pass).unwrap().private);
        assert!(m.find("smtp", ServiceType::Unix).is_none());
        assert_eq!(ServiceType::UnixDgram.to_string(), "unix-dgram");
        for t in ["inet", "unix", "unix-dgram", "fifo", "pass"] {
            assert_eq!(t.parse::<ServiceType>().unwrap().to_string(), t);
        }
    }

    #[test]
    fn options_and_groups() {
        let m = parse(
            "submission inet n - - - - smtpd\n\
             \x20 -o syslog_name=postfix/submission\n\
             \x20 -osmtpd_tls_security_level=encrypt\n\
             \x20 -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }\n\
             \x20 -o smtpd_sender_restrictions=\n\
             \x20 { arg with spaces } plain ${recipient}\n",
        )
        .unwrap();
        let s = &m.services[0];
        assert_eq!(
            s.overrides,
            vec![
                ("syslog_name".to_string(), "postfix/submission".to_string(), 2),
                ("smtpd_tls_security_level".to_string(), "encrypt".to_string(), 3),
                ("smtpd_client_restrictions".to_string(), "permit_sasl_authenticated, reject".to_string(), 4),
                ("smtpd_sender_restrictions".to_string(), String::new(), 5),
            ]
        );
        assert_eq!(s.args, vec!["arg with spaces", "plain", "${recipient}"]);
        assert_eq!(s.override_value("syslog_name"), Some("postfix/submission"));
    }

    #[test]
    fn options_end_at_first_non_option_argument() {
        let m = parse(
            "dovecot unix - n n - - pipe -v -o a=1 -t unix\n  \
             flags=DRhu user=vmail argv=/usr/lib/dovecot/deliver -f ${sender} -o lda_mailbox_autocreate=yes\n\
             smtpd2 inet n - - - - smtpd -D -o b=2 -- -o c=3\n",
        )
        .unwrap();
        let s = &m.services[0];
        assert_eq!(s.overrides, vec![("a".to_string(), "1".to_string(), 1)]);
        assert_eq!(
            s.args,
            vec![
                "-v",
                "-t",
                "unix",
                "flags=DRhu",
                "user=vmail",
                "argv=/usr/lib/dovecot/deliver",
                "-f",
                "${sender}",
                "-o",
                "lda_mailbox_autocreate=yes"
            ]
        );
        let s = &m.services[1];
        assert_eq!(s.overrides, vec![("b".to_string(), "2".to_string(), 3)]);
        assert_eq!(s.args, vec!["-D", "--", "-o", "c=3"]);
    }

    #[test]
    fn later_duplicate_replaces_earlier() {
        let m = parse("smtp inet n - y - - smtpd\nsmtp unix - - y - - smtp\nsmtp inet n - n - 5 smtpd -v\n").unwrap();
        assert_eq!(m.services.len(), 2);
        assert_eq!(m.services[0].key(), ("smtp".to_string(), ServiceType::Unix));
        assert_eq!(m.services[1].maxproc, Some(5));
        assert_eq!(m.services[1].line, 3);
        assert_eq!(m.services[1].args, vec!["-v"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        assert_eq!(err("# c\nsmtp xyz n - y - - smtpd\n"), "master.cf:2: unknown service type 'xyz'");
        assert_eq!(err("smtp inet n - y - abc smtpd\n"), "master.cf:1: bad maxproc value 'abc'");
        assert_eq!(err("smtp inet n - y - -1 smtpd\n"), "master.cf:1: bad maxproc value '-1'");
        assert!(err("\nsmtp inet n - y -\n").starts_with("master.cf:2: expected at least 8 fields"));
        assert_eq!(err("smtp inet y - y - - smtpd\n"), "master.cf:1: inet services cannot be private");
        assert_eq!(err("smtp unix q - y - - smtpd\n"), "master.cf:1: bad private field 'q': expected y, n or -");
        assert!(err("smtp unix - yes y - - smtpd\n").contains("bad unpriv field 'yes'"));
        assert!(err("smtp unix - - x - - smtpd\n").contains("bad chroot field 'x'"));
        assert!(err("smtp unix - - - 5x - smtpd\n").contains("bad wakeup time '5x'"));
        assert_eq!(
            err("a unix - - - - - cmd\nb unix - - - - - cmd\n  -o foo\n"),
            "master.cf:3: -o option without '=': 'foo'"
        );
        assert!(err("a unix - - - - - cmd -o\n").contains("-o option without name=value"));
        assert!(err("a unix - - - - - cmd -o bad-name=1\n").contains("bad parameter name 'bad-name'"));
        assert_eq!(err("a unix - - - - - cmd\n  -o { x = y\n"), "master.cf:2: missing '}' (unbalanced '{')");
        assert!(err("  a unix - - - - - cmd\n").contains("no line to continue"));
    }
}

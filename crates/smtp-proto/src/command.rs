//! SMTP/LMTP command parsing, as tolerant as Postfix smtpd with `strict_rfc821_envelopes = no`.
//!
//! The tokenizer follows Postfix's `smtpd_token()`: words split on white space, except inside
//! `<...>` and `"..."`, and `FROM:` / `TO:` end a word so that `MAIL FROM:<a@b>` and
//! `MAIL FROM: <a@b>` both give the tokens `MAIL`, `FROM:`, `<a@b>`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::reply::Reply;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `HELO name`; several words are joined with one space, as Postfix does.
    Helo(String),
    /// `EHLO name`.
    Ehlo(String),
    /// `LHLO name` (LMTP, RFC 2033).
    Lhlo(String),
    /// `MAIL FROM:<path> [params]`.
    Mail { from: ReversePath, params: MailParams },
    /// `RCPT TO:<path> [params]`.
    Rcpt { to: Path, params: RcptParams },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat { size: u64, last: bool },
    /// `RSET`.
    Rset,
    /// `NOOP`, arguments ignored (RFC 5321 allows a string).
    Noop,
    /// `QUIT`, arguments ignored as Postfix does.
    Quit,
    /// `HELP [topic]`.
    Help(Option<String>),
    /// `VRFY string`: the argument as sent; [`parse_path`] extracts an address from it.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954). The mechanism is upper-cased (SASL
    /// mechanism names are case-insensitive); the initial response is as sent (`=` = empty).
    Auth { mechanism: String, initial: Option<String> },
    /// `ETRN node` (RFC 1985), argument as sent (`@domain` and `#queue` forms included).
    Etrn(String),
    /// Any other verb, as sent. The session decides: usually
    /// [`CommandError::Unrecognized`] ("502 5.5.2 Error: command not recognized").
    Unknown(String),
}

impl Command {
    /// The verb in upper case, for logs such as "lost connection after RCPT".
    pub fn verb(&self) -> &str {
        match self {
            Command::Helo(_) => "HELO",
            Command::Ehlo(_) => "EHLO",
            Command::Lhlo(_) => "LHLO",
            Command::Mail { .. } => "MAIL",
            Command::Rcpt { .. } => "RCPT",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
            Command::Help(_) => "HELP",
            Command::Vrfy(_) => "VRFY",
            Command::Expn(_) => "EXPN",
            Command::StartTls => "STARTTLS",
            Command::Auth { .. } => "AUTH",
            Command::Etrn(_) => "ETRN",
            Command::Unknown(v) => v,
        }
    }
}

/// The MAIL FROM path: `<>` or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`: bounces and other notifications.
    Null,
    /// A real sender.
    Path(Address),
}

/// The RCPT TO path (never null).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path(pub Address);

/// A mailbox from an envelope command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// Local part in unquoted form (`john doe` for `"john doe"@example.com`).
    pub local: String,
    /// Domain, a single trailing dot removed; empty for `<postmaster>` and other bare local
    /// parts (Postfix appends `$myorigin` later). Address literals keep their brackets.
    pub domain: String,
    /// The text as written between `<` and `>` (source route included), for logs and ORCPT.
    pub raw: String,
}

/// `local@domain`, the local part quoted again when it is not a dot-atom. Use
/// `to_string()`.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_atom(&self.local) {
            f.write_str(&self.local)?;
        } else {
            f.write_str("\"")?;
            for ch in self.local.chars() {
                if ch == '"' || ch == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{ch}")?;
            }
            f.write_str("\"")?;
        }
        if !self.domain.is_empty() {
            write!(f, "@{}", self.domain)?;
        }
        Ok(())
    }
}

impl Address {
    /// Parses `local@domain` or a bare local part (no angle brackets, no source route; see
    /// [`parse_path`] for those).
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        parse_mailbox(text, text)
    }

    /// True when local part or domain holds non-ASCII characters, i.e. the client must have
    /// said SMTPUTF8 (Postfix: "553 5.6.7 Must declare SMTPUTF8 to send unicode address").
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// `<>` where a real address is needed.
    #[error("empty address")]
    Empty,
    /// `<` without `>` or an open quote.
    #[error("unbalanced <> or quotes")]
    Unbalanced,
    /// Characters around or inside the address that are not part of one.
    #[error("junk in address")]
    Junk,
    /// Bad characters in the local part, or an empty one before `@`.
    #[error("bad local part")]
    BadLocalPart,
    /// Empty or malformed domain.
    #[error("bad domain")]
    BadDomain,
    /// Malformed `[...]` address literal.
    #[error("bad address literal")]
    BadLiteral,
}

/// BODY= (RFC 1652, RFC 3030).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// `BODY=7BIT`.
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
    /// `BODY=BINARYMIME` (needs BDAT; the session decides whether it is offered).
    BinaryMime,
}

/// RET= (RFC 3461).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// Return the full message in a DSN.
    Full,
    /// Return headers only.
    Hdrs,
}

/// NOTIFY= (RFC 3461): the set of conditions to report; all false is `NOTIFY=NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Notify {
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Notify = Notify { success: false, failure: false, delay: false };

    /// True for `NOTIFY=NEVER`.
    pub fn is_never(&self) -> bool {
        *self == Notify::NEVER
    }

    /// Postfix's DSN_NOTIFY mask, as queue files store it: NEVER 1, SUCCESS 2, FAILURE 4,
    /// DELAY 8.
    pub fn bits(&self) -> u8 {
        if self.is_never() {
            return 1;
        }
        (self.success as u8) << 1 | (self.failure as u8) << 2 | (self.delay as u8) << 3
    }

    /// The inverse of [`Notify::bits`]; `None` for masks NOTIFY cannot produce.
    pub fn from_bits(bits: u8) -> Option<Notify> {
        match bits {
            1 => Some(Notify::NEVER),
            2..=15 if bits & 1 == 0 => {
                Some(Notify { success: bits & 2 != 0, failure: bits & 4 != 0, delay: bits & 8 != 0 })
            }
            _ => None,
        }
    }
}

/// MAIL FROM parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870); comparing it with message_size_limit is the session's job.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=`, xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954), xtext-decoded; `<>` stays `<>`.
    pub auth: Option<String>,
    /// Other parameters as sent, keyword and optional value. The session accepts the ones it
    /// implements and answers the rest with [`MailParams::reject_unknown`].
    pub unknown: Vec<(String, Option<String>)>,
}

impl MailParams {
    /// The "555 5.5.4 Unsupported option: X" error for the first unknown parameter, if any.
    pub fn reject_unknown(&self) -> Result<(), CommandError> {
        reject_unknown(&self.unknown)
    }
}

/// RCPT TO parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext`: the type as sent (e.g. `rfc822`) and the decoded address.
    pub orcpt: Option<(String, String)>,
    /// Other parameters as sent.
    pub unknown: Vec<(String, Option<String>)>,
}

impl RcptParams {
    /// The "555 5.5.4 Unsupported option: X" error for the first unknown parameter, if any.
    pub fn reject_unknown(&self) -> Result<(), CommandError> {
        reject_unknown(&self.unknown)
    }
}

fn reject_unknown(unknown: &[(String, Option<String>)]) -> Result<(), CommandError> {
    match unknown.first() {
        None => Ok(()),
        Some((k, None)) => Err(CommandError::UnsupportedOption(k.clone())),
        Some((k, Some(v))) => Err(CommandError::UnsupportedOption(format!("{k}={v}"))),
    }
}

/// A command that cannot be carried out as sent. Each maps to the reply Postfix gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Empty line or control characters: "500 5.5.2 Error: bad syntax".
    #[error("bad syntax")]
    BadSyntax,
    /// Not UTF-8: "500 5.5.2 Error: bad UTF-8 syntax".
    #[error("bad UTF-8 syntax")]
    BadUtf8,
    /// Wrong arguments; the usage text, e.g. `MAIL FROM:<address>`, `DATA`, `HELO hostname`.
    #[error("syntax: {0}")]
    Usage(&'static str),
    /// "501 5.1.7 Bad sender address syntax".
    #[error("bad sender address syntax: {0}")]
    BadSender(AddressError),
    /// "501 5.1.3 Bad recipient address syntax".
    #[error("bad recipient address syntax: {0}")]
    BadRecipient(AddressError),
    /// "555 5.5.4 Unsupported option: X".
    #[error("unsupported option: {0}")]
    UnsupportedOption(String),
    /// SIZE= not all digits: "501 5.5.4 Bad message size syntax".
    #[error("bad message size syntax")]
    BadSize,
    /// SIZE= beyond 64 bits: "552 5.3.4 Message size exceeds file system imposed limit".
    #[error("message size overflow")]
    SizeOverflow,
    /// "501 5.5.4 Bad RET parameter syntax".
    #[error("bad RET parameter syntax")]
    BadRet,
    /// "501 5.5.4 Bad ENVID parameter syntax".
    #[error("bad ENVID parameter syntax")]
    BadEnvid,
    /// "501 5.5.4 Error: Bad NOTIFY parameter syntax".
    #[error("bad NOTIFY parameter syntax")]
    BadNotify,
    /// "501 5.5.4 Error: Bad ORCPT parameter syntax".
    #[error("bad ORCPT parameter syntax")]
    BadOrcpt,
    /// "501 5.5.4 Bad AUTH parameter syntax".
    #[error("bad AUTH parameter syntax")]
    BadAuthParam,
    /// "503 5.5.4 Error: multiple AUTH= options".
    #[error("multiple AUTH= options")]
    MultipleAuth,
    /// "502 5.5.2 Error: command not recognized" (the verb, for logs).
    #[error("command not recognized: {0}")]
    Unrecognized(String),
}

impl CommandError {
    /// The reply to send, worded as Postfix words it.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::BadSyntax => Reply::new(500, "5.5.2", "Error: bad syntax"),
            CommandError::BadUtf8 => Reply::new(500, "5.5.2", "Error: bad UTF-8 syntax"),
            // RFC 2034: replies to HELO/EHLO carry no enhanced status code.
            CommandError::Usage(u @ ("HELO hostname" | "EHLO hostname" | "LHLO hostname")) => {
                Reply::new(501, "", format!("Syntax: {u}"))
            }
            CommandError::Usage(u @ "ETRN domain") => Reply::new(500, "", format!("Syntax: {u}")),
            // Without a valid count the chunk boundary is lost: Postfix says 521 and hangs up.
            CommandError::Usage(u @ "BDAT count [LAST]") => Reply::new(521, "5.5.4", format!("Syntax: {u}")),
            CommandError::Usage(u) => Reply::new(501, "5.5.4", format!("Syntax: {u}")),
            CommandError::BadSender(_) => Reply::new(501, "5.1.7", "Bad sender address syntax"),
            CommandError::BadRecipient(_) => Reply::new(501, "5.1.3", "Bad recipient address syntax"),
            CommandError::UnsupportedOption(o) => Reply::new(555, "5.5.4", format!("Unsupported option: {o}")),
            CommandError::BadSize => Reply::new(501, "5.5.4", "Bad message size syntax"),
            CommandError::SizeOverflow => Reply::new(552, "5.3.4", "Message size exceeds file system imposed limit"),
            CommandError::BadRet => Reply::new(501, "5.5.4", "Bad RET parameter syntax"),
            CommandError::BadEnvid => Reply::new(501, "5.5.4", "Bad ENVID parameter syntax"),
            CommandError::BadNotify => Reply::new(501, "5.5.4", "Error: Bad NOTIFY parameter syntax"),
            CommandError::BadOrcpt => Reply::new(501, "5.5.4", "Error: Bad ORCPT parameter syntax"),
            CommandError::BadAuthParam => Reply::new(501, "5.5.4", "Bad AUTH parameter syntax"),
            CommandError::MultipleAuth => Reply::new(503, "5.5.4", "Error: multiple AUTH= options"),
            CommandError::Unrecognized(_) => Reply::new(502, "5.5.2", "Error: command not recognized"),
        }
    }

    /// True when the session must close the connection after the reply (a BDAT whose size
    /// cannot be read leaves the byte stream out of step).
    pub fn is_fatal(&self) -> bool {
        matches!(self, CommandError::Usage("BDAT count [LAST]"))
    }
}

/// Parses one command line, without its CRLF.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    // Control characters (NUL, bare CR/LF, ESC...) have no place in a command; tab is white
    // space as in Postfix.
    if line.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(CommandError::BadSyntax);
    }
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadUtf8)?;
    let toks = tokenize(line);
    let Some(verb) = toks.first() else {
        return Err(CommandError::BadSyntax);
    };
    let verb = verb.text;
    let args = &toks[1..];
    let upper = verb.to_ascii_uppercase();
    match upper.as_str() {
        "HELO" | "EHLO" | "LHLO" => {
            if args.is_empty() {
                return Err(CommandError::Usage(match upper.as_str() {
                    "HELO" => "HELO hostname",
                    "EHLO" => "EHLO hostname",
                    _ => "LHLO hostname",
                }));
            }
            let name = join(args);
            Ok(match upper.as_str() {
                "HELO" => Command::Helo(name),
                "EHLO" => Command::Ehlo(name),
                _ => Command::Lhlo(name),
            })
        }
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        "DATA" => no_args(args, Command::Data, "DATA"),
        "RSET" => no_args(args, Command::Rset, "RSET"),
        "STARTTLS" => no_args(args, Command::StartTls, "STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => Ok(Command::Quit),
        "BDAT" => parse_bdat(args),
        "HELP" => Ok(Command::Help((!args.is_empty()).then(|| join(args)))),
        "VRFY" if !args.is_empty() => Ok(Command::Vrfy(join(args))),
        "VRFY" => Err(CommandError::Usage("VRFY address")),
        "EXPN" if !args.is_empty() => Ok(Command::Expn(join(args))),
        "EXPN" => Err(CommandError::Usage("EXPN mailing-list")),
        "AUTH" => match args {
            [mech] => Ok(Command::Auth { mechanism: mech.text.to_ascii_uppercase(), initial: None }),
            [mech, init] => {
                Ok(Command::Auth { mechanism: mech.text.to_ascii_uppercase(), initial: Some(init.text.to_owned()) })
            }
            _ => Err(CommandError::Usage("AUTH mechanism")),
        },
        "ETRN" => match args {
            [node] => Ok(Command::Etrn(node.text.to_owned())),
            _ => Err(CommandError::Usage("ETRN domain")),
        },
        _ => Ok(Command::Unknown(verb.to_owned())),
    }
}

fn no_args(args: &[Token<'_>], cmd: Command, usage: &'static str) -> Result<Command, CommandError> {
    if args.is_empty() { Ok(cmd) } else { Err(CommandError::Usage(usage)) }
}

fn join(args: &[Token<'_>]) -> String {
    args.iter().map(|t| t.text).collect::<Vec<_>>().join(" ")
}

fn parse_bdat(args: &[Token<'_>]) -> Result<Command, CommandError> {
    const USAGE: CommandError = CommandError::Usage("BDAT count [LAST]");
    let (size, last) = match args {
        [size] => (size.text, false),
        [size, last] if last.text.eq_ignore_ascii_case("LAST") => (size.text, true),
        _ => return Err(USAGE),
    };
    let size = parse_digits(size).ok_or(USAGE)?.ok_or(USAGE)?;
    Ok(Command::Bdat { size, last })
}

/// All digits (and at least one): `Some(Some(n))`, or `Some(None)` on overflow; else `None`.
fn parse_digits(s: &str) -> Option<Option<u64>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().ok())
}

fn parse_mail(args: &[Token<'_>]) -> Result<Command, CommandError> {
    let [kw, path, params @ ..] = args else {
        return Err(CommandError::Usage("MAIL FROM:<address>"));
    };
    if !kw.text.eq_ignore_ascii_case("FROM:") {
        return Err(CommandError::Usage("MAIL FROM:<address>"));
    }
    if path.unbalanced {
        return Err(CommandError::BadSender(AddressError::Unbalanced));
    }
    let from = match parse_path(path.text).map_err(CommandError::BadSender)? {
        None => ReversePath::Null,
        Some(a) => ReversePath::Path(a),
    };
    let mut p = MailParams::default();
    for tok in params {
        let (key, value) = split_param(tok.text);
        let upper = key.to_ascii_uppercase();
        match (upper.as_str(), value) {
            ("SIZE", Some(v)) => {
                p.size = Some(parse_digits(v).ok_or(CommandError::BadSize)?.ok_or(CommandError::SizeOverflow)?);
            }
            ("BODY", Some(v)) => {
                p.body = Some(match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    "BINARYMIME" => Body::BinaryMime,
                    _ => return Err(CommandError::UnsupportedOption(tok.text.to_owned())),
                });
            }
            ("SMTPUTF8", None) => p.smtputf8 = true,
            ("RET", Some(v)) => {
                if p.ret.is_some() {
                    return Err(CommandError::BadRet);
                }
                p.ret = Some(match v.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(CommandError::BadRet),
                });
            }
            ("ENVID", Some(v)) => {
                if p.envid.is_some() {
                    return Err(CommandError::BadEnvid);
                }
                let d = xtext_decode(v).filter(|d| !d.is_empty()).ok_or(CommandError::BadEnvid)?;
                p.envid = Some(d);
            }
            ("AUTH", Some(v)) => {
                if p.auth.is_some() {
                    return Err(CommandError::MultipleAuth);
                }
                let d = xtext_decode(v).filter(|d| !d.is_empty()).ok_or(CommandError::BadAuthParam)?;
                p.auth = Some(d);
            }
            _ => p.unknown.push((key.to_owned(), value.map(str::to_owned))),
        }
    }
    Ok(Command::Mail { from, params: p })
}

fn parse_rcpt(args: &[Token<'_>]) -> Result<Command, CommandError> {
    let [kw, path, params @ ..] = args else {
        return Err(CommandError::Usage("RCPT TO:<address>"));
    };
    if !kw.text.eq_ignore_ascii_case("TO:") {
        return Err(CommandError::Usage("RCPT TO:<address>"));
    }
    if path.unbalanced {
        return Err(CommandError::BadRecipient(AddressError::Unbalanced));
    }
    let to = parse_path(path.text).map_err(CommandError::BadRecipient)?;
    let to = Path(to.ok_or(CommandError::BadRecipient(AddressError::Empty))?);
    let mut p = RcptParams::default();
    for tok in params {
        let (key, value) = split_param(tok.text);
        match (key.to_ascii_uppercase().as_str(), value) {
            ("NOTIFY", Some(v)) => {
                if p.notify.is_some() {
                    return Err(CommandError::BadNotify);
                }
                p.notify = Some(parse_notify(v).ok_or(CommandError::BadNotify)?);
            }
            ("ORCPT", Some(v)) => {
                if p.orcpt.is_some() {
                    return Err(CommandError::BadOrcpt);
                }
                let (kind, addr) = v.split_once(';').ok_or(CommandError::BadOrcpt)?;
                let addr = xtext_decode(addr).filter(|a| !a.is_empty()).ok_or(CommandError::BadOrcpt)?;
                if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(CommandError::BadOrcpt);
                }
                p.orcpt = Some((kind.to_owned(), addr));
            }
            _ => p.unknown.push((key.to_owned(), value.map(str::to_owned))),
        }
    }
    Ok(Command::Rcpt { to, params: p })
}

fn split_param(s: &str) -> (&str, Option<&str>) {
    match s.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (s, None),
    }
}

/// `NEVER` alone, or a comma list of `SUCCESS`, `FAILURE`, `DELAY` (RFC 3461 section 4.1).
fn parse_notify(v: &str) -> Option<Notify> {
    let mut n = Notify::NEVER;
    let mut never = false;
    for word in v.split(',') {
        match word.to_ascii_uppercase().as_str() {
            "NEVER" => never = true,
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => return None,
        }
    }
    match (never, n.is_never()) {
        (true, true) => Some(Notify::NEVER),
        (false, false) => Some(n),
        // NEVER mixed with others, which RFC 3461 forbids.
        _ => None,
    }
}

/// Decodes RFC 3461 xtext (`+XX` hex escapes). The result must be UTF-8 without control
/// characters: it ends up in queue files, logs and DSNs.
pub fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    if s.chars().any(char::is_control) {
        return None;
    }
    Some(s)
}

/// Encodes text as RFC 3461 xtext, for relaying ENVID and ORCPT.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Extracts the address from a MAIL/RCPT/VRFY argument: `<a@b>`, `a@b`, `<>`, and source
/// routes `<@hosta,@hostb:user@domain>` (the route is dropped, as Postfix does). `Ok(None)`
/// is the null path.
pub fn parse_path(arg: &str) -> Result<Option<Address>, AddressError> {
    let inner = match arg.strip_prefix('<') {
        Some(rest) => rest.strip_suffix('>').ok_or(AddressError::Unbalanced)?,
        None if arg.ends_with('>') => return Err(AddressError::Unbalanced),
        None => arg,
    };
    let mut text = inner.trim_matches([' ', '\t']);
    if text.starts_with('@') {
        // Source route: skip to the first ':' outside an address literal.
        let mut depth = 0u32;
        let colon = text.char_indices().find_map(|(i, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                ':' if depth == 0 => return Some(i),
                _ => {}
            }
            None
        });
        if let Some(i) = colon {
            text = &text[i + 1..];
        }
    }
    if text.is_empty() {
        return Ok(None);
    }
    parse_mailbox(text, inner).map(Some)
}

/// Characters that cannot appear unquoted in a local part.
fn is_local_special(c: char) -> bool {
    c.is_control() || matches!(c, ' ' | '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '@' | '[' | '\\' | ']')
}

fn parse_mailbox(text: &str, raw: &str) -> Result<Address, AddressError> {
    let (local, rest) = if let Some(q) = text.strip_prefix('"') {
        let mut local = String::new();
        let mut chars = q.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) if !e.is_control() || e == '\t' => local.push(e),
                    Some(_) => return Err(AddressError::BadLocalPart),
                    None => return Err(AddressError::Unbalanced),
                },
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c if c.is_control() && c != '\t' => return Err(AddressError::BadLocalPart),
                c => local.push(c),
            }
        }
        let end = end.ok_or(AddressError::Unbalanced)?;
        (local, &q[end..])
    } else {
        let end = text.find('@').unwrap_or(text.len());
        let local = &text[..end];
        if local.is_empty() || local.chars().any(is_local_special) {
            return Err(AddressError::BadLocalPart);
        }
        (local.to_owned(), &text[end..])
    };
    let domain = if rest.is_empty() {
        String::new()
    } else {
        let d = rest.strip_prefix('@').ok_or(AddressError::Junk)?;
        check_domain(d)?
    };
    Ok(Address { local, domain, raw: raw.to_owned() })
}

/// Validates a domain or address literal; returns it with one trailing dot removed.
fn check_domain(d: &str) -> Result<String, AddressError> {
    if let Some(lit) = d.strip_prefix('[') {
        let inner = lit.strip_suffix(']').ok_or(AddressError::BadLiteral)?;
        let ok = if let Some(v6) = inner.get(..5).filter(|p| p.eq_ignore_ascii_case("IPv6:")).map(|_| &inner[5..]) {
            v6.parse::<Ipv6Addr>().is_ok()
        } else {
            inner.parse::<Ipv4Addr>().is_ok()
        };
        return if ok { Ok(d.to_owned()) } else { Err(AddressError::BadLiteral) };
    }
    let name = d.strip_suffix('.').unwrap_or(d);
    if name.is_empty() || name.len() > 255 {
        return Err(AddressError::BadDomain);
    }
    let mut all_numeric = true;
    for label in name.split('.') {
        let ok_chars = label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii());
        if label.is_empty() || label.len() > 63 || !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::BadDomain);
        }
        all_numeric &= label.bytes().all(|b| b.is_ascii_digit());
    }
    // Like Postfix valid_hostname(): "1.2.3.4" is an IP address written without brackets.
    if all_numeric {
        return Err(AddressError::BadDomain);
    }
    Ok(name.to_owned())
}

/// RFC 5322 dot-atom with RFC 6531 UTF-8 atext.
fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom.chars().all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c))
        })
}

/// One word of a command line, a slice of the line.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    /// A `<` or `"` was not closed (Postfix SMTPD_TOK_ERROR).
    unbalanced: bool,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn tokenize(s: &str) -> Vec<Token<'_>> {
    let b = s.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            return toks;
        }
        let start = i;
        let mut unbalanced = false;
        while i < b.len() && !is_space(b[i]) {
            let c = b[i];
            i += 1;
            match c {
                b'<' => (i, unbalanced) = skip_quoted(b, i, b'>', unbalanced),
                b'"' => (i, unbalanced) = skip_quoted(b, i, b'"', unbalanced),
                b':' => {
                    let word = &b[start..i];
                    if word.eq_ignore_ascii_case(b"from:") || word.eq_ignore_ascii_case(b"to:") {
                        break;
                    }
                }
                b'\\' if i < b.len() => i += 1,
                _ => {}
            }
        }
        // Every stop is on an ASCII byte or the end, except after a backslash escaping a
        // multi-byte character; move forward to a character boundary then.
        while !s.is_char_boundary(i) {
            i += 1;
        }
        toks.push(Token { text: &s[start..i], unbalanced });
    }
}

/// Skips to just past the `last` that closes a `<`/`"` opened before `i`, honouring nested
/// quotes and backslash escapes as Postfix's smtp_quoted() does.
fn skip_quoted(b: &[u8], mut i: usize, last: u8, unbalanced: bool) -> (usize, bool) {
    let mut stack = vec![last];
    while i < b.len() {
        let c = b[i];
        i += 1;
        let wanted = stack.last().copied().unwrap_or(last);
        if c == b'\\' {
            if i >= b.len() {
                break;
            }
            i += 1;
        } else if c == wanted {
            stack.pop();
            if stack.is_empty() {
                return (i, unbalanced);
            }
        } else if c == b'"' {
            stack.push(b'"');
        } else if c == b'<' && wanted == b'>' {
            stack.push(b'>');
        }
    }
    (b.len(), true)
}

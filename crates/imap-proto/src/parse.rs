//! The command parser: one complete command (literals inline, as framed by
//! [`crate::Reader`]) in, a [`Command`] or a [`ParseError`] out.

use crate::types::*;
use crate::{ParseError, utf7};

/// Deepest nesting of parentheses (and NOT/OR chains) in one command.
pub const MAX_DEPTH: usize = 32;
/// Most ranges in one sequence set.
pub const MAX_SET_RANGES: usize = 10_000;

pub(crate) fn is_tag_char(b: u8) -> bool {
    is_astring_char(b) && b != b'+'
}

fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

fn is_list_char(b: u8) -> bool {
    is_astring_char(b) || b == b'%' || b == b'*'
}

type R<T> = Result<T, String>;

struct P<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8, what: &str) -> R<()> {
        if self.eat(b) { Ok(()) } else { Err(format!("Expected {what}")) }
    }

    fn sp(&mut self) -> R<()> {
        self.expect(b' ', "a space")
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err("Too deep nesting".into()) } else { Ok(()) }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    fn atom(&mut self) -> R<&'a [u8]> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() { Err("Expected an atom".into()) } else { Ok(a) }
    }

    fn atom_upper(&mut self) -> R<String> {
        Ok(String::from_utf8_lossy(self.atom()?).to_ascii_uppercase())
    }

    fn number(&mut self) -> R<u32> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() || d.len() > 10 {
            return Err("Expected a number".into());
        }
        std::str::from_utf8(d).unwrap_or("x").parse().map_err(|_| "Number too large".to_string())
    }

    fn number64(&mut self) -> R<u64> {
        let d = self.take_while(|b| b.is_ascii_digit());
        if d.is_empty() || d.len() > 19 {
            return Err("Expected a number".into());
        }
        std::str::from_utf8(d).unwrap_or("x").parse().map_err(|_| "Number too large".to_string())
    }

    fn nz_number(&mut self) -> R<u32> {
        match self.number()? {
            0 => Err("Invalid zero number".into()),
            n => Ok(n),
        }
    }

    fn quoted(&mut self) -> R<Vec<u8>> {
        self.expect(b'"', "a quoted string")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return Err("Unterminated quoted string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            out.push(c);
                            self.i += 1;
                        }
                        _ => return Err("Invalid escape in quoted string".into()),
                    }
                }
                Some(0) => return Err("NUL in quoted string".into()),
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> R<Vec<u8>> {
        self.expect(b'{', "a literal")?;
        let n = self.number64()?;
        self.eat(b'+');
        self.expect(b'}', "'}'")?;
        self.eat(b'\r');
        self.expect(b'\n', "a line end after the literal size")?;
        let n = usize::try_from(n).map_err(|_| "Literal too large".to_string())?;
        if self.s.len() - self.i < n {
            return Err("Literal shorter than announced".into());
        }
        let v = self.s[self.i..self.i + n].to_vec();
        self.i += n;
        Ok(v)
    }

    fn string(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            _ => Err("Expected a string".into()),
        }
    }

    fn astring(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(is_astring_char);
                if a.is_empty() { Err("Expected a string or atom".into()) } else { Ok(a.to_vec()) }
            }
        }
    }

    fn nstring(&mut self) -> R<Option<Vec<u8>>> {
        if self.s[self.i..].len() >= 3 && self.s[self.i..self.i + 3].eq_ignore_ascii_case(b"NIL") {
            self.i += 3;
            return Ok(None);
        }
        self.string().map(Some)
    }

    fn mailbox(&mut self) -> R<String> {
        let v = self.astring()?;
        mailbox_name(v)
    }

    fn list_mailbox(&mut self) -> R<String> {
        let v = match self.peek() {
            Some(b'"' | b'{') => self.string()?,
            _ => {
                let a = self.take_while(is_list_char);
                if a.is_empty() {
                    return Err("Expected a mailbox pattern".into());
                }
                a.to_vec()
            }
        };
        let s = String::from_utf8(v).map_err(|_| "Invalid UTF-8 in mailbox pattern".to_string())?;
        Ok(if s.is_ascii() { s } else { utf7::encode(&s) })
    }

    fn seq_num(&mut self) -> R<SeqNum> {
        if self.eat(b'*') { Ok(SeqNum::Star) } else { self.nz_number().map(SeqNum::Value) }
    }

    fn seq_set(&mut self) -> R<SeqSet> {
        let mut v = Vec::new();
        loop {
            let a = self.seq_num()?;
            let b = if self.eat(b':') { self.seq_num()? } else { a };
            v.push((a, b));
            if v.len() > MAX_SET_RANGES {
                return Err("Too many ranges in sequence set".into());
            }
            if !self.eat(b',') {
                return Ok(SeqSet(v));
            }
        }
    }

    fn flag(&mut self) -> R<String> {
        if self.eat(b'\\') {
            let a = self.atom()?;
            let name = String::from_utf8_lossy(a);
            let canon = ["Seen", "Answered", "Flagged", "Deleted", "Draft", "Recent"]
                .into_iter()
                .find(|f| f.eq_ignore_ascii_case(&name))
                .ok_or_else(|| format!("Invalid system flag \\{name}"))?;
            Ok(format!("\\{canon}"))
        } else {
            Ok(String::from_utf8_lossy(self.atom()?).into_owned())
        }
    }

    fn flag_list(&mut self) -> R<Vec<String>> {
        self.expect(b'(', "'('")?;
        let mut v = Vec::new();
        if self.eat(b')') {
            return Ok(v);
        }
        loop {
            v.push(self.flag()?);
            if self.eat(b')') {
                return Ok(v);
            }
            self.sp()?;
        }
    }

    fn date(&mut self) -> R<Date> {
        let quoted = self.eat(b'"');
        let d = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-');
        let d = std::str::from_utf8(d).unwrap_or("");
        if quoted {
            self.expect(b'"', "'\"'")?;
        }
        parse_date(d).ok_or_else(|| "Invalid date".to_string())
    }

    fn date_time(&mut self) -> R<DateTime> {
        let v = self.quoted()?;
        let s = std::str::from_utf8(&v).map_err(|_| "Invalid date-time".to_string())?;
        parse_date_time(s).ok_or_else(|| "Invalid date-time".to_string())
    }

    fn section(&mut self) -> R<Section> {
        self.expect(b'[', "'['")?;
        let mut sec = Section::default();
        if self.eat(b']') {
            return Ok(sec);
        }
        loop {
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                sec.part.push(self.nz_number()?);
                if sec.part.len() > MAX_DEPTH {
                    return Err("Section too deep".into());
                }
                if self.eat(b'.') {
                    continue;
                }
                break;
            }
            let word = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.');
            let word = String::from_utf8_lossy(word).to_ascii_uppercase();
            sec.text = Some(match word.as_str() {
                "HEADER" => SectionText::Header,
                "TEXT" => SectionText::Text,
                "MIME" if !sec.part.is_empty() => SectionText::Mime,
                "HEADER.FIELDS" | "HEADER.FIELDS.NOT" => {
                    self.sp()?;
                    self.expect(b'(', "'('")?;
                    let mut names = Vec::new();
                    loop {
                        let n = self.astring()?;
                        names.push(String::from_utf8(n).map_err(|_| "Invalid header name".to_string())?);
                        if self.eat(b')') {
                            break;
                        }
                        self.sp()?;
                    }
                    if word == "HEADER.FIELDS" {
                        SectionText::HeaderFields(names)
                    } else {
                        SectionText::HeaderFieldsNot(names)
                    }
                }
                _ => return Err("Invalid section".into()),
            });
            break;
        }
        self.expect(b']', "']'")?;
        Ok(sec)
    }

    fn fetch_att(&mut self) -> R<FetchAttr> {
        let word = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'8');
        let word = String::from_utf8_lossy(word).to_ascii_uppercase();
        Ok(match word.as_str() {
            "ENVELOPE" => FetchAttr::Envelope,
            "FLAGS" => FetchAttr::Flags,
            "INTERNALDATE" => FetchAttr::InternalDate,
            "RFC822" => FetchAttr::Rfc822,
            "RFC822.HEADER" => FetchAttr::Rfc822Header,
            "RFC822.SIZE" => FetchAttr::Rfc822Size,
            "RFC822.TEXT" => FetchAttr::Rfc822Text,
            "BODYSTRUCTURE" => FetchAttr::BodyStructure,
            "UID" => FetchAttr::Uid,
            "BODY" | "BODY.PEEK" => {
                if self.peek() != Some(b'[') {
                    if word == "BODY" {
                        return Ok(FetchAttr::Body);
                    }
                    return Err("Expected a section after BODY.PEEK".into());
                }
                let section = self.section()?;
                let partial = if self.eat(b'<') {
                    let a = self.number()?;
                    self.expect(b'.', "'.'")?;
                    let b = self.nz_number()?;
                    self.expect(b'>', "'>'")?;
                    Some((a, b))
                } else {
                    None
                };
                FetchAttr::BodySection { peek: word == "BODY.PEEK", section, partial }
            }
            _ => return Err(format!("Unknown FETCH attribute {word}")),
        })
    }

    fn fetch_atts(&mut self) -> R<Vec<FetchAttr>> {
        if self.eat(b'(') {
            let mut v = Vec::new();
            loop {
                v.push(self.fetch_att()?);
                if v.len() > 100 {
                    return Err("Too many FETCH attributes".into());
                }
                if self.eat(b')') {
                    return Ok(v);
                }
                self.sp()?;
            }
        }
        let save = self.i;
        let w = self.take_while(|b| b.is_ascii_alphabetic());
        match String::from_utf8_lossy(w).to_ascii_uppercase().as_str() {
            "ALL" => Ok(vec![FetchAttr::Flags, FetchAttr::InternalDate, FetchAttr::Rfc822Size, FetchAttr::Envelope]),
            "FAST" => Ok(vec![FetchAttr::Flags, FetchAttr::InternalDate, FetchAttr::Rfc822Size]),
            "FULL" => Ok(vec![
                FetchAttr::Flags,
                FetchAttr::InternalDate,
                FetchAttr::Rfc822Size,
                FetchAttr::Envelope,
                FetchAttr::Body,
            ]),
            _ => {
                self.i = save;
                Ok(vec![self.fetch_att()?])
            }
        }
    }

    fn search_key(&mut self) -> R<SearchKey> {
        if self.eat(b'(') {
            self.enter()?;
            let mut v = Vec::new();
            loop {
                v.push(self.search_key()?);
                if self.eat(b')') {
                    break;
                }
                self.sp()?;
            }
            self.leave();
            return Ok(SearchKey::And(v));
        }
        if self.peek().is_some_and(|b| b.is_ascii_digit() || b == b'*') {
            return Ok(SearchKey::SeqSet(self.seq_set()?));
        }
        let word = self.atom_upper()?;
        let s = |p: &mut P<'_>| -> R<String> {
            p.sp()?;
            let v = p.astring()?;
            String::from_utf8(v).map_err(|_| "Invalid UTF-8 in search string".to_string())
        };
        let d = |p: &mut P<'_>| -> R<Date> {
            p.sp()?;
            p.date()
        };
        use SearchKey as K;
        Ok(match word.as_str() {
            "ALL" => K::All,
            "ANSWERED" => K::Answered,
            "BCC" => K::Bcc(s(self)?),
            "BEFORE" => K::Before(d(self)?),
            "BODY" => K::Body(s(self)?),
            "CC" => K::Cc(s(self)?),
            "DELETED" => K::Deleted,
            "DRAFT" => K::Draft,
            "FLAGGED" => K::Flagged,
            "FROM" => K::From(s(self)?),
            "HEADER" => {
                let h = s(self)?;
                K::Header(h, s(self)?)
            }
            "KEYWORD" => {
                self.sp()?;
                K::Keyword(self.flag()?)
            }
            "LARGER" => {
                self.sp()?;
                K::Larger(self.number64()?)
            }
            "NEW" => K::New,
            "NOT" => {
                self.sp()?;
                self.enter()?;
                let k = self.search_key()?;
                self.leave();
                K::Not(Box::new(k))
            }
            "OLD" => K::Old,
            "ON" => K::On(d(self)?),
            "OR" => {
                self.enter()?;
                self.sp()?;
                let a = self.search_key()?;
                self.sp()?;
                let b = self.search_key()?;
                self.leave();
                K::Or(Box::new(a), Box::new(b))
            }
            "RECENT" => K::Recent,
            "SEEN" => K::Seen,
            "SENTBEFORE" => K::SentBefore(d(self)?),
            "SENTON" => K::SentOn(d(self)?),
            "SENTSINCE" => K::SentSince(d(self)?),
            "SINCE" => K::Since(d(self)?),
            "SMALLER" => {
                self.sp()?;
                K::Smaller(self.number64()?)
            }
            "SUBJECT" => K::Subject(s(self)?),
            "TEXT" => K::Text(s(self)?),
            "TO" => K::To(s(self)?),
            "UID" => {
                self.sp()?;
                K::Uid(self.seq_set()?)
            }
            "UNANSWERED" => K::Unanswered,
            "UNDELETED" => K::Undeleted,
            "UNDRAFT" => K::Undraft,
            "UNFLAGGED" => K::Unflagged,
            "UNKEYWORD" => {
                self.sp()?;
                K::Unkeyword(self.flag()?)
            }
            "UNSEEN" => K::Unseen,
            w => return Err(format!("Unknown search key {w}")),
        })
    }

    fn search(&mut self, uid: bool) -> R<CommandBody> {
        self.sp()?;
        let mut charset = None;
        let save = self.i;
        if self.atom_upper().ok().as_deref() == Some("CHARSET") {
            self.sp()?;
            let cs = String::from_utf8_lossy(&self.astring()?).to_ascii_uppercase();
            charset = Some(cs);
            self.sp()?;
        } else {
            self.i = save;
        }
        let mut keys = Vec::new();
        loop {
            keys.push(self.search_key()?);
            if self.at_end() {
                break;
            }
            self.sp()?;
        }
        let key = if keys.len() == 1 { keys.pop().unwrap_or(SearchKey::All) } else { SearchKey::And(keys) };
        Ok(CommandBody::Search { uid, charset, key })
    }

    fn store(&mut self, uid: bool) -> R<CommandBody> {
        self.sp()?;
        let set = self.seq_set()?;
        self.sp()?;
        let item = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'+' || b == b'-');
        let item = String::from_utf8_lossy(item).to_ascii_uppercase();
        let (mode, rest) = match item.as_bytes().first() {
            Some(b'+') => (StoreMode::Add, &item[1..]),
            Some(b'-') => (StoreMode::Remove, &item[1..]),
            _ => (StoreMode::Replace, &item[..]),
        };
        let silent = match rest {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return Err("Invalid STORE item".into()),
        };
        self.sp()?;
        let flags = if self.peek() == Some(b'(') {
            self.flag_list()?
        } else {
            let mut v = vec![self.flag()?];
            while self.eat(b' ') {
                v.push(self.flag()?);
            }
            v
        };
        Ok(CommandBody::Store { uid, set, mode, silent, flags })
    }

    fn command(&mut self) -> R<CommandBody> {
        let name = self.atom_upper()?;
        use CommandBody as C;
        Ok(match name.as_str() {
            "CAPABILITY" => C::Capability,
            "NOOP" => C::Noop,
            "LOGOUT" => C::Logout,
            "STARTTLS" => C::StartTls,
            "CHECK" => C::Check,
            "CLOSE" => C::Close,
            "UNSELECT" => C::Unselect,
            "EXPUNGE" => C::Expunge,
            "IDLE" => C::Idle,
            "NAMESPACE" => C::Namespace,
            "AUTHENTICATE" => {
                self.sp()?;
                let mechanism = self.atom_upper()?;
                let initial = if self.eat(b' ') {
                    let ir = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
                    if ir.is_empty() {
                        return Err("Invalid initial response".into());
                    }
                    Some(String::from_utf8_lossy(ir).into_owned())
                } else {
                    None
                };
                C::Authenticate { mechanism, initial }
            }
            "LOGIN" => {
                self.sp()?;
                let user = self.astring()?;
                self.sp()?;
                let password = self.astring()?;
                C::Login { user, password }
            }
            "SELECT" | "EXAMINE" | "CREATE" | "DELETE" | "SUBSCRIBE" | "UNSUBSCRIBE" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                match name.as_str() {
                    "SELECT" => C::Select { mailbox },
                    "EXAMINE" => C::Examine { mailbox },
                    "CREATE" => C::Create { mailbox },
                    "DELETE" => C::Delete { mailbox },
                    "SUBSCRIBE" => C::Subscribe { mailbox },
                    _ => C::Unsubscribe { mailbox },
                }
            }
            "RENAME" => {
                self.sp()?;
                let from = self.mailbox()?;
                self.sp()?;
                let to = self.mailbox()?;
                C::Rename { from, to }
            }
            "LIST" | "LSUB" => {
                self.sp()?;
                let reference = mailbox_name(self.astring()?)?;
                self.sp()?;
                let pattern = self.list_mailbox()?;
                if name == "LIST" { C::List { reference, pattern } } else { C::Lsub { reference, pattern } }
            }
            "STATUS" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                self.sp()?;
                self.expect(b'(', "'('")?;
                let mut items = Vec::new();
                loop {
                    items.push(match self.atom_upper()?.as_str() {
                        "MESSAGES" => StatusItem::Messages,
                        "RECENT" => StatusItem::Recent,
                        "UIDNEXT" => StatusItem::UidNext,
                        "UIDVALIDITY" => StatusItem::UidValidity,
                        "UNSEEN" => StatusItem::Unseen,
                        w => return Err(format!("Unknown STATUS item {w}")),
                    });
                    if self.eat(b')') {
                        break;
                    }
                    self.sp()?;
                }
                C::Status { mailbox, items }
            }
            "APPEND" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                self.sp()?;
                let flags = if self.peek() == Some(b'(') {
                    let f = self.flag_list()?;
                    self.sp()?;
                    f
                } else {
                    Vec::new()
                };
                let date = if self.peek() == Some(b'"') {
                    let d = self.date_time()?;
                    self.sp()?;
                    Some(d)
                } else {
                    None
                };
                let message = self.literal()?;
                C::Append { mailbox, flags, date, message }
            }
            "SEARCH" => self.search(false)?,
            "FETCH" => {
                self.sp()?;
                let set = self.seq_set()?;
                self.sp()?;
                C::Fetch { uid: false, set, attrs: self.fetch_atts()? }
            }
            "STORE" => self.store(false)?,
            "COPY" | "MOVE" => {
                self.sp()?;
                let set = self.seq_set()?;
                self.sp()?;
                let mailbox = self.mailbox()?;
                if name == "COPY" { C::Copy { uid: false, set, mailbox } } else { C::Move { uid: false, set, mailbox } }
            }
            "UID" => {
                self.sp()?;
                let sub = self.atom_upper()?;
                match sub.as_str() {
                    "FETCH" => {
                        self.sp()?;
                        let set = self.seq_set()?;
                        self.sp()?;
                        C::Fetch { uid: true, set, attrs: self.fetch_atts()? }
                    }
                    "STORE" => self.store(true)?,
                    "SEARCH" => self.search(true)?,
                    "COPY" | "MOVE" => {
                        self.sp()?;
                        let set = self.seq_set()?;
                        self.sp()?;
                        let mailbox = self.mailbox()?;
                        if sub == "COPY" {
                            C::Copy { uid: true, set, mailbox }
                        } else {
                            C::Move { uid: true, set, mailbox }
                        }
                    }
                    "EXPUNGE" => {
                        self.sp()?;
                        C::UidExpunge(self.seq_set()?)
                    }
                    w => return Err(format!("Unknown UID command {w}")),
                }
            }
            "ID" => {
                self.sp()?;
                if self.eat(b'(') {
                    let mut v = Vec::new();
                    if !self.eat(b')') {
                        loop {
                            let k = self.string()?;
                            self.sp()?;
                            let val = self.nstring()?;
                            v.push((
                                String::from_utf8_lossy(&k).into_owned(),
                                val.map(|x| String::from_utf8_lossy(&x).into_owned()),
                            ));
                            if v.len() > 30 {
                                return Err("Too many ID fields".into());
                            }
                            if self.eat(b')') {
                                break;
                            }
                            self.sp()?;
                        }
                    }
                    C::Id(Some(v))
                } else {
                    let w = self.atom_upper()?;
                    if w != "NIL" {
                        return Err("Expected an ID list or NIL".into());
                    }
                    C::Id(None)
                }
            }
            "ENABLE" => {
                let mut v = Vec::new();
                while self.eat(b' ') {
                    v.push(self.atom_upper()?);
                }
                if v.is_empty() {
                    return Err("Expected capabilities to enable".into());
                }
                C::Enable(v)
            }
            w => return Err(format!("Unknown command {}", printable(w))),
        })
    }
}

fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// A mailbox name from the wire: `INBOX` in any case becomes `INBOX`; UTF-8 (RFC 6855
/// clients, or careless ones) becomes modified UTF-7, the form names are kept in.
pub fn mailbox_name(v: Vec<u8>) -> Result<String, String> {
    let s = String::from_utf8(v).map_err(|_| "Invalid UTF-8 in mailbox name".to_string())?;
    if s.eq_ignore_ascii_case("INBOX") {
        return Ok("INBOX".into());
    }
    let s = if s.is_ascii() { s } else { utf7::encode(&s) };
    if s.len() >= 6 && s[..6].eq_ignore_ascii_case("INBOX/") {
        return Ok(format!("INBOX{}", &s[5..]));
    }
    Ok(s)
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// `1-Feb-1994` / `01-Feb-1994`.
pub fn parse_date(s: &str) -> Option<Date> {
    let mut it = s.trim().split('-');
    let day: u32 = it.next()?.trim().parse().ok()?;
    let mon = it.next()?;
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    let y = it.next()?;
    if y.len() != 4 || it.next().is_some() {
        return None;
    }
    let year: i32 = y.parse().ok()?;
    if !(1..=31).contains(&day) {
        return None;
    }
    Some(Date { year, month, day })
}

/// `"17-Jul-1996 02:44:25 -0700"` (without the quotes).
pub fn parse_date_time(s: &str) -> Option<DateTime> {
    let mut parts = s.split(' ').filter(|p| !p.is_empty());
    let date = parse_date(parts.next()?)?;
    let time = parts.next()?;
    let zone = parts.next()?;
    let mut t = time.split(':');
    let h: i64 = t.next()?.parse().ok()?;
    let m: i64 = t.next()?.parse().ok()?;
    let sec: i64 = t.next()?.parse().ok()?;
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if zone.len() != 5 || !zone[1..].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let zh: i32 = zone[1..3].parse().ok()?;
    let zm: i32 = zone[3..5].parse().ok()?;
    let offset = sign * (zh * 60 + zm);
    let unix = date.days() * 86400 + h * 3600 + m * 60 + sec - offset as i64 * 60;
    Some(DateTime { unix, offset_minutes: offset })
}

/// Parses one complete command, as framed by the reader: literals inline, without the line
/// end that closes the command.
pub fn parse_command(input: &[u8]) -> Result<Command, ParseError> {
    let mut p = P { s: input, i: 0, depth: 0 };
    let tag = p.take_while(is_tag_char);
    if tag.is_empty() || tag.len() > 100 {
        return Err(ParseError { tag: None, message: "Error in IMAP command received by server.".into() });
    }
    let tag = String::from_utf8_lossy(tag).into_owned();
    let err = |m: String| ParseError { tag: Some(tag.clone()), message: format!("Error in IMAP command: {m}") };
    if !p.eat(b' ') {
        return Err(err("Expected a command after the tag".into()));
    }
    let body = p.command().map_err(&err)?;
    if !p.at_end() {
        return Err(err("Extra arguments".into()));
    }
    Ok(Command { tag, body })
}

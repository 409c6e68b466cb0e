//! The MIME structure of a stored message (byte ranges of headers and bodies, nested parts)
//! and what IMAP computes from it: ENVELOPE, BODY and BODYSTRUCTURE, and the bytes of a
//! `BODY[section]`. Header values are decoded by mail-parser (addresses, dates); the
//! structure is split here so that every part keeps its exact byte range in the message,
//! which section fetches need.

use mail_parser::{Address, MessageParser};
use rpost_imap_proto::write;
use rpost_imap_proto::{Section, SectionText};

/// Deepest MIME nesting followed (deeper parts are treated as opaque leaves).
const MAX_NESTING: usize = 20;
/// Most parts in one message.
const MAX_PARTS: usize = 5000;

/// One MIME part (the message itself is the root part).
#[derive(Debug, Clone)]
pub struct Part {
    /// The header block, blank line included.
    pub header: (usize, usize),
    pub body: (usize, usize),
    pub ctype: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
    pub id: Option<String>,
    pub description: Option<String>,
    pub encoding: Option<String>,
    pub md5: Option<String>,
    pub disposition: Option<(String, Vec<(String, String)>)>,
    pub language: Option<String>,
    pub location: Option<String>,
    pub lines: usize,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Leaf,
    Multipart(Vec<Part>),
    /// message/rfc822: the encapsulated message.
    Message(Box<Part>),
}

/// Header fields of a header block: (name, raw value unfolded, without the line end).
pub fn header_fields(block: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(last) = out.last_mut() {
                last.1.push_str(&String::from_utf8_lossy(line));
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
            let value = String::from_utf8_lossy(&line[colon + 1..]).trim_start().to_string();
            out.push((name, value));
        }
    }
    out
}

/// `text/plain; charset="x"` -> ("text", "plain", [("charset", "x")]).
fn content_type(v: &str) -> (String, String, Vec<(String, String)>) {
    let (main, params) = split_params(v);
    let (t, s) = main.split_once('/').unwrap_or(("", ""));
    (t.trim().to_ascii_lowercase(), s.trim().to_ascii_lowercase(), params)
}

fn split_params(v: &str) -> (String, Vec<(String, String)>) {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut esc = false;
    for c in v.chars() {
        if esc {
            cur.push(c);
            esc = false;
            continue;
        }
        match c {
            '\\' if quoted => esc = true,
            '"' => quoted = !quoted,
            ';' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    let main = parts.first().map(|s| s.trim().to_string()).unwrap_or_default();
    let params = parts
        .iter()
        .skip(1)
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let k = k.trim();
            if k.is_empty() {
                return None;
            }
            Some((k.to_ascii_lowercase(), v.trim().to_string()))
        })
        .take(100)
        .collect();
    (main, params)
}

fn line_end(raw: &[u8], from: usize, end: usize) -> usize {
    raw[from..end].iter().position(|&b| b == b'\n').map_or(end, |p| from + p)
}

/// Parses the part at `start..end`.
pub fn parse(raw: &[u8]) -> Part {
    let mut count = 0;
    parse_part(raw, 0, raw.len(), false, 0, &mut count)
}

fn parse_part(raw: &[u8], start: usize, end: usize, digest: bool, depth: usize, count: &mut usize) -> Part {
    *count += 1;
    // The header ends at the first empty line.
    let mut pos = start;
    let mut body_start = end;
    while pos < end {
        let le = line_end(raw, pos, end);
        let line = &raw[pos..le];
        if line.is_empty() || line == b"\r" {
            body_start = (le + 1).min(end);
            break;
        }
        pos = le + 1;
    }
    let header = (start, body_start);
    let fields = header_fields(&raw[header.0..header.1]);
    let get = |n: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let (mut ctype, mut subtype, mut params) = match get("Content-Type") {
        Some(v) => content_type(&v),
        None => (String::new(), String::new(), Vec::new()),
    };
    if ctype.is_empty() || subtype.is_empty() {
        if digest {
            (ctype, subtype, params) = ("message".into(), "rfc822".into(), Vec::new());
        } else {
            (ctype, subtype) = ("text".into(), "plain".into());
            if !params.iter().any(|(k, _)| k == "charset") {
                params = vec![("charset".into(), "us-ascii".into())];
            }
        }
    }
    let disposition = get("Content-Disposition").map(|v| {
        let (main, p) = split_params(&v);
        (main.to_ascii_lowercase(), p)
    });
    let body = (body_start, end);
    // Text lines: a last line without its line end counts too.
    let b = &raw[body.0..body.1];
    let lines = b.iter().filter(|&&c| c == b'\n').count() + usize::from(!b.is_empty() && !b.ends_with(b"\n"));
    let mut part = Part {
        header,
        body,
        ctype,
        subtype,
        params,
        id: get("Content-ID"),
        description: get("Content-Description"),
        encoding: get("Content-Transfer-Encoding").map(|e| e.trim().to_string()),
        md5: get("Content-MD5"),
        disposition,
        language: get("Content-Language"),
        location: get("Content-Location"),
        lines,
        kind: Kind::Leaf,
    };
    if depth >= MAX_NESTING || *count > MAX_PARTS {
        return part;
    }
    if part.ctype == "multipart" {
        let boundary = part.params.iter().find(|(k, _)| k == "boundary").map(|(_, v)| v.clone());
        if let Some(b) = boundary.filter(|b| !b.is_empty()) {
            let digest = part.subtype == "digest";
            let mut children = Vec::new();
            let delim = format!("--{b}");
            let mut pos = body.0;
            let mut part_start: Option<usize> = None;
            while pos < end {
                let le = line_end(raw, pos, end);
                let line = &raw[pos..le];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(rest) = line.strip_prefix(delim.as_bytes()) {
                    let close = rest.starts_with(b"--");
                    if close || rest.iter().all(|b| b.is_ascii_whitespace()) {
                        if let Some(s) = part_start.take() {
                            let mut pe = pos;
                            if pe > s && raw[pe - 1] == b'\n' {
                                pe -= 1;
                                if pe > s && raw[pe - 1] == b'\r' {
                                    pe -= 1;
                                }
                            }
                            children.push(parse_part(raw, s, pe.max(s), digest, depth + 1, count));
                        }
                        if close {
                            break;
                        }
                        part_start = Some((le + 1).min(end));
                    }
                }
                pos = le + 1;
            }
            if let Some(s) = part_start {
                children.push(parse_part(raw, s, end, digest, depth + 1, count));
            }
            if !children.is_empty() {
                part.kind = Kind::Multipart(children);
            }
        }
    } else if part.ctype == "message" && part.subtype == "rfc822" {
        let enc = part.encoding.as_deref().unwrap_or("7bit").to_ascii_lowercase();
        if enc == "7bit" || enc == "8bit" || enc == "binary" {
            part.kind = Kind::Message(Box::new(parse_part(raw, body.0, end, false, depth + 1, count)));
        }
    }
    part
}

/// RFC 2047 encoding of a decoded name with non-ASCII characters (keeps ENVELOPE ASCII).
fn mime_word(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    use base64::Engine;
    format!("=?utf-8?b?{}?=", base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
}

fn addr_list(out: &mut Vec<u8>, a: Option<&Address<'_>>) {
    let Some(a) = a else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let one = |out: &mut Vec<u8>, name: Option<&str>, addr: Option<&str>| {
        out.push(b'(');
        write::nstring(out, name.map(mime_word).as_deref().map(str::as_bytes));
        out.extend_from_slice(b" NIL ");
        let addr = addr.unwrap_or("");
        let (local, host) = match addr.rsplit_once('@') {
            Some((l, h)) => (l, Some(h)),
            None => (addr, None),
        };
        write::nstring(out, Some(local.as_bytes()));
        out.push(b' ');
        write::nstring(out, host.map(str::as_bytes));
        out.push(b')');
    };
    let mut any = false;
    let start = out.len();
    out.push(b'(');
    match a {
        Address::List(list) => {
            for x in list {
                one(out, x.name.as_deref(), x.address.as_deref());
                any = true;
            }
        }
        Address::Group(groups) => {
            for g in groups {
                if let Some(name) = &g.name {
                    out.extend_from_slice(b"(NIL NIL ");
                    write::string(out, name.as_bytes());
                    out.extend_from_slice(b" NIL)");
                    for x in &g.addresses {
                        one(out, x.name.as_deref(), x.address.as_deref());
                    }
                    out.extend_from_slice(b"(NIL NIL NIL NIL)");
                } else {
                    for x in &g.addresses {
                        one(out, x.name.as_deref(), x.address.as_deref());
                    }
                }
                any = true;
            }
        }
    }
    out.push(b')');
    if !any {
        out.truncate(start);
        out.extend_from_slice(b"NIL");
    }
}

/// The ENVELOPE of the message whose header block is `hdr`.
pub fn envelope(out: &mut Vec<u8>, hdr: &[u8]) {
    let fields = header_fields(hdr);
    let get = |n: &str| fields.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.trim_end().to_string());
    let parsed = MessageParser::default().parse_headers(hdr);
    let m = parsed.as_ref();
    out.push(b'(');
    write::nstring(out, get("Date").as_deref().map(str::as_bytes));
    out.push(b' ');
    write::nstring(out, get("Subject").as_deref().map(str::as_bytes));
    let from = m.and_then(|m| m.from());
    out.push(b' ');
    addr_list(out, from);
    out.push(b' ');
    addr_list(out, m.and_then(|m| m.sender()).or(from));
    out.push(b' ');
    addr_list(out, m.and_then(|m| m.reply_to()).or(from));
    out.push(b' ');
    addr_list(out, m.and_then(|m| m.to()));
    out.push(b' ');
    addr_list(out, m.and_then(|m| m.cc()));
    out.push(b' ');
    addr_list(out, m.and_then(|m| m.bcc()));
    out.push(b' ');
    write::nstring(out, get("In-Reply-To").as_deref().map(str::as_bytes));
    out.push(b' ');
    write::nstring(out, get("Message-ID").as_deref().map(str::as_bytes));
    out.push(b')');
}

fn params_list(out: &mut Vec<u8>, params: &[(String, String)]) {
    if params.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        write::string(out, k.as_bytes());
        out.push(b' ');
        write::string(out, v.as_bytes());
    }
    out.push(b')');
}

fn nstr(out: &mut Vec<u8>, s: &Option<String>) {
    write::nstring(out, s.as_deref().map(str::as_bytes));
}

/// BODYSTRUCTURE (`ext` = true) or BODY of a part.
pub fn body_structure(out: &mut Vec<u8>, raw: &[u8], p: &Part, ext: bool) {
    out.push(b'(');
    match &p.kind {
        Kind::Multipart(children) => {
            for c in children {
                body_structure(out, raw, c, ext);
            }
            out.push(b' ');
            write::string(out, p.subtype.as_bytes());
            if ext {
                out.push(b' ');
                params_list(out, &p.params);
                extension_tail(out, p);
            }
        }
        kind => {
            write::string(out, p.ctype.as_bytes());
            out.push(b' ');
            write::string(out, p.subtype.as_bytes());
            out.push(b' ');
            params_list(out, &p.params);
            out.push(b' ');
            nstr(out, &p.id);
            out.push(b' ');
            nstr(out, &p.description);
            out.push(b' ');
            write::string(out, p.encoding.as_deref().unwrap_or("7bit").as_bytes());
            out.extend_from_slice(format!(" {}", p.body.1 - p.body.0).as_bytes());
            if let Kind::Message(inner) = kind {
                out.push(b' ');
                envelope(out, &raw[inner.header.0..inner.header.1]);
                out.push(b' ');
                body_structure(out, raw, inner, ext);
                out.extend_from_slice(format!(" {}", p.lines).as_bytes());
            } else if p.ctype == "text" {
                out.extend_from_slice(format!(" {}", p.lines).as_bytes());
            }
            if ext {
                out.push(b' ');
                nstr(out, &p.md5);
                extension_tail(out, p);
            }
        }
    }
    out.push(b')');
}

fn extension_tail(out: &mut Vec<u8>, p: &Part) {
    out.push(b' ');
    match &p.disposition {
        Some((d, params)) => {
            out.push(b'(');
            write::string(out, d.as_bytes());
            out.push(b' ');
            params_list(out, params);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstr(out, &p.language);
    out.push(b' ');
    nstr(out, &p.location);
}

/// The part a section's part numbers name, `None` when there is no such part.
fn resolve<'a>(root: &'a Part, numbers: &[u32]) -> Option<&'a Part> {
    let mut cur = root;
    for (i, &n) in numbers.iter().enumerate() {
        let container = match (&cur.kind, i) {
            (Kind::Message(inner), i) if i > 0 => inner,
            _ => cur,
        };
        cur = match &container.kind {
            Kind::Multipart(children) => children.get((n as usize).checked_sub(1)?)?,
            _ if n == 1 => container,
            _ => return None,
        };
    }
    Some(cur)
}

/// Header lines of `block` whose names are (`not` = false) or are not in `names`, with the
/// blank line that ends a header.
fn filter_header(block: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in block.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if line[0] != b' ' && line[0] != b'\t' {
            let name =
                line.iter().position(|&b| b == b':').map(|c| String::from_utf8_lossy(&line[..c]).trim().to_string());
            keep = match name {
                Some(n) => names.iter().any(|x| x.eq_ignore_ascii_case(&n)) != not,
                None => false,
            };
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The bytes of `BODY[section]` (before any partial range); `None` for a part that does not
/// exist (IMAP then returns an empty string, as Dovecot does).
pub fn section_bytes(raw: &[u8], root: &Part, s: &Section) -> Option<Vec<u8>> {
    let part = resolve(root, &s.part)?;
    // HEADER/TEXT of a part name the encapsulated message's.
    let msg: &Part = if s.part.is_empty() {
        root
    } else {
        match &part.kind {
            Kind::Message(inner) => inner,
            _ => part,
        }
    };
    Some(match &s.text {
        None if s.part.is_empty() => raw.to_vec(),
        None => raw[part.body.0..part.body.1].to_vec(),
        Some(SectionText::Mime) => raw[part.header.0..part.header.1].to_vec(),
        Some(SectionText::Header) => raw[msg.header.0..msg.header.1].to_vec(),
        Some(SectionText::Text) => raw[msg.body.0..msg.body.1].to_vec(),
        Some(SectionText::HeaderFields(names)) => filter_header(&raw[msg.header.0..msg.header.1], names, false),
        Some(SectionText::HeaderFieldsNot(names)) => filter_header(&raw[msg.header.0..msg.header.1], names, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &str = "From: Alice <alice@example.test>\r\nTo: bob@example.test, \"Carol C\" <carol@example.test>\r\n\
Subject: Hello\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nbody one\r\nline two\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\n\
Subject: inner\r\nFrom: x@y.test\r\n\r\ninner body\r\n--XX--\r\nepilogue\r\n";

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn structure_and_sections() {
        let raw = MULTI.as_bytes();
        let root = parse(raw);
        let mut bs = Vec::new();
        body_structure(&mut bs, raw, &root, true);
        assert_eq!(
            s(bs),
            "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 18 2 NIL NIL NIL NIL)\
(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 44 (NIL \"inner\" ((NIL NIL \"x\" \"y.test\")) ((NIL NIL \"x\" \"y.test\")) \
((NIL NIL \"x\" \"y.test\")) NIL NIL NIL NIL NIL) (\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 1 NIL NIL NIL NIL) 4 \
NIL NIL NIL NIL) \"mixed\" (\"boundary\" \"XX\") NIL NIL NIL)"
        );
        let sec = |part: Vec<u32>, text: Option<SectionText>| {
            s(section_bytes(raw, &root, &Section { part, text }).unwrap_or_default())
        };
        assert_eq!(sec(vec![1], None), "body one\r\nline two");
        assert_eq!(sec(vec![2, 1], None), "inner body");
        assert_eq!(sec(vec![2], Some(SectionText::Header)), "Subject: inner\r\nFrom: x@y.test\r\n\r\n");
        assert_eq!(sec(vec![1], Some(SectionText::Mime)), "Content-Type: text/plain; charset=utf-8\r\n\r\n");
        assert_eq!(
            sec(vec![], Some(SectionText::HeaderFields(vec!["subject".into(), "FROM".into()]))),
            "From: Alice <alice@example.test>\r\nSubject: Hello\r\n\r\n"
        );
        assert!(section_bytes(raw, &root, &Section { part: vec![3], text: None }).is_none());
        let mut env = Vec::new();
        envelope(&mut env, &raw[root.header.0..root.header.1]);
        assert_eq!(
            s(env),
            "(\"Mon, 1 Jan 2024 10:00:00 +0000\" \"Hello\" ((\"Alice\" NIL \"alice\" \"example.test\")) \
((\"Alice\" NIL \"alice\" \"example.test\")) ((\"Alice\" NIL \"alice\" \"example.test\")) \
((NIL NIL \"bob\" \"example.test\")(\"Carol C\" NIL \"carol\" \"example.test\")) NIL NIL NIL \"<m1@example.test>\")"
        );
    }

    #[test]
    fn plain_message_has_part_one() {
        let raw = b"Subject: x\r\n\r\nhello\r\n";
        let root = parse(raw);
        let b = section_bytes(raw, &root, &Section { part: vec![1], text: None }).unwrap();
        assert_eq!(b, b"hello\r\n");
        let mut bs = Vec::new();
        body_structure(&mut bs, raw, &root, false);
        assert_eq!(s(bs), "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 1)");
    }

    #[test]
    fn hostile_nesting_stops() {
        let mut raw = String::new();
        for i in 0..100 {
            raw.push_str(&format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"));
        }
        let root = parse(raw.as_bytes());
        let mut bs = Vec::new();
        body_structure(&mut bs, raw.as_bytes(), &root, true);
        assert!(!bs.is_empty());
    }
}

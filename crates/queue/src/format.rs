//! The queue file format, version 1.
//!
//! ```text
//! file     = magic *record content-start content end
//! magic    = "RPOSTQ 1" LF                  ; other digits: another version
//! record   = type:u8 length:u32be payload   ; length <= MAX_RECORD_LEN
//! content-start = 'M' 00 00 00 00
//! content  = the message bytes, verbatim; its length is implied by the
//!            file size and repeated in END
//! end      = 'Z' 00 00 00 10 content_len:u64be nrcpt:u32be crc32:u32be
//! ```
//!
//! Envelope records (any order, before content-start; strings are UTF-8,
//! inside a record each is u32be length + bytes):
//!
//! | type | payload | |
//! |---|---|---|
//! | `S` | sender (rest of payload) | exactly once |
//! | `T` | seconds:u64be nanos:u32be since the epoch | exactly once |
//! | `C` | port:u16be name addr helo protocol has_sasl:u8 (sasl_username if has_sasl = 1) | exactly once |
//! | `B` | 1 = 7BIT, 2 = 8BITMIME, 3 = BINARYMIME | optional |
//! | `U` | 1 (SMTPUTF8) | optional |
//! | `R` | 1 = FULL, 2 = HDRS | optional |
//! | `I` | ENVID (rest of payload) | optional |
//! | `A` | name value | up to [`MAX_ATTRS`] |
//! | `r` | status:u8 notify:u8 flags:u8 address original (orcpt if flags bit 0) | up to [`MAX_RECIPIENTS`] |
//!
//! The status byte is the first payload byte of an `r` record, so its file
//! offset is fixed when the file is written and it can be rewritten in
//! place. Its values (see [`status_byte`]) differ pairwise in at least two
//! bits, so a single flipped bit there is still detected although the CRC
//! counts status bytes as zero. `notify` is 0xFF for "not given", else the
//! NOTIFY bits (at most 0x0F); flags bit 0 says an ORCPT follows.
//!
//! The CRC32 (IEEE, as crc32fast computes it) covers every byte before the
//! END record, with status bytes taken as 0. Unknown record types are an
//! error: a new record type means a new format version.

use std::io::{self, Read};
use std::time::{Duration, UNIX_EPOCH};

use crate::QueueError;
use crate::envelope::{BodyType, ClientInfo, Envelope, RcptStatus, Recipient, Ret};

/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;
/// The first line of every version 1 queue file.
pub const MAGIC: &[u8] = b"RPOSTQ 1\n";
const MAGIC_PREFIX: &[u8] = b"RPOSTQ ";
/// Largest envelope record payload.
pub const MAX_RECORD_LEN: usize = 64 * 1024;
/// Most recipients in one queue file.
pub const MAX_RECIPIENTS: usize = 100_000;
/// Most extension attributes in one queue file.
pub const MAX_ATTRS: usize = 1_000;
/// Largest total size of magic plus envelope records.
pub const MAX_ENVELOPE_LEN: u64 = 256 * 1024 * 1024;
/// Size of the END record, which ends every file.
pub const END_LEN: u64 = 1 + 4 + 16;

const REC_SENDER: u8 = b'S';
const REC_ARRIVAL: u8 = b'T';
const REC_CLIENT: u8 = b'C';
const REC_BODY: u8 = b'B';
const REC_SMTPUTF8: u8 = b'U';
const REC_RET: u8 = b'R';
const REC_ENVID: u8 = b'I';
const REC_ATTR: u8 = b'A';
const REC_RECIPIENT: u8 = b'r';
const REC_CONTENT: u8 = b'M';
const REC_END: u8 = b'Z';

const NOTIFY_NONE: u8 = 0xFF;
const NOTIFY_MAX: u8 = 0x0F;
/// Block size for streaming content through the CRC.
pub(crate) const BLOCK: usize = 64 * 1024;

/// The on-disk byte for a recipient status: `Q`ueued, `D`elivered,
/// `B`ounced, e`X`pired. Any two differ in at least two bits.
pub fn status_byte(status: RcptStatus) -> u8 {
    match status {
        RcptStatus::Pending => b'Q',
        RcptStatus::Delivered => b'D',
        RcptStatus::Bounced => b'B',
        RcptStatus::Expired => b'X',
    }
}

/// The status for an on-disk byte; `None` for anything else.
pub fn status_from_byte(b: u8) -> Option<RcptStatus> {
    match b {
        b'Q' => Some(RcptStatus::Pending),
        b'D' => Some(RcptStatus::Delivered),
        b'B' => Some(RcptStatus::Bounced),
        b'X' => Some(RcptStatus::Expired),
        _ => None,
    }
}

// ---------------------------------------------------------------- writing

/// Magic, envelope records and the content-start record, ready to write.
#[derive(Debug)]
pub(crate) struct Header {
    pub bytes: Vec<u8>,
    /// File offsets of the recipient status bytes.
    pub status_offsets: Vec<u64>,
}

impl Header {
    /// Feeds the header to the CRC with status bytes as zero.
    pub fn hash_into(&self, crc: &mut crc32fast::Hasher) {
        hash_masked(crc, &self.bytes, 0, &self.status_offsets);
    }
}

/// Hashes `bytes` (which start at file offset `base`) with the bytes at
/// `status_offsets` replaced by 0. The offsets must be sorted.
fn hash_masked(crc: &mut crc32fast::Hasher, bytes: &[u8], base: u64, status_offsets: &[u64]) {
    let mut start = 0usize;
    for &off in status_offsets {
        let Some(rel) = off.checked_sub(base).and_then(|r| usize::try_from(r).ok()) else { continue };
        if rel < start || rel >= bytes.len() {
            continue;
        }
        crc.update(&bytes[start..rel]);
        crc.update(&[0]);
        start = rel + 1;
    }
    crc.update(&bytes[start..]);
}

struct Enc {
    buf: Vec<u8>,
}

impl Enc {
    fn record(&mut self, kind: u8, what: &str, f: impl FnOnce(&mut Vec<u8>)) -> Result<usize, QueueError> {
        self.buf.push(kind);
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let start = self.buf.len();
        f(&mut self.buf);
        let len = self.buf.len() - start;
        if len > MAX_RECORD_LEN {
            return Err(QueueError::Envelope(format!("{what} is {len} bytes, more than {MAX_RECORD_LEN}")));
        }
        self.buf[len_at..start].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(start)
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Lengths beyond u32 are caught by the record size check, which sees
    // at least this many bytes; the saturating cast only keeps the
    // arithmetic defined until then.
    buf.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Encodes everything before the content; fails when a limit is exceeded.
pub(crate) fn encode_header(env: &Envelope) -> Result<Header, QueueError> {
    if env.recipients.len() > MAX_RECIPIENTS {
        return Err(QueueError::Envelope(format!("{} recipients, more than {MAX_RECIPIENTS}", env.recipients.len())));
    }
    if env.attrs.len() > MAX_ATTRS {
        return Err(QueueError::Envelope(format!("{} attributes, more than {MAX_ATTRS}", env.attrs.len())));
    }
    let arrival = env
        .arrival
        .duration_since(UNIX_EPOCH)
        .map_err(|_| QueueError::Envelope("arrival time before 1970".to_owned()))?;
    let mut e = Enc { buf: Vec::with_capacity(256 + 64 * env.recipients.len()) };
    e.buf.extend_from_slice(MAGIC);
    e.record(REC_SENDER, "sender", |b| b.extend_from_slice(env.sender.as_bytes()))?;
    e.record(REC_ARRIVAL, "arrival", |b| {
        b.extend_from_slice(&arrival.as_secs().to_be_bytes());
        b.extend_from_slice(&arrival.subsec_nanos().to_be_bytes());
    })?;
    let c = &env.client;
    e.record(REC_CLIENT, "client information", |b| {
        b.extend_from_slice(&c.port.to_be_bytes());
        for s in [&c.name, &c.addr, &c.helo, &c.protocol] {
            put_str(b, s);
        }
        match &c.sasl_username {
            Some(u) => {
                b.push(1);
                put_str(b, u);
            }
            None => b.push(0),
        }
    })?;
    if let Some(body) = env.body {
        let v = match body {
            BodyType::SevenBit => 1,
            BodyType::EightBitMime => 2,
            BodyType::BinaryMime => 3,
        };
        e.record(REC_BODY, "body type", |b| b.push(v))?;
    }
    if env.smtputf8 {
        e.record(REC_SMTPUTF8, "smtputf8", |b| b.push(1))?;
    }
    if let Some(ret) = env.ret {
        let v = match ret {
            Ret::Full => 1,
            Ret::Hdrs => 2,
        };
        e.record(REC_RET, "DSN RET", |b| b.push(v))?;
    }
    if let Some(envid) = &env.envid {
        e.record(REC_ENVID, "DSN ENVID", |b| b.extend_from_slice(envid.as_bytes()))?;
    }
    for (name, value) in &env.attrs {
        e.record(REC_ATTR, "attribute", |b| {
            put_str(b, name);
            put_str(b, value);
        })?;
    }
    let mut status_offsets = Vec::with_capacity(env.recipients.len());
    for r in &env.recipients {
        let notify = match r.notify {
            None => NOTIFY_NONE,
            Some(n) if n <= NOTIFY_MAX => n,
            Some(n) => return Err(QueueError::Envelope(format!("NOTIFY bits {n:#x} out of range"))),
        };
        let at = e.record(REC_RECIPIENT, "recipient", |b| {
            b.push(status_byte(r.status));
            b.push(notify);
            b.push(u8::from(r.orcpt.is_some()));
            put_str(b, &r.address);
            put_str(b, &r.original);
            if let Some(o) = &r.orcpt {
                put_str(b, o);
            }
        })?;
        status_offsets.push(at as u64);
    }
    e.record(REC_CONTENT, "content start", |_| ())?;
    if e.buf.len() as u64 > MAX_ENVELOPE_LEN {
        return Err(QueueError::Envelope(format!("envelope is {} bytes, more than {MAX_ENVELOPE_LEN}", e.buf.len())));
    }
    Ok(Header { bytes: e.buf, status_offsets })
}

/// The END record.
pub(crate) fn encode_end(content_len: u64, nrcpt: u32, crc: u32) -> [u8; END_LEN as usize] {
    let mut b = [0u8; END_LEN as usize];
    b[0] = REC_END;
    b[1..5].copy_from_slice(&16u32.to_be_bytes());
    b[5..13].copy_from_slice(&content_len.to_be_bytes());
    b[13..17].copy_from_slice(&nrcpt.to_be_bytes());
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

// ---------------------------------------------------------------- reading

/// A verified file, minus its content.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub envelope: Envelope,
    pub status_offsets: Vec<u64>,
    pub content_offset: u64,
    pub content_len: u64,
}

/// Why parsing failed, before the path is attached.
#[derive(Debug)]
pub(crate) enum Fault {
    Io(io::Error),
    Corrupt(String),
    Version(u32),
}

impl Fault {
    pub fn with_path(self, path: &std::path::Path) -> QueueError {
        match self {
            Fault::Io(source) => QueueError::io(path, source),
            Fault::Corrupt(reason) => QueueError::corrupt(path, reason),
            Fault::Version(version) => QueueError::Version { path: path.to_owned(), version },
        }
    }
}

fn corrupt<T>(reason: impl Into<String>) -> Result<T, Fault> {
    Err(Fault::Corrupt(reason.into()))
}

/// Reads exactly what it is asked for, tracking the file offset.
struct Src<R> {
    r: R,
    pos: u64,
}

impl<R: Read> Src<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), Fault> {
        match self.r.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            // The length was checked against the file size, so the file
            // shrank under us.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => corrupt("file truncated while reading"),
            Err(e) => Err(Fault::Io(e)),
        }
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, Fault> {
        let mut v = vec![0; n];
        self.fill(&mut v)?;
        Ok(v)
    }
}

/// Decodes the fields inside one record's payload.
struct Fields<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Fields<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Fault> {
        if self.b.len() < n {
            return corrupt(format!("{} record too short", self.what));
        }
        let (head, tail) = self.b.split_at(n);
        self.b = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Fault> {
        Ok(self.bytes(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Fault> {
        let mut a = [0; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }

    fn str(&mut self) -> Result<String, Fault> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        let b = self.bytes(len)?;
        text(b, self.what)
    }

    fn rest_str(&mut self) -> Result<String, Fault> {
        let b = std::mem::take(&mut self.b);
        text(b, self.what)
    }

    fn finish(&self) -> Result<(), Fault> {
        if self.b.is_empty() { Ok(()) } else { corrupt(format!("{} record has trailing bytes", self.what)) }
    }
}

fn text(b: &[u8], what: &str) -> Result<String, Fault> {
    match std::str::from_utf8(b) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => corrupt(format!("invalid UTF-8 in {what} record")),
    }
}

fn record_name(kind: u8) -> &'static str {
    match kind {
        REC_SENDER => "sender",
        REC_ARRIVAL => "arrival",
        REC_CLIENT => "client",
        REC_BODY => "body type",
        REC_SMTPUTF8 => "smtputf8",
        REC_RET => "DSN RET",
        REC_ENVID => "DSN ENVID",
        REC_ATTR => "attribute",
        REC_RECIPIENT => "recipient",
        REC_CONTENT => "content start",
        _ => "unknown",
    }
}

/// Reads and checks the magic line, which carries the format version.
fn read_magic<R: Read>(src: &mut Src<R>, file_len: u64) -> Result<(), Fault> {
    let mut line = Vec::with_capacity(MAGIC.len());
    // "RPOSTQ " + up to 9 digits + LF.
    while line.len() < MAGIC_PREFIX.len() + 10 {
        if src.pos >= file_len {
            return if MAGIC.starts_with(&line) { corrupt("truncated in magic line") } else { corrupt("bad magic") };
        }
        let mut b = [0u8];
        src.fill(&mut b)?;
        line.push(b[0]);
        let n = line.len();
        if n <= MAGIC_PREFIX.len() {
            if line[n - 1] != MAGIC_PREFIX[n - 1] {
                return corrupt("bad magic: not a queue file");
            }
        } else if b[0] == b'\n' {
            break;
        } else if !b[0].is_ascii_digit() {
            return corrupt("bad magic: malformed version");
        }
    }
    let digits = &line[MAGIC_PREFIX.len()..];
    let Some((b'\n', digits)) = digits.split_last() else { return corrupt("bad magic: malformed version") };
    if digits.is_empty() {
        return corrupt("bad magic: malformed version");
    }
    // At most 9 digits, so this fits in a u32.
    let version = digits.iter().fold(0u32, |v, d| v * 10 + u32::from(d - b'0'));
    if version != VERSION {
        return Err(Fault::Version(version));
    }
    if line != MAGIC {
        return corrupt("bad magic: malformed version");
    }
    Ok(())
}

/// Parses and verifies a whole file of `file_len` bytes read from `r`.
/// Content is streamed through the CRC in [`BLOCK`] pieces, never held.
pub(crate) fn parse<R: Read>(r: R, file_len: u64) -> Result<Parsed, Fault> {
    let mut src = Src { r, pos: 0 };
    let mut crc = crc32fast::Hasher::new();
    read_magic(&mut src, file_len)?;
    crc.update(MAGIC);

    let Some(limit) = file_len.checked_sub(END_LEN) else { return corrupt("truncated: no END record") };
    let mut sender = None;
    let mut arrival = None;
    let mut client = None;
    let mut body = None;
    let mut smtputf8 = false;
    let mut ret = None;
    let mut envid = None;
    let mut attrs = Vec::new();
    let mut recipients = Vec::new();
    let mut status_offsets = Vec::new();

    loop {
        if src.pos + 5 > limit {
            return corrupt("truncated before content");
        }
        if src.pos > MAX_ENVELOPE_LEN {
            return corrupt(format!("envelope longer than {MAX_ENVELOPE_LEN} bytes"));
        }
        let mut head = [0u8; 5];
        src.fill(&mut head)?;
        crc.update(&head);
        let kind = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let what = record_name(kind);
        if what == "unknown" {
            return corrupt(format!("unknown record type {kind:#04x} at offset {}", src.pos - 5));
        }
        if len > MAX_RECORD_LEN {
            return corrupt(format!("{what} record length {len} exceeds {MAX_RECORD_LEN}"));
        }
        if src.pos + len as u64 > limit {
            return corrupt(format!("truncated in {what} record"));
        }
        let payload_at = src.pos;
        let payload = src.take(len)?;
        let mut f = Fields { b: &payload, what };
        match kind {
            REC_RECIPIENT => hash_masked(&mut crc, &payload, payload_at, &[payload_at]),
            _ => crc.update(&payload),
        }
        match kind {
            REC_SENDER => {
                once(&sender, what)?;
                sender = Some(f.rest_str()?);
            }
            REC_ARRIVAL => {
                once(&arrival, what)?;
                let secs = u64::from_be_bytes(f.array()?);
                let nanos = u32::from_be_bytes(f.array()?);
                if nanos >= 1_000_000_000 {
                    return corrupt("arrival nanoseconds out of range");
                }
                let Some(t) = UNIX_EPOCH.checked_add(Duration::new(secs, nanos)) else {
                    return corrupt("arrival time out of range");
                };
                arrival = Some(t);
            }
            REC_CLIENT => {
                once(&client, what)?;
                let port = u16::from_be_bytes(f.array()?);
                let name = f.str()?;
                let addr = f.str()?;
                let helo = f.str()?;
                let protocol = f.str()?;
                let sasl_username = match f.u8()? {
                    0 => None,
                    1 => Some(f.str()?),
                    _ => return corrupt("bad SASL flag in client record"),
                };
                client = Some(ClientInfo { name, addr, port, helo, protocol, sasl_username });
            }
            REC_BODY => {
                once(&body, what)?;
                body = Some(match f.u8()? {
                    1 => BodyType::SevenBit,
                    2 => BodyType::EightBitMime,
                    3 => BodyType::BinaryMime,
                    v => return corrupt(format!("unknown body type {v}")),
                });
            }
            REC_SMTPUTF8 => {
                if smtputf8 {
                    return corrupt("duplicate smtputf8 record");
                }
                if f.u8()? != 1 {
                    return corrupt("bad smtputf8 record");
                }
                smtputf8 = true;
            }
            REC_RET => {
                once(&ret, what)?;
                ret = Some(match f.u8()? {
                    1 => Ret::Full,
                    2 => Ret::Hdrs,
                    v => return corrupt(format!("unknown DSN RET value {v}")),
                });
            }
            REC_ENVID => {
                once(&envid, what)?;
                envid = Some(f.rest_str()?);
            }
            REC_ATTR => {
                if attrs.len() >= MAX_ATTRS {
                    return corrupt(format!("more than {MAX_ATTRS} attributes"));
                }
                let name = f.str()?;
                let value = f.str()?;
                attrs.push((name, value));
            }
            REC_RECIPIENT => {
                if recipients.len() >= MAX_RECIPIENTS {
                    return corrupt(format!("more than {MAX_RECIPIENTS} recipients"));
                }
                let s = f.u8()?;
                let Some(status) = status_from_byte(s) else {
                    return corrupt(format!("bad status byte {s:#04x} for recipient #{}", recipients.len()));
                };
                let notify = match f.u8()? {
                    NOTIFY_NONE => None,
                    n if n <= NOTIFY_MAX => Some(n),
                    n => return corrupt(format!("bad NOTIFY bits {n:#04x}")),
                };
                let has_orcpt = match f.u8()? {
                    0 => false,
                    1 => true,
                    _ => return corrupt("bad flags in recipient record"),
                };
                let address = f.str()?;
                let original = f.str()?;
                let orcpt = if has_orcpt { Some(f.str()?) } else { None };
                recipients.push(Recipient { address, original, orcpt, notify, status });
                status_offsets.push(payload_at);
            }
            REC_CONTENT => {}
            _ => return corrupt(format!("unknown record type {kind:#04x}")),
        }
        f.finish()?;
        if kind == REC_CONTENT {
            break;
        }
    }

    let (Some(sender), Some(arrival), Some(client)) = (sender, arrival, client) else {
        return corrupt("missing sender, arrival or client record");
    };

    let content_offset = src.pos;
    let content_len = limit - content_offset;
    let mut block = vec![0u8; BLOCK.min(content_len as usize)];
    let mut left = content_len;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        src.fill(&mut block[..n])?;
        crc.update(&block[..n]);
        left -= n as u64;
    }

    let mut end = [0u8; END_LEN as usize];
    src.fill(&mut end)?;
    if end[0] != REC_END || end[1..5] != 16u32.to_be_bytes() {
        return corrupt("missing END record (torn write or trailing garbage)");
    }
    let end_content_len = u64::from_be_bytes(end[5..13].try_into().unwrap_or_default());
    let end_nrcpt = u32::from_be_bytes(end[13..17].try_into().unwrap_or_default());
    let end_crc = u32::from_be_bytes(end[17..21].try_into().unwrap_or_default());
    if end_content_len != content_len {
        return corrupt(format!("content is {content_len} bytes but END record says {end_content_len}"));
    }
    if end_nrcpt as usize != recipients.len() {
        return corrupt(format!("{} recipient records but END record says {end_nrcpt}", recipients.len()));
    }
    let actual = crc.finalize();
    if actual != end_crc {
        return corrupt(format!("checksum mismatch (stored {end_crc:08x}, computed {actual:08x})"));
    }
    // The file may have grown after its size was taken.
    let mut extra = [0u8; 1];
    match src.r.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => return corrupt("trailing data after END record"),
        Err(e) => return Err(Fault::Io(e)),
    }

    let envelope = Envelope { sender, recipients, arrival, client, body, smtputf8, ret, envid, attrs };
    Ok(Parsed { envelope, status_offsets, content_offset, content_len })
}

fn once<T>(seen: &Option<T>, what: &str) -> Result<(), Fault> {
    if seen.is_some() { corrupt(format!("duplicate {what} record")) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        let mut e = Envelope::new("a@example.test");
        e.arrival = UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
        e.recipients.push(Recipient::new("b@example.test"));
        e
    }

    fn file(env: &Envelope, content: &[u8]) -> Vec<u8> {
        let h = encode_header(env).unwrap();
        let mut crc = crc32fast::Hasher::new();
        h.hash_into(&mut crc);
        crc.update(content);
        let mut v = h.bytes.clone();
        v.extend_from_slice(content);
        v.extend_from_slice(&encode_end(content.len() as u64, env.recipients.len() as u32, crc.finalize()));
        v
    }

    #[test]
    fn status_bytes_differ_in_two_bits() {
        let all = [RcptStatus::Pending, RcptStatus::Delivered, RcptStatus::Bounced, RcptStatus::Expired];
        for a in all {
            assert_eq!(status_from_byte(status_byte(a)), Some(a));
            for b in all {
                if a != b {
                    assert!((status_byte(a) ^ status_byte(b)).count_ones() >= 2, "{a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn minimal_round_trip() {
        let e = env();
        let bytes = file(&e, b"hello\r\n");
        let p = parse(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(p.envelope, e);
        assert_eq!(p.content_len, 7);
        assert_eq!(&bytes[p.content_offset as usize..][..7], b"hello\r\n");
        assert_eq!(bytes[p.status_offsets[0] as usize], b'Q');
    }

    #[test]
    fn status_byte_does_not_enter_crc() {
        let e = env();
        let mut bytes = file(&e, b"x");
        let p = parse(&bytes[..], bytes.len() as u64).unwrap();
        bytes[p.status_offsets[0] as usize] = b'D';
        let p = parse(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(p.envelope.recipients[0].status, RcptStatus::Delivered);
    }

    #[test]
    fn oversized_record_rejected_without_allocation() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(REC_SENDER);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        bytes.resize(100, 0);
        assert!(matches!(parse(&bytes[..], 100), Err(Fault::Corrupt(r)) if r.contains("exceeds")));
    }

    #[test]
    fn writer_limits() {
        let mut e = env();
        e.sender = "x".repeat(MAX_RECORD_LEN + 1);
        assert!(matches!(encode_header(&e), Err(QueueError::Envelope(_))));
        let mut e = env();
        e.recipients[0].notify = Some(0x10);
        assert!(matches!(encode_header(&e), Err(QueueError::Envelope(_))));
        let mut e = env();
        e.recipients = vec![Recipient::new("r@x"); MAX_RECIPIENTS + 1];
        assert!(matches!(encode_header(&e), Err(QueueError::Envelope(_))));
    }

    #[test]
    fn versions() {
        for (magic, want) in [(&b"RPOSTQ 2\n"[..], Some(2)), (b"RPOSTQ 123456789\n", Some(123_456_789))] {
            let mut bytes = magic.to_vec();
            bytes.resize(200, 0);
            match parse(&bytes[..], 200) {
                Err(Fault::Version(v)) => assert_eq!(Some(v), want),
                other => panic!("{other:?}"),
            }
        }
        for magic in [&b"RPOSTQ 01\n"[..], b"RPOSTQ \n", b"RPOSTQ 1234567890\n", b"RPOSTQ x\n", b"rpostq 1\n"] {
            let mut bytes = magic.to_vec();
            bytes.resize(200, 0);
            assert!(matches!(parse(&bytes[..], 200), Err(Fault::Corrupt(_))), "{magic:?}");
        }
    }
}

//! Server-side input framing: command lines, DATA (dot-unstuffed, smuggling-safe) and BDAT.
//!
//! Sans-IO: the caller feeds whatever it read from the socket and pulls events until
//! [`ServerCodec::next_event`] says it needs more bytes. The mode switches (`start_data`,
//! `start_bdat`) and `next_line` for SASL responses are the session's decisions, made after
//! it saw the command and sent its reply, exactly where a blocking server would start
//! reading differently.

use std::collections::VecDeque;

use memchr::{memchr, memchr2};

use crate::command::{Command, CommandError, parse_command};

/// Input limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line, CRLF included. Default 2048 as Postfix `line_length_limit`;
    /// RFC 5321 requires at least 512.
    pub max_line: usize,
    /// Largest payload of one [`Event::Data`] or [`Event::Chunk`] (default 1 MiB, at least
    /// 64). DATA is streamed, never buffered a line at a time, so this bounds memory per
    /// event whatever the line length; it does not limit message lines themselves (smtpd
    /// does not either: message_size_limit is the session's check).
    pub max_data_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_line: 2048, max_data_line: 1 << 20 }
    }
}

/// What the codec found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One complete CRLF-terminated command line, parsed.
    Command(Result<Command, CommandError>),
    /// A line longer than the limit. Reported once; the codec discards up to the next LF
    /// and then reads commands again.
    LineTooLong,
    /// A command line ended in a bare LF or held a bare CR. The line is consumed, not
    /// parsed (Postfix smtpd_forbid_bare_newline: `521 5.5.2 ... Error: bare <LF> received`).
    BareLineEnding,
    /// Message bytes after 354: dot-unstuffed, every line ending CRLF, in any chunking.
    Data(Vec<u8>),
    /// The CRLF.CRLF that ends DATA was seen; the codec reads commands again.
    DataEnd,
    /// DATA held a bare LF or bare CR (SMTP smuggling, CVE-2023-51764 and friends). Reported
    /// once per message; the codec still only ends DATA at a real CRLF.CRLF, keeps emitting
    /// (CRLF-normalized) [`Event::Data`] and then [`Event::DataEnd`], and the session must
    /// not accept the message.
    DataBareLineEnding,
    /// BDAT payload bytes, raw.
    Chunk(Vec<u8>),
    /// The announced BDAT size has been consumed; commands again.
    ChunkEnd {
        /// The BDAT command said LAST.
        last: bool,
    },
}

/// Why [`ServerCodec::next_line`] refused a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than the limit given; skipped to its LF.
    #[error("line too long")]
    TooLong,
    /// Ended in a bare LF or held a bare CR.
    #[error("bare <CR> or <LF> received")]
    BareLineEnding,
}

/// One framed command-mode line: its byte range in the buffer (CRLF excluded), or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framed {
    Line(usize, usize),
    TooLong,
    Bare,
}

/// Where the DATA scanner is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// After CRLF (or right after 354): a '.' here is special.
    LineStart,
    /// Inside a line.
    Body,
    /// Inside a line, a CR held back until we know whether LF follows.
    Cr,
    /// "." at line start held back: stuffing, or the start of the terminator.
    Dot,
    /// ".\r" at line start held back: the terminator if LF follows.
    DotCr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Command,
    /// Skipping the rest of an overlong line.
    Discard,
    Data {
        state: DataState,
        bare: bool,
    },
    Bdat {
        remaining: u64,
        last: bool,
    },
}

/// The server's input codec. See the crate documentation for the security properties.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    limits: Limits,
    buf: Vec<u8>,
    /// Start of unconsumed input in `buf`.
    pos: usize,
    /// Bytes after `pos` already known to hold no LF (command mode), so a line trickling in
    /// one byte at a time is not rescanned from its start each time.
    scanned: usize,
    mode: Mode,
    /// An event found together with the one returned (DataEnd or DataBareLineEnding after
    /// the Data before it).
    pending: VecDeque<Event>,
}

/// Floor for `max_data_line` so that a zero limit cannot stall the scanner.
const MIN_DATA_PIECE: usize = 64;

impl ServerCodec {
    /// A codec in command mode.
    pub fn new(limits: Limits) -> Self {
        ServerCodec { limits, buf: Vec::new(), pos: 0, scanned: 0, mode: Mode::Command, pending: VecDeque::new() }
    }

    /// Appends received bytes. Call [`next_event`](Self::next_event) until it returns `None`
    /// after each feed: unconsumed command input is then at most one partial line
    /// (< `max_line`), and DATA/BDAT input none at all.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            // Reclaim the consumed prefix once it dominates; amortized O(1) per byte.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next event, or `None` when more input is needed.
    pub fn next_event(&mut self) -> Option<Event> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        match self.mode {
            Mode::Command | Mode::Discard => match self.frame_line(self.limits.max_line)? {
                Framed::Line(start, end) => Some(Event::Command(parse_command(&self.buf[start..end]))),
                Framed::TooLong => Some(Event::LineTooLong),
                Framed::Bare => Some(Event::BareLineEnding),
            },
            Mode::Data { state, bare } => self.next_data(state, bare),
            Mode::Bdat { remaining: 0, last } => {
                self.mode = Mode::Command;
                Some(Event::ChunkEnd { last })
            }
            Mode::Bdat { remaining, last } => {
                let avail = self.buf.len() - self.pos;
                if avail == 0 {
                    return None;
                }
                let cap = self.limits.max_data_line.max(MIN_DATA_PIECE);
                let n = usize::try_from(remaining).unwrap_or(usize::MAX).min(avail).min(cap);
                let chunk = self.buf[self.pos..self.pos + n].to_vec();
                self.pos += n;
                self.mode = Mode::Bdat { remaining: remaining - n as u64, last };
                Some(Event::Chunk(chunk))
            }
        }
    }

    /// Switches to DATA mode: call after deciding to accept DATA and sending 354. Bytes
    /// already buffered (a client that did not wait) are message content from here on.
    pub fn start_data(&mut self) {
        self.mode = Mode::Data { state: DataState::LineStart, bare: false };
        self.scanned = 0;
    }

    /// The next `size` bytes are a BDAT chunk, then [`Event::ChunkEnd`]. Call after a BDAT
    /// command, whether the session keeps or discards the chunk (RFC 3030: it must be read).
    pub fn start_bdat(&mut self, size: u64, last: bool) {
        self.mode = Mode::Bdat { remaining: size, last };
        self.scanned = 0;
    }

    /// Pulls the next line raw, without CRLF, instead of as a command: for SASL responses
    /// during AUTH, which are not commands and may be longer (`max_len` counts the CRLF;
    /// Postfix allows 12288). `None`: more input needed (or the codec is in DATA/BDAT mode).
    /// Overlong lines and bare line endings are errors, framed as in command mode.
    pub fn next_line(&mut self, max_len: usize) -> Option<Result<Vec<u8>, LineError>> {
        if !matches!(self.mode, Mode::Command | Mode::Discard) {
            return None;
        }
        Some(match self.frame_line(max_len)? {
            Framed::Line(start, end) => Ok(self.buf[start..end].to_vec()),
            Framed::TooLong => Err(LineError::TooLong),
            Framed::Bare => Err(LineError::BareLineEnding),
        })
    }

    /// Bytes fed but not consumed yet. Non-zero after a command means the client sent more
    /// before our reply (reject_unauth_pipelining).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Removes and returns unconsumed input and resets to command mode. After STARTTLS the
    /// session must throw this away: plaintext sent before the handshake must never be
    /// read as if it came over TLS (CVE-2011-0411).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        self.scanned = 0;
        self.mode = Mode::Command;
        self.pending.clear();
        rest
    }

    /// Frames the next line in command mode, skipping the rest of an overlong line first.
    fn frame_line(&mut self, max: usize) -> Option<Framed> {
        if self.mode == Mode::Discard {
            let Some(i) = memchr(b'\n', &self.buf[self.pos..]) else {
                self.pos = self.buf.len();
                return None;
            };
            self.pos += i + 1;
            self.scanned = 0;
            self.mode = Mode::Command;
        }
        let avail = &self.buf[self.pos..];
        let Some(lf) = memchr(b'\n', &avail[self.scanned..]).map(|i| i + self.scanned) else {
            self.scanned = avail.len();
            // With its LF still to come, this line is already too long.
            if avail.len() >= max {
                self.pos = self.buf.len();
                self.scanned = 0;
                self.mode = Mode::Discard;
                return Some(Framed::TooLong);
            }
            return None;
        };
        let start = self.pos;
        self.pos += lf + 1;
        self.scanned = 0;
        // Length first, so the verdict does not depend on how the input was split.
        if lf + 1 > max {
            return Some(Framed::TooLong);
        }
        let line = &self.buf[start..start + lf];
        let Some(line) = line.strip_suffix(b"\r") else {
            return Some(Framed::Bare);
        };
        if memchr(b'\r', line).is_some() {
            return Some(Framed::Bare);
        }
        Some(Framed::Line(start, start + line.len()))
    }

    fn next_data(&mut self, mut state: DataState, mut bare: bool) -> Option<Event> {
        let cap = self.limits.max_data_line.max(MIN_DATA_PIECE);
        let buf = &self.buf;
        let end = buf.len();
        let mut i = self.pos;
        let mut out = Vec::with_capacity((end - i).min(cap) + 2);
        // A bare CR/LF seen while scanning: report it right after the bytes before it.
        let mut report_bare = false;
        let mut finished = false;
        while i < end && out.len() < cap && !report_bare {
            if state == DataState::Body {
                // Fast path: copy up to the next CR or LF.
                let stop = end.min(i + (cap - out.len()));
                let Some(k) = memchr2(b'\r', b'\n', &buf[i..stop]) else {
                    out.extend_from_slice(&buf[i..stop]);
                    i = stop;
                    continue;
                };
                out.extend_from_slice(&buf[i..i + k]);
                i += k;
            }
            let c = buf[i];
            i += 1;
            let mut is_bare = false;
            state = match (state, c) {
                (DataState::LineStart | DataState::Body, b'\r') => DataState::Cr,
                (DataState::LineStart, b'.') => DataState::Dot,
                (DataState::Cr, b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    DataState::LineStart
                }
                (DataState::Dot, b'\r') => DataState::DotCr,
                (DataState::DotCr, b'\n') => {
                    finished = true;
                    break;
                }
                // A held CR not followed by LF: bare CR. Normalize it, then look at `c` anew.
                (DataState::Cr | DataState::DotCr, _) => {
                    // (`c` is not LF here: CR LF and .CR LF matched above.)
                    is_bare = true;
                    out.extend_from_slice(b"\r\n");
                    if c == b'\r' {
                        DataState::Cr
                    } else {
                        out.push(c);
                        DataState::Body
                    }
                }
                // Bare LF, anywhere. Never a line start: "\n.\r\n" must not end DATA.
                (_, b'\n') => {
                    is_bare = true;
                    out.extend_from_slice(b"\r\n");
                    DataState::Body
                }
                // Anything else is content. After a held dot (".." or ".x" at line start) the
                // dot was stuffing and is dropped (RFC 5321 section 4.5.2).
                (_, _) => {
                    out.push(c);
                    DataState::Body
                }
            };
            if is_bare && !bare {
                bare = true;
                report_bare = true;
            }
        }
        self.pos = i;
        if finished {
            self.mode = Mode::Command;
            self.scanned = 0;
            if out.is_empty() {
                return Some(Event::DataEnd);
            }
            self.pending.push_back(Event::DataEnd);
            return Some(Event::Data(out));
        }
        self.mode = Mode::Data { state, bare };
        match (out.is_empty(), report_bare) {
            (true, false) => None,
            (false, false) => Some(Event::Data(out)),
            (true, true) => Some(Event::DataBareLineEnding),
            (false, true) => {
                self.pending.push_back(Event::DataBareLineEnding);
                Some(Event::Data(out))
            }
        }
    }
}

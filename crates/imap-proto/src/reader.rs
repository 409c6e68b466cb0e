//! Command framing: lines and literals, with limits.

use std::collections::VecDeque;

use crate::Command;
use crate::parse::parse_command;

/// Limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest command, literals of commands other than APPEND included (Dovecot's
    /// `imap_max_line_length`, 64k).
    pub max_line: usize,
    /// Largest APPEND literal (`message_size_limit`).
    pub max_append: u64,
    /// LITERAL- (RFC 7888, `imap_literal_minus`): non-synchronizing literals of at most
    /// 4096 bytes; a larger one is refused like any literal over the limit.
    pub literal_minus: bool,
}

/// The largest non-synchronizing literal LITERAL- allows.
pub const LITERAL_MINUS_MAX: u64 = 4096;

impl Default for Limits {
    fn default() -> Self {
        Limits { max_line: 64 * 1024, max_append: 10_240_000, literal_minus: false }
    }
}

/// What the reader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, parsed command.
    Command(Command),
    /// A synchronizing literal was announced and accepted: send `+ Ready for literal data`.
    Continue,
    /// A refused command: reply `<tag> BAD <message>` (`* BAD` without a tag).
    Bad { tag: Option<String>, message: String },
    /// A synchronizing literal larger than allowed: reply `<tag> NO [TOOBIG] ...`; the client
    /// does not send it, the command is dropped.
    TooBig { tag: Option<String>, size: u64 },
    /// The stream cannot be followed any more (a non-synchronizing literal over the limit,
    /// whose data follows at once): send `* BYE <message>` and close.
    Fatal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Line,
    Literal(u64),
    /// Discarding the rest of an over-long line, then BAD.
    Skip,
    Closed,
}

/// Incremental command reader (see the crate documentation).
#[derive(Debug)]
pub struct Reader {
    limits: Limits,
    input: VecDeque<u8>,
    /// The command gathered so far, literals included.
    cmd: Vec<u8>,
    /// Bytes of `cmd` outside literals (checked against `max_line`).
    text_len: usize,
    /// Literal bytes of `cmd`.
    literal_len: u64,
    mode: Mode,
    skip_tag: Option<String>,
}

impl Reader {
    pub fn new(limits: Limits) -> Reader {
        Reader {
            limits,
            input: VecDeque::new(),
            cmd: Vec::new(),
            text_len: 0,
            literal_len: 0,
            mode: Mode::Line,
            skip_tag: None,
        }
    }

    /// Changes the limits (after login the APPEND limit may differ).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Adds received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.mode != Mode::Closed {
            self.input.extend(data);
        }
    }

    /// Bytes received and not yet consumed (after STARTTLS they must be thrown away).
    pub fn discard_input(&mut self) -> usize {
        let n = self.input.len();
        self.input.clear();
        n
    }

    /// Takes the bytes received and not yet consumed, between two commands: pipelined input
    /// that moves with the connection to another reader (imapd's hand-over after login).
    pub fn take_input(&mut self) -> Vec<u8> {
        self.input.drain(..).collect()
    }

    /// Gives back buffer memory once nothing is pending, so a connection that sits idle
    /// (IDLE, between commands) keeps no read buffer sized by its largest command. Buffers
    /// of an ordinary command line's size are kept: dropping them before every command
    /// would only make the next one allocate again.
    pub fn compact(&mut self) {
        const KEEP: usize = 1024;
        if self.input.is_empty() && self.input.capacity() > KEEP {
            self.input = VecDeque::new();
        }
        if self.cmd.is_empty() && self.cmd.capacity() > KEEP {
            self.cmd = Vec::new();
        }
    }

    /// Buffer memory held (tests of [`Reader::compact`]).
    #[cfg(test)]
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.input.capacity() + self.cmd.capacity()
    }

    /// True when nothing is buffered and no command is half-read.
    pub fn is_idle(&self) -> bool {
        self.input.is_empty() && self.cmd.is_empty() && self.mode == Mode::Line
    }

    /// A raw line (without its CRLF) for AUTHENTICATE continuations and IDLE's DONE; `None`
    /// until one is complete. `Some(Err(()))` for a line longer than the limit (discarded).
    pub fn take_line(&mut self) -> Option<Result<Vec<u8>, ()>> {
        let pos = self.input.iter().position(|&b| b == b'\n');
        match pos {
            None => {
                if self.input.len() > self.limits.max_line {
                    self.input.clear();
                    self.mode = Mode::Skip;
                    return Some(Err(()));
                }
                None
            }
            Some(p) => {
                let mut line: Vec<u8> = self.input.drain(..=p).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.limits.max_line {
                    return Some(Err(()));
                }
                Some(Ok(line))
            }
        }
    }

    fn reset(&mut self) {
        self.cmd.clear();
        self.text_len = 0;
        self.literal_len = 0;
        self.mode = Mode::Line;
    }

    fn tag(&self) -> Option<String> {
        tag_of(&self.cmd)
    }

    fn is_append(&self) -> bool {
        let mut words = self.cmd.split(|&b| b == b' ');
        let _tag = words.next();
        words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"APPEND"))
    }

    /// The next event, `None` when more input is needed.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Event> {
        loop {
            match self.mode {
                Mode::Closed => return None,
                Mode::Skip => {
                    let p = self.input.iter().position(|&b| b == b'\n');
                    match p {
                        None => {
                            self.input.clear();
                            return None;
                        }
                        Some(p) => {
                            self.input.drain(..=p);
                            let tag = self.skip_tag.take();
                            self.reset();
                            return Some(Event::Bad { tag, message: "Command line too long".into() });
                        }
                    }
                }
                Mode::Literal(rem) => {
                    if self.input.is_empty() {
                        return None;
                    }
                    let n = (rem.min(self.input.len() as u64)) as usize;
                    self.cmd.extend(self.input.drain(..n));
                    let rem = rem - n as u64;
                    self.mode = if rem == 0 { Mode::Line } else { Mode::Literal(rem) };
                }
                Mode::Line => {
                    let room = self.limits.max_line.saturating_sub(self.text_len);
                    let p = self.input.iter().take(room.saturating_add(1)).position(|&b| b == b'\n');
                    let Some(p) = p else {
                        if self.input.len() > room {
                            // Too long: keep the tag for the reply, skip to the line's end.
                            let take = self.input.len().min(64);
                            self.cmd.extend(self.input.iter().take(take));
                            self.skip_tag = self.tag();
                            self.mode = Mode::Skip;
                            continue;
                        }
                        return None;
                    };
                    let start = self.cmd.len();
                    self.cmd.extend(self.input.drain(..=p));
                    self.text_len += p + 1;
                    let line = &self.cmd[start..];
                    match literal_announce(line) {
                        None => {
                            let mut cmd = std::mem::take(&mut self.cmd);
                            self.reset();
                            cmd.pop();
                            if cmd.len() > start && cmd.last() == Some(&b'\r') {
                                cmd.pop();
                            }
                            return Some(match parse_command(&cmd) {
                                Ok(c) => Event::Command(c),
                                Err(e) => Event::Bad { tag: e.tag, message: e.message },
                            });
                        }
                        Some(Err(())) => {
                            let tag = self.tag();
                            self.reset();
                            return Some(Event::Bad { tag, message: "Invalid literal size".into() });
                        }
                        Some(Ok((size, sync))) => {
                            let limit = if self.is_append() {
                                self.limits.max_append.saturating_sub(self.literal_len)
                            } else {
                                self.limits.max_line.saturating_sub(self.text_len) as u64
                            };
                            let limit =
                                if !sync && self.limits.literal_minus { limit.min(LITERAL_MINUS_MAX) } else { limit };
                            if size > limit {
                                let tag = self.tag();
                                self.reset();
                                if !sync {
                                    self.mode = Mode::Closed;
                                    self.input.clear();
                                    return Some(Event::Fatal(format!("Literal of {size} bytes is too large")));
                                }
                                return Some(Event::TooBig { tag, size });
                            }
                            if self.is_append() {
                                self.literal_len += size;
                            } else {
                                self.text_len += size as usize;
                            }
                            self.mode = Mode::Literal(size);
                            if sync {
                                return Some(Event::Continue);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The tag at the start of a command, if it is a valid one.
pub(crate) fn tag_of(cmd: &[u8]) -> Option<String> {
    let end = cmd.iter().position(|&b| b == b' ' || b == b'\r' || b == b'\n').unwrap_or(cmd.len());
    let tag = &cmd[..end];
    if tag.is_empty() || tag.len() > 100 || !tag.iter().all(|&b| crate::parse::is_tag_char(b)) {
        return None;
    }
    Some(String::from_utf8_lossy(tag).into_owned())
}

/// `{N}` or `{N+}` at the end of a line (before CRLF): Some(Ok((N, synchronizing))).
fn literal_announce(line: &[u8]) -> Option<Result<(u64, bool), ()>> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let inner = &body[open + 1..];
    let (digits, sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Some(Err(()));
    }
    if digits.len() > 19 {
        return Some(Ok((u64::MAX, sync)));
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(Ok((n, sync)))
}

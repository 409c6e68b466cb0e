//! The POP3 protocol state machine, sans-IO: bytes from the client go in with
//! [`Session::feed`], [`Event`]s come out of [`Session::next_event`] (bytes to send, and the
//! requests the driver must carry out: TLS, authentication, message reads, the final
//! commit), and the driver answers those requests with the `*_result` methods. Nothing here
//! touches a socket, authd or a file, so the same code is unit-tested split at every byte
//! and fuzzed.
//!
//! States (RFC 1939): AUTHORIZATION (USER/PASS, AUTH, STLS, CAPA, QUIT), TRANSACTION
//! (STAT, LIST, RETR, DELE, RSET, NOOP, TOP, UIDL, CAPA, QUIT) and UPDATE (QUIT commits the
//! deletions). While a request is out with the driver no further command is read, so
//! pipelined commands (RFC 2449 PIPELINING) are answered in order.

use std::collections::VecDeque;

/// Longest command line accepted (RFC 2449 allows 255 octets; SASL initial responses and
/// AUTH continuation lines need more, as Dovecot allows).
pub const MAX_LINE: usize = 8192;
/// Bad commands before the connection is closed (Dovecot: 10).
pub const MAX_BAD_COMMANDS: u32 = 10;

/// One message of the maildrop as the session sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageInfo {
    /// Size in octets with CRLF line endings (what RETR sends before dot-stuffing).
    pub size: u64,
    /// The unique-id listing (`pop3_uidl_format`).
    pub uidl: String,
}

/// What the session was configured with for this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Text after `+OK ` in the greeting.
    pub greeting: String,
    /// STLS may be offered (TLS configured, not active yet).
    pub starttls: bool,
    /// TLS is active (implicit TLS, or after STLS).
    pub tls: bool,
    /// USER/PASS and plaintext SASL mechanisms are allowed now (before STLS).
    pub plaintext_allowed: bool,
    /// The SASL mechanisms of authd: (name, plaintext).
    pub mechanisms: Vec<(String, bool)>,
}

/// A request for the driver, or bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Start the TLS handshake now (all bytes before it have been sent), then call
    /// [`Session::tls_started`]. Input buffered before STLS was dropped (RFC 2595 §4).
    StartTls,
    /// USER/PASS: authenticate; answer with [`Session::login_result`].
    Login { user: String, pass: String },
    /// AUTH: start a SASL exchange; answer with [`Session::auth_challenge`] or
    /// [`Session::login_result`].
    Authenticate { mech: String, initial: Option<String> },
    /// The client's answer (base64) to the last challenge.
    SaslResponse(String),
    /// The client cancelled the exchange (`*`); the driver drops it. Already answered.
    SaslAborted,
    /// RETR (`top: None`) or TOP: read message `index` (0-based) and call
    /// [`Session::message_result`].
    Retrieve { index: usize, top: Option<u64> },
    /// QUIT in TRANSACTION: delete these messages (0-based), mark `seen` ones read, and call
    /// [`Session::commit_result`].
    Commit { delete: Vec<usize>, seen: Vec<usize> },
    /// Close the connection (after the bytes sent before).
    Close,
}

/// How an authentication ended, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Logged in; the maildrop is opened and these are its messages.
    Ok(Vec<MessageInfo>),
    /// Wrong credentials (or mechanism refused): `reason` from authd, for the client.
    Failed(Option<String>),
    /// Server-side problem: try again later.
    TempFailed,
    /// Logged in, but the maildrop could not be opened or locked.
    MailboxFailed { in_use: bool },
}

/// Counters for the logout line (`pop3_logout_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub top_count: u64,
    pub top_bytes: u64,
    pub retr_count: u64,
    pub retr_bytes: u64,
    pub deleted_count: u64,
    pub deleted_bytes: u64,
    pub message_count: u64,
    pub mailbox_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Authorization {
        user: Option<String>,
    },
    /// A SASL exchange is out with authd; client lines are responses.
    Sasl,
    Transaction,
    /// Closed (QUIT done, or too many errors).
    Done,
}

/// What the session is waiting for from the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Tls,
    Login,
    /// A challenge or the result of the exchange.
    Sasl,
    Message {
        index: usize,
        top: Option<u64>,
    },
    Commit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Msg {
    deleted: bool,
    retrieved: bool,
}

/// One POP3 connection.
#[derive(Debug)]
pub struct Session {
    cfg: Config,
    state: State,
    pending: Pending,
    input: Vec<u8>,
    /// Bytes of an over-long line are being skipped up to its end.
    skipping: bool,
    events: VecDeque<Event>,
    messages: Vec<MessageInfo>,
    marks: Vec<Msg>,
    bad: u32,
    stats: Stats,
    /// Last authentication attempt: (mechanism, user name if known), for the driver's log.
    last_attempt: Option<(String, Option<String>)>,
}

fn line(text: &str) -> Event {
    Event::Send(format!("{text}\r\n").into_bytes())
}

impl Session {
    /// A new session; its greeting is the first event.
    pub fn new(cfg: Config) -> Session {
        let mut s = Session {
            state: State::Authorization { user: None },
            pending: Pending::None,
            input: Vec::new(),
            skipping: false,
            events: VecDeque::new(),
            messages: Vec::new(),
            marks: Vec::new(),
            bad: 0,
            stats: Stats::default(),
            last_attempt: None,
            cfg,
        };
        let g = format!("+OK {}", s.cfg.greeting);
        s.events.push_back(line(&g));
        s
    }

    /// Bytes from the client.
    pub fn feed(&mut self, data: &[u8]) {
        if self.state == State::Done {
            return;
        }
        self.input.extend_from_slice(data);
    }

    /// True once the session is logged in.
    pub fn logged_in(&self) -> bool {
        self.state == State::Transaction
    }

    /// True once the session has ended (the driver closes after the queued bytes).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Waiting for the driver: the driver must not expect progress from `feed` now.
    pub fn is_waiting(&self) -> bool {
        self.pending != Pending::None
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The mechanism and user of the last authentication attempt.
    pub fn last_attempt(&self) -> Option<(&str, Option<&str>)> {
        self.last_attempt.as_ref().map(|(m, u)| (m.as_str(), u.as_deref()))
    }

    /// The next event, processing buffered input as far as possible.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            if self.pending != Pending::None || self.state == State::Done {
                return None;
            }
            let line = self.take_line()?;
            self.command(line);
        }
    }

    /// The next complete line without its CRLF (or bare LF), or `None`. Over-long lines
    /// are answered with an error and skipped.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.input.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let mut l: Vec<u8> = self.input.drain(..=i).collect();
                    l.pop();
                    if l.last() == Some(&b'\r') {
                        l.pop();
                    }
                    if self.skipping {
                        self.skipping = false;
                        continue;
                    }
                    if l.len() > MAX_LINE {
                        self.too_long();
                        if self.state == State::Done {
                            return None;
                        }
                        continue;
                    }
                    return Some(l);
                }
                None => {
                    // + 1: the CR of a line of exactly MAX_LINE may come before its LF.
                    if self.input.len() > MAX_LINE + 1 {
                        self.input.clear();
                        if !self.skipping {
                            self.skipping = true;
                            self.too_long();
                        }
                    }
                    return None;
                }
            }
        }
    }

    fn too_long(&mut self) {
        if self.state == State::Sasl {
            // The exchange cannot go on without this line.
            self.state = State::Authorization { user: None };
            self.events.push_back(Event::SaslAborted);
        }
        self.bad_command("-ERR Input line too long.");
    }

    fn bad_command(&mut self, reply: &str) {
        self.bad += 1;
        if self.bad >= MAX_BAD_COMMANDS {
            self.events.push_back(line("-ERR Too many bad commands."));
            self.close();
        } else {
            self.events.push_back(line(reply));
        }
    }

    fn close(&mut self) {
        self.state = State::Done;
        self.input.clear();
        self.events.push_back(Event::Close);
    }

    fn command(&mut self, raw: Vec<u8>) {
        if self.state == State::Sasl {
            let text = String::from_utf8_lossy(&raw).trim().to_string();
            if text == "*" {
                self.state = State::Authorization { user: None };
                self.events.push_back(Event::SaslAborted);
                self.events.push_back(line("-ERR Authentication aborted by client."));
                return;
            }
            if !valid_base64(&text) {
                self.state = State::Authorization { user: None };
                self.events.push_back(Event::SaslAborted);
                self.bad_command("-ERR Invalid base64 data in continued response");
                return;
            }
            self.pending = Pending::Sasl;
            self.events.push_back(Event::SaslResponse(text));
            return;
        }
        let Ok(text) = String::from_utf8(raw) else {
            self.bad_command("-ERR Invalid characters in command.");
            return;
        };
        if text.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            self.bad_command("-ERR Invalid characters in command.");
            return;
        }
        let (cmd, args) = match text.split_once(' ') {
            Some((c, a)) => (c.to_ascii_uppercase(), a),
            None => (text.to_ascii_uppercase(), ""),
        };
        match self.state {
            State::Authorization { .. } => self.authorization(&cmd, args),
            State::Transaction => self.transaction(&cmd, args),
            State::Sasl | State::Done => {}
        }
    }

    fn capa(&self) -> Event {
        let mut out = String::from("+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n");
        if self.state != State::Transaction {
            if self.cfg.starttls && !self.cfg.tls {
                out.push_str("STLS\r\n");
            }
            if self.cfg.plaintext_allowed {
                out.push_str("USER\r\n");
            }
            let mechs = self.offered_mechanisms();
            if !mechs.is_empty() {
                out.push_str(&format!("SASL {}\r\n", mechs.join(" ")));
            }
        }
        out.push_str(".\r\n");
        Event::Send(out.into_bytes())
    }

    fn offered_mechanisms(&self) -> Vec<String> {
        self.cfg
            .mechanisms
            .iter()
            .filter(|(_, plain)| !plain || self.cfg.plaintext_allowed)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn plaintext_refused(&mut self) {
        self.bad += 1;
        self.events
            .push_back(line("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."));
    }

    fn authorization(&mut self, cmd: &str, args: &str) {
        match cmd {
            "CAPA" => self.events.push_back(self.capa()),
            "NOOP" => self.events.push_back(line("+OK")),
            "QUIT" => {
                self.events.push_back(line("+OK Logging out"));
                self.close();
            }
            "STLS" => {
                if self.cfg.tls {
                    self.events.push_back(line("-ERR TLS is already active."));
                } else if !self.cfg.starttls {
                    self.events.push_back(line("-ERR TLS support isn't enabled."));
                } else {
                    self.events.push_back(line("+OK Begin TLS negotiation now."));
                    // RFC 2595 §4 (and CVE-2011-0411 style injection): nothing the client sent
                    // before the handshake is acted upon after it.
                    self.input.clear();
                    self.pending = Pending::Tls;
                    self.events.push_back(Event::StartTls);
                }
            }
            "USER" => {
                if !self.cfg.plaintext_allowed {
                    self.plaintext_refused();
                } else if args.is_empty() {
                    self.bad_command("-ERR USER: Missing argument");
                } else {
                    self.state = State::Authorization { user: Some(args.to_string()) };
                    self.events.push_back(line("+OK"));
                }
            }
            "PASS" => {
                let State::Authorization { user } = &self.state else { return };
                if !self.cfg.plaintext_allowed {
                    self.plaintext_refused();
                    return;
                }
                let Some(user) = user.clone() else {
                    self.bad_command("-ERR No username given.");
                    return;
                };
                self.state = State::Authorization { user: None };
                self.last_attempt = Some(("PLAIN".into(), Some(user.clone())));
                self.pending = Pending::Login;
                self.events.push_back(Event::Login { user, pass: args.to_string() });
            }
            "AUTH" => self.auth(args),
            "APOP" => self.bad_command("-ERR APOP is not supported."),
            "STAT" | "LIST" | "RETR" | "DELE" | "RSET" | "TOP" | "UIDL" | "LAST" => {
                self.bad_command("-ERR Unknown command.");
            }
            _ => self.bad_command(&format!("-ERR Unknown command: {}", printable(cmd))),
        }
    }

    fn auth(&mut self, args: &str) {
        let mut parts = args.split(' ').filter(|s| !s.is_empty());
        let Some(mech) = parts.next() else {
            // Pre-RFC 5034 clients ask with a bare AUTH for the list (Dovecot answers it).
            let mut out = String::from("+OK\r\n");
            for m in self.offered_mechanisms() {
                out.push_str(&m);
                out.push_str("\r\n");
            }
            out.push_str(".\r\n");
            self.events.push_back(Event::Send(out.into_bytes()));
            return;
        };
        let mech = mech.to_ascii_uppercase();
        let initial = parts.next().map(str::to_string);
        if parts.next().is_some() {
            self.bad_command("-ERR Too many arguments.");
            return;
        }
        let known = self.cfg.mechanisms.iter().find(|(n, _)| n.eq_ignore_ascii_case(&mech)).cloned();
        match known {
            None => {
                self.bad += 1;
                self.events.push_back(line("-ERR [AUTH] Unsupported authentication mechanism."));
                return;
            }
            Some((_, true)) if !self.cfg.plaintext_allowed => {
                self.plaintext_refused();
                return;
            }
            Some(_) => {}
        }
        // RFC 5034: "=" is an empty initial response.
        let initial = match initial {
            Some(i) if i == "=" => Some(String::new()),
            Some(i) if !valid_base64(&i) => {
                self.bad_command("-ERR Invalid base64 data in initial response");
                return;
            }
            other => other,
        };
        self.last_attempt = Some((mech.clone(), None));
        self.state = State::Sasl;
        self.pending = Pending::Sasl;
        self.events.push_back(Event::Authenticate { mech, initial });
    }

    /// The handshake after STLS finished (`ok`), or failed (the driver then closes).
    pub fn tls_started(&mut self, ok: bool, plaintext_allowed: bool) {
        if self.pending != Pending::Tls {
            return;
        }
        self.pending = Pending::None;
        if !ok {
            self.close();
            return;
        }
        self.cfg.tls = true;
        self.cfg.starttls = false;
        self.cfg.plaintext_allowed = plaintext_allowed;
        // Anything learnt before TLS is forgotten (RFC 2595 §4).
        self.state = State::Authorization { user: None };
    }

    /// A SASL challenge from authd for the client.
    pub fn auth_challenge(&mut self, challenge: &str) {
        if self.pending != Pending::Sasl {
            return;
        }
        self.pending = Pending::None;
        self.events.push_back(line(&format!("+ {challenge}")));
    }

    /// The end of USER/PASS or AUTH.
    pub fn login_result(&mut self, outcome: LoginOutcome) {
        if !matches!(self.pending, Pending::Login | Pending::Sasl) {
            return;
        }
        self.pending = Pending::None;
        match outcome {
            LoginOutcome::Ok(messages) => {
                self.stats.message_count = messages.len() as u64;
                self.stats.mailbox_size = messages.iter().map(|m| m.size).sum();
                self.marks = vec![Msg { deleted: false, retrieved: false }; messages.len()];
                self.messages = messages;
                self.state = State::Transaction;
                self.events.push_back(line("+OK Logged in."));
            }
            LoginOutcome::Failed(reason) => {
                self.state = State::Authorization { user: None };
                self.bad += 1;
                let text = match reason {
                    Some(r) if !r.is_empty() => format!("-ERR [AUTH] {}", printable(&r)),
                    _ => "-ERR [AUTH] Authentication failed.".to_string(),
                };
                self.events.push_back(line(&text));
                if self.bad >= MAX_BAD_COMMANDS {
                    self.close();
                }
            }
            LoginOutcome::TempFailed => {
                self.state = State::Authorization { user: None };
                self.events.push_back(line("-ERR [SYS/TEMP] Temporary authentication failure."));
            }
            LoginOutcome::MailboxFailed { in_use } => {
                // The process may already run as the user: this connection cannot try again.
                let text = if in_use {
                    "-ERR [IN-USE] Mailbox is locked by another POP3 session."
                } else {
                    "-ERR [SYS/TEMP] Couldn't open INBOX."
                };
                self.events.push_back(line(text));
                self.close();
            }
        }
    }

    fn message_index(&mut self, arg: &str) -> Option<usize> {
        let n: usize = match arg.parse() {
            Ok(n) if n >= 1 && !arg.starts_with('+') => n,
            _ => {
                self.bad_command(&format!("-ERR Invalid message number: {}", printable(arg)));
                return None;
            }
        };
        if n > self.messages.len() {
            self.events.push_back(line(&format!("-ERR There's no message {n}.")));
            return None;
        }
        if self.marks[n - 1].deleted {
            self.events.push_back(line("-ERR Message is deleted."));
            return None;
        }
        Some(n - 1)
    }

    fn transaction(&mut self, cmd: &str, args: &str) {
        let mut argv = args.split(' ').filter(|s| !s.is_empty());
        match cmd {
            "CAPA" => self.events.push_back(self.capa()),
            "NOOP" => self.events.push_back(line("+OK")),
            "STAT" => {
                let (n, size) = self.live().fold((0u64, 0u64), |(n, s), (_, m)| (n + 1, s + m.size));
                self.events.push_back(line(&format!("+OK {n} {size}")));
            }
            "LIST" | "UIDL" => {
                let uidl = cmd == "UIDL";
                let item = |i: usize, m: &MessageInfo| {
                    if uidl { format!("{} {}", i + 1, m.uidl) } else { format!("{} {}", i + 1, m.size) }
                };
                match argv.next() {
                    Some(a) => {
                        if let Some(i) = self.message_index(a) {
                            let text = format!("+OK {}", item(i, &self.messages[i]));
                            self.events.push_back(line(&text));
                        }
                    }
                    None => {
                        let mut out = if uidl {
                            String::from("+OK\r\n")
                        } else {
                            let (n, size) = self.live().fold((0u64, 0u64), |(n, s), (_, m)| (n + 1, s + m.size));
                            format!("+OK {n} messages ({size} octets):\r\n")
                        };
                        for (i, m) in self.live() {
                            out.push_str(&item(i, m));
                            out.push_str("\r\n");
                        }
                        out.push_str(".\r\n");
                        self.events.push_back(Event::Send(out.into_bytes()));
                    }
                }
            }
            "RETR" => {
                let Some(a) = argv.next() else {
                    self.bad_command("-ERR RETR: Missing argument");
                    return;
                };
                if let Some(index) = self.message_index(a) {
                    self.pending = Pending::Message { index, top: None };
                    self.events.push_back(Event::Retrieve { index, top: None });
                }
            }
            "TOP" => {
                let (Some(a), Some(n)) = (argv.next(), argv.next()) else {
                    self.bad_command("-ERR TOP: Missing argument");
                    return;
                };
                let Ok(lines) = n.parse::<u64>() else {
                    self.bad_command(&format!("-ERR Invalid number of lines: {}", printable(n)));
                    return;
                };
                if let Some(index) = self.message_index(a) {
                    self.pending = Pending::Message { index, top: Some(lines) };
                    self.events.push_back(Event::Retrieve { index, top: Some(lines) });
                }
            }
            "DELE" => {
                let Some(a) = argv.next() else {
                    self.bad_command("-ERR DELE: Missing argument");
                    return;
                };
                if let Some(i) = self.message_index(a) {
                    self.marks[i].deleted = true;
                    self.events.push_back(line("+OK Marked to be deleted."));
                }
            }
            "RSET" => {
                for m in &mut self.marks {
                    m.deleted = false;
                }
                self.events.push_back(line("+OK"));
            }
            "QUIT" => {
                let delete: Vec<usize> =
                    self.marks.iter().enumerate().filter(|(_, m)| m.deleted).map(|(i, _)| i).collect();
                let seen: Vec<usize> =
                    self.marks.iter().enumerate().filter(|(_, m)| m.retrieved && !m.deleted).map(|(i, _)| i).collect();
                self.pending = Pending::Commit;
                self.events.push_back(Event::Commit { delete, seen });
            }
            "USER" | "PASS" | "AUTH" | "STLS" | "APOP" => self.bad_command("-ERR Already logged in."),
            _ => self.bad_command(&format!("-ERR Unknown command: {}", printable(cmd))),
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &MessageInfo)> {
        self.messages.iter().enumerate().filter(|(i, _)| !self.marks[*i].deleted)
    }

    /// The content of the message asked for by [`Event::Retrieve`] (as stored: LF or CRLF
    /// line endings), or `None` when it could not be read (expunged meanwhile, I/O error).
    pub fn message_result(&mut self, content: Option<&[u8]>) {
        let Pending::Message { index, top } = self.pending else { return };
        self.pending = Pending::None;
        let Some(content) = content else {
            self.events.push_back(line("-ERR Message can't be read: it was deleted or the disk failed."));
            return;
        };
        let body = dot_stuff(content, top);
        let head = match top {
            None => {
                self.marks[index].retrieved = true;
                self.stats.retr_count += 1;
                self.stats.retr_bytes += self.messages[index].size;
                format!("+OK {} octets\r\n", self.messages[index].size)
            }
            Some(_) => {
                self.stats.top_count += 1;
                self.stats.top_bytes += body.len() as u64;
                "+OK\r\n".to_string()
            }
        };
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        out.extend_from_slice(b".\r\n");
        self.events.push_back(Event::Send(out));
    }

    /// The result of [`Event::Commit`]: `Ok(deleted)` with the number of messages deleted.
    pub fn commit_result(&mut self, result: Result<usize, ()>) {
        if self.pending != Pending::Commit {
            return;
        }
        self.pending = Pending::None;
        match result {
            Ok(n) => {
                self.stats.deleted_count = n as u64;
                self.stats.deleted_bytes =
                    self.marks.iter().zip(&self.messages).filter(|(m, _)| m.deleted).map(|(_, i)| i.size).sum();
                self.events.push_back(line(if n > 0 {
                    "+OK Logging out, messages deleted."
                } else {
                    "+OK Logging out."
                }));
            }
            Err(()) => self.events.push_back(line("-ERR [SYS/TEMP] Couldn't delete messages: nothing was deleted.")),
        }
        self.close();
    }
}

/// Dovecot's `pop3_logout_format` variables: `%t %p %r %b %d %m %s` and `%%`
/// (top count/bytes, retr count/bytes, deleted count, message count, mailbox size) with
/// `%{deleted_bytes}` too.
pub fn logout_line(format: &str, s: &Stats) -> String {
    let mut out = String::new();
    let mut it = format.chars().peekable();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let name: String = match it.next() {
            Some('{') => it.by_ref().take_while(|&c| c != '}').collect(),
            Some(c) => c.to_string(),
            None => break,
        };
        let v = match name.as_str() {
            "%" => {
                out.push('%');
                continue;
            }
            "t" | "top_count" => s.top_count,
            "p" | "top_bytes" => s.top_bytes,
            "r" | "retr_count" => s.retr_count,
            "b" | "retr_bytes" => s.retr_bytes,
            "d" | "deleted_count" => s.deleted_count,
            "deleted_bytes" => s.deleted_bytes,
            "m" | "message_count" => s.message_count,
            "s" | "size" => s.mailbox_size,
            other => {
                out.push('%');
                out.push_str(other);
                continue;
            }
        };
        out.push_str(&v.to_string());
    }
    out
}

/// A message for the wire: CRLF line endings, lines starting with `.` doubled (RFC 1939
/// §3), ending with CRLF (the terminating `.` line is the caller's). With `top`, only the
/// header, the blank line and that many body lines.
pub fn dot_stuff(content: &[u8], top: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 32 + 2);
    let mut in_body = false;
    let mut body_lines = 0u64;
    for raw in content.split_inclusive(|&b| b == b'\n') {
        if in_body && top.is_some_and(|t| body_lines >= t) {
            break;
        }
        let mut l = raw.strip_suffix(b"\n").unwrap_or(raw);
        l = l.strip_suffix(b"\r").unwrap_or(l);
        if l.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(l);
        out.extend_from_slice(b"\r\n");
        if in_body {
            body_lines += 1;
        } else if l.is_empty() {
            in_body = true;
        }
    }
    out
}

/// The size of `content` as RETR sends it (CRLF line endings, before dot-stuffing; a last
/// line without a newline gets one).
pub fn wire_size(content: &[u8]) -> u64 {
    let mut size = 0u64;
    for raw in content.split_inclusive(|&b| b == b'\n') {
        let mut l = raw.strip_suffix(b"\n").unwrap_or(raw);
        l = l.strip_suffix(b"\r").unwrap_or(l);
        size += l.len() as u64 + 2;
    }
    size
}

fn valid_base64(s: &str) -> bool {
    s.is_empty() || rpost_auth_proto::b64_decode(s).is_some()
}

fn printable(s: &str) -> String {
    rpost_auth_proto::printable(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            greeting: "rpost ready.".into(),
            starttls: true,
            tls: false,
            plaintext_allowed: false,
            mechanisms: vec![("PLAIN".into(), true), ("LOGIN".into(), true), ("SCRAM-SHA-256".into(), false)],
        }
    }

    /// Feeds `input` one byte at a time (and whole), collecting events; `answer` plays the
    /// driver.
    fn run(cfg: Config, input: &str, mut answer: impl FnMut(&mut Session, &Event)) -> (String, Vec<Event>) {
        let mut results = Vec::new();
        for split in [1usize, 7, input.len().max(1)] {
            let mut s = Session::new(cfg.clone());
            let mut out = String::new();
            let mut events = Vec::new();
            // A NUL separates what the client sends only after the previous replies (the
            // STLS handshake), so no chunk crosses it.
            for chunk in input.split('\0').flat_map(|seg| seg.as_bytes().chunks(split)) {
                s.feed(chunk);
                while let Some(e) = s.next_event() {
                    if let Event::Send(b) = &e {
                        out.push_str(&String::from_utf8_lossy(b));
                    } else {
                        answer(&mut s, &e);
                        events.push(e);
                    }
                }
            }
            results.push((out, events));
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "split-dependent: {results:?}");
        results.remove(0)
    }

    fn msgs() -> Vec<MessageInfo> {
        vec![
            MessageInfo { size: 20, uidl: "000000010000005e".into() },
            MessageInfo { size: 31, uidl: "000000020000005e".into() },
        ]
    }

    fn driver(s: &mut Session, e: &Event) {
        match e {
            Event::StartTls => s.tls_started(true, true),
            Event::Login { pass, .. } => {
                s.login_result(if pass == "secret" { LoginOutcome::Ok(msgs()) } else { LoginOutcome::Failed(None) })
            }
            Event::Authenticate { initial: Some(_), .. } => s.login_result(LoginOutcome::Ok(msgs())),
            Event::Authenticate { initial: None, .. } => s.auth_challenge(""),
            Event::SaslResponse(_) => s.login_result(LoginOutcome::Ok(msgs())),
            Event::Retrieve { index, .. } => {
                let c: &[u8] =
                    if *index == 0 { b"Subject: a\n\n.hidden\nline2\n" } else { b"X: y\r\n\r\nb1\r\nb2\r\nb3" };
                s.message_result(Some(c))
            }
            Event::Commit { delete, .. } => s.commit_result(Ok(delete.len())),
            _ => {}
        }
    }

    #[test]
    fn plaintext_waits_for_stls() {
        let (out, events) =
            run(cfg(), "CAPA\r\nUSER alice\r\nPASS x\r\nAUTH PLAIN AGEAYg==\r\nSTLS\r\n\0CAPA\r\nQUIT\r\n", driver);
        let pre = "+OK rpost ready.\r\n+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nSASL SCRAM-SHA-256\r\n.\r\n";
        assert!(out.starts_with(pre), "{out}");
        let refused = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
        assert_eq!(out.matches(refused).count(), 3, "{out}");
        assert!(out.contains("+OK Begin TLS negotiation now.\r\n+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN SCRAM-SHA-256\r\n.\r\n"), "{out}");
        assert!(out.ends_with("+OK Logging out\r\n"));
        assert_eq!(events, vec![Event::StartTls, Event::Close]);
    }

    #[test]
    fn stls_drops_pipelined_plaintext_input() {
        // The USER after STLS in the same packet must not survive the handshake.
        let mut s = Session::new(cfg());
        s.feed(b"STLS\r\nUSER mallory\r\n");
        let mut evs = Vec::new();
        while let Some(e) = s.next_event() {
            evs.push(e);
        }
        assert_eq!(evs.last(), Some(&Event::StartTls));
        s.tls_started(true, true);
        assert_eq!(s.next_event(), None);
        s.feed(b"PASS x\r\n");
        assert_eq!(s.next_event(), Some(line("-ERR No username given.")));
    }

    #[test]
    fn a_full_transaction() {
        let c = Config { tls: true, starttls: false, plaintext_allowed: true, ..cfg() };
        let input = "USER alice\r\nPASS wrong\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL\r\nUIDL 2\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nDELE 1\r\nLIST 1\r\nSTAT\r\nRSET\r\nSTAT\r\nDELE 2\r\nLIST\r\nQUIT\r\n";
        let (out, events) = run(c, input, driver);
        let expect = [
            "+OK rpost ready.",
            "+OK",
            "-ERR [AUTH] Authentication failed.",
            "+OK",
            "+OK Logged in.",
            "+OK 2 51",
            "+OK 2 messages (51 octets):\r\n1 20\r\n2 31\r\n.",
            "+OK\r\n1 000000010000005e\r\n2 000000020000005e\r\n.",
            "+OK 2 000000020000005e",
            "+OK 20 octets\r\nSubject: a\r\n\r\n..hidden\r\nline2\r\n.",
            "+OK\r\nX: y\r\n\r\nb1\r\n.",
            "+OK Marked to be deleted.",
            "-ERR Message is deleted.",
            "-ERR Message is deleted.",
            "+OK 1 31",
            "+OK",
            "+OK 2 51",
            "+OK Marked to be deleted.",
            "+OK 1 messages (20 octets):\r\n1 20\r\n.",
            "+OK Logging out, messages deleted.",
        ]
        .map(|l| format!("{l}\r\n"))
        .concat();
        assert_eq!(out, expect);
        assert!(events.contains(&Event::Commit { delete: vec![1], seen: vec![0] }), "{events:?}");
        assert_eq!(events.last(), Some(&Event::Close));
    }

    #[test]
    fn sasl_exchange_and_cancel() {
        let c = Config { tls: true, starttls: false, plaintext_allowed: true, ..cfg() };
        let (out, events) = run(c.clone(), "AUTH PLAIN\r\n*\r\nAUTH PLAIN\r\nAGEAYg==\r\nSTAT\r\n", driver);
        assert_eq!(
            out,
            "+OK rpost ready.\r\n+ \r\n-ERR Authentication aborted by client.\r\n+ \r\n+OK Logged in.\r\n+OK 2 51\r\n"
        );
        assert!(events.contains(&Event::SaslAborted));
        assert!(events.contains(&Event::SaslResponse("AGEAYg==".into())));
        let (out, _) = run(c.clone(), "AUTH NTLM\r\nAUTH PLAIN !!\r\nAUTH PLAIN =\r\n", driver);
        assert!(out.contains("-ERR [AUTH] Unsupported authentication mechanism.\r\n"), "{out}");
        assert!(out.contains("-ERR Invalid base64"), "{out}");
        assert!(out.ends_with("+OK Logged in.\r\n"), "{out}");
        let (_, events) = run(c, "AUTH PLAIN =\r\n", |_, _| {});
        assert_eq!(events, vec![Event::Authenticate { mech: "PLAIN".into(), initial: Some(String::new()) }]);
    }

    #[test]
    fn errors_and_limits() {
        let c = Config { tls: true, starttls: false, plaintext_allowed: true, ..cfg() };
        let (out, _) = run(
            c.clone(),
            "STAT\r\nFOO\r\nUSER alice\r\nPASS secret\r\nRETR 3\r\nRETR 0\r\nRETR x\r\nTOP 1\r\nUSER x\r\n",
            driver,
        );
        for want in [
            "-ERR Unknown command.\r\n",
            "-ERR Unknown command: FOO\r\n",
            "-ERR There's no message 3.\r\n",
            "-ERR Invalid message number: 0\r\n",
            "-ERR Invalid message number: x\r\n",
            "-ERR TOP: Missing argument\r\n",
            "-ERR Already logged in.\r\n",
        ] {
            assert!(out.contains(want), "{want:?} in {out}");
        }
        let long = format!("USER {}\r\nNOOP\r\n", "a".repeat(MAX_LINE + 10));
        let (out, _) = run(c.clone(), &long, driver);
        assert_eq!(out, "+OK rpost ready.\r\n-ERR Input line too long.\r\n+OK\r\n");
        let (out, events) = run(c, &"BAD\r\n".repeat(20), driver);
        assert_eq!(out.matches("-ERR").count(), MAX_BAD_COMMANDS as usize);
        assert!(out.ends_with("-ERR Too many bad commands.\r\n"));
        assert_eq!(events, vec![Event::Close]);
    }

    #[test]
    fn dropped_connection_commits_nothing() {
        let c = Config { tls: true, starttls: false, plaintext_allowed: true, ..cfg() };
        let (_, events) = run(c, "USER a\r\nPASS secret\r\nDELE 1\r\nDELE 2\r\n", driver);
        assert!(!events.iter().any(|e| matches!(e, Event::Commit { .. })), "{events:?}");
    }

    #[test]
    fn wire_forms() {
        assert_eq!(dot_stuff(b"a\n.b\n..c\nlast", None), b"a\r\n..b\r\n...c\r\nlast\r\n");
        assert_eq!(dot_stuff(b"H: 1\n\nb1\nb2\n", Some(0)), b"H: 1\r\n\r\n");
        assert_eq!(dot_stuff(b"H: 1\r\n\r\nb1\r\nb2\r\n", Some(5)), b"H: 1\r\n\r\nb1\r\nb2\r\n");
        assert_eq!(wire_size(b"a\nb\r\nc"), 9);
        let s = Stats {
            top_count: 1,
            top_bytes: 2,
            retr_count: 3,
            retr_bytes: 4,
            deleted_count: 5,
            message_count: 6,
            mailbox_size: 7,
            deleted_bytes: 8,
        };
        assert_eq!(
            logout_line("top=%t/%p, retr=%r/%b, del=%d/%m, size=%s %% %{deleted_bytes} %q", &s),
            "top=1/2, retr=3/4, del=5/6, size=7 % 8 %q"
        );
    }
}

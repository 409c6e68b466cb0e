//! The SMTP/LMTP client session, sans I/O: server replies in, commands and per-recipient
//! results out.
//!
//! The driver ([`crate::driver`]) connects, calls [`Session::start`], and then does what
//! each [`Step`] says: write `send`, stream the message body when `body` is set (dot-stuffed,
//! ending with `.`), and read the next reply with the timeout of `wait`, which it hands to
//! [`Session::reply`]. Timeouts, lost connections and malformed replies go to
//! [`Session::io_error`] and [`Session::malformed`]. When `wait` is `None` the conversation
//! is over; [`Session::results`] has one result per recipient.
//!
//! Behaviour follows Postfix's smtp(8)/lmtp(8): EHLO (HELO when EHLO is refused, SMTP
//! only) or LHLO; PIPELINING when offered, with DATA in the same group as MAIL and RCPT;
//! SIZE, BODY=8BITMIME, SMTPUTF8 and the DSN parameters when offered; SMTP loop detection
//! (the server greets or answers EHLO with our own `myhostname`); per-recipient replies
//! after the final dot for LMTP; QUIT at the end.
//!
//! STARTTLS (RFC 3207) by [`Config::tls`], as Postfix's `*_tls_security_level`: when the
//! EHLO reply offers it (and the level is not `none`) the session sends STARTTLS and, on
//! 220, asks the driver for the handshake ([`Stage::Tls`]); the driver answers with
//! [`Session::tls_started`] (EHLO again, capabilities from the new reply only) or
//! [`Session::tls_failed`]. Not offered or refused: `may` goes on in plaintext, mandatory
//! levels defer (4.7.4 "TLS is required, but was not offered by host ...", 4.7.5 for a
//! refused STARTTLS or a failed handshake). A failed handshake at `may` is marked
//! ([`Session::tls_fallback`]) so the caller retries the server without TLS, as Postfix does.

use std::collections::VecDeque;

use rpost_ipc::Outcome;
use rpost_smtp_proto::xtext_encode;

use crate::nexthop::Protocol;
use crate::reply::{ReplyError, ServerReply};

/// Most commands in flight at once with PIPELINING (keeps well inside socket buffers, so a
/// server that does not read while it writes cannot deadlock us).
pub const PIPELINE_WINDOW: usize = 100;

/// Which timeout applies while waiting for a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Greeting, EHLO/HELO/LHLO (`smtp_helo_timeout`, `lmtp_lhlo_timeout`).
    Helo,
    Mail,
    Rcpt,
    /// The reply to DATA (`*_data_init_timeout`).
    DataInit,
    /// The reply(ies) after the final dot (`*_data_done_timeout`).
    DataDone,
    Quit,
    /// Not a reply: run the TLS handshake (`*_starttls_timeout`), then call
    /// [`Session::tls_started`] or [`Session::tls_failed`].
    Tls,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// Bytes to write (commands).
    pub send: Vec<u8>,
    /// Then write the message body, dot-stuffed and terminated by `.` CRLF.
    pub body: bool,
    /// Then read a reply with this stage's timeout; `None`: close the connection.
    pub wait: Option<Stage>,
}

impl Step {
    fn done() -> Step {
        Step::default()
    }
}

/// Static session settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub protocol: Protocol,
    /// Name sent with EHLO/HELO/LHLO (`smtp_helo_name`, `lmtp_lhlo_name`).
    pub helo_name: String,
    /// `myhostname`, for loop detection.
    pub myhostname: String,
    /// The next hop as requested, for the loop message.
    pub nexthop: String,
    /// `smtp_skip_5xx_greeting`: a 5xx greeting defers instead of bouncing.
    pub skip_5xx_greeting: bool,
    /// Do not wait for the reply to QUIT (Postfix's `smtp_skip_quit_response`).
    pub skip_quit_response: bool,
    /// End a session that completed its handshake without QUIT, so the connection can be
    /// cached for the next delivery ([`Session::reusable`]).
    pub keep_open: bool,
    /// The TLS security level for this session (`None` when TLS is off or impossible,
    /// e.g. the plaintext retry after a failed handshake at `may`).
    pub tls: rpost_tls::ClientLevel,
}

/// One recipient to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    pub address: String,
    /// DSN NOTIFY bits (NEVER 1, SUCCESS 2, FAILURE 4, DELAY 8).
    pub notify: Option<u8>,
    /// DSN ORCPT, stored as `type;decoded-address`.
    pub orcpt: Option<String>,
}

/// The message to deliver.
#[derive(Debug, Clone)]
pub struct Message {
    /// "" for the null sender.
    pub sender: String,
    pub recipients: Vec<Rcpt>,
    /// Content size in bytes (for SIZE=).
    pub size: u64,
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// DSN ENVID, decoded.
    pub envid: Option<String>,
    /// DSN RET: FULL (true) or HDRS (false).
    pub ret_full: Option<bool>,
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    pub outcome: Outcome,
    pub dsn: String,
    /// Postfix-style reason: the server's reply for success, else `host H said: ...`.
    pub reason: String,
}

/// How the connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoFailure {
    /// No reply (or write progress) within the stage's timeout.
    Timeout,
    /// End of file or a socket error.
    Lost,
}

/// Server capabilities from the EHLO/LHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub esmtp: bool,
    pub pipelining: bool,
    /// SIZE advertised; `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
}

impl Caps {
    /// Parses the capability lines of a 250 EHLO reply (all lines after the first).
    pub fn from_ehlo(reply: &ServerReply) -> Caps {
        let mut caps = Caps { esmtp: true, ..Caps::default() };
        for text in reply.texts().skip(1) {
            let mut words = text.split([' ', '=']);
            let Some(keyword) = words.next() else { continue };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eightbitmime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "STARTTLS" => caps.starttls = true,
                _ => {}
            }
        }
        caps
    }
}

/// A command whose reply is awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Greeting,
    Ehlo,
    Helo,
    Mail,
    Rcpt(usize),
    Data,
    /// SMTP: the one reply after the dot, for all accepted recipients.
    Dot,
    /// LMTP: the reply for this recipient after the dot.
    DotRcpt(usize),
    /// The dot after a 354 that came though no recipient was accepted.
    DotDiscard,
    StartTls,
    Quit,
}

impl Cmd {
    fn stage(self) -> Stage {
        match self {
            Cmd::Greeting | Cmd::Ehlo | Cmd::Helo | Cmd::StartTls => Stage::Helo,
            Cmd::Mail => Stage::Mail,
            Cmd::Rcpt(_) => Stage::Rcpt,
            Cmd::Data => Stage::DataInit,
            Cmd::Dot | Cmd::DotRcpt(_) | Cmd::DotDiscard => Stage::DataDone,
            Cmd::Quit => Stage::Quit,
        }
    }

    /// Postfix's "... while X" for timeouts and lost connections.
    fn activity(self, protocol: Protocol) -> &'static str {
        match self {
            Cmd::Greeting => "receiving the initial server greeting",
            Cmd::Ehlo if protocol == Protocol::Lmtp => "performing the LHLO handshake",
            Cmd::Ehlo => "performing the EHLO handshake",
            Cmd::Helo => "performing the HELO handshake",
            Cmd::StartTls => "sending STARTTLS",
            Cmd::Mail => "sending MAIL FROM",
            Cmd::Rcpt(_) => "sending RCPT TO",
            Cmd::Data => "sending DATA command",
            Cmd::Dot | Cmd::DotRcpt(_) | Cmd::DotDiscard => "sending end of data -- message may be sent more than once",
            Cmd::Quit => "sending QUIT",
        }
    }

    /// Postfix's "(in reply to X)".
    fn request(self, protocol: Protocol) -> &'static str {
        match self {
            Cmd::Greeting => "initial greeting",
            Cmd::Ehlo if protocol == Protocol::Lmtp => "LHLO command",
            Cmd::Ehlo => "EHLO command",
            Cmd::Helo => "HELO command",
            Cmd::StartTls => "STARTTLS command",
            Cmd::Mail => "MAIL FROM command",
            Cmd::Rcpt(_) => "RCPT TO command",
            Cmd::Data => "DATA command",
            Cmd::Dot | Cmd::DotRcpt(_) | Cmd::DotDiscard => "end of DATA command",
            Cmd::Quit => "QUIT command",
        }
    }
}

/// The client state machine for one delivery over one connection.
#[derive(Debug)]
pub struct Session {
    cfg: Config,
    msg: Message,
    /// `host[addr]` of the server, for reasons.
    peer: String,
    caps: Caps,
    results: Vec<Option<RcptResult>>,
    /// Commands sent, replies awaited, oldest first.
    pending: VecDeque<Cmd>,
    /// Transaction commands not sent yet.
    unsent: VecDeque<Cmd>,
    window: usize,
    /// Recipients accepted at RCPT, in order.
    accepted: Vec<usize>,
    mail_ok: bool,
    handshake_done: bool,
    quit_sent: bool,
    /// Ended without QUIT, every reply read: the connection may serve another delivery.
    reusable: bool,
    warnings: Vec<String>,
    /// The conversation runs over TLS.
    tls_active: bool,
    /// The handshake failed at level `may`: the caller may retry without TLS.
    tls_fallback: bool,
}

fn cmd_line(out: &mut Vec<u8>, line: &str) {
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An address that cannot be put into a command line as it is.
fn unsafe_address(a: &str) -> bool {
    a.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

fn notify_keyword(bits: u8) -> Option<String> {
    if bits & 1 != 0 {
        return Some("NEVER".into());
    }
    let names: Vec<&str> =
        [(2, "SUCCESS"), (4, "FAILURE"), (8, "DELAY")].iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
    (!names.is_empty()).then(|| names.join(","))
}

impl Session {
    /// `peer` is `host[addr]` (or `host[path]` for a UNIX-domain socket).
    pub fn new(cfg: Config, msg: Message, peer: impl Into<String>) -> Session {
        let results = msg
            .recipients
            .iter()
            .map(|r| {
                unsafe_address(&r.address).then(|| RcptResult {
                    outcome: Outcome::Bounced,
                    dsn: "5.1.3".into(),
                    reason: format!("bad recipient address syntax: {}", r.address.escape_debug()),
                })
            })
            .collect();
        Session {
            cfg,
            msg,
            peer: peer.into(),
            caps: Caps::default(),
            results,
            pending: VecDeque::new(),
            unsent: VecDeque::new(),
            window: 1,
            accepted: Vec::new(),
            mail_ok: false,
            handshake_done: false,
            quit_sent: false,
            reusable: false,
            warnings: Vec::new(),
            tls_active: false,
            tls_fallback: false,
        }
    }

    /// The first step: wait for the greeting.
    pub fn start(&mut self) -> Step {
        self.pending.push_back(Cmd::Greeting);
        Step { send: Vec::new(), body: false, wait: Some(Stage::Helo) }
    }

    /// The first step on a cached connection whose EHLO reply (`caps`) was read by an
    /// earlier session and which answered RSET just now: straight to MAIL FROM.
    pub fn resume(&mut self, caps: Caps) -> Step {
        self.caps = caps;
        self.handshake_done = true;
        self.begin_transaction()
    }

    /// True when the session ended without QUIT after a clean conversation
    /// ([`Config::keep_open`]): the caller may cache the connection.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// The server's capabilities (after EHLO).
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// True once the greeting and EHLO/HELO are done (for the `delays=` split).
    pub fn handshake_done(&self) -> bool {
        self.handshake_done
    }

    /// Warnings for the log (e.g. a server answering with our own host name).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// One result per recipient, in request order. Recipients the conversation never
    /// settled (it cannot happen after the final step) are deferred.
    pub fn results(&self) -> Vec<RcptResult> {
        self.results
            .iter()
            .map(|r| {
                r.clone().unwrap_or_else(|| RcptResult {
                    outcome: Outcome::Deferred,
                    dsn: "4.3.0".into(),
                    reason: "delivery status unknown (internal error)".into(),
                })
            })
            .collect()
    }

    fn unresolved(&self) -> impl Iterator<Item = usize> + '_ {
        self.results.iter().enumerate().filter(|(_, r)| r.is_none()).map(|(i, _)| i)
    }

    fn set(&mut self, i: usize, outcome: Outcome, dsn: &str, reason: &str) {
        if let Some(slot) = self.results.get_mut(i)
            && slot.is_none()
        {
            *slot = Some(RcptResult { outcome, dsn: dsn.to_owned(), reason: reason.to_owned() });
        }
    }

    /// Settles every recipient still open.
    fn fail_all(&mut self, outcome: Outcome, dsn: &str, reason: &str) {
        let open: Vec<usize> = self.unresolved().collect();
        for i in open {
            self.set(i, outcome, dsn, reason);
        }
    }

    /// `host H said: REPLY (in reply to X)`.
    fn said(&self, r: &ServerReply, cmd: Cmd) -> String {
        format!("host {} said: {} (in reply to {})", self.peer, r.text(), cmd.request(self.cfg.protocol))
    }

    fn outcome_of(r: &ServerReply) -> Outcome {
        match r.class() {
            2 => Outcome::Sent,
            5 => Outcome::Bounced,
            _ => Outcome::Deferred,
        }
    }

    /// A server reply to the oldest command in flight.
    pub fn reply(&mut self, r: ServerReply) -> Step {
        let Some(cmd) = self.pending.pop_front() else {
            let reason = format!("host {} sent an unexpected reply: {}", self.peer, r.text());
            self.fail_all(Outcome::Deferred, "4.5.0", &reason);
            return Step::done();
        };
        if cmd == Cmd::Quit {
            return Step::done();
        }
        // 421: the server is closing the connection; nothing more will be answered.
        if r.code == 421 {
            let reason = match cmd {
                Cmd::Greeting | Cmd::Ehlo | Cmd::Helo => {
                    format!("host {} refused to talk to me: {}", self.peer, r.text())
                }
                _ => self.said(&r, cmd),
            };
            self.fail_all(Outcome::Deferred, &r.dsn(), &reason);
            return Step::done();
        }
        let mut body = false;
        match cmd {
            Cmd::Greeting => return self.greeting(r),
            Cmd::Ehlo | Cmd::Helo => return self.helo_reply(cmd, r),
            Cmd::StartTls => return self.starttls_reply(r),
            Cmd::Mail => {
                if r.is_positive() {
                    self.mail_ok = true;
                } else {
                    let reason = self.said(&r, cmd);
                    self.fail_all(Self::outcome_of(&r), &r.dsn(), &reason);
                    self.unsent.clear();
                }
            }
            Cmd::Rcpt(i) => {
                if self.mail_ok {
                    if r.is_positive() {
                        self.accepted.push(i);
                    } else {
                        let reason = self.said(&r, cmd);
                        self.set(i, Self::outcome_of(&r), &r.dsn(), &reason);
                    }
                }
            }
            Cmd::Data => {
                let usable = self.mail_ok && !self.accepted.is_empty();
                if r.class() == 3 {
                    if usable {
                        body = true;
                        match self.cfg.protocol {
                            Protocol::Smtp => self.pending.push_back(Cmd::Dot),
                            Protocol::Lmtp => self.pending.extend(self.accepted.iter().map(|&i| Cmd::DotRcpt(i))),
                        }
                    } else {
                        // A server that says 354 though nothing was accepted: end the
                        // empty message at once (RFC 2920 section 3.1).
                        let mut send = Vec::new();
                        cmd_line(&mut send, ".");
                        self.pending.push_back(Cmd::DotDiscard);
                        return Step { send, body: false, wait: Some(Stage::DataDone) };
                    }
                } else if usable {
                    let reason = self.said(&r, cmd);
                    let (outcome, dsn) = (Self::outcome_of(&r), r.dsn());
                    for i in self.accepted.clone() {
                        self.set(i, outcome, &dsn, &reason);
                    }
                }
            }
            Cmd::Dot => {
                let (outcome, dsn) = (Self::outcome_of(&r), r.dsn());
                let reason = if r.is_positive() { r.text() } else { self.said(&r, cmd) };
                for i in self.accepted.clone() {
                    self.set(i, outcome, &dsn, &reason);
                }
            }
            Cmd::DotRcpt(i) => {
                let reason = if r.is_positive() { r.text() } else { self.said(&r, cmd) };
                self.set(i, Self::outcome_of(&r), &r.dsn(), &reason);
            }
            Cmd::DotDiscard | Cmd::Quit => {}
        }
        let mut step = self.advance();
        step.body = body;
        step
    }

    fn greeting(&mut self, r: ServerReply) -> Step {
        if !r.is_positive() {
            let (mut outcome, mut dsn) = (Self::outcome_of(&r), r.dsn());
            if outcome == Outcome::Bounced && self.cfg.skip_5xx_greeting {
                outcome = Outcome::Deferred;
                dsn.replace_range(..1, "4");
            }
            let reason = format!("host {} refused to talk to me: {}", self.peer, r.text());
            self.fail_all(outcome, &dsn, &reason);
            return self.quit();
        }
        if let Some(step) = self.loop_check(&r, "greeted me") {
            return step;
        }
        let verb = match self.cfg.protocol {
            Protocol::Smtp => "EHLO",
            Protocol::Lmtp => "LHLO",
        };
        let mut send = Vec::new();
        cmd_line(&mut send, &format!("{verb} {}", self.cfg.helo_name));
        self.pending.push_back(Cmd::Ehlo);
        Step { send, body: false, wait: Some(Stage::Helo) }
    }

    /// SMTP only: a server that calls itself by our name is ourselves (or claims to be):
    /// delivering would loop. Postfix bounces with 5.4.6.
    fn loop_check(&mut self, r: &ServerReply, how: &str) -> Option<Step> {
        if self.cfg.protocol != Protocol::Smtp || !r.first_word().eq_ignore_ascii_case(&self.cfg.myhostname) {
            return None;
        }
        self.warnings.push(format!("host {} {how} with my own hostname {}", self.peer, self.cfg.myhostname));
        let reason = format!("mail for {} loops back to myself", self.cfg.nexthop);
        self.fail_all(Outcome::Bounced, "5.4.6", &reason);
        Some(self.quit())
    }

    fn helo_reply(&mut self, cmd: Cmd, r: ServerReply) -> Step {
        if !r.is_positive() {
            if cmd == Cmd::Ehlo && self.cfg.protocol == Protocol::Smtp {
                // Not an ESMTP server (or one that dislikes us): try HELO, as Postfix does.
                let mut send = Vec::new();
                cmd_line(&mut send, &format!("HELO {}", self.cfg.helo_name));
                self.pending.push_back(Cmd::Helo);
                return Step { send, body: false, wait: Some(Stage::Helo) };
            }
            let reason = format!("host {} refused to talk to me: {}", self.peer, r.text());
            self.fail_all(Self::outcome_of(&r), &r.dsn(), &reason);
            return self.quit();
        }
        if let Some(step) = self.loop_check(&r, "replied to HELO/EHLO") {
            return step;
        }
        self.caps = if cmd == Cmd::Ehlo { Caps::from_ehlo(&r) } else { Caps::default() };
        if !self.tls_active && self.cfg.tls != rpost_tls::ClientLevel::None {
            if self.caps.starttls {
                let mut send = Vec::new();
                cmd_line(&mut send, "STARTTLS");
                self.pending.push_back(Cmd::StartTls);
                return Step { send, body: false, wait: Some(Stage::Helo) };
            }
            if self.cfg.tls.mandatory() {
                let reason = format!("TLS is required, but was not offered by host {}", self.peer);
                self.fail_all(Outcome::Deferred, "4.7.4", &reason);
                return self.quit();
            }
        }
        self.handshake_done = true;
        self.begin_transaction()
    }

    /// The reply to STARTTLS.
    fn starttls_reply(&mut self, r: ServerReply) -> Step {
        if r.is_positive() {
            return Step { send: Vec::new(), body: false, wait: Some(Stage::Tls) };
        }
        if self.cfg.tls.mandatory() {
            let reason = format!("TLS is required, but host {} refused to start TLS: {}", self.peer, r.text());
            self.fail_all(Outcome::Deferred, "4.7.5", &reason);
            return self.quit();
        }
        // Opportunistic: the server is still in the state after EHLO; go on in plaintext.
        self.handshake_done = true;
        self.begin_transaction()
    }

    /// The handshake completed: say EHLO again (RFC 3207 section 4.2: forget the old
    /// capabilities).
    pub fn tls_started(&mut self) -> Step {
        self.tls_active = true;
        self.caps = Caps::default();
        let verb = match self.cfg.protocol {
            Protocol::Smtp => "EHLO",
            Protocol::Lmtp => "LHLO",
        };
        let mut send = Vec::new();
        cmd_line(&mut send, &format!("{verb} {}", self.cfg.helo_name));
        self.pending.push_back(Cmd::Ehlo);
        Step { send, body: false, wait: Some(Stage::Helo) }
    }

    /// The handshake failed (the connection is unusable). At `may` the caller retries
    /// without TLS ([`Session::tls_fallback`]); this session's recipients are deferred in
    /// case it does not.
    pub fn tls_failed(&mut self, why: &str) -> Step {
        self.tls_fallback = !self.cfg.tls.mandatory();
        let reason = format!("Cannot start TLS: handshake failure with host {}: {why}", self.peer);
        self.fail_all(Outcome::Deferred, "4.7.5", &reason);
        self.pending.clear();
        Step::done()
    }

    /// True when the TLS handshake failed at level `may`: retry in plaintext.
    pub fn tls_fallback(&self) -> bool {
        self.tls_fallback
    }

    /// True when the conversation ran over TLS.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    fn begin_transaction(&mut self) -> Step {
        if let Some(limit) = self.caps.size
            && limit > 0
            && self.msg.size > limit
        {
            let reason = format!("message size {} exceeds size limit {} of server {}", self.msg.size, limit, self.peer);
            self.fail_all(Outcome::Bounced, "5.3.4", &reason);
            return self.quit();
        }
        let non_ascii = !self.msg.sender.is_ascii() || self.msg.recipients.iter().any(|r| !r.address.is_ascii());
        if self.msg.smtputf8 && non_ascii && !self.caps.smtputf8 {
            let reason = format!("SMTPUTF8 is required, but was not offered by host {}", self.peer);
            self.fail_all(Outcome::Bounced, "5.6.7", &reason);
            return self.quit();
        }
        if unsafe_address(&self.msg.sender) {
            let reason = format!("bad sender address syntax: {}", self.msg.sender.escape_debug());
            self.fail_all(Outcome::Bounced, "5.1.7", &reason);
            return self.quit();
        }
        let open: Vec<usize> = self.unresolved().collect();
        if open.is_empty() {
            return self.quit();
        }
        self.unsent.push_back(Cmd::Mail);
        self.unsent.extend(open.into_iter().map(Cmd::Rcpt));
        self.unsent.push_back(Cmd::Data);
        self.window = if self.caps.pipelining { PIPELINE_WINDOW } else { 1 };
        self.advance()
    }

    /// Sends what the window allows; waits for the oldest reply; QUIT when all is done.
    fn advance(&mut self) -> Step {
        let mut send = Vec::new();
        while self.pending.len() < self.window
            && let Some(cmd) = self.unsent.pop_front()
        {
            if cmd == Cmd::Data && self.pending.is_empty() && (self.accepted.is_empty() || !self.mail_ok) {
                // Every RCPT reply is in and none was accepted: no DATA.
                continue;
            }
            let line = self.command(cmd);
            cmd_line(&mut send, &line);
            self.pending.push_back(cmd);
        }
        match self.pending.front() {
            Some(&head) => Step { send, body: false, wait: Some(head.stage()) },
            None => self.quit(),
        }
    }

    fn command(&self, cmd: Cmd) -> String {
        match cmd {
            Cmd::Mail => {
                let mut line = format!("MAIL FROM:<{}>", self.msg.sender);
                if self.caps.size.is_some() {
                    line.push_str(&format!(" SIZE={}", self.msg.size));
                }
                if self.msg.eight_bit && self.caps.eightbitmime {
                    line.push_str(" BODY=8BITMIME");
                }
                if self.msg.smtputf8 && self.caps.smtputf8 {
                    line.push_str(" SMTPUTF8");
                }
                if self.caps.dsn {
                    if let Some(full) = self.msg.ret_full {
                        line.push_str(if full { " RET=FULL" } else { " RET=HDRS" });
                    }
                    if let Some(envid) = &self.msg.envid {
                        line.push_str(&format!(" ENVID={}", xtext_encode(envid)));
                    }
                }
                line
            }
            Cmd::Rcpt(i) => {
                let r = &self.msg.recipients[i];
                let mut line = format!("RCPT TO:<{}>", r.address);
                if self.caps.dsn {
                    if let Some(n) = r.notify.and_then(notify_keyword) {
                        line.push_str(&format!(" NOTIFY={n}"));
                    }
                    if let Some((kind, addr)) = r.orcpt.as_deref().and_then(|o| o.split_once(';')) {
                        line.push_str(&format!(" ORCPT={kind};{}", xtext_encode(addr)));
                    }
                }
                line
            }
            Cmd::Data => "DATA".into(),
            _ => String::new(),
        }
    }

    fn quit(&mut self) -> Step {
        if self.quit_sent {
            return Step::done();
        }
        // TLS sessions end with QUIT: the connection cache holds plaintext streams only.
        if self.cfg.keep_open && !self.tls_active && self.handshake_done && self.pending.is_empty() {
            // The next delivery starts with RSET, which also ends whatever transaction
            // state the server still has (e.g. after every RCPT was refused).
            self.unsent.clear();
            self.reusable = true;
            return Step::done();
        }
        self.quit_sent = true;
        self.unsent.clear();
        let mut send = Vec::new();
        cmd_line(&mut send, "QUIT");
        if self.cfg.skip_quit_response {
            return Step { send, body: false, wait: None };
        }
        self.pending.push_back(Cmd::Quit);
        Step { send, body: false, wait: Some(Stage::Quit) }
    }

    /// The connection timed out or broke; `in_body` when it happened while the message
    /// body was being written.
    pub fn io_error(&mut self, failure: IoFailure, in_body: bool) -> Step {
        let activity = if in_body {
            "sending message body"
        } else {
            self.pending.front().map(|c| c.activity(self.cfg.protocol)).unwrap_or("sending QUIT")
        };
        let reason = match failure {
            IoFailure::Timeout => format!("conversation with {} timed out while {activity}", self.peer),
            IoFailure::Lost => format!("lost connection with {} while {activity}", self.peer),
        };
        self.fail_all(Outcome::Deferred, "4.4.2", &reason);
        self.pending.clear();
        Step::done()
    }

    /// The server sent something that is not a reply: the conversation cannot continue.
    pub fn malformed(&mut self, err: ReplyError) -> Step {
        let request = self.pending.front().map(|c| c.request(self.cfg.protocol)).unwrap_or("QUIT command");
        let reason = match err {
            ReplyError::Malformed(line) => {
                format!("host {} sent a malformed reply: {line} (in reply to {request})", self.peer)
            }
            ReplyError::TooLong => format!("host {} sent a reply that is too long (in reply to {request})", self.peer),
        };
        self.fail_all(Outcome::Deferred, "4.5.0", &reason);
        self.pending.clear();
        Step::done()
    }

    /// The agent could not go on (e.g. the queue file could not be read while sending the
    /// body): everything open is deferred and the connection is dropped without ending the
    /// message, so the server discards it.
    pub fn local_error(&mut self, reason: &str) -> Step {
        self.fail_all(Outcome::Deferred, "4.3.0", reason);
        self.pending.clear();
        Step::done()
    }

    /// True when every recipient has its final result.
    pub fn finished(&self) -> bool {
        self.results.iter().all(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "mx.example[192.0.2.1]";

    fn cfg(protocol: Protocol) -> Config {
        Config {
            protocol,
            helo_name: "mail.example.test".into(),
            myhostname: "mail.example.test".into(),
            nexthop: "[mx.example]:25".into(),
            skip_5xx_greeting: true,
            skip_quit_response: protocol == Protocol::Smtp,
            keep_open: false,
            tls: rpost_tls::ClientLevel::None,
        }
    }

    fn msg(rcpts: &[&str]) -> Message {
        Message {
            sender: "alice@example.test".into(),
            recipients: rcpts.iter().map(|a| Rcpt { address: (*a).into(), notify: None, orcpt: None }).collect(),
            size: 100,
            eight_bit: false,
            smtputf8: false,
            envid: None,
            ret_full: None,
        }
    }

    /// What the client wrote, one entry per step (commands joined with `|`, `<BODY>` for the
    /// message), and the results.
    struct Run {
        steps: Vec<String>,
        results: Vec<RcptResult>,
        warnings: Vec<String>,
    }

    fn run(mut s: Session, script: &[&str]) -> Run {
        let mut steps = Vec::new();
        let mut script = script.iter();
        let mut step = s.start();
        loop {
            let mut out = String::from_utf8(step.send.clone()).unwrap().trim_end().replace("\r\n", "|");
            if step.body {
                out.push_str("<BODY>");
            }
            if !out.is_empty() {
                steps.push(out);
            }
            if step.wait.is_none() {
                break;
            }
            let wire = script.next().unwrap_or_else(|| panic!("script ran out after {steps:?}"));
            step = match ServerReply::parse(&format!("{wire}\r\n")) {
                Ok(r) => s.reply(r),
                Err(e) => s.malformed(e),
            };
        }
        assert!(script.next().is_none(), "unused replies; client wrote {steps:?}");
        assert!(s.finished());
        Run { steps, results: s.results(), warnings: s.take_warnings() }
    }

    fn session(protocol: Protocol, rcpts: &[&str]) -> Session {
        Session::new(cfg(protocol), msg(rcpts), PEER)
    }

    const EHLO_FULL: &str =
        "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-DSN\r\n250 SMTPUTF8";

    #[test]
    fn pipelined_smtp() {
        let mut m = msg(&["bob@example.com", "bad@example.com"]);
        m.eight_bit = true;
        let s = Session::new(cfg(Protocol::Smtp), m, PEER);
        let r = run(
            s,
            &[
                "220 mx.example ESMTP",
                EHLO_FULL,
                "250 2.1.0 Ok",
                "250 2.1.5 Ok",
                "550 5.1.1 <bad@example.com>: Recipient address rejected: User unknown",
                "354 End data with <CR><LF>.<CR><LF>",
                "250 2.0.0 Ok: queued as 4AbC",
            ],
        );
        assert_eq!(
            r.steps,
            [
                "EHLO mail.example.test",
                "MAIL FROM:<alice@example.test> SIZE=100 BODY=8BITMIME|RCPT TO:<bob@example.com>|RCPT TO:<bad@example.com>|DATA",
                "<BODY>",
                "QUIT"
            ]
        );
        assert_eq!(
            r.results[0],
            RcptResult { outcome: Outcome::Sent, dsn: "2.0.0".into(), reason: "250 2.0.0 Ok: queued as 4AbC".into() }
        );
        assert_eq!(
            r.results[1],
            RcptResult {
                outcome: Outcome::Bounced,
                dsn: "5.1.1".into(),
                reason: "host mx.example[192.0.2.1] said: 550 5.1.1 <bad@example.com>: Recipient address rejected: \
                         User unknown (in reply to RCPT TO command)"
                    .into()
            }
        );
    }

    #[test]
    fn one_command_at_a_time_without_pipelining() {
        let r = run(
            session(Protocol::Smtp, &["a@x", "b@x"]),
            &[
                "220 mx.example ESMTP",
                "250-mx.example\r\n250 8BITMIME",
                "250 ok",
                "451 4.3.0 try later",
                "250 ok",
                "354 go",
                "250 queued",
            ],
        );
        assert_eq!(
            r.steps,
            [
                "EHLO mail.example.test",
                "MAIL FROM:<alice@example.test>",
                "RCPT TO:<a@x>",
                "RCPT TO:<b@x>",
                "DATA",
                "<BODY>",
                "QUIT"
            ]
        );
        assert_eq!(r.results[0].outcome, Outcome::Deferred);
        assert_eq!(r.results[0].dsn, "4.3.0");
        assert_eq!(r.results[0].reason, format!("host {PEER} said: 451 4.3.0 try later (in reply to RCPT TO command)"));
        assert_eq!(
            r.results[1],
            RcptResult { outcome: Outcome::Sent, dsn: "2.0.0".into(), reason: "250 queued".into() }
        );
    }

    #[test]
    fn lmtp_has_one_reply_per_recipient_after_the_dot() {
        let r = run(
            session(Protocol::Lmtp, &["a@x", "b@x", "c@x"]),
            &[
                "220 mail.example.test LMTP ready",
                "250-mail.example.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES",
                "250 2.1.0 Ok",
                "250 2.1.5 Ok",
                "550 5.1.1 <b@x> User doesn't exist",
                "250 2.1.5 Ok",
                "354 go",
                "250 2.0.0 <a@x> Saved",
                "452 4.2.2 <c@x> Quota exceeded",
                "221 2.0.0 Bye",
            ],
        );
        assert_eq!(
            r.steps,
            [
                "LHLO mail.example.test",
                "MAIL FROM:<alice@example.test>|RCPT TO:<a@x>|RCPT TO:<b@x>|RCPT TO:<c@x>|DATA",
                "<BODY>",
                "QUIT"
            ]
        );
        // Our own host name from an LMTP server is no loop.
        assert!(r.warnings.is_empty());
        assert_eq!(r.results[0].outcome, Outcome::Sent);
        assert_eq!(r.results[0].reason, "250 2.0.0 <a@x> Saved");
        assert_eq!(r.results[1].outcome, Outcome::Bounced);
        assert_eq!(r.results[2].outcome, Outcome::Deferred);
        assert_eq!(r.results[2].dsn, "4.2.2");
        assert_eq!(
            r.results[2].reason,
            format!("host {PEER} said: 452 4.2.2 <c@x> Quota exceeded (in reply to end of DATA command)")
        );
    }

    #[test]
    fn mail_from_refused_applies_to_everyone() {
        let r = run(
            session(Protocol::Smtp, &["a@x", "b@x"]),
            &["220 mx.example", "250 mx.example", "553 5.7.1 <alice@example.test>: Sender address rejected"],
        );
        assert_eq!(r.steps, ["EHLO mail.example.test", "MAIL FROM:<alice@example.test>", "QUIT"]);
        for res in &r.results {
            assert_eq!(res.outcome, Outcome::Bounced);
            assert_eq!(res.dsn, "5.7.1");
            assert!(res.reason.ends_with("Sender address rejected (in reply to MAIL FROM command)"), "{}", res.reason);
        }
        // Pipelined: the RCPT and DATA replies are read before QUIT.
        let r = run(
            session(Protocol::Smtp, &["a@x", "b@x"]),
            &[
                "220 mx.example",
                "250-mx.example\r\n250 PIPELINING",
                "451 4.3.0 busy",
                "503 5.5.1 need MAIL",
                "503 5.5.1 need MAIL",
                "554 5.5.1 no valid recipients",
            ],
        );
        assert_eq!(r.steps.last().unwrap(), "QUIT");
        assert!(r.results.iter().all(|res| res.outcome == Outcome::Deferred && res.dsn == "4.3.0"));
    }

    #[test]
    fn all_recipients_refused() {
        // Without pipelining there is no DATA.
        let r = run(session(Protocol::Smtp, &["a@x"]), &["220 mx.example", "250 mx.example", "250 ok", "550 5.1.1 no"]);
        assert_eq!(r.steps, ["EHLO mail.example.test", "MAIL FROM:<alice@example.test>", "RCPT TO:<a@x>", "QUIT"]);
        assert_eq!(r.results[0].outcome, Outcome::Bounced);
        // A pipelining server that answers DATA with 354 anyway gets an empty message end.
        let r = run(
            session(Protocol::Smtp, &["a@x"]),
            &["220 mx.example", "250-mx.example\r\n250 PIPELINING", "250 ok", "550 5.1.1 no", "354 go", "554 5.5.1 no"],
        );
        assert_eq!(r.steps[2..], [".", "QUIT"]);
        assert_eq!(r.results[0].outcome, Outcome::Bounced);
    }

    #[test]
    fn ehlo_refused_falls_back_to_helo() {
        let r = run(
            session(Protocol::Smtp, &["a@x"]),
            &[
                "220 old.example",
                "502 5.5.2 Error: command not recognized",
                "250 old.example",
                "250 ok",
                "250 ok",
                "354 go",
                "250 ok",
            ],
        );
        assert_eq!(
            r.steps,
            [
                "EHLO mail.example.test",
                "HELO mail.example.test",
                "MAIL FROM:<alice@example.test>",
                "RCPT TO:<a@x>",
                "DATA",
                "<BODY>",
                "QUIT"
            ]
        );
        assert_eq!(r.results[0].outcome, Outcome::Sent);
        // LMTP has no HELO: a refused LHLO fails the delivery.
        let r = run(session(Protocol::Lmtp, &["a@x"]), &["220 lmtp", "500 5.5.1 no", "221 bye"]);
        assert_eq!(r.steps, ["LHLO mail.example.test", "QUIT"]);
        assert_eq!(r.results[0].outcome, Outcome::Bounced);
        assert_eq!(r.results[0].reason, format!("host {PEER} refused to talk to me: 500 5.5.1 no"));
    }

    #[test]
    fn kept_open_sessions_end_without_quit_and_resume_at_mail() {
        let mut c = cfg(Protocol::Smtp);
        c.keep_open = true;
        let mut s = Session::new(c.clone(), msg(&["a@x"]), PEER);
        let r = {
            let mut steps = Vec::new();
            let mut step = s.start();
            for wire in ["220 mx.example", "250-mx.example\r\n250 PIPELINING", "250 ok", "250 ok", "354 go", "250 ok"] {
                step = s.reply(ServerReply::parse(&format!("{wire}\r\n")).unwrap());
                steps.push(String::from_utf8(step.send.clone()).unwrap());
            }
            assert_eq!(step, Step::default(), "no QUIT: {steps:?}");
            steps
        };
        assert!(!r.iter().any(|s| s.contains("QUIT")));
        assert!(s.reusable() && s.finished());
        assert_eq!(s.results()[0].outcome, Outcome::Sent);
        let caps = s.caps().clone();
        assert!(caps.pipelining);
        // The next delivery on that connection starts at MAIL FROM.
        let mut s = Session::new(c, msg(&["b@x"]), PEER);
        let step = s.resume(caps);
        assert_eq!(step.send, b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<b@x>\r\nDATA\r\n");
        assert!(s.handshake_done());
        // A session that failed its handshake is never reusable, nor one that lost its server.
        let mut c = cfg(Protocol::Smtp);
        c.keep_open = true;
        let mut s = Session::new(c.clone(), msg(&["a@x"]), PEER);
        s.start();
        let step = s.reply(ServerReply::parse("554 5.7.1 go away\r\n").unwrap());
        assert_eq!(step.send, b"QUIT\r\n");
        assert!(!s.reusable());
        let mut s = Session::new(c, msg(&["a@x"]), PEER);
        s.start();
        s.reply(ServerReply::parse("220 mx.example\r\n").unwrap());
        s.reply(ServerReply::parse("250 mx.example\r\n").unwrap());
        s.io_error(IoFailure::Lost, false);
        assert!(!s.reusable());
    }

    #[test]
    fn loops_are_detected() {
        let r = run(
            session(Protocol::Smtp, &["a@x"]),
            &["220 mx.example ESMTP", "250-MAIL.example.test\r\n250 PIPELINING"],
        );
        assert_eq!(r.steps, ["EHLO mail.example.test", "QUIT"]);
        assert_eq!(
            r.results[0],
            RcptResult {
                outcome: Outcome::Bounced,
                dsn: "5.4.6".into(),
                reason: "mail for [mx.example]:25 loops back to myself".into()
            }
        );
        assert_eq!(r.warnings, [format!("host {PEER} replied to HELO/EHLO with my own hostname mail.example.test")]);
        let r = run(session(Protocol::Smtp, &["a@x"]), &["220 mail.example.test ESMTP rpost"]);
        assert_eq!(r.steps, ["QUIT"]);
        assert_eq!(r.results[0].dsn, "5.4.6");
    }

    #[test]
    fn too_big_for_the_server() {
        let r = run(session(Protocol::Smtp, &["a@x", "b@x"]), &["220 mx.example", "250-mx.example\r\n250 SIZE 99"]);
        assert_eq!(r.steps, ["EHLO mail.example.test", "QUIT"]);
        for res in &r.results {
            assert_eq!(res.outcome, Outcome::Bounced);
            assert_eq!(res.dsn, "5.3.4");
            assert_eq!(res.reason, format!("message size 100 exceeds size limit 99 of server {PEER}"));
        }
        // SIZE without a number (or 0) is no limit.
        let r = run(
            session(Protocol::Smtp, &["a@x"]),
            &["220 mx.example", "250-mx.example\r\n250 SIZE", "250 ok", "250 ok", "354 go", "250 ok"],
        );
        assert_eq!(r.steps[1], "MAIL FROM:<alice@example.test> SIZE=100");
    }

    #[test]
    fn smtputf8() {
        let mut m = msg(&["jösé@exämple.com"]);
        m.smtputf8 = true;
        let r = run(
            Session::new(cfg(Protocol::Smtp), m.clone(), PEER),
            &["220 mx.example", "250-mx.example\r\n250 8BITMIME"],
        );
        assert_eq!(r.results[0].dsn, "5.6.7");
        assert_eq!(r.results[0].reason, format!("SMTPUTF8 is required, but was not offered by host {PEER}"));
        let r = run(
            Session::new(cfg(Protocol::Smtp), m, PEER),
            &["220 mx.example", "250-mx.example\r\n250 SMTPUTF8", "250 ok", "250 ok", "354 go", "250 ok"],
        );
        assert_eq!(r.steps[1], "MAIL FROM:<alice@example.test> SMTPUTF8");
        assert_eq!(r.results[0].outcome, Outcome::Sent);
        // Flagged but all-ASCII addresses: delivered without the parameter.
        let mut m = msg(&["a@x"]);
        m.smtputf8 = true;
        let r = run(
            Session::new(cfg(Protocol::Smtp), m, PEER),
            &["220 mx.example", "250 mx.example", "250 ok", "250 ok", "354 go", "250 ok"],
        );
        assert_eq!(r.steps[1], "MAIL FROM:<alice@example.test>");
    }

    #[test]
    fn dsn_parameters_only_when_offered() {
        let mut m = msg(&["a@x", "b@x"]);
        m.recipients[0].notify = Some(2 | 4);
        m.recipients[0].orcpt = Some("rfc822;A+B=c@x".into());
        m.recipients[1].notify = Some(1);
        m.envid = Some("id 1".into());
        m.ret_full = Some(false);
        let replies = ["250 ok", "250 ok", "250 ok", "354 go", "250 ok"];
        let mut script = vec!["220 mx.example", EHLO_FULL];
        script.extend(replies);
        let r = run(Session::new(cfg(Protocol::Smtp), m.clone(), PEER), &script);
        assert_eq!(
            r.steps[1],
            "MAIL FROM:<alice@example.test> SIZE=100 RET=HDRS ENVID=id+201|\
             RCPT TO:<a@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+2BB+3Dc@x|RCPT TO:<b@x> NOTIFY=NEVER|DATA"
        );
        let mut script = vec!["220 mx.example", "250 mx.example"];
        script.extend(replies);
        let r = run(Session::new(cfg(Protocol::Smtp), m, PEER), &script);
        assert_eq!(r.steps[1..4], ["MAIL FROM:<alice@example.test>", "RCPT TO:<a@x>", "RCPT TO:<b@x>"]);
    }

    #[test]
    fn greeting_refusals() {
        let r = run(session(Protocol::Smtp, &["a@x"]), &["554 5.7.1 go away"]);
        assert_eq!(r.steps, ["QUIT"]);
        assert_eq!(r.results[0].outcome, Outcome::Deferred);
        assert_eq!(r.results[0].dsn, "4.7.1");
        assert_eq!(r.results[0].reason, format!("host {PEER} refused to talk to me: 554 5.7.1 go away"));
        let mut c = cfg(Protocol::Smtp);
        c.skip_5xx_greeting = false;
        let r = run(Session::new(c, msg(&["a@x"]), PEER), &["554 go away"]);
        assert_eq!((r.results[0].outcome, r.results[0].dsn.as_str()), (Outcome::Bounced, "5.0.0"));
        // 421 ends the session at once, without QUIT.
        let r = run(
            session(Protocol::Smtp, &["a@x", "b@x"]),
            &["220 mx.example", "250 mx.example", "250 ok", "550 5.1.1 no", "421 4.7.0 mx.example closing"],
        );
        assert_eq!(r.steps.last().unwrap(), "RCPT TO:<b@x>");
        assert_eq!(r.results[0].outcome, Outcome::Bounced);
        assert_eq!(r.results[1].outcome, Outcome::Deferred);
        assert_eq!(r.results[1].dsn, "4.7.0");
    }

    #[test]
    fn connection_trouble_defers_what_is_open() {
        let mut s = session(Protocol::Smtp, &["a@x", "b@x"]);
        s.start();
        s.reply(ServerReply::parse("220 mx.example\r\n").unwrap());
        s.reply(ServerReply::parse("250 mx.example\r\n").unwrap());
        s.reply(ServerReply::parse("250 ok\r\n").unwrap());
        s.reply(ServerReply::parse("550 5.1.1 no\r\n").unwrap());
        let step = s.io_error(IoFailure::Timeout, false);
        assert_eq!(step, Step::default());
        let res = s.results();
        assert_eq!(res[0].outcome, Outcome::Bounced);
        assert_eq!(
            res[1],
            RcptResult {
                outcome: Outcome::Deferred,
                dsn: "4.4.2".into(),
                reason: format!("conversation with {PEER} timed out while sending RCPT TO")
            }
        );

        let body_and_dot = |in_body: bool| {
            let mut s = session(Protocol::Smtp, &["a@x"]);
            s.start();
            for r in ["220 mx.example", "250 mx.example", "250 ok", "250 ok"] {
                s.reply(ServerReply::parse(&format!("{r}\r\n")).unwrap());
            }
            let step = s.reply(ServerReply::parse("354 go\r\n").unwrap());
            assert!(step.body && step.wait == Some(Stage::DataDone));
            s.io_error(IoFailure::Lost, in_body);
            s.results().remove(0).reason
        };
        assert_eq!(body_and_dot(true), format!("lost connection with {PEER} while sending message body"));
        assert_eq!(
            body_and_dot(false),
            format!("lost connection with {PEER} while sending end of data -- message may be sent more than once")
        );
        let mut s = session(Protocol::Smtp, &["a@x"]);
        s.start();
        s.io_error(IoFailure::Lost, false);
        assert_eq!(
            s.results()[0].reason,
            format!("lost connection with {PEER} while receiving the initial server greeting")
        );
    }

    #[test]
    fn malformed_replies_defer() {
        let r = run(session(Protocol::Smtp, &["a@x"]), &["220 mx.example", "hello there"]);
        assert_eq!(r.results[0].outcome, Outcome::Deferred);
        assert_eq!(
            r.results[0].reason,
            format!("host {PEER} sent a malformed reply: hello there (in reply to EHLO command)")
        );
    }

    #[test]
    fn pipelining_window() {
        let rcpts: Vec<String> = (0..150).map(|i| format!("r{i}@x")).collect();
        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let mut s = session(Protocol::Smtp, &refs);
        s.start();
        s.reply(ServerReply::parse("220 mx.example\r\n").unwrap());
        let step = s.reply(ServerReply::parse("250-mx.example\r\n250 PIPELINING\r\n").unwrap());
        let sent = String::from_utf8(step.send).unwrap();
        assert_eq!(sent.lines().count(), PIPELINE_WINDOW);
        assert!(sent.ends_with("RCPT TO:<r98@x>\r\n"));
        let step = s.reply(ServerReply::parse("250 ok\r\n").unwrap());
        assert_eq!(step.send, b"RCPT TO:<r99@x>\r\n");
    }

    #[test]
    fn unsafe_addresses_never_reach_the_wire() {
        let r = run(
            session(Protocol::Smtp, &["a@x\r\nRSET", "b@x"]),
            &["220 mx.example", "250 mx.example", "250 ok", "250 ok", "354 go", "250 ok"],
        );
        assert!(r.steps.iter().all(|s| !s.contains("RSET")));
        assert_eq!(r.results[0].outcome, Outcome::Bounced);
        assert_eq!(r.results[0].dsn, "5.1.3");
        assert_eq!(r.results[1].outcome, Outcome::Sent);
    }

    #[test]
    fn capabilities() {
        let r = ServerReply::parse("250-mx\r\n250-pipelining\r\n250-SIZE=2000\r\n250-AUTH=LOGIN\r\n250 STARTTLS\r\n")
            .unwrap();
        let c = Caps::from_ehlo(&r);
        assert!(c.esmtp && c.pipelining && c.starttls && !c.dsn);
        assert_eq!(c.size, Some(2000));
    }

    fn reply(s: &mut Session, wire: &str) -> Step {
        s.reply(ServerReply::parse(&format!("{wire}\r\n")).unwrap())
    }

    #[test]
    fn starttls_when_offered_then_ehlo_again() {
        let mut c = cfg(Protocol::Smtp);
        c.tls = rpost_tls::ClientLevel::May;
        let mut s = Session::new(c, msg(&["b@x"]), PEER);
        s.start();
        reply(&mut s, "220 mx.example ESMTP");
        let step = reply(&mut s, "250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS");
        assert_eq!(step.send, b"STARTTLS\r\n");
        assert!(!s.handshake_done());
        let step = reply(&mut s, "220 2.0.0 Ready to start TLS");
        assert_eq!((step.send.as_slice(), step.wait), (&b""[..], Some(Stage::Tls)));
        let step = s.tls_started();
        assert_eq!(step.send, b"EHLO mail.example.test\r\n");
        assert!(s.tls_active());
        // Capabilities come from the new reply only; STARTTLS is not repeated.
        let step = reply(&mut s, "250-mx.example\r\n250 STARTTLS");
        assert_eq!(step.send, b"MAIL FROM:<alice@example.test>\r\n");
        assert!(s.handshake_done() && !s.caps().pipelining);
    }

    #[test]
    fn tls_levels_without_starttls() {
        for (level, offered, refused, expect) in [
            (rpost_tls::ClientLevel::None, true, false, "MAIL FROM:<alice@example.test>\r\n"),
            (rpost_tls::ClientLevel::May, false, false, "MAIL FROM:<alice@example.test>\r\n"),
            (rpost_tls::ClientLevel::May, true, true, "MAIL FROM:<alice@example.test>\r\n"),
            (rpost_tls::ClientLevel::Encrypt, false, false, ""),
            (rpost_tls::ClientLevel::Verify, true, true, ""),
        ] {
            let mut c = cfg(Protocol::Smtp);
            c.tls = level;
            let mut s = Session::new(c, msg(&["b@x"]), PEER);
            s.start();
            reply(&mut s, "220 mx.example ESMTP");
            let ehlo = if offered { "250-mx.example\r\n250 STARTTLS" } else { "250 mx.example" };
            let mut step = reply(&mut s, ehlo);
            if refused {
                assert_eq!(step.send, b"STARTTLS\r\n");
                step = reply(&mut s, "454 4.7.0 TLS not available due to local problem");
            }
            if expect.is_empty() {
                assert_eq!(step.send, b"QUIT\r\n", "{level:?}");
                let r = &s.results()[0];
                let dsn = if refused { "4.7.5" } else { "4.7.4" };
                assert_eq!((r.outcome, r.dsn.as_str()), (Outcome::Deferred, dsn), "{level:?}: {}", r.reason);
            } else {
                assert_eq!(step.send, expect.as_bytes(), "{level:?}");
            }
        }
    }

    #[test]
    fn a_tls_session_is_not_kept_open_for_the_cache() {
        let mut c = cfg(Protocol::Smtp);
        c.tls = rpost_tls::ClientLevel::May;
        c.keep_open = true;
        let mut s = Session::new(c, msg(&["b@x"]), PEER);
        s.start();
        reply(&mut s, "220 mx.example ESMTP");
        reply(&mut s, "250-mx.example\r\n250 STARTTLS");
        reply(&mut s, "220 go ahead");
        s.tls_started();
        reply(&mut s, "250 mx.example");
        reply(&mut s, "250 ok");
        let step = reply(&mut s, "550 5.1.1 no");
        assert_eq!(step.send, b"QUIT\r\n");
        assert!(!s.reusable());
    }

    #[test]
    fn a_failed_handshake_marks_the_plaintext_retry_only_at_may() {
        for (level, fallback) in [(rpost_tls::ClientLevel::May, true), (rpost_tls::ClientLevel::Encrypt, false)] {
            let mut c = cfg(Protocol::Smtp);
            c.tls = level;
            let mut s = Session::new(c, msg(&["b@x"]), PEER);
            s.start();
            reply(&mut s, "220 mx.example ESMTP");
            reply(&mut s, "250-mx.example\r\n250 STARTTLS");
            reply(&mut s, "220 go ahead");
            let step = s.tls_failed("handshake failure");
            assert_eq!(step.wait, None);
            assert_eq!(s.tls_fallback(), fallback);
            assert_eq!(s.results()[0].dsn, "4.7.5");
        }
    }
}

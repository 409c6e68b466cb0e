//! The SMTP session state machine: commands in, replies and decisions out, no I/O.
//!
//! The driver ([`crate::server`]) feeds it the events of `rpost_smtp_proto::ServerCodec` and
//! does what each [`Step`] says: send the reply, switch the codec to DATA or BDAT, open the
//! queue file, commit it, or close. Time is passed in, so the machine is tested without
//! sockets or clocks.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rpost_smtp_proto::{Body, Command, CommandError, MailParams, Reply, ReversePath};

use crate::addr::Address;
use crate::policy::{self, Decision, Facts, Stage};
use crate::settings::{Settings, TlsLevel};

/// What the driver must do after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read the next command.
    Continue,
    /// Open the queue file, then call [`Session::data_opened`]; message bytes follow
    /// (DATA after the 354 reply; BDAT with the chunk announced here).
    Open(Content),
    /// A BDAT chunk for the already open queue file.
    Chunk { size: u64, last: bool },
    /// Discard `size` bytes of a BDAT chunk that has been refused, then continue.
    Discard { size: u64 },
    /// Send the reply, then close the connection.
    Close,
    /// Send the reply (220), discard every byte already received (plaintext injection
    /// defence, CVE-2011-0411), run the TLS handshake, then call [`Session::tls_started`].
    StartTls,
    /// Run a SASL exchange with the auth server: see [`Session::auth_challenge`],
    /// [`Session::auth_response`] and [`Session::auth_done`].
    Auth(AuthStart),
}

/// An AUTH command the session accepted for the SASL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthStart {
    pub mechanism: String,
    /// The initial response, base64 as the client sent it (`=` becomes ""); None: absent.
    pub initial: Option<String>,
}

/// A SASL mechanism the auth server offers, with its Dovecot flags (`plaintext`,
/// `anonymous`, `dictionary`, `active`, `forward-secrecy`, `mutual-auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    pub name: String,
    pub flags: Vec<String>,
}

/// What the auth server concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Success {
        user: String,
    },
    /// Wrong credentials, unknown user, or a protocol error of the client.
    Failure {
        reason: Option<String>,
    },
    /// The auth server is unreachable or broke: the client may retry later.
    TempFail(String),
}

/// The client's answer to a 334 challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    /// Pass this base64 text to the SASL server.
    Send(String),
    /// The exchange ends with this step (cancelled or undecodable).
    Abort(Step),
}

/// How message content arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Data,
    Bdat { size: u64, last: bool },
}

/// One step: an optional reply (after an optional anti-abuse delay) and what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub reply: Option<Reply>,
    pub delay: Option<Duration>,
    pub next: Next,
}

impl Step {
    fn reply(r: Reply) -> Step {
        Step { reply: Some(r), delay: None, next: Next::Continue }
    }
    fn close(r: Reply) -> Step {
        Step { reply: Some(r), delay: None, next: Next::Close }
    }
}

/// Who is connected.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: IpAddr,
    pub port: u16,
    /// Verified reverse name, or `unknown`.
    pub name: String,
    /// The PTR name (not verified), or `unknown`.
    pub reverse_name: String,
    /// `name` / `reverse_name` is `unknown` because a DNS lookup failed for now.
    pub name_tempfail: bool,
    pub reverse_tempfail: bool,
}

impl Client {
    /// A client known by `name` (for its reverse name too).
    pub fn new(addr: IpAddr, port: u16, name: &str) -> Client {
        Client {
            addr,
            port,
            name: name.to_string(),
            reverse_name: name.to_string(),
            name_tempfail: false,
            reverse_tempfail: false,
        }
    }

    /// Takes the names DNS gave (see [`crate::dnscheck::client_names`]).
    pub fn set_names(&mut self, n: crate::dnscheck::ClientNames) {
        self.name = n.name;
        self.reverse_name = n.reverse_name;
        self.name_tempfail = n.name_tempfail;
        self.reverse_tempfail = n.reverse_tempfail;
    }

    /// `name[addr]`, as Postfix logs clients.
    pub fn display(&self) -> String {
        format!("{}[{}]", self.name, self.addr)
    }
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    /// With `@$myorigin` appended when bare.
    pub address: String,
    /// As the client wrote it.
    pub given: String,
    pub orcpt: Option<String>,
    pub notify: Option<u8>,
}

/// The mail transaction in progress.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// "" for the null sender; otherwise with `@$myorigin` appended when bare.
    pub sender: String,
    pub params: MailParams,
    pub rcpts: Vec<Rcpt>,
    /// RCPT commands refused (to answer DATA with "no valid recipients").
    pub rejected: usize,
    pub queue_id: Option<String>,
    pub size: u64,
    pub too_big: bool,
}

/// Per-command counters for the disconnect log line.
#[derive(Debug, Default, Clone)]
struct Counters {
    list: Vec<(&'static str, u32, u32)>,
}

impl Counters {
    fn count(&mut self, name: &'static str, ok: bool) {
        match self.list.iter_mut().find(|(n, _, _)| *n == name) {
            Some(e) => {
                e.2 += 1;
                if ok {
                    e.1 += 1;
                }
            }
            None => self.list.push((name, u32::from(ok), 1)),
        }
    }

    /// `ehlo=1 mail=1 rcpt=0/1 data=1 quit=1 commands=4/5`
    fn summary(&self) -> String {
        let mut out = String::new();
        let (mut ok, mut all) = (0, 0);
        for (name, good, total) in &self.list {
            ok += good;
            all += total;
            if good == total {
                out.push_str(&format!(" {name}={good}"));
            } else {
                out.push_str(&format!(" {name}={good}/{total}"));
            }
        }
        if ok == all {
            out.push_str(&format!(" commands={ok}"));
        } else {
            out.push_str(&format!(" commands={ok}/{all}"));
        }
        out
    }
}

/// The state of one SMTP session.
#[derive(Debug)]
pub struct Session<'s> {
    s: &'s Settings,
    pub client: Client,
    pub helo: Option<String>,
    pub esmtp: bool,
    pub sasl_user: Option<String>,
    /// The mechanism sasl_user logged in with.
    pub sasl_method: Option<String>,
    /// The TLS session, once STARTTLS (or wrapper mode) succeeded.
    pub tls: Option<rpost_tls::TlsInfo>,
    /// What the SASL server offers (set by the driver; empty: AUTH is not offered).
    mechanisms: Vec<Mechanism>,
    /// The mechanism of the AUTH exchange in progress.
    auth_mech: Option<String>,
    pub tx: Option<Transaction>,
    errors: u32,
    junk: u32,
    counters: Counters,
    /// Set when client restrictions rejected at connect time (smtpd_delay_reject = no).
    connect_reject: Option<Reply>,
    /// DNS and policy answers for the restrictions, looked up by the driver
    /// ([`Session::next_lookup`]).
    answers: crate::dnscheck::Facts,
    /// Identifies the transaction to policy services: this session and its MAIL count.
    instance: String,
    id: u64,
    mails: u32,
}

/// Sessions started by this process (for policy `instance` values).
static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<'s> Session<'s> {
    pub fn new(settings: &'s Settings, client: Client) -> Session<'s> {
        Session {
            s: settings,
            client,
            helo: None,
            esmtp: false,
            sasl_user: None,
            sasl_method: None,
            tls: None,
            mechanisms: Vec::new(),
            auth_mech: None,
            tx: None,
            errors: 0,
            junk: 0,
            counters: Counters::default(),
            connect_reject: None,
            answers: Default::default(),
            instance: String::new(),
            id: SESSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            mails: 0,
        }
    }

    /// The 220 greeting (or the rejection of a client refused at connect time).
    pub fn greeting(&mut self) -> Step {
        if self.s.tls_wrapper && self.tls.is_none() {
            // The driver only calls this before a handshake when no certificate is usable.
            return Step::close(Reply::new(
                421,
                "4.7.0",
                format!("{} Service not available: TLS is not available", self.s.myhostname),
            ));
        }
        if !self.s.delay_reject
            && let Decision::Reject(r) = self.eval(Stage::Client, &self.s.restrictions.client, None)
        {
            self.log_reject("CONNECT", &r, None);
            self.connect_reject = Some(r);
        }
        Step::reply(Reply::new(220, "", self.s.banner.clone()))
    }

    fn facts<'a>(&'a self, rcpt: Option<&'a str>, pipelined: bool) -> Facts<'a> {
        Facts {
            client_addr: self.client.addr,
            client_name: &self.client.name,
            helo: self.helo.as_deref(),
            sender: self.tx.as_ref().map(|t| t.sender.as_str()),
            recipient: rcpt,
            sasl_user: self.sasl_user.as_deref(),
            improper_pipelining: pipelined && !self.esmtp,
            client_reverse_name: &self.client.reverse_name,
            client_name_tempfail: self.client.name_tempfail,
            client_reverse_tempfail: self.client.reverse_tempfail,
            answers: &self.answers,
            probe: None,
            protocol_state: if rcpt.is_some() {
                "RCPT"
            } else if self.tx.is_some() {
                "MAIL"
            } else if self.helo.is_some() && self.esmtp {
                "EHLO"
            } else if self.helo.is_some() {
                "HELO"
            } else {
                "CONNECT"
            },
            esmtp: self.esmtp,
            sasl_method: self.sasl_method.as_deref(),
            size: self.tx.as_ref().and_then(|t| t.params.size).unwrap_or(0),
            recipient_count: self.tx.as_ref().map_or(0, |t| t.rcpts.len()),
            instance: &self.instance,
            tls: self.tls.as_ref(),
        }
    }

    /// The first answer (DNS, policy service) the restriction lists would miss while
    /// handling `cmd` (`None`: the greeting), found by running their evaluation as the
    /// command would run it until it reaches a restriction without its answer. The driver
    /// looks that up, hands it over ([`Session::answer`]) and asks again until nothing
    /// is missing, then passes `cmd` to [`Session::command`]. So a policy service is asked
    /// only where the lists get to it, as in Postfix.
    pub fn next_lookup(&self, cmd: Option<&Command>) -> Option<crate::dnscheck::Lookup> {
        if !self.s.restrictions.lookups {
            return None;
        }
        let r = &self.s.restrictions;
        let delay = self.s.delay_reject;
        let missing = std::cell::RefCell::new(None);
        let (helo, sender, rcpt);
        let mut facts = self.facts(None, false);
        facts.probe = Some(&missing);
        let mut lists: Vec<(Stage, &[policy::Restriction])> = Vec::new();
        match cmd {
            None if !delay => lists.push((Stage::Client, &r.client)),
            Some(Command::Helo(n) | Command::Ehlo(n)) if !delay => {
                helo = n.to_string();
                facts.helo = Some(&helo);
                facts.protocol_state = if matches!(cmd, Some(Command::Ehlo(_))) { "EHLO" } else { "HELO" };
                lists.push((Stage::Helo, &r.helo));
            }
            Some(Command::Mail { from, params }) if !delay && self.tx.is_none() => {
                sender = self.sender_of(from);
                facts.sender = Some(&sender);
                facts.size = params.size.unwrap_or(0);
                facts.protocol_state = "MAIL";
                lists.push((Stage::Sender, &r.sender));
            }
            Some(Command::Rcpt { to, .. }) if self.tx.is_some() => {
                rcpt = Address::parse(&to.0.to_string(), &self.s.myorigin).full();
                facts.recipient = Some(&rcpt);
                facts.protocol_state = "RCPT";
                if delay {
                    lists.extend([(Stage::Client, &r.client[..]), (Stage::Helo, &r.helo), (Stage::Sender, &r.sender)]);
                }
                lists.extend([(Stage::Recipient, &r.relay[..]), (Stage::Recipient, &r.recipient)]);
            }
            Some(Command::Data | Command::Bdat { .. }) if self.tx.is_some() => {
                facts.protocol_state = "DATA";
                lists.push((Stage::Data, &r.data));
            }
            _ => return None,
        }
        self.probe(&facts, &lists);
        missing.into_inner()
    }

    /// As [`Session::next_lookup`], for the end of the content (smtpd_end_of_data_restrictions).
    pub fn next_lookup_at_end_of_data(&self) -> Option<crate::dnscheck::Lookup> {
        if !self.s.restrictions.lookups || self.tx.is_none() {
            return None;
        }
        let missing = std::cell::RefCell::new(None);
        let mut facts = self.facts(None, false);
        facts.probe = Some(&missing);
        facts.protocol_state = "END-OF-MESSAGE";
        self.probe(&facts, &[(Stage::Data, &self.s.restrictions.end_of_data)]);
        missing.into_inner()
    }

    /// Evaluates `lists` as a command would (each until it decides, the first rejection
    /// ending all); in probe mode (`facts.probe`) it stops at the first restriction whose
    /// answer is missing, which the restriction records there.
    fn probe(&self, facts: &Facts<'_>, lists: &[(Stage, &[policy::Restriction])]) {
        let env = self.env();
        for (stage, list) in lists {
            let d = policy::eval(list, *stage, facts, &env);
            if facts.probe.is_some_and(|m| m.borrow().is_some()) || matches!(d, Decision::Reject(_)) {
                break;
            }
        }
    }

    /// MAIL FROM's address as the transaction keeps it: "" for `<>`, `@$myorigin` appended
    /// when bare.
    fn sender_of(&self, from: &ReversePath) -> String {
        match from {
            ReversePath::Null => String::new(),
            ReversePath::Path(a) => Address::parse(&a.to_string(), &self.s.myorigin).full(),
        }
    }

    /// An answer the driver looked up (see [`Session::next_lookup`]).
    pub fn answer(&mut self, q: crate::dnscheck::Query, v: crate::dnscheck::Verdict) {
        self.answers.insert(q, v);
    }

    fn env(&self) -> policy::Env<'_> {
        policy::Env {
            domains: &self.s.domains,
            mynetworks: &self.s.mynetworks,
            codes: &self.s.codes,
            myorigin: &self.s.myorigin,
            recipient_delimiter: &self.s.recipient_delimiter,
            sender_login_maps: &self.s.sender_login_maps,
            sender_login_broken: self.s.sender_login_broken.as_deref(),
            policy_default_action: &self.s.policy_default_action,
        }
    }

    fn eval(&self, stage: Stage, list: &[policy::Restriction], rcpt: Option<&str>) -> Decision {
        policy::eval(list, stage, &self.facts(rcpt, false), &self.env())
    }

    /// Non-ASCII addresses need MAIL FROM's SMTPUTF8 and smtputf8_enable.
    fn utf8_ok(&self, address: &str, declared: bool) -> bool {
        address.is_ascii() || (declared && self.s.smtputf8)
    }

    /// The TLS handshake completed. RFC 3207 section 4.2: everything learned from the client
    /// before it is forgotten (HELO/EHLO, transaction, authentication); the client must say
    /// EHLO again. In wrapper mode this is called before the greeting.
    pub fn tls_started(&mut self, info: rpost_tls::TlsInfo) {
        tracing::info!("Anonymous TLS connection established from {}: {}", self.client.display(), info.summary());
        self.tls = Some(info);
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.sasl_user = None;
        self.sasl_method = None;
    }

    /// The TLS handshake failed: log it as Postfix does; the driver closes the connection.
    pub fn tls_failed(&self, error: &str) {
        tracing::info!("SSL_accept error from {}: {error}", self.client.display());
        let after = if self.s.tls_wrapper { "CONNECT" } else { "STARTTLS" };
        tracing::info!("lost connection after {after} from {}", self.client.display());
    }

    /// STARTTLS is offered: a certificate, a level, not yet in TLS.
    fn starttls_offered(&self) -> bool {
        self.s.tls.is_some() && self.s.tls_level != TlsLevel::None && self.tls.is_none() && !self.s.tls_wrapper
    }

    /// The mechanisms of the SASL server, as the driver fetched them.
    pub fn set_mechanisms(&mut self, mechanisms: Vec<Mechanism>) {
        self.mechanisms = mechanisms;
    }

    /// Whether the driver needs the SASL server's mechanisms for this client.
    pub fn wants_sasl(&self) -> bool {
        self.s.sasl.as_ref().is_some_and(|sasl| !sasl.exceptions.contains(self.client.addr))
    }

    /// Mechanisms offered now, after smtpd_sasl_(tls_)security_options.
    pub fn offered_mechanisms(&self) -> Vec<&str> {
        let Some(sasl) = &self.s.sasl else { return Vec::new() };
        let options = if self.tls.is_some() { &sasl.tls_security } else { &sasl.security };
        let has = |m: &Mechanism, f: &str| m.flags.iter().any(|x| x.eq_ignore_ascii_case(f));
        self.mechanisms
            .iter()
            .filter(|m| {
                options.iter().all(|o| match o.to_ascii_lowercase().as_str() {
                    "noplaintext" => !has(m, "plaintext"),
                    "noanonymous" => !has(m, "anonymous"),
                    "nodictionary" => !has(m, "dictionary"),
                    "noactive" => !has(m, "active"),
                    "forward_secrecy" => has(m, "forward-secrecy"),
                    "mutual_auth" => has(m, "mutual-auth"),
                    _ => true,
                })
            })
            .map(|m| m.name.as_str())
            .collect()
    }

    /// AUTH is announced in EHLO.
    fn auth_offered(&self) -> bool {
        let tls_needed = self.s.tls_auth_only || self.s.tls_level == TlsLevel::Encrypt;
        let tls_ok = self.tls.is_some() || !tls_needed;
        self.wants_sasl() && tls_ok && !self.offered_mechanisms().is_empty()
    }

    fn proto(&self) -> &'static str {
        match (self.esmtp, self.sasl_user.is_some()) {
            (false, _) => "SMTP",
            (true, false) => "ESMTP",
            (true, true) => "ESMTPA",
        }
    }

    /// Logs a rejection in Postfix's NOQUEUE shape.
    fn log_reject(&self, what: &str, reply: &Reply, rcpt: Option<&str>) {
        let text = String::from_utf8_lossy(&reply.to_bytes()).trim_end().replace("\r\n", " ");
        let id = self.tx.as_ref().and_then(|t| t.queue_id.clone()).unwrap_or_else(|| "NOQUEUE".into());
        let mut line = format!("{id}: reject: {what} from {}: {text};", self.client.display());
        if let Some(tx) = &self.tx {
            line.push_str(&format!(" from=<{}>", tx.sender));
        }
        if let Some(r) = rcpt {
            line.push_str(&format!(" to=<{r}>"));
        }
        line.push_str(&format!(" proto={}", self.proto()));
        if let Some(h) = &self.helo {
            line.push_str(&format!(" helo=<{h}>"));
        }
        tracing::info!("{line}");
    }

    /// Counts an error reply and applies the soft/hard error limits.
    fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors >= self.s.hard_error_limit {
            tracing::info!("too many errors after {} from {}", reply.code, self.client.display());
            return Step::close(Reply::new(421, "4.7.0", format!("{} Error: too many errors", self.s.myhostname)));
        }
        let delay = (self.errors >= self.s.soft_error_limit).then_some(self.s.error_sleep);
        Step { reply: Some(reply), delay, next: Next::Continue }
    }

    fn junk(&mut self, reply: Reply) -> Step {
        self.junk += 1;
        if self.junk > self.s.junk_command_limit {
            return self.error(reply);
        }
        Step::reply(reply)
    }

    /// One command line from the codec.
    pub fn command(&mut self, cmd: Result<Command, CommandError>, pipelined: bool) -> Step {
        let cmd = match cmd {
            Ok(c) => c,
            Err(e) => {
                self.counters.count("unknown", false);
                return self.error(e.reply());
            }
        };
        if let Some(r) = &self.connect_reject
            && !matches!(cmd, Command::Quit | Command::Rset | Command::Noop)
        {
            let r = r.clone();
            return self.error(r);
        }
        match cmd {
            Command::Helo(name) => self.hello(name, false),
            Command::Ehlo(name) => self.hello(name, true),
            Command::Lhlo(_) => {
                self.counters.count("unknown", false);
                self.error(Reply::new(502, "5.5.2", "Error: command not recognized"))
            }
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to.0.to_string(), params, pipelined),
            Command::Data => self.data(Content::Data, pipelined),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.counters.count("rset", true);
                self.tx = None;
                self.junk(Reply::new(250, "2.0.0", "Ok"))
            }
            Command::Noop => {
                self.counters.count("noop", true);
                self.junk(Reply::new(250, "2.0.0", "Ok"))
            }
            Command::Quit => {
                self.counters.count("quit", true);
                Step::close(Reply::new(221, "2.0.0", "Bye"))
            }
            Command::Help(_) => {
                self.counters.count("help", true);
                self.junk(Reply::new(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP VRFY QUIT"))
            }
            Command::Vrfy(arg) => self.vrfy(arg),
            Command::Expn(_) | Command::Etrn(_) | Command::Unknown(_) => {
                self.counters.count("unknown", false);
                self.error(Reply::new(502, "5.5.2", "Error: command not recognized"))
            }
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial),
        }
    }

    /// RFC 3207 STARTTLS.
    fn starttls(&mut self) -> Step {
        if self.tls.is_some() {
            self.counters.count("starttls", false);
            return self.error(Reply::new(554, "5.5.1", "Error: TLS already active"));
        }
        if self.s.tls_level == TlsLevel::None || self.s.tls_wrapper {
            self.counters.count("starttls", false);
            return self.error(Reply::new(502, "5.5.1", "Error: command not implemented"));
        }
        if self.s.tls.is_none() {
            self.counters.count("starttls", false);
            return self.error(Reply::new(454, "4.7.0", "TLS not available due to local problem"));
        }
        self.counters.count("starttls", true);
        Step { reply: Some(Reply::new(220, "2.0.0", "Ready to start TLS")), delay: None, next: Next::StartTls }
    }

    /// RFC 4954 AUTH: checks, then the driver runs the exchange with the SASL server.
    fn auth(&mut self, mechanism: String, initial: Option<String>) -> Step {
        let refuse = |me: &mut Self, r: Reply| {
            me.counters.count("auth", false);
            me.error(r)
        };
        if !self.wants_sasl() {
            return refuse(self, Reply::new(503, "5.5.1", "Error: authentication not enabled"));
        }
        if self.s.tls_level == TlsLevel::Encrypt && self.tls.is_none() {
            return refuse(self, Reply::new(530, "5.7.0", "Must issue a STARTTLS command first"));
        }
        if self.s.tls_auth_only && self.tls.is_none() {
            return refuse(
                self,
                Reply::new(538, "5.7.11", "Encryption required for requested authentication mechanism"),
            );
        }
        if self.sasl_user.is_some() {
            return refuse(self, Reply::new(503, "5.5.1", "Error: already authenticated"));
        }
        if self.tx.is_some() {
            return refuse(self, Reply::new(503, "5.5.1", "Error: MAIL transaction in progress"));
        }
        if self.mechanisms.is_empty() {
            return refuse(self, Reply::new(454, "4.7.0", "Temporary authentication failure"));
        }
        if !self.offered_mechanisms().iter().any(|m| m.eq_ignore_ascii_case(&mechanism)) {
            return refuse(self, Reply::new(504, "5.5.4", "Unsupported authentication mechanism"));
        }
        let initial = match initial.as_deref() {
            None => None,
            Some("=") => Some(String::new()),
            Some(b64) if valid_base64(b64) => Some(b64.to_string()),
            Some(_) => return refuse(self, Reply::new(501, "5.5.2", "Cannot decode response")),
        };
        self.auth_mech = Some(mechanism.clone());
        Step { reply: None, delay: None, next: Next::Auth(AuthStart { mechanism, initial }) }
    }

    /// The SASL server sent a challenge (base64, validated by the SASL client): the 334
    /// line for the client, with its space even when the challenge is empty (RFC 4954).
    pub fn auth_challenge(&self, challenge_b64: &str) -> Vec<u8> {
        format!("334 {challenge_b64}\r\n").into_bytes()
    }

    /// The client's line after a 334: `*` cancels (RFC 4954 section 4), anything else must
    /// be base64, which also keeps tabs and newlines out of the auth protocol.
    pub fn auth_response(&mut self, line: &[u8]) -> AuthAnswer {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "*" {
            self.auth_mech = None;
            self.counters.count("auth", false);
            return AuthAnswer::Abort(self.error(Reply::new(501, "5.7.0", "Authentication aborted")));
        }
        if !valid_base64(text) {
            self.auth_mech = None;
            self.counters.count("auth", false);
            return AuthAnswer::Abort(self.error(Reply::new(501, "5.5.2", "Cannot decode response")));
        }
        AuthAnswer::Send(text.to_string())
    }

    /// The exchange ended.
    pub fn auth_done(&mut self, outcome: AuthOutcome) -> Step {
        let mech = self.auth_mech.take().unwrap_or_default();
        match outcome {
            AuthOutcome::Success { user } => {
                self.counters.count("auth", true);
                self.sasl_user = Some(user);
                self.sasl_method = Some(mech);
                Step::reply(Reply::new(235, "2.7.0", "Authentication successful"))
            }
            AuthOutcome::Failure { reason } => {
                self.counters.count("auth", false);
                let reason = reason.map(|r| clean(&r)).filter(|r| !r.is_empty());
                tracing::warn!(
                    "{}: SASL {mech} authentication failed: {}",
                    self.client.display(),
                    reason.as_deref().unwrap_or("authentication failure")
                );
                let text = match reason {
                    Some(r) => format!("Error: authentication failed: {r}"),
                    None => "Error: authentication failed: authentication failure".to_string(),
                };
                self.error(Reply::new(535, "5.7.8", text))
            }
            AuthOutcome::TempFail(why) => {
                self.counters.count("auth", false);
                tracing::warn!("{}: SASL {mech} authentication aborted: {why}", self.client.display());
                self.error(Reply::new(454, "4.7.0", "Temporary authentication failure"))
            }
        }
    }

    fn hello(&mut self, name: String, esmtp: bool) -> Step {
        let verb = if esmtp { "ehlo" } else { "helo" };
        if !self.s.delay_reject {
            let old = self.helo.replace(name.clone());
            if let Decision::Reject(r) = self.eval(Stage::Helo, &self.s.restrictions.helo, None) {
                self.helo = old;
                self.counters.count(verb, false);
                self.log_reject(if esmtp { "EHLO" } else { "HELO" }, &r, None);
                return self.error(r);
            }
        }
        self.counters.count(verb, true);
        self.helo = Some(name);
        self.esmtp = esmtp;
        self.tx = None;
        if !esmtp {
            return Step::reply(Reply::new(250, "", self.s.myhostname.clone()));
        }
        let mut caps = vec!["PIPELINING".to_string()];
        if self.s.message_size_limit > 0 {
            caps.push(format!("SIZE {}", self.s.message_size_limit));
        } else {
            caps.push("SIZE".into());
        }
        if !self.s.disable_vrfy {
            caps.push("VRFY".into());
        }
        if self.starttls_offered() {
            caps.push("STARTTLS".into());
        }
        if self.auth_offered() {
            let mechs = self.offered_mechanisms().join(" ");
            caps.push(format!("AUTH {mechs}"));
            if self.s.sasl.as_ref().is_some_and(|s| s.broken_clients) {
                caps.push(format!("AUTH={mechs}"));
            }
        }
        caps.extend(["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"].map(String::from));
        if self.s.smtputf8 {
            caps.push("SMTPUTF8".into());
        }
        caps.push("CHUNKING".into());
        Step::reply(rpost_smtp_proto::ehlo_reply(&self.s.myhostname, &caps))
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) -> Step {
        if self.tx.is_some() {
            self.counters.count("mail", false);
            return self.error(Reply::new(503, "5.5.1", "Error: nested MAIL command"));
        }
        self.mails += 1;
        self.instance = format!("{:x}.{}", self.id, self.mails);
        if self.s.helo_required && self.helo.is_none() {
            self.counters.count("mail", false);
            return self.error(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"));
        }
        if self.s.tls_level == TlsLevel::Encrypt && self.tls.is_none() {
            self.counters.count("mail", false);
            return self.error(Reply::new(530, "5.7.0", "Must issue a STARTTLS command first"));
        }
        if let Err(e) = params.reject_unknown() {
            self.counters.count("mail", false);
            return self.error(e.reply());
        }
        if params.body == Some(Body::BinaryMime) {
            // Not offered in EHLO (BINARYMIME needs CHUNKING-only delivery downstream).
            self.counters.count("mail", false);
            return self.error(Reply::new(555, "5.5.4", "Unsupported option: BODY=BINARYMIME"));
        }
        if let Some(size) = params.size
            && self.s.message_size_limit > 0
            && size > self.s.message_size_limit
        {
            self.counters.count("mail", false);
            return self.error(Reply::new(552, "5.3.4", "Message size exceeds fixed limit"));
        }
        let sender = self.sender_of(&from);
        if !self.utf8_ok(&sender, params.smtputf8) {
            self.counters.count("mail", false);
            return self.error(Reply::new(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address"));
        }
        if params.smtputf8 && !self.s.smtputf8 {
            self.counters.count("mail", false);
            return self.error(Reply::new(555, "5.5.4", "Unsupported option: SMTPUTF8"));
        }
        let tx =
            Transaction { sender, params, rcpts: Vec::new(), rejected: 0, queue_id: None, size: 0, too_big: false };
        self.tx = Some(tx);
        if !self.s.delay_reject
            && let Decision::Reject(r) = self.eval(Stage::Sender, &self.s.restrictions.sender, None)
        {
            self.log_reject("MAIL", &r, None);
            self.tx = None;
            self.counters.count("mail", false);
            return self.error(r);
        }
        self.counters.count("mail", true);
        self.junk = 0;
        Step::reply(Reply::new(250, "2.1.0", "Ok"))
    }

    fn rcpt(&mut self, to: String, params: rpost_smtp_proto::RcptParams, pipelined: bool) -> Step {
        let Some(tx) = &self.tx else {
            self.counters.count("rcpt", false);
            return self.error(Reply::new(503, "5.5.1", "Error: need MAIL command"));
        };
        if tx.rcpts.len() >= self.s.recipient_limit {
            self.counters.count("rcpt", false);
            return self.error(Reply::new(452, "4.5.3", "Error: too many recipients"));
        }
        if let Err(e) = params.reject_unknown() {
            self.counters.count("rcpt", false);
            return self.error(e.reply());
        }
        let smtputf8 = tx.params.smtputf8;
        if !self.utf8_ok(&to, smtputf8) {
            self.counters.count("rcpt", false);
            return self.error(Reply::new(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address"));
        }
        let address = Address::parse(&to, &self.s.myorigin).full();
        if let Decision::Reject(r) = self.check_rcpt(&address, pipelined) {
            self.log_reject("RCPT", &r, Some(&address));
            if let Some(tx) = &mut self.tx {
                tx.rejected += 1;
            }
            self.counters.count("rcpt", false);
            return self.error(r);
        }
        let rcpt = Rcpt {
            address,
            given: to,
            orcpt: params.orcpt.map(|(t, a)| format!("{t};{a}")),
            notify: params.notify.map(|n| n.bits()),
        };
        if let Some(tx) = &mut self.tx {
            tx.rcpts.push(rcpt);
        }
        self.counters.count("rcpt", true);
        Step::reply(Reply::new(250, "2.1.5", "Ok"))
    }

    /// All RCPT-time checks, in Postfix's order.
    fn check_rcpt(&self, rcpt: &str, pipelined: bool) -> Decision {
        let env = self.env();
        let facts = self.facts(Some(rcpt), pipelined);
        let r = &self.s.restrictions;
        let mut lists: Vec<(Stage, &[policy::Restriction])> = Vec::new();
        if self.s.delay_reject {
            lists.push((Stage::Client, &r.client));
            lists.push((Stage::Helo, &r.helo));
            lists.push((Stage::Sender, &r.sender));
        }
        lists.push((Stage::Recipient, &r.relay));
        lists.push((Stage::Recipient, &r.recipient));
        for (stage, list) in lists {
            if let d @ Decision::Reject(_) = policy::eval(list, stage, &facts, &env) {
                return d;
            }
        }
        if self.s.reject_unlisted_sender
            && let Some(tx) = &self.tx
            && !tx.sender.is_empty()
            && let d @ Decision::Reject(_) = policy::unlisted(&tx.sender, policy::AccessKind::Sender, &facts, &env)
        {
            return d;
        }
        if self.s.reject_unlisted_recipient {
            return policy::unlisted(rcpt, policy::AccessKind::Recipient, &facts, &env);
        }
        Decision::Dunno
    }

    fn data(&mut self, content: Content, pipelined: bool) -> Step {
        let verb = if content == Content::Data { "data" } else { "bdat" };
        let Some(tx) = &self.tx else {
            self.counters.count(verb, false);
            return self.refuse_content(content, Reply::new(503, "5.5.1", "Error: need RCPT command"));
        };
        if tx.rcpts.is_empty() {
            self.counters.count(verb, false);
            let r = if tx.rejected > 0 {
                Reply::new(554, "5.5.1", "Error: no valid recipients")
            } else {
                Reply::new(503, "5.5.1", "Error: need RCPT command")
            };
            return self.refuse_content(content, r);
        }
        let mut facts = self.facts(None, pipelined && content == Content::Data);
        facts.protocol_state = "DATA";
        if let Decision::Reject(r) = policy::eval(&self.s.restrictions.data, Stage::Data, &facts, &self.env()) {
            self.log_reject("DATA", &r, None);
            self.counters.count(verb, false);
            return self.refuse_content(content, r);
        }
        Step { reply: None, delay: None, next: Next::Open(content) }
    }

    /// A refused DATA is just a reply; a refused BDAT still has its chunk on the wire.
    fn refuse_content(&mut self, content: Content, reply: Reply) -> Step {
        let mut step = self.error(reply);
        if let Content::Bdat { size, .. } = content
            && step.next == Next::Continue
        {
            step.next = Next::Discard { size };
        }
        step
    }

    fn bdat(&mut self, size: u64, last: bool) -> Step {
        match self.tx.as_ref().map(|t| t.queue_id.is_some()) {
            Some(true) => {
                self.counters.count("bdat", true);
                Step { reply: None, delay: None, next: Next::Chunk { size, last } }
            }
            _ => self.data(Content::Bdat { size, last }, false),
        }
    }

    /// The driver opened (or failed to open) the queue file for the transaction.
    pub fn data_opened(&mut self, content: Content, result: Result<String, String>) -> Step {
        let verb = if content == Content::Data { "data" } else { "bdat" };
        match result {
            Ok(id) => {
                match (&self.sasl_method, &self.sasl_user) {
                    (Some(m), Some(u)) => tracing::info!(
                        "{id}: client={}, sasl_method={m}, sasl_username={}",
                        self.client.display(),
                        clean(u)
                    ),
                    _ => tracing::info!("{id}: client={}", self.client.display()),
                }
                if let Some(tx) = &mut self.tx {
                    tx.queue_id = Some(id);
                }
                match content {
                    Content::Data => {
                        self.counters.count(verb, true);
                        Step::reply(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"))
                    }
                    Content::Bdat { size, last } => {
                        self.counters.count(verb, true);
                        Step { reply: None, delay: None, next: Next::Chunk { size, last } }
                    }
                }
            }
            Err(e) => {
                tracing::warn!("queue file create: {e}");
                self.counters.count(verb, false);
                self.tx = None;
                let step = self.error(Reply::new(451, "4.3.0", "Error: queue file write error"));
                match content {
                    Content::Bdat { size, .. } if step.next == Next::Continue => {
                        Step { next: Next::Discard { size }, ..step }
                    }
                    _ => step,
                }
            }
        }
    }

    /// Accounts message bytes; returns false once the size limit is exceeded (the driver
    /// then stops storing, but keeps reading to the end of the data).
    pub fn data_bytes(&mut self, n: usize) -> bool {
        let limit = self.s.message_size_limit;
        if let Some(tx) = &mut self.tx {
            tx.size += n as u64;
            if limit > 0 && tx.size > limit {
                tx.too_big = true;
            }
            return !tx.too_big;
        }
        false
    }

    /// A BDAT chunk that was not the last arrived completely.
    pub fn chunk_done(&mut self, size: u64) -> Step {
        match &self.tx {
            Some(tx) if tx.too_big => self.abort_big(),
            _ => Step::reply(Reply::new(250, "2.0.0", format!("Ok: {size} bytes"))),
        }
    }

    fn abort_big(&mut self) -> Step {
        if let Some(tx) = self.tx.take() {
            tracing::info!(
                "{}: reject: size={} from {}: 552 5.3.4 Message size exceeds fixed limit; from=<{}> proto={}",
                tx.queue_id.as_deref().unwrap_or("NOQUEUE"),
                tx.size,
                self.client.display(),
                tx.sender,
                self.proto()
            );
        }
        self.error(Reply::new(552, "5.3.4", "Message size exceeds fixed limit"))
    }

    /// The end of the message content (DATA's final dot or the LAST chunk). `bare` reports
    /// bare CR or LF seen in the content. Returns `Next::Continue` with no reply when the
    /// driver should commit, then call [`Session::committed`].
    pub fn content_end(&mut self, bare: bool) -> Option<Step> {
        if bare {
            // SMTP smuggling defence: the whole message is refused and the session ended.
            if let Some(tx) = self.tx.take() {
                tracing::info!(
                    "{}: reject: bare <CR> or <LF> in message content from {}; from=<{}>",
                    tx.queue_id.as_deref().unwrap_or("NOQUEUE"),
                    self.client.display(),
                    tx.sender
                );
            }
            return Some(Step::close(Reply::new(
                521,
                "5.5.2",
                format!("{} Error: bare <CR> or <LF> received", self.s.myhostname),
            )));
        }
        if self.tx.as_ref().is_some_and(|t| t.too_big) {
            return Some(self.abort_big());
        }
        let mut facts = self.facts(None, false);
        facts.protocol_state = "END-OF-MESSAGE";
        if let Decision::Reject(r) = policy::eval(&self.s.restrictions.end_of_data, Stage::Data, &facts, &self.env()) {
            self.log_reject("END-OF-MESSAGE", &r, None);
            self.tx = None;
            return Some(self.error(r));
        }
        None
    }

    /// The queue file was committed (or failed).
    pub fn committed(&mut self, result: Result<String, String>) -> Step {
        let tx = self.tx.take();
        match result {
            Ok(id) => {
                self.junk = 0;
                if let Some(tx) = tx {
                    tracing::info!("{id}: from=<{}>, size={}, nrcpt={} (queued)", tx.sender, tx.size, tx.rcpts.len());
                }
                Step::reply(Reply::new(250, "2.0.0", format!("Ok: queued as {id}")))
            }
            Err(e) => {
                tracing::warn!("queue file commit: {e}");
                self.error(Reply::new(451, "4.3.0", "Error: queue file write error"))
            }
        }
    }

    fn vrfy(&mut self, arg: String) -> Step {
        if self.s.tls_level == TlsLevel::Encrypt && self.tls.is_none() {
            self.counters.count("vrfy", false);
            return self.error(Reply::new(530, "5.7.0", "Must issue a STARTTLS command first"));
        }
        if self.s.disable_vrfy {
            self.counters.count("vrfy", false);
            return self.error(Reply::new(502, "5.5.1", "VRFY command is disabled"));
        }
        let arg = arg.trim().trim_start_matches('<').trim_end_matches('>').to_string();
        if arg.is_empty() {
            self.counters.count("vrfy", false);
            return self.error(Reply::new(501, "5.5.4", "Syntax: VRFY address"));
        }
        let address = Address::parse(&arg, &self.s.myorigin).full();
        let facts = self.facts(Some(&address), false);
        if let Decision::Reject(r) = policy::unlisted(&address, policy::AccessKind::Recipient, &facts, &self.env()) {
            self.counters.count("vrfy", false);
            return self.error(r);
        }
        self.counters.count("vrfy", true);
        self.junk(Reply::new(252, "2.0.0", address))
    }

    /// A command line over the length limit.
    pub fn line_too_long(&mut self) -> Step {
        self.counters.count("unknown", false);
        self.error(Reply::new(500, "5.5.2", "Error: line too long"))
    }

    /// A command line with bare CR or LF: refused and the session ended, as Postfix's
    /// smtpd_forbid_bare_newline = reject does.
    pub fn bare_line_ending(&mut self) -> Step {
        self.counters.count("unknown", false);
        tracing::info!("disconnect: bare <CR> or <LF> in command from {}", self.client.display());
        Step::close(Reply::new(521, "5.5.2", format!("{} Error: bare <CR> or <LF> received", self.s.myhostname)))
    }

    /// The client was silent for smtpd_timeout.
    pub fn timeout(&self) -> Reply {
        tracing::info!("timeout after {} from {}", self.stage_name(), self.client.display());
        Reply::new(421, "4.4.2", format!("{} Error: timeout exceeded", self.s.myhostname))
    }

    fn stage_name(&self) -> &'static str {
        match &self.tx {
            Some(t) if t.queue_id.is_some() => "DATA",
            Some(t) if !t.rcpts.is_empty() => "RCPT",
            Some(_) => "MAIL",
            None if self.helo.is_some() => "EHLO",
            None => "CONNECT",
        }
    }

    /// `disconnect from name[addr] ehlo=1 mail=1 ... commands=N`
    pub fn disconnect_line(&self) -> String {
        format!("disconnect from {}{}", self.client.display(), self.counters.summary())
    }

    /// The Received: header for the message being received (RFC 5321 section 4.4).
    pub fn received_header(&self, now: SystemTime) -> String {
        let Some(tx) = &self.tx else { return String::new() };
        let helo = self.helo.as_deref().unwrap_or("unknown");
        // RFC 3848 protocol names.
        let proto = match (self.esmtp, self.tls.is_some(), self.sasl_user.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let id = tx.queue_id.as_deref().unwrap_or("");
        let mut h = format!("Received: from {} ({} [{}])", clean(helo), self.client.name, self.client.addr);
        if let Some(tls) = &self.tls
            && self.s.tls_received_header
        {
            h.push_str(&format!("\r\n\t(using {})\r\n\t(No client certificate requested)", tls.summary()));
        }
        if let Some(user) = &self.sasl_user
            && self.s.sasl.as_ref().is_some_and(|s| s.authenticated_header)
        {
            h.push_str(&format!("\r\n\t(Authenticated sender: {})", clean(user)));
        }
        h.push_str(&format!("\r\n\tby {} ({}) with {} id {}", self.s.myhostname, self.s.mail_name, proto, id));
        if tx.rcpts.len() == 1 {
            h.push_str(&format!("\r\n\tfor <{}>", clean(&tx.rcpts[0].address)));
        }
        h.push_str(&format!("; {}\r\n", rpost_log::rfc5322_date(now)));
        h
    }

    /// The envelope body type (for the queue file).
    pub fn body(&self) -> Option<Body> {
        self.tx.as_ref().and_then(|t| t.params.body)
    }
}

/// RFC 4648 base64 as SASL uses it (padding required, no white space); "" is valid (an
/// empty response).
pub fn valid_base64(s: &str) -> bool {
    use base64::Engine;
    s.is_empty() || base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

/// Keeps client-supplied text from breaking the header's structure.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || c == '(' || c == ')' { '?' } else { c }).take(255).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpost_smtp_proto::parse_command;

    fn settings(extra: &[(&str, &str)]) -> (tempfile::TempDir, Settings) {
        let dir = tempfile::tempdir().unwrap();
        rpost_tls::ensure_default_identity(dir.path(), "mx.example.test").unwrap();
        let mut p = rpost_config::Params::empty();
        p.set("myhostname", "mx.example.test");
        p.set("config_directory", &dir.path().display().to_string());
        p.set("smtpd_tls_security_level", "may");
        p.set("smtpd_sasl_auth_enable", "yes");
        for (k, v) in extra {
            p.set(k, v);
        }
        let s = Settings::from_params(&p).unwrap();
        (dir, s)
    }

    fn client() -> Client {
        Client::new("192.0.2.9".parse().unwrap(), 1234, "unknown")
    }

    fn cmd(s: &mut Session<'_>, line: &str) -> Step {
        s.command(parse_command(line.as_bytes()), false)
    }

    fn text(step: &Step) -> String {
        String::from_utf8(step.reply.as_ref().map(|r| r.to_bytes()).unwrap_or_default()).unwrap()
    }

    fn mechs() -> Vec<Mechanism> {
        vec![
            Mechanism { name: "PLAIN".into(), flags: vec!["plaintext".into()] },
            Mechanism { name: "LOGIN".into(), flags: vec!["plaintext".into()] },
            Mechanism { name: "ANONYMOUS".into(), flags: vec!["anonymous".into()] },
        ]
    }

    fn info() -> rpost_tls::TlsInfo {
        rpost_tls::TlsInfo { protocol: "TLSv1.3".into(), cipher: "TLS_AES_256_GCM_SHA384".into(), bits: 256 }
    }

    #[test]
    fn starttls_is_offered_once_and_resets_the_session() {
        let (_d, st) = settings(&[]);
        let mut s = Session::new(&st, client());
        s.set_mechanisms(mechs());
        let ehlo = text(&cmd(&mut s, "EHLO c.example"));
        assert!(ehlo.contains("250-STARTTLS\r\n") && ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
        assert_eq!(text(&cmd(&mut s, "MAIL FROM:<a@c.example>")), "250 2.1.0 Ok\r\n");
        let step = cmd(&mut s, "STARTTLS");
        assert_eq!((text(&step).as_str(), &step.next), ("220 2.0.0 Ready to start TLS\r\n", &Next::StartTls));
        s.tls_started(info());
        assert!(s.helo.is_none() && s.tx.is_none() && !s.esmtp, "RFC 3207 4.2: everything is forgotten");
        let ehlo = text(&cmd(&mut s, "EHLO c.example"));
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert_eq!(text(&cmd(&mut s, "STARTTLS")), "554 5.5.1 Error: TLS already active\r\n");
    }

    #[test]
    fn levels_none_and_encrypt() {
        let (_d, st) = settings(&[("smtpd_tls_security_level", "none")]);
        let mut s = Session::new(&st, client());
        assert!(!text(&cmd(&mut s, "EHLO c.example")).contains("STARTTLS"));
        assert_eq!(text(&cmd(&mut s, "STARTTLS")), "502 5.5.1 Error: command not implemented\r\n");
        let (_d, st) = settings(&[("smtpd_tls_security_level", "encrypt")]);
        let mut s = Session::new(&st, client());
        s.set_mechanisms(mechs());
        let ehlo = text(&cmd(&mut s, "EHLO c.example"));
        assert!(ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"), "{ehlo}");
        for c in ["MAIL FROM:<a@c.example>", "AUTH PLAIN AGEAYg==", "VRFY u"] {
            assert_eq!(text(&cmd(&mut s, c)), "530 5.7.0 Must issue a STARTTLS command first\r\n", "{c}");
        }
        // A configured level without a usable certificate: STARTTLS answers 454.
        let mut p = rpost_config::Params::empty();
        p.set("config_directory", "/nonexistent");
        p.set("smtpd_tls_security_level", "may");
        let st = Settings::from_params(&p).unwrap();
        let mut s = Session::new(&st, client());
        assert_eq!(text(&cmd(&mut s, "STARTTLS")), "454 4.7.0 TLS not available due to local problem\r\n");
    }

    #[test]
    fn auth_decisions() {
        let (_d, st) = settings(&[("smtpd_tls_auth_only", "yes")]);
        let mut s = Session::new(&st, client());
        s.set_mechanisms(mechs());
        assert!(!text(&cmd(&mut s, "EHLO c.example")).contains("AUTH"));
        assert_eq!(
            text(&cmd(&mut s, "AUTH PLAIN")),
            "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
        );
        s.tls_started(info());
        cmd(&mut s, "EHLO c.example");
        assert_eq!(text(&cmd(&mut s, "AUTH ANONYMOUS")), "504 5.5.4 Unsupported authentication mechanism\r\n");
        // A parameter with a tab never reaches the auth server: the parser refuses it.
        assert!(text(&cmd(&mut s, "AUTH PLAIN a\tb")).starts_with("501 "));
        let step = cmd(&mut s, "AUTH plain =");
        assert_eq!(step.next, Next::Auth(AuthStart { mechanism: "PLAIN".into(), initial: Some(String::new()) }));
        assert!(
            matches!(s.auth_response(b"*"), AuthAnswer::Abort(st) if text(&st) == "501 5.7.0 Authentication aborted\r\n")
        );
        cmd(&mut s, "AUTH LOGIN");
        assert!(
            matches!(s.auth_response(b"not base64"), AuthAnswer::Abort(st) if text(&st) == "501 5.5.2 Cannot decode response\r\n")
        );
        cmd(&mut s, "AUTH LOGIN");
        assert_eq!(s.auth_response(b"YWxpY2U="), AuthAnswer::Send("YWxpY2U=".into()));
        assert_eq!(s.auth_challenge("UGFzc3dvcmQ6"), b"334 UGFzc3dvcmQ6\r\n");
        let fail = s.auth_done(AuthOutcome::Failure { reason: None });
        assert_eq!(text(&fail), "535 5.7.8 Error: authentication failed: authentication failure\r\n");
        assert!(s.sasl_user.is_none());
        cmd(&mut s, "AUTH PLAIN AGFsaWNlAHNlY3JldA==");
        let ok = s.auth_done(AuthOutcome::Success { user: "alice".into() });
        assert_eq!(text(&ok), "235 2.7.0 Authentication successful\r\n");
        assert_eq!((s.sasl_user.as_deref(), s.sasl_method.as_deref()), (Some("alice"), Some("PLAIN")));
        assert_eq!(text(&cmd(&mut s, "AUTH PLAIN")), "503 5.5.1 Error: already authenticated\r\n");
        assert!(s.disconnect_line().contains("auth=1/7"), "{}", s.disconnect_line());
    }

    #[test]
    fn auth_is_not_offered_to_exception_networks_or_without_sasl() {
        let (_d, st) = settings(&[("smtpd_sasl_exceptions_networks", "192.0.2.0/24")]);
        let mut s = Session::new(&st, client());
        assert!(!s.wants_sasl());
        s.set_mechanisms(mechs());
        assert!(!text(&cmd(&mut s, "EHLO c.example")).contains("AUTH"));
        assert_eq!(text(&cmd(&mut s, "AUTH PLAIN")), "503 5.5.1 Error: authentication not enabled\r\n");
        let (_d, st) = settings(&[("smtpd_sasl_auth_enable", "no")]);
        let mut s = Session::new(&st, client());
        assert_eq!(text(&cmd(&mut s, "AUTH PLAIN")), "503 5.5.1 Error: authentication not enabled\r\n");
    }
}

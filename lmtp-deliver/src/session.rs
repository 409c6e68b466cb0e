//! The LMTP session state machine (RFC 2033): commands in, replies and decisions out, no I/O.
//!
//! The driver ([`crate::server`]) feeds it the events of `rpost_smtp_proto::ServerCodec`,
//! spools the content, runs the deliveries [`Session::jobs`] asks for and hands their
//! outcomes to [`Session::delivered`], which answers once per accepted recipient, in RCPT
//! order. A RCPT asks the driver for a user lookup ([`Next::Lookup`]); the driver asks authd
//! through [`crate::userdb::UserDb`] and hands the answer to [`Session::rcpt_lookup`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use rpost_smtp_proto::{Command, CommandError, MailParams, Reply, ReversePath};

use crate::deliver::{Job, Outcome};
use crate::settings::{ERROR_LIMIT, RECIPIENT_LIMIT, Settings};
use crate::userdb::{Lookup, User};

/// What the driver must do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Read the next command.
    Continue,
    /// DATA accepted (354 sent): read content until the final dot.
    Data,
    /// Read a BDAT chunk of `size` bytes.
    Chunk { size: u64, last: bool },
    /// Skip a refused BDAT chunk.
    Discard { size: u64 },
    /// Send the replies, then close.
    Close,
    /// Look the recipient up, then call [`Session::rcpt_lookup`] with the result.
    Lookup(PendingRcpt),
}

/// A RCPT waiting for its user lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRcpt {
    /// As given in RCPT TO (without brackets).
    pub address: String,
    pub local: String,
    pub domain: String,
}

/// Replies to send, then what to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub replies: Vec<Reply>,
    pub next: Next,
}

impl Step {
    fn reply(r: Reply) -> Step {
        Step { replies: vec![r], next: Next::Continue }
    }
    fn close(r: Reply) -> Step {
        Step { replies: vec![r], next: Next::Close }
    }
}

/// An accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    /// As given in RCPT TO (without brackets).
    pub address: String,
    pub user: User,
}

/// The mail transaction in progress.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// "" for `<>`.
    pub sender: String,
    pub rcpts: Vec<Rcpt>,
    /// Transaction id: in the Received: header, the "Saved" replies and the log.
    pub id: String,
    /// Content bytes received.
    pub size: u64,
    /// Content stopped being stored: over mailbox_size_limit.
    pub too_big: bool,
    /// BDAT seen (a following DATA is out of sequence).
    pub chunking: bool,
}

/// A new transaction id: 22 characters like Dovecot's session ids (base64 of time, pid and
/// a counter, so unique on this host).
pub fn new_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&(t.as_secs() as u32).to_be_bytes());
    bytes.extend_from_slice(&t.subsec_nanos().to_be_bytes());
    bytes.extend_from_slice(&std::process::id().to_be_bytes());
    bytes.extend_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let mut out = String::with_capacity(22);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(B64[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B64[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// The state of one LMTP session.
#[derive(Debug)]
pub struct Session<'s> {
    s: &'s Settings,
    /// `local`, or the client's IP address.
    pub client: String,
    /// The client IP, when it came over TCP (for Received:).
    pub client_ip: Option<String>,
    pub lhlo: Option<String>,
    pub tx: Option<Transaction>,
    errors: u32,
}

impl<'s> Session<'s> {
    pub fn new(settings: &'s Settings, client_ip: Option<String>) -> Session<'s> {
        let client = client_ip.clone().unwrap_or_else(|| "local".into());
        Session { s: settings, client, client_ip, lhlo: None, tx: None, errors: 0 }
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> Step {
        Step::reply(Reply::new(220, "", format!("{} rpost LMTP ready", self.s.hostname)))
    }

    fn error(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors >= ERROR_LIMIT {
            tracing::info!("too many errors from {}", self.client);
            return Step::close(Reply::new(421, "4.7.0", format!("{} Error: too many errors", self.s.hostname)));
        }
        Step::reply(reply)
    }

    /// One command line from the codec.
    pub fn command(&mut self, cmd: Result<Command, CommandError>) -> Step {
        let cmd = match cmd {
            Ok(c) => c,
            Err(e) => return self.error(e.reply()),
        };
        match cmd {
            Command::Lhlo(name) => self.lhlo(name),
            Command::Helo(_) | Command::Ehlo(_) => {
                self.error(Reply::new(500, "5.5.1", "Error: this is an LMTP server, use LHLO"))
            }
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => {
                if let Err(e) = params.reject_unknown() {
                    return self.error(e.reply());
                }
                self.rcpt(&to.0)
            }
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                self.tx = None;
                Step::reply(Reply::new(250, "2.0.0", "OK"))
            }
            Command::Noop => Step::reply(Reply::new(250, "2.0.0", "OK")),
            Command::Quit => Step::close(Reply::new(221, "2.0.0", "Bye")),
            Command::Vrfy(_) => Step::reply(Reply::new(252, "2.3.3", "Try RCPT instead")),
            Command::StartTls | Command::Auth { .. } => {
                self.error(Reply::new(502, "5.5.1", "Error: command not implemented"))
            }
            Command::Help(_) | Command::Expn(_) | Command::Etrn(_) | Command::Unknown(_) => {
                self.error(Reply::new(502, "5.5.2", "Error: command not recognized"))
            }
        }
    }

    fn lhlo(&mut self, name: String) -> Step {
        self.lhlo = Some(name);
        self.tx = None;
        let caps = ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "CHUNKING", "SMTPUTF8"].map(String::from);
        Step::reply(rpost_smtp_proto::ehlo_reply(&self.s.hostname, &caps))
    }

    fn mail(&mut self, from: ReversePath, params: MailParams) -> Step {
        if self.lhlo.is_none() {
            return self.error(Reply::new(503, "5.5.1", "Error: send LHLO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Error: nested MAIL command"));
        }
        if let Err(e) = params.reject_unknown() {
            return self.error(e.reply());
        }
        if params.body == Some(rpost_smtp_proto::Body::BinaryMime) {
            return self.error(Reply::new(555, "5.5.4", "Unsupported option: BODY=BINARYMIME"));
        }
        let sender = match from {
            ReversePath::Null => String::new(),
            ReversePath::Path(a) => a.to_string(),
        };
        self.tx =
            Some(Transaction { sender, rcpts: Vec::new(), id: new_id(), size: 0, too_big: false, chunking: false });
        Step::reply(Reply::new(250, "2.1.0", "OK"))
    }

    fn rcpt(&mut self, to: &rpost_smtp_proto::Address) -> Step {
        let Some(tx) = &self.tx else {
            return self.error(Reply::new(503, "5.5.1", "Error: need MAIL command"));
        };
        let address = to.to_string();
        if tx.rcpts.len() >= RECIPIENT_LIMIT {
            return Step::reply(Reply::new(452, "4.5.3", "Error: too many recipients"));
        }
        Step {
            replies: Vec::new(),
            next: Next::Lookup(PendingRcpt { address, local: to.local.clone(), domain: to.domain.clone() }),
        }
    }

    /// The answer to a [`Next::Lookup`]: accepts or refuses the recipient.
    pub fn rcpt_lookup(&mut self, rcpt: PendingRcpt, lookup: Lookup) -> Step {
        let Some(tx) = &self.tx else {
            return self.error(Reply::new(503, "5.5.1", "Error: need MAIL command"));
        };
        let id = tx.id.clone();
        let address = rcpt.address;
        match lookup {
            Lookup::Found(user) => {
                if self.s.rcpt_check_quota
                    && let Some(limit) = user.quota
                    && crate::deliver::inbox_of(&user).usage().is_ok_and(|used| used >= limit)
                {
                    tracing::info!("{id}: to=<{address}>, user={}: quota exceeded at RCPT", user.name);
                    return Step::reply(quota_reply(&address));
                }
                if let Some(tx) = &mut self.tx {
                    tx.rcpts.push(Rcpt { address, user });
                }
                Step::reply(Reply::new(250, "2.1.5", "OK"))
            }
            Lookup::Unknown => {
                tracing::info!("{id}: to=<{address}>: user doesn't exist");
                self.error(Reply::new(550, "5.1.1", format!("<{address}> User doesn't exist: {address}")))
            }
            Lookup::BadAddress(why) => {
                tracing::warn!("{id}: to=<{address}>: refused: {why}");
                self.error(Reply::new(550, "5.1.3", format!("<{address}> Invalid recipient address")))
            }
            Lookup::TempFail(why) => {
                tracing::warn!("{id}: to=<{address}>: user lookup failed: {why}");
                Step::reply(Reply::new(451, "4.3.0", format!("<{address}> Temporary user lookup failure")))
            }
        }
    }

    fn no_recipients(&mut self, discard: Option<u64>) -> Option<Step> {
        let reply = match &self.tx {
            None => Reply::new(503, "5.5.1", "Error: need MAIL command"),
            Some(tx) if tx.rcpts.is_empty() => Reply::new(503, "5.5.1", "Error: need RCPT command"),
            Some(_) => return None,
        };
        let step = self.error(reply);
        Some(match (discard, &step.next) {
            (Some(size), Next::Continue) => Step { next: Next::Discard { size }, ..step },
            _ => step,
        })
    }

    fn data(&mut self) -> Step {
        if let Some(step) = self.no_recipients(None) {
            return step;
        }
        if self.tx.as_ref().is_some_and(|t| t.chunking) {
            return self.error(Reply::new(503, "5.5.1", "Error: DATA after BDAT"));
        }
        Step { replies: vec![Reply::new(354, "", "OK")], next: Next::Data }
    }

    fn bdat(&mut self, size: u64, last: bool) -> Step {
        if let Some(step) = self.no_recipients(Some(size)) {
            return step;
        }
        if let Some(tx) = &mut self.tx {
            tx.chunking = true;
        }
        Step { replies: Vec::new(), next: Next::Chunk { size, last } }
    }

    /// Accounts content bytes; false once over mailbox_size_limit (the driver then stops
    /// storing but reads to the end, and every recipient gets 552).
    pub fn data_bytes(&mut self, n: usize) -> bool {
        let limit = self.s.mailbox_size_limit;
        match &mut self.tx {
            Some(tx) => {
                tx.size += n as u64;
                if limit > 0 && tx.size > limit {
                    tx.too_big = true;
                }
                !tx.too_big
            }
            None => false,
        }
    }

    /// A BDAT chunk that was not the last arrived.
    pub fn chunk_done(&mut self, size: u64) -> Step {
        Step::reply(Reply::new(250, "2.0.0", format!("OK: {size} octets received")))
    }

    /// The deliveries to run at the end of the content: one per recipient, in RCPT order.
    /// `spool_failed`: the content could not be stored (every recipient gets 451). Returns
    /// `Err(step)` when nothing is to be delivered and the step answers everyone.
    pub fn jobs(&mut self, now: SystemTime, spool_failed: Option<&str>) -> Result<Vec<Job>, Step> {
        let Some(tx) = &self.tx else {
            return Err(Step::reply(Reply::new(503, "5.5.1", "Error: need MAIL command")));
        };
        if tx.too_big || spool_failed.is_some() {
            if let Some(e) = spool_failed {
                tracing::warn!("{}: cannot keep the message content: {e}", tx.id);
            }
            let outcome = if tx.too_big { Outcome::TooBig } else { Outcome::Failed("spool".into()) };
            let n = tx.rcpts.len();
            return Err(self.delivered(vec![outcome; n]));
        }
        let lhlo = self.lhlo.clone().unwrap_or_default();
        Ok(tx
            .rcpts
            .iter()
            .map(|r| Job {
                rcpt: r.address.clone(),
                user: r.user.clone(),
                sender: tx.sender.clone(),
                id: tx.id.clone(),
                lhlo: lhlo.clone(),
                client_ip: self.client_ip.clone(),
                time: now,
            })
            .collect())
    }

    /// The deliveries finished: one reply per recipient, in RCPT order (RFC 2033 section 4.2);
    /// the transaction ends.
    pub fn delivered(&mut self, outcomes: Vec<Outcome>) -> Step {
        let Some(tx) = self.tx.take() else {
            return Step::reply(Reply::new(503, "5.5.1", "Error: need MAIL command"));
        };
        let mut replies = Vec::with_capacity(tx.rcpts.len());
        for (r, outcome) in
            tx.rcpts.iter().zip(outcomes.into_iter().chain(std::iter::repeat(Outcome::Failed("lost".into()))))
        {
            let a = &r.address;
            let log = format!("{}: from=<{}>, to=<{a}>, user={}, size={}", tx.id, tx.sender, r.user.name, tx.size);
            let reply = match outcome {
                Outcome::Saved { mailbox, uid, path, size } => {
                    let uid = uid.map_or_else(|| "pending".to_string(), |u| u.to_string());
                    tracing::info!(
                        "{log}, mailbox={mailbox}, uid={uid}, stored={size}, status=saved ({})",
                        path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
                    );
                    Reply::new(250, "2.0.0", format!("<{a}> {} Saved", tx.id))
                }
                Outcome::OverQuota(e) => {
                    tracing::info!("{log}, status=deferred ({e})");
                    quota_reply(a)
                }
                Outcome::TooBig => {
                    tracing::info!("{log}, status=bounced (larger than mailbox_size_limit)");
                    Reply::new(
                        552,
                        "5.2.3",
                        format!("<{a}> Mail size is larger than the maximum size allowed by server configuration"),
                    )
                }
                Outcome::Failed(e) => {
                    tracing::warn!("{log}, status=deferred ({e})");
                    Reply::new(451, "4.3.0", format!("<{a}> Temporary internal error"))
                }
            };
            replies.push(reply);
        }
        Step { replies, next: Next::Continue }
    }

    /// The client was silent too long.
    pub fn timeout(&self) -> Reply {
        tracing::info!("timeout from {}", self.client);
        Reply::new(421, "4.4.2", format!("{} Error: timeout exceeded", self.s.hostname))
    }

    /// A command line over the length limit.
    pub fn line_too_long(&mut self) -> Step {
        self.error(Reply::new(500, "5.5.2", "Error: line too long"))
    }

    /// A command line ending in bare LF or holding a bare CR: refused, the session goes on
    /// (LMTP clients are our own MTA; there is no later hop to smuggle to).
    pub fn bare_line_ending(&mut self) -> Step {
        self.error(Reply::new(500, "5.5.2", "Error: bare <CR> or <LF> received"))
    }
}

/// Over quota (temporary, so the sender's queue retries once the user made room).
fn quota_reply(address: &str) -> Reply {
    Reply::new(452, "4.2.2", format!("<{address}> Quota exceeded (mailbox for user is full)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_dovecot_sized() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/'));
    }
}

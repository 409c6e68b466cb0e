//! `sendmail -bs`: an SMTP session on standard input and output (RFC 5321), sans I/O.
//! Each accepted message becomes a maildrop file through the submit callback, exactly as
//! a message on stdin does; the submitter is whoever runs sendmail.

use rpost_smtp_proto::{Command, Event, Limits, Reply, ReversePath, ServerCodec, ehlo_reply};

use crate::drop::Submission;

/// Most recipients per transaction.
pub const MAX_RECIPIENTS: usize = 10_000;

#[derive(Debug, Default)]
struct Tx {
    sender: String,
    ret: Option<String>,
    envid: Option<String>,
    /// (address, NOTIFY text).
    rcpts: Vec<(String, Option<String>)>,
}

/// Decides whether the submitting user may use an envelope sender (`Err`: why not).
pub type SenderCheck = Box<dyn Fn(&str) -> Result<(), String>>;

/// One session.
pub struct Session {
    codec: ServerCodec,
    hostname: String,
    banner: String,
    size_limit: u64,
    tx: Option<Tx>,
    data: Option<Vec<u8>>,
    too_big: bool,
    bare: bool,
    closed: bool,
    /// Turns bare LF into CRLF before the codec (local clients and scripts send LF).
    last_cr: bool,
    sender_check: Option<SenderCheck>,
    /// disable_vrfy_command.
    vrfy_disabled: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("hostname", &self.hostname)
            .field("tx", &self.tx)
            .field("closed", &self.closed)
            .finish()
    }
}

fn r(code: u16, enhanced: &str, text: &str) -> Reply {
    Reply::new(code, enhanced, text)
}

impl Session {
    /// `banner` is smtpd_banner, `size_limit` message_size_limit (0 = none).
    pub fn new(hostname: &str, banner: &str, size_limit: u64) -> Session {
        Session {
            codec: ServerCodec::new(Limits::default()),
            hostname: hostname.to_string(),
            banner: banner.to_string(),
            size_limit,
            tx: None,
            data: None,
            too_big: false,
            bare: false,
            closed: false,
            last_cr: false,
            sender_check: None,
            vrfy_disabled: false,
        }
    }

    /// disable_vrfy_command = yes.
    pub fn disable_vrfy(&mut self) {
        self.vrfy_disabled = true;
    }

    /// local_login_sender_maps for MAIL FROM.
    pub fn set_sender_check(&mut self, check: SenderCheck) {
        self.sender_check = Some(check);
    }

    pub fn greeting(&self) -> Vec<u8> {
        Reply { code: 220, enhanced: None, lines: vec![self.banner.clone()] }.to_bytes()
    }

    /// QUIT was answered: stop reading.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Feeds input; returns the replies to write. `submit` stores one message and returns
    /// its maildrop name.
    pub fn feed(&mut self, input: &[u8], submit: &mut dyn FnMut(Submission) -> Result<String, String>) -> Vec<u8> {
        let mut norm = Vec::with_capacity(input.len() + 16);
        for &b in input {
            if b == b'\n' && !self.last_cr {
                norm.push(b'\r');
            }
            norm.push(b);
            self.last_cr = b == b'\r';
        }
        self.codec.feed(&norm);
        let mut out = Vec::new();
        while !self.closed {
            let Some(ev) = self.codec.next_event() else { break };
            if let Some(reply) = self.event(ev, submit) {
                out.extend_from_slice(&reply.to_bytes());
            }
        }
        out
    }

    fn event(&mut self, ev: Event, submit: &mut dyn FnMut(Submission) -> Result<String, String>) -> Option<Reply> {
        match ev {
            Event::Command(Ok(cmd)) => Some(self.command(cmd)),
            Event::Command(Err(e)) => Some(e.reply()),
            Event::LineTooLong => Some(r(500, "5.5.0", "Error: line too long")),
            Event::BareLineEnding => Some(r(500, "5.5.2", "Error: bare <CR> received")),
            Event::Data(bytes) => {
                if let Some(d) = self.data.as_mut() {
                    if self.size_limit > 0 && (d.len() + bytes.len()) as u64 > self.size_limit {
                        self.too_big = true;
                    } else {
                        d.extend_from_slice(&bytes);
                    }
                }
                None
            }
            Event::DataBareLineEnding => {
                self.bare = true;
                None
            }
            Event::DataEnd => {
                let content = self.data.take().unwrap_or_default();
                let tx = self.tx.take().unwrap_or_default();
                if std::mem::take(&mut self.too_big) {
                    self.bare = false;
                    return Some(r(552, "5.3.4", "Error: message file too big"));
                }
                if std::mem::take(&mut self.bare) {
                    return Some(r(550, "5.5.2", "Error: bare <CR> received"));
                }
                Some(self.submit(tx, content, submit))
            }
            // BDAT is not offered.
            Event::Chunk(_) | Event::ChunkEnd { .. } => None,
        }
    }

    /// One maildrop file per distinct NOTIFY (the file carries one for all its recipients).
    fn submit(
        &mut self,
        tx: Tx,
        content: Vec<u8>,
        submit: &mut dyn FnMut(Submission) -> Result<String, String>,
    ) -> Reply {
        let mut groups: Vec<(Option<String>, Vec<String>)> = Vec::new();
        for (addr, notify) in tx.rcpts {
            match groups.iter_mut().find(|(n, _)| *n == notify) {
                Some((_, list)) => list.push(addr),
                None => groups.push((notify, vec![addr])),
            }
        }
        let mut names = Vec::new();
        for (notify, recipients) in groups {
            let s = Submission {
                sender: Some(tx.sender.clone()),
                fullname: None,
                notify,
                ret: tx.ret.clone(),
                envid: tx.envid.clone(),
                recipients,
                content: content.clone(),
            };
            match submit(s) {
                Ok(name) => names.push(name),
                Err(e) => {
                    // Earlier groups were submitted; say so rather than invite a full resend.
                    let text = if names.is_empty() {
                        format!("Error: queue file write error: {e}")
                    } else {
                        format!("Error: queue file write error after {}: {e}", names.join(" "))
                    };
                    return r(451, "4.3.0", &text);
                }
            }
        }
        r(250, "2.0.0", &format!("Ok: queued as {}", names.join(" ")))
    }

    fn command(&mut self, cmd: Command) -> Reply {
        match cmd {
            Command::Ehlo(_) => {
                self.tx = None;
                let mut caps = vec!["PIPELINING".to_string()];
                caps.push(if self.size_limit > 0 { format!("SIZE {}", self.size_limit) } else { "SIZE".into() });
                caps.extend(["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"].map(String::from));
                ehlo_reply(&self.hostname, &caps)
            }
            Command::Helo(_) => {
                self.tx = None;
                Reply { code: 250, enhanced: None, lines: vec![self.hostname.clone()] }
            }
            Command::Mail { from, params } => {
                if self.tx.is_some() {
                    return r(503, "5.5.1", "Error: nested MAIL command");
                }
                if let Err(e) = params.reject_unknown() {
                    return e.reply();
                }
                if params.smtputf8 {
                    return r(555, "5.5.4", "Unsupported option: SMTPUTF8");
                }
                if let Some(size) = params.size
                    && self.size_limit > 0
                    && size > self.size_limit
                {
                    return r(552, "5.3.4", "Message size exceeds fixed limit");
                }
                let sender = match from {
                    ReversePath::Null => String::new(),
                    ReversePath::Path(a) => a.to_string(),
                };
                if !sender.is_empty() && !crate::input::valid_address(&sender) {
                    return r(501, "5.1.7", "Bad sender address syntax");
                }
                if let Some(check) = &self.sender_check
                    && let Err(why) = check(&sender)
                {
                    return r(553, "5.7.1", &format!("<{sender}>: Sender address rejected: {why}"));
                }
                let ret = params.ret.map(|x| match x {
                    rpost_smtp_proto::Ret::Full => "FULL".to_string(),
                    rpost_smtp_proto::Ret::Hdrs => "HDRS".to_string(),
                });
                self.tx = Some(Tx { sender, ret, envid: params.envid, rcpts: Vec::new() });
                r(250, "2.1.0", "Ok")
            }
            Command::Rcpt { to, params } => {
                let Some(tx) = self.tx.as_mut() else { return r(503, "5.5.1", "Error: need MAIL command") };
                if let Err(e) = params.reject_unknown() {
                    return e.reply();
                }
                if tx.rcpts.len() >= MAX_RECIPIENTS {
                    return r(452, "4.5.3", "Error: too many recipients");
                }
                let addr = to.0.to_string();
                if !crate::input::valid_address(&addr) {
                    return r(501, "5.1.3", "Bad recipient address syntax");
                }
                let notify = params.notify.map(|n| {
                    if n.is_never() {
                        "NEVER".to_string()
                    } else {
                        [(n.success, "SUCCESS"), (n.failure, "FAILURE"), (n.delay, "DELAY")]
                            .iter()
                            .filter(|(on, _)| *on)
                            .map(|(_, w)| *w)
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                });
                tx.rcpts.push((addr, notify));
                r(250, "2.1.5", "Ok")
            }
            Command::Data => match &self.tx {
                None => r(503, "5.5.1", "Error: need MAIL command"),
                Some(tx) if tx.rcpts.is_empty() => r(503, "5.5.1", "Error: need RCPT command"),
                Some(_) => {
                    self.data = Some(Vec::new());
                    self.codec.start_data();
                    r(354, "", "End data with <CR><LF>.<CR><LF>")
                }
            },
            Command::Rset => {
                self.tx = None;
                r(250, "2.0.0", "Ok")
            }
            Command::Noop => r(250, "2.0.0", "Ok"),
            Command::Quit => {
                self.closed = true;
                r(221, "2.0.0", "Bye")
            }
            Command::Vrfy(_) if self.vrfy_disabled => r(502, "5.5.1", "VRFY command is disabled"),
            Command::Vrfy(arg) => match rpost_smtp_proto::parse_path(&arg) {
                Ok(Some(a)) => r(252, "2.0.0", &a.to_string()),
                _ => r(501, "5.1.3", "Bad recipient address syntax"),
            },
            Command::StartTls | Command::Bdat { .. } => r(502, "5.5.1", "Error: command not implemented"),
            Command::Auth { .. } => r(503, "5.5.1", "Error: authentication not enabled"),
            Command::Etrn(_) => r(502, "5.5.1", "Error: command not implemented"),
            // Postfix implements neither HELP nor EXPN.
            Command::Help(_) | Command::Expn(_) | Command::Lhlo(_) | Command::Unknown(_) => {
                r(502, "5.5.2", "Error: command not recognized")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> (String, Vec<Submission>) {
        let mut s = Session::new("mail.example.test", "mail.example.test ESMTP rpost", 1000);
        let mut got = Vec::new();
        let mut out = s.greeting();
        let mut submit = |sub: Submission| {
            got.push(sub);
            Ok(format!("F{}", got.len()))
        };
        // Byte by byte: the codec must not care how input is split.
        for b in input.as_bytes() {
            out.extend(s.feed(std::slice::from_ref(b), &mut submit));
            if s.closed() {
                break;
            }
        }
        (String::from_utf8(out).unwrap(), got)
    }

    #[test]
    fn a_whole_dialogue() {
        let (out, got) = run(
            "EHLO me\nMAIL FROM:<a@x> RET=HDRS ENVID=e1\nRCPT TO:<b@y> NOTIFY=SUCCESS\nRCPT TO:<c@y>\nDATA\nSubject: s\n\n..dot\n.\nQUIT\nNOOP\n",
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "220 mail.example.test ESMTP rpost");
        assert!(out.contains("250-mail.example.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"), "{out}");
        assert!(out.contains("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data"), "{out}");
        assert!(out.contains("250 2.0.0 Ok: queued as F1 F2\r\n221 2.0.0 Bye\r\n"), "{out}");
        assert!(!out.contains("NOOP") && out.ends_with("Bye\r\n"), "nothing after QUIT: {out}");
        assert_eq!(got.len(), 2, "two NOTIFY groups");
        assert_eq!(got[0].recipients, vec!["b@y"]);
        assert_eq!(got[0].notify.as_deref(), Some("SUCCESS"));
        assert_eq!(got[1].recipients, vec!["c@y"]);
        assert_eq!(got[0].sender.as_deref(), Some("a@x"));
        assert_eq!(got[0].ret.as_deref(), Some("HDRS"));
        assert_eq!(got[0].envid.as_deref(), Some("e1"));
        assert_eq!(got[0].content, b"Subject: s\r\n\r\n.dot\r\n");
    }

    #[test]
    fn sequence_errors_and_unsupported_commands() {
        let (out, got) = run(
            "RCPT TO:<b@y>\nDATA\nMAIL FROM:<>\nMAIL FROM:<a@x>\nDATA\nRSET\nHELP\nEXPN x\nSTARTTLS\nAUTH PLAIN\nVRFY <u@x>\nBOGUS\nMAIL FROM:<a@x> SIZE=5000\nMAIL FROM:<a@x> FOO=1\nQUIT\n",
        );
        let codes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
        assert_eq!(
            codes,
            vec![
                "220", "503", "503", "250", "503", "503", "250", "502", "502", "502", "503", "252", "502", "552",
                "555", "221"
            ],
            "{out}"
        );
        assert!(got.is_empty());
    }

    #[test]
    fn sender_policy_refuses_mail_from() {
        let mut s = Session::new("h", "h ESMTP rpost", 0);
        s.set_sender_check(Box::new(|a: &str| if a == "me@x" { Ok(()) } else { Err("not owned by user me".into()) }));
        let mut submit = |_: Submission| Ok("F".to_string());
        let out = s.feed(b"HELO c\nMAIL FROM:<boss@x>\nMAIL FROM:<me@x>\n", &mut submit);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("553 5.7.1 <boss@x>: Sender address rejected: not owned by user me\r\n250 2.1.0 Ok\r\n"),
            "{out}"
        );
    }

    #[test]
    fn vrfy_can_be_disabled() {
        let mut s = Session::new("h", "h ESMTP rpost", 0);
        s.disable_vrfy();
        let mut submit = |_: Submission| Ok("F".to_string());
        let out = String::from_utf8(s.feed(b"VRFY u@x\r\n", &mut submit)).unwrap();
        assert_eq!(out, "502 5.5.1 VRFY command is disabled\r\n");
    }

    #[test]
    fn null_sender_and_oversized_message() {
        let big = "x".repeat(1200);
        let (out, got) = run(&format!("HELO me\nMAIL FROM:<>\nRCPT TO:<b@y>\nDATA\n{big}\n.\nQUIT\n"));
        assert!(out.contains("552 5.3.4 Error: message file too big"), "{out}");
        assert!(got.is_empty());
        let (out, got) = run("HELO me\nMAIL FROM:<>\nRCPT TO:<b@y>\nDATA\nhi\n.\nQUIT\n");
        assert!(out.contains("250 2.0.0 Ok: queued as F1"), "{out}");
        assert_eq!(got[0].sender.as_deref(), Some(""));
    }
}

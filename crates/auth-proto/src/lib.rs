//! rpost-auth-proto - Dovecot's auth client and auth-userdb protocols, sans-IO
//!
//! # SUMMARY
//! ```text
//! // server (authd): one per client connection
//! let mut conn = ServerConnection::new();
//! write(hello.to_lines());                        // VERSION, MECH.., SPID, CUID, COOKIE, DONE
//! conn.feed(&bytes);
//! while let Some(ev) = conn.next_event()? {       // Auth(AuthRequest) | Cont{id,data} | Immediate(reply)
//!     write(conn.reply(&ServerReply::Ok { id, user, params: vec![] }));
//! }
//!
//! // client (smtpd, imapd, rmaster auth test)
//! let (mut c, hello) = ClientConnection::new(std::process::id());
//! write(hello); c.feed(&bytes); c.poll()?          // Some(ClientUpdate::Ready) once MECHs are in
//! let (id, line) = c.auth(AuthRequest::new(0, "PLAIN", "smtp")
//!     .with("lip", Some(local)).with("rip", Some(remote)).with("secured", None)
//!     .with("resp", Some(b64)));
//! write(line);  ... c.poll()? -> Some(ClientUpdate::Reply(ServerReply::Cont{..} | Ok{..} | Fail(..)))
//! write(c.cont(id, b64_answer));
//!
//! // userdb (lmtp-deliver): MasterClient::new(), .user(name, "lmtp") -> MasterReply::User{fields}
//! ```
//!
//! # DESCRIPTION
//! [`client`]: the auth client protocol v1.2 as Dovecot 2.3 speaks it on its `auth-client`
//! socket and Postfix's `xsasl_dovecot_server.c` expects: handshake, `AUTH` with `service=`,
//! `lip=`, `rip=`, `secured`, `nologin`, `no-penalty`, `resp=`; `CONT`, `OK user=`, `FAIL`
//! with `reason=`, `temp`, `code=`. [`master`]: the auth-userdb protocol (`USER`, `PASS`,
//! `LIST`). [`escape`]: Dovecot's tab-escaping (`\001` + `1`/`t`/`r`/`n`/`0`) and a line
//! splitter that works however the bytes arrive. [`fields`]: `key=value` field lists
//! (`static:` arguments, passwd-file extra fields, `userdb_` prefixes) and the `%u %n %d %s
//! %h %l %r` variables with `L`/`U` modifiers.
//!
//! Nothing here reads or writes a socket: the callers feed bytes in and write the strings
//! out, so the same code serves tokio daemons, blocking tools and the fuzzer.
//!
//! # SECURITY
//! Both ends treat the peer as untrusted: lines over [`client::MAX_LINE`] (16 KiB, Dovecot's
//! limit) are refused even before their end arrives, non-UTF-8 lines and malformed ids are
//! errors, the order (VERSION first, CPID before AUTH) is enforced, duplicate request ids
//! and more than [`client::MAX_IN_FLIGHT`] concurrent requests end the connection, and a
//! client never accepts replies to ids it did not send. Values are tab-escaped on output, so
//! a user name cannot inject fields or lines. Nothing here logs; [`printable`] is for
//! callers that put peer text into a log line. The `resp=`/`CONT` data carry passwords:
//! callers must never log them.
//!
//! # CONFIGURATION
//! None: the daemons decide the mechanisms and fields.
//!
//! # STANDARDS
//! Dovecot auth protocol v1.2 ("Dovecot Authentication Protocol", doc.dovecot.org), Dovecot
//! auth-master protocol, Postfix xsasl_dovecot_server; RFC 4422 (SASL) for the meaning of
//! the exchanged data.

pub mod client;
pub mod escape;
pub mod fields;
pub mod master;

pub use client::{
    AuthRequest, ClientConnection, ClientEvent, ClientLine, ClientUpdate, Failure, Mech, ServerConnection, ServerHello,
    ServerLine, ServerReply,
};
pub use escape::{LineBuffer, Params, flag, param, tab_escape, tab_unescape};
pub use fields::{ExpandError, Vars, expand, parse_fields};
pub use master::{MasterClient, MasterReply, MasterRequest, MasterServer};

/// A protocol violation by the peer; the connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("protocol syntax error: {0}")]
    Syntax(String),
    #[error("unsupported protocol major version {0}")]
    Version(u32),
    #[error("protocol order violated: {0}")]
    Order(&'static str),
    #[error("request id {0} is already in use")]
    DuplicateId(u32),
    #[error("reply for request id {0}, which is not in progress")]
    UnknownId(u32),
    #[error("too many concurrent requests")]
    TooManyRequests,
}

/// Peer text made safe for a log line: control characters become `?`, and it is cut at 100
/// characters.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(100).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().count() > 100 {
        out.push_str("...");
    }
    out
}

/// Standard base64 (with padding), as the protocol carries SASL data.
pub fn b64_encode(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Decodes SASL base64 data; `None` when it is not valid base64.
pub fn b64_decode(data: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(data.trim()).ok()
}

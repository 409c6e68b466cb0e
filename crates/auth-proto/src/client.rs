//! The auth client protocol (Dovecot's `auth-client` socket, Postfix's `smtpd_sasl_type =
//! dovecot`): both ends, sans-IO.
//!
//! ```text
//! S: VERSION 1 2 | MECH PLAIN plaintext | ... | SPID pid | CUID n | COOKIE hex | DONE
//! C: VERSION 1 2 | CPID pid
//! C: AUTH id mech service=smtp [nologin] [lip=..] [rip=..] [secured] [resp=base64]
//! S: CONT id base64        C: CONT id base64
//! S: OK id user=name [..]  |  FAIL id [reason=..] [temp] [code=..] [user=..]
//! ```
//! (fields separated by TAB, values tab-escaped). The server sends its handshake at connect,
//! without waiting for the client's.

use std::collections::HashSet;

use crate::ProtoError;
use crate::escape::{LineBuffer, Params, flag, param, parse_params, split_line, tab_escape, write_params};

/// Protocol major version both sides must share.
pub const MAJOR_VERSION: u32 = 1;
/// Our minor version (Dovecot 2.3 sends 2).
pub const MINOR_VERSION: u32 = 2;
/// Longest line either side accepts (Dovecot's AUTH_CLIENT_MAX_LINE_LENGTH).
pub const MAX_LINE: usize = 16384;
/// Authentication requests one client connection may have in progress at once (a login
/// process multiplexes its users over one connection; Postfix uses one at a time).
pub const MAX_IN_FLIGHT: usize = 128;

/// Dovecot's failure codes (`code=` in FAIL).
pub mod code {
    pub const TEMPFAIL: &str = "temp_fail";
    pub const AUTHZFAILED: &str = "authz_fail";
    pub const USER_DISABLED: &str = "user_disabled";
    pub const PASS_EXPIRED: &str = "password_expired";
    pub const INVALID_BASE64: &str = "invalid_base64";
    pub const LOGIN_DISABLED: &str = "login_disabled";
}

/// A mechanism as announced in `MECH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mech {
    /// Upper-case SASL name (`PLAIN`).
    pub name: String,
    /// `anonymous`, `plaintext`, `dictionary`, `active`, `forward-secrecy`, `mutual-auth`,
    /// `private` (not offered to clients; Postfix skips such mechanisms).
    pub flags: Vec<String>,
}

impl Mech {
    /// Whether the mechanism carries the password in the clear (PLAIN, LOGIN).
    pub fn plaintext(&self) -> bool {
        self.flags.iter().any(|f| f == "plaintext")
    }
}

/// The server's handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    pub mechs: Vec<Mech>,
    /// The auth server's pid.
    pub spid: u32,
    /// Connection id, unique within the server.
    pub cuid: u32,
    /// 128 random bits in hex (used by Dovecot's master REQUEST; carried for compatibility).
    pub cookie: String,
}

impl ServerHello {
    /// The handshake lines as Dovecot 2.3 sends them.
    pub fn to_lines(&self) -> String {
        let mut out = format!("VERSION\t{MAJOR_VERSION}\t{MINOR_VERSION}\n");
        for m in &self.mechs {
            out.push_str("MECH\t");
            out.push_str(&tab_escape(&m.name));
            for f in &m.flags {
                out.push('\t');
                out.push_str(&tab_escape(f));
            }
            out.push('\n');
        }
        out.push_str(&format!(
            "SPID\t{}\nCUID\t{}\nCOOKIE\t{}\nDONE\n",
            self.spid,
            self.cuid,
            tab_escape(&self.cookie)
        ));
        out
    }
}

/// An `AUTH` request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthRequest {
    pub id: u32,
    /// Mechanism name as the client sent it (compare case-insensitively).
    pub mech: String,
    /// Every optional parameter in order, including the ones with accessors below; unknown
    /// ones are kept (and ignored by the server, as the protocol says).
    pub params: Params,
}

impl AuthRequest {
    /// A request for `mech` with `service=`; add more with [`AuthRequest::with`].
    pub fn new(id: u32, mech: &str, service: &str) -> AuthRequest {
        AuthRequest { id, mech: mech.to_string(), params: vec![("service".into(), Some(service.into()))] }
    }

    /// Adds a parameter (`None`: a boolean such as `secured`).
    pub fn with(mut self, name: &str, value: Option<&str>) -> AuthRequest {
        self.params.push((name.to_string(), value.map(str::to_string)));
        self
    }

    pub fn service(&self) -> &str {
        param(&self.params, "service").unwrap_or("")
    }
    /// The local (server) IP address, `lip=`.
    pub fn local_ip(&self) -> Option<&str> {
        param(&self.params, "lip").filter(|s| !s.is_empty())
    }
    /// The remote (client) IP address, `rip=`.
    pub fn remote_ip(&self) -> Option<&str> {
        param(&self.params, "rip").filter(|s| !s.is_empty())
    }
    /// The connection is TLS-protected or otherwise trusted (`secured`).
    pub fn secured(&self) -> bool {
        flag(&self.params, "secured")
    }
    /// `no-penalty`: do not apply the failure penalty (trusted proxies).
    pub fn no_penalty(&self) -> bool {
        flag(&self.params, "no-penalty")
    }
    /// The initial response as sent (base64; empty string = empty response).
    pub fn initial_response(&self) -> Option<&str> {
        param(&self.params, "resp")
    }

    /// Parses the fields after `AUTH`.
    pub fn parse(fields: &[String]) -> Result<AuthRequest, ProtoError> {
        if fields.len() < 2 {
            return Err(ProtoError::Syntax("AUTH needs an id and a mechanism".into()));
        }
        let id = parse_id(&fields[0])?;
        let mech = fields[1].clone();
        if mech.is_empty() {
            return Err(ProtoError::Syntax("AUTH with an empty mechanism".into()));
        }
        let params = parse_params(&fields[2..]);
        if param(&params, "service").is_none_or(str::is_empty) {
            return Err(ProtoError::Syntax("AUTH without service=".into()));
        }
        Ok(AuthRequest { id, mech, params })
    }

    /// The `AUTH` line.
    pub fn to_line(&self) -> String {
        let mut out = format!("AUTH\t{}\t{}", self.id, tab_escape(&self.mech));
        write_params(&mut out, &self.params);
        out.push('\n');
        out
    }
}

fn parse_id(s: &str) -> Result<u32, ProtoError> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProtoError::Syntax(format!("bad request id {:?}", crate::printable(s))));
    }
    s.parse().map_err(|_| ProtoError::Syntax("request id out of range".into()))
}

fn parse_num(what: &str, s: Option<&String>) -> Result<u32, ProtoError> {
    let s = s.ok_or_else(|| ProtoError::Syntax(format!("{what} without a value")))?;
    s.parse().map_err(|_| ProtoError::Syntax(format!("{what}: bad number {:?}", crate::printable(s))))
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientLine {
    Version {
        major: u32,
        minor: u32,
    },
    Cpid(u32),
    Auth(AuthRequest),
    /// `CONT id data`: the client's next response (base64).
    Cont {
        id: u32,
        data: String,
    },
    /// A command this side does not know: ignored, as the protocol says.
    Unknown(String),
}

impl ClientLine {
    pub fn parse(line: &str) -> Result<ClientLine, ProtoError> {
        let fields = split_line(line)?;
        let (cmd, rest) = fields.split_first().expect("split gives one field at least");
        Ok(match cmd.as_str() {
            "VERSION" => ClientLine::Version {
                major: parse_num("VERSION", rest.first())?,
                minor: parse_num("VERSION", rest.get(1))?,
            },
            "CPID" => ClientLine::Cpid(parse_num("CPID", rest.first())?),
            "AUTH" => ClientLine::Auth(AuthRequest::parse(rest)?),
            "CONT" => {
                let id = parse_id(rest.first().map_or("", String::as_str))?;
                ClientLine::Cont { id, data: rest.get(1).cloned().unwrap_or_default() }
            }
            other => ClientLine::Unknown(other.to_string()),
        })
    }
}

/// What the server answers to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerReply {
    /// A challenge (base64, may be empty).
    Cont { id: u32, data: String },
    /// Success: `user` is the authenticated (canonical) user name; `params` are extra fields.
    Ok { id: u32, user: String, params: Params },
    /// Failure.
    Fail(Failure),
}

/// A `FAIL` reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Failure {
    pub id: u32,
    /// Text for the end user (Postfix puts it in its 535 reply).
    pub reason: Option<String>,
    /// Temporary failure (`temp`): try again later (Postfix: 454).
    pub temp: bool,
    /// `code=`, see [`code`].
    pub code: Option<String>,
    /// The user name, when known.
    pub user: Option<String>,
}

impl ServerReply {
    pub fn id(&self) -> u32 {
        match self {
            ServerReply::Cont { id, .. } | ServerReply::Ok { id, .. } => *id,
            ServerReply::Fail(f) => f.id,
        }
    }

    /// The reply line.
    pub fn to_line(&self) -> String {
        let mut out;
        match self {
            ServerReply::Cont { id, data } => out = format!("CONT\t{id}\t{}", tab_escape(data)),
            ServerReply::Ok { id, user, params } => {
                out = format!("OK\t{id}\tuser={}", tab_escape(user));
                write_params(&mut out, params);
            }
            ServerReply::Fail(f) => {
                out = format!("FAIL\t{}", f.id);
                let mut p: Params = Vec::new();
                if let Some(c) = &f.code {
                    p.push(("code".into(), Some(c.clone())));
                }
                if let Some(r) = &f.reason {
                    p.push(("reason".into(), Some(r.clone())));
                }
                if f.temp {
                    p.push(("temp".into(), None));
                }
                if let Some(u) = &f.user {
                    p.push(("user".into(), Some(u.clone())));
                }
                write_params(&mut out, &p);
            }
        }
        out.push('\n');
        out
    }
}

/// What a server sends, as the client side parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    Version { major: u32, minor: u32 },
    Mech(Mech),
    Spid(u32),
    Cuid(u32),
    Cookie(String),
    Done,
    Reply(ServerReply),
    Unknown(String),
}

impl ServerLine {
    pub fn parse(line: &str) -> Result<ServerLine, ProtoError> {
        let fields = split_line(line)?;
        let (cmd, rest) = fields.split_first().expect("split gives one field at least");
        let id = || parse_id(rest.first().map_or("", String::as_str));
        Ok(match cmd.as_str() {
            "VERSION" => ServerLine::Version {
                major: parse_num("VERSION", rest.first())?,
                minor: parse_num("VERSION", rest.get(1))?,
            },
            "MECH" => {
                let name = rest
                    .first()
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ProtoError::Syntax("MECH without a name".into()))?;
                ServerLine::Mech(Mech {
                    name: name.clone(),
                    flags: rest[1..].iter().filter(|f| !f.is_empty()).cloned().collect(),
                })
            }
            "SPID" => ServerLine::Spid(parse_num("SPID", rest.first())?),
            "CUID" => ServerLine::Cuid(parse_num("CUID", rest.first())?),
            "COOKIE" => ServerLine::Cookie(rest.first().cloned().unwrap_or_default()),
            "DONE" => ServerLine::Done,
            "CONT" => {
                ServerLine::Reply(ServerReply::Cont { id: id()?, data: rest.get(1).cloned().unwrap_or_default() })
            }
            "OK" => {
                let id = id()?;
                let mut params = parse_params(&rest[1..]);
                let pos = params.iter().position(|(k, v)| k == "user" && v.is_some());
                let user = pos.map(|p| params.remove(p).1.unwrap_or_default()).unwrap_or_default();
                ServerLine::Reply(ServerReply::Ok { id, user, params })
            }
            "FAIL" => {
                let id = id()?;
                let p = parse_params(&rest[1..]);
                ServerLine::Reply(ServerReply::Fail(Failure {
                    id,
                    reason: param(&p, "reason").map(str::to_string),
                    temp: flag(&p, "temp"),
                    code: param(&p, "code").map(str::to_string),
                    user: param(&p, "user").map(str::to_string),
                }))
            }
            other => ServerLine::Unknown(other.to_string()),
        })
    }
}

/// What the server side hands to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A new authentication request (its id is now in progress).
    Auth(AuthRequest),
    /// The client's response to a `CONT` challenge of request `id`.
    Cont { id: u32, data: String },
    /// A reply the driver must send as it is (a `CONT` for a request not in progress).
    Immediate(ServerReply),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Waiting for the client's VERSION.
    Version,
    /// VERSION seen; CPID must come before AUTH.
    Cpid,
    Ready,
}

/// The server end of one client connection.
#[derive(Debug)]
pub struct ServerConnection {
    lines: LineBuffer,
    state: ServerState,
    client_pid: Option<u32>,
    in_flight: HashSet<u32>,
}

impl Default for ServerConnection {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerConnection {
    pub fn new() -> ServerConnection {
        ServerConnection {
            lines: LineBuffer::new(MAX_LINE),
            state: ServerState::Version,
            client_pid: None,
            in_flight: HashSet::new(),
        }
    }

    /// The client's pid from `CPID`.
    pub fn client_pid(&self) -> Option<u32> {
        self.client_pid
    }

    /// Bytes read from the client.
    pub fn feed(&mut self, data: &[u8]) {
        self.lines.push(data);
    }

    /// The next event; `Ok(None)` = need more bytes. An error means the client broke the
    /// protocol: log it and close the connection (as Dovecot does).
    pub fn next_event(&mut self) -> Result<Option<ClientEvent>, ProtoError> {
        loop {
            let Some(line) = self.lines.next_line()? else { return Ok(None) };
            match (self.state, ClientLine::parse(&line)?) {
                (ServerState::Version, ClientLine::Version { major, .. }) => {
                    if major != MAJOR_VERSION {
                        return Err(ProtoError::Version(major));
                    }
                    self.state = ServerState::Cpid;
                }
                (ServerState::Version, _) => return Err(ProtoError::Order("the first line must be VERSION")),
                (ServerState::Cpid, ClientLine::Cpid(pid)) => {
                    self.client_pid = Some(pid);
                    self.state = ServerState::Ready;
                }
                (ServerState::Cpid, ClientLine::Auth(_) | ClientLine::Cont { .. }) => {
                    return Err(ProtoError::Order("AUTH before CPID"));
                }
                (ServerState::Ready, ClientLine::Cpid(_)) => return Err(ProtoError::Order("CPID sent twice")),
                (_, ClientLine::Version { .. }) => return Err(ProtoError::Order("VERSION sent twice")),
                (ServerState::Ready, ClientLine::Auth(req)) => {
                    if self.in_flight.contains(&req.id) {
                        return Err(ProtoError::DuplicateId(req.id));
                    }
                    if self.in_flight.len() >= MAX_IN_FLIGHT {
                        return Err(ProtoError::TooManyRequests);
                    }
                    self.in_flight.insert(req.id);
                    return Ok(Some(ClientEvent::Auth(req)));
                }
                (ServerState::Ready, ClientLine::Cont { id, data }) => {
                    if self.in_flight.contains(&id) {
                        return Ok(Some(ClientEvent::Cont { id, data }));
                    }
                    // As Dovecot: a continuation for a finished or unknown request fails it.
                    return Ok(Some(ClientEvent::Immediate(ServerReply::Fail(Failure {
                        id,
                        reason: Some("Authentication request timed out".into()),
                        ..Failure::default()
                    }))));
                }
                (_, ClientLine::Unknown(_)) => {}
            }
        }
    }

    /// The line for `reply`; `OK` and `FAIL` end the request, so its id may be reused.
    pub fn reply(&mut self, reply: &ServerReply) -> String {
        if !matches!(reply, ServerReply::Cont { .. }) {
            self.in_flight.remove(&reply.id());
        }
        reply.to_line()
    }

    /// Whether request `id` is in progress.
    pub fn in_progress(&self, id: u32) -> bool {
        self.in_flight.contains(&id)
    }
}

/// Progress of the client side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientUpdate {
    /// The handshake is complete; [`ClientConnection::mechanisms`] is filled.
    Ready,
    /// A reply to one of our requests.
    Reply(ServerReply),
}

/// The client end (smtpd, imapd, `rmaster auth test`).
#[derive(Debug)]
pub struct ClientConnection {
    lines: LineBuffer,
    ready: bool,
    version_seen: bool,
    mechs: Vec<Mech>,
    spid: Option<u32>,
    cuid: Option<u32>,
    next_id: u32,
    pending: HashSet<u32>,
}

impl ClientConnection {
    /// A new connection and the handshake to send at once (`VERSION`, `CPID`).
    pub fn new(pid: u32) -> (ClientConnection, String) {
        let c = ClientConnection {
            lines: LineBuffer::new(MAX_LINE),
            ready: false,
            version_seen: false,
            mechs: Vec::new(),
            spid: None,
            cuid: None,
            next_id: 0,
            pending: HashSet::new(),
        };
        (c, format!("VERSION\t{MAJOR_VERSION}\t{MINOR_VERSION}\nCPID\t{pid}\n"))
    }

    /// Whether the server's handshake is complete.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The mechanisms the server offers (complete once ready), `private` ones left out.
    pub fn mechanisms(&self) -> impl Iterator<Item = &Mech> {
        self.mechs.iter().filter(|m| !m.flags.iter().any(|f| f == "private"))
    }

    /// Looks a mechanism up by name, case-insensitively.
    pub fn mechanism(&self, name: &str) -> Option<&Mech> {
        self.mechanisms().find(|m| m.name.eq_ignore_ascii_case(name))
    }

    pub fn server_pid(&self) -> Option<u32> {
        self.spid
    }

    pub fn connection_id(&self) -> Option<u32> {
        self.cuid
    }

    /// Starts an authentication: fills in a fresh request id and returns it with the line.
    /// `resp` is the initial response, already base64 (empty: an empty response).
    pub fn auth(&mut self, mut req: AuthRequest) -> (u32, String) {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        req.id = self.next_id;
        self.pending.insert(req.id);
        (req.id, req.to_line())
    }

    /// The client's answer to a `CONT` challenge (base64; `*` cancels, as in SMTP/IMAP AUTH).
    pub fn cont(&self, id: u32, data: &str) -> String {
        format!("CONT\t{id}\t{}\n", tab_escape(data))
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.lines.push(data);
    }

    /// The next update; `Ok(None)` = need more bytes. Replies to ids we did not send (or
    /// already finished) are a protocol error: the server is confused or hostile.
    pub fn poll(&mut self) -> Result<Option<ClientUpdate>, ProtoError> {
        loop {
            let Some(line) = self.lines.next_line()? else { return Ok(None) };
            match ServerLine::parse(&line)? {
                ServerLine::Version { major, .. } => {
                    if major != MAJOR_VERSION {
                        return Err(ProtoError::Version(major));
                    }
                    self.version_seen = true;
                }
                _ if !self.version_seen => return Err(ProtoError::Order("the first line must be VERSION")),
                ServerLine::Mech(m) if !self.ready => self.mechs.push(m),
                ServerLine::Spid(p) => self.spid = Some(p),
                ServerLine::Cuid(c) => self.cuid = Some(c),
                ServerLine::Cookie(_) => {}
                ServerLine::Done if !self.ready => {
                    self.ready = true;
                    return Ok(Some(ClientUpdate::Ready));
                }
                ServerLine::Reply(r) => {
                    if !self.ready {
                        return Err(ProtoError::Order("reply before the handshake ended"));
                    }
                    if !self.pending.contains(&r.id()) {
                        return Err(ProtoError::UnknownId(r.id()));
                    }
                    if !matches!(r, ServerReply::Cont { .. }) {
                        self.pending.remove(&r.id());
                    }
                    return Ok(Some(ClientUpdate::Reply(r)));
                }
                ServerLine::Mech(_) | ServerLine::Done => return Err(ProtoError::Order("handshake line after DONE")),
                ServerLine::Unknown(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> ServerHello {
        ServerHello {
            mechs: vec![
                Mech { name: "PLAIN".into(), flags: vec!["plaintext".into()] },
                Mech { name: "LOGIN".into(), flags: vec!["plaintext".into()] },
                Mech { name: "CRAM-MD5".into(), flags: vec!["dictionary".into(), "active".into()] },
                Mech { name: "SECRET".into(), flags: vec!["private".into()] },
            ],
            spid: 77,
            cuid: 3,
            cookie: "00112233445566778899aabbccddeeff".into(),
        }
    }

    /// Runs a whole exchange through both state machines, with the bytes in each direction
    /// split at every position.
    #[test]
    fn both_sides_talk_split_anywhere() {
        let server_hello = hello().to_lines();
        assert!(server_hello.starts_with("VERSION\t1\t2\nMECH\tPLAIN\tplaintext\n"));
        assert!(server_hello.ends_with("COOKIE\t00112233445566778899aabbccddeeff\nDONE\n"));
        let (mut client, client_hello) = ClientConnection::new(4242);
        assert_eq!(client_hello, "VERSION\t1\t2\nCPID\t4242\n");
        let req = AuthRequest::new(0, "PLAIN", "smtp")
            .with("nologin", None)
            .with("lip", Some("127.0.0.1"))
            .with("rip", Some("192.0.2.1"))
            .with("secured", None)
            .with("resp", Some("AHVzZXIAcGFzcw=="));
        let (id, auth_line) = client.auth(req);
        let to_server = format!("{client_hello}{auth_line}CONT\t{id}\tYWJj\n");
        for split in 0..to_server.len() {
            let mut server = ServerConnection::new();
            let mut events = Vec::new();
            for part in [&to_server.as_bytes()[..split], &to_server.as_bytes()[split..]] {
                server.feed(part);
                while let Some(e) = server.next_event().unwrap() {
                    events.push(e);
                }
            }
            assert_eq!(server.client_pid(), Some(4242));
            assert_eq!(events.len(), 2, "split {split}");
            let ClientEvent::Auth(r) = &events[0] else { panic!() };
            assert_eq!(r.id, id);
            assert_eq!(r.mech, "PLAIN");
            assert_eq!(r.service(), "smtp");
            assert_eq!(r.remote_ip(), Some("192.0.2.1"));
            assert_eq!(r.local_ip(), Some("127.0.0.1"));
            assert!(r.secured());
            assert!(!r.no_penalty());
            assert_eq!(r.initial_response(), Some("AHVzZXIAcGFzcw=="));
            assert_eq!(events[1], ClientEvent::Cont { id, data: "YWJj".into() });
        }
        let mut server = ServerConnection::new();
        server.feed(to_server.as_bytes());
        while server.next_event().unwrap().is_some() {}
        let ok = server.reply(&ServerReply::Ok { id, user: "alice@example.com".into(), params: vec![] });
        assert_eq!(ok, format!("OK\t{id}\tuser=alice@example.com\n"));
        assert!(!server.in_progress(id));
        let to_client = format!("{server_hello}CONT\t{id}\t\n{ok}");
        for split in 0..to_client.len() {
            let (mut c, _) = ClientConnection::new(1);
            let (id2, _) = c.auth(AuthRequest::new(0, "PLAIN", "smtp"));
            assert_eq!(id2, id);
            let mut ups = Vec::new();
            for part in [&to_client.as_bytes()[..split], &to_client.as_bytes()[split..]] {
                c.feed(part);
                while let Some(u) = c.poll().unwrap() {
                    ups.push(u);
                }
            }
            assert_eq!(ups[0], ClientUpdate::Ready);
            assert_eq!(ups[1], ClientUpdate::Reply(ServerReply::Cont { id, data: String::new() }));
            assert_eq!(
                ups[2],
                ClientUpdate::Reply(ServerReply::Ok { id, user: "alice@example.com".into(), params: vec![] })
            );
            assert_eq!(c.mechanisms().count(), 3, "private mechanisms are hidden");
            assert!(c.mechanism("plain").unwrap().plaintext());
            assert!(!c.mechanism("cram-md5").unwrap().plaintext());
            assert_eq!(c.server_pid(), Some(77));
            assert_eq!(c.connection_id(), Some(3));
        }
    }

    #[test]
    fn failures_round_trip() {
        let f = ServerReply::Fail(Failure {
            id: 9,
            reason: Some("Invalid\tpass".into()),
            temp: true,
            code: Some(code::TEMPFAIL.into()),
            user: Some("bob".into()),
        });
        let line = f.to_line();
        assert_eq!(line, "FAIL\t9\tcode=temp_fail\treason=Invalid\u{1}tpass\ttemp\tuser=bob\n");
        assert_eq!(ServerLine::parse(line.trim_end()).unwrap(), ServerLine::Reply(f));
        // Postfix reads reason= and user=; a plain failure has only the id.
        let plain = ServerReply::Fail(Failure { id: 1, ..Failure::default() });
        assert_eq!(plain.to_line(), "FAIL\t1\n");
    }

    #[test]
    fn server_enforces_order_and_ids() {
        let run = |input: &str| -> Result<Vec<ClientEvent>, ProtoError> {
            let mut s = ServerConnection::new();
            s.feed(input.as_bytes());
            let mut out = Vec::new();
            while let Some(e) = s.next_event()? {
                out.push(e);
            }
            Ok(out)
        };
        assert!(matches!(run("CPID\t1\n"), Err(ProtoError::Order(_))));
        assert!(matches!(run("VERSION\t2\t0\n"), Err(ProtoError::Version(2))));
        assert!(matches!(run("VERSION\t1\t0\nAUTH\t1\tPLAIN\tservice=smtp\n"), Err(ProtoError::Order(_))));
        assert!(matches!(run("VERSION\t1\t0\nCPID\t1\nCPID\t1\n"), Err(ProtoError::Order(_))));
        assert!(matches!(
            run("VERSION\t1\t0\nCPID\t1\nAUTH\t1\tPLAIN\tservice=smtp\nAUTH\t1\tPLAIN\tservice=smtp\n"),
            Err(ProtoError::DuplicateId(1))
        ));
        assert!(matches!(run("VERSION\t1\t0\nCPID\t1\nAUTH\t1\tPLAIN\n"), Err(ProtoError::Syntax(_))));
        assert!(matches!(run("VERSION\t1\t0\nCPID\t1\nAUTH\tx\tPLAIN\tservice=smtp\n"), Err(ProtoError::Syntax(_))));
        assert!(matches!(
            run("VERSION\t1\t0\nCPID\t1\nAUTH\t99999999999\tPLAIN\tservice=smtp\n"),
            Err(ProtoError::Syntax(_))
        ));
        // Unknown commands are ignored; CONT for an unknown id fails that id.
        let ev = run("VERSION\t1\t0\nFOO\tbar\nCPID\t1\nCONT\t5\tYQ==\n").unwrap();
        assert!(matches!(&ev[0], ClientEvent::Immediate(ServerReply::Fail(f)) if f.id == 5));
        let many: String = (0..=MAX_IN_FLIGHT).map(|i| format!("AUTH\t{i}\tPLAIN\tservice=smtp\n")).collect();
        assert!(matches!(run(&format!("VERSION\t1\t0\nCPID\t1\n{many}")), Err(ProtoError::TooManyRequests)));
        let long = format!("VERSION\t1\t0\nCPID\t1\nAUTH\t1\tPLAIN\tservice=smtp\tresp={}\n", "A".repeat(MAX_LINE));
        assert!(matches!(run(&long), Err(ProtoError::LineTooLong(_))));
    }

    #[test]
    fn client_refuses_stray_replies() {
        let (mut c, _) = ClientConnection::new(1);
        c.feed(b"OK\t1\tuser=x\n");
        assert!(matches!(c.poll(), Err(ProtoError::Order(_))));
        let (mut c, _) = ClientConnection::new(1);
        c.feed(b"VERSION\t1\t2\nDONE\nOK\t1\tuser=x\n");
        assert_eq!(c.poll().unwrap(), Some(ClientUpdate::Ready));
        assert!(matches!(c.poll(), Err(ProtoError::UnknownId(1))));
        let (mut c, _) = ClientConnection::new(1);
        c.feed(b"VERSION\t2\t0\n");
        assert!(matches!(c.poll(), Err(ProtoError::Version(2))));
    }
}

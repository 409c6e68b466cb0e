//! The client side of Dovecot's auth protocol (version 1.x), as Postfix's
//! `smtpd_sasl_type = dovecot` speaks it to `auth` client sockets: our authd or a real
//! Dovecot.
//!
//! rpost-auth-proto is meant to hold this protocol for every service; it was still a
//! skeleton when smtpd needed it, so smtpd carries this small client: the pure part
//! ([`parse_handshake`], [`auth_line`], [`cont_line`], [`parse_reply`]) and a tokio
//! connection ([`Conn`]). Everything the client sends into the protocol is either validated
//! base64, a mechanism name the server itself listed, an IP address, or tab-escaped.
//!
//! Wire shape: we send `VERSION\t1\t2` and `CPID\t<pid>`; the server answers `VERSION\t1\tN`,
//! `MECH\t<name>\t<flags>...`, `SPID`, `CUID`, `COOKIE`, `DONE`. Then
//! `AUTH\t<id>\t<mech>\tservice=smtp\tnologin\tlip=..\trip=..\tlport=..\trport=..[\tsecured][\tresp=<b64>]`
//! is answered by `CONT\t<id>\t<b64>`, `OK\t<id>\tuser=<name>...` or
//! `FAIL\t<id>\t[reason=..]\t[temp]...`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::session::Mechanism;

/// Longest line accepted from the auth server (Dovecot's own limit is 16 KB).
pub const MAX_LINE: usize = 16 * 1024;

/// Why the SASL server could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    #[error("connect to {path}: {source}")]
    Connect { path: String, source: std::io::Error },
    #[error("auth server I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("auth server timed out")]
    Timeout,
    #[error("auth server closed the connection")]
    Closed,
    #[error("auth server protocol error: {0}")]
    Protocol(String),
}

/// Dovecot's tab escaping (str_tabescape): \001 → \0011, \t → \001t, \r → \001r, \n → \001n.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{1}' => out.push_str("\u{1}1"),
            '\t' => out.push_str("\u{1}t"),
            '\r' => out.push_str("\u{1}r"),
            '\n' => out.push_str("\u{1}n"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`]; an unknown escape keeps the character after \001.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\u{1}' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('1') => out.push('\u{1}'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

/// Our opening lines.
pub fn hello(pid: u32) -> String {
    format!("VERSION\t1\t2\nCPID\t{pid}\n")
}

/// Collects the server's handshake; `Some(mechanisms)` at `DONE`.
#[derive(Debug, Default)]
pub struct Handshake {
    version_ok: bool,
    mechs: Vec<Mechanism>,
}

/// Feeds one server handshake line (without LF).
pub fn parse_handshake(h: &mut Handshake, line: &str) -> Result<Option<Vec<Mechanism>>, SaslError> {
    let mut f = line.split('\t');
    match f.next().unwrap_or("") {
        "VERSION" => {
            if f.next() != Some("1") {
                return Err(SaslError::Protocol(format!("unsupported protocol version: {line}")));
            }
            h.version_ok = true;
        }
        "MECH" => {
            let name = f.next().unwrap_or("").to_ascii_uppercase();
            let valid = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(SaslError::Protocol(format!("bad mechanism name in {:?}", line)));
            }
            h.mechs.push(Mechanism { name, flags: f.map(|s| s.to_ascii_lowercase()).collect() });
        }
        "DONE" => {
            if !h.version_ok {
                return Err(SaslError::Protocol("DONE before VERSION".into()));
            }
            return Ok(Some(std::mem::take(&mut h.mechs)));
        }
        // SPID, CUID, COOKIE and future lines are for master login, which smtpd does not use.
        _ => {}
    }
    Ok(None)
}

/// Connection details sent with AUTH.
#[derive(Debug, Clone)]
pub struct Peer {
    pub local: Option<(IpAddr, u16)>,
    pub remote: (IpAddr, u16),
    pub secured: bool,
}

/// `AUTH` request line. `mech` must come from the server's list and `initial` must be
/// validated base64 (the caller guarantees both; they are escaped anyway).
pub fn auth_line(id: u32, mech: &str, service: &str, peer: &Peer, initial: Option<&str>) -> String {
    let mut l = format!("AUTH\t{id}\t{}\tservice={}\tnologin", escape(mech), escape(service));
    if let Some((ip, port)) = peer.local {
        l.push_str(&format!("\tlip={ip}\tlport={port}"));
    }
    l.push_str(&format!("\trip={}\trport={}", peer.remote.0, peer.remote.1));
    if peer.secured {
        l.push_str("\tsecured");
    }
    if let Some(r) = initial {
        l.push_str(&format!("\tresp={}", escape(r)));
    }
    l.push('\n');
    l
}

/// `CONT` line with the client's base64 response.
pub fn cont_line(id: u32, response: &str) -> String {
    format!("CONT\t{id}\t{}\n", escape(response))
}

/// The server's answer to AUTH or CONT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerReply {
    Ok { user: String },
    Cont(String),
    Fail { reason: Option<String>, temp: bool },
}

/// Parses a reply line for request `id`; `Ok(None)`: a line for another id (ignored).
pub fn parse_reply(line: &str, id: u32) -> Result<Option<ServerReply>, SaslError> {
    let mut f = line.split('\t');
    let verb = f.next().unwrap_or("");
    let rid = f.next().unwrap_or("");
    if !matches!(verb, "OK" | "CONT" | "FAIL") {
        return Err(SaslError::Protocol(format!("unexpected reply {:?}", verb)));
    }
    if rid != id.to_string() {
        return Ok(None);
    }
    let args: Vec<&str> = f.collect();
    let param = |k: &str| args.iter().find_map(|a| a.strip_prefix(k).and_then(|v| v.strip_prefix('=')));
    Ok(Some(match verb {
        "CONT" => {
            let ch = args.first().copied().unwrap_or("");
            if !crate::session::valid_base64(ch) {
                return Err(SaslError::Protocol("challenge is not base64".into()));
            }
            ServerReply::Cont(ch.to_string())
        }
        "OK" => match param("user") {
            Some(u) if !u.is_empty() => ServerReply::Ok { user: unescape(u) },
            _ => return Err(SaslError::Protocol("OK without user".into())),
        },
        _ => ServerReply::Fail {
            reason: param("reason").map(unescape),
            temp: args.contains(&"temp") || param("code") == Some("temp_fail"),
        },
    }))
}

/// A connection to the auth client socket.
#[derive(Debug)]
pub struct Conn {
    stream: BufReader<UnixStream>,
    next_id: u32,
    timeout: Duration,
    pub mechanisms: Vec<Mechanism>,
}

impl Conn {
    /// Connects and completes the handshake.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Conn, SaslError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| SaslError::Timeout)?
            .map_err(|source| SaslError::Connect { path: path.display().to_string(), source })?;
        let mut conn = Conn { stream: BufReader::new(stream), next_id: 1, timeout, mechanisms: Vec::new() };
        conn.send(&hello(std::process::id())).await?;
        let mut h = Handshake::default();
        loop {
            let line = conn.line().await?;
            if let Some(m) = parse_handshake(&mut h, &line)? {
                conn.mechanisms = m;
                return Ok(conn);
            }
        }
    }

    async fn send(&mut self, s: &str) -> Result<(), SaslError> {
        tokio::time::timeout(self.timeout, self.stream.get_mut().write_all(s.as_bytes()))
            .await
            .map_err(|_| SaslError::Timeout)??;
        Ok(())
    }

    async fn line(&mut self) -> Result<String, SaslError> {
        let mut buf = Vec::new();
        let read = async {
            let mut limited = (&mut self.stream).take(MAX_LINE as u64 + 1);
            limited.read_until(b'\n', &mut buf).await
        };
        let n = tokio::time::timeout(self.timeout, read).await.map_err(|_| SaslError::Timeout)??;
        if n == 0 {
            return Err(SaslError::Closed);
        }
        if buf.last() != Some(&b'\n') {
            return Err(SaslError::Protocol("line too long".into()));
        }
        buf.pop();
        String::from_utf8(buf).map_err(|_| SaslError::Protocol("line is not UTF-8".into()))
    }

    async fn reply(&mut self, id: u32) -> Result<ServerReply, SaslError> {
        loop {
            let line = self.line().await?;
            if let Some(r) = parse_reply(&line, id)? {
                return Ok(r);
            }
        }
    }

    /// Starts an exchange: returns its id and the server's first answer.
    pub async fn auth(
        &mut self,
        mech: &str,
        service: &str,
        peer: &Peer,
        initial: Option<&str>,
    ) -> Result<(u32, ServerReply), SaslError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.send(&auth_line(id, mech, service, peer, initial)).await?;
        Ok((id, self.reply(id).await?))
    }

    /// Sends the client's response in exchange `id`.
    pub async fn cont(&mut self, id: u32, response: &str) -> Result<ServerReply, SaslError> {
        self.send(&cont_line(id, response)).await?;
        self.reply(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        let s = "a\tb\nc\rd\u{1}e";
        assert_eq!(escape(s), "a\u{1}tb\u{1}nc\u{1}rd\u{1}1e");
        assert_eq!(unescape(&escape(s)), s);
    }

    #[test]
    fn handshake_as_dovecot_sends_it() {
        let mut h = Handshake::default();
        let lines = [
            "VERSION\t1\t2",
            "MECH\tPLAIN\tplaintext",
            "MECH\tLOGIN\tplaintext",
            "MECH\tANONYMOUS\tanonymous",
            "SPID\t1234",
            "CUID\t7",
            "COOKIE\t0123456789abcdef",
        ];
        for l in lines {
            assert_eq!(parse_handshake(&mut h, l).unwrap(), None);
        }
        let m = parse_handshake(&mut h, "DONE").unwrap().unwrap();
        assert_eq!(m.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["PLAIN", "LOGIN", "ANONYMOUS"]);
        assert_eq!(m[2].flags, ["anonymous"]);
        assert!(parse_handshake(&mut Handshake::default(), "VERSION\t2\t0").is_err());
        assert!(parse_handshake(&mut Handshake::default(), "DONE").is_err());
        assert!(parse_handshake(&mut h, "MECH\tPL AIN").is_err());
    }

    #[test]
    fn auth_line_shape() {
        let peer = Peer {
            local: Some(("127.0.0.1".parse().unwrap(), 587)),
            remote: ("192.0.2.1".parse().unwrap(), 40000),
            secured: true,
        };
        assert_eq!(
            auth_line(3, "PLAIN", "smtp", &peer, Some("AGFsaWNlAHNlY3JldA==")),
            "AUTH\t3\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\tlport=587\trip=192.0.2.1\trport=40000\tsecured\tresp=AGFsaWNlAHNlY3JldA==\n"
        );
        let peer = Peer { local: None, secured: false, ..peer };
        assert_eq!(
            auth_line(4, "LOGIN", "sm\ttp", &peer, None),
            "AUTH\t4\tLOGIN\tservice=sm\u{1}ttp\tnologin\trip=192.0.2.1\trport=40000\n"
        );
        assert_eq!(cont_line(4, ""), "CONT\t4\t\n");
    }

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply("OK\t1\tuser=alice@example.test\tx=y", 1).unwrap(),
            Some(ServerReply::Ok { user: "alice@example.test".into() })
        );
        assert_eq!(parse_reply("CONT\t1\tVXNlcm5hbWU6", 1).unwrap(), Some(ServerReply::Cont("VXNlcm5hbWU6".into())));
        assert_eq!(parse_reply("CONT\t1\t", 1).unwrap(), Some(ServerReply::Cont(String::new())));
        assert_eq!(
            parse_reply("FAIL\t1\tuser=bob\treason=Password\u{1}tmismatch", 1).unwrap(),
            Some(ServerReply::Fail { reason: Some("Password\tmismatch".into()), temp: false })
        );
        assert_eq!(parse_reply("FAIL\t1\ttemp", 1).unwrap(), Some(ServerReply::Fail { reason: None, temp: true }));
        assert_eq!(parse_reply("OK\t2\tuser=x", 1).unwrap(), None, "another request's reply");
        assert!(parse_reply("OK\t1", 1).is_err());
        assert!(parse_reply("CONT\t1\tnot base64!", 1).is_err());
        assert!(parse_reply("HELLO\t1", 1).is_err());
    }

    /// A scripted server on a socketpair: the connection reads the handshake and a full
    /// LOGIN exchange.
    #[tokio::test]
    async fn conn_against_a_scripted_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = BufReader::new(s);
            let mut got = Vec::new();
            s.get_mut()
                .write_all(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nSPID\t1\nCUID\t1\nCOOKIE\tab\nDONE\n")
                .await
                .unwrap();
            for reply in ["CONT\t1\tVXNlcm5hbWU6\n", "CONT\t1\tUGFzc3dvcmQ6\n", "OK\t1\tuser=alice\n"] {
                let mut l = String::new();
                // VERSION and CPID come first.
                while !l.starts_with("AUTH") && !l.starts_with("CONT") {
                    l.clear();
                    s.read_line(&mut l).await.unwrap();
                }
                got.push(l);
                s.get_mut().write_all(reply.as_bytes()).await.unwrap();
            }
            got
        });
        let mut c = Conn::connect(&path, Duration::from_secs(30)).await.unwrap();
        assert_eq!(c.mechanisms.len(), 2);
        let peer = Peer { local: None, remote: ("127.0.0.1".parse().unwrap(), 1), secured: false };
        let (id, r) = c.auth("LOGIN", "smtp", &peer, None).await.unwrap();
        assert_eq!(r, ServerReply::Cont("VXNlcm5hbWU6".into()));
        assert_eq!(c.cont(id, "YWxpY2U=").await.unwrap(), ServerReply::Cont("UGFzc3dvcmQ6".into()));
        assert_eq!(c.cont(id, "c2VjcmV0").await.unwrap(), ServerReply::Ok { user: "alice".into() });
        let got = server.await.unwrap();
        assert!(got[0].starts_with("AUTH\t1\tLOGIN\tservice=smtp"), "{got:?}");
        assert_eq!(got[1], "CONT\t1\tYWxpY2U=\n");
    }
}

//! smtpd's connection to a Dovecot auth client socket (our authd, or a real Dovecot), as
//! Postfix's `smtpd_sasl_type = dovecot`: the protocol itself is
//! `rpost_auth_proto::client::ClientConnection` (sans-IO); this module moves its bytes over
//! a UNIX socket with time limits, and builds the `AUTH` request the way Postfix does
//! (`service=smtp nologin lip= lport= rip= rport= [secured] [resp=]`).
//!
//! Everything smtpd puts into a request is a mechanism name the server itself listed,
//! an IP address, a port, or client text that [`crate::session`] has already checked to be
//! base64; the protocol crate tab-escapes values anyway.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rpost_auth_proto::client::{AuthRequest, ClientConnection, ClientUpdate, ServerReply as Reply, code};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::session::Mechanism;

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
    Protocol(#[from] rpost_auth_proto::ProtoError),
    #[error("auth server sent a challenge that is not base64")]
    BadChallenge,
}

/// Connection details sent with AUTH.
#[derive(Debug, Clone)]
pub struct Peer {
    pub local: Option<(IpAddr, u16)>,
    pub remote: (IpAddr, u16),
    pub secured: bool,
}

/// The request Postfix's smtpd sends for one AUTH command.
pub fn request(mech: &str, service: &str, peer: &Peer, initial: Option<&str>) -> AuthRequest {
    let mut req = AuthRequest::new(0, mech, service).with("nologin", None);
    if let Some((ip, port)) = peer.local {
        req = req.with("lip", Some(&ip.to_string())).with("lport", Some(&port.to_string()));
    }
    req = req.with("rip", Some(&peer.remote.0.to_string())).with("rport", Some(&peer.remote.1.to_string()));
    if peer.secured {
        req = req.with("secured", None);
    }
    if let Some(r) = initial {
        req = req.with("resp", Some(r));
    }
    req
}

/// The server's answer to AUTH or CONT, as smtpd uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerReply {
    Ok {
        user: String,
    },
    /// A challenge, base64 (checked: it goes to the SMTP client verbatim).
    Cont(String),
    Fail {
        reason: Option<String>,
        temp: bool,
    },
}

fn convert(r: Reply) -> Result<ServerReply, SaslError> {
    Ok(match r {
        Reply::Ok { user, .. } => ServerReply::Ok { user },
        Reply::Cont { data, .. } => {
            if !crate::session::valid_base64(&data) {
                return Err(SaslError::BadChallenge);
            }
            ServerReply::Cont(data)
        }
        Reply::Fail(f) => {
            ServerReply::Fail { temp: f.temp || f.code.as_deref() == Some(code::TEMPFAIL), reason: f.reason }
        }
    })
}

/// A connection to the auth client socket.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    proto: ClientConnection,
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
        let (proto, hello) = ClientConnection::new(std::process::id());
        let mut conn = Conn { stream, proto, timeout, mechanisms: Vec::new() };
        conn.send(&hello).await?;
        while conn.update().await? != ClientUpdate::Ready {}
        conn.mechanisms =
            conn.proto.mechanisms().map(|m| Mechanism { name: m.name.clone(), flags: m.flags.clone() }).collect();
        Ok(conn)
    }

    async fn send(&mut self, s: &str) -> Result<(), SaslError> {
        tokio::time::timeout(self.timeout, self.stream.write_all(s.as_bytes()))
            .await
            .map_err(|_| SaslError::Timeout)??;
        Ok(())
    }

    /// The next update from the server, reading as needed.
    async fn update(&mut self) -> Result<ClientUpdate, SaslError> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(u) = self.proto.poll()? {
                return Ok(u);
            }
            let n = tokio::time::timeout(self.timeout, self.stream.read(&mut buf))
                .await
                .map_err(|_| SaslError::Timeout)??;
            if n == 0 {
                return Err(SaslError::Closed);
            }
            self.proto.feed(&buf[..n]);
        }
    }

    async fn reply(&mut self) -> Result<ServerReply, SaslError> {
        loop {
            if let ClientUpdate::Reply(r) = self.update().await? {
                return convert(r);
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
        let (id, line) = self.proto.auth(request(mech, service, peer, initial));
        self.send(&line).await?;
        Ok((id, self.reply().await?))
    }

    /// Sends the client's response in exchange `id`.
    pub async fn cont(&mut self, id: u32, response: &str) -> Result<ServerReply, SaslError> {
        let line = self.proto.cont(id, response);
        self.send(&line).await?;
        self.reply().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    #[test]
    fn request_as_postfix_sends_it() {
        let peer = Peer {
            local: Some(("127.0.0.1".parse().unwrap(), 587)),
            remote: ("192.0.2.1".parse().unwrap(), 40000),
            secured: true,
        };
        let mut c = ClientConnection::new(1).0;
        let (_, line) = c.auth(request("PLAIN", "smtp", &peer, Some("AGFsaWNlAHNlY3JldA==")));
        assert_eq!(
            line,
            "AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\tlport=587\trip=192.0.2.1\trport=40000\tsecured\tresp=AGFsaWNlAHNlY3JldA==\n"
        );
        let peer = Peer { local: None, secured: false, ..peer };
        let (_, line) = c.auth(request("LOGIN", "smtp", &peer, None));
        assert_eq!(line, "AUTH\t2\tLOGIN\tservice=smtp\tnologin\trip=192.0.2.1\trport=40000\n");
    }

    #[test]
    fn replies_convert() {
        let fail = |temp, code: Option<&str>| {
            Reply::Fail(rpost_auth_proto::client::Failure {
                id: 1,
                reason: Some("nope".into()),
                temp,
                code: code.map(String::from),
                user: None,
            })
        };
        assert_eq!(convert(fail(false, None)).unwrap(), ServerReply::Fail { reason: Some("nope".into()), temp: false });
        assert!(matches!(convert(fail(true, None)).unwrap(), ServerReply::Fail { temp: true, .. }));
        assert!(matches!(convert(fail(false, Some("temp_fail"))).unwrap(), ServerReply::Fail { temp: true, .. }));
        assert!(matches!(convert(Reply::Cont { id: 1, data: "bad base64!".into() }), Err(SaslError::BadChallenge)));
        assert_eq!(convert(Reply::Cont { id: 1, data: String::new() }).unwrap(), ServerReply::Cont(String::new()));
    }

    /// A scripted server on a UNIX socket: the connection reads the handshake and a full
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

    #[tokio::test]
    async fn a_server_speaking_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"VERSION\t2\t0\nDONE\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let e = Conn::connect(&path, Duration::from_secs(30)).await.unwrap_err();
        assert!(matches!(e, SaslError::Protocol(_)), "{e}");
    }
}

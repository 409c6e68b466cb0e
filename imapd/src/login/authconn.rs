//! authd's two sockets as a login needs them: the auth client socket (`private/auth`,
//! Dovecot's auth-client protocol: SASL exchanges) and the auth-userdb socket
//! (`private/auth-userdb`: uid, gid, home and mail of the authenticated user). The protocols
//! are rpost-auth-proto's sans-IO state machines; this module moves their bytes with time
//! limits.

use std::path::Path;
use std::time::Duration;

use rpost_auth_proto::client::{AuthRequest, ClientConnection, ClientUpdate, ServerReply, code};
use rpost_auth_proto::{MasterClient, MasterReply, Params};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::LoginError;

/// One connection to the auth client socket, after the handshake.
#[derive(Debug)]
pub struct AuthConn {
    stream: UnixStream,
    proto: ClientConnection,
    timeout: Duration,
}

/// The server's answer to AUTH or CONT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Authenticated as this (canonical) user.
    Ok(String),
    /// A challenge, base64.
    Cont(String),
    /// Refused: `reason` may be shown to the client; `temp`: a server-side problem.
    Fail { reason: Option<String>, temp: bool, user: Option<String> },
}

async fn connect(path: &Path, timeout: Duration) -> Result<UnixStream, LoginError> {
    tokio::time::timeout(timeout, UnixStream::connect(path))
        .await
        .map_err(|_| LoginError::AuthServer(format!("connect to {}: timed out", path.display())))?
        .map_err(|e| LoginError::AuthServer(format!("connect to {}: {e}", path.display())))
}

async fn read_some(stream: &mut UnixStream, timeout: Duration) -> Result<Vec<u8>, LoginError> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(timeout, stream.read(&mut buf))
        .await
        .map_err(|_| LoginError::AuthServer("auth server timed out".into()))?
        .map_err(|e| LoginError::AuthServer(format!("auth server I/O: {e}")))?;
    if n == 0 {
        return Err(LoginError::AuthServer("auth server closed the connection".into()));
    }
    buf.truncate(n);
    Ok(buf)
}

async fn write_all(stream: &mut UnixStream, data: &str, timeout: Duration) -> Result<(), LoginError> {
    tokio::time::timeout(timeout, stream.write_all(data.as_bytes()))
        .await
        .map_err(|_| LoginError::AuthServer("auth server timed out".into()))?
        .map_err(|e| LoginError::AuthServer(format!("auth server I/O: {e}")))
}

fn proto_err(e: rpost_auth_proto::ProtoError) -> LoginError {
    LoginError::AuthServer(format!("auth server protocol error: {e}"))
}

impl AuthConn {
    /// Connects and completes the handshake (VERSION, MECH lines, DONE).
    pub async fn connect(path: &Path, timeout: Duration) -> Result<AuthConn, LoginError> {
        let stream = connect(path, timeout).await?;
        let (proto, hello) = ClientConnection::new(std::process::id());
        let mut c = AuthConn { stream, proto, timeout };
        write_all(&mut c.stream, &hello, timeout).await?;
        while c.update().await? != ClientUpdate::Ready {}
        Ok(c)
    }

    /// The mechanisms the server offers: (name, plaintext).
    pub fn mechanisms(&self) -> Vec<(String, bool)> {
        self.proto.mechanisms().map(|m| (m.name.clone(), m.plaintext())).collect()
    }

    async fn update(&mut self) -> Result<ClientUpdate, LoginError> {
        loop {
            if let Some(u) = self.proto.poll().map_err(proto_err)? {
                return Ok(u);
            }
            let data = read_some(&mut self.stream, self.timeout).await?;
            self.proto.feed(&data);
        }
    }

    async fn answer(&mut self) -> Result<Answer, LoginError> {
        loop {
            if let ClientUpdate::Reply(r) = self.update().await? {
                return Ok(match r {
                    ServerReply::Ok { user, .. } => Answer::Ok(user),
                    ServerReply::Cont { data, .. } => {
                        if rpost_auth_proto::b64_decode(&data).is_none() && !data.is_empty() {
                            return Err(LoginError::AuthServer(
                                "auth server sent a challenge that is not base64".into(),
                            ));
                        }
                        Answer::Cont(data)
                    }
                    ServerReply::Fail(f) => Answer::Fail {
                        temp: f.temp || f.code.as_deref() == Some(code::TEMPFAIL),
                        reason: f.reason,
                        user: f.user,
                    },
                });
            }
        }
    }

    /// Starts an exchange; the server's first answer.
    pub async fn auth(&mut self, req: AuthRequest) -> Result<(u32, Answer), LoginError> {
        let (id, line) = self.proto.auth(req);
        write_all(&mut self.stream, &line, self.timeout).await?;
        Ok((id, self.answer().await?))
    }

    /// The client's response (base64) in exchange `id`.
    pub async fn cont(&mut self, id: u32, data: &str) -> Result<Answer, LoginError> {
        let line = self.proto.cont(id, data);
        write_all(&mut self.stream, &line, self.timeout).await?;
        self.answer().await
    }
}

/// What the userdb says about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserdbAnswer {
    Found { user: String, fields: Params },
    NotFound,
}

/// One `USER` lookup on the auth-userdb socket.
pub async fn userdb_lookup(
    path: &Path,
    user: &str,
    service: &str,
    timeout: Duration,
) -> Result<UserdbAnswer, LoginError> {
    let mut stream = connect(path, timeout).await?;
    let (mut client, hello) = MasterClient::new();
    let (id, line) = client.user(user, service);
    write_all(&mut stream, &format!("{hello}{line}"), timeout).await?;
    loop {
        if let Some(r) = client.poll().map_err(proto_err)? {
            return match r {
                MasterReply::User { id: rid, user, fields } if rid == id => Ok(UserdbAnswer::Found { user, fields }),
                MasterReply::NotFound { id: rid } if rid == id => Ok(UserdbAnswer::NotFound),
                MasterReply::Fail { reason, .. } => Err(LoginError::AuthServer(format!(
                    "userdb lookup failed: {}",
                    reason.as_deref().map(rpost_auth_proto::printable).unwrap_or_default()
                ))),
                other => Err(LoginError::AuthServer(format!("unexpected userdb reply {:?}", other.id()))),
            };
        }
        let data = read_some(&mut stream, timeout).await?;
        client.feed(&data);
    }
}

//! The auth-userdb ("auth master") protocol: delivery agents and `doveadm user` ask for a
//! user's fields. Both ends, sans-IO.
//!
//! ```text
//! S: VERSION 1 0 | SPID pid               (at connect)
//! C: VERSION 1 0
//! C: USER id name service=lmtp [..]   ->  USER id name uid=.. gid=.. home=.. | NOTFOUND id | FAIL id reason=..
//! C: PASS id name service=..          ->  PASS id user=name [..]           | NOTFOUND id | FAIL id
//! C: LIST id [user=mask] [..]         ->  LIST id name  (repeated)  then  DONE id [fail]
//! ```
//! Dovecot's `REQUEST` (login-process hand-over by cookie) is not implemented: rpost's
//! login services authenticate and serve in one process. It is answered with `FAIL`.

use crate::ProtoError;
use crate::escape::{LineBuffer, Params, flag, param, parse_params, split_line, tab_escape, write_params};

pub const MAJOR_VERSION: u32 = 1;
pub const MINOR_VERSION: u32 = 0;
/// Longest line either side accepts.
pub const MAX_LINE: usize = 16384;

/// A request to the userdb server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterRequest {
    User {
        id: u32,
        user: String,
        params: Params,
    },
    Pass {
        id: u32,
        user: String,
        params: Params,
    },
    List {
        id: u32,
        params: Params,
    },
    /// A command we do not serve (`REQUEST`, ...): fail it by id when it has one.
    Unsupported {
        command: String,
        id: Option<u32>,
    },
}

impl MasterRequest {
    pub fn parse(line: &str) -> Result<MasterRequest, ProtoError> {
        let f = split_line(line)?;
        let (cmd, rest) = f.split_first().expect("one field at least");
        let id = || -> Result<u32, ProtoError> {
            let s = rest.first().map_or("", String::as_str);
            if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ProtoError::Syntax(format!("{cmd}: bad request id")));
            }
            s.parse().map_err(|_| ProtoError::Syntax(format!("{cmd}: request id out of range")))
        };
        let user = || -> Result<String, ProtoError> {
            rest.get(1)
                .filter(|u| !u.is_empty())
                .cloned()
                .ok_or_else(|| ProtoError::Syntax(format!("{cmd} without a user name")))
        };
        Ok(match cmd.as_str() {
            "USER" => {
                MasterRequest::User { id: id()?, user: user()?, params: parse_params(rest.get(2..).unwrap_or(&[])) }
            }
            "PASS" => {
                MasterRequest::Pass { id: id()?, user: user()?, params: parse_params(rest.get(2..).unwrap_or(&[])) }
            }
            "LIST" => MasterRequest::List { id: id()?, params: parse_params(rest.get(1..).unwrap_or(&[])) },
            other => MasterRequest::Unsupported { command: other.to_string(), id: id().ok() },
        })
    }

    pub fn id(&self) -> Option<u32> {
        match self {
            MasterRequest::User { id, .. } | MasterRequest::Pass { id, .. } | MasterRequest::List { id, .. } => {
                Some(*id)
            }
            MasterRequest::Unsupported { id, .. } => *id,
        }
    }

    /// `service=` of the request.
    pub fn service(&self) -> Option<&str> {
        match self {
            MasterRequest::User { params, .. }
            | MasterRequest::Pass { params, .. }
            | MasterRequest::List { params, .. } => param(params, "service"),
            MasterRequest::Unsupported { .. } => None,
        }
    }

    pub fn to_line(&self) -> String {
        let mut out = match self {
            MasterRequest::User { id, user, params } => {
                let mut s = format!("USER\t{id}\t{}", tab_escape(user));
                write_params(&mut s, params);
                s
            }
            MasterRequest::Pass { id, user, params } => {
                let mut s = format!("PASS\t{id}\t{}", tab_escape(user));
                write_params(&mut s, params);
                s
            }
            MasterRequest::List { id, params } => {
                let mut s = format!("LIST\t{id}");
                write_params(&mut s, params);
                s
            }
            MasterRequest::Unsupported { command, id } => match id {
                Some(id) => format!("{}\t{id}", tab_escape(command)),
                None => tab_escape(command),
            },
        };
        out.push('\n');
        out
    }
}

/// A reply from the userdb server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterReply {
    /// The user's fields (`uid`, `gid`, `home`, `mail`, `quota_rule`, ...).
    User {
        id: u32,
        user: String,
        fields: Params,
    },
    /// passdb lookup result: `user=` and extra fields, never the password.
    Pass {
        id: u32,
        fields: Params,
    },
    NotFound {
        id: u32,
    },
    Fail {
        id: u32,
        reason: Option<String>,
    },
    /// One user of a LIST.
    ListUser {
        id: u32,
        user: String,
    },
    /// The end of a LIST; `failed`: the list is incomplete.
    ListDone {
        id: u32,
        failed: bool,
    },
}

impl MasterReply {
    pub fn to_line(&self) -> String {
        let mut out = match self {
            MasterReply::User { id, user, fields } => {
                let mut s = format!("USER\t{id}\t{}", tab_escape(user));
                write_params(&mut s, fields);
                s
            }
            MasterReply::Pass { id, fields } => {
                let mut s = format!("PASS\t{id}");
                write_params(&mut s, fields);
                s
            }
            MasterReply::NotFound { id } => format!("NOTFOUND\t{id}"),
            MasterReply::Fail { id, reason } => {
                let mut s = format!("FAIL\t{id}");
                if let Some(r) = reason {
                    write_params(&mut s, &[("reason".into(), Some(r.clone()))]);
                }
                s
            }
            MasterReply::ListUser { id, user } => format!("LIST\t{id}\t{}", tab_escape(user)),
            MasterReply::ListDone { id, failed } => {
                if *failed {
                    format!("DONE\t{id}\tfail")
                } else {
                    format!("DONE\t{id}")
                }
            }
        };
        out.push('\n');
        out
    }

    pub fn parse(line: &str) -> Result<MasterReply, ProtoError> {
        let f = split_line(line)?;
        let (cmd, rest) = f.split_first().expect("one field at least");
        let id: u32 = rest
            .first()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ProtoError::Syntax(format!("{cmd}: bad request id")))?;
        let tail = rest.get(1..).unwrap_or(&[]);
        Ok(match cmd.as_str() {
            "USER" => MasterReply::User {
                id,
                user: tail.first().cloned().unwrap_or_default(),
                fields: parse_params(tail.get(1..).unwrap_or(&[])),
            },
            "PASS" => MasterReply::Pass { id, fields: parse_params(tail) },
            "NOTFOUND" => MasterReply::NotFound { id },
            "FAIL" => MasterReply::Fail { id, reason: param(&parse_params(tail), "reason").map(str::to_string) },
            "LIST" => MasterReply::ListUser { id, user: tail.first().cloned().unwrap_or_default() },
            "DONE" => MasterReply::ListDone { id, failed: flag(&parse_params(tail), "fail") },
            other => return Err(ProtoError::Syntax(format!("unknown reply {:?}", crate::printable(other)))),
        })
    }

    pub fn id(&self) -> u32 {
        match self {
            MasterReply::User { id, .. }
            | MasterReply::Pass { id, .. }
            | MasterReply::NotFound { id }
            | MasterReply::Fail { id, .. }
            | MasterReply::ListUser { id, .. }
            | MasterReply::ListDone { id, .. } => *id,
        }
    }
}

/// The server's greeting.
pub fn server_hello(spid: u32) -> String {
    format!("VERSION\t{MAJOR_VERSION}\t{MINOR_VERSION}\nSPID\t{spid}\n")
}

/// The server end of one userdb connection.
#[derive(Debug)]
pub struct MasterServer {
    lines: LineBuffer,
    version_seen: bool,
}

impl Default for MasterServer {
    fn default() -> Self {
        Self::new()
    }
}

impl MasterServer {
    pub fn new() -> MasterServer {
        MasterServer { lines: LineBuffer::new(MAX_LINE), version_seen: false }
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.lines.push(data);
    }

    /// The next request; `Ok(None)` = need more bytes; an error ends the connection.
    pub fn next_request(&mut self) -> Result<Option<MasterRequest>, ProtoError> {
        loop {
            let Some(line) = self.lines.next_line()? else { return Ok(None) };
            if !self.version_seen {
                let f = split_line(&line)?;
                if f[0] != "VERSION" {
                    return Err(ProtoError::Order("the first line must be VERSION"));
                }
                let major: u32 =
                    f.get(1).and_then(|m| m.parse().ok()).ok_or_else(|| ProtoError::Syntax("bad VERSION".into()))?;
                if major != MAJOR_VERSION {
                    return Err(ProtoError::Version(major));
                }
                self.version_seen = true;
                continue;
            }
            if line.starts_with("CPID\t") {
                continue;
            }
            return MasterRequest::parse(&line).map(Some);
        }
    }
}

/// The client end (lmtp-deliver, `rmaster auth test`'s userdb step).
#[derive(Debug)]
pub struct MasterClient {
    lines: LineBuffer,
    version_seen: bool,
    next_id: u32,
}

impl MasterClient {
    /// A new client and its greeting.
    pub fn new() -> (MasterClient, String) {
        (
            MasterClient { lines: LineBuffer::new(MAX_LINE), version_seen: false, next_id: 0 },
            format!("VERSION\t{MAJOR_VERSION}\t{MINOR_VERSION}\n"),
        )
    }

    fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// A `USER` request for `user` from `service`.
    pub fn user(&mut self, user: &str, service: &str) -> (u32, String) {
        let id = self.id();
        let r = MasterRequest::User { id, user: user.into(), params: vec![("service".into(), Some(service.into()))] };
        (id, r.to_line())
    }

    /// A `PASS` request (passdb lookup without a password check).
    pub fn pass(&mut self, user: &str, service: &str) -> (u32, String) {
        let id = self.id();
        let r = MasterRequest::Pass { id, user: user.into(), params: vec![("service".into(), Some(service.into()))] };
        (id, r.to_line())
    }

    /// A `LIST` request.
    pub fn list(&mut self, params: Params) -> (u32, String) {
        let id = self.id();
        (id, MasterRequest::List { id, params }.to_line())
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.lines.push(data);
    }

    /// The next reply; the server's VERSION/SPID are consumed here.
    pub fn poll(&mut self) -> Result<Option<MasterReply>, ProtoError> {
        loop {
            let Some(line) = self.lines.next_line()? else { return Ok(None) };
            if line.starts_with("VERSION\t") {
                let major: u32 = line.split('\t').nth(1).and_then(|m| m.parse().ok()).unwrap_or(0);
                if major != MAJOR_VERSION {
                    return Err(ProtoError::Version(major));
                }
                self.version_seen = true;
                continue;
            }
            if !self.version_seen {
                return Err(ProtoError::Order("the first line must be VERSION"));
            }
            if line.starts_with("SPID\t") {
                continue;
            }
            return MasterReply::parse(&line).map(Some);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_lookup_both_sides_split_anywhere() {
        let (mut client, hello) = MasterClient::new();
        let (id, req) = client.user("alice@example.com", "lmtp");
        assert_eq!(req, "USER\t1\talice@example.com\tservice=lmtp\n");
        let input = format!("{hello}CPID\t9\n{req}LIST\t2\tuser=*@example.com\nREQUEST\t3\t1\t2\n");
        for split in 0..input.len() {
            let mut s = MasterServer::new();
            let mut got = Vec::new();
            for part in [&input.as_bytes()[..split], &input.as_bytes()[split..]] {
                s.feed(part);
                while let Some(r) = s.next_request().unwrap() {
                    got.push(r);
                }
            }
            assert_eq!(got.len(), 3);
            assert!(matches!(&got[0], MasterRequest::User { id: 1, user, .. } if user == "alice@example.com"));
            assert_eq!(got[0].service(), Some("lmtp"));
            assert!(
                matches!(&got[1], MasterRequest::List { id: 2, params } if param(params, "user") == Some("*@example.com"))
            );
            assert_eq!(got[2], MasterRequest::Unsupported { command: "REQUEST".into(), id: Some(3) });
        }
        let reply = MasterReply::User {
            id,
            user: "alice@example.com".into(),
            fields: vec![
                ("uid".into(), Some("5000".into())),
                ("home".into(), Some("/var/vmail/example.com/alice".into())),
            ],
        };
        let out = format!("{}{}", server_hello(12), reply.to_line());
        assert_eq!(
            out,
            "VERSION\t1\t0\nSPID\t12\nUSER\t1\talice@example.com\tuid=5000\thome=/var/vmail/example.com/alice\n"
        );
        client.feed(out.as_bytes());
        assert_eq!(client.poll().unwrap(), Some(reply));
        assert_eq!(client.poll().unwrap(), None);
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            MasterReply::NotFound { id: 4 },
            MasterReply::Fail { id: 5, reason: Some("db\tdown".into()) },
            MasterReply::Fail { id: 5, reason: None },
            MasterReply::ListUser { id: 6, user: "bob".into() },
            MasterReply::ListDone { id: 6, failed: true },
            MasterReply::ListDone { id: 6, failed: false },
            MasterReply::Pass { id: 7, fields: vec![("user".into(), Some("bob".into()))] },
        ] {
            assert_eq!(MasterReply::parse(r.to_line().trim_end()).unwrap(), r);
        }
        assert!(MasterReply::parse("WHAT\t1").is_err());
        assert!(MasterRequest::parse("USER\t1").is_err());
        assert!(MasterRequest::parse("USER\tx\tbob").is_err());
        let mut s = MasterServer::new();
        s.feed(b"USER\t1\tbob\n");
        assert!(matches!(s.next_request(), Err(ProtoError::Order(_))));
    }
}

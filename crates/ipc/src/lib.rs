//! rpost-ipc - typed messages between rmaster, its children and the admin CLI
//!
//! # SUMMARY
//! Frame codec (length-prefixed postcard) and the message types that cross process
//! boundaries inside the suite: the child status pipe, the child's start-up environment,
//! and the master control socket used by `rmaster status|reload|stop`.
//!
//! # DESCRIPTION
//! Every frame is a 4-byte big-endian length followed by a postcard body. [`FrameDecoder`]
//! is sans-IO: feed it bytes as they arrive (in any split) and pull whole messages out.
//!
//! * Status pipe (child -> master): [`ChildStatus`], written when a child becomes full or
//!   available again, after its first client, and periodically when its use count changed. The master closes its end to tell a child of an
//!   old generation to stop accepting and exit once its clients are done (as Postfix does); a
//!   child that sees end-of-file on the pipe also knows that the master is gone.
//! * Child environment: [`ChildEnv`] travels in `RPOST_*` environment variables at exec.
//!   Listening sockets are inherited as file descriptors [`ChildEnv::LISTEN_FD_START`]..,
//!   the status pipe is [`ChildEnv::STATUS_FD`], and [`ChildEnv::CONFIG_FD`] holds the exact
//!   main.cf text the master loaded, so children never see an edit the master has not
//!   accepted by a reload.
//! * Control socket (`pid/master.sock` under the queue directory, mode 0600):
//!   [`ControlRequest`] / [`ControlResponse`].
//! * Delivery (qmgr -> delivery agent over `private/<transport>`): [`DeliveryRequest`] /
//!   [`DeliveryResponse`], one exchange per connection.
//!
//! # SECURITY
//! Frames come from processes of the suite or from root via the control socket, yet the
//! decoder still treats them as untrusted: frames over [`MAX_FRAME`] bytes are refused
//! before any allocation, and malformed bodies are typed errors, never panics.
//!
//! # STANDARDS
//! None; internal protocol. postcard's wire format is stable across 1.x.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::PathBuf;

/// Largest frame accepted by [`FrameDecoder`].
pub const MAX_FRAME: usize = 1 << 20;

/// IPC errors.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    #[error("IPC frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("malformed IPC frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("missing or bad environment variable {0}")]
    Env(&'static str),
}

/// Encodes one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, IpcError> {
    let body = postcard::to_stdvec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(IpcError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Incremental frame decoder: bytes in, messages out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete message, `Ok(None)` when more bytes are needed.
    pub fn decode<T: DeserializeOwned>(&mut self) -> Result<Option<T>, IpcError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(IpcError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let msg = postcard::from_bytes(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        Ok(Some(msg?))
    }

    /// True when no partial frame is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// What a child tells the master on its status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildState {
    /// Ready to accept a new client (Postfix MASTER_STAT_AVAIL).
    Available,
    /// Busy with a client and not accepting more right now (MASTER_STAT_TAKEN).
    Taken,
    /// Still accepting, but near `max_use`: rmaster starts its successor now and counts it
    /// as not available, so no client waits for a process start when it stops accepting
    /// (about 3.5 ms for smtpd under load, every 100 clients).
    Retiring,
}

/// One status-pipe message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildStatus {
    pub pid: u32,
    pub generation: u64,
    pub state: ChildState,
    /// Clients served so far.
    pub uses: u64,
}

/// What a child learns from the master at exec, through `RPOST_*` environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEnv {
    /// master.cf service name (first column), e.g. `smtp` or `127.0.0.1:2525`.
    pub service: String,
    /// master.cf service type, e.g. `inet`.
    pub kind: String,
    /// Configuration directory the master read.
    pub config_dir: PathBuf,
    /// Number of inherited listening descriptors, starting at [`ChildEnv::LISTEN_FD_START`].
    pub listen_fds: u32,
    /// master.cf unpriv column: drop to mail_owner.
    pub unpriv: bool,
    /// master.cf chroot column: chroot into queue_directory.
    pub chroot: bool,
    /// The master's configuration generation this child was started under.
    pub generation: u64,
}

impl ChildEnv {
    /// Descriptor of the status pipe in the child.
    pub const STATUS_FD: i32 = 3;
    /// Descriptor of the sealed main.cf snapshot the master loaded (read with pread: the
    /// file offset is shared between children).
    pub const CONFIG_FD: i32 = 4;
    /// First inherited listening descriptor in the child.
    pub const LISTEN_FD_START: i32 = 5;

    /// The environment variables that carry this value.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RPOST_SERVICE", self.service.clone()),
            ("RPOST_SERVICE_TYPE", self.kind.clone()),
            ("RPOST_CONFIG", self.config_dir.display().to_string()),
            ("RPOST_LISTEN_FDS", self.listen_fds.to_string()),
            ("RPOST_UNPRIV", yn(self.unpriv).into()),
            ("RPOST_CHROOT", yn(self.chroot).into()),
            ("RPOST_GENERATION", self.generation.to_string()),
        ]
    }

    /// Reads the value back with a lookup function (normally `std::env::var`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ChildEnv, IpcError> {
        let var = |name: &'static str| get(name).ok_or(IpcError::Env(name));
        let flag = |name: &'static str| match var(name)?.as_str() {
            "y" => Ok(true),
            "n" => Ok(false),
            _ => Err(IpcError::Env(name)),
        };
        let num = |name: &'static str| var(name)?.parse::<u64>().map_err(|_| IpcError::Env(name));
        Ok(ChildEnv {
            service: var("RPOST_SERVICE")?,
            kind: var("RPOST_SERVICE_TYPE")?,
            config_dir: PathBuf::from(var("RPOST_CONFIG")?),
            listen_fds: u32::try_from(num("RPOST_LISTEN_FDS")?).map_err(|_| IpcError::Env("RPOST_LISTEN_FDS"))?,
            unpriv: flag("RPOST_UNPRIV")?,
            chroot: flag("RPOST_CHROOT")?,
            generation: num("RPOST_GENERATION")?,
        })
    }

    /// Reads the value from this process's environment.
    pub fn from_env() -> Result<ChildEnv, IpcError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

fn yn(b: bool) -> &'static str {
    if b { "y" } else { "n" }
}

/// Requests on the master control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Report services and children.
    Status,
}

/// Replies on the master control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    Status(MasterStatus),
    Error(String),
}

/// Snapshot of a running master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatus {
    pub pid: u32,
    /// Seconds since the Unix epoch when the master started.
    pub started: u64,
    /// Incremented by every successful reload.
    pub generation: u64,
    pub config_dir: String,
    pub services: Vec<ServiceStatus>,
}

/// One master.cf service as the master runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub kind: String,
    pub command: String,
    /// Bound addresses or socket paths.
    pub listen: Vec<String>,
    /// 0 means no limit.
    pub maxproc: u32,
    /// Seconds left of a start-up throttle, if throttled.
    pub throttled_for: Option<u64>,
    pub children: Vec<ChildInfo>,
}

/// One child process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    pub pid: u32,
    pub generation: u64,
    /// `available`, `busy` or `draining`.
    pub state: String,
    /// Clients served so far.
    pub uses: u64,
    /// Seconds since the Unix epoch when it was started.
    pub started: u64,
}

/// qmgr -> delivery agent (the `smtp`, `lmtp`, `relay` ... services of master.cf, run by
/// smtp-client): deliver these recipients of one queue file to one next hop. One request per
/// connection to `private/<transport>`; the agent answers with one [`DeliveryResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRequest {
    /// Queue ID; the file is `<queue_directory>/<queue_dir>/<queue_id>`.
    pub queue_id: String,
    /// Spool subdirectory holding the file (normally `active`).
    pub queue_dir: String,
    /// master.cf service name of the transport (`smtp`, `lmtp`, `relay`, ...).
    pub transport: String,
    /// Postfix next-hop syntax: `example.com` (MX lookup), `[host]:port` (no MX lookup),
    /// `unix:private/lmtp-deliver` or `inet:host:port` (LMTP).
    pub nexthop: String,
    /// Envelope sender; "" for the null sender.
    pub sender: String,
    pub recipients: Vec<DeliveryRecipient>,
    /// The message may carry 8-bit content / needs SMTPUTF8 downstream.
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// DSN ENVID and RET, passed on to a DSN-capable next hop.
    pub envid: Option<String>,
    pub ret_full: Option<bool>,
}

/// One recipient of a [`DeliveryRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecipient {
    /// Index of the recipient in the queue file (for marking it done).
    pub index: u32,
    pub address: String,
    /// DSN ORCPT as stored (`rfc822;addr`), if any.
    pub orcpt: Option<String>,
    /// DSN NOTIFY bits (NEVER 1, SUCCESS 2, FAILURE 4, DELAY 8), if given.
    pub notify: Option<u8>,
}

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Accepted by the next hop (2xx) or stored.
    Sent,
    /// Temporary failure (4xx, connection problems): retry later.
    Deferred,
    /// Permanent failure (5xx): bounce to the sender.
    Bounced,
}

/// Per-recipient result of a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientStatus {
    pub index: u32,
    pub outcome: Outcome,
    /// Enhanced status code, e.g. `2.0.0`, `4.4.1`, `5.1.1`.
    pub dsn: String,
    /// `host[addr]:port` or the socket path that answered, `none` if nobody did.
    pub relay: String,
    /// Human-readable reason in Postfix log style, e.g.
    /// `250 2.0.0 <x> Saved` or `connect to host[1.2.3.4]:25: Connection refused`.
    pub reason: String,
    /// Sent, and the next hop advertised DSN (RFC 3461), so it got our NOTIFY/ORCPT and takes
    /// over the delivery status notifications: qmgr sends no "relayed" report of its own for
    /// a NOTIFY=SUCCESS recipient. False for final deliveries (LMTP, local) and failures.
    #[serde(default)]
    pub next_hop_dsn: bool,
}

/// The agent's answer to a [`DeliveryRequest`]: one status per requested recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryResponse {
    pub statuses: Vec<RecipientStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_survive_every_split() {
        let msgs = [
            ChildStatus { pid: 1, generation: 7, state: ChildState::Available, uses: 0 },
            ChildStatus { pid: 99999, generation: 0, state: ChildState::Taken, uses: 12345 },
            ChildStatus { pid: 2, generation: 1, state: ChildState::Retiring, uses: 75 },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend(encode(m).unwrap());
        }
        for split in 0..=wire.len() {
            let mut dec = FrameDecoder::new();
            let mut got = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                dec.feed(part);
                while let Some(m) = dec.decode::<ChildStatus>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "split at {split}");
            assert!(dec.is_empty());
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation() {
        let mut dec = FrameDecoder::new();
        dec.feed(&u32::MAX.to_be_bytes());
        assert!(matches!(dec.decode::<ChildStatus>(), Err(IpcError::TooLarge(_))));
    }

    #[test]
    fn garbage_body_is_an_error() {
        let mut dec = FrameDecoder::new();
        dec.feed(&[0, 0, 0, 1, 0xff]);
        assert!(matches!(dec.decode::<ControlResponse>(), Err(IpcError::Decode(_))));
    }

    #[test]
    fn child_env_round_trips() {
        let env = ChildEnv {
            service: "127.0.0.1:2525".into(),
            kind: "inet".into(),
            config_dir: "/etc/rpost".into(),
            listen_fds: 2,
            unpriv: true,
            chroot: false,
            generation: 3,
        };
        let vars: std::collections::HashMap<_, _> = env.to_env().into_iter().collect();
        let back = ChildEnv::from_lookup(|k| vars.get(k).cloned()).unwrap();
        assert_eq!(back, env);
        assert!(ChildEnv::from_lookup(|_| None).is_err());
    }

    #[test]
    fn control_messages_round_trip() {
        let status = ControlResponse::Status(MasterStatus {
            pid: 42,
            started: 1,
            generation: 2,
            config_dir: "/etc/rpost".into(),
            services: vec![ServiceStatus {
                name: "smtp".into(),
                kind: "inet".into(),
                command: "smtpd".into(),
                listen: vec!["0.0.0.0:25".into()],
                maxproc: 100,
                throttled_for: None,
                children: vec![ChildInfo { pid: 43, generation: 2, state: "available".into(), uses: 5, started: 1 }],
            }],
        });
        let mut dec = FrameDecoder::new();
        dec.feed(&encode(&status).unwrap());
        assert_eq!(dec.decode::<ControlResponse>().unwrap(), Some(status));
    }
}

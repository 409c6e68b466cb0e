//! One delivery request from qmgr: read the queue file, connect to the next hop, run the
//! session, log one line per recipient in Postfix's shape, answer with one status per
//! recipient. The queue file is only read; qmgr marks recipients done.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rpost_ipc::{DeliveryRequest, DeliveryResponse, FrameDecoder, Outcome, RecipientStatus};
use rpost_queue::{QueueDir, QueueFile, QueueId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use crate::driver::{Content, converse, limit};
use crate::nexthop::{self, Target};
use crate::session::{self, RcptResult, Session};
use crate::settings::{ProtoSettings, Settings};

/// Longest reason kept in a response when the full ones do not fit in one IPC frame.
const SHORT_REASON: usize = 200;

/// Serves one qmgr connection: one [`DeliveryRequest`] in, one [`DeliveryResponse`] out.
pub async fn serve<S>(settings: &Settings, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 8192];
    let req: DeliveryRequest = loop {
        match dec.decode() {
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("bad delivery request: {e}");
                return;
            }
        }
        match limit(Some(settings.ipc_timeout), stream.read(&mut buf)).await {
            Ok(Ok(0)) => {
                if !dec.is_empty() {
                    tracing::warn!("premature end-of-input on delivery request");
                }
                return;
            }
            Ok(Ok(n)) => dec.feed(&buf[..n]),
            Ok(Err(e)) => {
                tracing::warn!("read delivery request: {e}");
                return;
            }
            Err(()) => {
                tracing::warn!("timeout reading the delivery request");
                return;
            }
        }
    };
    let resp = deliver(settings, &req).await;
    let frame = match rpost_ipc::encode(&resp) {
        Ok(f) => f,
        Err(_) => {
            // Hundreds of recipients with long server replies: keep the outcomes, cut the words.
            let mut short = resp.clone();
            for s in &mut short.statuses {
                s.reason = clip(&s.reason, SHORT_REASON);
            }
            match rpost_ipc::encode(&short) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("{}: cannot send the delivery response: {e}", req.queue_id);
                    return;
                }
            }
        }
    };
    let sent = async {
        stream.write_all(&frame).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    match limit(Some(settings.ipc_timeout), sent).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("{}: send delivery response: {e}", req.queue_id),
        Err(()) => tracing::warn!("{}: timeout sending the delivery response", req.queue_id),
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Postfix's compact delay format: two significant digits or so (`0.12`, `1.5`, `25`).
pub fn fmt_delay(d: Duration) -> String {
    let x = d.as_secs_f64();
    let s = if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// Context of one request, for the log lines and the response.
struct Attempt<'a> {
    req: &'a DeliveryRequest,
    started: Instant,
    /// Arrival to the start of this attempt.
    before: Duration,
    /// The original recipient address of each requested recipient, when known.
    origs: Vec<Option<String>>,
}

impl Attempt<'_> {
    fn respond(&self, results: Vec<RcptResult>, relay: &str, handshake: Option<Instant>) -> DeliveryResponse {
        let end = Instant::now();
        let (conn, xfer) = match handshake {
            Some(h) => (h.saturating_duration_since(self.started), end.saturating_duration_since(h)),
            None => (end.saturating_duration_since(self.started), Duration::ZERO),
        };
        let total = self.before + conn + xfer;
        let statuses = self
            .req
            .recipients
            .iter()
            .zip(results)
            .zip(&self.origs)
            .map(|((rcpt, r), orig)| {
                let orig_to = match orig {
                    Some(o) if !o.is_empty() && *o != rcpt.address => format!("orig_to=<{o}>, "),
                    _ => String::new(),
                };
                let status = match r.outcome {
                    Outcome::Sent => "sent",
                    Outcome::Deferred => "deferred",
                    Outcome::Bounced => "bounced",
                };
                tracing::info!(
                    "{}: to=<{}>, {orig_to}relay={relay}, delay={}, delays={}/0/{}/{}, dsn={}, status={status} ({})",
                    self.req.queue_id,
                    rcpt.address,
                    fmt_delay(total),
                    fmt_delay(self.before),
                    fmt_delay(conn),
                    fmt_delay(xfer),
                    r.dsn,
                    r.reason,
                );
                RecipientStatus {
                    index: rcpt.index,
                    outcome: r.outcome,
                    dsn: r.dsn,
                    relay: relay.to_owned(),
                    reason: r.reason,
                }
            })
            .collect();
        DeliveryResponse { statuses }
    }

    fn fail_all(&self, outcome: Outcome, dsn: &str, reason: &str, relay: &str) -> DeliveryResponse {
        let r = RcptResult { outcome, dsn: dsn.into(), reason: reason.into() };
        self.respond(vec![r; self.req.recipients.len()], relay, None)
    }
}

/// Reads and verifies the queue file named by the request (on a blocking thread).
async fn open_queue_file(settings: &Settings, req: &DeliveryRequest) -> Result<QueueFile, String> {
    // Only the spool's own directory names: never a path of qmgr's choosing.
    if !QueueDir::ALL.iter().any(|d| d.name() == req.queue_dir) {
        return Err(format!("bad queue directory {:?} in delivery request", req.queue_dir));
    }
    let id = QueueId::parse(&req.queue_id).map_err(|e| e.to_string())?;
    let path = settings.queue_root.join(&req.queue_dir).join(id.as_str());
    tokio::task::spawn_blocking(move || QueueFile::open(&path))
        .await
        .map_err(|e| format!("reading the queue file: {e}"))?
        .map_err(|e| e.to_string())
}

/// Delivers one request and logs the outcome of each recipient.
pub async fn deliver(settings: &Settings, req: &DeliveryRequest) -> DeliveryResponse {
    let started = Instant::now();
    if req.recipients.is_empty() {
        return DeliveryResponse { statuses: Vec::new() };
    }
    let file = open_queue_file(settings, req).await;
    let (before, origs) = match &file {
        Ok(f) => (
            SystemTime::now().duration_since(f.envelope.arrival).unwrap_or_default(),
            req.recipients
                .iter()
                .map(|r| f.envelope.recipients.get(r.index as usize).map(|e| e.original.clone()))
                .collect(),
        ),
        Err(_) => (Duration::ZERO, vec![None; req.recipients.len()]),
    };
    let attempt = Attempt { req, started, before, origs };
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("{}: {e}", req.queue_id);
            return attempt.fail_all(Outcome::Deferred, "4.3.0", &format!("cannot read the queue file: {e}"), "none");
        }
    };
    let hop = match nexthop::parse(&req.nexthop, settings.lmtp_service, settings.ports, &settings.queue_root) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("{}: {e}", req.queue_id);
            return attempt.fail_all(Outcome::Deferred, "4.3.5", &e, "none");
        }
    };
    let proto = settings.proto(hop.protocol);
    if proto.tls_required {
        let reason = "TLS is required but not implemented yet";
        return attempt.fail_all(Outcome::Deferred, "4.7.4", reason, "none");
    }
    let content: Content = match file.content_reader() {
        Ok(r) => Box::new(r),
        Err(e) => {
            return attempt.fail_all(Outcome::Deferred, "4.3.0", &format!("cannot read the queue file: {e}"), "none");
        }
    };
    let cfg = session::Config {
        protocol: hop.protocol,
        helo_name: proto.helo_name.clone(),
        myhostname: settings.myhostname.clone(),
        nexthop: req.nexthop.clone(),
        skip_5xx_greeting: proto.skip_5xx_greeting,
        skip_quit_response: proto.skip_quit_response,
    };
    let msg = session::Message {
        sender: req.sender.clone(),
        recipients: req
            .recipients
            .iter()
            .map(|r| session::Rcpt { address: r.address.clone(), notify: r.notify, orcpt: r.orcpt.clone() })
            .collect(),
        size: file.content_len(),
        eight_bit: req.eight_bit,
        smtputf8: req.smtputf8,
        envid: req.envid.clone(),
        ret_full: req.ret_full,
    };
    let t = &proto.timeouts;
    match &hop.target {
        Target::Domain(domain) => {
            let reason = format!("MX lookup for {domain} not implemented yet (use relayhost = [host]:port)");
            attempt.fail_all(Outcome::Deferred, "4.4.3", &reason, "none")
        }
        Target::Unix { shown, path } => {
            let peer = format!("{}[{shown}]", settings.myhostname);
            match limit(t.connect, UnixStream::connect(path)).await {
                Ok(Ok(mut stream)) => {
                    let mut session = Session::new(cfg, msg, peer.clone());
                    let hs = converse(&mut stream, &mut session, content, t).await;
                    attempt.respond(session.results(), &peer, hs)
                }
                Ok(Err(e)) => {
                    let reason = format!("connect to {peer}: {}", os_error(&e));
                    attempt.fail_all(Outcome::Deferred, "4.4.1", &reason, "none")
                }
                Err(()) => {
                    let reason = format!("connect to {peer}: Connection timed out");
                    attempt.fail_all(Outcome::Deferred, "4.4.1", &reason, "none")
                }
            }
        }
        Target::Tcp { host, port } => match connect_tcp(settings, proto, host, *port).await {
            Ok((mut stream, addr)) => {
                let peer = format!("{host}[{}]", addr.ip());
                let relay = format!("{peer}:{}", addr.port());
                let mut session = Session::new(cfg, msg, peer);
                let hs = converse(&mut stream, &mut session, content, t).await;
                attempt.respond(session.results(), &relay, hs)
            }
            Err((dsn, reason)) => attempt.fail_all(Outcome::Deferred, dsn, &reason, "none"),
        },
    }
}

/// `Connection refused`, without Rust's ` (os error 111)`.
fn os_error(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_owned(),
        _ => s,
    }
}

/// Resolves `host` and connects to its addresses in turn. Errors are `(dsn, reason)`.
async fn connect_tcp(
    settings: &Settings,
    proto: &ProtoSettings,
    host: &str,
    port: u16,
) -> Result<(TcpStream, SocketAddr), (&'static str, String)> {
    let mut addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match tokio::net::lookup_host((host, port)).await {
            Ok(it) => it.collect(),
            Err(e) => {
                return Err((
                    "4.4.3",
                    format!("Host or domain name not found. Name service error for name={host}: {}", os_error(&e)),
                ));
            }
        },
    };
    addrs.retain(|a| (a.is_ipv4() && settings.ipv4) || (a.is_ipv6() && settings.ipv6));
    let mut seen = Vec::new();
    addrs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    if settings.address_limit > 0 {
        addrs.truncate(settings.address_limit);
    }
    if addrs.is_empty() {
        let reason = format!("Host or domain name not found. Name service error for name={host}: no usable address");
        return Err(("4.4.3", reason));
    }
    let mut last = String::new();
    for addr in addrs {
        match limit(proto.timeouts.connect, connect_one(proto, addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(e)) => {
                last = format!("connect to {host}[{}]:{}: {}", addr.ip(), addr.port(), os_error(&e));
            }
            Err(()) => last = format!("connect to {host}[{}]:{}: Connection timed out", addr.ip(), addr.port()),
        }
        tracing::info!("{last}");
    }
    Err(("4.4.1", last))
}

async fn connect_one(proto: &ProtoSettings, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let (socket, bind) =
        if addr.is_ipv4() { (TcpSocket::new_v4()?, proto.bind4) } else { (TcpSocket::new_v6()?, proto.bind6) };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_format() {
        let f = |s: f64| fmt_delay(Duration::from_secs_f64(s));
        assert_eq!(f(0.0), "0");
        assert_eq!(f(0.004), "0");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(0.123), "0.12");
        assert_eq!(f(1.0), "1");
        assert_eq!(f(1.26), "1.3");
        assert_eq!(f(25.2), "25");
        assert_eq!(f(1212.0), "1212");
    }

    #[test]
    fn os_errors_read_like_postfix() {
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(os_error(&e), "Connection refused");
        assert_eq!(clip("äbc", 1), "");
        assert_eq!(clip("abc", 2), "ab");
    }
}

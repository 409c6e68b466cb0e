//! One delivery request from qmgr: read the queue file, connect to the next hop, run the
//! session, log one line per recipient in Postfix's shape, answer with one status per
//! recipient. The queue file is only read; qmgr marks recipients done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rpost_ipc::{DeliveryRequest, DeliveryResponse, Outcome, RecipientStatus};
use rpost_queue::{QueueDir, QueueFile, QueueId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use rpost_daemon::delivery::{self, fmt_delay};

use crate::cache::{Cache, Conn};
use crate::driver::{Content, Stream, TlsClient, converse_from, limit, rset};
use crate::mx::{self, Policy};
use crate::nexthop::{self, Target};
use crate::session::{self, Caps, RcptResult, Session};
use crate::settings::{ProtoSettings, Settings};

/// Everything a delivery needs that lives as long as the process.
#[derive(Debug)]
pub struct Agent {
    pub settings: Settings,
    pub dns: rpost_dns::Resolver,
    pub cache: Arc<Cache<TcpStream>>,
    /// LMTP sessions over UNIX-domain sockets (lmtp-deliver, Dovecot's lmtp).
    pub unix_cache: Arc<Cache<UnixStream>>,
}

impl Agent {
    pub fn new(settings: Settings) -> Agent {
        let dns = rpost_dns::Resolver::new(&settings.dns_servers);
        let cache = Arc::new(Cache::new(settings.cache.clone()));
        let unix_cache = Arc::new(Cache::new(settings.lmtp_cache.clone()));
        Agent { settings, dns, cache, unix_cache }
    }
}

/// Serves one qmgr connection: one [`DeliveryRequest`] in, one [`DeliveryResponse`] out.
pub async fn serve<S>(agent: &Agent, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = agent.settings.ipc_timeout;
    let Some(req) = delivery::read_request(&mut stream, timeout).await else { return };
    let resp = deliver(agent, &req).await;
    delivery::send_response(&mut stream, &resp, &req.queue_id, timeout).await;
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

/// The final word on one recipient: the result, the server it came from and how many
/// deliveries that connection had made (`conn_use=` when more than one).
#[derive(Debug, Clone)]
struct Final {
    result: RcptResult,
    relay: String,
    conn_use: u32,
    /// Accepted by a server that advertised DSN (it got our NOTIFY and reports from here).
    next_hop_dsn: bool,
}

impl Final {
    fn new(result: RcptResult, relay: &str, conn_use: u32) -> Final {
        Final { result, relay: relay.to_owned(), conn_use, next_hop_dsn: false }
    }

    /// A result of a session with a server whose capabilities say `dsn`.
    fn from_session(result: RcptResult, relay: &str, conn_use: u32, dsn: bool) -> Final {
        let next_hop_dsn = dsn && result.outcome == Outcome::Sent;
        Final { next_hop_dsn, ..Final::new(result, relay, conn_use) }
    }
}

impl Attempt<'_> {
    fn respond(&self, results: Vec<Final>, handshake: Option<Instant>) -> DeliveryResponse {
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
            .map(|((rcpt, f), orig)| {
                let orig_to = match orig {
                    Some(o) if !o.is_empty() && *o != rcpt.address => format!("orig_to=<{o}>, "),
                    _ => String::new(),
                };
                let conn_use = if f.conn_use > 1 { format!("conn_use={}, ", f.conn_use) } else { String::new() };
                let r = f.result;
                let status = match r.outcome {
                    Outcome::Sent => "sent",
                    Outcome::Deferred => "deferred",
                    Outcome::Bounced => "bounced",
                };
                tracing::info!(
                    "{}: to=<{}>, {orig_to}relay={}, {conn_use}delay={}, delays={}/0/{}/{}, dsn={}, status={status} ({})",
                    self.req.queue_id,
                    rcpt.address,
                    f.relay,
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
                    relay: f.relay,
                    reason: r.reason,
                    next_hop_dsn: f.next_hop_dsn,
                }
            })
            .collect();
        DeliveryResponse { statuses }
    }

    fn fail_all(&self, outcome: Outcome, dsn: &str, reason: &str, relay: &str) -> DeliveryResponse {
        let r = RcptResult { outcome, dsn: dsn.into(), reason: reason.into() };
        self.respond(vec![Final::new(r, relay, 1); self.req.recipients.len()], None)
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

/// A random number for shuffling equal MX preferences (std's per-instance random keys;
/// nothing here needs to be unpredictable to an attacker).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// Delivers one request and logs the outcome of each recipient.
pub async fn deliver(agent: &Agent, req: &DeliveryRequest) -> DeliveryResponse {
    let settings = &agent.settings;
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
    // A mandatory level whose client configuration could not be built (e.g. verify without
    // CA certificates) cannot be met by any server.
    if proto.tls_required && proto.tls_config.is_none() {
        let reason = format!(
            "TLS is required, but the TLS client is not usable: {}",
            proto.tls_problem.as_deref().unwrap_or("no configuration")
        );
        return attempt.fail_all(Outcome::Deferred, "4.7.5", &reason, "none");
    }
    let cfg = session::Config {
        protocol: hop.protocol,
        helo_name: proto.helo_name.clone(),
        myhostname: settings.myhostname.clone(),
        nexthop: req.nexthop.clone(),
        skip_5xx_greeting: proto.skip_5xx_greeting,
        skip_quit_response: proto.skip_quit_response,
        keep_open: false,
        tls: if proto.tls_config.is_some() { proto.tls } else { rpost_tls::ClientLevel::None },
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
        Target::Unix { shown, path } => {
            let peer = format!("{}[{shown}]", settings.myhostname);
            // TLS over a local socket is rare; such sessions quit instead of being cached.
            let tls_wanted = proto.tls_config.is_some() && proto.tls != rpost_tls::ClientLevel::None;
            let cache = &agent.unix_cache;
            let caching = !tls_wanted && cache.enabled_for(&req.nexthop);
            let mut reused = None;
            while caching && let Some(mut conn) = cache.take(&req.nexthop) {
                if cache.reusable(conn.born, conn.uses) && rset(&mut conn.stream, cache.rset_timeout()).await {
                    reused = Some(conn);
                    break;
                }
            }
            let (stream, resume, born, uses) = match reused {
                Some(c) => (c.stream, Some(c.caps), c.born, c.uses),
                None => match limit(t.connect, UnixStream::connect(path)).await {
                    Ok(Ok(stream)) => (stream, None, Instant::now(), 0),
                    Ok(Err(e)) => {
                        let reason = format!("connect to {peer}: {}", os_error(&e));
                        return attempt.fail_all(Outcome::Deferred, "4.4.1", &reason, "none");
                    }
                    Err(()) => {
                        let reason = format!("connect to {peer}: Connection timed out");
                        return attempt.fail_all(Outcome::Deferred, "4.4.1", &reason, "none");
                    }
                },
            };
            let content: Content = match file.content_reader() {
                Ok(r) => Box::new(r),
                Err(e) => {
                    let reason = format!("cannot read the queue file: {e}");
                    return attempt.fail_all(Outcome::Deferred, "4.3.0", &reason, "none");
                }
            };
            let mut stream = Stream::Plain(stream);
            let tls = proto.tls_config.clone().map(|config| TlsClient {
                config,
                server_name: "localhost".into(),
                relay: peer.clone(),
                level: proto.tls,
            });
            let mut cfg = cfg;
            cfg.keep_open = caching;
            let mut session = Session::new(cfg, msg, peer.clone());
            // A reused session's handshake is behind it: delays= counts none.
            let resumed_at = resume.is_some().then(Instant::now);
            let step = match resume {
                Some(caps) => session.resume(caps),
                None => session.start(),
            };
            let hs = converse_from(&mut stream, &mut session, step, content, t, tls.as_ref()).await;
            let uses = uses + 1;
            let dsn = session.caps().dsn;
            let results = session.results().into_iter().map(|r| Final::from_session(r, &peer, uses, dsn)).collect();
            if caching
                && session.reusable()
                && let Some(stream) = stream.into_plain()
            {
                let caps = session.caps().clone();
                cache.put(&req.nexthop, Conn { stream, host: peer, addr: None, caps, born, uses });
            }
            attempt.respond(results, resumed_at.or(hs))
        }
        Target::Tcp { .. } | Target::Domain(_) => {
            let mut tcp = TcpDelivery {
                agent,
                attempt: &attempt,
                file: &file,
                proto,
                cfg,
                msg,
                open: (0..req.recipients.len()).collect(),
                finals: vec![None; req.recipients.len()],
                soft: vec![None; req.recipients.len()],
                handshake: None,
            };
            tcp.run(&hop.target, hop.protocol).await;
            let last = tcp.last_failure();
            let TcpDelivery { finals, soft, handshake, .. } = tcp;
            let results = finals.into_iter().zip(soft).map(|(f, s)| f.or(s).unwrap_or_else(|| last.clone())).collect();
            attempt.respond(results, handshake)
        }
    }
}

/// One request over TCP: a cached connection, else the next hop's addresses in turn.
struct TcpDelivery<'a> {
    agent: &'a Agent,
    attempt: &'a Attempt<'a>,
    file: &'a QueueFile,
    proto: &'a ProtoSettings,
    cfg: session::Config,
    msg: session::Message,
    /// Recipients (request indexes) no server has given a final answer for.
    open: Vec<usize>,
    finals: Vec<Option<Final>>,
    /// The latest temporary failure of each open recipient, used when no server is left.
    soft: Vec<Option<Final>>,
    handshake: Option<Instant>,
}

/// What [`TcpDelivery::session_once`] asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    No,
    Plaintext,
}

/// Where a session runs.
struct Server {
    stream: TcpStream,
    host: String,
    addr: SocketAddr,
    born: Instant,
    /// Deliveries before this one.
    uses: u32,
    /// EHLO capabilities of a cached connection (the session skips the handshake).
    resume: Option<Caps>,
}

impl TcpDelivery<'_> {
    async fn run(&mut self, target: &Target, protocol: nexthop::Protocol) {
        let settings = &self.agent.settings;
        let cache = &self.agent.cache;
        let caching = protocol == nexthop::Protocol::Smtp && cache.enabled_for(&self.attempt.req.nexthop);
        let key = format!("{}:{}", protocol.name(), self.attempt.req.nexthop);
        if caching {
            while let Some(mut conn) = cache.take(&key) {
                if !cache.reusable(conn.born, conn.uses) || !rset(&mut conn.stream, cache.rset_timeout()).await {
                    // Too old, or the server went away while it was idle: a fresh connection.
                    continue;
                }
                let Some(addr) = conn.addr else { continue };
                self.handshake = Some(Instant::now());
                let server = Server {
                    stream: conn.stream,
                    host: conn.host,
                    addr,
                    born: conn.born,
                    uses: conn.uses,
                    resume: Some(conn.caps),
                };
                self.session(server, false, caching.then_some(key.as_str())).await;
                break;
            }
            if self.open.is_empty() {
                return;
            }
        }
        let port = match target {
            Target::Tcp { port, .. } => *port,
            _ => settings.ports.smtp,
        };
        let is_self = |ip| settings.own.contains(ip);
        let policy = Policy {
            ipv4: settings.ipv4,
            ipv6: settings.ipv6,
            address_limit: settings.address_limit,
            dns: settings.lookup_dns,
            native: settings.lookup_native,
            defer_if_no_mx_address: settings.defer_if_no_mx_address,
            is_self: &is_self,
            random: &random,
        };
        let candidates = match target {
            Target::Domain(domain) => mx::resolve_domain(&self.agent.dns, domain, &policy).await,
            Target::Tcp { host, .. } => mx::resolve_host(&self.agent.dns, host, &policy).await,
            Target::Unix { .. } => return,
        };
        let candidates = match candidates {
            Ok(c) => c,
            Err(f) => {
                let r = RcptResult { outcome: f.outcome, dsn: f.dsn, reason: f.reason };
                for &i in &self.open {
                    if f.outcome == Outcome::Bounced || self.soft[i].is_none() {
                        self.finals[i] = Some(Final::new(r.clone(), "none", 1));
                    }
                }
                self.open.clear();
                return;
            }
        };
        let mut sessions = 0;
        let mut connect_error: Option<String> = None;
        for (n, c) in candidates.iter().enumerate() {
            if self.open.is_empty() || (settings.session_limit > 0 && sessions >= settings.session_limit) {
                break;
            }
            let addr = SocketAddr::new(c.addr, port);
            let stream = match limit(self.proto.timeouts.connect, connect_one(self.proto, addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    let why = format!("connect to {}[{}]:{port}: {}", c.host, c.addr, os_error(&e));
                    tracing::info!("{why}");
                    connect_error = Some(why);
                    continue;
                }
                Err(()) => {
                    let why = format!("connect to {}[{}]:{port}: Connection timed out", c.host, c.addr);
                    tracing::info!("{why}");
                    connect_error = Some(why);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let last =
                n + 1 == candidates.len() || (settings.session_limit > 0 && sessions + 1 >= settings.session_limit);
            let server = Server { stream, host: c.host.clone(), addr, born: Instant::now(), uses: 0, resume: None };
            if self.session(server, last, caching.then_some(key.as_str())).await {
                sessions += 1;
            }
        }
        // Recipients no server answered for and never reached one: the last connect error.
        if let Some(why) = connect_error {
            let r = RcptResult { outcome: Outcome::Deferred, dsn: "4.4.1".into(), reason: why };
            for &i in &self.open {
                if self.soft[i].is_none() {
                    self.soft[i] = Some(Final::new(r.clone(), "none", 1));
                }
            }
        }
    }

    /// Runs one session with the open recipients. Returns whether it got past the
    /// handshake (it counts against smtp_mx_session_limit).
    async fn session(&mut self, server: Server, last: bool, cache_key: Option<&str>) -> bool {
        let (addr, host) = (server.addr, server.host.clone());
        let handshake = self.session_once(server, last, cache_key, self.cfg.tls).await;
        if handshake != Some(Retry::Plaintext) || self.open.is_empty() {
            return handshake == Some(Retry::No);
        }
        // Opportunistic TLS failed in the handshake: Postfix tries the same server again
        // without TLS.
        tracing::info!("{}: retrying {host}[{}]:{} without TLS", self.attempt.req.queue_id, addr.ip(), addr.port());
        match limit(self.proto.timeouts.connect, connect_one(self.proto, addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let server = Server { stream, host, addr, born: Instant::now(), uses: 0, resume: None };
                self.session_once(server, last, cache_key, rpost_tls::ClientLevel::None).await == Some(Retry::No)
            }
            _ => false,
        }
    }

    /// One session over one connection. `Some(No)`: it got past the handshake;
    /// `Some(Plaintext)`: the TLS handshake failed at `may`; `None`: no handshake.
    async fn session_once(
        &mut self,
        mut server: Server,
        last: bool,
        cache_key: Option<&str>,
        tls_level: rpost_tls::ClientLevel,
    ) -> Option<Retry> {
        let content: Content = match self.file.content_reader() {
            Ok(r) => Box::new(r),
            Err(e) => {
                let r = RcptResult {
                    outcome: Outcome::Deferred,
                    dsn: "4.3.0".into(),
                    reason: format!("cannot read the queue file: {e}"),
                };
                for i in std::mem::take(&mut self.open) {
                    self.finals[i] = Some(Final::new(r.clone(), "none", 1));
                }
                return None;
            }
        };
        let peer = format!("{}[{}]", server.host, server.addr.ip());
        let relay = format!("{peer}:{}", server.addr.port());
        let mut msg = self.msg.clone();
        msg.recipients = self.open.iter().map(|&i| self.msg.recipients[i].clone()).collect();
        let mut cfg = self.cfg.clone();
        cfg.tls = tls_level;
        // A session that ends up in TLS quits instead (the cache holds plaintext streams).
        cfg.keep_open = cache_key.is_some();
        let mut session = Session::new(cfg, msg, peer);
        let t = &self.proto.timeouts;
        let tls = match (&self.proto.tls_config, tls_level) {
            (Some(config), level) if level != rpost_tls::ClientLevel::None => Some(TlsClient {
                config: config.clone(),
                server_name: server.host.trim_start_matches('[').trim_end_matches(']').to_string(),
                relay: relay.clone(),
                level,
            }),
            _ => None,
        };
        let mut stream = Stream::Plain(server.stream);
        let step = match server.resume.take() {
            Some(caps) => session.resume(caps),
            None if self.proto.tls_wrapper => match &tls {
                // smtp_tls_wrappermode: the handshake comes before the greeting.
                Some(c) => match stream.start_tls(c, t.starttls).await {
                    Ok(_) => session.start(),
                    Err(e) => session.tls_failed(&e),
                },
                None => session.tls_failed("TLS is off for this session"),
            },
            None => session.start(),
        };
        let resumed = server.uses > 0;
        let hs = converse_from(&mut stream, &mut session, step, content, t, tls.as_ref()).await;
        if !resumed {
            self.handshake = hs.or(self.handshake);
        }
        let handshake = resumed || hs.is_some();
        let fallback = session.tls_fallback() && !self.proto.tls_wrapper;
        let uses = server.uses + 1;
        let mut logged = Vec::new();
        let open = std::mem::take(&mut self.open);
        let dsn = session.caps().dsn;
        for (&i, r) in open.iter().zip(session.results()) {
            if r.outcome == Outcome::Deferred {
                // Another server may take it (Postfix keeps soft failures for the next MX).
                if !last && !logged.contains(&r.reason) {
                    tracing::info!("{}: {}", self.attempt.req.queue_id, r.reason);
                    logged.push(r.reason.clone());
                }
                self.soft[i] = Some(Final::new(r, &relay, uses));
                self.open.push(i);
            } else {
                self.finals[i] = Some(Final::from_session(r, &relay, uses, dsn));
            }
        }
        if let Some(key) = cache_key
            && session.reusable()
            && let Some(stream) = stream.into_plain()
        {
            let caps = session.caps().clone();
            let conn = Conn { stream, host: server.host, addr: Some(server.addr), caps, born: server.born, uses };
            self.agent.cache.put(key, conn);
        }
        if fallback { Some(Retry::Plaintext) } else { handshake.then_some(Retry::No) }
    }

    /// What recipients that no server settled get when nothing else is known.
    fn last_failure(&self) -> Final {
        let r = RcptResult {
            outcome: Outcome::Deferred,
            dsn: "4.4.1".into(),
            reason: format!("no server for {} could be reached", self.attempt.req.nexthop),
        };
        Final::new(r, "none", 1)
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
    fn os_errors_read_like_postfix() {
        let e = std::io::Error::from_raw_os_error(111);
        assert_eq!(os_error(&e), "Connection refused");
    }
}

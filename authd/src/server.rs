//! The tokio side: one task per client connection, one task per authentication request
//! (so a request waiting out its penalty or failure delay holds up nobody, not even other
//! requests on the same connection), password checks on blocking threads.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rpost_auth_proto::client::code;
use rpost_auth_proto::{
    ClientEvent, Failure, MasterReply, MasterRequest, MasterServer, Mech, ServerConnection, ServerHello, ServerReply,
    b64_decode, b64_encode, printable,
};
use rpost_password::Credentials;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::db::{Db, Lookup};
use crate::mech::{self, Exchange, Proof, ScramKeys, Step};
use crate::penalty::{self, Penalty};

/// How long a request waits for the client's next response (Dovecot: AUTH_REQUEST_TIMEOUT).
pub const CONTINUE_TIMEOUT: Duration = Duration::from_secs(60);

/// authd's settings from main.cf.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Offered mechanisms, upper case, in `auth_mechanisms` order.
    pub mechs: Vec<String>,
    pub failure_delay: Duration,
    pub disable_plaintext: bool,
    /// For the CRAM-MD5 challenge.
    pub hostname: String,
}

impl Settings {
    pub fn from_params(p: &rpost_config::Params) -> Result<Settings, rpost_config::ConfigError> {
        let mut mechs = Vec::new();
        for m in p.get_list("auth_mechanisms")? {
            let up = m.to_ascii_uppercase();
            if mech::KNOWN.iter().any(|(n, _)| *n == up) {
                if !mechs.contains(&up) {
                    mechs.push(up);
                }
            } else {
                tracing::warn!("auth_mechanisms: {} is not supported, ignored", printable(&m));
            }
        }
        Ok(Settings {
            mechs,
            failure_delay: p.get_time("auth_failure_delay")?,
            disable_plaintext: p.get_bool("disable_plaintext_auth")?,
            hostname: p.get("myhostname")?,
        })
    }
}

/// State shared by every connection of the process.
#[derive(Debug)]
pub struct Auth {
    pub settings: Settings,
    pub db: Db,
    pub penalty: Penalty,
    cuid: AtomicU32,
}

impl Auth {
    pub fn new(settings: Settings, db: Db) -> Auth {
        Auth { settings, db, penalty: Penalty::new(), cuid: AtomicU32::new(0) }
    }

    fn hello(&self) -> ServerHello {
        let mut cookie = [0u8; 16];
        let _ = getrandom::getrandom(&mut cookie);
        ServerHello {
            mechs: self
                .settings
                .mechs
                .iter()
                .map(|m| Mech {
                    name: m.clone(),
                    flags: mech::KNOWN
                        .iter()
                        .find(|(n, _)| n == m)
                        .map_or(vec![], |(_, f)| f.iter().map(|s| s.to_string()).collect()),
                })
                .collect(),
            spid: std::process::id(),
            cuid: self.cuid.fetch_add(1, Ordering::Relaxed) + 1,
            cookie: cookie.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// Serves one auth client connection until it closes or breaks the protocol.
pub async fn serve_client<S: AsyncRead + AsyncWrite + Unpin>(auth: Arc<Auth>, stream: S) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    if wr.write_all(auth.hello().to_lines().as_bytes()).await.is_err() {
        return;
    }
    let mut conn = ServerConnection::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerReply>();
    let mut conts: HashMap<u32, mpsc::UnboundedSender<String>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 8192];
    loop {
        tokio::select! {
            n = rd.read(&mut buf) => {
                let n = match n { Ok(0) | Err(_) => break, Ok(n) => n };
                conn.feed(&buf[..n]);
                loop {
                    match conn.next_event() {
                        Ok(None) => break,
                        Ok(Some(ClientEvent::Auth(req))) => {
                            let (ctx, crx) = mpsc::unbounded_channel();
                            conts.insert(req.id, ctx);
                            tasks.spawn(run_request(auth.clone(), req, crx, tx.clone()));
                        }
                        Ok(Some(ClientEvent::Cont { id, data })) => {
                            if let Some(c) = conts.get(&id) {
                                let _ = c.send(data);
                            }
                        }
                        Ok(Some(ClientEvent::Immediate(r))) => {
                            if wr.write_all(conn.reply(&r).as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!("auth client: {e}: disconnecting");
                            return;
                        }
                    }
                }
            }
            Some(reply) = rx.recv() => {
                if !matches!(reply, ServerReply::Cont { .. }) {
                    conts.remove(&reply.id());
                }
                if wr.write_all(conn.reply(&reply).as_bytes()).await.is_err() {
                    return;
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Client gone: its requests are abandoned (the JoinSet aborts them on drop).
}

/// Runs one request and sends its final reply.
async fn run_request(
    auth: Arc<Auth>,
    req: rpost_auth_proto::AuthRequest,
    cont: mpsc::UnboundedReceiver<String>,
    tx: mpsc::UnboundedSender<ServerReply>,
) {
    let reply = request(&auth, &req, cont, &tx).await;
    let _ = tx.send(reply);
}

fn fail(id: u32, reason: Option<&str>) -> ServerReply {
    ServerReply::Fail(Failure { id, reason: reason.map(str::to_string), ..Failure::default() })
}

/// Whether the client's connection counts as local for `disable_plaintext_auth` (Dovecot: the
/// remote address is a loopback address or the local address itself).
fn local_connection(req: &rpost_auth_proto::AuthRequest) -> bool {
    match req.remote_ip() {
        None => true,
        Some(rip) => {
            rip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) || req.local_ip().is_some_and(|lip| lip == rip)
        }
    }
}

enum Outcome {
    Ok,
    Mismatch,
    UnknownUser,
    /// The stored password cannot serve this mechanism (e.g. CRAM-MD5 against a hash).
    NoCredentials(&'static str),
    TempFail(String),
}

async fn request(
    auth: &Arc<Auth>,
    req: &rpost_auth_proto::AuthRequest,
    mut cont: mpsc::UnboundedReceiver<String>,
    tx: &mpsc::UnboundedSender<ServerReply>,
) -> ServerReply {
    let id = req.id;
    let mech_name = req.mech.to_ascii_uppercase();
    let rip = req.remote_ip().unwrap_or("");
    let service = req.service().to_string();
    if !auth.settings.mechs.contains(&mech_name) {
        return fail(id, Some("Unsupported authentication mechanism."));
    }
    let plaintext = mech::KNOWN.iter().any(|(n, f)| *n == mech_name && f.contains(&"plaintext"));
    if plaintext && auth.settings.disable_plaintext && !req.secured() && !local_connection(req) {
        tracing::info!(
            "{mech_name}(?,{}): plaintext authentication disallowed on a non-secure connection",
            printable(rip)
        );
        return fail(id, Some("Plaintext authentication disallowed on non-secure (SSL/TLS) connections."));
    }
    let ip = if req.no_penalty() { None } else { penalty::key(rip) };
    if let Some(ip) = ip {
        let d = auth.penalty.delay(ip, Instant::now());
        if !d.is_zero() {
            tracing::debug!("{}: penalty {}s before authenticating", printable(rip), d.as_secs());
            tokio::time::sleep(d).await;
        }
    }
    let Some(mut ex) = Exchange::new(&mech_name, &auth.settings.hostname) else {
        return fail(id, Some("Unsupported authentication mechanism."));
    };
    let initial = match req.initial_response() {
        None => None,
        Some(r) => match b64_decode(r) {
            Some(d) => Some(d),
            None => {
                return ServerReply::Fail(Failure {
                    id,
                    reason: Some("Invalid base64 data in initial response".into()),
                    code: Some(code::INVALID_BASE64.into()),
                    ..Failure::default()
                });
            }
        },
    };
    let canon = |authcid: &str| -> Result<String, ServerReply> {
        auth.db.canonical_user(authcid, &service).map_err(|e| {
            tracing::error!("auth_username_format: {e}");
            temp_fail(id)
        })
    };
    let mut step = ex.start(initial);
    let (user, outcome) = loop {
        match step {
            Step::Challenge(c) => match exchange(id, &c, &mut cont, tx, &mech_name, rip).await {
                Ok(bytes) => step = ex.step(&bytes),
                Err(r) => return r,
            },
            Step::Fail(reason) => {
                tracing::info!("{mech_name}(?,{}): {reason}", printable(rip));
                return failed(auth, id, ip, rip, None, Some(reason)).await;
            }
            Step::Check { authcid, proof } => {
                let user = match canon(&authcid) {
                    Ok(u) => u,
                    Err(r) => return r,
                };
                let (a, u) = (auth.clone(), user.clone());
                let outcome = match tokio::task::spawn_blocking(move || check(&a.db, &u, proof)).await {
                    Ok(o) => o,
                    Err(e) => Outcome::TempFail(format!("password check task: {e}")),
                };
                break (user, outcome);
            }
            Step::Lookup { authcid } => {
                let user = match canon(&authcid) {
                    Ok(u) => u,
                    Err(r) => return r,
                };
                let (a, u) = (auth.clone(), user.clone());
                let keys = match tokio::task::spawn_blocking(move || scram_keys(&a.db, &u)).await {
                    Ok(k) => k,
                    Err(e) => Err(Outcome::TempFail(format!("password lookup task: {e}"))),
                };
                match keys {
                    Ok(k) => step = ex.keys(Some(k)),
                    Err(o) => break (user, o),
                }
            }
            Step::Proven { authcid, server_final } => {
                let user = match canon(&authcid) {
                    Ok(u) => u,
                    Err(r) => return r,
                };
                // The client must see the server's proof before it is told OK.
                if let Err(r) = exchange(id, &server_final, &mut cont, tx, &mech_name, rip).await {
                    return r;
                }
                break (user, Outcome::Ok);
            }
            Step::Mismatch { authcid } => match canon(&authcid) {
                Ok(u) => break (u, Outcome::Mismatch),
                Err(r) => return r,
            },
        }
    };
    let driver = auth.db.passdb_driver().to_string();
    let who = format!("{driver}({},{})", printable(&user), printable(rip));
    match outcome {
        Outcome::Ok => {
            if let Some(ip) = ip {
                auth.penalty.succeeded(ip);
            }
            tracing::info!("{who}: authenticated, method={mech_name}, service={}", printable(&service));
            ServerReply::Ok { id, user, params: vec![] }
        }
        Outcome::Mismatch => {
            tracing::info!("{who}: Password mismatch, method={mech_name}");
            failed(auth, id, ip, rip, Some(user), None).await
        }
        Outcome::UnknownUser => {
            tracing::info!("{who}: unknown user, method={mech_name}");
            failed(auth, id, ip, rip, Some(user), None).await
        }
        Outcome::NoCredentials(why) => {
            tracing::info!("{who}: {mech_name} cannot use the stored password ({why})");
            failed(auth, id, ip, rip, Some(user), None).await
        }
        Outcome::TempFail(e) => {
            tracing::error!("{who}: {e}");
            temp_fail(id)
        }
    }
}

/// Sends a challenge and waits for the client's answer (decoded), or the reply that ends the
/// request (timeout, cancel, bad base64, client gone).
async fn exchange(
    id: u32,
    challenge: &[u8],
    cont: &mut mpsc::UnboundedReceiver<String>,
    tx: &mpsc::UnboundedSender<ServerReply>,
    mech_name: &str,
    rip: &str,
) -> Result<Vec<u8>, ServerReply> {
    let _ = tx.send(ServerReply::Cont { id, data: b64_encode(challenge) });
    let data = match tokio::time::timeout(CONTINUE_TIMEOUT, cont.recv()).await {
        Ok(Some(d)) => d,
        Ok(None) => return Err(fail(id, None)),
        Err(_) => {
            tracing::info!("{mech_name}(?,{}): client did not answer the challenge in time", printable(rip));
            return Err(fail(id, Some("Authentication timed out")));
        }
    };
    if data.trim() == "*" {
        return Err(fail(id, Some("Authentication aborted by client.")));
    }
    b64_decode(&data).ok_or_else(|| {
        ServerReply::Fail(Failure {
            id,
            reason: Some("Invalid base64 data in continued response".into()),
            code: Some(code::INVALID_BASE64.into()),
            ..Failure::default()
        })
    })
}

/// A user's SCRAM-SHA-256 keys: stored `{SCRAM-SHA-256}` data, or derived from `{PLAIN}`.
fn scram_keys(db: &Db, user: &str) -> Result<ScramKeys, Outcome> {
    let entry = match db.passdb(user) {
        Lookup::Found(e) => e,
        Lookup::NotFound => return Err(Outcome::UnknownUser),
        Lookup::TempFail(e) => return Err(Outcome::TempFail(e)),
    };
    let Some(stored) = entry.password else { return Err(Outcome::NoCredentials("nopassword")) };
    let (_, data) = rpost_password::split_stored(&stored, &db.default_scheme);
    match rpost_password::stored_scheme(&stored, &db.default_scheme) {
        Ok(rpost_password::Scheme::ScramSha256) => match rpost_password::parse_scram(data) {
            Some((iterations, salt, stored_key, server_key)) => {
                Ok(ScramKeys { iterations, salt, stored_key, server_key })
            }
            None => Err(Outcome::TempFail("malformed SCRAM-SHA-256 password data".into())),
        },
        Ok(rpost_password::Scheme::Plain) => {
            let mut salt = vec![0u8; 16];
            getrandom::getrandom(&mut salt).map_err(|e| Outcome::TempFail(format!("random salt: {e}")))?;
            let (sk, vk) = rpost_password::scram_keys(data.as_bytes(), &salt, mech::SCRAM_ITERATIONS);
            Ok(ScramKeys { iterations: mech::SCRAM_ITERATIONS, salt, stored_key: sk.to_vec(), server_key: vk.to_vec() })
        }
        Ok(_) => Err(Outcome::NoCredentials("a one-way hash")),
        Err(e) => Err(Outcome::TempFail(e.to_string())),
    }
}

fn temp_fail(id: u32) -> ServerReply {
    ServerReply::Fail(Failure {
        id,
        reason: Some("Temporary authentication failure.".into()),
        temp: true,
        code: Some(code::TEMPFAIL.into()),
        user: None,
    })
}

/// Counts the failure against the address, waits `auth_failure_delay`, and fails.
async fn failed(
    auth: &Auth,
    id: u32,
    ip: Option<IpAddr>,
    rip: &str,
    user: Option<String>,
    reason: Option<&str>,
) -> ServerReply {
    if let Some(ip) = ip {
        let n = auth.penalty.failed(ip, Instant::now());
        if n > 1 && penalty::worth_logging(n) {
            tracing::warn!(
                "{}: {n} authentication failures, requests from this address are delayed {}s",
                printable(rip),
                penalty::delay_for(n).as_secs()
            );
        }
    }
    if !auth.settings.failure_delay.is_zero() {
        tokio::time::sleep(auth.settings.failure_delay).await;
    }
    ServerReply::Fail(Failure { id, reason: reason.map(str::to_string), user, ..Failure::default() })
}

/// The password check (blocking: slow hashes, table lookups).
fn check(db: &Db, user: &str, proof: Proof) -> Outcome {
    let entry = match db.passdb(user) {
        Lookup::Found(e) => e,
        Lookup::NotFound => return Outcome::UnknownUser,
        Lookup::TempFail(e) => return Outcome::TempFail(e),
    };
    let Some(stored) = entry.password else {
        // nopassword: any password is accepted, as Dovecot; CRAM-MD5 has nothing to check.
        return match proof {
            Proof::Password(_) => Outcome::Ok,
            Proof::CramMd5 { .. } => Outcome::NoCredentials("nopassword"),
        };
    };
    if stored.is_empty() {
        return Outcome::Mismatch;
    }
    match proof {
        Proof::Password(pw) => match rpost_password::verify(&stored, &pw, &db.default_scheme) {
            Ok(true) => Outcome::Ok,
            Ok(false) => Outcome::Mismatch,
            Err(e) => Outcome::TempFail(e.to_string()),
        },
        Proof::CramMd5 { challenge, digest } => {
            let ctx = match rpost_password::credentials(&stored, &db.default_scheme) {
                Ok(Credentials::Plaintext(p)) => rpost_password::cram_md5_context(&p),
                Ok(Credentials::CramMd5(c)) => c,
                Ok(Credentials::HashOnly) => return Outcome::NoCredentials("a one-way hash"),
                Err(e) => return Outcome::TempFail(e.to_string()),
            };
            if rpost_password::ct_eq(&rpost_password::cram_md5_digest(&ctx, &challenge), &digest) {
                Outcome::Ok
            } else {
                Outcome::Mismatch
            }
        }
    }
}

/// Serves one auth-userdb connection (`USER`, `PASS`, and `LIST` for passwd-file
/// userdbs; other tables cannot be enumerated and answer `DONE id fail`).
pub async fn serve_userdb<S: AsyncRead + AsyncWrite + Unpin>(auth: Arc<Auth>, mut stream: S) {
    if stream.write_all(rpost_auth_proto::master::server_hello(std::process::id()).as_bytes()).await.is_err() {
        return;
    }
    let mut server = MasterServer::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        server.feed(&buf[..n]);
        loop {
            let req = match server.next_request() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("auth-userdb client: {e}: disconnecting");
                    return;
                }
            };
            if let MasterRequest::List { id, params } = &req {
                let (a, id, mask) = (auth.clone(), *id, rpost_auth_proto::param(params, "user").map(str::to_string));
                let lines = tokio::task::spawn_blocking(move || list_replies(&a, id, mask.as_deref()))
                    .await
                    .unwrap_or_else(|_| MasterReply::ListDone { id, failed: true }.to_line());
                if stream.write_all(lines.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            let a = auth.clone();
            let reply: Option<MasterReply> =
                tokio::task::spawn_blocking(move || userdb_reply(&a, req)).await.unwrap_or_default();
            if let Some(r) = reply
                && stream.write_all(r.to_line().as_bytes()).await.is_err()
            {
                return;
            }
        }
    }
}

/// `LIST id [user=mask]`: a `LIST` line per user, then `DONE`.
fn list_replies(auth: &Auth, id: u32, mask: Option<&str>) -> String {
    match auth.db.list(mask) {
        Some(Ok(names)) => {
            let mut out: String = names.into_iter().map(|user| MasterReply::ListUser { id, user }.to_line()).collect();
            out.push_str(&MasterReply::ListDone { id, failed: false }.to_line());
            out
        }
        Some(Err(e)) => {
            tracing::error!("userdb list: {e}");
            MasterReply::ListDone { id, failed: true }.to_line()
        }
        None => {
            tracing::info!("auth-userdb: LIST needs a passwd-file userdb");
            MasterReply::ListDone { id, failed: true }.to_line()
        }
    }
}

fn userdb_reply(auth: &Auth, req: MasterRequest) -> Option<MasterReply> {
    let service = req.service().unwrap_or("").to_string();
    Some(match req {
        MasterRequest::User { id, user, .. } => {
            let Ok(user) = auth.db.canonical_user(&user, &service) else {
                return Some(MasterReply::Fail { id, reason: None });
            };
            match auth.db.userdb(&user, &service) {
                Lookup::Found(fields) => MasterReply::User { id, user, fields },
                Lookup::NotFound => MasterReply::NotFound { id },
                Lookup::TempFail(e) => {
                    tracing::error!("userdb({}): {e}", printable(&user));
                    MasterReply::Fail { id, reason: Some("Temporary lookup failure".into()) }
                }
            }
        }
        MasterRequest::Pass { id, user, .. } => {
            let Ok(user) = auth.db.canonical_user(&user, &service) else {
                return Some(MasterReply::Fail { id, reason: None });
            };
            match auth.db.passdb(&user) {
                Lookup::Found(e) => {
                    // Never the password: only the name and the extra fields.
                    let mut fields = vec![("user".to_string(), Some(user))];
                    fields.extend(e.extra);
                    MasterReply::Pass { id, fields }
                }
                Lookup::NotFound => MasterReply::NotFound { id },
                Lookup::TempFail(e) => {
                    tracing::error!("passdb({}): {e}", printable(&user));
                    MasterReply::Fail { id, reason: Some("Temporary lookup failure".into()) }
                }
            }
        }
        MasterRequest::List { .. } => unreachable!("LIST is answered by list_replies"),
        MasterRequest::Unsupported { command, id } => {
            tracing::info!("auth-userdb: {} is not supported", printable(&command));
            MasterReply::Fail { id: id?, reason: Some(format!("{} is not supported", printable(&command))) }
        }
    })
}

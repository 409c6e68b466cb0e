//! imap-load - IMAP load generator for `bench/imap.sh`
//!
//! # SUMMARY
//! ```text
//! imap-load mix  --addr 127.0.0.1:1143 --user alice@example.test --pass secret \
//!                --clients 10 --duration 20s [--sources 127.0.0.1-127.0.0.20] [--verbose]
//! imap-load idle --addr 127.0.0.1:1143 --user alice@example.test --pass secret \
//!                --connections 10000 [--sources 127.0.0.1-127.0.7.255] [--hold 60]
//! ```
//!
//! # DESCRIPTION
//! `mix`: N clients, each with its own folder `bench-<n>` (created if missing and filled to
//! 20 messages of about 4 KiB before the clock starts). Each client then loops sessions until
//! the duration is over: connect, LOGIN, SELECT, `FETCH 1:* (FLAGS UID)`, `UID FETCH u
//! (BODY.PEEK[])`, `FETCH n (ENVELOPE BODYSTRUCTURE)`, `STORE n +FLAGS (\Seen)`, APPEND of a
//! 4 KiB message (synchronizing literal: it waits for `+`), `STORE 1 +FLAGS (\Deleted)`,
//! EXPUNGE (so the folder keeps its size), NOOP, LOGOUT, and waits for the server to close.
//! Every tagged OK completed before the deadline is one command, timed from the first byte
//! sent to the tagged reply. A NO, BAD, lost connection or a FETCH without the data asked
//! for is an error: counted, reported, and the exit status is 1. Output, one line on stdout:
//! `clients=10 commands=123456 secs=20.0 cmd_per_s=6172 p50_ms=0.9 p99_ms=4.1 sessions=11223 errors=0`,
//! and on stderr one line per command type with its count, p50 and p99 (and connect time).
//!
//! `idle`: opens N sessions, at most `--in-flight` being set up at once; each does LOGIN,
//! `SELECT INBOX`, IDLE and waits for `+`. Prints `idle=N ready`, or when not all made it
//! `idle=K ready failed=F skipped=S pending=P of=N why=".." first_error=".."` (the ramp stops
//! after `--max-failures` failures, after `--ramp-timeout`, or on SIGUSR1, which a memory
//! guard in the calling script can send), then waits for stdin to
//! close (or `--hold` seconds, SIGINT/SIGTERM, or every session having seen EXISTS), counting
//! the sessions that got an untagged `* N EXISTS` after IDLE began, and prints
//! `idle=N exists_seen=K dropped=D` (D: sessions the server closed before any EXISTS).
//!
//! Both servers under test limit sessions per user and client address
//! (`mail_max_userip_connections`, 10 by default), so clients are spread over the source
//! addresses of `--sources` (bound before connect), `--per-source` at a time on each. `mix`
//! puts 5 on each by default: a session that just ended may still be counted by the server
//! for a moment when the client's next one logs in.
//!
//! # SECURITY
//! A test client: it sends the password in plaintext (LOGIN, no TLS), so point it at loopback
//! servers with test accounts only. Server input is bounded: lines to 1 MiB, literals to 64
//! MiB, every command to 60 s (`mix`) and every session set-up to `--setup-timeout` (`idle`).
//!
//! # CONFIGURATION
//! Command line only. File descriptors: `idle` needs one per session; raise the limit first
//! (`ulimit -n 200000`).
//!
//! # STANDARDS
//! RFC 3501 (IMAP4rev1: LOGIN, SELECT, FETCH, STORE, APPEND with a synchronizing literal,
//! EXPUNGE, NOOP, LOGOUT, CREATE, LIST), RFC 2177 (IDLE).

mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Instant, sleep, timeout, timeout_at};
use wire::Status;

/// Longest response line accepted (a literal's content is not part of it).
const MAX_LINE: u64 = 1 << 20;
/// Messages each mix folder holds before the clock starts (and about while it runs).
const PREFILL: u32 = 20;
/// Longest wait for one command's completion in `mix`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(name = "imap-load", about = "IMAP load generator: a command mix at N clients, or N idle (IDLE) sessions")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// N clients looping LOGIN/SELECT/FETCH/STORE/APPEND/EXPUNGE/NOOP/LOGOUT sessions
    Mix(MixArgs),
    /// N sessions logged in, INBOX selected, in IDLE
    Idle(IdleArgs),
}

#[derive(Args, Debug, Clone)]
struct Target {
    /// Server address
    #[arg(long, default_value = "127.0.0.1:143")]
    addr: SocketAddr,
    /// Login name
    #[arg(long)]
    user: String,
    /// Password (sent with LOGIN, in plaintext)
    #[arg(long)]
    pass: String,
    /// Source addresses to bind, one address or a range FIRST-LAST (IPv4)
    #[arg(long, default_value = "127.0.0.1")]
    sources: Sources,
}

#[derive(Args, Debug)]
struct MixArgs {
    #[command(flatten)]
    target: Target,
    /// Concurrent clients
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// How long the measured part runs, e.g. 20s, 500ms, 2m
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Clients sharing one source address
    #[arg(long, default_value_t = 5)]
    per_source: usize,
    /// Also print the first error of every client
    #[arg(long)]
    verbose: bool,
}

#[derive(Args, Debug)]
struct IdleArgs {
    #[command(flatten)]
    target: Target,
    /// Sessions to open
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Sessions being set up at once
    #[arg(long, default_value_t = 200)]
    in_flight: usize,
    /// Sessions sharing one source address
    #[arg(long, default_value_t = 10)]
    per_source: usize,
    /// Longest set-up (connect to IDLE's `+`) of one session, e.g. 60s
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    setup_timeout: Duration,
    /// Stop opening sessions after this long and report what was reached
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    ramp_timeout: Duration,
    /// Stop starting new sessions after this many failed
    #[arg(long, default_value_t = 50)]
    max_failures: usize,
    /// Hold the sessions this many seconds instead of until stdin closes
    #[arg(long, value_parser = parse_duration)]
    hold: Option<Duration>,
}

/// `10s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?} (e.g. 20s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// A range of IPv4 source addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sources {
    first: u32,
    count: u32,
}

impl FromStr for Sources {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ip = |t: &str| t.trim().parse::<Ipv4Addr>().map(u32::from).map_err(|e| format!("{t:?}: {e}"));
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (ip(a)?, ip(b)?),
            None => (ip(s)?, ip(s)?),
        };
        if last < first {
            return Err(format!("{s}: the range ends before it starts"));
        }
        Ok(Sources { first, count: last - first + 1 })
    }
}

impl Sources {
    /// The address client `i` binds when `per` clients share one; an error when the range
    /// is too short for `total` clients.
    fn for_client(&self, i: usize, per: usize, total: usize) -> Result<Ipv4Addr> {
        let per = per.max(1);
        let needed = total.div_ceil(per);
        if needed > self.count as usize {
            bail!("{total} sessions at {per} per source address need {needed} addresses; --sources has {}", self.count);
        }
        Ok(Ipv4Addr::from(self.first + (i / per) as u32))
    }
}

/// One IMAP connection: responses read whole (literals included), commands tagged a1, a2...
struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    tag: u32,
}

impl Conn {
    async fn open(addr: SocketAddr, source: Ipv4Addr) -> Result<Conn> {
        let sock =
            if addr.is_ipv4() { TcpSocket::new_v4()? } else { bail!("--addr must be IPv4 (source addresses are)") };
        sock.bind(SocketAddr::new(source.into(), 0)).with_context(|| format!("bind {source}"))?;
        let stream = sock.connect(addr).await.with_context(|| format!("connect {addr} from {source}"))?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut conn = Conn { r: BufReader::new(r), w, tag: 0 };
        let greeting = conn.response().await.context("greeting")?;
        if !greeting.starts_with(b"* OK") {
            bail!("greeting: {}", show(&greeting));
        }
        Ok(conn)
    }

    /// One response: a line, and for each literal it announces the literal's bytes and the
    /// line that follows it.
    async fn response(&mut self) -> Result<Vec<u8>> {
        let mut resp = Vec::new();
        loop {
            let start = resp.len();
            let n = (&mut self.r).take(MAX_LINE).read_until(b'\n', &mut resp).await?;
            if n == 0 {
                bail!("connection closed by the server{}", if start > 0 { " inside a response" } else { "" });
            }
            if !resp.ends_with(b"\n") {
                bail!("response line longer than {MAX_LINE} bytes");
            }
            match wire::literal_len(&resp[start..]) {
                None => return Ok(resp),
                Some(len) if len > wire::MAX_LITERAL => {
                    bail!("literal of {len} bytes announced: {}", show(&resp[start..]))
                }
                Some(len) => {
                    let at = resp.len();
                    resp.resize(at + len, 0);
                    self.r.read_exact(&mut resp[at..]).await.context("literal cut short")?;
                }
            }
        }
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("a{}", self.tag)
    }

    /// Sends `cmd` tagged and reads to its completion; the untagged responses on OK.
    async fn command(&mut self, cmd: &str) -> Result<Vec<Vec<u8>>> {
        let tag = self.next_tag();
        self.w.write_all(format!("{tag} {cmd}\r\n").as_bytes()).await?;
        self.complete(&tag).await
    }

    async fn complete(&mut self, tag: &str) -> Result<Vec<Vec<u8>>> {
        let mut untagged = Vec::new();
        loop {
            let resp = self.response().await?;
            match wire::tagged(&resp, tag) {
                Some(Status::Ok) => return Ok(untagged),
                Some(_) => bail!("{}", show(&resp)),
                None => untagged.push(resp),
            }
        }
    }

    /// APPEND with a synchronizing literal: the message is sent only after `+`.
    async fn append(&mut self, mailbox: &str, msg: &[u8]) -> Result<Vec<Vec<u8>>> {
        let tag = self.next_tag();
        self.w.write_all(format!("{tag} APPEND {mailbox} (\\Seen) {{{}}}\r\n", msg.len()).as_bytes()).await?;
        loop {
            let resp = self.response().await?;
            if resp.starts_with(b"+") {
                break;
            }
            if wire::tagged(&resp, &tag).is_some() {
                bail!("{}", show(&resp));
            }
        }
        self.w.write_all(msg).await?;
        self.w.write_all(b"\r\n").await?;
        self.complete(&tag).await
    }
}

/// A response for an error message: its first line, without CRLF, cut at 200 bytes.
fn show(resp: &[u8]) -> String {
    let line = resp.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned()
}

/// A test message of about 4 KiB: multipart/mixed with a text part and a small attachment,
/// so BODYSTRUCTURE and ENVELOPE have something to describe.
fn message(client: usize, n: u64) -> Vec<u8> {
    let mut m = format!(
        "From: Bench Sender <sender@example.org>\r\nTo: Alice <alice@example.test>\r\n\
Subject: imap-load message {n} of client {client}\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\
Message-ID: <imap-load.{client}.{n}@example.org>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b-{client}-{n}\"\r\n\r\n--b-{client}-{n}\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    );
    let mut i = 0;
    while m.len() < 3700 {
        m.push_str(&format!("Line {i} of the text part, filler to make a message of about four KiB.\r\n"));
        i += 1;
    }
    m.push_str(&format!(
        "--b-{client}-{n}\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\r\n\
--b-{client}-{n}--\r\n"
    ));
    m.into_bytes()
}

/// The command types of the mix, for per-type latency and errors.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Login,
    Select,
    FetchFlags,
    FetchBody,
    FetchEnvelope,
    StoreSeen,
    Append,
    StoreDeleted,
    Expunge,
    Noop,
    Logout,
}

const KINDS: [&str; 11] = [
    "LOGIN",
    "SELECT",
    "FETCH 1:* (FLAGS UID)",
    "UID FETCH u (BODY.PEEK[])",
    "FETCH n (ENVELOPE BODYSTRUCTURE)",
    "STORE n +FLAGS (\\Seen)",
    "APPEND",
    "STORE 1 +FLAGS (\\Deleted)",
    "EXPUNGE",
    "NOOP",
    "LOGOUT",
];

/// One client's measurements (merged at the end).
#[derive(Debug, Default)]
struct Stats {
    /// Latency in microseconds, per [`Kind`].
    lat: [Vec<u32>; 11],
    errors: [u64; 11],
    connect_lat: Vec<u32>,
    connect_errors: u64,
    sessions: u64,
    first_error: Option<String>,
}

/// Ends a session early: the deadline passed (not an error), or a failure (counted).
#[derive(Debug)]
enum Stop {
    Deadline,
    Failed,
}

impl Stats {
    /// Records a finished command: its latency if it completed OK before the deadline, an
    /// error otherwise (a failure after the deadline is not counted: the run was over).
    fn done<T>(&mut self, kind: Kind, start: Instant, deadline: Instant, r: Result<T>) -> Result<T, Stop> {
        let now = Instant::now();
        if now > deadline {
            return Err(Stop::Deadline);
        }
        match r {
            Ok(v) => {
                self.lat[kind as usize].push((now - start).as_micros().min(u32::MAX as u128) as u32);
                Ok(v)
            }
            Err(e) => {
                self.errors[kind as usize] += 1;
                self.first_error.get_or_insert_with(|| format!("{}: {e:#}", KINDS[kind as usize]));
                Err(Stop::Failed)
            }
        }
    }

    fn merge(&mut self, o: Stats) {
        for (a, b) in self.lat.iter_mut().zip(o.lat) {
            a.extend(b);
        }
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.connect_lat.extend(o.connect_lat);
        self.connect_errors += o.connect_errors;
        self.sessions += o.sessions;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// The p-th quantile (0..=1) of sorted latencies in microseconds, as milliseconds.
fn quantile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

/// A small xorshift generator, so the clients pick different messages without a dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n.max(1))) as u32
    }
}

/// One client of the mix.
#[derive(Debug, Clone)]
struct Client {
    n: usize,
    addr: SocketAddr,
    source: Ipv4Addr,
    login: String,
    folder: String,
}

impl Client {
    async fn login(&self) -> Result<Conn> {
        let mut c = Conn::open(self.addr, self.source).await?;
        timeout(COMMAND_TIMEOUT, c.command(&self.login)).await.context("LOGIN timed out")?.context("LOGIN")?;
        Ok(c)
    }

    /// Before the clock: the folder exists and holds at least PREFILL messages.
    async fn prepare(&self) -> Result<()> {
        let mut c = self.login().await?;
        // CREATE and accept ALREADYEXISTS (RFC 5530): a LIST first would race with a folder
        // another run made, and Dovecot's LIST may lag behind a Maildir removed under it.
        let messages = match c.command(&format!("CREATE {}", self.folder)).await {
            // A new folder is empty: it is filled without being looked at first. (rpost's
            // imapd, as of this writing, gives the first two APPENDs into an empty folder
            // that a SELECT or STATUS has opened the same UID, which breaks the folder.)
            Ok(_) => 0,
            Err(e) if e.to_string().to_ascii_uppercase().contains("[ALREADYEXISTS]") => {
                let status = c.command(&format!("STATUS {} (MESSAGES)", self.folder)).await.context("STATUS")?;
                status
                    .iter()
                    .find_map(|r| wire::status_messages(r))
                    .ok_or_else(|| anyhow!("STATUS without MESSAGES"))?
            }
            Err(e) => return Err(e.context("CREATE")),
        };
        for i in messages..PREFILL {
            c.append(&self.folder, &message(self.n, u64::from(i))).await.context("APPEND")?;
        }
        c.command("LOGOUT").await.context("LOGOUT")?;
        Ok(())
    }

    /// One timed session; `seq` numbers the appended message.
    async fn session(&self, st: &mut Stats, deadline: Instant, rng: &mut Rng, seq: u64) -> Result<(), Stop> {
        macro_rules! step {
            ($kind:expr, $fut:expr) => {{
                let t = Instant::now();
                let r = match timeout(COMMAND_TIMEOUT, $fut).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow!("no completion within {COMMAND_TIMEOUT:?}")),
                };
                st.done($kind, t, deadline, r)?
            }};
        }
        let t = Instant::now();
        let mut c = match timeout(COMMAND_TIMEOUT, Conn::open(self.addr, self.source)).await {
            Ok(Ok(c)) => c,
            r => {
                if Instant::now() > deadline {
                    return Err(Stop::Deadline);
                }
                let e = r.map_or_else(|_| anyhow!("connect timed out"), |r| r.err().unwrap_or_else(|| anyhow!("?")));
                st.connect_errors += 1;
                st.first_error.get_or_insert_with(|| format!("connect: {e:#}"));
                return Err(Stop::Failed);
            }
        };
        st.connect_lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        step!(Kind::Login, c.command(&self.login));
        let selected = step!(Kind::Select, c.command(&format!("SELECT {}", self.folder)));
        let exists = selected.iter().find_map(|r| wire::exists(r)).unwrap_or(0);
        let uids: Vec<u32> = step!(Kind::FetchFlags, async {
            let r = c.command("FETCH 1:* (FLAGS UID)").await?;
            let uids: Vec<u32> = r.iter().filter_map(|r| wire::fetch_uid(r)).map(|(_, u)| u).collect();
            if uids.is_empty() || exists == 0 {
                bail!("{} has no messages (EXISTS {exists}, {} UIDs fetched)", self.folder, uids.len());
            }
            Ok(uids)
        });
        let uid = uids[rng.below(uids.len() as u32) as usize];
        step!(Kind::FetchBody, async {
            let r = c.command(&format!("UID FETCH {uid} (BODY.PEEK[])")).await?;
            // The data asked for must come back, not just an OK.
            if !r.iter().any(|r| r.len() > 1000 && r.windows(6).any(|w| w.eq_ignore_ascii_case(b"BODY[]"))) {
                bail!("UID FETCH {uid} (BODY.PEEK[]) returned no message body");
            }
            Ok(())
        });
        let n = rng.below(exists) + 1;
        step!(Kind::FetchEnvelope, async {
            let r = c.command(&format!("FETCH {n} (ENVELOPE BODYSTRUCTURE)")).await?;
            if !r.iter().any(|r| r.windows(13).any(|w| w.eq_ignore_ascii_case(b"BODYSTRUCTURE"))) {
                bail!("FETCH {n} (ENVELOPE BODYSTRUCTURE) returned no BODYSTRUCTURE");
            }
            Ok(())
        });
        step!(Kind::StoreSeen, c.command(&format!("STORE {n} +FLAGS (\\Seen)")));
        step!(Kind::Append, c.append(&self.folder, &message(self.n, seq)));
        step!(Kind::StoreDeleted, c.command("STORE 1 +FLAGS (\\Deleted)"));
        step!(Kind::Expunge, c.command("EXPUNGE"));
        step!(Kind::Noop, c.command("NOOP"));
        step!(Kind::Logout, c.command("LOGOUT"));
        // The server closes after LOGOUT; waiting for it keeps this client's sessions from
        // overlapping (and counting twice against mail_max_userip_connections).
        let _ = timeout(Duration::from_secs(10), async { while c.response().await.is_ok() {} }).await;
        st.sessions += 1;
        Ok(())
    }
}

async fn mix(a: MixArgs) -> Result<ExitCode> {
    if a.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let t = &a.target;
    let login = format!(
        "LOGIN {} {}",
        wire::quoted(&t.user).ok_or_else(|| anyhow!("bad --user"))?,
        wire::quoted(&t.pass).ok_or_else(|| anyhow!("bad --pass"))?
    );
    let mut clients = Vec::new();
    for n in 0..a.clients {
        let source = t.sources.for_client(n, a.per_source, a.clients)?;
        clients.push(Arc::new(Client { n, addr: t.addr, source, login: login.clone(), folder: format!("bench-{n}") }));
    }
    let mut prep = tokio::task::JoinSet::new();
    for c in &clients {
        let c = Arc::clone(c);
        prep.spawn(async move { c.prepare().await.with_context(|| format!("client {} ({}) set-up", c.n, c.folder)) });
    }
    while let Some(r) = prep.join_next().await {
        r??;
    }

    let start = Instant::now();
    let deadline = start + a.duration;
    let mut run = tokio::task::JoinSet::new();
    for c in &clients {
        let c = Arc::clone(c);
        run.spawn(async move {
            let mut st = Stats::default();
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c.n as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let mut seq = u64::from(PREFILL);
            while Instant::now() < deadline {
                seq += 1;
                match c.session(&mut st, deadline, &mut rng, seq).await {
                    Ok(()) | Err(Stop::Deadline) => {}
                    // Back off a little so a refusing server is not hammered in a tight loop.
                    Err(Stop::Failed) => sleep(Duration::from_millis(100)).await,
                }
            }
            (c.n, st)
        });
    }
    let mut total = Stats::default();
    while let Some(r) = run.join_next().await {
        let (n, st) = r?;
        if a.verbose
            && let Some(e) = &st.first_error
        {
            eprintln!("client {n}: first error: {e}");
        }
        total.merge(st);
    }
    let secs = a.duration.as_secs_f64();
    let mut all: Vec<u32> = total.lat.iter().flatten().copied().collect();
    all.sort_unstable();
    let errors: u64 = total.errors.iter().sum::<u64>() + total.connect_errors;
    println!(
        "clients={} commands={} secs={secs:.1} cmd_per_s={:.0} p50_ms={:.2} p99_ms={:.2} sessions={} errors={errors}",
        a.clients,
        all.len(),
        all.len() as f64 / secs,
        quantile_ms(&all, 0.5),
        quantile_ms(&all, 0.99),
        total.sessions,
    );
    total.connect_lat.sort_unstable();
    eprintln!(
        "  {:<34} n={:<8} p50_ms={:.2} p99_ms={:.2} errors={} (not a command)",
        "connect + greeting",
        total.connect_lat.len(),
        quantile_ms(&total.connect_lat, 0.5),
        quantile_ms(&total.connect_lat, 0.99),
        total.connect_errors
    );
    for (i, lat) in total.lat.iter_mut().enumerate() {
        lat.sort_unstable();
        eprintln!(
            "  {:<34} n={:<8} p50_ms={:.2} p99_ms={:.2} errors={}",
            KINDS[i],
            lat.len(),
            quantile_ms(lat, 0.5),
            quantile_ms(lat, 0.99),
            total.errors[i]
        );
    }
    if let Some(e) = &total.first_error {
        eprintln!("first error: {e}");
    }
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// How one idle session's set-up ended.
#[derive(Debug)]
enum Setup {
    Ready,
    Failed(String),
    /// Not begun: too many failures already, or the ramp was stopped.
    Skipped,
}

/// LOGIN, SELECT INBOX, IDLE up to the server's `+`.
async fn idle_open(addr: SocketAddr, source: Ipv4Addr, login: &str) -> Result<Conn> {
    let mut c = Conn::open(addr, source).await?;
    c.command(login).await.context("LOGIN")?;
    c.command("SELECT INBOX").await.context("SELECT INBOX")?;
    let tag = c.next_tag();
    c.w.write_all(format!("{tag} IDLE\r\n").as_bytes()).await?;
    loop {
        let resp = c.response().await.context("IDLE")?;
        if resp.starts_with(b"+") {
            return Ok(c);
        }
        if wire::tagged(&resp, &tag).is_some() {
            bail!("IDLE: {}", show(&resp));
        }
    }
}

async fn idle(a: IdleArgs) -> Result<IdleReport> {
    // First, so that a SIGUSR1 sent early stops the ramp instead of killing the process.
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let t = &a.target;
    let login = Arc::new(format!(
        "LOGIN {} {}",
        wire::quoted(&t.user).ok_or_else(|| anyhow!("bad --user"))?,
        wire::quoted(&t.pass).ok_or_else(|| anyhow!("bad --pass"))?
    ));
    let n = a.connections;
    // Checks the range up front rather than failing in the last task.
    t.sources.for_client(0, a.per_source, n)?;
    let gate = Arc::new(Semaphore::new(a.in_flight.max(1)));
    let failures = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    // Set when the ramp ends early (SIGUSR1, --ramp-timeout): sessions not begun yet are skipped.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel::<Setup>();
    for i in 0..n {
        let source = t.sources.for_client(i, a.per_source, n)?;
        let (gate, failures, seen, dropped, stop, tx, login) =
            (gate.clone(), failures.clone(), seen.clone(), dropped.clone(), stop.clone(), tx.clone(), login.clone());
        let (addr, setup, max_failures) = (t.addr, a.setup_timeout, a.max_failures);
        tokio::spawn(async move {
            let Ok(permit) = gate.acquire_owned().await else { return };
            if failures.load(Ordering::Relaxed) >= max_failures || stop.load(Ordering::Relaxed) {
                let _ = tx.send(Setup::Skipped);
                return;
            }
            let mut c = match timeout(setup, idle_open(addr, source, &login)).await {
                Ok(Ok(c)) => c,
                r => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    let e = match r {
                        Err(_) => format!("set-up took over {setup:?}"),
                        Ok(Err(e)) => format!("{e:#}"),
                        Ok(Ok(_)) => unreachable!(),
                    };
                    let _ = tx.send(Setup::Failed(format!("session {i} from {source}: {e}")));
                    return;
                }
            };
            drop(permit);
            let _ = tx.send(Setup::Ready);
            loop {
                match c.response().await {
                    Ok(r) if wire::exists(&r).is_some() => {
                        seen.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            // Keep the session open (and read, so the server's writes never block) until exit.
            while c.response().await.is_ok() {}
        });
    }
    drop(tx);

    // The ramp: every session reports once. When it is cut short (SIGUSR1 from a memory
    // guard, or --ramp-timeout), the sessions already being set up get one set-up timeout
    // more to report, so the count printed is what is really open.
    let mut end = Instant::now() + a.ramp_timeout;
    let (mut ready, mut failed, mut skipped, mut first_error, mut stopped) = (0usize, 0usize, 0usize, None, None);
    while ready + failed + skipped < n {
        tokio::select! {
            m = timeout_at(end, rx.recv()) => match m {
                Ok(Some(Setup::Ready)) => {
                    ready += 1;
                    if ready % 1000 == 0 {
                        eprintln!("idle: {ready} of {n} sessions idling");
                    }
                }
                Ok(Some(Setup::Failed(e))) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                Ok(Some(Setup::Skipped)) => skipped += 1,
                Ok(None) => break,
                Err(_) if stopped.is_none() => {
                    stopped = Some(format!("ramp not done within {:?}", a.ramp_timeout));
                    stop.store(true, Ordering::Relaxed);
                    end = Instant::now() + a.setup_timeout + Duration::from_secs(5);
                }
                Err(_) => break,
            },
            _ = usr1.recv(), if stopped.is_none() => {
                stopped = Some("ramp stopped by SIGUSR1".into());
                stop.store(true, Ordering::Relaxed);
                end = Instant::now() + a.setup_timeout + Duration::from_secs(5);
            }
        }
    }
    let pending = n - ready - failed - skipped;
    let complete = ready == n;
    if complete {
        println!("idle={ready} ready");
    } else {
        let why = stopped.or(first_error.clone()).unwrap_or_default();
        println!(
            "idle={ready} ready failed={failed} skipped={skipped} pending={pending} of={n} why={why:?} first_error={:?}",
            first_error.unwrap_or_default()
        );
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let hold = async {
        match a.hold {
            Some(d) => sleep(d).await,
            None => {
                // Blocking read on a thread of its own (tokio's stdin is not in the workspace's features).
                let _ =
                    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
            }
        }
    };
    let all_seen = async {
        while ready == 0 || seen.load(Ordering::Relaxed) + dropped.load(Ordering::Relaxed) < ready {
            sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        _ = hold => {}
        _ = all_seen => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let report = IdleReport {
        ready,
        failed,
        exists_seen: seen.load(Ordering::Relaxed),
        dropped: dropped.load(Ordering::Relaxed),
    };
    println!("idle={ready} exists_seen={} dropped={}", report.exists_seen, report.dropped);
    Ok(report)
}

/// What `idle` reached; the exit status is 0 only when every session was opened.
#[derive(Debug, PartialEq, Eq)]
struct IdleReport {
    ready: usize,
    failed: usize,
    exists_seen: usize,
    dropped: usize,
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let code = rt.block_on(async {
        match cli.mode {
            Mode::Mix(a) => mix(a).await,
            Mode::Idle(a) => {
                let n = a.connections;
                idle(a).await.map(|r| if r.ready == n { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
        }
    })?;
    // The idle sessions' tasks never end on their own: leave without waiting for them.
    rt.shutdown_background();
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges() {
        let s: Sources = "127.0.0.1-127.0.1.0".parse().unwrap();
        assert_eq!(s.count, 256);
        assert_eq!(s.for_client(0, 10, 2560).unwrap(), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(s.for_client(9, 10, 2560).unwrap(), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(s.for_client(10, 10, 2560).unwrap(), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(s.for_client(2559, 10, 2560).unwrap(), Ipv4Addr::new(127, 0, 1, 0));
        assert!(s.for_client(0, 10, 2561).is_err(), "2561 sessions need 257 addresses");
        assert_eq!("127.0.0.5".parse::<Sources>().unwrap().count, 1);
        assert!("127.0.0.5-127.0.0.1".parse::<Sources>().is_err());
        assert!("localhost".parse::<Sources>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("20").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn quantiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(quantile_ms(&v, 0.5), 50.0);
        assert_eq!(quantile_ms(&v, 0.99), 99.0);
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
        assert_eq!(quantile_ms(&[7000], 0.99), 7.0);
    }

    #[test]
    fn test_message_is_about_4_kib_and_well_formed() {
        let m = message(3, 42);
        assert!((3800..4400).contains(&m.len()), "{} bytes", m.len());
        let s = String::from_utf8(m).unwrap();
        assert!(s.split("\r\n").all(|l| l.len() < 998), "RFC 5322 line length");
        assert!(!s.replace("\r\n", "").contains('\n'), "CRLF line ends only");
        assert!(s.ends_with("--b-3-42--\r\n"));
    }

    /// Reads responses from a scripted server: a FETCH whose literal holds CRLFs and a line
    /// that looks like a tagged completion must be read by length, not taken as the end.
    #[tokio::test]
    async fn literals_are_read_by_length() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"* OK ready\r\n").await.unwrap();
            let mut buf = vec![0; 64];
            let _ = s.read(&mut buf).await.unwrap();
            let body = "Subject: x\r\n\r\na1 OK not the end\r\n";
            let resp = format!("* 1 FETCH (UID 5 BODY[] {{{}}}\r\n{body} FLAGS ())\r\na1 OK done\r\n", body.len());
            // Split writes, so the reader meets the literal across reads.
            for chunk in resp.as_bytes().chunks(7) {
                s.write_all(chunk).await.unwrap();
                s.flush().await.unwrap();
            }
        });
        let mut c = Conn::open(addr, Ipv4Addr::LOCALHOST).await.unwrap();
        let untagged = c.command("UID FETCH 5 (BODY.PEEK[])").await.unwrap();
        assert_eq!(untagged.len(), 1);
        assert!(untagged[0].ends_with(b"a1 OK not the end\r\n FLAGS ())\r\n"));
        assert_eq!(wire::fetch_uid(&untagged[0]), Some((1, 5)));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn no_is_an_error_with_the_server_text() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"* OK ready\r\n").await.unwrap();
            let mut buf = vec![0; 64];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"a1 NO [LIMIT] Maximum number of connections\r\n").await.unwrap();
        });
        let mut c = Conn::open(addr, Ipv4Addr::LOCALHOST).await.unwrap();
        let e = c.command("LOGIN a b").await.unwrap_err();
        assert!(e.to_string().contains("a1 NO [LIMIT]"), "{e}");
    }

    /// A scripted server for `idle`: greets, answers LOGIN and SELECT, says `+ idling` to
    /// IDLE and then reports one new message; the third session's LOGIN is refused.
    #[tokio::test]
    async fn idle_counts_ready_failed_and_exists() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for k in 0.. {
                let (s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut r = BufReader::new(r);
                    w.write_all(b"* OK ready\r\n").await.unwrap();
                    let mut line = String::new();
                    while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                        let (tag, cmd) = line.trim_end().split_once(' ').unwrap();
                        let reply = match cmd.split(' ').next().unwrap() {
                            "LOGIN" if k == 2 => format!("{tag} NO [AUTHENTICATIONFAILED] no\r\n"),
                            "SELECT" => format!("* 3 EXISTS\r\n{tag} OK [READ-WRITE] done\r\n"),
                            "IDLE" => "+ idling\r\n* 4 EXISTS\r\n".to_string(),
                            _ => format!("{tag} OK done\r\n"),
                        };
                        w.write_all(reply.as_bytes()).await.unwrap();
                        line.clear();
                    }
                });
            }
        });
        let args = IdleArgs {
            target: Target {
                addr,
                user: "alice@example.test".into(),
                pass: "secret".into(),
                sources: "127.0.0.1".parse().unwrap(),
            },
            connections: 5,
            in_flight: 1,
            per_source: 10,
            setup_timeout: Duration::from_secs(60),
            ramp_timeout: Duration::from_secs(120),
            max_failures: 50,
            hold: Some(Duration::from_secs(120)),
        };
        let r = idle(args).await.unwrap();
        assert_eq!(r, IdleReport { ready: 4, failed: 1, exists_seen: 4, dropped: 0 });
    }
}

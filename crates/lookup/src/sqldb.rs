//! The SQL drivers behind `mysql:`, `pgsql:` and `sqlite:` tables (sqlx).
//!
//! ## Synchronous callers, an asynchronous driver
//!
//! [`Table::lookup`] is synchronous and is called from everywhere: from
//! inside tokio tasks of smtpd and lmtp-deliver (multi-thread runtimes),
//! from qmgr, from `rmaster map query` (no runtime at all) and from
//! blocking threads. sqlx is asynchronous and its connections belong to
//! the runtime that opened them. So each SQL table owns one small thread
//! with a current-thread runtime and its connections; a lookup sends the
//! bound query to it over a channel and waits for the reply with a
//! deadline. Nothing ever calls `block_on` inside someone else's runtime
//! (which panics or deadlocks). When the caller is a worker of a
//! multi-thread runtime, the wait runs in `block_in_place`, so the other
//! sessions of that worker move to another thread while the database
//! answers; elsewhere it is a plain blocking wait (a task of a
//! current-thread runtime holds up that runtime meanwhile, as any
//! synchronous lookup does). Lookups from several
//! callers run concurrently on the table's thread (up to
//! [`MAX_CONNECTIONS`] connections). The thread ends when the table is
//! dropped.
//!
//! ## Servers, failover, reconnection
//!
//! As Postfix's dict_mysql/dict_pgsql: hosts with an open connection are
//! preferred, then hosts not yet tried or whose `retry_interval` (default
//! 60 s) has passed since they failed; UNIX sockets before TCP; random
//! among equals. A host that cannot be connected to (refused, timeout
//! after [`CONNECT_TIMEOUT`], bad password) or whose connection breaks is
//! marked down for `retry_interval` and the next host is tried. An SQL
//! error (no such table) moves on to the next host without marking it
//! down. When no host answers, the lookup fails with an error naming each
//! host and why, which callers turn into a 4xx or a deferral, never into
//! "not found". Connections idle for `idle_interval` (default 60 s) are
//! closed; a kept connection that fails (the server restarted) is replaced
//! by a fresh one once before the host counts as down. One lookup takes at
//! most [`LOOKUP_TIMEOUT`].
//!
//! MySQL `localhost` (without `inet:` or a port) means the server's UNIX
//! socket `/run/mysqld/mysqld.sock`, as in libmysqlclient. PostgreSQL
//! `unix:/dir` names the socket directory (or the socket file itself,
//! `.s.PGSQL.5432`); a `postgresql://` URI is used as it is. SQLite opens
//! `dbpath` read-only when the table is opened (so a daemon that chroots
//! afterwards keeps it) and keeps it open.
//!
//! Values: every non-NULL column of every row, as text: strings, integers,
//! floating point numbers, MySQL DECIMAL, PostgreSQL booleans (`t`/`f`,
//! as libpq prints them) and byte strings that are UTF-8. Other types
//! (dates, PostgreSQL numeric) are an error that says to cast the column
//! to text in the query.
//!
//! There is no TLS to the database in this build: a mysql table that asks
//! for it (`tls_cert_file`, `tls_key_file`, `tls_CAfile`, `tls_CApath`,
//! `tls_verify_cert = yes`) is refused at open rather than silently sent
//! in clear text; use a UNIX socket or a local server.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgSslMode, Postgres};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteRow};
use sqlx::{Connection, Row, TypeInfo, ValueRef};

use crate::sql::{DomainFilter, SqlConfig, SqlDriver, SqlHost};
use crate::{FileStamp, LookupError, Table};

/// Longest wait for one connection to be set up (TCP, login).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one query's rows.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest one lookup may take, all hosts together.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most concurrent queries of one table, and most connections it keeps per host.
pub const MAX_CONNECTIONS: usize = 4;
/// Debian's MariaDB/MySQL socket, which libmysqlclient uses for `localhost`.
const MYSQL_SOCKET: &str = "/run/mysqld/mysqld.sock";

/// An open `mysql:`, `pgsql:` or `sqlite:` table.
pub(crate) struct SqlTable {
    spec: String,
    cfg: SqlConfig,
    domains: DomainFilter,
    path: PathBuf,
    stamp: Option<FileStamp>,
    /// sqlite: device and inode of `dbpath` as opened, to notice a replaced database.
    db_inode: Option<(u64, u64)>,
    warnings: Vec<String>,
    worker: Worker,
}

fn inode(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl std::fmt::Debug for SqlTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlTable").field("spec", &self.spec).field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl SqlTable {
    pub(crate) fn open(spec: &str, driver: SqlDriver, path: &Path) -> Result<Box<dyn Table>, LookupError> {
        let stamp = FileStamp::of(path);
        let cfg = SqlConfig::load(driver, path)?;
        let domains = cfg.domain_filter()?;
        let mut warnings = cfg.warnings.clone();
        let settings = Settings::from_config(spec, &cfg, &mut warnings)?;
        let worker = Worker::start(spec, settings)?;
        let mut db_inode = None;
        if driver == SqlDriver::Sqlite {
            db_inode = inode(Path::new(&cfg.dbpath));
            // Open the file now: errors show at open, and a chroot later does not matter.
            worker.call(Request::Connect).map_err(|m| LookupError::open(spec, m))?;
        }
        Ok(Box::new(SqlTable {
            spec: spec.to_string(),
            cfg,
            domains,
            path: path.to_path_buf(),
            stamp,
            db_inode,
            warnings,
            worker,
        }))
    }
}

impl Table for SqlTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        crate::check_key(&self.spec, key)?;
        let Some(params) = self.cfg.query_for(key, &self.domains)? else { return Ok(None) };
        let values = self.worker.call(Request::Query(params)).map_err(|m| LookupError::lookup(&self.spec, key, m))?;
        self.cfg.format_results(key, &values)
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn changed(&self) -> bool {
        // The table file was edited, or an SQLite database was replaced by a new file (the
        // open one would keep answering from the old).
        self.stamp.is_some_and(|s| s.changed(&self.path))
            || self.db_inode.is_some_and(|i| inode(Path::new(&self.cfg.dbpath)) != Some(i))
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

/// How to reach the database, derived from the table file at open.
struct Settings {
    sql: String,
    hosts: Vec<HostSpec>,
    retry: Duration,
    /// `None`: keep connections open (sqlite).
    idle: Option<Duration>,
}

struct HostSpec {
    /// For messages: `127.0.0.1:3306`, `unix:/run/mysqld/mysqld.sock`.
    name: String,
    unix: bool,
    opts: Opts,
}

enum Opts {
    Mysql(Box<MySqlConnectOptions>),
    Pgsql(Box<PgConnectOptions>),
    Sqlite(Box<SqliteConnectOptions>),
}

impl Settings {
    fn from_config(spec: &str, cfg: &SqlConfig, warnings: &mut Vec<String>) -> Result<Settings, LookupError> {
        let bad = |m: String| LookupError::open(spec, m);
        let seconds = |name: &str, default: u64| -> Result<Duration, LookupError> {
            match cfg.options.get(name) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => {
                    parse_seconds(v).map(Duration::from_secs).ok_or_else(|| bad(format!("{name}: bad time \"{v}\"")))
                }
            }
        };
        let mut hosts = Vec::new();
        match cfg.driver {
            SqlDriver::Mysql => {
                let tls = ["tls_cert_file", "tls_key_file", "tls_CAfile", "tls_CApath"];
                let verify = cfg.options.get("tls_verify_cert").is_some_and(|v| v.eq_ignore_ascii_case("yes"));
                if let Some(name) = tls.iter().find(|n| cfg.options.contains_key(**n)) {
                    return Err(bad(format!(
                        "{name}: TLS to the database is not built into rpost; connect over a UNIX socket or to a local server instead"
                    )));
                }
                if verify {
                    return Err(bad("tls_verify_cert: TLS to the database is not built into rpost".to_string()));
                }
                for name in ["option_file", "option_group"] {
                    if cfg.options.contains_key(name) {
                        warnings.push(format!("{}: {name} is not supported and is ignored; put user, password and hosts in the table file", cfg.file));
                    }
                }
                if cfg.options.get("require_result_set").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
                    warnings.push(format!(
                        "{}: require_result_set = no is ignored: a query without rows finds nothing",
                        cfg.file
                    ));
                }
                for h in &cfg.hosts {
                    let base = MySqlConnectOptions::new()
                        .username(&cfg.user)
                        .password(&cfg.password)
                        .database(&cfg.dbname)
                        .charset("utf8mb4")
                        // Keep the server's SQL semantics: `||` stays OR, NOW() stays local time.
                        .pipes_as_concat(false)
                        .no_engine_substitution(false)
                        .timezone(None);
                    let (name, unix, opts) = match h {
                        SqlHost::Unix(p) => (format!("unix:{}", p.display()), true, base.socket(p)),
                        SqlHost::Inet { host, port: None } if host == "localhost" => {
                            (format!("localhost (unix:{MYSQL_SOCKET})"), true, base.socket(MYSQL_SOCKET))
                        }
                        SqlHost::Inet { host, port } => {
                            let port = port.unwrap_or(3306);
                            (host_port(host, port), false, base.host(host).port(port))
                        }
                        SqlHost::Uri(u) => return Err(bad(format!("bad host \"{u}\""))),
                    };
                    hosts.push(HostSpec { name, unix, opts: Opts::Mysql(Box::new(opts)) });
                }
            }
            SqlDriver::Pgsql => {
                if let Some(e) = cfg.options.get("encoding")
                    && !matches!(e.to_ascii_uppercase().as_str(), "UTF8" | "UTF-8" | "UNICODE")
                {
                    warnings.push(format!("{}: encoding = {e} is ignored: rpost talks UTF8 to PostgreSQL", cfg.file));
                }
                for h in &cfg.hosts {
                    let base = || {
                        PgConnectOptions::new_without_pgpass()
                            .username(&cfg.user)
                            .password(&cfg.password)
                            .database(&cfg.dbname)
                            .ssl_mode(PgSslMode::Prefer)
                            .application_name("rpost")
                    };
                    let (name, unix, opts) = match h {
                        SqlHost::Unix(p) => {
                            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or("");
                            let opts = match file.strip_prefix(".s.PGSQL.").and_then(|n| n.parse::<u16>().ok()) {
                                Some(port) => base().socket(p.parent().unwrap_or(Path::new("/"))).port(port),
                                None => base().socket(p).port(5432),
                            };
                            (format!("unix:{}", p.display()), true, opts.ssl_mode(PgSslMode::Disable))
                        }
                        SqlHost::Inet { host, port } => {
                            let port = port.unwrap_or(5432);
                            (host_port(host, port), false, base().host(host).port(port))
                        }
                        SqlHost::Uri(u) => {
                            let opts = PgConnectOptions::from_str(u).map_err(|e| bad(format!("bad URI: {e}")))?;
                            // The URI may hold a password: name the host only.
                            (format!("{}:{}", opts.get_host(), opts.get_port()), false, opts)
                        }
                    };
                    hosts.push(HostSpec { name, unix, opts: Opts::Pgsql(Box::new(opts)) });
                }
            }
            SqlDriver::Sqlite => {
                let opts = SqliteConnectOptions::new()
                    .filename(&cfg.dbpath)
                    .read_only(true)
                    .create_if_missing(false)
                    .busy_timeout(Duration::from_secs(5));
                hosts.push(HostSpec { name: cfg.dbpath.clone(), unix: true, opts: Opts::Sqlite(Box::new(opts)) });
            }
        }
        let (retry, idle) = match cfg.driver {
            SqlDriver::Sqlite => (Duration::ZERO, None),
            _ => (seconds("retry_interval", 60)?, Some(seconds("idle_interval", 60)?)),
        };
        Ok(Settings { sql: cfg.plan.sql.clone(), hosts, retry, idle })
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Seconds, with an optional Postfix time unit (`s`, `m`, `h`, `d`).
fn parse_seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    let (num, mult) = match v.char_indices().last()? {
        (i, 's') => (&v[..i], 1),
        (i, 'm') => (&v[..i], 60),
        (i, 'h') => (&v[..i], 3600),
        (i, 'd') => (&v[..i], 86400),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

enum Request {
    /// Open a connection now (sqlite at open).
    Connect,
    /// Run the statement with these values bound.
    Query(Vec<String>),
}

struct Job {
    request: Request,
    reply: mpsc::SyncSender<Result<Vec<String>, String>>,
}

/// The caller's end of a table's database thread.
struct Worker {
    tx: tokio::sync::mpsc::UnboundedSender<Job>,
}

impl Worker {
    fn start(spec: &str, settings: Settings) -> Result<Worker, LookupError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LookupError::open(spec, format!("cannot start the database thread: {e}")))?;
        let backend = Arc::new(Backend::new(settings));
        std::thread::Builder::new()
            .name("rpost-sql".to_string())
            .spawn(move || {
                rt.block_on(async move {
                    let sweep_every = backend.settings.idle.map(|d| (d / 2).max(Duration::from_secs(1)));
                    let mut sweep = tokio::time::interval(sweep_every.unwrap_or(Duration::from_secs(3600)));
                    loop {
                        tokio::select! {
                            job = rx.recv() => {
                                let Some(job) = job else {
                                    backend.close_all().await;
                                    break;
                                };
                                let b = backend.clone();
                                tokio::spawn(async move {
                                    let result = match tokio::time::timeout(LOOKUP_TIMEOUT, b.handle(job.request)).await {
                                        Ok(r) => r,
                                        Err(_) => Err(format!("no answer from the database within {}s", LOOKUP_TIMEOUT.as_secs())),
                                    };
                                    let _ = job.reply.send(result);
                                });
                            }
                            _ = sweep.tick(), if sweep_every.is_some() => backend.sweep(),
                        }
                    }
                });
            })
            .map_err(|e| LookupError::open(spec, format!("cannot start the database thread: {e}")))?;
        Ok(Worker { tx })
    }

    /// Sends a request to the database thread and waits for its answer.
    fn call(&self, request: Request) -> Result<Vec<String>, String> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx.send(Job { request, reply }).map_err(|_| "the database thread has stopped".to_string())?;
        let wait = || answer.recv_timeout(LOOKUP_TIMEOUT + Duration::from_secs(5));
        let got = match tokio::runtime::Handle::try_current() {
            // A worker of a multi-thread runtime: let its other tasks move on meanwhile.
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        };
        match got {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err("the database thread did not answer".to_string()),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err("the database thread has stopped".to_string()),
        }
    }
}

/// Connections and host states, on the database thread.
struct Backend {
    settings: Settings,
    state: Mutex<Vec<HostState>>,
    limit: tokio::sync::Semaphore,
}

#[derive(Default)]
struct HostState {
    /// Connection established at least once and not failed since.
    active: bool,
    /// Down until then, with why.
    down: Option<(Instant, String)>,
    /// Kept connections and when each was last used.
    idle: Vec<(Conn, Instant)>,
}

enum Conn {
    Mysql(MySqlConnection),
    Pgsql(PgConnection),
    Sqlite(SqliteConnection),
}

/// Why one host did not answer.
enum Failure {
    /// Connection-level: the host is marked down.
    Down(String),
    /// The server answered with an error: try the next host, keep this one.
    Sql(String),
    /// The answer cannot be used (a column type): no other host will do better.
    Fatal(String),
}

impl Backend {
    fn new(settings: Settings) -> Backend {
        let n = settings.hosts.len();
        Backend {
            settings,
            state: Mutex::new((0..n).map(|_| HostState::default()).collect()),
            limit: tokio::sync::Semaphore::new(MAX_CONNECTIONS),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Vec<HostState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(&self, request: Request) -> Result<Vec<String>, String> {
        let _permit = self.limit.acquire().await.map_err(|_| "the database thread is stopping".to_string())?;
        let params = match request {
            Request::Connect => {
                let conn = self.connect(0).await.map_err(|e| format!("{}: {e}", self.settings.hosts[0].name))?;
                self.put_idle(0, conn);
                return Ok(Vec::new());
            }
            Request::Query(params) => params,
        };
        let n = self.settings.hosts.len();
        let mut tried = vec![false; n];
        let mut errors = Vec::new();
        while let Some(h) = self.pick(&tried) {
            tried[h] = true;
            let name = &self.settings.hosts[h].name;
            match self.on_host(h, &params).await {
                Ok(values) => {
                    let mut st = self.state();
                    st[h].active = true;
                    st[h].down = None;
                    return Ok(values);
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Sql(e)) => errors.push(format!("{name}: {e}")),
                Err(Failure::Down(e)) => {
                    let mut st = self.state();
                    st[h].active = false;
                    st[h].idle.clear();
                    st[h].down = Some((Instant::now() + self.settings.retry, e.clone()));
                    errors.push(format!("{name}: {e}"));
                }
            }
        }
        if errors.is_empty() {
            // Every host failed a short while ago: say when and why.
            let st = self.state();
            let now = Instant::now();
            let why: Vec<String> = (0..n)
                .filter_map(|i| {
                    let (until, e) = st[i].down.as_ref()?;
                    let left = until.saturating_duration_since(now).as_secs() + 1;
                    Some(format!("{} is down for {left}s more: {e}", self.settings.hosts[i].name))
                })
                .collect();
            return Err(format!("no database server available ({})", why.join("; ")));
        }
        Err(format!("no database server available: {}", errors.join("; ")))
    }

    /// Postfix's choice: open connections first, then untried or retry-due
    /// hosts; UNIX sockets before TCP; random among equals.
    fn pick(&self, tried: &[bool]) -> Option<usize> {
        let st = self.state();
        let now = Instant::now();
        let hosts = &self.settings.hosts;
        let usable = |i: usize| st[i].down.as_ref().is_none_or(|(until, _)| *until <= now);
        for active in [true, false] {
            for unix in [true, false] {
                let c: Vec<usize> = (0..hosts.len())
                    .filter(|&i| !tried[i] && hosts[i].unix == unix && st[i].active == active && usable(i))
                    .collect();
                if !c.is_empty() {
                    let r = RandomState::new().build_hasher().finish() as usize;
                    return Some(c[r % c.len()]);
                }
            }
        }
        None
    }

    async fn on_host(&self, h: usize, params: &[String]) -> Result<Vec<String>, Failure> {
        // A kept connection may have died with a server restart: then one fresh try.
        let mut kept = self.take_idle(h);
        loop {
            let reused = kept.is_some();
            let mut conn = match kept.take() {
                Some(c) => c,
                None => self.connect(h).await.map_err(Failure::Down)?,
            };
            let ran = tokio::time::timeout(QUERY_TIMEOUT, run(&mut conn, &self.settings.sql, params)).await;
            match ran {
                Ok(Ok(values)) => {
                    self.put_idle(h, conn);
                    return values.map_err(Failure::Fatal);
                }
                // Any failure on a kept connection may be its death (PostgreSQL says so with
                // an error, 57P01): one more try on a fresh one decides.
                Ok(Err(_)) if reused => {
                    // Its idle siblings most likely died with it.
                    self.state()[h].idle.clear();
                    continue;
                }
                Ok(Err(sqlx::Error::Database(e))) if !session_ended(e.code().as_deref()) => {
                    self.put_idle(h, conn);
                    return Err(Failure::Sql(e.to_string()));
                }
                Ok(Err(e)) => return Err(Failure::Down(e.to_string())),
                Err(_) => return Err(Failure::Down(format!("query timed out after {}s", QUERY_TIMEOUT.as_secs()))),
            }
        }
    }

    async fn connect(&self, h: usize) -> Result<Conn, String> {
        let opts = &self.settings.hosts[h].opts;
        let connecting = async {
            Ok::<Conn, sqlx::Error>(match opts {
                Opts::Mysql(o) => Conn::Mysql(MySqlConnection::connect_with(o).await?),
                Opts::Pgsql(o) => Conn::Pgsql(PgConnection::connect_with(o).await?),
                Opts::Sqlite(o) => Conn::Sqlite(SqliteConnection::connect_with(o).await?),
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("connect timed out after {}s", CONNECT_TIMEOUT.as_secs())),
        }
    }

    fn take_idle(&self, h: usize) -> Option<Conn> {
        let mut st = self.state();
        let now = Instant::now();
        while let Some((conn, used)) = st[h].idle.pop() {
            if self.settings.idle.is_none_or(|d| now.duration_since(used) < d) {
                return Some(conn);
            }
            tokio::spawn(conn.close());
        }
        None
    }

    fn put_idle(&self, h: usize, conn: Conn) {
        let mut st = self.state();
        if st[h].idle.len() < MAX_CONNECTIONS {
            st[h].idle.push((conn, Instant::now()));
        } else {
            tokio::spawn(conn.close());
        }
    }

    /// Closes connections idle for longer than `idle_interval`.
    fn sweep(&self) {
        let Some(max) = self.settings.idle else { return };
        let now = Instant::now();
        let mut st = self.state();
        for s in st.iter_mut() {
            let (keep, expired): (Vec<_>, Vec<_>) =
                std::mem::take(&mut s.idle).into_iter().partition(|(_, used)| now.duration_since(*used) < max);
            s.idle = keep;
            for (conn, _) in expired {
                tokio::spawn(conn.close());
            }
        }
    }

    /// Closes every kept connection (the table is gone).
    async fn close_all(&self) {
        let conns: Vec<Conn> = self.state().iter_mut().flat_map(|s| s.idle.drain(..).map(|(c, _)| c)).collect();
        for conn in conns {
            conn.close().await;
        }
    }
}

impl Conn {
    /// Says goodbye to the server (so it logs no aborted connection), briefly.
    async fn close(self) {
        let closing = async {
            let _ = match self {
                Conn::Mysql(c) => c.close().await,
                Conn::Pgsql(c) => c.close().await,
                Conn::Sqlite(c) => c.close().await,
            };
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}

/// Runs the statement; the inner result is the conversion of the rows.
async fn run(conn: &mut Conn, sql: &str, params: &[String]) -> Result<Result<Vec<String>, String>, sqlx::Error> {
    Ok(match conn {
        Conn::Mysql(c) => {
            let mut q = sqlx::query::<MySql>(sql);
            for p in params {
                q = q.bind(p.as_str());
            }
            mysql_values(&q.fetch_all(c).await?)
        }
        Conn::Pgsql(c) => {
            let mut q = sqlx::query::<Postgres>(sql);
            for p in params {
                q = q.bind(p.as_str());
            }
            pg_values(&q.fetch_all(c).await?)
        }
        Conn::Sqlite(c) => {
            let mut q = sqlx::query::<sqlx::Sqlite>(sql);
            for p in params {
                q = q.bind(p.as_str());
            }
            sqlite_values(&q.fetch_all(c).await?)
        }
    })
}

/// SQLSTATEs that end the session: connection exceptions (08xxx) and PostgreSQL's
/// operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now).
fn session_ended(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
}

fn cannot_show(i: usize, type_name: &str) -> String {
    format!(
        "column {} has type {type_name}, which is not shown as text; convert it in the query (CAST(... AS CHAR) or ...::text)",
        i + 1
    )
}

fn utf8(i: usize, bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| format!("column {} is not valid UTF-8", i + 1))
}

fn mysql_values(rows: &[MySqlRow]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for row in rows {
        for i in 0..row.len() {
            let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
            if raw.is_null() {
                continue;
            }
            let type_name = raw.type_info().name().to_string();
            let v = if let Ok(s) = row.try_get::<String, _>(i) {
                s
            } else if let Ok(n) = row.try_get::<i64, _>(i) {
                n.to_string()
            } else if let Ok(n) = row.try_get::<u64, _>(i) {
                n.to_string()
            } else if let Ok(f) = row.try_get::<f64, _>(i) {
                f.to_string()
            } else if let Ok(f) = row.try_get::<f32, _>(i) {
                f.to_string()
            } else if let Ok(b) = row.try_get::<Vec<u8>, _>(i) {
                utf8(i, b)?
            } else if type_name == "DECIMAL" {
                // Sent as text in both protocols.
                utf8(i, row.try_get_unchecked::<Vec<u8>, _>(i).map_err(|e| e.to_string())?)?
            } else {
                return Err(cannot_show(i, &type_name));
            };
            out.push(v);
        }
    }
    Ok(out)
}

fn pg_values(rows: &[PgRow]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for row in rows {
        for i in 0..row.len() {
            let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
            if raw.is_null() {
                continue;
            }
            let type_name = raw.type_info().name().to_string();
            let v = if let Ok(s) = row.try_get::<String, _>(i) {
                s
            } else if let Ok(n) = row.try_get::<i64, _>(i) {
                n.to_string()
            } else if let Ok(n) = row.try_get::<i32, _>(i) {
                n.to_string()
            } else if let Ok(n) = row.try_get::<i16, _>(i) {
                n.to_string()
            } else if let Ok(f) = row.try_get::<f64, _>(i) {
                f.to_string()
            } else if let Ok(f) = row.try_get::<f32, _>(i) {
                f.to_string()
            } else if let Ok(b) = row.try_get::<bool, _>(i) {
                if b { "t" } else { "f" }.to_string()
            } else if let Ok(b) = row.try_get::<Vec<u8>, _>(i) {
                utf8(i, b)?
            } else if let Ok(o) = row.try_get::<sqlx::postgres::types::Oid, _>(i) {
                o.0.to_string()
            } else {
                return Err(cannot_show(i, &type_name));
            };
            out.push(v);
        }
    }
    Ok(out)
}

fn sqlite_values(rows: &[SqliteRow]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for row in rows {
        for i in 0..row.len() {
            // SQLite converts any stored value to text itself.
            if let Some(v) = row.try_get_unchecked::<Option<String>, _>(i).map_err(|e| e.to_string())? {
                out.push(v);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open;
    use crate::testutil::Dir;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("60"), Some(60));
        assert_eq!(parse_seconds("2m"), Some(120));
        assert_eq!(parse_seconds("1h"), Some(3600));
        assert_eq!(parse_seconds("x"), None);
        assert_eq!(parse_seconds("-1"), None);
    }

    fn sqlite_db(dir: &Dir) -> PathBuf {
        let db = dir.path("mail.sqlite");
        let url = format!("sqlite://{}?mode=rwc", db.display());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = SqliteConnection::connect(&url).await.unwrap();
            for stmt in [
                "CREATE TABLE virtual_aliases (source TEXT, destination TEXT, n INTEGER, r REAL)",
                "INSERT INTO virtual_aliases VALUES ('alias@example.com', 'one@example.com', 7, 1.5)",
                "INSERT INTO virtual_aliases VALUES ('list@example.com', 'a@example.com', NULL, NULL)",
                "INSERT INTO virtual_aliases VALUES ('list@example.com', 'b@example.com', NULL, NULL)",
                "INSERT INTO virtual_aliases VALUES ('x'' or ''1''=''1', 'quoted@example.com', NULL, NULL)",
            ] {
                sqlx::query(stmt).execute(&mut c).await.unwrap();
            }
            c.close().await.unwrap();
        });
        db
    }

    #[test]
    fn sqlite_lookups() {
        let dir = Dir::new();
        let db = sqlite_db(&dir);
        let cf = dir.write(
            "aliases.cf",
            &format!("dbpath = {}\nquery = SELECT destination FROM virtual_aliases WHERE source='%s'\n", db.display()),
        );
        let t = open(&format!("sqlite:{}", cf.display())).unwrap();
        assert_eq!(t.lookup("Alias@Example.com").unwrap().as_deref(), Some("one@example.com"));
        assert_eq!(t.lookup("list@example.com").unwrap().as_deref(), Some("a@example.com,b@example.com"));
        assert_eq!(t.lookup("nobody@example.com").unwrap(), None);
        // The injection attempt finds only the row whose source is literally that (folded) text.
        assert_eq!(t.lookup("x' OR '1'='1").unwrap().as_deref(), Some("quoted@example.com"));
        assert_eq!(t.lookup("y' OR '1'='1").unwrap(), None);

        // Numbers and NULLs: every non-NULL column of every row.
        let cf = dir.write(
            "multi.cf",
            &format!("dbpath = {}\nquery = SELECT n, r FROM virtual_aliases WHERE source LIKE '%%@%d'\nresult_format = <%s>\n", db.display()),
        );
        let t = open(&format!("sqlite:{}", cf.display())).unwrap();
        assert_eq!(t.lookup("any@example.com").unwrap().as_deref(), Some("<7>,<1.5>"));
        assert_eq!(t.lookup("nodomain").unwrap(), None, "%d without a domain: no query");

        // Replacing the database file (not editing it in place) asks daemons to reopen.
        assert!(!t.changed());
        let copy = dir.path("copy.sqlite");
        std::fs::copy(&db, &copy).unwrap();
        std::fs::rename(&copy, &db).unwrap();
        assert!(t.changed());
    }

    #[test]
    fn sqlite_from_inside_a_runtime() {
        let dir = Dir::new();
        let db = sqlite_db(&dir);
        let cf = dir.write(
            "a.cf",
            &format!("dbpath = {}\nquery = SELECT destination FROM virtual_aliases WHERE source='%s'\n", db.display()),
        );
        let t: Arc<dyn Table> = Arc::from(open(&format!("sqlite:{}", cf.display())).unwrap());
        // As smtpd calls it: synchronously from tasks of a multi-thread runtime.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let got = rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let t = t.clone();
                tasks.push(tokio::spawn(async move { t.lookup("alias@example.com").unwrap() }));
            }
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.unwrap());
            }
            out
        });
        assert!(got.iter().all(|v| v.as_deref() == Some("one@example.com")), "{got:?}");
        // And from a current-thread runtime (rmaster's), where block_in_place is not allowed.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let v = rt.block_on(async { t.lookup("alias@example.com").unwrap() });
        assert_eq!(v.as_deref(), Some("one@example.com"));
    }

    #[test]
    fn open_errors() {
        let dir = Dir::new();
        let cf = dir.write("missing.cf", "dbpath = /nonexistent/mail.sqlite\nquery = SELECT 1 WHERE '%s'='x'\n");
        let e = open(&format!("sqlite:{}", cf.display())).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/mail.sqlite") || e.contains("unable to open"), "{e}");
        let cf = dir.write("tls.cf", "dbname = m\nquery = SELECT 1\ntls_CAfile = /etc/ssl/ca.pem\n");
        let e = open(&format!("mysql:{}", cf.display())).unwrap_err().to_string();
        assert!(e.contains("tls_CAfile: TLS to the database is not built into rpost"), "{e}");
        let cf = dir.write("retry.cf", "dbname = m\nquery = SELECT 1\nretry_interval = soon\n");
        let e = open(&format!("pgsql:{}", cf.display())).unwrap_err().to_string();
        assert!(e.contains("retry_interval: bad time \"soon\""), "{e}");
    }

    #[test]
    fn silent_server_times_out() {
        // Accepts connections and never says a word (a hung server): the connect times out.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming().take(4).flatten() {
                held.push(s);
            }
            std::thread::sleep(CONNECT_TIMEOUT * 3);
        });
        let dir = Dir::new();
        let cf = dir
            .write("hung.cf", &format!("hosts = 127.0.0.1:{port}\ndbname = m\nquery = SELECT 1 FROM t WHERE k='%s'\n"));
        let t = open(&format!("mysql:{}", cf.display())).unwrap();
        let e = t.lookup("a@example.com").unwrap_err().to_string();
        assert!(e.contains(&format!("127.0.0.1:{port}: connect timed out after 10s")), "{e}");
    }

    #[test]
    fn server_down_is_an_error_not_a_miss() {
        // A closed loopback port: connection refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = Dir::new();
        for kind in ["mysql", "pgsql"] {
            let cf = dir.write(
                &format!("{kind}.cf"),
                &format!("hosts = 127.0.0.1:{port}\nuser = u\npassword = secret-pw\ndbname = m\nquery = SELECT 1 FROM t WHERE k='%s'\n"),
            );
            let t = open(&format!("{kind}:{}", cf.display())).expect("opening does not connect");
            let e = t.lookup("a@example.com").unwrap_err().to_string();
            assert!(e.contains("no database server available") && e.contains(&format!("127.0.0.1:{port}")), "{e}");
            assert!(!e.contains("secret-pw"), "{e}");
            // Now the host is down for retry_interval: the next lookup says so without trying.
            let e = t.lookup("a@example.com").unwrap_err().to_string();
            assert!(e.contains("is down for"), "{e}");
            // Suppressed queries never touch the database.
            let cf = dir.write(
                &format!("{kind}-d.cf"),
                &format!("hosts = 127.0.0.1:{port}\ndbname = m\nquery = SELECT 1 FROM t WHERE k='%d'\n"),
            );
            let t = open(&format!("{kind}:{}", cf.display())).unwrap();
            assert_eq!(t.lookup("no-domain").unwrap(), None);
        }
    }
}

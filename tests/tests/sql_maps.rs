//! `rmaster map query` (postmap -q) against real `mysql:`, `pgsql:` and `sqlite:` tables:
//! hits, misses, several rows, Postfix's `%u`/`%d`/`domain` rules, an SQL injection attempt
//! that must be a plain miss, and a database that cannot be reached, which must be an error
//! (a temporary failure for the daemons), never "not found".
//!
//! MariaDB and PostgreSQL come from `.ci/run`; each test makes its own database and user and
//! drops them. Without a server (a developer machine, or not root) those tests say why and
//! skip. SQLite always runs.

use std::net::TcpListener;

use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;
use rpost_testkit::sqldb::{self, Kind, TestDb};

/// The lookup table of every test: one alias, a list of two, and a row whose key is the
/// injection text itself (folded to lower case as lookups fold keys), so only an exact match
/// of that text may find anything.
const ROWS: &[(&str, &str)] = &[
    ("alias@example.com", "one@example.com"),
    ("list@example.com", "a@example.com"),
    ("list@example.com", "b@example.com"),
    ("info@example.net", "net-info@example.net"),
];

struct Answer {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn query(suite: &Suite, spec: &str, key: &str) -> Answer {
    let out = suite.rmaster(&["map", "query", spec, key]);
    Answer {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn hit(suite: &Suite, spec: &str, key: &str, want: &str) {
    let a = query(suite, spec, key);
    assert!(
        a.ok && a.stdout == format!("{want}\n"),
        "{spec} {key:?}: want {want:?}, got {:?} / {}",
        a.stdout,
        a.stderr
    );
}

fn miss(suite: &Suite, spec: &str, key: &str) {
    let a = query(suite, spec, key);
    assert!(
        !a.ok && a.stdout.is_empty() && a.stderr.trim().is_empty(),
        "{spec} {key:?}: want a plain miss: {:?} / {}",
        a.stdout,
        a.stderr
    );
}

/// A lookup that fails (exit status 1, a message naming the table, nothing on stdout).
fn error(suite: &Suite, spec: &str, key: &str) -> String {
    let a = query(suite, spec, key);
    assert!(
        !a.ok && a.stdout.is_empty() && a.stderr.contains("lookup of"),
        "{spec} {key:?}: want an error: {:?} / {}",
        a.stdout,
        a.stderr
    );
    a.stderr
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn table_sql(kind: Kind) -> String {
    let mut sql = match kind {
        Kind::Mysql => "CREATE TABLE virtual_aliases (id int NOT NULL auto_increment, source varchar(100) NOT NULL, destination varchar(100) NOT NULL, PRIMARY KEY (id));\n",
        Kind::Pgsql => "CREATE TABLE virtual_aliases (id serial PRIMARY KEY, source varchar(100) NOT NULL, destination varchar(100) NOT NULL);\n",
    }
    .to_string();
    for (s, d) in ROWS {
        sql.push_str(&format!("INSERT INTO virtual_aliases (source, destination) VALUES ('{s}', '{d}');\n"));
    }
    sql
}

/// The common checks, on a table file text that reaches the database (`conn`).
fn check_table(suite: &Suite, kind_name: &str, conn: &str) {
    let cf = |name: &str, rest: &str| {
        suite.write_config(name, &format!("{conn}{rest}"));
        format!("{kind_name}:{}", suite.config_dir().join(name).display())
    };
    let aliases =
        cf("aliases.cf", "query = SELECT destination FROM virtual_aliases WHERE source='%s' ORDER BY destination\n");
    hit(suite, &aliases, "alias@example.com", "one@example.com");
    hit(suite, &aliases, "ALIAS@Example.COM", "one@example.com");
    hit(suite, &aliases, "list@example.com", "a@example.com,b@example.com");
    miss(suite, &aliases, "nobody@example.com");
    // Injection attempts are keys like any other: not found, and the whole table is not
    // returned (which a pasted-in key would do).
    for key in ["x' OR '1'='1", "x\\' OR 1=1 -- ", "' UNION SELECT destination FROM virtual_aliases -- ", "%s"] {
        miss(suite, &aliases, key);
    }

    // %u and %d: a key without a domain is not queried; result_format; domain restricts.
    let by_parts = cf(
        "parts.cf",
        "query = SELECT destination FROM virtual_aliases WHERE source = '%u@%d'\nresult_format = <%s>\ndomain = example.com\n",
    );
    hit(suite, &by_parts, "alias@example.com", "<one@example.com>");
    miss(suite, &by_parts, "info@example.net");
    miss(suite, &by_parts, "alias");
    let wildcard = cf(
        "like.cf",
        "query = SELECT destination FROM virtual_aliases WHERE source LIKE '%%@%d' ORDER BY destination\nexpansion_limit = 2\n",
    );
    hit(suite, &wildcard, "anyone@example.net", "net-info@example.net");
    let e = error(suite, &wildcard, "anyone@example.com");
    assert!(e.contains("expansion limit 2 exceeded"), "{e}");
    // Numbers come back as text (the seed's `SELECT 1` tables).
    let one = cf("one.cf", "query = SELECT 1 FROM virtual_aliases WHERE source='%s'\n");
    hit(suite, &one, "alias@example.com", "1");

    // An SQL error is an error, not a miss.
    let bad = cf("bad.cf", "query = SELECT destination FROM no_such_table WHERE source='%s'\n");
    error(suite, &bad, "alias@example.com");
}

fn server_tests(kind: Kind) {
    let db = match TestDb::create(kind) {
        Ok(db) => db,
        Err(why) => {
            eprintln!("SKIPPED: {} tables not tested: {why}", kind.table_type());
            return;
        }
    };
    db.exec(&table_sql(kind));
    let suite = Suite::builder().prepare();
    let t = kind.table_type();
    check_table(&suite, t, &db.cf_lines());

    // The database cannot be reached: an error naming the host, never the password.
    let port = closed_port();
    let down =
        format!("hosts = 127.0.0.1:{port}\nuser = {}\npassword = {}\ndbname = {}\n", db.user, db.password, db.name);
    suite
        .write_config("down.cf", &format!("{down}query = SELECT destination FROM virtual_aliases WHERE source='%s'\n"));
    let spec = format!("{t}:{}", suite.config_dir().join("down.cf").display());
    let e = error(&suite, &spec, "alias@example.com");
    assert!(e.contains("no database server available") && e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(!e.contains(&db.password), "the password leaked: {e}");

    // A wrong password is an error too.
    let wrong = db.cf_lines().replace(&db.password, "not-the-password");
    suite.write_config(
        "wrong.cf",
        &format!("{wrong}query = SELECT destination FROM virtual_aliases WHERE source='%s'\n"),
    );
    let e = error(&suite, &format!("{t}:{}", suite.config_dir().join("wrong.cf").display()), "alias@example.com");
    assert!(!e.contains("not-the-password"), "{e}");

    // Failover: the dead host is skipped and the live one answers.
    let both = db.cf_lines().replace(
        &format!("hosts = 127.0.0.1:{}", db.port),
        &format!("hosts = 127.0.0.1:{port}, inet:127.0.0.1:{}", db.port),
    );
    suite
        .write_config("both.cf", &format!("{both}query = SELECT destination FROM virtual_aliases WHERE source='%s'\n"));
    hit(
        &suite,
        &format!("{t}:{}", suite.config_dir().join("both.cf").display()),
        "alias@example.com",
        "one@example.com",
    );

    // Column types come back as text where they can; others say what to do.
    let typed = |name: &str, select: &str| {
        suite.write_config(
            name,
            &format!("{}query = SELECT {select} FROM virtual_aliases WHERE source='%s'\n", db.cf_lines()),
        );
        format!("{t}:{}", suite.config_dir().join(name).display())
    };
    match kind {
        Kind::Mysql => {
            hit(
                &suite,
                &typed("types.cf", "CAST(1.5 AS DECIMAL(5,2)), TRUE, 2.5e0, NULL, id"),
                "alias@example.com",
                "1.50,1,2.5,1",
            );
            let e = error(&suite, &typed("date.cf", "CURRENT_DATE"), "alias@example.com");
            assert!(e.contains("has type DATE") && e.contains("CAST"), "{e}");
        }
        Kind::Pgsql => {
            hit(&suite, &typed("types.cf", "true, 2.5::float8, NULL, id"), "alias@example.com", "t,2.5,1");
            let e = error(&suite, &typed("numeric.cf", "1.5::numeric"), "alias@example.com");
            assert!(e.contains("has type NUMERIC") && e.contains("::text"), "{e}");
            hit(&suite, &typed("cast.cf", "1.5::numeric::text"), "alias@example.com", "1.5");
        }
    }

    if kind == Kind::Mysql {
        // Postfix's default `hosts = localhost` is the server's UNIX socket for MySQL, as
        // in libmysqlclient; `unix:/path` names one explicitly.
        let socket = db.exec("SELECT @@socket;\n").trim().to_string();
        let tcp = format!("hosts = 127.0.0.1:{}\n", db.port);
        for (name, hosts) in [("default.cf", String::new()), ("socket.cf", format!("hosts = unix:{socket}\n"))] {
            let text = db.cf_lines().replace(&tcp, &hosts);
            suite.write_config(
                name,
                &format!("{text}query = SELECT destination FROM virtual_aliases WHERE source='%s'\n"),
            );
            hit(
                &suite,
                &format!("mysql:{}", suite.config_dir().join(name).display()),
                "alias@example.com",
                "one@example.com",
            );
        }
    }
}

/// smtpd keeps its connections between lookups; when the server drops them (as a restart
/// does), the next lookup connects anew instead of failing.
fn daemon_reconnects(kind: Kind) {
    let db = match TestDb::create(kind) {
        Ok(db) => db,
        Err(why) => {
            eprintln!("SKIPPED: {} reconnection not tested: {why}", kind.table_type());
            return;
        }
    };
    db.exec("CREATE TABLE users (email varchar(100) NOT NULL);\nINSERT INTO users VALUES ('bob@example.com');\n");
    let t = kind.table_type();
    let cf = format!("{}query = SELECT 1 FROM users WHERE email='%s'\n", db.cf_lines());
    let suite = Suite::builder()
        .main("mydestination", "localhost")
        .main("virtual_mailbox_domains", "example.com")
        .main("virtual_mailbox_maps", &format!("{t}:{{root}}/etc/users.cf"))
        .main("alias_maps", "")
        .main("local_recipient_maps", "")
        .inet("smtp", "n - n - - smtpd")
        .start_with(|s| s.write_config("users.cf", &cf));
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    let r = c.cmd("MAIL FROM:<sender@client.example>");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<bob@example.com>");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<nobody@example.com>");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    db.kill_connections();
    let r = c.cmd("RCPT TO:<bob@example.com>");
    assert!(r.starts_with("250"), "after the server dropped the session: {r}\n{}", suite.log());
    let r = c.cmd("RCPT TO:<nobody@example.com>");
    assert!(r.starts_with("550 5.1.1"), "{r}");
    c.cmd("QUIT");
}

/// Connections idle for `idle_interval` are closed (politely: the server sees a logout).
fn idle_connections_close(kind: Kind) {
    let db = match TestDb::create(kind) {
        Ok(db) => db,
        Err(why) => {
            eprintln!("SKIPPED: {} idle_interval not tested: {why}", kind.table_type());
            return;
        }
    };
    db.exec("CREATE TABLE users (email varchar(100) NOT NULL);\nINSERT INTO users VALUES ('bob@example.com');\n");
    let t = kind.table_type();
    let cf = format!("{}query = SELECT 1 FROM users WHERE email='%s'\nidle_interval = 1\n", db.cf_lines());
    let suite = Suite::builder()
        .main("mydestination", "localhost")
        .main("virtual_mailbox_domains", "example.com")
        .main("virtual_mailbox_maps", &format!("{t}:{{root}}/etc/users.cf"))
        .main("alias_maps", "")
        .main("local_recipient_maps", "")
        .inet("smtp", "n - n - - smtpd")
        .start_with(|s| s.write_config("users.cf", &cf));
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<sender@client.example>");
    let r = c.cmd("RCPT TO:<bob@example.com>");
    assert!(r.starts_with("250"), "{r}");
    // smtpd is still running and connected to us; its database session goes away by itself.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while db.connections() > 0 {
        assert!(std::time::Instant::now() < deadline, "{t} session still open long after idle_interval");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let r = c.cmd("RCPT TO:<bob@example.com>");
    assert!(r.starts_with("250"), "connects again when needed: {r}");
    c.cmd("QUIT");
}

#[test]
fn mysql_idle_connections_close() {
    idle_connections_close(Kind::Mysql);
}

#[test]
fn pgsql_idle_connections_close() {
    idle_connections_close(Kind::Pgsql);
}

#[test]
fn mysql_maps() {
    server_tests(Kind::Mysql);
}

#[test]
fn pgsql_maps() {
    server_tests(Kind::Pgsql);
}

#[test]
fn mysql_daemon_reconnects() {
    daemon_reconnects(Kind::Mysql);
}

#[test]
fn pgsql_daemon_reconnects() {
    daemon_reconnects(Kind::Pgsql);
}

#[test]
fn sqlite_maps() {
    let suite = Suite::builder().prepare();
    let db = suite.root().join("mail.sqlite");
    let mut sql =
        "CREATE TABLE virtual_aliases (id INTEGER PRIMARY KEY, source TEXT NOT NULL, destination TEXT NOT NULL);\n"
            .to_string();
    for (s, d) in ROWS {
        sql.push_str(&format!("INSERT INTO virtual_aliases (source, destination) VALUES ('{s}', '{d}');\n"));
    }
    if let Err(e) = sqldb::sqlite(&db, &sql) {
        panic!("cannot build the SQLite test database (is the sqlite3 shell installed? .ci/run installs it): {e}");
    }
    // The daemons read it as mail_owner: world-readable like any table file.
    check_table(&suite, "sqlite", &format!("dbpath = {}\n", db.display()));

    // A missing database file is an error when the table is opened.
    suite.write_config("gone.cf", "dbpath = /nonexistent/mail.sqlite\nquery = SELECT 1 WHERE '%s' = 'x'\n");
    let a = query(&suite, &format!("sqlite:{}", suite.config_dir().join("gone.cf").display()), "x");
    assert!(!a.ok && a.stderr.contains("/nonexistent/mail.sqlite"), "{}", a.stderr);
    // A table file that would let a key become SQL is refused at open.
    suite.write_config(
        "unsafe.cf",
        &format!(
            "dbpath = {}\nquery = SELECT destination FROM virtual_aliases WHERE source = ? OR source = '%s'\n",
            db.display()
        ),
    );
    let a = query(&suite, &format!("sqlite:{}", suite.config_dir().join("unsafe.cf").display()), "x");
    assert!(!a.ok && a.stderr.contains("bind parameter"), "{}", a.stderr);
}

//! Throw-away databases for tests of `mysql:`, `pgsql:` and `sqlite:` tables.
//!
//! [`TestDb::create`] makes a new database and a new user with random names and password on
//! the local MariaDB or PostgreSQL server (which `.ci/run` installs and starts), and drops
//! both when the value is dropped, so tests share no state. Administration goes through the
//! servers' own clients as root: `mariadb` over the UNIX socket (root's unix_socket login)
//! and `psql` as the `postgres` user (peer login). When that is impossible (no server, not
//! root), `create` returns why, and the test prints it and skips. [`sqlite`] fills an SQLite
//! file with the `sqlite3` shell.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// MariaDB (or MySQL), for `mysql:` tables.
    Mysql,
    /// PostgreSQL, for `pgsql:` tables.
    Pgsql,
}

impl Kind {
    /// The table type: `mysql` or `pgsql`.
    pub fn table_type(self) -> &'static str {
        match self {
            Kind::Mysql => "mysql",
            Kind::Pgsql => "pgsql",
        }
    }
}

/// A database and a user that may SELECT from it; dropped on drop.
#[derive(Debug)]
pub struct TestDb {
    /// The server.
    pub kind: Kind,
    /// Database name.
    pub name: String,
    /// Login of the user the tables use.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The server's TCP port on 127.0.0.1.
    pub port: u16,
}

fn random_hex() -> String {
    format!("{:016x}", RandomState::new().build_hasher().finish())
}

/// Runs `program args` with `input` on stdin; stdout, or stderr as the error.
fn run(program: &str, args: &[&str], input: &str) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).map_err(|e| format!("{program}: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mysql_client() -> &'static str {
    if Command::new("mariadb").arg("--version").output().is_ok() { "mariadb" } else { "mysql" }
}

impl TestDb {
    /// A new, empty database and user, or why there is none.
    pub fn create(kind: Kind) -> Result<TestDb, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err(format!("{kind:?} tests need root to create a database (as .ci/run runs them)"));
        }
        let tag = &random_hex()[..10];
        let name = format!("rpost_test_{tag}");
        let user = format!("rpost_{tag}");
        let password = format!("pw-{}", random_hex());
        let port;
        match kind {
            Kind::Mysql => {
                let p = run(mysql_client(), &["--batch", "--skip-column-names"], "SELECT @@port;\n")
                    .map_err(|e| format!("no MariaDB server to use ({e}); .ci/run installs and starts one"))?;
                port = p.trim().parse().map_err(|_| format!("MariaDB port: {p}"))?;
                let sql = format!(
                    "CREATE DATABASE `{name}` DEFAULT CHARACTER SET utf8mb4;\n\
                     CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';\n\
                     CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}';\n\
                     GRANT SELECT ON `{name}`.* TO '{user}'@'127.0.0.1';\n\
                     GRANT SELECT ON `{name}`.* TO '{user}'@'localhost';\n"
                );
                run(mysql_client(), &["--batch"], &sql)?;
            }
            Kind::Pgsql => {
                let p = psql("postgres", "SHOW port;\n")
                    .map_err(|e| format!("no PostgreSQL server to use ({e}); .ci/run installs and starts one"))?;
                port = p.trim().parse().map_err(|_| format!("PostgreSQL port: {p}"))?;
                psql(
                    "postgres",
                    &format!("CREATE ROLE {user} LOGIN PASSWORD '{password}';\nCREATE DATABASE {name};\n"),
                )?;
                psql(&name, &format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {user};\n"))?;
            }
        }
        Ok(TestDb { kind, name, user, password, port })
    }

    /// Runs SQL as the administrator in this database; its output (tab-separated rows).
    pub fn admin(&self, sql: &str) -> Result<String, String> {
        match self.kind {
            Kind::Mysql => run(mysql_client(), &["--batch", "--skip-column-names", &self.name], sql),
            Kind::Pgsql => psql(&self.name, sql),
        }
    }

    /// [`TestDb::admin`] that panics on error.
    pub fn exec(&self, sql: &str) -> String {
        self.admin(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The connection lines of a table file: `hosts`, `user`, `password`, `dbname`.
    pub fn cf_lines(&self) -> String {
        format!(
            "hosts = 127.0.0.1:{}\nuser = {}\npassword = {}\ndbname = {}\n",
            self.port, self.user, self.password, self.name
        )
    }

    /// Ends every session of the test user, as a server restart would.
    pub fn kill_connections(&self) {
        match self.kind {
            Kind::Mysql => {
                let ids = self
                    .exec(&format!("SELECT id FROM information_schema.processlist WHERE user = '{}';\n", self.user));
                for id in ids.split_whitespace() {
                    // It may have gone by itself meanwhile.
                    let _ = self.admin(&format!("KILL {id};\n"));
                }
            }
            Kind::Pgsql => {
                self.exec(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}';\n",
                    self.user
                ));
            }
        }
    }

    /// How many sessions the test user has open.
    pub fn connections(&self) -> usize {
        let sql = match self.kind {
            Kind::Mysql => {
                format!("SELECT COUNT(*) FROM information_schema.processlist WHERE user = '{}';\n", self.user)
            }
            Kind::Pgsql => format!("SELECT COUNT(*) FROM pg_stat_activity WHERE usename = '{}';\n", self.user),
        };
        self.exec(&sql).trim().parse().unwrap_or(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, user) = (&self.name, &self.user);
        let _ = match self.kind {
            Kind::Mysql => run(
                mysql_client(),
                &["--batch"],
                &format!(
                    "DROP DATABASE IF EXISTS `{name}`;\nDROP USER IF EXISTS '{user}'@'127.0.0.1', '{user}'@'localhost';\n"
                ),
            ),
            Kind::Pgsql => psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE);\nDROP ROLE IF EXISTS {user};\n"),
            ),
        };
    }
}

/// psql as the `postgres` user in database `db`, stopping at the first error.
fn psql(db: &str, sql: &str) -> Result<String, String> {
    run("runuser", &["-u", "postgres", "--", "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db], sql)
}

/// Runs SQL on the SQLite database `file` (created when missing) with the `sqlite3` shell,
/// or Python's sqlite3 module where the shell is not installed.
pub fn sqlite(file: &Path, sql: &str) -> Result<(), String> {
    let file = file.to_str().ok_or("non-UTF-8 path")?;
    match run("sqlite3", &["-bail", file], sql) {
        Ok(_) => Ok(()),
        Err(e) if e.contains("No such file") => {
            let script = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.stdin.read())\nc.commit()\n";
            run("python3", &["-c", script, file], sql).map(|_| ()).map_err(|p| format!("{e}; {p}"))
        }
        Err(e) => Err(e),
    }
}

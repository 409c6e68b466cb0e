//! SQL table files: mysql_table(5), pgsql_table(5), sqlite_table(5).
//!
//! This module parses the table file into [`SqlConfig`] and does all the
//! text work of a lookup, so a driver only has to connect and run a query:
//!
//! ```text
//! let cfg = SqlConfig::load(SqlDriver::Mysql, path)?;     // at open
//! let domains = cfg.domain_filter()?;                     // at open
//! match cfg.query_for(key, &domains)? {                   // per lookup
//!     None => Ok(None),                                   // suppressed: not found
//!     Some(sql) => {
//!         let rows: Vec<String> = /* run sql, every column of every row */;
//!         cfg.format_results(key, &rows)                  // result_format, join with ",", expansion_limit
//!     }
//! }
//! ```
//!
//! The file is `name = value` lines in main.cf syntax. Known names: `hosts`
//! (default `localhost`; `host`, `host:port`, `inet:host:port`,
//! `unix:/socket`, `[ipv6]:port`, and for pgsql `postgresql://` URIs),
//! `user`, `password`, `dbname` (mysql, pgsql; required), `dbpath`
//! (sqlite; required), `query`, `result_format` (default `%s`), `domain`,
//! `expansion_limit`, the legacy `table`/`select_field`/`where_field`/
//! `additional_conditions` (and pgsql `select_function`) from which a query
//! is built when `query` is absent, and driver options kept in
//! [`SqlConfig::options`] (mysql `option_file`, `option_group`, `tls_*`,
//! `require_result_set`; pgsql `encoding`; `idle_interval`,
//! `retry_interval`). Unknown names are warnings.
//!
//! ## Query expansion
//!
//! In `query`: `%%` is `%`; `%s` the key; `%u` its local part (the whole
//! key when it has no `@`); `%d` its domain; `%1`..`%9` the domain's labels
//! from the right (`user@mail.example.com`: `%1` = `com`, `%3` = `mail`).
//! When `%u` would be empty, or `%d`/`%N` have nothing to stand for, the
//! query is suppressed and the lookup finds nothing, as in Postfix. In
//! `result_format`, `%s %u %d` refer to the database value and `%S %U %D`
//! and `%1`..`%9` to the key; results are not quoted.
//!
//! ## Quoting
//!
//! Every key part put into a query goes through [`quote`], which assumes
//! the template puts it inside single quotes (`'%s'`), as Postfix's
//! documentation does. All drivers double `'` (standard SQL: `O'Brien` →
//! `O''Brien`). MySQL also treats `\` as an escape inside string literals,
//! so for MySQL `\` is doubled too; otherwise `\'` in a key would end the
//! literal. PostgreSQL (with `standard_conforming_strings = on`, the
//! default since 9.1; the driver must make sure of it) and SQLite take `\`
//! literally, so it is left alone. Keys with a NUL byte are refused. The
//! MySQL driver must talk utf8mb4, where no multibyte character ends in a
//! byte that looks like `\` or `'`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::{LookupError, Table, fold, logical_lines, read_file};

/// Which SQL table type a file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDriver {
    /// `mysql:` (MySQL, MariaDB).
    Mysql,
    /// `pgsql:` (PostgreSQL).
    Pgsql,
    /// `sqlite:`.
    Sqlite,
}

impl SqlDriver {
    /// The driver for a table type name (`mysql`, `pgsql`, `sqlite`).
    pub fn from_type(kind: &str) -> Option<SqlDriver> {
        match kind {
            "mysql" => Some(SqlDriver::Mysql),
            "pgsql" => Some(SqlDriver::Pgsql),
            "sqlite" => Some(SqlDriver::Sqlite),
            _ => None,
        }
    }

    /// The table type name.
    pub fn name(self) -> &'static str {
        match self {
            SqlDriver::Mysql => "mysql",
            SqlDriver::Pgsql => "pgsql",
            SqlDriver::Sqlite => "sqlite",
        }
    }

    /// Driver options this type accepts besides the common ones.
    fn options(self) -> &'static [&'static str] {
        match self {
            SqlDriver::Mysql => &[
                "option_file",
                "option_group",
                "tls_cert_file",
                "tls_key_file",
                "tls_CAfile",
                "tls_CApath",
                "tls_verify_cert",
                "tls_ciphers",
                "require_result_set",
                "idle_interval",
                "retry_interval",
            ],
            SqlDriver::Pgsql => &["encoding", "idle_interval", "retry_interval"],
            SqlDriver::Sqlite => &[],
        }
    }
}

/// One entry of `hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlHost {
    /// TCP: host name or address, optional port.
    Inet {
        /// Host name or IP address (without brackets).
        host: String,
        /// Port, or the driver's default.
        port: Option<u16>,
    },
    /// A UNIX-domain socket.
    Unix(PathBuf),
    /// A PostgreSQL connection URI, passed through.
    Uri(String),
}

impl SqlHost {
    fn parse(text: &str, driver: SqlDriver) -> Result<SqlHost, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(SqlHost::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(SqlHost::Unix(PathBuf::from(text)));
        }
        if driver == SqlDriver::Pgsql && (text.starts_with("postgresql://") || text.starts_with("postgres://")) {
            return Ok(SqlHost::Uri(text.to_string()));
        }
        let hostport = text.strip_prefix("inet:").unwrap_or(text);
        let bad = || format!("bad host \"{text}\"");
        let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else {
            match hostport.split_once(':') {
                // More than one colon: a bare IPv6 address without port.
                Some((_, rest)) if rest.contains(':') => (hostport, None),
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?),
        };
        Ok(SqlHost::Inet { host: host.to_string(), port })
    }
}

/// A parsed SQL table file.
#[derive(Clone, PartialEq, Eq)]
pub struct SqlConfig {
    /// The table type.
    pub driver: SqlDriver,
    /// The file, for messages.
    pub file: String,
    /// Servers to try in order (mysql, pgsql).
    pub hosts: Vec<SqlHost>,
    /// Login name.
    pub user: String,
    /// Login password (hidden from `Debug`).
    pub password: String,
    /// Database name (mysql, pgsql).
    pub dbname: String,
    /// Database file (sqlite).
    pub dbpath: String,
    /// The query template, validated.
    pub query: String,
    /// The result template, validated; `%s` by default.
    pub result_format: String,
    /// Only keys `user@domain` with a listed domain are queried; empty =
    /// all keys. Items are domain names, `/file` names or `type:name` tables.
    pub domain: Vec<String>,
    /// Most results a lookup may return; 0 = no limit.
    pub expansion_limit: usize,
    /// Driver-specific settings by name (`tls_CAfile`, `option_file`, ...).
    pub options: BTreeMap<String, String>,
    /// Unknown parameter names, as `file:line: message`.
    pub warnings: Vec<String>,
}

impl fmt::Debug for SqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlConfig")
            .field("driver", &self.driver)
            .field("file", &self.file)
            .field("hosts", &self.hosts)
            .field("user", &self.user)
            .field("password", &if self.password.is_empty() { "" } else { "<hidden>" })
            .field("dbname", &self.dbname)
            .field("dbpath", &self.dbpath)
            .field("query", &self.query)
            .field("result_format", &self.result_format)
            .field("domain", &self.domain)
            .field("expansion_limit", &self.expansion_limit)
            .field("options", &self.options)
            .field("warnings", &self.warnings)
            .finish()
    }
}

const LEGACY: &[&str] = &["table", "select_field", "where_field", "additional_conditions", "select_function"];
const COMMON: &[&str] =
    &["hosts", "user", "password", "dbname", "dbpath", "query", "result_format", "domain", "expansion_limit"];

impl SqlConfig {
    /// Reads and parses a table file.
    pub fn load(driver: SqlDriver, path: &Path) -> Result<SqlConfig, LookupError> {
        let data = read_file(path)?;
        if data.starts_with(b"SQLite format 3\0") {
            return Err(LookupError::open(
                &format!("{}:{}", driver.name(), path.display()),
                format!(
                    "{} is an SQLite database; {}: takes a table file (sqlite_table(5)) with \"dbpath = {}\" and a query",
                    path.display(),
                    driver.name(),
                    path.display()
                ),
            ));
        }
        SqlConfig::parse(driver, &path.display().to_string(), &data)
    }

    /// Parses table file text; `file` names it in messages.
    pub fn parse(driver: SqlDriver, file: &str, data: &[u8]) -> Result<SqlConfig, LookupError> {
        let mut values: BTreeMap<String, (String, usize)> = BTreeMap::new();
        let mut warnings = Vec::new();
        for ll in logical_lines(file, data)? {
            let Some((name, value)) = ll.text.split_once('=') else {
                return Err(LookupError::syntax(file, ll.line, format!("expected \"name = value\": \"{}\"", ll.text)));
            };
            let name = name.trim();
            let known = COMMON.contains(&name)
                || LEGACY.contains(&name) && (name != "select_function" || driver == SqlDriver::Pgsql)
                || driver.options().contains(&name);
            if !known {
                warnings.push(format!("{file}:{}: unknown {} parameter \"{name}\"", ll.line, driver.name()));
                continue;
            }
            // Later settings replace earlier ones, as in main.cf.
            values.insert(name.to_string(), (value.trim().to_string(), ll.line));
        }
        let get = |name: &str| values.get(name).map(|(v, _)| v.as_str());
        let err = |name: &str, message: String| match values.get(name) {
            Some((_, line)) => LookupError::syntax(file, *line, format!("{name}: {message}")),
            None => LookupError::syntax(file, 0, format!("{name}: {message}")),
        };
        let list = |name: &str| get(name).map(split_list).unwrap_or_default();

        let mut hosts = Vec::new();
        if driver != SqlDriver::Sqlite {
            let names = list("hosts");
            let names = if names.is_empty() { vec!["localhost".to_string()] } else { names };
            for h in names {
                hosts.push(SqlHost::parse(&h, driver).map_err(|m| err("hosts", m))?);
            }
        } else if values.contains_key("hosts") {
            warnings.push(format!("{file}:{}: hosts is ignored by sqlite", values["hosts"].1));
        }
        let dbname = get("dbname").unwrap_or("").to_string();
        let dbpath = get("dbpath").unwrap_or("").to_string();
        match driver {
            SqlDriver::Sqlite if dbpath.is_empty() => return Err(err("dbpath", "missing or empty".to_string())),
            SqlDriver::Mysql | SqlDriver::Pgsql if dbname.is_empty() => {
                return Err(err("dbname", "missing or empty".to_string()));
            }
            _ => {}
        }

        let query = match get("query") {
            Some(q) if !q.is_empty() => q.to_string(),
            _ => legacy_query(driver, &get).ok_or_else(|| err("query", "missing or empty".to_string()))?,
        };
        check_template(&query, false).map_err(|m| err("query", m))?;
        let result_format = get("result_format").unwrap_or("%s").to_string();
        check_template(&result_format, true).map_err(|m| err("result_format", m))?;
        let expansion_limit = match get("expansion_limit") {
            None | Some("") => 0,
            Some(v) => v.parse().map_err(|_| err("expansion_limit", format!("bad number \"{v}\"")))?,
        };
        let options =
            driver.options().iter().filter_map(|&name| Some((name.to_string(), get(name)?.to_string()))).collect();
        Ok(SqlConfig {
            driver,
            file: file.to_string(),
            hosts,
            user: get("user").unwrap_or("").to_string(),
            password: get("password").unwrap_or("").to_string(),
            dbname,
            dbpath,
            query,
            result_format,
            domain: list("domain"),
            expansion_limit,
            options,
            warnings,
        })
    }

    /// Opens the `domain` list: domain names, `/file` lists, `type:name` tables.
    pub fn domain_filter(&self) -> Result<DomainFilter, LookupError> {
        DomainFilter::new(&self.domain)
    }

    /// The query to run for `key` (folded to lower case, as Postfix does
    /// for SQL tables), or `None` when Postfix would not query: the key is
    /// excluded by `domain`, or a `%u`/`%d`/`%N` has nothing to stand for.
    pub fn query_for(&self, key: &str, domains: &DomainFilter) -> Result<Option<String>, LookupError> {
        crate::check_key(&self.file, key)?;
        let key = fold(key);
        if !domains.allows(&key)? {
            return Ok(None);
        }
        expand_query(&self.query, &key, self.driver)
    }

    /// Applies `result_format` to each database value, drops suppressed
    /// ones, joins the rest with `,` and enforces `expansion_limit`.
    /// `None` when nothing is left (not found).
    pub fn format_results<S: AsRef<str>>(&self, key: &str, values: &[S]) -> Result<Option<String>, LookupError> {
        let key = fold(key);
        let mut out: Vec<String> = Vec::new();
        for v in values {
            if let Some(r) = expand_result(&self.result_format, v.as_ref(), &key)? {
                out.push(r);
                if self.expansion_limit > 0 && out.len() > self.expansion_limit {
                    return Err(LookupError::lookup(
                        &format!("{}:{}", self.driver.name(), self.file),
                        &key,
                        format!("expansion limit {} exceeded", self.expansion_limit),
                    ));
                }
            }
        }
        Ok((!out.is_empty()).then(|| out.join(",")))
    }
}

/// The pre-2.2 way: `SELECT select_field FROM table WHERE where_field='%s' additional_conditions`
/// (pgsql also `SELECT select_function('%s')`).
fn legacy_query<'a>(driver: SqlDriver, get: &impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    if driver == SqlDriver::Pgsql
        && let Some(f) = get("select_function").filter(|f| !f.is_empty())
    {
        return Some(format!("SELECT {f}('%s')"));
    }
    let (select, table, wher) = (get("select_field")?, get("table")?, get("where_field")?);
    let extra = get("additional_conditions").unwrap_or("");
    Some(format!("SELECT {select} FROM {table} WHERE {wher}='%s' {extra}").trim_end().to_string())
}

/// Splits a list on commas and whitespace.
fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_ascii_whitespace()).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Checks that a template uses only the allowed `%` escapes.
fn check_template(template: &str, result: bool) -> Result<(), String> {
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some('%' | 's' | 'u' | 'd' | '1'..='9') => {}
            Some('S' | 'U' | 'D') if result => {}
            Some(other) => return Err(format!("invalid escape \"%{other}\" in \"{template}\"")),
            None => return Err(format!("\"%\" at the end of \"{template}\" (write %% for a literal %)")),
        }
    }
    Ok(())
}

/// Quotes a key part for use inside `'...'` in a query for `driver`.
pub fn quote(value: &str, driver: SqlDriver) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if driver == SqlDriver::Mysql => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// The parts of a key or value that `%u`, `%d`, `%1`..`%9` stand for;
/// `None` = suppress.
fn part(text: &str, which: char) -> Option<&str> {
    let at = text.rfind('@');
    match which {
        'u' => match at {
            Some(0) => None,
            Some(i) => Some(&text[..i]),
            None => Some(text),
        },
        'd' => at.map(|i| &text[i + 1..]).filter(|d| !d.is_empty()),
        n => {
            let n = n.to_digit(10)? as usize;
            let domain = part(text, 'd')?;
            domain.rsplit('.').nth(n - 1).filter(|l| !l.is_empty())
        }
    }
}

/// Expands a query template for `key` with SQL quoting for `driver`.
/// `Ok(None)` means the query is suppressed (Postfix: no results).
pub fn expand_query(template: &str, key: &str, driver: SqlDriver) -> Result<Option<String>, LookupError> {
    if key.contains('\0') {
        return Err(LookupError::lookup(driver.name(), key, "key contains a NUL byte"));
    }
    expand(template, key, None, Some(driver))
}

/// Expands a `result_format` for one database `value` and the lookup
/// `key`. `Ok(None)` means this value is skipped.
pub fn expand_result(format: &str, value: &str, key: &str) -> Result<Option<String>, LookupError> {
    expand(format, key, Some(value), None)
}

fn expand(
    template: &str,
    key: &str,
    value: Option<&str>,
    quoting: Option<SqlDriver>,
) -> Result<Option<String>, LookupError> {
    let bad = || LookupError::lookup("sql", key, format!("invalid template \"{template}\""));
    let mut out = String::with_capacity(template.len() + key.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let esc = chars.next().ok_or_else(bad)?;
        let (source, which) = match (esc, value) {
            ('%', _) => {
                out.push('%');
                continue;
            }
            ('s', None) => (key, 's'),
            ('s', Some(v)) => (v, 's'),
            ('u' | 'd', None) => (key, esc),
            ('u' | 'd', Some(v)) => (v, esc),
            ('S' | 'U' | 'D', Some(_)) => (key, esc.to_ascii_lowercase()),
            ('1'..='9', _) => (key, esc),
            _ => return Err(bad()),
        };
        let text = if which == 's' {
            source
        } else {
            match part(source, which) {
                Some(p) => p,
                None => return Ok(None),
            }
        };
        match quoting {
            Some(driver) => out.push_str(&quote(text, driver)),
            None => out.push_str(text),
        }
    }
    Ok(Some(out))
}

/// The `domain` restriction of an SQL table; see [`SqlConfig::domain_filter`].
#[derive(Debug, Default)]
pub struct DomainFilter {
    names: HashSet<String>,
    tables: Vec<Box<dyn Table>>,
}

impl DomainFilter {
    /// Builds a filter from list items; an empty list allows every key.
    pub fn new(items: &[String]) -> Result<DomainFilter, LookupError> {
        let mut filter = DomainFilter::default();
        for item in items {
            if item.starts_with('/') {
                let data = read_file(Path::new(item))?;
                for ll in logical_lines(item, &data)? {
                    filter.names.extend(split_list(&ll.text).iter().map(|d| fold(d)));
                }
            } else if item.contains(':') {
                filter.tables.push(crate::open(item)?);
            } else {
                filter.names.insert(fold(item));
            }
        }
        Ok(filter)
    }

    /// Whether `key` may be queried: always when the filter is empty,
    /// otherwise only `user@domain` with a non-empty user and a listed domain.
    pub fn allows(&self, key: &str) -> Result<bool, LookupError> {
        if self.names.is_empty() && self.tables.is_empty() {
            return Ok(true);
        }
        let Some((user, domain)) = key.rsplit_once('@') else { return Ok(false) };
        if user.is_empty() || domain.is_empty() {
            return Ok(false);
        }
        let domain = fold(domain);
        if self.names.contains(&domain) {
            return Ok(true);
        }
        for t in &self.tables {
            if t.lookup(&domain)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open;
    use crate::testutil::Dir;

    const MYSQL: &str = "# mysql_table(5)\n\
                         hosts = db1.example.com, inet:db2.example.com:3307\n    unix:/run/mysqld/mysqld.sock [::1]:3306\n\
                         user = postfix\n\
                         password = s3cret\n\
                         dbname = mail\n\
                         query = SELECT goto FROM alias WHERE address='%s' AND active = '1'\n\
                         result_format = %s\n\
                         expansion_limit = 10\n\
                         tls_CAfile = /etc/ssl/ca.pem\n\
                         frobnicate = yes\n";

    #[test]
    fn parse_mysql() {
        let cfg = SqlConfig::parse(SqlDriver::Mysql, "my.cf", MYSQL.as_bytes()).unwrap();
        assert_eq!(
            cfg.hosts,
            vec![
                SqlHost::Inet { host: "db1.example.com".into(), port: None },
                SqlHost::Inet { host: "db2.example.com".into(), port: Some(3307) },
                SqlHost::Unix("/run/mysqld/mysqld.sock".into()),
                SqlHost::Inet { host: "::1".into(), port: Some(3306) },
            ]
        );
        assert_eq!((cfg.user.as_str(), cfg.password.as_str(), cfg.dbname.as_str()), ("postfix", "s3cret", "mail"));
        assert_eq!(cfg.query, "SELECT goto FROM alias WHERE address='%s' AND active = '1'");
        assert_eq!(cfg.expansion_limit, 10);
        assert_eq!(cfg.options.get("tls_CAfile").map(String::as_str), Some("/etc/ssl/ca.pem"));
        assert_eq!(cfg.warnings, vec!["my.cf:11: unknown mysql parameter \"frobnicate\"".to_string()]);
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("s3cret") && dbg.contains("<hidden>"), "{dbg}");
    }

    #[test]
    fn parse_pgsql_sqlite_and_legacy() {
        let cfg = SqlConfig::parse(
            SqlDriver::Pgsql,
            "pg.cf",
            b"hosts = postgresql://u@db/mail\ndbname = mail\ntable = mailbox\nselect_field = maildir\nwhere_field = username\nadditional_conditions = and active = '1'\n",
        )
        .unwrap();
        assert_eq!(cfg.hosts, vec![SqlHost::Uri("postgresql://u@db/mail".into())]);
        assert_eq!(cfg.query, "SELECT maildir FROM mailbox WHERE username='%s' and active = '1'");
        assert_eq!(cfg.result_format, "%s");
        let cfg = SqlConfig::parse(SqlDriver::Pgsql, "pg.cf", b"dbname = m\nselect_function = lookup\n").unwrap();
        assert_eq!(cfg.query, "SELECT lookup('%s')");
        assert_eq!(cfg.hosts, vec![SqlHost::Inet { host: "localhost".into(), port: None }]);

        let cfg = SqlConfig::parse(
            SqlDriver::Sqlite,
            "lite.cf",
            b"dbpath = /var/lib/rpost/mail.sqlite\nquery = SELECT x FROM t WHERE d='%d' AND u='%u'\ndomain = example.com example.net\n",
        )
        .unwrap();
        assert!(cfg.hosts.is_empty());
        assert_eq!(cfg.dbpath, "/var/lib/rpost/mail.sqlite");
        assert_eq!(cfg.domain, vec!["example.com".to_string(), "example.net".to_string()]);
    }

    #[test]
    fn parse_errors() {
        let cases = [
            (SqlDriver::Mysql, "dbname = x\n", "f:0: query: missing or empty"),
            (SqlDriver::Mysql, "query = select '%s'\n", "f:0: dbname: missing or empty"),
            (SqlDriver::Sqlite, "query = select '%s'\n", "f:0: dbpath: missing or empty"),
            (SqlDriver::Mysql, "dbname = x\nquery = select '%x'\n", "f:2: query: invalid escape \"%x\""),
            (SqlDriver::Mysql, "dbname = x\nquery = select '%S'\n", "f:2: query: invalid escape \"%S\""),
            (SqlDriver::Mysql, "dbname = x\nquery = select 100%\n", "f:2: query: \"%\" at the end"),
            (SqlDriver::Mysql, "dbname = x\nquery = q\nresult_format = %q\n", "f:3: result_format: invalid escape"),
            (SqlDriver::Mysql, "dbname = x\nquery = q\nexpansion_limit = -1\n", "f:3: expansion_limit: bad number"),
            (SqlDriver::Mysql, "dbname = x\nquery = q\nhosts = h:99999\n", "f:3: hosts: bad host \"h:99999\""),
            (SqlDriver::Mysql, "dbname = x\nquery = q\nhosts = [::1\n", "f:3: hosts: bad host"),
            (SqlDriver::Mysql, "dbname = x\nno equals sign\n", "f:2: expected \"name = value\""),
        ];
        for (driver, text, want) in cases {
            let e = SqlConfig::parse(driver, "f", text.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        // select_function is pgsql only.
        let cfg = SqlConfig::parse(SqlDriver::Mysql, "f", b"dbname=x\nquery=q\nselect_function=f\n").unwrap();
        assert_eq!(cfg.warnings.len(), 1);
    }

    #[test]
    fn quoting() {
        let cases = [
            ("O'Brien", SqlDriver::Mysql, "O''Brien"),
            ("O'Brien", SqlDriver::Pgsql, "O''Brien"),
            ("O'Brien", SqlDriver::Sqlite, "O''Brien"),
            ("a\\'; DROP TABLE x; --", SqlDriver::Mysql, "a\\\\''; DROP TABLE x; --"),
            ("a\\'; DROP TABLE x; --", SqlDriver::Pgsql, "a\\''; DROP TABLE x; --"),
            ("plain@example.com", SqlDriver::Mysql, "plain@example.com"),
            ("''", SqlDriver::Sqlite, "''''"),
        ];
        for (input, driver, want) in cases {
            assert_eq!(quote(input, driver), want, "{input} {driver:?}");
        }
    }

    #[test]
    fn query_expansion() {
        let q = "u=%u d=%d s=%s n=%1.%2.%3 p=%%";
        let cases = [
            ("user@mail.example.com", Some("u=user d=mail.example.com s=user@mail.example.com n=com.example.mail p=%")),
            ("user@example.com", None),
            ("user", None),
            ("@example.com", None),
            ("user@", None),
        ];
        for (key, want) in cases {
            assert_eq!(expand_query(q, key, SqlDriver::Mysql).unwrap().as_deref(), want, "{key}");
        }
        let cases = [
            ("%s", "o'hara@x", Some("o''hara@x")),
            ("%u", "bare", Some("bare")),
            ("%u", "o'hara@x", Some("o''hara")),
            ("%d", "bare", None),
            ("%d", "a@it's", Some("it''s")),
            ("%1", "a@b", Some("b")),
            ("%2", "a@b", None),
            ("%1", "a@b.", None),
            ("'%s'", "", Some("''")),
        ];
        for (tmpl, key, want) in cases {
            assert_eq!(expand_query(tmpl, key, SqlDriver::Pgsql).unwrap().as_deref(), want, "{tmpl} {key}");
        }
        assert!(expand_query("%s", "a\0b", SqlDriver::Mysql).is_err());
        assert!(expand_query("%x", "a", SqlDriver::Mysql).is_err());
        assert!(expand_query("%", "a", SqlDriver::Mysql).is_err());
    }

    #[test]
    fn result_expansion() {
        let cases = [
            ("%s", "joe@example.net", Some("joe@example.net")),
            ("%u+%U@%d", "joe@example.net", Some("joe+bob@example.net")),
            ("%D/%U/%s", "Maildir/", Some("example.com/bob/Maildir/")),
            ("%1", "v", Some("com")),
            ("%d", "no-domain", None),
            ("100%% %S", "v", Some("100% bob@example.com")),
        ];
        for (fmt, value, want) in cases {
            assert_eq!(expand_result(fmt, value, "bob@example.com").unwrap().as_deref(), want, "{fmt}");
        }
    }

    #[test]
    fn query_for_and_results() {
        let text = "dbname = m\nquery = SELECT a FROM t WHERE k='%s'\nresult_format = <%s>\nexpansion_limit = 2\ndomain = Example.com, inline:{example.net=1}\n";
        let cfg = SqlConfig::parse(SqlDriver::Mysql, "f", text.as_bytes()).unwrap();
        let domains = cfg.domain_filter().unwrap();
        let q = |k: &str| cfg.query_for(k, &domains).unwrap();
        assert_eq!(q("O'Neil@EXAMPLE.com").as_deref(), Some("SELECT a FROM t WHERE k='o''neil@example.com'"));
        assert!(q("x@example.net").is_some());
        assert_eq!(q("x@example.org"), None);
        assert_eq!(q("example.com"), None, "bare domain is not queried when domain is set");
        assert_eq!(q("@example.com"), None);
        assert_eq!(cfg.format_results("k", &["a", "b"]).unwrap().as_deref(), Some("<a>,<b>"));
        assert_eq!(cfg.format_results::<&str>("k", &[]).unwrap(), None);
        let e = cfg.format_results("k", &["a", "b", "c"]).unwrap_err().to_string();
        assert!(e.contains("expansion limit 2 exceeded"), "{e}");

        let cfg = SqlConfig::parse(SqlDriver::Sqlite, "f", b"dbpath=/x\nquery=select '%s'\n").unwrap();
        assert_eq!(
            cfg.query_for("anything", &cfg.domain_filter().unwrap()).unwrap().as_deref(),
            Some("select 'anything'")
        );
    }

    #[test]
    fn domain_filter_file() {
        let dir = Dir::new();
        let list = dir.write("domains", "# ours\nexample.com\n  example.org, EXAMPLE.net\n");
        let f = DomainFilter::new(&[list.display().to_string()]).unwrap();
        for (key, want) in
            [("a@example.com", true), ("a@example.org", true), ("a@example.net", true), ("a@x.com", false)]
        {
            assert_eq!(f.allows(key).unwrap(), want, "{key}");
        }
    }

    #[test]
    fn open_reports_driver_missing() {
        let dir = Dir::new();
        let path = dir.write("mysql-virtual.cf", MYSQL);
        let e = open(&format!("mysql:{}", path.display())).unwrap_err();
        assert!(matches!(e, LookupError::DriverNotBuilt { .. }));
        assert!(e.to_string().ends_with("mysql: driver not built in yet (table file parsed OK)"), "{e}");
        let path = dir.write("bad.cf", "dbname = x\n");
        let e = open(&format!("pgsql:{}", path.display())).unwrap_err().to_string();
        assert!(e.contains("query: missing or empty"), "{e}");
        let path = dir.path("mail.sqlite");
        std::fs::write(&path, b"SQLite format 3\0rest").unwrap();
        let e = open(&format!("sqlite:{}", path.display())).unwrap_err().to_string();
        assert!(e.contains("is an SQLite database") && e.contains("dbpath ="), "{e}");
    }
}

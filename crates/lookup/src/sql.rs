//! SQL table files: mysql_table(5), pgsql_table(5), sqlite_table(5).
//!
//! This module parses the table file into [`SqlConfig`] and does all the
//! text work of a lookup, so a driver only has to connect and run a
//! prepared statement (the drivers are in `sqldb.rs`):
//!
//! ```text
//! let cfg = SqlConfig::load(SqlDriver::Mysql, path)?;     // at open; cfg.plan.sql has placeholders
//! let domains = cfg.domain_filter()?;                     // at open
//! match cfg.query_for(key, &domains)? {                   // per lookup
//!     None => Ok(None),                                   // suppressed: not found
//!     Some(params) => {
//!         let rows: Vec<String> = /* run cfg.plan.sql binding params, every non-NULL column of every row */;
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
//! When the key is empty, `%u` would be empty, or `%d`/`%N` have nothing to
//! stand for, the query is suppressed and the lookup finds nothing, as in
//! Postfix. Every non-NULL column of every row is a result; empty ones are
//! ignored (Postfix: "empty lookup result -- ignored"). In
//! `result_format`, `%s %u %d` refer to the database value and `%S %U %D`
//! and `%1`..`%9` to the key; results are not quoted.
//!
//! ## Bind parameters, never quoting
//!
//! Keys come from the network, so they never become SQL text. At open the
//! query template is compiled ([`compile_query`]) into a statement with the
//! driver's placeholders (`?` for MySQL and SQLite, `$1`, `$2`, ... for
//! PostgreSQL) and one `%` template per placeholder: a string literal that
//! holds `%` escapes (`'%s'`, `'%u@%d'`, `'%%%s'` for LIKE) becomes one
//! parameter whose value is the literal's text with the escapes expanded;
//! an escape outside a literal (`WHERE id = %s`) becomes a parameter of its
//! own. The statement is prepared by the server and the key travels as
//! data, so `x' OR '1'='1`, `\'`, multibyte tricks or a NUL byte cannot change
//! the query. Literals without escapes stay in the text (with `%%` made
//! `%`). The lexer knows the literal syntax of each dialect (`''`
//! doubling; MySQL `"..."` strings and `\` escapes; PostgreSQL `E'...'`;
//! identifiers in `"..."` and backquotes; `--`, `#`, `/* */` comments) and
//! refuses what it cannot bind: a `%` escape inside an identifier or a
//! comment, an unterminated literal, and a bare `?` (or `$1`, `:name`) that
//! would be taken as a parameter. Keys with a NUL byte are refused.

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
    /// The query compiled into a statement with bind parameters.
    pub plan: QueryPlan,
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
            .field("plan", &self.plan)
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
        let plan = compile_query(&query, driver).map_err(|m| err("query", m))?;
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
            plan,
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

    /// The values to bind to [`SqlConfig::plan`] for `key` (folded to
    /// lower case, as Postfix does for SQL tables), or `None` when Postfix
    /// would not query: the key is excluded by `domain`, or a `%u`/`%d`/`%N`
    /// has nothing to stand for.
    pub fn query_for(&self, key: &str, domains: &DomainFilter) -> Result<Option<Vec<String>>, LookupError> {
        crate::check_key(&self.file, key)?;
        let key = fold(key);
        if !domains.allows(&key)? {
            return Ok(None);
        }
        self.plan.bind(&key)
    }

    /// Applies `result_format` to each database value, drops empty and
    /// suppressed ones, joins the rest with `,` and enforces `expansion_limit`.
    /// `None` when nothing is left (not found).
    pub fn format_results<S: AsRef<str>>(&self, key: &str, values: &[S]) -> Result<Option<String>, LookupError> {
        let key = fold(key);
        let mut out: Vec<String> = Vec::new();
        for v in values {
            // Postfix: "empty lookup result -- ignored".
            if v.as_ref().is_empty() {
                continue;
            }
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

/// Expands a `result_format` for one database `value` and the lookup
/// `key`. `Ok(None)` means this value is skipped.
pub fn expand_result(format: &str, value: &str, key: &str) -> Result<Option<String>, LookupError> {
    expand(format, key, Some(value))
}

/// Expands `%` escapes with parts of `key` (and of `value` for results).
/// `Ok(None)` = suppressed (a part has nothing to stand for).
fn expand(template: &str, key: &str, value: Option<&str>) -> Result<Option<String>, LookupError> {
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
        out.push_str(text);
    }
    Ok(Some(out))
}

/// A query template compiled into a statement with bind parameters; see
/// the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan {
    /// The statement with the driver's placeholders (`?`, or `$1`...).
    pub sql: String,
    /// One `%` template per placeholder, in order.
    pub params: Vec<String>,
}

impl QueryPlan {
    /// The values to bind for `key` (already folded by the caller), or
    /// `None` when an escape has nothing to stand for (no query, as Postfix).
    pub fn bind(&self, key: &str) -> Result<Option<Vec<String>>, LookupError> {
        if key.contains('\0') {
            return Err(LookupError::lookup("sql", key, "key contains a NUL byte"));
        }
        // Postfix: "empty query string -- ignored".
        if key.is_empty() {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(self.params.len());
        for template in &self.params {
            match expand(template, key, None)? {
                Some(v) => out.push(v),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

/// Compiles a Postfix query template into a [`QueryPlan`] for `driver`.
pub fn compile_query(template: &str, driver: SqlDriver) -> Result<QueryPlan, String> {
    let chars: Vec<char> = template.chars().collect();
    let mut plan = QueryPlan { sql: String::with_capacity(template.len()), params: Vec::new() };
    let placeholder = |plan: &mut QueryPlan, param: String| {
        plan.params.push(param);
        match driver {
            SqlDriver::Pgsql => plan.sql.push_str(&format!("${}", plan.params.len())),
            _ => plan.sql.push('?'),
        }
    };
    let ident_char = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '%' => {
                let esc = next.ok_or_else(|| format!("\"%\" at the end of \"{template}\""))?;
                if esc == '%' {
                    plan.sql.push('%');
                } else {
                    placeholder(&mut plan, format!("%{esc}"));
                }
                i += 2;
            }
            '\'' | '"' if c == '\'' || driver == SqlDriver::Mysql => {
                // PostgreSQL E'...' strings take backslash escapes; so do all MySQL strings.
                let e_prefix = driver == SqlDriver::Pgsql
                    && plan.sql.ends_with(['E', 'e'])
                    && !ident_char(plan.sql.chars().rev().nth(1));
                let backslash = driver == SqlDriver::Mysql || e_prefix;
                let lit = scan_literal(&chars, i, backslash, driver)?;
                if lit.parametric {
                    if e_prefix {
                        plan.sql.pop();
                    }
                    placeholder(&mut plan, lit.value);
                } else {
                    plan.sql.push_str(&lit.raw);
                }
                i = lit.end;
            }
            '"' | '`' => {
                // A quoted identifier: copied; a key cannot be bound in it.
                plan.sql.push(c);
                i += 1;
                loop {
                    let Some(&d) = chars.get(i) else {
                        return Err(format!("unterminated identifier in \"{template}\""));
                    };
                    if d == '%' {
                        if chars.get(i + 1) != Some(&'%') {
                            return Err(format!("a % escape inside a quoted identifier in \"{template}\""));
                        }
                        plan.sql.push('%');
                        i += 2;
                        continue;
                    }
                    plan.sql.push(d);
                    i += 1;
                    if d == c {
                        if chars.get(i) == Some(&c) {
                            plan.sql.push(c);
                            i += 1;
                            continue;
                        }
                        break;
                    }
                }
            }
            '-' if next == Some('-') => i = copy_comment(&chars, i, &mut plan.sql, "\n", template)?,
            '#' if driver == SqlDriver::Mysql => i = copy_comment(&chars, i, &mut plan.sql, "\n", template)?,
            '/' if next == Some('*') => i = copy_comment(&chars, i, &mut plan.sql, "*/", template)?,
            '?' if driver != SqlDriver::Pgsql => {
                return Err(format!("\"?\" outside a string literal would be a bind parameter in \"{template}\""));
            }
            '$' if driver == SqlDriver::Pgsql && next.is_some_and(|n| n.is_ascii_digit()) => {
                return Err(format!("\"${}\" would be a bind parameter in \"{template}\"", next.unwrap_or('0')));
            }
            ':' | '@' | '$'
                if driver == SqlDriver::Sqlite
                    && next.is_some_and(|n| n.is_alphabetic() || n == '_')
                    && !ident_char(plan.sql.chars().next_back()) =>
            {
                return Err(format!("\"{c}name\" would be a bind parameter in \"{template}\""));
            }
            _ => {
                plan.sql.push(c);
                i += 1;
            }
        }
    }
    Ok(plan)
}

/// A string literal found by [`scan_literal`].
struct Literal {
    /// Index just past the closing quote.
    end: usize,
    /// The literal as written, `%%` made `%` (used when it has no escape).
    raw: String,
    /// Its value as a `%` template (`%%` for a literal percent sign).
    value: String,
    /// Whether it holds a key escape.
    parametric: bool,
}

/// Scans the literal that starts with the quote at `chars[start]`.
fn scan_literal(chars: &[char], start: usize, backslash: bool, driver: SqlDriver) -> Result<Literal, String> {
    let q = chars[start];
    let template: String = chars.iter().collect();
    let unterminated = || format!("unterminated string literal in \"{template}\"");
    let mut lit = Literal { end: 0, raw: q.to_string(), value: String::new(), parametric: false };
    let mut i = start + 1;
    loop {
        let c = *chars.get(i).ok_or_else(unterminated)?;
        if c == '%' {
            let esc = *chars.get(i + 1).ok_or_else(|| format!("\"%\" at the end of \"{template}\""))?;
            if esc == '%' {
                lit.raw.push('%');
                lit.value.push_str("%%");
            } else {
                lit.parametric = true;
                lit.value.push('%');
                lit.value.push(esc);
            }
            i += 2;
        } else if c == q {
            lit.raw.push(q);
            if chars.get(i + 1) == Some(&q) {
                lit.raw.push(q);
                lit.value.push(q);
                i += 2;
            } else {
                lit.end = i + 1;
                return Ok(lit);
            }
        } else if backslash && c == '\\' {
            let n = *chars.get(i + 1).ok_or_else(unterminated)?;
            if n == '%' {
                // `\%` in a LIKE pattern: only a literal percent (`\%%`) may follow.
                if chars.get(i + 2) != Some(&'%') {
                    return Err(format!("a backslash before a % escape in \"{template}\""));
                }
                lit.raw.push_str("\\%");
                lit.value.push_str("\\%%");
                i += 3;
                continue;
            }
            lit.raw.push('\\');
            lit.raw.push(n);
            match (n, driver) {
                ('0', SqlDriver::Mysql) => lit.value.push('\0'),
                ('Z', SqlDriver::Mysql) => lit.value.push('\x1a'),
                ('_', SqlDriver::Mysql) => lit.value.push_str("\\_"),
                ('b', _) => lit.value.push('\x08'),
                ('f', SqlDriver::Pgsql) => lit.value.push('\x0c'),
                ('n', _) => lit.value.push('\n'),
                ('r', _) => lit.value.push('\r'),
                ('t', _) => lit.value.push('\t'),
                (other, _) => lit.value.push(other),
            }
            i += 2;
        } else {
            lit.raw.push(c);
            lit.value.push(c);
            i += 1;
        }
    }
}

/// Copies a comment from `chars[start]` up to and including `end`
/// (`"\n"`: to the end of the text or line); returns the index after it.
fn copy_comment(chars: &[char], start: usize, out: &mut String, end: &str, template: &str) -> Result<usize, String> {
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if c == '%' {
            if chars.get(i + 1) != Some(&'%') {
                return Err(format!("a % escape inside an SQL comment in \"{template}\""));
            }
            out.push('%');
            i += 2;
            continue;
        }
        out.push(c);
        i += 1;
        if end == "\n" && c == '\n' {
            return Ok(i);
        }
        if end == "*/" && c == '/' && i - start >= 4 && chars[i - 2] == '*' {
            return Ok(i);
        }
    }
    if end == "*/" {
        return Err(format!("unterminated comment in \"{template}\""));
    }
    Ok(i)
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

    fn plan(template: &str, driver: SqlDriver) -> (String, Vec<String>) {
        let p = compile_query(template, driver).unwrap_or_else(|e| panic!("{template}: {e}"));
        (p.sql, p.params)
    }

    #[test]
    fn literals_with_escapes_become_parameters() {
        use SqlDriver::*;
        let cases: &[(&str, SqlDriver, &str, &[&str])] = &[
            ("SELECT 1 FROM t WHERE name='%s'", Mysql, "SELECT 1 FROM t WHERE name=?", &["%s"]),
            ("SELECT 1 FROM t WHERE name='%s'", Pgsql, "SELECT 1 FROM t WHERE name=$1", &["%s"]),
            ("SELECT a FROM t WHERE u='%u' AND d='%d'", Pgsql, "SELECT a FROM t WHERE u=$1 AND d=$2", &["%u", "%d"]),
            (
                "SELECT a FROM t WHERE e='%u@%d' AND x='it''s'",
                Sqlite,
                "SELECT a FROM t WHERE e=? AND x='it''s'",
                &["%u@%d"],
            ),
            ("SELECT a FROM t WHERE e LIKE '%%@%d'", Mysql, "SELECT a FROM t WHERE e LIKE ?", &["%%@%d"]),
            (
                "SELECT a FROM t WHERE e LIKE '100%%' AND k=%s",
                Mysql,
                "SELECT a FROM t WHERE e LIKE '100%' AND k=?",
                &["%s"],
            ),
            ("SELECT a FROM t WHERE e=\"%s\"", Mysql, "SELECT a FROM t WHERE e=?", &["%s"]),
            ("SELECT \"a\" FROM t WHERE e='%s'", Pgsql, "SELECT \"a\" FROM t WHERE e=$1", &["%s"]),
            ("SELECT `a` FROM t WHERE e='it\\'s %s'", Mysql, "SELECT `a` FROM t WHERE e=?", &["it's %s"]),
            ("SELECT a FROM t WHERE e=E'\\t%s'", Pgsql, "SELECT a FROM t WHERE e=$1", &["\t%s"]),
            ("SELECT a FROM t WHERE e='\\t%s'", Pgsql, "SELECT a FROM t WHERE e=$1", &["\\t%s"]),
            ("SELECT a FROM t WHERE e='%s' -- 100%% sure", Sqlite, "SELECT a FROM t WHERE e=? -- 100% sure", &["%s"]),
            ("SELECT a /* 'x */ FROM t WHERE e='%s'", Mysql, "SELECT a /* 'x */ FROM t WHERE e=?", &["%s"]),
            ("SELECT a FROM t WHERE e='a\\%%b%s'", Mysql, "SELECT a FROM t WHERE e=?", &["a\\%%b%s"]),
        ];
        for (template, driver, sql, params) in cases {
            let (got_sql, got_params) = plan(template, *driver);
            assert_eq!(got_sql, *sql, "{template}");
            assert_eq!(got_params, params.iter().map(|p| p.to_string()).collect::<Vec<_>>(), "{template}");
        }
        let errors = [
            ("SELECT a FROM t WHERE e='%s", Mysql, "unterminated string literal"),
            ("SELECT a FROM t WHERE e=? AND f='%s'", Mysql, "\"?\" outside a string literal"),
            ("SELECT a FROM t WHERE e=$1 AND f='%s'", Pgsql, "\"$1\" would be a bind parameter"),
            ("SELECT a FROM t WHERE e=:name", Sqlite, "\":name\" would be a bind parameter"),
            ("SELECT \"%s\" FROM t", Pgsql, "inside a quoted identifier"),
            ("SELECT a FROM t -- %s", Pgsql, "inside an SQL comment"),
            ("SELECT a FROM t /* x", Pgsql, "unterminated comment"),
            ("SELECT a FROM t WHERE e='\\%s'", Mysql, "backslash before a % escape"),
        ];
        for (template, driver, want) in errors {
            let e = compile_query(template, driver).unwrap_err();
            assert!(e.contains(want), "{template}: {e}");
        }
        // A question mark inside a literal is data, and PostgreSQL has no `?` parameters.
        assert_eq!(plan("SELECT '?' FROM t WHERE e='%s'", Mysql).0, "SELECT '?' FROM t WHERE e=?");
        assert_eq!(plan("SELECT a ? b FROM t", Pgsql).0, "SELECT a ? b FROM t");
    }

    #[test]
    fn hostile_keys_are_only_data() {
        let p = compile_query("SELECT destination FROM virtual_aliases WHERE source='%s'", SqlDriver::Mysql).unwrap();
        for key in ["x' OR '1'='1", "a\\'; DROP TABLE x; --", "\u{bf}\u{27} OR 1=1 -- ", "%s%u%d"] {
            assert_eq!(p.sql, "SELECT destination FROM virtual_aliases WHERE source=?");
            assert_eq!(p.bind(key).unwrap(), Some(vec![key.to_string()]), "{key}");
        }
        assert!(p.bind("a\0b").is_err());
    }

    #[test]
    fn query_expansion() {
        let p = compile_query("SELECT '%u' , '%d' , '%s' , '%1.%2.%3' , 'p=%%'", SqlDriver::Mysql).unwrap();
        assert_eq!(p.sql, "SELECT ? , ? , ? , ? , 'p=%'");
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("user@mail.example.com", Some(&["user", "mail.example.com", "user@mail.example.com", "com.example.mail"])),
            ("user@example.com", None),
            ("user", None),
            ("@example.com", None),
            ("user@", None),
        ];
        for (key, want) in cases {
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(p.bind(key).unwrap(), want, "{key}");
        }
        let cases = [
            ("'%s'", "o'hara@x", Some("o'hara@x")),
            ("'%u'", "bare", Some("bare")),
            ("'%u'", "o'hara@x", Some("o'hara")),
            ("'%d'", "bare", None),
            ("'%d'", "a@it's", Some("it's")),
            ("'%1'", "a@b", Some("b")),
            ("'%2'", "a@b", None),
            ("'%1'", "a@b.", None),
            ("'%s'", "", None),
        ];
        for (tmpl, key, want) in cases {
            let p = compile_query(tmpl, SqlDriver::Pgsql).unwrap();
            assert_eq!(p.bind(key).unwrap(), want.map(|w| vec![w.to_string()]), "{tmpl} {key}");
        }
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
        assert_eq!(cfg.plan.sql, "SELECT a FROM t WHERE k=?");
        assert_eq!(q("O'Neil@EXAMPLE.com"), Some(vec!["o'neil@example.com".to_string()]));
        assert!(q("x@example.net").is_some());
        assert_eq!(q("x@example.org"), None);
        assert_eq!(q("example.com"), None, "bare domain is not queried when domain is set");
        assert_eq!(q("@example.com"), None);
        assert_eq!(cfg.format_results("k", &["a", "b"]).unwrap().as_deref(), Some("<a>,<b>"));
        assert_eq!(cfg.format_results::<&str>("k", &[]).unwrap(), None);
        assert_eq!(
            cfg.format_results("k", &["", "a", ""]).unwrap().as_deref(),
            Some("<a>"),
            "empty results are ignored"
        );
        assert_eq!(cfg.format_results("k", &[""]).unwrap(), None);
        let e = cfg.format_results("k", &["a", "b", "c"]).unwrap_err().to_string();
        assert!(e.contains("expansion limit 2 exceeded"), "{e}");

        let cfg = SqlConfig::parse(SqlDriver::Sqlite, "f", b"dbpath=/x\nquery=select '%s'\n").unwrap();
        assert_eq!(cfg.query_for("anything", &cfg.domain_filter().unwrap()).unwrap(), Some(vec!["anything".into()]));
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
    fn open_checks_the_file() {
        let dir = Dir::new();
        let path = dir.write("bad.cf", "dbname = x\n");
        let e = open(&format!("pgsql:{}", path.display())).unwrap_err().to_string();
        assert!(e.contains("query: missing or empty"), "{e}");
        let path = dir.write("inj.cf", "dbname = x\nquery = SELECT a FROM t WHERE b=? AND c='%s'\n");
        let e = open(&format!("mysql:{}", path.display())).unwrap_err().to_string();
        assert!(e.contains("inj.cf:2: query:") && e.contains("bind parameter"), "{e}");
        let path = dir.path("mail.sqlite");
        std::fs::write(&path, b"SQLite format 3\0rest").unwrap();
        let e = open(&format!("sqlite:{}", path.display())).unwrap_err().to_string();
        assert!(e.contains("is an SQLite database") && e.contains("dbpath ="), "{e}");
    }
}

//! # rpost-lookup - Postfix `type:name` lookup tables
//!
//! ## SUMMARY
//!
//! ```text
//! let maps = rpost_lookup::open_param(&params, "virtual_alias_maps")?;
//! let opts = rpost_lookup::ExpandOptions::from_params(&params)?;
//! match rpost_lookup::expand_virtual(&maps, "info@example.com", &opts)? {
//!     Expansion::Unchanged => ...,            // not an alias
//!     Expansion::To(addresses) => ...,        // deliver to these instead
//! }
//!
//! let access = rpost_lookup::open("hash:/etc/rpost/client_access")?;
//! if let Some(w) = access.stale() { warn!("{w}") }   // source edited, postmap not rerun
//! let hit = rpost_lookup::lookup_client(&[access], "mx.example.com", client_ip)?;
//!
//! rpost_lookup::build_indexed(Path::new("/etc/aliases"), true)?;   // postalias /etc/aliases
//! ```
//!
//! ## DESCRIPTION
//!
//! Postfix names every table as `type:name`; [`open`] does the same and
//! returns a [`Table`], a synchronous key → value map. Supported types:
//!
//! | type | name | notes |
//! |---|---|---|
//! | `static` | the value | every key maps to it; `static:{ text with spaces }` |
//! | `inline` | `{ k=v, { k2 = v with spaces } }` | Postfix 3.0 inline table |
//! | `fail` | anything | every lookup fails (tests, placeholders) |
//! | `texthash` | source file | postmap(1) input read at open, no index |
//! | `hash`, `btree` | source file | reads `name.db` written by [`build_indexed`] |
//! | `regexp`, `pcre` | pattern file | regexp_table(5)/pcre_table(5), one engine (the regex crate) |
//! | `cidr` | pattern file | cidr_table(5), IPv4 and IPv6 |
//! | `mysql`, `pgsql`, `sqlite` | SQL table file | mysql_table(5), pgsql_table(5), sqlite_table(5) ([`sql`]); queried through sqlx |
//! | `passwd-file` | Dovecot passwd-file | `user:password:uid:gid:gecos:home:shell:extra` |
//! | `unix` | `passwd.byname`, `group.byname` | reads `/etc/passwd`, `/etc/group` (no NSS) |
//! | `proxy` | another `type:name` | proxymap(8) prefix; stripped, the inner table is opened |
//!
//! Case: fixed-string tables fold keys to lower case, at build time and at
//! lookup time, as Postfix does; pattern tables see the key as given and
//! decide with their own flags (`i` is on by default). `passwd-file` is the
//! exception: it matches exactly, as Dovecot does (authd applies
//! `auth_username_format` first).
//!
//! Multi-key lookups follow Postfix:
//!
//! * [`lookup_address`] - virtual(5)/canonical(5) order: `user+ext@domain`,
//!   `user@domain`, then (for local domains) `user+ext`, `user`, then `@domain`;
//! * [`lookup_access_address`] - access(5) order for sender/recipient
//!   checks: `user+ext@domain`, `user@domain`, the domain and its parents,
//!   `user+ext@`, `user@`;
//! * [`lookup_domain`] - host or domain names with parent domains
//!   (`example.com`, `com`; [`lookup_domain_with`] gives `.example.com`,
//!   `.com` when `parent_domain_matches_subdomains` does not list the
//!   table's class);
//! * [`lookup_client`] - check_client_access: host name and parents, then
//!   the address and its prefixes (`1.2.3.4`, `1.2.3`, `1.2`, `1`).
//!
//! Only fixed-string tables ([`Table::address_keys`]) get the partial keys
//! (stripped extensions, parent domains, address prefixes); pattern tables
//! (`regexp`, `pcre`, `cidr`) see the full key once. Keys go outer, tables
//! inner: every table is asked for the full key before any table is asked
//! for a shorter one, so the first match in that order wins.
//!
//! [`expand_virtual`] does cleanup(8) virtual alias expansion on top of
//! [`lookup_address`].
//!
//! ### SQL tables
//!
//! `mysql:/etc/rpost/x.cf`, `pgsql:...` and `sqlite:...` name a Postfix
//! table file ([`sql`] parses it and compiles the query). Each such table
//! owns a small thread with its own tokio runtime and its connections;
//! [`Table::lookup`] sends the bound query there and waits (inside
//! `block_in_place` when called from a multi-thread runtime's task, so
//! smtpd's other sessions go on), at most [`LOOKUP_TIMEOUT`]. Opening a
//! mysql/pgsql table does not connect; the first lookup does, with
//! Postfix's host failover (`hosts`, `retry_interval`, `idle_interval`).
//! A database that cannot be reached is a lookup error (callers answer
//! 4xx or defer), never "not found".
//!
//! ### The indexed file (`hash:`, `btree:`)
//!
//! Berkeley DB is not available to a pure-Rust build, so `rmaster map
//! build` ([`build_indexed`]) writes our own format to `source.db`, and both
//! `hash:` and `btree:` read it. It is a whole-file image loaded into memory
//! at open and searched by binary search:
//!
//! ```text
//! "RPOSTDB1"                     magic, 8 bytes
//! flags          u32 LE          bit 0: keys folded to lower case; bit 1: aliases(5) source
//! source mtime   i64 LE + u32 LE seconds, nanoseconds
//! source size    u64 LE
//! entry count    u32 LE
//! entries        count x (u32 LE key length, key, u32 LE value length, value), keys strictly ascending
//! checksum       u64 LE          FNV-1a 64 of everything before it
//! ```
//!
//! The source's mtime and size make [`Table::stale`] exact: the table is
//! stale when the source differs from what was indexed, and the message is
//! Postfix's "database X.db is older than source file X". A `.db` made by
//! real Postfix (Berkeley DB or LMDB magic) is recognised and the error
//! says to run `rmaster map build`.
//!
//! Duplicate keys in a source keep the first entry and produce a warning,
//! as postmap(1) and postalias(1) do without `-r`.
//!
//! ## SECURITY
//!
//! Table files are owned by the admin but parsed defensively: UTF-8 only,
//! physical lines up to 64 KiB, logical lines up to 1 MiB, files up to
//! [`MAX_FILE_SIZE`]; an indexed file is checksummed and fully validated
//! (lengths, ordering, UTF-8) before the first lookup. Regular expressions
//! are compiled once at open with size and nesting limits; the regex crate
//! matches in linear time, so no pattern can make a lookup hang.
//!
//! Keys come from the network and are untrusted: a key over
//! [`MAX_KEY_LEN`] is refused with an error (never "not found", which
//! could skip a reject rule); keys are never compiled as patterns, only
//! matched; SQL queries are prepared statements and keys are bound as
//! parameters, never pasted into SQL text ([`sql::compile_query`]), so
//! `x' OR '1'='1` is just a key that is not found; in error messages keys
//! are escaped and truncated ([`printable`]). Virtual alias expansion is
//! bounded in depth, width and total lookups.
//!
//! SQL table files hold the database password: keep them readable only
//! by root and the daemons that need them (`chmod 640`, group of
//! `mail_owner`), as with Postfix. The password never appears in a
//! message: [`sql::SqlConfig`]'s `Debug` hides it and errors name hosts
//! (a `postgresql://` URI only by host and port). Give the database user
//! SELECT on the mail tables only. There is no TLS to the database in this
//! build: a table asking for it is refused; use a UNIX socket or a local
//! server. A daemon that chroots cannot reach a UNIX socket outside the
//! chroot, nor resolve host names without resolver files inside it (as
//! Postfix; use TCP to an address such as 127.0.0.1 there).
//!
//! `build_indexed` writes a temporary file, fsyncs it, renames it over the
//! old `.db` and fsyncs the directory, so readers see the old or the new
//! table, never a torn one. The `.db` gets the source's permission bits
//! (and owner, when allowed), so a secret source stays secret.
//!
//! ## CONFIGURATION
//!
//! Tables are named in main.cf parameters (`virtual_alias_maps`,
//! `alias_maps`, `smtpd_*_restrictions` with `check_*_access`,
//! `auth_passdb`, ...); [`open_param`] opens such a list. Parameters read
//! here: `recipient_delimiter`, `virtual_alias_recursion_limit`,
//! `virtual_alias_expansion_limit`, `mydestination`, `myorigin`.
//!
//! ## STANDARDS
//!
//! Postfix access(5), virtual(5), aliases(5), postmap(1) input format,
//! regexp_table(5), pcre_table(5), cidr_table(5), mysql_table(5),
//! pgsql_table(5), sqlite_table(5); Dovecot's passwd-file format. Regular
//! expressions use the regex crate's syntax, which covers POSIX ERE and
//! most of PCRE but has no backreferences or look-around: such a pattern is
//! an error at open, naming file and line.

mod address;
mod alias;
pub mod cidr;
mod error;
mod indexed;
mod passwd;
mod regexp;
mod simple;
mod source;
pub mod sql;
mod sqldb;

use std::path::Path;

pub use address::{
    AddressLookup, lookup_access_address, lookup_access_address_with, lookup_address, lookup_client,
    lookup_client_with, lookup_domain, lookup_domain_with, split_extension,
};
pub use alias::{ExpandOptions, Expansion, MAX_ADDRESS_LEN, expand_virtual, split_addresses};
pub use error::{LookupError, printable};
pub use indexed::{BuildOptions, BuildReport, build_indexed, build_indexed_with, build_spec, db_path};
pub use passwd::{PasswdFields, split_passwd_value};
pub use sqldb::{CONNECT_TIMEOUT, LOOKUP_TIMEOUT, MAX_CONNECTIONS, QUERY_TIMEOUT};

/// Longest lookup key accepted. Generous enough for header_checks, which
/// look up whole header lines (header_size_limit is 102400), and far above
/// any address or host name.
pub const MAX_KEY_LEN: usize = 102_400;

/// Largest table file read (source, pattern file or indexed file).
pub const MAX_FILE_SIZE: u64 = 1 << 30;

/// A lookup table.
pub trait Table: Send + Sync + std::fmt::Debug {
    /// Exact-key lookup; the table decides case folding (fixed-string
    /// tables fold to lower case, as Postfix does). `Ok(None)` = not found.
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError>;

    /// The `type:name` spec as configured.
    fn spec(&self) -> &str;

    /// Whether this table wants the partial keys of the Postfix multi-key
    /// lookups (Postfix DICT_FLAG_FIXED): true for fixed-string tables,
    /// false for `regexp`, `pcre` and `cidr`, which see the full key once.
    fn address_keys(&self) -> bool {
        true
    }

    /// Postfix's warning when the table's source file has changed since it
    /// was indexed ("database /x.db is older than source file /x"); `None`
    /// when up to date or not an indexed table. Checked anew on each call.
    fn stale(&self) -> Option<String> {
        None
    }

    /// Whether the file behind this table has been replaced or modified
    /// since it was opened, so a long-running daemon should reopen it (as
    /// Postfix daemons exit and restart when a table changes).
    fn changed(&self) -> bool {
        false
    }

    /// Warnings from opening the table (duplicate keys in a `texthash:`
    /// source, ...) plus [`Table::stale`]; for the caller to log once.
    fn warnings(&self) -> Vec<String> {
        self.stale().into_iter().collect()
    }
}

/// Opens one table from its `type:name` spec.
pub fn open(spec: &str) -> Result<Box<dyn Table>, LookupError> {
    let spec = spec.trim();
    let Some((kind, name)) = spec.split_once(':') else {
        return Err(LookupError::open(spec, "need \"type:name\" form"));
    };
    if name.is_empty() {
        return Err(LookupError::open(spec, "empty table name"));
    }
    match kind {
        "proxy" => simple::Proxy::open(spec, name),
        "static" => simple::Static::open(spec, name),
        "inline" => simple::Inline::open(spec, name),
        "fail" => Ok(Box::new(simple::Fail::new(spec))),
        "texthash" => indexed::TextHash::open(spec, Path::new(name)),
        "hash" | "btree" => indexed::Indexed::open(spec, Path::new(name)),
        "regexp" => regexp::RegexpTable::open(spec, Path::new(name), regexp::Dialect::Regexp),
        "pcre" => regexp::RegexpTable::open(spec, Path::new(name), regexp::Dialect::Pcre),
        "cidr" => cidr::CidrTable::open(spec, Path::new(name)),
        "mysql" | "pgsql" | "sqlite" => {
            let driver = sql::SqlDriver::from_type(kind).expect("matched above");
            sqldb::SqlTable::open(spec, driver, Path::new(name))
        }
        "passwd-file" => passwd::PasswdFile::open(spec, Path::new(name)),
        "unix" => passwd::Unix::open(spec, name),
        other => Err(LookupError::UnsupportedType(other.to_string())),
    }
}

/// Opens several tables, for parameters such as `virtual_alias_maps` that
/// list more than one; lookups try them in order and the first match wins.
pub fn open_list(specs: &[String]) -> Result<Vec<Box<dyn Table>>, LookupError> {
    specs.iter().map(|s| open(s)).collect()
}

/// Opens the tables listed in parameter `name` (split as a Postfix list,
/// `inline:{ ... }` kept whole).
pub fn open_param(params: &rpost_config::Params, name: &str) -> Result<Vec<Box<dyn Table>>, LookupError> {
    open_list(&params.get_list(name)?)
}

/// Looks `key` up in each table in turn; the first hit wins.
pub fn lookup_first(tables: &[Box<dyn Table>], key: &str) -> Result<Option<String>, LookupError> {
    for table in tables {
        if let Some(value) = table.lookup(key)? {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// Refuses over-long keys before any table work is done.
pub(crate) fn check_key(spec: &str, key: &str) -> Result<(), LookupError> {
    if key.len() > MAX_KEY_LEN {
        return Err(LookupError::KeyTooLong { spec: spec.to_string(), len: key.len(), limit: MAX_KEY_LEN });
    }
    Ok(())
}

/// Postfix's key folding for fixed-string tables. Unicode lower case, so
/// SMTPUTF8 addresses fold too; build and lookup use the same function.
pub(crate) fn fold(key: &str) -> String {
    key.to_lowercase()
}

/// Reads a whole table file, refusing absurd sizes.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, LookupError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| LookupError::io(path, e))?;
    let mut data = Vec::new();
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut data).map_err(|e| LookupError::io(path, e))?;
    if data.len() as u64 > MAX_FILE_SIZE {
        return Err(LookupError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("file larger than {MAX_FILE_SIZE} bytes")),
        ));
    }
    Ok(data)
}

/// Splits a table file into Postfix logical lines, mapping errors to
/// `file:line:` syntax errors.
pub(crate) fn logical_lines(file: &str, data: &[u8]) -> Result<Vec<rpost_config::lines::LogicalLine>, LookupError> {
    rpost_config::lines::split(data).map_err(|(line, message)| LookupError::syntax(file, line, message))
}

/// Identity and version of a file, to notice when it was replaced or edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    pub(crate) fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp { dev: m.dev(), ino: m.ino(), size: m.size(), mtime: m.mtime(), mtime_nsec: m.mtime_nsec() })
    }

    /// True when the file now differs from this stamp (or is gone).
    pub(crate) fn changed(&self, path: &Path) -> bool {
        FileStamp::of(path) != Some(*self)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    /// A temporary directory with helpers to write files into it.
    pub(crate) struct Dir(pub tempfile::TempDir);

    impl Dir {
        pub(crate) fn new() -> Dir {
            Dir(tempfile::tempdir().unwrap())
        }

        pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors() {
        let e = open("foo:bar").unwrap_err();
        assert_eq!(e.to_string(), "unsupported dictionary type: foo");
        assert_eq!(open("nocolon").unwrap_err().to_string(), "nocolon: need \"type:name\" form");
        assert_eq!(open("hash:").unwrap_err().to_string(), "hash:: empty table name");
        let e = open("hash:/nonexistent/x").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x.db") && e.contains("rmaster map build /nonexistent/x"), "{e}");
    }

    #[test]
    fn open_list_first_match_wins() {
        let tables = open_list(&["inline:{a=1}".to_string(), "inline:{a=2, b=3}".to_string()]).unwrap();
        assert_eq!(lookup_first(&tables, "a").unwrap().as_deref(), Some("1"));
        assert_eq!(lookup_first(&tables, "B").unwrap().as_deref(), Some("3"));
        assert_eq!(lookup_first(&tables, "c").unwrap(), None);
    }

    #[test]
    fn open_param_splits_lists() {
        let mut p = rpost_config::Params::empty();
        p.set("virtual_alias_maps", "inline:{ a=b, c=d }, static:x");
        let tables = open_param(&p, "virtual_alias_maps").unwrap();
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].spec(), "inline:{ a=b, c=d }");
        assert_eq!(tables[0].lookup("c").unwrap().as_deref(), Some("d"));
        assert_eq!(tables[1].lookup("zz").unwrap().as_deref(), Some("x"));
    }

    #[test]
    fn long_keys_are_refused() {
        let t = open("static:x").unwrap();
        let key = "a".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(t.lookup(&key), Err(LookupError::KeyTooLong { .. })));
        assert!(t.lookup(&key[1..]).unwrap().is_some());
    }
}

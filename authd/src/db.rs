//! passdb and userdb: `auth_passdb` and `auth_userdb` opened through rpost-lookup, so every
//! table type works (passwd-file, static, hash, SQL...), plus the `passwd` userdb (system
//! users).
//!
//! A passdb value is read as:
//! * passwd-file: `password:uid:gid:gecos:home:shell:extra_fields` (Dovecot's format);
//! * `password=... [fields]` or `nopassword [fields]` (Dovecot's static passdb arguments,
//!   e.g. `static:{ password={PLAIN}x }`);
//! * otherwise the whole value is the stored password (`{SCHEME}hash`, or a bare hash in
//!   `default_pass_scheme`), as an SQL `password_query` column gives it.
//!
//! A userdb value is `key=value` fields (`static:uid=vmail gid=vmail home=/var/vmail/%d/%n`)
//! or a passwd-file line; `%` variables are expanded, and values taken from the user name
//! must be safe path components in `home` and `mail`. Without `auth_userdb`, a passwd-file
//! passdb is the userdb too, as in lmtp-deliver.

use rpost_auth_proto::fields::{ExpandError, Vars, expand, parse_fields, passdb_fields, userdb_fields};
use rpost_auth_proto::{Params, flag, param};
use rpost_config::{ConfigError, Params as Config};
use rpost_lookup::Table;

/// Setting up the databases failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Lookup(#[from] rpost_lookup::LookupError),
}

/// A passdb entry. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PassEntry {
    /// The stored password; `None` with `nopassword` (any password is accepted).
    pub password: Option<String>,
    /// passdb extra fields (without `userdb_` ones).
    pub extra: Params,
    /// userdb fields the passdb line carries (passwd-file columns, `userdb_*` fields).
    pub userdb: Params,
}

impl std::fmt::Debug for PassEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassEntry")
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("extra", &self.extra)
            .field("userdb", &self.userdb)
            .finish()
    }
}

/// A lookup result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    NotFound,
    /// The database failed (or is misconfigured); the text is for the log.
    TempFail(String),
}

#[derive(Debug)]
enum UserDbSource {
    None,
    /// System users (Dovecot's `passwd` userdb).
    Passwd,
    Table(Box<dyn Table>),
}

/// The configured databases.
#[derive(Debug)]
pub struct Db {
    passdb: Option<Box<dyn Table>>,
    userdb: UserDbSource,
    /// `default_pass_scheme`.
    pub default_scheme: String,
    username_format: String,
}

fn is_passwd_file(t: &dyn Table) -> bool {
    let spec = t.spec();
    spec.strip_prefix("proxy:").unwrap_or(spec).starts_with("passwd-file:")
}

/// The driver name used in log lines (`passwd-file`, `static`, `sql`...).
pub fn driver(t: &dyn Table) -> &str {
    let spec = t.spec();
    let spec = spec.strip_prefix("proxy:").unwrap_or(spec);
    spec.split(':').next().unwrap_or("table")
}

impl Db {
    pub fn from_params(p: &Config) -> Result<Db, DbError> {
        let open = |name: &str| -> Result<Option<Box<dyn Table>>, DbError> {
            let spec = p.get(name)?;
            let spec = spec.trim();
            if spec.is_empty() { Ok(None) } else { Ok(Some(rpost_lookup::open(spec)?)) }
        };
        let passdb = open("auth_passdb")?;
        let userdb_spec = p.get("auth_userdb")?;
        let userdb = match userdb_spec.trim() {
            "" => UserDbSource::None,
            "passwd" | "passwd:" | "unix:passwd.byname" => UserDbSource::Passwd,
            _ => UserDbSource::Table(open("auth_userdb")?.expect("not empty")),
        };
        for t in passdb.iter().chain(match &userdb {
            UserDbSource::Table(t) => Some(t),
            _ => None,
        }) {
            for w in t.warnings() {
                tracing::warn!("{w}");
            }
        }
        Ok(Db {
            passdb,
            userdb,
            default_scheme: p.get("default_pass_scheme")?,
            username_format: p.get("auth_username_format")?,
        })
    }

    /// For tests: databases from specs.
    pub fn from_specs(passdb: Option<&str>, userdb: Option<&str>) -> Result<Db, DbError> {
        let mut p = Config::empty();
        p.set("auth_passdb", passdb.unwrap_or(""));
        p.set("auth_userdb", userdb.unwrap_or(""));
        p.set("default_pass_scheme", "CRYPT");
        p.set("auth_username_format", "%Lu");
        Db::from_params(&p)
    }

    /// Whether a passdb is configured.
    pub fn has_passdb(&self) -> bool {
        self.passdb.is_some()
    }

    /// The passdb driver name for log lines.
    pub fn passdb_driver(&self) -> &str {
        self.passdb.as_deref().map_or("passdb", driver)
    }

    /// `auth_username_format` applied to what the client sent.
    pub fn canonical_user(&self, raw: &str, service: &str) -> Result<String, ExpandError> {
        expand(&self.username_format, &Vars { user: raw, service, ..Vars::default() }, false)
    }

    /// Looks `user` up in the passdb.
    pub fn passdb(&self, user: &str) -> Lookup<PassEntry> {
        let Some(t) = &self.passdb else { return Lookup::TempFail("auth_passdb is not set".into()) };
        match t.lookup(user) {
            Ok(Some(v)) => Lookup::Found(parse_pass_value(&v, is_passwd_file(t.as_ref()))),
            Ok(None) => Lookup::NotFound,
            Err(e) => Lookup::TempFail(e.to_string()),
        }
    }

    /// Every user name, for `LIST`: only passwd-file userdbs (or a passwd-file passdb when
    /// there is no userdb) can be enumerated. `None` when the database cannot be listed.
    pub fn list(&self, mask: Option<&str>) -> Option<Result<Vec<String>, String>> {
        let table = match &self.userdb {
            UserDbSource::Table(t) => t.as_ref(),
            UserDbSource::None => self.passdb.as_deref()?,
            UserDbSource::Passwd => return None,
        };
        if !is_passwd_file(table) {
            return None;
        }
        let spec = table.spec();
        let path = spec.strip_prefix("proxy:").unwrap_or(spec).strip_prefix("passwd-file:")?;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return Some(Err(format!("{path}: {e}"))),
        };
        let names = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once(':').map(|(u, _)| u.trim()))
            .filter(|u| !u.is_empty() && mask.is_none_or(|m| wildcard(m, u)))
            .map(str::to_string)
            .collect();
        Some(Ok(names))
    }

    /// Looks `user` up in the userdb and returns its fields, `%`-expanded.
    pub fn userdb(&self, user: &str, service: &str) -> Lookup<Params> {
        let raw = match &self.userdb {
            UserDbSource::Passwd => match nix::unistd::User::from_name(user) {
                Ok(Some(u)) => vec![
                    ("uid".into(), Some(u.uid.to_string())),
                    ("gid".into(), Some(u.gid.to_string())),
                    ("home".into(), Some(u.dir.display().to_string())),
                ],
                Ok(None) => return Lookup::NotFound,
                Err(e) => return Lookup::TempFail(format!("passwd lookup: {e}")),
            },
            UserDbSource::Table(t) => match t.lookup(user) {
                Ok(Some(v)) => {
                    if is_passwd_file(t.as_ref()) {
                        parse_pass_value(&v, true).userdb
                    } else {
                        let mut f: Params = parse_fields(&v)
                            .into_iter()
                            .map(|(k, v)| (k.strip_prefix("userdb_").unwrap_or(&k).to_string(), v))
                            .collect();
                        // Dovecot's static userdb answers for everyone only with
                        // allow_all_users=yes; otherwise the passdb must know the user.
                        if driver(t.as_ref()) == "static" {
                            let all = param(&f, "allow_all_users").is_some_and(|v| v == "yes");
                            f.retain(|(k, _)| k != "allow_all_users");
                            if !all && self.passdb.is_some() {
                                match self.passdb(user) {
                                    Lookup::Found(_) => {}
                                    Lookup::NotFound => return Lookup::NotFound,
                                    Lookup::TempFail(e) => return Lookup::TempFail(e),
                                }
                            }
                        }
                        f
                    }
                }
                Ok(None) => return Lookup::NotFound,
                Err(e) => return Lookup::TempFail(e.to_string()),
            },
            UserDbSource::None => match self.passdb(user) {
                Lookup::Found(p) => p.userdb,
                Lookup::NotFound => return Lookup::NotFound,
                Lookup::TempFail(e) => return Lookup::TempFail(e),
            },
        };
        let mut out = Params::new();
        for (k, v) in raw {
            let Some(v) = v else {
                out.push((k, None));
                continue;
            };
            let path = matches!(k.as_str(), "home" | "mail");
            let vars = Vars { user, service, home: param(&out, "home"), ..Vars::default() };
            match expand(&v, &vars, path) {
                Ok(x) => out.push((k, Some(x))),
                Err(ExpandError::Unsafe(_)) => return Lookup::NotFound,
                Err(ExpandError::Template(e)) => return Lookup::TempFail(format!("userdb field {k}: {e}")),
            }
        }
        Lookup::Found(out)
    }
}

/// Dovecot's user mask: `*` any run of characters, `?` one character.
pub fn wildcard(mask: &str, name: &str) -> bool {
    let (m, n): (Vec<char>, Vec<char>) = (mask.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point: linear in practice, no recursion.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < m.len() && (m[i] == '?' || m[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < m.len() && m[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    m[i..].iter().all(|&c| c == '*')
}

/// Reads a passdb value (see the module documentation).
pub fn parse_pass_value(value: &str, passwd_file: bool) -> PassEntry {
    if passwd_file {
        let p = rpost_lookup::split_passwd_value(value);
        let extra = parse_fields(p.extra_fields);
        let mut userdb = Params::new();
        for (k, v) in [("uid", p.uid), ("gid", p.gid), ("home", p.home)] {
            if !v.is_empty() {
                userdb.push((k.into(), Some(v.into())));
            }
        }
        for (k, v) in userdb_fields(&extra) {
            userdb.retain(|(x, _)| *x != k);
            userdb.push((k, v));
        }
        let nopassword = flag(&extra, "nopassword");
        let password = (!nopassword).then(|| p.password.to_string());
        return PassEntry { password, extra: passdb_fields(&extra), userdb };
    }
    let fields = parse_fields(value);
    let first = fields.first().map(|(k, _)| k.as_str());
    if matches!(first, Some("password" | "nopassword"))
        && (param(&fields, "password").is_some() || flag(&fields, "nopassword"))
    {
        let password = if flag(&fields, "nopassword") { None } else { param(&fields, "password").map(str::to_string) };
        let rest: Params = fields.iter().filter(|(k, _)| k != "password" && k != "nopassword").cloned().collect();
        return PassEntry { password, extra: passdb_fields(&rest), userdb: userdb_fields(&rest) };
    }
    PassEntry { password: Some(value.trim().to_string()), extra: Vec::new(), userdb: Vec::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_file_and_userdb() {
        let dir = std::env::temp_dir().join(format!("authd-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("users");
        std::fs::write(
            &file,
            "alice@example.com:{PLAIN}secret:5000:5000::/var/vmail/example.com/alice::userdb_quota_rule=*:storage=1G\n\
             bob@example.com:{PLAIN}pw::::::nopassword userdb_mail=maildir:~/M\n",
        )
        .unwrap();
        let spec = format!("passwd-file:{}", file.display());
        let db = Db::from_specs(Some(&spec), None).unwrap();
        let Lookup::Found(a) = db.passdb("alice@example.com") else { panic!() };
        assert_eq!(a.password.as_deref(), Some("{PLAIN}secret"));
        assert!(!format!("{a:?}").contains("secret"), "Debug hides the password");
        let Lookup::Found(b) = db.passdb("bob@example.com") else { panic!() };
        assert_eq!(b.password, None);
        assert_eq!(db.passdb("carol@example.com"), Lookup::NotFound);
        let Lookup::Found(u) = db.userdb("alice@example.com", "lmtp") else { panic!() };
        assert_eq!(param(&u, "uid"), Some("5000"));
        assert_eq!(param(&u, "home"), Some("/var/vmail/example.com/alice"));
        assert_eq!(param(&u, "quota_rule"), Some("*:storage=1G"));

        let db =
            Db::from_specs(Some(&spec), Some("static:uid=vmail gid=vmail home=/var/vmail/%d/%n mail=maildir:%h/mail"))
                .unwrap();
        let Lookup::Found(u) = db.userdb("alice@example.com", "lmtp") else { panic!() };
        assert_eq!(param(&u, "uid"), Some("vmail"));
        assert_eq!(param(&u, "home"), Some("/var/vmail/example.com/alice"));
        assert_eq!(param(&u, "mail"), Some("maildir:/var/vmail/example.com/alice/mail"));
        assert_eq!(db.userdb("zed@example.com", "lmtp"), Lookup::NotFound, "static checks the passdb");
        let all =
            Db::from_specs(Some(&spec), Some("static:uid=vmail home=/var/vmail/%d/%n allow_all_users=yes")).unwrap();
        assert_eq!(all.userdb("../x@example.com", "lmtp"), Lookup::NotFound, "unsafe names never become paths");
        let Lookup::Found(z) = all.userdb("zed@example.com", "lmtp") else { panic!() };
        assert_eq!(
            z,
            vec![("uid".into(), Some("vmail".into())), ("home".into(), Some("/var/vmail/example.com/zed".into()))]
        );
        assert_eq!(db.canonical_user("Alice@Example.COM", "smtp").unwrap(), "alice@example.com");

        let db = Db::from_specs(None, Some("passwd")).unwrap();
        let Lookup::Found(root) = db.userdb("root", "lmtp") else { panic!() };
        assert_eq!(param(&root, "uid"), Some("0"));
        assert!(matches!(db.passdb("root"), Lookup::TempFail(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*", "a@b"));
        assert!(wildcard("*@example.com", "alice@example.com"));
        assert!(!wildcard("*@example.com", "alice@example.org"));
        assert!(wildcard("al?ce@*", "alice@x"));
        assert!(wildcard("a*b*c", "axxbyyc"));
        assert!(!wildcard("a*b*c", "axxbyy"));
    }

    #[test]
    fn pass_values() {
        let e = parse_pass_value("{SHA512-CRYPT}$6$abc$def", false);
        assert_eq!(e.password.as_deref(), Some("{SHA512-CRYPT}$6$abc$def"));
        let e = parse_pass_value("password={PLAIN}x userdb_uid=7 allow_nets=127.0.0.1", false);
        assert_eq!(e.password.as_deref(), Some("{PLAIN}x"));
        assert_eq!(e.userdb, vec![("uid".into(), Some("7".into()))]);
        assert_eq!(e.extra, vec![("allow_nets".into(), Some("127.0.0.1".into()))]);
        assert_eq!(parse_pass_value("nopassword", false).password, None);
        // A plain password that merely starts with "password" stays a password.
        assert_eq!(parse_pass_value("passwordy", false).password.as_deref(), Some("passwordy"));
    }
}

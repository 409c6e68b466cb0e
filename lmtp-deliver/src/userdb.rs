//! Recipients to mail users: the passdb/userdb lookups, Dovecot's `%` variables, the home
//! directory, the Maildir location and the uid/gid the mail is written for.
//!
//! Order, as Dovecot's LMTP does it for a recipient `local+detail@domain`:
//! 1. the detail is split off at `recipient_delimiter`;
//! 2. the user name is `auth_username_format` (default `%Lu`) of `local@domain`;
//! 3. `auth_passdb`, when set, must know the user (else "User doesn't exist");
//! 4. `auth_userdb` gives `uid`, `gid`, `home`, `mail` and `quota_rule` (static table:
//!    `uid=vmail gid=vmail home=/var/vmail/%d/%n`; passwd-file: its uid, gid and home columns
//!    and `userdb_*` extra fields). Without `auth_userdb`, a passwd-file passdb serves as the
//!    userdb too (Dovecot's usual `userdb { driver = passwd-file }` over the same file);
//! 5. what is missing comes from `mail_home`, `mail_location` (default `maildir:~/Maildir`),
//!    `mail_uid` and `mail_gid`.
//!
//! Security: the local part and domain come from the network. In path templates (`home`,
//! `mail_home`, `mail_location`) `%u`, `%n` and `%d` must expand to a single safe path
//! component (no `/`, not `.` or `..`, no control characters), and the resulting Maildir
//! path must be absolute without `..`; otherwise the recipient is refused, so a local part
//! like `../../etc` never names a directory outside the configured base.

use std::path::{Component, Path, PathBuf};

use rpost_config::{ConfigError, Params};
use rpost_lookup::Table;

/// What a recipient resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(User),
    /// Not a user here: `550 5.1.1`.
    Unknown,
    /// The address cannot be used in a path: `550 5.1.3`.
    BadAddress(String),
    /// Lookup or configuration failure: `451 4.3.0`; the reason is for the log.
    TempFail(String),
}

/// A mail user, ready for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name after auth_username_format (the lookup key).
    pub name: String,
    pub home: Option<PathBuf>,
    /// INBOX: the Maildir++ store root.
    pub maildir: PathBuf,
    /// uid and gid the files are given (only when running as root).
    pub owner: Option<(u32, u32)>,
    /// Storage quota in bytes (userdb `quota_rule=*:storage=...`).
    pub quota: Option<u64>,
    /// The address extension without its delimiter (`detail` of `user+detail@domain`).
    pub detail: Option<String>,
}

/// Why a `%` template could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// A variable value that must not appear in a path (`/`, `..`, control characters).
    Unsafe(String),
    /// A template error (the configuration's fault).
    Template(String),
}

/// Values for Dovecot's `%` variables.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// `%u`: the full user name.
    pub user: &'a str,
    /// `%h`: the home directory, when known.
    pub home: Option<&'a str>,
}

impl Vars<'_> {
    fn value(&self, var: &str) -> Result<(String, bool), ExpandError> {
        let (local, domain) = match self.user.split_once('@') {
            Some((l, d)) => (l, d),
            None => (self.user, ""),
        };
        // (value, whether it comes from the address and must be path-safe)
        Ok(match var {
            "u" | "user" => (self.user.to_string(), true),
            "n" | "username" => (local.to_string(), true),
            "d" | "domain" => (domain.to_string(), true),
            "s" | "service" => ("lmtp".to_string(), false),
            "h" | "home" => match self.home {
                Some(h) => (h.to_string(), false),
                None => return Err(ExpandError::Template("%h used but the user has no home directory".into())),
            },
            other => return Err(ExpandError::Template(format!("unknown variable %{other}"))),
        })
    }
}

/// Expands `%u %n %d %h %s %%` (with the `L` lower-case modifier: `%Lu`) and the long forms
/// `%{user} %{username} %{domain} %{home} %{service}`. With `path`, values taken from the
/// address must be safe single path components.
pub fn expand(template: &str, vars: &Vars<'_>, path: bool) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut it = template.chars().peekable();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut lower = false;
        let mut c = it.next().ok_or_else(|| ExpandError::Template("'%' at the end".into()))?;
        if c == '%' {
            out.push('%');
            continue;
        }
        if c == 'L' {
            lower = true;
            c = it.next().ok_or_else(|| ExpandError::Template("'%L' at the end".into()))?;
        }
        let name: String = if c == '{' {
            let mut n = String::new();
            loop {
                match it.next() {
                    Some('}') => break,
                    Some(ch) => n.push(ch),
                    None => return Err(ExpandError::Template("unterminated %{".into())),
                }
            }
            n
        } else {
            c.to_string()
        };
        let (mut value, from_address) = vars.value(&name)?;
        if lower {
            value = value.to_lowercase();
        }
        if path && from_address && !safe_component(&value) {
            return Err(ExpandError::Unsafe(value));
        }
        out.push_str(&value);
    }
    Ok(out)
}

/// A value that may stand as one path component: not `.` or `..`, no `/`, no control
/// characters. (Empty is allowed: `/var/vmail//alice` is still inside `/var/vmail`.)
fn safe_component(v: &str) -> bool {
    v != "." && v != ".." && !v.chars().any(|c| c == '/' || c.is_control())
}

/// userdb fields.
#[derive(Debug, Default, Clone)]
struct Fields {
    uid: Option<String>,
    gid: Option<String>,
    home: Option<String>,
    mail: Option<String>,
    quota_rule: Option<String>,
}

impl Fields {
    fn extra(&mut self, text: &str) {
        for field in text.split_whitespace() {
            let Some((k, v)) = field.split_once('=') else { continue };
            let k = k.strip_prefix("userdb_").unwrap_or(k);
            let v = Some(v.to_string()).filter(|v| !v.is_empty());
            match k {
                "uid" => self.uid = v,
                "gid" => self.gid = v,
                "home" => self.home = v,
                "mail" => self.mail = v,
                "quota_rule" => self.quota_rule = v,
                _ => {}
            }
        }
    }

    /// A passwd-file line (`password:uid:gid:gecos:home:shell:extra`).
    fn passwd(value: &str) -> Fields {
        let p = rpost_lookup::split_passwd_value(value);
        let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
        let mut f = Fields { uid: some(p.uid), gid: some(p.gid), home: some(p.home), ..Fields::default() };
        f.extra(p.extra_fields);
        f
    }

    /// A `key=value ...` value (static: and other tables).
    fn pairs(value: &str) -> Fields {
        let mut f = Fields::default();
        f.extra(value);
        f
    }
}

fn is_passwd_file(t: &dyn Table) -> bool {
    let spec = t.spec();
    spec.strip_prefix("proxy:").unwrap_or(spec).starts_with("passwd-file:")
}

/// The user database side of lmtp-deliver.
#[derive(Debug)]
pub struct UserDb {
    passdb: Option<Box<dyn Table>>,
    userdb: Option<Box<dyn Table>>,
    username_format: String,
    delimiter: String,
    mail_home: String,
    mail_location: String,
    mail_uid: String,
    mail_gid: String,
    first_valid_uid: u32,
    first_valid_gid: u32,
    /// Running as root: deliveries need a uid/gid to give the files to.
    privileged: bool,
}

/// Why the user database cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Lookup(#[from] rpost_lookup::LookupError),
}

fn open_table(spec: &str) -> Result<Option<Box<dyn Table>>, rpost_lookup::LookupError> {
    let spec = spec.trim();
    if spec.is_empty() { Ok(None) } else { rpost_lookup::open(spec).map(Some) }
}

impl UserDb {
    /// Opens the tables named by auth_passdb and auth_userdb. `privileged`: the process runs
    /// as root and must give each delivery's files to the mail user.
    pub fn from_params(p: &Params, privileged: bool) -> Result<UserDb, UserDbError> {
        let passdb = open_table(&p.get("auth_passdb")?)?;
        let userdb = open_table(&p.get("auth_userdb")?)?;
        for t in passdb.iter().chain(userdb.iter()) {
            for w in t.warnings() {
                tracing::warn!("{w}");
            }
        }
        if passdb.is_none() && userdb.is_none() {
            tracing::warn!("neither auth_passdb nor auth_userdb is set: every recipient is deferred");
        }
        let num = |name: &str| -> Result<u32, ConfigError> { Ok(p.get_int(name)?.clamp(0, u32::MAX as i64) as u32) };
        Ok(UserDb {
            passdb,
            userdb,
            username_format: p.get("auth_username_format")?,
            delimiter: p.get("recipient_delimiter")?,
            mail_home: p.get("mail_home")?,
            mail_location: p.get("mail_location")?,
            mail_uid: p.get("mail_uid")?,
            mail_gid: p.get("mail_gid")?,
            first_valid_uid: num("first_valid_uid")?,
            first_valid_gid: num("first_valid_gid")?,
            privileged,
        })
    }

    /// Resolves the recipient `local@domain` (`domain` empty for a bare local part).
    pub fn lookup(&self, local: &str, domain: &str) -> Lookup {
        let (user_part, ext) = rpost_lookup::split_extension(local, &self.delimiter);
        let detail = ext.map(|e| e[e.chars().next().map_or(0, char::len_utf8)..].to_string()).filter(|d| !d.is_empty());
        let full = if domain.is_empty() { user_part.to_string() } else { format!("{user_part}@{domain}") };
        let name = match expand(&self.username_format, &Vars { user: &full, home: None }, false) {
            Ok(n) => n,
            Err(e) => return Lookup::TempFail(format!("auth_username_format: {e:?}")),
        };
        if self.passdb.is_none() && self.userdb.is_none() {
            return Lookup::TempFail("neither auth_passdb nor auth_userdb is configured".into());
        }
        let mut fields = Fields::default();
        if let Some(passdb) = &self.passdb {
            match passdb.lookup(&name) {
                Ok(Some(v)) => {
                    if self.userdb.is_none() && is_passwd_file(passdb.as_ref()) {
                        fields = Fields::passwd(&v);
                    }
                }
                Ok(None) => return Lookup::Unknown,
                Err(e) => return Lookup::TempFail(e.to_string()),
            }
        }
        if let Some(userdb) = &self.userdb {
            match userdb.lookup(&name) {
                Ok(Some(v)) => {
                    fields = if is_passwd_file(userdb.as_ref()) { Fields::passwd(&v) } else { Fields::pairs(&v) }
                }
                Ok(None) => return Lookup::Unknown,
                Err(e) => return Lookup::TempFail(e.to_string()),
            }
        }
        match self.build(name, fields, detail) {
            Ok(u) => Lookup::Found(u),
            Err(ExpandError::Unsafe(v)) => {
                Lookup::BadAddress(format!("address part {:?} cannot be used in a mailbox path", printable(&v)))
            }
            Err(ExpandError::Template(e)) => Lookup::TempFail(e),
        }
    }

    fn build(&self, name: String, f: Fields, detail: Option<String>) -> Result<User, ExpandError> {
        let vars = Vars { user: &name, home: None };
        let home_template = f.home.as_deref().or(Some(self.mail_home.as_str()).filter(|h| !h.is_empty()));
        let home = match home_template {
            Some(t) => {
                let h = expand(t, &vars, true)?;
                if !h.starts_with('/') {
                    return Err(ExpandError::Template(format!("relative home directory {h:?} not supported")));
                }
                Some(h)
            }
            None => None,
        };
        let vars = Vars { user: &name, home: home.as_deref() };
        let location = f.mail.as_deref().or(Some(self.mail_location.as_str()).filter(|l| !l.is_empty()));
        let maildir = maildir_path(location.unwrap_or("maildir:~/Maildir"), &vars)?;
        let quota = match &f.quota_rule {
            Some(r) => parse_quota_rule(r).map_err(ExpandError::Template)?,
            None => None,
        };
        let owner = if self.privileged { Some(self.owner(&f)?) } else { None };
        Ok(User { name, home: home.map(PathBuf::from), maildir, owner, quota, detail })
    }

    fn owner(&self, f: &Fields) -> Result<(u32, u32), ExpandError> {
        let uid_spec = f.uid.as_deref().or(Some(self.mail_uid.as_str()).filter(|s| !s.is_empty()));
        let Some(uid_spec) = uid_spec else {
            return Err(ExpandError::Template(
                "no uid: set mail_uid (or uid in the userdb); lmtp-deliver runs as root and does not write mail as root"
                    .into(),
            ));
        };
        let (uid, primary_gid) = resolve_user(uid_spec).map_err(ExpandError::Template)?;
        let gid = match f.gid.as_deref().or(Some(self.mail_gid.as_str()).filter(|s| !s.is_empty())) {
            Some(g) => resolve_group(g).map_err(ExpandError::Template)?,
            None => primary_gid
                .ok_or_else(|| ExpandError::Template("no gid: set mail_gid (or gid in the userdb)".into()))?,
        };
        if uid == 0 || uid < self.first_valid_uid {
            return Err(ExpandError::Template(format!(
                "Mail access for users with UID {uid} not permitted (see first_valid_uid)"
            )));
        }
        if gid < self.first_valid_gid {
            return Err(ExpandError::Template(format!(
                "Mail access for users with GID {gid} not permitted (see first_valid_gid)"
            )));
        }
        Ok((uid, gid))
    }
}

/// A user name or number: (uid, primary gid when known).
fn resolve_user(spec: &str) -> Result<(u32, Option<u32>), String> {
    if let Ok(n) = spec.parse::<u32>() {
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(n)).ok().flatten().map(|u| u.gid.as_raw());
        return Ok((n, gid));
    }
    match nix::unistd::User::from_name(spec) {
        Ok(Some(u)) => Ok((u.uid.as_raw(), Some(u.gid.as_raw()))),
        Ok(None) => Err(format!("unknown user {spec:?} (mail_uid or userdb uid)")),
        Err(e) => Err(format!("user {spec:?}: {e}")),
    }
}

fn resolve_group(spec: &str) -> Result<u32, String> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!("unknown group {spec:?} (mail_gid or userdb gid)")),
        Err(e) => Err(format!("group {spec:?}: {e}")),
    }
}

fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).take(200).collect()
}

/// The INBOX path of a `mail_location` (`maildir:~/Maildir`, `maildir:/var/mail/%d/%n`,
/// with Dovecot's `:KEY=value` options after the path).
pub fn maildir_path(location: &str, vars: &Vars<'_>) -> Result<PathBuf, ExpandError> {
    let Some(rest) = location.strip_prefix("maildir:") else {
        return Err(ExpandError::Template(format!("mail_location {location:?}: only maildir: is supported")));
    };
    let mut parts = rest.split(':');
    let path_template = parts.next().unwrap_or("");
    for opt in parts {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        match k.to_ascii_uppercase().as_str() {
            "LAYOUT" if !v.eq_ignore_ascii_case("maildir++") => {
                return Err(ExpandError::Template(format!("mail_location LAYOUT={v}: only maildir++ is supported")));
            }
            "INBOX" => return Err(ExpandError::Template("mail_location INBOX= is not supported".into())),
            // INDEX=, CONTROL=, VOLATILEDIR=, UTF-8 and the like are Dovecot's own business.
            _ => {}
        }
    }
    let expanded = expand(path_template, vars, true)?;
    let path = if expanded == "~" || expanded.starts_with("~/") {
        let Some(home) = vars.home else {
            return Err(ExpandError::Template(format!("mail_location {location:?} uses ~ but the user has no home")));
        };
        PathBuf::from(format!("{home}{}", &expanded[1..]))
    } else {
        PathBuf::from(expanded)
    };
    check_path(&path).map_err(ExpandError::Template)?;
    Ok(path)
}

/// Absolute, no `..`, no NUL.
fn check_path(p: &Path) -> Result<(), String> {
    if !p.is_absolute() {
        return Err(format!("mail location {} is not an absolute path", p.display()));
    }
    if p.components().any(|c| c == Component::ParentDir) || p.to_string_lossy().contains('\0') {
        return Err(format!("mail location {} contains \"..\"", p.display()));
    }
    Ok(())
}

/// Dovecot's `quota_rule` for the whole store: `*:storage=1G` (bare numbers are kilobytes,
/// suffixes b k M G T), `*:bytes=N` (bytes). Other mailbox rules, `messages=`, relative and
/// percentage limits are not supported and ignored. `Ok(None)` = no limit.
pub fn parse_quota_rule(rule: &str) -> Result<Option<u64>, String> {
    let Some((mailbox, limits)) = rule.split_once(':') else {
        return Err(format!("quota_rule {rule:?}: expected <mailbox>:<limits>"));
    };
    if mailbox != "*" {
        return Ok(None);
    }
    let mut limit = None;
    for item in limits.split([':', ' ']).filter(|s| !s.is_empty()) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        let default_unit = match key {
            "storage" => 1024,
            "bytes" => 1,
            _ => continue,
        };
        if value.starts_with(['+', '-']) || value.ends_with('%') {
            continue;
        }
        let digits = value.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = value[..digits].parse().map_err(|_| format!("quota_rule {rule:?}: bad number"))?;
        let unit: u64 = match value[digits..].to_ascii_lowercase().as_str() {
            "" => default_unit,
            "b" => 1,
            "k" | "kb" => 1 << 10,
            "m" | "mb" => 1 << 20,
            "g" | "gb" => 1 << 30,
            "t" | "tb" => 1 << 40,
            other => return Err(format!("quota_rule {rule:?}: unknown unit {other:?}")),
        };
        limit = if n == 0 { None } else { Some(n.saturating_mul(unit)) };
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(user: &str) -> Vars<'_> {
        Vars { user, home: Some("/home/x") }
    }

    #[test]
    fn variables_expand_as_dovecot() {
        let v = vars("Alice@Example.Test");
        assert_eq!(
            expand("%u|%n|%d|%Lu|%Ln|%Ld|%h|%s|%%", &v, false).unwrap(),
            "Alice@Example.Test|Alice|Example.Test|alice@example.test|alice|example.test|/home/x|lmtp|%"
        );
        assert_eq!(
            expand("/v/%{domain}/%{username}/%{user}", &v, true).unwrap(),
            "/v/Example.Test/Alice/Alice@Example.Test"
        );
        assert_eq!(expand("%n", &vars("bob"), true).unwrap(), "bob");
        assert_eq!(expand("%d", &vars("bob"), true).unwrap(), "");
        assert!(matches!(expand("%x", &v, false), Err(ExpandError::Template(_))));
        assert!(matches!(expand("50%", &v, false), Err(ExpandError::Template(_))));
        assert!(matches!(expand("%{user", &v, false), Err(ExpandError::Template(_))));
        assert!(matches!(expand("%h", &Vars { user: "a", home: None }, false), Err(ExpandError::Template(_))));
    }

    #[test]
    fn address_parts_never_escape_a_path() {
        for user in ["../../etc@example.test", "a/b@example.test", "..@example.test", "x@..", "x@a/b", "a\nb@x", ".@x"]
        {
            assert!(matches!(expand("/var/vmail/%d/%n", &vars(user), true), Err(ExpandError::Unsafe(_))), "{user}");
        }
        // Outside paths the same values are just text.
        assert_eq!(expand("%n", &vars("../x@y"), false).unwrap(), "../x");
        // Dots inside a name are fine.
        assert_eq!(expand("/v/%d/%n", &vars("first.last@example.test"), true).unwrap(), "/v/example.test/first.last");
    }

    #[test]
    fn mail_locations() {
        let v = vars("alice@example.test");
        assert_eq!(maildir_path("maildir:~/Maildir", &v).unwrap(), PathBuf::from("/home/x/Maildir"));
        assert_eq!(maildir_path("maildir:~", &v).unwrap(), PathBuf::from("/home/x"));
        assert_eq!(
            maildir_path("maildir:/var/mail/%d/%n:LAYOUT=maildir++:INDEX=/idx/%u", &v).unwrap(),
            PathBuf::from("/var/mail/example.test/alice")
        );
        for bad in
            ["mbox:~/mail", "maildir:~/M:LAYOUT=fs", "maildir:relative/path", "maildir:/a/../b", "maildir:~/M:INBOX=/x"]
        {
            assert!(maildir_path(bad, &v).is_err(), "{bad}");
        }
        assert!(maildir_path("maildir:~/M", &Vars { user: "a", home: None }).is_err());
    }

    #[test]
    fn quota_rules() {
        assert_eq!(parse_quota_rule("*:storage=1G").unwrap(), Some(1 << 30));
        assert_eq!(parse_quota_rule("*:storage=100M").unwrap(), Some(100 << 20));
        assert_eq!(parse_quota_rule("*:storage=2048").unwrap(), Some(2 << 20), "kilobytes");
        assert_eq!(parse_quota_rule("*:bytes=1000").unwrap(), Some(1000));
        assert_eq!(parse_quota_rule("*:storage=0").unwrap(), None);
        assert_eq!(parse_quota_rule("*:storage=1k:messages=10").unwrap(), Some(1024));
        assert_eq!(parse_quota_rule("Trash:storage=+100M").unwrap(), None);
        assert_eq!(parse_quota_rule("*:storage=10%").unwrap(), None);
        assert!(parse_quota_rule("storage=1G").is_err());
        assert!(parse_quota_rule("*:storage=1Q").is_err());
    }

    fn params(extra: &[(&str, &str)]) -> Params {
        let mut p = Params::empty();
        for (k, v) in extra {
            p.set(k, v);
        }
        p
    }

    fn users_file(dir: &Path, text: &str) -> String {
        let path = dir.join("users");
        std::fs::write(&path, text).unwrap();
        format!("passwd-file:{}", path.display())
    }

    fn found(l: Lookup) -> User {
        match l {
            Lookup::Found(u) => u,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn passwd_file_passdb_with_mail_home() {
        let t = tempfile::tempdir().unwrap();
        let spec = users_file(
            t.path(),
            "alice@example.test:{PLAIN}x::::::\nbob@example.test:{PLAIN}x:1234:1235::/srv/bob::userdb_mail=maildir:~/M userdb_quota_rule=*:storage=1M\n",
        );
        let p = params(&[
            ("auth_passdb", &spec),
            ("mail_home", "/var/vmail/%d/%n"),
            ("mail_location", "maildir:~/mail"),
            ("recipient_delimiter", "+"),
        ]);
        let db = UserDb::from_params(&p, false).unwrap();
        let a = found(db.lookup("Alice+lists", "Example.TEST"));
        assert_eq!(a.name, "alice@example.test");
        assert_eq!(a.maildir, PathBuf::from("/var/vmail/example.test/alice/mail"));
        assert_eq!(a.home, Some(PathBuf::from("/var/vmail/example.test/alice")));
        assert_eq!(a.detail.as_deref(), Some("lists"));
        assert_eq!((a.owner, a.quota), (None, None));
        let b = found(db.lookup("bob", "example.test"));
        assert_eq!(b.maildir, PathBuf::from("/srv/bob/M"));
        assert_eq!(b.quota, Some(1 << 20));
        assert_eq!(db.lookup("carol", "example.test"), Lookup::Unknown);
        assert_eq!(db.lookup("../../etc", "example.test"), Lookup::Unknown);

        // Running as root: the passwd-file uid/gid, else mail_uid/mail_gid; never root.
        let db = UserDb::from_params(&p, true).unwrap();
        assert_eq!(found(db.lookup("bob", "example.test")).owner, Some((1234, 1235)));
        assert!(matches!(db.lookup("alice", "example.test"), Lookup::TempFail(e) if e.contains("mail_uid")));
        let mut p2 = p.clone();
        p2.set("mail_uid", "0");
        p2.set("mail_gid", "0");
        let db = UserDb::from_params(&p2, true).unwrap();
        assert!(matches!(db.lookup("alice", "example.test"), Lookup::TempFail(e) if e.contains("UID 0 not permitted")));
        p2.set("mail_uid", "nobody");
        p2.set("mail_gid", "65534");
        let db = UserDb::from_params(&p2, true).unwrap();
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid.as_raw();
        assert_eq!(found(db.lookup("alice", "example.test")).owner, Some((nobody, 65534)));
        p2.set("mail_uid", "no-such-user-here");
        let db = UserDb::from_params(&p2, true).unwrap();
        assert!(matches!(db.lookup("alice", "example.test"), Lookup::TempFail(e) if e.contains("unknown user")));
    }

    #[test]
    fn static_userdb_refuses_path_tricks() {
        let p = params(&[("auth_userdb", "static:uid=vmail gid=vmail home=/var/vmail/%d/%n")]);
        let db = UserDb::from_params(&p, false).unwrap();
        let u = found(db.lookup("alice", "example.test"));
        assert_eq!(u.maildir, PathBuf::from("/var/vmail/example.test/alice/Maildir"));
        for (local, domain) in [("../../etc", "example.test"), ("a/b", "example.test"), ("..", "x"), ("x", "..")] {
            assert!(matches!(db.lookup(local, domain), Lookup::BadAddress(_)), "{local}@{domain}");
        }
        // The user name as looked up (%Lu) is lower case; the path uses it.
        assert_eq!(
            found(db.lookup("BOB", "Example.Test")).maildir,
            PathBuf::from("/var/vmail/example.test/bob/Maildir")
        );
        // No tables at all: a configuration problem, deferred.
        let db = UserDb::from_params(&params(&[]), false).unwrap();
        assert!(matches!(db.lookup("a", "b"), Lookup::TempFail(_)));
        // A passdb that is not a passwd-file only says who exists.
        let p = params(&[("auth_passdb", "static:x"), ("mail_home", "/h/%n")]);
        assert_eq!(
            found(UserDb::from_params(&p, false).unwrap().lookup("a", "b")).maildir,
            PathBuf::from("/h/a/Maildir")
        );
    }
}

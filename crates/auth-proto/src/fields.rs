//! Shared userdb/passdb data forms: `key=value` field lists (`static:` arguments, the extra
//! fields of a passwd-file line, SQL columns) and Dovecot's `%` variables.
//!
//! lmtp-deliver has its own copy of the variable expansion (`userdb::expand`); it should
//! switch to [`expand`] here (same semantics, more variables).

use crate::escape::Params;

/// Splits `uid=vmail gid=vmail home=/var/vmail/%d/%n nopassword` into fields. A field without
/// `=` is a boolean (`nopassword`, `nodelay`); `userdb_` prefixes are kept (the caller
/// decides, see [`userdb_fields`]).
pub fn parse_fields(text: &str) -> Params {
    text.split_whitespace()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (f.to_string(), None),
        })
        .collect()
}

/// The userdb fields among passdb extra fields: `userdb_uid=5000` becomes `uid=5000`; other
/// fields are passdb fields and left out.
pub fn userdb_fields(extra: &Params) -> Params {
    extra.iter().filter_map(|(k, v)| k.strip_prefix("userdb_").map(|k| (k.to_string(), v.clone()))).collect()
}

/// The passdb fields among extra fields (those without the `userdb_` prefix).
pub fn passdb_fields(extra: &Params) -> Params {
    extra.iter().filter(|(k, _)| !k.starts_with("userdb_")).cloned().collect()
}

/// Values of Dovecot's `%` variables for one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    /// `%u`: the full user name.
    pub user: &'a str,
    /// `%s`: the service (`smtp`, `imap`, `lmtp`).
    pub service: &'a str,
    /// `%h`: the home directory, when known.
    pub home: Option<&'a str>,
    /// `%l`: local IP address.
    pub local_ip: Option<&'a str>,
    /// `%r`: remote IP address.
    pub remote_ip: Option<&'a str>,
    /// `%w`: the plaintext password (only for templates that explicitly ask, never logged).
    pub password: Option<&'a str>,
}

/// Why a template could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A value from the user name that must not appear in a path (`/`, `.`, `..`, controls).
    #[error("value {0:?} cannot be used in a path")]
    Unsafe(String),
    /// The template itself is wrong (configuration error).
    #[error("{0}")]
    Template(String),
}

impl Vars<'_> {
    /// (value, whether it comes from the user and must be path-safe). `%n`/`%d` split at the
    /// first `@`, as Dovecot does.
    fn value(&self, var: &str) -> Result<(String, bool), ExpandError> {
        let (local, domain) = match self.user.split_once('@') {
            Some((l, d)) => (l, d),
            None => (self.user, ""),
        };
        let opt = |v: Option<&str>, name: &str| -> Result<String, ExpandError> {
            v.map(str::to_string).ok_or_else(|| ExpandError::Template(format!("%{name} is not known here")))
        };
        Ok(match var {
            "u" | "user" => (self.user.to_string(), true),
            "n" | "username" => (local.to_string(), true),
            "d" | "domain" => (domain.to_string(), true),
            "s" | "service" => (self.service.to_string(), false),
            "h" | "home" => (opt(self.home, "h")?, false),
            "l" | "lip" => (opt(self.local_ip, "l")?, false),
            "r" | "rip" => (opt(self.remote_ip, "r")?, false),
            "w" | "password" => (opt(self.password, "w")?, true),
            other => return Err(ExpandError::Template(format!("unknown variable %{other}"))),
        })
    }
}

/// Expands `%u %n %d %s %h %l %r %w %%`, with the modifiers `L` (lower case) and `U` (upper
/// case), and the long forms `%{user}` etc. With `path`, values taken from the user name
/// must be safe single path components, so `../../etc` never escapes a `home=` template.
pub fn expand(template: &str, vars: &Vars<'_>, path: bool) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut it = template.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut c = it.next().ok_or_else(|| ExpandError::Template("'%' at the end".into()))?;
        if c == '%' {
            out.push('%');
            continue;
        }
        let mut case = None;
        if c == 'L' || c == 'U' {
            case = Some(c);
            c = it.next().ok_or_else(|| ExpandError::Template(format!("'%{c}' at the end")))?;
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
        let (mut value, from_user) = vars.value(&name)?;
        match case {
            Some('L') => value = value.to_lowercase(),
            Some(_) => value = value.to_uppercase(),
            None => {}
        }
        if path && from_user && !safe_component(&value) {
            return Err(ExpandError::Unsafe(value));
        }
        out.push_str(&value);
    }
    Ok(out)
}

/// A value that may stand as one path component.
fn safe_component(v: &str) -> bool {
    v != "." && v != ".." && !v.chars().any(|c| c == '/' || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_args() {
        let f = parse_fields("uid=vmail  gid=5000 home=/var/vmail/%d/%n nopassword");
        assert_eq!(f.len(), 4);
        assert_eq!(f[2], ("home".into(), Some("/var/vmail/%d/%n".into())));
        assert_eq!(f[3], ("nopassword".into(), None));
        let extra = parse_fields("userdb_uid=10 userdb_mail=maildir:~/M allow_nets=127.0.0.1");
        assert_eq!(
            userdb_fields(&extra),
            vec![("uid".into(), Some("10".into())), ("mail".into(), Some("maildir:~/M".into()))]
        );
        assert_eq!(passdb_fields(&extra), vec![("allow_nets".into(), Some("127.0.0.1".into()))]);
    }

    #[test]
    fn variables() {
        let v = Vars { user: "Alice@Example.COM", service: "smtp", remote_ip: Some("192.0.2.1"), ..Vars::default() };
        assert_eq!(expand("%Lu", &v, false).unwrap(), "alice@example.com");
        assert_eq!(expand("/var/vmail/%Ld/%Ln", &v, true).unwrap(), "/var/vmail/example.com/alice");
        assert_eq!(expand("%{username}:%s:%r:%%:%Un", &v, false).unwrap(), "Alice:smtp:192.0.2.1:%:ALICE");
        assert!(matches!(expand("%h", &v, false), Err(ExpandError::Template(_))));
        assert!(matches!(expand("%q", &v, false), Err(ExpandError::Template(_))));
        assert!(matches!(expand("50%", &v, false), Err(ExpandError::Template(_))));
        let bad = Vars { user: "../x@..", ..Vars::default() };
        assert!(matches!(expand("/var/vmail/%d/%n", &bad, true), Err(ExpandError::Unsafe(_))));
        assert_eq!(expand("%n", &Vars { user: "bob", ..Vars::default() }, false).unwrap(), "bob");
        assert_eq!(expand("%d", &Vars { user: "bob", ..Vars::default() }, false).unwrap(), "");
    }
}

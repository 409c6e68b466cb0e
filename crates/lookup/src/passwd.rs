//! `passwd-file:` (Dovecot's passwd-file) and `unix:` (passwd.byname,
//! group.byname).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::{FileStamp, LookupError, Table, check_key, fold, read_file};

/// The fields of a passwd-file value (the line after `user:`), as Dovecot
/// defines them: `password:uid:gid:gecos:home:shell:extra_fields`. Missing
/// fields are empty; `extra_fields` is the rest of the line (it may hold
/// colons, e.g. `userdb_mail=maildir:~/Maildir`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PasswdFields<'a> {
    /// The password hash, usually `{SCHEME}...`.
    pub password: &'a str,
    /// User id (number or name); empty = use the default.
    pub uid: &'a str,
    /// Group id (number or name); empty = use the default.
    pub gid: &'a str,
    /// Ignored by Dovecot.
    pub gecos: &'a str,
    /// Home directory.
    pub home: &'a str,
    /// Ignored by Dovecot.
    pub shell: &'a str,
    /// Space-separated `key=value` extra fields.
    pub extra_fields: &'a str,
}

/// Splits a `passwd-file:` lookup result into its fields.
pub fn split_passwd_value(value: &str) -> PasswdFields<'_> {
    let mut it = value.splitn(7, ':');
    let mut next = || it.next().unwrap_or("");
    PasswdFields {
        password: next(),
        uid: next(),
        gid: next(),
        gecos: next(),
        home: next(),
        shell: next(),
        extra_fields: next(),
    }
}

#[derive(Debug, Default)]
struct Loaded {
    stamp: Option<FileStamp>,
    users: HashMap<String, String>,
    warnings: Vec<String>,
}

/// `passwd-file:/path`. The key is the user name exactly as written in
/// the file (a full address when the file has them); the value is the rest
/// of the line after `user:`. Like Dovecot, the file is re-read when it
/// changes, so users can be added without a restart.
#[derive(Debug)]
pub(crate) struct PasswdFile {
    spec: String,
    path: PathBuf,
    state: RwLock<Loaded>,
}

impl PasswdFile {
    pub(crate) fn open(spec: &str, path: &Path) -> Result<Box<dyn Table>, LookupError> {
        let loaded = load(path)?;
        Ok(Box::new(PasswdFile { spec: spec.to_string(), path: path.to_path_buf(), state: RwLock::new(loaded) }))
    }
}

fn load(path: &Path) -> Result<Loaded, LookupError> {
    let stamp = FileStamp::of(path);
    let data = read_file(path)?;
    let file = path.display();
    let mut out = Loaded { stamp, ..Loaded::default() };
    let mut first_line = HashMap::new();
    for (n, raw) in data.split(|&b| b == b'\n').enumerate() {
        let line = n + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(text) = std::str::from_utf8(raw) else {
            return Err(LookupError::syntax(&file.to_string(), line, "invalid UTF-8"));
        };
        // Dovecot skips these: empty, comment, and empty user name.
        if text.is_empty() || text.starts_with('#') || text.starts_with(':') {
            continue;
        }
        let (user, rest) = text.split_once(':').unwrap_or((text, ""));
        if let Some(first) = first_line.get(user) {
            out.warnings.push(format!(
                "{file}:{line}: user {} exists more than once (line {first} used)",
                crate::printable(user)
            ));
            continue;
        }
        first_line.insert(user.to_string(), line);
        out.users.insert(user.to_string(), rest.to_string());
    }
    Ok(out)
}

impl Table for PasswdFile {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        check_key(&self.spec, key)?;
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if state.stamp == FileStamp::of(&self.path) {
                return Ok(state.users.get(key).cloned());
            }
        }
        let loaded = load(&self.path).map_err(|e| LookupError::lookup(&self.spec, key, e.to_string()))?;
        let value = loaded.users.get(key).cloned();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(value)
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn warnings(&self) -> Vec<String> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).warnings.clone()
    }
}

/// `unix:passwd.byname` and `unix:group.byname`: the whole passwd or group
/// line for a name, like Postfix's getpwnam()/getgrnam() tables. Reads the
/// files directly, so users from NSS modules (LDAP, sssd) are not seen.
/// Keys are folded to lower case, as Postfix does for this table.
#[derive(Debug)]
pub(crate) struct Unix {
    spec: String,
    path: PathBuf,
}

impl Unix {
    pub(crate) fn open(spec: &str, name: &str) -> Result<Box<dyn Table>, LookupError> {
        let path = match name {
            "passwd.byname" => "/etc/passwd",
            "group.byname" => "/etc/group",
            other => {
                return Err(LookupError::open(
                    spec,
                    format!("unknown table unix:{other} (expected passwd.byname or group.byname)"),
                ));
            }
        };
        Ok(Box::new(Unix::with_path(spec, Path::new(path))))
    }

    fn with_path(spec: &str, path: &Path) -> Unix {
        Unix { spec: spec.to_string(), path: path.to_path_buf() }
    }
}

impl Table for Unix {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        check_key(&self.spec, key)?;
        let key = fold(key);
        let data = read_file(&self.path).map_err(|e| LookupError::lookup(&self.spec, &key, e.to_string()))?;
        let text = String::from_utf8_lossy(&data);
        Ok(text
            .lines()
            .filter(|l| !l.starts_with(['+', '-', '#']))
            .find(|l| l.split(':').next() == Some(key.as_str()))
            .map(str::to_string))
    }

    fn spec(&self) -> &str {
        &self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open;
    use crate::testutil::Dir;

    const USERS: &str = "# Dovecot passwd-file\n\
                         alice@example.com:{SHA512-CRYPT}$6$x$y:1000:1000::/var/vmail/alice::userdb_mail=maildir:~/Maildir\n\
                         bob:{PLAIN}secret\r\n\
                         \n\
                         :skipped\n\
                         carol\n\
                         bob:{PLAIN}second\n";

    #[test]
    fn passwd_file() {
        let dir = Dir::new();
        let path = dir.write("users", USERS);
        let t = open(&format!("passwd-file:{}", path.display())).unwrap();
        let v = t.lookup("alice@example.com").unwrap().unwrap();
        assert_eq!(v, "{SHA512-CRYPT}$6$x$y:1000:1000::/var/vmail/alice::userdb_mail=maildir:~/Maildir");
        assert_eq!(
            split_passwd_value(&v),
            PasswdFields {
                password: "{SHA512-CRYPT}$6$x$y",
                uid: "1000",
                gid: "1000",
                gecos: "",
                home: "/var/vmail/alice",
                shell: "",
                extra_fields: "userdb_mail=maildir:~/Maildir",
            }
        );
        assert_eq!(t.lookup("bob").unwrap().as_deref(), Some("{PLAIN}secret"));
        assert_eq!(split_passwd_value("{PLAIN}secret").uid, "");
        assert_eq!(t.lookup("carol").unwrap().as_deref(), Some(""));
        assert_eq!(t.lookup("Bob").unwrap(), None, "exact match, as Dovecot");
        assert_eq!(t.lookup("").unwrap(), None);
        let w = t.warnings();
        assert_eq!(w.len(), 1);
        assert!(w[0].ends_with(":7: user bob exists more than once (line 3 used)"), "{w:?}");

        // Edited file is picked up by the next lookup.
        std::fs::write(&path, "dave:{PLAIN}x\n").unwrap();
        assert_eq!(t.lookup("dave").unwrap().as_deref(), Some("{PLAIN}x"));
        assert_eq!(t.lookup("bob").unwrap(), None);
        assert!(t.warnings().is_empty());
        // A vanished file fails lookups instead of answering "no such user".
        std::fs::remove_file(&path).unwrap();
        assert!(t.lookup("dave").is_err());
    }

    #[test]
    fn unix_tables() {
        let dir = Dir::new();
        let path = dir.write("passwd", "root:x:0:0:root:/root:/bin/bash\n+nis\nmail:x:8:8::/var/mail:/sbin/nologin\n");
        let t = Unix::with_path("unix:passwd.byname", &path);
        assert_eq!(t.lookup("Root").unwrap().as_deref(), Some("root:x:0:0:root:/root:/bin/bash"));
        assert_eq!(t.lookup("mail").unwrap().as_deref(), Some("mail:x:8:8::/var/mail:/sbin/nologin"));
        assert_eq!(t.lookup("nis").unwrap(), None);
        assert_eq!(t.lookup("x").unwrap(), None);
        assert!(open("unix:shadow.byname").unwrap_err().to_string().contains("unknown table unix:shadow.byname"));
        // The real one opens; root exists on any Unix.
        let t = open("unix:passwd.byname").unwrap();
        assert!(t.lookup("root").unwrap().unwrap().starts_with("root:"));
    }
}

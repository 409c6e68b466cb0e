//! The user's mail store and identity from the userdb fields: Dovecot's `mail_location`
//! (`maildir:~/Maildir`, `maildir:/var/vmail/%d/%n/mail:INBOX=...:LAYOUT=maildir++`),
//! `mail_home`, `mail_uid`/`mail_gid` and the `first_valid_*`/`last_valid_*` limits. Pure:
//! no I/O beyond the system user/group database for names given in place of numbers.

use std::path::{Component, Path, PathBuf};

use rpost_auth_proto::{ExpandError, Params, Vars, expand, param};

/// Where a user's mail lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailLocation {
    /// The store root: INBOX's Maildir unless `INBOX=` says otherwise; other mailboxes are
    /// Maildir++ folders below it.
    pub root: PathBuf,
    /// `:INBOX=<path>`: INBOX kept elsewhere (for POP3 this is the mailbox served).
    pub inbox: Option<PathBuf>,
}

/// Settings that shape the location and identity (main.cf / Dovecot names).
#[derive(Debug, Clone, Default)]
pub struct UserRules {
    pub mail_location: String,
    pub mail_home: String,
    pub mail_uid: String,
    pub mail_gid: String,
    pub first_valid_uid: u32,
    pub last_valid_uid: u32,
    pub first_valid_gid: u32,
    pub last_valid_gid: u32,
}

/// A resolved mail user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailUser {
    pub home: Option<PathBuf>,
    pub location: MailLocation,
    pub uid: u32,
    pub gid: u32,
}

/// Builds the user from userdb `fields` (`uid gid home mail`), falling back to the
/// settings. Errors are configuration problems (the user cannot be served), with Dovecot's
/// wording where it has one.
pub fn resolve(user: &str, service: &str, fields: &Params, rules: &UserRules) -> Result<MailUser, String> {
    let nonempty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let vars = Vars { user, service, ..Vars::default() };
    let home = match param(fields, "home").map(str::to_string).or_else(|| nonempty(&rules.mail_home)) {
        Some(t) => {
            let h = expand(&t, &vars, true).map_err(expand_err)?;
            if !h.starts_with('/') {
                return Err(format!("relative home directory paths not supported: {h}"));
            }
            Some(h)
        }
        None => None,
    };
    let vars = Vars { home: home.as_deref(), ..vars };
    let loc = param(fields, "mail").map(str::to_string).or_else(|| nonempty(&rules.mail_location));
    let location = mail_location(loc.as_deref().unwrap_or("maildir:~/Maildir"), &vars)?;
    let uid_spec = param(fields, "uid").map(str::to_string).or_else(|| nonempty(&rules.mail_uid));
    let Some(uid_spec) = uid_spec else {
        return Err("User is missing UID (see mail_uid setting)".into());
    };
    let gid_spec = param(fields, "gid").map(str::to_string).or_else(|| nonempty(&rules.mail_gid));
    let (uid, primary_gid) = rpost_privilege::resolve_uid(&uid_spec, gid_spec.is_none())
        .map_err(|e| format!("{e} (userdb uid or mail_uid)"))?;
    let gid = match gid_spec {
        Some(g) => rpost_privilege::resolve_gid(&g).map_err(|e| format!("{e} (userdb gid or mail_gid)"))?,
        None => primary_gid.ok_or("User is missing GID (see mail_gid setting)")?,
    };
    check_id(uid, rules.first_valid_uid, rules.last_valid_uid, "UID", "uid")?;
    check_id(gid, rules.first_valid_gid, rules.last_valid_gid, "GID", "gid")?;
    Ok(MailUser { home: home.map(PathBuf::from), location, uid, gid })
}

/// Dovecot: `Mail access for users with UID 0 not permitted (see first_valid_uid in config file)`.
fn check_id(id: u32, first: u32, last: u32, what: &str, setting: &str) -> Result<(), String> {
    if id == 0 && what == "UID" {
        return Err("Mail access for users with UID 0 not permitted (root is never a mail user)".into());
    }
    if id < first {
        return Err(format!(
            "Mail access for users with {what} {id} not permitted (see first_valid_{setting} in config file)"
        ));
    }
    if last != 0 && id > last {
        return Err(format!(
            "Mail access for users with {what} {id} not permitted (see last_valid_{setting} in config file)"
        ));
    }
    Ok(())
}

fn expand_err(e: ExpandError) -> String {
    match e {
        ExpandError::Unsafe(v) => {
            format!("user name part {:?} cannot be used in a mail path", rpost_auth_proto::printable(&v))
        }
        ExpandError::Template(t) => t,
    }
}

/// Parses and expands a `mail_location`. Only `maildir:` with the Maildir++ layout is
/// served (what rpost-maildir stores); `INDEX=`, `CONTROL=`, `VOLATILEDIR=` and similar
/// options are Dovecot's cache business and ignored.
pub fn mail_location(location: &str, vars: &Vars<'_>) -> Result<MailLocation, String> {
    let Some(rest) = location.strip_prefix("maildir:") else {
        return Err(format!("mail_location {location:?}: only maildir: is supported"));
    };
    let mut parts = rest.split(':');
    let root = expand_path(parts.next().unwrap_or(""), vars)?;
    let mut inbox = None;
    for opt in parts {
        let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
        match k.to_ascii_uppercase().as_str() {
            "LAYOUT" if !v.eq_ignore_ascii_case("maildir++") => {
                return Err(format!("mail_location LAYOUT={v}: only maildir++ is supported"));
            }
            "INBOX" => inbox = Some(expand_path(v, vars)?),
            _ => {}
        }
    }
    Ok(MailLocation { root, inbox })
}

fn expand_path(template: &str, vars: &Vars<'_>) -> Result<PathBuf, String> {
    let expanded = expand(template, vars, true).map_err(expand_err)?;
    let path = if expanded == "~" || expanded.starts_with("~/") {
        let Some(home) = vars.home else {
            return Err(format!("mail location {template:?} uses ~ but the user has no home directory"));
        };
        PathBuf::from(format!("{home}{}", &expanded[1..]))
    } else {
        PathBuf::from(expanded)
    };
    check_path(&path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &str) -> Params {
        rpost_auth_proto::parse_fields(s)
    }

    fn rules() -> UserRules {
        UserRules { first_valid_uid: 500, first_valid_gid: 1, ..UserRules::default() }
    }

    #[test]
    fn home_and_tilde() {
        let u =
            resolve("alice@example.com", "pop3", &fields("uid=5000 gid=5000 home=/var/vmail/%d/%n"), &rules()).unwrap();
        assert_eq!(u.home.as_deref(), Some(Path::new("/var/vmail/example.com/alice")));
        assert_eq!(u.location.root, Path::new("/var/vmail/example.com/alice/Maildir"));
        assert_eq!(u.location.inbox, None);
        assert_eq!((u.uid, u.gid), (5000, 5000));
    }

    #[test]
    fn mail_location_templates_and_options() {
        let r = UserRules {
            mail_location: "maildir:/var/vmail/%Ld/%Ln/mail:LAYOUT=maildir++:INBOX=/var/vmail/%Ld/%Ln/inbox:INDEX=/x"
                .into(),
            mail_uid: "5000".into(),
            mail_gid: "5001".into(),
            ..rules()
        };
        let u = resolve("Bob@Example.org", "imap", &Params::new(), &r).unwrap();
        assert_eq!(u.location.root, Path::new("/var/vmail/example.org/bob/mail"));
        assert_eq!(u.location.inbox.as_deref(), Some(Path::new("/var/vmail/example.org/bob/inbox")));
        assert_eq!((u.uid, u.gid), (5000, 5001));
        // The userdb's mail= wins over mail_location; mail_home gives ~.
        let r = UserRules { mail_home: "/home/vmail/%u".into(), ..r };
        let u = resolve("carol", "imap", &fields("mail=maildir:~/M"), &r).unwrap();
        assert_eq!(u.location.root, Path::new("/home/vmail/carol/M"));
    }

    #[test]
    fn refusals() {
        let r = rules();
        let e = |f: &str, r: &UserRules| resolve("alice@example.com", "pop3", &fields(f), r).unwrap_err();
        assert!(e("uid=0 gid=0 home=/h", &r).contains("UID 0"));
        assert!(e("uid=100 gid=100 home=/h", &r).contains("first_valid_uid"));
        let r2 = UserRules { last_valid_uid: 6000, ..rules() };
        assert!(e("uid=7000 gid=100 home=/h", &r2).contains("last_valid_uid"));
        assert!(e("gid=100 home=/h", &r).contains("missing UID"));
        assert!(e("uid=5000 gid=5000", &r).contains("no home"));
        assert!(e("uid=5000 gid=5000 home=/h mail=mbox:~/mail", &r).contains("only maildir"));
        assert!(e("uid=5000 gid=5000 home=/h mail=maildir:~/M:LAYOUT=fs", &r).contains("maildir++"));
        assert!(e("uid=5000 gid=5000 home=relative", &r).contains("relative"));
        // A user name cannot walk out of the template.
        let bad = resolve("../../etc@x", "pop3", &fields("uid=5000 gid=5000 home=/var/vmail/%n"), &r).unwrap_err();
        assert!(bad.contains("cannot be used"), "{bad}");
        let bad = resolve("x", "pop3", &fields("uid=5000 gid=5000 home=/h mail=maildir:/a/../b"), &r).unwrap_err();
        assert!(bad.contains(".."), "{bad}");
    }
}

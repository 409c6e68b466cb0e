//! `rmaster setup DOMAIN [--user ADDRESS]`: the quickstart. Turns the packaged configuration
//! into a working server for one virtual mailbox domain: main.cf (identity, the virtual
//! domain, authd with a passwd-file, Maildir under `/var/vmail/%d/%n`, TLS with the
//! self-signed default certificate), master.cf with the submission/smtps/imaps services, a
//! first user with a random password hashed as SHA512-CRYPT (the password is printed once and
//! stored nowhere else), then the DNS records to publish and the client settings.
//!
//! An edited main.cf is never clobbered: "edited" means its settings differ from the packaged
//! main.cf's (comments do not count). `--force` overwrites it and keeps the old one as
//! `main.cf.bak`.

use std::fmt::Write as _;
use std::io::Read;
use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};

use rpost_config::maincf::MainCf;
use rpost_config::mastercf::MasterCf;

use crate::commands::CommandError;

/// The packaged defaults (the files the Debian package installs as conffiles).
pub const PACKAGED_MAIN_CF: &str = include_str!("../../packaging/main.cf");
/// See [`PACKAGED_MAIN_CF`].
pub const PACKAGED_MASTER_CF: &str = include_str!("../../packaging/master.cf");

/// Services a client-facing server needs; copied from the packaged master.cf when missing.
const CLIENT_SERVICES: &[&str] = &["submission", "smtps", "imaps", "auth", "auth-userdb", "lmtp-deliver"];

/// What `rmaster setup` was asked to do.
#[derive(Debug, Clone)]
pub struct SetupArgs {
    /// The mail domain, e.g. example.com.
    pub domain: String,
    /// The first user's address (in `domain`).
    pub user: Option<String>,
    /// myhostname; default `mail.DOMAIN`.
    pub hostname: Option<String>,
    /// Root of the virtual mailboxes (mail_home is `DIR/%d/%n`).
    pub mail_dir: PathBuf,
    /// Overwrite an edited main.cf / replace an existing user.
    pub force: bool,
}

fn other(msg: impl Into<String>) -> CommandError {
    CommandError::Other(msg.into())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CommandError {
    let what = what.into();
    move |source| CommandError::Io { what, source }
}

/// A DNS name we are willing to write into main.cf and zone snippets: LDH labels only, so
/// nothing can smuggle main.cf syntax (`$`, `,`, `=`, spaces, line breaks) or zone syntax.
pub fn valid_domain(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The local part we accept for the first user: the characters a passwd-file line and an
/// IMAP login take without quoting (no `:`, spaces, `%`, `/`).
fn valid_local_part(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 64
        && !l.starts_with('.')
        && !l.ends_with('.')
        && !l.contains("..")
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// Whether main.cf's settings differ from the packaged ones (comments and order do not count).
fn edited(existing: &str, path: &Path) -> Result<bool, CommandError> {
    let ours = MainCf::parse(path, PACKAGED_MAIN_CF)?;
    let theirs = MainCf::parse(path, existing)?;
    let key = |m: &MainCf| {
        let mut v: Vec<(String, String)> = m.entries.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
        v.sort();
        v
    };
    Ok(key(&ours) != key(&theirs))
}

/// A random password: 20 characters from an alphabet without look-alikes (~113 bits).
fn random_password() -> Result<String, CommandError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::new();
    let mut f = std::fs::File::open("/dev/urandom").map_err(io("/dev/urandom"))?;
    while out.len() < 20 {
        let mut b = [0u8; 32];
        f.read_exact(&mut b).map_err(io("/dev/urandom"))?;
        // Rejection sampling keeps the distribution uniform.
        let limit = 256 - 256 % ALPHABET.len();
        for x in b {
            if (x as usize) < limit && out.len() < 20 {
                out.push(ALPHABET[x as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// The address other hosts probably reach us at: the source address of a route to the
/// Internet (no packet is sent by connecting a UDP socket).
fn public_address() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:25").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Appends the packaged block of each client-facing service missing from master.cf.
fn complete_master_cf(path: &Path) -> Result<Vec<String>, CommandError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_file(path, PACKAGED_MASTER_CF, 0o644)?;
            return Ok(vec!["wrote the packaged master.cf".into()]);
        }
        Err(e) => return Err(io(path.display().to_string())(e)),
    };
    let have = MasterCf::parse(path, &text)?;
    let packaged = MasterCf::parse(path, PACKAGED_MASTER_CF)?;
    let mut add = String::new();
    let mut added = Vec::new();
    for name in CLIENT_SERVICES {
        for svc in packaged.services.iter().filter(|s| s.name == *name) {
            if have.find(&svc.name, svc.kind).is_some() {
                continue;
            }
            // The service's logical line: its first line plus the indented continuation lines.
            let lines: Vec<&str> = PACKAGED_MASTER_CF.lines().collect();
            let start = svc.line - 1;
            add.push_str(lines[start]);
            add.push('\n');
            for l in &lines[start + 1..] {
                if l.starts_with([' ', '\t']) {
                    add.push_str(l);
                    add.push('\n');
                } else {
                    break;
                }
            }
            added.push(format!("added the {} service to master.cf", svc.name));
        }
    }
    if !add.is_empty() {
        let mut new = text;
        if !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str("# Added by rmaster setup.\n");
        new.push_str(&add);
        write_file(path, &new, 0o644)?;
    }
    Ok(added)
}

/// Writes a file atomically (temp file + rename) with the given mode.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), CommandError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("rpost-setup.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(tmp.display().to_string()))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io(tmp.display().to_string()))?;
    std::fs::rename(&tmp, path).map_err(io(path.display().to_string()))
}

/// A user's uid/gid by name, if the user exists.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let u = nix::unistd::User::from_name(name).ok()??;
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

/// Runs the quickstart; returns the report to print.
pub fn run(dir: &Path, args: &SetupArgs) -> Result<String, CommandError> {
    let domain = args.domain.trim_end_matches('.').to_ascii_lowercase();
    if !valid_domain(&domain) {
        return Err(other(format!("{:?} is not a domain name (letters, digits, '-', at least one dot)", args.domain)));
    }
    let hostname = args.hostname.clone().unwrap_or_else(|| format!("mail.{domain}")).to_ascii_lowercase();
    if !valid_domain(&hostname) {
        return Err(other(format!("{hostname:?} is not a host name")));
    }
    let user = match &args.user {
        None => None,
        Some(a) => {
            let a = a.to_ascii_lowercase();
            let Some((local, d)) = a.rsplit_once('@') else {
                return Err(other(format!("{a:?} is not an address (user@{domain})")));
            };
            if d != domain {
                return Err(other(format!(
                    "{a} is not in {domain}: the quickstart user must be in the domain it sets up"
                )));
            }
            if !valid_local_part(local) {
                return Err(other(format!("{a:?}: use letters, digits and . _ + - in the local part")));
            }
            Some(a)
        }
    };
    let mail_dir = args.mail_dir.to_str().filter(|s| s.starts_with('/') && !s.contains(['\n', '%', '$', ' ', ',']));
    let Some(mail_dir) = mail_dir.map(|s| s.trim_end_matches('/').to_string()) else {
        return Err(other(format!(
            "{}: the mail directory must be an absolute path without spaces, %, $ or ','",
            args.mail_dir.display()
        )));
    };

    std::fs::create_dir_all(dir).map_err(io(dir.display().to_string()))?;
    let main_cf = dir.join("main.cf");
    let mut notes = Vec::new();
    match std::fs::read_to_string(&main_cf) {
        Ok(existing) if edited(&existing, &main_cf)? => {
            if !args.force {
                return Err(other(format!(
                    "{} has been edited; not overwriting it (rmaster setup --force keeps it as main.cf.bak)",
                    main_cf.display()
                )));
            }
            let bak = dir.join("main.cf.bak");
            std::fs::copy(&main_cf, &bak).map_err(io(bak.display().to_string()))?;
            notes.push(format!("kept the old main.cf as {}", bak.display()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(main_cf.display().to_string())(e)),
    }
    write_file(&main_cf, PACKAGED_MAIN_CF, 0o644)?;
    let users = dir.join("users");
    let aliases = dir.join("aliases");
    let virtual_map = dir.join("virtual");
    let is_root = nix::unistd::geteuid().is_root();
    let vmail = user_ids("vmail");
    let (mail_uid, mail_gid) = if is_root {
        ("vmail".to_string(), "vmail".to_string())
    } else {
        // Not root: mail can only be stored as ourselves.
        (nix::unistd::geteuid().to_string(), nix::unistd::getegid().to_string())
    };
    if is_root && vmail.is_none() {
        notes.push(
            "user vmail does not exist: create it (useradd --system --home-dir /var/vmail vmail) before mail arrives"
                .into(),
        );
    }
    let mut set: Vec<(String, String)> = vec![
        ("myhostname", hostname.clone()),
        ("mydomain", domain.clone()),
        ("myorigin", "$mydomain".into()),
        // The virtual domain must not also be a local one.
        ("mydestination", "$myhostname, localhost.$mydomain, localhost".into()),
        ("virtual_mailbox_domains", domain.clone()),
        ("virtual_alias_maps", format!("hash:{}", virtual_map.display())),
        ("alias_maps", format!("hash:{}", aliases.display())),
        ("alias_database", format!("hash:{}", aliases.display())),
        ("auth_passdb", format!("passwd-file:{}", users.display())),
        ("mail_uid", mail_uid),
        ("mail_gid", mail_gid),
        ("mail_home", format!("{mail_dir}/%d/%n")),
        ("mail_location", "maildir:~/Maildir".into()),
        ("smtpd_tls_security_level", "may".into()),
        ("smtp_tls_security_level", "may".into()),
        ("smtpd_sasl_type", "dovecot".into()),
        ("smtpd_sasl_path", "private/auth".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if !is_root {
        // An unprivileged rpost runs everything as the invoking user.
        set.push((
            "mail_owner".into(),
            nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.name).unwrap_or_default(),
        ));
    }
    set.retain(|(_, v)| !v.is_empty());
    rpost_config::edit::set_params(&main_cf, &set)?;
    notes.extend(complete_master_cf(&dir.join("master.cf"))?);

    // Aliases: the RFC 5321 postmaster, for local mail, in a table of our own (the system's
    // /etc/aliases.db may be a Berkeley DB file from Postfix).
    if !aliases.exists() {
        write_file(&aliases, "postmaster: root\nMAILER-DAEMON: postmaster\nabuse: postmaster\n", 0o644)?;
    }
    crate::admin::map_build(&aliases.display().to_string(), true)?;

    let mut password = None;
    let rpost_group = nix::unistd::Group::from_name("rpost").ok().flatten();
    if let Some(address) = &user {
        let existing = std::fs::read_to_string(&users).unwrap_or_default();
        let prefix = format!("{address}:");
        if existing.lines().any(|l| l.starts_with(&prefix)) && !args.force {
            return Err(other(format!(
                "{address} already exists in {}; rmaster setup --force gives it a new password",
                users.display()
            )));
        }
        let pw = random_password()?;
        let hash = rpost_password::generate("SHA512-CRYPT", pw.as_bytes()).map_err(|e| other(e.to_string()))?;
        let mut text: String = existing.lines().filter(|l| !l.starts_with(&prefix)).map(|l| format!("{l}\n")).collect();
        writeln!(text, "{address}:{hash}::::::").expect("string write");
        // Hashes only, yet still not for everyone: root and mail_owner's group (authd) read it.
        write_file(&users, &text, 0o640)?;
        if is_root && let Some(g) = &rpost_group {
            nix::unistd::chown(&users, Some(nix::unistd::Uid::from_raw(0)), Some(g.gid))
                .map_err(|e| other(format!("chown {}: {e}", users.display())))?;
        }
        password = Some(pw);
    } else if !users.exists() {
        write_file(&users, "", 0o640)?;
    }
    // postmaster@domain reaches the first user (RFC 5321 4.5.1 wants it to exist).
    let mut vtext = String::new();
    if let Some(a) = &user
        && a != &format!("postmaster@{domain}")
    {
        writeln!(vtext, "postmaster@{domain} {a}\nabuse@{domain} {a}").expect("string write");
    }
    let old_virtual = std::fs::read_to_string(&virtual_map).unwrap_or_default();
    let kept: String = old_virtual
        .lines()
        .filter(|l| !l.starts_with(&format!("postmaster@{domain} ")) && !l.starts_with(&format!("abuse@{domain} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    write_file(&virtual_map, &(kept + &vtext), 0o644)?;
    crate::admin::map_build(&virtual_map.display().to_string(), false)?;

    std::fs::create_dir_all(&mail_dir).map_err(io(mail_dir.clone()))?;
    if is_root && let Some((uid, gid)) = vmail {
        nix::unistd::chown(
            Path::new(&mail_dir),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| other(format!("chown {mail_dir}: {e}")))?;
    }

    Ok(report(&domain, &hostname, user.as_deref(), password.as_deref(), dir, &notes))
}

fn report(
    domain: &str,
    host: &str,
    user: Option<&str>,
    password: Option<&str>,
    dir: &Path,
    notes: &[String],
) -> String {
    let mut o = String::new();
    let w = &mut o;
    let c = dir.display();
    let _ = writeln!(w, "rmaster: wrote {c}/main.cf for {domain} (mail host {host})");
    for n in notes {
        let _ = writeln!(w, "rmaster: {n}");
    }
    if let (Some(u), Some(p)) = (user, password) {
        let _ = writeln!(w, "\nFirst user (the password is shown only now; it is stored hashed in {c}/users):");
        let _ = writeln!(w, "  login:    {u}\n  password: {p}");
        let _ = writeln!(
            w,
            "  more users: rmaster pw -s SHA512-CRYPT, then a line \"user@{domain}:{{SHA512-CRYPT}}...::::::\" in {c}/users"
        );
    }
    let addr = public_address();
    let (a_type, a_value) = match addr {
        Some(IpAddr::V6(ip)) => ("AAAA", ip.to_string()),
        Some(IpAddr::V4(ip)) => ("A", ip.to_string()),
        None => ("A", "<this server's public IPv4 address>".into()),
    };
    let _ = writeln!(
        w,
        "\nDNS records to publish (the address is a guess from this machine's default route; use the public one):"
    );
    let _ = writeln!(w, "  {domain}.\tIN MX 10 {host}.");
    let _ = writeln!(w, "  {host}.\tIN {a_type} {a_value}");
    let _ = writeln!(w, "  {domain}.\tIN TXT \"v=spf1 mx -all\"");
    let _ = writeln!(w, "  _dmarc.{domain}.\tIN TXT \"v=DMARC1; p=none; rua=mailto:postmaster@{domain}\"");
    let _ = writeln!(w, "  and a PTR record for {a_value} naming {host} (ask your hosting provider).");
    let _ = writeln!(w, "  DKIM: rpost does not sign mail yet; no record needed.");
    let _ = writeln!(w, "\nMail client settings:");
    let _ = writeln!(w, "  incoming: IMAP  {host} port 993, SSL/TLS, normal password, user name = the full address");
    let _ = writeln!(w, "  outgoing: SMTP  {host} port 587 STARTTLS (or 465 SSL/TLS), normal password, same user name");
    let _ = writeln!(
        w,
        "  The certificate is self-signed ({c}/tls/rpost.pem): clients warn until you set smtpd_tls_cert_file/smtpd_tls_key_file to a real one."
    );
    let _ = writeln!(w, "\nNext: rmaster -c {c} check && rmaster -c {c} start   (or: systemctl restart rpost)");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(valid_domain("example.test"));
        assert!(valid_domain("mail.example-1.test."));
        for bad in
            ["", "localhost", "a..b", "-a.b", "a.b-", "ex ample.test", "a.b\nrelayhost=x", "a,b.c", "$x.test", "a.b=c"]
        {
            assert!(!valid_domain(bad), "{bad:?}");
        }
    }

    #[test]
    fn local_parts() {
        assert!(valid_local_part("alice"));
        assert!(valid_local_part("a.b+c_d-e"));
        for bad in ["", ".a", "a.", "a..b", "a:b", "a b", "a%b", "a/b", "a\nb"] {
            assert!(!valid_local_part(bad), "{bad:?}");
        }
    }

    #[test]
    fn packaged_main_cf_is_not_edited() {
        let p = Path::new("main.cf");
        assert!(!edited(PACKAGED_MAIN_CF, p).unwrap());
        // Comments do not count; settings do.
        assert!(!edited(&format!("# a note\n{PACKAGED_MAIN_CF}"), p).unwrap());
        assert!(edited(&format!("{PACKAGED_MAIN_CF}relayhost = [x.test]\n"), p).unwrap());
    }

    #[test]
    fn passwords_are_random_and_plain() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}

//! `rmaster pw` (doveadm pw) and `rmaster auth test` (doveadm auth test).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use rpost_auth_proto::{AuthRequest, ClientConnection, ClientUpdate, ServerReply, b64_encode};

/// doveadm's exit status for a failed check (EX_TEMPFAIL), as scripts expect it.
const EX_TEMPFAIL: u8 = 75;
/// doveadm auth test's exit status for a refused login (EX_NOPERM).
const EX_NOPERM: u8 = 77;

fn fatal(msg: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("rmaster: fatal: {msg}");
    ExitCode::from(code)
}

/// Reads a password: from the terminal without echo (`stty -echo`, as no raw terminal
/// calls are allowed outside crates/privilege), else one line of standard input.
fn read_password(prompt: &str) -> std::io::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let stty = |arg: &str| {
        let _ =
            Command::new("stty").arg(arg).stdin(Stdio::inherit()).stdout(Stdio::null()).stderr(Stdio::null()).status();
    };
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    stty("-echo");
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    stty("echo");
    eprintln!();
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `rmaster pw [-s SCHEME] [-p PASS] [-t HASH]`.
pub fn pw(scheme: Option<&str>, password: Option<String>, test: Option<&str>, list: bool) -> ExitCode {
    if list {
        println!("{}", rpost_password::SCHEMES.join(" "));
        return ExitCode::SUCCESS;
    }
    let password = match password {
        Some(p) => p,
        None if test.is_some() => match read_password("Enter password to verify: ") {
            Ok(p) => p,
            Err(e) => return fatal(format!("reading the password: {e}"), EX_TEMPFAIL),
        },
        None => {
            let first = match read_password("Enter new password: ") {
                Ok(p) => p,
                Err(e) => return fatal(format!("reading the password: {e}"), EX_TEMPFAIL),
            };
            if std::io::stdin().is_terminal() {
                match read_password("Retype new password: ") {
                    Ok(again) if again == first => {}
                    Ok(_) => return fatal("Passwords don't match!", 1),
                    Err(e) => return fatal(format!("reading the password: {e}"), EX_TEMPFAIL),
                }
            }
            first
        }
    };
    let hash = match test {
        Some(h) => {
            if !h.starts_with('{') {
                return fatal("Missing {scheme} prefix from hash", EX_TEMPFAIL);
            }
            h.to_string()
        }
        None => match rpost_password::generate(scheme.unwrap_or("CRYPT"), password.as_bytes()) {
            Ok(h) => h,
            Err(e) => return fatal(e, EX_TEMPFAIL),
        },
    };
    // As doveadm: every generated hash is checked back before it is printed.
    match rpost_password::verify(&hash, password.as_bytes(), "CRYPT") {
        Ok(true) if test.is_some() => println!("{hash} (verified)"),
        Ok(true) => println!("{hash}"),
        Ok(false) => return fatal("reverse password verification check failed: Password mismatch", EX_TEMPFAIL),
        Err(e) => return fatal(format!("reverse decode check failed: {e}"), EX_TEMPFAIL),
    }
    ExitCode::SUCCESS
}

/// The auth client socket: `-a PATH`, else `private/auth` in the queue directory.
fn socket_path(dir: &Path, socket: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(s) = socket {
        return Ok(s.to_path_buf());
    }
    let config = rpost_config::Config::load(dir).map_err(|e| e.to_string())?;
    let queue = config.params.get("queue_directory").map_err(|e| e.to_string())?;
    Ok(Path::new(&queue).join("private/auth"))
}

/// `rmaster auth test [-a SOCKET] [-x key=value] USER [PASS]`: a PLAIN login through authd,
/// printed as doveadm auth test does.
pub fn auth_test(dir: &Path, socket: Option<&Path>, info: &[String], user: &str, password: Option<String>) -> ExitCode {
    let path = match socket_path(dir, socket) {
        Ok(p) => p,
        Err(e) => return fatal(e, EX_TEMPFAIL),
    };
    let password = match password {
        Some(p) => p,
        None => match read_password("Password: ") {
            Ok(p) => p,
            Err(e) => return fatal(format!("reading the password: {e}"), EX_TEMPFAIL),
        },
    };
    match plain_login(&path, info, user, &password) {
        Ok(ServerReply::Ok { user: name, params, .. }) => {
            println!("passdb: {user} auth succeeded");
            println!("extra fields:");
            println!("  user={name}");
            for (k, v) in params {
                match v {
                    Some(v) => println!("  {k}={v}"),
                    None => println!("  {k}"),
                }
            }
            ExitCode::SUCCESS
        }
        Ok(ServerReply::Fail(f)) => {
            println!("passdb: {user} auth failed");
            println!("extra fields:");
            if let Some(u) = f.user {
                println!("  user={u}");
            }
            if let Some(r) = f.reason {
                println!("  reason={r}");
            }
            if f.temp {
                println!("  temp");
            }
            ExitCode::from(EX_NOPERM)
        }
        Ok(other) => fatal(format!("unexpected reply from authd: {other:?}"), EX_TEMPFAIL),
        Err(e) => fatal(format!("{}: {e}", path.display()), EX_TEMPFAIL),
    }
}

fn plain_login(path: &Path, info: &[String], user: &str, password: &str) -> Result<ServerReply, String> {
    let mut sock = UnixStream::connect(path).map_err(|e| e.to_string())?;
    // authd applies auth_failure_delay and its penalty before answering.
    sock.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    let (mut conn, hello) = ClientConnection::new(std::process::id());
    sock.write_all(hello.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut next = |conn: &mut ClientConnection, sock: &mut UnixStream| -> Result<ClientUpdate, String> {
        loop {
            if let Some(u) = conn.poll().map_err(|e| e.to_string())? {
                return Ok(u);
            }
            let n = sock.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("authd closed the connection".into());
            }
            conn.feed(&buf[..n]);
        }
    };
    next(&mut conn, &mut sock)?;
    if conn.mechanism("PLAIN").is_none() {
        return Err("authd does not offer PLAIN (auth_mechanisms)".into());
    }
    let mut req = AuthRequest::new(0, "PLAIN", "doveadm");
    for kv in info {
        let (k, v) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (kv.as_str(), None),
        };
        if k == "service" {
            req.params.retain(|(n, _)| n != "service");
        }
        req = req.with(k, v);
    }
    let req = req.with("resp", Some(&b64_encode(format!("\0{user}\0{password}").as_bytes())));
    let (_, line) = conn.auth(req);
    sock.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    loop {
        match next(&mut conn, &mut sock)? {
            ClientUpdate::Reply(ServerReply::Cont { .. }) => return Err("authd asked for more data after PLAIN".into()),
            ClientUpdate::Reply(r) => return Ok(r),
            ClientUpdate::Ready => {}
        }
    }
}

/// doveadm user's exit status for an unknown user (EX_NOUSER).
const EX_NOUSER: u8 = 67;

/// The auth-userdb socket: `-a PATH`, else `auth_socket_path` (default `auth-userdb`) in
/// `private/` of the queue directory.
fn userdb_socket(dir: &Path, socket: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(s) = socket {
        return Ok(s.to_path_buf());
    }
    let config = rpost_config::Config::load(dir).map_err(|e| e.to_string())?;
    let name = config.params.get("auth_socket_path").map_err(|e| e.to_string())?;
    if name.starts_with('/') {
        return Ok(PathBuf::from(name));
    }
    let queue = config.params.get("queue_directory").map_err(|e| e.to_string())?;
    Ok(Path::new(&queue).join("private").join(name))
}

/// `rmaster auth user [-a SOCKET] USER`: a userdb lookup through `authd userdb`, printed as
/// `doveadm user` does (`field<TAB>value` lines).
pub fn auth_user(dir: &Path, socket: Option<&Path>, user: &str) -> ExitCode {
    let path = match userdb_socket(dir, socket) {
        Ok(p) => p,
        Err(e) => return fatal(e, EX_TEMPFAIL),
    };
    let reply = (|| -> Result<rpost_auth_proto::MasterReply, String> {
        let mut sock = UnixStream::connect(&path).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
        let (mut client, hello) = rpost_auth_proto::MasterClient::new();
        let (_, line) = client.user(user, "doveadm");
        sock.write_all(format!("{hello}{line}").as_bytes()).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(r) = client.poll().map_err(|e| e.to_string())? {
                return Ok(r);
            }
            let n = sock.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("authd closed the connection".into());
            }
            client.feed(&buf[..n]);
        }
    })();
    match reply {
        Ok(rpost_auth_proto::MasterReply::User { user, fields, .. }) => {
            println!("field\tvalue");
            println!("user\t{user}");
            for (k, v) in fields {
                println!("{k}\t{}", v.unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Ok(rpost_auth_proto::MasterReply::NotFound { .. }) => {
            eprintln!("userdb lookup: user {user} doesn't exist");
            ExitCode::from(EX_NOUSER)
        }
        Ok(rpost_auth_proto::MasterReply::Fail { reason, .. }) => {
            fatal(format!("userdb lookup failed for {user}: {}", reason.unwrap_or_default()), EX_TEMPFAIL)
        }
        Ok(other) => fatal(format!("unexpected reply from authd: {other:?}"), EX_TEMPFAIL),
        Err(e) => fatal(format!("{}: {e}", path.display()), EX_TEMPFAIL),
    }
}

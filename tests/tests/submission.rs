//! Submission as the packaged master.cf sets it up (587: STARTTLS required, AUTH only after
//! it, only authenticated clients; 465: implicit TLS), with smtpd's SASL pointed at a REAL
//! Dovecot auth socket, and at our authd (`private/auth`, the default smtpd_sasl_path).
//! Real clients: swaks and Python's smtplib. Skipped when Dovecot, swaks or python3 is
//! missing (`.ci/run` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rpost_testkit::Suite;
use rpost_testkit::dovecot::Dovecot;

/// A private Dovecot whose auth service (passwd-file user alice, password "secret") listens
/// on `dir/auth-client`, as a site's `private/auth` would.
fn auth_dovecot(dir: &Path) -> Option<Dovecot> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("a private Dovecot needs root here");
        return None;
    }
    std::fs::write(dir.join("users"), "alice@example.test:{PLAIN}secret::::::\n").ok()?;
    let conf = format!(
        "protocols = lmtp\nauth_mechanisms = plain login\nauth_failure_delay = 0\n\
         passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
         userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/home/%u\n}}\n\
         service lmtp {{\n  unix_listener {d}/lmtp {{\n    mode = 0600\n  }}\n}}\n\
         service auth {{\n  unix_listener {d}/auth-client {{\n    mode = 0666\n  }}\n}}\n",
        d = dir.display()
    );
    Dovecot::start(dir, &conf, "auth-client", true)
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rpost-sub-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    d
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool} >/dev/null")).status().is_ok_and(|s| s.success())
}

/// The suite: 25 (may, AUTH offered), 587 and 465 as in packaging/master.cf. Loopback is
/// not in mynetworks, so relaying needs AUTH.
/// `auth_socket`: a Dovecot's; None: our authd on private/auth.
fn suite(auth_socket: Option<&Path>) -> Suite {
    let b = match auth_socket {
        Some(path) => Suite::builder().main("smtpd_sasl_path", &path.display().to_string()),
        None => Suite::builder()
            .main("auth_passdb", "passwd-file:{root}/etc/users")
            .main("auth_mechanisms", "plain login")
            .main("auth_failure_delay", "0s")
            .master_line("auth unix - - n - 1 authd"),
    };
    b.main("mynetworks", "192.0.2.0/24")
        .main("virtual_mailbox_domains", "example.test")
        .main("local_recipient_maps", "")
        .main("alias_maps", "")
        .main("smtpd_sasl_type", "dovecot")
        .main("broken_sasl_auth_clients", "yes")
        .main("smtpd_tls_received_header", "yes")
        .inet("smtp", "n - n - - smtpd -o smtpd_tls_security_level=may -o smtpd_sasl_auth_enable=yes")
        .inet(
            "submission",
            "n - n - - smtpd -o syslog_name=rpost/submission -o smtpd_tls_security_level=encrypt \
             -o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=yes \
             -o smtpd_client_restrictions=permit_sasl_authenticated,reject",
        )
        .inet(
            "smtps",
            "n - n - - smtpd -o syslog_name=rpost/smtps -o smtpd_tls_wrappermode=yes -o smtpd_sasl_auth_enable=yes \
             -o smtpd_client_restrictions=permit_sasl_authenticated,reject",
        )
        .start_with(|s| s.write_config("users", "alice@example.test:{PLAIN}secret::::::\n"))
}

fn swaks(args: &[&str]) -> String {
    let out = Command::new("swaks").args(["--server", "127.0.0.1", "--timeout", "60"]).args(args).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs a Python smtplib script; `{port}` etc. are substituted by the caller.
fn python(script: &str) -> String {
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn setup(tag: &str) -> Option<(Dovecot, Suite)> {
    if !have("swaks") || !have("python3") {
        eprintln!("swaks or python3 missing: test skipped");
        return None;
    }
    let Some(dovecot) = auth_dovecot(&tempdir(tag)) else {
        eprintln!("Dovecot unavailable: test skipped");
        return None;
    };
    let suite = suite(Some(&dovecot.dir().join("auth-client")));
    Some((dovecot, suite))
}

#[test]
fn submission_with_swaks_against_a_real_dovecot_auth_socket() {
    let Some((_dovecot, suite)) = setup("swaks") else { return };
    let port = suite.port("submission").to_string();
    // AUTH before STARTTLS: not advertised, so swaks cannot authenticate.
    let out = swaks(&[
        "--port",
        &port,
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        "secret",
        "--from",
        "alice@example.test",
        "--to",
        "bob@elsewhere.example",
        "--quit-after",
        "AUTH",
    ]);
    assert!(out.contains("250-STARTTLS") && !out.contains("250-AUTH"), "{out}");
    assert!(out.contains("Host did not advertise authentication"), "{out}");
    // After STARTTLS: PLAIN, then relaying to a foreign domain is accepted.
    let out = swaks(&[
        "--port",
        &port,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        "secret",
        "--from",
        "alice@example.test",
        "--to",
        "bob@elsewhere.example",
    ]);
    assert!(out.contains("235 2.7.0 Authentication successful"), "{out}");
    assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
    // LOGIN, and a wrong password.
    let out = swaks(&[
        "--port",
        &port,
        "--tls",
        "--auth",
        "LOGIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        "secret",
        "--from",
        "alice@example.test",
        "--to",
        "bob@elsewhere.example",
    ]);
    assert!(out.contains("334 VXNlcm5hbWU6") && out.contains("235 2.7.0"), "{out}");
    let out = swaks(&[
        "--port",
        &port,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        "wrong",
        "--from",
        "alice@example.test",
        "--to",
        "bob@elsewhere.example",
    ]);
    assert!(out.contains("535 5.7.8 Error: authentication failed"), "{out}");
    // TLS but no AUTH: the client restrictions refuse at RCPT.
    let out = swaks(&["--port", &port, "--tls", "--from", "x@client.example", "--to", "bob@elsewhere.example"]);
    assert!(out.contains("554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied"), "{out}");
    // Port 25 with TLS may: no AUTH means no relay.
    let out = swaks(&[
        "--port",
        &suite.port("smtp").to_string(),
        "--tls",
        "--from",
        "x@client.example",
        "--to",
        "bob@elsewhere.example",
    ]);
    assert!(out.contains("554 5.7.1 <bob@elsewhere.example>: Relay access denied"), "{out}");
    // 465: implicit TLS.
    let out = swaks(&[
        "--port",
        &suite.port("smtps").to_string(),
        "--tls-on-connect",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice@example.test",
        "--auth-password",
        "secret",
        "--from",
        "alice@example.test",
        "--to",
        "bob@elsewhere.example",
    ]);
    assert!(out.contains("235 2.7.0") && out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let log = suite.wait_log("sasl_username=alice@example.test", Duration::from_secs(30));
    assert!(log.contains("sasl_method=PLAIN, sasl_username=alice@example.test"), "{log}");
    assert!(log.contains("sasl_method=LOGIN, sasl_username=alice@example.test"), "{log}");
    assert!(
        log.contains("Anonymous TLS connection established from localhost[127.0.0.1]: TLSv1.3 with cipher"),
        "{log}"
    );
    assert!(log.contains("SASL PLAIN authentication failed"), "{log}");
    assert!(!log.contains("secret"), "no password in the log: {log}");
}

#[test]
fn submission_with_python_smtplib() {
    let Some((_dovecot, suite)) = setup("py") else { return };
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile="{ca}")
s = smtplib.SMTP("127.0.0.1", {sub}, local_hostname="client.example", timeout=60)
s.ehlo()
print("before-tls auth:", s.has_extn("auth"))
s.starttls(context=ssl._create_unverified_context())
s.ehlo()
print("after-tls auth:", s.esmtp_features.get("auth"))
s.login("alice@example.test", "secret")
print("refused:", s.sendmail("alice@example.test", ["bob@elsewhere.example"], "Subject: py\r\n\r\nhi\r\n"))
s.quit()
try:
    s = smtplib.SMTP("127.0.0.1", {sub}, timeout=60)
    s.starttls(context=ssl._create_unverified_context())
    s.login("alice@example.test", "wrong")
except smtplib.SMTPAuthenticationError as e:
    print("wrong:", e.smtp_code)
s = smtplib.SMTP_SSL("localhost", {smtps}, context=ctx, timeout=60)
s.login("alice@example.test", "secret")
s.sendmail("alice@example.test", ["carol@elsewhere.example"], "Subject: 465\r\n\r\nhi\r\n")
print("smtps:", s.sock.version())
s.quit()
"#,
        ca = suite.config_dir().join("tls/rpost.pem").display(),
        sub = suite.port("submission"),
        smtps = suite.port("smtps"),
    );
    let out = python(&script);
    assert!(out.contains("before-tls auth: False"), "{out}");
    assert!(out.contains("after-tls auth:") && out.contains("PLAIN LOGIN"), "{out}");
    assert!(out.contains("refused: {}"), "{out}");
    assert!(out.contains("wrong: 535"), "{out}");
    // The generated certificate verifies for localhost with Python's default checks.
    assert!(out.contains("smtps: TLSv1.3"), "{out}");
}

#[test]
fn submission_against_our_authd() {
    if !have("swaks") {
        eprintln!("swaks missing: test skipped");
        return;
    }
    let suite = suite(None);
    let port = suite.port("submission").to_string();
    let auth = |mech: &str, pass: &str| {
        swaks(&[
            "--port",
            &port,
            "--tls",
            "--auth",
            mech,
            "--auth-user",
            "alice@example.test",
            "--auth-password",
            pass,
            "--from",
            "alice@example.test",
            "--to",
            "bob@elsewhere.example",
        ])
    };
    let out = auth("PLAIN", "secret");
    assert!(out.contains("235 2.7.0") && out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let out = auth("LOGIN", "secret");
    assert!(out.contains("235 2.7.0") && out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let out = auth("PLAIN", "wrong");
    assert!(out.contains("535 5.7.8 Error: authentication failed"), "{out}");
    let log = suite.wait_log("sasl_method=LOGIN, sasl_username=alice@example.test", Duration::from_secs(30));
    assert!(!log.contains("secret"), "{log}");
}

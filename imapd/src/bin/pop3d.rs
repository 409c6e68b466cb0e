//! pop3d - rpost POP3 server
//!
//! # SUMMARY
//! `pop3d` runs under rmaster as a master.cf service; it is not started by hand:
//! ```text
//! pop3      inet  n  -  n  -  -  pop3d
//! pop3s     inet  n  -  n  -  -  pop3d -o pop3d_tls_wrappermode=yes
//! ```
//!
//! # DESCRIPTION
//! POP3 (RFC 1939) for the users of authd, as Dovecot's pop3-login/pop3 pair serves it:
//! greeting `+OK $login_greeting`, CAPA, STLS, USER/PASS, AUTH (SASL mechanisms authd
//! offers, initial responses), then STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP and QUIT,
//! which alone applies deletions. The user's INBOX is the Maildir of the userdb's `mail` or
//! `mail_location` (see `imapd::login`); new mail is moved from `new/` to `cur/` when a
//! session opens it, retrieved messages are marked seen (`:2,S`) at QUIT.
//! Log lines: `Login: user=<alice>, method=PLAIN, rip=..., lip=..., mpid=..., TLS`,
//! `Disconnected: Logged out top=0/0, retr=1/512, del=1/3, size=1500: user=<alice>, ...`,
//! `Aborted login (auth failed, 1 attempts in 2 secs): user=<alice>, method=PLAIN, ...`.
//!
//! # SECURITY
//! One client per process. The process runs as `mail_owner` before login (the saved uid
//! stays root, see `imapd::login`), and as the mail user after a successful login; it exits
//! after that session. master.cf must say `n` in the unpriv and chroot columns. Plaintext
//! authentication needs TLS on non-local connections with `disable_plaintext_auth = yes`
//! (`-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.`);
//! input sent before STLS is discarded. Lines are limited to 8 KiB, ten bad commands end
//! the connection, idle clients are disconnected after 3 minutes before login and 10
//! minutes after.
//!
//! # CONFIGURATION
//! login_greeting, pop3d_tls_wrappermode, pop3_uidl_format, pop3_lock_session,
//! pop3_no_flag_updates, pop3_deleted_flag, pop3_logout_format, ssl, ssl_cert, ssl_key,
//! disable_plaintext_auth, login_auth_socket_path, auth_socket_path, mail_location,
//! mail_home, mail_uid, mail_gid, first_valid_uid, last_valid_uid, first_valid_gid,
//! last_valid_gid, mail_owner, plus the rpost-daemon parameters.
//!
//! # STANDARDS
//! RFC 1939 (POP3), RFC 2449 (CAPA, response codes), RFC 3206 (SYS/AUTH codes), RFC 5034
//! (SASL AUTH), RFC 2595 (STLS), RFC 8314 (implicit TLS on 995).

use std::process::ExitCode;
use std::sync::Arc;

use imapd::login::{self, Authenticator, Service, Settings};
use imapd::pop3::server::{Pop3Settings, Server, serve};

fn main() -> ExitCode {
    let daemon = match rpost_daemon::Daemon::start("pop3d") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pop3d: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Certificates are read while still root; then the pre-login identity is taken.
    let setup = (|| -> Result<(Server, rpost_daemon::Options), String> {
        let settings = Settings::from_params(daemon.params(), Service::Pop3).map_err(|e| e.to_string())?;
        let pop3 = Pop3Settings::from_params(daemon.params())?;
        if pop3.wrappermode && settings.tls.is_none() {
            return Err("pop3d_tls_wrappermode = yes but no certificate could be loaded (ssl_cert, ssl_key)".into());
        }
        let options = login::prepare_process(&daemon, "pop3d").map_err(|e| e.to_string())?;
        Ok((Server { auth: Authenticator::new(settings), pop3 }, options))
    })();
    let (server, options) = match setup {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = Arc::new(server);
    daemon.serve(options, move |client| {
        let server = server.clone();
        async move {
            let rpost_daemon::Client::Stream(stream) = client else { return };
            if serve(server, stream).await {
                // This process is the mail user's now: it serves nobody else.
                login::finish_process();
            }
        }
    })
}

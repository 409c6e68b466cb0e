//! imapd - rpost IMAP server
//!
//! # SUMMARY
//! `imapd` runs under rmaster as a master.cf service; it is not started by hand:
//! ```text
//! imap      inet  n  -  n  -  -  imapd
//! imaps     inet  n  -  n  -  -  imapd -o imapd_tls_wrappermode=yes
//! ```
//!
//! # DESCRIPTION
//! IMAP4rev1 (RFC 3501) for the users of authd, over the Maildir++ store lmtp-deliver writes
//! and Dovecot reads: same `dovecot-uidlist` UIDs, same flags in file names, same folders.
//! Greeting `* OK [CAPABILITY ...] rpost ready.`; STARTTLS (or implicit TLS with
//! `imapd_tls_wrappermode = yes`), LOGIN and AUTHENTICATE (the SASL mechanisms authd offers,
//! SASL-IR), then every RFC 3501 command plus LITERAL+, ID, ENABLE, IDLE, NAMESPACE, UIDPLUS,
//! MOVE, UNSELECT, CHILDREN and SPECIAL-USE (Drafts, Sent, Trash, Junk and Archive are
//! created and subscribed at login). Other sessions' changes and new deliveries are reported
//! after every command and, in IDLE, within about a second.
//! Log lines: `imap-login: Login: user=<alice>, method=PLAIN, rip=..., lip=..., mpid=..., TLS`,
//! `imap(alice): Logged out in=120 out=2400 deleted=0 expunged=0 trashed=0 hdr_count=0
//! hdr_bytes=0 body_count=1 body_bytes=512` (`imap_logout_format`),
//! `Aborted login (auth failed, 1 attempts in 2 secs): user=<alice>, ...`.
//!
//! # SECURITY
//! Two kinds of process (see `imapd::imap::worker`): login processes run as `mail_owner`
//! (saved uid root, used only to start workers) and serve up to `default_client_limit`
//! clients before login, and relay TLS after it; a logged-in session is handed to the worker
//! process of the user's uid/gid, which runs as that user from exec on and serves all its
//! sessions. master.cf must say `n` in the unpriv and chroot columns. Plaintext authentication needs TLS on
//! non-local connections with `disable_plaintext_auth = yes` (LOGINDISABLED is announced);
//! input pipelined after STARTTLS is discarded. Commands are limited to
//! `imap_max_line_length`, APPEND literals to `message_size_limit` (a larger announcement is
//! refused before any of it is read); 20 invalid commands end the connection; clients are
//! logged out after 3 minutes of silence before login and 30 minutes after. Mailbox names
//! are checked so that none leaves the user's Maildir.
//!
//! # CONFIGURATION
//! default_client_limit (clients per login process, Dovecot's name), imap_worker_count
//! (post-login processes per mail uid and login process), imapd_tls_wrappermode, imap_max_line_length, imap_idle_notify_interval, imap_capability,
//! mail_max_userip_connections (sessions per user and client address, counted in the store),
//! imap_logout_format, imap_id_send, imap_literal_minus (LITERAL- instead of LITERAL+),
//! message_size_limit, ssl, ssl_cert, ssl_key, disable_plaintext_auth, login_auth_socket_path,
//! auth_socket_path, mail_location, mail_home, mail_uid, mail_gid, first_valid_uid,
//! last_valid_uid, first_valid_gid, last_valid_gid, mail_owner, plus the rpost-daemon
//! parameters.
//!
//! # STANDARDS
//! RFC 3501, RFC 7888 (LITERAL+), RFC 4959 (SASL-IR), RFC 2971 (ID), RFC 5161 (ENABLE),
//! RFC 2177 (IDLE), RFC 2342 (NAMESPACE), RFC 4315 (UIDPLUS), RFC 6851 (MOVE), RFC 3691
//! (UNSELECT), RFC 3348 (CHILDREN), RFC 6154 (SPECIAL-USE), RFC 5530 (response codes),
//! RFC 8314 (implicit TLS on 993).

use std::process::ExitCode;
use std::sync::Arc;

use imapd::imap::server::{Config, serve};
use imapd::imap::worker::{self, WorkerConfig, Workers};
use imapd::login::{self, Authenticator, Service, Settings};
use rpost_imap_proto::Limits;

fn main() -> ExitCode {
    if worker::is_worker() {
        return worker::main();
    }
    let daemon = match rpost_daemon::Daemon::start("imapd") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("imapd: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Certificates are read while still root; then the pre-login identity is taken.
    let setup = (|| -> Result<(Config, rpost_daemon::Options), String> {
        let p = daemon.params();
        let settings = Settings::from_params(p, Service::Imap).map_err(|e| e.to_string())?;
        let err = |e: rpost_config::ConfigError| e.to_string();
        let wrapper = p.get_bool("imapd_tls_wrappermode").map_err(err)?;
        if wrapper && settings.tls.is_none() {
            return Err("imapd_tls_wrappermode = yes but no certificate could be loaded (ssl_cert, ssl_key)".into());
        }
        let max_line = p.get_size("imap_max_line_length").map_err(err)?.clamp(1024, 16 << 20) as usize;
        let size_limit = p.get_size("message_size_limit").map_err(err)?;
        let max_append = if size_limit == 0 { 1 << 30 } else { size_limit };
        let literal_minus = p.get_bool("imap_literal_minus").map_err(err)?;
        let id_send = p.get("imap_id_send").map_err(err)?;
        let post = WorkerConfig {
            max_line,
            max_append,
            literal_minus,
            capability: p.get("imap_capability").map_err(err)?,
            idle_notify: p.get_time("imap_idle_notify_interval").map_err(err)?,
            max_userip: p.get_int("mail_max_userip_connections").map_err(err)?.clamp(0, u32::MAX as i64) as u32,
            logout_format: p.get("imap_logout_format").map_err(err)?,
            id_send: id_send.clone(),
            syslog_name: p.get("syslog_name").map_err(err)?,
            maillog_file: p.get("maillog_file").map_err(err)?,
            verbose: daemon.verbose(),
            detached: std::env::var_os("RPOST_DETACHED").is_some(),
            log_inherited: false,
        };
        // Resolved now: after the switch to mail_owner /proc/self/exe may not be readable.
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let worker_count = p.get_int("imap_worker_count").map_err(err)?.clamp(1, 64) as u32;
        let client_limit = p.get_int("default_client_limit").map_err(err)?.clamp(1, 1 << 20) as usize;
        let config = Config {
            auth: Authenticator::new(settings),
            limits: Limits { max_line, max_append, literal_minus },
            wrapper,
            id_send,
            workers: Arc::new(Workers::new(exe, post, worker_count).map_err(|e| format!("maillog_file: {e}"))?),
        };
        let mut options = login::prepare_process(&daemon, "imapd").map_err(|e| e.to_string())?;
        // Logged-in sessions live in the per-user processes: a login process serves many
        // clients and needs no recycling for having served them.
        options.max_clients = client_limit;
        options.max_use = Some(0);
        let workers = config.workers.clone();
        options.on_terminate = Some(rpost_daemon::OnTerminate(Arc::new(move || {
            let workers = workers.clone();
            Box::pin(async move { workers.stop().await })
        })));
        Ok((config, options))
    })();
    let (config, options) = match setup {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = Arc::new(config);
    daemon.serve(options, move |client| serve(config.clone(), client))
}

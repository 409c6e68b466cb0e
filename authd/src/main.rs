//! authd - the authentication server
//!
//! # SUMMARY
//! `authd [userdb]` runs under rmaster as a master.cf service (`auth` on private/auth, and
//! `auth-userdb ... authd userdb`); it is not started by hand.
//!
//! # DESCRIPTION
//! See the library documentation (`authd/src/lib.rs`): Dovecot's auth client protocol for
//! SASL, or with `userdb` the auth-master protocol for user lookups.
//!
//! # SECURITY
//! Drops to `mail_owner` before reading from a client (rpost-daemon); opens the password
//! and user tables only after that. Never logs secrets.
//!
//! # CONFIGURATION
//! `auth_passdb`, `auth_userdb`, `auth_mechanisms`, `auth_username_format`,
//! `auth_failure_delay`, `default_pass_scheme`, `disable_plaintext_auth`.
//!
//! # STANDARDS
//! Dovecot auth protocol v1.2, auth-master protocol.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use authd::db::Db;
use authd::server::{Auth, Settings};

fn main() -> ExitCode {
    let daemon = match rpost_daemon::Daemon::start("authd") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("authd: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let userdb = daemon.args().iter().any(|a| a == "userdb");
    if let Some(other) = daemon.args().iter().find(|a| *a != "userdb") {
        tracing::error!("fatal: unknown argument {other:?} (only \"userdb\")");
        return ExitCode::FAILURE;
    }
    let settings = match Settings::from_params(daemon.params()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    if settings.mechs.is_empty() && !userdb {
        tracing::warn!("auth_mechanisms names no supported mechanism: every authentication fails");
    }
    let params = daemon.params().clone();
    // Tables are opened on the first client, after privileges are dropped (see SECURITY).
    // A failure to open is not remembered: the next client tries again.
    let state: Arc<Mutex<Option<Arc<Auth>>>> = Arc::new(Mutex::new(None));
    let options = rpost_daemon::Options { long_running: true, ..rpost_daemon::Options::default() };
    daemon.serve(options, move |client| {
        let state = state.clone();
        let params = params.clone();
        let settings = settings.clone();
        async move {
            let auth = {
                let mut slot = state.lock().expect("state lock");
                if slot.is_none() {
                    match Db::from_params(&params) {
                        Ok(db) => {
                            if !db.has_passdb() && !userdb {
                                tracing::warn!("auth_passdb is not set: every authentication fails temporarily");
                            }
                            *slot = Some(Arc::new(Auth::new(settings, db)));
                        }
                        Err(e) => tracing::error!("cannot open the user databases: {e}"),
                    }
                }
                slot.clone()
            };
            let Some(auth) = auth else { return };
            match client {
                rpost_daemon::Client::Stream(stream) if userdb => authd::server::serve_userdb(auth, stream).await,
                rpost_daemon::Client::Stream(stream) => authd::server::serve_client(auth, stream).await,
                rpost_daemon::Client::Trigger(_) => {}
            }
        }
    })
}

//! pickup - local mail pickup from maildrop/ (see the library documentation)
//!
//! # SUMMARY
//! `pickup unix n - n 60 1 pickup` in master.cf.
//!
//! # DESCRIPTION
//! A trigger server: every wakeup (from sendmail or rmaster's timer) runs one pass over
//! `maildrop/`, see `pickup::Pickup::scan`; passes never overlap.
//!
//! # SECURITY
//! Runs as mail_owner; everything in maildrop is untrusted (see the library SECURITY).
//!
//! # CONFIGURATION
//! As the library.
//!
//! # STANDARDS
//! None beyond the library's.

use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let daemon = match rpost_daemon::Daemon::start("pickup") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pickup: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = match daemon.queue_root() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    if daemon.env().chroot {
        // The submitter's login name (default sender, local_login_sender_maps) comes from
        // the password file, which a chroot jail does not have: every file would be refused.
        tracing::error!(
            "fatal: pickup cannot run chrooted (master.cf chroot column must be n): it needs the password file"
        );
        return ExitCode::FAILURE;
    }
    // Tables are opened now, before privileges are dropped, as smtpd does.
    let settings = match pickup::Settings::from_params(daemon.params()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let worker = Arc::new(pickup::Pickup::new(root.clone(), settings));
    let passes = Arc::new(tokio::sync::Mutex::new(()));
    let options = rpost_daemon::Options { triggers: true, max_clients: 100, ..Default::default() };
    daemon.serve(options, move |_client| {
        // Any client is a wakeup: W from rmaster or sendmail, or anything else.
        let worker = worker.clone();
        let passes = passes.clone();
        let root = root.clone();
        async move {
            let _pass = passes.lock().await;
            let result = tokio::task::spawn_blocking(move || {
                let r = worker.scan();
                if matches!(&r, Ok(ids) if !ids.is_empty()) {
                    pickup::trigger_qmgr(&root);
                }
                r
            })
            .await;
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("{e}"),
                Err(e) => tracing::error!("maildrop pass failed: {e}"),
            }
        }
    })
}

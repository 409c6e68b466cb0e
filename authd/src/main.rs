//! authd - authentication server
//!
//! # SUMMARY
//! `authd` runs under rmaster as a master.cf service; it is not started by hand.
//!
//! # DESCRIPTION
//! Skeleton: the process model is real (it is spawned on demand by rmaster, inherits its
//! listeners, drops privileges, reports its status and honours max_use/max_idle and reloads),
//! but the protocol is not implemented yet (issue 5). A client is logged and the
//! connection is closed; nothing is accepted or claimed.
//!
//! # SECURITY
//! Drops to `mail_owner` (and chroots when master.cf says so) before reading from a client,
//! through rpost-daemon. Reads nothing from the client.
//!
//! # CONFIGURATION
//! The rpost-daemon parameters (mail_owner, max_use, max_idle, syslog_name, maillog_file).
//!
//! # STANDARDS
//! None yet.

use std::process::ExitCode;

fn main() -> ExitCode {
    let daemon = match rpost_daemon::Daemon::start("authd") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("authd: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    daemon.serve(rpost_daemon::Options::default(), |client| rpost_daemon::refuse_unimplemented("authd", client, None))
}

//! smtpd - SMTP server
//!
//! # SUMMARY
//! `smtpd` runs under rmaster as a master.cf service; it is not started by hand.
//!
//! # DESCRIPTION
//! Skeleton: the process model is real (it is spawned on demand by rmaster, inherits its
//! listeners, drops privileges, reports its status and honours max_use/max_idle and reloads),
//! but the protocol is not implemented yet (issue 3). A client is logged and told `421 4.3.2 Service not available`, the
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
    let daemon = match rpost_daemon::Daemon::start("smtpd") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("smtpd: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let host = daemon.params().get("myhostname").unwrap_or_default();
    let reply = format!("421 4.3.2 {host} Service not available: rpost smtpd is not implemented yet\r\n");
    daemon.serve(rpost_daemon::Options::default(), move |client| {
        rpost_daemon::refuse_unimplemented("smtpd", client, Some(reply.clone()))
    })
}

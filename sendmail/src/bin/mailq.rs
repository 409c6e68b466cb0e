//! mailq - list the mail queue (postqueue -p; same as `sendmail -bp`)
//!
//! # SUMMARY
//! `mailq [-C DIR] [-v]`: the queue as `rmaster queue list` shows it, through the showq service.
//!
//! # DESCRIPTION
//! The sendmail program in its mailq mode; see the sendmail library docs.
//!
//! # SECURITY
//! Runs as the invoking user, without special privileges.
//!
//! # CONFIGURATION
//! `-C DIR`, `RPOST_CONFIG`, `/etc/rpost`.
//!
//! # STANDARDS
//! sysexits.h exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    sendmail::run("mailq", &args)
}

//! sendmail - submit mail from the command line (Postfix sendmail(1)); see the library docs
//!
//! # SUMMARY
//! `sendmail [options] [recipient...] < message`; invoked as `mailq` or `newaliases` it acts
//! as `-bp` or `-bi`.
//!
//! # DESCRIPTION
//! A thin entry point: `argv[0]` selects the mode, `sendmail::run` does the work.
//!
//! # SECURITY
//! Runs as the invoking user, without special privileges (see the library SECURITY).
//!
//! # CONFIGURATION
//! `-C DIR`, `RPOST_CONFIG`, `/etc/rpost`.
//!
//! # STANDARDS
//! sysexits.h exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut argv = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let argv0 = argv.next().unwrap_or_else(|| "sendmail".into());
    let args: Vec<String> = argv.collect();
    sendmail::run(&argv0, &args)
}

//! newaliases - rebuild the alias databases (same as `sendmail -bi`)
//!
//! # SUMMARY
//! `newaliases [-C DIR] [-oA FILE] [-v]`: builds every `alias_database` as `rmaster map build --aliases`.
//!
//! # DESCRIPTION
//! The sendmail program in its newaliases mode; see the sendmail library docs.
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
    sendmail::run("newaliases", &args)
}

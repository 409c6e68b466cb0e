//! local - the local delivery agent (Postfix's local(8)); the manual page is in
//! lmtp-deliver's lib.rs. master.cf: `local unix - n n - - local`.
//!
//! Run by rmaster as root (unprivileged column `n`) so it can act for every user, it never
//! writes or runs anything as root: each mailbox, file and Maildir write and each
//! `.forward`/`:include:` read happens in a copy of this program started with the target
//! user's uid and gid (`local --local-helper ...`), each command in `/bin/sh` started the
//! same way.

use std::process::ExitCode;
use std::sync::Arc;

use lmtp_deliver::local::agent::{Shared, serve};
use lmtp_deliver::local::helper;
use lmtp_deliver::local::settings::Settings;
use rpost_daemon::{Client, Stream};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(helper::HELPER_ARG) {
        return helper::main(&argv[2..]);
    }
    let daemon = match rpost_daemon::Daemon::start("local") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("local: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let privileged = nix::unistd::geteuid().is_root();
    if !privileged {
        tracing::info!(
            "not running as root: deliveries to files, commands and mailboxes run as uid {}",
            nix::unistd::geteuid()
        );
    }
    let shared = match build(&daemon, privileged) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    daemon.serve(rpost_daemon::Options::default(), move |client| {
        let shared = shared.clone();
        async move {
            match client {
                Client::Stream(Stream::Unix(stream)) => serve(shared, stream).await,
                Client::Stream(Stream::Tcp { stream, .. }) => serve(shared, stream).await,
                Client::Trigger(_) => {}
            }
        }
    })
}

fn build(daemon: &rpost_daemon::Daemon, privileged: bool) -> Result<Shared, String> {
    let p = daemon.params();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let queue_root = daemon.queue_root().map_err(|x| e(&x))?;
    let settings = Settings::from_params(p, queue_root, privileged).map_err(|x| e(&x))?;
    let domains = rpost_address::Domains::from_params(p).map_err(|x| e(&x))?;
    let expand = rpost_lookup::ExpandOptions::from_params(p).map_err(|x| e(&x))?;
    let ipc_timeout = p.get_time("ipc_timeout").map_err(|x| e(&x))?;
    Ok(Shared::new(settings, domains, expand, ipc_timeout))
}

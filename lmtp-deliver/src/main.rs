//! lmtp-deliver entry point: the rpost-daemon skeleton around [`lmtp_deliver::server::serve`].

use std::process::ExitCode;
use std::sync::Arc;

use lmtp_deliver::server::{Shared, serve};
use rpost_daemon::{Client, Stream};

fn main() -> ExitCode {
    let daemon = match rpost_daemon::Daemon::start("lmtp-deliver") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("lmtp-deliver: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let privileged = nix::unistd::geteuid().is_root();
    if !privileged {
        tracing::info!("not running as root: mail is written as uid {}", nix::unistd::geteuid());
    }
    let settings = match lmtp_deliver::settings::Settings::from_params(daemon.params(), privileged) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shared = Arc::new(Shared::new(settings));
    // Dovecot's lmtp service has no use limit (service_count = 0), and one process serving
    // every connection lets concurrent deliveries into a mailbox share their uidlist lock
    // cycles (rpost-maildir's combining works within a process). A successor started by
    // Postfix's max_use = 100 would deliver beside the old process, and the two would queue
    // for each other's dot-locks. max_use set in main.cf or master.cf still applies.
    let mut options = rpost_daemon::Options::default();
    if !daemon.params().is_explicit("max_use") {
        options.max_use = Some(0);
    }
    let code = daemon.serve(options, move |client| {
        let shared = shared.clone();
        async move {
            match client {
                Client::Stream(Stream::Tcp { stream, peer, .. }) => {
                    let _ = stream.set_nodelay(true);
                    serve(shared, stream, Some(peer.ip().to_string())).await;
                }
                Client::Stream(Stream::Unix(stream)) => serve(shared, stream, None).await,
                Client::Trigger(_) => {}
            }
        }
    });
    rpost_maildir::release_lock_seeds();
    code
}

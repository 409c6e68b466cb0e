//! showq - the queue listing for mailq (Postfix showq(8))
//!
//! # SUMMARY
//! `showq unix n - n - - showq` in master.cf; `mailq` / `sendmail -bp` connect to
//! `public/showq`.
//!
//! # DESCRIPTION
//! Writes the `postqueue -p` listing (the same lines as `rmaster queue list`) to each
//! client and closes. The client sends nothing.
//!
//! # SECURITY
//! Runs as mail_owner, so users who cannot read the queue directory still see the listing,
//! as Postfix's `authorized_mailq_users = static:anyone` default allows. It reads nothing
//! from the client.
//!
//! # CONFIGURATION
//! `queue_directory`.
//!
//! # STANDARDS
//! None.

use std::process::ExitCode;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;

fn main() -> ExitCode {
    let daemon = match rpost_daemon::Daemon::start("showq") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("showq: fatal: {e}");
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
    let queue = Arc::new(rpost_queue::Queue::new(root));
    daemon.serve(rpost_daemon::Options::default(), move |client| {
        let queue = queue.clone();
        async move {
            let rpost_daemon::Client::Stream(mut stream) = client else { return };
            let text = match tokio::task::spawn_blocking(move || pickup::showq::listing(&queue)).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!("listing failed: {e}");
                    return;
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), stream.write_all(text.as_bytes())).await;
            let _ = stream.shutdown().await;
        }
    })
}

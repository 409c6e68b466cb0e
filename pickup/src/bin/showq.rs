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
//! Runs as mail_owner, so users who cannot read the queue directory still see the listing.
//! Who may see it is `authorized_mailq_users` (default `static:anyone`), checked against the
//! login name of the client's uid from the socket's peer credentials (SO_PEERCRED), which
//! the client cannot forge; root and mail_owner always may. A refused client gets one line,
//! `fatal: User NAME(UID) is not allowed to view the mail queue`. It reads nothing from the
//! client.
//!
//! # CONFIGURATION
//! `queue_directory`, `authorized_mailq_users`, `mail_owner`.
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
    let params = daemon.params();
    let (acl, owner) = match (params.get_list("authorized_mailq_users"), params.get("mail_owner")) {
        (Ok(a), Ok(o)) => (Arc::new(a), nix::unistd::User::from_name(&o).ok().flatten().map(|u| u.uid.as_raw())),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    daemon.serve(rpost_daemon::Options::default(), move |client| {
        let queue = queue.clone();
        let acl = acl.clone();
        async move {
            let rpost_daemon::Client::Stream(mut stream) = client else { return };
            if let Err(refusal) = authorized(&stream, &acl, owner) {
                tracing::warn!("{refusal}");
                let _ = stream.write_all(format!("fatal: {refusal}\n").as_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            }
            let text = match tokio::task::spawn_blocking(move || rpost_queue::show::postqueue_listing(&queue)).await {
                Ok((t, warnings)) => {
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    t
                }
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

/// authorized_mailq_users for the client's uid (peer credentials of the UNIX socket).
fn authorized(stream: &rpost_daemon::Stream, acl: &[String], owner: Option<u32>) -> Result<(), String> {
    let rpost_daemon::Stream::Unix(unix) = stream else { return Err("not a local client".into()) };
    let uid = unix.peer_cred().map_err(|e| format!("peer credentials: {e}"))?.uid();
    if uid == 0 || Some(uid) == owner {
        return Ok(());
    }
    let login = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "unknown".into());
    match pickup::policy::user_listed(acl, &login) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("User {login}({uid}) is not allowed to view the mail queue")),
        Err(e) => Err(format!("authorized_mailq_users: {e}")),
    }
}

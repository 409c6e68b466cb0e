//! smtp-client entry point: the rpost-daemon skeleton around [`smtp_client::deliver::serve`].

use std::process::ExitCode;
use std::sync::Arc;

use rpost_daemon::{Client, Stream};
use smtp_client::deliver::Agent;
use smtp_client::settings::Settings;

/// LMTP for plain host next hops: the `lmtp` service, or the `lmtp` argument in master.cf.
fn lmtp_service(service: &str, args: &[String]) -> bool {
    service == "lmtp" || args.iter().any(|a| a == "lmtp")
}

fn main() -> ExitCode {
    // Log as Postfix's smtp(8) or lmtp(8) would: `rpost/smtp[pid]`, `rpost/lmtp[pid]`.
    let service = std::env::var("RPOST_SERVICE").unwrap_or_default();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let program = if lmtp_service(&service, &argv) { "lmtp" } else { "smtp" };
    let daemon = match rpost_daemon::Daemon::start(program) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("smtp-client: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let queue_root = match daemon.queue_root() {
        Ok(q) => q,
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lmtp = lmtp_service(&daemon.env().service, daemon.args());
    let settings = match Settings::from_params(daemon.params(), lmtp, queue_root) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    for p in [&settings.smtp, &settings.lmtp] {
        if p.tls_required && p.tls_config.is_none() {
            tracing::warn!(
                "TLS security level {:?} requires TLS, but no TLS configuration is usable ({}): such mail is deferred",
                p.tls_level,
                p.tls_problem.as_deref().unwrap_or("unknown problem")
            );
        }
    }
    // Before serve(): the resolver configuration is read before a chroot hides it.
    let agent = Arc::new(Agent::new(settings));
    daemon.serve(rpost_daemon::Options::default(), move |client| {
        let agent = agent.clone();
        async move {
            match client {
                Client::Stream(Stream::Unix(stream)) => smtp_client::deliver::serve(&agent, stream).await,
                Client::Stream(Stream::Tcp { stream, .. }) => smtp_client::deliver::serve(&agent, stream).await,
                Client::Trigger(_) => {}
            }
        }
    })
}

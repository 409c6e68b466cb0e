//! smtpd entry point: the rpost-daemon skeleton around [`smtpd::server::serve`].

use std::process::ExitCode;
use std::sync::Arc;

use rpost_daemon::{Client, Stream};
use smtpd::server::{Shared, serve, serve_at};
use smtpd::session;

fn main() -> ExitCode {
    let daemon = match rpost_daemon::Daemon::start("smtpd") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("smtpd: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Tables are opened before the privilege drop, as Postfix does, so root-only map files
    // can be read.
    let settings = match smtpd::settings::Settings::from_params(daemon.params()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fatal: {e}");
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
    let shared = Arc::new(Shared::new(settings, queue_root));
    daemon.serve(rpost_daemon::Options::default(), move |client| {
        let shared = shared.clone();
        async move {
            match client {
                Client::Stream(Stream::Tcp { stream, peer, .. }) => {
                    let _ = stream.set_nodelay(true);
                    let client = session::Client::new(peer.ip(), peer.port(), "unknown");
                    let local = stream.local_addr().ok();
                    serve_at(shared, stream, client, local).await;
                }
                Client::Stream(Stream::Unix(stream)) => {
                    let addr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
                    let client = session::Client::new(addr, 0, "localhost");
                    serve(shared, stream, client).await;
                }
                Client::Trigger(_) => {}
            }
        }
    })
}

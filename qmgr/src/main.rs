//! qmgr entry point: the rpost-daemon trigger-server skeleton around the scheduler.

use std::path::PathBuf;
use std::process::ExitCode;

use qmgr::bounce::Reporter;
use qmgr::resolve::Resolver;
use qmgr::scheduler::{Event, Limits, Qmgr};

fn main() -> ExitCode {
    let daemon = match rpost_daemon::Daemon::start("qmgr") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("qmgr: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let params = daemon.params();
    let setup = || -> Result<(Resolver, Limits, Reporter, PathBuf), rpost_config::ConfigError> {
        let root = daemon.queue_root()?;
        let reporter = Reporter::from_params(params)?;
        Ok((Resolver::from_params(params)?, Limits::from_params(params)?, reporter, root))
    };
    let (resolver, limits, reporter, root) = match setup() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let scheduler = Some(Qmgr::new(rpost_queue::Queue::new(root), resolver, limits, reporter, tx.clone()));
    let scheduler = std::sync::Mutex::new(scheduler);
    let rx = std::sync::Mutex::new(Some(rx));
    // A queue manager runs for as long as the master does: max_use/max_idle do not apply.
    let options = rpost_daemon::Options { long_running: true, triggers: true, ..Default::default() };
    daemon.serve(options, move |trigger| {
        // The scheduler starts with the first trigger (rmaster's wakeup comes at once), inside
        // the runtime; every trigger then just wakes it.
        if let (Some(q), Some(rx)) =
            (scheduler.lock().ok().and_then(|mut s| s.take()), rx.lock().ok().and_then(|mut r| r.take()))
        {
            tokio::spawn(q.run(rx));
        }
        let flush = matches!(&trigger, rpost_daemon::Client::Trigger(b) if b.iter().any(|c| b"FDA".contains(c)));
        let _ = tx.send(if flush { Event::Flush } else { Event::Trigger });
        async {}
    })
}

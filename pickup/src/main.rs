//! pickup - local mail pickup (skeleton; the work is in progress under issue 4)

use std::process::ExitCode;

fn main() -> ExitCode {
    let daemon = match rpost_daemon::Daemon::start("pickup") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pickup: fatal: {e}");
            return ExitCode::FAILURE;
        }
    };
    daemon.serve(rpost_daemon::Options::default(), |client| rpost_daemon::refuse_unimplemented("pickup", client, None))
}

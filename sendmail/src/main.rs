//! sendmail - local submission (skeleton; the work is in progress under issue 4)

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("sendmail: fatal: not implemented yet");
    ExitCode::FAILURE
}

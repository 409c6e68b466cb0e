//! rpost-log - one log line per event, in the shape Postfix admins grep for
//!
//! # SUMMARY
//! Installs the `tracing` subscriber of an rpost program. Lines look like Postfix's:
//! `Nov 21 23:19:51 mail rpost/smtpd[4711]: warning: ...`.
//!
//! # DESCRIPTION
//! The program identity is `syslog_name/program` (with `-o syslog_name=rpost/submission` in
//! master.cf this gives `rpost/submission/smtpd`, as in Postfix). Warnings and errors carry the
//! `warning: ` / `error: ` prefixes; a message that already starts with `fatal: ` or `panic: `
//! keeps its own. Extra event fields follow the message as ` name=value`.
//!
//! Where lines go, first match wins:
//! 1. `maillog_file` when set (`/dev/stdout` and `/dev/stderr` mean those streams), opened in
//!    append mode before any chroot, one `write(2)` per line so processes never interleave;
//! 2. journald when the process runs under systemd (`JOURNAL_STREAM` set) and is not chrooted;
//! 3. the syslog socket `/dev/log` (facility mail) for a detached master and its children,
//!    connected before any chroot;
//! 4. standard error.
//!
//! # SECURITY
//! Log text is built from protocol input elsewhere; this crate replaces control characters
//! (including CR and LF) with `?` so a client cannot forge log lines.
//!
//! # CONFIGURATION
//! `syslog_name`, `maillog_file`; `-v` on a master.cf command line enables debug lines.
//!
//! [`rfc5322_date`] formats header dates with the same calendar code.
//!
//! # STANDARDS
//! RFC 3164 framing for `/dev/log`; RFC 5322 section 3.3 dates.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Logging set-up errors.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("open maillog_file {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// How a program wants to log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// `syslog_name` parameter, e.g. `rpost` or `rpost/submission`.
    pub syslog_name: String,
    /// Program name, e.g. `smtpd`.
    pub program: String,
    /// `maillog_file` parameter; empty means unset.
    pub maillog_file: String,
    /// Log debug lines too.
    pub verbose: bool,
    /// Prefer syslog over stderr (a daemonized master and its children).
    pub detached: bool,
    /// The process will chroot: journald's socket path will not resolve there.
    pub chroot: bool,
}

impl LogOptions {
    /// Identity shown in brackets-before-pid position: `syslog_name/program`.
    pub fn ident(&self) -> String {
        format!("{}/{}", self.syslog_name, self.program)
    }
}

/// Where formatted lines go.
#[derive(Debug)]
enum Sink {
    File(Mutex<std::fs::File>),
    Stdout,
    Stderr,
    Syslog(UnixDatagram),
}

/// Installs the global subscriber. Call once, early, before dropping privileges.
pub fn init(opts: &LogOptions) -> Result<(), LogError> {
    let filter = if opts.verbose { LevelFilter::DEBUG } else { LevelFilter::INFO };
    let ident = opts.ident();
    let sink = match opts.maillog_file.as_str() {
        "" => None,
        "/dev/stdout" => Some(Sink::Stdout),
        "/dev/stderr" => Some(Sink::Stderr),
        path => {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|source| LogError::Open { path: path.to_string(), source })?;
            Some(Sink::File(Mutex::new(file)))
        }
    };
    let sink = match sink {
        Some(s) => s,
        None => {
            if std::env::var_os("JOURNAL_STREAM").is_some()
                && !opts.chroot
                && let Ok(layer) = tracing_journald::layer()
            {
                let layer = layer.with_syslog_identifier(ident).with_filter(filter);
                return tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
                    .map_err(|_| LogError::AlreadyInstalled);
            }
            let syslog = if opts.detached {
                UnixDatagram::unbound().and_then(|s| s.connect("/dev/log").map(|()| s)).ok()
            } else {
                None
            };
            syslog.map(Sink::Syslog).unwrap_or(Sink::Stderr)
        }
    };
    install(opts, sink, filter)
}

/// As [`init`] with `maillog_file` already opened (for appending) by someone allowed to: a
/// process started as a mail user (imapd's per-user processes) cannot open the file itself.
pub fn init_with_file(opts: &LogOptions, file: std::fs::File) -> Result<(), LogError> {
    let filter = if opts.verbose { LevelFilter::DEBUG } else { LevelFilter::INFO };
    install(opts, Sink::File(Mutex::new(file)), filter)
}

fn install(opts: &LogOptions, sink: Sink, filter: LevelFilter) -> Result<(), LogError> {
    let ident = opts.ident();
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or("localhost").to_string())
        .unwrap_or_else(|| "localhost".into());
    let layer = LineLayer { sink, ident, host, pid: std::process::id() }.with_filter(filter);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .map_err(|_| LogError::AlreadyInstalled)
}

struct LineLayer {
    sink: Sink,
    ident: String,
    host: String,
    pid: u32,
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let level = *event.metadata().level();
        let text = message_text(level, &v.message, &v.fields);
        let now = SystemTime::now();
        match &self.sink {
            Sink::Syslog(sock) => {
                // Facility mail (2); severities per RFC 3164.
                let sev = match level {
                    Level::ERROR => 3,
                    Level::WARN => 4,
                    Level::INFO => 6,
                    _ => 7,
                };
                let line = format!("<{}>{} {}[{}]: {}", 16 + sev, timestamp(now), self.ident, self.pid, text);
                let _ = sock.send(line.as_bytes());
            }
            sink => {
                let line = format!("{} {} {}[{}]: {}\n", timestamp(now), self.host, self.ident, self.pid, text);
                // One write per line: with O_APPEND, lines of concurrent processes stay whole.
                let _ = match sink {
                    Sink::File(f) => f.lock().map(|mut f| f.write_all(line.as_bytes())).unwrap_or(Ok(())),
                    Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
                    _ => std::io::stderr().lock().write_all(line.as_bytes()),
                };
            }
        }
    }
}

/// The part of a log line after `ident[pid]: `.
pub fn message_text(level: Level, message: &str, fields: &str) -> String {
    let prefix = match level {
        Level::ERROR if message.starts_with("fatal: ") || message.starts_with("panic: ") => "",
        Level::ERROR => "error: ",
        Level::WARN => "warning: ",
        _ => "",
    };
    let mut out = String::with_capacity(prefix.len() + message.len() + fields.len());
    out.push_str(prefix);
    out.push_str(message);
    out.push_str(fields);
    sanitize(&out)
}

/// Replaces control characters so one event is always one line.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

/// `Nov 21 23:19:51` in UTC, the traditional syslog/maillog timestamp.
pub fn timestamp(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (_, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{} {:>2} {:02}:{:02}:{:02}", MONTHS[(month - 1) as usize], day, rem / 3600, rem / 60 % 60, rem % 60)
}

/// RFC 5322 date-time in UTC, for Received: and Date: headers:
/// `Sat, 21 Nov 2026 23:19:51 +0000 (UTC)`.
pub fn rfc5322_date(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (year, month, day) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000 (UTC)",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Installs a stderr logger for command-line tools (no timestamp: `rmaster: warning: ...`).
pub fn init_cli(program: &str, verbose: bool) {
    let filter = if verbose { LevelFilter::DEBUG } else { LevelFilter::INFO };
    let layer = CliLayer { program: program.to_string() }.with_filter(filter);
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
}

struct CliLayer {
    program: String,
}

impl<S: Subscriber> Layer<S> for CliLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let text = message_text(*event.metadata().level(), &v.message, &v.fields);
        let _ = writeln!(std::io::stderr().lock(), "{}: {}", self.program, text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_match_syslog_shape() {
        // 2026-11-21 23:19:51 UTC
        let t = UNIX_EPOCH + Duration::from_secs(1_795_303_191);
        assert_eq!(timestamp(t), "Nov 21 23:19:51");
        assert_eq!(timestamp(UNIX_EPOCH), "Jan  1 00:00:00");
        // Leap day.
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Feb 29 00:00:00");
    }

    #[test]
    fn rfc5322_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_303_191);
        assert_eq!(rfc5322_date(t), "Sat, 21 Nov 2026 23:19:51 +0000 (UTC)");
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000 (UTC)");
    }

    #[test]
    fn prefixes_like_postfix() {
        assert_eq!(message_text(Level::WARN, "x", ""), "warning: x");
        assert_eq!(message_text(Level::ERROR, "fatal: y", ""), "fatal: y");
        assert_eq!(message_text(Level::ERROR, "y", " a=1"), "error: y a=1");
        assert_eq!(message_text(Level::INFO, "connect from x", ""), "connect from x");
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        assert_eq!(sanitize("a\r\nfake[1]: x"), "a??fake[1]: x");
    }
}

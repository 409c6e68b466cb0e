//! lmtp-deliver's view of main.cf, read once at start-up (a reload starts new processes).

use std::path::PathBuf;
use std::time::Duration;

use rpost_config::{ConfigError, Params};

use crate::userdb::{UserDb, UserDbError};

/// How long a client may stay silent (Dovecot's LMTP server: 5 minutes).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// Recipients per transaction.
pub const RECIPIENT_LIMIT: usize = 1000;
/// Error replies before the connection is closed.
pub const ERROR_LIMIT: u32 = 20;

/// Why lmtp-deliver cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    UserDb(#[from] UserDbError),
}

/// Everything a session needs, resolved from parameters.
#[derive(Debug)]
pub struct Settings {
    /// Dovecot's `hostname` (default `$myhostname`): greeting, LHLO and Received:.
    pub hostname: String,
    pub userdb: UserDb,
    /// `lmtp_save_to_detail_mailbox`: `user+detail` goes to mailbox `detail`.
    pub save_to_detail_mailbox: bool,
    /// `lda_mailbox_autocreate`: create a missing detail mailbox instead of using INBOX.
    pub mailbox_autocreate: bool,
    /// `lda_mailbox_autosubscribe`: subscribe to mailboxes created that way.
    pub mailbox_autosubscribe: bool,
    /// `lmtp_rcpt_check_quota`: refuse RCPT for users already over quota.
    pub rcpt_check_quota: bool,
    /// `mailbox_size_limit` (0 = none): the largest Maildir file written.
    pub mailbox_size_limit: u64,
    /// `mail_temp_dir`: where message content larger than 1 MiB waits during delivery.
    pub temp_dir: PathBuf,
    pub line_length_limit: usize,
    pub timeout: Duration,
}

impl Settings {
    /// `privileged`: running as root, so each delivery's files go to the mail user.
    pub fn from_params(p: &Params, privileged: bool) -> Result<Settings, SettingsError> {
        let fsync = p.get("mail_fsync")?;
        if !fsync.eq_ignore_ascii_case("optimized") && !fsync.eq_ignore_ascii_case("always") {
            tracing::warn!("mail_fsync = {fsync}: ignored, lmtp-deliver always fsyncs before it says 250");
        }
        Ok(Settings {
            hostname: p.get("hostname")?,
            userdb: UserDb::from_params(p, privileged)?,
            save_to_detail_mailbox: p.get_bool("lmtp_save_to_detail_mailbox")?,
            mailbox_autocreate: p.get_bool("lda_mailbox_autocreate")?,
            mailbox_autosubscribe: p.get_bool("lda_mailbox_autosubscribe")?,
            rcpt_check_quota: p.get_bool("lmtp_rcpt_check_quota")?,
            mailbox_size_limit: p.get_size("mailbox_size_limit")?,
            temp_dir: PathBuf::from(p.get("mail_temp_dir")?),
            line_length_limit: p.get_int("line_length_limit")?.max(512) as usize,
            timeout: CLIENT_TIMEOUT,
        })
    }
}

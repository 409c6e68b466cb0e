//! The local delivery agent's view of main.cf, read once at start-up.

use std::path::PathBuf;
use std::time::Duration;

use rpost_config::{ConfigError, Params};

use super::mbox::AppendOptions;

/// Why `local` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Lookup(#[from] rpost_lookup::LookupError),
    #[error("{name} = {value}: {message}")]
    Bad { name: &'static str, value: String, message: String },
}

/// Where a destination came from, for allow_mail_to_commands / allow_mail_to_files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The recipient itself (never a file or command).
    Recipient,
    Alias,
    Forward,
    Include,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Recipient => "recipient",
            Source::Alias => "alias",
            Source::Forward => "forward",
            Source::Include => "include",
        }
    }
}

/// A system user: who deliveries run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: String,
}

impl Account {
    pub fn from_user(u: nix::unistd::User) -> Account {
        Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell.display().to_string(),
        }
    }

    /// getpwnam(3); `Err` when the lookup itself failed.
    pub fn by_name(name: &str) -> Result<Option<Account>, String> {
        if name.is_empty() || name.contains(['\0', '/']) {
            return Ok(None);
        }
        nix::unistd::User::from_name(name).map(|u| u.map(Account::from_user)).map_err(|e| e.to_string())
    }

    /// getpwuid(3).
    pub fn by_uid(uid: u32) -> Result<Option<Account>, String> {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .map(|u| u.map(Account::from_user))
            .map_err(|e| e.to_string())
    }
}

/// Everything a delivery needs from main.cf.
#[derive(Debug)]
pub struct Settings {
    pub params: Params,
    pub myhostname: String,
    pub myorigin: String,
    pub recipient_delimiter: String,
    pub alias_maps: Vec<String>,
    /// forward_path, raw (local variables are expanded per recipient).
    pub forward_path: Vec<String>,
    pub home_mailbox: String,
    pub mail_spool_directory: PathBuf,
    /// mailbox_command, raw.
    pub mailbox_command: String,
    /// mailbox_command_maps: per-user commands, looked up by user name first.
    pub mailbox_command_maps: Vec<Box<dyn rpost_lookup::Table>>,
    /// luser_relay, raw: where mail for unknown users goes instead of bouncing.
    pub luser_relay: String,
    /// mailbox_transport: hand mailbox deliveries to this master.cf transport.
    pub mailbox_transport: String,
    /// fallback_transport: hand unknown users to this transport.
    pub fallback_transport: String,
    /// mailbox_transport_maps / fallback_transport_maps: the same per user.
    pub mailbox_transport_maps: Vec<Box<dyn rpost_lookup::Table>>,
    pub fallback_transport_maps: Vec<Box<dyn rpost_lookup::Table>>,
    /// local_command_shell split into program and arguments (empty: `/bin/sh -c`).
    pub local_command_shell: Vec<String>,
    /// biff: tell comsat about new mailbox mail.
    pub biff: bool,
    /// Time limit for a hand-over to another transport (ipc_timeout).
    pub pass_timeout: Duration,
    pub mailbox_size_limit: u64,
    pub command_time_limit: Duration,
    pub allow_commands: Vec<String>,
    pub allow_files: Vec<String>,
    pub default_privs: String,
    pub mail_owner: String,
    pub owner_request_special: bool,
    pub expand_owner_alias: bool,
    pub prepend_delivered: Vec<String>,
    pub strict_mailbox_ownership: bool,
    pub lock: AppendOptions,
    pub export_environment: Vec<String>,
    pub queue_root: PathBuf,
    /// This program, for the delivery helpers.
    pub helper: PathBuf,
    /// Running as root: helpers and commands switch to the target user.
    pub privileged: bool,
}

impl Settings {
    pub fn from_params(p: &Params, queue_root: PathBuf, privileged: bool) -> Result<Settings, LocalError> {
        let locks = p.get_list("mailbox_delivery_lock")?;
        for l in &locks {
            if !["fcntl", "flock", "dotlock"].contains(&l.as_str()) {
                return Err(LocalError::Bad {
                    name: "mailbox_delivery_lock",
                    value: locks.join(", "),
                    message: format!("unknown locking method {l:?} (fcntl, flock, dotlock)"),
                });
            }
        }
        let has = |m: &str| locks.iter().any(|l| l == m);
        let raw = |name: &str| p.raw(name).unwrap_or_default();
        let helper = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        Ok(Settings {
            myhostname: p.get("myhostname")?,
            myorigin: p.get("myorigin")?,
            recipient_delimiter: p.get("recipient_delimiter")?,
            alias_maps: p.get_list("alias_maps")?,
            forward_path: rpost_config::params::split_list(&raw("forward_path"))
                .map_err(|message| LocalError::Bad { name: "forward_path", value: raw("forward_path"), message })?,
            home_mailbox: p.get("home_mailbox")?,
            mail_spool_directory: PathBuf::from(p.get("mail_spool_directory")?),
            mailbox_command: raw("mailbox_command"),
            mailbox_command_maps: rpost_lookup::open_param(p, "mailbox_command_maps")?,
            luser_relay: raw("luser_relay"),
            mailbox_transport: p.get("mailbox_transport")?,
            fallback_transport: p.get("fallback_transport")?,
            mailbox_transport_maps: rpost_lookup::open_param(p, "mailbox_transport_maps")?,
            fallback_transport_maps: rpost_lookup::open_param(p, "fallback_transport_maps")?,
            local_command_shell: p.get("local_command_shell")?.split_whitespace().map(str::to_string).collect(),
            pass_timeout: p.get_time("ipc_timeout")?,
            biff: p.get_bool("biff")?,
            mailbox_size_limit: p.get_size("mailbox_size_limit")?,
            command_time_limit: p.get_time("command_time_limit")?,
            allow_commands: p.get_list("allow_mail_to_commands")?,
            allow_files: p.get_list("allow_mail_to_files")?,
            default_privs: p.get("default_privs")?,
            mail_owner: p.get("mail_owner")?,
            owner_request_special: p.get_bool("owner_request_special")?,
            expand_owner_alias: p.get_bool("expand_owner_alias")?,
            prepend_delivered: p.get_list("prepend_delivered_header")?,
            strict_mailbox_ownership: p.get_bool("strict_mailbox_ownership")?,
            lock: AppendOptions {
                dotlock: has("dotlock"),
                dotlock_may_fail: false,
                fcntl: has("fcntl"),
                flock: has("flock"),
                owner: None,
                size_limit: p.get_size("mailbox_size_limit")?,
                lock_attempts: p.get_int("deliver_lock_attempts")?.clamp(1, 1000) as u32,
                lock_delay: p.get_time("deliver_lock_delay")?,
                stale_lock: p.get_time("stale_lock_time")?,
            },
            export_environment: p.get_list("export_environment")?,
            queue_root,
            helper,
            privileged,
            params: p.clone(),
        })
    }

    pub fn allowed_command(&self, s: Source) -> bool {
        self.allow_commands.iter().any(|a| a.eq_ignore_ascii_case(s.name()))
    }

    pub fn allowed_file(&self, s: Source) -> bool {
        self.allow_files.iter().any(|a| a.eq_ignore_ascii_case(s.name()))
    }

    pub fn prepend(&self, what: &str) -> bool {
        self.prepend_delivered.iter().any(|a| a.eq_ignore_ascii_case(what))
    }
}

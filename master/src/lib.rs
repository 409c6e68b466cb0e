//! rmaster - the rpost supervisor and administration command
//!
//! # SUMMARY
//! `rmaster [-c DIR] start|stop|reload|status|check|conf|queue|map|pw|auth|setup|log ...`
//!
//! # DESCRIPTION
//! As Postfix's master(8) together with postfix(1) and postconf(1): `start` reads
//! `main.cf` and `master.cf` from the configuration directory, prepares the queue
//! directory, binds every `inet` listener and creates every `unix`/`fifo` socket, then starts
//! the daemons named in master.cf on demand, restarts crashed ones with a throttle, and
//! reloads on SIGHUP or `rmaster reload`. The other commands administer a running or
//! stopped system.
//!
//! Layout of this crate:
//! * [`supervisor`]: the running master (services, children, reload, shutdown);
//! * [`endpoint`]: binding listeners from master.cf service names;
//! * [`spool`]: the queue directory layout, created and repaired by `start` and `check`;
//! * [`control`]: the control socket behind `rmaster status`;
//! * [`commands`]: the command-line verbs;
//! * [`conf`]: `rmaster conf`, the postconf(1) work-alike;
//! * [`admin`]: `rmaster queue` (postqueue/postcat) and `rmaster map` (postmap/postalias).
//! * [`setup`]: `rmaster setup`, the quickstart for one virtual domain;
//! * [`logsummary`]: `rmaster log summary`, pflogsumm's report from the maillog;
//! * [`manpage`]: rpost(5) from the parameter registry (`rmaster gen-man`, package builds).
//! * [`tls`]: the self-signed default certificate `start` and `check` create in
//!   `$config_directory/tls/` when a service wants TLS and names none.
//!
//! # SECURITY
//! rmaster is the only rpost program that keeps root privileges. It never reads network
//! input: listeners are only polled for readability and handed to children, which drop to
//! `mail_owner` (and chroot where master.cf says so) before reading a byte. Children get a
//! clean environment. The control socket is mode 0600 under the root-owned `pid/`.
//!
//! # CONFIGURATION
//! `config_directory` (`-c DIR` or `RPOST_CONFIG`, default `/etc/rpost`), `queue_directory`,
//! `daemon_directory`, `mail_owner`, `default_process_limit`, `max_use`, `max_idle`,
//! `service_throttle_time`, `master_stop_timeout`, `inet_interfaces`, `inet_protocols`,
//! `syslog_name`, `maillog_file`.
//!
//! # STANDARDS
//! Postfix master.cf(5) and main.cf(5) syntax; sd_notify(3) READY/RELOADING/STOPPING.

pub mod admin;
pub mod commands;
pub mod conf;
pub mod control;
pub mod endpoint;
pub mod logsummary;
pub mod manpage;
pub mod setup;
pub mod spool;
pub mod supervisor;
pub mod tls;

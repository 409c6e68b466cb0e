//! smtpd - the rpost SMTP server
//!
//! # SUMMARY
//! `smtpd` runs under rmaster for master.cf `inet` services such as `smtp` (25),
//! `submission` (587) and `smtps` (465); per-service behaviour comes from `-o` overrides.
//!
//! # DESCRIPTION
//! As Postfix's smtpd(8): it speaks ESMTP (PIPELINING, SIZE, VRFY, ENHANCEDSTATUSCODES,
//! 8BITMIME, DSN, SMTPUTF8, CHUNKING), applies the smtpd_*_restrictions with Postfix's
//! semantics (see [`policy`]), classifies addresses as local, virtual alias, virtual mailbox,
//! relay or remote (see [`addr`]), expands virtual aliases, and writes each accepted message
//! into the queue (rpost-queue) before it answers `250 2.0.0 Ok: queued as ID`. The file is
//! fsync'd before that reply. Then qmgr is told through its trigger socket.
//!
//! Layout: [`session`] is the sans-IO state machine (commands in, replies and decisions out),
//! [`server`] the tokio driver that moves bytes and queue-file writes, [`settings`] the
//! parameters, [`policy`] the restriction engine, [`addr`] address classes.
//!
//! # SECURITY
//! Runs as `mail_owner`, optionally chrooted to the queue directory. Everything from the
//! client is untrusted: command lines are bounded by `line_length_limit`, messages by
//! `message_size_limit`, recipients by `smtpd_recipient_limit`, idle time by `smtpd_timeout`,
//! errors by `smtpd_soft_error_limit`/`smtpd_hard_error_limit` (with `smtpd_error_sleep_time`),
//! concurrent connections per client by `smtpd_client_connection_count_limit`. Bare CR or LF in
//! commands or message content is refused and never taken as the end of data (SMTP
//! smuggling). Relay is decided by `smtpd_relay_restrictions` (default: mynetworks, SASL,
//! else only to our own domains); addresses with routing operators (`%`, `!`, `@` in the local
//! part) never count as ours.
//!
//! # CONFIGURATION
//! myhostname, myorigin, mydestination, virtual_alias_domains, virtual_alias_maps,
//! virtual_mailbox_domains, virtual_mailbox_maps (else auth_passdb), relay_domains,
//! relay_recipient_maps, local_recipient_maps, mynetworks, recipient_delimiter,
//! smtpd_banner, smtpd_helo_required, smtpd_delay_reject, smtpd_*_restrictions,
//! smtpd_reject_unlisted_recipient, disable_vrfy_command, smtputf8_enable,
//! message_size_limit, smtpd_recipient_limit, smtpd_timeout, the error limits and the
//! reject codes (relay_domains_reject_code, access_map_reject_code, ...).
//!
//! # STANDARDS
//! RFC 5321 (SMTP), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 2920 (PIPELINING), RFC 3030
//! (CHUNKING), RFC 3461 (DSN), RFC 2034/3463 (enhanced status codes), RFC 6531 (SMTPUTF8),
//! RFC 3848 (protocol names in Received:).

/// Address classes live in rpost-address (qmgr needs them too).
pub use rpost_address as addr;
pub mod policy;
pub mod server;
pub mod session;
pub mod settings;

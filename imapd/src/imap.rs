//! IMAP4rev1 (RFC 3501) over the user's Maildir++ store, served by the `imapd` program.
//!
//! [`server`] is the tokio driver of one connection (greeting, STARTTLS or implicit TLS,
//! LOGIN/AUTHENTICATE through [`crate::login`], IDLE, timeouts, log lines); [`session`] the
//! authenticated and selected states as plain code over the store (commands in, response
//! bytes out); [`mailbox`] one selected Maildir (UIDs from `dovecot-uidlist`, flags in file
//! names, synchronisation with other sessions and deliveries); [`mime`] the MIME structure,
//! ENVELOPE, BODYSTRUCTURE and body sections; [`limit`] the per-user-and-address session
//! count. Commands are parsed by rpost-imap-proto.

pub mod limit;
pub mod mailbox;
pub mod mime;
pub mod server;
pub mod session;

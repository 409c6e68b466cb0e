//! IMAP4rev1 (RFC 3501) over the user's Maildir++ store, served by the `imapd` program.
//!
//! [`server`] is the login process's tokio driver of one connection (greeting, STARTTLS or
//! implicit TLS, LOGIN/AUTHENTICATE through [`crate::login`], timeouts, log lines) until it
//! hands the logged-in connection to [`worker`], the process serving every session of that
//! mail uid (the authenticated and selected states, IDLE with shared mailbox watchers);
//! [`conn`] the connection both of them drive (transport, command reader); [`session`] the
//! authenticated and selected states as plain code over the store (commands in, response
//! bytes out); [`mailbox`] one selected Maildir (UIDs from `dovecot-uidlist`, flags in file
//! names, synchronisation with other sessions and deliveries); [`mime`] the MIME structure,
//! ENVELOPE, BODYSTRUCTURE and body sections; [`limit`] the per-user-and-address session
//! count. Commands are parsed by rpost-imap-proto.

pub mod conn;
pub mod limit;
pub mod mailbox;
pub mod mime;
pub mod server;
pub mod session;
pub mod worker;

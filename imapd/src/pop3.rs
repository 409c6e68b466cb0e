//! POP3 (RFC 1939) with CAPA (RFC 2449), SASL AUTH (RFC 5034) and STLS (RFC 2595), served
//! by the `pop3d` program.
//!
//! [`session`] is the protocol as a sans-IO state machine, [`mailbox`] the maildrop (a
//! user's INBOX Maildir: sync, UIDL, RETR, commit at QUIT), [`server`] the tokio driver that
//! joins them with [`crate::login`]. Deletions take effect only at QUIT, all together under
//! the uidlist lock; a dropped connection deletes nothing. UIDLs follow
//! `pop3_uidl_format` (Dovecot's `%08Xu%08Xv`: IMAP UID and UIDVALIDITY from
//! `dovecot-uidlist`), so clients moved from Dovecot do not fetch everything again.

pub mod mailbox;
pub mod server;
pub mod session;

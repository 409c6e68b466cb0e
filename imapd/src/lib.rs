//! imapd - the mailbox side of rpost: IMAP and POP3 servers and their shared login layer
//!
//! # SUMMARY
//! The library behind the `imapd` and `pop3d` programs, which rmaster runs as master.cf
//! services (`imap inet n - n - - imapd`, `pop3 inet n - n - - pop3d`).
//!
//! # DESCRIPTION
//! [`login`]: authentication through authd, the userdb lookup, the mail location and the
//! switch to the mail user, shared by both protocols. [`imap`]: the IMAP server (session,
//! Maildir mailbox, MIME structure and tokio driver; the `imapd` program). [`pop3`]: the POP3 server (sans-IO
//! session, maildrop and tokio driver; the `pop3d` program).
//!
//! # SECURITY
//! See [`login`] and [`imap::worker`]: before login a client is served by a login process
//! running as `mail_owner`; imapd then hands it to a process running as the mail user that
//! serves every session of that uid; pop3d switches its own process to the mail user (one
//! client per process) and exits after the session.
//!
//! # CONFIGURATION
//! See the modules.
//!
//! # STANDARDS
//! RFC 1939 (POP3), RFC 2449, RFC 5034, RFC 2595; RFC 3501 (IMAP4rev1) with LITERAL+ (RFC 7888),
//! SASL-IR (RFC 4959), ID (RFC 2971), ENABLE (RFC 5161), IDLE (RFC 2177), NAMESPACE (RFC 2342),
//! UIDPLUS (RFC 4315), MOVE (RFC 6851), UNSELECT (RFC 3691), CHILDREN (RFC 3348), SPECIAL-USE
//! (RFC 6154), RFC 5530 response codes.

pub mod imap;
pub mod login;
pub mod pop3;

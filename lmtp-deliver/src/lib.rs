//! lmtp-deliver - LMTP delivery into Maildir (Dovecot's lmtp)
//!
//! # SUMMARY
//! `lmtp-deliver` runs under rmaster for the master.cf service
//! `lmtp-deliver unix - n n - - lmtp-deliver`; qmgr's LMTP client (or a real Postfix with
//! `virtual_transport = lmtp:unix:private/lmtp-deliver`) delivers to it.
//!
//! # DESCRIPTION
//! An LMTP server (RFC 2033) that stores each message into the recipient's Maildir, as
//! Dovecot's LMTP does:
//!
//! * greeting `220 <hostname> rpost LMTP ready`; LHLO offers PIPELINING,
//!   ENHANCEDSTATUSCODES, 8BITMIME, CHUNKING (BDAT) and SMTPUTF8;
//! * RCPT looks the user up at once ([`userdb`]): unknown users get
//!   `550 5.1.1 <addr> User doesn't exist: addr`, lookup failures `451 4.3.0`;
//! * after the content, one reply per accepted recipient in RCPT order:
//!   `250 2.0.0 <addr> <id> Saved`, `452 4.2.2 <addr> Quota exceeded (mailbox for user is
//!   full)`, `552 5.2.3` over mailbox_size_limit, `451 4.3.0 <addr> Temporary internal error`;
//! * the stored message starts with `Return-Path: <sender>`, `Delivered-To: <rcpt>` and a
//!   `Received:` line, and has LF line endings (see rpost-maildir);
//! * a `250` is sent only once the Maildir file is fsync'd and linked into `new/`, and `new/`
//!   fsync'd. The content of a transaction waits in memory, or past 1 MiB in an unnamed
//!   temporary file in `mail_temp_dir`, and is copied to each recipient.
//! * With `lmtp_save_to_detail_mailbox = yes`, `user+detail@domain` is saved to mailbox
//!   `detail` when it exists (or, with `lda_mailbox_autocreate = yes`, after creating it,
//!   subscribed with `lda_mailbox_autosubscribe`); otherwise to INBOX.
//!
//! Layout: [`session`] is the sans-IO state machine, [`server`] the tokio driver, [`deliver`]
//! the spool and the per-recipient store call, [`userdb`] the user lookups, [`settings`] the
//! parameters.
//!
//! # SECURITY
//! master.cf runs lmtp-deliver unprivileged `n`: as root when rmaster is root, since it
//! writes for many users. It does not switch uid per recipient (a multi-threaded process
//! cannot change its credentials safely); instead every file and directory it creates in a
//! store is chown'ed to the user's uid/gid (from the userdb `uid=`/`gid=` or `mail_uid`/
//! `mail_gid`; never uid 0 or below `first_valid_uid`/`first_valid_gid`), and it works inside
//! the store through directory descriptors without following links a mail user could plant
//! (rpost-maildir's owner mode). Not running as root, it writes as itself and chowns nothing.
//!
//! Addresses are untrusted: the local part and domain in `home`, `mail_home` and
//! `mail_location` templates must be single safe path components (no `/`, `.` or `..`, no
//! control characters), so `../../etc@example.com` never names a directory outside the base
//! (`550 5.1.3`); mailbox names from `+detail` are validated by rpost-maildir. Lines are
//! bounded by `line_length_limit`, recipients per transaction by 1000, idle clients by 5
//! minutes, content by `mailbox_size_limit`.
//!
//! # CONFIGURATION
//! hostname (default `$myhostname`), auth_passdb, auth_userdb, auth_username_format,
//! mail_home, mail_location (default `maildir:~/Maildir`), mail_uid, mail_gid,
//! first_valid_uid, first_valid_gid, recipient_delimiter, lmtp_save_to_detail_mailbox,
//! lda_mailbox_autocreate, lda_mailbox_autosubscribe, lmtp_rcpt_check_quota,
//! mailbox_size_limit, mail_temp_dir, line_length_limit; userdb fields uid, gid, home, mail,
//! quota_rule (`*:storage=1G`). Plus the rpost-daemon parameters.
//!
//! # STANDARDS
//! RFC 2033 (LMTP), RFC 5321, RFC 2920 (PIPELINING), RFC 3030 (CHUNKING), RFC 2034/3463
//! (enhanced status codes), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8); Maildir as Dovecot
//! stores it (see rpost-maildir).

pub mod deliver;
pub mod server;
pub mod session;
pub mod settings;
pub mod userdb;

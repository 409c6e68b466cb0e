//! lmtp-deliver - LMTP delivery into Maildir (Dovecot's lmtp)
//!
//! # SUMMARY
//! `lmtp-deliver` runs under rmaster for the master.cf service
//! `lmtp-deliver unix - n n - - lmtp-deliver`; qmgr's LMTP client (or a real Postfix with
//! `virtual_transport = lmtp:unix:private/lmtp-deliver`) delivers to it.
//!
//! The crate's second binary, `local`, is the local delivery agent (Postfix's local(8)) for
//! the master.cf service `local unix - n n - - local`: qmgr hands it the recipients in
//! `mydestination` (`local_transport = local:$myhostname`); see "local" below.
//!
//! # DESCRIPTION
//! An LMTP server (RFC 2033) that stores each message into the recipient's Maildir, as
//! Dovecot's LMTP does:
//!
//! * greeting `220 <hostname> rpost LMTP ready`; LHLO offers PIPELINING,
//!   ENHANCEDSTATUSCODES, 8BITMIME, CHUNKING (BDAT) and SMTPUTF8;
//! * RCPT looks the user up at once ([`userdb`]) by asking authd on its auth-userdb socket
//!   (`auth_socket_path`, as Dovecot's lmtp asks its auth service): unknown users get
//!   `550 5.1.1 <addr> User doesn't exist: addr`; lookup failures, and authd not running,
//!   `451 4.3.0 <addr> Temporary user lookup failure`;
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
//! ## local (Postfix local(8))
//!
//! qmgr connects to `private/local` and sends one `DeliveryRequest`; `local` reads the
//! queue file and answers one `DeliveryResponse` with a status per recipient, logging
//! `local[pid]: QID: to=<root@host>, orig_to=<root>, relay=local, delay=0.1,
//! delays=0.05/0/0/0.05, dsn=2.0.0, status=sent (delivered to command: ...)`. For each
//! recipient, as Postfix does ([`local::expand`]):
//!
//! * The local part (lower case) is looked up in `alias_maps`, first whole, then without
//!   its `recipient_delimiter` extension. A value lists addresses, `/file/name` (mbox;
//!   `/dir/` is a Maildir), `"|command"` and `:include:/file`; local addresses recurse in
//!   process, others are forwarded. An alias that lists itself means its mailbox. With
//!   `owner_request_special`, an `owner-NAME` alias makes `owner-NAME@$myorigin` (or its
//!   value with `expand_owner_alias`) the sender of NAME's expansion; permanent failures
//!   inside it are reported to the owner with an RFC 3464 notice ([`local::notice`]) and
//!   the recipient counts as done, as Postfix's bounce_workaround.
//! * Otherwise the system user (getpwnam) of the local part without extension.
//!   `forward_path` (default `$home/.forward${recipient_delimiter}${extension},
//!   $home/.forward`) is tried; a forward file must be the user's and not
//!   group/world-writable, else it is ignored with a warning; `\user` in it means the
//!   mailbox.
//! * Mailbox, first match: the user's transport in `mailbox_transport_maps`, or
//!   `mailbox_transport` (the recipient is handed to that master.cf transport with the same
//!   request protocol, for the same queue file: [`local::pass`], Postfix's deliver_pass;
//!   also for users without an account, as in Postfix); the user's command in
//!   `mailbox_command_maps`, or `mailbox_command` (shell syntax, not `$name`-expanded, as
//!   in Postfix); `home_mailbox` (ending in `/`, e.g. `Maildir/`: a Maildir in the home
//!   written with rpost-maildir, so Dovecot sees it; otherwise an mbox file there);
//!   `mail_spool_directory/USER` in mbox format: `From ` line, `Return-Path:`,
//!   `Delivered-To:`, `>From ` quoting, a blank line; locked with `mailbox_delivery_lock`
//!   (fcntl, dotlock, flock), fsync'd, truncated back on error, bounded by
//!   `mailbox_size_limit`.
//! * A user without an account goes to `fallback_transport_maps` / `fallback_transport`,
//!   else to `luser_relay` (`$user`, `$local`, `$extension`, `$recipient`, `$domain`
//!   expanded), else is `5.1.1 unknown user: "name"` and qmgr bounces.
//! * Commands run with `/bin/sh -c` (or `local_command_shell`), the message (with its
//!   `From ` line) on stdin, environment HOME USER LOGNAME SHELL SENDER RECIPIENT LOCAL
//!   EXTENSION DOMAIN ORIGINAL_RECIPIENT PATH plus `export_environment`,
//!   `command_time_limit` (then the process group is killed); exit codes are mapped as
//!   sysexits.h (75 and 71 defer, 64-78 with their DSN codes, others bounce with the
//!   command's output in the reason).
//! * Loops: a local address that recurs among its own ancestors, or a message that already
//!   carries a `Delivered-To:` for it, bounces with `5.4.6 mail forwarding loop for ADDR`;
//!   nesting is bounded (100). The same destination is delivered once per recipient.
//! * Forwarded addresses go into a new queue file in `incoming/` ([`local::requeue`]):
//!   virtual-alias expanded as cleanup(8) would, sender kept (or the owner- alias),
//!   `Delivered-To:` prepended, committed with rpost-queue's writer (fsync, complete mark,
//!   directory fsync) and chowned to `mail_owner`; then `public/qmgr` is triggered. Logged
//!   as `status=sent (forwarded as NEWQID)`.
//! * A recipient is deferred if any of its deliveries deferred, bounced if any bounced,
//!   sent otherwise.
//!
//! With `biff = yes` (the default) each mbox delivery sends `user@offset` to the comsat
//! service on 127.0.0.1 (UDP 512), as Postfix does; set `biff = no` where nobody runs it.
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
//! `local` also runs as root (unpriv `n`) but never writes, reads a user's file or runs a
//! command as root: each mbox/file/Maildir write and each `.forward`/`:include:` read runs
//! in a short-lived copy of itself (`local --local-helper ...`, [`local::helper`]) started
//! with the target's uid and gid through std's `CommandExt::uid/gid` (which also drops the
//! supplementary groups), and each command in `/bin/sh` started the same way; no unsafe
//! code. Rights: the recipient for mailboxes, `.forward` and its deliveries; for alias
//! files and commands the owner of the alias database file, or `default_privs` when that
//! is root; the owner of an `:include:` file when not root. Never uid 0: root's own
//! mailbox is deferred with a hint to alias root. Only the mailbox file and dot-lock in
//! `mail_spool_directory` are created by root (as Postfix does: the spool is root's), with
//! `O_EXCL|O_NOFOLLOW`, then chowned. Writes refuse symlinks (`O_NOFOLLOW`), non-regular
//! files and files with more than one link; with `strict_mailbox_ownership` a mailbox not
//! owned by its user is deferred; `..` in file destinations is refused.
//! `allow_mail_to_commands` / `allow_mail_to_files` (default `alias, forward`) decide
//! which sources may name commands and files (`include` is not allowed by default).
//! Address extensions put into `forward_path` pass a character filter without `/`. Not
//! running as root, `local` delivers everything as itself and says so once.
//!
//! lmtp-deliver reads no password data: authd is the only process that does. Addresses are
//! untrusted: a local part or domain that is not a single safe path component (no `/`, `.`
//! or `..`, no control characters) is refused before authd is asked, and the same holds in
//! `mail_home` and `mail_location` templates, so `../../etc@example.com` never names a
//! directory outside the base (`550 5.1.3`); mailbox names from `+detail` are validated by rpost-maildir. Lines are
//! bounded by `line_length_limit`, recipients per transaction by 1000, idle clients by 5
//! minutes, content by `mailbox_size_limit`.
//!
//! # CONFIGURATION
//! hostname (default `$myhostname`), auth_socket_path (authd's auth-userdb socket, default
//! `private/auth-userdb`; authd applies auth_passdb, auth_userdb and auth_username_format),
//! ipc_timeout (at most 60 s per lookup), mail_home, mail_location (default `maildir:~/Maildir`), mail_uid, mail_gid,
//! first_valid_uid, first_valid_gid, recipient_delimiter, lmtp_save_to_detail_mailbox,
//! lda_mailbox_autocreate, lda_mailbox_autosubscribe, lmtp_rcpt_check_quota,
//! mailbox_size_limit, mail_temp_dir, line_length_limit; userdb fields uid, gid, home, mail,
//! quota_rule (`*:storage=1G`). Plus the rpost-daemon parameters, except that `max_use`
//! applies only when set explicitly (main.cf or `-o` in master.cf): by default the process
//! serves without a use limit, as Dovecot's lmtp (`service_count = 0`), so all concurrent
//! deliveries into a mailbox meet in one process and share their uidlist lock cycles.
//!
//! local: myhostname, myorigin, mydestination, recipient_delimiter, alias_maps,
//! forward_path, home_mailbox, mail_spool_directory, mailbox_command, mailbox_command_maps,
//! luser_relay, mailbox_transport(_maps), fallback_transport(_maps), local_command_shell,
//! biff, mailbox_size_limit,
//! mailbox_delivery_lock, deliver_lock_attempts, deliver_lock_delay, stale_lock_time,
//! strict_mailbox_ownership, command_time_limit, allow_mail_to_commands,
//! allow_mail_to_files, default_privs, owner_request_special, expand_owner_alias,
//! prepend_delivered_header, export_environment, virtual_alias_maps (forwarded mail),
//! mail_owner, queue_directory, ipc_timeout.
//!
//! # STANDARDS
//! RFC 2033 (LMTP), RFC 5321, RFC 2920 (PIPELINING), RFC 3030 (CHUNKING), RFC 2034/3463
//! (enhanced status codes), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8); Maildir as Dovecot
//! stores it (see rpost-maildir). local: aliases(5) and local(8) semantics, RFC 3463
//! status codes, mbox as Postfix writes it (`>From ` quoting of `From ` lines), sysexits.h.

pub mod deliver;
pub mod local;
pub mod server;
pub mod session;
pub mod settings;
pub mod userdb;

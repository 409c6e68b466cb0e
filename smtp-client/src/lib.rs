//! smtp-client - the SMTP and LMTP delivery agent (Postfix's smtp(8) and lmtp(8))
//!
//! # SUMMARY
//! `smtp-client` runs under rmaster for master.cf `unix` services such as
//! `smtp unix - - n - - smtp-client`, `relay unix - - n - - smtp-client` and
//! `lmtp unix - - n - - smtp-client`; it is not started by hand.
//!
//! # DESCRIPTION
//! qmgr connects to `private/<transport>`, sends one `DeliveryRequest` (queue ID, next hop,
//! sender, recipients) and reads one `DeliveryResponse` with a status per recipient, in
//! request order. The agent reads the queue file (never modifies it: qmgr marks
//! recipients), connects to the next hop, and delivers:
//!
//! * Next hops ([`nexthop`]): `unix:PATH` (LMTP over a UNIX-domain socket, PATH relative to
//!   `queue_directory`), `inet:host:port` (LMTP over TCP), `[host]:port`, `[host]`,
//!   `host:port` (SMTP, or LMTP for the `lmtp` service), and bare domains, which need MX
//!   lookups that do not exist yet: such mail is deferred (4.4.3), never bounced.
//! * The protocol is LMTP when the service is named `lmtp`, when the command line has the
//!   argument `lmtp` (`dovecot unix - - n - - smtp-client lmtp`), or when the next hop is
//!   `unix:` or `inet:`; otherwise SMTP.
//! * The conversation ([`session`], sans I/O; [`driver`] moves the bytes): greeting,
//!   EHLO (HELO when EHLO is refused) or LHLO, PIPELINING (MAIL, RCPT and DATA in one group
//!   when offered), SIZE (a message over the server's limit bounces with 5.3.4 without being
//!   sent), BODY=8BITMIME, SMTPUTF8 (needed but not offered: 5.6.7), DSN parameters (NOTIFY,
//!   ORCPT, RET, ENVID) when offered, dot-stuffed DATA, one reply per recipient after the
//!   dot for LMTP, QUIT. A server that greets or answers EHLO with our own `myhostname` is a
//!   mail loop (SMTP only): bounced with 5.4.6 "mail for NEXTHOP loops back to myself".
//! * Results: 2xx sent, 4xx and connection trouble deferred, 5xx bounced; a refused MAIL
//!   FROM applies to every recipient. Reasons are worded as Postfix words them
//!   (`host mx[192.0.2.1] said: 550 5.1.1 ... (in reply to RCPT TO command)`,
//!   `connect to mx[192.0.2.1]:25: Connection refused`, `conversation with ... timed out
//!   while ...`, `lost connection with ... while ...`).
//! * One log line per recipient, as Postfix: `QUEUEID: to=<rcpt>, orig_to=<alias>,
//!   relay=host[addr]:port, delay=1.2, delays=a/b/c/d, dsn=2.0.0, status=sent (250 ...)`.
//!   The program logs as `smtp` or `lmtp` (e.g. `rpost/lmtp[pid]`).
//!
//! Not yet: STARTTLS (a TLS level that requires it defers the mail with 4.7.4), SASL
//! authentication, MX lookups, connection caching (one connection per request).
//!
//! # SECURITY
//! Runs as `mail_owner` (unpriv column `-`/`y`), optionally chrooted to the queue directory.
//! Server replies are untrusted: lines are cut at [`reply::MAX_LINE`] bytes, replies at
//! [`reply::MAX_LINES`] lines, control characters never reach logs or reasons, every wait
//! has a time limit. Envelope addresses with control characters or angle brackets are never
//! put on the wire. Content line endings are repaired to CRLF while dot-stuffing, so a
//! queue file cannot smuggle an early end of data.
//!
//! # CONFIGURATION
//! myhostname, queue_directory, inet_protocols, ipc_timeout, smtp_helo_name,
//! lmtp_lhlo_name, smtp_tcp_port, lmtp_tcp_port, smtp_connect_timeout, smtp_helo_timeout,
//! smtp_mail_timeout, smtp_rcpt_timeout, smtp_data_init_timeout, smtp_data_xfer_timeout,
//! smtp_data_done_timeout, smtp_quit_timeout and their lmtp_* twins (lmtp_lhlo_timeout),
//! smtp_skip_5xx_greeting, smtp_mx_address_limit (addresses tried per host),
//! smtp_bind_address, smtp_bind_address6, lmtp_bind_address, smtp_tls_security_level,
//! lmtp_tls_security_level, smtp_tls_wrappermode.
//!
//! # STANDARDS
//! RFC 5321 (SMTP), RFC 2033 (LMTP), RFC 2920 (PIPELINING), RFC 1870 (SIZE), RFC 6152
//! (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 (DSN), RFC 2034/3463 (enhanced status codes).

pub mod deliver;
pub mod driver;
pub mod nexthop;
pub mod reply;
pub mod session;
pub mod settings;

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
//!   `host:port` (SMTP, or LMTP for the `lmtp` service; the host's A/AAAA records, no MX
//!   lookup), and bare domains (SMTP to their MX hosts).
//! * MX delivery ([`mx`], sans I/O, fed by `rpost_dns::Resolver`: hickory-resolver asking the servers of
//!   `dns_resolver_servers`, else those of /etc/resolv.conf): MX records by preference,
//!   equal preferences shuffled, no MX: the domain's own A/AAAA (implicit MX); NXDOMAIN
//!   bounces (5.4.4, "Host or domain name not found. Name service error for name=D
//!   type=MX: Host not found"), SERVFAIL/timeouts defer (4.4.3), a null MX (RFC 7505)
//!   bounces (5.1.10 "Domain D does not accept mail (nullMX)"). MX hosts at our own
//!   addresses (`inet_interfaces`, `proxy_interfaces`; exact addresses, so instances on
//!   127.0.0.2 and 127.0.0.3 are strangers) and every worse MX are dropped; none left:
//!   "mail for D loops back to myself" (5.4.6), or 4.4.4 when we are only a backup.
//!   Addresses are tried in turn up to `smtp_mx_address_limit`, at most
//!   `smtp_mx_session_limit` sessions past EHLO: a refused or timed-out connection, a 4xx
//!   (or, with `smtp_skip_5xx_greeting`, 5xx) greeting or HELO, a lost connection, and a
//!   4xx to RCPT or DATA leave the recipient for the next address, as Postfix does; the
//!   last server's word is the reason. `smtp_host_lookup = native` or
//!   `disable_dns_lookups = yes`: getaddrinfo only, no MX.
//! * Connection cache ([`cache`]): an SMTP session that ended cleanly stays open, idle,
//!   under its next hop for `smtp_connection_cache_time_limit`; the next request for that
//!   next hop checks it with RSET and goes straight to MAIL FROM (logged `conn_use=N`),
//!   until `smtp_connection_reuse_time_limit` or `smtp_connection_reuse_count_limit`.
//!   qmgr sends no backlog hint, so `smtp_connection_cache_on_demand = yes` caches after
//!   every delivery; with it off, only next hops in `smtp_connection_cache_destinations`
//!   are cached. LMTP sessions are cached the same way under `lmtp_connection_cache_*`
//!   (over TCP, and over UNIX-domain sockets such as lmtp-deliver's).
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
//!   relay=host[addr]:port, conn_use=2, delay=1.2, delays=a/b/c/d, dsn=2.0.0, status=sent
//!   (250 ...)` (`conn_use` only on a reused connection).
//!   The program logs as `smtp` or `lmtp` (e.g. `rpost/lmtp[pid]`).
//!
//! * TLS (rpost-tls): `smtp_tls_security_level` / `lmtp_tls_security_level` (`smtp_use_tls`
//!   when empty). `may`: STARTTLS when offered, no certificate check; not offered or
//!   refused: plaintext; a failed handshake: the same server again without TLS, as
//!   Postfix. `encrypt`: TLS or defer (4.7.4 "TLS is required, but was not offered by host
//!   H", 4.7.5 when refused or the handshake fails). `verify`/`secure`: as encrypt, and the
//!   chain must verify against `smtp_tls_CAfile` (else /etc/ssl/certs/ca-certificates.crt)
//!   for the MX host name (the address for a literal next hop). `dane` is `may` (no DNSSEC
//!   here); `dane-only` and `fingerprint` are configuration errors. `smtp_tls_wrappermode`:
//!   TLS before the greeting. Logged as `Untrusted TLS connection established to
//!   host[addr]:25: TLSv1.3 with cipher ... (256/256 bits)` (`Verified` at verify/secure).
//!   Sessions that ran over TLS end with QUIT instead of staying in the connection cache
//!   (it holds plaintext streams only).
//!
//! Not yet: SASL authentication, DNSSEC/DANE, fallback relays.
//!
//! # SECURITY
//! Runs as `mail_owner` (unpriv column `-`/`y`), optionally chrooted to the queue directory.
//! DNS answers are untrusted too: only MX/A/AAAA data is used, names are compared in lower
//! case, an MX at one of our own addresses never gets mail. Queries go to the configured
//! servers only. Server replies are untrusted: lines are cut at [`reply::MAX_LINE`] bytes, replies at
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
//! smtp_skip_5xx_greeting, smtp_mx_address_limit, smtp_mx_session_limit,
//! smtp_host_lookup, disable_dns_lookups, dns_resolver_servers (rpost), inet_interfaces,
//! proxy_interfaces, smtp_defer_if_no_mx_address_found, smtp_connection_cache_on_demand,
//! smtp_connection_cache_destinations, smtp_connection_cache_time_limit,
//! smtp_connection_reuse_time_limit, smtp_connection_reuse_count_limit, smtp_rset_timeout,
//! smtp_bind_address, smtp_bind_address6, lmtp_bind_address, smtp_tls_security_level,
//! lmtp_tls_security_level, smtp_tls_wrappermode, smtp_use_tls, lmtp_use_tls,
//! smtp_tls_CAfile, lmtp_tls_CAfile, smtp_starttls_timeout, lmtp_starttls_timeout.
//!
//! # STANDARDS
//! RFC 5321 (SMTP; 5.1 for MX and implicit MX), RFC 7505 (null MX), RFC 1035 (DNS),
//! RFC 2033 (LMTP), RFC 3207 (STARTTLS), RFC 8314 (implicit TLS), RFC 2920 (PIPELINING), RFC 1870 (SIZE), RFC 6152
//! (8BITMIME), RFC 6531 (SMTPUTF8), RFC 3461 (DSN), RFC 2034/3463 (enhanced status codes).

pub mod cache;
pub mod deliver;
pub mod driver;
pub mod mx;
pub mod nexthop;
pub mod reply;
pub mod session;
pub mod settings;

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
//! TLS (rpost-tls, rustls): STARTTLS (RFC 3207) is offered at `smtpd_tls_security_level =
//! may|encrypt` when a certificate loads (`smtpd_tls_chain_files`, else
//! `smtpd_tls_cert_file`/`smtpd_tls_key_file`, else the self-signed
//! `$config_directory/tls/rpost.pem` that `rmaster check`/`start` create); `encrypt` answers
//! `530 5.7.0 Must issue a STARTTLS command first` to MAIL, AUTH and VRFY before it;
//! `smtpd_tls_wrappermode = yes` runs the handshake before the greeting (smtps, 465). After
//! the handshake the session forgets EHLO, transaction and login (the client must EHLO
//! again) and logs `Anonymous TLS connection established from host[addr]: TLSv1.3 with
//! cipher ... (256/256 bits)`; Received: says ESMTPS/ESMTPSA (RFC 3848) and, with
//! `smtpd_tls_received_header = yes`, `(using TLSv1.3 with cipher ...)`.
//!
//! AUTH (RFC 4954, [`sasl`]): with `smtpd_sasl_auth_enable = yes` smtpd connects to the
//! Dovecot auth client socket `smtpd_sasl_path` (relative to `queue_directory`, or absolute;
//! our authd or a real Dovecot), offers the mechanisms it lists that pass
//! `smtpd_sasl_security_options` (`smtpd_sasl_tls_security_options` after TLS), also as
//! `AUTH=` with `broken_sasl_auth_clients`, and relays the exchange: initial responses,
//! `=` for an empty one, 334 challenges, `*` cancels (501 5.7.0), 235 2.7.0 on success,
//! 535 5.7.8 on failure, 503 when already authenticated, 538 5.7.11 before TLS with
//! `smtpd_tls_auth_only`. The login appears as `client=..., sasl_method=PLAIN,
//! sasl_username=alice` in the log, as ESMTPA in Received:, and as `(Authenticated sender:
//! alice)` with `smtpd_sasl_authenticated_header`; restrictions may use
//! `permit_sasl_authenticated` and `reject_(authenticated_|known_|unauthenticated_)sender_login_mismatch`
//! with `smtpd_sender_login_maps`.
//!
//! DNS ([`dnscheck`], through rpost-dns: the servers of `dns_resolver_servers`, else
//! /etc/resolv.conf): with `smtpd_peername_lookup = yes` the client's name is its PTR name
//! when that name's A/AAAA records lead back to the address, else `unknown` (loopback
//! clients are `localhost`, RFC 6761); it appears in the log, Received: and
//! check_client_access. The restrictions `reject_unknown_client_hostname`,
//! `reject_unknown_reverse_client_hostname`, `reject_unknown_helo_hostname`,
//! `reject_unknown_sender_domain`, `reject_unknown_recipient_domain` (MX, else A/AAAA; a null
//! MX answers 556 5.1.10), `reject_rbl_client zone[=d.d.d.d]` and `reject_rhsbl_client`,
//! `_reverse_client`, `_helo`, `_sender`, `_recipient` decide with Postfix's replies and
//! codes; a temporary DNS failure answers 450 (a DNS list that fails lists nobody, as in
//! Postfix). `permit_dnswl_client` and `permit_rhswl_client` permit a listed client, but
//! never where that would let it relay. `check_policy_service unix:path|inet:host:port`
//! asks a policy server with Postfix's delegation protocol ([`policysvc`]; postgrey and
//! friends work unchanged) and takes its `action=` as an access(5) action; a server that
//! fails gives `smtpd_policy_service_default_action`. Before each command the driver runs
//! the lists in probe mode until they miss no answer, looking up each missing one, so the
//! engine stays free of I/O and a policy server is asked only where the lists reach it.
//! Not implemented yet (warned about at start-up, deciding nothing):
//! `reject_unverified_sender`, `reject_unverified_recipient`, `reject_mx_backup`.
//!
//! Layout: [`session`] is the sans-IO state machine (commands in, replies and decisions out),
//! [`server`] the tokio driver that moves bytes and queue-file writes, [`settings`] the
//! parameters, [`policy`] the restriction engine, [`dnscheck`] the DNS facts it decides on,
//! [`policysvc`] the policy service client, [`addr`] address classes.
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
//! part) never count as ours. Plaintext pipelined after STARTTLS is discarded, never read
//! as if it came over TLS (CVE-2011-0411), and the handshake has `smtpd_starttls_timeout`.
//! SASL responses must be valid base64 (at most 12288 bytes a line) before they reach the
//! auth server, so a client cannot inject protocol lines; passwords are never logged. DNS
//! answers are untrusted too: PTR names must be valid host names and count only once
//! confirmed by A/AAAA, DNS list TXT text is reduced to printable ASCII (200 characters)
//! before it is quoted, and each fact waits at most 20 s.
//!
//! # CONFIGURATION
//! myhostname, myorigin, mydestination, virtual_alias_domains, virtual_alias_maps,
//! virtual_mailbox_domains, virtual_mailbox_maps (else auth_passdb), relay_domains,
//! relay_recipient_maps, local_recipient_maps, mynetworks, recipient_delimiter,
//! smtpd_banner, smtpd_helo_required, smtpd_delay_reject, smtpd_*_restrictions,
//! smtpd_reject_unlisted_recipient, disable_vrfy_command, smtputf8_enable,
//! message_size_limit, smtpd_recipient_limit, smtpd_timeout, the error limits and the
//! reject codes (relay_domains_reject_code, access_map_reject_code,
//! unknown_client_reject_code, unknown_hostname_reject_code, unknown_address_reject_code,
//! maps_rbl_reject_code, ...); smtpd_peername_lookup, dns_resolver_servers (rpost);
//! smtpd_policy_service_timeout, smtpd_policy_service_try_limit,
//! smtpd_policy_service_default_action;
//! smtpd_tls_security_level (smtpd_use_tls, smtpd_enforce_tls), smtpd_tls_wrappermode,
//! smtpd_tls_cert_file, smtpd_tls_key_file, smtpd_tls_chain_files, smtpd_tls_auth_only,
//! smtpd_tls_received_header, smtpd_starttls_timeout, config_directory;
//! smtpd_sasl_auth_enable, smtpd_sasl_type (dovecot), smtpd_sasl_path, smtpd_sasl_service,
//! smtpd_sasl_security_options, smtpd_sasl_tls_security_options,
//! smtpd_sasl_exceptions_networks, smtpd_sasl_authenticated_header,
//! broken_sasl_auth_clients, smtpd_sender_login_maps.
//!
//! # STANDARDS
//! RFC 5321 (SMTP), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 2920 (PIPELINING), RFC 3030
//! (CHUNKING), RFC 3461 (DSN), RFC 2034/3463 (enhanced status codes), RFC 6531 (SMTPUTF8),
//! RFC 3848 (protocol names in Received:), RFC 3207 (STARTTLS), RFC 8314 (implicit TLS),
//! RFC 4954 (AUTH), RFC 4616 (PLAIN), RFC 1035 (DNS), RFC 5782 (DNS blacklists and whitelists),
//! RFC 7505 (null MX), RFC 6761 (localhost names).

/// Address classes live in rpost-address (qmgr needs them too).
pub use rpost_address as addr;
pub mod dnscheck;
pub mod policy;
pub mod policysvc;
pub mod sasl;
pub mod server;
pub mod session;
pub mod settings;

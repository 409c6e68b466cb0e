//! authd - the authentication server (Dovecot's auth service, for Postfix's and rpost's
//! smtpd, imapd and the delivery agents)
//!
//! # SUMMARY
//! master.cf:
//! ```text
//! auth         unix  -  -  n  -  1  authd           # private/auth: SASL for smtpd (Dovecot auth-client protocol)
//! auth-userdb  unix  -  -  n  -  1  authd userdb    # private/auth-userdb: user lookups (auth-master protocol)
//! ```
//! main.cf: `auth_passdb = passwd-file:/etc/rpost/users`, `auth_userdb = static:uid=vmail
//! gid=vmail home=/var/vmail/%d/%n`, `auth_mechanisms = plain login`.
//!
//! # DESCRIPTION
//! On `private/auth` authd speaks Dovecot's auth client protocol (crate rpost-auth-proto), so
//! rpost's smtpd and an unmodified Postfix with `smtpd_sasl_type = dovecot` and
//! `smtpd_sasl_path = private/auth` authenticate against it. Mechanisms (`auth_mechanisms`):
//! PLAIN, LOGIN, CRAM-MD5, which works only for users whose stored password is `{PLAIN}` or
//! `{CRAM-MD5}`, and SCRAM-SHA-256 (no channel binding; `{SCRAM-SHA-256}` or `{PLAIN}`
//! users; the server's proof is sent as a last challenge before OK). A mechanism the stored
//! password cannot serve fails, and the log says why. Started with the argument `userdb`,
//! the same program serves the auth-userdb protocol instead (`USER`, `PASS`, and `LIST` with
//! `user=` wildcards for passwd-file userdbs; other tables answer `DONE id fail`): delivery
//! agents, `rmaster auth user` and `doveadm user -a` ask it for `uid`, `gid`, `home`, `mail`.
//!
//! Passwords: `auth_passdb` is any rpost-lookup table: Dovecot's passwd-file
//! (`user:{SCHEME}hash:uid:gid::home::extra_fields`), `static:` (`password=...` or
//! `nopassword`), hash/SQL tables returning the stored password. Schemes and the bare-hash
//! default (`default_pass_scheme`, CRYPT) are rpost-password's. User names go through
//! `auth_username_format` (default `%Lu`) before the lookup and the `OK user=` reply.
//! `auth_userdb`: `static:` fields, passwd-file, `passwd` (system users), or any table giving
//! `key=value` fields; `%u %n %d %s %h` are expanded. Without it a passwd-file passdb is the
//! userdb too. Tables are opened after privileges are dropped, so what authd reads is what
//! `mail_owner` may read, at start and after the file changes alike.
//!
//! Failures: every failed attempt is answered after `auth_failure_delay` (2 s), and raises a
//! per-remote-address penalty (Dovecot's auth-penalty: 2, 4, 8, then 15 s before a new
//! request from that address is looked at; cleared by a success, forgotten after an hour;
//! IPv6 counted per /64). The waiting happens in the request's own task: other clients and
//! other requests are never held up. The first failure of an address and its 10th, 100th,
//! 1000th... are logged as warnings, each failure at info. `no-penalty` requests and
//! requests without `rip=` are not counted.
//!
//! `disable_plaintext_auth = yes` (the default): PLAIN and LOGIN are refused unless the
//! client marks the request `secured` (smtpd does after STARTTLS or on 465) or the
//! connection is local (the remote address is a loopback address or equals the local one),
//! exactly Dovecot's rule. The mechanisms are still announced: the SMTP/IMAP server decides
//! what to offer its clients.
//!
//! # SECURITY
//! authd is the only process that reads password data. It runs as `mail_owner` (master.cf
//! unpriv column), long-running (the penalty table must survive; max_use and max_idle are
//! ignored). The passdb file must be readable by `mail_owner` and by nobody else (e.g.
//! `root:postfix 0640`). No password, hash, or SASL response is ever written to the log, at
//! any level (`auth_debug_passwords` and `auth_verbose_passwords` are accepted and ignored);
//! the log names the user, the address, the mechanism and the outcome only. Peer input is
//! bounded (line length, in-flight requests, field sizes) by rpost-auth-proto and
//! [`mech::MAX_FIELD`]; password checks run on blocking threads so slow hashes cannot stall
//! the event loop; comparisons are constant-time.
//!
//! The sockets live in `private/` (0700, mail_owner): reachable by the suite's own daemons
//! and root. A site that points a separate Postfix at authd runs that Postfix with the same
//! `mail_owner` (Dovecot's equivalent is `unix_listener /var/spool/postfix/private/auth {
//! user = postfix }`), or points `smtpd_sasl_path` at the socket by absolute path.
//!
//! # CONFIGURATION
//! `auth_passdb`, `auth_userdb`, `auth_mechanisms`, `auth_username_format`,
//! `auth_failure_delay`, `default_pass_scheme`, `disable_plaintext_auth`, `myhostname`
//! (CRAM-MD5 challenge), and the rpost-daemon parameters.
//!
//! # STANDARDS
//! Dovecot auth protocol v1.2 and auth-master protocol; RFC 4422 (SASL), RFC 4616 (PLAIN),
//! draft-murchison-sasl-login (LOGIN), RFC 2195 (CRAM-MD5), RFC 5802 and RFC 7677
//! (SCRAM-SHA-256).

pub mod db;
pub mod mech;
pub mod penalty;
pub mod server;

#[cfg(test)]
mod tests;

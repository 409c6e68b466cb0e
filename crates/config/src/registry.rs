//! The one parameter registry: every parameter rpost knows, with its type,
//! its default exactly as written in Postfix's mail_params.h (or Dovecot's
//! documentation for mailbox-side settings) and a one-line description.
//!
//! Defaults are raw text: they are `$name`-expanded lazily by
//! [`crate::Params`], so `myorigin = $myhostname` follows whatever
//! `myhostname` is at lookup time.
//!
//! Where Postfix makes a default depend on `compatibility_level`, rpost
//! uses the modern value (as with `compatibility_level = 3.6`).
//!
//! Two defaults depend on the machine and are computed by `Params`:
//! `myhostname` (gethostname(), plus `.localdomain` if it has no dot) and
//! `mydomain` (`$myhostname` minus its first label). They are listed here
//! with an empty default.

use std::fmt;

/// The type a parameter value must parse as (after expansion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Free text.
    Str,
    /// yes/no (also true/false, 1/0).
    Bool,
    /// A decimal integer.
    Int,
    /// A duration; the char is the unit of a bare number: s, m, h, d or w.
    Time(char),
    /// A size in bytes (k/m/g suffixes accepted).
    Size,
    /// Items separated by commas and/or whitespace.
    List,
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Str => f.write_str("string"),
            ParamType::Bool => f.write_str("boolean"),
            ParamType::Int => f.write_str("integer"),
            ParamType::Time(unit) => write!(f, "time (default unit {unit})"),
            ParamType::Size => f.write_str("size"),
            ParamType::List => f.write_str("list"),
        }
    }
}

/// One registry entry.
#[derive(Debug)]
pub struct Param {
    /// Parameter name as used in main.cf.
    pub name: &'static str,
    /// Raw (unexpanded) default value.
    pub default: &'static str,
    /// Value type.
    pub ty: ParamType,
    /// One-line description.
    pub doc: &'static str,
}

const fn p(name: &'static str, default: &'static str, ty: ParamType, doc: &'static str) -> Param {
    Param { name, default, ty, doc }
}

/// Looks a parameter up by name.
pub fn lookup(name: &str) -> Option<&'static Param> {
    PARAMS.binary_search_by(|p| p.name.cmp(name)).ok().map(|i| &PARAMS[i])
}

/// Whether `name` is a syntactically valid parameter name ([A-Za-z0-9_]+).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_name_byte)
}

/// Bytes allowed in a parameter name.
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// All known parameters, sorted by name (byte order) for binary search.
#[rustfmt::skip]
pub static PARAMS: &[Param] = &[
    p("2bounce_notice_recipient", "postmaster", ParamType::Str, "Recipient of undeliverable double-bounce notifications"),
    p("address_verify_map", "btree:$data_directory/verify_cache", ParamType::Str, "Cache table for sender/recipient address verification results"),
    p("alias_database", "hash:/etc/aliases", ParamType::List, "Alias databases rebuilt by newaliases"),
    p("alias_maps", "hash:/etc/aliases", ParamType::List, "Alias tables used by local delivery"),
    p("allow_mail_to_commands", "alias, forward", ParamType::List, "Address sources that may deliver to |command"),
    p("allow_mail_to_files", "alias, forward", ParamType::List, "Address sources that may deliver to /file/name"),
    p("allow_percent_hack", "yes", ParamType::Bool, "Rewrite user%domain to user@domain"),
    p("always_bcc", "", ParamType::Str, "Address that receives a copy of every message"),
    p("append_dot_mydomain", "no", ParamType::Bool, "Append .$mydomain to incomplete domain names (default as compatibility_level >= 1)"),
    p("auth_cache_size", "0", ParamType::Size, "Dovecot: authentication cache size (0 disables)"),
    p("auth_cache_ttl", "1 hour", ParamType::Time('s'), "Dovecot: time to live for cached authentication results"),
    p("auth_debug", "no", ParamType::Bool, "Dovecot: log authentication debug information"),
    p("auth_debug_passwords", "no", ParamType::Bool, "Dovecot: log passwords on authentication mismatches"),
    p("auth_default_realm", "", ParamType::Str, "Dovecot: realm appended to user names that have none"),
    p("auth_failure_delay", "2 secs", ParamType::Time('s'), "Dovecot: delay before replying to a failed authentication"),
    p("auth_mechanisms", "plain", ParamType::List, "Dovecot: SASL mechanisms offered by authd"),
    p("auth_passdb", "", ParamType::Str, "rpost: password database as a lookup table, e.g. passwd-file:/etc/rpost/users.db"),
    p("auth_realms", "", ParamType::List, "Dovecot: realms offered to DIGEST-MD5 style mechanisms"),
    p("auth_socket_path", "auth-userdb", ParamType::Str, "Dovecot: userdb socket used by delivery agents"),
    p("auth_userdb", "", ParamType::Str, "rpost: user database as a lookup table, e.g. static:uid=vmail gid=vmail home=/var/vmail/%d/%n"),
    p("auth_username_format", "%Lu", ParamType::Str, "Dovecot: normalisation applied to user names before lookup"),
    p("auth_verbose", "no", ParamType::Bool, "Dovecot: log unsuccessful authentication attempts"),
    p("auth_verbose_passwords", "no", ParamType::Str, "Dovecot: log mismatched passwords (no, plain, sha1)"),
    p("authorized_flush_users", "static:anyone", ParamType::List, "Users allowed to flush the queue"),
    p("authorized_mailq_users", "static:anyone", ParamType::List, "Users allowed to list the queue"),
    p("authorized_submit_users", "static:anyone", ParamType::List, "Users allowed to submit mail with sendmail"),
    p("biff", "yes", ParamType::Bool, "Notify the local biff service on local delivery"),
    p("body_checks", "", ParamType::List, "Lookup tables matched against each message body line"),
    p("body_checks_size_limit", "51200", ParamType::Size, "Bytes of body text inspected by body_checks"),
    p("bounce_notice_recipient", "postmaster", ParamType::Str, "Recipient of postmaster copies of bounce notifications"),
    p("bounce_queue_lifetime", "5d", ParamType::Time('d'), "Maximal time a bounce message stays queued"),
    p("bounce_size_limit", "50000", ParamType::Size, "Maximal bytes of the original message returned in a bounce"),
    p("bounce_template_file", "", ParamType::Str, "File with bounce message templates"),
    p("broken_sasl_auth_clients", "no", ParamType::Bool, "Also announce AUTH in the non-standard AUTH= form"),
    p("canonical_classes", "envelope_sender, envelope_recipient, header_sender, header_recipient", ParamType::List, "Address classes subject to canonical_maps"),
    p("canonical_maps", "", ParamType::List, "Address mapping tables for header and envelope addresses"),
    p("command_directory", "/usr/sbin", ParamType::Str, "Location of administrative commands"),
    p("compatibility_level", "3.6", ParamType::Str, "Backwards compatibility level (rpost applies the modern defaults)"),
    p("config_directory", "/etc/rpost", ParamType::Str, "Directory holding main.cf and master.cf"),
    p("content_filter", "", ParamType::Str, "Transport:nexthop to which all mail is sent for content filtering"),
    p("daemon_directory", "/usr/lib/rpost", ParamType::Str, "Location of the rpost daemon programs"),
    p("daemon_timeout", "18000s", ParamType::Time('s'), "How long a daemon may take to handle a request"),
    p("data_directory", "/var/lib/rpost", ParamType::Str, "Directory for caches and other writable data"),
    p("debug_peer_level", "2", ParamType::Int, "Verbose logging increment for debug_peer_list hosts"),
    p("debug_peer_list", "", ParamType::List, "Hosts for which logging is made more verbose"),
    p("default_destination_concurrency_limit", "20", ParamType::Int, "Default maximal parallel deliveries to one destination"),
    p("default_destination_rate_delay", "0s", ParamType::Time('s'), "Default delay between deliveries to one destination"),
    p("default_destination_recipient_limit", "50", ParamType::Int, "Default maximal recipients per delivery"),
    p("default_internal_user", "rpost", ParamType::Str, "Dovecot: unprivileged user for internal processes"),
    p("default_pass_scheme", "CRYPT", ParamType::Str, "Dovecot: password scheme assumed when a hash has no {SCHEME} prefix"),
    p("default_privs", "nobody", ParamType::Str, "Rights used by local delivery to external files and commands"),
    p("default_process_limit", "100", ParamType::Int, "Default maximal number of processes per master.cf service"),
    p("default_recipient_limit", "20000", ParamType::Int, "Default maximal in-memory recipients per transport"),
    p("default_transport", "smtp", ParamType::Str, "Transport for destinations not matched otherwise"),
    p("delay_notice_recipient", "postmaster", ParamType::Str, "Recipient of postmaster copies of delay notifications"),
    p("delay_warning_time", "0h", ParamType::Time('h'), "Time after which a delay warning is sent (0 disables)"),
    p("disable_plaintext_auth", "yes", ParamType::Bool, "Dovecot: refuse plaintext authentication without TLS"),
    p("disable_vrfy_command", "no", ParamType::Bool, "Disable the SMTP VRFY command"),
    p("empty_address_recipient", "MAILER-DAEMON", ParamType::Str, "Recipient of mail addressed to the null address"),
    p("enable_long_queue_ids", "no", ParamType::Bool, "Use long, non-repeating queue IDs"),
    p("error_notice_recipient", "postmaster", ParamType::Str, "Recipient of postmaster notices about software and resource problems"),
    p("export_environment", "TZ MAIL_CONFIG LANG", ParamType::List, "Environment variables passed to external commands"),
    p("fallback_relay", "", ParamType::List, "Legacy name of smtp_fallback_relay"),
    p("fallback_transport", "", ParamType::Str, "Transport for local recipients not found in the local user database"),
    p("first_valid_gid", "1", ParamType::Int, "Dovecot: lowest GID allowed for mail users"),
    p("first_valid_uid", "500", ParamType::Int, "Dovecot: lowest UID allowed for mail users"),
    p("header_checks", "", ParamType::List, "Lookup tables matched against each primary message header"),
    p("header_size_limit", "102400", ParamType::Size, "Maximal bytes of one message header"),
    p("home_mailbox", "", ParamType::Str, "Mailbox path relative to the home directory for local delivery"),
    p("hopcount_limit", "50", ParamType::Int, "Maximal number of Received: headers before a message bounces"),
    p("hostname", "$myhostname", ParamType::Str, "Dovecot: host name used in LMTP replies and Sieve messages"),
    p("html_directory", "no", ParamType::Str, "Location of the HTML documentation"),
    p("imap_capability", "", ParamType::Str, "Dovecot: override the IMAP CAPABILITY list"),
    p("imap_client_workarounds", "", ParamType::List, "Dovecot: workarounds for IMAP client bugs"),
    p("imap_fetch_failure", "disconnect-immediately", ParamType::Str, "Dovecot: behaviour when a FETCH cannot read a message"),
    p("imap_hibernate_timeout", "0", ParamType::Time('s'), "Dovecot: idle time before an IDLE connection is hibernated (0 disables)"),
    p("imap_id_log", "", ParamType::Str, "Dovecot: IMAP ID fields to log"),
    p("imap_id_send", "name *", ParamType::Str, "Dovecot: IMAP ID fields sent to clients"),
    p("imap_idle_notify_interval", "2 mins", ParamType::Time('s'), "Dovecot: interval between IDLE keepalive notifications"),
    p("imap_literal_minus", "no", ParamType::Bool, "Dovecot: advertise LITERAL- instead of LITERAL+"),
    p("imap_logout_format", "in=%i out=%o deleted=%{deleted} expunged=%{expunged} trashed=%{trashed} hdr_count=%{fetch_hdr_count} hdr_bytes=%{fetch_hdr_bytes} body_count=%{fetch_body_count} body_bytes=%{fetch_body_bytes}", ParamType::Str, "Dovecot: format of the IMAP logout log line"),
    p("imap_max_line_length", "64k", ParamType::Size, "Dovecot: maximal IMAP command line length"),
    p("import_environment", "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME", ParamType::List, "Environment variables inherited from the parent process"),
    p("in_flow_delay", "1s", ParamType::Time('s'), "Delay per message when submission outpaces delivery"),
    p("inet_interfaces", "all", ParamType::List, "Network addresses on which inet services listen"),
    p("inet_protocols", "all", ParamType::List, "IP protocol versions used (ipv4, ipv6, all)"),
    p("initial_destination_concurrency", "5", ParamType::Int, "Initial parallel deliveries to one destination"),
    p("ipc_timeout", "3600s", ParamType::Time('s'), "Time limit for internal communication requests"),
    p("last_valid_gid", "0", ParamType::Int, "Dovecot: highest GID allowed for mail users (0 = no limit)"),
    p("last_valid_uid", "0", ParamType::Int, "Dovecot: highest UID allowed for mail users (0 = no limit)"),
    p("lda_mailbox_autocreate", "no", ParamType::Bool, "Dovecot: create a missing target mailbox on delivery"),
    p("lda_mailbox_autosubscribe", "no", ParamType::Bool, "Dovecot: subscribe to mailboxes created on delivery"),
    p("lda_original_recipient_header", "", ParamType::Str, "Dovecot: header holding the original recipient address"),
    p("line_length_limit", "2048", ParamType::Int, "Maximal length of one input line before it is split"),
    p("listen", "*, ::", ParamType::List, "Dovecot: addresses the IMAP/POP3/LMTP listeners bind to"),
    p("lmtp_bind_address", "", ParamType::Str, "Source IPv4 address for LMTP client connections"),
    p("lmtp_connect_timeout", "0s", ParamType::Time('s'), "LMTP client timeout for completing a connection"),
    p("lmtp_connection_cache_time_limit", "2s", ParamType::Time('s'), "How long an idle LMTP client connection is cached"),
    p("lmtp_data_done_timeout", "600s", ParamType::Time('s'), "LMTP client timeout for the reply to end of data"),
    p("lmtp_data_init_timeout", "120s", ParamType::Time('s'), "LMTP client timeout for the reply to DATA"),
    p("lmtp_data_xfer_timeout", "180s", ParamType::Time('s'), "LMTP client timeout while sending message content"),
    p("lmtp_header_checks", "", ParamType::List, "Header checks applied by the LMTP client"),
    p("lmtp_host_lookup", "dns", ParamType::List, "How the LMTP client looks up host addresses"),
    p("lmtp_lhlo_name", "$myhostname", ParamType::Str, "Host name sent in the LMTP LHLO command"),
    p("lmtp_lhlo_timeout", "300s", ParamType::Time('s'), "LMTP client timeout for the LHLO reply"),
    p("lmtp_mail_timeout", "300s", ParamType::Time('s'), "LMTP client timeout for the MAIL FROM reply"),
    p("lmtp_quit_timeout", "300s", ParamType::Time('s'), "LMTP client timeout for the QUIT reply"),
    p("lmtp_rcpt_check_quota", "no", ParamType::Bool, "Dovecot: check quota at RCPT TO time"),
    p("lmtp_rcpt_timeout", "300s", ParamType::Time('s'), "LMTP client timeout for the RCPT TO reply"),
    p("lmtp_rset_timeout", "20s", ParamType::Time('s'), "LMTP client timeout for the RSET reply"),
    p("lmtp_sasl_auth_enable", "no", ParamType::Bool, "Enable SASL authentication in the LMTP client"),
    p("lmtp_sasl_password_maps", "", ParamType::List, "LMTP client credentials per destination"),
    p("lmtp_sasl_security_options", "noplaintext, noanonymous", ParamType::List, "SASL mechanism restrictions for the LMTP client"),
    p("lmtp_save_to_detail_mailbox", "no", ParamType::Bool, "Dovecot: deliver user+detail to mailbox \"detail\""),
    p("lmtp_starttls_timeout", "300s", ParamType::Time('s'), "LMTP client timeout for the TLS handshake"),
    p("lmtp_tcp_port", "24", ParamType::Str, "Default TCP port for LMTP connections"),
    p("lmtp_tls_CAfile", "", ParamType::Str, "CA certificates used by the LMTP client"),
    p("lmtp_tls_cert_file", "", ParamType::Str, "LMTP client certificate"),
    p("lmtp_tls_key_file", "$lmtp_tls_cert_file", ParamType::Str, "LMTP client private key"),
    p("lmtp_tls_loglevel", "0", ParamType::Int, "LMTP client TLS logging level"),
    p("lmtp_tls_mandatory_protocols", ">=TLSv1", ParamType::List, "TLS protocols used by the LMTP client when TLS is mandatory"),
    p("lmtp_tls_protocols", ">=TLSv1", ParamType::List, "TLS protocols used by the LMTP client"),
    p("lmtp_tls_security_level", "", ParamType::Str, "LMTP client TLS policy (none, may, encrypt, verify, secure)"),
    p("lmtp_use_tls", "no", ParamType::Bool, "Legacy: opportunistic TLS in the LMTP client"),
    p("local_recipient_maps", "proxy:unix:passwd.byname $alias_maps", ParamType::List, "Tables of valid local recipients; empty disables the check"),
    p("local_transport", "local:$myhostname", ParamType::Str, "Transport for domains listed in mydestination"),
    p("login_greeting", "$mail_name ready.", ParamType::Str, "Dovecot: greeting sent by the IMAP and POP3 servers"),
    p("login_trusted_networks", "", ParamType::List, "Dovecot: networks allowed to override client IP and session data"),
    p("luser_relay", "", ParamType::Str, "Destination for unknown local recipients"),
    p("mail_access_groups", "", ParamType::List, "Dovecot: supplementary groups granted to mail processes"),
    p("mail_debug", "no", ParamType::Bool, "Dovecot: log mailbox lookup and delivery debug information"),
    p("mail_fsync", "optimized", ParamType::Str, "Dovecot: when to fsync mail files (optimized, always, never)"),
    p("mail_gid", "", ParamType::Str, "Dovecot: group that owns virtual mailboxes"),
    p("mail_home", "", ParamType::Str, "Dovecot: home directory template of a mail user"),
    p("mail_location", "", ParamType::Str, "Dovecot: mailbox location, e.g. maildir:~/Maildir"),
    p("mail_max_userip_connections", "10", ParamType::Int, "Dovecot: maximal IMAP connections per user and IP address"),
    p("mail_name", "rpost", ParamType::Str, "Mail system name used in banners and headers"),
    p("mail_owner", "rpost", ParamType::Str, "Unprivileged user that owns the queue and runs the daemons"),
    p("mail_plugins", "", ParamType::List, "Dovecot: plugins loaded for all mail protocols"),
    p("mail_privileged_group", "", ParamType::Str, "Dovecot: group granted temporarily for creating dotlocks in mail spools"),
    p("mail_spool_directory", "/var/mail", ParamType::Str, "Directory holding UNIX-style mailboxes"),
    p("mail_temp_dir", "/tmp", ParamType::Str, "Dovecot: directory for temporary mail files"),
    p("mail_uid", "", ParamType::Str, "Dovecot: user that owns virtual mailboxes"),
    p("mail_version", env!("CARGO_PKG_VERSION"), ParamType::Str, "Version of the mail system"),
    p("mailbox_command", "", ParamType::Str, "External command used for local delivery"),
    p("mailbox_command_maps", "", ParamType::List, "Per-user external delivery commands"),
    p("mailbox_size_limit", "51200000", ParamType::Size, "Maximal size of a mailbox or maildir file (0 = no limit)"),
    p("mailbox_transport", "", ParamType::Str, "Transport for all local mailbox delivery"),
    p("maildir_very_dirty_syncs", "no", ParamType::Bool, "Dovecot: assume only Dovecot changes cur/ directories"),
    p("maillog_file", "", ParamType::Str, "File to log to instead of syslog/journald (empty = default)"),
    p("mailq_path", "/usr/bin/mailq", ParamType::Str, "Location of the mailq command"),
    p("manpage_directory", "/usr/share/man", ParamType::Str, "Location of the manual pages"),
    p("masquerade_classes", "envelope_sender, header_sender, header_recipient", ParamType::List, "Address classes subject to masquerading"),
    p("masquerade_domains", "", ParamType::List, "Domains whose subdomains are stripped from addresses"),
    p("masquerade_exceptions", "", ParamType::List, "Users not subject to address masquerading"),
    p("master_stop_timeout", "10s", ParamType::Time('s'), "rpost: how long rmaster stop waits for children before SIGKILL"),
    p("max_idle", "100s", ParamType::Time('s'), "Time an idle daemon waits for the next request before exiting"),
    p("max_use", "100", ParamType::Int, "Requests a daemon handles before exiting"),
    p("maximal_backoff_time", "4000s", ParamType::Time('s'), "Maximal time between attempts to deliver a deferred message"),
    p("maximal_queue_lifetime", "5d", ParamType::Time('d'), "Time a message stays queued before it bounces"),
    p("message_reject_characters", "", ParamType::Str, "Characters that cause a message to be rejected"),
    p("message_size_limit", "10240000", ParamType::Size, "Maximal size of a message in bytes"),
    p("milter_command_timeout", "30s", ParamType::Time('s'), "Time limit for a Milter command reply"),
    p("milter_connect_timeout", "30s", ParamType::Time('s'), "Time limit for connecting to a Milter"),
    p("milter_content_timeout", "300s", ParamType::Time('s'), "Time limit for sending message content to a Milter"),
    p("milter_default_action", "tempfail", ParamType::Str, "Action when a Milter is unavailable (accept, reject, tempfail, quarantine)"),
    p("milter_macro_daemon_name", "$myhostname", ParamType::Str, "Value of the Milter {daemon_name} macro"),
    p("milter_protocol", "6", ParamType::Str, "Milter protocol version"),
    p("minimal_backoff_time", "300s", ParamType::Time('s'), "Minimal time between attempts to deliver a deferred message"),
    p("multi_instance_name", "", ParamType::Str, "Optional instance name (accepted for Postfix compatibility)"),
    p("mydestination", "$myhostname, localhost.$mydomain, localhost", ParamType::List, "Domains delivered locally by local_transport"),
    p("mydomain", "", ParamType::Str, "Internet domain of this host (default: $myhostname minus its first label)"),
    p("myhostname", "", ParamType::Str, "Fully qualified host name (default: gethostname(), plus .localdomain if it has no dot)"),
    p("mynetworks", "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128", ParamType::List, "Trusted client networks"),
    p("mynetworks_style", "host", ParamType::Str, "How mynetworks is derived when not set (host, subnet, class)"),
    p("myorigin", "$myhostname", ParamType::Str, "Domain appended to locally posted mail"),
    p("nested_header_checks", "$header_checks", ParamType::List, "Header checks for attached message headers"),
    p("newaliases_path", "/usr/bin/newaliases", ParamType::Str, "Location of the newaliases command"),
    p("non_smtpd_milters", "", ParamType::List, "Milters applied to mail not received by smtpd"),
    p("notify_classes", "resource, software", ParamType::List, "Problem classes reported to the postmaster"),
    p("owner_request_special", "yes", ParamType::Bool, "Give owner-list and list-request addresses special treatment"),
    p("pop3_client_workarounds", "", ParamType::List, "Dovecot: workarounds for POP3 client bugs"),
    p("pop3_deleted_flag", "", ParamType::Str, "Dovecot: flag set on messages deleted by POP3 instead of expunging"),
    p("pop3_fast_size_lookups", "no", ParamType::Bool, "Dovecot: trust cached physical sizes for POP3 LIST"),
    p("pop3_lock_session", "no", ParamType::Bool, "Dovecot: allow only one POP3 session per user at a time"),
    p("pop3_logout_format", "top=%t/%p, retr=%r/%b, del=%d/%m, size=%s", ParamType::Str, "Dovecot: format of the POP3 logout log line"),
    p("pop3_no_flag_updates", "no", ParamType::Bool, "Dovecot: do not mark messages seen when retrieved with POP3"),
    p("pop3_uidl_format", "%08Xu%08Xv", ParamType::Str, "Dovecot: format of POP3 UIDLs"),
    p("postmaster_address", "postmaster@%d", ParamType::Str, "Dovecot: From address of rejects and bounces sent by lmtp-deliver"),
    p("process_id_directory", "pid", ParamType::Str, "Queue subdirectory holding process ID files"),
    p("process_name", "", ParamType::Str, "Name of the running program (set at run time)"),
    p("propagate_unmatched_extensions", "canonical, virtual", ParamType::List, "Lookup classes that propagate address extensions"),
    p("protocols", "imap pop3 lmtp", ParamType::List, "Dovecot: protocols served on the mailbox side"),
    p("proxy_interfaces", "", ParamType::List, "Addresses through which this host receives mail via a proxy or NAT"),
    p("qmgr_message_active_limit", "20000", ParamType::Int, "Maximal number of messages in the active queue"),
    p("queue_directory", "/var/spool/rpost", ParamType::Str, "Location of the mail queue"),
    p("queue_minfree", "0", ParamType::Size, "Free space in bytes required in the queue file system (0 = no check)"),
    p("queue_run_delay", "300s", ParamType::Time('s'), "Interval between scans of the deferred queue"),
    p("readme_directory", "no", ParamType::Str, "Location of the README files"),
    p("recipient_bcc_maps", "", ParamType::List, "Per-recipient BCC address tables"),
    p("recipient_canonical_classes", "envelope_recipient, header_recipient", ParamType::List, "Address classes subject to recipient_canonical_maps"),
    p("recipient_canonical_maps", "", ParamType::List, "Recipient address mapping tables"),
    p("recipient_delimiter", "", ParamType::Str, "Separator between user name and address extension (user+foo)"),
    p("relay_clientcerts", "", ParamType::List, "Client certificate fingerprints allowed to relay"),
    p("relay_domains", "", ParamType::List, "Domains this host relays mail to (default as compatibility_level >= 2)"),
    p("relay_domains_reject_code", "554", ParamType::Int, "SMTP reply code for unauthorised relay attempts"),
    p("relay_recipient_maps", "", ParamType::List, "Tables of valid recipients in relay_domains"),
    p("relay_transport", "relay", ParamType::Str, "Transport for domains listed in relay_domains"),
    p("relayhost", "", ParamType::Str, "Next-hop host for non-local mail (empty = direct delivery)"),
    p("relocated_maps", "", ParamType::List, "Tables of users who have moved"),
    p("resolve_numeric_domain", "no", ParamType::Bool, "Resolve user@ipaddress as a domain"),
    p("sample_directory", "/etc/rpost", ParamType::Str, "Location of the sample configuration files"),
    p("sender_bcc_maps", "", ParamType::List, "Per-sender BCC address tables"),
    p("sender_canonical_classes", "envelope_sender, header_sender", ParamType::List, "Address classes subject to sender_canonical_maps"),
    p("sender_canonical_maps", "", ParamType::List, "Sender address mapping tables"),
    p("sender_dependent_relayhost_maps", "", ParamType::List, "Per-sender relayhost tables"),
    p("sendmail_path", "/usr/sbin/sendmail", ParamType::Str, "Location of the sendmail command"),
    p("service_name", "", ParamType::Str, "Name of the master.cf service a daemon runs as (set by rmaster)"),
    p("service_throttle_time", "60s", ParamType::Time('s'), "Time a crashing service is throttled before it is restarted"),
    p("setgid_group", "postdrop", ParamType::Str, "Group that owns the sendmail submission helper and public directory"),
    p("show_user_unknown_table_name", "yes", ParamType::Bool, "Name the table in \"User unknown\" replies"),
    p("sieve", "file:~/sieve;active=~/.dovecot.sieve", ParamType::Str, "Dovecot: location of the user's Sieve scripts"),
    p("sieve_default", "", ParamType::Str, "Dovecot: Sieve script used when a user has none"),
    p("sieve_max_actions", "32", ParamType::Int, "Dovecot: maximal Sieve actions per message"),
    p("sieve_max_redirects", "4", ParamType::Int, "Dovecot: maximal Sieve redirects per message"),
    p("sieve_max_script_size", "1M", ParamType::Size, "Dovecot: maximal size of a Sieve script"),
    p("smtp_always_send_ehlo", "yes", ParamType::Bool, "SMTP client always sends EHLO"),
    p("smtp_bind_address", "", ParamType::Str, "Source IPv4 address for SMTP client connections"),
    p("smtp_bind_address6", "", ParamType::Str, "Source IPv6 address for SMTP client connections"),
    p("smtp_body_checks", "", ParamType::List, "Body checks applied by the SMTP client"),
    p("smtp_connect_timeout", "30s", ParamType::Time('s'), "SMTP client timeout for completing a connection"),
    p("smtp_connection_cache_destinations", "", ParamType::List, "Destinations whose SMTP connections are cached"),
    p("smtp_connection_cache_on_demand", "yes", ParamType::Bool, "Cache SMTP connections to congested destinations"),
    p("smtp_connection_cache_time_limit", "2s", ParamType::Time('s'), "How long an idle SMTP client connection is cached"),
    p("smtp_data_done_timeout", "600s", ParamType::Time('s'), "SMTP client timeout for the reply to end of data"),
    p("smtp_data_init_timeout", "120s", ParamType::Time('s'), "SMTP client timeout for the reply to DATA"),
    p("smtp_data_xfer_timeout", "180s", ParamType::Time('s'), "SMTP client timeout while sending message content"),
    p("smtp_defer_if_no_mx_address_found", "no", ParamType::Bool, "Defer instead of trying the A record when MX hosts have no address"),
    p("smtp_dns_support_level", "", ParamType::Str, "SMTP client DNS features (disabled, enabled, dnssec)"),
    p("smtp_fallback_relay", "$fallback_relay", ParamType::List, "Relays tried when the primary destination is unreachable"),
    p("smtp_generic_maps", "", ParamType::List, "Address mapping tables applied by the SMTP client"),
    p("smtp_header_checks", "", ParamType::List, "Header checks applied by the SMTP client"),
    p("smtp_helo_name", "$myhostname", ParamType::Str, "Host name sent in the SMTP EHLO/HELO command"),
    p("smtp_helo_timeout", "300s", ParamType::Time('s'), "SMTP client timeout for the greeting and EHLO reply"),
    p("smtp_host_lookup", "dns", ParamType::List, "How the SMTP client looks up host addresses (dns, native)"),
    p("smtp_line_length_limit", "998", ParamType::Int, "Maximal line length the SMTP client sends before folding"),
    p("smtp_mail_timeout", "300s", ParamType::Time('s'), "SMTP client timeout for the MAIL FROM reply"),
    p("smtp_mx_address_limit", "5", ParamType::Int, "Maximal MX addresses tried per delivery"),
    p("smtp_mx_session_limit", "2", ParamType::Int, "Maximal SMTP sessions per delivery"),
    p("smtp_quit_timeout", "300s", ParamType::Time('s'), "SMTP client timeout for the QUIT reply"),
    p("smtp_rcpt_timeout", "300s", ParamType::Time('s'), "SMTP client timeout for the RCPT TO reply"),
    p("smtp_rset_timeout", "20s", ParamType::Time('s'), "SMTP client timeout for the RSET reply"),
    p("smtp_sasl_auth_enable", "no", ParamType::Bool, "Enable SASL authentication in the SMTP client"),
    p("smtp_sasl_mechanism_filter", "", ParamType::List, "SASL mechanisms the SMTP client may use"),
    p("smtp_sasl_password_maps", "", ParamType::List, "SMTP client credentials per destination"),
    p("smtp_sasl_path", "", ParamType::Str, "SASL plug-in path for the SMTP client"),
    p("smtp_sasl_security_options", "noplaintext, noanonymous", ParamType::List, "SASL mechanism restrictions for the SMTP client"),
    p("smtp_sasl_tls_security_options", "$smtp_sasl_security_options", ParamType::List, "SASL mechanism restrictions for the SMTP client over TLS"),
    p("smtp_sasl_type", "cyrus", ParamType::Str, "SASL implementation used by the SMTP client"),
    p("smtp_skip_5xx_greeting", "yes", ParamType::Bool, "Try the next MX host after a 5xx greeting"),
    p("smtp_starttls_timeout", "300s", ParamType::Time('s'), "SMTP client timeout for the TLS handshake"),
    p("smtp_tcp_port", "smtp", ParamType::Str, "Default TCP port for SMTP client connections"),
    p("smtp_tls_CAfile", "", ParamType::Str, "CA certificates used by the SMTP client"),
    p("smtp_tls_CApath", "", ParamType::Str, "Directory of CA certificates used by the SMTP client"),
    p("smtp_tls_cert_file", "", ParamType::Str, "SMTP client certificate"),
    p("smtp_tls_chain_files", "", ParamType::List, "SMTP client key and certificate chain files"),
    p("smtp_tls_ciphers", "medium", ParamType::Str, "Minimum cipher grade for opportunistic SMTP client TLS"),
    p("smtp_tls_exclude_ciphers", "", ParamType::List, "Ciphers excluded from SMTP client TLS"),
    p("smtp_tls_key_file", "$smtp_tls_cert_file", ParamType::Str, "SMTP client private key"),
    p("smtp_tls_loglevel", "0", ParamType::Int, "SMTP client TLS logging level"),
    p("smtp_tls_mandatory_ciphers", "medium", ParamType::Str, "Minimum cipher grade for mandatory SMTP client TLS"),
    p("smtp_tls_mandatory_protocols", ">=TLSv1", ParamType::List, "TLS protocols used by the SMTP client when TLS is mandatory"),
    p("smtp_tls_note_starttls_offer", "no", ParamType::Bool, "Log hosts that offer STARTTLS while TLS was not used"),
    p("smtp_tls_policy_maps", "", ParamType::List, "Per-destination SMTP client TLS policy tables"),
    p("smtp_tls_protocols", ">=TLSv1", ParamType::List, "TLS protocols used by the SMTP client"),
    p("smtp_tls_security_level", "", ParamType::Str, "SMTP client TLS policy (none, may, encrypt, dane, verify, secure)"),
    p("smtp_tls_session_cache_database", "", ParamType::Str, "SMTP client TLS session cache"),
    p("smtp_tls_session_cache_timeout", "3600s", ParamType::Time('s'), "Lifetime of cached SMTP client TLS sessions"),
    p("smtp_tls_wrappermode", "no", ParamType::Bool, "SMTP client uses implicit TLS (port 465)"),
    p("smtp_use_tls", "no", ParamType::Bool, "Legacy: opportunistic TLS in the SMTP client"),
    p("smtpd_authorized_xclient_hosts", "", ParamType::List, "Clients allowed to use XCLIENT"),
    p("smtpd_authorized_xforward_hosts", "", ParamType::List, "Clients allowed to use XFORWARD"),
    p("smtpd_banner", "$myhostname ESMTP $mail_name", ParamType::Str, "Text after 220 in the SMTP greeting"),
    p("smtpd_client_auth_rate_limit", "0", ParamType::Int, "Maximal AUTH commands per client per time unit"),
    p("smtpd_client_connection_count_limit", "50", ParamType::Int, "Maximal simultaneous connections per client"),
    p("smtpd_client_connection_rate_limit", "0", ParamType::Int, "Maximal connection attempts per client per time unit"),
    p("smtpd_client_event_limit_exceptions", "$mynetworks", ParamType::List, "Clients exempt from connection and rate limits"),
    p("smtpd_client_message_rate_limit", "0", ParamType::Int, "Maximal messages per client per time unit"),
    p("smtpd_client_port_logging", "no", ParamType::Bool, "Log the client port number"),
    p("smtpd_client_recipient_rate_limit", "0", ParamType::Int, "Maximal recipients per client per time unit"),
    p("smtpd_client_restrictions", "", ParamType::List, "Access restrictions applied at connect time"),
    p("smtpd_command_filter", "", ParamType::Str, "Table that rewrites SMTP commands from clients"),
    p("smtpd_data_restrictions", "", ParamType::List, "Access restrictions applied to DATA"),
    p("smtpd_delay_reject", "yes", ParamType::Bool, "Delay client/helo/sender restrictions until RCPT TO"),
    p("smtpd_discard_ehlo_keyword_address_maps", "", ParamType::List, "Per-client EHLO keywords not to announce"),
    p("smtpd_discard_ehlo_keywords", "", ParamType::List, "EHLO keywords not to announce"),
    p("smtpd_end_of_data_restrictions", "", ParamType::List, "Access restrictions applied after end of data"),
    p("smtpd_error_sleep_time", "1s", ParamType::Time('s'), "Delay before replying after an error"),
    p("smtpd_etrn_restrictions", "", ParamType::List, "Access restrictions applied to ETRN"),
    p("smtpd_forbid_bare_newline", "no", ParamType::Str, "Reject or fix bare LF line endings (no, normalize, reject)"),
    p("smtpd_forbid_unauth_pipelining", "no", ParamType::Bool, "Disconnect clients that pipeline before it is allowed"),
    p("smtpd_forbidden_commands", "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}", ParamType::List, "Commands that cause an immediate disconnect"),
    p("smtpd_hard_error_limit", "${stress?{1}:{20}}", ParamType::Int, "Errors after which the session is ended"),
    p("smtpd_helo_required", "no", ParamType::Bool, "Require HELO or EHLO before MAIL FROM"),
    p("smtpd_helo_restrictions", "", ParamType::List, "Access restrictions applied to HELO/EHLO"),
    p("smtpd_junk_command_limit", "${stress?{1}:{100}}", ParamType::Int, "Maximal NOOP/RSET/VRFY/ETRN commands without delivery"),
    p("smtpd_milters", "", ParamType::List, "Milters applied to mail received by smtpd"),
    p("smtpd_min_data_rate", "500", ParamType::Int, "Minimal DATA transfer rate in bytes per second"),
    p("smtpd_noop_commands", "", ParamType::List, "Commands treated as NOOP"),
    p("smtpd_peername_lookup", "yes", ParamType::Bool, "Look up the client host name"),
    p("smtpd_per_request_deadline", "${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}", ParamType::Bool, "Apply smtpd_timeout per request instead of per read/write"),
    p("smtpd_policy_service_timeout", "100s", ParamType::Time('s'), "Time limit for a policy service reply"),
    p("smtpd_proxy_ehlo", "$myhostname", ParamType::Str, "EHLO name sent to the before-queue content filter"),
    p("smtpd_proxy_filter", "", ParamType::Str, "Before-queue content filter host:port"),
    p("smtpd_proxy_options", "", ParamType::List, "Options for the before-queue content filter"),
    p("smtpd_proxy_timeout", "100s", ParamType::Time('s'), "Time limit for the before-queue content filter"),
    p("smtpd_recipient_limit", "1000", ParamType::Int, "Maximal recipients per message"),
    p("smtpd_recipient_overshoot_limit", "1000", ParamType::Int, "Recipients over the limit that count as errors"),
    p("smtpd_recipient_restrictions", "", ParamType::List, "Access restrictions applied to RCPT TO (spam blocking)"),
    p("smtpd_reject_footer", "", ParamType::Str, "Text appended to 4xx/5xx replies"),
    p("smtpd_reject_unlisted_recipient", "yes", ParamType::Bool, "Reject recipients not listed in a valid-recipient table"),
    p("smtpd_reject_unlisted_sender", "no", ParamType::Bool, "Reject senders not listed in a valid-recipient table"),
    p("smtpd_relay_before_recipient_restrictions", "yes", ParamType::Bool, "Evaluate relay restrictions before recipient restrictions"),
    p("smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination", ParamType::List, "Access restrictions applied to RCPT TO (relay control)"),
    p("smtpd_restriction_classes", "", ParamType::List, "Named restriction groups"),
    p("smtpd_sasl_auth_enable", "no", ParamType::Bool, "Offer SASL authentication (AUTH) in smtpd"),
    p("smtpd_sasl_authenticated_header", "no", ParamType::Bool, "Record the SASL user name in the Received: header"),
    p("smtpd_sasl_exceptions_networks", "", ParamType::List, "Clients to which AUTH is not offered"),
    p("smtpd_sasl_local_domain", "", ParamType::Str, "Realm for SASL user names"),
    p("smtpd_sasl_mechanism_filter", "!external, static:rest", ParamType::List, "SASL mechanisms smtpd offers"),
    p("smtpd_sasl_path", "private/auth", ParamType::Str, "SASL server socket path, relative to queue_directory (Postfix default: smtpd; rpost speaks the Dovecot protocol to authd)"),
    p("smtpd_sasl_security_options", "noanonymous", ParamType::List, "SASL mechanism restrictions for smtpd"),
    p("smtpd_sasl_service", "smtp", ParamType::Str, "SASL service name"),
    p("smtpd_sasl_tls_security_options", "$smtpd_sasl_security_options", ParamType::List, "SASL mechanism restrictions for smtpd over TLS"),
    p("smtpd_sasl_type", "dovecot", ParamType::Str, "SASL implementation used by smtpd (rpost: dovecot only; Postfix default: cyrus)"),
    p("smtpd_sender_login_maps", "", ParamType::List, "Tables mapping sender addresses to SASL logins"),
    p("smtpd_sender_restrictions", "", ParamType::List, "Access restrictions applied to MAIL FROM"),
    p("smtpd_soft_error_limit", "10", ParamType::Int, "Errors after which error replies are delayed"),
    p("smtpd_starttls_timeout", "${stress?{10}:{300}}s", ParamType::Time('s'), "Time limit for the smtpd TLS handshake"),
    p("smtpd_timeout", "${stress?{10}:{300}}s", ParamType::Time('s'), "Time limit for a client request"),
    p("smtpd_tls_CAfile", "", ParamType::Str, "CA certificates used by smtpd to verify clients"),
    p("smtpd_tls_CApath", "", ParamType::Str, "Directory of CA certificates used by smtpd"),
    p("smtpd_tls_ask_ccert", "no", ParamType::Bool, "Ask clients for a certificate"),
    p("smtpd_tls_auth_only", "no", ParamType::Bool, "Offer AUTH only after STARTTLS"),
    p("smtpd_tls_cert_file", "", ParamType::Str, "smtpd certificate file (PEM)"),
    p("smtpd_tls_chain_files", "", ParamType::List, "smtpd key and certificate chain files"),
    p("smtpd_tls_ciphers", "medium", ParamType::Str, "Minimum cipher grade for opportunistic smtpd TLS"),
    p("smtpd_tls_dh1024_param_file", "", ParamType::Str, "File with DH parameters for smtpd"),
    p("smtpd_tls_exclude_ciphers", "", ParamType::List, "Ciphers excluded from smtpd TLS"),
    p("smtpd_tls_key_file", "$smtpd_tls_cert_file", ParamType::Str, "smtpd private key file (PEM)"),
    p("smtpd_tls_loglevel", "0", ParamType::Int, "smtpd TLS logging level"),
    p("smtpd_tls_mandatory_ciphers", "medium", ParamType::Str, "Minimum cipher grade for mandatory smtpd TLS"),
    p("smtpd_tls_mandatory_exclude_ciphers", "", ParamType::List, "Ciphers excluded from mandatory smtpd TLS"),
    p("smtpd_tls_mandatory_protocols", ">=TLSv1", ParamType::List, "TLS protocols accepted by smtpd when TLS is mandatory"),
    p("smtpd_tls_protocols", ">=TLSv1", ParamType::List, "TLS protocols accepted by smtpd"),
    p("smtpd_tls_received_header", "no", ParamType::Bool, "Record TLS protocol and cipher in the Received: header"),
    p("smtpd_tls_req_ccert", "no", ParamType::Bool, "Require a client certificate"),
    p("smtpd_tls_security_level", "", ParamType::Str, "smtpd TLS policy (none, may, encrypt)"),
    p("smtpd_tls_session_cache_database", "", ParamType::Str, "smtpd TLS session cache"),
    p("smtpd_tls_session_cache_timeout", "3600s", ParamType::Time('s'), "Lifetime of cached smtpd TLS sessions"),
    p("smtpd_tls_wrappermode", "no", ParamType::Bool, "smtpd uses implicit TLS (port 465, smtps)"),
    p("smtpd_upstream_proxy_protocol", "", ParamType::Str, "Upstream proxy protocol (haproxy) in front of smtpd"),
    p("smtpd_upstream_proxy_timeout", "5s", ParamType::Time('s'), "Time limit for the upstream proxy protocol header"),
    p("smtpd_use_tls", "no", ParamType::Bool, "Legacy: announce STARTTLS (smtpd_tls_security_level = may)"),
    p("smtputf8_enable", "yes", ParamType::Bool, "Enable SMTPUTF8 support (default as compatibility_level >= 1)"),
    p("soft_bounce", "no", ParamType::Bool, "Turn permanent delivery errors into temporary ones (testing)"),
    p("ssl", "yes", ParamType::Str, "Dovecot: TLS on the mailbox side (no, yes, required)"),
    p("ssl_ca", "", ParamType::Str, "Dovecot: CA certificates for client certificate checks"),
    p("ssl_cert", "", ParamType::Str, "Dovecot: IMAP/POP3 certificate (<file reads the file)"),
    p("ssl_cipher_list", "ALL:!kRSA:!SRP:!kDHd:!DSS:!aNULL:!eNULL:!EXPORT:!DES:!3DES:!MD5:!PSK:!RC4:!ADH:!LOW@STRENGTH", ParamType::Str, "Dovecot: allowed TLS ciphers"),
    p("ssl_dh", "", ParamType::Str, "Dovecot: DH parameters (<file reads the file)"),
    p("ssl_key", "", ParamType::Str, "Dovecot: IMAP/POP3 private key (<file reads the file)"),
    p("ssl_key_password", "", ParamType::Str, "Dovecot: password of an encrypted ssl_key"),
    p("ssl_min_protocol", "TLSv1.2", ParamType::Str, "Dovecot: minimal TLS protocol version"),
    p("ssl_prefer_server_ciphers", "no", ParamType::Bool, "Dovecot: prefer the server's cipher order"),
    p("stress", "", ParamType::Str, "Set by rmaster when a service is overloaded (do not set by hand)"),
    p("strict_rfc821_envelopes", "no", ParamType::Bool, "Require RFC 821 syntax in MAIL FROM and RCPT TO"),
    p("syslog_facility", "mail", ParamType::Str, "Syslog facility of rpost logging"),
    p("syslog_name", "rpost", ParamType::Str, "Prefix of rpost log lines"),
    p("tls_high_cipherlist", "aNULL:-aNULL:HIGH:@STRENGTH", ParamType::Str, "OpenSSL-style cipher list for the \"high\" grade"),
    p("tls_medium_cipherlist", "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH", ParamType::Str, "OpenSSL-style cipher list for the \"medium\" grade"),
    p("tls_preempt_cipherlist", "no", ParamType::Bool, "Prefer the server's cipher order in TLS handshakes"),
    p("tls_random_source", "dev:/dev/urandom", ParamType::Str, "Entropy source for TLS"),
    p("tls_server_sni_maps", "", ParamType::List, "Per-server-name key and certificate tables"),
    p("tls_ssl_options", "", ParamType::List, "TLS library options"),
    p("transport_maps", "", ParamType::List, "Tables mapping recipients to transport:nexthop"),
    p("transport_retry_time", "60s", ParamType::Time('s'), "Time between attempts to use a broken transport"),
    p("undisclosed_recipients_header", "", ParamType::Str, "Header added to messages without recipient headers"),
    p("unknown_local_recipient_reject_code", "550", ParamType::Int, "SMTP reply code for unknown local recipients"),
    p("valid_chroot_dirs", "", ParamType::List, "Dovecot: directories a mail user may chroot to"),
    p("verbose_ssl", "no", ParamType::Bool, "Dovecot: log TLS protocol errors"),
    p("virtual_alias_domains", "$virtual_alias_maps", ParamType::List, "Domains whose addresses are all aliases"),
    p("virtual_alias_expansion_limit", "1000", ParamType::Int, "Maximal addresses one virtual alias expands to"),
    p("virtual_alias_maps", "$virtual_maps", ParamType::List, "Virtual alias tables (user@domain -> address)"),
    p("virtual_alias_recursion_limit", "1000", ParamType::Int, "Maximal nesting depth of virtual alias expansion"),
    p("virtual_gid_maps", "", ParamType::List, "Tables of group IDs for virtual mailbox delivery"),
    p("virtual_mailbox_base", "", ParamType::Str, "Directory prepended to virtual_mailbox_maps paths"),
    p("virtual_mailbox_domains", "$virtual_mailbox_maps", ParamType::List, "Domains delivered by virtual_transport"),
    p("virtual_mailbox_limit", "51200000", ParamType::Size, "Maximal size of a virtual mailbox file"),
    p("virtual_mailbox_maps", "", ParamType::List, "Tables of valid virtual mailbox recipients"),
    p("virtual_maps", "", ParamType::List, "Legacy name of virtual_alias_maps"),
    p("virtual_minimum_uid", "100", ParamType::Int, "Lowest UID accepted from virtual_uid_maps"),
    p("virtual_transport", "virtual", ParamType::Str, "Transport for virtual_mailbox_domains (e.g. lmtp:unix:private/dovecot-lmtp)"),
    p("virtual_uid_maps", "", ParamType::List, "Tables of user IDs for virtual mailbox delivery"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_and_unique() {
        for w in PARAMS.windows(2) {
            assert!(w[0].name < w[1].name, "{} !< {}", w[0].name, w[1].name);
        }
    }

    #[test]
    fn names_and_docs_are_sane() {
        for p in PARAMS {
            assert!(valid_name(p.name), "{}", p.name);
            assert!(!p.doc.is_empty() && !p.doc.contains('\n'), "{}", p.name);
            assert!(!p.default.contains('\n'), "{}", p.name);
            if let ParamType::Time(u) = p.ty {
                assert!("smhdw".contains(u), "{}", p.name);
            }
        }
    }

    #[test]
    fn lookup_finds_everything() {
        for p in PARAMS {
            assert_eq!(lookup(p.name).map(|q| q.name), Some(p.name));
        }
        assert!(lookup("no_such_parameter").is_none());
        assert!(lookup("").is_none());
    }

    #[test]
    fn well_known_defaults() {
        let d = |n| lookup(n).unwrap().default;
        assert_eq!(d("myorigin"), "$myhostname");
        assert_eq!(d("mydestination"), "$myhostname, localhost.$mydomain, localhost");
        assert_eq!(d("smtpd_banner"), "$myhostname ESMTP $mail_name");
        assert_eq!(d("mail_name"), "rpost");
        assert_eq!(d("config_directory"), "/etc/rpost");
        assert_eq!(d("queue_directory"), "/var/spool/rpost");
        assert_eq!(d("message_size_limit"), "10240000");
        assert_eq!(d("maximal_queue_lifetime"), "5d");
        assert_eq!(d("local_transport"), "local:$myhostname");
        assert_eq!(d("alias_maps"), "hash:/etc/aliases");
        assert_eq!(d("imap_idle_notify_interval"), "2 mins");
        assert_eq!(d("pop3_uidl_format"), "%08Xu%08Xv");
        assert_eq!(lookup("maximal_queue_lifetime").unwrap().ty, ParamType::Time('d'));
        assert_eq!(lookup("delay_warning_time").unwrap().ty, ParamType::Time('h'));
        assert_eq!(lookup("minimal_backoff_time").unwrap().ty, ParamType::Time('s'));
    }

    #[test]
    fn seed_and_design_parameters_are_known() {
        // Names the seed tutorials and DESIGN.md tell users to set.
        for n in [
            "alias_database",
            "alias_maps",
            "append_dot_mydomain",
            "auth_debug",
            "auth_debug_passwords",
            "auth_mechanisms",
            "auth_passdb",
            "auth_userdb",
            "auth_username_format",
            "auth_verbose",
            "auth_verbose_passwords",
            "biff",
            "broken_sasl_auth_clients",
            "data_directory",
            "default_pass_scheme",
            "delay_warning_time",
            "disable_plaintext_auth",
            "first_valid_uid",
            "hostname",
            "imap_client_workarounds",
            "inet_interfaces",
            "inet_protocols",
            "lda_mailbox_autocreate",
            "listen",
            "lmtp_save_to_detail_mailbox",
            "local_transport",
            "mail_debug",
            "mail_gid",
            "mail_home",
            "mail_location",
            "mail_owner",
            "mail_plugins",
            "mail_privileged_group",
            "mail_uid",
            "mailbox_size_limit",
            "maximal_backoff_time",
            "maximal_queue_lifetime",
            "message_size_limit",
            "milter_macro_daemon_name",
            "minimal_backoff_time",
            "mydestination",
            "mydomain",
            "myhostname",
            "mynetworks",
            "mynetworks_style",
            "myorigin",
            "pop3_client_workarounds",
            "postmaster_address",
            "protocols",
            "queue_directory",
            "queue_run_delay",
            "readme_directory",
            "recipient_delimiter",
            "relay_domains",
            "relayhost",
            "smtp_tls_note_starttls_offer",
            "smtp_tls_security_level",
            "smtp_tls_session_cache_database",
            "smtpd_banner",
            "smtpd_client_restrictions",
            "smtpd_data_restrictions",
            "smtpd_helo_required",
            "smtpd_helo_restrictions",
            "smtpd_recipient_restrictions",
            "smtpd_relay_restrictions",
            "smtpd_sasl_auth_enable",
            "smtpd_sasl_local_domain",
            "smtpd_sasl_path",
            "smtpd_sasl_security_options",
            "smtpd_sasl_type",
            "smtpd_sender_restrictions",
            "smtpd_tls_auth_only",
            "smtpd_tls_cert_file",
            "smtpd_tls_key_file",
            "smtpd_tls_loglevel",
            "smtpd_tls_received_header",
            "smtpd_tls_security_level",
            "smtpd_tls_session_cache_database",
            "smtpd_tls_session_cache_timeout",
            "smtpd_tls_wrappermode",
            "smtpd_use_tls",
            "ssl",
            "ssl_cert",
            "ssl_dh",
            "ssl_key",
            "ssl_min_protocol",
            "syslog_name",
            "tls_random_source",
            "verbose_ssl",
            "virtual_alias_maps",
            "virtual_mailbox_domains",
            "virtual_mailbox_maps",
            "virtual_transport",
        ] {
            assert!(lookup(n).is_some(), "{n} missing from the registry");
        }
    }
}

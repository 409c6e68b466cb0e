//! qmgr - the rpost queue manager
//!
//! # SUMMARY
//! `qmgr` runs under rmaster as the master.cf service `qmgr unix n - n 300 1 qmgr`: one
//! process, woken by rmaster every 300 s and by smtpd after every commit.
//!
//! # DESCRIPTION
//! As Postfix's qmgr(8): it takes committed messages from `incoming/` into `active/`, routes
//! each recipient to a transport and next hop ([`resolve`]), hands groups of recipients to
//! the delivery agents over `private/<transport>` (rpost-ipc `DeliveryRequest`), records
//! per-recipient results in the queue file, and removes, defers (with backoff) or expires
//! the message ([`scheduler`]).
//!
//! Recipients that fail for good (5xx, unroutable, or still undelivered after
//! `maximal_queue_lifetime`) are reported to the sender in one RFC 3464 non-delivery
//! notification per pass ([`bounce`]), never for the null sender.
//!
//! Not yet: delay warnings (delay_warning_time), success notices (NOTIFY=SUCCESS),
//! double bounces to postmaster, dead-destination throttling and concurrency feedback,
//! recipient limits per request.
//!
//! # SECURITY
//! Runs as `mail_owner`. Queue files are parsed with their CRC checked; a damaged file is
//! moved to `corrupt/`, never delivered. Recipients are only ever marked done after the
//! delivery agent said so: a crash at any point means delivery again, never loss.
//!
//! # CONFIGURATION
//! queue_directory, local_transport, virtual_transport, relay_transport, default_transport,
//! relayhost, transport_maps, mydestination, virtual_mailbox_domains, relay_domains,
//! default_destination_concurrency_limit, qmgr_message_active_limit, minimal_backoff_time,
//! maximal_backoff_time, maximal_queue_lifetime, queue_run_delay, ipc_timeout.
//!
//! # STANDARDS
//! None on the wire; RFC 3461 DSN fields are passed on to the delivery agents.

pub mod bounce;
pub mod resolve;
pub mod scheduler;

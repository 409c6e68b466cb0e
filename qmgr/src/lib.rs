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
//! Scheduling follows Postfix's concurrency scheduler ([`feedback`]): per destination a
//! window that starts at `initial_destination_concurrency`, grows with positive feedback up
//! to `<transport>_destination_concurrency_limit`, shrinks when deliveries find nobody
//! answering, and after `<transport>_destination_concurrency_failed_cohort_limit` failed
//! pseudo-cohorts marks the destination dead: its mail is deferred without an attempt
//! ("delivery temporarily suspended: ...") for `minimal_backoff_time`. Requests carry at
//! most `<transport>_destination_recipient_limit` recipients; with a limit of 1 (local
//! delivery) concurrency counts per recipient.
//!
//! Notifications are RFC 3464 reports built with mail-builder ([`bounce`]), as Postfix's
//! bounce(8) sends them: non-delivery notifications (5xx, unroutable, or expired after
//! `maximal_queue_lifetime`, `bounce_queue_lifetime` for bounces) from the null sender;
//! one delay warning per message after `delay_warning_time` (recorded in the queue file);
//! success reports for NOTIFY=SUCCESS (Action: delivered; relayed for SMTP to a next hop
//! without DSN; none for one that advertised DSN, which got the NOTIFY and reports); NOTIFY
//! honoured throughout. A bounce that fails goes to `2bounce_notice_recipient` only when
//! `notify_classes` has 2bounce (or bounce), as in Postfix, from `double_bounce_sender`,
//! whose own failures are discarded, as is mail to the local double-bounce address: no loop.
//!
//! Not yet: transport-level throttling when a delivery agent does not answer (it defers,
//! but does not suspend the transport), `default_recipient_limit` and the other in-memory
//! limits besides `qmgr_message_active_limit`, `<transport>_destination_rate_delay`,
//! Postfix's preemptive job scheduler (requests run in arrival order). Delay warnings are checked when an attempt ends, not while a
//! message waits in `deferred/`. UTF-8 addresses go into plain message/delivery-status
//! (8bit), not RFC 6533's message/global-delivery-status.
//!
//! # SECURITY
//! Runs as `mail_owner`. Queue files are parsed with their CRC checked; a damaged file is
//! moved to `corrupt/`, never delivered. Recipients are only ever marked done after the
//! delivery agent said so: a crash at any point means delivery again, never loss.
//! Text from remote servers enters notifications only as single lines (control characters
//! replaced, length capped), so a hostile reply cannot add report fields or headers; the
//! returned message is attached verbatim, never re-parsed; notifications about
//! notifications stop at the postmaster, so no reply can start a mail loop.
//!
//! # CONFIGURATION
//! queue_directory, local_transport, virtual_transport, relay_transport, default_transport,
//! relayhost, transport_maps, mydestination, virtual_mailbox_domains, relay_domains,
//! initial_destination_concurrency, default_destination_concurrency_limit,
//! default_destination_concurrency_positive_feedback, ..._negative_feedback,
//! default_destination_concurrency_failed_cohort_limit, default_destination_recipient_limit
//! (each also as `<transport>_...`), qmgr_message_active_limit, minimal_backoff_time,
//! maximal_backoff_time, maximal_queue_lifetime, bounce_queue_lifetime, queue_run_delay,
//! delay_warning_time, ipc_timeout, myhostname, myorigin, mail_name, notify_classes,
//! bounce_notice_recipient, 2bounce_notice_recipient, delay_notice_recipient,
//! double_bounce_sender, bounce_size_limit.
//!
//! # STANDARDS
//! RFC 3461 (DSN: NOTIFY, ORCPT, RET, ENVID honoured and passed on), RFC 3462/6522
//! (multipart/report), RFC 3464 (message/delivery-status), RFC 3834 (Auto-Submitted).

pub mod bounce;
pub mod feedback;
pub mod resolve;
pub mod scheduler;

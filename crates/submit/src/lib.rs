//! rpost-submit - who may submit local mail, list the queue, and use which sender
//!
//! # SUMMARY
//! ```text
//! rpost_submit::policy::user_listed(&["!guest".into(), "static:anyone".into()], "alice")?  // true
//! rpost_submit::policy::sender_allowed(&tables, "alice", "alice@example.com", "<>")?     // per local_login_sender_maps
//! ```
//!
//! # DESCRIPTION
//! The rules of local submission ([`policy`]): Postfix's `authorized_submit_users`,
//! `authorized_mailq_users` (user lists: names, `/file`, `type:table`, `!` exclusions, first
//! match decides) and `local_login_sender_maps` (`*`, `<>`, `@domain`, exact addresses).
//! pickup and the showq service enforce them (they are the trusted side); sendmail and mailq
//! check the same rules first, so a refused user gets an error at once instead of a file in
//! corrupt/. Both binaries use this one crate, so the rules exist once.
//!
//! # SECURITY
//! The login name is the kernel's (the maildrop file owner or the caller's uid), never a
//! claim in the input. Nothing matching, or an empty list, denies. Lookup errors are errors:
//! callers decide (pickup defers, sendmail lets pickup decide).
//!
//! # CONFIGURATION
//! None itself; callers pass `authorized_submit_users`, `authorized_mailq_users`,
//! `local_login_sender_maps` and `empty_address_local_login_sender_maps_lookup_key`.
//!
//! # STANDARDS
//! Postfix's postdrop(1), postqueue(1) and local_login_sender_maps semantics.

pub mod policy;

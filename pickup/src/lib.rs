//! pickup, showq - local submission into the queue, and the queue listing for local users
//!
//! # SUMMARY
//! `pickup unix n - n 60 1 pickup` and `showq unix n - n - - showq` in master.cf.
//! `sendmail` (the `sendmail` crate) writes one file per message into
//! `$queue_directory/maildrop/` and pokes `public/pickup`; pickup turns each file into a
//! committed queue file in `incoming/` and triggers qmgr. `mailq` connects to `public/showq`
//! and prints what showq writes: the `postqueue -p` listing.
//!
//! # DESCRIPTION
//! pickup is a trigger server: a wakeup from sendmail, or rmaster's every 60 seconds (the
//! wakeup column), starts one pass over `maildrop/` (passes never overlap). For each entry:
//!
//! * entries without the owner execute bit are still being written and are left alone (and
//!   removed once older than a day); symlinks, FIFOs, directories, hard-linked files and
//!   unreadable files are refused;
//! * the file is read (bounded by `message_size_limit` plus the envelope limit) and parsed
//!   strictly ([`maildrop`]); the submitter is the file's owner (fstat of the opened file);
//! * the sender is the file's `sender` line (`sendmail -f`) or the owner's login name at
//!   `$myorigin`; bare addresses get `@$myorigin`; recipients are virtual-alias expanded as
//!   smtpd does before it commits;
//! * the queue file is written exactly as smtpd writes it (`rpost_queue::Queue::create`,
//!   `commit`: fdatasync, complete mark, fsync, directory fsync) with
//!   `Received: by $myhostname ($mail_name, from userid UID) id QID; DATE` on top, and the
//!   Date:, Message-Id: and From: headers added where missing (as Postfix's cleanup does for
//!   local submissions), plus `undisclosed_recipients_header` when set and there is no
//!   To/Cc/Bcc; bare user names in address headers (`From: root`, `To: Bob <bob>`) get
//!   `@$myorigin`, as Postfix's cleanup rewrites local submissions' headers;
//! * only after the commit is the maildrop file removed (a crash in between means a
//!   duplicate, never a loss); the log says `pickup[pid]: QID: uid=1000 from=<user@origin>`;
//! * a file that fails any check is moved to `corrupt/maildrop-NAME` with a warning naming
//!   the reason and the owner's uid; pickup carries on with the next file. A failure of the
//!   queue itself (disk full, broken virtual alias table) leaves the file in maildrop for the
//!   next pass; a message that cannot be queued as it is (a virtual alias loop or limit, a
//!   queue-file format limit) stays in maildrop with a warning at each pass, without holding
//!   up the others.
//!
//! showq answers every client with the listing (`rpost_queue::show::postqueue_listing`) and closes.
//!
//! # SECURITY
//! Postfix lets users drop mail through the setgid `postdrop` program. rpost has no setgid
//! binary: `maildrop/` is mode 1733 owned by `mail_owner` (anyone may create files, nobody
//! but mail_owner may list it, the sticky bit stops users from removing or renaming each
//! other's files). sendmail creates its file with an unguessable 128-bit random name, mode
//! 0600 while writing, fsyncs it and then sets mode 0744 (complete, readable by pickup).
//! pickup runs as mail_owner and trusts nothing in the file: the identity is the uid that
//! owns the opened file (the file cannot claim another), files with more than one link are
//! refused (a hard link to another user's file would lend us its owner; Linux's
//! protected_hardlinks forbids creating those in the first place), it opens with O_NOFOLLOW
//! and O_NONBLOCK and checks that the opened file is the regular file it examined, reads at
//! most the size limit, and validates every record. Policy is enforced here, where the user
//! cannot skip it: the owner's login name must be in `authorized_submit_users` (root and
//! mail_owner always are) and the file's sender (or, without one, the login name) must be
//! allowed for that login by `local_login_sender_maps` ([`policy`]; the default `static:*`
//! allows any sender, as in Postfix); a refused file goes to corrupt/ with the reason, and a
//! table that cannot be read stops pickup (files wait) rather than skip the check. The
//! Received: header and the log name the real uid, so any sender stays traceable. `public/` is mode 0711 (Postfix: 0710 group postdrop)
//! so local users can reach the public sockets (pickup, showq, qmgr triggers), which is what
//! the setgid programs give them in Postfix; no one can list it.
//!
//! # CONFIGURATION
//! `queue_directory`, `message_size_limit`, `myhostname`, `myorigin`, `mail_name`,
//! `undisclosed_recipients_header`, `virtual_alias_maps` and the expansion limits,
//! `mail_owner`, `authorized_submit_users`, `local_login_sender_maps`,
//! `empty_address_local_login_sender_maps_lookup_key`; showq: `authorized_mailq_users`
//! (checked against the client's SO_PEERCRED uid).
//!
//! # STANDARDS
//! RFC 5322 (Date, Message-ID, From), RFC 5321 section 4.4 (Received), RFC 3461 (DSN
//! NOTIFY, RET, ENVID carried into the queue file).

pub mod headers;
pub mod maildrop;
pub mod pickup;
/// The local submission rules (authorized_submit_users, local_login_sender_maps), shared
/// with sendmail through rpost-submit.
pub use rpost_submit::policy;

pub use pickup::{Outcome, Pickup, PickupError, Settings};

/// Tells qmgr there is new mail in incoming/ (best effort: qmgr also scans every second).
pub fn trigger_qmgr(queue_root: &std::path::Path) {
    use std::io::Write;
    let path = queue_root.join("public").join("qmgr");
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(mut s) => {
            let _ = s.write_all(b"I");
        }
        Err(e) => tracing::debug!("{}: {e}", path.display()),
    }
}

//! sendmail, mailq, newaliases - the local submission entry points (Postfix sendmail(1))
//!
//! # SUMMARY
//! ```text
//! sendmail [-f sender] [-F name] [-i] [-N dsn] [-R ret] [-V envid] [-C dir] [-v] rcpt... < message
//! sendmail -t [-i] ...            recipients from To:, Cc:, Bcc: (Bcc: removed)
//! sendmail -bs                    SMTP on stdin/stdout
//! sendmail -bv rcpt...            how each recipient would be routed
//! sendmail -bp | mailq            the queue (postqueue -p)
//! sendmail -bi | -I | newaliases  rebuild every alias_database
//! sendmail -q                     deliver deferred mail now
//! ```
//!
//! # DESCRIPTION
//! Submission writes one file per message into `$queue_directory/maildrop/` (format in the
//! pickup crate's `maildrop` module), then wakes the `pickup` service on `public/pickup`;
//! pickup queues it (Received:, missing Date/Message-Id/From, virtual alias expansion) and
//! triggers qmgr. Mail submitted while rpost is stopped waits in maildrop.
//!
//! The message is read from stdin as it is: a line holding only `.` ends it unless `-i`
//! (`-oi`) is given; no dot-unstuffing, line endings are normalized by pickup. Recipients come
//! from the arguments (RFC 5322 address lists, as Postfix parses them) and, with `-t`, from
//! the headers (added to the arguments' recipients, as Postfix does). `-f`/`-r` set the
//! envelope sender (`<>` is the null sender), otherwise pickup uses the submitting user's
//! login name at `$myorigin`. `-N`, `-R`, `-V` are the DSN NOTIFY, RET and ENVID.
//!
//! `-bs` speaks SMTP (EHLO with PIPELINING, SIZE, 8BITMIME, DSN) and submits each message
//! to maildrop; the 250 reply names the maildrop file. `-bv` prints the routing report
//! instead of mailing it (exit 0 when all are deliverable, EX_NOUSER when one is not,
//! EX_TEMPFAIL when a table failed). `-bp` reads the listing from the `showq` service, so
//! users who cannot read the queue directory see it too. `-bi` builds each
//! `alias_database` (or `-oA` file) as `rmaster map build --aliases` does. `-q` wakes qmgr
//! with a flush request; when run by root or mail_owner it first marks every deferred
//! message due, as `rmaster queue flush` (postqueue -f) does, otherwise qmgr retries the
//! deferred messages whose time has come. `-qINTERVAL` is ignored (qmgr schedules queue
//! runs itself); `-qR`/`-qS` flush everything. `authorized_flush_users` is checked here;
//! qmgr's trigger socket itself is open to local users (as Postfix's postqueue is), so it
//! is advice to honest clients rather than a barrier.
//!
//! Ignored for compatibility, as in Postfix: `-B -G -L -U -c -e -h -m -p -x` and `-o`
//! options other than `-oi`, `-oA`, `-oF` (reported with `-v`); `-O` and `-X` are ignored
//! with a warning; `-n` and `-bd` are refused. `-v` shows what is happening.
//!
//! Exit status (sysexits): 0; EX_USAGE 64 (bad command line, no recipients); EX_DATAERR 65
//! (message too big, bad address); EX_NOUSER 67 (-bv); EX_UNAVAILABLE 69 (maildrop or
//! showq not reachable); EX_CANTCREAT 73 (newaliases); EX_TEMPFAIL 75 (write error, try
//! again); EX_NOPERM 77 (not authorized); EX_CONFIG 78.
//!
//! # SECURITY
//! sendmail runs with the invoking user's privileges; it is not setuid or setgid. It can
//! write into `maildrop/` (mode 1733, owned by mail_owner) but not list or read it, nor
//! any other queue directory. The file's owner is the identity pickup records
//! (`Received: ... from userid UID`, `pickup: QID: uid=UID from=<...>`); nothing the user
//! writes can claim another uid. `authorized_submit_users` and `local_login_sender_maps`
//! (which senders each login may use with `-f` or `MAIL FROM`; default `static:*`, any, as in
//! Postfix) are checked here for a prompt error (EX_NOPERM 77, or 553 5.7.1 in -bs) and
//! enforced by pickup, which the user cannot bypass. mailq's `authorized_mailq_users` is
//! enforced by showq from the socket's peer credentials.
//! Names of maildrop files are 128 random bits, so other users cannot guess and open them.
//! Envelope values are checked before writing (no control characters, no angle brackets,
//! bounded lengths), and pickup checks them again. The size limit is message_size_limit.
//!
//! # CONFIGURATION
//! `-C DIR` (or a main.cf path), else `RPOST_CONFIG`, else `/etc/rpost`. Parameters:
//! `queue_directory`, `message_size_limit`, `myhostname`, `myorigin`, `smtpd_banner`,
//! `alias_database`, `mail_owner`, `authorized_submit_users`, `local_login_sender_maps`,
//! `empty_address_local_login_sender_maps_lookup_key`, and for `-bv` the address class and
//! transport parameters.
//!
//! # STANDARDS
//! RFC 5321 (-bs), RFC 5322 (address lists, Resent- fields for -t), RFC 3461 (DSN
//! options), sysexits.h.

pub mod drop;
pub mod input;
pub mod options;
/// The rules pickup enforces (authorized_submit_users, local_login_sender_maps), checked here
/// first for a prompt error: the same crate pickup uses.
pub use rpost_submit::policy;
pub mod smtp;
pub mod verify;

/// sysexits.h (libc does not export these on Linux).
pub mod sysexits {
    pub const EX_USAGE: i32 = 64;
    pub const EX_DATAERR: i32 = 65;
    pub const EX_NOUSER: i32 = 67;
    pub const EX_UNAVAILABLE: i32 = 69;
    pub const EX_CANTCREAT: i32 = 73;
    pub const EX_NOPERM: i32 = 77;
    pub const EX_IOERR: i32 = 74;
    pub const EX_TEMPFAIL: i32 = 75;
    pub const EX_CONFIG: i32 = 78;
}

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use options::{Mode, Options};

/// A fatal error with its sysexits status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    pub code: i32,
    pub message: String,
}

fn fatal(code: i32, message: impl Into<String>) -> Fatal {
    Fatal { code, message: message.into() }
}

/// Runs sendmail (or mailq/newaliases, chosen by `argv0`) with `args`; prints errors as
/// `PROGRAM: fatal: ...`.
pub fn run(argv0: &str, args: &[String]) -> ExitCode {
    let program = argv0.rsplit('/').next().unwrap_or(argv0).to_string();
    let program = if program.is_empty() { "sendmail".to_string() } else { program };
    match run_inner(&program, argv0, args) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("{program}: fatal: {}", e.message);
            ExitCode::from(e.code as u8)
        }
    }
}

fn config_dir(o: &Options) -> PathBuf {
    let dir = o
        .config
        .clone()
        .or_else(|| std::env::var_os("RPOST_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/rpost"));
    // -C may name main.cf itself, as Postfix allows.
    if dir.file_name().is_some_and(|n| n == "main.cf") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

fn run_inner(program: &str, argv0: &str, args: &[String]) -> Result<i32, Fatal> {
    let o = options::parse(argv0, args).map_err(|e| fatal(sysexits::EX_USAGE, e.0))?;
    rpost_log::init_cli(program, o.verbose > 0);
    for w in &o.warnings {
        eprintln!("{program}: warning: {w}");
    }
    if o.verbose > 0 {
        for i in &o.ignored {
            eprintln!("{program}: {i}");
        }
    }
    let dir = config_dir(&o);
    let config = rpost_config::Config::load(&dir).map_err(|e| fatal(sysexits::EX_CONFIG, e.to_string()))?;
    if o.verbose > 0 {
        for w in &config.warnings {
            eprintln!("{program}: warning: {w}");
        }
    }
    let p = &config.params;
    let get = |name: &str| p.get(name).map_err(|e| fatal(sysexits::EX_CONFIG, e.to_string()));
    let queue_dir = PathBuf::from(get("queue_directory")?);
    match o.mode {
        Mode::Deliver => deliver(program, &o, p, &queue_dir),
        Mode::Smtp => smtp_session(program, &o, p, &queue_dir),
        Mode::Mailq => mailq(program, p, &queue_dir),
        Mode::Newaliases => newaliases(program, &o, p),
        Mode::Verify => {
            if o.recipients.is_empty() {
                return Err(fatal(sysexits::EX_USAGE, "-bv: no recipients specified"));
            }
            let rcpts: Vec<String> = o.recipients.iter().flat_map(|r| input::parse_address_list(r)).collect();
            let report = verify::verify(p, &rcpts).map_err(|e| fatal(sysexits::EX_CONFIG, e))?;
            for l in &report.lines {
                println!("{l}");
            }
            Ok(if report.all_deliverable {
                0
            } else if report.temporary {
                sysexits::EX_TEMPFAIL
            } else {
                sysexits::EX_NOUSER
            })
        }
        Mode::Flush => {
            let who = submitter(p)?;
            if !who.privileged {
                let acl =
                    p.get_list("authorized_flush_users").map_err(|e| fatal(sysexits::EX_CONFIG, e.to_string()))?;
                if !policy::user_listed(&acl, &who.login).unwrap_or(true) {
                    return Err(fatal(
                        sysexits::EX_NOPERM,
                        format!("User {}({}) is not allowed to flush the mail queue", who.login, who.uid),
                    ));
                }
            }
            flush(program, &o, &queue_dir)
        }
    }
}

fn size_limit(p: &rpost_config::Params) -> Result<u64, Fatal> {
    p.get_size("message_size_limit").map_err(|e| fatal(sysexits::EX_CONFIG, e.to_string()))
}

fn dsn(o: &Options) -> Result<(Option<String>, Option<String>), Fatal> {
    let usage = |e: options::UsageError| fatal(sysexits::EX_USAGE, e.0);
    Ok((
        o.notify.as_deref().map(options::check_notify).transpose().map_err(usage)?,
        o.ret.as_deref().map(options::check_ret).transpose().map_err(usage)?,
    ))
}

/// Who is running us, for the policy checks.
struct Submitter {
    uid: u32,
    login: String,
    /// root or mail_owner: exempt from authorized_submit_users.
    privileged: bool,
}

fn submitter(p: &rpost_config::Params) -> Result<Submitter, Fatal> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid).ok().flatten().ok_or_else(|| {
        fatal(sysexits::EX_NOPERM, format!("no password file entry for uid {uid}: pickup would refuse the message"))
    })?;
    let owner = p.get("mail_owner").ok().and_then(|o| nix::unistd::User::from_name(&o).ok().flatten());
    let privileged = uid.is_root() || owner.is_some_and(|o| o.uid == uid);
    Ok(Submitter { uid: uid.as_raw(), login: user.name, privileged })
}

/// authorized_submit_users, as pickup will check it. A table we cannot read here is left to
/// pickup (it runs as mail_owner and may read what we cannot).
fn check_submit_user(program: &str, verbose: bool, p: &rpost_config::Params, who: &Submitter) -> Result<(), Fatal> {
    if who.privileged {
        return Ok(());
    }
    let list = p.get_list("authorized_submit_users").map_err(|e| fatal(sysexits::EX_CONFIG, e.to_string()))?;
    match policy::user_listed(&list, &who.login) {
        Ok(true) => Ok(()),
        Ok(false) => {
            Err(fatal(sysexits::EX_NOPERM, format!("User {}({}) is not allowed to submit mail", who.login, who.uid)))
        }
        Err(e) => {
            if verbose {
                eprintln!("{program}: authorized_submit_users: {e}; pickup will check");
            }
            Ok(())
        }
    }
}

/// local_login_sender_maps for `sender` (None: the login name). `Ok(true)` also when the
/// tables cannot be read here: pickup enforces them.
fn sender_permitted(
    program: &str,
    verbose: bool,
    p: &rpost_config::Params,
    who: &Submitter,
    sender: Option<&str>,
) -> bool {
    let null_key = p.get("empty_address_local_login_sender_maps_lookup_key").unwrap_or_else(|_| "<>".into());
    let sender = sender.unwrap_or(&who.login);
    match rpost_lookup::open_param(p, "local_login_sender_maps")
        .and_then(|maps| policy::sender_allowed(&maps, &who.login, sender, &null_key))
    {
        Ok(ok) => ok,
        Err(e) => {
            if verbose {
                eprintln!("{program}: local_login_sender_maps: {e}; pickup will check");
            }
            true
        }
    }
}

fn submit(program: &str, verbose: bool, queue_dir: &Path, s: &drop::Submission) -> Result<String, Fatal> {
    let name = drop::write(queue_dir, s).map_err(|e| fatal(e.exit_code(), e.to_string()))?;
    if verbose {
        eprintln!("{program}: maildrop/{name}: {} recipient(s), {} bytes", s.recipients.len(), s.content.len());
    }
    if let Err(e) = drop::wake_pickup(queue_dir) {
        // The message is safe in maildrop; pickup's periodic wakeup will find it.
        if verbose {
            eprintln!("{program}: cannot wake pickup ({e}); the message waits in maildrop");
        }
    }
    Ok(name)
}

fn deliver(program: &str, o: &Options, p: &rpost_config::Params, queue_dir: &Path) -> Result<i32, Fatal> {
    let (notify, ret) = dsn(o)?;
    check_submit_user(program, o.verbose > 0, p, &submitter(p)?)?;
    let mut recipients: Vec<String> = o.recipients.iter().flat_map(|r| input::parse_address_list(r)).collect();
    let limit = size_limit(p)?;
    let stdin = std::io::stdin();
    let mut content = input::read_message(stdin.lock(), o.dot_ends, limit).map_err(|e| match e {
        input::InputError::TooBig(_) => fatal(sysexits::EX_DATAERR, e.to_string()),
        input::InputError::Io(_) => fatal(sysexits::EX_IOERR, e.to_string()),
    })?;
    content = input::strip_from_lines(content);
    if o.extract {
        let e = input::extract(&content);
        for r in e.recipients {
            if !recipients.contains(&r) {
                recipients.push(r);
            }
        }
        content = e.content;
        if recipients.is_empty() {
            return Err(fatal(sysexits::EX_USAGE, "No recipient addresses found in message header"));
        }
    }
    if recipients.is_empty() {
        return Err(fatal(
            sysexits::EX_USAGE,
            "Recipient addresses must be specified on the command line or via the -t option",
        ));
    }
    let sender = o.sender.as_deref().map(input::sender_arg);
    let who = submitter(p)?;
    if !sender_permitted(program, o.verbose > 0, p, &who, sender.as_deref()) {
        return Err(fatal(
            sysexits::EX_NOPERM,
            format!(
                "User {}({}) is not allowed to submit mail as <{}>",
                who.login,
                who.uid,
                sender.as_deref().unwrap_or(&who.login)
            ),
        ));
    }
    let s = drop::Submission {
        sender,
        fullname: o.fullname.clone(),
        notify,
        ret,
        envid: o.envid.clone(),
        recipients,
        content,
    };
    submit(program, o.verbose > 0, queue_dir, &s)?;
    Ok(0)
}

fn smtp_session(program: &str, o: &Options, p: &rpost_config::Params, queue_dir: &Path) -> Result<i32, Fatal> {
    let get = |name: &str| p.get(name).map_err(|e| fatal(sysexits::EX_CONFIG, e.to_string()));
    let who = submitter(p)?;
    check_submit_user(program, o.verbose > 0, p, &who)?;
    let mut session = smtp::Session::new(&get("myhostname")?, &get("smtpd_banner")?, size_limit(p)?);
    if p.get_bool("disable_vrfy_command").map_err(|e| fatal(sysexits::EX_CONFIG, e.to_string()))? {
        session.disable_vrfy();
    }
    let verbose = o.verbose > 0;
    let policy_params = p.clone();
    let prog = program.to_string();
    session.set_sender_check(Box::new(move |sender: &str| {
        if sender_permitted(&prog, verbose, &policy_params, &who, Some(sender)) {
            Ok(())
        } else {
            Err(format!("not owned by user {}", who.login))
        }
    }));
    let mut out = std::io::stdout().lock();
    let mut input = std::io::stdin().lock();
    let io = |e: std::io::Error| fatal(sysexits::EX_IOERR, e.to_string());
    out.write_all(&session.greeting()).and_then(|()| out.flush()).map_err(io)?;
    let mut submit_one = |s: drop::Submission| submit(program, verbose, queue_dir, &s).map_err(|e| e.message);
    let mut buf = vec![0u8; 64 * 1024];
    while !session.closed() {
        let n = input.read(&mut buf).map_err(io)?;
        if n == 0 {
            // End of input without QUIT: an unfinished transaction is dropped.
            break;
        }
        let replies = session.feed(&buf[..n], &mut submit_one);
        out.write_all(&replies).and_then(|()| out.flush()).map_err(io)?;
    }
    Ok(0)
}

/// `mailq` / `-bp`: the listing from showq; root and mail_owner read the queue themselves
/// when showq does not answer (as Postfix's postqueue does).
fn mailq(program: &str, p: &rpost_config::Params, queue_dir: &Path) -> Result<i32, Fatal> {
    let path = queue_dir.join("public").join("showq");
    let down = |_| fatal(sysexits::EX_UNAVAILABLE, "Queue report unavailable - mail system is down");
    let mut s = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            if !submitter(p).is_ok_and(|w| w.privileged) {
                return Err(down(e));
            }
            eprintln!("{program}: warning: Mail system is down -- accessing queue directly");
            let (text, warnings) =
                rpost_queue::show::postqueue_listing(&rpost_queue::Queue::new(queue_dir.to_path_buf()));
            for w in warnings {
                eprintln!("{program}: warning: {w}");
            }
            std::io::stdout().write_all(text.as_bytes()).map_err(|e| fatal(sysexits::EX_IOERR, e.to_string()))?;
            return Ok(0);
        }
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(120)));
    let mut text = Vec::new();
    s.read_to_end(&mut text).map_err(down)?;
    if text.is_empty() {
        return Err(fatal(sysexits::EX_UNAVAILABLE, "Queue report unavailable - mail system is down"));
    }
    if let Some(refusal) = text.strip_prefix(b"fatal: ") {
        return Err(fatal(sysexits::EX_NOPERM, String::from_utf8_lossy(refusal).trim_end().to_string()));
    }
    std::io::stdout().write_all(&text).map_err(|e| fatal(sysexits::EX_IOERR, e.to_string()))?;
    Ok(0)
}

/// `newaliases` / `-bi`: every alias_database (or the `-oA` file), as postalias.
fn newaliases(program: &str, o: &Options, p: &rpost_config::Params) -> Result<i32, Fatal> {
    let specs = match &o.alias_file {
        Some(f) => vec![f.clone()],
        None => p.get_list("alias_database").map_err(|e| fatal(sysexits::EX_CONFIG, e.to_string()))?,
    };
    let mut status = 0;
    for spec in specs {
        match rpost_lookup::build_spec(&spec, true) {
            Ok(report) => {
                for w in &report.warnings {
                    eprintln!("{program}: warning: {w}");
                }
                if o.verbose > 0 {
                    eprintln!("{program}: {spec}: {} entries", report.entries);
                }
            }
            Err(e) => {
                eprintln!("{program}: fatal: {spec}: {e}");
                status = sysexits::EX_CANTCREAT;
            }
        }
    }
    Ok(status)
}

/// `-q`: mark deferred mail due (when we may) and ask qmgr to flush.
fn flush(program: &str, o: &Options, queue_dir: &Path) -> Result<i32, Fatal> {
    if let Some(arg) = &o.queue_arg {
        if arg.starts_with(['R', 'S', 'I']) {
            eprintln!("{program}: warning: -q{arg}: per-site flush is not supported: flushing the whole queue");
        } else {
            eprintln!("{program}: warning: -q{arg} ignored: qmgr runs the queue on its own (queue_run_delay)");
            return Ok(0);
        }
    }
    let queue = rpost_queue::Queue::new(queue_dir.to_path_buf());
    // Readable only by root and mail_owner; others just send the request.
    if let Ok(ids) = queue.scan(rpost_queue::QueueDir::Deferred) {
        let now = std::time::SystemTime::now();
        for id in ids {
            let path = queue.path(rpost_queue::QueueDir::Deferred, &id);
            if let Err(e) = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(now))
                && o.verbose > 0
            {
                eprintln!("{program}: {id}: {e}");
            }
        }
    }
    let mut s = std::os::unix::net::UnixStream::connect(queue_dir.join("public").join("qmgr"))
        .map_err(|_| fatal(sysexits::EX_UNAVAILABLE, "Cannot flush mail queue - mail system is down"))?;
    s.write_all(b"F").map_err(|_| fatal(sysexits::EX_UNAVAILABLE, "Cannot flush mail queue - mail system is down"))?;
    Ok(0)
}

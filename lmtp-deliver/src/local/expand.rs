//! One recipient, as local(8) delivers it: aliases, `.forward`, `:include:`, files,
//! commands, mailboxes, and addresses elsewhere that are forwarded through the queue.
//!
//! The walk is depth first. Each local address on the way is the "delivered" address of
//! what it expands to (the `Delivered-To:` of copies, `to=` in the log). A local address
//! that reappears among its own ancestors, or a message that already carries a
//! `Delivered-To:` for the address, is a mail forwarding loop (5.4.6); an alias or
//! `.forward` that lists its own owner means that user's mailbox. The same final
//! destination is delivered once per recipient.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rpost_address::{Address, Class, Domains};
use rpost_ipc::Outcome;
use rpost_lookup::Table;

use super::dest::{self, Dest};
use super::helper::{self, Answer, Task};
use super::mbox::{self, AppendOptions, Copy};
use super::settings::{Account, Settings, Source};
use super::{Message, command, pass};

/// Deepest nesting of aliases, includes and forwards (Postfix's local(8) uses 100).
const MAX_LEVEL: usize = 100;

/// One alias table and whose rights its files and commands get.
#[derive(Debug)]
pub struct AliasTable {
    pub table: Box<dyn Table>,
    /// The owner of the table's file, or default_privs when that is root (Postfix rule);
    /// `Err` when it cannot be determined (such deliveries are deferred).
    pub privs: Result<Account, String>,
    /// The table could not be opened and stands in as `fail:` (lookups defer); it is
    /// opened again for the next request.
    pub broken: bool,
}

/// The result of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub outcome: Outcome,
    pub dsn: String,
    pub reason: String,
}

impl Status {
    pub fn sent(reason: impl Into<String>) -> Status {
        Status { outcome: Outcome::Sent, dsn: "2.0.0".into(), reason: reason.into() }
    }
    pub fn fail(soft: bool, dsn: &str, reason: impl Into<String>) -> Status {
        Status {
            outcome: if soft { Outcome::Deferred } else { Outcome::Bounced },
            dsn: dsn.to_string(),
            reason: reason.into(),
        }
    }
    pub fn defer(reason: impl Into<String>) -> Status {
        Status::fail(true, "4.3.0", reason)
    }
}

/// An address to forward through the queue, with the envelope sender it gets and the
/// `Delivered-To:` it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub sender: String,
    pub delivered: String,
    pub address: String,
}

#[derive(Debug, Clone)]
struct Ctx {
    sender: String,
    level: usize,
    /// Local addresses (lower case) and include files being expanded.
    chain: Vec<String>,
    /// Whose rights files and commands get here.
    privs: Option<Result<Account, String>>,
    source: Source,
    /// The local address being delivered (lower case).
    delivered: String,
}

/// The walk for one recipient of a delivery request.
#[derive(Debug)]
pub struct Expander<'a> {
    pub s: &'a Settings,
    pub domains: &'a Domains,
    pub aliases: &'a [AliasTable],
    pub msg: &'a Message,
    /// (to=, status, sender) per final delivery, in order.
    pub leaves: Vec<(String, Status, String)>,
    pub forwards: Vec<Forward>,
    seen: HashSet<String>,
}

fn valid_address(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= rpost_lookup::MAX_ADDRESS_LEN
        && !a.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

impl<'a> Expander<'a> {
    pub fn new(s: &'a Settings, domains: &'a Domains, aliases: &'a [AliasTable], msg: &'a Message) -> Expander<'a> {
        Expander { s, domains, aliases, msg, leaves: Vec::new(), forwards: Vec::new(), seen: HashSet::new() }
    }

    /// Delivers to `recipient`. Its domain is not looked at: qmgr sent it here, so it is
    /// local (as Postfix's local(8) uses the local part only).
    pub fn deliver(&mut self, recipient: &str) {
        let ctx = Ctx {
            sender: self.msg.sender.clone(),
            level: 0,
            chain: Vec::new(),
            privs: None,
            source: Source::Recipient,
            delivered: recipient.to_lowercase(),
        };
        let local = match recipient.rfind('@') {
            Some(i) => &recipient[..i],
            None => recipient,
        };
        self.local(recipient, local, &ctx);
    }

    /// Records a final delivery; `sender` is the envelope sender in effect there (an
    /// owner- alias's, inside its expansion), who gets to hear of a failure.
    fn leaf(&mut self, sender: &str, to: &str, st: Status) {
        self.leaves.push((to.to_string(), st, sender.to_string()));
    }

    /// First time this destination is seen in this walk.
    fn first(&mut self, key: String) -> bool {
        self.seen.insert(key)
    }

    fn qualify(&self, a: &str) -> String {
        if a.contains('@') { a.to_string() } else { format!("{a}@{}", self.s.myorigin) }
    }

    /// An address from an alias, include or forward file.
    fn address(&mut self, raw: &str, ctx: &Ctx) {
        let addr = self.qualify(raw);
        if !valid_address(&addr) {
            let to = ctx.delivered.clone();
            self.leaf(
                &ctx.sender,
                &to,
                Status::fail(false, "5.1.3", format!("bad address syntax: {}", rpost_lookup::printable(raw))),
            );
            return;
        }
        let parsed = Address::parse(&addr, &self.s.myorigin);
        if self.domains.classify(&parsed) != Class::Local {
            if self.first(format!("forward:{}", addr.to_lowercase())) {
                self.forwards.push(Forward {
                    sender: ctx.sender.clone(),
                    delivered: ctx.delivered.clone(),
                    address: addr,
                });
            }
            return;
        }
        self.local(&addr, &parsed.local, ctx)
    }

    /// A local address: loop checks, aliases, then the system user.
    fn local(&mut self, addr: &str, local: &str, parent: &Ctx) {
        let key = addr.to_lowercase();
        if parent.level >= MAX_LEVEL || parent.chain.contains(&key) || self.msg.delivered_to.contains(&key) {
            self.leaf(&parent.sender, addr, Status::fail(false, "5.4.6", format!("mail forwarding loop for {key}")));
            return;
        }
        let mut ctx = parent.clone();
        ctx.level += 1;
        ctx.chain.push(key.clone());
        ctx.delivered = key;
        let local = local.to_lowercase();
        let (user, ext) = dest::split_local(&local, &self.s.recipient_delimiter);
        let (user, ext) = (user.to_string(), ext.map(str::to_string));
        match self.alias_lookup(&local, &user) {
            Err(e) => self.leaf(&ctx.sender, addr, Status::defer(format!("alias database unavailable: {e}"))),
            Ok(Some((name, value, table))) => self.alias(addr, &name, &value, table, &user, ext.as_deref(), &ctx),
            Ok(None) => self.user(addr, &user, ext.as_deref(), &ctx, true),
        }
    }

    /// The full local part first, then without its extension.
    fn alias_lookup(&self, local: &str, user: &str) -> Result<Option<(String, String, usize)>, String> {
        let mut keys = vec![local];
        if user != local {
            keys.push(user);
        }
        for k in keys {
            for (i, t) in self.aliases.iter().enumerate() {
                if let Some(v) = t.table.lookup(k).map_err(|e| e.to_string())? {
                    return Ok(Some((k.to_string(), v, i)));
                }
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn alias(&mut self, addr: &str, name: &str, value: &str, table: usize, user: &str, ext: Option<&str>, ctx: &Ctx) {
        let mut c = ctx.clone();
        c.source = Source::Alias;
        c.privs = Some(self.aliases[table].privs.clone());
        // owner-NAME: the expansion's errors go there, so it becomes the envelope sender.
        if self.s.owner_request_special && !name.starts_with("owner-") {
            let owner = format!("owner-{name}");
            if let Ok(Some((_, owner_value, _))) = self.alias_lookup(&owner, &owner) {
                c.sender = match dest::parse_list(&owner_value).first() {
                    Some(Dest::Address(a)) if self.s.expand_owner_alias => self.qualify(a),
                    _ => format!("{owner}@{}", self.s.myorigin),
                };
            }
        }
        let dests = dest::parse_list(value);
        if dests.is_empty() {
            self.leaf(&ctx.sender, addr, Status::fail(false, "5.3.0", format!("alias {name} has an empty value")));
            return;
        }
        for d in dests {
            self.dest(d, addr, name, user, ext, &c);
        }
    }

    /// One destination found in an alias, include or forward file of `owner_addr`.
    fn dest(&mut self, d: Dest, owner_addr: &str, name: &str, user: &str, ext: Option<&str>, ctx: &Ctx) {
        match d {
            Dest::Address(a) => {
                let q = self.qualify(&a).to_lowercase();
                if q == ctx.delivered || a.eq_ignore_ascii_case(name) {
                    // Listing oneself means one's own mailbox.
                    self.user(owner_addr, user, ext, ctx, false);
                } else {
                    self.address(&a, ctx);
                }
            }
            Dest::Mailbox(u) => {
                let u = u.to_lowercase();
                let addr = if u == user { owner_addr.to_string() } else { self.qualify(&u) };
                self.user(&addr, &u, None, ctx, false);
            }
            Dest::File(path) => self.file(owner_addr, &path, ctx),
            Dest::Command(cmd) => self.command(owner_addr, &cmd, ctx),
            Dest::Include(path) => self.include(owner_addr, &path, name, user, ext, ctx),
        }
    }

    /// The rights for a file or command delivery: never root while we are root.
    fn privs_for(&self, ctx: &Ctx) -> Result<Account, String> {
        let acct = match &ctx.privs {
            Some(p) => p.clone()?,
            None => return Err("no delivery rights for this destination".into()),
        };
        if self.s.privileged && acct.uid == 0 { self.default_privs() } else { Ok(acct) }
    }

    fn default_privs(&self) -> Result<Account, String> {
        match Account::by_name(&self.s.default_privs) {
            Ok(Some(a)) if a.uid != 0 => Ok(a),
            Ok(Some(_)) => Err(format!("default_privs = {} is root: refusing", self.s.default_privs)),
            Ok(None) => Err(format!("default_privs: unknown user {}", self.s.default_privs)),
            Err(e) => Err(format!("default_privs {}: {e}", self.s.default_privs)),
        }
    }

    fn creds(&self, a: &Account) -> Option<(u32, u32)> {
        self.s.privileged.then_some((a.uid, a.gid))
    }

    fn copy(&self, ctx: &Ctx, delivered: bool, from_line: bool, mbox: bool) -> Vec<u8> {
        mbox::format(
            &self.msg.content,
            &Copy {
                sender: &ctx.sender,
                delivered_to: delivered.then_some(ctx.delivered.as_str()),
                from_line,
                mbox,
                time: SystemTime::now(),
            },
        )
    }

    fn file(&mut self, to: &str, path: &str, ctx: &Ctx) {
        if !self.s.allowed_file(ctx.source) {
            self.leaf(
                &ctx.sender,
                to,
                Status::fail(
                    false,
                    "5.7.1",
                    format!("mail to file is restricted: {path} (from {})", ctx.source.name()),
                ),
            );
            return;
        }
        let acct = match self.privs_for(ctx) {
            Ok(a) => a,
            Err(e) => return self.leaf(&ctx.sender, to, Status::defer(e)),
        };
        if path.split('/').any(|c| c == "..") {
            return self.leaf(
                &ctx.sender,
                to,
                Status::fail(false, "5.3.0", format!("file name with \"..\" refused: {path}")),
            );
        }
        if !self.first(format!("file:{path}:{}", acct.uid)) {
            return;
        }
        let delivered = self.s.prepend("file");
        let (task, data, what) = if path.ends_with('/') {
            let data = self.copy(ctx, delivered, false, false);
            (Task::Maildir { path: PathBuf::from(path) }, data, format!("delivered to maildir: {path}"))
        } else {
            let opts = AppendOptions { dotlock_may_fail: true, ..self.s.lock.clone() };
            (
                Task::Mbox { path: PathBuf::from(path), opts },
                self.copy(ctx, delivered, true, true),
                format!("delivered to file: {path}"),
            )
        };
        if self.s.mailbox_size_limit > 0 && data.len() as u64 > self.s.mailbox_size_limit {
            return self.leaf(
                &ctx.sender,
                to,
                Status::fail(false, "5.2.2", format!("message is larger than mailbox_size_limit for {path}")),
            );
        }
        let st = answer_status(helper::run(&self.s.helper, self.creds(&acct), &task, &data), what);
        self.leaf(&ctx.sender, to, st);
    }

    fn env(&self, acct: &Account, ctx: &Ctx, user: &str, ext: Option<&str>) -> Vec<(String, String)> {
        let (local, domain) = match ctx.delivered.rfind('@') {
            Some(i) => (&ctx.delivered[..i], &ctx.delivered[i + 1..]),
            None => (ctx.delivered.as_str(), ""),
        };
        let mut env = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("HOME".to_string(), acct.home.display().to_string()),
            ("USER".to_string(), acct.name.clone()),
            ("LOGNAME".to_string(), acct.name.clone()),
            ("SHELL".to_string(), acct.shell.clone()),
            ("SENDER".to_string(), ctx.sender.clone()),
            ("RECIPIENT".to_string(), ctx.delivered.clone()),
            ("LOCAL".to_string(), local.to_string()),
            ("USER_LOCAL".to_string(), user.to_string()),
            ("EXTENSION".to_string(), ext.unwrap_or_default().to_string()),
            ("DOMAIN".to_string(), domain.to_string()),
            ("ORIGINAL_RECIPIENT".to_string(), self.msg.original.clone()),
        ];
        for name in &self.s.export_environment {
            if let Ok(v) = std::env::var(name)
                && !env.iter().any(|(k, _)| k == name)
            {
                env.push((name.clone(), v));
            }
        }
        env
    }

    fn command(&mut self, to: &str, cmd: &str, ctx: &Ctx) {
        if !self.s.allowed_command(ctx.source) {
            self.leaf(
                &ctx.sender,
                to,
                Status::fail(false, "5.7.1", format!("mail to command is restricted (from {})", ctx.source.name())),
            );
            return;
        }
        let acct = match self.privs_for(ctx) {
            Ok(a) => a,
            Err(e) => return self.leaf(&ctx.sender, to, Status::defer(e)),
        };
        if !self.first(format!("command:{cmd}:{}", acct.uid)) {
            return;
        }
        let delivered = self.s.prepend("command");
        let input = self.copy(ctx, delivered, true, false);
        let (user, ext) = split_addr_local(&ctx.delivered, &self.s.recipient_delimiter);
        let env = self.env(&acct, ctx, &user, ext.as_deref());
        // Commands from .forward start in the user's home; others in /.
        let cwd =
            if ctx.source == Source::Forward && acct.home.is_dir() { acct.home.clone() } else { PathBuf::from("/") };
        let st = self.run_command(cmd, &acct, env, cwd, &input);
        self.leaf(&ctx.sender, to, st);
    }

    fn run_command(&self, cmd: &str, acct: &Account, env: Vec<(String, String)>, cwd: PathBuf, input: &[u8]) -> Status {
        let job = command::Job {
            command: cmd.to_string(),
            shell: self.s.local_command_shell.clone(),
            creds: self.creds(acct),
            env,
            cwd,
            time_limit: self.s.command_time_limit,
        };
        let (ended, output) = command::run(&job, input);
        match command::outcome(&ended, &output) {
            Ok(()) => Status::sent(format!("delivered to command: {}", rpost_lookup::printable(cmd))),
            Err((soft, dsn, reason)) => Status::fail(soft, dsn, reason),
        }
    }

    fn include(&mut self, to: &str, path: &str, name: &str, user: &str, ext: Option<&str>, ctx: &Ctx) {
        if !path.starts_with('/') {
            return self.leaf(
                &ctx.sender,
                to,
                Status::fail(false, "5.3.0", format!(":include: needs an absolute path: {path}")),
            );
        }
        let key = format!(":include:{path}");
        if ctx.chain.contains(&key) {
            return self.leaf(&ctx.sender, to, Status::fail(false, "5.4.6", format!("mail forwarding loop for {key}")));
        }
        let acct = match self.privs_for(ctx) {
            Ok(a) => a,
            Err(e) => return self.leaf(&ctx.sender, to, Status::defer(e)),
        };
        let (uid, text) = match helper::run(&self.s.helper, self.creds(&acct), &Task::Read { path: path.into() }, b"") {
            Answer::Ok(data) => match split_read(&data) {
                Some((uid, _mode, text)) => (uid, text),
                None => return self.leaf(&ctx.sender, to, Status::defer(format!("cannot read include file {path}"))),
            },
            Answer::None => {
                return self.leaf(
                    &ctx.sender,
                    to,
                    Status::fail(false, "5.3.0", format!("cannot open include file {path}: No such file or directory")),
                );
            }
            Answer::Fail { soft, dsn, reason } => return self.leaf(&ctx.sender, to, Status::fail(soft, &dsn, reason)),
        };
        let mut c = ctx.clone();
        c.source = Source::Include;
        c.chain.push(key);
        c.level += 1;
        // A file owned by a user delivers with that user's rights (Postfix rule).
        if uid != 0 {
            c.privs = Some(match Account::by_uid(uid) {
                Ok(Some(a)) => Ok(a),
                Ok(None) => Err(format!("include file {path} is owned by uid {uid}, who has no account")),
                Err(e) => Err(e),
            });
        }
        for d in dest::parse_file(&text) {
            self.dest(d, to, name, user, ext, &c);
        }
    }

    /// A system user: `.forward` (unless `forward` is false), then the mailbox.
    fn user(&mut self, addr: &str, user: &str, ext: Option<&str>, ctx: &Ctx, forward: bool) {
        let acct = match Account::by_name(user) {
            Ok(Some(a)) => a,
            Ok(None) => {
                // Postfix order for users without an account: mailbox_transport(_maps),
                // fallback_transport(_maps), luser_relay, bounce.
                for (maps, spec) in [
                    (&self.s.mailbox_transport_maps, &self.s.mailbox_transport),
                    (&self.s.fallback_transport_maps, &self.s.fallback_transport),
                ] {
                    match transport_for(maps, spec, user) {
                        Ok(Some(t)) => {
                            let st = pass::pass(self.s, self.msg, &t, addr, self.s.pass_timeout);
                            return self.leaf(&ctx.sender, addr, st);
                        }
                        Ok(None) => {}
                        Err(e) => return self.leaf(&ctx.sender, addr, Status::defer(e)),
                    }
                }
                if !self.s.luser_relay.is_empty() {
                    return self.luser_relay(addr, user, ext, ctx);
                }
                return self.leaf(
                    &ctx.sender,
                    addr,
                    Status::fail(false, "5.1.1", format!("unknown user: \"{}\"", rpost_lookup::printable(user))),
                );
            }
            Err(e) => return self.leaf(&ctx.sender, addr, Status::defer(format!("user lookup for {user}: {e}"))),
        };
        if forward && self.dot_forward(addr, &acct, ext, ctx) {
            return;
        }
        self.mailbox(addr, &acct, ext, ctx);
    }

    /// luser_relay: the catch-all for unknown users, with local variables ($user, $local,
    /// $extension, $recipient, $domain) filtered as in forward_path.
    fn luser_relay(&mut self, addr: &str, user: &str, ext: Option<&str>, ctx: &Ctx) {
        let (local, domain) = addr.rsplit_once('@').unwrap_or((addr, ""));
        let lookup = |n: &str| -> Option<String> {
            Some(dest::filter_value(match n {
                "user" => user,
                "local" => local,
                "extension" => ext.unwrap_or_default(),
                "recipient" => addr,
                "domain" => domain,
                "recipient_delimiter" => self.s.recipient_delimiter.get(..1).unwrap_or_default(),
                _ => return None,
            }))
        };
        let relay = dest::expand(&self.s.luser_relay, &lookup);
        match dest::parse_list(&relay).as_slice() {
            [Dest::Address(a)] => self.address(&a.clone(), ctx),
            _ => self.leaf(
                &ctx.sender,
                addr,
                Status::defer(format!("luser_relay = {} is not one address", self.s.luser_relay)),
            ),
        }
    }

    /// Tries forward_path; true when a `.forward` file took the delivery.
    fn dot_forward(&mut self, addr: &str, acct: &Account, ext: Option<&str>, ctx: &Ctx) -> bool {
        let delim = match ext {
            Some(e) => {
                let local = addr.rsplit_once('@').map_or(addr, |(l, _)| l);
                local.len().checked_sub(e.len() + 1).and_then(|i| local.get(i..i + 1)).unwrap_or_default().to_string()
            }
            None => String::new(),
        };
        let ext_f = ext.map(dest::filter_value).unwrap_or_default();
        let home = acct.home.display().to_string();
        let (local, domain) = addr.rsplit_once('@').unwrap_or((addr, ""));
        let lookup = |n: &str| -> Option<String> {
            Some(match n {
                "home" => home.clone(),
                "user" => dest::filter_value(&acct.name),
                "shell" => acct.shell.clone(),
                "extension" => ext_f.clone(),
                "recipient_delimiter" => delim.clone(),
                "local" => dest::filter_value(local),
                "domain" => dest::filter_value(domain),
                "recipient" => dest::filter_value(addr),
                _ => return None,
            })
        };
        let mut tried = HashSet::new();
        for tpl in &self.s.forward_path {
            let path = dest::expand(tpl, &lookup);
            if !path.starts_with('/') || !tried.insert(path.clone()) {
                continue;
            }
            // Root's own .forward is read as root; its deliveries still get default_privs.
            let creds = if acct.uid == 0 { None } else { self.creds(acct) };
            let data = match helper::run(&self.s.helper, creds, &Task::Read { path: path.clone().into() }, b"") {
                Answer::None => continue,
                Answer::Fail { soft, dsn, reason } => {
                    if soft {
                        self.leaf(&ctx.sender, addr, Status::fail(true, &dsn, reason));
                        return true;
                    }
                    continue;
                }
                Answer::Ok(d) => d,
            };
            let Some((uid, mode, text)) = split_read(&data) else { continue };
            if uid != acct.uid {
                tracing::warn!("file {path} has bad owner uid {uid} (expected {}): ignored", acct.uid);
                continue;
            }
            if mode & 0o022 != 0 {
                tracing::warn!("file {path} is group or world writable: ignored");
                continue;
            }
            let dests = dest::parse_file(&text);
            if dests.is_empty() {
                continue;
            }
            let mut c = ctx.clone();
            c.source = Source::Forward;
            c.privs = Some(Ok(acct.clone()));
            for d in dests {
                self.dest(d, addr, &acct.name, &acct.name, ext, &c);
            }
            return true;
        }
        false
    }

    fn mailbox(&mut self, addr: &str, acct: &Account, ext: Option<&str>, ctx: &Ctx) {
        if !self.first(format!("mailbox:{}", acct.name)) {
            return;
        }
        // Another transport writes it (Dovecot LMTP, ...): no local rights involved.
        match transport_for(&self.s.mailbox_transport_maps, &self.s.mailbox_transport, &acct.name) {
            Ok(Some(t)) => {
                let st = pass::pass(self.s, self.msg, &t, addr, self.s.pass_timeout);
                return self.leaf(&ctx.sender, addr, st);
            }
            Ok(None) => {}
            Err(e) => return self.leaf(&ctx.sender, addr, Status::defer(e)),
        }
        if self.s.privileged && acct.uid == 0 {
            return self.leaf(&ctx.sender,
                addr,
                Status::defer(format!(
                    "mailbox delivery for {} (uid 0) is not done with root privileges: add an alias for {} to /etc/aliases",
                    acct.name, acct.name
                )),
            );
        }
        let mut c = ctx.clone();
        c.delivered = addr.to_lowercase();
        let creds = self.creds(acct);
        let per_user = match rpost_lookup::lookup_first(&self.s.mailbox_command_maps, &acct.name) {
            Ok(c) => c,
            Err(e) => return self.leaf(&ctx.sender, addr, Status::defer(format!("mailbox_command_maps: {e}"))),
        };
        if let Some(cmd) = per_user.or_else(|| Some(self.s.mailbox_command.clone()).filter(|c| !c.is_empty())) {
            // Not $name-expanded, as in Postfix: it is shell syntax ("$EXTENSION" is the
            // environment variable).
            let input = self.copy(&c, true, true, false);
            let env = self.env(acct, &c, &acct.name, ext);
            let cwd = if acct.home.is_dir() { acct.home.clone() } else { PathBuf::from("/") };
            let st = self.run_command(&cmd, acct, env, cwd, &input);
            return self.leaf(&ctx.sender, addr, st);
        }
        if !self.s.home_mailbox.is_empty() {
            if !acct.home.is_absolute() || self.s.home_mailbox.starts_with('/') || self.s.home_mailbox.contains("..") {
                let why = format!("no usable mailbox: home {:?}, home_mailbox {:?}", acct.home, self.s.home_mailbox);
                return self.leaf(&ctx.sender, addr, Status::fail(true, "4.3.5", why));
            }
            let path = acct.home.join(&self.s.home_mailbox);
            if self.s.home_mailbox.ends_with('/') {
                let data = self.copy(&c, true, false, false);
                if self.s.mailbox_size_limit > 0 && data.len() as u64 > self.s.mailbox_size_limit {
                    return self.leaf(
                        &ctx.sender,
                        addr,
                        Status::fail(false, "5.2.2", "message is larger than mailbox_size_limit"),
                    );
                }
                let st = answer_status(
                    helper::run(&self.s.helper, creds, &Task::Maildir { path }, &data),
                    "delivered to maildir".into(),
                );
                return self.leaf(&ctx.sender, addr, st);
            }
            let opts = AppendOptions {
                owner: self.s.strict_mailbox_ownership.then_some(acct.uid),
                dotlock_may_fail: true,
                ..self.s.lock.clone()
            };
            let data = self.copy(&c, true, true, true);
            let answer = helper::run(&self.s.helper, creds, &Task::Mbox { path, opts }, &data);
            let st = self.mailbox_status(answer, acct);
            return self.leaf(&ctx.sender, addr, st);
        }
        let st = self.spool_mailbox(acct, &c);
        self.leaf(&ctx.sender, addr, st);
    }

    /// mail_spool_directory/USER. The spool is usually root's (Debian: root:mail 2775), so
    /// the dot-lock and a missing mailbox file are made here, as Postfix does with root
    /// privileges; the write itself is the recipient's.
    fn spool_mailbox(&self, acct: &Account, ctx: &Ctx) -> Status {
        let path = self.s.mail_spool_directory.join(&acct.name);
        let l = &self.s.lock;
        let _dot = if l.dotlock {
            match mbox::dotlock(&path, l.lock_attempts, l.lock_delay, l.stale_lock) {
                Ok(d) => Some(d),
                Err(e) => return Status::fail(true, "4.2.0", format!("cannot lock mailbox {}: {e}", path.display())),
            }
        } else {
            None
        };
        if self.s.privileged
            && let Err(e) = create_owned(&path, acct)
        {
            return Status::fail(true, "4.2.0", format!("cannot create mailbox {}: {e}", path.display()));
        }
        let opts =
            AppendOptions { dotlock: false, owner: self.s.strict_mailbox_ownership.then_some(acct.uid), ..l.clone() };
        let data = self.copy(ctx, true, true, true);
        self.mailbox_status(helper::run(&self.s.helper, self.creds(acct), &Task::Mbox { path, opts }, &data), acct)
    }

    /// The status of an mbox delivery; with `biff = yes` the comsat service on this host
    /// hears `user@offset` (UDP, best effort), as Postfix's local(8) tells it.
    fn mailbox_status(&self, answer: Answer, acct: &Account) -> Status {
        if self.s.biff
            && let Answer::Ok(data) = &answer
            && let Some(offset) = std::str::from_utf8(data).ok().and_then(|t| t.trim().parse::<u64>().ok())
            && let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0")
        {
            let _ = sock.send_to(format!("{}@{offset}\n", acct.name).as_bytes(), "127.0.0.1:512");
        }
        answer_status(answer, "delivered to mailbox".into())
    }
}

/// The transport for `user` from per-user tables, else the parameter (empty: none).
fn transport_for(maps: &[Box<dyn rpost_lookup::Table>], spec: &str, user: &str) -> Result<Option<String>, String> {
    match rpost_lookup::lookup_first(maps, user) {
        Ok(Some(t)) => Ok(Some(t)),
        Ok(None) => Ok(Some(spec.to_string()).filter(|s| !s.is_empty())),
        Err(e) => Err(format!("transport table lookup for {user}: {e}")),
    }
}

/// Creates a missing mailbox file for its user (never through a symlink).
fn create_owned(path: &Path, acct: &Account) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
    {
        Ok(f) => std::os::unix::fs::fchown(&f, Some(acct.uid), Some(acct.gid)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// `uid mode\ncontent` from a read helper.
fn split_read(data: &[u8]) -> Option<(u32, u32, String)> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&data[..nl]).ok()?;
    let (uid, mode) = head.split_once(' ')?;
    Some((uid.parse().ok()?, mode.parse().ok()?, String::from_utf8_lossy(&data[nl + 1..]).into_owned()))
}

fn answer_status(a: Answer, success: String) -> Status {
    match a {
        Answer::Ok(_) => Status::sent(success),
        Answer::None => Status::defer("delivery helper found nothing to do"),
        Answer::Fail { soft, dsn, reason } => Status::fail(soft, &dsn, reason),
    }
}

/// (user, extension) of `local@domain`.
fn split_addr_local(addr: &str, delim: &str) -> (String, Option<String>) {
    let local = addr.rsplit_once('@').map_or(addr, |(l, _)| l);
    let (u, e) = dest::split_local(local, delim);
    (u.to_string(), e.map(str::to_string))
}

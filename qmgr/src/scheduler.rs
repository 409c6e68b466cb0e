//! The queue manager proper: incoming -> active -> delivered, deferred or expired.
//!
//! One task owns the state and handles [`Event`]s in order (as rmaster's supervisor does);
//! delivery attempts run as separate tasks that talk to the delivery agents and report back.
//!
//! * Intake: on a trigger from smtpd, a wakeup, or a periodic scan, committed files in
//!   `incoming/` move to `active/` (up to `qmgr_message_active_limit`), and deferred files
//!   whose retry time (their mtime, as in Postfix) has come move there too, every
//!   `queue_run_delay`. At start-up, files left in `active/` by a crash are taken up again:
//!   delivery is at least once.
//! * Scheduling: the pending recipients of a message are grouped per route (transport and
//!   next hop) and cut into requests of at most `<transport>_destination_recipient_limit`
//!   recipients. Each destination (route; route and recipient when that limit is 1) has a
//!   concurrency window with Postfix's feedback and dead-destination rules ([`crate::feedback`]);
//!   requests for a dead destination are deferred without an attempt ("delivery
//!   temporarily suspended: ...") until it is resumed after `minimal_backoff_time`.
//! * Results: sent and bounced recipients are marked done in the queue file (in place; the
//!   marks are fdatasync'd only when the message stays queued, and qmgr's renames and
//!   unlinks skip the directory fsync: a crash can cost a duplicate delivery, never a
//!   message). When a message has no attempt left running it is removed (all
//!   done), expired (older than `maximal_queue_lifetime`, or `bounce_queue_lifetime` for
//!   mail from the null sender or `double_bounce_sender`: the rest is marked expired), or
//!   moved to `deferred/` with its mtime set to the next retry: the message's age, clamped
//!   to `minimal_backoff_time`..`maximal_backoff_time`.
//! * Notifications ([`crate::bounce`]): failures and NOTIFY=SUCCESS deliveries found in a
//!   pass are reported when the pass ends; a message older than `delay_warning_time` with
//!   recipients still pending gets one delay warning, remembered in the queue file (the
//!   `delay_warning` attribute) so that neither a retry nor a restart sends another.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use rpost_config::Params;
use rpost_ipc::{DeliveryRecipient, DeliveryRequest, DeliveryResponse, FrameDecoder, Outcome, RecipientStatus};
use rpost_queue::{Queue, QueueDir, QueueFile, QueueId, RcptStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::bounce::{self, Action, Entry, Notice, Plan, Reporter};
use crate::feedback::{self, Dest, Policy};
use crate::resolve::{Resolver, Route};

/// The queue-file attribute that records a sent delay warning.
pub const DELAY_WARNING_ATTR: &str = "delay_warning";

/// Tunables from main.cf.
#[derive(Debug, Clone)]
pub struct Limits {
    pub active_limit: usize,
    pub minimal_backoff: Duration,
    pub maximal_backoff: Duration,
    pub queue_lifetime: Duration,
    /// For mail from the null sender (and double_bounce_sender).
    pub bounce_lifetime: Duration,
    pub delay_warning: Duration,
    pub queue_run_delay: Duration,
    pub ipc_timeout: Duration,
    /// queue_file_recycle_limit: emptied queue files kept for reuse.
    pub recycle_limit: usize,
    /// For the per-transport scheduling parameters, looked up on first use.
    pub params: Params,
}

impl Limits {
    pub fn from_params(p: &rpost_config::Params) -> Result<Limits, rpost_config::ConfigError> {
        // Fail at start-up, not at the first delivery, if the defaults are unusable.
        Policy::from_params(p, "default")?;
        Ok(Limits {
            active_limit: p.get_int("qmgr_message_active_limit")?.max(1) as usize,
            minimal_backoff: p.get_time("minimal_backoff_time")?,
            maximal_backoff: p.get_time("maximal_backoff_time")?,
            queue_lifetime: p.get_time("maximal_queue_lifetime")?,
            bounce_lifetime: p.get_time("bounce_queue_lifetime")?,
            delay_warning: p.get_time("delay_warning_time")?,
            queue_run_delay: p.get_time("queue_run_delay")?,
            ipc_timeout: p.get_time("ipc_timeout")?,
            recycle_limit: p.get_int("queue_file_recycle_limit")?.max(0) as usize,
            params: p.clone(),
        })
    }
}

/// A destination: what concurrency is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestKey {
    pub transport: String,
    /// The next hop, or the recipient when the transport takes one recipient per request.
    pub name: String,
}

/// What the scheduler reacts to.
#[derive(Debug)]
pub enum Event {
    /// A trigger from smtpd ('I'), rmaster's wakeup ('W') or anyone else.
    Trigger,
    /// `rmaster queue flush` ('F', or Postfix's 'D' and 'A'): scan deferred/ now.
    Flush,
    /// One delivery attempt finished.
    Done { id: QueueId, route: Route, dest: DestKey, statuses: Vec<RecipientStatus>, feedback: feedback::Outcome },
}

/// A message in the active queue.
#[derive(Debug)]
struct Active {
    file: QueueFile,
    /// Attempts still running (or waiting) for it.
    running: usize,
    /// Recipients that failed for good in this pass and want to hear about it.
    failures: Vec<Entry>,
    /// Recipients delivered in this pass that asked for NOTIFY=SUCCESS.
    successes: Vec<Entry>,
    /// The last deferral of each recipient in this pass (reasons for delay warnings and
    /// expiry reports).
    deferrals: HashMap<usize, RecipientStatus>,
}

impl Active {
    fn new(file: QueueFile) -> Active {
        Active { file, running: 0, failures: Vec::new(), successes: Vec::new(), deferrals: HashMap::new() }
    }

    /// Remembers a final failure, unless the sender asked not to hear about it.
    fn failed(&mut self, index: usize, dsn: &str, relay: &str, reason: &str) {
        let Some(r) = self.file.envelope.recipients.get(index) else { return };
        if bounce::wants_failure_notice(r.notify) {
            self.failures.push(Entry::new(r, Action::Failed, dsn, relay, reason));
        }
    }
}

/// A delivery attempt waiting for a free slot.
#[derive(Debug)]
struct Job {
    id: QueueId,
    route: Route,
    dest: DestKey,
    recipients: Vec<DeliveryRecipient>,
}

/// The queue manager state.
#[derive(Debug)]
pub struct Qmgr {
    queue: Queue,
    resolver: Resolver,
    limits: Limits,
    active: HashMap<QueueId, Active>,
    /// Jobs waiting for a slot, one FIFO per destination (Postfix's per-destination queues).
    waiting: HashMap<DestKey, VecDeque<Job>>,
    /// Destinations whose jobs may be startable now: a job arrived, an attempt ended, or the
    /// periodic sweep. Dispatch looks only at these, so one finished delivery costs O(1),
    /// not a walk over every waiting job.
    dirty: HashSet<DestKey>,
    dests: HashMap<DestKey, Dest>,
    policies: HashMap<String, Policy>,
    tx: mpsc::UnboundedSender<Event>,
    last_deferred_scan: Option<Instant>,
    reporter: Reporter,
}

impl Qmgr {
    pub fn new(
        queue: Queue,
        resolver: Resolver,
        limits: Limits,
        reporter: Reporter,
        tx: mpsc::UnboundedSender<Event>,
    ) -> Qmgr {
        Qmgr {
            queue: queue.with_recycle_limit(limits.recycle_limit),
            resolver,
            limits,
            reporter,
            active: HashMap::new(),
            waiting: HashMap::new(),
            dirty: HashSet::new(),
            dests: HashMap::new(),
            policies: HashMap::new(),
            tx,
            last_deferred_scan: None,
        }
    }

    /// Runs until the event channel closes.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        // Recovery: whatever a previous qmgr left in active/ is delivered again (and a queue
        // file rewrite it did not finish is thrown away: the original is intact).
        if let Err(e) = self.queue.remove_stale_rewrites(QueueDir::Active) {
            tracing::warn!("active: {e}");
        }
        match self.queue.scan(QueueDir::Active) {
            Ok(ids) => {
                for id in ids {
                    self.activate(id, QueueDir::Active);
                }
            }
            Err(e) => tracing::warn!("scan active: {e}"),
        }
        self.intake();
        self.dispatch();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => match ev { Some(ev) => ev, None => return },
                _ = tick.tick() => {
                    // Dead destinations come back to life by the clock: look at all of them.
                    self.dirty.extend(self.waiting.keys().cloned());
                    Event::Trigger
                }
            };
            match ev {
                Event::Trigger => self.intake(),
                Event::Flush => {
                    self.last_deferred_scan = None;
                    // A flush also retries dead destinations at once (as `postqueue -f`).
                    self.dests.retain(|_, d| d.busy() > 0);
                    self.dirty.extend(self.waiting.keys().cloned());
                    self.intake();
                }
                Event::Done { id, route, dest, statuses, feedback } => {
                    self.feedback(&dest, feedback);
                    self.dirty.insert(dest);
                    self.apply(&id, &route, statuses);
                }
            }
            self.dispatch();
        }
    }

    /// The scheduling parameters of a transport (Postfix's defaults if main.cf's are bad).
    fn policy(&mut self, transport: &str) -> Policy {
        if let Some(p) = self.policies.get(transport) {
            return p.clone();
        }
        let p = Policy::from_params(&self.limits.params, transport).unwrap_or_else(|e| {
            tracing::warn!("transport {transport}: {e}; using the default scheduling parameters");
            Policy::from_params(&self.limits.params, "default").unwrap_or_default()
        });
        self.policies.insert(transport.to_string(), p.clone());
        p
    }

    /// Moves new and due messages into the active queue.
    fn intake(&mut self) {
        // Destinations with nothing running, waiting or suspended are forgotten, as Postfix
        // deletes empty queues: the next message starts at the initial concurrency.
        self.dests.retain(|k, d| d.busy() > 0 || d.dead().is_some() || self.waiting.contains_key(k));
        let due_deferred = self
            .last_deferred_scan
            .is_none_or(|t| t.elapsed() >= self.limits.queue_run_delay.min(Duration::from_secs(60)));
        let mut sources = vec![QueueDir::Incoming];
        if due_deferred {
            self.last_deferred_scan = Some(Instant::now());
            sources.push(QueueDir::Deferred);
        }
        let now = SystemTime::now();
        for dir in sources {
            let ids = match self.queue.scan(dir) {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!("scan {}: {e}", dir.name());
                    continue;
                }
            };
            for id in ids {
                if self.active.len() >= self.limits.active_limit {
                    return;
                }
                if self.active.contains_key(&id) {
                    continue;
                }
                if dir == QueueDir::Deferred {
                    let due =
                        std::fs::metadata(self.queue.path(dir, &id)).and_then(|m| m.modified()).is_ok_and(|t| t <= now);
                    if !due {
                        continue;
                    }
                }
                if let Err(e) = self.queue.move_without_sync(&id, dir, QueueDir::Active) {
                    tracing::warn!("{id}: move to active: {e}");
                    continue;
                }
                self.activate(id, QueueDir::Active);
            }
        }
    }

    /// Opens a message in active/ and queues delivery jobs for its pending recipients.
    fn activate(&mut self, id: QueueId, dir: QueueDir) {
        let file = match self.queue.open(dir, &id) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("{id}: {e}: moved to corrupt");
                let _ = self.queue.move_to(&id, dir, QueueDir::Corrupt);
                return;
            }
        };
        let env = &file.envelope;
        tracing::info!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            env.sender,
            file.content_len(),
            env.recipients.len()
        );
        let age = delay_secs(env.arrival);
        let double_bounce_local = self.reporter.double_bounce.split('@').next().unwrap_or_default().to_string();
        let mut groups: HashMap<Route, Vec<DeliveryRecipient>> = HashMap::new();
        let mut unroutable = Vec::new();
        let mut discarded = Vec::new();
        for (index, r) in file.pending() {
            // Mail to the local double-bounce address goes nowhere, so the system needs no
            // mailbox for it and a returned postmaster notice cannot loop (Postfix's qmgr).
            if self.resolver.is_local_address(&r.address, &double_bounce_local) {
                discarded.push((index, r.address.clone()));
                continue;
            }
            match self.resolver.resolve(&r.address) {
                Ok(route) => groups.entry(route).or_default().push(DeliveryRecipient {
                    index: index as u32,
                    address: r.address.clone(),
                    orcpt: r.orcpt.clone(),
                    notify: r.notify,
                }),
                Err(u) => unroutable.push((index, r.address.clone(), u)),
            }
        }
        let mut active = Active::new(file);
        let mut updates = Vec::new();
        for (index, address) in discarded {
            tracing::info!(
                "{id}: to=<{address}>, relay=none, delay={age}, dsn=2.0.0, status=sent (undeliverable postmaster notification discarded)"
            );
            tracing::warn!("{id}: undeliverable postmaster notification discarded");
            updates.push((index, RcptStatus::Delivered));
        }
        for (index, address, u) in unroutable {
            let status = if u.permanent { "bounced" } else { "deferred" };
            tracing::info!(
                "{id}: to=<{address}>, relay=none, delay={age}, dsn={}, status={status} ({})",
                u.dsn,
                u.reason
            );
            if u.permanent {
                updates.push((index, RcptStatus::Bounced));
                active.failed(index, u.dsn, "none", &u.reason);
            } else {
                let s = RecipientStatus {
                    index: index as u32,
                    outcome: Outcome::Deferred,
                    dsn: u.dsn.into(),
                    relay: "none".into(),
                    reason: u.reason,
                    next_hop_dsn: false,
                };
                active.deferrals.insert(index, s);
            }
        }
        if !updates.is_empty()
            && let Err(e) = active.file.mark_recipients(&updates)
        {
            tracing::warn!("{id}: mark recipients: {e}");
        }
        let mut routes: Vec<_> = groups.into_iter().collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        for (route, recipients) in routes {
            let policy = self.policy(&route.transport);
            // Postfix: with a recipient limit of 1 the "destination" is the recipient, so
            // concurrency is counted per recipient (local_destination_recipient_limit = 1).
            let per_recipient = policy.recipient_limit == 1;
            let chunk = if policy.recipient_limit == 0 { recipients.len().max(1) } else { policy.recipient_limit };
            for part in recipients.chunks(chunk) {
                let name = if per_recipient { part[0].address.to_ascii_lowercase() } else { route.nexthop.clone() };
                let dest = DestKey { transport: route.transport.clone(), name };
                active.running += 1;
                self.dirty.insert(dest.clone());
                self.waiting.entry(dest.clone()).or_default().push_back(Job {
                    id: id.clone(),
                    route: route.clone(),
                    dest,
                    recipients: part.to_vec(),
                });
            }
        }
        let nothing_to_do = active.running == 0;
        self.active.insert(id.clone(), active);
        if nothing_to_do {
            self.finish(&id);
        }
    }

    /// Starts waiting jobs whose destination has a free slot; defers those whose
    /// destination is dead, without an attempt.
    fn dispatch(&mut self) {
        let now = Instant::now();
        let mut suspended = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            let Some(mut queue) = self.waiting.remove(&key) else { continue };
            let policy = self.policy(&key.transport);
            let dest = self.dests.entry(key.clone()).or_insert_with(|| Dest::new(&policy));
            dest.resume_if_due(&policy, now);
            if let Some(dead) = dest.dead() {
                let (dsn, reason) = (dead.dsn.clone(), dead.reason.clone());
                suspended.extend(queue.drain(..).map(|job| (job, dsn.clone(), reason.clone())));
                continue;
            }
            while dest.has_slot()
                && let Some(job) = queue.pop_front()
            {
                let Some(active) = self.active.get(&job.id) else { continue };
                dest.start();
                let env = &active.file.envelope;
                let request = DeliveryRequest {
                    queue_id: job.id.to_string(),
                    queue_dir: QueueDir::Active.name().to_string(),
                    transport: job.route.transport.clone(),
                    nexthop: job.route.nexthop.clone(),
                    sender: env.sender.clone(),
                    recipients: job.recipients,
                    eight_bit: matches!(env.body, Some(rpost_queue::BodyType::EightBitMime)),
                    smtputf8: env.smtputf8,
                    envid: env.envid.clone(),
                    ret_full: env.ret.map(|r| r == rpost_queue::Ret::Full),
                };
                let socket = self.queue.root().join("private").join(&job.route.transport);
                let tx = self.tx.clone();
                let timeout = self.limits.ipc_timeout;
                let (id, route, dest) = (job.id, job.route, job.dest);
                tokio::spawn(async move {
                    let (statuses, agent_answered) = deliver(&socket, &request, timeout).await;
                    let feedback = site_feedback(&statuses, agent_answered);
                    let _ = tx.send(Event::Done { id, route, dest, statuses, feedback });
                });
            }
            if !queue.is_empty() {
                self.waiting.insert(key, queue);
            }
        }
        for (job, dsn, reason) in suspended {
            let Some(active) = self.active.get(&job.id) else { continue };
            let age = delay_secs(active.file.envelope.arrival);
            let reason = format!("delivery temporarily suspended: {reason}");
            let statuses = job
                .recipients
                .iter()
                .map(|r| {
                    tracing::info!(
                        "{}: to=<{}>, relay=none, delay={age}, delays={age}/0/0/0, dsn={dsn}, status=deferred ({reason})",
                        job.id,
                        r.address
                    );
                    RecipientStatus {
                        index: r.index,
                        outcome: Outcome::Deferred,
                        dsn: dsn.clone(),
                        relay: "none".into(),
                        reason: reason.clone(),
                        next_hop_dsn: false,
                    }
                })
                .collect();
            self.apply(&job.id, &job.route, statuses);
        }
    }

    /// Feeds one attempt's result into its destination's concurrency window.
    fn feedback(&mut self, key: &DestKey, outcome: feedback::Outcome) {
        let policy = self.policy(&key.transport);
        let resume_after = self.limits.minimal_backoff;
        let Some(dest) = self.dests.get_mut(key) else { return };
        if dest.finish(&policy, outcome, Instant::now(), resume_after)
            && let Some(dead) = dest.dead()
        {
            tracing::info!(
                "{}:{}: destination dead, delivery suspended for {}s: {}",
                key.transport,
                key.name,
                resume_after.as_secs(),
                dead.reason
            );
        }
    }

    /// Applies the results of one attempt (or of a suspended one).
    fn apply(&mut self, id: &QueueId, route: &Route, statuses: Vec<RecipientStatus>) {
        let Some(active) = self.active.get_mut(id) else { return };
        active.running = active.running.saturating_sub(1);
        let updates: Vec<(usize, RcptStatus)> = statuses
            .iter()
            .filter_map(|s| match s.outcome {
                Outcome::Sent => Some((s.index as usize, RcptStatus::Delivered)),
                Outcome::Bounced => Some((s.index as usize, RcptStatus::Bounced)),
                Outcome::Deferred => None,
            })
            .collect();
        // Unsynced: the file is either removed when all is done, or synced before it leaves
        // active/ (finish). Not marked means delivered again later: at least once, never lost.
        if !updates.is_empty()
            && let Err(e) = active.file.mark_recipients_unsynced(&updates)
        {
            tracing::warn!("{id}: mark recipients: {e}");
        }
        for s in statuses {
            let index = s.index as usize;
            match s.outcome {
                Outcome::Bounced => active.failed(index, &s.dsn, &s.relay, &s.reason),
                Outcome::Sent => {
                    if let Some(r) = active.file.envelope.recipients.get(index)
                        && bounce::wants_success_notice(r.notify)
                        && let Some(action) = success_action(route, s.next_hop_dsn)
                    {
                        let entry = Entry::new(r, action, &s.dsn, &s.relay, &s.reason);
                        active.successes.push(entry);
                    }
                }
                Outcome::Deferred => {
                    active.deferrals.insert(index, s);
                }
            }
        }
        if active.running == 0 {
            self.finish(id);
        }
    }

    /// A message with no attempt running: remove, expire or defer it.
    fn finish(&mut self, id: &QueueId) {
        let Some(mut active) = self.active.remove(id) else { return };
        if active.file.all_done() {
            self.notify(&mut active);
            self.remove(id);
            return;
        }
        let env = &active.file.envelope;
        let age = SystemTime::now().duration_since(env.arrival).unwrap_or_default();
        // Bounces (and postmaster notices) give up sooner: bounce_queue_lifetime.
        let notification = env.sender.is_empty() || self.reporter.is_double_bounce(&env.sender);
        let lifetime = if notification { self.limits.bounce_lifetime } else { self.limits.queue_lifetime };
        if age >= lifetime {
            let expired: Vec<(usize, RcptStatus)> =
                active.file.pending().map(|(i, _)| (i, RcptStatus::Expired)).collect();
            for (i, _) in &expired {
                let addr = &active.file.envelope.recipients[*i].address;
                tracing::info!(
                    "{id}: to=<{addr}>, relay=none, delay={}, dsn=4.4.7, status=expired, returned to sender",
                    age.as_secs()
                );
            }
            if let Err(e) = active.file.mark_recipients(&expired) {
                tracing::warn!("{id}: mark expired: {e}");
            }
            for (i, _) in expired {
                // The report gives the last reason it was deferred, as Postfix's does.
                let (dsn, relay, reason) = match active.deferrals.get(&i) {
                    Some(s) => (s.dsn.clone(), s.relay.clone(), format!("message expired: {}", s.reason)),
                    None => ("4.4.7".to_string(), "none".to_string(), "message expired".to_string()),
                };
                active.failed(i, &dsn, &relay, &reason);
            }
            self.notify(&mut active);
            self.remove(id);
            return;
        }
        if !self.limits.delay_warning.is_zero()
            && age >= self.limits.delay_warning
            && active.file.envelope.attr(DELAY_WARNING_ATTR).is_none()
        {
            self.warn_delayed(&mut active);
        }
        // Failures found in this pass are reported now; the rest of the message waits.
        self.notify(&mut active);
        let backoff =
            age.clamp(self.limits.minimal_backoff, self.limits.maximal_backoff.max(self.limits.minimal_backoff));
        if let Err(e) = active.file.sync_marks() {
            tracing::warn!("{id}: sync recipient marks: {e}");
        }
        if let Err(e) = self.queue.move_without_sync(id, QueueDir::Active, QueueDir::Deferred) {
            tracing::warn!("{id}: move to deferred: {e}");
            return;
        }
        let path = self.queue.path(QueueDir::Deferred, id);
        let retry = SystemTime::now() + backoff;
        if let Err(e) = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(retry)) {
            tracing::warn!("{id}: set retry time: {e}");
        }
    }

    /// Sends the one delay warning of a message, then records it in the queue file. A
    /// crash in between means a second warning, never none.
    fn warn_delayed(&mut self, active: &mut Active) {
        let id = active.file.id.clone();
        let entries: Vec<Entry> = active
            .file
            .pending()
            .filter(|(_, r)| bounce::wants_delay_notice(r.notify))
            .map(|(i, r)| match active.deferrals.get(&i) {
                Some(s) => Entry::new(r, Action::Delayed, &s.dsn, &s.relay, &s.reason),
                None => Entry::new(r, Action::Delayed, "4.0.0", "none", "delivery deferred"),
            })
            .collect();
        for n in bounce::delays(&self.reporter, &active.file, &entries, SystemTime::now()) {
            let sender_copy = n.what.starts_with("sender");
            if !self.queue_notice(&id, n) && sender_copy {
                // Not recorded: the next pass tries again.
                return;
            }
        }
        let when = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if let Err(e) = active.file.set_attr(DELAY_WARNING_ATTR, &when.to_string()) {
            tracing::warn!("{id}: could not record the delay warning: {e}");
        }
    }
}

impl Qmgr {
    fn remove(&self, id: &QueueId) {
        // Kept empty in recycle/ for the next message's queue file, or unlinked.
        match self.queue.retire(QueueDir::Active, id) {
            Ok(()) => tracing::info!("{id}: removed"),
            Err(e) => tracing::warn!("{id}: remove: {e}"),
        }
    }

    /// Queues the notifications for the failures and successes collected so far. If that
    /// fails the message is not lost: the results are logged, as Postfix logs them too.
    fn notify(&self, active: &mut Active) {
        let failures = std::mem::take(&mut active.failures);
        let successes = std::mem::take(&mut active.successes);
        let id = &active.file.id;
        let now = SystemTime::now();
        if !failures.is_empty() {
            match bounce::failures(&self.reporter, &active.file, &failures, now) {
                Plan::Discard => tracing::warn!("{id}: undeliverable postmaster notification discarded"),
                Plan::Send(notices) => {
                    for n in notices {
                        self.queue_notice(id, n);
                    }
                }
            }
        }
        if let Some(n) = bounce::successes(&self.reporter, &active.file, &successes, now) {
            self.queue_notice(id, n);
        }
    }

    /// Queues one notification; true when it is safely in incoming/.
    fn queue_notice(&self, id: &QueueId, n: Notice) -> bool {
        let queued = self.queue.create(&n.envelope).and_then(|mut m| {
            m.write_content(&n.content)?;
            m.commit()
        });
        match queued {
            Ok(new) => {
                tracing::info!("{id}: {}: {new}", n.what);
                let _ = self.tx.send(Event::Trigger);
                true
            }
            Err(e) => {
                tracing::warn!("{id}: could not queue the {}: {e}", n.what);
                false
            }
        }
    }
}

/// Seconds since arrival, for log lines.
fn delay_secs(arrival: SystemTime) -> u64 {
    SystemTime::now().duration_since(arrival).map(|d| d.as_secs()).unwrap_or(0)
}

/// The success report a NOTIFY=SUCCESS recipient gets, as Postfix decides it: LMTP and
/// local delivery are final ("delivered"); SMTP to a next hop that advertised DSN passed
/// our NOTIFY on, so that hop reports and we send nothing (`None`); SMTP to one without DSN
/// is "relayed" (RFC 3464: no further reports may come).
fn success_action(route: &Route, next_hop_dsn: bool) -> Option<Action> {
    let smtp = matches!(route.transport.as_str(), "smtp" | "relay");
    let lmtp_target = route.nexthop.starts_with("unix:") || route.nexthop.starts_with("inet:");
    match (smtp && !lmtp_target, next_hop_dsn) {
        (true, true) => None,
        (true, false) => Some(Action::Relayed),
        (false, _) => Some(Action::Delivered),
    }
}

/// What an attempt says about its destination: reached when any recipient got an answer
/// from the next hop, unreachable when nobody answered at all (Postfix's "connection or
/// handshake failure"), nothing when the delivery agent itself failed.
fn site_feedback(statuses: &[RecipientStatus], agent_answered: bool) -> feedback::Outcome {
    if !agent_answered {
        return feedback::Outcome::Neutral;
    }
    let unanswered = |s: &RecipientStatus| s.outcome == Outcome::Deferred && (s.relay.is_empty() || s.relay == "none");
    match statuses.first() {
        Some(first) if statuses.iter().all(unanswered) => {
            feedback::Outcome::Unreachable { dsn: first.dsn.clone(), reason: first.reason.clone() }
        }
        Some(_) => feedback::Outcome::Reached,
        None => feedback::Outcome::Neutral,
    }
}

/// One request to a delivery agent; any failure to get an answer defers every recipient.
/// The flag says whether the agent answered (else its failure says nothing about the
/// destination).
async fn deliver(socket: &PathBuf, request: &DeliveryRequest, timeout: Duration) -> (Vec<RecipientStatus>, bool) {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.map_err(|e| (e, true))?;
        let frame = rpost_ipc::encode(request).map_err(|e| (std::io::Error::other(e), false))?;
        s.write_all(&frame).await.map_err(|e| (e, false))?;
        let mut dec = FrameDecoder::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(resp) = dec.decode::<DeliveryResponse>().map_err(|e| (std::io::Error::other(e), false))? {
                return Ok(resp);
            }
            let n = s.read(&mut buf).await.map_err(|e| (e, false))?;
            if n == 0 {
                return Err((std::io::Error::from(std::io::ErrorKind::UnexpectedEof), false));
            }
            dec.feed(&buf[..n]);
        }
    };
    let reason = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(resp)) if resp.statuses.len() == request.recipients.len() => return (resp.statuses, true),
        Ok(Ok(_)) => "delivery agent answered for the wrong recipients".to_string(),
        // Postfix's words when the transport's service does not answer.
        Ok(Err((_, true))) => "mail transport unavailable".to_string(),
        Ok(Err((e, false))) => format!("delivery agent failed: {e}"),
        Err(_) => "delivery agent timed out".to_string(),
    };
    let statuses = request
        .recipients
        .iter()
        .map(|r| {
            tracing::info!(
                "{}: to=<{}>, relay=none, dsn=4.3.0, status=deferred ({reason})",
                request.queue_id,
                r.address
            );
            RecipientStatus {
                index: r.index,
                outcome: Outcome::Deferred,
                dsn: "4.3.0".into(),
                relay: "none".into(),
                reason: reason.clone(),
                next_hop_dsn: false,
            }
        })
        .collect();
    (statuses, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(outcome: Outcome, relay: &str) -> RecipientStatus {
        RecipientStatus {
            index: 0,
            outcome,
            dsn: "4.4.1".into(),
            relay: relay.into(),
            reason: "why".into(),
            next_hop_dsn: false,
        }
    }

    #[test]
    fn feedback_from_statuses() {
        let refused = status(Outcome::Deferred, "none");
        assert!(matches!(site_feedback(std::slice::from_ref(&refused), true), feedback::Outcome::Unreachable { .. }));
        // A 4xx or 5xx from a server that answered is still a reached destination.
        assert_eq!(site_feedback(&[status(Outcome::Deferred, "mx[192.0.2.1]:25")], true), feedback::Outcome::Reached);
        assert_eq!(
            site_feedback(&[refused.clone(), status(Outcome::Sent, "mx[192.0.2.1]:25")], true),
            feedback::Outcome::Reached
        );
        assert_eq!(site_feedback(&[status(Outcome::Bounced, "none")], true), feedback::Outcome::Reached);
        // The agent itself did not answer: no verdict on the destination.
        assert_eq!(site_feedback(&[refused], false), feedback::Outcome::Neutral);
        assert_eq!(site_feedback(&[], true), feedback::Outcome::Neutral);
    }

    #[test]
    fn smtp_relays_lmtp_delivers() {
        let r = |t: &str, n: &str| Route { transport: t.into(), nexthop: n.into() };
        assert_eq!(success_action(&r("smtp", "example.test"), false), Some(Action::Relayed));
        assert_eq!(success_action(&r("relay", "[10.0.0.1]:25"), false), Some(Action::Relayed));
        // A DSN-capable next hop got NOTIFY=SUCCESS and reports itself: nothing from us.
        assert_eq!(success_action(&r("smtp", "example.test"), true), None);
        assert_eq!(success_action(&r("relay", "[10.0.0.1]:25"), true), None);
        assert_eq!(success_action(&r("lmtp", "unix:private/lmtp-deliver"), false), Some(Action::Delivered));
        assert_eq!(success_action(&r("lmtp", "unix:private/lmtp-deliver"), true), Some(Action::Delivered));
        assert_eq!(success_action(&r("smtp", "inet:127.0.0.1:24"), true), Some(Action::Delivered));
        assert_eq!(success_action(&r("local", "mail.example.test"), false), Some(Action::Delivered));
    }
}

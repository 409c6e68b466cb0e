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
//!   next hop); each group becomes one request to `private/<transport>`, with at most
//!   `default_destination_concurrency_limit` requests in flight per route.
//! * Results: sent and bounced recipients are marked done in the queue file (in place, one
//!   fdatasync per batch). When a message has no attempt left running it is removed (all
//!   done), expired (older than `maximal_queue_lifetime`: the rest is marked expired), or moved
//!   to `deferred/` with its mtime set to the next retry: the message's age, clamped to
//!   `minimal_backoff_time`..`maximal_backoff_time`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rpost_ipc::{DeliveryRecipient, DeliveryRequest, DeliveryResponse, FrameDecoder, Outcome, RecipientStatus};
use rpost_queue::{Queue, QueueDir, QueueFile, QueueId, RcptStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::bounce::{self, Failure, Reporter};
use crate::resolve::{Resolver, Route};

/// Tunables from main.cf.
#[derive(Debug, Clone)]
pub struct Limits {
    pub destination_concurrency: usize,
    pub active_limit: usize,
    pub minimal_backoff: Duration,
    pub maximal_backoff: Duration,
    pub queue_lifetime: Duration,
    pub queue_run_delay: Duration,
    pub ipc_timeout: Duration,
}

impl Limits {
    pub fn from_params(p: &rpost_config::Params) -> Result<Limits, rpost_config::ConfigError> {
        Ok(Limits {
            destination_concurrency: p.get_int("default_destination_concurrency_limit")?.max(1) as usize,
            active_limit: p.get_int("qmgr_message_active_limit")?.max(1) as usize,
            minimal_backoff: p.get_time("minimal_backoff_time")?,
            maximal_backoff: p.get_time("maximal_backoff_time")?,
            queue_lifetime: p.get_time("maximal_queue_lifetime")?,
            queue_run_delay: p.get_time("queue_run_delay")?,
            ipc_timeout: p.get_time("ipc_timeout")?,
        })
    }
}

/// What the scheduler reacts to.
#[derive(Debug)]
pub enum Event {
    /// A trigger from smtpd ('I'), rmaster's wakeup ('W') or anyone else.
    Trigger,
    /// `rmaster queue flush` ('F', or Postfix's 'D' and 'A'): scan deferred/ now.
    Flush,
    /// One delivery attempt finished.
    Done { id: QueueId, route: Route, statuses: Vec<RecipientStatus> },
}

/// A message in the active queue.
#[derive(Debug)]
struct Active {
    file: QueueFile,
    /// Attempts still running for it.
    running: usize,
    /// Recipients that failed for good, for the non-delivery notification.
    failures: Vec<Failure>,
}

impl Active {
    /// Remembers a final failure, unless the sender asked not to hear about it.
    fn failed(&mut self, status: RecipientStatus, expired: bool) {
        let Some(r) = self.file.envelope.recipients.get(status.index as usize) else { return };
        if bounce::wants_failure_notice(r.notify) {
            self.failures.push(Failure { address: r.address.clone(), orcpt: r.orcpt.clone(), status, expired });
        }
    }
}

/// A delivery attempt waiting for a free slot.
#[derive(Debug)]
struct Job {
    id: QueueId,
    route: Route,
    recipients: Vec<DeliveryRecipient>,
}

/// The queue manager state.
#[derive(Debug)]
pub struct Qmgr {
    queue: Queue,
    resolver: Resolver,
    limits: Limits,
    active: HashMap<QueueId, Active>,
    waiting: VecDeque<Job>,
    busy: HashMap<Route, usize>,
    tx: mpsc::UnboundedSender<Event>,
    last_deferred_scan: Option<std::time::Instant>,
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
            queue,
            resolver,
            limits,
            reporter,
            active: HashMap::new(),
            waiting: VecDeque::new(),
            busy: HashMap::new(),
            tx,
            last_deferred_scan: None,
        }
    }

    /// Runs until the event channel closes.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        // Recovery: whatever a previous qmgr left in active/ is delivered again.
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
                _ = tick.tick() => Event::Trigger,
            };
            match ev {
                Event::Trigger => self.intake(),
                Event::Flush => {
                    self.last_deferred_scan = None;
                    self.intake();
                }
                Event::Done { id, route, statuses } => self.done(id, route, statuses),
            }
            self.dispatch();
        }
    }

    /// Moves new and due messages into the active queue.
    fn intake(&mut self) {
        let due_deferred = self
            .last_deferred_scan
            .is_none_or(|t| t.elapsed() >= self.limits.queue_run_delay.min(Duration::from_secs(60)));
        let mut sources = vec![QueueDir::Incoming];
        if due_deferred {
            self.last_deferred_scan = Some(std::time::Instant::now());
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
                if let Err(e) = self.queue.move_to(&id, dir, QueueDir::Active) {
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
        let mut groups: HashMap<Route, Vec<DeliveryRecipient>> = HashMap::new();
        let mut unroutable = Vec::new();
        for (index, r) in file.pending() {
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
        let mut active = Active { file, running: 0, failures: Vec::new() };
        let mut updates = Vec::new();
        for (index, address, u) in unroutable {
            let status = if u.permanent { "bounced" } else { "deferred" };
            tracing::info!("{id}: to=<{address}>, relay=none, dsn={}, status={status} ({})", u.dsn, u.reason);
            if u.permanent {
                updates.push((index, RcptStatus::Bounced));
                let status = RecipientStatus {
                    index: index as u32,
                    outcome: Outcome::Bounced,
                    dsn: u.dsn.into(),
                    relay: "none".into(),
                    reason: u.reason,
                };
                active.failed(status, false);
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
            active.running += 1;
            self.waiting.push_back(Job { id: id.clone(), route, recipients });
        }
        let nothing_to_do = active.running == 0;
        self.active.insert(id.clone(), active);
        if nothing_to_do {
            self.finish(&id);
        }
    }

    /// Starts waiting jobs whose route has a free slot.
    fn dispatch(&mut self) {
        let mut still_waiting = VecDeque::new();
        while let Some(job) = self.waiting.pop_front() {
            let busy = self.busy.entry(job.route.clone()).or_insert(0);
            if *busy >= self.limits.destination_concurrency {
                still_waiting.push_back(job);
                continue;
            }
            *busy += 1;
            let Some(active) = self.active.get(&job.id) else { continue };
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
            let (id, route) = (job.id, job.route);
            tokio::spawn(async move {
                let statuses = deliver(&socket, &request, timeout).await;
                let _ = tx.send(Event::Done { id, route, statuses });
            });
        }
        self.waiting = still_waiting;
    }

    /// Applies the results of one attempt.
    fn done(&mut self, id: QueueId, route: Route, statuses: Vec<RecipientStatus>) {
        if let Some(n) = self.busy.get_mut(&route) {
            *n = n.saturating_sub(1);
        }
        let Some(active) = self.active.get_mut(&id) else { return };
        active.running = active.running.saturating_sub(1);
        let updates: Vec<(usize, RcptStatus)> = statuses
            .iter()
            .filter_map(|s| match s.outcome {
                Outcome::Sent => Some((s.index as usize, RcptStatus::Delivered)),
                Outcome::Bounced => Some((s.index as usize, RcptStatus::Bounced)),
                Outcome::Deferred => None,
            })
            .collect();
        if !updates.is_empty()
            && let Err(e) = active.file.mark_recipients(&updates)
        {
            // Not marked means delivered again later: at least once, never lost.
            tracing::warn!("{id}: mark recipients: {e}");
        }
        for s in statuses {
            if s.outcome == Outcome::Bounced {
                active.failed(s, false);
            }
        }
        if active.running == 0 {
            self.finish(&id);
        }
    }

    /// A message with no attempt running: remove, expire or defer it.
    fn finish(&mut self, id: &QueueId) {
        let Some(mut active) = self.active.remove(id) else { return };
        if active.file.all_done() {
            self.notify_sender(&mut active);
            self.remove(id);
            return;
        }
        let age = SystemTime::now().duration_since(active.file.envelope.arrival).unwrap_or_default();
        if age >= self.limits.queue_lifetime {
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
                let status = RecipientStatus {
                    index: i as u32,
                    outcome: Outcome::Bounced,
                    dsn: "4.4.7".into(),
                    relay: "none".into(),
                    reason: "message expired".into(),
                };
                active.failed(status, true);
            }
            self.notify_sender(&mut active);
            self.remove(id);
            return;
        }
        // Failures found in this pass are reported now; the rest of the message waits.
        self.notify_sender(&mut active);
        let backoff =
            age.clamp(self.limits.minimal_backoff, self.limits.maximal_backoff.max(self.limits.minimal_backoff));
        if let Err(e) = self.queue.move_to(id, QueueDir::Active, QueueDir::Deferred) {
            tracing::warn!("{id}: move to deferred: {e}");
            return;
        }
        let path = self.queue.path(QueueDir::Deferred, id);
        let retry = SystemTime::now() + backoff;
        if let Err(e) = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(retry)) {
            tracing::warn!("{id}: set retry time: {e}");
        }
    }
}

impl Qmgr {
    fn remove(&self, id: &QueueId) {
        match self.queue.remove(QueueDir::Active, id) {
            Ok(()) => tracing::info!("{id}: removed"),
            Err(e) => tracing::warn!("{id}: remove: {e}"),
        }
    }

    /// Queues the non-delivery notification for the failures collected so far. If that
    /// fails the message is not lost: the failures are logged, as Postfix logs them too.
    fn notify_sender(&self, active: &mut Active) {
        let failures = std::mem::take(&mut active.failures);
        let id = &active.file.id;
        let Some((env, content)) = bounce::build(&self.reporter, &active.file, &failures, SystemTime::now()) else {
            return;
        };
        let queued = self.queue.create(&env).and_then(|mut m| {
            m.write_content(&content)?;
            m.commit()
        });
        match queued {
            Ok(new) => {
                tracing::info!("{id}: sender non-delivery notification: {new}");
                let _ = self.tx.send(Event::Trigger);
            }
            Err(e) => tracing::warn!("{id}: could not queue the non-delivery notification: {e}"),
        }
    }
}

/// One request to a delivery agent; any failure to get an answer defers every recipient.
async fn deliver(socket: &PathBuf, request: &DeliveryRequest, timeout: Duration) -> Vec<RecipientStatus> {
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
        Ok(Ok(resp)) if resp.statuses.len() == request.recipients.len() => return resp.statuses,
        Ok(Ok(_)) => "delivery agent answered for the wrong recipients".to_string(),
        // Postfix's words when the transport's service does not answer.
        Ok(Err((_, true))) => "mail transport unavailable".to_string(),
        Ok(Err((e, false))) => format!("delivery agent failed: {e}"),
        Err(_) => "delivery agent timed out".to_string(),
    };
    request
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
            }
        })
        .collect()
}

//! One delivery request from qmgr on `private/local`: read the queue file, deliver each
//! recipient, forward what goes elsewhere, log in Postfix's shape, answer one status per
//! recipient. The queue file is only read; qmgr marks recipients.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rpost_address::Domains;
use rpost_daemon::delivery::{self, fmt_delay};
use rpost_ipc::{DeliveryRequest, DeliveryResponse, Outcome, RecipientStatus};
use rpost_lookup::ExpandOptions;
use rpost_queue::{QueueDir, QueueFile, QueueId};
use tokio::io::{AsyncRead, AsyncWrite};

use super::expand::{AliasTable, Expander, Status};
use super::settings::{Account, Settings};
use super::{Message, delivered_to_headers};
use super::{notice, requeue};

/// What every request shares: settings, tables (reopened when their files change).
#[derive(Debug)]
pub struct Shared {
    pub settings: Settings,
    pub domains: Domains,
    pub expand: ExpandOptions,
    aliases: Mutex<Arc<Vec<AliasTable>>>,
    pub ipc_timeout: Duration,
}

impl Shared {
    pub fn new(settings: Settings, domains: Domains, expand: ExpandOptions, ipc_timeout: Duration) -> Shared {
        let aliases = Mutex::new(Arc::new(open_aliases(&settings)));
        Shared { settings, domains, expand, aliases, ipc_timeout }
    }

    /// The alias tables, reopened first when one of their files changed.
    fn aliases(&self) -> Arc<Vec<AliasTable>> {
        let mut guard = self.aliases.lock().unwrap_or_else(|e| e.into_inner());
        if guard.iter().any(|t| t.broken || t.table.changed()) || guard.len() != self.settings.alias_maps.len() {
            *guard = Arc::new(open_aliases(&self.settings));
        }
        guard.clone()
    }
}

/// The file behind a table spec, whose owner gives the rights of its deliveries.
fn table_file(spec: &str) -> Option<PathBuf> {
    let spec = spec.strip_prefix("proxy:").unwrap_or(spec);
    let (kind, name) = spec.split_once(':')?;
    match kind {
        "hash" | "btree" => Some(rpost_lookup::db_path(std::path::Path::new(name))),
        "texthash" | "regexp" | "pcre" | "cidr" => Some(PathBuf::from(name)),
        _ => None,
    }
}

/// Opens alias_maps; a table that cannot be opened becomes a `fail:` table, so lookups
/// defer (never "not found", which would bounce mail for an existing alias).
fn open_aliases(s: &Settings) -> Vec<AliasTable> {
    let default_privs = || match Account::by_name(&s.default_privs) {
        Ok(Some(a)) => Ok(a),
        Ok(None) => Err(format!("default_privs: unknown user {}", s.default_privs)),
        Err(e) => Err(e),
    };
    let mut out = Vec::new();
    for spec in &s.alias_maps {
        let (table, broken) = match rpost_lookup::open(spec) {
            Ok(t) => {
                for w in t.warnings() {
                    tracing::warn!("alias_maps: {w}");
                }
                (t, false)
            }
            Err(e) => {
                tracing::warn!("alias_maps: {spec}: {e}");
                match rpost_lookup::open(&format!("fail:{spec}")) {
                    Ok(t) => (t, true),
                    Err(_) => continue,
                }
            }
        };
        let uid =
            table_file(spec).and_then(|p| std::fs::metadata(p).ok()).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        let privs = match uid {
            None | Some(0) => default_privs(),
            Some(uid) => match Account::by_uid(uid) {
                Ok(Some(a)) => Ok(a),
                Ok(None) => Err(format!("cannot find alias database owner (uid {uid}) of {spec}")),
                Err(e) => Err(e),
            },
        };
        out.push(AliasTable { table, privs, broken });
    }
    out
}

/// Serves one qmgr connection: one request in, one response out.
pub async fn serve<S>(shared: Arc<Shared>, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(req) = delivery::read_request(&mut stream, shared.ipc_timeout).await else { return };
    let queue_id = req.queue_id.clone();
    let work = shared.clone();
    let resp = match tokio::task::spawn_blocking(move || deliver(&work, &req)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("{queue_id}: delivery failed: {e}");
            return;
        }
    };
    delivery::send_response(&mut stream, &resp, &queue_id, shared.ipc_timeout).await;
}

fn open_queue_file(s: &Settings, req: &DeliveryRequest) -> Result<QueueFile, String> {
    // Only the spool's own directory names: never a path of the requester's choosing.
    if !QueueDir::ALL.iter().any(|d| d.name() == req.queue_dir) {
        return Err(format!("bad queue directory {:?} in delivery request", req.queue_dir));
    }
    let id = QueueId::parse(&req.queue_id).map_err(|e| e.to_string())?;
    QueueFile::open(&s.queue_root.join(&req.queue_dir).join(id.as_str())).map_err(|e| e.to_string())
}

/// Delivers one request (blocking).
pub fn deliver(shared: &Shared, req: &DeliveryRequest) -> DeliveryResponse {
    let started = Instant::now();
    let s = &shared.settings;
    let file = match open_queue_file(s, req) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("{}: {e}", req.queue_id);
            let statuses = req
                .recipients
                .iter()
                .map(|r| {
                    let st = Status::defer(format!("cannot read the queue file: {e}"));
                    log(req, &r.address, None, Duration::ZERO, started, &st);
                    rs(r.index, st)
                })
                .collect();
            return DeliveryResponse { statuses };
        }
    };
    let before = SystemTime::now().duration_since(file.envelope.arrival).unwrap_or_default();
    let content = match file.content() {
        Ok(c) => c,
        Err(e) => {
            let statuses = req
                .recipients
                .iter()
                .map(|r| rs(r.index, Status::defer(format!("cannot read the queue file: {e}"))))
                .collect();
            return DeliveryResponse { statuses };
        }
    };
    let aliases = shared.aliases();
    let mut statuses = Vec::new();
    for r in &req.recipients {
        let qr = file.envelope.recipients.get(r.index as usize);
        let original = qr.map(|q| q.original.clone()).filter(|o| !o.is_empty()).unwrap_or_else(|| r.address.clone());
        let msg = Message {
            queue_id: req.queue_id.clone(),
            sender: req.sender.clone(),
            delivered_to: delivered_to_headers(&content),
            content: content.clone(),
            original: original.clone(),
            envelope: file.envelope.clone(),
            queue_dir: req.queue_dir.clone(),
            index: r.index,
            orcpt: r.orcpt.clone(),
            notify: r.notify,
        };
        let mut ex = Expander::new(s, &shared.domains, &aliases, &msg);
        ex.deliver(&r.address);
        let mut leaves = std::mem::take(&mut ex.leaves);
        // Forwarded addresses: one queue file per (sender, Delivered-To).
        let forwards = std::mem::take(&mut ex.forwards);
        let mut groups: Vec<(String, String, Vec<String>)> = Vec::new();
        for f in forwards {
            match groups.iter_mut().find(|g| g.0 == f.sender && g.1 == f.delivered) {
                Some(g) => g.2.push(f.address),
                None => groups.push((f.sender, f.delivered, vec![f.address])),
            }
        }
        for (sender, delivered, addresses) in groups {
            let batch = requeue::Batch {
                origin: requeue::Origin { original: &original, orcpt: r.orcpt.as_deref(), notify: r.notify },
                sender: &sender,
                delivered: &delivered,
                addresses: &addresses,
            };
            let st = match requeue::queue(s, &shared.domains, &shared.expand, &msg, &batch) {
                Ok(id) => Status::sent(format!("forwarded as {id}")),
                Err(e) => Status::defer(format!("cannot forward mail: {e}")),
            };
            leaves.push((delivered, st, sender));
        }
        let handled = notify_owners(s, &msg, &mut leaves);
        let orig_to = Some(original.as_str()).filter(|o| !o.eq_ignore_ascii_case(&r.address));
        let mut logged = HashSet::new();
        for (to, st, _) in &leaves {
            if logged.insert((to.clone(), st.reason.clone())) {
                log(req, to, orig_to, before, started, st);
            }
        }
        // A failure its owner was told about is done, as Postfix's bounce_workaround.
        let results: Vec<(String, Status)> = leaves
            .into_iter()
            .zip(handled)
            .map(|((to, st, _), owner_told)| if owner_told { (to, Status::sent(st.reason)) } else { (to, st) })
            .collect();
        statuses.push(rs(r.index, summary(&results)));
    }
    DeliveryResponse { statuses }
}

/// Failures inside an owner- alias's expansion (their sender is not the message's) are
/// reported to that owner. Returns, per leaf, whether that happened.
fn notify_owners(s: &Settings, msg: &Message, leaves: &mut [(String, Status, String)]) -> Vec<bool> {
    let mut handled = vec![false; leaves.len()];
    let mut owners: Vec<String> = Vec::new();
    for (_, st, sender) in leaves.iter() {
        if st.outcome == Outcome::Bounced && *sender != msg.sender && !sender.is_empty() && !owners.contains(sender) {
            owners.push(sender.clone());
        }
    }
    for owner in owners {
        let idx: Vec<usize> =
            (0..leaves.len()).filter(|&i| leaves[i].1.outcome == Outcome::Bounced && leaves[i].2 == owner).collect();
        let failed: Vec<notice::Failed<'_>> =
            idx.iter().map(|&i| notice::Failed { address: &leaves[i].0, status: &leaves[i].1 }).collect();
        match notice::send(s, msg, &owner, &failed) {
            Ok(id) => {
                tracing::info!("{}: sender non-delivery notification to {owner}: {id}", msg.queue_id);
                for i in idx {
                    handled[i] = true;
                }
            }
            // The original sender hears of it instead: nothing is lost.
            Err(e) => tracing::warn!("{}: cannot notify {owner}: {e}", msg.queue_id),
        }
    }
    handled
}

/// The status of a request recipient from its deliveries: any deferral keeps it in the
/// queue, else any failure bounces it, else it is done.
pub fn summary(leaves: &[(String, Status)]) -> Status {
    for want in [Outcome::Deferred, Outcome::Bounced] {
        if let Some((_, st)) = leaves.iter().find(|(_, st)| st.outcome == want) {
            return st.clone();
        }
    }
    match leaves {
        [] => Status::sent("delivered (duplicate destinations only)"),
        [(_, one)] => one.clone(),
        many => Status::sent(many.iter().map(|(_, s)| s.reason.as_str()).collect::<Vec<_>>().join("; ")),
    }
}

fn rs(index: u32, st: Status) -> RecipientStatus {
    // Local delivery is final: no next hop takes over DSN duties.
    RecipientStatus {
        index,
        outcome: st.outcome,
        dsn: st.dsn,
        relay: "local".into(),
        reason: st.reason,
        next_hop_dsn: false,
    }
}

fn log(req: &DeliveryRequest, to: &str, orig_to: Option<&str>, before: Duration, started: Instant, st: &Status) {
    let spent = started.elapsed();
    let status = match st.outcome {
        Outcome::Sent => "sent",
        Outcome::Deferred => "deferred",
        Outcome::Bounced => "bounced",
    };
    let orig = orig_to.map(|o| format!("orig_to=<{o}>, ")).unwrap_or_default();
    tracing::info!(
        "{}: to=<{to}>, {orig}relay=local, delay={}, delays={}/0/0/{}, dsn={}, status={status} ({})",
        req.queue_id,
        fmt_delay(before + spent),
        fmt_delay(before),
        fmt_delay(spent),
        st.dsn,
        st.reason
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let sent = ("a".to_string(), Status::sent("delivered to mailbox"));
        let bounce = ("b".to_string(), Status::fail(false, "5.1.1", "unknown user: \"b\""));
        let defer = ("c".to_string(), Status::defer("later"));
        assert_eq!(summary(std::slice::from_ref(&sent)).reason, "delivered to mailbox");
        assert_eq!(summary(&[sent.clone(), bounce.clone()]).outcome, Outcome::Bounced);
        assert_eq!(summary(&[bounce, defer, sent.clone()]).outcome, Outcome::Deferred);
        assert_eq!(summary(&[sent.clone(), sent]).reason, "delivered to mailbox; delivered to mailbox");
        assert_eq!(table_file("hash:/etc/aliases"), Some(PathBuf::from("/etc/aliases.db")));
        assert_eq!(table_file("proxy:texthash:/x"), Some(PathBuf::from("/x")));
        assert_eq!(table_file("inline:{a=b}"), None);
    }
}

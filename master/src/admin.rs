//! `rmaster queue` (postqueue -p, postcat -q) and `rmaster map` (postmap).

use std::path::{Path, PathBuf};

use rpost_queue::{Queue, QueueDir, QueueId};

use crate::commands::{CommandError, load};

fn queue_of(dir: &Path) -> Result<Queue, CommandError> {
    let config = load(dir)?;
    Ok(Queue::new(PathBuf::from(config.params.get("queue_directory")?)))
}

fn queue_err(e: rpost_queue::QueueError) -> CommandError {
    CommandError::Other(e.to_string())
}

/// `rmaster queue list [--json]`: every message in the queue, postqueue -p style.
pub fn queue_list(dir: &Path, json: bool) -> Result<String, CommandError> {
    let queue = queue_of(dir)?;
    let (out, warnings) = if json {
        let mut entries = Vec::new();
        let warnings =
            rpost_queue::show::visit_queue(&queue, |file, d| entries.push(rpost_queue::show::QueueEntry::new(file, d)));
        let text = serde_json::to_string_pretty(&entries).map_err(|e| CommandError::Other(e.to_string()))?;
        (text + "\n", warnings)
    } else {
        rpost_queue::show::postqueue_listing(&queue)
    };
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(out)
}

/// `rmaster queue show ID`: the whole queue file, postcat -q style.
pub fn queue_show(dir: &Path, id: &str) -> Result<String, CommandError> {
    let queue = queue_of(dir)?;
    let id = QueueId::parse(id).map_err(queue_err)?;
    let d = queue.find(&id).ok_or_else(|| CommandError::Other(format!("{id}: no such message in the queue")))?;
    let file = queue.open(d, &id).map_err(queue_err)?;
    Ok(rpost_queue::show::show(&file))
}

/// `rmaster map query TYPE:NAME KEY...`: prints each key's value, as postmap -q; exit status
/// tells whether all keys were found.
pub fn map_query(spec: &str, keys: &[String]) -> Result<(String, bool), CommandError> {
    let table = rpost_lookup::open(spec).map_err(|e| CommandError::Other(e.to_string()))?;
    if let Some(w) = table.stale() {
        tracing::warn!("{w}");
    }
    let mut out = String::new();
    let mut all = true;
    for key in keys {
        match table.lookup(key).map_err(|e| CommandError::Other(e.to_string()))? {
            Some(v) if keys.len() == 1 => out.push_str(&format!("{v}\n")),
            Some(v) => out.push_str(&format!("{key}\t{v}\n")),
            None => all = false,
        }
    }
    Ok((out, all))
}

/// `rmaster map build [--aliases] [TYPE:]FILE`: writes FILE.db, as postmap/postalias.
pub fn map_build(spec: &str, aliases: bool) -> Result<(), CommandError> {
    let report = rpost_lookup::build_spec(spec, aliases).map_err(|e| CommandError::Other(e.to_string()))?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// Sends a trigger to qmgr's public socket (best effort: qmgr also scans on its own).
fn trigger_qmgr(queue: &Queue, what: &[u8]) {
    use std::io::Write;
    let path = queue.root().join("public").join("qmgr");
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(mut s) => {
            let _ = s.write_all(what);
        }
        Err(e) => tracing::warn!("{}: {e}; qmgr will see the change at its next scan", path.display()),
    }
}

/// The IDs an admin command applies to: `ALL` or explicit IDs.
fn select(queue: &Queue, ids: &[String], from: &[QueueDir]) -> Result<Vec<(QueueId, QueueDir)>, CommandError> {
    let mut out = Vec::new();
    if ids.iter().any(|i| i == "ALL") {
        for &d in from {
            out.extend(queue.scan(d).map_err(queue_err)?.into_iter().map(|id| (id, d)));
        }
        return Ok(out);
    }
    for raw in ids {
        let id = QueueId::parse(raw).map_err(queue_err)?;
        match queue.find(&id) {
            Some(d) if from.contains(&d) => out.push((id, d)),
            Some(QueueDir::Active) => {
                return Err(CommandError::Other(format!("{id}: being delivered right now; try again in a moment")));
            }
            Some(d) => tracing::warn!("{id}: is in {}, not affected", d.name()),
            None => tracing::warn!("{id}: no such message in the queue"),
        }
    }
    Ok(out)
}

/// `rmaster queue flush`: retry every deferred message now (postqueue -f).
pub fn queue_flush(dir: &Path) -> Result<(), CommandError> {
    let queue = queue_of(dir)?;
    let now = std::time::SystemTime::now();
    for id in queue.scan(QueueDir::Deferred).map_err(queue_err)? {
        let path = queue.path(QueueDir::Deferred, &id);
        if let Err(e) = std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(now)) {
            tracing::warn!("{id}: {e}");
        }
    }
    trigger_qmgr(&queue, b"F");
    Ok(())
}

/// `rmaster queue hold ID...|ALL` (postsuper -h): park messages in hold/.
pub fn queue_hold(dir: &Path, ids: &[String]) -> Result<String, CommandError> {
    let queue = queue_of(dir)?;
    let mut n = 0;
    for (id, d) in select(&queue, ids, &[QueueDir::Incoming, QueueDir::Deferred])? {
        queue.move_to(&id, d, QueueDir::Hold).map_err(queue_err)?;
        n += 1;
    }
    Ok(format!("rmaster: Placed on hold: {n} message{}\n", if n == 1 { "" } else { "s" }))
}

/// `rmaster queue release ID...|ALL` (postsuper -H): hold/ back to deferred/, due now.
pub fn queue_release(dir: &Path, ids: &[String]) -> Result<String, CommandError> {
    let queue = queue_of(dir)?;
    let mut n = 0;
    for (id, d) in select(&queue, ids, &[QueueDir::Hold])? {
        queue.move_to(&id, d, QueueDir::Deferred).map_err(queue_err)?;
        let path = queue.path(QueueDir::Deferred, &id);
        let _ =
            std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        n += 1;
    }
    trigger_qmgr(&queue, b"F");
    Ok(format!("rmaster: Released from hold: {n} message{}\n", if n == 1 { "" } else { "s" }))
}

/// `rmaster queue requeue ID...|ALL` (postsuper -r): back to incoming/, as if new.
pub fn queue_requeue(dir: &Path, ids: &[String]) -> Result<String, CommandError> {
    let queue = queue_of(dir)?;
    let mut n = 0;
    for (id, d) in select(&queue, ids, &[QueueDir::Deferred, QueueDir::Hold])? {
        queue.move_to(&id, d, QueueDir::Incoming).map_err(queue_err)?;
        n += 1;
    }
    trigger_qmgr(&queue, b"I");
    Ok(format!("rmaster: Requeued: {n} message{}\n", if n == 1 { "" } else { "s" }))
}

/// `rmaster queue delete ID...|ALL` (postsuper -d).
pub fn queue_delete(dir: &Path, ids: &[String]) -> Result<String, CommandError> {
    let queue = queue_of(dir)?;
    let mut n = 0;
    for (id, d) in select(&queue, ids, &[QueueDir::Incoming, QueueDir::Deferred, QueueDir::Hold, QueueDir::Corrupt])? {
        queue.remove(d, &id).map_err(queue_err)?;
        tracing::info!("{id}: removed");
        n += 1;
    }
    Ok(format!("rmaster: Deleted: {n} message{}\n", if n == 1 { "" } else { "s" }))
}

/// `rmaster queue shape [DIR]` (qshape): pending recipients per domain by age in minutes,
/// in qshape's doubling buckets.
pub fn queue_shape(dir: &Path, which: Option<&str>) -> Result<String, CommandError> {
    use std::collections::BTreeMap;
    const BUCKETS: [u64; 10] = [5, 10, 20, 40, 80, 160, 320, 640, 1280, u64::MAX];
    let queue = queue_of(dir)?;
    let dirs: Vec<QueueDir> = match which {
        None => vec![QueueDir::Incoming, QueueDir::Active, QueueDir::Deferred],
        Some(name) => vec![name.parse::<QueueDir>().map_err(|e| CommandError::Other(format!("{name}: {e}")))?],
    };
    let now = std::time::SystemTime::now();
    let mut rows: BTreeMap<String, [u64; 10]> = BTreeMap::new();
    let mut total = [0u64; 10];
    for d in dirs {
        for id in queue.scan(d).map_err(queue_err)? {
            let Ok(file) = queue.open(d, &id) else { continue };
            let minutes = now.duration_since(file.envelope.arrival).map(|a| a.as_secs() / 60).unwrap_or(0);
            let b = BUCKETS.iter().position(|&limit| minutes < limit).unwrap_or(9);
            for (_, r) in file.pending() {
                let domain = r.address.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()).unwrap_or_default();
                rows.entry(domain).or_insert([0; 10])[b] += 1;
                total[b] += 1;
            }
        }
    }
    let line = |name: &str, counts: &[u64; 10]| {
        let mut l = format!("{name:>30} {:>5}", counts.iter().sum::<u64>());
        for c in counts {
            l.push_str(&format!(" {c:>4}"));
        }
        l.push('\n');
        l
    };
    let mut out = format!("{:>30} {:>5}", "", "T");
    for h in ["5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+"] {
        out.push_str(&format!(" {h:>4}"));
    }
    out.push('\n');
    out.push_str(&line("TOTAL", &total));
    let mut sorted: Vec<_> = rows.into_iter().collect();
    sorted.sort_by(|a, b| b.1.iter().sum::<u64>().cmp(&a.1.iter().sum::<u64>()).then(a.0.cmp(&b.0)));
    for (domain, counts) in sorted {
        out.push_str(&line(&domain, &counts));
    }
    Ok(out)
}

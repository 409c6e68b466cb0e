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
    let mut out = String::new();
    let mut entries = Vec::new();
    let (mut bytes, mut count) = (0u64, 0usize);
    for d in [QueueDir::Incoming, QueueDir::Active, QueueDir::Deferred, QueueDir::Hold] {
        for id in queue.scan(d).map_err(queue_err)? {
            // A file may move or vanish between scan and open: qmgr is working.
            let file = match queue.open(d, &id) {
                Ok(f) => f,
                Err(e) if queue.find(&id).is_none() => {
                    tracing::debug!("{id}: gone while listing: {e}");
                    continue;
                }
                Err(e) => {
                    tracing::warn!("{id}: {e}");
                    continue;
                }
            };
            bytes += file.content_len();
            count += 1;
            if json {
                entries.push(rpost_queue::show::QueueEntry::new(&file, d));
            } else {
                if count == 1 {
                    out.push_str(&rpost_queue::show::postqueue_header());
                }
                out.push_str(&rpost_queue::show::postqueue_line(&file, d));
            }
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&entries).map_err(|e| CommandError::Other(e.to_string()))?;
        return Ok(text + "\n");
    }
    if count == 0 {
        return Ok(format!("{}\n", rpost_queue::show::QUEUE_EMPTY));
    }
    out.push_str(&rpost_queue::show::postqueue_trailer(bytes, count));
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

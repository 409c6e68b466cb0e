//! The queue listing `mailq` shows (postqueue -p): the same lines as `rmaster queue list`,
//! from `rpost_queue::show`. sendmail compiles this file too (for root's `mailq` while the
//! mail system is down, as Postfix's postqueue reads the queue itself then), so it logs
//! nothing itself: problems come back as warnings.

use rpost_queue::{Queue, QueueDir};

/// The listing of incoming/, active/, deferred/ and hold/, oldest first per directory, and
/// warnings about directories or files that could not be read.
pub fn listing(queue: &Queue) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut warnings = Vec::new();
    let (mut bytes, mut count) = (0u64, 0usize);
    for d in [QueueDir::Incoming, QueueDir::Active, QueueDir::Deferred, QueueDir::Hold] {
        let ids = match queue.scan(d) {
            Ok(ids) => ids,
            Err(e) => {
                warnings.push(format!("scan {}: {e}", d.name()));
                continue;
            }
        };
        for id in ids {
            // qmgr moves and removes files while we list: a vanished file is no error.
            let file = match queue.open(d, &id) {
                Ok(f) => f,
                Err(e) => {
                    if queue.find(&id).is_some() {
                        warnings.push(format!("{id}: {e}"));
                    }
                    continue;
                }
            };
            bytes += file.content_len();
            count += 1;
            if count == 1 {
                out.push_str(&rpost_queue::show::postqueue_header());
            }
            out.push_str(&rpost_queue::show::postqueue_line(&file, d));
        }
    }
    if count == 0 {
        return (format!("{}\n", rpost_queue::show::QUEUE_EMPTY), warnings);
    }
    out.push_str(&rpost_queue::show::postqueue_trailer(bytes, count));
    (out, warnings)
}

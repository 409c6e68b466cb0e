//! Ad-hoc commit latency: `cargo run --release -p rpost-queue --example
//! commit_latency [DIR]`. Commits 4 KiB messages into DIR (default: a
//! fresh directory under /var/tmp) from 1 and from 8 threads and prints
//! the median and 99th percentile create+write+commit time.

use std::time::{Duration, Instant};

use rpost_queue::{Envelope, Queue, QueueDir, Recipient};

fn run(q: &Queue, threads: usize, per_thread: usize) -> Vec<Duration> {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut env = Envelope::new("sender@example.test");
                env.recipients.push(Recipient::new("rcpt@example.test"));
                let content = vec![b'x'; 4096];
                (0..per_thread)
                    .map(|_| {
                        let t = Instant::now();
                        let mut m = q.create(&env).unwrap();
                        m.write_content(&content).unwrap();
                        m.commit().unwrap();
                        t.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort();
    all
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("rpost-commit-latency-{}", std::process::id())));
    let q = Queue::new(&dir);
    q.ensure_dirs().unwrap();
    for threads in [1, 8] {
        let start = Instant::now();
        let lat = run(&q, threads, 2000 / threads);
        let wall = start.elapsed();
        println!(
            "{threads} thread(s): {} commits, median {} us, p99 {} us, {:.0} commits/s",
            lat.len(),
            lat[lat.len() / 2].as_micros(),
            lat[lat.len() * 99 / 100].as_micros(),
            lat.len() as f64 / wall.as_secs_f64()
        );
        for id in q.scan(QueueDir::Incoming).unwrap() {
            q.remove(QueueDir::Incoming, &id).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

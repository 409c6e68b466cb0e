//! Queue IDs: 16 uppercase hex digits, sortable by arrival time.
//!
//! Layout: 13 hex digits of microseconds since the Unix epoch (good until
//! the year 2112; 11 digits would wrap every 203 days), then 3 hex digits
//! from a per-process counter whose start is derived from the pid, so IDs
//! made in the same microsecond by different processes rarely collide.
//! Uniqueness is finally guaranteed by `O_EXCL` creation and a retry with a
//! fresh ID.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::QueueError;

const ID_LEN: usize = 16;
const TIME_DIGITS: usize = 13;
const TIME_MASK: u64 = (1 << (4 * TIME_DIGITS)) - 1;
const COUNTER_MASK: u32 = (1 << (4 * (ID_LEN - TIME_DIGITS))) - 1;

/// Counter for the low digits, offset by [`SEED`].
static COUNTER: AtomicU32 = AtomicU32::new(0);
static SEED: OnceLock<u32> = OnceLock::new();
/// The last timestamp used, so IDs from one process never go backwards
/// when the clock is stepped back.
static LAST_MICROS: AtomicU64 = AtomicU64::new(0);

/// A queue ID; also the file name of the queue file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct QueueId(String);

impl QueueId {
    /// A new ID for a message arriving now.
    pub fn generate() -> QueueId {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        let micros = LAST_MICROS.fetch_max(now, Ordering::Relaxed).max(now) & TIME_MASK;
        let count = next_count();
        QueueId(format!("{micros:013X}{count:03X}"))
    }

    /// Validates an ID given by a user or found in a directory. Only
    /// exactly 16 characters `[0-9A-F]` pass, so an ID can never name a
    /// path outside its directory.
    pub fn parse(s: &str) -> Result<QueueId, QueueError> {
        if s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
            Ok(QueueId(s.to_owned()))
        } else {
            Err(QueueError::BadId(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The arrival time encoded in the ID, in microseconds since the epoch.
    pub fn arrival_micros(&self) -> u64 {
        // Validated at construction, so this cannot fail.
        u64::from_str_radix(&self.0[..TIME_DIGITS], 16).unwrap_or(0)
    }
}

fn next_count() -> u32 {
    // Spread processes over the counter space: the pid times a large odd
    // constant (Knuth's multiplicative hash), top bits.
    let seed = *SEED.get_or_init(|| std::process::id().wrapping_mul(0x9E37_79B1) >> 20);
    seed.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)) & COUNTER_MASK
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for QueueId {
    type Err = QueueError;

    fn from_str(s: &str) -> Result<QueueId, QueueError> {
        QueueId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_parse_and_are_unique() {
        let ids: Vec<QueueId> = (0..10_000).map(|_| QueueId::generate()).collect();
        let set: HashSet<&QueueId> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
        for id in &ids {
            assert_eq!(QueueId::parse(id.as_str()).unwrap(), *id);
        }
        // Arrival order: never goes backwards within a process.
        for w in ids.windows(2) {
            assert!(w[0].arrival_micros() <= w[1].arrival_micros());
        }
    }

    #[test]
    fn arrival_micros_is_close_to_now() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        let id = QueueId::generate();
        assert!(id.arrival_micros().abs_diff(now) < 10_000_000);
    }

    #[test]
    fn bad_ids_rejected() {
        for bad in [
            "../etc",
            "../../etc/passwd",
            "0123456789abcdef",
            "0123456789ABCDE",
            "0123456789ABCDEF0",
            "",
            "0123456789ABCDEG",
            "0123456789ABCD/F",
            "0123456789ABCD\0F",
            "０123456789ABCDE",
        ] {
            let err = QueueId::parse(bad).unwrap_err();
            assert!(matches!(err, QueueError::BadId(_)), "{bad:?}");
        }
        assert!(QueueId::parse("0123456789ABCDEF").is_ok());
    }
}

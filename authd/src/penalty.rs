//! Per-address failure penalty, as Dovecot's auth-penalty: every failed authentication from
//! a remote address raises its penalty, and each new request from that address waits
//! `2 s * 2^(failures-1)`, at most 15 s, before it is even looked at. The waiting is a timer
//! in the request's own task, so other clients never wait for it. A success clears the
//! address; an hour without failures forgets it.
//!
//! IPv6 addresses are counted per /64, since one host usually owns a whole /64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Penalty of the first failure (Dovecot AUTH_PENALTY_INIT_SECS).
pub const INIT: Duration = Duration::from_secs(2);
/// Highest penalty (Dovecot AUTH_PENALTY_MAX_SECS).
pub const MAX: Duration = Duration::from_secs(15);
/// Failures are forgotten this long after the last one (Dovecot AUTH_PENALTY_TIMEOUT).
pub const TIMEOUT: Duration = Duration::from_secs(3600);
/// Addresses remembered at most; the oldest are dropped first.
pub const CAPACITY: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u64,
    last: Instant,
}

/// The penalty table.
#[derive(Debug, Default)]
pub struct Penalty {
    map: Mutex<HashMap<IpAddr, Entry>>,
}

/// The key an address is counted under.
pub fn key(addr: &str) -> Option<IpAddr> {
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Some(IpAddr::V4(v4));
            }
            let s = v6.segments();
            Some(IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0)))
        }
        v4 => Some(v4),
    }
}

/// The delay for `failures` earlier failures.
pub fn delay_for(failures: u64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let shift = (failures - 1).min(8) as u32;
    (INIT * 2u32.pow(shift)).min(MAX)
}

impl Penalty {
    pub fn new() -> Penalty {
        Penalty::default()
    }

    /// How long a new request from `ip` must wait.
    pub fn delay(&self, ip: IpAddr, now: Instant) -> Duration {
        let map = self.map.lock().expect("penalty lock");
        match map.get(&ip) {
            Some(e) if now.duration_since(e.last) < TIMEOUT => delay_for(e.failures),
            _ => Duration::ZERO,
        }
    }

    /// Records a failure; returns the address's failure count.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> u64 {
        let mut map = self.map.lock().expect("penalty lock");
        if map.len() >= CAPACITY && !map.contains_key(&ip) {
            map.retain(|_, e| now.duration_since(e.last) < TIMEOUT);
            if map.len() >= CAPACITY
                && let Some(oldest) = map.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let e = map.entry(ip).or_insert(Entry { failures: 0, last: now });
        if now.duration_since(e.last) >= TIMEOUT {
            e.failures = 0;
        }
        e.failures += 1;
        e.last = now;
        e.failures
    }

    /// A success clears the address.
    pub fn succeeded(&self, ip: IpAddr) {
        self.map.lock().expect("penalty lock").remove(&ip);
    }
}

/// Whether a failure count deserves a warning in the log: the first, then 10, 100, 1000...
pub fn worth_logging(failures: u64) -> bool {
    let s = failures.to_string();
    failures == 1 || (s.len() >= 2 && s.starts_with('1') && s[1..].bytes().all(|b| b == b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_clears() {
        let p = Penalty::new();
        let ip = key("192.0.2.1").unwrap();
        let other = key("192.0.2.2").unwrap();
        let t = Instant::now();
        assert_eq!(p.delay(ip, t), Duration::ZERO);
        let delays: Vec<u64> = (0..6)
            .map(|_| {
                p.failed(ip, t);
                p.delay(ip, t).as_secs()
            })
            .collect();
        assert_eq!(delays, vec![2, 4, 8, 15, 15, 15]);
        assert_eq!(p.delay(other, t), Duration::ZERO, "other addresses are not affected");
        assert_eq!(p.delay(ip, t + TIMEOUT), Duration::ZERO, "forgotten after the timeout");
        assert_eq!(p.failed(ip, t + TIMEOUT), 1);
        p.succeeded(ip);
        assert_eq!(p.delay(ip, t), Duration::ZERO);
    }

    #[test]
    fn keys() {
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), key("2001:db8:1:2::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_eq!(key("not an address"), None);
        assert!(worth_logging(1) && worth_logging(10) && worth_logging(100) && worth_logging(1000));
        assert!(!worth_logging(2) && !worth_logging(11) && !worth_logging(101) && !worth_logging(20));
    }

    #[test]
    fn bounded() {
        let p = Penalty::new();
        let t = Instant::now();
        for i in 0..(CAPACITY as u32 + 10) {
            p.failed(IpAddr::V4(std::net::Ipv4Addr::from(i)), t + Duration::from_millis(i as u64));
        }
        assert!(p.map.lock().unwrap().len() <= CAPACITY);
    }
}

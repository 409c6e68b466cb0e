//! The connection cache (Postfix's scache, kept inside the smtp-client process): after a
//! delivery, an SMTP or LMTP session that ended cleanly stays open, idle, under the next hop
//! it served (TCP connections and LMTP UNIX-domain ones, in two caches). The next request for that next hop takes it (newest first), checks it with
//! RSET (`smtp_rset_timeout`) and goes straight to MAIL FROM, skipping DNS, connect,
//! greeting and EHLO. An idle connection is closed with QUIT after
//! `smtp_connection_cache_time_limit`; none is cached again once it is older than
//! `smtp_connection_reuse_time_limit` or has served `smtp_connection_reuse_count_limit`
//! deliveries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::session::Caps;
use crate::settings::CacheSettings;

/// One open session between deliveries.
#[derive(Debug)]
pub struct Conn<S> {
    pub stream: S,
    /// The server's name (`host[addr]`, or the socket as logged), and its address for TCP.
    pub host: String,
    pub addr: Option<SocketAddr>,
    /// Capabilities from the EHLO reply at connect time.
    pub caps: Caps,
    /// When the connection was made.
    pub born: Instant,
    /// Deliveries made over it so far.
    pub uses: u32,
}

#[derive(Debug)]
struct Idle<S> {
    id: u64,
    conn: Conn<S>,
}

/// Idle connections by destination key.
#[derive(Debug)]
pub struct Cache<S> {
    settings: CacheSettings,
    idle: Mutex<HashMap<String, Vec<Idle<S>>>>,
    next_id: AtomicU64,
}

impl<S: AsyncWrite + Unpin + Send + 'static> Cache<S> {
    pub fn new(settings: CacheSettings) -> Cache<S> {
        Cache { settings, idle: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }

    /// Is caching on for this next hop (on demand, or listed in
    /// `smtp_connection_cache_destinations`)?
    pub fn enabled_for(&self, nexthop: &str) -> bool {
        !self.settings.idle.is_zero()
            && (self.settings.enabled || self.settings.destinations.iter().any(|d| d.eq_ignore_ascii_case(nexthop)))
    }

    pub fn rset_timeout(&self) -> Duration {
        self.settings.rset_timeout
    }

    /// May a connection of this age and use count be cached again?
    pub fn reusable(&self, born: Instant, uses: u32) -> bool {
        !self.settings.idle.is_zero()
            && born.elapsed() < self.settings.reuse_time
            && (self.settings.reuse_count == 0 || uses < self.settings.reuse_count)
    }

    /// Takes the most recently cached connection for `key`.
    pub fn take(&self, key: &str) -> Option<Conn<S>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        let conn = list.pop().map(|i| i.conn);
        if list.is_empty() {
            idle.remove(key);
        }
        conn
    }

    /// Caches `conn` under `key` (when its age and uses allow) and arranges for it to be
    /// closed after the idle time limit unless a delivery takes it first.
    pub fn put(self: &Arc<Self>, key: &str, conn: Conn<S>) {
        if !self.reusable(conn.born, conn.uses) {
            tokio::spawn(quit(conn.stream));
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_owned()).or_default().push(Idle { id, conn });
        let cache = Arc::clone(self);
        let key = key.to_owned();
        let wait = self.settings.idle;
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let expired = {
                let mut idle = cache.idle.lock().unwrap_or_else(|e| e.into_inner());
                let Some(list) = idle.get_mut(&key) else { return };
                let found = list.iter().position(|i| i.id == id).map(|pos| list.remove(pos));
                if list.is_empty() {
                    idle.remove(&key);
                }
                found
            };
            if let Some(i) = expired {
                quit(i.conn.stream).await;
            }
        });
    }

    /// Connections idle right now (for tests and logs).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).values().map(Vec::len).sum()
    }
}

/// Says goodbye without waiting for the reply (as `smtp_skip_quit_response`).
async fn quit<S: AsyncWrite + Unpin>(mut stream: S) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(b"QUIT\r\n").await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    fn settings(idle_ms: u64, count: u32) -> CacheSettings {
        CacheSettings {
            enabled: true,
            destinations: Vec::new(),
            idle: Duration::from_millis(idle_ms),
            reuse_time: Duration::from_secs(300),
            reuse_count: count,
            rset_timeout: Duration::from_secs(20),
        }
    }

    async fn pair() -> (Conn<TcpStream>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let conn = Conn {
            stream: client,
            host: "mx[127.0.0.1]".into(),
            addr: Some(addr),
            caps: Caps::default(),
            born: Instant::now(),
            uses: 1,
        };
        (conn, server)
    }

    #[test]
    fn idle_connections_are_taken_or_closed_with_quit() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let cache = Arc::new(Cache::new(settings(60_000, 0)));
            let (conn, _server) = pair().await;
            cache.put("b.test", conn);
            assert_eq!(cache.idle_count(), 1);
            assert!(cache.take("a.test").is_none());
            let conn = cache.take("b.test").expect("cached");
            assert_eq!(cache.idle_count(), 0);
            drop(conn);
            // Off on demand, on for listed destinations only.
            let mut s = settings(60_000, 0);
            s.enabled = false;
            s.destinations = vec!["[relay.example]:587".into()];
            let listed = Cache::<TcpStream>::new(s);
            assert!(listed.enabled_for("[RELAY.example]:587") && !listed.enabled_for("example.com"));

            // After the idle time limit the connection is closed with QUIT.
            let cache = Arc::new(Cache::new(settings(10, 0)));
            let (conn, mut server) = pair().await;
            cache.put("b.test", conn);
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), server.read_to_end(&mut got)).await.unwrap().unwrap();
            assert_eq!(got, b"QUIT\r\n");
            assert!(cache.take("b.test").is_none());

            // smtp_connection_reuse_count_limit: a connection that served its count is closed.
            let cache = Arc::new(Cache::new(settings(60_000, 1)));
            let (conn, mut server) = pair().await;
            cache.put("b.test", conn);
            assert!(cache.take("b.test").is_none());
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(20), server.read_to_end(&mut got)).await.unwrap().unwrap();
            assert_eq!(got, b"QUIT\r\n");
        });
    }
}

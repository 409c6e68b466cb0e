//! A tiny authoritative DNS server on loopback for tests: UDP and TCP on the same port,
//! one zone given in code, stopped on drop.
//!
//! ```no_run
//! use rpost_testkit::dns::{DnsServer, Zone};
//! let dns = DnsServer::start(
//!     Zone::new().mx("a.test", 10, "mx.a.test").a("mx.a.test", "127.0.0.2".parse().unwrap()).null_mx("nomail.test"),
//! );
//! // main.cf: dns_resolver_servers = 127.0.0.1:PORT
//! let param = dns.servers_param();
//! ```
//!
//! Names not in the zone answer NXDOMAIN; a name with records but none of the asked type
//! answers NOERROR with no data (both with the zone's SOA, so resolvers cache them as
//! negative answers); [`Zone::servfail`] names answer SERVFAIL. Messages are encoded and
//! decoded with hickory-proto, so the wire format is a real resolver's.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// TTL of every record: short, tests never wait for it.
const TTL: u32 = 1;

/// The records the server answers with.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// (lower-case name without the trailing dot, data)
    records: Vec<(String, RData)>,
    servfail: Vec<String>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn name(s: &str) -> Name {
    let mut n = Name::from_ascii(s).unwrap_or_else(|e| panic!("bad DNS name {s:?}: {e}"));
    n.set_fqdn(true);
    n
}

impl Zone {
    pub fn new() -> Zone {
        Zone::default()
    }

    /// `domain MX pref exchange`.
    pub fn mx(mut self, domain: &str, pref: u16, exchange: &str) -> Zone {
        self.records.push((key(domain), RData::MX(MX::new(pref, name(exchange)))));
        self
    }

    /// RFC 7505 null MX: `domain MX 0 .`.
    pub fn null_mx(mut self, domain: &str) -> Zone {
        self.records.push((key(domain), RData::MX(MX::new(0, Name::root()))));
        self
    }

    pub fn a(mut self, host: &str, ip: Ipv4Addr) -> Zone {
        self.records.push((key(host), RData::A(A(ip))));
        self
    }

    pub fn aaaa(mut self, host: &str, ip: Ipv6Addr) -> Zone {
        self.records.push((key(host), RData::AAAA(AAAA(ip))));
        self
    }

    /// A or AAAA, whichever `ip` is.
    pub fn addr(self, host: &str, ip: IpAddr) -> Zone {
        match ip {
            IpAddr::V4(v4) => self.a(host, v4),
            IpAddr::V6(v6) => self.aaaa(host, v6),
        }
    }

    /// `name TXT text` (one string).
    pub fn txt(mut self, host: &str, text: &str) -> Zone {
        self.records.push((key(host), RData::TXT(TXT::new(vec![text.to_string()]))));
        self
    }

    /// Every query for `name` answers SERVFAIL (a broken or unreachable authority).
    pub fn servfail(mut self, name: &str) -> Zone {
        self.servfail.push(key(name));
        self
    }

    /// The response to one query message.
    pub fn answer(&self, query: &Message) -> Message {
        let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
        resp.metadata.recursion_desired = query.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.metadata.authoritative = true;
        resp.queries = query.queries.clone();
        if query.metadata.message_type != MessageType::Query
            || query.metadata.op_code != OpCode::Query
            || query.queries.len() != 1
        {
            resp.metadata.response_code = ResponseCode::FormErr;
            return resp;
        }
        let q = &query.queries[0];
        let k = key(&q.name.to_ascii());
        if self.servfail.contains(&k) {
            resp.metadata.response_code = ResponseCode::ServFail;
            return resp;
        }
        let mut exists = false;
        for (n, data) in &self.records {
            if *n != k {
                continue;
            }
            exists = true;
            if data.record_type() == q.query_type || q.query_type == RecordType::ANY {
                resp.answers.push(Record::from_rdata(q.name.clone(), TTL, data.clone()));
            }
        }
        if resp.answers.is_empty() {
            if !exists {
                resp.metadata.response_code = ResponseCode::NXDomain;
            }
            let soa = SOA::new(name("ns.test"), name("hostmaster.test"), 1, 60, 60, 60, TTL);
            resp.authorities.push(Record::from_rdata(name("test"), TTL, RData::SOA(soa)));
        }
        resp
    }

    fn respond(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let query = Message::from_vec(packet).ok()?;
        self.answer(&query).to_vec().ok()
    }
}

/// A running server; stops (and joins its threads) on drop.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    queries: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `zone` on a free port of 127.0.0.1, UDP and TCP.
    pub fn start(zone: Zone) -> DnsServer {
        // The same port for UDP and TCP: retry when TCP finds the UDP port taken.
        let (udp, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
                let tcp = TcpListener::bind(udp.local_addr().ok()?).ok()?;
                Some((udp, tcp))
            })
            .expect("a free port for UDP and TCP");
        let addr = udp.local_addr().expect("local addr");
        udp.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        tcp.set_nonblocking(true).expect("nonblocking");
        let zone = Arc::new(zone);
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        {
            let (zone, stop, queries) = (zone.clone(), stop.clone(), queries.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = udp.recv_from(&mut buf) else { continue };
                    queries.fetch_add(1, Ordering::Relaxed);
                    if let Some(out) = zone.respond(&buf[..n]) {
                        let _ = udp.send_to(&out, peer);
                    }
                }
            }));
        }
        {
            let (stop, queries) = (stop.clone(), queries.clone());
            let workers = Arc::new(Mutex::new(Vec::new()));
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((conn, _)) => {
                            let (zone, queries) = (zone.clone(), queries.clone());
                            let h = std::thread::spawn(move || serve_tcp(conn, &zone, &queries));
                            workers.lock().expect("workers").push(h);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
                for h in workers.lock().expect("workers").drain(..) {
                    let _ = h.join();
                }
            }));
        }
        DnsServer { addr, stop, queries, threads }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The value for main.cf's `dns_resolver_servers`.
    pub fn servers_param(&self) -> String {
        self.addr.to_string()
    }

    /// Queries answered so far (UDP and TCP).
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

/// RFC 1035 4.2.2: each message is preceded by its two-byte length.
fn serve_tcp(mut conn: TcpStream, zone: &Zone, queries: &AtomicUsize) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    loop {
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut packet = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut packet).is_err() {
            return;
        }
        queries.fetch_add(1, Ordering::Relaxed);
        let Some(out) = zone.respond(&packet) else { return };
        let mut framed = (out.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        if conn.write_all(&framed).is_err() {
            return;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn zone() -> Zone {
        Zone::new()
            .mx("a.test", 20, "mx2.a.test")
            .mx("a.test", 10, "mx1.a.test")
            .a("mx1.a.test", Ipv4Addr::new(127, 0, 0, 2))
            .aaaa("mx1.a.test", Ipv6Addr::LOCALHOST)
            .null_mx("nomail.test")
            .servfail("broken.test")
    }

    fn query(n: &str, t: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name(n), t));
        m
    }

    fn udp(dns: &DnsServer, q: &Message) -> Message {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.send_to(&q.to_vec().unwrap(), dns.addr()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    fn tcp(dns: &DnsServer, q: &Message) -> Message {
        let mut s = TcpStream::connect(dns.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let bytes = q.to_vec().unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        s.write_all(&framed).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        Message::from_vec(&buf).unwrap()
    }

    fn mxs(m: &Message) -> Vec<(u16, String)> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn answers_over_udp_and_tcp() {
        let dns = DnsServer::start(zone());
        for get in [udp, tcp] {
            let q = query("A.Test.", RecordType::MX);
            let r = get(&dns, &q);
            assert_eq!(r.metadata.id, q.metadata.id);
            assert_eq!(r.metadata.message_type, MessageType::Response);
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            assert_eq!(mxs(&r), [(20, "mx2.a.test.".to_string()), (10, "mx1.a.test.".to_string())]);
            let r = get(&dns, &query("mx1.a.test", RecordType::A));
            assert_eq!(r.answers.len(), 1);
            assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(127, 0, 0, 2))));
            let r = get(&dns, &query("mx1.a.test", RecordType::AAAA));
            assert_eq!(r.answers[0].data, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
        }
        assert_eq!(dns.queries(), 6);
    }

    #[test]
    fn negative_answers() {
        let dns = DnsServer::start(zone());
        // The name exists, the type does not: NOERROR, no data, an SOA for negative caching.
        let r = udp(&dns, &query("mx1.a.test", RecordType::MX));
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        let r = udp(&dns, &query("nowhere.test", RecordType::MX));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = udp(&dns, &query("broken.test", RecordType::MX));
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        let r = udp(&dns, &query("nomail.test", RecordType::MX));
        assert_eq!(mxs(&r), [(0, ".".to_string())]);
    }

    #[test]
    fn garbage_is_ignored_and_drop_stops_the_server() {
        let dns = DnsServer::start(zone());
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        s.send_to(b"\x00\x01junk", dns.addr()).unwrap();
        // Still serving after junk.
        assert_eq!(udp(&dns, &query("a.test", RecordType::MX)).answers.len(), 2);
        let addr = dns.addr();
        drop(dns);
        assert!(TcpStream::connect(addr).is_err(), "the TCP listener is closed");
    }
}

//! The client of Postfix's SMTP access policy delegation (`check_policy_service`): one
//! request of `name=value` lines ended by an empty line, one reply whose `action=` is an
//! access(5) action (SMTPD_POLICY_README). Policy servers written for Postfix (postgrey,
//! policyd-spf, rate limiters) answer rpost the same way.
//!
//! Each request opens its own connection (Postfix keeps one open per server; a server
//! must answer either way). A server that cannot be reached, does not answer within
//! `smtpd_policy_service_timeout` or answers without an action is asked again, up to
//! `smtpd_policy_service_try_limit` times; then the restriction takes
//! `smtpd_policy_service_default_action` (451 4.3.5 by default), as Postfix does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::dnscheck::Verdict;

/// Longest reply read from a policy server.
const MAX_REPLY: usize = 8192;

/// Where a policy server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:path`, relative to the queue directory unless absolute.
    Unix(PathBuf),
    /// `inet:host:port` (`inet:[::1]:port` for IPv6).
    Inet(String, u16),
}

impl Endpoint {
    pub fn parse(spec: &str) -> Option<Endpoint> {
        if let Some(path) = spec.strip_prefix("unix:") {
            return (!path.is_empty()).then(|| Endpoint::Unix(PathBuf::from(path)));
        }
        let rest = spec.strip_prefix("inet:")?;
        let (host, port) = rest.rsplit_once(':')?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        Some(Endpoint::Inet(host.to_string(), port.parse().ok()?))
    }
}

/// Asks the server `spec` about `request`; `queue_root` anchors relative UNIX paths.
pub async fn ask(spec: &str, queue_root: &Path, request: &str, timeout: Duration, tries: u32) -> Verdict {
    let Some(endpoint) = Endpoint::parse(spec) else { return Verdict::TempFail };
    for attempt in 1..=tries.max(1) {
        match tokio::time::timeout(timeout, ask_once(&endpoint, queue_root, request)).await {
            Ok(Ok(action)) => return Verdict::Action(action),
            Ok(Err(e)) => tracing::warn!("policy service {spec}: {e} (attempt {attempt} of {tries})"),
            Err(_) => {
                tracing::warn!("policy service {spec}: no answer within {timeout:?} (attempt {attempt} of {tries})")
            }
        }
    }
    Verdict::TempFail
}

async fn ask_once(endpoint: &Endpoint, queue_root: &Path, request: &str) -> std::io::Result<String> {
    match endpoint {
        Endpoint::Unix(path) => {
            let path = if path.is_absolute() { path.clone() } else { queue_root.join(path) };
            exchange(tokio::net::UnixStream::connect(path).await?, request).await
        }
        Endpoint::Inet(host, port) => {
            exchange(tokio::net::TcpStream::connect((host.as_str(), *port)).await?, request).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> std::io::Result<String> {
    s.write_all(request.as_bytes()).await?;
    s.flush().await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.ends_with(b"\n\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.len() > MAX_REPLY {
            return Err(std::io::Error::other("reply too long"));
        }
    }
    parse_reply(&String::from_utf8_lossy(&reply))
        .ok_or_else(|| std::io::Error::other(format!("reply without action: {:?}", String::from_utf8_lossy(&reply))))
}

/// The `action=` value of a complete reply (attribute lines, then an empty line).
fn parse_reply(reply: &str) -> Option<String> {
    let (block, _) = reply.split_once("\n\n")?;
    block.lines().find_map(|l| l.strip_prefix("action=")).map(|a| a.trim().to_string()).filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_replies() {
        assert_eq!(Endpoint::parse("unix:private/policy"), Some(Endpoint::Unix("private/policy".into())));
        assert_eq!(Endpoint::parse("inet:127.0.0.1:10023"), Some(Endpoint::Inet("127.0.0.1".into(), 10023)));
        assert_eq!(Endpoint::parse("inet:[::1]:10023"), Some(Endpoint::Inet("::1".into(), 10023)));
        for bad in ["private/policy", "unix:", "inet:127.0.0.1", "inet::25", "inet:host:x"] {
            assert_eq!(Endpoint::parse(bad), None, "{bad}");
        }
        assert_eq!(parse_reply("action=DEFER_IF_PERMIT Greylisted\n\n").as_deref(), Some("DEFER_IF_PERMIT Greylisted"));
        assert_eq!(parse_reply("x=1\naction=dunno\n\n").as_deref(), Some("dunno"));
        assert_eq!(parse_reply("action=OK\n"), None);
        assert_eq!(parse_reply("nothing=here\n\n"), None);
    }
}

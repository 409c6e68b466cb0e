//! `mailbox_transport` and `fallback_transport`: the recipient is handed to another
//! master.cf transport (`lmtp:unix:private/dovecot-lmtp`, `procmail`, ...) with the same
//! delivery request protocol qmgr speaks, for the same queue file, as Postfix's
//! deliver_pass(). That agent reads the file and logs its own delivery; its status is
//! this recipient's.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rpost_ipc::{DeliveryRecipient, DeliveryRequest, DeliveryResponse, FrameDecoder};

use super::Message;
use super::expand::Status;
use super::settings::Settings;

/// `transport[:nexthop]`; an empty next hop is `$myhostname` (the local next hop).
pub fn split(spec: &str, myhostname: &str) -> Result<(String, String), String> {
    let (t, n) = match spec.split_once(':') {
        Some((t, n)) => (t.trim(), n.trim()),
        None => (spec.trim(), ""),
    };
    // The name becomes a socket path under private/: one safe component only.
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) || t.starts_with('.') {
        return Err(format!("bad transport name in {spec:?}"));
    }
    Ok((t.to_string(), if n.is_empty() { myhostname.to_string() } else { n.to_string() }))
}

/// Passes `address` (this request's recipient, or an address its aliases led to) to the
/// transport in `spec`.
pub fn pass(s: &Settings, msg: &Message, spec: &str, address: &str, timeout: Duration) -> Status {
    let (transport, nexthop) = match split(spec, &s.myhostname) {
        Ok(x) => x,
        Err(e) => return Status::fail(true, "4.3.5", e),
    };
    let req = DeliveryRequest {
        queue_id: msg.queue_id.clone(),
        queue_dir: msg.queue_dir.clone(),
        transport: transport.clone(),
        nexthop,
        sender: msg.sender.clone(),
        recipients: vec![DeliveryRecipient {
            index: msg.index,
            address: address.to_string(),
            orcpt: msg.orcpt.clone(),
            notify: msg.notify,
        }],
        eight_bit: matches!(msg.envelope.body, Some(rpost_queue::BodyType::EightBitMime)),
        smtputf8: msg.envelope.smtputf8,
        envid: msg.envelope.envid.clone(),
        ret_full: msg.envelope.ret.map(|r| r == rpost_queue::Ret::Full),
    };
    let socket = s.queue_root.join("private").join(&transport);
    let exchange = || -> std::io::Result<DeliveryResponse> {
        let mut c = UnixStream::connect(&socket)?;
        c.set_read_timeout(Some(timeout))?;
        c.set_write_timeout(Some(timeout))?;
        c.write_all(&rpost_ipc::encode(&req).map_err(std::io::Error::other)?)?;
        let mut dec = FrameDecoder::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(r) = dec.decode::<DeliveryResponse>().map_err(std::io::Error::other)? {
                return Ok(r);
            }
            let n = c.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            dec.feed(&buf[..n]);
        }
    };
    match exchange() {
        Ok(r) => match r.statuses.first() {
            Some(st) if r.statuses.len() == 1 => Status {
                outcome: st.outcome,
                dsn: st.dsn.clone(),
                reason: format!("delivered via {transport} service ({}: {})", st.relay, st.reason),
            }
            .with_failure_reason(&st.reason),
            _ => Status::defer(format!("{transport} service answered for the wrong recipients")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Status::defer(format!("mail transport unavailable: {transport}"))
        }
        Err(e) => Status::defer(format!("{transport} service failed: {e}")),
    }
}

impl Status {
    /// Failures keep the other agent's own words.
    fn with_failure_reason(mut self, reason: &str) -> Status {
        if self.outcome != rpost_ipc::Outcome::Sent {
            self.reason = reason.to_string();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_specs() {
        assert_eq!(
            split("lmtp:unix:private/dovecot-lmtp", "h").unwrap(),
            ("lmtp".into(), "unix:private/dovecot-lmtp".into())
        );
        assert_eq!(split("procmail", "h").unwrap(), ("procmail".into(), "h".into()));
        assert!(split("../x", "h").is_err());
        assert!(split("a/b:c", "h").is_err());
        assert!(split(":x", "h").is_err());
    }
}

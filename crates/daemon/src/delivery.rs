//! The delivery agent's side of qmgr's protocol, shared by smtp-client and local: one
//! [`DeliveryRequest`] in, one [`DeliveryResponse`] out, per connection on
//! `private/<transport>`, each way within `ipc_timeout`; and the `delay=` format of their log
//! lines.

use std::time::Duration;

use rpost_ipc::{DeliveryRequest, DeliveryResponse, FrameDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest reason kept in a response when the full ones do not fit in one IPC frame.
const SHORT_REASON: usize = 200;

/// Reads qmgr's request; None (logged) on a bad frame, early end of input or timeout.
pub async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, timeout: Duration) -> Option<DeliveryRequest> {
    let mut dec = FrameDecoder::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match dec.decode() {
            Ok(Some(r)) => return Some(r),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("bad delivery request: {e}");
                return None;
            }
        }
        match tokio::time::timeout(timeout, stream.read(&mut buf)).await {
            Ok(Ok(0)) => {
                if !dec.is_empty() {
                    tracing::warn!("premature end-of-input on delivery request");
                }
                return None;
            }
            Ok(Ok(n)) => dec.feed(&buf[..n]),
            Ok(Err(e)) => {
                tracing::warn!("read delivery request: {e}");
                return None;
            }
            Err(_) => {
                tracing::warn!("timeout reading the delivery request");
                return None;
            }
        }
    }
}

/// Sends the response and closes the stream; failures are logged under `queue_id`.
pub async fn send_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    resp: &DeliveryResponse,
    queue_id: &str,
    timeout: Duration,
) {
    let frame = match rpost_ipc::encode(resp) {
        Ok(f) => f,
        Err(_) => {
            // Hundreds of recipients with long server replies: keep the outcomes, cut the words.
            let mut short = resp.clone();
            for s in &mut short.statuses {
                s.reason = clip(&s.reason, SHORT_REASON);
            }
            match rpost_ipc::encode(&short) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("{queue_id}: cannot send the delivery response: {e}");
                    return;
                }
            }
        }
    };
    let sent = async {
        stream.write_all(&frame).await?;
        stream.flush().await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("{queue_id}: send delivery response: {e}"),
        Err(_) => tracing::warn!("{queue_id}: timeout sending the delivery response"),
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Postfix's compact delay format: two significant digits or so (`0.12`, `1.5`, `25`).
pub fn fmt_delay(d: Duration) -> String {
    let x = d.as_secs_f64();
    let s = if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_and_clips() {
        let f = |s: f64| fmt_delay(Duration::from_secs_f64(s));
        let got: Vec<String> = [0.0, 0.004, 0.1, 0.123, 1.0, 1.26, 25.2, 1212.0].map(f).into();
        assert_eq!(got, ["0", "0", "0.1", "0.12", "1", "1.3", "25", "1212"]);
        assert_eq!(clip("äbc", 1), "");
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("abc", 9), "abc");
    }

    #[tokio::test]
    async fn a_request_round_trips_and_a_cut_one_is_refused() {
        let req = DeliveryRequest {
            queue_id: "ABC".into(),
            queue_dir: "active".into(),
            transport: "smtp".into(),
            nexthop: "example.com".into(),
            sender: "a@b".into(),
            recipients: Vec::new(),
            eight_bit: false,
            smtputf8: false,
            envid: None,
            ret_full: None,
        };
        let wire = rpost_ipc::encode(&req).unwrap();
        assert_eq!(read_request(&mut &wire[..], Duration::from_secs(5)).await, Some(req));
        assert_eq!(read_request(&mut &wire[..wire.len() - 1], Duration::from_secs(5)).await, None);
    }
}

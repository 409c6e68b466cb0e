//! The master control socket, `pid/master.sock` under the queue directory.
//!
//! One request frame, one response frame, then the connection closes. The socket is mode
//! 0600 in a root-owned directory: only the master's own user may ask.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rpost_ipc::{ControlRequest, ControlResponse, FrameDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long either side waits for the other.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Control socket path for a queue directory.
pub fn socket_path(queue_dir: &Path) -> PathBuf {
    queue_dir.join("pid").join("master.sock")
}

/// Control errors.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{}: {source}", path.display())]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("control socket: {0}")]
    Ipc(#[from] rpost_ipc::IpcError),
    #[error("control socket: no answer within {}s", TIMEOUT.as_secs())]
    Timeout,
    #[error("control socket: connection closed before a complete answer")]
    Truncated,
}

/// Reads one frame from `stream`.
pub async fn read_frame<T: serde::de::DeserializeOwned>(stream: &mut UnixStream) -> Result<T, ControlError> {
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(msg) = dec.decode::<T>()? {
            return Ok(msg);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(ControlError::Truncated);
        }
        dec.feed(&buf[..n]);
    }
}

/// Sends one request to the master at `queue_dir` and waits for its answer.
pub async fn request(queue_dir: &Path, req: &ControlRequest) -> Result<ControlResponse, ControlError> {
    let path = socket_path(queue_dir);
    let exchange = async {
        let mut stream =
            UnixStream::connect(&path).await.map_err(|source| ControlError::Connect { path: path.clone(), source })?;
        stream.write_all(&rpost_ipc::encode(req)?).await?;
        read_frame::<ControlResponse>(&mut stream).await
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| ControlError::Timeout)?
}

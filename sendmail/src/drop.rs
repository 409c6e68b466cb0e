//! Writing a message into `maildrop/` (the format pickup reads: see the pickup crate's
//! `maildrop` module) and waking pickup.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One submission.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Submission {
    /// `None`: pickup uses the login name of the file's owner; `Some("")`: null sender.
    pub sender: Option<String>,
    pub fullname: Option<String>,
    /// `NEVER` or a comma list of SUCCESS, FAILURE, DELAY.
    pub notify: Option<String>,
    /// `FULL` or `HDRS`.
    pub ret: Option<String>,
    pub envid: Option<String>,
    pub recipients: Vec<String>,
    pub content: Vec<u8>,
}

/// Why the file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("bad address syntax: {0:?}")]
    BadAddress(String),
}

impl DropError {
    /// sysexits code: the mail system is not set up / not reachable, or try again later.
    pub fn exit_code(&self) -> i32 {
        match self {
            DropError::Io { source, .. }
                if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied) =>
            {
                crate::sysexits::EX_UNAVAILABLE
            }
            DropError::Io { .. } => crate::sysexits::EX_TEMPFAIL,
            DropError::BadAddress(_) => crate::sysexits::EX_DATAERR,
        }
    }
}

/// A header value: control characters (CR, LF above all) would forge envelope lines.
fn clean(text: &str) -> String {
    let s: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let s = s.trim();
    // At a char boundary, under pickup's 1000-byte value limit.
    let mut end = s.len().min(1000);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The file's bytes.
pub fn encode(s: &Submission) -> Result<Vec<u8>, DropError> {
    let mut out = b"RPOSTDROP 1\n".to_vec();
    let mut line = |key: &str, value: &str| {
        out.extend_from_slice(key.as_bytes());
        out.push(b' ');
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    };
    if let Some(sender) = &s.sender {
        if !sender.is_empty() && !crate::input::valid_address(sender) {
            return Err(DropError::BadAddress(sender.clone()));
        }
        line("sender", sender);
    }
    if let Some(f) = s.fullname.as_deref().map(clean).filter(|f| !f.is_empty()) {
        line("fullname", &f);
    }
    if let Some(n) = &s.notify {
        line("notify", &clean(n));
    }
    if let Some(r) = &s.ret {
        line("ret", &clean(r));
    }
    if let Some(e) = s.envid.as_deref().map(clean).filter(|e| !e.is_empty()) {
        line("envid", &e);
    }
    for r in &s.recipients {
        if !crate::input::valid_address(r) {
            return Err(DropError::BadAddress(r.clone()));
        }
        line("rcpt", r);
    }
    line("size", &s.content.len().to_string());
    out.push(b'\n');
    out.extend_from_slice(&s.content);
    out.extend_from_slice(b"END\n");
    Ok(out)
}

/// 128 random bits as 32 hex digits: maildrop names must be unguessable, since the
/// directory is writable by everyone.
fn random_name() -> io::Result<String> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02X}")).collect())
}

/// Writes the submission into `queue_dir/maildrop/` and returns the file name. Mode 0600
/// while written, fsync'd, then 0744: the owner execute bit tells pickup it is complete.
pub fn write(queue_dir: &Path, s: &Submission) -> Result<String, DropError> {
    let bytes = encode(s)?;
    let dir = queue_dir.join("maildrop");
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DropError::Io { path, source }
    };
    let (name, path, mut file) = loop {
        let name = random_name().map_err(io_at(Path::new("/dev/urandom")))?;
        let path = dir.join(&name);
        match OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(f) => break (name, path, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_at(&path)(e)),
        }
    };
    let result = file
        .write_all(&bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o744)))
        .and_then(|()| file.sync_all());
    if let Err(e) = result {
        // Never leave half a message: pickup would refuse it anyway.
        let _ = std::fs::remove_file(&path);
        return Err(io_at(&path)(e));
    }
    Ok(name)
}

/// Wakes pickup (`W` on public/pickup). Best effort: pickup also runs every wakeup period.
pub fn wake_pickup(queue_dir: &Path) -> io::Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(queue_dir.join("public").join("pickup"))?;
    s.write_all(b"W")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_the_documented_format() {
        let s = Submission {
            sender: Some("a@x".into()),
            fullname: Some("Alice\r\nrcpt evil@y".into()),
            notify: Some("SUCCESS,DELAY".into()),
            ret: Some("HDRS".into()),
            envid: Some("e1".into()),
            recipients: vec!["b@y".into()],
            content: b"Subject: s\n\nbody\n".to_vec(),
        };
        let text = String::from_utf8(encode(&s).unwrap()).unwrap();
        assert_eq!(
            text,
            "RPOSTDROP 1\nsender a@x\nfullname Alice  rcpt evil@y\nnotify SUCCESS,DELAY\nret HDRS\nenvid e1\nrcpt b@y\nsize 17\n\nSubject: s\n\nbody\nEND\n"
        );
        let null = Submission { sender: Some(String::new()), recipients: vec!["b@y".into()], ..Default::default() };
        assert!(String::from_utf8(encode(&null).unwrap()).unwrap().contains("\nsender \n"));
        let bad = Submission { recipients: vec!["b@y\nrcpt c@z".into()], ..Default::default() };
        assert!(matches!(encode(&bad), Err(DropError::BadAddress(_))));
    }

    #[test]
    fn written_file_is_complete_and_private_until_done() {
        let tmp = std::env::temp_dir().join(format!("rpost-drop-test-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("maildrop")).unwrap();
        let s = Submission { recipients: vec!["b@y".into()], content: b"x\n".to_vec(), ..Default::default() };
        let name = write(&tmp, &s).unwrap();
        assert_eq!(name.len(), 32);
        let meta = std::fs::metadata(tmp.join("maildrop").join(&name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o744);
        assert_eq!(std::fs::read(tmp.join("maildrop").join(&name)).unwrap(), encode(&s).unwrap());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

//! Forwarding: addresses an alias or `.forward` sends elsewhere go into a new queue file
//! in `incoming/`, committed durably with rpost-queue's writer (as smtpd commits), owned by
//! mail_owner so qmgr can read it, virtual-alias expanded as cleanup(8) would, with a
//! `Delivered-To:` header for loop detection; then qmgr is told.

use std::io::Write;
use std::time::{Duration, SystemTime};

use rpost_address::Domains;
use rpost_lookup::{ExpandOptions, Expansion};
use rpost_queue::{ClientInfo, Envelope, Queue, RcptStatus, Recipient};

use super::Message;
use super::settings::Settings;

/// One recipient of the delivery request whose expansion is forwarded.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The address the message was originally sent to (Postfix's orig_to).
    pub original: &'a str,
    pub orcpt: Option<&'a str>,
    pub notify: Option<u8>,
}

/// The forwarded addresses of one request recipient that share a sender and a
/// `Delivered-To:`: one new queue file.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    pub origin: Origin<'a>,
    pub sender: &'a str,
    pub delivered: &'a str,
    pub addresses: &'a [String],
}

/// Queues a batch; returns the new queue ID.
pub fn queue(
    s: &Settings,
    domains: &Domains,
    opts: &ExpandOptions,
    msg: &Message,
    batch: &Batch<'_>,
) -> Result<String, String> {
    if let Some(broken) = &domains.virtual_alias_maps.broken {
        return Err(format!("virtual alias table unavailable: {broken}"));
    }
    let mut recipients: Vec<Recipient> = Vec::new();
    let (origin, sender, delivered) = (&batch.origin, batch.sender, batch.delivered);
    for a in batch.addresses {
        let targets = match rpost_lookup::expand_virtual(&domains.virtual_alias_maps.tables, a, opts) {
            Ok(Expansion::Unchanged) => vec![a.clone()],
            Ok(Expansion::To(list)) => list,
            Err(e) => return Err(format!("virtual alias expansion of {a}: {e}")),
        };
        for t in targets {
            if !recipients.iter().any(|r| r.address.eq_ignore_ascii_case(&t)) {
                recipients.push(Recipient {
                    address: t,
                    original: origin.original.to_string(),
                    orcpt: origin.orcpt.map(str::to_string),
                    notify: origin.notify,
                    status: RcptStatus::Pending,
                });
            }
        }
    }
    let env = Envelope {
        sender: sender.to_string(),
        recipients,
        arrival: SystemTime::now(),
        client: ClientInfo::default(),
        body: msg.envelope.body,
        smtputf8: msg.envelope.smtputf8,
        ret: msg.envelope.ret,
        envid: msg.envelope.envid.clone(),
        attrs: Vec::new(),
    };
    let mut parts: Vec<Vec<u8>> = Vec::new();
    if s.prepend("forward") {
        let clean: String = delivered.chars().filter(|c| !c.is_control()).collect();
        parts.push(format!("Delivered-To: {clean}\r\n").into_bytes());
    }
    commit(s, &env, &[&parts.concat(), &msg.content])
}

/// Writes a new queue file (envelope, then `content` pieces), owned by mail_owner when we
/// are root, commits it durably and triggers qmgr. Returns the queue ID.
pub fn commit(s: &Settings, env: &Envelope, content: &[&[u8]]) -> Result<String, String> {
    let q = Queue::new(&s.queue_root);
    let mut m = q.create(env).map_err(|e| e.to_string())?;
    if s.privileged {
        // qmgr runs as mail_owner and must read the file; lchown never follows a link.
        let owner = rpost_privilege::lookup_user(&s.mail_owner).map_err(|e| format!("mail_owner: {e}"))?;
        std::os::unix::fs::lchown(m.path(), Some(owner.uid), Some(owner.gid))
            .map_err(|e| format!("chown {}: {e}", m.path().display()))?;
    }
    for piece in content {
        m.write_content(piece).map_err(|e| e.to_string())?;
    }
    let id = m.commit().map_err(|e| e.to_string())?;
    trigger_qmgr(s);
    Ok(id.to_string())
}

/// Tells qmgr there is new mail (best effort: qmgr also scans every second).
fn trigger_qmgr(s: &Settings) {
    let path = s.queue_root.join("public").join("qmgr");
    let sent = std::os::unix::net::UnixStream::connect(&path).and_then(|mut c| {
        c.set_write_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"I")
    });
    if let Err(e) = sent {
        tracing::debug!("qmgr trigger {}: {e}", path.display());
    }
}

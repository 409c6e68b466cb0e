//! The `local` delivery agent (Postfix's local(8)): mail for `mydestination` domains, with
//! aliases(5), `~/.forward`, files, commands and system mailboxes.
//!
//! Layout: [`agent`] serves qmgr's requests and logs, [`expand`] walks one recipient,
//! [`dest`] parses destinations and local variables, [`mbox`] formats and appends mbox
//! copies, [`command`] runs `|command` deliveries, [`notice`] reports failures to owner-
//! aliases, [`pass`] hands recipients to mailbox_transport/fallback_transport, [`helper`] runs writes and reads as the
//! target user, [`requeue`] forwards through the queue, [`settings`] holds the parameters.
//! The binary is `src/bin/local.rs`; lib.rs has the manual page.

pub mod agent;
pub mod command;
pub mod dest;
pub mod expand;
pub mod helper;
pub mod mbox;
pub mod notice;
pub mod pass;
pub mod requeue;
pub mod settings;

use std::collections::HashSet;

/// The message being delivered to one recipient.
#[derive(Debug, Clone)]
pub struct Message {
    pub queue_id: String,
    /// Envelope sender ("" for the null sender).
    pub sender: String,
    /// Queue-file content: CRLF line endings.
    pub content: Vec<u8>,
    /// `Delivered-To:` values in the header, lower case (loop detection).
    pub delivered_to: HashSet<String>,
    /// The recipient as originally addressed ($ORIGINAL_RECIPIENT, orig_to=).
    pub original: String,
    pub envelope: rpost_queue::Envelope,
    /// Where the queue file is and which of its recipients this is, for handing the
    /// recipient to another transport (mailbox_transport, fallback_transport).
    pub queue_dir: String,
    pub index: u32,
    pub orcpt: Option<String>,
    pub notify: Option<u8>,
}

/// The `Delivered-To:` header values of a message (header section only, unfolded, lower
/// case).
pub fn delivered_to_headers(content: &[u8]) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut current: Option<String> = None;
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            if let Some(c) = current.as_mut() {
                c.push_str(&String::from_utf8_lossy(line));
            }
            continue;
        }
        if let Some(c) = current.take() {
            out.insert(c.trim().to_lowercase());
        }
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if let Some((name, value)) = text.split_once(':')
            && name.trim_end().eq_ignore_ascii_case("delivered-to")
        {
            current = Some(value.to_string());
        }
    }
    if let Some(c) = current {
        out.insert(c.trim().to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests;

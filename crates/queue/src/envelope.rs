//! The message envelope as stored in a queue file.

use std::time::SystemTime;

/// Everything about a message except its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The envelope sender; `""` is the null sender (bounces).
    pub sender: String,
    pub recipients: Vec<Recipient>,
    pub arrival: SystemTime,
    pub client: ClientInfo,
    /// ESMTP `BODY=` (RFC 6152, RFC 3030).
    pub body: Option<BodyType>,
    /// ESMTP `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// DSN `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// DSN `ENVID=`, xtext-decoded (RFC 3461).
    pub envid: Option<String>,
    /// Extension attributes (e.g. `rewrite_context` => `remote`), kept
    /// verbatim and in order; names may repeat.
    pub attrs: Vec<(String, String)>,
}

impl Envelope {
    /// An envelope from `sender` arriving now, with no recipients and
    /// default client information.
    pub fn new(sender: impl Into<String>) -> Envelope {
        Envelope {
            sender: sender.into(),
            recipients: Vec::new(),
            arrival: SystemTime::now(),
            client: ClientInfo::default(),
            body: None,
            smtputf8: false,
            ret: None,
            envid: None,
            attrs: Vec::new(),
        }
    }

    /// The first value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Where the message came from (Postfix's client_name, client_address, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Verified reverse DNS name, or `unknown`.
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub helo: String,
    /// `SMTP`, `ESMTP`, `ESMTPS`, `ESMTPSA`, `LMTP` or `local`.
    pub protocol: String,
    pub sasl_username: Option<String>,
}

impl Default for ClientInfo {
    fn default() -> ClientInfo {
        ClientInfo {
            name: "unknown".to_owned(),
            addr: String::new(),
            port: 0,
            helo: String::new(),
            protocol: "local".to_owned(),
            sasl_username: None,
        }
    }
}

/// One envelope recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The final address after alias expansion.
    pub address: String,
    /// The address as the client gave it (Postfix's "original recipient").
    pub original: String,
    /// DSN `ORCPT=` as given, e.g. `rfc822;bob@example.test`.
    pub orcpt: Option<String>,
    /// DSN `NOTIFY=` bits ([`Recipient::NOTIFY_NEVER`] ...); `None` when
    /// not given.
    pub notify: Option<u8>,
    pub status: RcptStatus,
}

impl Recipient {
    pub const NOTIFY_NEVER: u8 = 1;
    pub const NOTIFY_SUCCESS: u8 = 2;
    pub const NOTIFY_FAILURE: u8 = 4;
    pub const NOTIFY_DELAY: u8 = 8;

    /// A pending recipient whose original address is its address.
    pub fn new(address: impl Into<String>) -> Recipient {
        let address = address.into();
        Recipient { original: address.clone(), address, orcpt: None, notify: None, status: RcptStatus::Pending }
    }
}

/// Delivery state of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    /// Not yet delivered: still to be tried.
    Pending,
    Delivered,
    /// Permanently failed; a bounce was (or will be) sent.
    Bounced,
    /// Gave up after `maximal_queue_lifetime`.
    Expired,
}

impl RcptStatus {
    /// Delivered, bounced or expired: nothing more to do for it.
    pub fn is_done(self) -> bool {
        self != RcptStatus::Pending
    }

    pub fn name(self) -> &'static str {
        match self {
            RcptStatus::Pending => "pending",
            RcptStatus::Delivered => "delivered",
            RcptStatus::Bounced => "bounced",
            RcptStatus::Expired => "expired",
        }
    }
}

/// ESMTP `BODY=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

impl BodyType {
    /// The keyword as it appears in `MAIL FROM`.
    pub fn keyword(self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            BodyType::BinaryMime => "BINARYMIME",
        }
    }
}

/// DSN `RET=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    pub fn keyword(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

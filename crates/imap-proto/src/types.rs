//! The parsed commands.

/// One tagged command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: String,
    pub body: CommandBody,
}

/// A sequence number or UID in a set; `Star` is `*`, the largest in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    Value(u32),
    Star,
}

impl SeqNum {
    /// The number, with `*` meaning `largest`.
    pub fn resolve(self, largest: u32) -> u32 {
        match self {
            SeqNum::Value(v) => v,
            SeqNum::Star => largest,
        }
    }
}

/// A sequence set: ranges as written (`a:b` may have a > b).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet(pub Vec<(SeqNum, SeqNum)>);

impl SeqSet {
    /// Whether `n` is in the set, `*` being `largest`.
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (a.resolve(largest), b.resolve(largest));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            lo <= n && n <= hi
        })
    }
}

/// A date (SEARCH, APPEND) as day count since 1970-01-01 plus its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Days since 1970-01-01 (proleptic Gregorian).
    pub fn days(&self) -> i64 {
        days_from_civil(self.year as i64, self.month as i64, self.day as i64)
    }
}

/// Howard Hinnant's days_from_civil.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// APPEND's date-time: seconds since the epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    pub unix: i64,
    /// The zone offset given, in minutes.
    pub offset_minutes: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Replace,
    Add,
    Remove,
}

/// The text part of a section specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    Header,
    HeaderFields(Vec<String>),
    HeaderFieldsNot(Vec<String>),
    Text,
    Mime,
}

/// `BODY[<part>.<text>]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    /// Part numbers (`1.2` -> [1, 2]); empty for the whole message.
    pub part: Vec<u32>,
    pub text: Option<SectionText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchAttr {
    Envelope,
    Flags,
    InternalDate,
    Rfc822,
    Rfc822Header,
    Rfc822Size,
    Rfc822Text,
    /// `BODY` without a section: the non-extensible BODYSTRUCTURE.
    Body,
    BodyStructure,
    Uid,
    BodySection {
        peek: bool,
        section: Section,
        partial: Option<(u32, u32)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    All,
    Answered,
    Bcc(String),
    Before(Date),
    Body(String),
    Cc(String),
    Deleted,
    Draft,
    Flagged,
    From(String),
    Header(String, String),
    Keyword(String),
    Larger(u64),
    New,
    Not(Box<SearchKey>),
    Old,
    On(Date),
    Or(Box<SearchKey>, Box<SearchKey>),
    Recent,
    Seen,
    SentBefore(Date),
    SentOn(Date),
    SentSince(Date),
    Since(Date),
    Smaller(u64),
    Subject(String),
    Text(String),
    To(String),
    Uid(SeqSet),
    Unanswered,
    Undeleted,
    Undraft,
    Unflagged,
    Unkeyword(String),
    Unseen,
    SeqSet(SeqSet),
    /// A parenthesised list, or the top-level list: all must match.
    And(Vec<SearchKey>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandBody {
    Capability,
    Noop,
    Logout,
    StartTls,
    /// `initial`: SASL-IR's initial response, still base64 (`=` is the empty response).
    Authenticate {
        mechanism: String,
        initial: Option<String>,
    },
    Login {
        user: Vec<u8>,
        password: Vec<u8>,
    },
    Select {
        mailbox: String,
    },
    Examine {
        mailbox: String,
    },
    Create {
        mailbox: String,
    },
    Delete {
        mailbox: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Subscribe {
        mailbox: String,
    },
    Unsubscribe {
        mailbox: String,
    },
    List {
        reference: String,
        pattern: String,
    },
    Lsub {
        reference: String,
        pattern: String,
    },
    Status {
        mailbox: String,
        items: Vec<StatusItem>,
    },
    Append {
        mailbox: String,
        flags: Vec<String>,
        date: Option<DateTime>,
        message: Vec<u8>,
    },
    Check,
    Close,
    Unselect,
    Expunge,
    UidExpunge(SeqSet),
    Search {
        uid: bool,
        charset: Option<String>,
        key: SearchKey,
    },
    Fetch {
        uid: bool,
        set: SeqSet,
        attrs: Vec<FetchAttr>,
    },
    Store {
        uid: bool,
        set: SeqSet,
        mode: StoreMode,
        silent: bool,
        flags: Vec<String>,
    },
    Copy {
        uid: bool,
        set: SeqSet,
        mailbox: String,
    },
    Move {
        uid: bool,
        set: SeqSet,
        mailbox: String,
    },
    Idle,
    /// `None` for `ID NIL`.
    Id(Option<Vec<(String, Option<String>)>>),
    Enable(Vec<String>),
    Namespace,
}

impl CommandBody {
    /// The command's name as logged and used in replies (`UID FETCH`, ...).
    pub fn name(&self) -> &'static str {
        use CommandBody::*;
        match self {
            Capability => "CAPABILITY",
            Noop => "NOOP",
            Logout => "LOGOUT",
            StartTls => "STARTTLS",
            Authenticate { .. } => "AUTHENTICATE",
            Login { .. } => "LOGIN",
            Select { .. } => "SELECT",
            Examine { .. } => "EXAMINE",
            Create { .. } => "CREATE",
            Delete { .. } => "DELETE",
            Rename { .. } => "RENAME",
            Subscribe { .. } => "SUBSCRIBE",
            Unsubscribe { .. } => "UNSUBSCRIBE",
            List { .. } => "LIST",
            Lsub { .. } => "LSUB",
            Status { .. } => "STATUS",
            Append { .. } => "APPEND",
            Check => "CHECK",
            Close => "CLOSE",
            Unselect => "UNSELECT",
            Expunge => "EXPUNGE",
            UidExpunge(_) => "UID EXPUNGE",
            Search { uid: false, .. } => "SEARCH",
            Search { uid: true, .. } => "UID SEARCH",
            Fetch { uid: false, .. } => "FETCH",
            Fetch { uid: true, .. } => "UID FETCH",
            Store { uid: false, .. } => "STORE",
            Store { uid: true, .. } => "UID STORE",
            Copy { uid: false, .. } => "COPY",
            Copy { uid: true, .. } => "UID COPY",
            Move { uid: false, .. } => "MOVE",
            Move { uid: true, .. } => "UID MOVE",
            Idle => "IDLE",
            Id(_) => "ID",
            Enable(_) => "ENABLE",
            Namespace => "NAMESPACE",
        }
    }
}

//! rpost-imap-proto - IMAP4rev1 command parser and response writer, sans-IO
//!
//! # SUMMARY
//! ```text
//! let mut r = Reader::new(Limits::default());
//! r.feed(b"a1 LOGIN {5}\r\n");
//! assert_eq!(r.next(), Some(Event::Continue));        // driver sends "+ Ready for literal data"
//! r.feed(b"alice secret\r\n");
//! let Some(Event::Command(cmd)) = r.next() else { unreachable!() };
//! ```
//!
//! # DESCRIPTION
//! [`Reader`] frames commands out of the byte stream: it finds the end of a command line,
//! follows synchronizing (`{N}`) and non-synchronizing (`{N+}`, LITERAL+ or LITERAL-, RFC 7888) literals,
//! tells the driver when to send a continuation request, and hands every complete command to
//! [`parse::parse_command`], a recursive-descent parser for every RFC 3501 command plus the
//! extensions rpost announces (IDLE, ID, ENABLE, NAMESPACE, UNSELECT, MOVE, UIDPLUS's UID
//! EXPUNGE, SASL-IR). It is incremental: bytes may arrive split anywhere, the result is the
//! same. [`Reader::take_line`] gives raw lines for AUTHENTICATE continuations and IDLE's DONE.
//!
//! [`write`] holds the response side: strings are sent as atoms, quoted strings or literals
//! as their content needs; [`utf7`] is the modified UTF-7 of mailbox names (RFC 3501 5.1.3).
//!
//! We wrote our own codec instead of imap-codec: it is not in the dependency set, and the
//! server needs only the server side, with its own limits and error replies.
//!
//! # SECURITY
//! Everything here reads untrusted input. Limits ([`Limits`]): the command line length
//! (literals of ordinary commands count against it), the literal size of APPEND (the message
//! size limit; a larger announcement is refused before a byte of it is read or allocated, a
//! non-synchronizing one ends the connection since its data would follow at once; with
//! LITERAL- that is any non-synchronizing literal over 4096 bytes), the
//! nesting depth of parentheses and NOT/OR chains, and the number of ranges in a sequence set.
//! An over-long line is skipped to its end and answered BAD; nothing is buffered past a limit.
//!
//! # CONFIGURATION
//! None here; imapd maps `imap_max_line_length` and `message_size_limit` onto [`Limits`].
//!
//! # STANDARDS
//! RFC 3501 (IMAP4rev1), RFC 7888 (LITERAL+), RFC 4959 (SASL-IR), RFC 2971 (ID), RFC 5161
//! (ENABLE), RFC 2177 (IDLE), RFC 2342 (NAMESPACE), RFC 3691 (UNSELECT), RFC 6851 (MOVE),
//! RFC 4315 (UIDPLUS), RFC 3501 5.1.3 (modified UTF-7).

pub mod parse;
pub mod types;
pub mod utf7;
pub mod write;

mod reader;

pub use parse::parse_command;
pub use reader::{Event, LITERAL_MINUS_MAX, Limits, Reader};
pub use types::*;

/// A command the parser refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// The tag, when the command got that far (else the reply is untagged `* BAD`).
    pub tag: Option<String>,
    pub message: String,
}

#[cfg(test)]
mod tests;

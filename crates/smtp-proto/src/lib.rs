//! # rpost-smtp-proto — SMTP/LMTP server protocol, sans I/O
//!
//! ## SUMMARY
//!
//! ```text
//! let mut codec = ServerCodec::new(Limits::default());
//! codec.feed(&bytes_from_socket);
//! while let Some(event) = codec.next_event() { /* reply; maybe codec.start_data() */ }
//! ```
//!
//! ## DESCRIPTION
//!
//! The wire side of smtpd(8) and of the LMTP server: framing of client input into command
//! lines, DATA content and BDAT chunks ([`ServerCodec`], [`Event`]); parsing of command lines
//! into typed commands with their ESMTP parameters ([`parse_command`], [`Command`]); the
//! replies for malformed commands worded as Postfix words them ([`CommandError::reply`]);
//! reply formatting ([`Reply`], [`ehlo_reply`]); and, for the SMTP/LMTP client, DATA
//! dot-stuffing ([`dot_stuff`], [`DotStuffer`]).
//!
//! Nothing here reads a socket, a clock or a file: the session feeds bytes in and takes
//! events out, so every behaviour is testable byte by byte, with the input split anywhere.
//! The codec only frames; what is allowed when (HELO first, MAIL before RCPT, SIZE against
//! message_size_limit, SMTPUTF8 for UTF-8 addresses, restrictions) is the session's job.
//! Mode changes are explicit calls made by the session after its reply: `start_data()`
//! after 354, `start_bdat()` after a BDAT command, `next_line()` instead of `next_event()` for a SASL response.
//!
//! Command parsing follows Postfix with `strict_rfc821_envelopes = no` (its default):
//! verbs and keywords in any case, `MAIL FROM: <a@b>` and `MAIL FROM:a@b` accepted, source
//! routes dropped, quoted local parts, address literals, bare `<postmaster>`.
//!
//! ## SECURITY
//!
//! All input is untrusted network input. No input makes this crate panic (fuzzed: see
//! `fuzz/` at the repository root) and none makes it buffer without bound:
//!
//! - Command lines are limited to `max_line` bytes. A longer line is reported once as
//!   [`Event::LineTooLong`] and skipped to its LF, so a client that never sends a line end
//!   costs at most `max_line` bytes of memory.
//! - DATA is streamed: a 10 MB line is delivered in pieces of at most `max_data_line`
//!   bytes, with the scanner state (line start, held CR, held dot) carried across reads.
//! - SMTP smuggling: DATA ends only at `CRLF.CRLF`. `LF.LF`, `CR.CR`, `LF.CRLF`,
//!   `CRLF.LF` and the like never end it; any bare CR or LF in DATA is reported as
//!   [`Event::DataBareLineEnding`] so the session refuses the message, and a command line
//!   ending in bare LF is [`Event::BareLineEnding`], never a command.
//! - STARTTLS: [`ServerCodec::take_buffered`] hands back the plaintext a client pipelined
//!   after STARTTLS so the session can discard it (CVE-2011-0411).
//! - Reply text is sanitized: control characters (CR, LF) become `?` and lines are cut at
//!   512 bytes, so caller-provided text (a HELO name, an address) cannot inject replies.
//! - Commands with control characters or invalid UTF-8 are refused before parsing.
//!
//! ## CONFIGURATION
//!
//! [`Limits`]: `max_line` (default 2048, as Postfix `line_length_limit`; RFC 5321 wants at
//! least 512) and `max_data_line` (default 1 MiB: the largest single DATA/BDAT event).
//! The SASL response limit is passed to [`ServerCodec::next_line`] (Postfix uses 12288).
//!
//! ## STANDARDS
//!
//! RFC 5321 (SMTP), RFC 1869 and RFC 6531 (ESMTP, SMTPUTF8), RFC 1652 (8BITMIME),
//! RFC 1870 (SIZE), RFC 2920 (PIPELINING), RFC 3030 (CHUNKING/BDAT, BINARYMIME),
//! RFC 3461 (DSN: NOTIFY, ORCPT, RET, ENVID, xtext), RFC 3463 and RFC 2034 (enhanced status
//! codes), RFC 2033 (LMTP LHLO), RFC 4954 (AUTH), RFC 3207 (STARTTLS), RFC 1985 (ETRN).
//!
//! ## SEE ALSO
//!
//! Postfix smtpd(8), `smtpd_forbid_bare_newline`, `line_length_limit`,
//! `strict_rfc821_envelopes`.

mod codec;
mod command;
mod dotstuff;
mod reply;

pub use codec::{Event, Limits, LineError, ServerCodec};
pub use command::{
    Address, AddressError, Body, Command, CommandError, MailParams, Notify, Path, RcptParams, Ret, ReversePath,
    parse_command, parse_path, xtext_decode, xtext_encode,
};
pub use dotstuff::{DotStuffer, dot_stuff};
pub use reply::{MAX_REPLY_LINE, Reply, ehlo_reply};

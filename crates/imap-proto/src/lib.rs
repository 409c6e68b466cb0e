//! rpost-imap-proto - IMAP4rev1 command parser and response writer (skeleton: issue 6)

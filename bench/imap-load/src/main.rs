//! imap-load - IMAP load generator for `bench/imap.sh` (work in progress)

fn main() {}

//! End-to-end tests of rpost live in `tests/`; each starts the real suite with
//! `rpost_testkit::Suite`. Build the binaries first: `cargo build --workspace --bins`.

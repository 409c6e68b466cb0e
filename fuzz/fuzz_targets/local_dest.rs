//! The local delivery agent's parsers of user-controlled text: alias values (aliases(5)
//! right-hand sides), `.forward` and `:include:` files (written by mail users, read by
//! `local`), and the `$name` / `${name?text}` expansion of `forward_path` with values from
//! the recipient address. Any input must parse without a panic, and what comes out must
//! keep the promises the agent relies on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lmtp_deliver::local::dest::{Dest, FILTER, expand, filter_value, parse_file, parse_list, split_local};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for d in parse_file(text).into_iter().chain(parse_list(text)) {
        match d {
            Dest::File(p) => assert!(p.starts_with('/'), "{p:?}"),
            Dest::Address(a) => assert!(!a.is_empty()),
            Dest::Mailbox(_) | Dest::Command(_) | Dest::Include(_) => {}
        }
    }
    // forward_path expansion: the template and the values are both taken from the input
    // (the extension comes from the network).
    let (template, value) = text.split_once('\n').unwrap_or((text, "ext"));
    let filtered = filter_value(value);
    assert!(filtered.chars().all(|c| FILTER.contains(c)) && !filtered.contains('/'));
    let _ = expand(template, &|name: &str| (name != "empty").then(|| filtered.clone()));
    let (user, ext) = split_local(value, "+-");
    assert!(value.starts_with(user));
    if let Some(e) = ext {
        assert!(value.ends_with(e));
    }
});

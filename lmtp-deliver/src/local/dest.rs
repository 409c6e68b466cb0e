//! Destinations as aliases(5), `.forward` and `:include:` files write them, and the local
//! variables of `forward_path` / `mailbox_command` (`$home`, `${extension}`, `${name?text}`).
//! Pure functions, unit-tested.

use rpost_lookup::split_addresses;

/// One destination of an alias value or a line of a `.forward` / `:include:` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// An address; a bare name gets `@$myorigin`.
    Address(String),
    /// `\user`: that user's mailbox, without alias or `.forward` lookups.
    Mailbox(String),
    /// `/file/name` (mbox format), or `/dir/name/` (a Maildir).
    File(String),
    /// `|command`, run with `/bin/sh -c`.
    Command(String),
    /// `:include:/file/name`: more destinations from that file.
    Include(String),
}

/// Removes one level of `"..."` quoting around a whole item, with backslash escapes.
fn unquote(item: &str) -> Option<String> {
    let inner = item.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            // `"a"@"b"` is an address with quoted parts, not one quoted item.
            return None;
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// What one item is: Postfix looks at the first character after unquoting.
pub fn classify(item: &str) -> Dest {
    let plain = unquote(item);
    let text = plain.as_deref().unwrap_or(item);
    if let Some(cmd) = text.strip_prefix('|') {
        return Dest::Command(cmd.trim().to_string());
    }
    if text.starts_with('/') {
        return Dest::File(text.to_string());
    }
    // get(): byte 9 may fall inside a multi-byte character of hostile input.
    if text.len() > 9 && text.get(..9).is_some_and(|p| p.eq_ignore_ascii_case(":include:")) {
        return Dest::Include(text[9..].trim().to_string());
    }
    if let Some(user) = text.strip_prefix('\\') {
        return Dest::Mailbox(user.to_string());
    }
    Dest::Address(item.to_string())
}

/// Parses an alias value (`a, b@x, "|cmd arg", /file, :include:/f`).
pub fn parse_list(value: &str) -> Vec<Dest> {
    split_addresses(value).iter().map(|i| classify(i)).collect()
}

/// Parses a `.forward` or `:include:` file: comment lines (`#`) and blank lines are
/// skipped, every other line is a list as in an alias value.
pub fn parse_file(text: &str) -> Vec<Dest> {
    text.lines().filter(|l| !l.trim_start().starts_with('#')).flat_map(parse_list).collect()
}

/// Characters allowed in values substituted into `forward_path` (Postfix's
/// `forward_expansion_filter`, without `/`: an address extension must never add path
/// components). Others become `_`.
pub const FILTER: &str = "1234567890!@%-_=+:,.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Replaces characters outside [`FILTER`] with `_`.
pub fn filter_value(v: &str) -> String {
    v.chars().map(|c| if FILTER.contains(c) { c } else { '_' }).collect()
}

/// Expands `$name`, `${name}`, `$(name)`, `${name?text}` (text when name is not empty),
/// `${name:text}` (text when name is empty) and `$$`. Unknown names are empty.
pub fn expand(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let b = template.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let next = template[i..].find('$').map_or(b.len(), |n| i + n);
            out.push_str(&template[i..next]);
            i = next;
            continue;
        }
        i += 1;
        match b.get(i) {
            Some(b'$') => {
                out.push('$');
                i += 1;
            }
            Some(&open @ (b'{' | b'(')) => {
                let close = if open == b'{' { '}' } else { ')' };
                let Some(end) = find_close(&template[i + 1..], open as char, close) else {
                    out.push_str(&template[i - 1..]);
                    return out;
                };
                let inner = &template[i + 1..i + 1 + end];
                i += end + 2;
                let name_end = inner.find(['?', ':']).unwrap_or(inner.len());
                let value = lookup(&inner[..name_end]).unwrap_or_default();
                match inner[name_end..].chars().next() {
                    Some('?') if !value.is_empty() => out.push_str(&expand(&inner[name_end + 1..], lookup)),
                    Some(':') if value.is_empty() => out.push_str(&expand(&inner[name_end + 1..], lookup)),
                    Some(_) => {}
                    None => out.push_str(&value),
                }
            }
            _ => {
                let len = template[i..].bytes().take_while(|c| c.is_ascii_alphanumeric() || *c == b'_').count();
                out.push_str(&lookup(&template[i..i + len]).unwrap_or_default());
                i += len;
            }
        }
    }
    out
}

fn find_close(s: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            if depth == 0 {
                return Some(i);
            }
            depth -= 1;
        }
    }
    None
}

/// The local part with the extension split off: `("user", Some("foo"))` for `user+foo`
/// (the delimiter itself is not part of the extension, as Postfix's `$extension`).
pub fn split_local<'a>(local: &'a str, delimiters: &str) -> (&'a str, Option<&'a str>) {
    match rpost_lookup::split_extension(local, delimiters) {
        (base, Some(ext)) => (base, Some(&ext[ext.chars().next().map_or(0, char::len_utf8)..])),
        (base, None) => (base, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multibyte_text_where_include_would_end() {
        // Found by the local_dest fuzz target: a character across byte 9 panicked.
        let d = parse_file("\0\0\0\0\0\0\0\0\u{76d}");
        assert_eq!(d, [Dest::Address("\0\0\0\0\0\0\0\0\u{76d}".into())]);
        assert_eq!(classify(":include:\u{76d}"), Dest::Include("\u{76d}".into()));
    }

    #[test]
    fn alias_values() {
        let d = parse_list(
            "alice@virtual.test, /tmp/x/file.mbox, \"|/bin/sh -c 'cat > /tmp/x/cmd.out'\" :include:/etc/list, \\root, bob, \"john doe\"@x, /tmp/md/",
        );
        assert_eq!(
            d,
            vec![
                Dest::Address("alice@virtual.test".into()),
                Dest::File("/tmp/x/file.mbox".into()),
                Dest::Command("/bin/sh -c 'cat > /tmp/x/cmd.out'".into()),
                Dest::Include("/etc/list".into()),
                Dest::Mailbox("root".into()),
                Dest::Address("bob".into()),
                Dest::Address("\"john doe\"@x".into()),
                Dest::File("/tmp/md/".into()),
            ]
        );
        assert_eq!(classify("\"|echo \\\"hi\\\"\""), Dest::Command("echo \"hi\"".into()));
        assert_eq!(classify(":INCLUDE:/x"), Dest::Include("/x".into()));
        assert_eq!(classify("\"/file with space\""), Dest::File("/file with space".into()));
    }

    #[test]
    fn forward_files() {
        let d = parse_file("# comment\n\n  \\alice, bob@example.org\n\"|/usr/bin/procmail -a x\"\n");
        assert_eq!(
            d,
            vec![
                Dest::Mailbox("alice".into()),
                Dest::Address("bob@example.org".into()),
                Dest::Command("/usr/bin/procmail -a x".into()),
            ]
        );
    }

    #[test]
    fn forward_path_expansion() {
        let vars = |ext: Option<&'static str>| {
            move |n: &str| match n {
                "home" => Some("/home/alice".to_string()),
                "recipient_delimiter" => Some("+".to_string()),
                "extension" => ext.map(str::to_string),
                _ => None,
            }
        };
        let tpl = "$home/.forward${recipient_delimiter}${extension}";
        assert_eq!(expand(tpl, &vars(Some("foo"))), "/home/alice/.forward+foo");
        assert_eq!(expand(tpl, &vars(None)), "/home/alice/.forward+");
        let tpl = "$home/.forward${extension?+$extension}x${extension:none}$$ $(home) $unknown.";
        assert_eq!(expand(tpl, &vars(Some("a"))), "/home/alice/.forward+ax$ /home/alice .");
        assert_eq!(expand(tpl, &vars(None)), "/home/alice/.forwardxnone$ /home/alice .");
        assert_eq!(expand("${broken", &vars(None)), "${broken");
        assert_eq!(filter_value("../../etc/x y"), ".._.._etc_x_y");
    }

    #[test]
    fn extensions() {
        assert_eq!(split_local("user+foo+bar", "+"), ("user", Some("foo+bar")));
        assert_eq!(split_local("user", "+"), ("user", None));
        assert_eq!(split_local("user-x", "+-"), ("user", Some("x")));
        assert_eq!(split_local("owner-list", "-"), ("owner-list", None));
        assert_eq!(split_local("user+x", ""), ("user+x", None));
    }
}

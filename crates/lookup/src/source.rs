//! Source files of indexed tables: postmap(1) input (`key whitespace
//! value`) and aliases(5) (`name: value, value`).
//!
//! Both use Postfix logical lines (continuation lines start with
//! whitespace, `#` lines are comments). Malformed entries are skipped with
//! a warning, as postmap and postalias do; duplicates keep the first entry.

use std::collections::HashMap;

use crate::{LookupError, fold, logical_lines};

/// Parsed source: entries in file order, deduplicated, plus warnings.
#[derive(Debug, Default)]
pub(crate) struct Source {
    pub(crate) entries: Vec<(String, String)>,
    pub(crate) warnings: Vec<String>,
}

/// Parses postmap or aliases input. `file` is used in messages only.
pub(crate) fn parse(file: &str, data: &[u8], aliases: bool, fold_keys: bool) -> Result<Source, LookupError> {
    let mut out = Source::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for ll in logical_lines(file, data)? {
        let parsed = if aliases { alias_entry(&ll.text) } else { postmap_entry(&ll.text) };
        let (key, value) = match parsed {
            Ok(kv) => kv,
            Err(message) => {
                out.warnings.push(format!("{file}:{}: {message}; entry skipped", ll.line));
                continue;
            }
        };
        let key = if fold_keys { fold(&key) } else { key };
        if let Some(first) = seen.get(&key) {
            out.warnings.push(format!(
                "{file}:{}: duplicate entry: \"{}\" (line {first} kept)",
                ll.line,
                crate::printable(&key)
            ));
            continue;
        }
        seen.insert(key.clone(), ll.line);
        out.entries.push((key, value));
    }
    Ok(out)
}

/// `key whitespace value`; surrounding whitespace is stripped.
fn postmap_entry(text: &str) -> Result<(String, String), String> {
    match text.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((key, value)) if !value.trim().is_empty() => Ok((key.to_string(), value.trim().to_string())),
        _ => Err("expected format: key whitespace value".to_string()),
    }
}

/// `name: value`, where name may be a `"quoted string"` (stored without
/// the quotes, as postalias stores the internal form). The value is kept
/// whole; the caller splits it.
fn alias_entry(text: &str) -> Result<(String, String), String> {
    let (name, rest) = if let Some(quoted) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, c)) => name.push(c),
                    None => break,
                },
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                c => name.push(c),
            }
        }
        let Some(end) = end else { return Err("unterminated quoted name".to_string()) };
        let rest = quoted[end..].trim_start();
        let Some(rest) = rest.strip_prefix(':') else { return Err("need name:value pair".to_string()) };
        (name, rest)
    } else {
        let Some((name, rest)) = text.split_once(':') else { return Err("need name:value pair".to_string()) };
        let name = name.trim();
        if name.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(format!("white space in unquoted name \"{name}\""));
        }
        (name.to_string(), rest)
    };
    if name.is_empty() {
        return Err("empty name".to_string());
    }
    let value = rest.trim();
    if value.is_empty() {
        return Err(format!("no value for \"{name}\""));
    }
    Ok((name, value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn postmap_format() {
        let text = "# comment\n\
                    Alice@Example.COM   alice@local\n\
                    bob\tREJECT  no  way  \n\
                    multi first\n  second part\n\
                    # between\n\
                    \tthird\n\
                    lonely\n\
                    alice@example.com duplicate\n";
        let src = parse("virtual", text.as_bytes(), false, true).unwrap();
        assert_eq!(
            src.entries,
            kv(&[
                ("alice@example.com", "alice@local"),
                ("bob", "REJECT  no  way"),
                ("multi", "first second part third"),
            ])
        );
        assert_eq!(
            src.warnings,
            vec![
                "virtual:8: expected format: key whitespace value; entry skipped".to_string(),
                "virtual:9: duplicate entry: \"alice@example.com\" (line 2 kept)".to_string(),
            ]
        );
        let src = parse("v", b"Key Value\n", false, false).unwrap();
        assert_eq!(src.entries, kv(&[("Key", "Value")]));
    }

    #[test]
    fn aliases_format() {
        let text = "postmaster: root\n\
                    Root:\tadmin@example.com,\n    \"|/usr/bin/prog arg\"\n\
                    \"john doe\" : john\n\
                    \"esc\\\"aped\": x\n\
                    list: :include:/etc/mail/list\n\
                    bad line\n\
                    two words: x\n\
                    empty:\n\
                    \"open: x\n\
                    root: again\n";
        let src = parse("aliases", text.as_bytes(), true, true).unwrap();
        assert_eq!(
            src.entries,
            kv(&[
                ("postmaster", "root"),
                ("root", "admin@example.com, \"|/usr/bin/prog arg\""),
                ("john doe", "john"),
                ("esc\"aped", "x"),
                ("list", ":include:/etc/mail/list"),
            ])
        );
        let w = src.warnings.join("\n");
        assert!(w.contains("aliases:7: need name:value pair"), "{w}");
        assert!(w.contains("aliases:8: white space in unquoted name"), "{w}");
        assert!(w.contains("aliases:9: no value for \"empty\""), "{w}");
        assert!(w.contains("aliases:10: unterminated quoted name"), "{w}");
        assert!(w.contains("aliases:11: duplicate entry: \"root\" (line 2 kept)"), "{w}");
    }

    #[test]
    fn bad_input_is_an_error_with_line() {
        let e = parse("f", b"a b\n\xff c\n", false, true).unwrap_err().to_string();
        assert_eq!(e, "f:2: invalid UTF-8");
        let e = parse("f", b"  leading\n", false, true).unwrap_err().to_string();
        assert!(e.starts_with("f:1: "), "{e}");
    }
}

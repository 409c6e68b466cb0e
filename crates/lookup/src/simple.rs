//! Tables that need no file: `static:`, `inline:`, `fail:`, and the
//! `proxy:` prefix.

use std::collections::HashMap;

use crate::{LookupError, Table, check_key, fold};

/// Strips one pair of `{ }` (Postfix extpar()): `{ a b }` → `a b`.
/// Text without a leading `{` is returned trimmed.
fn strip_braces(text: &str) -> Result<&str, String> {
    let text = text.trim();
    match text.strip_prefix('{') {
        None => Ok(text),
        Some(inner) => match inner.strip_suffix('}') {
            Some(inner) => Ok(inner.trim()),
            None => Err(format!("missing '}}' in \"{text}\"")),
        },
    }
}

/// Splits on commas and whitespace outside `{ }` (Postfix mystrtokq()).
fn split_items(text: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = None;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Err(format!("unbalanced '}}' in \"{text}\"")),
            '}' => depth -= 1,
            _ => {}
        }
        let sep = depth == 0 && (c == ',' || c.is_whitespace());
        match (sep, start) {
            (true, Some(s)) => {
                items.push(&text[s..i]);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if depth > 0 {
        return Err(format!("missing '}}' in \"{text}\""));
    }
    if let Some(s) = start {
        items.push(&text[s..]);
    }
    Ok(items)
}

/// `static:VALUE`: every key maps to VALUE.
#[derive(Debug)]
pub(crate) struct Static {
    spec: String,
    value: String,
}

impl Static {
    pub(crate) fn open(spec: &str, name: &str) -> Result<Box<dyn Table>, LookupError> {
        let value = strip_braces(name).map_err(|m| LookupError::open(spec, m))?;
        Ok(Box::new(Static { spec: spec.to_string(), value: value.to_string() }))
    }
}

impl Table for Static {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        check_key(&self.spec, key)?;
        Ok(Some(self.value.clone()))
    }

    fn spec(&self) -> &str {
        &self.spec
    }
}

/// `inline:{ key=value, { key = value with spaces } }`.
#[derive(Debug)]
pub(crate) struct Inline {
    spec: String,
    map: HashMap<String, String>,
}

impl Inline {
    pub(crate) fn open(spec: &str, name: &str) -> Result<Box<dyn Table>, LookupError> {
        let err = |m: String| LookupError::open(spec, m);
        let name = name.trim();
        if !name.starts_with('{') || !name.ends_with('}') {
            return Err(err("syntax error: the table must be enclosed in \"{\" and \"}\"".to_string()));
        }
        let body = strip_braces(name).map_err(err)?;
        let mut map = HashMap::new();
        for item in split_items(body).map_err(err)? {
            let item = strip_braces(item).map_err(err)?;
            let Some((k, v)) = item.split_once('=') else {
                return Err(err(format!("syntax error: expected \"key=value\", found \"{item}\"")));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(err(format!("syntax error: empty key in \"{item}\"")));
            }
            // Later items replace earlier ones, as Postfix's dict_ht does.
            map.insert(fold(k), v.to_string());
        }
        Ok(Box::new(Inline { spec: spec.to_string(), map }))
    }
}

impl Table for Inline {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        check_key(&self.spec, key)?;
        Ok(self.map.get(&fold(key)).cloned())
    }

    fn spec(&self) -> &str {
        &self.spec
    }
}

/// `fail:name`: every lookup fails (Postfix 3.0), which makes callers
/// defer. Useful in tests and as a placeholder.
#[derive(Debug)]
pub(crate) struct Fail {
    spec: String,
}

impl Fail {
    pub(crate) fn new(spec: &str) -> Fail {
        Fail { spec: spec.to_string() }
    }
}

impl Table for Fail {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        check_key(&self.spec, key)?;
        Err(LookupError::lookup(&self.spec, key, "table configured to fail"))
    }

    fn spec(&self) -> &str {
        &self.spec
    }
}

/// `proxy:type:name`: Postfix sends these through proxymap(8) to share one
/// connection and reach files outside a chroot. We open the inner table
/// directly and keep the configured spec for messages.
#[derive(Debug)]
pub(crate) struct Proxy {
    spec: String,
    inner: Box<dyn Table>,
}

impl Proxy {
    pub(crate) fn open(spec: &str, name: &str) -> Result<Box<dyn Table>, LookupError> {
        if name.starts_with("proxy:") {
            return Err(LookupError::open(spec, "nested proxy: prefix"));
        }
        let inner = crate::open(name)?;
        Ok(Box::new(Proxy { spec: spec.to_string(), inner }))
    }
}

impl Table for Proxy {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        self.inner.lookup(key)
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn address_keys(&self) -> bool {
        self.inner.address_keys()
    }

    fn stale(&self) -> Option<String> {
        self.inner.stale()
    }

    fn changed(&self) -> bool {
        self.inner.changed()
    }

    fn warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }
}

#[cfg(test)]
mod tests {
    use crate::open;

    #[test]
    fn static_table() {
        for (spec, key, want) in [
            ("static:OK", "anything", "OK"),
            ("static:{ REJECT go away }", "x", "REJECT go away"),
            ("static:uid=vmail gid=vmail home=/var/vmail/%d/%n", "u", "uid=vmail gid=vmail home=/var/vmail/%d/%n"),
        ] {
            let t = open(spec).unwrap();
            assert_eq!(t.lookup(key).unwrap().as_deref(), Some(want), "{spec}");
            assert_eq!(t.spec(), spec);
            assert!(t.address_keys());
        }
        assert!(open("static:{ unclosed").is_err());
    }

    #[test]
    fn inline_table() {
        let t = open("inline:{ a=b, C=D ,{ key = value with spaces },\n x=y=z, {e=} }").unwrap();
        let cases = [
            ("a", Some("b")),
            ("A", Some("b")),
            ("c", Some("D")),
            ("key", Some("value with spaces")),
            ("x", Some("y=z")),
            ("e", Some("")),
            ("b", None),
        ];
        for (key, want) in cases {
            assert_eq!(t.lookup(key).unwrap().as_deref(), want, "{key}");
        }
        let t = open("inline:{}").unwrap();
        assert_eq!(t.lookup("a").unwrap(), None);
        let t = open("inline:{a=1, a=2}").unwrap();
        assert_eq!(t.lookup("a").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn inline_errors() {
        for spec in [
            "inline:{ a = b }",
            "inline:a=b",
            "inline:{ a b }",
            "inline:{ =b }",
            "inline:{ a=b",
            "inline:{ {a=b }",
            "inline:{ a=b} }",
        ] {
            let e = open(spec).unwrap_err().to_string();
            assert!(e.starts_with(spec.trim()), "{spec}: {e}");
        }
    }

    #[test]
    fn fail_and_proxy() {
        let t = open("fail:whatever").unwrap();
        assert!(t.lookup("x").unwrap_err().to_string().contains("table configured to fail"));
        let t = open("proxy:inline:{a=b}").unwrap();
        assert_eq!(t.spec(), "proxy:inline:{a=b}");
        assert_eq!(t.lookup("a").unwrap().as_deref(), Some("b"));
        assert!(open("proxy:proxy:static:x").is_err());
        assert_eq!(open("proxy:nope:x").unwrap_err().to_string(), "unsupported dictionary type: nope");
    }
}

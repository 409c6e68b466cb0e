//! Parameter values with lazy `$name` expansion (Postfix mac_expand(3)
//! semantics) and typed accessors.
//!
//! A [`Params`] holds explicit values (from main.cf, `Params::set`, and
//! master.cf `-o` override layers, later layers winning) on top of the
//! registry defaults. Nothing is expanded until a value is asked for, so an
//! override of `myhostname` for one service changes what `$myhostname`
//! yields in every other parameter seen by that service.
//!
//! Expansion syntax:
//!
//! * `$name`, `${name}`, `$(name)`: the expanded value of `name` (empty when
//!   the name is unknown and unset);
//! * `${name?value}`, `${name?{value}}`: `value` (itself expanded) when
//!   `name` expands to non-empty text, else empty;
//! * `${name:value}`, `${name:{value}}`: `value` when `name` is empty, else
//!   empty;
//! * `${name?{value1}:{value2}}`: `value1` when `name` is non-empty, else
//!   `value2` (Postfix 3.0);
//! * `$$` is a literal `$`; a `$` followed by anything else stays literal.
//!
//! A value that refers to its own parameter (`mail_plugins = $mail_plugins
//! sieve`, the Dovecot idiom) sees the value from the layer below: an `-o`
//! override sees the main.cf value, a main.cf value sees the default. Any
//! other cycle is an error ("parameter expansion loop").
//!
//! Postfix 3.8 relational expressions (`${{$a} == {b} ? ...}`) are rejected
//! with an error rather than silently misread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{BUILTIN_FILE, COMMAND_LINE_FILE, ConfigError};
use crate::maincf::MainCf;
use crate::registry::{self, ParamType, is_name_byte};

/// Deepest chain of nested `$name` references followed.
pub const MAX_EXPANSION_DEPTH: usize = 100;
/// Largest expanded value produced.
pub const MAX_EXPANSION_LEN: usize = 1024 * 1024;
/// Most parameter references followed for one lookup; stops
/// "billion laughs" style definitions (a = $b$b, b = $c$c, ...) that would
/// take exponential time even when every value is empty.
pub const MAX_EXPANSION_STEPS: usize = 100_000;

/// Fallback domain, as Postfix's DEF_MYDOMAIN.
const DEFAULT_DOMAIN: &str = "localdomain";

/// One explicitly given value and where it came from.
#[derive(Debug, Clone)]
struct Value {
    raw: String,
    file: Arc<str>,
    line: usize,
}

/// Layered parameter values; see the module documentation.
#[derive(Debug, Clone)]
pub struct Params {
    /// Explicit values per name, lowest layer first (never empty).
    values: BTreeMap<String, Vec<Value>>,
    /// gethostname() result, computed once at construction.
    system_host: Arc<str>,
}

impl Params {
    /// Only built-in defaults (plus the machine's host name).
    pub fn empty() -> Params {
        Params { values: BTreeMap::new(), system_host: Arc::from(system_hostname()) }
    }

    /// The values of a parsed main.cf over the built-in defaults.
    pub fn from_main(main: &MainCf) -> Params {
        let mut params = Params::empty();
        let file: Arc<str> = Arc::from(main.path.display().to_string());
        for e in &main.entries {
            params.push(&e.name, &e.value, &file, e.line);
        }
        params
    }

    /// A copy with an extra layer of `(name, value, line)` overrides from
    /// `file` (master.cf `-o` options); the new layer wins.
    pub fn with_overrides(&self, file: &str, overrides: &[(String, String, usize)]) -> Params {
        let mut params = self.clone();
        let file: Arc<str> = Arc::from(file);
        for (name, value, line) in overrides {
            params.push(name, value, &file, *line);
        }
        params
    }

    /// Sets an explicit value, as given on a command line.
    pub fn set(&mut self, name: &str, value: &str) {
        self.set_from(name, value, COMMAND_LINE_FILE, 0);
    }

    /// Sets an explicit value attributed to `file:line` (used in errors).
    /// Like an override it is a new layer: `$name` in `value` refers to the
    /// previous value.
    pub fn set_from(&mut self, name: &str, value: &str, file: &str, line: usize) {
        self.push(name, value, &Arc::from(file), line);
    }

    fn push(&mut self, name: &str, value: &str, file: &Arc<str>, line: usize) {
        self.values.entry(name.to_string()).or_default().push(Value {
            raw: value.to_string(),
            file: file.clone(),
            line,
        });
    }

    /// The current (top layer) explicit value.
    fn top(&self, name: &str) -> Option<&Value> {
        self.values.get(name).and_then(|layers| layers.last())
    }

    /// Replaces the machine host name that the `myhostname` and `mydomain`
    /// defaults derive from (tests, or a caller that knows better).
    pub fn set_system_hostname(&mut self, hostname: &str) {
        self.system_host = Arc::from(hostname);
    }

    /// The raw (unexpanded) value: the explicit one, else the default, else
    /// `None` for an unknown, unset name. For `myhostname` and `mydomain`
    /// the computed default is returned.
    pub fn raw(&self, name: &str) -> Option<String> {
        if let Some(v) = self.top(name) {
            return Some(v.raw.clone());
        }
        let mut ex = Expander::new(self);
        match name {
            "myhostname" => Some(ex.default_myhostname().unwrap_or_else(|_| self.static_myhostname())),
            "mydomain" => Some(ex.default_mydomain().unwrap_or_else(|_| self.static_mydomain())),
            _ => registry::lookup(name).map(|p| p.default.to_string()),
        }
    }

    /// Whether the value was given explicitly (main.cf, `set`, override).
    pub fn is_explicit(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Names of all explicit values, sorted.
    pub fn explicit_names(&self) -> Vec<String> {
        self.values.keys().cloned().collect()
    }

    /// Where the value of `name` comes from: `(file, line)` of the explicit
    /// value, `("(built-in default)", 0)` for a known parameter, `None` for
    /// an unknown, unset one.
    pub fn origin(&self, name: &str) -> Option<(String, usize)> {
        match self.top(name) {
            Some(v) => Some((v.file.to_string(), v.line)),
            None if registry::lookup(name).is_some() => Some((BUILTIN_FILE.to_string(), 0)),
            None => None,
        }
    }

    /// The fully expanded value; `""` for an unknown, unset name.
    pub fn get(&self, name: &str) -> Result<String, ConfigError> {
        let origin = Origin { file: Arc::from(BUILTIN_FILE), line: 0, param: name.to_string() };
        Expander::new(self).param(name, &origin)
    }

    /// A boolean: yes/no, true/false, 1/0 (any case).
    pub fn get_bool(&self, name: &str) -> Result<bool, ConfigError> {
        self.typed(name, parse_bool)
    }

    /// A decimal integer.
    pub fn get_int(&self, name: &str) -> Result<i64, ConfigError> {
        self.typed(name, parse_int)
    }

    /// A duration; a bare number uses the parameter's default unit from the
    /// registry (seconds for unknown parameters).
    pub fn get_time(&self, name: &str) -> Result<Duration, ConfigError> {
        let unit = match registry::lookup(name).map(|p| p.ty) {
            Some(ParamType::Time(unit)) => unit,
            _ => 's',
        };
        self.typed(name, |v| parse_time(v, unit))
    }

    /// A size in bytes.
    pub fn get_size(&self, name: &str) -> Result<u64, ConfigError> {
        self.typed(name, parse_size)
    }

    /// A list: items split on commas and whitespace, empty items dropped,
    /// `{ ... }` groups (and `type:{ ... }` inline tables) kept whole.
    pub fn get_list(&self, name: &str) -> Result<Vec<String>, ConfigError> {
        self.typed(name, split_list)
    }

    /// Expands arbitrary text against these parameters. Errors are
    /// attributed to the pseudo parameter `(text)`.
    pub fn expand(&self, text: &str) -> Result<String, ConfigError> {
        let origin = Origin { file: Arc::from(COMMAND_LINE_FILE), line: 0, param: "(text)".to_string() };
        Expander::new(self).text(text, &origin)
    }

    /// Checks that `name` expands and, if the registry knows it, parses as
    /// its type.
    pub fn check(&self, name: &str) -> Result<(), ConfigError> {
        match registry::lookup(name).map(|p| p.ty) {
            None | Some(ParamType::Str) => self.get(name).map(drop),
            Some(ParamType::Bool) => self.get_bool(name).map(drop),
            Some(ParamType::Int) => self.get_int(name).map(drop),
            Some(ParamType::Time(_)) => self.get_time(name).map(drop),
            Some(ParamType::Size) => self.get_size(name).map(drop),
            Some(ParamType::List) => self.get_list(name).map(drop),
        }
    }

    fn typed<T>(&self, name: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        let value = self.get(name)?;
        parse(&value).map_err(|message| {
            let (file, line) = self.origin(name).unwrap_or_else(|| (BUILTIN_FILE.to_string(), 0));
            ConfigError::param(&file, line, name, message)
        })
    }

    /// myhostname default without looking at other parameters.
    fn static_myhostname(&self) -> String {
        qualify(&self.system_host, DEFAULT_DOMAIN)
    }

    /// mydomain default without looking at other parameters.
    fn static_mydomain(&self) -> String {
        domain_of(&self.static_myhostname())
    }
}

/// The machine's host name, or "localhost" if it cannot be had.
fn system_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Postfix check_myhostname(): a name without a dot gets `.domain`.
fn qualify(host: &str, domain: &str) -> String {
    if host.contains('.') { host.to_string() } else { format!("{host}.{domain}") }
}

/// Postfix check_mydomainname(): the host name minus its first label.
fn domain_of(host: &str) -> String {
    match host.split_once('.') {
        Some((_, rest)) if !rest.is_empty() => rest.to_string(),
        _ => DEFAULT_DOMAIN.to_string(),
    }
}

/// Where a value being expanded came from, for error messages.
#[derive(Debug, Clone)]
struct Origin {
    file: Arc<str>,
    line: usize,
    param: String,
}

impl Origin {
    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::param(&self.file, self.line, &self.param, message)
    }
}

/// State of one expansion: the chain of parameters being expanded (for loop
/// detection) and the work done so far.
struct Expander<'a> {
    params: &'a Params,
    /// (name, layer index) being expanded; `None` for a default.
    stack: Vec<(String, Option<usize>)>,
    steps: usize,
}

impl<'a> Expander<'a> {
    fn new(params: &'a Params) -> Expander<'a> {
        Expander { params, stack: Vec::new(), steps: 0 }
    }

    /// Expanded value of parameter `name`, referenced from `referrer`.
    fn param(&mut self, name: &str, referrer: &Origin) -> Result<String, ConfigError> {
        let layers = self.params.values.get(name).map_or(&[][..], Vec::as_slice);
        // A direct self-reference sees the layer below (Dovecot's
        // "mail_plugins = $mail_plugins sieve"); otherwise the top layer.
        let level = match self.stack.last() {
            Some((n, Some(l))) if n == name => l.checked_sub(1),
            _ => layers.len().checked_sub(1),
        };
        if self.stack.iter().any(|(n, l)| n == name && *l == level) || self.stack.len() >= MAX_EXPANSION_DEPTH {
            let mut chain: Vec<&str> = self.stack.iter().map(|(n, _)| n.as_str()).collect();
            chain.push(name);
            return Err(referrer.error(format!("parameter expansion loop: {}", chain.join(" -> "))));
        }
        self.steps += 1;
        if self.steps > MAX_EXPANSION_STEPS {
            return Err(referrer.error("parameter expansion too complex"));
        }
        let (raw, origin) = match level {
            Some(l) => {
                let v = &layers[l];
                (v.raw.clone(), Origin { file: v.file.clone(), line: v.line, param: name.to_string() })
            }
            None => {
                // The dynamic defaults are plain text, never expanded again.
                self.stack.push((name.to_string(), None));
                let dynamic = match name {
                    "myhostname" => Some(self.default_myhostname()),
                    "mydomain" => Some(self.default_mydomain()),
                    _ => None,
                };
                self.stack.pop();
                if let Some(value) = dynamic {
                    return value;
                }
                match registry::lookup(name) {
                    Some(p) => (
                        p.default.to_string(),
                        Origin { file: Arc::from(BUILTIN_FILE), line: 0, param: name.to_string() },
                    ),
                    None => return Ok(String::new()),
                }
            }
        };
        self.stack.push((name.to_string(), level));
        let result = self.text(&raw, &origin);
        self.stack.pop();
        result
    }

    fn expanding(&self, name: &str) -> bool {
        self.stack.iter().any(|(n, _)| n == name)
    }

    /// myhostname default: the machine's name; if it has no dot, plus
    /// `.$mydomain` when mydomain is set, else `.localdomain` (Postfix).
    fn default_myhostname(&mut self) -> Result<String, ConfigError> {
        let host = self.params.system_host.clone();
        if host.contains('.') {
            return Ok(host.to_string());
        }
        let in_progress = self.expanding("mydomain");
        if self.params.values.contains_key("mydomain") && !in_progress {
            let origin = self.origin_of("myhostname");
            let domain = self.param("mydomain", &origin)?;
            if !domain.is_empty() {
                return Ok(qualify(&host, &domain));
            }
        }
        Ok(self.params.static_myhostname())
    }

    /// mydomain default: `$myhostname` minus its first label (Postfix).
    fn default_mydomain(&mut self) -> Result<String, ConfigError> {
        let in_progress = self.expanding("myhostname");
        if self.params.values.contains_key("myhostname") && !in_progress {
            let origin = self.origin_of("mydomain");
            let host = self.param("myhostname", &origin)?;
            return Ok(domain_of(&host));
        }
        Ok(self.params.static_mydomain())
    }

    fn origin_of(&self, name: &str) -> Origin {
        Origin { file: Arc::from(BUILTIN_FILE), line: 0, param: name.to_string() }
    }

    /// Expands `s`, a value that came from `origin`.
    fn text(&mut self, s: &str, origin: &Origin) -> Result<String, ConfigError> {
        let b = s.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            let Some(k) = s[i..].find('$') else {
                out.push_str(&s[i..]);
                break;
            };
            out.push_str(&s[i..i + k]);
            i += k;
            // b[i] is '$'; every index computed below is at an ASCII byte,
            // so slicing stays on char boundaries.
            match b.get(i + 1) {
                Some(b'$') => {
                    out.push('$');
                    i += 2;
                }
                Some(&open @ (b'{' | b'(')) => {
                    let close = if open == b'{' { b'}' } else { b')' };
                    let Some(end) = matching(b, i + 1, open, close) else {
                        return Err(
                            origin.error(format!("unterminated '${}' (missing '{}')", open as char, close as char))
                        );
                    };
                    let value = self.braced(&s[i + 2..end], open, origin)?;
                    out.push_str(&value);
                    i = end + 1;
                }
                Some(&c) if is_name_byte(c) => {
                    let len = b[i + 1..].iter().take_while(|&&c| is_name_byte(c)).count();
                    let value = self.param(&s[i + 1..i + 1 + len], origin)?;
                    out.push_str(&value);
                    i += 1 + len;
                }
                _ => {
                    out.push('$');
                    i += 1;
                }
            }
            if out.len() > MAX_EXPANSION_LEN {
                return Err(origin.error("parameter expansion result too long"));
            }
        }
        Ok(out)
    }

    /// Evaluates the inside of `${...}` or `$(...)`.
    fn braced(&mut self, inner: &str, open: u8, origin: &Origin) -> Result<String, ConfigError> {
        let close = if open == b'{' { '}' } else { ')' };
        let shown = || format!("'${}{inner}{close}'", open as char);
        let body = inner.trim_start();
        if body.starts_with('{') {
            return Err(
                origin.error(format!("unsupported expression {}: relational operators are not implemented", shown()))
            );
        }
        let len = body.bytes().take_while(|&c| is_name_byte(c)).count();
        if len == 0 {
            return Err(origin.error(format!("missing parameter name in {}", shown())));
        }
        let name = &body[..len];
        let rest = body[len..].trim_start();
        match rest.as_bytes().first() {
            None => self.param(name, origin),
            Some(b'?') => {
                let Some((yes, no)) = split_conditional(&rest[1..]) else {
                    return Err(origin.error(format!("bad conditional expression {}", shown())));
                };
                if !self.param(name, origin)?.is_empty() {
                    self.text(yes, origin)
                } else if let Some(no) = no {
                    self.text(no, origin)
                } else {
                    Ok(String::new())
                }
            }
            Some(b':') => {
                let value = unwrap_group(&rest[1..]).unwrap_or(&rest[1..]);
                if self.param(name, origin)?.is_empty() { self.text(value, origin) } else { Ok(String::new()) }
            }
            Some(_) => Err(origin.error(format!("unexpected text after parameter name '{name}' in {}", shown()))),
        }
    }
}

/// Index of the `close` byte matching the `open` byte at `start`.
fn matching(b: &[u8], start: usize, open: u8, close: u8) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &c) in b.iter().enumerate().skip(start) {
        if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(k);
            }
        }
    }
    None
}

/// `{text}` (with optional surrounding whitespace) → `text`.
fn unwrap_group(s: &str) -> Option<&str> {
    let t = s.trim();
    if t.starts_with('{') && matching(t.as_bytes(), 0, b'{', b'}') == Some(t.len() - 1) {
        Some(&t[1..t.len() - 1])
    } else {
        None
    }
}

/// After `?`: either plain `value`, `{value}` or `{value1}:{value2}`.
fn split_conditional(s: &str) -> Option<(&str, Option<&str>)> {
    let t = s.trim_start();
    if !t.starts_with('{') {
        return Some((s, None));
    }
    let end = matching(t.as_bytes(), 0, b'{', b'}')?;
    let yes = &t[1..end];
    let after = t[end + 1..].trim_start();
    if after.is_empty() {
        return Some((yes, None));
    }
    let no = unwrap_group(after.strip_prefix(':')?)?;
    Some((yes, Some(no)))
}

/// Parses a boolean: yes/no, true/false, 1/0, any case.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err(format!("bad boolean value '{value}': expected yes or no")),
    }
}

/// Parses a decimal integer.
pub fn parse_int(value: &str) -> Result<i64, String> {
    value.trim().parse().map_err(|_| format!("bad integer value '{value}': expected a decimal number"))
}

/// Parses a duration: one or more `NUMBER[UNIT]` parts ("100s", "1h30m",
/// "2 mins"); a bare number takes `default_unit`. Units: s, m, h, d, w and
/// Dovecot's spelled-out forms (secs, mins, hours, days, weeks, ms).
pub fn parse_time(value: &str, default_unit: char) -> Result<Duration, String> {
    let bad = || format!("bad time value '{value}': expected a number with optional unit s/m/h/d/w");
    let t = value.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let b = t.as_bytes();
    let mut i = 0;
    let mut total_ms: u64 = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = t[i..i + digits].parse().map_err(|_| bad())?;
        i += digits;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let letters = b[i..].iter().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = t[i..i + letters].to_ascii_lowercase();
        i += letters;
        let unit_ms = if unit.is_empty() {
            if i < b.len() {
                return Err(bad());
            }
            unit_millis(&default_unit.to_string())
        } else {
            unit_millis(&unit)
        }
        .ok_or_else(bad)?;
        total_ms = n.checked_mul(unit_ms).and_then(|ms| total_ms.checked_add(ms)).ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total_ms))
}

fn unit_millis(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 604_800_000,
        _ => return None,
    })
}

/// Parses a size in bytes: a number with optional k/m/g/t suffix (powers of
/// 1024; "kB", "MiB" and a trailing "b" are accepted too).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let bad = || format!("bad size value '{value}': expected a number of bytes with optional unit k/m/g");
    let t = value.trim();
    let digits = t.bytes().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match t[digits..].trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// Splits a list value on commas and whitespace, dropping empty items and
/// keeping `{ ... }` groups (with their braces) inside one item, so that
/// `inline:{ a=b, c=d }` is one item (Postfix mystrtokq()).
pub fn split_list(value: &str) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in value.chars() {
        if depth == 0 && (c == ',' || c.is_whitespace()) {
            if !cur.is_empty() {
                items.push(std::mem::take(&mut cur));
            }
            continue;
        }
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Err(format!("unbalanced '}}' in '{value}'")),
            '}' => depth -= 1,
            _ => {}
        }
        cur.push(c);
    }
    if depth > 0 {
        return Err(format!("missing '}}' in '{value}'"));
    }
    if !cur.is_empty() {
        items.push(cur);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let mut p = Params::empty();
        p.set_system_hostname("host.example.org");
        for (i, (k, v)) in pairs.iter().enumerate() {
            p.set_from(k, v, "main.cf", i + 1);
        }
        p
    }

    #[test]
    fn defaults_and_dynamic_names() {
        let mut p = Params::empty();
        p.set_system_hostname("box");
        assert_eq!(p.get("myhostname").unwrap(), "box.localdomain");
        assert_eq!(p.get("mydomain").unwrap(), "localdomain");
        assert_eq!(p.get("myorigin").unwrap(), "box.localdomain");
        assert_eq!(p.get("mydestination").unwrap(), "box.localdomain, localhost.localdomain, localhost");
        assert_eq!(p.get("smtpd_banner").unwrap(), "box.localdomain ESMTP rpost");
        p.set_system_hostname("mx.mail.example.com");
        assert_eq!(p.get("mydomain").unwrap(), "mail.example.com");
        assert_eq!(p.raw("mydomain").unwrap(), "mail.example.com");
        assert_eq!(p.raw("myorigin").unwrap(), "$myhostname");
        assert!(!p.is_explicit("myorigin"));
        assert_eq!(p.raw("no_such_thing"), None);
        assert_eq!(p.get("no_such_thing").unwrap(), "");
        // The real machine's name always yields something with a dot.
        assert!(Params::empty().get("myhostname").unwrap().contains('.'));
    }

    #[test]
    fn mydomain_follows_explicit_myhostname_and_vice_versa() {
        let p = params(&[("myhostname", "mail.example.com")]);
        assert_eq!(p.get("mydomain").unwrap(), "example.com");
        assert_eq!(p.raw("mydomain").unwrap(), "example.com");
        // The seed's "myhostname = MAILHOST.$mydomain" with mydomain set.
        let p = params(&[("mydomain", "example.net"), ("myhostname", "mx.$mydomain")]);
        assert_eq!(p.get("myhostname").unwrap(), "mx.example.net");
        // ... and with mydomain unset: no loop, the machine's domain is used.
        let p = params(&[("myhostname", "mx.$mydomain")]);
        assert_eq!(p.get("myhostname").unwrap(), "mx.example.org");
        // A dotless machine name is qualified with an explicit mydomain.
        let mut p = params(&[("mydomain", "example.net")]);
        p.set_system_hostname("box");
        assert_eq!(p.get("myhostname").unwrap(), "box.example.net");
    }

    #[test]
    fn nested_and_braced() {
        let p = params(&[("a", "A"), ("b", "[$a]"), ("c", "${b}-$(a)-$b$a"), ("d", "x$$y $ z $-")]);
        assert_eq!(p.get("c").unwrap(), "[A]-A-[A]A");
        assert_eq!(p.get("d").unwrap(), "x$y $ z $-");
        assert_eq!(p.expand("$a/${c}").unwrap(), "A/[A]-A-[A]A");
        assert_eq!(p.expand("cost: 5$").unwrap(), "cost: 5$");
        assert_eq!(p.expand("${undefined_name}|$undefined_name|").unwrap(), "||");
        assert_eq!(p.expand("café $a ✉").unwrap(), "café A ✉");
    }

    #[test]
    fn conditionals() {
        let p = params(&[("set", "yes"), ("empty", ""), ("v", "V")]);
        assert_eq!(p.expand("${set?on}").unwrap(), "on");
        assert_eq!(p.expand("${empty?on}").unwrap(), "");
        assert_eq!(p.expand("${nothere?on}").unwrap(), "");
        assert_eq!(p.expand("${set:off}").unwrap(), "");
        assert_eq!(p.expand("${empty:off}").unwrap(), "off");
        assert_eq!(p.expand("${set?{with $v}}").unwrap(), "with V");
        assert_eq!(p.expand("${empty:{ spaced }}").unwrap(), " spaced ");
        assert_eq!(p.expand("${set?{a}:{b}}").unwrap(), "a");
        assert_eq!(p.expand("${empty?{a}:{b}}").unwrap(), "b");
        assert_eq!(p.expand("${set?${v?nested}}").unwrap(), "nested");
        assert_eq!(p.expand("$(set?x)").unwrap(), "x");
        // Postfix's own defaults use these forms.
        assert_eq!(p.get("smtpd_timeout").unwrap(), "300s");
        assert_eq!(p.get_time("smtpd_timeout").unwrap(), Duration::from_secs(300));
        assert_eq!(p.get_int("smtpd_hard_error_limit").unwrap(), 20);
        let mut stressed = p.clone();
        stressed.set("stress", "yes");
        assert_eq!(stressed.get_int("smtpd_hard_error_limit").unwrap(), 1);
        assert!(stressed.get_bool("smtpd_per_request_deadline").unwrap());
    }

    #[test]
    fn self_reference_sees_the_layer_below() {
        let p = params(&[("mail_plugins", "$mail_plugins quota"), ("own", "[$own]")]);
        assert_eq!(p.get("mail_plugins").unwrap(), " quota");
        assert_eq!(p.get("own").unwrap(), "[]");
        let svc = p.with_overrides("master.cf", &[("mail_plugins".into(), "${mail_plugins} sieve".into(), 40)]);
        assert_eq!(svc.get("mail_plugins").unwrap(), " quota sieve");
        assert_eq!(svc.get_list("mail_plugins").unwrap(), vec!["quota", "sieve"]);
        let mut twice = svc.clone();
        twice.set("mail_plugins", "$mail_plugins acl");
        assert_eq!(twice.get("mail_plugins").unwrap(), " quota sieve acl");
        // Another parameter referring to it sees the top layer.
        let svc = svc.with_overrides("master.cf", &[("x".into(), "<$mail_plugins>".into(), 41)]);
        assert_eq!(svc.get("x").unwrap(), "< quota sieve>");
        // An indirect cycle is still a loop.
        let p = params(&[("a", "$b"), ("b", "$a")]);
        let svc = p.with_overrides("master.cf", &[("a".into(), "$a".into(), 3)]);
        assert!(svc.get("a").unwrap_err().to_string().contains("loop"));
    }

    #[test]
    fn loops_are_errors_naming_the_parameter() {
        let p = params(&[("a", "$b"), ("b", "x${a}")]);
        let e = p.get("a").unwrap_err().to_string();
        assert_eq!(e, "main.cf:2: parameter b: parameter expansion loop: a -> b -> a");
        let e = p.get("b").unwrap_err().to_string();
        assert_eq!(e, "main.cf:1: parameter a: parameter expansion loop: b -> a -> b");
        // A self-reference is not a loop: it sees the default ("" here).
        let p = params(&[("self", "$self")]);
        assert_eq!(p.get("self").unwrap(), "");
        // A loop through a default.
        let p = params(&[("myhostname", "$myorigin"), ("myorigin", "$myhostname")]);
        assert!(p.get("smtpd_banner").unwrap_err().to_string().contains("loop"));
    }

    #[test]
    fn depth_and_work_limits() {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for i in 0..150 {
            pairs.push((format!("p{i}"), format!("$p{}", i + 1)));
        }
        let mut p = params(&[]);
        for (k, v) in &pairs {
            p.set(k, v);
        }
        assert!(p.get("p0").unwrap_err().to_string().contains("loop"));
        assert_eq!(p.get("p100").unwrap(), "");

        let mut p = params(&[]);
        for i in 0..40 {
            p.set(&format!("l{i}"), &format!("$l{}$l{}", i + 1, i + 1));
        }
        assert!(p.get("l0").unwrap_err().to_string().contains("too complex"));

        let mut p = params(&[]);
        p.set("big", &"x".repeat(1000));
        for i in 0..20 {
            let prev = if i == 0 { "big".to_string() } else { format!("b{}", i - 1) };
            p.set(&format!("b{i}"), &format!("${prev}${prev}"));
        }
        assert!(p.get("b19").unwrap_err().to_string().contains("too long"));
    }

    #[test]
    fn unterminated_and_bad_syntax() {
        let p =
            params(&[("x", "a ${b c"), ("y", "$(b"), ("z", "${a?{x}:y}"), ("r", "${{$a} == {b} ? {c}}"), ("n", "${}")]);
        assert_eq!(p.get("x").unwrap_err().to_string(), "main.cf:1: parameter x: unterminated '${' (missing '}')");
        assert!(p.get("y").unwrap_err().to_string().starts_with("main.cf:2: parameter y: unterminated '$('"));
        assert!(p.get("z").unwrap_err().to_string().contains("bad conditional"));
        assert!(p.get("r").unwrap_err().to_string().contains("unsupported"));
        assert!(p.get("n").unwrap_err().to_string().contains("missing parameter name"));
        // The error names the value that contains the problem, not the
        // parameter that referenced it.
        let p = params(&[("good", "<$bad>"), ("bad", "${oops")]);
        assert!(p.get("good").unwrap_err().to_string().starts_with("main.cf:2: parameter bad:"));
    }

    #[test]
    fn overrides_are_lazy() {
        let base = params(&[("myhostname", "mail.example.com"), ("smtpd_banner", "$myhostname hi")]);
        assert_eq!(base.get("myorigin").unwrap(), "mail.example.com");
        let svc = base.with_overrides("master.cf", &[("myhostname".into(), "other.example.net".into(), 12)]);
        assert_eq!(svc.get("myorigin").unwrap(), "other.example.net");
        assert_eq!(svc.get("smtpd_banner").unwrap(), "other.example.net hi");
        assert_eq!(svc.get("mydomain").unwrap(), "example.net");
        assert_eq!(svc.origin("myhostname"), Some(("master.cf".to_string(), 12)));
        // The base is untouched.
        assert_eq!(base.get("smtpd_banner").unwrap(), "mail.example.com hi");
        assert_eq!(base.explicit_names(), vec!["myhostname", "smtpd_banner"]);
    }

    #[test]
    fn typed_values() {
        let p = params(&[
            ("b1", "Yes"),
            ("b2", "FALSE"),
            ("i", " -42 "),
            ("maximal_queue_lifetime", "3"),
            ("minimal_backoff_time", "1h30m"),
            ("t3", "2 mins"),
            ("s1", "64k"),
            ("s2", "10240000"),
            ("bad", "abc"),
        ]);
        assert!(p.get_bool("b1").unwrap());
        assert!(!p.get_bool("b2").unwrap());
        assert_eq!(p.get_int("i").unwrap(), -42);
        assert_eq!(p.get_time("maximal_queue_lifetime").unwrap(), Duration::from_secs(3 * 86400));
        assert_eq!(p.get_time("minimal_backoff_time").unwrap(), Duration::from_secs(5400));
        assert_eq!(p.get_time("t3").unwrap(), Duration::from_secs(120));
        assert_eq!(p.get_time("delay_warning_time").unwrap(), Duration::ZERO);
        assert_eq!(p.get_time("imap_idle_notify_interval").unwrap(), Duration::from_secs(120));
        assert_eq!(p.get_size("s1").unwrap(), 65536);
        assert_eq!(p.get_size("s2").unwrap(), 10_240_000);
        assert_eq!(p.get_size("message_size_limit").unwrap(), 10_240_000);
        assert_eq!(p.get_size("imap_max_line_length").unwrap(), 65536);
        assert_eq!(
            p.get_time("bad").unwrap_err().to_string(),
            "main.cf:9: parameter bad: bad time value 'abc': expected a number with optional unit s/m/h/d/w"
        );
        assert!(p.get_bool("bad").unwrap_err().to_string().contains("expected yes or no"));
        assert!(p.get_int("bad").unwrap_err().to_string().contains("bad integer value 'abc'"));
        assert!(p.get_size("bad").unwrap_err().to_string().contains("bad size value 'abc'"));
        // Every built-in default parses as its type.
        for param in registry::PARAMS {
            p.check(param.name).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn time_parsing() {
        let s = |v| parse_time(v, 's');
        assert_eq!(s("100").unwrap(), Duration::from_secs(100));
        assert_eq!(s("100s").unwrap(), Duration::from_secs(100));
        assert_eq!(s("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(s("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(s("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(s("1w").unwrap(), Duration::from_secs(604_800));
        assert_eq!(s("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(s("1 hour 5 secs").unwrap(), Duration::from_secs(3605));
        assert_eq!(s("1h 30").unwrap(), Duration::from_secs(3630));
        assert_eq!(s("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_time("2", 'h').unwrap(), Duration::from_secs(7200));
        for bad in ["", "abc", "5x", "h", "1 2s", "-1", "99999999999999999999", "1.5h"] {
            assert!(s(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn size_parsing() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("2 MB").unwrap(), 2 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        for bad in ["", "k", "1x", "-5", "99999999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_splitting() {
        let l = |v| split_list(v).unwrap();
        assert_eq!(l("a, b,,c\t d "), vec!["a", "b", "c", "d"]);
        assert_eq!(l(""), Vec::<String>::new());
        assert_eq!(
            l("check_client_access inline:{ 1.2.3.4=REJECT, 5.6.7.8=OK }, permit"),
            vec!["check_client_access", "inline:{ 1.2.3.4=REJECT, 5.6.7.8=OK }", "permit"]
        );
        assert_eq!(l("{ a b }, c"), vec!["{ a b }", "c"]);
        assert_eq!(
            l("CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}"),
            vec!["CONNECT", "GET", "POST", "regexp:{{/^[^A-Z]/ Bogus}}"]
        );
        assert!(split_list("inline:{ a=b").is_err());
        assert!(split_list("a }").is_err());
        let p = params(&[("mydestination", "$myhostname, localhost")]);
        assert_eq!(p.get_list("mydestination").unwrap(), vec!["host.example.org", "localhost"]);
    }
}

//! The one error type of this crate.
//!
//! Messages are single lines. Keys and addresses in them may come from the
//! network, so they pass through [`printable`] first: truncated and with
//! control characters escaped, so a hostile key can neither flood nor forge
//! log lines.

use std::path::PathBuf;

/// Why a table could not be opened or a lookup could not be answered.
///
/// Every variant means "no answer": a mail daemon that gets one must defer
/// (4xx), never treat it as "not found".
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A table file line is malformed (`file:line: message`).
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file as configured.
        file: String,
        /// 1-based physical line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A table cannot be opened (bad spec, foreign database format, ...).
    #[error("{spec}: {message}")]
    Open {
        /// The `type:name` spec as configured.
        spec: String,
        /// What is wrong, with the fix where there is one.
        message: String,
    },
    /// The `type` of `type:name` is not one we implement.
    #[error("unsupported dictionary type: {0}")]
    UnsupportedType(String),
    /// A lookup key is longer than [`crate::MAX_KEY_LEN`].
    #[error("{spec}: lookup key too long ({len} bytes, limit {limit})")]
    KeyTooLong {
        /// The table.
        spec: String,
        /// Length of the key in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The table could not answer (a `fail:` table, a database error, a
    /// file that vanished).
    #[error("{spec}: lookup of \"{key}\" failed: {message}")]
    Lookup {
        /// The table.
        spec: String,
        /// The key, already [`printable`].
        key: String,
        /// What went wrong.
        message: String,
    },
    /// A table the caller needs could not be opened earlier (the caller
    /// logged why); every lookup through it must defer.
    #[error("table unavailable: {0}")]
    Unavailable(String),
    /// Virtual alias expansion came back to an address it is expanding.
    #[error("virtual alias loop for {address}: {}", chain.join(" -> "))]
    AliasLoop {
        /// The address whose expansion was asked for.
        address: String,
        /// The cycle, first and last element equal.
        chain: Vec<String>,
    },
    /// Virtual alias expansion nested deeper than `virtual_alias_recursion_limit`.
    #[error("unreasonable virtual alias nesting for {address} (virtual_alias_recursion_limit = {limit})")]
    RecursionLimit {
        /// The address whose expansion was asked for.
        address: String,
        /// The limit that was hit.
        limit: usize,
    },
    /// Virtual alias expansion produced more than `virtual_alias_expansion_limit` addresses.
    #[error("unreasonable virtual alias expansion size for {address} (virtual_alias_expansion_limit = {limit})")]
    ExpansionLimit {
        /// The address whose expansion was asked for.
        address: String,
        /// The limit that was hit.
        limit: usize,
    },
    /// A virtual alias table returned something that is not a usable
    /// address list (empty, or an address over the length limit).
    #[error("virtual alias table result for {address} is unusable: {message}")]
    BadResult {
        /// The address that was looked up.
        address: String,
        /// What is wrong with the result.
        message: String,
    },
    /// A parameter needed to set up lookups is malformed.
    #[error(transparent)]
    Config(#[from] rpost_config::ConfigError),
}

impl LookupError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> LookupError {
        LookupError::Io { path: path.into(), source }
    }

    pub(crate) fn syntax(file: &str, line: usize, message: impl Into<String>) -> LookupError {
        LookupError::Syntax { file: file.to_string(), line, message: message.into() }
    }

    pub(crate) fn open(spec: &str, message: impl Into<String>) -> LookupError {
        LookupError::Open { spec: spec.to_string(), message: message.into() }
    }

    pub(crate) fn lookup(spec: &str, key: &str, message: impl Into<String>) -> LookupError {
        LookupError::Lookup { spec: spec.to_string(), key: printable(key), message: message.into() }
    }
}

/// Longest piece of untrusted text quoted in a message.
const PRINTABLE_MAX: usize = 200;

/// Makes untrusted text safe to put in a log line: control characters and
/// quotes escaped, cut at 200 characters with `...`.
pub fn printable(text: &str) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == PRINTABLE_MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() || c == '"' || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_truncates() {
        assert_eq!(printable("a\r\nb\"c"), "a\\r\\nb\\\"c");
        let long = "x".repeat(500);
        let p = printable(&long);
        assert_eq!(p.len(), PRINTABLE_MAX + 3);
        assert!(p.ends_with("..."));
        assert_eq!(printable("caf\u{e9}"), "caf\u{e9}");
    }

    #[test]
    fn messages_are_one_line() {
        let e = LookupError::lookup("fail:x", "evil\nkey", "boom");
        assert_eq!(e.to_string(), "fail:x: lookup of \"evil\\nkey\" failed: boom");
        assert_eq!(LookupError::UnsupportedType("foo".into()).to_string(), "unsupported dictionary type: foo");
    }
}

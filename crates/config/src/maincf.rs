//! main.cf(5) parsing: logical lines of the form `name = value`.
//!
//! Values are kept raw; `$name` expansion happens later, lazily, in
//! [`crate::Params`]. A name given more than once takes its last value, as
//! in Postfix, silently.

use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::lines;
use crate::registry::valid_name;

/// One `name = value` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Parameter name.
    pub name: String,
    /// Raw value, trimmed, continuation lines joined by single spaces.
    pub value: String,
    /// 1-based line where the setting starts.
    pub line: usize,
}

/// A parsed main.cf.
#[derive(Debug, Clone, Default)]
pub struct MainCf {
    /// The file as given.
    pub path: PathBuf,
    /// Settings in file order; when a name repeats only the last setting is
    /// kept, at the position of that last setting.
    pub entries: Vec<Entry>,
}

impl MainCf {
    /// Parses main.cf text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<MainCf, ConfigError> {
        MainCf::parse_bytes(path, text.as_bytes())
    }

    /// Parses raw file contents (which must be UTF-8).
    pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<MainCf, ConfigError> {
        let file = path.display().to_string();
        let logical = lines::split(bytes).map_err(|(line, msg)| ConfigError::syntax(&file, line, msg))?;
        let mut entries: Vec<Entry> = Vec::with_capacity(logical.len());
        for ll in logical {
            let entry = parse_line(&ll.text).map_err(|msg| ConfigError::syntax(&file, ll.line, msg))?;
            let entry = Entry { name: entry.0.to_string(), value: entry.1.to_string(), line: ll.line };
            entries.retain(|e| e.name != entry.name);
            entries.push(entry);
        }
        Ok(MainCf { path: path.to_path_buf(), entries })
    }

    /// Reads and parses a main.cf file.
    pub fn load(path: &Path) -> Result<MainCf, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError::io(path, e))?;
        MainCf::parse_bytes(path, &bytes)
    }

    /// The setting of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Splits `name = value`; returns the error message on bad syntax.
pub(crate) fn parse_line(text: &str) -> Result<(&str, &str), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!("missing '=' after parameter name: '{}'", truncate(text)));
    };
    let name = name.trim_end();
    if !valid_name(name) {
        return Err(format!("bad parameter name '{}'", truncate(name)));
    }
    Ok((name, value.trim()))
}

/// Keeps quoted input in messages to one readable line.
fn truncate(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MainCf, ConfigError> {
        MainCf::parse(Path::new("/etc/rpost/main.cf"), text)
    }

    #[test]
    fn basic_entries() {
        let m = parse(
            "# comment\nmyhostname=mail.example.com\nmydestination =\n  $myhostname,\n\n  localhost\n\
             empty =\nspaced   =   a  b  \n",
        )
        .unwrap();
        let got: Vec<_> = m.entries.iter().map(|e| (e.name.as_str(), e.value.as_str(), e.line)).collect();
        assert_eq!(
            got,
            vec![
                ("myhostname", "mail.example.com", 2),
                ("mydestination", "$myhostname, localhost", 3),
                ("empty", "", 7),
                ("spaced", "a  b", 8),
            ]
        );
        assert_eq!(m.get("empty").unwrap().value, "");
        assert!(m.get("nothere").is_none());
    }

    #[test]
    fn value_may_contain_equals_and_hash() {
        let m = parse("auth_userdb = static:uid=vmail gid=vmail # not a comment\n").unwrap();
        assert_eq!(m.entries[0].value, "static:uid=vmail gid=vmail # not a comment");
    }

    #[test]
    fn last_duplicate_wins() {
        let m = parse("a = 1\nb = 2\na = 3\n").unwrap();
        let got: Vec<_> = m.entries.iter().map(|e| (e.name.as_str(), e.value.as_str(), e.line)).collect();
        assert_eq!(got, vec![("b", "2", 2), ("a", "3", 3)]);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let e = parse("a = 1\nthis is not a setting\n").unwrap_err().to_string();
        assert_eq!(e, "/etc/rpost/main.cf:2: missing '=' after parameter name: 'this is not a setting'");
        let e = parse("a = 1\n\nbad name = 2\n").unwrap_err().to_string();
        assert_eq!(e, "/etc/rpost/main.cf:3: bad parameter name 'bad name'");
        let e = parse("= 2\n").unwrap_err().to_string();
        assert_eq!(e, "/etc/rpost/main.cf:1: bad parameter name ''");
        let e = parse("  indented = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/rpost/main.cf:1: line starts with whitespace"), "{e}");
        let e = MainCf::parse_bytes(Path::new("m.cf"), b"a = \xff\n").unwrap_err().to_string();
        assert_eq!(e, "m.cf:1: invalid UTF-8");
    }

    #[test]
    fn load_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.cf");
        let e = MainCf::load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert_eq!(e.to_string(), format!("{}: No such file or directory (os error 2)", path.display()));
    }
}

//! Error and warning types shared by every parser in this crate.
//!
//! Every message is one line that starts with `file:line:` so an admin can
//! jump straight to the offending spot, the way Postfix's own fatal messages
//! read.

use std::fmt;
use std::path::PathBuf;

/// The `file` value used for problems in built-in default values.
pub const BUILTIN_FILE: &str = "(built-in default)";
/// The `file` value used for values set programmatically (`Params::set`).
pub const COMMAND_LINE_FILE: &str = "(command line)";

/// A configuration problem that stops the configuration from being used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (or directory) involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line does not follow main.cf(5)/master.cf(5) syntax.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file as given by the caller.
        file: String,
        /// 1-based line number (0 when no line applies).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A parameter value is malformed: bad expansion or wrong type.
    #[error("{file}:{line}: parameter {param}: {message}")]
    Param {
        /// File that holds the value ("(built-in default)" for defaults).
        file: String,
        /// Line of the value (0 for defaults and programmatic values).
        line: usize,
        /// The parameter name.
        param: String,
        /// What is wrong, including the offending value.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ConfigError {
        ConfigError::Io { path: path.into(), source }
    }

    pub(crate) fn syntax(file: &str, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::Syntax { file: file.to_string(), line, message: message.into() }
    }

    pub(crate) fn param(file: &str, line: usize, param: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Param { file: file.to_string(), line, param: param.to_string(), message: message.into() }
    }
}

/// A problem worth telling the admin about that does not stop the system,
/// such as an unknown parameter name (usually a typo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file as given by the caller.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is odd.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_is_one_line_naming_the_path() {
        let e = ConfigError::io("/etc/rpost/main.cf", std::io::Error::from_raw_os_error(2));
        assert_eq!(e.to_string(), "/etc/rpost/main.cf: No such file or directory (os error 2)");
    }

    #[test]
    fn display_formats() {
        let e = ConfigError::syntax("master.cf", 3, "bad");
        assert_eq!(e.to_string(), "master.cf:3: bad");
        let e = ConfigError::param("main.cf", 7, "myorigin", "oops");
        assert_eq!(e.to_string(), "main.cf:7: parameter myorigin: oops");
        let w = Warning { file: "main.cf".into(), line: 2, message: "unknown parameter: x=y".into() };
        assert_eq!(w.to_string(), "main.cf:2: unknown parameter: x=y");
    }
}

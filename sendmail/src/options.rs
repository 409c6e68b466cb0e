//! The Postfix sendmail(1) command line, parsed as Postfix parses it: getopt with
//! `A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx`, stopping at the first non-option (as
//! Postfix's `+` getopt on Linux), then recipients.

use std::path::PathBuf;

/// What the invocation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-bm` (the default): read a message from stdin and submit it.
    Deliver,
    /// `-bs`: SMTP on stdin/stdout.
    Smtp,
    /// `-bp` / `mailq`: list the queue.
    Mailq,
    /// `-bi` / `-I` / `newaliases`: rebuild alias_database.
    Newaliases,
    /// `-bv`: report how each recipient would be delivered.
    Verify,
    /// `-q`: deliver deferred mail now.
    Flush,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// `-C`: configuration directory (or a main.cf path in it).
    pub config: Option<PathBuf>,
    /// `-f` / `-r`: the envelope sender as given (`<>` or empty = null sender).
    pub sender: Option<String>,
    /// `-F` or `-oF`.
    pub fullname: Option<String>,
    /// `-t`.
    pub extract: bool,
    /// A line with a single `.` ends input (cleared by `-i` / `-oi`).
    pub dot_ends: bool,
    /// `-N`.
    pub notify: Option<String>,
    /// `-R`.
    pub ret: Option<String>,
    /// `-V` (or `-XV`).
    pub envid: Option<String>,
    /// `-v` given (more than once = more).
    pub verbose: u8,
    /// `-oA`: alias database for `-bi`.
    pub alias_file: Option<String>,
    /// `-q` with an argument (`-q1h`, `-qRsite`).
    pub queue_arg: Option<String>,
    pub recipients: Vec<String>,
    /// Notes for ignored options, printed with `-v` (Postfix logs them only verbosely) or as
    /// warnings where Postfix warns.
    pub ignored: Vec<String>,
    pub warnings: Vec<String>,
}

/// A command line that cannot be used (exit EX_USAGE).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Options that take an argument.
const WITH_ARG: &str = "ABCFLNORVXbefhopr";
/// Options without one (`q` takes one only when attached).
const FLAGS: &str = "GIUcimntvxq";

impl Options {
    fn new(mode: Mode) -> Options {
        Options {
            mode,
            config: None,
            sender: None,
            fullname: None,
            extract: false,
            dot_ends: true,
            notify: None,
            ret: None,
            envid: None,
            verbose: 0,
            alias_file: None,
            queue_arg: None,
            recipients: Vec::new(),
            ignored: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// The mode implied by the program name (`mailq`, `newaliases`), as Postfix's sendmail does.
pub fn mode_for_program(argv0: &str) -> Mode {
    match argv0.rsplit('/').next().unwrap_or(argv0) {
        "mailq" => Mode::Mailq,
        "newaliases" => Mode::Newaliases,
        _ => Mode::Deliver,
    }
}

/// Parses the arguments after `argv[0]`.
pub fn parse(argv0: &str, args: &[String]) -> Result<Options, UsageError> {
    let mut o = Options::new(mode_for_program(argv0));
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            break;
        }
        i += 1;
        for (pos, c) in arg[1..].char_indices() {
            let attached = &arg[1 + pos + c.len_utf8()..];
            if c == 'q' {
                // -q alone flushes; -q1h, -qRsite carry their argument attached.
                o.mode = Mode::Flush;
                if !attached.is_empty() {
                    o.queue_arg = Some(attached.to_string());
                }
                break;
            }
            if WITH_ARG.contains(c) {
                let value = if !attached.is_empty() {
                    attached.to_string()
                } else if i < args.len() {
                    i += 1;
                    args[i - 1].clone()
                } else {
                    return Err(UsageError(format!("option requires an argument -- '{c}'")));
                };
                option_with_arg(&mut o, c, value)?;
                break;
            }
            if !FLAGS.contains(c) {
                return Err(UsageError(format!("invalid option -- '{c}'")));
            }
            match c {
                'I' => o.mode = Mode::Newaliases,
                'i' => o.dot_ends = false,
                't' => o.extract = true,
                'v' => o.verbose = o.verbose.saturating_add(1),
                'n' => return Err(UsageError("-n option not supported".into())),
                _ => o.ignored.push(format!("-{c} option ignored")),
            }
        }
    }
    o.recipients = args[i..].to_vec();
    Ok(o)
}

fn option_with_arg(o: &mut Options, c: char, value: String) -> Result<(), UsageError> {
    match c {
        'C' => o.config = Some(PathBuf::from(value)),
        'F' => o.fullname = Some(value),
        'f' | 'r' => o.sender = Some(value),
        'N' => o.notify = Some(value),
        'R' => o.ret = Some(value),
        'V' => o.envid = Some(value),
        'X' if value.starts_with('V') => o.envid = Some(value[1..].to_string()),
        'b' => {
            o.mode = match value.as_str() {
                "m" => Mode::Deliver,
                "s" => Mode::Smtp,
                "p" => Mode::Mailq,
                "i" => Mode::Newaliases,
                "v" => Mode::Verify,
                "d" | "l" => {
                    return Err(UsageError(format!("-b{value}: daemon mode is `rmaster start`, not sendmail")));
                }
                other => return Err(UsageError(format!("-b{other}: unsupported mode"))),
            }
        }
        'o' => {
            let (opt, rest) = value.split_at(value.chars().next().map(char::len_utf8).unwrap_or(0));
            match opt {
                "i" => o.dot_ends = false,
                "A" => o.alias_file = Some(rest.to_string()),
                "F" => o.fullname = Some(rest.to_string()),
                _ => o.ignored.push(format!("-o{value} option ignored")),
            }
        }
        'O' | 'X' => o.warnings.push(format!("-{c} {value}: option ignored")),
        // -A -B -L -e -h -p: accepted for compatibility and ignored, as in Postfix.
        _ => o.ignored.push(format!("-{c} {value}: option ignored")),
    }
    Ok(())
}

/// `-N` text to the maildrop `notify` value (`NEVER` or a comma list), checked.
pub fn check_notify(text: &str) -> Result<String, UsageError> {
    let words: Vec<String> = text.split(',').map(|w| w.trim().to_ascii_uppercase()).collect();
    let ok = if words.iter().any(|w| w == "NEVER") {
        words.len() == 1
    } else {
        !words.is_empty() && words.iter().all(|w| matches!(w.as_str(), "SUCCESS" | "FAILURE" | "DELAY"))
    };
    if ok { Ok(words.join(",")) } else { Err(UsageError(format!("-N {text}: bad DSN notification option"))) }
}

/// `-R` text to `FULL` or `HDRS`.
pub fn check_ret(text: &str) -> Result<String, UsageError> {
    match text.to_ascii_uppercase().as_str() {
        "FULL" => Ok("FULL".into()),
        "HDRS" => Ok("HDRS".into()),
        _ => Err(UsageError(format!("-R {text}: bad DSN return option (FULL or HDRS)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Options, UsageError> {
        parse("sendmail", &args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn common_invocations() {
        let o = p(&["-oi", "-f", "a@x", "b@y", "c@z"]).unwrap();
        assert_eq!(o.mode, Mode::Deliver);
        assert!(!o.dot_ends);
        assert_eq!(o.sender.as_deref(), Some("a@x"));
        assert_eq!(o.recipients, vec!["b@y", "c@z"]);

        let o = p(&["-t", "-i", "-fa@x", "-FAlice Example"]).unwrap();
        assert!(o.extract && !o.dot_ends);
        assert_eq!(o.sender.as_deref(), Some("a@x"));
        assert_eq!(o.fullname.as_deref(), Some("Alice Example"));
        assert!(o.recipients.is_empty());

        // Clustered flags and an attached argument at the end of the cluster.
        let o = p(&["-tif<>", "x"]).unwrap();
        assert!(o.extract && !o.dot_ends);
        assert_eq!(o.sender.as_deref(), Some("<>"));
        assert_eq!(o.recipients, vec!["x"]);
    }

    #[test]
    fn modes() {
        assert_eq!(p(&["-bs"]).unwrap().mode, Mode::Smtp);
        assert_eq!(p(&["-bp"]).unwrap().mode, Mode::Mailq);
        assert_eq!(p(&["-bi"]).unwrap().mode, Mode::Newaliases);
        assert_eq!(p(&["-I"]).unwrap().mode, Mode::Newaliases);
        assert_eq!(p(&["-b", "v", "u@x"]).unwrap().mode, Mode::Verify);
        assert_eq!(p(&["-q"]).unwrap().mode, Mode::Flush);
        assert_eq!(p(&["-q30m"]).unwrap().queue_arg.as_deref(), Some("30m"));
        assert_eq!(parse("/usr/bin/mailq", &[]).unwrap().mode, Mode::Mailq);
        assert_eq!(parse("newaliases", &[]).unwrap().mode, Mode::Newaliases);
        assert!(p(&["-bd"]).is_err());
        assert!(p(&["-bz"]).is_err());
    }

    #[test]
    fn dsn_and_config_options() {
        let o = p(&["-N", "success,delay", "-R", "hdrs", "-V", "env1", "-C", "/etc/x", "u"]).unwrap();
        assert_eq!(o.notify.as_deref(), Some("success,delay"));
        assert_eq!(check_notify("success,delay").unwrap(), "SUCCESS,DELAY");
        assert_eq!(check_notify("never").unwrap(), "NEVER");
        assert!(check_notify("never,success").is_err());
        assert!(check_notify("sometimes").is_err());
        assert_eq!(check_ret("hdrs").unwrap(), "HDRS");
        assert!(check_ret("all").is_err());
        assert_eq!(o.envid.as_deref(), Some("env1"));
        assert_eq!(o.config, Some(PathBuf::from("/etc/x")));
        assert_eq!(p(&["-XVabc"]).unwrap().envid.as_deref(), Some("abc"));
    }

    #[test]
    fn ignored_and_refused_options() {
        let o = p(&["-om", "-odb", "-oem", "-m", "-x", "-B8BITMIME", "-L", "label", "-oA/etc/aliases2", "u"]).unwrap();
        assert_eq!(o.ignored.len(), 7, "{:?}", o.ignored);
        assert_eq!(o.alias_file.as_deref(), Some("/etc/aliases2"));
        assert_eq!(o.recipients, vec!["u"]);
        assert_eq!(p(&["-O", "x=y"]).unwrap().warnings.len(), 1);
        assert!(p(&["-n"]).is_err());
        assert!(p(&["-k"]).is_err());
        assert!(p(&["-f"]).is_err(), "missing argument");
        // Options stop at the first recipient and after --.
        assert_eq!(p(&["u", "-t"]).unwrap().recipients, vec!["u", "-t"]);
        let o = p(&["--", "-weird@x"]).unwrap();
        assert_eq!(o.recipients, vec!["-weird@x"]);
    }
}

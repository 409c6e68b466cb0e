//! In-place main.cf editing, as `postconf -e`, `postconf -X` and
//! `postconf -#`.
//!
//! Only the lines of the named settings change (the setting's first line
//! and its continuation lines); every other byte of the file, including
//! comments between a setting and its continuation lines, is kept. The new
//! file is written next to the old one, fsync'd and renamed over it, so a
//! crash leaves either the old or the new file, never a mix; the file mode
//! (and, when permitted, the owner) is kept.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::registry::{is_name_byte, valid_name};

/// Mode of a main.cf created from scratch.
const NEW_FILE_MODE: u32 = 0o644;

#[derive(Debug, Clone, Copy)]
enum Action<'a> {
    Set(&'a str),
    Remove,
    Comment,
}

/// Sets parameters (`postconf -e`): each existing setting (all of its
/// physical lines) is replaced in place by one `name = value` line; names
/// not present are appended in the given order. A missing file is created.
pub fn set_params(path: &Path, edits: &[(String, String)]) -> Result<(), ConfigError> {
    let mut actions = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (name, value) in edits {
        check_name(path, name)?;
        if value.contains(['\n', '\r']) {
            return Err(ConfigError::param(
                &path.display().to_string(),
                0,
                name,
                "value must not contain a line break",
            ));
        }
        if actions.insert(name.as_str(), Action::Set(value.trim())).is_none() {
            order.push(name);
        }
    }
    edit_file(path, &actions, &order, true)
}

/// Removes parameters (`postconf -X`), including their continuation lines.
pub fn remove_params(path: &Path, names: &[String]) -> Result<(), ConfigError> {
    let actions = name_actions(path, names, Action::Remove)?;
    edit_file(path, &actions, &[], false)
}

/// Comments parameters out (`postconf -#`): each physical line of the
/// setting gets a leading `#`.
pub fn comment_params(path: &Path, names: &[String]) -> Result<(), ConfigError> {
    let actions = name_actions(path, names, Action::Comment)?;
    edit_file(path, &actions, &[], false)
}

fn name_actions<'a>(
    path: &Path,
    names: &'a [String],
    action: Action<'a>,
) -> Result<HashMap<&'a str, Action<'a>>, ConfigError> {
    let mut actions = HashMap::new();
    for name in names {
        check_name(path, name)?;
        actions.insert(name.as_str(), action);
    }
    Ok(actions)
}

fn check_name(path: &Path, name: &str) -> Result<(), ConfigError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ConfigError::param(
            &path.display().to_string(),
            0,
            name,
            "bad parameter name: expected letters, digits and '_'",
        ))
    }
}

/// Applies `actions` to the file at `path`; `appends` lists (in order) the
/// names whose `Set` value is appended when the file lacks them.
fn edit_file(
    path: &Path,
    actions: &HashMap<&str, Action<'_>>,
    appends: &[&str],
    create: bool,
) -> Result<(), ConfigError> {
    // Edit the file a symlink points to rather than replacing the link.
    let path: PathBuf = match fs::canonicalize(path) {
        Ok(real) => real,
        Err(_) => path.to_path_buf(),
    };
    let (old, meta) = match fs::read(&path) {
        Ok(bytes) => {
            let meta = fs::metadata(&path).map_err(|e| ConfigError::io(&path, e))?;
            (bytes, Some(meta))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => (Vec::new(), None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ConfigError::io(&path, e)),
    };
    let new = apply(&old, actions, appends);
    if meta.is_some() && new == old {
        return Ok(());
    }
    write_atomically(&path, &new, meta.as_ref())
}

/// The pure part of editing: old file bytes in, new file bytes out.
fn apply(old: &[u8], actions: &HashMap<&str, Action<'_>>, appends: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(old.len() + 64);
    let mut found: Vec<&str> = Vec::new();
    // Action of the setting whose continuation lines may follow.
    let mut current: Option<Action<'_>> = None;
    for line in old.split_inclusive(|&b| b == b'\n') {
        let body = strip_terminator(line);
        let first = body.iter().position(|b| !b.is_ascii_whitespace());
        match first {
            // Blank and comment lines never belong to a setting.
            None => out.extend_from_slice(line),
            Some(i) if body[i] == b'#' => out.extend_from_slice(line),
            // First line of a setting (or of a malformed line).
            Some(0) => {
                current = None;
                let name_len = body.iter().take_while(|&&b| is_name_byte(b)).count();
                let rest = &body[name_len..];
                let eq = rest.iter().position(|b| !b.is_ascii_whitespace());
                let name = std::str::from_utf8(&body[..name_len]).unwrap_or("");
                match (eq.map(|k| rest[k]), actions.get_key_value(name)) {
                    (Some(b'='), Some((&key, &action))) if name_len > 0 => {
                        found.push(key);
                        current = Some(action);
                        emit(&mut out, line, key, action);
                    }
                    _ => out.extend_from_slice(line),
                }
            }
            // Continuation line.
            Some(_) => match current {
                Some(Action::Set(_) | Action::Remove) => {}
                Some(Action::Comment) => {
                    out.push(b'#');
                    out.extend_from_slice(line);
                }
                None => out.extend_from_slice(line),
            },
        }
    }
    for &name in appends {
        if found.contains(&name) {
            continue;
        }
        if let Some(Action::Set(value)) = actions.get(name) {
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(setting(name, value).as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// Output for the first line of a setting that an action applies to.
fn emit(out: &mut Vec<u8>, line: &[u8], name: &str, action: Action<'_>) {
    match action {
        Action::Set(value) => {
            out.extend_from_slice(setting(name, value).as_bytes());
            // Keep the file's line-ending style.
            let term = &line[strip_terminator(line).len()..];
            out.extend_from_slice(if term.is_empty() { b"\n" } else { term });
        }
        Action::Remove => {}
        Action::Comment => {
            out.push(b'#');
            out.extend_from_slice(line);
        }
    }
}

fn setting(name: &str, value: &str) -> String {
    if value.is_empty() { format!("{name} =") } else { format!("{name} = {value}") }
}

fn strip_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Writes `data` to a temporary file beside `path`, fsyncs it, gives it
/// the old file's mode and owner, renames it over `path` and fsyncs the
/// directory.
fn write_atomically(path: &Path, data: &[u8], old: Option<&fs::Metadata>) -> Result<(), ConfigError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "main.cf".to_string());
    let tmp = dir.join(format!(".{file_name}.rpost-edit.{}", std::process::id()));
    let result = write_tmp(&tmp, data, old).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| ConfigError::io(path, e))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| ConfigError::io(&dir, e))
    });
    if result.is_err() {
        // Best effort: do not leave a half-written temporary file behind.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_tmp(tmp: &Path, data: &[u8], old: Option<&fs::Metadata>) -> Result<(), ConfigError> {
    let open = || OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp);
    let mut file = match open() {
        // Left over from an earlier crash of a process with our pid.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp).map_err(|e| ConfigError::io(tmp, e))?;
            open()
        }
        other => other,
    }
    .map_err(|e| ConfigError::io(tmp, e))?;
    let mode = old.map_or(NEW_FILE_MODE, |m| m.mode() & 0o7777);
    (|| {
        file.write_all(data)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some(m) = old {
            let mine = file.metadata()?;
            if (mine.uid(), mine.gid()) != (m.uid(), m.gid()) {
                // Only root may give a file away; as anyone else the
                // edited file is ours, which is what we can do.
                let _ = std::os::unix::fs::fchown(&file, Some(m.uid()), Some(m.gid()));
            }
        }
        file.sync_all()
    })()
    .map_err(|e| ConfigError::io(tmp, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# Global settings
myhostname = mail.example.com

# restrictions
smtpd_recipient_restrictions =
    permit_mynetworks,
# comment inside
    reject_unauth_destination
mydomain=example.com
#relayhost = [smtp.example.net]
relayhost_extra = 1
";

    fn setup(text: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.cf");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn set_replaces_in_place_and_appends() {
        let (_d, path) = setup(SAMPLE.as_bytes());
        set_params(
            &path,
            &[
                ("smtpd_recipient_restrictions".into(), "reject".into()),
                ("relayhost".into(), "[relay.example.net]:587".into()),
                ("myhostname".into(), "mx.example.com".into()),
                ("empty_one".into(), "".into()),
            ],
        )
        .unwrap();
        let got = fs::read_to_string(&path).unwrap();
        assert_eq!(
            got,
            "\
# Global settings
myhostname = mx.example.com

# restrictions
smtpd_recipient_restrictions = reject
# comment inside
mydomain=example.com
#relayhost = [smtp.example.net]
relayhost_extra = 1
relayhost = [relay.example.net]:587
empty_one =
"
        );
        // The result parses back with the new values.
        let m = crate::maincf::MainCf::load(&path).unwrap();
        assert_eq!(m.get("smtpd_recipient_restrictions").unwrap().value, "reject");
        assert_eq!(m.get("mydomain").unwrap().value, "example.com");
    }

    #[test]
    fn remove_and_comment() {
        let (_d, path) = setup(SAMPLE.as_bytes());
        remove_params(&path, &s(&["smtpd_recipient_restrictions", "relayhost", "nothere"])).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "\
# Global settings
myhostname = mail.example.com

# restrictions
# comment inside
mydomain=example.com
#relayhost = [smtp.example.net]
relayhost_extra = 1
"
        );
        let (_d, path) = setup(SAMPLE.as_bytes());
        comment_params(&path, &s(&["smtpd_recipient_restrictions", "mydomain"])).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "\
# Global settings
myhostname = mail.example.com

# restrictions
#smtpd_recipient_restrictions =
#    permit_mynetworks,
# comment inside
#    reject_unauth_destination
#mydomain=example.com
#relayhost = [smtp.example.net]
relayhost_extra = 1
"
        );
        // Commented settings are gone for the parser.
        let m = crate::maincf::MainCf::load(&path).unwrap();
        let names: Vec<_> = m.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["myhostname", "relayhost_extra"]);
    }

    #[test]
    fn untouched_bytes_are_preserved() {
        let text = b"a = 1\r\n\r\n# caf\xc3\xa9\r\nb = 2\r\n  more\r\nc = \xff odd bytes\r\nd = 4";
        let (_d, path) = setup(text);
        set_params(&path, &[("b".into(), "3".into()), ("e".into(), "5".into())]).unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            b"a = 1\r\n\r\n# caf\xc3\xa9\r\nb = 3\r\nc = \xff odd bytes\r\nd = 4\ne = 5\n".to_vec()
        );
        // Replacing a last line without terminator.
        let (_d, path) = setup(b"a = 1\nb = 2");
        set_params(&path, &[("b".into(), "x".into())]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"a = 1\nb = x\n".to_vec());
    }

    #[test]
    fn duplicates_are_all_replaced() {
        let (_d, path) = setup(b"a = 1\nb = 2\na = 3\n");
        set_params(&path, &[("a".into(), "9".into())]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a = 9\nb = 2\na = 9\n");
    }

    #[test]
    fn mode_is_kept_and_missing_file_created() {
        let (dir, path) = setup(SAMPLE.as_bytes());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        set_params(&path, &[("biff".into(), "no".into())]).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("main.cf")]);

        let newpath = dir.path().join("new.cf");
        remove_params(&newpath, &s(&["a"])).unwrap();
        assert!(!newpath.exists());
        set_params(&newpath, &[("a".into(), "1".into())]).unwrap();
        assert_eq!(fs::read_to_string(&newpath).unwrap(), "a = 1\n");
        assert_eq!(fs::metadata(&newpath).unwrap().mode() & 0o777, NEW_FILE_MODE);
    }

    #[test]
    fn symlink_target_is_edited() {
        let (dir, path) = setup(b"a = 1\n");
        let link = dir.path().join("link.cf");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        set_params(&link, &[("a".into(), "2".into())]).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&path).unwrap(), "a = 2\n");
    }

    #[test]
    fn bad_input_is_rejected_without_touching_the_file() {
        let (_d, path) = setup(SAMPLE.as_bytes());
        let e = set_params(&path, &[("bad name".into(), "x".into())]).unwrap_err();
        assert!(e.to_string().contains("parameter bad name: bad parameter name"), "{e}");
        let e = set_params(&path, &[("a".into(), "x\ny = z".into())]).unwrap_err();
        assert!(e.to_string().contains("line break"), "{e}");
        assert!(remove_params(&path, &s(&["a-b"])).is_err());
        assert!(comment_params(&path, &s(&[""])).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), SAMPLE);
    }

    #[test]
    fn io_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/main.cf");
        let e = set_params(&path, &[("a".into(), "1".into())]).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert!(e.to_string().contains("no/such/dir"), "{e}");
    }
}

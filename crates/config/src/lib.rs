//! # rpost-config - main.cf / master.cf parsing and the parameter registry
//!
//! ## SUMMARY
//!
//! ```text
//! let cfg = rpost_config::Config::load(Path::new("/etc/rpost"))?;
//! let banner = cfg.params.get("smtpd_banner")?;
//! for svc in &cfg.master.services {
//!     let p = cfg.service_params(svc);
//!     let timeout = p.get_time("smtpd_timeout")?;
//! }
//! ```
//!
//! ## DESCRIPTION
//!
//! rpost reads the configuration files a Postfix + Dovecot admin already
//! knows. This crate parses them and answers "what is the value of
//! parameter X for service Y":
//!
//! * [`lines`] assembles logical lines (continuation lines start with
//!   whitespace, `#` comment lines are skipped), incrementally and sans-IO;
//! * [`maincf`] parses `name = value` settings;
//! * [`mastercf`] parses the service table, including `-o name=value`
//!   overrides and `{ ... }` groups;
//! * [`registry`] is the one table of known parameters: name, type,
//!   default (raw, as Postfix writes it) and a one-line description;
//! * [`params`] layers explicit values over the defaults and expands
//!   `$name`, `${name?value}`, `${name:value}` lazily, at lookup time, with
//!   typed accessors (bool, int, time, size, list);
//! * [`edit`] changes main.cf in place like `postconf -e`, `-X` and `-#`.
//!
//! [`Config::load`] ties these together and validates everything up front,
//! so a daemon never discovers a bad value halfway through a session: every
//! explicitly set known parameter must parse as its type, every expansion
//! must terminate, and unknown parameter names (usually typos) produce a
//! [`Warning`] naming file and line. A name that is referenced as `$name`
//! somewhere is taken to be user-defined and is not warned about.
//!
//! Every error is a single line that starts with `file:line:` and names the
//! parameter where one is involved.
//!
//! ## SECURITY
//!
//! The files parsed here are owned by root and never come from the
//! network; still, a damaged or mistaken file must not hang or exhaust a
//! daemon. Physical lines are limited to 64 KiB and logical lines to 1 MiB;
//! input must be UTF-8. Expansion is limited in nesting depth (100),
//! total work (100000 references per lookup) and result length (1 MiB), and
//! reports loops instead of recursing. Edits are written to a temporary
//! file, fsync'd and renamed, so a crash never leaves a partial main.cf.
//! This crate contains no unsafe code.
//!
//! ## CONFIGURATION
//!
//! The configuration directory (default `/etc/rpost`, see
//! `config_directory`) holds `main.cf` and `master.cf`. Parameter names are
//! Postfix's for the MTA side and Dovecot's for the mailbox side, all in
//! the one main.cf; see [`registry::PARAMS`] for the full list with
//! defaults.
//!
//! ## STANDARDS
//!
//! Postfix main.cf(5) and master.cf(5) syntax, including the Postfix 3.0
//! `{ ... }` grouping in master.cf and `${name?{value1}:{value2}}`
//! expansion. Postfix 3.8 relational expressions (`${{$a} == {b} ? ...}`)
//! are not supported and are reported as errors.

mod error;

pub mod edit;
pub mod lines;
pub mod maincf;
pub mod mastercf;
pub mod params;
pub mod registry;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use error::{BUILTIN_FILE, COMMAND_LINE_FILE, ConfigError, Warning};
pub use mastercf::{MasterCf, Service, ServiceType, Wakeup};
pub use params::Params;

use maincf::MainCf;
use registry::is_name_byte;

/// Everything loaded from a config directory.
#[derive(Debug, Clone)]
pub struct Config {
    /// The configuration directory.
    pub dir: PathBuf,
    /// main.cf values over the built-in defaults.
    pub params: Params,
    /// The service table.
    pub master: MasterCf,
    /// Non-fatal findings, such as unknown parameter names.
    pub warnings: Vec<Warning>,
}

impl Config {
    /// Reads DIR/main.cf and DIR/master.cf and validates them (see the
    /// crate documentation). `config_directory` is set to DIR, as Postfix
    /// does for `-c DIR`.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let main = MainCf::load(&dir.join("main.cf"))?;
        let master = MasterCf::load(&dir.join("master.cf"))?;
        Config::from_parts(dir, &main, master)
    }

    /// Builds and validates a configuration from already parsed files.
    pub fn from_parts(dir: &Path, main: &MainCf, master: MasterCf) -> Result<Config, ConfigError> {
        let mut params = Params::from_main(main);
        params.set("config_directory", &dir.display().to_string());
        let mut cfg = Config { dir: dir.to_path_buf(), params, master, warnings: Vec::new() };
        cfg.validate(main)?;
        Ok(cfg)
    }

    /// Params as seen by one master.cf service: main.cf, then
    /// `service_name` (the service's name, as Postfix's master passes it to
    /// its children), then the service's `-o` overrides.
    pub fn service_params(&self, service: &Service) -> Params {
        let file = self.master.path.display().to_string();
        let mut params = self.params.clone();
        params.set_from("service_name", &service.name, &file, service.line);
        params.with_overrides(&file, &service.overrides)
    }

    fn validate(&mut self, main: &MainCf) -> Result<(), ConfigError> {
        let referenced = self.referenced_names(main);
        let main_file = main.path.display().to_string();
        for e in &main.entries {
            if registry::lookup(&e.name).is_none() && !referenced.contains(&e.name) {
                self.warnings.push(unknown(&main_file, e.line, &e.name, &e.value));
            }
            self.params.check(&e.name)?;
        }
        self.params.check("config_directory")?;
        let master_file = self.master.path.display().to_string();
        let mut warnings = Vec::new();
        for svc in &self.master.services {
            let params = self.service_params(svc);
            for (name, value, line) in &svc.overrides {
                if registry::lookup(name).is_none() && !referenced.contains(name) {
                    warnings.push(unknown(&master_file, *line, name, value));
                }
                params.check(name)?;
            }
        }
        self.warnings.extend(warnings);
        Ok(())
    }

    /// Names referenced as `$name`, `${name...}` or `$(name...)` in main.cf
    /// values, master.cf `-o` values and built-in defaults: Postfix treats
    /// such names as user-defined parameters that are in use.
    fn referenced_names(&self, main: &MainCf) -> HashSet<String> {
        let mut names = HashSet::new();
        for e in &main.entries {
            collect_references(&e.value, &mut names);
        }
        for svc in &self.master.services {
            for (_, value, _) in &svc.overrides {
                collect_references(value, &mut names);
            }
        }
        for p in registry::PARAMS {
            collect_references(p.default, &mut names);
        }
        names
    }
}

fn unknown(file: &str, line: usize, name: &str, value: &str) -> Warning {
    Warning { file: file.to_string(), line, message: format!("unknown parameter: {name}={value}") }
}

/// Adds every parameter name referenced in `text` to `out`.
fn collect_references(text: &str, out: &mut HashSet<String>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        i += 1;
        match b.get(i) {
            Some(b'$') => {
                i += 1;
                continue;
            }
            Some(b'{' | b'(') => i += 1,
            _ => {}
        }
        let len = b[i..].iter().take_while(|&&c| is_name_byte(c)).count();
        if len > 0 {
            out.insert(text[i..i + len].to_string());
        }
        i += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_dir(main: &str, master: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("main.cf"), main).unwrap();
        fs::write(dir.path().join("master.cf"), master).unwrap();
        dir
    }

    const MASTER: &str = "smtp inet n - y - - smtpd\n";

    #[test]
    fn references() {
        let mut names = HashSet::new();
        collect_references("$a ${b} $(c) ${d?$e} $$f $ g ${h:{x}} $", &mut names);
        let mut v: Vec<_> = names.into_iter().collect();
        v.sort();
        assert_eq!(v, vec!["a", "b", "c", "d", "e", "h"]);
    }

    #[test]
    fn load_sets_config_directory_and_reads_values() {
        let dir = write_dir("myhostname = mx.example.com\nmyorigin = $mydomain\n", MASTER);
        let cfg = Config::load(dir.path()).unwrap();
        assert_eq!(cfg.params.get("config_directory").unwrap(), dir.path().display().to_string());
        assert!(cfg.params.is_explicit("config_directory"));
        assert_eq!(cfg.params.get("myorigin").unwrap(), "example.com");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(cfg.master.services.len(), 1);
    }

    #[test]
    fn missing_files_are_io_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = Config::load(dir.path()).unwrap_err();
        let path = dir.path().join("main.cf");
        assert_eq!(e.to_string(), format!("{}: No such file or directory (os error 2)", path.display()));
        fs::write(&path, "").unwrap();
        let e = Config::load(dir.path()).unwrap_err();
        assert!(e.to_string().starts_with(&dir.path().join("master.cf").display().to_string()));
    }

    #[test]
    fn unterminated_expansion_is_reported_with_file_line_and_name() {
        let dir = write_dir("# x\nmyhostname = mx.example.com\nsmtpd_banner = ${myhostname ESMTP\n", MASTER);
        let e = Config::load(dir.path()).unwrap_err().to_string();
        let main = dir.path().join("main.cf");
        assert_eq!(e, format!("{}:3: parameter smtpd_banner: unterminated '${{' (missing '}}')", main.display()));
        // Also for unknown (user-defined) parameters.
        let dir = write_dir("my_own = $(oops\n", MASTER);
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("main.cf:1: parameter my_own: unterminated"), "{e}");
    }

    #[test]
    fn type_errors() {
        let dir = write_dir("\nsmtpd_helo_required = perhaps\n", MASTER);
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.ends_with("main.cf:2: parameter smtpd_helo_required: bad boolean value 'perhaps': expected yes or no"),
            "{e}"
        );
        // Checked after expansion.
        let dir = write_dir("base = 5\nmaximal_queue_lifetime = ${base}x\n", MASTER);
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("main.cf:2: parameter maximal_queue_lifetime: bad time value '5x'"), "{e}");
        let dir = write_dir("base = 5\nmaximal_queue_lifetime = ${base}h\n", MASTER);
        let cfg = Config::load(dir.path()).unwrap();
        assert_eq!(cfg.params.get_time("maximal_queue_lifetime").unwrap().as_secs(), 5 * 3600);
    }

    #[test]
    fn bad_time_in_override_names_master_cf_line() {
        let dir = write_dir(
            "",
            "smtp inet n - y - - smtpd\nsubmission inet n - - - - smtpd\n  -o syslog_name=postfix/submission\n  -o smtpd_timeout=abc\n",
        );
        let e = Config::load(dir.path()).unwrap_err().to_string();
        let master = dir.path().join("master.cf");
        assert_eq!(
            e,
            format!(
                "{}:4: parameter smtpd_timeout: bad time value 'abc': expected a number with optional unit s/m/h/d/w",
                master.display()
            )
        );
    }

    #[test]
    fn warnings_for_unknown_parameters() {
        let dir = write_dir(
            "myhostname = mx.example.com\nmyhostnmae = typo\nmua_client_restrictions = permit_sasl_authenticated, reject\n",
            "smtp inet n - y - - smtpd\nsubmission inet n - - - - smtpd\n  -o smtpd_client_restrictions=$mua_client_restrictions\n  -o my_unknown_option=1\n",
        );
        let cfg = Config::load(dir.path()).unwrap();
        let got: Vec<String> = cfg.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            got,
            vec![
                format!("{}:2: unknown parameter: myhostnmae=typo", dir.path().join("main.cf").display()),
                format!("{}:4: unknown parameter: my_unknown_option=1", dir.path().join("master.cf").display()),
            ]
        );
        let sub = cfg.master.find("submission", ServiceType::Inet).unwrap();
        let p = cfg.service_params(sub);
        assert_eq!(p.get_list("smtpd_client_restrictions").unwrap(), vec!["permit_sasl_authenticated", "reject"]);
        assert_eq!(p.get("service_name").unwrap(), "submission");
    }

    #[test]
    fn service_params_are_lazy_over_main() {
        let dir = write_dir(
            "myhostname = mx.example.com\n",
            "smtp inet n - y - - smtpd\nrelay unix - - y - - smtp\n  -o myhostname=relay.example.net\n  -o syslog_name=postfix/$service_name\n",
        );
        let cfg = Config::load(dir.path()).unwrap();
        let relay = cfg.master.find("relay", ServiceType::Unix).unwrap();
        let p = cfg.service_params(relay);
        assert_eq!(p.get("myorigin").unwrap(), "relay.example.net");
        assert_eq!(p.get("syslog_name").unwrap(), "postfix/relay");
        assert_eq!(cfg.params.get("myorigin").unwrap(), "mx.example.com");
    }
}

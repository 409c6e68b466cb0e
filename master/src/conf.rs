//! `rmaster conf`: postconf(1) for rpost.
//!
//! * `rmaster conf` prints every parameter the registry knows, with its main.cf value or
//!   default, unexpanded; `-n` only those set in main.cf; `-d` the defaults; `-x` expands
//!   `$name`; `-h` prints values only; names restrict the output.
//! * `-e name=value ...` edits main.cf in place (comments and order kept), `-X name ...`
//!   removes, `-# name ...` comments out.
//! * `-M [service[/type] ...]` prints master.cf entries.

use std::fmt::Write as _;
use std::path::Path;

use rpost_config::{Config, Params, registry};

/// What `rmaster conf` was asked.
#[derive(Debug, Default, Clone)]
pub struct ConfArgs {
    pub non_default: bool,
    pub defaults: bool,
    pub expand: bool,
    pub hide_name: bool,
    pub master: bool,
    pub edit: bool,
    pub remove: bool,
    pub comment: bool,
    pub names: Vec<String>,
}

/// Runs `rmaster conf`; returns the text for stdout, or an error message.
pub fn run(dir: &Path, args: &ConfArgs) -> Result<String, crate::commands::CommandError> {
    let main_cf = dir.join("main.cf");
    if args.edit {
        let mut edits = Vec::new();
        for arg in &args.names {
            let (name, value) = arg
                .split_once('=')
                .ok_or_else(|| crate::commands::CommandError::Other(format!("-e {arg}: expected name=value")))?;
            edits.push((name.trim().to_string(), value.trim().to_string()));
        }
        rpost_config::edit::set_params(&main_cf, &edits)?;
        // Say now, not at the next start, when an edit made the configuration invalid.
        crate::commands::load(dir)?;
        return Ok(String::new());
    }
    if args.remove {
        rpost_config::edit::remove_params(&main_cf, &args.names)?;
        return Ok(String::new());
    }
    if args.comment {
        rpost_config::edit::comment_params(&main_cf, &args.names)?;
        return Ok(String::new());
    }
    let config = crate::commands::load(dir)?;
    if args.master {
        return Ok(format_master(&config, &args.names));
    }
    let params = if args.defaults { Params::empty() } else { config.params.clone() };
    let names: Vec<String> = if !args.names.is_empty() {
        args.names.clone()
    } else if args.non_default {
        // As postconf -n: what main.cf says, not what -c DIR implied.
        let implied =
            |n: &String| config.params.origin(n).is_some_and(|(file, _)| file == rpost_config::COMMAND_LINE_FILE);
        config.params.explicit_names().into_iter().filter(|n| !implied(n)).collect()
    } else {
        let mut all: Vec<String> = registry::PARAMS.iter().map(|p| p.name.to_string()).collect();
        if !args.defaults {
            all.extend(config.params.explicit_names().into_iter().filter(|n| registry::lookup(n).is_none()));
            all.sort();
        }
        all
    };
    let mut out = String::new();
    for name in names {
        let value = if args.expand { params.get(&name).ok() } else { params.raw(&name) };
        let Some(value) = value.filter(|_| params.raw(&name).is_some()) else {
            tracing::warn!("{name}: unknown parameter");
            continue;
        };
        if args.hide_name {
            let _ = writeln!(out, "{value}");
        } else if value.is_empty() {
            let _ = writeln!(out, "{name} =");
        } else {
            let _ = writeln!(out, "{name} = {value}");
        }
    }
    Ok(out)
}

fn yn(b: bool) -> &'static str {
    if b { "y" } else { "n" }
}

/// master.cf entries, one logical line each, as postconf -M prints them.
fn format_master(config: &Config, filter: &[String]) -> String {
    let mut out = String::new();
    for svc in &config.master.services {
        let id = format!("{}/{}", svc.name, svc.kind);
        if !filter.is_empty() && !filter.iter().any(|f| *f == svc.name || *f == id) {
            continue;
        }
        let wakeup = match svc.wakeup {
            None => "-".to_string(),
            Some(w) => format!("{}{}", w.seconds, if w.conditional { "?" } else { "" }),
        };
        let maxproc = svc.maxproc.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
        let _ = write!(
            out,
            "{:<10} {:<5} {:<7} {:<7} {:<7} {:<7} {:<7} {}",
            svc.name,
            svc.kind.to_string(),
            yn(svc.private),
            yn(svc.unpriv),
            yn(svc.chroot),
            wakeup,
            maxproc,
            svc.command
        );
        for (name, value, _) in &svc.overrides {
            if value.contains(char::is_whitespace) {
                let _ = write!(out, " -o {{ {name} = {value} }}");
            } else {
                let _ = write!(out, " -o {name}={value}");
            }
        }
        for a in &svc.args {
            let _ = write!(out, " {a}");
        }
        out.push('\n');
    }
    out
}

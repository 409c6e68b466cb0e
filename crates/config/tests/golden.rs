//! Golden tests: parse realistic main.cf/master.cf files and compare a
//! readable dump with tests/data/*.expected. Run with UPDATE_GOLDEN=1 to
//! rewrite the expected files after an intended change, then review the
//! diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rpost_config::maincf::MainCf;
use rpost_config::registry::{self, ParamType};
use rpost_config::{Config, MasterCf, Params, Service};

/// Relative, so paths in messages are the same on every machine (cargo
/// runs integration tests in the package directory).
fn data() -> PathBuf {
    PathBuf::from("tests/data")
}

fn check_golden(name: &str, actual: &str) {
    let path = data().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create)", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the actual output at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             (run with UPDATE_GOLDEN=1 to accept the new output)",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

/// The value of `name` as its registry type would give it to a daemon.
fn typed(p: &Params, name: &str) -> String {
    let ty = registry::lookup(name).map_or(ParamType::Str, |r| r.ty);
    let r = match ty {
        ParamType::Str => p.get(name).map(|v| format!("{v:?}")),
        ParamType::Bool => p.get_bool(name).map(|v| v.to_string()),
        ParamType::Int => p.get_int(name).map(|v| v.to_string()),
        ParamType::Time(_) => p.get_time(name).map(|v| format!("{}s", v.as_secs())),
        ParamType::Size => p.get_size(name).map(|v| format!("{v} bytes")),
        ParamType::List => p.get_list(name).map(|v| format!("{v:?}")),
    };
    r.unwrap_or_else(|e| format!("ERROR {e}"))
}

fn dump_service(out: &mut String, s: &Service) {
    let yn = |b: bool| if b { "y" } else { "n" };
    let wakeup = match s.wakeup {
        None => "-".to_string(),
        Some(w) => format!("{}{}", w.seconds, if w.conditional { "?" } else { "" }),
    };
    let maxproc = s.maxproc.map_or("-".to_string(), |m| m.to_string());
    writeln!(
        out,
        "line {:>3}: {}/{} private={} unpriv={} chroot={} wakeup={} maxproc={} command={}",
        s.line,
        s.name,
        s.kind,
        yn(s.private),
        yn(s.unpriv),
        yn(s.chroot),
        wakeup,
        maxproc,
        s.command
    )
    .unwrap();
    for a in &s.args {
        writeln!(out, "    arg {a:?}").unwrap();
    }
    for (n, v, l) in &s.overrides {
        writeln!(out, "    -o (line {l}) {n} = {v:?}").unwrap();
    }
}

#[test]
fn golden_main_cf() {
    let main = MainCf::load(&data().join("main.cf")).unwrap();
    let mut out = String::new();
    writeln!(out, "# entries (line: name = raw value)").unwrap();
    for e in &main.entries {
        writeln!(out, "{:>3}: {} = {}", e.line, e.name, e.value).unwrap();
    }
    let mut params = Params::from_main(&main);
    params.set_system_hostname("ignored.invalid");
    writeln!(out, "\n# explicit parameters, typed").unwrap();
    for name in params.explicit_names() {
        writeln!(out, "{name} => {}", typed(&params, &name)).unwrap();
    }
    writeln!(out, "\n# some defaults, typed").unwrap();
    for name in [
        "myorigin",
        "local_transport",
        "smtp_helo_name",
        "smtpd_timeout",
        "smtpd_tls_key_file",
        "maximal_backoff_time",
        "bounce_queue_lifetime",
        "virtual_alias_domains",
        "smtpd_forbidden_commands",
        "syslog_name",
        "hostname",
        "login_greeting",
        "smtpd_sasl_tls_security_options",
        "queue_directory",
        "mail_owner",
    ] {
        writeln!(out, "{name} => {}", typed(&params, name)).unwrap();
    }
    check_golden("main.cf.expected", &out);
}

#[test]
fn golden_master_cf() {
    let master = MasterCf::load(&data().join("master.cf")).unwrap();
    let mut out = String::new();
    for s in &master.services {
        dump_service(&mut out, s);
    }
    check_golden("master.cf.expected", &out);
}

#[test]
fn golden_config_load() {
    let mut cfg = Config::load(&data()).unwrap();
    // The dump must not depend on the machine it runs on.
    cfg.params.set_system_hostname("ignored.invalid");
    let mut out = String::new();
    writeln!(out, "# warnings").unwrap();
    for w in &cfg.warnings {
        writeln!(out, "{w}").unwrap();
    }
    writeln!(out, "\nconfig_directory => {}", typed(&cfg.params, "config_directory")).unwrap();
    for (name, kind) in [
        ("submission", rpost_config::ServiceType::Inet),
        ("submissions", rpost_config::ServiceType::Inet),
        ("relay", rpost_config::ServiceType::Unix),
    ] {
        let svc = cfg.master.find(name, kind).unwrap();
        let p = cfg.service_params(svc);
        writeln!(out, "\n# service {name}/{kind}: overridden parameters, typed").unwrap();
        for (n, _, _) in &svc.overrides {
            writeln!(out, "{n} => {}", typed(&p, n)).unwrap();
        }
        writeln!(out, "syslog_name => {}", typed(&p, "syslog_name")).unwrap();
        writeln!(out, "smtpd_banner => {}", typed(&p, "smtpd_banner")).unwrap();
    }
    check_golden("config.expected", &out);
}

#[test]
fn data_dir_is_relative() {
    assert!(Path::new("tests/data/main.cf").exists(), "integration tests run in the package dir");
}

//! The configuration as users meet it through rmaster: one clear line with file:line for
//! every error, postconf-style `conf`, and `check` repairing the spool.

use std::os::unix::fs::PermissionsExt;

use rpost_testkit::Suite;

fn prepared() -> Suite {
    Suite::builder().inet("smtp", "n - n - - smtpd").prepare()
}

fn fails_with(suite: &Suite, args: &[&str], needles: &[&str]) {
    let out = suite.rmaster(args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    let fatal: Vec<&str> = err.lines().filter(|l| l.contains("fatal:")).collect();
    assert_eq!(fatal.len(), 1, "one clear line expected:\n{err}");
    for n in needles {
        assert!(fatal[0].contains(n), "{n:?} missing in {:?}", fatal[0]);
    }
}

#[test]
fn master_cf_errors_name_file_and_line() {
    let suite = prepared();
    let good = suite.read_config("master.cf");

    suite.write_config("master.cf", &format!("{good}# a comment\nbogus    tcp  n - n - - smtpd\n"));
    fails_with(&suite, &["check"], &["master.cf:3:", "tcp"]);
    fails_with(&suite, &["start", "--foreground"], &["master.cf:3:", "tcp"]);

    suite.write_config("master.cf", &format!("{good}qmgr unix n - n 300 lots qmgr\n"));
    fails_with(&suite, &["check"], &["master.cf:2:", "maxproc", "lots"]);

    suite.write_config("master.cf", &format!("{good}qmgr unix n - n\n"));
    fails_with(&suite, &["check"], &["master.cf:2:"]);
}

#[test]
fn main_cf_errors_name_file_line_and_parameter() {
    let suite = prepared();
    let good = suite.read_config("main.cf");
    let lines = good.lines().count();

    suite.write_config("main.cf", &format!("{good}smtpd_banner = ${{myhostname ESMTP\n"));
    fails_with(&suite, &["check"], &[&format!("main.cf:{}:", lines + 1), "smtpd_banner"]);

    suite.write_config("main.cf", &format!("{good}max_idle = soon\n"));
    fails_with(&suite, &["start", "--foreground"], &[&format!("main.cf:{}:", lines + 1), "max_idle"]);

    // An -o override is checked too, and blamed on master.cf.
    suite.write_config("main.cf", &good);
    let master = suite.read_config("master.cf");
    suite.write_config("master.cf", &format!("{}\n  -o max_use=many\n", master.trim_end()));
    fails_with(&suite, &["check"], &["master.cf:2:", "max_use"]);

    std::fs::remove_file(suite.config_dir().join("main.cf")).unwrap();
    fails_with(&suite, &["check"], &["main.cf", "No such file"]);
}

#[test]
fn unknown_parameters_are_warnings_not_errors() {
    let suite = prepared();
    let good = suite.read_config("main.cf");
    suite.write_config("main.cf", &format!("{good}smtpd_bannr = typo\n"));
    let out = suite.rmaster(&["check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning:") && err.contains("smtpd_bannr"), "{err}");
}

#[test]
fn check_creates_and_repairs_the_spool() {
    let suite = prepared();
    let out = suite.rmaster(&["check"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let q = suite.queue_dir();
    for d in ["incoming", "active", "deferred", "hold", "corrupt", "recycle", "private", "public", "pid"] {
        assert!(q.join(d).is_dir(), "{d}");
    }
    std::fs::remove_dir(q.join("deferred")).unwrap();
    std::fs::set_permissions(q.join("incoming"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = suite.rmaster(&["check"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("repaired: created") && text.contains("deferred"), "{text}");
    assert!(text.contains("repaired: set mode 0700") && text.contains("incoming"), "{text}");
    assert!(q.join("deferred").is_dir());
    assert_eq!(std::fs::metadata(q.join("incoming")).unwrap().permissions().mode() & 0o777, 0o700);
    // Nothing left to repair.
    assert!(suite.rmaster(&["check"]).stdout.is_empty());
}

#[test]
fn conf_prints_like_postconf() {
    let suite = prepared();
    let good = suite.read_config("main.cf");
    suite.write_config("main.cf", &format!("{good}myorigin = $mydomain\n"));

    let n = String::from_utf8(suite.rmaster(&["conf", "-n"]).stdout).unwrap();
    let names: Vec<&str> = n.lines().map(|l| l.split(" = ").next().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    assert!(n.contains("myorigin = $mydomain\n"), "raw, unexpanded: {n}");
    assert!(!n.contains("smtpd_banner"), "-n shows only explicit settings");

    let d = String::from_utf8(suite.rmaster(&["conf", "-d", "myorigin", "smtpd_banner"]).stdout).unwrap();
    assert_eq!(d, "myorigin = $myhostname\nsmtpd_banner = $myhostname ESMTP $mail_name\n");

    let x = String::from_utf8(suite.rmaster(&["conf", "-x", "-h", "myorigin"]).stdout).unwrap();
    assert_eq!(x, "example.test\n");

    let all = String::from_utf8(suite.rmaster(&["conf"]).stdout).unwrap();
    assert!(all.lines().count() > 200, "every registry parameter");
    assert!(all.contains("myorigin = $mydomain\n"));

    let out = suite.rmaster(&["conf", "no_such_parameter"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_parameter: unknown parameter"));

    let m = String::from_utf8(suite.rmaster(&["conf", "-M"]).stdout).unwrap();
    assert!(m.contains(" inet ") && m.contains("smtpd"), "{m}");
}

#[test]
fn conf_edit_keeps_comments_and_order() {
    let suite = prepared();
    let original = "# my mail server\nmyhostname = mail.example.test\n\n# relay\nrelayhost =\n  [old.example]:587\nmynetworks = 127.0.0.0/8\n";
    let base = suite.read_config("main.cf");
    let kept: String = base
        .lines()
        .filter(|l| {
            l.starts_with("queue_directory")
                || l.starts_with("daemon_directory")
                || l.starts_with("maillog_file")
                || l.starts_with("mail_owner")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    suite.write_config("main.cf", &format!("{original}{kept}"));

    let out = suite.rmaster(&["conf", "-e", "relayhost=[smtp.example.net]:587", "smtpd_banner=$myhostname ESMTP"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let edited = suite.read_config("main.cf");
    assert!(
        edited.starts_with("# my mail server\nmyhostname = mail.example.test\n\n# relay\nrelayhost = [smtp.example.net]:587\nmynetworks = 127.0.0.0/8\n"),
        "{edited}"
    );
    assert!(edited.ends_with("smtpd_banner = $myhostname ESMTP\n"), "new names are appended: {edited}");

    let out = suite.rmaster(&["conf", "-X", "mynetworks"]);
    assert!(out.status.success());
    assert!(!suite.read_config("main.cf").contains("mynetworks"));

    let out = suite.rmaster(&["conf", "-#", "relayhost"]);
    assert!(out.status.success());
    assert!(suite.read_config("main.cf").contains("#relayhost = [smtp.example.net]:587"));

    // An edit that breaks the configuration is reported at once.
    let out = suite.rmaster(&["conf", "-e", "max_use=lots"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_use"));
}

#[test]
fn check_says_when_mail_owner_cannot_reach_the_spool() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("needs root: mail_owner differs from the caller only then");
        return;
    }
    let suite = Suite::builder().inet("smtp", "n - n - - smtpd").prepare();
    let hidden = suite.root().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700)).unwrap();
    let main = suite.read_config("main.cf");
    suite.write_config("main.cf", &format!("{main}queue_directory = {}/spool\n", hidden.display()));
    let out = suite.rmaster(&["check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach queue_directory") && err.contains("hidden has mode 0700"), "{err}");
    let out = suite.rmaster(&["start", "--foreground"]);
    assert!(!out.status.success(), "the master refuses to start daemons that cannot work");
}

#[test]
fn check_warns_about_transports_master_cf_lacks() {
    let suite =
        Suite::builder().inet("smtp", "n - n - - smtpd").master_line("lmtp unix - - n - - smtp-client").prepare();
    let out = suite.rmaster(&["check"]);
    assert!(out.status.success(), "a warning, not an error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("local_transport = local:mail.example.test: master.cf has no \"local unix\" service"),
        "{err}"
    );
    assert!(err.contains("default_transport = smtp: master.cf has no \"smtp unix\" service"), "{err}");
    assert!(!err.contains("virtual_transport"), "lmtp is there: {err}");
}

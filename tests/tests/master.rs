//! rmaster end to end: start, status, on-demand children, privilege drop, reload without
//! refused connections, crash restart, throttling, max_use, stop with nothing left behind.

use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rpost_testkit::{Suite, process_owner};

const T: Duration = Duration::from_secs(20);

fn basic() -> Suite {
    Suite::builder()
        .inet("smtp", "n - n - - smtpd")
        .inet("imap", "n - n - - imapd")
        .master_line("qmgr      unix  n       -       n       300     1       qmgr")
        .master_line("auth      unix  -       -       n       -       -       authd")
        .start()
}

#[test]
fn starts_services_on_demand_and_reports_them() {
    let suite = basic();
    let st = suite.status();
    assert_eq!(st.pid, suite.master_pid());
    let names: Vec<&str> = st.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{st:#?}");
    let smtp = &st.services[0];
    assert_eq!(smtp.kind, "inet");
    assert_eq!(smtp.listen, vec![format!("127.0.0.1:{}", suite.port("smtp"))]);
    assert_eq!(smtp.maxproc, 100, "'-' means default_process_limit");
    // The unix sockets exist where Postfix puts them: private column '-' means private/.
    assert!(suite.queue_dir().join("private/auth").exists());
    assert!(suite.queue_dir().join("public/qmgr").exists());

    // qmgr has a wakeup timer: the first trigger starts it and is served without any client.
    suite.wait_status(T, |st| st.services[2].children.iter().any(|c| c.uses >= 1));

    // A client on smtp starts an smtpd, which speaks for itself and closes.
    let greeting = suite.greeting("smtp");
    assert!(greeting.starts_with("220 mail.example.test ESMTP rpost"), "{greeting}");
    let st = suite.wait_status(T, |st| st.services[0].children.iter().any(|c| c.uses >= 1));
    let smtpd = &st.services[0].children[0];

    // `rmaster status` prints the same picture for people.
    let out = suite.rmaster(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("rpost is running: master pid {}", suite.master_pid())), "{text}");
    assert!(text.contains(&format!("pid {} ", smtpd.pid)), "{text}");

    // ps: the child's parent is rmaster and it runs as mail_owner.
    let (ppid, uid) = process_owner(smtpd.pid).expect("smtpd in /proc");
    assert_eq!(ppid, suite.master_pid());
    if nix::unistd::getuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(uid, nobody.uid.as_raw(), "children drop to mail_owner");
        assert!(suite.log().contains("rpost/master"), "master logs under syslog_name");
    } else {
        assert!(suite.log().contains("privileges not dropped"), "{}", suite.log());
    }
}

#[test]
fn stop_leaves_no_process_behind() {
    let mut suite = basic();
    let _ = suite.greeting("smtp");
    let _ = suite.greeting("imap");
    suite.wait_status(T, |st| st.services.iter().filter(|s| !s.children.is_empty()).count() >= 3);
    let pgid = suite.master_pid();
    assert!(rpost_testkit::processes_in_group(pgid).len() >= 4);
    let status = suite.stop();
    assert!(status.success(), "{status}");
    assert!(rpost_testkit::processes_in_group(pgid).is_empty(), "{:?}", rpost_testkit::processes_in_group(pgid));
    assert!(!suite.queue_dir().join("pid/master.pid").exists());
    // Listeners are closed with the master.
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, suite.port("smtp"))).is_err());
    let out = suite.rmaster(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
}

#[test]
fn killed_child_is_restarted_and_listener_keeps_accepting() {
    let suite = basic();
    let _ = suite.greeting("smtp");
    let st = suite.wait_status(T, |st| !st.services[0].children.is_empty());
    let victim = st.services[0].children[0].pid;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    suite.wait_log(&format!("pid {victim} killed by signal 9"), T);
    // Served at least one client before dying: no throttle, and the next client is served
    // by a fresh process.
    let greeting = suite.greeting("smtp");
    assert!(greeting.starts_with("220 "), "{greeting:?}\n{}", suite.log());
    let st = suite.wait_status(T, |st| st.services[0].children.iter().any(|c| c.pid != victim));
    assert_eq!(st.services[0].throttled_for, None);
}

#[test]
fn reload_adds_and_removes_services_without_refusing_connections() {
    let mut suite = basic();
    let smtp_port = suite.port("smtp");
    let pop_port = suite.add_port("pop3");
    let before = suite.status();

    // Hammer the unchanged service throughout the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let hammer = {
        let (stop, ok, refused) = (stop.clone(), ok.clone(), refused.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match TcpStream::connect((Ipv4Addr::LOCALHOST, smtp_port)) {
                    Ok(mut s) => {
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let mut buf = [0u8; 4];
                        if s.read_exact(&mut buf).is_ok() && &buf == b"220 " {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let master = suite.read_config("master.cf");
    let edited: String = master
        .lines()
        .filter(|l| !l.contains(" imapd"))
        .map(|l| format!("{l}\n"))
        .chain([format!("127.0.0.1:{pop_port} inet n - n - - imapd\n")])
        .collect();
    suite.write_config("master.cf", &edited);
    for _ in 0..3 {
        let out = suite.rmaster(&["reload"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();

    assert_eq!(refused.load(Ordering::Relaxed), 0, "a client of an unchanged service was refused");
    assert!(ok.load(Ordering::Relaxed) > 0);
    let st = suite.status();
    assert_eq!(st.generation, before.generation + 3);
    assert!(st.services.iter().any(|s| s.listen == vec![format!("127.0.0.1:{pop_port}")]), "{st:#?}");
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, suite.port("imap"))).is_err(), "removed service still listens");
    let greeting = {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, pop_port)).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        buf
    };
    assert_eq!(&greeting, b"* OK ", "the new service runs imapd");
    suite.wait_log("reload -- version", T);
}

#[test]
fn broken_config_on_reload_keeps_the_running_one() {
    let suite = basic();
    let before = suite.status().generation;
    let good = suite.read_config("main.cf");
    suite.write_config("main.cf", &format!("{good}smtpd_banner = ${{myhostname\n"));
    let out = suite.rmaster(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("main.cf:") && err.contains("smtpd_banner"), "{err}");
    // The master was not even signalled, and still serves.
    assert_eq!(suite.status().generation, before);
    assert!(suite.greeting("smtp").starts_with("220 "));
}

#[test]
fn a_daemon_failing_at_startup_throttles_its_service() {
    let suite = Suite::builder()
        .main("service_throttle_time", "2s")
        // The master cannot see this coming: only the child opens its log file.
        .inet("smtp", "n - n - - smtpd -o maillog_file=/nonexistent-rpost/maillog")
        .inet("imap", "n - n - - imapd")
        .start();
    let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, suite.port("smtp"))).unwrap();
    let log = suite.wait_log("bad command startup -- throttling", T);
    assert!(log.contains("exit status 1"), "{log}");
    assert!(suite.stderr().contains("/nonexistent-rpost/maillog"), "the child says why: {}", suite.stderr());
    let st = suite.status();
    assert!(st.services[0].throttled_for.is_some() || suite.log().contains("throttle ended"), "{st:#?}");
    // Other services are not affected.
    let greeting = suite.greeting("imap");
    assert!(greeting.starts_with("* OK "), "{greeting}");
    suite.wait_log("throttle ended", T);
}

#[test]
fn missing_daemon_binary_is_reported_and_throttled() {
    let suite = Suite::builder().inet("smtp", "n - n - - no-such-daemon").inet("imap", "n - n - - imapd").start();
    let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, suite.port("smtp"))).unwrap();
    suite.wait_log("no-such-daemon", T);
    let greeting = suite.greeting("imap");
    assert!(greeting.starts_with("* OK "), "{greeting}");
    let out = suite.rmaster(&["check"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-daemon is not an executable file"));
}

#[test]
fn children_are_recycled_after_max_use() {
    let suite = Suite::builder().main("max_use", "2").inet("smtp", "n - n - - smtpd").start();
    for _ in 0..5 {
        assert!(suite.greeting("smtp").starts_with("220 "));
    }
    // Each client is logged by the process that served it (status snapshots can miss a
    // short-lived process on a loaded machine; the log cannot).
    let deadline = std::time::Instant::now() + T;
    let pids = loop {
        let log = suite.log();
        let pids: std::collections::BTreeSet<&str> = log
            .lines()
            .filter(|l| l.contains(": connect from "))
            .filter_map(|l| l.split("smtpd[").nth(1)?.split(']').next())
            .collect();
        if log.matches(": connect from ").count() >= 5 || std::time::Instant::now() > deadline {
            break pids.into_iter().map(str::to_string).collect::<Vec<_>>();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(pids.len() >= 3, "5 clients with max_use=2 need at least 3 processes, saw {pids:?}");
}

#[test]
fn a_child_near_max_use_is_retiring_and_its_successor_starts_while_it_still_serves() {
    // max_use 8: from the 6th client on (a quarter before the end) the child reports
    // "retiring", which rmaster does not count as available.
    let suite = Suite::builder().main("max_use", "8").inet("smtp", "n - n - - smtpd").start();
    let mut held = Vec::new();
    for _ in 0..6 {
        let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, suite.port("smtp"))).unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"220 ");
        held.push(c);
    }
    let st = suite.wait_status(T, |st| st.services[0].children.iter().any(|c| c.state == "retiring"));
    let old = st.services[0].children.iter().find(|c| c.state == "retiring").unwrap().pid;
    // Its successor starts while it still serves (and takes clients).
    let st = suite.wait_status(T, |st| st.services[0].children.iter().any(|c| c.pid != old));
    assert!(st.services[0].children.iter().any(|c| c.pid == old), "the old process still serves: {st:#?}");
    assert!(rpost_testkit::pid_running(old));
    drop(held);
}

#[test]
fn background_start_and_stop_through_the_pid_file() {
    let suite = Suite::builder().inet("smtp", "n - n - - smtpd").prepare();
    let out = suite.rmaster(&["start"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid: i32 = std::fs::read_to_string(suite.queue_dir().join("pid/master.pid")).unwrap().trim().parse().unwrap();
    let again = suite.rmaster(&["start"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));
    assert!(suite.greeting("smtp").starts_with("220 "));
    let out = suite.rmaster(&["stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!rpost_testkit::pid_running(pid as u32), "master still alive");
    assert!(rpost_testkit::processes_in_group(pid as u32).is_empty());
}

#[test]
fn reload_lets_old_children_finish_their_clients() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let suite = Suite::builder().master_line("qmgr unix n - n - 1 qmgr -v").start();
    // A client of the trigger server that has not finished its request yet.
    let mut client = UnixStream::connect(suite.queue_dir().join("public/qmgr")).unwrap();
    let st = suite.wait_status(T, |st| st.services[0].children.iter().any(|c| c.uses == 1));
    let old = st.services[0].children[0].pid;

    // SIGHUP, as systemd's ExecReload or an admin would send it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(suite.master_pid() as i32), nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    let st = suite.wait_status(T, |st| st.generation == 2);
    let child = st.services[0].children.iter().find(|c| c.pid == old).expect("old child still finishing");
    assert_eq!(child.state, "draining");

    // The old process still serves its client to the end, then goes away.
    client.write_all(b"W").unwrap();
    drop(client);
    suite.wait_log(&format!("qmgr[{old}]: trigger \"W\""), T);
    suite.wait_status(T, |st| st.services[0].children.iter().all(|c| c.pid != old));
    assert!(!suite.log().contains(&format!("pid {old} exit status")), "drained child must exit cleanly");
}

#[test]
fn stop_kills_children_that_do_not_finish_in_time() {
    use std::os::unix::net::UnixStream;
    let mut suite = Suite::builder().main("master_stop_timeout", "1s").master_line("qmgr unix n - n - 1 qmgr").start();
    // A client that never finishes its request keeps the trigger server busy.
    let _client = UnixStream::connect(suite.queue_dir().join("public/qmgr")).unwrap();
    let st = suite.wait_status(T, |st| st.services[0].children.iter().any(|c| c.uses == 1));
    let pid = st.services[0].children[0].pid;
    let pgid = suite.master_pid();
    let started = std::time::Instant::now();
    assert!(suite.stop().success());
    assert!(started.elapsed() < Duration::from_secs(8), "hard stop after master_stop_timeout");
    assert!(suite.log().contains(&format!("pid {pid} still running after 1s: killing it")), "{}", suite.log());
    assert!(rpost_testkit::processes_in_group(pgid).is_empty());
}

#[test]
fn children_go_away_when_the_master_dies() {
    let suite = basic();
    let _ = suite.greeting("smtp");
    let st = suite.wait_status(T, |st| st.services.iter().filter(|s| !s.children.is_empty()).count() >= 2);
    let pids: Vec<u32> = st.services.iter().flat_map(|s| s.children.iter().map(|c| c.pid)).collect();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(suite.master_pid() as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    // End-of-file on the status pipe: each child finishes and exits by itself.
    let alive = || -> Vec<u32> { pids.iter().copied().filter(|&p| rpost_testkit::pid_running(p)).collect() };
    let deadline = std::time::Instant::now() + T;
    while !alive().is_empty() {
        assert!(std::time::Instant::now() < deadline, "orphaned daemons still running: {:?}", alive());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn chrooted_service_runs_inside_the_queue_directory() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("chroot needs root: checked only when the tests run as root");
        return;
    }
    let suite = Suite::builder().inet("smtp", "n - y - - smtpd").start();
    assert!(suite.greeting("smtp").starts_with("220 "));
    let st = suite.wait_status(T, |st| !st.services[0].children.is_empty());
    let pid = st.services[0].children[0].pid;
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(root, suite.queue_dir().canonicalize().unwrap());
}

#[test]
fn tells_systemd_ready_reloading_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile_dir();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut suite =
        Suite::builder().env("NOTIFY_SOCKET", path.to_str().unwrap()).inet("smtp", "n - n - - smtpd").start();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("sd_notify message");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(recv(), "READY=1\n");
    assert!(suite.rmaster(&["reload"]).status.success());
    let reloading = recv();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading:?}");
    assert_eq!(recv(), "READY=1\n");
    // Daemons must not talk to systemd: their environment is clean.
    let _ = suite.greeting("smtp");
    let st = suite.wait_status(T, |st| !st.services[0].children.is_empty());
    let environ = std::fs::read(format!("/proc/{}/environ", st.services[0].children[0].pid)).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("RPOST_SERVICE=127.0.0.1:"), "{environ}");
    assert!(!environ.contains("NOTIFY_SOCKET"), "{environ}");
    assert!(suite.stop().success());
    assert_eq!(recv(), "STOPPING=1\n");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("rpost-notify-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn idle_children_exit_after_max_idle() {
    let suite = Suite::builder().main("max_idle", "1s").inet("smtp", "n - n - - smtpd").start();
    assert!(suite.greeting("smtp").starts_with("220 "));
    let st = suite.wait_status(T, |st| !st.services[0].children.is_empty());
    let pid = st.services[0].children[0].pid;
    suite.wait_status(T, |st| st.services[0].children.is_empty());
    assert!(!suite.log().contains(&format!("pid {pid} exit")), "an idle exit is not an error: {}", suite.log());
    // The next client starts a new process.
    assert!(suite.greeting("smtp").starts_with("220 "));
}

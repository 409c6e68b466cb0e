//! Seed 004 ("Build an Ubuntu Email Server"): virtual domains, users and aliases in MySQL,
//! used unchanged through `mysql:` tables by the whole suite (smtpd, qmgr, smtp-client as
//! lmtp, lmtp-deliver).
//!
//! The schema, the INSERTs (passwords from `ENCRYPT('firstpassword', CONCAT('$6$', ...))`)
//! and the three `mysql-virtual-*.cf` files are the tutorial's, with only the paths, the
//! database name and the credentials replaced (each test makes its own database and user on
//! the MariaDB that `.ci/run` starts, and drops them). Without MariaDB the test says why and
//! skips. A second test needs no server: a database that cannot be reached makes smtpd
//! answer 451 4.3.0, never 550.
//!
//! Dovecot's part of the seed is rpost's authd and lmtp-deliver: `auth_passdb` is a `mysql:`
//! table over the same `virtual_users` table (Dovecot's `password_query` reduced to the
//! password column, `default_pass_scheme = SHA512-CRYPT` as in the seed), the userdb is the
//! seed's static one; `rmaster auth test` (doveadm auth test) logs email1 in with
//! firstpassword.

use std::time::Duration;

use rpost_testkit::Suite;
use rpost_testkit::smtp::SmtpClient;
use rpost_testkit::sqldb::{Kind, TestDb};

const T: Duration = Duration::from_secs(30);

/// Step 1 of the seed, after `USE mailserver`.
const SCHEMA: &str = "
CREATE TABLE `virtual_domains` (
  `id` int(11) NOT NULL auto_increment,
  `name` varchar(50) NOT NULL,
  PRIMARY KEY (`id`)
);
CREATE TABLE `virtual_users` (
  `id` int(11) NOT NULL auto_increment,
  `domain_id` int(11) NOT NULL,
  `password` varchar(106) NOT NULL,
  `email` varchar(100) NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `email` (`email`),
  FOREIGN KEY (domain_id) REFERENCES virtual_domains(id) ON DELETE CASCADE
);
CREATE TABLE `virtual_aliases` (
  `id` int(11) NOT NULL auto_increment,
  `domain_id` int(11) NOT NULL,
  `source` varchar(100) NOT NULL,
  `destination` varchar(100) NOT NULL,
  PRIMARY KEY (`id`),
  FOREIGN KEY (domain_id) REFERENCES virtual_domains(id) ON DELETE CASCADE
);
";

/// Step 2 of the seed; `mailserver` is replaced by the test's database name.
const DATA: &str = "
INSERT INTO `mailserver`.`virtual_domains`
  (`id` ,`name`)
  VALUES
  ('1', 'mydomain.com'),
  ('2', 'subdomain.mydomain.com');
INSERT INTO `mailserver`.`virtual_users`
  (`id`, `domain_id`, `password` , `email`)
  VALUES
  ('1', '1', ENCRYPT('firstpassword', CONCAT('$6$', SUBSTRING(SHA(RAND()), -16))), 'email1@mydomain.com'),
  ('2', '1', ENCRYPT('secondpassword', CONCAT('$6$', SUBSTRING(SHA(RAND()), -16))), 'email2@mydomain.com');
INSERT INTO `mailserver`.`virtual_aliases`
  (`id`, `domain_id`, `source`, `destination`)
  VALUES
  ('1', '1', 'alias@domain1.com', 'email1@mydomain.com');
";

/// The seed's three table files: (file, query). The connection lines come from the database.
const MAPS: &[(&str, &str)] = &[
    ("mysql-virtual-mailbox-domains.cf", "SELECT 1 FROM virtual_domains WHERE name='%s'"),
    ("mysql-virtual-mailbox-maps.cf", "SELECT 1 FROM virtual_users WHERE email='%s'"),
    ("mysql-virtual-alias-maps.cf", "SELECT destination FROM virtual_aliases WHERE source='%s'"),
];

/// The seed's table file text: `user`, `password`, `hosts`, `dbname`, `query`, in its order.
fn seed_cf(user: &str, password: &str, hosts: &str, dbname: &str, query: &str) -> String {
    format!("user = {user}\npassword = {password}\nhosts = {hosts}\ndbname = {dbname}\nquery = {query}\n")
}

/// The seed's main.cf, as far as delivery goes, with rpost paths: MySQL maps for the virtual
/// domains, users and aliases; Dovecot's static userdb and mail_location.
fn seed_suite(write_maps: impl FnOnce(&Suite)) -> Suite {
    let (uid, gid) = rpost_testkit::mail_user();
    Suite::builder()
        .main("myhostname", "hostname.mydomain.com")
        .main("mydestination", "localhost")
        .main("mynetworks", "127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128")
        .main("recipient_delimiter", "+")
        .main("smtpd_recipient_restrictions", "permit_sasl_authenticated, permit_mynetworks, reject_unauth_destination")
        .main("virtual_mailbox_domains", "mysql:{root}/etc/mysql-virtual-mailbox-domains.cf")
        .main("virtual_mailbox_maps", "mysql:{root}/etc/mysql-virtual-mailbox-maps.cf")
        .main("virtual_alias_maps", "mysql:{root}/etc/mysql-virtual-alias-maps.cf")
        // Dovecot's side of the seed: passdb from the same users table, static userdb.
        .main("auth_passdb", "mysql:{root}/etc/mysql-passdb.cf")
        .main("auth_userdb", &format!("static:uid={uid} gid={gid} home={{root}}/vhosts/%d/%n"))
        .main("mail_location", "maildir:{root}/vhosts/%d/%n")
        .main("default_pass_scheme", "SHA512-CRYPT")
        .main("first_valid_uid", "1")
        .main("first_valid_gid", "1")
        .main("alias_maps", "")
        .main("local_recipient_maps", "")
        .inet("smtp", "n - n - - smtpd")
        .master_line("qmgr unix n - n 300 1 qmgr")
        .master_line("lmtp unix - - n - - smtp-client")
        .master_line("lmtp-deliver unix - n n - - lmtp-deliver")
        .master_line("auth unix - - n - 1 authd")
        .master_line("auth-userdb unix - - n - 1 authd userdb")
        .start_with(write_maps)
}

fn wait_for_mail(suite: &Suite, domain: &str, user: &str, n: usize) -> Vec<String> {
    suite.wait_for_messages(&suite.root().join("vhosts").join(domain).join(user).join("new"), n, T)
}

#[test]
fn seed_004_mysql_virtual_users_and_aliases() {
    let db = match TestDb::create(Kind::Mysql) {
        Ok(db) => db,
        Err(why) => {
            eprintln!("SKIPPED: seed 004 MySQL setup not tested: {why}");
            return;
        }
    };
    db.exec(SCHEMA);
    db.exec(&DATA.replace("`mailserver`", &format!("`{}`", db.name)));
    // ENCRYPT() with a $6$ salt gave SHA512-CRYPT hashes, 106 characters, as the seed explains.
    let hashes = db.exec("SELECT password FROM virtual_users ORDER BY id;\n");
    for h in hashes.lines() {
        assert!(h.starts_with("$6$") && h.len() == 106, "{h}");
    }

    let hosts = format!("127.0.0.1:{}", db.port);
    let suite = seed_suite(|s| {
        for (file, query) in MAPS {
            s.write_config(file, &seed_cf(&db.user, &db.password, &hosts, &db.name, query));
        }
        // Dovecot's password_query, as a Postfix-style table of the user's hash.
        s.write_config(
            "mysql-passdb.cf",
            &seed_cf(&db.user, &db.password, &hosts, &db.name, "SELECT password FROM virtual_users WHERE email='%s'"),
        );
    });

    // The seed's own checks (postmap -q): 1, 1 and the alias's destination.
    let q = |file: &str, key: &str| {
        let out = suite.rmaster(&["map", "query", &format!("mysql:{}", suite.config_dir().join(file).display()), key]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(q("mysql-virtual-mailbox-domains.cf", "mydomain.com"), "1");
    assert_eq!(q("mysql-virtual-mailbox-maps.cf", "email1@mydomain.com"), "1");
    assert_eq!(q("mysql-virtual-alias-maps.cf", "alias@domain1.com"), "email1@mydomain.com");
    let hash = q("mysql-passdb.cf", "email1@mydomain.com");
    assert_eq!(hash, hashes.lines().next().unwrap_or_default());

    // The seed's step 5 logs in as email1 with firstpassword: authd checks the ENCRYPT() hash.
    let out = suite.rmaster(&["auth", "test", "email1@mydomain.com", "firstpassword"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}\n{}", String::from_utf8_lossy(&out.stderr), suite.log());
    assert!(text.starts_with("passdb: email1@mydomain.com auth succeeded\n"), "{text}");
    let out = suite.rmaster(&["auth", "test", "email2@mydomain.com", "firstpassword"]);
    assert_eq!(out.status.code(), Some(77), "email2 has secondpassword: {}", String::from_utf8_lossy(&out.stdout));
    let out = suite.rmaster(&["auth", "test", "email2@mydomain.com", "secondpassword"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Mail to a user in the users table: accepted and delivered into its Maildir.
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    let id = c
        .send_mail("sender@client.example", &["email1@mydomain.com"], "Subject: to a MySQL user\r\n\r\nhello email1")
        .expect("queued");
    let mail = wait_for_mail(&suite, "mydomain.com", "email1", 1);
    assert!(mail[0].contains("Subject: to a MySQL user") && mail[0].contains(&id), "{}", mail[0]);
    assert!(mail[0].starts_with("Return-Path: <sender@client.example>"), "{}", mail[0]);

    // Users that are not in the table: 550, for the listed domain and its subdomain alike.
    for rcpt in ["nosuchuser@mydomain.com", "email1@subdomain.mydomain.com"] {
        c.cmd("RSET");
        let r = c.cmd("MAIL FROM:<sender@client.example>");
        assert!(r.starts_with("250"), "{r}");
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
        assert!(r.starts_with("550 5.1.1") && r.contains("User unknown in virtual mailbox table"), "{rcpt}: {r}");
    }
    // An injection attempt is an unknown user too, not "every user".
    let r = c.cmd("RCPT TO:<\"x' OR '1'='1\"@mydomain.com>");
    assert!(r.starts_with("550"), "{r}");
    c.cmd("RSET");

    // The seed's alias: through virtual_alias_maps in MySQL to email1.
    // The daemons' kept connections die, as in a server restart: lookups connect anew.
    eprintln!("killing {} kept MariaDB sessions", db.connections());
    db.kill_connections();
    let id2 = c
        .send_mail("sender@client.example", &["alias@domain1.com"], "Subject: via the alias table\r\n\r\nhello alias")
        .expect("queued");
    let mail = wait_for_mail(&suite, "mydomain.com", "email1", 2);
    let via = mail.iter().find(|m| m.contains("Subject: via the alias table")).expect("aliased mail");
    assert!(via.contains(&id2), "{via}");
    let log = suite.wait_log(&format!("{id2}: removed"), T);
    assert!(
        log.contains(&format!("{id2}: to=<email1@mydomain.com>, orig_to=<alias@domain1.com>")),
        "the alias shows in the log as orig_to: {log}"
    );
    c.cmd("QUIT");
}

#[test]
fn unreachable_database_defers_instead_of_rejecting() {
    // Nothing listens on this port: every lookup fails as with MySQL down.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let suite = seed_suite(|s| {
        for (file, query) in MAPS {
            s.write_config(
                file,
                &seed_cf("mail_username", "mail_password", &format!("127.0.0.1:{port}"), "mailserver", query),
            );
        }
        s.write_config(
            "mysql-passdb.cf",
            &seed_cf(
                "mail_username",
                "mail_password",
                &format!("127.0.0.1:{port}"),
                "mailserver",
                "SELECT password FROM virtual_users WHERE email='%s'",
            ),
        );
    });
    let mut c = SmtpClient::connect(suite.port("smtp"));
    c.cmd("EHLO client.example");
    let r = c.cmd("MAIL FROM:<sender@client.example>");
    assert!(r.starts_with("250"), "{r}");
    let r = c.cmd("RCPT TO:<email1@mydomain.com>");
    assert!(r.starts_with("451 4.3.0"), "a database that is down is a temporary failure: {r}");
    assert!(!r.contains("mail_password"), "{r}");
    c.cmd("QUIT");
    let log = suite.log();
    assert!(log.contains("no database server available"), "{log}");
    assert!(!log.contains("mail_password"), "the password must not be logged: {log}");
}

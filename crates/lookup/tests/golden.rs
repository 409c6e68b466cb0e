//! Table files as a Postfix + Dovecot admin writes them (tests/data/),
//! through the public API only.

use std::path::{Path, PathBuf};

use rpost_lookup::sql::{SqlConfig, SqlDriver, SqlHost};
use rpost_lookup::{
    AddressLookup, ExpandOptions, Expansion, Table, build_indexed, expand_virtual, lookup_address, lookup_client, open,
    open_list, split_passwd_value,
};

/// Copies tests/data into a fresh directory (builds write `.db` files
/// next to their sources).
fn data() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

fn spec(kind: &str, dir: &Path, file: &str) -> String {
    format!("{kind}:{}", dir.join(file).display())
}

fn check(table: &dyn Table, cases: &[(&str, Option<&str>)]) {
    for (key, want) in cases {
        assert_eq!(table.lookup(key).unwrap().as_deref(), *want, "{}: {key}", table.spec());
    }
}

#[test]
fn virtual_hash_and_texthash() {
    let (_tmp, dir) = data();
    let report = build_indexed(&dir.join("virtual"), false).unwrap();
    assert_eq!(report.entries, 7);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let cases = [
        ("info@example.com", Some("alice@example.com, bob@example.com")),
        ("alice@example.com", Some("alice@mail.example.com")),
        ("@EXAMPLE.org", Some("catchall@example.com")),
        ("carol@example.net", None),
    ];
    for kind in ["hash", "btree", "texthash"] {
        let t = open(&spec(kind, &dir, "virtual")).unwrap();
        check(t.as_ref(), &cases);
    }
}

#[test]
fn aliases_file() {
    let (_tmp, dir) = data();
    let report = build_indexed(&dir.join("aliases"), true).unwrap();
    assert_eq!(report.entries, 5);
    let t = open(&spec("hash", &dir, "aliases")).unwrap();
    check(
        t.as_ref(),
        &[
            ("root", Some("admin@example.com, \"/var/log/root-mail\"")),
            ("mailer-daemon", Some("postmaster")),
            ("dev team", Some("alice, bob")),
            ("list", Some(":include:/etc/rpost/list.members")),
            ("nobody", None),
        ],
    );
}

#[test]
fn header_checks_pcre() {
    let (_tmp, dir) = data();
    let t = open(&spec("pcre", &dir, "header_checks.pcre")).unwrap();
    assert!(!t.address_keys());
    check(
        t.as_ref(),
        &[
            ("Subject: Buy VIAGRA today", Some("REJECT Spam (subject)")),
            ("Subject: viagrafalls", None),
            ("Received: from x ([192.0.2.55]) by y", Some("WARN internal relay 192.0.2.55")),
            ("X-Mailer: Outlook Express 6.00", Some("HOLD suspicious mailer")),
            ("X-Mailer: Mozilla Thunderbird", None),
            ("X-Mailer: mutt", Some("PREPEND X-Mailer-Checked: not a browser mailer")),
            (
                "Content-Type: application/octet-stream; name=\"invoice.exe\"",
                Some("REJECT attachment invoice.exe not allowed"),
            ),
            ("Content-Type: text/plain", None),
        ],
    );
}

#[test]
fn recipient_regexp_in_address_lookup() {
    let (_tmp, dir) = data();
    let tables = open_list(&[spec("regexp", &dir, "recipient.regexp")]).unwrap();
    let opts = AddressLookup { recipient_delimiter: "+".into(), try_localpart: false, try_domain: true };
    let hit = |a: &str| lookup_address(&tables, a, &opts).unwrap();
    assert_eq!(hit("Abuse@example.com"), Some(("admin@example.com".into(), "Abuse@example.com".into())));
    assert_eq!(hit("joe+lists@example.net"), Some(("joe@example.net".into(), "joe+lists@example.net".into())));
    assert_eq!(hit("joe@example.net"), None);
}

#[test]
fn client_access_cidr() {
    let (_tmp, dir) = data();
    let t = open(&spec("cidr", &dir, "client_access.cidr")).unwrap();
    check(
        t.as_ref(),
        &[
            ("192.0.2.200", Some("OK")),
            ("198.51.100.7", Some("REJECT known spammer")),
            ("198.51.100.8", Some("DUNNO")),
            ("2001:db8:bad:1::25", Some("REJECT bad network")),
            ("2001:db8:1::25", Some("OK")),
            ("203.0.113.1", None),
        ],
    );
    let tables = vec![t];
    assert_eq!(
        lookup_client(&tables, "mx.example.com", "198.51.100.7".parse().unwrap()).unwrap().unwrap().1,
        "198.51.100.7"
    );
}

#[test]
fn mysql_file_parses_and_compiles_to_a_prepared_statement() {
    let (_tmp, dir) = data();
    let cfg = SqlConfig::load(SqlDriver::Mysql, &dir.join("mysql-virtual.cf")).unwrap();
    assert_eq!(cfg.hosts, vec![SqlHost::Inet { host: "127.0.0.1".into(), port: Some(3306) }]);
    assert_eq!(cfg.query, "SELECT destination FROM virtual_aliases WHERE source='%s' AND domain = '%d'");
    assert_eq!(cfg.plan.sql, "SELECT destination FROM virtual_aliases WHERE source=? AND domain = ?");
    assert!(cfg.warnings.is_empty());
    let q = cfg.query_for("O'Brien@Example.com", &cfg.domain_filter().unwrap()).unwrap();
    assert_eq!(q, Some(vec!["o'brien@example.com".to_string(), "example.com".to_string()]));
    assert_eq!(cfg.query_for("bare", &cfg.domain_filter().unwrap()).unwrap(), None);
    // Opening does not connect; proxy: is stripped.
    let t = open(&spec("proxy:mysql", &dir, "mysql-virtual.cf")).unwrap();
    assert!(t.spec().starts_with("proxy:mysql:"), "{}", t.spec());
    assert_eq!(t.lookup("bare").unwrap(), None, "%d without a domain: no query, no connection");
}

#[test]
fn passwd_file_users() {
    let (_tmp, dir) = data();
    let t = open(&spec("passwd-file", &dir, "users")).unwrap();
    let v = t.lookup("alice@example.com").unwrap().unwrap();
    let f = split_passwd_value(&v);
    assert_eq!(f.password, "{SHA512-CRYPT}$6$salt$hash");
    assert_eq!(f.home, "/var/vmail/example.com/alice");
    assert_eq!(f.extra_fields, "userdb_quota_rule=*:storage=1G");
    assert_eq!(split_passwd_value(&t.lookup("bob@example.com").unwrap().unwrap()).password, "{PLAIN}bobpass");
    assert_eq!(t.lookup("carol@example.com").unwrap(), None);
}

#[test]
fn virtual_alias_expansion_end_to_end() {
    let (_tmp, dir) = data();
    build_indexed(&dir.join("virtual"), false).unwrap();
    let tables = open_list(&[spec("hash", &dir, "virtual"), spec("regexp", &dir, "recipient.regexp")]).unwrap();
    let opts = ExpandOptions {
        recipient_delimiter: "+".into(),
        local_domains: vec!["example.com".into()],
        myorigin: "example.com".into(),
        ..ExpandOptions::default()
    };
    let exp = |a: &str| expand_virtual(&tables, a, &opts).unwrap();
    let to = |l: &[&str]| Expansion::To(l.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        exp("sales@example.com"),
        to(&["alice@mail.example.com", "dave@example.com", "carol@example.net"]),
        "team expands, alice is rewritten once, carol is remote"
    );
    assert_eq!(exp("bob@example.com"), to(&["bob@example.com", "bob@archive.example.com"]));
    assert_eq!(
        exp("info+x@example.com"),
        to(&["alice+x@mail.example.com", "bob+x@example.com", "bob+x@archive.example.com"])
    );
    assert_eq!(exp("someone@example.org"), to(&["catchall@example.com"]));
    assert_eq!(exp("abuse@example.com"), to(&["admin@example.com"]));
    assert_eq!(exp("nobody@example.com"), Expansion::Unchanged);
}

//! `sendmail -bv`: how each recipient would be routed. Postfix mails this report to the
//! sender; rpost prints it on standard output (a local user asking gets the answer at once,
//! and nothing is queued). The decisions are the ones smtpd and qmgr make: address class
//! (rpost-address), virtual alias expansion, recipient tables, then transport_maps or the
//! class's transport.

use rpost_config::Params;

/// One line of the report per final address, and whether all are deliverable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub lines: Vec<String>,
    pub all_deliverable: bool,
    /// A table could not be read: the answer is "try again", not "no".
    pub temporary: bool,
}

/// Checks every recipient.
pub fn verify(params: &Params, recipients: &[String]) -> Result<Report, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let myorigin = params.get("myorigin").map_err(|e| err(&e))?;
    let delimiter = params.get("recipient_delimiter").map_err(|e| err(&e))?;
    let domains = rpost_address::Domains::from_params(params).map_err(|e| err(&e))?;
    let expand = rpost_lookup::ExpandOptions::from_params(params).map_err(|e| err(&e))?;
    let transport_maps = rpost_lookup::open_param(params, "transport_maps").map_err(|e| err(&e))?;
    let mut report = Report { lines: Vec::new(), all_deliverable: true, temporary: false };
    for raw in recipients {
        let addr = rpost_address::Address::parse(raw, &myorigin).full();
        let finals = match rpost_lookup::expand_virtual(&domains.virtual_alias_maps.tables, &addr, &expand) {
            Ok(rpost_lookup::Expansion::Unchanged) => vec![addr.clone()],
            Ok(rpost_lookup::Expansion::To(list)) => {
                report.lines.push(format!(
                    "<{addr}>: virtual alias for {}",
                    list.iter().map(|a| format!("<{a}>")).collect::<Vec<_>>().join(", ")
                ));
                list
            }
            Err(e) => {
                report.lines.push(format!("<{addr}>: deferred: virtual alias lookup failed: {e}"));
                report.all_deliverable = false;
                report.temporary = true;
                continue;
            }
        };
        for a in finals {
            let parsed = rpost_address::Address::parse(&a, &myorigin);
            let class = domains.classify(&parsed);
            match domains.is_listed(&parsed, &delimiter) {
                Ok(rpost_address::Listed::Yes) => {}
                Ok(rpost_address::Listed::No(c)) => {
                    report.lines.push(format!("<{a}>: undeliverable: User unknown in {}", c.table_name()));
                    report.all_deliverable = false;
                    continue;
                }
                Err(e) => {
                    report.lines.push(format!("<{a}>: deferred: recipient table unavailable: {e}"));
                    report.all_deliverable = false;
                    report.temporary = true;
                    continue;
                }
            }
            let opts = rpost_lookup::AddressLookup {
                recipient_delimiter: delimiter.clone(),
                try_localpart: class == rpost_address::Class::Local,
                try_domain: true,
            };
            let (how, transport) = match rpost_lookup::lookup_address(&transport_maps, &a, &opts) {
                Ok(Some((t, _))) if !t.trim().is_empty() => ("transport_maps", t),
                Ok(_) => {
                    let param = match class {
                        rpost_address::Class::Local => "local_transport",
                        rpost_address::Class::VirtualAlias | rpost_address::Class::VirtualMailbox => {
                            "virtual_transport"
                        }
                        rpost_address::Class::Relay => "relay_transport",
                        rpost_address::Class::Remote => "default_transport",
                    };
                    let mut t = params.get(param).map_err(|e| err(&e))?;
                    if class == rpost_address::Class::Remote {
                        let relayhost = params.get("relayhost").map_err(|e| err(&e))?;
                        if !relayhost.is_empty() {
                            t = format!("{t} via relayhost {relayhost}");
                        }
                    }
                    (param, t)
                }
                Err(e) => {
                    report.lines.push(format!("<{a}>: deferred: transport_maps unavailable: {e}"));
                    report.all_deliverable = false;
                    report.temporary = true;
                    continue;
                }
            };
            let class_name = match class {
                rpost_address::Class::Local => "local",
                rpost_address::Class::VirtualAlias => "virtual alias",
                rpost_address::Class::VirtualMailbox => "virtual mailbox",
                rpost_address::Class::Relay => "relay",
                rpost_address::Class::Remote => "remote",
            };
            report.lines.push(format!("<{a}>: deliverable: {class_name} domain, {transport} ({how})"));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_unknown_users() {
        let dir = std::env::temp_dir().join(format!("rpost-bv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users");
        std::fs::write(&users, "alice@example.test:{PLAIN}x::::::\n").unwrap();
        let mut p = Params::empty();
        p.set("myhostname", "mail.example.test");
        p.set("mydestination", "");
        p.set("virtual_mailbox_domains", "example.test");
        p.set("auth_passdb", &format!("passwd-file:{}", users.display()));
        p.set("virtual_alias_maps", "inline:{ info@example.test=alice@example.test }");
        let r = verify(
            &p,
            &[
                "alice@example.test".into(),
                "bob@example.test".into(),
                "x@remote.test".into(),
                "info@example.test".into(),
            ],
        )
        .unwrap();
        assert!(
            r.lines[0].starts_with(
                "<alice@example.test>: deliverable: virtual mailbox domain, lmtp:unix:private/lmtp-deliver"
            ),
            "{:?}",
            r.lines
        );
        assert_eq!(r.lines[1], "<bob@example.test>: undeliverable: User unknown in virtual mailbox table");
        assert!(r.lines[2].starts_with("<x@remote.test>: deliverable: remote domain, smtp"), "{:?}", r.lines);
        assert_eq!(r.lines[3], "<info@example.test>: virtual alias for <alice@example.test>");
        assert!(!r.all_deliverable && !r.temporary);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

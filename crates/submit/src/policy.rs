//! Who may submit, list the queue, and use which envelope sender: Postfix's
//! `authorized_submit_users`, `authorized_mailq_users` and `local_login_sender_maps`.
//!
//! pickup and showq enforce these (they are the trusted side); sendmail checks the same
//! rules first so that a refused user gets an error at once instead of a file in corrupt/.

use rpost_lookup::{LookupError, Table};

/// A Postfix user list (`authorized_*_users`): login names, `/file` of names, `type:table`
/// looked up by login name (any result matches; `static:anyone` matches everyone), `!` to
/// exclude. The first matching item decides; nothing matching (or an empty list) denies.
pub fn user_listed(items: &[String], login: &str) -> Result<bool, LookupError> {
    for item in items {
        let (negate, item) = match item.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, item.as_str()),
        };
        let hit = if item.starts_with('/') {
            let text = std::fs::read_to_string(item)
                .map_err(|e| LookupError::Open { spec: item.to_string(), message: e.to_string() })?;
            let names: Vec<&str> = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .flat_map(|l| l.split([',', ' ', '\t']))
                .filter(|n| !n.is_empty())
                .collect();
            names.contains(&login)
        } else if item.contains(':') {
            rpost_lookup::open(item)?.lookup(login)?.is_some()
        } else {
            item == login
        };
        if hit {
            return Ok(!negate);
        }
    }
    Ok(false)
}

/// `local_login_sender_maps`: the first table with an entry for `login` lists the senders it
/// may use: `*` any, `<>` (the `empty_address_local_login_sender_maps_lookup_key`) the null
/// sender, `@domain` any address in that domain, else exact addresses (case-insensitive).
/// No entry anywhere denies.
pub fn sender_allowed(
    tables: &[Box<dyn Table>],
    login: &str,
    sender: &str,
    null_key: &str,
) -> Result<bool, LookupError> {
    for t in tables {
        let Some(value) = t.lookup(login)? else { continue };
        let allowed = value.split([',', ' ', '\t']).filter(|p| !p.is_empty()).any(|pat| {
            if pat == "*" {
                true
            } else if pat == null_key {
                sender.is_empty()
            } else if let Some(domain) = pat.strip_prefix('@') {
                sender.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
            } else {
                !sender.is_empty() && pat.eq_ignore_ascii_case(sender)
            }
        });
        return Ok(allowed);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn user_lists() {
        assert!(user_listed(&list(&["static:anyone"]), "alice").unwrap());
        assert!(!user_listed(&[], "alice").unwrap());
        assert!(user_listed(&list(&["bob", "alice"]), "alice").unwrap());
        assert!(!user_listed(&list(&["!alice", "static:anyone"]), "alice").unwrap());
        assert!(user_listed(&list(&["!alice", "static:anyone"]), "bob").unwrap());
        assert!(user_listed(&list(&["inline:{ alice=ok }"]), "alice").unwrap());
        assert!(!user_listed(&list(&["inline:{ alice=ok }"]), "bob").unwrap());
    }

    #[test]
    fn sender_patterns() {
        let t = |spec: &str| vec![rpost_lookup::open(spec).unwrap()];
        let any = t("static:*");
        assert!(sender_allowed(&any, "u", "x@y", "<>").unwrap());
        assert!(sender_allowed(&any, "u", "", "<>").unwrap());
        let m = t("inline:{ { alice = alice alice@example.test @lists.example.test <> } }");
        assert!(sender_allowed(&m, "alice", "alice", "<>").unwrap());
        assert!(sender_allowed(&m, "alice", "ALICE@example.test", "<>").unwrap());
        assert!(sender_allowed(&m, "alice", "x@lists.example.test", "<>").unwrap());
        assert!(sender_allowed(&m, "alice", "", "<>").unwrap());
        assert!(!sender_allowed(&m, "alice", "bob@example.test", "<>").unwrap());
        assert!(!sender_allowed(&m, "alice", "x@sub.lists.example.test", "<>").unwrap());
        assert!(!sender_allowed(&m, "bob", "bob", "<>").unwrap(), "no entry: denied");
    }
}

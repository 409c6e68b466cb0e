//! SASL server mechanisms, sans-IO: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login),
//! CRAM-MD5 (RFC 2195). A mechanism turns client data into either a challenge or a
//! credential to check; the password check itself is the caller's (it needs the passdb).

/// Mechanisms authd implements, with their `MECH` flags.
pub const KNOWN: &[(&str, &[&str])] =
    &[("PLAIN", &["plaintext"]), ("LOGIN", &["plaintext"]), ("CRAM-MD5", &["dictionary", "active"])];

/// Longest user name or password accepted from a mechanism.
pub const MAX_FIELD: usize = 1024;

/// What the client proved it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// PLAIN, LOGIN: the password in the clear (never logged).
    Password(Vec<u8>),
    /// CRAM-MD5: the challenge we sent and the client's HMAC-MD5 digest.
    CramMd5 { challenge: Vec<u8>, digest: [u8; 16] },
}

/// The next step of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge (raw bytes; the caller base64-encodes) and wait for a response.
    Challenge(Vec<u8>),
    /// Check this: `authcid` is the user name to authenticate.
    Check { authcid: String, proof: Proof },
    /// The client's data is malformed; the reason is for the client and the log.
    Fail(&'static str),
}

/// One exchange in progress.
#[derive(Debug)]
pub enum Exchange {
    Plain,
    Login { user: Option<String> },
    CramMd5 { challenge: Vec<u8> },
}

fn field(bytes: &[u8]) -> Option<String> {
    if bytes.len() > MAX_FIELD {
        return None;
    }
    let s = std::str::from_utf8(bytes).ok()?;
    (!s.chars().any(|c| c.is_control())).then(|| s.to_string())
}

impl Exchange {
    /// Starts `mech` (upper case). `hostname` goes into the CRAM-MD5 challenge.
    pub fn new(mech: &str, hostname: &str) -> Option<Exchange> {
        Some(match mech {
            "PLAIN" => Exchange::Plain,
            "LOGIN" => Exchange::Login { user: None },
            "CRAM-MD5" => {
                let mut r = [0u8; 8];
                let _ = getrandom::getrandom(&mut r);
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let challenge = format!("<{}.{now}@{hostname}>", u64::from_le_bytes(r));
                Exchange::CramMd5 { challenge: challenge.into_bytes() }
            }
            _ => return None,
        })
    }

    /// The first step: with the initial response if the client sent one.
    pub fn start(&mut self, initial: Option<Vec<u8>>) -> Step {
        match (self, initial) {
            (Exchange::Plain, None) => Step::Challenge(Vec::new()),
            (Exchange::Login { .. }, None) => Step::Challenge(b"Username:".to_vec()),
            (Exchange::CramMd5 { challenge }, _) => Step::Challenge(challenge.clone()),
            (ex, Some(data)) => ex.step(&data),
        }
    }

    /// The client's response to our last challenge.
    pub fn step(&mut self, data: &[u8]) -> Step {
        match self {
            Exchange::Plain => {
                // authzid NUL authcid NUL passwd
                let parts: Vec<&[u8]> = data.splitn(3, |&b| b == 0).collect();
                if parts.len() != 3 {
                    return Step::Fail("Invalid PLAIN input");
                }
                let (Some(authzid), Some(authcid)) = (field(parts[0]), field(parts[1])) else {
                    return Step::Fail("Invalid user name");
                };
                if authcid.is_empty() {
                    return Step::Fail("Empty user name");
                }
                // A different authorization identity is Dovecot's master-user login, which
                // rpost does not offer.
                if !authzid.is_empty() && authzid != authcid {
                    return Step::Fail("Authorization identity differs from the user name");
                }
                if parts[2].len() > MAX_FIELD {
                    return Step::Fail("Password too long");
                }
                Step::Check { authcid, proof: Proof::Password(parts[2].to_vec()) }
            }
            Exchange::Login { user } => match user.take() {
                None => match field(data) {
                    Some(u) if !u.is_empty() => {
                        *user = Some(u);
                        Step::Challenge(b"Password:".to_vec())
                    }
                    _ => Step::Fail("Invalid user name"),
                },
                Some(u) => {
                    if data.len() > MAX_FIELD {
                        return Step::Fail("Password too long");
                    }
                    Step::Check { authcid: u, proof: Proof::Password(data.to_vec()) }
                }
            },
            Exchange::CramMd5 { challenge } => {
                // "user SP 32 lower-case hex digits"; the user name may contain spaces.
                let Some(sp) = data.iter().rposition(|&b| b == b' ') else {
                    return Step::Fail("Invalid CRAM-MD5 response");
                };
                let (Some(user), Ok(hex)) = (field(&data[..sp]), std::str::from_utf8(&data[sp + 1..])) else {
                    return Step::Fail("Invalid CRAM-MD5 response");
                };
                let mut digest = [0u8; 16];
                if hex.len() != 32 || user.is_empty() {
                    return Step::Fail("Invalid CRAM-MD5 response");
                }
                for (i, d) in digest.iter_mut().enumerate() {
                    match u8::from_str_radix(&hex[2 * i..2 * i + 2], 16) {
                        Ok(v) => *d = v,
                        Err(_) => return Step::Fail("Invalid CRAM-MD5 response"),
                    }
                }
                Step::Check { authcid: user, proof: Proof::CramMd5 { challenge: challenge.clone(), digest } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let mut e = Exchange::new("PLAIN", "h").unwrap();
        assert_eq!(e.start(None), Step::Challenge(vec![]));
        assert_eq!(
            e.step(b"\0alice\0s3cret"),
            Step::Check { authcid: "alice".into(), proof: Proof::Password(b"s3cret".to_vec()) }
        );
        let mut e = Exchange::new("PLAIN", "h").unwrap();
        assert!(matches!(e.start(Some(b"alice\0alice\0pw".to_vec())), Step::Check { .. }));
        assert!(matches!(e.step(b"admin\0alice\0pw"), Step::Fail(_)));
        assert!(matches!(e.step(b"\0\0pw"), Step::Fail(_)));
        assert!(matches!(e.step(b"alice-pw"), Step::Fail(_)));
        assert!(matches!(e.step(b"\0al\nice\0pw"), Step::Fail(_)));
        // The password may contain NUL-free binary data and even a NUL after the second split.
        assert!(matches!(e.step(b"\0alice\0p\0w"), Step::Check { .. }));
    }

    #[test]
    fn login() {
        let mut e = Exchange::new("LOGIN", "h").unwrap();
        assert_eq!(e.start(None), Step::Challenge(b"Username:".to_vec()));
        assert_eq!(e.step(b"bob"), Step::Challenge(b"Password:".to_vec()));
        assert_eq!(e.step(b"pw"), Step::Check { authcid: "bob".into(), proof: Proof::Password(b"pw".to_vec()) });
        let mut e = Exchange::new("LOGIN", "h").unwrap();
        assert_eq!(e.start(Some(b"bob".to_vec())), Step::Challenge(b"Password:".to_vec()));
        let mut e = Exchange::new("LOGIN", "h").unwrap();
        assert!(matches!(e.start(Some(vec![])), Step::Fail(_)));
    }

    #[test]
    fn cram_md5() {
        let mut e = Exchange::new("CRAM-MD5", "mail.example").unwrap();
        let Step::Challenge(c) = e.start(None) else { panic!() };
        let text = String::from_utf8(c.clone()).unwrap();
        assert!(text.starts_with('<') && text.ends_with("@mail.example>"), "{text}");
        let Step::Check { authcid, proof: Proof::CramMd5 { challenge, digest } } =
            e.step(b"tim smith b913a602c7eda7a495b4e6e7334d3890")
        else {
            panic!()
        };
        assert_eq!(authcid, "tim smith");
        assert_eq!(challenge, c);
        assert_eq!(digest[0], 0xb9);
        assert!(matches!(e.step(b"tim b913a602c7eda7a495b4e6e7334d389"), Step::Fail(_)));
        assert!(matches!(e.step(b"tim zz13a602c7eda7a495b4e6e7334d3890"), Step::Fail(_)));
        assert!(matches!(e.step(b"nospace"), Step::Fail(_)));
        assert!(Exchange::new("GSSAPI", "h").is_none());
    }
}

//! SASL server mechanisms, sans-IO: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login),
//! CRAM-MD5 (RFC 2195), SCRAM-SHA-256 (RFC 5802, RFC 7677; no channel binding). A mechanism
//! turns client data into a challenge, a credential to check, or (SCRAM) a request for the
//! user's stored keys; the passdb work is the caller's.

/// Mechanisms authd implements, with their `MECH` flags.
pub const KNOWN: &[(&str, &[&str])] = &[
    ("PLAIN", &["plaintext"]),
    ("LOGIN", &["plaintext"]),
    ("CRAM-MD5", &["dictionary", "active"]),
    ("SCRAM-SHA-256", &["mutual-auth"]),
];

/// Iterations used when SCRAM keys are derived from a `{PLAIN}` password on the fly.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// A user's SCRAM-SHA-256 keys (from `{SCRAM-SHA-256}` data or derived from a plaintext).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(<hidden>)")
    }
}

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
    /// SCRAM: look `authcid` up and call [`Exchange::keys`] with its keys.
    Lookup { authcid: String },
    /// SCRAM: the client proved the password. Send `server_final` as a challenge, then
    /// succeed whatever the client answers (RFC 4954: the final data needs a round trip).
    Proven { authcid: String, server_final: Vec<u8> },
    /// SCRAM: the proof was wrong (a password mismatch).
    Mismatch { authcid: String },
}

/// One exchange in progress.
#[derive(Debug)]
pub enum Exchange {
    Plain,
    Login { user: Option<String> },
    CramMd5 { challenge: Vec<u8> },
    Scram(Scram),
}

/// SCRAM-SHA-256 progress.
#[derive(Debug)]
pub enum Scram {
    /// Waiting for client-first.
    Start,
    /// client-first parsed; waiting for the caller's keys.
    Keys {
        user: String,
        gs2: String,
        client_first_bare: String,
        client_nonce: String,
    },
    /// server-first sent; waiting for client-final.
    Final {
        user: String,
        gs2: String,
        auth_prefix: String,
        nonce: String,
        keys: ScramKeys,
    },
    Done,
}

/// RFC 5802 saslname: `=2C` is `,`, `=3D` is `=`; any other `=` is an error.
fn saslname(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn random_nonce() -> String {
    let mut r = [0u8; 18];
    let _ = getrandom::getrandom(&mut r);
    rpost_auth_proto::b64_encode(&r)
}

fn hmac256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    m.update(data);
    m.finalize().into_bytes().into()
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
            "SCRAM-SHA-256" => Exchange::Scram(Scram::Start),
            _ => return None,
        })
    }

    /// The first step: with the initial response if the client sent one.
    pub fn start(&mut self, initial: Option<Vec<u8>>) -> Step {
        match (self, initial) {
            (Exchange::Plain, None) => Step::Challenge(Vec::new()),
            (Exchange::Login { .. }, None) => Step::Challenge(b"Username:".to_vec()),
            (Exchange::CramMd5 { challenge }, _) => Step::Challenge(challenge.clone()),
            (Exchange::Scram(_), None) => Step::Challenge(Vec::new()),
            (ex, Some(data)) => ex.step(&data),
        }
    }

    /// SCRAM: the user's keys after a [`Step::Lookup`] (`None`: no usable keys; the
    /// exchange fails).
    pub fn keys(&mut self, keys: Option<ScramKeys>) -> Step {
        let Exchange::Scram(state) = self else { return Step::Fail("Unexpected keys") };
        let Scram::Keys { user, gs2, client_first_bare, client_nonce } = std::mem::replace(state, Scram::Done) else {
            return Step::Fail("Unexpected keys");
        };
        let Some(keys) = keys else { return Step::Fail("No SCRAM credentials") };
        let nonce = format!("{client_nonce}{}", random_nonce());
        let server_first = format!("r={nonce},s={},i={}", rpost_auth_proto::b64_encode(&keys.salt), keys.iterations);
        let auth_prefix = format!("{client_first_bare},{server_first}");
        *state = Scram::Final { user, gs2, auth_prefix, nonce, keys };
        Step::Challenge(server_first.into_bytes())
    }

    fn scram_step(state: &mut Scram, data: &[u8]) -> Step {
        let Ok(text) = std::str::from_utf8(data) else { return Step::Fail("Invalid SCRAM message") };
        if text.len() > 4 * MAX_FIELD {
            return Step::Fail("Invalid SCRAM message");
        }
        match std::mem::replace(state, Scram::Done) {
            Scram::Start => {
                // gs2-header: "n,," or "y,," (no channel binding), optional a=authzid.
                let mut parts = text.splitn(3, ',');
                let (Some(cb), Some(authz), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
                    return Step::Fail("Invalid SCRAM client-first message");
                };
                if cb != "n" && cb != "y" {
                    return Step::Fail("SCRAM channel binding is not supported");
                }
                let mut fields = bare.split(',');
                let user = fields.next().and_then(|f| f.strip_prefix("n=")).and_then(saslname);
                let nonce = fields.next().and_then(|f| f.strip_prefix("r="));
                let (Some(user), Some(nonce)) = (user, nonce) else {
                    return Step::Fail("Invalid SCRAM client-first message");
                };
                if user.is_empty()
                    || field(user.as_bytes()).is_none()
                    || nonce.is_empty()
                    || !nonce.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b',')
                {
                    return Step::Fail("Invalid SCRAM client-first message");
                }
                if let Some(a) = authz.strip_prefix("a=") {
                    if saslname(a).as_deref() != Some(user.as_str()) {
                        return Step::Fail("Authorization identity differs from the user name");
                    }
                } else if !authz.is_empty() {
                    return Step::Fail("Invalid SCRAM client-first message");
                }
                *state = Scram::Keys {
                    user: user.clone(),
                    gs2: format!("{cb},{authz},"),
                    client_first_bare: bare.to_string(),
                    client_nonce: nonce.to_string(),
                };
                Step::Lookup { authcid: user }
            }
            Scram::Final { user, gs2, auth_prefix, nonce, keys } => {
                let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
                    return Step::Fail("Invalid SCRAM client-final message");
                };
                let mut fields = without_proof.split(',');
                let cbind = fields.next().and_then(|f| f.strip_prefix("c="));
                let r = fields.next().and_then(|f| f.strip_prefix("r="));
                if cbind.and_then(rpost_auth_proto::b64_decode).as_deref() != Some(gs2.as_bytes()) {
                    return Step::Fail("SCRAM channel binding data mismatch");
                }
                if r != Some(nonce.as_str()) {
                    return Step::Fail("SCRAM nonce mismatch");
                }
                let Some(proof) = rpost_auth_proto::b64_decode(proof).filter(|p| p.len() == 32) else {
                    return Step::Fail("Invalid SCRAM proof");
                };
                let auth_message = format!("{auth_prefix},{without_proof}");
                let signature = hmac256(&keys.stored_key, auth_message.as_bytes());
                let client_key: Vec<u8> = proof.iter().zip(signature.iter()).map(|(a, b)| a ^ b).collect();
                let computed: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&client_key).into();
                if !rpost_password::ct_eq(&computed, &keys.stored_key) {
                    return Step::Mismatch { authcid: user };
                }
                let v = hmac256(&keys.server_key, auth_message.as_bytes());
                Step::Proven {
                    authcid: user,
                    server_final: format!("v={}", rpost_auth_proto::b64_encode(&v)).into_bytes(),
                }
            }
            Scram::Keys { .. } | Scram::Done => Step::Fail("Unexpected SCRAM message"),
        }
    }

    /// The client's response to our last challenge.
    pub fn step(&mut self, data: &[u8]) -> Step {
        match self {
            Exchange::Scram(state) => Exchange::scram_step(state, data),
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

    /// RFC 7677's example exchange (user "user", password "pencil").
    #[test]
    fn scram_sha_256_rfc7677() {
        let salt = rpost_auth_proto::b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (stored, server) = rpost_password::scram_keys(b"pencil", &salt, 4096);
        let keys = ScramKeys { iterations: 4096, salt, stored_key: stored.to_vec(), server_key: server.to_vec() };
        let mut e = Exchange::new("SCRAM-SHA-256", "h").unwrap();
        assert_eq!(
            e.start(Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec())),
            Step::Lookup { authcid: "user".into() }
        );
        let Step::Challenge(first) = e.keys(Some(keys.clone())) else { panic!() };
        let first = String::from_utf8(first).unwrap();
        assert!(
            first.starts_with("r=rOprNGfwEbeRWgbNEkqO") && first.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            "{first}"
        );
        // Replay the RFC's server nonce to check the proof arithmetic.
        let Exchange::Scram(Scram::Final { auth_prefix, nonce, .. }) = &mut e else { panic!() };
        *nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into();
        *auth_prefix = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".into();
        let step = e.step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert_eq!(
            step,
            Step::Proven {
                authcid: "user".into(),
                server_final: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            }
        );
        // A wrong proof is a mismatch; bad messages fail.
        let mut e = Exchange::new("SCRAM-SHA-256", "h").unwrap();
        e.start(Some(b"n,,n=user,r=abc".to_vec()));
        let Step::Challenge(first) = e.keys(Some(keys)) else { panic!() };
        let nonce = String::from_utf8(first).unwrap().split(',').next().unwrap()[2..].to_string();
        let bad = format!("c=biws,r={nonce},p={}", rpost_auth_proto::b64_encode(&[0u8; 32]));
        assert_eq!(e.step(bad.as_bytes()), Step::Mismatch { authcid: "user".into() });
        let mut e = Exchange::new("SCRAM-SHA-256", "h").unwrap();
        assert!(matches!(e.start(Some(b"p=tls-unique,,n=user,r=abc".to_vec())), Step::Fail(_)));
        let mut e = Exchange::new("SCRAM-SHA-256", "h").unwrap();
        assert!(matches!(e.start(Some(b"n,a=admin,n=user,r=abc".to_vec())), Step::Fail(_)));
        assert_eq!(saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(saslname("a=b"), None);
    }
}

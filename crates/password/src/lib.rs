//! rpost-password - Dovecot password schemes
//!
//! # SUMMARY
//! ```text
//! let stored = rpost_password::generate("SHA512-CRYPT", b"secret")?;   // "{SHA512-CRYPT}$6$..."
//! rpost_password::verify(&stored, b"secret", "CRYPT")?                  // Ok(true)
//! rpost_password::credentials(&stored, "CRYPT")?                        // what CRAM-MD5 may use
//! ```
//!
//! # DESCRIPTION
//! A stored password is `{SCHEME}data`, or bare `data` in the `default_pass_scheme`
//! (Dovecot's default: CRYPT). Schemes, as `doveadm pw -l` names them:
//!
//! | scheme | data | generate | verify |
//! |---|---|---|---|
//! | `SHA512-CRYPT`, `SHA256-CRYPT` | `$6$`/`$5$` crypt(3), `rounds=` honoured | yes (5000 rounds, 16-char salt) | yes |
//! | `BLF-CRYPT` | `$2y$`/`$2b$`/`$2a$` bcrypt | yes (`$2y$05$`, Dovecot's cost) | yes |
//! | `ARGON2ID`, `ARGON2I` | PHC `$argon2id$v=19$m=..,t=..,p=..$salt$hash` | yes (m=65536 t=3 p=1 as doveadm) | yes |
//! | `CRYPT` | crypt(3) by prefix: `$1$`, `$5$`, `$6$`, `$2*$` | yes (`$2y$05$`, what Debian's doveadm makes) | yes, but not traditional DES (13 characters): refused with an error, no DES code is built in |
//! | `MD5-CRYPT` (alias `MD5`) | `$1$` | yes | yes |
//! | `PLAIN`, `CLEAR`, `CLEARTEXT` | the password | yes | yes |
//! | `CRAM-MD5` | 64 hex: the HMAC-MD5 inner/outer states (Dovecot's layout) | yes | yes, and usable by the CRAM-MD5 mechanism |
//! | `SCRAM-SHA-256` | `iter,salt,StoredKey,ServerKey` (base64) | yes (4096 iterations) | yes |
//! | `SHA256`, `SHA512`, `SSHA256`, `SSHA512`, `SHA`/`SHA1`, `SSHA`, `PLAIN-MD5`, `LDAP-MD5`, `SMD5` | digests, base64 (PLAIN-MD5: hex); `.HEX`/`.B64` suffixes | yes | yes |
//!
//! Not available: `DES-CRYPT` (and 13-character DES `CRYPT`), `DIGEST-MD5`, `PBKDF2`, `OTP`,
//! `PLAIN-MD4`, `SCRAM-SHA-1`; each gives
//! [`PasswordError::Unsupported`], never a silent mismatch.
//!
//! # SECURITY
//! Comparisons of computed and stored values are constant-time ([`ct_eq`]). Nothing here
//! logs, and error messages never contain the password or the stored data, only the scheme
//! name. Salts come from the operating system's random generator (getrandom). Verification
//! of the slow schemes costs real CPU time: callers in async code run it on a blocking
//! thread.
//!
//! # CONFIGURATION
//! `default_pass_scheme` (the caller passes it in).
//!
//! # STANDARDS
//! Dovecot password schemes (doc.dovecot.org "Password Schemes"); crypt(3) SHA-crypt
//! (Drepper), MD5-crypt (Kamp); bcrypt; RFC 9106 (Argon2); RFC 2195 + RFC 2104 (CRAM-MD5,
//! HMAC precomputation); RFC 5802/7677 (SCRAM-SHA-256 stored keys).

mod md5raw;
mod sha1raw;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

/// Why a password could not be generated or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("unknown password scheme {0}")]
    UnknownScheme(String),
    #[error("password scheme {0} is not supported by rpost")]
    Unsupported(String),
    /// The stored data does not fit its scheme (the message names the scheme only).
    #[error("malformed {0} password data")]
    Malformed(String),
    #[error("no random numbers from the operating system")]
    Random,
}

/// A known scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Sha512Crypt,
    Sha256Crypt,
    BlfCrypt,
    Argon2id,
    Argon2i,
    Crypt,
    Md5Crypt,
    Plain,
    CramMd5,
    ScramSha256,
    Sha256,
    Sha512,
    Ssha256,
    Ssha512,
    PlainMd5,
    LdapMd5,
    Smd5,
    Sha1,
    Ssha,
}

/// How a digest scheme's bytes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Base64,
    Hex,
}

impl Scheme {
    /// Looks up a scheme by name (case-insensitive; `.HEX`/`.B64` suffixes are split off by
    /// [`parse_scheme`]).
    pub fn from_name(name: &str) -> Result<Scheme, PasswordError> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "SHA512-CRYPT" => Scheme::Sha512Crypt,
            "SHA256-CRYPT" => Scheme::Sha256Crypt,
            "BLF-CRYPT" => Scheme::BlfCrypt,
            "ARGON2ID" => Scheme::Argon2id,
            "ARGON2I" => Scheme::Argon2i,
            "CRYPT" => Scheme::Crypt,
            "MD5-CRYPT" | "MD5" => Scheme::Md5Crypt,
            "PLAIN" | "CLEAR" | "CLEARTEXT" => Scheme::Plain,
            "CRAM-MD5" | "HMAC-MD5" => Scheme::CramMd5,
            "SCRAM-SHA-256" => Scheme::ScramSha256,
            "SHA256" => Scheme::Sha256,
            "SHA512" => Scheme::Sha512,
            "SSHA256" => Scheme::Ssha256,
            "SSHA512" => Scheme::Ssha512,
            "PLAIN-MD5" => Scheme::PlainMd5,
            "LDAP-MD5" => Scheme::LdapMd5,
            "SMD5" => Scheme::Smd5,
            "SHA" | "SHA1" => Scheme::Sha1,
            "SSHA" => Scheme::Ssha,
            u @ ("DES-CRYPT" | "DIGEST-MD5" | "PBKDF2" | "OTP" | "PLAIN-MD4" | "PLAIN-TRUNC" | "SCRAM-SHA-1"
            | "LANMAN" | "NTLM" | "RPA" | "SKEY") => {
                return Err(PasswordError::Unsupported(u.to_string()));
            }
            other => return Err(PasswordError::UnknownScheme(printable(other))),
        })
    }

    /// Dovecot's name.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::BlfCrypt => "BLF-CRYPT",
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::Crypt => "CRYPT",
            Scheme::Md5Crypt => "MD5-CRYPT",
            Scheme::Plain => "PLAIN",
            Scheme::CramMd5 => "CRAM-MD5",
            Scheme::ScramSha256 => "SCRAM-SHA-256",
            Scheme::Sha256 => "SHA256",
            Scheme::Sha512 => "SHA512",
            Scheme::Ssha256 => "SSHA256",
            Scheme::Ssha512 => "SSHA512",
            Scheme::PlainMd5 => "PLAIN-MD5",
            Scheme::LdapMd5 => "LDAP-MD5",
            Scheme::Smd5 => "SMD5",
            Scheme::Sha1 => "SHA1",
            Scheme::Ssha => "SSHA",
        }
    }

    fn default_encoding(self) -> Encoding {
        if self == Scheme::PlainMd5 || self == Scheme::CramMd5 { Encoding::Hex } else { Encoding::Base64 }
    }
}

/// Every scheme `generate` accepts, in `doveadm pw -l` style.
pub const SCHEMES: &[&str] = &[
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "BLF-CRYPT",
    "ARGON2ID",
    "ARGON2I",
    "CRYPT",
    "MD5-CRYPT",
    "MD5",
    "PLAIN",
    "CLEAR",
    "CLEARTEXT",
    "CRAM-MD5",
    "HMAC-MD5",
    "SCRAM-SHA-256",
    "SHA256",
    "SHA512",
    "SSHA256",
    "SSHA512",
    "PLAIN-MD5",
    "LDAP-MD5",
    "SMD5",
    "SHA",
    "SHA1",
    "SSHA",
];

/// `NAME`, `NAME.HEX` or `NAME.B64`.
fn parse_scheme(name: &str) -> Result<(Scheme, Option<Encoding>), PasswordError> {
    let upper = name.to_ascii_uppercase();
    if let Some(base) = upper.strip_suffix(".HEX") {
        return Ok((Scheme::from_name(base)?, Some(Encoding::Hex)));
    }
    if let Some(base) = upper.strip_suffix(".B64").or_else(|| upper.strip_suffix(".BASE64")) {
        return Ok((Scheme::from_name(base)?, Some(Encoding::Base64)));
    }
    Ok((Scheme::from_name(&upper)?, None))
}

/// Splits `{SCHEME}data`; data without a prefix is in `default_scheme`. A `{` that does not
/// close into a scheme name is data (a password may start with `{`).
pub fn split_stored<'a>(stored: &'a str, default_scheme: &'a str) -> (&'a str, &'a str) {
    if let Some(rest) = stored.strip_prefix('{')
        && let Some(end) = rest.find('}')
    {
        let name = &rest[..end];
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
            return (name, &rest[end + 1..]);
        }
    }
    (default_scheme, stored)
}

/// The scheme of a stored password.
pub fn stored_scheme(stored: &str, default_scheme: &str) -> Result<Scheme, PasswordError> {
    Ok(parse_scheme(split_stored(stored, default_scheme).0)?.0)
}

/// Constant-time equality (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn printable(s: &str) -> String {
    s.chars().take(40).map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn random(n: usize) -> Result<Vec<u8>, PasswordError> {
    let mut v = vec![0u8; n];
    getrandom::getrandom(&mut v).map_err(|_| PasswordError::Random)?;
    Ok(v)
}

const CRYPT64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn crypt_salt(n: usize) -> Result<String, PasswordError> {
    Ok(random(n)?.iter().map(|b| CRYPT64[(b & 63) as usize] as char).collect())
}

/// `{SCHEME}data` for `password`, as `doveadm pw -s SCHEME` prints it.
pub fn generate(scheme_name: &str, password: &[u8]) -> Result<String, PasswordError> {
    let (scheme, enc) = parse_scheme(scheme_name)?;
    let enc = enc.unwrap_or(scheme.default_encoding());
    let data = match scheme {
        Scheme::Sha512Crypt => sha_crypt_hash(true, password, &crypt_salt(16)?, None)?,
        Scheme::Sha256Crypt => sha_crypt_hash(false, password, &crypt_salt(16)?, None)?,
        Scheme::BlfCrypt | Scheme::Crypt => {
            let salt: [u8; 16] = random(16)?.try_into().expect("16 bytes");
            bcrypt::hash_with_salt(password, 5, salt)
                .map_err(|_| PasswordError::Malformed("BLF-CRYPT".into()))?
                .format_for_version(bcrypt::Version::TwoY)
        }
        Scheme::Argon2id | Scheme::Argon2i => argon2_hash(scheme, password)?,
        Scheme::Md5Crypt => md5_crypt(password, crypt_salt(8)?.as_bytes()),
        Scheme::Plain => String::from_utf8(password.to_vec()).map_err(|_| PasswordError::Malformed("PLAIN".into()))?,
        Scheme::CramMd5 => encode(&cram_md5_context(password), enc),
        Scheme::ScramSha256 => {
            let salt = random(16)?;
            let (stored_key, server_key) = scram_keys(password, &salt, 4096);
            format!("4096,{},{},{}", B64.encode(&salt), B64.encode(stored_key), B64.encode(server_key))
        }
        Scheme::Sha256 => encode(&Sha256::digest(password), enc),
        Scheme::Sha512 => encode(&Sha512::digest(password), enc),
        Scheme::PlainMd5 | Scheme::LdapMd5 => {
            let enc = if scheme == Scheme::LdapMd5 && enc == Encoding::Hex && !scheme_name.contains('.') {
                Encoding::Base64
            } else {
                enc
            };
            encode(&Md5::digest(password), enc)
        }
        Scheme::Sha1 => encode(&sha1raw::digest(password), enc),
        Scheme::Ssha256 | Scheme::Ssha512 | Scheme::Smd5 | Scheme::Ssha => {
            let salt = random(if scheme == Scheme::Smd5 { 4 } else { 8 })?;
            let mut out = salted_digest(scheme, password, &salt);
            out.extend_from_slice(&salt);
            encode(&out, enc)
        }
    };
    let shown = if scheme_name.contains('.') { scheme_name.to_ascii_uppercase() } else { scheme.name().to_string() };
    // doveadm prints the name as asked for aliases it keeps (CRYPT, MD5, CLEAR...).
    let shown = match scheme_name.to_ascii_uppercase().as_str() {
        n @ ("MD5" | "CLEAR" | "CLEARTEXT" | "HMAC-MD5" | "SHA") => n.to_string(),
        _ => shown,
    };
    Ok(format!("{{{shown}}}{data}"))
}

fn encode(bytes: &[u8], enc: Encoding) -> String {
    match enc {
        Encoding::Base64 => B64.encode(bytes),
        Encoding::Hex => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Decodes digest data: the explicit encoding, else hex when the length says so (as Dovecot
/// accepts), else base64.
fn decode(data: &str, enc: Option<Encoding>, digest_len: usize, scheme: Scheme) -> Result<Vec<u8>, PasswordError> {
    let bad = || PasswordError::Malformed(scheme.name().into());
    match enc {
        Some(Encoding::Hex) => hex_decode(data).ok_or_else(bad),
        Some(Encoding::Base64) => B64.decode(data.trim()).map_err(|_| bad()),
        None if data.len() == digest_len * 2 => hex_decode(data).ok_or_else(bad),
        None => B64.decode(data.trim()).map_err(|_| bad()),
    }
}

fn salted_digest(scheme: Scheme, password: &[u8], salt: &[u8]) -> Vec<u8> {
    match scheme {
        Scheme::Ssha256 => Sha256::new().chain_update(password).chain_update(salt).finalize().to_vec(),
        Scheme::Ssha512 => Sha512::new().chain_update(password).chain_update(salt).finalize().to_vec(),
        Scheme::Ssha => {
            let mut v = password.to_vec();
            v.extend_from_slice(salt);
            sha1raw::digest(&v).to_vec()
        }
        _ => Md5::new().chain_update(password).chain_update(salt).finalize().to_vec(),
    }
}

/// Checks `password` against a stored `{SCHEME}data` (or bare data in `default_scheme`).
/// `Ok(false)` is a mismatch; errors are configuration problems (unknown scheme, malformed
/// data) for the log, which never includes the data.
pub fn verify(stored: &str, password: &[u8], default_scheme: &str) -> Result<bool, PasswordError> {
    let (name, data) = split_stored(stored, default_scheme);
    let (scheme, enc) = parse_scheme(name)?;
    let bad = || PasswordError::Malformed(scheme.name().into());
    Ok(match scheme {
        Scheme::Plain => ct_eq(data.as_bytes(), password),
        Scheme::Sha512Crypt | Scheme::Sha256Crypt | Scheme::BlfCrypt | Scheme::Md5Crypt | Scheme::Crypt => {
            crypt_verify(scheme, data, password)?
        }
        Scheme::Argon2id | Scheme::Argon2i => {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            let parsed = PasswordHash::new(data).map_err(|_| bad())?;
            let want = if scheme == Scheme::Argon2id { "argon2id" } else { "argon2i" };
            if parsed.algorithm.as_str() != want {
                return Err(bad());
            }
            argon2::Argon2::default().verify_password(password, &parsed).is_ok()
        }
        Scheme::CramMd5 => {
            let ctx = decode(data, enc.or(Some(Encoding::Hex)), 32, scheme)?;
            ct_eq(&ctx, &cram_md5_context(password))
        }
        Scheme::ScramSha256 => {
            let (iter, salt, stored_key, _server) = parse_scram(data).ok_or_else(bad)?;
            let (sk, _) = scram_keys(password, &salt, iter);
            ct_eq(&sk, &stored_key)
        }
        Scheme::Sha256 => ct_eq(&decode(data, enc, 32, scheme)?, &Sha256::digest(password)),
        Scheme::Sha512 => ct_eq(&decode(data, enc, 64, scheme)?, &Sha512::digest(password)),
        Scheme::PlainMd5 | Scheme::LdapMd5 => ct_eq(&decode(data, enc, 16, scheme)?, &Md5::digest(password)),
        Scheme::Sha1 => ct_eq(&decode(data, enc, 20, scheme)?, &sha1raw::digest(password)),
        Scheme::Ssha256 | Scheme::Ssha512 | Scheme::Smd5 | Scheme::Ssha => {
            let len = match scheme {
                Scheme::Ssha256 => 32,
                Scheme::Ssha512 => 64,
                Scheme::Ssha => 20,
                _ => 16,
            };
            let raw = match enc {
                Some(e) => decode(data, Some(e), usize::MAX / 4, scheme)?,
                None => B64.decode(data.trim()).map_err(|_| bad())?,
            };
            if raw.len() <= len {
                return Err(bad());
            }
            let (digest, salt) = raw.split_at(len);
            ct_eq(digest, &salted_digest(scheme, password, salt))
        }
    })
}

/// What a challenge-response mechanism can use from a stored password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// The password itself (`PLAIN`): any mechanism works.
    Plaintext(Vec<u8>),
    /// Dovecot's CRAM-MD5 context: the CRAM-MD5 mechanism works.
    CramMd5([u8; 32]),
    /// A one-way hash: only PLAIN and LOGIN can be checked against it.
    HashOnly,
}

/// The credentials a stored password offers to challenge-response mechanisms.
pub fn credentials(stored: &str, default_scheme: &str) -> Result<Credentials, PasswordError> {
    let (name, data) = split_stored(stored, default_scheme);
    let (scheme, enc) = parse_scheme(name)?;
    Ok(match scheme {
        Scheme::Plain => Credentials::Plaintext(data.as_bytes().to_vec()),
        Scheme::CramMd5 => {
            let v = decode(data, enc.or(Some(Encoding::Hex)), 32, scheme)?;
            Credentials::CramMd5(v.try_into().map_err(|_| PasswordError::Malformed("CRAM-MD5".into()))?)
        }
        _ => Credentials::HashOnly,
    })
}

/// Dovecot's CRAM-MD5 context for a password: the MD5 states after the HMAC outer and inner
/// padded key blocks, each as four little-endian words, outer first.
pub fn cram_md5_context(password: &[u8]) -> [u8; 32] {
    let key: Vec<u8> = if password.len() > 64 { Md5::digest(password).to_vec() } else { password.to_vec() };
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, b) in key.iter().enumerate() {
        ipad[i] ^= b;
        opad[i] ^= b;
    }
    let mut inner = md5raw::INIT;
    md5raw::compress(&mut inner, &ipad);
    let mut outer = md5raw::INIT;
    md5raw::compress(&mut outer, &opad);
    let mut out = [0u8; 32];
    for (i, w) in outer.iter().chain(inner.iter()).enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// HMAC-MD5(password, challenge) from a CRAM-MD5 context: the digest a CRAM-MD5 client
/// sends (in hex) after its user name.
pub fn cram_md5_digest(context: &[u8; 32], challenge: &[u8]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes(context[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let outer = [word(0), word(1), word(2), word(3)];
    let inner = [word(4), word(5), word(6), word(7)];
    let ih = md5raw::finish(inner, 64, challenge);
    md5raw::finish(outer, 64, &ih)
}

// ---- crypt(3) family ----

fn crypt_verify(scheme: Scheme, data: &str, password: &[u8]) -> Result<bool, PasswordError> {
    let name = scheme.name();
    let bad = || PasswordError::Malformed(name.into());
    let computed = if data.starts_with("$6$") && matches!(scheme, Scheme::Sha512Crypt | Scheme::Crypt) {
        let (rounds, salt) = sha_crypt_params(data).ok_or_else(bad)?;
        sha_crypt_hash(true, password, salt, rounds)?
    } else if data.starts_with("$5$") && matches!(scheme, Scheme::Sha256Crypt | Scheme::Crypt) {
        let (rounds, salt) = sha_crypt_params(data).ok_or_else(bad)?;
        sha_crypt_hash(false, password, salt, rounds)?
    } else if data.starts_with("$2") && matches!(scheme, Scheme::BlfCrypt | Scheme::Crypt) {
        return bcrypt::verify(password, data).map_err(|_| bad());
    } else if data.starts_with("$1$") && matches!(scheme, Scheme::Md5Crypt | Scheme::Crypt) {
        let salt = data[3..].split('$').next().unwrap_or("");
        md5_crypt(password, salt.as_bytes())
    } else if scheme == Scheme::Crypt && data.len() == 13 {
        return Err(PasswordError::Unsupported("CRYPT (traditional DES)".into()));
    } else {
        return Err(bad());
    };
    Ok(ct_eq(computed.as_bytes(), data.as_bytes()))
}

/// `$6$[rounds=N$]salt$hash` -> (rounds if given, salt).
fn sha_crypt_params(data: &str) -> Option<(Option<u32>, &str)> {
    let rest = &data[3..];
    let (rounds, rest) = match rest.strip_prefix("rounds=") {
        Some(r) => {
            let (n, rest) = r.split_once('$')?;
            (Some(n.parse::<u64>().ok()?.clamp(1000, 999_999_999) as u32), rest)
        }
        None => (None, rest),
    };
    let salt = rest.split('$').next()?;
    Some((rounds, salt))
}

/// The full crypt(3) string for SHA-512 (`sha512`) or SHA-256 crypt.
fn sha_crypt_hash(sha512: bool, password: &[u8], salt: &str, rounds: Option<u32>) -> Result<String, PasswordError> {
    let salt: String = salt.chars().take(16).collect();
    let r = rounds.unwrap_or(sha_crypt::ROUNDS_DEFAULT as u32) as usize;
    let (tag, b64) = if sha512 {
        let p = sha_crypt::Sha512Params::new(r).map_err(|_| PasswordError::Malformed("SHA512-CRYPT".into()))?;
        ("6", sha_crypt::sha512_crypt_b64(password, salt.as_bytes(), &p))
    } else {
        let p = sha_crypt::Sha256Params::new(r).map_err(|_| PasswordError::Malformed("SHA256-CRYPT".into()))?;
        ("5", sha_crypt::sha256_crypt_b64(password, salt.as_bytes(), &p))
    };
    let b64 = b64.map_err(|_| PasswordError::Malformed("SHA-CRYPT".into()))?;
    Ok(match rounds {
        Some(r) => format!("${tag}$rounds={r}${salt}${b64}"),
        None => format!("${tag}${salt}${b64}"),
    })
}

/// MD5-crypt (`$1$`, Poul-Henning Kamp's algorithm as in glibc).
fn md5_crypt(password: &[u8], salt: &[u8]) -> String {
    let salt = &salt[..salt.len().min(8)];
    let alt = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();
    let mut ctx = Md5::new().chain_update(password).chain_update(b"$1$").chain_update(salt);
    let mut n = password.len();
    while n > 0 {
        ctx.update(&alt[..n.min(16)]);
        n = n.saturating_sub(16);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for i in 0..1000 {
        let mut c = Md5::new();
        if i & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if i % 3 != 0 {
            c.update(salt);
        }
        if i % 7 != 0 {
            c.update(password);
        }
        if i & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize();
    }
    let mut out = format!("$1${}$", String::from_utf8_lossy(salt));
    let mut to64 = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(CRYPT64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let f = |i: usize| fin[i] as u32;
    to64((f(0) << 16) | (f(6) << 8) | f(12), 4);
    to64((f(1) << 16) | (f(7) << 8) | f(13), 4);
    to64((f(2) << 16) | (f(8) << 8) | f(14), 4);
    to64((f(3) << 16) | (f(9) << 8) | f(15), 4);
    to64((f(4) << 16) | (f(10) << 8) | f(5), 4);
    to64(f(11), 2);
    out
}

fn argon2_hash(scheme: Scheme, password: &[u8]) -> Result<String, PasswordError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let (alg, m, t) = if scheme == Scheme::Argon2id {
        (argon2::Algorithm::Argon2id, 65536, 3)
    } else {
        (argon2::Algorithm::Argon2i, 32768, 4)
    };
    let params = argon2::Params::new(m, t, 1, None).map_err(|_| PasswordError::Malformed(scheme.name().into()))?;
    let hasher = argon2::Argon2::new(alg, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(&random(16)?).map_err(|_| PasswordError::Random)?;
    hasher
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Malformed(scheme.name().into()))
}

// ---- SCRAM-SHA-256 ----

type HmacSha256 = Hmac<Sha256>;

fn hmac256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (RFC 5802 Hi()).
pub fn scram_salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac256(password, &first);
    let mut out = u;
    for _ in 1..iterations.max(1) {
        u = hmac256(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

/// (StoredKey, ServerKey) for SCRAM-SHA-256.
pub fn scram_keys(password: &[u8], salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let salted = scram_salted_password(password, salt, iterations);
    let client_key = hmac256(&salted, b"Client Key");
    let stored: [u8; 32] = Sha256::digest(client_key).into();
    (stored, hmac256(&salted, b"Server Key"))
}

/// (iterations, salt, StoredKey, ServerKey).
pub type ScramData = (u32, Vec<u8>, Vec<u8>, Vec<u8>);

/// Parses Dovecot's SCRAM data: `iterations,salt,StoredKey,ServerKey`.
pub fn parse_scram(data: &str) -> Option<ScramData> {
    let mut it = data.split(',');
    let iter: u32 = it.next()?.parse().ok()?;
    if !(1..=10_000_000).contains(&iter) {
        return None;
    }
    let salt = B64.decode(it.next()?).ok()?;
    let stored = B64.decode(it.next()?).ok()?;
    let server = B64.decode(it.next()?).ok()?;
    (it.next().is_none() && stored.len() == 32 && server.len() == 32).then_some((iter, salt, stored, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values made by Debian's `doveadm pw -p secret` (Dovecot 2.3.19).
    const DOVEADM: &[&str] = &[
        "{SHA512-CRYPT}$6$IYMgQPOv/ZD2m0HS$O.CGSO.iHTOic7CJLJh0vnw6/wYmrZUuwtBhNWD.Y8ktZ3eilbW1PZI347/a001hNLKw9UxBt9ppNJdGER9Rc.",
        "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56",
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$XgjxJ/DchZUsUngFk0yMZg$sABPoR+Jd08em30s6jS5SJrdnGGmvtvc5dAkSGtRdn0",
        "{BLF-CRYPT}$2y$05$gavBPTEzuVqwTtoSW7DBE.ao7Seq2RAISq5l7DMJVfi.8YQWcoF6u",
        "{MD5-CRYPT}$1$pEVj.BSu$FsFDTdHz9ETV/L.0uJnLK/",
        "{CRYPT}$2y$05$L7XXTF8gE9xRwFusCcqOxuFC6xgMNJ6cVbAxbedT4mK3zRJem1TgK",
        "{SSHA512}t67xpoZQW9ZDNVnU7RdFr04bM7gEs4PTrK0xZfrqSquBaMGmp8fGbI0bVMWDbtzT+SYhb06sw0bFKNB10HJTpXKdUgc=",
        "{SHA256}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=",
        "{PLAIN}secret",
        "{SSHA}2iJB1lH4nW1uiIEwkyI3fSrJT/feHxL2",
        "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{SHA1}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69",
        "{SCRAM-SHA-256}4096,JkkJXoqB0AAbyXb3Tu/wEQ==,Xb2DxlW2OCxEi7GPYLw9gYwR8+s+fCRng/nA1KOk6LI=,Bz+2nEJ0hzOHHtqqEcJpDvYumBmZgGHR6ses+ZkQ96k=",
    ];

    #[test]
    fn doveadm_hashes_verify() {
        for h in DOVEADM {
            assert_eq!(verify(h, b"secret", "CRYPT"), Ok(true), "{h}");
            assert_eq!(verify(h, b"Secret", "CRYPT"), Ok(false), "{h}");
            assert_eq!(verify(h, b"", "CRYPT"), Ok(false), "{h}");
        }
        // No prefix: the default scheme.
        assert_eq!(verify("$1$pEVj.BSu$FsFDTdHz9ETV/L.0uJnLK/", b"secret", "CRYPT"), Ok(true));
        assert_eq!(verify("secret", b"secret", "PLAIN"), Ok(true));
        assert_eq!(verify("secret", b"secret", "CRYPT"), Err(PasswordError::Malformed("CRYPT".into())));
    }

    #[test]
    fn generated_hashes_verify() {
        for s in SCHEMES {
            let h = generate(s, b"p\xc3\xa4ss word").unwrap();
            assert!(h.starts_with(&format!("{{{s}}}")), "{h}");
            assert_eq!(verify(&h, "päss word".as_bytes(), "CRYPT"), Ok(true), "{h}");
            assert_eq!(verify(&h, b"pass word", "CRYPT"), Ok(false), "{h}");
        }
        assert!(generate("SHA512-CRYPT", b"x").unwrap().starts_with("{SHA512-CRYPT}$6$"));
        assert!(generate("BLF-CRYPT", b"x").unwrap().starts_with("{BLF-CRYPT}$2y$05$"));
        assert_eq!(generate("PLAIN-MD5", b"secret").unwrap(), "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69");
        assert_eq!(generate("SHA256.HEX", b"").unwrap().len(), "{SHA256.HEX}".len() + 64);
        assert_eq!(
            generate("CRAM-MD5", b"secret").unwrap(),
            "{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56"
        );
    }

    #[test]
    fn sha_crypt_rounds_and_glibc_vectors() {
        // From Drepper's SHA-crypt specification (the salt is cut at 16 characters).
        for (stored, pw) in [
            (
                "{SHA512-CRYPT}$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
                "Hello world!",
            ),
            (
                "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.",
                "Hello world!",
            ),
            (
                "{SHA256-CRYPT}$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
                "Hello world!",
            ),
        ] {
            assert_eq!(verify(stored, pw.as_bytes(), "CRYPT"), Ok(true), "{stored}");
        }
    }

    #[test]
    fn cram_md5_digest_is_hmac() {
        // RFC 2195's example: user tim, password tanstaaftanstaaf.
        let ctx = cram_md5_context(b"tanstaaftanstaaf");
        let d = cram_md5_digest(&ctx, b"<1896.697170952@postoffice.reston.mci.net>");
        assert_eq!(encode(&d, Encoding::Hex), "b913a602c7eda7a495b4e6e7334d3890");
        assert_eq!(
            credentials("{CRAM-MD5}cd3ba7deaad6e5ca23448ba42e379747a9e0f7f1fbc00c8a81bbaac395731b56", "CRYPT").unwrap(),
            Credentials::CramMd5(cram_md5_context(b"secret"))
        );
        assert_eq!(credentials("{PLAIN}x", "CRYPT").unwrap(), Credentials::Plaintext(b"x".to_vec()));
        assert_eq!(credentials("$6$a$b", "CRYPT").unwrap(), Credentials::HashOnly);
    }

    #[test]
    fn errors_name_no_secrets() {
        assert!(matches!(verify("{DIGEST-MD5}abc", b"x", "CRYPT"), Err(PasswordError::Unsupported(_))));
        assert!(matches!(verify("{NOPE}abc", b"x", "CRYPT"), Err(PasswordError::UnknownScheme(_))));
        assert!(matches!(verify("{CRYPT}abcdefghijklm", b"x", "CRYPT"), Err(PasswordError::Unsupported(_))));
        let e = verify("{SHA512-CRYPT}$6$rounds=abc$s3cr3thash", b"x", "CRYPT").unwrap_err().to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(matches!(
            verify("{ARGON2ID}$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA", b"x", "CRYPT"),
            Err(PasswordError::Malformed(_))
        ));
        // A password beginning with "{" in a PLAIN default is data, not a scheme.
        assert_eq!(verify("{not a scheme", b"{not a scheme", "PLAIN"), Ok(true));
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd") && !ct_eq(b"abc", b"ab"));
    }
}

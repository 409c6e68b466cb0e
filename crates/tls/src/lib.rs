//! rpost-tls - TLS for rpost daemons: rustls configurations from Postfix/Dovecot parameters, self-signed certificates
//!
//! # SUMMARY
//! `use rpost_tls::{Identity, server_config, client_config, ClientLevel};` — the one place
//! where rpost daemons turn certificate parameters into rustls configurations, run
//! handshakes with a time limit, and describe the result in Postfix's log words.
//!
//! # DESCRIPTION
//! * [`Identity`]: a certificate chain and its private key, read from PEM files as Postfix
//!   names them (`smtpd_tls_cert_file` + `smtpd_tls_key_file`, the key may sit in the cert
//!   file; or `smtpd_tls_chain_files`, each file a key followed by its chain), or as Dovecot
//!   writes them (`ssl_cert = </path`: `<` means "read this file", without it the value is
//!   the PEM text itself). A key that does not match its certificate is an error at start-up,
//!   not at the first handshake.
//! * [`server_config`]: TLS 1.2 and 1.3, no ALPN, no client certificates. [`client_config`]
//!   for the SMTP/LMTP client by Postfix security level ([`ClientLevel`]): `may` and
//!   `encrypt` accept any server certificate (Postfix does not verify for opportunistic or
//!   mandatory-unauthenticated TLS; the handshake signatures are still checked), `verify` and
//!   `secure` verify the chain and name against `smtp_tls_CAfile`, else the system bundle
//!   [`SYSTEM_CA_FILE`] (no bundle there: the level cannot be met and delivery defers).
//! * [`self_signed`] / [`ensure_default_identity`]: the certificate `rmaster check`
//!   generates when none is configured: `$config_directory/tls/rpost.pem` (certificate, 0644)
//!   and `$config_directory/tls/rpost.key` (PKCS#8 ECDSA P-256 key, 0600), for `myhostname`
//!   and `localhost`, written through a temporary file and rename so a crash leaves either
//!   nothing or a complete pair. smtpd uses that pair when its own certificate parameters are
//!   empty.
//! * [`accept`] / [`connect`]: handshakes bounded by a timeout (`smtpd_starttls_timeout`,
//!   `smtp_starttls_timeout`); [`TlsInfo`] renders `TLSv1.3 with cipher
//!   TLS_AES_256_GCM_SHA384 (256/256 bits)` with OpenSSL's cipher names, as Postfix logs and
//!   writes it into Received: headers.
//!
//! Certificates are read once when a daemon starts. `rmaster reload` starts new daemon
//! processes for new clients, so replaced certificate files take effect at reload.
//!
//! # SECURITY
//! Key files are read before privileges are dropped, so they may be root-only. The
//! generated key is created 0600 and never logged. Only TLS 1.2 and 1.3 with rustls' default
//! (AEAD, forward-secret) suites are offered. Opportunistic TLS without verification stops
//! passive eavesdropping only, exactly as Postfix's `may`/`encrypt`; use `verify`/`secure`
//! against active attackers.
//!
//! # CONFIGURATION
//! Read by the callers and passed in: smtpd_tls_cert_file, smtpd_tls_key_file,
//! smtpd_tls_chain_files, smtpd_starttls_timeout, smtp_tls_security_level,
//! lmtp_tls_security_level, smtp_tls_CAfile, smtp_starttls_timeout, ssl_cert, ssl_key,
//! config_directory, myhostname.
//!
//! # STANDARDS
//! RFC 8446 (TLS 1.3), RFC 5246 (TLS 1.2), RFC 7468 (PEM), RFC 3207 (STARTTLS, used by
//! the callers), RFC 8314 (implicit TLS for submission).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

pub use rustls;
pub use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

/// The system CA bundle used for `verify`/`secure` when no CA file is configured
/// (Debian's ca-certificates).
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Largest certificate or key file read (a PEM chain is a few KB; this bounds a mistake
/// such as pointing at a log file).
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// What went wrong with certificates, keys or a handshake.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{0}: file too large for a PEM certificate or key")]
    TooLarge(PathBuf),
    #[error("{0}: no PEM certificate found")]
    NoCertificate(String),
    #[error("{0}: no PEM private key found")]
    NoKey(String),
    #[error("{what}: bad PEM data: {detail}")]
    Pem { what: String, detail: String },
    #[error("certificate and private key do not match or are unusable: {0}")]
    Config(rustls::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("unknown TLS security level \"{0}\" (none, may, encrypt, dane, verify, secure)")]
    Level(String),
    #[error("no CA certificates for level {level}: {detail}")]
    NoTrustAnchors { level: &'static str, detail: String },
    #[error("TLS handshake timed out")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("bad server name for TLS: {0}")]
    ServerName(String),
}

/// A certificate chain (leaf first) and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|source| TlsError::Read { path: path.into(), source })?;
    let mut buf = Vec::new();
    f.take(MAX_PEM_FILE + 1).read_to_end(&mut buf).map_err(|source| TlsError::Read { path: path.into(), source })?;
    if buf.len() as u64 > MAX_PEM_FILE {
        return Err(TlsError::TooLarge(path.into()));
    }
    Ok(buf)
}

fn certs_in(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for c in CertificateDer::pem_slice_iter(pem) {
        out.push(c.map_err(|e| TlsError::Pem { what: what.into(), detail: e.to_string() })?);
    }
    Ok(out)
}

fn key_in(pem: &[u8], what: &str) -> Result<Option<PrivateKeyDer<'static>>, TlsError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(k) => Ok(Some(k)),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => Ok(None),
        Err(e) => Err(TlsError::Pem { what: what.into(), detail: e.to_string() }),
    }
}

impl Identity {
    /// Postfix's `*_tls_cert_file` + `*_tls_key_file`: the key file may be the cert file.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let cert_pem = read_limited(cert)?;
        let chain = certs_in(&cert_pem, &cert.display().to_string())?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.display().to_string()));
        }
        let key_pem = if key == cert { cert_pem } else { read_limited(key)? };
        let key =
            key_in(&key_pem, &key.display().to_string())?.ok_or_else(|| TlsError::NoKey(key.display().to_string()))?;
        Identity { chain, key }.checked()
    }

    /// Postfix's `*_tls_chain_files`: each file holds a private key and its certificate
    /// chain. rustls serves one identity, so the first file is used; further files (an
    /// RSA + ECDSA pair in Postfix) are checked but not served.
    pub fn from_chain_files(files: &[PathBuf]) -> Result<Identity, TlsError> {
        let mut first = None;
        for f in files {
            let pem = read_limited(f)?;
            let what = f.display().to_string();
            let key = key_in(&pem, &what)?.ok_or_else(|| TlsError::NoKey(what.clone()))?;
            let chain = certs_in(&pem, &what)?;
            if chain.is_empty() {
                return Err(TlsError::NoCertificate(what));
            }
            let id = Identity { chain, key }.checked()?;
            if first.is_none() {
                first = Some(id);
            } else {
                tracing::warn!("{what}: only the first of smtpd_tls_chain_files is served");
            }
        }
        first.ok_or_else(|| TlsError::NoCertificate("smtpd_tls_chain_files".into()))
    }

    /// Dovecot's `ssl_cert`/`ssl_key` values: `<path` reads the file, anything else is the
    /// PEM text itself.
    pub fn from_dovecot(ssl_cert: &str, ssl_key: &str) -> Result<Identity, TlsError> {
        let (cert_pem, cert_what) = dovecot_value(ssl_cert, "ssl_cert")?;
        let (key_pem, key_what) = dovecot_value(ssl_key, "ssl_key")?;
        let chain = certs_in(&cert_pem, &cert_what)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert_what));
        }
        let key = key_in(&key_pem, &key_what)?.ok_or(TlsError::NoKey(key_what))?;
        Identity { chain, key }.checked()
    }

    /// Builds a server configuration once, so a mismatched key fails now.
    fn checked(self) -> Result<Identity, TlsError> {
        server_config(&self)?;
        Ok(self)
    }
}

/// A Dovecot setting value: `<path` → the file's bytes; else the value.
fn dovecot_value(value: &str, name: &str) -> Result<(Vec<u8>, String), TlsError> {
    let v = value.trim();
    match v.strip_prefix('<') {
        Some(path) => {
            let path = Path::new(path.trim());
            Ok((read_limited(path)?, path.display().to_string()))
        }
        None => Ok((v.as_bytes().to_vec(), name.to_string())),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side: TLS 1.2 and 1.3, no client certificates, no ALPN.
pub fn server_config(id: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(TlsError::Config)?;
    Ok(Arc::new(cfg))
}

/// Postfix's SMTP/LMTP client TLS security levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLevel {
    /// No TLS.
    None,
    /// Opportunistic: STARTTLS when offered, no certificate check, plaintext if the
    /// handshake fails (Postfix retries without TLS).
    May,
    /// Mandatory TLS, no certificate check.
    Encrypt,
    /// Mandatory TLS with a verified chain (Postfix's name check is looser; rustls checks
    /// the next-hop name).
    Verify,
    /// As verify (rpost has no separate "secure" name matching rules yet).
    Secure,
}

impl ClientLevel {
    /// Parses a level; `""` is `none`, as Postfix's default. `dane` without DNSSEC
    /// TLSA lookups is opportunistic TLS, which is what Postfix falls back to when the
    /// TLSA records are not DNSSEC-validated.
    pub fn parse(s: &str) -> Result<ClientLevel, TlsError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(ClientLevel::None),
            "may" | "dane" => Ok(ClientLevel::May),
            "encrypt" => Ok(ClientLevel::Encrypt),
            "verify" => Ok(ClientLevel::Verify),
            "secure" => Ok(ClientLevel::Secure),
            _ => Err(TlsError::Level(s.to_string())),
        }
    }

    /// TLS is required: no plaintext fallback.
    pub fn mandatory(self) -> bool {
        matches!(self, ClientLevel::Encrypt | ClientLevel::Verify | ClientLevel::Secure)
    }

    /// The peer certificate is verified.
    pub fn verifies(self) -> bool {
        matches!(self, ClientLevel::Verify | ClientLevel::Secure)
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientLevel::None => "none",
            ClientLevel::May => "may",
            ClientLevel::Encrypt => "encrypt",
            ClientLevel::Verify => "verify",
            ClientLevel::Secure => "secure",
        }
    }
}

/// Accepts any certificate, still checking that the server holds its key (handshake
/// signatures), as Postfix does below `verify`.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The client side for a level (`None` gives `Ok(None)`). `ca_file`: `smtp_tls_CAfile`,
/// else [`SYSTEM_CA_FILE`], used only by verify/secure.
pub fn client_config(level: ClientLevel, ca_file: Option<&Path>) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let cfg = match level {
        ClientLevel::None => return Ok(None),
        ClientLevel::May | ClientLevel::Encrypt => {
            let algs = provider().signature_verification_algorithms;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(algs))).with_no_client_auth()
        }
        ClientLevel::Verify | ClientLevel::Secure => {
            let path = ca_file.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(SYSTEM_CA_FILE));
            let pem = read_limited_ca(&path)
                .map_err(|e| TlsError::NoTrustAnchors { level: level.name(), detail: e.to_string() })?;
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(certs_in(&pem, &path.display().to_string())?);
            if added == 0 {
                return Err(TlsError::NoTrustAnchors {
                    level: level.name(),
                    detail: format!("{}: no usable CA certificate", path.display()),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(cfg)))
}

/// CA bundles are larger than a server chain (Debian's is ~200 KB); allow 16 MB.
fn read_limited_ca(path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|source| TlsError::Read { path: path.into(), source })?;
    let mut buf = Vec::new();
    f.take(16 * MAX_PEM_FILE).read_to_end(&mut buf).map_err(|source| TlsError::Read { path: path.into(), source })?;
    Ok(buf)
}

/// A freshly generated self-signed certificate and key, both PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for SelfSigned {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// Generates a self-signed ECDSA P-256 certificate for `names` (e.g. myhostname, localhost).
pub fn self_signed(names: &[String]) -> Result<SelfSigned, TlsError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, names.first().cloned().unwrap_or_else(|| "localhost".into()));
    params.distinguished_name = dn;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(SelfSigned { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Where the generated certificate lives: `$config_directory/tls/rpost.pem` and `.key`.
pub fn default_identity_paths(config_directory: &Path) -> (PathBuf, PathBuf) {
    let dir = config_directory.join("tls");
    (dir.join("rpost.pem"), dir.join("rpost.key"))
}

/// Creates the default self-signed pair unless both files exist. Returns the paths and
/// whether they were created now.
pub fn ensure_default_identity(config_directory: &Path, hostname: &str) -> Result<(PathBuf, PathBuf, bool), TlsError> {
    let (cert, key) = default_identity_paths(config_directory);
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    let dir = config_directory.join("tls");
    std::fs::create_dir_all(&dir).map_err(|source| TlsError::Write { path: dir.clone(), source })?;
    let mut names = vec![hostname.to_string()];
    if hostname != "localhost" {
        names.push("localhost".into());
    }
    let ss = self_signed(&names)?;
    // Key first: a certificate without its key would be taken as complete by a reader.
    write_atomic(&key, ss.key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert, ss.cert_pem.as_bytes(), 0o644)?;
    Ok((cert, key, true))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let err = |source| TlsError::Write { path: path.into(), source };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(err)?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)
}

/// Protocol and cipher of an established connection, in Postfix's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    /// OpenSSL's name: `TLS_AES_256_GCM_SHA384`, `ECDHE-RSA-AES256-GCM-SHA384`.
    pub cipher: String,
    pub bits: u16,
}

impl TlsInfo {
    pub fn of(conn: &rustls::CommonState) -> TlsInfo {
        let protocol = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(v) => format!("{v:?}"),
            None => "unknown".to_string(),
        };
        let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
        let rustls_name = suite.and_then(|s| s.as_str()).unwrap_or("unknown");
        let (cipher, bits) = openssl_name(rustls_name);
        TlsInfo { protocol, cipher, bits }
    }

    /// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`
    pub fn summary(&self) -> String {
        format!("{} with cipher {} ({}/{} bits)", self.protocol, self.cipher, self.bits, self.bits)
    }
}

/// rustls suite name → (OpenSSL name, symmetric key bits).
fn openssl_name(rustls_name: &str) -> (String, u16) {
    let bits = if rustls_name.contains("AES_128") { 128 } else { 256 };
    if let Some(rest) = rustls_name.strip_prefix("TLS13_") {
        return (format!("TLS_{rest}"), bits);
    }
    if let Some(rest) = rustls_name.strip_prefix("TLS_ECDHE_") {
        // ECDSA_WITH_AES_256_GCM_SHA384 → ECDHE-ECDSA-AES256-GCM-SHA384
        if let Some((auth, cipher)) = rest.split_once("_WITH_") {
            let cipher = cipher
                .replace("AES_256", "AES256")
                .replace("AES_128", "AES128")
                .replace("CHACHA20_POLY1305_SHA256", "CHACHA20_POLY1305")
                .replace('_', "-");
            return (format!("ECDHE-{auth}-{cipher}"), bits);
        }
    }
    (rustls_name.to_string(), bits)
}

/// Server handshake on an accepted stream (after STARTTLS's 220, or at once in wrapper mode).
pub async fn accept<S>(
    config: Arc<ServerConfig>,
    stream: S,
    timeout: Duration,
) -> Result<server::TlsStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(stream)).await {
        Err(_) => Err(TlsError::Timeout),
        Ok(Err(e)) => Err(TlsError::Handshake(e)),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Client handshake to `server_name` (a host name or an address literal).
pub async fn connect<S>(
    config: Arc<ClientConfig>,
    server_name: &str,
    stream: S,
    timeout: Duration,
) -> Result<client::TlsStream<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(server_name.trim_end_matches('.').to_string())
        .map_err(|_| TlsError::ServerName(server_name.to_string()))?;
    match tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, stream)).await {
        Err(_) => Err(TlsError::Timeout),
        Ok(Err(e)) => Err(TlsError::Handshake(e)),
        Ok(Ok(s)) => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A scratch directory removed on drop (no tempfile dev-dependency in this crate).
    struct Scratch(PathBuf);
    impl Scratch {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir() -> Scratch {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p =
            std::env::temp_dir().join(format!("rpost-tls-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn identity_in(dir: &Path) -> (PathBuf, PathBuf) {
        let (c, k, created) = ensure_default_identity(dir, "mail.example.test").unwrap();
        assert!(created);
        (c, k)
    }

    #[test]
    fn default_identity_is_created_once_with_a_private_key_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir();
        let (c, k) = identity_in(dir.path());
        assert_eq!(c, dir.path().join("tls/rpost.pem"));
        assert_eq!(std::fs::metadata(&k).unwrap().permissions().mode() & 0o777, 0o600);
        let before = std::fs::read(&c).unwrap();
        let (_, _, created) = ensure_default_identity(dir.path(), "mail.example.test").unwrap();
        assert!(!created);
        assert_eq!(std::fs::read(&c).unwrap(), before, "an existing certificate is kept");
        let id = Identity::from_files(&c, &k).unwrap();
        assert_eq!(id.chain.len(), 1);
    }

    #[test]
    fn key_in_the_cert_file_and_chain_files() {
        let dir = tempdir();
        let (c, k) = identity_in(dir.path());
        let both = dir.path().join("both.pem");
        let mut pem = std::fs::read(&k).unwrap();
        pem.extend(std::fs::read(&c).unwrap());
        std::fs::write(&both, &pem).unwrap();
        Identity::from_files(&both, &both).unwrap();
        Identity::from_chain_files(std::slice::from_ref(&both)).unwrap();
        // A chain file without a key is refused with its name.
        let e = Identity::from_chain_files(std::slice::from_ref(&c)).unwrap_err();
        assert!(matches!(e, TlsError::NoKey(ref w) if w.contains("rpost.pem")), "{e}");
    }

    #[test]
    fn dovecot_syntax_reads_files_or_inline_pem() {
        let dir = tempdir();
        let (c, k) = identity_in(dir.path());
        Identity::from_dovecot(&format!("<{}", c.display()), &format!(" < {}", k.display())).unwrap();
        let inline_cert = std::fs::read_to_string(&c).unwrap();
        let inline_key = std::fs::read_to_string(&k).unwrap();
        Identity::from_dovecot(&inline_cert, &inline_key).unwrap();
        let e = Identity::from_dovecot("</nonexistent/cert.pem", &inline_key).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn mismatched_key_garbage_and_missing_files_are_errors() {
        let dir = tempdir();
        let (c, _) = identity_in(dir.path());
        let other = self_signed(&["other.test".into()]).unwrap();
        let k2 = dir.path().join("other.key");
        std::fs::write(&k2, other.key_pem).unwrap();
        assert!(matches!(Identity::from_files(&c, &k2), Err(TlsError::Config(_))));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, b"this is not PEM\n").unwrap();
        assert!(matches!(Identity::from_files(&junk, &junk), Err(TlsError::NoCertificate(_))));
        assert!(matches!(Identity::from_files(&c, &c), Err(TlsError::NoKey(_))));
        assert!(matches!(Identity::from_files(&dir.path().join("nope"), &c), Err(TlsError::Read { .. })));
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; (MAX_PEM_FILE + 10) as usize]).unwrap();
        assert!(matches!(Identity::from_files(&big, &big), Err(TlsError::TooLarge(_))));
    }

    #[test]
    fn levels_parse_as_postfix() {
        assert_eq!(ClientLevel::parse("").unwrap(), ClientLevel::None);
        assert_eq!(ClientLevel::parse("MAY").unwrap(), ClientLevel::May);
        assert_eq!(ClientLevel::parse("dane").unwrap(), ClientLevel::May);
        assert!(ClientLevel::parse("encrypt").unwrap().mandatory());
        assert!(ClientLevel::parse("secure").unwrap().verifies());
        assert!(ClientLevel::parse("fingerprint").is_err());
        assert!(client_config(ClientLevel::None, None).unwrap().is_none());
        let e = client_config(ClientLevel::Verify, Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(matches!(e, TlsError::NoTrustAnchors { .. }));
    }

    #[test]
    fn cipher_names_are_openssl_names() {
        assert_eq!(openssl_name("TLS13_AES_256_GCM_SHA384"), ("TLS_AES_256_GCM_SHA384".into(), 256));
        assert_eq!(openssl_name("TLS13_AES_128_GCM_SHA256"), ("TLS_AES_128_GCM_SHA256".into(), 128));
        assert_eq!(openssl_name("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"), ("ECDHE-RSA-AES256-GCM-SHA384".into(), 256));
        assert_eq!(
            openssl_name("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
            ("ECDHE-ECDSA-CHACHA20-POLY1305".into(), 256)
        );
    }

    /// A full handshake over an in-memory pipe at each level, and a verify failure against a
    /// self-signed certificate that is not in the CA file, plus success when it is.
    #[tokio::test]
    async fn handshakes_by_level() {
        let dir = tempdir();
        let (c, k) = identity_in(dir.path());
        let server = server_config(&Identity::from_files(&c, &k).unwrap()).unwrap();
        let t = Duration::from_secs(30);
        for (level, ca, ok) in [
            (ClientLevel::May, None, true),
            (ClientLevel::Encrypt, None, true),
            (ClientLevel::Verify, Some(k.clone()), false), // the key file holds no CA
            (ClientLevel::Verify, Some(c.clone()), true),  // self-signed cert as its own CA
            (ClientLevel::Secure, Some(c.clone()), true),
        ] {
            let client = match client_config(level, ca.as_deref()) {
                Ok(c) => c.unwrap(),
                Err(TlsError::NoTrustAnchors { .. }) if !ok => continue,
                Err(e) => panic!("{level:?}: {e}"),
            };
            let (a, b) = tokio::io::duplex(64 * 1024);
            let srv = tokio::spawn({
                let server = server.clone();
                async move {
                    let mut s = accept(server, a, t).await?;
                    let info = TlsInfo::of(s.get_ref().1);
                    let mut buf = [0u8; 5];
                    s.read_exact(&mut buf).await.map_err(TlsError::Handshake)?;
                    assert_eq!(&buf, b"hello");
                    Ok::<_, TlsError>(info)
                }
            });
            let cl = connect(client, "mail.example.test", b, t).await;
            match cl {
                Ok(mut s) => {
                    assert!(ok, "{level:?} must fail");
                    s.write_all(b"hello").await.unwrap();
                    s.flush().await.unwrap();
                    let info = srv.await.unwrap().unwrap();
                    assert_eq!(info.protocol, "TLSv1.3");
                    assert!(info.summary().starts_with("TLSv1.3 with cipher TLS_"), "{}", info.summary());
                }
                Err(e) => {
                    assert!(!ok, "{level:?}: {e}");
                    srv.abort();
                }
            }
        }
    }

    #[tokio::test]
    async fn verify_rejects_an_unknown_issuer_and_wrong_name() {
        let dir = tempdir();
        let (c, k) = identity_in(dir.path());
        let server = server_config(&Identity::from_files(&c, &k).unwrap()).unwrap();
        let other = tempdir();
        let (other_ca, _) = identity_in(other.path());
        let t = Duration::from_secs(30);
        for (ca, name) in [(other_ca.clone(), "mail.example.test"), (c.clone(), "wrong.example.test")] {
            let client = client_config(ClientLevel::Verify, Some(&ca)).unwrap().unwrap();
            let (a, b) = tokio::io::duplex(64 * 1024);
            let srv = tokio::spawn(accept(server.clone(), a, t));
            assert!(connect(client, name, b, t).await.is_err(), "{name} against {}", ca.display());
            let _ = srv.await;
        }
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let dir = tempdir();
        let (c, k) = identity_in(dir.path());
        let server = server_config(&Identity::from_files(&c, &k).unwrap()).unwrap();
        let (a, _b) = tokio::io::duplex(1024);
        let r = accept(server, a, Duration::from_millis(50)).await;
        assert!(matches!(r, Err(TlsError::Timeout)));
    }
}

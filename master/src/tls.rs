//! The default TLS certificate: `rmaster check` and `rmaster start` create a self-signed
//! pair under `$config_directory/tls/` (rpost.pem 0644, rpost.key 0600, via rpost-tls) when
//! a service wants TLS and names no certificate, so a first start serves STARTTLS and
//! port 465 at once; smtpd falls back to that pair when its certificate parameters are
//! empty, pop3d and imapd when `ssl_cert` is. An existing pair is never replaced (an admin
//! may have put a real one there).

use std::path::PathBuf;

use rpost_config::Config;

/// Whether one service's parameters want TLS without naming a certificate.
fn wants_default_cert(config: &Config, svc: &rpost_config::Service) -> Result<bool, rpost_config::ConfigError> {
    let p = config.service_params(svc);
    Ok(match svc.command.as_str() {
        "smtpd" => {
            let level = p.get("smtpd_tls_security_level")?.to_ascii_lowercase();
            let tls = matches!(level.as_str(), "may" | "encrypt")
                || (level.is_empty() && p.get_bool("smtpd_use_tls")?)
                || p.get_bool("smtpd_tls_wrappermode")?;
            tls && p.get("smtpd_tls_cert_file")?.is_empty() && p.get_list("smtpd_tls_chain_files")?.is_empty()
        }
        // The mailbox side (imapd::login): Dovecot's ssl = yes|required without ssl_cert.
        "pop3d" | "imapd" => !p.get("ssl")?.eq_ignore_ascii_case("no") && p.get("ssl_cert")?.trim().is_empty(),
        _ => false,
    })
}

/// Creates the default pair if some service needs it. Returns the certificate path when it
/// was created now.
pub fn ensure_default_certificate(config: &Config) -> Result<Option<PathBuf>, String> {
    let mut needed = false;
    for svc in &config.master.services {
        if wants_default_cert(config, svc).map_err(|e| e.to_string())? {
            needed = true;
            break;
        }
    }
    if !needed {
        return Ok(None);
    }
    let dir = PathBuf::from(config.params.get("config_directory").map_err(|e| e.to_string())?);
    let host = config.params.get("myhostname").map_err(|e| e.to_string())?;
    match rpost_tls::ensure_default_identity(&dir, &host) {
        Ok((cert, _, true)) => Ok(Some(cert)),
        Ok(_) => Ok(None),
        Err(e) => Err(format!("cannot create the default TLS certificate: {e}")),
    }
}

//! TLS for SMTP with rustls: the system's trusted roots plus a profile's `ca_file`, and
//! certificate failures in plain words. There is no way to turn verification off.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Error, ErrorKind, Result};

/// The configurations built so far, by `ca_file`.
type Built = Vec<(Option<PathBuf>, Arc<ClientConfig>)>;

/// Built configurations, kept for the life of the process: the system's roots (about a
/// hundred and fifty certificates) are read from disk once, not once per delivery — a
/// flush sends many entries, a probe tries nine ways.
static BUILT: Mutex<Built> = Mutex::new(Vec::new());

/// The client configuration: system roots, plus `ca_file` when given.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    // A panic elsewhere cannot leave this list half-written: entries are pushed whole.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, config)) = built.iter().find(|(file, _)| file.as_deref() == ca_file) {
        return Ok(Arc::clone(config));
    }
    let config = build(ca_file)?;
    built.push((ca_file.map(Path::to_path_buf), Arc::clone(&config)));
    Ok(config)
}

fn build(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates only shrink the set; a server signed by none of the
    // rest fails verification with "unknown issuer", which says what to do.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for cert in ca_file_certificates(ca_file)? {
        roots.add(cert).map_err(|e| {
            Error::config(format!(
                "ca_file: {} holds a certificate rustls cannot use: {e}",
                ca_file.map_or_else(String::new, |p| p.display().to_string())
            ))
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Every root certificate envoi trusts for a profile: the system's, then `ca_file`'s.
/// For a client other than the SMTP one (the OAuth2 token endpoint's), so that both
/// trust exactly the same authorities.
pub(crate) fn trusted_roots(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>> {
    let mut roots = rustls_native_certs::load_native_certs().certs;
    roots.extend(ca_file_certificates(ca_file)?);
    Ok(roots)
}

/// The certificates of `ca_file` (none without one); 78 when it cannot be read or holds
/// no PEM certificate.
fn ca_file_certificates(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>> {
    let mut certs = Vec::new();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Error::config(format!("ca_file: cannot read {}: {e}", path.display())))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                Error::config(format!(
                    "ca_file: {} is not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            certs.push(cert);
        }
        if certs.is_empty() {
            return Err(Error::config(format!(
                "ca_file: {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    Ok(certs)
}

/// The name the server's certificate must carry: the profile's host.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| Error::config(format!("host {host:?} is not a valid name for TLS")))
}

/// A certificate failure in words, with what to do where there is something.
pub(crate) fn describe_certificate_error(reason: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match reason {
        C::UnknownIssuer => {
            "unknown issuer (not signed by a trusted authority; see ca_file)".into()
        }
        C::Expired | C::ExpiredContext { .. } => "expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "issued for another host name".into()
        }
        C::Revoked => "revoked".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_roots_are_read_once_per_ca_file() {
        let first = client_config(None).unwrap();
        assert!(Arc::ptr_eq(&first, &client_config(None).unwrap()));
        let missing = Path::new("/nonexistent/ca.pem");
        assert!(
            client_config(Some(missing)).is_err(),
            "a bad ca_file is not cached"
        );
        assert!(client_config(Some(missing)).is_err());
    }
}

//! TLS for SMTP with rustls: the system's trusted roots plus a profile's `ca_file`, and
//! certificate failures in plain words. There is no way to turn verification off.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Error, ErrorKind, Result};

/// The client configuration: system roots, plus `ca_file` when given.
pub(crate) fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates only shrink the set; a server signed by none of the
    // rest fails verification with "unknown issuer", which says what to do.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Error::config(format!("ca_file: cannot read {}: {e}", path.display())))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                Error::config(format!(
                    "ca_file: {} is not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            roots.add(cert).map_err(|e| {
                Error::config(format!(
                    "ca_file: {} holds a certificate rustls cannot use: {e}",
                    path.display()
                ))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::config(format!(
                "ca_file: {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
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

//! What `envoi check` reports of a server: connect, secure, log in, EHLO, QUIT, and
//! the certificate as a person reads it.

use crate::deliver::retry::Session;
use crate::error::Result;

use super::session::SmtpSession;
use super::settings::{SmtpSettings, tls_config};

/// What `envoi check` learned of a server: everything short of sending mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// `host:port` as configured.
    pub server: String,
    /// The address connected to: the server's, or with a proxy the proxy's.
    pub address: Option<String>,
    /// The proxy the connection went through (`socks5h://host:port`, never its login).
    pub proxy: Option<String>,
    /// TLS version and cipher suite; `None` without TLS.
    pub tls: Option<(String, String)>,
    /// The EHLO keywords, as the server wrote them.
    pub extensions: Vec<String>,
    /// The largest message it takes (SIZE).
    pub size: Option<u64>,
    /// Whether a login was made (and worked: a refused one is an error).
    pub logged_in: bool,
    /// The server's certificate, verified; `None` without TLS.
    pub certificate: Option<CertificateReport>,
}

/// The parts of a server certificate a person checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateReport {
    /// Who it was issued to.
    pub subject: String,
    /// Who issued it.
    pub issuer: String,
    /// The names it is valid for (subjectAltName).
    pub names: Vec<String>,
    /// When it expires (seconds since the epoch).
    pub not_after: i64,
    /// The same, as the certificate writes it.
    pub expires: String,
    /// Its SHA-256, as `openssl x509 -noout -fingerprint -sha256` prints it (what
    /// `tls_fingerprint` takes).
    pub sha256: String,
    /// Trusted because the profile pins it (`tls_fingerprint`), not through a CA.
    pub pinned: bool,
}

impl CertificateReport {
    /// Reads a DER certificate; `None` if it cannot be parsed (it was verified all the
    /// same: rustls parsed it).
    fn parse(der: &[u8]) -> Option<CertificateReport> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        GeneralName::IPAddress(ip) => ip_text(ip),
                        other => Some(other.to_string()),
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Some(CertificateReport {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            not_after: cert.validity().not_after.timestamp(),
            expires: cert.validity().not_after.to_string(),
            sha256: crate::profile::Fingerprint::of(der).to_string(),
            pinned: false,
        })
    }
}

/// Connects, secures and logs in as `settings` say, reports what the server offers, and
/// says QUIT: no mail is sent.
pub(crate) fn check(settings: SmtpSettings) -> Result<ServerReport> {
    probe_check(settings).0
}

/// [`check`], and whether the server offered TLS on the way (STARTTLS in its EHLO, or a
/// TLS handshake on an implicit-TLS port): when it did and the check failed, the TLS
/// attempt failed, which `envoi check --probe` must not answer with plain SMTP.
pub(crate) fn probe_check(settings: SmtpSettings) -> (Result<ServerReport>, bool) {
    let mut tls_offered = false;
    let report = check_noting(settings, &mut tls_offered);
    (report, tls_offered)
}

fn check_noting(settings: SmtpSettings, tls_offered: &mut bool) -> Result<ServerReport> {
    let logged_in = settings.credentials.is_some();
    let pinned = settings.tls_fingerprint.is_some();
    let session = SmtpSession::open_noting(&settings, tls_config(&settings)?, tls_offered)?;
    let report = ServerReport {
        server: session.server.clone(),
        address: session.conn.peer().map(|a| a.to_string()),
        proxy: settings.proxy.as_ref().map(ToString::to_string),
        tls: session.conn.tls(),
        extensions: session.extensions.clone(),
        size: session.caps.size,
        logged_in,
        certificate: session
            .conn
            .peer_certificate()
            .and_then(|der| CertificateReport::parse(&der))
            .map(|cert| CertificateReport { pinned, ..cert }),
    };
    session.close();
    Ok(report)
}

/// An IP address of a certificate's subjectAltName, as text.
fn ip_text(octets: &[u8]) -> Option<String> {
    match octets.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(octets).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?).to_string()),
        _ => None,
    }
}

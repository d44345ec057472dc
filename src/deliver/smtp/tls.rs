//! TLS for SMTP with rustls: the system's trusted roots plus a profile's `ca_file`, or a
//! profile's pinned certificate (`tls_fingerprint`), and certificate failures in plain
//! words. There is no way to turn verification off.
//!
//! Two kinds of relay have no certificate from a public CA, and both get a way to be
//! trusted that still proves who is on the other end:
//!
//! - a self-signed certificate made by `openssl req -x509`, which marks itself `CA:TRUE`.
//!   webpki refuses a CA certificate as a server's own ("CaUsedAsEndEntity") even when it
//!   is a trusted root; curl and msmtp accept it when it is the CA file. So does envoi:
//!   when the server's certificate is byte for byte one of the `ca_file`'s, is valid now
//!   and names the host, it is trusted.
//! - a pinned certificate: the SHA-256 of the server's certificate, compared with the one
//!   the profile gives. The match is the whole trust (no CA, no expiry, no host name): a
//!   person compared that fingerprint with the server's, which is more than a CA says.
//!
//! Either way the handshake's signatures are verified with the certificate's key, so the
//! server must hold the private key of the certificate trusted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::error::{Error, ErrorKind, Result};
use crate::profile::Fingerprint;

/// What a configuration trusts: the system's roots plus a `ca_file`, or one pinned
/// certificate. Two profiles with the same trust share one configuration.
type Trust = (Option<PathBuf>, Option<Fingerprint>);

/// The configurations built so far, by what they trust.
type Built = Vec<(Trust, Arc<ClientConfig>)>;

/// Built configurations, kept for the life of the process: the system's roots (about a
/// hundred and fifty certificates) are read from disk once, not once per delivery — a
/// flush sends many entries, a probe tries nine ways.
static BUILT: Mutex<Built> = Mutex::new(Vec::new());

/// The client configuration: the certificate pinned by `pin` alone when given, else the
/// system roots plus `ca_file`.
pub(crate) fn client_config(
    ca_file: Option<&Path>,
    pin: Option<&Fingerprint>,
) -> Result<Arc<ClientConfig>> {
    let trust: Trust = (ca_file.map(Path::to_path_buf), pin.copied());
    // A panic elsewhere cannot leave this list half-written: entries are pushed whole.
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, config)) = built.iter().find(|(t, _)| *t == trust) {
        return Ok(Arc::clone(config));
    }
    let config = build(ca_file, pin)?;
    built.push((trust, Arc::clone(&config)));
    Ok(config)
}

fn build(ca_file: Option<&Path>, pin: Option<&Fingerprint>) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match pin {
        Some(pin) => Arc::new(Pinned {
            pin: *pin,
            algorithms: provider.signature_verification_algorithms,
        }),
        None => Arc::new(Verifier::new(ca_file, &provider)?),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The usual verification (a chain to a trusted root, the dates, the host name), plus a
/// self-signed certificate the profile's `ca_file` holds, as curl and msmtp trust it.
#[derive(Debug)]
struct Verifier {
    /// rustls's own verifier over the system roots and the `ca_file`; `None` when there
    /// are none (a system without CA certificates), where every chain is refused as of
    /// an unknown issuer, at the handshake, with the certificate's fingerprint.
    inner: Option<Arc<WebPkiServerVerifier>>,
    /// For the handshake's signatures when there is no `inner`.
    algorithms: WebPkiSupportedAlgorithms,
    /// The `ca_file`'s certificates as written: a server certificate identical to one of
    /// them was chosen by the user, CA or not.
    given: Vec<CertificateDer<'static>>,
}

impl Verifier {
    fn new(ca_file: Option<&Path>, provider: &Arc<CryptoProvider>) -> Result<Verifier> {
        let mut roots = RootCertStore::empty();
        // Unreadable system certificates only shrink the set; a server signed by none of
        // the rest fails verification with "unknown issuer", which says what to do.
        roots.add_parsable_certificates(system_roots().iter().cloned());
        let given = match ca_file {
            Some(path) => read_ca_file(path, &mut roots)?,
            None => Vec::new(),
        };
        let inner = if roots.is_empty() {
            None
        } else {
            let built =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
                    .build();
            // Without CRLs the builder refuses only an empty root store, handled above.
            Some(built.map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot set up certificate verification: {e}"),
                )
            })?)
        };
        Ok(Verifier {
            inner,
            algorithms: provider.signature_verification_algorithms,
            given,
        })
    }

    /// After rustls refused `end_entity` as a CA, or as issued by no one it knows: trusts
    /// it when it is one of the `ca_file`'s certificates, valid now and for `name`;
    /// otherwise refuses it with the fix and its fingerprint.
    fn own_certificate(
        &self,
        refused: CertificateError,
        end_entity: &CertificateDer<'_>,
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let self_signed = is_self_signed(end_entity);
        let ca_used_as_end_entity = matches!(
            webpki_error(&refused),
            Some(webpki::Error::CaUsedAsEndEntity)
        );
        // An unknown issuer is forgiven only to a self-signed certificate: a leaf of some
        // CA the profile does not trust is that CA's to vouch for.
        let given = self.given.iter().any(|g| g.as_ref() == end_entity.as_ref());
        if given && (ca_used_as_end_entity || self_signed) {
            check_own_certificate(end_entity, name, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        Err(refusal(Refusal::NotTrusted {
            self_signed: self_signed || ca_used_as_end_entity,
            seen: Fingerprint::of(end_entity),
        }))
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            let refused = CertificateError::UnknownIssuer;
            return self.own_certificate(refused, end_entity, server_name, now);
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(refused)) if no_known_issuer(&refused) => {
                self.own_certificate(refused, end_entity, server_name, now)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        match &self.inner {
            Some(inner) => inner.verify_tls12_signature(message, cert, dss),
            None => rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        match &self.inner {
            Some(inner) => inner.verify_tls13_signature(message, cert, dss),
            None => rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match &self.inner {
            Some(inner) => inner.supported_verify_schemes(),
            None => self.algorithms.supported_schemes(),
        }
    }
}

/// Trusts exactly the certificate whose SHA-256 is `pin`, and nothing else: no roots are
/// read, no chain, dates or name checked (the pin is the trust). The handshake's
/// signatures are still verified with that certificate's key.
#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(refusal(Refusal::PinMismatch {
                expected: self.pin,
                seen,
            }))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Every root certificate envoi trusts for a profile: the system's, then `ca_file`'s.
/// For a client other than the SMTP one (the OAuth2 token endpoint's), so that both
/// trust the same authorities.
pub(crate) fn trusted_roots(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>> {
    let mut roots = system_roots().to_vec();
    if let Some(path) = ca_file {
        roots.extend(read_ca_file(path, &mut RootCertStore::empty())?);
    }
    Ok(roots)
}

/// The system's trusted roots, read from disk once per process (about a hundred and
/// fifty certificates): the SMTP verifier and the OAuth2 client both start from them,
/// and a device-code login polls the token endpoint many times.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        #[cfg(target_os = "linux")]
        if let Some(certs) = bundle_roots() {
            return certs;
        }
        rustls_native_certs::load_native_certs().certs
    })
}

/// The roots of the system's CA bundle alone (Linux), unless `SSL_CERT_FILE` or
/// `SSL_CERT_DIR` choose (then rustls-native-certs reads what they name); `None` without a
/// bundle.
///
/// rustls-native-certs reads both the bundle and the certificate directory: on Debian
/// the directory holds ~150 links to the very roots of the bundle, so each was read and
/// parsed twice, about 1.4 ms of every TLS send. `update-ca-certificates` (Debian,
/// Ubuntu, Alpine) and `update-ca-trust` (Fedora, RHEL) write every root, local ones
/// too, into the bundle; a CA dropped into the directory by hand without them is found
/// with `SSL_CERT_DIR=/etc/ssl/certs` (or `ca_file`).
#[cfg(target_os = "linux")]
fn bundle_roots() -> Option<Vec<CertificateDer<'static>>> {
    if openssl_probe::has_ssl_cert_env_vars() {
        return None;
    }
    let bundle = openssl_probe::probe().cert_file?;
    let certs = rustls_native_certs::load_certs_from_paths(Some(&bundle), None).certs;
    (!certs.is_empty()).then_some(certs)
}

/// Reads the PEM certificates of `ca_file` into `roots`, and returns them as written.
fn read_ca_file(path: &Path, roots: &mut RootCertStore) -> Result<Vec<CertificateDer<'static>>> {
    // A regular file of at most 1 MiB: `/dev/zero` or a FIFO must not fill memory or hang.
    let pem = crate::ownership::read_named(path)
        .map_err(|e| Error::config(format!("ca_file: cannot read {}: {e}", path.display())))?;
    let mut given = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            Error::config(format!(
                "ca_file: {} is not a PEM certificate: {e}",
                path.display()
            ))
        })?;
        roots.add(cert.clone()).map_err(|e| {
            Error::config(format!(
                "ca_file: {} holds a certificate rustls cannot use: {e}",
                path.display()
            ))
        })?;
        given.push(cert);
    }
    if given.is_empty() {
        return Err(Error::config(format!(
            "ca_file: {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(given)
}

/// Whether rustls refused a certificate for want of an issuer it trusts: a CA certificate
/// used as the server's own (what `openssl req -x509` makes), or an unknown issuer.
fn no_known_issuer(refused: &CertificateError) -> bool {
    matches!(refused, CertificateError::UnknownIssuer)
        || matches!(
            webpki_error(refused),
            Some(webpki::Error::CaUsedAsEndEntity)
        )
}

/// The webpki error rustls wrapped, for the refusals rustls has no variant of its own for.
fn webpki_error(refused: &CertificateError) -> Option<&webpki::Error> {
    match refused {
        CertificateError::Other(OtherError(inner)) => inner.downcast_ref::<webpki::Error>(),
        _ => None,
    }
}

/// Whether the certificate names itself as its issuer. Its signature is not what makes it
/// trusted (being the very certificate the profile gave is), so it is not checked.
fn is_self_signed(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, cert)| cert.subject() == cert.issuer())
}

/// The checks a chain would have given a certificate the profile chose itself: valid now
/// (notBefore and notAfter), meant for a TLS server (extended key usage, when it has
/// one), and for the host connected to (subjectAltName dNSName or iPAddress; the common
/// name is not read, as webpki does not).
fn check_own_certificate(
    der: &CertificateDer<'_>,
    name: &ServerName<'_>,
    now: UnixTime,
) -> std::result::Result<(), rustls::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    // A date before 1970 reads as 1970: still before any now.
    let time = |t: x509_parser::time::ASN1Time| {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(t.timestamp()).unwrap_or(0),
        ))
    };
    let (not_before, not_after) = (
        time(cert.validity().not_before),
        time(cert.validity().not_after),
    );
    if now.as_secs() < not_before.as_secs() {
        return Err(CertificateError::NotValidYetContext {
            time: now,
            not_before,
        }
        .into());
    }
    if now.as_secs() > not_after.as_secs() {
        return Err(CertificateError::ExpiredContext {
            time: now,
            not_after,
        }
        .into());
    }
    match cert.extended_key_usage() {
        Ok(None) => {}
        Ok(Some(eku)) if eku.value.server_auth || eku.value.any => {}
        Ok(Some(_)) => return Err(CertificateError::InvalidPurpose.into()),
        Err(_) => return Err(CertificateError::BadEncoding.into()),
    }
    verify_server_name(&ParsedCertificate::try_from(der)?, name)
}

/// A refusal rustls has no variant for, carried to [`describe_certificate_error`] inside
/// [`CertificateError::Other`] with what the message needs (the fingerprints).
#[derive(Debug)]
enum Refusal {
    /// No trusted CA vouches for the certificate, and the profile did not give it.
    NotTrusted {
        /// It is its own issuer (or a CA certificate used as the server's own).
        self_signed: bool,
        /// Its SHA-256.
        seen: Fingerprint,
    },
    /// The profile pins another certificate.
    PinMismatch {
        expected: Fingerprint,
        seen: Fingerprint,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotTrusted { self_signed, seen } => {
                let fix = format!(
                    "pin it with tls_fingerprint = \"{seen}\" (its SHA-256; first compare it \
                     with the server's own: openssl x509 -noout -fingerprint -sha256 -in \
                     cert.pem)"
                );
                if *self_signed {
                    write!(
                        f,
                        "self-signed (it is its own issuer, not one this system trusts): give \
                         the server's certificate as ca_file, or {fix}"
                    )
                } else {
                    write!(
                        f,
                        "unknown issuer (not signed by an authority this system trusts): \
                         give the issuing CA's certificate as ca_file, or {fix}"
                    )
                }
            }
            Refusal::PinMismatch { expected, seen } => write!(
                f,
                "its SHA-256 is {seen}, but tls_fingerprint pins {expected}: if the server's \
                 certificate was replaced on purpose, compare the new one with the server's \
                 own and update tls_fingerprint; if not, the connection may be intercepted"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

fn refusal(refusal: Refusal) -> rustls::Error {
    CertificateError::Other(OtherError(Arc::new(refusal))).into()
}

/// The name the server's certificate must carry: the profile's host.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|_| Error::config(format!("host {host:?} is not a valid name for TLS")))
}

/// A certificate failure in words, with what to do where there is something. Every
/// variant rustls 0.23 has is named (the deprecated ones too, as an older path may still
/// make them); one added later gets a sentence, never a debug dump.
#[allow(deprecated)]
pub(crate) fn describe_certificate_error(reason: &CertificateError) -> String {
    use CertificateError as C;
    match reason {
        C::BadEncoding => "malformed: it cannot be read as an X.509 certificate".into(),
        C::Expired => "expired".into(),
        C::ExpiredContext { not_after, .. } => format!("expired on {}", date(*not_after)),
        C::NotValidYet => "not valid yet (is this machine's clock right?)".into(),
        C::NotValidYetContext { not_before, .. } => format!(
            "not valid yet: valid from {} (is this machine's clock right?)",
            date(*not_before)
        ),
        C::Revoked => "revoked by its issuer".into(),
        C::UnhandledCriticalExtension => {
            "marked with a critical extension envoi does not understand".into()
        }
        C::UnknownIssuer => "unknown issuer (not signed by an authority this system trusts): \
             give the issuing CA's certificate as ca_file, or pin the server's certificate \
             with tls_fingerprint"
            .into(),
        C::UnknownRevocationStatus => "its revocation status cannot be determined".into(),
        C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. } => {
            "the revocation list it was checked against has expired".into()
        }
        C::BadSignature => {
            "its signature does not verify (the certificate was altered or mis-issued)".into()
        }
        C::UnsupportedSignatureAlgorithm
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "signed with an algorithm envoi does not accept".into()
        }
        C::NotValidForName => "issued for another host name".into(),
        C::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names: Vec<String> = presented.iter().filter_map(|p| presented_name(p)).collect();
            format!(
                "issued for another host name: it is for {}, and the profile's host is {}",
                if names.is_empty() {
                    "no host name at all".to_owned()
                } else {
                    names.join(", ")
                },
                expected.to_str()
            )
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "not meant for a TLS server (its extended key usage lacks serverAuth)".into()
        }
        C::InvalidOcspResponse => "the revocation status (OCSP) stapled to it is invalid".into(),
        C::ApplicationVerificationFailure => "refused by the application's own checks".into(),
        C::Other(OtherError(inner)) => {
            if let Some(refusal) = inner.downcast_ref::<Refusal>() {
                refusal.to_string()
            } else if let Some(e) = inner.downcast_ref::<webpki::Error>() {
                describe_webpki_error(e)
            } else {
                UNKNOWN.into()
            }
        }
        _ => UNKNOWN.into(),
    }
}

/// The keys trust advice names, each with what stands for its value when the message
/// gives none.
const TRUST_KEYS: [(&str, &str); 2] = [("ca_file", "PATH"), ("tls_fingerprint", "SHA256")];

/// `message` with its trust advice in `--smtp-url`'s words: `tls_fingerprint = "AB:…"`
/// becomes `?tls_fingerprint=AB:…`, and a bare `ca_file` `?ca_file=PATH`, since a URL has
/// no profile to put a key in. Done on the finished words, so every message that advises
/// these keys (this file's, the HTTPS client's, a `ca_file` that cannot be read) follows.
pub(crate) fn url_form(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 32);
    let mut rest = message;
    loop {
        let next = TRUST_KEYS
            .iter()
            .filter_map(|&(key, stands_for)| Some((find_word(rest, key)?, key, stands_for)))
            .min_by_key(|&(at, ..)| at);
        let Some((at, key, stands_for)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at]);
        let after = &rest[at + key.len()..];
        // `key = "value"`: the value moves into the parameter.
        if let Some(quoted) = after.strip_prefix(" = \"")
            && let Some(end) = quoted.find('"')
        {
            out.push_str(&format!("?{key}={}", &quoted[..end]));
            rest = &quoted[end + 1..];
        } else {
            out.push_str(&format!("?{key}={stands_for}"));
            rest = after;
        }
    }
}

/// Where `word` first stands alone in `text`: not inside a longer name, not already a
/// parameter (`?word=`).
fn find_word(text: &str, word: &str) -> Option<usize> {
    let part_of_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(|c| part_of_name(c) || c == '?')
            && !after.is_some_and(|c| part_of_name(c) || c == '=')
    })
}

/// A refusal this version of envoi has no words for.
const UNKNOWN: &str = "refused for a reason this version of envoi cannot name; \
                       `envoi check --probe HOST` shows what the server offers";

/// The webpki refusals rustls passes on without a variant of its own, in words.
#[allow(deprecated)]
fn describe_webpki_error(e: &webpki::Error) -> String {
    use webpki::Error as W;
    let words = match e {
        W::CaUsedAsEndEntity => {
            "a CA certificate used as the server's own (self-signed): give it as ca_file, or \
             pin it with tls_fingerprint"
        }
        W::EndEntityUsedAsCa => "its chain uses a server's certificate as a CA",
        W::CertDistrusted => "its key is explicitly distrusted",
        W::BadDer | W::BadDerTime | W::TrailingData(_) => {
            "malformed: it cannot be read as an X.509 certificate"
        }
        W::ExtensionValueInvalid | W::MalformedExtensions => "it has malformed extensions",
        W::UnsupportedCertVersion => "it is not an X.509 version 3 certificate",
        W::UnsupportedCriticalExtension => {
            "marked with a critical extension envoi does not understand"
        }
        W::InvalidCertValidity => "its validity period is invalid (it ends before it starts)",
        W::InvalidSerialNumber => "its serial number is invalid",
        W::EmptyEkuExtension => "its extended key usage lists no purpose at all",
        W::SignatureAlgorithmMismatch => {
            "its signature algorithm does not match the one its contents name"
        }
        W::MalformedDnsIdentifier => "a host name in it is malformed",
        W::UnsupportedNameType => "the host is of a kind certificates cannot name",
        W::NameConstraintViolation => "its issuer may not issue certificates for this name",
        W::MalformedNameConstraint | W::InvalidNetworkMaskConstraint => {
            "its issuer's name constraints are malformed"
        }
        W::PathLenConstraintViolated => "its chain is longer than a CA in it allows",
        W::MaximumNameConstraintComparisonsExceeded
        | W::MaximumPathBuildCallsExceeded
        | W::MaximumPathDepthExceeded
        | W::MaximumSignatureChecksExceeded => "its chain is too long or too tangled to verify",
        W::InvalidCrlNumber
        | W::InvalidCrlSignatureForPublicKey
        | W::IssuerNotCrlSigner
        | W::UnsupportedCrlIssuingDistributionPoint
        | W::UnsupportedCrlVersion
        | W::UnsupportedDeltaCrl
        | W::UnsupportedIndirectCrl
        | W::UnsupportedRevocationReason
        | W::UnsupportedRevocationReasonsPartitioning
        | W::UnsupportedCrlSignatureAlgorithm
        | W::UnsupportedCrlSignatureAlgorithmContext(_)
        | W::UnsupportedCrlSignatureAlgorithmForPublicKey
        | W::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_)
        | W::CrlExpired { .. } => "the revocation list it was checked against is unusable",
        // Those rustls turns into its own variants; named here for completeness.
        W::CertExpired { .. } => "expired",
        W::CertNotValidYet { .. } => "not valid yet (is this machine's clock right?)",
        W::CertNotValidForName(_) => "issued for another host name",
        W::CertRevoked => "revoked by its issuer",
        W::UnknownIssuer => "unknown issuer (not signed by an authority this system trusts)",
        W::UnknownRevocationStatus => "its revocation status cannot be determined",
        W::InvalidSignatureForPublicKey => "its signature does not verify",
        W::UnsupportedSignatureAlgorithm
        | W::UnsupportedSignatureAlgorithmContext(_)
        | W::UnsupportedSignatureAlgorithmForPublicKey
        | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "signed with an algorithm envoi does not accept"
        }
        W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
            "not meant for a TLS server (its extended key usage lacks serverAuth)"
        }
        _ => UNKNOWN,
    };
    words.to_owned()
}

/// A name webpki lists a certificate as presenting (`DnsName("mx.example")`,
/// `IpAddress(192.0.2.1)`), bare; `None` for the kinds that are no host name.
fn presented_name(presented: &str) -> Option<String> {
    let (kind, rest) = presented.split_once('(')?;
    let inner = rest.strip_suffix(')')?.trim_matches('"');
    matches!(kind, "DnsName" | "IpAddress").then(|| super::reply::printable(inner))
}

/// A certificate's date as x509 writes it (`Jan  1 00:00:00 2001 +00:00`).
fn date(time: UnixTime) -> String {
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|secs| x509_parser::time::ASN1Time::from_timestamp(secs).ok())
        .map_or_else(
            || format!("{} seconds after 1970", time.as_secs()),
            |t| t.to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_roots_are_read_once_per_trust() {
        let first = client_config(None, None).unwrap();
        assert!(Arc::ptr_eq(&first, &client_config(None, None).unwrap()));
        let missing = Path::new("/nonexistent/ca.pem");
        assert!(
            client_config(Some(missing), None).is_err(),
            "a bad ca_file is not cached"
        );
        assert!(client_config(Some(missing), None).is_err());
        let pin = Fingerprint::of(b"a certificate");
        let pinned = client_config(None, Some(&pin)).unwrap();
        assert!(!Arc::ptr_eq(&first, &pinned), "a pin is its own trust");
        assert!(Arc::ptr_eq(
            &pinned,
            &client_config(None, Some(&pin)).unwrap()
        ));
        let other = Fingerprint::of(b"another certificate");
        assert!(!Arc::ptr_eq(
            &pinned,
            &client_config(None, Some(&other)).unwrap()
        ));
    }

    /// A self-signed certificate for `names`, valid from `from` to `to` (years), with the
    /// extended key usages `eku` (none: no extension).
    fn certificate(
        names: &[&str],
        (from, to): (i32, i32),
        eku: Vec<rcgen::ExtendedKeyUsagePurpose>,
    ) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        params.extended_key_usages = eku;
        params.self_signed(&key).unwrap().der().clone()
    }

    fn host(name: &str) -> ServerName<'static> {
        server_name(name).unwrap()
    }

    /// Why `check_own_certificate` refuses `cert` for `name`, in words.
    fn refused_for(cert: &CertificateDer<'_>, name: &str) -> String {
        match check_own_certificate(cert, &host(name), UnixTime::now()) {
            Err(rustls::Error::InvalidCertificate(reason)) => describe_certificate_error(&reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_given_certificate_must_be_valid_now_for_a_server_and_for_the_host() {
        let ok = |cert: &CertificateDer<'_>, name: &str| {
            check_own_certificate(cert, &host(name), UnixTime::now()).is_ok()
        };
        let good = certificate(&["mx.example", "192.0.2.7"], (2000, 4000), Vec::new());
        assert!(ok(&good, "mx.example") && ok(&good, "192.0.2.7"));
        let why = refused_for(&good, "other.example");
        assert!(why.contains("issued for another host name"), "{why}");
        assert!(
            why.contains("mx.example, 192.0.2.7") && why.contains("other.example"),
            "{why}"
        );
        assert!(refused_for(&good, "192.0.2.8").contains("another host name"));
        // The common name is not a host name: only subjectAltName counts.
        let unnamed = certificate(&[], (2000, 4000), Vec::new());
        let why = refused_for(&unnamed, "mx.example");
        assert!(why.contains("it is for no host name at all"), "{why}");

        let expired = certificate(&["mx.example"], (2000, 2001), Vec::new());
        assert_eq!(
            refused_for(&expired, "mx.example"),
            "expired on Jan  1 00:00:00 2001 +00:00"
        );
        let early = certificate(&["mx.example"], (3000, 4000), Vec::new());
        let why = refused_for(&early, "mx.example");
        assert!(
            why.starts_with("not valid yet: valid from Jan  1 00:00:00 3000"),
            "{why}"
        );

        use rcgen::ExtendedKeyUsagePurpose as Eku;
        let client_only = certificate(&["mx.example"], (2000, 4000), vec![Eku::ClientAuth]);
        assert!(refused_for(&client_only, "mx.example").contains("serverAuth"));
        let server = certificate(&["mx.example"], (2000, 4000), vec![Eku::ServerAuth]);
        assert!(ok(&server, "mx.example"));
    }

    #[test]
    fn every_certificate_error_is_in_words() {
        use CertificateError as C;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(978_307_200));
        let other = |e: Arc<dyn std::error::Error + Send + Sync>| C::Other(OtherError(e));
        #[allow(deprecated)]
        let errors = vec![
            C::BadEncoding,
            C::Expired,
            C::ExpiredContext {
                time,
                not_after: time,
            },
            C::NotValidYet,
            C::NotValidYetContext {
                time,
                not_before: time,
            },
            C::Revoked,
            C::UnhandledCriticalExtension,
            C::UnknownIssuer,
            C::UnknownRevocationStatus,
            C::ExpiredRevocationList,
            C::ExpiredRevocationListContext {
                time,
                next_update: time,
            },
            C::BadSignature,
            C::UnsupportedSignatureAlgorithm,
            C::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: vec![1, 2],
                supported_algorithms: Vec::new(),
            },
            C::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: vec![1, 2],
                public_key_algorithm_id: vec![3],
            },
            C::NotValidForName,
            C::NotValidForNameContext {
                expected: host("mx.example"),
                presented: vec![
                    "DnsName(\"a.example\")".into(),
                    "IpAddress(192.0.2.1)".into(),
                ],
            },
            C::InvalidPurpose,
            C::InvalidPurposeContext {
                required: rustls::ExtendedKeyPurpose::ServerAuth,
                presented: vec![rustls::ExtendedKeyPurpose::ClientAuth],
            },
            C::InvalidOcspResponse,
            C::ApplicationVerificationFailure,
            other(Arc::new(webpki::Error::CaUsedAsEndEntity)),
            other(Arc::new(webpki::Error::PathLenConstraintViolated)),
            other(Arc::new(std::io::Error::other("a stranger"))),
            as_certificate_error(Refusal::NotTrusted {
                self_signed: false,
                seen: Fingerprint::of(b"x"),
            }),
        ];
        for error in &errors {
            let words = describe_certificate_error(error);
            assert!(!words.is_empty());
            for debug in ["{", "(\"", "Context", "Error", "Some(", "CaUsed"] {
                assert!(!words.contains(debug), "{error:?}: {words}");
            }
        }
        let names = describe_certificate_error(&errors[16]);
        assert!(names.contains("it is for a.example, 192.0.2.1"), "{names}");
        let unknown = describe_certificate_error(&errors[7]);
        assert!(unknown.contains("ca_file") && unknown.contains("tls_fingerprint"));
        let stranger = describe_certificate_error(&errors[23]);
        assert!(!stranger.contains("stranger"), "{stranger}");
        let not_trusted = describe_certificate_error(&errors[24]);
        assert!(not_trusted.starts_with("unknown issuer"), "{not_trusted}");
        let pin = format!("tls_fingerprint = \"{}\"", Fingerprint::of(b"x"));
        assert!(not_trusted.contains(&pin), "{not_trusted}");
    }

    /// Every refusal that advises a trust key says it in a URL's words in URL mode: no
    /// bare key is left, and the pin keeps its value.
    #[test]
    fn trust_advice_reads_as_url_parameters() {
        let seen = Fingerprint::of(b"x");
        let advising = [
            describe_certificate_error(&CertificateError::UnknownIssuer),
            describe_webpki_error(&webpki::Error::CaUsedAsEndEntity),
            Refusal::NotTrusted {
                self_signed: true,
                seen,
            }
            .to_string(),
            Refusal::NotTrusted {
                self_signed: false,
                seen,
            }
            .to_string(),
            Refusal::PinMismatch {
                expected: Fingerprint::of(b"y"),
                seen,
            }
            .to_string(),
            "ca_file: cannot read /nowhere.pem: not found".to_owned(),
        ];
        for words in &advising {
            let url = url_form(words);
            assert!(
                url.contains("?ca_file=") || url.contains("?tls_fingerprint="),
                "{url}"
            );
            for key in ["ca_file", "tls_fingerprint"] {
                assert_eq!(
                    url.matches(key).count(),
                    url.matches(&format!("?{key}=")).count(),
                    "a bare {key}: {url}"
                );
            }
        }
        let pinned = url_form(&advising[3]);
        assert!(
            pinned.contains(&format!("?tls_fingerprint={seen} (")),
            "{pinned}"
        );
        assert!(url_form(&advising[0]).contains("as ?ca_file=PATH,"));
        assert_eq!(url_form("no advice here"), "no advice here");
        assert_eq!(
            url_form("my_ca_file and ca_files"),
            "my_ca_file and ca_files"
        );
    }

    fn as_certificate_error(refused: Refusal) -> CertificateError {
        match refusal(refused) {
            rustls::Error::InvalidCertificate(reason) => reason,
            other => panic!("{other:?}"),
        }
    }
}

//! A throw-away PKI for TLS tests: a CA and a "localhost"/127.0.0.1 leaf signed by it, or
//! one self-signed certificate that is its own CA (what `openssl req -x509` makes),
//! generated at run time with rcgen (or openssl) so nothing with an expiry date is ever
//! committed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A fresh certificate authority plus a server certificate for `localhost` and `127.0.0.1`.
///
/// Validity uses rcgen's defaults (1975-01-01 to 4096-01-01), so a certificate made now is
/// valid now and never expires during a test run; [`Leaf`] has the exceptions.
pub struct TestPki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    leaf_der: CertificateDer<'static>,
    leaf_pem: String,
    leaf_key: PrivateKeyDer<'static>,
    leaf_key_pem: String,
    /// The leaf is its own issuer: the server sends it alone, and the "CA" is the leaf.
    self_signed: bool,
}

/// What is wrong with the leaf certificate, for certificate-failure tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// Valid for `localhost` and `127.0.0.1`.
    Good,
    /// Valid only for `wrong.example`.
    WrongHost,
    /// Expired in 2001.
    Expired,
    /// Valid like `Good`, since a day ago and for three and a half more days from now:
    /// about to expire. Half a day more than three, so that the whole days left (3) is
    /// not at a day boundary during a test.
    ExpiresSoon,
}

/// How long an [`Leaf::ExpiresSoon`] leaf stays valid from the time it is made.
pub const EXPIRES_SOON: Duration = Duration::from_secs(3 * 86_400 + 12 * 3_600);

impl TestPki {
    /// Generates a new CA and a leaf certificate signed by it (ECDSA P-256).
    pub fn new() -> TestPki {
        TestPki::with_leaf(Leaf::Good)
    }

    /// Like [`TestPki::new`], with a leaf that is wrong in the given way.
    pub fn with_leaf(kind: Leaf) -> TestPki {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "envoi test CA");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "envoi tests");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().expect("generate leaf key");
        let mut leaf_params = CertificateParams::default();
        leaf_params.distinguished_name = rcgen::DistinguishedName::new();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.subject_alt_names = match kind {
            Leaf::WrongHost => vec![SanType::DnsName(
                "wrong.example".try_into().expect("valid DNS name"),
            )],
            Leaf::Good | Leaf::Expired | Leaf::ExpiresSoon => vec![
                SanType::DnsName("localhost".try_into().expect("valid DNS name")),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
        };
        if kind == Leaf::Expired {
            leaf_params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            leaf_params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        if kind == Leaf::ExpiresSoon {
            let now = SystemTime::now();
            leaf_params.not_before = (now - Duration::from_secs(86_400)).into();
            leaf_params.not_after = (now + EXPIRES_SOON).into();
        }
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.use_authority_key_identifier_extension = true;
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("sign leaf certificate");

        TestPki {
            ca_der: ca_cert.der().clone(),
            ca_pem: ca_cert.pem(),
            leaf_der: leaf_cert.der().clone(),
            leaf_pem: leaf_cert.pem(),
            leaf_key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
            leaf_key_pem: leaf_key.serialize_pem(),
            self_signed: false,
        }
    }

    /// One self-signed certificate that says it is a CA (`CA:TRUE`) and is served as the
    /// end entity, as `openssl req -x509` makes them: no key usage, no extended key usage,
    /// the names of `kind` (ECDSA P-256; see [`TestPki::from_pem`] for a real openssl one).
    pub fn self_signed(kind: Leaf) -> TestPki {
        let key = KeyPair::generate().expect("generate key");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let localhost = vec![
            SanType::DnsName("localhost".try_into().expect("valid DNS name")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        // A kind of leaf this does not model fails here rather than passing for `Good`.
        match kind {
            Leaf::Good => params.subject_alt_names = localhost,
            Leaf::WrongHost => {
                params.subject_alt_names = vec![SanType::DnsName(
                    "wrong.example".try_into().expect("valid DNS name"),
                )];
            }
            Leaf::Expired => {
                params.subject_alt_names = localhost;
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            #[allow(unreachable_patterns)]
            other => panic!("TestPki::self_signed does not make {other:?} certificates"),
        }
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-sign");
        TestPki {
            ca_der: cert.der().clone(),
            ca_pem: cert.pem(),
            leaf_der: cert.der().clone(),
            leaf_pem: cert.pem(),
            leaf_key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            leaf_key_pem: key.serialize_pem(),
            self_signed: true,
        }
    }

    /// A self-signed certificate and its key made elsewhere (by `openssl req -x509`, say),
    /// both PEM: the server sends the certificate alone.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> TestPki {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("a PEM certificate");
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("a PEM private key");
        TestPki {
            ca_der: cert.clone(),
            ca_pem: cert_pem.to_owned(),
            leaf_der: cert,
            leaf_pem: cert_pem.to_owned(),
            leaf_key: key,
            leaf_key_pem: key_pem.to_owned(),
            self_signed: true,
        }
    }

    /// The SHA-256 of the server's own certificate as `openssl x509 -noout -fingerprint
    /// -sha256` prints it (upper-case hex in colon-separated pairs), computed with `sha2`,
    /// not with what envoi uses.
    pub fn leaf_fingerprint(&self) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(self.leaf_der.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The CA certificate in PEM form: what a client should trust.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Writes the CA certificate to `dir/ca.pem` and returns that path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        fs::write(&path, &self.ca_pem).expect("write ca.pem");
        path
    }

    /// Writes `dir/cert.pem` (leaf followed by the CA) and `dir/key.pem` for external servers
    /// such as aiosmtpd; returns `(cert_path, key_path)`.
    pub fn write_leaf(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        let chain = if self.self_signed {
            self.leaf_pem.clone()
        } else {
            format!("{}{}", self.leaf_pem, self.ca_pem)
        };
        fs::write(&cert_path, chain).expect("write cert.pem");
        fs::write(&key_path, &self.leaf_key_pem).expect("write key.pem");
        (cert_path, key_path)
    }

    /// A rustls server configuration serving the leaf (plus CA, unless self-signed) with the
    /// ring provider passed explicitly, so no process-wide default provider is needed.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut chain = vec![self.leaf_der.clone()];
        if !self.self_signed {
            chain.push(self.ca_der.clone());
        }
        let key = self.leaf_key.clone_key();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("leaf certificate and key match");
        Arc::new(config)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

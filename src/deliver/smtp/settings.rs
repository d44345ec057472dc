//! What a connection is made with: the server, its security and login, the timeout
//! and the deadline, checked before anything goes on the wire.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use crate::deliver::observe::Transcript;
use crate::deliver::options::Dsn;
use crate::error::{Error, Result};
use crate::message::check::no_line_breaks;
use crate::profile::{Auth, Password, Proxy, Security, SmtpProfile};

use super::conn::{Conn, WireError};
use super::tls;

/// Everything needed to reach and log in to an SMTP server.
#[derive(Debug, Clone)]
pub(crate) struct SmtpSettings {
    /// Server host name or IP address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Implicit TLS, required STARTTLS, or none.
    pub security: Security,
    /// User name and secret: a password for AUTH PLAIN/LOGIN, a bearer token for
    /// XOAUTH2/OAUTHBEARER.
    pub credentials: Option<(String, Password)>,
    /// Which mechanism the credentials are for.
    pub auth: Auth,
    /// EHLO name; `None` means this machine's host name.
    pub hello_name: Option<String>,
    /// Timeout for connecting and for each command.
    pub timeout: Duration,
    /// Extra trusted root certificates (PEM), or the server's own self-signed one.
    pub ca_file: Option<PathBuf>,
    /// The one certificate to trust, by its SHA-256, instead of any CA.
    pub tls_fingerprint: Option<crate::profile::Fingerprint>,
    /// Allow AUTH without TLS.
    pub allow_plaintext_auth: bool,
    /// Where the dialogue goes (`-v`), AUTH data redacted.
    pub transcript: Option<Transcript>,
    /// When the whole send must be over: each command's timeout is cut to fit.
    pub deadline: Option<Instant>,
    /// Delivery status notifications to request.
    pub dsn: Option<Dsn>,
    /// The SOCKS5 or HTTP proxy the connection goes through, if any.
    pub proxy: Option<Proxy>,
}

impl SmtpSettings {
    /// The settings of `profile`, logging in with `credentials` (the password fetched).
    pub(crate) fn new(
        profile: &SmtpProfile,
        credentials: Option<(String, Password)>,
        transcript: Option<Transcript>,
        deadline: Option<Instant>,
    ) -> SmtpSettings {
        SmtpSettings {
            host: profile.host.clone(),
            port: profile.port,
            security: profile.security,
            credentials,
            auth: profile.auth,
            hello_name: profile.hello_name.clone(),
            timeout: profile.timeout,
            ca_file: profile.ca_file.clone(),
            tls_fingerprint: profile.tls_fingerprint,
            allow_plaintext_auth: profile.allow_plaintext_auth,
            transcript,
            deadline,
            dsn: None,
            proxy: profile.proxy.as_ref().map(|(proxy, _)| proxy.clone()),
        }
    }

    /// The proxy's password, when it wants a login: fetched (from its variable) for
    /// each connection, within the command timeout.
    pub(super) fn proxy_password(&self) -> Result<Option<Password>> {
        self.proxy
            .as_ref()
            .and_then(|proxy| proxy.login.as_ref())
            .map(|(_, source)| source.fetch_as("proxy_password", self.timeout))
            .transpose()
    }
}

/// The TLS configuration `settings` need, if any.
pub(super) fn tls_config(settings: &SmtpSettings) -> Result<Option<Arc<ClientConfig>>> {
    match settings.security {
        Security::None => Ok(None),
        Security::Tls | Security::Starttls => tls::client_config(
            settings.ca_file.as_deref(),
            settings.tls_fingerprint.as_ref(),
        )
        .map(Some),
    }
}

/// This machine's name for EHLO, else an address literal.
pub(super) fn default_hello_name() -> String {
    crate::message::check::this_host_name().unwrap_or_else(|| "[127.0.0.1]".to_owned())
}

/// Refuses settings that could inject an SMTP command, or send a password in clear.
/// The command line checked them already; library callers may not have.
pub(super) fn check_settings(settings: &SmtpSettings) -> Result<()> {
    no_line_breaks("host", &settings.host)?;
    for (what, value) in [
        ("hello_name", settings.hello_name.as_deref()),
        (
            "username",
            settings.credentials.as_ref().map(|(user, _)| user.as_str()),
        ),
    ] {
        no_line_breaks(what, value.unwrap_or_default())?;
    }
    if settings.credentials.is_some()
        && settings.security == Security::None
        && !settings.allow_plaintext_auth
    {
        return Err(Error::config(
            "refusing to send a password over a connection without TLS: use security = \
             \"tls\" or \"starttls\", or set allow_plaintext_auth = true in the profile",
        ));
    }
    Ok(())
}

/// Whether the server of `settings` completes a TLS handshake on a new connection (a
/// certificate it cannot prove still counts: it speaks TLS). Bounded by the same
/// timeout and deadline as the rest; nothing is sent after the handshake.
pub(super) fn answers_tls(settings: &SmtpSettings) -> bool {
    let config = tls::client_config(
        settings.ca_file.as_deref(),
        settings.tls_fingerprint.as_ref(),
    );
    let (Ok(config), Ok(name)) = (config, tls::server_name(&settings.host)) else {
        return false;
    };
    let Ok(password) = settings.proxy_password() else {
        return false;
    };
    let via = settings
        .proxy
        .as_ref()
        .map(|proxy| (proxy, password.as_ref()));
    let connected = Conn::connect(
        &settings.host,
        settings.port,
        via,
        settings.timeout,
        settings.deadline,
    );
    let Ok(mut conn) = connected else {
        return false;
    };
    let answered = match conn.upgrade(config, name) {
        Ok(()) => true,
        Err(WireError::Io(io)) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| {
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_)
                )
            }),
        Err(_) => false,
    };
    conn.shutdown();
    answered
}

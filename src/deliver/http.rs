//! envoi's one HTTPS client (ureq over rustls + ring), for everything that is not SMTP:
//! the OAuth2 token endpoint and the HTTPS mail APIs (Graph, Gmail).
//!
//! It trusts what the SMTP connection trusts (the system's roots and the profile's
//! `ca_file`), follows no redirect (a bearer token must not be carried to another
//! host), bounds every request by the time it is given (connecting, sending, waiting
//! and reading the answer, all in one) and reads at most [`MAX_ANSWER_BYTES`] of an
//! answer. A request body's way out is watched: a request whose body went out whole and
//! then got no answer is told apart from one that never got that far (75 both, but
//! `OutcomeUnknown`, never retried), and is counted in flight for the watchdog meanwhile.
//!
//! It reaches the service as the SMTP client reaches its server (`http_reach`: Happy
//! Eyeballs, and the profile's SOCKS5 or HTTP CONNECT proxy), and says a proxy's failure
//! in the same words, with the same exit code.
//!
//! A leaf of `deliver/` apart from `smtp::tls`, `http_reach` and `in_flight`: the token
//! code and the API transports both use it without importing each other.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::deliver::http_reach::{self, Unreached};
use crate::deliver::in_flight::InFlight;
use crate::deliver::smtp::tls;
use crate::error::{Error, ErrorKind, Result};
use crate::profile::{Fingerprint, Proxy};

/// An answer's body is a token, an id or an error: a few kilobytes. More is not what
/// envoi asked for, and is not read.
pub(crate) const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// A proxy's password comes from a variable (`proxy_password_env`, or the URL of
/// `HTTPS_PROXY`): no command runs, so this bound is never near.
const PASSWORD_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest text of a service's shown in an error.
const MAX_SHOWN_CHARS: usize = 400;

/// A client for one service, which `what` names in errors ("the token endpoint
/// https://…", "Microsoft Graph at https://…") and `key` is the setting that points to
/// it (`oauth2.token_url`, `api_url`).
#[derive(Clone)]
pub(crate) struct Client {
    agent: ureq::Agent,
    what: String,
    key: &'static str,
}

/// What the service answered: its status, the headers envoi reads, and at most
/// [`MAX_ANSWER_BYTES`] of the body (as text, invalid UTF-8 replaced).
#[derive(Debug, Clone, Default)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// Graph's `request-id`: the id Microsoft support asks for.
    pub(crate) request_id: Option<String>,
    /// `Retry-After` in seconds (429, 503).
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: String,
    /// Why the body could not be read (too long, too slow, cut off), if it could not:
    /// the status stands all the same (a 202 is a 202).
    pub(crate) unread: Option<String>,
}

impl Answer {
    /// The answer, or an error when its body could not be read: for a caller that
    /// needs the body (a token).
    fn whole(self, what: &str) -> Result<Answer> {
        match &self.unread {
            None => Ok(self),
            Some(why) => Err(Error::new(
                ErrorKind::Temporary,
                format!(
                    "{what} answered HTTP {} but its answer could not be read: {why}",
                    self.status
                ),
            )),
        }
    }
}

/// A POST that got no answer: why, and whether any byte of its body went out (if none
/// did, the service was never reached: `envoi batch` counts that toward stopping).
pub(crate) struct NoAnswer {
    pub(crate) error: Error,
    pub(crate) body_started: bool,
}

impl Client {
    /// A client for a service reached through `proxy` (else directly), trusting the
    /// system's roots and `ca_file`'s certificates, or only the certificate `pin` names.
    /// The proxy's password, when it wants a login, is fetched here (78 when its
    /// variable is unset).
    pub(crate) fn new(
        ca_file: Option<&Path>,
        pin: Option<&Fingerprint>,
        proxy: Option<&Proxy>,
        what: String,
        key: &'static str,
    ) -> Result<Client> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let roots: Vec<Certificate<'static>> = tls::trusted_roots(ca_file)?
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect();
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let config = ureq::Agent::config_builder()
            // envoi's connector reaches the service, through the profile's proxy.
            .proxy(None)
            .tls_config(tls)
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("envoi/", env!("CARGO_PKG_VERSION")))
            .build();
        let via = match proxy {
            Some(proxy) => {
                let password = proxy
                    .login
                    .as_ref()
                    .map(|(_, source)| source.fetch_as("proxy_password", PASSWORD_TIMEOUT))
                    .transpose()?;
                Some((proxy.clone(), password))
            }
            None => None,
        };
        // With a pin, the pin is the whole trust, checked by the SMTP client's own verifier.
        let pinned = match pin {
            Some(_) => Some(tls::client_config(ca_file, pin)?),
            None => None,
        };
        let agent = http_reach::agent(config, via, pinned);
        Ok(Client { agent, what, key })
    }

    /// POSTs `form` (`application/x-www-form-urlencoded`) to `url`, all within
    /// `timeout`.
    pub(crate) fn post_form(
        &self,
        url: &str,
        form: &[(&str, String)],
        timeout: Duration,
    ) -> Result<Answer> {
        let response = self
            .agent
            .post(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Accept", "application/json")
            .send_form(form.iter().map(|(key, value)| (*key, value.as_str())))
            .map_err(|e| self.request_error(url, &e))?;
        read(response).whole(&self.what)
    }

    /// GETs `url` with `headers`, all within `timeout`.
    pub(crate) fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Answer> {
        let mut request = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Accept", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.call().map_err(|e| self.request_error(url, &e))?;
        read(response).whole(&self.what)
    }

    /// POSTs `body` as `content_type` to `url` with `headers`. Connecting, and waiting
    /// for the answer once the body is out, may each take `step`; the whole request
    /// (a large body going out included) must end by `deadline`. From its first byte
    /// going out to the answer, the message counts as in flight; a body that went out
    /// whole without an answer is `OutcomeUnknown` (75, never retried: the service may
    /// have acted on it).
    pub(crate) fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: &[u8],
        step: Duration,
        deadline: Option<Instant>,
    ) -> std::result::Result<Answer, NoAnswer> {
        let mut request = self
            .agent
            .post(url)
            .config()
            .timeout_global(deadline.map(|d| d.saturating_duration_since(Instant::now())))
            .timeout_connect(Some(step))
            .timeout_send_request(Some(step))
            .timeout_recv_response(Some(step))
            .timeout_recv_body(Some(step))
            .build()
            .header("Accept", "application/json")
            .header("Content-Type", content_type)
            // Known ahead, so no chunked encoding: some front ends refuse it.
            .header("Content-Length", body.len().to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut watched = Watched {
            rest: body,
            in_flight: None,
            whole: false,
        };
        let sent = request.send(ureq::SendBody::from_reader(&mut watched));
        let whole = watched.whole;
        let body_started = watched.in_flight.is_some();
        let answer = sent.map_err(|e| self.request_error(url, &e)).map(read);
        drop(watched);
        answer.map_err(|error| NoAnswer {
            body_started,
            error: match whole && error.kind() == ErrorKind::Temporary {
                true => Error::new(
                    ErrorKind::OutcomeUnknown,
                    format!(
                        "{error}; the message went out whole before that, so it may or may not \
                     have been sent: check the mailbox's Sent folder before sending it again"
                    ),
                ),
                false => error,
            },
        })
    }

    /// A request that got no answer: 75 (unreachable, timed out, reset), 77 for a
    /// certificate envoi does not trust, 78 for a redirect.
    fn request_error(&self, url: &str, error: &ureq::Error) -> Error {
        if let ureq::Error::Io(io) = error
            && let Some(Unreached(proxy)) = io.get_ref().and_then(|e| e.downcast_ref())
        {
            let cause = proxy
                .cause
                .as_ref()
                .map_or(String::new(), |io| match io.kind() {
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                        ": timed out".to_owned()
                    }
                    _ => format!(": {io}"),
                });
            return Error::new(
                proxy.kind,
                format!("cannot reach {}: {}{cause}", self.what, proxy.words),
            );
        }
        let certificate = match error {
            ureq::Error::Rustls(rustls::Error::InvalidCertificate(reason)) => Some(reason),
            ureq::Error::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref()) {
                Some(rustls::Error::InvalidCertificate(reason)) => Some(reason),
                _ => None,
            },
            _ => None,
        };
        if let Some(reason) = certificate {
            return Error::new(
                ErrorKind::Certificate,
                format!(
                    "{}: its certificate is not trusted: {}",
                    self.what,
                    tls::describe_certificate_error(reason)
                ),
            );
        }
        if matches!(error, ureq::Error::TooManyRedirects) {
            return Error::config(format!(
                "{} {url} redirects elsewhere; give the service's own URL",
                self.key
            ));
        }
        Error::new(
            ErrorKind::Temporary,
            format!("cannot reach {}: {}", self.what, describe(error)),
        )
    }
}

/// Text from a service made safe to show: control characters out, secrets envoi
/// sent replaced, at most [`MAX_SHOWN_CHARS`].
pub(crate) fn printable(text: &str, secrets: &[String]) -> String {
    let mut text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    match text.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The status, the headers envoi reads and at most [`MAX_ANSWER_BYTES`] of the body
/// (read within what is left of the request's time).
fn read(response: ureq::http::Response<ureq::Body>) -> Answer {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let request_id = header("request-id").filter(|id| id.len() <= 200);
    // Seconds only: Graph and Gmail do not send the HTTP-date form.
    let retry_after = header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = response.into_body();
    let (body, unread) = match body
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .lossy_utf8(true)
        .read_to_string()
    {
        Ok(text) => (text, None),
        Err(e) => (String::new(), Some(describe(&e))),
    };
    Answer {
        status,
        request_id,
        retry_after,
        body,
        unread,
    }
}

/// A ureq error in words: a timeout says it is one.
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "no answer in time (timeout_secs, or the deadline)".into(),
        // The socket's own words ("Connection refused"), without ureq's "io: " before them.
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            "no answer in time (timeout_secs, or the deadline)".into()
        }
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// A request body that notes when it starts going out (then the message is in
/// flight) and when ureq has taken all of it.
struct Watched<'a> {
    rest: &'a [u8],
    in_flight: Option<InFlight>,
    whole: bool,
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.in_flight.is_none() {
            self.in_flight = Some(InFlight::start());
        }
        let n = self.rest.read(buf)?;
        if n == 0 || self.rest.is_empty() {
            self.whole = true;
        }
        Ok(n)
    }
}

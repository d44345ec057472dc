//! An OAuth2 access token for `[profiles.NAME.oauth2]`, from envoi's own token cache or
//! from the token endpoint (RFC 6749 §4.4 client credentials, §6 refresh).
//!
//! Why here and not in `profile/`: this is network I/O under the send's deadline, and it
//! must trust exactly the authorities the SMTP connection trusts (the system's roots plus
//! the profile's `ca_file`, [`super::smtp::tls::trusted_roots`]); both live in this layer.
//! The profile layer only checks the table ([`crate::profile::OAuth2`]).
//!
//! The cache is `envoi/` in the platform cache directory (`$XDG_CACHE_HOME`, else
//! `~/.cache`): one `oauth2-<hash>.json` per identity (token URL, client id, user name,
//! scope), 0600, replaced atomically ([`crate::durable`]). It holds the access token, its
//! expiry as a Unix time and the refresh token. Every read-refresh-write happens under an
//! exclusive lock on `oauth2-<hash>.lock`, so two envoi runs never both spend the same
//! refresh token: the second waits, then finds the first one's fresh token in the cache.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::deliver::Transcript;
use crate::deliver::smtp::tls;
use crate::durable::{self, unix_now};
use crate::error::{Error, ErrorKind, Result};
use crate::profile::{Flow, OAuth2, Password};

pub(super) mod fuzzing;
mod login;

pub use login::{LoginStep, Stored};
pub(crate) use login::{login, logout, stored};

/// The `refresh_origin` of a refresh token `envoi auth login` stored.
pub(crate) const LOGIN_ORIGIN: &str = "login";

/// A cached access token is not used in its last minute: it must still be valid when
/// the server checks it, after the connection, TLS and EHLO.
const MARGIN_SECS: u64 = 60;

/// A token answer is a few kilobytes; more is not a token endpoint.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// The longest text of the endpoint's shown in an error.
const MAX_SHOWN_CHARS: usize = 400;

/// What the cache file holds. No `Debug`: it holds secrets.
#[derive(Serialize, Deserialize)]
struct Cached {
    /// The identity, compared on reading (the file name is only a hash of it).
    token_url: String,
    client_id: String,
    username: String,
    scope: Option<String>,
    access_token: Option<String>,
    /// Unix time (seconds) at which `access_token` expires.
    expires_at: u64,
    /// The latest refresh token the endpoint returned.
    refresh_token: Option<String>,
    /// A fingerprint of the configured refresh token that `refresh_token` descends from:
    /// when the configured one changes (a new consent), the cached one is dropped.
    refresh_origin: Option<String>,
}

/// The endpoint's JSON answer, success (RFC 6749 §5.1) or error (§5.2).
#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where an access token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenOrigin {
    /// The cache: the server may still refuse it (revoked early), see [`forget_access_token`].
    Cache,
    /// The token endpoint, just now.
    Endpoint,
}

/// The profile's access token for `user`: the cached one while it has more than a
/// minute left, else a new one from the endpoint, saved in the cache before it is
/// returned. Takes at most `timeout` (waiting for the lock included). With
/// `transcript` (`-v`), says which it was, never the token.
pub(crate) fn access_token(
    user: &str,
    oauth: &OAuth2,
    ca_file: Option<&Path>,
    timeout: Duration,
    transcript: Option<Transcript>,
) -> Result<(Password, TokenOrigin)> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let trace = |line: &str| {
        if let Some(t) = transcript {
            t("*", line);
        }
    };
    let dir = cache_dir()?;
    durable::create_private_dir(&dir, true).map_err(|e| cache_error(&dir, "create", &e))?;
    let id = identity(oauth, user);
    let path = dir.join(format!("oauth2-{id}.json"));
    let _lock = lock(&dir.join(format!("oauth2-{id}.lock")), left())?;

    let cached = read_cache(&path, oauth, user);
    let now = unix_now();
    if let Some(cached) = &cached
        && let Some(access) = &cached.access_token
        && cached.expires_at > now + MARGIN_SECS
    {
        let how = format!(
            "OAuth2 access token for {user} from the cache {} (expires in {} s)",
            path.display(),
            cached.expires_at - now
        );
        trace(&how);
        return Ok((Password::new(access.clone()), TokenOrigin::Cache));
    }

    let mut form: Vec<(&str, String)> = vec![("grant_type", oauth.flow.name().to_owned())];
    let mut secrets = Vec::new();
    let mut refresh_origin = None;
    let mut refresh_used = None;
    if oauth.flow == Flow::RefreshToken {
        let from_login = cached
            .as_ref()
            .filter(|c| c.refresh_origin.as_deref() == Some(LOGIN_ORIGIN))
            .and_then(|c| c.refresh_token.clone());
        let (refresh, origin, which) = match (from_login, &oauth.refresh_token) {
            // A login is the newest consent: it wins over a configured token.
            (Some(refresh), _) => (
                refresh,
                LOGIN_ORIGIN.to_owned(),
                "stored by envoi auth login",
            ),
            (None, Some(source)) => {
                let configured = source.fetch_as("oauth2.refresh_token", left())?;
                let origin = fingerprint(configured.expose());
                secrets.push(configured.expose().to_owned());
                match cached
                    .as_ref()
                    .filter(|c| c.refresh_origin.as_deref() == Some(origin.as_str()))
                    .and_then(|c| c.refresh_token.clone())
                {
                    Some(rotated) => (rotated, origin, "cached (rotated)"),
                    None => (configured.expose().to_owned(), origin, "configured"),
                }
            }
            (None, None) => {
                return Err(Error::config(format!(
                    "no refresh token for {user}: run `envoi auth login` for this profile \
                     (or set oauth2.refresh_token_env or refresh_token_command)"
                )));
            }
        };
        trace(&format!(
            "OAuth2: refreshing with the {which} refresh token"
        ));
        secrets.push(refresh.clone());
        form.push(("refresh_token", refresh.clone()));
        refresh_origin = Some(origin);
        refresh_used = Some(refresh);
    }
    form.push(("client_id", oauth.client_id.clone()));
    if let Some(source) = &oauth.client_secret {
        let secret = source.fetch_as("oauth2.client_secret", left())?;
        secrets.push(secret.expose().to_owned());
        form.push(("client_secret", secret.expose().to_owned()));
    }
    if let Some(scope) = &oauth.scope {
        form.push(("scope", scope.clone()));
    }
    trace(&format!(
        "OAuth2: POST {} (grant_type={})",
        oauth.token_url,
        oauth.flow.name()
    ));
    let asked_at = unix_now();
    let answer = post(&oauth.token_url, &form, ca_file, left(), &secrets)?;
    let rotated = answer.refresh_token.is_some() && answer.refresh_token != refresh_used;
    let fresh = Cached {
        token_url: oauth.token_url.clone(),
        client_id: oauth.client_id.clone(),
        username: user.to_owned(),
        scope: oauth.scope.clone(),
        access_token: Some(answer.access_token.clone()),
        // No expires_in: not reused (RFC 6749 leaves the lifetime to the server).
        expires_at: asked_at + answer.expires_in.unwrap_or(0),
        refresh_token: answer.refresh_token.clone().or(refresh_used),
        refresh_origin,
    };
    // Saved before the token is used: a rotated refresh token must not be lost.
    write_cache(&dir, &id, &fresh).map_err(|e| {
        let mut error = cache_error(&path, "write", &e);
        if rotated {
            error = Error::new(
                error.kind(),
                format!(
                    "{error}; the endpoint issued a new refresh token that could not be kept, \
                     and the old one may no longer work"
                ),
            );
        }
        error
    })?;
    let how = format!(
        "OAuth2 access token for {user} fetched from {} ({}; expires in {}){}",
        oauth.token_url,
        oauth.flow.name(),
        answer
            .expires_in
            .map_or_else(|| "an unknown time".to_owned(), |s| format!("{s} s")),
        if rotated {
            "; the new refresh token is saved"
        } else {
            ""
        }
    );
    trace(&how);
    Ok((Password::new(answer.access_token), TokenOrigin::Endpoint))
}

/// Drops the cached access token of `user` (keeping the refresh token): the server
/// refused it before its time was up — revoked, or a password change — and without this
/// every send would be refused with it until it expires. Best effort: a cache that
/// cannot be changed only means the next run tries the same token once more.
pub(crate) fn forget_access_token(user: &str, oauth: &OAuth2, timeout: Duration) {
    let Ok(dir) = cache_dir() else {
        return;
    };
    let id = identity(oauth, user);
    let path = dir.join(format!("oauth2-{id}.json"));
    let Ok(_lock) = lock(&dir.join(format!("oauth2-{id}.lock")), timeout) else {
        return;
    };
    if let Some(mut cached) = read_cache(&path, oauth, user) {
        cached.access_token = None;
        cached.expires_at = 0;
        let _ = write_cache(&dir, &id, &cached);
    }
}

/// A successful answer, checked.
struct Granted {
    access_token: String,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
}

/// POSTs the form (RFC 6749 §4.4.2 / §6) and reads the answer.
fn post(
    url: &str,
    form: &[(&str, String)],
    ca_file: Option<&Path>,
    timeout: Duration,
    secrets: &[String],
) -> Result<Granted> {
    let (status, text) = request(url, form, ca_file, timeout)?;
    interpret(url, status, &text, secrets)
}

/// POSTs the form to `url` and returns the HTTP status and body, whatever they are:
/// the caller reads them (a device-code poll expects some errors).
fn request(
    url: &str,
    form: &[(&str, String)],
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<(u16, String)> {
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
    // A proxy from the environment (ALL_PROXY, HTTPS_PROXY, HTTP_PROXY; NO_PROXY) is used,
    // as corporate networks need, except for this machine: a loopback endpoint may be
    // plain http, which must not go to a proxy in clear.
    let loopback = url::Url::parse(url).is_ok_and(|u| match u.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    });
    let mut config = ureq::Agent::config_builder();
    if loopback {
        config = config.proxy(None);
    }
    let agent: ureq::Agent = config
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("envoi/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let response = agent
        .post(url)
        .header("Accept", "application/json")
        .send_form(form.iter().map(|(key, value)| (*key, value.as_str())))
        .map_err(|e| request_error(url, &e))?;
    let status = response.status();
    let mut body = response.into_body();
    let text = body
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .lossy_utf8(true)
        .read_to_string()
        .map_err(|e| {
            Error::new(
                ErrorKind::Temporary,
                format!("the token endpoint {url}: cannot read its answer: {e}"),
            )
        })?;
    Ok((status.as_u16(), text))
}

/// The endpoint's answer → a token, or the error in the endpoint's words: 77 for a
/// refusal (`invalid_client`, `invalid_grant`, …), 75 for a server in trouble.
fn interpret(url: &str, status: u16, text: &str, secrets: &[String]) -> Result<Granted> {
    let shown = |s: &str| printable(s, secrets);
    let answer: Option<Answer> = serde_json::from_str(text).ok();
    if let Some(Answer {
        error: Some(code),
        error_description,
        ..
    }) = &answer
    {
        let kind = match code.as_str() {
            "temporarily_unavailable" | "server_error" | "slow_down" => ErrorKind::Temporary,
            _ if status >= 500 || status == 429 => ErrorKind::Temporary,
            _ => ErrorKind::AuthRefused,
        };
        let description = error_description
            .as_deref()
            .map(|d| format!(": {}", shown(d)))
            .unwrap_or_default();
        return Err(Error::new(
            kind,
            format!(
                "the token endpoint {url} refused (HTTP {status}): {}{description}",
                shown(code)
            ),
        ));
    }
    let excerpt = || {
        let text = shown(text.trim());
        if text.is_empty() {
            "an empty body".to_owned()
        } else {
            format!("\"{text}\"")
        }
    };
    match status {
        200..=299 => {}
        429 | 500..=599 => {
            return Err(Error::new(
                ErrorKind::Temporary,
                format!(
                    "the token endpoint {url} answered HTTP {status}: {}",
                    excerpt()
                ),
            ));
        }
        300..=399 | 404 | 405 => {
            return Err(Error::config(format!(
                "oauth2.token_url {url} is not a token endpoint (HTTP {status}: {}); check \
                 token_url or tenant",
                excerpt()
            )));
        }
        _ => {
            return Err(Error::new(
                ErrorKind::AuthRefused,
                format!(
                    "the token endpoint {url} answered HTTP {status}: {}",
                    excerpt()
                ),
            ));
        }
    }
    let not_a_token = |why: &str| {
        Error::new(
            ErrorKind::Unavailable,
            format!("the token endpoint {url} answered HTTP {status} but {why}"),
        )
    };
    let Some(answer) = answer else {
        return Err(not_a_token(&format!("not with JSON: {}", excerpt())));
    };
    let access_token = match answer.access_token {
        Some(token) if !token.is_empty() => token,
        _ => return Err(not_a_token("without an access_token")),
    };
    // RFC 6750's b64token: it goes inside the SASL message, between ^A separators.
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(not_a_token(
            "the access_token holds characters a bearer token cannot have",
        ));
    }
    if let Some(kind) = &answer.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(not_a_token(&format!(
            "token_type is {:?}, not Bearer",
            shown(kind)
        )));
    }
    let expires_in = match &answer.expires_in {
        None => None,
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        // Some endpoints (Azure AD v1) send the number as a string.
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    Ok(Granted {
        access_token,
        expires_in,
        refresh_token: answer.refresh_token.filter(|t| !t.is_empty()),
    })
}

/// A request that got no answer: 75 (unreachable, timed out, reset), or 77 for a
/// certificate envoi does not trust.
fn request_error(url: &str, error: &ureq::Error) -> Error {
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
                "the token endpoint {url}: its certificate is {}",
                tls::describe_certificate_error(reason)
            ),
        );
    }
    if matches!(error, ureq::Error::TooManyRedirects) {
        return Error::config(format!(
            "oauth2.token_url {url} redirects elsewhere; give the endpoint's own URL"
        ));
    }
    Error::new(
        ErrorKind::Temporary,
        format!("cannot reach the token endpoint {url}: {error}"),
    )
}

/// Text from the endpoint made safe to show: control characters out, secrets envoi
/// sent replaced, at most [`MAX_SHOWN_CHARS`].
fn printable(text: &str, secrets: &[String]) -> String {
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

/// `envoi/` in the platform cache directory.
fn cache_dir() -> Result<PathBuf> {
    use etcetera::BaseStrategy;
    etcetera::choose_base_strategy()
        .map(|base| base.cache_dir().join("envoi"))
        .map_err(|e| {
            Error::config(format!(
                "oauth2: no cache directory for tokens ({e}); set XDG_CACHE_HOME or HOME"
            ))
        })
}

fn cache_error(path: &Path, what: &str, error: &std::io::Error) -> Error {
    Error::new(
        ErrorKind::Temporary,
        format!(
            "oauth2: cannot {what} the token cache {}: {error}",
            path.display()
        ),
    )
}

/// Takes the identity's lock, waiting at most `timeout` for another envoi to finish
/// its refresh. Released when the file is closed (also when the process dies).
fn lock(path: &Path, timeout: Duration) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(path)
        .map_err(|e| cache_error(path, "open the lock of", &e))?;
    let deadline = Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "oauth2: another envoi held the token cache lock {} for {:.1} s",
                        path.display(),
                        timeout.as_secs_f64()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(cache_error(path, "lock", &e));
            }
        }
    }
}

/// The cached entry of this identity; `None` when there is none, it cannot be read, or
/// it is another identity's (a hash collision).
fn read_cache(path: &Path, oauth: &OAuth2, user: &str) -> Option<Cached> {
    let bytes = std::fs::read(path).ok()?;
    let cached: Cached = serde_json::from_slice(&bytes).ok()?;
    (cached.token_url == oauth.token_url
        && cached.client_id == oauth.client_id
        && cached.username == user
        && cached.scope == oauth.scope)
        .then_some(cached)
}

fn write_cache(dir: &Path, id: &str, cached: &Cached) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(cached).map_err(std::io::Error::other)?;
    durable::replace_file(
        &dir.join(format!("oauth2-{id}.json")),
        &dir.join(format!(".oauth2-{id}.json.tmp")),
        &bytes,
    )
}

/// The cache file's name for an identity: FNV-1a (64 bits) of its parts, each ended
/// by a NUL (which none of them can hold). Stable across Rust releases, unlike std's
/// hasher; a collision only costs a fetch, since the file names its identity.
fn identity(oauth: &OAuth2, user: &str) -> String {
    let scope = oauth.scope.as_deref().unwrap_or("");
    format!(
        "{:016x}",
        fnv1a(&[&oauth.token_url, &oauth.client_id, user, scope])
    )
}

/// A fingerprint of a refresh token, so the cache can tell whether the configured one
/// changed without holding it twice.
fn fingerprint(secret: &str) -> String {
    format!("{:016x}", fnv1a(&[secret]))
}

/// FNV-1a of `parts`, each ended by a NUL.
fn fnv1a(parts: &[&str]) -> u64 {
    let joined: Vec<u8> = parts
        .iter()
        .flat_map(|part| part.bytes().chain([0]))
        .collect();
    crate::token::fnv1a(&joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of an answer that must not give a token (`Granted` has no `Debug`: it
    /// holds one).
    fn refused(status: u16, text: &str, secrets: &[String]) -> Error {
        match interpret("u", status, text, secrets) {
            Ok(_) => panic!("{status} {text} gave a token"),
            Err(e) => e,
        }
    }

    #[test]
    fn answers_in_the_endpoints_words_and_kinds() {
        let ok = interpret(
            "u",
            200,
            r#"{"access_token":"at-1","token_type":"Bearer","expires_in":"3599"}"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            (ok.access_token.as_str(), ok.expires_in),
            ("at-1", Some(3599))
        );
        let err = refused(
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret s3cret provided."}"#,
            &["s3cret".to_owned()],
        );
        assert_eq!(err.kind(), ErrorKind::AuthRefused);
        assert!(
            err.message().contains("invalid_client: AADSTS7000215"),
            "{err}"
        );
        assert!(!err.message().contains("s3cret"), "{err}");
        let err = refused(503, "busy", &[]);
        assert_eq!(err.kind(), ErrorKind::Temporary);
        let err = refused(400, r#"{"error":"temporarily_unavailable"}"#, &[]);
        assert_eq!(err.kind(), ErrorKind::Temporary);
        let err = refused(404, "<html>", &[]);
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = refused(200, r#"{"access_token":"a b"}"#, &[]);
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let err = refused(200, r#"{"access_token":"a","token_type":"mac"}"#, &[]);
        assert!(err.message().contains("not Bearer"), "{err}");
    }

    #[test]
    fn the_identity_is_stable() {
        assert_eq!(format!("{:016x}", fnv1a(&[])), "cbf29ce484222325");
        // Cache file names must not change between versions (a rotated refresh token
        // lives in them): FNV-1a of "a\0bc\0", computed independently.
        assert_eq!(format!("{:016x}", fnv1a(&["a", "bc"])), "401801fc84f3ca79");
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }
}

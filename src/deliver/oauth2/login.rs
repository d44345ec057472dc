//! `envoi auth login|status|logout`: a user's consent turned into a refresh token in
//! the token cache, what the cache holds for a profile, and forgetting it.
//!
//! Two ways of consent, as the providers allow them:
//! - the device flow (RFC 8628, Microsoft): envoi prints a URL and a short code to
//!   enter on any device with a browser, and polls the token endpoint meanwhile, so it
//!   works over SSH on a server with no browser;
//! - the browser flow for installed apps (RFC 8252, authorization code with PKCE, RFC
//!   7636), redirected to a one-shot listener on 127.0.0.1 (Google, whose device flow
//!   refuses the Gmail scope).
//!
//! Either way the refresh token is stored with [`LOGIN_ORIGIN`], and later sends
//! refresh with it (and with each rotation of it) before any configured one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::cache::{
    Cached, LOGIN_ORIGIN, cache_dir, cache_error, check_cache, identity, lock, read_cache,
    write_cache,
};
use super::endpoint::{Granted, interpret, request};
use crate::deliver::http::printable;
use crate::durable::{self, unix_now};
use crate::error::{Error, ErrorKind, Result};
use crate::profile::{Consent, Flow, OAuth2};

/// What the user must do now; the command line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Open `url` on any device and enter `code` (the device flow).
    EnterCode {
        /// The provider's verification page.
        url: String,
        /// The code to type there.
        code: String,
    },
    /// Open `url` in a browser on this machine (the browser flow): it comes back to
    /// envoi's listener on 127.0.0.1.
    OpenUrl {
        /// The provider's consent page, with envoi's request in its query.
        url: String,
    },
}

/// What the token cache holds for a profile: never a token, only what and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The cache file.
    pub path: PathBuf,
    /// Unix time at which the cached access token expires; `None` without one.
    pub access_expires_at: Option<u64>,
    /// Whether a refresh token is kept.
    pub has_refresh_token: bool,
    /// Whether that refresh token came from `envoi auth login` (or its rotations).
    pub from_login: bool,
}

/// The answer of a device authorization endpoint (RFC 8628 §3.2). Google writes
/// `verification_url`.
#[derive(Deserialize)]
struct DeviceAnswer {
    device_code: Option<String>,
    user_code: Option<String>,
    verification_uri: Option<String>,
    verification_url: Option<String>,
    expires_in: Option<u64>,
    interval: Option<u64>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Each HTTP request of a login gets this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// RFC 8628 §3.5: the wait between polls when the endpoint names none.
const DEFAULT_INTERVAL_SECS: u64 = 5;

/// Asks the user's consent the way the profile's table says, waits at most `wait` for
/// it, and stores the refresh token (and the first access token) in the cache.
/// `tell` shows the user what to do.
pub(crate) fn login(
    user: &str,
    oauth: &OAuth2,
    ca_file: Option<&Path>,
    wait: Duration,
    tell: &mut dyn FnMut(LoginStep),
) -> Result<Stored> {
    if oauth.flow != Flow::RefreshToken {
        return Err(Error::config(
            "envoi auth login is for oauth2.flow = \"refresh_token\" (a user's consent); \
             client_credentials needs no login",
        ));
    }
    let deadline = Instant::now() + wait;
    let granted = match &oauth.consent {
        Some(Consent::Device(url)) => device_flow(url, oauth, ca_file, deadline, tell)?,
        Some(Consent::Browser(url)) => browser_flow(url, oauth, ca_file, deadline, tell)?,
        None => {
            return Err(Error::config(
                "oauth2: give device_code_url (the device flow, as Microsoft has it) or \
                 auth_url (the browser flow, as Google has it) for envoi auth login; with \
                 tenant or Google's token_url envoi knows them",
            ));
        }
    };
    let Some(refresh_token) = granted.refresh_token else {
        return Err(Error::new(
            ErrorKind::AuthRefused,
            format!(
                "{} gave no refresh token, so envoi could not send later without you: add \
                 offline_access to oauth2.scope (Microsoft), or revoke envoi's access in your \
                 account and log in again (Google gives one only at the first consent)",
                oauth.token_url
            ),
        ));
    };
    let dir = cache_dir()?;
    durable::create_private_dir(&dir, true).map_err(|e| cache_error(&dir, "create", &e))?;
    let id = identity(oauth, user);
    check_cache(&dir.join(format!("oauth2-{id}.json")))?;
    let _lock = lock(&dir.join(format!("oauth2-{id}.lock")), REQUEST_TIMEOUT)?;
    let cached = Cached {
        token_url: oauth.token_url.clone(),
        client_id: oauth.client_id.clone(),
        username: user.to_owned(),
        scope: oauth.scope.clone(),
        access_token: Some(granted.access_token),
        expires_at: unix_now() + granted.expires_in.unwrap_or(0),
        refresh_token: Some(refresh_token),
        refresh_origin: Some(LOGIN_ORIGIN.to_owned()),
    };
    let path = dir.join(format!("oauth2-{id}.json"));
    write_cache(&dir, &id, &cached).map_err(|e| cache_error(&path, "write", &e))?;
    Ok(summary(path, &cached))
}

/// What the cache holds for `user` of `oauth`; `None` when nothing.
pub(crate) fn stored(user: &str, oauth: &OAuth2) -> Result<Option<Stored>> {
    let path = cache_dir()?.join(format!("oauth2-{}.json", identity(oauth, user)));
    check_cache(&path)?;
    Ok(read_cache(&path, oauth, user).map(|cached| summary(path, &cached)))
}

/// Deletes what the cache holds for `user` of `oauth`; whether there was anything.
pub(crate) fn logout(user: &str, oauth: &OAuth2) -> Result<bool> {
    let dir = cache_dir()?;
    let id = identity(oauth, user);
    let path = dir.join(format!("oauth2-{id}.json"));
    if !path.exists() {
        return Ok(false);
    }
    let _lock = lock(&dir.join(format!("oauth2-{id}.lock")), REQUEST_TIMEOUT)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(cache_error(&path, "delete", &e)),
    }
}

fn summary(path: PathBuf, cached: &Cached) -> Stored {
    Stored {
        path,
        access_expires_at: cached.access_token.as_ref().map(|_| cached.expires_at),
        has_refresh_token: cached.refresh_token.is_some(),
        from_login: cached.refresh_origin.as_deref() == Some(LOGIN_ORIGIN),
    }
}

/// RFC 8628: asks for a device code, shows it, and polls the token endpoint until the
/// user has consented, refused, or the code (or `deadline`) ran out.
fn device_flow(
    url: &str,
    oauth: &OAuth2,
    ca_file: Option<&Path>,
    deadline: Instant,
    tell: &mut dyn FnMut(LoginStep),
) -> Result<Granted> {
    let mut form = vec![("client_id", oauth.client_id.clone())];
    if let Some(scope) = &oauth.scope {
        form.push(("scope", scope.clone()));
    }
    let (status, text) = request(url, &form, ca_file, oauth.proxy.as_ref(), REQUEST_TIMEOUT)?;
    let answer: Option<DeviceAnswer> = serde_json::from_str(&text).ok();
    let refused = |code: &str, description: Option<&str>| {
        Error::new(
            ErrorKind::AuthRefused,
            format!(
                "the device authorization endpoint {url} refused (HTTP {status}): {}{}",
                printable(code, &[]),
                description
                    .map(|d| format!(": {}", printable(d, &[])))
                    .unwrap_or_default()
            ),
        )
    };
    let Some(answer) = answer else {
        return Err(Error::new(
            if status >= 500 {
                ErrorKind::Temporary
            } else {
                ErrorKind::Unavailable
            },
            format!("the device authorization endpoint {url} answered HTTP {status} without JSON"),
        ));
    };
    if let Some(code) = &answer.error {
        return Err(refused(code, answer.error_description.as_deref()));
    }
    let (Some(device_code), Some(user_code), Some(page)) = (
        answer.device_code,
        answer.user_code,
        answer.verification_uri.or(answer.verification_url),
    ) else {
        return Err(refused(
            "the answer lacks device_code, user_code or verification_uri",
            None,
        ));
    };
    tell(LoginStep::EnterCode {
        url: printable(&page, &[]),
        code: printable(&user_code, &[]),
    });
    let expires = Instant::now() + Duration::from_secs(answer.expires_in.unwrap_or(900));
    let deadline = deadline.min(expires);
    let mut interval = answer.interval.unwrap_or(DEFAULT_INTERVAL_SECS).max(1);
    let mut poll = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:device_code".to_owned(),
        ),
        ("device_code", device_code.clone()),
        ("client_id", oauth.client_id.clone()),
    ];
    let mut secrets = vec![device_code];
    add_client_secret(oauth, &mut poll, &mut secrets)?;
    loop {
        std::thread::sleep(Duration::from_secs(interval));
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::AuthRefused,
                "the sign-in was not finished in time (the code expired); run envoi auth \
                 login again",
            ));
        }
        let (status, text) = request(
            &oauth.token_url,
            &poll,
            ca_file,
            oauth.proxy.as_ref(),
            REQUEST_TIMEOUT,
        )?;
        let waiting = serde_json::from_str::<DeviceAnswer>(&text)
            .ok()
            .and_then(|a| a.error);
        match waiting.as_deref() {
            // RFC 8628 §3.5: not yet, and not so often.
            Some("authorization_pending") => {}
            Some("slow_down") => interval += 5,
            _ => return interpret(&oauth.token_url, status, &text, &secrets),
        }
    }
}

/// RFC 8252 with PKCE: a listener on 127.0.0.1, the consent URL for the user's browser,
/// the code it brings back (checked against the state envoi sent), exchanged for tokens.
fn browser_flow(
    url: &str,
    oauth: &OAuth2,
    ca_file: Option<&Path>,
    deadline: Instant,
    tell: &mut dyn FnMut(LoginStep),
) -> Result<Granted> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::config(format!("cannot listen on 127.0.0.1 for the browser: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::config(format!("cannot listen on 127.0.0.1 for the browser: {e}")))?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/");
    let verifier = random_text(32)?;
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let state = random_text(16)?;
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", oauth.client_id.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("state", state.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        // Google gives a refresh token only for offline access, and again only on a
        // consent screen shown again.
        ("access_type", "offline"),
        ("prompt", "consent"),
    ];
    if let Some(scope) = &oauth.scope {
        query.push(("scope", scope.as_str()));
    }
    let consent = url::Url::parse_with_params(url, &query)
        .map_err(|e| Error::config(format!("oauth2.auth_url {url:?} is not a valid URL ({e})")))?;
    tell(LoginStep::OpenUrl {
        url: consent.to_string(),
    });
    let code = wait_for_code(&listener, &state, deadline)?;
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code.clone()),
        ("redirect_uri", redirect_uri),
        ("client_id", oauth.client_id.clone()),
        ("code_verifier", verifier.clone()),
    ];
    let mut secrets = vec![code, verifier];
    add_client_secret(oauth, &mut form, &mut secrets)?;
    let (status, text) = request(
        &oauth.token_url,
        &form,
        ca_file,
        oauth.proxy.as_ref(),
        REQUEST_TIMEOUT,
    )?;
    interpret(&oauth.token_url, status, &text, &secrets)
}

/// The client secret, when the table has one, into `form` (and `secrets`, so the
/// endpoint's answer never shows it).
fn add_client_secret(
    oauth: &OAuth2,
    form: &mut Vec<(&str, String)>,
    secrets: &mut Vec<String>,
) -> Result<()> {
    if let Some(source) = &oauth.client_secret {
        let secret = source.fetch_as("oauth2.client_secret", REQUEST_TIMEOUT)?;
        secrets.push(secret.expose().to_owned());
        form.push(("client_secret", secret.expose().to_owned()));
    }
    Ok(())
}

/// `bytes` random bytes as URL-safe text (PKCE's verifier, the state).
fn random_text(bytes: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| {
            Error::new(
                ErrorKind::Internal,
                "the system's random number generator failed",
            )
        })?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The most of a browser's request envoi reads.
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Waits for the browser to come back with `?code=…&state=…`; other requests (a
/// favicon) get a 404 and the wait goes on.
fn wait_for_code(listener: &TcpListener, state: &str, deadline: Instant) -> Result<String> {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(Error::new(
                        ErrorKind::AuthRefused,
                        "the browser did not come back in time; run envoi auth login again",
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Temporary,
                    format!("waiting for the browser: {e}"),
                ));
            }
        };
        if let Some(answer) = answer_browser(stream, state)? {
            return Ok(answer);
        }
    }
}

/// Reads one request of the browser and answers it: the code when it brings one with
/// the right state, `None` for anything else (answered 404), an error for a refusal or
/// a state envoi did not send (answered with a page saying so).
fn answer_browser(mut stream: TcpStream, state: &str) -> Result<Option<String>> {
    let io = |e: std::io::Error| {
        Error::new(
            ErrorKind::Temporary,
            format!("reading the browser's request: {e}"),
        )
    };
    stream.set_nonblocking(false).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("GET "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("");
    let reply = |stream: &mut TcpStream, status: &str, text: &str| {
        let page =
            format!("<!doctype html><meta charset=utf-8><title>envoi</title><p>{text}</p>\n");
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
    };
    let Ok(url) = url::Url::parse(&format!("http://127.0.0.1{target}")) else {
        reply(&mut stream, "404 Not Found", "Not found.");
        return Ok(None);
    };
    let param = |name: &str| {
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    if url.path() != "/" || (param("code").is_none() && param("error").is_none()) {
        reply(&mut stream, "404 Not Found", "Not found.");
        return Ok(None);
    }
    if param("state").as_deref() != Some(state) {
        reply(
            &mut stream,
            "400 Bad Request",
            "This answer is not for the sign-in envoi started. Nothing was stored.",
        );
        return Err(Error::new(
            ErrorKind::AuthRefused,
            "the browser came back with a state envoi did not send (an old or forged page); \
             nothing was stored: run envoi auth login again",
        ));
    }
    if let Some(error) = param("error") {
        reply(
            &mut stream,
            "200 OK",
            "Sign-in refused; envoi stored nothing. You can close this tab.",
        );
        return Err(Error::new(
            ErrorKind::AuthRefused,
            format!(
                "the sign-in was refused: {}{}",
                printable(&error, &[]),
                param("error_description")
                    .map(|d| format!(": {}", printable(&d, &[])))
                    .unwrap_or_default()
            ),
        ));
    }
    reply(
        &mut stream,
        "200 OK",
        "envoi is signed in. You can close this tab.",
    );
    Ok(param("code"))
}

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
//!
//! This file takes the token for a send; the cache itself is `cache`, the requests to the
//! endpoint `endpoint`, and `envoi auth` is `login`, which shares both.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::deliver::observe::Transcript;
use crate::durable::{self, unix_now};
use crate::error::{Error, Result};
use crate::profile::{Flow, OAuth2, Password};
use cache::{
    Cached, LOGIN_ORIGIN, cache_dir, cache_error, check_cache, fingerprint, identity, lock,
    read_cache, write_cache,
};
use endpoint::post;

mod cache;
mod endpoint;
pub(super) mod fuzzing;
mod login;

pub use login::{LoginStep, Stored};
pub(crate) use login::{login, logout, stored};

/// A cached access token is not used in its last minute: it must still be valid when
/// the server checks it, after the connection, TLS and EHLO.
const MARGIN_SECS: u64 = 60;

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
    check_cache(&path)?;
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
    let answer = post(
        &oauth.token_url,
        &form,
        ca_file,
        oauth.proxy.as_ref(),
        left(),
        &secrets,
    )?;
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

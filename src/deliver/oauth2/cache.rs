//! The token cache: one file per identity under `envoi/` in the platform cache
//! directory, read and written under its lock, and refused when others can open it.
//!
//! A leaf of `oauth2/`, apart from [`access_token`](super::access_token) and `login`,
//! which both read and write the cache without importing each other.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{Error, ErrorKind, Result};
use crate::ownership::Owner;
use crate::profile::OAuth2;

/// The `refresh_origin` of a refresh token `envoi auth login` stored.
pub(crate) const LOGIN_ORIGIN: &str = "login";

/// What the cache file holds. No `Debug`: it holds secrets.
#[derive(Serialize, Deserialize)]
pub(super) struct Cached {
    /// The identity, compared on reading (the file name is only a hash of it).
    pub(super) token_url: String,
    pub(super) client_id: String,
    pub(super) username: String,
    pub(super) scope: Option<String>,
    pub(super) access_token: Option<String>,
    /// Unix time (seconds) at which `access_token` expires.
    pub(super) expires_at: u64,
    /// The latest refresh token the endpoint returned.
    pub(super) refresh_token: Option<String>,
    /// A fingerprint of the configured refresh token that `refresh_token` descends from:
    /// when the configured one changes (a new consent), the cached one is dropped.
    pub(super) refresh_origin: Option<String>,
}

/// `envoi/` in the platform cache directory.
pub(super) fn cache_dir() -> Result<PathBuf> {
    use etcetera::BaseStrategy;
    etcetera::choose_base_strategy()
        .map(|base| base.cache_dir().join("envoi"))
        .map_err(|e| {
            Error::config(format!(
                "oauth2: no cache directory for tokens ({e}); set XDG_CACHE_HOME or HOME"
            ))
        })
}

pub(super) fn cache_error(path: &Path, what: &str, error: &std::io::Error) -> Error {
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
pub(super) fn lock(path: &Path, timeout: Duration) -> Result<File> {
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

/// The token cache file at `path` and its folder, when they exist, must be this user's
/// and closed to others (OA14): refused (78) rather than repaired, since tokens another
/// user could read may have been copied, and only the user can tell whether to revoke
/// them (the message says how to close the file again).
pub(super) fn check_cache(path: &Path) -> Result<()> {
    const INSTEAD: &str = "set XDG_CACHE_HOME to a folder of your own";
    if let Some(dir) = path.parent().filter(|d| d.exists()) {
        crate::ownership::check_private_dir(dir, "the OAuth2 token cache folder", INSTEAD)?;
    }
    if path.exists() {
        crate::ownership::check_owned(path, "the OAuth2 token cache", Owner::Me, INSTEAD)?;
        crate::ownership::check_private_file(path, "the OAuth2 token cache", "tokens")?;
    }
    Ok(())
}

/// The cached entry of this identity; `None` when there is none, it cannot be read
/// (a regular file of at most 1 MiB only), or it is another identity's (a hash collision).
pub(super) fn read_cache(path: &Path, oauth: &OAuth2, user: &str) -> Option<Cached> {
    let bytes = crate::ownership::read_named(path).ok()?;
    let cached: Cached = serde_json::from_slice(&bytes).ok()?;
    (cached.token_url == oauth.token_url
        && cached.client_id == oauth.client_id
        && cached.username == user
        && cached.scope == oauth.scope)
        .then_some(cached)
}

pub(super) fn write_cache(dir: &Path, id: &str, cached: &Cached) -> std::io::Result<()> {
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
pub(super) fn identity(oauth: &OAuth2, user: &str) -> String {
    let scope = oauth.scope.as_deref().unwrap_or("");
    format!(
        "{:016x}",
        fnv1a(&[&oauth.token_url, &oauth.client_id, user, scope])
    )
}

/// A fingerprint of a refresh token, so the cache can tell whether the configured one
/// changed without holding it twice.
pub(super) fn fingerprint(secret: &str) -> String {
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

    /// OA14: a cache file or folder others can open is refused, with the fix; a private
    /// one (or none yet) is fine.
    #[cfg(unix)]
    #[test]
    fn oa14_a_cache_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("envoi");
        std::fs::create_dir(&dir).unwrap();
        let mode = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mode(&dir, 0o700);
        let path = dir.join("oauth2-x.json");
        assert!(check_cache(&path).is_ok());
        std::fs::write(&path, b"{}").unwrap();
        mode(&path, 0o644);
        let err = check_cache(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("chmod 600"), "{err}");
        mode(&path, 0o600);
        assert!(check_cache(&path).is_ok());
        mode(&dir, 0o755);
        let err = check_cache(&path).unwrap_err();
        assert!(err.message().contains("chmod 700"), "{err}");
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

//! What precedence is made of: the `ENVOI_*` variables ([`Env`]), the command line's
//! flags ([`Flags`]), and where a setting came from ([`Origin`]). Its own file, below
//! `resolve`, `route` and `files`, so each of them can take these without taking the
//! others.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The environment variables that take part in precedence, read once.
///
/// An empty `ENVOI_SMTP_URL` or `ENVOI_CONFIG` counts as unset. An empty
/// `ENVOI_PROFILE` or `ENVOI_IDEMPOTENCY_KEY` is a value, and a wrong one: a script
/// that sets `ENVOI_IDEMPOTENCY_KEY=$JOB_ID` with `JOB_ID` unset must fail (64), not
/// send without protection against a second copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `ENVOI_SMTP_URL`.
    pub smtp_url: Option<String>,
    /// `ENVOI_CONFIG`.
    pub config: Option<PathBuf>,
    /// `ENVOI_PROFILE`.
    pub profile: Option<String>,
    /// `ENVOI_OUTBOX_DIR`.
    pub outbox_dir: Option<PathBuf>,
    /// `ENVOI_IDEMPOTENCY_KEY`.
    pub idempotency_key: Option<String>,
    /// `ENVOI_LOG`: where the delivery log goes, for callers that cannot pass `--log`
    /// (cron's sendmail, PHP's mail()).
    pub log: Option<String>,
    /// `ENVOI_LEDGER`: the shared idempotency ledger (`postgres://…`); empty counts as
    /// unset, so a CI template may leave it blank.
    pub ledger: Option<String>,
    /// The platform config directory's `envoi/config.toml`, when the platform has one.
    pub platform_config: Option<PathBuf>,
    /// The system-wide config file, read when the user has no file of their own:
    /// `$ENVOI_SYSTEM_CONFIG`, else [`SYSTEM_CONFIG`]. The variable cannot widen what a
    /// user may read (they can already give `--config`); the spool's flush service runs
    /// under systemd with a fixed environment and names its file with `--config`.
    pub system_config: Option<PathBuf>,
    /// `ENVOI_SPOOL_DIR`: the system spool sendmail mode drops into when the system
    /// config is closed to this user (else `/var/spool/envoi`). Only where this user's
    /// own mail goes: the flush service names its spool with `--spool`.
    pub spool_dir: Option<PathBuf>,
    /// The platform data directory's `envoi/outbox`, when the platform has one.
    pub platform_outbox: Option<PathBuf>,
    /// `ALL_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (either case), for a profile without a
    /// `proxy` key.
    pub proxy: ProxyEnv,
}

impl Env {
    /// Reads this process's environment: 64 for a variable that must be text and is
    /// not UTF-8, or an `ENVOI_OUTBOX_DIR` that is set but empty.
    pub fn from_process() -> Result<Env> {
        let text = |name: &str| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::usage(format!("${name} is not valid UTF-8")))
            }
        };
        let path = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let outbox_dir = path("ENVOI_OUTBOX_DIR");
        if outbox_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(Error::usage(
                "$ENVOI_OUTBOX_DIR is set but empty: unset it, or give a folder",
            ));
        }
        use etcetera::BaseStrategy;
        let base = etcetera::choose_base_strategy().ok();
        Ok(Env {
            smtp_url: text("ENVOI_SMTP_URL")?.filter(|v| !v.is_empty()),
            config: path("ENVOI_CONFIG").filter(|p| !p.as_os_str().is_empty()),
            profile: text("ENVOI_PROFILE")?,
            outbox_dir,
            spool_dir: path("ENVOI_SPOOL_DIR").filter(|p| !p.as_os_str().is_empty()),
            idempotency_key: text("ENVOI_IDEMPOTENCY_KEY")?,
            log: text("ENVOI_LOG")?,
            ledger: text("ENVOI_LEDGER")?.filter(|v| !v.is_empty()),
            platform_config: base
                .as_ref()
                .map(|b| b.config_dir().join("envoi").join("config.toml")),
            system_config: path("ENVOI_SYSTEM_CONFIG")
                .filter(|p| !p.as_os_str().is_empty())
                .or_else(system_config),
            platform_outbox: base.map(|b| b.data_dir().join("envoi").join("outbox")),
            proxy: ProxyEnv::from_process(),
        })
    }
}

/// The system-wide config file of Unix: root's, for every user without a file of their
/// own (msmtp's `/etc/msmtprc`).
#[cfg(unix)]
pub const SYSTEM_CONFIG: &str = "/etc/envoi/config.toml";

/// Where the system-wide config file is on this platform: [`SYSTEM_CONFIG`] on Unix,
/// `%ProgramData%\envoi\config.toml` on Windows.
fn system_config() -> Option<PathBuf> {
    #[cfg(unix)]
    {
        Some(PathBuf::from(SYSTEM_CONFIG))
    }
    #[cfg(windows)]
    {
        std::env::var_os("ProgramData")
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join("envoi").join("config.toml"))
    }
    #[cfg(not(any(unix, windows)))]
    {
        None
    }
}

/// What the command line said; each field beats its variable in [`Env`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--smtp-url`.
    pub smtp_url: Option<String>,
    /// `--outbox-dir`.
    pub outbox_dir: Option<PathBuf>,
    /// `--idempotency-key`.
    pub idempotency_key: Option<String>,
    /// `--log`.
    pub log: Option<String>,
    /// `--ledger`.
    pub ledger: Option<String>,
}

/// Where an effective setting came from, as `envoi config show` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, by name (`--profile`).
    Flag(&'static str),
    /// An environment variable, by name (`ENVOI_PROFILE`).
    Variable(&'static str),
    /// The config file.
    File,
    /// Nothing set it: envoi's default.
    Default,
}

/// The proxy variables of the environment, read once: lower case first, as curl reads
/// them; an empty value counts as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// `all_proxy`, else `ALL_PROXY`: the variable's name and its value.
    pub all_proxy: Option<(&'static str, String)>,
    /// `https_proxy`, else `HTTPS_PROXY`: for an `https://` URL, before `all_proxy`.
    pub https_proxy: Option<(&'static str, String)>,
    /// `no_proxy`, else `NO_PROXY`.
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads this process's environment (a value that is not UTF-8 counts as unset).
    pub fn from_process() -> ProxyEnv {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                std::env::var(name)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (name, v))
            })
        };
        ProxyEnv {
            all_proxy: first(["all_proxy", "ALL_PROXY"]),
            https_proxy: first(["https_proxy", "HTTPS_PROXY"]),
            no_proxy: first(["no_proxy", "NO_PROXY"]).map(|(_, v)| v),
        }
    }
}

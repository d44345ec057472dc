//! Where to send: profiles in the config file, their secrets, the `--smtp-url`
//! shortcut, and the one place that decides which of them applies.
//!
//! Precedence lives in [`resolve`] alone: flags, then `ENVOI_*` variables, then the
//! profile, then the platform defaults. `send` and every `outbox` subcommand call it, so
//! they cannot disagree about the connection or the outbox directory.

mod aliases;
mod config;
mod dkim;
mod env;
mod files;
mod fingerprint;
#[doc(hidden)]
pub mod fuzzing;
mod log;
mod oauth2;
mod password;
mod policy;
mod proxy;
mod resolve;
mod route;
mod sent_copy;
mod show;
mod suggest;

pub use config::{
    ApiProfile, Auth, ConfigSource, LedgerKeys, Profile, ProfileSummary, SecretSource, Security,
    SendmailKeys, Service, SmtpProfile, Transport, profile_from_url,
};
pub use dkim::Dkim;
#[cfg(unix)]
pub use env::SYSTEM_CONFIG;
pub use env::{Env, Flags, Origin, ProxyEnv};
pub use files::{closed_system_config, config_path, list_profiles, write_starter};
pub use fingerprint::Fingerprint;
pub use log::{Facility, LogDest, LogSettings};
pub use oauth2::{Consent, Flow, OAuth2};
pub use password::{Password, PasswordSource};
pub use policy::{Pattern, RecipientPolicy, Rule, RuleOrigin};
pub use proxy::{Proxy, ProxyKey, ProxyKind};
pub use resolve::{Resolved, resolve, resolve_outbox};
pub use route::{Connection, Route};
pub use sent_copy::SentCopy;
pub use show::{Setting, Shown, show};

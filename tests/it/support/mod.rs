//! Shared test support: an in-process SMTP server, a run-time test PKI, out-of-process
//! peers (aiosmtpd, smtp-sink), and helpers to run the built binary. Built once, as a
//! module of the single integration test crate `tests/it`.

pub mod certs;
pub mod dovecot;
pub mod envoi;
pub mod external;
pub mod mail_api;
pub mod namespaces;
pub mod postgres;
pub mod proxies;
pub mod smtp_server;

/// The canary login, shared by every test that authenticates: a password unique enough that
/// finding it in any output means it leaked (see [`envoi::assert_no_secret`]).
pub const USER: &str = "envoi-canary";
pub const PASSWORD: &str = "Canary-P4ss-7d3f";

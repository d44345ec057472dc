//! Shared test support: an in-process SMTP server, a run-time test PKI, out-of-process
//! peers (aiosmtpd, smtp-sink), and helpers to run the built binary. Each integration
//! test binary uses it with `mod support;`.

pub mod certs;
pub mod envoi;
pub mod external;
pub mod smtp_server;

//! Shared test support: an in-process SMTP server, a run-time test PKI, and helpers
//! to run the built binary. Each integration test binary uses it with `mod support;`.

pub mod certs;
pub mod envoi;
pub mod smtp_server;

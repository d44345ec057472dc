//! envoi's own SMTP client (RFC 5321, 3207, 4954, 1870, 6152, 6531): connect, TLS, AUTH,
//! and the commands of a transaction as the [`Session`](super::retry::Session) that
//! [`super::retry`] drives.
//!
//! lettre builds the message; envoi owns the wire, because safety lives there: the
//! read buffer must be empty when STARTTLS upgrades (`conn`), every reply line is
//! bounded (`reply`), every reply and write is bounded by its timeout and the deadline
//! at the socket (`conn`), a failed session is shut down rather than asked to QUIT, the
//! server's SIZE is honoured, and DATA is written through the dot-stuffing framing in
//! large writes without a second copy. An [`SmtpSession`] can send many messages over
//! one connection.
//!
//! The files, each importing only those listed before it: `reply` (reply lines, text
//! made printable), `conn` (the socket), `tls`, `fail` (failures in words), `settings`,
//! `session` (the command exchange), `auth` (SASL), `connector`, `report` (`envoi
//! check`).

mod auth;
pub(super) mod conn;
mod connector;
pub(super) mod fail;
pub(super) mod fuzzing;
pub(super) mod reply;
mod report;
mod session;
mod settings;
pub(super) mod tls;

pub(crate) use connector::SmtpConnector;
pub use report::{CertificateReport, ServerReport};
pub(crate) use report::{check, probe_check};
pub(crate) use session::SmtpSession;
pub(crate) use settings::SmtpSettings;

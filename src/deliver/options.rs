//! How to deliver, beyond the profile: the retry [`Policy`], DSN and `-v`, as the
//! command line sets them.
//!
//! A leaf of `deliver/`, so that the SMTP settings can take the [`Dsn`] without
//! importing the folder's `mod.rs`.

use crate::deliver::observe::Transcript;
use crate::deliver::retry::Policy;

/// A request for delivery status notifications (RFC 3461), used when the server
/// offers DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dsn {
    /// `NOTIFY=` on each RCPT: `NEVER`, or some of `SUCCESS`, `FAILURE`, `DELAY`.
    pub notify: Option<Vec<String>>,
    /// `RET=` on MAIL: `FULL` or `HDRS`.
    pub ret: Option<String>,
    /// `ENVID=` on MAIL: the sender's id for the notifications.
    pub envid: Option<String>,
}

/// How to deliver, beyond the profile: the retry policy, DSN and `-v`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryOptions {
    /// Retries, deadline and partial delivery.
    pub policy: Policy,
    /// Delivery status notifications to request, when the server offers DSN.
    pub dsn: Option<Dsn>,
    /// Where the SMTP dialogue goes, line by line, as it happens (`-v`).
    pub transcript: Option<Transcript>,
}

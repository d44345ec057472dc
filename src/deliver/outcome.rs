//! How a delivery ended: each recipient's reply ([`Report`]), a failure with what was
//! done before it ([`Failure`]), and what a transport gives back ([`Delivery`],
//! [`BatchSent`]).
//!
//! A leaf of `deliver/`, apart from `retry` and the transports that produce these
//! values, so that the [`Observer`](super::Observer), the transports and `mod.rs` can
//! all name them without importing each other.

use std::path::PathBuf;

use lettre::Address;

use crate::error::{Error, ErrorKind};
use crate::message::Prepared;

/// The server's answer to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptReply {
    /// The envelope address.
    pub address: String,
    /// The reply code to RCPT TO.
    pub code: u16,
    /// The reply text, made printable.
    pub message: String,
}

impl RcptReply {
    pub(crate) fn new(address: &Address, code: u16, message: String) -> RcptReply {
        RcptReply {
            address: address.to_string(),
            code,
            message,
        }
    }

    /// True for a 5xx refusal, which no retry will change.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

/// What happened to each recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Recipients the server accepted, with the message (their RCPT replies).
    pub delivered: Vec<RcptReply>,
    /// Recipients refused, with the server's last answer for each.
    pub refused: Vec<RcptReply>,
    /// The reply to the last final dot.
    pub data_reply: Option<(u16, String)>,
    /// Sessions opened (an HTTPS API: requests made).
    pub attempts: u32,
    /// Some attempt began to send the message itself (SMTP: after the 354 to DATA, or
    /// from DATA on without PIPELINING; an HTTPS API: once the request's body went): from
    /// then on a failure no longer proves that nobody has it.
    pub payload_sent: bool,
    /// What only some deliveries have (see [`Extras`]); boxed, since a report travels in
    /// every `Result` of a delivery.
    pub extras: Option<Box<Extras>>,
}

/// What only some reports have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// The HTTPS mail API that took the message, and its id for it; `None` over SMTP.
    pub service: Option<ServiceReceipt>,
    /// The profile of a route (`[routes]`) that carried the message, or was tried last;
    /// `None` for a connection of one profile.
    pub route: Option<String>,
    /// With rules by recipient domain (`[routes.NAME]`), each route's recipients and how
    /// they fared, in the order they were sent; empty otherwise.
    pub parts: Vec<RoutePart>,
    /// What became of the copy in the Sent folder (`sent_copy`); `None` when none was
    /// asked for, or it was skipped.
    pub sent_copy: Option<SentCopied>,
}

/// What became of the copy of a sent message in the Sent folder (`sent_copy`). Either
/// way the message was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentCopied {
    /// Appended to this folder.
    Filed(String),
    /// Not made, and why.
    Failed(Error),
}

/// The recipients of one route of a message sent as one transaction per route (rules by
/// recipient domain, `[routes.NAME]`), and how they fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePart {
    /// The profile that carried them, or was tried last.
    pub route: String,
    /// Their envelope addresses.
    pub recipients: Vec<String>,
    /// Why they did not get it; `None` when the server took it.
    pub error: Option<Error>,
}

/// What an HTTPS mail API said when it took a message: accepted for delivery, like
/// SMTP's 250 to the final dot (not yet delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReceipt {
    /// The service, as a sentence names it: "Microsoft Graph", "the Gmail API".
    pub service: &'static str,
    /// The service's id for the request or message (Graph's `request-id`, Gmail's
    /// message `id`), when it gave one: what its support or logs know it by.
    pub id: Option<String>,
}

impl Report {
    /// The HTTPS mail API that took the message, and its id for it; `None` over SMTP.
    pub fn service(&self) -> Option<&ServiceReceipt> {
        self.extras.as_ref()?.service.as_ref()
    }

    /// The profile of a route that carried the message, or was tried last.
    pub fn route(&self) -> Option<&str> {
        self.extras.as_ref()?.route.as_deref()
    }

    /// Each route's part, with rules by recipient domain.
    pub fn parts(&self) -> &[RoutePart] {
        self.extras.as_ref().map_or(&[], |e| e.parts.as_slice())
    }

    /// What became of the copy in the Sent folder, when one was made or tried.
    pub fn sent_copy(&self) -> Option<&SentCopied> {
        self.extras.as_ref()?.sent_copy.as_ref()
    }

    /// The extras, made when there are none yet.
    pub fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// True once `address` needs nothing more: delivered, or refused for good.
    pub fn settled(&self, address: &str) -> bool {
        self.delivered.iter().any(|d| d.address == address)
            || self
                .refused
                .iter()
                .any(|r| r.address == address && r.is_permanent())
    }
}

/// A send that did not fully succeed: why, and what was done before.
#[derive(Debug)]
pub struct Failure {
    /// The reason; its kind decides the exit code.
    pub error: Error,
    /// Recipients delivered or refused before the failure.
    pub report: Report,
}

impl Failure {
    /// Whether the message certainly reached nobody, so that another route may take it
    /// without any risk of a second copy: a temporary failure (connection refused or
    /// timed out, no greeting, 421, a 4xx to the envelope) before any of the message
    /// went, with no recipient served. Never a certificate or login failure (77: a
    /// security failure must not switch relays unseen), a permanent refusal, nor a
    /// failure once the message was on its way (its outcome is unknown).
    pub fn not_accepted(&self) -> bool {
        self.error.kind() == ErrorKind::Temporary
            && !self.report.payload_sent
            && self.report.delivered.is_empty()
            // A 550 beside a 450 makes the whole a temporary failure; the 550 still
            // stands, and another relay must not deliver what this one refused for good.
            && !self.report.refused.iter().any(RcptReply::is_permanent)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Failure {}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            report: Report::default(),
        }
    }
}

/// How a delivery ended well.
#[derive(Debug)]
pub enum Delivery {
    /// The server answered the final dot with 2xx (for some recipients, with
    /// `allow_partial`: see the report).
    Sent {
        /// What was sent.
        prepared: Prepared,
        /// Each recipient's fate.
        report: Report,
    },
    /// The file transport wrote the message.
    Saved {
        /// What was written.
        prepared: Prepared,
        /// Where.
        path: PathBuf,
    },
}

/// How one message of a [`Batch`](super::Batch) ended well.
#[derive(Debug)]
pub enum BatchSent {
    /// Sent over SMTP (to some recipients, with `allow_partial`: see the report).
    Sent(Report),
    /// Written by the file transport, there.
    Saved(PathBuf),
}

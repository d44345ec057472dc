//! What a delivery tells while it goes on: the [`Notice`]s for the user, given to an
//! [`Observer`], and the `-v` dialogue, given to a [`Transcript`].
//!
//! A leaf of `deliver/`: the retry loop, the SMTP session and the OAuth2 code all speak
//! through these, and none of them should import the folder's `mod.rs` to do so.

use std::time::Duration;

use crate::deliver::outcome::Report;
use crate::error::{Error, Result};

/// Receives the SMTP dialogue: the side (`C` client, `S` server, `*` envoi) and one
/// line, already made printable, with AUTH data redacted. A plain function, called
/// while the dialogue goes on, so a stall shows while it stalls.
pub type Transcript = fn(side: &str, line: &str);

/// Something the user should hear about while a delivery goes on.
#[derive(Debug)]
pub enum Notice {
    /// A temporary failure; the next attempt starts after `wait`.
    Retrying {
        /// What failed.
        reason: Error,
        /// The backoff.
        wait: Duration,
        /// The number of the next attempt…
        next_attempt: u32,
        /// …of this many at most.
        attempts: u32,
    },
    /// The server accepted a transaction but the observer could not record it.
    NotRecorded(Error),
    /// The profile allows AUTH without TLS, and it is about to happen: the password
    /// crosses the network in clear (T14).
    PasswordWithoutTls {
        /// `host:port`.
        server: String,
    },
    /// The delivery log (`log`, `--log`) could not be written, or goes elsewhere than
    /// asked: the message's fate is unchanged, but the user must hear it.
    Log(Error),
    /// A profile of a route (`[routes]`) certainly did not take the message (see
    /// [`Failure::not_accepted`](super::Failure::not_accepted)): the next one is tried.
    FailingOver {
        /// The profile that did not take it.
        route: String,
        /// Why.
        reason: Error,
        /// The profile tried next.
        next: String,
    },
    /// Delivery status notifications were asked for and the server does not offer DSN:
    /// the message goes without them.
    DsnNotOffered {
        /// `host:port`.
        server: String,
    },
    /// The message was sent, but its copy in the Sent folder (`sent_copy`) was not made.
    SentCopyFailed(Error),
}

/// Told what happens during a delivery.
pub trait Observer {
    /// After every transaction the server accepted, before anything else is said to it
    /// (even QUIT), so the caller can record who has the message while it is certain.
    /// An error here is reported as [`Notice::NotRecorded`]: the message is delivered
    /// all the same, and retrying it would send it again.
    fn accepted(&mut self, _report: &Report) -> Result<()> {
        Ok(())
    }

    /// A notice for the user.
    fn notice(&mut self, notice: Notice);
}

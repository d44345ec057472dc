//! One prepared message → its delivery: over SMTP with retries (`retry` over
//! `smtp`), or into a directory (`file`). This layer owns who retries and what counts
//! as sent; it prints nothing — what the user should hear goes to an [`Observer`], and
//! the `-v` dialogue to a [`Transcript`].

mod file;
mod retry;
mod smtp;

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::message::Prepared;
use crate::profile::{Profile, Security, Transport};

pub use retry::{Failure, Policy, Report};
pub use smtp::{RcptReply, payload_in_flight};

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

/// How to deliver, beyond the profile: the retry policy and `-v`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryOptions {
    /// Retries, deadline and partial delivery.
    pub policy: Policy,
    /// Where the SMTP dialogue goes, line by line, as it happens (`-v`).
    pub transcript: Option<Transcript>,
}

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

/// Delivers `prepared` through `profile`: writes it to the profile's directory, or
/// sends it over SMTP with retries as `options` say.
pub fn deliver(
    profile: &Profile,
    prepared: Prepared,
    options: &DeliveryOptions,
    observer: &mut dyn Observer,
) -> Result<Delivery, Failure> {
    let smtp = match &profile.transport {
        Transport::File { dir } => {
            let path = file::save_to_dir(dir, &prepared)?;
            return Ok(Delivery::Saved { prepared, path });
        }
        Transport::Smtp(smtp) => smtp,
    };
    // A password command gets what a server command gets: the profile's timeout, cut
    // to what is left before the deadline.
    let left = options
        .policy
        .deadline
        .map(|d| d.saturating_duration_since(std::time::Instant::now()));
    let fetch_timeout = left.map_or(smtp.timeout, |left| smtp.timeout.min(left));
    let login = smtp.login.clone()?;
    let credentials = match login {
        Some((user, source)) => Some((user, source.fetch(fetch_timeout)?)),
        None => None,
    };
    let password = credentials.as_ref().map(|(_, p)| p);
    if password.is_some() && smtp.security == Security::None && smtp.allow_plaintext_auth {
        observer.notice(Notice::PasswordWithoutTls {
            server: format!("{}:{}", smtp.host, smtp.port),
        });
    }
    let settings = smtp::SmtpSettings::new(
        smtp,
        credentials,
        options.transcript,
        options.policy.deadline,
    );
    let mut connector = smtp::SmtpConnector::new(settings);
    let report = retry::send(&mut connector, &prepared, &options.policy, observer)?;
    Ok(Delivery::Sent { prepared, report })
}

/// The one wording of "out of time" for every step of a send.
fn deadline_passed() -> Error {
    Error::new(
        ErrorKind::Temporary,
        "the deadline for the whole send (--timeout) has passed",
    )
}

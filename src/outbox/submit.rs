//! The one way a message goes out, whichever command took it: the sender is picked
//! ([`DefaultSender`]), the message built and signed ([`Signing`], [`prepare`]), then
//! handed on. `send`, `sendmail` and `batch` all come through here, so a rule written
//! here (the sender's precedence, DKIM) cannot drift between them.
//!
//! It sits in `outbox/`, the top library layer, because what follows the build (the
//! idempotency claim, queue or deliver, the ledger) is this layer's own state.

use std::time::SystemTime;

use lettre::message::Mailbox;

use crate::error::{Error, Result};
use crate::message::dkim::Signer;
use crate::message::{self, Email, Prepared, address};
use crate::profile::Connection;

/// The sender of a message that names none itself: the flag (`--from`), else the
/// profile's `from`. Parsed once, so a batch checks it before its first record.
#[derive(Debug, Clone, Default)]
pub struct DefaultSender(Option<Mailbox>);

impl DefaultSender {
    /// `flag`, else the `from` of `connection`'s profile (65 naming the profile when it
    /// is not one address).
    pub fn new(flag: Option<Mailbox>, connection: Option<&Connection>) -> Result<DefaultSender> {
        if flag.is_some() {
            return Ok(DefaultSender(flag));
        }
        let profile_from = connection.and_then(|c| c.profile.from.as_deref().map(|f| (c, f)));
        match profile_from {
            Some((c, from)) => Ok(DefaultSender(Some(address::parse_single(
                &format!("profile {:?}: from", c.name),
                from,
            )?))),
            None => Ok(DefaultSender(None)),
        }
    }

    /// The sender: the message's own From first, then this default (64 when neither).
    pub fn pick(&self, message_from: Option<&Mailbox>) -> Result<Mailbox> {
        message_from.or(self.0.as_ref()).cloned().ok_or_else(|| {
            Error::usage(
                "no sender: give From in the message, --from, or set `from` in the profile",
            )
        })
    }
}

/// How messages through one connection are signed: with the profile's DKIM key when it
/// has `dkim_*` keys (a `--smtp-url` connection never does). The key file is read once
/// here, so a batch reads it once for all its records.
#[derive(Debug, Default)]
pub struct Signing(Option<Signer>);

impl Signing {
    /// Reads `connection`'s DKIM key, if its profile has one (78 for an unreadable or
    /// public key file).
    pub fn of(connection: Option<&Connection>) -> Result<Signing> {
        let dkim = connection.and_then(|c| c.profile.dkim.as_ref());
        Ok(Signing(dkim.map(|d| d.signer()).transpose()?))
    }

    /// `prepared` with its DKIM-Signature made at `now` (the time of its Date header),
    /// or unchanged without a key. Done once, before the message is shown, queued or
    /// sent, so what the outbox keeps is what goes out.
    pub fn sign(&self, mut prepared: Prepared, now: SystemTime) -> Result<Prepared> {
        if let Some(signer) = &self.0 {
            prepared.bytes = signer.sign(std::mem::take(&mut prepared.bytes), now)?;
        }
        Ok(prepared)
    }
}

/// `email` from `from` as the bytes that go out: built (Date `now`, Message-ID, Bcc
/// taken out) and signed.
pub fn prepare(
    email: Email,
    from: &Mailbox,
    signing: &Signing,
    now: SystemTime,
) -> Result<Prepared> {
    signing.sign(message::build(email, from, now)?, now)
}

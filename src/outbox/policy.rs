//! The recipient policy of a profile (`[profiles.NAME.policy]`, the file's and the
//! system's `[policy]`; read and combined by the profile layer) enforced on a message
//! before it is shown, queued or sent: [`crate::outbox::submit`] calls it for every
//! command, so no command can skip it. A message that breaks it is refused (65) before
//! any connection, naming the rule and where it was written.
//!
//! What is checked is the envelope, To, Cc and Bcc alike: a deny pattern refuses, and a
//! recipient must fit every allow list. With `redirect_all` the envelope checked is the
//! one sent (the redirect address alone), while `max_recipients_per_message` counts the
//! recipients the message was for, so a runaway list is caught in staging too. A queued
//! message was checked when it was queued: `outbox flush` sends it as it is.

use lettre::Address;
use lettre::address::Envelope;

use crate::error::{Error, Result};
use crate::message::redirect::{redirect_email, redirect_given};
use crate::message::{Email, Prepared};
use crate::profile::RecipientPolicy;

/// `email` under `policy`: the number of its recipients checked, and sent to the
/// redirect address instead when there is one. The envelope is checked after the build
/// ([`check_envelope`]).
pub(crate) fn apply_to_email(policy: &RecipientPolicy, email: &mut Email) -> Result<()> {
    let mut all: Vec<String> = Vec::new();
    for mailbox in email.to.iter().chain(&email.cc).chain(&email.bcc) {
        let address = mailbox.email.to_string().to_lowercase();
        if !all.contains(&address) {
            all.push(address);
        }
    }
    check_count(policy, all.len())?;
    if let Some(redirect) = &policy.redirect_all {
        redirect_email(email, &redirect.value);
    }
    Ok(())
}

/// A message given whole (sendmail mode, the spool), prepared, under `policy`: counted,
/// redirected when the policy says so, and its envelope checked.
pub(crate) fn apply_to_given(policy: &RecipientPolicy, prepared: Prepared) -> Result<Prepared> {
    check_count(policy, prepared.envelope.to().len())?;
    let prepared = match &policy.redirect_all {
        Some(redirect) => redirect_given(prepared, &redirect.value.email)?,
        None => prepared,
    };
    check_envelope(policy, &prepared.envelope)?;
    Ok(prepared)
}

/// Every recipient of `envelope` against the deny patterns (which win), then against
/// each allow list: 65 naming the first rule that refuses, and where it was written.
pub(crate) fn check_envelope(policy: &RecipientPolicy, envelope: &Envelope) -> Result<()> {
    envelope
        .to()
        .iter()
        .try_for_each(|recipient| check_recipient(policy, recipient))
}

fn check_recipient(policy: &RecipientPolicy, recipient: &Address) -> Result<()> {
    if let Some(deny) = policy.deny.iter().find(|d| d.value.matches(recipient)) {
        return Err(Error::invalid(format!(
            "policy.deny {:?} refuses {recipient} ({}): nothing was sent; take the \
             recipient out, or send through a profile whose policy allows it",
            deny.value.text, deny.origin
        )));
    }
    if let Some(allow) = policy
        .allow
        .iter()
        .find(|a| !a.value.iter().any(|p| p.matches(recipient)))
    {
        let list: Vec<String> = allow
            .value
            .iter()
            .map(|p| format!("{:?}", p.text))
            .collect();
        return Err(Error::invalid(format!(
            "policy.allow [{}] does not list {recipient} ({}): nothing was sent; take the \
             recipient out, or send through a profile whose policy allows it",
            list.join(", "),
            allow.origin
        )));
    }
    Ok(())
}

fn check_count(policy: &RecipientPolicy, count: usize) -> Result<()> {
    match &policy.max_recipients {
        Some(max) if count > usize::try_from(max.value).unwrap_or(usize::MAX) => {
            Err(Error::invalid(format!(
                "policy.max_recipients_per_message {} refuses a message for {count} \
                 recipients ({}): nothing was sent; send it in parts of {} or fewer",
                max.value, max.origin, max.value
            )))
        }
        _ => Ok(()),
    }
}

/// `require_idempotency_key`: 65 when it is set and `key` is not given.
pub(crate) fn check_key(policy: &RecipientPolicy, key: Option<&str>) -> Result<()> {
    match (&policy.require_idempotency_key, key) {
        (Some(origin), None) => Err(Error::invalid(format!(
            "policy.require_idempotency_key ({origin}): nothing was sent; give \
             --idempotency-key KEY (or $ENVOI_IDEMPOTENCY_KEY), the same on every retry of \
             this message, so a second run cannot send it twice"
        ))),
        _ => Ok(()),
    }
}

/// A queued entry's `envelope` under the policy in force when a flush sends it: one
/// written before a rule was added must not slip past it. Its recipients against the
/// deny and allow lists and the recipient cap, and under `redirect_all` nothing but the
/// redirect address (the entry's bytes and envelope were made before the rule: 65, sent
/// again, it is redirected).
pub(crate) fn check_queued(policy: &RecipientPolicy, envelope: &Envelope) -> Result<()> {
    check_envelope(policy, envelope)?;
    check_count(policy, envelope.to().len())?;
    match &policy.redirect_all {
        Some(redirect) if envelope.to().iter().any(|to| *to != redirect.value.email) => {
            Err(Error::invalid(format!(
                "policy.redirect_all {} ({}): this message was queued before the rule and \
                 is addressed to others; it was not sent: send it again to have it redirected",
                redirect.value.email, redirect.origin
            )))
        }
        _ => Ok(()),
    }
}

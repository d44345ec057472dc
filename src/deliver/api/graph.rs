//! Microsoft Graph: `POST {api_url}/users/{mailbox}/sendMail` with the message as MIME
//! (`Content-Type: text/plain`, the whole message in base64), answered `202 Accepted`
//! with an empty body and a `request-id`; `GET …/users/{mailbox}/mailboxSettings` for
//! `envoi check`. (learn.microsoft.com/graph/api/user-sendmail, "Send messages with
//! MIME content".) The MIME form always saves the message to Sent Items.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::shared::{Request, message_bytes, service_error};
use crate::deliver::http::Answer;
use crate::error::{Error, Result};
use crate::message::Prepared;
use crate::profile::{ApiProfile, Service};

/// Graph takes about 4 MB per request; the request body is the message in base64.
const MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;

/// The mailbox that sends: the profile's (`mailbox`, else `from`), else the message's
/// envelope sender.
fn mailbox(api: &ApiProfile, prepared: Option<&Prepared>) -> Result<String> {
    api.mailbox
        .clone()
        .or_else(|| {
            prepared
                .and_then(|p| p.envelope.from())
                .map(ToString::to_string)
        })
        .ok_or_else(|| {
            Error::config(
                "transport = \"graph\" needs the mailbox that sends: set mailbox or from in \
                 the profile",
            )
        })
}

/// `{api_url}/users/{mailbox}/{action}`, the mailbox percent-encoded as one path segment.
fn user_url(api: &ApiProfile, mailbox: &str, action: &str) -> Result<String> {
    let mut url = url::Url::parse(&api.api_url)
        .map_err(|e| Error::config(format!("api_url {}: {e}", api.api_url)))?;
    url.path_segments_mut()
        .map_err(|()| Error::config(format!("api_url {} cannot take a path", api.api_url)))?
        .pop_if_empty()
        .extend(["users", mailbox, action]);
    Ok(url.into())
}

/// The sendMail request for `prepared`: refused before any request when the message in
/// base64 is over Graph's limit (65).
pub(super) fn request(api: &ApiProfile, prepared: &Prepared) -> Result<Request> {
    let mailbox = mailbox(api, Some(prepared))?;
    // Base64 is 4 octets for every 3: the message may be at most 3/4 of the request.
    let limit = MAX_REQUEST_BYTES / 4 * 3;
    let bytes = message_bytes(
        prepared,
        Service::Graph,
        limit,
        &format!(
            "at most {MAX_REQUEST_BYTES} bytes per request, that is {limit} bytes of \
             message once in base64"
        ),
    )?;
    Ok(Request {
        url: user_url(api, &mailbox, "sendMail")?,
        content_type: "text/plain",
        body: STANDARD.encode(&bytes).into_bytes(),
    })
}

/// The service's id when `answer` is a success: Graph answers 202 with `request-id`.
pub(super) fn accepted(answer: &Answer) -> std::result::Result<Option<String>, ()> {
    match answer.status {
        200..=299 => Ok(answer.request_id.clone()),
        _ => Err(()),
    }
}

/// What `envoi check` asks: the mailbox's settings.
pub(super) fn check_url(api: &ApiProfile) -> Result<String> {
    user_url(api, &mailbox(api, None)?, "mailboxSettings")
}

/// What the answer to [`check_url`] proves, or `None` for a failure (the caller words
/// it): 200, the token may read the mailbox; 403 `ErrorAccessDenied`, the token is valid
/// and the mailbox exists, but the app may not read its settings (a sender needs only
/// Mail.Send).
pub(super) fn checked(api: &ApiProfile, answer: &Answer) -> Option<(Option<String>, String)> {
    let mailbox = api.mailbox.clone();
    match answer.status {
        200..=299 => Some((
            mailbox,
            "the token was accepted and the mailbox exists (its settings are readable)".into(),
        )),
        403 if service_error(&answer.body).0.as_deref() == Some("ErrorAccessDenied") => Some((
            mailbox,
            "the token was accepted and the mailbox exists; the app may not read its \
                 settings, which a sender does not need (sending needs Mail.Send)"
                .into(),
        )),
        _ => None,
    }
}

//! The Gmail API: `POST {api_url}/gmail/v1/users/me/messages/send` with `{"raw": …}`,
//! the message in base64url, or above 5 MB the media upload `POST
//! {api_url}/upload/gmail/v1/users/me/messages/send?uploadType=media` with the message
//! itself (`message/rfc822`, at most 35 MB); answered 200 with the message's `id`.
//! `GET …/gmail/v1/users/me/profile` for `envoi check`.
//! (developers.google.com/gmail/api/guides/sending, …/guides/uploads.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use serde::Deserialize;

use super::shared::{Request, message_bytes, service_error};
use crate::deliver::http::Answer;
use crate::error::Result;
use crate::message::Prepared;
use crate::profile::{ApiProfile, Service};

/// Above this the message goes by media upload ("simple upload: 5 MB or less" is the
/// guide's line for the JSON form).
const MAX_RAW_BYTES: u64 = 5 * 1024 * 1024;

/// The largest message the media upload takes.
const MAX_MESSAGE_BYTES: u64 = 35 * 1024 * 1024;

/// The send request for `prepared`: refused before any request over 35 MB (65).
pub(super) fn request(api: &ApiProfile, prepared: &Prepared) -> Result<Request> {
    let bytes = message_bytes(
        prepared,
        Service::Gmail,
        MAX_MESSAGE_BYTES,
        &format!("at most {MAX_MESSAGE_BYTES} bytes"),
    )?;
    if bytes.len() as u64 > MAX_RAW_BYTES {
        return Ok(Request {
            url: format!(
                "{}/upload/gmail/v1/users/me/messages/send?uploadType=media",
                api.api_url
            ),
            content_type: "message/rfc822",
            body: bytes,
        });
    }
    let body = serde_json::json!({ "raw": URL_SAFE.encode(&bytes) });
    Ok(Request {
        url: format!("{}/gmail/v1/users/me/messages/send", api.api_url),
        content_type: "application/json",
        body: body.to_string().into_bytes(),
    })
}

/// The message id when `answer` is a success: 200 with the Message resource. A 2xx
/// whose body was cut off is a success without an id.
pub(super) fn accepted(answer: &Answer) -> std::result::Result<Option<String>, ()> {
    #[derive(Deserialize)]
    struct Message {
        id: Option<String>,
    }
    match answer.status {
        200..=299 => Ok(serde_json::from_str::<Message>(&answer.body)
            .ok()
            .and_then(|m| m.id)
            .filter(|id| id.len() <= 200 && id.bytes().all(|b| b.is_ascii_graphic()))),
        _ => Err(()),
    }
}

/// What `envoi check` asks: the token user's profile.
pub(super) fn check_url(api: &ApiProfile) -> String {
    format!("{}/gmail/v1/users/me/profile", api.api_url)
}

/// What the answer to [`check_url`] proves, or `None` for a failure (the caller words
/// it): 200, the token works and belongs to `emailAddress`; 403
/// `insufficientPermissions`, the token is valid but has only the narrow `gmail.send`
/// scope, which is what a sender needs.
pub(super) fn checked(answer: &Answer) -> Option<(Option<String>, String)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Profile {
        email_address: Option<String>,
    }
    match answer.status {
        200..=299 => {
            let address = serde_json::from_str::<Profile>(&answer.body)
                .ok()
                .and_then(|p| p.email_address)
                .map(|a| crate::deliver::http::printable(&a, &[]));
            Some((
                address,
                "the token was accepted (it may read the profile, so it holds more than \
                 gmail.send)"
                    .into(),
            ))
        }
        403 if service_error(&answer.body).0.as_deref() == Some("insufficientPermissions") => {
            Some((
                None,
                "the token was accepted; it may not read the profile, as with only the \
                 gmail.send scope, which is all a sender needs"
                    .into(),
            ))
        }
        _ => None,
    }
}

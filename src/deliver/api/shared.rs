//! What the Graph and Gmail files and the transport share: the request, the bytes a
//! service gets, and the services' error JSON. A leaf of `api/`.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::message::Prepared;
use crate::profile::Service;

/// One request ready to go: built once per message, sent once per attempt.
pub(super) struct Request {
    pub(super) url: String,
    pub(super) content_type: &'static str,
    pub(super) body: Vec<u8>,
}

/// The bytes the service gets: the message with its envelope written into its header
/// (Bcc), refused before any request when it is over `limit` octets (65, like SMTP's
/// SIZE). `limit_words` says what the limit is.
pub(super) fn message_bytes(
    prepared: &Prepared,
    service: Service,
    limit: u64,
    limit_words: &str,
) -> Result<Vec<u8>> {
    let too_big = |size: u64| {
        Error::invalid(format!(
            "the message is {size} bytes and {} takes {limit_words}: nothing was sent; make \
             it smaller (attachments as links) or send it over SMTP",
            service.name()
        ))
    };
    if prepared.bytes.len() > limit {
        return Err(too_big(prepared.bytes.len()));
    }
    let bytes = crate::message::given::with_envelope_in_header(
        &prepared.bytes.to_vec()?,
        &prepared.envelope,
    )?;
    if bytes.len() as u64 > limit {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A service's error JSON: Graph's `{"error": {"code": "ErrorAccessDenied", "message"}}`
/// or Google's `{"error": {"code": 403, "message", "status", "errors": [{"reason"}]}}`:
/// its code (Google's first reason, else its status) and message.
pub(super) fn service_error(body: &str) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<Inner>,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<serde_json::Value>,
        message: Option<String>,
        status: Option<String>,
        #[serde(default)]
        errors: Vec<Reason>,
    }
    #[derive(Deserialize)]
    struct Reason {
        reason: Option<String>,
    }
    let Some(inner) = serde_json::from_str::<Envelope>(body)
        .ok()
        .and_then(|e| e.error)
    else {
        return (None, None);
    };
    let code = match inner.code {
        Some(serde_json::Value::String(code)) => Some(code),
        _ => inner
            .errors
            .into_iter()
            .find_map(|r| r.reason)
            .or(inner.status),
    };
    (code, inner.message.filter(|m| !m.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_in_both_shapes() {
        assert_eq!(
            service_error(
                r#"{"error":{"code":"ErrorAccessDenied","message":"Access is denied."}}"#
            ),
            (
                Some("ErrorAccessDenied".into()),
                Some("Access is denied.".into())
            )
        );
        assert_eq!(
            service_error(
                r#"{"error":{"code":403,"message":"Request had insufficient authentication scopes.","status":"PERMISSION_DENIED","errors":[{"message":"x","domain":"global","reason":"insufficientPermissions"}]}}"#
            ),
            (
                Some("insufficientPermissions".into()),
                Some("Request had insufficient authentication scopes.".into())
            )
        );
        assert_eq!(service_error("<html>"), (None, None));
    }
}

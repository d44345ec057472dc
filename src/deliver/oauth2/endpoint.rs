//! Speaking to a token endpoint: the form POSTed (over envoi's one HTTPS client, which
//! trusts the authorities the SMTP connection trusts), and its answer read as a token or
//! an error in its own words.
//!
//! A leaf of `oauth2/`, apart from [`access_token`](super::access_token) and `login`,
//! which both speak to the endpoint without importing each other.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::deliver::http::{Client, printable};
use crate::error::{Error, ErrorKind, Result};
use crate::profile::Proxy;

/// The endpoint's JSON answer, success (RFC 6749 §5.1) or error (§5.2).
#[derive(Deserialize)]
struct Answer {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// A successful answer, checked.
pub(super) struct Granted {
    pub(super) access_token: String,
    pub(super) expires_in: Option<u64>,
    pub(super) refresh_token: Option<String>,
}

/// POSTs the form (RFC 6749 §4.4.2 / §6) through `proxy`, if any, and reads the answer.
pub(super) fn post(
    url: &str,
    form: &[(&str, String)],
    ca_file: Option<&Path>,
    proxy: Option<&Proxy>,
    timeout: Duration,
    secrets: &[String],
) -> Result<Granted> {
    let (status, text) = request(url, form, ca_file, proxy, timeout)?;
    interpret(url, status, &text, secrets)
}

/// POSTs the form to `url` (over envoi's one HTTPS client, through `proxy` if any) and
/// returns the HTTP status and body, whatever they are: the caller reads them (a
/// device-code poll expects some errors).
pub(super) fn request(
    url: &str,
    form: &[(&str, String)],
    ca_file: Option<&Path>,
    proxy: Option<&Proxy>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let client = Client::new(
        ca_file,
        None,
        proxy,
        format!("the token endpoint {url}"),
        "oauth2.token_url",
    )?;
    let answer = client.post_form(url, form, timeout)?;
    Ok((answer.status, answer.body))
}

/// The endpoint's answer → a token, or the error in the endpoint's words: 77 for a
/// refusal (`invalid_client`, `invalid_grant`, …), 75 for a server in trouble.
pub(super) fn interpret(url: &str, status: u16, text: &str, secrets: &[String]) -> Result<Granted> {
    let shown = |s: &str| printable(s, secrets);
    let answer: Option<Answer> = serde_json::from_str(text).ok();
    if let Some(Answer {
        error: Some(code),
        error_description,
        ..
    }) = &answer
    {
        let kind = match code.as_str() {
            "temporarily_unavailable" | "server_error" | "slow_down" => ErrorKind::Temporary,
            _ if status >= 500 || status == 429 => ErrorKind::Temporary,
            _ => ErrorKind::AuthRefused,
        };
        let description = error_description
            .as_deref()
            .map(|d| format!(": {}", shown(d)))
            .unwrap_or_default();
        return Err(Error::new(
            kind,
            format!(
                "the token endpoint {url} refused (HTTP {status}): {}{description}",
                shown(code)
            ),
        ));
    }
    let excerpt = || {
        let text = shown(text.trim());
        if text.is_empty() {
            "an empty body".to_owned()
        } else {
            format!("\"{text}\"")
        }
    };
    match status {
        200..=299 => {}
        429 | 500..=599 => {
            return Err(Error::new(
                ErrorKind::Temporary,
                format!(
                    "the token endpoint {url} answered HTTP {status}: {}",
                    excerpt()
                ),
            ));
        }
        300..=399 | 404 | 405 => {
            return Err(Error::config(format!(
                "oauth2.token_url {url} is not a token endpoint (HTTP {status}: {}); check \
                 token_url or tenant",
                excerpt()
            )));
        }
        _ => {
            return Err(Error::new(
                ErrorKind::AuthRefused,
                format!(
                    "the token endpoint {url} answered HTTP {status}: {}",
                    excerpt()
                ),
            ));
        }
    }
    let not_a_token = |why: &str| {
        Error::new(
            ErrorKind::Unavailable,
            format!("the token endpoint {url} answered HTTP {status} but {why}"),
        )
    };
    let Some(answer) = answer else {
        return Err(not_a_token(&format!("not with JSON: {}", excerpt())));
    };
    let access_token = match answer.access_token {
        Some(token) if !token.is_empty() => token,
        _ => return Err(not_a_token("without an access_token")),
    };
    // RFC 6750's b64token: it goes inside the SASL message, between ^A separators.
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(not_a_token(
            "the access_token holds characters a bearer token cannot have",
        ));
    }
    if let Some(kind) = &answer.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(not_a_token(&format!(
            "token_type is {:?}, not Bearer",
            shown(kind)
        )));
    }
    let expires_in = match &answer.expires_in {
        None => None,
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        // Some endpoints (Azure AD v1) send the number as a string.
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    Ok(Granted {
        access_token,
        expires_in,
        refresh_token: answer.refresh_token.filter(|t| !t.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of an answer that must not give a token (`Granted` has no `Debug`: it
    /// holds one).
    fn refused(status: u16, text: &str, secrets: &[String]) -> Error {
        match interpret("u", status, text, secrets) {
            Ok(_) => panic!("{status} {text} gave a token"),
            Err(e) => e,
        }
    }

    #[test]
    fn answers_in_the_endpoints_words_and_kinds() {
        let ok = interpret(
            "u",
            200,
            r#"{"access_token":"at-1","token_type":"Bearer","expires_in":"3599"}"#,
            &[],
        )
        .unwrap();
        assert_eq!(
            (ok.access_token.as_str(), ok.expires_in),
            ("at-1", Some(3599))
        );
        let err = refused(
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret s3cret provided."}"#,
            &["s3cret".to_owned()],
        );
        assert_eq!(err.kind(), ErrorKind::AuthRefused);
        assert!(
            err.message().contains("invalid_client: AADSTS7000215"),
            "{err}"
        );
        assert!(!err.message().contains("s3cret"), "{err}");
        let err = refused(503, "busy", &[]);
        assert_eq!(err.kind(), ErrorKind::Temporary);
        let err = refused(400, r#"{"error":"temporarily_unavailable"}"#, &[]);
        assert_eq!(err.kind(), ErrorKind::Temporary);
        let err = refused(404, "<html>", &[]);
        assert_eq!(err.kind(), ErrorKind::Config);
        let err = refused(200, r#"{"access_token":"a b"}"#, &[]);
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let err = refused(200, r#"{"access_token":"a","token_type":"mac"}"#, &[]);
        assert!(err.message().contains("not Bearer"), "{err}");
    }
}

//! The connector's Send Email payload as JSON (`envoi send --input FILE`).
//!
//! Property names are the action's own: To, CC, Bcc, Subject, Body, From, IsHtml,
//! Importance and Attachments of {ContentData, ContentType, ContentTransferEncoding,
//! FileName, ContentId}, and the action's V3 ReadReceipt and DeliveryReceipt (an
//! address each). Unknown properties are refused, so a typo is not silently ignored.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::message::check;
use crate::message::draft::{
    AttachmentDraft, AttachmentSource, DataEncoding, Draft, Sourced, Text,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct Payload {
    to: Option<String>,
    #[serde(rename = "CC")]
    cc: Option<String>,
    bcc: Option<String>,
    subject: Option<String>,
    body: Option<String>,
    from: Option<String>,
    is_html: Option<bool>,
    importance: Option<String>,
    attachments: Option<Vec<PayloadAttachment>>,
    read_receipt: Option<String>,
    delivery_receipt: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct PayloadAttachment {
    content_data: String,
    content_type: Option<String>,
    content_transfer_encoding: Option<String>,
    file_name: Option<String>,
    content_id: Option<String>,
}

/// Parses a payload. `origin` names the input (a path or `-`) in errors.
pub fn parse(origin: &str, json: &[u8]) -> Result<Draft> {
    parse_record(&format!("--input {origin:?}"), json)
}

/// Parses a payload that is one record of many (`envoi batch`); `what` ("line 7")
/// starts its errors.
pub fn parse_record(what: &str, json: &[u8]) -> Result<Draft> {
    let payload: Payload = serde_json::from_slice(json).map_err(|e| {
        // serde names an unknown field as decoded: a `\r\n` in it would break the line.
        let why = check::escape_controls(&e.to_string());
        Error::invalid(format!("{what}: not a Send Email payload: {why}"))
    })?;
    let list = |label: &str, value: Option<String>| value.map(|v| Sourced::new(label, vec![v]));
    let attachments = payload
        .attachments
        .map(|list| {
            list.into_iter()
                .enumerate()
                .map(|(i, a)| attachment(i, a))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(Draft {
        from: payload.from.map(|v| Sourced::new("From", v)),
        to: list("To", payload.to),
        cc: list("CC", payload.cc),
        bcc: list("Bcc", payload.bcc),
        reply_to: None,
        subject: payload.subject.map(|v| Sourced::new("Subject", v)),
        body: payload.body.map(|v| Sourced::new("Body", Text::Inline(v))),
        is_html: payload.is_html,
        text: None,
        importance: payload.importance.map(|v| Sourced::new("Importance", v)),
        attachments,
        headers: None,
        read_receipt: payload.read_receipt.map(|v| Sourced::new("ReadReceipt", v)),
        delivery_receipt: payload
            .delivery_receipt
            .map(|v| Sourced::new("DeliveryReceipt", v)),
        allow_empty_body: false,
        no_text_part: false,
        markdown: false,
        template: None,
        ..Draft::default()
    })
}

fn attachment(index: usize, a: PayloadAttachment) -> Result<AttachmentDraft> {
    let label = format!("Attachments[{index}]");
    let encoding = match &a.content_transfer_encoding {
        Some(e) => DataEncoding::parse(&format!("{label}.ContentTransferEncoding"), e)?,
        None => DataEncoding::Base64,
    };
    Ok(AttachmentDraft {
        source: AttachmentSource::Data(Text::Inline(a.content_data), encoding),
        file_name: a.file_name,
        content_type: a.content_type,
        content_id: a.content_id,
        label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn reads_the_connector_property_names() {
        let json = br#"{
            "To": "a@example.com; b@example.com", "CC": "c@example.com", "Bcc": "d@example.com",
            "Subject": "Hi", "Body": "<b>x</b>", "From": "me@example.com", "IsHtml": true,
            "Importance": "High",
            "Attachments": [{"ContentData": "aGk=", "ContentType": "text/plain",
                             "FileName": "hi.txt", "ContentId": "hi"},
                            {"ContentData": "plain text", "ContentTransferEncoding": "none",
                             "FileName": "p.txt"}]
        }"#;
        let email = parse("-", json).unwrap().into_email().unwrap();
        assert_eq!(email.to.len(), 2);
        assert_eq!(email.cc[0].email.to_string(), "c@example.com");
        assert_eq!(email.bcc[0].email.to_string(), "d@example.com");
        assert!(email.body.is_html);
        assert_eq!(email.importance, crate::message::email::Importance::High);
        assert_eq!(email.attachments[0].data, b"hi".to_vec().into());
        assert_eq!(email.attachments[0].content_id.as_deref(), Some("hi"));
        assert_eq!(email.attachments[1].data, b"plain text".to_vec().into());
    }

    #[test]
    fn unknown_properties_and_bad_json_are_invalid_data() {
        let err = parse("p.json", br#"{"Too": "a@example.com"}"#).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.message().contains("Too"), "{err}");
        assert_eq!(parse("-", b"{").unwrap_err().kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn errors_name_the_property() {
        let json = br#"{"To": "bob@", "Subject": "x"}"#;
        let err = parse("-", json).unwrap().into_email().unwrap_err();
        assert_eq!(err.message(), r#"To: "bob@" is not a valid address"#);
        let json = br#"{"To": "a@example.com", "Attachments": [{"ContentData": "%%%"}]}"#;
        let err = parse("-", json).unwrap().into_email().unwrap_err();
        assert!(err.message().starts_with("Attachments[0]:"), "{err}");
    }
}

//! [`Email`]: one email to send, already validated.
//!
//! The command line, a connector JSON payload and (later) a batch row all become an
//! `Email`; everything after that — MIME building, delivery — sees only this type.

use lettre::message::Mailbox;
use lettre::message::header::ContentType;

use crate::message::attached_file::AttachedFile;

/// One email to send. Build it with [`crate::message::draft::Draft`] from untrusted text, or
/// fill it in directly from Rust (see `examples/send.rs`).
#[derive(Debug, Clone)]
pub struct Email {
    /// Sender. When `None`, the profile's `from` is used.
    pub from: Option<Mailbox>,
    /// Visible recipients.
    pub to: Vec<Mailbox>,
    /// Visible copies.
    pub cc: Vec<Mailbox>,
    /// Blind copies: in the envelope only, never in a header.
    pub bcc: Vec<Mailbox>,
    /// Where replies should go.
    pub reply_to: Vec<Mailbox>,
    /// Subject line (non-ASCII is RFC 2047-encoded when the message is built).
    pub subject: String,
    /// Main body.
    pub body: Body,
    /// `High` / `Normal` / `Low`.
    pub importance: Importance,
    /// Attachments and inline parts.
    pub attachments: Vec<Attachment>,
    /// Extra headers, names already checked against RFC 5322.
    pub headers: Vec<(String, String)>,
    /// The connector's ReadReceipt: `Disposition-Notification-To` (RFC 8098), where a
    /// recipient's mail program may send a read notification.
    pub read_receipt: Option<Mailbox>,
    /// The connector's DeliveryReceipt: `Return-Receipt-To`, plus a DSN request
    /// (RFC 3461) when the server offers DSN.
    pub delivery_receipt: Option<Mailbox>,
}

/// The body of an email.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// The main text (HTML when `is_html`).
    pub content: String,
    /// The connector's IsHtml.
    pub is_html: bool,
    /// A plain-text alternative to an HTML body (multipart/alternative).
    pub text_alternative: Option<String>,
}

/// The connector's Importance property.
///
/// No `X-MSMail-Priority`: Outlook reads `Importance`, and that header without the
/// `X-MimeOLE` that Outlook Express wrote beside it is a spam sign (SpamAssassin's
/// MISSING_MIMEOLE, +0.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Importance {
    /// `Importance: High`, `X-Priority: 1 (Highest)`.
    High,
    /// No header at all.
    #[default]
    Normal,
    /// `Importance: Low`, `X-Priority: 5 (Lowest)`.
    Low,
}

impl Importance {
    /// Parses `high`, `normal` or `low`, in any case.
    pub fn parse(what: &str, value: &str) -> crate::error::Result<Importance> {
        match value.to_ascii_lowercase().as_str() {
            "high" => Ok(Importance::High),
            "normal" => Ok(Importance::Normal),
            "low" => Ok(Importance::Low),
            _ => Err(crate::error::Error::invalid(format!(
                "{what}: {value:?} is not an importance (expected high, normal or low)"
            ))),
        }
    }

    /// The headers this importance adds, in order.
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Importance::High => &[("Importance", "High"), ("X-Priority", "1 (Highest)")],
            Importance::Normal => &[],
            Importance::Low => &[("Importance", "Low"), ("X-Priority", "5 (Lowest)")],
        }
    }
}

/// One attachment: the connector's FileName, ContentType, ContentData and ContentId.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// File name shown to the recipient (non-ASCII is RFC 2231-encoded).
    pub file_name: String,
    /// MIME type.
    pub content_type: ContentType,
    /// The bytes, or the file they are in.
    pub data: AttachmentData,
    /// With a Content-ID the part is inline (multipart/related), for `cid:` in HTML.
    pub content_id: Option<String>,
}

/// What an attachment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentData {
    /// Bytes that came in memory: a JSON payload's ContentData, standard input, or built
    /// by a program.
    Bytes(Vec<u8>),
    /// A file attached by its path: it stays in the file until the message is written,
    /// so a large attachment is never held in memory (see [`AttachedFile`]).
    File(AttachedFile),
}

impl AttachmentData {
    /// Its length in bytes (a file's when the message was drafted).
    pub fn len(&self) -> u64 {
        match self {
            AttachmentData::Bytes(bytes) => bytes.len() as u64,
            AttachmentData::File(file) => file.len(),
        }
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for AttachmentData {
    fn from(bytes: Vec<u8>) -> AttachmentData {
        AttachmentData::Bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn importance_is_case_insensitive() {
        assert_eq!(
            Importance::parse("--importance", "HIGH").unwrap(),
            Importance::High
        );
        assert_eq!(
            Importance::parse("Importance", "Low").unwrap(),
            Importance::Low
        );
        assert_eq!(
            Importance::parse("Importance", "normal").unwrap(),
            Importance::Normal
        );
        assert!(Importance::parse("--importance", "urgent").is_err());
    }

    #[test]
    fn importance_headers_mirror_each_other() {
        assert!(Importance::Normal.headers().is_empty());
        assert_eq!(Importance::High.headers()[1], ("X-Priority", "1 (Highest)"));
        assert_eq!(Importance::Low.headers()[1], ("X-Priority", "5 (Lowest)"));
        assert_eq!(Importance::Low.headers().len(), 2, "no X-MSMail-Priority");
    }
}

//! [`Draft`]: an email as untrusted text, before validation.
//!
//! The command line and the connector's JSON payload both produce a `Draft`; each value
//! carries the label of where it came from (`--to`, `Attachments[1].ContentData`) so an
//! error can name it. [`Draft::overlay`] applies "flags override the payload", and
//! [`Draft::into_email`] reads files, decodes base64 and checks every value, giving a
//! validated [`Email`] or the first error. Nothing here touches the network.

use std::path::PathBuf;

use base64::Engine;
use lettre::message::header::ContentType;

use crate::error::{Error, ErrorKind, Result};
use crate::message::address;
use crate::message::check;
use crate::message::email::{Attachment, AttachmentData, Body, Email, Importance};
use crate::message::input::{
    Confine, attachment_data, folder_of, is_stdin, read_bytes, stdin_is_piped,
};
use crate::message::{given, images, markdown, template};

/// A value and the flag or property it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// `--to`, `To`, `Attachments[0].FileName`…
    pub label: String,
    /// The value as given.
    pub value: T,
}

impl<T> Sourced<T> {
    /// Pairs a value with its label.
    pub fn new(label: impl Into<String>, value: T) -> Sourced<T> {
        Sourced {
            label: label.into(),
            value,
        }
    }
}

/// Where a text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    /// Given inline.
    Inline(String),
    /// Read from a file; `-` is standard input.
    File(PathBuf),
}

/// How an attachment's data is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataEncoding {
    /// ContentTransferEncoding `base64`: the text is base64 of the bytes.
    Base64,
    /// ContentTransferEncoding `none`: the text is the content itself.
    None,
}

impl DataEncoding {
    /// Parses `base64` or `none` (any case).
    pub fn parse(what: &str, value: &str) -> Result<DataEncoding> {
        match value.to_ascii_lowercase().as_str() {
            "base64" => Ok(DataEncoding::Base64),
            "none" => Ok(DataEncoding::None),
            _ => Err(Error::invalid(format!(
                "{what}: {value:?} is not a transfer encoding (expected base64 or none)"
            ))),
        }
    }
}

/// Where an attachment's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachmentSource {
    /// A file to attach as it is (`--attach PATH`).
    Path(PathBuf),
    /// The connector's ContentData, inline or from `@FILE`, in the given encoding.
    Data(Text, DataEncoding),
}

/// One attachment as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentDraft {
    /// Names the attachment in errors: `--attach #2`, `Attachments[0]`.
    pub label: String,
    /// The bytes.
    pub source: AttachmentSource,
    /// FileName; for a path, defaults to the path's file name.
    pub file_name: Option<String>,
    /// ContentType; defaults to a guess from the file name.
    pub content_type: Option<String>,
    /// ContentId: makes the part inline.
    pub content_id: Option<String>,
}

/// Which local images of an HTML body go inside the message (see "What envoi reads" in
/// the README).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Images {
    /// `--embed-images`: embed the local images of a body that came from data (a
    /// payload, a batch record), which are otherwise left as they are.
    pub embed_data: bool,
    /// `--image-root DIR`: folders besides the body's own that a `src` may name.
    pub roots: Vec<PathBuf>,
}

/// An email as untrusted text, each value labelled with its origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Draft {
    /// From.
    pub from: Option<Sourced<String>>,
    /// To (each value may hold several addresses).
    pub to: Option<Sourced<Vec<String>>>,
    /// CC.
    pub cc: Option<Sourced<Vec<String>>>,
    /// Bcc.
    pub bcc: Option<Sourced<Vec<String>>>,
    /// Reply-To.
    pub reply_to: Option<Sourced<Vec<String>>>,
    /// Subject.
    pub subject: Option<Sourced<String>>,
    /// Body.
    pub body: Option<Sourced<Text>>,
    /// IsHtml.
    pub is_html: Option<bool>,
    /// Plain-text alternative of an HTML body.
    pub text: Option<Sourced<Text>>,
    /// Importance.
    pub importance: Option<Sourced<String>>,
    /// Attachments; `Some` replaces the other source's list as a whole.
    pub attachments: Option<Vec<AttachmentDraft>>,
    /// Extra headers as `Name: value`.
    pub headers: Option<Sourced<Vec<String>>>,
    /// ReadReceipt: where read notifications go.
    pub read_receipt: Option<Sourced<String>>,
    /// DeliveryReceipt: where delivery notifications go.
    pub delivery_receipt: Option<Sourced<String>>,
    /// Send an HTML body without the plain-text alternative envoi otherwise writes
    /// from it (`--no-text-part`).
    pub no_text_part: bool,
    /// The body is Markdown (`--markdown`): sent as HTML, with the source as its text.
    pub markdown: bool,
    /// Render the subject, body and text as templates with these variables
    /// (`--template`); `None`: they are sent as written.
    pub template: Option<template::Vars>,
    /// Send a body read from a file or standard input even when it is empty
    /// (`--allow-empty`); otherwise that is an error (66), since it usually means the
    /// program feeding it failed.
    pub allow_empty_body: bool,
    /// Which local images of an HTML body are embedded, and from where.
    pub images: Images,
    /// The folder of the data the body came from (a payload file's, a batch input's;
    /// the current one for standard input), when the body is data rather than the
    /// user's own text: its local images are embedded only with
    /// [`Images::embed_data`], and only from under this folder (see [`Draft::body_is_data`]).
    pub body_data: Option<PathBuf>,
    /// When nothing gives a body and nothing else reads standard input, read the body
    /// from it if a program piped it there ([`stdin_is_piped`]; not a terminal or
    /// `/dev/null`), as mail(1) does: `echo hello | envoi send …` must not send an empty
    /// message. An empty pipe leaves the body empty.
    pub body_from_stdin: bool,
}

/// `envoi send < msg.eml`: a whole message piped where a body was expected. Refused
/// (64) rather than sent with a hint: sent, its header would arrive as the text of a new
/// message (or, without --to, fail as "no recipient"); `sendmail -t` sends it as it is.
fn whole_message_on_stdin(fields: &[String]) -> Error {
    let shown: Vec<&str> = fields.iter().take(5).map(String::as_str).collect();
    Error::usage(format!(
        "standard input holds a whole message (header fields {}{}), but `envoi send` \
         builds a new one from its flags and would send that as its body. To send it as \
         it is, recipients from its To, Cc and Bcc: `envoi sendmail -t < FILE` (with \
         --profile or --config as for send); to send the text as the body anyway: \
         --body-file -",
        shown.join(", "),
        if fields.len() > shown.len() {
            ", …"
        } else {
            ""
        }
    ))
}

/// What allows an image from outside the body's folder, for the error that refuses it.
const IMAGE_ROOT_HINT: &str = "give --image-root DIR to allow another folder";

/// Headers envoi writes itself; `--header` may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "disposition-notification-to",
    "return-receipt-to",
    "content-id",
    "importance",
    "x-priority",
    "x-msmail-priority",
];

impl Draft {
    /// Every property set in `over` replaces the one here ("flags override the payload").
    pub fn overlay(self, over: Draft) -> Draft {
        // The body's origin goes with the body.
        let body_data = if over.body.is_some() {
            over.body_data
        } else {
            over.body_data.or(self.body_data)
        };
        Draft {
            from: over.from.or(self.from),
            to: over.to.or(self.to),
            cc: over.cc.or(self.cc),
            bcc: over.bcc.or(self.bcc),
            reply_to: over.reply_to.or(self.reply_to),
            subject: over.subject.or(self.subject),
            body: over.body.or(self.body),
            is_html: over.is_html.or(self.is_html),
            text: over.text.or(self.text),
            importance: over.importance.or(self.importance),
            attachments: over.attachments.or(self.attachments),
            headers: over.headers.or(self.headers),
            read_receipt: over.read_receipt.or(self.read_receipt),
            delivery_receipt: over.delivery_receipt.or(self.delivery_receipt),
            no_text_part: over.no_text_part || self.no_text_part,
            markdown: over.markdown || self.markdown,
            template: over.template.or(self.template),
            allow_empty_body: over.allow_empty_body || self.allow_empty_body,
            images: Images {
                embed_data: over.images.embed_data || self.images.embed_data,
                roots: if over.images.roots.is_empty() {
                    self.images.roots
                } else {
                    over.images.roots
                },
            },
            body_data,
            body_from_stdin: over.body_from_stdin || self.body_from_stdin,
        }
    }

    /// Marks the body as data read from a file in `folder` (a payload's, a batch
    /// input's): its local images are embedded only with `--embed-images`, and then
    /// only from under `folder` or an `--image-root`.
    pub fn body_is_data(self, folder: PathBuf) -> Draft {
        Draft {
            body_data: self.body.is_some().then_some(folder),
            ..self
        }
    }

    /// How many values would read standard input (`-`); more than one is
    /// [`stdin_read_twice`].
    pub fn stdin_readers(&self) -> usize {
        let texts = [&self.body, &self.text]
            .into_iter()
            .flatten()
            .filter(|t| matches!(&t.value, Text::File(p) if is_stdin(p)));
        let attachments = self.attachments.iter().flatten().filter(|a| {
            matches!(&a.source,
                AttachmentSource::Path(p) | AttachmentSource::Data(Text::File(p), _) if is_stdin(p))
        });
        texts.count() + attachments.count()
    }

    /// Reads files, decodes data and checks every value.
    ///
    /// Errors: 64 when no recipient is given, 65 for a bad value, 66 for an unreadable file.
    pub fn into_email(mut self) -> Result<Email> {
        if self.stdin_readers() > 1 {
            return Err(stdin_read_twice());
        }
        if self.body.is_none()
            && self.body_from_stdin
            && self.stdin_readers() == 0
            && stdin_is_piped()
        {
            let piped = read_text(Sourced::new(
                "standard input",
                Text::File(PathBuf::from("-")),
            ))?;
            if let Some(fields) = given::whole_message_fields(&piped) {
                return Err(whole_message_on_stdin(&fields));
            }
            self.body =
                (!piped.is_empty()).then(|| Sourced::new("standard input", Text::Inline(piped)));
        }
        let list = |field: Option<Sourced<Vec<String>>>| match field {
            Some(s) => address::parse_lists(&s.label, &s.value),
            None => Ok(Vec::new()),
        };
        let to = list(self.to)?;
        let cc = list(self.cc)?;
        let bcc = list(self.bcc)?;
        let reply_to = list(self.reply_to)?;
        if to.is_empty() && cc.is_empty() && bcc.is_empty() {
            return Err(Error::usage(
                "no recipient: give at least one of --to, --cc or --bcc",
            ));
        }
        let from = self
            .from
            .map(|s| address::parse_single(&s.label, &s.value))
            .transpose()?;
        let vars = self.template.as_ref();
        let rendered = |label: &str, text: String, html: bool| match vars {
            Some(vars) => template::render(label, &text, vars, html),
            None => Ok(text),
        };
        let subject = match self.subject {
            Some(s) => {
                let value = rendered(&s.label, s.value, false)?;
                check::header_text(&s.label, &value)?;
                value
            }
            None => String::new(),
        };
        if self.markdown && self.is_html == Some(true) {
            return Err(Error::usage(
                "--markdown and --html both say what the body is; give one",
            ));
        }
        let is_html = self.is_html.unwrap_or(false) || self.markdown;
        let text_label = self.text.as_ref().map(|t| t.label.clone());
        let text_alternative = self
            .text
            .map(read_text)
            .transpose()?
            .map(|text| rendered(text_label.as_deref().unwrap_or("--text"), text, false))
            .transpose()?;
        if text_alternative.is_some() && !is_html {
            return Err(Error::usage(
                "--text/--text-file is the plain alternative of an HTML body: add --html",
            ));
        }
        // Relative image paths are the body file's, as a browser reads them, and no
        // image may come from outside its folder (or an --image-root). A body that is
        // data has its images embedded only when asked.
        let images = match (&self.body_data, &self.body) {
            (Some(_), _) if !self.images.embed_data => None,
            (Some(folder), _) => Some(folder.clone()),
            (
                None,
                Some(Sourced {
                    value: Text::File(path),
                    ..
                }),
            ) => Some(folder_of(path)),
            (None, _) => Some(PathBuf::from(".")),
        }
        .map(|base| Confine::new(base, &self.images.roots, IMAGE_ROOT_HINT));
        let body_label = self.body.as_ref().map(|b| b.label.clone());
        let content = rendered(
            body_label.as_deref().unwrap_or("--body"),
            read_body(self.body, self.allow_empty_body)?,
            // Values in an HTML body are escaped; Markdown is text until it is rendered.
            is_html && !self.markdown,
        )?;
        let (content, text_alternative) = if self.markdown {
            let source = text_alternative.unwrap_or_else(|| content.clone());
            (markdown::to_html(&content), Some(source))
        } else {
            (content, text_alternative)
        };
        let (content, inline_images) = match &images {
            Some(confine) if is_html => images::embed(&content, confine)?,
            _ => (content, Vec::new()),
        };
        // HTML alone is a spam sign (SpamAssassin's MIME_HTML_ONLY) and unreadable in a
        // text-only reader: without --text, the alternative is written from the HTML.
        let text_alternative = match text_alternative {
            None if is_html && !self.no_text_part && !content.is_empty() => {
                Some(text_of_html(&content)?)
            }
            given => given,
        };
        let body = Body {
            content,
            is_html,
            text_alternative,
        };
        let importance = match self.importance {
            Some(s) => Importance::parse(&s.label, &s.value)?,
            None => Importance::Normal,
        };
        let attachments = self
            .attachments
            .unwrap_or_default()
            .into_iter()
            .map(load_attachment)
            .chain(inline_images.into_iter().map(Ok))
            .collect::<Result<Vec<_>>>()?;
        check_content_ids_unique(&attachments)?;
        let headers = match self.headers {
            Some(s) => parse_headers(&s.label, &s.value)?,
            None => Vec::new(),
        };
        let receipt = |field: Option<Sourced<String>>| {
            field
                .map(|s| address::parse_single(&s.label, &s.value))
                .transpose()
        };
        let read_receipt = receipt(self.read_receipt)?;
        let delivery_receipt = receipt(self.delivery_receipt)?;
        Ok(Email {
            from,
            to,
            cc,
            bcc,
            reply_to,
            subject,
            body,
            importance,
            attachments,
            headers,
            read_receipt,
            delivery_receipt,
        })
    }
}

/// A readable plain-text rendering of an HTML body: paragraphs and lists as text, links
/// kept (as numbered references), at most 78 columns (RFC 5322's line length).
fn text_of_html(html: &str) -> Result<String> {
    html2text::from_read(html.as_bytes(), 78).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot write the text part of the HTML body: {e}"),
        )
    })
}

/// Reads the body. One read from a file or standard input must not be empty unless
/// `allow_empty` (T49): an empty report usually means its producer failed.
fn read_body(body: Option<Sourced<Text>>, allow_empty: bool) -> Result<String> {
    let Some(body) = body else {
        return Ok(String::new());
    };
    let label = body.label.clone();
    let from_file = matches!(body.value, Text::File(_));
    let content = read_text(body)?;
    if from_file && content.is_empty() && !allow_empty {
        return Err(Error::new(
            ErrorKind::NoInput,
            format!(
                "{label}: the body is empty (did the program that writes it fail?); give \
                 --allow-empty to send it anyway"
            ),
        ));
    }
    Ok(content)
}

/// Reads a body or text; it must be UTF-8 without NUL (a NUL cannot go in a text part).
fn read_text(text: Sourced<Text>) -> Result<String> {
    let content = match text.value {
        Text::Inline(s) => s,
        Text::File(path) => String::from_utf8(read_bytes(&text.label, &path)?).map_err(|_| {
            Error::invalid(format!(
                "{}: {:?} is not UTF-8 text",
                text.label,
                path.display().to_string()
            ))
        })?,
    };
    if content.contains('\0') {
        return Err(Error::invalid(format!(
            "{}: the text contains a NUL byte; send binary data as an attachment",
            text.label
        )));
    }
    Ok(content)
}

fn load_attachment(draft: AttachmentDraft) -> Result<Attachment> {
    let label = &draft.label;
    let (data, default_name) = match &draft.source {
        AttachmentSource::Path(path) => {
            let data = attachment_data(label, path)?;
            let name = match path.file_name() {
                Some(name) if !is_stdin(path) => name.to_string_lossy().into_owned(),
                _ => "attachment.bin".to_owned(),
            };
            (data, name)
        }
        AttachmentSource::Data(text, encoding) => {
            let raw = match text {
                Text::Inline(s) => s.clone().into_bytes(),
                Text::File(path) => read_bytes(label, path)?,
            };
            let data = match encoding {
                DataEncoding::None => raw,
                DataEncoding::Base64 => decode_base64(label, &raw)?,
            };
            let data = AttachmentData::Bytes(data);
            (data, "attachment.bin".to_owned())
        }
    };
    let file_name = draft
        .file_name
        .map(|name| base_name(&name))
        .filter(|name| !name.is_empty())
        .unwrap_or(default_name);
    check::header_text(&format!("{label} file name"), &file_name)?;
    let content_type = match &draft.content_type {
        Some(t) => parse_content_type(label, t)?,
        None => guessed_content_type(label, &file_name, &data)?,
    };
    let content_id = draft
        .content_id
        .map(|id| check_content_id(label, &id))
        .transpose()?;
    Ok(Attachment {
        file_name,
        content_type,
        data,
        content_id,
    })
}

/// The last part of a path in either spelling (`a/b/c.txt`, `C:\\x\\c.txt` → `c.txt`):
/// a receiving client must never be handed a directory to write into.
fn base_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    if last.chars().all(|c| c == '.') {
        return String::new();
    }
    last.to_owned()
}

/// Two parts with one Content-ID would make `cid:` links ambiguous (RFC 2392).
fn check_content_ids_unique(attachments: &[Attachment]) -> Result<()> {
    let mut seen: Vec<&str> = Vec::new();
    for attachment in attachments {
        if let Some(id) = attachment.content_id.as_deref() {
            if seen.contains(&id) {
                return Err(Error::invalid(format!(
                    "two attachments have the content id {id:?}; give each its own"
                )));
            }
            seen.push(id);
        }
    }
    Ok(())
}

/// Decodes standard base64; line breaks and spaces (as `base64` wraps its output) are ignored.
fn decode_base64(label: &str, raw: &[u8]) -> Result<Vec<u8>> {
    let compact: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| Error::invalid(format!("{label}: the data is not valid base64 ({e})")))
}

/// The type of an attachment given without one, from its file name; a `text/*` type
/// says `charset=utf-8` when the bytes are UTF-8 (a `.log` or `.csv` then shows its
/// accents right), and no charset otherwise, rather than a wrong one. A type the user
/// gave is left as given.
fn guessed_content_type(
    label: &str,
    file_name: &str,
    data: &AttachmentData,
) -> Result<ContentType> {
    // mime_guess yields well-formed types (octet-stream when it knows none).
    let guess = mime_guess::from_path(file_name).first_or_octet_stream();
    let is_text = guess.type_() == mime_guess::mime::TEXT && guess.get_param("charset").is_none();
    let utf8 = is_text
        && match data {
            AttachmentData::Bytes(bytes) => std::str::from_utf8(bytes).is_ok(),
            AttachmentData::File(file) => file.is_utf8()?,
        };
    if utf8 {
        parse_content_type(label, &format!("{}; charset=utf-8", guess.essence_str()))
    } else {
        parse_content_type(label, guess.as_ref())
    }
}

fn parse_content_type(label: &str, value: &str) -> Result<ContentType> {
    check::header_text(&format!("{label} content type"), value)?;
    // Encoded words are not allowed in Content-Type parameters (RFC 2047 §5).
    if !value.is_ascii() {
        return Err(Error::invalid(format!(
            "{label}: {value:?} is not a valid MIME type (it must be ASCII)"
        )));
    }
    ContentType::parse(value.trim()).map_err(|_| {
        Error::invalid(format!(
            "{label}: {value:?} is not a valid MIME type (like text/plain or image/png)"
        ))
    })
}

/// Content-ID without the angle brackets; no whitespace, brackets or line breaks.
fn check_content_id(label: &str, id: &str) -> Result<String> {
    let id = id.trim();
    let bare = id
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(id);
    let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"');
    if bare.is_empty() || bare.len() > 250 || bare.chars().any(bad) || !bare.is_ascii() {
        return Err(Error::invalid(format!(
            "{label}: {id:?} is not a valid content id (up to 250 printable ASCII characters, \
             no spaces or brackets)"
        )));
    }
    Ok(bare.to_owned())
}

/// Parses `Name: value` pairs. Names must be RFC 5322 field names (printable ASCII,
/// no colon); envoi's own headers cannot be replaced, and a name may appear once.
fn parse_headers(label: &str, values: &[String]) -> Result<Vec<(String, String)>> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for raw in values {
        check::no_line_breaks(label, raw)?;
        let Some((name, value)) = raw.split_once(':') else {
            return Err(Error::usage(format!(
                "{label}: {raw:?} is not of the form \"Name: value\""
            )));
        };
        let (name, value) = (name.trim(), value.trim());
        if !check::is_header_name(name) {
            return Err(Error::invalid(format!(
                "{label}: {name:?} is not a valid header name (printable ASCII, no spaces or colons)"
            )));
        }
        check::header_text(&format!("{label} {name}"), value)?;
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(Error::usage(format!(
                "{label}: {name} is set by envoi itself; use its own flag instead"
            )));
        }
        if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(Error::usage(format!(
                "{label}: {name} is given twice; a header can be set once"
            )));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(headers)
}

/// The error for a second reader of standard input (exit 64).
pub fn stdin_read_twice() -> Error {
    Error::usage(
        "standard input (-) can feed only one of --input, the body, the text and the attachments",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn minimal() -> Draft {
        Draft {
            to: Some(Sourced::new("--to", vec!["a@example.com".into()])),
            ..Draft::default()
        }
    }

    fn data_attachment(data: &str, encoding: DataEncoding) -> AttachmentDraft {
        AttachmentDraft {
            label: "--attach-data #1".into(),
            source: AttachmentSource::Data(Text::Inline(data.into()), encoding),
            file_name: Some("logo.png".into()),
            content_type: None,
            content_id: Some("<logo>".into()),
        }
    }

    #[test]
    fn flags_override_payload_properties() {
        let payload = Draft {
            subject: Some(Sourced::new("Subject", "from payload".into())),
            to: Some(Sourced::new("To", vec!["p@example.com".into()])),
            ..Draft::default()
        };
        let flags = Draft {
            subject: Some(Sourced::new("--subject", "from flag".into())),
            ..Draft::default()
        };
        let merged = payload.overlay(flags);
        assert_eq!(merged.subject.unwrap().value, "from flag");
        assert_eq!(merged.to.unwrap().value, ["p@example.com"]);
    }

    #[test]
    fn no_recipient_is_a_usage_error() {
        let err = Draft::default().into_email().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
    }

    #[test]
    fn base64_attachment_is_decoded_with_guessed_type_and_bare_cid() {
        let mut draft = minimal();
        draft.attachments = Some(vec![data_attachment("aGVs\nbG8=", DataEncoding::Base64)]);
        let email = draft.into_email().unwrap();
        let att = &email.attachments[0];
        assert_eq!(att.data, AttachmentData::Bytes(b"hello".to_vec()));
        assert_eq!(att.content_type, ContentType::parse("image/png").unwrap());
        assert_eq!(att.content_id.as_deref(), Some("logo"));
    }

    /// T11: a file name from the command line or payload never carries directories.
    #[test]
    fn t11_directory_parts_are_stripped_from_attachment_names() {
        for (given, kept) in [
            ("../../etc/cron.d/evil", "evil"),
            ("C:\\Users\\x\\report.pdf", "report.pdf"),
            ("..", "attachment.bin"),
            (".profile", ".profile"),
        ] {
            let mut attachment = data_attachment("aGk=", DataEncoding::Base64);
            attachment.file_name = Some(given.into());
            attachment.content_id = None;
            let mut draft = minimal();
            draft.attachments = Some(vec![attachment]);
            assert_eq!(draft.into_email().unwrap().attachments[0].file_name, kept);
        }
    }

    /// T64: two parts with one Content-ID are refused.
    #[test]
    fn t64_duplicate_content_ids_are_invalid_data() {
        let mut draft = minimal();
        draft.attachments = Some(vec![
            data_attachment("aGk=", DataEncoding::Base64),
            data_attachment("aGk=", DataEncoding::Base64),
        ]);
        let err = draft.into_email().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.message().contains("\"logo\""), "{err}");
    }

    /// T49: an empty body file (a failed producer in a pipe) is not sent silently.
    #[test]
    fn t49_an_empty_body_file_needs_allow_empty() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("report.txt");
        std::fs::write(&empty, "").unwrap();
        let mut draft = minimal();
        draft.body = Some(Sourced::new("--body-file", Text::File(empty)));
        let err = draft.clone().into_email().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoInput);
        assert!(err.message().contains("--allow-empty"), "{err}");
        draft.allow_empty_body = true;
        assert_eq!(draft.into_email().unwrap().body.content, "");
        let mut inline = minimal();
        inline.body = Some(Sourced::new("--body", Text::Inline(String::new())));
        assert!(
            inline.into_email().is_ok(),
            "an explicit empty --body is meant"
        );
    }

    #[test]
    fn encoding_none_keeps_the_text() {
        let mut draft = minimal();
        draft.attachments = Some(vec![data_attachment("aGVsbG8=", DataEncoding::None)]);
        assert_eq!(
            draft.into_email().unwrap().attachments[0].data,
            AttachmentData::Bytes(b"aGVsbG8=".to_vec())
        );
    }

    #[test]
    fn bad_base64_names_the_attachment() {
        let mut draft = minimal();
        draft.attachments = Some(vec![data_attachment("not base64!", DataEncoding::Base64)]);
        let err = draft.into_email().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.message().starts_with("--attach-data #1:"), "{err}");
    }

    #[test]
    fn missing_attachment_file_is_no_input() {
        let mut draft = minimal();
        draft.attachments = Some(vec![AttachmentDraft {
            label: "--attach".into(),
            source: AttachmentSource::Path("/nonexistent/report.pdf".into()),
            file_name: None,
            content_type: None,
            content_id: None,
        }]);
        let err = draft.into_email().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoInput);
        assert!(err.message().contains("report.pdf"), "{err}");
    }

    #[test]
    fn bad_content_type_and_cid_are_refused() {
        let mut att = data_attachment("aGk=", DataEncoding::Base64);
        att.content_type = Some("not a type".into());
        let mut draft = minimal();
        draft.attachments = Some(vec![att]);
        assert_eq!(
            draft.into_email().unwrap_err().kind(),
            ErrorKind::InvalidData
        );

        let mut att = data_attachment("aGk=", DataEncoding::Base64);
        att.content_type = Some("text/plain; name=\"é\"".into());
        let mut draft = minimal();
        draft.attachments = Some(vec![att]);
        assert_eq!(
            draft.into_email().unwrap_err().kind(),
            ErrorKind::InvalidData
        );

        let mut att = data_attachment("aGk=", DataEncoding::Base64);
        att.content_id = Some("a b".into());
        let mut draft = minimal();
        draft.attachments = Some(vec![att]);
        assert_eq!(
            draft.into_email().unwrap_err().kind(),
            ErrorKind::InvalidData
        );
    }

    #[test]
    fn headers_are_checked() {
        let ok = parse_headers("--header", &["X-Job: nightly".into()]).unwrap();
        assert_eq!(ok, [("X-Job".to_owned(), "nightly".to_owned())]);
        let bad_name = parse_headers("--header", &["X Job: 1".into()]).unwrap_err();
        assert_eq!(bad_name.kind(), ErrorKind::InvalidData);
        let reserved = parse_headers("--header", &["bcc: x@y.z".into()]).unwrap_err();
        assert_eq!(reserved.kind(), ErrorKind::Usage);
        let twice = parse_headers("--header", &["X-A: 1".into(), "x-a: 2".into()]).unwrap_err();
        assert_eq!(twice.kind(), ErrorKind::Usage);
        let injected = parse_headers("--header", &["X-A: 1\r\nBcc: e@x.y".into()]).unwrap_err();
        assert_eq!(injected.kind(), ErrorKind::InvalidData);
    }

    /// A payload's HTML body keeps its local images as written; the flags' own body
    /// (which replaces it) has them embedded, and a missing one is then an error.
    #[test]
    fn a_payloads_images_stay_unless_the_flags_give_the_body() {
        let html = |label: &str| Sourced::new(label, Text::Inline("<img src=\"gone.png\">".into()));
        let payload = Draft {
            body: Some(html("Body")),
            is_html: Some(true),
            ..minimal()
        }
        .body_is_data(PathBuf::from("."));
        let email = payload
            .clone()
            .overlay(Draft::default())
            .into_email()
            .unwrap();
        assert_eq!(email.body.content, "<img src=\"gone.png\">");
        assert!(email.attachments.is_empty());
        let flags = Draft {
            body: Some(html("--body")),
            ..Draft::default()
        };
        let err = payload.clone().overlay(flags).into_email().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoInput, "{err}");
        let asked = Draft {
            images: Images {
                embed_data: true,
                roots: Vec::new(),
            },
            ..Draft::default()
        };
        let err = payload.overlay(asked).into_email().unwrap_err();
        assert!(err.message().contains("gone.png"), "{err}");
    }

    #[test]
    fn text_alternative_needs_html() {
        let mut draft = minimal();
        draft.text = Some(Sourced::new("--text", Text::Inline("plain".into())));
        assert_eq!(draft.into_email().unwrap_err().kind(), ErrorKind::Usage);
    }
}

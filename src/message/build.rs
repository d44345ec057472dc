//! Turns an [`Email`] into the exact RFC 5322 bytes and the SMTP envelope.
//!
//! MIME shape: the body is text/plain, text/html, or multipart/alternative (text +
//! HTML); inline parts (with a Content-ID) wrap it in multipart/related; attachments
//! wrap that in multipart/mixed. Text is 7bit or quoted-printable and attachments are
//! base64, so the message is plain ASCII unless an address needs SMTPUTF8.
//! Every message gets a Date and a Message-ID on the sender's domain.

use std::time::{SystemTime, UNIX_EPOCH};

use lettre::address::Envelope;
use lettre::message::header::{
    self, ContentTransferEncoding, ContentType, HeaderName, HeaderValue, Headers,
};
use lettre::message::{Mailbox, Mailboxes, MultiPart, SinglePart};

use crate::error::{Error, ErrorKind, Result};
use crate::message::bytes::MessageBytes;
use crate::message::check;
use crate::message::email::{Attachment, AttachmentData, Body, Email};
use crate::message::wire::normalize_line_endings;

/// A message ready to go: its bytes, its envelope and its Message-ID.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `<…@domain>`, as written in the Message-ID header.
    pub message_id: String,
    /// MAIL FROM and every RCPT TO (To, Cc and Bcc, each address once).
    pub envelope: Envelope,
    /// The RFC 5322 message with CRLF line endings, files attached by path still in
    /// their files.
    pub bytes: MessageBytes,
}

/// Builds the message for `email` sent by `from` at `now`. Takes the email by value so
/// attachment bytes move into the message instead of being copied.
pub fn build(email: Email, from: &Mailbox, now: SystemTime) -> Result<Prepared> {
    let message_id = new_message_id(from, now);
    let envelope = envelope(&email, from)?;

    let mut builder = lettre::Message::builder()
        .from(from.clone())
        // The same From, in its place, encoded as every address header is.
        .raw_header(address_header("From", std::slice::from_ref(from))?)
        .date(now)
        .message_id(Some(message_id.clone()))
        .subject(email.subject.clone())
        .envelope(envelope.clone());
    for (name, list) in [
        ("To", &email.to),
        ("Cc", &email.cc),
        ("Reply-To", &email.reply_to),
    ] {
        if !list.is_empty() {
            builder = builder.raw_header(address_header(name, list)?);
        }
    }
    for (name, receipt) in [
        ("Disposition-Notification-To", &email.read_receipt),
        ("Return-Receipt-To", &email.delivery_receipt),
    ] {
        if let Some(mailbox) = receipt {
            builder = builder.raw_header(address_header(name, std::slice::from_ref(mailbox))?);
        }
    }
    let importance = email.importance.headers().iter().map(|(n, v)| (*n, *v));
    let custom = email.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    for (name, value) in importance.chain(custom) {
        // Draft checks user input with flag names; this guards library callers too.
        let invalid = || Error::invalid(format!("header name {name:?} is not valid"));
        if !check::is_header_name(name) {
            return Err(invalid());
        }
        if check::is_blind_copy(name) {
            return Err(Error::usage(format!(
                "{name} would show its blind recipients to every recipient; give them with \
                 --bcc"
            )));
        }
        let name = HeaderName::new_from_ascii(name.to_owned()).map_err(|_| invalid())?;
        builder = builder.raw_header(HeaderValue::new(name, value.to_owned()));
    }

    let mut deferred = Vec::new();
    let message = match mime_tree(email.body, email.attachments, &mut deferred) {
        Part::Single(part) => builder.singlepart(part),
        Part::Multi(part) => builder.multipart(part),
    }
    .map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot build the message: {e}"),
        )
    })?;
    let formatted = message.formatted();
    drop(message);
    check::header_block(&formatted)?;
    Ok(Prepared {
        message_id,
        envelope,
        bytes: splice(formatted, deferred)?,
    })
}

/// An attachment whose data goes into the message only at the end: lettre lays out the
/// MIME parts around a placeholder, and the base64 goes straight into the final message.
/// lettre would hold the encoded data in the message and copy it again when formatting:
/// for a 10 MiB file that is 13.5 MiB more at the peak.
struct Deferred {
    placeholder: String,
    data: AttachmentData,
}

/// The formatted message with each placeholder replaced by its data in base64, exactly
/// as lettre writes a base64 body (RFC 2045: 76-character lines, CRLF between them):
/// bytes in memory are encoded now, a file is left for when the message is written.
fn splice(formatted: Vec<u8>, deferred: Vec<Deferred>) -> Result<MessageBytes> {
    let mut out = MessageBytes::default();
    let mut rest = &formatted[..];
    for d in deferred {
        let at = rest
            .windows(d.placeholder.len())
            .position(|w| w == d.placeholder.as_bytes())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    "an attachment's place is missing from the built message (a bug)",
                )
            })?;
        out.push_literal(&rest[..at]);
        match d.data {
            AttachmentData::Bytes(data) => out.push_base64(&data),
            AttachmentData::File(file) => out.push_file(file),
        }
        rest = &rest[at + d.placeholder.len()..];
    }
    out.push_literal(rest);
    Ok(out)
}

/// An address-list header with one mailbox per line. lettre 0.11.23 cannot fold between
/// bare addresses (70 of them made a 1182-octet To line, over RFC 5322's 998) and
/// re-parses the header on every added mailbox (quadratic); so each mailbox is encoded
/// by lettre alone and the list is folded here, after each comma.
fn address_header(name: &str, list: &[Mailbox]) -> Result<HeaderValue> {
    let raw: Vec<String> = list.iter().map(ToString::to_string).collect();
    let name = HeaderName::new_from_ascii(name.to_owned()).map_err(|_| {
        Error::new(
            ErrorKind::Internal,
            format!("{name} is not a header name (a bug)"),
        )
    })?;
    // Pre-encoded: lettre's own encoding of each mailbox (ASCII, with its own folds),
    // joined by commas and folding whitespace.
    Ok(HeaderValue::dangerous_new_pre_encoded(
        name,
        raw.join(", "),
        encoded_mailboxes(list),
    ))
}

/// The value of an address-list header: each mailbox as lettre encodes it (ASCII), one
/// per line, folded after each comma; a printable ASCII name that lettre would write
/// as RFC 2047 base64 is a quoted-string instead ([`quoted_mailbox`]).
pub(crate) fn encoded_mailboxes(list: &[Mailbox]) -> String {
    let encoded: Vec<String> = list
        .iter()
        .map(|m| {
            if let Some(quoted) = quoted_mailbox(m) {
                return quoted;
            }
            let mut one = Headers::new();
            one.set(header::To::from(Mailboxes::new().with(m.clone())));
            let line = one.to_string();
            line.strip_prefix("To: ")
                .unwrap_or(&line)
                .trim_end_matches("\r\n")
                .to_owned()
        })
        .collect();
    encoded.join(",\r\n ")
}

/// The longest mailbox [`quoted_mailbox`] writes: it is never folded, so it must fit a
/// header line (RFC 5322's 78 octets, less the name of the header).
const MAX_QUOTED: usize = 76;

/// `"Doe, John" <john@example.com>`: lettre's encoder (email-encoding 0.4) writes any
/// name holding a character other than letters, digits, space and `-_.\"` (a comma, a
/// parenthesis, an apostrophe) as RFC 2047 base64, which a reader of the raw message
/// (and some filters) cannot read, where RFC 5322 has a quoted-string for exactly this
/// (trial 1.8). `None` (lettre's encoding) for a name with a character outside printable
/// ASCII, for one lettre writes without base64 already, and for a mailbox too long for
/// one line.
fn quoted_mailbox(mailbox: &Mailbox) -> Option<String> {
    let name = mailbox.name.as_deref()?;
    let lettre_quotes = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" -_.\\\"".contains(&b));
    if lettre_quotes || !name.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return None;
    }
    let address: &str = mailbox.email.as_ref();
    let mut quoted = String::with_capacity(name.len() + address.len() + 6);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push_str("\" <");
    quoted.push_str(address);
    quoted.push('>');
    (quoted.len() <= MAX_QUOTED).then_some(quoted)
}

/// A `Date` header value for `now` (RFC 5322, `+0000`).
pub(crate) fn date_value(now: SystemTime) -> String {
    let mut headers = Headers::new();
    headers.set(header::Date::new(now));
    headers.get_raw("Date").unwrap_or_default().to_owned()
}

/// From, and each of To, Cc and Bcc once (the first spelling wins). Two addresses are
/// the same mailbox when their domains match in any case and their local parts match
/// exactly: only the receiving server may decide that `Ann` and `ann` are one mailbox.
fn envelope(email: &Email, from: &Mailbox) -> Result<Envelope> {
    let mut recipients: Vec<lettre::Address> = Vec::new();
    for m in email.to.iter().chain(&email.cc).chain(&email.bcc) {
        if !recipients.iter().any(|r| same_mailbox(r, &m.email)) {
            recipients.push(m.email.clone());
        }
    }
    for address in std::iter::once(&from.email).chain(&recipients) {
        let path = AsRef::<str>::as_ref(address).len() + 2;
        if path > MAX_PATH {
            return Err(Error::invalid(format!(
                "{address} makes an SMTP path of {path} octets; at most {MAX_PATH} are allowed \
                 (RFC 5321 4.5.3.1.3)"
            )));
        }
    }
    Envelope::new(Some(from.email.clone()), recipients)
        .map_err(|e| Error::usage(format!("cannot make the envelope: {e}")))
}

/// Longest reverse- or forward-path, `<` and `>` included (RFC 5321 §4.5.3.1.3).
const MAX_PATH: usize = 256;

pub(crate) fn same_mailbox(a: &lettre::Address, b: &lettre::Address) -> bool {
    a.user() == b.user() && a.domain().eq_ignore_ascii_case(b.domain())
}

/// `<time.random@domain>`: unique without coordination, on the sender's (A-label) domain.
pub(crate) fn new_message_id(from: &Mailbox, now: SystemTime) -> String {
    let micros = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let random = crate::token::alphanumeric(20);
    format!("<{micros:x}.{random}@{}>", from.email.domain())
}

enum Part {
    Single(SinglePart),
    Multi(MultiPart),
}

fn mime_tree(body: Body, attachments: Vec<Attachment>, deferred: &mut Vec<Deferred>) -> Part {
    let (inline, attached): (Vec<Attachment>, Vec<Attachment>) = attachments
        .into_iter()
        .partition(|a| a.content_id.is_some());
    let whole_message = inline.is_empty() && attached.is_empty();
    let mut part = body_part(&body, whole_message);
    if !inline.is_empty() {
        part = Part::Multi(wrap(MultiPart::related(), part, inline, deferred));
    }
    if !attached.is_empty() {
        part = Part::Multi(wrap(MultiPart::mixed(), part, attached, deferred));
    }
    part
}

/// The text part(s). lettre ends every part with CRLF: inside a multipart that CRLF
/// belongs to the boundary, but when the text is the whole message it would add an empty
/// line to a body that already ends in one (T58), so it is taken off first.
fn body_part(body: &Body, whole_message: bool) -> Part {
    let text = |content: &str, kind: ContentType| {
        let mut content = normalize_line_endings(content);
        if whole_message && content.ends_with("\r\n") {
            content.truncate(content.len() - 2);
        }
        SinglePart::builder().header(kind).body(text_body(content))
    };
    match (&body.text_alternative, body.is_html) {
        (Some(plain), true) => Part::Multi(
            MultiPart::alternative()
                .singlepart(text(plain, ContentType::TEXT_PLAIN))
                .singlepart(text(&body.content, ContentType::TEXT_HTML)),
        ),
        (_, true) => Part::Single(text(&body.content, ContentType::TEXT_HTML)),
        (_, false) => Part::Single(text(&body.content, ContentType::TEXT_PLAIN)),
    }
}

/// The body of a text part whose line endings are CRLF already. Where lettre would
/// choose 7bit (ASCII, no line of 76 characters or more, counted as it counts them), the
/// text is that body as it is; lettre's `Body::new` would scan it again, char by char,
/// for line endings there is nothing left to fix in — a tenth of a batch's CPU. Other
/// text is lettre's to encode (8bit, quoted-printable or base64).
fn text_body(content: String) -> lettre::message::Body {
    if content.is_ascii() && !line_of_76_or_more(content.as_bytes()) {
        lettre::message::Body::dangerous_pre_encoded(
            content.into_bytes(),
            ContentTransferEncoding::SevenBit,
        )
    } else {
        lettre::message::Body::new(content)
    }
}

/// email-encoding's `line_too_long`, which lettre's choice of 7bit rests on: a stretch
/// of 76 bytes or more between two LFs (the first LF, and the end, counting too).
fn line_of_76_or_more(bytes: &[u8]) -> bool {
    let mut last = 0;
    memchr::memchr_iter(b'\n', bytes).any(|i| i - std::mem::replace(&mut last, i) >= 76)
        || bytes.len() - last >= 76
}

fn wrap(
    builder: lettre::message::MultiPartBuilder,
    inner: Part,
    parts: Vec<Attachment>,
    deferred: &mut Vec<Deferred>,
) -> MultiPart {
    let mut multi = match inner {
        Part::Single(p) => builder.singlepart(p),
        Part::Multi(p) => builder.multipart(p),
    };
    for a in parts {
        multi = multi.singlepart(attachment_part(a, deferred));
    }
    multi
}

/// An attachment part whose body is a placeholder for [`splice`]. Always base64:
/// binary-safe, and no bare line ending of the data reaches the wire.
fn attachment_part(a: Attachment, deferred: &mut Vec<Deferred>) -> SinglePart {
    let attachment = match a.content_id {
        Some(cid) => lettre::message::Attachment::new_inline_with_name(cid, a.file_name),
        None => lettre::message::Attachment::new(a.file_name),
    };
    let placeholder = format!(
        "envoi-attachment-{}-{}",
        crate::token::alphanumeric(24),
        deferred.len()
    );
    let body = lettre::message::Body::dangerous_pre_encoded(
        placeholder.clone().into_bytes(),
        ContentTransferEncoding::Base64,
    );
    deferred.push(Deferred {
        placeholder,
        data: a.data,
    });
    attachment.body(body, a.content_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::attached_file::base64_lines;
    use crate::message::email::Importance;

    /// The 7bit shortcut gives exactly what lettre's `Body::new` gives, on both sides of
    /// its 76-byte rule and for text that is not ASCII.
    #[test]
    fn a_text_body_is_what_lettre_would_make() {
        let line = |n: usize| "x".repeat(n);
        let cases = [
            String::new(),
            "hi".to_owned(),
            format!("{}\r\n{}\r\n", line(70), line(70)),
            format!("{}\r\n{}", line(73), line(73)),
            format!("{}\r\n{}\r\n", line(73), line(74)),
            format!("{}\r\nend", line(75)),
            format!("{}\r\nend", line(76)),
            format!("{}\r\n", line(74)),
            line(75),
            line(76),
            "crème brûlée\r\n".to_owned(),
            format!("{}\r\n", line(2000)),
        ];
        for text in cases {
            let ours = text_body(text.clone());
            let lettres = lettre::message::Body::new(text.clone());
            assert_eq!(ours.encoding(), lettres.encoding(), "{text:?}");
            assert_eq!(ours.into_vec(), lettres.into_vec(), "{text:?}");
        }
    }

    fn mailbox(s: &str) -> Mailbox {
        s.parse().unwrap()
    }

    fn email() -> Email {
        Email {
            from: None,
            to: vec![mailbox("Ann <ann@example.com>")],
            cc: vec![mailbox("carl@example.com")],
            bcc: vec![mailbox("audit@example.com"), mailbox("ann@EXAMPLE.com")],
            reply_to: vec![],
            subject: "Nightly build failed ✗".into(),
            body: Body {
                content: "line one\nline two".into(),
                is_html: false,
                text_alternative: None,
            },
            importance: Importance::High,
            attachments: vec![],
            headers: vec![("X-Job".into(), "nightly".into())],
            read_receipt: None,
            delivery_receipt: None,
        }
    }

    fn text(p: &Prepared) -> String {
        String::from_utf8(p.bytes.to_vec().unwrap()).unwrap()
    }

    #[test]
    fn headers_envelope_and_ids() {
        let p = build(
            email(),
            &mailbox("Me <me@sender.example>"),
            SystemTime::now(),
        )
        .unwrap();
        let t = text(&p);
        assert!(
            p.message_id.ends_with("@sender.example>"),
            "{}",
            p.message_id
        );
        assert!(
            t.contains(&format!("Message-ID: {}\r\n", p.message_id)),
            "{t}"
        );
        assert!(t.contains("\r\nDate: "), "{t}");
        assert!(
            t.contains("Subject: Nightly build failed =?utf-8?b?"),
            "{t}"
        );
        assert!(t.contains("Importance: High\r\n"), "{t}");
        assert!(t.contains("X-Priority: 1 (Highest)\r\n"), "{t}");
        assert!(!t.contains("X-MSMail-Priority"), "{t}");
        assert!(t.contains("X-Job: nightly\r\n"), "{t}");
        assert!(
            !t.to_ascii_lowercase().contains("audit@"),
            "Bcc leaked: {t}"
        );
        assert!(t.contains("line one\r\nline two"), "{t}");
        let rcpts: Vec<String> = p.envelope.to().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            rcpts,
            ["ann@example.com", "carl@example.com", "audit@example.com"]
        );
        assert_eq!(p.envelope.from().unwrap().to_string(), "me@sender.example");
    }

    /// T56: local parts are case-sensitive (RFC 5321 §2.4); only domains are folded.
    #[test]
    fn t56_local_parts_that_differ_in_case_are_two_recipients() {
        let mut e = email();
        e.bcc = vec![mailbox("ANN@example.com")];
        let p = build(e, &mailbox("me@sender.example"), SystemTime::UNIX_EPOCH).unwrap();
        let rcpts: Vec<String> = p.envelope.to().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            rcpts,
            ["ann@example.com", "carl@example.com", "ANN@example.com"]
        );
    }

    /// T54: a path over 256 octets is refused before connecting.
    #[test]
    fn t54_an_overlong_path_is_invalid_data() {
        let mut e = email();
        e.cc = vec![mailbox(&format!("{}@example.com", "a".repeat(64)))];
        assert!(
            build(
                e.clone(),
                &mailbox("me@sender.example"),
                SystemTime::UNIX_EPOCH
            )
            .is_ok()
        );
        let long_domain = [
            "d".repeat(60),
            "e".repeat(60),
            "f".repeat(60),
            "g".repeat(60),
        ]
        .join(".");
        e.cc = vec![mailbox(&format!(
            "{}@{long_domain}.example",
            "a".repeat(20)
        ))];
        let err = build(e, &mailbox("me@sender.example"), SystemTime::UNIX_EPOCH).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.message().contains("at most 256"), "{err}");
    }

    /// T58: `hello\n` arrives as `hello` CRLF, not followed by an empty line; in a
    /// multipart the part's content is kept to the octet as well.
    #[test]
    fn t58_a_final_newline_is_not_doubled() {
        let from = mailbox("me@sender.example");
        for (given, ending) in [
            ("hello\n", "\r\n\r\nhello\r\n"),
            ("hello", "\r\n\r\nhello\r\n"),
            ("hello\n\n", "\r\n\r\nhello\r\n\r\n"),
        ] {
            let mut e = email();
            e.body.content = given.into();
            let t = text(&build(e, &from, SystemTime::UNIX_EPOCH).unwrap());
            assert!(t.ends_with(ending), "{given:?}: {t:?}");
        }
        let mut e = email();
        e.body.content = "hello\n".into();
        e.attachments = vec![Attachment {
            file_name: "a.txt".into(),
            content_type: ContentType::TEXT_PLAIN,
            data: b"x".to_vec().into(),
            content_id: None,
        }];
        let t = text(&build(e, &from, SystemTime::UNIX_EPOCH).unwrap());
        assert!(t.contains("\r\n\r\nhello\r\n\r\n--"), "{t}");
    }

    #[test]
    fn every_attachment_lands_in_its_own_part() {
        let mut e = email();
        e.attachments = vec![
            Attachment {
                file_name: "a.bin".into(),
                content_type: ContentType::parse("application/octet-stream").unwrap(),
                data: vec![1; 100].into(),
                content_id: None,
            },
            Attachment {
                file_name: "logo.png".into(),
                content_type: ContentType::parse("image/png").unwrap(),
                data: vec![2; 10].into(),
                content_id: Some("logo".into()),
            },
        ];
        let t = text(&build(e, &mailbox("me@sender.example"), SystemTime::UNIX_EPOCH).unwrap());
        assert!(
            !t.contains("envoi-attachment-"),
            "a placeholder is left: {t}"
        );
        let mut first = Vec::new();
        base64_lines(&[1; 100], &mut first);
        let mut second = Vec::new();
        base64_lines(&[2; 10], &mut second);
        let first = String::from_utf8(first).unwrap();
        let second = String::from_utf8(second).unwrap();
        assert!(t.contains(&format!("\r\n\r\n{first}\r\n--")), "{t}");
        assert!(t.contains(&format!("\r\n\r\n{second}\r\n--")), "{t}");
        // The inline part (in multipart/related) comes before the attached one.
        assert!(t.find(&second) < t.find(&first), "{t}");
    }

    #[test]
    fn mime_shape_follows_the_parts() {
        let mut e = email();
        e.body = Body {
            content: "<img src=\"cid:logo\">".into(),
            is_html: true,
            text_alternative: Some("plain".into()),
        };
        e.attachments = vec![
            Attachment {
                file_name: "logo.png".into(),
                content_type: "image/png".parse().unwrap(),
                data: vec![0, 1, 2].into(),
                content_id: Some("logo".into()),
            },
            Attachment {
                file_name: "résumé.pdf".into(),
                content_type: "application/pdf".parse().unwrap(),
                data: vec![3, 4].into(),
                content_id: None,
            },
        ];
        let t = text(&build(e, &mailbox("me@x.example"), SystemTime::now()).unwrap());
        let pos = |needle: &str| {
            t.find(needle)
                .unwrap_or_else(|| panic!("{needle} missing: {t}"))
        };
        assert!(pos("multipart/mixed") < pos("multipart/related"));
        assert!(pos("multipart/related") < pos("multipart/alternative"));
        assert!(t.contains("Content-ID: <logo>"), "{t}");
        assert!(t.contains("filename*0*=utf-8''r%C3%A9sum%C3%A9.pdf"), "{t}");
        assert_eq!(
            t.matches("Content-Transfer-Encoding: base64").count(),
            2,
            "{t}"
        );
        assert!(t.is_ascii());
    }

    #[test]
    fn long_recipient_lists_are_folded() {
        let mut e = email();
        e.to = (0..70)
            .map(|i| mailbox(&format!("r{i}@example.org")))
            .chain([mailbox("Zoë Ünïcode <zoe@example.org>")])
            .collect();
        let t = text(&build(e, &mailbox("me@x.example"), SystemTime::now()).unwrap());
        let head = &t[..t.find("\r\n\r\n").unwrap()];
        assert!(head.lines().all(|l| l.len() <= 998), "{head}");
        let to_start = head.find("\r\nTo: ").unwrap();
        assert!(
            head[to_start..].contains("r0@example.org,\r\n r1@example.org,"),
            "{head}"
        );
        assert!(
            head.contains("=?utf-8?b?"),
            "non-ASCII name not encoded: {head}"
        );
        assert!(head.is_ascii());
    }
}

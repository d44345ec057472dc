//! A message sent to one address instead of its recipients (a profile's
//! `policy.redirect_all`, for staging): the envelope holds only that address, the To
//! field names it and no Cc field is left (a tester's "reply all" must not reach the
//! real recipients), and who would have received it is written in
//! `X-Envoi-Original-To`, `-Cc` and `-Bcc` fields and in a first line of the text (and
//! HTML) body. Blind copies appear in no other field.

use lettre::Address;
use lettre::address::Envelope;
use lettre::message::Mailbox;

use crate::error::{Error, ErrorKind, Result};
use crate::message::build::Prepared;
use crate::message::email::Email;
use crate::message::given;

/// The fields that record the original recipients.
pub const ORIGINAL_FIELDS: [&str; 3] = [
    "X-Envoi-Original-To",
    "X-Envoi-Original-Cc",
    "X-Envoi-Original-Bcc",
];

/// Who a message was for, by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Originals {
    /// The To recipients.
    pub to: Vec<Address>,
    /// The Cc recipients.
    pub cc: Vec<Address>,
    /// The blind copies (in the envelope only).
    pub bcc: Vec<Address>,
}

impl Originals {
    /// Each field's name and value (addresses only, comma-separated), for the lists
    /// that are not empty.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        [&self.to, &self.cc, &self.bcc]
            .into_iter()
            .zip(ORIGINAL_FIELDS)
            .filter(|(list, _)| !list.is_empty())
            .map(|(list, name)| (name, joined(list)))
            .collect()
    }

    /// The body's first line: who would have received the message.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        for (label, list) in [("To", &self.to), ("Cc", &self.cc), ("Bcc", &self.bcc)] {
            if !list.is_empty() {
                parts.push(format!("{label}: {}", joined(list)));
            }
        }
        format!(
            "[envoi policy.redirect_all; the original recipients: {}]",
            parts.join("; ")
        )
    }
}

fn joined(list: &[Address]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `email` to be sent to `to` alone: its recipients moved into the `X-Envoi-Original-*`
/// fields and a first line of its body (escaped in an HTML body). A field of that name
/// the message already had is dropped: it would tell the tester a false story.
pub fn redirect_email(email: &mut Email, to: &Mailbox) {
    let addresses = |list: &[Mailbox]| list.iter().map(|m| m.email.clone()).collect();
    let originals = Originals {
        to: addresses(&email.to),
        cc: addresses(&email.cc),
        bcc: addresses(&email.bcc),
    };
    // Resent-To and Resent-Cc (which --header may set) would name recipients too, in a
    // visible field, as redirect_given already drops them.
    email.headers.retain(|(name, _)| {
        !ORIGINAL_FIELDS
            .iter()
            .chain(&["Resent-To", "Resent-Cc"])
            .any(|f| f.eq_ignore_ascii_case(name))
    });
    for (name, value) in originals.fields() {
        email.headers.push((name.to_owned(), value));
    }
    let line = originals.line();
    let body = &mut email.body;
    if body.is_html {
        body.content = with_html_line(&body.content, &line);
        if let Some(text) = &mut body.text_alternative {
            *text = format!("{line}\n\n{text}");
        }
    } else {
        body.content = format!("{line}\n\n{}", body.content);
    }
    email.to = vec![to.clone()];
    email.cc.clear();
    email.bcc.clear();
}

/// `html` with `line` as a first paragraph, escaped: right after the `<body …>` tag when
/// there is one, else at the start.
fn with_html_line(html: &str, line: &str) -> String {
    let paragraph = format!("<p>{}</p>\n", escape_html(line));
    let at = html
        .to_ascii_lowercase()
        .find("<body")
        .and_then(|start| html[start..].find('>').map(|end| start + end + 1))
        .unwrap_or(0);
    format!("{}{paragraph}{}", &html[..at], &html[at..])
}

/// `text` safe inside an HTML element.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A message given whole (sendmail mode, the spool), already prepared, sent to `to`
/// alone: the envelope's recipients named in its To field are the original To, those in
/// Cc the original Cc, the others the blind copies. The To field becomes `to`, the Cc
/// fields go, and the `X-Envoi-Original-*` fields are added; the first line goes into the
/// body only when it is plain text in one part (a MIME tree is left whole).
pub fn redirect_given(prepared: Prepared, to: &Address) -> Result<Prepared> {
    let bytes = prepared.bytes.to_vec()?;
    let mut message = given::parse(&bytes)?;
    let in_field = |name: &str| -> Vec<String> {
        message
            .field_values(name)
            .iter()
            .flat_map(|value| crate::message::address::split_list(value))
            .filter_map(|item| crate::message::address::parse_single(name, item).ok())
            .map(|m| m.email.to_string().to_lowercase())
            .collect()
    };
    let (in_to, in_cc) = (in_field("To"), in_field("Cc"));
    let mut originals = Originals::default();
    for recipient in prepared.envelope.to() {
        let key = recipient.to_string().to_lowercase();
        if in_to.contains(&key) {
            originals.to.push(recipient.clone());
        } else if in_cc.contains(&key) {
            originals.cc.push(recipient.clone());
        } else {
            originals.bcc.push(recipient.clone());
        }
    }
    message.remove_fields(&["To", "Cc", "Resent-To", "Resent-Cc"]);
    message.remove_fields(&ORIGINAL_FIELDS);
    message.add_field("To", to.as_ref());
    for (name, value) in originals.fields() {
        message.add_field(name, &value);
    }
    let line = originals.line();
    if line.is_ascii() && message.is_single_plain_text() {
        // Wrapped: a body line may not pass 998 octets, and this one grows with the list.
        message.prepend_body_line(&wrap(&line, 76).join("\r\n"));
    }
    let envelope = Envelope::new(prepared.envelope.from().cloned(), vec![to.clone()])
        .map_err(|e| Error::new(ErrorKind::Internal, format!("the redirect's envelope: {e}")))?;
    let bytes = message.into_message_bytes();
    crate::message::check::header_block(&bytes)?;
    Ok(Prepared {
        message_id: prepared.message_id,
        envelope,
        bytes: bytes.into(),
    })
}

/// `text` in lines of at most `width` characters where its spaces allow (a longer word
/// stays whole on its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_html_line_is_escaped_and_goes_inside_the_body() {
        let html = "<html><BODY class=\"x\"><p>Hi</p></body></html>";
        let out = with_html_line(html, "for <a&b@x.org>");
        assert_eq!(
            out,
            "<html><BODY class=\"x\"><p>for &lt;a&amp;b@x.org&gt;</p>\n<p>Hi</p></body></html>"
        );
        assert!(with_html_line("<p>Hi</p>", "x").starts_with("<p>x</p>\n<p>Hi"));
    }

    fn given(text: &str, to: &[&str]) -> Prepared {
        let bytes = text.replace('\n', "\r\n").into_bytes();
        let to = to.iter().map(|a| a.parse().unwrap()).collect();
        Prepared {
            message_id: "<m@x>".into(),
            envelope: Envelope::new(Some("s@example.com".parse().unwrap()), to).unwrap(),
            bytes: bytes.into(),
        }
    }

    #[test]
    fn a_given_mime_tree_keeps_its_body_and_loses_its_recipient_fields() {
        let text = "To: a@x.org\nCc: B <b@x.org>\nX-Envoi-Original-To: forged@x.org\n\
                    Content-Type: multipart/mixed; boundary=\"q\"\nSubject: s\n\n\
                    --q\nContent-Type: text/plain\n\nhi\n--q--\n";
        let qa = "qa@example.com".parse().unwrap();
        let out = redirect_given(given(text, &["a@x.org", "b@x.org", "c@x.org"]), &qa).unwrap();
        let bytes = String::from_utf8(out.bytes.to_vec().unwrap()).unwrap();
        let (head, body) = bytes.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            body,
            "--q\r\nContent-Type: text/plain\r\n\r\nhi\r\n--q--\r\n"
        );
        assert!(!head.contains("forged"), "{head}");
        assert!(!head.contains("\r\nCc:"), "{head}");
        assert!(head.contains("\r\nTo: qa@example.com\r\n"), "{head}");
        assert!(head.contains("X-Envoi-Original-To: a@x.org\r\n"), "{head}");
        assert!(head.contains("X-Envoi-Original-Cc: b@x.org\r\n"), "{head}");
        assert!(head.contains("X-Envoi-Original-Bcc: c@x.org"), "{head}");
        let rcpt: Vec<String> = out.envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(rcpt, ["qa@example.com"]);
    }

    #[test]
    fn a_long_list_of_originals_is_folded() {
        let to: Vec<String> = (0..60)
            .map(|i| format!("user{i}@customer.example"))
            .collect();
        let refs: Vec<&str> = to.iter().map(String::as_str).collect();
        let qa = "qa@example.com".parse().unwrap();
        let out = redirect_given(given("Subject: s\n\nbody\n", &refs), &qa).unwrap();
        let bytes = out.bytes.to_vec().unwrap();
        crate::message::check::header_block(&bytes).unwrap();
        assert!(bytes.split(|b| *b == b'\n').all(|line| line.len() <= 998));
    }
}

//! Pre-send lint: what in an [`Email`] may make it land in a spam folder or be refused
//! later, said before it is sent. Only warnings: where sending is sure to fail, the
//! checks that build and deliver the message stop it with an error instead.

use crate::message::email::Email;

/// A message total past which many servers refuse it once base64 has grown it by a
/// third (Gmail and others take 25 MB).
const LARGE_ATTACHMENTS: u64 = 20_000_000;

/// Recipients in one message past which providers limit or junk it.
const MANY_RECIPIENTS: usize = 100;

/// One finding, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The sender's domain is not the domain of the account that logs in: DMARC at the
    /// big providers fails unless the account may send for that domain.
    FromDomainDiffers {
        /// The From address's domain.
        from: String,
        /// The login's domain.
        login: String,
    },
    /// No subject.
    NoSubject,
    /// An HTML body with no plain-text alternative (`--no-text-part`).
    HtmlOnly,
    /// Attachments over `LARGE_ATTACHMENTS` (20 MB) in all.
    LargeAttachments {
        /// Their total size in octets, before encoding.
        total: u64,
    },
    /// The profile signs with DKIM for a domain unrelated to the From address: the
    /// signature verifies, but DMARC counts it only when the two share a domain (one
    /// equal to, or under, the other: an approximation of RFC 7489's relaxed alignment).
    DkimUnaligned {
        /// `dkim_domain`.
        dkim: String,
        /// The From address's domain.
        from: String,
    },
    /// Over `MANY_RECIPIENTS` (100) recipients in one message.
    ManyRecipients {
        /// How many (To, Cc and Bcc).
        count: usize,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::FromDomainDiffers { from, login } => write!(
                f,
                "From is an address at {from} but the login is at {login}: Gmail, Microsoft \
                 and Yahoo check DMARC and may junk or refuse it; send from a {login} address, \
                 or one the account may send as"
            ),
            Finding::DkimUnaligned { dkim, from } => write!(
                f,
                "dkim_domain is {dkim} but the From address is at {from}: the signature will \
                 verify, but DMARC at the receiver does not count it for {from}"
            ),
            Finding::NoSubject => write!(f, "no subject: many filters count that against it"),
            Finding::HtmlOnly => write!(
                f,
                "an HTML body without a text part (--no-text-part) is a spam sign \
                 (MIME_HTML_ONLY) and unreadable in a text-only reader"
            ),
            Finding::LargeAttachments { total } => write!(
                f,
                "the attachments are {:.1} MB, {:.1} MB with base64: many servers refuse \
                 messages over 25 MB; link to large files instead",
                *total as f64 / 1e6,
                *total as f64 * 4.0 / 3.0 / 1e6
            ),
            Finding::ManyRecipients { count } => write!(
                f,
                "{count} recipients in one message: providers cap recipients per message and \
                 junk mass mail; send one message per recipient (envoi batch)"
            ),
        }
    }
}

/// What may go wrong with `email` sent by `from` through an account logged in as
/// `login` (when it logs in with an address), signed for `dkim_domain` (when it is).
pub fn lint(
    email: &Email,
    from: &lettre::message::Mailbox,
    login: Option<&str>,
    dkim_domain: Option<&str>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let domain_of = |address: &str| {
        address
            .rsplit_once('@')
            .map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
    };
    if let (Some(from), Some(login)) = (domain_of(from.email.as_ref()), login.and_then(domain_of))
        && from != login
    {
        findings.push(Finding::FromDomainDiffers { from, login });
    }
    if email.subject.trim().is_empty() {
        findings.push(Finding::NoSubject);
    }
    if email.body.is_html && email.body.text_alternative.is_none() {
        findings.push(Finding::HtmlOnly);
    }
    let total: u64 = email.attachments.iter().map(|a| a.data.len()).sum();
    if total > LARGE_ATTACHMENTS {
        findings.push(Finding::LargeAttachments { total });
    }
    let count = email.to.len() + email.cc.len() + email.bcc.len();
    if count > MANY_RECIPIENTS {
        findings.push(Finding::ManyRecipients { count });
    }
    if let (Some(from), Some(dkim)) = (domain_of(from.email.as_ref()), dkim_domain) {
        let dkim = dkim.to_ascii_lowercase();
        let under = |a: &str, b: &str| a == b || a.ends_with(&format!(".{b}"));
        if !under(&from, &dkim) && !under(&dkim, &from) {
            findings.push(Finding::DkimUnaligned { dkim, from });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::draft::{Draft, Sourced};

    fn email(subject: &str, to: usize) -> Email {
        let list: Vec<String> = (0..to).map(|i| format!("r{i}@example.com")).collect();
        Draft {
            to: Some(Sourced::new("--to", vec![list.join(";")])),
            subject: Some(Sourced::new("--subject", subject.to_owned())),
            body: Some(Sourced::new(
                "--body",
                crate::message::draft::Text::Inline("x".into()),
            )),
            ..Draft::default()
        }
        .into_email()
        .unwrap()
    }

    #[test]
    fn each_finding_and_none_for_a_clean_message() {
        let from: lettre::message::Mailbox = "Bot <bot@example.com>".parse().unwrap();
        assert_eq!(
            lint(&email("Report", 1), &from, Some("bot@EXAMPLE.com"), None),
            []
        );
        assert_eq!(
            lint(&email("Report", 1), &from, Some("plain-user"), None),
            []
        );
        assert_eq!(
            lint(&email("Report", 1), &from, None, Some("mail.EXAMPLE.com")),
            []
        );
        assert_eq!(
            lint(&email("Report", 1), &from, None, Some("other.example")),
            [Finding::DkimUnaligned {
                dkim: "other.example".into(),
                from: "example.com".into()
            }]
        );
        assert_eq!(
            lint(&email("", 101), &from, Some("me@gmail.com"), None),
            [
                Finding::FromDomainDiffers {
                    from: "example.com".into(),
                    login: "gmail.com".into()
                },
                Finding::NoSubject,
                Finding::ManyRecipients { count: 101 }
            ]
        );
        let mut big = email("Report", 1);
        big.attachments.push(crate::message::email::Attachment {
            file_name: "big.bin".into(),
            content_type: "application/octet-stream".parse().unwrap(),
            data: vec![0; LARGE_ATTACHMENTS as usize + 1].into(),
            content_id: None,
        });
        big.body.is_html = true;
        let found = lint(&big, &from, None, None);
        assert_eq!(found[0], Finding::HtmlOnly);
        assert!(
            found[1]
                .to_string()
                .starts_with("the attachments are 20.0 MB, 26.7 MB")
        );
    }
}

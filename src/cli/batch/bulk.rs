//! The bulk-sender rules of `envoi batch` (docs/batch.md, "Bulk mail"):
//!
//! - `--unsubscribe-url` (an https URL, a template over the record), `--unsubscribe-mailto`
//!   and `--list-id` write `List-Unsubscribe`, `List-Unsubscribe-Post:
//!   List-Unsubscribe=One-Click` (RFC 8058, only with the https URL) and `List-Id`
//!   (RFC 2919) into each record's message, before it is built and DKIM-signed (the
//!   signer covers them: [`envoi::message::dkim::SIGNED_FIELDS`]). A rendered URL that is
//!   not a plain https URL makes its record `invalid`; the others go.
//! - The suppression list (`suppress = "/path"`): a record with a recipient on it is
//!   `suppressed` (exit 0, nothing sent), and a recipient refused with a 5xx to RCPT TO (a
//!   hard bounce) is added to it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use envoi::deliver::{BatchSent, Failure, RcptReply};
use envoi::draft::Draft;
use envoi::error::{Error, ErrorKind, Result};
use envoi::message::address;
use envoi::message::draft::Sourced;
use envoi::message::template::{self, Vars};
use envoi::outbox::Status;
use envoi::outbox::suppress::{self, SuppressList};
use envoi::profile::Connection;

use super::report::Line;
use crate::cli::args::BatchArgs;
use crate::cli::render::warning;

/// The longest unsubscribe URL written: well inside the 998 characters of a header line
/// (RFC 5322), with room for the mailto beside it; longer links are not what a one-click
/// POST needs (the token identifies the recipient).
pub(super) const MAX_URL: usize = 800;

/// Where an undefined variable of an unsubscribe template should have come from.
const RECORD_HINT: &str = "a CSV row gives it in a column of that name (missing or empty in \
     this row), a JSON Lines record as a field (To, Subject…)";

/// What a batch does for bulk mail: the list headers and the suppression list.
#[derive(Default)]
pub(super) struct Bulk {
    /// `--unsubscribe-url`: the template.
    url: Option<String>,
    /// `--unsubscribe-mailto`: the template.
    mailto: Option<String>,
    /// `--list-id`, checked and written as the header's value.
    list_id: Option<String>,
    /// The suppression list, when the profile has one.
    suppression: Option<Suppression>,
}

/// The suppression list a batch read when it started, and where new entries go.
struct Suppression {
    path: std::path::PathBuf,
    /// What this run knows: the file as read, and the hard bounces since.
    list: Mutex<SuppressList>,
    /// Whether a failed write of the list was said already (once a run is enough).
    warned: AtomicBool,
}

impl Bulk {
    /// The flags checked (64 when a template or the List-Id is malformed) and the
    /// profile's suppression list read (78 when it is not a file envoi may trust).
    pub(super) fn of(args: &BatchArgs, connection: &Connection) -> Result<Bulk> {
        for (flag, source) in [
            ("--unsubscribe-url", &args.unsubscribe_url),
            ("--unsubscribe-mailto", &args.unsubscribe_mailto),
        ] {
            if let Some(source) = source {
                minijinja::Environment::new()
                    .template_from_str(source)
                    .map_err(|e| {
                        Error::usage(format!("{flag} {source:?}: not a valid template: {e}"))
                    })?;
            }
        }
        let list_id = args.list_id.as_deref().map(list_id).transpose()?;
        let suppression = match &connection.profile.suppress {
            Some(path) => Some(Suppression {
                list: Mutex::new(SuppressList::load(path)?),
                path: path.clone(),
                warned: AtomicBool::new(false),
            }),
            None => None,
        };
        if suppression.is_none() && (args.unsubscribe_url.is_some() || args.list_id.is_some()) {
            // Bulk mail without a list mails again those who bounced or unsubscribed: say
            // so, as a URL connection reads no config file (so no `suppress` key either).
            warning(
                "this batch has no suppression list (the profile's `suppress` key; a \
                 --smtp-url connection reads no config file): hard bounces are not remembered \
                 and no recipient is skipped",
            );
        }
        Ok(Bulk {
            url: args.unsubscribe_url.clone(),
            mailto: args.unsubscribe_mailto.clone(),
            list_id,
            suppression,
        })
    }

    /// Whether the records' templates need their values ([`envoi::message::records::Record::vars`]).
    pub(super) fn needs_vars(args: &BatchArgs) -> bool {
        args.unsubscribe_url.is_some() || args.unsubscribe_mailto.is_some()
    }

    /// `draft` with the list headers of its record (`vars`, at `line`); 65 when a
    /// template fails or renders what cannot be written.
    pub(super) fn headers(&self, mut draft: Draft, vars: &Vars, line: u64) -> Result<Draft> {
        let at = |flag: &str| format!("line {line}: {flag}");
        let url = match &self.url {
            Some(source) => {
                let label = at("--unsubscribe-url");
                Some(https_url(
                    &label,
                    &template::render_record(&label, source, vars, RECORD_HINT)?,
                )?)
            }
            None => None,
        };
        let mailto = match &self.mailto {
            Some(source) => {
                let label = at("--unsubscribe-mailto");
                Some(mailto_uri(
                    &label,
                    &template::render_record(&label, source, vars, RECORD_HINT)?,
                )?)
            }
            None => None,
        };
        let mut headers = Vec::new();
        let links: Vec<String> = url
            .iter()
            .chain(mailto.iter())
            .map(|uri| format!("<{uri}>"))
            .collect();
        if !links.is_empty() {
            headers.push(format!("List-Unsubscribe: {}", links.join(", ")));
        }
        if url.is_some() {
            // RFC 8058 §3.1: only with an https URI, which the POST goes to.
            headers.push("List-Unsubscribe-Post: List-Unsubscribe=One-Click".to_owned());
        }
        if let Some(id) = &self.list_id {
            headers.push(format!("List-Id: {id}"));
        }
        if headers.is_empty() {
            return Ok(draft);
        }
        let mut all = draft.headers.take().map(|h| h.value).unwrap_or_default();
        all.extend(headers);
        draft.headers = Some(Sourced {
            label: at("--unsubscribe-url/--list-id"),
            value: all,
        });
        Ok(draft)
    }

    /// The result line of a record with a recipient on the suppression list: nothing is
    /// sent, exit 0. `None` when none of `envelope` is on it (or there is no list).
    pub(super) fn suppressed(&self, line: u64, envelope: &[String]) -> Option<Line> {
        let suppression = self.suppression.as_ref()?;
        let list = suppression
            .list
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let on: Vec<String> = envelope
            .iter()
            .filter_map(|to| list.get(to))
            .map(|entry| {
                let since = if entry.added.is_empty() {
                    String::new()
                } else {
                    format!(" since {}", entry.added)
                };
                let why = if entry.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", entry.reason)
                };
                format!("{}{since}{why}", entry.address)
            })
            .collect();
        if on.is_empty() {
            return None;
        }
        let why = format!(
            "on the suppression list {}: {}; not sent (`envoi suppress remove ADDRESS` \
             sends to it again)",
            suppression.path.display(),
            on.join(", ")
        );
        let mut skipped = Line::unsent(line, Status::Suppressed, ErrorKind::InvalidData, why);
        skipped.exit_code = 0;
        skipped.note = skipped.error.take();
        Some(skipped.to(envelope))
    }

    /// Adds the recipients `sent` says were refused with a 5xx to RCPT TO (hard bounces)
    /// to the suppression list. A list that cannot be written is a warning: the record's
    /// outcome stands, and the next run meets the same refusal.
    pub(super) fn bounced(&self, sent: &std::result::Result<BatchSent, Failure>) {
        let Some(suppression) = &self.suppression else {
            return;
        };
        let report = match sent {
            Ok(BatchSent::Sent(report)) => report,
            Ok(BatchSent::Saved(_)) => return,
            Err(failure) => &failure.report,
        };
        let hard: Vec<(String, String)> = report
            .refused
            .iter()
            .filter(|r| hard_bounce(r))
            .map(|r| (r.address.clone(), format!("{} {}", r.code, r.message)))
            .collect();
        if hard.is_empty() {
            return;
        }
        let written = suppress::add(&suppression.path, &hard, SystemTime::now());
        let mut list = suppression
            .list
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match written {
            Ok(added) => {
                // Later records of this run skip it too.
                for entry in added {
                    list.insert(entry);
                }
            }
            Err(e) => {
                // Not written, but this run still skips the address, and says so once.
                for (address, reason) in &hard {
                    list.insert(suppress::Entry {
                        address: suppress::normalize(address),
                        added: String::new(),
                        reason: reason.clone(),
                    });
                }
                if !suppression.warned.swap(true, Ordering::Relaxed) {
                    warning(&format!(
                        "a hard bounce ({}) could not be added to the suppression list: {e}; \
                         this run skips it, the next one will not",
                        hard.iter()
                            .map(|(a, _)| a.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
    }
}

/// Whether a refused recipient bounced hard: the reply says the address itself is bad
/// (RFC 3463: 5.1.1 no such mailbox, 5.1.2 no such domain, 5.1.3 bad syntax, 5.1.6 moved,
/// 5.1.10 null MX, 5.2.1 disabled), not the sender, the relay, a policy or a full mailbox
/// (5.7.x "relay access denied" or a blocklisted sending address, 5.2.2, 5.3.x, 5.4.x, 5.5.x),
/// which would put the whole list on it. Without an enhanced code: 550, 551 and 553 only.
fn hard_bounce(reply: &RcptReply) -> bool {
    let code = reply.message.split_whitespace().next().unwrap_or_default();
    let parts: Vec<&str> = code.split('.').collect();
    let enhanced = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if enhanced {
        matches!(
            parts[..],
            ["5", "1", "1" | "2" | "3" | "6" | "10"] | ["5", "2", "1"]
        )
    } else {
        matches!(reply.code, 550 | 551 | 553)
    }
}

/// A rendered `--unsubscribe-url` checked: an absolute https URL with a host, printable
/// ASCII without spaces, `<`, `>` or a raw comma (RFC 2369 §2: commas in a URL must be
/// encoded, a list of them is comma-separated), at most [`MAX_URL`] characters. 65 else.
fn https_url(label: &str, rendered: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::invalid(format!(
            "{label}: the rendered URL {rendered:?} {why}; percent-encode the record's values \
             in the template ({{{{ value | urlencode }}}})"
        ))
    };
    plain_uri(rendered).map_err(|why| bad(&why))?;
    if rendered.len() > MAX_URL {
        return Err(bad(&format!(
            "is {} characters long, over {MAX_URL}",
            rendered.len()
        )));
    }
    let url = url::Url::parse(rendered).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(bad(
            "is not an https URL (RFC 8058 one-click unsubscribe needs https://)",
        ));
    }
    // What the URL parser would mend (`https:///u` has the host `u` to it) is refused:
    // the header carries the text as rendered.
    let host = url.host_str().unwrap_or_default();
    let written = rendered
        .to_ascii_lowercase()
        .strip_prefix("https://")
        .is_some_and(|rest| !host.is_empty() && rest.starts_with(host));
    if !written {
        return Err(bad("has no host after https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("holds a user name or password"));
    }
    Ok(rendered.to_owned())
}

/// A rendered `--unsubscribe-mailto`: an address (written `mailto:ADDRESS`) or a whole
/// `mailto:` URI (`mailto:u@example.com?subject=unsubscribe`). 65 else.
fn mailto_uri(label: &str, rendered: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid(format!("{label}: {rendered:?} {why}"));
    let (addr, query) = match rendered.strip_prefix("mailto:") {
        Some(rest) => match rest.split_once('?') {
            Some((addr, query)) => (addr, Some(query)),
            None => (rest, None),
        },
        None => (rendered, None),
    };
    let mailbox = address::parse_single(label, addr)?;
    let bare = mailbox.email.to_string();
    if bare != addr || !addr.is_ascii() {
        return Err(bad(
            "is not a bare ASCII address or mailto: URI (like unsubscribe@example.com)",
        ));
    }
    let uri = match query {
        Some(query) => format!("mailto:{bare}?{query}"),
        None => format!("mailto:{bare}"),
    };
    plain_uri(&uri).map_err(|why| bad(&why))?;
    if uri.len() > MAX_URL {
        return Err(bad(&format!("is over {MAX_URL} characters")));
    }
    Ok(uri)
}

/// Why `uri` cannot stand between `<` and `>` in a header, if it cannot.
fn plain_uri(uri: &str) -> std::result::Result<(), String> {
    match uri
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '<' | '>' | ',' | '"'))
    {
        None => Ok(()),
        Some(c) if c.is_whitespace() || c.is_control() => {
            Err(format!("holds {c:?}, a space or control character"))
        }
        Some(c) => Err(format!("holds {c:?}, which must be percent-encoded")),
    }
}

/// `--list-id`: `Name <label.example.com>`, `<label.example.com>` or
/// `label.example.com` (RFC 2919): the id is dot-atom text with at least one dot, at most
/// 255 characters; the description printable ASCII without `<`, `>` or `"` (written as
/// a quoted string when it holds other specials). The header's value, or 64.
pub(super) fn list_id(value: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::usage(format!(
            "--list-id {value:?}: {why}; give it as 'Name <list-name.example.com>' (RFC 2919)"
        ))
    };
    let value = value.trim();
    let (name, id) = match value.rfind('<') {
        Some(open) => {
            let Some(id) = value[open + 1..].strip_suffix('>') else {
                return Err(bad("the id must end the value, in <…>"));
            };
            (value[..open].trim(), id)
        }
        None => ("", value),
    };
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let labels: Vec<&str> = id.split('.').collect();
    if id.len() > 255 {
        return Err(bad("the id is over 255 characters"));
    }
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || !l.chars().all(atext)) {
        return Err(bad(
            "the id must be a list name and a domain you own, joined by dots, in letters, \
             digits and - (like news.example.com)",
        ));
    }
    if name
        .chars()
        .any(|c| !(c.is_ascii_graphic() || c == ' ') || matches!(c, '<' | '>' | '"' | '\\'))
    {
        return Err(bad(
            "the name must be printable ASCII without <, >, \" or \\",
        ));
    }
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || atext(c));
    Ok(match (name.is_empty(), plain) {
        (true, _) => format!("<{id}>"),
        (false, true) => format!("{name} <{id}>"),
        (false, false) => format!("\"{name}\" <{id}>"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsubscribe_url_must_be_plain_https() {
        let ok = |u: &str| https_url("--unsubscribe-url", u);
        assert_eq!(
            ok("https://example.com/u?id=abc%20d").unwrap(),
            "https://example.com/u?id=abc%20d"
        );
        for bad in [
            "http://example.com/u",
            "https://example.com/u?id=a b",
            "https://example.com/u?id=a\r\nBcc: x@y.z",
            "https://example.com/u?id=a,b",
            "https://example.com/u?id=<x>",
            "https://exämple.com/u",
            "mailto:u@example.com",
            "https:///u",
            "https://user:pw@example.com/u",
            "/u?id=1",
            "",
        ] {
            let e = ok(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidData, "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert!(ok(&long).unwrap_err().message().contains("over 800"));
    }

    #[test]
    fn headers_are_rendered_per_record_and_an_empty_value_names_the_column() {
        let bulk = Bulk {
            url: Some("https://example.com/u?t={{ token }}".into()),
            list_id: Some("<news.example.com>".into()),
            ..Bulk::default()
        };
        let vars: Vars = [("token".to_owned(), serde_json::json!("abc"))].into();
        let draft = bulk.headers(Draft::default(), &vars, 2).unwrap();
        assert_eq!(
            draft.headers.unwrap().value,
            [
                "List-Unsubscribe: <https://example.com/u?t=abc>",
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                "List-Id: <news.example.com>",
            ]
        );
        let e = bulk.headers(Draft::default(), &Vars::new(), 3).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert!(
            e.message().starts_with("line 3: --unsubscribe-url")
                && e.message().contains("token")
                && e.message().contains("column")
                && !e.message().contains("--var"),
            "{e}"
        );
    }

    #[test]
    fn a_mailto_is_an_address_or_a_mailto_uri() {
        let m = |u: &str| mailto_uri("--unsubscribe-mailto", u);
        assert_eq!(m("u@example.com").unwrap(), "mailto:u@example.com");
        assert_eq!(
            m("mailto:u+7@example.com?subject=unsubscribe").unwrap(),
            "mailto:u+7@example.com?subject=unsubscribe"
        );
        assert!(m("Ann <u@example.com>").is_err());
        assert!(m("mailto:u@example.com?subject=a b").is_err());
        assert!(m("not an address").is_err());
    }

    #[test]
    fn a_list_id_follows_rfc_2919() {
        assert_eq!(
            list_id("Newsletter <news.example.com>").unwrap(),
            "Newsletter <news.example.com>"
        );
        assert_eq!(list_id("news.example.com").unwrap(), "<news.example.com>");
        assert_eq!(
            list_id("Acme, Inc. news <news.example.com>").unwrap(),
            "\"Acme, Inc. news\" <news.example.com>"
        );
        for bad in [
            "News <example>",
            "News <news..example.com>",
            "News <news.example.com",
            "Nëws <news.example.com>",
            "a\"b <news.example.com>",
            "News <news example.com>",
        ] {
            assert_eq!(list_id(bad).unwrap_err().kind(), ErrorKind::Usage, "{bad}");
        }
    }

    #[test]
    fn only_a_bad_address_is_a_hard_bounce_not_the_relay_nor_a_full_mailbox() {
        let reply = |code: u16, message: &str| RcptReply {
            address: "a@example.net".into(),
            code,
            message: message.into(),
        };
        assert!(hard_bounce(&reply(
            550,
            "5.1.1 <a@example.net>: user unknown"
        )));
        assert!(hard_bounce(&reply(550, "5.1.10 null MX")));
        assert!(hard_bounce(&reply(550, "no such user here")));
        assert!(!hard_bounce(&reply(
            554,
            "5.7.1 <a@example.net>: Relay access denied"
        )));
        assert!(!hard_bounce(&reply(
            550,
            "5.7.1 blocked using zen.spamhaus.org"
        )));
        assert!(!hard_bounce(&reply(552, "5.2.2 mailbox full")));
        assert!(!hard_bounce(&reply(554, "Relay access denied")));
        assert!(!hard_bounce(&reply(450, "4.1.1 try later")));
    }
}

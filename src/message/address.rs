//! Address lists as the connector writes them: `Ann <a@x>; b@y, "Doe, John" <j@z>`.
//!
//! A list splits on `;` or `,` outside quotes and angle brackets. Each item is parsed
//! by lettre; the domain is then turned into its A-label (punycode) so an IDN domain
//! needs no SMTPUTF8. A non-ASCII local part stays as it is (the server must offer
//! SMTPUTF8, checked at send time), and so does a quoted one (`"john doe"@example.com`).

use lettre::message::Mailbox;
use lettre::{Address, message::Mailboxes};

use crate::error::{Error, Result};
use crate::message::check;

/// Parses every list in `values` (each may hold several addresses) into mailboxes.
///
/// `what` names the flag or property for error messages, e.g. `--to` or `To`.
pub fn parse_lists<S: AsRef<str>>(what: &str, values: &[S]) -> Result<Vec<Mailbox>> {
    let mut mailboxes = Vec::new();
    for value in values {
        let value = value.as_ref();
        // The list as given never becomes a header (envoi writes and folds its own), so
        // only each address must fit one: a long list without spaces is fine (T51).
        check::no_line_breaks(what, value)?;
        for item in split_list(value) {
            check::header_text(what, item)?;
            mailboxes.push(parse_mailbox(what, item)?);
        }
    }
    Ok(mailboxes)
}

/// Parses exactly one address (for `--from`).
pub fn parse_single(what: &str, value: &str) -> Result<Mailbox> {
    let mut all = parse_lists(what, &[value])?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(Error::invalid(format!("{what}: no address given"))),
        n => Err(Error::invalid(format!(
            "{what}: expected one address, found {n} in {value:?}"
        ))),
    }
}

/// Splits on `;` and `,` that are outside a quoted string and outside `<…>`.
/// Empty items (a trailing `;`, say) are dropped.
pub(crate) fn split_list(list: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in list.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ';' | ',' if !in_quotes && !in_angle => {
                items.push(&list[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_mailbox(what: &str, item: &str) -> Result<Mailbox> {
    let invalid = || Error::invalid(format!("{what}: {item:?} is not a valid address"));
    // lettre reads a quoted local part but hands back its content unquoted, which its own
    // Address then refuses (`john doe`); so lettre reads the item with a stand-in there.
    let (item_for_lettre, quoted) = match quoted_local_part(item) {
        Some((range, local)) => {
            let mut stand_in = item.to_owned();
            stand_in.replace_range(range, "quoted");
            (std::borrow::Cow::Owned(stand_in), Some(local))
        }
        None => (std::borrow::Cow::Borrowed(item), None),
    };
    // lettre parses comma-separated lists; one item must give exactly one mailbox.
    let parsed: Mailboxes = item_for_lettre.parse().map_err(|_| invalid())?;
    let mut iter = parsed.into_iter();
    let (Some(mailbox), None) = (iter.next(), iter.next()) else {
        return Err(invalid());
    };
    let ascii_domain = idna::domain_to_ascii(mailbox.email.domain()).map_err(|_| {
        Error::invalid(format!(
            "{what}: {item:?} has a domain that is not a valid international domain name"
        ))
    })?;
    let user = quoted.as_deref().unwrap_or(mailbox.email.user());
    // lettre takes any non-ASCII character into a local part (RFC 6531), a no-break or
    // other Unicode space included: outside quotes a space of any kind is not an address
    // a person meant (found by the sendmail_message fuzz target).
    if quoted.is_none() && user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(format!(
            "{what}: {item:?} is not a valid address: its local part holds a space or a \
             control character (quote it, \"like this\"@example.com, if that is meant)"
        )));
    }
    let address = Address::new(user, ascii_domain).map_err(|_| invalid())?;
    Ok(Mailbox::new(mailbox.name, address))
}

/// A local part written as a quoted string (RFC 5321 §4.1.2: `"john doe"@example.com`):
/// where it stands in `item`, and the local part in the form that uses the least quoting,
/// as RFC 5321 asks a sender to transmit it (`"john"` is `john`; `"john doe"` stays
/// quoted, with only `"` and `\` escaped). `None` when the local part is not quoted.
fn quoted_local_part(item: &str) -> Option<(std::ops::Range<usize>, String)> {
    let item_end = item.trim_end().len();
    // The address is inside the last `<…>` outside quotes, else the whole item.
    let start = if item[..item_end].ends_with('>') {
        let mut quoted = false;
        let mut open = None;
        for (i, c) in item.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '<' if !quoted => open = Some(i + 1),
                _ => {}
            }
        }
        open?
    } else {
        item.len() - item.trim_start().len()
    };
    let rest = item[start..].strip_prefix('"')?;
    let mut content = String::new();
    let mut chars = rest.char_indices();
    let close = loop {
        match chars.next()? {
            (_, '\\') => content.push(chars.next()?.1),
            (i, '"') => break start + 1 + i,
            (_, c) => content.push(c),
        }
    };
    if !item[close + 1..].starts_with('@') {
        return None;
    }
    let local = if is_dot_atom(&content) {
        content
    } else {
        format!("\"{}\"", content.replace('\\', "\\\\").replace('"', "\\\""))
    };
    Some((start..close + 1, local))
}

/// RFC 5322 §3.2.3 `dot-atom-text` (non-ASCII allowed, RFC 6531): needs no quotes.
fn is_dot_atom(text: &str) -> bool {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    !text.is_empty()
        && text
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn emails(values: &[&str]) -> Vec<String> {
        parse_lists("--to", values)
            .unwrap()
            .into_iter()
            .map(|m| m.email.to_string())
            .collect()
    }

    /// T51: fifty addresses separated by `;` without spaces (over 900 characters) are a
    /// list, not one unfoldable word.
    #[test]
    fn t51_a_long_list_without_spaces_is_accepted() {
        let list: Vec<String> = (0..50).map(|i| format!("user{i:02}@example.com")).collect();
        let value = list.join(";");
        assert!(value.len() > 900);
        let parsed = parse_lists("--bcc", &[value]).unwrap();
        assert_eq!(parsed.len(), 50);
        let err = parse_lists("--bcc", &["a@example.com;b@exa\r\nmple.com"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn splits_on_semicolons_and_commas() {
        assert_eq!(
            emails(&["a@x.com;b@y.com, c@z.com ;"]),
            ["a@x.com", "b@y.com", "c@z.com"]
        );
    }

    #[test]
    fn repeated_values_are_concatenated() {
        assert_eq!(emails(&["a@x.com", "b@y.com"]), ["a@x.com", "b@y.com"]);
    }

    #[test]
    fn separators_inside_quotes_do_not_split() {
        let list =
            parse_lists("--to", &[r#""Doe, John" <j@x.com>; "Lee; Ann" <a@x.com>"#]).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name.as_deref(), Some("Doe, John"));
        assert_eq!(list[0].email.to_string(), "j@x.com");
        assert_eq!(list[1].name.as_deref(), Some("Lee; Ann"));
    }

    #[test]
    fn display_names_are_kept() {
        let list = parse_lists("--to", &["Ann Lee <ann@example.com>"]).unwrap();
        assert_eq!(list[0].name.as_deref(), Some("Ann Lee"));
        assert_eq!(list[0].email.to_string(), "ann@example.com");
    }

    #[test]
    fn idn_domains_become_a_labels() {
        assert_eq!(
            emails(&["Zoë <zoe@bücher.example>"]),
            ["zoe@xn--bcher-kva.example"]
        );
    }

    #[test]
    fn non_ascii_local_parts_are_kept_for_smtputf8() {
        assert_eq!(emails(&["usér@example.com"]), ["usér@example.com"]);
    }

    #[test]
    fn invalid_addresses_name_the_flag_and_value() {
        let err = parse_lists("--to", &["bob@"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert_eq!(err.message(), r#"--to: "bob@" is not a valid address"#);
        assert!(parse_lists("--cc", &["not an address"]).is_err());
    }

    #[test]
    fn line_breaks_are_refused() {
        let err = parse_lists("--to", &["a@x.com\r\nRCPT TO:<evil@x.com>"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }

    /// T54: a quoted local part (RFC 5321 §4.1.2) is an address, kept quoted, in the
    /// form with the least quoting.
    /// Found by the sendmail_message fuzz target: lettre took a no-break space (or
    /// another Unicode space) into an unquoted local part, and the address went into
    /// RCPT TO as written.
    #[test]
    fn an_unquoted_local_part_holds_no_space_of_any_kind() {
        for item in [
            "a\u{a0}b@example.com",
            "a\u{2003}b@example.com",
            "a\u{85}b@example.com",
        ] {
            let err = parse_lists("--to", &[item]).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::InvalidData, "{item:?}");
        }
        assert!(parse_lists("--to", &["\"a\u{a0}b\"@example.com"]).is_ok());
        assert!(parse_lists("--to", &["jos\u{e9}@example.com"]).is_ok());
    }

    #[test]
    fn t54_quoted_local_parts_are_kept_quoted() {
        assert_eq!(
            emails(&[r#""john doe"@example.test; Ann <"a b"@x.test>, "plain"@x.test"#]),
            [
                r#""john doe"@example.test"#,
                r#""a b"@x.test"#,
                "plain@x.test"
            ]
        );
        let list = parse_lists("--to", &[r#""Doe, J" <"john \"jd\" doe"@example.test>"#]).unwrap();
        assert_eq!(list[0].name.as_deref(), Some("Doe, J"));
        assert_eq!(
            list[0].email.to_string(),
            r#""john \"jd\" doe"@example.test"#
        );
        assert_eq!(emails(&[r#""a\ b"@x.test"#]), [r#""a b"@x.test"#]);
        for bad in [
            "\"john doe@example.test",
            "\"a\r\nb\"@x.test",
            "\"x\"y@x.test",
        ] {
            assert!(parse_lists("--to", &[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn single_address_must_be_one() {
        assert!(parse_single("--from", "a@x.com").is_ok());
        assert!(parse_single("--from", "a@x.com; b@x.com").is_err());
        assert!(parse_single("--from", " ; ").is_err());
    }
}

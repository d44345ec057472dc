//! Checks on values that end up in a header line or an SMTP command.
//!
//! CR, LF and NUL could smuggle a header or a command (header and SMTP injection);
//! other control characters have no place in a header either (RFC 5322 allows only
//! printable characters, space and tab); and a word too long to fold would make a line
//! over the 998-octet limit. lettre encodes non-ASCII words and folds at spaces, so only
//! long runs of ASCII without a space are refused.

use crate::error::{Error, Result};

/// Longest ASCII word accepted in a header value; with the name and folding whitespace
/// the line stays under RFC 5322's 998 octets.
pub(crate) const MAX_HEADER_WORD: usize = 900;

/// Refuses CR, LF and NUL. `what` names the flag or key, e.g. `--to`.
pub(crate) fn no_line_breaks(what: &str, value: &str) -> Result<()> {
    match value.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
        Some(c) => Err(Error::invalid(format!(
            "{what}: the value contains a {} character, which is not allowed here: {value:?}",
            control_name(c)
        ))),
        None => Ok(()),
    }
}

/// A header value: no control character but tab, and no unfoldable ASCII word.
pub(crate) fn header_text(what: &str, value: &str) -> Result<()> {
    no_line_breaks(what, value)?;
    if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(Error::invalid(format!(
            "{what}: the value contains the control character {}, which is not allowed in a \
             header: {value:?}",
            control_name(c)
        )));
    }
    // lettre folds at spaces only, so a tab does not end a word here.
    let longest = value
        .split(' ')
        .filter(|word| word.is_ascii())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest > MAX_HEADER_WORD {
        return Err(Error::invalid(format!(
            "{what}: a word of {longest} characters without a space cannot be folded into a \
             header line (at most {MAX_HEADER_WORD})"
        )));
    }
    Ok(())
}

/// An RFC 5322 field name: 1 to 76 printable ASCII characters, no colon.
pub(crate) fn is_header_name(name: &str) -> bool {
    (1..=76).contains(&name.len()) && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn control_name(c: char) -> String {
    match c {
        '\r' => "CR".into(),
        '\n' => "LF".into(),
        '\0' => "NUL".into(),
        c => format!("U+{:04X}", u32::from(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn line_breaks_are_refused_with_the_flag_named() {
        let err = no_line_breaks("--subject", "hi\r\nBcc: x@y").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(
            err.message()
                .starts_with("--subject: the value contains a CR"),
            "{err}"
        );
        assert!(no_line_breaks("--subject", "a\0b").is_err());
        assert!(no_line_breaks("--subject", "fine ✓").is_ok());
    }

    #[test]
    fn header_text_refuses_controls_and_unfoldable_words() {
        assert!(header_text("--subject", "tab\tis fine, ünïcödé too").is_ok());
        let err = header_text("--subject", "a\x1b[2Jb").unwrap_err();
        assert!(err.message().contains("U+001B"), "{err}");
        assert!(header_text("--subject", "del\x7f").is_err());
        let long = "x".repeat(MAX_HEADER_WORD + 1);
        assert!(header_text("--subject", &long).is_err());
        assert!(header_text("--subject", &format!("{} {}", &long[1..], &long[1..])).is_ok());
        assert!(header_text("--subject", &"é".repeat(2000)).is_ok());
    }

    #[test]
    fn header_names() {
        assert!(is_header_name("X-Job"));
        for bad in ["", "X Job", "X:Job", "X\tJob", "Ünï", &"X".repeat(77)] {
            assert!(!is_header_name(bad), "{bad:?}");
        }
    }
}

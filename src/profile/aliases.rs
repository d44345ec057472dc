//! Sendmail mode's aliases: the profile's `[profiles.NAME.aliases]` table and the system
//! aliases file its `aliases_file` names (`/etc/aliases`, aliases(5)), read into the
//! [`Alias`]es that qualify bare names like cron's `root`.
//!
//! The file is read as Postfix and sendmail write it: `name: target, target`, a line
//! that starts with a space or tab continues the one before, a line whose first
//! non-blank character is `#` is a comment (and so is the rest of a line from a `#`
//! after a blank, as msmtp reads its aliases). Names match in any case. A target is an
//! address, a name (itself perhaps an alias) or `\name` (no further aliasing). Local
//! deliveries (`|command`, `/file`, `:include:list`) are kept, and refused only when a
//! message goes to that alias: a system file has them for names envoi never sees, and
//! refusing the whole file for them would refuse every message.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::message::given::{Alias, is_local_delivery as is_local};
use crate::ownership::{self, Owner};

/// An alias's value in the profile: `"a@x, b@y"` or `["a@x", "b@y"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum AliasValue {
    /// One string, its targets separated by commas.
    One(String),
    /// A list, each element one or more comma-separated targets.
    Many(Vec<String>),
}

/// The profile's `[profiles.NAME.aliases]` table, checked: every alias has a target, and
/// each is an address or a name (a local delivery there is a mistake, 78).
pub(super) fn from_table(
    profile: &str,
    table: &BTreeMap<String, AliasValue>,
) -> Result<BTreeMap<String, Alias>> {
    let origin = format!("[profiles.{profile}.aliases]");
    let mut aliases = BTreeMap::new();
    for (name, value) in table {
        let what = format!("profile {profile:?}: aliases: {name}");
        check_name(&what, name)?;
        let written = match value {
            AliasValue::One(one) => std::slice::from_ref(one),
            AliasValue::Many(many) => many.as_slice(),
        };
        let targets: Vec<String> = written.iter().flat_map(|t| split_targets(t)).collect();
        if targets.is_empty() {
            return Err(Error::config(format!(
                "{what}: no address; write {name} = \"you@example.com\" (several: \
                 \"a@example.com, b@example.com\")"
            )));
        }
        for target in &targets {
            if is_local(target) {
                return Err(Error::config(format!(
                    "{what}: {target:?} is a local delivery (a command, file or :include:); \
                     envoi only hands mail to a relay: give an address"
                )));
            }
            check_target(&what, target)?;
        }
        aliases.insert(
            name.to_ascii_lowercase(),
            Alias {
                targets,
                origin: origin.clone(),
            },
        );
    }
    Ok(aliases)
}

/// Reads the aliases file at `path` (the `aliases_file` key): a regular file of at most
/// [`ownership::MAX_NAMED_FILE`], owned by the user or root and writable by no one else,
/// since it decides where mail goes. Errors are 78 and name the key, the file and the
/// line.
pub(super) fn read_file(path: &Path) -> Result<BTreeMap<String, Alias>> {
    const WHAT: &str = "aliases_file";
    let bytes = ownership::read_named(path)
        .map_err(|e| Error::config(format!("{WHAT} {}: {e}", path.display())))?;
    ownership::check_trusted_file(
        path,
        WHAT,
        "decides where sendmail mode's mail goes",
        Owner::MeOrRoot,
    )?;
    parse_file(
        &path.display().to_string(),
        &String::from_utf8_lossy(&bytes),
    )
}

/// The aliases of a file's `text`; `shown` is its path, for errors and origins. The first
/// entry for a name wins, as Postfix's postalias keeps it.
fn parse_file(shown: &str, text: &str) -> Result<BTreeMap<String, Alias>> {
    // Logical lines: each with the number of its first physical line.
    let mut entries: Vec<(usize, String)> = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let line = strip_comment(line);
        match entries.last_mut() {
            Some((_, entry)) if line.starts_with([' ', '\t']) => {
                entry.push(' ');
                entry.push_str(line.trim());
            }
            _ => entries.push((index + 1, line.to_owned())),
        }
    }
    let mut aliases = BTreeMap::new();
    for (number, entry) in entries {
        let origin = format!("{shown} line {number}");
        let what = format!("aliases_file {origin}");
        let Some((name, targets)) = entry.split_once(':') else {
            return Err(Error::config(format!(
                "{what}: {:?} is not `name: address, address`",
                entry.chars().take(60).collect::<String>()
            )));
        };
        let name = name.trim().trim_matches('"');
        check_name(&what, name)?;
        let targets = split_targets(targets);
        if targets.is_empty() {
            return Err(Error::config(format!("{what}: {name} has no target")));
        }
        for target in targets.iter().filter(|t| !is_local(t)) {
            check_target(&what, target)?;
        }
        aliases
            .entry(name.to_ascii_lowercase())
            .or_insert(Alias { targets, origin });
    }
    Ok(aliases)
}

/// `line` without a `#` comment that follows a blank (outside double quotes).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    let mut blank_before = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && blank_before => return &line[..i],
            _ => {}
        }
        blank_before = c == ' ' || c == '\t';
    }
    line
}

/// The targets of a value: split at commas outside double quotes, each trimmed and
/// unquoted (`"|/usr/bin/procmail"`), empty ones dropped.
fn split_targets(value: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    let mut push = |part: &str| {
        let part = part.trim();
        let part = part
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or(part)
            .trim();
        if !part.is_empty() {
            targets.push(part.to_owned());
        }
    };
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&value[start..]);
    targets
}

/// An alias name: a local part, without `@`, blanks or control characters.
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.contains('@')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::config(format!(
            "{what}: {name:?} is not an alias name (a bare name like root, without @ or \
             blanks)"
        )));
    }
    Ok(())
}

/// A target that is not a local delivery: an address lettre reads, or a name (`\name`
/// included).
fn check_target(what: &str, target: &str) -> Result<()> {
    let ok = if target.contains('@') {
        target.parse::<lettre::Address>().is_ok()
    } else {
        check_name(what, target.strip_prefix('\\').unwrap_or(target)).is_ok()
    };
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{what}: {target:?} is neither an address (ops@example.com) nor a name"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_system_aliases_format() {
        let text = "# /etc/aliases\r\nmailer-daemon: postmaster\r\npostmaster: root\n\n\
                    Root: ops@example.com,\n  \"Ann Example\"@example.com , \n\talice\n\
                    \x20 # an indented comment is a comment, not a continuation\n\
                    bob: bob@example.com # the admin\n\
                    mailman: \"|/usr/lib/mailman/mail/mailman post list\", \\mailman\n\
                    log: /var/log/mail.log\n\
                    staff: :include:/etc/staff\n\
                    postmaster: someone-else@example.com\n";
        let aliases = parse_file("/etc/aliases", text).unwrap();
        let targets = |name: &str| aliases[name].targets.clone();
        assert_eq!(targets("mailer-daemon"), ["postmaster"]);
        assert_eq!(targets("postmaster"), ["root"], "the first entry wins");
        assert_eq!(
            targets("root"),
            ["ops@example.com", "\"Ann Example\"@example.com", "alice"]
        );
        assert_eq!(aliases["root"].origin, "/etc/aliases line 5");
        assert_eq!(targets("bob"), ["bob@example.com"]);
        assert_eq!(
            targets("mailman"),
            ["|/usr/lib/mailman/mail/mailman post list", "\\mailman"]
        );
        assert_eq!(targets("log"), ["/var/log/mail.log"]);
        assert_eq!(targets("staff"), [":include:/etc/staff"]);
    }

    #[test]
    fn a_line_that_is_not_an_alias_is_78_naming_file_and_line() {
        for (text, line) in [
            ("root: a@example.com\nno colon here\n", 2),
            ("root:\n", 1),
            ("a b: c@example.com\n", 1),
            ("x: y\nroot: not an@address@x\n", 2),
        ] {
            let err = parse_file("/etc/aliases", text).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Config, "{text}");
            assert!(
                err.message()
                    .starts_with(&format!("aliases_file /etc/aliases line {line}:")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_profile_table_takes_a_string_or_a_list() {
        let table: BTreeMap<String, AliasValue> = toml::from_str(
            "root = \"ops@example.com, alice@example.com\"\n\
             Web = [\"www@example.com\", \"root\"]\n",
        )
        .unwrap();
        let aliases = from_table("work", &table).unwrap();
        assert_eq!(
            aliases["root"].targets,
            ["ops@example.com", "alice@example.com"]
        );
        assert_eq!(aliases["web"].targets, ["www@example.com", "root"]);
        assert_eq!(aliases["web"].origin, "[profiles.work.aliases]");
        for bad in ["root = \"|/bin/sh\"", "root = []", "root = \"a@@b\""] {
            let table: BTreeMap<String, AliasValue> = toml::from_str(bad).unwrap();
            let err = from_table("work", &table).unwrap_err();
            assert!(
                err.message()
                    .starts_with("profile \"work\": aliases: root:"),
                "{err}"
            );
        }
    }
}

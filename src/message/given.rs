//! A message given whole, as sendmail mode reads it on standard input: its header fields
//! as written and its body as given.
//!
//! envoi sends it as given, except for what a submission agent must do (RFC 6409 §8):
//! the Bcc and Resent-Bcc fields are removed, a missing Date, Message-ID or From is
//! added, and bare names (`root`, cron's `root (Cron Daemon)`) are qualified through the
//! profile's aliases or default domain in the envelope and in From, To and Cc (and their
//! Resent- forms). Every line ending becomes CRLF; 8-bit bytes pass unchanged. An address
//! group (RFC 5322 §3.4, `Team: a@x, b@y;`) stands for its members; an empty one
//! (`undisclosed-recipients:;`) for no one. Two profile keys, msmtp's, decide who the
//! sender is: `allow_from_override` (may `-f` set the envelope sender) and
//! [`SetFromHeader`] (is From kept, added when missing, or rewritten to the profile's).
//!
//! What `send` refuses is refused here too, by the same checks (`check`): empty input
//! (66), NUL and other control characters in a header, NUL in the body, a `-F` that
//! `--from` would refuse, and lines over 998 octets: a header line is folded at its
//! whitespace when it has some, a body line is refused (65), since encoding it would
//! mean rewriting the caller's MIME structure.
//!
//! [`with_envelope_in_header`] reads a built message's header the same way, for the
//! HTTPS mail APIs, which take their recipients from To, Cc and Bcc.

use std::collections::BTreeMap;
use std::time::SystemTime;

use lettre::Address;
use lettre::address::Envelope;
use lettre::message::Mailbox;

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};
use crate::message::build::{
    Prepared, date_value, encoded_mailboxes, new_message_id, same_mailbox,
};
use crate::message::{address, check};

/// How bare names become addresses: the profile's `aliases` (and its `aliases_file`'s),
/// else `name@default_domain`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// `root = "ops@example.com, alice@example.com"`, by lowercase name (aliases(5)
    /// matches names in any case).
    pub aliases: BTreeMap<String, Alias>,
    /// The domain of a bare name without an alias.
    pub default_domain: Option<String>,
}

/// What one alias stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// Addresses, or names that may be aliases themselves, as written. A system aliases
    /// file may also give a local delivery (`|command`, `/file`, `:include:`), which
    /// envoi cannot make: it is refused when a message goes to the alias.
    pub targets: Vec<String>,
    /// Where it is written, for errors: `[profiles.work.aliases]`, `/etc/aliases line 12`.
    pub origin: String,
}

/// The most addresses one name may stand for once its aliases are followed: more is a
/// mistake (or a file written to blow up), and every one is an RCPT command.
const MAX_EXPANSION: usize = 1000;

/// Whether an alias target is a local delivery (aliases(5)): a program, a file or an
/// included list, none of which a relay can be told to do.
pub fn is_local_delivery(target: &str) -> bool {
    target.starts_with('|') || target.starts_with('/') || target.starts_with(":include:")
}

impl Names {
    /// `name` as one address, for the envelope sender: the first address it stands for
    /// ([`Names::expand`]). Local deliveries are passed over, not refused: no mail goes
    /// to a sender, so cron's `-f root` works with a `root: /var/mail/archive, ops@x`.
    fn qualify(&self, what: &str, name: &str) -> Result<String> {
        let mut out = Vec::new();
        self.expand_into(what, name, true, &mut Vec::new(), &mut out)?;
        out.into_iter().next().ok_or_else(|| {
            Error::config(format!(
                "{what}: the alias {name:?} stands for no address, only local deliveries"
            ))
        })
    }

    /// A local user's own address, `login@default_domain`, never through an alias (an
    /// alias says where mail to the name goes, not who the user is): the only sender the
    /// system spool lets `login` use. 78 without `default_domain`.
    pub fn own_address(&self, what: &str, login: &str) -> Result<String> {
        self.with_domain(what, login)
    }

    /// `name` as addresses: a name with `@` is one already; an alias stands for its
    /// targets, each followed in turn (`postmaster: root`, `root: ops@x, ann@x`); else
    /// `name@default_domain`. Each alias is expanded once on a chain: a name met again
    /// (`root: root, ops@x`, or a loop) is not looked up again but qualified, as a
    /// `\name` target always is (aliases(5): no further aliasing).
    fn expand(&self, what: &str, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.expand_into(what, name, false, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    fn expand_into<'n>(
        &'n self,
        what: &str,
        name: &str,
        sender: bool,
        chain: &mut Vec<&'n str>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        if name.contains('@') {
            out.push(name.to_owned());
        } else if let Some(local) = name.strip_prefix('\\') {
            out.push(self.with_domain(what, local)?);
        } else {
            match self.aliases.get_key_value(&name.to_ascii_lowercase()) {
                Some((key, alias)) if !chain.contains(&key.as_str()) => {
                    chain.push(key);
                    for target in &alias.targets {
                        if is_local_delivery(target) {
                            if sender {
                                continue;
                            }
                            return Err(Error::config(format!(
                                "{what}: {name:?} goes to {target:?} ({}): a local delivery \
                                 (a command, file or :include:) that envoi, which only hands \
                                 mail to a relay, cannot make; give {key} an address under \
                                 [profiles.NAME.aliases], which comes before the file",
                                alias.origin
                            )));
                        }
                        self.expand_into(what, target, sender, chain, out)?;
                    }
                    chain.pop();
                }
                _ => out.push(self.with_domain(what, name)?),
            }
        }
        if out.len() > MAX_EXPANSION {
            return Err(Error::config(format!(
                "{what}: {name:?} stands for more than {MAX_EXPANSION} addresses through the \
                 profile's aliases; check them for a mistake"
            )));
        }
        Ok(())
    }

    /// `name@default_domain`, for a bare name no alias covers.
    fn with_domain(&self, what: &str, name: &str) -> Result<String> {
        if name.chars().any(char::is_control) {
            // Never repeated raw: it came from the message or the command line.
            return Err(Error::invalid(format!(
                "{what}: {name:?} is not an address: it holds control characters"
            )));
        }
        match &self.default_domain {
            Some(domain) => Ok(format!("{name}@{domain}")),
            None => Err(Error::config(format!(
                "{what}: {name:?} is a bare name; add `{name} = \"you@example.com\"` under \
                 [profiles.NAME.aliases] or set default_domain in the profile"
            ))),
        }
    }

    /// One item of an address list as written in a header or on the command line:
    /// `a@x`, `Name <a@x>`, `root`, `root (Cron Daemon)`, as its mailboxes (several for
    /// an alias with several targets, each with the name written; none for an empty
    /// item). A comment stands in for a missing display name. The bool says whether the
    /// item was a bare name.
    fn mailbox(&self, what: &str, item: &str) -> Result<(Vec<Mailbox>, bool)> {
        let (bare, comment) = strip_comments(item);
        let bare = bare.trim();
        if bare.is_empty() {
            return Ok((Vec::new(), false));
        }
        let (display, inner) = match (bare.rfind('<'), bare.ends_with('>')) {
            (Some(open), true) => (
                Some(bare[..open].trim().trim_matches('"').to_owned()),
                &bare[open + 1..bare.len() - 1],
            ),
            _ => (None, bare),
        };
        let qualified = !inner.contains('@');
        let name = display
            .filter(|d| !d.is_empty())
            .or(comment.filter(|c| !c.is_empty()));
        let mut mailboxes = Vec::new();
        for address in self.expand(what, inner.trim())? {
            let text = match &name {
                Some(name) => format!("\"{}\" <{address}>", name.replace(['"', '\\'], "")),
                None => address,
            };
            mailboxes.push(address::parse_single(what, &text)?);
        }
        Ok((mailboxes, qualified))
    }

    /// Every mailbox of an address list, the members of its groups included (an empty
    /// group, `undisclosed-recipients:;`, has none); the bool says whether any was a bare
    /// name.
    fn mailboxes(&self, what: &str, list: &str) -> Result<(Vec<Mailbox>, bool)> {
        let (entries, any_bare) = self.entries(what, list)?;
        let all = entries
            .into_iter()
            .flat_map(|entry| match entry {
                Entry::Single(mailbox) => vec![mailbox],
                Entry::Group(_, members) => members,
            })
            .collect();
        Ok((all, any_bare))
    }

    /// The list's entries, each mailbox qualified (an alias with several targets as
    /// several); the bool says whether any was a bare name.
    fn entries<'l>(&self, what: &str, list: &'l str) -> Result<(Vec<Entry<'l, Mailbox>>, bool)> {
        let mut any_bare = false;
        let mut one = |item: &str| -> Result<Vec<Mailbox>> {
            let (mailboxes, bare) = self.mailbox(what, item)?;
            any_bare |= bare;
            Ok(mailboxes)
        };
        let mut entries = Vec::new();
        for entry in split_list(list) {
            match entry {
                Entry::Single(item) => entries.extend(one(item)?.into_iter().map(Entry::Single)),
                Entry::Group(name, items) => {
                    let mut members = Vec::new();
                    for item in items {
                        members.extend(one(item)?);
                    }
                    entries.push(Entry::Group(name, members));
                }
            }
        }
        Ok((entries, any_bare))
    }
}

/// What sendmail mode does with the message's From field: msmtp's `set_from_header`, with
/// its values and meaning, except that `on` writes the profile's `from`, the address the
/// account may send as, where msmtp writes the envelope sender (which `-f` may set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetFromHeader {
    /// Keep the From field; add one when it is missing, and replace a bare name
    /// (cron's `root (Cron Daemon)`) with the profile's `from`, keeping the name.
    #[default]
    Auto,
    /// Always write the profile's `from`, keeping the display name the message gives:
    /// for a relay that refuses a From its account does not own.
    On,
    /// Never write a From field: a message without one, or with a bare name there, is
    /// refused rather than changed.
    Off,
}

impl SetFromHeader {
    /// The value as the config file spells it.
    pub fn name(self) -> &'static str {
        match self {
            SetFromHeader::Auto => "auto",
            SetFromHeader::On => "on",
            SetFromHeader::Off => "off",
        }
    }
}

/// One entry of an address list (RFC 5322 §3.4): a mailbox, or a group, its display name
/// and its members (`Team: a@x, b@y;`, or none: `undisclosed-recipients:;`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry<'l, T> {
    Single(T),
    Group(&'l str, Vec<T>),
}

/// One header field: its name and its lines exactly as given (continuations included).
#[derive(Debug, Clone)]
struct Field {
    name: String,
    lines: Vec<Vec<u8>>,
}

impl Field {
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// The unfolded value, as text (8-bit bytes replaced).
    fn value(&self) -> String {
        let joined: Vec<u8> = self.lines.join(&b" "[..]);
        let text = String::from_utf8_lossy(&joined);
        let value = text.split_once(':').map_or("", |(_, v)| v);
        value.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A parsed message: header fields, then the body.
#[derive(Debug, Clone)]
pub struct Given {
    fields: Vec<Field>,
    body: Vec<u8>,
}

/// What sendmail mode knows besides the message.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    /// Recipients from the command line (each value may hold several, comma-separated).
    pub recipients: &'a [String],
    /// `-t`: also send to the To, Cc and Bcc fields, or to Resent-To, Resent-Cc and
    /// Resent-Bcc when the message has Resent- fields (it is being resent).
    pub from_headers: bool,
    /// `-f`: the envelope sender (`<>` for none); else the profile's `from`, else the
    /// From field's address.
    pub envelope_from: Option<&'a str>,
    /// `-F`: the sender's full name, for a From field envoi writes.
    pub full_name: Option<&'a str>,
    /// The profile's `from`.
    pub profile_from: Option<&'a str>,
    /// The profile's `allow_from_override`: whether `-f` may set the envelope sender
    /// (and, without a profile `from`, the From field). When false the sender is always
    /// the profile's `from` and `-f` is ignored, as msmtp ignores it, since cron always
    /// passes one.
    pub allow_from_override: bool,
    /// The profile's `set_from_header`.
    pub set_from_header: SetFromHeader,
    /// How bare names become addresses.
    pub names: &'a Names,
    /// For Date and Message-ID.
    pub now: SystemTime,
}

/// Splits `bytes` into header fields and body. The header ends at the first empty line;
/// a line that starts with a space or tab continues the field before it.
///
/// Errors: 66 when the input holds nothing but whitespace (the program that writes the
/// message probably failed; a message with a header and an empty body is sent); 65 for a
/// line that is not a header field, a control character in the header, a NUL in the
/// body, a header line over 998 octets without whitespace to fold it at, or a body line
/// over 998 octets.
pub fn parse(bytes: &[u8]) -> Result<Given> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::new(
            ErrorKind::NoInput,
            "standard input is empty: nothing to send (did the program that writes the \
             message fail?)",
        ));
    }
    let mut fields: Vec<Field> = Vec::new();
    let mut rest = bytes;
    let mut number = 0usize;
    loop {
        let (line, next) = split_line(rest);
        number += 1;
        if line.is_empty() {
            check_body(next, number + 1)?;
            return Ok(Given {
                fields,
                body: next.to_vec(),
            });
        }
        if line[0] == b' ' || line[0] == b'\t' {
            let Some(field) = fields.last_mut() else {
                return Err(not_a_header(line));
            };
            let what = format!("standard input, line {number} ({})", field.name);
            check::header_line(&what, line)?;
            field.lines.extend(check::fold(&what, line)?);
        } else {
            let colon = line
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(|| not_a_header(line))?;
            // Only blanks may stand around a field name: str::trim would also drop a form
            // feed or another Unicode space, and let "\x0cSubject:" pass as a Subject.
            let name = String::from_utf8_lossy(&line[..colon])
                .trim_matches([' ', '\t'])
                .to_owned();
            if name.is_empty() || !check::is_header_name(&name) {
                return Err(not_a_header(line));
            }
            let what = format!("standard input, line {number} ({name})");
            check::header_line(&what, line)?;
            let lines = check::fold(&what, line)?;
            fields.push(Field { name, lines });
        }
        rest = next;
    }
}

/// Checks every line of the body, which starts on line `number` of the input.
fn check_body(mut rest: &[u8], mut number: usize) -> Result<()> {
    while !rest.is_empty() {
        let (line, next) = split_line(rest);
        check::body_line(&format!("standard input, line {number}"), line)?;
        number += 1;
        rest = next;
    }
    Ok(())
}

fn not_a_header(line: &[u8]) -> Error {
    let start: String = String::from_utf8_lossy(line).chars().take(60).collect();
    Error::invalid(format!(
        "standard input is not a message: {start:?} is not a header field (a message starts \
         with fields like `To: …`, then an empty line, then the body)"
    ))
}

/// The first line of `bytes` (without its ending) and the rest. At the end of the input
/// the line is everything left.
fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|b| matches!(b, b'\r' | b'\n')) {
        None => (bytes, &bytes[bytes.len()..]),
        Some(i) => {
            let skip = if bytes[i..].starts_with(b"\r\n") {
                2
            } else {
                1
            };
            (&bytes[..i], &bytes[i + skip..])
        }
    }
}

impl Given {
    fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.is(name))
    }

    /// The From field's value, unfolded, when the message has one: the system spool
    /// checks it against the one sender its policy allows.
    pub fn from_field(&self) -> Option<String> {
        self.field("From").map(Field::value)
    }

    /// The message ready to send, as `submission` says.
    pub fn prepare(mut self, submission: &Submission) -> Result<Prepared> {
        let names = submission.names;
        // Checked whether or not it is used, as `--from`'s display name is.
        if let Some(name) = submission.full_name {
            check::header_text("-F", name)?;
        }
        let profile_from = submission
            .profile_from
            .map(|f| address::parse_single("profile from", f))
            .transpose()?;
        // allow_from_override = false: the profile's `from` is the sender whatever -f
        // says (msmtp ignores -f then too: cron passes one on every run).
        if !submission.allow_from_override && profile_from.is_none() {
            return Err(Error::config(
                "allow_from_override = false keeps the envelope sender to the profile's \
                 `from`, but the profile has no `from`: set one, or set \
                 allow_from_override = true",
            ));
        }
        let flag_from = submission
            .envelope_from
            .filter(|_| submission.allow_from_override);
        let from = self.settle_from(submission, flag_from, profile_from.as_ref())?;

        let mut recipients: Vec<Address> = Vec::new();
        for value in submission.recipients {
            recipients.extend(
                names
                    .mailboxes("recipient", value)?
                    .0
                    .into_iter()
                    .map(|m| m.email),
            );
        }
        if submission.from_headers {
            // As sendmail and Postfix do: a message being resent goes to its Resent-
            // recipients, not to those it was first sent to.
            let resent = self.fields.iter().any(|f| {
                f.name
                    .get(..7)
                    .is_some_and(|p| p.eq_ignore_ascii_case("Resent-"))
            });
            let read = if resent {
                ["Resent-To", "Resent-Cc", "Resent-Bcc"]
            } else {
                ["To", "Cc", "Bcc"]
            };
            for name in read {
                for field in self.fields.iter().filter(|f| f.is(name)) {
                    let (list, _) = names.mailboxes(name, &field.value())?;
                    recipients.extend(list.into_iter().map(|m| m.email));
                }
            }
        }
        let mut unique: Vec<Address> = Vec::new();
        for r in recipients {
            if !unique.iter().any(|u| same_mailbox(u, &r)) {
                unique.push(r);
            }
        }
        if unique.is_empty() {
            return Err(Error::usage(
                "no recipient: give addresses as arguments, or -t to read To, Cc and Bcc",
            ));
        }
        for name in ["To", "Cc", "Resent-To", "Resent-Cc"] {
            self.qualify_field(name, names)?;
        }
        self.fields.retain(|f| !check::is_blind_copy(&f.name));

        // -f, else the profile's `from` (the address the relay lets this account send
        // as), else the From field's: never what the message claims over the profile.
        let envelope_from = match flag_from {
            Some("<>") | Some("") => None,
            Some(given) => Some(address::parse_single("-f", &names.qualify("-f", given)?)?.email),
            None => Some(profile_from.as_ref().unwrap_or(&from).email.clone()),
        };
        let envelope = Envelope::new(envelope_from, unique)
            .map_err(|e| Error::usage(format!("cannot make the envelope: {e}")))?;

        if self.field("Date").is_none() {
            self.append("Date", &date_value(submission.now));
        }
        let message_id = match self.field("Message-ID") {
            Some(field) => field.value(),
            None => {
                let id = new_message_id(&from, submission.now);
                self.append("Message-ID", &id);
                id
            }
        };
        let bytes = self.into_bytes();
        check::header_block(&bytes)?;
        Ok(Prepared {
            message_id,
            envelope,
            bytes: bytes.into(),
        })
    }

    /// The sender, as `set_from_header` says. `auto`: the From field when it holds an
    /// address; a bare name there (cron's `root (Cron Daemon)`) or no From at all
    /// becomes the profile's `from` (else `-f`'s address), keeping the display name (or
    /// `-F`'s). `on`: always the profile's `from`, keeping the display name written.
    /// `off`: the From field as written, which must then hold an address.
    fn settle_from(
        &mut self,
        submission: &Submission,
        envelope_from: Option<&str>,
        profile_from: Option<&Mailbox>,
    ) -> Result<Mailbox> {
        let mode = submission.set_from_header;
        let field = self.field("From").map(Field::value);
        let mut written = None;
        if let Some(value) = &field {
            let (bare, comment) = strip_comments(value);
            let bare = bare.trim().trim_start_matches('<').trim_end_matches('>');
            if bare.contains('@') {
                let mailbox = match address::parse_lists("From", &[value.as_str()]) {
                    Ok(mut list) if !list.is_empty() => list.remove(0),
                    _ => self.names_from(submission, value)?,
                };
                if mode != SetFromHeader::On {
                    return Ok(mailbox);
                }
                written = mailbox.name;
            } else {
                written = comment;
            }
        }
        if mode == SetFromHeader::Off {
            return Err(Error::invalid(match &field {
                None => "the message has no From field, and the profile's set_from_header =                          \"off\" forbids adding one: write a From field, or set \
                         set_from_header = \"auto\""
                    .to_owned(),
                Some(value) => format!(
                    "From: {value:?} is a bare name, not an address, and the profile's \
                     set_from_header = \"off\" keeps the From field as written: write an \
                     address, or set set_from_header = \"auto\" (the profile's `from` \
                     replaces it)"
                ),
            }));
        }
        if let Some(name) = &written {
            check::header_text("From", name)?;
        }
        // Like sendmail: without a usable From, the envelope sender (-f) is the author.
        let envelope_from = envelope_from
            .filter(|f| !matches!(*f, "" | "<>"))
            .map(|f| submission.names.qualify("-f", f))
            .transpose()?
            .map(|f| address::parse_single("-f", &f))
            .transpose()?;
        let sender = match mode {
            SetFromHeader::On => profile_from.ok_or_else(|| {
                Error::config(
                    "set_from_header = \"on\" writes the profile's `from` into every message \
                     sendmail mode sends, but the profile has no `from`: set one, or set \
                     set_from_header = \"auto\"",
                )
            })?,
            _ => profile_from.or(envelope_from.as_ref()).ok_or_else(|| {
                Error::usage(
                    "no sender: the message's From is missing or a bare name, and neither -f \
                     nor the profile's `from` gives one",
                )
            })?,
        };
        let name = written
            .or_else(|| submission.full_name.map(str::to_owned))
            .or_else(|| sender.name.clone());
        let from = Mailbox::new(name, sender.email.clone());
        self.fields.retain(|f| !f.is("From"));
        self.append("From", &encoded_mailboxes(std::slice::from_ref(&from)));
        Ok(from)
    }

    /// A From field with an address that lettre cannot read as written: qualify it item
    /// by item.
    fn names_from(&self, submission: &Submission, value: &str) -> Result<Mailbox> {
        let (mut list, _) = submission.names.mailboxes("From", value)?;
        if list.is_empty() {
            return Err(Error::invalid("From: no address"));
        }
        Ok(list.remove(0))
    }

    /// Rewrites a To or Cc field whose list holds a bare name, groups kept as groups;
    /// leaves it as written otherwise.
    fn qualify_field(&mut self, name: &str, names: &Names) -> Result<()> {
        for field in self.fields.iter_mut().filter(|f| f.is(name)) {
            let value = field.value();
            let (entries, any_bare) = names.entries(name, &value)?;
            if any_bare {
                let list: Vec<String> = entries
                    .iter()
                    .map(|entry| match entry {
                        Entry::Single(mailbox) => encoded_mailboxes(std::slice::from_ref(mailbox)),
                        Entry::Group(group, members) => {
                            format!("{group}: {};", encoded_mailboxes(members))
                        }
                    })
                    .collect();
                let line = format!("{}: {}", field.name, list.join(",\r\n "));
                field.lines = line.split("\r\n").map(|l| l.as_bytes().to_vec()).collect();
            }
        }
        Ok(())
    }

    fn append(&mut self, name: &str, value: &str) {
        let line = format!("{name}: {value}");
        self.fields.push(Field {
            name: name.to_owned(),
            lines: line.split("\r\n").map(|l| l.as_bytes().to_vec()).collect(),
        });
    }

    /// The unfolded values of every field called `name`.
    pub(crate) fn field_values(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.is(name))
            .map(Field::value)
            .collect()
    }

    /// Drops every field with one of `names`.
    pub(crate) fn remove_fields(&mut self, names: &[&str]) {
        self.fields.retain(|f| !names.iter().any(|n| f.is(n)));
    }

    /// Adds the field `name: value`, a list folded after each comma.
    pub(crate) fn add_field(&mut self, name: &str, value: &str) {
        self.append(name, &value.replace(", ", ",\r\n "));
    }

    /// Whether the body is one part of plain text that a line of ASCII can start: no
    /// Content-Type or `text/plain`, and no transfer encoding but 7bit or 8bit.
    pub(crate) fn is_single_plain_text(&self) -> bool {
        let plain = self.field("Content-Type").is_none_or(|f| {
            f.value()
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("text/plain")
        });
        let encoding = self.field("Content-Transfer-Encoding").is_none_or(|f| {
            matches!(
                f.value().trim().to_ascii_lowercase().as_str(),
                "7bit" | "8bit"
            )
        });
        plain && encoding
    }

    /// Puts `line` and an empty line before the body.
    pub(crate) fn prepend_body_line(&mut self, line: &str) {
        let mut body = format!("{line}\r\n\r\n").into_bytes();
        body.extend_from_slice(&self.body);
        self.body = body;
    }

    /// The whole message with CRLF after every line.
    pub(crate) fn into_message_bytes(self) -> Vec<u8> {
        self.into_bytes()
    }

    /// The whole message with CRLF after every line.
    fn into_bytes(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        for line in self.fields.iter().flat_map(|f| &f.lines) {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let mut rest = &self.body[..];
        while !rest.is_empty() {
            let (line, next) = split_line(rest);
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
            rest = next;
        }
        out
    }
}

/// Takes `(comments)` out of an address (outside quotes): the text without them, and
/// the last comment's content.
fn strip_comments(item: &str) -> (String, Option<String>) {
    let mut bare = String::new();
    let mut comment = String::new();
    let mut last = None;
    let (mut depth, mut quoted) = (0usize, false);
    for c in item.chars() {
        match c {
            '"' if depth == 0 => {
                quoted = !quoted;
                bare.push(c);
            }
            '(' if !quoted => {
                if depth > 0 {
                    comment.push(c);
                }
                depth += 1;
            }
            ')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    last = Some(comment.trim().to_owned());
                    comment.clear();
                } else {
                    comment.push(c);
                }
            }
            _ if depth > 0 => comment.push(c),
            _ => bare.push(c),
        }
    }
    (bare, last)
}

/// Splits a header's address list into its items: at commas, and around groups
/// (`name: items;`), outside quotes, comments, `<…>` and domain literals (`[IPv6:…]`).
/// Items are as written, empty ones included; a group without its closing `;` ends with
/// the list.
fn split_list(list: &str) -> Vec<Entry<'_, &str>> {
    let mut entries = Vec::new();
    let mut group: Option<(&str, Vec<&str>)> = None;
    let (mut quoted, mut escaped, mut depth, mut angle, mut literal) =
        (false, false, 0usize, false, false);
    let mut start = 0;
    for (i, c) in list.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        let outside = !quoted && depth == 0 && !angle && !literal;
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            '<' if !quoted && depth == 0 => angle = true,
            '>' if !quoted && depth == 0 => angle = false,
            '[' if !quoted && depth == 0 => literal = true,
            ']' if !quoted && depth == 0 => literal = false,
            ':' if outside && group.is_none() => {
                group = Some((list[start..i].trim(), Vec::new()));
                start = i + 1;
            }
            ',' if outside => {
                let item = &list[start..i];
                match &mut group {
                    Some((_, members)) => members.push(item),
                    None => entries.push(Entry::Single(item)),
                }
                start = i + 1;
            }
            ';' if outside => {
                if let Some((name, mut members)) = group.take() {
                    members.push(&list[start..i]);
                    entries.push(Entry::Group(name, members));
                    start = i + 1;
                }
            }
            _ => {}
        }
    }
    let rest = &list[start..];
    match group {
        Some((name, mut members)) => {
            members.push(rest);
            entries.push(Entry::Group(name, members));
        }
        None => entries.push(Entry::Single(rest)),
    }
    entries
}

/// `message` as a service that takes its recipients from the header must get it (Graph,
/// the Gmail API: they take no envelope): every recipient of `envelope` missing from To
/// and Cc written into a Bcc field at the end of the header. Only these bytes carry it,
/// never what an SMTP server, the outbox or a dry run sees; DKIM never signs Bcc, so a
/// signature stays valid. An address of To, Cc or Bcc that is not in the envelope
/// (sendmail mode with explicit recipients, say) is refused (65, naming it): such a
/// service would send to it.
pub fn with_envelope_in_header(message: &[u8], envelope: &Envelope) -> Result<Vec<u8>> {
    let end = header_end(message);
    let mut named: Vec<Address> = Vec::new();
    let mut field: Option<Field> = None;
    let mut read = |field: Option<Field>| -> Result<()> {
        if let Some(field) = field.filter(|f| f.is("To") || f.is("Cc") || f.is("Bcc")) {
            let (list, _) = Names::default().mailboxes(&field.name, &field.value())?;
            for mailbox in list {
                if !envelope
                    .to()
                    .iter()
                    .any(|r| same_mailbox(r, &mailbox.email))
                {
                    return Err(Error::invalid(format!(
                        "{} is in the message's {} field but not among its recipients: an \
                         HTTPS mail API (transport = \"graph\" or \"gmail\") sends to every \
                         address of To and Cc and cannot leave it out; add it to the \
                         recipients, or send over SMTP",
                        mailbox.email, field.name
                    )));
                }
                named.push(mailbox.email);
            }
        }
        Ok(())
    };
    for line in message[..end].split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(field) = &mut field {
                field.lines.push(line.to_vec());
            }
            continue;
        }
        read(field.take())?;
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            field = Some(Field {
                name: String::from_utf8_lossy(&line[..colon]).trim().to_owned(),
                lines: vec![line.to_vec()],
            });
        }
    }
    read(field)?;
    let blind: Vec<String> = envelope
        .to()
        .iter()
        .filter(|r| !named.iter().any(|n| same_mailbox(n, r)))
        .map(ToString::to_string)
        .collect();
    let mut out = Vec::with_capacity(message.len() + 64 * blind.len());
    out.extend_from_slice(&message[..end]);
    if !blind.is_empty() {
        out.extend_from_slice(format!("Bcc: {}\r\n", blind.join(",\r\n ")).as_bytes());
    }
    out.extend_from_slice(&message[end..]);
    Ok(out)
}

/// Where the header of `message` ends: just after the line ending of its last field
/// (the empty line that follows is the body's side); the whole message when it has no
/// empty line.
fn header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") || message.starts_with(b"\n") {
        return 0;
    }
    let crlf = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2);
    let lf = message.windows(2).position(|w| w == b"\n\n").map(|i| i + 1);
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(message.len()),
    }
}

/// The fields that only a whole message carries at its top: a mailbox field with an
/// address, or one a mail program or server writes. A note that opens with `To: all
/// staff` or `Subject: outage` is a body, not a message.
const WHOLE_MESSAGE_FIELDS: &[&str] = &[
    "received",
    "return-path",
    "message-id",
    "mime-version",
    "dkim-signature",
    "delivered-to",
];

/// The most header lines [`whole_message_fields`] reads before deciding.
const MAX_HEADER_LINES: usize = 500;

/// The field names of `text`'s header block when `text` is a whole RFC 5322 message
/// (`envoi send < msg.eml`, meant for `envoi sendmail -t`): it opens with header fields
/// (continuation lines allowed) up to a blank line or its end, and one of them is From,
/// To, Cc or Bcc holding an `@`, or one of [`WHOLE_MESSAGE_FIELDS`]. `None` for any
/// other text.
pub(crate) fn whole_message_fields(text: &str) -> Option<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    let mut whole = false;
    for line in text.lines().take(MAX_HEADER_LINES) {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) && !names.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.len() > 76 || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let lower = name.to_ascii_lowercase();
        whole |= WHOLE_MESSAGE_FIELDS.contains(&lower.as_str())
            || (["from", "to", "cc", "bcc"].contains(&lower.as_str()) && value.contains('@'));
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_owned());
        }
    }
    whole.then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_message_is_told_from_a_body() {
        let eml = "Return-Path: <a@x.org>\r\nFrom: Ann <a@x.org>\r\nTo: b@y.org\r\n\
                   Subject: hi\r\n folded\r\n\r\nbody: not a header\r\n";
        assert_eq!(
            whole_message_fields(eml),
            Some(vec![
                "Return-Path".into(),
                "From".into(),
                "To".into(),
                "Subject".into()
            ])
        );
        let headers_only = "To: b@y.org\nSubject: s\n";
        assert!(whole_message_fields(headers_only).is_some());
        for body in [
            "",
            "hello\n",
            "To: all staff\nSubject: outage\n\nThe server is down.\n",
            "Note: the build broke\n\nsee a@x.org\n",
            "From: a@x.org\nthis line is prose\n\n",
            " From: a@x.org\n\n",
            "From a@x.org Mon Dec  7 00:00:00 2026\nTo: b@y.org\n\n",
        ] {
            assert_eq!(whole_message_fields(body), None, "{body:?}");
        }
    }
    use crate::error::ErrorKind;

    fn is_invalid(e: &Error) -> bool {
        e.kind() == ErrorKind::InvalidData
    }

    fn names() -> Names {
        Names {
            aliases: BTreeMap::from([(
                "root".to_owned(),
                Alias {
                    targets: vec!["ops@example.com".to_owned()],
                    origin: "test".to_owned(),
                },
            )]),
            default_domain: Some("host.example.com".into()),
        }
    }

    fn submission<'a>(names: &'a Names, recipients: &'a [String], t: bool) -> Submission<'a> {
        Submission {
            recipients,
            from_headers: t,
            envelope_from: None,
            full_name: None,
            profile_from: Some("Reports <reports@example.com>"),
            allow_from_override: true,
            set_from_header: SetFromHeader::Auto,
            names,
            now: SystemTime::UNIX_EPOCH,
        }
    }

    fn text(p: &Prepared) -> String {
        String::from_utf8_lossy(&p.bytes.to_vec().unwrap()).into_owned()
    }

    #[test]
    fn cron_style_input_is_qualified_and_completed() {
        let input = b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@box> backup\n\
                      Bcc: hidden@example.com\n\nline one\n.\nlast line\n";
        let names = names();
        let p = parse(input)
            .unwrap()
            .prepare(&submission(&names, &[], true))
            .unwrap();
        let t = text(&p);
        assert!(
            t.starts_with("To: ops@example.com\r\nSubject: Cron <root@box> backup\r\n"),
            "{t}"
        );
        assert!(
            t.contains("From: \"Cron Daemon\" <reports@example.com>\r\n"),
            "{t}"
        );
        assert!(!t.contains("hidden@"), "Bcc kept: {t}");
        assert!(
            t.contains("\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\n"),
            "{t}"
        );
        assert!(
            t.contains(&format!("\r\nMessage-ID: {}\r\n", p.message_id)),
            "{t}"
        );
        assert!(t.ends_with("\r\n\r\nline one\r\n.\r\nlast line\r\n"), "{t}");
        let rcpts: Vec<String> = p.envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(rcpts, ["ops@example.com", "hidden@example.com"]);
        assert_eq!(
            p.envelope.from().unwrap().to_string(),
            "reports@example.com"
        );
    }

    #[test]
    fn a_message_with_addresses_is_sent_as_given() {
        let input = b"From: Ann <ann@example.com>\r\nTo: bob@example.com\r\nMessage-ID: <x@y>\r\n\
                      Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nSubject: caf\xe9\r\n\r\nbody\r\n";
        let names = Names::default();
        let args = ["carl@example.com".to_owned()];
        let mut s = submission(&names, &args, false);
        s.envelope_from = Some("<>");
        let p = parse(input).unwrap().prepare(&s).unwrap();
        assert_eq!(p.bytes.to_vec().unwrap(), input, "changed: {}", text(&p));
        assert_eq!(p.message_id, "<x@y>");
        assert!(p.envelope.from().is_none());
        let rcpts: Vec<String> = p.envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(
            rcpts,
            ["carl@example.com"],
            "no -t: the To field is not a recipient"
        );
    }

    #[test]
    fn bare_names_need_an_alias_or_a_default_domain() {
        let input = b"To: someone\n\nhi\n";
        let err = parse(input)
            .unwrap()
            .prepare(&submission(&Names::default(), &[], true))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("default_domain"), "{err}");
        let names = names();
        let p = parse(input)
            .unwrap()
            .prepare(&submission(&names, &[], true))
            .unwrap();
        assert_eq!(p.envelope.to()[0].to_string(), "someone@host.example.com");
    }

    /// Found by the sendmail_message fuzz target: a bare name with control characters
    /// given as a recipient or as -f was repeated raw in the error, escape sequences and
    /// all; now it is refused as data, and never printed raw. (In a header the line
    /// itself is refused first.)
    #[test]
    fn a_bare_name_with_control_characters_is_not_an_address() {
        let input = b"Subject: x\n\nhi\n";
        let names = Names::default();
        let recipients = ["ro\x1b]2;x\x07ot".to_owned()];
        let as_recipient = submission(&names, &recipients, false);
        let mut as_sender = submission(&names, &[], false);
        as_sender.envelope_from = Some("a\x0bb");
        let ok = ["a@example.com".to_owned()];
        as_sender.recipients = &ok;
        for s in [as_recipient, as_sender] {
            let err = parse(input).unwrap().prepare(&s).unwrap_err();
            assert!(is_invalid(&err), "{err}");
            assert!(!err.message().chars().any(char::is_control), "{err:?}");
        }
    }

    /// Found by the fuzz target too: str::trim dropped a form feed before a field name,
    /// so "\x0cSubject:" was taken as a Subject and sent starting with a control
    /// character. Only blanks may surround a name.
    #[test]
    fn a_field_name_after_a_form_feed_is_not_a_header() {
        assert!(is_invalid(
            &parse(b"\x0cSubject: x\nTo: a@example.com\n\nhi\n").unwrap_err()
        ));
        assert!(parse(b"Subject : x\nTo: a@example.com\n\nhi\n").is_ok());
    }

    #[test]
    fn not_a_message_and_no_recipient() {
        assert!(is_invalid(&parse(b"hello world\n\nbody").unwrap_err()));
        let err = parse(b"Subject: x\n\nbody")
            .unwrap()
            .prepare(&submission(&names(), &[], true))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
    }

    #[test]
    fn comments_and_lists() {
        assert_eq!(
            strip_comments("root (Cron Daemon)"),
            ("root ".into(), Some("Cron Daemon".into()))
        );
        assert_eq!(
            split_list("a@x, \"B, C\" <b@y> (x, y), c"),
            [
                Entry::Single("a@x"),
                Entry::Single(" \"B, C\" <b@y> (x, y)"),
                Entry::Single(" c")
            ]
        );
    }

    /// RFC 5322 groups: `name: members;`, members possibly none. Colons inside quotes,
    /// comments, `<…>` and domain literals start no group.
    #[test]
    fn groups_are_split_into_their_members() {
        assert_eq!(
            split_list("undisclosed-recipients:;"),
            [
                Entry::Group("undisclosed-recipients", vec![""]),
                Entry::Single("")
            ]
        );
        assert_eq!(
            split_list("Team: a@x, \"B: C\" <b@y>;, c (re: x), d@[IPv6:::1], Late: e@z"),
            [
                Entry::Group("Team", vec![" a@x", " \"B: C\" <b@y>"]),
                Entry::Single(""),
                Entry::Single(" c (re: x)"),
                Entry::Single(" d@[IPv6:::1]"),
                Entry::Group("Late", vec![" e@z"]),
            ]
        );
        let names = names();
        let emails = |list: &str| -> Vec<String> {
            let (all, _) = names.mailboxes("To", list).unwrap();
            all.into_iter().map(|m| m.email.to_string()).collect()
        };
        assert_eq!(
            emails("Team: a@example.com, Bob <b@example.com>;, c@example.com"),
            ["a@example.com", "b@example.com", "c@example.com"]
        );
        assert!(emails("undisclosed-recipients:;").is_empty());
        assert!(emails("undisclosed-recipients: ;").is_empty());
    }

    /// What mailers write when every recipient is a Bcc: the empty group stays as written
    /// and only the Bcc addresses are recipients. Without -t it is left alone too.
    #[test]
    fn an_empty_group_is_no_recipient_and_stays_as_written() {
        let names = names();
        let input = b"From: ann@example.com\r\nTo: undisclosed-recipients:;\r\n\
                      Bcc: x@example.com\r\nSubject: s\r\n\r\nbody\r\n";
        let p = parse(input)
            .unwrap()
            .prepare(&submission(&names, &[], true))
            .unwrap();
        let rcpts: Vec<String> = p.envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(rcpts, ["x@example.com"]);
        let t = text(&p);
        assert!(
            t.starts_with(
                "From: ann@example.com\r\nTo: undisclosed-recipients:;\r\nSubject: s\r\n"
            ),
            "{t}"
        );
        // A header, not the letters: a random Message-ID may hold "Bcc".
        assert!(!t.to_ascii_lowercase().contains("\nbcc:"), "{t}");

        let args = ["bob@example.com".to_owned()];
        let p = parse(input)
            .unwrap()
            .prepare(&submission(&names, &args, false))
            .unwrap();
        assert!(text(&p).contains("\r\nTo: undisclosed-recipients:;\r\n"));

        let err = parse(b"To: undisclosed-recipients:;\n\nbody\n")
            .unwrap()
            .prepare(&submission(&names, &[], true))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage, "{err}");
    }

    /// SM14: -f, else the profile's `from`, else the From field: what the message claims
    /// never wins over the profile. The From field stays as written.
    #[test]
    fn the_envelope_sender_is_f_then_the_profile_then_the_from_field() {
        let names = names();
        let input = b"From: Chief <chief@victim.example>\nTo: a@example.com\n\nbody\n";
        let sender = |f: Option<&'static str>, profile: Option<&'static str>| {
            let mut s = submission(&names, &[], true);
            s.envelope_from = f;
            s.profile_from = profile;
            let p = parse(input).unwrap().prepare(&s).unwrap();
            assert!(text(&p).starts_with("From: Chief <chief@victim.example>\r\n"));
            p.envelope.from().map(ToString::to_string)
        };
        let profile = Some("Reports <reports@example.com>");
        assert_eq!(
            sender(Some("root"), profile).as_deref(),
            Some("ops@example.com")
        );
        assert_eq!(
            sender(None, profile).as_deref(),
            Some("reports@example.com")
        );
        assert_eq!(sender(None, None).as_deref(), Some("chief@victim.example"));
    }

    /// `allow_from_override = false`: -f (even `<>`) never reaches the envelope, and the
    /// From field does not either; without a profile `from` that is a configuration error.
    #[test]
    fn allow_from_override_false_pins_the_sender_to_the_profile() {
        let names = names();
        let input = b"From: Chief <chief@victim.example>\nTo: a@example.com\n\nbody\n";
        for f in [Some("bounces@example.com"), Some("<>"), Some("root"), None] {
            let mut s = submission(&names, &[], true);
            s.allow_from_override = false;
            s.envelope_from = f;
            let p = parse(input).unwrap().prepare(&s).unwrap();
            assert_eq!(
                p.envelope.from().map(ToString::to_string).as_deref(),
                Some("reports@example.com"),
                "{f:?}"
            );
            assert!(text(&p).starts_with("From: Chief <chief@victim.example>\r\n"));
        }
        let mut s = submission(&names, &[], true);
        s.allow_from_override = false;
        s.profile_from = None;
        let err = parse(input).unwrap().prepare(&s).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("allow_from_override"), "{err}");
    }

    /// `set_from_header`: `on` writes the profile's `from` with the name the message
    /// gives; `off` keeps From as written and refuses what it cannot keep; `auto` is the
    /// default tested above.
    #[test]
    fn set_from_header_on_rewrites_and_off_keeps() {
        let names = names();
        let with = |mode: SetFromHeader, input: &[u8]| {
            let mut s = submission(&names, &[], true);
            s.set_from_header = mode;
            s.envelope_from = Some("bounces@example.com");
            parse(input).unwrap().prepare(&s)
        };
        let spoof = b"From: Chief <chief@victim.example>\nTo: a@example.com\n\nbody\n";
        let p = with(SetFromHeader::On, spoof).unwrap();
        let t = text(&p);
        assert!(
            t.contains("\r\nFrom: Chief <reports@example.com>\r\n"),
            "{t}"
        );
        assert!(!t.contains("victim"), "{t}");
        assert_eq!(
            p.envelope.from().unwrap().to_string(),
            "bounces@example.com",
            "-f still sets the envelope"
        );
        let p = with(SetFromHeader::On, b"To: a@example.com\n\nbody\n").unwrap();
        assert!(text(&p).contains("From: Reports <reports@example.com>\r\n"));

        let p = with(SetFromHeader::Off, spoof).unwrap();
        assert!(text(&p).starts_with("From: Chief <chief@victim.example>\r\n"));
        for input in [
            &b"To: a@example.com\n\nbody\n"[..],
            b"From: root (Cron Daemon)\nTo: a@example.com\n\nbody\n",
        ] {
            let err = with(SetFromHeader::Off, input).unwrap_err();
            assert!(is_invalid(&err), "{err}");
            assert!(err.message().contains("set_from_header"), "{err}");
        }
    }

    fn alias_table(entries: &[(&str, &[&str])]) -> Names {
        Names {
            aliases: entries
                .iter()
                .map(|(name, targets)| {
                    let alias = Alias {
                        targets: targets.iter().map(|t| t.to_string()).collect(),
                        origin: format!("/etc/aliases line {}", name.len()),
                    };
                    (name.to_string(), alias)
                })
                .collect(),
            default_domain: Some("box.example.com".into()),
        }
    }

    /// Several targets, chains followed, each alias expanded once on a chain: a name
    /// met again (itself, a loop) or written `\name` is qualified, not looked up.
    #[test]
    fn aliases_expand_to_several_targets_once_each() {
        let names = alias_table(&[
            ("mailer-daemon", &["postmaster"]),
            ("postmaster", &["root"]),
            ("root", &["ops@example.com", "ann", "root"]),
            ("ann", &["ann@example.com"]),
            ("ping", &["pong"]),
            ("pong", &["ping", "\\ann"]),
            ("bob", &["ops@example.com", "|/usr/bin/procmail"]),
        ]);
        let expand = |name: &str| names.expand("To", name);
        assert_eq!(
            expand("Mailer-Daemon").unwrap(),
            ["ops@example.com", "ann@example.com", "root@box.example.com"]
        );
        assert_eq!(
            expand("ping").unwrap(),
            ["ping@box.example.com", "ann@box.example.com"]
        );
        assert_eq!(expand("carl").unwrap(), ["carl@box.example.com"]);
        let err = expand("bob").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.message()
                .contains("\"|/usr/bin/procmail\" (/etc/aliases line 3)"),
            "{err}"
        );
        // The envelope sender takes the first address, passing over local deliveries.
        assert_eq!(names.qualify("-f", "root").unwrap(), "ops@example.com");
        let archive = alias_table(&[("root", &["/var/mail/archive", "ops@example.com"])]);
        assert_eq!(archive.qualify("-f", "root").unwrap(), "ops@example.com");
        assert!(archive.expand("To", "root").is_err());

        // A header keeps the name written on each address.
        let input = b"To: Admins <root>, b@example.com\nCc: ann\n\nbody\n";
        let p = parse(input)
            .unwrap()
            .prepare(&submission(&names, &[], true))
            .unwrap();
        let t = text(&p);
        assert!(
            t.starts_with(
                "To: Admins <ops@example.com>,\r\n Admins <ann@example.com>,\r\n \
                 Admins <root@box.example.com>,\r\n b@example.com\r\nCc: ann@example.com\r\n"
            ),
            "{t}"
        );
        let rcpts: Vec<String> = p.envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(
            rcpts,
            [
                "ops@example.com",
                "ann@example.com",
                "root@box.example.com",
                "b@example.com"
            ]
        );
    }

    /// A file written to multiply (each alias twice the one below) stops at the bound.
    #[test]
    fn an_alias_that_multiplies_is_bounded() {
        let levels: Vec<(String, Vec<String>)> = (0..20)
            .map(|i| (format!("a{i}"), vec![format!("a{}", i + 1); 2]))
            .collect();
        let names = Names {
            aliases: levels
                .into_iter()
                .map(|(name, targets)| {
                    let origin = "x".to_owned();
                    (name, Alias { targets, origin })
                })
                .collect(),
            default_domain: Some("example.com".into()),
        };
        let err = names.expand("To", "a0").unwrap_err();
        assert!(err.message().contains("more than 1000"), "{err}");
    }

    /// A bare name inside a group is qualified like any other, and the group kept.
    #[test]
    fn a_group_with_a_bare_name_is_rewritten_as_a_group() {
        let names = names();
        let input = b"To: Team: root, b@example.com;, c@example.com\nCc: None:;\n\nbody\n";
        let p = parse(input)
            .unwrap()
            .prepare(&submission(&names, &[], true))
            .unwrap();
        let t = text(&p);
        assert!(
            t.starts_with(
                "To: Team: ops@example.com,\r\n b@example.com;,\r\n c@example.com\r\nCc: None:;\r\n"
            ),
            "{t}"
        );
        let rcpts: Vec<String> = p.envelope.to().iter().map(ToString::to_string).collect();
        assert_eq!(rcpts, ["ops@example.com", "b@example.com", "c@example.com"]);
    }
    #[test]
    fn the_envelope_goes_into_the_header_for_an_api() {
        let address = |a: &str| a.parse::<Address>().unwrap();
        let envelope = Envelope::new(
            Some(address("me@x.org")),
            vec![
                address("ann@x.org"),
                address("Bob@X.org"),
                address("hidden@y.org"),
                address("audit@y.org"),
            ],
        )
        .unwrap();
        let message = b"From: me@x.org\r\nTo: Ann <ann@x.org>,\r\n \"B, o\" <Bob@x.ORG>\r\n\
                        Subject: hi\r\n\r\nTo: body@z.org\r\n";
        let out = with_envelope_in_header(message, &envelope).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "From: me@x.org\r\nTo: Ann <ann@x.org>,\r\n \"B, o\" <Bob@x.ORG>\r\n\
             Subject: hi\r\nBcc: hidden@y.org,\r\n audit@y.org\r\n\r\nTo: body@z.org\r\n"
        );
        let only = Envelope::new(None, vec![address("ann@x.org")]).unwrap();
        let err = with_envelope_in_header(message, &only).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(
            err.message().contains("Bob@x.org is in the message's To"),
            "{err}"
        );
        let all_named = Envelope::new(None, vec![address("ann@x.org"), address("Bob@x.org")]);
        let same = with_envelope_in_header(message, &all_named.unwrap()).unwrap();
        assert_eq!(same, message, "nothing to add: the bytes as they are");
    }
}

//! Recipient policy: who a profile may send to (`[profiles.NAME.policy]`, a file's
//! top-level `[policy]`, the system file's `[policy]`), as written and combined. The
//! outbox layer enforces it (`outbox::policy`); this layer only reads, checks and
//! combines the rules, each with where it was written.
//!
//! Combining never loosens: a recipient must pass every `allow` list, every `deny`
//! pattern refuses, the outermost `redirect_all` wins (system, then the file's top level,
//! then the profile), the smallest `max_recipients_per_message` counts, and one
//! `require_idempotency_key = true` is enough.

use std::fmt;
use std::path::{Path, PathBuf};

use lettre::message::Mailbox;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::message::address;

/// A `[policy]` table exactly as the file spells it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyEntry {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    redirect_all: Option<String>,
    max_recipients_per_message: Option<u32>,
    max_messages_per_hour: Option<u32>,
    max_messages_per_day: Option<u32>,
    require_idempotency_key: Option<bool>,
}

/// Where a rule was written: the level (`profile "staging"`, `top level`, `system
/// policy`) and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOrigin {
    /// `profile "NAME"`, `top level` or `system policy`.
    pub level: String,
    /// The config file it is in.
    pub file: PathBuf,
}

impl RuleOrigin {
    /// The `[profiles.NAME.policy]` table of `file`.
    pub(crate) fn profile(name: &str, file: &Path) -> RuleOrigin {
        RuleOrigin {
            level: format!("profile {name:?}"),
            file: std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf()),
        }
    }

    /// The top-level `[policy]` table of `file`.
    pub(crate) fn top(file: &Path) -> RuleOrigin {
        RuleOrigin {
            level: "top level".into(),
            file: std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf()),
        }
    }

    /// The top-level `[policy]` of the system file, read beside the user's own file.
    pub(crate) fn system(file: &Path) -> RuleOrigin {
        RuleOrigin {
            level: "system policy".into(),
            file: std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf()),
        }
    }
}

impl fmt::Display for RuleOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.level, self.file.display())
    }
}

/// One rule's value with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub origin: RuleOrigin,
}

/// A recipient pattern: `*` (everyone), `*@example.com` (that domain),
/// `*@*.example.com` (its subdomains, not itself) or `ops@partner.org` (one address).
/// Compared without regard to case, the local part included: a deny list must not be
/// passed by writing `Bob@` for `bob@`, and mail systems treat local parts alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// As written, for messages.
    pub text: String,
    kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternKind {
    Any,
    Domain(String),
    Subdomains(String),
    Address(String),
}

impl Pattern {
    /// Reads the pattern `text` of the key `key` (78 when it is none of the four forms).
    pub(crate) fn parse(key: &str, text: &str) -> Result<Pattern> {
        let bad = || {
            Error::config(format!(
                "{key}: {text:?} is not a recipient pattern: write \"*@example.com\" (a \
                 domain), \"*@*.example.com\" (its subdomains), \"ops@example.com\" (one \
                 address) or \"*\" (everyone)"
            ))
        };
        let kind = if text == "*" {
            PatternKind::Any
        } else if let Some(rest) = text.strip_prefix("*@") {
            let (sub, domain) = match rest.strip_prefix("*.") {
                Some(domain) => (true, domain),
                None => (false, rest),
            };
            if domain.is_empty() || domain.contains(['*', '@']) {
                return Err(bad());
            }
            // The domain as an address's domain is compared: its A-label, lowercase.
            let domain = address::parse_single(key, &format!("x@{domain}"))
                .map_err(|_| bad())?
                .email
                .domain()
                .to_lowercase();
            if sub {
                PatternKind::Subdomains(domain)
            } else {
                PatternKind::Domain(domain)
            }
        } else {
            if text.contains('*') {
                return Err(bad());
            }
            let mailbox = address::parse_single(key, text).map_err(|_| bad())?;
            if mailbox.name.is_some() {
                return Err(bad());
            }
            PatternKind::Address(mailbox.email.to_string().to_lowercase())
        };
        Ok(Pattern {
            text: text.to_owned(),
            kind,
        })
    }

    /// Whether `recipient` (an envelope address) fits.
    pub fn matches(&self, recipient: &lettre::Address) -> bool {
        let domain = recipient.domain().to_lowercase();
        match &self.kind {
            PatternKind::Any => true,
            PatternKind::Domain(d) => domain == *d,
            PatternKind::Subdomains(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.ends_with('.') && head.len() > 1),
            PatternKind::Address(a) => recipient.to_string().to_lowercase() == *a,
        }
    }
}

/// The effective recipient policy of a send: every rule that applies, each with its
/// origin. Empty (the default) lets everything through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipientPolicy {
    /// `allow` lists: a recipient must fit one pattern of each.
    pub allow: Vec<Rule<Vec<Pattern>>>,
    /// `deny` patterns: a recipient that fits one is refused, whatever allows it.
    pub deny: Vec<Rule<Pattern>>,
    /// `redirect_all`: every message goes to this address instead.
    pub redirect_all: Option<Rule<Mailbox>>,
    /// `max_recipients_per_message`: the smallest.
    pub max_recipients: Option<Rule<u32>>,
    /// `max_messages_per_hour`: the smallest.
    pub max_per_hour: Option<Rule<u32>>,
    /// `max_messages_per_day`: the smallest.
    pub max_per_day: Option<Rule<u32>>,
    /// `require_idempotency_key = true`, where it was set.
    pub require_idempotency_key: Option<RuleOrigin>,
}

impl RecipientPolicy {
    /// The table `entry`, written at `origin`, checked (78 naming the key).
    pub(crate) fn from_entry(entry: &PolicyEntry, origin: &RuleOrigin) -> Result<RecipientPolicy> {
        let key = |name: &str| {
            format!(
                "{} in {}: policy.{name}",
                origin.level,
                origin.file.display()
            )
        };
        let rule = |value| Rule {
            value,
            origin: origin.clone(),
        };
        let allow = match &entry.allow {
            Some(list) => vec![rule(
                list.iter()
                    .map(|p| Pattern::parse(&key("allow"), p))
                    .collect::<Result<Vec<_>>>()?,
            )],
            None => Vec::new(),
        };
        let deny = entry
            .deny
            .iter()
            .flatten()
            .map(|p| {
                Ok(Rule {
                    value: Pattern::parse(&key("deny"), p)?,
                    origin: origin.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let redirect_all = entry
            .redirect_all
            .as_deref()
            .map(|to| {
                let mailbox = address::parse_single(&key("redirect_all"), to)
                    .map_err(|e| Error::config(format!("{e}: give one address")))?;
                Ok::<_, Error>(Rule {
                    value: mailbox,
                    origin: origin.clone(),
                })
            })
            .transpose()?;
        for (name, value) in [
            (
                "max_recipients_per_message",
                entry.max_recipients_per_message,
            ),
            ("max_messages_per_hour", entry.max_messages_per_hour),
            ("max_messages_per_day", entry.max_messages_per_day),
        ] {
            if value == Some(0) {
                return Err(Error::config(format!(
                    "{}: 0 would refuse every message: give 1 or more, or remove the key",
                    key(name)
                )));
            }
        }
        let cap = |value: Option<u32>| {
            value.map(|n| Rule {
                value: n,
                origin: origin.clone(),
            })
        };
        Ok(RecipientPolicy {
            allow,
            deny,
            redirect_all,
            max_recipients: cap(entry.max_recipients_per_message),
            max_per_hour: cap(entry.max_messages_per_hour),
            max_per_day: cap(entry.max_messages_per_day),
            require_idempotency_key: (entry.require_idempotency_key == Some(true))
                .then(|| origin.clone()),
        })
    }

    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        *self == RecipientPolicy::default()
    }

    /// This policy (the outer one: the system's, or a file's top level) with `inner`'s
    /// rules added, never loosened: both allow lists must pass, both deny lists refuse,
    /// this redirect wins, the smaller cap counts, either requirement holds.
    pub fn within(mut self, inner: RecipientPolicy) -> RecipientPolicy {
        for allow in inner.allow {
            if !self.allow.contains(&allow) {
                self.allow.push(allow);
            }
        }
        for deny in inner.deny {
            if !self.deny.contains(&deny) {
                self.deny.push(deny);
            }
        }
        if self.redirect_all.is_none() {
            self.redirect_all = inner.redirect_all;
        }
        self.max_recipients = smaller(self.max_recipients, inner.max_recipients);
        self.max_per_hour = smaller(self.max_per_hour, inner.max_per_hour);
        self.max_per_day = smaller(self.max_per_day, inner.max_per_day);
        if self.require_idempotency_key.is_none() {
            self.require_idempotency_key = inner.require_idempotency_key;
        }
        self
    }

    /// Each rule as `envoi config show`, `check` and `--lint` list it: the key, its
    /// value, and where it was written.
    pub fn rules(&self) -> Vec<(String, String, &RuleOrigin)> {
        let quoted = |p: &Pattern| format!("{:?}", p.text);
        let mut rules = Vec::new();
        for allow in &self.allow {
            let list: Vec<String> = allow.value.iter().map(quoted).collect();
            rules.push((
                "policy.allow".into(),
                format!("[{}]", list.join(", ")),
                &allow.origin,
            ));
        }
        for deny in &self.deny {
            rules.push(("policy.deny".into(), quoted(&deny.value), &deny.origin));
        }
        if let Some(r) = &self.redirect_all {
            rules.push((
                "policy.redirect_all".into(),
                r.value.email.to_string(),
                &r.origin,
            ));
        }
        for (key, cap) in [
            ("policy.max_recipients_per_message", &self.max_recipients),
            ("policy.max_messages_per_hour", &self.max_per_hour),
            ("policy.max_messages_per_day", &self.max_per_day),
        ] {
            if let Some(r) = cap {
                rules.push((key.into(), r.value.to_string(), &r.origin));
            }
        }
        if let Some(origin) = &self.require_idempotency_key {
            rules.push((
                "policy.require_idempotency_key".into(),
                "true".into(),
                origin,
            ));
        }
        rules
    }
}

/// The smaller of two caps (the first of equals: the outer one).
fn smaller(a: Option<Rule<u32>>, b: Option<Rule<u32>>) -> Option<Rule<u32>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.value < a.value { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> lettre::Address {
        text.parse().unwrap()
    }

    fn pattern(text: &str) -> Pattern {
        Pattern::parse("policy.allow", text).unwrap()
    }

    #[test]
    fn patterns_match_without_regard_to_case() {
        assert!(pattern("*@Example.COM").matches(&address("Bob@example.com")));
        assert!(!pattern("*@example.com").matches(&address("bob@example.com.evil")));
        assert!(!pattern("*@example.com").matches(&address("bob@sub.example.com")));
        assert!(pattern("*@*.example.com").matches(&address("bob@sub.example.com")));
        assert!(!pattern("*@*.example.com").matches(&address("bob@example.com")));
        assert!(!pattern("*@*.example.com").matches(&address("bob@badexample.com")));
        assert!(pattern("ops@partner.org").matches(&address("OPS@Partner.org")));
        assert!(!pattern("ops@partner.org").matches(&address("ops2@partner.org")));
        assert!(pattern("*").matches(&address("anyone@anywhere.test")));
        assert!(pattern("*@bücher.example").matches(&address("a@xn--bcher-kva.example")));
    }

    #[test]
    fn a_pattern_that_is_none_of_the_forms_is_refused() {
        for bad in [
            "",
            "example.com",
            "*example.com",
            "b*@x.org",
            "*@",
            "*@*",
            "Ann <a@b.c>",
        ] {
            let err = Pattern::parse("policy.deny", bad).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Config, "{bad}");
            assert!(err.message().contains("policy.deny"), "{err}");
        }
    }

    #[test]
    fn combining_never_loosens() {
        let origin = |level: &str| RuleOrigin {
            level: level.into(),
            file: "/f".into(),
        };
        let outer = RecipientPolicy::from_entry(
            &PolicyEntry {
                allow: Some(vec!["*@example.com".into()]),
                deny: Some(vec!["ceo@example.com".into()]),
                redirect_all: Some("qa@example.com".into()),
                max_recipients_per_message: Some(10),
                max_messages_per_hour: None,
                max_messages_per_day: Some(100),
                require_idempotency_key: None,
            },
            &origin("system policy"),
        )
        .unwrap();
        let inner = RecipientPolicy::from_entry(
            &PolicyEntry {
                allow: Some(vec!["*".into()]),
                deny: Some(Vec::new()),
                redirect_all: Some("me@example.org".into()),
                max_recipients_per_message: Some(50),
                max_messages_per_hour: Some(5),
                max_messages_per_day: Some(1000),
                require_idempotency_key: Some(true),
            },
            &origin("profile"),
        )
        .unwrap();
        let both = outer.within(inner);
        assert_eq!(both.allow.len(), 2, "both lists must pass");
        assert_eq!(both.deny.len(), 1);
        let redirect = both.redirect_all.as_ref().unwrap();
        assert_eq!(redirect.value.email.to_string(), "qa@example.com");
        assert_eq!(both.max_recipients.as_ref().unwrap().value, 10);
        assert_eq!(both.max_per_hour.as_ref().unwrap().value, 5);
        assert_eq!(both.max_per_day.as_ref().unwrap().value, 100);
        assert_eq!(both.require_idempotency_key.unwrap().level, "profile");
    }
}

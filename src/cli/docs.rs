//! `envoi completions SHELL` and `envoi man`: shell completions and the man page,
//! generated from the same clap definitions as `--help`, so they cannot drift from it.
//! The man page's EXIT STATUS comes from `ErrorKind`, like the README's table.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, roman};
use envoi::error::ErrorKind;

use crate::cli::args::Cli;

/// The variables envoi reads, and what each sets.
const ENVIRONMENT: [(&str, &str); 13] = [
    ("ENVOI_CONFIG", "the config file (like --config)"),
    ("ENVOI_PROFILE", "the profile (like --profile)"),
    (
        "ENVOI_SMTP_URL",
        "a connection without a config file (like --smtp-url)",
    ),
    ("ENVOI_PASSWORD", "the password of an --smtp-url connection"),
    (
        "ENVOI_TOKEN",
        "the OAuth2 bearer token of an --smtp-url connection with ?auth=xoauth2 or oauthbearer",
    ),
    (
        "ENVOI_OUTBOX_DIR",
        "the outbox and idempotency ledger folder (like --outbox-dir)",
    ),
    (
        "ENVOI_IDEMPOTENCY_KEY",
        "send at most once per key (like --idempotency-key)",
    ),
    (
        "ALL_PROXY",
        "the proxy of a profile without a proxy key (all_proxy first, as curl)",
    ),
    (
        "HTTPS_PROXY",
        "for the HTTPS APIs and token endpoints, before ALL_PROXY (https_proxy first)",
    ),
    (
        "NO_PROXY",
        "hosts reached without the environment's proxy (no_proxy first; loopback never proxied)",
    ),
    (
        "SSL_CERT_FILE",
        "the CAs trusted instead of the system's (SSL_CERT_DIR too); ca_file still adds its own",
    ),
    (
        "XDG_CONFIG_HOME",
        "where the default config file is (envoi/config.toml)",
    ),
    (
        "XDG_DATA_HOME",
        "where the default outbox is (envoi/outbox)",
    ),
];

/// Copy-paste examples for the man page.
const EXAMPLES: [(&str, &str); 4] = [
    (
        "Send a report from cron through the profile `reports`:",
        "envoi send --profile reports --to ops@example.com --subject \"Backup\" --body-file /var/log/backup.log",
    ),
    (
        "Send from CI without a config file:",
        "ENVOI_PASSWORD=... envoi send --smtp-url smtps://bot%40example.com@smtp.example.com --from bot@example.com --to dev@example.com --subject \"Build failed\"",
    ),
    (
        "Queue when the relay is down, and flush from cron:",
        "envoi send --queue ...; envoi outbox flush",
    ),
    (
        "Be the sendmail of cron, git send-email and mail(1):",
        "ln -s \"$(command -v envoi)\" /usr/sbin/sendmail",
    ),
];

/// Writes the completion script for `shell`. (clap_complete panics when its writer
/// fails, as a closed pipe does, so the script is made in memory first.)
pub fn completions(shell: Shell, out: &mut impl Write) -> io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "envoi", &mut script);
    out.write_all(&script)
}

/// Writes the man page (roff).
pub fn man(out: &mut impl Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(Cli::command());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    roff.control("TP", [])
        .text([bold("0")])
        .text([roman("sent, saved or dry run")]);
    for kind in ErrorKind::ALL {
        roff.control("TP", [])
            .text([bold(kind.exit_code().to_string())])
            .text([roman(format!(
                "{} (--json kind {}, connector status {})",
                kind.summary(),
                kind.name(),
                kind.http_status()
            ))]);
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in ENVIRONMENT {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    roff.control("TP", [])
        .text([bold("~/.config/envoi/config.toml")])
        .text([roman(
            "connection profiles; config.example.toml in the sources documents every key",
        )]);
    roff.control("TP", [])
        .text([bold("~/.local/share/envoi/outbox")])
        .text([roman("the outbox of send --queue, and idempotency.json")]);
    roff.control("SH", ["EXAMPLES"]);
    for (what, command) in EXAMPLES {
        roff.control("PP", []).text([roman(what)]);
        roff.control("PP", []).text([bold(command)]);
    }
    roff.to_writer(out)?;
    man.render_version_section(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_has_its_sections_and_every_exit_code() {
        let mut out = Vec::new();
        man(&mut out).unwrap();
        let page = String::from_utf8(out).unwrap();
        for section in [
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "SUBCOMMANDS",
        ] {
            assert!(
                page.contains(&format!(".SH \"{section}\""))
                    || page.contains(&format!(".SH {section}")),
                "{section}"
            );
        }
        for kind in ErrorKind::ALL {
            assert!(page.contains(kind.name()), "{}", kind.name());
        }
    }

    /// The Environment table of docs/profiles.md (where the README's flag table points for
    /// the variables) and the man page list the same variables.
    #[test]
    fn the_profiles_guide_lists_every_variable() {
        let guide = include_str!("../../docs/profiles.md");
        let table = guide
            .split("## Environment")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").nth(1))
            .expect("docs/profiles.md has an Environment table");
        let rows = table.lines().filter(|l| l.starts_with("| `")).count();
        assert_eq!(rows, ENVIRONMENT.len(), "{table}");
        for (name, _) in ENVIRONMENT {
            assert!(table.contains(&format!("| `{name}` |")), "{name}");
        }
    }

    #[test]
    fn completions_know_the_commands() {
        let mut out = Vec::new();
        completions(Shell::Bash, &mut out).unwrap();
        let script = String::from_utf8(out).unwrap();
        for word in ["send", "outbox", "sendmail", "--idempotency-key"] {
            assert!(script.contains(word), "{word}");
        }
    }
}

//! `envoi completions SHELL` and `envoi man`: shell completions and the man page,
//! generated from the same clap definitions as `--help`, so they cannot drift from it.
//! The man page's EXIT STATUS comes from `ErrorKind`, like the README's table.

use std::io::{self, Write};
use std::path::Path;

use clap_complete::Shell;
use clap_mangen::roff::{Roff, bold, roman};
use envoi::error::{Error, ErrorKind, Result};

use crate::cli::{args, sendmail};

/// The variables envoi reads, and what each sets.
const ENVIRONMENT: [(&str, &str); 18] = [
    ("ENVOI_CONFIG", "the config file (like --config)"),
    (
        "ENVOI_SYSTEM_CONFIG",
        "the system-wide file read when the user has none (else /etc/envoi/config.toml)",
    ),
    (
        "ENVOI_SPOOL_DIR",
        "the system spool sendmail mode drops into when that file is closed to the user (else \
         /var/spool/envoi)",
    ),
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
        "ENVOI_LOG",
        "where the delivery log goes: syslog, journal, a file or none (like --log)",
    ),
    (
        "ENVOI_LEDGER",
        "idempotency keys in a shared PostgreSQL database (like --ledger)",
    ),
    (
        "PGPASSWORD",
        "the password of the --ledger database (as for psql)",
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
    clap_complete::generate(shell, &mut args::command(), "envoi", &mut script);
    let script = String::from_utf8_lossy(&script);
    out.write_all(with_profile_names(shell, &script).as_bytes())
}

/// The command the completions run for `--profile`'s value: the config's profile names.
/// (`$ENVOI_CONFIG` chooses the file, as for every command; errors are not the shell's.)
const PROFILE_NAMES: &str = "envoi profiles --names 2>/dev/null";

/// `script` with `--profile`'s values completed from [`PROFILE_NAMES`] rather than from
/// file names. clap_complete lists only values known when the script is made; its dynamic
/// completion (`unstable-dynamic`) would, but it is unstable by name and changes how every
/// shell loads the script, where this edits three lines of a script clap_complete writes
/// the same way each time. The tests fail if clap_complete's output changes under it.
fn with_profile_names(shell: Shell, script: &str) -> String {
    let mut out = String::with_capacity(script.len() + 256);
    let mut after_profile = false;
    for line in script.lines() {
        let trimmed = line.trim();
        let line = match shell {
            // `--profile)` then the action, in every subcommand's case.
            Shell::Bash if after_profile && trimmed == "COMPREPLY=($(compgen -f \"${cur}\"))" => {
                line.replace(
                    "compgen -f \"${cur}\"",
                    &format!("compgen -W \"$({PROFILE_NAMES})\" -- \"${{cur}}\""),
                )
            }
            Shell::Zsh if trimmed.starts_with("'--profile=[") => {
                line.replace(":NAME:_default'", ":NAME:_envoi_profiles'")
            }
            Shell::Zsh if trimmed.starts_with("if [ \"$funcstack[1]\" = \"_envoi\" ]") => {
                format!(
                    "(( $+functions[_envoi_profiles] )) ||\n_envoi_profiles() {{\n    \
                     local -a profiles\n    profiles=(${{(f)\"$({PROFILE_NAMES})\"}})\n    \
                     compadd -a profiles\n}}\n\n{line}"
                )
            }
            Shell::Fish if line.contains(" -l profile ") && line.ends_with(" -r") => {
                format!("{line} -f -a \"({PROFILE_NAMES})\"")
            }
            _ => line.to_owned(),
        };
        after_profile = trimmed == "--profile)";
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The options of sendmail mode, which envoi reads by hand (see `sendmail.rs`), so clap
/// cannot list them in `envoi-sendmail(1)`.
const SENDMAIL_OPTIONS: [(&str, &str); 14] = [
    (
        "-t",
        "also send to the To, Cc and Bcc of the message (Bcc is removed)",
    ),
    (
        "-i, -oi",
        "accepted: a lone dot never ends the message, envoi reads to the end",
    ),
    (
        "-f ADDR, -r ADDR",
        "the envelope sender (<> for none); ignored with the profile's allow_from_override = false",
    ),
    (
        "-F NAME",
        "the sender's full name, for a From that envoi writes",
    ),
    (
        "-N NOTIFY",
        "delivery status notifications to ask for (never, or success,failure,delay)",
    ),
    (
        "-R full|hdrs",
        "what the notifications return of the message",
    ),
    ("-V ENVID", "the envelope id the notifications carry"),
    (
        "-o…, -B…",
        "accepted and ignored (a full MTA's delivery modes and body types)",
    ),
    (
        "-bm",
        "accepted (the default mode); every other -b mode is a usage error (64)",
    ),
    (
        "--profile NAME",
        "the profile (else $ENVOI_PROFILE, else the config's default)",
    ),
    ("--config PATH", "the config file (else $ENVOI_CONFIG)"),
    (
        "--queue",
        "write to the outbox first; a temporary failure exits 0 (queued)",
    ),
    (
        "--log WHERE",
        "log the outcome to syslog, journal or a file; none: off (else $ENVOI_LOG, else the \
         profile's log)",
    ),
    (
        "-v",
        "print the SMTP dialogue on stderr (AUTH data redacted)",
    ),
];

/// The command the man pages are made from: [`args::command`], built (so that each
/// subcommand knows its full name), without clap's `help` subcommand, which has no page.
fn pages_command() -> clap::Command {
    let mut command = args::command().disable_help_subcommand(true);
    command.build();
    command
}

/// The subcommands that have a page of their own, in `envoi --help`'s order.
fn subcommands(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command.get_subcommands().filter(|sub| !sub.is_hide_set())
}

/// The man page of `envoi COMMAND` (envoi-COMMAND(1)), or envoi(1) without one.
pub fn page(name: Option<&str>) -> Result<Vec<u8>> {
    let command = pages_command();
    let mut out = Vec::new();
    let written = match name {
        None => top_page(&command, &mut out),
        Some(name) => {
            let Some(sub) = subcommands(&command).find(|sub| sub.get_name() == name) else {
                let names: Vec<&str> = subcommands(&command).map(|s| s.get_name()).collect();
                return Err(Error::usage(format!(
                    "envoi man {name}: no such page; the pages are those of {}",
                    names.join(", ")
                )));
            };
            sub_page(&command, sub, &mut out)
        }
    };
    // Writing into a Vec cannot fail; the error is kept rather than unwrapped.
    written.map_err(|e| Error::new(ErrorKind::Internal, format!("man page: {e}")))?;
    Ok(out)
}

/// Writes envoi.1 and every envoi-COMMAND.1 into `dir` (made if missing), and prints
/// their paths, one a line: what `packaging/deb.sh` installs.
pub fn man_dir(dir: &Path) -> Result<()> {
    let cannot = |what: &Path, e: io::Error| {
        Error::usage(format!(
            "--dir {}: cannot write {}: {e}",
            dir.display(),
            what.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| cannot(dir, e))?;
    let command = pages_command();
    let mut names = vec![None];
    names.extend(subcommands(&command).map(|sub| Some(sub.get_name().to_owned())));
    let mut listed = io::stdout().lock();
    for name in names {
        let file = dir.join(match &name {
            None => "envoi.1".to_owned(),
            Some(name) => format!("envoi-{name}.1"),
        });
        std::fs::write(&file, page(name.as_deref())?).map_err(|e| cannot(&file, e))?;
        let _ = writeln!(listed, "{}", file.display());
    }
    Ok(())
}

/// envoi(1): the commands, exit codes, environment, files and examples.
fn top_page(command: &clap::Command, out: &mut impl Write) -> io::Result<()> {
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    man.render_subcommands_section(out)?;
    let mut roff = Roff::new();
    exit_status(&mut roff);
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
        .text([bold("/etc/envoi/config.toml")])
        .text([roman(
            "the system-wide config file, for users without one of their own; a user who may \
             not read it sends through the system spool /var/spool/envoi (envoi-sendmail(1))",
        )]);
    roff.control("TP", [])
        .text([bold("~/.local/share/envoi/outbox")])
        .text([roman("the outbox of send --queue, and idempotency.json")]);
    roff.control("SH", ["EXAMPLES"]);
    for (what, command) in EXAMPLES {
        roff.control("PP", []).text([roman(what)]);
        roff.control("PP", []).text([bold(command)]);
    }
    let pages: Vec<String> = subcommands(command)
        .map(|sub| format!("envoi-{}(1)", sub.get_name()))
        .collect();
    see_also(&mut roff, &pages);
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// envoi-COMMAND(1): its synopsis, description and every option; for a command with
/// commands of its own (`outbox`, `config`, `auth`), each of those in turn, on the same
/// page, so that `man envoi-outbox` is the whole reference of `envoi outbox`.
fn sub_page(top: &clap::Command, sub: &clap::Command, out: &mut impl Write) -> io::Result<()> {
    let version = top.get_version().unwrap_or_default();
    let man = clap_mangen::Man::new(sub.clone()).source(format!("envoi {version}"));
    man.render_title(out)?;
    man.render_name_section(out)?;
    if sub.get_name() == "sendmail" {
        // clap sees one list of arguments; the real synopsis is the parser's usage line.
        let usage = sendmail::USAGE.trim_start_matches("usage: ");
        let mut roff = Roff::new();
        roff.control("SH", ["SYNOPSIS"]).text([roman(usage)]);
        roff.to_writer(out)?;
    } else {
        man.render_synopsis_section(out)?;
    }
    man.render_description_section(out)?;
    if sub.get_name() == "sendmail" {
        let mut roff = Roff::new();
        roff.control("SH", ["OPTIONS"]);
        for (flag, meaning) in SENDMAIL_OPTIONS {
            roff.control("TP", [])
                .text([bold(flag)])
                .text([roman(meaning)]);
        }
        roff.to_writer(out)?;
    } else if sub.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(out)?;
    }
    let mut roff = Roff::new();
    if sub.has_subcommands() {
        roff.control("SH", ["COMMANDS"]);
    }
    roff.to_writer(out)?;
    for command in subcommands(sub) {
        let man = clap_mangen::Man::new(command.clone());
        let mut section = Vec::new();
        man.render_synopsis_section(&mut section)?;
        man.render_description_section(&mut section)?;
        man.render_options_section(&mut section)?;
        let name = command.get_bin_name().unwrap_or(command.get_name());
        let mut roff = Roff::new();
        roff.control("SS", [name]);
        roff.to_writer(out)?;
        // The sections of the command's own page become paragraphs of this one.
        for line in String::from_utf8_lossy(&section).lines() {
            let line = if line.starts_with(".SH ") {
                ".PP"
            } else {
                line
            };
            writeln!(out, "{line}")?;
        }
    }
    let mut roff = Roff::new();
    if let Some(notes) = sub.get_after_long_help().map(ToString::to_string)
        && !notes.starts_with("Exit codes")
    {
        roff.control("SH", ["NOTES"]);
        let notes = notes.split("\n\nExit codes").next().unwrap_or_default();
        for paragraph in notes.split("\n\n") {
            roff.control("PP", []).text([roman(paragraph)]);
        }
    }
    exit_status(&mut roff);
    see_also(&mut roff, &["envoi(1)".to_owned()]);
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// The EXIT STATUS section, from [`ErrorKind::ALL`].
fn exit_status(roff: &mut Roff) {
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
}

/// The SEE ALSO section: `pages`, comma-separated, in bold as man-pages(7) asks.
fn see_also(roff: &mut Roff, pages: &[String]) {
    roff.control("SH", ["SEE ALSO"]);
    // Not hyphenated: a page name cut at its own hyphen reads as another name.
    roff.control("nh", []);
    let mut line = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        if i > 0 {
            line.push(roman(", "));
        }
        let (name, section) = page.split_once('(').unwrap_or((page, ""));
        line.push(bold(name.to_owned()));
        line.push(roman(format!("({section}")));
    }
    roff.text(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_has_its_sections_and_every_exit_code() {
        let page = String::from_utf8(page(None).unwrap()).unwrap();
        for section in [
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "SUBCOMMANDS",
            "SEE ALSO",
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

    /// envoi-sendmail(1) lists every flag of sendmail mode's usage line.
    #[test]
    fn the_sendmail_page_lists_every_flag_of_its_usage() {
        let usage = sendmail::USAGE;
        let flags = usage
            .split('[')
            .skip(1)
            .filter_map(|part| part.split([' ', ']', '…']).next())
            .filter(|flag| flag.starts_with('-') && *flag != "--");
        let mut seen = 0;
        for flag in flags {
            seen += 1;
            assert!(
                SENDMAIL_OPTIONS
                    .iter()
                    .any(|(listed, _)| listed.split(", ").any(|l| l.starts_with(flag))),
                "{flag}"
            );
        }
        assert!(seen >= 8, "{usage}");
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

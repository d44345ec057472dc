//! The command line: clap types, and their translation into a [`Draft`].
//!
//! House rules: doc comments are the help text; this module does no I/O and opens
//! nothing; it only turns argument strings into typed values. Environment variables
//! are read by [`envoi::profile::resolve`], not by clap, so that precedence has one home.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand};
use envoi::draft::{AttachmentDraft, AttachmentSource, DataEncoding, Draft, Images, Sourced, Text};
use envoi::error::{Error, ErrorKind, Result};
use envoi::message::address;
use envoi::message::input::{MAX_VARS, attachment_paths, is_stdin, read_capped};
use envoi::message::template;
use envoi::profile::{Connection, Flags, PasswordSource, SecretSource, Transport};

/// `send`'s delivery defaults, which sendmail mode uses too.
pub const DEFAULT_RETRIES: u32 = 3;
/// Longest wait between two attempts, in seconds.
pub const DEFAULT_RETRY_MAX_SECS: u64 = 8;
/// Deadline for a whole send, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

/// The exit-code part of `--help`, written from [`ErrorKind::ALL`].
fn exit_codes_help() -> String {
    let mut text = String::from(
        "Exit codes (connector status in brackets):\n  0  sent, saved or dry run [200]",
    );
    for kind in ErrorKind::ALL {
        text.push_str(&format!(
            "\n  {} {} [{}]",
            kind.exit_code(),
            kind.summary(),
            kind.http_status()
        ));
    }
    text
}

/// Flags left out of `-h` (still in `--help` and the man pages): the rarely needed ones,
/// so that `envoi send -h` fits on a screen. Listed here, by clap id, rather than on each
/// flag, so that one place says what the short help keeps.
const LONG_HELP_ONLY: [&str; 25] = [
    "read_receipt",
    "delivery_receipt",
    "allow_empty",
    "vars_file",
    "var_env",
    "image_root",
    "embed_images",
    "no_text_part",
    "text_file",
    "attach_data",
    "attach_name",
    "attach_type",
    "attach_encoding",
    "attach_id",
    "retry_max_secs",
    "allow_partial",
    "outbox_dir",
    "ledger",
    // A fleet's flags (batch): set up once in a script, rarely typed.
    "campaign",
    "resend_unknown",
    "status",
    // Bulk mail's (batch): written once into a newsletter's script.
    "unsubscribe_url",
    "unsubscribe_mailto",
    "list_id",
    "quiet",
];

/// A short help longer than this is cut to its first clause for `-h`.
const SHORT_HELP_MAX: usize = 60;

/// The command line as clap sees it: the derive's definitions with clap's `-h`/`--help`
/// split filled in. `--help` (and the man pages) keep each flag's whole text; `-h` shows
/// each flag's first clause, leaves out [`LONG_HELP_ONLY`], and points to `--help` for
/// the exit codes. Done here, once, rather than by a second paragraph in every doc
/// comment, so that a flag added later is shortened too.
pub fn command() -> clap::Command {
    split_help(Cli::command(), "envoi")
}

/// The command line parsed. The `-h`/`--help` split of [`command`] costs more than a
/// whole send (a third of one, counted with callgrind) and changes nothing but the texts
/// of help, so the derive's definitions parse first, and [`command`] is built only when
/// they fail: help, `--version` and usage errors are then rendered by it.
pub fn parse(args: &[OsString]) -> Result<clap::ArgMatches, clap::Error> {
    Cli::command()
        .try_get_matches_from(args)
        .or_else(|_| command().try_get_matches_from(args))
}

/// [`command`]'s split, on one command (called as `path`) and its subcommands.
fn split_help(command: clap::Command, path: &str) -> clap::Command {
    let mut command = command.mut_args(|arg| {
        let Some(help) = arg.get_help().map(ToString::to_string) else {
            return arg;
        };
        if LONG_HELP_ONLY.contains(&arg.get_id().as_str()) {
            return arg.long_help(help).hide_short_help(true);
        }
        let short = first_clause(&help);
        if short.len() == help.len() {
            return arg;
        }
        let short = short.to_owned();
        arg.long_help(help).help(short)
    });
    if let Some(after) = command.get_after_help().map(ToString::to_string) {
        command = command.after_long_help(after).after_help(format!(
            "Every flag, explained, and the exit codes: {path} --help"
        ));
    }
    command.mut_subcommands(|sub| {
        let path = format!("{path} {}", sub.get_name());
        split_help(sub, &path)
    })
}

/// The start of a long help text up to its first clause's end (" (", "; " or ". "), or
/// the whole text when it is short already.
fn first_clause(help: &str) -> &str {
    if help.len() <= SHORT_HELP_MAX {
        return help;
    }
    [" (", "; ", ". "]
        .iter()
        .filter_map(|end| help.find(end))
        .min()
        .map_or(help, |at| &help[..at])
}

/// Send email from scripts, cron jobs and CI pipelines.
#[derive(Debug, Parser)]
#[command(name = "envoi", version, propagate_version = true, after_help = exit_codes_help())]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// envoi's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one email (the connector's Send Email action).
    #[command(after_help = exit_codes_help())]
    Send(Box<SendArgs>),
    /// Send many messages over reused SMTP sessions: JSON Lines of connector payloads, or
    /// a CSV mail merge; one result line per record; resumable.
    #[command(after_help = batch_help())]
    Batch(Box<BatchArgs>),
    /// Look after the outbox of `send --queue`: list, flush, drop.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// The suppression list every batch skips (suppress = "/path" in the config): hard
    /// bounces, unsubscribes, addresses added by hand.
    #[command(subcommand)]
    Suppress(SuppressCommand),
    /// Read a message on standard input and send it, like sendmail (cron, git send-email,
    /// mail): flags -t, -i, -f ADDR, -F NAME, -o…, -B…, --profile, --config, --queue, -v.
    /// Also what envoi does when run under the name `sendmail`.
    #[command(disable_help_flag = true)]
    Sendmail {
        /// sendmail's flags and the recipients (read by envoi, not by this parser).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Check a connection without sending mail: connect, TLS, EHLO, login, QUIT, and say
    /// what the server offers.
    Check(CheckArgs),
    /// The config file: which one envoi uses and why, or a commented starter.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// OAuth2 tokens envoi fetches itself ([profiles.NAME.oauth2]): sign in once, see what
    /// is cached, forget it. Never prints a token.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// List the profiles of the config file: name, server, user (never a secret).
    Profiles {
        /// Config file (else $ENVOI_CONFIG, else the platform config dir's envoi/config.toml, else
        /// /etc/envoi/config.toml).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print JSON on standard output.
        #[arg(long)]
        json: bool,
        /// Print the names alone, one a line (what the shell completions call); nothing,
        /// and exit 0, without a config file.
        #[arg(long, conflicts_with = "json")]
        names: bool,
    },
    /// Print the shell completion script: envoi completions bash > /etc/bash_completion.d/envoi
    Completions {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
    /// Print a man page: envoi man > envoi.1, envoi man send > envoi-send.1; or write
    /// them all: envoi man --dir /usr/local/share/man/man1
    Man {
        /// The subcommand whose page to print (envoi-COMMAND(1)); without it, envoi(1).
        #[arg(value_name = "COMMAND")]
        command: Option<String>,
        /// Write every page (envoi.1 and one envoi-COMMAND.1 per subcommand) into DIR,
        /// and print their paths.
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        dir: Option<PathBuf>,
    },
}

/// `envoi outbox …`.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List the queued entries (id, age, attempts, recipients, last error).
    List {
        /// List `failed/` instead: refused for good or given up.
        #[arg(long)]
        failed: bool,
        /// The outbox and the output format.
        #[command(flatten)]
        common: OutboxArgs,
    },
    /// Send every due entry once; safe to run from cron every minute, even overlapping.
    Flush {
        /// Also send entries whose next attempt is not due yet.
        #[arg(long)]
        all: bool,
        /// Give up on an entry (move it to failed/) this many days after it was queued.
        #[arg(long, value_name = "DAYS", default_value_t = 5)]
        lifetime_days: u64,
        /// Print the SMTP dialogue on stderr (AUTH data redacted).
        #[arg(short, long)]
        verbose: bool,
        /// Log a line per entry sent to syslog, journal or a file; none turns the
        /// profiles' `log` off (else $ENVOI_LOG, else each entry's profile's `log`).
        #[arg(long, value_name = "WHERE")]
        log: Option<String>,
        /// First move the messages of this system spool (envoi-mta's /var/spool/envoi) into
        /// the outbox, under the profile's sender policy; run as the spool's owner.
        #[arg(long, value_name = "DIR")]
        spool: Option<PathBuf>,
        /// The outbox and the output format.
        #[command(flatten)]
        common: OutboxArgs,
    },
    /// Remove an entry without sending it.
    Drop {
        /// The entry's id, as `envoi outbox list` shows it.
        id: String,
        /// The outbox and the output format.
        #[command(flatten)]
        common: OutboxArgs,
    },
}

/// `envoi suppress …`: the suppression list of the profile (`suppress = "/path"`).
#[derive(Debug, Subcommand)]
pub enum SuppressCommand {
    /// Add an address: no later batch sends to it (a batch adds hard bounces itself).
    Add {
        /// The address (a display name is dropped).
        address: String,
        /// Why, kept beside it.
        #[arg(long, value_name = "TEXT", default_value = "added by hand")]
        reason: String,
        /// The profile whose list is meant.
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Remove an address: later batches send to it again.
    Remove {
        /// The address.
        address: String,
        /// The profile whose list is meant.
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Print the list: address, date added (UTC) and reason, tab-separated.
    List {
        /// Print a JSON array of {address, added, reason} instead.
        #[arg(long)]
        json: bool,
        /// The profile whose list is meant.
        #[command(flatten)]
        connection: ConnectionArgs,
    },
    /// Add every address of FILE (one a line; blank and # lines skipped; - reads standard
    /// input): how unsubscribes are fed in. A bad line adds nothing (65).
    Import {
        /// The file of addresses.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Why, kept beside each new address.
        #[arg(long, value_name = "TEXT", default_value = "unsubscribed")]
        reason: String,
        /// The profile whose list is meant.
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

/// Flags every outbox command takes.
#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// The profile whose `outbox_dir` is meant.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// The outbox directory (else $ENVOI_OUTBOX_DIR, the profile's outbox_dir, or the platform
    /// data dir's envoi/outbox).
    #[arg(long, value_name = "PATH")]
    pub outbox_dir: Option<PathBuf>,
    /// Print JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

impl OutboxArgs {
    /// What the flags say about where things are.
    pub fn flags(&self) -> Flags {
        Flags {
            outbox_dir: self.outbox_dir.clone(),
            ..self.connection.flags()
        }
    }
}

/// `envoi config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Which config file envoi uses, why, and whether it exists.
    Path {
        /// Config file (else $ENVOI_CONFIG, else the platform config dir's envoi/config.toml, else
        /// /etc/envoi/config.toml).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Write a commented starter config file (mode 0600); never overwrites one.
    Init {
        /// Where (else $ENVOI_CONFIG, else the platform config dir's envoi/config.toml).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Every effective setting of the connection `send` would use, and where each came
    /// from (flag, environment, file, default); secrets only by their source. Exit 78
    /// when something would stop a send.
    Show(ShowArgs),
}

/// Flags of `envoi config show`: the connection flags of `send`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The profile and its file.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Show a URL's connection instead of a profile (else $ENVOI_SMTP_URL).
    #[arg(long, value_name = "URL")]
    pub smtp_url: Option<String>,
    /// The outbox directory (else $ENVOI_OUTBOX_DIR, the profile's outbox_dir, or the
    /// platform data dir).
    #[arg(long, value_name = "DIR")]
    pub outbox_dir: Option<PathBuf>,
    /// Print one JSON object on standard output.
    #[arg(long)]
    pub json: bool,
}

impl ShowArgs {
    /// What the flags say about where to connect.
    pub fn flags(&self) -> Flags {
        Flags {
            smtp_url: self.smtp_url.clone(),
            outbox_dir: self.outbox_dir.clone(),
            ..self.connection.flags()
        }
    }
}

/// `envoi auth …`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Sign in once for a profile with oauth2.flow = "refresh_token": the device flow
    /// (prints a URL and a code to enter on any device; Microsoft) or the browser flow
    /// (prints a URL to open on this machine; Google). The refresh token goes to the
    /// token cache, and sends use it from then on.
    Login {
        /// The profile and its file.
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Seconds to wait for the sign-in (the device code may expire sooner).
        #[arg(long, value_name = "SECS", default_value_t = 900,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
    },
    /// Which profiles hold cached tokens, and until when (every OAuth2 profile of the
    /// file, or the one named).
    Status {
        /// The profile and its file.
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Print JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Delete the profile's cached tokens (a later send fetches again, or needs a new
    /// login for the refresh flow).
    Logout {
        /// The profile and its file.
        #[command(flatten)]
        connection: ConnectionArgs,
    },
}

/// Flags of `envoi check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The profile and its file.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Check a connection without a config file (else $ENVOI_SMTP_URL), as for send.
    #[arg(long, value_name = "URL")]
    pub smtp_url: Option<String>,
    /// Try implicit TLS, STARTTLS and plain SMTP on HOST:PORT (without a port: 465, 587 and
    /// 25) and say what each speaks and which profile lines to use; no profile is read.
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with_all = ["smtp_url", "profile", "config"])]
    pub probe: Option<String>,
    /// With --probe: also trust the certificates in this PEM file (a private CA, or the
    /// server's own self-signed certificate), as the profile key ca_file does.
    #[arg(
        long,
        value_name = "PATH",
        requires = "probe",
        conflicts_with = "tls_fingerprint"
    )]
    pub ca_file: Option<PathBuf>,
    /// With --probe: trust exactly the certificate with this SHA-256, as the profile key
    /// tls_fingerprint does.
    #[arg(long, value_name = "SHA256", requires = "probe")]
    pub tls_fingerprint: Option<String>,
    /// Seconds allowed for the whole check (with --probe: for all the ways tried; each at
    /// most 10).
    #[arg(long, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Print one JSON object on standard output.
    #[arg(long)]
    pub json: bool,
}

impl CheckArgs {
    /// What the flags say about where to connect.
    pub fn flags(&self) -> Flags {
        Flags {
            smtp_url: self.smtp_url.clone(),
            ..self.connection.flags()
        }
    }
}

/// The profile and its file, for `send` and every `outbox` command.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Profile from the config file (else $ENVOI_PROFILE, else the file's `default`).
    #[arg(long, value_name = "NAME", help_heading = "Connection")]
    pub profile: Option<String>,
    /// Config file (else $ENVOI_CONFIG, else the platform config dir's envoi/config.toml, else
    /// /etc/envoi/config.toml).
    /// For `outbox flush` it also replaces the file recorded with each queued entry.
    #[arg(long, value_name = "PATH", help_heading = "Connection")]
    pub config: Option<PathBuf>,
}

impl ConnectionArgs {
    /// `--config` and `--profile` as flags for [`envoi::profile::resolve`]; the commands
    /// with more connection flags fill those in on top.
    pub fn flags(&self) -> Flags {
        Flags {
            config: self.config.clone(),
            profile: self.profile.clone(),
            ..Flags::default()
        }
    }
}

/// The most envoi reads of an `--to @FILE`: 1 MiB is tens of thousands of addresses,
/// past what any server takes for one message.
const MAX_ADDRESS_FILE: u64 = 1 << 20;

/// The values of an address flag (`label`), each `@FILE` replaced by that file's
/// addresses ([`address_file`]). An address never begins with `@`, so the prefix is
/// free, as in `--attach-data @FILE`.
fn with_address_files(label: &str, values: &[String]) -> Result<Vec<String>> {
    let mut all = Vec::with_capacity(values.len());
    for value in values {
        match value.strip_prefix('@') {
            Some(path) => all.extend(address_file(label, path)?),
            None => all.push(value.clone()),
        }
    }
    Ok(all)
}

/// `--to @FILE` (mailx's and swaks' habit): one address a line, `# comments` and blank
/// lines skipped. The file is read as every input is (a regular file, at most
/// [`MAX_ADDRESS_FILE`]; 66 when it cannot be read), and each line is checked here so
/// that a bad one is named by its line number (65).
fn address_file(label: &str, path: &str) -> Result<Vec<String>> {
    let shown = format!("{label} @{path}");
    if is_stdin(std::path::Path::new(path)) {
        return Err(Error::usage(format!(
            "{shown}: recipients are read from a file, not standard input; write them to one"
        )));
    }
    let bytes = read_capped(&shown, std::path::Path::new(path), MAX_ADDRESS_FILE)?;
    let text =
        String::from_utf8(bytes).map_err(|_| Error::invalid(format!("{shown}: not UTF-8 text")))?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        address::parse_lists(&format!("{shown} line {}", n + 1), &[line])?;
        lines.push(line.to_owned());
    }
    if lines.is_empty() {
        return Err(Error::new(
            ErrorKind::NoInput,
            format!("{shown}: the file holds no address (its producer probably failed)"),
        ));
    }
    Ok(lines)
}

/// Flags of `envoi send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Recipients; repeatable; a value may hold several, separated by ';' or ','; @FILE
    /// reads one a line.
    #[arg(long, value_name = "LIST", help_heading = "Message")]
    pub to: Vec<String>,
    /// Copy recipients; like --to.
    #[arg(long, value_name = "LIST", help_heading = "Message")]
    pub cc: Vec<String>,
    /// Blind copies: in the envelope only, never in a header; like --to.
    #[arg(long, value_name = "LIST", help_heading = "Message")]
    pub bcc: Vec<String>,
    /// Sender; defaults to the profile's `from`.
    #[arg(long, value_name = "ADDRESS", help_heading = "Message")]
    pub from: Option<String>,
    /// Reply-To addresses; like --to.
    #[arg(long, value_name = "LIST", help_heading = "Message")]
    pub reply_to: Vec<String>,
    /// Ask for a read receipt to ADDRESS (Disposition-Notification-To; the connector's
    /// ReadReceipt). The recipient's mail program decides whether to send one.
    #[arg(long, value_name = "ADDRESS", help_heading = "Message")]
    pub read_receipt: Option<String>,
    /// Ask for a delivery receipt to ADDRESS (Return-Receipt-To, and a DSN request
    /// NOTIFY=SUCCESS,FAILURE RET=HDRS when the server offers DSN; the connector's
    /// DeliveryReceipt).
    #[arg(long, value_name = "ADDRESS", help_heading = "Message")]
    pub delivery_receipt: Option<String>,
    /// Subject line (any Unicode; encoded as RFC 2047).
    #[arg(long, value_name = "TEXT", help_heading = "Message")]
    pub subject: Option<String>,
    /// Body text. Without --body or --body-file, a body piped into standard input is
    /// read (as mail does).
    #[arg(
        long,
        value_name = "TEXT",
        conflicts_with = "body_file",
        help_heading = "Message"
    )]
    pub body: Option<String>,
    /// Read the body from a file ('-' = standard input).
    #[arg(long, value_name = "PATH", help_heading = "Message")]
    pub body_file: Option<PathBuf>,
    /// Send a --body-file (or stdin) that is empty (else 66: its producer probably failed).
    #[arg(long, help_heading = "Message")]
    pub allow_empty: bool,
    /// The body is HTML (the connector's IsHtml). Without --text, a plain-text
    /// alternative is written from it.
    #[arg(long, help_heading = "Message")]
    pub html: bool,
    /// Render the subject, body and text as templates (minijinja: {{ name }}, {% if %},
    /// {% for %}), with --var, --vars-file and --var-env; an undefined variable is 65
    /// and nothing is sent. A template is code: never build one from untrusted text.
    #[arg(long, help_heading = "Message")]
    pub template: bool,
    /// A template variable; repeatable; the value is text.
    #[arg(
        long,
        value_name = "NAME=VALUE",
        requires = "template",
        help_heading = "Message"
    )]
    pub var: Vec<String>,
    /// Template variables from a JSON or TOML (.toml) file; --var overrides them.
    #[arg(
        long,
        value_name = "PATH",
        requires = "template",
        help_heading = "Message"
    )]
    pub vars_file: Option<PathBuf>,
    /// Give the template the environment variable NAME as env.NAME; repeatable. No other
    /// variable of the environment is visible, and those envoi reads a secret from
    /// (ENVOI_PASSWORD, ENVOI_TOKEN, the profile's password_env…) are refused.
    #[arg(
        long,
        value_name = "NAME",
        requires = "template",
        help_heading = "Message"
    )]
    pub var_env: Vec<String>,
    /// The body is Markdown (CommonMark with tables): sent as HTML, with the Markdown
    /// as its plain-text alternative; local images in it are embedded.
    #[arg(long, help_heading = "Message", conflicts_with = "html")]
    pub markdown: bool,
    /// Also allow local images (<img src>, ![x](…)) from under DIR, besides the body
    /// file's own folder (or the current one); repeatable. See "What envoi reads".
    #[arg(long, value_name = "DIR", help_heading = "Message")]
    pub image_root: Vec<PathBuf>,
    /// Embed the local images of an --input payload's HTML body (else left as they are),
    /// from under the payload's folder or an --image-root.
    #[arg(long, help_heading = "Message")]
    pub embed_images: bool,
    /// Send an HTML body alone, without the plain-text alternative written from it.
    #[arg(long, help_heading = "Message", conflicts_with_all = ["text", "text_file"])]
    pub no_text_part: bool,
    /// Plain-text alternative of an HTML body (multipart/alternative).
    #[arg(
        long,
        value_name = "TEXT",
        conflicts_with = "text_file",
        help_heading = "Message"
    )]
    pub text: Option<String>,
    /// Read the plain-text alternative from a file ('-' = standard input).
    #[arg(long, value_name = "PATH", help_heading = "Message")]
    pub text_file: Option<PathBuf>,
    /// high, normal or low (any case).
    #[arg(long, value_name = "LEVEL", help_heading = "Message")]
    pub importance: Option<String>,
    /// Extra header "Name: value"; repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE", help_heading = "Message")]
    pub headers: Vec<String>,
    /// Read the message from a connector JSON payload ('-' = standard input); flags override it.
    #[arg(long, value_name = "PATH", help_heading = "Message")]
    pub input: Option<PathBuf>,

    /// Attach a file; repeatable. Append ';type=MIME' to set its content type.
    #[arg(long, value_name = "PATH", help_heading = "Attachments")]
    pub attach: Vec<String>,
    /// Attach base64 data (ContentData); '@FILE' reads the text from a file.
    #[arg(long, value_name = "BASE64|@FILE", help_heading = "Attachments")]
    pub attach_data: Vec<String>,
    /// FileName of the attachment given just before.
    #[arg(long, value_name = "NAME", help_heading = "Attachments")]
    pub attach_name: Vec<String>,
    /// ContentType of the attachment given just before.
    #[arg(long, value_name = "MIME", help_heading = "Attachments")]
    pub attach_type: Vec<String>,
    /// ContentTransferEncoding of the --attach-data just before: base64 or none.
    #[arg(long, value_name = "ENCODING", help_heading = "Attachments")]
    pub attach_encoding: Vec<String>,
    /// ContentId of the attachment given just before: makes it inline, for cid: in HTML.
    #[arg(long, value_name = "ID", help_heading = "Attachments")]
    pub attach_id: Vec<String>,

    /// Where to send.
    #[command(flatten)]
    pub route: RouteArgs,
    /// Retries, deadline and partial delivery.
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// Write the message to the outbox first; on a temporary failure exit 0 (queued) and let
    /// `envoi outbox flush` retry it. Also on with the profile key `outbox = true`.
    #[arg(long, help_heading = "Delivery")]
    pub queue: bool,
    /// The outbox directory (else $ENVOI_OUTBOX_DIR, the profile's outbox_dir, or the platform
    /// data dir's envoi/outbox). The idempotency ledger lives there too.
    #[arg(long, value_name = "PATH", help_heading = "Delivery")]
    pub outbox_dir: Option<PathBuf>,
    /// Send at most once per KEY within 7 days (else $ENVOI_IDEMPOTENCY_KEY); a repeat exits 0
    /// with status duplicate.
    #[arg(long, value_name = "KEY", help_heading = "Delivery")]
    pub idempotency_key: Option<String>,
    /// Keep idempotency keys in this PostgreSQL database, shared by every machine, instead
    /// of the outbox folder (else $ENVOI_LEDGER, the profile's ledger); the password comes
    /// from $PGPASSWORD.
    #[arg(
        long,
        value_name = "postgres://USER@HOST/DB",
        help_heading = "Delivery"
    )]
    pub ledger: Option<String>,

    /// `-v` and `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Print the message that would be sent and exit without connecting.
    #[arg(long, help_heading = "Output")]
    pub dry_run: bool,
    /// Check the message for what may junk or bounce it (From's domain vs the login's,
    /// no subject, HTML without text, over 20 MB of attachments, over 100 recipients),
    /// print the findings, and exit 0 without sending.
    #[arg(long, help_heading = "Output", conflicts_with = "dry_run")]
    pub lint: bool,
    /// No warnings on standard error (the lint findings a send prints otherwise).
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,
    /// Log a line of the outcome to syslog, journal or a file; none turns the profile's
    /// `log` off (else $ENVOI_LOG, else the profile's `log`).
    #[arg(long, value_name = "WHERE", help_heading = "Output")]
    pub log: Option<String>,
}

/// Where to send, for `send` and `batch`: the profile and its file, or a URL.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// The profile and its file.
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Connect without a config file (else $ENVOI_SMTP_URL): smtps://user@host:465,
    /// smtp://user@host:587 (STARTTLS), smtp://host:25?security=none; the password comes from
    /// $ENVOI_PASSWORD. graph://MAILBOX or gmail://ADDRESS sends over HTTPS with the token in
    /// $ENVOI_TOKEN.
    #[arg(long, value_name = "URL", help_heading = "Connection")]
    pub smtp_url: Option<String>,
}

impl RouteArgs {
    /// `--config`, `--profile` and `--smtp-url` as flags for [`envoi::profile::resolve`].
    pub fn flags(&self) -> Flags {
        Flags {
            smtp_url: self.smtp_url.clone(),
            ..self.connection.flags()
        }
    }
}

/// Retries, the deadline and partial delivery, for `send` and `batch` (whose help says
/// "per record" where it differs).
#[derive(Debug, Args)]
pub struct DeliveryArgs {
    /// Further attempts after a temporary failure (4xx, connection refused, timeout).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RETRIES, help_heading = "Delivery")]
    pub retries: u32,
    /// Longest wait between two attempts, in seconds (waits grow 1, 2, 4… with jitter).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_RETRY_MAX_SECS,
        help_heading = "Delivery"
    )]
    pub retry_max_secs: u64,
    /// Deadline for the whole send, retries included, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..), help_heading = "Delivery")]
    pub timeout: u64,
    /// Send to the accepted recipients even if others are refused (refused ones reported).
    #[arg(long, help_heading = "Delivery")]
    pub allow_partial: bool,
}

/// `-v` and `--json`, for `send` and `batch`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print the SMTP dialogue on stderr (AUTH data redacted).
    #[arg(short, long, help_heading = "Output")]
    pub verbose: bool,
    /// Print one JSON object with the result on standard output.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

/// The record formats of `envoi batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchFormat {
    /// One connector JSON payload a line (.jsonl, .ndjson).
    Jsonl,
    /// A header row, then one message a row, filled into --subject and --body (.csv).
    Csv,
}

/// The end of `envoi batch --help`: the report and the exit code.
fn batch_help() -> String {
    format!(
        "Each record gives one line of JSON to --report (appended, flushed per record) or to \
         standard output (--json): line, status (sent, saved, partial, refused, invalid, \
         deferred, queued, unknown, failed), message_id, recipients with the server's replies, \
         exit_code, error.\n\n\
         Exit code: 0 when every record was sent (or skipped by --resume); 77 or 78 when a \
         login, certificate or configuration failure stopped the batch; else 75 when any is \
         deferred or of unknown outcome; else the most serious of 69, 67, 65, 64 seen.\n\n{}",
        exit_codes_help()
    )
}

/// Flags of `envoi batch`. The flags it shares with `send` are declared once; their
/// help is said per record here.
#[derive(Debug, Args)]
#[command(
    mut_arg("smtp_url", |a| a.help("Connect without a config file (else $ENVOI_SMTP_URL), as for send")),
    mut_arg("retries", |a| a.help("Further attempts of a record after a temporary failure")),
    mut_arg("retry_max_secs", |a| a.help("Longest wait between two attempts, in seconds")),
    mut_arg("timeout", |a| a.help("Deadline for each record, retries included, in seconds")),
    mut_arg("allow_partial", |a| {
        a.help("Send to a record's accepted recipients even if others are refused (status partial)")
    }),
    mut_arg("json", |a| a.help("Print the result lines on standard output")),
)]
pub struct BatchArgs {
    /// The records: a .jsonl/.ndjson or .csv file, or '-' for standard input (then give
    /// --format). Optional with --status.
    #[arg(value_name = "FILE", required_unless_present = "status")]
    pub file: Option<PathBuf>,
    /// The records' format, when the file name does not tell it.
    #[arg(long, value_name = "FORMAT", help_heading = "Records")]
    pub format: Option<BatchFormat>,
    /// CSV: the subject, a template over the columns: 'Invoice {{ number }}'.
    #[arg(long, value_name = "TEMPLATE", help_heading = "Records")]
    pub subject: Option<String>,
    /// CSV: the body, a template over the columns: 'Dear {{ name }},'.
    #[arg(
        long,
        value_name = "TEMPLATE",
        conflicts_with = "body_file",
        help_heading = "Records"
    )]
    pub body: Option<String>,
    /// CSV: read the body template from a file.
    #[arg(long, value_name = "PATH", help_heading = "Records")]
    pub body_file: Option<PathBuf>,
    /// CSV: the body is HTML (column values in it are HTML-escaped).
    #[arg(long, help_heading = "Records")]
    pub html: bool,
    /// CSV: attach a file to each row; repeatable. The path is a template
    /// ('invoices/{{ number }}.pdf'); append ';type=MIME' to set its content type.
    #[arg(long, value_name = "TEMPLATE", help_heading = "Records")]
    pub attach: Vec<String>,
    /// Embed the local images (<img src>) of the records' HTML bodies, from under the
    /// input's folder (CSV: the --body-file's) or an --image-root; else they are left as
    /// they are. See "What envoi reads".
    #[arg(long, help_heading = "Records")]
    pub embed_images: bool,
    /// With --embed-images: also allow images from under DIR; repeatable.
    #[arg(
        long,
        value_name = "DIR",
        requires = "embed_images",
        help_heading = "Records"
    )]
    pub image_root: Vec<PathBuf>,
    /// CSV: the column that holds each row's recipients.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "to",
        help_heading = "Records"
    )]
    pub to_column: String,
    /// Sender of records that name none; defaults to the profile's `from`.
    #[arg(long, value_name = "ADDRESS", help_heading = "Records")]
    pub from: Option<String>,
    /// One-click unsubscribe (RFC 8058) for each record: an https URL, a template over the
    /// record ('https://example.com/u?id={{ token }}'); writes List-Unsubscribe and
    /// List-Unsubscribe-Post, DKIM-signed. A record whose URL is not plain https is invalid.
    #[arg(long, value_name = "TEMPLATE", help_heading = "Bulk")]
    pub unsubscribe_url: Option<String>,
    /// Also a mailto: link in List-Unsubscribe: an address or a mailto: URI, a template
    /// over the record ('unsubscribe+{{ token }}@example.com').
    #[arg(long, value_name = "TEMPLATE", help_heading = "Bulk")]
    pub unsubscribe_mailto: Option<String>,
    /// The List-Id header (RFC 2919): 'Newsletter <news.example.com>'.
    #[arg(long, value_name = "'NAME <ID>'", help_heading = "Bulk")]
    pub list_id: Option<String>,

    /// Where to send.
    #[command(flatten)]
    pub route: RouteArgs,

    /// SMTP sessions sending in parallel, each with its own connection. `--rate` holds
    /// across all of them; with more than one, result lines come in the order records
    /// finish, not the file's order (each names its line).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64), help_heading = "Delivery")]
    pub concurrency: u32,
    /// Most messages over one SMTP session before it is closed and a new one opened.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Delivery")]
    pub per_session: u32,
    /// Stop the batch (75) after N records in a row could not reach the server (no
    /// connection, no greeting, a failed TLS handshake); 0 never stops. While the server
    /// is found down, each record gets one try, without retries.
    #[arg(long, value_name = "N", default_value_t = 3, help_heading = "Delivery")]
    pub max_connect_failures: u32,
    /// Build and check every record (templates, addresses, attachments, DKIM) and list
    /// what would go, without connecting or sending anything.
    #[arg(long, help_heading = "Delivery")]
    pub dry_run: bool,
    /// Retries, deadline and partial delivery, per record.
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    /// At most N messages a second, minute or hour (N/s, N/m, N/h), evenly spaced: a
    /// message starts no sooner than 1/rate after the one before. Or a provider's limit:
    /// m365 (30/m, Microsoft 365's SMTP submission limit per mailbox), gmail (20/m, well
    /// inside Gmail's daily caps), ses-sandbox (1/s, Amazon SES before production access).
    /// m365 also allows at most --concurrency 3 (3 connections per mailbox).
    #[arg(long, value_name = "N/s|N/m|N/h|PRESET", value_parser = parse_rate,
          help_heading = "Delivery")]
    pub rate: Option<Rate>,
    /// Split the batch across workers: every run with the same NAME and --ledger (on any
    /// machine, over the same input) sends each record once. Records are known by their
    /// content; see docs/batch.md.
    #[arg(long, value_name = "NAME", help_heading = "Workers")]
    pub campaign: Option<String>,
    /// The PostgreSQL database the workers of a --campaign share (else $ENVOI_LEDGER, the
    /// profile's ledger); the password comes from $PGPASSWORD.
    #[arg(long, value_name = "postgres://USER@HOST/DB", help_heading = "Workers")]
    pub ledger: Option<String>,
    /// Send again the campaign's records of unknown outcome (a worker died while sending
    /// them, or the connection broke after the message went): they may have been
    /// delivered already.
    #[arg(long, requires = "campaign", help_heading = "Workers")]
    pub resend_unknown: bool,
    /// Print the campaign's counts (sent, failed, unknown, in flight; pending when FILE is
    /// given) and exit, sending nothing.
    #[arg(long, requires = "campaign", help_heading = "Workers")]
    pub status: bool,
    /// Skip the records an earlier report lists as sent, saved, partial, unknown (anything
    /// that may have reached someone) or queued, and those its run was killed while sending
    /// (listed now as unknown), so a re-run sends nothing twice.
    #[arg(long, value_name = "REPORT", help_heading = "Delivery")]
    pub resume: Option<PathBuf>,

    /// Append one JSON line per record to this file, flushed as each record ends;
    /// FILE.inflight names the last record each session started to send.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub report: Option<PathBuf>,
    /// Log a line per record sent to syslog, journal or a file; none turns the profile's
    /// `log` off (else $ENVOI_LOG, else the profile's `log`).
    #[arg(long, value_name = "WHERE", help_heading = "Output")]
    pub log: Option<String>,
    /// `-v` and `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `--rate`: how far apart messages start, across all sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// The least time between the starts of two messages.
    pub interval: Duration,
    /// A preset's provider and the most connections it allows at once, where published.
    pub most_sessions: Option<(&'static str, u32)>,
}

/// A provider's limits that `--rate` knows by name.
struct Preset {
    name: &'static str,
    rate: &'static str,
    /// The provider and its published limit on parallel connections.
    most_sessions: Option<(&'static str, u32)>,
}

/// The providers' limits `--rate` knows by name. Microsoft publishes 30 messages a minute
/// and 3 concurrent connections per mailbox for SMTP AUTH submission.
const RATE_PRESETS: [Preset; 3] = [
    Preset {
        name: "m365",
        rate: "30/m",
        most_sessions: Some(("Microsoft 365", 3)),
    },
    Preset {
        name: "gmail",
        rate: "20/m",
        most_sessions: None,
    },
    Preset {
        name: "ses-sandbox",
        rate: "1/s",
        most_sessions: None,
    },
];

/// `--rate N/s|N/m|N/h|PRESET` → the least time between two messages.
fn parse_rate(value: &str) -> std::result::Result<Rate, String> {
    if let Some(preset) = RATE_PRESETS.iter().find(|p| p.name == value) {
        let rate = parse_rate(preset.rate)?;
        return Ok(Rate {
            most_sessions: preset.most_sessions,
            ..rate
        });
    }
    let wrong = || {
        format!(
            "{value:?} is not a rate: give N/s, N/m or N/h with N from 1 (e.g. 30/m), or one \
             of m365, gmail, ses-sandbox"
        )
    };
    let (count, unit) = value.split_once('/').ok_or_else(wrong)?;
    let count: u32 = count.trim().parse().map_err(|_| wrong())?;
    let unit = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(wrong()),
    };
    if count == 0 {
        return Err(wrong());
    }
    Ok(Rate {
        interval: unit / count,
        most_sessions: None,
    })
}

impl BatchArgs {
    /// What the flags say about where to send.
    pub fn flags(&self) -> Flags {
        Flags {
            log: self.log.clone(),
            ledger: self.ledger.clone(),
            ..self.route.flags()
        }
    }

    /// The records' file (`-`: standard input). Only `--status` goes without one (clap
    /// requires FILE otherwise), and it reads none unless given.
    pub fn input(&self) -> &Path {
        self.file.as_deref().unwrap_or(Path::new("-"))
    }
}

/// The attachment flags. Their order on the command line matters: each modifier
/// describes the `--attach` or `--attach-data` given just before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AttachFlag {
    Attach,
    Data,
    Modifier(Modifier),
}

/// The flags that describe an attachment rather than add one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Modifier {
    Name,
    Type,
    Encoding,
    Id,
}

impl AttachFlag {
    const ALL: [AttachFlag; 6] = [
        AttachFlag::Attach,
        AttachFlag::Data,
        AttachFlag::Modifier(Modifier::Name),
        AttachFlag::Modifier(Modifier::Type),
        AttachFlag::Modifier(Modifier::Encoding),
        AttachFlag::Modifier(Modifier::Id),
    ];

    /// clap's id of the flag (its field name in [`SendArgs`]).
    fn id(self) -> &'static str {
        match self {
            AttachFlag::Attach => "attach",
            AttachFlag::Data => "attach_data",
            AttachFlag::Modifier(Modifier::Name) => "attach_name",
            AttachFlag::Modifier(Modifier::Type) => "attach_type",
            AttachFlag::Modifier(Modifier::Encoding) => "attach_encoding",
            AttachFlag::Modifier(Modifier::Id) => "attach_id",
        }
    }
}

impl Modifier {
    /// The flag as the user types it.
    fn flag(self) -> &'static str {
        match self {
            Modifier::Name => "--attach-name",
            Modifier::Type => "--attach-type",
            Modifier::Encoding => "--attach-encoding",
            Modifier::Id => "--attach-id",
        }
    }
}

/// One attachment flag on the command line: where it stood, which, and which of its
/// values it gave.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Occurrence {
    position: usize,
    flag: AttachFlag,
    nth: usize,
}

impl SendArgs {
    /// What the flags say about where to send.
    pub fn flags(&self) -> Flags {
        Flags {
            outbox_dir: self.outbox_dir.clone(),
            idempotency_key: self.idempotency_key.clone(),
            ledger: self.ledger.clone(),
            log: self.log.clone(),
            ..self.route.flags()
        }
    }

    /// The message as given by flags. `matches` are the `send` subcommand's matches;
    /// their positions tie each --attach-name/-type/-encoding/-id to the attachment
    /// flag before it. `secrets` are the environment variables `--var-env` may not name
    /// (see [`secret_vars`]).
    pub fn draft(&self, matches: &ArgMatches, secrets: &[String]) -> Result<Draft> {
        let list = |label: &str, values: &[String]| {
            (!values.is_empty()).then(|| Sourced::new(label, values.to_vec()))
        };
        let addresses = |label: &str, values: &[String]| -> Result<_> {
            Ok(list(label, &with_address_files(label, values)?))
        };
        let text =
            |label: &str, inline: &Option<String>, file: &Option<PathBuf>| match (inline, file) {
                (Some(t), _) => Some(Sourced::new(label, Text::Inline(t.clone()))),
                (None, Some(p)) => {
                    Some(Sourced::new(format!("{label}-file"), Text::File(p.clone())))
                }
                (None, None) => None,
            };
        let has_attachments = [
            &self.attach,
            &self.attach_data,
            &self.attach_name,
            &self.attach_type,
            &self.attach_encoding,
            &self.attach_id,
        ]
        .iter()
        .any(|values| !values.is_empty());
        Ok(Draft {
            from: self.from.clone().map(|v| Sourced::new("--from", v)),
            to: addresses("--to", &self.to)?,
            cc: addresses("--cc", &self.cc)?,
            bcc: addresses("--bcc", &self.bcc)?,
            reply_to: addresses("--reply-to", &self.reply_to)?,
            subject: self.subject.clone().map(|v| Sourced::new("--subject", v)),
            body: text("--body", &self.body, &self.body_file),
            is_html: self.html.then_some(true),
            text: text("--text", &self.text, &self.text_file),
            importance: self
                .importance
                .clone()
                .map(|v| Sourced::new("--importance", v)),
            attachments: has_attachments
                .then(|| self.attachments(matches))
                .transpose()?,
            headers: list("--header", &self.headers),
            read_receipt: self
                .read_receipt
                .clone()
                .map(|v| Sourced::new("--read-receipt", v)),
            delivery_receipt: self
                .delivery_receipt
                .clone()
                .map(|v| Sourced::new("--delivery-receipt", v)),
            allow_empty_body: self.allow_empty,
            no_text_part: self.no_text_part,
            markdown: self.markdown,
            template: self
                .template
                .then(|| self.template_vars(secrets))
                .transpose()?,
            images: Images {
                embed_data: self.embed_images,
                roots: self.image_root.clone(),
            },
            body_data: None,
            // `--input -` reads standard input itself.
            body_from_stdin: self.body.is_none()
                && self.body_file.is_none()
                && !self.input.as_deref().is_some_and(is_stdin),
        })
    }

    /// The variables of `--template`: `--vars-file`, then each `--var`, and as `env`
    /// the environment variables `--var-env` names, and no other: the environment holds
    /// the SMTP password and whatever secrets CI puts there. A name in `secrets` (a
    /// variable envoi reads a secret from) is refused (64).
    fn template_vars(&self, secrets: &[String]) -> Result<template::Vars> {
        let mut vars = match &self.vars_file {
            Some(path) => {
                let label = format!("--vars-file {:?}", path.display().to_string());
                let bytes = read_capped("--vars-file", path, MAX_VARS)?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| Error::invalid(format!("{label}: not UTF-8 text")))?;
                template::parse_vars_file(&label, &path.to_string_lossy(), &text)?
            }
            None => template::Vars::new(),
        };
        for var in &self.var {
            let (name, value) = template::parse_var(var)?;
            vars.insert(name, value);
        }
        if self.var_env.is_empty() {
            return Ok(vars);
        }
        let mut env = match vars.remove("env") {
            Some(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        for name in &self.var_env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(Error::usage(format!(
                    "--var-env {name:?}: not the name of an environment variable"
                )));
            }
            if secrets.contains(name) {
                return Err(Error::usage(format!(
                    "--var-env {name}: envoi reads a secret from {name}, so no template may \
                     see it; pass what the template needs with --var NAME=VALUE"
                )));
            }
            // An unset variable stays undefined: `{{ env.NAME }}` then fails, named,
            // unless the template gives a default.
            match std::env::var(name) {
                Ok(value) => {
                    env.insert(name.clone(), value.into());
                }
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Error::invalid(format!(
                        "--var-env {name}: its value is not UTF-8 text"
                    )));
                }
            }
        }
        vars.insert("env".to_owned(), serde_json::Value::Object(env));
        Ok(vars)
    }

    fn attachments(&self, matches: &ArgMatches) -> Result<Vec<AttachmentDraft>> {
        let mut occurrences: Vec<Occurrence> = Vec::new();
        for flag in AttachFlag::ALL {
            if let Some(indices) = matches.indices_of(flag.id()) {
                occurrences.extend(indices.enumerate().map(|(nth, position)| Occurrence {
                    position,
                    flag,
                    nth,
                }));
            }
        }
        occurrences.sort_unstable();

        let mut drafts: Vec<AttachmentDraft> = Vec::new();
        // How many attachments the last --attach made (a pattern may match several): a
        // modifier describes one attachment, so it cannot follow a pattern that matched
        // more.
        let mut last_matched = 1;
        for Occurrence { flag, nth, .. } in occurrences {
            let value = match flag {
                AttachFlag::Attach => &self.attach[nth],
                AttachFlag::Data => &self.attach_data[nth],
                AttachFlag::Modifier(Modifier::Name) => &self.attach_name[nth],
                AttachFlag::Modifier(Modifier::Type) => &self.attach_type[nth],
                AttachFlag::Modifier(Modifier::Encoding) => &self.attach_encoding[nth],
                AttachFlag::Modifier(Modifier::Id) => &self.attach_id[nth],
            };
            match flag {
                AttachFlag::Attach => {
                    let (pattern, content_type) = split_type(value);
                    let label = format!("--attach {pattern:?}");
                    let paths = attachment_paths(&label, pattern)?;
                    last_matched = paths.len();
                    for path in paths {
                        drafts.push(AttachmentDraft {
                            label: format!("--attach {:?}", path.display().to_string()),
                            source: AttachmentSource::Path(path),
                            file_name: None,
                            content_type: content_type.clone(),
                            content_id: None,
                        });
                    }
                }
                AttachFlag::Data => {
                    let text = match value.strip_prefix('@') {
                        Some(path) => Text::File(PathBuf::from(path)),
                        None => Text::Inline(value.clone()),
                    };
                    last_matched = 1;
                    drafts.push(AttachmentDraft {
                        label: format!("--attach-data #{}", nth + 1),
                        source: AttachmentSource::Data(text, DataEncoding::Base64),
                        file_name: None,
                        content_type: None,
                        content_id: None,
                    });
                }
                AttachFlag::Modifier(modifier) => {
                    if last_matched > 1 {
                        return Err(Error::usage(format!(
                            "{} describes one attachment, but the --attach before it is a \
                             pattern that matched {last_matched} files; attach that one file \
                             by its name",
                            modifier.flag()
                        )));
                    }
                    let Some(draft) = drafts.last_mut() else {
                        return Err(Error::usage(format!(
                            "{} must come after the --attach or --attach-data it describes",
                            modifier.flag()
                        )));
                    };
                    set_modifier(draft, modifier, value)?;
                }
            }
        }
        Ok(drafts)
    }
}

/// The environment variables envoi reads a secret from, which no template may see
/// (`--var-env`): `ENVOI_PASSWORD`, `ENVOI_TOKEN` and `PGPASSWORD` (the ledger's) always,
/// and, of every profile the connection may send through, the variables its keys name:
/// `password_env`, `token_env`, `client_secret_env`, `refresh_token_env`,
/// `proxy_password_env` and `ledger_password_env`.
pub fn secret_vars(connection: Option<&Connection>) -> Vec<String> {
    let mut names: Vec<String> = ["ENVOI_PASSWORD", "ENVOI_TOKEN", "PGPASSWORD"]
        .map(str::to_owned)
        .into();
    // Every profile of a route: any of them may send.
    for (_, profile) in connection.into_iter().flat_map(|c| c.profiles()) {
        let (login, proxy) = match &profile.transport {
            Transport::Smtp(smtp) => (
                smtp.login.as_ref().ok().and_then(Option::as_ref),
                smtp.proxy.as_ref(),
            ),
            Transport::Api(api) => (
                api.login.as_ref().ok().and_then(Option::as_ref),
                api.proxy.as_ref(),
            ),
            Transport::File { .. } => (None, None),
        };
        let mut sources: Vec<&PasswordSource> = match login {
            Some((_, SecretSource::Given(source))) => vec![source],
            Some((_, SecretSource::OAuth2(oauth2))) => oauth2
                .client_secret
                .iter()
                .chain(&oauth2.refresh_token)
                .collect(),
            None => Vec::new(),
        };
        sources.extend(proxy.and_then(|(proxy, _)| proxy.login.as_ref().map(|(_, s)| s)));
        sources.extend(profile.ledger.as_ref().and_then(|l| l.password.as_ref()));
        names.extend(sources.into_iter().filter_map(|source| match source {
            PasswordSource::Env(name) => Some(name.clone()),
            PasswordSource::Command(_) | PasswordSource::Inline(_) => None,
        }));
    }
    names
}

fn set_modifier(draft: &mut AttachmentDraft, modifier: Modifier, value: &str) -> Result<()> {
    let slot = match modifier {
        Modifier::Name => &mut draft.file_name,
        Modifier::Type => &mut draft.content_type,
        Modifier::Id => &mut draft.content_id,
        Modifier::Encoding => {
            // Only the connector's data form has an encoding.
            let AttachmentSource::Data(_, encoding) = &mut draft.source else {
                return Err(Error::usage(format!(
                    "--attach-encoding applies to --attach-data, not to {}",
                    draft.label
                )));
            };
            *encoding = DataEncoding::parse(modifier.flag(), value)?;
            return Ok(());
        }
    };
    if slot.is_some() {
        return Err(Error::usage(format!(
            "{} is given twice for {}; give each attachment its own",
            modifier.flag(),
            draft.label
        )));
    }
    *slot = Some(value.to_owned());
    Ok(())
}

/// `report.bin;type=application/x-thing` → (`report.bin`, Some(type)).
fn split_type(value: &str) -> (&str, Option<String>) {
    match value.rsplit_once(";type=") {
        Some((path, mime)) => (path, Some(mime.to_owned())),
        None => (value, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn draft(args: &[&str]) -> Result<Draft> {
        let mut argv = vec!["envoi", "send", "--to", "a@example.com"];
        argv.extend_from_slice(args);
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let Command::Send(send) = cli.command else {
            panic!("not a send command");
        };
        send.draft(matches.subcommand_matches("send").unwrap(), &[])
    }

    #[test]
    fn short_help_is_the_first_clause_of_a_long_text() {
        assert_eq!(
            first_clause("Copy recipients; like --to"),
            "Copy recipients; like --to"
        );
        let long = "Ask for a read receipt to ADDRESS (Disposition-Notification-To; the \
                    connector's ReadReceipt). The recipient's program decides";
        assert_eq!(first_clause(long), "Ask for a read receipt to ADDRESS");
        let one = "A long help text without any clause end that goes on and on past the limit";
        assert_eq!(first_clause(one), one);
    }

    /// Every name in LONG_HELP_ONLY is a flag of some command (a renamed flag would
    /// otherwise come back into `-h` unnoticed).
    #[test]
    fn long_help_only_names_real_flags() {
        fn ids(command: &clap::Command, into: &mut Vec<String>) {
            into.extend(command.get_arguments().map(|a| a.get_id().to_string()));
            for sub in command.get_subcommands() {
                ids(sub, into);
            }
        }
        let mut all = Vec::new();
        ids(&command(), &mut all);
        for id in LONG_HELP_ONLY {
            assert!(all.iter().any(|a| a == id), "{id}");
        }
    }

    #[test]
    fn rates_are_intervals() {
        let interval = |value| parse_rate(value).map(|rate| rate.interval);
        assert_eq!(interval("30/m"), Ok(Duration::from_secs(2)));
        assert_eq!(interval("4/s"), Ok(Duration::from_millis(250)));
        assert_eq!(interval("3600/h"), Ok(Duration::from_secs(1)));
        assert_eq!(interval("m365"), Ok(Duration::from_secs(2)));
        assert_eq!(interval("gmail"), Ok(Duration::from_secs(3)));
        assert_eq!(interval("ses-sandbox"), Ok(Duration::from_secs(1)));
        assert_eq!(
            parse_rate("m365").map(|rate| rate.most_sessions),
            Ok(Some(("Microsoft 365", 3)))
        );
        assert_eq!(parse_rate("30/m").map(|rate| rate.most_sessions), Ok(None));
        for bad in ["0/s", "30", "30/d", "x/s", "-1/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn modifiers_attach_to_the_preceding_attachment() {
        let d = draft(&[
            "--attach",
            "build.log",
            "--attach-data",
            "aGk=",
            "--attach-name",
            "logo.png",
            "--attach-id",
            "logo",
            "--attach",
            "x.bin;type=application/x-thing",
            "--attach-name",
            "renamed.bin",
            "--attach-data",
            "plain",
            "--attach-encoding",
            "NONE",
        ])
        .unwrap();
        let a = d.attachments.unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].source, AttachmentSource::Path("build.log".into()));
        assert_eq!(a[0].file_name, None);
        assert_eq!(a[1].file_name.as_deref(), Some("logo.png"));
        assert_eq!(a[1].content_id.as_deref(), Some("logo"));
        assert_eq!(a[2].content_type.as_deref(), Some("application/x-thing"));
        assert_eq!(a[2].file_name.as_deref(), Some("renamed.bin"));
        assert_eq!(
            a[3].source,
            AttachmentSource::Data(Text::Inline("plain".into()), DataEncoding::None)
        );
        assert_eq!(
            a[1].source,
            AttachmentSource::Data(Text::Inline("aGk=".into()), DataEncoding::Base64)
        );
    }

    #[test]
    fn misplaced_modifiers_are_usage_errors() {
        assert!(draft(&["--attach-name", "x"]).is_err());
        assert!(draft(&["--attach", "a", "--attach-name", "x", "--attach-name", "y"]).is_err());
        assert!(draft(&["--attach", "a", "--attach-encoding", "none"]).is_err());
    }

    #[test]
    fn data_from_a_file_and_body_from_stdin() {
        let d = draft(&["--attach-data", "@logo.b64", "--body-file", "-"]).unwrap();
        assert_eq!(
            d.attachments.unwrap()[0].source,
            AttachmentSource::Data(Text::File("logo.b64".into()), DataEncoding::Base64)
        );
        assert_eq!(d.body.unwrap().value, Text::File("-".into()));
    }

    /// The batch exit rule as `batch --help` and the README tell it is the rule
    /// [`envoi::outbox::ExitRule`] applies.
    #[test]
    fn the_batch_exit_rule_as_told_is_the_rule() {
        let kind = |code: u8| ErrorKind::ALL.into_iter().find(|k| k.exit_code() == code);
        let rule = |codes: &[u8]| {
            let mut rule = envoi::outbox::ExitRule::default();
            codes.iter().for_each(|c| rule.add(kind(*c)));
            rule.exit_code()
        };
        let told = [69, 67, 65, 64];
        for (i, worse) in told.iter().enumerate() {
            for better in &told[i + 1..] {
                assert_eq!(rule(&[*better, *worse]), *worse);
            }
        }
        assert_eq!(rule(&[75, 77]), 77);
        assert_eq!(rule(&[78, 75]), 78);
        assert_eq!(rule(&[69, 75, 0]), 75);
        assert_eq!(rule(&[0, 0]), 0);
        let words = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words(&batch_help()).contains(
            "77 or 78 when a login, certificate or configuration failure stopped the batch; else \
             75 when any is deferred or of unknown outcome; else the most serious of 69, 67, 65, \
             64 seen"
        ));
        assert!(words(include_str!("../../README.md")).contains(
            "77 or 78 when the batch stopped on a login, certificate or configuration failure; \
             else 75 when any record is `deferred` or `unknown` (run it again with `--resume`); \
             else the most serious of 69 (a message refused), 67 (a recipient refused), 65 and \
             64 (an invalid record)"
        ));
    }
}

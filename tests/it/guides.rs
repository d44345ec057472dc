//! The setup guides in `docs/`: every ```toml block must be a config envoi accepts, and every
//! `envoi …` line of a ```sh or ```console block must parse against them. And the words
//! envoi prints for Microsoft 365's refusals, which docs/microsoft-365.md quotes: run against
//! aiosmtpd answering exactly those replies (tests named after the status codes).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tempfile::TempDir;

use crate::support::certs::TestPki;
use crate::support::envoi::{Config, ExpectExit, Route, assert_no_secret, envoi, send};
use crate::support::external::{Aiosmtpd, AiosmtpdOptions};
use crate::support::{PASSWORD, USER};

/// One fenced code block of a guide.
struct Block {
    /// `docs/NAME.md:LINE` of its opening fence.
    place: String,
    lang: String,
    text: String,
}

fn guides() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read docs/")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 3,
        "the guides are missing from {}",
        dir.display()
    );
    paths
}

fn blocks(path: &Path) -> Vec<Block> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).expect("read a guide");
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence = trimmed.starts_with("```");
        match open.as_mut() {
            Some(_) if fence => out.extend(open.take()),
            Some(block) => {
                block.text.push_str(trimmed);
                block.text.push('\n');
            }
            None if fence => {
                open = Some(Block {
                    place: format!("docs/{name}:{}", n + 1),
                    lang: trimmed.trim_start_matches('`').trim().to_owned(),
                    text: String::new(),
                });
            }
            None => {}
        }
    }
    assert!(open.is_none(), "{name}: a code block is not closed");
    out
}

/// A config file holding `text`, private as envoi wants one that may name a secret.
fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

/// The profile names of a TOML block and the variables its `*_env` keys name (anywhere).
fn profiles_and_vars(place: &str, text: &str) -> (Vec<String>, BTreeSet<String>) {
    let doc: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{place}: not TOML: {e}"));
    let profiles = doc
        .get("profiles")
        .and_then(|p| p.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    let mut vars = BTreeSet::new();
    fn walk(value: &toml::Value, vars: &mut BTreeSet<String>) {
        if let Some(table) = value.as_table() {
            for (key, v) in table {
                match v.as_str() {
                    Some(name) if key.ends_with("_env") => {
                        vars.insert(name.to_owned());
                    }
                    _ => walk(v, vars),
                }
            }
        }
    }
    walk(&toml::Value::Table(doc), &mut vars);
    (profiles, vars)
}

/// Splits a shell command line as sh would for the plain words and quotes the guides use.
/// An unquoted `#` starting a word begins a comment, and an unquoted `>`, `<` or `|` ends
/// envoi's arguments (a redirection or a pipe follows; a file descriptor number before `>`
/// is not an argument either).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '#') if !in_word => break,
            (None, '>' | '<' | '|') => {
                if in_word && word.chars().all(|d| d.is_ascii_digit()) {
                    in_word = false;
                }
                break;
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unclosed quote in {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

/// The `envoi …` command lines of a sh/console block, continuation lines joined.
fn commands(text: &str) -> Vec<String> {
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .map(|l| l.trim().trim_start_matches("$ "))
        .filter(|l| l.starts_with("envoi "))
        .map(str::to_owned)
        .collect()
}

/// Whether a `send` command line reads a file that is not in the repository (the test runs
/// in its root): a report, a log, a template the reader has.
fn names_files_elsewhere(words: &[&str]) -> bool {
    const FILE_FLAGS: [&str; 6] = [
        "--body-file",
        "--text-file",
        "--attach",
        "--vars-file",
        "--input",
        "--attach-data",
    ];
    words.windows(2).any(|pair| {
        let path = pair[1].strip_prefix('@').unwrap_or(pair[1]);
        FILE_FLAGS.contains(&pair[0])
            && path != "-"
            && (pair[0] != "--attach-data" || pair[1].starts_with('@'))
            && !Path::new(path).exists()
    })
}

#[test]
fn every_toml_block_of_the_guides_is_a_config_envoi_accepts() {
    let mut checked = 0;
    for guide in guides() {
        for block in blocks(&guide).iter().filter(|b| b.lang == "toml") {
            let (profiles, vars) = profiles_and_vars(&block.place, &block.text);
            assert!(!profiles.is_empty(), "{}: no profile", block.place);
            let home = TempDir::new().unwrap();
            let config = write_config(home.path(), "config.toml", &block.text);
            let with_vars = |cmd: &mut assert_cmd::Command| {
                for var in &vars {
                    cmd.env(var, "guide-test-value");
                }
            };
            let mut cmd = envoi(home.path());
            with_vars(&mut cmd);
            let run = cmd
                .args(["profiles", "--config"])
                .arg(&config)
                .expect_exit(0);
            for profile in &profiles {
                assert!(
                    run.stdout.contains(profile.as_str()),
                    "{}: `envoi profiles` does not list {profile}:\n{}",
                    block.place,
                    run.stdout
                );
                let mut cmd = envoi(home.path());
                with_vars(&mut cmd);
                cmd.args(["config", "show", "--profile", profile, "--config"])
                    .arg(&config)
                    .expect_exit(0);
                checked += 1;
            }
        }
    }
    // Microsoft 365 (4 without the API), Gmail (3), providers (8), and the profiles the
    // reference guides moved out of the README name (20 more).
    assert!(checked >= 35, "only {checked} profiles found in the guides");
}

#[test]
fn every_envoi_command_of_the_guides_parses() {
    let mut checked = 0;
    for guide in guides() {
        let blocks = blocks(&guide);
        // The commands run against all of the guide's profiles in one file.
        let mut all = String::new();
        let mut vars = BTreeSet::new();
        for block in blocks.iter().filter(|b| b.lang == "toml") {
            vars.extend(profiles_and_vars(&block.place, &block.text).1);
            all.push_str(&block.text);
            all.push('\n');
        }
        let home = TempDir::new().unwrap();
        let config = write_config(home.path(), "config.toml", &all);
        let run = |args: &[String], code: i32| {
            let mut cmd = envoi(home.path());
            for var in &vars {
                cmd.env(var, "guide-test-value");
            }
            cmd.args(args)
                .arg("--config")
                .arg(&config)
                .expect_exit(code)
        };
        for block in blocks
            .iter()
            .filter(|b| b.lang == "sh" || b.lang == "console")
        {
            for line in commands(&block.text) {
                eprintln!("{}: {line}", block.place);
                let mut args = shell_words(&line);
                args.remove(0);
                let words: Vec<&str> = args.iter().map(String::as_str).collect();
                match words.as_slice() {
                    ["send", ..] if names_files_elsewhere(&words) => {
                        // Its input files are the reader's, not in the guide: the flags must
                        // parse and the profile must resolve.
                        let mut help = args.clone();
                        help.push("--help".into());
                        run(&help, 0);
                        if let Some(i) = words.iter().position(|w| *w == "--profile") {
                            let show = ["config", "show", "--profile", words[i + 1]];
                            run(&show.map(String::from), 0);
                        }
                    }
                    ["send", ..] => {
                        if !words.contains(&"--dry-run") && !words.contains(&"--lint") {
                            args.push("--dry-run".into());
                        }
                        run(&args, 0);
                    }
                    ["profiles", ..] | ["config", "show", ..] | ["auth", "status", ..] => {
                        run(&args, 0);
                    }
                    _ => {
                        // Commands that would reach a server or a browser: the flags must
                        // parse (clap reads them all before --help), and the profile named
                        // must resolve.
                        let mut help = args.clone();
                        help.push("--help".into());
                        run(&help, 0);
                        if let Some(i) = words.iter().position(|w| *w == "--profile") {
                            let show = ["config", "show", "--profile", words[i + 1]];
                            run(&show.map(String::from), 0);
                        }
                    }
                }
                checked += 1;
            }
        }
    }
    // The setup guides' (15) and the reference guides' moved out of the README (26).
    assert!(
        checked >= 41,
        "only {checked} envoi commands found in the guides"
    );
}

// ---------------------------------------------------------------------------------------------
// Microsoft 365's refusals, and what envoi says about them
// ---------------------------------------------------------------------------------------------

/// `envoi send` through aiosmtpd (STARTTLS) answering every AUTH with `auth_reply` (then the
/// profile logs in with the canary password) or every MAIL FROM with `mail_reply` (then it
/// does not log in); asserts the exit code, that nothing was delivered and no secret shown,
/// and returns what envoi printed.
fn refused(auth_reply: Option<&str>, mail_reply: Option<&str>, code: i32) -> Option<String> {
    let dir = TempDir::new().unwrap();
    let pki = Arc::new(TestPki::new());
    let ca = pki.write_ca(dir.path());
    let server = Aiosmtpd::start(AiosmtpdOptions {
        security: "starttls",
        auth: auth_reply.map(|_| (USER.into(), PASSWORD.into())),
        refuse_rcpt: vec![],
        cert_key: Some(pki.write_leaf(dir.path())),
        oauth: None,
        auth_reply: auth_reply.map(str::to_owned),
        mail_reply: mail_reply.map(str::to_owned),
    })?;
    let mut config = Config::new(server.port(), "starttls").trust(&ca);
    if auth_reply.is_some() {
        config = config.login();
    }
    let config = config.write(dir.path());
    let run = send(dir.path(), Route::Config(&config))
        .args(["--to", "ann@example.com", "--subject", "hi", "--body", "hi"])
        .expect_exit(code);
    assert!(server.messages().is_empty(), "something was delivered");
    let output = run.output();
    assert_no_secret(&format!("{output}{}", server.log()));
    let expected = auth_reply.or(mail_reply).unwrap();
    assert!(
        output.contains(expected),
        "the server's reply is not shown whole:\n{output}"
    );
    Some(output)
}

#[test]
fn m365_535_5_7_139_basic_authentication_disabled_names_oauth2_and_graph() {
    let Some(out) = refused(
        Some(
            "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. \
             [BN9PR03CA0123.namprd03.prod.outlook.com]",
        ),
        None,
        77,
    ) else {
        return;
    };
    assert!(out.contains("auth = \"xoauth2\""), "{out}");
    assert!(out.contains("transport = \"graph\""), "{out}");
    assert!(out.contains("docs/microsoft-365.md"), "{out}");
}

#[test]
fn m365_535_5_7_139_smtp_auth_disabled_names_set_casmailbox() {
    let Some(out) = refused(
        Some(
            "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for \
             the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.",
        ),
        None,
        77,
    ) else {
        return;
    };
    assert!(
        out.contains("-SmtpClientAuthenticationDisabled $false"),
        "{out}"
    );
    assert!(out.contains("transport = \"graph\""), "{out}");
}

#[test]
fn m365_550_5_7_30_basic_authentication_not_supported_names_oauth2_and_graph() {
    let Some(out) = refused(
        Some("550 5.7.30 Basic authentication is not supported for Client Submission."),
        None,
        77,
    ) else {
        return;
    };
    assert!(out.contains("auth = \"xoauth2\""), "{out}");
    assert!(out.contains("transport = \"graph\""), "{out}");
}

#[test]
fn m365_535_5_7_3_names_what_the_mailbox_and_the_app_need() {
    let Some(out) = refused(
        Some("535 5.7.3 Authentication unsuccessful [BN9PR03CA0123.namprd03.prod.outlook.com]"),
        None,
        77,
    ) else {
        return;
    };
    assert!(out.contains("Add-MailboxPermission"), "{out}");
    assert!(out.contains("New-ServicePrincipal"), "{out}");
}

#[test]
fn m365_530_5_7_57_without_a_login_says_to_give_one() {
    let Some(out) = refused(
        None,
        Some(
            "530 5.7.57 Client not authenticated to send mail. [BN9PR03CA0123.namprd03.prod.outlook.com]",
        ),
        69,
    ) else {
        return;
    };
    assert!(out.contains("give the profile a username"), "{out}");
}

#[test]
fn another_servers_535_gets_no_microsoft_hint() {
    let Some(out) = refused(
        Some("535 5.7.8 Username and Password not accepted"),
        None,
        77,
    ) else {
        return;
    };
    assert!(!out.contains("Microsoft"), "{out}");
    assert!(!out.contains("docs/"), "{out}");
}

//! The reference where people look for it (issue 18): one man page per subcommand,
//! rendered by the system's man(1); `-h` that fits on a screen beside a `--help` that
//! keeps everything; shell completions that offer the config file's profile names.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::support::envoi::{ExpectExit, envoi};
use crate::support::external::require_external;

/// The pages issue 18 names, and `profiles`, which is a subcommand too.
const PAGES: [&str; 8] = [
    "send", "batch", "sendmail", "check", "outbox", "auth", "config", "profiles",
];

/// The long flags an `envoi … --help` lists (each option line's `--name`).
fn flags_of(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| {
            let at = line.find("--")?;
            let name: String = line[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            (!name.is_empty()).then(|| format!("--{name}"))
        })
        .collect()
}

/// A flag as roff writes it (every `-` escaped).
fn in_roff(flag: &str) -> String {
    flag.replace('-', "\\-")
}

/// `man -l --warnings PAGE` at 80 columns: the rendered text, after asserting that it
/// exited 0 and warned about nothing.
fn render(page: &Path) -> String {
    let out = Command::new("man")
        .args(["-l", "--warnings"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env("PAGER", "cat")
        .output()
        .expect("run man");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "man -l --warnings {}: {:?}\n{stderr}",
        page.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_subcommand_has_a_man_page_that_renders_and_names_its_options() {
    let man_present = Command::new("man").arg("--version").output().is_ok();
    if !require_external("man (man-db)", man_present) {
        return;
    }
    let home = TempDir::new().expect("temp dir");
    let dir = home.path().join("man1");
    let listed = envoi(home.path())
        .args(["man", "--dir"])
        .arg(&dir)
        .expect_exit(0);
    let written: Vec<PathBuf> = listed.stdout.lines().map(PathBuf::from).collect();
    for path in &written {
        assert!(path.is_file(), "listed but not written: {}", path.display());
    }

    let top = dir.join("envoi.1");
    let top_text = render(&top);
    let see_also = top_text
        .split("SEE ALSO")
        .nth(1)
        .expect("envoi.1 has SEE ALSO");
    for name in PAGES {
        let page = dir.join(format!("envoi-{name}.1"));
        assert!(written.contains(&page), "no page for {name}: {written:?}");
        assert!(see_also.contains(&format!("envoi-{name}(1)")), "{see_also}");
        let text = render(&page);
        assert!(text.contains(&format!("envoi-{name}")), "{text}");
        assert!(
            text.contains("EXIT STATUS") && text.contains("envoi(1)"),
            "{text}"
        );
        // `envoi man NAME` prints the very page `--dir` wrote.
        let printed = envoi(home.path()).args(["man", name]).expect_exit(0);
        let roff = std::fs::read_to_string(&page).expect("read the page");
        assert_eq!(printed.stdout, roff, "envoi man {name}");
        if name == "sendmail" {
            // sendmail's flags are read by hand, not by clap: the page lists them anyway.
            for flag in [
                "-t",
                "-i",
                "-f ADDR",
                "-F NAME",
                "--profile NAME",
                "--queue",
            ] {
                assert!(roff.contains(&format!("\\fB{}", in_roff(flag))), "{flag}");
            }
            continue;
        }
        // Every flag of the command and of its own commands (outbox list…), as --help
        // lists them.
        let mut helps = vec![vec![name.to_owned()]];
        let subs = envoi(home.path()).args([name, "--help"]).expect_exit(0);
        if let Some(commands) = subs.stdout.split("Commands:\n").nth(1) {
            let listed = commands.lines().take_while(|l| l.starts_with("  "));
            // A command's name starts its line; its help wraps onto deeper-indented ones.
            for line in listed.filter(|l| !l.starts_with("   ")) {
                let sub = line.split_whitespace().next().unwrap_or_default();
                if sub != "help" {
                    helps.push(vec![name.to_owned(), sub.to_owned()]);
                }
            }
        }
        for args in helps {
            let help = envoi(home.path()).args(&args).arg("--help").expect_exit(0);
            let flags = flags_of(&help.stdout);
            assert!(!flags.is_empty(), "{args:?}");
            for flag in flags {
                assert!(
                    roff.contains(&format!("\\fB{}\\fR", in_roff(&flag))),
                    "envoi-{name}.1 does not name {flag} of envoi {}",
                    args.join(" ")
                );
            }
        }
    }
    // SEE ALSO names no page that is not there.
    for word in see_also.split(|c: char| c.is_whitespace() || c == ',') {
        if let Some(page) = word.strip_suffix("(1)").filter(|p| p.starts_with("envoi-")) {
            assert!(
                dir.join(format!("{page}.1")).is_file(),
                "{page}(1) is not written"
            );
        }
    }

    let unknown = envoi(home.path()).args(["man", "sned"]).expect_exit(64);
    assert!(unknown.stderr.contains("send, batch"), "{}", unknown.stderr);
}

#[test]
fn send_h_fits_on_a_screen_and_help_keeps_everything() {
    let home = TempDir::new().expect("temp dir");
    for command in ["send", "batch"] {
        let short = envoi(home.path()).args([command, "-h"]).expect_exit(0);
        let long = envoi(home.path()).args([command, "--help"]).expect_exit(0);
        let lines = short.stdout.lines().count();
        assert!(
            lines <= 50,
            "envoi {command} -h is {lines} lines:\n{}",
            short.stdout
        );
        assert!(
            short.stdout.contains(&format!("envoi {command} --help")),
            "-h says where the rest is:\n{}",
            short.stdout
        );
        let short_flags = flags_of(&short.stdout);
        let long_flags = flags_of(&long.stdout);
        for flag in &short_flags {
            assert!(long_flags.contains(flag), "{flag}");
        }
        assert!(long_flags.len() > short_flags.len(), "{command}");
        assert!(
            long.stdout.contains("78 configuration error"),
            "{}",
            long.stdout
        );
    }
    let short = envoi(home.path()).args(["send", "-h"]).expect_exit(0);
    let long = envoi(home.path()).args(["send", "--help"]).expect_exit(0);
    // A rare flag is in --help only; a long text is whole in --help, cut in -h.
    assert!(!short.stdout.contains("--read-receipt"));
    assert!(long.stdout.contains("--read-receipt"));
    assert!(short.stdout.contains("--to <LIST>"));
    assert!(!short.stdout.contains("@FILE reads one"));
    assert!(long.stdout.contains("@FILE reads one"));
}

/// A config file with three profiles, in `home`.
fn three_profiles(home: &Path) -> PathBuf {
    let path = home.join("config.toml");
    let profile = |name: &str| format!("[profiles.{name}]\ntransport = \"file\"\ndir = \"out\"\n");
    let text = format!(
        "default = \"work\"\n{}{}{}",
        profile("work"),
        profile("wiki"),
        profile("local")
    );
    std::fs::write(&path, text).expect("write the config");
    path
}

#[test]
fn profiles_names_prints_the_names_alone() {
    let home = TempDir::new().expect("temp dir");
    // No config file: nothing, and success (a completion has no one to tell).
    let none = envoi(home.path())
        .args(["profiles", "--names"])
        .expect_exit(0);
    assert_eq!(none.stdout, "");
    let config = three_profiles(home.path());
    let run = envoi(home.path())
        .args(["profiles", "--names", "--config"])
        .arg(&config)
        .expect_exit(0);
    let mut names: Vec<&str> = run.stdout.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["local", "wiki", "work"]);
}

/// What bash's completion of `words` (the cursor after the last) offers, with the script
/// `envoi completions bash` prints loaded as bash-completion would, the built envoi first
/// on PATH, and `$ENVOI_CONFIG` set to `config`.
fn bash_completes(home: &Path, config: &Path, words: &[&str]) -> Vec<String> {
    let script = envoi(home).args(["completions", "bash"]).expect_exit(0);
    let script_path = home.join("envoi.bash");
    std::fs::write(&script_path, &script.stdout).expect("write the script");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_envoi"))
        .parent()
        .expect("the binary's folder");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let program = format!(
        "source '{}'\n\
         complete -p envoi >/dev/null || exit 3\n\
         COMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _envoi envoi \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script_path.display(),
        quoted.join(" ")
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("ENVOI_CONFIG", config)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut offered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    offered.sort_unstable();
    offered
}

#[test]
fn bash_completes_profile_names_from_the_config() {
    let home = TempDir::new().expect("temp dir");
    let config = three_profiles(home.path());
    assert_eq!(
        bash_completes(home.path(), &config, &["envoi", "send", "--profile", ""]),
        ["local", "wiki", "work"]
    );
    assert_eq!(
        bash_completes(home.path(), &config, &["envoi", "send", "--profile", "wi"]),
        ["wiki"]
    );
    assert_eq!(
        bash_completes(
            home.path(),
            &config,
            &["envoi", "outbox", "flush", "--profile", "l"]
        ),
        ["local"]
    );
    // Without a config file, nothing (not file names, not an error on the terminal).
    let missing = home.path().join("none.toml");
    assert!(bash_completes(home.path(), &missing, &["envoi", "send", "--profile", ""]).is_empty());
}

/// zsh and fish scripts call the same command for `--profile` (neither shell is needed to
/// check that clap_complete's output was edited where it should be).
#[test]
fn zsh_and_fish_scripts_ask_envoi_for_profile_names() {
    let home = TempDir::new().expect("temp dir");
    let zsh = envoi(home.path())
        .args(["completions", "zsh"])
        .expect_exit(0);
    assert!(zsh.stdout.contains("_envoi_profiles() {"), "{}", zsh.stdout);
    assert!(
        zsh.stdout
            .lines()
            .filter(|l| l.starts_with("'--profile="))
            .all(|l| l.contains(":NAME:_envoi_profiles'")),
        "{}",
        zsh.stdout
    );
    let fish = envoi(home.path())
        .args(["completions", "fish"])
        .expect_exit(0);
    let profile_lines: Vec<&str> = fish
        .stdout
        .lines()
        .filter(|l| l.contains(" -l profile "))
        .collect();
    assert!(!profile_lines.is_empty());
    for line in profile_lines {
        assert!(
            line.ends_with("-f -a \"(envoi profiles --names 2>/dev/null)\""),
            "{line}"
        );
    }
}

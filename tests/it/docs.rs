//! Snapshots of the interface: `--help` of each command and the man page. A change to
//! any flag or text shows up here, in review. To accept a change, run the tests with
//! `ENVOI_UPDATE_SNAPSHOTS=1` and commit the files in `tests/snapshots/`.

use std::path::PathBuf;

use tempfile::TempDir;

use crate::support::envoi::{ExpectExit, envoi};

fn check(name: &str, args: &[&str]) {
    let home = TempDir::new().expect("temp dir");
    let run = envoi(home.path()).args(args).expect_exit(0);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("ENVOI_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &run.stdout).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        run.stdout == expected,
        "`envoi {}` differs from {} (ENVOI_UPDATE_SNAPSHOTS=1 accepts it):\n{}",
        args.join(" "),
        path.display(),
        run.stdout
    );
}

#[test]
fn help_texts_are_as_reviewed() {
    check("help.txt", &["--help"]);
    check("send-help.txt", &["send", "--help"]);
    check("outbox-flush-help.txt", &["outbox", "flush", "--help"]);
    check("batch-help.txt", &["batch", "--help"]);
}

#[test]
fn the_man_page_is_as_reviewed() {
    check("envoi.1", &["man"]);
}

//! `envoi config path|init` and `envoi profiles`, run as a user would on a new machine.

use tempfile::TempDir;

use crate::support::envoi::{ExpectExit, envoi};

#[test]
fn a_new_machine_gets_a_private_starter_and_sees_its_profiles() {
    let home = TempDir::new().expect("temp dir");
    let file = home.path().join(".config/envoi/config.toml");
    let path = envoi(home.path())
        .args(["config", "path", "--json"])
        .expect_exit(0)
        .json();
    assert_eq!(path["path"], file.display().to_string(), "{path}");
    assert_eq!(path["exists"], false);
    assert_eq!(path["source"], "the platform's config directory");

    envoi(home.path()).args(["config", "init"]).expect_exit(0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file)
        .expect("written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(&file).expect("read");
    let again = envoi(home.path()).args(["config", "init"]).expect_exit(78);
    assert!(again.stderr.contains("never overwrites"), "{again}");
    assert_eq!(std::fs::read(&file).expect("read"), before, "overwritten");

    let list = envoi(home.path())
        .args(["profiles", "--json"])
        .expect_exit(0)
        .json();
    let work = list
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "work"))
        .unwrap_or_else(|| panic!("no profile work: {list}"));
    assert_eq!(work["default"], true);
    assert_eq!(work["target"], "smtp.example.com:587 (starttls)");
    let text = envoi(home.path()).arg("profiles").expect_exit(0);
    assert!(!text.stdout.contains("password"), "{text}");

    let named = envoi(home.path())
        .env("ENVOI_CONFIG", home.path().join("other.toml"))
        .args(["config", "path"])
        .expect_exit(0);
    assert!(
        named.stdout.contains("from $ENVOI_CONFIG; does not exist"),
        "{named}"
    );
}

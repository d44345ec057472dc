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

/// Trial 1.4: right after `config init`, a send through the starter's example profile
/// names the profile, the file, that its host is the starter's placeholder, and the keys
/// to edit — whether or not the password variable is set — and `config show` says the same.
#[test]
fn a_send_through_the_unedited_starter_says_what_to_edit() {
    let home = TempDir::new().expect("temp dir");
    let file = home.path().join(".config/envoi/config.toml");
    let init = envoi(home.path()).args(["config", "init"]).expect_exit(0);
    for words in [
        "`work`",
        "host, username, password_env, from",
        "envoi check",
    ] {
        assert!(init.stdout.contains(words), "{words}: {init}");
    }
    let send = [
        "send",
        "--to",
        "ann@example.net",
        "--subject",
        "s",
        "--body",
        "b",
    ];
    for password in [None, Some("s3cr3t")] {
        let mut cmd = envoi(home.path());
        if let Some(password) = password {
            cmd.env("ENVOI_PASSWORD", password);
        }
        let run = cmd.args(send).expect_exit(78);
        for words in [
            "profile \"work\"",
            &file.display().to_string(),
            "still the starter's example",
            "smtp.example.com",
            "[profiles.work]",
            "host",
            "username",
            "password_env",
        ] {
            assert!(run.stderr.contains(words), "{password:?}: {words}: {run}");
        }
        assert!(!run.stderr.contains("is not set"), "{run}");
        assert!(!run.output().contains("s3cr3t"), "{run}");
    }
    // A dry look still works and names the same problem.
    let show = envoi(home.path()).args(["config", "show"]).expect_exit(78);
    assert!(
        show.output().contains("still the starter's example"),
        "{show}"
    );
    envoi(home.path()).arg("profiles").expect_exit(0);
    // The file profile beside it is not the placeholder and sends.
    let outbox = envoi(home.path())
        .current_dir(home.path())
        .args(send)
        .args(["--profile", "outbox"])
        .expect_exit(0);
    assert!(
        std::fs::read_dir(home.path().join("outbox"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 1,
        "{outbox}"
    );
}

/// Trial 1.5: an unknown profile names the file and the nearest known name (a swap, a
/// typo, a prefix), and lists the profiles when there are few.
#[test]
fn an_unknown_profile_suggests_the_name_meant() {
    let home = TempDir::new().expect("temp dir");
    let file = home.path().join("envoi.toml");
    let profile = |name: &str| format!("[profiles.{name}]\ntransport = \"file\"\ndir = \"out\"\n");
    std::fs::write(&file, ["lab", "local", "work"].map(profile).concat()).expect("write");
    let send = |name: &str| {
        envoi(home.path())
            .env("ENVOI_CONFIG", &file)
            .args(["send", "--profile", name, "--to", "a@example.net"])
            .args(["--subject", "s", "--body", "b"])
            .expect_exit(78)
    };
    let near = format!(
        "no profile \"lcoal\" in {}; did you mean \"local\"?",
        file.display()
    );
    let run = send("lcoal");
    assert!(run.stderr.contains(&near), "{run}");
    assert!(run.stderr.contains("\"lab\", \"local\", \"work\""), "{run}");
    assert!(
        send("wor").stderr.contains("did you mean \"work\"?"),
        "a prefix"
    );
    let far = send("production");
    assert!(!far.stderr.contains("did you mean"), "{far}");
    assert!(far.stderr.contains("\"work\""), "{far}");

    // Many profiles: the nearest one, and where to see the rest.
    let many: Vec<String> = (0..14).map(|i| profile(&format!("site{i:02}"))).collect();
    std::fs::write(&file, [many.concat(), profile("local")].concat()).expect("write");
    let run = send("locl");
    assert!(run.stderr.contains("did you mean \"local\"?"), "{run}");
    assert!(
        run.stderr.contains("15 profiles: `envoi profiles`"),
        "{run}"
    );
    assert!(!run.stderr.contains("site03"), "{run}");
}

/// Trial 1.3: `envoi profiles` on a new machine says where it looked and how to make a
/// file, as `config path` does.
#[test]
fn profiles_without_a_config_file_say_how_to_make_one() {
    let home = TempDir::new().expect("temp dir");
    let file = home.path().join(".config/envoi/config.toml");
    let run = envoi(home.path()).arg("profiles").expect_exit(78);
    for words in [
        format!("envoi looked for {}", file.display()),
        "`envoi config init`".to_owned(),
    ] {
        assert!(run.stderr.contains(&words), "{words}: {run}");
    }
    assert!(!run.stderr.contains("No such file"), "{run}");
    let named = home.path().join("other.toml");
    let run = envoi(home.path())
        .args(["profiles", "--config"])
        .arg(&named)
        .expect_exit(78);
    let init = format!("`envoi config init --config {}`", named.display());
    assert!(run.stderr.contains(&init), "{run}");
    // Following the advice works.
    envoi(home.path()).args(["config", "init"]).expect_exit(0);
    envoi(home.path()).arg("profiles").expect_exit(0);
}

/// The setting called `key` in a `config show --json` report: (value, source, via).
fn setting(report: &serde_json::Value, key: &str) -> (serde_json::Value, String, String) {
    let found = report["settings"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["key"] == key))
        .unwrap_or_else(|| panic!("no setting {key}: {report}"));
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    (
        found["value"].clone(),
        text(&found["source"]),
        text(&found["via"]),
    )
}

#[test]
fn config_show_tells_each_setting_and_who_set_it_without_a_secret() {
    let home = TempDir::new().expect("temp dir");
    let file = home.path().join("envoi.toml");
    std::fs::write(
        &file,
        "default = \"work\"\n\
         [profiles.work]\nhost = \"mail.example.net\"\nusername = \"bot@example.com\"\n\
         password_env = \"WORK_SMTP_PASSWORD\"\n\
         [profiles.lab]\nhost = \"127.0.0.1\"\nport = 2525\nsecurity = \"tls\"\n\
         username = \"lab\"\npassword = \"s3cr3t-in-file\"\noutbox = false\n\
         outbox_dir = \"/srv/lab-outbox\"\n",
    )
    .expect("write config");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // The file's default profile, its password variable set, the outbox from a flag.
    let work = envoi(home.path())
        .env("ENVOI_CONFIG", &file)
        .env("WORK_SMTP_PASSWORD", "s3cr3t-in-env")
        .args([
            "config",
            "show",
            "--json",
            "--outbox-dir",
            "/tmp/flag-outbox",
        ])
        .expect_exit(0);
    let report = work.json();
    assert_eq!(report["config"]["source"], "$ENVOI_CONFIG", "{report}");
    assert_eq!(report["connection"]["name"], "work");
    assert_eq!(report["connection"]["source"], "file");
    let host = setting(&report, "host");
    assert_eq!(
        (host.0.as_str(), host.1.as_str()),
        (Some("mail.example.net"), "file")
    );
    let port = setting(&report, "port");
    assert_eq!((port.0.as_str(), port.1.as_str()), (Some("587"), "default"));
    let password = setting(&report, "password");
    assert_eq!(password.0, "from $WORK_SMTP_PASSWORD (set)");
    let outbox = setting(&report, "outbox_dir");
    assert_eq!(
        (outbox.0.as_str(), outbox.1.as_str(), outbox.2.as_str()),
        (Some("/tmp/flag-outbox"), "flag", "--outbox-dir")
    );
    assert_eq!(report["problems"], serde_json::json!([]));
    assert!(!work.output().contains("s3cr3t"), "{work}");

    // Another profile named by variable: every key it writes is "file", the inline
    // password only a description, its outbox_dir its own.
    let lab = envoi(home.path())
        .env("ENVOI_CONFIG", &file)
        .env("ENVOI_PROFILE", "lab")
        .args(["config", "show", "--json"])
        .expect_exit(0);
    let report = lab.json();
    assert_eq!(report["connection"]["via"], "ENVOI_PROFILE", "{report}");
    for (key, value) in [("port", "2525"), ("security", "tls"), ("outbox", "false")] {
        assert_eq!(
            setting(&report, key),
            (value.into(), "file".into(), String::new())
        );
    }
    assert_eq!(
        setting(&report, "password").0,
        "in the config file (hidden)"
    );
    assert_eq!(setting(&report, "outbox_dir").0, "/srv/lab-outbox");
    assert!(!lab.output().contains("s3cr3t"), "{lab}");

    // What would stop a send is named, on stdout and as the 78 a send would give.
    let unset = envoi(home.path())
        .env("ENVOI_CONFIG", &file)
        .args(["config", "show"])
        .expect_exit(78);
    assert!(
        unset.stdout.contains("from $WORK_SMTP_PASSWORD (not set)"),
        "{unset}"
    );
    assert!(
        unset
            .stderr
            .contains("$WORK_SMTP_PASSWORD holds the password but is not set"),
        "{unset}"
    );

    // A URL reads no file; its parts are the URL's.
    let url = envoi(home.path())
        .env("ENVOI_CONFIG", &file)
        .env("ENVOI_SMTP_URL", "smtps://me@mail.example.com")
        .env("ENVOI_PASSWORD", "s3cr3t-url")
        .args(["config", "show", "--json"])
        .expect_exit(0)
        .json();
    assert_eq!(url["config"], serde_json::Value::Null, "{url}");
    assert_eq!(
        setting(&url, "port"),
        ("465".into(), "environment".into(), "ENVOI_SMTP_URL".into())
    );
    assert!(!url.to_string().contains("s3cr3t"), "{url}");
}

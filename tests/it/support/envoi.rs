//! Running the built `envoi` binary hermetically, and reading what it delivered.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The canary credentials: a unique password that must never appear in any output.
pub const USER: &str = "envoi-canary";
pub const PASSWORD: &str = "Canary-P4ss-7d3f";

/// `envoi` with an empty environment: no HOME config, no ENVOI_* variables leaking in.
pub fn envoi(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("envoi").expect("the envoi binary is built by cargo test");
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .timeout(std::time::Duration::from_secs(60));
    cmd
}

/// Writes a private config file with one profile `test` (the default) and returns its path.
/// `extra` is appended verbatim inside the profile (e.g. `ca_file = "…"`).
pub fn write_config(dir: &Path, port: u16, security: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "default = \"test\"\n[profiles.test]\nhost = \"localhost\"\nport = {port}\n\
         security = \"{security}\"\nfrom = \"Envoi Test <sender@example.com>\"\n\
         timeout_secs = 10\n{extra}\n"
    );
    std::fs::write(&path, text).expect("write the config file");
    path
}

/// Profile lines for the canary login with the password taken from ENVOI_TEST_PASSWORD.
pub fn login() -> String {
    format!("username = \"{USER}\"\npassword_env = \"ENVOI_TEST_PASSWORD\"\n")
}

/// Profile line trusting the test CA written at `ca`.
pub fn trust(ca: &Path) -> String {
    format!("ca_file = \"{}\"\n", ca.display())
}

/// Asserts the canary password (plain or base64, as AUTH would carry it) is nowhere in `text`.
pub fn assert_no_secret(text: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    for needle in [
        PASSWORD.to_owned(),
        b64.encode(PASSWORD),
        b64.encode(format!("\0{USER}\0{PASSWORD}")),
    ] {
        assert!(!text.contains(&needle), "secret leaked: {text}");
    }
}

/// Output of a finished command as text (stdout, stderr).
pub fn outputs(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

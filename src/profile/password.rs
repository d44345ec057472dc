//! Where a password comes from, and a type that cannot print it.

use std::fmt;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::error::{Error, Result};

/// A password. `Debug` and `Display` print `[redacted]`; only [`Password::expose`]
/// gives the text, and only the transport calls it, to hand it to lettre.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(secret: String) -> Password {
        Password(secret)
    }

    /// The secret itself; call only where it goes to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads a password from the config file. A value of the wrong type is refused
/// without repeating it in the error (serde's message would quote it).
impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Password, D::Error> {
        struct StringOnly;
        fn refuse<E: de::Error>() -> E {
            E::custom("password must be a string (the value is not shown)")
        }
        impl Visitor<'_> for StringOnly {
            type Value = Password;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Password, E> {
                Ok(Password::new(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Password, E> {
                Ok(Password::new(v))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Password, E> {
                Err(refuse())
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Password, E> {
                Err(refuse())
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Password, E> {
                Err(refuse())
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Password, E> {
                Err(refuse())
            }
        }
        deserializer.deserialize_string(StringOnly)
    }
}

/// A profile's password setting.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    /// `password_env`: the name of an environment variable.
    Env(String),
    /// `password_command`: run with `sh -c`; its standard output is the password.
    Command(String),
    /// `password`: written in the file.
    Inline(Password),
}

impl PasswordSource {
    /// Fetches the password. Failures are configuration errors (exit 78); a failing
    /// command's standard error is shown, never its standard output. A command still
    /// running after `timeout` is stopped: a hung password manager must not hang a cron
    /// job or an outbox flush.
    pub fn fetch(&self, timeout: Duration) -> Result<Password> {
        self.fetch_as("password", timeout)
    }

    /// [`PasswordSource::fetch`] for a secret whose keys are `KEY_env`, `KEY_command`
    /// and `KEY` (`token`, `oauth2.client_secret`, …): errors name those keys.
    pub fn fetch_as(&self, key: &str, timeout: Duration) -> Result<Password> {
        match self {
            PasswordSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Password::new(v)),
                _ => Err(Error::config(format!(
                    "{key}_env: the environment variable {var} is not set or empty"
                ))),
            },
            PasswordSource::Inline(p) => Ok(p.clone()),
            PasswordSource::Command(cmd) => run_command(key, cmd, timeout),
        }
    }
}

fn run_command(key: &str, cmd: &str, timeout: Duration) -> Result<Password> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::config(format!("{key}_command: cannot run sh: {e}")))?;
    // Read both pipes while waiting, so a chatty command cannot block on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait(key, &mut child, timeout)?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        return Err(Error::config(format!(
            "{key}_command failed ({status}): {}",
            stderr.trim()
        )));
    }
    let stdout = stdout.join().unwrap_or_default();
    let mut secret = String::from_utf8(stdout)
        .map_err(|_| Error::config(format!("{key}_command: its output is not UTF-8")))?;
    // `pass` and friends end the secret with a newline; the newline is not part of it.
    while secret.ends_with(['\n', '\r']) {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(Error::config(format!("{key}_command printed nothing")));
    }
    Ok(Password::new(secret))
}

/// Reads a pipe to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits for the command at most `timeout`, then stops it (78).
fn wait(key: &str, child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::config(format!(
                    "{key}_command did not finish within {} s and was stopped",
                    timeout.as_secs_f64()
                )));
            }
            Err(e) => {
                return Err(Error::config(format!(
                    "{key}_command: cannot wait for it: {e}"
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_secret() {
        let p = Password::new("Canary-P4ss-7d3f".into());
        assert_eq!(format!("{p} {p:?}"), "[redacted] [redacted]");
        assert_eq!(p.expose(), "Canary-P4ss-7d3f");
    }

    #[test]
    fn command_output_is_trimmed_and_failures_show_stderr_only() {
        let p = PasswordSource::Command("printf 'pw\\n'".into())
            .fetch(Duration::from_secs(10))
            .unwrap();
        assert_eq!(p.expose(), "pw");
        let err = PasswordSource::Command("echo secret-out; echo oops >&2; exit 3".into())
            .fetch(Duration::from_secs(10))
            .unwrap_err();
        assert!(err.message().contains("oops"), "{err}");
        assert!(!err.message().contains("secret-out"), "{err}");
    }

    /// T25: a password command that hangs is stopped after the timeout (78), and
    /// a command that fills its pipes does not block.
    #[test]
    fn t25_a_hanging_command_is_stopped() {
        let err = PasswordSource::Command("sleep 30".into())
            .fetch(Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config);
        assert!(
            err.message().contains("did not finish within 0.3 s"),
            "{err}"
        );
        let chatty = "head -c 1000000 /dev/zero >&2; echo pw";
        let p = PasswordSource::Command(chatty.into())
            .fetch(Duration::from_secs(10))
            .unwrap();
        assert_eq!(p.expose(), "pw");
    }
}

//! Where a password comes from, and a type that cannot print it.

use std::fmt;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
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
                Ok(v) if !v.is_empty() => {
                    check_secret(&format!("{key}_env: the variable {var}"), &v)?;
                    Ok(Password::new(v))
                }
                _ => Err(Error::config(format!(
                    "{key}_env: the environment variable {var} is not set or empty"
                ))),
            },
            PasswordSource::Inline(p) => Ok(p.clone()),
            PasswordSource::Command(cmd) => run_command(key, cmd, timeout),
        }
    }
}

/// The most envoi reads of a command's standard output, and of its standard error: a
/// secret is short, and `yes` must not fill memory (PC01).
const MAX_OUTPUT: u64 = 64 << 10;

/// The longest secret envoi accepts: passwords and tokens are far shorter (a Microsoft
/// access token is about 2 KiB).
const MAX_SECRET: usize = 4 << 10;

/// Which pipe a drained output came from.
#[derive(Clone, Copy)]
enum Pipe {
    Out,
    Err,
}

/// Runs `sh -c cmd` in a process group of its own and returns what it printed, trimmed
/// of one final newline. It is stopped, its whole group with it (PC02: a `sleep` that
/// `sh` started must not outlive it), after `timeout` or as soon as it prints more than
/// [`MAX_OUTPUT`] on either pipe.
fn run_command(key: &str, cmd: &str, timeout: Duration) -> Result<Password> {
    let deadline = Instant::now() + timeout;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|e| Error::config(format!("{key}_command: cannot run sh: {e}")))?;
    // Read both pipes while waiting, so a chatty command cannot block on a full pipe.
    let (sender, outputs) = mpsc::channel();
    drain(Pipe::Out, child.stdout.take(), sender.clone());
    drain(Pipe::Err, child.stderr.take(), sender);
    let (mut stdout, mut stderr, mut status) = (None, None, None);
    loop {
        if status.is_none() {
            status = child.try_wait().map_err(|e| {
                stop(&mut child);
                Error::config(format!("{key}_command: cannot wait for it: {e}"))
            })?;
        }
        if let (Some(status), Some(_), Some(_)) = (status, &stdout, &stderr) {
            return settle(
                key,
                status,
                stdout.unwrap_or_default(),
                stderr.unwrap_or_default(),
            );
        }
        if Instant::now() >= deadline {
            stop(&mut child);
            return Err(Error::config(format!(
                "{key}_command did not finish within {} s and was stopped",
                timeout.as_secs_f64()
            )));
        }
        match outputs.recv_timeout(Duration::from_millis(10)) {
            Ok((pipe, Some(bytes))) => match pipe {
                Pipe::Out => stdout = Some(bytes),
                Pipe::Err => stderr = Some(bytes),
            },
            Ok((pipe, None)) => {
                stop(&mut child);
                let which = match pipe {
                    Pipe::Out => "standard output",
                    Pipe::Err => "standard error",
                };
                return Err(Error::config(format!(
                    "{key}_command printed more than {} KiB on its {which} and was stopped; \
                     it must print the secret only",
                    MAX_OUTPUT >> 10
                )));
            }
            Err(_) => {}
        }
    }
}

/// The secret of a finished command: a failure shows its standard error, never its
/// standard output; the output must be one line of at most [`MAX_SECRET`] bytes with no
/// NUL, CR or LF inside (it goes into an AUTH line).
fn settle(
    key: &str,
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
) -> Result<Password> {
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        return Err(Error::config(format!(
            "{key}_command failed ({status}): {}",
            stderr.trim()
        )));
    }
    let mut secret = String::from_utf8(stdout)
        .map_err(|_| Error::config(format!("{key}_command: its output is not UTF-8")))?;
    // `pass` and friends end the secret with a newline; the newline is not part of it.
    if secret.ends_with('\n') {
        secret.pop();
        if secret.ends_with('\r') {
            secret.pop();
        }
    }
    if secret.is_empty() {
        return Err(Error::config(format!("{key}_command printed nothing")));
    }
    check_secret(&format!("{key}_command printed a secret that"), &secret)?;
    Ok(Password::new(secret))
}

/// A secret goes into one protocol line: no NUL, CR or LF, and at most [`MAX_SECRET`]
/// bytes. `what` starts the error ("password_command printed a secret that").
fn check_secret(what: &str, secret: &str) -> Result<()> {
    if secret.contains(['\0', '\r', '\n']) {
        return Err(Error::config(format!(
            "{what} holds a line break or NUL byte; it must be one line (the secret alone)"
        )));
    }
    if secret.len() > MAX_SECRET {
        return Err(Error::config(format!(
            "{what} is {} bytes long; a secret is at most {} KiB",
            secret.len(),
            MAX_SECRET >> 10
        )));
    }
    Ok(())
}

/// Reads a pipe on a thread of its own, up to [`MAX_OUTPUT`], and sends what it read,
/// or `None` when there was more (then it stops reading; the caller stops the command).
fn drain(
    pipe: Pipe,
    source: Option<impl Read + Send + 'static>,
    sender: mpsc::Sender<(Pipe, Option<Vec<u8>>)>,
) {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(source) = source {
            let _ = source.take(MAX_OUTPUT + 1).read_to_end(&mut bytes);
        }
        let within = bytes.len() as u64 <= MAX_OUTPUT;
        // The receiver is gone once the command was stopped: nothing left to tell.
        let _ = sender.send((pipe, within.then_some(bytes)));
    });
}

/// Stops the command and everything it started: the whole process group, by
/// `kill -s KILL -- -PGID` (envoi has no `unsafe` to call kill(2) itself), else the
/// child alone; then reaps it.
fn stop(child: &mut Child) {
    #[cfg(unix)]
    {
        // The shell's own kill (POSIX), so no kill binary need be installed.
        let killed = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -s KILL -- -{}", child.id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !killed {
            let _ = child.kill();
        }
    }
    #[cfg(not(unix))]
    let _ = child.kill();
    let _ = child.wait();
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
        let chatty = "head -c 60000 /dev/zero >&2; echo pw";
        let p = PasswordSource::Command(chatty.into())
            .fetch(Duration::from_secs(10))
            .unwrap();
        assert_eq!(p.expose(), "pw");
    }

    /// PC01: a command that prints without end is stopped at 64 KiB, on either pipe;
    /// a secret with a line break inside, or a huge one, is refused.
    #[test]
    fn pc01_command_output_is_capped_and_the_secret_is_one_line() {
        let fetch = |cmd: &str| PasswordSource::Command(cmd.into()).fetch(Duration::from_secs(10));
        for cmd in ["yes", "yes >&2"] {
            let started = Instant::now();
            let err = fetch(cmd).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Config);
            assert!(err.message().contains("printed more than 64 KiB"), "{err}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "not stopped early"
            );
        }
        for cmd in ["printf 'a\\nb\\n'", "printf 'a\\rb'", "printf 'a\\000b'"] {
            let err = fetch(cmd).unwrap_err();
            assert!(err.message().contains("line break or NUL"), "{cmd}: {err}");
        }
        let err = fetch("head -c 5000 /dev/zero | tr '\\0' a").unwrap_err();
        assert!(err.message().contains("at most 4 KiB"), "{err}");
        assert_eq!(fetch("printf 'pw\\r\\n'").unwrap().expose(), "pw");
    }
}

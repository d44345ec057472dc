//! Running the built `envoi` binary hermetically, setting up a server and a config for it,
//! and checking what a run printed.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

use super::certs::TestPki;
use super::smtp_server::{Received, Security, ServerOptions, TestServer};
use super::{PASSWORD, USER};

/// The variable that [`Config::login`] takes the password from and [`send`] sets.
const PASSWORD_ENV: &str = "ENVOI_TEST_PASSWORD";

/// The whole environment of every envoi run: PATH, and HOME, XDG_CONFIG_HOME and the
/// system-wide config file (absent unless a test writes it) inside the test's own
/// directory, so no config file or ENVOI_* variable of the machine leaks in.
pub fn hermetic_env(home: &Path) -> Vec<(OsString, OsString)> {
    vec![
        ("PATH".into(), std::env::var_os("PATH").unwrap_or_default()),
        ("HOME".into(), home.into()),
        ("XDG_CONFIG_HOME".into(), home.join(".config").into()),
        (
            "ENVOI_SYSTEM_CONFIG".into(),
            home.join("system-config.toml").into(),
        ),
    ]
}

/// `envoi` with only [`hermetic_env`] in its environment, killed if it runs over 60 s.
pub fn envoi(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("envoi").expect("the envoi binary is built by cargo test");
    cmd.env_clear()
        .envs(hermetic_env(home))
        .timeout(Duration::from_secs(60));
    cmd
}

/// Starts `envoi <args>` in the background with the environment of [`envoi`], stdin empty
/// and output to the given files: for a process the test must be able to SIGKILL, which
/// assert_cmd (it only runs a command to completion) cannot do.
pub fn spawn_envoi(home: &Path, args: &[OsString], stdout: File, stderr: File) -> Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("envoi"))
        .env_clear()
        .envs(hermetic_env(home))
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn envoi")
}

/// Where `envoi send` connects.
#[derive(Clone, Copy, Debug)]
pub enum Route<'a> {
    /// `--config <file>`: the file's default profile (see [`Config`]).
    Config(&'a Path),
    /// `--smtp-url smtp://127.0.0.1:<port>?security=none`.
    Url(u16),
}

impl Route<'_> {
    /// `send` followed by the route's flags.
    pub fn send_args(self) -> Vec<OsString> {
        let route: [OsString; 2] = match self {
            Route::Config(path) => ["--config".into(), path.into()],
            Route::Url(port) => [
                "--smtp-url".into(),
                format!("smtp://127.0.0.1:{port}?security=none").into(),
            ],
        };
        let mut args = vec![OsString::from("send")];
        args.extend(route);
        args
    }
}

/// `envoi send` along `route`, with the canary password in the variable that
/// [`Config::login`] names.
pub fn send(home: &Path, route: Route) -> Command {
    let mut cmd = envoi(home);
    cmd.env(PASSWORD_ENV, PASSWORD).args(route.send_args());
    cmd
}

/// A config file with one profile, `test`, the default: `localhost:<port>`, sender
/// `sender@example.com`, a per-command timeout of 10 s unless set otherwise.
pub struct Config {
    port: u16,
    security: &'static str,
    timeout_secs: u64,
    extra: String,
}

impl Config {
    /// `security` is the profile's: "none", "starttls" or "tls".
    pub fn new(port: u16, security: &'static str) -> Config {
        Config {
            port,
            security,
            timeout_secs: 10,
            extra: String::new(),
        }
    }

    /// The profile's `timeout_secs` (per SMTP command).
    pub fn timeout_secs(mut self, secs: u64) -> Config {
        self.timeout_secs = secs;
        self
    }

    /// Log in as the canary user, the password taken from ENVOI_TEST_PASSWORD.
    pub fn login(self) -> Config {
        self.line(&format!(
            "username = \"{USER}\"\npassword_env = \"{PASSWORD_ENV}\""
        ))
    }

    /// Trust the CA certificate written at `ca`.
    pub fn trust(self, ca: &Path) -> Config {
        self.line(&format!("ca_file = \"{}\"", ca.display()))
    }

    /// Any other line(s) of the profile, verbatim.
    pub fn line(mut self, line: &str) -> Config {
        self.extra.push_str(line);
        self.extra.push('\n');
        self
    }

    /// Writes `dir/config.toml` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let Config {
            port,
            security,
            timeout_secs,
            extra,
        } = self;
        let path = dir.join("config.toml");
        let text = format!(
            "default = \"test\"\n[profiles.test]\nhost = \"localhost\"\nport = {port}\n\
             security = \"{security}\"\nfrom = \"Envoi Test <sender@example.com>\"\n\
             timeout_secs = {timeout_secs}\n{extra}\n"
        );
        std::fs::write(&path, text).expect("write the config file");
        // Private whatever the umask: envoi refuses a readable file with a password and a
        // writable one with a password_command.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod 600 the config file");
        path
    }
}

/// A temporary HOME, an in-process SMTP server, and a config file for it in that HOME.
pub struct Setup {
    pub dir: TempDir,
    pub server: TestServer,
    pub config: PathBuf,
}

impl Setup {
    /// A server of the given kind that wants the canary login (plus `opts`), and a config
    /// that logs in and trusts the server's CA. The server serves `opts.pki`, else a new
    /// [`TestPki`].
    pub fn new(security: Security, opts: ServerOptions) -> Setup {
        let dir = TempDir::new().expect("temp dir");
        let pki = opts.pki.clone().unwrap_or_else(|| Arc::new(TestPki::new()));
        let ca = pki.write_ca(dir.path());
        let server = TestServer::start(ServerOptions {
            security,
            auth: Some((USER.into(), PASSWORD.into())),
            pki: Some(pki),
            ..opts
        });
        let profile_security = match security {
            Security::Plain => "none",
            Security::StartTls => "starttls",
            Security::ImplicitTls => "tls",
        };
        let config = Config::new(server.port(), profile_security)
            .login()
            .trust(&ca)
            .write(dir.path());
        Setup {
            dir,
            server,
            config,
        }
    }

    /// A plaintext server without login (plus `opts`), and a config whose per-command
    /// timeout is `timeout_secs`.
    pub fn plain(opts: ServerOptions, timeout_secs: u64) -> Setup {
        let dir = TempDir::new().expect("temp dir");
        let server = TestServer::start(opts);
        let config = Config::new(server.port(), "none")
            .timeout_secs(timeout_secs)
            .write(dir.path());
        Setup {
            dir,
            server,
            config,
        }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// `envoi send --config <config>` (see [`send`]).
    pub fn send(&self) -> Command {
        send(self.home(), Route::Config(&self.config))
    }

    pub fn only_message(&self) -> Received {
        let mut messages = self.server.messages();
        assert_eq!(messages.len(), 1, "expected exactly one message");
        messages.remove(0)
    }

    pub fn assert_nothing_delivered(&self) {
        assert!(self.server.messages().is_empty(), "a message was delivered");
    }

    /// The client gave up before logging in or starting a transaction: no AUTH, no MAIL
    /// in what the server received, and nothing delivered.
    pub fn assert_stopped_before_auth(&self) {
        assert!(
            self.server.wait_idle(Duration::from_secs(5)),
            "server still busy"
        );
        let transcript = self.server.transcript();
        assert!(
            transcript
                .iter()
                .all(|l| !l.starts_with("AUTH") && !l.starts_with("MAIL")),
            "{transcript:?}"
        );
        self.assert_nothing_delivered();
    }
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

/// A finished envoi run: what ran, how it ended, and what it printed (as text).
pub struct Run {
    what: String,
    status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// `what` names the run in failure messages (its argv, or a spawned process's name).
    pub fn new(what: String, status: ExitStatus, stdout: String, stderr: String) -> Run {
        Run {
            what,
            status,
            stdout,
            stderr,
        }
    }

    /// Runs `command` (a plain process, e.g. envoi under `unshare`) to its end, named
    /// `what`, and how long it took.
    pub fn timed(what: &str, command: &mut std::process::Command) -> (Run, std::time::Duration) {
        let started = std::time::Instant::now();
        let out = command.output().expect("run envoi");
        let took = started.elapsed();
        let run = Run::new(
            what.to_owned(),
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        (run, took)
    }

    /// Asserts the run exited with `code`; the failure message shows the run whole.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit code {code}\n{self}"
        );
        self
    }

    /// Stdout as the one JSON document that `--json` prints.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e})\n{self}"))
    }

    /// Stdout and stderr together.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run: {}\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

/// Running an assert_cmd [`Command`] and checking its exit code in one step.
pub trait ExpectExit {
    /// Runs the command to completion and asserts its exit code (see [`Run::expect`]).
    fn expect_exit(&mut self, code: i32) -> Run;
}

impl ExpectExit for Command {
    #[track_caller]
    fn expect_exit(&mut self, code: i32) -> Run {
        let argv = std::iter::once(self.get_program())
            .chain(self.get_args())
            .map(|a| format!("{:?}", a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let out = self.output().expect("run envoi");
        Run::new(
            argv,
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
        .expect(code)
    }
}

/// Waits for `child` at most `secs` (then kills it and fails).
pub fn wait_bounded(child: &mut Child, secs: u64) -> ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("envoi still running after {secs} s; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

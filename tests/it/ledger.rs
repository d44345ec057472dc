//! The idempotency ledger in PostgreSQL (`$ENVOI_LEDGER`, `--ledger`): "machines" are runs
//! with different HOMEs (so no shared outbox or file ledger), against a real PostgreSQL
//! cluster this test binary makes once (`support::postgres`, shared with `workers::`).

use std::ffi::OsString;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::envoi::{Config, ExpectExit, Route, Run, envoi, hermetic_env, wait_bounded};
use crate::support::postgres::{LEDGER_PASSWORD, LEDGER_USER, cluster, free_port, ledger_url};
use crate::support::smtp_server::{ServerOptions, TestServer};

/// One "machine": its own HOME, so its own outbox folder and file ledger; only the
/// PostgreSQL ledger is shared.
struct Machine {
    home: TempDir,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// `send --json` of one message with idempotency `key`, through the SMTP server on
    /// `port`.
    fn send_args(port: u16, key: &str) -> Vec<OsString> {
        let mut args = Route::Url(port).send_args();
        args.extend(
            [
                "--from",
                "ci@example.com",
                "--to",
                "dev@example.com",
                "--subject",
                "build 42 failed",
                "--body",
                "see the log",
                "--json",
                "--idempotency-key",
                key,
            ]
            .map(OsString::from),
        );
        args
    }

    fn env(ledger: &str, password: &str) -> [(OsString, OsString); 2] {
        [
            ("ENVOI_LEDGER".into(), ledger.into()),
            ("PGPASSWORD".into(), password.into()),
        ]
    }

    fn send(&self, port: u16, key: &str) -> assert_cmd::Command {
        self.send_to(&ledger_url(), LEDGER_PASSWORD, port, key)
    }

    /// [`Machine::send`] with the ledger at `ledger` and `$PGPASSWORD` set to `password`.
    fn send_to(&self, ledger: &str, password: &str, port: u16, key: &str) -> assert_cmd::Command {
        let mut cmd = envoi(self.home.path());
        cmd.envs(Self::env(ledger, password))
            .args(Self::send_args(port, key));
        cmd
    }

    /// The same send in the background, output to files in this HOME.
    fn spawn(&self, port: u16, key: &str, extra: &[&str]) -> Child {
        let out = |name: &str| fs::File::create(self.home.path().join(name)).unwrap();
        Command::new(assert_cmd::cargo::cargo_bin("envoi"))
            .env_clear()
            .envs(hermetic_env(self.home.path()))
            .envs(Self::env(&ledger_url(), LEDGER_PASSWORD))
            .args(Self::send_args(port, key))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out("stdout"))
            .stderr(out("stderr"))
            .spawn()
            .expect("spawn envoi")
    }

    /// What a spawned send printed, once it ended with `status`.
    fn finished(&self, status: ExitStatus) -> Run {
        let read = |name: &str| fs::read_to_string(self.home.path().join(name)).unwrap();
        Run::new(
            format!("envoi in {}", self.home.path().display()),
            status,
            read("stdout"),
            read("stderr"),
        )
    }
}

fn text<'a>(json: &'a Value, key: &str) -> &'a str {
    json[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {json}"))
}

/// Asserts the ledger's password is nowhere in what a run printed.
#[track_caller]
fn assert_no_ledger_password(run: &Run) {
    assert!(
        !run.output().contains(LEDGER_PASSWORD),
        "the ledger password leaked:\n{run}"
    );
}

/// CI's re-run: the second "machine" (a new runner, an empty HOME) with the same key sends
/// nothing and answers `duplicate` with the first Message-ID; a send that failed frees its
/// key on every machine.
#[test]
fn two_machines_one_key_one_message() {
    let server = TestServer::start(ServerOptions::default());
    let (first_runner, rerun) = (Machine::new(), Machine::new());
    let first = first_runner
        .send(server.port(), "run-1001-notify")
        .expect_exit(0);
    let second = rerun.send(server.port(), "run-1001-notify").expect_exit(0);
    let (a, b) = (first.json(), second.json());
    assert_eq!(text(&a, "status"), "sent", "{first}");
    assert_eq!(text(&b, "status"), "duplicate", "{second}");
    assert_eq!(text(&b, "message_id"), text(&a, "message_id"), "{second}");
    assert_eq!(text(&b, "first_status"), "sent", "{second}");
    let delivered = server.messages();
    assert_eq!(delivered.len(), 1, "the re-run sent again");
    assert_no_ledger_password(&first);
    assert_no_ledger_password(&second);

    // The SMTP server down: 75, and the key stays free for the next machine.
    let down = free_port();
    let failed = first_runner
        .send(down, "run-1002-notify")
        .args(["--retries", "0"])
        .expect_exit(75);
    assert_eq!(text(&failed.json(), "status"), "error", "{failed}");
    let retried = rerun.send(server.port(), "run-1002-notify").expect_exit(0);
    assert_eq!(text(&retried.json(), "status"), "sent", "{retried}");
    assert_eq!(server.messages().len(), 2);
}

/// Four machines at once with one key: exactly one sends, the others wait on its claim and
/// answer `duplicate` with its Message-ID.
#[test]
fn machines_at_once_send_once() {
    let server = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(20)),
        ..ServerOptions::default()
    });
    cluster();
    let machines: Vec<Machine> = (0..4).map(|_| Machine::new()).collect();
    let mut children: Vec<Child> = machines
        .iter()
        .map(|m| m.spawn(server.port(), "nightly-2026-12-08", &[]))
        .collect();
    let mut statuses = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for (machine, child) in machines.iter().zip(&mut children) {
        let status = wait_bounded(child, 60);
        let run = machine.finished(status).expect(0);
        assert_no_ledger_password(&run);
        let json = run.json();
        statuses.push(text(&json, "status").to_owned());
        ids.insert(text(&json, "message_id").to_owned());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        ["duplicate", "duplicate", "duplicate", "sent"],
        "{ids:?}"
    );
    assert_eq!(ids.len(), 1, "duplicates name another Message-ID: {ids:?}");
    let delivered = server.messages();
    assert_eq!(delivered.len(), 1, "{} messages delivered", delivered.len());
}

/// A sender SIGKILLed mid-send leaves its claim: once its deadline has passed, another
/// machine answers `outcome_unknown` (75) and sends nothing, since the first copy may
/// have gone.
#[test]
fn a_killed_senders_claim_is_unknown_and_nothing_is_sent() {
    let silent = TestServer::start(ServerOptions {
        silent_greeting: true,
        ..ServerOptions::default()
    });
    let crashed = Machine::new();
    let mut child = crashed.spawn(silent.port(), "deploy-77", &["--timeout", "3"]);
    // The claim is made before the connection: once the server sees one, it is there.
    let by = Instant::now() + Duration::from_secs(30);
    while silent.connections() == 0 {
        assert!(Instant::now() < by, "the send never connected");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the send ended on its own"
        );
        thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let live = TestServer::start(ServerOptions::default());
    let other = Machine::new();
    let run = other
        .send(live.port(), "deploy-77")
        .args(["--timeout", "30"])
        .expect_exit(75);
    assert_no_ledger_password(&run);
    let json = run.json();
    assert_eq!(text(&json, "status"), "error", "{run}");
    assert!(
        run.output().contains("outcome_unknown") && run.output().contains("may have been sent"),
        "{run}"
    );
    assert!(live.messages().is_empty(), "a second copy went out");
    assert_eq!(live.connections(), 0, "{run}");
}

/// A ledger that cannot be reached is 75 and nothing is sent.
#[test]
fn an_unreachable_ledger_is_75_and_nothing_is_sent() {
    let server = TestServer::start(ServerOptions::default());
    let down = format!(
        "postgres://{LEDGER_USER}@127.0.0.1:{}/postgres?sslmode=disable",
        free_port()
    );
    let run = Machine::new()
        .send_to(&down, LEDGER_PASSWORD, server.port(), "job-5")
        .expect_exit(75);
    assert!(
        run.output().contains("idempotency ledger at 127.0.0.1:"),
        "{run}"
    );
    assert_no_ledger_password(&run);
    assert_eq!(server.connections(), 0, "{run}");
}

/// The password is never printed: a wrong one is 77 naming `$PGPASSWORD`, and one put in
/// the URL is refused (78) without repeating it. Nothing is sent either way.
#[test]
fn the_ledger_password_never_shows() {
    let server = TestServer::start(ServerOptions::default());
    let machine = Machine::new();
    let wrong = "Wrong-Canary-31c7";
    let refused = machine
        .send_to(&ledger_url(), wrong, server.port(), "job-6")
        .expect_exit(77);
    assert!(refused.output().contains("$PGPASSWORD"), "{refused}");
    assert!(!refused.output().contains(wrong), "{refused}");

    let in_url = ledger_url().replace(
        &format!("{LEDGER_USER}@"),
        &format!("{LEDGER_USER}:{LEDGER_PASSWORD}@"),
    );
    let run = machine
        .send_to(&in_url, "", server.port(), "job-6")
        .expect_exit(78);
    assert!(run.output().contains("$PGPASSWORD"), "{run}");
    assert_no_ledger_password(&run);
    assert_eq!(server.connections(), 0);
}

/// TLS to the ledger: verified against the CA of `?sslrootcert=`; without it the test CA
/// is unknown (the system's roots), which is 77, and nothing is sent.
#[test]
fn the_ledger_over_tls_is_verified() {
    let server = TestServer::start(ServerOptions::default());
    let cluster = cluster();
    let base = format!(
        "postgres://{LEDGER_USER}@127.0.0.1:{}/postgres",
        cluster.port
    );
    let machine = Machine::new();
    let trusted = format!(
        "{base}?sslmode=verify-full&sslrootcert={}",
        cluster.ca.display()
    );
    let run = machine
        .send_to(&trusted, LEDGER_PASSWORD, server.port(), "tls-1")
        .expect_exit(0);
    assert_eq!(text(&run.json(), "status"), "sent", "{run}");
    let again = Machine::new()
        .send_to(&trusted, LEDGER_PASSWORD, server.port(), "tls-1")
        .expect_exit(0);
    assert_eq!(text(&again.json(), "status"), "duplicate", "{again}");

    let unknown_ca = machine
        .send_to(&base, LEDGER_PASSWORD, server.port(), "tls-2")
        .expect_exit(77);
    assert!(unknown_ca.output().contains("sslrootcert"), "{unknown_ca}");
    assert_no_ledger_password(&unknown_ca);
    assert_eq!(server.messages().len(), 1);
}

/// A message queued in one machine's outbox (`--queue`, the server down) holds its key in
/// the shared ledger too: another machine answers `duplicate` with its Message-ID and
/// `first_status` `queued`, and sends nothing.
#[test]
fn a_message_queued_on_one_machine_is_a_duplicate_on_another() {
    let live = TestServer::start(ServerOptions::default());
    let queued = Machine::new()
        .send(free_port(), "report-2026-12")
        .args(["--queue", "--retries", "0"])
        .expect_exit(0);
    let first = queued.json();
    assert_eq!(text(&first, "status"), "queued", "{queued}");
    let other = Machine::new()
        .send(live.port(), "report-2026-12")
        .expect_exit(0);
    let second = other.json();
    assert_eq!(text(&second, "status"), "duplicate", "{other}");
    assert_eq!(text(&second, "first_status"), "queued", "{other}");
    assert_eq!(text(&second, "message_id"), text(&first, "message_id"));
    assert_eq!(live.connections(), 0, "{other}");
}

/// Sendmail mode on two hosts (cron's mail of one job run on both) with the profile's
/// `ledger` key and `$ENVOI_IDEMPOTENCY_KEY`: the relay gets one message.
#[test]
fn sendmail_on_two_hosts_with_the_profiles_ledger_sends_once() {
    let server = TestServer::start(ServerOptions::default());
    for host in [Machine::new(), Machine::new()] {
        let dir = host.home.path().join(".config/envoi");
        fs::create_dir_all(&dir).unwrap();
        Config::new(server.port(), "none")
            .line(&format!("ledger = \"{}\"", ledger_url()))
            .write(&dir);
        let run = envoi(host.home.path())
            .env("PGPASSWORD", LEDGER_PASSWORD)
            .env("ENVOI_IDEMPOTENCY_KEY", "cron-backup-2026-12-08")
            .args(["sendmail", "-t"])
            .write_stdin("To: ops@example.com\nSubject: backup done\n\nok\n")
            .expect_exit(0);
        assert_no_ledger_password(&run);
    }
    assert_eq!(server.messages().len(), 1, "both hosts sent");
}

/// The ledger's password from the config file's own secret sources, beside the `ledger`
/// key: `ledger_password_command` on one host, `ledger_password_env` on another, no
/// `$PGPASSWORD` anywhere; one message. A wrong one is 77 naming the key, never the
/// password; a password key without `ledger` beside it is 78 before anything is sent.
#[test]
fn the_ledger_password_comes_from_the_profiles_own_sources() {
    let server = TestServer::start(ServerOptions::default());
    let profile_with = |host: &Machine, line: &str| {
        let dir = host.home.path().join(".config/envoi");
        fs::create_dir_all(&dir).unwrap();
        Config::new(server.port(), "none")
            .line(&format!("ledger = \"{}\"", ledger_url()))
            .line(line)
            .write(&dir);
    };
    let send = |host: &Machine| {
        let mut cmd = envoi(host.home.path());
        cmd.env("ENVOI_IDEMPOTENCY_KEY", "nightly-report-2026-12-08")
            .env("LEDGER_SECRET", LEDGER_PASSWORD)
            .args([
                "send",
                "--from",
                "ci@example.com",
                "--to",
                "ops@example.com",
            ])
            .args(["--subject", "nightly"])
            .args(["--body", "ok", "--json"]);
        cmd
    };
    let by_command = Machine::new();
    profile_with(
        &by_command,
        &format!("ledger_password_command = \"printf %s '{LEDGER_PASSWORD}'\""),
    );
    let first = send(&by_command).expect_exit(0);
    let by_env = Machine::new();
    profile_with(&by_env, "ledger_password_env = \"LEDGER_SECRET\"");
    let second = send(&by_env).expect_exit(0);
    let (first, second) = (first.json(), second.json());
    assert_eq!(text(&second, "status"), "duplicate", "{second}");
    assert_eq!(text(&second, "message_id"), text(&first, "message_id"));
    assert_eq!(server.messages().len(), 1);

    let wrong = Machine::new();
    profile_with(&wrong, "ledger_password_env = \"WRONG_SECRET\"");
    let refused = send(&wrong)
        .env("WRONG_SECRET", "Wrong-Canary-8d2e")
        .expect_exit(77);
    assert!(
        refused.output().contains("ledger_password_env"),
        "{refused}"
    );
    assert!(!refused.output().contains("Wrong-Canary-8d2e"), "{refused}");
    assert_no_ledger_password(&refused);

    let orphan = Machine::new();
    let dir = orphan.home.path().join(".config/envoi");
    fs::create_dir_all(&dir).unwrap();
    Config::new(server.port(), "none")
        .line("ledger_password_env = \"LEDGER_SECRET\"")
        .write(&dir);
    let run = send(&orphan).expect_exit(78);
    assert!(run.output().contains("ledger is not"), "{run}");
    assert_eq!(server.messages().len(), 1, "a refused run sent");
}

/// A config on `machine` with the top-level `ledger`, the profiles `first` (on
/// `first_port`, 1 s per command) and `second` (on `second_port`), and `routes` as given.
fn with_route(machine: &Machine, first_port: u16, second_port: u16, routes: &str) {
    let dir = machine.home.path().join(".config/envoi");
    fs::create_dir_all(&dir).unwrap();
    let profile = |name: &str, port: u16| {
        format!(
            "[profiles.{name}]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\n\
             from = \"ci@example.com\"\ntimeout_secs = 1\n"
        )
    };
    let text = format!(
        "default = \"mail\"\nledger = \"{}\"\n\n{}\n{}\n{routes}\n",
        ledger_url(),
        profile("first", first_port),
        profile("second", second_port),
    );
    let path = dir.join("config.toml");
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A send through a route (`default` names it) keeps its key in the file's `ledger` as
/// a profile named alone does: the first relay down, the second gets the message once,
/// and another machine with the key is a duplicate.
#[test]
fn a_route_keeps_its_key_in_the_files_ledger() {
    let second = TestServer::start(ServerOptions::default());
    let closed = free_port();
    let send = |machine: &Machine| {
        with_route(
            machine,
            closed,
            second.port(),
            "[routes]\nmail = [\"first\", \"second\"]",
        );
        envoi(machine.home.path())
            .env("PGPASSWORD", LEDGER_PASSWORD)
            .args(["send", "--to", "ops@example.com", "--subject", "routed"])
            .args(["--body", "ok", "--retries", "0", "--json"])
            .args(["--idempotency-key", "routed-key-1"])
            .expect_exit(0)
            .json()
    };
    let first = send(&Machine::new());
    let again = send(&Machine::new());
    assert_eq!(text(&first, "status"), "sent", "{first}");
    assert_eq!(text(&again, "status"), "duplicate", "{again}");
    assert_eq!(second.messages().len(), 1);
}

/// Rules by domain: contoso.com's route is refused (75, temporary) while the other
/// route's server takes the message and never answers after the final dot (unknown).
/// Both are 75; the unknown one is the one told, and the key stays claimed: a second
/// machine sends nothing.
#[test]
fn an_unknown_route_keeps_the_key_whatever_error_is_reported() {
    let second = TestServer::start(ServerOptions {
        hang_after_data: true,
        ..ServerOptions::default()
    });
    let closed = free_port();
    let send = |machine: &Machine| {
        with_route(
            machine,
            closed,
            second.port(),
            "[routes.mail]\n\"*@contoso.com\" = \"first\"\n\"*\" = \"second\"",
        );
        envoi(machine.home.path())
            .env("PGPASSWORD", LEDGER_PASSWORD)
            .args(["send", "--to", "ann@contoso.com;bob@example.org"])
            .args(["--subject", "split", "--body", "ok", "--retries", "0"])
            .args(["--timeout", "4", "--json"])
            .args(["--idempotency-key", "split-key-1"])
            .expect_exit(75)
    };
    let first = send(&Machine::new());
    let j = first.json();
    assert_eq!(text(&j, "kind"), "outcome_unknown", "{j}");
    assert!(
        text(&j, "message").contains("through profile second to bob@example.org"),
        "{j}"
    );
    assert_eq!(second.unacknowledged().len(), 1);
    let again = send(&Machine::new());
    assert_eq!(second.connections(), 1, "a second copy went: {again}");
}

/// A ledger that takes the connection and never answers (a wedged server, a proxy in
/// front of a dead one) is held to the send's deadline: 75 soon after `--timeout`, and
/// nothing sent. The client's own connect timeout covers only the TCP connect.
#[test]
fn a_ledger_that_never_answers_is_75_at_the_deadline() {
    let server = TestServer::start(ServerOptions::default());
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://{LEDGER_USER}@127.0.0.1:{}/postgres?sslmode=disable",
        silent.local_addr().unwrap().port()
    );
    let started = Instant::now();
    let run = Machine::new()
        .send_to(&url, LEDGER_PASSWORD, server.port(), "wedged-1")
        .args(["--timeout", "3"])
        .timeout(Duration::from_secs(30))
        .expect_exit(75);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}: {run}");
    assert!(run.output().contains("did not answer"), "{run}");
    assert_eq!(server.connections(), 0);
}

/// A database name that does not exist is the URL's fault, not the server's: 78 naming
/// it, not 75 "run again once it answers", and nothing sent.
#[test]
fn a_ledger_database_that_does_not_exist_is_78() {
    let server = TestServer::start(ServerOptions::default());
    let url = ledger_url().replace("/postgres?", "/no_such_db?");
    let run = Machine::new()
        .send_to(&url, LEDGER_PASSWORD, server.port(), "no-db-1")
        .expect_exit(78);
    assert!(
        run.output().contains("\"no_such_db\" does not exist"),
        "{run}"
    );
    assert_eq!(server.connections(), 0);
}

/// `policy.max_messages_per_hour` with a shared ledger is counted in the database, so two
/// machines (two outbox folders) meet one cap: of three sends, two go, the third is 75
/// naming the cap and the ledger; a batch on a third machine sends nothing more.
#[test]
fn a_cap_per_hour_is_counted_once_for_every_machine_on_the_ledger() {
    let server = TestServer::start(ServerOptions::default());
    // The profile's name is the scope: unique to this test, as the cluster is shared.
    let profile = format!("capped{}", std::process::id());
    let configure = |host: &Machine| {
        let dir = host.home.path().join(".config/envoi");
        fs::create_dir_all(&dir).unwrap();
        let path = Config::new(server.port(), "none")
            .line(&format!("ledger = \"{}\"", ledger_url()))
            .line("[profiles.test.policy]\nmax_messages_per_hour = 2")
            .write(&dir);
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("profiles.test", &format!("profiles.{profile}"))
            .replace("default = \"test\"", &format!("default = \"{profile}\""));
        fs::write(&path, text).unwrap();
    };
    let send = |host: &Machine, n: u32| {
        let mut cmd = envoi(host.home.path());
        cmd.env("PGPASSWORD", LEDGER_PASSWORD)
            .args([
                "send",
                "--from",
                "ci@example.com",
                "--to",
                "ops@example.com",
            ])
            .args([
                "--subject",
                &format!("run {n}"),
                "--body",
                "ok",
                "--retries",
                "0",
            ]);
        cmd
    };
    let (a, b, c) = (Machine::new(), Machine::new(), Machine::new());
    for host in [&a, &b, &c] {
        configure(host);
    }
    send(&a, 1).expect_exit(0);
    send(&b, 2).expect_exit(0);
    let third = send(&a, 3).expect_exit(75);
    assert!(
        third.output().contains("max_messages_per_hour 2 reached")
            && third.output().contains("by the ledger at"),
        "{third}"
    );
    assert_no_ledger_password(&third);
    let records = c.home.path().join("records.jsonl");
    fs::write(
        &records,
        "{\"To\":\"x@example.com\",\"Subject\":\"s\",\"Body\":\"b\"}\n",
    )
    .unwrap();
    let batch = envoi(c.home.path())
        .env("PGPASSWORD", LEDGER_PASSWORD)
        .args(["batch", "--from", "ci@example.com", "--retries", "0"])
        .arg(&records)
        .expect_exit(75);
    assert!(batch.output().contains("reached"), "{batch}");
    assert_eq!(server.messages().len(), 2, "{batch}");
}

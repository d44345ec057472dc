//! One batch split across many workers (`envoi batch --ledger postgres://… --campaign`):
//! several envoi processes at once over the same input, against the private PostgreSQL
//! cluster of `support::postgres` and the in-process SMTP server, which tells each
//! message's recipient, so "every record delivered exactly once" is counted, not assumed.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::envoi::{ExpectExit, Run, envoi, hermetic_env, wait_bounded};
use crate::support::postgres::{LEDGER_PASSWORD, LEDGER_USER, cluster, free_port, ledger_url};
use crate::support::smtp_server::{Received, ServerOptions, TestServer};

/// A folder with the input, and each worker's report and output.
struct Fleet {
    dir: TempDir,
    input: PathBuf,
    /// The workers' `--ledger`: the test cluster's, unless a test puts a proxy before it.
    ledger: String,
}

impl Fleet {
    /// `mail.jsonl` with `n` records, record i to `r{i}@example.com`.
    fn new(n: u32) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("mail.jsonl");
        let mut text = String::with_capacity(n as usize * 90);
        for i in 1..=n {
            text.push_str(&format!(
                "{{\"To\":\"r{i}@example.com\",\"Subject\":\"m{i}\",\"Body\":\"record {i}\"}}\n"
            ));
        }
        fs::write(&input, text).unwrap();
        Fleet {
            dir,
            input,
            ledger: ledger_url(),
        }
    }

    /// `envoi batch` as worker `name` of `campaign` into the server on `port`, with its own
    /// HOME (its own machine) and report.
    fn args(&self, name: &str, port: u16, campaign: &str, extra: &[&str]) -> Vec<OsString> {
        let home = self.home(name);
        let mut args: Vec<OsString> = vec![
            "batch".into(),
            self.input.clone().into(),
            "--smtp-url".into(),
            format!("smtp://127.0.0.1:{port}?security=none").into(),
            "--from".into(),
            "fleet@example.com".into(),
            "--ledger".into(),
            self.ledger.clone().into(),
            "--campaign".into(),
            campaign.into(),
            "--report".into(),
            home.join("report.jsonl").into(),
            "--timeout".into(),
            "2".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        args
    }

    fn home(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        fs::create_dir_all(&home).unwrap();
        home
    }

    /// Starts worker `name` in the background.
    fn spawn(&self, name: &str, port: u16, campaign: &str, extra: &[&str]) -> Child {
        let home = self.home(name);
        let out = |file: &str| File::create(home.join(file)).unwrap();
        std::process::Command::new(assert_cmd::cargo::cargo_bin("envoi"))
            .env_clear()
            .envs(hermetic_env(&home))
            .env("PGPASSWORD", LEDGER_PASSWORD)
            .args(self.args(name, port, campaign, extra))
            .stdin(Stdio::null())
            .stdout(out("stdout"))
            .stderr(out("stderr"))
            .spawn()
            .expect("spawn envoi")
    }

    /// Runs worker `name` to its end.
    fn run(&self, name: &str, port: u16, campaign: &str, extra: &[&str]) -> Run {
        let mut child = self.spawn(name, port, campaign, extra);
        let status = wait_bounded(&mut child, 60);
        self.finished(name, status)
    }

    fn finished(&self, name: &str, status: ExitStatus) -> Run {
        let home = self.home(name);
        let read = |file: &str| fs::read_to_string(home.join(file)).unwrap_or_default();
        Run::new(
            format!("worker {name}"),
            status,
            read("stdout"),
            read("stderr"),
        )
    }

    /// Worker `name`'s result lines.
    fn report(&self, name: &str) -> Vec<Value> {
        fs::read_to_string(self.home(name).join("report.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// `envoi batch --status --json` of `campaign`, with the input.
    fn status(&self, campaign: &str) -> Value {
        let home = self.home("status");
        let run = envoi(&home)
            .env("PGPASSWORD", LEDGER_PASSWORD)
            .args(["batch", "--status", "--json", "--campaign", campaign])
            .arg("--ledger")
            .arg(ledger_url())
            .arg(&self.input)
            .expect_exit(0);
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|_| panic!("{run}"))
    }
}

/// How many messages each recipient got, over all `servers`.
fn deliveries(servers: &[&TestServer]) -> HashMap<String, u32> {
    let mut seen = HashMap::new();
    for server in servers {
        for m in server.messages() {
            let Received { rcpt_to, .. } = m;
            for to in rcpt_to {
                *seen.entry(to).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// The count of `status` in result lines.
fn count(lines: &[Value], status: &str) -> usize {
    lines.iter().filter(|l| l["status"] == status).count()
}

/// Every recipient of records `1..=n` has exactly one message, but those in `except`.
#[track_caller]
fn exactly_once(seen: &HashMap<String, u32>, n: u32, except: &[String]) {
    let wrong: Vec<String> = (1..=n)
        .map(|i| format!("r{i}@example.com"))
        .filter(|to| !except.contains(to))
        .filter(|to| seen.get(to).copied().unwrap_or(0) != 1)
        .map(|to| format!("{to}: {}", seen.get(&to).copied().unwrap_or(0)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} record(s) not delivered exactly once, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// The fleet: three workers started at once on the same 10,000 records, each
/// with two SMTP sessions, deliver every record exactly once; the status counts them all
/// sent and none pending.
#[test]
fn three_workers_deliver_every_record_once() {
    const N: u32 = 10_000;
    cluster();
    let server = TestServer::start(ServerOptions::default());
    let fleet = Fleet::new(N);
    let started = Instant::now();
    let mut workers: Vec<(String, Child)> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let child = fleet.spawn(name, server.port(), "ten-thousand", &["--concurrency", "2"]);
            (name.to_string(), child)
        })
        .collect();
    let mut sent = 0;
    for (name, child) in &mut workers {
        let status = wait_bounded(child, 120);
        let run = fleet.finished(name, status).expect(0);
        let lines = fleet.report(name);
        assert_eq!(lines.len(), N as usize, "worker {name} lists every record");
        assert_eq!(
            count(&lines, "sent") + count(&lines, "duplicate"),
            N as usize,
            "worker {name}: {run}"
        );
        assert!(count(&lines, "sent") > 0, "worker {name} sent nothing");
        sent += count(&lines, "sent");
    }
    let elapsed = started.elapsed();
    eprintln!(
        "three workers, {N} records: {:.1} s, {:.0} records/s",
        elapsed.as_secs_f64(),
        f64::from(N) / elapsed.as_secs_f64()
    );
    assert_eq!(
        sent, N as usize,
        "the workers' sent lines add up to the input"
    );
    exactly_once(&deliveries(&[&server]), N, &[]);
    assert_eq!(server.messages().len(), N as usize);
    let status = fleet.status("ten-thousand");
    assert_eq!(status["sent"], N, "{status}");
    assert_eq!(status["pending"], 0, "{status}");
    assert_eq!(status["unknown"], 0, "{status}");
    assert_eq!(status["in_flight"], 0, "{status}");
    // A fourth worker later sends nothing: every record is the campaign's already.
    let late = fleet.run("d", server.port(), "ten-thousand", &[]).expect(0);
    assert_eq!(server.messages().len(), N as usize, "{late}");
}

/// A worker SIGKILLed mid-run: the records it was sending are `unknown` once its lease
/// passes (never sent again by the others, nor by a re-run), every other record goes
/// exactly once; `--resend-unknown` then sends the unknown ones.
#[test]
fn a_killed_workers_records_are_unknown_until_resent_by_name() {
    const N: u32 = 1_500;
    cluster();
    // The victim sends into a slow server, so it is mid-send when it is killed.
    let slow = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(40)),
        ..ServerOptions::default()
    });
    let server = TestServer::start(ServerOptions::default());
    let fleet = Fleet::new(N);
    let campaign = "killed-worker";
    let mut victim = fleet.spawn("victim", slow.port(), campaign, &["--concurrency", "2"]);
    let until = Instant::now() + Duration::from_secs(20);
    while slow.messages().len() < 4 {
        assert!(Instant::now() < until, "the victim sent nothing");
        thread::sleep(Duration::from_millis(10));
    }
    let mut survivors: Vec<(&str, Child)> = ["s1", "s2"]
        .into_iter()
        .map(|name| (name, fleet.spawn(name, server.port(), campaign, &[])))
        .collect();
    thread::sleep(Duration::from_millis(100));
    // SIGKILL: no handler runs, the claims it holds stay in the ledger.
    victim.kill().unwrap();
    victim.wait().unwrap();
    for (name, child) in &mut survivors {
        let status = wait_bounded(child, 60);
        let run = fleet.finished(name, status);
        // 0, or 75 when it met the victim's claims after their lease.
        assert!(
            matches!(status.code(), Some(0 | 75)),
            "survivor {name}: {run}"
        );
    }
    // Past the victim's lease (--timeout 2 + 5 s of grace) nothing is in flight.
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = fleet.status(campaign);
        if status["in_flight"] == 0 {
            break status;
        }
        assert!(Instant::now() < until, "still in flight: {status}");
        thread::sleep(Duration::from_millis(500));
    };
    let unknown = status["unknown"].as_u64().unwrap();
    assert!((1..=2).contains(&unknown), "{status}");
    assert_eq!(status["pending"], 0, "{status}");
    assert_eq!(
        status["sent"].as_u64().unwrap() + unknown,
        u64::from(N),
        "{status}"
    );
    // A re-run sends nothing and names the unknown records, with their recipients.
    let rerun = fleet.run("rerun", server.port(), campaign, &[]).expect(75);
    let lines = fleet.report("rerun");
    assert_eq!(count(&lines, "sent"), 0, "{rerun}");
    let unknown_to: Vec<String> = lines
        .iter()
        .filter(|l| l["status"] == "unknown")
        .map(|l| l["recipients"][0]["address"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(unknown_to.len() as u64, unknown, "{rerun}");
    assert!(
        lines
            .iter()
            .filter(|l| l["status"] == "unknown")
            .all(|l| l["error"].as_str().unwrap().contains("--resend-unknown")),
        "{lines:?}"
    );
    let before = deliveries(&[&slow, &server]);
    exactly_once(&before, N, &unknown_to);
    for to in &unknown_to {
        assert!(before.get(to).copied().unwrap_or(0) <= 1, "{to}");
    }
    // Asked for by name, they go (again, if the victim got them out).
    let fast_before = server.messages().len();
    let resend = fleet
        .run("resend", server.port(), campaign, &["--resend-unknown"])
        .expect(0);
    assert_eq!(
        count(&fleet.report("resend"), "sent") as u64,
        unknown,
        "{resend}"
    );
    let fresh: Vec<String> = server.messages()[fast_before..]
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    let mut expected = unknown_to.clone();
    expected.sort();
    let mut got = fresh.clone();
    got.sort();
    assert_eq!(
        got, expected,
        "--resend-unknown sends exactly the unknown records"
    );
    let status = fleet.status(campaign);
    assert_eq!(status["sent"], N, "{status}");
    assert_eq!(status["unknown"], 0, "{status}");
}

/// The flags' rules: a campaign needs a ledger, batch's --ledger needs a campaign (both
/// 64 naming both flags); an unreachable ledger is 75 with nothing sent, for a batch and
/// for --status. (clap's usage errors are 64 too.)
#[test]
fn campaign_flags_and_an_unreachable_ledger() {
    let server = TestServer::start(ServerOptions::default());
    let fleet = Fleet::new(3);
    let home = fleet.home("flags");
    let smtp = format!("smtp://127.0.0.1:{}?security=none", server.port());
    let base = |cmd: &mut assert_cmd::Command| {
        cmd.arg("batch").arg(&fleet.input).args([
            "--smtp-url",
            &smtp,
            "--from",
            "fleet@example.com",
        ]);
    };
    let mut cmd = envoi(&home);
    base(&mut cmd);
    let run = cmd.args(["--campaign", "x"]).expect_exit(64);
    assert!(
        run.stderr.contains("--campaign") && run.stderr.contains("--ledger"),
        "{run}"
    );
    let mut cmd = envoi(&home);
    base(&mut cmd);
    let run = cmd.args(["--ledger", &ledger_url()]).expect_exit(64);
    assert!(run.stderr.contains("--campaign"), "{run}");
    let mut cmd = envoi(&home);
    base(&mut cmd);
    let run = cmd.args(["--resend-unknown"]).expect_exit(64);
    assert!(run.stderr.contains("--campaign"), "{run}");
    let down = format!(
        "postgres://{LEDGER_USER}@127.0.0.1:{}/postgres?sslmode=disable",
        free_port()
    );
    let mut cmd = envoi(&home);
    base(&mut cmd);
    let run = cmd
        .env("PGPASSWORD", LEDGER_PASSWORD)
        .args(["--campaign", "x", "--ledger", &down])
        .expect_exit(75);
    assert!(run.stderr.contains("nothing was sent"), "{run}");
    assert!(server.messages().is_empty());
    let run = envoi(&home)
        .env("PGPASSWORD", LEDGER_PASSWORD)
        .args(["batch", "--status", "--campaign", "x", "--ledger", &down])
        .expect_exit(75);
    assert!(!run.output().contains(LEDGER_PASSWORD), "{run}");
    // A dry run connects to no ledger.
    let mut cmd = envoi(&home);
    base(&mut cmd);
    cmd.args(["--campaign", "x", "--ledger", &down, "--dry-run"])
        .expect_exit(0);
}

/// A ledger made by an envoi of schema version 1 (idempotency keys only) gets the batch's
/// tables on first use by `batch --campaign`, as a part of their own: its version stays 1
/// (so an envoi that knows only version 1 keeps using it), its keys kept.
#[test]
fn a_version_1_ledger_is_upgraded_and_keeps_its_keys() {
    let port = cluster().port;
    let connect = |db: &str| {
        postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={port} user={LEDGER_USER} password={LEDGER_PASSWORD} \
                 dbname={db}"
            ),
            postgres::NoTls,
        )
        .unwrap()
    };
    let mut admin = connect("postgres");
    admin
        .batch_execute("DROP DATABASE IF EXISTS envoi_v1")
        .unwrap();
    admin.batch_execute("CREATE DATABASE envoi_v1").unwrap();
    let mut v1 = connect("envoi_v1");
    v1.batch_execute(
        "CREATE TABLE envoi_schema_version (version integer NOT NULL);
         INSERT INTO envoi_schema_version VALUES (1);
         CREATE TABLE envoi_idempotency (key text PRIMARY KEY, claimed_by text NOT NULL,
             claimed_at timestamptz NOT NULL, claim_deadline timestamptz NOT NULL,
             message_id text, status text, recorded_at timestamptz);
         INSERT INTO envoi_idempotency VALUES ('old-key', 'old host', now(), now(),
             '<old@example.com>', 'sent', now());",
    )
    .unwrap();
    let server = TestServer::start(ServerOptions::default());
    let fleet = Fleet::new(5);
    let url = format!("postgres://{LEDGER_USER}@127.0.0.1:{port}/envoi_v1?sslmode=disable");
    let home = fleet.home("v1");
    let run = envoi(&home)
        .env("PGPASSWORD", LEDGER_PASSWORD)
        .arg("batch")
        .arg(&fleet.input)
        .args([
            "--smtp-url",
            &format!("smtp://127.0.0.1:{}?security=none", server.port()),
            "--from",
            "fleet@example.com",
            "--campaign",
            "upgraded",
            "--ledger",
            &url,
        ])
        .expect_exit(0);
    assert_eq!(server.messages().len(), 5, "{run}");
    let version: i32 = v1
        .query_one("SELECT max(version) FROM envoi_schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        version, 1,
        "a version 1 envoi reads this and must not refuse it"
    );
    let part: i32 = v1
        .query_one(
            "SELECT version FROM envoi_schema_parts WHERE part = 'batch'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(part, 1);
    // The version 1 key still answers: a send with it is a duplicate.
    let run = envoi(&home)
        .env("PGPASSWORD", LEDGER_PASSWORD)
        .env("ENVOI_LEDGER", &url)
        .args([
            "send",
            "--smtp-url",
            &format!("smtp://127.0.0.1:{}?security=none", server.port()),
            "--from",
            "ci@example.com",
            "--to",
            "dev@example.com",
            "--subject",
            "s",
            "--body",
            "b",
            "--json",
            "--idempotency-key",
            "old-key",
        ])
        .expect_exit(0);
    assert!(run.stdout.contains("duplicate"), "{run}");
    assert_eq!(server.messages().len(), 5);
}

/// `--rate` holds for the whole fleet: three workers, each given `--rate 20/s`, deliver
/// at 20 messages a second in all (measured at the server: no second holds more than 20
/// and a little jitter, and the whole run is not much slower than 20/s either).
#[test]
fn the_rate_holds_across_three_workers() {
    const N: u32 = 90;
    const RATE: f64 = 20.0;
    cluster();
    let server = TestServer::start(ServerOptions::default());
    let fleet = Fleet::new(N);
    let mut workers: Vec<(&str, Child)> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let child = fleet.spawn(name, server.port(), "paced", &["--rate", "20/s"]);
            (name, child)
        })
        .collect();
    for (name, child) in &mut workers {
        let status = wait_bounded(child, 60);
        let run = fleet.finished(name, status).expect(0);
        assert!(count(&fleet.report(name), "sent") > 0, "{run}");
    }
    let mut at: Vec<Instant> = server.messages().iter().map(|m| m.at).collect();
    assert_eq!(at.len(), N as usize);
    exactly_once(&deliveries(&[&server]), N, &[]);
    at.sort();
    let span = (at[at.len() - 1] - at[0]).as_secs_f64();
    let measured = f64::from(N - 1) / span;
    eprintln!("three workers at --rate 20/s: {measured:.1} messages/s at the server");
    // Three workers each at 20/s would be 60/s.
    assert!(
        measured <= RATE * 1.1,
        "{measured:.1}/s over the fleet's 20/s"
    );
    assert!(measured >= RATE * 0.7, "{measured:.1}/s: far under 20/s");
    // No one-second window holds much more than 20 (a message's own transit jitters).
    let most = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t - at[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(most <= 23, "{most} messages within one second");
}

/// A record deferred after its retries frees its claim, so the next run of the campaign
/// sends it; one refused for good is failed and no run sends it again. The re-run here
/// also gives `--resume` over its own report: the two skip lists agree.
#[test]
fn a_deferred_record_is_retried_by_the_next_run_a_refused_one_never() {
    cluster();
    let server = TestServer::start(ServerOptions {
        tempfail_transactions: 1,
        refuse_rcpt: vec![("r3@example.com".into(), 550)],
        ..ServerOptions::default()
    });
    let fleet = Fleet::new(5);
    let campaign = "deferred-and-refused";
    let first = fleet
        .run("w", server.port(), campaign, &["--retries", "0"])
        .expect(75);
    let lines = fleet.report("w");
    assert_eq!(count(&lines, "deferred"), 1, "{first}");
    assert_eq!(count(&lines, "refused"), 1, "{first}");
    let status = fleet.status(campaign);
    assert_eq!(status["sent"], 3, "{status}");
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(status["pending"], 1, "{status}");
    assert_eq!(status["unknown"], 0, "{status}");
    let report = fleet.home("w").join("report.jsonl");
    let again = fleet
        .run(
            "w",
            server.port(),
            campaign,
            &["--resume", report.to_str().unwrap()],
        )
        .expect(0);
    let got: Vec<String> = server
        .messages()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    assert_eq!(got.len(), 4, "{again}");
    assert_eq!(
        got[3], "r1@example.com",
        "only the deferred record went again"
    );
    let status = fleet.status(campaign);
    assert_eq!(status["sent"], 4, "{status}");
    assert_eq!(status["failed"], 1, "{status}");
    assert_eq!(status["pending"], 0, "{status}");
    // Without --json, one line; without FILE, no pending count (`null` in JSON).
    let home = fleet.home("status");
    let text = envoi(&home)
        .env("PGPASSWORD", LEDGER_PASSWORD)
        .args(["batch", "--status", "--campaign", campaign, "--ledger"])
        .arg(ledger_url())
        .expect_exit(0);
    assert!(
        text.stdout
            .starts_with(&format!("campaign {campaign} (ledger 127.0.0.1:"))
            && text
                .stdout
                .contains("4 sent, 1 failed, 0 unknown, 0 in flight\n"),
        "{text}"
    );
    let json = envoi(&home)
        .env("PGPASSWORD", LEDGER_PASSWORD)
        .args([
            "batch",
            "--status",
            "--json",
            "--campaign",
            campaign,
            "--ledger",
        ])
        .arg(ledger_url())
        .expect_exit(0);
    assert!(json.stdout.contains("\"pending\":null"), "{json}");
}

/// A connection to the test cluster's `postgres` database, as its owner.
fn admin() -> postgres::Client {
    let port = cluster().port;
    postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={port} user={LEDGER_USER} password={LEDGER_PASSWORD} \
             dbname=postgres"
        ),
        postgres::NoTls,
    )
    .unwrap()
}

/// Waits (at most 30 s) until `campaign` has a claim without outcome that was taken at
/// least `age` ago (the database's clock); its line.
fn claim_waiting(db: &mut postgres::Client, campaign: &str, age: f64) -> i64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let row = db
            .query_opt(
                "SELECT line FROM envoi_batch_records WHERE campaign = $1 \
                 AND outcome IS NULL AND now() - claimed_at >= make_interval(secs => $2)",
                &[&campaign, &age],
            )
            // No table yet: the workers are still starting.
            .unwrap_or_default();
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            Instant::now() < until,
            "no claim of {campaign} waited {age} s"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A worker waiting for its turn in a slow fleet `--rate` keeps its claim: the lease
/// (--timeout 2 + 5 s) is extended over the wait (12 s at 5/m) before it sleeps, so a
/// third worker started with --resend-unknown once the plain lease would have passed
/// finds the record in flight, and every record goes exactly once. (Before the fix the
/// claim passed during the sleep, the third worker took it over, and both sent it.)
#[test]
fn a_claim_outlives_its_wait_for_the_fleets_rate() {
    let mut db = admin();
    let server = TestServer::start(ServerOptions::default());
    let fleet = Fleet::new(2);
    let campaign = "slow-rate-lease";
    let mut workers: Vec<(&str, Child)> = ["a", "b"]
        .into_iter()
        .map(|name| {
            (
                name,
                fleet.spawn(name, server.port(), campaign, &["--rate", "5/m"]),
            )
        })
        .collect();
    // Past the plain lease (7 s) of the claim that waits for the second token.
    claim_waiting(&mut db, campaign, 8.0);
    let third = fleet.run(
        "c",
        server.port(),
        campaign,
        &["--rate", "5/m", "--resend-unknown"],
    );
    for (name, child) in &mut workers {
        let status = wait_bounded(child, 60);
        fleet.finished(name, status).expect(0);
    }
    let seen = deliveries(&[&server]);
    exactly_once(&seen, 2, &[]);
    assert_eq!(server.messages().len(), 2, "{third}");
    let status = fleet.status(campaign);
    assert_eq!(status["sent"], 2, "{status}");
    assert_eq!(status["unknown"], 0, "{status}");
}

/// A claim that is no longer this worker's when its wait for the fleet's `--rate` ends
/// (its row taken over, here by hand) is not sent: the renewal just before the send is
/// a fence, and the record's line says who has it.
#[test]
fn a_claim_lost_during_the_wait_is_not_sent() {
    let mut db = admin();
    let server = TestServer::start(ServerOptions::default());
    let fleet = Fleet::new(2);
    let campaign = "lost-claim";
    let mut child = fleet.spawn("w", server.port(), campaign, &["--rate", "5/m"]);
    let line = claim_waiting(&mut db, campaign, 0.5);
    let taken = db
        .execute(
            "UPDATE envoi_batch_records SET claimed_by = 'intruder pid 1', \
             lease_until = now() + interval '1 minute' \
             WHERE campaign = $1 AND line = $2",
            &[&campaign, &line],
        )
        .unwrap();
    assert_eq!(taken, 1);
    let status = wait_bounded(&mut child, 60);
    let run = fleet.finished("w", status).expect(0);
    let lines = fleet.report("w");
    let lost = lines
        .iter()
        .find(|l| l["line"] == line)
        .unwrap_or_else(|| panic!("{run}"));
    assert_eq!(lost["status"], "duplicate", "{lost}");
    assert!(
        lost["note"]
            .as_str()
            .unwrap_or_default()
            .contains("claim lost to worker intruder pid 1; not sent"),
        "{lost}"
    );
    assert_eq!(server.messages().len(), 1, "{run}");
    let row = db
        .query_one(
            "SELECT claimed_by, outcome FROM envoi_batch_records \
             WHERE campaign = $1 AND line = $2",
            &[&campaign, &line],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "intruder pid 1");
    assert_eq!(row.get::<_, Option<String>>(1), None);
}

/// A TCP proxy before the test cluster, as a pooler or a proxy would be: it forwards
/// both ways until `stall` is set, then reads on and drops everything, so the client's
/// bytes are still acknowledged (no `tcp_user_timeout` fires) while the server never
/// sees them (no `statement_timeout` either). Its port.
fn stalling_proxy(stall: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = cluster().port;
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", server)) else {
                continue;
            };
            for (from, to) in [
                (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                (upstream, client),
            ] {
                let stall = stall.clone();
                thread::spawn(move || pump(from, to, &stall));
            }
        }
    });
    port
}

/// Copies `from` to `to` until either ends (then both are shut), dropping what it reads
/// once `stall` is set.
fn pump(mut from: TcpStream, mut to: TcpStream, stall: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !stall.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A ledger that stops answering mid-run (after the connection was made, so only the
/// client can tell) stops the worker with 75 within about its --timeout, naming the
/// ledger and what it was doing, instead of hanging for ever.
#[test]
fn a_ledger_that_stalls_mid_run_stops_the_batch_with_75() {
    cluster();
    let stall = Arc::new(AtomicBool::new(false));
    let port = stalling_proxy(stall.clone());
    let server = TestServer::start(ServerOptions::default());
    let mut fleet = Fleet::new(3_000);
    fleet.ledger = format!("postgres://{LEDGER_USER}@127.0.0.1:{port}/postgres?sslmode=disable");
    let mut child = fleet.spawn("w", server.port(), "stalled-ledger", &[]);
    let until = Instant::now() + Duration::from_secs(30);
    while server.messages().len() < 20 {
        assert!(Instant::now() < until, "the worker sent nothing");
        thread::sleep(Duration::from_millis(5));
    }
    stall.store(true, Ordering::SeqCst);
    let stalled = Instant::now();
    // --timeout 2: a claim waits 2 s, an outcome 5 s.
    let status = wait_bounded(&mut child, 20);
    let took = stalled.elapsed();
    let run = fleet.finished("w", status).expect(75);
    assert!(took < Duration::from_secs(12), "{took:?}: {run}");
    assert!(
        run.stderr.contains(&format!(
            "the ledger at 127.0.0.1:{port}/postgres did not answer within"
        )),
        "{run}"
    );
    assert!(run.stderr.contains("nothing more was sent"), "{run}");
    assert!(server.messages().len() < 3_000, "{run}");
    assert!(!run.output().contains(LEDGER_PASSWORD), "{run}");
}

/// Sends one message with `--idempotency-key key` through the ledger `url` as the user
/// whose password is `password`.
fn send_with_key(
    home: &std::path::Path,
    url: &str,
    password: &str,
    port: u16,
    key: &str,
) -> assert_cmd::Command {
    let mut cmd = envoi(home);
    cmd.env("PGPASSWORD", password)
        .env("ENVOI_LEDGER", url)
        .args([
            "send",
            "--smtp-url",
            &format!("smtp://127.0.0.1:{port}?security=none"),
            "--from",
            "ci@example.com",
            "--to",
            "dev@example.com",
            "--subject",
            "s",
            "--body",
            "b",
            "--idempotency-key",
            key,
        ]);
    cmd
}

/// A user with rights on the tables but no CREATE right (PostgreSQL 15's default on
/// `public`): `send` uses the idempotency tables the owner made and never makes or
/// changes anything else (the database stays version 1, without the batch's tables); a
/// missing right is 78 with the grant to give, never the password; `batch --campaign`
/// works once the owner has made the batch's tables.
#[test]
fn a_user_without_create_rights_sends_through_the_owners_tables() {
    const CLERK_PASSWORD: &str = "Clerk-Canary-71c0";
    let port = cluster().port;
    let connect = |db: &str| {
        postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={port} user={LEDGER_USER} password={LEDGER_PASSWORD} \
                 dbname={db}"
            ),
            postgres::NoTls,
        )
        .unwrap()
    };
    let mut admin = connect("postgres");
    admin
        .batch_execute("DROP DATABASE IF EXISTS envoi_dml")
        .unwrap();
    admin.batch_execute("CREATE DATABASE envoi_dml").unwrap();
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'clerk') THEN
                     CREATE ROLE clerk LOGIN PASSWORD '{CLERK_PASSWORD}';
                 END IF;
             END $$;"
        ))
        .unwrap();
    let mut db = connect("envoi_dml");
    db.batch_execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .unwrap();
    let grant = "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO clerk";
    let server = TestServer::start(ServerOptions::default());
    let fleet = Fleet::new(3);
    let home = fleet.home("clerk");
    let owner = format!("postgres://{LEDGER_USER}@127.0.0.1:{port}/envoi_dml?sslmode=disable");
    let clerk = format!("postgres://clerk@127.0.0.1:{port}/envoi_dml?sslmode=disable");
    // No tables yet, and no right to make them: 78, saying what to grant.
    let run = send_with_key(&home, &clerk, CLERK_PASSWORD, server.port(), "k1").expect_exit(78);
    assert!(
        run.stderr.contains("GRANT SELECT, INSERT, UPDATE, DELETE"),
        "{run}"
    );
    assert!(!run.output().contains(CLERK_PASSWORD), "{run}");
    assert!(server.messages().is_empty());
    // The owner's first send makes the idempotency tables, and nothing of the batch.
    send_with_key(&home, &owner, LEDGER_PASSWORD, server.port(), "k0").expect_exit(0);
    let row = db
        .query_one(
            "SELECT (SELECT max(version) FROM envoi_schema_version), \
             to_regclass('envoi_batch_records') IS NULL, \
             to_regclass('envoi_schema_parts') IS NULL",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(row.get::<_, bool>(1) && row.get::<_, bool>(2));
    db.batch_execute(grant).unwrap();
    // With rights on the tables, the clerk sends, once.
    let run = send_with_key(&home, &clerk, CLERK_PASSWORD, server.port(), "k1").expect_exit(0);
    assert_eq!(server.messages().len(), 2, "{run}");
    let run = send_with_key(&home, &clerk, CLERK_PASSWORD, server.port(), "k1").expect_exit(0);
    assert_eq!(server.messages().len(), 2, "{run}");
    let version: i32 = db
        .query_one("SELECT max(version) FROM envoi_schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, 1);
    // A campaign needs the batch's tables, which the clerk cannot make: 78 again.
    let batch = |url: &str, password: &str, campaign: &str| {
        let mut cmd = envoi(&home);
        cmd.env("PGPASSWORD", password)
            .arg("batch")
            .arg(&fleet.input)
            .args([
                "--smtp-url",
                &format!("smtp://127.0.0.1:{}?security=none", server.port()),
                "--from",
                "fleet@example.com",
                "--campaign",
                campaign,
                "--ledger",
                url,
            ]);
        cmd
    };
    let run = batch(&clerk, CLERK_PASSWORD, "clerks").expect_exit(78);
    assert!(run.stderr.contains("--campaign"), "{run}");
    assert_eq!(server.messages().len(), 2, "{run}");
    // Once the owner's run has made them (and granted them), the clerk's campaign goes.
    batch(&owner, LEDGER_PASSWORD, "owners").expect_exit(0);
    db.batch_execute(grant).unwrap();
    let run = batch(&clerk, CLERK_PASSWORD, "clerks").expect_exit(0);
    assert_eq!(server.messages().len(), 8, "{run}");
}

/// A worker whose second connection (outcomes) breaks while it sends writes the
/// record's outcome over its claims connection instead: the record is `sent` in the
/// ledger, not left `unknown` for every later run, and the worker exits 0.
#[test]
fn an_outcome_is_written_over_the_claims_connection_when_the_other_breaks() {
    // A database of its own: no other test's connections are cut.
    let mut admin = admin();
    admin
        .batch_execute("DROP DATABASE IF EXISTS envoi_outcome")
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE envoi_outcome")
        .unwrap();
    let port = cluster().port;
    let mut db = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={port} user={LEDGER_USER} password={LEDGER_PASSWORD} \
             dbname=envoi_outcome"
        ),
        postgres::NoTls,
    )
    .unwrap();
    // The session opens at the record's send: the greeting's delay is the window in
    // which the outcomes connection is cut.
    let server = TestServer::start(ServerOptions {
        delay_greeting: Some(Duration::from_millis(1500)),
        ..ServerOptions::default()
    });
    let mut fleet = Fleet::new(1);
    fleet.ledger =
        format!("postgres://{LEDGER_USER}@127.0.0.1:{port}/envoi_outcome?sslmode=disable");
    let campaign = "outcome-retried";
    let mut child = fleet.spawn("w", server.port(), campaign, &[]);
    claim_waiting(&mut db, campaign, 0.0);
    // The outcomes connection has run nothing but its SET since it connected.
    let cut = db
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = 'envoi_outcome' AND application_name = 'envoi' \
             AND query = 'SET synchronous_commit = off'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(cut, 1);
    let status = wait_bounded(&mut child, 30);
    let run = fleet.finished("w", status).expect(0);
    assert_eq!(server.messages().len(), 1, "{run}");
    let row = db
        .query_one(
            "SELECT outcome FROM envoi_batch_records WHERE campaign = $1",
            &[&campaign],
        )
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("sent"),
        "{run}"
    );
}

/// A record whose claim keeps slipping (claimed and freed by others five times in a row;
/// here a trigger drops every insert, which looks the same to the claimer) is listed
/// `deferred` and not sent, and the worker goes on with the next records instead of
/// stopping.
#[test]
fn a_record_whose_claim_keeps_slipping_is_deferred_and_the_batch_goes_on() {
    let mut admin = admin();
    admin
        .batch_execute("DROP DATABASE IF EXISTS envoi_slipping")
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE envoi_slipping")
        .unwrap();
    let port = cluster().port;
    let server = TestServer::start(ServerOptions::default());
    let mut fleet = Fleet::new(3);
    fleet.ledger =
        format!("postgres://{LEDGER_USER}@127.0.0.1:{port}/envoi_slipping?sslmode=disable");
    // A first run makes the tables.
    fleet.run("first", server.port(), "warm-up", &[]).expect(0);
    let mut db = postgres::Client::connect(
        &format!(
            "host=127.0.0.1 port={port} user={LEDGER_USER} password={LEDGER_PASSWORD} \
             dbname=envoi_slipping"
        ),
        postgres::NoTls,
    )
    .unwrap();
    db.batch_execute(
        "CREATE FUNCTION envoi_test_drop() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RETURN NULL; END $$;
         CREATE TRIGGER envoi_test_drop BEFORE INSERT ON envoi_batch_records
             FOR EACH ROW EXECUTE FUNCTION envoi_test_drop();",
    )
    .unwrap();
    let run = fleet.run("w", server.port(), "slipping", &[]).expect(75);
    let lines = fleet.report("w");
    assert_eq!(count(&lines, "deferred"), 3, "{run}");
    assert!(
        lines.iter().all(|l| l["error"]
            .as_str()
            .unwrap_or_default()
            .contains("five times in a row")),
        "{lines:?}"
    );
    assert_eq!(server.messages().len(), 3, "only the warm-up's: {run}");
}

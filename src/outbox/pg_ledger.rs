//! The idempotency ledger in PostgreSQL (`ledger = "postgres://USER@HOST:PORT/DB"`), for
//! senders on many machines (CI runners that start empty, a fleet of cron hosts): the
//! same answers as the file ledger, made with the database's own primitives.
//!
//! - A key is claimed BEFORE the message goes, by inserting its row under the table's
//!   primary key (`INSERT … ON CONFLICT DO NOTHING`): of two senders, exactly one
//!   inserts. The row names the claimer (host, pid) and when its deadline ends.
//! - The outcome (Message-ID, status) is written into that row after the send; a send
//!   that surely did not go deletes its claim, so the key can be used again.
//! - Another sender with the key polls the row until its own deadline: an outcome is a
//!   `duplicate` of it; a claim whose claimer's deadline passed without an outcome is
//!   `unknown` (75: the claimer died mid-send, the message may have gone); never a
//!   second send.
//! - Rows past the retention window (7 days) are deleted by each claim, not a daemon.
//! - Every time is the database's clock (`now()`), so the machines' clocks need not agree.
//! - The tables are made on first use, in a transaction under an advisory lock (two
//!   first senders at once), with a schema version in `envoi_schema_version`.
//!
//! The URL carries no password: it shows in `ps`, shell history and CI logs. The
//! password comes from `$PGPASSWORD`, as for libpq's own tools (`psql`), and is never
//! printed. TLS is verified like SMTP's (system roots, or the CA of `sslrootcert=`).

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::deliver::tls_client_config;
use crate::error::{Error, ErrorKind, Result};
use crate::outbox::idempotency::{FirstSend, FirstStatus, RETENTION, check_key};
use crate::profile::{PasswordSource, RecipientPolicy, Rule};

/// The idempotency keys' schema this envoi writes (`envoi_schema_version`); a database
/// with a newer one is refused (78).
///
/// 1. The idempotency keys (`envoi_idempotency`).
///
/// A batch split across workers (`batch --campaign`) has tables of its own, which a
/// version 1 envoi never reads: they are a separate part ([`BATCH_PART`]), so adding them
/// leaves this version as it is and every envoi that knows version 1 keeps working.
const SCHEMA_VERSION: i32 = 1;

/// The newest `envoi_schema_version` this envoi reads: pre-release builds wrote 2 when
/// they added the batch tables, which changed nothing of version 1. A later change to
/// the idempotency keys' schema must be 3.
const SCHEMA_READ: i32 = 2;

/// The schema of each version, in order: a database at version N gets the steps after
/// N, in one transaction under [`SCHEMA_LOCK`]. Each step only adds (`IF NOT EXISTS`),
/// so a step run twice changes nothing.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = ["
CREATE TABLE IF NOT EXISTS envoi_schema_version (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS envoi_idempotency (
    key text PRIMARY KEY,
    claimed_by text NOT NULL,
    claimed_at timestamptz NOT NULL,
    claim_deadline timestamptz NOT NULL,
    message_id text,
    status text,
    recorded_at timestamptz
);"];

/// The batch's part of the schema (`envoi_schema_parts`, a table no version 1 envoi
/// reads): its name and version, and its tables. Made only by `batch --campaign`, under
/// [`SCHEMA_LOCK`]; `send` and `batch --status` never make it.
const BATCH_PART: (&str, i32) = ("batch", 1);

/// Version 1 of [`BATCH_PART`]: one row per record claimed (`envoi_batch_records`) and a
/// token bucket per campaign (`envoi_batch_rate`).
const BATCH_TABLES: &str = "
CREATE TABLE IF NOT EXISTS envoi_batch_records (
    campaign text NOT NULL,
    record_hash bytea NOT NULL,
    line bigint NOT NULL,
    claimed_by text NOT NULL,
    claimed_at timestamptz NOT NULL,
    lease_until timestamptz NOT NULL,
    outcome text,
    message_id text,
    finished_at timestamptz,
    PRIMARY KEY (campaign, record_hash)
);
CREATE TABLE IF NOT EXISTS envoi_batch_rate (
    campaign text PRIMARY KEY,
    tokens double precision NOT NULL,
    updated_at timestamptz NOT NULL
);";

/// The send counts' part of the schema: one row per message a capped policy let through
/// (`policy.max_messages_per_hour` / `_per_day`), by scope, so every machine sharing the
/// ledger counts against one cap. Made on first use by a capped send, or by `batch
/// --campaign`.
const COUNTS_PART: (&str, i32) = ("counts", 1);

/// Version 1 of [`COUNTS_PART`].
const COUNTS_TABLES: &str = "
CREATE TABLE IF NOT EXISTS envoi_send_counts (
    scope text NOT NULL,
    sent_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS envoi_send_counts_scope_at ON envoi_send_counts (scope, sent_at);";

/// The table that names each part of the schema made and its version (no version 1
/// envoi reads it), made with the first part.
const PARTS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS envoi_schema_parts (
    part text PRIMARY KEY,
    version integer NOT NULL
);";

/// The advisory lock two first users take to make the schema one at a time ("envoi" and
/// the schema's purpose, as a number).
const SCHEMA_LOCK: i64 = 0x656e_766f_6900_0001;

/// How long after its claimer's deadline a claim without an outcome counts as dead: the
/// time the claimer has to write the outcome of a send that ended at the deadline (the
/// watchdog of a direct send ends it 2 s after, and the record is one round trip).
const GRACE: Duration = Duration::from_secs(5);

/// How often a waiting sender looks at a claim held by another.
const POLL: Duration = Duration::from_millis(100);

/// A connection to the ledger database.
pub(super) struct PgLedger {
    client: Client,
    /// The URL's user, for the grant a missing right needs.
    user: String,
    /// Who claims: this machine's name and process, written into each claim.
    me: String,
    /// `HOST:PORT/DB`, for messages (the URL itself is not repeated).
    place: String,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

/// What a ledger URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    user: String,
    dbname: String,
    /// `None`: `sslmode=disable`; else verified TLS with the system roots plus this CA.
    tls: Option<Option<PathBuf>>,
}

impl Target {
    fn place(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }
}

/// Reads a ledger URL given by `what` (the flag, variable or key): 78 for anything it
/// cannot use, naming the part at fault but never repeating the URL (it may hold a
/// password).
fn parse(what: &str, text: &str) -> Result<Target> {
    let bad = |why: String| Error::config(format!("{what}: {why}"));
    let url = url::Url::parse(text).map_err(|e| {
        bad(format!(
            "not a URL ({e}); give postgres://USER@HOST:PORT/DATABASE"
        ))
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(bad(format!(
            "the scheme is {:?}; the ledger is PostgreSQL: postgres://USER@HOST:PORT/DATABASE",
            url.scheme()
        )));
    }
    if url.password().is_some() {
        return Err(bad(
            "the URL holds a password, where `ps`, shell history and CI logs show it; \
             leave it out of the URL and set $PGPASSWORD"
                .to_owned(),
        ));
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad("the URL is not UTF-8 once decoded".to_owned()))
    };
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => {
            return Err(bad(
                "no host; give postgres://USER@HOST:PORT/DATABASE".into()
            ));
        }
    };
    let user = decode(url.username())?;
    if user.is_empty() {
        return Err(bad(
            "no user name; give postgres://USER@HOST:PORT/DATABASE".into()
        ));
    }
    let dbname = decode(url.path().trim_start_matches('/'))?;
    let dbname = if dbname.is_empty() {
        user.clone()
    } else {
        dbname
    };
    let mut sslmode = None;
    let mut ca_file = None;
    for (name, value) in url.query_pairs() {
        match &*name {
            "sslmode" => sslmode = Some(value.into_owned()),
            "sslrootcert" => ca_file = Some(PathBuf::from(value.into_owned())),
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}; envoi reads sslmode and sslrootcert"
                )));
            }
        }
    }
    let tls = match sslmode.as_deref().unwrap_or("require") {
        "disable" => {
            if ca_file.is_some() {
                return Err(bad(
                    "sslrootcert is given with sslmode=disable; give one".into()
                ));
            }
            None
        }
        // The certificate is always checked, the host name included: a ledger that
        // anyone in the path could answer would let them say "duplicate" to every send.
        "require" | "verify-ca" | "verify-full" => Some(ca_file),
        other => {
            return Err(bad(format!(
                "sslmode={other} is not one envoi takes: give sslmode=require (TLS, the \
                 certificate verified) or sslmode=disable"
            )));
        }
    };
    Ok(Target {
        host,
        port: url.port().unwrap_or(5432),
        user,
        dbname,
        tls,
    })
}

/// The time left until `deadline`, or 75 when there is none.
fn left(deadline: Instant, doing: &str) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::new(
            ErrorKind::Temporary,
            format!("the deadline (--timeout) passed while {doing}; nothing was sent"),
        ));
    }
    Ok(left)
}

/// A database error in words: the server's message, else the client's with its cause.
fn cause(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_owned();
    }
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

impl PgLedger {
    /// Connects to the ledger `url` (named `what` in errors) within `deadline`, and makes
    /// its tables on first use. The password comes from `password` (the config file's
    /// `ledger_password_env` or `ledger_password_command`), else `$PGPASSWORD`.
    /// Unreachable: 75, and nothing may be sent; a refused login or certificate: 77; a
    /// bad URL, or a password source that gives nothing: 78.
    pub(super) fn connect(
        what: &str,
        url: &str,
        password: Option<&PasswordSource>,
        deadline: Instant,
    ) -> Result<PgLedger> {
        let target = parse(what, url)?;
        let place = target.place();
        let shown = place.clone();
        let user = target.user.clone();
        let time = left(deadline, "connecting to the idempotency ledger")?;
        let mut config = Config::new();
        config
            .host(&target.host)
            .port(target.port)
            .user(&target.user)
            .dbname(&target.dbname)
            .application_name("envoi")
            .connect_timeout(time)
            .tcp_user_timeout(time)
            // Each statement is bounded by the server too (a lock held by a stuck session).
            .options(&format!("-c statement_timeout={}", time.as_millis().max(1)));
        // The secret from the source beside the URL, else from where libpq's tools take
        // it; never echoed.
        match password {
            Some(source) => {
                let password = source.fetch_as("ledger_password", time)?;
                config.password(password.expose());
            }
            None => {
                if let Some(password) = std::env::var_os("PGPASSWORD").filter(|p| !p.is_empty()) {
                    config.password(password.as_encoded_bytes());
                }
            }
        }
        let tls = match &target.tls {
            None => None,
            Some(ca_file) => Some(tls_client_config(ca_file.as_deref(), None)?),
        };
        // The client bounds only the TCP connect by `connect_timeout`: a server (or a
        // proxy) that accepts and then never answers would hold the name lookup, the TLS
        // handshake, the login or the schema statements past any deadline. So they run on
        // a thread of their own, waited for until the deadline; one still stuck then is
        // left behind, and this run ends with 75 having sent nothing.
        let (done, outcome) = mpsc::channel();
        let source = password.cloned();
        let worker = thread::Builder::new()
            .name("envoi-ledger-connect".into())
            .spawn(move || {
                let connected = match tls {
                    None => config.ssl_mode(SslMode::Disable).connect(NoTls),
                    Some(tls) => config
                        .ssl_mode(SslMode::Require)
                        .connect(MakeRustlsConnect::new((*tls).clone())),
                };
                let ledger = connected
                    .map_err(|e| connect_error(&e, &target, &place, source.as_ref()))
                    .and_then(|client| PgLedger::ready(client, place, user));
                // The receiver may have given up at the deadline: nothing to tell then.
                let _ = done.send(ledger);
            });
        if let Err(e) = worker {
            return Err(Error::new(
                ErrorKind::Temporary,
                format!("cannot start a thread to reach the idempotency ledger: {e}"),
            ));
        }
        outcome
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "the idempotency ledger at {shown} did not answer before the deadline \
                         (--timeout); nothing was sent; run again once it answers"
                    ),
                ))
            })
    }

    /// A ledger on `client`, its tables made when missing.
    fn ready(client: Client, place: String, user: String) -> Result<PgLedger> {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "?".to_owned());
        let mut ledger = PgLedger {
            client,
            user,
            me: format!(
                "{host} pid {} #{:08x}",
                std::process::id(),
                fastrand::u32(..)
            ),
            place,
        };
        ledger.ensure_schema()?;
        Ok(ledger)
    }

    /// The connection, for the batch's statements (`fleet`).
    pub(super) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Who claims: this machine's name, process and connection.
    pub(super) fn me(&self) -> &str {
        &self.me
    }

    /// `HOST:PORT/DB`, for messages.
    pub(super) fn place(&self) -> &str {
        &self.place
    }

    /// The URL's user.
    pub(super) fn user(&self) -> &str {
        &self.user
    }

    /// A failed statement: 75 (the ledger is a service that may come back); 78 for a
    /// right the user lacks.
    pub(super) fn failed(&self, doing: &str, e: &postgres::Error) -> Error {
        Self::failed_at(&self.place, &self.user, doing, e)
    }

    /// Makes the idempotency tables when they are missing (a user without CREATE rights
    /// can use tables an owner made), brings an older schema up to this envoi's, and
    /// refuses a schema newer than this envoi's. The batch's tables are not touched
    /// ([`PgLedger::ensure_batch_tables`]).
    fn ensure_schema(&mut self) -> Result<()> {
        let (place, user) = (self.place.clone(), self.user.clone());
        let at = |e: postgres::Error| Self::failed_at(&place, &user, "making its tables", &e);
        let mut tx = self.client.transaction().map_err(at)?;
        let mut version = schema_version(&mut tx).map_err(at)?;
        if version.is_none_or(|v| v < SCHEMA_VERSION) {
            // Two first users at once: the second waits here, then finds the tables.
            tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
                .map_err(at)?;
            version = schema_version(&mut tx).map_err(at)?;
            let from = version.unwrap_or(0).max(0);
            if from < SCHEMA_VERSION {
                for step in MIGRATIONS.iter().skip(usize::try_from(from).unwrap_or(0)) {
                    tx.batch_execute(step).map_err(at)?;
                }
                tx.execute(
                    "INSERT INTO envoi_schema_version (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .map_err(at)?;
            }
        }
        if let Some(found) = version.filter(|found| *found > SCHEMA_READ) {
            return Err(Error::config(format!(
                "the idempotency ledger at {place} has schema version {found}, newer than \
                 this envoi's ({SCHEMA_VERSION}): upgrade envoi on this machine"
            )));
        }
        tx.commit().map_err(at)
    }

    /// Makes the batch's tables when they are missing ([`BATCH_PART`]), and the send
    /// counts' ([`COUNTS_PART`]), under the same advisory lock. For `batch --campaign`:
    /// run once by the tables' owner, it makes every envoi table, so a user with rights
    /// on them needs no CREATE right.
    pub(super) fn ensure_batch_tables(&mut self) -> Result<()> {
        self.ensure_part(BATCH_PART, BATCH_TABLES, "making the batch's tables")?;
        self.ensure_part(COUNTS_PART, COUNTS_TABLES, "making the send counts' table")
    }

    /// Makes the tables of `part` (`tables`) when its row in `envoi_schema_parts` is
    /// missing, under the schema's advisory lock, and refuses a part newer than this
    /// envoi's.
    fn ensure_part(&mut self, (part, known): (&str, i32), tables: &str, doing: &str) -> Result<()> {
        let (place, user) = (self.place.clone(), self.user.clone());
        let at = |e: postgres::Error| Self::failed_at(&place, &user, doing, &e);
        let mut tx = self.client.transaction().map_err(at)?;
        let mut version = part_version(&mut tx, part).map_err(at)?;
        if version.is_none() {
            tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
                .map_err(at)?;
            version = part_version(&mut tx, part).map_err(at)?;
            if version.is_none() {
                tx.batch_execute(PARTS_TABLE).map_err(at)?;
                tx.batch_execute(tables).map_err(at)?;
                tx.execute(
                    "INSERT INTO envoi_schema_parts (part, version) VALUES ($1, $2) \
                     ON CONFLICT (part) DO NOTHING",
                    &[&part, &known],
                )
                .map_err(at)?;
            }
        }
        if let Some(found) = version.filter(|found| *found > known) {
            return Err(Error::config(format!(
                "the ledger at {place} has the {part} tables at version {found}, newer \
                 than this envoi's ({known}): upgrade envoi on this machine"
            )));
        }
        tx.commit().map_err(at)
    }

    /// Takes one message's slot under `policy`'s caps per hour and day in the counts of
    /// `scope`, shared by every machine on this ledger: 75 naming the cap when one is
    /// reached. One transaction under an advisory lock of the scope, so two senders at
    /// once cannot both take the last slot; every time is the database's clock.
    pub(super) fn take_slot(&mut self, scope: &str, policy: &RecipientPolicy) -> Result<()> {
        if policy.max_per_hour.is_none() && policy.max_per_day.is_none() {
            return Ok(());
        }
        self.ensure_part(COUNTS_PART, COUNTS_TABLES, "making the send counts' table")?;
        let (place, user) = (self.place.clone(), self.user.clone());
        let doing = "counting the messages sent";
        let at = |e: postgres::Error| Self::failed_at(&place, &user, doing, &e);
        let mut tx = self.client.transaction().map_err(at)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('envoi_send_counts:' || $1, 0))",
            &[&scope],
        )
        .map_err(at)?;
        tx.execute(
            "DELETE FROM envoi_send_counts WHERE scope = $1 AND sent_at < now() - interval '1 day'",
            &[&scope],
        )
        .map_err(at)?;
        for (cap, window, key) in [
            (&policy.max_per_hour, "1 hour", "max_messages_per_hour"),
            (&policy.max_per_day, "1 day", "max_messages_per_day"),
        ] {
            let Some(Rule { value, origin }) = cap else {
                continue;
            };
            // The count in the window, and when its oldest slot that must free first
            // leaves it (the cap-th newest).
            let row = tx
                .query_one(
                    &format!(
                        "SELECT count(*), \
                         (SELECT ceil(extract(epoch FROM sent_at + interval '{window}' - now()))::bigint \
                          FROM envoi_send_counts WHERE scope = $1 \
                          AND sent_at >= now() - interval '{window}' \
                          ORDER BY sent_at DESC OFFSET $2::bigint - 1 LIMIT 1) \
                         FROM envoi_send_counts WHERE scope = $1 \
                         AND sent_at >= now() - interval '{window}'"
                    ),
                    &[&scope, &i64::from(*value)],
                )
                .map_err(at)?;
            let (count, frees): (i64, Option<i64>) = (row.get(0), row.get(1));
            if count >= i64::from(*value) {
                return Err(Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "policy.{key} {value} reached ({origin}): {count} messages of {scope} \
                         went in the last {} by the ledger at {place}; nothing was sent; the \
                         next may go in {} s",
                        window.trim_start_matches("1 "),
                        frees.unwrap_or(1).max(1)
                    ),
                ));
            }
        }
        tx.execute(
            "INSERT INTO envoi_send_counts (scope, sent_at) VALUES ($1, now())",
            &[&scope],
        )
        .map_err(at)?;
        tx.commit().map_err(at)
    }

    pub(super) fn failed_at(place: &str, user: &str, doing: &str, e: &postgres::Error) -> Error {
        if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
            return Error::config(format!(
                "the idempotency ledger at {place} refused user {user} while {doing}: {}; \
                 have the owner of the envoi_* tables run `GRANT SELECT, INSERT, UPDATE, \
                 DELETE ON ALL TABLES IN SCHEMA public TO {user}`, or run `envoi batch \
                 --campaign …` once as the owner (it makes every envoi table)",
                cause(e)
            ));
        }
        Error::new(
            ErrorKind::Temporary,
            format!(
                "the idempotency ledger at {place} failed while {doing}: {}",
                cause(e)
            ),
        )
    }

    /// Takes `key` (see [`crate::outbox::ledger::Ledger::claim`]): inserts its claim, or
    /// waits on another's until it has an outcome (a duplicate), is dead (75, unknown),
    /// is freed (then claims it), or `deadline` comes (75).
    pub(super) fn claim(&mut self, key: &str, deadline: Instant) -> Result<Option<FirstSend>> {
        check_key(key)?;
        let doing = "claiming the key";
        // The retention window, kept by whoever claims (no daemon).
        let window = RETENTION.as_secs_f64();
        self.client
            .execute(
                "DELETE FROM envoi_idempotency \
                 WHERE coalesce(recorded_at, claimed_at) < now() - make_interval(secs => $1)",
                &[&window],
            )
            .map_err(|e| self.failed(doing, &e))?;
        loop {
            let time = left(deadline, "claiming the idempotency key")?;
            let inserted = self
                .client
                .execute(
                    "INSERT INTO envoi_idempotency (key, claimed_by, claimed_at, claim_deadline) \
                     VALUES ($1, $2, now(), now() + make_interval(secs => $3)) \
                     ON CONFLICT (key) DO NOTHING",
                    &[&key, &self.me, &time.as_secs_f64()],
                )
                .map_err(|e| self.failed(doing, &e))?;
            if inserted == 1 {
                return Ok(None);
            }
            let row = self
                .client
                .query_opt(
                    "SELECT message_id, status, claimed_by, \
                     to_char(claimed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), \
                     now() > claim_deadline + make_interval(secs => $2) \
                     FROM envoi_idempotency WHERE key = $1",
                    &[&key, &GRACE.as_secs_f64()],
                )
                .map_err(|e| self.failed(doing, &e))?;
            // Freed between the two statements: claim it again.
            let Some(row) = row else { continue };
            let claim: Result<Held, postgres::Error> = (|| {
                Ok(Held {
                    message_id: row.try_get(0)?,
                    status: row.try_get(1)?,
                    by: row.try_get(2)?,
                    at: row.try_get(3)?,
                    dead: row.try_get(4)?,
                })
            })();
            let held = claim.map_err(|e| self.failed(doing, &e))?;
            if let (Some(message_id), Some(status)) = (held.message_id, held.status) {
                return Ok(Some(FirstSend {
                    message_id,
                    status: status_of(&status)?,
                }));
            }
            if held.dead {
                return Err(Error::new(
                    ErrorKind::OutcomeUnknown,
                    format!(
                        "this --idempotency-key was claimed at {} UTC by {} (ledger {}), \
                         which ended without recording an outcome: the message may have \
                         been sent; nothing was sent now. Check the recipients' mail; send \
                         again with a new key if it did not arrive",
                        held.at, held.by, self.place
                    ),
                ));
            }
            if time <= POLL {
                return Err(Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "another envoi ({}, since {} UTC) is still sending with this \
                         --idempotency-key (ledger {}); nothing was sent",
                        held.by, held.at, self.place
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Writes the outcome of the key this run claimed.
    pub(super) fn record(&mut self, key: &str, first: &FirstSend) -> Result<()> {
        let status = match first.status {
            FirstStatus::Sent => "sent",
            FirstStatus::Saved => "saved",
            FirstStatus::Queued => "queued",
        };
        self.client
            .execute(
                "INSERT INTO envoi_idempotency \
                 (key, claimed_by, claimed_at, claim_deadline, message_id, status, recorded_at) \
                 VALUES ($1, $2, now(), now(), $3, $4, now()) \
                 ON CONFLICT (key) DO UPDATE SET message_id = EXCLUDED.message_id, \
                 status = EXCLUDED.status, recorded_at = EXCLUDED.recorded_at",
                &[&key, &self.me, &first.message_id, &status],
            )
            .map(drop)
            .map_err(|e| self.failed("recording the key", &e))
    }

    /// Deletes this run's claim of `key` (its send surely did not go). A claim that
    /// cannot be deleted stays, and later runs answer `unknown` after its deadline: the
    /// safe side.
    pub(super) fn release(&mut self, key: &str) {
        let _ = self.client.execute(
            "DELETE FROM envoi_idempotency \
             WHERE key = $1 AND claimed_by = $2 AND message_id IS NULL",
            &[&key, &self.me],
        );
    }
}

/// The schema version of the database, `None` when it has no envoi tables yet.
fn schema_version(tx: &mut postgres::Transaction) -> Result<Option<i32>, postgres::Error> {
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass('envoi_schema_version') IS NOT NULL",
            &[],
        )
        .and_then(|row| row.try_get(0))?;
    if !exists {
        return Ok(None);
    }
    tx.query_one("SELECT max(version) FROM envoi_schema_version", &[])
        .and_then(|row| row.try_get(0))
}

/// The version of the schema part `part` in the database, `None` when it is not there
/// yet. Tables made by a pre-release build (without `envoi_schema_parts`, marked by
/// `envoi_schema_version` 2) count as version 1.
fn part_version(
    tx: &mut postgres::Transaction,
    part: &str,
) -> Result<Option<i32>, postgres::Error> {
    let row = tx.query_one(
        "SELECT to_regclass('envoi_schema_parts') IS NOT NULL, \
         to_regclass('envoi_batch_records') IS NOT NULL \
         AND to_regclass('envoi_batch_rate') IS NOT NULL",
        &[],
    )?;
    let (parts, tables): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
    if !parts {
        return Ok(tables.then_some(1));
    }
    let row = tx.query_opt(
        "SELECT version FROM envoi_schema_parts WHERE part = $1",
        &[&part],
    )?;
    row.map(|row| row.try_get(0)).transpose()
}

/// A claim as another sender finds it.
struct Held {
    message_id: Option<String>,
    status: Option<String>,
    by: String,
    at: String,
    dead: bool,
}

/// A recorded status, as [`PgLedger::record`] writes it.
fn status_of(text: &str) -> Result<FirstStatus> {
    match text {
        "sent" => Ok(FirstStatus::Sent),
        "saved" => Ok(FirstStatus::Saved),
        "queued" => Ok(FirstStatus::Queued),
        other => Err(Error::config(format!(
            "the idempotency ledger records status {other:?} for this key, which this envoi \
             does not know: upgrade envoi"
        ))),
    }
}

/// A failed connection in words: a refused login is 77, a certificate 77, a missing
/// password 78, anything else 75 (the database may come back).
fn connect_error(
    e: &postgres::Error,
    target: &Target,
    place: &str,
    password: Option<&PasswordSource>,
) -> Error {
    let why = cause(e);
    let source = match password {
        Some(PasswordSource::Env(_)) => "the variable ledger_password_env names",
        Some(PasswordSource::Command(_)) => "what ledger_password_command prints",
        // The config file has no inline ledger password; only the two keys above.
        Some(PasswordSource::Inline(_)) | None => "$PGPASSWORD",
    };
    let (kind, fix) = match e.code() {
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            (
                ErrorKind::AuthRefused,
                format!(
                    "check the user ({}) and the password in {source}",
                    target.user
                ),
            )
        }
        Some(code) if *code == SqlState::INVALID_CATALOG_NAME => (
            ErrorKind::Config,
            format!(
                "the database {:?} does not exist there: name one that does in the URL's \
                 path (postgres://USER@HOST:PORT/DATABASE), or create it",
                target.dbname
            ),
        ),
        _ if why.contains("server does not support TLS") => (
            ErrorKind::Certificate,
            "the server offers no TLS: turn on ssl in its postgresql.conf, or give \
             ?sslmode=disable for a database on this machine's loopback"
                .to_owned(),
        ),
        _ if why.contains("password missing") => (
            ErrorKind::Config,
            format!("the server asks for a password: set {source}"),
        ),
        _ if why.starts_with("error performing TLS handshake") => (
            ErrorKind::Certificate,
            "give the server's CA with ?sslrootcert=PATH, or check the host name".to_owned(),
        ),
        _ => (
            ErrorKind::Temporary,
            "nothing was sent; run again once it answers".to_owned(),
        ),
    };
    Error::new(
        kind,
        format!("the idempotency ledger at {place} cannot be used: {why}; {fix}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read() {
        let t = parse("--ledger", "postgres://envoi@db.example.com/mail").unwrap();
        assert_eq!(
            t,
            Target {
                host: "db.example.com".into(),
                port: 5432,
                user: "envoi".into(),
                dbname: "mail".into(),
                tls: Some(None),
            }
        );
        let t = parse("--ledger", "postgresql://me@127.0.0.1:6543?sslmode=disable").unwrap();
        assert_eq!((t.port, t.dbname.as_str(), t.tls), (6543, "me", None));
        let t = parse(
            "--ledger",
            "postgres://me@db:1/x?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        )
        .unwrap();
        assert_eq!(t.tls, Some(Some(PathBuf::from("/etc/ca.pem"))));
    }

    #[test]
    fn bad_urls_are_78_and_never_echo_a_password() {
        for (url, says) in [
            ("postgres://me:hunter2@db/x", "$PGPASSWORD"),
            ("mysql://me@db/x", "scheme"),
            ("postgres://db/x", "no user"),
            ("postgres://me@db/x?sslmode=prefer", "sslmode=prefer"),
            ("postgres://me@db/x?password=hunter2", "unknown parameter"),
            ("db.example.com", "not a URL"),
        ] {
            let e = parse("$ENVOI_LEDGER", url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{url}");
            assert!(e.message().contains(says), "{url}: {e}");
            assert!(e.message().starts_with("$ENVOI_LEDGER: "), "{e}");
            assert!(!e.message().contains("hunter2"), "{e}");
        }
    }
}

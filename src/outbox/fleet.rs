//! One batch split across many workers (`envoi batch --ledger postgres://… --campaign
//! NAME`, run at once on several machines over the same input): the shared PostgreSQL
//! ledger says which worker sends each record, so every record goes exactly once.
//!
//! - A record is known by its campaign and the SHA-256 of its content (its fields, not
//!   its line number, nor the rendered message with its fresh Message-ID and Date).
//! - Before a worker sends a record it claims it: `INSERT … ON CONFLICT DO NOTHING` on
//!   (campaign, record hash), with the worker's name and a lease (now + the record's
//!   deadline + a grace, on the database's clock). Of two workers exactly one inserts;
//!   the other skips the record.
//! - After the send the row gets its outcome: sent (with the Message-ID), failed for
//!   good (refused, invalid: no worker tries it again), or unknown (the connection broke
//!   after the message went); a temporary failure deletes the row, so a later run tries
//!   the record again.
//! - A worker that dies holding a claim leaves a row without outcome: once its lease has
//!   passed the record is `unknown`, and it is never sent again unless a run asks for it
//!   by name (`--resend-unknown`).
//! - `--rate` holds for the whole fleet: one token bucket row per campaign, taken under
//!   `SELECT … FOR UPDATE` and refilled by the database's elapsed time.
//!
//! Rows stay until someone deletes them: a campaign is a name the user chose, and
//! running it again months later must still send nothing twice.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use postgres::Statement;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::outbox::Status;
use crate::outbox::pg_ledger::PgLedger;
use crate::profile::{Origin, Resolved};

/// What a campaign name may be: what `--idempotency-key` may be (printable, one line,
/// 1 to 200 characters).
fn check_campaign(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.chars().count() > 200
        || name.chars().any(|c| c.is_control() || c == '\u{7f}');
    if bad {
        return Err(Error::usage(format!(
            "--campaign {name:?}: give 1 to 200 printable characters on one line, e.g. \
             --campaign invoices-2026-12"
        )));
    }
    Ok(())
}

/// One worker's connections to the campaign's rows. A batch with several senders
/// (`--concurrency`) opens them per sender: a connection runs one statement at a time.
///
/// Each connection lives on a thread of its own, fed one statement at a time and waited
/// for with a limit (`Fleet::run`): a ledger that accepts the bytes and then never
/// answers (a pooler or proxy that stalls) would hold a statement past any server-side
/// `statement_timeout` or `tcp_user_timeout`. Past the limit the fleet is dead: every
/// later statement fails at once, and the batch stops with 75.
pub struct Fleet {
    /// Claims: each committed durably before the record is sent.
    claims: Remote,
    /// A sender's second connection, with `synchronous_commit` off: outcomes, freed
    /// claims, lease renewals and the rate bucket. Their commits do not wait for the disk
    /// (half of a record's two flushes): if the database crashes and loses one, the
    /// claim is left without an outcome, which is `unknown` — never a second send.
    outcomes: Option<Remote>,
    campaign: String,
    /// This worker's name in its claims (the claims connection's).
    me: String,
    /// The ledger's `HOST:PORT/DB`.
    place: String,
    /// How long a claim, a renewal, a token or a count may take: the record's deadline
    /// (`--timeout`).
    bound: Duration,
    /// Why the fleet is dead: a statement that did not answer in time (its connection
    /// is left to its thread, still waiting).
    dead: Option<Error>,
}

/// How long writing a record's outcome (or freeing its claim) may take: the send is
/// over, and the lease's grace is 5 s.
const FINISH_BOUND: Duration = Duration::from_secs(5);

/// A connection on its own thread: the statements sent to it run there, in order.
struct Remote {
    jobs: mpsc::Sender<Job>,
}

/// A statement (or a few) for a connection's thread.
type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// A connection, and the statements prepared on it.
struct Session {
    ledger: PgLedger,
    /// The statements this worker runs for every record, prepared once on each
    /// connection (an unprepared statement costs a second round trip each time).
    prepared: HashMap<&'static str, Statement>,
}

impl Session {
    /// `sql` prepared on this connection, once.
    fn statement(&mut self, sql: &'static str, doing: &str) -> Result<Statement> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self
            .ledger
            .client()
            .prepare(sql)
            .map_err(|e| self.ledger.failed(doing, &e))?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }

    fn failed(&self, doing: &str, e: &postgres::Error) -> Error {
        self.ledger.failed(doing, e)
    }

    /// Whether the batch's tables are there (`--status` makes none: without them no
    /// campaign has a record yet).
    fn batch_tables(&mut self, doing: &str) -> Result<bool> {
        self.ledger
            .client()
            .query_one("SELECT to_regclass('envoi_batch_records') IS NOT NULL", &[])
            .and_then(|row| row.try_get(0))
            .map_err(|e| self.ledger.failed(doing, &e))
    }
}

impl Remote {
    /// `ledger` on a thread of its own, which ends when the [`Remote`] is dropped (or,
    /// stuck in a statement, when the process ends).
    fn start(ledger: PgLedger) -> Result<Remote> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let place = ledger.place().to_owned();
        thread::Builder::new()
            .name("envoi-ledger".into())
            .spawn(move || {
                let mut session = Session {
                    ledger,
                    prepared: HashMap::new(),
                };
                for job in queue {
                    job(&mut session);
                }
            })
            .map_err(|e| {
                Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "cannot start a thread for the ledger at {place}: {e}; nothing was sent"
                    ),
                )
            })?;
        Ok(Remote { jobs })
    }
}

/// Which of a worker's connections runs a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Conn {
    Claims,
    Outcomes,
}

/// A record's claim: inserted, or else the row another worker holds, in one round trip.
/// The row is read in the statement's snapshot: a claim committed by another worker
/// after it began (the insert waited for it) is not seen, and the claim is tried again.
const CLAIM: &str = "WITH claimed AS (\
     INSERT INTO envoi_batch_records \
     (campaign, record_hash, line, claimed_by, claimed_at, lease_until) \
     VALUES ($1, $2, $3, $4, now(), now() + make_interval(secs => $5)) \
     ON CONFLICT (campaign, record_hash) DO NOTHING RETURNING 1) \
     SELECT EXISTS (SELECT 1 FROM claimed), r.outcome, r.message_id, r.claimed_by, \
     to_char(r.claimed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), \
     now() > r.lease_until \
     FROM (SELECT 1) AS one LEFT JOIN envoi_batch_records r \
     ON r.campaign = $1 AND r.record_hash = $2";

/// A claim of unknown outcome taken over (`--resend-unknown`): only while it is still
/// unknown, so of two runs that try at once, one updates it and the other then finds a
/// live lease.
const TAKE_OVER: &str = "UPDATE envoi_batch_records SET claimed_by = $3, claimed_at = now(), \
     lease_until = now() + make_interval(secs => $4), line = $5, \
     outcome = NULL, message_id = NULL, finished_at = NULL \
     WHERE campaign = $1 AND record_hash = $2 AND (outcome = 'unknown' \
     OR (outcome IS NULL AND lease_until < now()))";

/// This worker's lease moved on, fenced by its name: whether the claim was still this
/// worker's, and who holds the row otherwise (read in the statement's snapshot, before
/// the update).
const RENEW: &str = "WITH renewed AS (\
     UPDATE envoi_batch_records SET lease_until = now() + make_interval(secs => $4) \
     WHERE campaign = $1 AND record_hash = $2 AND claimed_by = $3 AND outcome IS NULL \
     RETURNING 1) \
     SELECT (SELECT count(*) FROM renewed), \
     (SELECT claimed_by FROM envoi_batch_records WHERE campaign = $1 AND record_hash = $2)";

/// A record's outcome written.
const FINISH: &str = "UPDATE envoi_batch_records SET outcome = $4, message_id = $5, \
     finished_at = now() \
     WHERE campaign = $1 AND record_hash = $2 AND claimed_by = $3";

/// A claim freed: nothing went.
const FREE: &str = "DELETE FROM envoi_batch_records \
     WHERE campaign = $1 AND record_hash = $2 AND claimed_by = $3 AND outcome IS NULL";

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("campaign", &self.campaign)
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

/// Whether this worker may send a record.
#[derive(Debug)]
pub enum Claim {
    /// The record is this worker's: send it, then [`Fleet::finish`] (which frees it when
    /// nothing went).
    Mine,
    /// Another worker has it (or had it): skip it.
    Taken(Taken),
    /// Claimed and freed again by other workers five times in a row: not sent now,
    /// `deferred` (why, in words), for a later run; the batch goes on.
    Contended(String),
}

/// Whether a renewed claim is still this worker's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// It is: the lease runs from now.
    Held,
    /// It is not: another worker took it over (`by`, its name), or its row is gone
    /// (`None`). The record must not be sent.
    Lost {
        /// Who holds the record now.
        by: Option<String>,
    },
}

/// A record another worker claimed.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The claimer: machine, process and connection.
    pub by: String,
    /// When it claimed the record (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub at: String,
    /// What became of the record.
    pub held: Held,
}

/// What became of a record another worker claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// It has an outcome: sent (or queued, saved, partial) or failed for good.
    Done {
        /// sent, partial, saved, queued, refused or invalid.
        outcome: Status,
        /// The message's Message-ID, when one was made.
        message_id: Option<String>,
    },
    /// The claimer is sending it, its lease still running.
    InFlight,
    /// Its outcome is unknown: the claimer's lease passed without one (it died
    /// mid-send), or the connection broke after the message went. It may have been
    /// delivered: only `--resend-unknown` sends it again.
    Unknown,
}

impl Taken {
    /// The record's line in this worker's result: `duplicate` (another worker sent it,
    /// failed it for good, or is sending it) or `unknown`; and what happened, in words.
    pub fn status(&self) -> Status {
        match self.held {
            Held::Unknown => Status::Unknown,
            _ => Status::Duplicate,
        }
    }

    /// Who has the record and what became of it, in words.
    pub fn describe(&self) -> String {
        // "Worker", not "another worker": an input may hold the same record twice, and
        // then the claim is this run's own.
        let who = format!("worker {} (claimed at {} UTC)", self.by, self.at);
        match &self.held {
            Held::Done { outcome, .. } => {
                format!("campaign record already {outcome} by {who}")
            }
            Held::InFlight => format!("campaign record being sent by {who}"),
            Held::Unknown => format!(
                "campaign record claimed by {who}, which ended without an outcome: it may \
                 have been delivered, so it was not sent again; check, then give \
                 --resend-unknown to send the unknown records again"
            ),
        }
    }
}

/// A campaign's records in the ledger, as `envoi batch --status` counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// The campaign's name.
    pub campaign: String,
    /// Sent (partial, saved and queued included: no worker sends them again).
    pub sent: u64,
    /// Failed for good: refused or invalid.
    pub failed: u64,
    /// Of unknown outcome: a dead worker's claim, or a broken connection after the
    /// message went.
    pub unknown: u64,
    /// Claimed by a worker whose lease still runs.
    pub in_flight: u64,
    /// Records of the input with no row yet (`None` without the input).
    pub pending: Option<u64>,
}

/// Connects a sender of a worker to the campaign `name` ([`connect`]), with a second
/// connection whose commits do not wait for the disk, for what may be lost in a crash
/// without a second send (the outcomes: see [`Fleet`]).
pub fn connect_sender(resolved: &Resolved, name: &str, deadline: Instant) -> Result<Fleet> {
    let mut fleet = connect(resolved, name, deadline)?;
    let (what, url) = ledger_of(resolved, name)?;
    let outcomes = PgLedger::connect(&what, url, resolved.ledger_password.as_ref(), deadline)?;
    // The batch's tables, made on first use (`--status` and `send` never make them);
    // and claims durable whatever the role's or database's default: a claim lost in a
    // crash after its commit could let a second worker send the record.
    let doing = "making the batch's tables";
    fleet.run(Conn::Claims, fleet.bound, doing, |session| {
        session.ledger.ensure_batch_tables()?;
        session
            .ledger
            .client()
            .batch_execute("SET synchronous_commit = on")
            .map_err(|e| session.failed(doing, &e))
    })?;
    fleet.outcomes = Some(Remote::start(outcomes)?);
    let doing = "connecting a second time";
    fleet.run(Conn::Outcomes, fleet.bound, doing, move |session| {
        session
            .ledger
            .client()
            .batch_execute("SET synchronous_commit = off")
            .map_err(|e| session.failed(doing, &e))
    })?;
    Ok(fleet)
}

/// The ledger's URL, and how to name where it came from; 64 without one.
fn ledger_of<'a>(resolved: &'a Resolved, name: &str) -> Result<(String, &'a str)> {
    let Some((url, origin)) = &resolved.ledger else {
        return Err(Error::usage(format!(
            "--campaign {name}: a campaign's records are claimed in a shared PostgreSQL \
             ledger: give --ledger postgres://USER@HOST/DB too (or set $ENVOI_LEDGER, or \
             the profile's `ledger`)"
        )));
    };
    let what = match origin {
        Origin::Flag(flag) => (*flag).to_owned(),
        Origin::Variable(name) => format!("${name}"),
        Origin::File | Origin::Default => "the profile's `ledger`".to_owned(),
    };
    Ok((what, url.as_str()))
}

/// Connects a worker to the campaign `name` in the ledger `resolved` names (`--ledger`,
/// `$ENVOI_LEDGER`, the profile's `ledger`; its password from the file's
/// `ledger_password_env`/`ledger_password_command`, else `$PGPASSWORD`): 75 when the database cannot be reached (then
/// nothing may be sent), 77 for a refused login or certificate, 78 for a bad URL; 64
/// without a PostgreSQL ledger.
pub fn connect(resolved: &Resolved, name: &str, deadline: Instant) -> Result<Fleet> {
    check_campaign(name)?;
    let (what, url) = ledger_of(resolved, name)?;
    // The record's deadline (--timeout), at least a second.
    let bound = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    let ledger = PgLedger::connect(&what, url, resolved.ledger_password.as_ref(), deadline)?;
    let (me, place) = (ledger.me().to_owned(), ledger.place().to_owned());
    Ok(Fleet {
        claims: Remote::start(ledger)?,
        outcomes: None,
        campaign: name.to_owned(),
        me,
        place,
        bound,
        dead: None,
    })
}

/// The outcome word a row keeps for a record's status; `None` for a status that frees
/// the claim (nobody has the message: a later run may send it).
fn outcome_word(status: Status) -> Option<&'static str> {
    match status {
        Status::Sent
        | Status::Saved
        | Status::Queued
        | Status::Partial
        | Status::Refused
        | Status::Invalid
        | Status::Unknown
        | Status::Duplicate => Some(status.as_str()),
        // Suppressed: nobody has it, and a later run sends it once it is off the list.
        Status::Deferred | Status::Failed | Status::Suppressed | Status::DryRun => None,
    }
}

impl Fleet {
    /// This worker's name in the rows it claims.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The ledger's `HOST:PORT/DB`.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Runs `job` on the connection `which` (the claims' one when there is no second),
    /// waiting for it at most `bound`. Past it, or once a statement before it did not
    /// answer, 75 and the fleet is dead: the batch stops. A claim that timed out may
    /// still commit: its record is then `unknown` to the others, never sent twice.
    fn run<T: Send + 'static>(
        &mut self,
        which: Conn,
        bound: Duration,
        doing: &'static str,
        job: impl FnOnce(&mut Session) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if let Some(dead) = &self.dead {
            return Err(dead.clone());
        }
        let remote = match (which, &self.outcomes) {
            (Conn::Outcomes, Some(outcomes)) => outcomes,
            _ => &self.claims,
        };
        let (done, answer) = mpsc::channel();
        let queued = remote.jobs.send(Box::new(move |session: &mut Session| {
            // The caller may have given up waiting: nothing to tell then.
            let _ = done.send(job(session));
        }));
        let answered = match queued {
            Ok(()) => answer.recv_timeout(bound).ok(),
            Err(_) => None,
        };
        answered.unwrap_or_else(|| {
            let dead = Error::new(
                ErrorKind::Temporary,
                format!(
                    "the ledger at {} did not answer within {} s while {doing}; nothing \
                     more was sent: check the database (and any pooler or proxy before \
                     it), then run the batch again",
                    self.place,
                    bound.as_secs_f64().ceil()
                ),
            );
            self.dead = Some(dead.clone());
            Err(dead)
        })
    }

    /// Claims the record `digest` (at `line` of this worker's input) for `lease`; a
    /// claim whose outcome is unknown is taken over when `resend_unknown`. 75 when the
    /// ledger fails or does not answer within the record's deadline: the record must
    /// not be sent then.
    pub fn claim(
        &mut self,
        digest: &[u8; 32],
        line: u64,
        lease: Duration,
        resend_unknown: bool,
    ) -> Result<Claim> {
        let doing = "claiming a campaign record";
        let hash = digest.to_vec();
        let line = i64::try_from(line).unwrap_or(i64::MAX);
        let lease = lease.as_secs_f64();
        // Freed between the insert and the read (a temporary failure elsewhere), or
        // claimed after this statement began: claim again. A record freed over and over
        // by others is left for a later run.
        for _ in 0..5 {
            let (me, campaign, key) = (self.me.clone(), self.campaign.clone(), hash.clone());
            let row = self.run(Conn::Claims, self.bound, doing, move |session| {
                let claim = session.statement(CLAIM, doing)?;
                let row = session
                    .ledger
                    .client()
                    .query_one(&claim, &[&campaign, &key, &line, &me, &lease])
                    .map_err(|e| session.failed(doing, &e))?;
                let read: Result<_, postgres::Error> = (|| {
                    Ok((
                        row.try_get::<_, bool>(0)?,
                        row.try_get::<_, Option<String>>(1)?,
                        row.try_get::<_, Option<String>>(2)?,
                        row.try_get::<_, Option<String>>(3)?,
                        row.try_get::<_, Option<String>>(4)?,
                        row.try_get::<_, Option<bool>>(5)?,
                    ))
                })();
                read.map_err(|e| session.failed(doing, &e))
            })?;
            let (inserted, outcome, message_id, by, at, expired) = row;
            if inserted {
                return Ok(Claim::Mine);
            }
            let (Some(by), Some(at), Some(expired)) = (by, at, expired) else {
                continue;
            };
            let taken = self.taken(outcome, message_id, by, at, expired)?;
            if taken.held != Held::Unknown || !resend_unknown {
                return Ok(Claim::Taken(taken));
            }
            let (me, campaign, key) = (self.me.clone(), self.campaign.clone(), hash.clone());
            let updated = self.run(Conn::Claims, self.bound, doing, move |session| {
                let take_over = session.statement(TAKE_OVER, doing)?;
                session
                    .ledger
                    .client()
                    .execute(&take_over, &[&campaign, &key, &me, &lease, &line])
                    .map_err(|e| session.failed(doing, &e))
            })?;
            if updated == 1 {
                return Ok(Claim::Mine);
            }
        }
        Ok(Claim::Contended(format!(
            "the campaign record was claimed and freed again by other workers five times \
             in a row (ledger {}); it was not sent: run the batch again later",
            self.place()
        )))
    }

    /// Another worker's claim, as its row says.
    fn taken(
        &self,
        outcome: Option<String>,
        message_id: Option<String>,
        by: String,
        at: String,
        expired: bool,
    ) -> Result<Taken> {
        let held = match outcome.as_deref().map(Status::named) {
            Some(Some(Status::Unknown)) => Held::Unknown,
            Some(Some(outcome)) => Held::Done {
                outcome,
                message_id,
            },
            Some(None) => {
                return Err(Error::config(format!(
                    "the ledger at {} records outcome {:?} for a record of campaign {}, \
                     which this envoi does not know: upgrade envoi",
                    self.place(),
                    outcome.unwrap_or_default(),
                    self.campaign
                )));
            }
            None if expired => Held::Unknown,
            None => Held::InFlight,
        };
        Ok(Taken { by, at, held })
    }

    /// Moves this worker's lease on the record `digest` to `lease` from now (before a
    /// wait for its turn, so the wait does not eat the lease, and as a fence just before
    /// the send): [`Lease::Lost`] when the claim is no longer this worker's (its lease
    /// passed and a run with `--resend-unknown` took it over): the record must not be
    /// sent then.
    pub fn renew(&mut self, digest: &[u8; 32], lease: Duration) -> Result<Lease> {
        let doing = "renewing a campaign record's lease";
        let (me, campaign, hash) = (self.me.clone(), self.campaign.clone(), digest.to_vec());
        let lease = lease.as_secs_f64();
        let (renewed, holder) = self.run(Conn::Outcomes, self.bound, doing, move |session| {
            let renew = session.statement(RENEW, doing)?;
            let row = session
                .ledger
                .client()
                .query_one(&renew, &[&campaign, &hash, &me, &lease])
                .map_err(|e| session.failed(doing, &e))?;
            let read: Result<(i64, Option<String>), postgres::Error> =
                (|| Ok((row.try_get(0)?, row.try_get(1)?)))();
            read.map_err(|e| session.failed(doing, &e))
        })?;
        Ok(if renewed == 1 {
            Lease::Held
        } else {
            Lease::Lost { by: holder }
        })
    }

    /// Writes the outcome of this worker's record `digest` (`status`, with its
    /// Message-ID), or frees the claim when nobody has the message (deferred, failed on
    /// login or configuration): a later run sends it. `Ok(false)`: the claim was no
    /// longer this worker's (its lease passed and a run with `--resend-unknown` took it).
    pub fn finish(
        &mut self,
        digest: &[u8; 32],
        status: Status,
        message_id: Option<&str>,
    ) -> Result<bool> {
        let doing = "recording a campaign record's outcome";
        let (me, campaign, hash) = (self.me.clone(), self.campaign.clone(), digest.to_vec());
        let message_id = message_id.map(str::to_owned);
        let word = outcome_word(status);
        let job = move |session: &mut Session| {
            let done = match word {
                Some(word) => {
                    let finish = session.statement(FINISH, doing)?;
                    session
                        .ledger
                        .client()
                        .execute(&finish, &[&campaign, &hash, &me, &word, &message_id])
                }
                None => {
                    let free = session.statement(FREE, doing)?;
                    session
                        .ledger
                        .client()
                        .execute(&free, &[&campaign, &hash, &me])
                }
            };
            done.map(|rows| rows == 1)
                .map_err(|e| session.failed(doing, &e))
        };
        // The second connection failed (not a ledger that stopped answering): the claims
        // one tries too, so a record that went is not left `unknown`, nor one that did not
        // go left unsendable. Both statements are idempotent.
        match self.run(Conn::Outcomes, FINISH_BOUND, doing, job.clone()) {
            Err(e) if self.dead.is_none() && self.outcomes.is_some() => self
                .run(Conn::Claims, FINISH_BOUND, doing, job)
                .map_err(|_| e),
            done => done,
        }
    }

    /// The campaign's counts; `pending` is left to the caller, who has the input.
    pub fn counts(&mut self) -> Result<Counts> {
        let doing = "counting a campaign's records";
        let campaign = self.campaign.clone();
        let counts = self.run(Conn::Claims, self.bound, doing, move |session| {
            if !session.batch_tables(doing)? {
                return Ok([0; 4]);
            }
            let row = session
                .ledger
                .client()
                .query_one(
                    "SELECT \
                     count(*) FILTER (WHERE outcome IN ('sent', 'partial', 'saved', 'queued', \
                     'duplicate')), \
                     count(*) FILTER (WHERE outcome IN ('refused', 'invalid')), \
                     count(*) FILTER (WHERE outcome = 'unknown' \
                     OR (outcome IS NULL AND now() > lease_until)), \
                     count(*) FILTER (WHERE outcome IS NULL AND now() <= lease_until) \
                     FROM envoi_batch_records WHERE campaign = $1",
                    &[&campaign],
                )
                .map_err(|e| session.failed(doing, &e))?;
            let mut counts = [0; 4];
            for (i, count) in counts.iter_mut().enumerate() {
                let n: i64 = row.try_get(i).map_err(|e| session.failed(doing, &e))?;
                *count = u64::try_from(n).unwrap_or(0);
            }
            Ok(counts)
        })?;
        Ok(Counts {
            campaign: self.campaign.clone(),
            sent: counts[0],
            failed: counts[1],
            unknown: counts[2],
            in_flight: counts[3],
            pending: None,
        })
    }

    /// The hashes of every record the campaign has a row for.
    pub fn digests(&mut self) -> Result<HashSet<[u8; 32]>> {
        let doing = "reading a campaign's records";
        let campaign = self.campaign.clone();
        self.run(Conn::Claims, self.bound, doing, move |session| {
            if !session.batch_tables(doing)? {
                return Ok(HashSet::new());
            }
            let rows = session
                .ledger
                .client()
                .query(
                    "SELECT record_hash FROM envoi_batch_records WHERE campaign = $1",
                    &[&campaign],
                )
                .map_err(|e| session.failed(doing, &e))?;
            let mut all = HashSet::with_capacity(rows.len());
            for row in rows {
                let hash: &[u8] = row.try_get(0).map_err(|e| session.failed(doing, &e))?;
                if let Ok(digest) = <[u8; 32]>::try_from(hash) {
                    all.insert(digest);
                }
            }
            Ok(all)
        })
    }

    /// `--rate` for the whole fleet: takes one token from the campaign's bucket (`per_second`
    /// tokens a second, at most one saved up, so messages are evenly spaced as with one
    /// worker) and answers how long to wait before sending. The token is taken at once,
    /// the bucket going below zero, so waiting workers queue in the order they asked.
    pub fn take_token(&mut self, per_second: f64) -> Result<Duration> {
        let doing = "taking a --rate token from the campaign's bucket";
        let campaign = self.campaign.clone();
        let tokens = self.run(Conn::Outcomes, self.bound, doing, move |session| {
            let place = session.ledger.place().to_owned();
            let user = session.ledger.user().to_owned();
            let at = |e: postgres::Error| PgLedger::failed_at(&place, &user, doing, &e);
            let mut tx = session.ledger.client().transaction().map_err(at)?;
            tx.execute(
                "INSERT INTO envoi_batch_rate (campaign, tokens, updated_at) \
                 VALUES ($1, 1, clock_timestamp()) ON CONFLICT (campaign) DO NOTHING",
                &[&campaign],
            )
            .map_err(at)?;
            // The row's lock orders the workers; clock_timestamp(), not now(): the time
            // after the lock was granted, not when the transaction began.
            let row = tx
                .query_one(
                    "SELECT tokens, extract(epoch FROM clock_timestamp() - updated_at)::float8 \
                     FROM envoi_batch_rate WHERE campaign = $1 FOR UPDATE",
                    &[&campaign],
                )
                .map_err(at)?;
            let (tokens, elapsed): (f64, f64) =
                (row.try_get(0).map_err(at)?, row.try_get(1).map_err(at)?);
            let tokens = (tokens + elapsed.max(0.0) * per_second).min(1.0) - 1.0;
            tx.execute(
                "UPDATE envoi_batch_rate SET tokens = $2, updated_at = clock_timestamp() \
                 WHERE campaign = $1",
                &[&campaign, &tokens],
            )
            .map_err(at)?;
            tx.commit().map_err(at)?;
            Ok(tokens)
        })?;
        let wait = if tokens < 0.0 && per_second > 0.0 {
            -tokens / per_second
        } else {
            0.0
        };
        Ok(Duration::try_from_secs_f64(wait).unwrap_or(Duration::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_names() {
        assert!(check_campaign("invoices-2026-12").is_ok());
        for bad in ["", "a\nb", &"x".repeat(201)] {
            let e = check_campaign(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Usage);
            assert!(e.message().starts_with("--campaign"), "{e}");
        }
    }

    #[test]
    fn what_frees_a_claim() {
        for status in Status::ALL {
            let frees = outcome_word(status).is_none();
            assert_eq!(
                frees,
                matches!(
                    status,
                    Status::Deferred | Status::Failed | Status::Suppressed | Status::DryRun
                ),
                "{status}"
            );
        }
    }
}

//! Overlapping flushes and envoi processes SIGKILLed mid-flush and mid-enqueue: nothing lost,
//! nothing sent twice beyond the at-least-once window.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use mail_parser::{MessageParser, MimeHeaders};

use super::{
    Env, PROCESS_LIMIT, dead_port, kill, killed, queue_many, summary_ids, tally, text,
    wait_bounded, wait_for_new,
};
use crate::support::envoi::Route;
use crate::support::smtp_server::{ServerOptions, TestServer};

/// 200 entries, four `flush --all` at once against a slowish server: each entry is
/// taken by exactly one flush and every Message-ID arrives exactly once.
#[test]
fn concurrent_flushes_never_duplicate() {
    const N: usize = 200;
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, Route::Config(&dead), N, 4);
    let listed = env.list(false);
    assert_eq!(listed.len(), N);
    assert!(listed.iter().all(|e| e["attempts"] == 1), "{listed:?}");

    let server = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(2)),
        ..ServerOptions::default()
    });
    let live = env.config("live", server.port());
    let args = env.flush_args(&live);
    let mut flushes: Vec<Child> = (0..4)
        .map(|i| env.spawn(&args, &format!("flush-{i}")))
        .collect();
    let mut sent_by = BTreeMap::<String, Vec<usize>>::new();
    let mut skipped = Vec::new();
    for (i, child) in flushes.iter_mut().enumerate() {
        let name = format!("flush-{i}");
        let status = wait_bounded(child, &name);
        let summary = env.finished(&name, status).expect(0).json();
        assert!(summary_ids(&summary, "deferred").is_empty(), "{summary}");
        assert!(summary_ids(&summary, "failed").is_empty(), "{summary}");
        for id in summary_ids(&summary, "sent") {
            sent_by.entry(id).or_default().push(i);
        }
        skipped.push(summary["skipped"].as_u64().unwrap_or_default());
    }
    eprintln!(
        "concurrent flushes: entries skipped (held by another flush) per process: {skipped:?}"
    );

    let twice: Vec<_> = sent_by.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "entries sent by two flushes: {twice:?}");
    assert_eq!(
        sent_by.keys().collect::<Vec<_>>(),
        queued.keys().collect::<Vec<_>>(),
        "the flushes did not send exactly the queued entries"
    );

    let messages = server.messages();
    let counts = tally(&messages);
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    assert_eq!(messages.len(), N);
    assert_eq!(
        counts.keys().collect::<BTreeSet<_>>(),
        queued.values().collect::<BTreeSet<_>>(),
        "delivered Message-IDs differ from the queued ones"
    );
    assert!(env.list(false).is_empty(), "the queue is not empty");
    assert!(env.list(true).is_empty(), "failed/ is not empty");
}

/// Flushes SIGKILLed at random points, then one left to finish: every Message-ID
/// arrives, duplicates only from the at-least-once window (at most one per kill), and
/// the queue and failed/ end empty.
#[test]
fn sigkill_during_flush_loses_nothing() {
    const N: usize = 30;
    const ROUNDS: usize = 8;
    let seed = fastrand::u64(..);
    eprintln!("sigkill_during_flush_loses_nothing: seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, Route::Config(&dead), N, 2);
    let server = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(20)),
        ..ServerOptions::default()
    });
    let live = env.config("live", server.port());
    let args = env.flush_args(&live);

    let mut kills = 0;
    for round in 0..ROUNDS {
        let name = format!("killed-flush-{round}");
        let mut child = env.spawn(&args, &name);
        thread::sleep(Duration::from_millis(rng.u64(10..400)));
        let status = kill(&mut child);
        if killed(status) {
            kills += 1;
        } else {
            env.finished(&name, status).expect(0);
        }
        // Whatever the kill interrupted, the outbox still reads.
        let left = env.list(false);
        assert!(env.list(true).is_empty(), "an entry went to failed/");
        if left.is_empty() {
            break;
        }
    }

    let summary = env.flush(&[&"--all".into(), &"--config".into(), &live.clone().into()]);
    assert!(summary_ids(&summary, "deferred").is_empty(), "{summary}");
    assert!(summary_ids(&summary, "failed").is_empty(), "{summary}");
    assert!(
        server.wait_idle(Duration::from_secs(10)),
        "the server is still busy"
    );

    let counts = tally(&server.messages());
    let missing: Vec<_> = queued
        .values()
        .filter(|m| !counts.contains_key(*m))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let unknown: Vec<_> = counts
        .keys()
        .filter(|m| !queued.values().any(|q| q == *m))
        .collect();
    assert!(unknown.is_empty(), "never queued: {unknown:?}");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "sigkill_during_flush_loses_nothing: {kills} kills, {duplicates} duplicate deliveries \
         (seed {seed})"
    );
    assert!(
        duplicates <= kills,
        "{duplicates} duplicates from {kills} kills: more than the at-least-once window allows"
    );
    assert!(env.list(false).is_empty(), "the queue is not empty");
    assert!(env.list(true).is_empty(), "failed/ is not empty");
}

/// `send --queue` of a 20 MiB attachment SIGKILLed while writing its entry, just after
/// the entry reached queue/ (its first attempt hanging on a silent server), and at random
/// points: the outbox always lists, every entry seen in queue/ stays there, and a flush
/// sends exactly the entries of queue/, each complete, ignoring the half-written ones
/// left in tmp/.
#[test]
fn sigkill_during_enqueue_loses_nothing() {
    const ROUNDS: usize = 8;
    let seed = fastrand::u64(..);
    eprintln!("sigkill_during_enqueue_loses_nothing: seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let env = Env::new();
    let attachment = env.home().join("big.bin");
    let mut content = vec![0u8; 20 << 20];
    rng.fill(&mut content);
    fs::write(&attachment, &content).expect("write the attachment");
    // The first attempt hangs on the greeting, so every run is still alive when killed.
    let silent = TestServer::start(ServerOptions {
        silent_greeting: true,
        ..ServerOptions::default()
    });
    let hung = env.config("hung", silent.port());
    let mut args = env.send_args(Route::Config(&hung), "a big one");
    args.extend([
        "--queue".into(),
        "--attach".into(),
        attachment.clone().into(),
    ]);

    let mut must_stay = Vec::new();
    let mut until_queued = Duration::ZERO;
    let mut leftovers_made = 0;
    for round in 0..ROUNDS {
        let name = format!("enqueue-{round}");
        let (queue_before, tmp_before) = (env.on_disk("queue"), env.on_disk("tmp"));
        let started = Instant::now();
        let mut child = env.spawn(&args, &name);
        let writing = match round % 4 {
            // Just after the rename into queue/: the entry must stay, never tried.
            0 => {
                let id = wait_for_new(&env, "queue", &queue_before, &mut child);
                until_queued = until_queued.max(started.elapsed());
                must_stay.push(id);
                None
            }
            // While the entry is being written in tmp/.
            1 | 3 => {
                let id = wait_for_new(&env, "tmp", &tmp_before, &mut child);
                thread::sleep(Duration::from_millis(rng.u64(0..15)));
                Some(id)
            }
            // Anywhere, from reading the input to waiting for the greeting.
            _ => {
                thread::sleep(until_queued.mul_f64(rng.f64() * 1.2));
                None
            }
        };
        let status = kill(&mut child);
        let (stdout, stderr) = env.logs(&name);
        assert!(
            killed(status),
            "{name} ended on its own ({status}): {stdout}\n{stderr}"
        );
        if let Some(id) = writing {
            // The entry is whole in queue/ or left behind in tmp/, never both or neither.
            let (in_tmp, in_queue) = (
                env.on_disk("tmp").contains(&id),
                env.on_disk("queue").contains(&id),
            );
            assert!(
                in_tmp != in_queue,
                "{id}: in tmp/ {in_tmp}, in queue/ {in_queue}"
            );
            leftovers_made += usize::from(in_tmp);
        }
        // Whatever the kill interrupted, both listings still read.
        env.list(false);
        assert!(env.list(true).is_empty(), "an entry went to failed/");
    }

    let listed = env.list(false);
    let expected: BTreeMap<String, String> = listed
        .iter()
        .map(|e| (text(e, "id").to_owned(), text(e, "message_id").to_owned()))
        .collect();
    assert_eq!(
        expected.keys().cloned().collect::<Vec<_>>(),
        env.on_disk("queue"),
        "queue/ holds entries that outbox list does not show"
    );
    for id in &must_stay {
        let entry = listed.iter().find(|e| text(e, "id") == id);
        let entry = entry.unwrap_or_else(|| panic!("{id} left the queue"));
        assert_eq!(entry["attempts"], 0, "{entry}");
    }
    eprintln!(
        "sigkill_during_enqueue_loses_nothing: {ROUNDS} kills, {} entries queued, {} \
         half-written entries left in tmp/ ({leftovers_made} by kills while writing)",
        expected.len(),
        env.on_disk("tmp").len()
    );

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let summary = env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    assert!(summary_ids(&summary, "deferred").is_empty(), "{summary}");
    assert!(summary_ids(&summary, "failed").is_empty(), "{summary}");
    let mut sent = summary_ids(&summary, "sent");
    sent.sort();
    assert_eq!(
        sent,
        expected.keys().cloned().collect::<Vec<_>>(),
        "{summary}"
    );

    let messages = server.messages();
    let counts = tally(&messages);
    assert_eq!(messages.len(), expected.len(), "{counts:?}");
    assert_eq!(
        counts.keys().collect::<BTreeSet<_>>(),
        expected.values().collect::<BTreeSet<_>>(),
        "delivered Message-IDs differ from the queued ones"
    );
    for m in &messages {
        let parsed = MessageParser::default().parse(&m.data).expect("a message");
        let part = parsed
            .attachments()
            .find(|a| a.attachment_name() == Some("big.bin"))
            .expect("the attachment arrived");
        assert!(
            part.contents() == content.as_slice(),
            "a partial or damaged attachment was sent ({} of {} bytes)",
            part.contents().len(),
            content.len()
        );
    }
    assert!(env.list(false).is_empty(), "the queue is not empty");
    assert!(env.list(true).is_empty(), "failed/ is not empty");
}

/// Once the server has answered 250 to the final dot, the entry is delivered: a flush
/// killed while it waits for the reply to QUIT must not leave it queued for a resend.
/// Regression: a flush recorded the delivery only after QUIT's reply, so a kill (or a slow
/// QUIT) after the 250 sent the message again.
#[test]
fn a_flush_killed_after_the_final_250_does_not_resend() {
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, Route::Config(&dead), 1, 1);
    let mid = queued.values().next().unwrap().clone();
    // Every reply comes 300 ms late, QUIT's 221 included.
    let server = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(300)),
        ..ServerOptions::default()
    });
    let live = env.config("live", server.port());
    let mut child = env.spawn(&env.flush_args(&live), "flush");
    // envoi says QUIT only after reading the 250 to the final dot.
    let deadline = Instant::now() + PROCESS_LIMIT;
    while !server
        .transcript()
        .iter()
        .any(|l| l.eq_ignore_ascii_case("QUIT"))
    {
        if Instant::now() >= deadline || child.try_wait().expect("try_wait").is_some() {
            kill(&mut child);
            panic!("the flush never said QUIT: {:?}", env.logs("flush"));
        }
        thread::sleep(Duration::from_millis(1));
    }
    let status = kill(&mut child);
    assert!(killed(status), "the flush ended before the kill: {status}");
    assert_eq!(tally(&server.messages()).get(&mid), Some(&1));

    let left = env.list(false);
    env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    let counts = tally(&server.messages());
    assert!(
        left.is_empty() && counts.get(&mid) == Some(&1),
        "accepted with 250, still queued after the kill ({left:?}), delivered {:?} times",
        counts.get(&mid)
    );
}

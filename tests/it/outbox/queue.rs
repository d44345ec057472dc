//! `send --queue`, `outbox list|flush|drop`: what is queued, kept, sent once and dropped.

use std::fs;

use serde_json::Value;

use super::{
    Env, FROM, TO, dead_port, message_id, queue_many, same_message, stored_message, summary_ids,
    tally, text,
};
use crate::support::envoi::{Config, ExpectExit, Route, envoi, send};
use crate::support::smtp_server::{ServerOptions, TestServer};

/// `send --queue` to a working server sends at once and leaves nothing behind.
#[test]
fn queue_to_a_working_server_sends_at_once() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions::default());
    let json = env
        .send(Route::Url(server.port()), "queued and sent")
        .arg("--queue")
        .expect_exit(0)
        .json();
    assert_eq!(text(&json, "status"), "sent", "{json}");

    let messages = server.messages();
    assert_eq!(messages.len(), 1, "expected exactly one message");
    let counts = tally(&messages);
    assert_eq!(
        counts.get(text(&json, "message_id")),
        Some(&1),
        "{counts:?}"
    );

    assert!(env.list(false).is_empty(), "the queue is not empty");
    assert!(env.list(true).is_empty(), "failed/ is not empty");
    assert!(env.on_disk("queue").is_empty());
    assert!(
        env.on_disk("tmp").is_empty(),
        "leftovers: {:?}",
        env.on_disk("tmp")
    );
}

/// A 451 at the first attempt queues the message (exit 0, `queued`); `flush` leaves it
/// until it is due, `flush --all` sends exactly the stored bytes once, and a later flush
/// sends nothing more.
#[test]
fn queue_tempfail_then_flush() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        tempfail_transactions: 1,
        ..ServerOptions::default()
    });
    let json = env
        .send(Route::Url(server.port()), "deferred once")
        .arg("--queue")
        .expect_exit(0)
        .json();
    assert_eq!(text(&json, "status"), "queued", "{json}");
    let id = text(&json, "outbox_id").to_owned();
    let mid = text(&json, "message_id").to_owned();
    assert!(text(&json, "reason").contains("451"), "{json}");
    assert!(server.messages().is_empty(), "sent although refused");

    let list = env.list(false);
    assert_eq!(list.len(), 1, "{list:?}");
    let entry = &list[0];
    assert_eq!(text(entry, "id"), id);
    assert_eq!(text(entry, "message_id"), mid);
    assert_eq!(entry["attempts"], 1, "{entry}");
    assert!(text(entry, "last_error").contains("451"), "{entry}");
    assert_eq!(entry["pending"], serde_json::json!([TO]), "{entry}");
    let stored = stored_message(&env, &id);

    // Not due yet (the next attempt is a minute away): skipped, nothing sent.
    let summary = env.flush(&[]);
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert!(summary_ids(&summary, "sent").is_empty(), "{summary}");
    assert!(
        server.messages().is_empty(),
        "a flush sent an entry not due"
    );

    let summary = env.flush(&[&"--all".into()]);
    assert_eq!(
        summary_ids(&summary, "sent"),
        std::slice::from_ref(&id),
        "{summary}"
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "expected exactly one message");
    assert_eq!(tally(&messages).get(&mid), Some(&1));
    assert!(
        same_message(&messages[0].data, &stored),
        "the flush did not send the stored bytes"
    );
    assert!(env.list(false).is_empty(), "the queue is not empty");

    let summary = env.flush(&[&"--all".into()]);
    assert!(summary_ids(&summary, "sent").is_empty(), "{summary}");
    assert_eq!(summary["skipped"], 0, "{summary}");
    assert_eq!(server.messages().len(), 1, "sent again by a later flush");
}

/// A queued message holds its attachment whole: the file attached by path is written
/// into the entry, so removing the file before the flush changes nothing.
#[test]
fn a_queued_attachment_does_not_depend_on_its_file() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        tempfail_transactions: 1,
        ..ServerOptions::default()
    });
    let path = env.home().join("report.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&path, &data).unwrap();
    let json = env
        .send(Route::Url(server.port()), "with a file")
        .arg("--queue")
        .arg("--attach")
        .arg(&path)
        .expect_exit(0)
        .json();
    assert_eq!(text(&json, "status"), "queued", "{json}");
    fs::remove_file(&path).unwrap();

    let summary = env.flush(&[&"--all".into()]);
    assert_eq!(summary_ids(&summary, "sent").len(), 1, "{summary}");
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "expected exactly one message");
    let parsed = mail_parser::MessageParser::default()
        .parse(&messages[0].data)
        .unwrap();
    let part = parsed.attachments().next().expect("the attachment");
    assert!(part.contents() == data.as_slice(), "the attachment changed");
}

/// A 550 for the only recipient: exit 67 naming `failed/<id>`, the entry kept in failed/
/// with the server's reply, nothing queued, nothing delivered.
#[test]
fn queue_permanent_refusal_goes_to_failed() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        refuse_rcpt: vec![(TO.into(), 550)],
        ..ServerOptions::default()
    });
    let json = env
        .send(Route::Url(server.port()), "refused for good")
        .arg("--queue")
        .expect_exit(67)
        .json();
    assert_eq!(text(&json, "status"), "error", "{json}");
    assert_eq!(text(&json, "kind"), "recipient_refused", "{json}");
    let message = text(&json, "message");
    let id: String = message
        .split_once("failed/")
        .unwrap_or_else(|| panic!("no failed/ id in {message:?}"))
        .1
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    assert!(!id.is_empty(), "{message}");

    let failed = env.list(true);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(text(&failed[0], "id"), id);
    let last_error = text(&failed[0], "last_error");
    assert!(
        last_error.contains("550") && last_error.contains("refused by test server"),
        "{last_error}"
    );
    assert_eq!(failed[0]["refused"][0]["address"], TO, "{}", failed[0]);
    assert!(
        env.outbox
            .join("failed")
            .join(&id)
            .join("message.eml")
            .is_file()
    );

    assert!(
        env.list(false).is_empty(),
        "the refused entry is still queued"
    );
    assert!(
        server.messages().is_empty(),
        "a refused message was delivered"
    );
    // A flush does not touch failed/.
    env.flush(&[&"--all".into()]);
    assert!(server.messages().is_empty(), "failed/ was flushed");
}

/// `outbox drop ID` removes a queued entry for good; a second drop exits 66; an id that
/// could climb out of the outbox is a usage error.
#[test]
fn outbox_drop() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        tempfail_transactions: 1,
        ..ServerOptions::default()
    });
    let json = env
        .send(Route::Url(server.port()), "to be dropped")
        .arg("--queue")
        .expect_exit(0)
        .json();
    assert_eq!(text(&json, "status"), "queued", "{json}");
    let id = text(&json, "outbox_id").to_owned();
    assert_eq!(env.list(false).len(), 1);

    let dropped = env.outbox_cmd("drop").arg(&id).expect_exit(0).json();
    assert_eq!(text(&dropped, "status"), "dropped", "{dropped}");
    assert_eq!(text(&dropped, "id"), id);
    assert!(env.list(false).is_empty(), "still listed after drop");
    assert!(env.list(true).is_empty(), "a dropped entry went to failed/");

    let again = env.outbox_cmd("drop").arg(&id).expect_exit(66).json();
    assert_eq!(text(&again, "kind"), "no_input", "{again}");

    env.outbox_cmd("drop")
        .arg("../queue")
        .expect_exit(64)
        .json();

    // Nothing is left to send, even though the server now accepts everything.
    let summary = env.flush(&[&"--all".into()]);
    assert!(summary_ids(&summary, "sent").is_empty(), "{summary}");
    assert!(server.messages().is_empty(), "a dropped entry was sent");
}

/// The connection drops after the final dot, before any reply: the outcome is unknown, so
/// the entry stays queued (exit 0, `queued`) and the flush sends the very same message
/// (same Message-ID, same bytes) again, letting receivers recognise the duplicate.
#[test]
fn outcome_unknown_stays_queued_and_resends_the_same_message() {
    let env = Env::new();
    let dropping = TestServer::start(ServerOptions {
        drop_after_final_dot: true,
        ..ServerOptions::default()
    });
    let config = env.config("dropping", dropping.port());
    let json = env
        .send(Route::Config(&config), "did it arrive?")
        .arg("--queue")
        .expect_exit(0)
        .json();
    assert_eq!(text(&json, "status"), "queued", "{json}");
    let mid = text(&json, "message_id");
    assert!(text(&json, "reason").contains("may or may not"), "{json}");
    assert!(dropping.messages().is_empty());
    let unacknowledged = dropping.unacknowledged();
    assert_eq!(
        unacknowledged.len(),
        1,
        "the message did not reach the final dot"
    );
    assert_eq!(message_id(&unacknowledged[0].data), mid);

    let listed = env.list(false);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["attempts"], 1, "{}", listed[0]);

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    let messages = server.messages();
    assert_eq!(tally(&messages).get(mid), Some(&1), "{messages:?}");
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].data, unacknowledged[0].data,
        "the resend differs"
    );
    assert!(env.list(false).is_empty(), "the queue is not empty");
}

/// `--queue --allow-partial`: a recipient answered 450 (try later) is kept for a later
/// flush; only the recipient that got the message leaves the entry.
/// Regression: the 450 recipient was dropped from the outbox and never retried.
#[test]
fn queue_allow_partial_keeps_deferred_recipients() {
    const LATER: &str = "later@example.com";
    let env = Env::new();
    let busy = TestServer::start(ServerOptions {
        refuse_rcpt: vec![(LATER.into(), 450)],
        ..ServerOptions::default()
    });
    let first = env.config("busy", busy.port());
    let json = env
        .send(Route::Config(&first), "one now, one later")
        .args(["--queue", "--allow-partial", "--to", LATER])
        .expect_exit(0)
        .json();
    let mid = text(&json, "message_id").to_owned();
    let now = busy.messages();
    assert_eq!(now.len(), 1, "{json}");
    assert_eq!(now[0].rcpt_to, [TO]);

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let listed = env.list(false);
    env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    let later: Vec<_> = server
        .messages()
        .into_iter()
        .map(|m| (message_id(&m.data), m.rcpt_to))
        .collect();
    assert_eq!(
        later,
        [(mid, vec![LATER.to_owned()])],
        "{LATER} got a 450 and was never retried; queue after the first attempt: {listed:?}; \
         send printed {json}"
    );
}

/// One entry whose state cannot be used does not hold up the queue behind it.
/// Regression: such an entry stopped the whole flush.
#[test]
fn a_damaged_entry_does_not_block_the_flush() {
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, Route::Config(&dead), 2, 1);
    let oldest = queued.keys().next().unwrap().clone();
    let state_path = env.outbox.join("queue").join(&oldest).join("state.json");
    let state = fs::read_to_string(&state_path).unwrap();
    fs::write(&state_path, state.replace(TO, "not an address")).unwrap();

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let summary = env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    let other = queued.keys().nth(1).unwrap();
    assert_eq!(
        summary_ids(&summary, "sent"),
        std::slice::from_ref(other),
        "{summary}"
    );
    assert_eq!(server.messages().len(), 1);
}

/// Regression: `envoi outbox list|flush` ignored a profile's `outbox_dir`, which `send`
/// honoured, so a message queued through the profile was never flushed unless
/// `--outbox-dir` was given again. Now every command finds the outbox the same way.
#[test]
fn outbox_commands_find_the_profiles_outbox_dir() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        tempfail_transactions: 1,
        ..ServerOptions::default()
    });
    let outbox = env.home().join("reports-outbox");
    let other = env.home().join("other-outbox");
    let config = Config::new(server.port(), "none")
        .line(&format!("outbox_dir = \"{}\"", outbox.display()))
        .line(&format!(
            "[profiles.other]\nhost = \"localhost\"\nport = {}\nsecurity = \"none\"\n\
             outbox_dir = \"{}\"",
            server.port(),
            other.display()
        ))
        .write(env.home());
    let json = send(env.home(), Route::Config(&config))
        .args(["--queue", "--from", FROM, "--to", TO, "--json"])
        .args([
            "--subject",
            "through the profile's outbox",
            "--body",
            "queued",
        ])
        .expect_exit(0)
        .json();
    assert_eq!(text(&json, "status"), "queued", "{json}");
    let id = text(&json, "outbox_id").to_owned();
    let mid = text(&json, "message_id").to_owned();
    assert!(outbox.join("queue").join(&id).is_dir(), "not in outbox_dir");
    let platform = env.home().join(".local/share/envoi/outbox");
    assert!(!platform.exists(), "the platform outbox was used");

    let outbox_cmd = |sub: &str| {
        let mut cmd = envoi(env.home());
        cmd.args(["outbox", sub, "--json", "--config"]).arg(&config);
        cmd
    };
    let ids = |list: Value| -> Vec<String> {
        let entries = list.as_array().cloned().unwrap_or_default();
        entries.iter().map(|e| text(e, "id").to_owned()).collect()
    };
    assert_eq!(
        ids(outbox_cmd("list").expect_exit(0).json()),
        std::slice::from_ref(&id)
    );
    let elsewhere = outbox_cmd("list")
        .env("ENVOI_PROFILE", "other")
        .expect_exit(0)
        .json();
    assert_eq!(
        ids(elsewhere),
        Vec::<String>::new(),
        "$ENVOI_PROFILE's outbox"
    );

    let summary = outbox_cmd("flush").arg("--all").expect_exit(0).json();
    assert_eq!(summary_ids(&summary, "sent"), [id], "{summary}");
    assert_eq!(tally(&server.messages()).get(&mid), Some(&1));
    assert_eq!(
        ids(outbox_cmd("list").expect_exit(0).json()),
        Vec::<String>::new()
    );
}

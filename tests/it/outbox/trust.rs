//! The outbox trusts only itself: a folder or an entry of another user is refused, an
//! entry's `route.config` must be a config its owner alone can change, a message cut
//! short since it was queued is never sent, and an entry that lost its lock file is
//! still sent (audit cases OB03, OB08, OB09).

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};

use super::{Env, dead_port, queue_many, summary_ids, text};
use crate::support::envoi::{Config, ExpectExit, Route};
use crate::support::smtp_server::{ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};
use crate::trust::running_as_root;

/// The uid the ownership tests give files to: `nobody`.
const NOBODY: u32 = 65534;

/// The server a planted entry points at: it wants the canary login, so a connection
/// that got that far would show AUTH in its transcript.
fn attacker() -> TestServer {
    TestServer::start(ServerOptions {
        auth: Some((USER.into(), PASSWORD.into())),
        ..ServerOptions::default()
    })
}

/// OB03: an outbox folder that belongs to another user, or that others can write, is
/// refused (78, saying whose it is and the fix) before anything connects or is queued.
#[test]
fn ob03_an_outbox_folder_of_another_user_or_open_to_others_is_refused() {
    if !running_as_root() {
        eprintln!("skipped: giving the outbox to another user needs root");
        return;
    }
    let env = Env::new();
    let server = TestServer::start(ServerOptions::default());
    fs::create_dir_all(env.outbox.join("queue")).unwrap();
    for dir in [env.outbox.clone(), env.outbox.join("queue")] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let run = env
        .send(Route::Url(server.port()), "into a stranger's outbox")
        .arg("--queue")
        .expect_exit(78);
    assert!(
        run.stderr.contains("belongs to another user (uid 65534")
            && run.stderr.contains("outbox_dir"),
        "{}",
        run.stderr
    );
    assert_eq!(server.connections(), 0, "sent through a foreign outbox");

    // Ours again, but writable by anyone: still refused.
    chown(&env.outbox, Some(0), Some(0)).unwrap();
    let run = env
        .send(Route::Url(server.port()), "into an open outbox")
        .arg("--queue")
        .expect_exit(78);
    assert!(run.stderr.contains("chmod go-w"), "{}", run.stderr);
    assert_eq!(server.connections(), 0);
    assert!(
        env.on_disk("queue").is_empty(),
        "{:?}",
        env.on_disk("queue")
    );
}

/// OB03 (the audit's attack): an entry whose `state.json` another user wrote, routed to
/// their config and server, is skipped as damaged; an entry of our own whose
/// `route.config` names a config of another user with `password_env` is not sent
/// either. The attacker's server never sees a connection, let alone the password.
#[test]
fn ob03_a_planted_entry_never_reaches_the_planters_server() {
    if !running_as_root() {
        eprintln!("skipped: planting files of another user needs root");
        return;
    }
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, Route::Config(&dead), 1, 1);
    let id = queued.keys().next().unwrap().clone();

    let server = attacker();
    let evil_dir = env.home().join("evil");
    fs::create_dir_all(&evil_dir).unwrap();
    let evil = Config::new(server.port(), "none")
        .login()
        .line("allow_plaintext_auth = true")
        .write(&evil_dir);
    chown(&evil, Some(NOBODY), Some(NOBODY)).unwrap();
    let state_path = env.outbox.join("queue").join(&id).join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state_path).unwrap()).unwrap();
    state["route"]["config"] = evil.display().to_string().into();
    fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    // Planted: the state is another user's.
    chown(&state_path, Some(NOBODY), Some(NOBODY)).unwrap();
    let run = env
        .outbox_cmd("flush")
        .arg("--all")
        .env("ENVOI_TEST_PASSWORD", PASSWORD)
        .expect_exit(0);
    assert!(
        run.stderr.contains(&format!("skipping outbox entry {id}"))
            && run.stderr.contains("belongs to another user"),
        "{}",
        run.stderr
    );
    assert!(
        summary_ids(&run.json(), "sent").is_empty(),
        "{}",
        run.stdout
    );

    // Ours, but routed to a config another user owns: deferred, saying why.
    chown(&state_path, Some(0), Some(0)).unwrap();
    let run = env
        .outbox_cmd("flush")
        .arg("--all")
        .env("ENVOI_TEST_PASSWORD", PASSWORD)
        .expect_exit(0);
    let summary = run.json();
    assert_eq!(
        summary_ids(&summary, "deferred"),
        std::slice::from_ref(&id),
        "{summary}"
    );
    assert!(
        text(&summary["deferred"][0], "reason").contains("belongs to another user"),
        "{summary}"
    );
    assert_eq!(server.connections(), 0, "{:?}", server.transcript());
}

/// OB08: a `message.eml` cut short after it was queued is not sent: the entry goes to
/// `failed/` saying how long it is and how long it was written.
#[test]
fn ob08_a_truncated_message_is_not_sent_and_goes_to_failed() {
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, Route::Config(&dead), 1, 1);
    let id = queued.keys().next().unwrap().clone();
    let path = env.outbox.join("queue").join(&id).join("message.eml");
    let written = fs::read(&path).unwrap();
    fs::write(&path, &written[..100]).unwrap();

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let summary = env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    assert_eq!(
        summary_ids(&summary, "failed"),
        std::slice::from_ref(&id),
        "{summary}"
    );
    assert!(server.messages().is_empty(), "a truncated message was sent");
    let failed = env.list(true);
    let reason = text(&failed[0], "last_error");
    assert!(
        reason.contains("message.eml is 100 bytes,")
            && reason
                .replace(',', "")
                .contains(&format!("{} were written", written.len())),
        "{reason}"
    );
}

/// OB08: entries written before envoi recorded a length are still sent as they are.
#[test]
fn ob08_an_entry_without_a_recorded_length_is_still_sent() {
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, Route::Config(&dead), 1, 1);
    let id = queued.keys().next().unwrap().clone();
    let state_path = env.outbox.join("queue").join(&id).join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state_path).unwrap()).unwrap();
    assert!(state["length"].is_u64(), "no length recorded: {state}");
    let object = state.as_object_mut().unwrap();
    object.remove("length");
    object.remove("sha256");
    fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let summary = env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    assert_eq!(summary_ids(&summary, "sent"), [id], "{summary}");
    assert_eq!(server.messages().len(), 1);
}

/// OB09: an entry whose `lock` file is gone was skipped on every flush, forever and
/// without a word; its lock is made anew and it is sent.
#[test]
fn ob09_an_entry_without_its_lock_file_is_sent() {
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, Route::Config(&dead), 1, 1);
    let id = queued.keys().next().unwrap().clone();
    fs::remove_file(env.outbox.join("queue").join(&id).join("lock")).unwrap();

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let summary = env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    assert_eq!(summary_ids(&summary, "sent"), [id], "{summary}");
    assert_eq!(summary["skipped"], 0, "{summary}");
    assert_eq!(server.messages().len(), 1);
}

//! `policy.max_messages_per_hour` and `max_messages_per_day`: how many messages this
//! outbox folder's sends took in the last hour and day, so a loop or a runaway batch
//! stops across runs. `send-counts` in the outbox folder holds one line per message (the
//! second it was let through), read and replaced under `send-counts.lock`; lines older
//! than a day are dropped as it is written. A message takes its slot before it goes
//! (a failed send still counts: the cap is on attempts, which is what a loop makes).
//!
//! A cap reached is 75, not 65: the same message goes later, and a caller that retries
//! on 75 (cron, CI, the outbox) waits as it should. Counted per outbox folder (one user
//! or machine). With a shared PostgreSQL ledger the database counts them instead
//! (`pg_ledger`'s `take_slot`), and this file is not used.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::durable::{self, StateAccess, open_state_file};
use crate::error::{Error, ErrorKind, Result};
use crate::ownership;
use crate::profile::{RecipientPolicy, Rule};

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// Takes one message's slot at `now` (seconds since the epoch) in the counts of `dir`:
/// 75 naming the cap, and when the next slot frees, when one is reached. Nothing is read
/// or written when the policy sets no cap.
/// Another envoi holding the counts is waited for until `deadline` (it holds them for
/// one read and write; a stopped one must not hold this send past its deadline): then 75.
pub(crate) fn take(
    dir: &Path,
    policy: &RecipientPolicy,
    now: u64,
    deadline: Instant,
) -> Result<()> {
    if policy.max_per_hour.is_none() && policy.max_per_day.is_none() {
        return Ok(());
    }
    // A file that cannot be read or written is a passing trouble of the disk (full, an
    // NFS mount away): 75. What is wrong with the folder itself is found by the checks.
    let io = |what: &str, path: &Path, e: std::io::Error| {
        Error::new(
            ErrorKind::Temporary,
            format!("cannot {what} {}: {e}", path.display()),
        )
    };
    durable::create_private_dir(dir, true).map_err(|e| io("create", dir, e))?;
    ownership::check_owned_dir(dir, "the outbox folder", crate::outbox::queue::INSTEAD)?;
    let lock_path = dir.join("send-counts.lock");
    let lock = open_state_file("the send counts' lock", &lock_path, StateAccess::Write)?.file;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "another envoi held {} until the deadline; nothing was sent",
                        lock_path.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path, e)),
        }
    }
    let path = dir.join("send-counts");
    let mut times: Vec<u64> = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        _ => {
            let mut file = open_state_file("the send counts", &path, StateAccess::Read)?.file;
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.read_to_end(&mut bytes))
                .map_err(|e| io("read", &path, e))?;
            let text = String::from_utf8_lossy(&bytes);
            // A line that is not a time is dropped: the counts only ever err upwards
            // once the file is rewritten, never by letting a damaged file stop sends.
            text.lines().filter_map(|l| l.trim().parse().ok()).collect()
        }
    };
    times.retain(|t| now.saturating_sub(*t) < DAY && *t <= now + HOUR);
    times.sort_unstable();
    for (cap, window, key) in [
        (&policy.max_per_hour, HOUR, "max_messages_per_hour"),
        (&policy.max_per_day, DAY, "max_messages_per_day"),
    ] {
        if let Some(Rule { value, origin }) = cap {
            let within: Vec<u64> = times
                .iter()
                .copied()
                .filter(|t| now.saturating_sub(*t) < window)
                .collect();
            let cap = usize::try_from(*value).unwrap_or(usize::MAX);
            if within.len() >= cap {
                // The oldest of the last `cap` sends leaves the window first.
                let frees = within
                    .get(within.len() - cap)
                    .map_or(now, |t| t + window)
                    .saturating_sub(now)
                    .max(1);
                return Err(Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "policy.{key} {value} reached ({origin}): {} messages went from this \
                         outbox folder in the last {}; nothing was sent; the next may go in \
                         {frees} s",
                        within.len(),
                        if window == HOUR { "hour" } else { "day" }
                    ),
                ));
            }
        }
    }
    times.push(now);
    let text: String = times.iter().map(|t| format!("{t}\n")).collect();
    durable::replace_file(&path, &path.with_extension("tmp"), text.as_bytes())
        .map_err(|e| io("write", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RuleOrigin;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn policy(hour: Option<u32>, day: Option<u32>) -> RecipientPolicy {
        let origin = RuleOrigin {
            level: "profile \"p\"".into(),
            file: "/f".into(),
        };
        let rule = |value| Rule {
            value,
            origin: origin.clone(),
        };
        RecipientPolicy {
            max_per_hour: hour.map(rule),
            max_per_day: day.map(rule),
            ..RecipientPolicy::default()
        }
    }

    #[test]
    fn a_cap_stops_the_next_message_until_a_slot_frees() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy(Some(2), Some(3));
        let t = 1_000_000;
        take(dir.path(), &p, t, far()).unwrap();
        take(dir.path(), &p, t + 10, far()).unwrap();
        let err = take(dir.path(), &p, t + 20, far()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Temporary);
        assert!(
            err.message()
                .contains("policy.max_messages_per_hour 2 reached")
                && err.message().contains("in 3580 s"),
            "{err}"
        );
        // An hour after the first, one slot is free; the day's cap then holds.
        take(dir.path(), &p, t + HOUR, far()).unwrap();
        let err = take(dir.path(), &p, t + 2 * HOUR, far()).unwrap_err();
        assert!(err.message().contains("max_messages_per_day 3"), "{err}");
        take(dir.path(), &p, t + DAY, far()).unwrap();
    }

    #[test]
    fn no_cap_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        take(&dir.path().join("outbox"), &policy(None, None), 1, far()).unwrap();
        assert!(!dir.path().join("outbox").exists());
    }

    #[test]
    fn a_held_lock_is_waited_for_until_the_deadline_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy(Some(5), None);
        take(dir.path(), &p, 1_000_000, far()).unwrap();
        let held = fs::File::open(dir.path().join("send-counts.lock")).unwrap();
        held.lock().unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let err = take(dir.path(), &p, 1_000_010, deadline).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Temporary, "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
    }

    #[test]
    fn a_damaged_counts_file_does_not_stop_sends() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy(Some(5), None);
        take(dir.path(), &p, 1_000_000, far()).unwrap();
        let path = dir.path().join("send-counts");
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"\xff\xfe not a time\n");
        fs::write(&path, bytes).unwrap();
        take(dir.path(), &p, 1_000_010, far()).unwrap();
    }
}

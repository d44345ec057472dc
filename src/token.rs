//! Random tokens for names that must be unique without coordination: Message-IDs and
//! outbox entry ids.
//!
//! fastrand's own global generator seeds from the clock and the thread id only, so two
//! envoi processes started in the same instant could draw the same "random" ids. Each
//! thread's generator here is seeded from the operating system's randomness (the keys
//! std draws for `RandomState`), the process id and the time.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static RNG: RefCell<fastrand::Rng> = RefCell::new(seeded());
}

fn seeded() -> fastrand::Rng {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    hasher.write_u128(nanos);
    fastrand::Rng::with_seed(hasher.finish())
}

/// `len` random ASCII letters and digits.
pub(crate) fn alphanumeric(len: usize) -> String {
    RNG.with(|rng| {
        let mut rng = rng.borrow_mut();
        std::iter::repeat_with(|| rng.alphanumeric())
            .take(len)
            .collect()
    })
}

/// FNV-1a (64 bits) of `bytes`: a file name made from a key (an idempotency key, an
/// OAuth2 identity) that stays the same across Rust releases, unlike std's hasher.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Format and uniqueness across threads. What made ids repeat — two processes
    /// started in the same instant — cannot be staged here; it rests on the seed taking
    /// std's OS-random keys and the process id, as `seeded` shows.
    #[test]
    fn tokens_are_alphanumeric_and_distinct_across_threads() {
        let a: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| alphanumeric(20))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut unique = a.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), a.len(), "{a:?}");
        assert!(
            a.iter()
                .all(|t| t.len() == 20 && t.chars().all(|c| c.is_ascii_alphanumeric()))
        );
    }
}

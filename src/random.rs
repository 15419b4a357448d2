//! The injected source of randomness.
//!
//! Consent ids, token ids, attestation ids and generated keys all draw from a [`RandomSource`],
//! so a test can make them deterministic and a fault test can make randomness fail. This module
//! never falls back to anything predictable: when the source fails, the caller gets
//! [`RandomError`] and must fail closed.
//!
//! The ids a bank remembers per access (an access token's and a DPoP proof's `jti`) are
//! time-ordered ([`OrderedIds`]): a prefix from the second they are made in and a count within
//! it, then 112 random bits. Ordered, the ids a gate takes in one second land at the right edge
//! of its table of presented ids, a few pages a commit, instead of one page each at random within
//! that second's range.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The random source failed to produce bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the random number generator failed")]
pub struct RandomError;

/// A source of random bytes.
///
/// Production code uses the operating system's CSPRNG, [`SystemRandom`](ring::rand::SystemRandom)
/// (this trait is implemented for it). `ring`'s own trait is sealed, hence this one: it lets
/// tests inject a seeded source (`testing::SeededRandom`, feature `testing`) or a failing one.
pub trait RandomSource: Send + Sync {
    /// Fills `destination` with random bytes.
    ///
    /// # Errors
    /// [`RandomError`] when no randomness is available; `destination` must then not be used.
    fn fill(&self, destination: &mut [u8]) -> Result<(), RandomError>;
}

impl RandomSource for ring::rand::SystemRandom {
    fn fill(&self, destination: &mut [u8]) -> Result<(), RandomError> {
        ring::rand::SecureRandom::fill(self, destination).map_err(|_| RandomError)
    }
}

impl<R: RandomSource + ?Sized> RandomSource for Arc<R> {
    fn fill(&self, destination: &mut [u8]) -> Result<(), RandomError> {
        (**self).fill(destination)
    }
}

impl<R: RandomSource + ?Sized> RandomSource for &R {
    fn fill(&self, destination: &mut [u8]) -> Result<(), RandomError> {
        (**self).fill(destination)
    }
}

/// 16 random bytes, base64url: the id material for consents, attestations and tokens.
pub(crate) fn random_token(random: &dyn RandomSource) -> Result<String, RandomError> {
    let mut bytes = [0u8; 16];
    random.fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Bits of an [`OrderedIds`] prefix that count the ids made for one audience within a second.
const COUNTER_BITS: u32 = 20;
/// The last second an [`OrderedIds`] prefix can hold (36 bits: the year 4147).
const LAST_SECOND: u64 = (1 << 36) - 1;
/// The largest [`OrderedIds`] prefix (56 bits).
const LAST_PREFIX: u64 = (1 << 56) - 1;
/// How many audiences an [`OrderedIds`] keeps a count for. Past it, the counts of a second before
/// the last are dropped, and all of them when every one is live (they start again).
const AUDIENCES: usize = 1024;

/// Makes time-ordered ids, for one audience at a time (a bank, for a platform): each is 21
/// bytes, the first 7 a prefix, the other 14 random (112 bits: RFC 9449 asks a proof's `jti` for
/// at least 96), written in 28 characters of the base64url alphabet taken in ASCII order, so that
/// their text sorts as their bytes.
///
/// The prefix is the second it is made in (`now`: the crate's clocks keep whole seconds) and how
/// many ids this maker made for the same audience earlier in that second: the ids one bank is
/// given sort in the order they were made, and land at the right edge of its table of presented
/// ids. What a prefix tells its reader is the order in which the ids for that audience were made,
/// and how many (counting ids made and never presented: a token not used, a proof not sent); the
/// counts are kept per audience so that nothing in an id tells one bank, or one platform, how
/// many ids the same maker made for another. When the clock goes back by a second or less, the
/// count goes on from the last id's; further back, it starts again from `now`'s second (the
/// random part alone tells the ids apart).
#[derive(Debug, Default)]
pub(crate) struct OrderedIds {
    /// Per audience, the prefix of the last id made for it.
    last: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl OrderedIds {
    /// A maker that has made no id.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A fresh id for `audience`, made at `now`.
    ///
    /// # Errors
    /// [`RandomError`] when `random` fails.
    pub(crate) fn next(
        &self,
        audience: &str,
        now: time::OffsetDateTime,
        random: &dyn RandomSource,
    ) -> Result<String, RandomError> {
        let second = u64::try_from(now.unix_timestamp())
            .unwrap_or(0)
            .min(LAST_SECOND);
        let prefix = {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(kept) = last.get_mut(audience) {
                *kept = next_prefix(Some(*kept), second);
                *kept
            } else {
                if last.len() >= AUDIENCES {
                    // Counts of a second before the last are as good as none: drop those first,
                    // and all only when every one is live.
                    last.retain(|_, kept| (*kept >> COUNTER_BITS).saturating_add(1) >= second);
                    if last.len() >= AUDIENCES {
                        last.clear();
                    }
                }
                let prefix = next_prefix(None, second);
                last.insert(audience.to_owned(), prefix);
                prefix
            }
        };
        let mut bytes = [0u8; 21];
        let (head, rest) = bytes.split_at_mut(7);
        head.copy_from_slice(prefix.to_be_bytes().get(1..).unwrap_or_default());
        random.fill(rest)?;
        Ok(sortable_base64(&bytes))
    }
}

/// The prefix after `previous` (of the same audience) for an id made in `second`: one more than
/// `previous` when it is of this second or at most one ahead of it, else the second's first.
fn next_prefix(previous: Option<u64>, second: u64) -> u64 {
    let first = second << COUNTER_BITS;
    match previous {
        Some(previous) if previous >= first && previous >> COUNTER_BITS <= second + 1 => {
            previous.saturating_add(1).min(LAST_PREFIX)
        }
        _ => first,
    }
}

/// `bytes` in the base64url alphabet taken in ASCII order (`-`, digits, capitals, `_`, small
/// letters), four characters for each three bytes: the text sorts as the bytes do.
fn sortable_base64(bytes: &[u8; 21]) -> String {
    let mut text = String::with_capacity(28);
    for group in bytes.chunks_exact(3) {
        if let [a, b, c] = *group {
            let n = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
            for shift in [18, 12, 6, 0] {
                text.push(sortable_digit((n >> shift) & 63));
            }
        }
    }
    text
}

/// The character of the six-bit `value` in the base64url alphabet taken in ASCII order.
fn sortable_digit(value: u32) -> char {
    let (first, offset) = match value {
        0 => (b'-', 0),
        1..=10 => (b'0', 1),
        11..=36 => (b'A', 11),
        37 => (b'_', 37),
        _ => (b'a', 38),
    };
    char::from(first + u8::try_from(value - offset).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;

    impl RandomSource for Broken {
        fn fill(&self, _: &mut [u8]) -> Result<(), RandomError> {
            Err(RandomError)
        }
    }

    #[test]
    fn tokens_are_fresh_and_failures_are_reported() {
        let system = ring::rand::SystemRandom::new();
        let a = random_token(&system).unwrap();
        assert_eq!(a.len(), 22);
        assert_ne!(a, random_token(&system).unwrap());
        assert_eq!(random_token(&Broken), Err(RandomError));
    }

    const BASE64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    fn at(seconds: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    /// The 21 bytes an id's text encodes.
    fn decode(id: &str) -> [u8; 21] {
        let digits: Vec<u32> = id
            .chars()
            .map(|c| (0..64).find(|v| sortable_digit(*v) == c).unwrap())
            .collect();
        let mut bytes = Vec::new();
        for group in digits.chunks(4) {
            let n = group.iter().fold(0u32, |n, d| n << 6 | d);
            bytes.extend_from_slice(&n.to_be_bytes()[1..]);
        }
        bytes.try_into().unwrap()
    }

    fn prefix(id: &str) -> u64 {
        let mut eight = [0u8; 8];
        eight[1..].copy_from_slice(&decode(id)[..7]);
        u64::from_be_bytes(eight)
    }

    #[test]
    fn the_sortable_alphabet_is_base64url_in_ascii_order() {
        let digits: String = (0..64).map(sortable_digit).collect();
        let mut sorted: Vec<char> = BASE64URL.chars().collect();
        sorted.sort_unstable();
        assert_eq!(digits, sorted.into_iter().collect::<String>());
    }

    proptest::proptest! {
        #[test]
        fn sortable_text_sorts_as_its_bytes(
            a in proptest::array::uniform21(0u8..),
            b in proptest::array::uniform21(0u8..),
        ) {
            let (x, y) = (sortable_base64(&a), sortable_base64(&b));
            proptest::prop_assert_eq!(x.len(), 28);
            proptest::prop_assert!(x.chars().all(|c| BASE64URL.contains(c)));
            proptest::prop_assert_eq!(decode(&x), a);
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }
    }

    #[test]
    fn an_id_is_its_second_its_count_for_the_audience_and_112_bits_of_the_random_source() {
        let ids = OrderedIds::new();
        let second = 1_800_000_000u64;
        for count in 0..3u64 {
            let id = ids.next("bank-a", at(1_800_000_000), &Counting).unwrap();
            assert_eq!(id.len(), 28);
            assert_eq!(prefix(&id), second << COUNTER_BITS | count, "{id}");
            let expected: Vec<u8> = (1..=14).collect();
            assert_eq!(decode(&id)[7..], expected);
        }
        // Another audience's count is its own: nothing in bank B's ids counts bank A's.
        let other = ids.next("bank-b", at(1_800_000_000), &Zeros).unwrap();
        assert_eq!(prefix(&other), second << COUNTER_BITS);
        // The next second starts its count again, and sorts after.
        let next = ids.next("bank-a", at(1_800_000_001), &Zeros).unwrap();
        assert_eq!(prefix(&next), (second + 1) << COUNTER_BITS);
    }

    /// A source that gives 1, 2, 3, ... on each call.
    struct Counting;

    impl RandomSource for Counting {
        fn fill(&self, destination: &mut [u8]) -> Result<(), RandomError> {
            for (byte, n) in destination.iter_mut().zip(1u8..) {
                *byte = n;
            }
            Ok(())
        }
    }

    /// A source of zeros, for tests that look at the prefix only.
    struct Zeros;

    impl RandomSource for Zeros {
        fn fill(&self, destination: &mut [u8]) -> Result<(), RandomError> {
            destination.fill(0);
            Ok(())
        }
    }

    #[test]
    fn ids_for_one_audience_increase_within_a_second_and_when_the_clock_goes_back_a_second() {
        let system = ring::rand::SystemRandom::new();
        let ids = OrderedIds::new();
        let mut made = Vec::new();
        for now in [at(1_800_000_000), at(1_800_000_001), at(1_800_000_000)] {
            for _ in 0..100 {
                made.push(ids.next("bank", now, &system).unwrap());
            }
        }
        made.push(ids.next("bank", at(1_800_000_002), &system).unwrap());
        assert!(made.windows(2).all(|w| w[0] < w[1]), "{made:?}");
        // An id of a later second sorts after another maker's of an earlier one.
        let other = OrderedIds::new()
            .next("bank", at(1_800_000_003), &system)
            .unwrap();
        assert!(other > made[made.len() - 1]);
    }

    #[test]
    fn a_clock_far_ahead_once_does_not_hold_the_prefix_there() {
        let ids = OrderedIds::new();
        let now = 1_800_000_000u64;
        let ahead = ids.next("bank", at(4_000_000_000), &Zeros).unwrap();
        assert_eq!(prefix(&ahead), 4_000_000_000 << COUNTER_BITS);
        let back = ids.next("bank", at(1_800_000_000), &Zeros).unwrap();
        assert_eq!(prefix(&back), now << COUNTER_BITS);
        // Before the epoch, and past the last second a prefix holds: the first and the last
        // second.
        let before = OrderedIds::new().next("bank", at(-5), &Zeros).unwrap();
        assert_eq!(prefix(&before), 0);
        let past = OrderedIds::new()
            .next("bank", at(253_402_300_799), &Zeros)
            .unwrap();
        assert_eq!(prefix(&past), LAST_SECOND << COUNTER_BITS);
        // A full count runs into the next second's prefixes, still increasing, and the last
        // prefix stays the last.
        assert_eq!(next_prefix(Some(LAST_PREFIX), LAST_SECOND), LAST_PREFIX);
        let full = (now << COUNTER_BITS) | ((1 << COUNTER_BITS) - 1);
        assert_eq!(next_prefix(Some(full), now), full + 1);
    }

    #[test]
    fn ids_made_at_once_are_distinct_and_a_random_failure_is_reported() {
        let system = ring::rand::SystemRandom::new();
        let ids = OrderedIds::new();
        let now = at(1_800_000_000);
        let made: Vec<Vec<String>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..500)
                            .map(|_| ids.next("bank", now, &system).unwrap())
                            .collect()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert!(made.iter().all(|one| one.windows(2).all(|w| w[0] < w[1])));
        // One prefix each: the counts 0 to 1,999 of that second.
        let mut prefixes: Vec<u64> = made.iter().flatten().map(|id| prefix(id)).collect();
        prefixes.sort_unstable();
        let first = 1_800_000_000u64 << COUNTER_BITS;
        assert_eq!(prefixes, (first..first + 2_000).collect::<Vec<_>>());
        assert_eq!(ids.next("bank", now, &Broken), Err(RandomError));
    }

    #[test]
    fn past_its_audiences_a_maker_drops_the_stale_counts_first() {
        let count = |id: &str| prefix(id) & ((1 << COUNTER_BITS) - 1);
        let ids = OrderedIds::new();
        // Most audiences last seen two seconds ago, 24 live now.
        for n in 0..AUDIENCES - 24 {
            ids.next(&format!("old-{n}"), at(1_800_000_000), &Zeros)
                .unwrap();
        }
        for n in 0..24 {
            ids.next(&format!("live-{n}"), at(1_800_000_002), &Zeros)
                .unwrap();
        }
        assert_eq!(ids.last.lock().unwrap().len(), AUDIENCES);
        ids.next("one-more", at(1_800_000_002), &Zeros).unwrap();
        assert_eq!(ids.last.lock().unwrap().len(), 25);
        // The live counts go on.
        let live = ids.next("live-0", at(1_800_000_002), &Zeros).unwrap();
        assert_eq!(count(&live), 1);
        // When every count is live, they all start again.
        let full = OrderedIds::new();
        for n in 0..AUDIENCES {
            full.next(&format!("bank-{n}"), at(1_800_000_000), &Zeros)
                .unwrap();
        }
        full.next("one-more", at(1_800_000_000), &Zeros).unwrap();
        assert_eq!(full.last.lock().unwrap().len(), 1);
        let restarted = full.next("bank-0", at(1_800_000_000), &Zeros).unwrap();
        assert_eq!(count(&restarted), 0);
    }
}

//! The injected source of randomness.
//!
//! Consent ids, token ids, attestation ids and generated keys all draw from a [`RandomSource`],
//! so a test can make them deterministic and a fault test can make randomness fail. This module
//! never falls back to anything predictable: when the source fails, the caller gets
//! [`RandomError`] and must fail closed.
//!
//! The ids a bank remembers per access (an access token's and a DPoP proof's `jti`) are
//! time-ordered ([`OrderedIds`]): a prefix from the time they are made, then 112 random bits.
//! Ordered, the ids a gate takes in one second land at the right edge of its table of presented
//! ids, a few pages a commit, instead of one page each at random within that second's range.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The largest time prefix of an [`OrderedIds`] id: 56 bits of microseconds (the year 4253).
const LAST_PREFIX: u64 = (1 << 56) - 1;

/// Makes time-ordered ids: each is 21 bytes, the first 7 the microseconds since the Unix epoch at
/// the `now` it is made for (raised, when needed, to one more than the previous id's, so that the
/// ids of one maker increase even within a microsecond or when its clock goes back), the other 14
/// random (112 bits: RFC 9449 asks a proof's `jti` for at least 96), written in 28 characters of
/// the base64url alphabet taken in ASCII order, so that their text sorts as their bytes.
///
/// The prefix is a sort key, not a timestamp anyone should trust: it tells the order, to the
/// microsecond, in which one maker made its ids, which the tokens' and proofs' own signed `iat`
/// tells to the second.
#[derive(Debug, Default)]
pub(crate) struct OrderedIds {
    /// The prefix of the last id made.
    last: AtomicU64,
}

impl OrderedIds {
    /// A maker that has made no id.
    pub(crate) const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
        }
    }

    /// A fresh id made at `now`.
    ///
    /// # Errors
    /// [`RandomError`] when `random` fails.
    pub(crate) fn next(
        &self,
        now: time::OffsetDateTime,
        random: &dyn RandomSource,
    ) -> Result<String, RandomError> {
        let micros = u64::try_from(now.unix_timestamp_nanos() / 1_000)
            .unwrap_or(0)
            .min(LAST_PREFIX);
        // One more than the previous prefix at least; at the last prefix, the last prefix again
        // (the random part still tells the ids apart).
        let raise = |previous: u64| Some(micros.max(previous.saturating_add(1)).min(LAST_PREFIX));
        let previous = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, raise)
            .unwrap_or_else(|previous| previous);
        let prefix = raise(previous).unwrap_or(LAST_PREFIX);
        let mut bytes = [0u8; 21];
        let (time, rest) = bytes.split_at_mut(7);
        time.copy_from_slice(prefix.to_be_bytes().get(1..).unwrap_or_default());
        random.fill(rest)?;
        Ok(sortable_base64(&bytes))
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

    fn at(seconds: i64, micros: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(seconds).unwrap()
            + time::Duration::microseconds(micros)
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
        fn sortable_text_sorts_as_its_bytes(a in proptest::array::uniform21(0u8..), b in proptest::array::uniform21(0u8..)) {
            let (x, y) = (sortable_base64(&a), sortable_base64(&b));
            proptest::prop_assert_eq!(x.len(), 28);
            proptest::prop_assert!(x.chars().all(|c| BASE64URL.contains(c)));
            proptest::prop_assert_eq!(x.cmp(&y), a.cmp(&b));
        }
    }

    #[test]
    fn one_makers_ids_increase_within_a_microsecond_and_when_its_clock_goes_back() {
        let system = ring::rand::SystemRandom::new();
        let ids = OrderedIds::new();
        let mut made = Vec::new();
        for now in [
            at(1_800_000_000, 5),
            at(1_800_000_000, 5),
            at(1_799_999_000, 0),
        ] {
            for _ in 0..100 {
                made.push(ids.next(now, &system).unwrap());
            }
        }
        made.push(ids.next(at(1_800_000_001, 0), &system).unwrap());
        assert!(made.iter().all(|id| id.len() == 28), "{made:?}");
        assert!(made.windows(2).all(|w| w[0] < w[1]), "{made:?}");
    }

    #[test]
    fn ids_of_two_makers_sort_by_the_time_they_were_made_for() {
        let system = ring::rand::SystemRandom::new();
        let (early, late) = (OrderedIds::new(), OrderedIds::new());
        for micros in [1, 999_999, 1_000_000] {
            let later = late.next(at(1_800_000_000, micros), &system).unwrap();
            let earlier = early.next(at(1_800_000_000, micros - 1), &system).unwrap();
            assert!(earlier < later, "{earlier} {later}");
        }
        // Before the epoch and past the last prefix: the first and the last prefix.
        let before = OrderedIds::new().next(at(-5, 0), &system).unwrap();
        let past = OrderedIds::new()
            .next(
                time::OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap(),
                &system,
            )
            .unwrap();
        assert!(before.starts_with("---------"), "{before}");
        assert!(past.starts_with("zzzzzzzzz"), "{past}");
    }

    #[test]
    fn ids_made_at_once_are_distinct_and_a_random_failure_is_reported() {
        let system = ring::rand::SystemRandom::new();
        let ids = OrderedIds::new();
        let now = at(1_800_000_000, 0);
        let made: Vec<Vec<String>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| (0..500).map(|_| ids.next(now, &system).unwrap()).collect())
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert!(made.iter().all(|one| one.windows(2).all(|w| w[0] < w[1])));
        let mut all: Vec<&String> = made.iter().flatten().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 2_000);
        // Prefixes raised one a call: no two ids of one maker share the first 10 characters.
        let prefixes: std::collections::HashSet<&str> = all.iter().map(|id| &id[..10]).collect();
        assert_eq!(prefixes.len(), 2_000);
        assert_eq!(ids.next(now, &Broken), Err(RandomError));
        // Two makers at the same time differ in their random part.
        assert_ne!(
            OrderedIds::new().next(now, &system).unwrap(),
            OrderedIds::new().next(now, &system).unwrap()
        );
    }
}

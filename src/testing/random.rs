//! Random sources for tests: deterministic, and failing.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest::{SHA256, digest};

use crate::random::{RandomError, RandomSource};

/// A deterministic byte stream: SHA-256 of the seed and a block counter. The same seed gives the
/// same ids, keys and token ids in every run. Predictable by design: never outside tests.
#[derive(Debug)]
pub struct SeededRandom {
    seed: u64,
    state: Mutex<(u64, Vec<u8>)>,
}

impl SeededRandom {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            state: Mutex::new((0, Vec::new())),
        }
    }
}

impl RandomSource for SeededRandom {
    fn fill(&self, destination: &mut [u8]) -> Result<(), RandomError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (counter, pending) = &mut *state;
        while pending.len() < destination.len() {
            let mut block = [0u8; 16];
            let (seed, count) = block.split_at_mut(8);
            seed.copy_from_slice(&self.seed.to_be_bytes());
            count.copy_from_slice(&counter.to_be_bytes());
            *counter = counter.wrapping_add(1);
            pending.extend_from_slice(digest(&SHA256, &block).as_ref());
        }
        let rest = pending.split_off(destination.len());
        destination.copy_from_slice(pending);
        *pending = rest;
        Ok(())
    }
}

/// A random source that works `successes` times, then fails every time after: to test that
/// nothing predictable is used when randomness is gone.
#[derive(Debug)]
pub struct FailingRandom {
    left: AtomicU64,
    inner: SeededRandom,
}

impl FailingRandom {
    /// Fails from the first call.
    pub fn always() -> Self {
        Self::after(0)
    }

    /// Fills `successes` times (deterministically), then fails.
    pub fn after(successes: u64) -> Self {
        Self {
            left: AtomicU64::new(successes),
            inner: SeededRandom::new(0),
        }
    }
}

impl RandomSource for FailingRandom {
    fn fill(&self, destination: &mut [u8]) -> Result<(), RandomError> {
        let granted = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        if granted {
            self.inner.fill(destination)
        } else {
            Err(RandomError)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat_and_differ_by_seed() {
        let (a, b, c) = (
            SeededRandom::new(7),
            SeededRandom::new(7),
            SeededRandom::new(8),
        );
        let (mut x, mut y, mut z) = ([0u8; 40], [0u8; 40], [0u8; 40]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y[..10]).unwrap();
        b.fill(&mut y[10..]).unwrap();
        c.fill(&mut z).unwrap();
        assert_eq!(x, y, "the stream does not depend on how it is read");
        assert_ne!(x, z);
        let failing = FailingRandom::after(1);
        assert!(failing.fill(&mut x).is_ok());
        assert_eq!(failing.fill(&mut x), Err(RandomError));
    }
}

//! The injected source of randomness.
//!
//! Consent ids, token ids, attestation ids and generated keys all draw from a [`RandomSource`],
//! so a test can make them deterministic and a fault test can make randomness fail. This module
//! never falls back to anything predictable: when the source fails, the caller gets
//! [`RandomError`] and must fail closed.

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
}

//! The embedder's test kit (feature `testing`): what a platform needs to test that its own code
//! asks for consent properly, and to audit the decisions it gets, against the real broker.
//!
//! - [`SimulatedBank`]: a bank with a deterministic attestation key that registers and approves
//!   a subject's consent in one call (everything asked, or what a closure narrows it to).
//! - [`TestBroker`]: a broker on the memory store (or SQLite) in one line, with a manual clock at
//!   a fixed start, sequential consent ids, a seeded random source for token ids and keys, a
//!   registered bank and a registered platform.
//! - [`LogAssertions`]: assertions that read the real audit log ("this call was recorded as
//!   denied with exactly these reasons", "nothing was ever permitted for a prohibited use", "the
//!   subject's history holds these kinds", "the log verifies against this checkpoint"); a failure
//!   prints the entries involved.
//! - [`SeededRandom`] and [`FailingRandom`]: random sources for deterministic tests and for
//!   testing what happens when randomness fails.
//! - [`FaultStore`]: a store wrapper that fails before, during or after a commit, or on a read,
//!   at random (seeded) or on script, to test what an embedding does when its database fails.
//! - [`bulk`]: logs and stores of benchmark size (a million grants, say), the grants marked in the
//!   log as imported test data.
//!
//! Never for production: the seeded source is predictable by design. Pointed at a store a real
//! broker runs on by mistake, the kit refuses before writing anything: a [`TestBroker`] will not
//! replace keys the store publishes, and [`bulk::append_decisions`] will not add made-up
//! decisions to a log a broker writes ([`bulk::dangerous_copy_grants`] is for a benchmark's own
//! store, and marks every commit it makes in the log).
//!
//! A platform's test, in full:
//!
//! ```
//! use consent_broker::testing::{LogAssertions, TestBroker};
//! use consent_broker::*;
//!
//! let t = TestBroker::memory();
//! let consent = t.granted();                     // requested by the platform, approved at the bank
//! let mut ask = t.access(consent.id());          // balance, customer service, subject present
//! assert!(t.broker.authorise_access(&ask).unwrap().decision().is_permit());
//!
//! ask.purpose = "ads".parse().unwrap();          // the platform's ad team tries its luck
//! let outcome = t.broker.authorise_access(&ask).unwrap();
//! t.broker.assert_denied(
//!     outcome.audit_seq(),
//!     &[DenyReason::ProhibitedPurpose { prohibited: ProhibitedUse::Ads }],
//! );
//! t.broker.assert_never_permitted_prohibited_use();
//! t.broker.assert_history(                        // what Alice sees of it
//!     &t.subject,
//!     &[
//!         AuditKind::ConsentRequested,
//!         AuditKind::ConsentApproved,
//!         AuditKind::AccessPermitted,
//!         AuditKind::AccessDenied,
//!     ],
//! );
//! ```
#![allow(
    clippy::panic,
    clippy::expect_used,
    reason = "test assertions and fixtures fail by panicking, with a message saying why"
)]

mod assertions;
mod bank;
pub mod bulk;
mod faults;
mod fixture;
mod gate;
mod random;

pub use assertions::LogAssertions;
pub use bank::SimulatedBank;
pub use faults::{Fault, FaultRates, FaultStore, Injected};
pub use fixture::{START, TestBroker};
pub use gate::{Accounts, BALANCE_URL, GET_BALANCE, TestBank};
pub use random::{FailingRandom, SeededRandom};

/// The crate's Ed25519 verification, which checks every token, DPoP proof, checkpoint and
/// cosignature: whether `signature` is `public_key`'s signature of `message`. For benchmarks
/// and for checking it against other implementations.
///
/// ```
/// use ring::signature::{Ed25519KeyPair, KeyPair};
///
/// let random = ring::rand::SystemRandom::new();
/// let pkcs8 = Ed25519KeyPair::generate_pkcs8(&random).unwrap();
/// let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
/// let signature = pair.sign(b"hello");
/// let key = pair.public_key().as_ref();
/// assert!(consent_broker::testing::verify_ed25519(key, b"hello", signature.as_ref()));
/// assert!(!consent_broker::testing::verify_ed25519(key, b"hullo", signature.as_ref()));
/// ```
pub fn verify_ed25519(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    crate::ed25519::verify(public_key, message, signature)
}

//! The broker's error type.
//!
//! Denials are not errors: an access that the policy refuses is a successful call that returns
//! [`crate::AccessOutcome::Denied`]. An [`Error`] means the call did not reach a recorded answer
//! (bad input, a refused transition, or a store that could not record it), and never carries a
//! permit.

use crate::attestation::AttestationError;
use crate::audit::checkpoint::{CheckpointError, NoteError};
use crate::audit::merkle::MerkleError;
use crate::consent::{ConsentError, RequestError};
use crate::crypto::ProviderError;
use crate::ids::{ConsentId, HolderId, IdError};
use crate::keys::KeyError;
use crate::policy::PolicyError;
use crate::store::StoreError;

/// Everything a broker call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An identifier was malformed.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A consent request was refused (the refusal is audited).
    #[error("consent request refused: {0}")]
    Request(#[from] RequestError),
    /// An attestation was refused (the refusal is audited).
    #[error("attestation refused: {0}")]
    Attestation(#[from] AttestationError),
    /// A lifecycle transition is not allowed from the consent's current state.
    #[error(transparent)]
    Consent(#[from] ConsentError),
    /// No consent with this id exists.
    #[error("no consent with id {0} exists")]
    UnknownConsent(ConsentId),
    /// A holder policy that cannot be applied.
    #[error("holder policy refused: {0}")]
    InvalidPolicy(#[from] PolicyError),
    /// A holder registration without any attestation key.
    #[error("holder {0} must register at least one attestation key")]
    NoAttestationKeys(HolderId),
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store failed; nothing of the call was recorded, and nothing was permitted.
    #[error("the store could not record the operation: {0}")]
    Store(#[from] StoreError),
    /// The JWT crypto provider cannot be used.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The consent changed (revoked, expired, re-authorised) after the permit was decided: decide
    /// again.
    #[error("consent {0} changed since the permit was decided; ask again")]
    PermitStale(ConsentId),
    /// The configured token lifetime is outside 1 s to 15 minutes.
    #[error("token lifetime must be between 1 s and 15 minutes, got {seconds} s")]
    InvalidTokenLifetime {
        /// The configured lifetime, in seconds.
        seconds: i64,
    },
    /// The audit log's Merkle tree could not be read (a node is missing or unreadable).
    #[error("the audit log's Merkle tree is unusable: {0}")]
    Merkle(#[from] MerkleError),
    /// A signed note could not be made (a bad checkpoint key or name).
    #[error("signed note: {0}")]
    Note(#[from] NoteError),
    /// A checkpoint could not be made or signed.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The log is not consistent with the last checkpoint the broker signed: it refuses to sign
    /// another (history was rewritten or truncated behind its back).
    #[error(
        "the audit log is inconsistent with the checkpoint of size {previous_size}; refusing to sign"
    )]
    CheckpointInconsistent {
        /// The size of the last checkpoint signed.
        previous_size: u64,
    },
    /// Concurrent writers kept changing the consent; the call gave up after this many attempts.
    #[error(
        "gave up after {attempts} attempts: the consent kept changing under concurrent updates"
    )]
    Contention {
        /// Attempts made.
        attempts: u32,
    },
}

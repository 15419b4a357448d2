//! The broker's error type.
//!
//! Denials are not errors: an access that the policy refuses is a successful call that returns
//! [`crate::AccessOutcome::Denied`]. An [`Error`] means the call did not reach a recorded answer
//! (bad input, a refused transition, or a store that could not record it), and never carries a
//! permit.

use crate::attestation::AttestationError;
use crate::auditor::SigningError;
use crate::checkpoint::{CheckpointError, NoteError};
use crate::consent::{ConsentError, RequestError};
use crate::crypto::ProviderError;
use crate::ids::{ConsentId, HolderId, IdError};
use crate::instruction::InstructionError;
use crate::keys::KeyError;
use crate::merkle::MerkleError;
use crate::policy::PolicyError;
use crate::store::{KeyUse, RecordKind, StoreError};

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
    /// A holder's signed instruction was refused (nothing was applied).
    #[error("holder instruction refused: {0}")]
    Instruction(#[from] InstructionError),
    /// A holder's action (a revocation by the bank, a policy or key change) was asked without
    /// the holder's signed instruction: the broker records a holder's actions only on its
    /// signature ([`Broker::apply_holder_instruction`](crate::Broker::apply_holder_instruction)).
    #[error("a holder's action needs the holder's signed instruction")]
    HolderMustSign,
    /// A holder registration without any attestation key.
    #[error("holder {0} must register at least one attestation key")]
    NoAttestationKeys(HolderId),
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A retention period must not be negative: it would delete the state of live consents.
    #[error("a retention period must not be negative")]
    InvalidRetention,
    /// The subject has no key at the broker: it never had a consent, or it was erased.
    #[error("the subject has no key here (never recorded, or erased)")]
    UnknownSubject,
    /// A sealed field of the log did not open with the subject's key.
    #[error(transparent)]
    Sealed(crate::privacy::PrivacyError),
    /// The store failed; nothing of the call was recorded, and nothing was permitted.
    #[error("the store could not record the operation: {0}")]
    Store(#[from] StoreError),
    /// The JWT crypto provider cannot be used.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The consent or the holder's policy changed (revoked, expired, re-authorised, a scope no
    /// longer shared) after the permit was decided: decide again.
    #[error("consent {0} or its holder's policy changed since the permit was decided; ask again")]
    PermitStale(ConsentId),
    /// The permit is older than the broker's permit lifetime: decide again.
    #[error("the permit for consent {0} has lapsed; ask again")]
    PermitLapsed(ConsentId),
    /// The permit was decided by another broker instance: a broker turns only its own permits
    /// into tokens or verified access.
    #[error("the permit was decided by another broker")]
    ForeignPermit,
    /// A registration repeated at start-up differs from what is registered: the keys or the
    /// policy (holder) or the purposes (platform) are not the ones recorded. Nothing was changed;
    /// change them explicitly (`set_holder_keys`, `set_holder_policy`) if that is intended.
    #[error("{kind} {id} is registered with different {field}")]
    RegistrationMismatch {
        /// A holder or a platform.
        kind: RecordKind,
        /// Its id.
        id: String,
        /// What differs.
        field: RegistrationField,
    },
    /// A key given to the broker was replaced before: a retired key never signs again.
    #[error("the {key_use} key {kid} was retired and cannot sign again")]
    KeyRetired {
        /// What the key was for.
        key_use: KeyUse,
        /// Its id.
        kid: String,
    },
    /// The same key was given for tokens and for checkpoints: each use needs its own key.
    #[error("the token key and the checkpoint key must be different keys")]
    SameKeyForTwoUses,
    /// The configured token lifetime is outside 1 s to 15 minutes.
    #[error("token lifetime must be between 1 s and 15 minutes, got {seconds} s")]
    InvalidTokenLifetime {
        /// The configured lifetime, in seconds.
        seconds: i64,
    },
    /// The configured permit lifetime is outside 1 s to 15 minutes.
    #[error("permit lifetime must be between 1 s and 15 minutes, got {seconds} s")]
    InvalidPermitLifetime {
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
    /// A check of the audit log's integrity failed while preparing the answer.
    #[error(transparent)]
    Receipt(#[from] crate::auditor::ProveError),
    /// Concurrent writers kept changing the consent; the call gave up after this many attempts.
    #[error(
        "gave up after {attempts} attempts: the consent kept changing under concurrent updates"
    )]
    Contention {
        /// Attempts made.
        attempts: u32,
    },
    /// A revocation feed was asked for from past the end of the log: the holder followed a log
    /// that was longer (this one was restored from an older copy, or a replica behind took
    /// over), or names a position of another log. No feed is signed: one would say the
    /// revocations logged since the log's end, at positions the holder has passed, were none.
    /// The holder's view goes stale, and its gate refuses, until the log reaches the holder's
    /// position again (what feeds then leave out: docs/TRUST.md, "What the library does not
    /// stop (yet)").
    #[error("a revocation feed was asked for after position {after}, past the log's end at {len}")]
    FeedBeyondLog {
        /// Where the holder asked the feed to start.
        after: u64,
        /// How many entries the log holds.
        len: u64,
    },
}

/// The part of a registration that differs from what is registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationField {
    /// The holder's attestation keys.
    AttestationKeys,
    /// The holder's policy.
    Policy,
    /// The platform's registered purposes.
    Purposes,
}

impl std::fmt::Display for RegistrationField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::AttestationKeys => "attestation keys",
            Self::Policy => "policy",
            Self::Purposes => "purposes",
        })
    }
}

impl From<crate::keyring::KeyringError> for Error {
    fn from(error: crate::keyring::KeyringError) -> Self {
        use crate::keyring::KeyringError;
        match error {
            KeyringError::Store(error) => Self::Store(error),
            KeyringError::Retired { key_use, kid } => Self::KeyRetired { key_use, kid },
            KeyringError::SameKeyForTwoUses => Self::SameKeyForTwoUses,
        }
    }
}

impl From<crate::random::RandomError> for Error {
    fn from(_: crate::random::RandomError) -> Self {
        Self::Key(KeyError::RandomnessUnavailable)
    }
}

impl From<SigningError> for Error {
    fn from(error: SigningError) -> Self {
        match error {
            SigningError::Inconsistent { previous_size } => {
                Self::CheckpointInconsistent { previous_size }
            }
            SigningError::Merkle(error) => Self::Merkle(error),
            SigningError::Store(error) => Self::Store(error),
            SigningError::Note(error) => Self::Note(error),
            SigningError::Checkpoint(error) => Self::Checkpoint(error),
        }
    }
}

impl Error {
    /// Whether the same call, made again later, can succeed without anyone changing anything: a
    /// store that was busy or unreachable, writers that kept conflicting, a permit that went
    /// stale or lapsed (decide again). Refusals of the input (a bad request, a forged
    /// attestation, a transition the consent's state does not allow, a mismatched registration)
    /// will be refused again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(error) => error.is_retryable(),
            Self::Contention { .. } | Self::PermitStale(_) | Self::PermitLapsed(_) => true,
            Self::Id(IdError::RandomnessUnavailable)
            | Self::Key(KeyError::RandomnessUnavailable) => true,
            _ => false,
        }
    }
}

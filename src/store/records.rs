//! The records a store keeps besides consents: holders, published keys, checkpoints, entries.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::HolderId;
use crate::keys::Ed25519PublicKey;
use crate::merkle::Hash;
use crate::policy::HolderPolicy;
use crate::store::StoreError;
use crate::store::ledger::SeenKind;

/// What the broker knows of a holder: its policy and the keys that sign its attestations.
///
/// Read-only outside the crate, like a [`Consent`](crate::Consent): the keys decide whose
/// attestations activate grants, so only the broker's registration writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HolderRecord {
    pub(crate) id: HolderId,
    pub(crate) policy: HolderPolicy,
    pub(crate) attestation_keys: Vec<Ed25519PublicKey>,
    /// Keys that signed its attestations before a rotation: no longer accepted for approvals,
    /// kept so that the approvals they signed stay verifiable as evidence.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) retired_attestation_keys: Vec<Ed25519PublicKey>,
    pub(crate) version: u64,
}

#[derive(Deserialize)]
#[serde(remote = "HolderRecord")]
struct StoredHolder {
    id: HolderId,
    policy: HolderPolicy,
    attestation_keys: Vec<Ed25519PublicKey>,
    #[serde(default)]
    retired_attestation_keys: Vec<Ed25519PublicKey>,
    version: u64,
}

impl HolderRecord {
    /// A copy whose id has text of its own (see `PlatformId::unshared`): what a store hands to
    /// concurrent callers.
    pub(crate) fn unshared(&self) -> Self {
        Self {
            id: self.id.unshared(),
            policy: self.policy.clone(),
            attestation_keys: self.attestation_keys.clone(),
            retired_attestation_keys: self.retired_attestation_keys.clone(),
            version: self.version,
        }
    }

    /// The holder.
    pub fn id(&self) -> &HolderId {
        &self.id
    }
    /// Its policy.
    pub fn policy(&self) -> &HolderPolicy {
        &self.policy
    }
    /// Keys that sign its attestations.
    pub fn attestation_keys(&self) -> &[Ed25519PublicKey] {
        &self.attestation_keys
    }
    /// Keys that signed its attestations before a rotation (approvals they signed still verify
    /// as evidence; no new approval is accepted from them).
    pub fn retired_attestation_keys(&self) -> &[Ed25519PublicKey] {
        &self.retired_attestation_keys
    }
    /// Incremented by every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Turns back into a record the JSON a store was given to keep (the record serialized with
    /// `serde_json`). For [`Store`](crate::Store) implementations only; see
    /// [`Consent::from_stored`](crate::Consent::from_stored).
    ///
    /// # Errors
    /// The JSON error, when the bytes are not a stored holder record.
    pub fn from_stored(json: &[u8]) -> Result<Self, serde_json::Error> {
        StoredHolder::deserialize(&mut serde_json::Deserializer::from_slice(json))
    }
}

/// What a published key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyUse {
    /// Signs access tokens (published in the JWKS).
    Token,
    /// Signs audit-log checkpoints (C2SP signed notes).
    Checkpoint,
    /// Signs a bank's attestations and instructions (in a bank's ledger).
    Attestation,
}

impl std::fmt::Display for KeyUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KeyUse {
    /// The name stored and shown: `token`, `checkpoint` or `attestation`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Checkpoint => "checkpoint",
            Self::Attestation => "attestation",
        }
    }

    /// The use named `name`, as [`KeyUse::as_str`] writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "token" => Some(Self::Token),
            "checkpoint" => Some(Self::Checkpoint),
            "attestation" => Some(Self::Attestation),
            _ => None,
        }
    }
}

/// The public half of one of the broker's keys, with its life: activated, and, once replaced,
/// retired (a retired token key keeps verifying until `verifies_until`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    /// What the key signs.
    pub key_use: KeyUse,
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// The public key.
    pub public_key: Ed25519PublicKey,
    /// When it started signing.
    pub activated_at: OffsetDateTime,
    /// When it stopped signing, if it was replaced.
    pub retired_at: Option<OffsetDateTime>,
    /// For a retired token key: until when tokens it signed may still be presented.
    pub verifies_until: Option<OffsetDateTime>,
}

impl PublishedKey {
    /// Whether the key is the one signing now (it was never retired).
    pub fn is_active(&self) -> bool {
        self.retired_at.is_none()
    }

    /// Whether a verifier should trust the key at `now`: it is active, or retired with tokens
    /// that may still be live.
    pub fn verifies_at(&self, now: OffsetDateTime) -> bool {
        match (self.retired_at, self.verifies_until) {
            (None, _) => true,
            (Some(_), Some(until)) => now < until,
            (Some(_), None) => false,
        }
    }
}

/// An audit entry as stored: its position and the exact bytes that were hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its sequence number (its leaf index in the Merkle tree).
    pub seq: u64,
    /// The entry's JSON bytes, exactly as written and hashed.
    pub bytes: Vec<u8>,
}

impl StoredEntry {
    /// The entry its bytes hold.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for bytes that do not parse, or whose sequence number is not
    /// `seq`.
    pub fn parse(&self) -> Result<crate::audit::AuditEntry, StoreError> {
        let entry = crate::audit::AuditEntry::from_bytes(&self.bytes)
            .map_err(|e| StoreError::Corrupt(format!("audit entry {}: {e}", self.seq)))?;
        if entry.seq != self.seq {
            return Err(StoreError::Corrupt(format!(
                "audit entry stored at {} says it is {}",
                self.seq, entry.seq
            )));
        }
        Ok(entry)
    }
}

/// A checkpoint the broker signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The tree size it covers.
    pub size: u64,
    /// The tree's root hash at that size.
    pub root: Hash,
    /// The signed note (C2SP `tlog-checkpoint` in a `signed-note`).
    pub note: String,
}

/// A checkpoint for a store to record, made only by [`checkpoint_log`](crate::checkpoint_log)
/// after it computed the root from the store's own log and proved the log consistent with the
/// checkpoint recorded before: a store is never asked to record a size or a root its log does
/// not have, and no public method writes one it did not compute.
///
/// A store reads it through [`SignedCheckpoint::checkpoint`]; outside the crate it cannot be
/// made up:
///
/// ```compile_fail,E0451
/// use consent_broker::{SignedCheckpoint, StoredCheckpoint};
/// let forged = SignedCheckpoint {
///     checkpoint: StoredCheckpoint {
///         size: 1 << 40,
///         root: [0; 32],
///         note: "forged".into(),
///     },
/// };
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: StoredCheckpoint,
}

impl SignedCheckpoint {
    pub(crate) fn new(checkpoint: StoredCheckpoint) -> Self {
        Self { checkpoint }
    }

    /// The checkpoint to record.
    pub fn checkpoint(&self) -> &StoredCheckpoint {
        &self.checkpoint
    }
}

/// The kind of record an error names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A holder.
    Holder,
    /// A platform.
    Platform,
    /// A consent.
    Consent,
    /// An attestation id.
    Attestation,
    /// A published key.
    Key,
    /// A checkpoint.
    Checkpoint,
    /// An audit entry.
    AuditEntry,
    /// An attestation in a bank's ledger.
    AttestationRecord,
    /// A version of a bank's policy.
    BankPolicy,
    /// An id presented to the bank's gate (a DPoP proof's or a token's), which it remembers.
    Presented(SeenKind),
    /// A device key registered at a bank.
    DeviceKey,
    /// A subject's key.
    SubjectKey,
    /// A pairwise subject identifier.
    SubjectLink,
}

impl RecordKind {
    /// Whether a record of this kind has an id that identifies a person or their device (a
    /// device key's thumbprint, a subject's id, a pairwise subject identifier): the store's error
    /// messages leave such ids out, as the audit log does (it records pseudonyms of them).
    #[must_use]
    pub fn names_a_person(self) -> bool {
        matches!(self, Self::DeviceKey | Self::SubjectKey | Self::SubjectLink)
    }
}

/// A record's id in an error message: `with id …`, or a note that it is left out.
pub(crate) struct Named<'a>(pub(crate) RecordKind, pub(crate) &'a str);

impl std::fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.names_a_person() {
            f.write_str("with an id not shown (it identifies a person or their device)")
        } else {
            write!(f, "with id {}", self.1)
        }
    }
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Holder => "holder",
            Self::Platform => "platform",
            Self::Consent => "consent",
            Self::Attestation => "attestation",
            Self::Key => "published key",
            Self::Checkpoint => "checkpoint",
            Self::AuditEntry => "audit entry",
            Self::AttestationRecord => "attestation record",
            Self::BankPolicy => "bank policy version",
            Self::Presented(SeenKind::Proof) => "presented proof id",
            Self::Presented(SeenKind::Token) => "presented token id",
            Self::DeviceKey => "device key",
            Self::SubjectKey => "subject key",
            Self::SubjectLink => "pairwise subject identifier",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn store_errors_name_an_id_unless_it_identifies_a_person() {
        let id = "the-id-itself";
        let messages = |kind| {
            [
                StoreError::Duplicate {
                    kind,
                    id: id.into(),
                }
                .to_string(),
                StoreError::Missing {
                    kind,
                    id: id.into(),
                }
                .to_string(),
            ]
        };
        for kind in [
            RecordKind::Consent,
            RecordKind::Presented(SeenKind::Proof),
            RecordKind::Presented(SeenKind::Token),
            RecordKind::Attestation,
        ] {
            assert!(!kind.names_a_person());
            for message in messages(kind) {
                assert!(message.contains(id), "{message}");
            }
        }
        for kind in [
            RecordKind::DeviceKey,
            RecordKind::SubjectKey,
            RecordKind::SubjectLink,
        ] {
            assert!(kind.names_a_person());
            for message in messages(kind) {
                assert!(!message.contains(id), "{message}");
                assert!(message.contains(&kind.to_string()), "{message}");
            }
        }
    }

    /// The `compile_fail` example on [`SignedCheckpoint`] is this literal, which compiles where
    /// the field is visible.
    #[test]
    fn the_forging_literal_is_otherwise_well_formed() {
        let made = SignedCheckpoint {
            checkpoint: StoredCheckpoint {
                size: 1 << 40,
                root: [0; 32],
                note: "forged".into(),
            },
        };
        assert_eq!(made.checkpoint().size, 1 << 40);
    }
}

//! Storage: one [`Store`] trait, committed atomically.
//!
//! A [`Commit`] carries preconditions, state changes and audit records. A store applies all of
//! it or none of it: if a precondition fails, a change conflicts or the write fails, nothing is
//! visible afterwards, and the audit log has no gap. The broker relies on this for its central
//! promise: a permit is returned only after its audit entry is durable in the same commit as the
//! usage it consumed.
//!
//! Preconditions give optimistic concurrency: a decision taken on a consent at version `v`
//! commits only if the consent is still at `v`, so a permit can never be committed after a
//! revocation that it did not see.

mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(feature = "sqlite")]
pub mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

use std::ops::Range;

use serde::{Deserialize, Serialize};
use time::Date;

use crate::audit::merkle::Hash;
use crate::audit::{AuditEntry, AuditRecord};
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::keys::Ed25519PublicKey;
use crate::policy::{HolderPolicy, PlatformProfile, Usage};

/// What the broker knows of a holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// The holder.
    pub id: HolderId,
    /// Its policy.
    pub policy: HolderPolicy,
    /// Keys that sign its attestations.
    pub attestation_keys: Vec<Ed25519PublicKey>,
    /// Incremented by every change.
    pub version: u64,
}

/// A condition that must still hold when a commit is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precondition {
    /// The consent is stored at exactly this version.
    ConsentVersion {
        /// The consent.
        consent: ConsentId,
        /// The version read.
        version: u64,
    },
    /// The holder record is stored at exactly this version (its policy was read).
    HolderVersion {
        /// The holder.
        holder: HolderId,
        /// The version read.
        version: u64,
    },
    /// Today's usage of the consent is exactly this.
    UsageIs {
        /// The consent.
        consent: ConsentId,
        /// The UTC day.
        day: Date,
        /// The usage read.
        usage: Usage,
    },
}

/// A state change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Adds a holder; fails with [`StoreError::Duplicate`] if the id exists.
    InsertHolder(HolderRecord),
    /// Replaces a holder; its version must be one more than the stored one.
    UpdateHolder(HolderRecord),
    /// Adds a platform; fails with [`StoreError::Duplicate`] if the id exists.
    InsertPlatform(PlatformProfile),
    /// Adds a consent; fails with [`StoreError::Duplicate`] if the id exists.
    InsertConsent(Consent),
    /// Replaces a consent; its version must be one more than the stored one.
    UpdateConsent(Consent),
    /// Counts one unattended access of the consent on the day.
    CountUnattendedAccess {
        /// The consent.
        consent: ConsentId,
        /// The UTC day.
        day: Date,
    },
    /// Marks an attestation id as used; fails with [`StoreError::Duplicate`] if it was.
    UseAttestation(String),
    /// Publishes the public half of a token signing key; fails with [`StoreError::Duplicate`]
    /// if its kid is already published.
    PublishSigningKey(PublishedKey),
    /// Records a signed checkpoint; it must not be smaller than the latest one recorded
    /// ([`StoreError::Conflict`] otherwise).
    RecordCheckpoint(StoredCheckpoint),
}

/// An audit entry as stored: its position and the exact bytes that were hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its sequence number (its leaf index in the Merkle tree).
    pub seq: u64,
    /// The entry's JSON bytes, exactly as written and hashed.
    pub bytes: Vec<u8>,
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

/// The public half of a token signing key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedKey {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// The public key.
    pub public_key: Ed25519PublicKey,
    /// When it started signing.
    #[serde(with = "time::serde::timestamp")]
    pub activated_at: time::OffsetDateTime,
}

/// The kind of record a duplicate id belongs to.
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
    /// A token signing key.
    SigningKey,
    /// A checkpoint.
    Checkpoint,
    /// An audit entry.
    AuditEntry,
}

/// Everything one commit applies, atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Checked first; if any fails, nothing is applied ([`StoreError::Conflict`]).
    pub preconditions: Vec<Precondition>,
    /// Applied in order.
    pub changes: Vec<Change>,
    /// Appended to the audit log, in order, with consecutive sequence numbers.
    pub audit: Vec<AuditRecord>,
}

/// A storage failure. After any error, the commit left no trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A precondition no longer holds: another writer got there first. Re-read and retry.
    #[error("the stored state changed since it was read (concurrent update)")]
    Conflict,
    /// An insert with an id that already exists.
    #[error("a {kind:?} with id {id} already exists")]
    Duplicate {
        /// The kind of record.
        kind: RecordKind,
        /// The id.
        id: String,
    },
    /// An update of a record that does not exist.
    #[error("no {kind:?} with id {id} exists")]
    Missing {
        /// The kind of record.
        kind: RecordKind,
        /// The id.
        id: String,
    },
    /// The store cannot be used (an I/O failure, a lost connection, …).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The file is not a database of this store's kind.
    #[error("{path} is not a consent-broker database: {detail}")]
    NotADatabase {
        /// The file.
        path: String,
        /// What the engine said.
        detail: String,
    },
    /// The database is damaged (truncated, overwritten, failed its integrity check).
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    /// The database was written by a newer version of this crate.
    #[error("the database has schema version {found}; this build supports up to {supported}")]
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest version this build understands.
        supported: i64,
    },
    /// The database cannot be written (a read-only file, directory or file system).
    #[error("the database cannot be written: {0}")]
    ReadOnly(String),
    /// The disk (or the configured size limit) is full.
    #[error("the database is full: {0}")]
    Full(String),
    /// Another process held the database lock for longer than the busy timeout.
    #[error("the database stayed locked by another writer: {0}")]
    Busy(String),
}

/// Where the audit entries of a commit landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitReceipt {
    /// Sequence numbers of the commit's audit entries.
    pub audit_seqs: Range<u64>,
}

/// Durable state of the broker: registrations, consents, usage, used attestations, audit log.
pub trait Store: Send + Sync {
    /// A holder's record.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError>;

    /// A platform's profile.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError>;

    /// A consent.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError>;

    /// Every consent of a subject, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError>;

    /// A consent's usage on a UTC day (zero if none was recorded).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError>;

    /// Whether an attestation id was already used.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError>;

    /// Number of audit entries.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn audit_len(&self) -> Result<u64, StoreError>;

    /// The stored bytes of the audit entries with sequence numbers in `range` (clamped to the
    /// log), in sequence order. A store returns what it holds: a verifier checks that the
    /// sequence numbers have no gap.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError>;

    /// Audit entries with sequence numbers in `range` (clamped to the log), parsed.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for bytes that do not parse or whose sequence number is not
    /// their position; [`StoreError::Unavailable`].
    fn audit_entries(&self, range: Range<u64>) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_bytes(range)?
            .into_iter()
            .map(|stored| {
                let entry = AuditEntry::from_bytes(&stored.bytes)
                    .map_err(|e| StoreError::Corrupt(format!("audit entry {}: {e}", stored.seq)))?;
                if entry.seq != stored.seq {
                    return Err(StoreError::Corrupt(format!(
                        "audit entry stored at {} says it is {}",
                        stored.seq, entry.seq
                    )));
                }
                Ok(entry)
            })
            .collect()
    }

    /// A node of the audit log's Merkle tree: the hash of leaves
    /// `[index·2^level, (index+1)·2^level)`, stored once that subtree is complete.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError>;

    /// The stored nodes at `level` with indices in `range`, in index order (a bulk read for
    /// verifiers; stores should override the default, which reads one node at a time).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn merkle_nodes(&self, level: u32, range: Range<u64>) -> Result<Vec<(u64, Hash)>, StoreError> {
        // No level has more nodes than the log has entries: bound the walk by that.
        let end = range.end.min(self.audit_len()?);
        let mut nodes = Vec::new();
        for index in range.start..end {
            if let Some(hash) = self.merkle_node(level, index)? {
                nodes.push((index, hash));
            }
        }
        Ok(nodes)
    }

    /// The latest checkpoint the broker signed, if any.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// The published token signing keys, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn signing_keys(&self) -> Result<Vec<PublishedKey>, StoreError>;

    /// Applies a commit atomically: all of it, or nothing.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a precondition fails or an update's version is stale,
    /// [`StoreError::Duplicate`] / [`StoreError::Missing`] for inserts and updates,
    /// [`StoreError::Unavailable`] when the write fails.
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError>;
}

/// Forwards every `Store` method through a pointer type, so a broker can own, share or borrow
/// its store.
macro_rules! forward_store {
    ($($pointer:ty),+) => {$(
        impl<S: Store + ?Sized> Store for $pointer {
            fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
                (**self).holder(id)
            }
            fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
                (**self).platform(id)
            }
            fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
                (**self).consent(id)
            }
            fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
                (**self).consents_of_subject(subject)
            }
            fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
                (**self).usage(consent, day)
            }
            fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
                (**self).attestation_used(attestation_id)
            }
            fn audit_len(&self) -> Result<u64, StoreError> {
                (**self).audit_len()
            }
            fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
                (**self).audit_bytes(range)
            }
            fn audit_entries(&self, range: Range<u64>) -> Result<Vec<AuditEntry>, StoreError> {
                (**self).audit_entries(range)
            }
            fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
                (**self).merkle_node(level, index)
            }
            fn merkle_nodes(
                &self,
                level: u32,
                range: Range<u64>,
            ) -> Result<Vec<(u64, Hash)>, StoreError> {
                (**self).merkle_nodes(level, range)
            }
            fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
                (**self).latest_checkpoint()
            }
            fn signing_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
                (**self).signing_keys()
            }
            fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
                (**self).commit(commit)
            }
        }
    )+};
}

forward_store!(std::sync::Arc<S>, &S);

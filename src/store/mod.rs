//! Storage, split by what each user needs.
//!
//! - [`LogRead`]: the audit log, read-only (length, entry bytes, Merkle nodes, checkpoints). What
//!   an auditor, the command-line tool and log verification need, and all they get.
//! - [`StateRead`]: the broker's state, read-only (holders, platforms, consents, usage, used
//!   attestations, published keys).
//! - [`Store`]: both, plus [`Store::commit`], which applies a [`Commit`] atomically: its
//!   preconditions, state changes and audit records all, or none of it. If a precondition fails,
//!   a change conflicts or the write fails, nothing is visible afterwards and the audit log has no
//!   gap.
//!
//! A [`Commit`] and its [`Change`]s can be read by anyone (so a store for another database can
//! apply them) but built only by this crate, and every commit carries at least one audit record:
//! there is no way, through this API, to change state without the log saying so. A store keeps
//! what it was given; the broker re-checks nothing it reads back, which is why the bank decides
//! from its own records, not from the platform's store.
//!
//! Preconditions give optimistic concurrency: a decision taken on a consent at version `v`
//! commits only if the consent is still at `v`, so a permit can never be committed after a
//! revocation that it did not see.

mod commit;
#[cfg(feature = "sqlite")]
mod group;
mod ledger;
mod memory;
mod records;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod stats;

pub use commit::{Change, Commit, CommitParts, CommitReceipt, Precondition};
pub use ledger::{
    AttestationRecord, BankRevocation, DeviceKeyRecord, FeedState, GateQuery, GateView, LedgerRead,
    PolicyRecord, SeenKind, ServedCounts, SubjectLink,
};
pub use memory::MemoryStore;
pub use records::{
    HolderRecord, KeyUse, PublishedKey, RecordKind, SignedCheckpoint, StoredCheckpoint, StoredEntry,
};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::Migration;
#[cfg(feature = "postgres")]
pub use sql::postgres::{PostgresOptions, PostgresStore, PostgresTlsMode};
#[cfg(feature = "sqlite")]
pub use sql::sqlite::SqliteStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use stats::CommitStats;

use records::Named;
use std::ops::Range;

use time::{Date, OffsetDateTime};

use crate::audit::AuditEntry;
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::merkle::Hash;
use crate::policy::{PlatformProfile, Usage};
use crate::privacy::SubjectKey;

/// A storage failure. After any error but [`StoreError::OutcomeUnknown`], the commit left no
/// trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A precondition no longer holds: another writer got there first. Re-read and retry.
    #[error("the stored state changed since it was read (concurrent update)")]
    Conflict,
    /// An insert with an id that already exists. The message names the id unless it identifies
    /// a person or their device ([`RecordKind::names_a_person`]); the field always holds it.
    #[error("a {kind} {} already exists", Named(*.kind, .id))]
    Duplicate {
        /// The kind of record.
        kind: RecordKind,
        /// The id.
        id: String,
    },
    /// An update of a record that does not exist. The message names the id as
    /// [`StoreError::Duplicate`]'s does.
    #[error("no {kind} {} exists", Named(*.kind, .id))]
    Missing {
        /// The kind of record.
        kind: RecordKind,
        /// The id.
        id: String,
    },
    /// The store cannot be used right now (an I/O failure, a lost connection, …).
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
    /// The database was written by a newer version of this crate: at opening, or, for a SQLite
    /// store, at a commit after a newer build migrated the file (nothing is written; run the
    /// newer build).
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
    /// The database stayed busy past a timeout: another process held its lock longer than the
    /// busy timeout, every reader connection of this store stayed in use that long (SQLite), or
    /// a statement ran past its timeout (PostgreSQL). Retrying later can succeed.
    #[error("the database stayed busy past the busy timeout: {0}")]
    Busy(String),
    /// The commit was sent, and the connection broke (or the disk failed, or SQLite's `COMMIT`
    /// failed after it may have flushed the log) before the database answered: whether the
    /// database made it durable is unknown. It may be in the store though
    /// this call failed; it was not acknowledged, and a decision that met this was not served.
    /// Not retryable as such: a retry decides again, and both may then stand (a second use
    /// counted, a single-use id refused as a replay). Read the store (the log) to find out.
    #[error("the outcome of the commit is unknown (it may have been made durable): {0}")]
    OutcomeUnknown(String),
}

impl StoreError {
    /// Whether trying the same call again later can succeed without anyone fixing anything: a
    /// conflict with a concurrent writer, a lock held too long, a store that could not be reached.
    /// A duplicate, a missing record, a full disk, a read-only or corrupt or foreign database need
    /// a person (or different input) first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict | Self::Busy(_) | Self::Unavailable(_))
    }
}

/// Waits before the `attempt`-th retry (from 1) of a decision whose commit met a
/// [`StoreError::Conflict`]: a random time up to 25 µs · 2^attempt, at most 4 ms. Callers that
/// conflicted on one record (one approval's served count, one consent's usage) would otherwise
/// meet again in the next batch of a grouping store, where again only one of them can land; spread
/// out, each lands within a few tries. The first retry does not wait.
pub(crate) fn back_off(attempt: u32) {
    use std::hash::{BuildHasher, Hasher};
    if attempt <= 1 {
        return;
    }
    let ceiling_us = 25u64.saturating_mul(1u64 << attempt.min(8)).min(4_000);
    // Randomness for spreading only (never for anything secret): std's per-call hasher keys.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::thread::sleep(std::time::Duration::from_micros(random % (ceiling_us + 1)));
}

/// The audit log, read-only: what auditors, verification and the command-line tool need.
pub trait LogRead: Send + Sync {
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
            .iter()
            .map(StoredEntry::parse)
            .collect()
    }

    /// A node of the audit log's Merkle tree: the hash of leaves
    /// `[index·2^level, (index+1)·2^level)`, there once that subtree is complete (stored, or
    /// derived from the stored leaves for the levels [`LogRead::derived_levels`] names).
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

    /// The levels above the leaves, 1 to this, whose nodes the store derives from its stored
    /// leaves on every read of [`LogRead::merkle_node`] and [`LogRead::merkle_nodes`] instead
    /// of storing them (0, the default: every level is stored). The answers are the same
    /// either way; a verifier that has checked the leaves need not compare these levels, which
    /// cannot disagree with them ([`verify_log`](crate::verify_log) does not). The SQLite store
    /// derives levels 1 to 3, so that an append writes the leaves' page and not a page per
    /// level.
    fn derived_levels(&self) -> u32 {
        0
    }
}

/// The broker's state, read-only.
pub trait StateRead: Send + Sync {
    /// A holder's record.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] for a record that does not decode.
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError>;

    /// A platform's profile.
    ///
    /// # Errors
    /// As [`StateRead::holder`].
    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError>;

    /// A consent.
    ///
    /// # Errors
    /// As [`StateRead::holder`].
    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError>;

    /// Every consent of a subject, oldest first.
    ///
    /// # Errors
    /// As [`StateRead::holder`].
    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError>;

    /// A consent's usage on a UTC day (zero if none was recorded).
    ///
    /// # Errors
    /// As [`StateRead::holder`].
    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError>;

    /// Whether an attestation id was already used.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError>;

    /// Every key the broker published, of both uses, oldest activation first.
    ///
    /// # Errors
    /// As [`StateRead::holder`].
    fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError>;

    /// The subject's key (see [`crate::privacy`]), if it has one: none before its first
    /// record, none after erasure.
    ///
    /// # Errors
    /// As [`StateRead::holder`].
    fn subject_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, StoreError>;

    /// Consents that ended (expired, revoked, rejected, or never approved in time) before
    /// `before`, oldest end first, at most `limit`: what retention deletes.
    ///
    /// # Errors
    /// As [`StateRead::holder`].
    fn consents_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Consent>, StoreError>;

    /// Everything the checked call reads about `consent` asked for by `platform` on `day`: the
    /// consent, the platform, and (when the consent exists) its holder, its usage on the day and
    /// its subject's key. The default reads them one by one; the SQLite store reads them in one
    /// read transaction and the in-memory store under one lock (a store for a networked database
    /// would read them in one round trip: most of what a decision costs there). A store must not answer from anything older than what the one-by-one reads
    /// would see: the decision's commit re-checks the versions it read, not the platform.
    ///
    /// # Errors
    /// As [`StateRead::holder`].
    fn access_view(
        &self,
        consent: &ConsentId,
        platform: &PlatformId,
        day: Date,
    ) -> Result<AccessView, StoreError> {
        access_view_by_parts(self, consent, platform, day)
    }

    /// Whether a broker should keep the access views it reads between decisions (see
    /// [`BrokerBuilder::access_view_cache`](crate::BrokerBuilder::access_view_cache)): `true`
    /// where reading one costs a round trip or a transaction (the SQL stores), `false` (the
    /// default) where it costs a lookup (the in-memory store).
    fn keep_access_views(&self) -> bool {
        false
    }
}

/// [`StateRead::access_view`] as its default reads it: each part by its own method.
pub(crate) fn access_view_by_parts<S: StateRead + ?Sized>(
    store: &S,
    consent: &ConsentId,
    platform: &PlatformId,
    day: Date,
) -> Result<AccessView, StoreError> {
    let found = store.consent(consent)?;
    let platform = store.platform(platform)?;
    let Some(found) = found else {
        return Ok(AccessView {
            platform,
            ..AccessView::default()
        });
    };
    Ok(AccessView {
        holder: store.holder(&found.request.holder)?,
        usage: store.usage(consent, day)?,
        subject_key: store.subject_key(&found.request.subject)?,
        subject_key_unread: false,
        platform,
        consent: Some(found),
    })
}

/// Everything the checked call reads, from one consistent view of the store (see
/// [`StateRead::access_view`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AccessView {
    /// The consent asked about.
    pub consent: Option<Consent>,
    /// The platform asking.
    pub platform: Option<PlatformProfile>,
    /// The consent's holder (none when there is no consent).
    pub holder: Option<HolderRecord>,
    /// The consent's usage on the day (zero when there is no consent).
    pub usage: Usage,
    /// The consent's subject's key (none when there is no consent, or the subject has none, or
    /// it was left unread).
    pub subject_key: Option<SubjectKey>,
    /// Whether the store left the subject's key unread because the consent's grant keeps the
    /// pseudonyms its decisions write (the in-memory store does: a lookup among millions saved
    /// on each decision). The broker then reads the key itself if a decision needs it (a
    /// request about an account the grant does not name), and a decision that needs none
    /// commits with a check of the consent's version but none of the key. A store may leave
    /// the key unread only if it never replaces a subject's key and deletes one only in the
    /// commit that deletes every consent of the subject (`Change::EraseSubject`), and consent
    /// ids are never used again (see [`IdGenerator`](crate::IdGenerator)).
    pub subject_key_unread: bool,
}

/// Durable state of the broker: both read traits, and atomic commits.
pub trait Store: LogRead + StateRead {
    /// Applies a commit atomically: all of it, or nothing. Its audit records are appended in
    /// order with consecutive sequence numbers, with the Merkle nodes they complete.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a precondition fails or an update's version is stale,
    /// [`StoreError::Duplicate`] / [`StoreError::Missing`] for inserts and updates,
    /// [`StoreError::Unavailable`] (and the other failure variants) when the write fails.
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError>;

    /// Records a checkpoint the broker signed. One checkpoint is kept per size (the first); a
    /// checkpoint smaller than the latest recorded is refused with [`StoreError::Conflict`].
    /// This is log metadata, not a state change: it carries no audit record (the checkpoint is
    /// itself a signature over the log), and only [`checkpoint_log`](crate::checkpoint_log)
    /// makes the [`SignedCheckpoint`] it takes, from the store's own log.
    ///
    /// # Errors
    /// [`StoreError::Conflict`]; [`StoreError::Unavailable`] when the write fails.
    fn record_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError>;

    /// Physically removes what deleted rows may have left in the store's files, after an
    /// erasure or a retention pass: `Ok(true)` when the engine did all it does, `Ok(false)` when
    /// it could not finish now (call again later). The memory store has nothing to do; SQLite
    /// checkpoints the write-ahead log into the database (whose deleted cells `secure_delete`
    /// zeroed) and truncates it, after which no byte of the deleted rows is left in its files;
    /// PostgreSQL, once no snapshot older than the call is left (else `Ok(false)` after twelve
    /// seconds), rewrites the subject-key and link tables (`VACUUM FULL`: the keys' bytes
    /// leave the table files) and vacuums the others, which frees their dead rows' space
    /// without overwriting it at once (see `docs/PRIVACY.md` for that and for what a PostgreSQL
    /// server keeps elsewhere: WAL segments, archives, replicas).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] and the other engine failures.
    fn purge(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
}

/// A read-only view of a store: what [`Broker::store`](crate::Broker::store) hands out, so that
/// nothing outside the broker writes through it.
#[derive(Debug)]
pub struct ReadOnly<'a, S: ?Sized>(&'a S);

impl<'a, S: ?Sized> ReadOnly<'a, S> {
    pub(crate) fn new(store: &'a S) -> Self {
        Self(store)
    }

    pub(crate) fn inner(&self) -> &'a S {
        self.0
    }
}

impl<S: ?Sized> Clone for ReadOnly<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: ?Sized> Copy for ReadOnly<'_, S> {}

macro_rules! forward_log_read {
    ($target:path) => {
        fn audit_len(&self) -> Result<u64, StoreError> {
            $target(self).audit_len()
        }
        fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
            $target(self).audit_bytes(range)
        }
        fn audit_entries(&self, range: Range<u64>) -> Result<Vec<AuditEntry>, StoreError> {
            $target(self).audit_entries(range)
        }
        fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
            $target(self).merkle_node(level, index)
        }
        fn merkle_nodes(
            &self,
            level: u32,
            range: Range<u64>,
        ) -> Result<Vec<(u64, Hash)>, StoreError> {
            $target(self).merkle_nodes(level, range)
        }
        fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
            $target(self).latest_checkpoint()
        }
        fn derived_levels(&self) -> u32 {
            $target(self).derived_levels()
        }
    };
}

macro_rules! forward_state_read {
    ($target:path) => {
        fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
            $target(self).holder(id)
        }
        fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
            $target(self).platform(id)
        }
        fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
            $target(self).consent(id)
        }
        fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
            $target(self).consents_of_subject(subject)
        }
        fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
            $target(self).usage(consent, day)
        }
        fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
            $target(self).attestation_used(attestation_id)
        }
        fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
            $target(self).published_keys()
        }
        fn subject_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, StoreError> {
            $target(self).subject_key(subject)
        }
        fn consents_ended_before(
            &self,
            before: OffsetDateTime,
            limit: u32,
        ) -> Result<Vec<Consent>, StoreError> {
            $target(self).consents_ended_before(before, limit)
        }
        fn access_view(
            &self,
            consent: &ConsentId,
            platform: &PlatformId,
            day: Date,
        ) -> Result<AccessView, StoreError> {
            $target(self).access_view(consent, platform, day)
        }
        fn keep_access_views(&self) -> bool {
            $target(self).keep_access_views()
        }
    };
}

impl<S: LogRead + ?Sized> LogRead for ReadOnly<'_, S> {
    forward_log_read!(Self::inner);
}

impl<S: StateRead + ?Sized> StateRead for ReadOnly<'_, S> {
    forward_state_read!(Self::inner);
}

/// Forwards every trait through a pointer type, so a broker can own, share or borrow its store.
macro_rules! forward_through_pointer {
    ($($pointer:ty),+) => {$(
        impl<S: LogRead + ?Sized> LogRead for $pointer {
            forward_log_read!(std::ops::Deref::deref);
        }
        impl<S: StateRead + ?Sized> StateRead for $pointer {
            forward_state_read!(std::ops::Deref::deref);
        }
        impl<S: Store + ?Sized> Store for $pointer {
            fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
                (**self).commit(commit)
            }
            fn record_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
                (**self).record_checkpoint(checkpoint)
            }
            fn purge(&self) -> Result<bool, StoreError> {
                (**self).purge()
            }
        }
    )+};
}

forward_through_pointer!(std::sync::Arc<S>, &S, Box<S>);

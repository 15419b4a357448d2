//! What a store applies: [`Commit`]s of preconditions, [`Change`]s and audit records.
//!
//! Readable from anywhere, so that a store for another database can apply them; buildable only
//! inside this crate. A commit cannot exist without an audit record: its only constructor takes
//! the first one. A change cannot be made outside the crate either: every variant is
//! `#[non_exhaustive]`, so matching works (with `..`) and constructing does not:
//!
//! ```compile_fail,E0639
//! use consent_broker::{Change, Consent};
//! // A state change with no commit, and so no audit record: refused.
//! fn sneak(consent: Consent) -> Change {
//!     Change::UpdateConsent { consent }
//! }
//! ```
//!
//! ```compile_fail,E0624
//! use consent_broker::{AuditRecord, Commit};
//! // A commit built by hand: refused, its constructor is private to the crate.
//! fn hand_built(record: AuditRecord) -> Commit {
//!     Commit::new(record)
//! }
//! ```
//!
//! (Both compile inside the crate: see this module's unit tests.)

use std::ops::Range;

use time::{Date, OffsetDateTime};

use super::ledger::{
    AttestationRecord, DeviceKeyRecord, FeedState, PolicyRecord, SeenKind, ServedCounts,
    SubjectLink,
};
use super::records::{HolderRecord, KeyUse, PublishedKey};
use crate::audit::AuditRecord;
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, SubjectId};
use crate::policy::{PlatformProfile, Presence, Usage};
use crate::privacy::{SubjectKey, SubjectKeyRecord};

/// A condition that must still hold when a commit is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precondition {
    /// The consent is stored at exactly this version.
    #[non_exhaustive]
    ConsentVersion {
        /// The consent.
        consent: ConsentId,
        /// The version read.
        version: u64,
    },
    /// The holder record is stored at exactly this version (its policy was read).
    #[non_exhaustive]
    HolderVersion {
        /// The holder.
        holder: HolderId,
        /// The version read.
        version: u64,
    },
    /// The consent's usage on the UTC day is exactly this.
    #[non_exhaustive]
    UsageIs {
        /// The consent.
        consent: ConsentId,
        /// The UTC day.
        day: Date,
        /// The usage read.
        usage: Usage,
    },
    /// The key is published for this use and not retired: a token signed with it is recorded
    /// only while it is the broker's active key, so a broker whose key another broker on the same
    /// store has since replaced cannot go on issuing tokens with it.
    #[non_exhaustive]
    KeyActive {
        /// What the key signs.
        key_use: KeyUse,
        /// Its RFC 7638 thumbprint.
        kid: String,
    },
    /// The bank's ledger holds the attestation at exactly this version.
    #[non_exhaustive]
    AttestationVersion {
        /// The attestation's id.
        attestation: String,
        /// The version read.
        version: u64,
    },
    /// The bank's served counts of the attestation on the UTC day are exactly these.
    #[non_exhaustive]
    ServedIs {
        /// The attestation's id.
        attestation: String,
        /// The UTC day.
        day: Date,
        /// The counts read.
        counts: ServedCounts,
    },
    /// The bank's count of accesses with this presence served under the attestation on the UTC
    /// day is below `limit`: what the gate's daily limit asks, checked where the count is
    /// incremented. Checks of one approval at once each land while the count stays below the
    /// limit, where [`Precondition::ServedIs`] (the count exactly as read) would let only one of
    /// them land per transaction.
    #[non_exhaustive]
    ServedBelow {
        /// The attestation's id.
        attestation: String,
        /// The UTC day.
        day: Date,
        /// Which count.
        presence: Presence,
        /// The count must be below this.
        limit: u32,
    },
    /// The consent's attestations in the bank's ledger that no later one replaced are exactly
    /// these ids, oldest first: two approvals of one consent at once cannot both stay live.
    #[non_exhaustive]
    LiveAttestations {
        /// The consent.
        consent: ConsentId,
        /// The ids read.
        ids: Vec<String>,
    },
    /// The bank's current policy is at exactly this version (`None`: the bank has none yet).
    #[non_exhaustive]
    BankPolicyVersion {
        /// The version read.
        version: Option<u64>,
    },
    /// The subject's device keys in the bank's ledger that are not revoked are exactly these
    /// thumbprints, in the order they were registered: nothing is sealed to, or approved for, a
    /// key revoked since it was read.
    #[non_exhaustive]
    LiveDeviceKeys {
        /// Whose keys.
        subject: SubjectId,
        /// The thumbprints read.
        thumbprints: Vec<String>,
    },
    /// The bank's ledger records no revocation of the consent on the platform (from the broker's
    /// revocation feed): an access decided before the feed that revokes it was applied is
    /// journalled before the feed's entry, never after it.
    #[non_exhaustive]
    NotRevokedAtPlatform {
        /// The consent.
        consent: ConsentId,
    },
    /// The subject's key is stored and is exactly this one: a commit whose pseudonyms were made
    /// with a key that an erasure deleted since (and perhaps a new key replaced) fails, so no
    /// entry after an erasure is written under the erased pseudonym and no row about the subject
    /// is written without its key.
    #[non_exhaustive]
    SubjectKeyIs {
        /// The subject.
        subject: SubjectId,
        /// The key read.
        key: Box<SubjectKey>,
    },
}

/// A state change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// Adds a holder; fails with [`StoreError::Duplicate`](super::StoreError::Duplicate) if the
    /// id exists.
    #[non_exhaustive]
    InsertHolder {
        /// The record.
        holder: HolderRecord,
    },
    /// Replaces a holder; its version must be one more than the stored one.
    #[non_exhaustive]
    UpdateHolder {
        /// The new record.
        holder: HolderRecord,
    },
    /// Adds a platform; fails with `Duplicate` if the id exists.
    #[non_exhaustive]
    InsertPlatform {
        /// The profile.
        platform: PlatformProfile,
    },
    /// Adds a consent; fails with `Duplicate` if the id exists.
    #[non_exhaustive]
    InsertConsent {
        /// The consent (its JSON, `serde_json::to_vec(&consent)`, is what a store keeps and
        /// reads back with [`Consent::from_stored`]).
        consent: Consent,
    },
    /// Replaces a consent; its version must be one more than the stored one.
    #[non_exhaustive]
    UpdateConsent {
        /// The new consent.
        consent: Consent,
    },
    /// Counts one unattended access of the consent on the day.
    #[non_exhaustive]
    CountUnattendedAccess {
        /// The consent.
        consent: ConsentId,
        /// The UTC day.
        day: Date,
    },
    /// Marks an attestation id as used; fails with `Duplicate` if it was.
    #[non_exhaustive]
    UseAttestation {
        /// The attestation's `jti`.
        attestation_id: String,
    },
    /// Publishes the public half of a key that starts signing; fails with `Duplicate` if a key
    /// of the same use and id was ever published.
    #[non_exhaustive]
    ActivateKey {
        /// The key.
        key: PublishedKey,
    },
    /// Marks the active key of a use as retired; fails with `Missing` if no active key of that
    /// use has this id.
    #[non_exhaustive]
    RetireKey {
        /// The key's use.
        key_use: KeyUse,
        /// Its id.
        kid: String,
        /// When it stopped signing.
        retired_at: OffsetDateTime,
        /// Until when tokens it signed may be presented (token keys).
        verifies_until: Option<OffsetDateTime>,
    },
    /// Adds an attestation to the bank's ledger; fails with `Duplicate` if its id exists.
    #[non_exhaustive]
    RecordAttestation {
        /// The record.
        record: AttestationRecord,
    },
    /// Replaces an attestation in the bank's ledger; its version must be one more than the
    /// stored one.
    #[non_exhaustive]
    UpdateAttestation {
        /// The new record.
        record: AttestationRecord,
    },
    /// Adds a version of the bank's policy; fails with `Duplicate` if that version exists.
    #[non_exhaustive]
    AppendBankPolicy {
        /// The record.
        record: PolicyRecord,
    },
    /// Counts one access the bank served under an attestation on a UTC day.
    #[non_exhaustive]
    CountServed {
        /// The attestation's id.
        attestation: String,
        /// The UTC day.
        day: Date,
        /// Which count.
        presence: Presence,
    },
    /// Remembers a presented id with its signed time (see [`SeenKind`]); fails with `Duplicate`
    /// of [`RecordKind::Presented`](super::RecordKind::Presented) of this kind if the same kind,
    /// time and id are remembered already (the presentation is a replay).
    #[non_exhaustive]
    RememberSeen {
        /// What kind of id.
        kind: SeenKind,
        /// The id.
        id: String,
        /// The time its signature covers: a proof's `iat`, a token's `exp` (whole seconds).
        at: OffsetDateTime,
    },
    /// Forgets at most `limit` remembered ids of one kind whose signed time is before
    /// `before` (they no longer verify): bounded work per call, so pruning never stalls a
    /// request.
    #[non_exhaustive]
    PruneSeen {
        /// What kind of id.
        kind: SeenKind,
        /// Ids signed for a time before this are forgotten.
        before: OffsetDateTime,
        /// At most this many.
        limit: u32,
    },
    /// Records that the platform revoked a consent (from the broker's feed); a second record
    /// of the same consent keeps the first.
    #[non_exhaustive]
    RecordPlatformRevocation {
        /// The consent.
        consent: ConsentId,
        /// When the platform revoked it.
        revoked_at: OffsetDateTime,
    },
    /// Registers a device key; fails with `Duplicate` if the key is registered already.
    #[non_exhaustive]
    RegisterDeviceKey {
        /// The record.
        record: DeviceKeyRecord,
    },
    /// Revokes a device key; fails with `Missing` unless it is registered to the subject and
    /// not revoked.
    #[non_exhaustive]
    RevokeDeviceKey {
        /// Whose key.
        subject: SubjectId,
        /// The key's thumbprint.
        thumbprint: String,
        /// When.
        at: OffsetDateTime,
    },
    /// Sets how far the feed of platform-side revocations has been followed.
    #[non_exhaustive]
    SetFeedState {
        /// The new state.
        state: FeedState,
    },
    /// Stores a subject's key; fails with [`StoreError::Conflict`](super::StoreError::Conflict)
    /// if the subject has one (another writer made it first: re-read it).
    #[non_exhaustive]
    InsertSubjectKey {
        /// The key.
        record: SubjectKeyRecord,
    },
    /// Erases a subject: deletes its key, its consents with their usage (a broker's), its
    /// approvals with their served counts, its device keys and its pairwise links (a bank's),
    /// and the used-attestation ids listed. Fails with [`StoreError::Conflict`] unless the
    /// subject's consents and approvals are exactly the ones listed (a consent recorded since
    /// they were read would otherwise outlive the key).
    ///
    /// [`StoreError::Conflict`]: super::StoreError::Conflict
    #[non_exhaustive]
    EraseSubject {
        /// The subject (a broker's subject id, a bank's customer id).
        subject: SubjectId,
        /// Its consents at the broker, as read.
        consents: Vec<ConsentId>,
        /// Its approvals at the bank (attestation ids), as read.
        attestations: Vec<String>,
        /// Used-attestation ids (replay protection) of its consents, forgotten with them.
        used_attestations: Vec<String>,
    },
    /// Deletes consents with their usage, and the used-attestation ids listed (retention);
    /// fails with `Missing` for a consent that does not exist.
    #[non_exhaustive]
    ForgetConsents {
        /// The consents.
        consents: Vec<ConsentId>,
        /// Used-attestation ids of those consents.
        used_attestations: Vec<String>,
    },
    /// Deletes approvals from the bank's ledger with their served counts (retention); fails
    /// with `Missing` for one that does not exist.
    #[non_exhaustive]
    ForgetAttestations {
        /// The attestation ids.
        ids: Vec<String>,
    },
    /// Records a pairwise subject identifier the bank gave a platform; fails with `Duplicate`
    /// if the identifier exists or the customer has one for that platform already.
    #[non_exhaustive]
    LinkSubject {
        /// The link.
        link: SubjectLink,
    },
}

/// Everything one commit applies, atomically: at least one audit record, and any preconditions
/// and state changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    preconditions: Vec<Precondition>,
    changes: Vec<Change>,
    // Never empty: the only constructor takes the first record, and records are only added.
    records: Vec<AuditRecord>,
}

/// A commit taken apart, for a store that applies it by value.
#[derive(Debug)]
#[non_exhaustive]
pub struct CommitParts {
    /// Checked first; if any fails, nothing is applied.
    pub preconditions: Vec<Precondition>,
    /// Applied in order.
    pub changes: Vec<Change>,
    /// Appended in order with consecutive sequence numbers. Never empty.
    pub records: Vec<AuditRecord>,
}

impl Commit {
    /// A commit that appends `record`.
    pub(crate) fn new(record: AuditRecord) -> Self {
        Self {
            preconditions: Vec::new(),
            changes: Vec::new(),
            records: vec![record],
        }
    }

    /// A commit that appends `before`, then `last` (never empty: `last` is there).
    pub(crate) fn records_then(before: Vec<AuditRecord>, last: AuditRecord) -> Self {
        let mut records = before;
        records.push(last);
        Self {
            preconditions: Vec::new(),
            changes: Vec::new(),
            records,
        }
    }

    /// Adds a state change.
    pub(crate) fn change(mut self, change: Change) -> Self {
        self.changes.push(change);
        self
    }

    /// Adds a precondition.
    pub(crate) fn precondition(mut self, precondition: Precondition) -> Self {
        self.preconditions.push(precondition);
        self
    }

    /// Appends another record after the ones already in the commit.
    pub(crate) fn push_record(&mut self, record: AuditRecord) {
        self.records.push(record);
    }

    /// Checked first; if any fails, nothing is applied ([`StoreError::Conflict`](super::StoreError::Conflict)).
    pub fn preconditions(&self) -> &[Precondition] {
        &self.preconditions
    }

    /// Applied in order.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Appended to the audit log, in order, with consecutive sequence numbers. Never empty.
    pub fn records(&self) -> &[AuditRecord] {
        &self.records
    }

    /// The parts, by value.
    pub fn into_parts(self) -> CommitParts {
        CommitParts {
            preconditions: self.preconditions,
            changes: self.changes,
            records: self.records,
        }
    }
}

impl Precondition {
    pub(crate) fn consent_version(consent: &ConsentId, version: u64) -> Self {
        Self::ConsentVersion {
            consent: consent.clone(),
            version,
        }
    }

    pub(crate) fn holder_version(holder: &HolderId, version: u64) -> Self {
        Self::HolderVersion {
            holder: holder.clone(),
            version,
        }
    }

    pub(crate) fn key_active(key_use: KeyUse, kid: &str) -> Self {
        Self::KeyActive {
            key_use,
            kid: kid.to_owned(),
        }
    }

    pub(crate) fn not_revoked_at_platform(consent: &ConsentId) -> Self {
        Self::NotRevokedAtPlatform {
            consent: consent.clone(),
        }
    }

    pub(crate) fn attestation_version(attestation: &str, version: u64) -> Self {
        Self::AttestationVersion {
            attestation: attestation.to_owned(),
            version,
        }
    }

    pub(crate) fn served_below(
        attestation: &str,
        day: Date,
        presence: Presence,
        limit: u32,
    ) -> Self {
        Self::ServedBelow {
            attestation: attestation.to_owned(),
            day,
            presence,
            limit,
        }
    }

    #[cfg_attr(
        not(feature = "store-conformance"),
        expect(
            dead_code,
            reason = "the conformance suite's; the gate checks served_below"
        )
    )]
    pub(crate) fn served_is(attestation: &str, day: Date, counts: ServedCounts) -> Self {
        Self::ServedIs {
            attestation: attestation.to_owned(),
            day,
            counts,
        }
    }

    pub(crate) fn usage_is(consent: &ConsentId, day: Date, usage: Usage) -> Self {
        Self::UsageIs {
            consent: consent.clone(),
            day,
            usage,
        }
    }
}

/// Where the audit entries of a commit landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitReceipt {
    /// Sequence numbers of the commit's audit entries.
    pub audit_seqs: Range<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditEvent};

    fn record() -> AuditRecord {
        AuditRecord::new(
            OffsetDateTime::UNIX_EPOCH,
            Actor::Platform("chat".parse().unwrap()),
            AuditEvent::PlatformRegistered { purposes: None },
        )
    }

    /// The module's `compile_fail` examples compile here, where the items are visible.
    #[test]
    fn the_refused_constructions_are_otherwise_well_formed() {
        fn hand_built(record: AuditRecord) -> Commit {
            Commit::new(record)
        }
        let commit = hand_built(record());
        assert_eq!(commit.records().len(), 1);
        fn sneak(consent: Consent) -> Change {
            Change::UpdateConsent { consent }
        }
        let _ = sneak;
    }

    #[test]
    fn a_commit_always_carries_a_record() {
        let mut commit = Commit::new(record()).change(Change::UseAttestation {
            attestation_id: "a".into(),
        });
        assert_eq!(commit.records().len(), 1);
        commit.push_record(record());
        let parts = commit.into_parts();
        assert_eq!((parts.changes.len(), parts.records.len()), (1, 2));
    }
}

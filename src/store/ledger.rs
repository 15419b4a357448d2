//! The bank's ledger: what a holder keeps in its own store, apart from the platform's.
//!
//! The same store layer keeps it (memory, SQLite, PostgreSQL; the same commits, the same
//! tamper-evident log, the same conformance suite), in the bank's own database: every attestation
//! the bank signed, with its revocation if any; the bank's policy and its history; the bank's own
//! count of served accesses per grant and UTC day; the ids of DPoP proofs and tokens already
//! presented; and the platform-side revocations it learned from the broker's feed. The bank's
//! gate decides from these records, never from the platform's store.

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use super::StoreError;
use crate::consent::{RevocationReason, Revoker};
use crate::hpke::DevicePublicKey;
use crate::ids::{BrokerId, ConsentId, PlatformId, SubjectId};
use crate::policy::HolderPolicy;
use crate::sets::{AccountSet, PlaintextUses, PurposeSet, ScopeSet};

/// An attestation the bank signed, as its ledger keeps it: what the subject approved at the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationRecord {
    /// The attestation's `jti`: access tokens name it (`att`).
    pub id: String,
    /// The consent request it approved.
    pub consent: ConsentId,
    /// The subject the bank authenticated.
    pub subject: SubjectId,
    /// The platform the subject approved sharing with.
    pub platform: PlatformId,
    /// The broker it was addressed to (whose tokens may rest on it).
    pub broker: BrokerId,
    /// Approved scopes.
    pub scopes: ScopeSet,
    /// Approved purposes.
    pub purposes: PurposeSet,
    /// Approved accounts.
    pub accounts: AccountSet,
    /// Unattended accesses per UTC day the subject agreed to (0: none).
    pub unattended_daily_limit: u32,
    /// When the bank signed it.
    #[serde(with = "time::serde::timestamp")]
    pub signed_at: OffsetDateTime,
    /// Until when the approval holds.
    #[serde(with = "time::serde::timestamp")]
    pub expires_at: OffsetDateTime,
    /// Set when the subject or the bank withdrew it at the bank.
    pub revoked: Option<BankRevocation>,
    /// Set when a later attestation for the same consent (a re-authorisation) replaced it.
    pub superseded_by: Option<String>,
    /// Thumbprints of the subject's device keys the approval named: responses are sealed to
    /// these (those not revoked since), and to no other key.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Uses (scope and purpose) for which the subject agreed to receive data unsealed (the
    /// bank's policy must allow each too); empty by default: everything is sealed.
    #[serde(default, alias = "plaintext_purposes")]
    pub plaintext: PlaintextUses,
    /// The identifier the attestation named the subject by (its `sub`): the pairwise
    /// identifier the bank gave the platform. Absent in records made before pairwise
    /// identifiers, whose `sub` was `subject` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairwise: Option<SubjectId>,
    /// Incremented by every change.
    pub version: u64,
}

impl AttestationRecord {
    /// The subject as the attestation and the tokens resting on it name it (`sub`).
    pub fn wire_subject(&self) -> &SubjectId {
        self.pairwise.as_ref().unwrap_or(&self.subject)
    }

    /// When the approval stops holding: its expiry, or its revocation if sooner.
    pub fn ends_at(&self) -> OffsetDateTime {
        self.revoked
            .as_ref()
            .map_or(self.expires_at, |r| r.at.min(self.expires_at))
    }
}

/// A key of one of the subject's devices, registered at the bank: the bank seals responses to
/// it (see [`crate::seal_response`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceKeyRecord {
    /// Whose device.
    pub subject: SubjectId,
    /// The device's X25519 public key.
    pub key: DevicePublicKey,
    /// When the subject registered it at the bank.
    #[serde(with = "time::serde::timestamp")]
    pub registered_at: OffsetDateTime,
    /// When the subject revoked it (a lost phone), if they did: it receives nothing after.
    #[serde(default, with = "time::serde::timestamp::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A withdrawal made at the bank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankRevocation {
    /// The subject (at the bank) or the bank itself.
    pub by: Revoker,
    /// Why.
    pub reason: RevocationReason,
    /// When.
    #[serde(with = "time::serde::timestamp")]
    pub at: OffsetDateTime,
}

/// One version of the bank's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRecord {
    /// 1 for the first policy, then one more per change.
    pub version: u64,
    /// The policy.
    pub policy: HolderPolicy,
    /// From when it applies.
    #[serde(with = "time::serde::timestamp")]
    pub effective_at: OffsetDateTime,
}

/// The bank's own count of accesses it served under one attestation on one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedCounts {
    /// Accesses the platform labelled unattended.
    pub unattended: u32,
    /// Accesses the platform labelled subject-present.
    pub present: u32,
}

impl ServedCounts {
    /// The count of accesses with `presence`.
    pub fn of(&self, presence: crate::policy::Presence) -> u32 {
        match presence {
            crate::policy::Presence::Unattended => self.unattended,
            crate::policy::Presence::SubjectPresent => self.present,
        }
    }
}

/// What kind of presented id the bank remembers, to refuse its second presentation.
///
/// A presented id is remembered with the time its own signature covers (a proof's `iat`, a
/// token's `exp`): stores keep it ordered by that time, so that new ids land at one end of one
/// index and expired ones leave from the other. A presentation is a replay when the same kind,
/// signed time and id were presented before: the signed time cannot be changed without the
/// signer's key, and a store never needs an index in the ids' random order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeenKind {
    /// A DPoP proof's `jti`.
    Proof,
    /// An access token's `jti` (when the gate takes each token once).
    Token,
}

impl SeenKind {
    /// The name stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Proof => "proof",
            Self::Token => "token",
        }
    }

    /// The kind [`SeenKind::as_str`] names.
    #[cfg(feature = "postgres")]
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        [Self::Proof, Self::Token]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// How far the bank has followed the broker's feed of platform-side revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    /// The broker's log position the feed covered (entries before it were all seen).
    pub position: u64,
    /// When the broker produced the feed last applied: the gate refuses when this is older
    /// than its staleness bound.
    #[serde(with = "time::serde::timestamp")]
    pub generated_at: OffsetDateTime,
    /// The root of the broker's log tree over its first `position` entries, as the feed last
    /// applied named it: the next feed's log must extend it. `None` for a state written before
    /// feeds named roots, and for one followed anew from the start.
    #[serde(default, with = "optional_hash")]
    pub root: Option<crate::merkle::Hash>,
}

/// A tree hash as standard base64, or nothing.
mod optional_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        hash: &Option<crate::merkle::Hash>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match hash {
            Some(hash) => {
                serializer.serialize_some(&crate::auditor::encode_hashes(&[*hash]).concat())
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<crate::merkle::Hash>, D::Error> {
        let Some(text) = Option::<String>::deserialize(deserializer)? else {
            return Ok(None);
        };
        crate::auditor::decode_hashes(&[text])
            .and_then(|hashes| hashes.first().copied())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("a tree hash is not 32 bytes of base64"))
    }
}

/// What the gate asks its ledger about one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateQuery<'a> {
    /// The attestation the token names.
    pub attestation: &'a str,
    /// The consent the token names.
    pub consent: &'a ConsentId,
    /// The UTC day of the access.
    pub day: Date,
    /// The DPoP proof's `jti`.
    pub proof_id: &'a str,
    /// The DPoP proof's `iat` (its signed time).
    pub proof_at: OffsetDateTime,
    /// The token's `jti`.
    pub token_id: &'a str,
    /// The token's `exp` (its signed time).
    pub token_at: OffsetDateTime,
}

/// Everything the gate reads for one access, read at once (one statement on the SQL stores).
///
/// A store outside this crate builds one from [`GateView::default`] and sets its fields (more
/// may be added).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct GateView {
    /// Whether the proof's `jti` was presented before.
    pub proof_seen: bool,
    /// Whether the token's `jti` was presented before.
    pub token_seen: bool,
    /// The attestation the token names, if the ledger has it.
    pub attestation: Option<AttestationRecord>,
    /// The bank's current policy.
    pub policy: Option<PolicyRecord>,
    /// Today's served counts under the attestation.
    pub served: ServedCounts,
    /// When the platform revoked the consent, if the feed said so.
    pub platform_revoked_at: Option<OffsetDateTime>,
    /// How far the feed has been followed.
    pub feed: Option<FeedState>,
    /// The key of the attestation's subject (see [`crate::store::StateRead::subject_key`]), if
    /// it has one; `None` without an attestation.
    pub subject_key: Option<crate::privacy::SubjectKey>,
    /// The device keys of the attestation's subject, revoked ones included, in the order
    /// registered (as [`LedgerRead::device_keys`]); empty without an attestation.
    pub device_keys: Vec<DeviceKeyRecord>,
}

/// A pairwise subject identifier: what one platform knows one of the bank's customers as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectLink {
    /// The identifier the platform uses (random, 128 bits: it tells the platform nothing).
    pub pairwise: SubjectId,
    /// The bank's customer.
    pub customer: SubjectId,
    /// The platform.
    pub platform: PlatformId,
    /// When the customer linked the platform.
    #[serde(with = "time::serde::timestamp")]
    pub linked_at: OffsetDateTime,
}

/// The bank's ledger, read-only.
pub trait LedgerRead {
    /// The link a pairwise identifier names.
    ///
    /// # Errors
    /// [`StoreError`].
    fn subject_link(&self, pairwise: &SubjectId) -> Result<Option<SubjectLink>, StoreError>;

    /// The customer's pairwise identifier for `platform`, if it has one.
    ///
    /// # Errors
    /// [`StoreError`].
    fn link_of(
        &self,
        customer: &SubjectId,
        platform: &PlatformId,
    ) -> Result<Option<SubjectLink>, StoreError>;

    /// Every pairwise identifier the customer has, one per platform it linked.
    ///
    /// # Errors
    /// [`StoreError`].
    fn links_of_customer(&self, customer: &SubjectId) -> Result<Vec<SubjectLink>, StoreError>;

    /// Approvals that ended (expired or revoked) before `before`, oldest end first, at most
    /// `limit`.
    ///
    /// # Errors
    /// [`StoreError`].
    fn attestations_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<AttestationRecord>, StoreError>;

    /// The attestation with this id.
    ///
    /// # Errors
    /// [`StoreError`].
    fn attestation_record(&self, id: &str) -> Result<Option<AttestationRecord>, StoreError>;

    /// The attestations the bank signed for `subject`, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    fn attestations_of_subject(
        &self,
        subject: &SubjectId,
    ) -> Result<Vec<AttestationRecord>, StoreError>;

    /// The attestations the bank signed for `consent`, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    fn attestations_of_consent(
        &self,
        consent: &ConsentId,
    ) -> Result<Vec<AttestationRecord>, StoreError>;

    /// When the broker's revocation feed told the bank that `consent` was stopped on the
    /// platform's side (the time the revocation was logged there), if it did.
    ///
    /// # Errors
    /// [`StoreError`].
    fn platform_revocation(
        &self,
        consent: &ConsentId,
    ) -> Result<Option<OffsetDateTime>, StoreError>;

    /// Every version of the bank's policy, oldest first.
    ///
    /// # Errors
    /// [`StoreError`].
    fn bank_policies(&self) -> Result<Vec<PolicyRecord>, StoreError>;

    /// The device keys the subject registered at the bank, oldest first, revoked ones included.
    ///
    /// # Errors
    /// [`StoreError`].
    fn device_keys(&self, subject: &SubjectId) -> Result<Vec<DeviceKeyRecord>, StoreError>;

    /// How far the feed of platform-side revocations has been followed, if at all.
    ///
    /// # Errors
    /// [`StoreError`].
    fn feed_state(&self) -> Result<Option<FeedState>, StoreError>;

    /// Whether an id of this kind, with this signed time (see [`SeenKind`]), was presented
    /// before (and is still remembered).
    ///
    /// # Errors
    /// [`StoreError`].
    fn seen(&self, kind: SeenKind, id: &str, at: OffsetDateTime) -> Result<bool, StoreError>;

    /// What the gate reads for one access: whether the proof and the token were presented
    /// before, the attestation, the current policy, the attestation's served counts on the day,
    /// whether the platform revoked the consent, the feed's state, and the key and device keys of
    /// the attestation's subject. A store reads it in one consistent read where it can (the SQL
    /// stores: one statement). The gate's commit of a served access re-checks the
    /// attestation's version, the day's count, the policy's version, the subject's key and live
    /// device keys, that the platform has not revoked the consent, and that both ids are new.
    ///
    /// # Errors
    /// [`StoreError`].
    fn gate_view(&self, query: &GateQuery<'_>) -> Result<GateView, StoreError>;
}

macro_rules! forward_ledger_read {
    ($($wrapper:ty),+) => {$(
        impl<T: LedgerRead + ?Sized> LedgerRead for $wrapper {
            fn subject_link(&self, pairwise: &SubjectId) -> Result<Option<SubjectLink>, StoreError> {
                (**self).subject_link(pairwise)
            }
            fn link_of(
                &self,
                customer: &SubjectId,
                platform: &PlatformId,
            ) -> Result<Option<SubjectLink>, StoreError> {
                (**self).link_of(customer, platform)
            }
            fn attestations_ended_before(
                &self,
                before: OffsetDateTime,
                limit: u32,
            ) -> Result<Vec<AttestationRecord>, StoreError> {
                (**self).attestations_ended_before(before, limit)
            }
            fn links_of_customer(&self, customer: &SubjectId) -> Result<Vec<SubjectLink>, StoreError> {
                (**self).links_of_customer(customer)
            }
            fn attestation_record(&self, id: &str) -> Result<Option<AttestationRecord>, StoreError> {
                (**self).attestation_record(id)
            }
            fn attestations_of_subject(
                &self,
                subject: &SubjectId,
            ) -> Result<Vec<AttestationRecord>, StoreError> {
                (**self).attestations_of_subject(subject)
            }
            fn attestations_of_consent(
                &self,
                consent: &ConsentId,
            ) -> Result<Vec<AttestationRecord>, StoreError> {
                (**self).attestations_of_consent(consent)
            }
            fn platform_revocation(
                &self,
                consent: &ConsentId,
            ) -> Result<Option<OffsetDateTime>, StoreError> {
                (**self).platform_revocation(consent)
            }
            fn bank_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
                (**self).bank_policies()
            }
            fn seen(&self, kind: SeenKind, id: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
                (**self).seen(kind, id, at)
            }
            fn feed_state(&self) -> Result<Option<FeedState>, StoreError> {
                (**self).feed_state()
            }
            fn device_keys(&self, subject: &SubjectId) -> Result<Vec<DeviceKeyRecord>, StoreError> {
                (**self).device_keys(subject)
            }
            fn gate_view(&self, query: &GateQuery<'_>) -> Result<GateView, StoreError> {
                (**self).gate_view(query)
            }
        }
    )+};
}
forward_ledger_read!(&T, Box<T>, std::sync::Arc<T>);

/// The thumbprints of the keys that are not revoked, in order.
pub(crate) fn live_thumbprints(keys: &[DeviceKeyRecord]) -> Vec<String> {
    keys.iter()
        .filter(|key| key.revoked_at.is_none())
        .map(|key| key.key.thumbprint())
        .collect()
}

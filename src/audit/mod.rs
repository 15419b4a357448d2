//! Audit records: what happened, who did it, and what was decided.
//!
//! The broker builds an [`AuditRecord`] for every registration, request, approval, decision,
//! revocation and refusal, and hands it to the store in the same commit as the state change it
//! describes. The store gives it a gap-free sequence number and keeps it as an [`AuditEntry`].
//! This module never performs I/O and never drops a record.

pub mod checkpoint;
pub mod log;
pub mod merkle;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::attestation::AttestationError;
use crate::consent::{ConsentError, RequestError, RevocationReason, Revoker};
use crate::ids::{AccountId, BrokerId, ConsentId, HolderId, PlatformId, SubjectId};
use crate::policy::{DenyReason, Presence};
use crate::vocab::{RequestedPurpose, RequestedScope};

/// What kind of event an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditKind {
    /// A holder registered (with its policy and attestation keys).
    HolderRegistered,
    /// A holder changed its policy.
    HolderPolicyChanged,
    /// A platform registered.
    PlatformRegistered,
    /// A platform requested consent.
    ConsentRequested,
    /// A consent request was refused (for example, it named a prohibited use).
    ConsentRequestRefused,
    /// The subject's approval, attested by the holder, activated a grant.
    ConsentApproved,
    /// An approval was refused (missing, forged, expired, replayed or mismatched attestation,
    /// or a request no longer open).
    ApprovalRefused,
    /// The subject declined the request.
    ConsentRejected,
    /// An access was permitted.
    AccessPermitted,
    /// An access was denied.
    AccessDenied,
    /// A consent was revoked.
    ConsentRevoked,
    /// A live grant was re-authorised with a new attestation.
    ConsentReauthorised,
    /// A re-authorisation was refused.
    ReauthorisationRefused,
    /// An access token was issued for a permit.
    TokenIssued,
    /// A token signing key was activated: the broker's first key, or a rotation.
    SigningKeyActivated,
}

/// Who caused the event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The subject.
    Subject(SubjectId),
    /// The platform.
    Platform(PlatformId),
    /// The holder.
    Holder(HolderId),
    /// The broker itself (key management).
    Broker(BrokerId),
}

/// Why a request, approval or re-authorisation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The consent request was invalid.
    Request(RequestError),
    /// The attestation failed verification.
    Attestation(AttestationError),
    /// The consent was not in a state that allows the transition.
    Lifecycle(ConsentError),
}

/// Who revoked a consent, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Who revoked it.
    pub by: Revoker,
    /// Why.
    pub reason: RevocationReason,
}

/// An event to append: everything but the sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (the broker's clock).
    #[serde(with = "time::serde::timestamp")]
    pub at: OffsetDateTime,
    /// What happened.
    pub kind: AuditKind,
    /// Who caused it.
    pub actor: Actor,
    /// The consent concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<ConsentId>,
    /// Whose data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectId>,
    /// The scope asked for (accesses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RequestedScope>,
    /// The purpose stated (accesses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<RequestedPurpose>,
    /// The account asked for (accesses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    /// Whether the subject was present (accesses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<Presence>,
    /// Every reason of a denial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<DenyReason>,
    /// Why a request or approval was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// Who revoked, and why (revocations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// The attestation's `jti` (approvals and re-authorisations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_id: Option<String>,
    /// The holder's attestation itself, a compact JWS (approvals and re-authorisations): the
    /// evidence of the subject's approval, re-checkable by anyone holding the holder's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<String>,
    /// The access token's `jti` (token issuing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The key id of the new signing key (key rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl AuditRecord {
    /// A record with only time, kind and actor set.
    pub fn new(at: OffsetDateTime, kind: AuditKind, actor: Actor) -> Self {
        Self {
            at,
            kind,
            actor,
            consent: None,
            subject: None,
            scope: None,
            purpose: None,
            account: None,
            presence: None,
            reasons: Vec::new(),
            refusal: None,
            revocation: None,
            attestation_id: None,
            attestation: None,
            token_id: None,
            key_id: None,
        }
    }

    /// Sets the consent and its subject.
    pub fn about(mut self, consent: &ConsentId, subject: Option<&SubjectId>) -> Self {
        self.consent = Some(consent.clone());
        self.subject = subject.cloned();
        self
    }

    /// Sets the refusal.
    pub fn refused(mut self, refusal: Refusal) -> Self {
        self.refusal = Some(refusal);
        self
    }
}

/// A stored audit record with its position in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log: 0, 1, 2, … without gaps.
    pub seq: u64,
    /// The record.
    #[serde(flatten)]
    pub record: AuditRecord,
}

impl AuditEntry {
    /// The entry's bytes: its JSON, written once and hashed as the Merkle leaf. A verifier hashes
    /// the stored bytes; it never re-encodes an entry.
    ///
    /// # Errors
    /// Only if a value cannot be encoded as JSON, which no audit record contains.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses stored entry bytes.
    ///
    /// # Errors
    /// The bytes are not the JSON of an audit entry.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

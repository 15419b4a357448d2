//! The events an audit entry records, one variant per kind, and what they are about.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Refusal, Revocation};
use crate::ids::{BrokerId, ConsentId, HolderId, PlatformId, Pseudonym};
use crate::keys::Ed25519PublicKey;
use crate::policy::{DenyReason, HolderPolicy, Presence};
use crate::privacy::SealedField;
use crate::refusal::GateRefusal;
use crate::sealing::Delivery;
use crate::sets::ScopeSet;
use crate::sets::{PlaintextUses, PurposeSet};
use crate::vocab::{Purpose, RequestedPurpose, RequestedScope, Scope};

/// What happened: one variant per kind of entry, each with exactly its members.
///
/// Members added after the first version of the format are `Option`s (or empty lists), so that
/// entries written before them still parse; the broker always writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A holder registered.
    HolderRegistered {
        /// RFC 7638 thumbprints of the keys registered to sign its attestations.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attestation_keys: Vec<String>,
        /// The policy it registered with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<HolderPolicy>,
    },
    /// A holder changed its policy.
    HolderPolicyChanged {
        /// The policy in force from now on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<HolderPolicy>,
        /// The holder's signed instruction (compact JWS) that made the change: the evidence that
        /// the bank, not the embedder, changed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instruction: Option<String>,
    },
    /// A holder replaced the keys that sign its attestations.
    HolderKeysChanged {
        /// RFC 7638 thumbprints of the keys registered from now on.
        attestation_keys: Vec<String>,
        /// The holder's signed instruction, signed by a key registered before the change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instruction: Option<String>,
    },
    /// A platform registered.
    PlatformRegistered {
        /// The purposes it registered for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purposes: Option<PurposeSet>,
    },
    /// A platform requested consent.
    ConsentRequested {
        /// The new consent.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
    },
    /// A consent request was refused (for example, it named a prohibited use).
    ConsentRequestRefused {
        /// Whose data it asked for: the subject's pseudonym, when the subject has a key already
        /// (a refused request makes none: the platform's word about a subject unknown here is
        /// not kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Pseudonym>,
        /// Why.
        refusal: Refusal,
    },
    /// The subject's approval, attested by the holder, activated a grant.
    ConsentApproved {
        /// The consent.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
        /// The attestation's `jti`.
        attestation_id: String,
        /// Audit formats 1.1 to 4 only: the attestation itself (compact JWS), whose payload names the
        /// subject and accounts. Never written now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attestation: Option<String>,
        /// The commitment to the attestation ([`commitment`](crate::privacy::commitment): SHA-256
        /// of the compact JWS, base64url): binds the entry to the exact evidence.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attestation_digest: Option<String>,
        /// The attestation, sealed under the subject's key (field `attestation`, about the
        /// subject's pseudonym): readable while the key exists, by no one after erasure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed_attestation: Option<SealedField>,
    },
    /// An approval was refused (missing, forged, expired, replayed or mismatched attestation, or
    /// a request no longer open).
    ApprovalRefused {
        /// The consent.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
        /// Why.
        refusal: Refusal,
    },
    /// The subject declined the request.
    ConsentRejected {
        /// The consent.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
    },
    /// An access was permitted.
    AccessPermitted {
        /// The consent relied on.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
        /// The scope.
        scope: Scope,
        /// The purpose.
        purpose: Purpose,
        /// The account: its pseudonym under the subject's key.
        account: Pseudonym,
        /// Whether the subject was present.
        presence: Presence,
    },
    /// An access was denied.
    AccessDenied {
        /// The consent named.
        consent: ConsentId,
        /// Whose data (the subject's pseudonym); absent when the access was refused before any
        /// consent was read (a prohibited use, an unknown consent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Pseudonym>,
        /// The scope asked for, as asked.
        scope: RequestedScope,
        /// The purpose stated, as stated.
        purpose: RequestedPurpose,
        /// The account asked for, as its pseudonym under the subject's key; absent with the
        /// subject (no key to make it with: the platform's word about an account of nobody known
        /// is not kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<Pseudonym>,
        /// Whether the subject was present.
        presence: Presence,
        /// Every rule that failed (never empty). An account a reason names is given as its
        /// pseudonym, like `account`.
        reasons: Vec<DenyReason>,
    },
    /// A consent was revoked.
    ConsentRevoked {
        /// The consent.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
        /// Who revoked it, and why.
        revocation: Revocation,
        /// For a revocation by the holder: its signed instruction, the evidence. Absent for the
        /// subject's or the platform's revocation, which the platform asserts (the entry's actor
        /// says who asserted it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instruction: Option<String>,
        /// The consent's holder: whose revocation feed carries it (an erasure deletes the
        /// consent's state in the same commit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        holder: Option<HolderId>,
    },
    /// A live grant was re-authorised with a new attestation.
    ConsentReauthorised {
        /// The consent.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
        /// The new attestation's `jti`.
        attestation_id: String,
        /// Audit formats 1.1 to 4 only: the attestation itself (compact JWS), whose payload names the
        /// subject and accounts. Never written now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attestation: Option<String>,
        /// The commitment to the attestation ([`commitment`](crate::privacy::commitment): SHA-256
        /// of the compact JWS, base64url): binds the entry to the exact evidence.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attestation_digest: Option<String>,
        /// The attestation, sealed under the subject's key (field `attestation`, about the
        /// subject's pseudonym): readable while the key exists, by no one after erasure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sealed_attestation: Option<SealedField>,
    },
    /// A re-authorisation was refused.
    ReauthorisationRefused {
        /// The consent.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
        /// Why.
        refusal: Refusal,
    },
    /// An access token was issued for a permit.
    TokenIssued {
        /// The consent relied on.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
        /// The token's scope.
        scope: Scope,
        /// The token's purpose.
        purpose: Purpose,
        /// The token's account: its pseudonym under the subject's key.
        account: Pseudonym,
        /// The presence the permit was decided for.
        presence: Presence,
        /// The token's `jti`.
        token_id: String,
        /// The thumbprint of the key the token is bound to (its `cnf.jkt`), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sender_key: Option<String>,
        /// The commitment to the signed token (SHA-256 of the compact JWS, base64url): what a
        /// bank's monitor matches the tokens it served against, claim for claim.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_digest: Option<String>,
    },
    /// A token signing key was activated: the broker's first key, or a rotation.
    SigningKeyActivated {
        /// RFC 7638 thumbprint of the key (the `kid` of the tokens it signs).
        key_id: String,
        /// The public key itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_key: Option<Ed25519PublicKey>,
        /// The key it replaced, which stops signing now and verifies until its last token
        /// expires.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retired_key_id: Option<String>,
    },
    /// A checkpoint signing key was activated: the broker's first, or a replacement.
    CheckpointKeyActivated {
        /// RFC 7638 thumbprint of the Ed25519 key.
        key_id: String,
        /// The C2SP signed-note verifier key auditors check checkpoints with.
        verifier_key: String,
        /// The key it replaced; checkpoints that key signed remain valid for their sizes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retired_key_id: Option<String>,
        /// For a rotation: a signed note, signed by the retiring key *and* the new one, whose
        /// text is [`crate::key_history::rotation_statement`]. A key change without it was not
        /// endorsed by the key it replaced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rotation: Option<String>,
    },
    /// Consents were copied into the store by the test kit (feature `testing`) for a benchmark or
    /// a load test, with no attestation behind them. A production log never holds this entry.
    TestDataImported {
        /// How many consents the commit stored.
        consents: u64,
    },
    // ---- a bank's journal ---------------------------------------------------------------
    /// The bank signed an attestation: the subject approved at the bank. Recorded before the
    /// attestation leaves the bank.
    AttestationSigned {
        /// The attestation's `jti`.
        attestation: String,
        /// The consent request approved.
        consent: ConsentId,
        /// Who approved: the subject's pseudonym.
        subject: Pseudonym,
        /// The platform approved to receive the data.
        platform: PlatformId,
        /// The broker it was addressed to.
        broker: BrokerId,
        /// Approved scopes.
        scopes: ScopeSet,
        /// Approved purposes.
        purposes: PurposeSet,
        /// Approved accounts, as pseudonyms under the subject's key.
        accounts: Vec<Pseudonym>,
        /// Until when the approval holds.
        #[serde(with = "time::serde::timestamp")]
        expires_at: OffsetDateTime,
        /// Unattended accesses per day the subject agreed to.
        unattended_daily_limit: u32,
        /// The device keys responses are sealed to, as pseudonyms of their thumbprints.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        devices: Vec<Pseudonym>,
        /// Uses (scope, purpose) the subject agreed to receive unsealed.
        #[serde(default, skip_serializing_if = "PlaintextUses::is_empty")]
        plaintext: PlaintextUses,
        /// The earlier attestation of the same consent this one replaces (a re-authorisation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        supersedes: Option<String>,
        /// The commitment to the signed attestation (SHA-256 of the compact JWS, base64url): the
        /// same as the broker's `consent_approved` entry must carry, which the bank's monitor
        /// checks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attestation_digest: Option<String>,
    },
    /// An approval was withdrawn at the bank (by the subject there, or by the bank).
    RevokedAtBank {
        /// The attestation withdrawn.
        attestation: String,
        /// Its consent.
        consent: ConsentId,
        /// Whose: the subject's pseudonym.
        subject: Pseudonym,
        /// Who withdrew it, and why.
        revocation: Revocation,
    },
    /// The bank set its policy (the first, or a change).
    BankPolicySet {
        /// The version, 1 for the first.
        version: u64,
        /// The policy in force from now on.
        policy: HolderPolicy,
    },
    /// The bank's gate served an access (recorded before any data is served).
    AccessServed {
        /// The attestation it rests on.
        attestation: String,
        /// The consent.
        consent: ConsentId,
        /// Whose data: the subject's pseudonym.
        subject: Pseudonym,
        /// Who received it.
        platform: PlatformId,
        /// What data.
        scope: Scope,
        /// Why.
        purpose: Purpose,
        /// Which account: its pseudonym under the subject's key.
        account: Pseudonym,
        /// What the platform claimed about the subject's presence.
        presence: Presence,
        /// The token's `jti`.
        token_id: String,
        /// The DPoP proof's `jti`.
        proof_id: String,
        /// How the data leaves the bank: sealed to which devices (given as the pseudonyms of
        /// their thumbprints), or unsealed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivery: Option<Delivery>,
        /// The commitment to the token presented (SHA-256 of the compact JWS, base64url): the
        /// bank's monitor finds the same in the broker's `token_issued` entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_digest: Option<String>,
    },
    /// The bank's gate refused an access; the members the gate could establish are given.
    AccessRefusedAtGate {
        /// Why.
        refusal: GateRefusal,
        /// The token's `jti`, once its signature verified.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_id: Option<String>,
        /// The attestation the token named.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attestation: Option<String>,
        /// The consent the token named.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        consent: Option<ConsentId>,
        /// The subject's pseudonym, as the bank's ledger knows the attestation's (never the
        /// token's word).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Pseudonym>,
        /// The platform the token was issued to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<PlatformId>,
        /// The scope asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        /// The account asked, as its pseudonym under the subject's key (absent with the subject).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<Pseudonym>,
        /// What the platform claimed about the subject's presence.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presence: Option<Presence>,
    },
    /// The bank applied the broker's feed of platform-side revocations.
    RevocationFeedApplied {
        /// The broker's log position the feed covers.
        position: u64,
        /// When the broker produced it.
        #[serde(with = "time::serde::timestamp")]
        generated_at: OffsetDateTime,
        /// The consents it learned were revoked on the platform.
        revoked: Vec<ConsentId>,
    },
    /// The subject registered a device key at the bank (responses are sealed to it).
    DeviceKeyRegistered {
        /// Whose device: the subject's pseudonym.
        subject: Pseudonym,
        /// The key: the pseudonym of its RFC 7638 thumbprint.
        device: Pseudonym,
    },
    /// The subject revoked a device key at the bank: nothing is sealed to it after.
    DeviceKeyRevoked {
        /// Whose device: the subject's pseudonym.
        subject: Pseudonym,
        /// The key: the pseudonym of its RFC 7638 thumbprint.
        device: Pseudonym,
    },
    /// A key that signs the bank's attestations and instructions was activated.
    AttestationKeyActivated {
        /// Its RFC 7638 thumbprint.
        key_id: String,
        /// The public key.
        public_key: Ed25519PublicKey,
        /// The key it replaced (its approvals stay verifiable).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retired_key_id: Option<String>,
    },
    /// A subject was erased: its key and every state row about it deleted. Recorded under the
    /// pseudonym it had, which from now on links to nobody.
    SubjectErased {
        /// The erased subject's pseudonym.
        subject: Pseudonym,
        /// The consents whose state was deleted (a broker's; live ones were revoked first, in the
        /// same commit). A bank's erasure lists none of its approvals: that would tie the
        /// customer's relationships with several platforms together for good.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        consents: Vec<ConsentId>,
    },
    /// State rows of grants that ended long enough ago were deleted (storage limitation). The
    /// log keeps its pseudonymous entries about them.
    RetentionApplied {
        /// Grants that ended before this were eligible.
        #[serde(with = "time::serde::timestamp")]
        ended_before: OffsetDateTime,
        /// The consents whose state was deleted (a broker's).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        consents: Vec<ConsentId>,
        /// The approvals whose records were deleted (a bank's).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attestations: Vec<String>,
    },
    /// The bank gave a platform a pairwise identifier for one of its customers (the customer
    /// linked the platform in the bank's authenticated session). Neither identifier is written.
    SubjectLinked {
        /// The customer's pseudonym.
        subject: Pseudonym,
        /// The platform the pairwise identifier is for.
        platform: PlatformId,
    },
    /// A kind this version does not know (written by a newer one). Parsed so that reading a log
    /// never fails on it; its members are not kept.
    #[serde(other)]
    Unrecognised,
}

/// What kind of event an entry records, without its members: for filtering and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
#[expect(
    missing_docs,
    reason = "each variant is the kind of the AuditEvent of the same name"
)]
pub enum AuditKind {
    HolderRegistered,
    HolderPolicyChanged,
    HolderKeysChanged,
    PlatformRegistered,
    ConsentRequested,
    ConsentRequestRefused,
    ConsentApproved,
    ApprovalRefused,
    ConsentRejected,
    AccessPermitted,
    AccessDenied,
    ConsentRevoked,
    ConsentReauthorised,
    ReauthorisationRefused,
    TokenIssued,
    SigningKeyActivated,
    CheckpointKeyActivated,
    TestDataImported,
    AttestationSigned,
    RevokedAtBank,
    BankPolicySet,
    AccessServed,
    AccessRefusedAtGate,
    RevocationFeedApplied,
    AttestationKeyActivated,
    DeviceKeyRegistered,
    DeviceKeyRevoked,
    SubjectErased,
    RetentionApplied,
    SubjectLinked,
    Unrecognised,
}

impl AuditEvent {
    /// The event's kind.
    pub fn kind(&self) -> AuditKind {
        match self {
            Self::HolderRegistered { .. } => AuditKind::HolderRegistered,
            Self::HolderPolicyChanged { .. } => AuditKind::HolderPolicyChanged,
            Self::HolderKeysChanged { .. } => AuditKind::HolderKeysChanged,
            Self::PlatformRegistered { .. } => AuditKind::PlatformRegistered,
            Self::ConsentRequested { .. } => AuditKind::ConsentRequested,
            Self::ConsentRequestRefused { .. } => AuditKind::ConsentRequestRefused,
            Self::ConsentApproved { .. } => AuditKind::ConsentApproved,
            Self::ApprovalRefused { .. } => AuditKind::ApprovalRefused,
            Self::ConsentRejected { .. } => AuditKind::ConsentRejected,
            Self::AccessPermitted { .. } => AuditKind::AccessPermitted,
            Self::AccessDenied { .. } => AuditKind::AccessDenied,
            Self::ConsentRevoked { .. } => AuditKind::ConsentRevoked,
            Self::ConsentReauthorised { .. } => AuditKind::ConsentReauthorised,
            Self::ReauthorisationRefused { .. } => AuditKind::ReauthorisationRefused,
            Self::TokenIssued { .. } => AuditKind::TokenIssued,
            Self::SigningKeyActivated { .. } => AuditKind::SigningKeyActivated,
            Self::CheckpointKeyActivated { .. } => AuditKind::CheckpointKeyActivated,
            Self::TestDataImported { .. } => AuditKind::TestDataImported,
            Self::AttestationSigned { .. } => AuditKind::AttestationSigned,
            Self::RevokedAtBank { .. } => AuditKind::RevokedAtBank,
            Self::BankPolicySet { .. } => AuditKind::BankPolicySet,
            Self::AccessServed { .. } => AuditKind::AccessServed,
            Self::AccessRefusedAtGate { .. } => AuditKind::AccessRefusedAtGate,
            Self::RevocationFeedApplied { .. } => AuditKind::RevocationFeedApplied,
            Self::AttestationKeyActivated { .. } => AuditKind::AttestationKeyActivated,
            Self::DeviceKeyRegistered { .. } => AuditKind::DeviceKeyRegistered,
            Self::DeviceKeyRevoked { .. } => AuditKind::DeviceKeyRevoked,
            Self::SubjectErased { .. } => AuditKind::SubjectErased,
            Self::RetentionApplied { .. } => AuditKind::RetentionApplied,
            Self::SubjectLinked { .. } => AuditKind::SubjectLinked,
            Self::Unrecognised => AuditKind::Unrecognised,
        }
    }

    /// The consent the event is about, if any.
    pub fn consent(&self) -> Option<&ConsentId> {
        match self {
            Self::ConsentRequested { consent, .. }
            | Self::ConsentApproved { consent, .. }
            | Self::ApprovalRefused { consent, .. }
            | Self::ConsentRejected { consent, .. }
            | Self::AccessPermitted { consent, .. }
            | Self::AccessDenied { consent, .. }
            | Self::ConsentRevoked { consent, .. }
            | Self::ConsentReauthorised { consent, .. }
            | Self::ReauthorisationRefused { consent, .. }
            | Self::TokenIssued { consent, .. }
            | Self::AttestationSigned { consent, .. }
            | Self::RevokedAtBank { consent, .. }
            | Self::AccessServed { consent, .. } => Some(consent),
            Self::AccessRefusedAtGate { consent, .. } => consent.as_ref(),
            _ => None,
        }
    }

    /// The subject the event names (its pseudonym; in audit formats 1 to 4, its id), if any.
    pub fn subject(&self) -> Option<&Pseudonym> {
        match self {
            Self::ConsentRequested { subject, .. }
            | Self::ConsentApproved { subject, .. }
            | Self::ApprovalRefused { subject, .. }
            | Self::ConsentRejected { subject, .. }
            | Self::AccessPermitted { subject, .. }
            | Self::ConsentRevoked { subject, .. }
            | Self::ConsentReauthorised { subject, .. }
            | Self::ReauthorisationRefused { subject, .. }
            | Self::TokenIssued { subject, .. }
            | Self::AttestationSigned { subject, .. }
            | Self::RevokedAtBank { subject, .. }
            | Self::AccessServed { subject, .. }
            | Self::DeviceKeyRegistered { subject, .. }
            | Self::DeviceKeyRevoked { subject, .. }
            | Self::SubjectErased { subject, .. }
            | Self::SubjectLinked { subject, .. } => Some(subject),
            Self::AccessDenied { subject, .. }
            | Self::AccessRefusedAtGate { subject, .. }
            | Self::ConsentRequestRefused { subject, .. } => subject.as_ref(),
            _ => None,
        }
    }

    /// The reasons of a denial (empty for every other event).
    pub fn reasons(&self) -> &[DenyReason] {
        match self {
            Self::AccessDenied { reasons, .. } => reasons,
            _ => &[],
        }
    }

    /// The scope of an access or a token, as asked.
    pub fn scope(&self) -> Option<RequestedScope> {
        match self {
            Self::AccessPermitted { scope, .. } | Self::TokenIssued { scope, .. } => {
                Some((*scope).into())
            }
            Self::AccessDenied { scope, .. } => Some(*scope),
            _ => None,
        }
    }

    /// The purpose of an access or a token, as stated.
    pub fn purpose(&self) -> Option<RequestedPurpose> {
        match self {
            Self::AccessPermitted { purpose, .. } | Self::TokenIssued { purpose, .. } => {
                Some((*purpose).into())
            }
            Self::AccessDenied { purpose, .. } => Some(*purpose),
            _ => None,
        }
    }

    /// The account of an access or a token (its pseudonym).
    pub fn account(&self) -> Option<&Pseudonym> {
        match self {
            Self::AccessPermitted { account, .. } | Self::TokenIssued { account, .. } => {
                Some(account)
            }
            Self::AccessDenied { account, .. } => account.as_ref(),
            _ => None,
        }
    }

    /// Whether the subject was present, for an access or a token.
    pub fn presence(&self) -> Option<Presence> {
        match self {
            Self::AccessPermitted { presence, .. }
            | Self::AccessDenied { presence, .. }
            | Self::TokenIssued { presence, .. } => Some(*presence),
            _ => None,
        }
    }

    /// The `jti` of the token an entry records the issuing of.
    pub fn token_id(&self) -> Option<&str> {
        match self {
            Self::TokenIssued { token_id, .. } => Some(token_id),
            _ => None,
        }
    }

    /// The `jti` of the attestation an approval or re-authorisation rests on.
    pub fn attestation_id(&self) -> Option<&str> {
        match self {
            Self::ConsentApproved { attestation_id, .. }
            | Self::ConsentReauthorised { attestation_id, .. } => Some(attestation_id),
            _ => None,
        }
    }

    /// The refusal, for the refused kinds.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::ConsentRequestRefused { refusal, .. }
            | Self::ApprovalRefused { refusal, .. }
            | Self::ReauthorisationRefused { refusal, .. } => Some(refusal),
            _ => None,
        }
    }
}

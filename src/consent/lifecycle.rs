//! Grants and the lifecycle of a consent.
//!
//! `Requested` → `Authorised` | `Rejected`; `Authorised` → `Revoked { by, reason }` | `Expired`.
//! Every transition is a pure function from a [`Consent`] and the current time to a new
//! [`Consent`] or a [`ConsentError`]; nothing reads a clock or a store. Expiry is derived from
//! `now`; no background job ever has to run for an expired grant to stop permitting.
//!
//! This module owns the rule "no attestation, no grant", and keeps it by types: a [`Consent`]
//! has no public constructor and no public fields, and the only way into `Authorised` is
//! `Consent::approve` (or `reauthorise`, both crate-private), which consumes an [`Approval`] that
//! only the broker's verification of the holder's signed attestation makes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::request::{ConsentRequest, StoredRequest};
use crate::ids::{AccountId, ConsentId, Pseudonym};
use crate::privacy::{GrantPseudonyms, SubjectKey};
use crate::sets::{AccountSet, PurposeSet, ScopeSet};

/// What the subject approved, as attested by the holder. Read-only outside the crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub(crate) scopes: ScopeSet,
    pub(crate) purposes: PurposeSet,
    pub(crate) accounts: AccountSet,
    #[serde(with = "time::serde::timestamp")]
    pub(crate) authorised_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp")]
    pub(crate) expires_at: OffsetDateTime,
    /// The id (`jti`) of the attestation the grant rests on: access tokens name it, and the
    /// bank's gate finds the grant in its own ledger by it.
    pub(crate) attestation_id: Box<str>,
    /// Unattended accesses per UTC day the subject agreed to (0: none).
    pub(crate) unattended_daily_limit: u32,
    /// The subject's and the granted accounts' pseudonyms, made with the grant under the
    /// subject's key (see [`Consent::with_pseudonyms`]); none for a grant stored before grants
    /// kept them, whose decisions make them from the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pseudonyms: Option<GrantPseudonyms>,
    // The holder's attestation that activated the grant is evidence, not state: it is kept in the
    // audit entry of the approval, where it is tamper-evident, and not in every stored grant,
    // where it would triple the memory a grant costs.
}

#[derive(Deserialize)]
#[serde(remote = "Grant")]
struct StoredGrant {
    scopes: ScopeSet,
    purposes: PurposeSet,
    accounts: AccountSet,
    #[serde(with = "time::serde::timestamp")]
    authorised_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp")]
    expires_at: OffsetDateTime,
    // Grants stored before attestations named them: no attestation id (a gate finds no ledger
    // record for it), and the holder policy's default limit, which then applied.
    #[serde(default)]
    attestation_id: Box<str>,
    #[serde(default = "legacy_unattended_limit")]
    unattended_daily_limit: u32,
    #[serde(default)]
    pseudonyms: Option<GrantPseudonyms>,
}

fn legacy_unattended_limit() -> u32 {
    crate::policy::DEFAULT_UNATTENDED_DAILY_LIMIT
}

impl Grant {
    /// Approved scopes (a non-empty subset of the requested ones).
    pub fn scopes(&self) -> ScopeSet {
        self.scopes
    }
    /// Approved purposes (a non-empty subset of the requested ones).
    pub fn purposes(&self) -> PurposeSet {
        self.purposes
    }
    /// Approved accounts (non-empty).
    pub fn accounts(&self) -> &AccountSet {
        &self.accounts
    }
    /// When the broker activated (or last re-authorised) the grant.
    pub fn authorised_at(&self) -> OffsetDateTime {
        self.authorised_at
    }
    /// When the grant stops permitting.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.expires_at
    }
    /// The id of the holder's attestation the grant rests on.
    pub fn attestation_id(&self) -> &str {
        &self.attestation_id
    }
    /// Unattended accesses per UTC day the subject agreed to (0: none).
    pub fn unattended_daily_limit(&self) -> u32 {
        self.unattended_daily_limit
    }

    /// The subject's pseudonym and `account`'s, as kept with the grant; `None` when the grant
    /// keeps none, or none for `account` (not granted), or they do not match the grant's
    /// accounts: then they are made from the subject's key.
    pub(crate) fn kept_pseudonyms(
        &self,
        account: Option<&AccountId>,
    ) -> Option<(Pseudonym, Option<Pseudonym>)> {
        let kept = self.pseudonyms.as_ref()?;
        if kept.accounts.len() != self.accounts.len() {
            return None;
        }
        let account = match account {
            Some(account) => {
                let at = self.accounts.as_slice().binary_search(account).ok()?;
                Some(kept.accounts.get(at)?.text())
            }
            None => None,
        };
        Some((kept.subject.text(), account))
    }
}

/// Who revoked a consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revoker {
    /// The person whose data it is.
    Subject,
    /// The bank.
    Holder,
    /// The data recipient.
    Platform,
}

/// Why a consent was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// The subject withdrew their consent.
    SubjectWithdrew,
    /// The account or relationship ended.
    AccountClosed,
    /// The holder suspects misuse or fraud.
    SuspectedMisuse,
    /// The platform no longer needs the data.
    NoLongerNeeded,
    /// The subject asked to be erased: every consent of theirs ends with their data.
    Erasure,
}

/// Where a consent stands, as stored (expiry is derived, see [`Consent::status`]).
///
/// Matchable from anywhere; the variants that hold a [`Grant`] cannot be built outside the crate,
/// because a grant cannot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConsentState {
    /// Waiting for the subject's approval.
    Requested,
    /// Approved, with the holder's attestation.
    Authorised {
        /// What was approved.
        grant: Grant,
    },
    /// The subject (or holder) declined.
    Rejected {
        /// When.
        #[serde(with = "time::serde::timestamp")]
        at: OffsetDateTime,
    },
    /// Withdrawn; final.
    Revoked {
        /// What had been approved.
        grant: Grant,
        /// Who revoked it.
        by: Revoker,
        /// Why.
        reason: RevocationReason,
        /// When.
        #[serde(with = "time::serde::timestamp")]
        at: OffsetDateTime,
    },
}

#[derive(Deserialize)]
#[serde(remote = "ConsentState", tag = "state", rename_all = "snake_case")]
enum StoredState {
    Requested,
    Authorised {
        #[serde(with = "StoredGrant")]
        grant: Grant,
    },
    Rejected {
        #[serde(with = "time::serde::timestamp")]
        at: OffsetDateTime,
    },
    Revoked {
        #[serde(with = "StoredGrant")]
        grant: Grant,
        by: Revoker,
        reason: RevocationReason,
        #[serde(with = "time::serde::timestamp")]
        at: OffsetDateTime,
    },
}

/// The lifecycle status of a consent at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ConsentStatus {
    /// Waiting for approval, within the approval window.
    Requested,
    /// Live: approved and not yet expired.
    Authorised,
    /// Declined.
    Rejected,
    /// Withdrawn.
    Revoked {
        /// Who revoked it.
        by: Revoker,
        /// Why.
        reason: RevocationReason,
    },
    /// Time ran out: a grant past its expiry, or a request past its approval window.
    Expired,
}

/// A consent: the request and where it stands. Stores keep it; transitions return a new one.
///
/// Read-only outside the crate: no public fields, no public constructor but
/// [`Consent::from_stored`], which only turns back into a consent what a store was given to keep.
/// The only way into `Authorised` is the broker's approval, which consumes an [`Approval`]; an
/// embedder cannot hand-build an authorised consent:
///
/// ```compile_fail,E0451
/// use consent_broker::{Consent, ConsentRequest, ConsentState, Grant};
/// // Every field named, and still refused: the fields are private.
/// fn forge(request: ConsentRequest, grant: Grant) -> Consent {
///     Consent { request, state: ConsentState::Authorised { grant }, version: 1 }
/// }
/// ```
///
/// (The same literal compiles inside the crate: see this module's unit tests.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Consent {
    pub(crate) request: ConsentRequest,
    pub(crate) state: ConsentState,
    pub(crate) version: u64,
}

#[derive(Deserialize)]
#[serde(remote = "Consent")]
struct StoredConsent {
    #[serde(with = "StoredRequest")]
    request: ConsentRequest,
    #[serde(with = "StoredState")]
    state: ConsentState,
    version: u64,
}

/// A transition that is not allowed from where the consent stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ConsentError {
    /// Approval or rejection of a request that was already decided.
    #[error("consent {consent} was already decided (status: {status:?})")]
    AlreadyDecided {
        /// The consent.
        consent: ConsentId,
        /// Its status now.
        status: ConsentStatus,
    },
    /// The approval window closed before the approval arrived.
    #[error(
        "consent request {consent} can no longer be approved: its approval window closed at {deadline}"
    )]
    ApprovalWindowClosed {
        /// The consent.
        consent: ConsentId,
        /// When the window closed.
        #[serde(with = "time::serde::timestamp")]
        deadline: OffsetDateTime,
    },
    /// Revocation or re-authorisation of a consent that is not live.
    #[error("consent {consent} is not live (status: {status:?})")]
    NotLive {
        /// The consent.
        consent: ConsentId,
        /// Its status now.
        status: ConsentStatus,
    },
    /// A re-authorisation whose expiry does not move the grant's expiry forward.
    #[error("re-authorisation of {consent} must extend it beyond {current_expiry}")]
    DoesNotExtend {
        /// The consent.
        consent: ConsentId,
        /// The grant's current expiry.
        #[serde(with = "time::serde::timestamp")]
        current_expiry: OffsetDateTime,
    },
}

/// A verified approval: what the holder attested that the subject approved.
///
/// Only the broker's verification of a holder attestation, against the keys registered for that
/// holder, makes one, and only an `Approval` moves a consent to `Authorised`. It cannot be made
/// outside the crate, by hand or by calling the verification with keys of one's own choosing:
///
/// ```compile_fail,E0451
/// use consent_broker::{AccountSet, Approval, PurposeSet, ScopeSet};
/// let minted = Approval {
///     scopes: ScopeSet::new(),
///     purposes: PurposeSet::new(),
///     accounts: AccountSet::new(),
///     expires_at: time::OffsetDateTime::UNIX_EPOCH,
///     unattended_daily_limit: 0,
///     attestation_id: String::new(),
///     attestation: String::new(),
/// };
/// ```
///
/// (The same literal compiles inside the crate: see this module's unit tests.)
#[derive(Debug, PartialEq, Eq)]
pub struct Approval {
    pub(crate) scopes: ScopeSet,
    pub(crate) purposes: PurposeSet,
    pub(crate) accounts: AccountSet,
    pub(crate) expires_at: OffsetDateTime,
    pub(crate) unattended_daily_limit: u32,
    pub(crate) attestation_id: String,
    pub(crate) attestation: String,
}

impl Approval {
    /// The attestation's unique id (`jti`), recorded to refuse replays.
    pub fn attestation_id(&self) -> &str {
        &self.attestation_id
    }

    /// The attestation itself (compact JWS): the evidence the broker records in the audit log.
    pub fn attestation(&self) -> &str {
        &self.attestation
    }

    /// Approved scopes.
    pub fn scopes(&self) -> ScopeSet {
        self.scopes
    }

    /// Approved purposes.
    pub fn purposes(&self) -> PurposeSet {
        self.purposes
    }

    /// Approved accounts.
    pub fn accounts(&self) -> &AccountSet {
        &self.accounts
    }

    /// When the approved consent expires.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.expires_at
    }

    /// Unattended accesses per UTC day the subject agreed to (0: none).
    pub fn unattended_daily_limit(&self) -> u32 {
        self.unattended_daily_limit
    }

    fn into_grant(self, now: OffsetDateTime) -> Grant {
        Grant {
            scopes: self.scopes,
            purposes: self.purposes,
            accounts: self.accounts,
            authorised_at: now,
            expires_at: self.expires_at,
            attestation_id: self.attestation_id.into_boxed_str(),
            unattended_daily_limit: self.unattended_daily_limit,
            pseudonyms: None,
        }
    }
}

impl Consent {
    /// A new consent in the `Requested` state.
    pub(crate) fn requested(request: ConsentRequest) -> Self {
        Self {
            request,
            state: ConsentState::Requested,
            version: 1,
        }
    }

    /// Turns back into a consent the JSON a store was given to keep (the bytes of a
    /// [`Consent`] serialized with `serde_json`, as [`Change`](crate::Change) hands it over).
    ///
    /// For [`Store`](crate::Store) implementations only. A consent read this way has exactly the
    /// authority of the bytes it came from: whoever can write the store can write them, which is
    /// why the bank decides from its own records and not from the platform's store.
    ///
    /// # Errors
    /// The JSON error, when the bytes are not a stored consent.
    pub fn from_stored(json: &[u8]) -> Result<Self, serde_json::Error> {
        StoredConsent::deserialize(&mut serde_json::Deserializer::from_slice(json))
    }

    /// The consent's id.
    pub fn id(&self) -> &ConsentId {
        &self.request.id
    }

    /// The request that started it.
    pub fn request(&self) -> &ConsentRequest {
        &self.request
    }

    /// Where it stands, as stored.
    pub fn state(&self) -> &ConsentState {
        &self.state
    }

    /// Incremented by every transition; stores use it to refuse lost updates.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the consent stops being live or pending: the approval deadline of a request, the
    /// expiry of a grant, the time of a rejection or revocation. Retention counts from here.
    pub fn ends_at(&self) -> OffsetDateTime {
        match &self.state {
            ConsentState::Requested => self.request.approval_deadline(),
            ConsentState::Authorised { grant } => grant.expires_at,
            ConsentState::Rejected { at } | ConsentState::Revoked { at, .. } => *at,
        }
    }

    /// The grant, if the consent was ever authorised (also for revoked consents).
    pub fn grant(&self) -> Option<&Grant> {
        match &self.state {
            ConsentState::Authorised { grant } | ConsentState::Revoked { grant, .. } => Some(grant),
            ConsentState::Requested | ConsentState::Rejected { .. } => None,
        }
    }

    /// The status at `now`. Expiry is derived here and nowhere else.
    pub fn status(&self, now: OffsetDateTime) -> ConsentStatus {
        match &self.state {
            ConsentState::Requested if now >= self.request.approval_deadline => {
                ConsentStatus::Expired
            }
            ConsentState::Requested => ConsentStatus::Requested,
            ConsentState::Authorised { grant } if now >= grant.expires_at => ConsentStatus::Expired,
            ConsentState::Authorised { .. } => ConsentStatus::Authorised,
            ConsentState::Rejected { .. } => ConsentStatus::Rejected,
            ConsentState::Revoked { by, reason, .. } => ConsentStatus::Revoked {
                by: *by,
                reason: *reason,
            },
        }
    }

    fn next(&self, state: ConsentState) -> Self {
        Self {
            request: self.request.clone(),
            state,
            // Saturating: a hand-made record at u64::MAX then fails the stores' version check
            // (fail closed) instead of overflowing.
            version: self.version.saturating_add(1),
        }
    }

    /// Checks that the consent can still be approved or rejected at `now`: strictly before the
    /// request's [approval deadline](ConsentRequest::approval_deadline).
    ///
    /// # Errors
    /// [`ConsentError::ApprovalWindowClosed`] or [`ConsentError::AlreadyDecided`].
    pub fn ensure_awaiting_decision(&self, now: OffsetDateTime) -> Result<(), ConsentError> {
        match self.status(now) {
            ConsentStatus::Requested => Ok(()),
            ConsentStatus::Expired if matches!(self.state, ConsentState::Requested) => {
                Err(ConsentError::ApprovalWindowClosed {
                    consent: self.id().clone(),
                    deadline: self.request.approval_deadline,
                })
            }
            status => Err(ConsentError::AlreadyDecided {
                consent: self.id().clone(),
                status,
            }),
        }
    }

    /// The grant, if the consent is live (authorised and unexpired) at `now`.
    ///
    /// # Errors
    /// [`ConsentError::NotLive`].
    pub fn ensure_live(&self, now: OffsetDateTime) -> Result<&Grant, ConsentError> {
        match (&self.state, self.status(now)) {
            (ConsentState::Authorised { grant }, ConsentStatus::Authorised) => Ok(grant),
            (_, status) => Err(ConsentError::NotLive {
                consent: self.id().clone(),
                status,
            }),
        }
    }

    /// `Requested` → `Authorised`, with a verified approval.
    pub(crate) fn approve(
        &self,
        approval: Approval,
        now: OffsetDateTime,
    ) -> Result<Self, ConsentError> {
        self.ensure_awaiting_decision(now)?;
        Ok(self.next(ConsentState::Authorised {
            grant: approval.into_grant(now),
        }))
    }

    /// `Requested` → `Rejected`.
    pub(crate) fn reject(&self, now: OffsetDateTime) -> Result<Self, ConsentError> {
        self.ensure_awaiting_decision(now)?;
        Ok(self.next(ConsentState::Rejected { at: now }))
    }

    /// `Authorised` → `Revoked`: immediate and final.
    pub(crate) fn revoke(
        &self,
        by: Revoker,
        reason: RevocationReason,
        now: OffsetDateTime,
    ) -> Result<Self, ConsentError> {
        let grant = self.ensure_live(now)?.clone();
        Ok(self.next(ConsentState::Revoked {
            grant,
            by,
            reason,
            at: now,
        }))
    }

    /// The consent with its grant's pseudonyms made under `key`, the subject's key (which the
    /// commit storing the consent must guard): a decision on the grant then reads them rather
    /// than making them. A consent without a grant is returned as it is.
    pub(crate) fn with_pseudonyms(mut self, key: &SubjectKey) -> Self {
        let subject = &self.request.subject;
        if let ConsentState::Authorised { grant } | ConsentState::Revoked { grant, .. } =
            &mut self.state
        {
            grant.pseudonyms = Some(key.grant_pseudonyms(subject, &grant.accounts));
        }
        self
    }

    /// A new approval for a live grant, moving its expiry forward.
    pub(crate) fn reauthorise(
        &self,
        approval: Approval,
        now: OffsetDateTime,
    ) -> Result<Self, ConsentError> {
        let current = self.ensure_live(now)?;
        if approval.expires_at <= current.expires_at {
            return Err(ConsentError::DoesNotExtend {
                consent: self.id().clone(),
                current_expiry: current.expires_at,
            });
        }
        Ok(self.next(ConsentState::Authorised {
            grant: approval.into_grant(now),
        }))
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::macros::datetime;

    use super::*;
    use crate::consent::AccountSelection;

    fn request() -> ConsentRequest {
        let now = datetime!(2026-11-21 09:00 UTC);
        ConsentRequest {
            id: "cns_1".parse().unwrap(),
            subject: "alice".parse().unwrap(),
            platform: "chat".parse().unwrap(),
            holder: "bank".parse().unwrap(),
            scopes: ScopeSet::from([crate::Scope::Balance]),
            purposes: PurposeSet::from([crate::Purpose::CustomerService]),
            accounts: AccountSelection::SubjectChooses,
            duration: Duration::days(30),
            requested_at: now,
            approval_deadline: now + Duration::minutes(10),
        }
    }

    fn grant() -> Grant {
        Grant {
            scopes: ScopeSet::from([crate::Scope::Balance]),
            purposes: PurposeSet::from([crate::Purpose::CustomerService]),
            accounts: AccountSet::from(["acc-1".parse().unwrap()]),
            authorised_at: datetime!(2026-11-21 09:01 UTC),
            expires_at: datetime!(2031-11-21 09:01 UTC),
            attestation_id: "att-1".into(),
            unattended_daily_limit: 4,
            pseudonyms: None,
        }
    }

    /// The `compile_fail` example on [`Consent`] is this literal: it compiles here, where the fields
    /// are visible, so outside it fails only because they are private.
    #[test]
    fn the_forged_authorised_consent_is_otherwise_well_formed() {
        fn forge(request: ConsentRequest, grant: Grant) -> Consent {
            Consent {
                request,
                state: ConsentState::Authorised { grant },
                version: 1,
            }
        }
        let forged = forge(request(), grant());
        assert_eq!(
            forged.status(datetime!(2027-01-01 00:00 UTC)),
            ConsentStatus::Authorised
        );
    }

    /// The `compile_fail` example on [`Approval`] is this literal.
    #[test]
    fn the_minted_approval_is_otherwise_well_formed() {
        let minted = Approval {
            scopes: ScopeSet::new(),
            purposes: PurposeSet::new(),
            accounts: AccountSet::new(),
            expires_at: time::OffsetDateTime::UNIX_EPOCH,
            unattended_daily_limit: 0,
            attestation_id: String::new(),
            attestation: String::new(),
        };
        assert!(minted.scopes().is_empty());
    }

    #[test]
    fn stored_form_round_trips_every_state() {
        let requested = Consent::requested(request());
        let now = datetime!(2026-11-21 09:05 UTC);
        let states = [
            requested.clone(),
            requested.reject(now).unwrap(),
            Consent {
                state: ConsentState::Authorised { grant: grant() },
                ..requested.clone()
            },
            Consent {
                state: ConsentState::Authorised { grant: grant() },
                ..requested
            }
            .revoke(Revoker::Subject, RevocationReason::SubjectWithdrew, now)
            .unwrap(),
        ];
        for consent in states {
            let json = serde_json::to_vec(&consent).unwrap();
            assert_eq!(Consent::from_stored(&json).unwrap(), consent);
        }
        assert!(Consent::from_stored(b"{\"request\":1}").is_err());
    }

    #[test]
    fn the_approval_window_closes_at_its_deadline() {
        let consent = Consent::requested(request());
        let deadline = consent.request().approval_deadline();
        assert!(
            consent
                .ensure_awaiting_decision(deadline - Duration::SECOND)
                .is_ok()
        );
        assert!(matches!(
            consent.ensure_awaiting_decision(deadline),
            Err(ConsentError::ApprovalWindowClosed { .. })
        ));
        assert_eq!(consent.status(deadline), ConsentStatus::Expired);
    }
}

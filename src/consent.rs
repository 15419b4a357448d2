//! Consent requests, grants and their lifecycle.
//!
//! `Requested` → `Authorised` | `Rejected`; `Authorised` → `Revoked { by, reason }` | `Expired`.
//! Every transition here is a pure function from a [`Consent`] and the current time to a new
//! [`Consent`] or a [`ConsentError`]; nothing reads a clock or a store. Activation takes an
//! [`Approval`] that only [`crate::attestation::verify`] produces, so a grant cannot be
//! authorised without the holder's verified signature. Expiry is derived from `now`; no
//! background job ever has to run for an expired grant to stop permitting.

use crate::sets::{AccountSet, PurposeSet, ScopeSet};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::attestation::Approval;
use crate::ids::{AccountId, ConsentId, HolderId, PlatformId, SubjectId};
use crate::vocab::{ProhibitedUse, Purpose, RequestedPurpose, RequestedScope, Scope};

/// How long a request waits for the subject's approval by default.
pub const DEFAULT_APPROVAL_WINDOW: Duration = Duration::minutes(10);
/// Longest consent a holder allows unless its policy says otherwise.
pub const DEFAULT_MAX_CONSENT_DURATION: Duration = Duration::days(90);
/// Longest consent any configuration allows.
pub const ABSOLUTE_MAX_CONSENT_DURATION: Duration = Duration::days(365);

/// Which accounts a request covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountSelection {
    /// Exactly these accounts (the subject may approve a subset).
    Listed(AccountSet),
    /// The subject picks the accounts at the holder.
    SubjectChooses,
}

impl AccountSelection {
    /// Whether the selection allows the subject to approve `account`.
    pub fn allows(&self, account: &AccountId) -> bool {
        match self {
            Self::Listed(accounts) => accounts.contains(account),
            Self::SubjectChooses => true,
        }
    }
}

/// A consent request as the platform states it. It may name prohibited uses: those are refused
/// by [`ConsentRequest::from_draft`] with a precise [`RequestError`], never silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequestDraft {
    /// Whose data.
    pub subject: SubjectId,
    /// Who asks.
    pub platform: PlatformId,
    /// Who holds the data.
    pub holder: HolderId,
    /// What data.
    pub scopes: Vec<RequestedScope>,
    /// Why.
    pub purposes: Vec<RequestedPurpose>,
    /// Which accounts.
    pub accounts: AccountSelection,
    /// How long the consent should last once approved.
    #[serde(rename = "duration_seconds", with = "seconds")]
    pub duration: Duration,
}

impl ConsentRequestDraft {
    /// Refuses a draft that names a prohibited use (as a purpose first, then as a scope). This
    /// needs nothing but the draft, so the broker runs it before looking anything up.
    ///
    /// # Errors
    /// [`RequestError::ProhibitedPurpose`] or [`RequestError::ProhibitedScope`].
    pub fn check_prohibited(&self) -> Result<(), RequestError> {
        for purpose in &self.purposes {
            if let RequestedPurpose::Prohibited(used) = purpose {
                return Err(RequestError::ProhibitedPurpose(*used));
            }
        }
        for scope in &self.scopes {
            if let RequestedScope::Prohibited(used) = scope {
                return Err(RequestError::ProhibitedScope(*used));
            }
        }
        Ok(())
    }
}

/// A request that failed validation. Nothing is stored for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RequestError {
    /// A prohibited use was named as a purpose.
    #[error("purpose {0} is a prohibited use and can never be requested or granted")]
    ProhibitedPurpose(ProhibitedUse),
    /// A prohibited use was named as a scope.
    #[error("scope {0} is a prohibited use and can never be requested or granted")]
    ProhibitedScope(ProhibitedUse),
    /// No scope was requested.
    #[error("a consent request must name at least one scope")]
    NoScopes,
    /// No purpose was requested.
    #[error("a consent request must name at least one purpose")]
    NoPurposes,
    /// An empty account list was given (use `subject_chooses` to let the subject pick).
    #[error("a consent request must list at least one account or let the subject choose")]
    NoAccounts,
    /// The duration is zero or negative.
    #[error("the consent duration must be positive, got {seconds} s")]
    DurationNotPositive {
        /// The requested duration in seconds.
        seconds: i64,
    },
    /// The duration exceeds what the holder allows.
    #[error(
        "the consent duration {requested_seconds} s exceeds the holder's maximum of {max_seconds} s"
    )]
    DurationTooLong {
        /// The requested duration in seconds.
        requested_seconds: i64,
        /// The holder's maximum in seconds.
        max_seconds: i64,
    },
    /// The holder does not offer this scope.
    #[error("the holder does not offer scope {0}")]
    ScopeNotOffered(Scope),
    /// No holder with this id is registered.
    #[error("holder {0} is not registered with the broker")]
    UnknownHolder(HolderId),
    /// No platform with this id is registered.
    #[error("platform {0} is not registered with the broker")]
    UnknownPlatform(PlatformId),
    /// The platform is not registered for this purpose.
    #[error("the platform is not registered for purpose {0}")]
    PurposeNotRegistered(Purpose),
}

/// A validated consent request: only grantable scopes and purposes, a bounded duration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRequest {
    /// The consent this request starts.
    pub id: ConsentId,
    /// Whose data.
    pub subject: SubjectId,
    /// Who asks.
    pub platform: PlatformId,
    /// Who holds the data.
    pub holder: HolderId,
    /// What data (non-empty).
    pub scopes: ScopeSet,
    /// Why (non-empty).
    pub purposes: PurposeSet,
    /// Which accounts.
    pub accounts: AccountSelection,
    /// How long the consent lasts once approved.
    #[serde(rename = "duration_seconds", with = "seconds")]
    pub duration: Duration,
    /// When the request was made.
    #[serde(with = "time::serde::timestamp")]
    pub requested_at: OffsetDateTime,
    /// After this instant the request can no longer be approved.
    #[serde(with = "time::serde::timestamp")]
    pub approval_deadline: OffsetDateTime,
}

/// The limits a request is checked against: the holder's, at the time of the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits<'a> {
    /// Scopes the holder offers.
    pub offered_scopes: &'a ScopeSet,
    /// Longest consent the holder allows (already capped at [`ABSOLUTE_MAX_CONSENT_DURATION`]).
    pub max_duration: Duration,
    /// How long the subject has to approve.
    pub approval_window: Duration,
}

impl ConsentRequest {
    /// Validates a draft. Prohibited uses are reported before anything else.
    ///
    /// # Errors
    /// [`RequestError`] naming the first problem found.
    pub fn from_draft(
        draft: ConsentRequestDraft,
        id: ConsentId,
        limits: RequestLimits<'_>,
        now: OffsetDateTime,
    ) -> Result<Self, RequestError> {
        draft.check_prohibited()?;
        // After `check_prohibited`, every word is grantable.
        let purposes: PurposeSet = draft
            .purposes
            .iter()
            .filter_map(|p| match p {
                RequestedPurpose::Permitted(purpose) => Some(*purpose),
                RequestedPurpose::Prohibited(_) => None,
            })
            .collect();
        let scopes: ScopeSet = draft
            .scopes
            .iter()
            .filter_map(|s| match s {
                RequestedScope::Data(scope) => Some(*scope),
                RequestedScope::Prohibited(_) => None,
            })
            .collect();
        if scopes.is_empty() {
            return Err(RequestError::NoScopes);
        }
        if purposes.is_empty() {
            return Err(RequestError::NoPurposes);
        }
        if let Some(scope) = scopes.iter().find(|s| !limits.offered_scopes.contains(s)) {
            return Err(RequestError::ScopeNotOffered(scope));
        }
        if matches!(&draft.accounts, AccountSelection::Listed(accounts) if accounts.is_empty()) {
            return Err(RequestError::NoAccounts);
        }
        if !draft.duration.is_positive() {
            return Err(RequestError::DurationNotPositive {
                seconds: draft.duration.whole_seconds(),
            });
        }
        let max = limits.max_duration.min(ABSOLUTE_MAX_CONSENT_DURATION);
        if draft.duration > max {
            return Err(RequestError::DurationTooLong {
                requested_seconds: draft.duration.whole_seconds(),
                max_seconds: max.whole_seconds(),
            });
        }
        Ok(Self {
            id,
            subject: draft.subject,
            platform: draft.platform,
            holder: draft.holder,
            scopes,
            purposes,
            accounts: draft.accounts,
            duration: draft.duration,
            requested_at: now,
            approval_deadline: crate::clock::saturating_add(now, limits.approval_window),
        })
    }
}

/// What the subject approved, as attested by the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Approved scopes (a non-empty subset of the requested ones).
    pub scopes: ScopeSet,
    /// Approved purposes (a non-empty subset of the requested ones).
    pub purposes: PurposeSet,
    /// Approved accounts (non-empty).
    pub accounts: AccountSet,
    /// When the broker activated (or last re-authorised) the grant.
    #[serde(with = "time::serde::timestamp")]
    pub authorised_at: OffsetDateTime,
    /// When the grant stops permitting.
    #[serde(with = "time::serde::timestamp")]
    pub expires_at: OffsetDateTime,
    // The holder's attestation that activated the grant is evidence, not state: it is kept in the
    // audit entry of the approval (`AuditRecord::attestation`), where it is tamper-evident, and
    // not in every stored grant, where it would triple the memory a grant costs.
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
}

/// Where a consent stands, as stored (expiry is derived, see [`Consent::status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// The request that started it.
    pub request: ConsentRequest,
    /// Where it stands.
    pub state: ConsentState,
    /// Incremented by every transition; stores use it to refuse lost updates.
    pub version: u64,
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

impl Consent {
    /// A new consent in the `Requested` state.
    pub fn requested(request: ConsentRequest) -> Self {
        Self {
            request,
            state: ConsentState::Requested,
            version: 1,
        }
    }

    /// The consent's id.
    pub fn id(&self) -> &ConsentId {
        &self.request.id
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

    /// Checks that the consent can still be approved or rejected at `now`.
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
    ///
    /// # Errors
    /// [`ConsentError::ApprovalWindowClosed`] or [`ConsentError::AlreadyDecided`].
    pub fn approve(&self, approval: Approval, now: OffsetDateTime) -> Result<Self, ConsentError> {
        self.ensure_awaiting_decision(now)?;
        Ok(self.next(ConsentState::Authorised {
            grant: approval.into_grant(now),
        }))
    }

    /// `Requested` → `Rejected`.
    ///
    /// # Errors
    /// [`ConsentError::ApprovalWindowClosed`] or [`ConsentError::AlreadyDecided`].
    pub fn reject(&self, now: OffsetDateTime) -> Result<Self, ConsentError> {
        self.ensure_awaiting_decision(now)?;
        Ok(self.next(ConsentState::Rejected { at: now }))
    }

    /// `Authorised` → `Revoked`: immediate and final.
    ///
    /// # Errors
    /// [`ConsentError::NotLive`] when the consent is not authorised and unexpired.
    pub fn revoke(
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

    /// A new approval for a live grant, moving its expiry forward.
    ///
    /// # Errors
    /// [`ConsentError::NotLive`], or [`ConsentError::DoesNotExtend`] when the new expiry is not
    /// later than the current one.
    pub fn reauthorise(
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

/// `time::Duration` as whole seconds on the wire.
pub(crate) mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(d.whole_seconds())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::seconds(i64::deserialize(d)?))
    }
}

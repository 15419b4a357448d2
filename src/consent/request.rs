//! Consent requests: what a platform asks for, and the checks a request passes before it is
//! stored. Pure: nothing here reads a clock or a store.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::seconds;
use crate::ids::{AccountId, ConsentId, HolderId, PlatformId, SubjectId};
use crate::sets::{AccountSet, PurposeSet, ScopeSet};
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
///
/// Read-only outside this crate: the broker makes one from a [`ConsentRequestDraft`] with
/// [`ConsentRequest::from_draft`], and stores keep it inside a [`Consent`](super::Consent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentRequest {
    pub(crate) id: ConsentId,
    pub(crate) subject: SubjectId,
    pub(crate) platform: PlatformId,
    pub(crate) holder: HolderId,
    pub(crate) scopes: ScopeSet,
    pub(crate) purposes: PurposeSet,
    pub(crate) accounts: AccountSelection,
    #[serde(rename = "duration_seconds", with = "seconds")]
    pub(crate) duration: Duration,
    #[serde(with = "time::serde::timestamp")]
    pub(crate) requested_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp")]
    pub(crate) approval_deadline: OffsetDateTime,
}

/// How a stored request is read back (see [`Consent::from_stored`](super::Consent::from_stored)):
/// a deserializer of the same shape as the `Serialize` derive above, that is not a public
/// `Deserialize` impl.
#[derive(Deserialize)]
#[serde(remote = "ConsentRequest")]
pub(super) struct StoredRequest {
    id: ConsentId,
    subject: SubjectId,
    platform: PlatformId,
    holder: HolderId,
    scopes: ScopeSet,
    purposes: PurposeSet,
    accounts: AccountSelection,
    #[serde(rename = "duration_seconds", with = "seconds")]
    duration: Duration,
    #[serde(with = "time::serde::timestamp")]
    requested_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp")]
    approval_deadline: OffsetDateTime,
}

impl ConsentRequest {
    /// The consent this request starts.
    pub fn id(&self) -> &ConsentId {
        &self.id
    }
    /// Whose data.
    pub fn subject(&self) -> &SubjectId {
        &self.subject
    }
    /// Who asks.
    pub fn platform(&self) -> &PlatformId {
        &self.platform
    }
    /// Who holds the data.
    pub fn holder(&self) -> &HolderId {
        &self.holder
    }
    /// What data (non-empty).
    pub fn scopes(&self) -> ScopeSet {
        self.scopes
    }
    /// Why (non-empty).
    pub fn purposes(&self) -> PurposeSet {
        self.purposes
    }
    /// Which accounts.
    pub fn accounts(&self) -> &AccountSelection {
        &self.accounts
    }
    /// How long the consent lasts once approved.
    pub fn duration(&self) -> Duration {
        self.duration
    }
    /// When the request was made.
    pub fn requested_at(&self) -> OffsetDateTime {
        self.requested_at
    }
    /// The end of the approval window. The window is half-open: an approval is accepted strictly
    /// before this instant; from this instant on (the deadline itself included) the request can
    /// no longer be approved or rejected, and its status is
    /// [`Expired`](super::ConsentStatus::Expired).
    pub fn approval_deadline(&self) -> OffsetDateTime {
        self.approval_deadline
    }
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

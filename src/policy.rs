//! The checked policy call: [`evaluate`] and what it decides over.
//!
//! `evaluate` is a pure function of the access request, the consent (if one was found), the
//! holder's policy, the platform's profile, today's usage and the time. It reads no clock, does
//! no I/O and draws no randomness, so the same inputs always give the same [`Decision`]. A denial
//! lists every rule that failed, each as a typed [`DenyReason`]. A prohibited purpose or scope is
//! refused before anything about a grant is considered, and no setting of any input lets it
//! through.

use crate::sets::{PlaintextUses, PurposeSet, ScopeSet};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::consent::{
    ABSOLUTE_MAX_CONSENT_DURATION, Consent, ConsentState, DEFAULT_MAX_CONSENT_DURATION, Revoker,
};
use crate::ids::{AccountId, ConsentId, PlatformId};
use crate::vocab::{ProhibitedUse, Purpose, RequestedPurpose, RequestedScope, Scope};

/// Unattended accesses allowed per grant per day unless the holder says otherwise (as in Berlin
/// Group NextGenPSD2).
pub const DEFAULT_UNATTENDED_DAILY_LIMIT: u32 = 4;

/// The holder's (bank's) rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderPolicy {
    /// Scopes the holder shares. `transactions` is off unless listed here.
    pub enabled_scopes: ScopeSet,
    /// Longest consent the holder allows; values above 365 days are treated as 365 days.
    #[serde(
        rename = "max_consent_duration_seconds",
        with = "crate::consent::seconds"
    )]
    pub max_consent_duration: Duration,
    /// Unattended accesses allowed per grant per UTC day.
    pub unattended_daily_limit: u32,
    /// Uses (scope and purpose) for which the bank may serve data unsealed, where the subject
    /// agreed to the same use too; empty by default: every response is sealed to the subject's
    /// devices. The purpose is the platform's word, as presence is: allow a pair only where the
    /// data may be read by the platform whatever the purpose it claims.
    #[serde(default, alias = "plaintext_purposes")]
    pub plaintext: PlaintextUses,
}

impl Default for HolderPolicy {
    fn default() -> Self {
        Self {
            enabled_scopes: ScopeSet::from([Scope::Balance, Scope::Alerts]),
            max_consent_duration: DEFAULT_MAX_CONSENT_DURATION,
            unattended_daily_limit: DEFAULT_UNATTENDED_DAILY_LIMIT,
            plaintext: PlaintextUses::new(),
        }
    }
}

/// A holder policy that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The maximum consent duration is zero or negative, so no consent could ever be granted.
    #[error("the maximum consent duration must be positive, got {seconds} s")]
    MaxDurationNotPositive {
        /// The configured maximum, in seconds.
        seconds: i64,
    },
}

impl HolderPolicy {
    /// Checks that the policy can be applied.
    ///
    /// # Errors
    /// [`PolicyError::MaxDurationNotPositive`].
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !self.max_consent_duration.is_positive() {
            return Err(PolicyError::MaxDurationNotPositive {
                seconds: self.max_consent_duration.whole_seconds(),
            });
        }
        Ok(())
    }

    /// The holder's maximum consent duration, capped at 365 days.
    pub fn effective_max_duration(&self) -> Duration {
        self.max_consent_duration.min(ABSOLUTE_MAX_CONSENT_DURATION)
    }
}

/// What the broker knows of a platform (data recipient).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformProfile {
    /// The platform.
    pub id: PlatformId,
    /// Purposes the platform is registered to pursue. There is no way to register a prohibited
    /// use: the set's element type has no such value.
    pub registered_purposes: PurposeSet,
}

/// Whether the subject takes part in the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// The subject asked, in the conversation (not counted against the daily limit).
    SubjectPresent,
    /// Background access, for example a fraud-alert poll (limited per grant per day).
    Unattended,
}

/// A platform's request to reach data under a consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The consent relied on.
    pub consent: ConsentId,
    /// Who asks.
    pub platform: PlatformId,
    /// What data.
    pub scope: RequestedScope,
    /// Why.
    pub purpose: RequestedPurpose,
    /// Which account.
    pub account: AccountId,
    /// Whether the subject is present.
    pub presence: Presence,
}

/// Today's usage of a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Unattended accesses permitted so far on this UTC day.
    pub unattended_today: u32,
}

/// One rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DenyReason {
    /// The purpose is a prohibited use. Decided before any grant lookup; never overridable.
    ProhibitedPurpose {
        /// The prohibited use named.
        prohibited: ProhibitedUse,
    },
    /// A prohibited use was named as the scope. Decided before any grant lookup.
    ProhibitedScope {
        /// The prohibited use named.
        prohibited: ProhibitedUse,
    },
    /// No consent with this id exists.
    UnknownConsent,
    /// The consent was given to another platform.
    WrongPlatform,
    /// The platform is not registered for this purpose.
    PurposeNotRegistered {
        /// The purpose.
        purpose: Purpose,
    },
    /// The consent was requested but not (yet) approved.
    NotAuthorised,
    /// The subject or holder declined the consent.
    Rejected,
    /// The consent was revoked.
    Revoked {
        /// Who revoked it.
        by: Revoker,
    },
    /// The consent has expired.
    Expired {
        /// When it expired.
        #[serde(with = "time::serde::timestamp")]
        at: OffsetDateTime,
    },
    /// The scope is not in the grant.
    ScopeNotGranted {
        /// The scope.
        scope: Scope,
    },
    /// The purpose is not in the grant.
    PurposeNotGranted {
        /// The purpose.
        purpose: Purpose,
    },
    /// The account is not in the grant.
    AccountNotGranted {
        /// The account.
        account: AccountId,
    },
    /// The holder's policy does not (or no longer) share this scope.
    HolderForbidsScope {
        /// The scope.
        scope: Scope,
    },
    /// The grant's unattended accesses for today are used up.
    FrequencyExceeded {
        /// The daily limit.
        limit: u32,
    },
    /// The subject did not agree to unattended access under this grant (the attested daily
    /// limit is 0).
    UnattendedNotApproved,
}

impl std::fmt::Display for DenyReason {
    /// A sentence a person can read, naming no identifier but the account they asked about.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ProhibitedPurpose { prohibited } | Self::ProhibitedScope { prohibited } => {
                write!(f, "{} is never allowed", prohibited_use_words(*prohibited))
            }
            Self::UnknownConsent => f.write_str("there is no such consent"),
            Self::WrongPlatform => f.write_str("the consent was given to another service"),
            Self::PurposeNotRegistered { purpose } => write!(
                f,
                "this service is not registered for {}",
                purpose_words(*purpose)
            ),
            Self::NotAuthorised => f.write_str("the consent has not been approved"),
            Self::Rejected => f.write_str("the consent was declined"),
            Self::Revoked { by } => write!(
                f,
                "the consent was withdrawn by {}",
                match by {
                    Revoker::Subject => "the customer",
                    Revoker::Holder => "the bank",
                    Revoker::Platform => "the service",
                }
            ),
            Self::Expired { .. } => f.write_str("the consent has expired"),
            Self::ScopeNotGranted { scope } => {
                write!(f, "the consent does not cover {}", scope_words(*scope))
            }
            Self::PurposeNotGranted { purpose } => {
                write!(
                    f,
                    "the consent does not allow use for {}",
                    purpose_words(*purpose)
                )
            }
            // The account's id stays out of the message: it is shown to people and written to
            // logs, and the id is in the audit entry for whoever may read it.
            Self::AccountNotGranted { .. } => {
                f.write_str("the consent does not cover this account")
            }
            Self::HolderForbidsScope { scope } => {
                write!(f, "the bank does not share {}", scope_words(*scope))
            }
            Self::FrequencyExceeded { limit } => write!(
                f,
                "the {limit} background checks allowed today have been used"
            ),
            Self::UnattendedNotApproved => {
                f.write_str("the customer did not agree to checks while they are away")
            }
        }
    }
}

fn prohibited_use_words(used: ProhibitedUse) -> &'static str {
    match used {
        ProhibitedUse::Ads => "use for advertising",
        ProhibitedUse::CrossSelling => "use for selling other products",
        ProhibitedUse::DataSale => "selling the data",
    }
}

fn purpose_words(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::CustomerService => "answering the customer's questions",
        Purpose::FraudProtection => "fraud protection",
    }
}

fn scope_words(scope: Scope) -> &'static str {
    match scope {
        Scope::Balance => "account balances",
        Scope::Alerts => "fraud alerts",
        Scope::Transactions => "transaction history",
    }
}

/// The answer of the checked policy call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", try_from = "DecisionWire")]
pub enum Decision {
    /// Access is allowed.
    Permit,
    /// Access is refused, for every listed reason (never empty).
    Deny {
        /// Every rule that failed, in the order the rules are checked.
        reasons: Vec<DenyReason>,
    },
}

/// `Decision` as parsed, before the rule that a denial has at least one reason is checked.
#[derive(Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
enum DecisionWire {
    Permit,
    Deny { reasons: Vec<DenyReason> },
}

impl TryFrom<DecisionWire> for Decision {
    type Error = &'static str;
    fn try_from(wire: DecisionWire) -> Result<Self, Self::Error> {
        match wire {
            DecisionWire::Permit => Ok(Self::Permit),
            DecisionWire::Deny { reasons } if reasons.is_empty() => {
                Err("a denial must carry at least one reason")
            }
            DecisionWire::Deny { reasons } => Ok(Self::Deny { reasons }),
        }
    }
}

impl Decision {
    /// Whether the decision permits.
    pub fn is_permit(&self) -> bool {
        matches!(self, Self::Permit)
    }

    /// The reasons for a denial (empty for a permit).
    pub fn reasons(&self) -> &[DenyReason] {
        match self {
            Self::Permit => &[],
            Self::Deny { reasons } => reasons,
        }
    }

    fn from_reasons(reasons: Vec<DenyReason>) -> Self {
        if reasons.is_empty() {
            Self::Permit
        } else {
            Self::Deny { reasons }
        }
    }
}

/// Refusals that need no grant: a prohibited purpose or scope. The broker calls this before it
/// looks anything up, so a prohibited request never touches a grant.
pub fn prohibited_reasons(request: &AccessRequest) -> Vec<DenyReason> {
    let mut reasons = Vec::new();
    if let RequestedPurpose::Prohibited(prohibited) = request.purpose {
        reasons.push(DenyReason::ProhibitedPurpose { prohibited });
    }
    if let RequestedScope::Prohibited(prohibited) = request.scope {
        reasons.push(DenyReason::ProhibitedScope { prohibited });
    }
    reasons
}

/// The checked policy call.
///
/// `consent` is `None` when no consent with the requested id exists. A prohibited purpose or
/// scope yields only the prohibited reasons, and a consent given to another platform only
/// [`DenyReason::WrongPlatform`]: nothing about the grant is examined.
pub fn evaluate(
    request: &AccessRequest,
    consent: Option<&Consent>,
    holder_policy: &HolderPolicy,
    platform: &PlatformProfile,
    usage: Usage,
    now: OffsetDateTime,
) -> Decision {
    let (scope, purpose) = match (request.scope, request.purpose) {
        (RequestedScope::Data(scope), RequestedPurpose::Permitted(purpose)) => (scope, purpose),
        _ => {
            return Decision::Deny {
                reasons: prohibited_reasons(request),
            };
        }
    };
    let Some(consent) = consent else {
        return Decision::Deny {
            reasons: vec![DenyReason::UnknownConsent],
        };
    };

    // Another platform's consent: refused for that alone. Nothing else about the grant is
    // examined, so the answer tells the asking platform nothing of it (its status, its scopes,
    // whether an account it guesses is the subject's).
    if consent.request.platform != request.platform {
        return Decision::Deny {
            reasons: vec![DenyReason::WrongPlatform],
        };
    }
    let mut reasons = Vec::new();
    if platform.id != request.platform {
        reasons.push(DenyReason::WrongPlatform);
    }
    if !platform.registered_purposes.contains(purpose) {
        reasons.push(DenyReason::PurposeNotRegistered { purpose });
    }
    let grant = match &consent.state {
        ConsentState::Requested => {
            reasons.push(DenyReason::NotAuthorised);
            None
        }
        ConsentState::Rejected { .. } => {
            reasons.push(DenyReason::Rejected);
            None
        }
        ConsentState::Revoked { grant, by, .. } => {
            reasons.push(DenyReason::Revoked { by: *by });
            Some(grant)
        }
        ConsentState::Authorised { grant } => {
            if now >= grant.expires_at {
                reasons.push(DenyReason::Expired {
                    at: grant.expires_at,
                });
            }
            Some(grant)
        }
    };
    // Without a grant, compare against what was requested: a denial still says whether the
    // access could ever have been covered.
    let (scopes, purposes, account_covered) = match grant {
        Some(grant) => (
            &grant.scopes,
            &grant.purposes,
            grant.accounts.contains(&request.account),
        ),
        None => {
            let asked = &consent.request;
            (
                &asked.scopes,
                &asked.purposes,
                asked.accounts.allows(&request.account),
            )
        }
    };
    if !scopes.contains(scope) {
        reasons.push(DenyReason::ScopeNotGranted { scope });
    }
    if !purposes.contains(purpose) {
        reasons.push(DenyReason::PurposeNotGranted { purpose });
    }
    if !account_covered {
        reasons.push(DenyReason::AccountNotGranted {
            account: request.account.clone(),
        });
    }
    if !holder_policy.enabled_scopes.contains(scope) {
        reasons.push(DenyReason::HolderForbidsScope { scope });
    }
    if request.presence == Presence::Unattended {
        // The subject's attested limit, never more than the holder's policy allows.
        let attested = grant.map(|grant| grant.unattended_daily_limit);
        let limit = attested.map_or(holder_policy.unattended_daily_limit, |attested| {
            attested.min(holder_policy.unattended_daily_limit)
        });
        if attested == Some(0) {
            reasons.push(DenyReason::UnattendedNotApproved);
        } else if usage.unattended_today >= limit {
            reasons.push(DenyReason::FrequencyExceeded { limit });
        }
    }
    Decision::from_reasons(reasons)
}

//! The checked call's decision and what it writes, as a pure function of what was read.
//!
//! [`plan_access`] takes the access request, the records the broker read for it and the time,
//! and returns the decision, the audit record, the preconditions the decision relied on and the
//! state changes it makes: everything a commit needs, with no I/O, no clock and no randomness.
//! The broker reads first, plans, and commits the plan; a plan that meets changed state fails its
//! preconditions and is planned again from a fresh read.

use time::{Date, Duration, OffsetDateTime};

use super::access::Permit;
use super::privacy::redact_reasons;
use crate::audit::{Actor, AuditEvent, AuditRecord};
use crate::clock::saturating_add;
use crate::consent::Consent;
use crate::ids::{AccountId, Pseudonym};
use crate::policy::{
    self, AccessRequest, Decision, DenyReason, HolderPolicy, PlatformProfile, Presence, Usage,
};

use crate::privacy::{KeyGuard, Keyed, Pseudonyms};
use crate::store::{Change, Commit, HolderRecord, Precondition};
use crate::vocab::{RequestedPurpose, RequestedScope};

/// What the broker read for one access: nothing at all when the request names a prohibited use.
#[derive(Debug)]
pub(super) struct AccessInputs {
    /// The consent named, if it exists.
    pub consent: Option<Consent>,
    /// The platform asking, if registered.
    pub platform: Option<PlatformProfile>,
    /// The consent's holder, if the consent exists and its holder is registered.
    pub holder: Option<HolderRecord>,
    /// The consent's unattended usage on `day`.
    pub usage: Usage,
    /// The UTC day of the decision.
    pub day: Date,
    /// When the consent exists: the key of its subject (made now if it had none; not read when
    /// the grant keeps the pseudonyms the decision writes), with those pseudonyms.
    pub key: Option<(Option<Keyed>, Pseudonyms)>,
}

/// The decision with everything its commit writes.
#[derive(Debug)]
pub(super) struct AccessPlan {
    pub decision: Decision,
    pub record: AuditRecord,
    pub preconditions: Vec<Precondition>,
    pub changes: Vec<Change>,
    /// For a permit: the witness, to be handed out once the commit succeeded.
    pub permit: Option<Permit>,
}

impl AccessPlan {
    /// The commit that records the plan, and the permit it yields once committed.
    pub fn into_commit(self) -> (Commit, Decision, Option<Permit>) {
        let mut commit = Commit::new(self.record);
        for precondition in self.preconditions {
            commit = commit.precondition(precondition);
        }
        for change in self.changes {
            commit = commit.change(change);
        }
        (commit, self.decision, self.permit)
    }

    /// The day whose unattended count this plan's commit raises (a permit for an unattended
    /// access), if any.
    pub(super) fn counts_unattended(&self) -> Option<time::Date> {
        self.changes.iter().find_map(|change| match change {
            Change::CountUnattendedAccess { day, .. } => Some(*day),
            _ => None,
        })
    }
}

/// Plans one access decision. `inputs` is `None` when the request names a prohibited purpose or
/// scope: such a request is refused before anything is read.
pub(super) fn plan_access(
    request: &AccessRequest,
    inputs: Option<&AccessInputs>,
    now: OffsetDateTime,
    permit_lifetime: Duration,
    instance: u64,
) -> AccessPlan {
    // A denial names the subject and the account only by their pseudonyms, and only when the
    // consent (so the subject's key) is known and the platform asking is the consent's own.
    let denied = |decision: Decision,
                  keyed: Option<&(Option<Keyed>, Pseudonyms)>,
                  mut preconditions: Vec<Precondition>| {
        let consent = inputs.and_then(|i| i.consent.as_ref());
        let own = consent.is_some_and(|c| c.request.platform == request.platform);
        // Another platform's request about this consent names neither subject nor account (nor
        // an account in a reason): it could otherwise test guesses of the subject's accounts
        // against the log, and write into the subject's history at will.
        let keyed = keyed.filter(|_| own);
        let (subject, account, reasons, mut changes) = match keyed {
            Some((keyed, pseudonyms)) if consent.is_some() => (
                Some(pseudonyms.subject.clone()),
                account_pseudonym(keyed.as_ref(), pseudonyms, &request.account),
                match keyed {
                    Some(keyed) => redact_reasons(decision.reasons(), &keyed.key),
                    // Not read: the request's account is granted, so no reason names it.
                    None => redact_foreign(decision.reasons()),
                },
                Vec::new(),
            ),
            _ => (None, None, redact_foreign(decision.reasons()), Vec::new()),
        };
        if let Some((Some(keyed), _)) = keyed {
            match keyed.guard() {
                KeyGuard::Insert(change) => changes.push(*change),
                KeyGuard::Check(check) => preconditions.push(check),
            }
        }
        AccessPlan {
            record: AuditRecord::new(
                now,
                Actor::Platform(request.platform.clone()),
                AuditEvent::AccessDenied {
                    consent: request.consent.clone(),
                    subject,
                    scope: request.scope,
                    purpose: request.purpose,
                    account,
                    presence: request.presence,
                    reasons,
                },
            ),
            decision,
            preconditions,
            changes,
            permit: None,
        }
    };
    let (RequestedScope::Data(scope), RequestedPurpose::Permitted(purpose), Some(inputs)) =
        (request.scope, request.purpose, inputs)
    else {
        let reasons = policy::prohibited_reasons(request);
        return denied(Decision::Deny { reasons }, None, Vec::new());
    };
    let Some(consent) = &inputs.consent else {
        let decision = policy::evaluate(
            request,
            None,
            &HolderPolicy::default(),
            &unregistered(request),
            inputs.usage,
            now,
        );
        return denied(decision, None, Vec::new());
    };
    // A consent's holder is registered before the consent can exist; if it has gone missing, an
    // empty policy shares nothing.
    let shares_nothing = HolderPolicy {
        enabled_scopes: Default::default(),
        ..HolderPolicy::default()
    };
    let policy = inputs
        .holder
        .as_ref()
        .map_or(&shares_nothing, |h| &h.policy);
    let platform = inputs
        .platform
        .clone()
        .unwrap_or_else(|| unregistered(request));
    let decision = policy::evaluate(request, Some(consent), policy, &platform, inputs.usage, now);
    // Sized for a permit's (the consent's, the holder's and the key's versions, the day's
    // count): growing a vector reallocates, and `realloc` takes the allocator's arena lock.
    let mut preconditions = Vec::with_capacity(4);
    preconditions.push(Precondition::consent_version(consent.id(), consent.version));
    let subject = consent.request.subject.clone();
    let Some(keyed_and_pseudonyms) = inputs.key.as_ref() else {
        // The broker reads (or makes) the key of every consent it reads: without it, nothing
        // can be recorded without naming the subject, so nothing is permitted.
        let reasons = vec![DenyReason::UnknownConsent];
        return denied(Decision::Deny { reasons }, None, Vec::new());
    };
    if !decision.is_permit() {
        return denied(decision, Some(keyed_and_pseudonyms), preconditions);
    }
    let holder_version = inputs.holder.as_ref().map(|holder| {
        preconditions.push(Precondition::holder_version(&holder.id, holder.version));
        holder.version
    });
    let (keyed, pseudonyms) = keyed_and_pseudonyms;
    let Some(account_pseudonym) = account_pseudonym(keyed.as_ref(), pseudonyms, &request.account)
    else {
        // Unreachable: the key goes unread only when the grant keeps this account's pseudonym.
        let reasons = vec![DenyReason::UnknownConsent];
        return denied(Decision::Deny { reasons }, None, Vec::new());
    };
    let mut changes: Vec<Change> = Vec::with_capacity(2);
    // A key read is checked unchanged at the commit. One left unread needs no check: the
    // pseudonyms were made under the key the subject had when the grant was stored, and the
    // key goes only with the consent (an erasure deletes both in one commit), which the
    // consent's version precondition checks.
    if let Some(keyed) = keyed {
        match keyed.guard() {
            KeyGuard::Insert(change) => changes.push(*change),
            KeyGuard::Check(check) => preconditions.push(check),
        }
    }
    if request.presence == Presence::Unattended {
        preconditions.push(Precondition::usage_is(
            &request.consent,
            inputs.day,
            inputs.usage,
        ));
        changes.push(Change::CountUnattendedAccess {
            consent: request.consent.clone(),
            day: inputs.day,
        });
    }
    // A permit implies a live grant; its expiry caps a token's.
    let (grant_expires_at, attestation_id) =
        consent.grant().map_or((now, Box::default()), |grant| {
            (grant.expires_at, grant.attestation_id.clone())
        });
    let subject_pseudonym = pseudonyms.subject.clone();
    let record = AuditRecord::new(
        now,
        Actor::Platform(request.platform.clone()),
        AuditEvent::AccessPermitted {
            consent: request.consent.clone(),
            subject: subject_pseudonym.clone(),
            scope,
            purpose,
            account: account_pseudonym.clone(),
            presence: request.presence,
        },
    );
    let permit = Permit {
        consent: request.consent.clone(),
        subject,
        holder: consent.request.holder.clone(),
        platform: request.platform.clone(),
        scope,
        purpose,
        account: request.account.clone(),
        presence: request.presence,
        decided_at: now,
        lapses_at: saturating_add(now, permit_lifetime),
        audit_seq: 0,
        consent_version: consent.version,
        holder_version,
        grant_expires_at,
        attestation_id,
        issued_by: instance,
        pseudonyms: (subject_pseudonym, account_pseudonym),
    };
    AccessPlan {
        decision,
        record,
        preconditions,
        changes,
        permit: Some(permit),
    }
}

/// The account's pseudonym: the one looked up or kept for this account, or made now from the
/// key where none was; none without either.
fn account_pseudonym(
    keyed: Option<&Keyed>,
    pseudonyms: &Pseudonyms,
    account: &AccountId,
) -> Option<Pseudonym> {
    pseudonyms
        .account(account)
        .cloned()
        .or_else(|| keyed.map(|keyed| keyed.key.account(account)))
}

/// Reasons of a denial that names no subject: a reason naming an account is left out (there is
/// no key to make its pseudonym with, and the platform's word about it is not kept).
fn redact_foreign(reasons: &[DenyReason]) -> Vec<DenyReason> {
    reasons
        .iter()
        .filter(|reason| !matches!(reason, DenyReason::AccountNotGranted { .. }))
        .cloned()
        .collect()
}

/// The profile of a platform that is not registered: no purposes.
fn unregistered(request: &AccessRequest) -> PlatformProfile {
    PlatformProfile {
        id: request.platform.clone(),
        registered_purposes: Default::default(),
    }
}

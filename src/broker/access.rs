//! The checked call: read → plan → commit, and the [`Permit`] only it makes.

use time::OffsetDateTime;

use super::Broker;
use super::plan::{AccessInputs, AccessPlan, plan_access};
use crate::error::Error;
use crate::holder::VerifiedAccess;
use crate::ids::{AccountId, ConsentId, HolderId, PlatformId, Pseudonym, SubjectId};
use crate::policy::{AccessRequest, Decision, DenyReason, Presence};
use crate::store::{AccessView, Store, StoreError};
use crate::vocab::{Purpose, RequestedPurpose, RequestedScope, Scope};

/// Proof that the broker permitted one access and recorded it.
///
/// Only the broker's checked call constructs a `Permit`; it is not `Clone` (turning it into a
/// token consumes it: single use), it lapses a short time after its decision (60 seconds by
/// default), and its fields are private, so code that holds one has passed the policy check:
///
/// ```compile_fail,E0451
/// use consent_broker::{Permit, Presence, Purpose, Scope};
/// let forged = Permit {
///     consent: "cns_1".parse().unwrap(),
///     subject: "alice".parse().unwrap(),
///     holder: "bank".parse().unwrap(),
///     platform: "chat".parse().unwrap(),
///     scope: Scope::Balance,
///     purpose: Purpose::CustomerService,
///     account: "acc-1".parse().unwrap(),
///     presence: Presence::SubjectPresent,
///     decided_at: time::OffsetDateTime::UNIX_EPOCH,
///     lapses_at: time::OffsetDateTime::UNIX_EPOCH,
///     audit_seq: 0,
///     consent_version: 1,
///     holder_version: Some(1),
///     grant_expires_at: time::OffsetDateTime::UNIX_EPOCH,
///     attestation_id: "att-1".into(),
///     issued_by: 1,
///     pseudonyms: ("ps_1".parse().unwrap(), "ps_2".parse().unwrap()),
/// };
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    pub(super) consent: ConsentId,
    pub(super) subject: SubjectId,
    pub(super) holder: HolderId,
    pub(super) platform: PlatformId,
    pub(super) scope: Scope,
    pub(super) purpose: Purpose,
    pub(super) account: AccountId,
    pub(super) presence: Presence,
    pub(super) decided_at: OffsetDateTime,
    pub(super) lapses_at: OffsetDateTime,
    pub(super) audit_seq: u64,
    pub(super) consent_version: u64,
    pub(super) holder_version: Option<u64>,
    pub(super) grant_expires_at: OffsetDateTime,
    /// The attestation the grant rests on (a token names it).
    pub(super) attestation_id: Box<str>,
    /// The broker instance that decided it: only that broker turns it into a token or a
    /// verified access, so a permit a throwaway broker decided on its own store is worthless to
    /// the real one.
    pub(super) issued_by: u64,
    /// The subject's and the account's pseudonyms, for the token's audit entry.
    pub(super) pseudonyms: (Pseudonym, Pseudonym),
}

impl Permit {
    /// The consent relied on.
    pub fn consent(&self) -> &ConsentId {
        &self.consent
    }
    /// Whose data.
    pub fn subject(&self) -> &SubjectId {
        &self.subject
    }
    /// Who holds it.
    pub fn holder(&self) -> &HolderId {
        &self.holder
    }
    /// Who receives it.
    pub fn platform(&self) -> &PlatformId {
        &self.platform
    }
    /// The permitted scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// The permitted purpose.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }
    /// The permitted account.
    pub fn account(&self) -> &AccountId {
        &self.account
    }
    /// Whether the subject was present.
    pub fn presence(&self) -> Presence {
        self.presence
    }
    /// When the decision was taken.
    pub fn decided_at(&self) -> OffsetDateTime {
        self.decided_at
    }
    /// From this instant on the permit can no longer become a token.
    pub fn lapses_at(&self) -> OffsetDateTime {
        self.lapses_at
    }
    /// The audit entry that records the permit.
    pub fn audit_seq(&self) -> u64 {
        self.audit_seq
    }
}

/// A recorded denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Every rule that failed.
    pub reasons: Vec<DenyReason>,
    /// The audit entry that records the denial.
    pub audit_seq: u64,
}

/// The recorded answer of the checked call.
#[derive(Debug, PartialEq, Eq)]
pub enum AccessOutcome {
    /// Access allowed; the permit is the witness.
    Permitted(Permit),
    /// Access refused.
    Denied(Denial),
}

impl AccessOutcome {
    /// The decision, without the witness.
    pub fn decision(&self) -> Decision {
        match self {
            Self::Permitted(_) => Decision::Permit,
            Self::Denied(denial) => Decision::Deny {
                reasons: denial.reasons.clone(),
            },
        }
    }

    /// The audit entry that records the decision.
    pub fn audit_seq(&self) -> u64 {
        match self {
            Self::Permitted(permit) => permit.audit_seq,
            Self::Denied(denial) => denial.audit_seq,
        }
    }
}

impl<S: Store> Broker<S> {
    /// The checked call: decides an access, records the decision, and only then answers.
    ///
    /// A prohibited purpose or scope is refused before anything is read. A permit for an
    /// unattended access consumes one of the day's slots in the same commit.
    ///
    /// # Errors
    /// [`Error::Store`] when the decision could not be recorded (then nothing is permitted), or
    /// [`Error::Contention`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.authorise_access", level = "debug", skip_all)
    )]
    pub fn authorise_access(&self, request: &AccessRequest) -> Result<AccessOutcome, Error> {
        self.deciding(request, |plan| {
            let (commit, decision, permit) = plan.into_commit();
            let seq = self.commit(commit)?.audit_seqs.start;
            Ok(match (permit, decision) {
                (Some(mut permit), _) => {
                    permit.audit_seq = seq;
                    AccessOutcome::Permitted(permit)
                }
                (None, decision) => AccessOutcome::Denied(Denial {
                    reasons: decision.reasons().to_vec(),
                    audit_seq: seq,
                }),
            })
        })
    }

    /// Plans an access and records it with `record`, re-deciding while a concurrent writer
    /// invalidates what it read. A plan made from a kept view (see
    /// [`BrokerBuilder::access_view_cache`](crate::BrokerBuilder::access_view_cache)) whose
    /// commit is refused is made again at once from a fresh read, and the view is dropped.
    pub(super) fn deciding<T>(
        &self,
        request: &AccessRequest,
        mut record: impl FnMut(AccessPlan) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if !self.views.is_on() {
            return self.retrying(|| record(self.plan(request, false)?.0));
        }
        let mut kept_ok = true;
        self.retrying(|| {
            let (plan, kept) = self.plan(request, kept_ok)?;
            let subject = kept
                .then(|| plan.permit.as_ref().map(|permit| permit.subject.clone()))
                .flatten();
            let recorded = self.record_counted(request, plan, &mut record);
            if !(kept && matches!(recorded, Err(Error::Store(StoreError::Conflict)))) {
                return recorded;
            }
            // The view is stale (the subject's key among what may have changed: its pseudonyms
            // go too). Decide again at once from a fresh read, and from fresh reads from now on.
            self.views.forget(&request.consent);
            if let Some(subject) = &subject {
                self.pseudonyms.forget(subject);
            }
            kept_ok = false;
            let (plan, _) = self.plan(request, false)?;
            self.record_counted(request, plan, &mut record)
        })
    }

    /// Records `plan` with `record`; after a permit for an unattended access, the kept view's
    /// count follows.
    fn record_counted<T>(
        &self,
        request: &AccessRequest,
        plan: AccessPlan,
        record: &mut impl FnMut(AccessPlan) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let counts = plan.counts_unattended();
        let recorded = record(plan);
        if let (Some(day), Ok(_)) = (counts, &recorded) {
            self.views.counted(&request.consent, day);
        }
        recorded
    }

    /// The access a permit stands for, for a bank that runs in the same process as this broker
    /// and serves data without a token: the permit must be this broker's own (a permit another
    /// broker decided, on a store of its own, is refused), unlapsed, and its consent and its
    /// holder's policy unchanged since the decision. Consumes the permit; writes nothing (the
    /// decision's audit entry is the record of the access).
    ///
    /// There is no other way from a permit to a verified access:
    ///
    /// ```compile_fail,E0277
    /// fn bypass(permit: consent_broker::Permit) -> consent_broker::VerifiedAccess {
    ///     consent_broker::VerifiedAccess::from(permit)
    /// }
    /// ```
    ///
    /// # Errors
    /// [`Error::ForeignPermit`]; [`Error::PermitLapsed`]; [`Error::PermitStale`];
    /// [`Error::UnknownConsent`]; [`Error::Store`].
    pub fn verified_access(&self, permit: Permit) -> Result<VerifiedAccess, Error> {
        self.check_permit(&permit, self.now())?;
        Ok(VerifiedAccess::from_permit(permit))
    }

    /// Reads what the access needs and plans it (nothing is written); whether the plan was made
    /// from a kept view (only a permit is: a denial from a kept view is planned again from a
    /// fresh read). `kept_ok`: whether a kept view may be used.
    pub(super) fn plan(
        &self,
        request: &AccessRequest,
        kept_ok: bool,
    ) -> Result<(AccessPlan, bool), Error> {
        let now = self.now();
        // Before any subject's key is read (see `PseudonymCache::epoch`).
        let forgotten = self.pseudonyms.epoch();
        if kept_ok && let Some(view) = self.kept_view(request, now) {
            let inputs = self.inputs_from(request, view, now, forgotten)?;
            let plan = plan_access(
                request,
                Some(&inputs),
                now,
                self.settings.permit_lifetime,
                self.instance,
            );
            if plan.permit.is_some() {
                return Ok((plan, true));
            }
        }
        let inputs = self.read_for(request, now, forgotten)?;
        let plan = plan_access(
            request,
            inputs.as_ref(),
            now,
            self.settings.permit_lifetime,
            self.instance,
        );
        Ok((plan, false))
    }

    /// The view kept for this request, if any (never for a prohibited use: nothing is read).
    fn kept_view(&self, request: &AccessRequest, now: OffsetDateTime) -> Option<AccessView> {
        if !self.views.is_on()
            || matches!(request.scope, RequestedScope::Prohibited(_))
            || matches!(request.purpose, RequestedPurpose::Prohibited(_))
        {
            return None;
        }
        self.views
            .get(&request.consent, &request.platform, now.date(), now)
    }

    /// Everything an access decision reads, or nothing when it names a prohibited use.
    fn read_for(
        &self,
        request: &AccessRequest,
        now: OffsetDateTime,
        forgotten: u64,
    ) -> Result<Option<AccessInputs>, Error> {
        if matches!(request.scope, RequestedScope::Prohibited(_))
            || matches!(request.purpose, RequestedPurpose::Prohibited(_))
        {
            return Ok(None);
        }
        let day = now.date();
        let epoch = self.views.epoch();
        // One read of everything the decision needs (one transaction on SQLite).
        let view = self
            .store
            .access_view(&request.consent, &request.platform, day)?;
        self.views
            .keep(&request.consent, &request.platform, day, now, &view, epoch);
        self.inputs_from(request, view, now, forgotten).map(Some)
    }

    /// The inputs of a decision, from a view of the store read after the pseudonym cache's epoch
    /// was `forgotten`.
    #[inline]
    fn inputs_from(
        &self,
        request: &AccessRequest,
        view: AccessView,
        now: OffsetDateTime,
        forgotten: u64,
    ) -> Result<AccessInputs, Error> {
        let day = now.date();
        let (consent, platform) = (view.consent, view.platform);
        let (holder, usage, key) = match &consent {
            Some(consent) => (
                view.holder,
                view.usage,
                Some(self.subject_of(
                    request,
                    consent,
                    view.subject_key,
                    view.subject_key_unread,
                    now,
                    forgotten,
                )?),
            ),
            None => (None, Default::default(), None),
        };
        Ok(AccessInputs {
            consent,
            platform,
            holder,
            usage,
            day,
            key,
        })
    }
}

impl<S: Store> Broker<S> {
    /// The subject's key and pseudonyms for a decision on `consent`: the pseudonyms kept with
    /// its grant when they cover the request (then the key is not needed, and not read if the
    /// store left it unread), else made (or remembered) from the key, read now if the store
    /// left it unread, made if the subject has none.
    fn subject_of(
        &self,
        request: &AccessRequest,
        consent: &crate::consent::Consent,
        stored: Option<crate::privacy::SubjectKey>,
        unread: bool,
        now: OffsetDateTime,
        forgotten: u64,
    ) -> Result<(Option<crate::privacy::Keyed>, crate::privacy::Pseudonyms), Error> {
        let subject = &consent.request.subject;
        // The account's pseudonym only for the consent's own platform: no other platform's
        // request is ever written with it, nor may it fill the cache.
        let own = consent.request.platform == request.platform;
        let account = own.then_some(&request.account);
        // Not when the store was read and holds no key for the subject (its row deleted behind
        // the broker's back): the decision then makes one, and names what it makes.
        let kept = consent
            .grant()
            .and_then(|grant| grant.kept_pseudonyms(account))
            .filter(|_| unread || stored.is_some());
        if let Some((pseudonym, found)) = kept {
            let pseudonyms = crate::privacy::Pseudonyms {
                subject: pseudonym,
                account: account.cloned().zip(found),
            };
            // A key read is checked at the commit; one left unread is not needed.
            let keyed = stored.map(|key| crate::privacy::Keyed::stored(subject, key));
            return Ok((keyed, pseudonyms));
        }
        let stored = match unread {
            true => self.store.subject_key(subject)?,
            false => stored,
        };
        // At the decision's time: no second clock read on the checked call.
        let keyed = crate::privacy::Keyed::stored_or_made(
            subject,
            stored,
            self.settings.random.as_ref(),
            now,
        )?;
        let pseudonyms = self
            .pseudonyms
            .get(&keyed.subject, &keyed.key, account, now, forgotten);
        Ok((Some(keyed), pseudonyms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `compile_fail` example on [`Permit`] is this literal, which compiles where the fields
    /// are visible.
    #[test]
    fn the_forging_literal_is_otherwise_well_formed() {
        let made = Permit {
            consent: "cns_1".parse().unwrap(),
            subject: "alice".parse().unwrap(),
            holder: "bank".parse().unwrap(),
            platform: "chat".parse().unwrap(),
            scope: Scope::Balance,
            purpose: Purpose::CustomerService,
            account: "acc-1".parse().unwrap(),
            presence: Presence::SubjectPresent,
            decided_at: time::OffsetDateTime::UNIX_EPOCH,
            lapses_at: time::OffsetDateTime::UNIX_EPOCH,
            audit_seq: 0,
            consent_version: 1,
            holder_version: Some(1),
            grant_expires_at: time::OffsetDateTime::UNIX_EPOCH,
            attestation_id: "att-1".into(),
            issued_by: 1,
            pseudonyms: ("ps_1".parse().unwrap(), "ps_2".parse().unwrap()),
        };
        assert_eq!(made.scope(), Scope::Balance);
    }
}

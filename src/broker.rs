//! The broker: the facade that ties the pure core to a store, a clock and an id source.
//!
//! Every call reads what it needs from the [`Store`], decides with the pure core, and commits
//! the state change together with its audit records in one atomic [`Commit`]. Only after that
//! commit succeeds does the call return; if it fails, the call returns an [`Error`] and never a
//! [`Permit`]. Commits carry the versions they were decided on, so a decision taken on state that
//! changed meanwhile (a revocation, a policy change, another access using the last unattended
//! slot) is re-decided, never committed.

use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::attestation::{self, Approval, AttestationError, Expectations};
use crate::audit::{Actor, AuditEntry, AuditKind, AuditRecord, Refusal, Revocation};
use crate::clock::{Clock, SystemClock, saturating_add};
use crate::consent::{
    Consent, ConsentRequest, ConsentRequestDraft, ConsentStatus, DEFAULT_APPROVAL_WINDOW,
    RequestError, RequestLimits, RevocationReason, Revoker,
};
use crate::crypto;
use crate::error::Error;
use crate::ids::{
    AccountId, BrokerId, ConsentId, HolderId, IdGenerator, PlatformId, RandomIds, SubjectId,
};
use crate::keys::Ed25519PublicKey;
use crate::policy::{
    self, AccessRequest, Decision, DenyReason, HolderPolicy, PlatformProfile, Presence, Usage,
};
use crate::store::{Change, Commit, HolderRecord, Precondition, RecordKind, Store, StoreError};
use crate::vocab::{Purpose, RequestedPurpose, RequestedScope, Scope};

/// How many times a call re-reads and re-decides when a concurrent writer changed its inputs.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 16;

/// A holder's registration: its policy and the keys that sign its attestations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderRegistration {
    /// The holder.
    pub id: HolderId,
    /// Its policy.
    pub policy: HolderPolicy,
    /// Public keys of its attestation signers (at least one).
    pub attestation_keys: Vec<Ed25519PublicKey>,
}

/// Proof that the broker permitted one access and recorded it.
///
/// Only the broker's checked call constructs a `Permit`; it is not `Clone`, and its fields are
/// private, so code that holds one has passed the policy check.
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    consent: ConsentId,
    subject: SubjectId,
    holder: HolderId,
    platform: PlatformId,
    scope: Scope,
    purpose: Purpose,
    account: AccountId,
    presence: Presence,
    decided_at: OffsetDateTime,
    audit_seq: u64,
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

/// A consent with its status at the time of the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentView {
    /// The consent.
    pub consent: Consent,
    /// Its status when listed.
    pub status: ConsentStatus,
}

/// Builds a [`Broker`]; see [`Broker::builder`].
pub struct BrokerBuilder<S> {
    broker: Broker<S>,
}

impl<S: Store> BrokerBuilder<S> {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.broker.clock = clock;
        self
    }

    /// Uses `ids` instead of random consent ids.
    pub fn ids(mut self, ids: Arc<dyn IdGenerator>) -> Self {
        self.broker.ids = ids;
        self
    }

    /// How long a request stays open for approval (default 10 minutes). A window that is not
    /// positive closes every request at once.
    pub fn approval_window(mut self, window: Duration) -> Self {
        self.broker.approval_window = window;
        self
    }

    /// How many times a call re-decides under concurrent updates (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.broker.max_attempts = attempts.max(1);
        self
    }

    /// Installs the JWT crypto provider (if the host has not) and builds the broker.
    ///
    /// # Errors
    /// [`Error::Provider`] if the process-wide JWT crypto provider is unusable.
    pub fn build(self) -> Result<Broker<S>, Error> {
        crypto::install()?;
        Ok(self.broker)
    }
}

/// The consent broker.
pub struct Broker<S> {
    id: BrokerId,
    store: S,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    approval_window: Duration,
    max_attempts: u32,
}

impl<S> std::fmt::Debug for Broker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Broker<S> {
    /// Starts building a broker named `id` over `store`, with the system clock and random ids.
    pub fn builder(id: BrokerId, store: S) -> BrokerBuilder<S> {
        BrokerBuilder {
            broker: Broker {
                id,
                store,
                clock: Arc::new(SystemClock),
                ids: Arc::new(RandomIds::new()),
                approval_window: DEFAULT_APPROVAL_WINDOW,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
            },
        }
    }

    /// The broker's id (the `aud` of attestations).
    pub fn id(&self) -> &BrokerId {
        &self.id
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The current time, from the injected clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Re-runs `attempt` while a concurrent writer invalidates what it read.
    fn retrying<T>(&self, mut attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
        for _ in 0..self.max_attempts {
            match attempt() {
                Err(Error::Store(StoreError::Conflict)) => continue,
                other => return other,
            }
        }
        Err(Error::Contention {
            attempts: self.max_attempts,
        })
    }

    /// Records a refusal and returns `error`; if even the audit append fails, returns that.
    fn refuse(&self, record: AuditRecord, error: Error) -> Error {
        let commit = Commit {
            audit: vec![record],
            ..Commit::default()
        };
        match self.store.commit(commit) {
            Ok(_) => error,
            Err(store) => Error::Store(store),
        }
    }

    /// Registers a holder.
    ///
    /// # Errors
    /// [`Error::NoAttestationKeys`], [`Error::InvalidPolicy`], or [`Error::Store`] (a duplicate
    /// id included).
    pub fn register_holder(&self, registration: HolderRegistration) -> Result<(), Error> {
        if registration.attestation_keys.is_empty() {
            return Err(Error::NoAttestationKeys(registration.id));
        }
        registration.policy.validate()?;
        let record = AuditRecord::new(
            self.now(),
            AuditKind::HolderRegistered,
            Actor::Holder(registration.id.clone()),
        );
        let holder = HolderRecord {
            id: registration.id,
            policy: registration.policy,
            attestation_keys: registration.attestation_keys,
            version: 1,
        };
        let commit = Commit {
            changes: vec![Change::InsertHolder(holder)],
            audit: vec![record],
            ..Commit::default()
        };
        self.store.commit(commit)?;
        Ok(())
    }

    /// Replaces a holder's policy. Grants already given are then checked against the new policy.
    ///
    /// # Errors
    /// [`Error::InvalidPolicy`]; [`Error::Store`] (an unknown holder included, as
    /// [`StoreError::Missing`]).
    pub fn set_holder_policy(&self, holder: &HolderId, policy: HolderPolicy) -> Result<(), Error> {
        policy.validate()?;
        self.retrying(|| {
            let Some(mut record) = self.store.holder(holder)? else {
                return Err(StoreError::Missing {
                    kind: RecordKind::Holder,
                    id: holder.to_string(),
                }
                .into());
            };
            record.policy = policy.clone();
            record.version = record.version.saturating_add(1);
            let audit = AuditRecord::new(
                self.now(),
                AuditKind::HolderPolicyChanged,
                Actor::Holder(holder.clone()),
            );
            let commit = Commit {
                changes: vec![Change::UpdateHolder(record)],
                audit: vec![audit],
                ..Commit::default()
            };
            self.store.commit(commit)?;
            Ok(())
        })
    }

    /// Registers a platform.
    ///
    /// # Errors
    /// [`Error::Store`] (a duplicate id included).
    pub fn register_platform(&self, profile: PlatformProfile) -> Result<(), Error> {
        let record = AuditRecord::new(
            self.now(),
            AuditKind::PlatformRegistered,
            Actor::Platform(profile.id.clone()),
        );
        let commit = Commit {
            changes: vec![Change::InsertPlatform(profile)],
            audit: vec![record],
            ..Commit::default()
        };
        self.store.commit(commit)?;
        Ok(())
    }

    /// A platform asks for consent. The request waits for the subject's approval at the holder.
    ///
    /// # Errors
    /// [`Error::Request`] (audited) when the request names a prohibited use, an unknown holder
    /// or platform, nothing, or too long a duration; [`Error::Store`].
    pub fn request_consent(&self, draft: ConsentRequestDraft) -> Result<ConsentRequest, Error> {
        let now = self.now();
        let refused = |error: RequestError| {
            let record = AuditRecord::new(
                now,
                AuditKind::ConsentRequestRefused,
                Actor::Platform(draft.platform.clone()),
            );
            let record = AuditRecord {
                subject: Some(draft.subject.clone()),
                ..record
            };
            self.refuse(
                record.refused(Refusal::Request(error.clone())),
                Error::Request(error),
            )
        };
        // Prohibited uses are refused before anything is looked up.
        if let Err(error) = draft.check_prohibited() {
            return Err(refused(error));
        }
        let Some(holder) = self.store.holder(&draft.holder)? else {
            return Err(refused(RequestError::UnknownHolder(draft.holder.clone())));
        };
        let Some(platform) = self.store.platform(&draft.platform)? else {
            return Err(refused(RequestError::UnknownPlatform(
                draft.platform.clone(),
            )));
        };
        let unregistered = draft.purposes.iter().find_map(|p| match p {
            RequestedPurpose::Permitted(p) if !platform.registered_purposes.contains(p) => Some(*p),
            _ => None,
        });
        if let Some(purpose) = unregistered {
            return Err(refused(RequestError::PurposeNotRegistered(purpose)));
        }
        let limits = RequestLimits {
            offered_scopes: &holder.policy.enabled_scopes,
            max_duration: holder.policy.effective_max_duration(),
            approval_window: self.approval_window,
        };
        let request =
            match ConsentRequest::from_draft(draft.clone(), self.ids.consent_id(), limits, now) {
                Ok(request) => request,
                Err(error) => return Err(refused(error)),
            };
        let record = AuditRecord::new(
            now,
            AuditKind::ConsentRequested,
            Actor::Platform(request.platform.clone()),
        )
        .about(&request.id, Some(&request.subject));
        let commit = Commit {
            changes: vec![Change::InsertConsent(Consent::requested(request.clone()))],
            audit: vec![record],
            ..Commit::default()
        };
        self.store.commit(commit)?;
        Ok(request)
    }

    fn load(&self, consent: &ConsentId) -> Result<Consent, Error> {
        self.store
            .consent(consent)?
            .ok_or_else(|| Error::UnknownConsent(consent.clone()))
    }

    fn load_holder(&self, holder: &HolderId) -> Result<HolderRecord, Error> {
        self.store.holder(holder)?.ok_or_else(|| {
            StoreError::Missing {
                kind: RecordKind::Holder,
                id: holder.to_string(),
            }
            .into()
        })
    }

    /// Activates a requested consent with the holder's attestation of the subject's approval.
    ///
    /// # Errors
    /// [`Error::Attestation`] (audited) for a missing, forged, expired, replayed or mismatched
    /// attestation; [`Error::Consent`] (audited) when the request is no longer open;
    /// [`Error::UnknownConsent`]; [`Error::Store`].
    pub fn approve(&self, consent: &ConsentId, attestation: &str) -> Result<Consent, Error> {
        self.attest(consent, attestation, Transition::Approve)
    }

    /// Extends a live grant with a new attestation of the subject's approval.
    ///
    /// # Errors
    /// As [`Broker::approve`]; [`Error::Consent`] when the grant is not live or the new expiry
    /// does not extend it.
    pub fn reauthorise(&self, consent: &ConsentId, attestation: &str) -> Result<Consent, Error> {
        self.attest(consent, attestation, Transition::Reauthorise)
    }

    fn attest(
        &self,
        id: &ConsentId,
        token: &str,
        transition: Transition,
    ) -> Result<Consent, Error> {
        self.retrying(|| {
            let now = self.now();
            let consent = self.load(id)?;
            let request = &consent.request;
            let holder = self.load_holder(&request.holder)?;
            let refused_record = AuditRecord::new(
                now,
                transition.refused_kind(),
                Actor::Holder(holder.id.clone()),
            )
            .about(id, Some(&request.subject));
            let lifecycle = match transition {
                Transition::Approve => consent.ensure_awaiting_decision(now),
                Transition::Reauthorise => consent.ensure_live(now).map(|_| ()),
            };
            if let Err(error) = lifecycle {
                let record = refused_record.refused(Refusal::Lifecycle(error.clone()));
                return Err(self.refuse(record, error.into()));
            }
            let refuse_attestation = |error: AttestationError| {
                let record = refused_record
                    .clone()
                    .refused(Refusal::Attestation(error.clone()));
                self.refuse(record, error.into())
            };
            let expectations = Expectations {
                broker: &self.id,
                request,
                holder_keys: &holder.attestation_keys,
                latest_expiry: saturating_add(
                    now,
                    request.duration.min(holder.policy.effective_max_duration()),
                ),
            };
            let approval: Approval = match attestation::verify(token, &expectations, now) {
                Ok(approval) => approval,
                Err(AttestationError::Provider(error)) => return Err(error.into()),
                Err(error) => return Err(refuse_attestation(error)),
            };
            if self.store.attestation_used(approval.attestation_id())? {
                return Err(refuse_attestation(AttestationError::Replayed));
            }
            let attestation_id = approval.attestation_id().to_owned();
            let next = match transition {
                Transition::Approve => consent.approve(approval, now),
                Transition::Reauthorise => consent.reauthorise(approval, now),
            };
            let next = match next {
                Ok(next) => next,
                Err(error) => {
                    let record = refused_record.refused(Refusal::Lifecycle(error.clone()));
                    return Err(self.refuse(record, error.into()));
                }
            };
            let record = AuditRecord {
                attestation_id: Some(attestation_id.clone()),
                ..AuditRecord::new(
                    now,
                    transition.done_kind(),
                    Actor::Holder(holder.id.clone()),
                )
                .about(id, Some(&request.subject))
            };
            let commit = Commit {
                preconditions: vec![],
                changes: vec![
                    Change::UseAttestation(attestation_id),
                    Change::UpdateConsent(next.clone()),
                ],
                audit: vec![record],
            };
            match self.store.commit(commit) {
                Ok(_) => Ok(next),
                Err(StoreError::Duplicate {
                    kind: RecordKind::Attestation,
                    ..
                }) => Err(refuse_attestation(AttestationError::Replayed)),
                Err(error) => Err(error.into()),
            }
        })
    }

    /// The subject declines a requested consent (reported by the holder).
    ///
    /// # Errors
    /// [`Error::Consent`] when the request is no longer open; [`Error::UnknownConsent`];
    /// [`Error::Store`].
    pub fn reject(&self, consent: &ConsentId) -> Result<Consent, Error> {
        self.retrying(|| {
            let now = self.now();
            let current = self.load(consent)?;
            let next = current.reject(now)?;
            let record = AuditRecord::new(
                now,
                AuditKind::ConsentRejected,
                Actor::Subject(current.request.subject.clone()),
            )
            .about(consent, Some(&current.request.subject));
            let commit = Commit {
                changes: vec![Change::UpdateConsent(next.clone())],
                audit: vec![record],
                ..Commit::default()
            };
            self.store.commit(commit)?;
            Ok(next)
        })
    }

    /// Revokes a live consent: immediate and final. The next access decision on it is a denial.
    ///
    /// # Errors
    /// [`Error::Consent`] when the consent is not live; [`Error::UnknownConsent`];
    /// [`Error::Store`].
    pub fn revoke(
        &self,
        consent: &ConsentId,
        by: Revoker,
        reason: RevocationReason,
    ) -> Result<Consent, Error> {
        self.retrying(|| {
            let now = self.now();
            let current = self.load(consent)?;
            let next = current.revoke(by, reason, now)?;
            let request = &current.request;
            let actor = match by {
                Revoker::Subject => Actor::Subject(request.subject.clone()),
                Revoker::Holder => Actor::Holder(request.holder.clone()),
                Revoker::Platform => Actor::Platform(request.platform.clone()),
            };
            let record = AuditRecord {
                revocation: Some(Revocation { by, reason }),
                ..AuditRecord::new(now, AuditKind::ConsentRevoked, actor)
                    .about(consent, Some(&request.subject))
            };
            let commit = Commit {
                changes: vec![Change::UpdateConsent(next.clone())],
                audit: vec![record],
                ..Commit::default()
            };
            self.store.commit(commit)?;
            Ok(next)
        })
    }

    /// The checked call: decides an access, records the decision, and only then answers.
    ///
    /// A prohibited purpose or scope is refused before any grant is looked up. A permit for an
    /// unattended access consumes one of the day's slots in the same commit.
    ///
    /// # Errors
    /// [`Error::Store`] when the decision could not be recorded (then nothing is permitted), or
    /// [`Error::Contention`].
    pub fn authorise_access(&self, request: &AccessRequest) -> Result<AccessOutcome, Error> {
        self.retrying(|| self.decide_once(request))
    }

    fn decide_once(&self, request: &AccessRequest) -> Result<AccessOutcome, Error> {
        let now = self.now();
        let mut record = AuditRecord {
            consent: Some(request.consent.clone()),
            scope: Some(request.scope),
            purpose: Some(request.purpose),
            account: Some(request.account.clone()),
            presence: Some(request.presence),
            ..AuditRecord::new(
                now,
                AuditKind::AccessDenied,
                Actor::Platform(request.platform.clone()),
            )
        };
        // Prohibited uses are refused before anything is looked up.
        let (RequestedScope::Data(scope), RequestedPurpose::Permitted(purpose)) =
            (request.scope, request.purpose)
        else {
            return self.record_denial(record, policy::prohibited_reasons(request), Vec::new());
        };
        let consent = self.store.consent(&request.consent)?;
        let platform = self
            .store
            .platform(&request.platform)?
            .unwrap_or_else(|| PlatformProfile {
                id: request.platform.clone(),
                registered_purposes: Default::default(),
            });
        let Some(consent) = consent else {
            return self.record_denial(record, vec![DenyReason::UnknownConsent], Vec::new());
        };
        record.subject = Some(consent.request.subject.clone());
        // A consent's holder is registered before the consent can exist; if it has gone missing,
        // an empty policy shares nothing.
        let holder = self.store.holder(&consent.request.holder)?;
        let (policy, holder_version) = match &holder {
            Some(holder) => (holder.policy.clone(), Some(holder.version)),
            None => (
                HolderPolicy {
                    enabled_scopes: Default::default(),
                    ..HolderPolicy::default()
                },
                None,
            ),
        };
        let day = now.date();
        let usage: Usage = self.store.usage(&request.consent, day)?;
        let decision = policy::evaluate(request, Some(&consent), &policy, &platform, usage, now);
        let mut preconditions = vec![Precondition::ConsentVersion {
            consent: request.consent.clone(),
            version: consent.version,
        }];
        if let Decision::Deny { reasons } = decision {
            return self.record_denial(record, reasons, preconditions);
        }
        if let Some(version) = holder_version {
            preconditions.push(Precondition::HolderVersion {
                holder: consent.request.holder.clone(),
                version,
            });
        }
        let mut changes = Vec::new();
        if request.presence == Presence::Unattended {
            preconditions.push(Precondition::UsageIs {
                consent: request.consent.clone(),
                day,
                usage,
            });
            changes.push(Change::CountUnattendedAccess {
                consent: request.consent.clone(),
                day,
            });
        }
        record.kind = AuditKind::AccessPermitted;
        let receipt = self.store.commit(Commit {
            preconditions,
            changes,
            audit: vec![record],
        })?;
        Ok(AccessOutcome::Permitted(Permit {
            consent: request.consent.clone(),
            subject: consent.request.subject.clone(),
            holder: consent.request.holder.clone(),
            platform: request.platform.clone(),
            scope,
            purpose,
            account: request.account.clone(),
            presence: request.presence,
            decided_at: now,
            audit_seq: receipt.audit_seqs.start,
        }))
    }

    fn record_denial(
        &self,
        mut record: AuditRecord,
        reasons: Vec<DenyReason>,
        preconditions: Vec<Precondition>,
    ) -> Result<AccessOutcome, Error> {
        record.kind = AuditKind::AccessDenied;
        record.reasons = reasons.clone();
        let receipt = self.store.commit(Commit {
            preconditions,
            changes: Vec::new(),
            audit: vec![record],
        })?;
        Ok(AccessOutcome::Denied(Denial {
            reasons,
            audit_seq: receipt.audit_seqs.start,
        }))
    }

    /// A consent by id.
    ///
    /// # Errors
    /// [`Error::UnknownConsent`]; [`Error::Store`].
    pub fn consent(&self, consent: &ConsentId) -> Result<ConsentView, Error> {
        let consent = self.load(consent)?;
        let status = consent.status(self.now());
        Ok(ConsentView { consent, status })
    }

    /// Every consent of a subject with its current status, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn consents_of(&self, subject: &SubjectId) -> Result<Vec<ConsentView>, Error> {
        let now = self.now();
        Ok(self
            .store
            .consents_of_subject(subject)?
            .into_iter()
            .map(|consent| ConsentView {
                status: consent.status(now),
                consent,
            })
            .collect())
    }

    /// The whole audit log, in sequence order.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn audit_log(&self) -> Result<Vec<AuditEntry>, Error> {
        let len = self.store.audit_len()?;
        Ok(self.store.audit_entries(0..len)?)
    }
}

#[derive(Debug, Clone, Copy)]
enum Transition {
    Approve,
    Reauthorise,
}

impl Transition {
    fn done_kind(self) -> AuditKind {
        match self {
            Self::Approve => AuditKind::ConsentApproved,
            Self::Reauthorise => AuditKind::ConsentReauthorised,
        }
    }

    fn refused_kind(self) -> AuditKind {
        match self {
            Self::Approve => AuditKind::ApprovalRefused,
            Self::Reauthorise => AuditKind::ReauthorisationRefused,
        }
    }
}

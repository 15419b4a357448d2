//! The broker: the facade that ties the pure core to a store, a clock and an id source.
//!
//! Every call reads what it needs from the [`Store`], decides with the pure core, and commits
//! the state change together with its audit records in one atomic [`Commit`]. Only after that
//! commit succeeds does the call return; if it fails, the call returns an [`Error`] and never a
//! [`Permit`]. Commits carry the versions they were decided on, so a decision taken on state that
//! changed meanwhile (a revocation, a policy change, another access using the last unattended
//! slot) is re-decided, never committed.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use ring::rand::SystemRandom;

use time::{Duration, OffsetDateTime};

use crate::attestation::{self, Approval, AttestationError, Expectations};
use crate::audit::checkpoint::NoteSigner;
use crate::audit::log::{Receipt, StoreNodes};
use crate::audit::merkle;
use crate::audit::{self, Actor, AuditEntry, AuditKind, AuditRecord, Refusal, Revocation};
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
use crate::keys::{Ed25519PublicKey, Jwks, KeyError, KeySet, SigningKey};
use crate::policy::{
    self, AccessRequest, Decision, DenyReason, HolderPolicy, PlatformProfile, Presence, Usage,
};
use crate::store::{
    Change, Commit, HolderRecord, Precondition, PublishedKey, RecordKind, Store, StoreError,
    StoredCheckpoint,
};
use crate::token::{self, AccessClaims, DEFAULT_TOKEN_LIFETIME, MAX_TOKEN_LIFETIME};
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
/// private, so code that holds one has passed the policy check:
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
///     audit_seq: 0,
///     consent_version: 1,
/// };
/// ```
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
    consent_version: u64,
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

/// A signed access token, as handed to the platform.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// Its `jti`.
    pub token_id: String,
    /// Its `exp`.
    pub expires_at: OffsetDateTime,
    /// The key that signed it.
    pub key_id: String,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A bearer token is a credential: keep it out of logs.
        f.debug_struct("AccessToken")
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The answer of [`Broker::authorise_with_token`].
#[derive(Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// Permitted, and a token was issued.
    Issued(AccessToken),
    /// Refused.
    Denied(Denial),
}

/// What one attempt at the checked call produced: a recorded denial, or a permit not yet
/// recorded.
enum Decided {
    Denied(Denial),
    Permit(PendingPermit),
}

/// A permit with the commit that records it (the audit entry, and an unattended access's count,
/// under the preconditions the decision relied on).
struct PendingPermit {
    permit: Permit,
    commit: Commit,
    /// Caps the expiry of a token issued for the permit.
    grant_expires_at: OffsetDateTime,
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

/// What a builder collects and a broker keeps, apart from its store and keys.
struct Settings {
    id: BrokerId,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    approval_window: Duration,
    max_attempts: u32,
    token_lifetime: Duration,
}

/// Builds a [`Broker`]; see [`Broker::builder`].
pub struct BrokerBuilder<S> {
    settings: Settings,
    store: S,
    signing_key: Option<SigningKey>,
    checkpoint_key: Option<SigningKey>,
}

impl<S: Store> BrokerBuilder<S> {
    /// Uses `clock` instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings.clock = clock;
        self
    }

    /// Uses `ids` instead of random consent ids.
    pub fn ids(mut self, ids: Arc<dyn IdGenerator>) -> Self {
        self.settings.ids = ids;
        self
    }

    /// How long a request stays open for approval (default 10 minutes). A window that is not
    /// positive closes every request at once.
    pub fn approval_window(mut self, window: Duration) -> Self {
        self.settings.approval_window = window;
        self
    }

    /// How many times a call re-decides under concurrent updates (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.settings.max_attempts = attempts.max(1);
        self
    }

    /// Signs tokens with `key` (by default a fresh key is generated).
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// Signs audit checkpoints with `key` (by default a fresh key is generated, which an auditor
    /// can only learn from [`Broker::checkpoint_verifier_key`]; persist a key to keep checkpoints
    /// verifiable across restarts).
    pub fn checkpoint_key(mut self, key: SigningKey) -> Self {
        self.checkpoint_key = Some(key);
        self
    }

    /// Lifetime of access tokens: default 5 minutes, at most 15.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.settings.token_lifetime = lifetime;
        self
    }

    /// Installs the JWT crypto provider (if the host has not) and builds the broker.
    ///
    /// # Errors
    /// [`Error::Provider`] if the process-wide JWT crypto provider is unusable;
    /// [`Error::InvalidTokenLifetime`]; [`Error::Key`] if no key was given and none could be
    /// generated.
    pub fn build(self) -> Result<Broker<S>, Error> {
        crypto::install()?;
        let lifetime = self.settings.token_lifetime;
        if lifetime < Duration::SECOND || lifetime > MAX_TOKEN_LIFETIME {
            return Err(Error::InvalidTokenLifetime {
                seconds: lifetime.whole_seconds(),
            });
        }
        let rng = SystemRandom::new();
        let key = match self.signing_key {
            Some(key) => key,
            None => SigningKey::generate(&rng)?,
        };
        let checkpoint_key = match self.checkpoint_key {
            Some(key) => key,
            None => SigningKey::generate(&rng)?,
        };
        let checkpoints =
            NoteSigner::new(self.settings.id.as_str(), checkpoint_key.to_pkcs8_der())?;
        let already_published = self
            .store
            .signing_keys()?
            .iter()
            .any(|published| published.kid == key.kid());
        let broker = Broker {
            settings: self.settings,
            store: self.store,
            keys: RwLock::new(KeySet::new(key)),
            checkpoints,
            rng,
        };
        if !already_published {
            let keys = broker.key_set();
            broker.publish_key(keys.signing_key(), broker.now())?;
        }
        Ok(broker)
    }
}

/// The consent broker.
pub struct Broker<S> {
    settings: Settings,
    store: S,
    keys: RwLock<KeySet>,
    checkpoints: NoteSigner,
    rng: SystemRandom,
}

impl<S> std::fmt::Debug for Broker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("id", &self.settings.id)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Broker<S> {
    /// Starts building a broker named `id` over `store`, with the system clock and random ids.
    pub fn builder(id: BrokerId, store: S) -> BrokerBuilder<S> {
        BrokerBuilder {
            settings: Settings {
                id,
                clock: Arc::new(SystemClock),
                ids: Arc::new(RandomIds::new()),
                approval_window: DEFAULT_APPROVAL_WINDOW,
                max_attempts: DEFAULT_MAX_ATTEMPTS,
                token_lifetime: DEFAULT_TOKEN_LIFETIME,
            },
            store,
            signing_key: None,
            checkpoint_key: None,
        }
    }

    /// The broker's id (the `aud` of attestations).
    pub fn id(&self) -> &BrokerId {
        &self.settings.id
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The current time, from the injected clock.
    pub fn now(&self) -> OffsetDateTime {
        self.settings.clock.now()
    }

    /// Re-runs `attempt` while a concurrent writer invalidates what it read.
    fn retrying<T>(&self, mut attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
        for _ in 0..self.settings.max_attempts {
            match attempt() {
                Err(Error::Store(StoreError::Conflict)) => continue,
                other => return other,
            }
        }
        Err(Error::Contention {
            attempts: self.settings.max_attempts,
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
            approval_window: self.settings.approval_window,
        };
        let request = match ConsentRequest::from_draft(
            draft.clone(),
            self.settings.ids.consent_id(),
            limits,
            now,
        ) {
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
                broker: &self.settings.id,
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
            let evidence = approval.attestation().to_owned();
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
                attestation: Some(evidence),
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
        self.retrying(|| match self.decide_once(request)? {
            Decided::Denied(denial) => Ok(AccessOutcome::Denied(denial)),
            Decided::Permit(mut pending) => {
                let receipt = self.store.commit(pending.commit)?;
                pending.permit.audit_seq = receipt.audit_seqs.start;
                Ok(AccessOutcome::Permitted(pending.permit))
            }
        })
    }

    /// One attempt at the checked call: a denial is recorded and returned; a permit is returned
    /// with the commit that records it, for the caller to complete (with a token's issuing, for
    /// `authorise_with_token`) and make. Nothing is permitted until that commit succeeds.
    fn decide_once(&self, request: &AccessRequest) -> Result<Decided, Error> {
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
        let shares_nothing;
        let (policy, holder_version) = match &holder {
            Some(holder) => (&holder.policy, Some(holder.version)),
            None => {
                shares_nothing = HolderPolicy {
                    enabled_scopes: Default::default(),
                    ..HolderPolicy::default()
                };
                (&shares_nothing, None)
            }
        };
        let day = now.date();
        let usage: Usage = self.store.usage(&request.consent, day)?;
        let decision = policy::evaluate(request, Some(&consent), policy, &platform, usage, now);
        let mut preconditions = vec![Precondition::ConsentVersion {
            consent: request.consent.clone(),
            version: consent.version,
        }];
        if let Decision::Deny { reasons } = decision {
            return self.record_denial(record, reasons, preconditions);
        }
        // A permit implies a live grant; its expiry caps a token's.
        let grant_expires_at = consent.grant().map_or(now, |grant| grant.expires_at);
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
        let permit = Permit {
            consent: request.consent.clone(),
            subject: consent.request.subject.clone(),
            holder: consent.request.holder.clone(),
            platform: request.platform.clone(),
            scope,
            purpose,
            account: request.account.clone(),
            presence: request.presence,
            decided_at: now,
            audit_seq: 0,
            consent_version: consent.version,
        };
        Ok(Decided::Permit(PendingPermit {
            permit,
            commit: Commit {
                preconditions,
                changes,
                audit: vec![record],
            },
            grant_expires_at,
        }))
    }

    /// Signs the access token for `permit` and builds the audit record of its issuing.
    fn sign_token(
        &self,
        permit: &Permit,
        now: OffsetDateTime,
        grant_expires_at: OffsetDateTime,
    ) -> Result<(AccessToken, AuditRecord), Error> {
        let expires_at = saturating_add(now, self.settings.token_lifetime).min(grant_expires_at);
        let token_id =
            crate::ids::random_token(&self.rng).ok_or(KeyError::RandomnessUnavailable)?;
        let claims = AccessClaims {
            iss: self.settings.id.clone(),
            aud: permit.holder.clone(),
            sub: permit.subject.clone(),
            client_id: permit.platform.clone(),
            cid: permit.consent.clone(),
            scope: permit.scope,
            purpose: permit.purpose,
            acct: permit.account.clone(),
            iat: now.unix_timestamp(),
            nbf: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            jti: token_id.clone(),
        };
        let (token, key_id) = {
            let keys = self.key_set();
            let key = keys.signing_key();
            let token = token::sign(&claims, key)?;
            // Noted before the commit: over-estimating a key's last expiry only keeps it
            // published a little longer.
            keys.note_signed(key.kid(), expires_at);
            (token, key.kid().to_owned())
        };
        let record = AuditRecord {
            scope: Some(permit.scope.into()),
            purpose: Some(permit.purpose.into()),
            account: Some(permit.account.clone()),
            presence: Some(permit.presence),
            token_id: Some(token_id.clone()),
            ..AuditRecord::new(
                now,
                AuditKind::TokenIssued,
                Actor::Platform(permit.platform.clone()),
            )
            .about(&permit.consent, Some(&permit.subject))
        };
        let token = AccessToken {
            token,
            token_id,
            expires_at,
            key_id,
        };
        Ok((token, record))
    }

    fn record_denial(
        &self,
        mut record: AuditRecord,
        reasons: Vec<DenyReason>,
        preconditions: Vec<Precondition>,
    ) -> Result<Decided, Error> {
        record.kind = AuditKind::AccessDenied;
        record.reasons = reasons.clone();
        let receipt = self.store.commit(Commit {
            preconditions,
            changes: Vec::new(),
            audit: vec![record],
        })?;
        Ok(Decided::Denied(Denial {
            reasons,
            audit_seq: receipt.audit_seqs.start,
        }))
    }

    fn key_set(&self) -> RwLockReadGuard<'_, KeySet> {
        // No code path panics while holding the lock, so a poisoned lock still guards a
        // consistent key set.
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Turns a permit into a signed access token, bound to its consent, scope, purpose, account
    /// and holder, and records the issuing (with the token's `jti`) before returning it.
    ///
    /// The token expires after the configured lifetime, or with the grant if that is sooner.
    ///
    /// # Errors
    /// [`Error::PermitStale`] if the consent changed since the permit was decided (for example,
    /// it was revoked); [`Error::Store`] if the issuing cannot be recorded (then no token is
    /// returned); [`Error::Provider`]; [`Error::Key`].
    pub fn issue_token(&self, permit: Permit) -> Result<AccessToken, Error> {
        let now = self.now();
        let consent = self.load(&permit.consent)?;
        let stale = || Error::PermitStale(permit.consent.clone());
        if consent.version != permit.consent_version {
            return Err(stale());
        }
        let grant = consent.ensure_live(now).map_err(|_| stale())?;
        let (token, record) = self.sign_token(&permit, now, grant.expires_at)?;
        let commit = Commit {
            preconditions: vec![Precondition::ConsentVersion {
                consent: permit.consent.clone(),
                version: permit.consent_version,
            }],
            changes: Vec::new(),
            audit: vec![record],
        };
        match self.store.commit(commit) {
            Ok(_) => Ok(token),
            Err(StoreError::Conflict) => Err(stale()),
            Err(error) => Err(error.into()),
        }
    }

    /// The checked call with token issuing: decides and, on a permit, signs a token; the decision
    /// and the token's issuing are recorded in one commit, so either both are in the audit log and
    /// the token is returned, or neither is (a failed call permits nothing and spends no
    /// unattended slot). Re-decides if the consent or the holder's policy changed meanwhile.
    ///
    /// # Errors
    /// As [`Broker::authorise_access`], and [`Error::Provider`] or [`Error::Key`] if the token
    /// cannot be signed (then nothing is recorded).
    pub fn authorise_with_token(&self, request: &AccessRequest) -> Result<TokenOutcome, Error> {
        self.retrying(|| match self.decide_once(request)? {
            Decided::Denied(denial) => Ok(TokenOutcome::Denied(denial)),
            Decided::Permit(mut pending) => {
                let permit = &pending.permit;
                let (token, issued) =
                    self.sign_token(permit, permit.decided_at, pending.grant_expires_at)?;
                pending.commit.audit.push(issued);
                self.store.commit(pending.commit)?;
                Ok(TokenOutcome::Issued(token))
            }
        })
    }

    /// The JWKS the bank fetches: the signing key and retired keys still verifying.
    pub fn jwks(&self) -> Jwks {
        let now = self.now();
        self.key_set().jwks(now)
    }

    /// Makes `key` the signing key from now on. The previous key stays in the JWKS until the
    /// last token it signed has expired.
    ///
    /// # Errors
    /// [`Error::Store`] if the rotation cannot be recorded (then nothing changes).
    pub fn rotate_signing_key(&self, key: SigningKey) -> Result<(), Error> {
        let now = self.now();
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.publish_key(&key, now)?;
        keys.rotate(key, now);
        Ok(())
    }

    /// Records a key's public half and its activation, atomically.
    fn publish_key(&self, key: &SigningKey, now: OffsetDateTime) -> Result<(), Error> {
        let record = AuditRecord {
            key_id: Some(key.kid().to_owned()),
            ..AuditRecord::new(
                now,
                AuditKind::SigningKeyActivated,
                Actor::Broker(self.settings.id.clone()),
            )
        };
        let published = PublishedKey {
            kid: key.kid().to_owned(),
            public_key: key.public_key(),
            activated_at: now,
        };
        let commit = Commit {
            changes: vec![Change::PublishSigningKey(published)],
            audit: vec![record],
            ..Commit::default()
        };
        self.store.commit(commit)?;
        Ok(())
    }

    /// The checkpoints' origin line: the broker's id.
    pub fn log_origin(&self) -> &str {
        self.settings.id.as_str()
    }

    /// The verifier key of the broker's checkpoint signatures (C2SP `signed-note` vkey), for
    /// auditors to keep.
    pub fn checkpoint_verifier_key(&self) -> String {
        self.checkpoints.verifier_key()
    }

    /// Signs a checkpoint of the whole audit log (C2SP `tlog-checkpoint` in a `signed-note`),
    /// after proving that the log is consistent with the last checkpoint it signed: the broker
    /// never signs two inconsistent checkpoints. The checkpoint is recorded in the store.
    ///
    /// # Errors
    /// [`Error::CheckpointInconsistent`]; [`Error::Merkle`]; [`Error::Store`].
    pub fn checkpoint(&self) -> Result<StoredCheckpoint, Error> {
        audit::log::checkpoint_log(&self.store, self.log_origin(), &self.checkpoints)
    }

    /// A receipt for the audit entry at `seq`: the entry, its inclusion proof, and a freshly
    /// signed checkpoint it is proven against.
    ///
    /// # Errors
    /// [`Error::Store`] (for example [`StoreError::Missing`] if there is no such entry),
    /// [`Error::Merkle`], and the errors of [`Broker::checkpoint`].
    pub fn receipt(&self, seq: u64) -> Result<Receipt, Error> {
        let missing = || {
            Error::Store(StoreError::Missing {
                kind: RecordKind::AuditEntry,
                id: seq.to_string(),
            })
        };
        let stored = self
            .store
            .audit_bytes(seq..seq.saturating_add(1))?
            .pop()
            .ok_or_else(missing)?;
        let entry = String::from_utf8(stored.bytes)
            .map_err(|_| StoreError::Corrupt(format!("audit entry {seq} is not UTF-8")))?;
        let checkpoint = self.checkpoint()?;
        let proof = merkle::inclusion_proof(seq, checkpoint.size, &StoreNodes(&self.store))?;
        Ok(Receipt {
            index: seq,
            entry,
            tree_size: checkpoint.size,
            proof: audit::log::encode_hashes(&proof),
            checkpoint: checkpoint.note,
        })
    }

    /// Who asked for a subject's data, when, why, and what was decided: every audit entry about
    /// the subject or one of their consents, in order.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn subject_history(&self, subject: &SubjectId) -> Result<Vec<AuditEntry>, Error> {
        Ok(audit::log::subject_history(&self.store, subject)?)
    }

    /// Every audit entry about a consent, in order.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn consent_history(&self, consent: &ConsentId) -> Result<Vec<AuditEntry>, Error> {
        Ok(audit::log::consent_history(&self.store, consent)?)
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
            audit_seq: 0,
            consent_version: 1,
        };
        assert_eq!(made.scope(), Scope::Balance);
    }
}

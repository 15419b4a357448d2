//! A consent's life at the broker: the platform's request, the subject's approval (attested by
//! the holder) or rejection, re-authorisation, revocation, and looking consents up.

use super::Broker;
use super::privacy::redact_refusal;
use crate::attestation::{self, AttestationError, Expectations};
use crate::audit::{Actor, AuditEvent, AuditRecord, Refusal, Revocation};
use crate::clock::saturating_add;
use crate::consent::{
    Approval, Consent, ConsentRequest, ConsentRequestDraft, ConsentStatus, RequestError,
    RequestLimits, RevocationReason, Revoker,
};
use crate::error::Error;
use crate::ids::{AccountId, ConsentId, PlatformId, SubjectId};
use crate::privacy::{Keyed, commitment};
use crate::store::{Change, Commit, Precondition, RecordKind, Store, StoreError};
use crate::vocab::{RequestedPurpose, Scope};

/// A consent with its status at the time it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentView {
    /// The consent.
    pub consent: Consent,
    /// Its status when read.
    pub status: ConsentStatus,
}

#[derive(Debug, Clone, Copy)]
enum Transition {
    Approve,
    Reauthorise,
}

impl<S: Store> Broker<S> {
    /// A platform asks for consent. The request waits for the subject's approval at the holder.
    ///
    /// # Errors
    /// [`Error::Request`] (audited) when the request names a prohibited use, an unknown holder
    /// or platform, nothing, or too long a duration; [`Error::Id`] when no fresh consent id can
    /// be made (nothing is recorded); [`Error::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.request_consent", level = "debug", skip_all)
    )]
    pub fn request_consent(&self, draft: ConsentRequestDraft) -> Result<ConsentRequest, Error> {
        self.retrying(|| self.request_once(&draft))
    }

    fn request_once(&self, draft: &ConsentRequestDraft) -> Result<ConsentRequest, Error> {
        let now = self.now();
        // A refusal names the subject only if it has a key already: it makes none.
        let existing = Keyed::read_existing(&self.store, &draft.subject)?;
        let refused = |error: RequestError| {
            let record = AuditRecord::new(
                now,
                Actor::Platform(draft.platform.clone()),
                AuditEvent::ConsentRequestRefused {
                    subject: existing.as_ref().map(|k| k.key.subject(&draft.subject)),
                    refusal: Refusal::Request(error.clone()),
                },
            );
            let commit = Commit::new(record);
            let commit = match &existing {
                Some(keyed) => keyed.store_in(commit),
                None => commit,
            };
            self.refuse_with(commit, Error::Request(error))
        };
        // Prohibited uses are refused before anything else is looked up.
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
        let id = self.settings.ids.consent_id()?;
        let request = match ConsentRequest::from_draft(draft.clone(), id, limits, now) {
            Ok(request) => request,
            Err(error) => return Err(refused(error)),
        };
        let keyed = match existing.clone() {
            Some(keyed) => keyed,
            None => self.key_of(&draft.subject)?,
        };
        let subject = keyed.key.subject(&draft.subject);
        let record = AuditRecord::new(
            now,
            Actor::Platform(request.platform.clone()),
            AuditEvent::ConsentRequested {
                consent: request.id.clone(),
                subject,
            },
        );
        self.commit(
            keyed
                .store_in(Commit::new(record))
                .change(Change::InsertConsent {
                    consent: Consent::requested(request.clone()),
                }),
        )?;
        Ok(request)
    }

    /// Activates a requested consent with the holder's attestation of the subject's approval,
    /// verified against the keys registered for the consent's holder.
    ///
    /// A refusal is logged (`approval_refused`, the holder as actor) when what was posted is the
    /// holder's current attestation about this consent (signed by its registered key, for this
    /// broker, consent, subject and platform, within its lifetime), whatever it approves: the
    /// holder's act. Anything else (no attestation, one that cannot be read, another key's, a
    /// bad signature, another consent's, an expired one, any other JWS the holder signed) is
    /// anyone's: refused and answered, not logged, since anyone may post one for a consent the
    /// published log shows pending.
    ///
    /// # Errors
    /// [`Error::Attestation`] for a missing, forged, expired, replayed or mismatched
    /// attestation; [`Error::Consent`] when the request is no longer open (each logged when it
    /// is the holder's, as above); [`Error::UnknownConsent`]; [`Error::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.approve", level = "debug", skip_all)
    )]
    pub fn approve(&self, consent: &ConsentId, attestation: &str) -> Result<Consent, Error> {
        self.attest(consent, attestation, Transition::Approve)
    }

    /// Extends a live grant with a new attestation of the subject's approval.
    ///
    /// # Errors
    /// As [`Broker::approve`]; [`Error::Consent`] when the grant is not live or the new expiry
    /// does not extend it.
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.reauthorise", level = "debug", skip_all)
    )]
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
            let read_version = consent.version;
            let request = &consent.request;
            let holder = self.load_holder(&request.holder)?;
            let keyed = self.key_of(&request.subject)?;
            let subject = keyed.key.subject(&request.subject);
            let expectations = Expectations {
                broker: &self.settings.id,
                request,
                holder_keys: &holder.attestation_keys,
                latest_expiry: saturating_add(
                    now,
                    request.duration.min(holder.policy.effective_max_duration()),
                ),
            };
            let refused = |refusal: Refusal, error: Error| {
                // Logged as the holder's only when what was posted is the holder's current
                // attestation about this consent: anything else is anyone's, answered and not
                // logged.
                if !attestation::is_the_holders(token, &expectations, now) {
                    return error;
                }
                let refusal = redact_refusal(refusal, &keyed.key);
                let subject = subject.clone();
                let consent = id.clone();
                let event = match transition {
                    Transition::Approve => AuditEvent::ApprovalRefused {
                        consent,
                        subject,
                        refusal,
                    },
                    Transition::Reauthorise => AuditEvent::ReauthorisationRefused {
                        consent,
                        subject,
                        refusal,
                    },
                };
                let record = AuditRecord::new(now, Actor::Holder(holder.id.clone()), event);
                // About this consent as read: if an erasure deleted it (and the key) meanwhile,
                // the refusal is not recorded under a key made again, and the retry finds no
                // consent.
                let commit = keyed
                    .store_in(Commit::new(record))
                    .precondition(Precondition::consent_version(id, read_version));
                self.refuse_with(commit, error)
            };
            let lifecycle = match transition {
                Transition::Approve => consent.ensure_awaiting_decision(now),
                Transition::Reauthorise => consent.ensure_live(now).map(|_| ()),
            };
            if let Err(error) = lifecycle {
                return Err(refused(Refusal::Lifecycle(error.clone()), error.into()));
            }
            let refuse_attestation = |error: AttestationError| {
                refused(Refusal::Attestation(error.clone()), error.into())
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
            let digest = commitment(approval.attestation().as_bytes());
            let sealed = keyed
                .key
                .seal(
                    "attestation",
                    &subject,
                    approval.attestation().as_bytes(),
                    self.settings.random.as_ref(),
                )
                .map_err(|_| Error::Key(crate::keys::KeyError::RandomnessUnavailable))?;
            let next = match transition {
                Transition::Approve => consent.approve(approval, now),
                Transition::Reauthorise => consent.reauthorise(approval, now),
            };
            let next = match next {
                // The pseudonyms its decisions write, made once here under the key this commit
                // guards.
                Ok(next) => next.with_pseudonyms(&keyed.key),
                Err(error) => return Err(refused(Refusal::Lifecycle(error.clone()), error.into())),
            };
            let consent_id = id.clone();
            let event = match transition {
                Transition::Approve => AuditEvent::ConsentApproved {
                    consent: consent_id,
                    subject: subject.clone(),
                    attestation_id: attestation_id.clone(),
                    attestation: None,
                    attestation_digest: Some(digest),
                    sealed_attestation: Some(sealed),
                },
                Transition::Reauthorise => AuditEvent::ConsentReauthorised {
                    consent: consent_id,
                    subject: subject.clone(),
                    attestation_id: attestation_id.clone(),
                    attestation: None,
                    attestation_digest: Some(digest),
                    sealed_attestation: Some(sealed),
                },
            };
            let record = AuditRecord::new(now, Actor::Holder(holder.id.clone()), event);
            let commit = keyed
                .store_in(Commit::new(record))
                .change(Change::UseAttestation { attestation_id })
                .change(Change::UpdateConsent {
                    consent: next.clone(),
                });
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

    /// The subject declines a requested consent, as the platform reports it: the entry's actor is
    /// the platform, which asserted it (the subject cannot be proven to have acted).
    ///
    /// # Errors
    /// [`Error::Consent`] when the request is no longer open; [`Error::UnknownConsent`];
    /// [`Error::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.reject", level = "debug", skip_all)
    )]
    pub fn reject(&self, consent: &ConsentId) -> Result<Consent, Error> {
        self.retrying(|| {
            let now = self.now();
            let current = self.load(consent)?;
            let next = current.reject(now)?;
            self.platform_transition(&current, next, now, |subject| AuditEvent::ConsentRejected {
                consent: consent.clone(),
                subject,
            })
        })
    }

    /// Revokes a live consent, as the platform asserts it: by the subject (in the conversation)
    /// or by the platform itself. Immediate and final: the next access decision on it is a
    /// denial, and no permit decided before can become a token. The entry's actor is the platform,
    /// which asserted it; a revocation by the holder reaches the broker only as the holder's
    /// signed instruction ([`Broker::apply_holder_instruction`]).
    ///
    /// # Errors
    /// [`Error::HolderMustSign`] for `by` [`Revoker::Holder`]; [`Error::Consent`] when the
    /// consent is not live; [`Error::UnknownConsent`]; [`Error::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.revoke", level = "debug", skip_all)
    )]
    pub fn revoke(
        &self,
        consent: &ConsentId,
        by: Revoker,
        reason: RevocationReason,
    ) -> Result<Consent, Error> {
        if by == Revoker::Holder {
            return Err(Error::HolderMustSign);
        }
        self.retrying(|| {
            let now = self.now();
            let current = self.load(consent)?;
            let next = current.revoke(by, reason, now)?;
            let holder = current.request.holder.clone();
            self.platform_transition(&current, next, now, |subject| AuditEvent::ConsentRevoked {
                consent: consent.clone(),
                subject,
                revocation: Revocation { by, reason },
                instruction: None,
                holder: Some(holder),
            })
        })
    }

    /// Commits a transition the platform asserts (the entry's actor): `next` replaces
    /// `current`, recorded by `event` made with the subject's pseudonym.
    fn platform_transition(
        &self,
        current: &Consent,
        next: Consent,
        now: time::OffsetDateTime,
        event: impl FnOnce(crate::ids::Pseudonym) -> AuditEvent,
    ) -> Result<Consent, Error> {
        let request = &current.request;
        let keyed = self.key_of(&request.subject)?;
        let record = AuditRecord::new(
            now,
            Actor::Platform(request.platform.clone()),
            event(keyed.key.subject(&request.subject)),
        );
        self.commit(
            keyed
                .store_in(Commit::new(record))
                .change(Change::UpdateConsent {
                    consent: next.clone(),
                }),
        )?;
        Ok(next)
    }

    /// A consent by id, with its status now.
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
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.consents_of", level = "debug", skip_all)
    )]
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

    /// The subject's live consent for `platform` that covers `scope` on `account`, if there is
    /// one (the one expiring last, if several do): what a platform looks up before asking for
    /// access, to know which consent to name or whether to ask the subject first.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn live_consent(
        &self,
        subject: &SubjectId,
        platform: &PlatformId,
        scope: Scope,
        account: &AccountId,
    ) -> Result<Option<ConsentView>, Error> {
        let now = self.now();
        Ok(self
            .store
            .consents_of_subject(subject)?
            .into_iter()
            .filter(|consent| &consent.request.platform == platform)
            .filter_map(|consent| {
                let grant = consent.ensure_live(now).ok()?;
                let covers = grant.scopes.contains(scope) && grant.accounts.contains(account);
                let expires = grant.expires_at;
                covers.then_some((expires, consent))
            })
            .max_by_key(|(expires, _)| *expires)
            .map(|(_, consent)| ConsentView {
                status: consent.status(now),
                consent,
            }))
    }
}

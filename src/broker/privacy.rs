//! The broker's side of privacy: subjects' keys, pseudonymous log entries, erasure and
//! retention (see [`crate::privacy`] and `docs/PRIVACY.md`).

use time::{Duration, OffsetDateTime};

use super::Broker;
use crate::attestation::AttestationError;
use crate::audit::AuditEntry;
use crate::audit::{Actor, AuditEvent, AuditRecord, Refusal, Revocation};
use crate::auditor;
use crate::consent::{ConsentStatus, RevocationReason, Revoker};
use crate::error::Error;
use crate::ids::{AccountId, ConsentId, Pseudonym, SubjectId};
use crate::policy::DenyReason;
use crate::privacy::{Keyed, SubjectKey};
use crate::store::{Change, Commit, Store};

/// How long the state of an ended consent is kept by default before retention deletes it:
/// 90 days, long enough to answer the subject's or the bank's questions about a grant that just
/// ended (a disputed last access, a revocation that crossed a token) and short enough that
/// nothing is kept "just in case". The log keeps its pseudonymous entries for good; retention
/// never deletes a subject's key (only erasure does), so the history remains readable.
pub const DEFAULT_RETENTION: Duration = Duration::days(90);

/// At most this many consents are deleted per retention call (bounded work per commit).
pub const MAX_RETENTION_BATCH: u32 = 500;

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Erasure {
    /// The pseudonym the subject had in the log (it links to nobody now).
    pub pseudonym: Pseudonym,
    /// The consents whose state was deleted.
    pub consents: Vec<ConsentId>,
    /// The live ones among them, revoked in the same commit (the bank learns it from the feed).
    pub revoked: Vec<ConsentId>,
    /// The audit entry that records the erasure.
    pub audit_seq: u64,
    /// Whether the store also removed the deleted rows' bytes from its files (see
    /// [`Store::purge`]); `false`: call [`Broker::purge`] again later.
    pub purged: bool,
}

/// What a retention pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// The consents whose state was deleted (at most [`MAX_RETENTION_BATCH`]; call again while
    /// this is full).
    pub consents: Vec<ConsentId>,
    /// The audit entry that records it, if anything was deleted.
    pub audit_seq: Option<u64>,
    /// Whether the store also removed the deleted rows' bytes from its files (see
    /// [`Store::purge`]); `false`: call [`Broker::purge`] again later.
    pub purged: bool,
}

impl<S: Store> Broker<S> {
    /// The subject's key, made now if it has none (see [`Keyed`]).
    pub(crate) fn key_of(&self, subject: &SubjectId) -> Result<Keyed, Error> {
        Ok(Keyed::read_or_make(
            &self.store,
            subject,
            self.settings.random.as_ref(),
            self.now(),
        )?)
    }

    /// The subject's pseudonym in this broker's log, while its key exists (`None` before its
    /// first consent request and after erasure).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn pseudonym_of(&self, subject: &SubjectId) -> Result<Option<Pseudonym>, Error> {
        Ok(self
            .store
            .subject_key(subject)?
            .map(|key| key.subject(subject)))
    }

    /// Who asked for a subject's data, when, why, and what was decided: every audit entry about
    /// the subject or one of their consents, in order, found by the subject's pseudonym (see
    /// [`auditor::subject_history`]); empty once the subject is erased.
    ///
    /// # Errors
    /// [`Error::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.subject_history", level = "debug", skip_all)
    )]
    pub fn subject_history(&self, subject: &SubjectId) -> Result<Vec<AuditEntry>, Error> {
        match self.pseudonym_of(subject)? {
            Some(pseudonym) => Ok(auditor::subject_history(&self.store, &pseudonym)?),
            None => Ok(Vec::new()),
        }
    }

    /// Opens the attestation an approval entry sealed under the subject's key: the evidence of
    /// what the subject approved, readable while the key exists.
    ///
    /// # Errors
    /// [`Error::UnknownSubject`] when the subject has no key (never had one, or was erased);
    /// [`Error::Sealed`] when the entry holds no sealed attestation of this subject's.
    pub fn open_attestation(
        &self,
        subject: &SubjectId,
        entry: &AuditEntry,
    ) -> Result<String, Error> {
        let key = self
            .store
            .subject_key(subject)?
            .ok_or(Error::UnknownSubject)?;
        let (AuditEvent::ConsentApproved {
            subject: pseudonym,
            sealed_attestation: Some(sealed),
            ..
        }
        | AuditEvent::ConsentReauthorised {
            subject: pseudonym,
            sealed_attestation: Some(sealed),
            ..
        }) = &entry.event
        else {
            return Err(Error::Sealed(crate::privacy::PrivacyError::Malformed));
        };
        let bytes = key
            .open("attestation", pseudonym, sealed)
            .map_err(Error::Sealed)?;
        String::from_utf8(bytes).map_err(|_| Error::Sealed(crate::privacy::PrivacyError::Malformed))
    }

    /// Erases a subject (GDPR Art. 17): in one commit, revokes its live consents (so the bank
    /// learns it from the feed at once), deletes its key, its consents and their usage, and
    /// records the erasure under the pseudonym it had. The log is untouched and still verifies
    /// against every checkpoint; nothing in it links to the subject any more. Then asks the
    /// store to remove the deleted rows' bytes from its files ([`Store::purge`]).
    ///
    /// Erasing a subject that has no key and no consents records nothing and returns `None`.
    ///
    /// # Errors
    /// [`Error::Store`] (then nothing was erased); [`Error::Contention`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.erase_subject", level = "debug", skip_all)
    )]
    pub fn erase_subject(&self, subject: &SubjectId) -> Result<Option<Erasure>, Error> {
        let erased = self.retrying(|| {
            let now = self.now();
            let consents = self.store.consents_of_subject(subject)?;
            let Some(key) = self.store.subject_key(subject)? else {
                if consents.is_empty() {
                    return Ok(None);
                }
                // Consents from before subject keys (audit formats 1 to 4): erase them all the
                // same, under a throwaway key, and without listing their ids in the erasure's
                // entry (their old entries name the subject in clear: the list would add a
                // lasting "this person asked to be erased").
                return self
                    .erase_with(
                        subject,
                        &SubjectKey::generate(self.settings.random.as_ref())?,
                        &consents,
                        now,
                        false,
                    )
                    .map(Some);
            };
            self.erase_with(subject, &key, &consents, now, true)
                .map(Some)
        })?;
        let Some(mut erasure) = erased else {
            return Ok(None);
        };
        self.pseudonyms.forget(subject);
        self.views.clear();
        // The erasure is committed: a purge that fails now is reported as not done (retry it
        // with `Broker::purge`), not as an erasure that failed.
        erasure.purged = self.store.purge().unwrap_or(false);
        Ok(Some(erasure))
    }

    fn erase_with(
        &self,
        subject: &SubjectId,
        key: &SubjectKey,
        consents: &[crate::consent::Consent],
        now: OffsetDateTime,
        list: bool,
    ) -> Result<Erasure, Error> {
        let pseudonym = key.subject(subject);
        let mut revoked = Vec::new();
        let mut records = Vec::new();
        for consent in consents {
            if consent.status(now) == ConsentStatus::Authorised {
                let reason = RevocationReason::Erasure;
                records.push(AuditRecord::new(
                    now,
                    Actor::Platform(consent.request.platform.clone()),
                    AuditEvent::ConsentRevoked {
                        consent: consent.id().clone(),
                        subject: pseudonym.clone(),
                        revocation: Revocation {
                            by: Revoker::Subject,
                            reason,
                        },
                        instruction: None,
                        holder: Some(consent.request.holder.clone()),
                    },
                ));
                revoked.push(consent.id().clone());
            }
        }
        let ids: Vec<ConsentId> = consents.iter().map(|c| c.id().clone()).collect();
        let used = used_attestations(consents);
        // The revocations come first in the log, the erasure last.
        let erased = AuditRecord::new(
            now,
            Actor::Broker(self.settings.id.clone()),
            AuditEvent::SubjectErased {
                subject: pseudonym.clone(),
                consents: if list { ids.clone() } else { Vec::new() },
            },
        );
        let mut commit = Commit::records_then(records, erased);
        // Each consent as it was read: one approved or revoked meanwhile is erased only after
        // this reads it again (and revokes it first if it went live).
        for consent in consents {
            commit = commit.precondition(crate::store::Precondition::consent_version(
                consent.id(),
                consent.version,
            ));
        }
        let receipt = self.commit(commit.change(Change::EraseSubject {
            subject: subject.clone(),
            consents: ids.clone(),
            attestations: Vec::new(),
            used_attestations: used,
        }))?;
        Ok(Erasure {
            pseudonym,
            consents: ids,
            revoked,
            audit_seq: receipt.audit_seqs.end.saturating_sub(1),
            purged: false,
        })
    }

    /// Removes from the store's files what deleted rows left behind (see [`Store::purge`]):
    /// `true` when done.
    ///
    /// # Errors
    /// [`Error::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.purge", level = "debug", skip_all)
    )]
    pub fn purge(&self) -> Result<bool, Error> {
        Ok(self.store.purge()?)
    }

    /// Storage limitation (GDPR Art. 5(1)(e); CFPB §1033.421): deletes the state of consents
    /// that ended (expired, revoked, rejected, or never approved in time) more than `keep` ago,
    /// at most [`MAX_RETENTION_BATCH`] per call, and records which in one entry. The log keeps
    /// its pseudonymous entries about them; subjects' keys stay (their history stays readable)
    /// until erasure.
    ///
    /// # Errors
    /// [`Error::InvalidRetention`] for a negative `keep` (it would delete live consents);
    /// [`Error::Store`]; [`Error::Contention`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.apply_retention", level = "debug", skip_all)
    )]
    pub fn apply_retention(&self, keep: Duration) -> Result<Retention, Error> {
        if keep.is_negative() {
            return Err(Error::InvalidRetention);
        }
        let retention = self.retrying(|| {
            let now = self.now();
            let before = now.checked_sub(keep).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let ended = self
                .store
                .consents_ended_before(before, MAX_RETENTION_BATCH)?;
            if ended.is_empty() {
                return Ok(Retention {
                    consents: Vec::new(),
                    audit_seq: None,
                    purged: true,
                });
            }
            let ids: Vec<ConsentId> = ended.iter().map(|c| c.id().clone()).collect();
            let record = AuditRecord::new(
                now,
                Actor::Broker(self.settings.id.clone()),
                AuditEvent::RetentionApplied {
                    ended_before: before,
                    consents: ids.clone(),
                    attestations: Vec::new(),
                },
            );
            let mut commit = Commit::new(record);
            for consent in &ended {
                commit = commit.precondition(crate::store::Precondition::consent_version(
                    consent.id(),
                    consent.version,
                ));
            }
            let receipt = self.commit(
                commit.change(Change::ForgetConsents {
                    consents: ids.clone(),
                    used_attestations: ended
                        .iter()
                        .filter_map(|c| c.grant().map(|g| g.attestation_id.to_string()))
                        .collect(),
                }),
            )?;
            Ok(Retention {
                consents: ids,
                audit_seq: Some(receipt.audit_seqs.start),
                purged: false,
            })
        })?;
        let mut retention = retention;
        for consent in &retention.consents {
            self.views.forget(consent);
        }
        if retention.audit_seq.is_some() {
            retention.purged = self.store.purge().unwrap_or(false);
        }
        Ok(retention)
    }
}

/// The ids of the attestations the consents' grants rest on (their replay protection), to be
/// forgotten with them.
fn used_attestations(consents: &[crate::consent::Consent]) -> Vec<String> {
    consents
        .iter()
        .filter_map(|c| c.grant().map(|g| g.attestation_id.to_string()))
        .collect()
}

/// A refusal as the log keeps it: an account it names is given as its pseudonym. A malformed
/// attestation's text is the crate's own, never the parser's; it goes through
/// [`unquoted`](crate::privacy::unquoted) all the same, should a quote ever reach it.
pub(crate) fn redact_refusal(refusal: Refusal, key: &SubjectKey) -> Refusal {
    match refusal {
        Refusal::Attestation(AttestationError::AccountNotRequested(account)) => {
            Refusal::Attestation(AttestationError::AccountNotRequested(account_pseudonym(
                key, &account,
            )))
        }
        Refusal::Attestation(AttestationError::Malformed(message)) => Refusal::Attestation(
            AttestationError::Malformed(crate::privacy::unquoted(&message)),
        ),
        other => other,
    }
}

/// Reasons as the log keeps them: an account a reason names is given as its pseudonym.
pub(crate) fn redact_reasons(reasons: &[DenyReason], key: &SubjectKey) -> Vec<DenyReason> {
    reasons
        .iter()
        .map(|reason| match reason {
            DenyReason::AccountNotGranted { account } => DenyReason::AccountNotGranted {
                account: account_pseudonym(key, account),
            },
            other => other.clone(),
        })
        .collect()
}

/// An account's pseudonym, where the log's types hold an account id.
pub(crate) fn account_pseudonym(key: &SubjectKey, account: &AccountId) -> AccountId {
    AccountId::from_pseudonym(&key.account(account))
}

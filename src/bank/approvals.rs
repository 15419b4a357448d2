//! Approvals at the bank: the subject's approval checked against the bank's policy and devices,
//! recorded in the ledger and journal before its attestation leaves the bank; revocations at the
//! bank.

use time::OffsetDateTime;

use super::{Bank, BankError};
use crate::attestation::ApprovalStatement;
use crate::audit::{AuditEvent, Revocation};
use crate::consent::{RevocationReason, Revoker};
use crate::ids::{ConsentId, SubjectId};
use crate::instruction::Instruction;
use crate::policy::HolderPolicy;
use crate::privacy::Keyed;
use crate::store::{
    AttestationRecord, BankRevocation, Change, Commit, LedgerRead, Precondition, Store,
};

impl<S: Store + LedgerRead> Bank<S> {
    /// The subject approved at the bank: `statement.subject` is the customer the bank
    /// authenticated (the bank's own id); the attestation names them by the pairwise identifier
    /// the bank gave `statement.platform` ([`Bank::link_subject`]), which the platform's consent
    /// request must name too (the broker checks). Checks the approval against the bank's current policy,
    /// records it in the ledger and the journal (replacing an earlier approval of the same
    /// consent, for a re-authorisation), and only then returns the signed attestation for the
    /// broker. What the ledger records is what the gate will admit, whatever the broker is told.
    ///
    /// # Errors
    /// [`BankError::NoPolicy`]; [`BankError::OutsidePolicy`]; [`BankError::UnknownDevice`] for a
    /// device key that is not a live key of the subject's; [`BankError::NoDevice`];
    /// [`BankError::Store`] (then no attestation exists); [`BankError::Attestation`];
    /// [`BankError::NotLinked`] when the customer never linked the platform.
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.attest", level = "debug", skip_all)
    )]
    pub fn attest(&self, statement: &ApprovalStatement) -> Result<String, BankError> {
        self.retrying(|| {
            let now = self.now();
            let customer = &statement.subject;
            // The key first, then the link: a link implies a key (they are made together), so
            // an erasure between the two reads leaves no link to find, and one after both fails
            // the commit's check that the key is unchanged.
            let keyed =
                Keyed::read_existing(&self.ledger, customer)?.ok_or(BankError::NotLinked)?;
            let link = self
                .ledger
                .link_of(customer, &statement.platform)?
                .ok_or(BankError::NotLinked)?;
            // The journal names the customer by a pseudonym of this platform's relationship.
            let scoped = keyed.key.for_platform(&statement.platform);
            let policy = self.policy()?.ok_or(BankError::NoPolicy)?.policy;
            check_within(statement, &policy, now)?;
            let earlier: Vec<AttestationRecord> = self
                .ledger
                .attestations_of_consent(&statement.consent)?
                .into_iter()
                .filter(|a| a.superseded_by.is_none())
                .collect();
            // A consent id is the platform's: one already approved by another subject, or for
            // another platform, is not this approval's to replace.
            if earlier
                .iter()
                .any(|a| a.subject != statement.subject || a.platform != statement.platform)
            {
                return Err(BankError::ConsentOfAnother(statement.consent.clone()));
            }
            let live = self.check_devices(&statement.subject, &statement.devices)?;
            let all_unsealed = statement.scopes.iter().all(|scope| {
                statement
                    .purposes
                    .iter()
                    .all(|purpose| statement.plaintext.contains(scope, purpose))
            });
            if statement.devices.is_empty() && !all_unsealed {
                return Err(BankError::NoDevice);
            }
            let wire = ApprovalStatement {
                subject: link.pairwise.clone(),
                ..statement.clone()
            };
            let (signed, id) =
                self.signer()
                    .sign_identified(&wire, &self.broker, now, self.random.as_ref())?;
            let record = AttestationRecord {
                id: id.clone(),
                consent: statement.consent.clone(),
                subject: statement.subject.clone(),
                platform: statement.platform.clone(),
                broker: self.broker.clone(),
                scopes: statement.scopes,
                purposes: statement.purposes,
                accounts: statement.accounts.clone(),
                unattended_daily_limit: statement.unattended_daily_limit,
                signed_at: now,
                expires_at: statement.consent_expires_at,
                revoked: None,
                superseded_by: None,
                devices: statement.devices.clone(),
                plaintext: statement.plaintext,
                pairwise: Some(link.pairwise.clone()),
                version: 1,
            };
            let entry = self.record(
                self.me(),
                AuditEvent::AttestationSigned {
                    attestation: id.clone(),
                    consent: statement.consent.clone(),
                    subject: scoped.subject(customer),
                    platform: statement.platform.clone(),
                    broker: self.broker.clone(),
                    scopes: statement.scopes,
                    purposes: statement.purposes,
                    accounts: statement
                        .accounts
                        .iter()
                        .map(|a| scoped.account(a))
                        .collect(),
                    expires_at: statement.consent_expires_at,
                    unattended_daily_limit: statement.unattended_daily_limit,
                    devices: statement.devices.iter().map(|d| scoped.device(d)).collect(),
                    plaintext: statement.plaintext,
                    supersedes: earlier.last().map(|a| a.id.clone()),
                    attestation_digest: Some(crate::privacy::commitment(signed.as_bytes())),
                },
            );
            // Two approvals of one consent at once: the second to commit finds the first live and
            // retries, replacing it.
            // A device key revoked meanwhile: the commit fails, and the retry refuses it.
            let mut commit = keyed
                .store_in(Commit::new(entry))
                .precondition(Precondition::LiveAttestations {
                    consent: statement.consent.clone(),
                    ids: earlier.iter().map(|a| a.id.clone()).collect(),
                })
                .precondition(Precondition::LiveDeviceKeys {
                    subject: statement.subject.clone(),
                    thumbprints: live,
                });
            for old in earlier {
                commit = commit
                    .precondition(Precondition::attestation_version(&old.id, old.version))
                    .change(Change::UpdateAttestation {
                        record: AttestationRecord {
                            superseded_by: Some(id.clone()),
                            version: old.version.saturating_add(1),
                            ..old
                        },
                    });
            }
            commit = commit.change(Change::RecordAttestation { record });
            self.ledger.commit(commit)?;
            Ok(signed)
        })
    }

    /// A revocation at the bank: by the subject there (authenticated by the bank), or by the
    /// bank. Records it against `subject`'s live approval of the consent in the ledger and the
    /// journal (from then on the gate refuses the consent's tokens), and returns the signed
    /// instruction that tells the broker.
    ///
    /// # Errors
    /// [`BankError::NotTheBanksRevocation`] for `by` [`Revoker::Platform`];
    /// [`BankError::NothingToRevoke`] when `subject` has no live approval of the consent;
    /// [`BankError::Store`]; [`BankError::Instruction`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.revoke", level = "debug", skip_all)
    )]
    pub fn revoke(
        &self,
        subject: &SubjectId,
        consent: &ConsentId,
        by: Revoker,
        reason: RevocationReason,
    ) -> Result<String, BankError> {
        if by == Revoker::Platform {
            return Err(BankError::NotTheBanksRevocation);
        }
        self.retrying(|| {
            let now = self.now();
            let live = self
                .ledger
                .attestations_of_consent(consent)?
                .into_iter()
                .rfind(|a| {
                    &a.subject == subject && a.superseded_by.is_none() && a.revoked.is_none()
                })
                .ok_or_else(|| BankError::NothingToRevoke(consent.clone()))?;
            let instruction = self.sign_instruction(&Instruction::Revoke {
                consent: consent.clone(),
                by,
                reason,
            })?;
            let keyed = self.key_of(&live.subject)?;
            let entry = self.record(
                self.me(),
                AuditEvent::RevokedAtBank {
                    attestation: live.id.clone(),
                    consent: consent.clone(),
                    subject: keyed
                        .key
                        .for_platform(&live.platform)
                        .subject(&live.subject),
                    revocation: Revocation { by, reason },
                },
            );
            let version = live.version;
            let revoked = AttestationRecord {
                revoked: Some(BankRevocation {
                    by,
                    reason,
                    at: now,
                }),
                version: version.saturating_add(1),
                ..live
            };
            self.ledger.commit(
                keyed
                    .store_in(Commit::new(entry))
                    .precondition(Precondition::attestation_version(&revoked.id, version))
                    .change(Change::UpdateAttestation { record: revoked }),
            )?;
            Ok(instruction)
        })
    }

    /// The instruction that tells the broker of a revocation at the bank, signed again: for
    /// one whose first instruction ([`Bank::revoke`]'s) never reached the broker (an
    /// instruction is valid for [`crate::INSTRUCTION_LIFETIME`]). It names what
    /// the ledger recorded (who revoked, and why) for `subject`'s latest approval of the
    /// consent, which the bank revoked; the journal already holds the revocation, so nothing
    /// is recorded. Applying it again at the broker changes nothing.
    ///
    /// # Errors
    /// [`BankError::NothingToRevoke`] when the bank revoked no approval of `subject`'s for the
    /// consent (none, or the latest is live, expired or superseded); [`BankError::Store`];
    /// [`BankError::Instruction`].
    pub fn revocation_instruction(
        &self,
        subject: &SubjectId,
        consent: &ConsentId,
    ) -> Result<String, BankError> {
        let revoked = self
            .ledger
            .attestations_of_consent(consent)?
            .into_iter()
            .rfind(|a| &a.subject == subject && a.superseded_by.is_none())
            .and_then(|latest| latest.revoked)
            .ok_or_else(|| BankError::NothingToRevoke(consent.clone()))?;
        self.sign_instruction(&Instruction::Revoke {
            consent: consent.clone(),
            by: revoked.by,
            reason: revoked.reason,
        })
    }
}

/// Whether the approval stays within the bank's policy.
fn check_within(
    statement: &ApprovalStatement,
    policy: &HolderPolicy,
    now: OffsetDateTime,
) -> Result<(), BankError> {
    let outside = |why: String| Err(BankError::OutsidePolicy(why));
    if let Some(scope) = statement
        .scopes
        .iter()
        .find(|s| !policy.enabled_scopes.contains(*s))
    {
        return outside(format!("the bank does not share {scope}"));
    }
    if statement.unattended_daily_limit > policy.unattended_daily_limit {
        return outside(format!(
            "{} unattended accesses a day, the bank allows {}",
            statement.unattended_daily_limit, policy.unattended_daily_limit
        ));
    }
    if statement.consent_expires_at > now + policy.effective_max_duration() {
        return outside("longer than the bank's maximum consent duration".into());
    }
    if statement.devices.len() > crate::MAX_ENVELOPES {
        return outside(format!(
            "more than {} devices to seal to",
            crate::MAX_ENVELOPES
        ));
    }
    if let Some((scope, purpose)) = statement
        .plaintext
        .iter()
        .find(|(scope, purpose)| !policy.plaintext.contains(*scope, *purpose))
    {
        return outside(format!("the bank seals {scope} for {purpose}"));
    }
    Ok(())
}

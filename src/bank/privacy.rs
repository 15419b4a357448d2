//! The bank's side of privacy: pairwise subject identifiers, its customers' keys, erasure and
//! retention of its ledger (see [`crate::privacy`] and `docs/PRIVACY.md`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::{Duration, OffsetDateTime};

use super::{Bank, BankError};
use crate::audit::{AuditEvent, Revocation};
use crate::consent::{RevocationReason, Revoker};
use crate::ids::{PlatformId, Pseudonym, SubjectId};
use crate::instruction::Instruction;
use crate::privacy::Keyed;
use crate::store::{Change, Commit, LedgerRead, Precondition, Store, SubjectLink};

/// The prefix of the pairwise identifiers a bank gives platforms.
pub const PAIRWISE_PREFIX: &str = "sub_";

/// At most this many approvals are deleted per retention call.
pub const MAX_BANK_RETENTION_BATCH: u32 = 500;

/// What erasing a customer at the bank did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BankErasure {
    /// The pseudonym the customer had in the journal (it links to nobody now).
    pub pseudonym: Pseudonym,
    /// The approvals whose records were deleted.
    pub attestations: Vec<String>,
    /// For each approval that was still live: the bank's signed instruction revoking its
    /// consent (reason `erasure`), for the broker ([`crate::Broker::apply_holder_instruction`]),
    /// so that the platform's consents end too. Journalled (`revoked_at_bank`) in the same
    /// commit as the erasure. The broker refuses one whose consent it ended already (revoked on
    /// the platform, or expired there) as not live: nothing is left to end then.
    pub instructions: Vec<String>,
    /// The journal entry that records the erasure.
    pub journal_seq: u64,
    /// Whether the ledger also removed the deleted rows' bytes from its files.
    pub purged: bool,
}

impl<S: Store + LedgerRead> Bank<S> {
    /// The customer's key, made now if it has none (see [`Keyed`]).
    pub(super) fn key_of(&self, customer: &SubjectId) -> Result<Keyed, BankError> {
        Ok(Keyed::read_or_make(
            &self.ledger,
            customer,
            self.random.as_ref(),
            self.now(),
        )?)
    }

    /// The identifier `platform` knows `customer` by: made (random, 128 bits) the first time
    /// the customer links the platform in the bank's authenticated session, the same after.
    /// The platform never learns the bank's customer id, two platforms cannot match their
    /// users through it, and the gate maps it back from the ledger. The journal records the
    /// link under the customer's pseudonym; neither identifier is written there.
    ///
    /// # Errors
    /// [`BankError::Store`]; [`BankError::Key`] when no randomness is available.
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.link_subject", level = "debug", skip_all)
    )]
    pub fn link_subject(
        &self,
        customer: &SubjectId,
        platform: &PlatformId,
    ) -> Result<SubjectId, BankError> {
        self.retrying(|| {
            if let Some(link) = self.ledger.link_of(customer, platform)? {
                return Ok(link.pairwise);
            }
            let mut bytes = [0u8; 16];
            self.random
                .fill(&mut bytes)
                .map_err(|_| BankError::Key(crate::keys::KeyError::RandomnessUnavailable))?;
            let pairwise = SubjectId::new(format!(
                "{PAIRWISE_PREFIX}{}",
                URL_SAFE_NO_PAD.encode(bytes)
            ))
            .map_err(|_| BankError::Key(crate::keys::KeyError::RandomnessUnavailable))?;
            self.record_link(customer, platform, &pairwise)
        })
    }

    /// Links `customer` to `platform` under an identifier the platform already holds (a
    /// relationship from before pairwise identifiers, or one another system set up). The
    /// identifier must not be the customer id itself (that would show it to the platform), nor
    /// another customer's id, nor of the form [`Bank::link_subject`] makes, and must not name
    /// anyone else already. Prefer [`Bank::link_subject`], whose identifiers are random.
    ///
    /// # Errors
    /// [`BankError::LinkTaken`] when the customer has another identifier for the platform, or
    /// the identifier is taken or is the customer id; [`BankError::Store`].
    pub fn link_subject_as(
        &self,
        customer: &SubjectId,
        platform: &PlatformId,
        pairwise: &SubjectId,
    ) -> Result<(), BankError> {
        // Not the customer id (the platform would learn it), not an identifier of the form this
        // bank makes (a later `link_subject` could draw it), not anyone the bank knows as a
        // customer (two people would share one subject at the broker).
        let known_customer = |id: &SubjectId| -> Result<bool, BankError> {
            Ok(self.ledger.subject_key(id)?.is_some()
                || !self.ledger.attestations_of_subject(id)?.is_empty()
                || !self.ledger.device_keys(id)?.is_empty())
        };
        if pairwise == customer
            || pairwise.as_str().starts_with(PAIRWISE_PREFIX)
            || known_customer(pairwise)?
        {
            return Err(BankError::LinkTaken);
        }
        self.retrying(|| {
            if let Some(link) = self.ledger.link_of(customer, platform)? {
                return if &link.pairwise == pairwise {
                    Ok(())
                } else {
                    Err(BankError::LinkTaken)
                };
            }
            if self.ledger.subject_link(pairwise)?.is_some() {
                return Err(BankError::LinkTaken);
            }
            self.record_link(customer, platform, pairwise).map(drop)
        })
    }

    fn record_link(
        &self,
        customer: &SubjectId,
        platform: &PlatformId,
        pairwise: &SubjectId,
    ) -> Result<SubjectId, BankError> {
        {
            let pairwise = pairwise.clone();
            let keyed = self.key_of(customer)?;
            let entry = self.record(
                self.me(),
                AuditEvent::SubjectLinked {
                    subject: keyed.key.for_platform(platform).subject(customer),
                    platform: platform.clone(),
                },
            );
            let link = SubjectLink {
                pairwise: pairwise.clone(),
                customer: customer.clone(),
                platform: platform.clone(),
                linked_at: self.now(),
            };
            match self.ledger.commit(
                keyed
                    .store_in(Commit::new(entry))
                    .change(Change::LinkSubject { link }),
            ) {
                Ok(_) => Ok(pairwise),
                // Linked meanwhile by another request: read theirs on the retry.
                Err(crate::store::StoreError::Duplicate { .. }) => {
                    Err(BankError::Store(crate::store::StoreError::Conflict))
                }
                Err(error) => Err(error.into()),
            }
        }
    }

    /// Removes from the ledger's files what deleted rows left behind (see [`Store::purge`]):
    /// `true` when done.
    ///
    /// # Errors
    /// [`BankError::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.purge", level = "debug", skip_all)
    )]
    pub fn purge(&self) -> Result<bool, BankError> {
        Ok(self.ledger.purge()?)
    }

    /// The customer's pseudonym in the journal's entries that belong to no platform (device
    /// keys, erasure), while its key exists. Entries about one platform's relationship use
    /// [`Bank::pseudonyms_of`]'s others.
    ///
    /// # Errors
    /// [`BankError::Store`].
    pub fn pseudonym_of(&self, customer: &SubjectId) -> Result<Option<Pseudonym>, BankError> {
        Ok(self
            .ledger
            .subject_key(customer)?
            .map(|key| key.subject(customer)))
    }

    /// Every pseudonym the journal may name the customer by, while its key exists: the one of
    /// [`Bank::pseudonym_of`], and one per platform the customer linked or approved.
    ///
    /// # Errors
    /// [`BankError::Store`].
    pub fn pseudonyms_of(&self, customer: &SubjectId) -> Result<Vec<Pseudonym>, BankError> {
        let Some(key) = self.ledger.subject_key(customer)? else {
            return Ok(Vec::new());
        };
        let mut platforms: Vec<PlatformId> = self
            .ledger
            .links_of_customer(customer)?
            .into_iter()
            .map(|link| link.platform)
            .chain(
                self.ledger
                    .attestations_of_subject(customer)?
                    .into_iter()
                    .map(|a| a.platform),
            )
            .collect();
        platforms.sort();
        platforms.dedup();
        let mut pseudonyms = vec![key.subject(customer)];
        pseudonyms.extend(
            platforms
                .iter()
                .map(|platform| key.for_platform(platform).subject(customer)),
        );
        Ok(pseudonyms)
    }

    /// Erases a customer at the bank: in one commit, revokes its live approvals (journalled,
    /// with signed instructions for the broker in the answer), deletes its key, its approvals
    /// with their served counts, its device keys and its pairwise links, and records the
    /// erasure under the pseudonym it had. The gate refuses the customer's tokens from then on
    /// (it no longer knows their attestations). The journal is untouched and still verifies.
    /// Then purges the ledger's files ([`Store::purge`]).
    ///
    /// `None` when the bank holds nothing about the customer.
    ///
    /// # Errors
    /// [`BankError::Store`] (then nothing was erased); [`BankError::Contention`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.erase_customer", level = "debug", skip_all)
    )]
    pub fn erase_customer(&self, customer: &SubjectId) -> Result<Option<BankErasure>, BankError> {
        let erased = self.retrying(|| {
            let approvals = self.ledger.attestations_of_subject(customer)?;
            let key = self.ledger.subject_key(customer)?;
            let devices = self.ledger.device_keys(customer)?;
            let links = self.ledger.links_of_customer(customer)?;
            if key.is_none() && approvals.is_empty() && devices.is_empty() && links.is_empty() {
                return Ok(None);
            }
            let keyed = self.key_of(customer)?;
            let pseudonym = keyed.key.subject(customer);
            let ids: Vec<String> = approvals.iter().map(|a| a.id.clone()).collect();
            let now = self.now();
            let mut records = Vec::new();
            let mut instructions = Vec::new();
            let (by, reason) = (Revoker::Subject, RevocationReason::Erasure);
            for live in approvals
                .iter()
                .filter(|a| a.superseded_by.is_none() && a.revoked.is_none() && now < a.expires_at)
            {
                // The platforms are told of an ordinary withdrawal: each broker logs the
                // instruction in clear, and an `erasure` in two platforms' logs would tie the
                // customer's pseudonyms there together (the bank's own journal keeps the
                // reason).
                instructions.push(self.sign_instruction(&Instruction::Revoke {
                    consent: live.consent.clone(),
                    by,
                    reason: RevocationReason::SubjectWithdrew,
                })?);
                records.push(self.record(
                    self.me(),
                    AuditEvent::RevokedAtBank {
                        attestation: live.id.clone(),
                        consent: live.consent.clone(),
                        subject: keyed.key.for_platform(&live.platform).subject(customer),
                        revocation: Revocation { by, reason },
                    },
                ));
            }
            // The erasure is recorded under the customer's own pseudonym, without the approval
            // ids: listing them would tie the customer's relationships with several platforms
            // together for good.
            let erased = self.record(
                self.me(),
                AuditEvent::SubjectErased {
                    subject: pseudonym.clone(),
                    consents: Vec::new(),
                },
            );
            let commit = Commit::records_then(records, erased);
            let receipt = self.ledger.commit(commit.change(Change::EraseSubject {
                subject: customer.clone(),
                consents: Vec::new(),
                attestations: ids.clone(),
                used_attestations: Vec::new(),
            }))?;
            Ok(Some(BankErasure {
                pseudonym,
                attestations: ids,
                instructions,
                journal_seq: receipt.audit_seqs.end.saturating_sub(1),
                purged: false,
            }))
        })?;
        let Some(mut erasure) = erased else {
            return Ok(None);
        };
        // The erasure is committed: a failed purge is reported as not done, not as a failure.
        erasure.purged = self.ledger.purge().unwrap_or(false);
        Ok(Some(erasure))
    }

    /// Deletes the ledger records of approvals that ended (expired or revoked) more than
    /// `keep` ago, with their served counts, at most [`MAX_BANK_RETENTION_BATCH`] per call, and
    /// records which in one journal entry, then purges the ledger's files (call
    /// [`Bank::purge`] to learn whether that finished). The ids it returns; empty when nothing
    /// was due.
    ///
    /// # Errors
    /// [`BankError::InvalidRetention`] for a negative `keep`; [`BankError::Store`];
    /// [`BankError::Contention`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.apply_retention", level = "debug", skip_all)
    )]
    pub fn apply_retention(&self, keep: Duration) -> Result<Vec<String>, BankError> {
        if keep.is_negative() {
            return Err(BankError::InvalidRetention);
        }
        let deleted = self.retrying(|| {
            let now = self.now();
            let before = now.checked_sub(keep).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            let ended = self
                .ledger
                .attestations_ended_before(before, MAX_BANK_RETENTION_BATCH)?;
            if ended.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<String> = ended.iter().map(|a| a.id.clone()).collect();
            let entry = self.record(
                self.me(),
                AuditEvent::RetentionApplied {
                    ended_before: before,
                    consents: Vec::new(),
                    attestations: ids.clone(),
                },
            );
            let mut commit = Commit::new(entry);
            for record in &ended {
                commit = commit.precondition(Precondition::attestation_version(
                    &record.id,
                    record.version,
                ));
            }
            self.ledger
                .commit(commit.change(Change::ForgetAttestations { ids: ids.clone() }))?;
            Ok(ids)
        })?;
        if !deleted.is_empty() {
            // Committed: a failed purge is for `Bank::purge` to retry.
            let _ = self.ledger.purge();
        }
        Ok(deleted)
    }
}

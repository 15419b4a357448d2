//! A holder's signed instructions: its policy, its attestation keys, and revocations made at the
//! bank reach the broker only as statements the bank signed (see [`crate::Instruction`]). Each is
//! verified against the keys the holder registered, applied once, and kept in the log entry as
//! the evidence, so the log never says "the bank did it" on the embedder's word.

use super::Broker;
use super::registration::thumbprints;
use crate::audit::{Actor, AuditEvent, AuditRecord, Revocation};
use crate::consent::Revoker;
use crate::error::Error;
use crate::instruction::{self, Instruction, InstructionError};
use crate::store::{Change, Commit, Store};

impl<S: Store> Broker<S> {
    /// Verifies and applies a holder's signed instruction (compact JWS): a policy change, a
    /// rotation of its attestation keys (signed by a key registered before it; approvals signed
    /// by the keys it replaces stay verifiable), or a revocation made at the bank. One audited
    /// commit, whose entry carries the instruction itself as evidence. Returns what was applied.
    ///
    /// # Errors
    /// [`Error::Instruction`] for an instruction that fails verification, was applied before, or
    /// cannot be applied; [`Error::Consent`] for a revocation of a consent that is not live;
    /// [`Error::UnknownConsent`]; [`Error::Store`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.apply_holder_instruction", level = "debug", skip_all)
    )]
    pub fn apply_holder_instruction(&self, signed: &str) -> Result<Instruction, Error> {
        let holder_id = instruction::claimed_issuer(signed)?;
        self.retrying(|| {
            let now = self.now();
            let mut holder = self
                .store
                .holder(&holder_id)?
                .ok_or(InstructionError::UnknownHolder)?;
            let verified = instruction::verify(
                signed,
                &holder_id,
                &holder.attestation_keys,
                &self.settings.id,
                now,
            )?;
            let used = format!("instruction:{}", verified.jti);
            if self.store.attestation_used(&used)? {
                return Err(InstructionError::Replayed.into());
            }
            let evidence = Some(signed.to_owned());
            let inapplicable = |why: &str| Error::from(InstructionError::Inapplicable(why.into()));
            let mut key_insert = None;
            let (event, change) = match &verified.instruction {
                Instruction::SetPolicy { policy } => {
                    policy.validate()?;
                    holder.policy = policy.clone();
                    holder.version = holder.version.saturating_add(1);
                    (
                        AuditEvent::HolderPolicyChanged {
                            policy: Some(policy.clone()),
                            instruction: evidence,
                        },
                        Change::UpdateHolder { holder },
                    )
                }
                Instruction::SetKeys { keys } => {
                    if keys.is_empty() {
                        return Err(inapplicable("a rotation must name at least one key"));
                    }
                    let replaced: Vec<_> = holder
                        .attestation_keys
                        .iter()
                        .filter(|old| !keys.contains(old))
                        .copied()
                        .collect();
                    holder.retired_attestation_keys.extend(replaced);
                    holder.attestation_keys = keys.clone();
                    holder.version = holder.version.saturating_add(1);
                    (
                        AuditEvent::HolderKeysChanged {
                            attestation_keys: thumbprints(keys),
                            instruction: evidence,
                        },
                        Change::UpdateHolder { holder },
                    )
                }
                Instruction::Revoke {
                    consent,
                    by,
                    reason,
                } => {
                    if *by == Revoker::Platform {
                        return Err(inapplicable(
                            "the platform's revocations do not go through the bank",
                        ));
                    }
                    let current = self.load(consent)?;
                    if current.request.holder != holder_id {
                        return Err(inapplicable("the consent is another holder's"));
                    }
                    let next = current.revoke(*by, *reason, now)?;
                    let keyed = self.key_of(&current.request.subject)?;
                    key_insert = keyed.insert.clone();
                    (
                        AuditEvent::ConsentRevoked {
                            consent: consent.clone(),
                            subject: keyed.key.subject(&current.request.subject),
                            revocation: Revocation {
                                by: *by,
                                reason: *reason,
                            },
                            instruction: evidence,
                            holder: Some(holder_id.clone()),
                        },
                        Change::UpdateConsent { consent: next },
                    )
                }
            };
            let record = AuditRecord::new(now, Actor::Holder(holder_id.clone()), event);
            let mut commit = Commit::new(record);
            if let Some(insert) = key_insert {
                commit = commit.change(insert);
            }
            self.commit(
                commit
                    .change(Change::UseAttestation {
                        attestation_id: used,
                    })
                    .change(change),
            )?;
            Ok(verified.instruction.clone())
        })
    }
}

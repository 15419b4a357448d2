//! A holder's signed instructions, attacked by the platform that runs the broker: it cannot
//! change the bank's policy or keys or revoke in the bank's name without the bank's signature,
//! cannot replay or redirect a real instruction, and the log keeps the evidence of each real one.

use consent_broker::time::Duration;
use consent_broker::*;
use serde_json::{Value, json};

use crate::support::*;

fn sign(signer: &AttestationSigner, fx: &Fixture, instruction: &Instruction) -> String {
    signer
        .sign_instruction(instruction, fx.broker.id(), fx.broker.now(), &fx.rng)
        .unwrap()
}

fn stricter() -> HolderPolicy {
    HolderPolicy {
        enabled_scopes: ScopeSet::from([Scope::Alerts]),
        ..HolderPolicy::default()
    }
}

fn refused(fx: &Fixture, signed: &str) -> InstructionError {
    let before = (fx.audit_len(), fx.broker.store().holder(&fx.bank).unwrap());
    let error = match fx.broker.apply_holder_instruction(signed) {
        Err(Error::Instruction(error)) => error,
        other => panic!("not refused as an instruction: {other:?}"),
    };
    let after = (fx.audit_len(), fx.broker.store().holder(&fx.bank).unwrap());
    assert_eq!(
        before, after,
        "a refused instruction changes and records nothing"
    );
    error
}

#[test]
fn the_platform_cannot_act_in_the_banks_name() {
    let fx = Fixture::new();
    let granted = fx.granted();
    // No unsigned way: the broker refuses a revocation "by the holder" on the embedder's word.
    assert_eq!(
        fx.broker.revoke(
            granted.id(),
            Revoker::Holder,
            RevocationReason::SuspectedMisuse
        ),
        Err(Error::HolderMustSign)
    );
    // A key of the platform's own, named as the bank.
    let impostor =
        AttestationSigner::new(fx.bank.clone(), SigningKey::generate(&fx.rng).unwrap()).unwrap();
    for instruction in [
        Instruction::SetPolicy { policy: stricter() },
        Instruction::SetKeys {
            keys: vec![impostor.public_key()],
        },
        Instruction::Revoke {
            consent: granted.id().clone(),
            by: Revoker::Holder,
            reason: RevocationReason::SuspectedMisuse,
        },
    ] {
        assert_eq!(
            refused(&fx, &sign(&impostor, &fx, &instruction)),
            InstructionError::UnknownKey
        );
    }
    // A real instruction with its policy edited no longer verifies.
    let real = sign(
        fx.bank_signer(),
        &fx,
        &Instruction::SetPolicy { policy: stricter() },
    );
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    let mut claims: Value = serde_json::from_slice(&unb64(&parts[1])).unwrap();
    claims["instruction"]["policy"]["enabled_scopes"] =
        json!(["balance", "alerts", "transactions"]);
    parts[1] = b64(claims.to_string());
    assert_eq!(
        refused(&fx, &parts.join(".")),
        InstructionError::BadSignature
    );
    assert!(fx.broker.consent(granted.id()).unwrap().status == ConsentStatus::Authorised);
}

#[test]
fn a_real_instruction_applies_once_here_and_only_here_while_fresh() {
    let fx = Fixture::new();
    let signed = sign(
        fx.bank_signer(),
        &fx,
        &Instruction::SetPolicy { policy: stricter() },
    );
    // Addressed to one broker: an instruction for another is refused here.
    let other_id: BrokerId = id("other-broker");
    let for_other = fx
        .bank_signer()
        .sign_instruction(
            &Instruction::SetPolicy { policy: stricter() },
            &other_id,
            fx.broker.now(),
            &fx.rng,
        )
        .unwrap();
    assert_eq!(refused(&fx, &for_other), InstructionError::WrongAudience);

    fx.broker.apply_holder_instruction(&signed).unwrap();
    let entry = fx.last_audit();
    assert_eq!(entry.actor, Actor::Holder(fx.bank.clone()));
    assert!(matches!(
        &entry.event,
        AuditEvent::HolderPolicyChanged { policy: Some(p), instruction: Some(evidence) }
            if *p == stricter() && *evidence == signed
    ));
    assert_eq!(refused(&fx, &signed), InstructionError::Replayed);

    // An instruction that waited too long.
    let late = sign(
        fx.bank_signer(),
        &fx,
        &Instruction::SetPolicy {
            policy: HolderPolicy::default(),
        },
    );
    fx.clock
        .advance(INSTRUCTION_LIFETIME + Duration::minutes(1));
    assert_eq!(refused(&fx, &late), InstructionError::Expired);
}

#[test]
fn instructions_that_cannot_apply_are_refused_whole() {
    let fx = Fixture::new();
    let granted = fx.granted();
    // The platform's own revocations do not go through the bank.
    let by_platform = Instruction::Revoke {
        consent: granted.id().clone(),
        by: Revoker::Platform,
        reason: RevocationReason::NoLongerNeeded,
    };
    assert!(matches!(
        refused(&fx, &sign(fx.bank_signer(), &fx, &by_platform)),
        InstructionError::Inapplicable(_)
    ));
    // Another bank's signature cannot revoke this bank's consent.
    let other_bank = SimulatedBank::new(id("other-bank"), 9);
    other_bank.register(&fx.broker).unwrap();
    let revoke = Instruction::Revoke {
        consent: granted.id().clone(),
        by: Revoker::Holder,
        reason: RevocationReason::SuspectedMisuse,
    };
    let len = fx.audit_len();
    assert!(matches!(
        other_bank.instruct(&fx.broker, &revoke),
        Err(Error::Instruction(InstructionError::Inapplicable(_)))
    ));
    assert_eq!(fx.audit_len(), len);
    // The real bank's revocation applies; the subject's withdrawal at the bank is its own kind.
    fx.kit.bank.instruct(&fx.broker, &revoke).unwrap();
    assert_eq!(
        fx.broker.consent(granted.id()).unwrap().status,
        ConsentStatus::Revoked {
            by: Revoker::Holder,
            reason: RevocationReason::SuspectedMisuse
        }
    );
    let second = fx.granted();
    let at_the_bank = Instruction::Revoke {
        consent: second.id().clone(),
        by: Revoker::Subject,
        reason: RevocationReason::SubjectWithdrew,
    };
    fx.kit.bank.instruct(&fx.broker, &at_the_bank).unwrap();
    assert_eq!(fx.last_audit().actor, Actor::Holder(fx.bank.clone()));
    // Garbage is a typed refusal.
    assert!(matches!(
        fx.broker.apply_holder_instruction("not.a.jws"),
        Err(Error::Instruction(InstructionError::Malformed(_)))
    ));
    assert!(matches!(
        fx.broker.apply_holder_instruction(""),
        Err(Error::Instruction(_))
    ));
}

#[test]
fn a_key_rotation_must_be_signed_by_a_key_registered_before_it() {
    let fx = Fixture::new();
    let next =
        AttestationSigner::new(fx.bank.clone(), SigningKey::generate(&fx.rng).unwrap()).unwrap();
    let rotate = Instruction::SetKeys {
        keys: vec![next.public_key()],
    };
    // Signed by the new key itself: it is not registered, so it proves nothing.
    assert_eq!(
        refused(&fx, &sign(&next, &fx, &rotate)),
        InstructionError::UnknownKey
    );
    fx.kit.bank.instruct(&fx.broker, &rotate).unwrap();
    // From now on the old key signs nothing the broker accepts, instructions included.
    assert_eq!(
        refused(
            &fx,
            &sign(
                fx.bank_signer(),
                &fx,
                &Instruction::SetPolicy { policy: stricter() }
            )
        ),
        InstructionError::UnknownKey
    );
    fx.broker
        .apply_holder_instruction(&sign(
            &next,
            &fx,
            &Instruction::SetPolicy { policy: stricter() },
        ))
        .unwrap();
}

/// The bank rotates its attestation key: the instruction is signed by the old key (the one the
/// broker knows), new approvals are signed by the new one, and an approval signed before the
/// rotation still verifies, from the log, with the key kept as retired.
#[test]
fn a_banks_rotation_keeps_what_the_old_key_signed_verifiable() {
    let kit = TestBroker::memory();
    let bank = consent_broker::testing::TestBank::beside(&kit);
    let before = bank.granted(&kit);
    let old_key = bank.bank.attestation_key();
    let instruction = bank
        .bank
        .rotate_attestation_key(SigningKey::generate(&SystemRandom::new()).unwrap())
        .unwrap();
    kit.broker.apply_holder_instruction(&instruction).unwrap();
    let holder = kit.broker.store().holder(kit.bank.id()).unwrap().unwrap();
    assert_eq!(holder.attestation_keys(), [bank.bank.attestation_key()]);
    assert_eq!(holder.retired_attestation_keys(), [old_key]);
    // The bank's journal records the change with the new key's thumbprint.
    let journal = bank.bank.journal();
    let len = journal.audit_len().unwrap();
    let last = journal.audit_entries(len - 1..len).unwrap().pop().unwrap();
    assert!(matches!(
        last.event,
        AuditEvent::AttestationKeyActivated { key_id, retired_key_id: Some(retired), .. }
            if key_id == bank.bank.attestation_key().thumbprint() && retired == old_key.thumbprint()
    ));
    // New approvals, signed with the new key, are accepted.
    let after = bank.granted(&kit);
    assert_eq!(
        kit.broker.consent(after.id()).unwrap().status,
        ConsentStatus::Authorised
    );
    // The evidence of the first approval, re-checked as an auditor would: at its entry's time,
    // against the keys the holder had then (kept as retired).
    let approval = kit
        .broker
        .consent_history(before.id())
        .unwrap()
        .into_iter()
        .find(|entry| entry.kind() == AuditKind::ConsentApproved)
        .unwrap();
    // The attestation is sealed under the subject's key: the subject (or the broker on their
    // behalf) opens it.
    let attestation = Some(
        kit.broker
            .open_attestation(before.request().subject(), &approval)
            .unwrap(),
    );
    let expected = Expectations {
        broker: kit.broker.id(),
        request: before.request(),
        holder_keys: holder.retired_attestation_keys(),
        latest_expiry: approval.at + before.request().duration(),
    };
    check_attestation(attestation.as_deref().unwrap(), &expected, approval.at).unwrap();
    // The old key signs nothing the broker accepts any more.
    let late = kit
        .bank
        .instruct(&kit.broker, &Instruction::SetPolicy { policy: stricter() });
    assert!(matches!(
        late,
        Err(Error::Instruction(InstructionError::UnknownKey))
    ));
}

/// The bank's keys never change silently either: one key for both uses is refused, a restart
/// with the kept keys writes nothing, and a key its ledger has retired never signs again.
#[test]
fn the_banks_keys_are_recorded_and_a_retired_one_never_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("bank.sqlite");
    let key = |seed: u8| SigningKey::from_seed(&[seed; 32]).unwrap();
    let build = |attestation: u8, journal: u8| {
        Bank::builder(
            id("bank"),
            SqliteStore::open(&ledger).unwrap(),
            BankKeys::new(key(attestation), key(journal)),
            id("broker"),
        )
        .build()
    };
    assert!(matches!(build(1, 1), Err(BankError::SameKeyForTwoUses)));
    let bank = build(1, 2).unwrap();
    let len = bank.journal().audit_len().unwrap();
    assert_eq!(len, 2, "the attestation key and the journal key, recorded");
    drop(bank);
    let again = build(1, 2).unwrap();
    assert_eq!(
        again.journal().audit_len().unwrap(),
        len,
        "nothing new at a restart"
    );
    again.rotate_attestation_key(key(3)).unwrap();
    drop(again);
    assert!(matches!(
        build(1, 2),
        Err(BankError::KeyRetired {
            key_use: KeyUse::Attestation,
            ..
        })
    ));
    let rotated = build(3, 2).unwrap();
    assert_eq!(rotated.attestation_key(), key(3).public_key());
}

//! Keys never change silently, and what changes says what changed: restarts with the same keys,
//! with other keys, with a retired key; registrations and policy and key changes in the log.
//! (What the types forbid outside the crate is proven by the `compile_fail` examples on
//! `Consent`, `Approval`, `Commit`, `Change`, `BrokerBuilder`, `Permit` and `VerifiedAccess`.)

use std::path::Path;
use std::sync::Arc;

use consent_broker::checkpoint::NoteVerifier;
use consent_broker::time::Duration;
use consent_broker::*;

use crate::support::*;

/// A broker on the SQLite file `db` with the keys kept in `keys` (created on first use).
fn restart(db: &Path, keys: &Path, clock: Arc<ManualClock>) -> Broker<SqliteStore> {
    Broker::builder(id("broker"), SqliteStore::open(db).unwrap())
        .clock(clock)
        .keys(BrokerKeys::load_or_create(keys, &SystemRandom::new()).unwrap())
        .build()
        .unwrap()
}

fn kinds(broker: &Broker<SqliteStore>) -> Vec<AuditKind> {
    broker
        .audit_log()
        .unwrap()
        .iter()
        .map(AuditEntry::kind)
        .collect()
}

#[test]
fn a_restart_with_the_kept_keys_writes_nothing_and_the_saved_verifier_key_keeps_verifying() {
    let dir = tempfile::tempdir().unwrap();
    let (db, keys) = (dir.path().join("broker.sqlite"), dir.path().join("keys"));
    std::fs::create_dir(&keys).unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let first = restart(&db, &keys, clock.clone());
    assert_eq!(
        kinds(&first),
        [
            AuditKind::SigningKeyActivated,
            AuditKind::CheckpointKeyActivated
        ]
    );
    let vkey = first.checkpoint_verifier_key();
    let saved = first.checkpoint().unwrap();
    let jwks = first.jwks().unwrap();
    drop(first);

    clock.advance(Duration::days(1));
    let second = restart(&db, &keys, clock);
    assert_eq!(kinds(&second).len(), 2, "nothing recorded at the restart");
    assert_eq!(second.checkpoint_verifier_key(), vkey);
    assert_eq!(second.jwks().unwrap(), jwks);
    let verifier = NoteVerifier::from_vkey(&vkey).unwrap();
    second.assert_log_verifies(&saved.note, &vkey);
    let fresh = second.checkpoint().unwrap();
    consent_broker::checkpoint::verify_checkpoint(&fresh.note, &verifier, None).unwrap();
}

#[test]
fn a_restart_with_other_keys_is_recorded_and_what_was_signed_before_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.sqlite");
    let (old_keys, new_keys) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir(&old_keys).unwrap();
    std::fs::create_dir(&new_keys).unwrap();
    let clock = Arc::new(ManualClock::new(START));
    let first = restart(&db, &old_keys, clock.clone());
    let old_vkey = first.checkpoint_verifier_key();
    let old_checkpoint = first.checkpoint().unwrap();
    let old_token_kid = first.jwks().unwrap().keys[0].kid.clone();
    drop(first);

    clock.advance(Duration::hours(1));
    let second = restart(&db, &new_keys, clock.clone());
    let log = second.audit_log().unwrap();
    let (token_change, checkpoint_change) = (&log[2], &log[3]);
    let new_token_kid = match &token_change.event {
        AuditEvent::SigningKeyActivated {
            key_id,
            public_key: Some(public_key),
            retired_key_id: Some(retired),
        } => {
            assert_eq!(retired, &old_token_kid);
            assert_eq!(&public_key.thumbprint(), key_id);
            key_id.clone()
        }
        other => panic!("not a token key change: {other:?}"),
    };
    let new_vkey = second.checkpoint_verifier_key();
    assert_ne!(new_vkey, old_vkey);
    match &checkpoint_change.event {
        AuditEvent::CheckpointKeyActivated {
            verifier_key,
            retired_key_id: Some(_),
            ..
        } => assert_eq!(
            verifier_key, &new_vkey,
            "the log names the new verifier key"
        ),
        other => panic!("not a checkpoint key change: {other:?}"),
    }
    // What the auditor kept still verifies the log; the new key signs from now on.
    second.assert_log_verifies(&old_checkpoint.note, &old_vkey);
    let new_checkpoint = second.checkpoint().unwrap();
    second.assert_log_verifies(&new_checkpoint.note, &new_vkey);
    // The old token key verifies for the longest token lifetime and the grace, then drops out.
    let published = |broker: &Broker<SqliteStore>| -> Vec<String> {
        broker
            .jwks()
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.kid)
            .collect()
    };
    assert_eq!(
        published(&second),
        [old_token_kid.clone(), new_token_kid.clone()]
    );
    clock.advance(MAX_TOKEN_LIFETIME + RETIRED_KEY_GRACE);
    assert_eq!(published(&second), [new_token_kid]);
    drop(second);

    // A retired key never signs again: the broker does not start with it, and records nothing.
    let len = SqliteStore::open(&db).unwrap().audit_len().unwrap();
    let refused = Broker::builder(id("broker"), SqliteStore::open(&db).unwrap())
        .clock(clock)
        .keys(BrokerKeys::load_or_create(&old_keys, &SystemRandom::new()).unwrap())
        .build();
    assert!(
        matches!(
            &refused,
            Err(Error::KeyRetired {
                key_use: KeyUse::Token,
                kid,
            }) if kid == &old_token_kid
        ),
        "{refused:?}"
    );
    assert_eq!(SqliteStore::open(&db).unwrap().audit_len().unwrap(), len);
}

#[test]
fn one_key_for_tokens_and_checkpoints_is_refused() {
    let key = || SigningKey::from_seed(&[9; 32]).unwrap();
    let built = Broker::builder(id("broker"), MemoryStore::new())
        .keys(BrokerKeys::new(key(), key()))
        .build();
    assert!(matches!(built, Err(Error::SameKeyForTwoUses)));
    // Nor can the token key be rotated to the checkpoint key.
    let fx = Fixture::new();
    let checkpoint = SigningKey::from_pkcs8_der(keys().checkpoint().to_pkcs8_der()).unwrap();
    assert_eq!(
        fx.broker.rotate_signing_key(checkpoint),
        Err(Error::SameKeyForTwoUses)
    );
}

#[test]
fn registrations_and_changes_record_what_was_registered_and_what_changed() {
    let fx = Fixture::new();
    let registered = fx
        .audit()
        .into_iter()
        .find(|e| e.kind() == AuditKind::HolderRegistered)
        .unwrap();
    assert_eq!(
        registered.event,
        AuditEvent::HolderRegistered {
            attestation_keys: vec![fx.bank_signer().public_key().thumbprint()],
            policy: Some(HolderPolicy::default()),
        }
    );
    let platform = fx
        .audit()
        .into_iter()
        .find(|e| e.kind() == AuditKind::PlatformRegistered)
        .unwrap();
    assert_eq!(
        platform.event,
        AuditEvent::PlatformRegistered {
            purposes: Some(PurposeSet::from(Purpose::ALL))
        }
    );

    let stricter = HolderPolicy {
        unattended_daily_limit: 1,
        ..HolderPolicy::default()
    };
    fx.broker
        .set_holder_policy(&fx.bank, stricter.clone())
        .unwrap();
    assert_eq!(
        fx.last_audit().event,
        AuditEvent::HolderPolicyChanged {
            policy: Some(stricter)
        }
    );

    // The bank rotates its attestation key: approvals signed by the old one are refused.
    let request = fx.request();
    let old_token = fx.attest(&fx.full_statement(&request));
    let rotated = AttestationSigner::new(
        fx.bank.clone(),
        SigningKey::generate(&SystemRandom::new()).unwrap(),
    )
    .unwrap();
    fx.broker
        .set_holder_keys(&fx.bank, vec![rotated.public_key()])
        .unwrap();
    assert_eq!(
        fx.last_audit().event,
        AuditEvent::HolderKeysChanged {
            attestation_keys: vec![rotated.public_key().thumbprint()]
        }
    );
    assert_eq!(
        fx.broker.approve(request.id(), &old_token),
        Err(Error::Attestation(AttestationError::UnknownKey {
            holder: fx.bank.clone()
        }))
    );
    let new_token = rotated
        .sign(
            &fx.full_statement(&request),
            fx.broker.id(),
            fx.broker.now(),
            &SystemRandom::new(),
        )
        .unwrap();
    fx.broker.approve(request.id(), &new_token).unwrap();
    assert_eq!(
        fx.broker.set_holder_keys(&fx.bank, Vec::new()),
        Err(Error::NoAttestationKeys(fx.bank.clone()))
    );
}

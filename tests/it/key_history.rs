//! Checkpoint key rotation recorded in the log itself: an auditor who trusts the first key
//! follows each rotation the old key endorsed, a retired key's signature on a later checkpoint
//! does not count, and a key change the old key did not endorse stops the history.

use consent_broker::checkpoint::{Checkpoint, NoteSigner, NoteVerifier};
use consent_broker::key_history::{KeyHistory, KeyHistoryError};
use consent_broker::testing::TestBroker;
use consent_broker::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(&[seed; 32]).unwrap()
}

/// The kit's broker keys (they come from a public seed).
fn kit_keys() -> BrokerKeys {
    BrokerKeys::ephemeral(&consent_broker::testing::SeededRandom::new(1)).unwrap()
}

fn decide_some(kit: &TestBroker<std::sync::Arc<MemoryStore>>, consent: &Consent) {
    for _ in 0..3 {
        kit.broker
            .authorise_access(&kit.access(consent.id()))
            .unwrap();
    }
}

#[test]
fn an_auditor_follows_endorsed_rotations_and_nothing_else() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let kit = TestBroker::on(store.clone());
    let origin = kit.broker.log_origin().to_owned();
    let first = NoteVerifier::from_vkey(&kit.broker.checkpoint_verifier_key()).unwrap();
    let consent = kit.granted();
    decide_some(&kit, &consent);
    let before = kit.broker.checkpoint().unwrap();

    kit.broker.rotate_checkpoint_key(key(40)).unwrap();
    let rotated_at = store.audit_len().unwrap() - 1;
    decide_some(&kit, &consent);
    let after = kit.broker.checkpoint().unwrap();
    let second = NoteVerifier::from_vkey(&kit.broker.checkpoint_verifier_key()).unwrap();
    assert_ne!(first, second);

    let history = KeyHistory::from_log(&store, &origin, first.clone()).unwrap();
    let keys: Vec<(u64, String)> = history
        .keys()
        .map(|(from, k)| (from, k.to_vkey()))
        .collect();
    assert_eq!(
        keys,
        [(0, first.to_vkey()), (rotated_at + 1, second.to_vkey())]
    );
    assert_eq!(
        history.verify_checkpoint(&before.note).unwrap().size,
        before.size
    );
    assert_eq!(
        history.verify_checkpoint(&after.note).unwrap().size,
        after.size
    );
    // The old key alone does not verify the new checkpoint.
    assert!(consent_broker::checkpoint::verify_checkpoint(&after.note, &first, None).is_err());
    // The retired key signing a later size (stolen, or kept by a dishonest operator): refused.
    let old_signer = NoteSigner::new(&origin, kit_keys().checkpoint().to_pkcs8_der()).unwrap();
    let body = Checkpoint::parse_body(&after.note[..after.note.find("\n\n").unwrap() + 1]).unwrap();
    let by_retired = old_signer.sign(&body.to_body().unwrap()).unwrap();
    assert!(history.verify_checkpoint(&by_retired).is_err());
    // Rotating again, and again: followed.
    kit.broker.rotate_checkpoint_key(key(41)).unwrap();
    kit.broker.rotate_checkpoint_key(key(42)).unwrap();
    let latest = kit.broker.checkpoint().unwrap();
    let history = KeyHistory::from_log(&store, &origin, first.clone()).unwrap();
    assert_eq!(history.keys().count(), 4);
    history.verify_checkpoint(&latest.note).unwrap();
    // The token key cannot become the checkpoint key.
    assert!(matches!(
        kit.broker.rotate_checkpoint_key(
            SigningKey::from_pkcs8_der(kit_keys().token().to_pkcs8_der()).unwrap()
        ),
        Err(Error::SameKeyForTwoUses)
    ));
}

#[test]
fn a_key_change_the_old_key_did_not_endorse_stops_the_history() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let kit = TestBroker::on(store.clone());
    let origin = kit.broker.log_origin().to_owned();
    let first = NoteVerifier::from_vkey(&kit.broker.checkpoint_verifier_key()).unwrap();
    // A broker restarted on the same store with another checkpoint key: the store publishes it,
    // but the old key never endorsed it.
    let restarted = Broker::builder(kit.broker.id().clone(), store.clone())
        .keys(BrokerKeys::new(
            SigningKey::from_pkcs8_der(kit_keys().token().to_pkcs8_der()).unwrap(),
            key(50),
        ))
        .build()
        .unwrap();
    restarted.checkpoint().unwrap();
    let seq = store
        .audit_entries(0..store.audit_len().unwrap())
        .unwrap()
        .iter()
        .rev()
        .find(|e| e.kind() == AuditKind::CheckpointKeyActivated)
        .unwrap()
        .seq;
    assert_eq!(
        KeyHistory::from_log(&store, &origin, first.clone()).unwrap_err(),
        KeyHistoryError::Unendorsed { seq }
    );
    // An auditor that trusted some other key from the start: the log's first key is unendorsed.
    let stranger = NoteVerifier::from_vkey(
        &NoteSigner::new(&origin, key(60).to_pkcs8_der())
            .unwrap()
            .verifier_key(),
    )
    .unwrap();
    assert!(matches!(
        KeyHistory::from_log(&store, &origin, stranger),
        Err(KeyHistoryError::Unendorsed { .. })
    ));
}

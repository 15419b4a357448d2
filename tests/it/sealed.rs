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
    fx.set_policy(stricter.clone()).unwrap();
    assert!(matches!(
        fx.last_audit().event,
        AuditEvent::HolderPolicyChanged {
            policy: Some(policy),
            instruction: Some(_),
        } if policy == stricter
    ));

    // The bank rotates its attestation key: approvals signed by the old one are refused.
    let request = fx.request();
    let old_token = fx.attest(&fx.full_statement(&request));
    let rotated = AttestationSigner::new(
        fx.bank.clone(),
        SigningKey::generate(&SystemRandom::new()).unwrap(),
    )
    .unwrap();
    fx.kit
        .bank
        .instruct(
            &fx.broker,
            &Instruction::SetKeys {
                keys: vec![rotated.public_key()],
            },
        )
        .unwrap();
    assert!(matches!(
        fx.last_audit().event,
        AuditEvent::HolderKeysChanged {
            attestation_keys,
            instruction: Some(_),
        } if attestation_keys == [rotated.public_key().thumbprint()]
    ));
    // The replaced key no longer approves, but stays on record for the evidence it signed.
    let holder = fx.broker.store().holder(&fx.bank).unwrap().unwrap();
    assert_eq!(
        holder.retired_attestation_keys(),
        [fx.bank_signer().public_key()]
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
    // A rotation to no key at all is not applied (signed by the current key, this time).
    let empty = rotated
        .sign_instruction(
            &Instruction::SetKeys { keys: Vec::new() },
            fx.broker.id(),
            fx.broker.now(),
            &SystemRandom::new(),
        )
        .unwrap();
    assert!(matches!(
        fx.broker.apply_holder_instruction(&empty),
        Err(Error::Instruction(InstructionError::Inapplicable(_)))
    ));
}

/// The permit of the checked call (panics on a denial).
fn permit_of<S: Store>(kit: &TestBroker<S>, consent: &ConsentId) -> Permit {
    match kit.broker.authorise_access(&kit.access(consent)).unwrap() {
        AccessOutcome::Permitted(permit) => permit,
        AccessOutcome::Denied(denial) => panic!("denied: {denial:?}"),
    }
}

/// A dishonest platform runs a second broker of its own, on a store of its own, where its
/// "bank" approves a consent with the same id as the real one: here it is an exact twin, same
/// ids, same keys, same bank key. Its permit is worthless to the real broker, for a token as
/// for an embedded bank's verified access, and the real log records nothing.
#[test]
fn a_permit_another_broker_decided_is_neither_a_token_nor_a_verified_access() {
    let real = Fixture::new();
    let consent = real.granted();
    let twin = TestBroker::memory();
    let twins_request = twin.request();
    twin.bank.approve_all(&twin.broker, &twins_request).unwrap();
    assert_eq!(twins_request.id(), consent.id(), "the same consent id");
    let before = real.audit_len();

    let foreign = permit_of(&twin, consent.id());
    assert_eq!(real.broker.issue_token(foreign), Err(Error::ForeignPermit));
    let foreign = permit_of(&twin, consent.id());
    assert_eq!(
        real.broker.verified_access(foreign),
        Err(Error::ForeignPermit)
    );
    assert_eq!(real.audit_len(), before, "the real log holds nothing of it");
    assert!(!Error::ForeignPermit.is_retryable());

    // Each broker honours its own permits.
    let own = permit_of(&real, consent.id());
    assert_eq!(
        real.broker.verified_access(own).unwrap().consent(),
        consent.id()
    );
    real.broker
        .issue_token(permit_of(&real, consent.id()))
        .unwrap();
    twin.broker
        .issue_token(permit_of(&twin, consent.id()))
        .unwrap();
}

/// A second broker started on the same store with other keys replaces the first one's keys (and
/// records it). The first broker, still running with its keys in memory, then signs nothing: no
/// token, no checkpoint, and nothing is recorded for what it tried.
#[test]
fn a_broker_whose_keys_another_broker_replaced_signs_nothing_more() {
    let store = Arc::new(MemoryStore::new());
    let first = Fixture::sharing(Arc::clone(&store), |builder| builder);
    let consent = first.granted();
    let permit = permit_of(&first, consent.id());
    let old = first.broker.jwks().unwrap().keys[0].kid.clone();

    let second = Broker::builder(first.broker.id().clone(), Arc::clone(&store))
        .clock(first.clock.clone())
        .keys(BrokerKeys::ephemeral(&SeededRandom::new(99)).unwrap())
        .build()
        .unwrap();
    assert_eq!(
        first.audit()[first.audit().len() - 2..]
            .iter()
            .map(AuditEntry::kind)
            .collect::<Vec<_>>(),
        [
            AuditKind::SigningKeyActivated,
            AuditKind::CheckpointKeyActivated
        ]
    );
    let before = first.audit_len();
    let retired = |result: Result<_, Error>, expected: KeyUse| match result {
        Err(Error::KeyRetired { key_use, kid }) => {
            assert_eq!(key_use, expected);
            kid
        }
        other => panic!("not refused as retired: {other:?}"),
    };
    assert_eq!(
        retired(first.broker.issue_token(permit).map(drop), KeyUse::Token),
        old
    );
    retired(
        first
            .broker
            .authorise_with_token(&first.access(consent.id()))
            .map(drop),
        KeyUse::Token,
    );
    retired(first.broker.checkpoint().map(drop), KeyUse::Checkpoint);
    assert_eq!(first.audit_len(), before, "nothing recorded");

    // The broker with the store's active keys signs as usual, and the bank accepts its tokens.
    let token = second
        .authorise_with_token(&first.access(consent.id()))
        .unwrap();
    assert!(matches!(token, TokenOutcome::Issued(_)));
    second.checkpoint().unwrap();
}

/// A store a real broker runs on, for the conformance harness below to point at by mistake.
static REAL_STORE: std::sync::OnceLock<Arc<MemoryStore>> = std::sync::OnceLock::new();

/// A harness that, wrongly, hands the conformance suite a store with data in it.
struct PointedAtARealStore(Arc<MemoryStore>);

impl consent_broker::conformance::Harness for PointedAtARealStore {
    type Store = Arc<MemoryStore>;
    fn new() -> Self {
        Self(Arc::clone(REAL_STORE.get().unwrap()))
    }
    fn store(&self) -> &Arc<MemoryStore> {
        &self.0
    }
    fn reopen(self) -> Self {
        self
    }
}

/// The test kit's keys and made-up records come from public seeds. Pointed by mistake at a store
/// a real broker runs on, each part of it refuses before writing anything: the test broker (its
/// keys would replace the real ones), the bulk decisions, and the conformance suite.
#[test]
fn the_test_kit_writes_nothing_into_a_store_a_real_broker_runs_on() {
    let store = REAL_STORE.get_or_init(|| Arc::new(MemoryStore::new()));
    let _real = Broker::builder(id("broker"), Arc::clone(store))
        .keys(BrokerKeys::ephemeral(&SystemRandom::new()).unwrap())
        .build()
        .unwrap();
    let (keys, len) = (store.published_keys().unwrap(), store.audit_len().unwrap());

    let kit = std::panic::catch_unwind(|| TestBroker::on(Arc::clone(store)));
    assert!(kit.is_err(), "the test broker refused the store");
    assert_eq!(
        testing::bulk::append_decisions(&**store, 3, START),
        Err(testing::bulk::BulkError::BrokerStore)
    );
    let suite = std::panic::catch_unwind(
        consent_broker::conformance::suite::usage_and_attestations::<PointedAtARealStore>,
    );
    assert!(suite.is_err(), "the conformance suite refused the store");

    assert_eq!(
        store.published_keys().unwrap(),
        keys,
        "the keys are the real ones"
    );
    assert_eq!(store.audit_len().unwrap(), len, "nothing was written");
    assert_eq!(store.consent(&id("cns_1")).unwrap(), None);

    // On a store of its own, the bulk data goes in.
    let bench = MemoryStore::new();
    testing::bulk::append_decisions(&bench, 3, START).unwrap();
    assert_eq!(bench.audit_len().unwrap(), 3);
}

/// Two processes of one broker start at once on one store with the same keys: the second
/// publishes them between the first's read of the published keys and its commit. The first's
/// commit finds the key published (a duplicate), reads again, finds it active and starts: both
/// run, and the log records each key's activation once.
#[test]
fn two_brokers_starting_at_once_with_the_same_keys_both_start() {
    starting_at_once_on(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    starting_at_once_on(SqliteStore::open(dir.path().join("broker.sqlite")).unwrap());
}

fn starting_at_once_on<S: Store + Send + Sync + 'static>(store: S) {
    let store = Arc::new(consent_broker::testing::FaultStore::new(store, 1));
    let build = {
        let store = Arc::clone(&store);
        move || {
            Broker::builder(id("broker"), Arc::clone(&store))
                .keys(BrokerKeys::ephemeral(&SeededRandom::new(7)).unwrap())
                .build()
        }
    };
    let other = build.clone();
    store.after_next_read("published_keys", move || {
        other().unwrap();
    });
    let first = build().unwrap();
    let activations: Vec<AuditKind> = first
        .audit_log()
        .unwrap()
        .iter()
        .map(AuditEntry::kind)
        .filter(|kind| {
            matches!(
                kind,
                AuditKind::SigningKeyActivated | AuditKind::CheckpointKeyActivated
            )
        })
        .collect();
    assert_eq!(
        activations,
        [
            AuditKind::SigningKeyActivated,
            AuditKind::CheckpointKeyActivated
        ]
    );
}

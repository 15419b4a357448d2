//! Witnesses: a checkpoint counts only with the log's signature and cosignatures of k of n
//! witnesses, and a witness cosigns only what is consistent with what it cosigned before. A
//! store rolled back to a backup and used again, or a second history signed with the same key,
//! ends in a refusal (an alarm), never in a checkpoint the world accepts.

use std::sync::Arc;

use consent_broker::checkpoint::{NoteSigner, NoteVerifier};
use consent_broker::cosignature::{
    CosignatureSigner, CosignatureVerifier, WitnessPolicy, WitnessedError, verify_witnessed,
};
use consent_broker::testing::START;
use consent_broker::testing::bulk::append_decisions;
use consent_broker::witness::{
    AddCheckpoint, Cosigning, CosigningAlarm, Witness, WitnessClient, WitnessError,
};
use consent_broker::*;

const ORIGIN: &str = "broker.example/log";

fn log_signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, &crate::targets::pkcs8(2)).unwrap()
}

fn log_verifier() -> NoteVerifier {
    NoteVerifier::from_vkey(&log_signer().verifier_key()).unwrap()
}

fn witness(dir: &std::path::Path, name: &str, seed: u8) -> Witness {
    let signer = CosignatureSigner::new(name, &crate::targets::pkcs8(seed)).unwrap();
    Witness::open(
        dir.join(format!("{seed}.sqlite")),
        signer,
        Arc::new(ManualClock::new(START)),
    )
    .unwrap()
    .follow(ORIGIN, log_verifier())
}

/// A store of `count` made-up decisions dated `at` (the same `at` and count: the same log).
fn store_of(count: u64, at: time::OffsetDateTime) -> MemoryStore {
    let store = MemoryStore::new();
    append_decisions(&store, count, at).unwrap();
    store
}

fn policy(witnesses: &[&Witness], quorum: usize) -> WitnessPolicy {
    WitnessPolicy {
        witnesses: witnesses.iter().map(|w| w.verifier().clone()).collect(),
        quorum,
    }
}

#[test]
fn witnesses_cosign_a_growing_log_and_a_quorum_makes_it_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        witness(dir.path(), "bank.example/witness", 11),
        witness(dir.path(), "regulator.example/witness", 12),
        witness(dir.path(), "consumers.example/witness", 13),
    );
    let store = store_of(600, START);
    let checkpoint = checkpoint_log(&store, ORIGIN, &log_signer()).unwrap();
    let mut cosigning = Cosigning::new(vec![
        (&a as &dyn WitnessClient, a.verifier().clone()),
        (&b as &dyn WitnessClient, b.verifier().clone()),
    ]);
    let cosigned = cosigning
        .cosign(&store, &checkpoint, &log_verifier())
        .unwrap();
    assert_eq!(cosigned.alarms, []);
    assert_eq!(cosigned.cosigned_by.len(), 2);
    let trusted = verify_witnessed(
        &cosigned.note,
        &log_verifier(),
        Some(ORIGIN),
        &policy(&[&a, &b, &c], 2),
    )
    .unwrap();
    assert_eq!(trusted.checkpoint.size, 600);
    assert_eq!(trusted.cosigned_by.len(), 2);
    assert!(
        trusted
            .cosigned_by
            .iter()
            .all(|(_, time)| *time == START.unix_timestamp() as u64)
    );
    // Three required, two cosigned: not trusted. The log's signature alone: not trusted.
    assert_eq!(
        verify_witnessed(
            &cosigned.note,
            &log_verifier(),
            Some(ORIGIN),
            &policy(&[&a, &b, &c], 3)
        ),
        Err(WitnessedError::Quorum { got: 2, quorum: 3 })
    );
    assert_eq!(
        verify_witnessed(
            &checkpoint.note,
            &log_verifier(),
            Some(ORIGIN),
            &policy(&[&a, &b], 1)
        ),
        Err(WitnessedError::Quorum { got: 0, quorum: 1 })
    );

    // The log grows: each witness gets a proof from the size it cosigned.
    append_decisions(&store, 300, START).unwrap();
    let next = checkpoint_log(&store, ORIGIN, &log_signer()).unwrap();
    let cosigned = cosigning.cosign(&store, &next, &log_verifier()).unwrap();
    assert_eq!(cosigned.alarms, []);
    verify_witnessed(
        &cosigned.note,
        &log_verifier(),
        Some(ORIGIN),
        &policy(&[&a, &b], 2),
    )
    .unwrap();
    // A new log process that does not know what the witnesses saw learns it from their 409.
    let mut fresh = Cosigning::new(vec![(&a as &dyn WitnessClient, a.verifier().clone())]);
    assert_eq!(
        fresh.cosign(&store, &next, &log_verifier()).unwrap().alarms,
        []
    );
    // The state is durable: reopened, the witness remembers size 900.
    drop(a);
    let reopened = witness(dir.path(), "bank.example/witness", 11);
    assert_eq!(
        reopened
            .latest(ORIGIN)
            .unwrap()
            .map(|(size, root, _)| (size, root)),
        Some((900, next.root))
    );
}

#[test]
fn a_rolled_back_store_and_a_fork_get_no_cosignature_only_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let w = witness(dir.path(), "bank.example/witness", 11);
    let verifiers = || vec![(&w as &dyn WitnessClient, w.verifier().clone())];
    let honest = store_of(600, START);
    let seen = checkpoint_log(&honest, ORIGIN, &log_signer()).unwrap();
    assert_eq!(
        Cosigning::new(verifiers())
            .cosign(&honest, &seen, &log_verifier())
            .unwrap()
            .alarms,
        []
    );

    // Restored from a backup of 300 entries, then used again: 150 other entries.
    let restored = store_of(300, START);
    append_decisions(&restored, 150, START + time::Duration::days(1)).unwrap();
    let rolled_back = checkpoint_log(&restored, ORIGIN, &log_signer()).unwrap();
    let outcome = Cosigning::new(verifiers())
        .cosign(&restored, &rolled_back, &log_verifier())
        .unwrap();
    assert_eq!(outcome.cosigned_by, Vec::<String>::new());
    assert!(matches!(
        outcome.alarms.as_slice(),
        [CosigningAlarm::Rollback {
            witnessed: 600,
            size: 450,
            ..
        }]
    ));
    assert!(matches!(
        verify_witnessed(
            &outcome.note,
            &log_verifier(),
            Some(ORIGIN),
            &policy(&[&w], 1)
        ),
        Err(WitnessedError::Quorum { got: 0, .. })
    ));
    // Grown past what the witness saw: the proof from 600 cannot reach the witness's root.
    append_decisions(&restored, 350, START + time::Duration::days(1)).unwrap();
    let rewritten = checkpoint_log(&restored, ORIGIN, &log_signer()).unwrap();
    let outcome = Cosigning::new(verifiers())
        .cosign(&restored, &rewritten, &log_verifier())
        .unwrap();
    assert!(matches!(
        outcome.alarms.as_slice(),
        [CosigningAlarm::Inconsistent { .. }]
    ));
    // A fork: another history of exactly the size cosigned, same key.
    let fork = store_of(600, START + time::Duration::days(2));
    let forked = checkpoint_log(&fork, ORIGIN, &log_signer()).unwrap();
    let outcome = Cosigning::new(verifiers())
        .cosign(&fork, &forked, &log_verifier())
        .unwrap();
    assert!(matches!(
        outcome.alarms.as_slice(),
        [CosigningAlarm::Inconsistent { .. }]
    ));
    // The witness still stands by the honest log.
    assert_eq!(
        w.latest(ORIGIN)
            .unwrap()
            .map(|(size, root, _)| (size, root)),
        Some((600, seen.root))
    );
}

#[test]
fn the_witness_answers_with_the_protocols_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let w = witness(dir.path(), "bank.example/witness", 11);
    let store = store_of(10, START);
    let first = checkpoint_log(&store, ORIGIN, &log_signer()).unwrap();
    let request = |old_size: u64, proof: Vec<[u8; 32]>, note: &str| {
        AddCheckpoint {
            old_size,
            proof,
            note: note.to_owned(),
        }
        .to_body()
    };
    let status = |body: &str| w.add_checkpoint(body).map_err(|e| e.status());
    // Another log: 404. Signed by another key: 403.
    let other = NoteSigner::new("other.example/log", &crate::targets::pkcs8(2)).unwrap();
    let body = first
        .note
        .split("\n\n")
        .next()
        .unwrap()
        .replace(ORIGIN, "other.example/log")
        + "\n";
    assert_eq!(
        status(&request(0, vec![], &other.sign(&body).unwrap())),
        Err(404)
    );
    let impostor = NoteSigner::new(ORIGIN, &crate::targets::pkcs8(7)).unwrap();
    let text = &first.note[..first.note.find("\n\n").unwrap() + 1];
    assert_eq!(
        status(&request(0, vec![], &impostor.sign(text).unwrap())),
        Err(403)
    );
    // Malformed, and an old size above the checkpoint's: 400.
    assert_eq!(status("old 01\n\n"), Err(400));
    assert_eq!(status("garbage"), Err(400));
    assert_eq!(status(&request(11, vec![], &first.note)), Err(400));
    // A proof from the empty tree: 422. The first checkpoint, trusted on first use: 200.
    assert_eq!(status(&request(0, vec![[0; 32]], &first.note)), Err(422));
    assert!(status(&request(0, vec![], &first.note)).is_ok());
    // A stale old size: 409, naming the size cosigned.
    append_decisions(&store, 10, START).unwrap();
    let second = checkpoint_log(&store, ORIGIN, &log_signer()).unwrap();
    assert_eq!(
        w.add_checkpoint(&request(0, vec![], &second.note)),
        Err(WitnessError::Conflict { size: 10 })
    );
    // A wrong proof: 422; the right one: 200.
    assert_eq!(
        status(&request(10, vec![[1; 32]; 4], &second.note)),
        Err(422)
    );
    let proof = consent_broker::merkle::consistency_proof(10, 20, &StoreNodes(&store)).unwrap();
    let lines = w.add_checkpoint(&request(10, proof, &second.note)).unwrap();
    // The answer is a cosignature line of the witness's, over the checkpoint.
    let note = consent_broker::cosignature::add_cosignatures(&second.note, &lines);
    verify_witnessed(&note, &log_verifier(), Some(ORIGIN), &policy(&[&w], 1)).unwrap();
    // A cosignature altered, or made by another key under the witness's name: refused.
    let mut altered = note.clone().into_bytes();
    let at = altered.len() - 10;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    assert!(matches!(
        verify_witnessed(
            std::str::from_utf8(&altered).unwrap(),
            &log_verifier(),
            Some(ORIGIN),
            &policy(&[&w], 1)
        ),
        Err(WitnessedError::BadCosignature { .. }) | Err(WitnessedError::Checkpoint(_))
    ));
    let impostor =
        CosignatureSigner::new("bank.example/witness", &crate::targets::pkcs8(99)).unwrap();
    let forged =
        consent_broker::cosignature::add_cosignatures(&second.note, &impostor.cosign(text, 5));
    assert!(matches!(
        verify_witnessed(&forged, &log_verifier(), Some(ORIGIN), &policy(&[&w], 1)),
        Err(WitnessedError::Quorum { got: 0, quorum: 1 })
    ));
    // A vkey round trip, and a log key is not a witness key.
    let vkey = w.verifier().to_vkey();
    assert_eq!(
        CosignatureVerifier::from_vkey(&vkey).unwrap(),
        *w.verifier()
    );
    assert!(CosignatureVerifier::from_vkey(&log_signer().verifier_key()).is_err());
}

/// A witness that answers with junk beside its cosignature cannot make the published note
/// unreadable (only its one verifying line is kept), and one witness key listed under two names
/// counts once, so a relabelled cosignature does not make a quorum.
#[test]
fn a_noisy_witness_and_a_relabelled_cosignature_change_nothing() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    struct Noisy<'a>(&'a Witness);
    impl WitnessClient for Noisy<'_> {
        fn add_checkpoint(&self, body: &str) -> Result<String, WitnessError> {
            let line = self.0.add_checkpoint(body)?;
            let name = self.0.verifier().name();
            let junk: String = (0..150)
                .map(|i| format!("— {name} {}\n", "A".repeat(100 + i)))
                .collect();
            Ok(format!("{junk}{line}{junk}"))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let w = witness(dir.path(), "bank.example/witness", 11);
    let store = store_of(40, START);
    let checkpoint = checkpoint_log(&store, ORIGIN, &log_signer()).unwrap();
    let noisy = Noisy(&w);
    let cosigned = Cosigning::new(vec![(&noisy as &dyn WitnessClient, w.verifier().clone())])
        .cosign(&store, &checkpoint, &log_verifier())
        .unwrap();
    assert_eq!(cosigned.alarms, []);
    assert_eq!(
        cosigned.note.lines().filter(|l| l.starts_with('—')).count(),
        2
    );
    verify_witnessed(
        &cosigned.note,
        &log_verifier(),
        Some(ORIGIN),
        &policy(&[&w], 1),
    )
    .unwrap();

    // The same key under a second name: the line relabelled (the cosigned message does not
    // name the witness) verifies under both, but it is one witness.
    let public_key = *SigningKey::from_pkcs8_der(&crate::targets::pkcs8(11))
        .unwrap()
        .public_key()
        .as_bytes();
    let alias = CosignatureVerifier::from_public_key("alias.example/witness", &public_key).unwrap();
    let alias_id = u32::from_str_radix(alias.to_vkey().split('+').nth(1).unwrap(), 16)
        .unwrap()
        .to_be_bytes();
    let line = cosigned.note.lines().last().unwrap();
    let mut blob = STANDARD.decode(line.rsplit(' ').next().unwrap()).unwrap();
    blob[..4].copy_from_slice(&alias_id);
    let relabelled = consent_broker::cosignature::add_cosignatures(
        &cosigned.note,
        &format!("— alias.example/witness {}\n", STANDARD.encode(blob)),
    );
    let two_names = WitnessPolicy {
        witnesses: vec![w.verifier().clone(), alias],
        quorum: 2,
    };
    assert_eq!(
        verify_witnessed(&relabelled, &log_verifier(), Some(ORIGIN), &two_names),
        Err(WitnessedError::Quorum { got: 1, quorum: 2 })
    );
}

/// Two witness processes on one state file: the state is read inside the transaction that
/// writes it, so the second of two checkpoints sent from the same old size (a fork racing the
/// honest log) is refused, whichever process takes it.
#[test]
fn two_witness_processes_on_one_state_cannot_both_cosign_from_the_same_size() {
    let dir = tempfile::tempdir().unwrap();
    let first = witness(dir.path(), "bank.example/witness", 11);
    let second = witness(dir.path(), "bank.example/witness", 11);
    let honest = store_of(10, START);
    let start = checkpoint_log(&honest, ORIGIN, &log_signer()).unwrap();
    first
        .add_checkpoint(
            &AddCheckpoint {
                old_size: 0,
                proof: vec![],
                note: start.note,
            }
            .to_body(),
        )
        .unwrap();
    append_decisions(&honest, 10, START).unwrap();
    let grown = checkpoint_log(&honest, ORIGIN, &log_signer()).unwrap();
    let fork = store_of(10, START);
    append_decisions(&fork, 10, START + time::Duration::days(1)).unwrap();
    let forked = checkpoint_log(&fork, ORIGIN, &log_signer()).unwrap();
    let request = |store: &MemoryStore, checkpoint: &StoredCheckpoint| {
        AddCheckpoint {
            old_size: 10,
            proof: consent_broker::merkle::consistency_proof(10, 20, &StoreNodes(store)).unwrap(),
            note: checkpoint.note.clone(),
        }
        .to_body()
    };
    first.add_checkpoint(&request(&honest, &grown)).unwrap();
    assert_eq!(
        second.add_checkpoint(&request(&fork, &forked)),
        Err(WitnessError::Conflict { size: 20 })
    );
    assert_eq!(
        second
            .latest(ORIGIN)
            .unwrap()
            .map(|(size, root, _)| (size, root)),
        Some((20, grown.root))
    );
}

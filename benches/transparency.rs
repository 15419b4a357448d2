//! Transparency: publishing the log as C2SP tiles (entries per second), a witness's
//! add-checkpoint with a consistency proof against one Ed25519 verification plus the proof's
//! hashes (the floor of any witness), and a bank's monitor pass over 100,000 served tokens.
//!
//! Run: `cargo bench --bench transparency`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]

use std::hint::black_box;
use std::sync::Arc;

use consent_broker::checkpoint::{NoteSigner, NoteVerifier, open_note};
use consent_broker::cosignature::{CosignatureSigner, WitnessPolicy};
use consent_broker::merkle::{self, verify_consistency};
use consent_broker::testing::bulk::append_decisions;
use consent_broker::testing::{GET_BALANCE, START, SeededRandom, TestBank, TestBroker};
use consent_broker::tiles::{DirTiles, Tile, publish, tile_bytes};
use consent_broker::witness::{AddCheckpoint, Witness};
use consent_broker::*;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

mod support;

const ORIGIN: &str = "broker.example/log";

fn pkcs8(seed: u8) -> Vec<u8> {
    SigningKey::from_seed(&[seed; 32])
        .unwrap()
        .to_pkcs8_der()
        .to_vec()
}

fn publishing(c: &mut Criterion) {
    const ENTRIES: u64 = 70_000;
    let store = MemoryStore::new();
    append_decisions(&store, ENTRIES, START).unwrap();
    let signer = NoteSigner::new(ORIGIN, &pkcs8(2)).unwrap();
    let checkpoint = checkpoint_log(&store, ORIGIN, &signer).unwrap();
    let mut group = c.benchmark_group("tiles");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(ENTRIES));
    group.bench_function("publish_70000_entries", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                publish(&store, dir.path(), &checkpoint).unwrap();
                dir
            },
            BatchSize::PerIteration,
        )
    });
    // The same tiles computed, not written: what the files and their fsyncs cost.
    group.bench_function("tile_bytes_70000_entries", |b| {
        b.iter(|| {
            Tile::all_for(ENTRIES)
                .iter()
                .map(|tile| tile_bytes(&store, tile).unwrap().len())
                .sum::<usize>()
        })
    });
    group.finish();
}

fn witnessing(c: &mut Criterion) {
    // A log of a million entries, grown by 1,000 between checkpoints: a 20-odd hash proof.
    let store = MemoryStore::new();
    append_decisions(&store, 1_000_000, START).unwrap();
    let signer = NoteSigner::new(ORIGIN, &pkcs8(2)).unwrap();
    let log_key = NoteVerifier::from_vkey(&signer.verifier_key()).unwrap();
    let old = merkle::root(999_000, &StoreNodes(&store)).unwrap();
    let new = checkpoint_log(&store, ORIGIN, &signer).unwrap();
    let proof = merkle::consistency_proof(999_000, 1_000_000, &StoreNodes(&store)).unwrap();
    let body = AddCheckpoint {
        old_size: 999_000,
        proof: proof.clone(),
        note: new.note.clone(),
    }
    .to_body();
    let clock = Arc::new(ManualClock::new(START));
    let mut group = c.benchmark_group("witness");
    for (name, dir) in [
        ("add_checkpoint_sqlite_tmpfs", "/dev/shm"),
        ("add_checkpoint_sqlite_disk", "target"),
    ] {
        let dir = tempfile::tempdir_in(dir).unwrap();
        let witness = Witness::open(
            dir.path().join("w.sqlite"),
            CosignatureSigner::new("witness.example", &pkcs8(9)).unwrap(),
            clock.clone(),
        )
        .unwrap()
        .follow(ORIGIN, log_key.clone());
        // Seed its state at the old size (first use, no proof), then cosign the same step again
        // and again: the witness finds old == its size each time only if the step is undone, so
        // the state is reset to the old size outside the timed part.
        let first = checkpoint_log_at(&store, &signer, 999_000, old);
        let reset = || {
            let connection = rusqlite::Connection::open(dir.path().join("w.sqlite")).unwrap();
            connection
                .execute(
                    "UPDATE witnessed SET size = ?1, root = ?2",
                    rusqlite::params![999_000i64, old.as_slice()],
                )
                .unwrap();
        };
        witness
            .add_checkpoint(
                &AddCheckpoint {
                    old_size: 0,
                    proof: vec![],
                    note: first,
                }
                .to_body(),
            )
            .unwrap();
        group.bench_function(name, |b| {
            b.iter_batched(
                reset,
                |()| witness.add_checkpoint(black_box(&body)).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    // The floor: the log's signature and the consistency proof's hashes.
    group.bench_function("raw/ed25519_verify_and_proof", |b| {
        b.iter(|| {
            open_note(black_box(&new.note), std::slice::from_ref(&log_key)).unwrap();
            verify_consistency(999_000, 1_000_000, &old, &new.root, black_box(&proof)).unwrap();
        })
    });
    group.finish();
}

/// A checkpoint note for `size` with `root`, signed by `signer` (the store's own checkpoints are
/// of its whole log).
fn checkpoint_log_at(
    _store: &MemoryStore,
    signer: &NoteSigner,
    size: u64,
    root: merkle::Hash,
) -> String {
    let body = consent_broker::checkpoint::Checkpoint {
        origin: ORIGIN.to_owned(),
        size,
        root,
        extensions: vec![],
    }
    .to_body()
    .unwrap();
    signer.sign(&body).unwrap()
}

fn monitoring(c: &mut Criterion) {
    const TOKENS: usize = 100_000;
    let kit = TestBroker::memory();
    let bank = TestBank::with_settings(&kit, MemoryStore::new(), support::open_gate());
    let consent = bank.granted(&kit);
    let access = kit.access(consent.id());
    let random = SeededRandom::new(5);
    // `count` fresh tokens, each checked at the bank's gate (served and journalled).
    let serve = |count: usize| {
        for _ in 0..count {
            let (token, proof) = support::token_and_proof(&kit, &access, &random);
            let request = GateRequest {
                token: &token,
                proof: &proof,
                http: GET_BALANCE,
            };
            bank.bank.check(&request, &bank.accounts).unwrap();
        }
    };
    serve(TOKENS);
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = kit.broker.checkpoint().unwrap();
    publish(&kit.broker.store(), dir.path(), &checkpoint).unwrap();
    let log_key = NoteVerifier::from_vkey(&kit.broker.checkpoint_verifier_key()).unwrap();
    let source = DirTiles::new(dir.path());
    let mut group = c.benchmark_group("monitor");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(TOKENS as u64));
    group.bench_function("first_pass_100000_served_tokens", |b| {
        b.iter(|| {
            let mut monitor = LogMonitor::accepting_weak_policy(
                kit.broker.log_origin(),
                log_key.clone(),
                WitnessPolicy::none(),
            );
            let report = monitor
                .check(&bank.bank, &source, kit.broker.now())
                .unwrap();
            assert!(report.is_clean() && report.pending == 0);
            report
        })
    });
    // A bank that restarts: its monitor's state saved after that pass, restored, and the next
    // pass with nothing new (against the first pass above, which a monitor made anew repeats).
    let made = || {
        LogMonitor::accepting_weak_policy(
            kit.broker.log_origin(),
            log_key.clone(),
            WitnessPolicy::none(),
        )
    };
    let mut monitor = made();
    monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    let saved = monitor.save();
    eprintln!(
        "monitor: the state saved after a pass over {TOKENS} served tokens is {} bytes",
        saved.len()
    );
    group.bench_function("save_100000_served_tokens", |b| {
        b.iter(|| black_box(&monitor).save())
    });
    group.bench_function("restore_100000_served_tokens", |b| {
        b.iter_batched(
            made,
            |monitor| monitor.restore(black_box(&saved)).unwrap(),
            BatchSize::LargeInput,
        )
    });
    // Saved to a file: whole (the first save to a file, alternating between two so that each
    // is written whole), and appended to after a pass that served and read 1,000 new tokens.
    let states = tempfile::tempdir().unwrap();
    let mut files = [states.path().join("a.state"), states.path().join("b.state")];
    group.bench_function("save_to_whole_100000_served_tokens", |b| {
        b.iter(|| {
            files.swap(0, 1);
            monitor.save_to(&files[0]).unwrap();
        })
    });
    group.bench_function("restored_pass_nothing_new_100000_served_tokens", |b| {
        b.iter_batched(
            || made().restore(&saved).unwrap(),
            |mut monitor| {
                let report = monitor
                    .check(&bank.bank, &source, kit.broker.now())
                    .unwrap();
                assert!(report.is_clean() && report.pending == 0);
                // Dropped outside the timing, as the monitor is not dropped between passes.
                (report, monitor)
            },
            BatchSize::LargeInput,
        )
    });
    // A pass that served and read 1,000 new tokens, made outside the timing, then its save
    // appended to the file (whole again now and then, once the records outgrow the state: the
    // mean includes those).
    const NEW: usize = 1_000;
    let appended = states.path().join("appended.state");
    monitor.save_to(&appended).unwrap();
    group.throughput(criterion::Throughput::Elements(NEW as u64));
    group.bench_function(
        "save_to_appending_a_pass_of_1000_new_100000_served_tokens",
        |b| {
            b.iter_custom(|iterations| {
                let mut timed = std::time::Duration::ZERO;
                for _ in 0..iterations {
                    serve(NEW);
                    let checkpoint = kit.broker.checkpoint().unwrap();
                    publish(&kit.broker.store(), dir.path(), &checkpoint).unwrap();
                    let report = monitor
                        .check(&bank.bank, &source, kit.broker.now())
                        .unwrap();
                    assert!(report.is_clean() && report.pending == 0);
                    let started = std::time::Instant::now();
                    monitor.save_to(&appended).unwrap();
                    timed += started.elapsed();
                }
                eprintln!(
                    "monitor: the file appended to is {} bytes",
                    std::fs::metadata(&appended).unwrap().len()
                );
                timed
            })
        },
    );
    // The file as those saves left it (the whole state, and the records after it), restored.
    let bytes = std::fs::metadata(&appended).unwrap().len();
    let records = std::fs::read(&appended)
        .unwrap()
        .iter()
        .filter(|byte| **byte == b'\n')
        .count();
    eprintln!("monitor: restoring a file of {bytes} bytes, {records} records after the state");
    group.throughput(criterion::Throughput::Bytes(bytes));
    group.bench_function("restore_from_the_file_appended_to", |b| {
        b.iter_with_large_drop(|| made().restore_from(black_box(&appended)).unwrap())
    });
    let file_bytes = std::fs::read(&appended).unwrap();
    group.bench_function("restore_the_file_appended_to_bytes", |b| {
        b.iter_with_large_drop(|| made().restore(black_box(&file_bytes)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, publishing, witnessing, monitoring);
criterion_main!(benches);

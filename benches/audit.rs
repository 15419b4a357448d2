//! The audit log: appending (entry bytes + Merkle nodes, in the store's commit) and verifying a
//! whole log (recomputing the tree from the stored bytes), beside raw SHA-256 over the same
//! bytes.
//!
//! Run: `cargo bench --bench audit`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]

use std::hint::black_box;

use consent_broker::merkle;
use consent_broker::time::macros::datetime;
use consent_broker::{time, *};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const ENTRIES: u64 = 100_000;

const AT: time::OffsetDateTime = datetime!(2026-11-21 09:00 UTC);

/// A log of realistic access-decision entries (the test kit's bulk append).
fn filled<S: Store>(store: S) -> S {
    testing::bulk::append_decisions(&store, ENTRIES, AT).unwrap();
    store
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append/memory", |b| {
        let store = MemoryStore::new();
        b.iter(|| testing::bulk::append_decisions(&store, 1, AT).unwrap())
    });

    let memory = filled(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = filled(SqliteStore::open(dir.path().join("audit.sqlite")).unwrap());
    let bytes: Vec<Vec<u8>> = memory
        .audit_bytes(0..ENTRIES)
        .unwrap()
        .into_iter()
        .map(|e| e.bytes)
        .collect();
    let total: usize = bytes.iter().map(Vec::len).sum();
    eprintln!(
        "{ENTRIES} entries, {} bytes on average",
        total / bytes.len()
    );

    group.throughput(Throughput::Elements(ENTRIES));
    group.sample_size(10);
    group.bench_function("verify/memory_100k", |b| {
        b.iter(|| verify_log(black_box(&memory), None).unwrap())
    });
    group.bench_function("verify/sqlite_100k", |b| {
        b.iter(|| verify_log(black_box(&sqlite), None).unwrap())
    });
    group.bench_function("raw/sha256_leaves_100k", |b| {
        b.iter(|| {
            bytes.iter().fold(0u8, |acc, entry| {
                acc ^ merkle::leaf_hash(black_box(entry))[0]
            })
        })
    });
    group.bench_function("raw/tree_from_bytes_100k", |b| {
        b.iter_batched(
            merkle::TreeBuilder::new,
            |mut tree| {
                for entry in &bytes {
                    tree.push(merkle::leaf_hash(entry));
                }
                tree.root()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

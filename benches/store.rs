//! Audited decisions on the durable SQLite store (WAL, synchronous=FULL: every decision is one
//! fsynced transaction), beside the same decision on the in-memory store.
//!
//! Run: `cargo bench --bench store`. The database lives in a temporary directory on the same
//! file system as the system temp dir; the figure depends on that disk's fsync latency.

use std::hint::black_box;
use std::sync::Arc;

use consent_broker::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod support;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("bench.sqlite")).unwrap());
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    for (name, store) in [("sqlite", sqlite), ("memory", memory)] {
        let s = support::setup_on(store);
        group.bench_function(format!("{name}/authorise_access_permit"), |b| {
            b.iter(|| s.broker.authorise_access(black_box(&s.access)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

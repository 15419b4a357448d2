//! Log shards on one machine: 1, 2 and 4 brokers, each with a SQLite database and audit log of
//! its own (as one log per platform–bank pair, or a bounded set of shards, would be), each
//! decided on by eight callers at once. The time per decision is one over the aggregate
//! throughput of all shards; `docs/SCALING.md` reads it.
//!
//! Run: `cargo bench --bench shards`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]

use std::sync::Arc;

use consent_broker::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod support;

/// Callers per shard.
const CALLERS: usize = 8;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("shards");
    group.throughput(Throughput::Elements(1));
    for shards in [1usize, 2, 4] {
        let setups: Vec<_> = (0..shards)
            .map(|n| {
                let path = dir.path().join(format!("shard-{shards}-{n}.sqlite"));
                support::setup_on(Arc::new(SqliteStore::open(path).unwrap()))
            })
            .collect();
        group.bench_function(
            format!("sqlite_{shards}_shards_{CALLERS}_callers_each"),
            |b| {
                b.iter_custom(|iterations| {
                    support::timed_threads(shards * CALLERS, iterations, |caller, each| {
                        let setup = setups.get(caller % shards).unwrap();
                        for _ in 0..each {
                            setup.broker.authorise_access(&setup.access).unwrap();
                        }
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Audited decisions on the durable SQLite store (WAL, synchronous=FULL: every decision is one
//! fsynced transaction), beside the same decision on the in-memory store.
//!
//! Run: `cargo bench --bench store`. The database lives in a temporary directory on the same
//! file system as the system temp dir; the figure depends on that disk's fsync latency, measured
//! in the same run (`store/disk/write_4k_fdatasync`).
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]

use std::hint::black_box;
use std::sync::Arc;

use consent_broker::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod support;

use support::concurrently;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> =
        Arc::new(SqliteStore::open(dir.path().join("bench.sqlite")).unwrap());
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    disk(&mut group, dir.path());
    for (name, store) in [("sqlite", sqlite), ("memory", memory)] {
        let s = support::setup_on(store);
        group.bench_function(format!("{name}/authorise_access_permit"), |b| {
            b.iter(|| s.broker.authorise_access(black_box(&s.access)).unwrap())
        });
        if name == "memory" {
            // Two threads deciding at once on one broker over one in-memory store: how the
            // checked call scales with a second core (ideal: half the time per decision).
            let brokers = [&s.broker];
            group.bench_function("memory/authorise_access_permit_2_threads", |b| {
                b.iter_custom(|iterations| concurrently(&brokers, 2, &s.access, iterations))
            });
        }
        if name == "sqlite" {
            // Eight callers deciding at once on one broker (as eight request threads of one
            // platform server would): their commits share transactions and fsyncs.
            let brokers = [&s.broker];
            group.bench_function("sqlite/authorise_access_permit_8_callers", |b| {
                b.iter_custom(|iterations| concurrently(&brokers, 8, &s.access, iterations))
            });
            // The same with every decision reading its view afresh (the broker keeps none): the
            // baseline of the kept views, which the rows above use (one consent asked about
            // again and again is the case they serve).
            let fresh = fresh_reads(&s);
            let brokers = [&fresh];
            group.bench_function(
                "sqlite/authorise_access_permit_8_callers_fresh_reads",
                |b| b.iter_custom(|iterations| concurrently(&brokers, 8, &s.access, iterations)),
            );
        }
    }
    postgres(&mut group);
    group.finish();
}

/// The disk's own figure, the baseline of every durable row: one 4 KiB write into a
/// preallocated file and `fdatasync` (how SQLite's WAL and PostgreSQL's WAL reach the disk), in
/// the directory of the SQLite file. Each durable transaction pays at least one; the figure moves
/// with the host's load, and the durable rows with it.
fn disk(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    dir: &std::path::Path,
) {
    use std::io::{Seek, SeekFrom, Write};
    const BLOCK: usize = 4096;
    const BLOCKS: u64 = 256;
    let mut file = std::fs::File::create(dir.join("fdatasync.bin")).unwrap();
    file.write_all(&vec![0u8; BLOCK * BLOCKS as usize]).unwrap();
    file.sync_all().unwrap();
    let block = [7u8; BLOCK];
    let mut n = 0u64;
    group.bench_function("disk/write_4k_fdatasync", |b| {
        b.iter(|| {
            n = (n + 1) % BLOCKS;
            file.seek(SeekFrom::Start(n * BLOCK as u64)).unwrap();
            file.write_all(&block).unwrap();
            file.sync_data().unwrap();
        })
    });
}

/// Another broker on `s`'s store, the same in every way but keeping no access views.
fn fresh_reads<S: Store + Clone>(s: &support::Setup<S>) -> Broker<S> {
    Broker::builder("broker".parse().unwrap(), s.store.clone())
        .clock(s.clock.clone())
        .keys(support::keys())
        .access_view_cache(false)
        .build()
        .unwrap()
}

/// PostgreSQL, when `DATABASE_URL` names a server (`scripts/with-postgres cargo bench --features
/// postgres --bench store`): one broker, and four brokers with their own connections deciding
/// concurrently on one database (as four processes would).
#[cfg(feature = "postgres")]
fn postgres(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use consent_broker::PostgresOptions;
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("store/postgres: skipped (no DATABASE_URL; run under scripts/with-postgres)");
        return;
    };
    let schema = format!("bench_{}", std::process::id());
    let open = || {
        let options = PostgresOptions {
            schema: Some(schema.clone()),
            ..Default::default()
        };
        Arc::new(PostgresStore::open_with(&url, options).unwrap()) as Arc<dyn Store>
    };
    let s = support::setup_on(open());
    group.bench_function("postgres/authorise_access_permit", |b| {
        b.iter(|| s.broker.authorise_access(black_box(&s.access)).unwrap())
    });
    const BROKERS: usize = 4;
    let brokers_keeping = |keep: bool| -> Vec<_> {
        (0..BROKERS)
            .map(|_| {
                Broker::builder("broker".parse().unwrap(), open())
                    .clock(s.clock.clone())
                    .keys(support::keys())
                    .access_view_cache(keep)
                    .build()
                    .unwrap()
            })
            .collect()
    };
    let (keeping, fresh) = (brokers_keeping(true), brokers_keeping(false));
    let brokers: Vec<_> = keeping.iter().collect();
    group.bench_function("postgres/authorise_access_permit_4_brokers", |b| {
        b.iter_custom(|iterations| concurrently(&brokers, BROKERS, &s.access, iterations))
    });
    // Eight, 32 and 64 callers on each of the four brokers (as four platform servers with that
    // many request threads each): each broker's concurrent commits go to the server together, and
    // its concurrent reads too; the more callers, the larger the batches (until the two cores the
    // server shares with the brokers are full).
    for per_broker in [8, 32, 64] {
        let callers = per_broker * BROKERS;
        group.bench_function(
            format!("postgres/authorise_access_permit_4_brokers_{callers}_callers"),
            |b| b.iter_custom(|iterations| concurrently(&brokers, callers, &s.access, iterations)),
        );
    }
    // The baseline of the kept views: every decision reads its view (two round trips).
    let fresh: Vec<_> = fresh.iter().collect();
    group.bench_function(
        "postgres/authorise_access_permit_4_brokers_32_callers_fresh_reads",
        |b| b.iter_custom(|iterations| concurrently(&fresh, 32, &s.access, iterations)),
    );
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Scale: the checked call with 1,000 and with 1,000,000 grants in the store (memory and
//! SQLite), and the memory one stored grant costs in the in-memory store.
//!
//! Run: `cargo bench --bench scale`. `CONSENT_BROKER_SCALE_GRANTS` sets the large count
//! (default 1,000,000); `CONSENT_BROKER_SCALE_SQLITE=0` skips the SQLite half (building a
//! million-grant SQLite file takes minutes and about a gigabyte of disk).

use std::hint::black_box;
use std::sync::Arc;

use consent_broker::store::Change;
use consent_broker::store::Commit;
use consent_broker::*;
use criterion::{Criterion, criterion_group, criterion_main};

mod support;

/// A live grant like the ones the story makes, with its own id, subject and account.
fn grant(n: u64, template: &Consent) -> Consent {
    let mut consent = template.clone();
    consent.request.id = format!("cns_{n:022}").parse().unwrap();
    consent.request.subject = format!("subject-{n}").parse().unwrap();
    consent
}

/// Resident set size of this process, from /proc (no allocator hooks needed).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn fill(store: &dyn Store, template: &Consent, count: u64) {
    let mut next = 1u64;
    while next <= count {
        let end = (next + 10_000).min(count + 1);
        let changes = (next..end)
            .map(|n| Change::InsertConsent(grant(n, template)))
            .collect();
        store
            .commit(Commit {
                changes,
                ..Commit::default()
            })
            .unwrap();
        next = end;
    }
}

fn bench(c: &mut Criterion) {
    let large: u64 = std::env::var("CONSENT_BROKER_SCALE_GRANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let with_sqlite = std::env::var("CONSENT_BROKER_SCALE_SQLITE").map_or(true, |v| v != "0");
    let mut group = c.benchmark_group("scale");
    let mut stores: Vec<(String, Arc<dyn Store>)> = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    for count in [1_000u64, large] {
        stores.push((format!("memory_{count}"), Arc::new(MemoryStore::new())));
        if with_sqlite {
            let path = dir.path().join(format!("scale_{count}.sqlite"));
            stores.push((
                format!("sqlite_{count}"),
                Arc::new(SqliteStore::open(path).unwrap()),
            ));
        }
    }
    for (name, store) in stores {
        let s = support::setup_on(store.clone());
        let before = resident_bytes();
        let count: u64 = name.rsplit('_').next().unwrap().parse().unwrap();
        let started = std::time::Instant::now();
        fill(&*store, &s.consent, count);
        if let (true, Some(before), Some(after)) =
            (name.starts_with("memory"), before, resident_bytes())
        {
            eprintln!(
                "scale: {count} grants in memory: {} bytes per grant (resident set growth), filled in {:.1?}",
                after.saturating_sub(before) / count,
                started.elapsed()
            );
        } else {
            eprintln!(
                "scale: {count} grants in {name}: filled in {:.1?}",
                started.elapsed()
            );
        }
        // The grant the access uses is one among `count`.
        group.bench_function(format!("{name}/authorise_access_permit"), |b| {
            b.iter(|| s.broker.authorise_access(black_box(&s.access)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The checked call: the pure decision, and the broker's audited decision on the in-memory store.
//!
//! Inputs are prepared outside the timed loops. Run: `cargo bench --bench policy`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]

use std::hint::black_box;

use consent_broker::*;
use criterion::{Criterion, criterion_group, criterion_main};

mod support;

fn bench(c: &mut Criterion) {
    let s = support::setup();
    let deny = AccessRequest {
        scope: Scope::Transactions.into(),
        purpose: Purpose::FraudProtection.into(),
        account: "acc-2".parse().unwrap(),
        ..s.access.clone()
    };
    let now = s.broker.now();
    let mut group = c.benchmark_group("policy");
    group.bench_function("evaluate/permit", |b| {
        b.iter(|| {
            evaluate(
                black_box(&s.access),
                Some(&s.consent),
                &s.policy,
                &s.profile,
                Usage::default(),
                now,
            )
        })
    });
    group.bench_function("evaluate/deny_four_reasons", |b| {
        b.iter(|| {
            evaluate(
                black_box(&deny),
                Some(&s.consent),
                &s.policy,
                &s.profile,
                Usage::default(),
                now,
            )
        })
    });
    // The parts of the checked call's privacy work: the subject's key read from the store, and
    // one pseudonym.
    let alice: SubjectId = s.consent.request().subject().clone();
    let key = s.store.subject_key(&alice).unwrap().unwrap();
    group.bench_function("privacy/subject_key_read", |b| {
        b.iter(|| s.store.subject_key(black_box(&alice)).unwrap())
    });
    group.bench_function("privacy/pseudonym", |b| {
        b.iter(|| key.subject(black_box(&alice)))
    });
    group.bench_function("broker/authorise_access_memory_permit", |b| {
        b.iter(|| {
            s.broker
                .authorise_access(black_box(&s.access))
                .map(|o| o.audit_seq())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

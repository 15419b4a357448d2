//! The checked call: the pure decision, and the broker's audited decision on the in-memory store.
//!
//! Inputs are prepared outside the timed loops. Run: `cargo bench --bench policy`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;

use consent_broker::*;
use criterion::{Criterion, criterion_group, criterion_main};
use ring::rand::SystemRandom;
use time::Duration;
use time::macros::datetime;

struct Setup {
    broker: Broker<MemoryStore>,
    consent: Consent,
    policy: HolderPolicy,
    profile: PlatformProfile,
    permit: AccessRequest,
    deny: AccessRequest,
}

fn setup() -> Setup {
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 09:00 UTC)));
    let broker = Broker::builder("broker".parse().unwrap(), MemoryStore::new())
        .clock(clock)
        .build()
        .unwrap();
    let rng = SystemRandom::new();
    let bank: HolderId = "bank".parse().unwrap();
    let signer = AttestationSigner::new(bank.clone(), SigningKey::generate(&rng).unwrap()).unwrap();
    let policy = HolderPolicy::default();
    broker
        .register_holder(HolderRegistration {
            id: bank.clone(),
            policy: policy.clone(),
            attestation_keys: vec![signer.public_key()],
        })
        .unwrap();
    let profile = PlatformProfile {
        id: "chat".parse().unwrap(),
        registered_purposes: BTreeSet::from(Purpose::ALL),
    };
    broker.register_platform(profile.clone()).unwrap();
    let account: AccountId = "acc-1".parse().unwrap();
    let request = broker
        .request_consent(ConsentRequestDraft {
            subject: "alice".parse().unwrap(),
            platform: profile.id.clone(),
            holder: bank,
            scopes: vec![Scope::Balance.into()],
            purposes: vec![Purpose::CustomerService.into()],
            accounts: AccountSelection::Listed(BTreeSet::from([account.clone()])),
            duration: Duration::days(90),
        })
        .unwrap();
    let statement = ApprovalStatement {
        consent: request.id.clone(),
        subject: request.subject.clone(),
        scopes: request.scopes.clone(),
        purposes: request.purposes.clone(),
        accounts: BTreeSet::from([account.clone()]),
        consent_expires_at: broker.now() + Duration::days(90),
    };
    let token = signer
        .sign(&statement, broker.id(), broker.now(), &rng)
        .unwrap();
    let consent = broker.approve(&request.id, &token).unwrap();
    let permit = AccessRequest {
        consent: request.id.clone(),
        platform: profile.id.clone(),
        scope: Scope::Balance.into(),
        purpose: Purpose::CustomerService.into(),
        account,
        presence: Presence::SubjectPresent,
    };
    let deny = AccessRequest {
        scope: Scope::Transactions.into(),
        purpose: Purpose::FraudProtection.into(),
        account: "acc-2".parse().unwrap(),
        ..permit.clone()
    };
    Setup {
        broker,
        consent,
        policy,
        profile,
        permit,
        deny,
    }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let now = s.broker.now();
    let mut group = c.benchmark_group("policy");
    group.bench_function("evaluate/permit", |b| {
        b.iter(|| {
            evaluate(
                black_box(&s.permit),
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
                black_box(&s.deny),
                Some(&s.consent),
                &s.policy,
                &s.profile,
                Usage::default(),
                now,
            )
        })
    });
    group.bench_function("broker/authorise_access_memory_permit", |b| {
        b.iter(|| {
            s.broker
                .authorise_access(black_box(&s.permit))
                .map(|o| o.audit_seq())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

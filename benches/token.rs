//! Tokens: issuing (checked call + token + audit) and the bank's full verification, beside raw
//! ring Ed25519 verification of the same bytes.
//!
//! Run: `cargo bench --bench token`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::*;
use criterion::{Criterion, criterion_group, criterion_main};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, UnparsedPublicKey};
use time::Duration;
use time::macros::datetime;

fn bench(c: &mut Criterion) {
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 09:00 UTC)));
    let store = Arc::new(MemoryStore::new());
    let broker = Broker::builder("broker".parse().unwrap(), store.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let rng = SystemRandom::new();
    let bank: HolderId = "bank".parse().unwrap();
    let signer = AttestationSigner::new(bank.clone(), SigningKey::generate(&rng).unwrap()).unwrap();
    broker
        .register_holder(HolderRegistration {
            id: bank.clone(),
            policy: HolderPolicy::default(),
            attestation_keys: vec![signer.public_key()],
        })
        .unwrap();
    let chat: PlatformId = "chat".parse().unwrap();
    broker
        .register_platform(PlatformProfile {
            id: chat.clone(),
            registered_purposes: BTreeSet::from(Purpose::ALL),
        })
        .unwrap();
    let account: AccountId = "acc-1".parse().unwrap();
    let request = broker
        .request_consent(ConsentRequestDraft {
            subject: "alice".parse().unwrap(),
            platform: chat.clone(),
            holder: bank.clone(),
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
    let attestation = signer
        .sign(&statement, broker.id(), broker.now(), &rng)
        .unwrap();
    broker.approve(&request.id, &attestation).unwrap();
    let access = AccessRequest {
        consent: request.id.clone(),
        platform: chat,
        scope: Scope::Balance.into(),
        purpose: Purpose::CustomerService.into(),
        account,
        presence: Presence::SubjectPresent,
    };
    let TokenOutcome::Issued(token) = broker.authorise_with_token(&access).unwrap() else {
        panic!("expected a token");
    };
    let verifier = TokenVerifier::new(
        bank,
        broker.id().clone(),
        &broker.jwks(),
        clock,
        StoreStatus(store),
    )
    .unwrap();
    let public_key = broker.jwks().public_keys().unwrap()[0];
    let (signing_input, signature_b64) = token.token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();

    let mut group = c.benchmark_group("token");
    group.bench_function("broker/authorise_with_token_memory", |b| {
        b.iter(|| broker.authorise_with_token(black_box(&access)).unwrap())
    });
    group.bench_function("holder/verify_full", |b| {
        b.iter(|| verifier.verify(black_box(&token.token)).unwrap())
    });
    group.bench_function("ring/ed25519_verify_same_bytes", |b| {
        let key = UnparsedPublicKey::new(&ED25519, public_key.as_bytes());
        b.iter(|| {
            key.verify(black_box(signing_input.as_bytes()), black_box(&signature))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

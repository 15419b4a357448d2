//! Tokens: issuing (checked call + token + audit) and the bank's full verification, beside raw
//! ring Ed25519 verification of the same bytes.
//!
//! Run: `cargo bench --bench token`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]
#![expect(
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a benchmark fails by panicking"
)]

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::*;
use criterion::{Criterion, criterion_group, criterion_main};
use ring::signature::{ED25519, UnparsedPublicKey};

mod support;

fn bench(c: &mut Criterion) {
    let support::Setup {
        broker,
        store,
        clock,
        bank,
        access,
        ..
    } = support::setup();
    let TokenOutcome::Issued(token) = broker.authorise_with_token(&access).unwrap() else {
        panic!("expected a token");
    };
    let verifier = TokenVerifier::new(
        bank,
        broker.id().clone(),
        &broker.jwks().unwrap(),
        clock,
        StoreStatus(store),
    )
    .unwrap();
    let public_key = broker.jwks().unwrap().public_keys().unwrap()[0];
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

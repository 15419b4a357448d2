//! Attestations: the verification of a bank's signed approval (strict header checks, signature,
//! every claim against the pending request; `check_attestation` runs exactly the checks the
//! broker's approval runs), beside raw ring Ed25519 verification of the same bytes.
//!
//! Run: `cargo bench --bench attestation`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::time::Duration;
use consent_broker::time::macros::datetime;
use consent_broker::*;
use criterion::{Criterion, criterion_group, criterion_main};
use ring::signature::{ED25519, UnparsedPublicKey};

fn bench(c: &mut Criterion) {
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 09:00 UTC)));
    let rng = SystemRandom::new();
    let broker = Broker::builder("broker".parse().unwrap(), MemoryStore::new())
        .clock(clock.clone())
        .keys(BrokerKeys::ephemeral(&rng).unwrap())
        .build()
        .unwrap();
    let bank: HolderId = "bank".parse().unwrap();
    let signer = AttestationSigner::new(bank.clone(), SigningKey::generate(&rng).unwrap()).unwrap();
    broker
        .register_holder(HolderRegistration {
            id: bank.clone(),
            policy: HolderPolicy::default(),
            attestation_keys: vec![signer.public_key()],
        })
        .unwrap();
    let platform: PlatformId = "chat".parse().unwrap();
    broker
        .register_platform(PlatformProfile {
            id: platform.clone(),
            registered_purposes: PurposeSet::from(Purpose::ALL),
        })
        .unwrap();
    let accounts = AccountSet::from(["acc-1".parse().unwrap(), "acc-2".parse().unwrap()]);
    let request = broker
        .request_consent(ConsentRequestDraft {
            subject: "alice".parse().unwrap(),
            platform,
            holder: bank,
            scopes: vec![Scope::Balance.into(), Scope::Alerts.into()],
            purposes: vec![Purpose::CustomerService.into()],
            accounts: AccountSelection::Listed(accounts.clone()),
            duration: Duration::days(90),
        })
        .unwrap();
    let now = broker.now();
    let statement = ApprovalStatement {
        consent: request.id().clone(),
        subject: request.subject().clone(),
        platform: request.platform().clone(),
        scopes: request.scopes(),
        purposes: request.purposes(),
        accounts,
        consent_expires_at: now + Duration::days(90),
        unattended_daily_limit: DEFAULT_UNATTENDED_DAILY_LIMIT,
        devices: Vec::new(),
        plaintext: PlaintextUses::new(),
    };
    let token = signer.sign(&statement, broker.id(), now, &rng).unwrap();
    let keys = [signer.public_key()];
    let expectations = Expectations {
        broker: broker.id(),
        request: &request,
        holder_keys: &keys,
        latest_expiry: now + Duration::days(90),
    };
    check_attestation(&token, &expectations, now).unwrap();
    let (signing_input, signature_b64) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).unwrap();

    let mut group = c.benchmark_group("attestation");
    group.bench_function("verify", |b| {
        b.iter(|| check_attestation(black_box(&token), &expectations, now).unwrap())
    });
    group.bench_function("ring/ed25519_verify_same_bytes", |b| {
        let key = UnparsedPublicKey::new(&ED25519, keys[0].as_bytes());
        b.iter(|| {
            key.verify(black_box(signing_input.as_bytes()), black_box(&signature))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

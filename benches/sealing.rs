//! Sealed responses: sealing one balance to one device and opening it there, beside the raw
//! operations any such exchange pays (an X25519 agreement with a fresh ephemeral key and an
//! AES-128-GCM seal of the same padded bytes on the bank's side; an X25519 agreement and an
//! AES-128-GCM open on the device's side), all on ring; and the bank's gate serving one access
//! sealed against the same access served unsealed (policy and approval both allowing it).
//!
//! Run: `cargo bench --bench sealing`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]

use std::hint::black_box;

use consent_broker::hpke::DeviceSecretKey;
use consent_broker::testing::{GET_BALANCE, SeededRandom, TestBank, TestBroker};
use consent_broker::*;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

mod support;
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{EphemeralPrivateKey, UnparsedPublicKey, X25519, agree_ephemeral};
use ring::rand::SystemRandom;

/// The smallest padding bucket: a balance's JSON padded, as sealed.
const PADDED: usize = PAD_BUCKETS[0];

fn balance(account: &AccountId) -> AccountData {
    AccountData::Balance(Balance {
        account: account.clone(),
        available: Money {
            minor_units: 123_456,
            currency: "EUR".into(),
        },
        as_of: consent_broker::testing::START,
    })
}

fn sealing(c: &mut Criterion) {
    let random = SeededRandom::new(14);
    let device = DeviceSecretKey::derive(b"the subject's phone");
    let devices = [device.public_key()];
    let account: AccountId = "acc-1".parse().unwrap();
    let data = balance(&account);
    let context = ResponseContext {
        holder: "bank".parse().unwrap(),
        consent: "c-0123456789abcdef".parse().unwrap(),
        token_id: "t-0123456789abcdef0123456789".to_owned(),
        scope: Scope::Balance,
        account,
        sequence: 42,
    };
    let sealed = seal_response(&data, &context, &devices, &random).unwrap();
    assert_eq!(open_response(&sealed, &device).unwrap(), data);

    let mut group = c.benchmark_group("sealing");
    group.bench_function("seal_balance_one_device", |b| {
        b.iter(|| seal_response(black_box(&data), &context, &devices, &random).unwrap())
    });
    group.bench_function("open_balance", |b| {
        b.iter(|| open_response(black_box(&sealed), &device).unwrap())
    });
    group.bench_function("seal_and_open_balance", |b| {
        b.iter(|| {
            let sealed = seal_response(black_box(&data), &context, &devices, &random).unwrap();
            open_response(&sealed, &device).unwrap()
        })
    });

    // The floors, on ring: what any sealing to an X25519 key with AES-128-GCM must do.
    let ring_random = SystemRandom::new();
    let device_public = *device.public_key().as_bytes();
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7; 16]).unwrap());
    let plaintext = vec![0u8; PADDED];
    let seal_floor = || {
        let ephemeral = EphemeralPrivateKey::generate(&X25519, &ring_random).unwrap();
        let enc = ephemeral.compute_public_key().unwrap();
        let shared = agree_ephemeral(
            ephemeral,
            &UnparsedPublicKey::new(&X25519, &device_public),
            |shared| <[u8; 32]>::try_from(shared).unwrap(),
        )
        .unwrap();
        let mut buffer = black_box(&plaintext).clone();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(b""),
            &mut buffer,
        )
        .unwrap();
        (enc, shared, buffer)
    };
    let (enc, _, ciphertext) = seal_floor();
    let enc = enc.as_ref().to_vec();
    // The device's side: one agreement with a static key. ring has no static X25519 keys, so an
    // ephemeral one of the same cost stands in for the device's.
    let open_floor = || {
        let mine = EphemeralPrivateKey::generate(&X25519, &ring_random).unwrap();
        let shared = agree_ephemeral(mine, &UnparsedPublicKey::new(&X25519, &enc), |shared| {
            <[u8; 32]>::try_from(shared).unwrap()
        })
        .unwrap();
        let mut buffer = black_box(&ciphertext).clone();
        key.open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(b""),
            &mut buffer,
        )
        .unwrap();
        shared
    };
    group.bench_function("raw/x25519_agreement_and_aes_gcm_seal", |b| {
        b.iter(seal_floor)
    });
    group.bench_function("raw/x25519_agreement_and_aes_gcm_open", |b| {
        b.iter(open_floor)
    });
    // The same on the device's side with x25519-dalek's ladder (the one this crate uses: ring
    // keeps no static X25519 keys), to separate HPKE's own cost from the curve's.
    let device_static = x25519_dalek::StaticSecret::from(device.to_bytes());
    let enc_point = x25519_dalek::PublicKey::from(<[u8; 32]>::try_from(enc.as_slice()).unwrap());
    group.bench_function("raw/dalek_x25519_agreement_and_aes_gcm_open", |b| {
        b.iter(|| {
            let shared = device_static.diffie_hellman(black_box(&enc_point));
            let mut buffer = black_box(&ciphertext).clone();
            key.open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(b""),
                &mut buffer,
            )
            .unwrap();
            shared
        })
    });
    group.bench_function("raw/both", |b| b.iter(|| (seal_floor(), open_floor())));
    group.finish();
}

fn serving(c: &mut Criterion) {
    let kit = TestBroker::memory();
    let bank = TestBank::with_settings(&kit, MemoryStore::new(), support::open_gate());
    let customer_service = PlaintextUses::from([(Scope::Balance, Purpose::CustomerService)]);
    bank.bank
        .set_policy(HolderPolicy {
            plaintext: customer_service,
            ..kit.bank.policy().clone()
        })
        .unwrap();
    let sealed = bank.granted(&kit);
    let unsealed = bank
        .approve(&kit, &kit.request(), |statement| {
            statement.plaintext = customer_service;
        })
        .unwrap();
    let random = SeededRandom::new(21);
    let mut group = c.benchmark_group("serve");
    for (name, consent, sealed) in [
        ("sealed_memory", &sealed, true),
        ("unsealed_memory", &unsealed, false),
    ] {
        let access = kit.access(consent.id());
        group.bench_function(name, |b| {
            b.iter_batched(
                || support::token_and_proof(&kit, &access, &random),
                |(token, proof)| {
                    let request = GateRequest {
                        token: &token,
                        proof: &proof,
                        http: GET_BALANCE,
                    };
                    let response = bank.bank.serve(&request, &bank.accounts).unwrap().unwrap();
                    assert_eq!(matches!(response, Response::Sealed(_)), sealed);
                    response
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, sealing, serving);
criterion_main!(benches);

//! Sealed responses: our HPKE against an independent implementation (the `hpke` crate), both
//! ways; what a flipped bit, another key or another context does; and the bank's side of sealing.

use ::hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use consent_broker::hpke::{self, DevicePublicKey, DeviceSecretKey, HpkeError};
use consent_broker::*;

type Kem = ::hpke::kem::X25519HkdfSha256;
type Kdf = ::hpke::kdf::HkdfSha256;
type Aead = ::hpke::aead::AesGcm128;

#[test]
fn ours_and_an_independent_hpke_open_each_other() {
    let random = SystemRandom::new();
    let mut rng = rand::rng();
    for size in [0usize, 1, 15, 16, 17, 1000, 70_000] {
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let info = format!("info {size}").into_bytes();
        let aad = b"aad".to_vec();
        // Ours seals, theirs opens.
        let device = DeviceSecretKey::generate(&random).unwrap();
        let sealed = hpke::seal(&device.public_key(), &info, &aad, &plaintext, &random).unwrap();
        let their_secret =
            <Kem as ::hpke::Kem>::PrivateKey::from_bytes(&device.to_bytes()).unwrap();
        let their_enc = <Kem as ::hpke::Kem>::EncappedKey::from_bytes(&sealed.enc).unwrap();
        let opened = ::hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &their_secret,
            &their_enc,
            &info,
            &sealed.ciphertext,
            &aad,
        )
        .unwrap();
        assert_eq!(opened, plaintext);
        // Theirs seals, ours opens.
        let public =
            <Kem as ::hpke::Kem>::PublicKey::from_bytes(device.public_key().as_bytes()).unwrap();
        let (enc, ciphertext) = ::hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
            &OpModeS::Base,
            &public,
            &info,
            &plaintext,
            &aad,
            &mut rng,
        )
        .unwrap();
        let enc: [u8; 32] = enc.to_bytes().as_slice().try_into().unwrap();
        assert_eq!(
            hpke::open(&device, &enc, &info, &aad, &ciphertext).unwrap(),
            plaintext
        );
    }
}

#[test]
fn a_flipped_bit_another_key_or_another_context_does_not_open() {
    let random = SystemRandom::new();
    let device = DeviceSecretKey::generate(&random).unwrap();
    let other = DeviceSecretKey::generate(&random).unwrap();
    let sealed = hpke::seal(&device.public_key(), b"info", b"aad", b"4200 EUR", &random).unwrap();
    assert_eq!(
        hpke::open(&device, &sealed.enc, b"info", b"aad", &sealed.ciphertext).unwrap(),
        b"4200 EUR"
    );
    for bit in 0..sealed.ciphertext.len() * 8 {
        let mut flipped = sealed.ciphertext.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            hpke::open(&device, &sealed.enc, b"info", b"aad", &flipped),
            Err(HpkeError::OpenFailed),
            "bit {bit}"
        );
    }
    for bit in 0..256 {
        let mut enc = sealed.enc;
        enc[bit / 8] ^= 1 << (bit % 8);
        assert!(hpke::open(&device, &enc, b"info", b"aad", &sealed.ciphertext).is_err());
    }
    assert_eq!(
        hpke::open(&other, &sealed.enc, b"info", b"aad", &sealed.ciphertext),
        Err(HpkeError::OpenFailed)
    );
    assert_eq!(
        hpke::open(&device, &sealed.enc, b"infp", b"aad", &sealed.ciphertext),
        Err(HpkeError::OpenFailed)
    );
    assert_eq!(
        hpke::open(&device, &sealed.enc, b"info", b"aae", &sealed.ciphertext),
        Err(HpkeError::OpenFailed)
    );
    // A low-order point as the recipient or as `enc` is refused, never a zero secret.
    let low_order = DevicePublicKey::from_bytes(&[0u8; 32]).unwrap();
    assert_eq!(
        hpke::seal(&low_order, b"info", b"aad", b"x", &random),
        Err(HpkeError::BadKey)
    );
    assert_eq!(
        hpke::open(&device, &[0u8; 32], b"info", b"aad", &sealed.ciphertext),
        Err(HpkeError::BadKey)
    );
}

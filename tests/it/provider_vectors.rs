//! `RING_PROVIDER` against published vectors, key confusion and malformed input, run through the
//! process-wide provider that `install()` sets up.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use consent_broker::crypto::{Installed, RING_PROVIDER, install};
use jsonwebtoken::crypto::{sign, verify};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, ThumbprintHash};
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation, decode, encode,
    get_current_timestamp,
};
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair,
};

const ALL_ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const ALL_FAMILIES: [AlgorithmFamily; 4] = [
    AlgorithmFamily::Hmac,
    AlgorithmFamily::Rsa,
    AlgorithmFamily::Ec,
    AlgorithmFamily::Ed,
];

// ------------------------------------------------------------------------------------------
// RFC 7515 Appendix A (A.1 to A.3 share the payload).

/// `{"iss":"joe",\r\n "exp":1300819380,\r\n "http://example.com/is_root":true}`
const RFC7515_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

const A1_HEADER: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
const A1_K: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const A1_SIGNATURE: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

const A2_HEADER: &str = "eyJhbGciOiJSUzI1NiJ9";
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_E: &str = "AQAB";
const A2_D: &str = "Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ";
const A2_P: &str = "4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc";
const A2_Q: &str = "uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc";
const A2_DP: &str = "BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0";
const A2_DQ: &str = "h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU";
const A2_QI: &str = "IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U";
const A2_SIGNATURE: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

const A3_HEADER: &str = "eyJhbGciOiJFUzI1NiJ9";
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
const A3_SIGNATURE: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
// RFC 7515 A.4 (ES512, P-521) is not testable: jsonwebtoken has no ES512.

// RFC 8037 Appendix A.1 (key) and A.4 (signature).
const ED_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const ED_SIGNING_INPUT: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
const ED_SIGNATURE: &str =
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
const ED25519_PKCS8_V1_PREFIX: &str = "302e020100300506032b657004220420";

// RFC 7638 section 3.1.
const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
const RFC7638_THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

// ------------------------------------------------------------------------------------------
// Helpers

fn setup() {
    assert_eq!(install(), Ok(Installed::Ours));
}

fn b64(text: &str) -> Vec<u8> {
    B64.decode(text).expect("test vector is base64url")
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn signing_input(header: &str) -> String {
    format!("{header}.{RFC7515_PAYLOAD}")
}

fn flip_bit(bytes: &[u8], index: usize) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    flipped[index] ^= 0x01;
    flipped
}

/// The signature verifies, and stops verifying when one bit of it or of the message flips.
fn assert_verifies_and_tamper_fails(
    signature: &str,
    message: &[u8],
    key: &DecodingKey,
    alg: Algorithm,
) {
    assert_eq!(
        verify(signature, message, key, alg),
        Ok(true),
        "{alg:?} genuine"
    );
    let raw = b64(signature);
    for index in [0, raw.len() / 2, raw.len() - 1] {
        let tampered = B64.encode(flip_bit(&raw, index));
        assert_eq!(
            verify(&tampered, message, key, alg),
            Ok(false),
            "{alg:?} signature bit {index}"
        );
    }
    for index in [0, message.len() - 1] {
        let tampered = flip_bit(message, index);
        assert_eq!(
            verify(signature, &tampered, key, alg),
            Ok(false),
            "{alg:?} message bit {index}"
        );
    }
}

fn der_tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let len_bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | len_bytes.len() as u8);
        out.extend(len_bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// DER INTEGER of a non-negative big-endian magnitude (minimal, with a 0x00 before a high bit).
fn der_uint(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|&b| b == 0).collect();
    let mut contents = Vec::new();
    if trimmed.first().is_none_or(|&b| b & 0x80 != 0) {
        contents.push(0);
    }
    contents.extend(trimmed);
    der_tlv(0x02, &contents)
}

fn der_sequence(items: &[Vec<u8>]) -> Vec<u8> {
    der_tlv(0x30, &items.concat())
}

/// PKCS#1 `RSAPrivateKey` of the RFC 7515 A.2 key.
fn a2_private_der() -> Vec<u8> {
    let mut items = vec![der_uint(&[0])];
    for part in [A2_N, A2_E, A2_D, A2_P, A2_Q, A2_DP, A2_DQ, A2_QI] {
        items.push(der_uint(&b64(part)));
    }
    der_sequence(&items)
}

/// The same key as PKCS#8 v1 (`rsaEncryption`, NULL parameters).
fn a2_pkcs8() -> Vec<u8> {
    let rsa_encryption =
        der_sequence(&[der_tlv(0x06, &hex("2a864886f70d010101")), vec![0x05, 0x00]]);
    der_sequence(&[
        der_uint(&[0]),
        rsa_encryption,
        der_tlv(0x04, &a2_private_der()),
    ])
}

/// PKCS#1 `RSAPublicKey` of the RFC 7515 A.2 key.
fn a2_public_der() -> Vec<u8> {
    der_sequence(&[der_uint(&b64(A2_N)), der_uint(&b64(A2_E))])
}

/// PKCS#8 v1 of the RFC 7515 A.3 P-256 key (ring requires the public key inside).
fn a3_pkcs8() -> Vec<u8> {
    let ec_public_key_oid = der_tlv(0x06, &hex("2a8648ce3d0201"));
    let p256_oid = der_tlv(0x06, &hex("2a8648ce3d030107"));
    let point = [vec![0x00, 0x04], b64(A3_X), b64(A3_Y)].concat();
    let ec_private_key = der_sequence(&[
        der_uint(&[1]),
        der_tlv(0x04, &b64(A3_D)),
        der_tlv(0xa1, &der_tlv(0x03, &point)),
    ]);
    der_sequence(&[
        der_uint(&[0]),
        der_sequence(&[ec_public_key_oid, p256_oid]),
        der_tlv(0x04, &ec_private_key),
    ])
}

fn ed_pkcs8_v1() -> Vec<u8> {
    [hex(ED25519_PKCS8_V1_PREFIX), b64(ED_D)].concat()
}

/// A fresh PKCS#8 ECDSA key and its uncompressed public point.
fn generated_ec(curve: &'static EcdsaSigningAlgorithm) -> (Vec<u8>, Vec<u8>) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(curve, &rng).unwrap();
    let key_pair = EcdsaKeyPair::from_pkcs8(curve, pkcs8.as_ref(), &rng).unwrap();
    (
        pkcs8.as_ref().to_vec(),
        key_pair.public_key().as_ref().to_vec(),
    )
}

/// A working signing and verification key for `alg`.
fn keys_for(alg: Algorithm) -> (EncodingKey, DecodingKey) {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => (
            EncodingKey::from_secret(&b64(A1_K)),
            DecodingKey::from_secret(&b64(A1_K)),
        ),
        Algorithm::ES256 | Algorithm::ES384 => {
            let curve = if alg == Algorithm::ES256 {
                &ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let (pkcs8, point) = generated_ec(curve);
            (
                EncodingKey::from_ec_der(&pkcs8),
                DecodingKey::from_ec_der(&point),
            )
        }
        Algorithm::EdDSA => (
            EncodingKey::from_ed_der(&ed_pkcs8_v1()),
            DecodingKey::from_ed_components(ED_X).unwrap(),
        ),
        _ => (
            EncodingKey::from_rsa_der(&a2_private_der()),
            DecodingKey::from_rsa_components(A2_N, A2_E).unwrap(),
        ),
    }
}

fn family_representative(family: AlgorithmFamily) -> Algorithm {
    match family {
        AlgorithmFamily::Hmac => Algorithm::HS256,
        AlgorithmFamily::Rsa => Algorithm::RS256,
        AlgorithmFamily::Ec => Algorithm::ES256,
        AlgorithmFamily::Ed => Algorithm::EdDSA,
    }
}

fn signer_error(alg: Algorithm, key: &EncodingKey) -> Option<ErrorKind> {
    (RING_PROVIDER.signer_factory)(&alg, key)
        .err()
        .map(|e| e.into_kind())
}

fn verifier_error(alg: Algorithm, key: &DecodingKey) -> Option<ErrorKind> {
    (RING_PROVIDER.verifier_factory)(&alg, key)
        .err()
        .map(|e| e.into_kind())
}

// ------------------------------------------------------------------------------------------
// Published vectors

#[test]
fn rfc7515_a1_hs256_exact() {
    setup();
    // The signing input must be the RFC's exact octets, CRLFs included.
    assert_eq!(b64(A1_HEADER), b"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}");
    assert_eq!(
        b64(RFC7515_PAYLOAD),
        b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}"
    );
    let message = signing_input(A1_HEADER);
    let signature = sign(
        message.as_bytes(),
        &EncodingKey::from_secret(&b64(A1_K)),
        Algorithm::HS256,
    );
    assert_eq!(signature.as_deref(), Ok(A1_SIGNATURE));
    let key = DecodingKey::from_secret(&b64(A1_K));
    assert_verifies_and_tamper_fails(A1_SIGNATURE, message.as_bytes(), &key, Algorithm::HS256);
}

#[test]
fn rfc7515_a2_rs256_exact() {
    setup();
    let message = signing_input(A2_HEADER);
    let signing_key = EncodingKey::from_rsa_der(&a2_private_der());
    assert_eq!(
        sign(message.as_bytes(), &signing_key, Algorithm::RS256).as_deref(),
        Ok(A2_SIGNATURE)
    );
    // PKCS#8 is accepted too, and gives the same deterministic signature.
    let from_pkcs8 = EncodingKey::from_rsa_der(&a2_pkcs8());
    let signature = sign(message.as_bytes(), &from_pkcs8, Algorithm::RS256);
    assert_eq!(signature.as_deref(), Ok(A2_SIGNATURE));

    let from_components = DecodingKey::from_rsa_components(A2_N, A2_E).unwrap();
    assert_verifies_and_tamper_fails(
        A2_SIGNATURE,
        message.as_bytes(),
        &from_components,
        Algorithm::RS256,
    );
    let from_der = DecodingKey::from_rsa_der(&a2_public_der());
    assert_verifies_and_tamper_fails(
        A2_SIGNATURE,
        message.as_bytes(),
        &from_der,
        Algorithm::RS256,
    );
    // A JWK `n` with a (non-conforming) leading zero byte is the same key.
    let padded_n = [vec![0], b64(A2_N)].concat();
    let padded = DecodingKey::from_rsa_raw_components(&padded_n, &b64(A2_E));
    assert_eq!(
        verify(A2_SIGNATURE, message.as_bytes(), &padded, Algorithm::RS256),
        Ok(true)
    );
    // Same key, other padding or hash: must not verify.
    for other in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        assert_eq!(
            verify(A2_SIGNATURE, message.as_bytes(), &from_components, other),
            Ok(false)
        );
    }
}

#[test]
fn rfc7515_a3_es256() {
    setup();
    let message = signing_input(A3_HEADER);
    let key = DecodingKey::from_ec_components(A3_X, A3_Y).unwrap();
    assert_verifies_and_tamper_fails(A3_SIGNATURE, message.as_bytes(), &key, Algorithm::ES256);
    assert_eq!(
        verify(A3_SIGNATURE, message.as_bytes(), &key, Algorithm::ES384),
        Err(ErrorKind::InvalidEcdsaKey.into())
    );

    // ECDSA is randomised: sign with the RFC's private key, then verify with its public key.
    let rfc_signer = EncodingKey::from_ec_der(&a3_pkcs8());
    let signature = sign(message.as_bytes(), &rfc_signer, Algorithm::ES256).unwrap();
    assert_eq!(b64(&signature).len(), 64);
    assert_verifies_and_tamper_fails(&signature, message.as_bytes(), &key, Algorithm::ES256);

    let (signing_key, verifying_key) = keys_for(Algorithm::ES256);
    let signature = sign(message.as_bytes(), &signing_key, Algorithm::ES256).unwrap();
    assert_verifies_and_tamper_fails(
        &signature,
        message.as_bytes(),
        &verifying_key,
        Algorithm::ES256,
    );
    // The RFC key must not accept a signature from a different key.
    assert_eq!(
        verify(&signature, message.as_bytes(), &key, Algorithm::ES256),
        Ok(false)
    );
}

#[test]
fn rfc8037_a4_ed25519_exact() {
    setup();
    let signing_key = EncodingKey::from_ed_der(&ed_pkcs8_v1());
    let signature = sign(ED_SIGNING_INPUT.as_bytes(), &signing_key, Algorithm::EdDSA);
    assert_eq!(signature.as_deref(), Ok(ED_SIGNATURE));
    let key = DecodingKey::from_ed_components(ED_X).unwrap();
    assert_verifies_and_tamper_fails(
        ED_SIGNATURE,
        ED_SIGNING_INPUT.as_bytes(),
        &key,
        Algorithm::EdDSA,
    );

    // PKCS#8 v2 (what ring generates, public key included) signs too.
    let pkcs8_v2 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let public = Ed25519KeyPair::from_pkcs8(pkcs8_v2.as_ref())
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let signature = sign(
        b"v2",
        &EncodingKey::from_ed_der(pkcs8_v2.as_ref()),
        Algorithm::EdDSA,
    )
    .unwrap();
    assert_verifies_and_tamper_fails(
        &signature,
        b"v2",
        &DecodingKey::from_ed_der(&public),
        Algorithm::EdDSA,
    );
    assert_eq!(verify(&signature, b"v2", &key, Algorithm::EdDSA), Ok(false));
}

#[test]
fn round_trips_for_the_other_algorithms() {
    setup();
    let message = b"round trip: consent-broker";
    let round_trips = [
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES384,
    ];
    for alg in round_trips {
        let (signing_key, verifying_key) = keys_for(alg);
        let signature = sign(message, &signing_key, alg).unwrap();
        assert_verifies_and_tamper_fails(&signature, message, &verifying_key, alg);
        // A mis-wired hash or padding would make siblings interchangeable.
        for sibling in alg
            .family()
            .algorithms()
            .iter()
            .copied()
            .filter(|&other| other != alg)
        {
            let accepted = verify(&signature, message, &verifying_key, sibling);
            assert_ne!(
                accepted,
                Ok(true),
                "{alg:?} signature accepted as {sibling:?}"
            );
        }
    }
    // PSS is randomised, PKCS#1 v1.5 is not.
    let (rsa_key, _) = keys_for(Algorithm::PS256);
    assert_ne!(
        sign(message, &rsa_key, Algorithm::PS256),
        sign(message, &rsa_key, Algorithm::PS256)
    );
    assert_eq!(
        sign(message, &rsa_key, Algorithm::RS256),
        sign(message, &rsa_key, Algorithm::RS256)
    );
}

// ------------------------------------------------------------------------------------------
// Key confusion

#[test]
fn every_algorithm_refuses_every_other_key_family() {
    setup();
    for alg in ALL_ALGORITHMS {
        let (own_signing, own_verifying) = keys_for(alg);
        assert_eq!(
            signer_error(alg, &own_signing),
            None,
            "{alg:?} own signing key"
        );
        assert_eq!(
            verifier_error(alg, &own_verifying),
            None,
            "{alg:?} own verifying key"
        );
        for family in ALL_FAMILIES
            .into_iter()
            .filter(|&family| family != alg.family())
        {
            let (signing, verifying) = keys_for(family_representative(family));
            assert_eq!(
                signer_error(alg, &signing),
                Some(ErrorKind::InvalidKeyFormat),
                "{alg:?} {family:?}"
            );
            assert_eq!(
                verifier_error(alg, &verifying),
                Some(ErrorKind::InvalidKeyFormat),
                "{alg:?} {family:?}"
            );
            assert_eq!(
                sign(b"m", &signing, alg),
                Err(ErrorKind::InvalidKeyFormat.into())
            );
            assert_eq!(
                verify("AAAA", b"m", &verifying, alg),
                Err(ErrorKind::InvalidKeyFormat.into())
            );
        }
    }
}

#[test]
fn ed25519_public_key_is_never_an_hmac_secret() {
    setup();
    let ed_public = DecodingKey::from_ed_components(ED_X).unwrap();
    assert_eq!(
        verifier_error(Algorithm::HS256, &ed_public),
        Some(ErrorKind::InvalidKeyFormat)
    );

    // The forgery: an HS256 token MACed with the bytes of the verifier's Ed25519 public key.
    let claims = serde_json::json!({ "sub": "attacker", "exp": get_current_timestamp() + 3600 });
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&b64(ED_X)),
    )
    .unwrap();
    // Control: the token itself is well formed and valid under the MAC key.
    let as_mac_key = DecodingKey::from_secret(&b64(ED_X));
    let decoded =
        decode::<serde_json::Value>(&forged, &as_mac_key, &Validation::new(Algorithm::HS256));
    assert_eq!(decoded.unwrap().claims["sub"], "attacker");

    // Even a validation that (wrongly) allows HS256 reaches our factory, which refuses.
    let mut careless = Validation::new(Algorithm::EdDSA);
    careless.algorithms.push(Algorithm::HS256);
    for validation in [careless, Validation::new(Algorithm::HS256)] {
        let refused = decode::<serde_json::Value>(&forged, &ed_public, &validation).unwrap_err();
        assert_eq!(refused.kind(), &ErrorKind::InvalidKeyFormat);
    }
    let refused =
        decode::<serde_json::Value>(&forged, &ed_public, &Validation::new(Algorithm::EdDSA));
    assert_eq!(refused.unwrap_err().kind(), &ErrorKind::InvalidAlgorithm);
}

// ------------------------------------------------------------------------------------------
// Malformed input

#[test]
fn malformed_signatures_are_rejected_without_panicking() {
    setup();
    let message = b"malformed signatures";
    for alg in ALL_ALGORITHMS {
        let (signing_key, verifying_key) = keys_for(alg);
        let genuine = b64(&sign(message, &signing_key, alg).unwrap());
        let verifier = (RING_PROVIDER.verifier_factory)(&alg, &verifying_key).unwrap();
        let mut zeros_same_length = genuine.clone();
        zeros_same_length.fill(0);
        let candidates = [
            Vec::new(),
            vec![0],
            genuine[..genuine.len() - 1].to_vec(),
            genuine[..genuine.len() / 2].to_vec(),
            [genuine.as_slice(), &[0]].concat(),
            genuine.repeat(2),
            vec![0xff; 10_000],
            zeros_same_length,
        ];
        for candidate in candidates {
            assert!(
                verifier.verify(message, &candidate).is_err(),
                "{alg:?} len {}",
                candidate.len()
            );
            assert_eq!(
                verify(&B64.encode(&candidate), message, &verifying_key, alg),
                Ok(false)
            );
        }
        assert!(
            verifier.verify(message, &genuine).is_ok(),
            "{alg:?} control"
        );
        assert!(matches!(
            verify("not base64!", message, &verifying_key, alg).map_err(|e| e.into_kind()),
            Err(ErrorKind::Base64(_))
        ));
    }
}

#[test]
fn garbage_signing_keys_get_the_matching_error() {
    setup();
    let mut garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![0x30],
        vec![0x30, 0x82, 0xff, 0xff],
        vec![0x5a; 300],
    ];
    let rsa_der = a2_private_der();
    garbage.extend([
        rsa_der[..rsa_der.len() - 1].to_vec(),
        [rsa_der.as_slice(), &[0]].concat(),
    ]);
    for bytes in &garbage {
        for alg in [Algorithm::RS256, Algorithm::PS512] {
            let kind = signer_error(alg, &EncodingKey::from_rsa_der(bytes));
            assert!(
                matches!(kind, Some(ErrorKind::InvalidRsaKey(_))),
                "{alg:?} {kind:?}"
            );
        }
        for alg in [Algorithm::ES256, Algorithm::ES384] {
            assert_eq!(
                signer_error(alg, &EncodingKey::from_ec_der(bytes)),
                Some(ErrorKind::InvalidEcdsaKey)
            );
        }
        assert_eq!(
            signer_error(Algorithm::EdDSA, &EncodingKey::from_ed_der(bytes)),
            Some(ErrorKind::InvalidEddsaKey)
        );
    }
    // Every truncation of valid keys, too.
    let ec_pkcs8 = a3_pkcs8();
    let ed_pkcs8 = ed_pkcs8_v1();
    for len in 0..rsa_der.len() {
        assert!(
            signer_error(
                Algorithm::RS256,
                &EncodingKey::from_rsa_der(&rsa_der[..len])
            )
            .is_some()
        );
    }
    for len in 0..ec_pkcs8.len() {
        assert!(
            signer_error(
                Algorithm::ES256,
                &EncodingKey::from_ec_der(&ec_pkcs8[..len])
            )
            .is_some()
        );
    }
    for len in 0..ed_pkcs8.len() {
        assert!(
            signer_error(
                Algorithm::EdDSA,
                &EncodingKey::from_ed_der(&ed_pkcs8[..len])
            )
            .is_some()
        );
    }
    // A key for the other curve.
    assert_eq!(
        signer_error(Algorithm::ES384, &EncodingKey::from_ec_der(&ec_pkcs8)),
        Some(ErrorKind::InvalidEcdsaKey)
    );
    let (p384, _) = generated_ec(&ECDSA_P384_SHA384_FIXED_SIGNING);
    assert_eq!(
        signer_error(Algorithm::ES256, &EncodingKey::from_ec_der(&p384)),
        Some(ErrorKind::InvalidEcdsaKey)
    );
    // An empty HMAC secret would let anyone compute the MAC.
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert_eq!(
            signer_error(alg, &EncodingKey::from_secret(b"")),
            Some(ErrorKind::InvalidKeyFormat)
        );
        assert_eq!(
            verifier_error(alg, &DecodingKey::from_secret(b"")),
            Some(ErrorKind::InvalidKeyFormat)
        );
        assert_eq!(signer_error(alg, &EncodingKey::from_secret(b"k")), None);
    }
}

#[test]
fn garbage_verification_keys_get_the_matching_error() {
    setup();
    let point = [vec![0x04], b64(A3_X), b64(A3_Y)].concat();
    let bad_points = [
        Vec::new(),
        point[1..].to_vec(),
        [vec![0x03], point[1..].to_vec()].concat(),
        point[..64].to_vec(),
        [point.as_slice(), &[0]].concat(),
    ];
    for bad in &bad_points {
        assert_eq!(
            verifier_error(Algorithm::ES256, &DecodingKey::from_ec_der(bad)),
            Some(ErrorKind::InvalidEcdsaKey)
        );
    }
    assert_eq!(
        verifier_error(Algorithm::ES256, &DecodingKey::from_ec_der(&point)),
        None
    );
    assert_eq!(
        verifier_error(Algorithm::ES384, &DecodingKey::from_ec_der(&point)),
        Some(ErrorKind::InvalidEcdsaKey)
    );

    let ed = b64(ED_X);
    for bad in [
        Vec::new(),
        ed[..31].to_vec(),
        [ed.as_slice(), &[0]].concat(),
    ] {
        assert_eq!(
            verifier_error(Algorithm::EdDSA, &DecodingKey::from_ed_der(&bad)),
            Some(ErrorKind::InvalidEddsaKey)
        );
    }

    let n = b64(A2_N);
    let e = b64(A2_E);
    let bad_components: [(&[u8], &[u8]); 7] = [
        (&n[..128], &e),           // 1024-bit modulus
        (&[], &e),                 // no modulus
        (&[0; 300], &e),           // zero modulus
        (&[0xff; 1025], &e),       // 8200-bit modulus
        (&n, &[1]),                // e = 1
        (&n, &[1, 0, 0]),          // even e
        (&n, &[1, 0, 0, 0, 0, 1]), // 41-bit e
    ];
    for (bad_n, bad_e) in bad_components {
        let kind = verifier_error(
            Algorithm::RS256,
            &DecodingKey::from_rsa_raw_components(bad_n, bad_e),
        );
        assert!(
            matches!(kind, Some(ErrorKind::InvalidRsaKey(_))),
            "{kind:?}"
        );
    }
    assert_eq!(
        verifier_error(
            Algorithm::RS256,
            &DecodingKey::from_rsa_raw_components(&n, &e)
        ),
        None
    );
}

/// Exercised through `rsa_pub_components_from_public_key` and the RS256 verifier, which share
/// the DER reader.
#[test]
fn rsa_public_key_der_reader_is_strict_and_bounds_checked() {
    setup();
    let parse = RING_PROVIDER.key_utils.rsa_pub_components_from_public_key;
    let valid = a2_public_der();
    assert_eq!(parse(&valid), Ok((b64(A2_N), b64(A2_E))));

    let n_int = der_uint(&b64(A2_N));
    let e_int = der_uint(&b64(A2_E));
    let mut negative_e = e_int.clone();
    negative_e[2] |= 0x80;
    let malformed: Vec<Vec<u8>> = vec![
        [valid.as_slice(), &[0]].concat(),          // trailing byte
        der_sequence(std::slice::from_ref(&n_int)), // no exponent
        der_sequence(&[n_int.clone(), e_int.clone(), e_int.clone()]), // extra element
        der_sequence(&[n_int.clone(), negative_e]), // negative exponent
        der_sequence(&[n_int.clone(), der_tlv(0x02, &[])]), // empty INTEGER
        der_sequence(&[der_tlv(0x02, &[0, 0]), e_int.clone()]), // zero modulus
        der_sequence(&[n_int.clone(), der_tlv(0x04, &b64(A2_E))]), // OCTET STRING, not INTEGER
        der_tlv(0x31, &[n_int.clone(), e_int.clone()].concat()), // SET, not SEQUENCE
        [&[0x30, 0x80][..], &n_int, &e_int, &[0, 0]].concat(), // BER indefinite length
        [&[0x30, 0x81, 0x06][..], &der_uint(&[3]), &der_uint(&[3])].concat(), // non-minimal length
        [&[0x30, 0x85, 0, 0, 0, 1, 0x0a][..], &n_int, &e_int].concat(), // five length bytes
        vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],   // length past the end
    ];
    for (index, der) in malformed.iter().enumerate() {
        assert!(
            matches!(
                parse(der).map_err(|e| e.into_kind()),
                Err(ErrorKind::InvalidRsaKey(_))
            ),
            "case {index}"
        );
        let kind = verifier_error(Algorithm::RS256, &DecodingKey::from_rsa_der(der));
        assert!(
            matches!(kind, Some(ErrorKind::InvalidRsaKey(_))),
            "case {index}: {kind:?}"
        );
    }
    for len in 0..valid.len() {
        assert!(parse(&valid[..len]).is_err(), "prefix {len}");
    }
}

// ------------------------------------------------------------------------------------------
// KeyUtils

#[test]
fn key_utils_match_the_published_keys() {
    setup();
    let utils = &RING_PROVIDER.key_utils;
    assert_eq!(
        (utils.rsa_pub_components_from_private_key)(&a2_pkcs8()),
        Ok((b64(A2_N), b64(A2_E)))
    );
    assert_eq!(
        (utils.rsa_pub_components_from_private_key)(&a2_private_der()),
        Ok((b64(A2_N), b64(A2_E)))
    );
    assert_eq!(
        (utils.ed_pub_components_from_private_key)(&ed_pkcs8_v1(), &EllipticCurve::Ed25519),
        Ok(b64(ED_X))
    );
    assert_eq!(
        (utils.ed_pub_components_from_private_key)(&ed_pkcs8_v1(), &EllipticCurve::P256),
        Err(ErrorKind::InvalidAlgorithm.into())
    );
    assert_eq!(
        (utils.ec_pub_components_from_private_key)(&a3_pkcs8(), Algorithm::ES256),
        Ok((EllipticCurve::P256, b64(A3_X), b64(A3_Y)))
    );
    assert_eq!(
        (utils.ec_pub_components_from_private_key)(&a3_pkcs8(), Algorithm::ES384),
        Err(ErrorKind::InvalidEcdsaKey.into())
    );
    let (p384, point) = generated_ec(&ECDSA_P384_SHA384_FIXED_SIGNING);
    let (curve, x, y) =
        (utils.ec_pub_components_from_private_key)(&p384, Algorithm::ES384).unwrap();
    assert_eq!(
        (curve, [vec![0x04], x, y].concat()),
        (EllipticCurve::P384, point)
    );

    // FIPS 180-2 known answers for "abc".
    let digests = [
        (
            ThumbprintHash::SHA256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            ThumbprintHash::SHA384,
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
        ),
        (
            ThumbprintHash::SHA512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
    ];
    for (hash, expected) in digests {
        assert_eq!((utils.compute_digest)(b"abc", hash), Ok(hex(expected)));
    }
}

#[test]
fn jwk_helpers_run_through_the_installed_provider() {
    setup();
    // RFC 7638 section 3.1 thumbprint (SHA-256 via `compute_digest`).
    let rfc7638 = DecodingKey::from_rsa_components(RFC7638_N, "AQAB").unwrap();
    let jwk = Jwk::from_decoding_key(&rfc7638, None).unwrap();
    assert_eq!(
        jwk.thumbprint(ThumbprintHash::SHA256).unwrap(),
        RFC7638_THUMBPRINT
    );

    let from_der =
        Jwk::from_decoding_key(&DecodingKey::from_rsa_der(&a2_public_der()), None).unwrap();
    let from_private = Jwk::from_encoding_key(
        &EncodingKey::from_rsa_der(&a2_private_der()),
        Algorithm::RS256,
    )
    .unwrap();
    for jwk in [from_der, from_private] {
        let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
            panic!("not an RSA JWK")
        };
        assert_eq!((rsa.n.as_str(), rsa.e.as_str()), (A2_N, A2_E));
    }
    let ec =
        Jwk::from_encoding_key(&EncodingKey::from_ec_der(&a3_pkcs8()), Algorithm::ES256).unwrap();
    let AlgorithmParameters::EllipticCurve(ec) = ec.algorithm else {
        panic!("not an EC JWK")
    };
    assert_eq!((ec.x.as_str(), ec.y.as_str()), (A3_X, A3_Y));
    let ed = Jwk::from_encoding_key(&EncodingKey::from_ed_der(&ed_pkcs8_v1()), Algorithm::EdDSA)
        .unwrap();
    let AlgorithmParameters::OctetKeyPair(ed) = ed.algorithm else {
        panic!("not an OKP JWK")
    };
    assert_eq!(ed.x, ED_X);
}

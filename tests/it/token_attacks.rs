//! Every attack on an access token is refused, each with its own error.
//!
//! The broker is built with an Ed25519 key whose PKCS#8 bytes the test keeps, so that tokens can
//! be re-signed by hand with exactly one thing wrong: each test passes every check before the one
//! it aims at, and asserts the precise [`TokenError`] that check produces. The first tests show
//! that the hand signer is sound (a re-signed copy of a genuine token is byte-identical and
//! verifies), so a refusal below is caused by the one change, not by the signer.

use crate::support::*;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use consent_broker::*;
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use serde_json::{Value, json};
use time::Duration;

type Verifier = TokenVerifier<StoreStatus<Arc<MemoryStore>>>;

// ---------------------------------------------------------------------------------------------
// Helpers

fn segments(token: &str) -> [String; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS");
    [parts[0].into(), parts[1].into(), parts[2].into()]
}

fn decoded_json(segment: &str) -> Value {
    serde_json::from_slice(&unb64(segment)).unwrap()
}

/// A fresh Ed25519 key, as PKCS#8 DER.
fn new_pkcs8() -> Vec<u8> {
    SigningKey::generate(&SystemRandom::new())
        .unwrap()
        .to_pkcs8_der()
        .to_vec()
}

fn kid_of(pkcs8: &[u8]) -> String {
    SigningKey::from_pkcs8_der(pkcs8).unwrap().kid().to_owned()
}

/// Ed25519 over `input` with `pkcs8`, straight from ring.
fn ed25519(pkcs8: &[u8], input: &[u8]) -> Vec<u8> {
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .unwrap()
        .sign(input)
        .as_ref()
        .to_vec()
}

/// A compact JWS over the raw header and payload bytes, signed with Ed25519 by `pkcs8`.
fn sign_raw(pkcs8: &[u8], header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = ed25519(pkcs8, input.as_bytes());
    format!("{input}.{}", b64(signature))
}

/// A compact JWS whose signing input is given already encoded.
fn sign_input(pkcs8: &[u8], header_b64: &str, payload_b64: &str) -> String {
    let input = format!("{header_b64}.{payload_b64}");
    let signature = ed25519(pkcs8, input.as_bytes());
    format!("{input}.{}", b64(signature))
}

fn claim(name: &str, problem: ClaimProblem) -> TokenError {
    TokenError::Claim {
        claim: name.into(),
        problem,
    }
}

/// `token` with one bit of one segment's decoded bytes flipped, re-encoded.
fn flip_bit(token: &str, part: usize, byte: usize, bit: u8) -> String {
    let mut parts = segments(token);
    let mut bytes = unb64(&parts[part]);
    bytes[byte] ^= 1 << bit;
    parts[part] = b64(bytes);
    parts.join(".")
}

/// `bytes` padded with trailing JSON whitespace until its padded base64url form ends in `=`.
fn needing_padding(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len().is_multiple_of(3) {
        bytes.push(b' ');
    }
    bytes
}

fn issue(fx: &Fixture<Arc<MemoryStore>>, access: &AccessRequest) -> AccessToken {
    match fx.broker.authorise_with_token(access).unwrap() {
        TokenOutcome::Issued(token) => token,
        TokenOutcome::Denied(denial) => panic!("expected a token, got {denial:?}"),
    }
}

/// The common fixture's setup, but with a broker that signs with `pkcs8` (configured further by
/// `configure`) over an `Arc<MemoryStore>` a verifier can share.
fn keyed_fixture_with(
    pkcs8: &[u8],
    configure: impl FnOnce(
        BrokerBuilder<Arc<MemoryStore>, BrokerKeys>,
    ) -> BrokerBuilder<Arc<MemoryStore>, BrokerKeys>,
) -> Fixture<Arc<MemoryStore>> {
    Fixture::sharing(Arc::new(MemoryStore::new()), |builder| {
        configure(builder.keys(keys_with_token(SigningKey::from_pkcs8_der(pkcs8).unwrap())))
    })
}

fn keyed_fixture(pkcs8: &[u8]) -> Fixture<Arc<MemoryStore>> {
    keyed_fixture_with(pkcs8, |builder| builder)
}

fn verifier_for<St: ConsentStatusSource>(
    fx: &Fixture<Arc<MemoryStore>>,
    holder: &HolderId,
    status: St,
) -> TokenVerifier<St> {
    TokenVerifier::new(
        holder.clone(),
        fx.broker.id().clone(),
        &fx.broker.jwks().unwrap(),
        fx.clock.clone(),
        status,
    )
    .unwrap()
}

/// Registers another holder at the fixture's broker, with its own attestation signer.
fn register_holder(fx: &Fixture<Arc<MemoryStore>>, name: &str) -> AttestationSigner {
    let holder: HolderId = id(name);
    let signer =
        AttestationSigner::new(holder.clone(), SigningKey::generate(&fx.rng).unwrap()).unwrap();
    fx.broker
        .register_holder(HolderRegistration {
            id: holder,
            policy: HolderPolicy::default(),
            attestation_keys: vec![signer.public_key()],
        })
        .unwrap();
    signer
}

/// Requests `draft` and approves everything in it, attested by `signer`.
fn grant(
    fx: &Fixture<Arc<MemoryStore>>,
    draft: ConsentRequestDraft,
    signer: &AttestationSigner,
) -> ConsentId {
    let request = fx.broker.request_consent(draft).unwrap();
    let statement = fx.full_statement(&request);
    let attestation = signer
        .sign(&statement, fx.broker.id(), fx.broker.now(), &fx.rng)
        .unwrap();
    fx.broker.approve(request.id(), &attestation).unwrap();
    request.id().clone()
}

/// A broker with a known key, a live grant, a token issued for it, and the bank's verifier.
struct Attack {
    fx: Fixture<Arc<MemoryStore>>,
    pkcs8: Vec<u8>,
    kid: String,
    consent: ConsentId,
    issued: AccessToken,
    verifier: Verifier,
}

impl Attack {
    fn new() -> Self {
        let pkcs8 = new_pkcs8();
        let fx = keyed_fixture(&pkcs8);
        let consent = fx.granted().id().clone();
        let issued = issue(&fx, &fx.access(&consent));
        let verifier = verifier_for(&fx, &fx.bank, StoreStatus(fx.shared_store()));
        Self {
            kid: kid_of(&pkcs8),
            fx,
            pkcs8,
            consent: consent.clone(),
            issued,
            verifier,
        }
    }

    /// Another verifier for the bank over the same store, to configure differently.
    fn bank_verifier(&self) -> Verifier {
        verifier_for(&self.fx, &self.fx.bank, StoreStatus(self.fx.shared_store()))
    }

    fn verify(&self, token: &str) -> Result<VerifiedAccess, TokenError> {
        self.verifier.verify(token)
    }

    fn token(&self) -> &str {
        &self.issued.token
    }

    fn now(&self) -> i64 {
        self.fx.broker.now().unix_timestamp()
    }

    /// The genuine token's header.
    fn header(&self) -> Value {
        decoded_json(&segments(self.token())[0])
    }

    /// The genuine token's claims.
    fn claims(&self) -> Value {
        decoded_json(&segments(self.token())[1])
    }

    /// `header` and `claims`, validly signed with the broker's key.
    fn forge(&self, header: &Value, claims: &Value) -> String {
        sign_raw(
            &self.pkcs8,
            header.to_string().as_bytes(),
            claims.to_string().as_bytes(),
        )
    }

    /// The genuine header and `payload` (raw bytes), validly signed with the broker's key.
    fn forge_payload(&self, payload: &[u8]) -> String {
        sign_raw(&self.pkcs8, self.header().to_string().as_bytes(), payload)
    }

    /// The genuine claims with `name` set to `value`.
    fn with_claim(&self, name: &str, value: Value) -> String {
        let mut claims = self.claims();
        claims[name] = value;
        self.forge(&self.header(), &claims)
    }

    /// The genuine claims without `name`.
    fn without_claim(&self, name: &str) -> String {
        let mut claims = self.claims();
        claims.as_object_mut().unwrap().remove(name).unwrap();
        self.forge(&self.header(), &claims)
    }

    /// The genuine claims with `name` set to the literal JSON text `raw`.
    fn with_raw_claim(&self, name: &str, raw: &str) -> String {
        let marker = "@@RAW@@";
        let mut claims = self.claims();
        claims[name] = json!(marker);
        let payload = claims.to_string().replace(&format!("\"{marker}\""), raw);
        self.forge_payload(payload.as_bytes())
    }

    /// The genuine claims with new times.
    fn with_times(&self, iat: i64, nbf: i64, exp: i64) -> String {
        let mut claims = self.claims();
        claims["iat"] = json!(iat);
        claims["nbf"] = json!(nbf);
        claims["exp"] = json!(exp);
        self.forge(&self.header(), &claims)
    }

    /// The genuine header with `name` set to `value`, and the genuine claims.
    fn with_header(&self, name: &str, value: Value) -> String {
        let mut header = self.header();
        header[name] = value;
        self.forge(&header, &self.claims())
    }

    fn without_header(&self, name: &str) -> String {
        let mut header = self.header();
        header.as_object_mut().unwrap().remove(name).unwrap();
        self.forge(&header, &self.claims())
    }
}

// ---------------------------------------------------------------------------------------------
// The baseline, and the hand signer is sound

#[test]
fn genuine_token_verifies_with_its_bound_claims() {
    let at = Attack::new();
    let access = at.verify(at.token()).unwrap();
    assert_eq!(access.consent(), &at.consent);
    assert_eq!(access.subject(), &at.fx.alice);
    assert_eq!(access.platform(), &at.fx.platform);
    assert_eq!(access.holder(), &at.fx.bank);
    assert_eq!(access.scope(), Scope::Balance);
    assert_eq!(access.purpose(), Purpose::CustomerService);
    assert_eq!(access.account(), &at.fx.current);
    assert_eq!(access.token_id(), Some(at.issued.token_id.as_str()));
    assert_eq!(at.issued.key_id, at.kid);
    assert_eq!(
        at.header(),
        json!({ "typ": "at+jwt", "alg": "EdDSA", "kid": at.kid })
    );
}

#[test]
fn resigned_copy_of_the_genuine_token_is_identical_and_verifies() {
    let at = Attack::new();
    let [header, payload, _] = segments(at.token());
    // Same bytes, same key: Ed25519 is deterministic, so the hand signer reproduces the token.
    assert_eq!(
        sign_raw(&at.pkcs8, &unb64(&header), &unb64(&payload)),
        at.token()
    );
    // Re-serialized JSON (other bytes, same meaning) verifies to the same access.
    let resigned = at.forge(&at.header(), &at.claims());
    let expected = at.verify(at.token()).unwrap();
    assert_eq!(at.verify(&resigned).unwrap(), expected);
}

// ---------------------------------------------------------------------------------------------
// Tampering

#[test]
fn tampered_header_is_a_bad_signature() {
    let at = Attack::new();
    // Flip the ASCII case bit of the `a` of "at+jwt": typ compares case-insensitively, so every
    // header check still passes and only the signature can catch the change.
    let header = unb64(&segments(at.token())[0]);
    let typ_at = header.windows(8).position(|w| w == b"\"at+jwt\"").unwrap();
    let tampered = flip_bit(at.token(), 0, typ_at + 1, 5);
    assert_eq!(
        decoded_json(&segments(&tampered)[0])["typ"],
        json!("At+jwt")
    );
    assert_eq!(at.verify(&tampered).err(), Some(TokenError::BadSignature));
}

#[test]
fn every_single_bit_flip_in_the_header_is_refused() {
    let at = Attack::new();
    let len = unb64(&segments(at.token())[0]).len();
    for byte in 0..len {
        for bit in 0..8 {
            let tampered = flip_bit(at.token(), 0, byte, bit);
            assert!(
                at.verify(&tampered).is_err(),
                "header byte {byte} bit {bit} flipped was accepted"
            );
        }
    }
}

#[test]
fn every_single_bit_flip_in_the_payload_is_a_bad_signature() {
    let at = Attack::new();
    let len = unb64(&segments(at.token())[1]).len();
    for byte in 0..len {
        for bit in 0..8 {
            let tampered = flip_bit(at.token(), 1, byte, bit);
            assert_eq!(
                at.verify(&tampered).err(),
                Some(TokenError::BadSignature),
                "payload byte {byte} bit {bit}"
            );
        }
    }
}

#[test]
fn every_single_bit_flip_in_the_signature_is_a_bad_signature() {
    let at = Attack::new();
    for byte in 0..64 {
        for bit in 0..8 {
            let tampered = flip_bit(at.token(), 2, byte, bit);
            assert_eq!(
                at.verify(&tampered).err(),
                Some(TokenError::BadSignature),
                "signature byte {byte} bit {bit}"
            );
        }
    }
}

#[test]
fn signature_with_noncanonical_trailing_bits_is_refused_as_base64() {
    let at = Attack::new();
    let [header, payload, signature] = segments(at.token());
    // 64 bytes are 86 characters; the last one carries 2 data bits and 4 bits that must be 0.
    let last = signature.as_bytes()[85];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value = alphabet.iter().position(|&c| c == last).unwrap();
    let noncanonical = alphabet[value | 0b0001] as char;
    let mut altered = signature[..85].to_owned();
    altered.push(noncanonical);
    assert_ne!(altered, signature);
    let token = format!("{header}.{payload}.{altered}");
    assert_eq!(
        at.verify(&token).err(),
        Some(TokenError::Base64(TokenPart::Signature))
    );
}

// ---------------------------------------------------------------------------------------------
// Keys and algorithms

#[test]
fn valid_signature_by_another_key_under_the_brokers_kid_is_a_bad_signature() {
    let at = Attack::new();
    let attacker = new_pkcs8();
    let token = sign_raw(
        &attacker,
        at.header().to_string().as_bytes(),
        at.claims().to_string().as_bytes(),
    );
    assert_eq!(at.verify(&token).err(), Some(TokenError::BadSignature));
}

#[test]
fn valid_signature_by_another_key_under_its_own_kid_is_an_unknown_key() {
    let at = Attack::new();
    let attacker = new_pkcs8();
    let mut header = at.header();
    header["kid"] = json!(kid_of(&attacker));
    let token = sign_raw(
        &attacker,
        header.to_string().as_bytes(),
        at.claims().to_string().as_bytes(),
    );
    assert_eq!(at.verify(&token).err(), Some(TokenError::UnknownKey));
}

#[test]
fn unknown_kid_is_an_unknown_key() {
    let at = Attack::new();
    for kid in ["no-such-key", "", "0"] {
        assert_eq!(
            at.verify(&at.with_header("kid", json!(kid))).err(),
            Some(TokenError::UnknownKey),
            "kid {kid:?}"
        );
    }
}

#[test]
fn missing_kid_is_a_missing_key_id() {
    let at = Attack::new();
    assert_eq!(
        at.verify(&at.without_header("kid")).err(),
        Some(TokenError::MissingKeyId)
    );
    // A kid that is not a string is no kid either.
    for kid in [json!(null), json!(1), json!([at.kid])] {
        assert_eq!(
            at.verify(&at.with_header("kid", kid.clone())).err(),
            Some(TokenError::MissingKeyId),
            "kid {kid}"
        );
    }
}

#[test]
fn alg_none_in_any_case_with_an_empty_signature_is_algorithm_none() {
    let at = Attack::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let mut header = at.header();
        header["alg"] = json!(alg);
        let token = format!(
            "{}.{}.",
            b64(header.to_string()),
            b64(at.claims().to_string())
        );
        assert_eq!(
            at.verify(&token).err(),
            Some(TokenError::AlgorithmNone),
            "alg {alg}"
        );
        // With the genuine signature kept, still refused for the algorithm.
        let [_, _, signature] = segments(at.token());
        assert_eq!(
            at.verify(&format!("{token}{signature}")).err(),
            Some(TokenError::AlgorithmNone),
            "alg {alg} with a signature"
        );
    }
}

#[test]
fn every_other_algorithm_is_unsupported() {
    let at = Attack::new();
    let algs = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "ES512", "ES256K", "eddsa", "EDDSA", "Eddsa", "Ed25519", "ED25519", "Ed448",
        "EdDSA ", " EdDSA", "",
    ];
    for alg in algs {
        assert_eq!(
            at.verify(&at.with_header("alg", json!(alg))).err(),
            Some(TokenError::UnsupportedAlgorithm(Some(alg.to_owned()))),
            "alg {alg:?}"
        );
    }
}

#[test]
fn missing_or_non_string_alg_is_unsupported() {
    let at = Attack::new();
    assert_eq!(
        at.verify(&at.without_header("alg")).err(),
        Some(TokenError::UnsupportedAlgorithm(None))
    );
    for alg in [
        json!(null),
        json!(["EdDSA"]),
        json!({ "alg": "EdDSA" }),
        json!(1),
    ] {
        assert_eq!(
            at.verify(&at.with_header("alg", alg.clone())).err(),
            Some(TokenError::UnsupportedAlgorithm(None)),
            "alg {alg}"
        );
    }
}

#[test]
fn hs256_maced_with_the_brokers_public_key_is_unsupported() {
    let at = Attack::new();
    let public = SigningKey::from_pkcs8_der(&at.pkcs8).unwrap().public_key();
    let mut header = at.header();
    header["alg"] = json!("HS256");
    let input = format!(
        "{}.{}",
        b64(header.to_string()),
        b64(at.claims().to_string())
    );
    // The secrets a confused verifier might use: the raw key, its `x`, and the whole JWKS.
    let secrets: [Vec<u8>; 3] = [
        public.as_bytes().to_vec(),
        public.to_base64url().into_bytes(),
        at.fx.broker.jwks().unwrap().to_json().into_bytes(),
    ];
    for secret in secrets {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let tag = hmac::sign(&key, input.as_bytes());
        let token = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(
            at.verify(&token).err(),
            Some(TokenError::UnsupportedAlgorithm(Some("HS256".into())))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Framing and encoding

#[test]
fn wrong_segment_counts_are_refused() {
    let at = Attack::new();
    let [header, payload, signature] = segments(at.token());
    let cases = [
        (format!("{header}.{payload}"), 2),
        (format!("{header}.{payload}.{signature}.{signature}"), 4),
        (format!("{header}.{payload}.{signature}."), 4),
        (format!("{header}.{payload}..{signature}"), 4),
        (header.clone(), 1),
        (String::new(), 1),
        ("....".to_owned(), 5),
    ];
    for (token, segments) in cases {
        assert_eq!(
            at.verify(&token).err(),
            Some(TokenError::SegmentCount { segments }),
            "{segments} segments"
        );
    }
}

#[test]
fn non_base64url_characters_in_each_part_are_refused() {
    let at = Attack::new();
    let parts = [TokenPart::Header, TokenPart::Payload, TokenPart::Signature];
    for (index, part) in parts.into_iter().enumerate() {
        for bad in ['+', '/', '*', ' ', '%', '\n'] {
            let mut segs = segments(at.token());
            segs[index].replace_range(4..5, &bad.to_string());
            assert_eq!(
                at.verify(&segs.join(".")).err(),
                Some(TokenError::Base64(part)),
                "{bad:?} in the {part:?}"
            );
        }
        // An empty segment is valid base64 of nothing: an empty header is not JSON, and an
        // empty payload or signature fails the signature check (before the payload is parsed).
        let mut segs = segments(at.token());
        segs[index].clear();
        let expected = match part {
            TokenPart::Header => TokenError::Json(part),
            _ => TokenError::BadSignature,
        };
        assert_eq!(at.verify(&segs.join(".")).err(), Some(expected), "{part:?}");
    }
}

#[test]
fn padded_base64_in_each_part_is_refused() {
    let at = Attack::new();
    let header = needing_padding(at.header().to_string().into_bytes());
    let payload = needing_padding(at.claims().to_string().into_bytes());
    let (header_padded, payload_padded) = (URL_SAFE.encode(&header), URL_SAFE.encode(&payload));
    assert!(header_padded.ends_with('=') && payload_padded.ends_with('='));
    let (header_plain, payload_plain) = (b64(&header), b64(&payload));
    // The unpadded form of the very same bytes verifies: only the padding is refused.
    assert!(
        at.verify(&sign_input(&at.pkcs8, &header_plain, &payload_plain))
            .is_ok()
    );
    // Signed over the padded signing input, so a lenient verifier would accept it.
    assert_eq!(
        at.verify(&sign_input(&at.pkcs8, &header_padded, &payload_plain))
            .err(),
        Some(TokenError::Base64(TokenPart::Header))
    );
    assert_eq!(
        at.verify(&sign_input(&at.pkcs8, &header_plain, &payload_padded))
            .err(),
        Some(TokenError::Base64(TokenPart::Payload))
    );
    let [h, p, signature] = segments(at.token());
    let signature_padded = URL_SAFE.encode(unb64(&signature));
    assert!(signature_padded.ends_with("=="));
    assert_eq!(
        at.verify(&format!("{h}.{p}.{signature_padded}")).err(),
        Some(TokenError::Base64(TokenPart::Signature))
    );
    // A lone `=` appended to any part.
    let parts = [TokenPart::Header, TokenPart::Payload, TokenPart::Signature];
    for (index, part) in parts.into_iter().enumerate() {
        let mut segs = segments(at.token());
        segs[index].push('=');
        assert_eq!(
            at.verify(&segs.join(".")).err(),
            Some(TokenError::Base64(part)),
            "{part:?}"
        );
    }
}

#[test]
fn header_that_is_not_a_utf8_json_object_is_refused() {
    let at = Attack::new();
    let mut invalid_utf8 =
        format!(r#"{{"typ":"at+jwt","alg":"EdDSA","kid":"{}","x":""#, at.kid).into_bytes();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(b"\"}");
    let array = json!([at.header()]).to_string().into_bytes();
    let headers: [Vec<u8>; 7] = [
        b"{\"alg\":\"EdDSA\"".to_vec(),
        b"not json".to_vec(),
        array,
        b"\"EdDSA\"".to_vec(),
        b"null".to_vec(),
        format!("{}x", at.header()).into_bytes(),
        invalid_utf8,
    ];
    for header in headers {
        let token = sign_raw(&at.pkcs8, &header, at.claims().to_string().as_bytes());
        assert_eq!(
            at.verify(&token).err(),
            Some(TokenError::Json(TokenPart::Header)),
            "header {}",
            String::from_utf8_lossy(&header)
        );
    }
}

#[test]
fn validly_signed_payload_that_is_not_a_utf8_json_object_is_refused() {
    let at = Attack::new();
    let claims = at.claims().to_string();
    let unterminated = &claims.as_bytes()[..claims.len() - 1];
    let mut invalid_utf8 = unterminated.to_vec();
    invalid_utf8.extend_from_slice(b",\"x\":\"");
    invalid_utf8.extend_from_slice(&[0xc3, 0x28]);
    invalid_utf8.extend_from_slice(b"\"}");
    let payloads: [Vec<u8>; 7] = [
        unterminated.to_vec(),
        b"not json".to_vec(),
        json!([at.claims()]).to_string().into_bytes(),
        b"42".to_vec(),
        b"".to_vec(),
        format!("{claims}{claims}").into_bytes(),
        invalid_utf8,
    ];
    for payload in payloads {
        assert_eq!(
            at.verify(&at.forge_payload(&payload)).err(),
            Some(TokenError::Json(TokenPart::Payload)),
            "payload {}",
            String::from_utf8_lossy(&payload)
        );
    }
}

/// The genuine claims plus a `pad` claim, re-signed, padded until the token is `len` bytes.
fn token_of_length(at: &Attack, len: usize) -> String {
    let start = (len.saturating_sub(at.token().len()) * 3 / 4).saturating_sub(16);
    for spaces in 0..4 {
        let header = format!("{}{}", at.header(), " ".repeat(spaces));
        for pad in start..len {
            let mut claims = at.claims();
            claims["pad"] = json!("x".repeat(pad));
            let token = sign_raw(&at.pkcs8, header.as_bytes(), claims.to_string().as_bytes());
            if token.len() == len {
                return token;
            }
            if token.len() > len {
                break;
            }
        }
    }
    panic!("no token of length {len}");
}

#[test]
fn oversized_token_is_too_large() {
    let at = Attack::new();
    let garbage = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        at.verify(&garbage).err(),
        Some(TokenError::TooLarge {
            len: MAX_TOKEN_LEN + 1
        })
    );
    // At the limit a validly signed token verifies; one byte more is refused before decoding.
    let at_limit = token_of_length(&at, MAX_TOKEN_LEN);
    assert!(at.verify(&at_limit).is_ok());
    let over = token_of_length(&at, MAX_TOKEN_LEN + 1);
    assert_eq!(
        at.verify(&over).err(),
        Some(TokenError::TooLarge {
            len: MAX_TOKEN_LEN + 1
        })
    );
    let huge = format!("{}.{}", at.token(), "A".repeat(1 << 20));
    assert_eq!(
        at.verify(&huge).err(),
        Some(TokenError::TooLarge { len: huge.len() })
    );
}

// ---------------------------------------------------------------------------------------------
// Times

#[test]
fn expiry_is_exclusive_with_zero_leeway() {
    let at = Attack::new();
    let verifier = at.bank_verifier().with_leeway(Duration::ZERO);
    let exp = at.issued.expires_at;
    assert_eq!(exp, START + Duration::minutes(5));
    at.fx.clock.set(exp - Duration::SECOND);
    assert!(verifier.verify(at.token()).is_ok());
    let expired = Some(TokenError::Expired {
        exp: exp.unix_timestamp(),
    });
    at.fx.clock.set(exp);
    assert_eq!(verifier.verify(at.token()).err(), expired);
    at.fx.clock.set(exp + Duration::SECOND);
    assert_eq!(verifier.verify(at.token()).err(), expired);
}

#[test]
fn expiry_with_the_default_30_second_leeway() {
    let at = Attack::new();
    let exp = at.issued.expires_at;
    at.fx.clock.set(exp + Duration::seconds(29));
    assert!(at.verify(at.token()).is_ok());
    at.fx.clock.set(exp + Duration::seconds(30));
    assert_eq!(
        at.verify(at.token()).err(),
        Some(TokenError::Expired {
            exp: exp.unix_timestamp()
        })
    );
    // A larger leeway is clamped to 30 s.
    let lenient = at.bank_verifier().with_leeway(Duration::hours(1));
    assert_eq!(
        lenient.verify(at.token()).err(),
        Some(TokenError::Expired {
            exp: exp.unix_timestamp()
        })
    );
}

#[test]
fn nbf_in_the_future_is_not_yet_valid() {
    let at = Attack::new();
    let now = at.now();
    assert!(at.verify(&at.with_times(now, now + 30, now + 300)).is_ok());
    assert_eq!(
        at.verify(&at.with_times(now, now + 31, now + 300)).err(),
        Some(TokenError::NotYetValid { nbf: now + 31 })
    );
    let strict = at.bank_verifier().with_leeway(Duration::ZERO);
    assert_eq!(
        strict.verify(&at.with_times(now, now + 1, now + 300)).err(),
        Some(TokenError::NotYetValid { nbf: now + 1 })
    );
}

#[test]
fn iat_in_the_future_is_issued_in_future() {
    let at = Attack::new();
    let now = at.now();
    assert!(at.verify(&at.with_times(now + 30, now, now + 300)).is_ok());
    assert_eq!(
        at.verify(&at.with_times(now + 31, now, now + 300)).err(),
        Some(TokenError::IssuedInFuture { iat: now + 31 })
    );
    let strict = at.bank_verifier().with_leeway(Duration::ZERO);
    assert_eq!(
        strict.verify(&at.with_times(now + 1, now, now + 300)).err(),
        Some(TokenError::IssuedInFuture { iat: now + 1 })
    );
}

#[test]
fn exp_missing_mistyped_or_out_of_range_is_a_claim_error() {
    let at = Attack::new();
    assert_eq!(
        at.verify(&at.without_claim("exp")).err(),
        Some(claim("exp", ClaimProblem::Missing))
    );
    let exp = at.issued.expires_at.unix_timestamp();
    let cases = [
        (format!("\"{exp}\""), ClaimProblem::WrongType),
        ("1.5e9".to_owned(), ClaimProblem::WrongType),
        (format!("{exp}.0"), ClaimProblem::WrongType),
        // A number beyond the i64 range is an absurd time whatever its notation.
        ("1e300".to_owned(), ClaimProblem::Invalid),
        ("null".to_owned(), ClaimProblem::WrongType),
        ("true".to_owned(), ClaimProblem::WrongType),
        (format!("[{exp}]"), ClaimProblem::WrongType),
        ("-1".to_owned(), ClaimProblem::Invalid),
        ("253402300800".to_owned(), ClaimProblem::Invalid),
        (i64::MAX.to_string(), ClaimProblem::Invalid),
        (u64::MAX.to_string(), ClaimProblem::Invalid),
    ];
    for (raw, problem) in cases {
        assert_eq!(
            at.verify(&at.with_raw_claim("exp", &raw)).err(),
            Some(claim("exp", problem)),
            "exp {raw}"
        );
    }
}

#[test]
fn every_time_claim_is_checked_the_same_way() {
    let at = Attack::new();
    for name in ["iat", "nbf", "exp"] {
        assert_eq!(
            at.verify(&at.without_claim(name)).err(),
            Some(claim(name, ClaimProblem::Missing))
        );
        for (raw, problem) in [
            ("\"0\"", ClaimProblem::WrongType),
            ("1.5e9", ClaimProblem::WrongType),
            ("-1", ClaimProblem::Invalid),
        ] {
            assert_eq!(
                at.verify(&at.with_raw_claim(name, raw)).err(),
                Some(claim(name, problem)),
                "{name} {raw}"
            );
        }
    }
}

#[test]
fn absurd_exp_values_are_refused_as_exp_claim_errors() {
    let at = Attack::new();
    for raw in [
        "1e300",
        "-1e300",
        "99999999999999999999",
        "-99999999999999999999",
    ] {
        assert_eq!(
            at.verify(&at.with_raw_claim("exp", raw)).err(),
            Some(claim("exp", ClaimProblem::Invalid)),
            "exp {raw}"
        );
    }
}

#[test]
fn integer_exp_beyond_u64_is_invalid_not_wrong_type() {
    let at = Attack::new();
    for raw in ["99999999999999999999", "-99999999999999999999"] {
        assert_eq!(
            at.verify(&at.with_raw_claim("exp", raw)).err(),
            Some(claim("exp", ClaimProblem::Invalid)),
            "exp {raw}"
        );
    }
}

#[test]
fn lifetime_over_the_maximum_or_not_positive_is_refused() {
    let at = Attack::new();
    let now = at.now();
    assert!(at.verify(&at.with_times(now, now, now + 900)).is_ok());
    for (exp, seconds) in [(now + 901, 901), (now, 0), (now - 1, -1)] {
        assert_eq!(
            at.verify(&at.with_times(now, now, exp)).err(),
            Some(TokenError::LifetimeInvalid { seconds }),
            "lifetime {seconds}"
        );
    }
}

#[test]
fn configured_max_lifetime_refuses_longer_tokens() {
    let at = Attack::new();
    let short = at.bank_verifier().with_max_lifetime(Duration::minutes(1));
    assert_eq!(
        short.verify(at.token()).err(),
        Some(TokenError::LifetimeInvalid { seconds: 300 })
    );
    let now = at.now();
    assert!(short.verify(&at.with_times(now, now, now + 60)).is_ok());
    // A larger maximum is clamped to 15 minutes.
    let long = at.bank_verifier().with_max_lifetime(Duration::hours(1));
    assert_eq!(
        long.verify(&at.with_times(now, now, now + 901)).err(),
        Some(TokenError::LifetimeInvalid { seconds: 901 })
    );
}

// ---------------------------------------------------------------------------------------------
// Claims

const STRING_CLAIMS: [&str; 9] = [
    "iss",
    "aud",
    "sub",
    "client_id",
    "cid",
    "scope",
    "purpose",
    "acct",
    "jti",
];

#[test]
fn each_required_claim_missing_is_refused_by_name() {
    let at = Attack::new();
    for name in STRING_CLAIMS.into_iter().chain(["iat", "nbf", "exp"]) {
        assert_eq!(
            at.verify(&at.without_claim(name)).err(),
            Some(claim(name, ClaimProblem::Missing)),
            "{name} missing"
        );
    }
}

#[test]
fn each_string_claim_of_another_json_type_is_wrong_type() {
    let at = Attack::new();
    for name in STRING_CLAIMS {
        let genuine = at.claims()[name].clone();
        for value in [
            json!([genuine]),
            json!({ "value": genuine }),
            json!(null),
            json!(1),
            json!(true),
        ] {
            assert_eq!(
                at.verify(&at.with_claim(name, value.clone())).err(),
                Some(claim(name, ClaimProblem::WrongType)),
                "{name} = {value}"
            );
        }
    }
}

#[test]
fn aud_as_a_one_element_array_is_wrong_type() {
    let at = Attack::new();
    assert_eq!(
        at.verify(&at.with_claim("aud", json!(["bank"]))).err(),
        Some(claim("aud", ClaimProblem::WrongType))
    );
}

#[test]
fn each_string_claim_with_an_unparseable_value_is_invalid() {
    let at = Attack::new();
    for name in STRING_CLAIMS {
        for value in ["", "has space", "new\nline", &"x".repeat(129)] {
            assert_eq!(
                at.verify(&at.with_claim(name, json!(value))).err(),
                Some(claim(name, ClaimProblem::Invalid)),
                "{name} = {value:?}"
            );
        }
    }
    for (name, word) in [("scope", "everything"), ("purpose", "marketing")] {
        assert_eq!(
            at.verify(&at.with_claim(name, json!(word))).err(),
            Some(claim(name, ClaimProblem::Invalid))
        );
    }
    for jti in [
        "short",
        &"j".repeat(15),
        "jjjjjjjjjjjjjjjj\u{0}",
        "jjjjjjjj\tjjjjjjjj",
    ] {
        assert_eq!(
            at.verify(&at.with_claim("jti", json!(jti))).err(),
            Some(claim("jti", ClaimProblem::Invalid)),
            "jti {jti:?}"
        );
    }
    assert!(
        at.verify(&at.with_claim("jti", json!("j".repeat(16))))
            .is_ok()
    );
    assert!(
        at.verify(&at.with_claim("jti", json!("j".repeat(128))))
            .is_ok()
    );
}

#[test]
fn wrong_issuer_is_refused() {
    let at = Attack::new();
    assert_eq!(
        at.verify(&at.with_claim("iss", json!("evil-broker"))).err(),
        Some(TokenError::WrongIssuer)
    );
}

#[test]
fn wrong_audience_is_refused() {
    let at = Attack::new();
    assert_eq!(
        at.verify(&at.with_claim("aud", json!("other-bank"))).err(),
        Some(TokenError::WrongAudience)
    );
}

#[test]
fn genuine_token_presented_to_another_holder_is_the_wrong_audience() {
    let at = Attack::new();
    register_holder(&at.fx, "other-bank");
    let other = verifier_for(&at.fx, &id("other-bank"), StoreStatus(at.fx.shared_store()));
    assert_eq!(
        other.verify(at.token()).err(),
        Some(TokenError::WrongAudience)
    );
}

#[test]
fn subject_or_platform_other_than_the_consents_is_a_mismatch() {
    let at = Attack::new();
    assert_eq!(
        at.verify(&at.with_claim("sub", json!("mallory"))).err(),
        Some(TokenError::ConsentMismatch("sub".into()))
    );
    assert_eq!(
        at.verify(&at.with_claim("client_id", json!("other-chat")))
            .err(),
        Some(TokenError::ConsentMismatch("client_id".into()))
    );
}

#[test]
fn unknown_consent_is_refused() {
    let at = Attack::new();
    assert_eq!(
        at.verify(&at.with_claim("cid", json!("cns-unknown"))).err(),
        Some(TokenError::UnknownConsent)
    );
}

#[test]
fn cid_of_another_subjects_or_holders_consent_is_a_mismatch() {
    let at = Attack::new();
    let bob_consent = grant(
        &at.fx,
        ConsentRequestDraft {
            subject: id("bob"),
            ..at.fx.draft()
        },
        at.fx.bank_signer(),
    );
    assert_eq!(
        at.verify(&at.with_claim("cid", json!(bob_consent))).err(),
        Some(TokenError::ConsentMismatch("sub".into()))
    );
    let other_signer = register_holder(&at.fx, "other-bank");
    let other_consent = grant(
        &at.fx,
        ConsentRequestDraft {
            holder: id("other-bank"),
            ..at.fx.draft()
        },
        &other_signer,
    );
    assert_eq!(
        at.verify(&at.with_claim("cid", json!(other_consent))).err(),
        Some(TokenError::ConsentMismatch("aud".into()))
    );
}

// ---------------------------------------------------------------------------------------------
// Header types and key-pointing headers

#[test]
fn typ_missing_or_other_is_wrong_type() {
    let at = Attack::new();
    assert_eq!(
        at.verify(&at.without_header("typ")).err(),
        Some(TokenError::WrongType(None))
    );
    for typ in ["JWT", "jwt", "consent-attestation+jwt", "at+jws", ""] {
        assert_eq!(
            at.verify(&at.with_header("typ", json!(typ))).err(),
            Some(TokenError::WrongType(Some(typ.into()))),
            "typ {typ:?}"
        );
    }
    assert!(matches!(
        at.verify(&at.with_header("typ", json!(["at+jwt"]))),
        Err(TokenError::WrongType(Some(_)))
    ));
}

#[test]
fn attestation_signed_with_the_brokers_key_is_not_an_access_token() {
    let at = Attack::new();
    let signer = AttestationSigner::new(
        at.fx.bank.clone(),
        SigningKey::from_pkcs8_der(&at.pkcs8).unwrap(),
    )
    .unwrap();
    let request = at
        .fx
        .broker
        .consent(&at.consent)
        .unwrap()
        .consent
        .request()
        .clone();
    let attestation = signer
        .sign(
            &at.fx.full_statement(&request),
            at.fx.broker.id(),
            at.fx.broker.now(),
            &at.fx.rng,
        )
        .unwrap();
    // Same key, same kid: only the type tells them apart.
    assert_eq!(
        decoded_json(&segments(&attestation)[0])["kid"],
        json!(at.kid)
    );
    assert_eq!(
        at.verify(&attestation).err(),
        Some(TokenError::WrongType(Some(
            "consent-attestation+jwt".into()
        )))
    );
}

#[test]
fn crit_header_is_refused() {
    let at = Attack::new();
    for crit in [json!(["exp"]), json!([]), json!("b64")] {
        assert_eq!(
            at.verify(&at.with_header("crit", crit.clone())).err(),
            Some(TokenError::CriticalHeader),
            "crit {crit}"
        );
    }
}

#[test]
fn key_pointing_headers_are_forbidden() {
    let at = Attack::new();
    let cases = [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIUYQ=="])),
        ("x5t", json!("dGh1bWJwcmludA")),
        ("x5t#S256", json!("dGh1bWJwcmludA")),
    ];
    for (name, value) in cases {
        assert_eq!(
            at.verify(&at.with_header(name, value)).err(),
            Some(TokenError::ForbiddenHeader(name.into())),
            "{name}"
        );
    }
}

#[test]
fn embedded_jwk_of_the_signing_attacker_key_is_forbidden() {
    let at = Attack::new();
    let attacker = new_pkcs8();
    let public = SigningKey::from_pkcs8_der(&attacker).unwrap().public_key();
    let mut header = at.header();
    header["kid"] = json!(public.thumbprint());
    header["jwk"] = serde_json::to_value(Jwk::from_public_key(&public)).unwrap();
    let token = sign_raw(
        &attacker,
        header.to_string().as_bytes(),
        at.claims().to_string().as_bytes(),
    );
    assert_eq!(
        at.verify(&token).err(),
        Some(TokenError::ForbiddenHeader("jwk".into()))
    );
    // Even under the broker's own kid and key.
    assert_eq!(
        at.verify(&at.with_header(
            "jwk",
            serde_json::to_value(&at.fx.broker.jwks().unwrap().keys[0]).unwrap()
        ))
        .err(),
        Some(TokenError::ForbiddenHeader("jwk".into()))
    );
}

// ---------------------------------------------------------------------------------------------
// The consent behind the token

#[test]
fn token_of_a_revoked_consent_is_refused() {
    let at = Attack::new();
    at.verify(at.token()).unwrap();
    at.fx
        .revoke(
            &at.consent,
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
        .unwrap();
    assert_eq!(
        at.verify(at.token()).err(),
        Some(TokenError::ConsentNotLive(ConsentStatus::Revoked {
            by: Revoker::Subject,
            reason: RevocationReason::SubjectWithdrew,
        }))
    );
}

#[test]
fn fresh_token_of_an_expired_consent_is_refused() {
    let at = Attack::new();
    let stored = at.fx.broker.consent(&at.consent).unwrap().consent;
    let expires_at = stored.grant().unwrap().expires_at();
    assert_eq!(expires_at, START + Duration::days(90));
    at.fx.clock.set(expires_at);
    // The genuine token is long expired itself: that check comes first.
    assert_eq!(
        at.verify(at.token()).err(),
        Some(TokenError::Expired {
            exp: at.issued.expires_at.unix_timestamp()
        })
    );
    let now = at.now();
    assert_eq!(
        at.verify(&at.with_times(now, now, now + 300)).err(),
        Some(TokenError::ConsentNotLive(ConsentStatus::Expired))
    );
    // One second earlier the grant was live.
    let before = now - 1;
    at.fx.clock.set(expires_at - Duration::SECOND);
    assert!(
        at.verify(&at.with_times(before, before, before + 300))
            .is_ok()
    );
}

#[test]
fn token_of_a_consent_never_approved_or_rejected_is_refused() {
    let at = Attack::new();
    let pending = at.fx.request().id().clone();
    assert_eq!(
        at.verify(&at.with_claim("cid", json!(pending))).err(),
        Some(TokenError::ConsentNotLive(ConsentStatus::Requested))
    );
    let rejected = at.fx.request().id().clone();
    at.fx.broker.reject(&rejected).unwrap();
    assert_eq!(
        at.verify(&at.with_claim("cid", json!(rejected))).err(),
        Some(TokenError::ConsentNotLive(ConsentStatus::Rejected))
    );
}

#[test]
fn scope_purpose_or_account_the_consent_does_not_grant_is_refused() {
    let at = Attack::new();
    let narrow = grant(
        &at.fx,
        ConsentRequestDraft {
            scopes: vec![Scope::Balance.into()],
            purposes: vec![Purpose::CustomerService.into()],
            accounts: AccountSelection::Listed(AccountSet::from([at.fx.current.clone()])),
            ..at.fx.draft()
        },
        at.fx.bank_signer(),
    );
    let mut claims = at.claims();
    claims["cid"] = json!(narrow);
    assert!(at.verify(&at.forge(&at.header(), &claims)).is_ok());
    let cases = [
        (
            "scope",
            json!("alerts"),
            TokenError::ScopeNotGranted(Scope::Alerts),
        ),
        (
            "scope",
            json!("transactions"),
            TokenError::ScopeNotGranted(Scope::Transactions),
        ),
        (
            "purpose",
            json!("fraud_protection"),
            TokenError::PurposeNotGranted(Purpose::FraudProtection),
        ),
        ("acct", json!("acc-savings"), TokenError::AccountNotGranted),
        (
            "acct",
            json!("acc-elsewhere"),
            TokenError::AccountNotGranted,
        ),
    ];
    for (name, value, expected) in cases {
        let mut forged = claims.clone();
        forged[name] = value;
        assert_eq!(
            at.verify(&at.forge(&at.header(), &forged)).err(),
            Some(expected),
            "{name} {}",
            forged[name]
        );
    }
    // The wide grant does not cover transactions or an account it never named either.
    assert_eq!(
        at.verify(&at.with_claim("scope", json!("transactions")))
            .err(),
        Some(TokenError::ScopeNotGranted(Scope::Transactions))
    );
    assert_eq!(
        at.verify(&at.with_claim("acct", json!("acc-elsewhere")))
            .err(),
        Some(TokenError::AccountNotGranted)
    );
}

#[test]
fn prohibited_purpose_or_scope_is_refused_as_prohibited() {
    let at = Attack::new();
    for used in ProhibitedUse::ALL {
        assert_eq!(
            at.verify(&at.with_claim("purpose", json!(used.as_str())))
                .err(),
            Some(TokenError::ProhibitedPurpose(used)),
            "purpose {used}"
        );
        assert_eq!(
            at.verify(&at.with_claim("scope", json!(used.as_str())))
                .err(),
            Some(TokenError::ProhibitedScope(used)),
            "scope {used}"
        );
    }
    assert_eq!(
        at.verify(&at.with_claim("purpose", json!("ads"))).err(),
        Some(TokenError::ProhibitedPurpose(ProhibitedUse::Ads))
    );
    assert_eq!(
        at.verify(&at.with_claim("scope", json!("ads"))).err(),
        Some(TokenError::ProhibitedScope(ProhibitedUse::Ads))
    );
}

// ---------------------------------------------------------------------------------------------
// The verifier's options: replay, status source, audit

#[test]
fn replay_is_refused_only_with_replay_detection() {
    let at = Attack::new();
    assert!(at.verify(at.token()).is_ok());
    assert!(at.verify(at.token()).is_ok());

    let guarded = at.bank_verifier().with_replay_detection();
    assert!(guarded.verify(at.token()).is_ok());
    assert_eq!(guarded.verify(at.token()).err(), Some(TokenError::Replayed));
    // Another token for the same access has its own jti.
    let second = issue(&at.fx, &at.fx.access(&at.consent));
    assert_ne!(second.token_id, at.issued.token_id);
    assert!(guarded.verify(&second.token).is_ok());
    assert_eq!(
        guarded.verify(&second.token).err(),
        Some(TokenError::Replayed)
    );
}

struct UnavailableStatus;

impl ConsentStatusSource for UnavailableStatus {
    fn consent(&self, _: &ConsentId) -> Result<Option<Consent>, String> {
        Err("status database offline".into())
    }
}

#[test]
fn failing_status_source_refuses_the_token() {
    let at = Attack::new();
    let verifier = verifier_for(&at.fx, &at.fx.bank, UnavailableStatus);
    assert_eq!(
        verifier.verify(at.token()).err(),
        Some(TokenError::StatusUnavailable(
            "status database offline".into()
        ))
    );
}

struct FailingAudit;

impl VerificationAudit for FailingAudit {
    fn record(&self, _: VerificationRecord) -> Result<(), String> {
        Err("audit disk full".into())
    }
}

#[test]
fn failing_audit_sink_refuses_the_token() {
    let at = Attack::new();
    let verifier = at.bank_verifier().with_audit(Arc::new(FailingAudit));
    assert_eq!(
        verifier.verify(at.token()).err(),
        Some(TokenError::AuditUnavailable("audit disk full".into()))
    );
    assert_eq!(
        verifier.verify("not.a.token").err(),
        Some(TokenError::AuditUnavailable("audit disk full".into()))
    );
}

#[test]
fn verification_log_records_accepted_and_refused_tokens() {
    let at = Attack::new();
    let log = Arc::new(MemoryVerificationLog::new());
    let verifier = at.bank_verifier().with_audit(log.clone());
    verifier.verify(at.token()).unwrap();
    let garbage = verifier.verify("garbage").unwrap_err();
    let forged = verifier.verify(&flip_bit(at.token(), 2, 0, 0)).unwrap_err();
    at.fx
        .revoke(
            &at.consent,
            Revoker::Holder,
            RevocationReason::SuspectedMisuse,
        )
        .unwrap();
    let revoked = verifier.verify(at.token()).unwrap_err();
    assert_eq!(garbage, TokenError::SegmentCount { segments: 1 });
    assert_eq!(forged, TokenError::BadSignature);
    assert_eq!(
        revoked,
        TokenError::ConsentNotLive(ConsentStatus::Revoked {
            by: Revoker::Holder,
            reason: RevocationReason::SuspectedMisuse,
        })
    );
    let jti = Some(at.issued.token_id.clone());
    let consent = Some(at.consent.clone());
    let record = |jti, consent, refusal| VerificationRecord {
        at: START,
        jti,
        consent,
        refusal,
    };
    assert_eq!(
        log.records(),
        vec![
            record(jti.clone(), consent.clone(), None),
            record(None, None, Some(garbage)),
            record(None, None, Some(forged)),
            record(jti, consent, Some(revoked)),
        ]
    );
}

/// A token naming an account its consent does not grant is refused, and what the holder's
/// verification log records of it (and the error's `Debug`) names no account: the log is the
/// bank's, and an account id is its reference for a person's account.
#[test]
fn a_refusal_for_an_account_not_granted_records_no_account() {
    let at = Attack::new();
    let log = Arc::new(MemoryVerificationLog::new());
    let verifier = at.bank_verifier().with_audit(log.clone());
    let refused = verifier
        .verify(&at.with_claim("acct", json!("acc-elsewhere-DE89370400440532013000")))
        .unwrap_err();
    assert_eq!(refused, TokenError::AccountNotGranted);
    let records = log.records();
    assert_eq!(records.len(), 1);
    let recorded = serde_json::to_string(&records).unwrap();
    assert!(recorded.contains("account_not_granted"), "{recorded}");
    for text in [
        recorded,
        format!("{records:?}"),
        format!("{refused:?}"),
        refused.to_string(),
    ] {
        assert!(!text.contains("DE89"), "{text}");
        assert!(!text.contains("acc-elsewhere"), "{text}");
    }
}

/// What a stranger writes in a token's unsigned header (`alg`, `typ`) is not kept in the
/// holder's verification record: the record names the refusal, the caller's error the text.
#[test]
fn an_unsigned_headers_text_is_not_recorded() {
    let at = Attack::new();
    let log = Arc::new(MemoryVerificationLog::new());
    let verifier = at.bank_verifier().with_audit(log.clone());
    let text = "Alice DE89370400440532013000";
    let [_, payload, signature] = {
        let parts: Vec<&str> = at.token().split('.').collect();
        [
            parts[0].to_owned(),
            parts[1].to_owned(),
            parts[2].to_owned(),
        ]
    };
    for header in [
        json!({"alg": text, "typ": "at+jwt", "kid": "k"}),
        json!({"alg": "EdDSA", "typ": text, "kid": "k"}),
    ] {
        let token = format!("{}.{payload}.{signature}", b64(header.to_string()));
        let refused = verifier.verify(&token).unwrap_err();
        assert!(
            matches!(
                refused,
                TokenError::UnsupportedAlgorithm(Some(_)) | TokenError::WrongType(Some(_))
            ),
            "{refused:?}"
        );
    }
    let records = log.records();
    assert_eq!(records.len(), 2);
    assert_eq!(
        records
            .iter()
            .map(|r| r.refusal.clone())
            .collect::<Vec<_>>(),
        [
            Some(TokenError::UnsupportedAlgorithm(None)),
            Some(TokenError::WrongType(None))
        ]
    );
    let recorded = serde_json::to_string(&records).unwrap();
    assert!(
        !recorded.contains("DE89") && !recorded.contains("Alice"),
        "{recorded}"
    );
}

// ---------------------------------------------------------------------------------------------
// Issuing

#[test]
fn permit_whose_consent_was_revoked_before_issuing_is_stale() {
    let at = Attack::new();
    let AccessOutcome::Permitted(permit) = at
        .fx
        .broker
        .authorise_access(&at.fx.access(&at.consent))
        .unwrap()
    else {
        panic!("expected a permit");
    };
    at.fx
        .revoke(
            &at.consent,
            Revoker::Platform,
            RevocationReason::NoLongerNeeded,
        )
        .unwrap();
    let issued_before = at
        .fx
        .audit()
        .iter()
        .filter(|e| e.kind() == AuditKind::TokenIssued)
        .count();
    assert_eq!(
        at.fx.broker.issue_token(permit).err(),
        Some(Error::PermitStale(at.consent.clone()))
    );
    let issued_after = at
        .fx
        .audit()
        .iter()
        .filter(|e| e.kind() == AuditKind::TokenIssued)
        .count();
    assert_eq!(issued_after, issued_before);
}

#[test]
fn token_lifetime_outside_one_second_to_fifteen_minutes_is_refused() {
    for (lifetime, seconds) in [
        (Duration::minutes(16), 960),
        (Duration::minutes(15) + Duration::SECOND, 901),
        (Duration::ZERO, 0),
        (Duration::milliseconds(999), 0),
        (Duration::seconds(-60), -60),
    ] {
        let built = Broker::builder(id("broker"), MemoryStore::new())
            .token_lifetime(lifetime)
            .keys(keys())
            .build();
        assert_eq!(
            built.err(),
            Some(Error::InvalidTokenLifetime { seconds }),
            "lifetime {lifetime}"
        );
    }
    for lifetime in [Duration::SECOND, Duration::minutes(15)] {
        assert!(
            Broker::builder(id("broker"), MemoryStore::new())
                .token_lifetime(lifetime)
                .keys(keys())
                .build()
                .is_ok()
        );
    }
}

#[test]
fn configured_token_lifetime_sets_exp() {
    let pkcs8 = new_pkcs8();
    let fx = keyed_fixture_with(&pkcs8, |b| b.token_lifetime(Duration::minutes(1)));
    let consent = fx.granted().id().clone();
    let issued = issue(&fx, &fx.access(&consent));
    let claims = decoded_json(&segments(&issued.token)[1]);
    assert_eq!(claims["iat"], json!(START.unix_timestamp()));
    assert_eq!(claims["nbf"], json!(START.unix_timestamp()));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    assert_eq!(issued.expires_at, START + Duration::minutes(1));
    let verifier = verifier_for(&fx, &fx.bank, StoreStatus(fx.shared_store()));
    assert!(verifier.verify(&issued.token).is_ok());
}

#[test]
fn grant_expiring_sooner_caps_the_tokens_exp() {
    let pkcs8 = new_pkcs8();
    let fx = keyed_fixture(&pkcs8);
    let request = fx.request();
    let statement = ApprovalStatement {
        consent_expires_at: START + Duration::minutes(2),
        ..fx.full_statement(&request)
    };
    fx.broker
        .approve(request.id(), &fx.attest(&statement))
        .unwrap();
    let issued = issue(&fx, &fx.access(request.id()));
    let grant_expiry = START + Duration::minutes(2);
    assert_eq!(issued.expires_at, grant_expiry);
    let claims = decoded_json(&segments(&issued.token)[1]);
    assert_eq!(claims["exp"], json!(grant_expiry.unix_timestamp()));
    assert_eq!(claims["iat"], json!(START.unix_timestamp()));
    let verifier = verifier_for(&fx, &fx.bank, StoreStatus(fx.shared_store()));
    assert!(verifier.verify(&issued.token).is_ok());
    // Within the token's leeway but past the grant: the consent check refuses it.
    fx.clock.set(grant_expiry);
    assert_eq!(
        verifier.verify(&issued.token).err(),
        Some(TokenError::ConsentNotLive(ConsentStatus::Expired))
    );
}

//! HPKE (RFC 9180), base mode, for one suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! AES-128-GCM — the suite a browser opens with WebCrypto alone (X25519, HMAC-SHA-256, AES-GCM).
//!
//! The bank seals each response to a key held only on the subject's device
//! ([`DevicePublicKey`]); the platform relays the ciphertext and cannot read it. HKDF is HMAC-SHA256
//! and AES-128-GCM is `ring`'s; X25519 is `x25519-dalek`'s, because `ring` offers X25519 only
//! for ephemeral keys and a device opens with a key it keeps. Checked against the RFC 9180
//! Appendix A.1.1 vectors and against an independent implementation (`tests/it/sealing.rs`).
//!
//! Only single-shot sealing is offered: one `enc` and one ciphertext per message, sequence 0.

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::random::RandomSource;

/// `kem_id` of DHKEM(X25519, HKDF-SHA256).
const KEM_ID: u16 = 0x0020;
/// `kdf_id` of HKDF-SHA256.
const KDF_ID: u16 = 0x0001;
/// `aead_id` of AES-128-GCM.
const AEAD_ID: u16 = 0x0001;
/// Length of an X25519 key and of the KEM's shared secret.
pub const KEY_LEN: usize = 32;
/// Length of the AES-128-GCM tag added to every ciphertext.
pub const TAG_LEN: usize = 16;

/// Why sealing or opening failed. Opening says nothing more than that it failed: which part of a
/// forged ciphertext was wrong is not the opener's to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HpkeError {
    /// A key or an `enc` is not 32 bytes, or is a low-order point (the shared secret would be
    /// all zeros).
    #[error("not a usable X25519 key")]
    BadKey,
    /// The ciphertext does not open with this key and context: tampered with, for another
    /// device, or for another `info` or `aad`.
    #[error("the ciphertext does not open")]
    OpenFailed,
    /// No randomness was available for the ephemeral key.
    #[error("no randomness for the ephemeral key")]
    RandomnessUnavailable,
    /// The plaintext could not be sealed (for a response: larger than
    /// [`crate::MAX_RESPONSE_BYTES`] padded, or to more than [`crate::MAX_ENVELOPES`] devices).
    #[error("the plaintext could not be sealed")]
    SealFailed,
}

/// An X25519 public key of a subject's device.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevicePublicKey([u8; KEY_LEN]);

impl std::fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevicePublicKey({})", self.thumbprint())
    }
}

impl DevicePublicKey {
    /// The key from its 32 bytes: a canonical u-coordinate (below 2^255 − 19) of a point that
    /// is not of small order, so that every response sealed to it has a secret only the device
    /// can compute.
    ///
    /// # Errors
    /// [`HpkeError::BadKey`] for another length, a non-canonical encoding, or a point of small
    /// order (all-zero shared secrets: RFC 7748 §6.1, RFC 9180 §7.1.4).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HpkeError> {
        let bytes = <[u8; KEY_LEN]>::try_from(bytes).map_err(|_| HpkeError::BadKey)?;
        if !canonical(&bytes) || SMALL_ORDER.contains(&bytes) {
            return Err(HpkeError::BadKey);
        }
        Ok(Self(bytes))
    }

    /// The key from unpadded base64url (a JWK's `x`).
    ///
    /// # Errors
    /// [`HpkeError::BadKey`].
    pub fn from_base64url(x: &str) -> Result<Self, HpkeError> {
        if x.len() != 43 {
            return Err(HpkeError::BadKey);
        }
        let bytes = crate::jws::decode(x, crate::token::TokenPart::Payload)
            .map_err(|_| HpkeError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    /// Its 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Unpadded base64url of its bytes.
    pub fn to_base64url(&self) -> String {
        crate::jws::encode(&self.0)
    }

    /// Its RFC 7638 thumbprint, as the JWK `{"crv":"X25519","kty":"OKP","x":…}`: how the bank's
    /// ledger and the attestation name it.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"X25519","kty":"OKP","x":"{}"}}"#,
            self.to_base64url()
        );
        crate::jws::encode(
            ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref(),
        )
    }

    /// The code the subject compares, while registering the device in the bank's authenticated
    /// session, between what the device shows and what the bank shows for the key it received:
    /// 20 digits in four groups of five (`12345-67890-12345-67890`), from the first 72 bits of
    /// SHA-256 of the thumbprint. A platform that relays the key and swaps in its own must find a
    /// key whose code matches the device's: about 2^66 tries, where a six-digit code would take a
    /// million (seconds of work). `js/open-sealed-response.mjs` computes the same code.
    pub fn confirmation_code(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.thumbprint().as_bytes());
        let value = digest
            .as_ref()
            .iter()
            .take(9)
            .fold(0u128, |acc, byte| acc << 8 | u128::from(*byte));
        let digits = format!("{:020}", value % 10u128.pow(20));
        let groups: Vec<&str> = [0, 5, 10, 15]
            .iter()
            .filter_map(|start| digits.get(*start..start + 5))
            .collect();
        groups.join("-")
    }
}

impl serde::Serialize for DevicePublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64url())
    }
}

impl<'de> serde::Deserialize<'de> for DevicePublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let x = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_base64url(&x).map_err(serde::de::Error::custom)
    }
}

/// A device's X25519 private key: it never leaves the device. Its bytes are wiped on drop, as
/// are the seeds, shared secrets and keys this module derives on the way (`zeroize`); copies the
/// compiler leaves on the stack and the key schedules inside `ring`'s HMAC and AES-GCM are not.
pub struct DeviceSecretKey {
    secret: StaticSecret,
    /// Computed once: opening needs it for the KEM context, and a scalar multiplication is the
    /// dearest step there is.
    public: DevicePublicKey,
}

impl std::fmt::Debug for DeviceSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DeviceSecretKey")
            .field(&self.public_key().thumbprint())
            .finish()
    }
}

impl DeviceSecretKey {
    /// A new key from `random`.
    ///
    /// # Errors
    /// [`HpkeError::RandomnessUnavailable`].
    pub fn generate(random: &dyn RandomSource) -> Result<Self, HpkeError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random
            .fill(bytes.as_mut())
            .map_err(|_| HpkeError::RandomnessUnavailable)?;
        Ok(Self::from_bytes(*bytes))
    }

    /// The key from its 32 bytes (clamped as X25519 requires).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = DevicePublicKey(PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// RFC 9180 `DeriveKeyPair(ikm)` for X25519.
    pub fn derive(ikm: &[u8]) -> Self {
        let prk = labeled_extract(&kem_suite(), b"", b"dkp_prk", ikm);
        let mut sk = Zeroizing::new([0u8; KEY_LEN]);
        labeled_expand(&kem_suite(), &prk, b"sk", b"", sk.as_mut());
        Self::from_bytes(*sk)
    }

    /// Its public key: what the device registers at the bank.
    pub fn public_key(&self) -> DevicePublicKey {
        self.public
    }

    /// Its 32 bytes, to keep on the device.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.secret.to_bytes()
    }
}

/// One sealed message: the encapsulated key and the ciphertext (with its tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// `enc`: the ephemeral public key.
    pub enc: [u8; KEY_LEN],
    /// The AES-128-GCM ciphertext with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// The canonical encodings of the points of small order on Curve25519 and its twist (the list
/// libsodium refuses): 0, 1, the two points of order 8, and p − 1. With non-canonical
/// encodings refused, no other encoding gives an all-zero shared secret.
const SMALL_ORDER: [[u8; KEY_LEN]; 5] = [
    [0; KEY_LEN],
    {
        let mut one = [0; KEY_LEN];
        one[0] = 1;
        one
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    {
        let mut minus_one = [0xff; KEY_LEN];
        minus_one[0] = 0xec;
        minus_one[KEY_LEN - 1] = 0x7f;
        minus_one
    },
];

/// Whether `u` (little-endian) is below 2^255 − 19.
fn canonical(u: &[u8; KEY_LEN]) -> bool {
    let (low, rest) = u.split_at(1);
    let (middle, top) = rest.split_at(KEY_LEN - 2);
    match top.first() {
        Some(&top) if top < 0x7f => true,
        Some(&0x7f) => middle.iter().any(|byte| *byte != 0xff) || low.first() < Some(&0xed),
        _ => false,
    }
}

fn suite(prefix: &[u8]) -> Vec<u8> {
    let mut id = prefix.to_vec();
    if prefix == b"KEM" {
        id.extend_from_slice(&KEM_ID.to_be_bytes());
    } else {
        id.extend_from_slice(&KEM_ID.to_be_bytes());
        id.extend_from_slice(&KDF_ID.to_be_bytes());
        id.extend_from_slice(&AEAD_ID.to_be_bytes());
    }
    id
}

fn kem_suite() -> Vec<u8> {
    suite(b"KEM")
}

fn hpke_suite() -> Vec<u8> {
    suite(b"HPKE")
}

/// HKDF-Extract with HMAC-SHA256.
fn extract(salt: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let tag = hmac::sign(&key, ikm);
    let mut prk = Zeroizing::new([0u8; 32]);
    prk.copy_from_slice(tag.as_ref());
    prk
}

/// HKDF-Expand with HMAC-SHA256 into `out` (at most 255 × 32 bytes; every use here is ≤ 32).
fn expand(prk: &[u8; 32], info: &[u8], out: &mut [u8]) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
    let mut previous: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::new());
    for (counter, chunk) in (1u8..).zip(out.chunks_mut(32)) {
        let mut context = hmac::Context::with_key(&key);
        context.update(&previous);
        context.update(info);
        context.update(&[counter]);
        let block = context.sign();
        let block = block.as_ref();
        chunk.copy_from_slice(block.get(..chunk.len()).unwrap_or_default());
        previous = Zeroizing::new(block.to_vec());
    }
}

fn labeled_extract(suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut labeled = Zeroizing::new(b"HPKE-v1".to_vec());
    labeled.extend_from_slice(suite_id);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(ikm);
    extract(salt, &labeled)
}

fn labeled_expand(suite_id: &[u8], prk: &[u8; 32], label: &[u8], info: &[u8], out: &mut [u8]) {
    let length = u16::try_from(out.len()).unwrap_or(u16::MAX);
    let mut labeled = Zeroizing::new(length.to_be_bytes().to_vec());
    labeled.extend_from_slice(b"HPKE-v1");
    labeled.extend_from_slice(suite_id);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(info);
    expand(prk, &labeled, out);
}

/// DHKEM's `ExtractAndExpand(dh, kem_context)`.
fn shared_secret(
    dh: &[u8; 32],
    enc: &[u8; 32],
    pk_r: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, HpkeError> {
    // A low-order point gives an all-zero shared secret (RFC 9180 §7.1.4): refuse it.
    if dh.iter().all(|byte| *byte == 0) {
        return Err(HpkeError::BadKey);
    }
    let eae_prk = labeled_extract(&kem_suite(), b"", b"eae_prk", dh);
    let mut kem_context = enc.to_vec();
    kem_context.extend_from_slice(pk_r);
    let mut secret = Zeroizing::new([0u8; 32]);
    labeled_expand(
        &kem_suite(),
        &eae_prk,
        b"shared_secret",
        &kem_context,
        secret.as_mut(),
    );
    Ok(secret)
}

/// The base-mode key schedule: the AEAD key and the base nonce.
fn key_schedule(shared: &[u8; 32], info: &[u8]) -> (Zeroizing<[u8; 16]>, [u8; 12]) {
    let suite = hpke_suite();
    let psk_id_hash = labeled_extract(&suite, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(&suite, b"", b"info_hash", info);
    let mut context = vec![0u8]; // mode_base
    context.extend_from_slice(&psk_id_hash[..]);
    context.extend_from_slice(&info_hash[..]);
    let secret = labeled_extract(&suite, shared, b"secret", b"");
    let mut key = Zeroizing::new([0u8; 16]);
    labeled_expand(&suite, &secret, b"key", &context, key.as_mut());
    let mut nonce = [0u8; 12];
    labeled_expand(&suite, &secret, b"base_nonce", &context, &mut nonce);
    (key, nonce)
}

fn aead(key: &[u8; 16]) -> Result<LessSafeKey, HpkeError> {
    UnboundKey::new(&AES_128_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|_| HpkeError::SealFailed)
}

/// Seals `plaintext` to `recipient` with `info` and `aad` (RFC 9180 `Seal` in base mode, the
/// first message of its context), with an ephemeral key drawn from `random`.
///
/// # Errors
/// [`HpkeError::RandomnessUnavailable`]; [`HpkeError::BadKey`] for a low-order recipient key;
/// [`HpkeError::SealFailed`].
pub fn seal(
    recipient: &DevicePublicKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    random: &dyn RandomSource,
) -> Result<Sealed, HpkeError> {
    let mut ikm = Zeroizing::new([0u8; KEY_LEN]);
    random
        .fill(ikm.as_mut())
        .map_err(|_| HpkeError::RandomnessUnavailable)?;
    seal_with_ephemeral(
        recipient,
        info,
        aad,
        plaintext,
        &DeviceSecretKey::derive(&ikm[..]),
    )
}

/// As [`seal`], with the ephemeral key given (the RFC's vectors derive it from `ikmE`).
pub(crate) fn seal_with_ephemeral(
    recipient: &DevicePublicKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    ephemeral: &DeviceSecretKey,
) -> Result<Sealed, HpkeError> {
    let enc = ephemeral.public.0;
    let dh = ephemeral
        .secret
        .diffie_hellman(&PublicKey::from(recipient.0));
    let shared = shared_secret(dh.as_bytes(), &enc, &recipient.0)?;
    let (key, nonce) = key_schedule(&shared, info);
    let mut ciphertext = plaintext.to_vec();
    aead(&key)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut ciphertext,
        )
        .map_err(|_| HpkeError::SealFailed)?;
    Ok(Sealed { enc, ciphertext })
}

/// Opens what [`seal`] sealed to `recipient`'s public key, with the same `info` and `aad`.
///
/// # Errors
/// [`HpkeError::OpenFailed`]; [`HpkeError::BadKey`] for a low-order `enc`.
pub fn open(
    recipient: &DeviceSecretKey,
    enc: &[u8; KEY_LEN],
    info: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, HpkeError> {
    let dh = recipient.secret.diffie_hellman(&PublicKey::from(*enc));
    let shared = shared_secret(dh.as_bytes(), enc, &recipient.public.0)?;
    let (key, nonce) = key_schedule(&shared, info);
    let mut buffer = ciphertext.to_vec();
    let opened = aead(&key)
        .map_err(|_| HpkeError::OpenFailed)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buffer,
        )
        .map_err(|_| HpkeError::OpenFailed)?;
    Ok(opened.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let text: String = text.split_whitespace().collect();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base
    /// mode, the first encryption (sequence number 0).
    #[test]
    fn the_small_order_list_is_exactly_what_gives_zero_secrets() {
        let probe = StaticSecret::from([0x55; KEY_LEN]);
        for point in SMALL_ORDER {
            assert!(canonical(&point));
            assert!(
                !probe
                    .diffie_hellman(&PublicKey::from(point))
                    .was_contributory()
            );
        }
        // Every other canonical encoding among 512 at both edges (0..=255, p - 256..p) is not.
        for low in 0..=255u8 {
            for top in [0x00, 0x7f] {
                let mut u = [0xff; KEY_LEN];
                u[0] = low;
                u[KEY_LEN - 1] = top;
                if top == 0 {
                    u = [0; KEY_LEN];
                    u[0] = low;
                }
                if canonical(&u) && !SMALL_ORDER.contains(&u) {
                    assert!(probe.diffie_hellman(&PublicKey::from(u)).was_contributory());
                }
            }
        }
    }

    #[test]
    fn rfc9180_a_1_1_base_mode_vectors() {
        let info = hex("4f6465206f6e2061204772656369616e2055726e");
        let ephemeral = DeviceSecretKey::derive(&hex(
            "7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234",
        ));
        assert_eq!(
            ephemeral.to_bytes().to_vec(),
            hex("52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736")
        );
        assert_eq!(
            ephemeral.public_key().as_bytes().to_vec(),
            hex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
        );
        let recipient = DeviceSecretKey::derive(&hex(
            "6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037",
        ));
        assert_eq!(
            recipient.to_bytes().to_vec(),
            hex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
        );
        assert_eq!(
            recipient.public_key().as_bytes().to_vec(),
            hex("3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d")
        );
        let enc = ephemeral.public_key().0;
        let dh = ephemeral
            .secret
            .diffie_hellman(&PublicKey::from(recipient.public_key().0));
        let shared = shared_secret(dh.as_bytes(), &enc, recipient.public_key().as_bytes()).unwrap();
        assert_eq!(
            shared.to_vec(),
            hex("fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc")
        );
        let (key, nonce) = key_schedule(&shared, &info);
        assert_eq!(key.to_vec(), hex("4531685d41d65f03dc48f6b8302c05b0"));
        assert_eq!(nonce.to_vec(), hex("56d890e5accaaf011cff4b7d"));
        let pt = hex("4265617574792069732074727574682c20747275746820626561757479");
        let aad = hex("436f756e742d30");
        let sealed =
            seal_with_ephemeral(&recipient.public_key(), &info, &aad, &pt, &ephemeral).unwrap();
        assert_eq!(
            sealed.ciphertext,
            hex(
                "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9
                 6d8770ac83d07bea87e13c512a"
            )
        );
        assert_eq!(
            open(&recipient, &sealed.enc, &info, &aad, &sealed.ciphertext).unwrap(),
            pt
        );
    }
}

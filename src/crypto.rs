//! The `ring`-backed [`CryptoProvider`] for `jsonwebtoken`, and its process-wide installation.
//!
//! `jsonwebtoken` is built without a backend of its own, so every signature, MAC and JWK helper
//! it runs goes through one process-wide [`CryptoProvider`]. This module owns:
//!
//! - [`RING_PROVIDER`]: a provider for every algorithm `jsonwebtoken` names (HS256/384/512,
//!   RS256/384/512, PS256/384/512, ES256/384, EdDSA), with `ring` as the backend, except
//!   that EdDSA signatures are verified by the crate's one Ed25519 verification
//!   (`src/ed25519.rs`: `ring`'s answers, on curve25519-dalek's arithmetic);
//! - [`install`]: makes a provider process-wide (ours, or one the host installed first) and
//!   proves it works with a known-answer self-test, once per process.
//!
//! This module must never:
//!
//! - accept a key whose family differs from the algorithm's, in the signer or the verifier
//!   factory (an RSA or Ed25519 *public* key used as an HMAC secret is the classic forgery);
//! - panic on a key, signature or message, however malformed: every refusal is a
//!   `jsonwebtoken` error;
//! - compare MACs in variable time;
//! - replace a provider the host application installed;
//! - report success while the process-wide provider is `jsonwebtoken`'s panicking placeholder.
//!
//! One file of about 640 lines (30 of them tests), on purpose: the provider is one table of
//! signer and verifier factories for every algorithm jsonwebtoken names, and its guarantees
//! (family checked against `alg`, constant-time MACs, never panicking) hold row by row.

use std::panic;
use std::sync::{Arc, Mutex, OnceLock};

use jsonwebtoken::crypto::{self, CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind, Result as JwtResult, new_error};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{
    self as ring_sig, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, RsaEncoding,
    RsaKeyPair, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};
use ring::{digest, hmac};

/// The `ring`-backed provider. Install it with [`install`] rather than
/// [`CryptoProvider::install_default`], so the process also gets the self-test.
///
/// Signing keys are the DER `jsonwebtoken` holds: raw secret (HS*), PKCS#1 `RSAPrivateKey` or
/// PKCS#8 (RS*, PS*), PKCS#8 (ES*, EdDSA, v1 or v2 for Ed25519). Verification keys: raw secret,
/// PKCS#1 `RSAPublicKey` DER or RSA `(n, e)`, uncompressed EC point, raw 32-byte Ed25519 key.
pub static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: rsa_components_from_private_key,
        rsa_pub_components_from_public_key: rsa_components_from_public_key,
        ec_pub_components_from_private_key: ec_components_from_private_key,
        ed_pub_components_from_private_key: ed_public_key_from_private_key,
        compute_digest,
    },
};

/// Which provider [`install`] left serving the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Installed {
    /// The first `install` call installed [`RING_PROVIDER`], and it passed the self-test.
    Ours,
    /// A provider was already installed when `install` first ran, normally the host
    /// application's own; it was kept, and it passed the self-test. `jsonwebtoken` does not say
    /// which provider is installed, so this is also the answer if the host installed
    /// [`RING_PROVIDER`] itself directly.
    Host,
}

/// Why [`install`] could not give the process a working provider.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderError {
    /// The process-wide provider panicked or gave a wrong answer in the RFC 8037 Ed25519
    /// self-test. Almost always `jsonwebtoken` ran before any provider was installed and stored
    /// its panicking placeholder, which stays for the life of the process.
    #[error(
        "the process-wide jsonwebtoken CryptoProvider is unusable: it failed the RFC 8037 Ed25519 \
         self-test, most likely because a jsonwebtoken call ran before any provider was installed; \
         call consent_broker::crypto::install() at start-up, before any other jsonwebtoken use \
         (if the host installed its own provider, that provider is broken)"
    )]
    Unusable,
}

/// Makes a working `jsonwebtoken` provider process-wide; call it at start-up, before any other
/// `jsonwebtoken` use.
///
/// Installs [`RING_PROVIDER`] unless a provider is already installed; a provider the host
/// installed is kept. Then runs, once per process, a known-answer self-test through the
/// process-wide provider (RFC 8037 Appendix A.4: exact Ed25519 signature, verification, and
/// rejection of a wrong message). Later calls return the cached outcome.
///
/// # Errors
///
/// [`ProviderError::Unusable`] if the process-wide provider panics or answers wrongly, e.g. it
/// is `jsonwebtoken`'s placeholder. The placeholder's panic is caught, but the panic hook still
/// prints it once; with `panic = "abort"` the process aborts instead.
pub fn install() -> Result<Installed, ProviderError> {
    static OUTCOME: OnceLock<Result<Installed, ProviderError>> = OnceLock::new();
    *OUTCOME.get_or_init(|| {
        // `install_default` is `OnceLock::set`: its `Err` hands back the provider we offered,
        // not the installed one, and jsonwebtoken has no getter. So identity cannot be compared
        // (`ptr::eq` would always say "ours"); whether ours went in is all there is to know.
        let installed = match RING_PROVIDER.install_default() {
            Ok(()) => Installed::Ours,
            Err(_) => Installed::Host,
        };
        if self_test_passes() {
            Ok(installed)
        } else {
            Err(ProviderError::Unusable)
        }
    })
}

/// RFC 8037 Appendix A.4: the JWS Signing Input and its Ed25519 signature.
const RFC8037_SIGNING_INPUT: &[u8] = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
const RFC8037_SIGNATURE: &str =
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
/// The RFC 8037 Appendix A.1 seed `d` wrapped as PKCS#8 v1 (16-byte header, then the seed).
const RFC8037_PKCS8: [u8; 48] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
];
/// The RFC 8037 Appendix A.1 public key `x`.
const RFC8037_PUBLIC_KEY: [u8; 32] = [
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a,
    0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
];

/// Goes through `jsonwebtoken::crypto`, not `ring`, because what must be proven is whatever
/// provider `jsonwebtoken` will actually use.
fn self_test_passes() -> bool {
    panic::catch_unwind(|| {
        let signing_key = EncodingKey::from_ed_der(&RFC8037_PKCS8);
        let verifying_key = DecodingKey::from_ed_der(&RFC8037_PUBLIC_KEY);
        let verify = |message: &[u8]| {
            crypto::verify(RFC8037_SIGNATURE, message, &verifying_key, Algorithm::EdDSA)
        };
        let signed = crypto::sign(RFC8037_SIGNING_INPUT, &signing_key, Algorithm::EdDSA);
        // The rejection check catches a provider that accepts every signature.
        signed.as_deref() == Ok(RFC8037_SIGNATURE)
            && verify(RFC8037_SIGNING_INPUT) == Ok(true)
            && verify(b"") == Ok(false)
    })
    .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// Factories

/// The key-confusion defence: the family comes from how the key was constructed, so an Ed25519
/// or RSA public key can never be replayed as an HMAC secret (or vice versa).
fn require_family(alg: Algorithm, key_family: AlgorithmFamily) -> JwtResult<()> {
    if alg.family() == key_family {
        Ok(())
    } else {
        Err(new_error(ErrorKind::InvalidKeyFormat))
    }
}

fn new_signer(alg: &Algorithm, key: &EncodingKey) -> JwtResult<Box<dyn JwtSigner>> {
    let alg = *alg;
    require_family(alg, key.family())?;
    let bytes = key.as_bytes();
    let mac = |hash| -> JwtResult<Box<dyn JwtSigner>> {
        Ok(Box::new(HmacSigner {
            alg,
            key: hmac_key(hash, bytes)?,
        }))
    };
    let rsa = |padding: &'static dyn RsaEncoding| -> JwtResult<Box<dyn JwtSigner>> {
        let key_pair = rsa_key_pair(bytes)?;
        Ok(Box::new(RsaSigner {
            alg,
            key_pair,
            padding,
            rng: SystemRandom::new(),
        }))
    };
    let ecdsa = |curve: &'static EcdsaSigningAlgorithm| -> JwtResult<Box<dyn JwtSigner>> {
        let key_pair = ecdsa_key_pair(curve, bytes)?;
        Ok(Box::new(EcdsaSigner {
            alg,
            key_pair,
            rng: SystemRandom::new(),
        }))
    };
    match alg {
        Algorithm::HS256 => mac(hmac::HMAC_SHA256),
        Algorithm::HS384 => mac(hmac::HMAC_SHA384),
        Algorithm::HS512 => mac(hmac::HMAC_SHA512),
        Algorithm::RS256 => rsa(&ring_sig::RSA_PKCS1_SHA256),
        Algorithm::RS384 => rsa(&ring_sig::RSA_PKCS1_SHA384),
        Algorithm::RS512 => rsa(&ring_sig::RSA_PKCS1_SHA512),
        Algorithm::PS256 => rsa(&ring_sig::RSA_PSS_SHA256),
        Algorithm::PS384 => rsa(&ring_sig::RSA_PSS_SHA384),
        Algorithm::PS512 => rsa(&ring_sig::RSA_PSS_SHA512),
        Algorithm::ES256 => ecdsa(&ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => ecdsa(&ring_sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        Algorithm::EdDSA => Ok(Box::new(EdSigner {
            alg,
            key_pair: cached_ed_key_pair(bytes)?,
        })),
        // `Algorithm` is non-exhaustive: one added upstream is refused until it is added here.
        _ => Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    }
}

fn new_verifier(alg: &Algorithm, key: &DecodingKey) -> JwtResult<Box<dyn JwtVerifier>> {
    let alg = *alg;
    require_family(alg, key.family())?;
    let mac = |hash| -> JwtResult<Box<dyn JwtVerifier>> {
        Ok(Box::new(HmacVerifier {
            alg,
            key: hmac_key(hash, key.try_get_as_bytes()?)?,
        }))
    };
    let rsa = |params: &'static RsaParameters| -> JwtResult<Box<dyn JwtVerifier>> {
        Ok(Box::new(RsaVerifier {
            alg,
            params,
            key: rsa_public_key(key)?,
        }))
    };
    let ecdsa = |verification: &'static dyn VerificationAlgorithm, coordinate_len| {
        let point = key.try_get_as_bytes()?;
        let well_formed = split_ec_point(point, coordinate_len).is_some();
        let malformed = ErrorKind::InvalidEcdsaKey;
        point_verifier(alg, verification, point, well_formed, malformed)
    };
    match alg {
        Algorithm::HS256 => mac(hmac::HMAC_SHA256),
        Algorithm::HS384 => mac(hmac::HMAC_SHA384),
        Algorithm::HS512 => mac(hmac::HMAC_SHA512),
        Algorithm::RS256 => rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => rsa(&ring_sig::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => rsa(&ring_sig::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => rsa(&ring_sig::RSA_PSS_2048_8192_SHA512),
        Algorithm::ES256 => ecdsa(&ring_sig::ECDSA_P256_SHA256_FIXED, P256_COORDINATE_LEN),
        Algorithm::ES384 => ecdsa(&ring_sig::ECDSA_P384_SHA384_FIXED, P384_COORDINATE_LEN),
        Algorithm::EdDSA => {
            let public_key = key.try_get_as_bytes()?;
            let key = <[u8; ring_sig::ED25519_PUBLIC_KEY_LEN]>::try_from(public_key)
                .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?;
            Ok(Box::new(EdVerifier { alg, key }))
        }
        _ => Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    }
}

/// ECDSA keys are raw public keys that ring only parses when verifying: checking
/// their shape here makes a wrong key a factory error, not a verifier that rejects every token.
fn point_verifier(
    alg: Algorithm,
    verification: &'static dyn VerificationAlgorithm,
    public_key: &[u8],
    well_formed: bool,
    malformed: ErrorKind,
) -> JwtResult<Box<dyn JwtVerifier>> {
    if !well_formed {
        return Err(new_error(malformed));
    }
    let key = UnparsedPublicKey::new(verification, public_key.to_vec());
    Ok(Box::new(PublicKeyVerifier { alg, key }))
}

// ---------------------------------------------------------------------------------------------
// Signers and verifiers. Keys are parsed once, in the factory; `algorithm()` reports the exact
// algorithm the factory was asked for, which `jsonwebtoken::encode` checks against the header.

struct HmacSigner {
    alg: Algorithm,
    key: hmac::Key,
}

struct RsaSigner {
    alg: Algorithm,
    key_pair: RsaKeyPair,
    padding: &'static dyn RsaEncoding,
    rng: SystemRandom,
}

struct EcdsaSigner {
    alg: Algorithm,
    key_pair: EcdsaKeyPair,
    rng: SystemRandom,
}

struct EdSigner {
    alg: Algorithm,
    key_pair: Arc<Ed25519KeyPair>,
}

struct HmacVerifier {
    alg: Algorithm,
    key: hmac::Key,
}

struct RsaVerifier {
    alg: Algorithm,
    params: &'static RsaParameters,
    key: RsaPublicKeyComponents<Vec<u8>>,
}

/// Ed25519, by this crate's one verification ([`crate::ed25519::verify`]).
struct EdVerifier {
    alg: Algorithm,
    key: [u8; ring_sig::ED25519_PUBLIC_KEY_LEN],
}

/// ECDSA.
struct PublicKeyVerifier {
    alg: Algorithm,
    key: UnparsedPublicKey<Vec<u8>>,
}

macro_rules! reports_algorithm {
    ($trait_name:ident for $($ty:ty),+) => {
        $(impl $trait_name for $ty {
            fn algorithm(&self) -> Algorithm {
                self.alg
            }
        })+
    };
}
reports_algorithm!(JwtSigner for HmacSigner, RsaSigner, EcdsaSigner, EdSigner);
reports_algorithm!(JwtVerifier for HmacVerifier, RsaVerifier, PublicKeyVerifier, EdVerifier);

impl Signer<Vec<u8>> for HmacSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignatureError> {
        Ok(hmac::sign(&self.key, msg).as_ref().to_vec())
    }
}

impl Signer<Vec<u8>> for RsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let mut signature = vec![0; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(self.padding, &self.rng, msg, &mut signature)
            .map_err(|_| SignatureError::new())?;
        Ok(signature)
    }
}

impl Signer<Vec<u8>> for EcdsaSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let signature = self
            .key_pair
            .sign(&self.rng, msg)
            .map_err(|_| SignatureError::new())?;
        Ok(signature.as_ref().to_vec())
    }
}

impl Signer<Vec<u8>> for EdSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignatureError> {
        Ok(self.key_pair.sign(msg).as_ref().to_vec())
    }
}

impl Verifier<Vec<u8>> for HmacVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        // `hmac::verify` compares in constant time; recomputing and using `==` would not.
        hmac::verify(&self.key, msg, signature).map_err(|_| SignatureError::new())
    }
}

impl Verifier<Vec<u8>> for RsaVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        self.key
            .verify(self.params, msg, signature)
            .map_err(|_| SignatureError::new())
    }
}

impl Verifier<Vec<u8>> for EdVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        match crate::ed25519::verify(&self.key, msg, signature) {
            true => Ok(()),
            false => Err(SignatureError::new()),
        }
    }
}

impl Verifier<Vec<u8>> for PublicKeyVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        self.key
            .verify(msg, signature)
            .map_err(|_| SignatureError::new())
    }
}

// ---------------------------------------------------------------------------------------------
// Key parsing

const P256_COORDINATE_LEN: usize = 32;
const P384_COORDINATE_LEN: usize = 48;
const UNCOMPRESSED_POINT: u8 = 0x04;

fn rsa_error(reason: &str) -> Error {
    new_error(ErrorKind::InvalidRsaKey(reason.to_owned()))
}

fn hmac_key(hash: hmac::Algorithm, secret: &[u8]) -> JwtResult<hmac::Key> {
    // With an empty secret anyone can compute the MAC: refuse the misconfiguration outright.
    if secret.is_empty() {
        return Err(new_error(ErrorKind::InvalidKeyFormat));
    }
    Ok(hmac::Key::new(hash, secret))
}

/// `EncodingKey::from_rsa_der` documents PKCS#1, but PKCS#8 costs nothing to accept.
fn rsa_key_pair(der: &[u8]) -> JwtResult<RsaKeyPair> {
    RsaKeyPair::from_der(der)
        .or_else(|pkcs1_error| RsaKeyPair::from_pkcs8(der).map_err(|_| pkcs1_error))
        .map_err(|rejected| rsa_error(&rejected.to_string()))
}

fn ecdsa_key_pair(curve: &'static EcdsaSigningAlgorithm, pkcs8: &[u8]) -> JwtResult<EcdsaKeyPair> {
    EcdsaKeyPair::from_pkcs8(curve, pkcs8, &SystemRandom::new())
        .map_err(|_| new_error(ErrorKind::InvalidEcdsaKey))
}

/// How many parsed Ed25519 signing keys are kept.
const ED_KEY_CACHE: usize = 8;

/// The parsed key pair for `pkcs8`, from a small cache keyed by the SHA-256 of the PKCS#8 bytes.
///
/// jsonwebtoken asks for a new signer for every token; parsing the key derives its public half
/// (a scalar multiplication, as costly as the signature itself), so a broker signing many tokens
/// with one key would pay twice per token. The cache holds at most [`ED_KEY_CACHE`] keys; the
/// least recently used one is dropped when a new key arrives.
fn cached_ed_key_pair(pkcs8: &[u8]) -> JwtResult<Arc<Ed25519KeyPair>> {
    type Cache = Mutex<Vec<([u8; 32], Arc<Ed25519KeyPair>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let id: [u8; 32] = digest::digest(&digest::SHA256, pkcs8)
        .as_ref()
        .try_into()
        .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))?;
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::with_capacity(ED_KEY_CACHE)));
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(position) = cache.iter().position(|(cached, _)| *cached == id) {
        let entry = cache.remove(position);
        let key_pair = Arc::clone(&entry.1);
        cache.push(entry);
        return Ok(key_pair);
    }
    let key_pair = Arc::new(ed_key_pair(pkcs8)?);
    if cache.len() >= ED_KEY_CACHE {
        cache.remove(0);
    }
    cache.push((id, Arc::clone(&key_pair)));
    Ok(key_pair)
}

fn ed_key_pair(pkcs8: &[u8]) -> JwtResult<Ed25519KeyPair> {
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
        .map_err(|_| new_error(ErrorKind::InvalidEddsaKey))
}

/// `(x, y)` of an uncompressed point `04 || x || y` with the curve's coordinate length.
fn split_ec_point(point: &[u8], coordinate_len: usize) -> Option<(&[u8], &[u8])> {
    match point.split_first() {
        Some((&UNCOMPRESSED_POINT, xy)) if xy.len() == 2 * coordinate_len => {
            xy.split_at_checked(coordinate_len)
        }
        _ => None,
    }
}

fn rsa_public_key(key: &DecodingKey) -> JwtResult<RsaPublicKeyComponents<Vec<u8>>> {
    let (n, e) = match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => parse_rsa_public_key(der)?,
        // JWKs in the wild sometimes carry a leading zero; ring wants the bare magnitude.
        DecodingKeyKind::RsaModulusExponent { n, e } => {
            (strip_leading_zeros(n), strip_leading_zeros(e))
        }
    };
    // ring would only notice these at verification time, making every token fail silently.
    if !(2048..=8192).contains(&bit_len(n)) {
        return Err(rsa_error("the modulus must be 2048 to 8192 bits"));
    }
    let e_is_odd = e.last().is_some_and(|low| low & 1 == 1);
    if !e_is_odd || !(2..=33).contains(&bit_len(e)) {
        return Err(rsa_error(
            "the public exponent must be odd, at least 3 and at most 33 bits",
        ));
    }
    Ok(RsaPublicKeyComponents {
        n: n.to_vec(),
        e: e.to_vec(),
    })
}

/// Bit length of a big-endian magnitude without leading zeros.
fn bit_len(magnitude: &[u8]) -> usize {
    magnitude
        .first()
        .map_or(0, |&top| 8 * magnitude.len() - top.leading_zeros() as usize)
}

fn strip_leading_zeros(mut bytes: &[u8]) -> &[u8] {
    while let Some((&0, rest)) = bytes.split_first() {
        bytes = rest;
    }
    bytes
}

const DER_SEQUENCE: u8 = 0x30;
const DER_INTEGER: u8 = 0x02;

/// `(n, e)` from PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`,
/// as magnitudes without leading zeros. ring has no public parser for it.
fn parse_rsa_public_key(der: &[u8]) -> JwtResult<(&[u8], &[u8])> {
    let parse = || {
        let (body, trailing) = der_element(der, DER_SEQUENCE)?;
        let (n, body) = der_element(body, DER_INTEGER)?;
        let (e, body) = der_element(body, DER_INTEGER)?;
        if !trailing.is_empty() || !body.is_empty() {
            return None;
        }
        Some((der_positive_integer(n)?, der_positive_integer(e)?))
    };
    parse().ok_or_else(|| rsa_error("not a DER PKCS#1 RSAPublicKey"))
}

/// Splits one DER element tagged `tag` off `input`: `(contents, rest)`.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&actual_tag, rest) = input.split_first()?;
    let (&first_len_byte, rest) = rest.split_first()?;
    if actual_tag != tag {
        return None;
    }
    let (len, rest) = if first_len_byte < 0x80 {
        (usize::from(first_len_byte), rest)
    } else {
        // Long form. 0x80 alone is BER's indefinite length; four length bytes are far more than
        // any RSA key ring accepts (an 8192-bit modulus needs two) and cannot overflow `usize`.
        let count = usize::from(first_len_byte & 0x7f);
        if !(1..=4).contains(&count) {
            return None;
        }
        let (len_bytes, rest) = rest.split_at_checked(count)?;
        let len = len_bytes
            .iter()
            .fold(0_usize, |len, &byte| len << 8 | usize::from(byte));
        // DER allows only the shortest length encoding.
        if len < 0x80 || len_bytes.first() == Some(&0) {
            return None;
        }
        (len, rest)
    };
    rest.split_at_checked(len)
}

/// A DER INTEGER's contents as a magnitude without leading zeros; `None` unless it is > 0.
fn der_positive_integer(contents: &[u8]) -> Option<&[u8]> {
    let (&first, _) = contents.split_first()?;
    let magnitude = strip_leading_zeros(contents);
    (first & 0x80 == 0 && !magnitude.is_empty()).then_some(magnitude)
}

// ---------------------------------------------------------------------------------------------
// KeyUtils: what `jsonwebtoken::jwk` needs to build JWKs and thumbprints.

fn rsa_components_from_private_key(der: &[u8]) -> JwtResult<(Vec<u8>, Vec<u8>)> {
    let public = RsaPublicKeyComponents::<Vec<u8>>::from(rsa_key_pair(der)?.public());
    Ok((public.n, public.e))
}

fn rsa_components_from_public_key(der: &[u8]) -> JwtResult<(Vec<u8>, Vec<u8>)> {
    let (n, e) = parse_rsa_public_key(der)?;
    Ok((n.to_vec(), e.to_vec()))
}

fn ec_components_from_private_key(
    pkcs8: &[u8],
    alg: Algorithm,
) -> JwtResult<(EllipticCurve, Vec<u8>, Vec<u8>)> {
    let (signing, curve, coordinate_len) = match alg {
        Algorithm::ES256 => (
            &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            EllipticCurve::P256,
            P256_COORDINATE_LEN,
        ),
        Algorithm::ES384 => (
            &ring_sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            EllipticCurve::P384,
            P384_COORDINATE_LEN,
        ),
        _ => return Err(new_error(ErrorKind::InvalidAlgorithm)),
    };
    let key_pair = ecdsa_key_pair(signing, pkcs8)?;
    let (x, y) = split_ec_point(key_pair.public_key().as_ref(), coordinate_len)
        .ok_or_else(|| new_error(ErrorKind::InvalidEcdsaKey))?;
    Ok((curve, x.to_vec(), y.to_vec()))
}

fn ed_public_key_from_private_key(pkcs8: &[u8], curve: &EllipticCurve) -> JwtResult<Vec<u8>> {
    match curve {
        EllipticCurve::Ed25519 => Ok(ed_key_pair(pkcs8)?.public_key().as_ref().to_vec()),
        _ => Err(new_error(ErrorKind::InvalidAlgorithm)),
    }
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> JwtResult<Vec<u8>> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(new_error(ErrorKind::UnsupportedAlgorithm)),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}

#[cfg(test)]
mod key_cache_tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    /// More keys than the cache holds, used in turn: every signature is by the right key.
    #[test]
    fn the_signing_key_cache_never_mixes_keys() {
        let rng = SystemRandom::new();
        let keys: Vec<Vec<u8>> = (0..ED_KEY_CACHE + 3)
            .map(|_| {
                Ed25519KeyPair::generate_pkcs8(&rng)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            })
            .collect();
        for round in 0..3 {
            for pkcs8 in &keys {
                let message = format!("round {round}");
                let signature = cached_ed_key_pair(pkcs8).unwrap().sign(message.as_bytes());
                let public = ed_key_pair(pkcs8).unwrap().public_key().as_ref().to_vec();
                UnparsedPublicKey::new(&ED25519, public)
                    .verify(message.as_bytes(), signature.as_ref())
                    .unwrap();
            }
        }
        assert!(cached_ed_key_pair(b"not a key").is_err());
    }
}

//! Ed25519 keys: the holder's attestation keys and the broker's signing keys.
//!
//! Private key material stays inside [`SigningKey`]: it is never printed by `Debug`, and leaves
//! only through [`SigningKey::to_pkcs8_der`], a call a reviewer will notice. Key ids are RFC 7638
//! JWK thumbprints, so any party can recompute them from the public key alone.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Length of an Ed25519 public key in bytes.
pub const ED25519_PUBLIC_KEY_LEN: usize = 32;

/// A key that could not be loaded or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not an Ed25519 private key in PKCS#8 (v1 or v2) form.
    #[error("not an Ed25519 private key in PKCS#8 DER form")]
    InvalidPkcs8,
    /// A public key of the wrong length.
    #[error("an Ed25519 public key is {ED25519_PUBLIC_KEY_LEN} bytes, got {len}")]
    InvalidPublicKeyLength {
        /// The length given.
        len: usize,
    },
    /// A JWKS document that is not valid JSON of the expected shape.
    #[error("the JWKS document is malformed: {0}")]
    MalformedJwks(String),
    /// A JWK whose `kid` is not the RFC 7638 thumbprint of its key.
    #[error("JWK {kid:?} does not carry its key's RFC 7638 thumbprint as kid")]
    KidMismatch {
        /// The `kid` given.
        kid: String,
    },
    /// A JWK for another key type, curve, use or algorithm.
    #[error("JWK {kid:?} is not an Ed25519 signature key for EdDSA")]
    UnsupportedJwk {
        /// The `kid` given.
        kid: String,
    },
    /// A public key that is not base64url.
    #[error("an Ed25519 public key in a JWK must be unpadded base64url")]
    InvalidPublicKeyEncoding,
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    RandomnessUnavailable,
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ed25519PublicKey([u8; ED25519_PUBLIC_KEY_LEN]);

impl Ed25519PublicKey {
    /// Wraps the 32 raw bytes of a public key.
    ///
    /// # Errors
    /// [`KeyError::InvalidPublicKeyLength`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        <[u8; ED25519_PUBLIC_KEY_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidPublicKeyLength { len: bytes.len() })
    }

    /// Parses the unpadded base64url form used as a JWK's `x`.
    ///
    /// # Errors
    /// [`KeyError::InvalidPublicKeyEncoding`] or [`KeyError::InvalidPublicKeyLength`].
    pub fn from_base64url(x: &str) -> Result<Self, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(x)
            .map_err(|_| KeyError::InvalidPublicKeyEncoding)?;
        Self::from_bytes(&bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ED25519_PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The unpadded base64url form (a JWK's `x`).
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The RFC 7638 JWK thumbprint (SHA-256, base64url): the key id.
    pub fn thumbprint(&self) -> String {
        // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
        let canonical = format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            self.to_base64url()
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }

    pub(crate) fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ed_der(&self.0)
    }
}

impl serde::Serialize for Ed25519PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64url())
    }
}

impl<'de> serde::Deserialize<'de> for Ed25519PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let x = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_base64url(&x).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Ed25519PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ed25519PublicKey({})", self.to_base64url())
    }
}

/// An Ed25519 signing key with its public half and key id. The private bytes are zeroized on
/// drop.
pub struct SigningKey {
    pkcs8: Zeroizing<Vec<u8>>,
    encoding: EncodingKey,
    public: Ed25519PublicKey,
    kid: String,
}

impl SigningKey {
    /// Generates a fresh key (PKCS#8 v2) from `rng`.
    ///
    /// # Errors
    /// [`KeyError::RandomnessUnavailable`].
    pub fn generate(rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        let document =
            Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| KeyError::RandomnessUnavailable)?;
        Self::from_pkcs8_der(document.as_ref())
    }

    /// Loads a PKCS#8 (v1 or v2) Ed25519 private key. For v2 the embedded public key must match.
    ///
    /// # Errors
    /// [`KeyError::InvalidPkcs8`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|_| KeyError::InvalidPkcs8)?;
        let public = Ed25519PublicKey::from_bytes(pair.public_key().as_ref())?;
        Ok(Self {
            pkcs8: Zeroizing::new(der.to_vec()),
            encoding: EncodingKey::from_ed_der(der),
            kid: public.thumbprint(),
            public,
        })
    }

    /// Exports the private key as PKCS#8 DER. Handle the bytes as a secret.
    pub fn to_pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half.
    pub fn public_key(&self) -> Ed25519PublicKey {
        self.public
    }

    /// The key id (RFC 7638 thumbprint of the public key).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("public", &self.public)
            .field("private", &"[redacted]")
            .finish()
    }
}

/// One key of a JSON Web Key Set (RFC 7517), as this crate publishes it: an Ed25519 signature
/// key (`kty` `OKP`, `crv` `Ed25519`, RFC 8037) for `alg` `EdDSA`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `OKP`.
    pub kty: String,
    /// Curve: `Ed25519`.
    pub crv: String,
    /// The public key, unpadded base64url.
    pub x: String,
    /// Key id: the RFC 7638 thumbprint.
    pub kid: String,
    /// Public key use: `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Algorithm: `EdDSA`.
    pub alg: String,
}

impl Jwk {
    /// The JWK of an Ed25519 public key.
    pub fn from_public_key(key: &Ed25519PublicKey) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: key.to_base64url(),
            kid: key.thumbprint(),
            use_: "sig".into(),
            alg: "EdDSA".into(),
        }
    }

    /// The public key, after checking type, curve, use, algorithm and that `kid` is the key's
    /// thumbprint.
    ///
    /// # Errors
    /// [`KeyError::UnsupportedJwk`], [`KeyError::KidMismatch`], or a key encoding error.
    pub fn public_key(&self) -> Result<Ed25519PublicKey, KeyError> {
        if (
            self.kty.as_str(),
            self.crv.as_str(),
            self.use_.as_str(),
            self.alg.as_str(),
        ) != ("OKP", "Ed25519", "sig", "EdDSA")
        {
            return Err(KeyError::UnsupportedJwk {
                kid: self.kid.clone(),
            });
        }
        let key = Ed25519PublicKey::from_base64url(&self.x)?;
        if key.thumbprint() != self.kid {
            return Err(KeyError::KidMismatch {
                kid: self.kid.clone(),
            });
        }
        Ok(key)
    }
}

/// A JSON Web Key Set (RFC 7517 §5): what a bank fetches to verify the broker's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS document and checks every key in it.
    ///
    /// # Errors
    /// [`KeyError::MalformedJwks`] or the first key's error.
    pub fn from_json(json: &str) -> Result<Self, KeyError> {
        let jwks: Self =
            serde_json::from_str(json).map_err(|e| KeyError::MalformedJwks(e.to_string()))?;
        for jwk in &jwks.keys {
            jwk.public_key()?;
        }
        Ok(jwks)
    }

    /// The document as JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings into JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The keys with their ids.
    ///
    /// # Errors
    /// The first key's error.
    pub fn public_keys(&self) -> Result<Vec<Ed25519PublicKey>, KeyError> {
        self.keys.iter().map(Jwk::public_key).collect()
    }
}

/// How long after a retired key's last token expired it stays published: the verifier's
/// largest clock leeway, so a token accepted under leeway still finds its key.
pub const RETIRED_KEY_GRACE: Duration = Duration::seconds(30);

struct KeyEntry {
    key: SigningKey,
    /// `exp` of the last token this key signed (unix seconds), or `i64::MIN`.
    last_expiry: std::sync::atomic::AtomicI64,
}

impl KeyEntry {
    fn new(key: SigningKey) -> Self {
        Self {
            key,
            last_expiry: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// Whether a retired key still verifies: its last token (plus the grace) has not expired.
    fn still_verifies(&self, now: OffsetDateTime) -> bool {
        let last = self.last_expiry.load(std::sync::atomic::Ordering::SeqCst);
        now.unix_timestamp() < last.saturating_add(RETIRED_KEY_GRACE.whole_seconds())
    }
}

/// The broker's signing keys, with rotation.
///
/// The newest key signs from the moment it is added. A retired key keeps verifying (stays in
/// the JWKS) until the last token it signed has expired, plus [`RETIRED_KEY_GRACE`]; then it
/// drops out.
pub struct KeySet {
    current: KeyEntry,
    retired: Vec<KeyEntry>,
}

impl KeySet {
    /// A key set whose only key is `key`.
    pub fn new(key: SigningKey) -> Self {
        Self {
            current: KeyEntry::new(key),
            retired: Vec::new(),
        }
    }

    /// Makes `key` the signing key from `now`; the previous signing key is retired.
    pub fn rotate(&mut self, key: SigningKey, now: OffsetDateTime) {
        let previous = std::mem::replace(&mut self.current, KeyEntry::new(key));
        self.retired.push(previous);
        self.prune(now);
    }

    /// The key that signs now.
    pub fn signing_key(&self) -> &SigningKey {
        &self.current.key
    }

    /// Records that a key of this set signed a token expiring at `exp`.
    pub(crate) fn note_signed(&self, kid: &str, exp: OffsetDateTime) {
        let entry = std::iter::once(&self.current)
            .chain(&self.retired)
            .find(|e| e.key.kid() == kid);
        if let Some(entry) = entry {
            entry
                .last_expiry
                .fetch_max(exp.unix_timestamp(), std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Drops retired keys whose last token has expired.
    pub fn prune(&mut self, now: OffsetDateTime) {
        self.retired.retain(|entry| entry.still_verifies(now));
    }

    /// The public keys that verify at `now`: the signing key and retired keys still in overlap.
    pub fn verification_keys(&self, now: OffsetDateTime) -> Vec<Ed25519PublicKey> {
        std::iter::once(&self.current)
            .chain(
                self.retired
                    .iter()
                    .filter(|entry| entry.still_verifies(now)),
            )
            .map(|entry| entry.key.public_key())
            .collect()
    }

    /// The JWKS to publish at `now`.
    pub fn jwks(&self, now: OffsetDateTime) -> Jwks {
        Jwks {
            keys: self
                .verification_keys(now)
                .iter()
                .map(Jwk::from_public_key)
                .collect(),
        }
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                std::iter::once(&self.current)
                    .chain(&self.retired)
                    .map(|e| e.key.kid()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_8037_appendix_a3() {
        // RFC 8037 Appendix A.3: the thumbprint of the Appendix A.2 public key.
        let key = Ed25519PublicKey::from_base64url("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            key.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn debug_never_prints_the_private_key() {
        let key = SigningKey::generate(&ring::rand::SystemRandom::new()).unwrap();
        let printed = format!("{key:?}");
        assert!(printed.contains("[redacted]"));
        let pkcs8_b64 = URL_SAFE_NO_PAD.encode(key.to_pkcs8_der());
        assert!(!printed.contains(&pkcs8_b64));
        assert!(SigningKey::from_pkcs8_der(b"not a key").is_err());
        assert_eq!(
            Ed25519PublicKey::from_bytes(&[0; 31]),
            Err(KeyError::InvalidPublicKeyLength { len: 31 })
        );
    }
}

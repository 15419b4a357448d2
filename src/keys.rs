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

/// An Ed25519 signing key with its public half and key id.
pub struct SigningKey {
    pkcs8: Vec<u8>,
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
            pkcs8: der.to_vec(),
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

impl Drop for SigningKey {
    fn drop(&mut self) {
        // Best effort without `unsafe`: overwrite our copy of the secret before freeing it.
        // `EncodingKey` zeroizes its own copy on drop.
        for byte in &mut self.pkcs8 {
            *byte = 0;
        }
        std::hint::black_box(&self.pkcs8);
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

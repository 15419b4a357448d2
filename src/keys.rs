//! Ed25519 keys: the holder's attestation keys and the broker's signing keys.
//!
//! Private key material stays inside [`SigningKey`]: it is never printed by `Debug`, and leaves
//! only through [`SigningKey::to_pkcs8_der`], a call a reviewer will notice. Key ids are RFC 7638
//! JWK thumbprints, so any party can recompute them from the public key alone.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use time::Duration;
use zeroize::Zeroizing;

use crate::random::RandomSource;

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
    /// Generates a fresh key from 32 bytes of `random` (the Ed25519 private key, RFC 8032), kept
    /// as PKCS#8 v1 (RFC 8410).
    ///
    /// # Errors
    /// [`KeyError::RandomnessUnavailable`].
    pub fn generate(random: &dyn RandomSource) -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        random
            .fill(seed.as_mut())
            .map_err(|_| KeyError::RandomnessUnavailable)?;
        Self::from_seed(&seed)
    }

    /// The key whose 32-byte Ed25519 private key (RFC 8032 "seed") is `seed`.
    ///
    /// # Errors
    /// Never for 32 bytes; [`KeyError::InvalidPkcs8`] only if the encoding were refused.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        // RFC 8410 §7: SEQUENCE { INTEGER 0, AlgorithmIdentifier { id-Ed25519 },
        // OCTET STRING { OCTET STRING seed } }.
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = Zeroizing::new(Vec::with_capacity(PREFIX.len() + seed.len()));
        der.extend_from_slice(&PREFIX);
        der.extend_from_slice(seed);
        Self::from_pkcs8_der(&der)
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

    /// The keys by `kid`, as a verifier looks them up.
    ///
    /// # Errors
    /// The first key's error.
    pub fn by_kid(&self) -> Result<std::collections::HashMap<String, Ed25519PublicKey>, KeyError> {
        self.keys
            .iter()
            .map(|jwk| jwk.public_key().map(|key| (jwk.kid.clone(), key)))
            .collect()
    }
}

/// How long after a retired token key's last possible token expired it stays published: the
/// verifier's largest clock leeway, so a token accepted under leeway still finds its key.
pub const RETIRED_KEY_GRACE: Duration = Duration::seconds(30);

/// A private key kept in a file (PKCS#8 DER), made on first use: the way to keep the broker's
/// keys (and a bank's attestation key) across restarts, so that what an auditor saved keeps
/// verifying.
///
/// A new file is created with mode `0600` (owner read and write only, on Unix) and synced to
/// disk before the key is used; an existing file is read as it is, and a file that is not a key
/// is an error, never overwritten.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: std::path::PathBuf,
}

/// Whether [`KeyFile::load_or_create`] found the key or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// The file existed and held the key.
    Loaded,
    /// There was no file: a fresh key was generated and written.
    Created,
}

/// A key file that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file could not be read, created or synced.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but does not hold an Ed25519 PKCS#8 key.
    #[error("key file {path}: {source}")]
    Key {
        /// The file.
        path: String,
        /// Why the bytes are not a key.
        #[source]
        source: KeyError,
    },
}

impl KeyFile {
    /// The key file at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Reads the key, or, if the file does not exist, generates one from `random`, writes it
    /// (mode `0600`, synced) and returns it.
    ///
    /// # Errors
    /// [`KeyFileError::Io`]; [`KeyFileError::Key`] for a file that is not a key, or when no
    /// randomness is available for a new one.
    pub fn load_or_create(
        &self,
        random: &dyn RandomSource,
    ) -> Result<(SigningKey, KeyOrigin), KeyFileError> {
        let path = self.path.display().to_string();
        let io = |source| KeyFileError::Io {
            path: path.clone(),
            source,
        };
        let key_error = |source| KeyFileError::Key {
            path: path.clone(),
            source,
        };
        match std::fs::read(&self.path) {
            Ok(der) => {
                let der = Zeroizing::new(der);
                return Ok((
                    SigningKey::from_pkcs8_der(&der).map_err(key_error)?,
                    KeyOrigin::Loaded,
                ));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(error)),
        }
        let key = SigningKey::generate(random).map_err(key_error)?;
        let mut options = std::fs::OpenOptions::new();
        // `create_new`: if another process made the file meanwhile, fail rather than overwrite
        // the key it may already be using.
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.path).map_err(io)?;
        std::io::Write::write_all(&mut file, key.to_pkcs8_der()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok((key, KeyOrigin::Created))
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
    fn a_seed_gives_the_rfc_8032_key() {
        // RFC 8032 §7.1, TEST 1.
        let seed: [u8; 32] = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let key = SigningKey::from_seed(&seed).unwrap();
        assert_eq!(
            key.public_key().as_bytes(),
            &[
                0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
                0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
                0xf7, 0x07, 0x51, 0x1a
            ]
        );
    }

    #[test]
    fn key_files_are_created_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("cb-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = KeyFile::new(dir.join("token.der"));
        let _ = std::fs::remove_file(file.path());
        let random = ring::rand::SystemRandom::new();
        let (made, origin) = file.load_or_create(&random).unwrap();
        assert_eq!(origin, KeyOrigin::Created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (read, origin) = file.load_or_create(&random).unwrap();
        assert_eq!(origin, KeyOrigin::Loaded);
        assert_eq!(read.kid(), made.kid());
        std::fs::write(file.path(), b"not a key").unwrap();
        assert!(matches!(
            file.load_or_create(&random),
            Err(KeyFileError::Key { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
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

//! Witness cosignatures (C2SP `tlog-cosignature`, Ed25519 `cosignature/v1`) and the policy that
//! makes a checkpoint trustworthy: the log's own signature *and* cosignatures of at least `k` of
//! `n` independent witnesses, each of which cosigns only a checkpoint consistent with every one it
//! cosigned before for that log. A log operator who rolls its store back or shows two histories
//! cannot get both cosigned.
//!
//! A cosignature line is `— <witness name> base64(key ID || timestamp || signature)`: the key ID
//! is `SHA-256(name || 0x0A || 0x04 || public key)[:4]`, the timestamp 8 bytes big-endian (POSIX
//! seconds), and the Ed25519 signature covers `cosignature/v1\ntime <timestamp>\n` followed by
//! the checkpoint's body. Witness keys are written as vkeys with signature type `0x04`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::Ed25519KeyPair;

use crate::checkpoint::{
    Checkpoint, CheckpointError, NoteError, NoteVerifier, SIG_PREFIX, ed25519_key_pair,
    format_vkey, is_valid_key_name, key_id, open_note, parse_vkey, split_note,
};

/// The signed-note signature type of an Ed25519 cosignature.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// The message a witness signs: the header, its timestamp, the checkpoint's body.
fn signed_message(timestamp: u64, body: &str) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{body}")
}

/// A witness's cosigning key.
pub struct CosignatureSigner {
    key_pair: Ed25519KeyPair,
    verifier: CosignatureVerifier,
}

impl std::fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosignatureSigner")
            .field("vkey", &self.verifier.to_vkey())
            .finish_non_exhaustive()
    }
}

impl CosignatureSigner {
    /// A signer named `name` (a schema-less URL naming the witness) with an Ed25519 PKCS#8 key.
    ///
    /// # Errors
    /// [`NoteError::BadKeyName`], [`NoteError::BadPrivateKey`].
    pub fn new(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        let (key_pair, public_key) = ed25519_key_pair(pkcs8)?;
        let verifier = CosignatureVerifier::from_public_key(name, &public_key)?;
        Ok(Self { key_pair, verifier })
    }

    /// The verifier for this key.
    pub fn verifier(&self) -> &CosignatureVerifier {
        &self.verifier
    }

    /// The cosignature line (with its newline) over the checkpoint `body` at `timestamp`.
    pub fn cosign(&self, body: &str, timestamp: u64) -> String {
        let signature = self
            .key_pair
            .sign(signed_message(timestamp, body).as_bytes());
        let mut blob = Vec::with_capacity(76);
        blob.extend_from_slice(&self.verifier.key_id);
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(signature.as_ref());
        format!(
            "{SIG_PREFIX}{} {}\n",
            self.verifier.name,
            BASE64.encode(blob)
        )
    }
}

/// A witness's public key, to check its cosignatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_id: [u8; 4],
    public_key: [u8; 32],
}

impl CosignatureVerifier {
    /// From a name and a raw Ed25519 public key.
    ///
    /// # Errors
    /// [`NoteError::BadKeyName`].
    pub fn from_public_key(name: &str, public_key: &[u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, public_key),
            public_key: *public_key,
        })
    }

    /// Parses `<name>+<8 hex key ID>+<base64(0x04 || public key)>`, checking the key ID.
    ///
    /// # Errors
    /// [`NoteError::MalformedVerifierKey`], [`NoteError::UnknownAlgorithm`] for another type,
    /// [`NoteError::KeyIdMismatch`], [`NoteError::BadKeyName`].
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let (name, claimed, public_key) = parse_vkey(vkey, ALG_COSIGNATURE_V1)?;
        let verifier = Self::from_public_key(name, &public_key)?;
        if verifier.key_id != claimed {
            return Err(NoteError::KeyIdMismatch);
        }
        Ok(verifier)
    }

    /// The text form, `<name>+<8 lowercase hex>+<base64(0x04 || public key)>`.
    pub fn to_vkey(&self) -> String {
        format_vkey(
            &self.name,
            self.key_id,
            ALG_COSIGNATURE_V1,
            &self.public_key,
        )
    }

    /// The witness's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id its lines carry.
    pub(crate) fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The timestamp of a valid cosignature `blob` (key ID, timestamp, signature) over `body`,
    /// or `None`.
    fn check(&self, body: &str, blob: &[u8]) -> Option<u64> {
        let (timestamp, sig) = blob.split_first_chunk::<8>()?;
        let timestamp = u64::from_be_bytes(*timestamp);
        if timestamp > i64::MAX as u64 || sig.len() != 64 {
            return None;
        }
        crate::ed25519::verify(
            &self.public_key,
            signed_message(timestamp, body).as_bytes(),
            sig,
        )
        .then_some(timestamp)
    }
}

/// How many witnesses must have cosigned, and which. Choose `quorum` above half of `witnesses`:
/// with witnesses that trust a log's first checkpoint, two disjoint groups of at most half could
/// each cosign a different history; a majority cannot be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessPolicy {
    /// The witnesses trusted for this log.
    pub witnesses: Vec<CosignatureVerifier>,
    /// How many of them must have cosigned (`k` of `n`).
    pub quorum: usize,
}

impl WitnessPolicy {
    /// No witnesses required: the log's own signature alone (for a log not yet witnessed).
    pub fn none() -> Self {
        Self {
            witnesses: Vec::new(),
            quorum: 0,
        }
    }
}

/// A checkpoint that carries the log's signature and enough witness cosignatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The witnesses whose cosignature verified, with its timestamp.
    pub cosigned_by: Vec<(String, u64)>,
}

/// Why a checkpoint was not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessedError {
    /// The note, the log's signature or the body is bad.
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    /// A line by a trusted witness does not verify: the note is refused as a whole.
    #[error("the cosignature of {witness} does not verify")]
    BadCosignature {
        /// The witness.
        witness: String,
    },
    /// Fewer trusted witnesses cosigned than the policy requires.
    #[error("{got} of the required {quorum} witnesses cosigned")]
    Quorum {
        /// Trusted witnesses that cosigned.
        got: usize,
        /// How many are required.
        quorum: usize,
    },
    /// The policy asks for more witnesses than it names.
    #[error("the policy requires {quorum} witnesses and names {named}")]
    ImpossiblePolicy {
        /// The quorum.
        quorum: usize,
        /// The witnesses named.
        named: usize,
    },
}

/// Opens `note` with the log's key (and origin, when given), then counts the cosignatures of the
/// policy's witnesses: a line naming a trusted witness that does not verify refuses the note;
/// unknown lines are ignored; fewer than `quorum` distinct witnesses refuse it.
///
/// # Errors
/// [`WitnessedError`].
pub fn verify_witnessed(
    note: &str,
    log: &NoteVerifier,
    origin: Option<&str>,
    policy: &WitnessPolicy,
) -> Result<WitnessedCheckpoint, WitnessedError> {
    if policy.quorum > policy.witnesses.len() {
        return Err(WitnessedError::ImpossiblePolicy {
            quorum: policy.quorum,
            named: policy.witnesses.len(),
        });
    }
    let body = open_note(note, std::slice::from_ref(log)).map_err(CheckpointError::from)?;
    let checkpoint = Checkpoint::parse_body(&body)?;
    if let Some(expected) = origin
        && checkpoint.origin != expected
    {
        return Err(CheckpointError::OriginMismatch {
            expected: expected.to_owned(),
            found: checkpoint.origin,
        }
        .into());
    }
    let (_, lines) = split_note(note).map_err(CheckpointError::from)?;
    let mut cosigned_by: Vec<(String, u64)> = Vec::new();
    let mut counted: Vec<[u8; 32]> = Vec::new();
    for line in &lines {
        let Some(witness) = policy
            .witnesses
            .iter()
            .find(|w| w.name == line.name && w.key_id == line.key_id)
        else {
            continue;
        };
        let Some(timestamp) = witness.check(&body, &line.signature) else {
            return Err(WitnessedError::BadCosignature {
                witness: witness.name.clone(),
            });
        };
        // Distinct witnesses are distinct keys: one key listed under two names counts once.
        if !counted.contains(&witness.public_key) {
            counted.push(witness.public_key);
            cosigned_by.push((witness.name.clone(), timestamp));
        }
    }
    if cosigned_by.len() < policy.quorum {
        return Err(WitnessedError::Quorum {
            got: cosigned_by.len(),
            quorum: policy.quorum,
        });
    }
    Ok(WitnessedCheckpoint {
        checkpoint,
        cosigned_by,
    })
}

/// Appends cosignature lines (a witness's answer) to a signed note.
pub fn add_cosignatures(note: &str, lines: &str) -> String {
    let mut out = note.to_owned();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(lines);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C2SP example: the witness line decodes to key ID 8d66cf3f and timestamp 1679315147.
    #[test]
    fn the_specs_example_line_decodes() {
        let line = "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
        let blob = BASE64.decode(line).unwrap_or_default();
        assert_eq!(blob.len(), 76);
        assert_eq!(blob.get(..4), Some(&[0x8d, 0x66, 0xcf, 0x3f][..]));
        let timestamp = blob
            .get(4..12)
            .and_then(|t| <[u8; 8]>::try_from(t).ok())
            .map(u64::from_be_bytes);
        assert_eq!(timestamp, Some(1_679_315_147));
    }
}

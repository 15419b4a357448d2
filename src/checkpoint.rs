//! Signed checkpoints for the tamper-evident audit log, in the C2SP formats.
//!
//! This module owns two wire formats, so that existing transparency-log
//! tooling (Go's `golang.org/x/mod/sumdb/note`, witnesses, monitors) can read
//! what we publish:
//!
//! * [C2SP signed-note](https://c2sp.org/signed-note): a UTF-8 text ending in a
//!   newline, a blank line, then one or more lines
//!   `— <key name> <base64(key ID || signature)>`. Only Ed25519 (signature
//!   type `0x01`) keys are supported; their key ID is the first four bytes of
//!   `SHA-256(key name || 0x0A || 0x01 || public key)`.
//! * [C2SP tlog-checkpoint](https://c2sp.org/tlog-checkpoint): a note text made
//!   of the log origin, the decimal tree size, the base64 root hash and
//!   optional non-empty extension lines.
//!
//! It must never: return note text (or a checkpoint parsed from it) unless a
//! signature by a trusted key over exactly that text has verified; let a
//! signature from a known key that fails to verify pass silently; do any
//! signature work on input larger than [`MAX_NOTE_BYTES`] or with more than
//! [`MAX_SIGNATURES`] signature lines; print private key material; produce a
//! note or checkpoint body that its own parser would read differently; or
//! panic on any input.
//!
//! One file of about 700 lines (60 of them tests), on purpose: a C2SP checkpoint is only ever
//! read inside a signed note, and the two formats' parsers share their strictness rules.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::digest;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

/// A Merkle tree hash (SHA-256, RFC 6962).
pub use super::merkle::Hash;

/// Largest signed note accepted by [`open_note`] or produced by
/// [`NoteSigner::sign`], in bytes (1 MiB).
pub const MAX_NOTE_BYTES: usize = 1 << 20;

/// Largest number of signature lines accepted by [`open_note`].
///
/// The spec requires accepting at least 16; Go's implementation stops at 100.
pub const MAX_SIGNATURES: usize = 100;

/// The signed-note signature type byte for Ed25519.
const ALG_ED25519: u8 = 0x01;

/// What starts every signature line: U+2014 EM DASH, then a space.
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";

/// Why a signed note, key or signing request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is empty.
    #[error("empty note")]
    EmptyNote,
    /// The note (or the note that signing would produce) exceeds
    /// [`MAX_NOTE_BYTES`].
    #[error("note is {len} bytes, more than the {max} allowed", max = MAX_NOTE_BYTES)]
    TooLarge {
        /// Size of the offending note in bytes.
        len: usize,
    },
    /// The note has more than [`MAX_SIGNATURES`] signature lines.
    #[error("note has {count} signature lines, more than the {max} allowed", max = MAX_SIGNATURES)]
    TooManySignatures {
        /// Number of signature lines found.
        count: usize,
    },
    /// The note or text contains an ASCII control character other than newline.
    #[error("note contains a control character other than newline")]
    ControlCharacter,
    /// No blank line separates the text from the signatures.
    #[error("note has no blank line before its signatures")]
    MissingBlankLine,
    /// Nothing follows the blank line.
    #[error("note has no signature lines")]
    NoSignatureLines,
    /// The last signature line does not end with a newline.
    #[error("note does not end with a newline")]
    UnterminatedSignatureLine,
    /// A signature line is not `— <name> <base64>`, or its decoded signature
    /// is shorter than a key ID plus one byte.
    #[error("malformed signature line {line}")]
    BadSignatureLine {
        /// 1-based index of the line within the signature block.
        line: usize,
    },
    /// A signature is not valid standard, padded base64.
    #[error("signature line {line} is not valid base64")]
    BadBase64 {
        /// 1-based index of the line within the signature block.
        line: usize,
    },
    /// A key name is empty or contains whitespace, '+' or a control character.
    #[error("invalid key name")]
    BadKeyName,
    /// Text to sign does not end with a newline.
    #[error("note text does not end with a newline")]
    TextWithoutFinalNewline,
    /// No signature is from a known key (all were ignored as unknown).
    #[error("note has no signature from a known key")]
    NoVerifiedSignature,
    /// A signature from a known key failed to verify, so the whole note is
    /// rejected.
    #[error("invalid signature for key {key}")]
    InvalidSignature {
        /// The key as `<name>+<hex key ID>`.
        key: String,
    },
    /// Two different verifier keys share the name and key ID of a signature.
    #[error("ambiguous key {key}")]
    AmbiguousKey {
        /// The key as `<name>+<hex key ID>`.
        key: String,
    },
    /// A verifier key is not `<name>+<8 hex digits>+<base64>`, or its key is
    /// not 33 bytes.
    #[error("malformed verifier key")]
    MalformedVerifierKey,
    /// A verifier key uses a signature type other than Ed25519 (`0x01`).
    #[error("unsupported verifier key algorithm {algorithm:#04x}")]
    UnknownAlgorithm {
        /// The signature type byte found.
        algorithm: u8,
    },
    /// A verifier key's key ID does not match its name and public key.
    #[error("verifier key ID does not match its name and public key")]
    KeyIdMismatch,
    /// The PKCS#8 document is not an acceptable Ed25519 private key.
    #[error("invalid Ed25519 PKCS#8 private key")]
    BadPrivateKey,
}

/// Why a checkpoint could not be formatted, parsed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The signed-note layer refused the note (framing, limits, keys, signatures).
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The body has fewer than the three mandatory lines.
    #[error("checkpoint has {found} lines, at least 3 are required")]
    MissingLines {
        /// Number of lines found.
        found: usize,
    },
    /// The body does not end with a newline.
    #[error("checkpoint does not end with a newline")]
    BodyWithoutFinalNewline,
    /// The body contains an ASCII control character other than newline.
    #[error("checkpoint contains a control character")]
    ControlCharacter,
    /// The origin line is empty.
    #[error("checkpoint origin is empty")]
    EmptyOrigin,
    /// The origin contains a newline or other control character, which would
    /// change the line structure of the body.
    #[error("checkpoint origin contains a newline or control character")]
    InvalidOrigin,
    /// The tree size line is not a plain ASCII decimal number (sign, space,
    /// empty, other characters).
    #[error("checkpoint tree size is not a decimal number")]
    SizeNotANumber,
    /// The tree size has a leading zero (only `0` itself may start with one).
    #[error("checkpoint tree size has a leading zero")]
    SizeLeadingZero,
    /// The tree size does not fit in 64 bits.
    #[error("checkpoint tree size overflows u64")]
    SizeOverflow,
    /// The root hash line is not valid standard, padded base64.
    #[error("checkpoint root hash is not valid base64")]
    RootNotBase64,
    /// The root hash does not decode to 32 bytes.
    #[error("checkpoint root hash is {len} bytes, expected 32")]
    RootWrongLength {
        /// Decoded length.
        len: usize,
    },
    /// An extension line is empty (the spec requires non-empty lines).
    #[error("checkpoint extension line {index} is empty")]
    EmptyExtensionLine {
        /// 0-based index into the extensions.
        index: usize,
    },
    /// An extension contains a newline or other control character.
    #[error("checkpoint extension line {index} contains a newline or control character")]
    InvalidExtensionLine {
        /// 0-based index into the extensions.
        index: usize,
    },
    /// The checkpoint verified but was issued for another log.
    #[error("checkpoint origin {found:?} is not the expected {expected:?}")]
    OriginMismatch {
        /// The origin the caller asked for.
        expected: String,
        /// The origin in the checkpoint.
        found: String,
    },
}

/// A tlog-checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique identity of the log, e.g. `example.com/log42`.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 6962 Merkle tree root hash at `size`.
    pub root: Hash,
    /// Opaque, non-empty extension lines (use is discouraged by the spec).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// Formats the checkpoint as note text (every line newline-terminated).
    ///
    /// Refuses an empty origin, an origin or extension containing a newline
    /// or control character, and empty extension lines, since each would
    /// make the body parse differently or not at all.
    pub fn to_body(&self) -> Result<String, CheckpointError> {
        if self.origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        if has_control(&self.origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        for (index, ext) in self.extensions.iter().enumerate() {
            if ext.is_empty() {
                return Err(CheckpointError::EmptyExtensionLine { index });
            }
            if has_control(ext) {
                return Err(CheckpointError::InvalidExtensionLine { index });
            }
        }
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for ext in &self.extensions {
            body.push_str(ext);
            body.push('\n');
        }
        Ok(body)
    }

    /// Parses a checkpoint body (the text of a signed note).
    ///
    /// This does not authenticate anything: use [`verify_checkpoint`] for
    /// notes received from elsewhere.
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        if body.is_empty() {
            return Err(CheckpointError::MissingLines { found: 0 });
        }
        let Some(content) = body.strip_suffix('\n') else {
            return Err(CheckpointError::BodyWithoutFinalNewline);
        };
        // Newline is the only control character the format allows; a '\r'
        // would otherwise sneak into the origin or an extension.
        if has_forbidden_control(content) {
            return Err(CheckpointError::ControlCharacter);
        }
        let mut lines = content.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::MissingLines {
                found: content.split('\n').count(),
            });
        };
        if origin.is_empty() {
            return Err(CheckpointError::EmptyOrigin);
        }
        let size = parse_size(size)?;
        let root = parse_root(root)?;
        let mut extensions = Vec::new();
        for (index, ext) in lines.enumerate() {
            if ext.is_empty() {
                return Err(CheckpointError::EmptyExtensionLine { index });
            }
            extensions.push(ext.to_owned());
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// Parses a tree size: ASCII digits only, no leading zero unless it is `0`.
fn parse_size(line: &str) -> Result<u64, CheckpointError> {
    // `u64::from_str` would accept a leading '+', so check the charset first.
    if line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CheckpointError::SizeNotANumber);
    }
    if line.len() > 1 && line.starts_with('0') {
        return Err(CheckpointError::SizeLeadingZero);
    }
    // With only digits left, overflow is the one way parsing can fail.
    line.parse::<u64>()
        .map_err(|_| CheckpointError::SizeOverflow)
}

/// Parses a root hash: canonical padded base64 of exactly 32 bytes.
fn parse_root(line: &str) -> Result<Hash, CheckpointError> {
    // The STANDARD engine requires canonical padding and zero trailing bits,
    // so each hash has exactly one accepted encoding.
    let bytes = BASE64
        .decode(line)
        .map_err(|_| CheckpointError::RootNotBase64)?;
    let len = bytes.len();
    Hash::try_from(bytes).map_err(|_| CheckpointError::RootWrongLength { len })
}

/// True if `s` contains an ASCII control character (newline included).
fn has_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20)
}

/// True if `s` contains an ASCII control character other than newline, which
/// the signed-note spec forbids anywhere in a note.
fn has_forbidden_control(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 && b != b'\n')
}

/// Key names must be non-empty, without Unicode whitespace or '+' (the
/// separator of verifier keys), per the spec. Control characters are refused
/// too because no note containing them can be opened.
pub(crate) fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ')
}

/// `SHA-256(name || 0x0A || 0x01 || public key)[:4]`, as the spec recommends.
fn ed25519_key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    key_id(name, ALG_ED25519, public_key)
}

/// `SHA-256(name || 0x0A || signature type || public key)[:4]`.
pub(crate) fn key_id(name: &str, algorithm: u8, public_key: &[u8; 32]) -> [u8; 4] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[algorithm]);
    ctx.update(public_key);
    let hash = ctx.finish();
    match hash.as_ref().first_chunk::<4>() {
        Some(id) => *id,
        // SHA-256 output is always 32 bytes; this arm only satisfies the
        // no-panic rule.
        None => [0; 4],
    }
}

/// Splits `<name>+<8 hex key ID>+<base64(algorithm || 32-byte public key)>` into the name, the
/// claimed key ID and the key, for a key of `algorithm`.
pub(crate) fn parse_vkey(
    vkey: &str,
    algorithm: u8,
) -> Result<(&str, [u8; 4], [u8; 32]), NoteError> {
    // Names cannot contain '+', but base64 can, so split only twice.
    let mut parts = vkey.splitn(3, '+');
    let (Some(name), Some(hex), Some(key64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::MalformedVerifierKey);
    };
    if !is_valid_key_name(name) {
        return Err(NoteError::BadKeyName);
    }
    // `from_str_radix` would accept a sign, so check the digits first.
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedVerifierKey);
    }
    let claimed_id = u32::from_str_radix(hex, 16)
        .map_err(|_| NoteError::MalformedVerifierKey)?
        .to_be_bytes();
    let key = BASE64
        .decode(key64)
        .map_err(|_| NoteError::MalformedVerifierKey)?;
    let Some((&found, public_key)) = key.split_first() else {
        return Err(NoteError::MalformedVerifierKey);
    };
    if found != algorithm {
        return Err(NoteError::UnknownAlgorithm { algorithm: found });
    }
    let public_key: [u8; 32] = public_key
        .try_into()
        .map_err(|_| NoteError::MalformedVerifierKey)?;
    Ok((name, claimed_id, public_key))
}

/// `<name>+<8 lowercase hex key ID>+<base64(algorithm || public key)>`.
pub(crate) fn format_vkey(
    name: &str,
    key_id: [u8; 4],
    algorithm: u8,
    public_key: &[u8; 32],
) -> String {
    let mut key = Vec::with_capacity(33);
    key.push(algorithm);
    key.extend_from_slice(public_key);
    format!("{}+{}", key_label(name, key_id), BASE64.encode(key))
}

/// An Ed25519 key pair from a PKCS#8 (v1 or v2) document, and its public key.
pub(crate) fn ed25519_key_pair(pkcs8: &[u8]) -> Result<(Ed25519KeyPair, [u8; 32]), NoteError> {
    // `maybe_unchecked` accepts v1 documents (seed only), which is what
    // most tooling, including OpenSSL, writes.
    let key_pair =
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|_| NoteError::BadPrivateKey)?;
    let public_key: [u8; 32] = key_pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| NoteError::BadPrivateKey)?;
    Ok((key_pair, public_key))
}

/// Formats a key for error messages the way Go does: `<name>+<hex key ID>`.
pub(crate) fn key_label(name: &str, key_id: [u8; 4]) -> String {
    format!("{name}+{:08x}", u32::from_be_bytes(key_id))
}

/// Signs notes with an Ed25519 key.
pub struct NoteSigner {
    key_pair: Ed25519KeyPair,
    verifier: NoteVerifier,
}

impl fmt::Debug for NoteSigner {
    // Only public information: the private key must never reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("vkey", &self.verifier.to_vkey())
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// Creates a signer from a key name and an Ed25519 PKCS#8 (v1 or v2)
    /// private key document.
    pub fn new(name: &str, pkcs8: &[u8]) -> Result<Self, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        let (key_pair, public_key) = ed25519_key_pair(pkcs8)?;
        let verifier = NoteVerifier::from_public_key(name, &public_key)?;
        Ok(Self { key_pair, verifier })
    }

    /// The key name written on signature lines.
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// The verifier key to hand to verifiers:
    /// `<name>+<8 hex key ID>+<base64(0x01 || public key)>`.
    pub fn verifier_key(&self) -> String {
        self.verifier.to_vkey()
    }

    /// Signs `text` and returns the full signed note (text, blank line, one
    /// signature line).
    ///
    /// `text` must end with a newline and must not contain other control
    /// characters, and the note must fit in [`MAX_NOTE_BYTES`], so that
    /// [`open_note`] can open what this produces.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        if !text.ends_with('\n') {
            return Err(NoteError::TextWithoutFinalNewline);
        }
        if has_forbidden_control(text) {
            return Err(NoteError::ControlCharacter);
        }
        let sig = self.key_pair.sign(text.as_bytes());
        let mut blob = Vec::with_capacity(4 + sig.as_ref().len());
        blob.extend_from_slice(&self.verifier.key_id);
        blob.extend_from_slice(sig.as_ref());
        let note = format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.verifier.name,
            BASE64.encode(blob)
        );
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge { len: note.len() });
        }
        Ok(note)
    }
}

/// A verifier key, parsed from its text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key_id: [u8; 4],
    public_key: [u8; 32],
}

impl NoteVerifier {
    /// Parses `<name>+<8 hex key ID>+<base64(0x01 || 32-byte public key)>`,
    /// checking that the key ID matches the name and key.
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let (name, claimed_id, public_key) = parse_vkey(vkey, ALG_ED25519)?;
        let verifier = Self::from_public_key(name, &public_key)?;
        if verifier.key_id != claimed_id {
            return Err(NoteError::KeyIdMismatch);
        }
        Ok(verifier)
    }

    /// Builds a verifier from a key name and a raw Ed25519 public key.
    pub fn from_public_key(name: &str, public_key: &[u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::BadKeyName);
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: ed25519_key_id(name, public_key),
            public_key: *public_key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key ID (big-endian, as on the wire).
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The text form `<name>+<8 lowercase hex>+<base64(0x01 || public key)>`.
    pub fn to_vkey(&self) -> String {
        format_vkey(&self.name, self.key_id, ALG_ED25519, &self.public_key)
    }

    fn verify(&self, text: &str, sig: &[u8]) -> bool {
        crate::ed25519::verify(&self.public_key, text.as_bytes(), sig)
    }
}

/// One syntactically valid signature line.
pub(crate) struct SignatureLine<'a> {
    pub(crate) name: &'a str,
    pub(crate) key_id: [u8; 4],
    pub(crate) signature: Vec<u8>,
}

fn parse_signature_line(line: &str, number: usize) -> Result<SignatureLine<'_>, NoteError> {
    let bad_line = NoteError::BadSignatureLine { line: number };
    let Some((name, b64)) = line
        .strip_prefix(SIG_PREFIX)
        .and_then(|rest| rest.split_once(' '))
    else {
        return Err(bad_line);
    };
    if !is_valid_key_name(name) {
        return Err(NoteError::BadKeyName);
    }
    // A second space means extra whitespace or a name with a space in it.
    if b64.is_empty() || b64.contains(' ') {
        return Err(bad_line);
    }
    let blob = BASE64
        .decode(b64)
        .map_err(|_| NoteError::BadBase64 { line: number })?;
    let Some((key_id, signature)) = blob.split_first_chunk::<4>() else {
        return Err(bad_line);
    };
    if signature.is_empty() {
        return Err(bad_line);
    }
    Ok(SignatureLine {
        name,
        key_id: *key_id,
        signature: signature.to_vec(),
    })
}

/// A note split into its text (with its final newline) and its parsed signature lines, with
/// every size and syntax limit checked and no signature verified.
pub(crate) fn split_note(note: &str) -> Result<(&str, Vec<SignatureLine<'_>>), NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge { len: note.len() });
    }
    if note.is_empty() {
        return Err(NoteError::EmptyNote);
    }
    if has_forbidden_control(note) {
        return Err(NoteError::ControlCharacter);
    }
    // The text may itself contain blank lines; the last one is the separator.
    let split = note.rfind("\n\n").ok_or(NoteError::MissingBlankLine)?;
    let (text, rest) = note
        .split_at_checked(split.saturating_add(1))
        .ok_or(NoteError::MissingBlankLine)?;
    let sigs = rest.strip_prefix('\n').ok_or(NoteError::MissingBlankLine)?;
    if sigs.is_empty() {
        return Err(NoteError::NoSignatureLines);
    }
    let sigs = sigs
        .strip_suffix('\n')
        .ok_or(NoteError::UnterminatedSignatureLine)?;
    let count = sigs.split('\n').count();
    if count > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures { count });
    }
    // Parse every line before verifying anything, so a malformed note costs
    // no signature checks.
    let parsed = sigs
        .split('\n')
        .enumerate()
        .map(|(i, line)| parse_signature_line(line, i.saturating_add(1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((text, parsed))
}

/// Opens a signed note: returns the text if at least one signature by one of
/// `verifiers` verifies.
///
/// Signatures from unknown keys (name or key ID not matching any verifier)
/// are ignored, as the spec requires; a signature from a known key that fails
/// to verify rejects the whole note. Size and signature-count limits are
/// enforced before any signature is checked.
pub fn open_note(note: &str, verifiers: &[NoteVerifier]) -> Result<String, NoteError> {
    let (text, parsed) = split_note(note)?;
    let mut verified = false;
    for sig in &parsed {
        let mut known = verifiers
            .iter()
            .filter(|v| v.name == sig.name && v.key_id == sig.key_id);
        let Some(verifier) = known.next() else {
            continue;
        };
        // Duplicates of the same key are harmless; two different keys with
        // the same name and ID mean the trust configuration is broken.
        if known.any(|other| other.public_key != verifier.public_key) {
            return Err(NoteError::AmbiguousKey {
                key: key_label(sig.name, sig.key_id),
            });
        }
        if !verifier.verify(text, &sig.signature) {
            return Err(NoteError::InvalidSignature {
                key: key_label(sig.name, sig.key_id),
            });
        }
        verified = true;
    }
    if verified {
        Ok(text.to_owned())
    } else {
        Err(NoteError::NoVerifiedSignature)
    }
}

/// Signs a checkpoint, returning the signed note.
pub fn sign_checkpoint(
    checkpoint: &Checkpoint,
    signer: &NoteSigner,
) -> Result<String, CheckpointError> {
    let body = checkpoint.to_body()?;
    Ok(signer.sign(&body)?)
}

/// Opens and parses a signed checkpoint; refuses one whose origin is not
/// `origin` (when given).
///
/// The signature is checked before the body is parsed, so nothing of an
/// unauthenticated note is interpreted.
pub fn verify_checkpoint(
    note: &str,
    verifier: &NoteVerifier,
    origin: Option<&str>,
) -> Result<Checkpoint, CheckpointError> {
    let text = open_note(note, std::slice::from_ref(verifier))?;
    let checkpoint = Checkpoint::parse_body(&text)?;
    if let Some(expected) = origin
        && checkpoint.origin != expected
    {
        return Err(CheckpointError::OriginMismatch {
            expected: expected.to_owned(),
            found: checkpoint.origin,
        });
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two distinct keys sharing a name and key ID cannot be built through the
    // public constructors without a 2^32 search, so build them directly.
    #[test]
    fn ambiguous_known_keys_are_refused() -> Result<(), NoteError> {
        let seed = [3u8; 32];
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&seed);
        let signer = NoteSigner::new("a.example", &pkcs8)?;
        let note = signer.sign("text\n")?;
        let good = signer.verifier.clone();
        let impostor = NoteVerifier {
            public_key: [9; 32],
            ..good.clone()
        };
        assert_eq!(
            open_note(&note, std::slice::from_ref(&good)),
            Ok("text\n".to_owned())
        );
        assert_eq!(
            open_note(&note, &[good.clone(), good.clone()]),
            Ok("text\n".to_owned())
        );
        assert_eq!(
            open_note(&note, &[good, impostor]),
            Err(NoteError::AmbiguousKey {
                key: key_label("a.example", signer.verifier.key_id),
            })
        );
        Ok(())
    }
}

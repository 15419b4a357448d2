//! Signed instructions from a holder to the broker: a policy change, a rotation of the holder's
//! attestation key, a revocation made at the bank.
//!
//! The broker never records "the bank did it" on the embedder's word: each of these reaches it as
//! a compact JWS (`alg` EdDSA, `typ` [`INSTRUCTION_TYPE`], `kid` the thumbprint of a key the holder
//! registered) that the bank signed, addressed to this broker, short-lived and used once. The
//! broker verifies it, applies it, and keeps it in the log entry as the evidence. A key rotation
//! is signed by a key registered before it, so a platform cannot install a key of its own.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::consent::{RevocationReason, Revoker};
use crate::crypto::{self, ProviderError};
use crate::ids::{BrokerId, ConsentId, HolderId};
use crate::jws::{self, JwsProblem};
use crate::keys::{Ed25519PublicKey, SigningKey};
use crate::policy::HolderPolicy;
use crate::random::{RandomSource, random_token};

/// The JOSE `typ` of a holder's instruction.
pub const INSTRUCTION_TYPE: &str = "holder-instruction+jwt";
/// Longest an instruction may be valid (`exp - iat`).
pub const MAX_INSTRUCTION_LIFETIME: Duration = Duration::minutes(10);
/// Validity the holder gives an instruction.
pub const INSTRUCTION_LIFETIME: Duration = Duration::minutes(5);
/// Largest instruction accepted, in bytes.
pub const MAX_INSTRUCTION_LEN: usize = 16 * 1024;
/// Clock difference tolerated between holder and broker.
const LEEWAY: i64 = 30;

/// What the holder instructs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Instruction {
    /// The holder's policy from now on.
    SetPolicy {
        /// The policy.
        policy: HolderPolicy,
    },
    /// The keys that sign the holder's attestations from now on (a rotation). Signed by a key
    /// registered before the change; attestations signed by the keys it replaces stay
    /// verifiable as evidence.
    SetKeys {
        /// The new keys (at least one).
        keys: Vec<Ed25519PublicKey>,
    },
    /// A consent revoked at the bank, by the subject there or by the bank.
    Revoke {
        /// The consent.
        consent: ConsentId,
        /// [`Revoker::Subject`] or [`Revoker::Holder`]: the platform's own revocations do not go
        /// through the bank.
        by: Revoker,
        /// Why.
        reason: RevocationReason,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstructionClaims {
    iss: HolderId,
    aud: BrokerId,
    iat: i64,
    exp: i64,
    jti: String,
    instruction: Instruction,
}

/// Why an instruction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InstructionError {
    /// Not a well-formed compact JWS with the expected claims.
    #[error("the instruction is malformed: {0}")]
    Malformed(String),
    /// `alg` is not EdDSA.
    #[error("the instruction must be signed with EdDSA")]
    WrongAlgorithm,
    /// `typ` is not [`INSTRUCTION_TYPE`].
    #[error("the instruction's typ must be {INSTRUCTION_TYPE:?}")]
    WrongType,
    /// The `kid` names no key registered for the holder.
    #[error("the instruction is signed with a key not registered for the holder")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the instruction's signature is invalid")]
    BadSignature,
    /// `iss` names no registered holder, or another one than expected.
    #[error("the instruction's issuer is not a registered holder")]
    UnknownHolder,
    /// `aud` is not this broker.
    #[error("the instruction is addressed to another broker")]
    WrongAudience,
    /// `iat` is in the future beyond the leeway.
    #[error("the instruction was issued in the future")]
    IssuedInFuture,
    /// Its validity has passed.
    #[error("the instruction expired")]
    Expired,
    /// `exp - iat` is not positive or longer than [`MAX_INSTRUCTION_LIFETIME`].
    #[error("the instruction's validity is not between 1 s and the maximum")]
    LifetimeInvalid,
    /// The instruction (`jti`) was applied before.
    #[error("the instruction was already applied (replay)")]
    Replayed,
    /// The instruction cannot be applied (no keys, a revocation by the platform, a consent of
    /// another holder, an invalid policy).
    #[error("the instruction cannot be applied: {0}")]
    Inapplicable(String),
    /// The JWT crypto provider cannot be used.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The instruction could not be signed (holder side).
    #[error("the instruction could not be signed")]
    Signing,
}

impl From<JwsProblem> for InstructionError {
    fn from(problem: JwsProblem) -> Self {
        Self::Malformed(format!("{problem:?}"))
    }
}

/// An instruction that passed every check but replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VerifiedInstruction {
    pub instruction: Instruction,
    pub jti: String,
}

/// Signs `instruction` from `holder` for `broker` at `now` with `key`.
pub(crate) fn sign(
    holder: &HolderId,
    key: &SigningKey,
    instruction: &Instruction,
    broker: &BrokerId,
    now: OffsetDateTime,
    random: &dyn RandomSource,
) -> Result<String, InstructionError> {
    crypto::install()?;
    let jti = random_token(random).map_err(|_| InstructionError::Signing)?;
    let iat = now.unix_timestamp();
    let claims = InstructionClaims {
        iss: holder.clone(),
        aud: broker.clone(),
        iat,
        exp: iat.saturating_add(INSTRUCTION_LIFETIME.whole_seconds()),
        jti,
        instruction: instruction.clone(),
    };
    let header = json!({ "alg": "EdDSA", "typ": INSTRUCTION_TYPE, "kid": key.kid() });
    let payload = serde_json::to_string(&claims).map_err(|_| InstructionError::Signing)?;
    jws::sign_eddsa(&header.to_string(), &payload, key).ok_or(InstructionError::Signing)
}

/// The issuer an instruction names, read before its signature is checked, only to find the keys
/// to check it with.
pub(crate) fn claimed_issuer(jws: &str) -> Result<HolderId, InstructionError> {
    jws::split(jws, MAX_INSTRUCTION_LEN)?
        .unverified_payload()?
        .get("iss")
        .and_then(Value::as_str)
        .and_then(|iss| iss.parse().ok())
        .ok_or(InstructionError::UnknownHolder)
}

/// Verifies an instruction from `holder`, signed by one of `keys`, for `broker`, at `now`.
pub(crate) fn verify(
    jws: &str,
    holder: &HolderId,
    keys: &[Ed25519PublicKey],
    broker: &BrokerId,
    now: OffsetDateTime,
) -> Result<VerifiedInstruction, InstructionError> {
    crypto::install()?;
    let compact = jws::split(jws, MAX_INSTRUCTION_LEN)?;
    match compact.header.get("alg") {
        Some(Value::String(alg)) if alg == "EdDSA" => {}
        _ => return Err(InstructionError::WrongAlgorithm),
    }
    match compact.header.get("typ") {
        Some(Value::String(typ)) if typ == INSTRUCTION_TYPE => {}
        _ => return Err(InstructionError::WrongType),
    }
    if jws::first_present(&compact.header, &["crit", "jku", "x5u", "jwk", "x5c"]).is_some() {
        return Err(InstructionError::Malformed(
            "the header carries members that are never followed".into(),
        ));
    }
    let key = match compact.header.get("kid") {
        Some(Value::String(kid)) => keys.iter().find(|key| key.thumbprint() == *kid),
        _ => None,
    }
    .ok_or(InstructionError::UnknownKey)?;
    let payload = compact
        .open_object(key)?
        .ok_or(InstructionError::BadSignature)?;
    let claims: InstructionClaims = serde_json::from_value(Value::Object(payload))
        .map_err(|e| InstructionError::Malformed(e.to_string()))?;
    if &claims.iss != holder {
        return Err(InstructionError::UnknownHolder);
    }
    if &claims.aud != broker {
        return Err(InstructionError::WrongAudience);
    }
    let now = now.unix_timestamp();
    if claims.iat > now.saturating_add(LEEWAY) {
        return Err(InstructionError::IssuedInFuture);
    }
    let lifetime = claims.exp.saturating_sub(claims.iat);
    if lifetime <= 0 || lifetime > MAX_INSTRUCTION_LIFETIME.whole_seconds() {
        return Err(InstructionError::LifetimeInvalid);
    }
    if now >= claims.exp.saturating_add(LEEWAY) {
        return Err(InstructionError::Expired);
    }
    if claims.jti.is_empty() || claims.jti.len() > 128 {
        return Err(InstructionError::Malformed(
            "jti must be 1 to 128 bytes".into(),
        ));
    }
    Ok(VerifiedInstruction {
        instruction: claims.instruction,
        jti: claims.jti,
    })
}

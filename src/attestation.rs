//! The holder's signed statement that the subject approved a consent, and its verification.
//!
//! The holder (bank) authenticates the subject, shows them the request, and signs what they
//! approved: a compact JWS (`alg` EdDSA, `typ` [`ATTESTATION_TYPE`], `kid` the RFC 7638
//! thumbprint of the holder's key). The broker verifies it against the holder's registered keys
//! and the pending request. Only the crate-private `verify` makes an [`Approval`], and only the
//! broker calls it, with the keys the holder registered; only an [`Approval`] activates a grant,
//! so the platform cannot authorise a consent by itself. Anyone may re-check an attestation with
//! [`check_attestation`] (an auditor re-verifying the evidence in the log, say): that yields the
//! statement, with no power to activate anything.
//!
//! Time claims are checked here against the caller's `now`, never by jsonwebtoken, whose checks
//! read the system clock and are lax by default (60 s leeway, only `exp` required).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::consent::{Approval, ConsentRequest};
use crate::crypto::{self, ProviderError};
use crate::ids::{AccountId, BrokerId, ConsentId, HolderId, PlatformId, SubjectId};
use crate::keys::{Ed25519PublicKey, SigningKey};
use crate::random::{RandomSource, random_token};
use crate::sets::{AccountSet, PlaintextUses, PurposeSet, ScopeSet};
use crate::vocab::{Purpose, Scope};

/// The JOSE `typ` of an attestation.
pub const ATTESTATION_TYPE: &str = "consent-attestation+jwt";
/// Longest an attestation may be valid (`exp - iat`).
pub const MAX_ATTESTATION_LIFETIME: Duration = Duration::minutes(10);
/// Default validity the holder helper gives an attestation.
pub const DEFAULT_ATTESTATION_LIFETIME: Duration = Duration::minutes(5);
/// Clock difference tolerated between holder and broker.
pub const ATTESTATION_LEEWAY: Duration = Duration::seconds(30);
/// Largest attestation accepted, in bytes; longer input is refused before any parsing.
pub const MAX_ATTESTATION_LEN: usize = 16 * 1024;

/// What the subject approved, as the holder states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalStatement {
    /// The consent request approved.
    pub consent: ConsentId,
    /// Who approved (the subject the holder authenticated).
    pub subject: SubjectId,
    /// The platform the subject approved sharing with (the request's recipient).
    pub platform: PlatformId,
    /// Approved scopes.
    pub scopes: ScopeSet,
    /// Approved purposes.
    pub purposes: PurposeSet,
    /// Approved accounts.
    pub accounts: AccountSet,
    /// Until when the approval holds.
    pub consent_expires_at: OffsetDateTime,
    /// How many unattended accesses (the subject not in the conversation, a fraud-alert poll)
    /// the subject agreed to per UTC day; `0` when they approved none.
    pub unattended_daily_limit: u32,
    /// RFC 7638 thumbprints of the subject's device keys, registered at the bank, that the
    /// bank's responses are sealed to (see [`crate::seal_response`]).
    pub devices: Vec<String>,
    /// Uses (scope and purpose) for which the subject agreed to receive data unsealed (empty:
    /// always sealed); the bank's policy must allow each of them too.
    pub plaintext: PlaintextUses,
}

/// The claims of an attestation, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationClaims {
    iss: HolderId,
    aud: BrokerId,
    sub: SubjectId,
    client_id: PlatformId,
    cid: ConsentId,
    scope: ScopeSet,
    purpose: PurposeSet,
    acct: AccountSet,
    consent_exp: i64,
    unattended_daily_limit: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dev: Vec<String>,
    #[serde(default, skip_serializing_if = "PlaintextUses::is_empty")]
    plain: PlaintextUses,
    iat: i64,
    exp: i64,
    jti: String,
}

/// Why an attestation was refused.
///
/// The variants tell the operator which check failed; none carries key material or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttestationError {
    /// No attestation was given.
    #[error("no attestation was given: approval requires the holder's signed attestation")]
    Missing,
    /// Not a well-formed compact JWS with the expected claims. The text is this crate's own:
    /// which part, what kind of fault, and for JSON its line and column; never the input's
    /// text (the refusal is logged, and the log is published).
    #[error("the attestation is malformed: {0}")]
    Malformed(String),
    /// The header names an algorithm other than EdDSA.
    #[error("the attestation must be signed with EdDSA")]
    WrongAlgorithm,
    /// The header's `typ` is not [`ATTESTATION_TYPE`].
    #[error("the attestation's typ must be {ATTESTATION_TYPE}")]
    WrongType,
    /// The `kid` is missing or names no key registered for the holder.
    #[error("the attestation is signed with a key not registered for holder {holder}")]
    UnknownKey {
        /// The holder whose keys were searched.
        holder: HolderId,
    },
    /// The signature does not verify: the attestation was forged or altered.
    #[error("the attestation's signature is invalid")]
    BadSignature,
    /// `iss` is not the consent's holder.
    #[error("the attestation was issued by another holder")]
    WrongIssuer,
    /// `aud` is not this broker.
    #[error("the attestation is addressed to another broker")]
    WrongAudience,
    /// `cid` names another consent.
    #[error("the attestation is for another consent")]
    WrongConsent,
    /// `sub` names another subject.
    #[error("the attestation names another subject")]
    WrongSubject,
    /// `client_id` names another platform than the request's.
    #[error("the attestation approves sharing with another platform")]
    WrongPlatform,
    /// `iat` lies in the future beyond the leeway.
    #[error("the attestation was issued in the future")]
    IssuedInFuture,
    /// The attestation's own validity (`exp`) has passed.
    #[error("the attestation expired at unix time {exp}")]
    Expired {
        /// Its `exp`.
        exp: i64,
    },
    /// `exp - iat` is longer than [`MAX_ATTESTATION_LIFETIME`] or not positive.
    #[error("the attestation's validity must be positive and at most {} s", MAX_ATTESTATION_LIFETIME.whole_seconds())]
    LifetimeInvalid,
    /// The attestation (`jti`) was already used.
    #[error("the attestation was already used (replay)")]
    Replayed,
    /// An approved scope that the request did not ask for.
    #[error("scope {0} was approved but not requested")]
    ScopeNotRequested(Scope),
    /// An approved purpose that the request did not ask for.
    #[error("purpose {0} was approved but not requested")]
    PurposeNotRequested(Purpose),
    /// An approved account that the request did not name.
    #[error("an account was approved that the request did not name")]
    AccountNotRequested(AccountId),
    /// The approval names no scope, purpose or account.
    #[error("the approval must name at least one scope, one purpose and one account")]
    NothingApproved,
    /// The consent expiry is not in the future, or later than the request allows.
    #[error(
        "the approved consent expiry (unix {consent_exp}) must be after now and at most unix {max}"
    )]
    ConsentExpiryOutOfRange {
        /// The attested expiry.
        consent_exp: i64,
        /// The latest allowed.
        max: i64,
    },
    /// The JWT crypto provider cannot be used.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The attestation could not be signed (holder side).
    #[error("the attestation could not be signed")]
    Signing,
}

/// An attestation that passed every check, as [`check_attestation`] returns it: what the holder
/// stated, and the attestation's id. Evidence only: it activates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAttestation {
    /// What the subject approved.
    pub statement: ApprovalStatement,
    /// The attestation's unique id (`jti`).
    pub attestation_id: String,
}

/// What an attestation is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// This broker's id (the attestation's `aud`).
    pub broker: &'a BrokerId,
    /// The pending request.
    pub request: &'a ConsentRequest,
    /// The holder's registered attestation keys.
    pub holder_keys: &'a [Ed25519PublicKey],
    /// The latest consent expiry allowed (request duration and holder maximum from now).
    pub latest_expiry: OffsetDateTime,
}

/// Checks an attestation for `expected.request` at `now`: header, signature against
/// `expected.holder_keys`, every claim. Replay (a `jti` already used) needs the broker's store and
/// is not checked here.
///
/// # Errors
/// The first failed check, as an [`AttestationError`].
pub fn check_attestation(
    token: &str,
    expected: &Expectations<'_>,
    now: OffsetDateTime,
) -> Result<CheckedAttestation, AttestationError> {
    let claims = checked_claims(token, expected, now)?;
    Ok(CheckedAttestation {
        statement: ApprovalStatement {
            consent: claims.cid,
            subject: claims.sub,
            platform: claims.client_id,
            scopes: claims.scope,
            purposes: claims.purpose,
            accounts: claims.acct,
            consent_expires_at: from_unix(claims.consent_exp)?,
            unattended_daily_limit: claims.unattended_daily_limit,
            devices: claims.dev,
            plaintext: claims.plain,
        },
        attestation_id: claims.jti,
    })
}

/// Whether `token` is the holder's own current attestation about `expected.request`: signed by
/// the registered key its header names (EdDSA, the attestation `typ`), by this holder, for this
/// broker, consent, subject and platform, and within its lifetime at `now`, whatever it
/// approves. The broker logs a refusal of an approval only then
/// ([`Broker::approve`](crate::Broker::approve)): anyone may post an attestation for a consent
/// the published log shows pending, and anything else the holder's key signed (an instruction
/// in the log, another consent's attestation, a stale one) is not the holder's word about this
/// consent now, so it is answered and not written to the log in the holder's name (as the bank's
/// gate journals a refusal only once the token's signature verified).
pub(crate) fn is_the_holders(
    token: &str,
    expected: &Expectations<'_>,
    now: OffsetDateTime,
) -> bool {
    let Ok(compact) = crate::jws::split(token, MAX_ATTESTATION_LEN) else {
        return false;
    };
    let header = |name: &str| compact.header.get(name).and_then(serde_json::Value::as_str);
    if header("alg") != Some("EdDSA") || header("typ") != Some(ATTESTATION_TYPE) {
        return false;
    }
    let Some(key) =
        header("kid").and_then(|kid| expected.holder_keys.iter().find(|k| k.thumbprint() == kid))
    else {
        return false;
    };
    // The claims that say whose and about what, read as a token's are (what the attestation
    // approves need not parse: a malformed statement of the holder's is still the holder's).
    let Ok(Some(payload)) = compact.open(key) else {
        return false;
    };
    let Ok(claims) = crate::jws::Members::parse(&payload, crate::token::TokenPart::Payload) else {
        return false;
    };
    let text = |name: &str| crate::jws::string_claim(&claims, name).ok();
    let number = |name: &str| crate::jws::time_claim(&claims, name).ok();
    let (
        Some(iss),
        Some(aud),
        Some(cid),
        Some(sub),
        Some(client_id),
        Some(iat),
        Some(exp),
        Some(jti),
    ) = (
        text("iss"),
        text("aud"),
        text("cid"),
        text("sub"),
        text("client_id"),
        number("iat"),
        number("exp"),
        text("jti"),
    )
    else {
        return false;
    };
    Identity {
        iss,
        aud,
        cid,
        sub,
        client_id,
        iat,
        exp,
        jti,
    }
    .check(expected, now)
    .is_ok()
}

/// The broker's verification: as [`check_attestation`], and the result is the [`Approval`] that
/// activates a grant. Crate-private: the broker calls it with the keys the holder registered, and
/// nothing else can mint an approval.
pub(crate) fn verify(
    token: &str,
    expected: &Expectations<'_>,
    now: OffsetDateTime,
) -> Result<Approval, AttestationError> {
    let claims = checked_claims(token, expected, now)?;
    Ok(Approval {
        scopes: claims.scope,
        purposes: claims.purpose,
        accounts: claims.acct,
        expires_at: from_unix(claims.consent_exp)?,
        unattended_daily_limit: claims.unattended_daily_limit,
        attestation_id: claims.jti,
        attestation: token.to_owned(),
    })
}

fn checked_claims(
    token: &str,
    expected: &Expectations<'_>,
    now: OffsetDateTime,
) -> Result<AttestationClaims, AttestationError> {
    let claims = signed_claims(token, expected)?;
    check_identity(&claims, expected, now)?;
    check_statement(&claims, expected, now)?;
    Ok(claims)
}

/// The claims of `token`, once its header is an attestation's and its signature verifies under
/// the holder's key the header names.
fn signed_claims(
    token: &str,
    expected: &Expectations<'_>,
) -> Result<AttestationClaims, AttestationError> {
    crypto::install()?;
    if token.is_empty() {
        return Err(AttestationError::Missing);
    }
    if token.len() > MAX_ATTESTATION_LEN {
        return Err(AttestationError::Malformed(format!(
            "{} bytes, more than the {MAX_ATTESTATION_LEN} accepted",
            token.len()
        )));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| unreadable("header", &e))?;
    if header.alg != Algorithm::EdDSA {
        return Err(AttestationError::WrongAlgorithm);
    }
    if header.typ.as_deref() != Some(ATTESTATION_TYPE) {
        return Err(AttestationError::WrongType);
    }
    let holder = &expected.request.holder;
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| expected.holder_keys.iter().find(|k| k.thumbprint() == kid))
        .ok_or_else(|| AttestationError::UnknownKey {
            holder: holder.clone(),
        })?;

    decode_claims(token, key)
}

fn decode_claims(
    token: &str,
    key: &Ed25519PublicKey,
) -> Result<AttestationClaims, AttestationError> {
    // Signature and algorithm only: every claim, time included, is checked by `check_claims`.
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    match jsonwebtoken::decode::<AttestationClaims>(token, &key.decoding_key(), &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature => AttestationError::BadSignature,
            ErrorKind::InvalidAlgorithm => AttestationError::WrongAlgorithm,
            _ => unreadable("claims", &e),
        }),
    }
}

/// Why an attestation's `part` could not be read, in this crate's own words and never the
/// parser's message: that quotes the input (an unknown member's name, a value of the wrong
/// type), and a refusal is written to the broker's log, which is published and which erasure
/// does not reach, and sent back to whoever posted it. The JSON's position is kept: a number
/// the parser counted, not one the input gave.
fn unreadable(part: &str, error: &jsonwebtoken::errors::Error) -> AttestationError {
    let why = match error.kind() {
        ErrorKind::InvalidToken => "not a compact JWS".to_owned(),
        ErrorKind::Base64(_) => "not base64url".to_owned(),
        ErrorKind::Utf8(_) => "not UTF-8".to_owned(),
        ErrorKind::Json(json) => {
            let what = match json.classify() {
                serde_json::error::Category::Syntax => "not JSON",
                serde_json::error::Category::Eof => "JSON cut short",
                serde_json::error::Category::Data => {
                    "a member missing, unknown, given twice, or of the wrong type or value"
                }
                serde_json::error::Category::Io => "unreadable",
            };
            format!("{what} (line {}, column {})", json.line(), json.column())
        }
        _ => "unreadable".to_owned(),
    };
    AttestationError::Malformed(format!("{part}: {why}"))
}

/// Who signed it about what, and when: the holder, for this broker, consent, subject and
/// platform, within its lifetime.
fn check_identity(
    claims: &AttestationClaims,
    expected: &Expectations<'_>,
    now: OffsetDateTime,
) -> Result<(), AttestationError> {
    Identity {
        iss: claims.iss.as_str(),
        aud: claims.aud.as_str(),
        cid: claims.cid.as_str(),
        sub: claims.sub.as_str(),
        client_id: claims.client_id.as_str(),
        iat: claims.iat,
        exp: claims.exp,
        jti: &claims.jti,
    }
    .check(expected, now)
}

/// The claims that say who signed an attestation about what, and when.
struct Identity<'a> {
    iss: &'a str,
    aud: &'a str,
    cid: &'a str,
    sub: &'a str,
    client_id: &'a str,
    iat: i64,
    exp: i64,
    jti: &'a str,
}

impl Identity<'_> {
    /// The holder, for this broker, consent, subject and platform, within its lifetime.
    fn check(
        &self,
        expected: &Expectations<'_>,
        now: OffsetDateTime,
    ) -> Result<(), AttestationError> {
        let request = expected.request;
        if self.iss != request.holder.as_str() {
            return Err(AttestationError::WrongIssuer);
        }
        if self.aud != expected.broker.as_str() {
            return Err(AttestationError::WrongAudience);
        }
        if self.cid != request.id.as_str() {
            return Err(AttestationError::WrongConsent);
        }
        if self.sub != request.subject.as_str() {
            return Err(AttestationError::WrongSubject);
        }
        if self.client_id != request.platform.as_str() {
            return Err(AttestationError::WrongPlatform);
        }
        let now_unix = now.unix_timestamp();
        let leeway = ATTESTATION_LEEWAY.whole_seconds();
        if self.iat > now_unix.saturating_add(leeway) {
            return Err(AttestationError::IssuedInFuture);
        }
        let lifetime = self.exp.saturating_sub(self.iat);
        if lifetime <= 0 || lifetime > MAX_ATTESTATION_LIFETIME.whole_seconds() {
            return Err(AttestationError::LifetimeInvalid);
        }
        if now_unix >= self.exp.saturating_add(leeway) {
            return Err(AttestationError::Expired { exp: self.exp });
        }
        if self.jti.is_empty() || self.jti.len() > 128 {
            return Err(AttestationError::Malformed(
                "jti must be 1 to 128 bytes".into(),
            ));
        }
        Ok(())
    }
}

/// What the holder's attestation approves: within what was requested.
fn check_statement(
    claims: &AttestationClaims,
    expected: &Expectations<'_>,
    now: OffsetDateTime,
) -> Result<(), AttestationError> {
    let request = expected.request;
    let now_unix = now.unix_timestamp();
    if claims.scope.is_empty() || claims.purpose.is_empty() || claims.acct.is_empty() {
        return Err(AttestationError::NothingApproved);
    }
    if let Some(scope) = claims.scope.iter().find(|s| !request.scopes.contains(s)) {
        return Err(AttestationError::ScopeNotRequested(scope));
    }
    if let Some(purpose) = claims
        .purpose
        .iter()
        .find(|p| !request.purposes.contains(p))
    {
        return Err(AttestationError::PurposeNotRequested(purpose));
    }
    if let Some(account) = claims.acct.iter().find(|a| !request.accounts.allows(a)) {
        return Err(AttestationError::AccountNotRequested(account.clone()));
    }
    let max = expected.latest_expiry.unix_timestamp();
    if claims.consent_exp <= now_unix || claims.consent_exp > max {
        return Err(AttestationError::ConsentExpiryOutOfRange {
            consent_exp: claims.consent_exp,
            max,
        });
    }
    Ok(())
}

fn from_unix(seconds: i64) -> Result<OffsetDateTime, AttestationError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| AttestationError::Malformed("a time out of range".into()))
}

/// The holder-side helper that signs attestations with the holder's key.
#[derive(Debug)]
pub struct AttestationSigner {
    holder: HolderId,
    key: SigningKey,
    lifetime: Duration,
}

impl AttestationSigner {
    /// A signer for `holder` with `key`; attestations are valid for
    /// [`DEFAULT_ATTESTATION_LIFETIME`].
    ///
    /// # Errors
    /// [`AttestationError::Provider`] if the JWT crypto provider cannot be used.
    pub fn new(holder: HolderId, key: SigningKey) -> Result<Self, AttestationError> {
        crypto::install()?;
        Ok(Self {
            holder,
            key,
            lifetime: DEFAULT_ATTESTATION_LIFETIME,
        })
    }

    /// The public key to register with the broker.
    pub fn public_key(&self) -> Ed25519PublicKey {
        self.key.public_key()
    }

    /// Signs an instruction to `broker` (a policy change, a key rotation, a revocation made at
    /// the bank) at `now`, valid for [`INSTRUCTION_LIFETIME`](crate::INSTRUCTION_LIFETIME), with
    /// a fresh `jti` from `random`. The same key signs attestations and instructions.
    ///
    /// # Errors
    /// [`InstructionError::Signing`](crate::InstructionError::Signing) if signing or randomness
    /// fails.
    pub fn sign_instruction(
        &self,
        instruction: &crate::Instruction,
        broker: &BrokerId,
        now: OffsetDateTime,
        random: &dyn RandomSource,
    ) -> Result<String, crate::InstructionError> {
        crate::instruction::sign(&self.holder, &self.key, instruction, broker, now, random)
    }

    /// Signs `statement` for `broker` at `now`, with a fresh random `jti` from `random`.
    ///
    /// # Errors
    /// [`AttestationError::Signing`] if signing or randomness fails.
    pub fn sign(
        &self,
        statement: &ApprovalStatement,
        broker: &BrokerId,
        now: OffsetDateTime,
        random: &dyn RandomSource,
    ) -> Result<String, AttestationError> {
        self.sign_identified(statement, broker, now, random)
            .map(|(signed, _)| signed)
    }

    /// As [`AttestationSigner::sign`], with the attestation's `jti`.
    pub(crate) fn sign_identified(
        &self,
        statement: &ApprovalStatement,
        broker: &BrokerId,
        now: OffsetDateTime,
        random: &dyn RandomSource,
    ) -> Result<(String, String), AttestationError> {
        let jti = random_token(random).map_err(|_| AttestationError::Signing)?;
        let iat = now.unix_timestamp();
        let claims = AttestationClaims {
            iss: self.holder.clone(),
            aud: broker.clone(),
            sub: statement.subject.clone(),
            client_id: statement.platform.clone(),
            cid: statement.consent.clone(),
            scope: statement.scopes,
            purpose: statement.purposes,
            acct: statement.accounts.clone(),
            consent_exp: statement.consent_expires_at.unix_timestamp(),
            unattended_daily_limit: statement.unattended_daily_limit,
            dev: statement.devices.clone(),
            plain: statement.plaintext,
            iat,
            exp: iat.saturating_add(self.lifetime.whole_seconds()),
            jti: jti.clone(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ATTESTATION_TYPE.to_owned());
        header.kid = Some(self.key.kid().to_owned());
        let signed = jsonwebtoken::encode(&header, &claims, self.key.encoding_key())
            .map_err(|_| AttestationError::Signing)?;
        Ok((signed, jti))
    }
}

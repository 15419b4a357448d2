//! Access tokens: the claims, signing them, and checking a token's bytes.
//!
//! A permit becomes a JWT (RFC 9068 shape): header `alg` `EdDSA`, `typ` `at+jwt`, `kid` the RFC
//! 7638 thumbprint of the broker's key; claims `iss`, `aud`, `sub`, `client_id`, `cid`, `att`
//! (the holder's attestation the grant rests on), `scope`, `purpose`, `acct`, `presence` (what the
//! platform claims), `cnf` (`{"jkt": …}`, RFC 9449: the thumbprint of the key the presenter must
//! prove possession of; absent when the platform has no sender key), `iat`, `nbf`, `exp`, `jti`. [`check_token`] is the pure part of verification:
//! it parses the token itself, strictly (exact segment count, unpadded base64url, exact JSON
//! types, every claim required), verifies the signature through jsonwebtoken's process-wide
//! provider, and checks times against the caller's `now`. It never follows `jku`, `x5u` or an
//! embedded `jwk`, never accepts an algorithm other than EdDSA, and never panics on input.
//! The consent's live status is the verifier's job ([`crate::holder`]).

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::{Duration, OffsetDateTime};

use crate::crypto::{self, ProviderError};
use crate::ids::{AccountId, BrokerId, ConsentId, HolderId, PlatformId, SubjectId};
use crate::jws::{self, JwsProblem, Member, Members};
use crate::keys::{Ed25519PublicKey, SigningKey};
use crate::policy::Presence;
use crate::vocab::{ProhibitedUse, Purpose, RequestedPurpose, RequestedScope, Scope};

/// The JOSE `typ` of an access token (RFC 9068 §2.1).
pub const TOKEN_TYPE: &str = "at+jwt";
/// Default token lifetime.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::minutes(5);
/// Longest token lifetime any configuration allows.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::minutes(15);
/// Largest clock leeway a verifier may be configured with.
pub const MAX_LEEWAY: Duration = Duration::seconds(30);
/// Largest token accepted, in bytes; longer input is refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Latest time a token may name (9999-12-31T23:59:59Z); later values are refused as absurd.
pub const MAX_UNIX_TIME: i64 = 253_402_300_799;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The broker that issued it.
    pub iss: BrokerId,
    /// The holder it is for.
    pub aud: HolderId,
    /// The subject, as the holder knows them.
    pub sub: SubjectId,
    /// The platform that presents it.
    pub client_id: PlatformId,
    /// The consent it relies on.
    pub cid: ConsentId,
    /// The id (`jti`) of the holder's attestation the consent's grant rests on.
    pub att: String,
    /// The one permitted scope.
    pub scope: Scope,
    /// The one permitted purpose.
    pub purpose: Purpose,
    /// The one permitted account.
    pub acct: AccountId,
    /// Whether the platform says the subject is present (it cannot be proven: the bank bounds
    /// what a false label can gain).
    pub presence: Presence,
    /// The key the presenter must prove possession of (RFC 9449), if the platform has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// Unique token id (128 random bits, base64url).
    pub jti: String,
}

/// A token's confirmation claim (RFC 7800 `cnf`), as RFC 9449 uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// The RFC 7638 thumbprint (SHA-256, base64url) of the presenter's public key.
    pub jkt: String,
}

/// Which part of a token a decoding error is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPart {
    /// The JOSE header.
    Header,
    /// The claims.
    Payload,
    /// The signature.
    Signature,
}

/// What is wrong with a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimProblem {
    /// The claim is absent.
    Missing,
    /// The claim has another JSON type (for example an array or a float where a string or an
    /// integer is required).
    WrongType,
    /// The claim has the right type but an unacceptable value (an invalid id, an unknown scope,
    /// a time outside 0..=9999-12-31).
    Invalid,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is {len} bytes long; at most {MAX_TOKEN_LEN} are accepted")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not three dot-separated segments.
    #[error("a token has 3 segments, this one has {segments}")]
    SegmentCount {
        /// How many it has.
        segments: usize,
    },
    /// A segment is not unpadded base64url.
    #[error("the token's {0:?} is not unpadded base64url")]
    Base64(TokenPart),
    /// The header or payload is not a UTF-8 JSON object.
    #[error("the token's {0:?} is not a UTF-8 JSON object")]
    Json(TokenPart),
    /// `alg` is `none` (in any case).
    #[error("unsigned tokens (alg none) are never accepted")]
    AlgorithmNone,
    /// `alg` is missing or not `EdDSA`.
    #[error("only EdDSA tokens are accepted, got alg {0:?}")]
    UnsupportedAlgorithm(Option<String>),
    /// `typ` is missing or not `at+jwt`.
    #[error("the token's typ must be \"at+jwt\", got {0:?}")]
    WrongType(Option<String>),
    /// The header has `crit`: no extension is understood, so none may be critical.
    #[error("the token names critical header extensions, none of which are supported")]
    CriticalHeader,
    /// The header points at key material (`jku`, `x5u`, `jwk`, `x5c`, `x5t`, `x5t#S256`): never
    /// followed, always refused.
    #[error("the token header carries {0:?}, which is never followed")]
    ForbiddenHeader(String),
    /// No `kid`.
    #[error("the token header has no kid")]
    MissingKeyId,
    /// The `kid` names no known key.
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// A required claim is missing, mistyped or invalid.
    #[error("claim {claim:?}: {problem:?}")]
    Claim {
        /// The claim.
        claim: String,
        /// What is wrong.
        problem: ClaimProblem,
    },
    /// `iss` is not the expected broker.
    #[error("the token was issued by another broker")]
    WrongIssuer,
    /// `aud` is not this holder.
    #[error("the token is for another holder")]
    WrongAudience,
    /// Past `exp` (plus leeway).
    #[error("the token expired at unix time {exp}")]
    Expired {
        /// Its `exp`.
        exp: i64,
    },
    /// Before `nbf` (minus leeway).
    #[error("the token is not valid before unix time {nbf}")]
    NotYetValid {
        /// Its `nbf`.
        nbf: i64,
    },
    /// `iat` in the future (beyond leeway).
    #[error("the token was issued in the future (iat {iat})")]
    IssuedInFuture {
        /// Its `iat`.
        iat: i64,
    },
    /// `exp - iat` is not positive or exceeds the maximum lifetime.
    #[error("the token's lifetime of {seconds} s is not within 1 s to the allowed maximum")]
    LifetimeInvalid {
        /// `exp - iat`.
        seconds: i64,
    },
    /// The purpose is a prohibited use.
    #[error("purpose {0} is a prohibited use")]
    ProhibitedPurpose(ProhibitedUse),
    /// The scope is a prohibited use.
    #[error("scope {0} is a prohibited use")]
    ProhibitedScope(ProhibitedUse),
    /// No consent with the token's `cid` is known.
    #[error("the token's consent is unknown")]
    UnknownConsent,
    /// The consent is revoked, expired, or was never authorised.
    #[error("the token's consent is not live: {0:?}")]
    ConsentNotLive(crate::consent::ConsentStatus),
    /// A claim disagrees with the consent (its subject, platform or holder).
    #[error("claim {0:?} disagrees with the consent")]
    ConsentMismatch(String),
    /// The consent does not (or no longer) grant the token's scope.
    #[error("the consent does not grant scope {0}")]
    ScopeNotGranted(Scope),
    /// The consent does not grant the token's purpose.
    #[error("the consent does not grant purpose {0}")]
    PurposeNotGranted(Purpose),
    /// The consent does not grant the token's account. It names no account: the refusal is
    /// what a holder's [`VerificationAudit`](crate::VerificationAudit) records, and an account
    /// id is the bank's reference for a person's account (the token says which, to whoever
    /// holds it).
    #[error("the consent does not grant the token's account")]
    AccountNotGranted,
    /// The token's `jti` was seen before (replay detection is on).
    #[error("the token was already presented (replay)")]
    Replayed,
    /// The consent status could not be read: refused, because a revocation might be missed.
    #[error("the consent status is unavailable: {0}")]
    StatusUnavailable(String),
    /// The verification could not be audited: refused, fail closed.
    #[error("the verification could not be audited: {0}")]
    AuditUnavailable(String),
    /// The JWT crypto provider cannot be used.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// What a token is checked against, apart from keys and time.
#[derive(Debug, Clone, Copy)]
pub struct TokenExpectations<'a> {
    /// The broker's issuer id.
    pub issuer: &'a BrokerId,
    /// This holder's id.
    pub audience: &'a HolderId,
    /// Clock leeway (at most [`MAX_LEEWAY`]).
    pub leeway: Duration,
    /// Longest lifetime accepted (at most [`MAX_TOKEN_LIFETIME`]).
    pub max_lifetime: Duration,
}

/// Signs `claims` with `key` as an `at+jwt` EdDSA token.
pub(crate) fn sign(claims: &AccessClaims, key: &SigningKey) -> Result<String, ProviderError> {
    crypto::install()?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(TOKEN_TYPE.to_owned());
    header.kid = Some(key.kid().to_owned());
    jsonwebtoken::encode(&header, claims, key.encoding_key()).map_err(|_| ProviderError::Unusable)
}

impl TokenError {
    /// The refusal as a [`VerificationRecord`](crate::VerificationRecord) keeps it: the `alg`
    /// or `typ` text of a header no signature covered (a stranger's) left out, as `None`.
    pub(crate) fn recorded(&self) -> Self {
        match self {
            Self::UnsupportedAlgorithm(Some(_)) => Self::UnsupportedAlgorithm(None),
            Self::WrongType(Some(_)) => Self::WrongType(None),
            other => other.clone(),
        }
    }
}

impl From<JwsProblem> for TokenError {
    fn from(problem: JwsProblem) -> Self {
        match problem {
            JwsProblem::TooLarge { len } => Self::TooLarge { len },
            JwsProblem::SegmentCount { segments } => Self::SegmentCount { segments },
            JwsProblem::Base64(part) => Self::Base64(part),
            JwsProblem::Json(part) => Self::Json(part),
            JwsProblem::Claim { claim, problem } => Self::Claim { claim, problem },
        }
    }
}

/// At most 32 characters of a value the token's sender chose, for an error that names it: an
/// error may be logged or journalled, and must not carry whatever a stranger sent.
fn bounded(value: &str) -> String {
    const KEPT: usize = 32;
    match value.char_indices().nth(KEPT) {
        Some((cut, _)) => format!("{}…", value.get(..cut).unwrap_or_default()),
        None => value.to_owned(),
    }
}

fn claim_error(claim: &str, problem: ClaimProblem) -> TokenError {
    jws::claim_error(claim, problem).into()
}

fn string_claim<'a>(claims: &'a Members<'_>, name: &str) -> Result<&'a str, TokenError> {
    Ok(jws::string_claim(claims, name)?)
}

fn parsed_claim<T: std::str::FromStr>(claims: &Members<'_>, name: &str) -> Result<T, TokenError> {
    Ok(jws::parsed_claim(claims, name)?)
}

fn time_claim(claims: &Members<'_>, name: &str) -> Result<i64, TokenError> {
    Ok(jws::time_claim(claims, name)?)
}

/// Parses and checks a token's bytes, signature and times. `key_for` maps a `kid` to a key.
///
/// # Errors
/// The first failed check, as a [`TokenError`].
pub fn check_token(
    token: &str,
    key_for: impl Fn(&str) -> Option<Ed25519PublicKey>,
    expected: &TokenExpectations<'_>,
    now: OffsetDateTime,
) -> Result<AccessClaims, TokenError> {
    check_token_in(token, key_for, expected, now, None).map(|(claims, _)| claims)
}

/// [`check_token`], from its signature on in a place of `verifying` when given (the bank's gate:
/// see `GateSettings::verifying_at_once`), returned still held with the claims so that the
/// caller's next checks run in it too. A token refused before its signature (too long,
/// malformed, another algorithm, an unknown key) takes no place.
pub(crate) fn check_token_in<'v>(
    token: &str,
    key_for: impl Fn(&str) -> Option<Ed25519PublicKey>,
    expected: &TokenExpectations<'_>,
    now: OffsetDateTime,
    verifying: Option<&'v crate::limit::Limiter>,
) -> Result<(AccessClaims, Option<crate::limit::Inside<'v>>), TokenError> {
    crypto::install()?;
    let compact = jws::split(token, MAX_TOKEN_LEN)?;
    let key = check_header(&compact.header, key_for)?;
    let place = verifying.map(crate::limit::Limiter::enter);
    let payload = compact.open(&key)?.ok_or(TokenError::BadSignature)?;
    let claims = Members::parse(&payload, TokenPart::Payload)?;
    Ok((check_claims(&claims, expected, now)?, place))
}

fn check_header(
    header: &Map<String, Value>,
    key_for: impl Fn(&str) -> Option<Ed25519PublicKey>,
) -> Result<Ed25519PublicKey, TokenError> {
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "EdDSA" => {}
        Some(Value::String(alg)) if alg.eq_ignore_ascii_case("none") => {
            return Err(TokenError::AlgorithmNone);
        }
        Some(Value::String(alg)) => {
            return Err(TokenError::UnsupportedAlgorithm(Some(bounded(alg))));
        }
        _ => return Err(TokenError::UnsupportedAlgorithm(None)),
    }
    match header.get("typ") {
        Some(Value::String(typ))
            if typ.eq_ignore_ascii_case(TOKEN_TYPE)
                || typ.eq_ignore_ascii_case("application/at+jwt") => {}
        Some(Value::String(typ)) => return Err(TokenError::WrongType(Some(bounded(typ)))),
        Some(other) => return Err(TokenError::WrongType(Some(bounded(&other.to_string())))),
        None => return Err(TokenError::WrongType(None)),
    }
    if header.contains_key("crit") {
        return Err(TokenError::CriticalHeader);
    }
    if let Some(forbidden) =
        jws::first_present(header, &["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256"])
    {
        return Err(TokenError::ForbiddenHeader(forbidden.to_owned()));
    }
    let Some(Value::String(kid)) = header.get("kid") else {
        return Err(TokenError::MissingKeyId);
    };
    key_for(kid).ok_or(TokenError::UnknownKey)
}

fn check_claims(
    claims: &Members<'_>,
    expected: &TokenExpectations<'_>,
    now: OffsetDateTime,
) -> Result<AccessClaims, TokenError> {
    let iss: BrokerId = parsed_claim(claims, "iss")?;
    if &iss != expected.issuer {
        return Err(TokenError::WrongIssuer);
    }
    let aud: HolderId = parsed_claim(claims, "aud")?;
    if &aud != expected.audience {
        return Err(TokenError::WrongAudience);
    }
    let sub = parsed_claim(claims, "sub")?;
    let client_id = parsed_claim(claims, "client_id")?;
    let cid = parsed_claim(claims, "cid")?;
    let att = string_claim(claims, "att")?;
    if !(1..=128).contains(&att.len()) {
        return Err(claim_error("att", ClaimProblem::Invalid));
    }
    let scope = match parsed_claim::<RequestedScope>(claims, "scope")? {
        RequestedScope::Data(scope) => scope,
        RequestedScope::Prohibited(used) => return Err(TokenError::ProhibitedScope(used)),
    };
    let purpose = match parsed_claim::<RequestedPurpose>(claims, "purpose")? {
        RequestedPurpose::Permitted(purpose) => purpose,
        RequestedPurpose::Prohibited(used) => return Err(TokenError::ProhibitedPurpose(used)),
    };
    let acct = parsed_claim(claims, "acct")?;
    let presence = match string_claim(claims, "presence")? {
        "subject_present" => Presence::SubjectPresent,
        "unattended" => Presence::Unattended,
        _ => return Err(claim_error("presence", ClaimProblem::Invalid)),
    };
    let cnf = confirmation_claim(claims)?;
    let iat = time_claim(claims, "iat")?;
    let nbf = time_claim(claims, "nbf")?;
    let exp = time_claim(claims, "exp")?;
    let jti = string_claim(claims, "jti")?;
    // Control characters too: an id is remembered as text, which a NUL would fail to be in
    // PostgreSQL (a store error where the token is at fault).
    if !(16..=128).contains(&jti.len()) || jti.chars().any(char::is_control) {
        return Err(claim_error("jti", ClaimProblem::Invalid));
    }

    let lifetime = exp - iat;
    let max_lifetime = expected
        .max_lifetime
        .min(MAX_TOKEN_LIFETIME)
        .whole_seconds();
    if lifetime <= 0 || lifetime > max_lifetime {
        return Err(TokenError::LifetimeInvalid { seconds: lifetime });
    }
    let now = now.unix_timestamp();
    let leeway = expected
        .leeway
        .clamp(Duration::ZERO, MAX_LEEWAY)
        .whole_seconds();
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired { exp });
    }
    if nbf > now.saturating_add(leeway) {
        return Err(TokenError::NotYetValid { nbf });
    }
    if iat > now.saturating_add(leeway) {
        return Err(TokenError::IssuedInFuture { iat });
    }
    Ok(AccessClaims {
        iss,
        aud,
        sub,
        client_id,
        cid,
        att: att.to_owned(),
        scope,
        purpose,
        acct,
        presence,
        cnf,
        iat,
        nbf,
        exp,
        jti: jti.to_owned(),
    })
}

/// `cnf`, when present: an object holding exactly a `jkt`, 43 base64url characters (a SHA-256
/// thumbprint).
fn confirmation_claim(claims: &Members<'_>) -> Result<Option<Confirmation>, TokenError> {
    let Some(value) = claims.get("cnf") else {
        return Ok(None);
    };
    let Member::Other(Value::Object(cnf)) = value else {
        return Err(claim_error("cnf", ClaimProblem::WrongType));
    };
    match (cnf.len(), cnf.get("jkt")) {
        (1, Some(Value::String(jkt))) if jkt.len() == 43 && jws::is_base64url(jkt) => {
            Ok(Some(Confirmation { jkt: jkt.clone() }))
        }
        _ => Err(claim_error("cnf", ClaimProblem::Invalid)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, mpsc};
    use std::time::Duration as StdDuration;

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::limit::Limiter;

    /// A token with `header`, an empty payload and a signature of 64 zero bytes.
    fn token_with(header: &Value) -> String {
        let part = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        format!(
            "{}.{}.{}",
            part(header.to_string().as_bytes()),
            part(b"{}"),
            part(&[0; 64])
        )
    }

    /// Checks `token` on a thread of its own with the gate's limiter; the outcome arrives on the
    /// receiver once the check ends.
    fn checked_apart(
        limiter: &Arc<Limiter>,
        token: String,
    ) -> mpsc::Receiver<Result<AccessClaims, TokenError>> {
        let (done, outcome) = mpsc::channel();
        let limiter = Arc::clone(limiter);
        std::thread::spawn(move || {
            let (issuer, audience): (BrokerId, HolderId) =
                ("broker".parse().unwrap(), "bank".parse().unwrap());
            let expected = TokenExpectations {
                issuer: &issuer,
                audience: &audience,
                leeway: MAX_LEEWAY,
                max_lifetime: MAX_TOKEN_LIFETIME,
            };
            let key = SigningKey::from_seed(&[3; 32]).unwrap().public_key();
            let outcome = check_token_in(
                &token,
                |kid| (kid == "known").then_some(key),
                &expected,
                OffsetDateTime::UNIX_EPOCH,
                Some(&limiter),
            );
            let _ = done.send(outcome.map(|(claims, _place)| claims));
        });
        outcome
    }

    /// With every place to verify taken, a token anyone could send that is refused before its
    /// signature (malformed, another algorithm, an unknown key) is refused at once, never queued
    /// behind the checks that verify; a token naming a known key waits for a place, and is
    /// refused for its signature once it has one.
    #[test]
    fn a_token_refused_before_its_signature_never_waits_for_a_place() {
        let limiter = Arc::new(Limiter::new(1));
        let taken = limiter.enter();
        let garbage = [
            ("a.b.c".to_owned(), "malformed"),
            (
                token_with(&serde_json::json!({ "alg": "HS256", "typ": "at+jwt", "kid": "known" })),
                "another algorithm",
            ),
            (
                token_with(&serde_json::json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "other" })),
                "an unknown key",
            ),
        ];
        for (token, what) in garbage {
            let outcome = checked_apart(&limiter, token)
                .recv_timeout(StdDuration::from_secs(20))
                .unwrap_or_else(|_| panic!("a token with {what} waited for a place"));
            assert!(outcome.is_err(), "a token with {what} was accepted");
        }
        let known = checked_apart(
            &limiter,
            token_with(&serde_json::json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "known" })),
        );
        assert_eq!(
            known.recv_timeout(StdDuration::from_millis(200)).err(),
            Some(mpsc::RecvTimeoutError::Timeout),
            "a token to verify did not wait for the place"
        );
        drop(taken);
        let outcome = known
            .recv_timeout(StdDuration::from_secs(20))
            .expect("the token never got the place given back");
        assert!(
            matches!(outcome, Err(TokenError::BadSignature)),
            "{outcome:?}"
        );
    }
}

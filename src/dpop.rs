//! Sender-constrained tokens: DPoP proofs (RFC 9449) for Ed25519 keys.
//!
//! The platform holds a key ([`DpopSigner`]); the broker binds each access token to that key's
//! RFC 7638 thumbprint (`cnf.jkt`); with every request the platform sends a fresh proof, a JWT
//! signed by the key over the request's method and URL and the token's hash. The bank's gate
//! checks the proof ([`check_proof`]): a copied token is worthless without the key, and a copied
//! proof is worthless for another request, another token or a second time.
//!
//! The proof is parsed as strictly as an access token: `typ` `dpop+jwt`, `alg` `EdDSA` only, the
//! public key in the header as an Ed25519 JWK with no private member, no `crit` and no pointer to
//! key material elsewhere (`jku`, `x5u`, `x5c`, `kid`); claims `jti` (16 to 128 bytes, no
//! control character), `htm` (exactly the method), `htu` (the URL without query and fragment,
//! compared after normalising scheme and host case and default ports), `iat` (within a window
//! before now and a small leeway after), `ath` (base64url SHA-256 of the access token). Replay of
//! a proof's `jti` needs memory shared by every process of the bank, so the gate keeps it in the
//! bank's store.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use serde_json::{Map, Value, json};
use time::{Duration, OffsetDateTime};

use crate::crypto::{self, ProviderError};
use crate::jws::{self, JwsProblem};
use crate::keys::{Ed25519PublicKey, SigningKey};
use crate::random::{OrderedIds, RandomSource};
use crate::token::{ClaimProblem, MAX_LEEWAY, TokenPart};

/// The JOSE `typ` of a DPoP proof.
pub const DPOP_TYPE: &str = "dpop+jwt";
/// Largest proof accepted, in bytes; longer input is refused before any decoding.
pub const MAX_PROOF_LEN: usize = 4 * 1024;
/// How old a proof's `iat` may be, by default.
pub const DEFAULT_PROOF_WINDOW: Duration = Duration::seconds(60);
/// Longest window a gate may be configured with.
pub const MAX_PROOF_WINDOW: Duration = Duration::minutes(5);

/// Why a DPoP proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DpopError {
    /// No proof came with the request.
    #[error("the request carries no DPoP proof")]
    Missing,
    /// Longer than [`MAX_PROOF_LEN`].
    #[error("the proof is {len} bytes long; at most {MAX_PROOF_LEN} are accepted")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not three dot-separated segments.
    #[error("a proof has 3 segments, this one has {segments}")]
    SegmentCount {
        /// How many it has.
        segments: usize,
    },
    /// A segment is not unpadded base64url.
    #[error("the proof's {0:?} is not unpadded base64url")]
    Base64(TokenPart),
    /// The header or payload is not a UTF-8 JSON object.
    #[error("the proof's {0:?} is not a UTF-8 JSON object")]
    Json(TokenPart),
    /// `typ` is not `dpop+jwt`.
    #[error("the proof's typ must be \"dpop+jwt\"")]
    WrongType,
    /// `alg` is `none`.
    #[error("unsigned proofs (alg none) are never accepted")]
    AlgorithmNone,
    /// `alg` is not `EdDSA`.
    #[error("only EdDSA proofs are accepted")]
    UnsupportedAlgorithm,
    /// The header has `crit`.
    #[error("the proof names critical header extensions, none of which are supported")]
    CriticalHeader,
    /// The header points at key material elsewhere (`jku`, `x5u`, `x5c`, `kid`, …).
    #[error("the proof header carries {0:?}, which is never followed")]
    ForbiddenHeader(String),
    /// No `jwk`, or not an Ed25519 public key (`kty` `OKP`, `crv` `Ed25519`, a 32-byte `x`).
    #[error("the proof's jwk is missing or not an Ed25519 public key")]
    BadKey,
    /// The `jwk` carries private key material: the key is compromised by being sent.
    #[error("the proof's jwk carries a private key")]
    PrivateKey,
    /// The proof's key is not the one the token is bound to.
    #[error("the proof is signed by another key than the token is bound to")]
    KeyMismatch,
    /// The signature does not verify.
    #[error("the proof's signature is invalid")]
    BadSignature,
    /// A claim is missing, mistyped or invalid.
    #[error("proof claim {claim:?}: {problem:?}")]
    Claim {
        /// The claim.
        claim: String,
        /// What is wrong.
        problem: ClaimProblem,
    },
    /// `htm` is not the request's method.
    #[error("the proof is for another HTTP method")]
    MethodMismatch,
    /// `htu` is not the request's URL.
    #[error("the proof is for another URL")]
    UrlMismatch,
    /// The request's URL, as the caller gave it, is not an absolute http(s) URL.
    #[error("the request URL given to the check is not an absolute http or https URL")]
    InvalidRequestUrl,
    /// `iat` is later than now plus the leeway.
    #[error("the proof was issued in the future")]
    IssuedInFuture,
    /// `iat` is earlier than the window allows.
    #[error("the proof is too old")]
    TooOld,
    /// `ath` is not the hash of the token presented with it.
    #[error("the proof was made for another access token")]
    TokenHashMismatch,
    /// The proof's `jti` was seen before.
    #[error("the proof was already used (replay)")]
    Replayed,
    /// The JWT crypto provider cannot be used.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The proof could not be signed (platform side).
    #[error("the proof could not be signed")]
    Signing,
}

impl From<JwsProblem> for DpopError {
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

/// The HTTP request a proof must be for, as the server received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The method, exactly as sent (`GET`).
    pub method: &'a str,
    /// The absolute URL the request was sent to (`https://bank.example/v1/balance?x=1`); query
    /// and fragment are ignored.
    pub url: &'a str,
}

/// A proof that passed every check but replay, which needs the bank's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedProof {
    /// Its `jti`, to remember until the window has passed.
    pub jti: String,
    /// Its `iat` (unix seconds).
    pub iat: i64,
}

/// The base64url SHA-256 of an access token, as a proof's `ath` carries it.
pub fn token_hash(access_token: &str) -> String {
    jws::encode(digest::digest(&digest::SHA256, access_token.as_bytes()).as_ref())
}

/// The URL a proof's `htu` is compared on: scheme and host in lower case, the port as a number
/// and dropped when it is the scheme's default, an empty path as `/`, query and fragment removed.
/// `None` for anything but an absolute `http` or `https` URL whose authority is a host (an RFC 3986
/// reg-name, IPv4 address or bracketed IP literal) with an optional numeric port, and no userinfo.
/// Idempotent: a normalised URL normalises to itself.
pub fn normalise_htu(url: &str) -> Option<String> {
    let url = url.split(['#', '?']).next().unwrap_or_default();
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (host, port) = split_authority(authority)?;
    let host = host.to_ascii_lowercase();
    match port {
        Some(port) if port != default_port => Some(format!("{scheme}://{host}:{port}{path}")),
        _ => Some(format!("{scheme}://{host}{path}")),
    }
}

/// An authority's host and numeric port, or `None` when it is not `host[:port]` as RFC 3986 has
/// it (userinfo refused).
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, after) = authority.split_at(end + 1);
        let inner = host.get(1..host.len() - 1)?;
        if inner.is_empty()
            || !inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || ".:".contains(c))
        {
            return None;
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let reg_name = |c: char| c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=".contains(c);
        if host.is_empty() || !host.chars().all(reg_name) {
            return None;
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(digits)
            if !digits.is_empty()
                && digits.len() <= 5
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(digits.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// Checks a DPoP proof for `request`, presented with `access_token`, against the thumbprint the
/// token is bound to (`expected_jkt`), at `now`: its `iat` may be up to `window` old (at most
/// [`MAX_PROOF_WINDOW`]) and up to [`MAX_LEEWAY`] ahead. Replay is not checked here.
///
/// # Errors
/// The first failed check, as a [`DpopError`].
pub fn check_proof(
    proof: &str,
    request: &HttpRequest<'_>,
    access_token: &str,
    expected_jkt: &str,
    window: Duration,
    now: OffsetDateTime,
) -> Result<CheckedProof, DpopError> {
    check_proof_hashed(proof, request, access_token, expected_jkt, window, now)
        .map(|(checked, _)| checked)
}

/// [`check_proof`], with the [`token_hash`] of `access_token` it computed for `ath`: the bank's
/// gate journals that same digest (`privacy::commitment` of the token) and need not hash the
/// token twice.
pub(crate) fn check_proof_hashed(
    proof: &str,
    request: &HttpRequest<'_>,
    access_token: &str,
    expected_jkt: &str,
    window: Duration,
    now: OffsetDateTime,
) -> Result<(CheckedProof, String), DpopError> {
    crypto::install()?;
    if proof.is_empty() {
        return Err(DpopError::Missing);
    }
    let compact = jws::split(proof, MAX_PROOF_LEN)?;
    let key = check_header(&compact.header)?;
    if key.thumbprint() != expected_jkt {
        return Err(DpopError::KeyMismatch);
    }
    let payload = compact.open(&key)?.ok_or(DpopError::BadSignature)?;
    let claims = jws::Members::parse(&payload, TokenPart::Payload)?;
    check_claims(&claims, request, access_token, window, now)
}

fn check_header(header: &Map<String, Value>) -> Result<Ed25519PublicKey, DpopError> {
    match header.get("typ") {
        Some(Value::String(typ)) if typ == DPOP_TYPE => {}
        _ => return Err(DpopError::WrongType),
    }
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "EdDSA" => {}
        Some(Value::String(alg)) if alg.eq_ignore_ascii_case("none") => {
            return Err(DpopError::AlgorithmNone);
        }
        _ => return Err(DpopError::UnsupportedAlgorithm),
    }
    if header.contains_key("crit") {
        return Err(DpopError::CriticalHeader);
    }
    if let Some(forbidden) =
        jws::first_present(header, &["jku", "x5u", "x5c", "x5t", "x5t#S256", "kid"])
    {
        return Err(DpopError::ForbiddenHeader(forbidden.to_owned()));
    }
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(DpopError::BadKey);
    };
    // RFC 9449 §4.3: the key must not be private. Any of the private members refuses it.
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|private| jwk.contains_key(*private))
    {
        return Err(DpopError::PrivateKey);
    }
    match (jwk.get("kty"), jwk.get("crv"), jwk.get("x")) {
        (Some(Value::String(kty)), Some(Value::String(crv)), Some(Value::String(x)))
            if kty == "OKP" && crv == "Ed25519" =>
        {
            Ed25519PublicKey::from_base64url(x).map_err(|_| DpopError::BadKey)
        }
        _ => Err(DpopError::BadKey),
    }
}

fn check_claims(
    claims: &jws::Members<'_>,
    request: &HttpRequest<'_>,
    access_token: &str,
    window: Duration,
    now: OffsetDateTime,
) -> Result<(CheckedProof, String), DpopError> {
    let jti = jws::string_claim(claims, "jti")?;
    // Control characters too: an id is remembered as text, which a NUL would fail to be in
    // PostgreSQL (a store error where the proof is at fault).
    if !(16..=128).contains(&jti.len()) || jti.chars().any(char::is_control) {
        return Err(jws::claim_error("jti", ClaimProblem::Invalid).into());
    }
    let htm = jws::string_claim(claims, "htm")?;
    let htu = jws::string_claim(claims, "htu")?;
    let iat = jws::time_claim(claims, "iat")?;
    let ath = jws::string_claim(claims, "ath")?;
    if htm != request.method {
        return Err(DpopError::MethodMismatch);
    }
    let expected = normalise_htu(request.url).ok_or(DpopError::InvalidRequestUrl)?;
    if normalise_htu(htu).as_deref() != Some(expected.as_str()) {
        return Err(DpopError::UrlMismatch);
    }
    let now = now.unix_timestamp();
    if iat > now.saturating_add(MAX_LEEWAY.whole_seconds()) {
        return Err(DpopError::IssuedInFuture);
    }
    let window = window
        .clamp(Duration::ZERO, MAX_PROOF_WINDOW)
        .whole_seconds();
    if iat < now.saturating_sub(window) {
        return Err(DpopError::TooOld);
    }
    let hash = token_hash(access_token);
    if ath != hash {
        return Err(DpopError::TokenHashMismatch);
    }
    let checked = CheckedProof {
        jti: jti.to_owned(),
        iat,
    };
    Ok((checked, hash))
}

/// Whom a signer keeps its proofs' counts for (see [`DpopSigner::proof`]): the bank the access
/// token is for (its `aud`, read without verifying it: only the count depends on it), or, for a
/// token that names none, the request's URL as `htu` compares it.
fn audience(access_token: &str, url: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Audience {
        aud: String,
    }
    let aud = access_token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|claims| serde_json::from_slice::<Audience>(&claims).ok());
    match aud {
        Some(Audience { aud }) => format!("aud {aud}"),
        None => format!("htu {}", normalise_htu(url).as_deref().unwrap_or(url)),
    }
}

/// The platform's DPoP key: makes a proof for each request it sends with an access token.
#[derive(Debug)]
pub struct DpopSigner {
    key: SigningKey,
    jwk: Value,
    /// The proofs' ids, time-ordered (the bank keeps each in a table keyed by it).
    ids: OrderedIds,
}

impl DpopSigner {
    /// A signer with `key` (keep it where the platform keeps its other keys: it is what makes
    /// its tokens usable).
    ///
    /// # Errors
    /// [`DpopError::Provider`] if the JWT crypto provider cannot be used.
    pub fn new(key: SigningKey) -> Result<Self, DpopError> {
        crypto::install()?;
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": key.public_key().to_base64url(),
        });
        Ok(Self {
            key,
            jwk,
            ids: OrderedIds::new(),
        })
    }

    /// The public key, to give the broker ([`BrokerBuilder::sender_key`](crate::BrokerBuilder::sender_key)).
    pub fn public_key(&self) -> Ed25519PublicKey {
        self.key.public_key()
    }

    /// The RFC 7638 thumbprint of the public key: the `cnf.jkt` of the tokens bound to it.
    pub fn thumbprint(&self) -> &str {
        self.key.kid()
    }

    /// A proof for one `request` carrying `access_token`, made at `now`, with a fresh `jti` of
    /// 28 characters: `now`'s second and how many proofs this signer made earlier in that second
    /// for the same bank (the access token's `aud`, read without verifying it; for a token that
    /// names none, the request's URL as `htu` compares it), then 112 bits from `random`. The
    /// proofs made for one bank sort in the order they were made, and its table of presented ids
    /// takes them at its edge; nothing in them counts the proofs made for another bank.
    ///
    /// # Errors
    /// [`DpopError::Signing`] if signing or randomness fails.
    pub fn proof(
        &self,
        request: &HttpRequest<'_>,
        access_token: &str,
        now: OffsetDateTime,
        random: &dyn RandomSource,
    ) -> Result<String, DpopError> {
        let jti = (self.ids)
            .next(&audience(access_token, request.url), now, random)
            .map_err(|_| DpopError::Signing)?;
        let header = json!({ "typ": DPOP_TYPE, "alg": "EdDSA", "jwk": self.jwk });
        let claims = json!({
            "jti": jti,
            "htm": request.method,
            "htu": request.url.split(['#', '?']).next().unwrap_or_default(),
            "iat": now.unix_timestamp(),
            "ath": token_hash(access_token),
        });
        jws::sign_eddsa(&header.to_string(), &claims.to_string(), &self.key)
            .ok_or(DpopError::Signing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_for(aud: &str) -> String {
        let claims = URL_SAFE_NO_PAD.encode(json!({ "aud": aud, "sub": "s" }).to_string());
        format!("header.{claims}.signature")
    }

    #[test]
    fn proofs_are_counted_per_bank_the_token_is_for_or_else_per_url() {
        let url = "https://gateway.example/bank-a/v1/balance";
        // One bank, whatever the URL; two banks behind one gateway, apart.
        assert_eq!(
            audience(&token_for("bank-a"), url),
            audience(&token_for("bank-a"), "https://other.example/v1/alerts")
        );
        assert_ne!(
            audience(&token_for("bank-a"), url),
            audience(&token_for("bank-b"), url)
        );
        // A token that names no bank: the URL as `htu` compares it (case, default port, query).
        let opaque = "header.payload.signature";
        assert_eq!(
            audience(opaque, "HTTPS://Bank.example:443/v1/balance?x=1"),
            audience(opaque, "https://bank.example/v1/balance")
        );
        assert_ne!(
            audience(opaque, "https://gateway.example/bank-a/v1/balance"),
            audience(opaque, "https://gateway.example/bank-b/v1/balance")
        );
        // A bank named `htu …` does not share a count with a URL.
        assert_ne!(
            audience(&token_for("https://bank.example/v1/balance"), url),
            audience(opaque, "https://bank.example/v1/balance")
        );
    }
}

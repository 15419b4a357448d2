//! Strict parsing of compact JWS (RFC 7515) shared by the access token and the DPoP proof: exact
//! segment count, unpadded base64url, JSON objects, typed claims, and the Ed25519 signature check
//! by the crate's one verification (`crate::ed25519`; signing goes through jsonwebtoken's
//! process-wide provider). Each caller maps a [`JwsProblem`] into its own error type, so that a
//! refusal names the part and claim at fault.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::keys::Ed25519PublicKey;
use crate::token::{ClaimProblem, MAX_UNIX_TIME, TokenPart};

/// What is wrong with a compact JWS, before any meaning is given to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwsProblem {
    /// Longer than the caller allows.
    TooLarge { len: usize },
    /// Not three dot-separated segments.
    SegmentCount { segments: usize },
    /// A segment is not unpadded base64url.
    Base64(TokenPart),
    /// The header or payload is not a UTF-8 JSON object.
    Json(TokenPart),
    /// A claim is missing, mistyped or invalid.
    Claim {
        claim: String,
        problem: ClaimProblem,
    },
}

/// A compact JWS split into its segments, with only the header decoded: the caller checks the
/// header (algorithm, type, key) before anything else is decoded.
#[derive(Debug)]
pub(crate) struct Compact<'a> {
    pub header: Map<String, Value>,
    payload_b64: &'a str,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    signature_b64: &'a str,
}

/// Splits `jws` and decodes its header, refusing anything over `max_len` bytes first.
pub(crate) fn split(jws: &str, max_len: usize) -> Result<Compact<'_>, JwsProblem> {
    if jws.len() > max_len {
        return Err(JwsProblem::TooLarge { len: jws.len() });
    }
    let mut segments = jws.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(JwsProblem::SegmentCount {
            segments: jws.split('.').count(),
        });
    };
    let header = object(&decode(header_b64, TokenPart::Header)?, TokenPart::Header)?;
    let signing_input = jws
        .get(..header_b64.len() + 1 + payload_b64.len())
        .unwrap_or_default();
    Ok(Compact {
        header,
        payload_b64,
        signing_input,
        signature_b64,
    })
}

impl Compact<'_> {
    /// The payload, *unverified*: only to learn which keys to verify it with (an issuer), never
    /// to act on.
    pub(crate) fn unverified_payload(&self) -> Result<Map<String, Value>, JwsProblem> {
        object(
            &decode(self.payload_b64, TokenPart::Payload)?,
            TokenPart::Payload,
        )
    }

    /// Checks the signature with `key`, then parses the payload: `Ok(None)` when the signature
    /// does not verify (nothing of the payload is interpreted then).
    pub(crate) fn open(
        &self,
        key: &Ed25519PublicKey,
    ) -> Result<Option<Map<String, Value>>, JwsProblem> {
        let signature = decode(self.signature_b64, TokenPart::Signature)?;
        let payload = decode(self.payload_b64, TokenPart::Payload)?;
        if !crate::ed25519::verify(key.as_bytes(), self.signing_input.as_bytes(), &signature) {
            return Ok(None);
        }
        object(&payload, TokenPart::Payload).map(Some)
    }
}

/// The first of `members` the header has, if any: members that point at key material elsewhere
/// and are never followed.
pub(crate) fn first_present(
    header: &Map<String, Value>,
    members: &[&'static str],
) -> Option<&'static str> {
    members
        .iter()
        .copied()
        .find(|member| header.contains_key(*member))
}

/// A compact JWS of `header` and `payload` (JSON texts) signed with `key` (EdDSA) through
/// jsonwebtoken's process-wide provider; `None` when the provider cannot sign.
pub(crate) fn sign_eddsa(
    header: &str,
    payload: &str,
    key: &crate::keys::SigningKey,
) -> Option<String> {
    let input = format!(
        "{}.{}",
        encode(header.as_bytes()),
        encode(payload.as_bytes())
    );
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), key.encoding_key(), Algorithm::EdDSA).ok()?;
    Some(format!("{input}.{signature}"))
}

/// Unpadded base64url of `bytes`.
pub(crate) fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes one segment: unpadded base64url only (no `+`, `/` or `=`, canonical trailing bits).
pub(crate) fn decode(segment: &str, part: TokenPart) -> Result<Vec<u8>, JwsProblem> {
    if !is_base64url(segment) {
        return Err(JwsProblem::Base64(part));
    }
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwsProblem::Base64(part))
}

/// Whether `text` uses only the base64url alphabet (no padding).
pub(crate) fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn object(bytes: &[u8], part: TokenPart) -> Result<Map<String, Value>, JwsProblem> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwsProblem::Json(part)),
    }
}

/// A claim error.
pub(crate) fn claim_error(claim: &str, problem: ClaimProblem) -> JwsProblem {
    JwsProblem::Claim {
        claim: claim.to_owned(),
        problem,
    }
}

/// A required string claim.
pub(crate) fn string_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<&'a str, JwsProblem> {
    match claims.get(name) {
        None => Err(claim_error(name, ClaimProblem::Missing)),
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(claim_error(name, ClaimProblem::WrongType)),
    }
}

/// A required string claim parsed as `T`.
pub(crate) fn parsed_claim<T: std::str::FromStr>(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<T, JwsProblem> {
    string_claim(claims, name)?
        .parse()
        .map_err(|_| claim_error(name, ClaimProblem::Invalid))
}

/// A required NumericDate claim: a whole number of seconds in `0..=MAX_UNIX_TIME`.
pub(crate) fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<i64, JwsProblem> {
    let Some(value) = claims.get(name) else {
        return Err(claim_error(name, ClaimProblem::Missing));
    };
    let Value::Number(number) = value else {
        return Err(claim_error(name, ClaimProblem::WrongType));
    };
    if let Some(float) = number.as_f64().filter(|_| number.is_f64()) {
        // serde_json reads an integer too large for 64 bits as a float, so a float outside the
        // i64 range is an absurd time, whatever its notation; inside it, a float is the wrong
        // type (NumericDate here is a whole number of seconds).
        // `i64::MAX as f64` rounds to 2^63, the first magnitude an i64 cannot hold.
        let in_range = float.abs() < i64::MAX as f64;
        let problem = if in_range {
            ClaimProblem::WrongType
        } else {
            ClaimProblem::Invalid
        };
        return Err(claim_error(name, problem));
    }
    match number.as_i64() {
        Some(seconds) if (0..=MAX_UNIX_TIME).contains(&seconds) => Ok(seconds),
        _ => Err(claim_error(name, ClaimProblem::Invalid)),
    }
}

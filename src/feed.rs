//! The broker's feed of revocations to a bank: the consents revoked on the platform's side (by
//! the platform, or by the subject in the conversation), read from the broker's log.
//!
//! A feed is a compact JWS (`typ` [`FEED_TYPE`], signed with the broker's token key, which the
//! bank already trusts for tokens) covering the log from position `after` to `position`. The bank
//! applies feeds in order: each must start where the last one ended, and be newer than it, so a
//! relay can neither skip a stretch of the log nor replay an old feed to make the bank's view look
//! fresh. Each feed also names the root of the broker's log tree at its end, with the RFC 9162
//! consistency proof from its start: the bank holds the last root and refuses a feed whose log
//! does not extend it ([`FeedError::Inconsistent`]), so a log rolled back and grown again, or
//! another log under the same keys, cannot resume the feed past stops the bank never saw. The
//! bank's gate refuses when its last feed is older than its staleness bound: a revocation on
//! the platform reaches the bank within that bound, or nothing is served.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::auditor::decode_hashes;
use crate::consent::Revoker;
use crate::crypto::{self, ProviderError};
use crate::ids::{BrokerId, ConsentId, HolderId};
use crate::jws::{self, JwsProblem};
use crate::keys::{Ed25519PublicKey, SigningKey};
use crate::merkle::Hash;

/// The JOSE `typ` of a revocation feed.
pub const FEED_TYPE: &str = "revocation-feed+jwt";
/// Largest feed accepted, in bytes.
pub const MAX_FEED_LEN: usize = 1024 * 1024;
/// Clock difference tolerated between broker and bank.
const LEEWAY: i64 = 30;

/// One consent the feed says was revoked on the platform's side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedRevocation {
    /// The consent.
    pub consent: ConsentId,
    /// The entry of the broker's log that records it.
    pub seq: u64,
    /// When (unix seconds).
    pub at: i64,
    /// Who revoked it, as the broker's log says.
    pub by: Revoker,
}

/// A feed's contents, once its signature and addressing are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationFeed {
    /// The broker (`iss`).
    pub iss: BrokerId,
    /// The bank it is for (`aud`).
    pub aud: HolderId,
    /// When the broker produced it (unix seconds).
    pub iat: i64,
    /// The log position it starts at.
    pub after: u64,
    /// The log position it covers up to (exclusive): the broker's log length when it was made.
    pub position: u64,
    /// The revocations of the bank's consents in that stretch of the log, in order.
    pub revoked: Vec<FeedRevocation>,
    /// Whether the feed reaches the end of the broker's log when it was made. A feed holds at
    /// most [`MAX_FEED_REVOCATIONS`]; a bank further behind gets pages (`position` is then the
    /// log position of the first revocation left for the next page) and counts its view fresh
    /// only once a page is complete. Absent: complete (feeds from before pages).
    #[serde(default = "complete")]
    pub complete: bool,
    /// The root of the broker's log tree (RFC 9162) over its first `position` entries,
    /// standard base64: what the bank holds the next feed's log to. Absent only in feeds from
    /// before roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// The RFC 9162 consistency proof from the tree over the first `after` entries to the tree
    /// over the first `position` (standard base64 hashes): that this feed's log extends the one
    /// the bank's last feed described. Empty when `after` is 0 or is `position`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consistency: Vec<String>,
}

impl RevocationFeed {
    /// The feed's root and consistency proof as hashes (`None` for a feed from before roots).
    ///
    /// # Errors
    /// [`FeedError::Malformed`] for a hash that is not 32 bytes of standard base64, or a proof
    /// without a root.
    pub fn tree(&self) -> Result<Option<(Hash, Vec<Hash>)>, FeedError> {
        let malformed = || FeedError::Malformed("a tree hash is not 32 bytes of base64".into());
        let proof = decode_hashes(&self.consistency).ok_or_else(malformed)?;
        match &self.root {
            Some(root) => {
                let root = decode_hashes(std::slice::from_ref(root))
                    .and_then(|roots| roots.first().copied())
                    .ok_or_else(malformed)?;
                Ok(Some((root, proof)))
            }
            None if proof.is_empty() => Ok(None),
            None => Err(FeedError::Malformed(
                "a consistency proof without a root".into(),
            )),
        }
    }
}

/// The most revocations one feed holds (about 500 KiB signed, within [`MAX_FEED_LEN`]).
pub const MAX_FEED_REVOCATIONS: usize = 4_096;

fn complete() -> bool {
    true
}

/// Why a feed was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FeedError {
    /// Not a well-formed compact JWS with the expected claims.
    #[error("the feed is malformed: {0}")]
    Malformed(String),
    /// `typ` or `alg` is not the feed's.
    #[error("the feed must be an EdDSA {FEED_TYPE:?}")]
    WrongType,
    /// The `kid` names no key of the broker the bank trusts.
    #[error("the feed is signed with a key the bank does not trust")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the feed's signature is invalid")]
    BadSignature,
    /// Another broker issued it, or it is for another bank.
    #[error("the feed is from another broker or for another bank")]
    WrongParties,
    /// It does not start where the last feed applied ended: a stretch of the log would be
    /// skipped.
    #[error("the feed starts at {after}, the bank has followed the log to {expected}")]
    Gap {
        /// Where the bank expects it to start.
        expected: u64,
        /// Where it starts.
        after: u64,
    },
    /// It is not newer than the last feed applied, or ends before it starts.
    #[error("the feed is older than the one applied, or covers nothing")]
    Rollback,
    /// It was made in the future.
    #[error("the feed was produced in the future")]
    IssuedInFuture,
    /// Its log does not extend the one the last feed applied described: the root it names at
    /// its position and its consistency proof do not show a tree whose first `after` entries
    /// have the root the bank holds (the platform's log was rolled back and grew again, or
    /// forked), or it names no root where the bank holds one. The bank's view goes stale, and
    /// its gate refuses, until the broker's log extends the one the bank followed again, or
    /// the bank follows the feed anew ([`crate::Bank::follow_revocation_feed_anew`]).
    #[error("the feed's log does not extend the one the bank's last feed described")]
    Inconsistent,
    /// The JWT crypto provider cannot be used.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

impl From<JwsProblem> for FeedError {
    fn from(problem: JwsProblem) -> Self {
        Self::Malformed(format!("{problem:?}"))
    }
}

/// Signs `feed` with `key` (the broker's token key).
pub(crate) fn sign(feed: &RevocationFeed, key: &SigningKey) -> Result<String, ProviderError> {
    crypto::install()?;
    let header = json!({ "alg": "EdDSA", "typ": FEED_TYPE, "kid": key.kid() });
    let payload = serde_json::to_string(feed).map_err(|_| ProviderError::Unusable)?;
    jws::sign_eddsa(&header.to_string(), &payload, key).ok_or(ProviderError::Unusable)
}

/// Checks a feed's signature (a key `key_for` knows), its parties and its time; the order
/// against the feeds applied before is the bank's to check.
///
/// # Errors
/// [`FeedError`].
pub fn check_feed(
    feed: &str,
    key_for: impl Fn(&str) -> Option<Ed25519PublicKey>,
    broker: &BrokerId,
    holder: &HolderId,
    now: OffsetDateTime,
) -> Result<RevocationFeed, FeedError> {
    crypto::install()?;
    let compact = jws::split(feed, MAX_FEED_LEN)?;
    match (compact.header.get("alg"), compact.header.get("typ")) {
        (Some(Value::String(alg)), Some(Value::String(typ)))
            if alg == "EdDSA" && typ == FEED_TYPE => {}
        _ => return Err(FeedError::WrongType),
    }
    if jws::first_present(&compact.header, &["crit", "jku", "x5u", "jwk", "x5c"]).is_some() {
        return Err(FeedError::Malformed(
            "the header carries members that are never followed".into(),
        ));
    }
    let key = match compact.header.get("kid") {
        Some(Value::String(kid)) => key_for(kid),
        _ => None,
    }
    .ok_or(FeedError::UnknownKey)?;
    let payload = compact.open_object(&key)?.ok_or(FeedError::BadSignature)?;
    let contents: RevocationFeed = serde_json::from_value(Value::Object(payload))
        .map_err(|e| FeedError::Malformed(e.to_string()))?;
    if &contents.iss != broker || &contents.aud != holder {
        return Err(FeedError::WrongParties);
    }
    if contents.iat > now.unix_timestamp().saturating_add(LEEWAY) {
        return Err(FeedError::IssuedInFuture);
    }
    if contents.position < contents.after {
        return Err(FeedError::Rollback);
    }
    contents.tree()?;
    // Positions are log indices, which no store numbers past i64::MAX.
    let limit = u64::try_from(i64::MAX).unwrap_or(u64::MAX);
    if contents.position > limit || contents.revoked.iter().any(|r| r.seq > limit) {
        return Err(FeedError::Malformed(
            "a log position beyond any store's".into(),
        ));
    }
    Ok(contents)
}

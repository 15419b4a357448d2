//! Decoding of stored rows, shared by the SQL stores. A value that does not decode is reported as
//! [`StoreError::Corrupt`], naming what it was: a damaged row is never taken for a valid one.

use serde::de::DeserializeOwned;

use super::{PublishedKey, StoreError, StoredCheckpoint};
use crate::audit::merkle::Hash;
use crate::keys::Ed25519PublicKey;

/// A JSON record.
pub(crate) fn json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A count, size or index stored as a signed 64-bit integer.
pub(crate) fn unsigned(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

/// A count, size or index as the SQL stores keep it (saturating: no index reaches `i64::MAX`).
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A SHA-256 hash.
pub(crate) fn hash(what: &str, bytes: &[u8]) -> Result<Hash, StoreError> {
    Hash::try_from(bytes).map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
}

/// A Merkle node `(index, hash)` at `level`.
pub(crate) fn node(level: u32, index: i64, bytes: &[u8]) -> Result<(u64, Hash), StoreError> {
    let index = unsigned("Merkle node index", index)?;
    Ok((
        index,
        hash(&format!("Merkle node ({level}, {index})"), bytes)?,
    ))
}

/// A recorded checkpoint.
pub(crate) fn checkpoint(
    size: i64,
    root: &[u8],
    note: String,
) -> Result<StoredCheckpoint, StoreError> {
    Ok(StoredCheckpoint {
        size: unsigned("checkpoint size", size)?,
        root: hash("checkpoint root", root)?,
        note,
    })
}

/// A published signing key.
pub(crate) fn published_key(
    kid: String,
    public_key: &str,
    activated_at: i64,
) -> Result<PublishedKey, StoreError> {
    let corrupt =
        |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("signing key {kid}: {e}"));
    let public_key = Ed25519PublicKey::from_base64url(public_key).map_err(|e| corrupt(&e))?;
    let activated_at =
        time::OffsetDateTime::from_unix_timestamp(activated_at).map_err(|e| corrupt(&e))?;
    Ok(PublishedKey {
        kid,
        public_key,
        activated_at,
    })
}

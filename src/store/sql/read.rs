//! The reads of [`StateRead`](crate::StateRead) and [`LogRead`](crate::LogRead), for any
//! dialect.

use std::ops::Range;

use time::{Date, OffsetDateTime};

use super::{
    Dialect, Failure, Value, corrupt, day_key, hash, node, one, record, required, rows, signed,
    text, time, unsigned,
};
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::keys::Ed25519PublicKey;
use crate::merkle::Hash;
use crate::policy::{PlatformProfile, Usage};
use crate::store::{HolderRecord, KeyUse, PublishedKey, StoreError, StoredCheckpoint, StoredEntry};

pub(crate) fn holder<D: Dialect + ?Sized>(
    db: &mut D,
    id: &HolderId,
) -> Result<Option<HolderRecord>, Failure<D::Error>> {
    let Some(json) = record(db, "SELECT record FROM holders WHERE id = ?1", id.as_str())? else {
        return Ok(None);
    };
    Ok(Some(decode_holder(id, &json)?))
}

/// A holder's stored record.
pub(crate) fn decode_holder(id: &HolderId, json: &[u8]) -> Result<HolderRecord, StoreError> {
    HolderRecord::from_stored(json).map_err(corrupt(format!("holder {id}")))
}

/// A platform's stored record.
pub(crate) fn decode_platform(id: &PlatformId, json: &[u8]) -> Result<PlatformProfile, StoreError> {
    serde_json::from_slice(json).map_err(corrupt(format!("platform {id}")))
}

/// A consent's stored record.
pub(crate) fn decode_consent(id: &ConsentId, json: &[u8]) -> Result<Consent, StoreError> {
    Consent::from_stored(json).map_err(corrupt(format!("consent {id}")))
}

/// A consent's stored count of unattended accesses on a day (none stored: zero).
pub(crate) fn decode_usage(
    consent: &ConsentId,
    unattended: Option<i64>,
) -> Result<Usage, StoreError> {
    let unattended_today = u32::try_from(unattended.unwrap_or(0))
        .map_err(|_| StoreError::Corrupt(format!("usage of {consent} out of range")))?;
    Ok(Usage { unattended_today })
}

pub(crate) fn platform<D: Dialect + ?Sized>(
    db: &mut D,
    id: &PlatformId,
) -> Result<Option<PlatformProfile>, Failure<D::Error>> {
    let Some(json) = record(
        db,
        "SELECT record FROM platforms WHERE id = ?1",
        id.as_str(),
    )?
    else {
        return Ok(None);
    };
    Ok(Some(decode_platform(id, &json)?))
}

pub(crate) fn consent<D: Dialect + ?Sized>(
    db: &mut D,
    id: &ConsentId,
) -> Result<Option<Consent>, Failure<D::Error>> {
    let Some(json) = record(db, "SELECT record FROM consents WHERE id = ?1", id.as_str())? else {
        return Ok(None);
    };
    Ok(Some(decode_consent(id, &json)?))
}

pub(crate) fn consents_of_subject<D: Dialect + ?Sized>(
    db: &mut D,
    subject: &SubjectId,
) -> Result<Vec<Consent>, Failure<D::Error>> {
    rows(
        db,
        "SELECT record FROM consents WHERE subject = ?1 ORDER BY position",
        &[Value::Text(subject.as_str())],
        |row| Consent::from_stored(&row.bytes(0)?).map_err(corrupt("consent".into())),
    )
}

pub(crate) fn usage<D: Dialect + ?Sized>(
    db: &mut D,
    consent: &ConsentId,
    day: Date,
) -> Result<Usage, Failure<D::Error>> {
    let day = day_key(day);
    let unattended = one(
        db,
        "SELECT unattended FROM usage WHERE consent = ?1 AND day = ?2",
        &[Value::Text(consent.as_str()), Value::Text(&day)],
        |row| required("usage", row.int(0)?),
    )?;
    Ok(decode_usage(consent, unattended)?)
}

pub(crate) fn attestation_used<D: Dialect + ?Sized>(
    db: &mut D,
    attestation_id: &str,
) -> Result<bool, Failure<D::Error>> {
    Ok(one(
        db,
        "SELECT id FROM attestations WHERE id = ?1",
        &[Value::Text(attestation_id)],
        |_| Ok(()),
    )?
    .is_some())
}

pub(crate) fn published_keys<D: Dialect + ?Sized>(
    db: &mut D,
) -> Result<Vec<PublishedKey>, Failure<D::Error>> {
    rows(
        db,
        "SELECT key_use, kid, public_key, activated_at, retired_at, verifies_until \
         FROM published_keys ORDER BY activated_at, position",
        &[],
        |row| {
            let kid = text("key id", row.bytes(1)?)?;
            let what = format!("published key {kid}");
            let key_use = KeyUse::from_name(&text(&what, row.bytes(0)?)?)
                .ok_or_else(|| StoreError::Corrupt(format!("{what}: unknown use")))?;
            let public_key = Ed25519PublicKey::from_base64url(&text(&what, row.bytes(2)?)?)
                .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))?;
            let at = |column: usize| -> Result<Option<OffsetDateTime>, StoreError> {
                row.int(column)?.map(|t| time(&what, t)).transpose()
            };
            Ok(PublishedKey {
                key_use,
                public_key,
                activated_at: at(3)?
                    .ok_or_else(|| StoreError::Corrupt(format!("{what}: no activation")))?,
                retired_at: at(4)?,
                verifies_until: at(5)?,
                kid,
            })
        },
    )
}

pub(crate) fn audit_len<D: Dialect + ?Sized>(db: &mut D) -> Result<u64, Failure<D::Error>> {
    let next = one(
        db,
        "SELECT COALESCE(MAX(seq) + 1, 0) FROM audit",
        &[],
        |row| required("audit length", row.int(0)?),
    )?
    .unwrap_or(0);
    Ok(unsigned("audit length", next)?)
}

pub(crate) fn audit_bytes<D: Dialect + ?Sized>(
    db: &mut D,
    range: Range<u64>,
) -> Result<Vec<StoredEntry>, Failure<D::Error>> {
    // The raw bytes, whatever they are: a verifier must see bytes that are no longer valid
    // UTF-8 too, and hash them, to name the altered entry.
    rows(
        db,
        "SELECT seq, entry FROM audit WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
        &[
            Value::Int(signed(range.start)),
            Value::Int(signed(range.end)),
        ],
        |row| {
            Ok(StoredEntry {
                seq: unsigned("audit sequence", required("audit sequence", row.int(0)?)?)?,
                bytes: row.bytes(1)?,
            })
        },
    )
}

pub(crate) fn merkle_node<D: Dialect + ?Sized>(
    db: &mut D,
    level: u32,
    index: u64,
) -> Result<Option<Hash>, Failure<D::Error>> {
    node(db, level, index)
}

pub(crate) fn merkle_nodes<D: Dialect + ?Sized>(
    db: &mut D,
    level: u32,
    range: Range<u64>,
) -> Result<Vec<(u64, Hash)>, Failure<D::Error>> {
    if super::is_derived(db, level) {
        super::derived_nodes(db, level, range)
    } else {
        super::stored_nodes(db, level, range)
    }
}

pub(crate) fn latest_checkpoint<D: Dialect + ?Sized>(
    db: &mut D,
) -> Result<Option<StoredCheckpoint>, Failure<D::Error>> {
    one(
        db,
        "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1",
        &[],
        |row| {
            Ok(StoredCheckpoint {
                size: unsigned("checkpoint size", required("checkpoint size", row.int(0)?)?)?,
                root: hash("checkpoint root", &row.bytes(1)?)?,
                note: text("checkpoint note", row.bytes(2)?)?,
            })
        },
    )
}

/// Everything the checked call reads, in the caller's one transaction.
#[cfg(feature = "sqlite")]
pub(crate) fn access_view<D: Dialect + ?Sized>(
    db: &mut D,
    id: &ConsentId,
    platform_id: &PlatformId,
    day: Date,
) -> Result<crate::store::AccessView, Failure<D::Error>> {
    let found = consent(db, id)?;
    let platform = platform(db, platform_id)?;
    let Some(found) = found else {
        return Ok(crate::store::AccessView {
            platform,
            ..Default::default()
        });
    };
    Ok(crate::store::AccessView {
        holder: holder(db, &found.request.holder)?,
        usage: usage(db, id, day)?,
        subject_key: super::privacy::subject_key(db, &found.request.subject)?,
        subject_key_unread: false,
        platform,
        consent: Some(found),
    })
}

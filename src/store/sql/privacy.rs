//! What erasure and retention do in the SQL stores: subjects' keys, erasing a subject, deleting
//! ended grants, pairwise links, and the `ends_at` columns retention reads.

use time::OffsetDateTime;

use super::write::insert_new;
use super::{Dialect, Failure, Value, corrupt, one, rows, text, time as timestamp};
use crate::consent::Consent;
use crate::ids::{ConsentId, PlatformId, SubjectId};
use crate::privacy::{SubjectKey, SubjectKeyRecord};
use crate::store::{AttestationRecord, RecordKind, StoreError, SubjectLink};

/// A subject's key.
pub(crate) fn subject_key<D: Dialect + ?Sized>(
    db: &mut D,
    subject: &SubjectId,
) -> Result<Option<SubjectKey>, Failure<D::Error>> {
    one(
        db,
        "SELECT key FROM subject_keys WHERE subject = ?1",
        &[Value::Text(subject.as_str())],
        |row| decode_subject_key(row.bytes(0)?),
    )
}

/// A subject's stored key.
pub(crate) fn decode_subject_key(bytes: Vec<u8>) -> Result<SubjectKey, StoreError> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a subject key is not 32 bytes".into()))?;
    Ok(SubjectKey::from_bytes(&bytes))
}

pub(crate) fn insert_subject_key<D: Dialect + ?Sized>(
    db: &mut D,
    record: &SubjectKeyRecord,
) -> Result<(), Failure<D::Error>> {
    let bytes = record.key.to_bytes();
    let inserted = db.execute(
        "INSERT INTO subject_keys (subject, key, created_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT DO NOTHING",
        &[
            Value::Text(record.subject.as_str()),
            Value::Blob(&bytes[..]),
            Value::Int(record.created_at.unix_timestamp()),
        ],
    )?;
    // Another writer made the subject's key first: re-read it and decide again.
    if inserted == 0 {
        return Err(Failure::Refused(StoreError::Conflict));
    }
    Ok(())
}

/// Whether `query` (ids of one subject) returns exactly `listed`, in any order.
fn exactly<D: Dialect + ?Sized>(
    db: &mut D,
    query: &'static str,
    subject: &SubjectId,
    listed: impl IntoIterator<Item = String>,
) -> Result<bool, Failure<D::Error>> {
    let mut held = rows(db, query, &[Value::Text(subject.as_str())], |row| {
        text("id", row.bytes(0)?)
    })?;
    let mut listed: Vec<String> = listed.into_iter().collect();
    held.sort();
    listed.sort();
    Ok(held == listed)
}

/// Erases a subject (see [`crate::Change::EraseSubject`]).
pub(crate) fn erase_subject<D: Dialect + ?Sized>(
    db: &mut D,
    subject: &SubjectId,
    consents: &[ConsentId],
    attestations: &[String],
    used_attestations: &[String],
) -> Result<(), Failure<D::Error>> {
    let consents_match = exactly(
        db,
        "SELECT id FROM consents WHERE subject = ?1",
        subject,
        consents.iter().map(|c| c.as_str().to_owned()),
    )?;
    let attestations_match = exactly(
        db,
        "SELECT id FROM bank_attestations WHERE subject = ?1",
        subject,
        attestations.iter().cloned(),
    )?;
    if !consents_match || !attestations_match {
        return Err(Failure::Refused(StoreError::Conflict));
    }
    let by_subject = [Value::Text(subject.as_str())];
    for sql in [
        "DELETE FROM usage WHERE consent IN (SELECT id FROM consents WHERE subject = ?1)",
        "DELETE FROM consents WHERE subject = ?1",
        "DELETE FROM subject_keys WHERE subject = ?1",
        "DELETE FROM bank_served WHERE attestation IN \
         (SELECT id FROM bank_attestations WHERE subject = ?1)",
        "DELETE FROM bank_platform_revocations WHERE consent IN \
         (SELECT consent FROM bank_attestations WHERE subject = ?1)",
        "DELETE FROM bank_attestations WHERE subject = ?1",
        "DELETE FROM bank_device_keys WHERE subject = ?1",
        "DELETE FROM bank_subject_links WHERE customer = ?1",
    ] {
        db.execute(sql, &by_subject)?;
    }
    for id in used_attestations {
        db.execute("DELETE FROM attestations WHERE id = ?1", &[Value::Text(id)])?;
    }
    Ok(())
}

/// Deletes consents with their usage, and used-attestation ids (retention).
pub(crate) fn forget_consents<D: Dialect + ?Sized>(
    db: &mut D,
    consents: &[ConsentId],
    used_attestations: &[String],
) -> Result<(), Failure<D::Error>> {
    for consent in consents {
        let id = [Value::Text(consent.as_str())];
        db.execute("DELETE FROM usage WHERE consent = ?1", &id)?;
        if db.execute("DELETE FROM consents WHERE id = ?1", &id)? != 1 {
            return Err(Failure::Refused(StoreError::Missing {
                kind: RecordKind::Consent,
                id: consent.as_str().to_owned(),
            }));
        }
    }
    for id in used_attestations {
        db.execute("DELETE FROM attestations WHERE id = ?1", &[Value::Text(id)])?;
    }
    Ok(())
}

/// Deletes approvals with their served counts (retention).
pub(crate) fn forget_attestations<D: Dialect + ?Sized>(
    db: &mut D,
    ids: &[String],
) -> Result<(), Failure<D::Error>> {
    for attestation in ids {
        let id = [Value::Text(attestation)];
        db.execute("DELETE FROM bank_served WHERE attestation = ?1", &id)?;
        if db.execute("DELETE FROM bank_attestations WHERE id = ?1", &id)? != 1 {
            return Err(Failure::Refused(StoreError::Missing {
                kind: RecordKind::AttestationRecord,
                id: attestation.clone(),
            }));
        }
    }
    Ok(())
}

pub(crate) fn link_subject<D: Dialect + ?Sized>(
    db: &mut D,
    link: &SubjectLink,
) -> Result<(), Failure<D::Error>> {
    insert_new(
        db,
        "INSERT INTO bank_subject_links (pairwise, customer, platform, linked_at) \
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        &[
            Value::Text(link.pairwise.as_str()),
            Value::Text(link.customer.as_str()),
            Value::Text(link.platform.as_str()),
            Value::Int(link.linked_at.unix_timestamp()),
        ],
        RecordKind::SubjectLink,
        link.pairwise.as_str(),
    )
}

fn link_row(row: &dyn super::Row) -> Result<SubjectLink, StoreError> {
    let id = |column: usize, what: &str| -> Result<SubjectId, StoreError> {
        SubjectId::new(text(what, row.bytes(column)?)?)
            .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
    };
    Ok(SubjectLink {
        pairwise: id(0, "pairwise id")?,
        customer: id(1, "customer id")?,
        platform: PlatformId::new(text("platform id", row.bytes(2)?)?)
            .map_err(|e| StoreError::Corrupt(format!("platform id: {e}")))?,
        linked_at: timestamp(
            "linked_at",
            row.int(3)?
                .ok_or_else(|| StoreError::Corrupt("linked_at is NULL".into()))?,
        )?,
    })
}

pub(crate) fn subject_link<D: Dialect + ?Sized>(
    db: &mut D,
    pairwise: &SubjectId,
) -> Result<Option<SubjectLink>, Failure<D::Error>> {
    one(
        db,
        "SELECT pairwise, customer, platform, linked_at FROM bank_subject_links \
         WHERE pairwise = ?1",
        &[Value::Text(pairwise.as_str())],
        link_row,
    )
}

pub(crate) fn links_of_customer<D: Dialect + ?Sized>(
    db: &mut D,
    customer: &SubjectId,
) -> Result<Vec<SubjectLink>, Failure<D::Error>> {
    rows(
        db,
        "SELECT pairwise, customer, platform, linked_at FROM bank_subject_links \
         WHERE customer = ?1 ORDER BY platform",
        &[Value::Text(customer.as_str())],
        link_row,
    )
}

pub(crate) fn link_of<D: Dialect + ?Sized>(
    db: &mut D,
    customer: &SubjectId,
    platform: &PlatformId,
) -> Result<Option<SubjectLink>, Failure<D::Error>> {
    one(
        db,
        "SELECT pairwise, customer, platform, linked_at FROM bank_subject_links \
         WHERE customer = ?1 AND platform = ?2",
        &[
            Value::Text(customer.as_str()),
            Value::Text(platform.as_str()),
        ],
        link_row,
    )
}

pub(crate) fn consents_ended_before<D: Dialect + ?Sized>(
    db: &mut D,
    before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<Consent>, Failure<D::Error>> {
    rows(
        db,
        "SELECT record FROM consents WHERE ends_at < ?1 ORDER BY ends_at, id LIMIT ?2",
        &[
            Value::Int(before.unix_timestamp()),
            Value::Int(i64::from(limit)),
        ],
        |row| Consent::from_stored(&row.bytes(0)?).map_err(corrupt("consent".into())),
    )
}

pub(crate) fn attestations_ended_before<D: Dialect + ?Sized>(
    db: &mut D,
    before: OffsetDateTime,
    limit: u32,
) -> Result<Vec<AttestationRecord>, Failure<D::Error>> {
    rows(
        db,
        "SELECT record FROM bank_attestations WHERE ends_at < ?1 ORDER BY ends_at, id LIMIT ?2",
        &[
            Value::Int(before.unix_timestamp()),
            Value::Int(i64::from(limit)),
        ],
        |row| serde_json::from_slice(&row.bytes(0)?).map_err(corrupt("bank attestation".into())),
    )
}

/// Sets a consent's `ends_at` (after an insert or update).
pub(crate) fn set_consent_end<D: Dialect + ?Sized>(
    db: &mut D,
    consent: &Consent,
) -> Result<(), Failure<D::Error>> {
    db.execute(
        "UPDATE consents SET ends_at = ?1 WHERE id = ?2",
        &[
            Value::Int(consent.ends_at().unix_timestamp()),
            Value::Text(consent.id().as_str()),
        ],
    )?;
    Ok(())
}

/// Sets an approval's `ends_at` (after an insert or update).
pub(crate) fn set_attestation_end<D: Dialect + ?Sized>(
    db: &mut D,
    record: &AttestationRecord,
) -> Result<(), Failure<D::Error>> {
    db.execute(
        "UPDATE bank_attestations SET ends_at = ?1 WHERE id = ?2",
        &[
            Value::Int(record.ends_at().unix_timestamp()),
            Value::Text(&record.id),
        ],
    )?;
    Ok(())
}

/// Fills `ends_at` for rows written before the column existed (run once, by the migration that
/// adds it, in its transaction).
pub(crate) fn backfill_ends<D: Dialect + ?Sized>(db: &mut D) -> Result<(), Failure<D::Error>> {
    let consents = rows(
        db,
        "SELECT record FROM consents WHERE ends_at IS NULL",
        &[],
        |row| Consent::from_stored(&row.bytes(0)?).map_err(corrupt("consent".into())),
    )?;
    for consent in &consents {
        set_consent_end(db, consent)?;
    }
    let approvals: Vec<AttestationRecord> = rows(
        db,
        "SELECT record FROM bank_attestations WHERE ends_at IS NULL",
        &[],
        |row| serde_json::from_slice(&row.bytes(0)?).map_err(corrupt("bank attestation".into())),
    )?;
    for record in &approvals {
        set_attestation_end(db, record)?;
    }
    Ok(())
}

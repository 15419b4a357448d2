//! The bank's ledger in the SQL stores: its reads, its preconditions and its changes, for any
//! dialect. The tables are `bank_*` (see each engine's schema history).

use time::{Date, OffsetDateTime};

use super::{
    Dialect, Failure, Row, Value, corrupt, day_key, one, rows, same_version, signed, time,
};
use crate::ids::{ConsentId, SubjectId};
use crate::policy::Presence;
use crate::store::ledger::live_thumbprints;
use crate::store::{
    AttestationRecord, Change, DeviceKeyRecord, FeedState, GateQuery, GateView, PolicyRecord,
    Precondition, RecordKind, SeenKind, ServedCounts, StoreError,
};

use super::write::{Versioned, insert_new, json, stored_version, update_versioned};

const ATTESTATIONS: Versioned = Versioned {
    update: "UPDATE bank_attestations SET version = ?1, record = ?2 WHERE id = ?3 AND version = ?4",
    exists: "SELECT version FROM bank_attestations WHERE id = ?1",
    kind: RecordKind::AttestationRecord,
};

fn attestation(bytes: &[u8]) -> Result<AttestationRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt("attestation record".into()))
}

fn device_key(bytes: &[u8]) -> Result<DeviceKeyRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt("device key".into()))
}

pub(crate) fn device_keys<D: Dialect + ?Sized>(
    db: &mut D,
    subject: &SubjectId,
) -> Result<Vec<DeviceKeyRecord>, Failure<D::Error>> {
    rows(
        db,
        "SELECT record FROM bank_device_keys WHERE subject = ?1 ORDER BY position",
        &[Value::Text(subject.as_str())],
        |row| device_key(&row.bytes(0)?),
    )
}

fn policy(bytes: &[u8]) -> Result<PolicyRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(corrupt("bank policy".into()))
}

fn count(what: &str, value: Option<i64>) -> Result<u32, StoreError> {
    u32::try_from(value.unwrap_or(0))
        .map_err(|_| StoreError::Corrupt(format!("{what} out of range")))
}

pub(crate) fn attestation_record<D: Dialect + ?Sized>(
    db: &mut D,
    id: &str,
) -> Result<Option<AttestationRecord>, Failure<D::Error>> {
    one(
        db,
        "SELECT record FROM bank_attestations WHERE id = ?1",
        &[Value::Text(id)],
        |row| attestation(&row.bytes(0)?),
    )
}

pub(crate) fn attestations_of_subject<D: Dialect + ?Sized>(
    db: &mut D,
    subject: &SubjectId,
) -> Result<Vec<AttestationRecord>, Failure<D::Error>> {
    rows(
        db,
        "SELECT record FROM bank_attestations WHERE subject = ?1 ORDER BY position",
        &[Value::Text(subject.as_str())],
        |row| attestation(&row.bytes(0)?),
    )
}

pub(crate) fn attestations_of_consent<D: Dialect + ?Sized>(
    db: &mut D,
    consent: &ConsentId,
) -> Result<Vec<AttestationRecord>, Failure<D::Error>> {
    rows(
        db,
        "SELECT record FROM bank_attestations WHERE consent = ?1 ORDER BY position",
        &[Value::Text(consent.as_str())],
        |row| attestation(&row.bytes(0)?),
    )
}

pub(crate) fn platform_revocation<D: Dialect + ?Sized>(
    db: &mut D,
    consent: &ConsentId,
) -> Result<Option<OffsetDateTime>, Failure<D::Error>> {
    let at = one(
        db,
        "SELECT revoked_at FROM bank_platform_revocations WHERE consent = ?1",
        &[Value::Text(consent.as_str())],
        |row| {
            row.int(0)?
                .map(|at| time("platform revocation", at))
                .transpose()
        },
    )?;
    Ok(at.flatten())
}

pub(crate) fn bank_policies<D: Dialect + ?Sized>(
    db: &mut D,
) -> Result<Vec<PolicyRecord>, Failure<D::Error>> {
    rows(
        db,
        "SELECT record FROM bank_policies ORDER BY version",
        &[],
        |row| policy(&row.bytes(0)?),
    )
}

pub(crate) fn seen<D: Dialect + ?Sized>(
    db: &mut D,
    kind: SeenKind,
    id: &str,
    at: OffsetDateTime,
) -> Result<bool, Failure<D::Error>> {
    Ok(one(
        db,
        "SELECT (SELECT COUNT(*) FROM bank_presented WHERE kind = ?1 AND at = ?3 AND id = ?2) \
              + (SELECT COUNT(*) FROM bank_seen_before_v8 WHERE kind = ?1 AND id = ?2)",
        &[
            Value::Text(kind.as_str()),
            Value::Text(id),
            Value::Int(at.unix_timestamp()),
        ],
        |row| Ok(row.int(0)?.unwrap_or(0)),
    )?
    .is_some_and(|count| count > 0))
}

pub(crate) fn feed_state<D: Dialect + ?Sized>(
    db: &mut D,
) -> Result<Option<FeedState>, Failure<D::Error>> {
    let state = one(
        db,
        "SELECT position, generated_at, root FROM bank_feed WHERE id = 1",
        &[],
        |row| {
            Ok(FeedState {
                position: u64::try_from(row.int(0)?.unwrap_or(-1))
                    .map_err(|_| StoreError::Corrupt("feed position".into()))?,
                generated_at: time("feed time", row.int(1)?.unwrap_or(i64::MIN))?,
                root: feed_root(row.optional_bytes(2)?)?,
            })
        },
    )?;
    Ok(state)
}

/// The feed's root as stored (32 bytes, or none).
fn feed_root(stored: Option<Vec<u8>>) -> Result<Option<crate::merkle::Hash>, StoreError> {
    stored
        .map(|bytes| {
            crate::merkle::Hash::try_from(bytes.as_slice())
                .map_err(|_| StoreError::Corrupt("the feed's root is not 32 bytes".into()))
        })
        .transpose()
}

fn served<D: Dialect + ?Sized>(
    db: &mut D,
    attestation: &str,
    day: Date,
) -> Result<ServedCounts, Failure<D::Error>> {
    let counts = one(
        db,
        "SELECT unattended, present FROM bank_served WHERE attestation = ?1 AND day = ?2",
        &[Value::Text(attestation), Value::Text(&day_key(day))],
        |row| {
            Ok(ServedCounts {
                unattended: count("served count", row.int(0)?)?,
                present: count("served count", row.int(1)?)?,
            })
        },
    )?;
    Ok(counts.unwrap_or_default())
}

/// Everything the gate reads, in one statement (one round trip on PostgreSQL): one row per
/// device key of the attestation's subject (at least one row), each with the same scalar columns.
pub(crate) fn gate_view<D: Dialect + ?Sized>(
    db: &mut D,
    query: &GateQuery<'_>,
) -> Result<GateView, Failure<D::Error>> {
    let day = day_key(query.day);
    let mut view: Option<GateView> = None;
    db.query(
        "SELECT (SELECT record FROM bank_attestations WHERE id = ?1), \
                (SELECT record FROM bank_policies ORDER BY version DESC LIMIT 1), \
                (SELECT unattended FROM bank_served WHERE attestation = ?1 AND day = ?3), \
                (SELECT present FROM bank_served WHERE attestation = ?1 AND day = ?3), \
                (SELECT revoked_at FROM bank_platform_revocations WHERE consent = ?2), \
                (SELECT position FROM bank_feed WHERE id = 1), \
                (SELECT generated_at FROM bank_feed WHERE id = 1), \
                (SELECT COUNT(*) FROM bank_presented WHERE kind = 'proof' AND at = ?6 \
                    AND id = ?4) + (SELECT COUNT(*) FROM bank_seen_before_v8 \
                    WHERE kind = 'proof' AND id = ?4), \
                (SELECT COUNT(*) FROM bank_presented WHERE kind = 'token' AND at = ?7 \
                    AND id = ?5) + (SELECT COUNT(*) FROM bank_seen_before_v8 \
                    WHERE kind = 'token' AND id = ?5), \
                (SELECT subject FROM bank_attestations WHERE id = ?1), \
                (SELECT key FROM subject_keys WHERE subject = \
                    (SELECT subject FROM bank_attestations WHERE id = ?1)), \
                d.record, \
                (SELECT root FROM bank_feed WHERE id = 1) \
         FROM (SELECT 1) AS one \
         LEFT JOIN bank_device_keys d \
             ON d.subject = (SELECT subject FROM bank_attestations WHERE id = ?1) \
         ORDER BY d.position",
        &[
            Value::Text(query.attestation),
            Value::Text(query.consent.as_str()),
            Value::Text(&day),
            Value::Text(query.proof_id),
            Value::Text(query.token_id),
            Value::Int(query.proof_at.unix_timestamp()),
            Value::Int(query.token_at.unix_timestamp()),
        ],
        &mut |row| {
            let view = match &mut view {
                Some(view) => view,
                None => view.insert(decode_view(row)?),
            };
            let Some(attestation) = &view.attestation else {
                return Ok(());
            };
            // The keys are found by the attestation row's subject column: it must be the
            // subject its record names.
            let column = row.optional_bytes(9)?;
            if column.as_deref() != Some(attestation.subject.as_str().as_bytes()) {
                return Err(StoreError::Corrupt(
                    "an attestation's subject column differs from its record".into(),
                ));
            }
            if view.subject_key.is_none()
                && let Some(key) = row.optional_bytes(10)?
            {
                view.subject_key = Some(super::privacy::decode_subject_key(key)?);
            }
            if let Some(record) = row.optional_bytes(11)? {
                let device = device_key(&record)?;
                if device.subject != attestation.subject {
                    return Err(StoreError::Corrupt(
                        "a device key listed under another subject".into(),
                    ));
                }
                view.device_keys.push(device);
            }
            Ok(())
        },
    )?;
    Ok(view.unwrap_or_default())
}

fn decode_view(row: &dyn Row) -> Result<GateView, StoreError> {
    let feed = match (row.int(5)?, row.int(6)?) {
        (Some(position), Some(generated_at)) => Some(FeedState {
            position: u64::try_from(position)
                .map_err(|_| StoreError::Corrupt("feed position is negative".into()))?,
            generated_at: time("feed time", generated_at)?,
            root: feed_root(row.optional_bytes(12)?)?,
        }),
        _ => None,
    };
    Ok(GateView {
        proof_seen: row.int(7)?.unwrap_or(0) > 0,
        token_seen: row.int(8)?.unwrap_or(0) > 0,
        attestation: row
            .optional_bytes(0)?
            .map(|b| attestation(&b))
            .transpose()?,
        policy: row.optional_bytes(1)?.map(|b| policy(&b)).transpose()?,
        served: ServedCounts {
            unattended: count("served count", row.int(2)?)?,
            present: count("served count", row.int(3)?)?,
        },
        platform_revoked_at: row
            .int(4)?
            .map(|at| time("platform revocation", at))
            .transpose()?,
        feed,
        subject_key: None,
        device_keys: Vec::new(),
    })
}

/// Whether a ledger precondition holds.
pub(crate) fn holds<D: Dialect + ?Sized>(
    db: &mut D,
    precondition: &Precondition,
) -> Result<bool, Failure<D::Error>> {
    Ok(match precondition {
        Precondition::AttestationVersion {
            attestation,
            version,
            ..
        } => same_version(
            stored_version(db, ATTESTATIONS.exists, attestation)?,
            *version,
        ),
        Precondition::ServedIs {
            attestation,
            day,
            counts,
            ..
        } => served(db, attestation, *day)? == *counts,
        Precondition::ServedBelow {
            attestation,
            day,
            presence,
            limit,
            ..
        } => served(db, attestation, *day)?.of(*presence) < *limit,
        Precondition::BankPolicyVersion { version, .. } => {
            let latest = one(db, "SELECT MAX(version) FROM bank_policies", &[], |row| {
                row.int(0)
            })?
            .flatten();
            match version {
                Some(version) => same_version(latest, *version),
                None => latest.is_none(),
            }
        }
        Precondition::LiveAttestations { consent, ids, .. } => {
            let live: Vec<String> = attestations_of_consent(db, consent)?
                .into_iter()
                .filter(|a| a.superseded_by.is_none())
                .map(|a| a.id)
                .collect();
            live == *ids
        }
        Precondition::LiveDeviceKeys {
            subject,
            thumbprints,
            ..
        } => live_thumbprints(&device_keys(db, subject)?) == *thumbprints,
        Precondition::NotRevokedAtPlatform { consent, .. } => one(
            db,
            "SELECT 1 FROM bank_platform_revocations WHERE consent = ?1",
            &[Value::Text(consent.as_str())],
            |_| Ok(()),
        )?
        .is_none(),
        _ => false,
    })
}

/// What one access served with `presence` adds to the day's (unattended, present) counts.
pub(crate) fn served_increments(presence: Presence) -> (i64, i64) {
    match presence {
        Presence::Unattended => (1, 0),
        Presence::SubjectPresent => (0, 1),
    }
}

/// Remembers a presented id (`?1` kind, `?2` signed time, `?3` id), unless it is remembered
/// already: in its own table, or in the table of ids remembered before schema version 8 (by kind
/// and id, with their expiry; `bank_seen` then), which is read and pruned but never written.
pub(crate) const REMEMBER_SEEN: &str = "INSERT INTO bank_presented (kind, at, id) \
     SELECT ?1, ?2, ?3 WHERE NOT EXISTS \
     (SELECT 1 FROM bank_seen_before_v8 WHERE kind = ?1 AND id = ?3) ON CONFLICT DO NOTHING";

/// Deletes up to `?3` presented ids of kind `?1` signed for a time before `?2`, the oldest first:
/// one range at the left edge of the table's key.
pub(crate) const PRUNE_SEEN: &str = "DELETE FROM bank_presented WHERE (kind, at, id) IN \
     (SELECT kind, at, id FROM bank_presented WHERE kind = ?1 AND at < ?2 ORDER BY at LIMIT ?3)";

/// Deletes up to `?3` ids of kind `?1` remembered before schema version 8 that expired before
/// `?2`. Their expiry is later than their signed time, so a cutoff by signed time keeps them no
/// shorter than they verify. The table drains through the gate's own checks (a few ids a check),
/// within about a token's lifetime and the prune's margin of the upgrade under traffic.
pub(crate) const PRUNE_SEEN_BEFORE_V8: &str = "DELETE FROM bank_seen_before_v8 WHERE (kind, id) IN \
     (SELECT kind, id FROM bank_seen_before_v8 WHERE kind = ?1 AND expires_at < ?2 \
     ORDER BY expires_at LIMIT ?3)";

/// Applies a ledger change.
pub(crate) fn apply<D: Dialect + ?Sized>(
    db: &mut D,
    change: &Change,
) -> Result<(), Failure<D::Error>> {
    match change {
        Change::RecordAttestation { record, .. } => insert_new(
            db,
            "INSERT INTO bank_attestations (id, consent, subject, version, record, ends_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            &[
                Value::Text(&record.id),
                Value::Text(record.consent.as_str()),
                Value::Text(record.subject.as_str()),
                Value::Int(signed(record.version)),
                Value::Text(&json(record)?),
                Value::Int(record.ends_at().unix_timestamp()),
            ],
            RecordKind::AttestationRecord,
            &record.id,
        ),
        Change::UpdateAttestation { record, .. } => {
            update_versioned(
                db,
                &ATTESTATIONS,
                &record.id,
                record.version,
                &json(record)?,
            )?;
            super::privacy::set_attestation_end(db, record)
        }
        Change::AppendBankPolicy { record, .. } => insert_new(
            db,
            "INSERT INTO bank_policies (version, record) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            &[
                Value::Int(signed(record.version)),
                Value::Text(&json(record)?),
            ],
            RecordKind::BankPolicy,
            &record.version.to_string(),
        ),
        Change::CountServed {
            attestation,
            day,
            presence,
            ..
        } => {
            let (unattended, present) = served_increments(*presence);
            db.execute(
                "INSERT INTO bank_served (attestation, day, unattended, present) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (attestation, day) DO UPDATE SET \
                 unattended = bank_served.unattended + excluded.unattended, \
                 present = bank_served.present + excluded.present",
                &[
                    Value::Text(attestation),
                    Value::Text(&day_key(*day)),
                    Value::Int(unattended),
                    Value::Int(present),
                ],
            )?;
            Ok(())
        }
        Change::RememberSeen { kind, id, at, .. } => insert_new(
            db,
            REMEMBER_SEEN,
            &[
                Value::Text(kind.as_str()),
                Value::Int(at.unix_timestamp()),
                Value::Text(id),
            ],
            RecordKind::Presented(*kind),
            id,
        ),
        Change::PruneSeen {
            kind,
            before,
            limit,
            ..
        } => {
            let params = [
                Value::Text(kind.as_str()),
                Value::Int(before.unix_timestamp()),
                Value::Int(i64::from(*limit)),
            ];
            db.execute(PRUNE_SEEN, &params)?;
            db.execute(PRUNE_SEEN_BEFORE_V8, &params)?;
            Ok(())
        }
        Change::RecordPlatformRevocation {
            consent,
            revoked_at,
            ..
        } => {
            db.execute(
                "INSERT INTO bank_platform_revocations (consent, revoked_at) VALUES (?1, ?2) \
                 ON CONFLICT DO NOTHING",
                &[
                    Value::Text(consent.as_str()),
                    Value::Int(revoked_at.unix_timestamp()),
                ],
            )?;
            Ok(())
        }
        Change::SetFeedState { state, .. } => {
            db.execute(
                "INSERT INTO bank_feed (id, position, generated_at, root) VALUES (1, ?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET position = excluded.position, \
                 generated_at = excluded.generated_at, root = excluded.root",
                &[
                    Value::Int(signed(state.position)),
                    Value::Int(state.generated_at.unix_timestamp()),
                    Value::OptionalBlob(state.root.as_ref().map(<[u8; 32]>::as_slice)),
                ],
            )?;
            Ok(())
        }
        Change::RegisterDeviceKey { record, .. } => {
            let thumbprint = record.key.thumbprint();
            insert_new(
                db,
                "INSERT INTO bank_device_keys (thumbprint, subject, record) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING",
                &[
                    Value::Text(&thumbprint),
                    Value::Text(record.subject.as_str()),
                    Value::Text(&json(record)?),
                ],
                RecordKind::DeviceKey,
                &thumbprint,
            )
        }
        Change::RevokeDeviceKey {
            subject,
            thumbprint,
            at,
            ..
        } => {
            let stored = one(
                db,
                "SELECT record FROM bank_device_keys WHERE thumbprint = ?1 AND subject = ?2",
                &[Value::Text(thumbprint), Value::Text(subject.as_str())],
                |row| device_key(&row.bytes(0)?),
            )?;
            let Some(mut record) = stored.filter(|record| record.revoked_at.is_none()) else {
                return Err(Failure::Refused(StoreError::Missing {
                    kind: RecordKind::DeviceKey,
                    id: thumbprint.clone(),
                }));
            };
            record.revoked_at = Some(*at);
            db.execute(
                "UPDATE bank_device_keys SET record = ?1 WHERE thumbprint = ?2",
                &[Value::Text(&json(&record)?), Value::Text(thumbprint)],
            )?;
            Ok(())
        }
        _ => Err(Failure::Refused(StoreError::Unavailable(
            "not a ledger change".into(),
        ))),
    }
}

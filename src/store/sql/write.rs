//! The commit semantics of the SQL stores, for any dialect: preconditions, changes, audit rows
//! with the Merkle nodes they complete, and checkpoints. Everything runs inside the transaction
//! the store opened; any failure makes the store roll it all back.

use time::OffsetDateTime;

use super::{Dialect, Failure, Value, day_key, one, privacy, read, same_version, signed};
use crate::audit::PreparedEntry;
use crate::merkle::{self, Hash, MerkleError, NodeSource};
use crate::store::{Change, Commit, Precondition, RecordKind, StoreError, StoredCheckpoint};

pub(super) fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable(format!("encoding: {e}")))
}

/// Inserts a row unless its key exists; a duplicate is reported as such.
pub(super) fn insert_new<D: Dialect + ?Sized>(
    db: &mut D,
    sql: &'static str,
    params: &[Value<'_>],
    kind: RecordKind,
    id: &str,
) -> Result<(), Failure<D::Error>> {
    if db.execute(sql, params)? == 0 {
        return Err(Failure::Refused(StoreError::Duplicate {
            kind,
            id: id.to_owned(),
        }));
    }
    Ok(())
}

/// The statements of a versioned table.
pub(super) struct Versioned {
    pub(super) update: &'static str,
    pub(super) exists: &'static str,
    pub(super) kind: RecordKind,
}

const HOLDERS: Versioned = Versioned {
    update: "UPDATE holders SET version = ?1, record = ?2 WHERE id = ?3 AND version = ?4",
    exists: "SELECT version FROM holders WHERE id = ?1",
    kind: RecordKind::Holder,
};

const CONSENTS: Versioned = Versioned {
    update: "UPDATE consents SET version = ?1, record = ?2 WHERE id = ?3 AND version = ?4",
    exists: "SELECT version FROM consents WHERE id = ?1",
    kind: RecordKind::Consent,
};

/// Replaces a versioned row whose stored version is one less than the new one.
pub(super) fn update_versioned<D: Dialect + ?Sized>(
    db: &mut D,
    table: &Versioned,
    id: &str,
    version: u64,
    record: &str,
) -> Result<(), Failure<D::Error>> {
    // The new version follows the stored one, both within SQL's integers: version 0 follows
    // none, and none follows `i64::MAX` (saturated, either would match a stored version equal
    // to itself and replace the row without a bump, as the memory store never does).
    if let (Some(previous), Ok(new)) = (version.checked_sub(1), i64::try_from(version)) {
        let params = [
            Value::Int(new),
            Value::Text(record),
            Value::Text(id),
            Value::Int(signed(previous)),
        ];
        if db.execute(table.update, &params)? == 1 {
            return Ok(());
        }
    }
    let exists = one(db, table.exists, &[Value::Text(id)], |_| Ok(()))?.is_some();
    Err(Failure::Refused(if exists {
        StoreError::Conflict
    } else {
        StoreError::Missing {
            kind: table.kind,
            id: id.to_owned(),
        }
    }))
}

pub(super) fn stored_version<D: Dialect + ?Sized>(
    db: &mut D,
    sql: &'static str,
    id: &str,
) -> Result<Option<i64>, Failure<D::Error>> {
    Ok(one(db, sql, &[Value::Text(id)], |row| row.int(0))?.flatten())
}

fn holds<D: Dialect + ?Sized>(
    db: &mut D,
    precondition: &Precondition,
) -> Result<bool, Failure<D::Error>> {
    Ok(match precondition {
        Precondition::ConsentVersion {
            consent, version, ..
        } => same_version(
            stored_version(db, CONSENTS.exists, consent.as_str())?,
            *version,
        ),
        Precondition::HolderVersion {
            holder, version, ..
        } => same_version(
            stored_version(db, HOLDERS.exists, holder.as_str())?,
            *version,
        ),
        Precondition::UsageIs {
            consent,
            day,
            usage,
            ..
        } => read::usage(db, consent, *day)? == *usage,
        Precondition::KeyActive { key_use, kid, .. } => one(
            db,
            "SELECT 1 FROM published_keys \
             WHERE key_use = ?1 AND kid = ?2 AND retired_at IS NULL",
            &[Value::Text(key_use.as_str()), Value::Text(kid)],
            |_| Ok(()),
        )?
        .is_some(),
        Precondition::SubjectKeyIs { subject, key, .. } => {
            privacy::subject_key(db, subject)?.is_some_and(|stored| stored == **key)
        }
        Precondition::AttestationVersion { .. }
        | Precondition::ServedIs { .. }
        | Precondition::ServedBelow { .. }
        | Precondition::BankPolicyVersion { .. }
        | Precondition::LiveAttestations { .. }
        | Precondition::LiveDeviceKeys { .. }
        | Precondition::NotRevokedAtPlatform { .. } => super::ledger::holds(db, precondition)?,
    })
}

fn apply<D: Dialect + ?Sized>(db: &mut D, change: &Change) -> Result<(), Failure<D::Error>> {
    match change {
        Change::InsertHolder { holder, .. } => insert_new(
            db,
            "INSERT INTO holders (id, version, record) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            &[
                Value::Text(holder.id.as_str()),
                Value::Int(signed(holder.version)),
                Value::Text(&json(holder)?),
            ],
            RecordKind::Holder,
            holder.id.as_str(),
        ),
        Change::UpdateHolder { holder, .. } => update_versioned(
            db,
            &HOLDERS,
            holder.id.as_str(),
            holder.version,
            &json(holder)?,
        ),
        Change::InsertPlatform { platform, .. } => insert_new(
            db,
            "INSERT INTO platforms (id, record) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            &[
                Value::Text(platform.id.as_str()),
                Value::Text(&json(platform)?),
            ],
            RecordKind::Platform,
            platform.id.as_str(),
        ),
        Change::InsertConsent { consent, .. } => insert_new(
            db,
            "INSERT INTO consents (id, subject, version, record, ends_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            &[
                Value::Text(consent.id().as_str()),
                Value::Text(consent.request.subject.as_str()),
                Value::Int(signed(consent.version)),
                Value::Text(&json(consent)?),
                Value::Int(consent.ends_at().unix_timestamp()),
            ],
            RecordKind::Consent,
            consent.id().as_str(),
        ),
        Change::UpdateConsent { consent, .. } => {
            update_versioned(
                db,
                &CONSENTS,
                consent.id().as_str(),
                consent.version,
                &json(consent)?,
            )?;
            privacy::set_consent_end(db, consent)
        }
        Change::CountUnattendedAccess { consent, day, .. } => {
            db.execute(
                "INSERT INTO usage (consent, day, unattended) VALUES (?1, ?2, 1) \
                 ON CONFLICT (consent, day) DO UPDATE SET unattended = usage.unattended + 1",
                &[Value::Text(consent.as_str()), Value::Text(&day_key(*day))],
            )?;
            Ok(())
        }
        Change::UseAttestation { attestation_id, .. } => insert_new(
            db,
            "INSERT INTO attestations (id) VALUES (?1) ON CONFLICT DO NOTHING",
            &[Value::Text(attestation_id)],
            RecordKind::Attestation,
            attestation_id,
        ),
        Change::ActivateKey { key, .. } => {
            // A key published before, active or retired, is a duplicate (as in memory: checked
            // before the one active key per use).
            let published = one(
                db,
                "SELECT CASE WHEN kid = ?2 THEN 1 ELSE 0 END AS same FROM published_keys \
                 WHERE key_use = ?1 AND (kid = ?2 OR retired_at IS NULL) \
                 ORDER BY same DESC LIMIT 1",
                &[Value::Text(key.key_use.as_str()), Value::Text(&key.kid)],
                |row| row.int(0),
            )?;
            match published {
                Some(Some(1)) => {
                    return Err(Failure::Refused(StoreError::Duplicate {
                        kind: RecordKind::Key,
                        id: key.kid.clone(),
                    }));
                }
                // One active key per use: another broker activated one first.
                Some(_) => return Err(Failure::Refused(StoreError::Conflict)),
                None => {}
            }
            insert_new(
                db,
                "INSERT INTO published_keys (key_use, kid, public_key, activated_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                &[
                    Value::Text(key.key_use.as_str()),
                    Value::Text(&key.kid),
                    Value::Text(&key.public_key.to_base64url()),
                    Value::Int(key.activated_at.unix_timestamp()),
                ],
                RecordKind::Key,
                &key.kid,
            )
        }
        Change::RetireKey {
            key_use,
            kid,
            retired_at,
            verifies_until,
            ..
        } => {
            let changed = db.execute(
                "UPDATE published_keys SET retired_at = ?3, verifies_until = ?4 \
                     WHERE key_use = ?1 AND kid = ?2 AND retired_at IS NULL",
                &[
                    Value::Text(key_use.as_str()),
                    Value::Text(kid),
                    Value::Int(retired_at.unix_timestamp()),
                    Value::OptionalInt(verifies_until.map(OffsetDateTime::unix_timestamp)),
                ],
            )?;
            if changed != 1 {
                return Err(Failure::Refused(StoreError::Missing {
                    kind: RecordKind::Key,
                    id: kid.clone(),
                }));
            }
            Ok(())
        }
        Change::InsertSubjectKey { record, .. } => privacy::insert_subject_key(db, record),
        Change::EraseSubject {
            subject,
            consents,
            attestations,
            used_attestations,
            ..
        } => privacy::erase_subject(db, subject, consents, attestations, used_attestations),
        Change::ForgetConsents {
            consents,
            used_attestations,
            ..
        } => privacy::forget_consents(db, consents, used_attestations),
        Change::ForgetAttestations { ids, .. } => privacy::forget_attestations(db, ids),
        Change::LinkSubject { link, .. } => privacy::link_subject(db, link),
        Change::RecordAttestation { .. }
        | Change::UpdateAttestation { .. }
        | Change::AppendBankPolicy { .. }
        | Change::CountServed { .. }
        | Change::RememberSeen { .. }
        | Change::PruneSeen { .. }
        | Change::RecordPlatformRevocation { .. }
        | Change::SetFeedState { .. }
        | Change::RegisterDeviceKey { .. }
        | Change::RevokeDeviceKey { .. } => super::ledger::apply(db, change),
    }
}

/// Writes the Merkle nodes that leaf `size` completes.
#[cfg(feature = "sqlite")]
pub(crate) fn append_leaf<D: Dialect + ?Sized>(
    db: &mut D,
    size: u64,
    leaf: Hash,
) -> Result<(), Failure<D::Error>> {
    let nodes = Frontier::load(db, size)?.append(leaf)?;
    insert_nodes(db, &nodes)
}

fn insert_nodes<D: Dialect + ?Sized>(
    db: &mut D,
    nodes: &[(u32, u64, Hash)],
) -> Result<(), Failure<D::Error>> {
    for (level, index, hash) in nodes {
        if super::is_derived(db, *level) {
            continue;
        }
        db.execute(
            "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)",
            &[
                Value::Int(i64::from(*level)),
                Value::Int(signed(*index)),
                Value::Blob(hash),
            ],
        )?;
    }
    Ok(())
}

/// The right edge of the audit log's Merkle tree: for a log of `size` leaves, the root of each
/// complete subtree that ends at the log's end (one per 1-bit of `size`), which is every node a
/// further append can need. Kept by a store across commits, it makes an append read nothing.
#[derive(Debug, Clone)]
pub(crate) struct Frontier {
    size: u64,
    /// The node at each level whose bit is set in `size`.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The frontier of the log as stored, of `size` leaves (one round trip on PostgreSQL).
    pub(crate) fn load<D: Dialect + ?Sized>(
        db: &mut D,
        size: u64,
    ) -> Result<Self, Failure<D::Error>> {
        let found = db.append_siblings(size)?;
        let mut nodes = Vec::with_capacity(size.count_ones() as usize);
        for level in (0..64u32).filter(|level| (size >> level) & 1 == 1) {
            let index = (size >> level) - 1;
            let hash = found.get(&(level, index)).ok_or_else(|| {
                StoreError::Corrupt(format!("Merkle tree: node ({level}, {index}) is missing"))
            })?;
            nodes.push((level, *hash));
        }
        Ok(Self { size, nodes })
    }

    /// The number of leaves it is the frontier of.
    #[cfg(feature = "sqlite")]
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf: the nodes to store, and the frontier moved one leaf on.
    fn append(&mut self, leaf: Hash) -> Result<Vec<(u32, u64, Hash)>, StoreError> {
        let nodes = merkle::append(self.size, leaf, &*self)
            .map_err(|e| StoreError::Corrupt(format!("Merkle tree: {e}")))?;
        // The levels below the first 0-bit of `size` merged into the new node at that level.
        let merged = self.size.trailing_ones();
        self.nodes.retain(|(level, _)| *level > merged);
        if let Some((level, _, hash)) = nodes.last() {
            self.nodes.push((*level, *hash));
        }
        self.nodes.sort_unstable_by_key(|(level, _)| *level);
        self.size += 1;
        Ok(nodes)
    }
}

impl NodeSource for Frontier {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        let on_edge = (self.size >> level) & 1 == 1 && (self.size >> level) - 1 == index;
        self.nodes
            .iter()
            .find(|(l, _)| on_edge && *l == level)
            .map(|(_, hash)| *hash)
            .ok_or(MerkleError::MissingNode { level, index })
    }
}

/// Whether every precondition of `commit` holds (reads only: nothing is written).
pub(crate) fn preconditions_hold<D: Dialect + ?Sized>(
    db: &mut D,
    commit: &Commit,
) -> Result<bool, Failure<D::Error>> {
    for precondition in commit.preconditions() {
        if !holds(db, precondition)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Applies the changes of `commit` (the caller has checked its preconditions).
pub(crate) fn apply_changes<D: Dialect + ?Sized>(
    db: &mut D,
    commit: &Commit,
) -> Result<(), Failure<D::Error>> {
    for change in commit.changes() {
        apply(db, change)?;
    }
    Ok(())
}

/// The records of `commit`, encoded but for their sequence numbers (no lock needed).
pub(crate) fn prepare_records(commit: &Commit) -> Result<Vec<PreparedEntry>, StoreError> {
    commit
        .records()
        .iter()
        .map(|record| {
            record
                .prepare()
                .map_err(|e| StoreError::Unavailable(format!("encoding: {e}")))
        })
        .collect()
}

/// Prepared entries placed at the sequence numbers from `first` on, checked to be UTF-8 (the
/// form both engines keep), before anything is written.
pub(crate) fn encode_records(
    prepared: &[PreparedEntry],
    first: u64,
) -> Result<Vec<String>, StoreError> {
    (first..)
        .zip(prepared)
        .map(|(seq, entry)| {
            String::from_utf8(entry.bytes(seq))
                .map_err(|_| StoreError::Unavailable("an audit entry is not UTF-8".into()))
        })
        .collect()
}

/// Appends encoded entries at the frontier's end, with the Merkle nodes they complete, moving
/// the frontier on.
pub(crate) fn append_records<D: Dialect + ?Sized>(
    db: &mut D,
    frontier: &mut Frontier,
    entries: &[String],
) -> Result<(), Failure<D::Error>> {
    for entry in entries {
        let seq = frontier.size;
        db.execute(
            "INSERT INTO audit (seq, entry) VALUES (?1, ?2)",
            &[Value::Int(signed(seq)), Value::Text(entry)],
        )?;
        let nodes = frontier.append(merkle::leaf_hash(entry.as_bytes()))?;
        insert_nodes(db, &nodes)?;
    }
    Ok(())
}

/// The frontier of the log as it stands in this transaction: `cached` when it is of the log's
/// current length (no writer appended since: the log only grows), else read from the store.
pub(crate) fn current_frontier<D: Dialect + ?Sized>(
    db: &mut D,
    cached: Option<Frontier>,
) -> Result<Frontier, Failure<D::Error>> {
    let size = read::audit_len(db)?;
    match cached {
        Some(frontier) if frontier.size == size => Ok(frontier),
        _ => Frontier::load(db, size),
    }
}

/// Applies one commit inside the transaction the store opened.
#[cfg(feature = "postgres")]
pub(crate) fn apply_commit<D: Dialect + ?Sized>(
    db: &mut D,
    commit: &Commit,
) -> Result<crate::store::CommitReceipt, Failure<D::Error>> {
    db.lock_for_commit()?;
    if !preconditions_hold(db, commit)? {
        return Err(Failure::Refused(StoreError::Conflict));
    }
    apply_changes(db, commit)?;
    let mut frontier = current_frontier(db, None)?;
    let first = frontier.size;
    let entries = encode_records(&prepare_records(commit)?, first)?;
    append_records(db, &mut frontier, &entries)?;
    Ok(crate::store::CommitReceipt {
        audit_seqs: first..frontier.size,
    })
}

/// Records a checkpoint inside the transaction the store opened.
pub(crate) fn record_checkpoint<D: Dialect + ?Sized>(
    db: &mut D,
    checkpoint: &StoredCheckpoint,
) -> Result<(), Failure<D::Error>> {
    db.lock_for_commit()?;
    if let Some(latest) = read::latest_checkpoint(db)?
        && latest.size > checkpoint.size
    {
        return Err(Failure::Refused(StoreError::Conflict));
    }
    db.execute(
        "INSERT INTO checkpoints (size, root, note) VALUES (?1, ?2, ?3) \
         ON CONFLICT (size) DO NOTHING",
        &[
            Value::Int(signed(checkpoint.size)),
            Value::Blob(&checkpoint.root),
            Value::Text(&checkpoint.note),
        ],
    )?;
    Ok(())
}

//! What the two SQL stores share: every statement, the reads, and the commit semantics, written
//! once over a small [`Dialect`] trait that each engine implements (SQLite through rusqlite,
//! PostgreSQL through the `postgres` client).
//!
//! The statements are written with `?N` placeholders (SQLite's), which the PostgreSQL dialect
//! rewrites to `$N` when it prepares them; values are bound from [`Value`]s, which each dialect
//! converts to the column types its schema declares. What differs between the engines is only
//! behind the trait: how a statement runs, how a row is read, how commits are serialised (the
//! PostgreSQL dialect takes an advisory lock), and how the Merkle siblings of an append are
//! fetched (one round trip on PostgreSQL). Schemas and migrations stay per engine.
//!
//! Everything here runs inside a transaction the store opened: a [`Failure::Refused`] outcome
//! (a failed precondition, a duplicate) and an engine error both make the store roll it back.

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::collections::HashMap;
use std::ops::Range;

use time::{Date, OffsetDateTime};

use super::{
    Change, Commit, CommitReceipt, HolderRecord, KeyUse, Precondition, PublishedKey, RecordKind,
    StoreError, StoredCheckpoint, StoredEntry,
};
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::keys::Ed25519PublicKey;
use crate::merkle::{self, Hash, MerkleError, NodeSource};
use crate::policy::{PlatformProfile, Usage};

/// One step of a SQL store's schema history.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version the database has after this step.
    pub version: i64,
    /// The SQL that takes it there from the previous version.
    pub sql: &'static str,
}

/// A value bound to a statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    /// An integer (a dialect narrows it to the column's width, or refuses).
    Int(i64),
    /// An integer or SQL `NULL`.
    OptionalInt(Option<i64>),
    /// Text. The audit entry column is `BYTEA` on PostgreSQL: that dialect binds its bytes.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

/// A result row.
pub(crate) trait Row {
    /// An integer column, `None` for `NULL`.
    fn int(&self, column: usize) -> Result<Option<i64>, StoreError>;
    /// A text or binary column, as bytes.
    fn bytes(&self, column: usize) -> Result<Vec<u8>, StoreError>;
}

/// Why a statement inside a commit did not complete.
#[derive(Debug)]
pub(crate) enum Failure<E> {
    /// The store's own answer: a failed precondition, a duplicate, a damaged row.
    Refused(StoreError),
    /// The engine's error, for the store to map (and, on PostgreSQL, perhaps retry).
    Engine(E),
}

impl<E> From<StoreError> for Failure<E> {
    fn from(error: StoreError) -> Self {
        Self::Refused(error)
    }
}

/// Merkle nodes by `(level, index)`.
pub(crate) type Nodes = HashMap<(u32, u64), Hash>;

/// What an engine provides: statements, rows, and the two things engines do differently.
pub(crate) trait Dialect {
    /// The engine's error.
    type Error;

    /// Runs a statement; the number of rows it changed.
    fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<u64, Failure<Self::Error>>;

    /// Runs a query, handing each row to `each` in order.
    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), Failure<Self::Error>>;

    /// Called first in every commit's transaction: serialises commits where the engine's own
    /// locking does not (SQLite's `BEGIN IMMEDIATE` already has).
    fn lock_for_commit(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The stored Merkle nodes that appending leaf `size` combines with: node
    /// `(level, (size >> level) - 1)` for every level where `size` has a 1 bit. By default one
    /// query per node (cheap on an embedded engine).
    fn append_siblings(&mut self, size: u64) -> Result<Nodes, Failure<Self::Error>> {
        let mut found = HashMap::new();
        for level in (0..64u32).filter(|level| (size >> level) & 1 == 1) {
            let index = (size >> level) - 1;
            if let Some(hash) = node(self, level, index)? {
                found.insert((level, index), hash);
            }
        }
        Ok(found)
    }
}

// ---- decoding ----------------------------------------------------------------------------------

/// A count, size or index as the SQL stores keep it (saturating: no index reaches `i64::MAX`).
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} {value} is negative")))
}

fn required(what: &str, value: Option<i64>) -> Result<i64, StoreError> {
    value.ok_or_else(|| StoreError::Corrupt(format!("{what} is NULL")))
}

fn hash(what: &str, bytes: &[u8]) -> Result<Hash, StoreError> {
    Hash::try_from(bytes).map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
}

fn text(what: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes).map_err(|_| StoreError::Corrupt(format!("{what} is not UTF-8")))
}

fn time(what: &str, seconds: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| StoreError::Corrupt(format!("{what} {seconds} is out of range")))
}

fn corrupt(what: String) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

fn day_key(day: Date) -> String {
    day.to_string()
}

// ---- queries -----------------------------------------------------------------------------------

fn rows<D: Dialect + ?Sized, T>(
    db: &mut D,
    sql: &'static str,
    params: &[Value<'_>],
    mut decode: impl FnMut(&dyn Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, Failure<D::Error>> {
    let mut found = Vec::new();
    db.query(sql, params, &mut |row| {
        found.push(decode(row)?);
        Ok(())
    })?;
    Ok(found)
}

fn one<D: Dialect + ?Sized, T>(
    db: &mut D,
    sql: &'static str,
    params: &[Value<'_>],
    decode: impl FnMut(&dyn Row) -> Result<T, StoreError>,
) -> Result<Option<T>, Failure<D::Error>> {
    Ok(rows(db, sql, params, decode)?.into_iter().next())
}

fn record<D: Dialect + ?Sized>(
    db: &mut D,
    sql: &'static str,
    key: &str,
) -> Result<Option<Vec<u8>>, Failure<D::Error>> {
    one(db, sql, &[Value::Text(key)], |row| row.bytes(0))
}

fn node<D: Dialect + ?Sized>(
    db: &mut D,
    level: u32,
    index: u64,
) -> Result<Option<Hash>, Failure<D::Error>> {
    one(
        db,
        "SELECT hash FROM merkle_nodes WHERE level = ?1 AND idx = ?2",
        &[Value::Int(i64::from(level)), Value::Int(signed(index))],
        |row| hash(&format!("Merkle node ({level}, {index})"), &row.bytes(0)?),
    )
}

/// The reads of [`StateRead`](super::StateRead) and [`LogRead`](super::LogRead), for any dialect.
pub(crate) mod read {
    use super::*;

    pub(crate) fn holder<D: Dialect + ?Sized>(
        db: &mut D,
        id: &HolderId,
    ) -> Result<Option<HolderRecord>, Failure<D::Error>> {
        let Some(json) = record(db, "SELECT record FROM holders WHERE id = ?1", id.as_str())?
        else {
            return Ok(None);
        };
        Ok(Some(
            HolderRecord::from_stored(&json).map_err(corrupt(format!("holder {id}")))?,
        ))
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
        Ok(Some(
            serde_json::from_slice(&json).map_err(corrupt(format!("platform {id}")))?,
        ))
    }

    pub(crate) fn consent<D: Dialect + ?Sized>(
        db: &mut D,
        id: &ConsentId,
    ) -> Result<Option<Consent>, Failure<D::Error>> {
        let Some(json) = record(db, "SELECT record FROM consents WHERE id = ?1", id.as_str())?
        else {
            return Ok(None);
        };
        Ok(Some(
            Consent::from_stored(&json).map_err(corrupt(format!("consent {id}")))?,
        ))
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
        )?
        .unwrap_or(0);
        let unattended_today = u32::try_from(unattended)
            .map_err(|_| StoreError::Corrupt(format!("usage of {consent} out of range")))?;
        Ok(Usage { unattended_today })
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
        rows(
            db,
            "SELECT idx, hash FROM merkle_nodes WHERE level = ?1 AND idx >= ?2 AND idx < ?3 \
             ORDER BY idx",
            &[
                Value::Int(i64::from(level)),
                Value::Int(signed(range.start)),
                Value::Int(signed(range.end)),
            ],
            |row| {
                let index = unsigned(
                    "Merkle node index",
                    required("Merkle node index", row.int(0)?)?,
                )?;
                Ok((
                    index,
                    hash(&format!("Merkle node ({level}, {index})"), &row.bytes(1)?)?,
                ))
            },
        )
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
}

// ---- writes ------------------------------------------------------------------------------------

fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable(format!("encoding: {e}")))
}

fn engine<E>(error: E) -> Failure<E> {
    Failure::Engine(error)
}

/// Inserts a row unless its key exists; a duplicate is reported as such.
fn insert_new<D: Dialect + ?Sized>(
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
struct Versioned {
    update: &'static str,
    exists: &'static str,
    kind: RecordKind,
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
fn update_versioned<D: Dialect + ?Sized>(
    db: &mut D,
    table: &Versioned,
    id: &str,
    version: u64,
    record: &str,
) -> Result<(), Failure<D::Error>> {
    let previous = signed(version.saturating_sub(1));
    let params = [
        Value::Int(signed(version)),
        Value::Text(record),
        Value::Text(id),
        Value::Int(previous),
    ];
    if db.execute(table.update, &params)? == 1 {
        return Ok(());
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

fn stored_version<D: Dialect + ?Sized>(
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
        } => stored_version(db, CONSENTS.exists, consent.as_str())? == Some(signed(*version)),
        Precondition::HolderVersion {
            holder, version, ..
        } => stored_version(db, HOLDERS.exists, holder.as_str())? == Some(signed(*version)),
        Precondition::UsageIs {
            consent,
            day,
            usage,
            ..
        } => read::usage(db, consent, *day)? == *usage,
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
            "INSERT INTO consents (id, subject, version, record) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
            &[
                Value::Text(consent.id().as_str()),
                Value::Text(consent.request.subject.as_str()),
                Value::Int(signed(consent.version)),
                Value::Text(&json(consent)?),
            ],
            RecordKind::Consent,
            consent.id().as_str(),
        ),
        Change::UpdateConsent { consent, .. } => update_versioned(
            db,
            &CONSENTS,
            consent.id().as_str(),
            consent.version,
            &json(consent)?,
        ),
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
            // One active key per use: another broker activated one first.
            let active = one(
                db,
                "SELECT kid FROM published_keys WHERE key_use = ?1 AND retired_at IS NULL",
                &[Value::Text(key.key_use.as_str())],
                |_| Ok(()),
            )?;
            if active.is_some() {
                return Err(Failure::Refused(StoreError::Conflict));
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
    }
}

/// The Merkle nodes as seen inside the commit's transaction: the siblings fetched for the
/// append first, then one query per node should the append need any other.
struct TxNodes<'a, D: ?Sized> {
    db: std::cell::RefCell<&'a mut D>,
    prefetched: Nodes,
}

impl<D: Dialect + ?Sized> NodeSource for TxNodes<'_, D> {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        if let Some(hash) = self.prefetched.get(&(level, index)) {
            return Ok(*hash);
        }
        let mut db = self.db.borrow_mut();
        match node(&mut **db, level, index) {
            Ok(Some(hash)) => Ok(hash),
            Ok(None) => Err(MerkleError::MissingNode { level, index }),
            Err(Failure::Refused(error)) => Err(MerkleError::Source(error.to_string())),
            Err(Failure::Engine(_)) => Err(MerkleError::Source("the engine failed".into())),
        }
    }
}

/// Writes one entry's bytes and the Merkle nodes its leaf completes.
pub(crate) fn append_entry<D: Dialect + ?Sized>(
    db: &mut D,
    seq: u64,
    bytes: &[u8],
) -> Result<(), Failure<D::Error>> {
    // Entries are UTF-8 JSON; SQLite keeps them as TEXT, PostgreSQL as BYTEA (the dialect binds
    // the bytes), both verbatim.
    let entry = std::str::from_utf8(bytes)
        .map_err(|_| StoreError::Unavailable("an audit entry is not UTF-8".into()))?;
    db.execute(
        "INSERT INTO audit (seq, entry) VALUES (?1, ?2)",
        &[Value::Int(signed(seq)), Value::Text(entry)],
    )?;
    append_leaf(db, seq, merkle::leaf_hash(bytes))
}

/// Writes the Merkle nodes that leaf `size` completes.
pub(crate) fn append_leaf<D: Dialect + ?Sized>(
    db: &mut D,
    size: u64,
    leaf: Hash,
) -> Result<(), Failure<D::Error>> {
    let prefetched = db.append_siblings(size)?;
    let nodes = {
        let source = TxNodes {
            db: std::cell::RefCell::new(&mut *db),
            prefetched,
        };
        merkle::append(size, leaf, &source)
            .map_err(|e| StoreError::Corrupt(format!("Merkle tree: {e}")))?
    };
    for (level, index, hash) in nodes {
        db.execute(
            "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)",
            &[
                Value::Int(i64::from(level)),
                Value::Int(signed(index)),
                Value::Blob(&hash),
            ],
        )?;
    }
    Ok(())
}

/// Applies one commit inside the transaction the store opened.
pub(crate) fn apply_commit<D: Dialect + ?Sized>(
    db: &mut D,
    commit: &Commit,
) -> Result<CommitReceipt, Failure<D::Error>> {
    db.lock_for_commit().map_err(engine)?;
    for precondition in commit.preconditions() {
        if !holds(db, precondition)? {
            return Err(Failure::Refused(StoreError::Conflict));
        }
    }
    for change in commit.changes() {
        apply(db, change)?;
    }
    let first = read::audit_len(db)?;
    let mut next = first;
    for record in commit.records() {
        let bytes = record
            .entry_bytes(next)
            .map_err(|e| StoreError::Unavailable(format!("encoding: {e}")))?;
        append_entry(db, next, &bytes)?;
        next += 1;
    }
    Ok(CommitReceipt {
        audit_seqs: first..next,
    })
}

/// Records a checkpoint inside the transaction the store opened.
pub(crate) fn record_checkpoint<D: Dialect + ?Sized>(
    db: &mut D,
    checkpoint: &StoredCheckpoint,
) -> Result<(), Failure<D::Error>> {
    db.lock_for_commit().map_err(engine)?;
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

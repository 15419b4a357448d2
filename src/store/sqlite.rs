//! The SQLite store: embedded, durable, the default.
//!
//! SQLite is compiled in (rusqlite's `bundled` feature), so no system library is needed. The
//! database runs in WAL mode with `synchronous=FULL`: a commit that returned has reached the
//! disk, and survives `kill -9` and power loss. Tables are `STRICT`, foreign keys are enforced,
//! and triggers refuse any `UPDATE` or `DELETE` of audit rows and any audit row that would leave
//! a gap in the sequence. A [`Commit`] is one `BEGIN IMMEDIATE` transaction: preconditions are
//! read and changes written under the database's write lock, with the audit rows, or nothing is.
//!
//! # Several brokers on one file
//!
//! Any number of [`SqliteStore`]s, in one process or several, may open the same file on a local
//! file system. Writers are serialised by SQLite's lock (a writer waits up to the busy timeout,
//! 5 s by default, then gets [`StoreError::Busy`]); because preconditions are checked inside the
//! write transaction, a decision taken on stale state is refused as [`StoreError::Conflict`] and
//! re-decided by the broker, never committed; and the audit sequence stays gap-free (enforced by
//! a trigger as well). WAL needs shared memory between processes, so network file systems are not
//! supported.
//!
//! # Schema versions
//!
//! The schema version is SQLite's `user_version`. Opening a database of an older version applies
//! the missing [`MIGRATIONS`] in one transaction; a newer version is refused with
//! [`StoreError::SchemaTooNew`]; a SQLite file with tables of its own but no version is refused as
//! [`StoreError::NotADatabase`].

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration as StdDuration;

use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::Date;

use super::{
    Change, Commit, CommitReceipt, HolderRecord, Precondition, PublishedKey, RecordKind, Store,
    StoreError, StoredCheckpoint, StoredEntry, rows,
};
use crate::audit::AuditEntry;
use crate::audit::merkle::{self, Hash, MerkleError, NodeSource};
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::policy::{PlatformProfile, Usage};

/// One step of the schema's history.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version the database has after this step.
    pub version: i64,
    /// The SQL that takes it there from the previous version.
    pub sql: &'static str,
}

/// The schema's history, oldest first. The last version is [`SCHEMA_VERSION`].
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: "
            PRAGMA application_id = 1128419947;
            CREATE TABLE holders (
                id TEXT PRIMARY KEY, version INTEGER NOT NULL, record TEXT NOT NULL
            ) STRICT;
            CREATE TABLE platforms (id TEXT PRIMARY KEY, record TEXT NOT NULL) STRICT;
            CREATE TABLE consents (
                position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, subject TEXT NOT NULL,
                version INTEGER NOT NULL, record TEXT NOT NULL
            ) STRICT;
            CREATE INDEX consents_by_subject ON consents (subject);
            CREATE TABLE usage (
                consent TEXT NOT NULL REFERENCES consents (id), day TEXT NOT NULL,
                unattended INTEGER NOT NULL, PRIMARY KEY (consent, day)
            ) STRICT;
            CREATE TABLE attestations (id TEXT PRIMARY KEY) STRICT;
            CREATE TABLE audit (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL) STRICT;
            CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
            CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
        ",
    },
    Migration {
        version: 2,
        sql: "
            CREATE TABLE signing_keys (
                kid TEXT PRIMARY KEY, public_key TEXT NOT NULL, activated_at INTEGER NOT NULL
            ) STRICT;
            CREATE TRIGGER audit_gap_free BEFORE INSERT ON audit
                WHEN NEW.seq IS NOT (SELECT COALESCE(MAX(seq) + 1, 0) FROM audit)
                BEGIN SELECT RAISE(ABORT, 'the audit sequence must stay gap-free'); END;
        ",
    },
    Migration {
        version: 3,
        // The Merkle tree's complete subtrees, and the checkpoints signed over them. Existing
        // audit rows get their nodes computed from their stored bytes by the migration.
        sql: "
            CREATE TABLE merkle_nodes (
                level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
                PRIMARY KEY (level, idx)
            ) STRICT, WITHOUT ROWID;
            CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
                BEGIN SELECT RAISE(ABORT, 'Merkle nodes are append-only'); END;
            CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
                BEGIN SELECT RAISE(ABORT, 'Merkle nodes are append-only'); END;
            CREATE TABLE checkpoints (
                size INTEGER PRIMARY KEY, root BLOB NOT NULL, note TEXT NOT NULL
            ) STRICT;
        ",
    },
];

/// SQLite `application_id` of a consent-broker database (`0x4342_526B`, "CBRk"), written by the
/// first migration. A file with another application id is refused as not ours.
pub const APPLICATION_ID: i32 = 0x4342_526B;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 3;

/// How long a writer waits for another writer's lock by default.
pub const DEFAULT_BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(5);

/// A [`Store`] in a SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    connection: Mutex<Connection>,
    path: PathBuf,
}

/// Maps an engine error to a store error that says what the caller can do.
fn store_error(path: &Path, error: rusqlite::Error) -> StoreError {
    let detail = error.to_string();
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path: path.display().to_string(),
            detail,
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt(detail),
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(detail),
        Some(ErrorCode::DiskFull) => StoreError::Full(detail),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(detail),
        Some(ErrorCode::CannotOpen) => {
            StoreError::Unavailable(format!("cannot open {}: {detail}", path.display()))
        }
        _ => StoreError::Unavailable(detail),
    }
}

fn day_key(day: Date) -> String {
    day.to_string()
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, checks its integrity, and brings its
    /// schema up to [`SCHEMA_VERSION`].
    ///
    /// # Errors
    /// [`StoreError::NotADatabase`] for a file that is not SQLite or not ours,
    /// [`StoreError::Corrupt`] for a damaged one, [`StoreError::SchemaTooNew`],
    /// [`StoreError::ReadOnly`] / [`StoreError::Unavailable`] when it cannot be created or
    /// written, [`StoreError::Busy`] when another process holds the lock too long.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let fail = |e| store_error(&path, e);
        let connection = Connection::open(&path).map_err(fail)?;
        connection
            .busy_timeout(DEFAULT_BUSY_TIMEOUT)
            .map_err(fail)?;
        // Decide whether the file is ours before writing anything to it. Reading the header is
        // the first access: a file that is not SQLite fails here with SQLITE_NOTADB.
        let application_id: i32 = connection
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .map_err(fail)?;
        let tables: i64 = connection
            .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(fail)?;
        let fresh = application_id == 0 && tables == 0;
        if application_id != APPLICATION_ID && !fresh {
            return Err(StoreError::NotADatabase {
                path: path.display().to_string(),
                detail: format!(
                    "a SQLite database of another application (application_id {application_id:#x}, \
                     {tables} schema objects)"
                ),
            });
        }
        let check: String = connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(fail)?;
        if check != "ok" {
            return Err(StoreError::Corrupt(check));
        }
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "{} cannot use write-ahead logging (journal mode {mode})",
                path.display()
            )));
        }
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(fail)?;
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(fail)?;
        // Reads (whole-log verification above all) go through memory-mapped pages, up to
        // 256 MiB, instead of copying every page through read(2).
        connection
            .pragma_update(None, "mmap_size", 256 * 1024 * 1024)
            .map_err(fail)?;
        let store = Self {
            connection: Mutex::new(connection),
            path,
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be read.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let connection = self.lock();
        connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| store_error(&self.path, e))
    }

    /// Caps the database at `max_bytes` (rounded down to whole pages, never below its current
    /// size): a commit that would grow it further fails with [`StoreError::Full`] and leaves
    /// nothing behind. A quota for this connection, and the way to test full-disk behaviour
    /// without filling a disk.
    ///
    /// # Errors
    /// [`StoreError`] when the limit cannot be set.
    pub fn limit_size(&self, max_bytes: u64) -> Result<(), StoreError> {
        let connection = self.lock();
        let fail = |e| store_error(&self.path, e);
        let page_size: i64 = connection
            .pragma_query_value(None, "page_size", |row| row.get(0))
            .map_err(fail)?;
        // SQLite reads `max_page_count = 0` as a query, not a limit, and never lowers the limit
        // below the current size: ask for at least one page and let SQLite clamp.
        let pages = (i64::try_from(max_bytes).unwrap_or(i64::MAX) / page_size.max(1)).max(1);
        connection
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(fail)?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open: the transaction guard
        // rolls back on unwind. The connection is therefore still usable.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.lock();
        let fail = |e| store_error(&self.path, e);
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(fail)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == 0 {
            let tables: i64 = tx
                .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))
                .map_err(fail)?;
            if tables > 0 {
                return Err(StoreError::NotADatabase {
                    path: self.path.display().to_string(),
                    detail: "a SQLite database with tables of its own and no consent-broker \
                             schema version"
                        .into(),
                });
            }
        }
        for migration in MIGRATIONS.iter().filter(|m| m.version > version) {
            tx.execute_batch(migration.sql).map_err(fail)?;
            if migration.version == 3 {
                backfill_merkle_nodes(&tx).map_err(|e| commit_error(&self.path, e))?;
            }
            tx.pragma_update(None, "user_version", migration.version)
                .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    fn read_json<T: DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let connection = self.lock();
        let fail = |e| store_error(&self.path, e);
        let json: Option<String> = connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.query_row([key], |row| row.get(0)).optional())
            .map_err(fail)?;
        json.map(|json| rows::json(&format!("{what} {key}"), &json))
            .transpose()
    }
}

/// Applies one commit inside its transaction.
fn apply_commit(tx: &Transaction<'_>, commit: Commit) -> Result<CommitReceipt, rusqlite::Error> {
    for precondition in &commit.preconditions {
        if !holds(tx, precondition)? {
            return Err(conflict());
        }
    }
    for change in commit.changes {
        apply(tx, change)?;
    }
    let first: i64 = tx.query_row("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit", [], |row| {
        row.get(0)
    })?;
    let mut next = first;
    for record in commit.audit {
        let seq = u64::try_from(next)
            .map_err(|_| refused(StoreError::Corrupt("negative audit sequence".into())))?;
        let bytes = AuditEntry { seq, record }
            .to_bytes()
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        append_entry(tx, seq, &bytes)?;
        next += 1;
    }
    let start = u64::try_from(first).unwrap_or_default();
    let end = u64::try_from(next).unwrap_or_default();
    Ok(CommitReceipt {
        audit_seqs: start..end,
    })
}

/// Writes one entry's bytes and the Merkle nodes its leaf completes.
fn append_entry(tx: &Transaction<'_>, seq: u64, bytes: &[u8]) -> Result<(), rusqlite::Error> {
    // The entry column is TEXT: the bytes are the UTF-8 JSON text, stored and returned verbatim.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached("INSERT INTO audit (seq, entry) VALUES (?1, ?2)")?
        .execute(params![rows::signed(seq), text])?;
    append_leaf(tx, seq, merkle::leaf_hash(bytes))
}

fn append_leaf(tx: &Transaction<'_>, size: u64, leaf: Hash) -> Result<(), rusqlite::Error> {
    let nodes = merkle::append(size, leaf, &TxNodes(tx))
        .map_err(|e| refused(StoreError::Corrupt(format!("Merkle tree: {e}"))))?;
    let mut insert =
        tx.prepare_cached("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")?;
    for (level, index, hash) in nodes {
        insert.execute(params![level, rows::signed(index), &hash[..]])?;
    }
    Ok(())
}

/// Computes the Merkle nodes of audit rows written before schema version 3.
fn backfill_merkle_nodes(tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
    let rows: Vec<(i64, String)> = tx
        .prepare("SELECT seq, entry FROM audit ORDER BY seq")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (expected, (seq, entry)) in (0u64..).zip(rows) {
        if rows::signed(expected) != seq {
            return Err(refused(StoreError::Corrupt(format!(
                "audit sequence broken at {seq}"
            ))));
        }
        append_leaf(tx, expected, merkle::leaf_hash(entry.as_bytes()))?;
    }
    Ok(())
}

/// The Merkle nodes as seen inside a write transaction.
struct TxNodes<'a, 'b>(&'a Transaction<'b>);

impl NodeSource for TxNodes<'_, '_> {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        read_node(self.0, level, index)
            .map_err(|e| MerkleError::Source(e.to_string()))?
            .ok_or(MerkleError::MissingNode { level, index })
    }
}

fn read_node(
    connection: &Connection,
    level: u32,
    index: u64,
) -> Result<Option<Hash>, rusqlite::Error> {
    let blob: Option<Vec<u8>> = connection
        .prepare_cached("SELECT hash FROM merkle_nodes WHERE level = ?1 AND idx = ?2")?
        .query_row(params![level, rows::signed(index)], |row| row.get(0))
        .optional()?;
    blob.map(|bytes| {
        Hash::try_from(bytes.as_slice()).map_err(|_| {
            refused(StoreError::Corrupt(format!(
                "Merkle node ({level}, {index}) is not 32 bytes"
            )))
        })
    })
    .transpose()
}

/// A store-level outcome smuggled through rusqlite's error type, so that `?` works inside the
/// transaction; unwrapped again by [`SqliteStore::commit`].
#[derive(Debug)]
struct Refused(StoreError);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Refused {}

/// Unwraps a [`Refused`] outcome, or maps an engine error.
fn commit_error(path: &Path, error: rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::ToSqlConversionFailure(inner) => match inner.downcast::<Refused>() {
            Ok(refused) => refused.0,
            Err(other) => StoreError::Unavailable(format!("encoding: {other}")),
        },
        other => store_error(path, other),
    }
}

fn refused(error: StoreError) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(Refused(error)))
}

fn conflict() -> rusqlite::Error {
    refused(StoreError::Conflict)
}

fn holds(tx: &Transaction<'_>, precondition: &Precondition) -> Result<bool, rusqlite::Error> {
    match precondition {
        Precondition::ConsentVersion { consent, version } => {
            let stored: Option<i64> = tx
                .prepare_cached("SELECT version FROM consents WHERE id = ?1")?
                .query_row([consent.as_str()], |row| row.get(0))
                .optional()?;
            Ok(stored == i64::try_from(*version).ok())
        }
        Precondition::HolderVersion { holder, version } => {
            let stored: Option<i64> = tx
                .prepare_cached("SELECT version FROM holders WHERE id = ?1")?
                .query_row([holder.as_str()], |row| row.get(0))
                .optional()?;
            Ok(stored == i64::try_from(*version).ok())
        }
        Precondition::UsageIs {
            consent,
            day,
            usage,
        } => {
            let stored: Option<i64> = tx
                .prepare_cached("SELECT unattended FROM usage WHERE consent = ?1 AND day = ?2")?
                .query_row(params![consent.as_str(), day_key(*day)], |row| row.get(0))
                .optional()?;
            Ok(stored.unwrap_or(0) == i64::from(usage.unattended_today))
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Result<String, rusqlite::Error> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Inserts a row unless its key exists; a duplicate is reported as such.
fn insert_new(
    tx: &Transaction<'_>,
    sql: &str,
    values: &[&dyn rusqlite::ToSql],
    kind: RecordKind,
    id: &str,
) -> Result<(), rusqlite::Error> {
    if tx.prepare_cached(sql)?.execute(values)? == 0 {
        return Err(refused(StoreError::Duplicate {
            kind,
            id: id.to_owned(),
        }));
    }
    Ok(())
}

/// Replaces a versioned row whose stored version is one less than the new one.
fn update_versioned(
    tx: &Transaction<'_>,
    table: &str,
    id: &str,
    version: u64,
    record: &str,
    kind: RecordKind,
) -> Result<(), rusqlite::Error> {
    let sql =
        format!("UPDATE {table} SET version = ?1, record = ?2 WHERE id = ?3 AND version = ?4");
    let previous = rows::signed(version.saturating_sub(1));
    let changed =
        tx.prepare_cached(&sql)?
            .execute(params![rows::signed(version), record, id, previous])?;
    if changed == 1 {
        return Ok(());
    }
    let exists: Option<i64> = tx
        .prepare_cached(&format!("SELECT 1 FROM {table} WHERE id = ?1"))?
        .query_row([id], |row| row.get(0))
        .optional()?;
    Err(match exists {
        Some(_) => conflict(),
        None => refused(StoreError::Missing {
            kind,
            id: id.to_owned(),
        }),
    })
}

fn apply(tx: &Transaction<'_>, change: Change) -> Result<(), rusqlite::Error> {
    match change {
        Change::InsertHolder(record) => insert_new(
            tx,
            "INSERT INTO holders (id, version, record) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            &[
                &record.id.as_str(),
                &rows::signed(record.version),
                &encode(&record)?,
            ],
            RecordKind::Holder,
            record.id.as_str(),
        ),
        Change::UpdateHolder(record) => update_versioned(
            tx,
            "holders",
            record.id.as_str(),
            record.version,
            &encode(&record)?,
            RecordKind::Holder,
        ),
        Change::InsertPlatform(profile) => insert_new(
            tx,
            "INSERT INTO platforms (id, record) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            &[&profile.id.as_str(), &encode(&profile)?],
            RecordKind::Platform,
            profile.id.as_str(),
        ),
        Change::InsertConsent(consent) => insert_new(
            tx,
            "INSERT INTO consents (id, subject, version, record) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING",
            &[
                &consent.id().as_str(),
                &consent.request.subject.as_str(),
                &rows::signed(consent.version),
                &encode(&consent)?,
            ],
            RecordKind::Consent,
            consent.id().as_str(),
        ),
        Change::UpdateConsent(consent) => update_versioned(
            tx,
            "consents",
            consent.id().as_str(),
            consent.version,
            &encode(&consent)?,
            RecordKind::Consent,
        ),
        Change::CountUnattendedAccess { consent, day } => {
            tx.prepare_cached(
                "INSERT INTO usage (consent, day, unattended) VALUES (?1, ?2, 1) \
                 ON CONFLICT (consent, day) DO UPDATE SET unattended = unattended + 1",
            )?
            .execute(params![consent.as_str(), day_key(day)])?;
            Ok(())
        }
        Change::UseAttestation(id) => insert_new(
            tx,
            "INSERT INTO attestations (id) VALUES (?1) ON CONFLICT DO NOTHING",
            &[&id.as_str()],
            RecordKind::Attestation,
            &id,
        ),
        Change::RecordCheckpoint(checkpoint) => {
            let latest: Option<i64> =
                tx.query_row("SELECT MAX(size) FROM checkpoints", [], |row| row.get(0))?;
            if latest.is_some_and(|latest| latest > rows::signed(checkpoint.size)) {
                return Err(conflict());
            }
            tx.prepare_cached(
                "INSERT INTO checkpoints (size, root, note) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (size) DO NOTHING",
            )?
            .execute(params![
                rows::signed(checkpoint.size),
                &checkpoint.root[..],
                checkpoint.note
            ])?;
            Ok(())
        }
        Change::PublishSigningKey(key) => insert_new(
            tx,
            "INSERT INTO signing_keys (kid, public_key, activated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
            &[
                &key.kid.as_str(),
                &key.public_key.to_base64url(),
                &key.activated_at.unix_timestamp(),
            ],
            RecordKind::SigningKey,
            &key.kid,
        ),
    }
}

impl Store for SqliteStore {
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
        self.read_json(
            "holder",
            "SELECT record FROM holders WHERE id = ?1",
            id.as_str(),
        )
    }

    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
        self.read_json(
            "platform",
            "SELECT record FROM platforms WHERE id = ?1",
            id.as_str(),
        )
    }

    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
        self.read_json(
            "consent",
            "SELECT record FROM consents WHERE id = ?1",
            id.as_str(),
        )
    }

    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        let connection = self.lock();
        let fail = |e| store_error(&self.path, e);
        let rows: Vec<String> = connection
            .prepare_cached("SELECT record FROM consents WHERE subject = ?1 ORDER BY position")
            .and_then(|mut statement| {
                statement
                    .query_map([subject.as_str()], |row| row.get(0))?
                    .collect()
            })
            .map_err(fail)?;
        rows.iter()
            .map(|json| rows::json("consent", json))
            .collect()
    }

    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
        let connection = self.lock();
        let unattended: Option<i64> = connection
            .prepare_cached("SELECT unattended FROM usage WHERE consent = ?1 AND day = ?2")
            .and_then(|mut statement| {
                statement
                    .query_row(params![consent.as_str(), day_key(day)], |row| row.get(0))
                    .optional()
            })
            .map_err(|e| store_error(&self.path, e))?;
        let unattended_today = u32::try_from(unattended.unwrap_or(0))
            .map_err(|_| StoreError::Corrupt(format!("usage of {consent} out of range")))?;
        Ok(Usage { unattended_today })
    }

    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
        let connection = self.lock();
        connection
            .prepare_cached("SELECT 1 FROM attestations WHERE id = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row([attestation_id], |row| row.get::<_, i64>(0))
                    .optional()
            })
            .map(|found| found.is_some())
            .map_err(|e| store_error(&self.path, e))
    }

    fn audit_len(&self) -> Result<u64, StoreError> {
        let connection = self.lock();
        let next: i64 = connection
            .query_row("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit", [], |row| {
                row.get(0)
            })
            .map_err(|e| store_error(&self.path, e))?;
        rows::unsigned("audit length", next)
    }

    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
        let connection = self.lock();
        // The raw bytes, whatever they are: a verifier must see bytes that are no longer valid
        // UTF-8 too, and hash them, to name the altered entry.
        let rows: Vec<(i64, Vec<u8>)> = connection
            .prepare_cached(
                "SELECT seq, entry FROM audit WHERE seq >= ?1 AND seq < ?2 ORDER BY seq",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(
                        params![rows::signed(range.start), rows::signed(range.end)],
                        |row| {
                            let bytes = row.get_ref(1)?.as_bytes()?.to_vec();
                            Ok((row.get(0)?, bytes))
                        },
                    )?
                    .collect()
            })
            .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(|(seq, bytes)| {
                Ok(StoredEntry {
                    seq: rows::unsigned("audit sequence", seq)?,
                    bytes,
                })
            })
            .collect()
    }

    fn merkle_nodes(&self, level: u32, range: Range<u64>) -> Result<Vec<(u64, Hash)>, StoreError> {
        let connection = self.lock();
        let rows: Vec<(i64, Vec<u8>)> = connection
            .prepare_cached(
                "SELECT idx, hash FROM merkle_nodes WHERE level = ?1 AND idx >= ?2 AND idx < ?3 \
                 ORDER BY idx",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(
                        params![level, rows::signed(range.start), rows::signed(range.end)],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )?
                    .collect()
            })
            .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(|(index, hash)| rows::node(level, index, &hash))
            .collect()
    }

    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        let connection = self.lock();
        read_node(&connection, level, index).map_err(|e| commit_error(&self.path, e))
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        let connection = self.lock();
        let row: Option<(i64, Vec<u8>, String)> = connection
            .query_row(
                "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(|e| store_error(&self.path, e))?;
        row.map(|(size, root, note)| rows::checkpoint(size, &root, note))
            .transpose()
    }

    fn signing_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        let connection = self.lock();
        let rows: Vec<(String, String, i64)> = connection
            .prepare_cached(
                "SELECT kid, public_key, activated_at FROM signing_keys ORDER BY activated_at, rowid",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .map_err(|e| store_error(&self.path, e))?;
        rows.into_iter()
            .map(|(kid, x, activated)| rows::published_key(kid, &x, activated))
            .collect()
    }

    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
        let mut connection = self.lock();
        let fail = |error| commit_error(&self.path, error);
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        // Dropping `tx` on any error rolls the whole commit back.
        let receipt = apply_commit(&tx, commit).map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(receipt)
    }
}

//! The SQLite store: embedded, durable, the default.
//!
//! SQLite is compiled in (rusqlite's `bundled` feature), so no system library is needed. The
//! database runs in WAL mode with `synchronous=FULL`: a commit that returned has reached the
//! disk, and survives `kill -9` and power loss. Tables are `STRICT`, foreign keys are enforced,
//! and triggers refuse any `UPDATE` or `DELETE` of audit rows and any audit row that would leave
//! a gap in the sequence. A [`Commit`] is applied inside a `BEGIN IMMEDIATE` transaction:
//! preconditions are read and changes written under the database's write lock, with the audit
//! rows, or nothing is.
//!
//! # Group commit
//!
//! Commits that arrive while another is being written wait, and are then written together: one
//! transaction, one fsync (a commit whose preconditions fail, or whose insert is a duplicate, is
//! undone alone and answered with its refusal; the others land: see `SqliteStore::write_batch`
//! for how, with one savepoint around a batch rather than one per commit). No caller is
//! answered before the `COMMIT` that covers its commit has returned, so an answered commit is on
//! disk. A caller alone is written at once, with no savepoint, as before; under load, a
//! transaction carries as many commits as arrived during the previous one's fsync. A full disk
//! ends the transaction, and each commit of the batch is then tried alone; any other engine
//! failure that ends it (an I/O error) is every commit's answer in that batch, and none of them
//! is in the file. A failed `COMMIT` is every
//! commit's answer too; after an I/O error there, as with any database, whether it reached the
//! disk is unknown, and the answer says so ([`StoreError::OutcomeUnknown`]): the decision was
//! not served, and one tried again is decided again on what the store then holds.
//! [`SqliteStore::commit_stats`] counts commits and transactions. The store keeps the Merkle
//! tree's right edge between transactions (checked against the log's length in each one, so a
//! write by another process is noticed), so appending reads no node. It stores the leaves and
//! the nodes of level 4 and up; levels 1 to 3 are derived from the leaves when read (schema
//! version 9), so that an append dirties one page of nodes rather than one per level.
//!
//! Reads run on connections of their own (opened read-only, pooled), each call in one read
//! transaction, so they see one snapshot and do not wait for a batch being flushed.
//!
//! # Several brokers on one file
//!
//! Any number of [`SqliteStore`]s, in one process or several, may open the same file on a local
//! file system. Writers are serialised by SQLite's lock (a writer waits up to the busy timeout,
//! 5 s by default, then gets [`StoreError::Busy`]); because preconditions are checked inside the
//! write transaction, a decision taken on stale state is refused as [`StoreError::Conflict`] and
//! re-decided by the broker, never committed; and the audit sequence stays gap-free (enforced by
//! a trigger as well, for every connection but a store's own writer, which appends at the
//! log's length read inside its transaction and checks before each `COMMIT` that the log ends
//! there). A store's writer runs none of the schema's triggers, so a newer build fences it off
//! by the schema version instead: once another process has migrated the file past this build's
//! version, every commit here is refused as [`StoreError::SchemaTooNew`]. WAL needs shared
//! memory between processes, so network file systems are not supported.
//!
//! # Schema versions
//!
//! The schema version is SQLite's `user_version`. Opening a database of an older version applies
//! the missing [`SqliteStore::MIGRATIONS`] in one transaction; a newer version is refused with
//! [`StoreError::SchemaTooNew`]; a SQLite file with tables of its own but no version is refused as
//! [`StoreError::NotADatabase`].
//!
//! The statements and the commit semantics are shared with the PostgreSQL store (the parent
//! module); this file holds what is SQLite's own: opening and checking the file, its pragmas, its
//! schema history, and the [`Dialect`] over rusqlite.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration as StdDuration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use time::{Date, OffsetDateTime};

use super::pool::{Lease, Pool};
use super::{Dialect, Failure, Migration, Row, Value, ledger, read};
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::merkle::{self, Hash};
use crate::policy::{PlatformProfile, Usage};
use crate::privacy::SubjectKey;
use crate::store::group::GroupCommit;
use crate::store::stats::{CommitStats, Counters};
use crate::store::{
    AccessView, AttestationRecord, Commit, CommitReceipt, DeviceKeyRecord, FeedState, GateQuery,
    GateView, HolderRecord, LedgerRead, LogRead, PolicyRecord, PublishedKey, SeenKind,
    SignedCheckpoint, StateRead, Store, StoreError, StoredCheckpoint, StoredEntry, SubjectLink,
};

const MIGRATIONS: &[Migration] = &[
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
    Migration {
        version: 4,
        // Keys of both uses with their life (activation, retirement, how long a retired token
        // key still verifies). Earlier versions kept token keys only, with no retirement: every
        // key but the newest is taken as retired when the next one was activated, verifying for
        // the longest token lifetime plus the grace after that (15 min + 30 s).
        sql: "
            CREATE TABLE published_keys (
                position INTEGER PRIMARY KEY, key_use TEXT NOT NULL, kid TEXT NOT NULL,
                public_key TEXT NOT NULL, activated_at INTEGER NOT NULL, retired_at INTEGER,
                verifies_until INTEGER, UNIQUE (key_use, kid)
            ) STRICT;
            INSERT INTO published_keys (key_use, kid, public_key, activated_at)
                SELECT 'token', kid, public_key, activated_at FROM signing_keys
                ORDER BY activated_at, rowid;
            UPDATE published_keys SET retired_at = (
                SELECT MIN(n.activated_at) FROM published_keys n
                WHERE n.key_use = published_keys.key_use AND n.position > published_keys.position
            ) WHERE EXISTS (
                SELECT 1 FROM published_keys n
                WHERE n.key_use = published_keys.key_use AND n.position > published_keys.position
            );
            UPDATE published_keys SET verifies_until = retired_at + 930
                WHERE retired_at IS NOT NULL;
            DROP TABLE signing_keys;
        ",
    },
    Migration {
        version: 5,
        // A bank's ledger (empty in a broker's database): attestations it signed, its policy
        // history, its served counts, the ids it has seen presented, and what it learned of
        // platform-side revocations.
        sql: "
            CREATE TABLE bank_attestations (
                position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, consent TEXT NOT NULL,
                subject TEXT NOT NULL, version INTEGER NOT NULL, record TEXT NOT NULL
            ) STRICT;
            CREATE INDEX bank_attestations_by_subject ON bank_attestations (subject);
            CREATE INDEX bank_attestations_by_consent ON bank_attestations (consent);
            CREATE TABLE bank_policies (version INTEGER PRIMARY KEY, record TEXT NOT NULL) STRICT;
            CREATE TABLE bank_served (
                attestation TEXT NOT NULL, day TEXT NOT NULL, unattended INTEGER NOT NULL,
                present INTEGER NOT NULL, PRIMARY KEY (attestation, day)
            ) STRICT, WITHOUT ROWID;
            CREATE TABLE bank_seen (
                kind TEXT NOT NULL, id TEXT NOT NULL, expires_at INTEGER NOT NULL,
                PRIMARY KEY (kind, id)
            ) STRICT, WITHOUT ROWID;
            CREATE INDEX bank_seen_by_expiry ON bank_seen (expires_at);
            CREATE TABLE bank_platform_revocations (
                consent TEXT PRIMARY KEY, revoked_at INTEGER NOT NULL
            ) STRICT;
            CREATE TABLE bank_feed (
                id INTEGER PRIMARY KEY CHECK (id = 1), position INTEGER NOT NULL,
                generated_at INTEGER NOT NULL
            ) STRICT;
        ",
    },
    Migration {
        version: 6,
        // A bank's register of its customers' device keys (responses are sealed to them).
        sql: "
            CREATE TABLE bank_device_keys (
                position INTEGER PRIMARY KEY, thumbprint TEXT NOT NULL UNIQUE,
                subject TEXT NOT NULL, record TEXT NOT NULL
            ) STRICT;
            CREATE INDEX bank_device_keys_by_subject ON bank_device_keys (subject);
        ",
    },
    Migration {
        version: 7,
        // Privacy: subjects' keys (crypto-shredding), a bank's pairwise identifiers, and when
        // each consent and approval ends (retention). Rows written before get their `ends_at`
        // in the same transaction.
        sql: "
            CREATE TABLE subject_keys (
                subject TEXT PRIMARY KEY, key BLOB NOT NULL, created_at INTEGER NOT NULL
            ) STRICT;
            CREATE TABLE bank_subject_links (
                pairwise TEXT PRIMARY KEY, customer TEXT NOT NULL, platform TEXT NOT NULL,
                linked_at INTEGER NOT NULL, UNIQUE (customer, platform)
            ) STRICT;
            ALTER TABLE consents ADD COLUMN ends_at INTEGER;
            CREATE INDEX consents_by_end ON consents (ends_at);
            ALTER TABLE bank_attestations ADD COLUMN ends_at INTEGER;
            CREATE INDEX bank_attestations_by_end ON bank_attestations (ends_at);
        ",
    },
    Migration {
        version: 8,
        // The gate's presented ids keyed by kind, signed time and id: new ids land at the right
        // edge of one B-tree and expired ones leave from the left, where `bank_seen` (keyed by
        // random ids, with an index by expiry) touched random pages of two. The old table stays,
        // read and pruned but never written, until the ids in it have expired; renamed, so that
        // a process of an older build still running on the file fails on it instead of reading
        // and writing a table the new build no longer fills.
        sql: "
            CREATE TABLE bank_presented (
                kind TEXT NOT NULL, at INTEGER NOT NULL, id TEXT NOT NULL,
                PRIMARY KEY (kind, at, id)
            ) STRICT, WITHOUT ROWID;
            ALTER TABLE bank_seen RENAME TO bank_seen_before_v8;
        ",
    },
    Migration {
        version: 9,
        // The Merkle nodes of levels 1 to 3 are derived from the leaves when read, no longer
        // stored (`DERIVED_LEVELS`): the stored ones go, so that the file holds one copy of
        // each hash. A process of an older build still running on the file fails closed at
        // its next append that completes a node of those levels (every other append): the
        // trigger refuses the insert, and its transaction with it. One that reloads the tree's
        // right edge finds the nodes it needs missing (a corrupt-store error). (Writers of
        // later builds run no trigger: a later version fences them off by its number, which
        // each of their write transactions reads; see `SqliteStore::schema_not_moved_on`.)
        sql: "
            DROP TRIGGER merkle_nodes_no_delete;
            DELETE FROM merkle_nodes WHERE level BETWEEN 1 AND 3;
            CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
                BEGIN SELECT RAISE(ABORT, 'Merkle nodes are append-only'); END;
            CREATE TRIGGER merkle_nodes_derived_levels BEFORE INSERT ON merkle_nodes
                WHEN NEW.level BETWEEN 1 AND 3
                BEGIN SELECT RAISE(ABORT, 'Merkle levels 1 to 3 are derived, not stored'); END;
        ",
    },
    Migration {
        version: 10,
        // The root of the broker's log tree at the bank's feed position: the next feed's log
        // must extend it (none in a state written before feeds named roots).
        sql: "
            ALTER TABLE bank_feed ADD COLUMN root BLOB CHECK (root IS NULL OR length(root) = 32);
        ",
    },
];

/// A [`Store`] in a SQLite database file.
#[derive(Debug)]
pub struct SqliteStore {
    /// Connections that only read, each in a transaction of its own per call, so reads go on
    /// while a batch is being written and flushed. `None` for a read-only store. Declared before
    /// the writer so that they close first: the last connection to close (the writer, which may
    /// write) folds the write-ahead log into the database and removes it.
    readers: Option<Readers>,
    /// The database file as resolved when the store was opened: readers open this, so a
    /// relative path and a later change of directory cannot point them at another file.
    resolved: PathBuf,
    /// The one connection that writes (and the only one of a read-only store).
    writer: Mutex<Connection>,
    /// Concurrent commits, grouped into one transaction and one fsync.
    group: GroupCommit<Prepared, Result<CommitReceipt, StoreError>>,
    counters: Counters,
    /// The Merkle levels this file derives instead of storing: [`DERIVED_LEVELS`] from schema
    /// version 9 on (a store that writes has migrated its file); 0 for an older file opened
    /// read-only, whose stored nodes of every level are read and verified as they are.
    derived: u32,
    /// The Merkle tree's right edge after the last batch this store wrote.
    frontier: Mutex<Option<super::Frontier>>,
    path: PathBuf,
}

/// The reader connections of a store that writes, in two pools of at most [`MAX_READERS`]
/// each: one for reads of a few rows, one for scans, which read the file through memory-mapped
/// pages (see [`MMAP_BYTES`]).
#[derive(Debug)]
struct Readers {
    point: Pool<Connection>,
    scans: Pool<Connection>,
}

impl Readers {
    fn new() -> Self {
        Self {
            point: Pool::new(MAX_READERS),
            scans: Pool::new(MAX_READERS),
        }
    }
}

/// A commit with its records encoded (by its caller, before queueing) but for their numbers.
type Prepared = (Commit, Vec<crate::audit::PreparedEntry>);

/// The most commits one transaction takes. A batch is as large as the number of callers that
/// queued while the previous one was being flushed; this bounds how long one leader writes.
const MAX_BATCH: usize = 256;

/// The Merkle tree's levels above the leaves that a SQLite file does not store (since schema
/// version 9): their nodes are derived from the stored leaves when read. With them stored, each
/// level's right edge was a page of its own, and a transaction of a batch of decisions wrote 4.4
/// pages of nodes; now 2.75 (the leaves' page, a node above level 3 in about every other
/// transaction, and the B-tree's inner pages as it grows). Eight callers' decisions: 12 to 16 %
/// more a second (see BENCHMARKS.md).
const DERIVED_LEVELS: u32 = 3;

/// Reader connections open at most in each pool. Once they are all lent, a read waits for one
/// to be given back rather than opening another (see `pool`): a gate under load has dozens of
/// checks reading at once (the HTTP gate lets up to 256 run), and with connections opened past
/// the pool's size and closed on their return, each new one parsed the schema and prepared its
/// statements again. With 16 kept, 32 request threads did so all the time (2.5 % of the gate's
/// samples; 552 files opened in one run of its 32-caller row against 228 with 64 kept); with 64
/// kept, 256 callers opened about 16,000 in 76,800 checks, and reading took two thirds of the
/// gate's CPU samples.
const MAX_READERS: usize = 64;

/// How much of the database file the writer's connection and the scanning readers read through
/// memory-mapped pages (`PRAGMA mmap_size`): a page of the file is then read in place, where
/// `pread` copies it, a system call a page (pages whose latest version is in the write-ahead
/// log are read from it with `pread` all the same). A scan (the log's verification, a range of
/// entries for tiles) reads thousands of pages, and mapped reads made the log's verification
/// about 8 % faster. Readers of a few rows (a decision's view, the gate's) stay unmapped: a
/// reader's page cache is emptied whenever another connection has committed, and under load
/// their mapped reads were slower (eight callers' decisions, three pairs: 22,997–27,459
/// against 23,502–30,751 a second; see BENCHMARKS.md). Not for [`SqliteStore::open_read_only`],
/// which reads copies another process might truncate under the mapping.
const MMAP_BYTES: i64 = 256 * 1024 * 1024;

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

/// A failed `COMMIT` of a transaction that `wrote`. SQLite leaves it unwritten after a busy
/// lock, a full disk or a read-only file, and those are reported as such. After any other error
/// whether it reached the disk is unknown: an I/O error in the log's write or flush, or one
/// after the flush (the log's frames are written and flushed before SQLite adds them to its
/// index of the log, which can fail for want of memory; the frames are then found again when
/// the log is next recovered). A read's `COMMIT` wrote nothing: its error is the engine's.
fn commit_failed(path: &Path, error: rusqlite::Error, wrote: bool) -> StoreError {
    let unwritten = matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
        )
    );
    if wrote && !unwritten {
        StoreError::OutcomeUnknown(error.to_string())
    } else {
        store_error(path, error)
    }
}

fn failure(path: &Path, failure: Failure<rusqlite::Error>) -> StoreError {
    match failure {
        Failure::Refused(error) => error,
        Failure::Engine(error) => store_error(path, error),
    }
}

impl SqliteStore {
    /// The schema's history, oldest first. The last version is [`SqliteStore::SCHEMA_VERSION`].
    pub const MIGRATIONS: &'static [Migration] = MIGRATIONS;

    /// The schema version this build writes.
    pub const SCHEMA_VERSION: i64 = 10;

    /// SQLite `application_id` of a consent-broker database (`0x4342_526B`, "CBRk"), written by
    /// the first migration. A file with another application id is refused as not ours.
    pub const APPLICATION_ID: i32 = 0x4342_526B;

    /// How long a writer waits for another writer's lock by default.
    pub const DEFAULT_BUSY_TIMEOUT: StdDuration = StdDuration::from_secs(5);

    /// Opens (creating if needed) the database at `path`, checks its integrity, and brings its
    /// schema up to [`SqliteStore::SCHEMA_VERSION`].
    ///
    /// The store's writer runs none of the schema's triggers (they keep the log and its Merkle
    /// nodes append-only and gap-free against every other connection; the writer keeps those
    /// rules itself). Should a newer build migrate the file while this store has it open, each
    /// later commit is refused as [`StoreError::SchemaTooNew`] and writes nothing: the process
    /// needs the newer build.
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
            .busy_timeout(Self::DEFAULT_BUSY_TIMEOUT)
            .map_err(fail)?;
        tune_statements(&connection).map_err(fail)?;
        // Decide whether the file is ours before writing anything to it. Reading the header is
        // the first access: a file that is not SQLite fails here with SQLITE_NOTADB.
        let application_id: i32 = connection
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .map_err(fail)?;
        let tables: i64 = connection
            .query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(fail)?;
        let fresh = application_id == 0 && tables == 0;
        if application_id != Self::APPLICATION_ID && !fresh {
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
        // On macOS `fsync` leaves the writes in the drive's cache; `F_FULLFSYNC` flushes them, for
        // the log's flush at each commit and for the checkpoint's. Elsewhere these change nothing.
        connection
            .pragma_update(None, "fullfsync", "ON")
            .map_err(fail)?;
        connection
            .pragma_update(None, "checkpoint_fullfsync", "ON")
            .map_err(fail)?;
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(fail)?;
        // Deleted rows are overwritten with zeros, not left in free pages: an erased subject's
        // rows leave no bytes behind once the write-ahead log is truncated (see `purge`).
        connection
            .pragma_update(None, "secure_delete", "ON")
            .map_err(fail)?;
        // Reads on the writer's connection go through memory-mapped pages (see `MMAP_BYTES`).
        connection
            .pragma_update(None, "mmap_size", MMAP_BYTES)
            .map_err(fail)?;
        // A batch's savepoint journal (the first version of every page the batch changes, kept
        // for going back to the savepoint) stays in memory. SQLite's default spills it past
        // 64 KiB to temporary files it creates, writes and deletes: with 32 of the gate's
        // callers, 1,121 files in 685 transactions and four writes of them per journal entry,
        // all in the leader's serial path. Its size is bounded by the batch's pages (`MAX_BATCH`).
        connection
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(fail)?;
        let resolved = std::fs::canonicalize(&path).map_err(|e| {
            StoreError::Unavailable(format!("cannot resolve {}: {e}", path.display()))
        })?;
        let store = Self {
            derived: DERIVED_LEVELS,
            writer: Mutex::new(connection),
            readers: Some(Readers::new()),
            resolved,
            group: GroupCommit::new(MAX_BATCH),
            counters: Counters::default(),
            frontier: Mutex::new(None),
            path,
        };
        store.migrate()?;
        // The schema's triggers (the log and the Merkle nodes append-only and gap-free) guard
        // the file against every other writer: SQL run by hand, a script, another program. This
        // connection runs none: SQLite writes any insert that fires a trigger able to abort
        // under a statement journal, a copy of each page it touches, and the gap check reads
        // the log's end for every row; with eight callers that was a tenth of the writer's
        // instructions. The store keeps the same rules itself: it never updates or deletes a
        // row of either table, appends at the log's length read inside its write transaction,
        // and checks before each batch's `COMMIT` that the log ends where its appends did.
        // Since no writer of this build runs a trigger, a later schema version fences them off
        // by its number instead: each write transaction reads `user_version` and refuses a file
        // that a newer build has migrated ([`StoreError::SchemaTooNew`]). Turned off after the
        // migrations, which run as they always did.
        store
            .lock()
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
                false,
            )
            .map_err(|e| store_error(&store.path, e))?;
        Ok(store)
    }

    /// Opens a copy of a database for reading only, never writing to it (no schema migration,
    /// no journal-mode change): what an auditor's tool uses on evidence. Works on a read-only
    /// copy. Without a `-wal` file beside it, the file is opened as immutable and nothing at all
    /// is created next to it (so use it on a copy, not on a database a broker is writing). A
    /// copy in write-ahead-log mode needs its `-wal` file (committed entries may live only
    /// there) and, for SQLite to read it, a writable directory or an existing `-shm` file
    /// (SQLite then creates or uses the `-shm`; the database and the `-wal` are never written);
    /// without either, the open is refused rather than reading a shorter log.
    ///
    /// # Errors
    /// [`StoreError::NotADatabase`], [`StoreError::Corrupt`], [`StoreError::SchemaTooNew`],
    /// [`StoreError::Unavailable`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        let path = path.as_ref().to_path_buf();
        let fail = |e| store_error(&path, e);
        if !path.is_file() {
            return Err(StoreError::Unavailable(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
        let uri = |extra: &str| {
            format!(
                "file:{}?mode=ro{extra}",
                path.display()
                    .to_string()
                    .replace('%', "%25")
                    .replace('?', "%3f")
                    .replace('#', "%23")
            )
        };
        let probe = |connection: &Connection| -> Result<(i32, i64), rusqlite::Error> {
            let id = connection.pragma_query_value(None, "application_id", |row| row.get(0))?;
            let version = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
            Ok((id, version))
        };
        // With no write-ahead log beside it, everything committed is in the main file: open it
        // as immutable, so that not even a `-shm` file is created next to the evidence.
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let has_wal = std::fs::metadata(PathBuf::from(wal)).is_ok_and(|m| m.len() > 0);
        let immutable = || -> Result<_, StoreError> {
            let connection =
                Connection::open_with_flags(uri("&immutable=1"), flags).map_err(fail)?;
            let found = probe(&connection).map_err(fail)?;
            Ok((connection, found))
        };
        let (connection, (application_id, version)) = if has_wal {
            let connection = Connection::open_with_flags(uri(""), flags).map_err(fail)?;
            match probe(&connection) {
                Ok(found) => (connection, found),
                // A directory SQLite cannot write the `-shm` to: the log's tail in the `-wal`
                // cannot be read, and reading the main file alone could report a shorter log
                // as the whole of it. Refuse.
                Err(error) => {
                    return Err(StoreError::Unavailable(format!(
                        "{}: its -wal file holds committed entries that cannot be read here                          ({error}); copy it with its -shm file into a writable directory, or                          checkpoint the database first",
                        path.display()
                    )));
                }
            }
        } else {
            immutable()?
        };
        if application_id != Self::APPLICATION_ID {
            return Err(StoreError::NotADatabase {
                path: path.display().to_string(),
                detail: format!("application_id {application_id:#x}"),
            });
        }
        if version > Self::SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: Self::SCHEMA_VERSION,
            });
        }
        let check: String = connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(fail)?;
        if check != "ok" {
            return Err(StoreError::Corrupt(check));
        }
        Ok(Self {
            derived: if version >= 9 { DERIVED_LEVELS } else { 0 },
            writer: Mutex::new(connection),
            readers: None,
            resolved: path.clone(),
            group: GroupCommit::new(MAX_BATCH),
            counters: Counters::default(),
            frontier: Mutex::new(None),
            path,
        })
    }

    /// How this store's commits have been grouped into transactions since it was opened.
    pub fn commit_stats(&self) -> CommitStats {
        self.counters.stats()
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
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A reader connection of `pool`: an idle one, a new one while fewer than [`MAX_READERS`]
    /// are open (`mapped`: reading through memory-mapped pages), or else the first one given
    /// back; [`StoreError::Busy`] if none is within the busy timeout.
    fn reader<'p>(
        &self,
        pool: &'p Pool<Connection>,
        mapped: bool,
    ) -> Result<Lease<'p, Connection>, StoreError> {
        pool.lease(
            || self.open_reader(mapped),
            Self::DEFAULT_BUSY_TIMEOUT,
            || StoreError::Busy("every reader connection of this store stayed in use".into()),
        )
    }

    /// A new reader connection.
    fn open_reader(&self, mapped: bool) -> Result<Connection, StoreError> {
        let fail = |e| store_error(&self.path, e);
        let connection = Connection::open_with_flags(
            &self.resolved,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(fail)?;
        connection
            .busy_timeout(Self::DEFAULT_BUSY_TIMEOUT)
            .map_err(fail)?;
        if mapped {
            connection
                .pragma_update(None, "mmap_size", MMAP_BYTES)
                .map_err(fail)?;
        }
        tune_statements(&connection).map_err(fail)?;
        Ok(connection)
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
        if version > Self::SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: Self::SCHEMA_VERSION,
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
                backfill_merkle_nodes(&tx).map_err(|e| failure(&self.path, e))?;
            }
            if migration.version == 7 {
                super::privacy::backfill_ends(&mut Lite::new(&tx, DERIVED_LEVELS))
                    .map_err(|e| failure(&self.path, e))?;
            }
            tx.pragma_update(None, "user_version", migration.version)
                .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    /// Runs a read in one read transaction (one snapshot, however many statements): on the
    /// writer's connection when no batch holds it, else on a reader connection, so reads never
    /// wait for a batch being written.
    fn read<T>(
        &self,
        read: impl FnOnce(&mut Lite<'_>) -> Result<T, Failure<rusqlite::Error>>,
    ) -> Result<T, StoreError> {
        self.read_on(true, read)
    }

    /// A read of many rows (a range of the log, every consent of a subject): always on a reader
    /// connection of the scanning pool, which maps the file (see [`MMAP_BYTES`]), so it never
    /// holds the writer's connection while a batch waits for it.
    fn scan<T>(
        &self,
        read: impl FnOnce(&mut Lite<'_>) -> Result<T, Failure<rusqlite::Error>>,
    ) -> Result<T, StoreError> {
        self.read_on(false, read)
    }

    fn read_on<T>(
        &self,
        may_borrow_writer: bool,
        read: impl FnOnce(&mut Lite<'_>) -> Result<T, Failure<rusqlite::Error>>,
    ) -> Result<T, StoreError> {
        let Some(readers) = &self.readers else {
            let connection = self.lock();
            return read(&mut Lite::new(&connection, self.derived))
                .map_err(|e| failure(&self.path, e));
        };
        // The writer, when no batch holds it or waits for it: its page cache holds what was just
        // written, which a reader connection would have to read again from the write-ahead log.
        // A lone caller reads there, as before group commit; under load, reads go to the pool,
        // so that the next batch's leader does not wait for a read to give the writer back (but
        // for a commit queued between the check and the lock, which waits for this one read).
        let idle_writer = if may_borrow_writer && self.group.is_quiet() {
            match self.writer.try_lock() {
                Ok(writer) => Some(writer),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        } else {
            None
        };
        if let Some(mut writer) = idle_writer {
            return self.in_transaction(&mut writer, TransactionBehavior::Deferred, read);
        }
        // Scans are the reads that never borrow the writer.
        let scan = !may_borrow_writer;
        let pool = match scan {
            true => &readers.scans,
            false => &readers.point,
        };
        let mut lease = self.reader(pool, scan)?;
        let Some(connection) = lease.connection() else {
            return Err(StoreError::Unavailable(
                "a reader connection was lent empty".into(),
            ));
        };
        // Given back when the lease is dropped; closed after an error.
        match self.in_transaction(connection, TransactionBehavior::Deferred, read) {
            Ok(value) => Ok(value),
            Err(error) => {
                lease.discard();
                Err(error)
            }
        }
    }

    /// Runs `work` in one transaction of `behavior` on `connection`: committed if it succeeds,
    /// rolled back (by dropping the transaction) if anything in it fails.
    fn in_transaction<T>(
        &self,
        connection: &mut Connection,
        behavior: TransactionBehavior,
        work: impl FnOnce(&mut Lite<'_>) -> Result<T, Failure<rusqlite::Error>>,
    ) -> Result<T, StoreError> {
        let fail = |e| store_error(&self.path, e);
        let tx = Tx::begin(connection, behavior).map_err(fail)?;
        let value = work(&mut Lite::new(&tx, self.derived)).map_err(|e| failure(&self.path, e))?;
        // Reads run deferred; a transaction begun to write may have written.
        let wrote = !matches!(behavior, TransactionBehavior::Deferred);
        tx.commit()
            .map_err(|e| commit_failed(&self.path, e, wrote))?;
        Ok(value)
    }

    /// Runs `write` in one `BEGIN IMMEDIATE` transaction on the writer's connection.
    fn write<T>(
        &self,
        write: impl FnOnce(&mut Lite<'_>) -> Result<T, Failure<rusqlite::Error>>,
    ) -> Result<T, StoreError> {
        self.in_transaction(&mut self.lock(), TransactionBehavior::Immediate, |db| {
            self.schema_not_moved_on(db).map_err(Failure::Refused)?;
            write(db)
        })
    }

    /// Applies a batch of commits in one `BEGIN IMMEDIATE` transaction: a commit refused (a
    /// failed precondition, a duplicate) is answered with its refusal and leaves nothing behind;
    /// the others are answered once the transaction, and so their fsync, has committed. An
    /// engine failure that ends the transaction answers every commit of the batch with that
    /// failure (none of them is in the database); so does a failed `COMMIT`, as
    /// [`StoreError::OutcomeUnknown`] after an I/O error; so does a file whose schema a newer
    /// build has moved on since this store opened it ([`StoreError::SchemaTooNew`]).
    ///
    /// Commits are applied without a savepoint each: a refused precondition writes nothing, and
    /// most commits cannot be refused once their preconditions hold. A savepoint copies every
    /// page a commit touches into a journal before changing it; with the triggers this
    /// connection no longer runs (see `open`), that was 15 % of the instructions of a bank
    /// gate's journal entry, whose commits all have changes. A batch in which a commit could
    /// be refused after it began writing (one with changes, in a shared batch) has one savepoint
    /// around the whole batch instead, each page copied once. Should a commit be refused after
    /// writing (a duplicate met by an insert), the batch goes back to that savepoint, without
    /// letting go of the write lock; the commits before the refused one are applied again as
    /// they were (the same state, the same order: the same answers), the refused one is
    /// answered with its refusal, and the commits after it each get a savepoint of their own,
    /// so that a further refusal is undone alone. The answers are those of the batch applied in
    /// order, one commit at a time, either way. `CommitStats::batches_redone` counts the
    /// batches that went back. A full disk (or size limit) makes SQLite end the whole
    /// transaction, as an I/O error does, savepoints and all: then each commit of the batch is
    /// tried again in a transaction of its own, so that those that fit land, as they would have
    /// one at a time. Any other error that ends the transaction is every commit's answer.
    ///
    /// The Merkle tree's right edge is kept from one batch to the next (checked against the
    /// log's length inside the transaction, so a write by another process is noticed), so an
    /// append reads no node.
    fn write_batch(&self, commits: Vec<Prepared>) -> Vec<Result<CommitReceipt, StoreError>> {
        let count = commits.len();
        self.counters.batch(count);
        let connection = self.lock();
        let cached = self
            .frontier
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match self.apply_batch(&connection, cached, &commits) {
            Ok((answers, frontier)) => {
                *self
                    .frontier
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(frontier);
                answers
            }
            // The disk (or the size limit) is full, and SQLite ended the transaction: none of
            // the batch is in the file. Each commit is tried again in a transaction of its own,
            // so that those that fit land and the answers are those of one commit at a time.
            Err(StoreError::Full(_)) if count > 1 => commits
                .chunks(1)
                .map(|alone| match self.apply_batch(&connection, None, alone) {
                    Ok((mut answers, frontier)) => {
                        *self
                            .frontier
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(frontier);
                        answers.pop().unwrap_or_else(|| {
                            Err(StoreError::Unavailable("a commit went unanswered".into()))
                        })
                    }
                    Err(error) => Err(error),
                })
                .collect(),
            Err(error) => (0..count).map(|_| Err(error.clone())).collect(),
        }
    }

    /// The batch from `BEGIN` to `COMMIT`: every commit's answer and the frontier after them,
    /// or the error every commit of the batch gets (the transaction rolled back when its guard
    /// is dropped). See [`SqliteStore::write_batch`].
    fn apply_batch(
        &self,
        connection: &Connection,
        cached: Option<super::Frontier>,
        commits: &[Prepared],
    ) -> Result<(Vec<Result<CommitReceipt, StoreError>>, super::Frontier), StoreError> {
        let tx = Tx::begin(connection, TransactionBehavior::Immediate)
            .map_err(|e| store_error(&self.path, e))?;
        let mut db = Lite::new(connection, self.derived);
        self.schema_not_moved_on(&mut db)?;
        let start = super::current_frontier(&mut db, cached).map_err(|e| failure(&self.path, e))?;
        let shared = commits.len() > 1;
        let guarded = shared
            && commits
                .iter()
                .any(|(commit, _)| !commit.changes().is_empty());
        if guarded {
            db.run("SAVEPOINT batch")
                .map_err(|e| store_error(&self.path, e))?;
        }
        let mut frontier = start.clone();
        let mut answers = Vec::with_capacity(commits.len());
        // Commits from this index on write in a savepoint of their own.
        let mut careful_from = commits.len();
        for (index, (commit, prepared)) in commits.iter().enumerate() {
            let careful = shared && index >= careful_from;
            match self.write_one(&mut db, commit, prepared, &mut frontier, careful) {
                Ok(answer) => answers.push(answer),
                Err(Stop::Fail(error)) => return Err(error),
                // Refused after it began writing, with nothing to undo it alone by.
                Err(Stop::Undo(refusal)) => {
                    if !guarded {
                        return Err(refusal);
                    }
                    db.run("ROLLBACK TO batch")
                        .map_err(|e| store_error(&self.path, e))?;
                    self.counters.redone();
                    frontier = start.clone();
                    // The commits before it again, from the same state in the same order: each
                    // one that landed lands again at the same numbers; each one refused wrote
                    // nothing and keeps its answer.
                    let before = std::mem::take(&mut answers);
                    for ((commit, prepared), first) in commits.iter().zip(before) {
                        let Ok(landed) = &first else {
                            answers.push(first);
                            continue;
                        };
                        let again = self
                            .write_one(&mut db, commit, prepared, &mut frontier, false)
                            .map_err(Stop::into_error)?;
                        if again.as_ref().map(|r| &r.audit_seqs) != Ok(&landed.audit_seqs) {
                            return Err(StoreError::Unavailable(
                                "a batch applied again answered otherwise".into(),
                            ));
                        }
                        answers.push(again);
                    }
                    answers.push(Err(refusal));
                    careful_from = index + 1;
                }
            }
        }
        if guarded {
            db.run("RELEASE batch")
                .map_err(|e| store_error(&self.path, e))?;
        }
        // The log ends where the appends did. Gap-free by construction (each append is at the
        // length read inside this transaction, and the primary key refuses a second row at a
        // number); this guards against a mistake of the writer's own, which the triggers this
        // connection does not run would have caught.
        let length = super::read::audit_len(&mut db).map_err(|e| failure(&self.path, e))?;
        if length != frontier.size() {
            return Err(StoreError::Corrupt(format!(
                "the audit log holds {length} entries after a batch, where {} were written",
                frontier.size()
            )));
        }
        // Its statements back in the connection's cache before the transaction ends.
        drop(db);
        tx.commit()
            .map_err(|e| commit_failed(&self.path, e, true))?;
        Ok((answers, frontier))
    }

    /// Refuses to write to a file whose schema version is above this build's: another process
    /// of a newer build migrated it after this store opened it. Read inside each write
    /// transaction, it is how a later migration fences off this build's writers, which run none
    /// of the schema's triggers (see `open`).
    fn schema_not_moved_on(&self, db: &mut Lite<'_>) -> Result<(), StoreError> {
        let found = super::one(db, "PRAGMA user_version", &[], |row| {
            row.int(0).map(Option::unwrap_or_default)
        })
        .map_err(|e| failure(&self.path, e))?
        .unwrap_or_default();
        if found > Self::SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: Self::SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    /// One commit of a batch: `Ok(answer)` for the commit alone (its receipt, or its refusal,
    /// undone), `Err` when it cannot be answered alone. A commit's preconditions are checked
    /// and its entries encoded before it writes anything, so a refusal there needs nothing
    /// undone. A commit writes in a savepoint of its own when `careful`; otherwise a refusal
    /// once it has begun writing is [`Stop::Undo`]: what it wrote is still there.
    fn write_one(
        &self,
        db: &mut Lite<'_>,
        commit: &Commit,
        prepared: &[crate::audit::PreparedEntry],
        frontier: &mut super::Frontier,
        careful: bool,
    ) -> Result<Result<CommitReceipt, StoreError>, Stop> {
        let savepoint = careful;
        match super::preconditions_hold(db, commit) {
            Ok(true) => {}
            Ok(false) => return Ok(Err(StoreError::Conflict)),
            // Nothing written: this commit fails alone, unless the engine ended the transaction
            // (some errors, a full disk or an I/O error, do).
            Err(error) => {
                let error = failure(&self.path, error);
                return if db.connection.is_autocommit() {
                    Err(Stop::Fail(error))
                } else {
                    Ok(Err(error))
                };
            }
        }
        let entries = match super::encode_records(prepared, frontier.size()) {
            Ok(entries) => entries,
            Err(error) => return Ok(Err(error)),
        };
        let fail = |e| Stop::Fail(store_error(&self.path, e));
        if savepoint {
            // Prepared once per connection, not parsed at every commit.
            db.connection
                .prepare_cached("SAVEPOINT batched")
                .and_then(|mut statement| statement.execute([]))
                .map_err(fail)?;
        }
        let before = frontier.clone();
        let written = super::apply_changes(db, commit)
            .and_then(|()| super::append_records(db, frontier, &entries));
        match written {
            Ok(()) => {
                if savepoint {
                    db.connection
                        .prepare_cached("RELEASE batched")
                        .and_then(|mut statement| statement.execute([]))
                        .map_err(fail)?;
                }
                Ok(Ok(CommitReceipt {
                    audit_seqs: before.size()..frontier.size(),
                }))
            }
            Err(error) => {
                *frontier = before;
                let error = failure(&self.path, error);
                // The transaction ended by the engine: the batch as a whole is lost.
                if db.connection.is_autocommit() {
                    return Err(Stop::Fail(error));
                }
                // Undone alone from its savepoint, in a transaction still open.
                if savepoint {
                    db.connection
                        .execute_batch("ROLLBACK TO batched; RELEASE batched")
                        .map_err(fail)?;
                    return Ok(Err(error));
                }
                // Written in part, with nothing to undo it alone by.
                Err(Stop::Undo(error))
            }
        }
    }
}

/// Why a commit of a batch cannot be answered alone.
enum Stop {
    /// The transaction cannot go on: every commit of the batch fails with this error.
    Fail(StoreError),
    /// Refused (with this error) after it began writing, without a savepoint of its own: what
    /// it wrote must be undone with the batch's.
    Undo(StoreError),
}

impl Stop {
    fn into_error(self) -> StoreError {
        match self {
            Self::Fail(error) | Self::Undo(error) => error,
        }
    }
}

/// How many prepared statements a connection keeps: more than the distinct statements a broker's
/// or a bank's commit and reads use together (rusqlite's default, 16, is fewer, so statements
/// were evicted and parsed again under load).
const STATEMENT_CACHE: usize = 128;

/// Sizes `connection`'s statement cache and turns on SQLite's query planner stability guarantee:
/// a cached statement's plan never depends on the values bound to it. Without it, a statement
/// whose plan reads a bound value (a `LIMIT ?`, which the gate's prune of seen ids has) is parsed
/// and planned again every time it runs with a value bound: that was a tenth of the gate's time
/// under load.
fn tune_statements(connection: &Connection) -> rusqlite::Result<()> {
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    connection
        .set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map(|_| ())
}

/// A transaction begun and ended with statements from the connection's cache (parsed once per
/// connection, not at every transaction as rusqlite's `Transaction` does), rolled back when
/// dropped uncommitted.
struct Tx<'c> {
    connection: &'c Connection,
}

impl<'c> Tx<'c> {
    fn begin(connection: &'c Connection, behavior: TransactionBehavior) -> rusqlite::Result<Self> {
        let begin = match behavior {
            TransactionBehavior::Deferred => "BEGIN DEFERRED",
            TransactionBehavior::Exclusive => "BEGIN EXCLUSIVE",
            // Immediate, and any kind rusqlite adds later: the writer's lock at once.
            _ => "BEGIN IMMEDIATE",
        };
        // A transaction left open (a rollback that failed when its guard was dropped) would make
        // every later `BEGIN` fail: end it first.
        if !connection.is_autocommit() {
            connection.execute_batch("ROLLBACK")?;
        }
        connection.prepare_cached(begin)?.execute([])?;
        Ok(Self { connection })
    }

    /// Commits. On failure the transaction may still be open; dropping the guard rolls it back.
    fn commit(self) -> rusqlite::Result<()> {
        self.connection.prepare_cached("COMMIT")?.execute([])?;
        Ok(())
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // Committed (or ended by the engine): nothing to undo.
        if !self.connection.is_autocommit() {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
    }
}

/// The [`Dialect`] over a rusqlite connection (or a transaction, which derefs to one), with the
/// Merkle levels the file derives instead of storing (`SqliteStore::derived`), and the
/// statements it has used, kept until it is dropped.
struct Lite<'a> {
    connection: &'a Connection,
    derived: u32,
    /// Each statement this `Lite` ran, by its SQL (the same `&'static str`), taken from the
    /// connection's cache once and given back when the `Lite` is dropped. A batch of commits
    /// runs the same few statements for every commit; through rusqlite's cache each run hashed
    /// the SQL text twice (to take the statement and to give it back), a tenth of the writer's
    /// instructions with eight callers.
    statements: Vec<(&'static str, rusqlite::CachedStatement<'a>)>,
}

impl<'a> Lite<'a> {
    fn new(connection: &'a Connection, derived: u32) -> Self {
        Self {
            connection,
            derived,
            statements: Vec::new(),
        }
    }

    /// The prepared statement of `sql`, from those this `Lite` holds or from the connection's
    /// cache (parsed there once per connection).
    fn statement(
        &mut self,
        sql: &'static str,
    ) -> rusqlite::Result<&mut rusqlite::CachedStatement<'a>> {
        let index = match self
            .statements
            .iter()
            .position(|(held, _)| std::ptr::eq(*held, sql))
        {
            Some(index) => index,
            None => {
                let statement = self.connection.prepare_cached(sql)?;
                self.statements.push((sql, statement));
                self.statements.len() - 1
            }
        };
        match self.statements.get_mut(index) {
            Some((_, statement)) => Ok(statement),
            None => Err(rusqlite::Error::InvalidQuery),
        }
    }

    /// Runs a statement that takes no value and returns no row (a savepoint's).
    fn run(&mut self, sql: &'static str) -> rusqlite::Result<()> {
        self.statement(sql)?.execute([]).map(|_| ())
    }
}

/// A value bound as it is: text and bytes from where they are, not copied into a
/// `rusqlite::types::Value` first (SQLite takes its own copy as it binds them).
impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef;
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match *self {
            Value::Int(int) | Value::OptionalInt(Some(int)) => ValueRef::Integer(int),
            Value::OptionalInt(None) => ValueRef::Null,
            Value::Text(text) => ValueRef::Text(text.as_bytes()),
            Value::Blob(bytes) | Value::OptionalBlob(Some(bytes)) => ValueRef::Blob(bytes),
            Value::OptionalBlob(None) => ValueRef::Null,
        }))
    }
}

impl Row for rusqlite::Row<'_> {
    fn int(&self, column: usize) -> Result<Option<i64>, StoreError> {
        self.get(column)
            .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
    }

    fn bytes(&self, column: usize) -> Result<Vec<u8>, StoreError> {
        self.get_ref(column)
            .and_then(|value| Ok(value.as_bytes()?.to_vec()))
            .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
    }

    fn optional_bytes(&self, column: usize) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_ref(column)
            .and_then(|value| Ok(value.as_bytes_or_null()?.map(<[u8]>::to_vec)))
            .map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
    }
}

impl Dialect for Lite<'_> {
    type Error = rusqlite::Error;

    fn derived_levels(&self) -> u32 {
        self.derived
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<u64, Failure<Self::Error>> {
        let changed = self
            .statement(sql)
            .and_then(|statement| statement.execute(rusqlite::params_from_iter(params)))
            .map_err(Failure::Engine)?;
        Ok(changed as u64)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), Failure<Self::Error>> {
        let statement = self.statement(sql).map_err(Failure::Engine)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(params))
            .map_err(Failure::Engine)?;
        while let Some(row) = rows.next().map_err(Failure::Engine)? {
            each(row)?;
        }
        Ok(())
    }
}

/// Computes the Merkle nodes of audit rows written before schema version 3.
fn backfill_merkle_nodes(tx: &Connection) -> Result<(), Failure<rusqlite::Error>> {
    let rows: Vec<(i64, String)> = tx
        .prepare("SELECT seq, entry FROM audit ORDER BY seq")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .map_err(Failure::Engine)?;
    for (expected, (seq, entry)) in (0u64..).zip(rows) {
        if super::signed(expected) != seq {
            return Err(Failure::Refused(StoreError::Corrupt(format!(
                "audit sequence broken at {seq}"
            ))));
        }
        super::append_leaf(
            &mut Lite::new(tx, DERIVED_LEVELS),
            expected,
            merkle::leaf_hash(entry.as_bytes()),
        )?;
    }
    Ok(())
}

impl StateRead for SqliteStore {
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
        self.read(|db| read::holder(db, id))
    }

    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
        self.read(|db| read::platform(db, id))
    }

    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
        self.read(|db| read::consent(db, id))
    }

    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        self.scan(|db| read::consents_of_subject(db, subject))
    }

    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
        self.read(|db| read::usage(db, consent, day))
    }

    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
        self.read(|db| read::attestation_used(db, attestation_id))
    }

    fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        self.read(|db| read::published_keys(db))
    }

    fn subject_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, StoreError> {
        self.read(|db| super::privacy::subject_key(db, subject))
    }

    fn consents_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Consent>, StoreError> {
        self.scan(|db| super::privacy::consents_ended_before(db, before, limit))
    }

    fn access_view(
        &self,
        consent: &ConsentId,
        platform: &PlatformId,
        day: Date,
    ) -> Result<AccessView, StoreError> {
        self.read(|db| read::access_view(db, consent, platform, day))
    }

    fn keep_access_views(&self) -> bool {
        true
    }
}

impl LedgerRead for SqliteStore {
    fn attestation_record(&self, id: &str) -> Result<Option<AttestationRecord>, StoreError> {
        self.read(|db| ledger::attestation_record(db, id))
    }

    fn attestations_of_subject(
        &self,
        subject: &SubjectId,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        self.scan(|db| ledger::attestations_of_subject(db, subject))
    }

    fn attestations_of_consent(
        &self,
        consent: &ConsentId,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        self.scan(|db| ledger::attestations_of_consent(db, consent))
    }

    fn platform_revocation(
        &self,
        consent: &ConsentId,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        self.read(|db| ledger::platform_revocation(db, consent))
    }

    fn bank_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.read(|db| ledger::bank_policies(db))
    }

    fn seen(&self, kind: SeenKind, id: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.read(|db| ledger::seen(db, kind, id, at))
    }

    fn feed_state(&self) -> Result<Option<FeedState>, StoreError> {
        self.read(|db| ledger::feed_state(db))
    }

    fn device_keys(&self, subject: &SubjectId) -> Result<Vec<DeviceKeyRecord>, StoreError> {
        self.read(|db| ledger::device_keys(db, subject))
    }

    fn subject_link(&self, pairwise: &SubjectId) -> Result<Option<SubjectLink>, StoreError> {
        self.read(|db| super::privacy::subject_link(db, pairwise))
    }

    fn link_of(
        &self,
        customer: &SubjectId,
        platform: &PlatformId,
    ) -> Result<Option<SubjectLink>, StoreError> {
        self.read(|db| super::privacy::link_of(db, customer, platform))
    }

    fn attestations_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        self.scan(|db| super::privacy::attestations_ended_before(db, before, limit))
    }

    fn links_of_customer(&self, customer: &SubjectId) -> Result<Vec<SubjectLink>, StoreError> {
        self.scan(|db| super::privacy::links_of_customer(db, customer))
    }

    fn gate_view(&self, query: &GateQuery<'_>) -> Result<GateView, StoreError> {
        self.read(|db| ledger::gate_view(db, query))
    }
}

impl LogRead for SqliteStore {
    fn audit_len(&self) -> Result<u64, StoreError> {
        self.read(|db| read::audit_len(db))
    }

    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
        self.scan(|db| read::audit_bytes(db, range))
    }

    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        self.read(|db| read::merkle_node(db, level, index))
    }

    fn merkle_nodes(&self, level: u32, range: Range<u64>) -> Result<Vec<(u64, Hash)>, StoreError> {
        self.scan(|db| read::merkle_nodes(db, level, range))
    }

    fn derived_levels(&self) -> u32 {
        self.derived
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.read(|db| read::latest_checkpoint(db))
    }
}

impl Store for SqliteStore {
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
        if self.readers.is_none() {
            return Err(StoreError::ReadOnly(format!(
                "{} was opened read-only",
                self.path.display()
            )));
        }
        // Encoded here, in the caller's thread: the leader only places the numbers.
        let prepared = super::prepare_records(&commit)?;
        self.group.submit(
            (commit, prepared),
            &|commits| self.write_batch(commits),
            &|| {
                Err(StoreError::Unavailable(
                    "the commit's batch failed before it was answered".into(),
                ))
            },
        )
    }

    fn record_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        self.write(|db| super::record_checkpoint(db, checkpoint.checkpoint()))
    }

    fn purge(&self) -> Result<bool, StoreError> {
        let connection = self.lock();
        // Copies every committed page (with deleted cells zeroed by `secure_delete`) into the
        // database file and truncates the write-ahead log to nothing: the frames that held the
        // rows before they were deleted go with it. Busy (a reader still needs old frames): the
        // log is kept, and the caller is told to try again.
        let (busy, _, _): (i64, i64, i64) = connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(|e| store_error(&self.path, e))?;
        Ok(busy == 0)
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests fail by panicking")]

    use super::{MAX_READERS, MMAP_BYTES, Pool, SqliteStore};
    use crate::audit::{Actor, AuditEvent, AuditRecord};
    use crate::store::{Change, Commit, LogRead, Precondition, StateRead, Store, StoreError};
    use rusqlite::Connection;
    use time::OffsetDateTime;

    /// A commit of one audit entry and no change.
    fn entry() -> Commit {
        Commit::new(AuditRecord::new(
            OffsetDateTime::UNIX_EPOCH,
            Actor::Platform("chat".parse().unwrap()),
            AuditEvent::PlatformRegistered { purposes: None },
        ))
    }

    fn using(attestation: &str) -> Commit {
        entry().change(Change::UseAttestation {
            attestation_id: attestation.into(),
        })
    }

    fn prepared(commit: Commit) -> super::Prepared {
        let entries = crate::store::sql::prepare_records(&commit).unwrap();
        (commit, entries)
    }

    #[test]
    fn a_failed_commit_of_a_write_is_unknown_unless_sqlite_left_it_unwritten() {
        use rusqlite::ffi;
        let path = std::path::Path::new("ledger.sqlite");
        let failed = |code, wrote| {
            let engine = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
            super::commit_failed(path, engine, wrote)
        };
        let kind = std::mem::discriminant::<StoreError>;
        let said = String::new;
        for (code, wrote, expected) in [
            // The log's frames flushed, then no memory to index them: recovery finds them again.
            (ffi::SQLITE_NOMEM, true, StoreError::OutcomeUnknown(said())),
            (
                ffi::SQLITE_IOERR_FSYNC,
                true,
                StoreError::OutcomeUnknown(said()),
            ),
            // What SQLite leaves unwritten: retry, or free the disk, or a writable file.
            (ffi::SQLITE_BUSY, true, StoreError::Busy(said())),
            (ffi::SQLITE_FULL, true, StoreError::Full(said())),
            (ffi::SQLITE_READONLY, true, StoreError::ReadOnly(said())),
            // A read's commit wrote nothing, whatever the engine says.
            (
                ffi::SQLITE_IOERR_FSYNC,
                false,
                StoreError::Unavailable(said()),
            ),
            (ffi::SQLITE_NOMEM, false, StoreError::Unavailable(said())),
        ] {
            let got = failed(code, wrote);
            assert_eq!(
                kind(&got),
                kind(&expected),
                "{code}, wrote {wrote}: {got:?}"
            );
        }
    }

    #[test]
    fn the_writer_flushes_through_the_drives_cache_where_fsync_does_not() {
        let (_dir, store) = store();
        let writer = store.lock();
        for pragma in ["fullfsync", "checkpoint_fullfsync"] {
            let on: i64 = writer
                .pragma_query_value(None, pragma, |row| row.get(0))
                .unwrap();
            assert_eq!(on, 1, "{pragma}");
        }
    }

    #[test]
    fn a_version_update_never_matches_the_version_it_replaces() {
        let (_dir, store) = store();
        let holder = |version| crate::store::HolderRecord {
            id: "bank".parse().unwrap(),
            policy: crate::policy::HolderPolicy::default(),
            attestation_keys: Vec::new(),
            retired_attestation_keys: Vec::new(),
            version,
        };
        let with = |change| entry().change(change);
        store
            .commit(with(Change::InsertHolder { holder: holder(1) }))
            .unwrap();
        // Versions a row reaches only by an edit behind the store's back: the one that no
        // version follows in SQL's integers, and the one that follows none. Saturating, the
        // update's "previous version" was the stored one and the row was replaced, unbumped.
        for (stored, update) in [(i64::MAX, u64::MAX), (i64::MAX, 1 << 63), (0, 0)] {
            store
                .lock()
                .execute("UPDATE holders SET version = ?1", [stored])
                .unwrap();
            assert_eq!(
                store.commit(with(Change::UpdateHolder {
                    holder: holder(update)
                })),
                Err(StoreError::Conflict),
                "stored {stored}, update to {update}"
            );
        }
        // The ordinary step still goes through.
        store
            .lock()
            .execute("UPDATE holders SET version = 1", [])
            .unwrap();
        store
            .commit(with(Change::UpdateHolder { holder: holder(2) }))
            .unwrap();
    }

    /// A precondition naming a version past `i64::MAX` (no row can hold it) holds for no row,
    /// as in the memory store: saturating, it matched a row edited to `i64::MAX`.
    #[test]
    fn a_version_precondition_never_matches_a_version_no_row_can_hold() {
        let (_dir, store) = store();
        let holder = crate::store::HolderRecord {
            id: "bank".parse().unwrap(),
            policy: crate::policy::HolderPolicy::default(),
            attestation_keys: Vec::new(),
            retired_attestation_keys: Vec::new(),
            version: 1,
        };
        let id = holder.id.clone();
        store
            .commit(entry().change(Change::InsertHolder { holder }))
            .unwrap();
        store
            .lock()
            .execute("UPDATE holders SET version = ?1", [i64::MAX])
            .unwrap();
        let expecting = |version| {
            entry().precondition(Precondition::HolderVersion {
                holder: id.clone(),
                version,
            })
        };
        for version in [u64::MAX, 1 << 63] {
            assert_eq!(
                store.commit(expecting(version)),
                Err(StoreError::Conflict),
                "{version}"
            );
        }
        store.commit(expecting(i64::MAX as u64)).unwrap();
    }

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("batch.sqlite")).unwrap();
        (dir, store)
    }

    /// Ids a bank remembered before version 8 (by kind and id, with an expiry) are still found
    /// whatever the signed time asked about, refuse a second presentation, and leave only once
    /// expired; writes go to the new table only.
    #[test]
    fn ids_remembered_before_version_8_are_refused_until_they_expire() {
        use crate::store::{GateQuery, LedgerRead, RecordKind, SeenKind};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v7.sqlite");
        {
            let connection = rusqlite::Connection::open(&path).unwrap();
            for migration in super::MIGRATIONS.iter().filter(|m| m.version <= 7) {
                connection.execute_batch(migration.sql).unwrap();
            }
            connection.pragma_update(None, "user_version", 7).unwrap();
            connection
                .execute_batch(
                    "INSERT INTO bank_seen (kind, id, expires_at) VALUES \
                     ('proof', 'old-p', 1000), ('token', 'old-t', 2000);",
                )
                .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SqliteStore::SCHEMA_VERSION);
        let at = |seconds| OffsetDateTime::from_unix_timestamp(seconds).unwrap();
        assert!(store.seen(SeenKind::Proof, "old-p", at(910)).unwrap());
        assert!(store.seen(SeenKind::Token, "old-t", at(1)).unwrap());
        assert!(!store.seen(SeenKind::Token, "old-p", at(910)).unwrap());
        let consent = "cns_1".parse().unwrap();
        let view = store
            .gate_view(&GateQuery {
                attestation: "att-1",
                consent: &consent,
                day: at(910).date(),
                proof_id: "old-p",
                proof_at: at(910),
                token_id: "old-t",
                token_at: at(1200),
            })
            .unwrap();
        assert!(view.proof_seen && view.token_seen);
        let commit = |change: Change| {
            Commit::new(AuditRecord::new(
                OffsetDateTime::UNIX_EPOCH,
                Actor::Platform("chat".parse().unwrap()),
                AuditEvent::PlatformRegistered { purposes: None },
            ))
            .change(change)
        };
        let remember = |id: &str| Change::RememberSeen {
            kind: SeenKind::Proof,
            id: id.into(),
            at: at(910),
        };
        assert_eq!(
            store.commit(commit(remember("old-p"))),
            Err(StoreError::Duplicate {
                kind: RecordKind::Presented(SeenKind::Proof),
                id: "old-p".into(),
            })
        );
        let prune = |kind, before| Change::PruneSeen {
            kind,
            before: at(before),
            limit: 8,
        };
        // Not expired before the cut: kept. Another kind's cut: kept.
        store.commit(commit(prune(SeenKind::Proof, 1000))).unwrap();
        store.commit(commit(prune(SeenKind::Token, 1500))).unwrap();
        assert!(store.seen(SeenKind::Proof, "old-p", at(910)).unwrap());
        assert!(store.seen(SeenKind::Token, "old-t", at(1)).unwrap());
        store.commit(commit(prune(SeenKind::Proof, 1001))).unwrap();
        assert!(!store.seen(SeenKind::Proof, "old-p", at(910)).unwrap());
        assert!(store.seen(SeenKind::Token, "old-t", at(1)).unwrap());
        // Gone, it is remembered again, in the new table.
        store.commit(commit(remember("old-p"))).unwrap();
        let rows =
            |sql: &str| -> i64 { store.lock().query_row(sql, [], |row| row.get(0)).unwrap() };
        assert_eq!(rows("SELECT COUNT(*) FROM bank_presented"), 1);
        assert_eq!(rows("SELECT COUNT(*) FROM bank_seen_before_v8"), 1);
        // A process of an older build, still running on the file, fails on the old name (its
        // statements name it) rather than reading a table no longer written.
        let old_view = store
            .lock()
            .prepare("SELECT COUNT(*) FROM bank_seen WHERE kind = 'proof' AND id = 'old-p'")
            .map(|_| ());
        assert!(old_view.is_err());
    }

    /// Every complete subtree's root, levels 0 to 5, computed here from the stored leaves.
    fn expected_levels(store: &SqliteStore) -> Vec<Vec<(u64, crate::merkle::Hash)>> {
        let mut level: Vec<_> = store
            .merkle_nodes(0, 0..u64::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, hash)| hash)
            .collect();
        let mut levels = Vec::new();
        for _ in 0..6 {
            levels.push((0u64..).zip(level.iter().copied()).collect());
            level = level
                .chunks_exact(2)
                .map(|pair| crate::merkle::node_hash(&pair[0], &pair[1]))
                .collect();
        }
        levels
    }

    /// Makes the file at `path` look as a build of version 8 left it: the nodes of levels 1 to 3
    /// stored (`expected`, the one at `edited` with a bit flipped), `user_version` 8.
    fn as_version_8(
        path: &std::path::Path,
        expected: &[Vec<(u64, crate::merkle::Hash)>],
        edited: Option<(usize, u64)>,
    ) {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection
            .execute_batch("DROP TRIGGER merkle_nodes_derived_levels")
            .unwrap();
        for (level, nodes) in expected.iter().enumerate().skip(1).take(3) {
            for (index, hash) in nodes {
                let mut hash = *hash;
                if edited == Some((level, *index)) {
                    hash[0] ^= 1;
                }
                connection
                    .execute(
                        "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)",
                        (level as i64, *index as i64, hash.as_slice()),
                    )
                    .unwrap();
            }
        }
        // Nor had it the feed's root (version 10).
        connection
            .execute_batch("ALTER TABLE bank_feed DROP COLUMN root")
            .unwrap();
        connection.pragma_update(None, "user_version", 8).unwrap();
    }

    /// A file of version 8 stored the nodes of levels 1 to 3; version 9 removes them and
    /// derives them, with the same answers, and the log still verifies and grows.
    #[test]
    fn a_version_8_file_loses_its_stored_low_nodes_and_answers_the_same() {
        use crate::store::LogRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v8.sqlite");
        let expected = {
            let store = SqliteStore::open(&path).unwrap();
            for n in 0..21 {
                store.commit(using(&format!("att-{n}"))).unwrap();
            }
            expected_levels(&store)
        };
        // As a build of version 8 left it: every level stored.
        as_version_8(&path, &expected, None);
        let low_rows = |store: &SqliteStore| -> i64 {
            store
                .lock()
                .query_row(
                    "SELECT COUNT(*) FROM merkle_nodes WHERE level BETWEEN 1 AND 3",
                    [],
                    |row| row.get(0),
                )
                .unwrap()
        };
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SqliteStore::SCHEMA_VERSION);
        assert_eq!(low_rows(&store), 0, "the stored low nodes are gone");
        assert_eq!(expected_levels(&store), expected);
        for (level, nodes) in (0u32..).zip(&expected) {
            assert_eq!(store.merkle_nodes(level, 0..u64::MAX).unwrap(), *nodes);
        }
        crate::verify_log(&store, None).unwrap();
        for n in 21..40 {
            store.commit(using(&format!("att-{n}"))).unwrap();
        }
        assert_eq!(low_rows(&store), 0, "appends store no low node");
        let report = crate::verify_log(&store, None).unwrap();
        assert_eq!(report.size, 40);
        // A process of an older build would store one: the file refuses it. (Another
        // connection: the store's own writer runs no trigger.)
        let refused = rusqlite::Connection::open(&path).unwrap().execute(
            "INSERT INTO merkle_nodes (level, idx, hash) VALUES (2, 9, zeroblob(32))",
            [],
        );
        assert!(refused.is_err(), "a node of a derived level was stored");
        assert_eq!(low_rows(&store), 0);
    }

    /// A file of version 8 opened read-only (an auditor's copy, not migrated) is read as it is:
    /// its stored nodes of levels 1 to 3, which a build of version 8 still uses, are compared
    /// by the verifier, so an edited one is caught.
    #[test]
    fn a_version_8_file_opened_read_only_has_its_low_nodes_verified() {
        use crate::store::LogRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v8-evidence.sqlite");
        {
            let store = SqliteStore::open(&path).unwrap();
            for n in 0..12 {
                store.commit(using(&format!("att-{n}"))).unwrap();
            }
            let expected = expected_levels(&store);
            drop(store);
            // The attack: node (2, 1) edited.
            as_version_8(&path, &expected, Some((2, 1)));
        }
        let evidence = SqliteStore::open_read_only(&path).unwrap();
        assert_eq!(evidence.derived_levels(), 0);
        assert_eq!(
            crate::verify_log(&evidence, None),
            Err(crate::LogError::TreeMismatch { size: 12 })
        );
    }

    /// A leaf missing from the file (a tampered or damaged store) breaks the derived nodes above
    /// it, and only those: no node is derived from leaves that are not its own.
    #[test]
    fn a_missing_leaf_breaks_only_the_derived_nodes_above_it() {
        use crate::store::LogRead;
        let (_dir, store) = store();
        for n in 0..16 {
            store.commit(using(&format!("att-{n}"))).unwrap();
        }
        let expected = expected_levels(&store);
        store
            .lock()
            .execute_batch(
                "DROP TRIGGER merkle_nodes_no_delete;
                 DELETE FROM merkle_nodes WHERE level = 0 AND idx = 5;",
            )
            .unwrap();
        let without = |level: usize, gone: &[u64]| -> Vec<(u64, crate::merkle::Hash)> {
            expected[level]
                .iter()
                .filter(|(index, _)| !gone.contains(index))
                .copied()
                .collect()
        };
        assert_eq!(store.merkle_nodes(1, 0..8).unwrap(), without(1, &[2]));
        assert_eq!(store.merkle_nodes(2, 0..4).unwrap(), without(2, &[1]));
        assert_eq!(store.merkle_nodes(3, 0..2).unwrap(), without(3, &[0]));
        assert_eq!(store.merkle_node(1, 2).unwrap(), None);
        assert_eq!(store.merkle_node(1, 3).unwrap(), Some(expected[1][3].1));
        assert_eq!(store.merkle_node(2, 1).unwrap(), None);
        assert_eq!(store.merkle_node(3, 1).unwrap(), Some(expected[3][1].1));
    }

    #[test]
    fn the_gate_view_refuses_keys_found_under_an_edited_subject() {
        use crate::store::{AttestationRecord, DeviceKeyRecord, GateQuery, LedgerRead};
        let (_dir, store) = store();
        let at = OffsetDateTime::UNIX_EPOCH;
        let attestation = AttestationRecord {
            id: "att-1".into(),
            consent: "cns_1".parse().unwrap(),
            subject: "alice".parse().unwrap(),
            platform: "chat".parse().unwrap(),
            broker: "broker".parse().unwrap(),
            scopes: crate::ScopeSet::from([crate::Scope::Balance]),
            purposes: crate::PurposeSet::from([crate::Purpose::CustomerService]),
            accounts: crate::AccountSet::from(["acc-1".parse().unwrap()]),
            unattended_daily_limit: 4,
            signed_at: at,
            expires_at: at + time::Duration::days(90),
            revoked: None,
            superseded_by: None,
            devices: Vec::new(),
            plaintext: crate::PlaintextUses::new(),
            pairwise: None,
            version: 1,
        };
        let device = |subject: &str, seed: &[u8]| DeviceKeyRecord {
            subject: subject.parse().unwrap(),
            key: crate::hpke::DeviceSecretKey::derive(seed).public_key(),
            registered_at: at,
            revoked_at: None,
        };
        let (phone, mallorys) = (device("alice", b"phone"), device("mallory", b"other"));
        let changes = [
            Change::RecordAttestation {
                record: attestation,
            },
            Change::RegisterDeviceKey {
                record: phone.clone(),
            },
            Change::RegisterDeviceKey { record: mallorys },
        ];
        for change in changes {
            store
                .commit(
                    Commit::new(AuditRecord::new(
                        at,
                        Actor::Platform("chat".parse().unwrap()),
                        AuditEvent::PlatformRegistered { purposes: None },
                    ))
                    .change(change),
                )
                .unwrap();
        }
        let consent = "cns_1".parse().unwrap();
        let query = GateQuery {
            attestation: "att-1",
            consent: &consent,
            day: at.date(),
            proof_id: "p-1",
            proof_at: at,
            token_id: "t-1",
            token_at: at,
        };
        assert_eq!(store.gate_view(&query).unwrap().device_keys, [phone]);
        // A device key's row moved under Alice, its record still Mallory's.
        let edit = |sql: &str| store.lock().execute(sql, []).unwrap();
        edit("UPDATE bank_device_keys SET subject = 'alice' WHERE subject = 'mallory'");
        assert!(matches!(
            store.gate_view(&query),
            Err(StoreError::Corrupt(_))
        ));
        edit("UPDATE bank_device_keys SET subject = 'mallory' WHERE record LIKE '%mallory%'");
        assert!(store.gate_view(&query).is_ok());
        // The attestation's subject column edited, its record still Alice's.
        edit("UPDATE bank_attestations SET subject = 'mallory'");
        assert!(matches!(
            store.gate_view(&query),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_transaction_guard_commits_or_rolls_back_when_dropped() {
        let (_dir, store) = store();
        let writer = store.lock();
        let count = |c: &rusqlite::Connection| -> i64 {
            c.query_row("SELECT COUNT(*) FROM bank_feed", [], |row| row.get(0))
                .unwrap()
        };
        let insert = "INSERT INTO bank_feed (id, position, generated_at) VALUES (1, 1, 1)";
        {
            let tx = super::Tx::begin(&writer, rusqlite::TransactionBehavior::Immediate).unwrap();
            tx.execute(insert, []).unwrap();
            assert!(!writer.is_autocommit());
        }
        assert!(writer.is_autocommit(), "dropped uncommitted: rolled back");
        assert_eq!(count(&writer), 0);
        for _ in 0..2 {
            let tx = super::Tx::begin(&writer, rusqlite::TransactionBehavior::Deferred).unwrap();
            tx.execute("DELETE FROM bank_feed", []).unwrap();
            tx.execute(insert, []).unwrap();
            tx.commit().unwrap();
        }
        assert!(writer.is_autocommit());
        assert_eq!(count(&writer), 1);
        // A COMMIT that fails (a deferred foreign key, checked at COMMIT) leaves the transaction
        // open: dropping the guard rolls it back, and the next transaction begins.
        writer
            .execute_batch(
                "CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY); \
                 CREATE TEMP TABLE child (parent INTEGER REFERENCES parent (id) \
                     DEFERRABLE INITIALLY DEFERRED);",
            )
            .unwrap();
        let tx = super::Tx::begin(&writer, rusqlite::TransactionBehavior::Immediate).unwrap();
        tx.execute("INSERT INTO child (parent) VALUES (7)", [])
            .unwrap();
        tx.execute("DELETE FROM bank_feed", []).unwrap();
        assert!(tx.commit().is_err());
        assert!(writer.is_autocommit(), "the failed commit was rolled back");
        assert_eq!(count(&writer), 1);
        let orphans: i64 = writer
            .query_row("SELECT COUNT(*) FROM child", [], |row| row.get(0))
            .unwrap();
        assert_eq!(orphans, 0);
        // A transaction left open by someone else is ended before the next one begins.
        writer
            .execute_batch("BEGIN; DELETE FROM bank_feed;")
            .unwrap();
        let tx = super::Tx::begin(&writer, rusqlite::TransactionBehavior::Deferred).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(&writer), 1, "the abandoned delete was rolled back");
    }

    /// A scan (a range of the log) runs on the pool of readers that map the file, a read of a
    /// few rows under load on the pool that does not, and neither takes the other's connection.
    #[test]
    fn scans_read_through_mapped_pages_and_reads_of_a_few_rows_do_not() {
        let (_dir, store) = store();
        let readers = store.readers.as_ref().unwrap();
        let idle = |pool: &Pool<Connection>| {
            pool.idle(|idle| {
                idle.iter()
                    .map(|c| c.pragma_query_value(None, "mmap_size", |row| row.get::<_, i64>(0)))
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap()
            })
        };
        store.audit_bytes(0..10).unwrap();
        assert_eq!(idle(&readers.scans), [MMAP_BYTES]);
        assert!(idle(&readers.point).is_empty());
        // The writer's connection busy (as under a batch): a read of a few rows goes to the
        // unmapped pool.
        let writer = store.lock();
        assert_eq!(store.audit_len().unwrap(), 0);
        drop(writer);
        assert_eq!(idle(&readers.point), [0]);
        assert_eq!(idle(&readers.scans), [MMAP_BYTES]);
    }

    /// With every reader connection of a pool lent, a read waits for one to be given back and
    /// opens none: however many threads read at once, the pool holds at most `MAX_READERS`.
    #[test]
    fn reads_past_the_pools_size_wait_for_a_connection_and_open_none() {
        let (_dir, store) = store();
        store.commit(using("one")).unwrap();
        let point = &store.readers.as_ref().unwrap().point;
        let mut lent: Vec<_> = (0..MAX_READERS)
            .map(|_| store.reader(point, false).unwrap())
            .collect();
        // The writer busy (as under a batch): reads go to the pool.
        let writer = store.lock();
        std::thread::scope(|scope| {
            let reading = scope.spawn(|| store.audit_len());
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert!(
                !reading.is_finished(),
                "a read was served past the pool's size"
            );
            lent.pop();
            assert_eq!(reading.join().ok().map(Result::ok), Some(Some(1)));
        });
        drop(writer);
        assert_eq!(
            point.opened(),
            MAX_READERS as u64,
            "a connection was opened past the limit"
        );
    }

    /// A read that panics mid-transaction gives its connection back with the transaction rolled
    /// back: the next read on it sees later commits, not the panicked read's snapshot.
    #[test]
    #[expect(clippy::panic, reason = "the read under test panics")]
    fn a_read_that_panics_gives_back_a_connection_with_no_transaction_open() {
        let (_dir, store) = store();
        store.commit(using("one")).unwrap();
        let point = &store.readers.as_ref().unwrap().point;
        let writer = store.lock();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<u64, _> = store.read(|db| {
                let n = super::read::audit_len(db)?;
                if n < 100 {
                    panic!("a read panicked after its first statement");
                }
                Ok(n)
            });
        }));
        assert!(panicked.is_err());
        assert_eq!(
            point.idle(|idle| idle
                .iter()
                .map(Connection::is_autocommit)
                .collect::<Vec<_>>()),
            [true],
            "given back, and with no transaction open"
        );
        drop(writer);
        store.commit(using("two")).unwrap();
        let writer = store.lock();
        assert_eq!(store.audit_len().unwrap(), 2, "a fresh snapshot");
        drop(writer);
        assert_eq!(point.opened(), 1, "the same connection, reused");
    }

    #[test]
    fn statements_are_not_planned_again_for_each_value_bound_to_them() {
        let (_dir, store) = store();
        // A `LIMIT ?` (the gate's prune of seen ids has one) is a value SQLite would otherwise
        // plan by, parsing and planning the statement again at every run.
        let runs = [(1, 8), (2, 3), (3, 100)];
        {
            let writer = store.lock();
            let mut prune = writer
                .prepare_cached(super::super::ledger::PRUNE_SEEN)
                .unwrap();
            for (before, limit) in runs {
                prune.execute(("proof", before, limit)).unwrap();
            }
            assert_eq!(prune.get_status(rusqlite::StatementStatus::RePrepare), 0);
        }
        let mut reader = store
            .reader(&store.readers.as_ref().unwrap().point, false)
            .unwrap();
        let mut scan = reader
            .connection()
            .unwrap()
            .prepare("SELECT id FROM bank_presented WHERE kind = 'proof' AND at < ?1 ORDER BY at LIMIT ?2")
            .unwrap();
        for (before, limit) in runs {
            scan.query((before, limit)).unwrap().next().unwrap();
        }
        assert_eq!(scan.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    #[test]
    fn a_refused_commit_in_a_batch_fails_alone_and_the_others_land_in_order() {
        let (_dir, store) = store();
        let batch = ["a", "a", "b", "b"].map(|id| prepared(using(id)));
        let answers = store.write_batch(batch.into());
        assert_eq!(answers.len(), 4);
        assert_eq!(answers[0].as_ref().unwrap().audit_seqs, 0..1);
        assert!(matches!(answers[1], Err(StoreError::Duplicate { .. })));
        // The refused commit took no sequence number: the next one follows the first.
        assert_eq!(answers[2].as_ref().unwrap().audit_seqs, 1..2);
        assert!(matches!(answers[3], Err(StoreError::Duplicate { .. })));
        assert_eq!(store.audit_len().unwrap(), 2);
        assert!(store.attestation_used("a").unwrap() && store.attestation_used("b").unwrap());
        // The log the batch wrote is whole: every entry is where its number says.
        assert_eq!(store.audit_entries(0..2).unwrap().len(), 2);
        // Refused once they had begun writing: the batch was applied a second time, carefully.
        assert_eq!(store.commit_stats().batches_redone, 1);
    }

    /// A store whose attestation "taken" is used (by the log's entry 0).
    fn store_with_taken() -> (tempfile::TempDir, SqliteStore) {
        let (dir, store) = store();
        store
            .write_batch(vec![prepared(using("taken"))])
            .pop()
            .unwrap()
            .unwrap();
        (dir, store)
    }

    /// A commit that uses attestation `id`, then "taken": refused after it has written.
    fn half(id: &str) -> Commit {
        using(id).change(Change::UseAttestation {
            attestation_id: "taken".into(),
        })
    }

    /// A commit refused after some of its changes were written, in a batch applied without a
    /// savepoint per commit: what it wrote is undone, and only it; the commits before and after
    /// it land as if it had never been sent.
    #[test]
    fn a_commit_refused_after_writing_leaves_nothing_and_the_batch_lands_without_it() {
        let (_dir, store) = store_with_taken();
        let answers = store.write_batch(vec![
            prepared(using("before")),
            prepared(half("half")),
            prepared(using("after")),
        ]);
        assert_eq!(answers[0].as_ref().unwrap().audit_seqs, 1..2);
        assert!(matches!(
            &answers[1],
            Err(StoreError::Duplicate { id, .. }) if id == "taken"
        ));
        assert_eq!(answers[2].as_ref().unwrap().audit_seqs, 2..3);
        assert!(
            !store.attestation_used("half").unwrap(),
            "its first change was kept"
        );
        assert!(
            store.attestation_used("before").unwrap() && store.attestation_used("after").unwrap()
        );
        assert_eq!(store.audit_len().unwrap(), 3);
        assert_eq!(store.commit_stats().batches_redone, 1);
        // The frontier kept after the redo is the log's: the next append extends it.
        let next = store.write_batch(vec![prepared(using("next"))]);
        assert_eq!(next[0].as_ref().unwrap().audit_seqs, 3..4);
        crate::auditor::verify_log(&store, None).unwrap();
    }

    /// The store's writer runs no trigger (it keeps their rules itself); any other connection
    /// to the file meets them: an update, a delete, or an insert that leaves a gap is refused.
    #[test]
    fn the_writer_runs_no_trigger_and_every_other_connection_meets_them() {
        let (dir, store) = store();
        for id in ["one", "two", "three"] {
            store.commit(using(id)).unwrap();
        }
        let writer_runs_triggers = store
            .lock()
            .db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER)
            .unwrap();
        assert!(!writer_runs_triggers);
        let other = Connection::open(dir.path().join("batch.sqlite")).unwrap();
        for sql in [
            "UPDATE audit SET entry = 'x' WHERE seq = 0",
            "DELETE FROM audit WHERE seq = 2",
            "INSERT INTO audit (seq, entry) VALUES (5, '{}')",
            "DELETE FROM merkle_nodes",
            "INSERT INTO merkle_nodes (level, idx, hash) VALUES (1, 0, zeroblob(32))",
        ] {
            assert!(other.execute(sql, []).is_err(), "{sql} was accepted");
        }
        drop(other);
        // The writer still appends where the log ends, and the log verifies.
        assert_eq!(store.commit(using("four")).unwrap().audit_seqs, 3..4);
        assert_eq!(crate::auditor::verify_log(&store, None).unwrap().size, 4);
    }

    /// The writer keeps its temporary journals (a batch's savepoint journal) in memory, not in
    /// files it creates and deletes per batch.
    #[test]
    fn the_writer_keeps_its_savepoint_journal_in_memory() {
        let (_dir, store) = store();
        let temp_store: i64 = store
            .lock()
            .pragma_query_value(None, "temp_store", |row| row.get(0))
            .unwrap();
        assert_eq!(temp_store, 2, "PRAGMA temp_store is not MEMORY");
    }

    /// Two commits refused after writing in one batch: the batch goes back once, the second is
    /// undone alone from a savepoint of its own, and every other commit lands in order.
    #[test]
    fn a_second_refusal_after_writing_is_undone_alone_without_going_back_again() {
        let (_dir, store) = store_with_taken();
        let answers = store.write_batch(vec![
            prepared(using("a")),
            prepared(half("half-1")),
            prepared(using("b")),
            prepared(half("half-2")),
            prepared(using("c")),
        ]);
        let seqs: Vec<_> = answers
            .iter()
            .map(|a| a.as_ref().map(|r| r.audit_seqs.clone()).ok())
            .collect();
        assert_eq!(seqs, [Some(1..2), None, Some(2..3), None, Some(3..4)]);
        for id in ["a", "b", "c"] {
            assert!(store.attestation_used(id).unwrap(), "{id}");
        }
        for id in ["half-1", "half-2"] {
            assert!(!store.attestation_used(id).unwrap(), "{id} was kept");
        }
        assert_eq!(store.commit_stats().batches_redone, 1);
        assert_eq!(crate::auditor::verify_log(&store, None).unwrap().size, 4);
    }

    /// A newer build's migration fences this build's writers off by the schema version, since
    /// they run no trigger: a commit after it is refused, and writes nothing.
    #[test]
    fn a_file_migrated_by_a_newer_build_takes_no_more_commits_from_this_one() {
        let (dir, store) = store();
        store.commit(using("before")).unwrap();
        let newer = Connection::open(dir.path().join("batch.sqlite")).unwrap();
        newer
            .execute_batch(&format!(
                "CREATE TRIGGER fence BEFORE INSERT ON audit \
                     BEGIN SELECT RAISE(ABORT, 'fenced'); END; \
                 PRAGMA user_version = {};",
                SqliteStore::SCHEMA_VERSION + 1
            ))
            .unwrap();
        drop(newer);
        let too_new = StoreError::SchemaTooNew {
            found: SqliteStore::SCHEMA_VERSION + 1,
            supported: SqliteStore::SCHEMA_VERSION,
        };
        assert_eq!(store.commit(using("after")), Err(too_new.clone()));
        let batch = store.write_batch(vec![prepared(using("x")), prepared(using("y"))]);
        assert!(batch.iter().all(|answer| answer == &Err(too_new.clone())));
        assert!(!store.attestation_used("after").unwrap());
        assert_eq!(store.audit_len().unwrap(), 1);
    }

    /// A full disk ends SQLite's transaction whole (the writer runs no statement journal): the
    /// batch's commits are answered as they would have been one at a time, those that fit kept.
    #[test]
    fn a_full_disk_answers_a_batch_as_one_commit_at_a_time() {
        let ids: Vec<String> = (0..8)
            .map(|i| format!("{i:04}{}", "x".repeat(3000)))
            .collect();
        let run = |together: bool| {
            let (dir, store) = store();
            store.commit(using("seed")).unwrap();
            let pages: i64 = store
                .lock()
                .query_row("PRAGMA page_count", [], |row| row.get(0))
                .unwrap();
            store
                .limit_size(u64::try_from(pages + 4).unwrap() * 4096)
                .unwrap();
            let commits = ids.iter().map(|id| prepared(using(id)));
            let answers: Vec<_> = if together {
                store.write_batch(commits.collect())
            } else {
                commits
                    .flat_map(|commit| store.write_batch(vec![commit]))
                    .collect()
            };
            for (id, answer) in ids.iter().zip(&answers) {
                assert_eq!(store.attestation_used(id).unwrap(), answer.is_ok());
            }
            assert!(crate::auditor::verify_log(&store, None).is_ok());
            drop(dir);
            answers
                .into_iter()
                .map(|answer| answer.map(|receipt| receipt.audit_seqs))
                .collect::<Vec<_>>()
        };
        let alone = run(false);
        assert!(alone.iter().any(Result::is_ok) && alone.iter().any(Result::is_err));
        assert!(
            alone
                .iter()
                .all(|a| a.is_ok() || matches!(a, Err(StoreError::Full(_))))
        );
        let together = run(true);
        let shape = |answers: &[Result<std::ops::Range<u64>, StoreError>]| {
            answers.iter().map(|a| a.clone().ok()).collect::<Vec<_>>()
        };
        assert_eq!(shape(&together), shape(&alone));
    }

    /// A batch whose commits are refused only by their preconditions (which write nothing), or
    /// not at all, is written in one attempt.
    #[test]
    fn a_batch_refused_only_by_preconditions_is_written_once() {
        let (_dir, store) = store();
        let stale = using("stale")
            .precondition(Precondition::holder_version(&"nobody".parse().unwrap(), 1));
        let answers = store.write_batch(vec![
            prepared(using("one")),
            prepared(stale),
            prepared(using("two")),
        ]);
        assert_eq!(answers[0].as_ref().unwrap().audit_seqs, 0..1);
        assert!(matches!(answers[1], Err(StoreError::Conflict)));
        assert_eq!(answers[2].as_ref().unwrap().audit_seqs, 1..2);
        assert!(!store.attestation_used("stale").unwrap());
        let stats = store.commit_stats();
        assert_eq!((stats.transactions, stats.batches_redone), (1, 0));
    }

    #[test]
    fn a_batch_the_disk_cannot_hold_answers_no_commit_it_did_not_keep() {
        let (_dir, store) = store();
        store
            .write_batch(vec![prepared(using("seed"))])
            .pop()
            .unwrap()
            .unwrap();
        store.limit_size(0).unwrap();
        // Ids long enough that a few pages' worth cannot fit under the limit.
        let ids: Vec<String> = (0..64)
            .map(|i| format!("{i:04}{}", "x".repeat(3000)))
            .collect();
        let answers = store.write_batch(ids.iter().map(|id| prepared(using(id))).collect());
        assert!(
            answers.iter().any(Result::is_err),
            "the limit was never reached"
        );
        let kept = answers.iter().filter(|a| a.is_ok()).count() as u64;
        // Answered Ok ⇔ in the database, for every commit of the batch.
        for (id, answer) in ids.iter().zip(&answers) {
            assert_eq!(
                store.attestation_used(id).unwrap(),
                answer.is_ok(),
                "{answer:?}"
            );
        }
        assert_eq!(store.audit_len().unwrap(), 1 + kept);
    }

    #[test]
    fn concurrent_commits_share_transactions_and_every_one_is_answered_with_its_own_entry() {
        const THREADS: usize = 8;
        const EACH: usize = 40;
        let (_dir, store) = store();
        let store = std::sync::Arc::new(store);
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let id = format!("t{t}-{i}");
                            let seqs = store.commit(using(&id)).unwrap().audit_seqs;
                            (seqs.start, id)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen: Vec<(u64, String)> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        seen.sort();
        let total = (THREADS * EACH) as u64;
        assert_eq!(
            seen.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
            (0..total).collect::<Vec<_>>(),
            "every commit got its own sequence number, none twice, no gap"
        );
        assert_eq!(store.audit_len().unwrap(), total);
        let stats = store.commit_stats();
        assert_eq!(stats.commits, total);
        assert!(
            stats.largest_batch >= 2 && stats.transactions < stats.commits,
            "eight callers never shared a transaction: {stats:?}"
        );
    }
}

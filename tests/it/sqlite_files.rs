//! Bad files and bad places: the SQLite store answers with a typed [`StoreError`], never a
//! panic, never a silently replaced file, and never a permit it did not record.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::*;
use consent_broker::*;
use rusqlite::Connection;

fn temp_db(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// `n` pseudo-random bytes (xorshift), never starting with SQLite's magic string.
fn garbage(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// Opens `path` with the store, catching any panic, and returns the error it must give.
fn open_err(path: &Path) -> StoreError {
    let owned = path.to_path_buf();
    let result = std::panic::catch_unwind(move || SqliteStore::open(&owned).map(|_| ()))
        .expect("SqliteStore::open panicked");
    let error = result.expect_err("the store opened a bad file");
    eprintln!("{}: {error:?}", path.display());
    error
}

/// A database holding bank, platform, a live consent and `accesses` recorded decisions, fully
/// checkpointed into the main file and closed. Returns the consent.
fn populated(path: &Path, accesses: usize) -> ConsentId {
    let fx = Fixture::with_store(SqliteStore::open(path).unwrap());
    let consent = fx.granted().id().clone();
    for _ in 0..accesses {
        assert_eq!(fx.decide(&fx.access(&consent)), Decision::Permit);
    }
    drop(fx);
    let connection = Connection::open(path).unwrap();
    connection
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(connection);
    consent.clone()
}

fn audit_rows(connection: &Connection) -> Vec<(i64, String)> {
    connection
        .prepare("SELECT seq, entry FROM audit ORDER BY seq")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn assert_gap_free(store: &SqliteStore) -> Vec<AuditEntry> {
    let len = store.audit_len().unwrap();
    let entries = store.audit_entries(0..len).unwrap();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..len).collect::<Vec<_>>());
    entries
}

#[test]
fn random_bytes_are_not_a_database() {
    let (_dir, path) = temp_db("random.sqlite");
    let bytes = garbage(8192, 7);
    fs::write(&path, &bytes).unwrap();
    let error = open_err(&path);
    assert!(
        matches!(&error, StoreError::NotADatabase { path: p, .. } if p == &path.display().to_string()),
        "{error:?}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "the file was left alone");
}

/// SQLite treats a zero-length file as a new, empty database, so the store opens it and
/// creates its schema in it: an empty file is not an error.
#[test]
fn an_empty_file_becomes_a_new_database() {
    let (_dir, path) = temp_db("empty.sqlite");
    fs::write(&path, b"").unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SqliteStore::SCHEMA_VERSION);
    assert_eq!(store.audit_len().unwrap(), 0);
    drop(store);
    assert!(fs::metadata(&path).unwrap().len() > 0);
}

/// Half of a checkpointed database: the header promises more pages than the file has, which
/// SQLite reports as `SQLITE_CORRUPT`.
#[test]
fn a_truncated_database_is_corrupt() {
    let (_dir, path) = temp_db("truncated.sqlite");
    populated(&path, 300);
    let size = fs::metadata(&path).unwrap().len();
    assert!(size >= 8 * 4096, "a multi-page database ({size} bytes)");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    let bytes = fs::read(&path).unwrap();
    let error = open_err(&path);
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "the damaged file was not replaced"
    );
}

/// The root page of the audit table overwritten with garbage: the store's integrity check at
/// open finds it.
#[test]
fn an_overwritten_page_is_corrupt() {
    let (_dir, path) = temp_db("overwritten.sqlite");
    populated(&path, 300);
    let (page_size, root): (i64, i64) = {
        let connection = Connection::open(&path).unwrap();
        let page_size = connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap();
        let root = connection
            .query_row(
                "SELECT rootpage FROM sqlite_schema WHERE name = 'audit'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        (page_size, root)
    };
    assert!(root > 1);
    let mut bytes = fs::read(&path).unwrap();
    let start = usize::try_from((root - 1) * page_size).unwrap();
    let end = start + usize::try_from(page_size).unwrap();
    bytes[start..end].copy_from_slice(&garbage(end - start, 11));
    fs::write(&path, &bytes).unwrap();
    let error = open_err(&path);
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "the damaged file was not replaced"
    );
}

/// Page 1 (the header and the schema table) overwritten: no longer recognisable as SQLite.
#[test]
fn an_overwritten_header_is_not_a_database() {
    let (_dir, path) = temp_db("header.sqlite");
    populated(&path, 10);
    let mut bytes = fs::read(&path).unwrap();
    bytes[..4096].copy_from_slice(&garbage(4096, 13));
    fs::write(&path, &bytes).unwrap();
    let error = open_err(&path);
    assert!(
        matches!(error, StoreError::NotADatabase { .. }),
        "{error:?}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_newer_schema_is_refused() {
    let (_dir, path) = temp_db("newer.sqlite");
    populated(&path, 1);
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    assert_eq!(
        open_err(&path),
        StoreError::SchemaTooNew {
            found: 99,
            supported: SqliteStore::SCHEMA_VERSION
        }
    );
    let version: i64 = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 99, "the newer database was not touched");
}

fn foreign_database(path: &Path, user_version: i64) {
    let connection = Connection::open(path).unwrap();
    connection
        .execute_batch(
            "CREATE TABLE recipes (name TEXT PRIMARY KEY, steps TEXT NOT NULL);
             INSERT INTO recipes VALUES ('bread', 'flour, water, salt, yeast');",
        )
        .unwrap();
    connection
        .pragma_update(None, "user_version", user_version)
        .unwrap();
}

#[test]
fn a_foreign_database_is_not_ours() {
    let (_dir, path) = temp_db("foreign.sqlite");
    foreign_database(&path, 0);
    let error = open_err(&path);
    assert!(
        matches!(error, StoreError::NotADatabase { .. }),
        "{error:?}"
    );
    let connection = Connection::open(&path).unwrap();
    let steps: String = connection
        .query_row(
            "SELECT steps FROM recipes WHERE name = 'bread'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(steps, "flour, water, salt, yeast");
    let tables: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "no table of ours was added");
}

/// A refused file should be left as it was; but the store switches it to WAL mode (a
/// persistent change of the file's header) before it looks at the schema and refuses it.
#[test]
fn a_refused_foreign_database_keeps_its_journal_mode() {
    let (_dir, path) = temp_db("foreign-mode.sqlite");
    foreign_database(&path, 0);
    let before = fs::read(&path).unwrap();
    let error = open_err(&path);
    assert!(
        matches!(error, StoreError::NotADatabase { .. }),
        "{error:?}"
    );
    let mode: String = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    assert_eq!(fs::read(&path).unwrap(), before);
}

/// A foreign database that uses `user_version` for its own purposes (a common practice) is not
/// ours either.
#[test]
fn a_foreign_database_with_a_user_version_is_not_ours() {
    let (_dir, path) = temp_db("foreign-versioned.sqlite");
    foreign_database(&path, 1);
    let error = open_err(&path);
    assert!(
        matches!(error, StoreError::NotADatabase { .. }),
        "{error:?}"
    );
}

#[test]
fn a_version_1_database_is_migrated_keeping_its_data() {
    let (_dir, path) = temp_db("v1.sqlite");
    let profile = PlatformProfile {
        id: id("legacy-chat"),
        registered_purposes: PurposeSet::from([Purpose::CustomerService]),
    };
    {
        let v1 = &SqliteStore::MIGRATIONS[0];
        assert_eq!(v1.version, 1);
        let connection = Connection::open(&path).unwrap();
        connection.execute_batch(v1.sql).unwrap();
        connection.pragma_update(None, "user_version", 1).unwrap();
        connection
            .execute(
                "INSERT INTO platforms (id, record) VALUES (?1, ?2)",
                (
                    profile.id.as_str(),
                    serde_json::to_string(&profile).unwrap(),
                ),
            )
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SqliteStore::SCHEMA_VERSION);
    assert_eq!(store.platform(&profile.id).unwrap(), Some(profile.clone()));
    assert_eq!(store.published_keys().unwrap(), vec![]);
    drop(store);
    let connection = Connection::open(&path).unwrap();
    let objects: BTreeSet<String> = connection
        .prepare("SELECT name FROM sqlite_schema")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(objects.contains("published_keys"), "{objects:?}");
    assert!(!objects.contains("signing_keys"), "{objects:?}");
    assert!(objects.contains("audit_gap_free"), "{objects:?}");
    drop(connection);
    // The migrated database works as a broker's store.
    let fx = Fixture::with_store(SqliteStore::open(&path).unwrap());
    let consent = fx.granted().id().clone();
    assert_eq!(fx.decide(&fx.access(&consent)), Decision::Permit);
    assert_eq!(
        fx.broker.store().platform(&profile.id).unwrap(),
        Some(profile)
    );
}

/// Nothing can be created inside /proc, even by root.
#[test]
fn an_unwritable_place_is_an_error() {
    let path = Path::new("/proc/consent-broker-test.sqlite");
    let error = open_err(path);
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(!path.exists());
}

// A file made read-only after opening is not tested: the tests run as root, who may write a
// file whatever its mode, and opening it with `SQLITE_OPEN_READ_ONLY` through rusqlite would
// bypass the store entirely.

/// With the database capped at its current size, decisions are recorded until the cap is hit;
/// the call that hits it returns `Full` and leaves nothing; after lifting the cap decisions are
/// recorded again.
#[test]
fn a_full_database_permits_nothing_unrecorded() {
    let (_dir, path) = temp_db("full.sqlite");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let fx = Fixture::with_store(store.clone());
    let consent = fx.granted().id().clone();
    let size: u64 = {
        let connection = Connection::open(&path).unwrap();
        let pages: i64 = connection
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        let page_size: i64 = connection
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap();
        u64::try_from(pages * page_size).unwrap()
    };
    store.limit_size(size).unwrap();
    let mut permits = Vec::new();
    let mut full = None;
    for i in 0..10_000 {
        let mut access = fx.access(&consent);
        if i % 2 == 1 {
            access.presence = Presence::Unattended;
        }
        let before = fx.audit_len();
        match fx.broker.authorise_access(&access) {
            Ok(AccessOutcome::Permitted(permit)) => permits.push(permit.audit_seq()),
            Ok(AccessOutcome::Denied(_)) => {}
            Err(Error::Store(StoreError::Full(detail))) => {
                assert_eq!(fx.audit_len(), before, "the failed call left an entry");
                full = Some(detail);
                break;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(full.is_some(), "the capped database never filled");
    assert!(!permits.is_empty(), "some decisions fitted before the cap");
    let entries = assert_gap_free(&store);
    for seq in &permits {
        let entry = &entries[usize::try_from(*seq).unwrap()];
        assert_eq!(entry.kind(), AuditKind::AccessPermitted);
    }
    let unattended = entries
        .iter()
        .filter(|e| {
            e.kind() == AuditKind::AccessPermitted
                && e.event.presence() == Some(Presence::Unattended)
        })
        .count();
    assert_eq!(
        u64::from(
            store
                .usage(&consent, START.date())
                .unwrap()
                .unattended_today
        ),
        u64::try_from(unattended).unwrap()
    );
    // Still full: the next call fails too, and leaves nothing.
    let len = fx.audit_len();
    assert!(matches!(
        fx.broker.authorise_access(&fx.access(&consent)),
        Err(Error::Store(StoreError::Full(_)))
    ));
    assert_eq!(fx.audit_len(), len);
    store.limit_size(u64::MAX).unwrap();
    let outcome = fx.broker.authorise_access(&fx.access(&consent)).unwrap();
    assert_eq!(outcome.decision(), Decision::Permit);
    assert_eq!(outcome.audit_seq(), len);
    assert_eq!(fx.audit_len(), len + 1);
    assert_gap_free(&store);
}

/// The triggers keep the log append-only and gap-free even against direct SQL.
#[test]
fn the_audit_triggers_refuse_tampering() {
    let (_dir, path) = temp_db("triggers.sqlite");
    populated(&path, 5);
    let connection = Connection::open(&path).unwrap();
    let before = audit_rows(&connection);
    let next = i64::try_from(before.len()).unwrap();
    let valid_entry = before.last().unwrap().1.clone();
    let attacks = [
        "UPDATE audit SET entry = 'x'".to_owned(),
        "UPDATE audit SET seq = seq + 100 WHERE seq = 0".to_owned(),
        "DELETE FROM audit".to_owned(),
        format!("DELETE FROM audit WHERE seq = {}", next - 1),
        format!(
            "INSERT INTO audit (seq, entry) VALUES ({}, '{valid_entry}')",
            next + 1
        ),
        format!("INSERT INTO audit (seq, entry) VALUES (NULL, '{valid_entry}')"),
        format!("INSERT OR REPLACE INTO audit (seq, entry) VALUES (0, '{valid_entry}')"),
        format!(
            "INSERT OR REPLACE INTO audit (seq, entry) VALUES ({}, '{valid_entry}')",
            next - 1
        ),
        format!("INSERT INTO audit (seq, entry) VALUES (-1, '{valid_entry}')"),
    ];
    for sql in &attacks {
        let result = connection.execute(sql, []);
        assert!(result.is_err(), "{sql} was accepted");
        assert_eq!(audit_rows(&connection), before, "{sql} changed the log");
    }
    drop(connection);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(assert_gap_free(&store).len(), before.len());
}

#[test]
fn committed_data_survives_a_reopen() {
    let (_dir, path) = temp_db("reopen.sqlite");
    let (consent, log, keys) = {
        let fx = Fixture::with_store(SqliteStore::open(&path).unwrap());
        let consent = fx.granted().id().clone();
        let mut access = fx.access(&consent);
        access.presence = Presence::Unattended;
        assert_eq!(fx.decide(&access), Decision::Permit);
        let keys = fx.broker.store().published_keys().unwrap();
        (
            fx.broker.consent(&consent).unwrap().consent,
            fx.audit(),
            keys,
        )
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.consent(consent.id()).unwrap(), Some(consent.clone()));
    assert_eq!(assert_gap_free(&store), log);
    assert_eq!(store.published_keys().unwrap(), keys);
    assert_eq!(
        store
            .usage(consent.id(), START.date())
            .unwrap()
            .unattended_today,
        1
    );
    assert!(store.holder(&id("bank")).unwrap().is_some());
    assert!(store.platform(&id("chat")).unwrap().is_some());
}

/// A cap below one page (0 bytes included) is below the current size: the database must not
/// grow at all, like a cap at its current size.
#[test]
fn a_cap_below_one_page_stops_growth() {
    let (_dir, path) = temp_db("tiny-cap.sqlite");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let fx = Fixture::with_store(store.clone());
    let consent = fx.granted().id().clone();
    store.limit_size(0).unwrap();
    let mut full = false;
    for _ in 0..2_000 {
        let len = fx.audit_len();
        match fx.broker.authorise_access(&fx.access(&consent)) {
            Ok(outcome) => assert_eq!(outcome.audit_seq(), len),
            Err(Error::Store(StoreError::Full(_))) => {
                assert_eq!(fx.audit_len(), len);
                full = true;
                break;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(
        full,
        "limit_size(0) never stopped the database from growing"
    );
}

/// A copy taken while the broker runs holds committed entries only in its `-wal` file: the
/// read-only open reads them (and creates only the `-shm` SQLite needs), and a copy without the
/// `-wal` holds what was checkpointed into the main file.
#[test]
fn a_read_only_open_reads_the_write_ahead_log_of_a_live_copy() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.sqlite");
    let store = SqliteStore::open(&live).unwrap();
    consent_broker::testing::bulk::append_decisions(&store, 50, consent_broker::testing::START)
        .unwrap();
    let wal = dir.path().join("live.sqlite-wal");
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "the entries are in the -wal"
    );
    let copies = dir.path().join("copies");
    std::fs::create_dir(&copies).unwrap();
    std::fs::copy(&live, copies.join("with.sqlite")).unwrap();
    std::fs::copy(&wal, copies.join("with.sqlite-wal")).unwrap();
    std::fs::copy(&live, copies.join("without.sqlite")).unwrap();
    let with = SqliteStore::open_read_only(copies.join("with.sqlite")).unwrap();
    assert_eq!(with.audit_len().unwrap(), store.audit_len().unwrap());
    let main_file_only = SqliteStore::open_read_only(copies.join("without.sqlite"));
    // The main file alone holds no checkpointed state yet: it is not even recognisable as ours.
    match main_file_only {
        Ok(store) => assert!(store.audit_len().unwrap() < 50),
        Err(error) => assert!(matches!(error, StoreError::NotADatabase { .. }), "{error}"),
    }
    // Nothing but the -shm the WAL read needs was created beside the copies.
    let mut names: Vec<String> = std::fs::read_dir(&copies)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "with.sqlite",
            "with.sqlite-shm",
            "with.sqlite-wal",
            "without.sqlite"
        ]
    );
}

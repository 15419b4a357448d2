//! The PostgreSQL store: one database shared by many broker processes.
//!
//! # Client and threads
//!
//! The synchronous `postgres` crate runs each call on a small runtime of its own, and such a call
//! panics if made from inside another async runtime. So the connection lives on a worker thread
//! that this store owns, and every store call is sent to it over a channel: calling the store (or
//! the broker) from inside an async runtime blocks that task's thread like any blocking call, and
//! never panics. The worker reconnects after a lost connection, so a call after the server comes
//! back works.
//!
//! # Concurrency control
//!
//! Every [`Commit`] is one `READ COMMITTED` transaction that first takes a transaction-scoped
//! advisory lock (`pg_advisory_xact_lock`) on one key shared by every broker on the database.
//! Commits are thereby serialised across processes, as in SQLite: preconditions are read and
//! changes, audit rows and Merkle nodes written under the lock, so the audit log stays one
//! gap-free sequence with one valid tree, usage counters are exact, and a revocation committed by
//! one broker fails the precondition of any permit another broker decided before it (that broker
//! re-decides). Reads take no lock. Serialisation failures and deadlocks (SQLSTATE 40001, 40P01)
//! are retried up to [`MAX_TRANSACTION_ATTEMPTS`] times.
//!
//! # Schema
//!
//! Versioned like the SQLite store's: [`MIGRATIONS`] are applied under the same advisory lock, the
//! version is kept in `consent_broker_meta`, and a newer version is refused with
//! [`StoreError::SchemaTooNew`]. Audit rows and Merkle nodes are append-only (triggers).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, GenericClient, IsolationLevel, NoTls, Row, Statement, Transaction};
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

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// How often a transaction is retried after a serialisation failure or deadlock.
pub const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

/// The advisory lock key every broker's commits take ("CBRk").
const COMMIT_LOCK: i64 = 0x4342_526B;

/// One step of the schema's history.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version the database has after this step.
    pub version: i64,
    /// The SQL that takes it there from the previous version.
    pub sql: &'static str,
}

/// The schema's history, oldest first.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: "
        CREATE TABLE holders (id TEXT PRIMARY KEY, version BIGINT NOT NULL, record TEXT NOT NULL);
        CREATE TABLE platforms (id TEXT PRIMARY KEY, record TEXT NOT NULL);
        CREATE TABLE consents (
            position BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, subject TEXT NOT NULL,
            version BIGINT NOT NULL, record TEXT NOT NULL
        );
        CREATE INDEX consents_by_subject ON consents (subject);
        CREATE TABLE usage (
            consent TEXT NOT NULL REFERENCES consents (id), day TEXT NOT NULL,
            unattended BIGINT NOT NULL, PRIMARY KEY (consent, day)
        );
        CREATE TABLE attestations (id TEXT PRIMARY KEY);
        CREATE TABLE signing_keys (
            position BIGSERIAL PRIMARY KEY, kid TEXT NOT NULL UNIQUE, public_key TEXT NOT NULL,
            activated_at BIGINT NOT NULL
        );
        CREATE TABLE audit (seq BIGINT PRIMARY KEY CHECK (seq >= 0), entry BYTEA NOT NULL);
        CREATE TABLE merkle_nodes (
            level INTEGER NOT NULL, idx BIGINT NOT NULL, hash BYTEA NOT NULL,
            PRIMARY KEY (level, idx)
        );
        CREATE TABLE checkpoints (size BIGINT PRIMARY KEY, root BYTEA NOT NULL, note TEXT NOT NULL);
        CREATE FUNCTION consent_broker_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'consent-broker: % is append-only', TG_TABLE_NAME; END $$;
        CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
            FOR EACH ROW EXECUTE FUNCTION consent_broker_append_only();
        CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE ON merkle_nodes
            FOR EACH ROW EXECUTE FUNCTION consent_broker_append_only();
        CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
            FOR EACH STATEMENT EXECUTE FUNCTION consent_broker_append_only();
        CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes
            FOR EACH STATEMENT EXECUTE FUNCTION consent_broker_append_only();
    ",
}];

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The worker thread's state: the connection settings and, while connected, the client.
struct Worker {
    config: Config,
    connect_timeout: StdDuration,
    schema: Option<String>,
    client: Option<Client>,
    /// Statements prepared on the current connection, by SQL text: each is parsed once, so a
    /// later use is one round trip instead of two.
    statements: HashMap<String, Statement>,
}

/// A client or transaction whose statements are prepared once and reused.
struct Db<'a, C> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
}

impl<C: GenericClient> Db<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query(&statement, params)
    }

    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_opt(&statement, params)
    }

    fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.query_one(&statement, params)
    }

    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        self.client.execute(&statement, params)
    }
}

impl Worker {
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = connect_within(&self.config, self.connect_timeout)?;
            if let Some(schema) = &self.schema {
                let quoted = quote_identifier(schema);
                // Under the commit lock: two brokers creating the same schema at once would
                // otherwise collide in the catalog.
                client
                    .batch_execute(&format!(
                        "BEGIN; SELECT pg_advisory_xact_lock({COMMIT_LOCK}); \
                         CREATE SCHEMA IF NOT EXISTS {quoted}; COMMIT; SET search_path TO {quoted}"
                    ))
                    .map_err(|e| pg_error(&e))?;
            }
            self.client = Some(client);
            self.statements.clear();
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("not connected".into()))
    }

    /// Runs `f` on the connection; drops the connection after an error that may have broken it,
    /// so the next call reconnects.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut Db<'_, Client>) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.client()?;
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::Unavailable("not connected".into()));
        };
        match f(&mut Db {
            client,
            statements: &mut self.statements,
        }) {
            Ok(value) => Ok(value),
            Err(error) => {
                if error.is_closed() || error.code().is_none() {
                    self.client = None;
                }
                Err(pg_error(&error))
            }
        }
    }
}

/// Connects, giving up after `timeout` even if the server accepts the TCP connection and then
/// never answers (the client's own timeout covers only the TCP connect). The handshake runs on a
/// helper thread; if it hangs, that thread is left to end when the server closes the socket.
fn connect_within(config: &Config, timeout: StdDuration) -> Result<Client, StoreError> {
    let (sender, receiver) = mpsc::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("consent-broker-postgres-connect".into())
        .spawn(move || {
            let _ = sender.send(config.connect(NoTls));
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start connecting: {e}")))?;
    match receiver.recv_timeout(timeout) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(error)) => Err(pg_error(&error)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "the server did not complete the connection within {} ms",
            timeout.as_millis()
        ))),
    }
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Maps a client error to a store error a caller can act on.
fn pg_error(error: &postgres::Error) -> StoreError {
    // `Display` of a server error is just "db error": say what the server said, and why.
    let detail = match (error.as_db_error(), std::error::Error::source(error)) {
        (Some(db), _) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        (None, Some(source)) => format!("{error}: {source}"),
        (None, None) => error.to_string(),
    };
    match error.code() {
        Some(code) if *code == SqlState::QUERY_CANCELED => {
            StoreError::Busy(format!("statement timeout: {detail}"))
        }
        Some(code) if *code == SqlState::DISK_FULL => StoreError::Full(detail),
        Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => StoreError::ReadOnly(detail),
        Some(code)
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            StoreError::Unavailable(format!("authentication failed: {detail}"))
        }
        Some(code) if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED => {
            StoreError::Corrupt(detail)
        }
        _ if error.is_closed() => StoreError::Unavailable(format!("connection lost: {detail}")),
        _ => StoreError::Unavailable(detail),
    }
}

fn retryable(error: &postgres::Error) -> bool {
    error.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// A [`Store`] in a PostgreSQL database.
pub struct PostgresStore {
    jobs: Mutex<Option<Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Keep every table in this schema (created if missing); `None` uses the search path.
    pub schema: Option<String>,
    /// Abort a statement after this long (server-side `statement_timeout`).
    pub statement_timeout: StdDuration,
    /// Give up connecting after this long.
    pub connect_timeout: StdDuration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: None,
            statement_timeout: StdDuration::from_secs(30),
            connect_timeout: StdDuration::from_secs(5),
        }
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and brings the schema up to
    /// [`SCHEMA_VERSION`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for a bad URL, a server that is down or refuses the
    /// credentials; [`StoreError::SchemaTooNew`].
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, PostgresOptions::default())
    }

    /// [`PostgresStore::open`] with options.
    ///
    /// # Errors
    /// As [`PostgresStore::open`].
    pub fn open_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        config.connect_timeout(options.connect_timeout);
        config.options(&format!(
            "-c statement_timeout={}",
            options.statement_timeout.as_millis()
        ));
        let (sender, receiver) = mpsc::channel::<Job>();
        let mut state = Worker {
            config,
            connect_timeout: options.connect_timeout,
            schema: options.schema,
            client: None,
            statements: HashMap::new(),
        };
        let worker = std::thread::Builder::new()
            .name("consent-broker-postgres".into())
            .spawn(move || {
                while let Ok(job) = receiver.recv() {
                    job(&mut state);
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the worker: {e}")))?;
        let store = Self {
            jobs: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(worker)),
        };
        store.run(migrate)?;
        Ok(store)
    }

    /// Runs `f` on the worker thread and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::channel();
        let job: Job = Box::new(move |worker| {
            // The caller may have gone; nothing to do then.
            let _ = reply.send(f(worker));
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|jobs| jobs.send(job).is_ok());
        if sent != Some(true) {
            return Err(StoreError::Unavailable(
                "the PostgreSQL worker has stopped".into(),
            ));
        }
        answer
            .recv()
            .map_err(|_| StoreError::Unavailable("the PostgreSQL worker has stopped".into()))?
    }

    fn read_json<T: DeserializeOwned + Send + 'static>(
        &self,
        what: &'static str,
        sql: &'static str,
        key: String,
    ) -> Result<Option<T>, StoreError> {
        self.run(move |w| {
            let row = w.with(|c| c.query_opt(sql, &[&key]))?;
            row.map(|row| rows::json(&format!("{what} {key}"), row.get::<_, &str>(0)))
                .transpose()
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop; wait for it so the connection closes.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(worker) = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = worker.join();
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Unavailable(format!("encoding: {e}")))
}

fn migrate(worker: &mut Worker) -> Result<(), StoreError> {
    let client = worker.client()?;
    let mut tx = client.transaction().map_err(|e| pg_error(&e))?;
    // Everything under the commit lock, the version table's creation included: two brokers
    // starting on a new database at once must not both create it.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])
        .map_err(|e| pg_error(&e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS consent_broker_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    )
    .map_err(|e| pg_error(&e))?;
    let version: i64 = tx
        .query_opt(
            "SELECT value FROM consent_broker_meta WHERE key = 'schema_version'",
            &[],
        )
        .map_err(|e| pg_error(&e))?
        .map_or(0, |row| row.get(0));
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > version) {
        tx.batch_execute(migration.sql).map_err(|e| pg_error(&e))?;
        tx.execute(
            "INSERT INTO consent_broker_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&migration.version],
        )
        .map_err(|e| pg_error(&e))?;
    }
    tx.commit().map_err(|e| pg_error(&e))
}

/// A store-level refusal inside a transaction (rolled back by dropping it).
enum Failure {
    Refused(StoreError),
    Database(postgres::Error),
}

impl From<postgres::Error> for Failure {
    fn from(error: postgres::Error) -> Self {
        Self::Database(error)
    }
}

fn refused(error: StoreError) -> Failure {
    Failure::Refused(error)
}

/// The Merkle nodes as seen inside the commit's transaction, with the left siblings that
/// appending leaf `size` needs fetched in one round trip instead of one per level.
struct TxNodes<'a, 'c, 'b> {
    tx: RefCell<&'a mut Db<'c, Transaction<'b>>>,
    prefetched: std::collections::HashMap<(u32, u64), Hash>,
}

impl<'a, 'c, 'b> TxNodes<'a, 'c, 'b> {
    fn for_append(tx: &'a mut Db<'c, Transaction<'b>>, size: u64) -> Result<Self, postgres::Error> {
        // Appending leaf `size` combines it with the complete subtree to its left at every level
        // where `size` has a 1 bit: node (level, (size >> level) - 1).
        let wanted: Vec<(i32, i64)> = (0..64u32)
            .filter(|level| (size >> level) & 1 == 1)
            .map(|level| (level as i32, rows::signed((size >> level) - 1)))
            .collect();
        let levels: Vec<i32> = wanted.iter().map(|w| w.0).collect();
        let indices: Vec<i64> = wanted.iter().map(|w| w.1).collect();
        let rows = tx.query(
            "SELECT n.level, n.idx, n.hash FROM merkle_nodes n
             JOIN UNNEST($1::INTEGER[], $2::BIGINT[]) AS w (level, idx)
               ON n.level = w.level AND n.idx = w.idx",
            &[&levels, &indices],
        )?;
        let prefetched = rows
            .iter()
            .filter_map(|row| {
                let level = u32::try_from(row.get::<_, i32>(0)).ok()?;
                let index = u64::try_from(row.get::<_, i64>(1)).ok()?;
                Some(((level, index), Hash::try_from(row.get::<_, &[u8]>(2)).ok()?))
            })
            .collect();
        Ok(Self {
            tx: RefCell::new(tx),
            prefetched,
        })
    }
}

impl NodeSource for TxNodes<'_, '_, '_> {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        if let Some(hash) = self.prefetched.get(&(level, index)) {
            return Ok(*hash);
        }
        let level_param = i32::try_from(level).unwrap_or(i32::MAX);
        let row = self
            .tx
            .borrow_mut()
            .query_opt(
                "SELECT hash FROM merkle_nodes WHERE level = $1 AND idx = $2",
                &[&level_param, &rows::signed(index)],
            )
            .map_err(|e| MerkleError::Source(e.to_string()))?
            .ok_or(MerkleError::MissingNode { level, index })?;
        Hash::try_from(row.get::<_, &[u8]>(0)).map_err(|_| MerkleError::Source("bad node".into()))
    }
}

fn holds(
    tx: &mut Db<'_, Transaction<'_>>,
    precondition: &Precondition,
) -> Result<bool, postgres::Error> {
    Ok(match precondition {
        Precondition::ConsentVersion { consent, version } => {
            tx.query_opt(
                "SELECT version FROM consents WHERE id = $1",
                &[&consent.as_str()],
            )?
            .map(|row| row.get::<_, i64>(0))
                == Some(rows::signed(*version))
        }
        Precondition::HolderVersion { holder, version } => {
            tx.query_opt(
                "SELECT version FROM holders WHERE id = $1",
                &[&holder.as_str()],
            )?
            .map(|row| row.get::<_, i64>(0))
                == Some(rows::signed(*version))
        }
        Precondition::UsageIs {
            consent,
            day,
            usage,
        } => {
            tx.query_opt(
                "SELECT unattended FROM usage WHERE consent = $1 AND day = $2",
                &[&consent.as_str(), &day.to_string()],
            )?
            .map_or(0, |row| row.get::<_, i64>(0))
                == i64::from(usage.unattended_today)
        }
    })
}

fn insert_new(
    tx: &mut Db<'_, Transaction<'_>>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    kind: RecordKind,
    id: &str,
) -> Result<(), Failure> {
    if tx.execute(sql, params)? == 0 {
        return Err(refused(StoreError::Duplicate {
            kind,
            id: id.to_owned(),
        }));
    }
    Ok(())
}

fn update_versioned(
    tx: &mut Db<'_, Transaction<'_>>,
    table: &str,
    id: &str,
    version: u64,
    record: &str,
    kind: RecordKind,
) -> Result<(), Failure> {
    let sql =
        format!("UPDATE {table} SET version = $1, record = $2 WHERE id = $3 AND version = $4");
    let changed = tx.execute(
        &sql,
        &[
            &rows::signed(version),
            &record,
            &id,
            &rows::signed(version.saturating_sub(1)),
        ],
    )?;
    if changed == 1 {
        return Ok(());
    }
    let exists = tx
        .query_opt(&format!("SELECT 1 FROM {table} WHERE id = $1"), &[&id])?
        .is_some();
    Err(refused(if exists {
        StoreError::Conflict
    } else {
        StoreError::Missing {
            kind,
            id: id.to_owned(),
        }
    }))
}

fn apply(tx: &mut Db<'_, Transaction<'_>>, change: Change) -> Result<(), Failure> {
    match change {
        Change::InsertHolder(record) => {
            let body = to_json(&record).map_err(refused)?;
            insert_new(
                tx,
                "INSERT INTO holders (id, version, record) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&record.id.as_str(), &rows::signed(record.version), &body],
                RecordKind::Holder,
                record.id.as_str(),
            )
        }
        Change::UpdateHolder(record) => {
            let body = to_json(&record).map_err(refused)?;
            update_versioned(
                tx,
                "holders",
                record.id.as_str(),
                record.version,
                &body,
                RecordKind::Holder,
            )
        }
        Change::InsertPlatform(profile) => {
            let body = to_json(&profile).map_err(refused)?;
            insert_new(
                tx,
                "INSERT INTO platforms (id, record) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&profile.id.as_str(), &body],
                RecordKind::Platform,
                profile.id.as_str(),
            )
        }
        Change::InsertConsent(consent) => {
            let body = to_json(&consent).map_err(refused)?;
            insert_new(
                tx,
                "INSERT INTO consents (id, subject, version, record) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
                &[
                    &consent.id().as_str(),
                    &consent.request.subject.as_str(),
                    &rows::signed(consent.version),
                    &body,
                ],
                RecordKind::Consent,
                consent.id().as_str(),
            )
        }
        Change::UpdateConsent(consent) => {
            let body = to_json(&consent).map_err(refused)?;
            update_versioned(
                tx,
                "consents",
                consent.id().as_str(),
                consent.version,
                &body,
                RecordKind::Consent,
            )
        }
        Change::CountUnattendedAccess { consent, day } => {
            tx.execute(
                "INSERT INTO usage (consent, day, unattended) VALUES ($1, $2, 1)
                 ON CONFLICT (consent, day) DO UPDATE SET unattended = usage.unattended + 1",
                &[&consent.as_str(), &day.to_string()],
            )?;
            Ok(())
        }
        Change::UseAttestation(id) => insert_new(
            tx,
            "INSERT INTO attestations (id) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&id.as_str()],
            RecordKind::Attestation,
            &id,
        ),
        Change::PublishSigningKey(key) => insert_new(
            tx,
            "INSERT INTO signing_keys (kid, public_key, activated_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[
                &key.kid.as_str(),
                &key.public_key.to_base64url(),
                &key.activated_at.unix_timestamp(),
            ],
            RecordKind::SigningKey,
            &key.kid,
        ),
        Change::RecordCheckpoint(checkpoint) => {
            let latest: Option<i64> = tx
                .query_one("SELECT MAX(size) FROM checkpoints", &[])?
                .get(0);
            if latest.is_some_and(|latest| latest > rows::signed(checkpoint.size)) {
                return Err(refused(StoreError::Conflict));
            }
            tx.execute(
                "INSERT INTO checkpoints (size, root, note) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&rows::signed(checkpoint.size), &&checkpoint.root[..], &checkpoint.note],
            )?;
            Ok(())
        }
    }
}

fn apply_commit(
    tx: &mut Db<'_, Transaction<'_>>,
    commit: Commit,
) -> Result<CommitReceipt, Failure> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])?;
    for precondition in &commit.preconditions {
        if !holds(tx, precondition)? {
            return Err(refused(StoreError::Conflict));
        }
    }
    for change in commit.changes {
        apply(tx, change)?;
    }
    let first: i64 = tx
        .query_one("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit", &[])?
        .get(0);
    let start = rows::unsigned("audit sequence", first).map_err(refused)?;
    let mut next = start;
    for record in commit.audit {
        let bytes = AuditEntry { seq: next, record }
            .to_bytes()
            .map_err(|e| refused(StoreError::Unavailable(format!("encoding: {e}"))))?;
        tx.execute(
            "INSERT INTO audit (seq, entry) VALUES ($1, $2)",
            &[&rows::signed(next), &bytes],
        )?;
        let nodes = {
            let source = TxNodes::for_append(&mut *tx, next)?;
            merkle::append(next, merkle::leaf_hash(&bytes), &source)
                .map_err(|e| refused(StoreError::Corrupt(format!("Merkle tree: {e}"))))?
        };
        for (level, index, hash) in nodes {
            let level = i32::try_from(level).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO merkle_nodes (level, idx, hash) VALUES ($1, $2, $3)",
                &[&level, &rows::signed(index), &&hash[..]],
            )?;
        }
        next += 1;
    }
    Ok(CommitReceipt {
        audit_seqs: start..next,
    })
}

fn commit_on(worker: &mut Worker, commit: Commit) -> Result<CommitReceipt, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        worker.client()?;
        let Worker {
            client: Some(client),
            statements,
            ..
        } = &mut *worker
        else {
            return Err(StoreError::Unavailable("not connected".into()));
        };
        let outcome = (|| -> Result<CommitReceipt, Failure> {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()?;
            let receipt = apply_commit(
                &mut Db {
                    client: &mut tx,
                    statements,
                },
                commit.clone(),
            )?;
            tx.commit()?;
            Ok(receipt)
        })();
        match outcome {
            Ok(receipt) => return Ok(receipt),
            Err(Failure::Refused(error)) => return Err(error),
            Err(Failure::Database(error))
                if retryable(&error) && attempt < MAX_TRANSACTION_ATTEMPTS => {}
            Err(Failure::Database(error)) => {
                if error.is_closed() || error.code().is_none() {
                    worker.client = None;
                }
                return Err(pg_error(&error));
            }
        }
    }
}

impl Store for PostgresStore {
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
        self.read_json(
            "holder",
            "SELECT record FROM holders WHERE id = $1",
            id.to_string(),
        )
    }

    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
        self.read_json(
            "platform",
            "SELECT record FROM platforms WHERE id = $1",
            id.to_string(),
        )
    }

    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
        self.read_json(
            "consent",
            "SELECT record FROM consents WHERE id = $1",
            id.to_string(),
        )
    }

    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        let subject = subject.to_string();
        self.run(move |w| {
            let rows = w.with(|c| {
                c.query(
                    "SELECT record FROM consents WHERE subject = $1 ORDER BY position",
                    &[&subject],
                )
            })?;
            rows.iter()
                .map(|row| rows::json("consent", row.get::<_, &str>(0)))
                .collect()
        })
    }

    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
        let (consent, day) = (consent.to_string(), day.to_string());
        self.run(move |w| {
            let row = w.with(|c| {
                c.query_opt(
                    "SELECT unattended FROM usage WHERE consent = $1 AND day = $2",
                    &[&consent, &day],
                )
            })?;
            let unattended = row.map_or(0, |row| row.get::<_, i64>(0));
            let unattended_today = u32::try_from(unattended)
                .map_err(|_| StoreError::Corrupt(format!("usage of {consent} out of range")))?;
            Ok(Usage { unattended_today })
        })
    }

    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
        let id = attestation_id.to_owned();
        self.run(move |w| {
            Ok(
                w.with(|c| c.query_opt("SELECT 1 FROM attestations WHERE id = $1", &[&id]))?
                    .is_some(),
            )
        })
    }

    fn audit_len(&self) -> Result<u64, StoreError> {
        self.run(|w| {
            let next: i64 = w
                .with(|c| c.query_one("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit", &[]))?
                .get(0);
            rows::unsigned("audit length", next)
        })
    }

    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
        self.run(move |w| {
            let rows = w.with(|c| {
                c.query(
                    "SELECT seq, entry FROM audit WHERE seq >= $1 AND seq < $2 ORDER BY seq",
                    &[&rows::signed(range.start), &rows::signed(range.end)],
                )
            })?;
            rows.iter()
                .map(|row| {
                    Ok(StoredEntry {
                        seq: rows::unsigned("audit sequence", row.get(0))?,
                        bytes: row.get::<_, Vec<u8>>(1),
                    })
                })
                .collect()
        })
    }

    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        Ok(self
            .merkle_nodes(level, index..index.saturating_add(1))?
            .pop()
            .map(|(_, hash)| hash))
    }

    fn merkle_nodes(&self, level: u32, range: Range<u64>) -> Result<Vec<(u64, Hash)>, StoreError> {
        self.run(move |w| {
            let level_param = i32::try_from(level).unwrap_or(i32::MAX);
            let rows =
                w.with(|c| {
                    c.query(
                    "SELECT idx, hash FROM merkle_nodes WHERE level = $1 AND idx >= $2 AND idx < $3
                     ORDER BY idx",
                    &[&level_param, &rows::signed(range.start), &rows::signed(range.end)],
                )
                })?;
            rows.iter()
                .map(|row| rows::node(level, row.get(0), row.get::<_, &[u8]>(1)))
                .collect()
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.run(|w| {
            let row = w.with(|c| {
                c.query_opt(
                    "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                    &[],
                )
            })?;
            row.map(|row| rows::checkpoint(row.get(0), row.get::<_, &[u8]>(1), row.get(2)))
                .transpose()
        })
    }

    fn signing_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        self.run(|w| {
            let rows = w.with(|c| {
                c.query(
                    "SELECT kid, public_key, activated_at FROM signing_keys ORDER BY activated_at, position",
                    &[],
                )
            })?;
            rows.iter()
                .map(|row| rows::published_key(row.get(0), row.get(1), row.get(2)))
                .collect()
        })
    }

    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
        self.run(move |w| commit_on(w, commit))
    }
}

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
//! are retried up to [`PostgresStore::MAX_TRANSACTION_ATTEMPTS`] times.
//!
//! # Schema
//!
//! Versioned like the SQLite store's: [`PostgresStore::MIGRATIONS`] are applied under the same
//! advisory lock, the version is kept in `consent_broker_meta`, and a newer version is refused
//! with [`StoreError::SchemaTooNew`]. Audit rows and Merkle nodes are append-only (triggers).
//!
//! The statements and the commit semantics are shared with the SQLite store (the parent module);
//! this file holds what is PostgreSQL's own: the worker thread, connecting, retries, the
//! advisory lock, its schema history, and the [`Dialect`] over the `postgres` client.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, GenericClient, IsolationLevel, NoTls, Statement, Transaction};
use time::Date;

use super::{Dialect, Failure, Migration, Row, Value, read, signed};
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::merkle::Hash;
use crate::policy::{PlatformProfile, Usage};
use crate::store::{
    Commit, CommitReceipt, HolderRecord, LogRead, PublishedKey, StateRead, Store, StoreError,
    StoredCheckpoint, StoredEntry,
};

/// The advisory lock key every broker's commits take ("CBRk").
const COMMIT_LOCK: i64 = 0x4342_526B;

/// The schema's history, oldest first.
const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        // As the SQLite store's version 4: keys of both uses with their life; every earlier token
        // key but the newest is taken as retired when the next was activated, verifying for the
        // longest token lifetime plus the grace after that (15 min + 30 s).
        sql: "
        CREATE TABLE published_keys (
            position BIGSERIAL PRIMARY KEY, key_use TEXT NOT NULL, kid TEXT NOT NULL,
            public_key TEXT NOT NULL, activated_at BIGINT NOT NULL, retired_at BIGINT,
            verifies_until BIGINT, UNIQUE (key_use, kid)
        );
        INSERT INTO published_keys (key_use, kid, public_key, activated_at)
            SELECT 'token', kid, public_key, activated_at FROM signing_keys
            ORDER BY activated_at, position;
        UPDATE published_keys SET retired_at = (
            SELECT MIN(n.activated_at) FROM published_keys n
            WHERE n.key_use = published_keys.key_use AND n.position > published_keys.position
        ) WHERE EXISTS (
            SELECT 1 FROM published_keys n
            WHERE n.key_use = published_keys.key_use AND n.position > published_keys.position
        );
        UPDATE published_keys SET verifies_until = retired_at + 930 WHERE retired_at IS NOT NULL;
        DROP TABLE signing_keys;
    ",
    },
];

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
    /// The prepared statement for `sql`, written with `?N` placeholders (the shared SQL's), which
    /// PostgreSQL spells `$N`. Prepared once per connection.
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&sql.replace('?', "$"))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// The statement for `sql` and `params` converted to the types it declares.
    fn bound(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
    ) -> Result<(Statement, Vec<Bound>), Failure<postgres::Error>> {
        let statement = self.statement(sql).map_err(Failure::Engine)?;
        let bound = params
            .iter()
            .zip(statement.params())
            .map(|(value, declared)| bind(*value, declared))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((statement, bound))
    }
}

/// A parameter value, converted for its statement.
type Bound = Box<dyn ToSql + Sync + Send>;

/// A value as the parameter's declared type wants it: integers narrowed to `INTEGER` columns
/// (refused if they do not fit), text bound as bytes to `BYTEA` columns (the audit entries).
fn bind(value: Value<'_>, declared: &Type) -> Result<Bound, StoreError> {
    let narrow = |int: i64| {
        i32::try_from(int)
            .map_err(|_| StoreError::Unavailable(format!("{int} does not fit an INTEGER column")))
    };
    Ok(match value {
        Value::Int(int) if *declared == Type::INT4 => Box::new(narrow(int)?),
        Value::Int(int) => Box::new(int),
        Value::OptionalInt(int) if *declared == Type::INT4 => {
            Box::new(int.map(narrow).transpose()?)
        }
        Value::OptionalInt(int) => Box::new(int),
        Value::Text(text) if *declared == Type::BYTEA => Box::new(text.as_bytes().to_vec()),
        Value::Text(text) => Box::new(text.to_owned()),
        Value::Blob(bytes) => Box::new(bytes.to_vec()),
    })
}

fn params_ref(bound: &[Bound]) -> Vec<&(dyn ToSql + Sync)> {
    bound
        .iter()
        .map(|value| value.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl Row for postgres::Row {
    fn int(&self, column: usize) -> Result<Option<i64>, StoreError> {
        let corrupt = |e: postgres::Error| StoreError::Corrupt(format!("column {column}: {e}"));
        let declared = self
            .columns()
            .get(column)
            .map(|c| c.type_().clone())
            .ok_or_else(|| StoreError::Corrupt(format!("no column {column}")))?;
        if declared == Type::INT4 {
            Ok(self
                .try_get::<_, Option<i32>>(column)
                .map_err(corrupt)?
                .map(i64::from))
        } else {
            self.try_get::<_, Option<i64>>(column).map_err(corrupt)
        }
    }

    fn bytes(&self, column: usize) -> Result<Vec<u8>, StoreError> {
        let corrupt = |e: postgres::Error| StoreError::Corrupt(format!("column {column}: {e}"));
        let declared = self
            .columns()
            .get(column)
            .map(|c| c.type_().clone())
            .ok_or_else(|| StoreError::Corrupt(format!("no column {column}")))?;
        if declared == Type::BYTEA {
            self.try_get::<_, Vec<u8>>(column).map_err(corrupt)
        } else {
            Ok(self
                .try_get::<_, String>(column)
                .map_err(corrupt)?
                .into_bytes())
        }
    }
}

impl<C: GenericClient> Dialect for Db<'_, C> {
    type Error = postgres::Error;

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<u64, Failure<Self::Error>> {
        let (statement, bound) = self.bound(sql, params)?;
        self.client
            .execute(&statement, &params_ref(&bound))
            .map_err(Failure::Engine)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
        each: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), Failure<Self::Error>> {
        let (statement, bound) = self.bound(sql, params)?;
        let rows = self
            .client
            .query(&statement, &params_ref(&bound))
            .map_err(Failure::Engine)?;
        for row in &rows {
            each(row)?;
        }
        Ok(())
    }

    fn lock_for_commit(&mut self) -> Result<(), Self::Error> {
        let statement = self.statement("SELECT pg_advisory_xact_lock(?1)")?;
        self.client.execute(&statement, &[&COMMIT_LOCK]).map(|_| ())
    }

    fn append_siblings(&mut self, size: u64) -> Result<super::Nodes, Failure<Self::Error>> {
        // One round trip for every level's left sibling.
        let wanted: Vec<(i32, i64)> = (0..64u32)
            .filter(|level| (size >> level) & 1 == 1)
            .map(|level| (level as i32, signed((size >> level) - 1)))
            .collect();
        let levels: Vec<i32> = wanted.iter().map(|w| w.0).collect();
        let indices: Vec<i64> = wanted.iter().map(|w| w.1).collect();
        let statement = self
            .statement(
                "SELECT n.level, n.idx, n.hash FROM merkle_nodes n \
                 JOIN UNNEST(?1::INTEGER[], ?2::BIGINT[]) AS w (level, idx) \
                 ON n.level = w.level AND n.idx = w.idx",
            )
            .map_err(Failure::Engine)?;
        let rows = self
            .client
            .query(&statement, &[&levels, &indices])
            .map_err(Failure::Engine)?;
        let mut found = HashMap::new();
        for row in &rows {
            let level = u32::try_from(row.int(0)?.unwrap_or(-1))
                .map_err(|_| StoreError::Corrupt("Merkle node level".into()))?;
            let index = u64::try_from(row.int(1)?.unwrap_or(-1))
                .map_err(|_| StoreError::Corrupt("Merkle node index".into()))?;
            let hash = Hash::try_from(row.bytes(2)?.as_slice())
                .map_err(|_| StoreError::Corrupt(format!("Merkle node ({level}, {index})")))?;
            found.insert((level, index), hash);
        }
        Ok(found)
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
        f: impl FnOnce(&mut Db<'_, Client>) -> Result<T, Failure<postgres::Error>>,
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
            Err(Failure::Refused(error)) => Err(error),
            Err(Failure::Engine(error)) => {
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
    /// The schema's history, oldest first.
    pub const MIGRATIONS: &'static [Migration] = MIGRATIONS;

    /// The schema version this build writes.
    pub const SCHEMA_VERSION: i64 = 2;

    /// How often a transaction is retried after a serialisation failure or deadlock.
    pub const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

    /// Connects to `url` (`postgres://user@host:port/db`) and brings the schema up to
    /// [`PostgresStore::SCHEMA_VERSION`].
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

    /// Runs a read on the worker's connection.
    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut Db<'_, Client>) -> Result<T, Failure<postgres::Error>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run(move |worker| worker.with(read))
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
    if version > PostgresStore::SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: PostgresStore::SCHEMA_VERSION,
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

/// Runs `write` in one transaction on the worker's connection, retrying serialisation failures
/// and deadlocks; a refusal (a failed precondition, a duplicate) is never retried.
fn transaction<T>(
    worker: &mut Worker,
    mut write: impl FnMut(&mut Db<'_, Transaction<'_>>) -> Result<T, Failure<postgres::Error>>,
) -> Result<T, StoreError> {
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
        let outcome = (|| -> Result<T, Failure<postgres::Error>> {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()
                .map_err(Failure::Engine)?;
            let value = write(&mut Db {
                client: &mut tx,
                statements,
            })?;
            tx.commit().map_err(Failure::Engine)?;
            Ok(value)
        })();
        match outcome {
            Ok(value) => return Ok(value),
            Err(Failure::Refused(error)) => return Err(error),
            Err(Failure::Engine(error))
                if retryable(&error) && attempt < PostgresStore::MAX_TRANSACTION_ATTEMPTS => {}
            Err(Failure::Engine(error)) => {
                if error.is_closed() || error.code().is_none() {
                    worker.client = None;
                }
                return Err(pg_error(&error));
            }
        }
    }
}

impl StateRead for PostgresStore {
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
        let id = id.clone();
        self.read(move |db| read::holder(db, &id))
    }

    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
        let id = id.clone();
        self.read(move |db| read::platform(db, &id))
    }

    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
        let id = id.clone();
        self.read(move |db| read::consent(db, &id))
    }

    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        let subject = subject.clone();
        self.read(move |db| read::consents_of_subject(db, &subject))
    }

    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
        let consent = consent.clone();
        self.read(move |db| read::usage(db, &consent, day))
    }

    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
        let id = attestation_id.to_owned();
        self.read(move |db| read::attestation_used(db, &id))
    }

    fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        self.read(|db| read::published_keys(db))
    }
}

impl LogRead for PostgresStore {
    fn audit_len(&self) -> Result<u64, StoreError> {
        self.read(|db| read::audit_len(db))
    }

    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
        self.read(move |db| read::audit_bytes(db, range))
    }

    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        self.read(move |db| read::merkle_node(db, level, index))
    }

    fn merkle_nodes(&self, level: u32, range: Range<u64>) -> Result<Vec<(u64, Hash)>, StoreError> {
        self.read(move |db| read::merkle_nodes(db, level, range))
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.read(|db| read::latest_checkpoint(db))
    }
}

impl Store for PostgresStore {
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
        self.run(move |worker| transaction(worker, |db| super::apply_commit(db, &commit)))
    }

    fn record_checkpoint(&self, checkpoint: &StoredCheckpoint) -> Result<(), StoreError> {
        let checkpoint = checkpoint.clone();
        self.run(move |worker| transaction(worker, |db| super::record_checkpoint(db, &checkpoint)))
    }
}

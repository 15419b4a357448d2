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
//! # TLS
//!
//! Connections are made with rustls on the ring provider (the crate's only cryptographic
//! backend), and the server's certificate is always verified: its chain against the CAs in
//! [`PostgresOptions::root_certificates`] (else the platform's trust store), its name against
//! the host the URL names. [`PostgresTlsMode::Auto`], the default, uses TLS for every server not
//! on this machine and never falls back to plaintext for one. The URL's `sslmode` (`disable`,
//! `prefer`, `require`: what the `postgres` crate parses) is honoured where it does not weaken
//! that; `verify-full` and `sslrootcert` are not parsed by the client, so their meaning is set
//! in [`PostgresOptions`] instead (verification is always full).
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

mod connection;

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use postgres::{Client, Config, IsolationLevel, Transaction};
use time::{Date, OffsetDateTime};

use self::connection::{Db, Job, Worker, pg_error, retryable, transport};
use super::{Failure, Migration, ledger, read};
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::merkle::Hash;
use crate::policy::{PlatformProfile, Usage};
use crate::privacy::SubjectKey;
use crate::store::{
    AttestationRecord, Commit, CommitReceipt, DeviceKeyRecord, FeedState, GateQuery, GateView,
    HolderRecord, LedgerRead, LogRead, PolicyRecord, PublishedKey, SeenKind, SignedCheckpoint,
    StateRead, Store, StoreError, StoredCheckpoint, StoredEntry, SubjectLink,
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
    Migration {
        version: 3,
        // As the SQLite store's version 5: a bank's ledger.
        sql: "
        CREATE TABLE bank_attestations (
            position BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, consent TEXT NOT NULL,
            subject TEXT NOT NULL, version BIGINT NOT NULL, record TEXT NOT NULL
        );
        CREATE INDEX bank_attestations_by_subject ON bank_attestations (subject);
        CREATE INDEX bank_attestations_by_consent ON bank_attestations (consent);
        CREATE TABLE bank_policies (version BIGINT PRIMARY KEY, record TEXT NOT NULL);
        CREATE TABLE bank_served (
            attestation TEXT NOT NULL, day TEXT NOT NULL, unattended BIGINT NOT NULL,
            present BIGINT NOT NULL, PRIMARY KEY (attestation, day)
        );
        CREATE TABLE bank_seen (
            kind TEXT NOT NULL, id TEXT NOT NULL, expires_at BIGINT NOT NULL,
            PRIMARY KEY (kind, id)
        );
        CREATE INDEX bank_seen_by_expiry ON bank_seen (expires_at);
        CREATE TABLE bank_platform_revocations (
            consent TEXT PRIMARY KEY, revoked_at BIGINT NOT NULL
        );
        CREATE TABLE bank_feed (
            id INTEGER PRIMARY KEY CHECK (id = 1), position BIGINT NOT NULL,
            generated_at BIGINT NOT NULL
        );
    ",
    },
    Migration {
        version: 4,
        // As the SQLite store's version 6: device keys.
        sql: "
        CREATE TABLE bank_device_keys (
            position BIGSERIAL PRIMARY KEY, thumbprint TEXT NOT NULL UNIQUE,
            subject TEXT NOT NULL, record TEXT NOT NULL
        );
        CREATE INDEX bank_device_keys_by_subject ON bank_device_keys (subject);
    ",
    },
    Migration {
        version: 5,
        // As the SQLite store's version 7: subjects' keys, pairwise identifiers, `ends_at`.
        sql: "
        CREATE TABLE subject_keys (
            subject TEXT PRIMARY KEY, key BYTEA NOT NULL, created_at BIGINT NOT NULL
        );
        CREATE TABLE bank_subject_links (
            pairwise TEXT PRIMARY KEY, customer TEXT NOT NULL, platform TEXT NOT NULL,
            linked_at BIGINT NOT NULL, UNIQUE (customer, platform)
        );
        ALTER TABLE consents ADD COLUMN ends_at BIGINT;
        CREATE INDEX consents_by_end ON consents (ends_at);
        ALTER TABLE bank_attestations ADD COLUMN ends_at BIGINT;
        CREATE INDEX bank_attestations_by_end ON bank_attestations (ends_at);
    ",
    },
];

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

/// When the connection to the server is encrypted (TLS).
///
/// Whenever TLS is used the server's certificate is verified (chain and host name); there is no
/// mode that encrypts without verifying. The URL's `sslmode` is combined with this setting:
///
/// | this setting | no `sslmode` or `prefer`            | `sslmode=require` | `sslmode=disable`          |
/// |--------------|-------------------------------------|-------------------|----------------------------|
/// | `Auto`       | TLS unless every host is local      | TLS               | plaintext if local, else refused |
/// | `Require`    | TLS                                 | TLS               | refused (a contradiction)  |
/// | `Disable`    | plaintext                           | refused           | plaintext                  |
///
/// A host is local if it is `localhost`, a loopback address (127.0.0.0/8, `::1`) or a Unix
/// socket directory; with `hostaddr`, that address must be a loopback one too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PostgresTlsMode {
    /// TLS to any server that is not on this machine, plaintext to one that is. A server not on
    /// this machine that offers no TLS is refused: never a silent downgrade, whatever the URL's
    /// `sslmode=prefer` says.
    #[default]
    Auto,
    /// TLS always, local hosts included; a server that offers no TLS is refused (PostgreSQL offers
    /// none over a Unix socket).
    Require,
    /// Never TLS: the credentials and every row cross the network in the clear. Only for a path
    /// protected otherwise (a private link, a local proxy that encrypts).
    Disable,
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
    /// When to use TLS; [`PostgresTlsMode::Auto`] by default.
    pub tls: PostgresTlsMode,
    /// A PEM file of the certificate authorities that may sign the server's certificate (libpq's
    /// `sslrootcert`), read when the store opens. `None` trusts the platform's store: the
    /// operating system's bundle, or the files named by `SSL_CERT_FILE` / `SSL_CERT_DIR`.
    pub root_certificates: Option<PathBuf>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: None,
            statement_timeout: StdDuration::from_secs(30),
            connect_timeout: StdDuration::from_secs(5),
            tls: PostgresTlsMode::Auto,
            root_certificates: None,
        }
    }
}

impl PostgresStore {
    /// The schema's history, oldest first.
    pub const MIGRATIONS: &'static [Migration] = MIGRATIONS;

    /// The schema version this build writes.
    pub const SCHEMA_VERSION: i64 = 5;

    /// How often a transaction is retried after a serialisation failure or deadlock.
    pub const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

    /// Connects to `url` (`postgres://user@host:port/db`) and brings the schema up to
    /// [`PostgresStore::SCHEMA_VERSION`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] for a bad URL, a server that is down or refuses the
    /// credentials, a TLS setting that contradicts the URL's `sslmode`, trusted roots that cannot
    /// be read, a server that offers no TLS when TLS is required, or a certificate that fails
    /// verification (the message then says "TLS verification failed");
    /// [`StoreError::SchemaTooNew`].
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, PostgresOptions::default())
    }

    /// [`PostgresStore::open`] with options.
    ///
    /// # Errors
    /// As [`PostgresStore::open`].
    pub fn open_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let mut config: Config = url.parse().map_err(|e| {
            // The client parses `sslmode` disable/prefer/require only, and no `sslrootcert`.
            let hint = if url.contains("sslrootcert") || url.contains("sslmode=verify") {
                " (certificates are always verified: name the CA file in \
                 PostgresOptions::root_certificates instead of the URL)"
            } else {
                ""
            };
            StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}{hint}"))
        })?;
        let transport = transport(
            &mut config,
            options.tls,
            options.root_certificates.as_deref(),
        )?;
        config.connect_timeout(options.connect_timeout);
        config.options(&format!(
            "-c statement_timeout={}",
            options.statement_timeout.as_millis()
        ));
        let (sender, receiver) = mpsc::channel::<Job>();
        let mut state = Worker {
            config,
            transport,
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
        if migration.version == 5 {
            let mut statements = HashMap::new();
            let backfilled = super::privacy::backfill_ends(&mut Db {
                client: &mut tx,
                statements: &mut statements,
            });
            match backfilled {
                Ok(()) => {}
                Err(Failure::Refused(error)) => return Err(error),
                Err(Failure::Engine(error)) => return Err(pg_error(&error)),
            }
        }
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

    fn subject_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, StoreError> {
        let subject = subject.clone();
        self.read(move |db| super::privacy::subject_key(db, &subject))
    }

    fn consents_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Consent>, StoreError> {
        self.read(move |db| super::privacy::consents_ended_before(db, before, limit))
    }
}

impl LedgerRead for PostgresStore {
    fn attestation_record(&self, id: &str) -> Result<Option<AttestationRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |db| ledger::attestation_record(db, &id))
    }

    fn attestations_of_subject(
        &self,
        subject: &SubjectId,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        let subject = subject.clone();
        self.read(move |db| ledger::attestations_of_subject(db, &subject))
    }

    fn attestations_of_consent(
        &self,
        consent: &ConsentId,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        let consent = consent.clone();
        self.read(move |db| ledger::attestations_of_consent(db, &consent))
    }

    fn bank_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.read(|db| ledger::bank_policies(db))
    }

    fn seen(&self, kind: SeenKind, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.read(move |db| ledger::seen(db, kind, &id))
    }

    fn feed_state(&self) -> Result<Option<FeedState>, StoreError> {
        self.read(|db| ledger::feed_state(db))
    }

    fn device_keys(&self, subject: &SubjectId) -> Result<Vec<DeviceKeyRecord>, StoreError> {
        let subject = subject.clone();
        self.read(move |db| ledger::device_keys(db, &subject))
    }

    fn subject_link(&self, pairwise: &SubjectId) -> Result<Option<SubjectLink>, StoreError> {
        let pairwise = pairwise.clone();
        self.read(move |db| super::privacy::subject_link(db, &pairwise))
    }

    fn link_of(
        &self,
        customer: &SubjectId,
        platform: &PlatformId,
    ) -> Result<Option<SubjectLink>, StoreError> {
        let (customer, platform) = (customer.clone(), platform.clone());
        self.read(move |db| super::privacy::link_of(db, &customer, &platform))
    }

    fn attestations_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        self.read(move |db| super::privacy::attestations_ended_before(db, before, limit))
    }

    fn links_of_customer(&self, customer: &SubjectId) -> Result<Vec<SubjectLink>, StoreError> {
        let customer = customer.clone();
        self.read(move |db| super::privacy::links_of_customer(db, &customer))
    }

    fn gate_view(&self, query: &GateQuery<'_>) -> Result<GateView, StoreError> {
        let (attestation, consent, proof_id, token_id) = (
            query.attestation.to_owned(),
            query.consent.clone(),
            query.proof_id.to_owned(),
            query.token_id.to_owned(),
        );
        let day = query.day;
        self.read(move |db| {
            ledger::gate_view(
                db,
                &GateQuery {
                    attestation: &attestation,
                    consent: &consent,
                    day,
                    proof_id: &proof_id,
                    token_id: &token_id,
                },
            )
        })
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

    fn record_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        let checkpoint = checkpoint.checkpoint().clone();
        self.run(move |worker| transaction(worker, |db| super::record_checkpoint(db, &checkpoint)))
    }

    fn purge(&self) -> Result<bool, StoreError> {
        // Outside any transaction (VACUUM refuses to run in one). The key and link tables are
        // small: rewriting them drops every dead row's bytes from their files. The others are
        // vacuumed, which frees their dead rows' space for reuse without rewriting the tables;
        // what a PostgreSQL server keeps beyond that (WAL segments, archives, backups) is for
        // its operator (docs/PRIVACY.md).
        self.run(|worker| {
            let client = worker.client()?;
            // One statement per call: VACUUM refuses a multi-statement string too. The rewrite
            // takes an exclusive lock on the key table: wait for it at most two seconds (then
            // report "not done", to be retried) rather than stall every broker's reads.
            client
                .batch_execute("SET lock_timeout = '2s'")
                .map_err(|e| pg_error(&e))?;
            let rewritten = client.batch_execute("VACUUM (FULL) subject_keys, bank_subject_links");
            client
                .batch_execute("RESET lock_timeout")
                .map_err(|e| pg_error(&e))?;
            match rewritten {
                Ok(()) => {}
                Err(error)
                    if error.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
                {
                    return Ok(false);
                }
                Err(error) => return Err(pg_error(&error)),
            }
            client
                .batch_execute(
                    "VACUUM consents, usage, attestations, bank_attestations, bank_served, \
                     bank_device_keys, bank_platform_revocations",
                )
                .map_err(|e| pg_error(&e))?;
            Ok(true)
        })
    }
}

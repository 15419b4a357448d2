//! The PostgreSQL store: one database shared by many broker processes.
//!
//! # Client and threads
//!
//! The synchronous `postgres` crate runs each call on a small runtime of its own, and such a call
//! panics if made from inside another async runtime. So every connection lives on a thread that
//! this store owns, and every store call is sent to one over a channel: calling the store (or the
//! broker) from inside an async runtime blocks that task's thread like any blocking call, and
//! never panics. A thread reconnects after a lost connection, so a call after the server comes
//! back works; a read that finds its connection lost is made once more on a new one.
//!
//! Reads go to a pool of [`PostgresOptions::readers`] connections sharing one queue; each read is
//! one statement ([`StateRead::access_view`], everything a decision reads, included). Writes go
//! to one writer connection, in the order they were queued.
//!
//! # Group commit in one round trip
//!
//! The commits queued while the writer is busy are sent together as the next batch: one call of the
//! server-side function `consent_broker_commit` (schema version 6, replaced by 7, 8 and 9), which
//! takes the commit lock, and for each commit in turn checks its preconditions (one statement a
//! check), applies its changes, builds its audit entries and computes the Merkle nodes they
//! complete. One statement, one transaction, one flush of the server's write-ahead log for the
//! whole batch, and no caller is answered before it returns. A commit whose preconditions fail is
//! refused alone (`Conflict`, or `Duplicate` for an id already seen) and writes nothing; the others
//! land, numbered consecutively. The function knows the preconditions and changes of a decision, a
//! token and the bank's gate (a sealed response's live device keys among them since version 7;
//! before, such a gate check was applied alone); any other commit (a consent's creation, a
//! revocation, a key's rotation, an erasure, a subject's first key) is applied statement by
//! statement in a transaction of its own, in its turn. [`PostgresStore::commit_stats`] shows the
//! grouping.
//!
//! If the connection breaks while a batch is in flight, every caller in it gets
//! [`StoreError::OutcomeUnknown`]: whether the server committed the batch before the break is
//! unknown to this side, as with any database client, and the decisions may be in the log though
//! their callers were told of an error (never of a permit). A caller that retries decides again
//! on what the store then holds.
//!
//! # Concurrency control
//!
//! Every transaction that writes first takes a transaction-scoped advisory lock
//! (`pg_advisory_xact_lock`) on one key shared by every broker on the database. Commits are
//! thereby serialised across processes, as in SQLite: preconditions are read and changes, audit
//! rows and Merkle nodes written under the lock, so the audit log stays one gap-free sequence
//! with one valid tree, usage counters are exact, and a revocation committed by one broker fails
//! the precondition of any permit another broker decided before it (that broker re-decides).
//! Reads take no lock. Serialisation failures and deadlocks (SQLSTATE 40001, 40P01) are retried
//! up to [`PostgresStore::MAX_TRANSACTION_ATTEMPTS`] times.
//!
//! # TLS
//!
//! Connections are made with rustls on the ring provider (the crate's cryptographic backend),
//! and the server's certificate is always verified: its chain against the CAs in
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
//! with [`StoreError::SchemaTooNew`], at opening and at every commit after (a newer build may
//! migrate the database while this one runs: each commit compares the versions under the commit
//! lock, the commit function by the session's `consent_broker.schema_version`). Audit rows and
//! Merkle nodes are append-only (triggers).
//!
//! The statements and the commit semantics are shared with the SQLite store (the parent module);
//! this file holds what is PostgreSQL's own: the worker thread, connecting, retries, the
//! advisory lock, its schema history, and the [`Dialect`] over the `postgres` client.

mod batch;
mod connection;
mod views;

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use postgres::{Client, Config, IsolationLevel, Transaction};
use time::{Date, OffsetDateTime};

use self::batch::{Fast, Pending};
use self::connection::{
    Db, Job, Transport, Worker, connection_lost, pg_error, retryable, transport,
};
use self::views::{Read, ViewQuery, read_loop};
use super::{Failure, Migration, ledger, read};
use crate::consent::Consent;
use crate::ids::{ConsentId, HolderId, PlatformId, SubjectId};
use crate::merkle::Hash;
use crate::policy::{PlatformProfile, Usage};
use crate::privacy::SubjectKey;
use crate::store::stats::Counters;
use crate::store::{
    AccessView, AttestationRecord, Commit, CommitReceipt, CommitStats, DeviceKeyRecord, FeedState,
    GateQuery, GateView, HolderRecord, LedgerRead, LogRead, PolicyRecord, PublishedKey, SeenKind,
    SignedCheckpoint, StateRead, Store, StoreError, StoredCheckpoint, StoredEntry, SubjectLink,
};

/// The advisory lock key every broker's commits take ("CBRk").
const COMMIT_LOCK: i64 = 0x4342_526B;

/// The server-side function behind group commit, and the statement that pins its search path
/// (schema version 6 created it, versions 7 to 11 replaced it). Its arguments are parallel
/// arrays, each row tagged with the position of its commit in the batch (rows in commit order).
/// It answers, per commit, its first sequence number; -1 if a precondition failed; -2 - k if its
/// check k (0-based over the whole batch) found an id already seen. A refused commit writes
/// nothing. The lock key is [`COMMIT_LOCK`] (a unit test checks that it is spelled the same).
macro_rules! commit_function {
    () => {
        r#"
CREATE OR REPLACE FUNCTION consent_broker_commit(
    commits INTEGER,
    check_commit INTEGER[], check_kind TEXT[], check_id TEXT[], check_arg TEXT[],
    check_num BIGINT[], check_blob BYTEA[],
    change_commit INTEGER[], change_kind TEXT[], change_id TEXT[], change_arg TEXT[],
    change_num BIGINT[], change_num2 BIGINT[],
    entry_commit INTEGER[], entry_tail BYTEA[]
) RETURNS BIGINT[] LANGUAGE plpgsql AS $fn$
DECLARE
    outcome BIGINT[] := pg_catalog.array_fill(NULL::BIGINT, ARRAY[commits]);
    edge BYTEA[] := pg_catalog.array_fill(NULL::BYTEA, ARRAY[64]);
    seqs BIGINT[] := '{}';
    entries BYTEA[] := '{}';
    levels INTEGER[] := '{}';
    indices BIGINT[] := '{}';
    hashes BYTEA[] := '{}';
    _size BIGINT;
    _want INTEGER := 0;
    _found INTEGER := 0;
    _c INTEGER;
    _first INTEGER;
    _k INTEGER := 1;
    _x INTEGER := 1;
    _e INTEGER := 1;
    _verdict BIGINT;
    _level INTEGER;
    _index BIGINT;
    _hash BYTEA;
    _entry BYTEA;
    _i INTEGER;
    _id TEXT;
    _arg TEXT;
    _num BIGINT;
    _got BIGINT;
    _key BYTEA;
    _text TEXT;
    _ok BOOLEAN;
BEGIN
    PERFORM pg_advisory_xact_lock(1128419947);
    -- Under the lock, as a migration runs: a caller of another schema version than the one the
    -- database is at (a build still running after a newer one migrated it) writes nothing.
    SELECT value INTO _got FROM consent_broker_meta WHERE key = 'schema_version';
    IF pg_catalog.current_setting('consent_broker.schema_version', true)
        IS DISTINCT FROM _got::TEXT THEN
        RAISE EXCEPTION 'consent_broker schema version %', _got USING ERRCODE = '55000';
    END IF;
    SELECT COALESCE(MAX(seq) + 1, 0) INTO _size FROM audit;
    -- The tree's right edge: the root of each complete subtree ending at the log's end, in one
    -- query.
    FOR _level IN 0..62 LOOP
        IF ((_size >> _level) & 1::BIGINT) = 1 THEN _want := _want + 1; END IF;
    END LOOP;
    FOR _level, _hash IN SELECT n.level, n.hash FROM pg_catalog.generate_series(0, 62) AS l (level)
            JOIN merkle_nodes n ON n.level = l.level AND n.idx = (_size >> l.level) - 1
            WHERE ((_size >> l.level) & 1::BIGINT) = 1 LOOP
        edge[_level + 1] := _hash;
        _found := _found + 1;
    END LOOP;
    IF _found <> _want THEN
        RAISE EXCEPTION USING ERRCODE = 'data_corrupted', MESSAGE = pg_catalog.format(
            'Merkle tree: %s of the %s nodes of the right edge of %s leaves are missing',
            _want - _found, _want, _size);
    END IF;
    -- A caller of an older build (before schema version 8) sends no signed time with an id it
    -- checks and no kind with a prune: refused, so that it cannot pass a replay the current
    -- build would refuse.
    IF EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest(check_kind),
                pg_catalog.unnest(check_num)) AS c (kind, num)
            WHERE c.kind = 'unseen' AND c.num IS NULL)
        OR EXISTS (SELECT 1 FROM ROWS FROM (pg_catalog.unnest(change_kind),
                pg_catalog.unnest(change_arg)) AS c (kind, arg)
            WHERE c.kind = 'prune' AND c.arg IS DISTINCT FROM 'proof'
                AND c.arg IS DISTINCT FROM 'token') THEN
        RAISE EXCEPTION 'consent-broker: a presented id without its signed time, or a prune '
            'without its kind (a caller older than schema version 8)';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.unnest(check_kind) AS k (kind)
            WHERE k.kind IS NULL OR k.kind NOT IN ('consent',
            'holder', 'usage', 'key', 'subject_key', 'attestation', 'served_unattended_below',
            'served_present_below', 'policy', 'unseen', 'live_devices',
            'not_revoked_at_platform')) THEN
        RAISE EXCEPTION 'consent-broker: unknown check';
    END IF;
    FOR _c IN 0 .. commits - 1 LOOP
        -- The commit's checks are rows _first .. _k - 1, all made against the same state (the
        -- commits before it applied), in order: the first that fails decides.
        _first := _k;
        WHILE _k <= pg_catalog.cardinality(check_commit) AND check_commit[_k] = _c LOOP
            _k := _k + 1;
        END LOOP;
        _verdict := NULL;
        -- Each check by a statement of its own kind: one index probe, planned once a session
        -- (a single statement over every kind set up all their sub-plans at every commit).
        FOR _i IN _first .. _k - 1 LOOP
            _id := check_id[_i];
            _arg := check_arg[_i];
            _num := check_num[_i];
            CASE check_kind[_i]
            WHEN 'consent' THEN
                SELECT version INTO _got FROM consents WHERE id = _id;
                _ok := _got IS NOT DISTINCT FROM _num;
            WHEN 'holder' THEN
                SELECT version INTO _got FROM holders WHERE id = _id;
                _ok := _got IS NOT DISTINCT FROM _num;
            WHEN 'usage' THEN
                SELECT unattended INTO _got FROM usage WHERE consent = _id AND day = _arg;
                _ok := COALESCE(_got, 0) = _num;
            WHEN 'key' THEN
                _ok := EXISTS (SELECT 1 FROM published_keys
                    WHERE key_use = _arg AND kid = _id AND retired_at IS NULL);
            WHEN 'subject_key' THEN
                SELECT key INTO _key FROM subject_keys WHERE subject = _id;
                _ok := pg_catalog.sha256(_key) IS NOT DISTINCT FROM check_blob[_i];
            WHEN 'attestation' THEN
                SELECT version INTO _got FROM bank_attestations WHERE id = _id;
                _ok := _got IS NOT DISTINCT FROM _num;
            WHEN 'served_unattended_below' THEN
                SELECT unattended INTO _got FROM bank_served
                    WHERE attestation = _id AND day = _arg;
                _ok := COALESCE(_got, 0) < _num;
            WHEN 'served_present_below' THEN
                SELECT present INTO _got FROM bank_served
                    WHERE attestation = _id AND day = _arg;
                _ok := COALESCE(_got, 0) < _num;
            WHEN 'policy' THEN
                SELECT MAX(version) INTO _got FROM bank_policies;
                _ok := _got IS NOT DISTINCT FROM _num;
            WHEN 'unseen' THEN
                -- A count, not NOT EXISTS: the planner may hash an EXISTS sub-plan, reading
                -- every seen id at every batch; a count is one index probe.
                SELECT pg_catalog.count(*) INTO _got FROM bank_presented
                    WHERE kind = _arg AND at = _num AND id = _id;
                IF _got = 0 THEN
                    SELECT pg_catalog.count(*) INTO _got FROM bank_seen_before_v8
                        WHERE kind = _arg AND id = _id;
                END IF;
                _ok := _got = 0;
            WHEN 'live_devices' THEN
                SELECT pg_catalog.string_agg(d.thumbprint, ',' ORDER BY d.position) INTO _text
                    FROM bank_device_keys d WHERE d.subject = _id
                    AND (d.record::jsonb ->> 'revoked_at') IS NULL;
                _ok := COALESCE(_text, '') = _arg;
            WHEN 'not_revoked_at_platform' THEN
                SELECT pg_catalog.count(*) INTO _got FROM bank_platform_revocations
                    WHERE consent = _id;
                _ok := _got = 0;
            ELSE
                RAISE EXCEPTION 'consent-broker: unknown check';
            END CASE;
            IF NOT COALESCE(_ok, FALSE) THEN
                -- The first that fails decides: -2 - its position over the whole batch (0-based)
                -- for an id already seen, else -1.
                _verdict := CASE WHEN check_kind[_i] = 'unseen' THEN -2 - (_i - 1) ELSE -1 END;
                EXIT;
            END IF;
        END LOOP;
        WHILE _x <= pg_catalog.cardinality(change_commit) AND change_commit[_x] = _c LOOP
            IF _verdict IS NULL THEN
                CASE change_kind[_x]
                WHEN 'usage' THEN
                    INSERT INTO usage (consent, day, unattended)
                        VALUES (change_id[_x], change_arg[_x], 1)
                        ON CONFLICT (consent, day)
                        DO UPDATE SET unattended = usage.unattended + 1;
                WHEN 'served' THEN
                    INSERT INTO bank_served (attestation, day, unattended, present)
                        VALUES (change_id[_x], change_arg[_x], change_num[_x], change_num2[_x])
                        ON CONFLICT (attestation, day) DO UPDATE SET
                        unattended = bank_served.unattended + excluded.unattended,
                        present = bank_served.present + excluded.present;
                WHEN 'seen' THEN
                    INSERT INTO bank_presented (kind, at, id)
                        VALUES (change_arg[_x], change_num[_x], change_id[_x]);
                WHEN 'prune' THEN
                    -- By row address: no plan of it can become a scan of every presented id.
                    DELETE FROM bank_presented WHERE ctid = ANY (ARRAY(SELECT s.ctid
                        FROM bank_presented s WHERE s.kind = change_arg[_x]
                        AND s.at < change_num[_x] ORDER BY s.at LIMIT change_num2[_x]));
                    -- Ids remembered before schema version 8, until they are gone.
                    DELETE FROM bank_seen_before_v8 WHERE ctid = ANY (ARRAY(SELECT s.ctid
                        FROM bank_seen_before_v8 s WHERE s.kind = change_arg[_x]
                        AND s.expires_at < change_num[_x]
                        ORDER BY s.expires_at LIMIT change_num2[_x]));
                ELSE
                    RAISE EXCEPTION 'consent-broker: unknown change %', change_kind[_x];
                END CASE;
            END IF;
            _x := _x + 1;
        END LOOP;
        outcome[_c + 1] := COALESCE(_verdict, _size);
        WHILE _e <= pg_catalog.cardinality(entry_commit) AND entry_commit[_e] = _c LOOP
            IF _verdict IS NULL THEN
                _entry := pg_catalog.convert_to('{"seq":'::TEXT || _size::TEXT, 'UTF8'::NAME)
                    || entry_tail[_e];
                seqs := pg_catalog.array_append(seqs, _size);
                entries := pg_catalog.array_append(entries, _entry);
                _hash := pg_catalog.sha256(pg_catalog.decode('00', 'hex') || _entry);
                _level := 0;
                _index := _size;
                levels := pg_catalog.array_append(levels, _level);
                indices := pg_catalog.array_append(indices, _index);
                hashes := pg_catalog.array_append(hashes, _hash);
                WHILE (_index & 1::BIGINT) = 1 LOOP
                    _hash := pg_catalog.sha256(
                        pg_catalog.decode('01', 'hex') || edge[_level + 1] || _hash);
                    _level := _level + 1;
                    _index := _index >> 1;
                    levels := pg_catalog.array_append(levels, _level);
                    indices := pg_catalog.array_append(indices, _index);
                    hashes := pg_catalog.array_append(hashes, _hash);
                END LOOP;
                edge[_level + 1] := _hash;
                _size := _size + 1;
            END IF;
            _e := _e + 1;
        END LOOP;
    END LOOP;
    INSERT INTO audit (seq, entry)
        SELECT * FROM ROWS FROM (pg_catalog.unnest(seqs), pg_catalog.unnest(entries));
    INSERT INTO merkle_nodes (level, idx, hash)
        SELECT * FROM ROWS FROM (pg_catalog.unnest(levels), pg_catalog.unnest(indices),
            pg_catalog.unnest(hashes));
    RETURN outcome;
END
$fn$;
DO $do$ BEGIN
    -- Names inside the functions resolve in the schema they were created in (and pg_temp last),
    -- whatever the caller's search path: an object another role put on that path cannot stand in
    -- for a table, a function or an operator the functions use.
    EXECUTE pg_catalog.format('ALTER FUNCTION consent_broker_commit(INTEGER, INTEGER[], '
        'TEXT[], TEXT[], TEXT[], BIGINT[], BYTEA[], INTEGER[], TEXT[], TEXT[], TEXT[], BIGINT[], '
        'BIGINT[], INTEGER[], BYTEA[]) SET search_path = %I, pg_temp', current_schema());
    -- Its statements are planned once per session, not at every call: left to choose, the
    -- server planned its checks afresh at each call once it knew the live device keys, holding
    -- the commit lock meanwhile (four brokers' decisions took 2.5 to 4 times as long; then one
    -- statement checked every kind, since version 9 one statement a kind does).
    -- A plan made once may be made while the tables are nearly empty, when reading a whole table
    -- looks cheapest; without sequential scans every lookup here takes its index, as the tables
    -- grow (the gate's seen ids above all).
    ALTER FUNCTION consent_broker_commit(INTEGER, INTEGER[], TEXT[], TEXT[], TEXT[], BIGINT[],
        BYTEA[], INTEGER[], TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT[], INTEGER[], BYTEA[])
        SET plan_cache_mode = force_generic_plan;
    ALTER FUNCTION consent_broker_commit(INTEGER, INTEGER[], TEXT[], TEXT[], TEXT[], BIGINT[],
        BYTEA[], INTEGER[], TEXT[], TEXT[], TEXT[], BIGINT[], BIGINT[], INTEGER[], BYTEA[])
        SET enable_seqscan = off;
    EXECUTE pg_catalog.format('ALTER FUNCTION consent_broker_consent_holder() '
        'SET search_path = %I, pg_temp', current_schema());
END
$do$;
"#
    };
}

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
    Migration {
        version: 6,
        // Group commit in one round trip (see the `batch` module): a batch of commits, as
        // parallel arrays, checked, applied, numbered and hashed under the commit lock; and each
        // consent's holder in a column of its own, kept from the record by a trigger, so the
        // access view (one statement) joins on it without parsing the record on every read.
        sql: COMMIT_FUNCTION,
    },
    Migration {
        version: 7,
        // The commit function learns the precondition on a subject's live device keys, so that
        // the bank's gate check of a sealed response joins the batch instead of being applied
        // statement by statement in a transaction of its own.
        sql: commit_function!(),
    },
    Migration {
        version: 8,
        // As the SQLite store's version 8: presented ids keyed by kind, signed time and id, so
        // that inserts and prunes touch the two edges of one index; the old table is read and
        // pruned, never written, until the ids in it have expired, under a new name so that a
        // process of an older build still running fails on it. The commit function learns the
        // new table, and refuses the arguments of an older build's caller.
        sql: concat!(
            "CREATE TABLE bank_presented (
                kind TEXT NOT NULL, at BIGINT NOT NULL, id TEXT NOT NULL,
                PRIMARY KEY (kind, at, id)
            );
            ALTER TABLE bank_seen RENAME TO bank_seen_before_v8;",
            commit_function!()
        ),
    },
    Migration {
        version: 9,
        // The commit function checks each precondition by a statement of its own kind (one
        // index probe) instead of one statement over every kind, whose sub-plans were all set
        // up again at every commit: the server's own work per decision.
        sql: commit_function!(),
    },
    Migration {
        version: 10,
        // The commit function refuses, under the commit lock, a caller whose session says another
        // schema version than the database's (`consent_broker.schema_version`, which every
        // session of the store sets): a build still running after a newer one migrated the
        // database writes nothing, whatever the newer migration changed. A build before this one
        // sets no version and is refused too.
        sql: commit_function!(),
    },
    Migration {
        version: 11,
        // The commit function checks that the bank's ledger records no revocation of a consent
        // on the platform (`not_revoked_at_platform`): the gate's commit of a served access
        // fails if the revocation feed that revokes its consent was applied since its read.
        sql: commit_function!(),
    },
    Migration {
        version: 12,
        // The root of the broker's log tree at the bank's feed position: the next feed's log
        // must extend it (none in a state written before feeds named roots).
        sql: "ALTER TABLE bank_feed ADD COLUMN root BYTEA \
              CHECK (root IS NULL OR octet_length(root) = 32);",
    },
];

/// Schema version 6: each consent's holder in a column kept by a trigger, and the commit
/// function.
const COMMIT_FUNCTION: &str = concat!(
    r#"
ALTER TABLE consents ADD COLUMN holder TEXT;
UPDATE consents SET holder = record::jsonb #>> '{request,holder}'::TEXT[];
CREATE FUNCTION consent_broker_consent_holder() RETURNS trigger LANGUAGE plpgsql AS $fn$
    BEGIN NEW.holder := NEW.record::jsonb #>> '{request,holder}'::TEXT[]; RETURN NEW; END
$fn$;
CREATE TRIGGER consents_holder BEFORE INSERT OR UPDATE OF record ON consents
    FOR EACH ROW EXECUTE FUNCTION consent_broker_consent_holder();
"#,
    commit_function!()
);

/// A [`Store`] in a PostgreSQL database.
pub struct PostgresStore {
    /// The writer's queue: commits (sent in batches) and other writes, in order.
    writer: Lane<Task>,
    /// The readers' queue, shared by [`PostgresOptions::readers`] threads.
    readers: Lane<Read>,
    counters: Arc<Counters>,
}

/// Where a caller's answer goes.
type Reply<T> = Sender<Result<T, StoreError>>;

/// What the writer thread is given.
enum Task {
    /// A commit, batched with those queued behind it.
    Commit(Box<Pending>),
    /// Anything else, run alone in its turn.
    Run(Job),
}

/// A queue and the threads that serve it.
struct Lane<T> {
    jobs: Mutex<Option<Sender<T>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<T> Lane<T> {
    fn send(&self, task: T) -> Result<(), StoreError> {
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|jobs| jobs.send(task).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "the PostgreSQL worker has stopped".into(),
            ))
        }
    }

    /// Closes the queue and waits for its threads, so their connections close.
    fn close(&self) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }
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
    ///
    /// Give the broker a schema of its own, in which no other role may create objects: the
    /// server-side commit function resolves names in the schema it was created in, and a role
    /// that can create functions or operators there could stand in for the ones it uses. (The
    /// function names the types of what it calls, so look-alikes in `public` do not match; see
    /// the tests.)
    pub schema: Option<String>,
    /// Abort a statement after this long (server-side `statement_timeout`). The time a commit
    /// waits for the commit lock counts, and a batch of commits is one statement: a timeout
    /// answers every caller in the batch with [`StoreError::Busy`].
    pub statement_timeout: StdDuration,
    /// Give up connecting after this long.
    pub connect_timeout: StdDuration,
    /// When to use TLS; [`PostgresTlsMode::Auto`] by default.
    pub tls: PostgresTlsMode,
    /// A PEM file of the certificate authorities that may sign the server's certificate (libpq's
    /// `sslrootcert`), read when the store opens. `None` trusts the platform's store: the
    /// operating system's bundle, or the files named by `SSL_CERT_FILE` / `SSL_CERT_DIR`.
    pub root_certificates: Option<PathBuf>,
    /// How many connections serve reads, each on a thread of its own (at least one; 2 by
    /// default). The access views queued while a reader is busy are answered together by its
    /// next statement, so a few readers serve many callers. Commits have one more connection,
    /// their own: commits queued while one batch is being written go to the server together as
    /// the next.
    pub readers: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: None,
            statement_timeout: StdDuration::from_secs(30),
            connect_timeout: StdDuration::from_secs(5),
            tls: PostgresTlsMode::Auto,
            root_certificates: None,
            readers: 2,
        }
    }
}

impl PostgresStore {
    /// The schema's history, oldest first.
    pub const MIGRATIONS: &'static [Migration] = MIGRATIONS;

    /// The schema version this build writes.
    pub const SCHEMA_VERSION: i64 = 12;

    /// How often a transaction is retried after a serialisation failure or deadlock.
    pub const MAX_TRANSACTION_ATTEMPTS: u32 = 5;

    /// Connects to `url` (`postgres://user@host:port/db`) and brings the schema up to
    /// [`PostgresStore::SCHEMA_VERSION`].
    ///
    /// Every session the store opens runs its transactions in `READ COMMITTED` and with
    /// `synchronous_commit` on (raised from `off` if that is the database's default; a stronger
    /// setting, such as `remote_apply`, is kept), both set for the session so that a reload of
    /// the server's configuration cannot change them, and nothing is acknowledged before it is
    /// durable. A connection that sat unused for more than a second is checked (one round trip)
    /// before its next use, so that a commit is not sent on a connection the server has closed.
    /// Unless the URL sets them, TCP keepalives (after 30 s idle, every 5 s, 3 probes) and a 60 s
    /// `tcp_user_timeout` notice a server or path that stopped answering.
    ///
    /// Each session also sets the schema version this build writes: once a newer build has
    /// migrated the database, every later commit of this store is refused as
    /// [`StoreError::SchemaTooNew`] and writes nothing.
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
        // A server (or the path to it) that stops answering is noticed within about a minute,
        // not after the operating system's two hours, unless the URL says otherwise.
        if config.get_keepalives_idle() == StdDuration::from_secs(2 * 60 * 60) {
            config
                .keepalives(true)
                .keepalives_idle(StdDuration::from_secs(30))
                .keepalives_interval(StdDuration::from_secs(5))
                .keepalives_retries(3);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(StdDuration::from_secs(60));
        }
        config.options(&format!(
            "-c statement_timeout={}",
            options.statement_timeout.as_millis()
        ));
        let connection = Connection {
            config,
            transport,
            connect_timeout: options.connect_timeout,
            schema: options.schema,
        };
        let counters = Arc::new(Counters::default());
        let (writer, tasks) = mpsc::channel::<Task>();
        let mut threads = vec![spawn("consent-broker-postgres-writer", {
            let (mut worker, counters) = (connection.worker(), Arc::clone(&counters));
            move || write_loop(&mut worker, &tasks, &counters)
        })?];
        let writer = Lane {
            jobs: Mutex::new(Some(writer)),
            threads: Mutex::new(std::mem::take(&mut threads)),
        };
        let (readers, jobs) = mpsc::channel::<Read>();
        let jobs = Arc::new(Mutex::new(jobs));
        let readers = Lane {
            jobs: Mutex::new(Some(readers)),
            threads: Mutex::new(Vec::new()),
        };
        for _ in 0..options.readers.max(1) {
            let (mut worker, jobs) = (connection.worker(), Arc::clone(&jobs));
            let thread = spawn("consent-broker-postgres-reader", move || {
                read_loop(&mut worker, &jobs);
            });
            match thread {
                Ok(thread) => readers
                    .threads
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(thread),
                Err(error) => {
                    writer.close();
                    readers.close();
                    return Err(error);
                }
            }
        }
        let store = Self {
            writer,
            readers,
            counters,
        };
        store.run(migrate)?;
        Ok(store)
    }

    /// How the store's commits have been grouped into transactions since it was opened (a
    /// commit applied statement by statement is a transaction of its own).
    pub fn commit_stats(&self) -> CommitStats {
        self.counters.stats()
    }

    /// Runs `f` on the writer's thread, in its turn among the commits, and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Worker) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::channel();
        self.writer.send(Task::Run(Box::new(move |worker| {
            // The caller may have gone; nothing to do then.
            let _ = reply.send(f(worker));
        })))?;
        answered(&answer)
    }

    /// Runs a read on one of the readers' connections (made once more on a new connection if
    /// that one was lost since its last use: [`views::retrying`]).
    fn read<T: Send + 'static>(
        &self,
        read: impl Fn(&mut Db<'_, Client>) -> Result<T, Failure<postgres::Error>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::channel();
        self.readers
            .send(Read::Run(Box::new(move |worker: &mut Worker| {
                let _ = reply.send(views::retrying(worker, &read));
            })))?;
        answered(&answer)
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // Closing the queues ends the threads' loops; wait for them so the connections close.
        self.writer.close();
        self.readers.close();
    }
}

/// The answer a worker thread sends back; if the thread is gone (it stopped, or panicked), the
/// store is unavailable.
fn answered<T>(answer: &Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
    answer
        .recv()
        .map_err(|_| StoreError::Unavailable("the PostgreSQL worker has stopped".into()))?
}

/// What every connection of a store is made with.
struct Connection {
    config: Config,
    transport: Transport,
    connect_timeout: StdDuration,
    schema: Option<String>,
}

impl Connection {
    /// A worker that connects when first used.
    fn worker(&self) -> Worker {
        Worker {
            config: self.config.clone(),
            transport: self.transport.clone(),
            connect_timeout: self.connect_timeout,
            schema: self.schema.clone(),
            client: None,
            statements: HashMap::new(),
            used: None,
        }
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|e| StoreError::Unavailable(format!("cannot start a worker: {e}")))
}

/// The most commits sent in one call.
const MAX_BATCH: usize = 256;

/// The writer's thread: each commit with every commit queued behind it (up to [`MAX_BATCH`]),
/// other writes alone, in the order they were queued.
fn write_loop(worker: &mut Worker, tasks: &Receiver<Task>, counters: &Counters) {
    let mut next = tasks.recv().ok();
    while let Some(task) = next.take() {
        match task {
            Task::Run(job) => job(worker),
            Task::Commit(first) => {
                let mut batch = vec![*first];
                while batch.len() < MAX_BATCH {
                    match tasks.try_recv() {
                        Ok(Task::Commit(pending)) => batch.push(*pending),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                write_batch(worker, batch, counters);
            }
        }
        if next.is_none() {
            next = tasks.recv().ok();
        }
    }
}

/// Writes a batch: each run of commits the server-side function takes in one call, any other
/// commit in a transaction of its own, in order.
fn write_batch(worker: &mut Worker, batch: Vec<Pending>, counters: &Counters) {
    let mut run = Vec::new();
    for pending in batch {
        match Fast::of(&pending.commit) {
            Some(fast) => run.push((pending, fast)),
            None => {
                flush_run(worker, &mut run, counters);
                counters.batch(1);
                let _ = pending.reply.send(alone(worker, &pending.commit));
            }
        }
    }
    flush_run(worker, &mut run, counters);
}

/// Applies one commit statement by statement, in a transaction of its own.
fn alone(worker: &mut Worker, commit: &Commit) -> Result<CommitReceipt, StoreError> {
    transaction(worker, |db| super::apply_commit(db, commit))
}

fn flush_run(worker: &mut Worker, run: &mut Vec<(Pending, Fast)>, counters: &Counters) {
    if !run.is_empty() {
        counters.batch(run.len());
        batch::commit_run(worker, std::mem::take(run), alone);
    }
}

fn migrate(worker: &mut Worker) -> Result<(), StoreError> {
    let client = worker.client()?;
    let mut tx = client.transaction().map_err(|e| pg_error(&e))?;
    // Everything under the commit lock, the version table's creation included: two brokers
    // starting on a new database at once must not both create it. With a statement timeout of
    // at least a minute (a shorter one bounds a decision's wait for the commit lock): a new
    // database's migrations, which compile the commit function once per version, may take
    // longer than a decision should, and run once.
    tx.batch_execute(
        "SELECT set_config('statement_timeout', '60s', true) \
         WHERE current_setting('statement_timeout')::INTERVAL \
         BETWEEN INTERVAL '1 microsecond' AND INTERVAL '60 seconds'",
    )
    .map_err(|e| pg_error(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])
        .map_err(|e| pg_error(&e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS consent_broker_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    )
    .map_err(|e| pg_error(&e))?;
    // A table of that name made by something else may hold another type, or a null: refused,
    // not read as a version.
    let version: i64 = match tx
        .query_opt(
            "SELECT value FROM consent_broker_meta WHERE key = 'schema_version'",
            &[],
        )
        .map_err(|e| pg_error(&e))?
    {
        None => 0,
        Some(row) => row.try_get(0).map_err(|_| {
            StoreError::Corrupt("consent_broker_meta's schema version is not a number".into())
        })?,
    };
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
        let (client, statements) = worker.connected()?;
        let outcome = (|| -> Result<T, Failure<postgres::Error>> {
            crate::store::back_off(attempt);
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()
                .map_err(Failure::Engine)?;
            let value = write(&mut Db {
                client: &mut tx,
                statements,
            })?;
            if let Err(error) = tx.commit() {
                if connection_lost(&error) {
                    // COMMIT was sent: whether the server made it durable is unknown here.
                    return Err(Failure::Refused(StoreError::OutcomeUnknown(
                        pg_error(&error).to_string(),
                    )));
                }
                return Err(Failure::Engine(error));
            }
            Ok(value)
        })();
        match outcome {
            Ok(value) => return Ok(value),
            Err(Failure::Refused(error)) => {
                if matches!(error, StoreError::OutcomeUnknown(_)) {
                    worker.client = None;
                }
                return Err(error);
            }
            Err(Failure::Engine(error))
                if retryable(&error) && attempt < PostgresStore::MAX_TRANSACTION_ATTEMPTS => {}
            Err(Failure::Engine(error)) => {
                if connection_lost(&error) {
                    worker.client = None;
                }
                return Err(pg_error(&error));
            }
        }
    }
}

impl StateRead for PostgresStore {
    fn access_view(
        &self,
        consent: &ConsentId,
        platform: &PlatformId,
        day: Date,
    ) -> Result<AccessView, StoreError> {
        let (reply, answer) = mpsc::channel();
        self.readers.send(Read::View(Box::new(ViewQuery {
            consent: consent.clone(),
            platform: platform.clone(),
            day,
            reply,
        })))?;
        answered(&answer)
    }

    fn keep_access_views(&self) -> bool {
        true
    }

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

    fn platform_revocation(
        &self,
        consent: &ConsentId,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let consent = consent.clone();
        self.read(move |db| ledger::platform_revocation(db, &consent))
    }

    fn bank_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.read(|db| ledger::bank_policies(db))
    }

    fn seen(&self, kind: SeenKind, id: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.read(move |db| ledger::seen(db, kind, &id, at))
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
        let (day, proof_at, token_at) = (query.day, query.proof_at, query.token_at);
        self.read(move |db| {
            ledger::gate_view(
                db,
                &GateQuery {
                    attestation: &attestation,
                    consent: &consent,
                    day,
                    proof_id: &proof_id,
                    proof_at,
                    token_id: &token_id,
                    token_at,
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
        self.read(move |db| read::audit_bytes(db, range.clone()))
    }

    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        self.read(move |db| read::merkle_node(db, level, index))
    }

    fn merkle_nodes(&self, level: u32, range: Range<u64>) -> Result<Vec<(u64, Hash)>, StoreError> {
        self.read(move |db| read::merkle_nodes(db, level, range.clone()))
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.read(|db| read::latest_checkpoint(db))
    }
}

impl Store for PostgresStore {
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
        // Encoded here, by the caller, so the writer only sends.
        let records = super::write::prepare_records(&commit)?;
        let (reply, answer) = mpsc::channel();
        self.writer.send(Task::Commit(Box::new(Pending {
            commit,
            records,
            reply,
        })))?;
        // Queued: a writer that stops (a panic) without answering may have sent it first, so
        // its outcome is unknown, not failed (a retry could record the decision twice).
        answer.recv().map_err(|_| {
            StoreError::OutcomeUnknown(
                "the PostgreSQL writer stopped with this commit queued".into(),
            )
        })?
    }

    fn record_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        let checkpoint = checkpoint.checkpoint().clone();
        self.run(move |worker| transaction(worker, |db| super::record_checkpoint(db, &checkpoint)))
    }

    fn purge(&self) -> Result<bool, StoreError> {
        // VACUUM keeps a deleted row that a snapshot older than its deletion may still see, and
        // the rewrite would copy it into the new file. So: the first transaction id not yet
        // assigned now (every erasure committed before this call has a smaller one); wait, on a
        // reader's connection (the writer goes on committing), until nothing older holds the
        // horizon back; then vacuum on the writer's, and look again after it.
        let (reply, answer) = mpsc::channel();
        self.readers
            .send(Read::Run(Box::new(move |worker: &mut Worker| {
                let _ = reply.send(worker.client().and_then(|client| {
                    let before = next_xid(client)?;
                    let gone = wait_for_older_snapshots(client, &before, PURGE_WAIT)?;
                    Ok(gone.then_some(before))
                }));
            })))?;
        let Some(before) = answered(&answer)? else {
            return Ok(false);
        };
        // Outside any transaction (VACUUM refuses to run in one). The key and link tables are
        // small: rewriting them drops every dead row's bytes from their files. The others are
        // vacuumed, which frees their dead rows' space for reuse without rewriting the tables;
        // what a PostgreSQL server keeps beyond that (WAL segments, archives, backups) is for
        // its operator (docs/PRIVACY.md).
        self.run(move |worker| {
            let client = worker.client()?;
            // PostgreSQL 15 and older keep dead rows this many transactions longer.
            if cleanup_deferred(client)? {
                return Ok(false);
            }
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
            // A standby that connected while the rewrite ran may have brought an older horizon
            // with it: then the rewrite may have kept the rows.
            if !wait_for_older_snapshots(client, &before, StdDuration::ZERO)? {
                return Ok(false);
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

/// How long purge waits for the snapshots that may still see deleted rows: longer than a hot
/// standby's feedback interval (`wal_receiver_status_interval`, 10 s by default), so that a
/// standby's horizon can pass the purge's start within it.
const PURGE_WAIT: StdDuration = StdDuration::from_secs(12);

/// The first transaction id not yet assigned, as an `xid` (the 32-bit form the statistics show,
/// compared by age across wraparound), in text.
fn next_xid(client: &mut postgres::Client) -> Result<String, StoreError> {
    client
        .query_one(
            "SELECT (txid_snapshot_xmax(txid_current_snapshot()) % 4294967296)::TEXT",
            &[],
        )
        .and_then(|row| row.try_get(0))
        .map_err(|e| pg_error(&e))
}

/// Whether the server keeps dead rows longer than its snapshots need (`vacuum_defer_cleanup_age`
/// above zero, PostgreSQL 15 and older; later versions have no such setting).
fn cleanup_deferred(client: &mut postgres::Client) -> Result<bool, StoreError> {
    let deferred: Option<String> = client
        .query_opt(
            "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'vacuum_defer_cleanup_age'",
            &[],
        )
        .and_then(|row| row.map(|row| row.try_get(0)).transpose())
        .map_err(|e| pg_error(&e))?;
    Ok(deferred.is_some_and(|age| age != "0"))
}

/// Waits, at most `wait`, until nothing that could still see a row deleted before `before` (a
/// transaction id from [`next_xid`]) holds back this database's vacuum horizon: a session of
/// this database, or one of no database (a WAL sender, whose standby's feedback holds the
/// horizon of every database; the statistics show another role's WAL sender with neither its
/// database nor its type), whose snapshot or transaction is older; a replication slot or a
/// prepared transaction as old. Every role is shown every session's transaction ids. `false` if
/// one is still there.
fn wait_for_older_snapshots(
    client: &mut postgres::Client,
    before: &str,
    wait: StdDuration,
) -> Result<bool, StoreError> {
    let started = std::time::Instant::now();
    loop {
        let holding: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM pg_catalog.pg_stat_activity a \
                     WHERE a.pid <> pg_catalog.pg_backend_pid() \
                       AND (a.datname = pg_catalog.current_database() OR a.datid IS NULL) \
                       AND (pg_catalog.age(a.backend_xmin) > pg_catalog.age($1::TEXT::xid) \
                            OR pg_catalog.age(a.backend_xid) > pg_catalog.age($1::TEXT::xid))) \
                   + (SELECT count(*) FROM pg_catalog.pg_replication_slots s \
                     WHERE pg_catalog.age(s.xmin) > pg_catalog.age($1::TEXT::xid)) \
                   + (SELECT count(*) FROM pg_catalog.pg_prepared_xacts p \
                     WHERE p.database = pg_catalog.current_database() \
                       AND pg_catalog.age(p.transaction) > pg_catalog.age($1::TEXT::xid))",
                &[&before],
            )
            .and_then(|row| row.try_get(0))
            .map_err(|e| pg_error(&e))?;
        if holding == 0 {
            return Ok(true);
        }
        if started.elapsed() >= wait {
            return Ok(false);
        }
        std::thread::sleep(StdDuration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    /// The commit function takes the same advisory lock as every other writing transaction.
    #[test]
    fn the_commit_function_takes_the_commit_lock() {
        let call = format!("pg_advisory_xact_lock({})", super::COMMIT_LOCK);
        assert!(super::COMMIT_FUNCTION.contains(&call));
    }
}

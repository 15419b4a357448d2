//! Group commit on PostgreSQL (a broker's concurrent commits sent to the server together, as one
//! call of the server-side commit function), tried from the outside:
//!
//! - many callers on one broker racing for one consent's daily slots: each decision lands once,
//!   in turn, the slots are never overrun, and commits were grouped;
//! - the bank's gate with eight threads on one approval, its journal on PostgreSQL;
//! - the server stopped with an immediate shutdown (as a crash) in the middle of a load from four
//!   brokers: every decision a broker acknowledged is in the log after the restart, the log is
//!   gap-free and verifies, and the usage counters agree with it; the same after the server's
//!   configuration was reloaded with `synchronous_commit` off;
//! - every connection closed by the server while idle: the next decision is recorded as usual;
//! - the connection dropped before the commit (while it waits for the commit lock) and after it
//!   (while the server waits to acknowledge a commit it has made durable): the caller gets an
//!   error either way, never a permit; the first recorded nothing, the second recorded the
//!   decision the caller never heard of. Those are the unknown outcomes, counted here and
//!   described in docs/EMBEDDING.md.
//!
//! The last two run a server of their own (stopping or reconfiguring the shared one would fail
//! the other tests); like every PostgreSQL test they are `#[ignore]`d and run with
//! `scripts/with-postgres cargo test --features postgres --test it postgres -- --include-ignored`.
#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration as StdDuration, Instant};

use consent_broker::*;
use postgres::Client;

use crate::postgres::{
    Cluster, TempDatabase, database_url, hold_commit_lock, options, quote, raw_client, unique_name,
    with_param,
};
use crate::racing::{
    checked_log, decisions, race_for_one_consents_slots, unattended, usage_agrees,
};
use crate::support::*;

/// Decisions a broker acknowledged: (sequence number, kind, consent, presence).
type Ack = (u64, AuditKind, ConsentId, Presence);

/// Eight callers racing for one consent's daily slots on one broker ([`race_for_one_consents_slots`]),
/// its commits sent to the server in batches.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn callers_racing_for_one_consents_slots_land_in_turn_on_postgres() {
    let store =
        Arc::new(PostgresStore::open_with(&database_url(), options(&unique_name("race"))).unwrap());
    race_for_one_consents_slots(Arc::clone(&store), || store.commit_stats());
}

/// The bank's gate, its ledger on PostgreSQL: eight threads check tokens of one approval at
/// once; each is served and journalled once.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn concurrent_checks_of_one_approval_on_postgres_are_each_served_once() {
    let ledger = PostgresStore::open_with(&database_url(), options(&unique_name("gate"))).unwrap();
    let (served, refused) = crate::gate::concurrent_checks_of_one_approval_on(ledger, u32::MAX);
    let all = crate::gate::THREADS * crate::gate::EACH;
    assert_eq!((served, refused), (all, 0), "each check served once");
}

/// The same under a ceiling of 57: exactly 57 are served, the rest refused for the ceiling.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn concurrent_checks_of_one_approval_on_postgres_never_pass_the_days_ceiling() {
    let ledger =
        PostgresStore::open_with(&database_url(), options(&unique_name("gate57"))).unwrap();
    let (served, refused) = crate::gate::concurrent_checks_of_one_approval_on(ledger, 57);
    let all = crate::gate::THREADS * crate::gate::EACH;
    assert_eq!((served, refused), (57, all - 57));
}

/// The platform's revocation applied between the gate's read and its commit
/// ([`crate::gate::revocation_between_read_and_commit_on`]), the ledger on PostgreSQL: the commit
/// function's check refuses the commit, and the gate refuses the access.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_revocation_between_the_gates_read_and_its_commit_is_not_served_past_on_postgres() {
    let ledger =
        PostgresStore::open_with(&database_url(), options(&unique_name("gaterev"))).unwrap();
    crate::gate::revocation_between_read_and_commit_on(ledger);
}

/// A token another process of the bank serves between a gate's read and its commit, presented
/// with a proof whose `jti` is the token's
/// ([`crate::gate::token_taken_between_read_and_commit_on`]), the ledger on PostgreSQL: the commit
/// function names the presented id's kind, and the gate refuses the token as replayed.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_token_taken_between_the_gates_read_and_its_commit_is_refused_as_replayed_on_postgres() {
    let ledger =
        PostgresStore::open_with(&database_url(), options(&unique_name("gatetok"))).unwrap();
    crate::gate::token_taken_between_read_and_commit_on(ledger);
}

/// A server of the test's own, fsync on and synchronous commit as `synchronous_commit` says (if
/// empty, as its configuration files say: a setting on the command line outranks them, and
/// `ALTER SYSTEM` could not change it), and its URL.
fn own_server(prefix: &str, synchronous_commit: &str) -> (Cluster, String) {
    let mut cluster = Cluster::new(prefix, "consent");
    cluster.init("local all all trust\nhost all all 127.0.0.1/32 trust\n");
    let synchronous_commit = match synchronous_commit {
        "" => String::new(),
        setting => format!(" -c synchronous_commit={setting}"),
    };
    cluster.start(&format!(
        "-c fsync=on{synchronous_commit} -c max_connections=100"
    ));
    let url = format!("postgres://consent@127.0.0.1:{}/postgres", cluster.port);
    (cluster, url)
}

const BROKERS: usize = 4;
const CALLERS_PER_BROKER: usize = 4;

/// Four brokers (each with its own store and connections, as four processes) and four callers on
/// each decide on three consents, present and unattended; after 400 acknowledged decisions the
/// server is stopped with an immediate shutdown (no checkpoint: recovery replays the write-ahead
/// log). The server's default is `synchronous_commit=off` (commits acknowledged before they are
/// flushed, which loses acknowledged decisions to exactly this shutdown): the store turns it on
/// for its own sessions. After the restart every acknowledged decision is in the log, at the number it was
/// acknowledged with, with its kind, consent and presence; the log is gap-free and verifies; the
/// usage counters agree with it. Decisions in the log that nobody acknowledged (committed as the
/// server went down) are counted: they are the unknown outcomes.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn an_immediate_shutdown_under_load_from_four_brokers_loses_no_acknowledged_decision() {
    immediate_shutdown_under_load("cbt-pg-crash.", "off", false);
}

/// The same on a server whose configuration says `synchronous_commit=on` (its default) when the
/// brokers connect and is then reloaded with it off (`ALTER SYSTEM`, `pg_reload_conf()`), as an operator
/// tuning the server might: a session that took the server's setting would follow the reload and
/// acknowledge commits before they are flushed; the store's sessions set it for themselves.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_reload_turning_synchronous_commit_off_loses_no_acknowledged_decision() {
    immediate_shutdown_under_load("cbt-pg-reload.", "", true);
}

/// Four brokers decide under load on a server of their own (`synchronous_commit` as `server`
/// says, see [`own_server`]; with `reload_off`, set off and reloaded once they are connected), stopped with an
/// immediate shutdown after 400 acknowledged decisions: every acknowledged one is there after
/// the restart.
fn immediate_shutdown_under_load(prefix: &str, server: &str, reload_off: bool) {
    let (mut cluster, url) = own_server(prefix, server);
    let schema = unique_name("crash");
    let open = || Arc::new(PostgresStore::open_with(&url, options(&schema)).unwrap());
    let first = open();
    let fx = Fixture::sharing(Arc::clone(&first), |builder| builder);
    let consents: Vec<ConsentId> = (0..3).map(|_| fx.granted().id().clone()).collect();
    let others: Vec<_> = (1..BROKERS)
        .map(|_| {
            Broker::builder(fx.broker.id().clone(), open())
                .clock(fx.clock.clone())
                .keys(keys())
                .build()
                .unwrap()
        })
        .collect();
    let brokers: Vec<_> = std::iter::once(&fx.broker).chain(&others).collect();
    if reload_off {
        // Every broker has decided once (its connections are made with the server's setting,
        // `on`); then the server's configuration turns it off.
        for broker in &brokers {
            broker.authorise_access(&fx.access(&consents[0])).unwrap();
        }
        let mut admin = raw_client(&url);
        // Two statements: ALTER SYSTEM refuses the implicit transaction of a multi-statement
        // string.
        admin
            .batch_execute("ALTER SYSTEM SET synchronous_commit = off")
            .unwrap();
        admin.batch_execute("SELECT pg_reload_conf()").unwrap();
        // A new session takes the reloaded setting once the server has read it; the brokers'
        // sessions read it before their next statement.
        let deadline = Instant::now() + StdDuration::from_secs(20);
        loop {
            let setting: String = raw_client(&url)
                .query_one("SELECT current_setting('synchronous_commit')", &[])
                .unwrap()
                .get(0);
            if setting == "off" {
                break;
            }
            assert!(Instant::now() < deadline, "the reload never took");
            thread::sleep(StdDuration::from_millis(20));
        }
    }
    let acked = AtomicUsize::new(0);
    let down = AtomicBool::new(false);
    let (acks, errors): (Vec<Vec<Ack>>, Vec<usize>) = thread::scope(|scope| {
        let mut handles = Vec::new();
        for (b, broker) in brokers.iter().enumerate() {
            for c in 0..CALLERS_PER_BROKER {
                let (fx, consents, acked, down) = (&fx, &consents, &acked, &down);
                handles.push(scope.spawn(move || {
                    let (mut acks, mut errors) = (Vec::new(), 0);
                    for j in 0usize.. {
                        let consent = &consents[(b + c + j) % consents.len()];
                        let access = if j % 3 == 0 {
                            unattended(fx.access(consent))
                        } else {
                            fx.access(consent)
                        };
                        match broker.authorise_access(&access) {
                            Ok(outcome) => {
                                let kind = match outcome {
                                    AccessOutcome::Permitted(_) => AuditKind::AccessPermitted,
                                    AccessOutcome::Denied(_) => AuditKind::AccessDenied,
                                };
                                acks.push((
                                    outcome.audit_seq(),
                                    kind,
                                    consent.clone(),
                                    access.presence,
                                ));
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(Error::Store(_)) => {
                                errors += 1;
                                // Errors are expected once the server is down; stop soon after.
                                if down.load(Ordering::Relaxed) && errors >= 3 {
                                    break;
                                }
                                assert!(
                                    down.load(Ordering::Relaxed) || errors < 50,
                                    "store errors before the shutdown"
                                );
                                thread::sleep(StdDuration::from_millis(20));
                            }
                            Err(other) => panic!("broker {b} caller {c}: {other:?}"),
                        }
                    }
                    (acks, errors)
                }));
            }
        }
        let deadline = Instant::now() + StdDuration::from_secs(120);
        while acked.load(Ordering::Relaxed) < 400 {
            assert!(
                Instant::now() < deadline,
                "the load never reached 400 decisions"
            );
            thread::sleep(StdDuration::from_millis(5));
        }
        cluster.stop();
        down.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).unzip()
    });
    drop(brokers);
    drop(others);
    drop(fx);
    drop(first);

    cluster.restart();
    let store = open();
    let entries = checked_log(&*store);
    let acks: Vec<Ack> = acks.into_iter().flatten().collect();
    for (seq, kind, consent, presence) in &acks {
        let entry = entries
            .get(usize::try_from(*seq).unwrap())
            .unwrap_or_else(|| panic!("acknowledged decision {seq} is missing after the restart"));
        assert_eq!(entry.kind(), *kind, "entry {seq}");
        assert_eq!(entry.consent(), Some(consent), "entry {seq}");
        assert_eq!(entry.event.presence(), Some(*presence), "entry {seq}");
    }
    usage_agrees(&*store, &entries);
    let unknown = decisions(&entries) - acks.len();
    eprintln!(
        "immediate shutdown: {} decisions acknowledged, all present; {unknown} more in the log \
         that no caller heard of (unknown outcomes); {} errors after the shutdown",
        acks.len(),
        errors.iter().sum::<usize>()
    );
    assert!(acks.len() >= 400);
}

/// Waits until a backend of `application` waits on `event` (a `wait_event` of
/// `pg_stat_activity`).
pub(super) fn wait_for(admin: &mut Client, application: &str, event: &str) {
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND wait_event = $2",
                &[&application, &event],
            )
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no backend ever waited on {event}"
        );
        thread::sleep(StdDuration::from_millis(5));
    }
}

/// Waits until a backend of `application` waits on `event`, then terminates every backend of
/// `application`.
fn terminate_when_waiting(admin: &mut Client, application: &str, event: &str) {
    wait_for(admin, application, event);
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&application],
        )
        .unwrap();
}

/// Sets the server's `synchronous_standby_names` and waits until new sessions see it.
fn set_standby(admin: &mut Client, url: &str, names: &str) {
    // Two statements: ALTER SYSTEM refuses to run in the implicit transaction of a multi-statement
    // string.
    admin
        .batch_execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{names}'"
        ))
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    let deadline = Instant::now() + StdDuration::from_secs(10);
    loop {
        let mut probe = Client::connect(url, postgres::NoTls).unwrap();
        let now: String = probe
            .query_one("SHOW synchronous_standby_names", &[])
            .unwrap()
            .get(0);
        if now == names {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server never took the setting"
        );
        thread::sleep(StdDuration::from_millis(20));
    }
}

/// Every connection of a broker's store is closed by the server while idle (as a restart, a
/// failover or `idle_session_timeout` would), unknown to the store; a second later the next
/// decision is made and recorded as usual: the store checked the idle connection before sending
/// the commit on it, where sending it would have made its outcome unknown (an error to the
/// caller). Nothing else is in the log.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_connection_the_server_closed_while_idle_is_replaced_before_a_commit() {
    let application = unique_name("idle");
    let url = with_param(&database_url(), "application_name", &application);
    let store = Arc::new(PostgresStore::open_with(&url, options(&unique_name("idle"))).unwrap());
    let fx = Fixture::sharing(Arc::clone(&store), |builder| builder);
    let granted = fx.granted().id().clone();
    fx.broker.authorise_access(&fx.access(&granted)).unwrap();
    let len = store.audit_len().unwrap();
    let mut admin = raw_client(&database_url());
    let terminated: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1) AS t",
            &[&application],
        )
        .unwrap()
        .get(0);
    assert!(terminated >= 1, "the store had no connection to close");
    thread::sleep(StdDuration::from_millis(1_300));
    let outcome = fx.broker.authorise_access(&fx.access(&granted));
    assert!(
        matches!(outcome, Ok(AccessOutcome::Permitted(_))),
        "{outcome:?}"
    );
    assert_eq!(store.audit_len().unwrap(), len + 1);
    checked_log(&*store);
}

const ROUNDS: usize = 5;

/// The connection is dropped before the commit, and after it.
///
/// Before: the commit waits for the commit lock (held by another session) and its backend is
/// terminated: the decision fails with `OutcomeUnknown` (the batch had been sent) and the log and
/// the usage counter are as before. After: the server is made to wait for a synchronous standby
/// that does not exist, so a commit is durable in its write-ahead log but not yet acknowledged
/// when its backend is terminated: the decision fails with `OutcomeUnknown` too (never a permit),
/// and the log holds it. The caller cannot tell the two apart, and is told so; the log can. The
/// broker does not retry it (a retry would decide a second time). Both are counted, and after
/// each the next decision works. At the end the log is gap-free and verifies and the usage
/// counter agrees with it.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_connection_dropped_before_or_after_commit_fails_closed_and_loses_nothing_acknowledged() {
    let (cluster, url) = own_server("cbt-pg-drop.", "on");
    let application = unique_name("drop");
    let store_url = format!("{url}?application_name={application}");
    let store =
        Arc::new(PostgresStore::open_with(&store_url, options(&unique_name("drop"))).unwrap());
    let fx = Fixture::sharing(Arc::clone(&store), |builder| builder);
    let granted = fx.granted().id().clone();
    let mut admin = cluster.admin();
    let (mut lost_before, mut unknown_after, mut acknowledged) = (0, 0, 0);
    for round in 0..ROUNDS {
        let access = if round % 2 == 0 {
            unattended(fx.access(&granted))
        } else {
            fx.access(&granted)
        };

        // Before the commit: blocked on the commit lock.
        let len = store.audit_len().unwrap();
        let usage = store.usage(&granted, fx.broker.now().date()).unwrap();
        let mut locker = Client::connect(&url, postgres::NoTls).unwrap();
        let mut held = locker.transaction().unwrap();
        held.execute("SELECT pg_advisory_xact_lock(1128419947)", &[])
            .unwrap();
        let result = thread::scope(|scope| {
            let deciding = scope.spawn(|| fx.broker.authorise_access(&access));
            terminate_when_waiting(&mut admin, &application, "advisory");
            deciding.join().unwrap()
        });
        held.rollback().unwrap();
        assert!(
            matches!(result, Err(Error::Store(StoreError::OutcomeUnknown(_)))),
            "a commit whose connection dropped before COMMIT: {result:?}"
        );
        assert_eq!(store.audit_len().unwrap(), len, "nothing was recorded");
        assert_eq!(
            store.usage(&granted, fx.broker.now().date()).unwrap(),
            usage
        );
        lost_before += 1;

        // After the commit: durable, not yet acknowledged.
        set_standby(&mut admin, &url, "cbt_nobody");
        let len = store.audit_len().unwrap();
        let result = thread::scope(|scope| {
            let deciding = scope.spawn(|| fx.broker.authorise_access(&access));
            terminate_when_waiting(&mut admin, &application, "SyncRep");
            deciding.join().unwrap()
        });
        set_standby(&mut admin, &url, "");
        assert!(
            matches!(result, Err(Error::Store(StoreError::OutcomeUnknown(_)))),
            "a commit whose connection dropped after COMMIT: {result:?}"
        );
        assert_eq!(
            store.audit_len().unwrap(),
            len + 1,
            "the server had made the decision durable: it is in the log"
        );
        unknown_after += 1;

        // And the next decision works.
        let outcome = fx
            .broker
            .authorise_access(&access)
            .or_else(|_| fx.broker.authorise_access(&access));
        let outcome = outcome.expect("working again within two calls");
        let entry = store
            .audit_entries(outcome.audit_seq()..outcome.audit_seq() + 1)
            .unwrap()
            .pop()
            .expect("the acknowledged decision is in the log");
        assert_eq!(entry.consent(), Some(&granted));
        acknowledged += 1;
    }
    let entries = checked_log(&*store);
    usage_agrees(&*store, &entries);
    eprintln!(
        "connection drops: {lost_before} before COMMIT (nothing recorded), {unknown_after} after \
         COMMIT (recorded, the caller told of an error: unknown outcomes), {acknowledged} \
         acknowledged decisions after them, all in the log"
    );
    assert_eq!((lost_before, unknown_after), (ROUNDS, ROUNDS));
}

/// One commit the server rejects (here a trigger the test installs refuses one consent's usage
/// row, as a constraint would) is sent in a batch with five healthy ones queued behind the commit
/// lock: it fails alone, with a store error, and the five land.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_commit_the_server_rejects_fails_alone_in_its_batch() {
    let database = TempDatabase::create("poison");
    let application = unique_name("poison");
    let schema = unique_name("poison");
    let url = with_param(&database.url, "application_name", &application);
    let store = Arc::new(PostgresStore::open_with(&url, options(&schema)).unwrap());
    let fx = Fixture::sharing(Arc::clone(&store), |builder| builder);
    let (poisoned, healthy) = (fx.granted().id().clone(), fx.granted().id().clone());
    let quoted = quote(&schema);
    raw_client(&database.url)
        .batch_execute(&format!(
            "CREATE FUNCTION {quoted}.poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.consent = '{poisoned}' THEN RAISE EXCEPTION 'poisoned usage'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON {quoted}.usage \
             FOR EACH ROW EXECUTE FUNCTION {quoted}.poison()"
        ))
        .unwrap();
    let mut admin = raw_client(&database.url);
    let (held_tx, held) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = hold_commit_lock(database.url.clone(), held_tx, release_rx);
    held.recv().unwrap();
    let before = store.commit_stats();
    let present = fx.access(&healthy);
    let (poisoned_result, healthy_results) = thread::scope(|scope| {
        // The first commit waits for the lock alone; the rest queue behind it as one batch.
        let first = scope.spawn(|| fx.broker.authorise_access(&present));
        wait_for(&mut admin, &application, "advisory");
        let poisoned = scope.spawn(|| {
            fx.broker
                .authorise_access(&unattended(fx.access(&poisoned)))
        });
        let rest: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| fx.broker.authorise_access(&present)))
            .collect();
        thread::sleep(StdDuration::from_millis(300));
        release.send(()).unwrap();
        let mut healthy: Vec<_> = rest.into_iter().map(|h| h.join().unwrap()).collect();
        healthy.push(first.join().unwrap());
        (poisoned.join().unwrap(), healthy)
    });
    holder.join().unwrap();
    assert!(
        matches!(poisoned_result, Err(Error::Store(_))),
        "the rejected commit fails: {poisoned_result:?}"
    );
    for result in &healthy_results {
        assert_eq!(
            result.as_ref().map(AccessOutcome::decision).ok(),
            Some(Decision::Permit),
            "a healthy commit in the same batch lands: {result:?}"
        );
    }
    let stats = store.commit_stats();
    assert!(
        stats.largest_batch >= 3,
        "inconclusive: the commits were not batched ({before:?} then {stats:?})"
    );
    let entries = checked_log(&*store);
    usage_agrees(&*store, &entries);
    assert_eq!(
        store
            .usage(&poisoned, fx.broker.now().date())
            .unwrap()
            .unattended_today,
        0
    );
}

/// A database whose default isolation is SERIALIZABLE: the store's sessions commit in READ
/// COMMITTED all the same, so each batch sees the log as the broker before it left it. Two
/// brokers with four callers each: every decision lands, the log verifies, and commits are
/// still grouped (a stale view of the log would fail each batch and send every commit alone).
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_database_defaulting_to_serializable_still_groups_and_verifies() {
    let database = TempDatabase::create("serial");
    raw_client(&database_url())
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_isolation = 'serializable'",
            quote(&database.name)
        ))
        .unwrap();
    let schema = unique_name("serial");
    let open = || Arc::new(PostgresStore::open_with(&database.url, options(&schema)).unwrap());
    let first = open();
    let fx = Fixture::sharing(Arc::clone(&first), |builder| builder);
    let granted = fx.granted().id().clone();
    let second_store = open();
    let second = Broker::builder(fx.broker.id().clone(), Arc::clone(&second_store))
        .clock(fx.clock.clone())
        .keys(keys())
        .build()
        .unwrap();
    let before = (first.commit_stats(), second_store.commit_stats());
    thread::scope(|scope| {
        for broker in [&fx.broker, &second] {
            for _ in 0..4 {
                let access = fx.access(&granted);
                scope.spawn(move || {
                    for _ in 0..30 {
                        let outcome = broker.authorise_access(&access).unwrap();
                        assert_eq!(outcome.decision(), Decision::Permit);
                    }
                });
            }
        }
    });
    let entries = checked_log(&*first);
    assert_eq!(decisions(&entries), 240);
    let grouped = |now: CommitStats, then: CommitStats| {
        (
            now.commits - then.commits,
            now.transactions - then.transactions,
        )
    };
    let (a, b) = (
        grouped(first.commit_stats(), before.0),
        grouped(second_store.commit_stats(), before.1),
    );
    eprintln!("serializable default: (commits, transactions) {a:?} and {b:?}");
    assert!(
        a.1 < a.0 && b.1 < b.0,
        "commits were grouped on both brokers: {a:?}, {b:?}"
    );
}

/// Another role has put look-alike operators in `public`, the schema a store opened without a
/// schema of its own works in (as on PostgreSQL 14 and earlier, where anyone may create there):
/// `||(text, bigint)`, which would number entries `999`, and `&(bigint, integer)`. The commit
/// function names its types and runs with its search path fixed, so the log is as it should be.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn look_alike_operators_in_public_do_not_change_the_log() {
    let database = TempDatabase::create("lookalike");
    raw_client(&database.url)
        .batch_execute(
            "CREATE FUNCTION public.evil_cat(text, bigint) RETURNS text LANGUAGE sql \
             AS $$ SELECT '{\"seq\":999' $$; \
             CREATE OPERATOR public.|| (LEFTARG = text, RIGHTARG = bigint, \
             FUNCTION = public.evil_cat); \
             CREATE FUNCTION public.evil_and(bigint, integer) RETURNS bigint LANGUAGE sql \
             AS $$ SELECT 0::bigint $$; \
             CREATE OPERATOR public.& (LEFTARG = bigint, RIGHTARG = integer, \
             FUNCTION = public.evil_and)",
        )
        .unwrap();
    let store = Arc::new(PostgresStore::open(&database.url).unwrap());
    let fx = Fixture::sharing(Arc::clone(&store), |builder| builder);
    let granted = fx.granted().id().clone();
    for _ in 0..20 {
        fx.broker.authorise_access(&fx.access(&granted)).unwrap();
    }
    let entries = checked_log(&*store);
    assert!(decisions(&entries) >= 20);
}

/// Two brokers on their own connections to one database, the first keeping access views (the
/// default on PostgreSQL): what the second does (a revocation, the day's unattended slots) is
/// never missed by the first, which decides a consent asked about again in one round trip.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_broker_keeping_views_misses_nothing_another_broker_does() {
    let schema = unique_name("views");
    let open = || Arc::new(PostgresStore::open_with(&database_url(), options(&schema)).unwrap());
    let first = open();
    let fx = Fixture::sharing(Arc::clone(&first), |builder| builder);
    let second = Broker::builder(fx.broker.id().clone(), open())
        .clock(fx.clock.clone())
        .keys(keys())
        .build()
        .unwrap();
    let granted = fx.granted().id().clone();
    // The day's unattended slots, taken in turn by both.
    let access = unattended(fx.access(&granted));
    let mut permitted = 0;
    for round in 0..10 {
        let broker = if round % 2 == 0 { &fx.broker } else { &second };
        if broker.authorise_access(&access).unwrap().decision() == Decision::Permit {
            permitted += 1;
        }
    }
    assert_eq!(permitted, DEFAULT_UNATTENDED_DAILY_LIMIT);
    // A present access, kept by the first; the second revokes; the first denies.
    let present = fx.access(&granted);
    assert_eq!(fx.decide(&present), Decision::Permit);
    assert_eq!(fx.decide(&present), Decision::Permit);
    second
        .revoke(
            &granted,
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
        .unwrap();
    assert_ne!(fx.decide(&present), Decision::Permit);
    let entries = checked_log(&*first);
    usage_agrees(&*first, &entries);
    let permits = entries
        .iter()
        .filter(|e| e.kind() == AuditKind::AccessPermitted)
        .count();
    assert_eq!(
        permits,
        usize::try_from(DEFAULT_UNATTENDED_DAILY_LIMIT).unwrap() + 2
    );
}

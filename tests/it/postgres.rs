//! The PostgreSQL store against a real server: several broker processes on one database,
//! revocation across brokers, faults (credentials, a server that is down or hung, a dropped
//! connection, a statement timeout), calls from inside an async runtime, the schema (its
//! version, the append-only triggers, concurrent migrations), and TLS (verified, required for
//! hosts that are not local, never downgraded).
//!
//! Every test needs a server, so every test is `#[ignore]`d; run them with
//! `scripts/with-postgres cargo test --features postgres --test postgres -- --include-ignored`
//! (the script starts a throwaway cluster and exports `DATABASE_URL`). Each test works in a fresh
//! schema. The commit lock is an advisory lock, and advisory locks are per database, not per
//! schema: the tests that hold it (or that need no other writer to take it) work in a fresh
//! database of their own, so they neither stall nor are stalled by the other tests. The TLS test
//! starts a second, TLS-only server of its own with a throwaway CA: it needs PostgreSQL's server
//! binaries, which the script installs.
//!
//! The multi-process test re-executes this test binary: the parent runs itself with
//! `--exact postgres::postgres_child_workload --include-ignored --nocapture --test-threads=1`, the
//! `CONSENT_BROKER_PG_CHILD_*` environment variables below, and that child "test" does the work.
//! In a normal run the variables are absent and the child test returns at once.
//!
//! Child protocol (one line per event, on stdout, flushed):
//! - `READY` once the child's broker is built;
//! - `ACK <audit_seq> <permit|deny> <shared|revocable> <present|unattended>` after every
//!   `authorise_access` that returned `Ok`;
//! - `REVOKED` after the revocation (child `a` only);
//! - `ERR <what>` for every unexpected outcome;
//! - `DONE calls=<n> appended=<n> tokens=<n> requests=<n>` at the end: the calls that succeeded,
//!   the audit entries they appended (the broker's build included), the tokens issued and the
//!   consent requests recorded.
#![cfg(feature = "postgres")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration as StdDuration, Instant, SystemTime, UNIX_EPOCH};

use crate::racing::{gap_free_log, unattended, unattended_permits};
use crate::support::*;
use consent_broker::checkpoint::NoteVerifier;
use consent_broker::*;
use postgres::{Client, NoTls};
use time::{Date, Duration, OffsetDateTime};

/// The advisory lock key every broker's commits take (`0x4342_526B`, "CBRk").
const COMMIT_LOCK: i64 = 1_128_419_947;

/// The default holder policy's unattended daily limit.
const DAILY_LIMIT: u64 = policy_limit();

const fn policy_limit() -> u64 {
    consent_broker::DEFAULT_UNATTENDED_DAILY_LIMIT as u64
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

pub(super) fn database_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "the PostgreSQL tests need a server named by DATABASE_URL: run them with \
         `scripts/with-postgres cargo test --features postgres --test postgres -- --include-ignored`",
    )
}

/// A schema (or database) name no other test or process uses. Short: identifiers stop at 63
/// bytes.
pub(super) fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "cbt_{tag}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub(super) fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: Some(schema.to_owned()),
        ..PostgresOptions::default()
    }
}

fn open(url: &str, schema: &str) -> PostgresStore {
    PostgresStore::open_with(url, options(schema))
        .unwrap_or_else(|e| panic!("open schema {schema}: {e:?}"))
}

pub(super) fn raw_client(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| panic!("raw connection to {url}: {e}"))
}

/// Makes `client`'s session say this build's schema version, as the store's own sessions do (the
/// commit function refuses a session that says another, or none).
fn says_this_builds_version(client: &mut Client) {
    client
        .batch_execute(&format!(
            "SET consent_broker.schema_version = '{}'",
            PostgresStore::SCHEMA_VERSION
        ))
        .unwrap();
}

pub(super) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// `url` with one more query parameter.
pub(super) fn with_param(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}

/// `url` (`postgres://user@host:port/db[?query]`) naming another database.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (prefix, _) = base
        .rsplit_once('/')
        .unwrap_or_else(|| panic!("DATABASE_URL {url} names no database"));
    match query {
        Some(query) => format!("{prefix}/{database}?{query}"),
        None => format!("{prefix}/{database}"),
    }
}

/// `url` with its user (and password) replaced.
fn with_credentials(url: &str, credentials: &str) -> String {
    let (scheme, rest) = url
        .split_once("://")
        .unwrap_or_else(|| panic!("DATABASE_URL {url} is not a URL"));
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{credentials}@{host}")
}

/// A database of its own for one test, dropped (with its connections) at the end.
pub(super) struct TempDatabase {
    admin_url: String,
    pub(super) name: String,
    pub(super) url: String,
}

impl TempDatabase {
    pub(super) fn create(tag: &str) -> Self {
        let admin_url = database_url();
        let name = unique_name(tag);
        raw_client(&admin_url)
            .batch_execute(&format!("CREATE DATABASE {}", quote(&name)))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let url = with_database(&admin_url, &name);
        Self {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        if let Ok(mut client) = Client::connect(&self.admin_url, NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote(&self.name)
            ));
        }
    }
}

/// Terminates every backend of `application_name` in the current database and waits until they
/// are gone; returns how many there were.
fn terminate_backends(admin: &mut Client, application_name: &str) -> usize {
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND application_name = $1",
            &[&application_name],
        )
        .unwrap()
        .len();
    let deadline = Instant::now() + StdDuration::from_secs(10);
    loop {
        let left: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&application_name],
            )
            .unwrap()
            .get(0);
        if left == 0 {
            return killed;
        }
        assert!(
            Instant::now() < deadline,
            "backends of {application_name} survived pg_terminate_backend"
        );
        thread::sleep(StdDuration::from_millis(10));
    }
}

/// A transaction on its own connection holding the commit lock until `release` receives (or its
/// sender is dropped); `held` is signalled once the lock is taken.
pub(super) fn hold_commit_lock(
    url: String,
    held: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut client = raw_client(&url);
        let mut tx = client.transaction().unwrap();
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&COMMIT_LOCK])
            .unwrap();
        held.send(()).unwrap();
        let _ = release.recv();
        tx.commit().unwrap();
    })
}

/// Every row of the schema's usage table.
fn usage_rows(url: &str, schema: &str) -> BTreeMap<(ConsentId, Date), u64> {
    let mut client = raw_client(url);
    let rows = client
        .query(
            &format!(
                "SELECT consent, day, unattended FROM {}.usage",
                quote(schema)
            ),
            &[],
        )
        .unwrap();
    let day_format = time::macros::format_description!("[year]-[month]-[day]");
    rows.iter()
        .map(|row| {
            let consent: ConsentId = id(row.get::<_, &str>(0));
            let day = Date::parse(row.get::<_, &str>(1), &day_format).unwrap();
            let count = u64::try_from(row.get::<_, i64>(2)).unwrap();
            ((consent, day), count)
        })
        .collect()
}

fn is_revoked_denial(outcome: &AccessOutcome) -> bool {
    matches!(outcome, AccessOutcome::Denied(denial)
        if denial.reasons.iter().any(|r| matches!(r, DenyReason::Revoked { .. })))
}

// ---------------------------------------------------------------------------------------------
// 1. Several processes, one database

const CHILD_URL: &str = "CONSENT_BROKER_PG_CHILD_URL";
const CHILD_SCHEMA: &str = "CONSENT_BROKER_PG_CHILD_SCHEMA";
/// The consent both children use throughout.
const CHILD_SHARED: &str = "CONSENT_BROKER_PG_CHILD_SHARED";
/// The consent child `a` revokes half-way while child `b` keeps using it.
const CHILD_REVOCABLE: &str = "CONSENT_BROKER_PG_CHILD_REVOCABLE";
const CHILD_LABEL: &str = "CONSENT_BROKER_PG_CHILD_LABEL";
const CHILD_OPS: &str = "CONSENT_BROKER_PG_CHILD_OPS";
/// A file whose appearance starts both children at once.
const CHILD_GO: &str = "CONSENT_BROKER_PG_CHILD_GO";

const OPS_PER_CHILD: u64 = 5_000;
/// The children's clocks move to the next day every this many operations, in step, so both
/// compete for the same day's unattended slots on several days.
const OPS_PER_DAY: u64 = 1_000;

/// The time of a child's `j`-th operation: an hour after [`START`], plus one day per
/// [`OPS_PER_DAY`] operations.
fn child_time(j: u64) -> OffsetDateTime {
    START + Duration::hours(1) + Duration::days(i64::try_from(j / OPS_PER_DAY).unwrap())
}

/// The `j`-th plain access of a child's mix: both presences, permitted and denied (an account
/// outside the grant, a scope the holder does not share, now and then a prohibited purpose).
fn mixed_access(consent: &ConsentId, j: u64) -> AccessRequest {
    let presence = if j.is_multiple_of(2) {
        Presence::SubjectPresent
    } else {
        Presence::Unattended
    };
    let account = match j % 3 {
        0 => "acc-current",
        1 => "acc-savings",
        _ => "acc-elsewhere",
    };
    let scope = match j % 5 {
        4 => Scope::Transactions,
        3 => Scope::Alerts,
        _ => Scope::Balance,
    };
    let purpose = if j.is_multiple_of(97) {
        RequestedPurpose::Prohibited(ProhibitedUse::Ads)
    } else if j % 7 < 4 {
        Purpose::FraudProtection.into()
    } else {
        Purpose::CustomerService.into()
    };
    AccessRequest {
        consent: consent.clone(),
        platform: id("chat"),
        scope: scope.into(),
        purpose,
        account: id(account),
        presence,
    }
}

fn presence_word(presence: Presence) -> &'static str {
    match presence {
        Presence::SubjectPresent => "present",
        Presence::Unattended => "unattended",
    }
}

fn say(out: &mut impl Write, line: &str) {
    // A child whose parent is gone (the pipe is closed) has nobody to tell: it stops.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(3);
    }
}

/// What a child did.
#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    appended: u64,
    tokens: u64,
    requests: u64,
    errors: Vec<String>,
}

/// The consents a child works on, and whether it has seen the revocable one revoked.
struct ChildConsents {
    shared: ConsentId,
    revocable: ConsentId,
    revoked_seen: bool,
}

impl ChildConsents {
    fn tag(&self, consent: &ConsentId) -> &'static str {
        if *consent == self.shared {
            "shared"
        } else {
            "revocable"
        }
    }

    /// Records a decision: prints its ACK and checks that nothing on the revocable consent is
    /// permitted once its revocation was seen.
    fn decided(
        &mut self,
        access: &AccessRequest,
        outcome: &AccessOutcome,
        j: u64,
        tally: &mut Tally,
        out: &mut impl Write,
    ) {
        tally.calls += 1;
        tally.appended += 1;
        let kind = match outcome {
            AccessOutcome::Permitted(_) => "permit",
            AccessOutcome::Denied(_) => "deny",
        };
        say(
            out,
            &format!(
                "ACK {} {kind} {} {}",
                outcome.audit_seq(),
                self.tag(&access.consent),
                presence_word(access.presence)
            ),
        );
        if access.consent == self.revocable {
            if is_revoked_denial(outcome) {
                self.revoked_seen = true;
            } else if self.revoked_seen && matches!(outcome, AccessOutcome::Permitted(_)) {
                tally.errors.push(format!(
                    "op {j}: permitted on the revocable consent after its revocation was seen"
                ));
            }
        }
    }
}

/// One child's share of the workload.
fn child_workload(
    broker: &Broker<PostgresStore>,
    clock: &ManualClock,
    consents: &mut ChildConsents,
    label: &str,
    ops: u64,
    out: &mut impl Write,
) -> Tally {
    // The build recorded nothing: the child starts with the keys the database publishes.
    let mut tally = Tally::default();
    let revoker = label == "a";
    for j in 0..ops {
        clock.set(child_time(j));
        if revoker && j == ops / 2 {
            match broker.revoke(
                &consents.revocable,
                Revoker::Subject,
                RevocationReason::SubjectWithdrew,
            ) {
                Ok(_) => {
                    tally.calls += 1;
                    tally.appended += 1;
                    consents.revoked_seen = true;
                    say(out, "REVOKED");
                }
                Err(error) => tally.errors.push(format!("op {j}: revoke: {error:?}")),
            }
            continue;
        }
        match j % 50 {
            // A consent request of a new subject.
            25 => {
                let draft = ConsentRequestDraft {
                    subject: id(&format!("subject-{label}-{j}")),
                    platform: id("chat"),
                    holder: id("bank"),
                    scopes: vec![Scope::Balance.into()],
                    purposes: vec![Purpose::CustomerService.into()],
                    accounts: AccountSelection::SubjectChooses,
                    duration: Duration::days(30),
                };
                match broker.request_consent(draft) {
                    Ok(_) => {
                        tally.calls += 1;
                        tally.appended += 1;
                        tally.requests += 1;
                    }
                    Err(error) => tally.errors.push(format!("op {j}: request: {error:?}")),
                }
            }
            // A token on the shared consent (never revoked, so never stale: a token is exactly
            // two entries, a denial one).
            7 | 32 => {
                let access = AccessRequest {
                    consent: consents.shared.clone(),
                    platform: id("chat"),
                    scope: Scope::Balance.into(),
                    purpose: Purpose::FraudProtection.into(),
                    account: id("acc-current"),
                    presence: if j % 100 >= 50 {
                        Presence::Unattended
                    } else {
                        Presence::SubjectPresent
                    },
                };
                match broker.authorise_with_token(&access) {
                    Ok(TokenOutcome::Issued(_)) => {
                        tally.calls += 1;
                        tally.appended += 2;
                        tally.tokens += 1;
                    }
                    Ok(TokenOutcome::Denied(denial)) => {
                        tally.calls += 1;
                        tally.appended += 1;
                        if access.presence == Presence::SubjectPresent {
                            tally
                                .errors
                                .push(format!("op {j}: present token access denied: {denial:?}"));
                        }
                    }
                    Err(error) => tally.errors.push(format!("op {j}: token: {error:?}")),
                }
            }
            // A decision then a token on the revocable consent: the token is refused as stale
            // if the revocation came in between (and then nothing is appended for it).
            13 | 38 => {
                let access = AccessRequest {
                    consent: consents.revocable.clone(),
                    platform: id("chat"),
                    scope: Scope::Alerts.into(),
                    purpose: Purpose::CustomerService.into(),
                    account: id("acc-savings"),
                    presence: Presence::SubjectPresent,
                };
                match broker.authorise_access(&access) {
                    Ok(outcome) => {
                        consents.decided(&access, &outcome, j, &mut tally, out);
                        if let AccessOutcome::Permitted(permit) = outcome {
                            match broker.issue_token(permit) {
                                Ok(_) => {
                                    tally.calls += 1;
                                    tally.appended += 1;
                                    tally.tokens += 1;
                                }
                                Err(Error::PermitStale(_)) => {}
                                Err(error) => {
                                    tally.errors.push(format!("op {j}: issue: {error:?}"));
                                }
                            }
                        }
                    }
                    Err(error) => tally.errors.push(format!("op {j}: access: {error:?}")),
                }
            }
            _ => {
                let consent = if j % 3 == 2 {
                    &consents.revocable
                } else {
                    &consents.shared
                };
                let access = mixed_access(consent, j);
                match broker.authorise_access(&access) {
                    Ok(outcome) => consents.decided(&access, &outcome, j, &mut tally, out),
                    Err(error) => tally.errors.push(format!("op {j}: access: {error:?}")),
                }
            }
        }
    }
    tally
}

/// Child of [`several_processes_share_one_database`]. Passes trivially (returns at once)
/// unless `CONSENT_BROKER_PG_CHILD_URL` is set: then it opens its own store on that database
/// and schema, builds its own broker, waits for the go signal, runs its share of the workload
/// and prints `DONE …` (see the module documentation for the protocol).
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn postgres_child_workload() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("child: {name} unset"));
    let schema = var(CHILD_SCHEMA);
    let label = var(CHILD_LABEL);
    let ops: u64 = var(CHILD_OPS).parse().unwrap();
    let go = PathBuf::from(var(CHILD_GO));
    let mut consents = ChildConsents {
        shared: id(&var(CHILD_SHARED)),
        revocable: id(&var(CHILD_REVOCABLE)),
        revoked_seen: false,
    };
    let store = PostgresStore::open_with(&url, options(&schema)).expect("child: open the store");
    let clock = Arc::new(ManualClock::new(child_time(0)));
    let broker = Broker::builder(id("broker"), store)
        .clock(clock.clone())
        .keys(keys())
        .build()
        .expect("child: build the broker");
    let mut out = std::io::stdout().lock();
    say(&mut out, "\nREADY");
    let waiting = Instant::now();
    while !go.exists() {
        assert!(
            waiting.elapsed() < StdDuration::from_secs(120),
            "child: no go signal"
        );
        thread::sleep(StdDuration::from_millis(1));
    }
    let tally = child_workload(&broker, &clock, &mut consents, &label, ops, &mut out);
    for error in &tally.errors {
        say(&mut out, &format!("ERR {error}"));
    }
    say(
        &mut out,
        &format!(
            "DONE calls={} appended={} tokens={} requests={}",
            tally.calls, tally.appended, tally.tokens, tally.requests
        ),
    );
}

/// A child process, killed (and reaped) if the parent's test fails while it runs.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn wait(&mut self) -> std::process::ExitStatus {
        self.0
            .take()
            .expect("child still owned")
            .wait()
            .expect("reap the child")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns this test binary running the child test with `env`; its stdout lines arrive on the
/// returned receiver (which disconnects at EOF).
fn spawn_child(env: &[(&str, String)]) -> (ChildGuard, mpsc::Receiver<String>) {
    let exe = std::env::current_exe().expect("current test binary");
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            "postgres::postgres_child_workload",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (ChildGuard(Some(child)), rx)
}

/// Collects lines until `until` matches one (included) or the child closes its stdout.
fn read_lines(
    lines: &mpsc::Receiver<String>,
    deadline: Instant,
    until: impl Fn(&str) -> bool,
    seen: &mut Vec<String>,
) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let stop = until(&line);
                seen.push(line);
                if stop {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("a child timed out; its last lines: {:?}", last(seen, 20))
            }
        }
    }
}

fn last(lines: &[String], n: usize) -> &[String] {
    &lines[lines.len().saturating_sub(n)..]
}

/// A parsed `ACK` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ack {
    seq: u64,
    kind: AuditKind,
    revocable: bool,
    presence: Presence,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut words = line.strip_prefix("ACK ")?.split(' ');
    let seq = words.next()?.parse().ok()?;
    let kind = match words.next()? {
        "permit" => AuditKind::AccessPermitted,
        "deny" => AuditKind::AccessDenied,
        _ => return None,
    };
    let revocable = match words.next()? {
        "shared" => false,
        "revocable" => true,
        _ => return None,
    };
    let presence = match words.next()? {
        "present" => Presence::SubjectPresent,
        "unattended" => Presence::Unattended,
        _ => return None,
    };
    Some(Ack {
        seq,
        kind,
        revocable,
        presence,
    })
}

/// The `key=<n>` fields of a `DONE` line.
fn parse_done(line: &str) -> Option<BTreeMap<String, u64>> {
    line.strip_prefix("DONE ")?
        .split(' ')
        .map(|field| {
            let (key, value) = field.split_once('=')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Two processes, each with its own `PostgresStore` and `Broker` on one schema, run 5,000 mixed
/// operations at once (decisions of both presences on a shared consent and on another one,
/// permitted and denied; tokens; consent requests; in child `a` the revocation of the second
/// consent half-way while child `b` keeps using it). Then: no call failed, the log is one
/// gap-free sequence that passes full Merkle verification, it holds exactly the entries the
/// successful calls appended and every acknowledged decision at its own seq, nothing was
/// permitted on the revoked consent after its revocation, the unattended permits of every
/// consent and day stay within the limit and equal the usage counters, and a checkpoint signs
/// the result consistently.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn several_processes_share_one_database() {
    if std::env::var(CHILD_URL).is_ok() {
        return;
    }
    // A database of its own: the commit lock is per database, so the other tests' commits (and
    // the lock-holding fault tests) do not distort the throughput measured here.
    let database = TempDatabase::create("procs");
    let url = database.url.clone();
    let schema = unique_name("procs");
    let fx = Fixture::with_store(open(&url, &schema));
    let shared = fx.granted().id().clone();
    let revocable = fx.granted().id().clone();
    let store = fx.broker.store();
    let before = store.audit_len().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let deadline = Instant::now() + StdDuration::from_secs(900);

    let mut children: Vec<(ChildGuard, mpsc::Receiver<String>, Vec<String>)> = ["a", "b"]
        .into_iter()
        .map(|label| {
            let env = [
                (CHILD_URL, url.clone()),
                (CHILD_SCHEMA, schema.clone()),
                (CHILD_SHARED, shared.to_string()),
                (CHILD_REVOCABLE, revocable.to_string()),
                (CHILD_LABEL, label.to_owned()),
                (CHILD_OPS, OPS_PER_CHILD.to_string()),
                (CHILD_GO, go.display().to_string()),
            ];
            let (guard, lines) = spawn_child(&env);
            (guard, lines, Vec::new())
        })
        .collect();
    // Both brokers are built before either starts.
    for (_, lines, seen) in &mut children {
        read_lines(lines, deadline, |l| l == "READY", seen);
        assert_eq!(
            seen.last().map(String::as_str),
            Some("READY"),
            "a child never got ready: {seen:?}"
        );
    }
    let started = Instant::now();
    fs::write(&go, b"go").unwrap();
    let mut outputs = Vec::new();
    for (mut guard, lines, mut seen) in children {
        read_lines(&lines, deadline, |_| false, &mut seen);
        let status = guard.wait();
        assert!(
            status.success(),
            "a child failed: {status:?}; last lines: {:?}",
            last(&seen, 30)
        );
        outputs.push(seen);
    }
    let wall = started.elapsed();

    // Every child finished cleanly.
    let mut done = Vec::new();
    for (label, lines) in ["a", "b"].iter().zip(&outputs) {
        let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("ERR")).collect();
        assert!(errors.is_empty(), "child {label} hit errors: {errors:?}");
        let dones: Vec<_> = lines.iter().filter_map(|l| parse_done(l)).collect();
        assert_eq!(dones.len(), 1, "child {label}: one DONE line");
        let acks = lines.iter().filter(|l| l.starts_with("ACK ")).count();
        assert_eq!(
            lines.iter().filter_map(|l| parse_ack(l)).count(),
            acks,
            "child {label}: unparsable ACK lines"
        );
        done.push(dones[0].clone());
    }
    let sum = |key: &str| -> u64 { done.iter().map(|d| d[key]).sum() };
    let acks: Vec<Vec<Ack>> = outputs
        .iter()
        .map(|lines| lines.iter().filter_map(|l| parse_ack(l)).collect())
        .collect();
    assert_eq!(
        outputs[0].iter().filter(|l| *l == "REVOKED").count(),
        1,
        "child a revoked once"
    );

    // One gap-free log, fully verified, with exactly the entries the calls appended.
    let entries = gap_free_log(&store);
    let len = u64::try_from(entries.len()).unwrap();
    let report = verify_log(&store, None).expect("the log passes full Merkle verification");
    assert_eq!(report.size, len);
    assert_eq!(
        len - before,
        sum("appended"),
        "new audit entries == entries appended by the children's successful calls"
    );
    let count = |kind: AuditKind| {
        u64::try_from(entries.iter().filter(|e| e.kind() == kind).count()).unwrap()
    };
    assert_eq!(count(AuditKind::TokenIssued), sum("tokens"));
    assert_eq!(count(AuditKind::ConsentRequested), 2 + sum("requests"));
    // Both children started with the keys the parent's broker published: no key change.
    assert_eq!(count(AuditKind::SigningKeyActivated), 1);
    assert_eq!(count(AuditKind::CheckpointKeyActivated), 1);

    // Every acknowledged decision is in the log at its own seq, as acknowledged.
    let mut seqs = BTreeSet::new();
    for ack in acks.iter().flatten() {
        assert!(
            seqs.insert(ack.seq),
            "two decisions acknowledged seq {}",
            ack.seq
        );
        let entry = &entries[usize::try_from(ack.seq).unwrap()];
        let consent = if ack.revocable { &revocable } else { &shared };
        assert_eq!(entry.kind(), ack.kind, "{ack:?}");
        assert_eq!(entry.event.presence(), Some(ack.presence), "{ack:?}");
        assert_eq!(entry.consent(), Some(consent), "{ack:?}");
    }
    // The children ran concurrently: their seqs interleave.
    let span = |acks: &[Ack]| {
        let seqs = acks.iter().map(|a| a.seq);
        (seqs.clone().min().unwrap(), seqs.max().unwrap())
    };
    let ((a_first, a_last), (b_first, b_last)) = (span(&acks[0]), span(&acks[1]));
    assert!(
        a_first < b_last && b_first < a_last,
        "the children did not run concurrently: a {a_first}..{a_last}, b {b_first}..{b_last}"
    );

    // After the revocation is in the log, nothing on that consent was permitted or tokenised.
    let about_revocable = |e: &&AuditEntry| e.consent() == Some(&revocable);
    let revocations: Vec<u64> = entries
        .iter()
        .filter(about_revocable)
        .filter(|e| e.kind() == AuditKind::ConsentRevoked)
        .map(|e| e.seq)
        .collect();
    let [revoked_at] = revocations[..] else {
        panic!("one revocation of the revocable consent, got {revocations:?}")
    };
    let late: Vec<&AuditEntry> = entries
        .iter()
        .filter(about_revocable)
        .filter(|e| e.seq > revoked_at)
        .filter(|e| {
            matches!(
                e.kind(),
                AuditKind::AccessPermitted | AuditKind::TokenIssued
            )
        })
        .collect();
    assert!(
        late.is_empty(),
        "permitted after the revocation at {revoked_at}: {late:?}"
    );
    let permitted_before = entries
        .iter()
        .filter(about_revocable)
        .filter(|e| e.seq < revoked_at && e.kind() == AuditKind::AccessPermitted)
        .count();
    assert!(permitted_before > 0, "the revocable consent was never used");
    // Child b kept deciding on it after the revocation, and was denied every time: for the
    // revocation (a prohibited use is refused before the consent is even looked up).
    let b_after: Vec<&Ack> = acks[1]
        .iter()
        .filter(|a| a.revocable && a.seq > revoked_at)
        .collect();
    assert!(
        !b_after.is_empty(),
        "child b made no decision on the revocable consent after the revocation"
    );
    for ack in &b_after {
        let entry = &entries[usize::try_from(ack.seq).unwrap()];
        let reasons = &entry.reasons();
        let prohibited = !reasons.is_empty()
            && reasons.iter().all(|r| {
                matches!(
                    r,
                    DenyReason::ProhibitedPurpose { .. } | DenyReason::ProhibitedScope { .. }
                )
            });
        assert!(
            entry.kind() == AuditKind::AccessDenied
                && (prohibited
                    || reasons
                        .iter()
                        .any(|r| matches!(r, DenyReason::Revoked { .. }))),
            "child b's decision after the revocation: {entry:?}"
        );
    }

    // Unattended permits per consent per day: within the limit, equal to the usage counters.
    let permits = unattended_permits(&entries);
    for ((consent, day), &n) in &permits {
        assert!(
            n <= DAILY_LIMIT,
            "{n} unattended permits of {consent} on {day}"
        );
        assert_eq!(
            u64::from(store.usage(consent, *day).unwrap().unattended_today),
            n,
            "usage counter of {consent} on {day}"
        );
    }
    assert_eq!(
        usage_rows(&url, &schema),
        permits,
        "the usage table holds exactly the unattended permits"
    );
    // The children competed for the shared consent's slots on every day, and used them all.
    for d in 0..OPS_PER_CHILD / OPS_PER_DAY {
        let day = child_time(d * OPS_PER_DAY).date();
        assert_eq!(
            permits.get(&(shared.clone(), day)).copied(),
            Some(DAILY_LIMIT),
            "shared consent on {day}"
        );
    }

    // A checkpoint of the result signs the verified root, and verifies against the log.
    let checkpoint = fx.broker.checkpoint().expect("checkpoint");
    assert_eq!(
        (checkpoint.size, checkpoint.root),
        (len, report.root),
        "the checkpoint covers the verified log"
    );
    let verifier = NoteVerifier::from_vkey(&fx.broker.checkpoint_verifier_key()).unwrap();
    let checked = verify_log(&store, Some((&checkpoint.note, &verifier)))
        .expect("the log verifies against the checkpoint");
    assert_eq!(checked.checkpoint.map(|c| c.size), Some(len));
    let latest = store.latest_checkpoint().unwrap().expect("recorded");
    assert_eq!((latest.size, latest.root), (len, report.root));
    // One more decision, one more checkpoint: consistent with the first.
    fx.broker.authorise_access(&fx.access(&shared)).unwrap();
    let next = fx.broker.checkpoint().expect("a later checkpoint");
    assert_eq!(next.size, len + 1);
    verify_log(&store, Some((&checkpoint.note, &verifier))).expect("still consistent");
    verify_log(&store, Some((&next.note, &verifier))).expect("the later checkpoint verifies");

    let ops = 2 * OPS_PER_CHILD;
    eprintln!(
        "postgres, 2 processes × {OPS_PER_CHILD} ops: {:.2?} wall, {:.0} ops/s, {} calls, {} new \
         audit entries ({:.0} entries/s), {} tokens",
        wall,
        f64::from(u32::try_from(ops).unwrap()) / wall.as_secs_f64(),
        sum("calls"),
        len - before,
        f64::from(u32::try_from(len - before).unwrap()) / wall.as_secs_f64(),
        sum("tokens"),
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Revocation across brokers

/// Broker A revokes; the very next decision of broker B (another store, another connection) on
/// that consent is a denial with reason `Revoked`, and a permit B decided before the revocation
/// can no longer be turned into a token.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_revocation_by_one_broker_is_seen_by_the_next_decision_of_another() {
    let url = database_url();
    let schema = unique_name("revoke");
    let fx = Fixture::with_store(open(&url, &schema));
    let granted = fx.granted().id().clone();
    let broker_b = Broker::builder(id("broker"), open(&url, &schema))
        .clock(fx.clock.clone())
        .keys(keys())
        .build()
        .unwrap();
    let access = fx.access(&granted);
    for access in [access.clone(), unattended(access.clone())] {
        assert_eq!(
            broker_b.authorise_access(&access).unwrap().decision(),
            Decision::Permit
        );
    }
    // A permit B holds from before the revocation.
    let AccessOutcome::Permitted(held) = broker_b.authorise_access(&access).unwrap() else {
        panic!("B permits before the revocation")
    };

    fx.revoke(
        &granted,
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    let revoked_at = fx.audit_len() - 1;

    for access in [access.clone(), unattended(access.clone())] {
        let outcome = broker_b.authorise_access(&access).unwrap();
        let AccessOutcome::Denied(denial) = &outcome else {
            panic!("B permitted after A's revocation: {outcome:?}")
        };
        assert_eq!(
            denial.reasons,
            vec![DenyReason::Revoked {
                by: Revoker::Subject
            }]
        );
        assert!(denial.audit_seq > revoked_at);
    }
    assert!(matches!(
        broker_b.issue_token(held),
        Err(Error::PermitStale(c)) if c == granted
    ));
    assert!(matches!(
        broker_b.authorise_with_token(&access).unwrap(),
        TokenOutcome::Denied(_)
    ));
    // And A sees B's denials in the one log.
    let history = fx.broker.consent_history(&granted).unwrap();
    let kinds: Vec<AuditKind> = history.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds[kinds.len() - 4..],
        [
            AuditKind::ConsentRevoked,
            AuditKind::AccessDenied,
            AuditKind::AccessDenied,
            AuditKind::AccessDenied
        ]
    );
    verify_log(&fx.broker.store(), None).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. Faults

/// A role that does not exist (the cluster trusts 127.0.0.1, so a wrong password cannot be
/// told from a right one; an unknown role is refused at authentication): `Unavailable`, with a
/// message that says so. An unknown database is `Unavailable` too.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn wrong_credentials_are_unavailable_and_say_authentication() {
    let url = with_credentials(&database_url(), "no_such_role:wrong-password");
    match PostgresStore::open_with(&url, options(&unique_name("creds"))) {
        Err(StoreError::Unavailable(message)) => assert!(
            message.to_lowercase().contains("authentication"),
            "the message should mention authentication: {message}"
        ),
        other => panic!("expected Unavailable(authentication …), got {other:?}"),
    }
    let url = with_database(&database_url(), "no_such_database");
    assert!(
        matches!(
            PostgresStore::open_with(&url, options(&unique_name("creds"))),
            Err(StoreError::Unavailable(_))
        ),
        "an unknown database"
    );
    let url = "postgres://consent@127.0.0.1:notaport/db";
    assert!(matches!(
        PostgresStore::open_with(url, PostgresOptions::default()),
        Err(StoreError::Unavailable(m)) if m.contains("invalid PostgreSQL URL")
    ));
}

/// A closed port on 127.0.0.1: `Unavailable`, returned within the connect timeout.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_server_that_is_down_is_unavailable_within_the_connect_timeout() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let timeout = StdDuration::from_secs(2);
    let url = format!("postgres://consent@127.0.0.1:{port}/consent_broker_test");
    let started = Instant::now();
    let result = PostgresStore::open_with(
        &url,
        PostgresOptions {
            connect_timeout: timeout,
            ..options("down")
        },
    );
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "got {result:?}"
    );
    assert!(took < timeout, "took {took:?}");
}

/// A server that accepts the TCP connection but never answers (hung, or not PostgreSQL): the
/// documented `connect_timeout` ("give up connecting after this long") should bound `open`.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_server_that_never_answers_is_unavailable_within_the_connect_timeout() {
    // Bound but never accepting: the kernel completes the handshake, nobody ever speaks.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let timeout = StdDuration::from_secs(1);
    let url = format!("postgres://consent@127.0.0.1:{port}/consent_broker_test");
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        let result = PostgresStore::open_with(
            &url,
            PostgresOptions {
                connect_timeout: timeout,
                ..options("hung")
            },
        );
        let _ = tx.send(result.map(|_| ()));
    });
    let result = rx.recv_timeout(StdDuration::from_secs(15));
    drop(listener);
    let took = started.elapsed();
    match result {
        Ok(Err(StoreError::Unavailable(_))) => {
            assert!(took < timeout * 3, "took {took:?}");
        }
        Ok(other) => panic!("expected Unavailable, got {other:?}"),
        Err(_) => panic!("open_with still blocked after {took:?} (connect_timeout {timeout:?})"),
    }
}

/// The audit log, usage and outcome after a call made while the connection was broken: an
/// `Err` recorded nothing; an `Ok` decision is in the log as returned (never an unrecorded
/// permit).
fn check_recorded_or_nothing(
    store: &(impl LogRead + StateRead),
    consent: &ConsentId,
    day: Date,
    before: (u64, Usage),
    result: &Result<AccessOutcome, Error>,
) {
    let (len, usage) = before;
    match result {
        Ok(outcome) => {
            let entry = store
                .audit_entries(outcome.audit_seq()..outcome.audit_seq() + 1)
                .unwrap()
                .pop()
                .expect("the returned decision is in the log");
            let kind = match outcome {
                AccessOutcome::Permitted(_) => AuditKind::AccessPermitted,
                AccessOutcome::Denied(_) => AuditKind::AccessDenied,
            };
            assert_eq!(entry.kind(), kind);
            assert_eq!(entry.consent(), Some(consent));
            assert_eq!(store.audit_len().unwrap(), len + 1);
        }
        Err(error) => {
            assert!(
                matches!(error, Error::Store(_)),
                "a broken connection is a store error: {error:?}"
            );
            assert_eq!(store.audit_len().unwrap(), len, "an Err recorded nothing");
            assert_eq!(store.usage(consent, day).unwrap(), usage);
        }
    }
}

/// The store's connection is terminated from outside (`pg_terminate_backend`) between calls:
/// the next call returns a typed error or reconnects and succeeds, and within two calls it
/// works again; a broker decision attempted on the broken connection either failed and recorded
/// nothing, or is in the log.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_connection_dropped_between_calls_is_replaced() {
    let application = unique_name("drop");
    let url = with_param(&database_url(), "application_name", &application);
    let mut admin = raw_client(&database_url());
    let fx = Fixture::with_store(open(&url, &unique_name("drop")));
    let granted = fx.granted().id().clone();
    let store = fx.broker.store();
    let day = fx.broker.now().date();

    // A plain store call.
    let len = store.audit_len().unwrap();
    assert!(terminate_backends(&mut admin, &application) >= 1);
    let first = store.audit_len();
    if let Err(error) = &first {
        assert!(
            matches!(error, StoreError::Unavailable(_)),
            "a lost connection is Unavailable: {error:?}"
        );
    }
    let second = store.audit_len();
    eprintln!("store calls after pg_terminate_backend: {first:?}, then {second:?}");
    assert!(
        first.is_ok() || second.is_ok(),
        "not working again within 2 calls: {first:?}, {second:?}"
    );
    assert_eq!(first.or(second).unwrap(), len);

    // A broker decision (unattended: it commits a usage change too), each presence.
    for presence in [Presence::Unattended, Presence::SubjectPresent] {
        let access = AccessRequest {
            presence,
            ..fx.access(&granted)
        };
        let before = (
            store.audit_len().unwrap(),
            store.usage(&granted, day).unwrap(),
        );
        assert!(terminate_backends(&mut admin, &application) >= 1);
        let first = fx.broker.authorise_access(&access);
        check_recorded_or_nothing(&store, &granted, day, before, &first);
        let second = fx.broker.authorise_access(&access);
        eprintln!(
            "{presence:?} decisions after pg_terminate_backend: {:?}, then {:?}",
            first.as_ref().map(AccessOutcome::decision),
            second.as_ref().map(AccessOutcome::decision)
        );
        assert!(
            first.is_ok() || second.is_ok(),
            "not working again within 2 calls: {first:?}, {second:?}"
        );
        let outcome = first.or(second).unwrap();
        assert_eq!(outcome.decision(), Decision::Permit);
    }
    let entries = gap_free_log(&store);
    verify_log(&store, None).unwrap();
    assert_eq!(
        store.usage(&granted, day).unwrap().unattended_today,
        u32::try_from(unattended_permits(&entries).values().sum::<u64>()).unwrap()
    );
}

/// The connection is terminated while the store's commit waits for the commit lock (held by
/// another transaction), i.e. inside the commit's transaction: the broker's decision returns a
/// store error, nothing is recorded (no entry, no usage), and the next call works.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_connection_dropped_inside_a_commit_records_nothing() {
    let database = TempDatabase::create("midcommit");
    let application = unique_name("midcommit");
    let url = with_param(&database.url, "application_name", &application);
    let mut admin = raw_client(&database.url);
    let fx = Fixture::with_store(open(&url, &unique_name("midcommit")));
    let granted = fx.granted().id().clone();
    let store = fx.broker.store();
    let day = fx.broker.now().date();
    let access = unattended(fx.access(&granted));
    let before = (
        store.audit_len().unwrap(),
        store.usage(&granted, day).unwrap(),
    );

    let (held_tx, held) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let holder = hold_commit_lock(database.url.clone(), held_tx, release_rx);
    held.recv().unwrap();
    let result = thread::scope(|scope| {
        let deciding = scope.spawn(|| fx.broker.authorise_access(&access));
        // Wait until the store's backend is blocked on the commit lock, then kill it.
        crate::postgres_group::wait_for(&mut admin, &application, "advisory");
        assert!(terminate_backends(&mut admin, &application) >= 1);
        release.send(()).unwrap();
        deciding.join().unwrap()
    });
    holder.join().unwrap();
    assert!(
        matches!(result, Err(Error::Store(_))),
        "a commit whose connection died returns a store error: {result:?}"
    );
    check_recorded_or_nothing(&store, &granted, day, before, &result);

    let mut attempts = Vec::new();
    for _ in 0..2 {
        let attempt = fx.broker.authorise_access(&access);
        let ok = attempt.is_ok();
        attempts.push(attempt);
        if ok {
            break;
        }
    }
    let outcome = attempts
        .pop()
        .unwrap()
        .unwrap_or_else(|e| panic!("not working again within 2 calls: {e:?}"));
    assert_eq!(outcome.decision(), Decision::Permit);
    assert_eq!(store.usage(&granted, day).unwrap().unattended_today, 1);
    gap_free_log(&store);
    verify_log(&store, None).unwrap();
}

/// With a 50 ms statement timeout, a commit that waits longer for the commit lock (held for 2 s
/// by another transaction) fails with `Busy`, recording nothing; reads still work meanwhile; once
/// the lock is released, commits work.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_commit_blocked_beyond_the_statement_timeout_is_busy() {
    let database = TempDatabase::create("timeout");
    let store = PostgresStore::open_with(
        &database.url,
        PostgresOptions {
            statement_timeout: StdDuration::from_millis(50),
            ..options(&unique_name("timeout"))
        },
    )
    .unwrap();
    let fx = Fixture::sharing(Arc::new(store), |builder| builder);
    let granted = fx.granted().id().clone();
    let store = fx.shared_store();
    let day = fx.broker.now().date();
    let access = unattended(fx.access(&granted));
    let len = store.audit_len().unwrap();

    let (held_tx, held) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let holder = hold_commit_lock(database.url.clone(), held_tx, release_rx);
    held.recv().unwrap();
    let locked_at = Instant::now();
    // A write that takes the commit lock without an audit record: recording a checkpoint.
    let direct = fx.broker.checkpoint();
    assert!(
        matches!(direct, Err(Error::Store(StoreError::Busy(_)))),
        "a write behind the lock: {direct:?}"
    );
    let decided = fx.broker.authorise_access(&access);
    assert!(
        matches!(decided, Err(Error::Store(StoreError::Busy(_)))),
        "a decision behind the lock: {decided:?}"
    );
    // Reads take no lock.
    assert_eq!(store.audit_len().unwrap(), len, "nothing was recorded");
    assert_eq!(store.latest_checkpoint().unwrap(), None);
    assert_eq!(store.usage(&granted, day).unwrap(), Usage::default());
    assert!(
        locked_at.elapsed() < StdDuration::from_secs(2),
        "inconclusive: the lock was held for 2 s only, and that had passed"
    );
    // The competing transaction ends after 2 s.
    thread::sleep(StdDuration::from_secs(2).saturating_sub(locked_at.elapsed()));
    release.send(()).unwrap();
    holder.join().unwrap();

    let checkpoint = fx
        .broker
        .checkpoint()
        .expect("a write after the lock was released");
    assert_eq!(store.latest_checkpoint().unwrap(), Some(checkpoint));
    assert_eq!(
        fx.broker.authorise_access(&access).unwrap().decision(),
        Decision::Permit
    );
    assert_eq!(store.usage(&granted, day).unwrap().unattended_today, 1);
    gap_free_log(&*store);
    verify_log(&*store, None).unwrap();
}

// ---------------------------------------------------------------------------------------------
// 4. Inside an async runtime
//
// The dev-dependency tokio has the features `rt` and `macros` only (no `rt-multi-thread`), so
// only the current-thread runtime is exercised.

/// Opening the store and calling the broker straight from the body of an async test (a
/// current-thread runtime), and from a task spawned on it: no panic ("cannot start a runtime
/// from within a runtime"), correct decisions; dropping the store there is fine too.
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
async fn the_store_and_broker_work_inside_a_current_thread_runtime() {
    let url = database_url();
    let store = PostgresStore::open_with(&url, options(&unique_name("async"))).unwrap();
    let fx = Fixture::with_store(store);
    let granted = fx.granted().id().clone();
    let access = fx.access(&granted);
    assert_eq!(
        fx.broker.authorise_access(&access).unwrap().decision(),
        Decision::Permit
    );
    let elsewhere = AccessRequest {
        account: id("acc-elsewhere"),
        ..access.clone()
    };
    assert!(matches!(
        fx.broker.authorise_access(&elsewhere).unwrap(),
        AccessOutcome::Denied(d) if d.reasons == [DenyReason::AccountNotGranted { account: id("acc-elsewhere") }]
    ));
    let fx = tokio::spawn(async move {
        let outcome = fx.broker.authorise_with_token(&unattended(access)).unwrap();
        assert!(matches!(outcome, TokenOutcome::Issued(_)));
        fx
    })
    .await
    .unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        fx.broker
            .store()
            .usage(&granted, fx.broker.now().date())
            .unwrap(),
        Usage {
            unattended_today: 1
        }
    );
    verify_log(&fx.broker.store(), None).unwrap();
    drop(fx);
}

// ---------------------------------------------------------------------------------------------
// 5. Schema

/// Ids a bank remembered before schema version 8 (`bank_seen`, now `bank_seen_before_v8`, by kind
/// and id) are still found whatever signed time is asked about, and the commit function refuses
/// them again, until a prune whose cut is past their expiry removes them; the function writes new
/// ids to `bank_presented`, and refuses a caller of an older build (no signed time, no kind).
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn ids_remembered_before_version_8_are_refused_until_they_expire() {
    let url = database_url();
    let schema = unique_name("seenv7");
    let store = open(&url, &schema);
    let mut client = raw_client(&url);
    let q = quote(&schema);
    client
        .batch_execute(&format!(
            "INSERT INTO {q}.bank_seen_before_v8 (kind, id, expires_at) VALUES \
             ('proof', 'old-p', 1000), ('token', 'old-t', 2000)"
        ))
        .unwrap();
    let at = |seconds| OffsetDateTime::from_unix_timestamp(seconds).unwrap();
    assert!(store.seen(SeenKind::Proof, "old-p", at(910)).unwrap());
    assert!(store.seen(SeenKind::Token, "old-t", at(1)).unwrap());
    assert!(!store.seen(SeenKind::Token, "old-p", at(910)).unwrap());
    let view = store
        .gate_view(&GateQuery {
            attestation: "att-1",
            consent: &id("cns_1"),
            day: at(910).date(),
            proof_id: "old-p",
            proof_at: at(910),
            token_id: "old-t",
            token_at: at(1200),
        })
        .unwrap();
    assert!(view.proof_seen && view.token_seen);
    // The commit function, called as a batch of one commit with one check ("unseen": kind, id,
    // signed time) and optionally one change, answers -2 when the check finds the id. The session
    // says this build's schema version, as the store's own do.
    says_this_builds_version(&mut client);
    let mut call = |check_id: &str, change: Option<(&str, &str, i64, i64)>| -> Vec<i64> {
        let (mut kinds, mut ids, mut args) =
            (Vec::<&str>::new(), Vec::<&str>::new(), Vec::<&str>::new());
        let (mut nums, mut nums2) = (Vec::<i64>::new(), Vec::<i64>::new());
        if let Some((kind, arg, num, num2)) = change {
            (kinds, ids, args, nums, nums2) =
                (vec![kind], vec![check_id], vec![arg], vec![num], vec![num2]);
        }
        let commits: Vec<i32> = vec![0; kinds.len()];
        let row = client
            .query_one(
                &format!(
                    "SELECT {q}.consent_broker_commit(1, ARRAY[0], ARRAY['unseen'], ARRAY[$1::TEXT], \
                     ARRAY['proof'], ARRAY[910::BIGINT], ARRAY[NULL::BYTEA], $2, $3, $4, $5, $6, \
                     $7, '{{}}'::INTEGER[], '{{}}'::BYTEA[])"
                ),
                &[&check_id, &commits, &kinds, &ids, &args, &nums, &nums2],
            )
            .unwrap();
        row.get(0)
    };
    assert_eq!(
        call("old-p", None),
        vec![-2],
        "a replay of an id kept before version 8"
    );
    // A prune whose cut is not past its expiry keeps it; one past it removes it.
    assert_eq!(call("new-p", Some(("prune", "proof", 1000, 8))), vec![0]);
    assert_eq!(call("old-p", None), vec![-2]);
    assert_eq!(call("new-p", Some(("prune", "proof", 1001, 8))), vec![0]);
    assert!(!store.seen(SeenKind::Proof, "old-p", at(910)).unwrap());
    assert!(
        store.seen(SeenKind::Token, "old-t", at(1)).unwrap(),
        "another kind: kept"
    );
    // Gone, it is remembered again, in the new table, under its signed time.
    assert_eq!(call("old-p", Some(("seen", "proof", 910, 0))), vec![0]);
    assert!(store.seen(SeenKind::Proof, "old-p", at(910)).unwrap());
    assert!(!store.seen(SeenKind::Proof, "old-p", at(911)).unwrap());
    assert_eq!(call("old-p", None), vec![-2]);
    let count = |table: &str| -> i64 {
        raw_client(&url)
            .query_one(&format!("SELECT COUNT(*) FROM {q}.{table}"), &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(
        (count("bank_presented"), count("bank_seen_before_v8")),
        (1, 1)
    );
    // An older build's caller: its check of an id carries no signed time, its prune no kind.
    let old_check = format!(
        "SELECT {q}.consent_broker_commit(1, ARRAY[0], ARRAY['unseen'], ARRAY['p-9'], \
         ARRAY['proof'], ARRAY[NULL::BIGINT], ARRAY[NULL::BYTEA], '{{}}'::INTEGER[], \
         '{{}}'::TEXT[], '{{}}'::TEXT[], '{{}}'::TEXT[], '{{}}'::BIGINT[], '{{}}'::BIGINT[], \
         '{{}}'::INTEGER[], '{{}}'::BYTEA[])"
    );
    let old_prune = format!(
        "SELECT {q}.consent_broker_commit(1, '{{}}'::INTEGER[], '{{}}'::TEXT[], '{{}}'::TEXT[], \
         '{{}}'::TEXT[], '{{}}'::BIGINT[], '{{}}'::BYTEA[], ARRAY[0], ARRAY['prune'], ARRAY[''], \
         ARRAY[''], ARRAY[2000::BIGINT], ARRAY[8::BIGINT], '{{}}'::INTEGER[], '{{}}'::BYTEA[])"
    );
    // (Said from a session that gives this build's schema version: one that gives none, as such
    // a build's, is refused before its arguments are read; see
    // `a_schema_a_newer_build_migrated_meanwhile_takes_no_commit_from_this_one`.)
    for old in [old_check, old_prune] {
        let error = client.query_one(&old, &[]).unwrap_err();
        assert!(
            error.to_string().contains("older than schema version 8")
                || format!("{error:?}").contains("older than schema version 8"),
            "{error:?}"
        );
    }
    assert_eq!(
        count("bank_seen_before_v8"),
        1,
        "the old-style prune deleted nothing"
    );
}

/// A schema whose recorded version is newer than this build's is refused, and left as it was.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_newer_schema_version_is_refused() {
    let url = database_url();
    let schema = unique_name("toonew");
    drop(open(&url, &schema));
    let mut client = raw_client(&url);
    let meta = format!("{}.consent_broker_meta", quote(&schema));
    let version: i64 = client
        .query_one(
            &format!("SELECT value FROM {meta} WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, PostgresStore::SCHEMA_VERSION);
    assert_eq!(
        PostgresStore::MIGRATIONS.last().map(|m| m.version),
        Some(PostgresStore::SCHEMA_VERSION)
    );
    client
        .execute(
            &format!("UPDATE {meta} SET value = 99 WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap();
    match PostgresStore::open_with(&url, options(&schema)) {
        Err(error) => assert_eq!(
            error,
            StoreError::SchemaTooNew {
                found: 99,
                supported: PostgresStore::SCHEMA_VERSION
            }
        ),
        Ok(store) => panic!("a schema of version 99 was opened: {store:?}"),
    }
    let version: i64 = client
        .query_one(
            &format!("SELECT value FROM {meta} WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, 99, "the refused schema was left alone");
}

/// A newer build migrates the database while this one runs (here: its recorded version raised,
/// as a migration does under the commit lock). This build's next decision, sent to the commit
/// function, is refused with `SchemaTooNew` and writes nothing, as is a checkpoint (a commit of
/// the statement-by-statement path); so is a session that says no schema version at all, as a
/// build from before version 10 would call the function. Put back, decisions land again.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_schema_a_newer_build_migrated_meanwhile_takes_no_commit_from_this_one() {
    let url = database_url();
    let schema = unique_name("moved");
    let fx = Fixture::with_store(open(&url, &schema));
    let access = fx.access(fx.granted().id());
    fx.broker.authorise_access(&access).unwrap();
    let len = fx.audit_len();
    let mut client = raw_client(&url);
    let q = quote(&schema);
    let call = format!(
        "SELECT {q}.consent_broker_commit(0, '{{}}'::INTEGER[], '{{}}'::TEXT[], '{{}}'::TEXT[], \
         '{{}}'::TEXT[], '{{}}'::BIGINT[], '{{}}'::BYTEA[], '{{}}'::INTEGER[], '{{}}'::TEXT[], \
         '{{}}'::TEXT[], '{{}}'::TEXT[], '{{}}'::BIGINT[], '{{}}'::BIGINT[], '{{}}'::INTEGER[], \
         '{{}}'::BYTEA[])"
    );
    let refused = |error: postgres::Error| {
        let message = error.as_db_error().map(|e| e.message().to_owned());
        assert_eq!(
            message,
            Some(format!(
                "consent_broker schema version {}",
                PostgresStore::SCHEMA_VERSION
            )),
            "{error:?}"
        );
    };
    // A session that says no version (a build from before version 10).
    refused(client.query_one(&call, &[]).expect_err("no version said"));
    // One that says another.
    client
        .batch_execute("SET consent_broker.schema_version = '9'")
        .unwrap();
    refused(client.query_one(&call, &[]).expect_err("version 9"));

    let meta = format!("{q}.consent_broker_meta");
    let set_version = |client: &mut postgres::Client, version: i64| {
        client
            .execute(
                &format!("UPDATE {meta} SET value = $1 WHERE key = 'schema_version'"),
                &[&version],
            )
            .unwrap();
    };
    set_version(&mut client, PostgresStore::SCHEMA_VERSION + 1);
    let too_new = StoreError::SchemaTooNew {
        found: PostgresStore::SCHEMA_VERSION + 1,
        supported: PostgresStore::SCHEMA_VERSION,
    };
    match fx.broker.authorise_access(&access) {
        Err(Error::Store(error)) => assert_eq!(error, too_new),
        other => panic!("a decision on a migrated schema: {other:?}"),
    }
    match fx.broker.checkpoint() {
        Err(Error::Store(error)) => assert_eq!(error, too_new),
        other => panic!("a checkpoint on a migrated schema: {other:?}"),
    }
    assert_eq!(fx.audit_len(), len);

    set_version(&mut client, PostgresStore::SCHEMA_VERSION);
    assert_eq!(
        fx.broker.authorise_access(&access).unwrap().decision(),
        Decision::Permit
    );
    assert_eq!(fx.audit_len(), len + 1);
}

/// The append-only triggers refuse `UPDATE`/`DELETE` of audit rows and Merkle nodes from a raw
/// client; the log still verifies afterwards.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn audit_rows_and_merkle_nodes_refuse_update_and_delete() {
    let url = database_url();
    let schema = unique_name("appendonly");
    let fx = Fixture::with_store(open(&url, &schema));
    let granted = fx.granted().id().clone();
    fx.broker.authorise_access(&fx.access(&granted)).unwrap();
    let store = fx.broker.store();
    let len = store.audit_len().unwrap();
    let root = verify_log(&store, None).unwrap().root;
    let mut client = raw_client(&url);
    let s = quote(&schema);
    for sql in [
        format!("UPDATE {s}.audit SET entry = entry"),
        format!("UPDATE {s}.audit SET seq = seq + 1000 WHERE seq = 0"),
        format!("DELETE FROM {s}.audit WHERE seq = {}", len - 1),
        format!("DELETE FROM {s}.audit"),
        format!("UPDATE {s}.merkle_nodes SET hash = hash"),
        format!("DELETE FROM {s}.merkle_nodes"),
        format!("DELETE FROM {s}.merkle_nodes WHERE level = 0 AND idx = 0"),
    ] {
        let error = client
            .batch_execute(&sql)
            .expect_err(&format!("{sql} was allowed"));
        let message = error
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_else(|| error.to_string());
        assert!(
            message.contains("append-only"),
            "{sql}: refused for another reason: {message}"
        );
    }
    assert_eq!(store.audit_len().unwrap(), len);
    assert_eq!(verify_log(&store, None).unwrap().root, root);
    // Appending still works.
    fx.broker.authorise_access(&fx.access(&granted)).unwrap();
    verify_log(&store, None).unwrap();
}

/// `TRUNCATE` empties a table without firing row triggers: the audit log and the Merkle tree
/// should be protected from it too.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn audit_rows_and_merkle_nodes_refuse_truncate() {
    let url = database_url();
    let schema = unique_name("truncate");
    let fx = Fixture::with_store(open(&url, &schema));
    let store = fx.broker.store();
    let len = store.audit_len().unwrap();
    assert!(len > 0);
    let mut client = raw_client(&url);
    let s = quote(&schema);
    for table in ["audit", "merkle_nodes"] {
        let sql = format!("TRUNCATE {s}.{table}");
        let mut tx = client.transaction().unwrap();
        let result = tx.batch_execute(&sql);
        // Never keep the damage, whatever happened.
        tx.rollback().unwrap();
        let error = result.expect_err(&format!("{sql} was allowed"));
        let message = error
            .as_db_error()
            .map(|e| e.message().to_owned())
            .unwrap_or_else(|| error.to_string());
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
    assert_eq!(store.audit_len().unwrap(), len);
}

/// Two threads open `schema` at once (after `prepare`), `rounds` times with a new name each
/// time: every open must succeed, the schema must end at [`PostgresStore::SCHEMA_VERSION`] with one version row,
/// and both stores must work on it.
fn open_concurrently(rounds: u32, tag: &str, prepare: impl Fn(&mut Client, &str)) {
    let url = database_url();
    let mut client = raw_client(&url);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let schema = unique_name(tag);
        prepare(&mut client, &schema);
        let barrier = Barrier::new(2);
        let results: Vec<Result<PostgresStore, StoreError>> = thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        PostgresStore::open_with(&url, options(&schema))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut stores = Vec::new();
        for result in results {
            match result {
                Ok(store) => stores.push(store),
                Err(error) => failures.push(format!("round {round}: {error:?}")),
            }
        }
        let [first, second] = &stores[..] else {
            continue;
        };
        let rows = client
            .query(
                &format!(
                    "SELECT key, value FROM {}.consent_broker_meta",
                    quote(&schema)
                ),
                &[],
            )
            .unwrap();
        let meta: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            meta,
            [("schema_version".to_owned(), PostgresStore::SCHEMA_VERSION)]
        );
        // Both stores work on the one schema.
        let fx = Fixture::with_store(first);
        let granted = fx.granted().id().clone();
        let other = Broker::builder(id("broker"), second)
            .clock(fx.clock.clone())
            .keys(keys())
            .build()
            .unwrap();
        assert_eq!(
            other
                .authorise_access(&fx.access(&granted))
                .unwrap()
                .decision(),
            Decision::Permit
        );
        verify_log(second, None).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {} concurrent opens failed: {failures:?}",
        failures.len(),
        2 * rounds
    );
}

/// Two threads open the same new schema at once, ten times over: both succeed every time
/// (migrations are serialised by the advisory lock).
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn opening_one_new_schema_concurrently_migrates_once() {
    open_concurrently(10, "newschema", |_, _| {});
}

/// The same with the schema already there but empty: the situation of two broker processes
/// starting at once on a new database with `schema: None` (the tables then go to `public`).
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn opening_one_empty_schema_concurrently_migrates_once() {
    open_concurrently(10, "emptyschema", |client, schema| {
        client
            .batch_execute(&format!("CREATE SCHEMA {}", quote(schema)))
            .unwrap();
    });
}

/// Erasure on PostgreSQL: the key and the consents go in one commit, the purge rewrites the key
/// table (`VACUUM FULL`) and reports it done, the log still verifies, and the subject's key row
/// is no longer in the table's files, live or dead: the table's file is a new one, and empty.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn erasure_on_postgres_deletes_the_key_and_purges_its_table() {
    let url = database_url();
    let (fx, granted, mut client, schema, (file_before, _)) = with_a_key_to_erase(&url, "erase");
    let table = format!("{}.subject_keys", quote(&schema));
    let file = |client: &mut Client| key_table_file(client, &schema);
    let subject = granted.subject().clone();
    let before = fx.broker.checkpoint().unwrap();
    let erasure = fx.broker.erase_subject(&subject).unwrap().unwrap();
    assert!(erasure.purged);
    assert_eq!(erasure.revoked, vec![granted.id().clone()]);
    assert_eq!(fx.broker.pseudonym_of(&subject).unwrap(), None);
    assert!(fx.broker.consents_of(&subject).unwrap().is_empty());
    let verifier =
        consent_broker::checkpoint::NoteVerifier::from_vkey(&fx.broker.checkpoint_verifier_key())
            .unwrap();
    verify_log(&fx.broker.store(), Some((&before.note, &verifier))).unwrap();
    // VACUUM FULL wrote the table anew from its live rows, of which there are none: a new file,
    // empty, so the deleted key's row is in no page of it. (The statistics' count of dead rows
    // is not evidence: a backend reports its deletions to them in its own time.)
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    let (file_after, size_after) = file(&mut client);
    assert_ne!(file_after, file_before, "the table was rewritten");
    assert_eq!(size_after, 0);
}

/// A snapshot older than the erasure, held open in another session (a report's long
/// transaction, say): VACUUM would copy the erased key's row into the rewritten file, so purge
/// says "not done" and leaves the file as it was; once that transaction ends, purge rewrites the
/// table without the row.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn purge_on_postgres_waits_for_snapshots_that_still_see_the_erased_key() {
    // A database of its own: the old snapshot below holds back every purge in its database, and
    // the other tests' purges must not wait for it.
    let database = TempDatabase::create("erasewait");
    let url = database.url.clone();
    let (fx, granted, mut client, schema, (file_before, size_before)) =
        with_a_key_to_erase(&url, "erasewait");
    let table = format!("{}.subject_keys", quote(&schema));
    let file = |client: &mut Client| key_table_file(client, &schema);
    // Another session's snapshot, taken before the erasure and held. It reads no table (so it
    // holds no lock that would stop the rewrite): its snapshot alone keeps the row.
    let mut reader = raw_client(&url);
    let mut old = reader
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    old.query_one("SELECT 1", &[]).unwrap();
    let subject = granted.subject().clone();
    let erasure = fx.broker.erase_subject(&subject).unwrap().unwrap();
    assert!(
        !erasure.purged,
        "purged while a snapshot still sees the key"
    );
    assert_eq!(fx.broker.pseudonym_of(&subject).unwrap(), None);
    assert_eq!(
        file(&mut client),
        (file_before, size_before),
        "not rewritten"
    );
    // The old snapshot still reads the erased key: a rewrite would have had to keep it.
    let still: i64 = old
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0);
    assert_eq!(still, 1);
    old.commit().unwrap();
    assert!(fx.broker.purge().unwrap());
    let (file_after, size_after) = file(&mut client);
    assert_ne!(file_after, file_before, "the table was rewritten");
    assert_eq!(
        size_after, 0,
        "no byte of the erased key's row is left in the table's file"
    );
}

/// The key table's file (its number and size), read by `client`.
fn key_table_file(client: &mut Client, schema: &str) -> (i64, i64) {
    let table = format!("{}.subject_keys", quote(schema));
    let row = client
        .query_one(
            "SELECT pg_catalog.pg_relation_filenode($1::TEXT::regclass)::TEXT::BIGINT, \
             pg_catalog.pg_relation_size($1::TEXT::regclass)",
            &[&table],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// For an erasure test: a broker on `url`, in a schema of its own named from `tag`, with one
/// live grant; a plain client; the schema; and the key table's file before the erasure (the
/// subject's key is in it).
fn with_a_key_to_erase(
    url: &str,
    tag: &str,
) -> (
    Fixture<PostgresStore>,
    ConsentRequest,
    Client,
    String,
    (i64, i64),
) {
    let schema = unique_name(tag);
    let fx = Fixture::with_store(open(url, &schema));
    let granted = fx.granted();
    let mut client = raw_client(url);
    let file = key_table_file(&mut client, &schema);
    assert!(file.1 > 0, "the subject's key is in the table's file");
    (fx, granted, client, schema, file)
}

/// A primary of the test's own whose broker connects as `broker`, a role without superuser
/// (owner of the database `app`), and which takes replication connections from `replicator`:
/// the cluster and the broker's URL.
fn primary_for_a_standby(prefix: &str, extra: &str) -> (Cluster, String) {
    let mut primary = Cluster::new(prefix, "consent");
    primary.init(
        "local all all trust\nhost all all 127.0.0.1/32 trust\n\
         local replication all trust\nhost replication all 127.0.0.1/32 trust\n",
    );
    primary.start(&format!(
        "-c wal_level=replica -c max_wal_senders=4 {extra}"
    ));
    let mut admin = primary.admin();
    for statement in [
        "CREATE ROLE broker LOGIN",
        "CREATE DATABASE app OWNER broker",
        "CREATE ROLE replicator LOGIN REPLICATION",
    ] {
        admin.batch_execute(statement).unwrap();
    }
    let url = format!("postgres://broker@127.0.0.1:{}/app", primary.port);
    (primary, url)
}

/// PostgreSQL 15 and older can keep dead rows `vacuum_defer_cleanup_age` transactions longer
/// than any snapshot needs them: purge then says "not done", whatever it rewrites. Set by the
/// server's operator (`ALTER SYSTEM`, a reload), on a server of the test's own (the setting is
/// the whole server's).
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn purge_on_postgres_refuses_while_the_server_defers_cleanup() {
    let (primary, url) = primary_for_a_standby("cbt-pg-defer.", "");
    let mut admin = primary.admin();
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::INT", &[])
        .unwrap()
        .get(0);
    if version >= 160_000 {
        eprintln!("PostgreSQL {version} has no vacuum_defer_cleanup_age: nothing to test");
        return;
    }
    let (fx, granted, mut client, schema, (file_before, _)) = with_a_key_to_erase(&url, "defer");
    let reload = |admin: &mut Client, statement: &str| {
        admin.batch_execute(statement).unwrap();
        admin.batch_execute("SELECT pg_reload_conf()").unwrap();
        // Each session takes the reload at its next statement: wait until a new one sees it.
        let wanted = statement.contains(" = ");
        for _ in 0..100 {
            let age: String = raw_client(&url)
                .query_one("SELECT current_setting('vacuum_defer_cleanup_age')", &[])
                .unwrap()
                .get(0);
            if (age != "0") == wanted {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the reload was not taken");
    };
    reload(
        &mut admin,
        "ALTER SYSTEM SET vacuum_defer_cleanup_age = 1000",
    );
    let erasure = fx.broker.erase_subject(granted.subject()).unwrap().unwrap();
    assert!(!erasure.purged, "purged while the server defers cleanup");
    assert_eq!(key_table_file(&mut client, &schema).0, file_before);
    reload(&mut admin, "ALTER SYSTEM RESET vacuum_defer_cleanup_age");
    assert!(fx.broker.purge().unwrap());
    let (file_after, size_after) = key_table_file(&mut client, &schema);
    assert_ne!(file_after, file_before, "the table was rewritten");
    assert_eq!(size_after, 0);
}

/// A hot standby (`hot_standby_feedback` on) with a snapshot older than the erasure holds the
/// primary's horizon back through its WAL sender, which connects as a replication role of its
/// own and which the broker's role (no superuser) sees with neither a database nor a type: the
/// rewrite would keep the erased key's row, so purge says "not done" and leaves the file; once
/// the standby's snapshot ends, purge rewrites the table without the row.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn purge_on_postgres_waits_for_a_standbys_snapshot() {
    let (primary, url) = primary_for_a_standby("cbt-pg-primary.", "");
    let mut standby = Cluster::new("cbt-pg-standby.", "consent");
    primary.run(
        primary
            .command("pg_basebackup")
            .arg("-D")
            .arg(standby.data())
            .args(["-R", "-X", "stream", "-c", "fast", "-h"])
            .arg(primary.dir.path())
            .args(["-p", &primary.port.to_string(), "-U", "replicator"]),
    );
    standby.start("-c hot_standby=on -c hot_standby_feedback=on -c wal_receiver_status_interval=1");

    let (fx, granted, mut client, schema, (file_before, size_before)) =
        with_a_key_to_erase(&url, "standby");
    // A snapshot on the standby, taken before the erasure and held; its feedback reaches the
    // primary's WAL sender.
    let mut on_standby = Client::connect(
        &format!(
            "host={} port={} user=broker dbname=app",
            standby.dir.path().display(),
            standby.port
        ),
        NoTls,
    )
    .unwrap();
    let mut old = on_standby
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .unwrap();
    old.query_one("SELECT 1", &[]).unwrap();
    let sender_holds = |client: &mut Client| -> bool {
        client
            .query_one(
                "SELECT count(*) > 0 FROM pg_catalog.pg_stat_replication \
                 WHERE backend_xmin IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0)
    };
    let mut admin = primary.admin();
    for _ in 0..200 {
        if sender_holds(&mut admin) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(sender_holds(&mut admin), "the standby's feedback arrived");
    // What the broker's role sees of the WAL sender: no database, no type.
    let seen: (Option<String>, Option<String>) = {
        let row = client
            .query_one(
                "SELECT datname::TEXT, backend_type FROM pg_catalog.pg_stat_activity \
                 WHERE usename = 'replicator'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(seen, (None, None));

    let erasure = fx.broker.erase_subject(granted.subject()).unwrap().unwrap();
    assert!(
        !erasure.purged,
        "purged while a standby's snapshot still sees the key"
    );
    assert_eq!(
        key_table_file(&mut client, &schema),
        (file_before, size_before),
        "not rewritten"
    );
    old.commit().unwrap();
    assert!(fx.broker.purge().unwrap());
    let (file_after, size_after) = key_table_file(&mut client, &schema);
    assert_ne!(file_after, file_before, "the table was rewritten");
    assert_eq!(size_after, 0);
    drop(standby);
}

// ---------------------------------------------------------------------------------------------
// 6. TLS
//
// A server of its own, started by the test: a throwaway CA and a server certificate made with
// rcgen, `ssl=on`, and a pg_hba.conf that accepts TCP connections over TLS only (`hostssl`) and
// plain ones over the Unix socket, through which the test asks the server how the store's own
// connection is encrypted (`pg_stat_ssl`). The server needs PostgreSQL's binaries, which
// scripts/with-postgres installs; the server it starts (DATABASE_URL) is the plaintext one the
// no-downgrade test below connects to.

/// The role every test cluster trusts.
const TLS_ROLE: &str = "consent";

/// A name only these tests use: connections reach it through `hostaddr=127.0.0.1`, so it is a
/// host that is not local (TLS under `Auto`), named by the server's certificate.
const TLS_REMOTE_NAME: &str = "db.test";

/// A throwaway CA and the server certificate it signed, for `localhost`, `127.0.0.1` and
/// [`TLS_REMOTE_NAME`], in PEM.
struct TestPki {
    ca: String,
    server_certificate: String,
    server_key: String,
}

fn test_pki() -> TestPki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "consent-broker test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut server = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        TLS_REMOTE_NAME.to_owned(),
    ])
    .unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server = server.signed_by(&server_key, &*ca).unwrap();
    TestPki {
        ca: ca.pem(),
        server_certificate: server.pem(),
        server_key: server_key.serialize_pem(),
    }
}

/// The newest PostgreSQL server binaries in the Debian layout (as scripts/with-postgres finds
/// them).
fn postgres_bindir() -> PathBuf {
    let mut found: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|tool| bin.join(tool).is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).expect(
        "the TLS test needs PostgreSQL's server binaries under /usr/lib/postgresql/*/bin: run it \
         with `scripts/with-postgres cargo test --features postgres --test it postgres -- \
         --include-ignored` (the script installs them)",
    )
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// As root, the unprivileged user the server runs as (initdb and postgres refuse root): the one
/// scripts/with-postgres would choose, created the same way if missing. `None` when not root.
fn server_os_user() -> Option<(String, u32, u32)> {
    if command_output("id", &["-u"]).as_deref() != Some("0") {
        return None;
    }
    let user = std::env::var("WITH_POSTGRES_OS_USER")
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| {
            if command_output("id", &["-u", "postgres"]).is_some() {
                "postgres".to_owned()
            } else {
                "consentbroker-pg".to_owned()
            }
        });
    if command_output("id", &["-u", &user]).is_none() {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&user)
            .status()
            .unwrap();
        assert!(status.success(), "useradd {user}");
    }
    let uid = command_output("id", &["-u", &user])
        .unwrap()
        .parse()
        .unwrap();
    let gid = command_output("id", &["-g", &user])
        .unwrap()
        .parse()
        .unwrap();
    Some((user, uid, gid))
}

/// A PostgreSQL cluster of a test's own on 127.0.0.1 (initialised, not yet started); stopped
/// (`pg_ctl stop -m immediate`) and its directory removed when dropped, whatever the test did.
pub(super) struct Cluster {
    bin: PathBuf,
    /// The server's OS user, when the test runs as root.
    os_user: Option<(String, u32, u32)>,
    pub(super) port: u16,
    /// The role the cluster was initialised with.
    pub(super) role: String,
    /// The server options of the last start (`-o`), for a restart.
    options: String,
    started: bool,
    /// Dropped after `drop` has stopped the server: removes the data, the keys and the socket.
    pub(super) dir: tempfile::TempDir,
}

impl Cluster {
    /// A new cluster's directory under /tmp (whatever TMPDIR says: the server's user must reach
    /// it, and the socket's path must stay short), owned by the server's user.
    pub(super) fn new(prefix: &str, role: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap();
        let cluster = Self {
            bin: postgres_bindir(),
            os_user: server_os_user(),
            port: 0,
            role: role.to_owned(),
            options: String::new(),
            started: false,
            dir,
        };
        cluster.own(cluster.dir.path());
        cluster
    }

    /// Gives `path` to the server's user (when the test runs as root).
    pub(super) fn own(&self, path: &std::path::Path) {
        if let Some((_, uid, gid)) = &self.os_user {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid)).unwrap();
        }
    }

    /// `initdb` with trust authentication for the role, and `hba` as `pg_hba.conf`.
    pub(super) fn init(&self, hba: &str) {
        let data = self.data();
        self.run(
            self.command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", &self.role, "--no-sync", "-E", "UTF8"])
                .arg("--locale=C"),
        );
        fs::write(data.join("pg_hba.conf"), hba).unwrap();
    }

    /// Starts the server on a free port with `extra` server options (after listening on
    /// 127.0.0.1 and putting the socket in the cluster's directory).
    pub(super) fn start(&mut self, extra: &str) {
        let dir = self.dir.path().display().to_string();
        for attempt in 1..=3 {
            self.port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            self.options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {dir} {extra}",
                self.port
            );
            if self.pg_ctl_start() {
                return;
            }
            // Another process may have taken the port between the probe and the start.
            self.stop();
            assert!(
                attempt < 3,
                "pg_ctl start failed; the server's log:\n{}",
                fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
            );
        }
    }

    /// Starts the stopped server again, on the same port with the same options (crash recovery
    /// runs first if it was stopped with an immediate shutdown).
    pub(super) fn restart(&mut self) {
        assert!(
            self.pg_ctl_start(),
            "pg_ctl start (again) failed; the server's log:\n{}",
            fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }

    fn pg_ctl_start(&mut self) -> bool {
        self.started = true;
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "-o", &self.options, "start"])
            .output()
            .unwrap()
            .status
            .success()
    }

    /// Runs `command` (one of [`Cluster::command`]'s) to its end, and asserts that it succeeded.
    pub(super) fn run(&self, command: &mut Command) {
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `tool` from the server's binaries, run as the server's user, in the cluster's directory.
    pub(super) fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut command = match &self.os_user {
            Some((user, _, _)) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    pub(super) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A plain client over the Unix socket.
    pub(super) fn admin(&self) -> Client {
        let config = format!(
            "host={} port={} user={} dbname=postgres",
            self.dir.path().display(),
            self.port,
            self.role
        );
        Client::connect(&config, NoTls).unwrap()
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`: no checkpoint,
    /// the next start recovers from the write-ahead log).
    pub(super) fn stop(&mut self) {
        if self.started {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
            self.started = false;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cluster with `ssl=on`, TLS-only over TCP.
struct TlsServer {
    cluster: Cluster,
}

impl TlsServer {
    fn start(pki: &TestPki) -> Self {
        let cluster = Cluster::new("cbt-pg-tls.", TLS_ROLE);
        // The certificate, and the key the server accepts only if its user owns it, mode 0600.
        let certificate = cluster.dir.path().join("server.crt");
        fs::write(&certificate, &pki.server_certificate).unwrap();
        cluster.own(&certificate);
        let key = cluster.dir.path().join("server.key");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key)
                .unwrap();
            file.write_all(pki.server_key.as_bytes()).unwrap();
        }
        cluster.own(&key);
        let server = Self { cluster };
        fs::write(server.ca_file(), &pki.ca).unwrap();
        // TCP over TLS only; the Unix socket (the test's own view of the server) plain.
        server
            .cluster
            .init("local all all trust\nhostssl all all 127.0.0.1/32 trust\n");
        let mut server = server;
        let dir = server.cluster.dir.path().display().to_string();
        server.cluster.start(&format!(
            "-c fsync=off -c ssl=on -c ssl_cert_file={dir}/server.crt \
             -c ssl_key_file={dir}/server.key"
        ));
        server
    }

    /// The throwaway CA's certificate, in PEM.
    fn ca_file(&self) -> PathBuf {
        self.cluster.dir.path().join("ca.pem")
    }

    /// A URL for `host` (any query string included), with a password that must never appear in
    /// an error message (the server trusts the role and ignores it).
    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://{TLS_ROLE}:s3cret-pw@{host}:{}/postgres{query}",
            self.cluster.port
        )
    }

    /// Whether each connection of `application_name` is encrypted, as the server sees it.
    fn encrypted(&self, application_name: &str) -> Vec<bool> {
        self.cluster
            .admin()
            .query(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.application_name = $1",
                &[&application_name],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }
}

fn tls_options(tls: PostgresTlsMode, root_certificates: Option<PathBuf>) -> PostgresOptions {
    PostgresOptions {
        tls,
        root_certificates,
        connect_timeout: StdDuration::from_secs(10),
        ..options(&unique_name("tls"))
    }
}

/// Opening fails `Unavailable`, with a message that contains `expected` and no password.
fn refused(url: &str, options: PostgresOptions, expected: &str) -> String {
    match PostgresStore::open_with(url, options.clone()) {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.contains(expected),
                "{url} with {options:?}: expected a message containing {expected:?}, got {message}"
            );
            assert!(
                !message.contains("s3cret-pw"),
                "a password leaked: {message}"
            );
            message
        }
        other => {
            panic!("{url} with {options:?}: expected Unavailable({expected} …), got {other:?}")
        }
    }
}

/// The store over TLS: with the CA it connects, the connection is encrypted (the server says so)
/// and the broker works on it; without the CA (the platform's roots), or for a name the
/// certificate does not carry, verification fails and says so; `Auto` uses TLS for a host that
/// is not local, plaintext for a local one; a TLS-only server refuses plaintext.
#[test]
#[ignore = "needs PostgreSQL's server binaries (it starts a TLS server of its own); .ci/run runs it via scripts/with-postgres"]
fn tls_connections_are_verified_and_required_for_remote_hosts() {
    use PostgresTlsMode::{Auto, Disable, Require};
    let pki = test_pki();
    let server = TlsServer::start(&pki);
    let ca = Some(server.ca_file());
    let remote = |query: &str| {
        server.url(
            TLS_REMOTE_NAME,
            &format!("?hostaddr=127.0.0.1{}", query.replace('?', "&")),
        )
    };

    // (a) Require with the CA: encrypted, and the broker works over it.
    for host in ["localhost", "127.0.0.1"] {
        let name = unique_name("tlsreq");
        let store = PostgresStore::open_with(
            &server.url(host, &format!("?application_name={name}")),
            tls_options(Require, ca.clone()),
        )
        .unwrap_or_else(|e| panic!("Require to {host} with the CA: {e:?}"));
        assert_eq!(
            server.encrypted(&name),
            [true],
            "the store's connection to {host}"
        );
        let fx = Fixture::with_store(store);
        let granted = fx.granted().id().clone();
        assert_eq!(
            fx.broker
                .authorise_access(&fx.access(&granted))
                .unwrap()
                .decision(),
            Decision::Permit
        );
        verify_log(&fx.broker.store(), None).unwrap();
    }

    // (b) No CA given: the platform's roots do not know the throwaway CA.
    let message = refused(
        &server.url("localhost", ""),
        tls_options(Require, None),
        "TLS verification failed",
    );
    assert!(message.contains("UnknownIssuer"), "{message}");
    // A CA file that is not there is refused before any connection.
    refused(
        &server.url("localhost", ""),
        tls_options(Require, Some(server.cluster.dir.path().join("missing.pem"))),
        "missing.pem",
    );

    // (c) The server's certificate does not name the host we asked for.
    let message = refused(
        &server.url("wrong.test", "?hostaddr=127.0.0.1"),
        tls_options(Require, ca.clone()),
        "TLS verification failed",
    );
    assert!(message.contains("wrong.test"), "{message}");

    // (d) Auto: a host that is not local gets TLS (verified: with the CA it works, without it
    // verification fails, also when the URL says `prefer`).
    let name = unique_name("tlsauto");
    let store = PostgresStore::open_with(
        &remote(&format!("?application_name={name}")),
        tls_options(Auto, ca.clone()),
    )
    .unwrap_or_else(|e| panic!("Auto to {TLS_REMOTE_NAME} with the CA: {e:?}"));
    assert_eq!(server.encrypted(&name), [true]);
    drop(store);
    refused(
        &remote(""),
        tls_options(Auto, None),
        "TLS verification failed",
    );
    refused(
        &remote("?sslmode=prefer"),
        tls_options(Auto, None),
        "TLS verification failed",
    );
    // ... and `sslmode=disable` in the URL does not turn it off for a remote host.
    refused(
        &remote("?sslmode=disable"),
        tls_options(Auto, ca.clone()),
        "PostgresTlsMode::Disable",
    );
    // A local host under Auto is plain (which this server refuses), unless the URL asks for TLS.
    for host in ["localhost", "127.0.0.1"] {
        refused(
            &server.url(host, ""),
            tls_options(Auto, ca.clone()),
            "no encryption",
        );
        let name = unique_name("tlslocal");
        let store = PostgresStore::open_with(
            &server.url(host, &format!("?sslmode=require&application_name={name}")),
            tls_options(Auto, ca.clone()),
        )
        .unwrap_or_else(|e| panic!("Auto with sslmode=require to {host}: {e:?}"));
        assert_eq!(server.encrypted(&name), [true]);
        drop(store);
    }

    // (e) Disable: the TLS-only server refuses it, remote name or local.
    for url in [remote(""), server.url("127.0.0.1", "")] {
        refused(&url, tls_options(Disable, ca.clone()), "no encryption");
    }
    // Contradictions between the options and the URL are refused before connecting.
    refused(
        &server.url("localhost", "?sslmode=require"),
        tls_options(Disable, ca.clone()),
        "contradicts",
    );
    refused(
        &server.url("localhost", "?sslmode=disable"),
        tls_options(Require, ca.clone()),
        "contradicts",
    );
    // libpq's verify-full and sslrootcert are not the client's: the error says where they go.
    refused(
        &server.url("localhost", "?sslmode=verify-full"),
        tls_options(Auto, ca.clone()),
        "PostgresOptions::root_certificates",
    );
}

/// A plaintext server (scripts/with-postgres's) reached under a name that is not local: `Auto`
/// and `Require` refuse it rather than fall back to plaintext, even with `sslmode=prefer`;
/// `Disable` says plaintext and gets it.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_remote_host_that_offers_no_tls_is_refused_not_downgraded() {
    let config: postgres::Config = database_url().parse().unwrap();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap();
    let url = |query: &str| {
        format!(
            "postgres://{TLS_ROLE}:s3cret-pw@{TLS_REMOTE_NAME}:{port}/{database}\
             ?hostaddr=127.0.0.1{query}"
        )
    };
    // Some CA to trust: the refusal must come from the server offering no TLS.
    let ca = tempfile::NamedTempFile::new().unwrap();
    fs::write(ca.path(), test_pki().ca).unwrap();
    for (query, tls) in [
        ("", PostgresTlsMode::Auto),
        ("&sslmode=prefer", PostgresTlsMode::Auto),
        ("", PostgresTlsMode::Require),
    ] {
        refused(
            &url(query),
            tls_options(tls, Some(ca.path().to_owned())),
            "server does not support TLS",
        );
    }
    let store = PostgresStore::open_with(
        &url(""),
        PostgresOptions {
            tls: PostgresTlsMode::Disable,
            ..options(&unique_name("plain"))
        },
    )
    .unwrap();
    drop(store);
}

/// A schema at version 8, with that version's commit function (here a stand-in of the same
/// signature that refuses every commit), is brought to this build's version on opening: the
/// function is replaced, with its pinned settings, and decisions land again. A check of no kind
/// fails the whole call; it never passes.
#[test]
#[ignore = "needs a PostgreSQL server (DATABASE_URL); .ci/run runs it via scripts/with-postgres"]
fn a_version_8_schema_gets_this_builds_commit_function() {
    let url = database_url();
    let schema = unique_name("v8to9");
    let fx = Fixture::with_store(open(&url, &schema));
    let access = fx.access(fx.granted().id());
    let mut client = raw_client(&url);
    let q = quote(&schema);
    client
        .batch_execute(&format!(
            "CREATE OR REPLACE FUNCTION {q}.consent_broker_commit(commits INTEGER, \
             check_commit INTEGER[], check_kind TEXT[], check_id TEXT[], check_arg TEXT[], \
             check_num BIGINT[], check_blob BYTEA[], change_commit INTEGER[], \
             change_kind TEXT[], change_id TEXT[], change_arg TEXT[], change_num BIGINT[], \
             change_num2 BIGINT[], entry_commit INTEGER[], entry_tail BYTEA[]) \
             RETURNS BIGINT[] LANGUAGE sql \
             AS $$ SELECT pg_catalog.array_fill(-1::BIGINT, ARRAY[commits]) $$; \
             ALTER TABLE {q}.bank_feed DROP COLUMN root; \
             UPDATE {q}.consent_broker_meta SET value = 8 WHERE key = 'schema_version'"
        ))
        .unwrap();
    let before = fx.audit_len();
    assert!(
        !matches!(
            fx.broker.authorise_access(&access),
            Ok(AccessOutcome::Permitted(_))
        ),
        "the stand-in refuses every commit"
    );
    assert_eq!(fx.audit_len(), before);

    let broker = Broker::builder(id("broker"), open(&url, &schema))
        .clock(fx.clock.clone())
        .keys(keys())
        .build()
        .unwrap();
    let version: i64 = client
        .query_one(
            &format!("SELECT value FROM {q}.consent_broker_meta WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, PostgresStore::SCHEMA_VERSION);
    let settings: Vec<String> = client
        .query_one(
            "SELECT proconfig FROM pg_catalog.pg_proc \
             WHERE proname = 'consent_broker_commit' AND pronamespace = $1::TEXT::regnamespace",
            &[&q],
        )
        .unwrap()
        .get(0);
    for setting in [
        "search_path=",
        "plan_cache_mode=force_generic_plan",
        "enable_seqscan=off",
    ] {
        assert!(
            settings.iter().any(|s| s.starts_with(setting)),
            "{setting} in {settings:?}"
        );
    }
    assert_eq!(
        broker.authorise_access(&access).unwrap().decision(),
        Decision::Permit
    );
    assert!(fx.audit_len() > before);

    let len = fx.audit_len();
    // The session says this build's schema version, as the store's own sessions do.
    says_this_builds_version(&mut client);
    let error = client
        .query_one(
            &format!(
                "SELECT {q}.consent_broker_commit(1, ARRAY[0], ARRAY[NULL::TEXT], ARRAY['x'], \
                 ARRAY[NULL::TEXT], ARRAY[1::BIGINT], ARRAY[NULL::BYTEA], '{{}}'::INTEGER[], \
                 '{{}}'::TEXT[], '{{}}'::TEXT[], '{{}}'::TEXT[], '{{}}'::BIGINT[], \
                 '{{}}'::BIGINT[], ARRAY[0], ARRAY['\\x7d'::BYTEA])"
            ),
            &[],
        )
        .expect_err("a check of no kind");
    let message = error.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("unknown check")),
        "{error:?}"
    );
    assert_eq!(fx.audit_len(), len);
}

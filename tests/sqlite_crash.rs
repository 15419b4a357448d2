//! Crash safety of the SQLite store, and several brokers (processes and connections) on one file.
//!
//! The multi-process tests re-execute this test binary: the parent runs itself with
//! `--exact <child test> --nocapture --test-threads=1` and the environment variables below, and
//! the child "test" does the work. In a normal run those variables are absent and the child tests
//! return at once.
//!
//! Child protocol (one line per event, on stdout, flushed):
//! - `READY` once the child's broker is built;
//! - `ACK <audit_seq> <permit|deny> <present|unattended>` after every `authorise_access` that
//!   returned `Ok` (printed only after the call returned, so an ACK means a committed decision);
//! - `REQ` after every `request_consent` that returned `Ok`;
//! - `ERR <what>` for every call that returned `Err`;
//! - `DONE <count>` at the end of a bounded child: calls that returned `Ok` (building the broker
//!   records nothing: it starts with the keys the database already publishes).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail by panicking"
)]

/// The integration tests' shared support (this file is its own binary: it re-executes itself).
#[path = "it/support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration as StdDuration, Instant};

use consent_broker::*;
use support::*;
use time::{Date, Duration};

const CHILD_DB: &str = "CONSENT_BROKER_CHILD_DB";
const CHILD_CONSENT: &str = "CONSENT_BROKER_CHILD_CONSENT";
/// Minutes after [`START`] at which the child's manual clock starts.
const CHILD_OFFSET_MINUTES: &str = "CONSENT_BROKER_CHILD_OFFSET_MINUTES";
/// Number of operations of a bounded child.
const CHILD_OPS: &str = "CONSENT_BROKER_CHILD_OPS";
/// A label distinguishing the two concurrent children (used in their ids and output).
const CHILD_LABEL: &str = "CONSENT_BROKER_CHILD_LABEL";
/// A file whose appearance starts the concurrent children at once.
const CHILD_GO: &str = "CONSENT_BROKER_CHILD_GO";
const KILLS: &str = "CONSENT_BROKER_CRASH_KILLS";

/// The default holder policy's unattended daily limit.
const DAILY_LIMIT: u64 = 4;

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// How many times a crash test kills its child (env `CONSENT_BROKER_CRASH_KILLS`, default 10).
fn kills() -> u64 {
    std::env::var(KILLS)
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(10)
}

/// Collects what the child prints until `deadline` (panics if it exits on its own).
fn read_until(
    lines: &mpsc::Receiver<String>,
    deadline: Instant,
    seen: &mut Vec<String>,
    kill: u64,
) {
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("kill {kill}: the child exited on its own: {seen:?}")
            }
        }
    }
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn seeded(seed: u64) -> u64 {
    let mut state = seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..4 {
        xorshift(&mut state);
    }
    state
}

/// A broker on an existing database file, with a manual clock `offset_minutes` after START and
/// random consent ids (several processes insert consents into one file).
fn child_broker(path: &str, offset_minutes: i64) -> (Broker<SqliteStore>, Arc<ManualClock>) {
    let store = SqliteStore::open(path).expect("child: open the database");
    let clock = Arc::new(ManualClock::new(START + Duration::minutes(offset_minutes)));
    let broker = Broker::builder(id("broker"), store)
        .clock(clock.clone())
        .keys(keys())
        .build()
        .expect("child: build the broker");
    (broker, clock)
}

/// The `j`-th access of a child's mix: both presences, permitted and denied (an account outside
/// the grant, a scope the holder does not share).
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
    let scope = if j % 5 == 4 {
        Scope::Transactions
    } else {
        Scope::Balance
    };
    AccessRequest {
        consent: consent.clone(),
        platform: id("chat"),
        scope: scope.into(),
        purpose: Purpose::FraudProtection.into(),
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

fn ack_line(outcome: &AccessOutcome, presence: Presence) -> String {
    let kind = match outcome {
        AccessOutcome::Permitted(_) => "permit",
        AccessOutcome::Denied(_) => "deny",
    };
    format!(
        "ACK {} {kind} {}",
        outcome.audit_seq(),
        presence_word(presence)
    )
}

fn say(out: &mut impl Write, line: &str) {
    // A child whose parent is gone (the pipe is closed) has nobody to tell: it stops.
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(3);
    }
}

/// An acknowledged decision, as parsed from an `ACK` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ack {
    seq: u64,
    kind: AuditKind,
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
    let presence = match words.next()? {
        "present" => Presence::SubjectPresent,
        "unattended" => Presence::Unattended,
        _ => return None,
    };
    Some(Ack {
        seq,
        kind,
        presence,
    })
}

/// A child process that is killed (and reaped) if the parent's test fails while it runs.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child still owned")
    }

    fn kill_and_wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().expect("child still owned");
        // SIGKILL on Unix. It may already have exited; then kill reports an error we ignore.
        let _ = child.kill();
        child.wait().expect("reap the child")
    }

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

/// Spawns this test binary running `test` with `env`; its stdout is read line by line by a
/// thread that forwards every line (until EOF) to the returned receiver.
fn spawn_child(
    test: &str,
    env: &[(&str, String)],
) -> (ChildGuard, mpsc::Receiver<String>, thread::JoinHandle<()>) {
    let exe = std::env::current_exe().expect("current test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut guard = ChildGuard(Some(command.spawn().expect("spawn the child")));
    let stdout = guard.child().stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (guard, rx, reader)
}

/// The checks every state of the file must pass: it opens, its integrity check is `ok`, the log
/// is gap-free and parses, every ACK is in it with the same kind and presence, and the usage
/// counters of `consent` equal the unattended permits of each day. Returns the log.
fn verify(path: &Path, consent: &ConsentId, acks: &[Ack]) -> Vec<AuditEntry> {
    let store = SqliteStore::open(path).expect("the database opens after the crash");
    assert_eq!(store.schema_version().unwrap(), SqliteStore::SCHEMA_VERSION);
    let len = store.audit_len().unwrap();
    // Every entry parses (a row that did not would be `Err(Corrupt)` here).
    let entries = store
        .audit_entries(0..len)
        .expect("every audit entry parses");
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..len).collect::<Vec<_>>(), "the log is gap-free");
    // Every stored Merkle node is the hash of the entries below it, whichever writer (process,
    // connection, batch) appended them.
    verify_log(&store, None).expect("the log and its Merkle nodes verify");
    for ack in acks {
        let entry = entries
            .get(usize::try_from(ack.seq).unwrap())
            .unwrap_or_else(|| panic!("acknowledged entry {ack:?} is missing (log length {len})"));
        assert_eq!(entry.kind(), ack.kind, "kind of acknowledged {ack:?}");
        assert_eq!(
            entry.event.presence(),
            Some(ack.presence),
            "presence of acknowledged {ack:?}"
        );
        assert_eq!(entry.consent(), Some(consent));
    }
    let permits = unattended_permits(&entries, consent);
    let counters = usage_rows(path, consent);
    assert_eq!(
        counters, permits,
        "usage counters per day == unattended permits per day"
    );
    for (day, &count) in &permits {
        assert!(count <= DAILY_LIMIT, "{count} unattended permits on {day}");
        assert_eq!(
            u64::from(store.usage(consent, *day).unwrap().unattended_today),
            count
        );
    }
    drop(store);
    let connection = rusqlite::Connection::open(path).unwrap();
    let check: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok", "PRAGMA integrity_check");
    entries
}

/// Unattended `AccessPermitted` entries of `consent`, per UTC day.
fn unattended_permits(entries: &[AuditEntry], consent: &ConsentId) -> BTreeMap<Date, u64> {
    let mut per_day = BTreeMap::new();
    for entry in entries {
        if entry.kind() == AuditKind::AccessPermitted
            && entry.event.presence() == Some(Presence::Unattended)
            && entry.consent() == Some(consent)
        {
            *per_day.entry(entry.at.date()).or_insert(0) += 1;
        }
    }
    per_day
}

/// Every usage row of `consent`, read with SQLite directly (so days without permits but with a
/// counter would show up too).
fn usage_rows(path: &Path, consent: &ConsentId) -> BTreeMap<Date, u64> {
    let connection = rusqlite::Connection::open(path).unwrap();
    let mut statement = connection
        .prepare("SELECT day, unattended FROM usage WHERE consent = ?1")
        .unwrap();
    let rows = statement
        .query_map([consent.as_str()], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .unwrap();
    let format = time::macros::format_description!("[year]-[month]-[day]");
    rows.map(|row| {
        let (day, count) = row.unwrap();
        (
            Date::parse(&day, format).unwrap(),
            u64::try_from(count).unwrap(),
        )
    })
    .collect()
}

/// A database with bank + platform registered and one live consent of alice; returns its id.
fn database_with_grant(path: &Path) -> ConsentId {
    let store = Arc::new(SqliteStore::open(path).unwrap());
    let fx = Fixture::with_store(store);
    fx.granted().id().clone()
}

// ---------------------------------------------------------------------------------------------
// 1. Crash test

/// What a deciding child is told: the database, the consent, and its clock's offset; `None` in
/// a normal run (not a child).
fn deciding_child() -> Option<(String, ConsentId, i64)> {
    let path = std::env::var(CHILD_DB).ok()?;
    let consent: ConsentId = id(&std::env::var(CHILD_CONSENT).unwrap());
    let offset: i64 = std::env::var(CHILD_OFFSET_MINUTES)
        .unwrap()
        .parse()
        .unwrap();
    Some((path, consent, offset))
}

/// Child of [`kill_9_loses_no_acknowledged_decision`]. Passes trivially (returns at once) unless
/// `CONSENT_BROKER_CHILD_DB` is set: then it opens that database and decides accesses forever,
/// acknowledging each on stdout, until the parent kills it.
#[test]
fn child_decides_until_killed() {
    let Some((path, consent, offset)) = deciding_child() else {
        return;
    };
    let (broker, clock) = child_broker(&path, offset);
    let mut out = std::io::stdout().lock();
    say(&mut out, "\nREADY");
    for j in 0u64.. {
        let access = mixed_access(&consent, j);
        match broker.authorise_access(&access) {
            Ok(outcome) => say(&mut out, &ack_line(&outcome, access.presence)),
            Err(error) => say(&mut out, &format!("ERR access {j}: {error:?}")),
        }
        // Spread the decisions over several days, within the grant's 90 days.
        clock.advance(Duration::minutes(17));
    }
}

/// The parent: kills a child deciding accesses on the file at a random moment, K times (env
/// `CONSENT_BROKER_CRASH_KILLS`, default 10), and checks after every kill that the file opens,
/// passes `PRAGMA integrity_check`, keeps a gap-free parsable log holding every acknowledged
/// decision, and has usage counters exactly equal to the unattended permits of each day.
#[test]
fn kill_9_loses_no_acknowledged_decision() {
    if std::env::var(CHILD_DB).is_ok() {
        return;
    }
    kill_repeatedly("child_decides_until_killed", "crash test");
}

/// Kills `child` (a test of this binary deciding on the file) at a random moment, `kills()`
/// times, and checks the file after every kill. Returns the last `STATS` line each child printed.
fn kill_repeatedly(child_test: &str, label: &str) -> Vec<String> {
    let kills = kills();
    let mut stats = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite");
    let consent = database_with_grant(&path);
    let started = Instant::now();
    let mut acked_total = 0usize;
    let mut early_kills = 0u64;
    let mut entries = 0usize;
    for i in 0..kills {
        let mut rng = seeded(i);
        // Every tenth child is killed while it may still be opening, migrating or publishing
        // its key; the others a random 5–60 ms after they are ready, amid commits.
        let early = i % 10 == 9;
        let wait_ms = if early {
            xorshift(&mut rng) % 10
        } else {
            5 + xorshift(&mut rng) % 56
        };
        let offset = (i * 613) % (80 * 24 * 60);
        let env = [
            (CHILD_DB, path.display().to_string()),
            (CHILD_CONSENT, consent.to_string()),
            (CHILD_OFFSET_MINUTES, offset.to_string()),
        ];
        let (mut child, lines, reader) = spawn_child(child_test, &env);
        let mut seen = Vec::new();
        if !early {
            let ready_by = Instant::now() + StdDuration::from_secs(30);
            loop {
                let left = ready_by.saturating_duration_since(Instant::now());
                let line = lines
                    .recv_timeout(left)
                    .unwrap_or_else(|e| panic!("kill {i}: the child never got ready: {e}"));
                let ready = line == "READY";
                seen.push(line);
                if ready {
                    break;
                }
            }
        }
        let deadline = Instant::now() + StdDuration::from_millis(wait_ms);
        read_until(&lines, deadline, &mut seen, i);
        let status = child.kill_and_wait();
        // Whatever the child printed before it died counts as acknowledged.
        reader.join().unwrap();
        seen.extend(lines.try_iter());
        let errors: Vec<&String> = seen.iter().filter(|l| l.starts_with("ERR")).collect();
        assert!(
            errors.is_empty(),
            "kill {i}: the child hit errors: {errors:?}"
        );
        let acks: Vec<Ack> = seen.iter().filter_map(|l| parse_ack(l)).collect();
        assert_eq!(
            acks.len(),
            seen.iter().filter(|l| l.starts_with("ACK")).count(),
            "kill {i}: unparsable ACK lines in {seen:?}"
        );
        if early {
            early_kills += 1;
        } else {
            assert!(!status.success(), "kill {i}: the child was not killed");
        }
        acked_total += acks.len();
        entries = verify(&path, &consent, &acks).len();
        if let Some(last) = seen.iter().rev().find(|l| l.starts_with("STATS ")) {
            stats.push(last.clone());
        }
    }
    let final_entries = verify(&path, &consent, &[]);
    let permits: u64 = unattended_permits(&final_entries, &consent).values().sum();
    eprintln!(
        "{label}: {kills} kills ({early_kills} early), {acked_total} acknowledged commits, \
         {entries} audit entries, {permits} unattended permits, {:.1?}",
        started.elapsed()
    );
    if kills >= 10 {
        assert!(acked_total > 0, "no child ever acknowledged a decision");
    }
    stats
}

/// Threads of the group-commit crash child: each decides on one broker at once, so their
/// commits share transactions.
const CHILD_THREADS: u64 = 8;

/// Child of [`kill_9_loses_no_acknowledged_group_commit`]. Passes trivially unless
/// `CONSENT_BROKER_CHILD_DB` is set: then eight threads decide accesses on one broker until the
/// parent kills the process, each acknowledging every decision once its call returned; the first
/// thread runs the whole mix (its unattended permits count usage), the others ask with the
/// subject present. Every 5 decisions the first thread prints `STATS <commits> <transactions>
/// <largest batch>` from the store.
#[test]
fn child_decides_in_threads_until_killed() {
    let Some((path, consent, offset)) = deciding_child() else {
        return;
    };
    let store = Arc::new(SqliteStore::open(&path).expect("child: open the database"));
    let clock = Arc::new(ManualClock::new(START + Duration::minutes(offset)));
    let broker = Broker::builder(id("broker"), store.clone())
        .clock(clock.clone())
        .keys(keys())
        .build()
        .expect("child: build the broker");
    say(&mut std::io::stdout().lock(), "\nREADY");
    thread::scope(|scope| {
        for t in 0..CHILD_THREADS {
            let (broker, clock, store, consent) = (&broker, &clock, &store, &consent);
            scope.spawn(move || {
                for j in 0u64.. {
                    let mut access = mixed_access(consent, j);
                    if t > 0 {
                        access.presence = Presence::SubjectPresent;
                    }
                    let line = match broker.authorise_access(&access) {
                        Ok(outcome) => ack_line(&outcome, access.presence),
                        Err(error) => format!("ERR access {t}/{j}: {error:?}"),
                    };
                    let mut out = std::io::stdout().lock();
                    say(&mut out, &line);
                    if t == 0 {
                        clock.advance(Duration::minutes(17));
                        if j % 5 == 4 {
                            let stats = store.commit_stats();
                            say(
                                &mut out,
                                &format!(
                                    "STATS {} {} {}",
                                    stats.commits, stats.transactions, stats.largest_batch
                                ),
                            );
                        }
                    }
                }
            });
        }
    });
}

/// The crash test with group commit: a child whose eight threads' decisions share transactions
/// is killed at a random moment, `CONSENT_BROKER_CRASH_KILLS` times (100 in CI); after every kill
/// every acknowledged decision is in the file with its kind and presence, the log is gap-free and
/// parses, the usage counters equal the unattended permits, and the file passes its integrity
/// check. The children's own counters show that commits were grouped (some transaction carried
/// several), so the batches really were what was killed.
#[test]
fn kill_9_loses_no_acknowledged_group_commit() {
    if std::env::var(CHILD_DB).is_ok() {
        return;
    }
    let stats = kill_repeatedly(
        "child_decides_in_threads_until_killed",
        "group-commit crash test",
    );
    let (mut commits, mut transactions, mut largest) = (0u64, 0u64, 0u64);
    for line in &stats {
        let numbers: Vec<u64> = line
            .split(' ')
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect();
        commits += numbers[0];
        transactions += numbers[1];
        largest = largest.max(numbers[2]);
    }
    eprintln!(
        "group-commit crash test: {commits} commits in {transactions} transactions reported, \
         largest {largest}"
    );
    if kills() >= 10 {
        assert!(
            largest >= 2 && transactions < commits,
            "the children's commits were never grouped: {stats:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Two brokers on one file

const OPS_PER_CHILD: u64 = 300;

/// One broker's share of the concurrent workload: `ops` operations on `consent`, mostly
/// accesses (both presences, permitted and denied), every 50th a new consent request. Returns
/// the number of calls that returned `Ok` and a description of every error.
fn mixed_workload(
    broker: &Broker<impl Store>,
    consent: &ConsentId,
    ops: u64,
    label: &str,
    mut on_ok: impl FnMut(String),
) -> (u64, Vec<String>) {
    let mut ok = 0;
    let mut errors = Vec::new();
    for j in 0..ops {
        if j % 50 == 25 {
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
                    ok += 1;
                    on_ok("REQ".into());
                }
                Err(error) => errors.push(format!("request {j}: {error:?}")),
            }
        } else {
            let access = mixed_access(consent, j);
            match broker.authorise_access(&access) {
                Ok(outcome) => {
                    ok += 1;
                    on_ok(ack_line(&outcome, access.presence));
                }
                Err(error) => errors.push(format!("access {j}: {error:?}")),
            }
        }
    }
    (ok, errors)
}

/// Child of [`two_processes_share_one_file`]. Passes trivially (returns at once) unless
/// `CONSENT_BROKER_CHILD_DB` is set: then it runs `CONSENT_BROKER_CHILD_OPS` operations on that
/// database and prints `DONE <count>`.
#[test]
fn child_runs_mixed_workload() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let consent: ConsentId = id(&std::env::var(CHILD_CONSENT).unwrap());
    let ops: u64 = std::env::var(CHILD_OPS).unwrap().parse().unwrap();
    let label = std::env::var(CHILD_LABEL).unwrap();
    // Both children decide on the same day, so they compete for the same 4 unattended slots.
    let go = PathBuf::from(std::env::var(CHILD_GO).unwrap());
    let (broker, _clock) = child_broker(&path, 60);
    let mut out = std::io::stdout().lock();
    say(&mut out, "\nREADY");
    let waiting = Instant::now();
    while !go.exists() {
        assert!(
            waiting.elapsed() < StdDuration::from_secs(60),
            "no go signal"
        );
        thread::sleep(StdDuration::from_millis(1));
    }
    let (ok, errors) = {
        let out = &mut out;
        mixed_workload(&broker, &consent, ops, &label, |line| say(out, &line))
    };
    for error in &errors {
        say(&mut out, &format!("ERR {error}"));
    }
    // The build recorded one entry (the signing key's activation): count it as a call.
    say(&mut out, &format!("DONE {ok}"));
}

/// Checks a log that concurrent brokers wrote to: gap-free and parsable, unattended permits on
/// the consent's day within the limit and equal to the usage counter.
fn verify_concurrent(path: &Path, consent: &ConsentId) -> Vec<AuditEntry> {
    let entries = verify(path, consent, &[]);
    let day = (START + Duration::minutes(60)).date();
    let permits = unattended_permits(&entries, consent);
    let today = permits.get(&day).copied().unwrap_or(0);
    assert!(today <= DAILY_LIMIT);
    assert_eq!(
        today, DAILY_LIMIT,
        "the slots were all used (with {OPS_PER_CHILD} ops)"
    );
    entries
}

/// Two processes, each with its own broker on the same file, run mixed workloads at once: no
/// call fails (no `Busy` within the 5 s timeout, no contention), every successful call left
/// exactly one audit entry, the log is gap-free, and the daily limit held.
#[test]
fn two_processes_share_one_file() {
    if std::env::var(CHILD_DB).is_ok() {
        return;
    }
    // Whether the two children's commits interleave is up to the scheduler (on a loaded 2-core
    // machine one child can finish before the other is scheduled); every run checks correctness,
    // and the test needs at least one run in which they did interleave.
    let overlapped = (0..5).any(|_| run_two_processes());
    assert!(
        overlapped,
        "in 5 runs the two children never committed concurrently"
    );
}

/// One run of two child processes on one file; checks everything and says whether the two
/// children's commits interleaved.
fn run_two_processes() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sqlite");
    let consent = database_with_grant(&path);
    let before = SqliteStore::open(&path).unwrap().audit_len().unwrap();
    let go = dir.path().join("go");
    let started = Instant::now();
    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|label| {
            let env = [
                (CHILD_DB, path.display().to_string()),
                (CHILD_CONSENT, consent.to_string()),
                (CHILD_OPS, OPS_PER_CHILD.to_string()),
                (CHILD_LABEL, label.to_string()),
                (CHILD_GO, go.display().to_string()),
            ];
            spawn_child("child_runs_mixed_workload", &env)
        })
        .collect();
    // Both brokers are built before either starts its workload.
    let mut early_lines: Vec<Vec<String>> = Vec::new();
    for (_, lines, _) in &children {
        let mut seen = Vec::new();
        loop {
            let line = lines
                .recv_timeout(StdDuration::from_secs(60))
                .expect("the child got ready");
            let ready = line == "READY";
            seen.push(line);
            if ready {
                break;
            }
        }
        early_lines.push(seen);
    }
    fs::write(&go, b"go").unwrap();
    let mut done_total = 0u64;
    let mut acks = Vec::new();
    let mut seq_ranges = Vec::new();
    let mut errors = Vec::new();
    for ((mut child, lines, reader), mut seen) in children.into_iter().zip(early_lines) {
        let status = child.wait();
        reader.join().unwrap();
        seen.extend(lines.try_iter());
        let lines = seen;
        assert!(status.success(), "child failed: {status:?} {lines:?}");
        let dones: Vec<u64> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("DONE ")?.parse().ok())
            .collect();
        assert_eq!(dones.len(), 1, "one DONE line: {lines:?}");
        done_total += dones[0];
        errors.extend(lines.iter().filter(|l| l.starts_with("ERR")).cloned());
        let own: Vec<Ack> = lines.iter().filter_map(|l| parse_ack(l)).collect();
        let seqs = own.iter().map(|a| a.seq);
        seq_ranges.push((seqs.clone().min().unwrap(), seqs.max().unwrap()));
        acks.extend(own);
    }
    // The workloads overlapped: each child committed while the other was committing.
    let [(a_first, a_last), (b_first, b_last)] = seq_ranges[..] else {
        unreachable!()
    };
    let interleaved = a_first < b_last && b_first < a_last;
    assert!(errors.is_empty(), "the children hit errors: {errors:?}");
    let entries = verify_concurrent(&path, &consent);
    let after = u64::try_from(entries.len()).unwrap();
    assert_eq!(
        after - before,
        done_total,
        "one audit entry per successful call"
    );
    // Every acknowledged decision is in the log, at its own sequence number.
    let seqs: BTreeSet<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs.len(), acks.len(), "two decisions acknowledged one seq");
    verify(&path, &consent, &acks);
    let requested = entries
        .iter()
        .filter(|e| e.kind() == AuditKind::ConsentRequested)
        .count();
    assert_eq!(
        requested,
        1 + 2 * 6,
        "the fixture's request and 6 per child"
    );
    eprintln!(
        "two processes: {done_total} successful calls, {} entries, {:.1?}, interleaved: \
         {interleaved}",
        entries.len(),
        started.elapsed()
    );
    interleaved
}

/// The same in one process: two `SqliteStore`s (two connections) on one file, each behind its
/// own broker, used from four threads at once.
#[test]
fn two_connections_four_threads_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("threads.sqlite");
    let consent = database_with_grant(&path);
    let before = SqliteStore::open(&path).unwrap().audit_len().unwrap();
    let clock = Arc::new(ManualClock::new(START + Duration::minutes(60)));
    let brokers: Vec<Broker<SqliteStore>> = (0..2)
        .map(|_| {
            Broker::builder(id("broker"), SqliteStore::open(&path).unwrap())
                .clock(clock.clone())
                .keys(keys())
                .build()
                .unwrap()
        })
        .collect();
    let results: Vec<(u64, Vec<String>)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let broker = &brokers[t % 2];
                let consent = &consent;
                scope.spawn(move || {
                    mixed_workload(broker, consent, OPS_PER_CHILD / 2, &format!("t{t}"), |_| {})
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let errors: Vec<&String> = results.iter().flat_map(|(_, e)| e).collect();
    assert!(errors.is_empty(), "the threads hit errors: {errors:?}");
    // Building the brokers recorded nothing: they start with the keys the file publishes.
    let ok: u64 = results.iter().map(|(ok, _)| ok).sum::<u64>();
    drop(brokers);
    let entries = verify_concurrent(&path, &consent);
    assert_eq!(u64::try_from(entries.len()).unwrap() - before, ok);
}

// ---------------------------------------------------------------------------------------------
// 4. A crash during erasure

const ERASE_DB: &str = "CONSENT_BROKER_CHILD_ERASE_DB";
const ERASE_FIRST: &str = "CONSENT_BROKER_CHILD_ERASE_FIRST";
/// Consents each subject of the erasure child gets before it is erased.
const CONSENTS_PER_SUBJECT: usize = 3;

fn erasable(k: u64) -> SubjectId {
    id(&format!("erase-me-{k:05}-x7q"))
}

/// Child of [`kill_9_during_erasure_leaves_each_subject_erased_or_intact`]: gives subject after
/// subject three granted consents (printing `READY k`), then erases it (printing `ERASED k`),
/// until it is killed.
#[test]
fn child_erases_until_killed() {
    let Ok(path) = std::env::var(ERASE_DB) else {
        return;
    };
    let first: u64 = std::env::var(ERASE_FIRST).unwrap().parse().unwrap();
    // Random consent and attestation ids: every child adds to the same file.
    let fx = Fixture::with_builder(SqliteStore::open(&path).expect("child: open"), |b| {
        b.ids(Arc::new(RandomIds::new()))
    });
    let random = SystemRandom::new();
    let mut out = std::io::stdout().lock();
    for k in first.. {
        let subject = erasable(k);
        for _ in 0..CONSENTS_PER_SUBJECT {
            let request = fx
                .broker
                .request_consent(ConsentRequestDraft {
                    subject: subject.clone(),
                    ..fx.draft()
                })
                .expect("child: request");
            let attestation = fx
                .bank_signer()
                .sign(
                    &fx.full_statement(&request),
                    fx.broker.id(),
                    fx.broker.now(),
                    &random,
                )
                .expect("child: sign");
            fx.broker
                .approve(request.id(), &attestation)
                .expect("child: approve");
        }
        say(&mut out, &format!("READY {k}"));
        match fx.broker.erase_subject(&subject) {
            Ok(Some(_)) => say(&mut out, &format!("ERASED {k}")),
            other => say(&mut out, &format!("ERR erase {k}: {other:?}")),
        }
    }
}

/// Kills a child that erases subjects at random moments, K times (env
/// `CONSENT_BROKER_CRASH_KILLS`, default 10), and checks after each kill that every subject the
/// child had finished setting up is either wholly erased (no key, no consent, and once the
/// store is purged no byte of its id in any file) or wholly intact (its key and all its
/// consents), that every subject the child reported erased is erased, and that the log verifies.
#[test]
fn kill_9_during_erasure_leaves_each_subject_erased_or_intact() {
    if std::env::var(ERASE_DB).is_ok() || std::env::var(CHILD_DB).is_ok() {
        return;
    }
    let kills = kills();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.sqlite");
    drop(Fixture::with_store(SqliteStore::open(&path).unwrap()));
    let mut next = 0u64;
    let (mut erased_seen, mut intact_seen) = (0u64, 0u64);
    for i in 0..kills {
        let mut rng = seeded(i ^ 0xE4A5E);
        let wait_ms = 5 + xorshift(&mut rng) % 80;
        let env = [
            (ERASE_DB, path.display().to_string()),
            (ERASE_FIRST, next.to_string()),
        ];
        let (mut child, lines, reader) = spawn_child("child_erases_until_killed", &env);
        let deadline = Instant::now() + StdDuration::from_millis(wait_ms);
        let mut seen = Vec::new();
        read_until(&lines, deadline, &mut seen, i);
        child.kill_and_wait();
        reader.join().unwrap();
        seen.extend(lines.try_iter());
        let errors: Vec<&String> = seen.iter().filter(|l| l.starts_with("ERR")).collect();
        assert!(errors.is_empty(), "kill {i}: {errors:?}");
        let number = |prefix: &str| -> BTreeSet<u64> {
            seen.iter()
                .filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
                .collect()
        };
        let (ready, erased) = (number("READY "), number("ERASED "));

        let fx = Fixture::with_store(SqliteStore::open(&path).expect("opens after the crash"));
        verify_log(&fx.broker.store(), None).expect("the log verifies after the crash");
        fx.broker.purge().unwrap();
        let files: Vec<Vec<u8>> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| fs::read(e.unwrap().path()).unwrap())
            .collect();
        for &k in &ready {
            let subject = erasable(k);
            let key = fx.broker.pseudonym_of(&subject).unwrap();
            let consents = fx.broker.consents_of(&subject).unwrap().len();
            let on_disk = files.iter().any(|bytes| {
                bytes
                    .windows(subject.as_str().len())
                    .any(|w| w == subject.as_str().as_bytes())
            });
            match (key.is_some(), consents, on_disk) {
                (false, 0, false) => erased_seen += 1,
                (true, CONSENTS_PER_SUBJECT, true) => {
                    assert!(
                        !erased.contains(&k),
                        "kill {i}: subject {k} was reported erased but is intact"
                    );
                    intact_seen += 1;
                }
                other => panic!(
                    "kill {i}: subject {k} is half erased (key, consents, bytes on disk): \
                     {other:?}"
                ),
            }
        }
        // The next child starts past every subject this one may have begun.
        next = ready.last().map_or(next, |k| k + 1) + 1;
    }
    eprintln!(
        "erasure crash test: {kills} kills, {erased_seen} subject states found erased, \
         {intact_seen} intact"
    );
    if kills >= 10 {
        assert!(erased_seen > 0, "no child ever erased a subject");
    }
}

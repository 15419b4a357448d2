//! A bounded load on loopback: a fixed number of concurrent platform clients for a fixed time
//! against the bank's gate on a SQLite ledger, then a graceful shutdown in the middle of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration as StdDuration, Instant};

use consent_broker::*;

use super::World;

/// Concurrent clients, each with a consent (an approval at the bank) of its own.
const CLIENTS: usize = 6;
/// How long they run before the shutdown starts.
const LOADED: StdDuration = StdDuration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_nothing_is_served_unjournalled_and_a_graceful_shutdown_loses_no_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.sqlite");
    let settings = GateSettings {
        present_daily_ceiling: u32::MAX,
        ..GateSettings::default()
    };
    let world = Arc::new(
        World::build_with(SqliteStore::open(&path).unwrap(), settings, |a| a, CLIENTS).await,
    );
    let served = Arc::new(AtomicU64::new(0));
    let failed_while_up = Arc::new(AtomicU64::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for consent in world.consents.clone() {
        let world = Arc::clone(&world);
        let served = Arc::clone(&served);
        let failed = Arc::clone(&failed_while_up);
        let stopping = Arc::clone(&stopping);
        clients.spawn(async move {
            let mut access = world.access.clone();
            access.consent = consent;
            // Until a little after the shutdown began.
            while started.elapsed() < LOADED + StdDuration::from_millis(500) {
                let broker = Arc::clone(&world.broker);
                let question = access.clone();
                let token = tokio::task::spawn_blocking(move || {
                    match broker.authorise_with_token(&question).unwrap() {
                        TokenOutcome::Issued(token) => token.token,
                        TokenOutcome::Denied(denial) => panic!("{:?}", denial.reasons),
                    }
                })
                .await
                .unwrap();
                let was_stopping = stopping.load(Ordering::SeqCst);
                match world.client.fetch(&world.data_url(), &token).await {
                    Ok(Response::Sealed(_)) => {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Response::Plaintext(_)) => panic!("served unsealed"),
                    Err(error) => {
                        if !was_stopping && !stopping.load(Ordering::SeqCst) {
                            eprintln!("error below saturation: {error}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                }
            }
        });
    }
    tokio::time::sleep(LOADED).await;
    stopping.store(true, Ordering::SeqCst);
    // The server stops taking connections and finishes the requests in flight.
    world.bank_server.stop().await;
    while let Some(client) = clients.join_next().await {
        client.unwrap();
    }
    check(
        &world,
        &path,
        served.load(Ordering::SeqCst),
        &failed_while_up,
    );
}

fn check(
    world: &World<SqliteStore>,
    path: &std::path::Path,
    served: u64,
    failed_while_up: &AtomicU64,
) {
    assert_eq!(
        failed_while_up.load(Ordering::SeqCst),
        0,
        "no error below saturation"
    );
    assert!(served > 50, "only {served} accesses served in {LOADED:?}");
    // Every answer that carried data has its journal entry, and no entry lacks its answer: on
    // disk, read by a fresh connection.
    let reopened = SqliteStore::open(path).unwrap();
    let size = reopened.audit_len().unwrap();
    let entries = reopened.audit_entries(0..size).unwrap();
    let journalled = entries
        .iter()
        .filter(|e| e.event.kind() == AuditKind::AccessServed)
        .count() as u64;
    assert_eq!(journalled, served, "served answers and journal entries");
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.event.kind() == AuditKind::AccessRefusedAtGate)
            .count(),
        0
    );
    verify_log(&reopened, None).unwrap();
    assert_eq!(world.journalled(AuditKind::AccessServed) as u64, served);
    eprintln!(
        "{served} accesses served by the gate over loopback in {LOADED:?} with {CLIENTS} clients"
    );
}

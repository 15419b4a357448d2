//! The bank's gate: the full check of one request (token signature and claims, DPoP proof, the
//! bank's ledger on SQLite: attestation, policy, counts, presented ids, feed; account owner),
//! beside two raw ring Ed25519 verifications of the same bytes (the token's and the proof's
//! signatures, the floor any such check pays) and the same two by the crate's own verification;
//! and, separately, the journal's write of a served access (one fsynced SQLite transaction), for
//! one caller, eight, 32 and 256 (with the default bound on the checks verifying at once, and
//! with none), and the checks alone with 32 callers; the same on PostgreSQL when a server is
//! named.
//!
//! Also the revocation feed: the broker's signing of it over a long log and the bank's
//! application of it.
//!
//! Run: `cargo bench --bench gate`; with PostgreSQL:
//! `scripts/with-postgres cargo bench --features postgres --bench gate`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::testing::{self, GET_BALANCE, SeededRandom, TestBank, TestBroker};
use consent_broker::*;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

mod support;
use ring::signature::{ED25519, UnparsedPublicKey};

/// The signing input and signature of a compact JWS.
fn signed_parts(jws: &str) -> (Vec<u8>, Vec<u8>) {
    let (input, signature) = jws.rsplit_once('.').unwrap();
    (
        input.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(signature).unwrap(),
    )
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let kit = TestBroker::memory();
    let ledger = SqliteStore::open(dir.path().join("bank.sqlite")).unwrap();
    let bank = TestBank::with_settings(&kit, ledger, support::open_gate());
    let consent = bank.granted(&kit);
    let access = kit.access(consent.id());
    let random = SeededRandom::new(21);
    let token = kit.token(&access).token;
    let proof = kit
        .sender
        .proof(&GET_BALANCE, &token, kit.broker.now(), &random)
        .unwrap();
    let request = GateRequest {
        token: &token,
        proof: &proof,
        http: GET_BALANCE,
    };
    bank.bank.precheck(&request, &bank.accounts).unwrap();

    let mut group = c.benchmark_group("gate");
    group.bench_function("check_sqlite_dpop", |b| {
        b.iter(|| black_box(bank.bank.precheck(black_box(&request), &bank.accounts)).unwrap())
    });

    // The same check with the ledger in memory: what reading SQLite adds.
    // (Beside a broker of its own: two test banks draw the same attestation ids.)
    let memory_kit = TestBroker::memory();
    let memory_bank =
        TestBank::with_settings(&memory_kit, MemoryStore::new(), support::open_gate());
    let memory_consent = memory_bank.granted(&memory_kit);
    let memory_token = memory_kit
        .token(&memory_kit.access(memory_consent.id()))
        .token;
    let memory_proof = memory_kit
        .sender
        .proof(
            &GET_BALANCE,
            &memory_token,
            memory_kit.broker.now(),
            &random,
        )
        .unwrap();
    let memory_request = GateRequest {
        token: &memory_token,
        proof: &memory_proof,
        http: GET_BALANCE,
    };
    group.bench_function("check_memory_dpop", |b| {
        b.iter(|| {
            black_box(
                memory_bank
                    .bank
                    .precheck(black_box(&memory_request), &memory_bank.accounts),
            )
            .unwrap()
        })
    });

    // The floor: the two Ed25519 verifications any check of a DPoP-bound token makes.
    let broker_key = *kit
        .broker
        .jwks()
        .unwrap()
        .public_keys()
        .unwrap()
        .first()
        .unwrap();
    let platform_key = kit.sender.public_key();
    let (token_input, token_signature) = signed_parts(&token);
    let (proof_input, proof_signature) = signed_parts(&proof);
    group.bench_function("raw/two_ed25519_verifications", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ED25519, broker_key.as_bytes())
                .verify(black_box(&token_input), black_box(&token_signature))
                .unwrap();
            UnparsedPublicKey::new(&ED25519, platform_key.as_bytes())
                .verify(black_box(&proof_input), black_box(&proof_signature))
                .unwrap();
        })
    });

    // The same two with the crate's own verification (every token, proof, checkpoint and
    // cosignature goes through it): the same answers as ring's, on curve25519-dalek, keys kept.
    group.bench_function("raw/two_ed25519_verifications_crate", |b| {
        b.iter(|| {
            assert!(testing::verify_ed25519(
                broker_key.as_bytes(),
                black_box(&token_input),
                black_box(&token_signature),
            ));
            assert!(testing::verify_ed25519(
                platform_key.as_bytes(),
                black_box(&proof_input),
                black_box(&proof_signature),
            ));
        })
    });

    // The whole gate with the journal's write: a fresh token and proof per access (made outside
    // the timed part), checked and journalled in one fsynced transaction.
    one_caller(
        &mut group,
        "check_and_journal_sqlite",
        &kit,
        &bank,
        &access,
        &random,
    );

    // The same with eight callers at once (eight request threads of the bank's server): their
    // journal entries share transactions and fsyncs.
    many_callers(
        &mut group,
        "check_and_journal_sqlite_8_callers",
        &kit,
        &bank,
        &random,
        (8, false, 1),
    );

    // The same in steady state, as in service: the ledger (a file of its own) already holds the
    // ids presented over their lifetime at 1,000 checks a second, and the clock moves a second
    // per sample, so that each check's prune forgets about as many ids as it adds.
    let steady_dir = tempfile::tempdir().unwrap();
    let steady_path = steady_dir.path().join("steady.sqlite");
    let steady_kit = TestBroker::memory();
    let steady_ledger = std::sync::Arc::new(SqliteStore::open(&steady_path).unwrap());
    let steady_bank = TestBank::with_settings(
        &steady_kit,
        std::sync::Arc::clone(&steady_ledger),
        support::open_gate(),
    );
    presented_for_a_lifetime(
        &steady_path,
        steady_kit.broker.now().unix_timestamp(),
        1_000,
    );
    many_callers(
        &mut group,
        "check_and_journal_sqlite_8_callers_steady",
        &steady_kit,
        &steady_bank,
        &random,
        (8, true, 1),
    );
    // And with 32 request threads, as the library's own HTTP gate runs under load: it hands each
    // check to a blocking thread and lets up to `http::MAX_IN_FLIGHT` (256) run at once, so a
    // busy gate has many more than eight checks waiting on one fsync.
    many_callers(
        &mut group,
        "check_and_journal_sqlite_32_callers_steady",
        &steady_kit,
        &steady_bank,
        &random,
        (32, true, 1),
    );
    // The same 32 callers making the checks alone (`Bank::precheck`: every check, nothing
    // written): the most this machine gives the checks in this run, the journal's cost apart.
    many_callers_making(
        &mut group,
        "check_sqlite_dpop_32_callers_steady",
        &steady_kit,
        &steady_bank,
        &|request| {
            steady_bank
                .bank
                .precheck(request, &steady_bank.accounts)
                .unwrap();
        },
        &random,
        (32, true, 1),
    );
    // And with 256, as many as the HTTP gate runs at once: with the default bound on the checks
    // verifying signatures at once (the cores), then with none (another process of the bank on
    // the same ledger), the baseline of that bound. Ten samples of at least 4,096 checks each.
    group.sample_size(10);
    many_callers(
        &mut group,
        "check_and_journal_sqlite_256_callers_steady",
        &steady_kit,
        &steady_bank,
        &random,
        (256, true, 16),
    );
    let unbounded = TestBank::another_gate(
        &steady_kit,
        steady_ledger,
        GateSettings {
            verifying_at_once: usize::MAX,
            ..support::open_gate()
        },
    );
    many_callers_making(
        &mut group,
        "check_and_journal_sqlite_256_callers_steady_unbounded",
        &steady_kit,
        &steady_bank,
        &|request| {
            unbounded.check(request, &steady_bank.accounts).unwrap();
        },
        &random,
        (256, true, 16),
    );
    group.sample_size(100);
    postgres(&mut group, &random);
    group.finish();
}

/// One caller: a fresh token and proof per access (made outside the timed part), checked and
/// journalled.
fn one_caller<L: Store + LedgerRead>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    kit: &TestBroker,
    bank: &TestBank<L>,
    access: &AccessRequest,
    random: &SeededRandom,
) {
    group.bench_function(name, |b| {
        b.iter_batched(
            || support::token_and_proof(kit, access, random),
            |(token, proof)| {
                let request = GateRequest {
                    token: &token,
                    proof: &proof,
                    http: GET_BALANCE,
                };
                bank.bank.check(&request, &bank.accounts).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
}

/// `callers` callers checking at once, each for a consent of its own (as many customers' apps
/// polling at once; one consent's served count is one row, which concurrent checks of it take in
/// turn). Tokens and proofs are made before the clock starts, in the order they are checked; the
/// time is one over the aggregate throughput.
/// With `moving`, the kit's clock moves a second before each sample's tokens are made; each caller
/// checks at least `at_least` tokens a sample.
fn many_callers<L: Store + LedgerRead + Sync>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    kit: &TestBroker,
    bank: &TestBank<L>,
    random: &SeededRandom,
    callers: (usize, bool, u64),
) {
    let check = |request: &GateRequest<'_>| {
        bank.bank.check(request, &bank.accounts).unwrap();
    };
    many_callers_making(group, name, kit, bank, &check, random, callers);
}

/// [`many_callers`], each caller making `check` of each request (another gate of `bank`, with
/// settings of its own; or the checks without the journal).
fn many_callers_making<L: Store + LedgerRead + Sync>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    kit: &TestBroker,
    bank: &TestBank<L>,
    check: &(dyn Fn(&GateRequest<'_>) + Sync),
    random: &SeededRandom,
    (callers, moving, at_least): (usize, bool, u64),
) {
    let accesses: Vec<AccessRequest> = (0..callers)
        .map(|_| kit.access(bank.granted(kit).id()))
        .collect();
    group.bench_function(name, |b| {
        b.iter_custom(|iterations| {
            if moving {
                kit.clock
                    .advance(consent_broker::time::Duration::seconds(1));
            }
            // At least `at_least` checks a caller: many callers each checking one or two would
            // measure their threads' start, not a gate under that load.
            let run = iterations.max(callers as u64 * at_least);
            let each = run.div_ceil(callers as u64);
            // Made in the order they are checked (every caller's first, then every caller's
            // second, ...), as a broker issues tokens to callers who present them within
            // milliseconds: their ids, time-ordered, reach the ledger in about that order.
            let mut prepared: Vec<Vec<(String, String)>> =
                accesses.iter().map(|_| Vec::new()).collect();
            for _ in 0..each {
                for (mine, access) in prepared.iter_mut().zip(&accesses) {
                    mine.push(support::token_and_proof(kit, access, random));
                }
            }
            // Each caller checks the tokens made for it: `each` of them.
            support::timed_threads(callers, run, |caller, _| {
                for (token, proof) in prepared.get(caller).unwrap() {
                    check(&GateRequest {
                        token,
                        proof,
                        http: GET_BALANCE,
                    });
                }
            })
            .mul_f64(iterations as f64 / run as f64)
        })
    });
}

/// Fills a bank's SQLite ledger with the ids a gate taking `per_second` checks a second holds at
/// `now` (Unix seconds): a proof and a token per check, each kept until no gate could take it,
/// whose clock is within `CLOCK_SKEW_ALLOWANCE` (two minutes) of this one's (a proof the widest
/// window, five minutes, the widest leeway, 30 s, and the allowance past its `iat`; a token, of
/// the default five-minute lifetime, the leeway and the allowance past its `exp`), keyed by
/// signed time.
fn presented_for_a_lifetime(path: &std::path::Path, now: i64, per_second: i64) {
    let mut db = rusqlite::Connection::open(path).unwrap();
    let tx = db.transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO bank_presented (kind, at, id) VALUES (?1, ?2, ?3)")
            .unwrap();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        // (kind, seconds an id is kept, signed time of one forgotten now)
        for (kind, kept, oldest) in [("proof", 450, now - 450), ("token", 450, now - 150)] {
            for n in 0..per_second * kept {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = oldest + n / per_second;
                // 28 characters, ordered within their second, as the ids this crate makes.
                insert
                    .execute((kind, at, format!("{n:012x}{state:016x}")))
                    .unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

/// The gate with its ledger and journal on PostgreSQL, when `DATABASE_URL` names a server
/// (`scripts/with-postgres cargo bench --features postgres --bench gate`): one caller, and eight.
#[cfg(feature = "postgres")]
fn postgres(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    random: &SeededRandom,
) {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("gate/postgres: skipped (no DATABASE_URL; run under scripts/with-postgres)");
        return;
    };
    let options = PostgresOptions {
        schema: Some(format!("bench_gate_{}", std::process::id())),
        ..Default::default()
    };
    let ledger = PostgresStore::open_with(&url, options).unwrap();
    // A broker of its own: two test banks draw the same attestation ids.
    let kit = TestBroker::memory();
    let bank = TestBank::with_settings(&kit, ledger, support::open_gate());
    let access = kit.access(bank.granted(&kit).id());
    one_caller(
        group,
        "check_and_journal_postgres",
        &kit,
        &bank,
        &access,
        random,
    );
    many_callers(
        group,
        "check_and_journal_postgres_8_callers",
        &kit,
        &bank,
        random,
        (8, false, 1),
    );
}

#[cfg(not(feature = "postgres"))]
fn postgres(
    _: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    _: &SeededRandom,
) {
}

/// The revocation feed over a log of 20,000 entries: the broker's signed feed from the bank's
/// position (its index already read; with the log's root at the feed's end and the consistency
/// proof from its start, since feeds name roots), and the bank's application of the next feed
/// (checked, the proof verified against the root it holds, and recorded in its SQLite ledger
/// and journal: one fsynced transaction), the log one entry longer each time.
fn feed(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let kit = TestBroker::memory();
    let ledger = SqliteStore::open(dir.path().join("bank.sqlite")).unwrap();
    let bank = TestBank::with_settings(&kit, ledger, support::open_gate());
    while kit.broker.store().audit_len().unwrap() < 20_000 {
        kit.request();
    }
    let position = || {
        bank.bank
            .ledger()
            .feed_state()
            .unwrap()
            .map_or(0, |f| f.position)
    };
    bank.sync(&kit).unwrap();
    let mut group = c.benchmark_group("feed");
    let after = position() - 5_000;
    group.bench_function("broker_sign_20000_entries", |b| {
        b.iter(|| {
            black_box(
                kit.broker
                    .revocation_feed(bank.bank.id(), black_box(after))
                    .unwrap(),
            )
        });
    });
    group.bench_function("bank_apply_sqlite", |b| {
        b.iter_batched(
            || {
                kit.request();
                kit.broker
                    .revocation_feed(bank.bank.id(), position())
                    .unwrap()
            },
            |feed| bank.bank.apply_revocation_feed(&feed).unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench, feed);
criterion_main!(benches);

//! The bank monitors the platform's published log: everything its gate served must be there,
//! under a checkpoint its witness policy accepts. A platform that serves from a shadow broker
//! (same keys, a store it never publishes) is found out; a log that is not witnessed, or that
//! goes backwards, is not believed.

use std::path::Path;
use std::sync::Arc;

use consent_broker::checkpoint::NoteVerifier;
use consent_broker::cosignature::{CosignatureSigner, WitnessPolicy, WitnessedError};
use consent_broker::testing::{FaultRates, FaultStore, SeededRandom, TestBank, TestBroker};
use consent_broker::tiles::{DirTiles, TileError, publish};
use consent_broker::witness::{Cosigning, Witness, WitnessClient};
use consent_broker::*;

use crate::support::copy_dir;

struct Platform {
    kit: TestBroker,
    dir: tempfile::TempDir,
}

impl Platform {
    /// A monitor of this platform's log that trusts `witness` alone.
    fn monitor(&self, witness: &Witness) -> LogMonitor {
        let policy = WitnessPolicy {
            witnesses: vec![witness.verifier().clone()],
            quorum: 1,
        };
        LogMonitor::new(self.kit.broker.log_origin(), self.log_key(), policy).unwrap()
    }

    fn log_key(&self) -> NoteVerifier {
        NoteVerifier::from_vkey(&self.kit.broker.checkpoint_verifier_key()).unwrap()
    }

    /// Signs a checkpoint, has `witness` cosign it, and publishes it with its tiles.
    fn publish(&self, witness: &Witness) {
        let mut cosigning = Cosigning::new(vec![(
            witness as &dyn WitnessClient,
            witness.verifier().clone(),
        )]);
        let (checkpoint, cosigned) = self
            .kit
            .broker
            .witnessed_checkpoint(&mut cosigning)
            .unwrap();
        assert_eq!(cosigned.alarms, []);
        let witnessed = StoredCheckpoint {
            note: cosigned.note,
            ..checkpoint
        };
        let store = self.kit.broker.store();
        publish(&store, self.dir.path(), &witnessed).unwrap();
    }
}

fn serve<L: Store + LedgerRead>(kit: &TestBroker, bank: &TestBank<L>, consent: &Consent) {
    serve_following(kit, kit, bank, consent);
}

/// [`serve`] a token of `kit`'s (the platform's broker or a shadow broker), the bank following
/// the revocation feed of `feeds` (the platform's broker: one bank follows one broker's log).
fn serve_following<L: Store + LedgerRead>(
    kit: &TestBroker,
    feeds: &TestBroker,
    bank: &TestBank<L>,
    consent: &Consent,
) {
    let token = kit.token(&kit.access(consent.id()));
    bank.sync(feeds).unwrap();
    let mut proof = String::new();
    let request = bank.present(kit, &token.token, &mut proof);
    bank.bank.serve(&request, &bank.accounts).unwrap().unwrap();
}

fn bank_witness(dir: &Path, platform: &Platform) -> Witness {
    Witness::open(
        dir.join("witness.sqlite"),
        CosignatureSigner::new("bank.example/witness", &crate::targets::pkcs8(21)).unwrap(),
        platform.kit.clock.clone(),
    )
    .unwrap()
    .follow(platform.kit.broker.log_origin(), platform.log_key())
}

/// A shadow broker: the platform's keys (the kit's) on a store it never publishes, its random
/// source seeded with `seed` (or the kit's), and a consent the bank approved through it (after
/// three requests, so that its id is not one the platform's broker gave).
fn shadow_broker<L: Store + LedgerRead>(
    kit: &TestBroker,
    bank: &TestBank<L>,
    seed: Option<u64>,
) -> (TestBroker, Consent) {
    let shadow =
        TestBroker::configured(
            MemoryStore::new(),
            kit.bank.policy().clone(),
            |builder| match seed {
                Some(seed) => builder.random(Arc::new(SeededRandom::new(seed))),
                None => builder,
            },
        );
    for _ in 0..3 {
        shadow.request();
    }
    let consent = bank.granted(&shadow);
    (shadow, consent)
}

/// A platform with its broker and published directory, the bank beside it (also its witness),
/// and a consent the bank approved.
fn world() -> (Platform, TestBank, tempfile::TempDir, Witness, Consent) {
    world_with(TestBank::beside)
}

/// [`world`] with the bank `bank` makes beside the platform's broker.
fn world_with<L: Store + LedgerRead>(
    bank: impl FnOnce(&TestBroker) -> TestBank<L>,
) -> (Platform, TestBank<L>, tempfile::TempDir, Witness, Consent) {
    let platform = Platform {
        kit: TestBroker::memory(),
        dir: tempfile::tempdir().unwrap(),
    };
    let bank = bank(&platform.kit);
    let witness_dir = tempfile::tempdir().unwrap();
    let witness = bank_witness(witness_dir.path(), &platform);
    let consent = bank.granted(&platform.kit);
    (platform, bank, witness_dir, witness, consent)
}

/// One access served under `consent` and published, and a monitor trusting `witness` that has
/// made its first pass over it (clean, asserted): the monitor and that pass's report.
fn watched<L: Store + LedgerRead>(
    platform: &Platform,
    bank: &TestBank<L>,
    witness: &Witness,
    consent: &Consent,
) -> (LogMonitor, MonitorReport) {
    let kit = &platform.kit;
    serve(kit, bank, consent);
    platform.publish(witness);
    let mut monitor = platform.monitor(witness);
    let first = monitor
        .check(
            &bank.bank,
            &DirTiles::new(platform.dir.path()),
            kit.broker.now(),
        )
        .unwrap();
    assert!(first.is_clean(), "{first:?}");
    (monitor, first)
}

#[test]
fn the_bank_finds_what_its_gate_served_in_the_platforms_log_and_misses_a_shadow_brokers() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    for _ in 0..3 {
        serve(kit, &bank, &consent);
    }
    platform.publish(&witness);

    let policy = WitnessPolicy {
        witnesses: vec![witness.verifier().clone()],
        quorum: 1,
    };
    let mut monitor =
        LogMonitor::new(kit.broker.log_origin(), platform.log_key(), policy.clone()).unwrap();
    let source = DirTiles::new(platform.dir.path());
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.pending, 0);
    assert_eq!(report.witnessed_by, ["bank.example/witness"]);

    // A shadow broker: the platform's keys on a store it never publishes.
    let (shadow, shadow_consent) = shadow_broker(kit, &bank, Some(99));
    serve_following(&shadow, kit, &bank, &shadow_consent);
    let served = bank.bank.journal().audit_len().unwrap() - 1;
    // Within the merge delay it is pending; past it, missing.
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(report.is_clean());
    assert_eq!(report.pending, 1);
    let later = kit.broker.now() + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    let report = monitor.check(&bank.bank, &source, later).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.missing_tokens.len(), 1);
    assert_eq!(report.missing_tokens[0].journal_seq, served);
    // Meanwhile the honest platform's accesses keep showing up.
    serve(kit, &bank, &consent);
    platform.publish(&witness);
    let report = monitor.check(&bank.bank, &source, later).unwrap();
    assert!(
        report.missing_tokens.is_empty(),
        "reported once: {report:?}"
    );
    assert_eq!(report.pending, 0);
}

#[test]
fn an_unwitnessed_or_rolled_back_log_is_not_believed() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    serve(kit, &bank, &consent);
    platform.publish(&witness);
    let other =
        CosignatureSigner::new("other.example/witness", &crate::targets::pkcs8(22)).unwrap();
    let strict = WitnessPolicy {
        witnesses: vec![witness.verifier().clone(), other.verifier().clone()],
        quorum: 2,
    };
    let mut monitor = LogMonitor::new(kit.broker.log_origin(), platform.log_key(), strict).unwrap();
    let source = DirTiles::new(platform.dir.path());
    assert!(matches!(
        monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap()
            .log_error,
        Some(MonitorError::Checkpoint(WitnessedError::Quorum {
            got: 1,
            quorum: 2
        }))
    ));

    // A copy of the published directory taken now: an older, witnessed log.
    let older = tempfile::tempdir().unwrap();
    copy_dir(platform.dir.path(), older.path());
    serve(kit, &bank, &consent);
    platform.publish(&witness);
    let mut monitor = platform.monitor(&witness);
    assert!(
        monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap()
            .is_clean()
    );
    // Served the older directory afterwards (a rollback of what is published): refused.
    assert!(matches!(
        monitor
            .check(&bank.bank, &DirTiles::new(older.path()), kit.broker.now())
            .unwrap()
            .log_error,
        Some(MonitorError::Tiles(TileError::Rollback { .. }))
    ));
}

/// The platform takes a new approval from the bank, keeps it out of its log and writes it into
/// its own consent row instead; its tokens then rest on an attestation its published log never
/// shows approved. The monitor reports the attestation.
#[test]
fn an_approval_the_platform_kept_out_of_its_log_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("platform.sqlite");
    let kit = TestBroker::sqlite(&db);
    let bank = TestBank::beside(&kit);
    let consent = bank.granted(&kit);
    // The subject approves again at the bank; the platform does not record it.
    let mut statement = bank.statement(&kit, &kit.request());
    statement.consent = consent.id().clone();
    bank.bank.attest(&statement).unwrap();
    let unlogged = bank
        .bank
        .ledger()
        .attestations_of_consent(consent.id())
        .unwrap()
        .into_iter()
        .find(|a| a.superseded_by.is_none())
        .unwrap()
        .id;
    let connection = rusqlite::Connection::open(&db).unwrap();
    let record: String = connection
        .query_row(
            "SELECT record FROM consents WHERE id = ?1",
            [consent.id().as_str()],
            |row| row.get(0),
        )
        .unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&record).unwrap();
    record["state"]["grant"]["attestation_id"] = serde_json::json!(unlogged);
    connection
        .execute(
            "UPDATE consents SET record = ?1 WHERE id = ?2",
            [record.to_string(), consent.id().as_str().to_owned()],
        )
        .unwrap();
    drop(connection);
    let token = kit.token(&kit.access(consent.id()));
    bank.sync(&kit).unwrap();
    let mut proof = String::new();
    let request = bank.present(&kit, &token.token, &mut proof);
    bank.bank.serve(&request, &bank.accounts).unwrap().unwrap();

    let published = tempfile::tempdir().unwrap();
    let checkpoint = kit.broker.checkpoint().unwrap();
    publish(&kit.broker.store(), published.path(), &checkpoint).unwrap();
    let log_key = NoteVerifier::from_vkey(&kit.broker.checkpoint_verifier_key()).unwrap();
    let mut monitor =
        LogMonitor::accepting_weak_policy(kit.broker.log_origin(), log_key, WitnessPolicy::none());
    let report = monitor
        .check(
            &bank.bank,
            &DirTiles::new(published.path()),
            kit.broker.now(),
        )
        .unwrap();
    assert_eq!(report.missing_tokens, []);
    assert_eq!(report.missing_approvals, [unlogged]);
}

/// A shadow broker reuses the id of a token the published log shows but nobody presented (same
/// keys): the log's entry is for another access, so the served one is still reported; and the
/// id of a token the bank served before, served again for another token, is reported.
#[test]
fn a_token_id_the_log_shows_for_another_access_does_not_account_for_this_one() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());

    // An hour later the gate no longer remembers the first token's id.
    let (shadow, shadow_consent) = shadow_broker(kit, &bank, None);
    kit.clock.advance(time::Duration::hours(1));
    shadow.clock.advance(time::Duration::hours(1));
    // An honest access meanwhile (its commit prunes the ids that expired), then the shadow's
    // token, carrying the id of the first token the published log shows.
    serve(kit, &bank, &consent);
    platform.publish(&witness);
    // A token the platform's broker issued and logged but never presented: its id was never
    // served, so only what the log says it was for can tell the two apart.
    let unpresented = kit.token(&kit.access(consent.id()));
    platform.publish(&witness);
    let logged = unpresented.token_id;
    let token = with_jti(
        &shadow.token(&shadow.access(shadow_consent.id())).token,
        &logged,
    );
    bank.sync(kit).unwrap();
    let mut proof = String::new();
    let request = bank.present(&shadow, &token, &mut proof);
    bank.bank.serve(&request, &bank.accounts).unwrap().unwrap();
    let later = kit.broker.now() + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    let report = monitor.check(&bank.bank, &source, later).unwrap();
    assert_eq!(report.missing_tokens.len(), 1, "{report:?}");
    assert_eq!(report.missing_tokens[0].terms.consent, *shadow_consent.id());

    // The id of a token the bank served before, served again: reported at once.
    let journal = bank.bank.journal();
    let first_served = journal
        .audit_entries(0..journal.audit_len().unwrap())
        .unwrap()
        .into_iter()
        .find_map(|entry| match entry.event {
            AuditEvent::AccessServed { token_id, .. } => Some(token_id),
            _ => None,
        })
        .unwrap();
    let token = with_jti(
        &shadow.token(&shadow.access(shadow_consent.id())).token,
        &first_served,
    );
    let mut proof = String::new();
    let request = bank.present(&shadow, &token, &mut proof);
    bank.bank.serve(&request, &bank.accounts).unwrap().unwrap();
    let report = monitor.check(&bank.bank, &source, later).unwrap();
    assert_eq!(report.missing_tokens.len(), 1, "{report:?}");
    assert_eq!(report.missing_tokens[0].token_id, first_served);
}

/// `token` with its `jti` replaced, signed again with the platform's token key (the kit's keys
/// come from a public seed; a dishonest platform holds its own).
fn with_jti(token: &str, jti: &str) -> String {
    use crate::support::{b64, unb64};
    let mut parts = token.split('.');
    let (header, payload) = (parts.next().unwrap(), parts.next().unwrap());
    let mut claims: serde_json::Value = serde_json::from_slice(&unb64(payload)).unwrap();
    claims["jti"] = serde_json::json!(jti);
    let input = format!("{header}.{}", b64(claims.to_string()));
    let keys = BrokerKeys::ephemeral(&SeededRandom::new(1)).unwrap();
    let key =
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(keys.token().to_pkcs8_der())
            .unwrap();
    format!("{input}.{}", b64(key.sign(input.as_bytes())))
}

/// A platform whose published log shows the approval a served token rests on, but with a
/// commitment to another attestation than the one the bank signed (its broker wrote a made-up
/// digest): the bank's monitor reports the approval as missing. The same log with the true
/// digest is clean. (The log is built outside the broker, from the broker's own entries with
/// the one member changed, and signed with a key of the test's: what a platform running
/// modified code could publish.)
#[test]
fn an_approval_logged_with_another_attestations_digest_is_reported() {
    use consent_broker::checkpoint::NoteSigner;
    let kit = TestBroker::on(MemoryStore::new());
    let bank = TestBank::beside(&kit);
    let consent = bank.granted(&kit);
    let token = kit.token(&kit.access(consent.id()));
    bank.sync(&kit).unwrap();
    let mut proof = String::new();
    let request = bank.present(&kit, &token.token, &mut proof);
    bank.bank.serve(&request, &bank.accounts).unwrap().unwrap();
    let attestation = bank
        .bank
        .ledger()
        .attestations_of_consent(consent.id())
        .unwrap()
        .pop()
        .unwrap()
        .id;

    let signer = NoteSigner::new(
        kit.broker.log_origin(),
        SigningKey::from_seed(&[42; 32]).unwrap().to_pkcs8_der(),
    )
    .unwrap();
    // What the platform logs in place of each approval entry.
    let report = |forge: &dyn Fn(serde_json::Value) -> Vec<serde_json::Value>| {
        let len = kit.broker.store().audit_len().unwrap();
        let entries = kit.broker.store().audit_bytes(0..len).unwrap();
        let mut log = crate::targets::LogStore::default();
        for stored in entries {
            let entry: serde_json::Value = serde_json::from_slice(&stored.bytes).unwrap();
            let entries = match entry["kind"] == "consent_approved" {
                true => forge(entry),
                false => vec![entry],
            };
            for entry in entries {
                log.append(&serde_json::to_vec(&entry).unwrap());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        publish_signed(&log, kit.broker.log_origin(), &signer, dir.path());
        let verifier = NoteVerifier::from_vkey(&signer.verifier_key()).unwrap();
        let mut monitor = LogMonitor::accepting_weak_policy(
            kit.broker.log_origin(),
            verifier,
            WitnessPolicy::none(),
        );
        monitor
            .check(&bank.bank, &DirTiles::new(dir.path()), kit.broker.now())
            .unwrap()
    };
    let honest = report(&|entry| vec![entry]);
    assert!(honest.is_clean(), "{honest:?}");
    let with_digest = |digest: Option<String>| {
        move |mut entry: serde_json::Value| {
            match &digest {
                Some(digest) => entry["attestation_digest"] = serde_json::json!(digest),
                None => {
                    entry.as_object_mut().unwrap().remove("attestation_digest");
                }
            }
            vec![entry]
        }
    };
    let forged = report(&with_digest(Some(consent_broker::privacy::commitment(
        b"another attestation",
    ))));
    assert_eq!(forged.missing_tokens, []);
    assert_eq!(forged.missing_approvals, std::slice::from_ref(&attestation));
    // An approval logged with no digest commits to nothing: reported too, once the bank
    // recorded the digest of what it signed.
    let bare = report(&with_digest(None));
    assert_eq!(bare.missing_tokens, []);
    assert_eq!(bare.missing_approvals, std::slice::from_ref(&attestation));
    // The same without a digest, and beside it the true one logged for another consent: the
    // approval of this consent is still missing (the other names another consent).
    let elsewhere = report(&|entry: serde_json::Value| {
        let bare = with_digest(None)(entry.clone()).pop().unwrap();
        let mut other = entry;
        other["consent"] = serde_json::json!("cns_another");
        vec![bare, other]
    });
    assert_eq!(elsewhere.missing_tokens, []);
    assert_eq!(elsewhere.missing_approvals, [attestation]);
}

/// The platform serves from a shadow broker and keeps its published log unreadable (its
/// checkpoint gone) until the merge delay has passed: the monitor still reads the bank's
/// journal, reports the log's failure, and reports the shadow's token as missing once the delay
/// has run out, judged against the log it verified last.
#[test]
fn a_log_kept_unreadable_does_not_stop_the_merge_delay() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, first) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let (shadow, shadow_consent) = shadow_broker(kit, &bank, Some(98));
    serve_following(&shadow, kit, &bank, &shadow_consent);
    std::fs::remove_file(platform.dir.path().join("checkpoint")).unwrap();
    let within = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(matches!(
        within.log_error,
        Some(MonitorError::Tiles(TileError::Missing { .. }))
    ));
    assert!(!within.is_clean());
    assert_eq!((within.missing_tokens.len(), within.pending), (0, 1));
    assert_eq!(within.log_size, first.log_size, "the log as last verified");
    let later = kit.broker.now() + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    let past = monitor.check(&bank.bank, &source, later).unwrap();
    assert!(past.log_error.is_some());
    assert_eq!(past.missing_tokens.len(), 1, "{past:?}");
    assert_eq!(past.missing_tokens[0].terms.consent, *shadow_consent.id());
}

/// A ledger that fails when told to, the [`world_with`] around it, and a monitor [`watched`]
/// over it whose second pass left one access served and pending (not yet published).
#[expect(
    clippy::type_complexity,
    reason = "a test's world, taken apart at once"
)]
fn one_pending_over_a_faulty_ledger() -> (
    Arc<FaultStore<MemoryStore>>,
    (
        Platform,
        TestBank<Arc<FaultStore<MemoryStore>>>,
        tempfile::TempDir,
        Witness,
        Consent,
    ),
    LogMonitor,
) {
    let ledger = Arc::new(FaultStore::new(MemoryStore::new(), 3));
    let world = world_with(|kit| TestBank::on(kit, ledger.clone()));
    let (platform, bank, _, witness, consent) = &world;
    let kit = &platform.kit;
    let (mut monitor, _) = watched(platform, bank, witness, consent);
    serve(kit, bank, consent);
    let source = DirTiles::new(platform.dir.path());
    let pending = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert_eq!(pending.pending, 1);
    (ledger, world, monitor)
}

/// From now on, every read of `ledger` fails (writes do not).
fn every_read_fails(ledger: &FaultStore<MemoryStore>) {
    ledger.rates(FaultRates {
        before: 0,
        during: 0,
        after: 0,
        read: 1000,
    });
    ledger.random_faults(true);
}

/// A tile source that runs `hook` once, just before its checkpoint is first read.
struct Hooked<'a, T> {
    inner: T,
    hook: std::cell::RefCell<Option<Box<dyn FnOnce() + 'a>>>,
}

impl<T: consent_broker::tiles::TileSource> consent_broker::tiles::TileSource for Hooked<'_, T> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TileError> {
        if path == "checkpoint" {
            let hook = self.hook.borrow_mut().take();
            if let Some(hook) = hook {
                hook();
            }
        }
        self.inner.read(path)
    }
}

/// The bank approves a new consent, its gate serves a token for it and the platform publishes
/// both, all after the monitor's pass has read the bank's journal and before it reads the log:
/// the log's approval names an attestation the journal read did not show yet. The monitor finds
/// it in the journal (read again once the checkpoint is fixed, never the ledger), keeps the
/// consent's tokens, and reports nothing, then or later.
#[test]
fn an_approval_signed_while_the_monitor_reads_is_still_the_banks() {
    let ledger = Arc::new(FaultStore::new(MemoryStore::new(), 1));
    let (platform, bank, _witness_dir, witness, consent) =
        world_with(|kit| TestBank::on(kit, ledger.clone()));
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let ledger_read = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ledger_read.clone();
    ledger.before_next_read("attestation_record", move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let source = Hooked {
        inner: DirTiles::new(platform.dir.path()),
        hook: std::cell::RefCell::new(Some(Box::new(|| {
            let new = bank.granted(kit);
            serve(kit, &bank, &new);
            platform.publish(&witness);
        }))),
    };
    let during = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(during.is_clean(), "{during:?}");
    assert_eq!(during.pending, 0, "{during:?}");
    let later = kit.broker.now() + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    let after = monitor
        .check(&bank.bank, &DirTiles::new(platform.dir.path()), later)
        .unwrap();
    assert!(after.is_clean(), "{after:?}");
    assert!(
        !ledger_read.load(std::sync::atomic::Ordering::SeqCst),
        "no attestation was looked up in the ledger"
    );
}

/// A policy that cannot stop a split view is refused unless asked for by name: no witness, a
/// quorum that is not a majority of the witnesses listed (two quorums need not share one), or
/// more than are listed.
#[test]
fn a_witness_policy_that_cannot_stop_a_split_view_is_refused() {
    let (platform, ..) = world();
    let witness = |n: u8| {
        CosignatureSigner::new(
            &format!("w{n}.example/witness"),
            &crate::targets::pkcs8(30 + n),
        )
        .unwrap()
        .verifier()
        .clone()
    };
    let policy = |quorum: usize, of: u8| WitnessPolicy {
        witnesses: (0..of).map(witness).collect(),
        quorum,
    };
    let origin = platform.kit.broker.log_origin();
    for (quorum, of) in [(0, 0), (0, 1), (1, 2), (2, 4), (3, 2)] {
        assert_eq!(
            LogMonitor::new(origin, platform.log_key(), policy(quorum, of)).map(drop),
            Err(MonitorError::WeakPolicy {
                quorum,
                witnesses: usize::from(of)
            })
        );
    }
    for (quorum, of) in [(1, 1), (2, 2), (2, 3), (3, 4)] {
        assert!(LogMonitor::new(origin, platform.log_key(), policy(quorum, of)).is_ok());
    }
    let _unwitnessed =
        LogMonitor::accepting_weak_policy(origin, platform.log_key(), WitnessPolicy::none());
}

/// A gate that takes a token more than once serves the same token twice: the log's one entry
/// accounts for both, and nothing is reported as a reused id.
#[test]
fn the_same_token_served_twice_is_accounted_for_by_its_one_entry() {
    let platform = Platform {
        kit: TestBroker::memory(),
        dir: tempfile::tempdir().unwrap(),
    };
    let kit = &platform.kit;
    let bank = TestBank::with_settings(
        kit,
        MemoryStore::new(),
        GateSettings {
            single_use_tokens: false,
            ..GateSettings::default()
        },
    );
    let witness_dir = tempfile::tempdir().unwrap();
    let witness = bank_witness(witness_dir.path(), &platform);
    let consent = bank.granted(kit);
    let token = kit.token(&kit.access(consent.id()));
    bank.sync(kit).unwrap();
    for _ in 0..2 {
        let mut proof = String::new();
        let request = bank.present(kit, &token.token, &mut proof);
        bank.bank.serve(&request, &bank.accounts).unwrap().unwrap();
    }
    platform.publish(&witness);
    let mut monitor = platform.monitor(&witness);
    let source = DirTiles::new(platform.dir.path());
    let later = kit.broker.now() + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    let report = monitor.check(&bank.bank, &source, later).unwrap();
    assert!(report.is_clean(), "{report:?}");
}

/// Signs a checkpoint of the whole of `log` for `origin` with `signer`, and publishes the log's
/// tiles and that checkpoint in `dir` (a log built by hand, as a dishonest or unusual platform
/// would publish it).
pub(crate) fn publish_signed(
    log: &crate::targets::LogStore,
    origin: &str,
    signer: &consent_broker::checkpoint::NoteSigner,
    dir: &std::path::Path,
) {
    use consent_broker::checkpoint::{Checkpoint, sign_checkpoint};
    let size = log.entries.len() as u64;
    let root = log.root(size).unwrap();
    let note = sign_checkpoint(
        &Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        },
        signer,
    )
    .unwrap();
    consent_broker::tiles::publish(log, dir, &StoredCheckpoint { size, root, note }).unwrap();
}

/// A tile source that records the path of every file read.
struct Recording<T> {
    inner: T,
    read: std::cell::RefCell<Vec<String>>,
}

impl<T> Recording<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            read: std::cell::RefCell::new(Vec::new()),
        }
    }
}

impl<T: consent_broker::tiles::TileSource> consent_broker::tiles::TileSource for Recording<T> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TileError> {
        self.read.borrow_mut().push(path.to_owned());
        self.inner.read(path)
    }
}

/// Publishes the broker's log with a checkpoint no witness cosigned.
fn publish_unwitnessed(kit: &TestBroker, dir: &Path) {
    let checkpoint = kit.broker.checkpoint().unwrap();
    publish(&kit.broker.store(), dir, &checkpoint).unwrap();
}

/// An access served and published, a copy of the published directory taken (an older,
/// witnessed log, for the platform to show again), and another access served and published: the
/// copy.
fn published_twice(
    platform: &Platform,
    bank: &TestBank,
    witness: &Witness,
    consent: &Consent,
) -> tempfile::TempDir {
    serve(&platform.kit, bank, consent);
    platform.publish(witness);
    let older = tempfile::tempdir().unwrap();
    copy_dir(platform.dir.path(), older.path());
    serve(&platform.kit, bank, consent);
    platform.publish(witness);
    older
}

/// The bank restarts its monitor, and the platform then shows it an older copy of its published
/// log (a checkpoint the witness did cosign, replayed), or, for a log no witness follows yet,
/// another log signed with the platform's key. A monitor made anew takes either; one restored
/// from the state saved before the restart refuses both, and so does one made anew but held to
/// that state's checkpoint (`pinned_to`), which reads the log from its start.
#[test]
fn a_restored_monitor_refuses_a_log_rolled_back_or_forked_across_the_restart() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let older = published_twice(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let now = kit.broker.now();
    let mut monitor = platform.monitor(&witness);
    assert!(monitor.check(&bank.bank, &source, now).unwrap().is_clean());
    let saved = monitor.save();
    drop(monitor);

    let rolled_back = DirTiles::new(older.path());
    // A pass by a monitor made anew, one restored from `saved` and one held to its checkpoint.
    let pass = |made: &dyn Fn() -> LogMonitor, saved: &[u8], source: &DirTiles| {
        let anew = made().check(&bank.bank, source, now).unwrap();
        let mut restored = made().restore(saved).unwrap();
        let mut pinned = made().pinned_to(saved).unwrap();
        (
            anew,
            restored.check(&bank.bank, source, now).unwrap(),
            pinned.check(&bank.bank, source, now).unwrap(),
        )
    };
    let witnessed = || platform.monitor(&witness);
    let (anew, restored, pinned) = pass(&witnessed, &saved, &rolled_back);
    assert_eq!(anew.log_error, None, "made anew, it takes the older log");
    for refused in [restored, pinned] {
        assert!(
            matches!(
                refused.log_error,
                Some(MonitorError::Tiles(TileError::Rollback { .. }))
            ),
            "{refused:?}"
        );
    }
    let (_, restored, pinned) = pass(&witnessed, &saved, &source);
    assert!(restored.is_clean() && pinned.is_clean(), "{pinned:?}");

    // No witness: the platform's key alone vouches for the log.
    let origin = kit.broker.log_origin();
    let unwitnessed =
        || LogMonitor::accepting_weak_policy(origin, platform.log_key(), WitnessPolicy::none());
    let mut monitor = unwitnessed();
    assert!(monitor.check(&bank.bank, &source, now).unwrap().is_clean());
    let saved = monitor.save();
    // A shadow broker with the platform's keys publishes a longer log of its own.
    let (shadow, _) = shadow_broker(kit, &bank, Some(97));
    let published = kit.broker.store().audit_len().unwrap();
    while shadow.broker.store().audit_len().unwrap() <= published {
        shadow.request();
    }
    let fork_dir = tempfile::tempdir().unwrap();
    publish_unwitnessed(&shadow, fork_dir.path());
    let (anew, restored, pinned) = pass(&unwitnessed, &saved, &DirTiles::new(fork_dir.path()));
    assert_eq!(anew.log_error, None, "made anew, it takes the other log");
    assert!(
        matches!(
            restored.log_error,
            Some(MonitorError::Tiles(
                TileError::EntryMismatch { .. } | TileError::RootMismatch { .. }
            ))
        ),
        "{restored:?}"
    );
    assert_eq!(restored.log_size, published, "the log as verified before");
    assert!(
        matches!(
            pinned.log_error,
            Some(MonitorError::Tiles(TileError::RootMismatch { size })) if size == published
        ),
        "{pinned:?}"
    );
}

/// A monitor held to a saved checkpoint keeps the hold in its own saved state until a pass has
/// read the log through it: saved after a pass the platform showed a rolled-back log, and
/// restored, it still refuses that log; once it has read the real one, the hold is gone.
#[test]
fn a_monitor_held_to_a_checkpoint_keeps_the_hold_across_a_restart() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let older = published_twice(&platform, &bank, &witness, &consent);
    let (source, rolled_back) = (
        DirTiles::new(platform.dir.path()),
        DirTiles::new(older.path()),
    );
    let now = kit.broker.now();
    let mut monitor = platform.monitor(&witness);
    monitor.check(&bank.bank, &source, now).unwrap();
    let saved = monitor.save();

    let mut pinned = platform.monitor(&witness).pinned_to(&saved).unwrap();
    let refused = |report: MonitorReport| {
        matches!(
            report.log_error,
            Some(MonitorError::Tiles(TileError::Rollback { .. }))
        )
    };
    assert!(refused(
        pinned.check(&bank.bank, &rolled_back, now).unwrap()
    ));
    let held = pinned.save();
    let mut restored = platform.monitor(&witness).restore(&held).unwrap();
    assert!(refused(
        restored.check(&bank.bank, &rolled_back, now).unwrap()
    ));
    assert!(restored.check(&bank.bank, &source, now).unwrap().is_clean());
    let state: serde_json::Value = serde_json::from_slice(&restored.save()).unwrap();
    assert_eq!(state["pin"], serde_json::Value::Null);
    assert_eq!(
        restored.save(),
        monitor.save(),
        "as the monitor that kept running"
    );
    // A state restored over a held monitor replaces all of it, the hold included.
    let replaced = platform
        .monitor(&witness)
        .pinned_to(&saved)
        .unwrap()
        .restore(&monitor.save())
        .unwrap();
    assert_eq!(replaced.save(), monitor.save());
}

/// Saved after a pass and restored, a monitor goes on as the one that kept running does: the
/// same reports pass after pass (a shadow's token pending across the restart is reported
/// missing once its delay has run out, and then not again), the same state saved, and no full
/// tile of the log read again.
#[test]
fn a_restored_monitor_goes_on_where_the_saved_one_stopped() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    // More than a full tile of entries.
    for _ in 0..256 {
        kit.request();
    }
    let (mut running, _) = watched(&platform, &bank, &witness, &consent);
    let (shadow, shadow_consent) = shadow_broker(kit, &bank, Some(96));
    serve_following(&shadow, kit, &bank, &shadow_consent);
    let source = DirTiles::new(platform.dir.path());
    let now = kit.broker.now();
    let before = running.check(&bank.bank, &source, now).unwrap();
    assert_eq!((before.pending, before.missing_tokens.len()), (1, 0));
    let saved = running.save();
    let mut restored = platform.monitor(&witness).restore(&saved).unwrap();
    assert_eq!(restored.save(), saved, "restored, it saves the same bytes");

    serve(kit, &bank, &consent);
    platform.publish(&witness);
    let later = now + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    let recording = Recording::new(DirTiles::new(platform.dir.path()));
    let after = restored.check(&bank.bank, &recording, later).unwrap();
    assert_eq!(after, running.check(&bank.bank, &source, later).unwrap());
    assert_eq!(after.missing_tokens.len(), 1, "{after:?}");
    assert_eq!(after.missing_tokens[0].terms.consent, *shadow_consent.id());
    let read = recording.read.borrow();
    assert!(
        read.iter().any(|path| path.contains(".p/")),
        "the partial tiles after the restart are read: {read:?}"
    );
    assert!(
        read.iter()
            .all(|path| path == "checkpoint" || path.contains(".p/")),
        "no full tile is read again: {read:?}"
    );
    let again = restored.check(&bank.bank, &source, later).unwrap();
    assert_eq!(again, running.check(&bank.bank, &source, later).unwrap());
    assert_eq!(again.missing_tokens, [], "reported once");
    assert_eq!(restored.save(), running.save());
}

/// A pass reports a shadow broker's token missing, the bank saves the monitor's state, and goes
/// down before it has acted on the report: the restored monitor reports the token again at its
/// next pass (the one that kept running does not), and then not again.
#[test]
fn an_alarm_reported_before_a_restart_is_reported_again_after_it() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut running, _) = watched(&platform, &bank, &witness, &consent);
    let (shadow, shadow_consent) = shadow_broker(kit, &bank, Some(94));
    serve_following(&shadow, kit, &bank, &shadow_consent);
    let source = DirTiles::new(platform.dir.path());
    let later = kit.broker.now() + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    let reported = running
        .check(&bank.bank, &source, later)
        .unwrap()
        .missing_tokens;
    assert_eq!(reported.len(), 1);
    let saved = running.save();
    let mut restored = platform.monitor(&witness).restore(&saved).unwrap();
    assert_eq!(restored.save(), saved);
    let again = restored.check(&bank.bank, &source, later).unwrap();
    assert_eq!(
        again.missing_tokens, reported,
        "reported again after the restart"
    );
    assert!(!again.is_clean());
    let kept_running = running.check(&bank.bank, &source, later).unwrap();
    assert_eq!(kept_running.missing_tokens, []);
    let after = restored.check(&bank.bank, &source, later).unwrap();
    assert_eq!(after.missing_tokens, [], "and then not again");
    // Held to the saved checkpoint beside a journal that lost the access (another ledger), the
    // report is repeated all the same.
    let other = TestBank::beside(kit);
    let mut pinned = platform.monitor(&witness).pinned_to(&saved).unwrap();
    let repeated = pinned.check(&other.bank, &source, later).unwrap();
    assert_eq!(repeated.missing_tokens, reported);
}

/// A ledger that returns a stretch of the journal short (a replica behind, a damaged table)
/// stops the pass with an error instead of the monitor reading past the missing entry; once the
/// ledger answers whole again, the pass reads everything, the shadow broker's token included.
#[test]
fn a_journal_read_short_is_not_read_past() {
    let ledger = Arc::new(FaultStore::new(MemoryStore::new(), 2));
    let (platform, bank, _witness_dir, witness, consent) =
        world_with(|kit| TestBank::on(kit, ledger.clone()));
    let kit = &platform.kit;
    let (shadow, shadow_consent) = shadow_broker(kit, &bank, Some(93));
    serve_following(&shadow, kit, &bank, &shadow_consent);
    serve(kit, &bank, &consent);
    platform.publish(&witness);
    let mut monitor = platform.monitor(&witness);
    let source = DirTiles::new(platform.dir.path());
    let later = kit.broker.now() + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    ledger.short_reads(true);
    assert!(matches!(
        monitor.check(&bank.bank, &source, later),
        Err(MonitorError::Journal(StoreError::Unavailable(_)))
    ));
    ledger.short_reads(false);
    let report = monitor.check(&bank.bank, &source, later).unwrap();
    assert_eq!(report.missing_tokens.len(), 1, "{report:?}");
    assert_eq!(report.missing_tokens[0].terms.consent, *shadow_consent.id());
}

/// The bank's own journal fails as the pass reads it again after fetching the checkpoint: the
/// report says so, and judges nothing, so that an access the platform did publish is not
/// reported missing for a fault of the bank's; the next pass finds it logged.
#[test]
fn a_fault_of_the_banks_journal_is_not_reported_as_the_platforms() {
    let (ledger, (platform, bank, _witness_dir, witness, consent), mut monitor) =
        one_pending_over_a_faulty_ledger();
    let kit = &platform.kit;
    let source = DirTiles::new(platform.dir.path());
    platform.publish(&witness);
    // While the pass fetches the checkpoint, the gate serves another access, and from then on
    // every read of the ledger fails: the pass's second read of the journal fails.
    let hooked = Hooked {
        inner: DirTiles::new(platform.dir.path()),
        hook: std::cell::RefCell::new(Some(Box::new(|| {
            serve(kit, &bank, &consent);
            every_read_fails(&ledger);
        }))),
    };
    let later = kit.broker.now() + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    let faulted = monitor.check(&bank.bank, &hooked, later).unwrap();
    assert!(
        matches!(faulted.log_error, Some(MonitorError::Journal(_))),
        "{faulted:?}"
    );
    assert_eq!(
        (faulted.missing_tokens.len(), faulted.pending),
        (0, 1),
        "nothing judged"
    );
    platform.publish(&witness);
    ledger.random_faults(false);
    let after = monitor.check(&bank.bank, &source, later).unwrap();
    assert!(after.is_clean() && after.pending == 0, "{after:?}");
}

/// A saved state restored beside a journal it was not read from (another ledger of the bank,
/// shorter or longer than what was read: a journal restored from an older copy, or the state of
/// another bank's monitor) is refused at the first pass, and so is a journal that shrinks
/// under a running monitor.
#[test]
fn a_monitor_refuses_a_journal_it_did_not_read() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let saved = monitor.save();
    let read = bank.bank.journal().audit_len().unwrap();
    let source = DirTiles::new(platform.dir.path());
    let now = kit.broker.now();

    let other = TestBank::beside(kit);
    assert!(other.bank.journal().audit_len().unwrap() < read);
    let differs = Err(MonitorError::JournalDiffers { position: read });
    let restored = || platform.monitor(&witness).restore(&saved).unwrap();
    assert_eq!(restored().check(&other.bank, &source, now), differs);
    assert_eq!(monitor.check(&other.bank, &source, now), differs);
    // Entries of its own (the same bank's keys and seeds would make the same approvals).
    for n in 0u8.. {
        if other.bank.journal().audit_len().unwrap() >= read {
            break;
        }
        let device = consent_broker::hpke::DeviceSecretKey::derive(&[n; 8]);
        other
            .bank
            .register_device(&other.customer, device.public_key())
            .unwrap();
    }
    assert_eq!(restored().check(&other.bank, &source, now), differs);
    // Held to the saved checkpoint instead, the monitor reads that journal from its start.
    let mut pinned = platform.monitor(&witness).pinned_to(&saved).unwrap();
    assert!(pinned.check(&other.bank, &source, now).unwrap().is_clean());
    // Its own journal still passes.
    assert!(
        restored()
            .check(&bank.bank, &source, now)
            .unwrap()
            .is_clean()
    );
}

/// A saved state cut short, edited or from another log is refused with a typed error (never a
/// panic, nothing of it used), and a monitor then made anew still works.
#[test]
fn a_saved_state_damaged_or_from_another_log_is_refused() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let (shadow, shadow_consent) = shadow_broker(&platform.kit, &bank, Some(95));
    serve_following(&shadow, &platform.kit, &bank, &shadow_consent);
    let (monitor, _) = watched(&platform, &bank, &witness, &consent);
    let saved = monitor.save();
    let restore = |bytes: &[u8]| platform.monitor(&witness).restore(bytes).map(drop);
    assert_eq!(restore(&saved), Ok(()));

    for len in 0..saved.len() {
        assert!(
            matches!(
                restore(&saved[..len]),
                Err(MonitorError::Saved(SavedStateError::Malformed { .. }))
            ),
            "cut at {len}"
        );
    }
    for at in 0..saved.len() {
        for byte in [b'"', b'0', b'A', b'}'] {
            let mut changed = saved.clone();
            changed[at] = byte;
            // Refused or restored, never a panic (some changes leave a valid state).
            let _ = restore(&changed);
        }
    }

    let state: serde_json::Value = serde_json::from_slice(&saved).unwrap();
    assert_eq!(state["pending"].as_array().map(Vec::len), Some(1));
    let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut state = state.clone();
        edit(&mut state);
        restore(&serde_json::to_vec(&state).unwrap())
    };
    let inconsistent = |what| Err(MonitorError::Saved(SavedStateError::Inconsistent(what)));
    // A table's first row there twice.
    let twice = |table: &str| {
        edited(&|s| {
            let first = s[table][0].clone();
            s[table].as_array_mut().unwrap().push(first);
        })
    };
    assert_eq!(
        edited(&|s| s["format"] = "consent-broker/log-monitor/1".into()),
        Err(MonitorError::Saved(SavedStateError::Format))
    );
    assert!(matches!(
        edited(&|s| s["extra"] = 1.into()),
        Err(MonitorError::Saved(SavedStateError::Malformed { .. }))
    ));
    assert_eq!(
        edited(&|s| s["origin"] = "another.example/log".into()),
        Err(MonitorError::Saved(SavedStateError::OtherLog))
    );
    // The checkpoint's note with one byte of its body changed: the log's signature fails.
    assert_eq!(
        edited(&|s| {
            let note = s["checkpoint"].as_str().unwrap().replacen('\n', "\n1", 1);
            s["checkpoint"] = note.into();
        }),
        Err(MonitorError::Saved(SavedStateError::Checkpoint))
    );
    // Another log's key.
    let stranger =
        consent_broker::checkpoint::NoteSigner::new("stranger", &crate::targets::pkcs8(40))
            .unwrap();
    let policy = WitnessPolicy {
        witnesses: vec![witness.verifier().clone()],
        quorum: 1,
    };
    assert_eq!(
        LogMonitor::new(
            platform.kit.broker.log_origin(),
            NoteVerifier::from_vkey(&stranger.verifier_key()).unwrap(),
            policy,
        )
        .unwrap()
        .restore(&saved)
        .map(drop),
        Err(MonitorError::Saved(SavedStateError::Checkpoint))
    );
    // The tree.
    let other_hash = serde_json::Value::from(consent_broker::encode_hashes(&[[7; 32]]).concat());
    assert_eq!(
        edited(&|s| s["peaks"][0] = other_hash.clone()),
        inconsistent("the tree does not give the checkpoint's root")
    );
    assert_eq!(
        edited(&|s| s["peaks"].as_array_mut().unwrap().push(other_hash.clone())),
        inconsistent("the tree is not of the checkpoint's size")
    );
    assert_eq!(
        edited(&|s| s["peaks"][0] = "AAAA".into()),
        inconsistent("a tree hash is not 32 bytes")
    );
    assert_eq!(
        edited(&|s| s["checkpoint"] = serde_json::Value::Null),
        inconsistent("a tree without a checkpoint")
    );
    // The journal's mark.
    assert_eq!(
        edited(&|s| s["journal_root"] = "AAAA".into()),
        inconsistent("the journal's root is not 32 bytes")
    );
    assert_eq!(
        edited(&|s| s["journal_position"] = 0.into()),
        inconsistent("the journal's root is not its position's")
    );
    // The tables.
    assert_eq!(twice("served"), inconsistent("a token id served twice"));
    assert_eq!(
        edited(&|s| s["pending"][0]["token_id"] = "never-served".into()),
        inconsistent("a pending access whose token was not served")
    );
    assert_eq!(twice("signed"), inconsistent("an attestation signed twice"));
    assert_eq!(
        twice("approvals"),
        inconsistent("more approvals of an attestation than are kept, or one twice")
    );
    assert_eq!(
        edited(&|s| s["issued"][0]["token_id"] = "t".repeat(129).into()),
        inconsistent("a token id or digest longer than is kept")
    );
    assert!(matches!(
        edited(&|s| s["issued"][0]["terms"]["purpose"] = "ads".into()),
        Err(MonitorError::Saved(SavedStateError::Malformed { .. }))
    ));
    // Made anew instead, the monitor works.
    let source = DirTiles::new(platform.dir.path());
    let report = platform
        .monitor(&witness)
        .check(&bank.bank, &source, platform.kit.broker.now())
        .unwrap();
    assert_eq!(report.pending, 1);
}

/// The platform's log as a checkpoint signed now and cosigned by each of `witnesses` at its own
/// time (seconds from now), published in a directory of its own.
fn cosigned_at_times(
    kit: &TestBroker,
    witnesses: &[(&CosignatureSigner, i64)],
) -> tempfile::TempDir {
    let checkpoint = kit.broker.checkpoint().unwrap();
    let body = &checkpoint.note[..checkpoint.note.find("\n\n").unwrap() + 1];
    let mut note = checkpoint.note.clone();
    for (witness, from_now) in witnesses {
        let at = (kit.broker.now().unix_timestamp() + from_now) as u64;
        note = consent_broker::cosignature::add_cosignatures(&note, &witness.cosign(body, at));
    }
    let dir = tempfile::tempdir().unwrap();
    let witnessed = StoredCheckpoint { note, ..checkpoint };
    publish(&kit.broker.store(), dir.path(), &witnessed).unwrap();
    dir
}

/// A checkpoint its witnesses cosigned long ago is reported stale, however valid: the platform
/// stopped publishing, or shows the bank (a monitor made anew after a restart, say) a view it
/// had cosigned once. A quiet log cosigned again is fresh. With two of three witnesses required,
/// one fresh cosignature does not make the checkpoint fresh, and a cosignature dated beyond the
/// bank's clock counts for nothing.
#[test]
fn a_checkpoint_cosigned_long_ago_is_reported_stale() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, first) = watched(&platform, &bank, &witness, &consent);
    let published_at = kit.broker.now().replace_nanosecond(0).unwrap();
    assert_eq!(first.cosigned_at, Some(published_at));
    let older = tempfile::tempdir().unwrap();
    copy_dir(platform.dir.path(), older.path());
    let source = DirTiles::new(platform.dir.path());
    let is_stale = |report: &MonitorReport, when: Option<time::OffsetDateTime>| {
        matches!(
            report.log_error,
            Some(MonitorError::StaleCheckpoint { cosigned_at, max_age })
                if cosigned_at == when && max_age == DEFAULT_MAX_CHECKPOINT_AGE
        )
    };

    // A day on, to the second, the checkpoint is as old as allowed; a second later, stale.
    kit.clock.advance(DEFAULT_MAX_CHECKPOINT_AGE);
    let report = monitor.check(
        &bank.bank,
        &source,
        published_at + DEFAULT_MAX_CHECKPOINT_AGE,
    );
    assert!(report.unwrap().is_clean());
    kit.clock.advance(time::Duration::seconds(1));
    let now = kit.broker.now();
    let report = monitor.check(&bank.bank, &source, now).unwrap();
    assert!(is_stale(&report, Some(published_at)), "{report:?}");
    assert_eq!(report.log_size, first.log_size);
    assert_eq!(report.missing_tokens, []);

    // A monitor made anew, shown the old view: it reads the log, and says it is stale.
    let anew = platform
        .monitor(&witness)
        .check(&bank.bank, &DirTiles::new(older.path()), now)
        .unwrap();
    assert!(is_stale(&anew, Some(published_at)), "{anew:?}");
    assert_eq!(anew.log_size, first.log_size);

    // The platform has its quiet log cosigned again: fresh, at the same size.
    platform.publish(&witness);
    let fresh = monitor.check(&bank.bank, &source, now).unwrap();
    assert!(fresh.is_clean(), "{fresh:?}");
    assert_eq!(fresh.log_size, kit.broker.store().audit_len().unwrap());
    assert_eq!(fresh.cosigned_at, Some(now.replace_nanosecond(0).unwrap()));

    // The bank may take any age.
    let mut any_age = platform.monitor(&witness).max_checkpoint_age(None);
    let later = now + time::Duration::days(30);
    let report = any_age.check(&bank.bank, &source, later).unwrap();
    assert!(report.is_clean(), "{report:?}");

    // A monitor restored or held to a saved state keeps the bank's age, whichever it is.
    let saved = monitor.save();
    let hour = time::Duration::hours(1);
    let strict = || platform.monitor(&witness).max_checkpoint_age(Some(hour));
    let two_hours_on = now + time::Duration::hours(2);
    for mut kept in [
        strict().restore(&saved).unwrap(),
        strict().pinned_to(&saved).unwrap(),
    ] {
        let report = kept.check(&bank.bank, &source, two_hours_on).unwrap();
        assert!(
            matches!(
                report.log_error,
                Some(MonitorError::StaleCheckpoint { max_age, .. }) if max_age == hour
            ),
            "{report:?}"
        );
    }
    let mut lenient = platform.monitor(&witness).max_checkpoint_age(None);
    lenient = lenient.restore(&saved).unwrap();
    let report = lenient.check(&bank.bank, &source, later).unwrap();
    assert!(report.is_clean(), "{report:?}");
    // At the end of time, a stale checkpoint, not a panic.
    let end = time::PrimitiveDateTime::MAX.assume_utc();
    let report = platform.monitor(&witness).check(&bank.bank, &source, end);
    assert!(
        matches!(
            report,
            Ok(MonitorReport {
                log_error: Some(MonitorError::StaleCheckpoint { .. }),
                ..
            })
        ),
        "{report:?}"
    );

    // Two of three witnesses required.
    let signers: Vec<CosignatureSigner> = (0..3)
        .map(|i| {
            let name = format!("witness-{i}.example");
            CosignatureSigner::new(&name, &crate::targets::pkcs8(60 + i)).unwrap()
        })
        .collect();
    let policy = WitnessPolicy {
        witnesses: signers.iter().map(|s| s.verifier().clone()).collect(),
        quorum: 2,
    };
    let origin = kit.broker.log_origin();
    let two_of_three = || LogMonitor::new(origin, platform.log_key(), policy.clone()).unwrap();
    let (w0, w1, w2) = (&signers[0], &signers[1], &signers[2]);
    let now = kit.broker.now();
    let seconds = |s: i64| Some(now.replace_nanosecond(0).unwrap() + time::Duration::seconds(s));
    let two_days = 2 * 86_400;
    let skew = CLOCK_SKEW_ALLOWANCE.whole_seconds();
    type Case<'a> = (
        &'a [(&'a CosignatureSigner, i64)],
        Option<time::OffsetDateTime>,
        bool,
    );
    let cases: [Case; 6] = [
        // The second freshest of the quorum dates the checkpoint.
        (&[(w0, 0), (w1, -60), (w2, -two_days)], seconds(-60), false),
        // One fresh cosignature, the others two days old: stale.
        (
            &[(w0, 0), (w1, -two_days), (w2, -two_days - 5)],
            seconds(-two_days),
            true,
        ),
        // Within the clock allowance ahead: counted.
        (&[(w0, skew), (w1, skew)], seconds(skew), false),
        // Beyond it: not counted, so the old one dates the checkpoint.
        (
            &[(w0, skew + 1), (w1, skew + 3600), (w2, -two_days)],
            None,
            true,
        ),
        (
            &[(w0, skew + 1), (w1, -30), (w2, -two_days)],
            seconds(-two_days),
            true,
        ),
        // One witness's fresh line twice is one witness.
        (
            &[(w0, 0), (w0, 0), (w1, -two_days)],
            seconds(-two_days),
            true,
        ),
    ];
    for (i, (cosigned, when, stale)) in cases.into_iter().enumerate() {
        let dir = cosigned_at_times(kit, cosigned);
        let report = two_of_three()
            .check(&bank.bank, &DirTiles::new(dir.path()), now)
            .unwrap();
        assert_eq!(report.cosigned_at, when, "case {i}: {report:?}");
        assert_eq!(
            matches!(report.log_error, Some(MonitorError::StaleCheckpoint { .. })),
            stale,
            "case {i}: {report:?}"
        );
        assert_eq!(report.log_error.is_none(), !stale, "case {i}: {report:?}");
    }
    // One witness's key listed under a second name is still one witness.
    let alias = CosignatureSigner::new("alias.example", &crate::targets::pkcs8(60)).unwrap();
    let aliased = WitnessPolicy {
        witnesses: vec![
            w0.verifier().clone(),
            alias.verifier().clone(),
            w1.verifier().clone(),
        ],
        quorum: 2,
    };
    let dir = cosigned_at_times(kit, &[(w0, 0), (&alias, 0), (w1, -two_days)]);
    let report = LogMonitor::new(origin, platform.log_key(), aliased)
        .unwrap()
        .check(&bank.bank, &DirTiles::new(dir.path()), now)
        .unwrap();
    assert_eq!(report.cosigned_at, seconds(-two_days), "{report:?}");
}

/// What the bank does when its monitor finds the log wanting: it suspends the platform by its
/// own policy (no scope enabled). That is in its ledger and journal, binds every gate on the
/// ledger at once (the platform's next valid token is refused, and the refusal journalled), and
/// tells the broker by a signed instruction; the bank's policy set again resumes.
#[test]
fn a_bank_suspends_a_platform_whose_log_is_wanting_by_its_policy() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let (shadow, shadow_consent) = shadow_broker(kit, &bank, Some(98));
    serve_following(&shadow, kit, &bank, &shadow_consent);
    let later = kit.broker.now() + DEFAULT_MAX_MERGE_DELAY + time::Duration::seconds(1);
    let source = DirTiles::new(platform.dir.path());
    let report = monitor.check(&bank.bank, &source, later).unwrap();
    assert_eq!(report.missing_tokens.len(), 1, "{report:?}");

    let before = bank.bank.policy().unwrap().map(|record| record.policy);
    let suspended = HolderPolicy {
        enabled_scopes: ScopeSet::new(),
        ..before.clone().unwrap_or_default()
    };
    let instruction = bank.bank.set_policy(suspended).unwrap();
    // A platform that has not applied the instruction (or never will) still issues tokens: the
    // gate refuses them from its own ledger.
    let journalled = bank.bank.journal().audit_len().unwrap();
    let token = kit.token(&kit.access(consent.id()));
    let mut proof = String::new();
    let request = bank.present(kit, &token.token, &mut proof);
    match bank.bank.serve(&request, &bank.accounts) {
        Err(GateError::Refused {
            refusal: GateRefusal::PolicyForbidsScope(_),
            journal_seq: Some(seq),
        }) => assert_eq!(seq, journalled, "the refusal is journalled"),
        other => panic!("served a suspended platform: {other:?}"),
    }
    // The broker that applies it denies the platform's next access itself.
    kit.broker.apply_holder_instruction(&instruction).unwrap();
    assert!(matches!(
        kit.broker.authorise_with_token(&kit.access(consent.id())),
        Ok(TokenOutcome::Denied(denial))
            if denial.reasons == [DenyReason::HolderForbidsScope { scope: Scope::Balance }]
    ));

    // Resumed: the platform's accesses are served again.
    let instruction = bank.bank.set_policy(before.unwrap_or_default()).unwrap();
    kit.broker.apply_holder_instruction(&instruction).unwrap();
    serve(kit, &bank, &consent);
}

/// The monitor judges what the bank's journal commits to. An entry edited in the ledger's file
/// after the journal's tree was written (an insider hiding an access, a damaged disk), so that
/// the entries read no longer give the journal's stored tree, stops the pass as the bank's own
/// fault, and nothing of it is kept: with the entry as written again, the next pass reads it.
#[test]
fn journal_entries_that_do_not_give_the_journals_tree_are_not_judged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.sqlite");
    let (platform, bank, _witness_dir, witness, consent) =
        world_with(|kit| TestBank::on(kit, SqliteStore::open(&path).unwrap()));
    let kit = &platform.kit;
    let (mut monitor, first) = watched(&platform, &bank, &witness, &consent);
    // Past a complete subtree of 16, whose node the file stores (levels 1 to 3 it derives from
    // the leaves' stored hashes).
    for _ in 0..20 {
        serve(kit, &bank, &consent);
    }
    platform.publish(&witness);
    let last = bank.bank.journal().audit_len().unwrap() - 1;

    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_update").unwrap();
    let written: String = db
        .query_row(
            "SELECT entry FROM audit WHERE seq = ?1",
            [last as i64],
            |row| row.get(0),
        )
        .unwrap();
    let set = |text: &str| {
        let changed = db
            .execute(
                "UPDATE audit SET entry = ?1 WHERE seq = ?2",
                rusqlite::params![text, last as i64],
            )
            .unwrap();
        assert_eq!(changed, 1);
    };
    // Another second for the access, the entry still an entry.
    let at = written.find("\"at\":").unwrap() + 5;
    let mut edited = written.clone().into_bytes();
    edited[at + 5] = if edited[at + 5] == b'0' { b'1' } else { b'0' };
    set(std::str::from_utf8(&edited).unwrap());
    assert!(AuditEntry::from_bytes(&edited).is_ok());

    let source = DirTiles::new(platform.dir.path());
    let now = kit.broker.now();
    let refused = monitor.check(&bank.bank, &source, now);
    assert!(
        matches!(refused, Err(MonitorError::Journal(StoreError::Corrupt(_)))),
        "{refused:?}"
    );
    set(&written);
    let report = monitor.check(&bank.bank, &source, now).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.pending, 0);
    assert!(report.log_size > first.log_size);
}

/// `save_to` replaces the saved state whole: the file holds exactly what `save` gives, restores
/// to a monitor that goes on, and a write that fails leaves the last state and nothing beside it.
#[test]
fn a_state_saved_to_a_file_is_replaced_whole_or_not_at_all() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.json");
    std::fs::write(&file, b"an older state").unwrap();
    monitor.save_to(&file).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), monitor.save());
    // Readable by its owner alone: it names tokens, attestations and consents.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let names = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    // Beside it, the lock that keeps a second monitor from saving to it.
    assert_eq!(names(dir.path()), ["monitor.json", "monitor.json.lock"]);
    let mut restored = platform
        .monitor(&witness)
        .restore(&std::fs::read(&file).unwrap())
        .unwrap();
    let source = DirTiles::new(platform.dir.path());
    let report = restored
        .check(&bank.bank, &source, platform.kit.broker.now())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");

    // A file where the state's directory should be: the write fails, typed, and nothing changes.
    let blocked = dir.path().join("monitor.json").join("state.json");
    assert!(monitor.save_to(&blocked).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), monitor.save());
    assert_eq!(names(dir.path()), ["monitor.json", "monitor.json.lock"]);
    // A directory where the state should be: written beside it, the rename fails, and the
    // written copy is removed.
    let occupied = dir.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    assert!(monitor.save_to(&occupied).is_err());
    assert_eq!(
        names(dir.path()),
        [
            "monitor.json",
            "monitor.json.lock",
            "occupied",
            "occupied.lock"
        ]
    );
}

/// A tile source that runs `then` once, when the checkpoint is first read (what happens beside
/// the pass while it fetches the checkpoint).
struct OnCheckpoint<T, F: Fn()> {
    inner: T,
    then: F,
    done: std::cell::Cell<bool>,
}

impl<T: consent_broker::tiles::TileSource, F: Fn()> consent_broker::tiles::TileSource
    for OnCheckpoint<T, F>
{
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TileError> {
        if path == "checkpoint" && !self.done.replace(true) {
            (self.then)();
        }
        self.inner.read(path)
    }
}

/// The journal the pass reads again after fetching the checkpoint (for attestations signed
/// meanwhile) is anchored to its tree as the first read is. An `attestation_signed` entry added
/// to the ledger's file without its leaf while the pass fetches the checkpoint (a copy of the
/// bank's own with its digest dropped, which would have taken the place of the one the bank
/// signed) stops the pass as the bank's fault; once it is gone, the next pass is clean and the
/// monitor still holds the digest the bank signed.
#[test]
fn an_entry_added_to_the_journal_without_its_leaf_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.sqlite");
    let (platform, bank, _witness_dir, witness, consent) =
        world_with(|kit| TestBank::on(kit, SqliteStore::open(&path).unwrap()));
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_delete").unwrap();
    let signed: String = db
        .query_row(
            "SELECT entry FROM audit WHERE entry LIKE '%\"kind\":\"attestation_signed\"%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let len = bank.bank.journal().audit_len().unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(&signed).unwrap();
    assert!(forged["attestation_digest"].is_string());
    forged["seq"] = serde_json::json!(len);
    forged.as_object_mut().unwrap().remove("attestation_digest");
    let forged = serde_json::to_string(&forged).unwrap();
    let source = OnCheckpoint {
        inner: DirTiles::new(platform.dir.path()),
        then: || {
            db.execute(
                "INSERT INTO audit (seq, entry) VALUES (?1, ?2)",
                rusqlite::params![len as i64, forged],
            )
            .unwrap();
        },
        done: std::cell::Cell::new(false),
    };
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(
        matches!(
            report.log_error,
            Some(MonitorError::Journal(StoreError::Corrupt(_)))
        ),
        "{report:?}"
    );
    db.execute("DELETE FROM audit WHERE seq = ?1", [len as i64])
        .unwrap();
    let source = DirTiles::new(platform.dir.path());
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    let saved: serde_json::Value = serde_json::from_slice(&monitor.save()).unwrap();
    let kept = saved["signed"].as_array().unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0]["digest"].is_string(), "{kept:?}");
}

/// The lines of a monitor's state file: the whole state, then each record of changes.
fn lines(file: &Path) -> Vec<Vec<u8>> {
    std::fs::read(file)
        .unwrap()
        .split(|byte| *byte == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// `file` holds `monitor`'s whole state alone: the last save wrote it whole.
fn assert_written_whole(file: &Path, monitor: &LogMonitor) {
    assert_eq!(
        std::fs::read(file).unwrap(),
        monitor.save(),
        "written whole"
    );
}

/// `running`'s state, restored from `file` by `restore_from` and by `restore` of its bytes,
/// must be exactly what `running` holds.
fn assert_restores_to(platform: &Platform, witness: &Witness, file: &Path, running: &LogMonitor) {
    let held = running.save();
    let restored = platform.monitor(witness).restore_from(file).unwrap();
    assert_eq!(
        restored.save(),
        held,
        "restore_from gives the running state"
    );
    let bytes = std::fs::read(file).unwrap();
    let restored = platform.monitor(witness).restore(&bytes).unwrap();
    assert_eq!(restored.save(), held, "restore of the file's bytes too");
}

/// A monitor that saves to a file after its passes writes the whole state once, then appends
/// what each pass changed: restored from the file after any save, it holds exactly what the
/// running monitor holds. The passes add, judge (logged, and missing past the merge delay) and
/// forget (tokens read and ids served before the time a token can live), some between two
/// saves; another customer's consent is approved now and then (an attestation signed, an
/// approval and a consent read from the log).
#[test]
fn a_state_file_appended_to_restores_what_the_running_monitor_holds() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut running, _) = watched(&platform, &bank, &witness, &consent);
    let (shadow, shadow_consent) = shadow_broker(kit, &bank, Some(97));
    let source = DirTiles::new(platform.dir.path());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.state");
    running.save_to(&file).unwrap();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        running.save(),
        "whole at first"
    );
    let count = |state: &[u8], table: &str| {
        let state: serde_json::Value = serde_json::from_slice(state).unwrap();
        state[table].as_array().unwrap().len()
    };
    let (mut issued, mut reported, mut forgot) = (0, 0, false);
    for round in 0..14 {
        serve(kit, &bank, &consent);
        serve(kit, &bank, &consent);
        if round % 6 == 0 {
            shadow.clock.set(kit.broker.now());
            serve_following(&shadow, kit, &bank, &shadow_consent);
        }
        if round % 5 == 2 {
            // Another customer's consent: an attestation signed, its approval logged.
            let other = bank.granted(kit);
            serve(kit, &bank, &other);
        }
        if round % 2 == 0 {
            platform.publish(&witness);
        }
        kit.clock.advance(time::Duration::minutes(10));
        let report = running
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap();
        reported += report.missing_tokens.len();
        let held = count(&running.save(), "issued");
        forgot |= held < issued;
        issued = held;
        // Saved after two passes of three.
        if round % 3 != 1 {
            running.save_to(&file).unwrap();
            assert_restores_to(&platform, &witness, &file, &running);
        }
    }
    assert!(
        reported >= 2,
        "the shadow broker's tokens reported: {reported}"
    );
    assert!(forgot, "tokens read from the log were forgotten");
    let written = lines(&file);
    assert!(
        written.len() > 5,
        "records appended: {} lines",
        written.len()
    );
    let whole = running.save().len();
    assert!(
        written[1..].iter().all(|record| record.len() < whole),
        "each record is smaller than the whole state ({whole} bytes)"
    );
}

/// A record of two passes keeps each pass's forgetting in its order: a pass forgets the token
/// read at the first (its time is past), and the next, given an earlier time (a clock set
/// back), forgets less and reads a new token, older than what the pass before forgot. Replayed
/// with the second's forgetting alone, the first token would be kept; with the first's applied
/// to the second's additions, the new one would be lost.
#[test]
fn a_record_of_several_passes_forgets_in_their_order() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let (mut running, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.state");
    running.save_to(&file).unwrap();
    let issued = |monitor: &LogMonitor| {
        let state: serde_json::Value = serde_json::from_slice(&monitor.save()).unwrap();
        state["issued"].as_array().unwrap().len()
    };
    assert_eq!(issued(&running), 1);
    let read_at = platform.kit.broker.now();
    running
        .check(&bank.bank, &source, read_at + time::Duration::minutes(30))
        .unwrap();
    assert_eq!(
        issued(&running),
        0,
        "forgotten: read longer ago than a token lives"
    );
    serve(&platform.kit, &bank, &consent);
    platform.publish(&witness);
    running
        .check(&bank.bank, &source, read_at + time::Duration::minutes(5))
        .unwrap();
    assert_eq!(issued(&running), 1, "the new token is kept");
    running.save_to(&file).unwrap();
    assert_eq!(lines(&file).len(), 2, "one record, of both passes");
    assert_restores_to(&platform, &witness, &file, &running);
}

/// A monitor saved to `file` whole, then after two passes each serving an access: the state
/// after the first of them, and the file's bytes then.
fn saved_twice_after_the_whole(
    platform: &Platform,
    bank: &TestBank,
    witness: &Witness,
    consent: &Consent,
    file: &Path,
) -> (LogMonitor, Vec<u8>, Vec<u8>) {
    let kit = &platform.kit;
    let (mut running, _) = watched(platform, bank, witness, consent);
    let source = DirTiles::new(platform.dir.path());
    running.save_to(file).unwrap();
    let pass = |running: &mut LogMonitor| {
        serve(kit, bank, consent);
        platform.publish(witness);
        running
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap();
        running.save_to(file).unwrap();
    };
    pass(&mut running);
    let (state, bytes) = (running.save(), std::fs::read(file).unwrap());
    pass(&mut running);
    assert_eq!(lines(file).len(), 3, "the whole state and two records");
    (running, state, bytes)
}

/// A save cut short by a crash, at any byte of the record it was appending (and with zero
/// bytes after it, as a power loss may leave), restores to the state of the save before; the
/// monitor restored from it writes its next save whole. A record damaged otherwise, removed,
/// repeated or of another log is refused, typed, and never taken as cut short.
#[test]
fn a_save_cut_short_restores_the_one_before_and_damage_is_refused() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.state");
    let (running, before, bytes_before) =
        saved_twice_after_the_whole(&platform, &bank, &witness, &consent, &file);
    let whole = std::fs::read(&file).unwrap();
    let restore_bytes = |bytes: &[u8]| {
        std::fs::write(&file, bytes).unwrap();
        platform
            .monitor(&witness)
            .restore_from(&file)
            .map(|monitor| String::from_utf8(monitor.save()).unwrap())
    };
    let before = String::from_utf8(before).unwrap();
    assert_eq!(
        restore_bytes(&whole),
        Ok(String::from_utf8(running.save()).unwrap())
    );
    let cuts: Vec<usize> = (bytes_before.len()..whole.len())
        .step_by(13)
        .chain([bytes_before.len() + 1, whole.len() - 1])
        .collect();
    for cut in cuts {
        assert_eq!(
            restore_bytes(&whole[..cut]),
            Ok(before.clone()),
            "cut at {cut}"
        );
        let mut zeroed = whole[..cut].to_vec();
        zeroed.resize(cut + 4096, 0);
        assert_eq!(
            restore_bytes(&zeroed),
            Ok(before.clone()),
            "cut at {cut}, zeros after"
        );
    }
    // A power loss can leave a block of the append as zeros, its newline too, with the rest of
    // it written: the part after the first zero byte of the last line is left out.
    let newline = bytes_before.len();
    for (from, to) in [(newline, newline + 40), (newline + 100, newline + 140)] {
        let mut holed = whole.clone();
        holed[from..to].fill(0);
        assert_eq!(
            restore_bytes(&holed),
            Ok(before.clone()),
            "zeros at {from}..{to}"
        );
    }
    // Zeros in a line before the last are damage, refused.
    let mut holed = whole.clone();
    holed[newline - 40..newline - 20].fill(0);
    assert!(matches!(
        restore_bytes(&holed),
        Err(MonitorError::Saved(SavedStateError::Malformed { .. }))
    ));
    // Restored from a file cut short (the monitor that wrote it gone), the next save writes the
    // whole state.
    drop(running);
    std::fs::write(&file, &whole[..whole.len() - 10]).unwrap();
    let mut restored = platform.monitor(&witness).restore_from(&file).unwrap();
    let source = DirTiles::new(platform.dir.path());
    restored
        .check(&bank.bank, &source, platform.kit.broker.now())
        .unwrap();
    restored.save_to(&file).unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), restored.save());

    let saved = |error| Err(MonitorError::Saved(error));
    let broken = saved(SavedStateError::Inconsistent(
        "a record of changes that does not follow the line before it",
    ));
    let written: Vec<Vec<u8>> = whole.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    let joined = |lines: &[Vec<u8>]| lines.join(&b'\n');
    // The first record's journal position changed (still JSON, still in order): the record
    // after it no longer follows it.
    let mut changed = written.clone();
    let text = String::from_utf8(changed[1].clone()).unwrap();
    let edited = text.replacen("\"journal_position\":", "\"journal_position\":1", 1);
    assert_ne!(edited, text);
    changed[1] = edited.into_bytes();
    assert_eq!(restore_bytes(&joined(&changed)), broken);
    // The first record left out, or repeated.
    assert_eq!(
        restore_bytes(&joined(&[written[0].clone(), written[2].clone()])),
        broken
    );
    assert_eq!(
        restore_bytes(&joined(&[
            written[0].clone(),
            written[1].clone(),
            written[1].clone(),
            written[2].clone()
        ])),
        broken
    );
    // The last record damaged, not cut: refused, not left out.
    let mut damaged = written.clone();
    let quote = damaged[2].iter().position(|b| *b == b'"').unwrap();
    damaged[2][quote] = b'x';
    assert!(matches!(
        restore_bytes(&joined(&damaged)),
        Err(MonitorError::Saved(SavedStateError::Malformed {
            line: 3,
            ..
        }))
    ));
    // A record of another log's.
    let mut other = written.clone();
    let text = String::from_utf8(other[2].clone()).unwrap();
    let origin = platform.kit.broker.log_origin();
    let field = format!("\"origin\":\"{origin}\"");
    assert!(text.contains(&field));
    other[2] = text
        .replacen(&field, "\"origin\":\"another.example/log\"", 1)
        .into_bytes();
    assert_eq!(
        restore_bytes(&joined(&other)),
        saved(SavedStateError::OtherLog)
    );
    // The bytes alone restore the same way.
    assert_eq!(
        platform
            .monitor(&witness)
            .restore(&whole[..whole.len() - 3])
            .map(|monitor| String::from_utf8(monitor.save()).unwrap()),
        Ok(before)
    );
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        platform.monitor(&witness).restore_from(&file).map(drop),
        Err(MonitorError::Saved(SavedStateError::Unreadable(
            std::io::ErrorKind::NotFound
        )))
    );
}

/// A file put in the place of the monitor's (an older copy restored over it, or the same bytes
/// in another file) is not appended to: the next save writes the whole state there.
#[test]
fn a_file_put_in_place_of_the_monitors_is_written_whole() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.state");
    let (mut running, _, older) =
        saved_twice_after_the_whole(&platform, &bank, &witness, &consent, &file);
    let source = DirTiles::new(platform.dir.path());
    let pass_and_save = |running: &mut LogMonitor| {
        serve(&platform.kit, &bank, &consent);
        platform.publish(&witness);
        running
            .check(&bank.bank, &source, platform.kit.broker.now())
            .unwrap();
        running.save_to(&file).unwrap();
    };
    // The older copy written over it (the same file, shorter).
    std::fs::write(&file, &older).unwrap();
    pass_and_save(&mut running);
    assert_written_whole(&file, &running);
    pass_and_save(&mut running);
    assert_eq!(lines(&file).len(), 2, "then appended to");
    assert_restores_to(&platform, &witness, &file, &running);
    // The same bytes in another file renamed over it.
    #[cfg(unix)]
    {
        let copy = dir.path().join("copy");
        std::fs::copy(&file, &copy).unwrap();
        std::fs::rename(&copy, &file).unwrap();
        pass_and_save(&mut running);
        assert_written_whole(&file, &running);
    }
    // Saved to another path, then back: each written whole first.
    let elsewhere = dir.path().join("elsewhere.state");
    pass_and_save(&mut running);
    running.save_to(&elsewhere).unwrap();
    assert_eq!(std::fs::read(&elsewhere).unwrap(), running.save());
    pass_and_save(&mut running);
    assert_written_whole(&file, &running);
    assert_restores_to(&platform, &witness, &file, &running);
}

/// The records appended after the whole state stay within the whole state's length or 1 MiB,
/// whichever is more: past it, the save writes the whole state again.
#[test]
fn a_state_file_is_written_whole_again_once_its_records_outgrow_it() {
    const COMPACT_PAST: usize = 1 << 20;
    let (platform, bank, _witness_dir, witness, consent) = world();
    let (mut running, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.state");
    running.save_to(&file).unwrap();
    let mut appended = 0;
    let mut longest = 0;
    for pass in 0..4000 {
        running
            .check(&bank.bank, &source, platform.kit.broker.now())
            .unwrap();
        running.save_to(&file).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        let whole = bytes.split(|b| *b == b'\n').next().unwrap().len();
        assert!(
            bytes.len() <= whole + whole.max(COMPACT_PAST),
            "pass {pass}: {} bytes for a state of {whole}",
            bytes.len()
        );
        longest = longest.max(bytes.len());
        if bytes.len() == whole {
            assert_eq!(bytes, running.save());
            break;
        }
        appended += 1;
    }
    assert!(
        longest > COMPACT_PAST,
        "the records grew past 1 MiB ({longest} bytes) before the whole state was written again, after {appended} records"
    );
    assert_restores_to(&platform, &witness, &file, &running);
}

/// `restore_from` reads only a regular file (not a device or a directory given by mistake), and
/// stops at the first line that is not a record (a file of empty lines is not split whole
/// first).
#[test]
fn restore_from_refuses_what_is_not_a_state_file() {
    let (platform, _bank, _witness_dir, witness, _consent) = world();
    let dir = tempfile::tempdir().unwrap();
    let refused = |path: &Path| platform.monitor(&witness).restore_from(path).map(drop);
    let invalid = Err(MonitorError::Saved(SavedStateError::Unreadable(
        std::io::ErrorKind::InvalidInput,
    )));
    assert_eq!(refused(dir.path()), invalid);
    #[cfg(unix)]
    {
        assert_eq!(refused(Path::new("/dev/null")), invalid);
        // A FIFO, which opening would wait on for a writer.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let (done, result) = std::sync::mpsc::channel();
        let monitor = platform.monitor(&witness);
        std::thread::spawn(move || {
            let _ = done.send(monitor.restore_from(&fifo).map(drop));
        });
        assert_eq!(
            result.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(invalid.clone())
        );
    }
    let monitor = platform.monitor(&witness);
    let mut empty_lines = monitor.save();
    empty_lines.resize(empty_lines.len() + (1 << 20), b'\n');
    let file = dir.path().join("monitor.state");
    std::fs::write(&file, &empty_lines).unwrap();
    assert!(matches!(
        refused(&file),
        Err(MonitorError::Saved(SavedStateError::Malformed {
            line: 2,
            ..
        }))
    ));
}

/// A file written over in place with other contents of the same length (an older copy, of
/// another save) is not appended to: the last line read back does not match, and the save
/// writes the whole state.
#[test]
fn a_file_written_over_with_the_same_length_is_written_whole() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.state");
    let (mut running, _, _) =
        saved_twice_after_the_whole(&platform, &bank, &witness, &consent, &file);
    let mut other = std::fs::read(&file).unwrap();
    // One character of the last record's journal root changed: the same length, in place.
    let text = String::from_utf8(other.clone()).unwrap();
    let at = text.rfind("\"journal_root\":\"").unwrap() + "\"journal_root\":\"".len();
    other[at] = if other[at] == b'A' { b'B' } else { b'A' };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &other))
        .unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), other);
    serve(&platform.kit, &bank, &consent);
    platform.publish(&witness);
    running
        .check(
            &bank.bank,
            &DirTiles::new(platform.dir.path()),
            platform.kit.broker.now(),
        )
        .unwrap();
    running.save_to(&file).unwrap();
    assert_written_whole(&file, &running);
    assert_restores_to(&platform, &witness, &file, &running);
}

/// One monitor saves to a file at a time: a second one (restored from the file while the first
/// runs) is refused a save, typed, and the file is left as the first wrote it; once the first
/// is gone, the second saves (whole: the file has moved on since it read it).
#[test]
fn a_second_monitor_is_refused_a_save_to_the_same_file() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.state");
    let (mut first, _, _) =
        saved_twice_after_the_whole(&platform, &bank, &witness, &consent, &file);
    let mut second = platform.monitor(&witness).restore_from(&file).unwrap();
    let written = std::fs::read(&file).unwrap();
    let refused = second.save_to(&file).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(std::fs::read(&file).unwrap(), written);
    let source = DirTiles::new(platform.dir.path());
    let now = platform.kit.broker.now();
    first.check(&bank.bank, &source, now).unwrap();
    first.save_to(&file).unwrap();
    assert_restores_to(&platform, &witness, &file, &first);
    drop(first);
    second.check(&bank.bank, &source, now).unwrap();
    second.save_to(&file).unwrap();
    assert_written_whole(&file, &second);
}

/// A tile source that has the checkpoint and none of the tiles: a pass then fails after it has
/// read the bank's journal again (and kept the attestations signed meanwhile).
struct CheckpointOnly<T>(T);

impl<T: consent_broker::tiles::TileSource> consent_broker::tiles::TileSource for CheckpointOnly<T> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, TileError> {
        if path == "checkpoint" {
            self.0.read(path)
        } else {
            Ok(None)
        }
    }
}

/// Random runs of passes and saves, each checked against the running monitor: whatever the
/// passes did (served tokens, a shadow broker's, another customer's consent, a log published or
/// not, a pass whose tiles cannot be read, a clock moved either way) and however it was saved
/// (to the file, to another, not at all, the monitor restored from the file and carried on
/// with), the file restores to exactly what the running monitor holds after each save.
#[test]
fn random_passes_and_saves_restore_what_the_running_monitor_holds() {
    for seed in 1..=6u64 {
        let (platform, bank, _witness_dir, witness, consent) = world();
        let kit = &platform.kit;
        let (mut running, _) = watched(&platform, &bank, &witness, &consent);
        // The platform's next consent ids past the shadow broker's (the kit's ids count up).
        for _ in 0..8 {
            kit.request();
        }
        let (shadow, shadow_consent) = shadow_broker(kit, &bank, Some(100 + seed));
        let source = DirTiles::new(platform.dir.path());
        let dir = tempfile::tempdir().unwrap();
        let (file, other) = (dir.path().join("monitor.state"), dir.path().join("other"));
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut roll = |sides: u64| {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % sides
        };
        let mut clock_shift = time::Duration::ZERO;
        let mut appended = 0;
        for round in 0..30 {
            for _ in 0..roll(3) {
                serve(kit, &bank, &consent);
            }
            if roll(5) == 0 {
                shadow.clock.set(kit.broker.now());
                serve_following(&shadow, kit, &bank, &shadow_consent);
            }
            if roll(6) == 0 {
                let another = bank.granted(kit);
                serve(kit, &bank, &another);
            }
            if roll(3) != 0 {
                platform.publish(&witness);
            }
            kit.clock
                .advance(time::Duration::minutes(i64::try_from(roll(12)).unwrap()));
            if roll(6) == 0 {
                clock_shift = time::Duration::minutes(i64::try_from(roll(61)).unwrap() - 30);
            }
            let now = kit.broker.now() + clock_shift;
            if roll(7) == 0 {
                // A log error when there is something new to read.
                running
                    .check(
                        &bank.bank,
                        &CheckpointOnly(DirTiles::new(platform.dir.path())),
                        now,
                    )
                    .unwrap();
            } else {
                running.check(&bank.bank, &source, now).unwrap();
            }
            match roll(8) {
                0 => running.save_to(&other).unwrap(),
                1 | 2 => {}
                _ => {
                    running.save_to(&file).unwrap();
                    assert_restores_to(&platform, &witness, &file, &running);
                    appended += usize::from(lines(&file).len() > 1);
                    if roll(6) == 0 {
                        let held = running.save();
                        drop(running);
                        running = platform.monitor(&witness).restore_from(&file).unwrap();
                        assert_eq!(running.save(), held, "seed {seed} round {round}");
                    }
                }
            }
        }
        assert!(appended > 3, "seed {seed}: records appended to the file");
    }
}

/// A save makes the state file's directory when it is missing; the lock is kept when a save to
/// another path fails (a second monitor is still refused the first's file), and kept, not
/// refused, for the same file named another way.
#[test]
fn the_state_files_lock_is_kept_across_failures_and_names() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let (mut first, _) = watched(&platform, &bank, &witness, &consent);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new").join("monitor.state");
    first.save_to(&file).unwrap();
    assert_written_whole(&file, &first);
    first.save_to(&file).unwrap();
    // A path under the state file itself: no directory can be made there.
    assert!(first.save_to(&file.join("x")).is_err());
    let mut second = platform.monitor(&witness).restore_from(&file).unwrap();
    let refused = second.save_to(&file).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::TimedOut);
    // The same file through a directory and back: the first's own lock, not another's.
    std::fs::create_dir(dir.path().join("new").join("sub")).unwrap();
    let respelled = dir
        .path()
        .join("new")
        .join("sub")
        .join("..")
        .join("monitor.state");
    first.save_to(&respelled).unwrap();
    assert_eq!(
        second.save_to(&file).unwrap_err().kind(),
        std::io::ErrorKind::TimedOut
    );
    assert_restores_to(&platform, &witness, &file, &first);
}

/// A saved state whose pending access was served at the earliest time the format reads restores
/// (a state the bank keeps, edited or damaged), and a pass that cannot judge it (the journal's
/// second read fails, so pending accesses are not judged) goes on to forget what a token could
/// no longer match, counting back from that time: no overflow, no panic. The next pass reports
/// the access missing, as one served that long ago.
#[test]
fn a_pending_access_served_at_the_start_of_time_is_no_panic() {
    let (ledger, (platform, bank, _witness_dir, witness, _), monitor) =
        one_pending_over_a_faulty_ledger();
    let kit = &platform.kit;
    let source = DirTiles::new(platform.dir.path());
    // Every `served_at` at the earliest time the format reads (the JSON edited as text).
    let earliest = time::PrimitiveDateTime::MIN
        .assume_utc()
        .unix_timestamp_nanos()
        .to_string();
    let saved = String::from_utf8(monitor.save()).unwrap();
    let key = "\"served_at\":";
    let (mut edited, mut rest) = (String::new(), saved.as_str());
    while let Some(at) = rest.find(key) {
        let (head, tail) = rest.split_at(at + key.len());
        edited.push_str(head);
        edited.push_str(&earliest);
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-');
    }
    edited.push_str(rest);
    assert!(edited.contains(&earliest));
    let mut restored = platform
        .monitor(&witness)
        .restore(edited.as_bytes())
        .unwrap();
    let faulted = Hooked {
        inner: DirTiles::new(platform.dir.path()),
        hook: std::cell::RefCell::new(Some(Box::new(|| {
            every_read_fails(&ledger);
        }))),
    };
    let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        restored.check(&bank.bank, &faulted, kit.broker.now())
    }));
    ledger.random_faults(false);
    let pass = pass.expect("the pass does not panic");
    assert!(
        pass.is_err() || pass.as_ref().is_ok_and(|report| report.log_error.is_some()),
        "the journal's read failed: {pass:?}"
    );
    let next = restored
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert_eq!(next.missing_tokens.len(), 1, "{next:?}");
}

/// The platform hands the bank a feed signed with its broker's key, complete and fresh,
/// covering its log to the end and carrying none of its stops.
fn feed_leaving_out_every_stop<L: Store + LedgerRead>(kit: &TestBroker, bank: &TestBank<L>) -> u64 {
    let after = bank
        .bank
        .ledger()
        .feed_state()
        .unwrap()
        .map_or(0, |f| f.position);
    let end = kit.broker.store().audit_len().unwrap();
    let feed = crate::support::feed_as_broker(
        &StoreNodes(&kit.broker.store()),
        after,
        end,
        kit.broker.now().unix_timestamp(),
        &[],
    );
    bank.bank.apply_revocation_feed(&feed).unwrap();
    end
}

/// The feed is the platform's word, the log its witnesses' view: a stop the log shows for one
/// of the bank's consents that the feed passed over is reported (the bank's gate was never
/// told of it), once; a stop the feed carries is not, whichever of the two the monitor sees
/// first.
#[test]
fn a_stop_the_platform_logs_but_leaves_out_of_its_feed_is_reported() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (chat, later, left_out) = (bank.granted(kit), bank.granted(kit), bank.granted(kit));
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let mut pass = || {
        monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap()
    };

    // The log shows the stop before the bank's feed comes to it: pending, then carried.
    kit.withdrawn(chat.id());
    platform.publish(&witness);
    let report = pass();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.pending_revocations, 1);
    bank.sync(kit).unwrap();
    let report = pass();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.pending_revocations, 0);

    // The feed carries a stop before the log the monitor reads shows it.
    kit.withdrawn(later.id());
    bank.sync(kit).unwrap();
    let report = pass();
    assert!(report.is_clean(), "{report:?}");
    platform.publish(&witness);
    let report = pass();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.pending_revocations, 0);

    // The platform logs a stop and hands the bank a feed past it that leaves it out.
    let seq = kit.withdrawn(left_out.id());
    let fed_to = feed_leaving_out_every_stop(kit, &bank);
    let view = bank.bank.ledger().feed_state().unwrap().unwrap();
    assert_eq!(
        view.position, fed_to,
        "the bank took the feed: its view is fresh"
    );
    platform.publish(&witness);
    let report = pass();
    assert!(!report.is_clean());
    assert_eq!(
        report.undelivered_revocations,
        [UndeliveredRevocation {
            consent: left_out.id().clone(),
            seq,
            fed_to,
        }]
    );
    assert_eq!(report.missing_tokens, []);
    // Reported once.
    let report = pass();
    assert!(report.is_clean(), "{report:?}");
}

/// What the watch over the stops holds between passes is saved: a stop the log showed before
/// the save is judged after the restore, a consent a feed carried before the save matches the
/// stop the restored monitor reads, and a report made before the save is made again after it.
/// A state saved by the version before (without the watch) is not restored, and is pinned to.
#[test]
fn the_watch_over_the_platforms_stops_survives_a_restart() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (carried, left_out) = (bank.granted(kit), bank.granted(kit));
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("monitor.state");
    let restarted = |mut monitor: LogMonitor| {
        monitor.save_to(&file).unwrap();
        let held = monitor.save();
        drop(monitor);
        let restored = platform.monitor(&witness).restore_from(&file).unwrap();
        assert!(restored.save() == held, "restored as it was saved");
        restored
    };

    // Carried by the feed before the monitor's log shows it; the monitor restarts between.
    kit.withdrawn(carried.id());
    bank.sync(kit).unwrap();
    monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    let mut monitor = restarted(monitor);
    platform.publish(&witness);
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");

    // Shown by the log before the feed passes it; the monitor restarts between.
    let seq = kit.withdrawn(left_out.id());
    platform.publish(&witness);
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert_eq!(report.pending_revocations, 1);
    let mut monitor = restarted(monitor);
    let fed_to = feed_leaving_out_every_stop(kit, &bank);
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    let expected = [UndeliveredRevocation {
        consent: left_out.id().clone(),
        seq,
        fed_to,
    }];
    assert_eq!(report.undelivered_revocations, expected);
    // Saved after the pass that reported it: reported again once restored, then not.
    let mut monitor = restarted(monitor);
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert_eq!(report.undelivered_revocations, expected);
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");

    // The saved watch is checked against itself and the rest of the state.
    let saved: serde_json::Value = serde_json::from_slice(&monitor.save()).unwrap();
    let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut state = saved.clone();
        edit(&mut state);
        platform
            .monitor(&witness)
            .restore(&serde_json::to_vec(&state).unwrap())
            .map(drop)
    };
    let stop =
        |position: u64| serde_json::json!({ "consent": left_out.id(), "position": position });
    for (table, position) in [("logged", 0), ("logged", fed_to + 100), ("delivered", 1)] {
        assert!(
            matches!(
                edited(&|s| s["revocations"][table] = serde_json::json!([stop(position)])),
                Err(MonitorError::Saved(SavedStateError::Inconsistent(_)))
            ),
            "{table} at {position}"
        );
    }

    // A state of the version before: refused by `restore`, taken by `pinned_to`, which reads
    // the journal and the log again from their start.
    let mut older = saved.clone();
    older["format"] = "consent-broker/log-monitor/2".into();
    older.as_object_mut().unwrap().remove("revocations");
    let older = serde_json::to_vec(&older).unwrap();
    assert_eq!(
        platform.monitor(&witness).restore(&older).map(drop),
        Err(MonitorError::Saved(SavedStateError::Format))
    );
    let mut pinned = platform.monitor(&witness).pinned_to(&older).unwrap();
    let report = pinned.check(&bank.bank, &source, kit.broker.now()).unwrap();
    assert_eq!(
        report.undelivered_revocations, expected,
        "read again from the start"
    );
}

/// How far the bank has followed the feed.
fn fed_to<L: Store + LedgerRead>(bank: &TestBank<L>) -> u64 {
    bank.bank
        .ledger()
        .feed_state()
        .unwrap()
        .map_or(0, |f| f.position)
}

/// A stop of one of the bank's consents as the platform logs it, its broker's state left live
/// (the platform owns its store), naming `holder`.
fn logged_stop(kit: &TestBroker, consent: &ConsentId, holder: HolderId) -> u64 {
    kit.logs_as_it_likes(AuditEvent::ConsentRevoked {
        consent: consent.clone(),
        subject: "ps_AAAAAAAAAAAAAAAAAAAAAA".parse().unwrap(),
        revocation: Revocation {
            by: Revoker::Subject,
            reason: RevocationReason::SubjectWithdrew,
        },
        instruction: None,
        holder: Some(holder),
    })
}

/// Serves `stopped` through the honest feed, past the stop at `seq` that the platform logged
/// under another holder's name (so the feed leaves it out), publishes, and runs a pass: the
/// stop is reported undelivered.
fn served_past_a_stop_left_out(
    platform: &Platform,
    bank: &TestBank,
    witness: &Witness,
    monitor: &mut LogMonitor,
    stopped: &Consent,
    seq: u64,
) -> MonitorReport {
    let kit = &platform.kit;
    serve(kit, bank, stopped);
    assert!(fed_to(bank) > seq);
    platform.publish(witness);
    let source = DirTiles::new(platform.dir.path());
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert_eq!(
        report.undelivered_revocations,
        [UndeliveredRevocation {
            consent: stopped.id().clone(),
            seq,
            fed_to: fed_to(bank),
        }],
        "the log shows {} stopped at {seq}, the gate served it: {report:?}",
        stopped.id()
    );
    report
}

/// The platform logs the stop of one of the bank's consents under another holder's name: the
/// broker's feed follows the name, so no feed of this bank's carries it. The consent is the
/// bank's (its approval is in the log), so the stop is held against its feeds all the same.
#[test]
fn a_stop_logged_under_another_holders_name_is_still_the_banks() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let stopped = bank.granted(kit);
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let seq = logged_stop(kit, stopped.id(), "another-bank".parse().unwrap());
    // The honest broker's feed, complete and past the stop, leaves it out: the gate serves.
    served_past_a_stop_left_out(&platform, &bank, &witness, &mut monitor, &stopped, seq);
}

/// The platform logs a withdrawal, then hands the bank complete, fresh feeds that never move
/// past it (each from where the bank stands to the same place), so the stop never falls due
/// and the gate's view stays fresh. A quorum of the witnesses cosigned a log past the stop
/// before those feeds were made: the feeds said less than the log, and that is reported at each
/// pass while it holds, until a feed reaches the log (which carries the stop).
#[test]
fn feeds_that_stand_still_short_of_a_stop_are_reported_behind_the_log() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let stopped = bank.granted(kit);
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    bank.sync(kit).unwrap();
    let held = fed_to(&bank);
    let token = kit.token(&kit.access(stopped.id()));
    let seq = kit.withdrawn(stopped.id());
    assert!(seq >= held);
    let standing_still = || {
        let nodes = StoreNodes(&kit.broker.store());
        let now = kit.broker.now().unix_timestamp();
        let feed = crate::support::feed_as_broker(&nodes, held, held, now, &[]);
        bank.bank.apply_revocation_feed(&feed).unwrap();
    };
    standing_still();
    let mut proof = String::new();
    let request = bank.present(kit, &token.token, &mut proof);
    bank.bank
        .serve(&request, &bank.accounts)
        .unwrap()
        .expect("the gate serves the consent the log shows stopped");
    platform.publish(&witness);
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(report.is_clean(), "made with the checkpoint: {report:?}");
    let witnessed = (report.log_size, report.cosigned_at.unwrap());
    // Feeds every four minutes (the gate's bound is five), checkpoints cosigned again as
    // often (which moves their time, not when the log was first seen that long).
    let mut behind = 0;
    for _ in 0..5 {
        kit.clock.advance(time::Duration::minutes(4));
        standing_still();
        platform.publish(&witness);
        let report = monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap();
        assert_eq!(report.pending_revocations, 1, "{report:?}");
        for mismatch in &report.feed_mismatches {
            assert_eq!(
                *mismatch,
                FeedMismatch::Behind {
                    fed_to: held,
                    generated_at: kit.broker.now(),
                    log_size: witnessed.0,
                    cosigned_at: witnessed.1,
                }
            );
            behind += 1;
        }
    }
    // The first feed four minutes after the cosignature is within the clocks' allowance.
    assert_eq!(behind, 4);
    // The honest feed reaches the log and carries the stop.
    bank.sync(kit).unwrap();
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.pending_revocations, 0);
}

/// Feeds claiming positions past the witnessed log, carrying consent ids of the platform's
/// choosing: the witnessed log never reaches them, so they are reported ahead once the merge
/// delay is past, and what they carried is let go, kept only as told to the gate up to a bound
/// (the watch does not grow without bound).
#[test]
fn feeds_past_the_witnessed_log_are_reported_and_let_go() {
    let (far, reports, sizes) = fed_ahead(true);
    let ahead: Vec<&FeedMismatch> = reports.iter().flat_map(|r| &r.feed_mismatches).collect();
    // Each feed is reported once its merge delay is past, in the pass after.
    assert!(ahead.len() >= 10, "{ahead:?}");
    assert!(
        ahead
            .iter()
            .all(|m| matches!(m, FeedMismatch::Ahead { fed_to, .. } if *fed_to >= far)),
        "{ahead:?}"
    );
    // What is held is what the last hour's feeds carried (seven, ten minutes apart) and at most
    // 4,096 consents let go, not every feed's: the saved state stops growing there (by round
    // 17, 10 rounds of 400 consents after the first feed's hour).
    assert!(
        sizes[6] > sizes[0] * 5 && sizes[19] <= sizes[17] + 1024,
        "the saved state holds what every feed carried: {sizes:?}"
    );
}

/// Twenty feeds ten minutes apart, each claiming a position past the witnessed log and carrying
/// 400 consent ids of the platform's choosing, and a pass after each, reading the platform's
/// tiles (or, not `readable`, a directory without them): where the feeds start, each pass's
/// report, and the saved state's size after it.
fn fed_ahead(readable: bool) -> (u64, Vec<MonitorReport>, Vec<usize>) {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let unreadable = tempfile::tempdir().unwrap();
    let source = DirTiles::new(if readable {
        platform.dir.path()
    } else {
        unreadable.path()
    });
    let real_len = fed_to(&bank);
    let forged = crate::support::ForgedLog {
        real: StoreNodes(&kit.broker.store()),
        real_len,
    };
    let far = real_len + 1_000;
    let mut after = real_len;
    let (mut reports, mut sizes) = (Vec::new(), Vec::new());
    for round in 0..20u64 {
        let junk: Vec<ConsentId> = (0..400).map(|n| junk_consent(round * 1000 + n)).collect();
        let carried: Vec<(&ConsentId, u64)> = junk.iter().map(|c| (c, 0)).collect();
        let position = far + round;
        let now = kit.broker.now();
        let feed = crate::support::feed_as_broker(
            &forged,
            after,
            position,
            now.unix_timestamp(),
            &carried,
        );
        bank.bank.apply_revocation_feed(&feed).unwrap();
        after = position;
        reports.push(monitor.check(&bank.bank, &source, now).unwrap());
        sizes.push(monitor.save().len());
        kit.clock.advance(time::Duration::minutes(10));
    }
    (far, reports, sizes)
}

/// A pass whose second read of the bank's journal fails (after its first took a feed that
/// carried a stop the log already showed) still matches the stop with the feed: the state
/// saved after it restores, and the stop raises no alarm.
#[test]
fn a_state_saved_after_a_journal_fault_restores() {
    let ledger = Arc::new(FaultStore::new(MemoryStore::new(), 3));
    let (platform, bank, _witness_dir, witness, consent) =
        world_with(|kit| TestBank::on(kit, ledger.clone()));
    let kit = &platform.kit;
    let stopped = bank.granted(kit);
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    kit.withdrawn(stopped.id());
    platform.publish(&witness);
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert_eq!(report.pending_revocations, 1, "{report:?}");
    bank.sync(kit).unwrap();
    let hooked = Hooked {
        inner: DirTiles::new(platform.dir.path()),
        hook: std::cell::RefCell::new(Some(Box::new(|| every_read_fails(&ledger)))),
    };
    let faulted = monitor
        .check(&bank.bank, &hooked, kit.broker.now())
        .unwrap();
    assert!(
        matches!(faulted.log_error, Some(MonitorError::Journal(_))),
        "{faulted:?}"
    );
    assert_eq!(faulted.pending_revocations, 0, "{faulted:?}");
    ledger.random_faults(false);
    let mut restored = platform.monitor(&witness).restore(&monitor.save()).unwrap();
    let report = restored
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

/// An honest broker's feed in pages of one, with a pass between pages, and an erasure at the
/// platform (its stops name the holder), raise no alarm.
#[test]
fn honest_pages_and_an_erasure_raise_no_alarm() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (one, two, three) = (bank.granted(kit), bank.granted(kit), bank.granted(kit));
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    for stopped in [&one, &two, &three] {
        kit.withdrawn(stopped.id());
    }
    platform.publish(&witness);
    for _ in 0..4 {
        let page = kit
            .broker
            .revocation_feed_page(bank.bank.id(), fed_to(&bank), 1)
            .unwrap();
        bank.bank.apply_revocation_feed(&page).unwrap();
        let report = monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap();
        assert!(report.is_clean(), "{report:?}");
    }
    kit.broker.erase_subject(&kit.subject).unwrap().unwrap();
    platform.publish(&witness);
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.pending_revocations > 0, "{report:?}");
    bank.sync(kit).unwrap();
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(
        report.is_clean() && report.pending_revocations == 0,
        "{report:?}"
    );
}

/// The subject's erasure as the platform logs it, naming `consent` (and stopping nothing): its
/// position.
fn logged_erasure(kit: &TestBroker, consent: &ConsentId) -> u64 {
    kit.logs_as_it_likes(AuditEvent::SubjectErased {
        subject: "ps_AAAAAAAAAAAAAAAAAAAAAA".parse().unwrap(),
        consents: vec![consent.clone()],
    })
}

/// Serves `consent` through the gate, publishes and runs a pass: the token the log shows
/// issued after the stop (or erasure) at `seq` is reported.
fn served_after_a_stop(
    platform: &Platform,
    bank: &TestBank,
    witness: &Witness,
    monitor: &mut LogMonitor,
    consent: &Consent,
    seq: u64,
) -> MonitorReport {
    let kit = &platform.kit;
    serve(kit, bank, consent);
    platform.publish(witness);
    let report = monitor
        .check(
            &bank.bank,
            &DirTiles::new(platform.dir.path()),
            kit.broker.now(),
        )
        .unwrap();
    assert_eq!(
        after_stops(&report),
        [(consent.id().clone(), seq)],
        "{report:?}"
    );
    report
}

/// The tokens a report shows issued after a stop: each consent with the position of its stop.
fn after_stops(report: &MonitorReport) -> Vec<(ConsentId, u64)> {
    report
        .tokens_after_revocation
        .iter()
        .map(|t| (t.consent.clone(), t.stopped_seq))
        .collect()
}

/// The ids of the tokens a report shows issued after a stop.
fn token_ids(report: &MonitorReport) -> Vec<String> {
    report
        .tokens_after_revocation
        .iter()
        .map(|t| t.token_id.clone())
        .collect()
}

/// The platform hands the bank a fresh feed that stands still at `held` (short of a stop it
/// logged), issues a token for `consent` and the gate serves it: the token.
fn served_standing_still(
    kit: &TestBroker,
    bank: &TestBank,
    held: u64,
    consent: &ConsentId,
) -> AccessToken {
    let nodes = StoreNodes(&kit.broker.store());
    let now = kit.broker.now().unix_timestamp();
    let still = crate::support::feed_as_broker(&nodes, held, held, now, &[]);
    bank.bank.apply_revocation_feed(&still).unwrap();
    let token = kit.token(&kit.access(consent));
    let mut proof = String::new();
    let request = bank.present(kit, &token.token, &mut proof);
    bank.bank.serve(&request, &bank.accounts).unwrap().unwrap();
    token
}

/// The platform logs a stop, keeps its witnessed checkpoint short of it for most of the merge
/// delay (no witnessed size past the feed: no `Behind`), hands the bank fresh feeds that stand
/// still before the stop, and goes on issuing tokens for the consent, logged after the stop,
/// which the gate serves. Then it publishes and delivers the stop within the clocks' margin.
/// The tokens its log shows issued after the stop are reported, each once.
#[test]
fn tokens_issued_after_a_stop_kept_from_the_witnesses_are_reported() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let stopped = bank.granted(kit);
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    bank.sync(kit).unwrap();
    let held = fed_to(&bank);
    let seq = logged_stop(kit, stopped.id(), bank.bank.id().clone());
    let mut reports = Vec::new();
    let mut served = 0;
    for _ in 0..13 {
        served_standing_still(kit, &bank, held, stopped.id());
        served += 1;
        reports.push(
            monitor
                .check(&bank.bank, &source, kit.broker.now())
                .unwrap(),
        );
        kit.clock.advance(time::Duration::minutes(4));
    }
    platform.publish(&witness);
    reports.push(
        monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap(),
    );
    let end = kit.broker.store().audit_len().unwrap();
    let nodes = StoreNodes(&kit.broker.store());
    let now = kit.broker.now().unix_timestamp();
    let delivered = crate::support::feed_as_broker(&nodes, held, end, now, &[(stopped.id(), seq)]);
    bank.bank.apply_revocation_feed(&delivered).unwrap();
    reports.push(
        monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap(),
    );
    kit.clock.advance(time::Duration::minutes(61));
    bank.sync(kit).unwrap();
    platform.publish(&witness);
    reports.push(
        monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap(),
    );
    let after: Vec<&TokenAfterRevocation> = reports
        .iter()
        .flat_map(|r| &r.tokens_after_revocation)
        .collect();
    assert_eq!(
        after.len(),
        served,
        "served {served} times after the stop at {seq}: {reports:#?}"
    );
    assert!(
        after
            .iter()
            .all(|t| t.consent == *stopped.id() && t.stopped_seq == seq && t.issued_seq > seq)
    );
    // Reported once: the last pass reads nothing new.
    assert!(reports.last().unwrap().tokens_after_revocation.is_empty());
}

/// The stop is logged after the request and before the bank's approval (which no honest broker
/// writes: approval needs a consent awaiting decision), under another holder's name, and read
/// in the same pass as the approval. It is the bank's all the same: the feed that passed over
/// it is reported, and so is the token issued after it.
#[test]
fn a_stop_logged_before_the_banks_approval_is_held_against_the_feed() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let request = kit.request();
    let seq = logged_stop(kit, request.id(), "another-bank".parse().unwrap());
    let stopped = bank.approve(kit, &request, |_| {}).unwrap();
    let report =
        served_past_a_stop_left_out(&platform, &bank, &witness, &mut monitor, &stopped, seq);
    assert_eq!(report.tokens_after_revocation.len(), 1, "{report:?}");
}

/// The same stop, read by a pass before the bank approved the consent: kept unclaimed, and the
/// bank's when the approval is read at a later pass.
#[test]
fn a_stop_read_before_the_banks_approval_is_claimed_when_the_approval_is_read() {
    let report = claimed_after_the_approval(0);
    assert_eq!(report.tokens_after_revocation.len(), 1, "{report:?}");
}

/// A stop of a requested consent logged under another holder's name and read by a pass before
/// the bank approves, then the approval followed by `others` stops of other consents, and the
/// honest feed past them all: the stop is the bank's, reported undelivered.
fn claimed_after_the_approval(others: u64) -> MonitorReport {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let request = kit.request();
    let seq = logged_stop(kit, request.id(), "another-bank".parse().unwrap());
    platform.publish(&witness);
    let before = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(before.is_clean(), "{before:?}");
    assert_eq!(before.pending_revocations, 0, "not the bank's yet");
    kit.clock.advance(time::Duration::minutes(3));
    let stopped = bank.approve(kit, &request, |_| {}).unwrap();
    for n in 0..others {
        logged_stop(kit, &junk_consent(n), "another-bank".parse().unwrap());
    }
    served_past_a_stop_left_out(&platform, &bank, &witness, &mut monitor, &stopped, seq)
}

/// An honest platform and bank; the honest feed carried the stop. A new monitor's first pass
/// cannot read the tiles (one transient error, or a relay dropping them): no feed is judged
/// ahead of a log not read, and the next pass, reading it, finds the stop delivered.
#[test]
fn a_pass_that_cannot_read_the_log_judges_no_feed_ahead_of_it() {
    let (platform, bank, _witness_dir, witness, _consent) = world();
    let kit = &platform.kit;
    let stopped = bank.granted(kit);
    kit.withdrawn(stopped.id());
    bank.sync(kit).unwrap();
    platform.publish(&witness);
    kit.clock.advance(time::Duration::minutes(61));
    bank.sync(kit).unwrap();
    platform.publish(&witness);
    let mut monitor = platform.monitor(&witness);
    let unreachable = tempfile::tempdir().unwrap();
    let first = monitor
        .check(
            &bank.bank,
            &DirTiles::new(unreachable.path()),
            kit.broker.now(),
        )
        .unwrap();
    assert!(first.log_error.is_some());
    let second = monitor
        .check(
            &bank.bank,
            &DirTiles::new(platform.dir.path()),
            kit.broker.now(),
        )
        .unwrap();
    assert_eq!(
        (
            first.feed_mismatches.clone(),
            second.undelivered_revocations.clone()
        ),
        (Vec::new(), Vec::new()),
        "the honest feed carried the stop"
    );
}

/// A running monitor reads the log, but the witnesses are unreachable for 61 minutes while the
/// honest feed carries a stop. The feed is reported ahead (the merge delay was missed), and
/// the stop it carried, read once the log is witnessed again, is not reported undelivered: the
/// gate was told of it.
#[test]
fn a_stop_carried_by_a_feed_reported_ahead_is_not_reported_undelivered() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let stopped = bank.granted(kit);
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    kit.withdrawn(stopped.id());
    bank.sync(kit).unwrap();
    kit.clock.advance(time::Duration::minutes(61));
    let outage = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    platform.publish(&witness);
    let back = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(
        matches!(outage.feed_mismatches[..], [FeedMismatch::Ahead { .. }]),
        "{outage:?}"
    );
    assert_eq!(
        back.undelivered_revocations,
        [],
        "the honest feed carried it; outage pass: {outage:?}"
    );
}

/// The platform logs the subject's erasure naming the consent (the person is told they are
/// forgotten) but never stops it, so its feed has nothing to carry, and goes on issuing tokens
/// for it, which the gate serves: each token its log shows issued after the erasure is
/// reported.
#[test]
fn tokens_issued_after_an_erasure_that_stopped_nothing_are_reported() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let erased = bank.granted(kit);
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let seq = logged_erasure(kit, erased.id());
    let report = served_after_a_stop(&platform, &bank, &witness, &mut monitor, &erased, seq);
    assert!(report.undelivered_revocations.is_empty(), "{report:?}");
}

/// A junk consent id, the `n`th.
fn junk_consent(n: u64) -> ConsentId {
    format!("cns_{:0>26}", 7_000_000 + n).parse().unwrap()
}

/// The platform logs the stop under another holder's name (a pass reads it unclaimed), then
/// the bank's approval, then 1,024 stops of other consents after the approval. The pass that
/// reads the approval claims the stop before it keeps any of its own unclaimed: the feed that
/// passed over the stop is reported.
#[test]
fn stops_logged_after_the_approval_do_not_push_out_the_stop_it_claims() {
    // None of these is between the stop and the approval.
    claimed_after_the_approval(1_024);
}

/// Feeds are reported ahead only by a pass that read the log. A platform that keeps its log
/// unreadable to the bank (a log error at each pass) while handing the bank feeds far past any
/// log, each carrying consent ids of its choosing: what they carried is let go past the merge
/// delay all the same, and the state stops growing.
#[test]
fn feeds_ahead_of_a_log_kept_unreadable_do_not_grow_the_state_without_bound() {
    let (_, reports, sizes) = fed_ahead(false);
    assert!(
        reports
            .iter()
            .all(|r| r.log_error.is_some() && r.feed_mismatches.is_empty())
    );
    assert!(
        sizes[6] > sizes[0] * 5 && sizes[19] <= sizes[17] + 1024,
        "the saved state holds every feed's consents while the log is unreadable: {sizes:?}"
    );
}

/// The bank's clock steps forward (three hours) for one pass and back (an NTP step, a VM
/// resumed). The platform then issues a token for the stopped consent, logged after the stop,
/// and the gate serves it (the feed still short of the stop, within the clocks' margin): the
/// stops are kept by the witnesses' time, not the pass's, so the token is reported.
#[test]
fn a_pass_clock_stepped_forward_forgets_no_stop() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let stopped = bank.granted(kit);
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    bank.sync(kit).unwrap();
    let held = fed_to(&bank);
    let seq = logged_stop(kit, stopped.id(), bank.bank.id().clone());
    platform.publish(&witness);
    let read = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert_eq!(read.pending_revocations, 1, "{read:?}");
    // One pass with the bank's clock three hours ahead: nothing to report, nothing new read.
    let glitch = monitor
        .check(
            &bank.bank,
            &source,
            kit.broker.now() + time::Duration::hours(3),
        )
        .unwrap();
    assert!(glitch.is_clean(), "{glitch:?}");
    // Back to the right time: a feed still short of the stop, a token issued after it, served.
    kit.clock.advance(time::Duration::minutes(1));
    let token = served_standing_still(kit, &bank, held, stopped.id());
    platform.publish(&witness);
    let after = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert_eq!(
        (after_stops(&after), token_ids(&after)),
        (
            vec![(stopped.id().clone(), seq)],
            vec![token.token_id.clone()]
        ),
        "{after:?}"
    );
}

/// The bank signed its approval before the platform logged a stop of the consent under another
/// holder's name: the stop is the bank's from the moment the bank signed (its journal says so),
/// however many other holders' stops come before the approval is logged.
#[test]
fn a_stop_of_a_consent_the_bank_signed_for_is_the_banks_before_the_approval_is_logged() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let request = kit.request();
    let signed = bank.bank.attest(&bank.statement(kit, &request)).unwrap();
    monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    // Restored, the monitor still knows what the bank signed for.
    let mut monitor = platform.monitor(&witness).restore(&monitor.save()).unwrap();
    let seq = logged_stop(kit, request.id(), "another-bank".parse().unwrap());
    platform.publish(&witness);
    let first = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert_eq!(first.pending_revocations, 1, "the bank's: {first:?}");
    // More other holders' stops than are kept unclaimed, read before the approval.
    for n in 0..1_100 {
        logged_stop(kit, &junk_consent(n), "another-bank".parse().unwrap());
    }
    platform.publish(&witness);
    monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    let stopped = kit.broker.approve(request.id(), &signed).unwrap();
    let report =
        served_past_a_stop_left_out(&platform, &bank, &witness, &mut monitor, &stopped, seq);
    assert_eq!(report.tokens_after_revocation.len(), 1, "{report:?}");
}

/// The platform logs the subject's erasure naming a consent the bank has signed for but whose
/// approval it has not logged yet, then the approval, then issues tokens the gate serves (read
/// in one pass, or with a pass between the erasure and the approval): the report.
fn erasure_before_the_approval(read_between: bool) -> (u64, ConsentId, MonitorReport) {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let request = kit.request();
    let signed = bank.bank.attest(&bank.statement(kit, &request)).unwrap();
    let seq = logged_erasure(kit, request.id());
    if read_between {
        platform.publish(&witness);
        let between = monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap();
        assert!(between.is_clean(), "{between:?}");
    }
    let erased = kit.broker.approve(request.id(), &signed).unwrap();
    serve(kit, &bank, &erased);
    platform.publish(&witness);
    let report = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    (seq, erased.id().clone(), report)
}

/// Tokens the log shows issued after an erasure that named the bank's consent are reported,
/// as they are after a `consent_revoked` entry in the same place.
#[test]
fn tokens_after_an_erasure_logged_before_the_approval_are_reported() {
    for read_between in [false, true] {
        let (seq, erased, report) = erasure_before_the_approval(read_between);
        assert_eq!(
            after_stops(&report),
            [(erased, seq)],
            "read between: {read_between}: {report:?}"
        );
    }
}

/// The subject stops sharing at the bank; the bank's instruction reaches the broker, which logs
/// the stop and its feed carries it back. It is the approval's own revocation in the subject's
/// view, not a stop made in chat.
#[test]
fn a_stop_made_at_the_bank_is_not_shown_as_made_in_chat() {
    let (platform, bank, _witness_dir, _witness, _consent) = world();
    let kit = &platform.kit;
    let stopped = bank.granted(kit);
    let instruction = bank
        .bank
        .revoke(
            &bank.customer,
            stopped.id(),
            Revoker::Subject,
            RevocationReason::SubjectWithdrew,
        )
        .unwrap();
    kit.broker.apply_holder_instruction(&instruction).unwrap();
    bank.sync(kit).unwrap();
    let view = bank.bank.subject_view(&bank.customer).unwrap();
    assert!(
        view.approvals
            .iter()
            .filter(|a| a.consent == *stopped.id())
            .all(|a| a.revoked.is_some())
    );
    assert_eq!(
        view.platform_stops,
        [],
        "the stop was made at the bank, not in chat: {view:?}"
    );
}

fn witness_signer(n: u8) -> CosignatureSigner {
    CosignatureSigner::new(
        &format!("rd{n}.example/witness"),
        &crate::targets::pkcs8(40 + n),
    )
    .unwrap()
}

/// Three witnesses, any two of them a quorum, and a monitor of the platform's log under that
/// policy.
fn two_of_three(platform: &Platform) -> ([CosignatureSigner; 3], LogMonitor) {
    let signers = [witness_signer(1), witness_signer(2), witness_signer(3)];
    let policy = WitnessPolicy {
        witnesses: signers.iter().map(|s| s.verifier().clone()).collect(),
        quorum: 2,
    };
    let kit = &platform.kit;
    let monitor = LogMonitor::new(kit.broker.log_origin(), platform.log_key(), policy).unwrap();
    (signers, monitor)
}

/// A policy of two witnesses of three. On a pass whose clock is three hours ahead, the platform
/// attaches to its checkpoint the cosignatures of one honest witness and of one other dated a
/// day ahead (`lying`; both honest otherwise): the checkpoint verifies, but no quorum's time
/// counts. Then, the clock back, a token issued after a stop is served: the stop, the token
/// and the last pass's report.
fn clock_glitch_with_a_witness_ahead(lying: bool) -> (ConsentId, u64, String, MonitorReport) {
    let (platform, bank, _witness_dir, _witness, consent) = world();
    let kit = &platform.kit;
    let ([w1, w2, _], mut monitor) = two_of_three(&platform);
    let stopped = bank.granted(kit);
    serve(kit, &bank, &consent);
    let honest = || cosigned_at_times(kit, &[(&w1, 0), (&w2, 0)]);
    let dir = honest();
    let first = monitor
        .check(&bank.bank, &DirTiles::new(dir.path()), kit.broker.now())
        .unwrap();
    assert!(first.is_clean(), "{first:?}");
    bank.sync(kit).unwrap();
    let held = fed_to(&bank);
    let seq = logged_stop(kit, stopped.id(), bank.bank.id().clone());
    let dir = honest();
    let read = monitor
        .check(&bank.bank, &DirTiles::new(dir.path()), kit.broker.now())
        .unwrap();
    assert_eq!(read.pending_revocations, 1, "{read:?}");
    // The glitch pass: the bank's clock three hours ahead; the second cosignature a day ahead.
    let ahead = if lying { 86_400 } else { 0 };
    let dir = cosigned_at_times(kit, &[(&w1, 0), (&w2, ahead)]);
    let _glitch = monitor
        .check(
            &bank.bank,
            &DirTiles::new(dir.path()),
            kit.broker.now() + time::Duration::hours(3),
        )
        .unwrap();
    kit.clock.advance(time::Duration::minutes(1));
    let token = served_standing_still(kit, &bank, held, stopped.id());
    let dir = honest();
    let after = monitor
        .check(&bank.bank, &DirTiles::new(dir.path()), kit.broker.now())
        .unwrap();
    (stopped.id().clone(), seq, token.token_id, after)
}

/// With no quorum's time to go by, the watch's clock stays where it is rather than take the
/// pass's: the stop is kept and the token after it reported.
#[test]
fn a_witness_below_quorum_dated_ahead_does_not_make_a_clock_step_forget_a_stop() {
    for lying in [false, true] {
        let (stopped, seq, token, after) = clock_glitch_with_a_witness_ahead(lying);
        assert_eq!(
            (after_stops(&after), token_ids(&after)),
            (vec![(stopped, seq)], vec![token]),
            "lying witness: {lying}: {after:?}"
        );
    }
}

/// An honest retention run (naming a stopped consent of the bank's), tokens of the bank's other
/// consent after it, a reauthorisation, then an honest erasure and the same person approving a
/// new consent whose tokens the gate serves: no alarm at any pass.
#[test]
fn honest_retention_reauthorisation_and_erasure_then_new_tokens_raise_no_alarm() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (gone, live) = (bank.granted(kit), bank.granted(kit));
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let mut pass = |label: &str| {
        platform.publish(&witness);
        let report = monitor
            .check(&bank.bank, &source, kit.broker.now())
            .unwrap();
        assert!(report.is_clean(), "{label}: {report:?}");
    };
    kit.withdrawn(gone.id());
    bank.sync(kit).unwrap();
    kit.clock.advance(time::Duration::minutes(1));
    let retention = kit.broker.apply_retention(time::Duration::ZERO).unwrap();
    assert_eq!(retention.consents, [gone.id().clone()]);
    serve(kit, &bank, &live);
    pass("after retention");
    kit.clock.advance(time::Duration::hours(2));
    let statement = bank.statement(kit, live.request());
    let signed = bank.bank.attest(&statement).unwrap();
    kit.broker.reauthorise(live.id(), &signed).unwrap();
    serve(kit, &bank, &live);
    pass("after reauthorisation");
    kit.broker.erase_subject(&kit.subject).unwrap().unwrap();
    bank.sync(kit).unwrap();
    pass("after erasure");
    let again = bank.granted(kit);
    serve(kit, &bank, &again);
    pass("a new consent after the erasure");
}

/// The platform logs the subject's erasure naming the bank's live consent (no `consent_revoked`,
/// so no feed carries it and the gate keeps serving), waits three hours (past the time a stop
/// is kept), then issues tokens for the "erased" consent, which the gate serves and the log
/// shows after the erasure: an erasure is kept as long as a grant lasts, so they are reported.
#[test]
fn tokens_issued_long_after_an_erasure_are_reported() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let erased = bank.granted(kit);
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let seq = logged_erasure(kit, erased.id());
    platform.publish(&witness);
    let read = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(read.is_clean(), "{read:?}");
    kit.clock.advance(time::Duration::hours(3));
    platform.publish(&witness);
    let quiet = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(quiet.is_clean(), "{quiet:?}");
    served_after_a_stop(&platform, &bank, &witness, &mut monitor, &erased, seq);
}

/// The platform logs an erasure naming a pending request before the bank signs for it, and a
/// pass reads it (not the bank's yet). Then the bank signs, the platform logs the approval and
/// issues tokens the gate serves: the erasure was kept unclaimed, as a stop is, and claimed.
#[test]
fn tokens_after_an_erasure_read_before_the_bank_signed_are_reported() {
    let (platform, bank, _witness_dir, witness, consent) = world();
    let kit = &platform.kit;
    let (mut monitor, _) = watched(&platform, &bank, &witness, &consent);
    let source = DirTiles::new(platform.dir.path());
    let request = kit.request();
    let seq = logged_erasure(kit, request.id());
    platform.publish(&witness);
    let between = monitor
        .check(&bank.bank, &source, kit.broker.now())
        .unwrap();
    assert!(between.is_clean(), "{between:?}");
    let signed = bank.bank.attest(&bank.statement(kit, &request)).unwrap();
    let erased = kit.broker.approve(request.id(), &signed).unwrap();
    served_after_a_stop(&platform, &bank, &witness, &mut monitor, &erased, seq);
}

/// The subject stops sharing in chat; the feed carries it to the bank. An hour later the bank
/// revokes the (still live in its ledger) approval itself. The chat stop came first and is no
/// echo of the bank's: it stays in the subject's view.
#[test]
fn a_chat_stop_before_a_bank_revocation_stays_in_the_subject_view() {
    let (platform, bank, _witness_dir, _witness, _consent) = world();
    let kit = &platform.kit;
    let stopped = bank.granted(kit);
    kit.withdrawn(stopped.id());
    bank.sync(kit).unwrap();
    let before = bank.bank.subject_view(&bank.customer).unwrap();
    assert_eq!(before.platform_stops.len(), 1, "{before:?}");
    kit.clock.advance(time::Duration::hours(1));
    bank.bank
        .revoke(
            &bank.customer,
            stopped.id(),
            Revoker::Holder,
            RevocationReason::SuspectedMisuse,
        )
        .unwrap();
    let after = bank.bank.subject_view(&bank.customer).unwrap();
    assert_eq!(
        after.platform_stops, before.platform_stops,
        "the chat stop an hour before the bank's revocation is gone: {after:?}"
    );
}

/// Two of three witnesses; one (w2) dates its cosignatures a day ahead. The platform presents
/// w1 + w2 for three hours (no quorum's time: the watch's clock is held), logs a stop in that
/// time, which a held pass reads. Then it presents w1 + w3 again, and the clock moves three
/// hours on: the stop, read minutes ago, was stamped with the pass's time, not the held clock,
/// so it is kept, and a token issued after it and served through a feed standing still is
/// reported.
#[test]
fn a_clock_held_then_released_forgets_no_stop_read_while_held() {
    let (platform, bank, _witness_dir, _witness, consent) = world();
    let kit = &platform.kit;
    let ([w1, w2, w3], mut monitor) = two_of_three(&platform);
    let stopped = bank.granted(kit);
    serve(kit, &bank, &consent);
    let honest = || cosigned_at_times(kit, &[(&w1, 0), (&w3, 0)]);
    let dir = honest();
    let first = monitor
        .check(&bank.bank, &DirTiles::new(dir.path()), kit.broker.now())
        .unwrap();
    assert!(first.is_clean(), "{first:?}");
    bank.sync(kit).unwrap();
    let held = fed_to(&bank);
    kit.clock.advance(time::Duration::hours(3));
    let seq = logged_stop(kit, stopped.id(), bank.bank.id().clone());
    let dir = cosigned_at_times(kit, &[(&w1, 0), (&w2, 86_400)]);
    let frozen = monitor
        .check(&bank.bank, &DirTiles::new(dir.path()), kit.broker.now())
        .unwrap();
    assert_eq!(frozen.pending_revocations, 1, "{frozen:?}");
    let dir = honest();
    let _released = monitor
        .check(&bank.bank, &DirTiles::new(dir.path()), kit.broker.now())
        .unwrap();
    kit.clock.advance(time::Duration::minutes(1));
    let token = served_standing_still(kit, &bank, held, stopped.id());
    let dir = honest();
    let after = monitor
        .check(&bank.bank, &DirTiles::new(dir.path()), kit.broker.now())
        .unwrap();
    assert_eq!(
        (after_stops(&after), token_ids(&after)),
        (vec![(stopped.id().clone(), seq)], vec![token.token_id]),
        "a stop read a minute before: {after:?}"
    );
}

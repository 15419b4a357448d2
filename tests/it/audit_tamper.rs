#![cfg(feature = "sqlite")]
//! Tampering with a stored audit log is detected, and named.
//!
//! A log is written by the broker to a SQLite file; a checkpoint is signed over it and kept by
//! the "auditor" with the broker's verifier key. Each attack then works on a fresh copy of the
//! file with direct SQL access, dropping the append-only triggers first (as anyone with write
//! access to the file can), and `verify_log` must name what happened: the exact [`LogError`] and
//! the first bad index. Receipts, the broker's refusal to sign inconsistent checkpoints, and a
//! subject's history are checked on the same kind of log.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use consent_broker::checkpoint::{
    Checkpoint, CheckpointError, NoteError, NoteSigner, NoteVerifier, sign_checkpoint,
    verify_checkpoint,
};
use consent_broker::merkle::{self, Hash, MemoryNodes, ProofError};
use consent_broker::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use ring::rand::SystemRandom;
use rusqlite::{Connection, params};
use time::Duration;

type SqliteFixture = Fixture<Arc<SqliteStore>>;

// ---------------------------------------------------------------------------------------------
// Building the log
// ---------------------------------------------------------------------------------------------

/// The common fixture (bank + platform registered, manual clock, sequential ids), but with a
/// checkpoint key the test knows.
fn keyed_fixture(store: Arc<SqliteStore>, checkpoint_key: &[u8]) -> SqliteFixture {
    Fixture::sharing(store, |builder| {
        builder.keys(keys_with_checkpoint(
            SigningKey::from_pkcs8_der(checkpoint_key).unwrap(),
        ))
    })
}

/// What the story wrote, for the history checks.
struct Story {
    alice_consent: ConsentId,
    rejected_consent: ConsentId,
    bob: SubjectId,
    bob_consent: ConsentId,
    unknown_consent: ConsentId,
}

fn deny(outcome: Decision) -> Vec<DenyReason> {
    match outcome {
        Decision::Deny { reasons } => reasons,
        Decision::Permit => panic!("expected a denial"),
    }
}

/// A granted consent, permits, denials of several kinds (including a prohibited purpose, whose
/// entry has no subject), unattended polls up to the daily limit, tokens, a second subject, a
/// rejection and a revocation: about 40 entries.
fn write_story(fx: &SqliteFixture) -> Story {
    let alice = fx.granted();
    let balance = fx.access(alice.id());
    for _ in 0..3 {
        assert_eq!(fx.decide(&balance), Decision::Permit);
    }
    let transactions = AccessRequest {
        scope: Scope::Transactions.into(),
        ..balance.clone()
    };
    assert!(!deny(fx.decide(&transactions)).is_empty());
    let other_account = AccessRequest {
        account: id("acc-elsewhere"),
        ..balance.clone()
    };
    assert!(!deny(fx.decide(&other_account)).is_empty());
    let ads = AccessRequest {
        purpose: "ads".parse().unwrap(),
        ..balance.clone()
    };
    assert_eq!(
        deny(fx.decide(&ads)),
        vec![DenyReason::ProhibitedPurpose {
            prohibited: ProhibitedUse::Ads
        }]
    );
    let data_sale = AccessRequest {
        scope: "data_sale".parse().unwrap(),
        ..balance.clone()
    };
    assert!(!deny(fx.decide(&data_sale)).is_empty());
    let poll = AccessRequest {
        purpose: Purpose::FraudProtection.into(),
        presence: Presence::Unattended,
        ..balance.clone()
    };
    for _ in 0..5 {
        fx.decide(&poll);
    }
    let TokenOutcome::Issued(_) = fx.broker.authorise_with_token(&balance).unwrap() else {
        panic!("expected a token");
    };

    let bob: SubjectId = id("bob");
    let bob_request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            subject: bob.clone(),
            ..fx.draft()
        })
        .unwrap();
    let attestation = fx.attest(&fx.full_statement(&bob_request));
    fx.broker.approve(bob_request.id(), &attestation).unwrap();
    let bob_balance = fx.access(bob_request.id());
    assert_eq!(fx.decide(&bob_balance), Decision::Permit);
    let bob_ads = AccessRequest {
        purpose: "ads".parse().unwrap(),
        ..bob_balance.clone()
    };
    assert!(!deny(fx.decide(&bob_ads)).is_empty());
    let TokenOutcome::Issued(_) = fx.broker.authorise_with_token(&bob_balance).unwrap() else {
        panic!("expected a token");
    };

    let second = fx.request();
    fx.broker.reject(second.id()).unwrap();
    fx.revoke(
        alice.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    assert_eq!(
        deny(fx.decide(&balance)),
        vec![DenyReason::Revoked {
            by: Revoker::Subject
        }]
    );
    let unknown: ConsentId = id("cns_unknown");
    assert_eq!(
        deny(fx.decide(&fx.access(&unknown))),
        vec![DenyReason::UnknownConsent]
    );
    fx.clock.advance(Duration::hours(1));
    for _ in 0..3 {
        assert_eq!(fx.decide(&bob_balance), Decision::Permit);
    }
    Story {
        alice_consent: alice.id().clone(),
        rejected_consent: second.id().clone(),
        bob,
        bob_consent: bob_request.id().clone(),
        unknown_consent: unknown,
    }
}

/// A log on disk, closed, with the checkpoint and verifier key an auditor kept.
struct Logged {
    dir: tempfile::TempDir,
    path: PathBuf,
    note: String,
    vkey: String,
    size: u64,
    root: Hash,
    checkpoint_key: Vec<u8>,
}

impl Logged {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.sqlite");
        let checkpoint_key = SigningKey::generate(&SystemRandom::new())
            .unwrap()
            .to_pkcs8_der()
            .to_vec();
        let fx = keyed_fixture(Arc::new(SqliteStore::open(&path).unwrap()), &checkpoint_key);
        write_story(&fx);
        let signed = fx.broker.checkpoint().unwrap();
        let vkey = fx.broker.checkpoint_verifier_key();
        let size = fx.audit_len();
        assert!(size >= 30, "the story writes over 30 entries, got {size}");
        assert_eq!(signed.size, size);
        drop(fx);
        // Closing the last connection folds the WAL into the file: the file alone is the log.
        assert!(!wal_of(&path).exists());
        Self {
            dir,
            path,
            note: signed.note,
            vkey,
            size,
            root: signed.root,
            checkpoint_key,
        }
    }

    fn verifier(&self) -> NoteVerifier {
        NoteVerifier::from_vkey(&self.vkey).unwrap()
    }

    /// The broker's checkpoint key, as a note signer named like the broker.
    fn signer(&self) -> NoteSigner {
        NoteSigner::new("broker", &self.checkpoint_key).unwrap()
    }

    /// A fresh copy of the file, attacked with `attack` through plain SQL after the append-only
    /// triggers were dropped, then opened as a store.
    fn attacked(&self, name: &str, attack: impl FnOnce(&Connection)) -> SqliteStore {
        let copy = self.dir.path().join(format!("{name}.sqlite"));
        assert!(!copy.exists(), "copy {name} used twice");
        std::fs::copy(&self.path, &copy).unwrap();
        {
            let connection = Connection::open(&copy).unwrap();
            drop_triggers(&connection);
            attack(&connection);
        }
        SqliteStore::open(&copy).unwrap()
    }

    /// `verify_log` on an attacked copy, without and with the kept checkpoint.
    fn verify_both(
        &self,
        name: &str,
        attack: impl FnOnce(&Connection),
    ) -> (Result<LogReport, LogError>, Result<LogReport, LogError>) {
        let store = self.attacked(name, attack);
        let verifier = self.verifier();
        (
            verify_log(&store, None),
            verify_log(&store, Some((&self.note, &verifier))),
        )
    }
}

fn wal_of(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

// ---------------------------------------------------------------------------------------------
// The attacker's tools: plain SQL on the file
// ---------------------------------------------------------------------------------------------

fn drop_triggers(connection: &Connection) {
    connection
        .execute_batch(
            "DROP TRIGGER audit_no_update;
             DROP TRIGGER audit_no_delete;
             DROP TRIGGER audit_gap_free;
             DROP TRIGGER merkle_nodes_no_update;
             DROP TRIGGER merkle_nodes_no_delete;
             DROP TRIGGER merkle_nodes_derived_levels;",
        )
        .unwrap();
}

fn entries(connection: &Connection) -> Vec<String> {
    let mut statement = connection
        .prepare("SELECT entry FROM audit ORDER BY seq")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn entry(connection: &Connection, seq: u64) -> String {
    connection
        .query_row(
            "SELECT entry FROM audit WHERE seq = ?1",
            [seq as i64],
            |row| row.get(0),
        )
        .unwrap()
}

fn set_entry(connection: &Connection, seq: u64, text: &str) {
    let changed = connection
        .execute(
            "UPDATE audit SET entry = ?1 WHERE seq = ?2",
            params![text, seq as i64],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// The entry with one byte changed (XOR 0x01 on an ASCII byte, so it stays UTF-8 text).
fn flip_one_byte(text: &str, at: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    assert!(bytes[at].is_ascii());
    bytes[at] ^= 0x01;
    String::from_utf8(bytes).unwrap()
}

fn flip_entry(connection: &Connection, seq: u64) {
    let text = entry(connection, seq);
    let middle = text.len() / 2;
    set_entry(connection, seq, &flip_one_byte(&text, middle));
}

/// Replaces an entry with a plausible, well-formed rewrite: same seq, another kind of decision.
fn rewrite_entry(connection: &Connection, seq: u64) {
    let text = entry(connection, seq);
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["kind"] = serde_json::Value::from("access_permitted");
    value["at"] = serde_json::Value::from(value["at"].as_i64().unwrap() + 1);
    value["actor"] = serde_json::json!({"platform": "chat"});
    let rewritten = serde_json::to_string(&value).unwrap();
    assert_ne!(rewritten, text);
    set_entry(connection, seq, &rewritten);
}

/// Recomputes every stored Merkle node from the entries, as `append` would have: the tree then
/// agrees with the (rewritten) entries.
fn rebuild_nodes(connection: &Connection) {
    let entries = entries(connection);
    connection.execute("DELETE FROM merkle_nodes", []).unwrap();
    let mut memory = MemoryNodes::new();
    let mut insert = connection
        .prepare("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")
        .unwrap();
    for (size, text) in (0u64..).zip(&entries) {
        let leaf = merkle::leaf_hash(text.as_bytes());
        for (level, index, hash) in merkle::append(size, leaf, &memory).unwrap() {
            insert
                .execute(params![level, index as i64, &hash[..]])
                .unwrap();
        }
        memory.push(leaf).unwrap();
    }
}

/// Deletes the last `m` of `size` entries and every node covering one of them.
fn truncate(connection: &Connection, size: u64, m: u64) {
    let keep = (size - m) as i64;
    connection
        .execute("DELETE FROM audit WHERE seq >= ?1", [keep])
        .unwrap();
    connection
        .execute(
            "DELETE FROM merkle_nodes WHERE (idx + 1) << level > ?1",
            [keep],
        )
        .unwrap();
}

fn set_node(connection: &Connection, level: u32, index: u64, hash: &Hash) {
    let changed = connection
        .execute(
            "UPDATE merkle_nodes SET hash = ?1 WHERE level = ?2 AND idx = ?3",
            params![&hash[..], level, index as i64],
        )
        .unwrap();
    assert_eq!(changed, 1, "node ({level}, {index}) is not stored");
}

/// Whether the file stores node `(level, index)`: the SQLite store derives its lowest levels
/// from the leaves instead (`LogRead::derived_levels`), and there is then no row to edit.
fn stored(connection: &Connection, level: u32, index: u64) -> bool {
    connection
        .query_row(
            "SELECT COUNT(*) FROM merkle_nodes WHERE level = ?1 AND idx = ?2",
            params![level, index as i64],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
        == 1
}

fn node(connection: &Connection, level: u32, index: u64) -> Hash {
    let blob: Vec<u8> = connection
        .query_row(
            "SELECT hash FROM merkle_nodes WHERE level = ?1 AND idx = ?2",
            params![level, index as i64],
            |row| row.get(0),
        )
        .unwrap();
    Hash::try_from(blob.as_slice()).unwrap()
}

/// The stored nodes `merkle::root(size)` reads: one complete subtree per set bit of `size`.
fn root_path(size: u64) -> Vec<(u32, u64)> {
    (0..64u32)
        .rev()
        .filter(|level| size & (1 << level) != 0)
        .map(|level| {
            let before = size & !((1u64 << (level + 1)) - 1);
            (level, before >> level)
        })
        .collect()
}

fn flipped(hash: &Hash) -> Hash {
    let mut out = *hash;
    out[7] ^= 0x40;
    out
}

// ---------------------------------------------------------------------------------------------
// The untouched log
// ---------------------------------------------------------------------------------------------

#[test]
fn the_untouched_log_verifies_with_and_without_its_checkpoint() {
    let logged = Logged::new();
    let store = SqliteStore::open(&logged.path).unwrap();
    let plain = verify_log(&store, None).unwrap();
    assert_eq!(plain.size, logged.size);
    assert_eq!(plain.root, logged.root);
    assert_eq!(plain.checkpoint, None);

    let verifier = logged.verifier();
    let checked = verify_log(&store, Some((&logged.note, &verifier))).unwrap();
    assert_eq!(checked.size, logged.size);
    assert_eq!(checked.root, logged.root);
    let checkpoint = checked.checkpoint.unwrap();
    assert_eq!(checkpoint.size, logged.size);
    assert_eq!(checkpoint.root, logged.root);
    assert_eq!(checkpoint.origin, "broker");

    // The root is the RFC 6962 tree hash of the stored bytes, computed independently.
    let connection = Connection::open(&logged.path).unwrap();
    let mut memory = MemoryNodes::new();
    for text in entries(&connection) {
        memory.push(merkle::leaf_hash(text.as_bytes())).unwrap();
    }
    assert_eq!(merkle::root(memory.size(), &memory).unwrap(), logged.root);
}

#[test]
fn a_log_that_grew_after_the_checkpoint_still_verifies_against_it() {
    let logged = Logged::new();
    let store = Arc::new(SqliteStore::open(&logged.path).unwrap());
    // Another broker instance on the file (same checkpoint key) keeps appending honestly.
    let broker = Broker::builder(id("broker"), store.clone())
        .clock(Arc::new(ManualClock::new(START + Duration::hours(2))))
        .keys(keys_with_checkpoint(
            SigningKey::from_pkcs8_der(&logged.checkpoint_key).unwrap(),
        ))
        .build()
        .unwrap();
    let decision = broker
        .authorise_access(&AccessRequest {
            consent: id("cns_1"),
            platform: id("chat"),
            scope: Scope::Balance.into(),
            purpose: Purpose::CustomerService.into(),
            account: id("acc-current"),
            presence: Presence::SubjectPresent,
        })
        .unwrap();
    assert!(matches!(decision.decision(), Decision::Deny { .. }));
    let grown = store.audit_len().unwrap();
    assert!(grown > logged.size);
    let verifier = logged.verifier();
    let report = verify_log(&*store, Some((&logged.note, &verifier))).unwrap();
    assert_eq!(report.size, grown);
    assert_eq!(report.checkpoint.unwrap().size, logged.size);
}

// ---------------------------------------------------------------------------------------------
// Attacks on entries
// ---------------------------------------------------------------------------------------------

fn assert_named(result: Result<LogReport, LogError>, expected: &LogError, index: Option<u64>) {
    let error = result.expect_err("tampering went unnoticed");
    assert_eq!(&error, expected);
    assert_eq!(
        error.first_bad_index(),
        index,
        "first_bad_index of {error:?}"
    );
}

#[test]
fn a_flipped_byte_names_the_entry() {
    let logged = Logged::new();
    let n = logged.size;
    for k in [0, 1, 2, n / 2, n - 2, n - 1] {
        let (plain, checked) = logged.verify_both(&format!("flip-{k}"), |c| flip_entry(c, k));
        let expected = LogError::AlteredEntry { index: k };
        assert_named(plain, &expected, Some(k));
        assert_named(checked, &expected, Some(k));
    }
}

/// A stored node cut to 31 bytes (a leaf, and a node of the lowest level the file stores above
/// the derived ones) is refused as corrupt, and the error names the node.
#[test]
fn a_node_cut_short_is_refused_and_named() {
    let logged = Logged::new();
    let high = (4..32)
        .find(|level| logged.size >= 1 << level)
        .expect("the story's log has at least 16 entries");
    for (level, index) in [(0u32, 3u64), (high, 0)] {
        let name = format!("short-{level}-{index}");
        let (plain, checked) = logged.verify_both(&name, |c| {
            assert!(stored(c, level, index), "node ({level}, {index}) is stored");
            let changed = c
                .execute(
                    "UPDATE merkle_nodes SET hash = substr(hash, 1, 31) \
                     WHERE level = ?1 AND idx = ?2",
                    params![level, index as i64],
                )
                .unwrap();
            assert_eq!(changed, 1);
        });
        let expected = format!("Merkle node ({level}, {index}) is not 32 bytes");
        for result in [plain, checked] {
            match result {
                Err(LogError::Store(StoreError::Corrupt(message))) => {
                    assert!(message.contains(&expected), "{message}")
                }
                other => panic!("node ({level}, {index}) cut short: {other:?}"),
            }
        }
    }
}

#[test]
fn a_flipped_byte_anywhere_in_an_entry_is_detected() {
    let logged = Logged::new();
    let k = logged.size / 3;
    let len = {
        let connection = Connection::open(&logged.path).unwrap();
        entry(&connection, k).len()
    };
    for at in [0, 1, len / 4, len - 2, len - 1] {
        let (plain, _) = logged.verify_both(&format!("flip-{k}-at-{at}"), |c| {
            let text = entry(c, k);
            set_entry(c, k, &flip_one_byte(&text, at));
        });
        assert_named(plain, &LogError::AlteredEntry { index: k }, Some(k));
    }
}

#[test]
fn a_single_appended_space_is_detected() {
    // Re-encoding is not tolerated: the stored bytes are what was hashed.
    let logged = Logged::new();
    let k = logged.size / 2;
    let (plain, checked) = logged.verify_both("space", |c| {
        let text = entry(c, k);
        set_entry(c, k, &format!("{text} "));
    });
    assert_named(plain, &LogError::AlteredEntry { index: k }, Some(k));
    assert_named(checked, &LogError::AlteredEntry { index: k }, Some(k));
}

#[test]
fn a_flipped_high_bit_making_the_entry_invalid_utf8_is_named() {
    let logged = Logged::new();
    let k = logged.size / 2;
    let (plain, checked) = logged.verify_both("not-utf8", |c| {
        let mut bytes = entry(c, k).into_bytes();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x80;
        c.execute(
            "UPDATE audit SET entry = CAST(?1 AS TEXT) WHERE seq = ?2",
            params![bytes, k as i64],
        )
        .unwrap();
    });
    assert_named(plain, &LogError::AlteredEntry { index: k }, Some(k));
    assert_named(checked, &LogError::AlteredEntry { index: k }, Some(k));
}

#[test]
fn swapped_entries_name_the_first_of_the_two() {
    let logged = Logged::new();
    let n = logged.size;
    for (i, j) in [(2, 9), (0, n - 1), (n / 2, n / 2 + 1), (n - 2, n - 1)] {
        let (plain, checked) = logged.verify_both(&format!("swap-{i}-{j}"), |c| {
            let (a, b) = (entry(c, i), entry(c, j));
            assert_ne!(a, b);
            set_entry(c, i, &b);
            set_entry(c, j, &a);
        });
        let expected = LogError::AlteredEntry { index: i };
        assert_named(plain, &expected, Some(i));
        assert_named(checked, &expected, Some(i));
    }
}

#[test]
fn a_deleted_entry_is_named_as_missing() {
    let logged = Logged::new();
    let n = logged.size;
    for k in [0, 1, n / 2, n - 2] {
        let (plain, checked) = logged.verify_both(&format!("delete-{k}"), |c| {
            c.execute("DELETE FROM audit WHERE seq = ?1", [k as i64])
                .unwrap();
        });
        let expected = LogError::MissingEntry { index: k };
        assert_named(plain, &expected, Some(k));
        assert_named(checked, &expected, Some(k));
    }
    // Deleting its leaf too, or several entries, changes nothing: the first gap is named.
    let k = n / 3;
    let (plain, checked) = logged.verify_both("delete-with-leaf", |c| {
        c.execute("DELETE FROM audit WHERE seq = ?1", [k as i64])
            .unwrap();
        c.execute(
            "DELETE FROM merkle_nodes WHERE level = 0 AND idx = ?1",
            [k as i64],
        )
        .unwrap();
    });
    assert_named(plain, &LogError::MissingEntry { index: k }, Some(k));
    assert_named(checked, &LogError::MissingEntry { index: k }, Some(k));
    let (plain, _) = logged.verify_both("delete-several", |c| {
        c.execute(
            "DELETE FROM audit WHERE seq IN (?1, ?2, ?3)",
            params![(k + 5) as i64, k as i64, (k + 1) as i64],
        )
        .unwrap();
    });
    assert_named(plain, &LogError::MissingEntry { index: k }, Some(k));
}

#[test]
fn a_deleted_entry_with_the_rest_renumbered_is_named() {
    // The attacker closes the gap: every later row moves down one seq (bytes unchanged).
    let logged = Logged::new();
    let k = logged.size / 2;
    let (plain, checked) = logged.verify_both("renumber", |c| {
        c.execute("DELETE FROM audit WHERE seq = ?1", [k as i64])
            .unwrap();
        c.execute("UPDATE audit SET seq = seq - 1 WHERE seq > ?1", [k as i64])
            .unwrap();
    });
    assert_named(plain, &LogError::AlteredEntry { index: k }, Some(k));
    assert_named(checked, &LogError::AlteredEntry { index: k }, Some(k));
}

#[test]
fn truncation_is_caught_by_the_checkpoint_only() {
    let logged = Logged::new();
    let n = logged.size;
    for m in [1, 3, n / 2, n] {
        let (plain, checked) = logged.verify_both(&format!("truncate-{m}"), |c| truncate(c, n, m));
        // Without a checkpoint there is nothing to compare the length with: the shorter log is
        // a perfectly consistent log (every remaining entry matches its leaf, the stored tree
        // agrees), exactly what an honest broker would have written had it stopped earlier.
        let report = plain.expect("a truncated log is self-consistent");
        assert_eq!(report.size, n - m);
        assert_named(
            checked,
            &LogError::Truncated {
                log_size: n - m,
                checkpoint_size: n,
            },
            Some(n - m),
        );
    }
    // Leaving the nodes behind gives the truncation away even without a checkpoint: the stored
    // tree has leaves the log no longer has.
    let (plain, checked) = logged.verify_both("truncate-entries-only", |c| {
        c.execute("DELETE FROM audit WHERE seq >= ?1", [(n - 2) as i64])
            .unwrap();
    });
    assert_eq!(plain.unwrap_err(), LogError::TreeMismatch { size: n - 2 });
    assert_named(
        checked,
        &LogError::Truncated {
            log_size: n - 2,
            checkpoint_size: n,
        },
        Some(n - 2),
    );
}

#[test]
fn an_entry_appended_without_a_leaf_is_named_as_forged() {
    let logged = Logged::new();
    let n = logged.size;
    let (plain, checked) = logged.verify_both("forged", |c| {
        // A believable entry: a copy of a permit, renumbered.
        let template = entries(c)
            .into_iter()
            .find(|e| e.contains("\"access_permitted\""))
            .unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&template).unwrap();
        value["seq"] = serde_json::Value::from(n);
        c.execute(
            "INSERT INTO audit (seq, entry) VALUES (?1, ?2)",
            params![n as i64, serde_json::to_string(&value).unwrap()],
        )
        .unwrap();
    });
    let expected = LogError::ForgedEntry { index: n };
    assert_named(plain, &expected, Some(n));
    assert_named(checked, &expected, Some(n));

    // Two forged entries: the first is named.
    let (plain, _) = logged.verify_both("forged-two", |c| {
        for seq in [n, n + 1] {
            c.execute(
                "INSERT INTO audit (seq, entry) VALUES (?1, ?2)",
                params![seq as i64, format!("{{\"seq\":{seq}}}")],
            )
            .unwrap();
        }
    });
    assert_named(plain, &LogError::ForgedEntry { index: n }, Some(n));
}

#[test]
fn a_consistent_rewrite_is_caught_by_the_checkpoint_only() {
    let logged = Logged::new();
    let n = logged.size;
    for k in [0, n / 2, n - 1] {
        let (plain, checked) = logged.verify_both(&format!("rewrite-{k}"), |c| {
            rewrite_entry(c, k);
            rebuild_nodes(c);
        });
        // Entries and tree agree: without a checkpoint this is indistinguishable from a log
        // the broker wrote that way.
        let report = plain.expect("a consistent rewrite is self-consistent");
        assert_eq!(report.size, n);
        assert_ne!(report.root, logged.root);
        assert_named(
            checked,
            &LogError::CheckpointMismatch { checkpoint_size: n },
            None,
        );
    }
}

#[test]
fn a_forged_tail_is_caught_by_the_checkpoint() {
    let logged = Logged::new();
    let n = logged.size;
    let (plain, checked) = logged.verify_both("tail", |c| {
        for seq in n - 3..n {
            rewrite_entry(c, seq);
        }
        rebuild_nodes(c);
    });
    assert_eq!(plain.unwrap().size, n);
    assert_named(
        checked,
        &LogError::CheckpointMismatch { checkpoint_size: n },
        None,
    );

    // A forged tail that also goes on past the checkpoint: still a mismatch at its size.
    let (plain, checked) = logged.verify_both("tail-longer", |c| {
        for seq in n - 3..n {
            rewrite_entry(c, seq);
        }
        for seq in n..n + 4 {
            c.execute(
                "INSERT INTO audit (seq, entry) VALUES (?1, ?2)",
                params![seq as i64, format!("{{\"seq\":{seq}}}")],
            )
            .unwrap();
        }
        rebuild_nodes(c);
    });
    assert_eq!(plain.unwrap().size, n + 4);
    assert_named(
        checked,
        &LogError::CheckpointMismatch { checkpoint_size: n },
        None,
    );
}

#[test]
fn a_tampered_node_on_the_root_path_is_a_tree_mismatch() {
    let logged = Logged::new();
    let n = logged.size;
    let derived = SqliteStore::open(&logged.path).unwrap().derived_levels();
    let connection = Connection::open(&logged.path).unwrap();
    let mut inner = 0;
    for (level, index) in root_path(n) {
        if (1..=derived).contains(&level) {
            // Derived from the leaves: nothing stored to tamper with.
            assert!(!stored(&connection, level, index));
            continue;
        }
        inner += usize::from(level > 0);
        let (plain, checked) = logged.verify_both(&format!("node-{level}-{index}"), |c| {
            let hash = node(c, level, index);
            set_node(c, level, index, &flipped(&hash));
        });
        let expected = LogError::TreeMismatch { size: n };
        // A tampered leaf on the path is a leaf that disagrees with its entry.
        let expected = if level == 0 {
            LogError::AlteredEntry { index }
        } else {
            expected
        };
        let index = (level == 0).then_some(index);
        assert_named(plain, &expected, index);
        assert_named(checked, &expected, index);
    }
    assert!(
        inner > 0,
        "no stored inner node on the root path of {n} entries"
    );
}

#[test]
fn a_tail_entry_altered_together_with_its_leaf_is_caught_by_the_kept_checkpoint() {
    // The last entry and its leaf hash rewritten, nothing above them: on SQLite, which derives
    // levels 1 to 3, no stored node covers the last `size % 16` entries (see `verify_log`), so
    // the auditor's checkpoint is what catches it (or the level-4 node, when the size is a
    // multiple of sixteen).
    let logged = Logged::new();
    let k = logged.size - 1;
    let (_, checked) = logged.verify_both("tail-entry-and-leaf", |c| {
        rewrite_entry(c, k);
        let leaf = merkle::leaf_hash(entry(c, k).as_bytes());
        set_node(c, 0, k, &leaf);
    });
    let error = checked.expect_err("a rewritten tail entry went unnoticed");
    assert!(
        matches!(
            error,
            LogError::CheckpointMismatch { checkpoint_size } if checkpoint_size == logged.size
        ) || error == LogError::TreeMismatch { size: logged.size },
        "{error:?}"
    );
}

#[test]
fn a_leaf_stored_twice_is_a_tree_mismatch_and_a_damaged_store() {
    // The node table rebuilt without its key, leaf 5 stored again with another hash after the
    // true one: the verifier and the store's derived nodes must not each pick a different copy.
    let logged = Logged::new();
    let store = logged.attacked("leaf-twice", |c| {
        c.execute_batch(
            "CREATE TABLE nodes_copy AS SELECT * FROM merkle_nodes;
             DROP TABLE merkle_nodes;
             CREATE TABLE merkle_nodes (level INTEGER NOT NULL, idx INTEGER NOT NULL,
                 hash BLOB NOT NULL) STRICT;
             INSERT INTO merkle_nodes SELECT * FROM nodes_copy ORDER BY level, idx;
             DROP TABLE nodes_copy;",
        )
        .unwrap();
        let hash = node(c, 0, 5);
        c.execute(
            "INSERT INTO merkle_nodes (level, idx, hash) VALUES (0, 5, ?1)",
            params![&flipped(&hash)[..]],
        )
        .unwrap();
    });
    // Whichever copy comes first, the other is caught: the false one as an altered entry, a
    // second one as a tree mismatch.
    let error = verify_log(&store, None).expect_err("a leaf stored twice went unnoticed");
    assert!(
        error == LogError::TreeMismatch { size: logged.size }
            || error == LogError::AlteredEntry { index: 5 },
        "{error:?}"
    );
    assert!(matches!(
        store.merkle_node(1, 2),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn an_entry_altered_together_with_its_leaf_is_still_detected() {
    // The attacker rewrites the entry and its leaf hash, but not the inner nodes above it.
    let logged = Logged::new();
    let k = 4;
    let (plain, checked) = logged.verify_both("entry-and-leaf", |c| {
        rewrite_entry(c, k);
        let leaf = merkle::leaf_hash(entry(c, k).as_bytes());
        set_node(c, 0, k, &leaf);
    });
    let expected = LogError::TreeMismatch { size: logged.size };
    assert_named(plain, &expected, None);
    assert_named(checked, &expected, None);
}

#[test]
fn a_tampered_node_off_the_root_path_is_detected() {
    let logged = Logged::new();
    let n = logged.size;
    let on_path = root_path(n);
    let connection = Connection::open(&logged.path).unwrap();
    // The lowest inner levels are derived from the leaves: no row to edit there.
    for (level, index) in [(1, 0), (2, 1), (3, 0)] {
        assert!(!stored(&connection, level, index));
    }
    // A stored inner node off the path: the first of level 4 and up that is not on it.
    let inner = (4..64u32)
        .flat_map(|level| (0..n >> level).map(move |index| (level, index)))
        .find(|node| !on_path.contains(node))
        .expect("a log of over 30 entries has a stored inner node off its root path");
    for (level, index) in [inner, (0, 3)] {
        assert!(!on_path.contains(&(level, index)));
        let (plain, checked) = logged.verify_both(&format!("off-path-{level}-{index}"), |c| {
            let hash = node(c, level, index);
            set_node(c, level, index, &flipped(&hash));
        });
        for result in [plain, checked] {
            let error = result.expect_err("a tampered Merkle node went unnoticed");
            assert!(
                matches!(
                    error,
                    LogError::TreeMismatch { .. } | LogError::AlteredEntry { .. }
                ),
                "{error:?}"
            );
        }
    }
}

#[test]
fn a_receipt_through_a_tampered_node_does_not_verify() {
    // What the off-path node tampering above breaks: the proofs the store hands out.
    let logged = Logged::new();
    // Node (4, 0), the first sixteen entries' subtree, is the sibling of entry 20's path.
    let store = logged.attacked("receipt-node", |c| {
        let hash = node(c, 4, 0);
        set_node(c, 4, 0, &flipped(&hash));
    });
    let proof = merkle::inclusion_proof(20, logged.size, &StoreNodes(&store)).unwrap();
    let connection = Connection::open(&logged.path).unwrap();
    let receipt = Receipt {
        index: 20,
        entry: entry(&connection, 20),
        tree_size: logged.size,
        proof: encode_hashes(&proof),
        checkpoint: logged.note.clone(),
    };
    assert_eq!(
        receipt.verify(&logged.verifier()),
        Err(ReceiptError::Proof(ProofError::RootMismatch))
    );
}

#[test]
fn a_tampered_checkpoints_table_does_not_fool_the_auditor() {
    // The attacker rewrites history consistently and replaces the broker's stored checkpoints
    // (so the broker itself would sign the new history); the auditor's own copy still catches it.
    let logged = Logged::new();
    let n = logged.size;
    let store = Arc::new(logged.attacked("checkpoints", |c| {
        rewrite_entry(c, 5);
        rebuild_nodes(c);
        c.execute("DELETE FROM checkpoints", []).unwrap();
    }));
    let broker = Broker::builder(id("broker"), store.clone())
        .clock(Arc::new(ManualClock::new(START + Duration::hours(2))))
        .keys(keys_with_checkpoint(
            SigningKey::from_pkcs8_der(&logged.checkpoint_key).unwrap(),
        ))
        .build()
        .unwrap();
    let resigned = broker.checkpoint().unwrap();
    let verifier = logged.verifier();
    verify_log(&*store, Some((&resigned.note, &verifier))).unwrap();
    assert_named(
        verify_log(&*store, Some((&logged.note, &verifier))),
        &LogError::CheckpointMismatch { checkpoint_size: n },
        None,
    );
}

// ---------------------------------------------------------------------------------------------
// Attacks on the checkpoint
// ---------------------------------------------------------------------------------------------

fn checkpoint_error(result: Result<LogReport, LogError>) -> CheckpointError {
    match result {
        Err(LogError::Checkpoint(error)) => error,
        other => panic!("expected LogError::Checkpoint, got {other:?}"),
    }
}

/// The note with its text's line `line` (0 origin, 1 size, 2 root) replaced.
fn with_line(note: &str, line: usize, replacement: &str) -> String {
    let (text, signatures) = note.split_once("\n\n").unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[line] = replacement;
    format!("{}\n\n{signatures}", lines.join("\n"))
}

#[test]
fn an_altered_checkpoint_is_refused() {
    let logged = Logged::new();
    let store = SqliteStore::open(&logged.path).unwrap();
    let verifier = logged.verifier();
    let n = logged.size;
    let other_root = BASE64.encode(flipped(&logged.root));
    let altered = [
        with_line(&logged.note, 1, &(n - 1).to_string()),
        with_line(&logged.note, 1, &(n + 1).to_string()),
        with_line(&logged.note, 1, "0"),
        with_line(&logged.note, 2, &other_root),
        with_line(&logged.note, 0, "elsewhere"),
    ];
    for note in &altered {
        assert_ne!(note, &logged.note);
        let error = checkpoint_error(verify_log(&store, Some((note, &verifier))));
        assert!(
            matches!(
                error,
                CheckpointError::Note(NoteError::InvalidSignature { .. })
            ),
            "{note}: {error:?}"
        );
    }

    // An altered signature: one base64 character of the signature bytes changed.
    let signature_line = logged.note.lines().last().unwrap();
    let at = logged.note.rfind(signature_line).unwrap() + signature_line.len() - 20;
    let mut bytes = logged.note.clone().into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(bytes).unwrap();
    let error = checkpoint_error(verify_log(&store, Some((&forged, &verifier))));
    assert!(
        matches!(
            error,
            CheckpointError::Note(NoteError::InvalidSignature { .. })
        ),
        "{error:?}"
    );
}

#[test]
fn a_checkpoint_checked_with_another_key_is_refused() {
    let logged = Logged::new();
    let store = SqliteStore::open(&logged.path).unwrap();
    let rng = SystemRandom::new();
    let other_key = SigningKey::generate(&rng).unwrap();
    // Same name, another key; and another name.
    for name in ["broker", "someone-else"] {
        let other = NoteSigner::new(name, other_key.to_pkcs8_der()).unwrap();
        let verifier = NoteVerifier::from_vkey(&other.verifier_key()).unwrap();
        let error = checkpoint_error(verify_log(&store, Some((&logged.note, &verifier))));
        assert_eq!(error, CheckpointError::Note(NoteError::NoVerifiedSignature));

        // The attacker's own checkpoint of a rewritten history, checked with the broker's key.
        let forged = sign_checkpoint(
            &Checkpoint {
                origin: "broker".into(),
                size: logged.size,
                root: flipped(&logged.root),
                extensions: Vec::new(),
            },
            &other,
        )
        .unwrap();
        let error = checkpoint_error(verify_log(&store, Some((&forged, &logged.verifier()))));
        assert_eq!(error, CheckpointError::Note(NoteError::NoVerifiedSignature));
    }
}

#[test]
fn malformed_checkpoint_text_is_refused_without_panicking() {
    let logged = Logged::new();
    let store = SqliteStore::open(&logged.path).unwrap();
    let verifier = logged.verifier();
    let note = &logged.note;
    let mut inputs: Vec<String> = vec![
        String::new(),
        "garbage".into(),
        "\n".into(),
        "\n\n".into(),
        "broker\n".into(),
        "\u{2014} broker AAAA\n".into(),
        note.replace('\n', "\r\n"),
        format!("{note}trailing"),
        note.replace('\u{2014}', "-"),
        format!("\u{0}{note}"),
    ];
    // Every strict prefix of the real note (a truncated file or copy).
    for cut in 0..note.len() {
        if note.is_char_boundary(cut) {
            inputs.push(note[..cut].to_owned());
        }
    }
    for input in &inputs {
        let result = verify_log(&store, Some((input, &verifier)));
        assert!(
            matches!(result, Err(LogError::Checkpoint(_))),
            "{input:?}: {result:?}"
        );
    }
    assert_eq!(
        checkpoint_error(verify_log(&store, Some(("", &verifier)))),
        CheckpointError::Note(NoteError::EmptyNote)
    );

    // Bodies that are validly signed with the broker's own key but are not checkpoints: the
    // signature holds, the body is still refused.
    let signer = logged.signer();
    let bodies = [
        ("hello\n", CheckpointError::MissingLines { found: 1 }),
        ("broker\n0034\nAAAA\n", CheckpointError::SizeLeadingZero),
        ("broker\nforty\nAAAA\n", CheckpointError::SizeNotANumber),
    ];
    for (body, expected) in bodies {
        let signed = signer.sign(body).unwrap();
        assert_eq!(
            checkpoint_error(verify_log(&store, Some((&signed, &verifier)))),
            expected,
            "{body:?}"
        );
    }
    let short_root = signer
        .sign(&format!(
            "broker\n{}\n{}\n",
            logged.size,
            BASE64.encode([7u8; 31])
        ))
        .unwrap();
    assert!(matches!(
        checkpoint_error(verify_log(&store, Some((&short_root, &verifier)))),
        CheckpointError::RootWrongLength { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Receipts
// ---------------------------------------------------------------------------------------------

/// A live broker over a SQLite file with the story written, and its checkpoint verifier.
fn live() -> (
    tempfile::TempDir,
    SqliteFixture,
    Story,
    NoteVerifier,
    Vec<u8>,
) {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(&SystemRandom::new())
        .unwrap()
        .to_pkcs8_der()
        .to_vec();
    let fx = keyed_fixture(
        Arc::new(SqliteStore::open(dir.path().join("live.sqlite")).unwrap()),
        &key,
    );
    let story = write_story(&fx);
    let verifier = NoteVerifier::from_vkey(&fx.broker.checkpoint_verifier_key()).unwrap();
    (dir, fx, story, verifier, key)
}

#[test]
fn receipts_prove_their_entries() {
    let (_dir, fx, _story, verifier, _) = live();
    let n = fx.audit_len();
    let all = fx.audit();
    for seq in [0, 1, n / 2, n - 1] {
        let receipt = fx.broker.receipt(seq).unwrap();
        assert_eq!(receipt.index, seq);
        assert_eq!(receipt.tree_size, n);
        let proven = receipt.verify(&verifier).unwrap();
        assert_eq!(proven.seq, seq);
        assert_eq!(proven, all[seq as usize]);
        let stored = fx.broker.store().audit_bytes(seq..seq + 1).unwrap();
        assert_eq!(receipt.entry.as_bytes(), stored[0].bytes.as_slice());
        // A receipt survives a JSON round trip (it is what a subject keeps).
        let kept: Receipt =
            serde_json::from_str(&serde_json::to_string(&receipt).unwrap()).unwrap();
        assert_eq!(kept.verify(&verifier).unwrap(), proven);
    }
    // No receipt for an entry that does not exist: no checkpoint covers it.
    let size = fx.audit_len();
    assert_eq!(
        fx.broker.receipt(n + 10),
        Err(Error::Receipt(ProveError::NotCovered {
            index: n + 10,
            size
        }))
    );
}

#[test]
fn receipts_for_random_entries_verify() {
    let (_dir, fx, _story, verifier, _) = live();
    let n = fx.audit_len();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&(0..n), |seq| {
            let receipt = fx
                .broker
                .receipt(seq)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let entry = receipt
                .verify(&verifier)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(entry.seq, seq);
            // The same receipt with another index never verifies.
            let moved = Receipt {
                index: (seq + 1) % n,
                ..receipt.clone()
            };
            proptest::prop_assert!(moved.verify(&verifier).is_err());
            Ok(())
        })
        .unwrap();
}

#[test]
fn tampered_receipts_fail_with_the_specific_error() {
    let (_dir, fx, _story, verifier, _) = live();
    let seq = 7;
    let receipt = fx.broker.receipt(seq).unwrap();
    let n = receipt.tree_size;
    receipt.verify(&verifier).unwrap();

    // A flipped bit in each proof hash.
    for position in 0..receipt.proof.len() {
        let mut proof = receipt.proof.clone();
        let mut hash = BASE64.decode(&proof[position]).unwrap();
        hash[31] ^= 0x01;
        proof[position] = BASE64.encode(hash);
        let bad = Receipt {
            proof,
            ..receipt.clone()
        };
        assert_eq!(
            bad.verify(&verifier),
            Err(ReceiptError::Proof(ProofError::RootMismatch))
        );
    }

    // A different entry: another real entry's bytes, or this one with a byte changed.
    let other = fx.broker.receipt(seq + 1).unwrap();
    for entry in [other.entry.clone(), flip_one_byte(&receipt.entry, 20)] {
        let bad = Receipt {
            entry,
            ..receipt.clone()
        };
        assert_eq!(
            bad.verify(&verifier),
            Err(ReceiptError::Proof(ProofError::RootMismatch))
        );
    }

    // Another index, with this entry and proof.
    for index in [seq - 1, seq + 1, 0, n - 1] {
        let bad = Receipt {
            index,
            ..receipt.clone()
        };
        assert!(
            matches!(bad.verify(&verifier), Err(ReceiptError::Proof(_))),
            "index {index}"
        );
    }
    let beyond = Receipt {
        index: n,
        ..receipt.clone()
    };
    assert_eq!(
        beyond.verify(&verifier),
        Err(ReceiptError::Proof(ProofError::IndexBeyondSize))
    );

    // A proof one hash too short or too long.
    let mut short = receipt.clone();
    short.proof.pop();
    assert!(matches!(
        short.verify(&verifier),
        Err(ReceiptError::Proof(ProofError::WrongLength { .. }))
    ));
    let mut long = receipt.clone();
    long.proof.push(BASE64.encode([0u8; 32]));
    assert!(matches!(
        long.verify(&verifier),
        Err(ReceiptError::Proof(ProofError::WrongLength { .. }))
    ));

    // Malformed proof hashes.
    for hash in ["not base64!", "AAAA", &BASE64.encode([0u8; 33])] {
        let mut bad = receipt.clone();
        bad.proof[0] = hash.to_owned();
        assert_eq!(bad.verify(&verifier), Err(ReceiptError::MalformedProof));
    }

    // The checkpoint of another size: the log grows, a later receipt is signed at a larger
    // size; swapping the checkpoints is noticed.
    fx.decide(&fx.access(&id("cns_2")));
    let later = fx.broker.receipt(seq).unwrap();
    assert_eq!(later.tree_size, n + 1);
    later.verify(&verifier).unwrap();
    let swapped = Receipt {
        checkpoint: receipt.checkpoint.clone(),
        ..later.clone()
    };
    assert_eq!(
        swapped.verify(&verifier),
        Err(ReceiptError::SizeMismatch {
            proof: n + 1,
            checkpoint: n
        })
    );
    // Claiming the older size too does not help: the proof is for the larger tree.
    let resized = Receipt {
        tree_size: n,
        ..swapped
    };
    assert!(matches!(
        resized.verify(&verifier),
        Err(ReceiptError::Proof(_))
    ));

    // Another key, and a checkpoint with an altered line.
    let stranger = NoteSigner::new(
        "broker",
        SigningKey::generate(&SystemRandom::new())
            .unwrap()
            .to_pkcs8_der(),
    )
    .unwrap();
    let stranger = NoteVerifier::from_vkey(&stranger.verifier_key()).unwrap();
    assert_eq!(
        receipt.verify(&stranger),
        Err(ReceiptError::Checkpoint(CheckpointError::Note(
            NoteError::NoVerifiedSignature
        )))
    );
    let altered = Receipt {
        checkpoint: with_line(&receipt.checkpoint, 1, &(n + 1).to_string()),
        ..receipt.clone()
    };
    assert!(matches!(
        altered.verify(&verifier),
        Err(ReceiptError::Checkpoint(CheckpointError::Note(
            NoteError::InvalidSignature { .. }
        )))
    ));
}

#[test]
fn a_proven_entry_must_be_an_entry_at_its_index() {
    // With the broker's key, sign a checkpoint over a tree of odd leaves: the proofs hold, the
    // entries are still refused.
    let (_dir, fx, _story, verifier, key) = live();
    // A real entry (seq 5) placed at index 1, an entry that is not an audit entry, and no JSON.
    let real = String::from_utf8(
        fx.broker.store().audit_bytes(5..6).unwrap()[0]
            .bytes
            .clone(),
    )
    .unwrap();
    drop(fx);
    let leaves = ["not json", real.as_str(), "{\"seq\":2}"];
    let mut memory = MemoryNodes::new();
    for leaf in leaves {
        memory.push(merkle::leaf_hash(leaf.as_bytes())).unwrap();
    }
    let size = memory.size();
    let note = sign_checkpoint(
        &Checkpoint {
            origin: "broker".into(),
            size,
            root: merkle::root(size, &memory).unwrap(),
            extensions: Vec::new(),
        },
        &NoteSigner::new("broker", &key).unwrap(),
    )
    .unwrap();
    for (index, leaf) in (0u64..).zip(leaves) {
        let receipt = Receipt {
            index,
            entry: leaf.to_owned(),
            tree_size: size,
            proof: encode_hashes(&merkle::inclusion_proof(index, size, &memory).unwrap()),
            checkpoint: note.clone(),
        };
        assert_eq!(
            receipt.verify(&verifier),
            Err(ReceiptError::MalformedEntry),
            "{leaf}"
        );
    }
}

#[test]
fn receipts_verify_with_the_current_checkpoint_key_after_a_key_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rekey.sqlite");
    let rng = SystemRandom::new();
    let token_key = SigningKey::generate(&rng).unwrap().to_pkcs8_der().to_vec();
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    {
        let broker = Broker::builder(id("broker"), store.clone())
            .keys(keys_with_token(
                SigningKey::from_pkcs8_der(&token_key).unwrap(),
            ))
            .build()
            .unwrap();
        broker.checkpoint().unwrap();
    }
    let size = store.audit_len().unwrap();
    let broker = Broker::builder(id("broker"), store.clone())
        .keys(keys_with_token(
            SigningKey::from_pkcs8_der(&token_key).unwrap(),
        ))
        .build()
        .unwrap();
    assert_eq!(
        store.audit_len().unwrap(),
        size,
        "the restart appended nothing"
    );
    let verifier = NoteVerifier::from_vkey(&broker.checkpoint_verifier_key()).unwrap();
    let checkpoint = broker.checkpoint().unwrap();
    verify_checkpoint(&checkpoint.note, &verifier, None).unwrap();
    broker.receipt(0).unwrap().verify(&verifier).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The broker never signs an inconsistent checkpoint
// ---------------------------------------------------------------------------------------------

/// Opens the live file behind the broker's back, without its triggers.
fn behind_the_back(fx: &SqliteFixture, attack: impl FnOnce(&Connection)) {
    let connection = Connection::open(fx.shared_store().path()).unwrap();
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    drop_triggers(&connection);
    attack(&connection);
}

#[test]
fn the_broker_refuses_to_sign_over_a_rewritten_history() {
    let (_dir, fx, story, verifier, _) = live();
    let first = fx.broker.checkpoint().unwrap();
    behind_the_back(&fx, |c| {
        rewrite_entry(c, first.size / 2);
        rebuild_nodes(c);
    });
    // The rewritten log is self-consistent ...
    verify_log(&fx.broker.store(), None).unwrap();
    // ... but the broker compares it with the last checkpoint it signed.
    assert!(matches!(
        fx.broker.checkpoint(),
        Err(Error::CheckpointInconsistent { previous_size }) if previous_size == first.size
    ));
    assert!(matches!(
        fx.broker.receipt(0),
        Err(Error::CheckpointInconsistent { previous_size }) if previous_size == first.size
    ));
    // Honest appends on top of the rewrite do not launder it: the consistency proof fails.
    fx.decide(&fx.access(&story.bob_consent));
    assert!(fx.audit_len() > first.size);
    assert!(matches!(
        fx.broker.checkpoint(),
        Err(Error::CheckpointInconsistent { previous_size }) if previous_size == first.size
    ));
    // Nothing was recorded: the latest checkpoint is still the honest one.
    assert_eq!(
        fx.broker.store().latest_checkpoint().unwrap().unwrap(),
        first
    );
    assert_eq!(
        verify_log(&fx.broker.store(), Some((&first.note, &verifier))),
        Err(LogError::CheckpointMismatch {
            checkpoint_size: first.size
        })
    );
}

#[test]
fn the_broker_refuses_to_sign_over_a_truncated_log() {
    let (_dir, fx, _story, _verifier, _) = live();
    let first = fx.broker.checkpoint().unwrap();
    behind_the_back(&fx, |c| truncate(c, first.size, 2));
    assert!(matches!(
        fx.broker.checkpoint(),
        Err(Error::CheckpointInconsistent { previous_size }) if previous_size == first.size
    ));
}

#[test]
fn honest_appends_get_a_new_checkpoint_consistent_with_the_last() {
    let (_dir, fx, story, verifier, _) = live();
    let first = fx.broker.checkpoint().unwrap();
    // Signing again without appends gives the same checkpoint.
    assert_eq!(fx.broker.checkpoint().unwrap(), first);
    let mut previous = first.clone();
    for round in 0..3 {
        for _ in 0..=round * 3 {
            fx.decide(&fx.access(&story.bob_consent));
        }
        let next = fx.broker.checkpoint().unwrap();
        assert_eq!(next.size, fx.audit_len());
        assert!(next.size > previous.size);
        let checked = verify_checkpoint(&next.note, &verifier, Some("broker")).unwrap();
        assert_eq!((checked.size, checked.root), (next.size, next.root));
        for older in [&first, &previous] {
            let proof =
                merkle::consistency_proof(older.size, next.size, &StoreNodes(&fx.broker.store()))
                    .unwrap();
            merkle::verify_consistency(older.size, next.size, &older.root, &next.root, &proof)
                .unwrap();
            // The proof ties these two roots only.
            assert_eq!(
                merkle::verify_consistency(
                    older.size,
                    next.size,
                    &flipped(&older.root),
                    &next.root,
                    &proof
                ),
                Err(ProofError::RootMismatch)
            );
        }
        // The auditor's old checkpoint still accepts the grown log.
        let report = verify_log(&fx.broker.store(), Some((&first.note, &verifier))).unwrap();
        assert_eq!(report.size, next.size);
        previous = next;
    }
}

// ---------------------------------------------------------------------------------------------
// A subject's history
// ---------------------------------------------------------------------------------------------

#[test]
fn a_subjects_history_is_every_entry_about_them_and_nothing_else() {
    let (_dir, fx, story, _verifier, _) = live();
    let alice = fx.pseudonym(&fx.alice);
    let history = fx.broker.subject_history(&fx.alice).unwrap();
    let mine = [&story.alice_consent, &story.rejected_consent];
    let about_alice = |e: &AuditEntry| {
        e.subject() == Some(&alice) || e.consent().is_some_and(|c| mine.contains(&c))
    };
    let expected: Vec<AuditEntry> = fx.audit().into_iter().filter(about_alice).collect();
    assert_eq!(history, expected);
    assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));

    let kinds: Vec<AuditKind> = history.iter().map(|e| e.kind()).collect();
    for kind in [
        AuditKind::ConsentRequested,
        AuditKind::ConsentApproved,
        AuditKind::AccessPermitted,
        AuditKind::AccessDenied,
        AuditKind::TokenIssued,
        AuditKind::ConsentRejected,
        AuditKind::ConsentRevoked,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} missing from {kinds:?}");
    }
    // The prohibited-purpose denial names only the consent, not the subject: it is included.
    let prohibited = history
        .iter()
        .find(|e| {
            e.reasons()
                == vec![DenyReason::ProhibitedPurpose {
                    prohibited: ProhibitedUse::Ads,
                }]
        })
        .expect("the prohibited-purpose denial is in Alice's history");
    assert_eq!(prohibited.subject(), None);
    assert_eq!(prohibited.consent(), Some(&story.alice_consent));
    // The prohibited-scope denial likewise.
    assert!(history.iter().any(|e| {
        e.subject().is_none()
            && e.reasons()
                .iter()
                .any(|r| matches!(r, DenyReason::ProhibitedScope { .. }))
    }));

    // Nothing about Bob's consent (including his own prohibited-purpose denial), nothing about
    // an unknown consent, no registrations.
    for entry in &history {
        assert_ne!(entry.consent(), Some(&story.bob_consent));
        assert_ne!(entry.consent(), Some(&story.unknown_consent));
        assert_ne!(entry.subject(), Some(&fx.pseudonym(&story.bob)));
        assert!(entry.consent().is_some(), "{entry:?}");
    }

    // Bob's history is the complement among consent entries, and his own prohibited denial
    // (no subject) is in it.
    let bobs = fx.broker.subject_history(&story.bob).unwrap();
    assert!(!bobs.is_empty());
    assert!(bobs.iter().all(|e| {
        e.subject() == Some(&fx.pseudonym(&story.bob)) || e.consent() == Some(&story.bob_consent)
    }));
    assert!(
        bobs.iter()
            .any(|e| e.subject().is_none() && e.consent() == Some(&story.bob_consent))
    );
    assert!(bobs.iter().all(|e| !history.contains(e)));

    // A subject with no consents has no history.
    assert!(fx.broker.subject_history(&id("carol")).unwrap().is_empty());

    // The per-consent history agrees.
    let consent = fx.broker.consent_history(&story.alice_consent).unwrap();
    assert!(!consent.is_empty());
    assert!(consent.iter().all(|e| history.contains(e)));
    assert!(
        consent
            .iter()
            .all(|e| e.consent() == Some(&story.alice_consent))
    );
}

#![cfg(feature = "cli")]
//! The auditor's tool, `consent-broker`, run as a separate process on a store the library wrote.
//!
//! Exit status: 0 valid/accepted, 1 invalid/refused, 2 could not answer.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::support::*;
use consent_broker::checkpoint::{NoteSigner, NoteVerifier, verify_checkpoint};
use consent_broker::merkle::{self, MemoryNodes};
use consent_broker::*;
use ring::rand::SystemRandom;
use rusqlite::{Connection, params};

type SqliteFixture = Fixture<Arc<SqliteStore>>;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cli<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(env!("CARGO_BIN_EXE_consent-broker"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: output
            .status
            .code()
            .expect("the tool was killed by a signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// A log written by the library, on the system clock (the tool verifies tokens on it)
// ---------------------------------------------------------------------------------------------

/// The fixture's bank and platform, on the system clock (the tool's `token verify` uses the
/// system clock), with token and checkpoint keys the test knows. `clock` is unused by the broker.
fn system_clock_fixture(
    store: Arc<SqliteStore>,
    token_key: &[u8],
    checkpoint_key: &[u8],
) -> SqliteFixture {
    Fixture::with_builder(store, |builder| {
        builder.clock(Arc::new(SystemClock)).keys(BrokerKeys::new(
            SigningKey::from_pkcs8_der(token_key).unwrap(),
            SigningKey::from_pkcs8_der(checkpoint_key).unwrap(),
        ))
    })
}

/// The files an auditor has: the database, the checkpoint it kept, the verifier key, and (for
/// `audit checkpoint`) the broker's checkpoint key.
struct Audited {
    dir: tempfile::TempDir,
    db: PathBuf,
    checkpoint: PathBuf,
    vkey_file: PathBuf,
    vkey: String,
    key_file: PathBuf,
    size: u64,
    token_kid: String,
    alice_consent: ConsentId,
    bob_consent: ConsentId,
    /// A fresh token on Alice's live consent.
    token: String,
}

fn setup() -> (Audited, SqliteFixture) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broker.sqlite");
    let rng = SystemRandom::new();
    let token_key = SigningKey::generate(&rng).unwrap();
    let checkpoint_key = SigningKey::generate(&rng).unwrap();
    let fx = system_clock_fixture(
        Arc::new(SqliteStore::open(&db).unwrap()),
        token_key.to_pkcs8_der(),
        checkpoint_key.to_pkcs8_der(),
    );

    let alice = fx.granted();
    let balance = fx.access(alice.id());
    for _ in 0..3 {
        assert_eq!(fx.decide(&balance), Decision::Permit);
    }
    let ads = AccessRequest {
        purpose: "ads".parse().unwrap(),
        ..balance.clone()
    };
    assert!(matches!(fx.decide(&ads), Decision::Deny { .. }));
    let transactions = AccessRequest {
        scope: Scope::Transactions.into(),
        ..balance.clone()
    };
    assert!(matches!(fx.decide(&transactions), Decision::Deny { .. }));
    let bob_request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            subject: id("bob"),
            ..fx.draft()
        })
        .unwrap();
    fx.broker
        .approve(
            bob_request.id(),
            &fx.attest(&fx.full_statement(&bob_request)),
        )
        .unwrap();
    let bob_balance = fx.access(bob_request.id());
    assert_eq!(fx.decide(&bob_balance), Decision::Permit);
    assert!(matches!(
        fx.decide(&AccessRequest {
            purpose: "ads".parse().unwrap(),
            ..bob_balance.clone()
        }),
        Decision::Deny { .. }
    ));
    let rejected = fx.request();
    fx.broker.reject(rejected.id()).unwrap();
    for _ in 0..5 {
        fx.decide(&bob_balance);
    }
    let TokenOutcome::Issued(token) = fx.broker.authorise_with_token(&balance).unwrap() else {
        panic!("expected a token");
    };

    let signed = fx.broker.checkpoint().unwrap();
    let vkey = fx.broker.checkpoint_verifier_key();
    let checkpoint = dir.path().join("kept.checkpoint");
    let vkey_file = dir.path().join("broker.vkey");
    let key_file = dir.path().join("checkpoint-key.der");
    std::fs::write(&checkpoint, &signed.note).unwrap();
    std::fs::write(&vkey_file, format!("{vkey}\n")).unwrap();
    std::fs::write(&key_file, checkpoint_key.to_pkcs8_der()).unwrap();
    let size = fx.audit_len();
    assert_eq!(signed.size, size);
    assert!(size >= 20, "{size}");
    let audited = Audited {
        dir,
        db,
        checkpoint,
        vkey_file,
        vkey,
        key_file,
        size,
        token_kid: token_key.kid().to_owned(),
        alice_consent: alice.id().clone(),
        bob_consent: bob_request.id().clone(),
        token: token.token,
    };
    (audited, fx)
}

/// The log, closed: the file alone holds it.
/// `audit checkpoint` signed with a fresh key that is not the broker's, origin
/// `auditor.example`: the key and the tool's run.
fn checkpoint_with_another_key(audited: &Audited) -> (SigningKey, Run) {
    let other = SigningKey::generate(&SystemRandom::new()).unwrap();
    let key_file = audited.dir.path().join("other.der");
    std::fs::write(&key_file, other.to_pkcs8_der()).unwrap();
    let run = cli([
        "audit",
        "checkpoint",
        "--db",
        s(&audited.db),
        "--key",
        s(&key_file),
        "--origin",
        "auditor.example",
    ]);
    (other, run)
}

fn closed() -> Audited {
    let (audited, fx) = setup();
    drop(fx);
    audited
}

impl Audited {
    fn verify(&self, db: &Path) -> Run {
        cli(["audit", "verify", "--db", s(db)])
    }

    fn verify_checked(&self, db: &Path) -> Run {
        cli([
            "audit",
            "verify",
            "--db",
            s(db),
            "--checkpoint",
            s(&self.checkpoint),
            "--vkey-file",
            s(&self.vkey_file),
        ])
    }

    /// A copy of the (closed) database, tampered with through SQL after dropping the triggers.
    fn tampered(&self, name: &str, attack: impl FnOnce(&Connection)) -> PathBuf {
        let copy = self.dir.path().join(format!("{name}.sqlite"));
        std::fs::copy(&self.db, &copy).unwrap();
        let connection = Connection::open(&copy).unwrap();
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
        attack(&connection);
        copy
    }
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

fn set_entry(connection: &Connection, seq: u64, text: &str) {
    let changed = connection
        .execute(
            "UPDATE audit SET entry = ?1 WHERE seq = ?2",
            params![text, seq as i64],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

/// One byte of entry `seq` changed (XOR 0x01 on an ASCII byte: still UTF-8 text).
fn flip_entry(connection: &Connection, seq: u64) {
    let mut bytes = entries(connection)[seq as usize].clone().into_bytes();
    let middle = bytes.len() / 2;
    assert!(bytes[middle].is_ascii());
    bytes[middle] ^= 0x01;
    set_entry(connection, seq, &String::from_utf8(bytes).unwrap());
}

/// Entry `seq` rewritten and every Merkle node recomputed to agree with it.
fn rewrite_consistently(connection: &Connection, seq: u64) {
    let text = entries(connection)[seq as usize].clone();
    let rewritten = text.replacen("\"at\":", "\"at\":1", 1);
    assert_ne!(rewritten, text);
    set_entry(connection, seq, &rewritten);
    connection.execute("DELETE FROM merkle_nodes", []).unwrap();
    let mut memory = MemoryNodes::new();
    for (size, text) in (0u64..).zip(entries(connection)) {
        let leaf = merkle::leaf_hash(text.as_bytes());
        for (level, index, hash) in merkle::append(size, leaf, &memory).unwrap() {
            connection
                .execute(
                    "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)",
                    params![level, index as i64, &hash[..]],
                )
                .unwrap();
        }
        memory.push(leaf).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// audit verify
// ---------------------------------------------------------------------------------------------

#[test]
fn verify_accepts_the_untouched_log() {
    let audited = closed();
    let n = audited.size;
    let plain = audited.verify(&audited.db);
    assert_eq!(plain.code, 0, "{plain:?}");
    assert!(plain.stdout.starts_with("valid:"), "{plain:?}");
    assert!(plain.stdout.contains(&format!("{n} entries")), "{plain:?}");

    let checked = audited.verify_checked(&audited.db);
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(checked.stdout.starts_with("valid:"), "{checked:?}");
    assert!(
        checked.stdout.contains(&format!(
            "consistent with the signed checkpoint of size {n}"
        )),
        "{checked:?}"
    );

    let inline = cli([
        "audit",
        "verify",
        "--db",
        s(&audited.db),
        "--checkpoint",
        s(&audited.checkpoint),
        "--vkey",
        &audited.vkey,
    ]);
    assert_eq!(inline.code, 0, "{inline:?}");
    assert!(inline.stdout.starts_with("valid:"), "{inline:?}");
    // Same root printed either way.
    assert_eq!(
        plain.stdout.split(';').next().unwrap().trim(),
        inline.stdout.split(';').next().unwrap().trim()
    );
}

#[test]
fn verify_names_an_altered_entry() {
    let audited = closed();
    let n = audited.size;
    for k in [0, 1, n / 2, n - 1] {
        let copy = audited.tampered(&format!("flip-{k}"), |c| flip_entry(c, k));
        for run in [audited.verify(&copy), audited.verify_checked(&copy)] {
            assert_eq!(run.code, 1, "{run:?}");
            assert!(
                run.stdout.contains(&format!("INVALID at entry {k}:")),
                "{run:?}"
            );
            assert!(!run.stdout.contains("valid:"), "{run:?}");
        }
    }
}

#[test]
fn verify_names_a_deleted_entry() {
    let audited = closed();
    let k = audited.size / 2;
    let copy = audited.tampered("delete", |c| {
        c.execute("DELETE FROM audit WHERE seq = ?1", [k as i64])
            .unwrap();
    });
    let run = audited.verify(&copy);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&format!("INVALID at entry {k}:")),
        "{run:?}"
    );
}

#[test]
fn verify_catches_truncation_with_the_checkpoint() {
    let audited = closed();
    let n = audited.size;
    let kept = n - 3;
    let copy = audited.tampered("truncate", |c| {
        c.execute("DELETE FROM audit WHERE seq >= ?1", [kept as i64])
            .unwrap();
        c.execute(
            "DELETE FROM merkle_nodes WHERE (idx + 1) << level > ?1",
            [kept as i64],
        )
        .unwrap();
    });
    let checked = audited.verify_checked(&copy);
    assert_eq!(checked.code, 1, "{checked:?}");
    assert!(
        checked
            .stdout
            .contains(&format!("INVALID at entry {kept}:")),
        "{checked:?}"
    );
    assert!(checked.stdout.contains("truncated"), "{checked:?}");
    // Without the checkpoint nothing says how long the log was: it verifies as it is.
    let plain = audited.verify(&copy);
    assert_eq!(plain.code, 0, "{plain:?}");
    assert!(
        plain.stdout.starts_with(&format!("valid: {kept} entries")),
        "{plain:?}"
    );
}

#[test]
fn verify_catches_a_consistent_rewrite_with_the_checkpoint() {
    let audited = closed();
    let copy = audited.tampered("rewrite", |c| rewrite_consistently(c, 4));
    let plain = audited.verify(&copy);
    assert_eq!(plain.code, 0, "{plain:?}");
    let checked = audited.verify_checked(&copy);
    assert_eq!(checked.code, 1, "{checked:?}");
    // No single entry can be named.
    assert!(checked.stdout.starts_with("INVALID: "), "{checked:?}");
    assert!(checked.stdout.contains("rewritten"), "{checked:?}");
}

#[test]
fn verify_with_a_checkpoint_the_key_does_not_sign_is_invalid() {
    let audited = closed();
    let stranger = NoteSigner::new(
        "broker",
        SigningKey::generate(&SystemRandom::new())
            .unwrap()
            .to_pkcs8_der(),
    )
    .unwrap();
    let run = cli([
        "audit",
        "verify",
        "--db",
        s(&audited.db),
        "--checkpoint",
        s(&audited.checkpoint),
        "--vkey",
        &stranger.verifier_key(),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("INVALID"), "{run:?}");
}

#[test]
fn verify_cannot_answer_without_what_it_needs() {
    let audited = closed();
    // A checkpoint without a key to check it with.
    let run = cli([
        "audit",
        "verify",
        "--db",
        s(&audited.db),
        "--checkpoint",
        s(&audited.checkpoint),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--vkey"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");

    // A malformed key.
    let run = cli([
        "audit",
        "verify",
        "--db",
        s(&audited.db),
        "--checkpoint",
        s(&audited.checkpoint),
        "--vkey",
        "not a key",
    ]);
    assert_eq!(run.code, 2, "{run:?}");

    // A missing checkpoint file.
    let run = cli([
        "audit",
        "verify",
        "--db",
        s(&audited.db),
        "--checkpoint",
        s(&audited.dir.path().join("nowhere.checkpoint")),
        "--vkey-file",
        s(&audited.vkey_file),
    ]);
    assert_eq!(run.code, 2, "{run:?}");

    // Both ways of giving the key at once.
    let run = cli([
        "audit",
        "verify",
        "--db",
        s(&audited.db),
        "--checkpoint",
        s(&audited.checkpoint),
        "--vkey",
        &audited.vkey,
        "--vkey-file",
        s(&audited.vkey_file),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn verify_cannot_answer_for_a_missing_database() {
    let audited = closed();
    let missing = audited.dir.path().join("missing.sqlite");
    let run = audited.verify(&missing);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("does not exist"), "{run:?}");
    assert!(
        !missing.exists(),
        "the tool created the database it was asked to audit"
    );
}

#[test]
fn verify_cannot_answer_for_a_file_that_is_not_a_broker_database() {
    let audited = closed();
    let text = audited.dir.path().join("notes.txt");
    let contents = "these are not the entries you are looking for\n".repeat(100);
    std::fs::write(&text, &contents).unwrap();
    let run = audited.verify(&text);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.starts_with("error: "), "{run:?}");
    assert!(run.stderr.contains("notes.txt"), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert_eq!(std::fs::read_to_string(&text).unwrap(), contents);

    // Another application's SQLite database.
    let other = audited.dir.path().join("other.sqlite");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE audit (seq INTEGER PRIMARY KEY, entry TEXT);")
        .unwrap();
    let run = audited.verify(&other);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.starts_with("error: "), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// audit checkpoint / prove / history
// ---------------------------------------------------------------------------------------------

#[test]
fn checkpoint_prints_a_note_signed_with_the_key() {
    let (audited, fx) = setup();
    // The log grows after the kept checkpoint.
    fx.decide(&fx.access(&audited.bob_consent));
    let n = fx.audit_len();
    assert_eq!(n, audited.size + 1);
    let run = cli([
        "audit",
        "checkpoint",
        "--db",
        s(&audited.db),
        "--key",
        s(&audited.key_file),
        "--origin",
        "broker",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let verifier = NoteVerifier::from_vkey(&audited.vkey).unwrap();
    let checkpoint = verify_checkpoint(&run.stdout, &verifier, Some("broker")).unwrap();
    assert_eq!(checkpoint.size, n);
    // It is the broker's log as it is: the library computes the same root, and records it.
    let latest = fx.broker.store().latest_checkpoint().unwrap().unwrap();
    assert_eq!((latest.size, latest.root), (n, checkpoint.root));
    assert_eq!(fx.broker.checkpoint().unwrap().note, run.stdout);
    // The old checkpoint still verifies the grown log.
    let run = audited.verify_checked(&audited.db);
    assert_eq!(run.code, 0, "{run:?}");

    // A key file that is not a key: no answer.
    let run = cli([
        "audit",
        "checkpoint",
        "--db",
        s(&audited.db),
        "--key",
        s(&audited.vkey_file),
        "--origin",
        "broker",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[test]
fn checkpoint_with_another_key_on_a_grown_log_is_signed_by_that_key() {
    let (audited, fx) = setup();
    fx.decide(&fx.access(&audited.bob_consent));
    let (other, run) = checkpoint_with_another_key(&audited);
    assert_eq!(run.code, 0, "{run:?}");
    let signer = NoteSigner::new("auditor.example", other.to_pkcs8_der()).unwrap();
    let verifier = NoteVerifier::from_vkey(&signer.verifier_key()).unwrap();
    let checkpoint = verify_checkpoint(&run.stdout, &verifier, Some("auditor.example")).unwrap();
    assert_eq!(checkpoint.size, fx.audit_len());
}

#[test]
fn the_brokers_receipts_still_verify_after_an_auditor_signed_with_another_key() {
    let (audited, fx) = setup();
    fx.decide(&fx.access(&audited.bob_consent));
    let (_, run) = checkpoint_with_another_key(&audited);
    assert_eq!(run.code, 0, "{run:?}");
    let verifier = NoteVerifier::from_vkey(&audited.vkey).unwrap();
    let receipt = fx.broker.receipt(0).unwrap();
    assert_eq!(receipt.verify(&verifier).unwrap().seq, 0);
}

#[test]
fn checkpoint_with_another_key_on_an_unchanged_log_is_signed_by_that_key() {
    let audited = closed();
    let (other, run) = checkpoint_with_another_key(&audited);
    if run.code == 2 {
        return;
    }
    assert_eq!(run.code, 0, "{run:?}");
    let signer = NoteSigner::new("auditor.example", other.to_pkcs8_der()).unwrap();
    let verifier = NoteVerifier::from_vkey(&signer.verifier_key()).unwrap();
    let checkpoint = verify_checkpoint(&run.stdout, &verifier, Some("auditor.example")).unwrap();
    assert_eq!(checkpoint.size, audited.size);
}

#[test]
fn prove_prints_receipts_that_verify() {
    let audited = closed();
    let verifier = NoteVerifier::from_vkey(&audited.vkey).unwrap();
    let connection = Connection::open(&audited.db).unwrap();
    let stored = entries(&connection);
    drop(connection);
    for index in [0, 1, audited.size / 2, audited.size - 1] {
        let run = cli([
            "audit",
            "prove",
            "--db",
            s(&audited.db),
            "--index",
            &index.to_string(),
        ]);
        assert_eq!(run.code, 0, "{run:?}");
        let receipt: Receipt = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(receipt.index, index);
        assert_eq!(receipt.tree_size, audited.size);
        assert_eq!(
            receipt.checkpoint,
            std::fs::read_to_string(&audited.checkpoint).unwrap()
        );
        assert_eq!(receipt.entry, stored[index as usize]);
        let entry = receipt.verify(&verifier).unwrap();
        assert_eq!(entry.seq, index);
    }
}

#[test]
fn prove_cannot_answer_beyond_the_latest_checkpoint() {
    let (audited, fx) = setup();
    // Entry `size` exists once the log grows, but no checkpoint covers it yet.
    fx.decide(&fx.access(&audited.bob_consent));
    for index in [audited.size, audited.size + 1000, u64::MAX] {
        let run = cli([
            "audit",
            "prove",
            "--db",
            s(&audited.db),
            "--index",
            &index.to_string(),
        ]);
        assert_eq!(run.code, 2, "{run:?}");
        assert!(run.stdout.is_empty(), "{run:?}");
        assert!(run.stderr.contains("checkpoint"), "{run:?}");
    }
    // The last covered entry is still provable.
    let run = cli([
        "audit",
        "prove",
        "--db",
        s(&audited.db),
        "--index",
        &(audited.size - 1).to_string(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn history_prints_one_entry_per_line_about_the_subject() {
    let (audited, fx) = setup();
    let alice = fx.alice.clone();
    let mine: Vec<ConsentId> = fx
        .broker
        .consents_of(&alice)
        .unwrap()
        .into_iter()
        .map(|view| view.consent.id().clone())
        .collect();
    assert!(mine.contains(&audited.alice_consent));
    let expected = fx.broker.subject_history(&alice).unwrap();
    let alice_pseudonym = fx.pseudonym(&alice);
    drop(fx);

    let run = cli([
        "audit",
        "history",
        "--db",
        s(&audited.db),
        "--subject",
        "alice",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let printed: Vec<AuditEntry> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(printed, expected);
    assert!(printed.len() >= 8, "{run:?}");
    for entry in &printed {
        assert!(
            entry.subject() == Some(&alice_pseudonym)
                || entry.consent().is_some_and(|c| mine.contains(c)),
            "{entry:?}"
        );
        assert_ne!(entry.consent(), Some(&audited.bob_consent));
    }
    // The prohibited-purpose denial (no subject field) is part of it.
    assert!(
        printed
            .iter()
            .any(|e| e.subject().is_none() && e.kind() == AuditKind::AccessDenied),
        "{run:?}"
    );

    // By consent.
    let run = cli([
        "audit",
        "history",
        "--db",
        s(&audited.db),
        "--consent",
        audited.bob_consent.as_str(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let entry: AuditEntry = serde_json::from_str(line).unwrap();
        assert_eq!(entry.consent(), Some(&audited.bob_consent));
    }

    // Nobody's history is empty; a malformed id cannot be answered.
    let run = cli([
        "audit",
        "history",
        "--db",
        s(&audited.db),
        "--subject",
        "carol",
    ]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");
    let run = cli([
        "audit",
        "history",
        "--db",
        s(&audited.db),
        "--subject",
        "not an id!",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// keys jwks / token verify
// ---------------------------------------------------------------------------------------------

#[test]
fn jwks_contains_the_brokers_signing_key() {
    let (audited, fx) = setup();
    let run = cli(["keys", "jwks", "--db", s(&audited.db)]);
    assert_eq!(run.code, 0, "{run:?}");
    let jwks = Jwks::from_json(run.stdout.trim()).unwrap();
    let kids: Vec<&str> = jwks.keys.iter().map(|k| k.kid.as_str()).collect();
    assert!(kids.contains(&audited.token_kid.as_str()), "{run:?}");
    for key in fx.broker.jwks().unwrap().keys {
        assert!(kids.contains(&key.kid.as_str()), "{run:?}");
    }
    // A rotation is published too.
    let rotated = SigningKey::generate(&SystemRandom::new()).unwrap();
    let rotated_kid = rotated.kid().to_owned();
    fx.broker.rotate_signing_key(rotated).unwrap();
    let run = cli(["keys", "jwks", "--db", s(&audited.db)]);
    assert_eq!(run.code, 0, "{run:?}");
    let jwks = Jwks::from_json(run.stdout.trim()).unwrap();
    assert!(jwks.keys.iter().any(|k| k.kid == rotated_kid), "{run:?}");
}

fn verify_token(db: &Path, holder: &str, issuer: &str, token: &str) -> Run {
    cli([
        "token",
        "verify",
        "--db",
        s(db),
        "--holder",
        holder,
        "--issuer",
        issuer,
        token,
    ])
}

#[test]
fn token_verify_accepts_a_fresh_token_and_refuses_it_after_revocation() {
    let (audited, fx) = setup();
    let run = verify_token(&audited.db, "bank", "broker", &audited.token);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("accepted:"), "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("consent {}", audited.alice_consent)),
        "{run:?}"
    );
    assert!(run.stdout.contains("subject alice"), "{run:?}");

    // Another bank, or another issuer: refused.
    for (holder, issuer) in [("other-bank", "broker"), ("bank", "other-broker")] {
        let run = verify_token(&audited.db, holder, issuer, &audited.token);
        assert_eq!(run.code, 1, "{holder} {issuer}: {run:?}");
        assert!(run.stdout.starts_with("refused:"), "{run:?}");
    }

    fx.revoke(
        &audited.alice_consent,
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    let run = verify_token(&audited.db, "bank", "broker", &audited.token);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("refused:"), "{run:?}");
}

/// Before: the tool trusted every key the store had ever published, so a retired token key (a
/// leaked one, say) could sign tokens the tool accepted for ever. Now it trusts what the broker
/// publishes now: the active key, and a retired key only until its last tokens expired.
#[test]
fn token_verify_trusts_a_retired_key_only_until_its_overlap_ends() {
    let (audited, fx) = setup();
    // `audited.token` was signed by the first key, and is valid for minutes yet.
    fx.broker
        .rotate_signing_key(SigningKey::generate(&SystemRandom::new()).unwrap())
        .unwrap();
    let run = verify_token(&audited.db, "bank", "broker", &audited.token);
    assert_eq!(run.code, 0, "during the overlap: {run:?}");
    // The tool runs on the system clock: let the overlap end by moving the retired key's
    // end of overlap into the past, as the passing of six minutes would.
    let connection = Connection::open(&audited.db).unwrap();
    let moved = connection
        .execute(
            "UPDATE published_keys SET verifies_until = ?1 WHERE kid = ?2",
            params![
                SystemClock.now().unix_timestamp() - 1,
                audited.token_kid.as_str()
            ],
        )
        .unwrap();
    assert_eq!(moved, 1);
    drop(connection);
    let run = verify_token(&audited.db, "bank", "broker", &audited.token);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains(&TokenError::UnknownKey.to_string()),
        "{run:?}"
    );
    let run = cli(["keys", "jwks", "--db", s(&audited.db)]);
    let jwks = Jwks::from_json(run.stdout.trim()).unwrap();
    assert!(
        jwks.keys.iter().all(|k| k.kid != audited.token_kid),
        "{run:?}"
    );
}

#[test]
fn token_verify_refuses_garbage() {
    let audited = closed();
    let mut tampered = audited.token.clone().into_bytes();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for token in ["garbage", "a.b.c", "", tampered.as_str()] {
        let run = verify_token(&audited.db, "bank", "broker", token);
        assert_eq!(run.code, 1, "{token:?}: {run:?}");
        assert!(run.stdout.starts_with("refused:"), "{token:?}: {run:?}");
    }
    // The untouched token is still accepted from the closed file.
    let run = verify_token(&audited.db, "bank", "broker", &audited.token);
    assert_eq!(run.code, 0, "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// Read-only evidence, the store's own checkpoints, tiles, consistency
// ---------------------------------------------------------------------------------------------

/// The auditor's tool never writes to what it audits: it verifies a copy whose file and
/// directory are read-only, and the bytes are the same afterwards.
#[cfg(unix)]
#[test]
fn verify_reads_a_read_only_copy_and_writes_nothing() {
    use std::os::unix::fs::PermissionsExt as _;
    let audited = closed();
    let evidence = audited.dir.path().join("evidence");
    std::fs::create_dir(&evidence).unwrap();
    let copy = evidence.join("broker.sqlite");
    std::fs::copy(&audited.db, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(&evidence, std::fs::Permissions::from_mode(0o555)).unwrap();
    let run = audited.verify_checked(&copy);
    let listing: Vec<_> = std::fs::read_dir(&evidence)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    std::fs::set_permissions(&evidence, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("valid:"), "{run:?}");
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    assert_eq!(
        listing,
        ["broker.sqlite"],
        "no -wal, -shm or journal appeared"
    );
}

/// Without a checkpoint of the auditor's, the store's own signed checkpoint still exposes a
/// consistent rewrite (every hash recomputed) that the signing key did not re-sign.
#[test]
fn verify_checks_the_stores_own_signed_checkpoint() {
    let audited = closed();
    let copy = audited.tampered("rewrite-own", |c| rewrite_consistently(c, 4));
    assert_eq!(
        audited.verify(&copy).code,
        0,
        "no key: nothing to check against"
    );
    let run = cli(["audit", "verify", "--db", s(&copy), "--vkey", &audited.vkey]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .contains("against the store's own signed checkpoint"),
        "{run:?}"
    );
    let clean = cli([
        "audit",
        "verify",
        "--db",
        s(&audited.db),
        "--vkey",
        &audited.vkey,
    ]);
    assert_eq!(clean.code, 0, "{clean:?}");
    assert!(
        clean.stdout.contains("the store's own signed checkpoint"),
        "{clean:?}"
    );
}

#[test]
fn publish_then_verify_the_tiles_with_the_standard_layout() {
    let audited = closed();
    let origin = NoteVerifier::from_vkey(&audited.vkey)
        .unwrap()
        .name()
        .to_owned();
    let tiles = audited.dir.path().join("tiles");
    let db = audited.dir.path().join("publisher.sqlite");
    std::fs::copy(&audited.db, &db).unwrap();
    let run = cli([
        "audit",
        "publish",
        "--db",
        s(&db),
        "--key",
        s(&audited.key_file),
        "--origin",
        &origin,
        "--dir",
        s(&tiles),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        tiles.join("tile/0/000.p").is_dir() || tiles.join("tile/0/000").is_file(),
        "{run:?}"
    );
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "audit",
            "verify",
            "--tiles",
            s(&tiles),
            "--vkey",
            &audited.vkey,
            "--origin",
            &origin,
        ];
        args.extend_from_slice(extra);
        cli(args)
    };
    let run = verify(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with(&format!("valid: {} entries", audited.size)),
        "{run:?}"
    );
    // A witness policy the checkpoint does not meet.
    let witness = consent_broker::cosignature::CosignatureSigner::new(
        "witness.example",
        SigningKey::generate(&SystemRandom::new())
            .unwrap()
            .to_pkcs8_der(),
    )
    .unwrap();
    let run = verify(&["--witness", &witness.verifier().to_vkey(), "--quorum", "1"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.contains("0 of the required 1 witnesses"),
        "{run:?}"
    );
    // An entry bundle altered after publication.
    let bundle = std::fs::read_dir(tiles.join("tile/entries"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bundle = if bundle.is_dir() {
        std::fs::read_dir(&bundle)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    } else {
        bundle
    };
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[5] ^= 1;
    std::fs::write(&bundle, bytes).unwrap();
    let run = verify(&[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("INVALID"), "{run:?}");
}

/// The consistency proof from a kept checkpoint, in the add-checkpoint format a witness takes;
/// a rewritten store cannot produce one.
#[test]
fn consistency_proofs_from_a_kept_checkpoint() {
    use consent_broker::witness::{AddCheckpoint, Witness};
    let (audited, fx) = setup();
    // The log grows after the auditor kept its checkpoint; the broker signs a new one.
    let balance = fx.access(&audited.alice_consent);
    assert_eq!(fx.decide(&balance), Decision::Permit);
    fx.broker.checkpoint().unwrap();
    drop(fx);
    let run = cli([
        "audit",
        "consistency",
        "--db",
        s(&audited.db),
        "--from",
        s(&audited.checkpoint),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let request = AddCheckpoint::parse(&run.stdout).unwrap();
    assert_eq!(request.old_size, audited.size);
    assert!(!request.proof.is_empty());
    // A witness that cosigned the kept checkpoint accepts it.
    let verifier = NoteVerifier::from_vkey(&audited.vkey).unwrap();
    let origin = verifier.name().to_owned();
    let witness = Witness::open(
        audited.dir.path().join("witness.sqlite"),
        consent_broker::cosignature::CosignatureSigner::new(
            "witness.example",
            SigningKey::generate(&SystemRandom::new())
                .unwrap()
                .to_pkcs8_der(),
        )
        .unwrap(),
        Arc::new(SystemClock),
    )
    .unwrap()
    .follow(&origin, verifier);
    let kept = std::fs::read_to_string(&audited.checkpoint).unwrap();
    witness
        .add_checkpoint(
            &AddCheckpoint {
                old_size: 0,
                proof: vec![],
                note: kept,
            }
            .to_body(),
        )
        .unwrap();
    witness.add_checkpoint(&run.stdout).unwrap();
    // A consistently rewritten copy (the attacker re-signs with the key it holds) is refused.
    let copy = audited.tampered("rewrite-consistency", |c| rewrite_consistently(c, 2));
    let run = cli([
        "audit",
        "consistency",
        "--db",
        s(&copy),
        "--from",
        s(&audited.checkpoint),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.starts_with("INCONSISTENT"), "{run:?}");
}

/// A fork signed with the real key and published as tiles verifies on its own; against the
/// checkpoint the auditor kept it does not. Witness keys need a quorum.
#[test]
fn verify_tiles_against_a_kept_checkpoint_catches_a_fork() {
    let audited = closed();
    let origin = NoteVerifier::from_vkey(&audited.vkey)
        .unwrap()
        .name()
        .to_owned();
    let forked_db = audited.tampered("fork", |c| {
        rewrite_consistently(c, 3);
        c.execute("DELETE FROM checkpoints", []).unwrap();
    });
    let tiles = audited.dir.path().join("fork-tiles");
    let run = cli([
        "audit",
        "publish",
        "--db",
        s(&forked_db),
        "--key",
        s(&audited.key_file),
        "--origin",
        &origin,
        "--dir",
        s(&tiles),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let verify = |extra: &[&str]| verify_tiles_run(&tiles, &audited.vkey, extra);
    let alone = verify(&[]);
    assert_eq!(alone.code, 0, "{alone:?}");
    let kept = verify(&["--checkpoint", s(&audited.checkpoint)]);
    assert_eq!(kept.code, 1, "{kept:?}");
    assert!(
        kept.stdout
            .contains("not consistent with the kept checkpoint"),
        "{kept:?}"
    );
    let no_quorum = verify(&["--witness", &audited.vkey]);
    assert_eq!(no_quorum.code, 2, "{no_quorum:?}");
    let witness_on_db = cli([
        "audit",
        "verify",
        "--db",
        s(&audited.db),
        "--witness",
        &audited.vkey,
        "--quorum",
        "1",
    ]);
    assert_eq!(witness_on_db.code, 2, "{witness_on_db:?}");
}

/// After an endorsed checkpoint key rotation, an auditor holding the first key still verifies
/// the store's checkpoints: the tool follows the history the log records.
#[test]
fn verify_follows_an_endorsed_key_rotation() {
    let (audited, fx) = setup();
    fx.broker
        .rotate_checkpoint_key(SigningKey::generate(&SystemRandom::new()).unwrap())
        .unwrap();
    fx.broker.checkpoint().unwrap();
    drop(fx);
    let run = cli([
        "audit",
        "verify",
        "--db",
        s(&audited.db),
        "--vkey",
        &audited.vkey,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("the store's own signed checkpoint"),
        "{run:?}"
    );
}

/// Publishing needs no private key: the latest checkpoint the broker recorded is published with
/// its tiles, from a read-only copy of the database.
#[test]
fn publish_without_the_key_uses_the_recorded_checkpoint() {
    let audited = closed();
    let tiles = audited.dir.path().join("mirror");
    let run = cli([
        "audit",
        "publish",
        "--db",
        s(&audited.db),
        "--dir",
        s(&tiles),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        std::fs::read_to_string(tiles.join("checkpoint")).unwrap(),
        std::fs::read_to_string(&audited.checkpoint).unwrap()
    );
    let run = verify_tiles_run(&tiles, &audited.vkey, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let half = cli([
        "audit",
        "publish",
        "--db",
        s(&audited.db),
        "--dir",
        s(&tiles),
        "--key",
        s(&audited.key_file),
    ]);
    assert_eq!(half.code, 2, "--key needs --origin: {half:?}");
}

/// `audit verify --tiles DIR --vkey V` and `extra`.
fn verify_tiles_run(tiles: &Path, vkey: &str, extra: &[&str]) -> Run {
    let mut args = vec!["audit", "verify", "--tiles", s(tiles), "--vkey", vkey];
    args.extend_from_slice(extra);
    cli(args)
}

#[test]
fn receipt_checks_a_receipt_against_the_key_alone_and_refuses_an_altered_one() {
    let audited = closed();
    let dir = tempfile::tempdir().unwrap();
    let run = cli(["audit", "prove", "--db", s(&audited.db), "--index", "1"]);
    assert_eq!(run.code, 0, "{run:?}");
    let file = dir.path().join("receipt.json");
    std::fs::write(&file, &run.stdout).unwrap();
    let ok = cli(["audit", "receipt", s(&file), "--vkey", &audited.vkey]);
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.starts_with("verified: entry 1 "), "{ok:?}");
    // The entry changed by one byte: the proof no longer leads to the signed root.
    let mut receipt: Receipt = serde_json::from_str(&run.stdout).unwrap();
    receipt.entry = receipt.entry.replacen("\"seq\":1", "\"seq\":2", 1);
    if receipt.entry == serde_json::from_str::<Receipt>(&run.stdout).unwrap().entry {
        receipt.entry.push(' ');
    }
    std::fs::write(&file, serde_json::to_string(&receipt).unwrap()).unwrap();
    let altered = cli(["audit", "receipt", s(&file), "--vkey", &audited.vkey]);
    assert_eq!(altered.code, 1, "{altered:?}");
    assert!(altered.stdout.starts_with("does not verify"), "{altered:?}");
    // Another key: refused too.
    std::fs::write(&file, &run.stdout).unwrap();
    let other = SigningKey::from_seed(&[77; 32]).unwrap();
    let vkey = NoteSigner::new("other.example", other.to_pkcs8_der())
        .unwrap()
        .verifier_key();
    let wrong = cli(["audit", "receipt", s(&file), "--vkey", &vkey]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
}

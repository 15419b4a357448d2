//! Hostile input against every public parsing entry point.
//!
//! The inputs are the files of `tests/data/hostile/` (invalid UTF-8, duplicate keys, huge
//! numbers, deep nesting, malformed tokens, notes, checkpoints, keys…; its README lists them)
//! and inputs built here that are too big to commit (10 MB strings, 100,000-deep nesting, notes
//! and proofs past their limits). Every entry point must answer each with a typed error, or with
//! a value where the input is in fact valid, and never panic. Time and memory are bounded
//! structurally, not by the clock: where an entry point has a size limit, the error must be the
//! size-limit error, which proves the input was refused before it was parsed; where it has none
//! (JSON), the error must come from the parser's recursion limit or its first bad byte.
//!
//! `tests/bad_input.rs` covers each wire type's own malformed fields; this file covers the
//! hostile shapes, across all entry points at once.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::targets::{self, LogStore, NOW, fixture, id, pkcs8};
use base64::Engine as _;
use consent_broker::checkpoint::{
    Checkpoint, CheckpointError, MAX_NOTE_BYTES, MAX_SIGNATURES, NoteError, NoteSigner,
    NoteVerifier, open_note, verify_checkpoint,
};
use consent_broker::merkle::{self, ProofError};
use consent_broker::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// The entry points

/// `Ok` for an accepted input, the typed error's message otherwise.
type Answer = Result<(), String>;

fn refused(error: impl Display) -> String {
    error.to_string()
}

fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The lines of `bytes`, at most `cap` of them: an input of 10 MB of newlines would otherwise
/// make the harness, not the entry point, build a log of ten million entries.
fn lines(bytes: &[u8], cap: usize) -> impl Iterator<Item = &[u8]> {
    bytes.split(|&b| b == b'\n').take(cap)
}

/// Entries of the logs built from an input.
const LOG_CAP: usize = 1_000;
/// Hashes decoded from an input.
const HASH_CAP: usize = 200_000;

fn token_expectations() -> TokenExpectations<'static> {
    let fx = fixture();
    TokenExpectations {
        issuer: fx.broker.id(),
        audience: &fx.bank,
        leeway: MAX_LEEWAY,
        max_lifetime: MAX_TOKEN_LIFETIME,
    }
}

fn checked(token: &str) -> Result<AccessClaims, TokenError> {
    let fx = fixture();
    consent_broker::check_token(
        token,
        |kid| (kid == fx.token_kid).then_some(fx.token_key),
        &token_expectations(),
        NOW,
    )
}

fn attestation_expectations() -> Expectations<'static> {
    let fx = fixture();
    Expectations {
        broker: fx.broker.id(),
        request: &fx.pending,
        holder_keys: &fx.holder_keys,
        latest_expiry: NOW + fx.pending.duration(),
    }
}

fn verify_attestation(token: &str) -> Result<CheckedAttestation, AttestationError> {
    check_attestation(token, &attestation_expectations(), NOW)
}

fn limits() -> RequestLimits<'static> {
    let fx = fixture();
    RequestLimits {
        offered_scopes: &fx.policy.enabled_scopes,
        max_duration: fx.policy.effective_max_duration(),
        approval_window: DEFAULT_APPROVAL_WINDOW,
    }
}

fn json<T: DeserializeOwned>(bytes: &[u8]) -> Answer {
    serde_json::from_slice::<T>(bytes)
        .map(drop)
        .map_err(refused)
}

fn from_str<T: std::str::FromStr>(bytes: &[u8]) -> Answer
where
    T::Err: Display,
{
    text(bytes).parse::<T>().map(drop).map_err(refused)
}

/// An entry point, on bytes.
type Call = fn(&[u8]) -> Answer;

/// Every public entry point that reads untrusted bytes or text, by name.
const ENTRY_POINTS: &[(&str, Call)] = &[
    ("token::check", |b| {
        checked(&text(b)).map(drop).map_err(refused)
    }),
    ("TokenVerifier::verify", |b| {
        fixture()
            .verifier
            .verify(&text(b))
            .map(drop)
            .map_err(refused)
    }),
    ("attestation::verify", |b| {
        verify_attestation(&text(b)).map(drop).map_err(refused)
    }),
    ("Broker::approve", |b| {
        let fx = fixture();
        fx.broker
            .approve(fx.pending.id(), &text(b))
            .map(drop)
            .map_err(refused)
    }),
    (
        "ConsentRequestDraft JSON + ConsentRequest::from_draft",
        |b| {
            let draft: ConsentRequestDraft = serde_json::from_slice(b).map_err(refused)?;
            draft.check_prohibited().map_err(refused)?;
            ConsentRequest::from_draft(draft, id("cns_hostile"), limits(), NOW)
                .map(drop)
                .map_err(refused)
        },
    ),
    ("AccessRequest JSON + evaluate", |b| {
        let fx = fixture();
        let access: AccessRequest = serde_json::from_slice(b).map_err(refused)?;
        let _ = evaluate(
            &access,
            Some(&fx.granted),
            &fx.policy,
            &fx.profile,
            Usage::default(),
            NOW,
        );
        Ok(())
    }),
    ("stored Consent JSON", |b| {
        Consent::from_stored(b).map(drop).map_err(refused)
    }),
    ("HolderPolicy JSON", json::<HolderPolicy>),
    ("PlatformProfile JSON", json::<PlatformProfile>),
    ("Decision JSON", json::<Decision>),
    ("DenyReason JSON", json::<DenyReason>),
    ("AccessClaims JSON", json::<AccessClaims>),
    ("ScopeSet JSON", json::<ScopeSet>),
    ("AccountSet JSON", json::<AccountSet>),
    ("AuditEntry::from_bytes", |b| {
        AuditEntry::from_bytes(b).map(drop).map_err(refused)
    }),
    ("Receipt JSON + Receipt::verify", |b| {
        let receipt: Receipt = serde_json::from_slice(b).map_err(refused)?;
        receipt
            .verify(&fixture().note_verifier)
            .map(drop)
            .map_err(refused)
    }),
    ("Checkpoint::parse_body", |b| {
        Checkpoint::parse_body(&text(b)).map(drop).map_err(refused)
    }),
    ("open_note", |b| {
        open_note(&text(b), std::slice::from_ref(&fixture().note_verifier))
            .map(drop)
            .map_err(refused)
    }),
    ("verify_checkpoint", |b| {
        let fx = fixture();
        verify_checkpoint(&text(b), &fx.note_verifier, Some(fx.broker.log_origin()))
            .map(drop)
            .map_err(refused)
    }),
    ("NoteVerifier::from_vkey", |b| {
        NoteVerifier::from_vkey(&text(b)).map(drop).map_err(refused)
    }),
    ("NoteSigner::new (key name)", |b| {
        NoteSigner::new(&text(b), &pkcs8(5))
            .map(drop)
            .map_err(refused)
    }),
    ("NoteSigner::new (PKCS#8)", |b| {
        NoteSigner::new("hostile", b).map(drop).map_err(refused)
    }),
    ("SigningKey::from_pkcs8_der", |b| {
        SigningKey::from_pkcs8_der(b).map(drop).map_err(refused)
    }),
    ("Jwks::from_json", |b| {
        Jwks::from_json(&text(b)).map(drop).map_err(refused)
    }),
    ("Jwk JSON + Jwk::public_key", |b| {
        let jwk: Jwk = serde_json::from_slice(b).map_err(refused)?;
        jwk.public_key().map(drop).map_err(refused)
    }),
    ("Ed25519PublicKey::from_base64url", |b| {
        Ed25519PublicKey::from_base64url(&text(b))
            .map(drop)
            .map_err(refused)
    }),
    ("SubjectId::from_str", from_str::<SubjectId>),
    ("PlatformId::from_str", from_str::<PlatformId>),
    ("HolderId::from_str", from_str::<HolderId>),
    ("AccountId::from_str", from_str::<AccountId>),
    ("ConsentId::from_str", from_str::<ConsentId>),
    ("BrokerId::from_str", from_str::<BrokerId>),
    ("RequestedScope::from_str", from_str::<RequestedScope>),
    ("RequestedPurpose::from_str", from_str::<RequestedPurpose>),
    ("ProhibitedUse::from_str", from_str::<ProhibitedUse>),
    ("verify_log (one entry per line)", |b| {
        verify_log(&LogStore::of(lines(b, LOG_CAP)), None)
            .map(drop)
            .map_err(refused)
    }),
    ("Store::audit_entries (one entry per line)", |b| {
        let store = LogStore::of(lines(b, LOG_CAP));
        store
            .audit_entries(0..store.entries.len() as u64)
            .map(drop)
            .map_err(refused)
    }),
    ("decode_hashes (one per line)", |b| {
        let hashes: Vec<String> = lines(b, HASH_CAP).map(|l| text(l).into_owned()).collect();
        decode_hashes(&hashes)
            .map(drop)
            .ok_or_else(|| "not base64 of 32 bytes".to_owned())
    }),
    ("merkle::verify_inclusion (32-byte proof hashes)", |b| {
        let proof: Vec<merkle::Hash> = b
            .chunks(32)
            .map(|chunk| {
                let mut hash = [0; 32];
                hash[..chunk.len()].copy_from_slice(chunk);
                hash
            })
            .collect();
        let size = 1 << proof.len().min(63);
        merkle::verify_inclusion(0, size, &[0; 32], &proof, &[0; 32]).map_err(refused)
    }),
];

/// Runs `input` through every entry point; a panic is returned as an error of its own.
fn answers(input: &[u8]) -> Vec<(&'static str, Result<Answer, String>)> {
    ENTRY_POINTS
        .iter()
        .map(|(name, call)| {
            let answer = catch_unwind(AssertUnwindSafe(|| call(input))).map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            });
            (*name, answer)
        })
        .collect()
}

/// The answer of the entry point `name` (which must not panic).
fn answer(name: &str, input: &[u8]) -> Answer {
    let (_, call) = ENTRY_POINTS
        .iter()
        .find(|(entry, _)| *entry == name)
        .unwrap_or_else(|| panic!("no entry point {name}"));
    call(input)
}

// ---------------------------------------------------------------------------------------------
// The inputs

fn hostile_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile")
}

/// The committed hostile inputs, by file name (the README excepted).
fn hostile_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(hostile_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap() != "README.md")
        .map(|path| {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 60, "the hostile corpus shrank");
    files
}

fn hostile_file(name: &str) -> Vec<u8> {
    std::fs::read(hostile_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const MB: usize = 1 << 20;
const DEEP: usize = 100_000;

fn deep_array(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn deep_object(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

/// A valid consent request draft, as JSON.
fn draft_json() -> Value {
    serde_json::to_value(targets::draft(AccountSelection::Listed(
        targets::listed_accounts(),
    )))
    .unwrap()
}

/// Inputs too big to commit.
fn generated() -> Vec<(String, Vec<u8>)> {
    let draft = draft_json().to_string();
    let receipt = serde_json::to_string(&Receipt {
        index: 0,
        entry: "{}".into(),
        tree_size: 1,
        proof: Vec::new(),
        checkpoint: String::new(),
    })
    .unwrap();
    // `value` as an unknown member `_`, just before `member`.
    let unknown_member = |json: &str, member: &str, value: &str| {
        json.replacen(
            &format!("\"{member}\":"),
            &format!("\"_\":{value},\"{member}\":"),
            1,
        )
    };
    let deep = deep_array(DEEP);
    vec![
        ("10 MB of 'a'".into(), "a".repeat(10 * MB)),
        ("10 MB of '['".into(), "[".repeat(10 * MB)),
        ("10 MB of '{'".into(), "{".repeat(10 * MB)),
        ("10 MB of '.'".into(), ".".repeat(10 * MB)),
        ("10 MB of '\\n'".into(), "\n".repeat(10 * MB)),
        (
            "10 MB JSON string".into(),
            format!("\"{}\"", "a".repeat(10 * MB)),
        ),
        ("100,000-deep arrays".into(), deep.clone()),
        ("100,000-deep objects".into(), deep_object(DEEP)),
        (
            "100,000-deep arrays in a draft's subject".into(),
            draft.replacen("\"alice\"", &deep, 1),
        ),
        (
            "100,000-deep arrays in a receipt's unknown member".into(),
            unknown_member(&receipt, "index", &deep),
        ),
        (
            "draft with a 10 MB subject".into(),
            draft.replacen("alice", &"a".repeat(10 * MB), 1),
        ),
        (
            "draft with 1,000,000 scopes".into(),
            draft.replacen(
                "\"scopes\":[",
                &format!("\"scopes\":[{}", "\"balance\",".repeat(1_000_000)),
                1,
            ),
        ),
        (
            "a token just over the limit".into(),
            format!("{}.e30.AA", "a".repeat(MAX_TOKEN_LEN)),
        ),
        (
            "an attestation just over the limit".into(),
            format!("{}.e30.AA", "a".repeat(MAX_ATTESTATION_LEN)),
        ),
        (
            "a note just over the limit".into(),
            format!(
                "{}\n\n\u{2014} broker AAAAAAAA\n",
                "a".repeat(MAX_NOTE_BYTES)
            ),
        ),
        (
            "a note with 50,000 signature lines".into(),
            format!("text\n\n{}", "\u{2014} k AAAAAAAA\n".repeat(50_000)),
        ),
        (
            "100,000 proof hashes".into(),
            vec!["A".repeat(43) + "="; 100_000].join("\n"),
        ),
    ]
    .into_iter()
    .map(|(name, text): (String, String)| (name, text.into_bytes()))
    .collect()
}

// ---------------------------------------------------------------------------------------------
// Every input, every entry point

/// Whether the entry point `entry` must accept `bytes` (the input `input`): every other answer
/// must be a typed error.
fn must_accept(input: &str, entry: &str, bytes: &[u8]) -> bool {
    let text = text(bytes);
    match entry {
        // A log verifies its entries' bytes against its Merkle tree and never parses them: any
        // bytes, with their correct tree, are a valid log.
        "verify_log (one entry per line)" => true,
        // A key name is any non-empty text without whitespace, '+' or a control character.
        "NoteSigner::new (key name)" => {
            !text.is_empty()
                && !text
                    .chars()
                    .any(|c| c.is_whitespace() || c == '+' || c < ' ')
        }
        // An id is 1 to 128 bytes of ASCII letters, digits and -._~:@.
        "SubjectId::from_str"
        | "PlatformId::from_str"
        | "HolderId::from_str"
        | "AccountId::from_str"
        | "ConsentId::from_str"
        | "BrokerId::from_str" => {
            (1..=128).contains(&text.len())
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~:@".contains(&b))
        }
        _ => ACCEPTED.contains(&(input, entry)),
    }
}

/// The other inputs that are valid for an entry point.
const ACCEPTED: &[(&str, &str)] = &[
    // A million repetitions of one scope collapse into one: a valid request.
    (
        "draft with 1,000,000 scopes",
        "ConsentRequestDraft JSON + ConsentRequest::from_draft",
    ),
    // The empty set.
    ("empty-array.json", "AccountSet JSON"),
    ("empty-array.json", "ScopeSet JSON"),
    // A tree of one leaf whose root is that leaf's hash, with the empty proof.
    (
        "empty.bin",
        "merkle::verify_inclusion (32-byte proof hashes)",
    ),
    // The "signature line" after the root is a well-formed extension line of a checkpoint body
    // (the body alone is not authenticated: `verify_checkpoint` refuses this note).
    ("note-no-blank-line.txt", "Checkpoint::parse_body"),
    // 32 zero bytes are the same in the URL-safe and the standard alphabet.
    ("x-padded.txt", "decode_hashes (one per line)"),
    // A hundred thousand well-formed hashes (32 zero bytes each).
    ("100,000 proof hashes", "decode_hashes (one per line)"),
    // A kind this version does not know (a newer one may write it) parses as `Unrecognised`:
    // reading a log never fails on one. Integrity is the hash of the bytes, not their kind.
    ("audit-entry-unknown-kind.json", "AuditEntry::from_bytes"),
    (
        "audit-entry-unknown-kind.json",
        "Store::audit_entries (one entry per line)",
    ),
];

#[test]
fn every_hostile_input_gets_a_typed_answer_from_every_entry_point() {
    let mut panics = Vec::new();
    let mut wrong = Vec::new();
    let mut accepted = BTreeSet::new();
    for (input, bytes) in hostile_files().into_iter().chain(generated()) {
        for (entry, answer) in answers(&bytes) {
            let answer = match answer {
                Err(panic) => {
                    panics.push(format!("{entry} panicked on {input}: {panic}"));
                    continue;
                }
                Ok(answer) => answer,
            };
            if answer.is_ok() {
                accepted.insert((input.clone(), entry));
            }
            match (must_accept(&input, entry, &bytes), answer) {
                (true, Err(error)) => wrong.push(format!("{entry} refused {input}: {error}")),
                (false, Ok(())) => wrong.push(format!("{entry} accepted {input}")),
                _ => {}
            }
        }
    }
    assert!(panics.is_empty(), "{panics:#?}");
    assert!(wrong.is_empty(), "{wrong:#?}");
    for (input, entry) in ACCEPTED {
        assert!(
            accepted.contains(&((*input).to_owned(), *entry)),
            "{input} for {entry} was not tried"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Size limits

#[test]
fn oversized_inputs_are_refused_by_their_size_limit_before_any_parsing() {
    let fx = fixture();
    // Ten megabytes that would split into five million segments, or lines, if parsed.
    let huge = "a.\n".repeat(10 * MB / 3);
    let len = huge.len();

    // Tokens: the limit is checked first; at the limit, parsing starts (and fails later).
    assert_eq!(checked(&huge), Err(TokenError::TooLarge { len }));
    assert_eq!(fx.verifier.verify(&huge), Err(TokenError::TooLarge { len }));
    let over = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        checked(&over),
        Err(TokenError::TooLarge {
            len: MAX_TOKEN_LEN + 1
        })
    );
    assert_eq!(
        checked(&over[1..]),
        Err(TokenError::SegmentCount { segments: 1 })
    );

    // Attestations, through the pure check and through the broker.
    let too_large = |len: usize| {
        AttestationError::Malformed(format!(
            "{len} bytes, more than the {MAX_ATTESTATION_LEN} accepted"
        ))
    };
    assert_eq!(verify_attestation(&huge), Err(too_large(len)));
    assert_eq!(
        fx.broker.approve(fx.pending.id(), &huge),
        Err(Error::Attestation(too_large(len)))
    );
    let over = "a".repeat(MAX_ATTESTATION_LEN + 1);
    assert_eq!(
        verify_attestation(&over),
        Err(too_large(MAX_ATTESTATION_LEN + 1))
    );
    assert!(matches!(
        verify_attestation(&over[1..]),
        Err(AttestationError::Malformed(message)) if message.starts_with("header:")
    ));

    // Signed notes and checkpoints.
    let verifiers = std::slice::from_ref(&fx.note_verifier);
    assert_eq!(
        open_note(&huge, verifiers),
        Err(NoteError::TooLarge { len })
    );
    assert_eq!(
        verify_checkpoint(&huge, &fx.note_verifier, None),
        Err(CheckpointError::Note(NoteError::TooLarge { len }))
    );
    // A note of exactly the limit is opened: the limit is a size, not a shape.
    let signature_line = fx.note_signer.sign("x\n").unwrap().len() - "x\n".len();
    let text = format!("{}\n", "x".repeat(MAX_NOTE_BYTES - signature_line - 1));
    let note = fx.note_signer.sign(&text).unwrap();
    assert_eq!(note.len(), MAX_NOTE_BYTES);
    assert_eq!(open_note(&note, verifiers), Ok(text.clone()));
    let longer = format!("x{text}");
    assert_eq!(
        fx.note_signer.sign(&longer),
        Err(NoteError::TooLarge {
            len: MAX_NOTE_BYTES + 1
        })
    );
    let over = format!("x{note}");
    assert_eq!(
        open_note(&over, verifiers),
        Err(NoteError::TooLarge {
            len: MAX_NOTE_BYTES + 1
        })
    );

    // Signature lines are counted before any is parsed: these are malformed (three bytes, where
    // a key id and a signature take five at least), which parsing would have said, and the
    // count is what refuses them.
    let lines = |count: usize| format!("text\n\n{}", "\u{2014} k AAAA\n".repeat(count));
    assert_eq!(
        open_note(&lines(50_000), verifiers),
        Err(NoteError::TooManySignatures { count: 50_000 })
    );
    assert_eq!(
        open_note(&lines(MAX_SIGNATURES + 1), verifiers),
        Err(NoteError::TooManySignatures {
            count: MAX_SIGNATURES + 1
        })
    );
    assert_eq!(
        open_note(&lines(MAX_SIGNATURES), verifiers),
        Err(NoteError::BadSignatureLine { line: 1 })
    );

    // Proofs: the length is checked before anything is hashed.
    let long_proof = vec![[7u8; 32]; 100_000];
    assert_eq!(
        merkle::verify_inclusion(0, 2, &[0; 32], &long_proof, &[0; 32]),
        Err(ProofError::WrongLength {
            expected: 1,
            got: 100_000
        })
    );
    assert_eq!(
        merkle::verify_consistency(1, 2, &[0; 32], &[0; 32], &long_proof),
        Err(ProofError::WrongLength {
            expected: 1,
            got: 100_000
        })
    );
    let mut receipt = fx.broker.receipt(1).unwrap();
    let expected = receipt.proof.len();
    receipt
        .proof
        .extend(std::iter::repeat_n("A".repeat(43) + "=", 100_000));
    assert_eq!(
        receipt.verify(&fx.note_verifier),
        Err(ReceiptError::Proof(ProofError::WrongLength {
            expected,
            got: expected + 100_000
        }))
    );

    // Ids: the length is checked before the characters (so a long id is never scanned).
    let long_id = "\0".repeat(10 * MB);
    assert_eq!(
        long_id.parse::<SubjectId>(),
        Err(IdError::TooLong {
            kind: "subject id",
            len: 10 * MB
        })
    );
}

#[test]
fn json_has_no_size_limit_but_stops_at_the_first_bad_byte() {
    // The JSON entry points take any size, so the work they do must stop where the input goes
    // wrong: at its first byte for ten megabytes of garbage, and at the end of a ten-megabyte
    // string (read once) for an over-long id.
    let garbage = "a".repeat(10 * MB);
    let error = serde_json::from_str::<ConsentRequestDraft>(&garbage).unwrap_err();
    assert_eq!((error.line(), error.column()), (1, 1));
    let draft = draft_json()
        .to_string()
        .replacen("alice", &"a".repeat(10 * MB), 1);
    let error = serde_json::from_str::<ConsentRequestDraft>(&draft).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("subject id is 10485760 bytes long; at most 128 are allowed"),
        "{error}"
    );
    // Ten megabytes of an array's opening brackets: refused at the first one (no id, token or
    // set is an array of arrays).
    let brackets = "[".repeat(10 * MB);
    for entry in [
        "ConsentRequestDraft JSON + ConsentRequest::from_draft",
        "AccessRequest JSON + evaluate",
        "ScopeSet JSON",
        "AuditEntry::from_bytes",
        "Receipt JSON + Receipt::verify",
    ] {
        let error = answer(entry, brackets.as_bytes()).unwrap_err();
        assert!(error.contains("invalid type: sequence"), "{entry}: {error}");
    }
}

// ---------------------------------------------------------------------------------------------
// Nesting

#[test]
fn deep_nesting_never_exhausts_the_stack() {
    // 100,000 levels of arrays and of objects, at the top and inside members: every JSON entry
    // point answers with an error, none overflows the stack (which would abort this process).
    // Types that buffer their members (tagged enums, the audit entry's flattened record) meet
    // serde_json's recursion limit of 128 levels; the others refuse the first wrong type, or
    // skip an unknown member without recursing.
    let draft = draft_json().to_string();
    let deep_inputs = [
        deep_array(DEEP),
        deep_object(DEEP),
        draft.replacen("\"alice\"", &deep_array(DEEP), 1),
        draft.replacen(
            "\"subject\":",
            &format!("\"_\":{},\"subject\":", deep_object(DEEP)),
            1,
        ),
    ];
    let json_entries: Vec<&str> = ENTRY_POINTS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| name.to_lowercase().contains("json") || *name == "AuditEntry::from_bytes")
        .collect();
    // Every JSON entry point is put through the deep inputs (the stored consent stands for the
    // consent and its request, which have no other JSON reader).
    assert_eq!(json_entries.len(), 14, "{json_entries:?}");
    for input in &deep_inputs {
        for entry in &json_entries {
            assert!(answer(entry, input.as_bytes()).is_err(), "{entry}");
        }
    }
    for entry in ["Decision JSON", "DenyReason JSON", "AuditEntry::from_bytes"] {
        let error = answer(entry, deep_object(DEEP).as_bytes()).unwrap_err();
        assert!(
            error.contains("recursion limit exceeded"),
            "{entry}: {error}"
        );
    }

    // A token's header and payload are read as JSON values, under the same limit, and within
    // the token's size limit: 2,500 levels fit.
    let fx = fixture();
    let header = deep_array(2_500);
    let token = targets::sign_jws(&header, "{}", targets::TOKEN_KEY_SEED);
    assert!(token.len() <= MAX_TOKEN_LEN);
    assert_eq!(checked(&token), Err(TokenError::Json(TokenPart::Header)));
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
        fx.token_kid
    );
    let token = targets::sign_jws(&header, &deep_object(800), targets::TOKEN_KEY_SEED);
    assert!(token.len() <= MAX_TOKEN_LEN);
    assert_eq!(checked(&token), Err(TokenError::Json(TokenPart::Payload)));
    // An attestation's header, likewise (jsonwebtoken reads it, and keeps unknown members).
    let header = format!(r#"{{"alg":"EdDSA","x":{}}}"#, deep_array(5_000));
    let attestation = targets::sign_jws(&header, "{}", targets::BANK_KEY_SEED);
    assert!(attestation.len() <= MAX_ATTESTATION_LEN);
    assert!(matches!(
        verify_attestation(&attestation),
        Err(AttestationError::Malformed(message)) if message.starts_with("header: not JSON (")
    ));
}

// ---------------------------------------------------------------------------------------------
// Encodings

#[test]
fn invalid_utf8_gets_a_typed_error_and_a_log_of_raw_bytes_still_verifies() {
    for file in [
        "invalid-utf8.bin",
        "invalid-utf8-in-string.json",
        "overlong-utf8-in-member.json",
    ] {
        let bytes = hostile_file(file);
        assert!(
            std::str::from_utf8(&bytes).is_err(),
            "{file} is valid UTF-8"
        );
        for entry in [
            "ConsentRequestDraft JSON + ConsentRequest::from_draft",
            "AuditEntry::from_bytes",
            "ScopeSet JSON",
            "Receipt JSON + Receipt::verify",
        ] {
            assert!(answer(entry, &bytes).is_err(), "{entry} accepted {file}");
        }
    }
    let error = AuditEntry::from_bytes(&hostile_file("invalid-utf8-in-string.json")).unwrap_err();
    assert!(
        error.to_string().contains("invalid unicode code point"),
        "{error}"
    );
    // A lone surrogate is no character: serde_json wants its pair.
    let error =
        serde_json::from_slice::<ConsentRequestDraft>(&hostile_file("lone-surrogate-escape.json"))
            .unwrap_err();
    assert!(error.to_string().contains("hex escape"), "{error}");
    // Text APIs receive the bytes lossily decoded; U+FFFD is never part of a token or an id.
    let lossy = text(b"\xff\xfe");
    assert_eq!(
        checked(&format!("{lossy}.e30.AA")),
        Err(TokenError::Base64(TokenPart::Header))
    );
    assert!(matches!(
        lossy.parse::<ConsentId>(),
        Err(IdError::InvalidCharacter {
            found: '\u{fffd}',
            at: 0,
            ..
        })
    ));
    // The log never parses what it hashes: entries that are not UTF-8 verify, and only the
    // reading of them as entries reports them, as corrupt.
    let store = LogStore::of([&b"\xff\xfe"[..], b"{\"seq\":1}", b"\xc0\xaf"]);
    let report = verify_log(&store, None).unwrap();
    assert_eq!(report.size, 3);
    assert!(matches!(
        store.audit_entries(0..3),
        Err(StoreError::Corrupt(message)) if message.starts_with("audit entry 0:")
    ));
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// A token with these claims (JSON members, appended to valid ones; the last of a duplicated
/// member counts), signed by the broker's key.
fn token_with(members: &str) -> String {
    let fx = fixture();
    let now = NOW.unix_timestamp();
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}"}}"#,
        fx.token_kid
    );
    let claims = format!(
        r#"{{"iss":"broker","aud":"bank","sub":"alice","client_id":"chat","cid":"cns_1","att":"hostile-attestation","scope":"balance","purpose":"customer_service","acct":"acc-current","presence":"subject_present","iat":{now},"nbf":{now},"exp":{},"jti":"hostile-token-0001"{members}}}"#,
        now + 300
    );
    targets::sign_jws(&header, &claims, targets::TOKEN_KEY_SEED)
}

/// An attestation for `cns_2` with these claims (the times, at least) appended to valid ones,
/// signed by the bank.
fn attestation_with(members: &str) -> String {
    let fx = fixture();
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"consent-attestation+jwt","kid":"{}"}}"#,
        fx.holder_keys[0].thumbprint()
    );
    let claims = format!(
        r#"{{"iss":"bank","aud":"broker","sub":"alice","client_id":"chat","cid":"cns_2","scope":["balance"],"purpose":["customer_service"],"acct":["acc-current"],"unattended_daily_limit":4,"jti":"hostile-attestation-1"{members}}}"#
    );
    targets::sign_jws(&header, &claims, targets::BANK_KEY_SEED)
}

#[test]
fn huge_numbers_are_refused_with_typed_errors_never_overflow() {
    let fx = fixture();
    let claim = |claim: &str, problem| {
        Err(TokenError::Claim {
            claim: claim.to_owned(),
            problem,
        })
    };
    // The valid token these are made from.
    let valid = token_with("");
    assert_eq!(checked(&valid).map(|c| c.cid), Ok(id("cns_1")));
    fx.verifier.verify(&valid).unwrap();
    for (members, expected) in [
        (r#","exp":1e300"#, claim("exp", ClaimProblem::Invalid)),
        (
            r#","exp":9223372036854775808"#,
            claim("exp", ClaimProblem::Invalid),
        ),
        (
            r#","exp":18446744073709551616"#,
            claim("exp", ClaimProblem::Invalid),
        ),
        (
            r#","exp":-9223372036854775808"#,
            claim("exp", ClaimProblem::Invalid),
        ),
        (
            r#","exp":253402300800"#,
            claim("exp", ClaimProblem::Invalid),
        ),
        (r#","iat":-1"#, claim("iat", ClaimProblem::Invalid)),
        (r#","nbf":1e-300"#, claim("nbf", ClaimProblem::WrongType)),
        (
            r#","exp":1795251900.5"#,
            claim("exp", ClaimProblem::WrongType),
        ),
        (
            r#","exp":"1795251900""#,
            claim("exp", ClaimProblem::WrongType),
        ),
        // Beyond f64: not a JSON number serde_json reads, so not a JSON object.
        (r#","exp":1e400"#, Err(TokenError::Json(TokenPart::Payload))),
        (
            r#","iat":0,"nbf":0,"exp":253402300799"#,
            Err(TokenError::LifetimeInvalid {
                seconds: 253_402_300_799,
            }),
        ),
    ] {
        assert_eq!(
            checked(&token_with(members)).map(drop),
            expected,
            "{members}"
        );
    }

    // Attestation times: saturating, never wrapping.
    let now = NOW.unix_timestamp();
    let max = (NOW + fx.pending.duration()).unix_timestamp();
    let valid = format!(
        r#","iat":{now},"exp":{},"consent_exp":{}"#,
        now + 300,
        now + 86_400
    );
    verify_attestation(&attestation_with(&valid)).unwrap();
    for (members, expected) in [
        (
            format!(
                r#","iat":{now},"exp":{},"consent_exp":{}"#,
                now + 300,
                i64::MAX
            ),
            AttestationError::ConsentExpiryOutOfRange {
                consent_exp: i64::MAX,
                max,
            },
        ),
        (
            format!(
                r#","iat":{now},"exp":{},"consent_exp":{}"#,
                now + 300,
                i64::MIN
            ),
            AttestationError::ConsentExpiryOutOfRange {
                consent_exp: i64::MIN,
                max,
            },
        ),
        (
            format!(
                r#","iat":{now},"exp":{},"consent_exp":{}"#,
                i64::MAX,
                now + 86_400
            ),
            AttestationError::LifetimeInvalid,
        ),
        (
            format!(r#","iat":{},"exp":{},"consent_exp":1"#, i64::MIN, i64::MAX),
            AttestationError::LifetimeInvalid,
        ),
        (
            format!(
                r#","iat":{},"exp":{},"consent_exp":1"#,
                i64::MAX - 10,
                i64::MAX
            ),
            AttestationError::IssuedInFuture,
        ),
    ] {
        assert_eq!(
            verify_attestation(&attestation_with(&members)).map(drop),
            Err(expected),
            "{members}"
        );
    }
    assert!(matches!(
        verify_attestation(&attestation_with(
            r#","iat":1795251600,"exp":1795251900,"consent_exp":9223372036854775808"#
        )),
        Err(AttestationError::Malformed(message))
            if message.starts_with("claims: a member missing, unknown, given twice, or of the wrong type")
    ));

    // Checkpoint sizes: up to u64::MAX, and one more is refused as such.
    let sign = |size: &str| {
        let root = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        fx.note_signer
            .sign(&format!("broker\n{size}\n{root}\n"))
            .unwrap()
    };
    assert_eq!(
        verify_checkpoint(&sign("18446744073709551615"), &fx.note_verifier, None).map(|c| c.size),
        Ok(u64::MAX)
    );
    assert_eq!(
        verify_checkpoint(&sign("18446744073709551616"), &fx.note_verifier, None),
        Err(CheckpointError::SizeOverflow)
    );
    assert_eq!(
        verify_checkpoint(&sign("99999999999999999999999"), &fx.note_verifier, None),
        Err(CheckpointError::SizeOverflow)
    );

    // Receipts and proofs at the top of the range.
    let receipt = Receipt {
        index: u64::MAX - 1,
        entry: "{}".into(),
        tree_size: u64::MAX,
        proof: Vec::new(),
        checkpoint: sign("18446744073709551615"),
    };
    assert!(matches!(
        receipt.verify(&fx.note_verifier),
        Err(ReceiptError::Proof(ProofError::WrongLength { got: 0, .. }))
    ));
    let receipt = Receipt {
        index: u64::MAX,
        ..receipt
    };
    assert_eq!(
        receipt.verify(&fx.note_verifier),
        Err(ReceiptError::Proof(ProofError::IndexBeyondSize))
    );
    let (leaf, root) = ([1u8; 32], [2u8; 32]);
    for (index, size) in [
        (u64::MAX - 1, u64::MAX),
        (0, u64::MAX),
        (u64::MAX, u64::MAX),
    ] {
        assert!(merkle::verify_inclusion(index, size, &leaf, &[], &root).is_err());
        assert!(merkle::inclusion_proof(index, size, &fx.tree).is_err());
    }
    assert!(merkle::verify_consistency(u64::MAX - 1, u64::MAX, &leaf, &root, &[]).is_err());
    assert!(merkle::verify_consistency(1, u64::MAX, &leaf, &root, &[leaf; 64]).is_err());
    assert!(merkle::consistency_proof(1, u64::MAX, &fx.tree).is_err());
    assert!(merkle::root(u64::MAX, &fx.tree).is_err());

    // Consent durations: the smallest i64 parses and is refused as not positive.
    let draft: ConsentRequestDraft =
        serde_json::from_slice(&hostile_file("i64-min-duration.json")).unwrap();
    assert_eq!(
        ConsentRequest::from_draft(draft, id("cns_x"), limits(), NOW),
        Err(RequestError::DurationNotPositive { seconds: i64::MIN })
    );
}

// ---------------------------------------------------------------------------------------------
// Duplicate keys

#[test]
fn duplicate_keys_are_refused_except_in_token_json_where_the_last_counts() {
    for (file, entry, duplicated) in [
        (
            "duplicate-keys-draft.json",
            "ConsentRequestDraft JSON + ConsentRequest::from_draft",
            "subject",
        ),
        (
            "duplicate-keys-access.json",
            "AccessRequest JSON + evaluate",
            "account",
        ),
        ("duplicate-keys-jwks.json", "Jwks::from_json", "keys"),
        (
            "duplicate-keys-receipt.json",
            "Receipt JSON + Receipt::verify",
            "index",
        ),
    ] {
        let error = answer(entry, &hostile_file(file)).unwrap_err();
        assert!(
            error.contains(&format!("duplicate field `{duplicated}`")),
            "{entry}: {error}"
        );
    }
    for (json, duplicated) in [
        (
            r#"{"seq":0,"at":1795251600,"kind":"holder_registered","actor":{"holder":"bank"},"kind":"consent_requested"}"#,
            "kind",
        ),
        (
            r#"{"seq":0,"at":1795251600,"kind":"holder_registered","actor":{"holder":"bank"},"seq":1}"#,
            "seq",
        ),
    ] {
        let error = AuditEntry::from_bytes(json.as_bytes()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("duplicate field `{duplicated}`")),
            "{error}"
        );
    }
    for (json, duplicated) in [
        (r#"{"decision":"permit","decision":"deny"}"#, "decision"),
        (
            r#"{"decision":"deny","reasons":[{"reason":"expired","at":1,"at":2}]}"#,
            "at",
        ),
    ] {
        let error = serde_json::from_str::<Decision>(json).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("duplicate field `{duplicated}`")),
            "{error}"
        );
    }
    // Attestation claims are a struct: a duplicate is malformed.
    let now = NOW.unix_timestamp();
    let attestation = attestation_with(&format!(
        r#","iat":{now},"exp":{},"consent_exp":{},"aud":"other-broker""#,
        now + 300,
        now + 86_400
    ));
    assert!(matches!(
        verify_attestation(&attestation),
        Err(AttestationError::Malformed(message))
            if message.starts_with("claims: a member missing, unknown, given twice, or of the wrong type")
    ));

    // A token's header and claims are JSON objects in which the last duplicate counts, as RFC
    // 7519 §4 allows ("use a JSON parser that returns only the lexically last duplicate member
    // name"): whatever came first, the last value is checked.
    let fx = fixture();
    assert_eq!(
        checked(&token_with(r#","aud":"other-bank""#)),
        Err(TokenError::WrongAudience)
    );
    let last_is_right = token_with(r#","aud":"other-bank","aud":"bank""#);
    assert_eq!(checked(&last_is_right).map(|c| c.aud), Ok(id("bank")));
    assert_eq!(
        checked(&token_with(
            r#","purpose":"customer_service","purpose":"ads""#
        )),
        Err(TokenError::ProhibitedPurpose(ProhibitedUse::Ads))
    );
    let now = NOW.unix_timestamp();
    let claims = format!(
        r#"{{"iss":"broker","aud":"bank","sub":"alice","client_id":"chat","cid":"cns_1","att":"hostile-attestation","scope":"balance","purpose":"customer_service","acct":"acc-current","presence":"subject_present","iat":{now},"nbf":{now},"exp":{},"jti":"hostile-token-0002"}}"#,
        now + 300
    );
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{}","alg":"none"}}"#,
        fx.token_kid
    );
    assert_eq!(
        checked(&targets::sign_jws(
            &header,
            &claims,
            targets::TOKEN_KEY_SEED
        )),
        Err(TokenError::AlgorithmNone)
    );
    let header = format!(
        r#"{{"alg":"HS256","typ":"at+jwt","kid":"{}","alg":"EdDSA"}}"#,
        fx.token_kid
    );
    assert!(
        checked(&targets::sign_jws(
            &header,
            &claims,
            targets::TOKEN_KEY_SEED
        ))
        .is_ok()
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile stores

#[test]
fn a_store_claiming_a_few_entries_more_than_it_holds_is_refused_naming_the_first_missing() {
    let mut store = LogStore::of([&b"{}"[..], b"[]"]);
    store.claimed_len = Some(5);
    assert_eq!(
        verify_log(&store, None),
        Err(LogError::MissingEntry { index: 2 })
    );
}

/// Found by this suite (fixed): `verify_log` reserved one leaf hash per entry that the store
/// claimed before reading any (`Vec::with_capacity(audit_len)`), so a store whose length was
/// absurd made it panic ("capacity overflow") or abort the process (a failed allocation of
/// 32 bytes × length) instead of reporting the missing entries. A SQLite database does that
/// after one `DROP TRIGGER audit_gap_free` and one `INSERT INTO audit` far ahead, which is what
/// the auditor's `consent-broker verify` is meant to catch: 2^58 panics, 2^40 aborts with
/// "memory allocation of 35184372088864 bytes failed".
#[test]
fn a_tampered_store_claiming_an_absurd_length_is_refused_not_trusted() {
    let mut store = LogStore::of([&b"{}"[..], b"[]"]);
    store.claimed_len = Some(u64::MAX);
    assert_eq!(
        verify_log(&store, None),
        Err(LogError::MissingEntry { index: 2 })
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tampered.db");
    drop(SqliteStore::open(&path).unwrap());
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute_batch("DROP TRIGGER audit_gap_free;")
        .unwrap();
    connection
        .execute(
            "INSERT INTO audit (seq, entry) VALUES (?1, '{}')",
            [1_i64 << 58],
        )
        .unwrap();
    drop(connection);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.audit_len(), Ok((1 << 58) + 1));
    assert_eq!(
        verify_log(&store, None),
        Err(LogError::MissingEntry { index: 0 })
    );
}

/// Found by this suite (fixed): `subject_history` and `consent_history` read the log in chunks
/// of 4,096 entries up to the length the store claims, not up to the first chunk that comes back
/// empty (now a `StoreError::Corrupt`). After the tampering above (one row at 2^58), the auditor's
/// `consent-broker audit history` made 2^46 reads: it hung. Here a store of one entry that claims
/// 4,096,000 made a thousand reads.
#[test]
fn histories_read_what_a_store_holds_not_what_it_claims() {
    let entry =
        br#"{"seq":0,"at":1795251600,"kind":"holder_registered","actor":{"holder":"bank"}}"#;
    let mut store = LogStore::of([&entry[..]]);
    store.claimed_len = Some(4_096 * 1_000);
    let _ = consent_broker::subject_history(&store, &id("alice"));
    let reads = store.reads.load(std::sync::atomic::Ordering::Relaxed);
    assert!(reads <= 2, "{reads} reads of a store that holds one entry");
}

/// The claims a bank's gate relies on (`att`, `presence`, `cnf`) are as strict as the others: a
/// wrong type or value is a typed refusal, and `cnf` holds exactly a 43-character `jkt`.
#[test]
fn the_attestation_presence_and_confirmation_claims_are_strict() {
    let claim = |claim: &str, problem| {
        Err(TokenError::Claim {
            claim: claim.to_owned(),
            problem,
        })
    };
    let jkt = "A".repeat(43);
    for (members, expected) in [
        (
            r#","att":"""#.to_owned(),
            claim("att", ClaimProblem::Invalid),
        ),
        (
            r#","att":7"#.to_owned(),
            claim("att", ClaimProblem::WrongType),
        ),
        (
            format!(r#","att":"{}""#, "a".repeat(129)),
            claim("att", ClaimProblem::Invalid),
        ),
        (
            r#","presence":"sometimes""#.to_owned(),
            claim("presence", ClaimProblem::Invalid),
        ),
        (
            r#","presence":true"#.to_owned(),
            claim("presence", ClaimProblem::WrongType),
        ),
        (
            r#","cnf":"x""#.to_owned(),
            claim("cnf", ClaimProblem::WrongType),
        ),
        (
            r#","cnf":{}"#.to_owned(),
            claim("cnf", ClaimProblem::Invalid),
        ),
        (
            r#","cnf":{"jkt":"short"}"#.to_owned(),
            claim("cnf", ClaimProblem::Invalid),
        ),
        (
            format!(r#","cnf":{{"jkt":"{jkt}","jwk":{{}}}}"#),
            claim("cnf", ClaimProblem::Invalid),
        ),
        (
            format!(r#","cnf":{{"jkt":"{}+"}}"#, "A".repeat(42)),
            claim("cnf", ClaimProblem::Invalid),
        ),
    ] {
        assert_eq!(
            checked(&token_with(&members)).map(drop),
            expected,
            "{members}"
        );
    }
    let bound = checked(&token_with(&format!(
        r#","presence":"unattended","cnf":{{"jkt":"{jkt}"}}"#
    )))
    .unwrap();
    assert_eq!(bound.presence, Presence::Unattended);
    assert_eq!(bound.cnf, Some(Confirmation { jkt }));
    assert_eq!(bound.att, "hostile-attestation");
    assert_eq!(checked(&token_with("")).unwrap().cnf, None);
}

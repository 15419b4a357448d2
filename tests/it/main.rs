//! The integration tests, as one binary with shared support (`support`), grouped by concern.
//! Separate binaries remain only where a test needs a process of its own: the SQLite crash test
//! (it re-executes itself as the writer to kill) and the two JWT-provider tests (they check what
//! happens to the process-wide provider before anything else touches it).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail by panicking"
)]

mod support;

/// The fuzz targets' bodies: `fuzz_corpus` replays the seed corpus through them and `hostile`
/// feeds them hostile input.
#[path = "../../fuzz/targets.rs"]
mod targets;

/// The main example's story, which `platform_blind` runs and then searches.
#[path = "../../examples/messenger_bank.rs"]
#[allow(
    dead_code,
    reason = "the example's `main` and its argument parsing are not used here"
)]
mod story;

// The core: decisions, lifecycle, attestations, tokens and the data path.
mod attestation;
mod bad_input;
mod deny_reasons;
mod dpop;
mod erasure;
mod feed_index;
mod gate;
mod gate_model;
mod instructions;
mod kept_pseudonyms;
mod lifecycle;
mod platform_blind;
mod review_fixes;
mod sealed;
mod sealed_delivery;
mod sealing;
mod token_attacks;
mod tokens;

// The audit log: Merkle vectors and properties, checkpoints, tampering, the auditor's tool.
mod audit_tamper;
mod checkpoint;
mod cli;
mod key_history;
mod merkle_properties;
mod merkle_vectors;
mod monitor;
mod tiles;
mod witnessing;

// Stores: the conformance suite on every store, SQLite files, PostgreSQL.
mod conformance;
mod postgres;
mod postgres_group;
mod racing;
mod sqlite_files;
mod view_cache;

// Reliability: model-based, concurrency, faults, hostile input, fuzz corpora.
mod faults;
mod fuzz_corpus;
mod hostile;
mod integrity;
mod model;
mod stress;

// Interoperability: our JWT provider against published vectors, PyJWT against our tokens.
mod interop_pyjwt;
mod provider_vectors;

// Embedding: the test kit, registration at start-up, keys, async use.
mod embedding;

// Across the wire: each party's endpoints over loopback HTTP, and the dashboard in Chromium.
mod http;

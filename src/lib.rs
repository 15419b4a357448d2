#![doc = include_str!("../README.md")]
// Lints are set in Cargo.toml's [lints], so they reach every target; the library's own unit tests
// fail by panicking, and say so here.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "unit tests fail by panicking"
    )
)]

mod attestation;
mod audit;
mod auditor;
mod bank;
mod broker;
pub mod checkpoint;
mod clock;
mod consent;
pub mod cosignature;
pub mod crypto;
mod data;
pub mod dpop;
mod ed25519;
mod error;
pub mod feed;
mod files;
mod holder;
pub mod hpke;
#[cfg(feature = "http")]
pub mod http;
mod ids;
mod instruction;
mod jws;
pub mod key_history;
mod keyring;
mod keys;
mod limit;
pub mod merkle;
mod policy;
pub mod privacy;
mod random;
mod refusal;
mod sealing;
mod sets;
mod store;
mod table;
pub mod tiles;
mod token;
mod vocab;
pub mod witness;

#[cfg(feature = "store-conformance")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod testing;

// One path per type: everything is used from the crate root, except the protocol helpers that
// live in their own namespaces (`checkpoint`, `merkle`, `crypto`, `hpke`) and the test kits.
pub use attestation::{
    ATTESTATION_LEEWAY, ATTESTATION_TYPE, ApprovalStatement, AttestationError, AttestationSigner,
    CheckedAttestation, DEFAULT_ATTESTATION_LIFETIME, Expectations, MAX_ATTESTATION_LEN,
    MAX_ATTESTATION_LIFETIME, check_attestation,
};
pub use audit::{
    Actor, AuditEntry, AuditEvent, AuditKind, AuditRecord, PreparedEntry, Refusal, Revocation,
};
pub use auditor::{
    LogError, LogReport, ProveError, Receipt, ReceiptError, SigningError, StoreNodes,
    checkpoint_log, consent_history, decode_hashes, encode_hashes, history_of_any, prove,
    subject_history, verify_log,
};
pub use bank::{
    Admission, Bank, BankBuilder, BankError, BankKeys, CLOCK_SKEW_ALLOWANCE,
    DEFAULT_MAX_CHECKPOINT_AGE, DEFAULT_MAX_MERGE_DELAY, FeedMismatch, GateError, GateRequest,
    GateSettings, LogMonitor, MissingToken, MonitorError, MonitorReport, PlatformStop, Prechecked,
    SavedStateError, Served, SubjectView, TokenAfterRevocation, TokenTerms, UndeliveredRevocation,
};
pub use bank::{BankErasure, MAX_BANK_RETENTION_BATCH, MAX_LIVE_DEVICES, PAIRWISE_PREFIX};
pub use broker::{
    AccessOutcome, AccessToken, Broker, BrokerBuilder, BrokerKeys, ConsentView,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_PERMIT_LIFETIME, Denial, HolderRegistration, NeedsKeys, Permit,
    Registered, TokenOutcome, published_jwks,
};
pub use broker::{DEFAULT_RETENTION, Erasure, MAX_RETENTION_BATCH, Retention};
pub use clock::{Clock, ManualClock, SystemClock};
pub use consent::{
    ABSOLUTE_MAX_CONSENT_DURATION, AccountSelection, Approval, Consent, ConsentError,
    ConsentRequest, ConsentRequestDraft, ConsentState, ConsentStatus, DEFAULT_APPROVAL_WINDOW,
    DEFAULT_MAX_CONSENT_DURATION, Grant, RequestError, RequestLimits, RevocationReason, Revoker,
};
pub use data::{
    AccountData, AlertsGrant, Balance, BalanceGrant, DataError, DataHolder, FraudAlert, Money,
    Transaction, TransactionsGrant, serve, serve_alerts, serve_balance, serve_transactions,
};
pub use error::{Error, RegistrationField};
pub use holder::{
    ConsentStatusSource, MemoryVerificationLog, ReplayGuard, StoreStatus, TokenVerifier,
    VerificationAudit, VerificationRecord, VerifiedAccess, VerifierSetupError,
};
pub use ids::{
    AccountId, BrokerId, ConsentId, HolderId, IdError, IdGenerator, MAX_ID_LEN, PlatformId,
    Pseudonym, RandomIds, SequentialIds, SubjectId,
};
pub use instruction::{
    INSTRUCTION_LIFETIME, INSTRUCTION_TYPE, Instruction, InstructionError, MAX_INSTRUCTION_LEN,
    MAX_INSTRUCTION_LIFETIME,
};
pub use keys::{
    ED25519_PUBLIC_KEY_LEN, Ed25519PublicKey, Jwk, Jwks, KeyError, KeyFile, KeyFileError,
    KeyOrigin, RETIRED_KEY_GRACE, SigningKey,
};
pub use policy::{
    AccessRequest, DEFAULT_UNATTENDED_DAILY_LIMIT, Decision, DenyReason, HolderPolicy,
    PlatformProfile, PolicyError, Presence, Usage, evaluate, prohibited_reasons,
};
pub use privacy::{SubjectKey, SubjectKeyRecord};
pub use random::{RandomError, RandomSource};
pub use refusal::GateRefusal;
/// The operating system's CSPRNG, `ring`'s: the [`RandomSource`] production code uses.
pub use ring::rand::SystemRandom;
pub use sealing::{
    Delivery, Envelope, INFO_LABEL, MAX_ENVELOPES, MAX_RESPONSE_BYTES, OpenError, PAD_BUCKETS,
    Response, ResponseContext, SealedResponse, open_response, seal_response,
};
pub use sets::{AccountSet, Flag, FlagIter, FlagSet, PlaintextUses, PurposeSet, ScopeSet};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::CommitStats;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use store::Migration;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{
    AccessView, AttestationRecord, BankRevocation, Change, Commit, CommitParts, CommitReceipt,
    DeviceKeyRecord, FeedState, GateQuery, GateView, HolderRecord, KeyUse, LedgerRead, LogRead,
    MemoryStore, PolicyRecord, Precondition, PublishedKey, ReadOnly, RecordKind, SeenKind,
    ServedCounts, SignedCheckpoint, StateRead, Store, StoreError, StoredCheckpoint, StoredEntry,
    SubjectLink,
};
#[cfg(feature = "postgres")]
pub use store::{PostgresOptions, PostgresStore, PostgresTlsMode};
/// The `time` crate, whose `OffsetDateTime` and `Duration` the API takes and returns.
pub use time;
pub use token::{
    AccessClaims, ClaimProblem, Confirmation, DEFAULT_TOKEN_LIFETIME, MAX_LEEWAY, MAX_TOKEN_LEN,
    MAX_TOKEN_LIFETIME, MAX_UNIX_TIME, TOKEN_TYPE, TokenError, TokenExpectations, TokenPart,
    check_token,
};
pub use vocab::{ProhibitedUse, Purpose, RequestedPurpose, RequestedScope, Scope, VocabError};

/// The examples of `docs/EMBEDDING.md`, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/EMBEDDING.md")]
struct EmbeddingDoc;

#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod attestation;
pub mod audit;
pub mod broker;
pub mod clock;
pub mod consent;
pub mod crypto;
pub mod data;
pub mod error;
pub mod holder;
pub mod ids;
pub mod keys;
pub mod policy;
pub mod sets;
pub mod store;
pub mod token;
pub mod vocab;

pub use attestation::{Approval, ApprovalStatement, AttestationError, AttestationSigner};
pub use audit::{Actor, AuditEntry, AuditKind, AuditRecord, Refusal, Revocation};
pub use broker::{
    AccessOutcome, AccessToken, Broker, BrokerBuilder, ConsentView, Denial, HolderRegistration,
    Permit, TokenOutcome,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use consent::{
    AccountSelection, Consent, ConsentError, ConsentRequest, ConsentRequestDraft, ConsentState,
    ConsentStatus, Grant, RequestError, RevocationReason, Revoker,
};
pub use data::{AccountData, Balance, DataError, DataHolder, FraudAlert, serve};
pub use error::Error;
pub use holder::{ConsentStatusSource, StoreStatus, TokenVerifier, VerifiedAccess};
pub use ids::{
    AccountId, BrokerId, ConsentId, HolderId, IdError, IdGenerator, PlatformId, RandomIds,
    SequentialIds, SubjectId,
};
pub use keys::{Ed25519PublicKey, Jwk, Jwks, KeyError, KeySet, SigningKey};
pub use policy::{
    AccessRequest, Decision, DenyReason, HolderPolicy, PlatformProfile, PolicyError, Presence,
    Usage, evaluate,
};
pub use sets::{AccountSet, Flag, FlagIter, FlagSet, PurposeSet, ScopeSet};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
pub use store::{MemoryStore, Store, StoreError};
pub use token::{AccessClaims, TokenError};
pub use vocab::{ProhibitedUse, Purpose, RequestedPurpose, RequestedScope, Scope, VocabError};

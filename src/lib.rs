//! # consent-broker
//!
//! Consent-gated data sharing between a data holder (a bank), a data recipient (a messaging
//! platform) and the person whose data it is, with the promises made checkable:
//!
//! - **Opt-in only.** Nothing flows without a grant the subject approved at their bank, proven
//!   by the bank's signed attestation ([`attestation`]). The platform cannot activate a grant by
//!   itself, and the subject may approve less than was asked.
//! - **Narrow scopes, bound purposes.** [`Scope`]s are `balance`, `alerts` and (only where the
//!   holder enables it) `transactions`. Every access states a [`Purpose`]. Prohibited uses
//!   ([`ProhibitedUse`]: `ads`, `cross_selling`, `data_sale`) are recognised so they can be
//!   refused precisely, can never be stored in a grant, and are never permitted under any
//!   configuration.
//! - **Checked policy calls.** [`evaluate`] is a pure function; a denial lists every
//!   [`DenyReason`] that applied. The [`Broker`] records every decision before it answers, and a
//!   [`Permit`] exists only as the result of a recorded permit.
//! - **Audited.** Every registration, request, approval, refusal, decision and revocation is
//!   appended to the audit log in the same atomic commit as the state change it describes.
//!
//! ## Example
//!
//! ```
//! use std::collections::BTreeSet;
//! use std::sync::Arc;
//! use consent_broker::*;
//! use ring::rand::SystemRandom;
//! use time::{Duration, macros::datetime};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 09:00 UTC)));
//! let broker = Broker::builder(BrokerId::new("broker")?, MemoryStore::new())
//!     .clock(clock.clone())
//!     .build()?;
//!
//! // The bank registers with its attestation key; the platform registers its purposes.
//! let rng = SystemRandom::new();
//! let bank = HolderId::new("bank")?;
//! let signer = AttestationSigner::new(bank.clone(), SigningKey::generate(&rng)?)?;
//! broker.register_holder(HolderRegistration {
//!     id: bank.clone(),
//!     policy: HolderPolicy::default(),
//!     attestation_keys: vec![signer.public_key()],
//! })?;
//! let chat = PlatformId::new("chat")?;
//! broker.register_platform(PlatformProfile {
//!     id: chat.clone(),
//!     registered_purposes: BTreeSet::from([Purpose::CustomerService]),
//! })?;
//!
//! // The platform asks; the subject approves at the bank, which attests the approval.
//! let alice = SubjectId::new("alice")?;
//! let account = AccountId::new("acc-1")?;
//! let request = broker.request_consent(ConsentRequestDraft {
//!     subject: alice.clone(),
//!     platform: chat.clone(),
//!     holder: bank.clone(),
//!     scopes: vec![RequestedScope::Data(Scope::Balance)],
//!     purposes: vec![RequestedPurpose::Permitted(Purpose::CustomerService)],
//!     accounts: AccountSelection::Listed(BTreeSet::from([account.clone()])),
//!     duration: Duration::days(30),
//! })?;
//! let statement = ApprovalStatement {
//!     consent: request.id.clone(),
//!     subject: alice,
//!     scopes: request.scopes.clone(),
//!     purposes: request.purposes.clone(),
//!     accounts: BTreeSet::from([account.clone()]),
//!     consent_expires_at: broker.now() + Duration::days(30),
//! };
//! let attestation = signer.sign(&statement, broker.id(), broker.now(), &rng)?;
//! broker.approve(&request.id, &attestation)?;
//!
//! // Balance for customer service is permitted; balance for ads never is.
//! let mut access = AccessRequest {
//!     consent: request.id.clone(),
//!     platform: chat,
//!     scope: RequestedScope::Data(Scope::Balance),
//!     purpose: RequestedPurpose::Permitted(Purpose::CustomerService),
//!     account,
//!     presence: Presence::SubjectPresent,
//! };
//! assert!(matches!(broker.authorise_access(&access)?, AccessOutcome::Permitted(_)));
//! access.purpose = "ads".parse()?;
//! assert_eq!(
//!     broker.authorise_access(&access)?.decision(),
//!     Decision::Deny { reasons: vec![DenyReason::ProhibitedPurpose { prohibited: ProhibitedUse::Ads }] },
//! );
//! # Ok(())
//! # }
//! ```
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
pub mod error;
pub mod ids;
pub mod keys;
pub mod policy;
pub mod store;
pub mod vocab;

pub use attestation::{Approval, ApprovalStatement, AttestationError, AttestationSigner};
pub use audit::{Actor, AuditEntry, AuditKind, AuditRecord, Refusal, Revocation};
pub use broker::{
    AccessOutcome, Broker, BrokerBuilder, ConsentView, Denial, HolderRegistration, Permit,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use consent::{
    AccountSelection, Consent, ConsentError, ConsentRequest, ConsentRequestDraft, ConsentState,
    ConsentStatus, Grant, RequestError, RevocationReason, Revoker,
};
pub use error::Error;
pub use ids::{
    AccountId, BrokerId, ConsentId, HolderId, IdError, IdGenerator, PlatformId, RandomIds,
    SequentialIds, SubjectId,
};
pub use keys::{Ed25519PublicKey, KeyError, SigningKey};
pub use policy::{
    AccessRequest, Decision, DenyReason, HolderPolicy, PlatformProfile, Presence, Usage, evaluate,
};
pub use store::{MemoryStore, Store, StoreError};
pub use vocab::{ProhibitedUse, Purpose, RequestedPurpose, RequestedScope, Scope, VocabError};

//! Why a bank's gate refused an access: one typed reason, the first that failed in the gate's
//! documented order (see [`crate::Bank::check`]).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::consent::Revoker;
use crate::dpop::DpopError;
use crate::token::TokenError;
use crate::vocab::{Purpose, Scope};

/// Why the gate refused, checked in this order (the first failure is the one reported):
///
/// 1. the token: the broker's signature and every claim ([`GateRefusal::Token`]);
/// 2. the sender constraint: a `cnf.jkt`, and a DPoP proof for this request and token, signed by
///    that key, fresh and never seen before ([`GateRefusal::NotSenderConstrained`],
///    [`GateRefusal::Proof`]); the token itself once, when the gate takes tokens once
///    ([`GateRefusal::TokenReplayed`]);
/// 3. the bank's ledger: the attestation the token names exists, for this subject, platform,
///    consent and broker, and was not replaced by a later one;
/// 4. the terms the subject approved at the bank: scope, purpose and account;
/// 5. its status: not expired, not revoked at the bank, not revoked at the platform (from the
///    broker's feed, which must be fresher than the bank's bound);
/// 6. the bank's current policy shares the scope;
/// 7. the account belongs to the subject, in the bank's own account system;
/// 8. the bank's own counts today: unattended accesses within what the subject agreed to, and
///    accesses labelled subject-present within the bank's ceiling;
/// 9. where the response goes: sealed to the subject's devices the approval named and that are
///    still registered (unsealed only for a purpose both the bank's policy and the approval
///    allow).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "refusal", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GateRefusal {
    /// The token failed verification.
    #[error("the access token was refused: {0}")]
    Token(TokenError),
    /// The token is not bound to a key (`cnf.jkt`): a copy would work for anyone.
    #[error("the token is not bound to the presenter's key")]
    NotSenderConstrained,
    /// The DPoP proof failed.
    #[error("the proof of possession was refused: {0}")]
    Proof(DpopError),
    /// The token was presented before, and the gate takes each token once.
    #[error("the token was already used")]
    TokenReplayed,
    /// The bank never signed the attestation the token names.
    #[error("the bank has no record of the approval the token names")]
    UnknownAttestation,
    /// The attestation is for another subject, platform, consent or broker than the token says.
    #[error("the token's {claim} disagrees with what the bank attested")]
    AttestationMismatch {
        /// The token's claim that disagrees (`sub`, `client_id`, `cid`, `iss`).
        claim: String,
    },
    /// A later attestation for the same consent replaced this one.
    #[error("the approval the token names was replaced by a later one")]
    Superseded,
    /// The subject did not approve this scope at the bank.
    #[error("the customer did not approve {0} at the bank")]
    ScopeNotAttested(Scope),
    /// The subject did not approve this purpose at the bank.
    #[error("the customer did not approve use for {0} at the bank")]
    PurposeNotAttested(Purpose),
    /// The subject did not approve this account at the bank.
    #[error("the customer did not approve this account at the bank")]
    AccountNotAttested,
    /// The approval has expired.
    #[error("the approval expired")]
    Expired {
        /// When.
        #[serde(with = "time::serde::timestamp")]
        at: OffsetDateTime,
    },
    /// The subject or the bank withdrew the approval at the bank.
    #[error("the approval was withdrawn at the bank")]
    RevokedAtBank {
        /// Who withdrew it.
        by: Revoker,
    },
    /// The platform revoked the consent (the broker's feed said so).
    #[error("the consent was revoked on the platform")]
    RevokedAtPlatform,
    /// The bank has not heard from the broker's revocation feed recently enough to know that
    /// the platform did not revoke the consent.
    #[error("the platform's revocation feed is stale")]
    RevocationFeedStale {
        /// When the last feed applied was produced, if any was.
        #[serde(default, with = "time::serde::timestamp::option")]
        generated_at: Option<OffsetDateTime>,
    },
    /// The bank's current policy does not share the scope (or the bank has no policy yet).
    #[error("the bank does not share {0} now")]
    PolicyForbidsScope(Scope),
    /// The account is not the subject's in the bank's own records.
    #[error("the account does not belong to the customer")]
    AccountNotSubjects,
    /// The subject did not agree to unattended access.
    #[error("the customer did not agree to access while they are away")]
    UnattendedNotApproved,
    /// Today's unattended accesses under this approval are used up.
    #[error("the {limit} unattended accesses allowed today were used")]
    UnattendedLimitReached {
        /// The limit the subject agreed to (within the bank's).
        limit: u32,
    },
    /// The response must be sealed and the approval names no device key of the subject's that
    /// is still registered (all revoked, or none named).
    #[error("no device of the customer's to seal the response to")]
    NoDeviceToSealTo,
    /// Today's accesses labelled subject-present under this approval reached the bank's
    /// ceiling: the label cannot be proven, and the ceiling bounds what a false one gains.
    #[error("the {ceiling} accesses with the customer present allowed today were used")]
    PresentCeilingReached {
        /// The bank's ceiling.
        ceiling: u32,
    },
}

//! The bank's side: verifying access tokens, and serving data only to verified access.
//!
//! [`TokenVerifier`] checks a token offline against the broker's published keys
//! ([`crate::keys::Jwks`]), then asks a [`ConsentStatusSource`] whether the consent is still
//! live, so that a revocation is seen by the very next verification. Only a successful
//! verification (or the broker's own checked call, through
//! [`Broker::verified_access`](crate::Broker::verified_access) on a [`Permit`] it decided) makes a
//! [`VerifiedAccess`]; the [`DataHolder`](crate::data::DataHolder) trait's
//! methods take grants that only a [`VerifiedAccess`] hands out, so bank data cannot be fetched
//! without a check.
//!
//! # Keeping consent status current when the bank runs separately
//!
//! Verification fails closed: if the status source cannot answer, the token is refused. A bank
//! that embeds the broker (or shares its database) uses [`StoreStatus`] over the broker's
//! store, and sees a revocation the moment it is committed. A bank that runs apart from the
//! broker implements [`ConsentStatusSource`] over one of:
//! - a status query to the broker per verification (like OAuth token introspection): always
//!   current, one round trip per request;
//! - a local replica fed from the broker's audit log (`consent_revoked` entries, in sequence
//!   order, gap-free so a missed entry is noticed): the replica is as current as its last
//!   applied sequence number, and the source should refuse (return an error) when it has not
//!   caught up within a bound the bank chooses.
//!
//! Revocations the bank itself makes (`Revoker::Holder`) go through the broker, so both paths
//! see them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::broker::Permit;
use crate::clock::Clock;
use crate::consent::{Consent, ConsentStatus};
use crate::crypto;
use crate::ids::{AccountId, BrokerId, ConsentId, HolderId, PlatformId, SubjectId};
use crate::keys::{Ed25519PublicKey, Jwks, KeyError};
use crate::store::StateRead;
use crate::token::{
    self, AccessClaims, MAX_LEEWAY, MAX_TOKEN_LIFETIME, TokenError, TokenExpectations,
};
use crate::vocab::{Purpose, Scope};

/// Where the verifier learns whether a consent is live.
pub trait ConsentStatusSource: Send + Sync {
    /// The consent, as currently stored, or `None` if unknown.
    ///
    /// # Errors
    /// A description of why the status cannot be read; the verifier then refuses the token.
    fn consent(&self, consent: &ConsentId) -> Result<Option<Consent>, String>;
}

/// A [`ConsentStatusSource`] over the broker's own store (anything [`StateRead`]).
#[derive(Debug, Clone)]
pub struct StoreStatus<S>(pub S);

impl<S: StateRead> ConsentStatusSource for StoreStatus<S> {
    fn consent(&self, consent: &ConsentId) -> Result<Option<Consent>, String> {
        self.0.consent(consent).map_err(|e| e.to_string())
    }
}

/// The outcome of one verification, for the holder's own audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// When (the verifier's clock).
    #[serde(with = "time::serde::timestamp")]
    pub at: OffsetDateTime,
    /// The token's `jti`, when the token got far enough to have one.
    pub jti: Option<String>,
    /// The token's consent, when the token got far enough to have one.
    pub consent: Option<ConsentId>,
    /// The refusal, or `None` when the token was accepted. An unsupported `alg` or a wrong
    /// `typ` is recorded without the header's text (`None`): nothing of a header no signature
    /// covered is kept (the error returned to the caller still names it, cut to 32 characters).
    pub refusal: Option<TokenError>,
}

/// Where the holder records verifications. A sink that fails makes the verification fail.
pub trait VerificationAudit: Send + Sync {
    /// Records one verification.
    ///
    /// # Errors
    /// A description of the failure; the token is then refused.
    fn record(&self, record: VerificationRecord) -> Result<(), String>;
}

/// An in-memory [`VerificationAudit`].
#[derive(Debug, Default)]
pub struct MemoryVerificationLog {
    records: Mutex<Vec<VerificationRecord>>,
}

impl MemoryVerificationLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The records so far.
    pub fn records(&self) -> Vec<VerificationRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl VerificationAudit for MemoryVerificationLog {
    fn record(&self, record: VerificationRecord) -> Result<(), String> {
        self.records
            .lock()
            .map_err(|_| "verification log poisoned".to_owned())?
            .push(record);
        Ok(())
    }
}

/// Remembers the `jti`s of accepted tokens until they expire, to refuse a second presentation.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: Mutex<HashMap<String, i64>>,
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `jti` (valid until `exp`); fails if it is already recorded.
    fn check_and_record(&self, jti: &str, exp: i64, now: i64) -> Result<(), TokenError> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget tokens that can no longer verify anyway, so the map stays bounded by the number
        // of live tokens.
        let horizon = now.saturating_sub(MAX_LEEWAY.whole_seconds());
        seen.retain(|_, expiry| *expiry > horizon);
        if seen.contains_key(jti) {
            return Err(TokenError::Replayed);
        }
        seen.insert(jti.to_owned(), exp);
        Ok(())
    }

    /// Forgets `jti` (its verification was refused after it was recorded).
    fn release(&self, jti: &str) {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(jti);
    }
}

/// Access that passed the check: built only by [`TokenVerifier::verify`], or by
/// [`Broker::verified_access`](crate::Broker::verified_access) from a [`Permit`] that broker
/// decided.
///
/// Its fields are private, so it cannot be made up, even with every field given:
///
/// ```compile_fail,E0451
/// use consent_broker::VerifiedAccess;
/// use consent_broker::{Purpose, Scope};
/// let forged = VerifiedAccess {
///     consent: "cns_1".parse().unwrap(),
///     subject: "alice".parse().unwrap(),
///     platform: "chat".parse().unwrap(),
///     holder: "bank".parse().unwrap(),
///     scope: Scope::Balance,
///     purpose: Purpose::CustomerService,
///     account: "acc-1".parse().unwrap(),
///     token_id: None,
/// };
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct VerifiedAccess {
    consent: ConsentId,
    subject: SubjectId,
    platform: PlatformId,
    holder: HolderId,
    scope: Scope,
    purpose: Purpose,
    account: AccountId,
    token_id: Option<String>,
}

impl VerifiedAccess {
    /// The consent.
    pub fn consent(&self) -> &ConsentId {
        &self.consent
    }
    /// Whose data.
    pub fn subject(&self) -> &SubjectId {
        &self.subject
    }
    /// Who receives it.
    pub fn platform(&self) -> &PlatformId {
        &self.platform
    }
    /// Who holds it.
    pub fn holder(&self) -> &HolderId {
        &self.holder
    }
    /// The one permitted scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// The one permitted purpose.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }
    /// The one permitted account.
    pub fn account(&self) -> &AccountId {
        &self.account
    }
    /// The token's `jti` (none when the access came straight from a broker permit).
    pub fn token_id(&self) -> Option<&str> {
        self.token_id.as_deref()
    }
}

impl VerifiedAccess {
    /// The access a token stands for, once a verifier or the bank's gate admitted it.
    pub(crate) fn from_claims(claims: AccessClaims) -> Self {
        Self {
            consent: claims.cid,
            subject: claims.sub,
            platform: claims.client_id,
            holder: claims.aud,
            scope: claims.scope,
            purpose: claims.purpose,
            account: claims.acct,
            token_id: Some(claims.jti),
        }
    }

    /// The access a permit stands for; only [`Broker::verified_access`](crate::Broker::verified_access)
    /// calls it, after checking that the permit is the broker's own and still good.
    pub(crate) fn from_permit(permit: Permit) -> Self {
        Self {
            consent: permit.consent().clone(),
            subject: permit.subject().clone(),
            platform: permit.platform().clone(),
            holder: permit.holder().clone(),
            scope: permit.scope(),
            purpose: permit.purpose(),
            account: permit.account().clone(),
            token_id: None,
        }
    }
}

/// A verifier of access tokens that takes each consent's status from a
/// [`ConsentStatusSource`]: the platform's store ([`StoreStatus`]) or a status service. It checks
/// no DPoP proof and reads no ledger of the bank's own, so it trusts the platform's records: use it
/// inside the platform's trust domain. A bank in its own domain decides through
/// [`Bank::check`](crate::Bank::check) (see `docs/TRUST.md`).
pub struct TokenVerifier<St> {
    holder: HolderId,
    issuer: BrokerId,
    keys: RwLock<HashMap<String, Ed25519PublicKey>>,
    clock: Arc<dyn Clock>,
    leeway: Duration,
    max_lifetime: Duration,
    status: St,
    replay: Option<ReplayGuard>,
    audit: Option<Arc<dyn VerificationAudit>>,
}

impl<St> std::fmt::Debug for TokenVerifier<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("holder", &self.holder)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

impl<St: ConsentStatusSource> TokenVerifier<St> {
    /// A verifier for `holder`, trusting tokens from `issuer` signed by a key in `jwks`, with
    /// consent status from `status`. Leeway 30 s, maximum lifetime 15 minutes, no replay
    /// detection, no audit: see the `with_*` methods.
    ///
    /// # Errors
    /// [`VerifierSetupError::Key`] for a key in `jwks` that is not a valid Ed25519 JWK with its
    /// thumbprint as `kid`; [`VerifierSetupError::Provider`].
    pub fn new(
        holder: HolderId,
        issuer: BrokerId,
        jwks: &Jwks,
        clock: Arc<dyn Clock>,
        status: St,
    ) -> Result<Self, VerifierSetupError> {
        crypto::install()?;
        let verifier = Self {
            holder,
            issuer,
            keys: RwLock::new(HashMap::new()),
            clock,
            leeway: MAX_LEEWAY,
            max_lifetime: MAX_TOKEN_LIFETIME,
            status,
            replay: None,
            audit: None,
        };
        verifier.set_keys(jwks)?;
        Ok(verifier)
    }

    /// Replaces the trusted keys (after fetching the broker's JWKS again).
    ///
    /// # Errors
    /// [`KeyError`] for an invalid key; the previous keys are then kept.
    pub fn set_keys(&self, jwks: &Jwks) -> Result<(), KeyError> {
        let keys = jwks.by_kid()?;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
        Ok(())
    }

    /// Sets the clock leeway, clamped to 0..=30 s.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.clamp(Duration::ZERO, MAX_LEEWAY);
        self
    }

    /// Sets the longest token lifetime accepted, clamped to at most 15 minutes.
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = max.min(MAX_TOKEN_LIFETIME);
        self
    }

    /// Refuses a token presented a second time.
    pub fn with_replay_detection(mut self) -> Self {
        self.replay = Some(ReplayGuard::new());
        self
    }

    /// Records every verification, accepted or refused, in `audit`.
    pub fn with_audit(mut self, audit: Arc<dyn VerificationAudit>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Verifies a token: its bytes, signature and times, then the consent's live status and
    /// that the consent grants the token's scope, purpose and account.
    ///
    /// # Errors
    /// The first failed check, as a [`TokenError`].
    pub fn verify(&self, token: &str) -> Result<VerifiedAccess, TokenError> {
        let now = self.clock.now();
        let mut identified = None;
        let outcome = self.verify_at(token, now, &mut identified);
        if let Some(audit) = &self.audit {
            let refusal = outcome.as_ref().err().map(TokenError::recorded);
            let (jti, consent) = identified.unzip();
            let record = VerificationRecord {
                at: now,
                jti,
                consent,
                refusal,
            };
            if let Err(failure) = audit.record(record) {
                // The token was refused for want of an audit record: it was not used, so a
                // later presentation must not count as a replay.
                if let (Ok(access), Some(replay)) = (&outcome, &self.replay) {
                    replay.release(access.token_id().unwrap_or_default());
                }
                return Err(TokenError::AuditUnavailable(failure));
            }
        }
        outcome
    }

    /// `identified` receives the token's `jti` and consent once the signature has verified.
    fn verify_at(
        &self,
        token: &str,
        now: OffsetDateTime,
        identified: &mut Option<(String, ConsentId)>,
    ) -> Result<VerifiedAccess, TokenError> {
        let expected = TokenExpectations {
            issuer: &self.issuer,
            audience: &self.holder,
            leeway: self.leeway,
            max_lifetime: self.max_lifetime,
        };
        let claims = {
            let keys = self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            token::check_token(token, |kid| keys.get(kid).copied(), &expected, now)?
        };
        *identified = Some((claims.jti.clone(), claims.cid.clone()));
        self.check_consent(&claims, now)?;
        if let Some(replay) = &self.replay {
            replay.check_and_record(&claims.jti, claims.exp, now.unix_timestamp())?;
        }
        Ok(VerifiedAccess::from_claims(claims))
    }

    fn check_consent(&self, claims: &AccessClaims, now: OffsetDateTime) -> Result<(), TokenError> {
        let consent = self
            .status
            .consent(&claims.cid)
            .map_err(TokenError::StatusUnavailable)?
            .ok_or(TokenError::UnknownConsent)?;
        let request = &consent.request;
        if request.holder != claims.aud {
            return Err(TokenError::ConsentMismatch("aud".into()));
        }
        if request.subject != claims.sub {
            return Err(TokenError::ConsentMismatch("sub".into()));
        }
        if request.platform != claims.client_id {
            return Err(TokenError::ConsentMismatch("client_id".into()));
        }
        let status = consent.status(now);
        let grant = match (status, consent.grant()) {
            (ConsentStatus::Authorised, Some(grant)) => grant,
            (status, _) => return Err(TokenError::ConsentNotLive(status)),
        };
        if !grant.scopes.contains(claims.scope) {
            return Err(TokenError::ScopeNotGranted(claims.scope));
        }
        if !grant.purposes.contains(claims.purpose) {
            return Err(TokenError::PurposeNotGranted(claims.purpose));
        }
        if !grant.accounts.contains(&claims.acct) {
            return Err(TokenError::AccountNotGranted);
        }
        Ok(())
    }
}

/// A verifier that could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierSetupError {
    /// A key in the JWKS is invalid.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The JWT crypto provider cannot be used.
    #[error(transparent)]
    Provider(#[from] crypto::ProviderError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `compile_fail` example on [`VerifiedAccess`] is the same literal: it compiles here,
    /// where the fields are visible, so outside it fails only because they are private.
    #[test]
    fn the_forging_literal_is_otherwise_well_formed() {
        let made = VerifiedAccess {
            consent: "cns_1".parse().unwrap(),
            subject: "alice".parse().unwrap(),
            platform: "chat".parse().unwrap(),
            holder: "bank".parse().unwrap(),
            scope: Scope::Balance,
            purpose: Purpose::CustomerService,
            account: "acc-1".parse().unwrap(),
            token_id: None,
        };
        assert_eq!(made.scope(), Scope::Balance);
    }
}

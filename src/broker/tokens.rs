//! Access tokens: a permit becomes a signed JWT bound to its consent, scope, purpose, account and
//! holder, and its issuing is recorded before the token is handed out.

use time::OffsetDateTime;

use super::Broker;
use super::access::{Denial, Permit};
use crate::audit::{Actor, AuditEvent, AuditRecord};
use crate::clock::saturating_add;
use crate::error::Error;
use crate::keys::KeyError;
use crate::policy::AccessRequest;
use crate::store::{Commit, KeyUse, Precondition, Store, StoreError};
use crate::token::{self, AccessClaims, Confirmation};

/// A signed access token, as handed to the platform.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// The compact JWT.
    pub token: String,
    /// Its `jti`.
    pub token_id: String,
    /// Its `exp`.
    pub expires_at: OffsetDateTime,
    /// The key that signed it.
    pub key_id: String,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A bearer token is a credential: keep it out of logs.
        f.debug_struct("AccessToken")
            .field("token_id", &self.token_id)
            .field("expires_at", &self.expires_at)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// The answer of [`Broker::authorise_with_token`].
#[derive(Debug, PartialEq, Eq)]
pub enum TokenOutcome {
    /// Permitted, and a token was issued.
    Issued(AccessToken),
    /// Refused.
    Denied(Denial),
}

impl<S: Store> Broker<S> {
    /// Signs the access token for `permit` at `now` and makes the audit record of its issuing.
    fn sign_token(
        &self,
        permit: &Permit,
        now: OffsetDateTime,
    ) -> Result<(AccessToken, AuditRecord), Error> {
        let expires_at =
            saturating_add(now, self.settings.token_lifetime).min(permit.grant_expires_at);
        let sender_key = self.settings.sender_keys.get(&permit.platform).cloned();
        // Counted per bank and platform: nothing in a token tells its platform how many the
        // broker issued to another.
        let audience = format!("{}\n{}", permit.holder.as_str(), permit.platform.as_str());
        let token_id = (self.token_ids)
            .next(&audience, now, self.settings.random.as_ref())
            .map_err(|_| KeyError::RandomnessUnavailable)?;
        let claims = AccessClaims {
            iss: self.settings.id.clone(),
            aud: permit.holder.clone(),
            sub: permit.subject.clone(),
            client_id: permit.platform.clone(),
            cid: permit.consent.clone(),
            att: permit.attestation_id.to_string(),
            scope: permit.scope,
            purpose: permit.purpose,
            acct: permit.account.clone(),
            presence: permit.presence,
            cnf: sender_key.clone().map(|jkt| Confirmation { jkt }),
            iat: now.unix_timestamp(),
            nbf: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
            jti: token_id.clone(),
        };
        let (token, key_id) = {
            let key = self.token_key();
            (token::sign(&claims, &key)?, key.kid().to_owned())
        };
        let record = AuditRecord::new(
            now,
            Actor::Platform(permit.platform.clone()),
            AuditEvent::TokenIssued {
                consent: permit.consent.clone(),
                subject: permit.pseudonyms.0.clone(),
                scope: permit.scope,
                purpose: permit.purpose,
                account: permit.pseudonyms.1.clone(),
                presence: permit.presence,
                token_id: token_id.clone(),
                sender_key,
                token_digest: Some(crate::privacy::commitment(token.as_bytes())),
            },
        );
        let token = AccessToken {
            token,
            token_id,
            expires_at,
            key_id,
        };
        Ok((token, record))
    }

    /// Checks that `permit` may still be used at `now`: decided by this broker, not lapsed, and
    /// its consent (still live) and its holder's policy exactly as they were when it was decided.
    pub(super) fn check_permit(&self, permit: &Permit, now: OffsetDateTime) -> Result<(), Error> {
        if permit.issued_by != self.instance {
            return Err(Error::ForeignPermit);
        }
        if now >= permit.lapses_at {
            return Err(Error::PermitLapsed(permit.consent.clone()));
        }
        let stale = || Error::PermitStale(permit.consent.clone());
        let consent = self.load(&permit.consent)?;
        if consent.version != permit.consent_version || consent.ensure_live(now).is_err() {
            return Err(stale());
        }
        let holder = self.store.holder(&permit.holder)?;
        if holder.as_ref().map(|h| h.version) != permit.holder_version {
            return Err(stale());
        }
        Ok(())
    }

    /// Turns a permit into a signed access token, bound to its consent, scope, purpose, account
    /// and holder, and records the issuing (with the token's `jti`) before returning it.
    ///
    /// The permit is consumed (single use), must have been decided by this broker, and must not
    /// have lapsed. Its consent and its holder's policy must be exactly as they were when it was
    /// decided: a permit decided before a revocation, a re-authorisation or a policy change (the
    /// bank stopped sharing a scope, say) never becomes a token. The token is recorded only while
    /// its signing key is the store's active token key. It expires after the configured
    /// lifetime, or with the grant if that is sooner.
    ///
    /// # Errors
    /// [`Error::ForeignPermit`]; [`Error::PermitLapsed`]; [`Error::PermitStale`] if the consent or
    /// the holder's policy changed since the permit was decided; [`Error::KeyRetired`] if another
    /// broker on the same store replaced this broker's token key; [`Error::Store`] if the issuing
    /// cannot be recorded (then no token is returned); [`Error::Provider`]; [`Error::Key`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.issue_token", level = "debug", skip_all)
    )]
    pub fn issue_token(&self, permit: Permit) -> Result<AccessToken, Error> {
        self.retrying(|| {
            let now = self.now();
            self.check_permit(&permit, now)?;
            let (token, record) = self.sign_token(&permit, now)?;
            let mut commit = Commit::new(record)
                .precondition(Precondition::consent_version(
                    &permit.consent,
                    permit.consent_version,
                ))
                .precondition(Precondition::key_active(KeyUse::Token, &token.key_id));
            if let Some(version) = permit.holder_version {
                commit = commit.precondition(Precondition::holder_version(&permit.holder, version));
            }
            match self.store.commit(commit) {
                Ok(_) => Ok(token),
                // Another writer changed something the token rests on; the next attempt finds
                // out what (a stale permit, a retired key) or succeeds (a rotation by this broker
                // raced the signature: the next one uses the new key).
                Err(StoreError::Conflict) => Err(self.token_conflict()),
                Err(error) => Err(error.into()),
            }
        })
    }

    /// What a token commit's failed precondition means: [`Error::KeyRetired`] if this broker's
    /// current token key is no longer the store's active one (another broker replaced it; no
    /// retry can help), otherwise a conflict to retry.
    fn token_conflict(&self) -> Error {
        let kid = self.token_key().kid().to_owned();
        match self.ensure_active(KeyUse::Token, &kid) {
            Ok(()) => Error::Store(StoreError::Conflict),
            Err(error) => error,
        }
    }

    /// The checked call with token issuing: decides and, on a permit, signs a token; the decision
    /// and the token's issuing are recorded in one commit, so either both are in the audit log and
    /// the token is returned, or neither is (a failed call permits nothing and spends no
    /// unattended slot). Re-decides if the consent or the holder's policy changed meanwhile.
    ///
    /// # Errors
    /// As [`Broker::authorise_access`], and [`Error::Provider`] or [`Error::Key`] if the token
    /// cannot be signed (then nothing is recorded).
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.authorise_with_token", level = "debug", skip_all)
    )]
    pub fn authorise_with_token(&self, request: &AccessRequest) -> Result<TokenOutcome, Error> {
        self.deciding(request, |plan| {
            let (mut commit, decision, permit) = plan.into_commit();
            let Some(permit) = permit else {
                let seq = self.commit(commit)?.audit_seqs.start;
                return Ok(TokenOutcome::Denied(Denial {
                    reasons: decision.reasons().to_vec(),
                    audit_seq: seq,
                }));
            };
            let (token, issued) = self.sign_token(&permit, permit.decided_at)?;
            commit.push_record(issued);
            let commit =
                commit.precondition(Precondition::key_active(KeyUse::Token, &token.key_id));
            match self.store.commit(commit) {
                Ok(_) => Ok(TokenOutcome::Issued(token)),
                Err(StoreError::Conflict) => Err(self.token_conflict()),
                Err(error) => Err(error.into()),
            }
        })
    }
}

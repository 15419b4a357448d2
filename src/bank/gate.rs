//! The bank's gate: every access decided from the bank's own records, fail-closed, each refusal
//! typed and journalled, and every served access journalled before any data is served.

use std::sync::atomic::Ordering;

use time::{Duration, OffsetDateTime};

use super::{Bank, MAX_ATTEMPTS};
use crate::audit::{Actor, AuditEvent};
use crate::data::{DataError, DataHolder, serve};
use crate::dpop::{self, DEFAULT_PROOF_WINDOW, HttpRequest, MAX_PROOF_WINDOW};
use crate::holder::VerifiedAccess;
use crate::hpke::{DevicePublicKey, HpkeError};
use crate::ids::SubjectId;
use crate::policy::Presence;
use crate::privacy::Keyed;
use crate::refusal::GateRefusal;
use crate::sealing::{Delivery, Response, ResponseContext, seal_response};
use crate::store::{
    Change, Commit, GateQuery, GateView, LedgerRead, Precondition, RecordKind, SeenKind, Store,
    StoreError,
};
use crate::token::{self, AccessClaims, MAX_LEEWAY, MAX_TOKEN_LIFETIME, TokenExpectations};
use crate::vocab::{Purpose, Scope};

/// One check in this many prunes the presented ids no gate could take any more: a range at the
/// left edge of their key, so a few larger prunes cost less than a small one in every check (on
/// PostgreSQL each is a statement of the commit function).
pub(crate) const PRUNE_EVERY: u64 = 8;

/// How many expired presented ids of each kind a pruning check forgets, at most: bounded work per
/// call, and on average eight a check, more than the two ids a check adds.
const PRUNE_PER_CALL: u32 = 64;

/// How much longer than the widest window and leeway presented ids are kept: each gate prunes by
/// its own clock, and a gate whose clock is behind another's still takes what the other has
/// passed. Processes of one bank whose clocks differ by less than this forget no id one of them
/// could still take (beyond it, one of them could serve a replay).
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::minutes(2);

/// What the data path answered once the gate admitted an access (and journalled it): the
/// response (sealed by default), or the holder's refusal or failure.
pub type Served<E> = Result<Response, DataError<E>>;

/// How the gate is configured (start from `GateSettings::default()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSettings {
    /// Clock leeway for tokens and proofs (at most 30 s).
    pub leeway: Duration,
    /// How old a DPoP proof may be (at most 5 minutes).
    pub proof_window: Duration,
    /// Longest token lifetime accepted (at most 15 minutes).
    pub max_token_lifetime: Duration,
    /// How old the last revocation feed applied may be; beyond it the gate refuses, since a
    /// revocation on the platform might not have reached the bank.
    pub feed_staleness: Duration,
    /// Accesses the platform labels subject-present that one approval may have per UTC day. The
    /// label cannot be proven; this bounds what a false one gains.
    pub present_daily_ceiling: u32,
    /// Take each access token once (the default): every served access then rests on its own
    /// token, and so on its own `token_issued` entry in the broker's log.
    pub single_use_tokens: bool,
    /// How many of this bank's checks verify their signatures at once (the token's and the
    /// proof's, with the checks of their claims), at most; the others sleep until a place is
    /// free. Default: the cores this process may use ([`std::thread::available_parallelism`]);
    /// at least 1; `usize::MAX` for no bound. The bound is per [`Bank`](crate::Bank): banks in
    /// one process have one each.
    ///
    /// The two verifications are about half of a check's CPU. With more checks verifying at once
    /// than there are cores (the HTTP gate of feature `http` runs up to 256), they only take turns
    /// on the cores, and take them from the thread writing the journal's next transaction, which
    /// every one of them then waits for: with 256 request threads on a SQLite ledger, unbounded,
    /// the gate did about a third of what it did bounded, and a bound of one more than the cores
    /// lost half the gain (measured on two cores: BENCHMARKS.md, "Verifying at once"). A request
    /// whose token is refused before its signature is verified (malformed, another algorithm, an
    /// unknown key) takes no place; anyone can send those. Lower the bound when other CPU-heavy
    /// work shares the process; raise it only where measurements show the cores idle under load.
    pub verifying_at_once: usize,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            leeway: MAX_LEEWAY,
            proof_window: DEFAULT_PROOF_WINDOW,
            max_token_lifetime: MAX_TOKEN_LIFETIME,
            feed_staleness: Duration::minutes(5),
            present_daily_ceiling: 50,
            single_use_tokens: true,
            verifying_at_once: std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get),
        }
    }
}

impl GateSettings {
    /// The settings with every bound within its maximum.
    pub(super) fn clamped(mut self) -> Self {
        self.leeway = self.leeway.clamp(Duration::ZERO, MAX_LEEWAY);
        self.proof_window = self.proof_window.clamp(Duration::ZERO, MAX_PROOF_WINDOW);
        self.max_token_lifetime = self.max_token_lifetime.min(MAX_TOKEN_LIFETIME);
        self.verifying_at_once = self.verifying_at_once.max(1);
        self
    }
}

/// One request at the bank's API: the access token, the DPoP proof that came with it, and the
/// HTTP method and URL the request was received on.
#[derive(Debug, Clone, Copy)]
pub struct GateRequest<'a> {
    /// The access token (`Authorization: DPoP <token>`).
    pub token: &'a str,
    /// The DPoP proof (`DPoP` header).
    pub proof: &'a str,
    /// The request as received.
    pub http: HttpRequest<'a>,
}

/// Why the gate let nothing through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GateError<E> {
    /// Refused, for this reason. The refusal is in the bank's journal at `journal_seq` once the
    /// token verified (it is then the platform's request); a request whose token does not
    /// verify (malformed, an unknown key, a bad signature, another audience, expired) is refused
    /// without an entry (`None`): anyone can send one, and journalling them would let anyone
    /// grow the journal. Count and rate-limit those where requests arrive.
    #[error("refused: {refusal}")]
    Refused {
        /// Why.
        refusal: GateRefusal,
        /// The journal entry recording the refusal, if it was journalled.
        journal_seq: Option<u64>,
    },
    /// The ledger could not be read, or the decision could not be journalled: nothing served.
    #[error("the bank's ledger failed; nothing was served: {0}")]
    Store(StoreError),
    /// The bank's account system failed while the gate asked who owns the account.
    #[error("the bank's account system failed; nothing was served")]
    AccountSystem(E),
    /// Other accesses kept changing the counts this one read.
    #[error("gave up after {0} attempts under concurrent accesses")]
    Contention(u32),
    /// The admitted access's response could not be sealed (no randomness, say): nothing was
    /// served.
    #[error("the response could not be sealed; nothing was served: {0}")]
    Seal(HpkeError),
}

impl<E> GateError<E> {
    /// Whether trying again later can help (a store or account-system failure, contention).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Refused { .. } => false,
            Self::Store(error) => error.is_retryable(),
            Self::AccountSystem(_) | Self::Contention(_) => true,
            Self::Seal(error) => *error == HpkeError::RandomnessUnavailable,
        }
    }
}

/// Why one attempt stopped.
enum Stop<E> {
    Refuse(GateRefusal, Option<Box<AccessClaims>>, Option<Who>),
    Fail(GateError<E>),
    Retry,
}

impl<E> From<StoreError> for Stop<E> {
    fn from(error: StoreError) -> Self {
        Self::Fail(GateError::Store(error))
    }
}

impl<S: Store + LedgerRead> Bank<S> {
    /// The gate's check of one request, in the documented order of [`GateRefusal`]: the token
    /// (broker's signature, claims), its sender constraint (a DPoP proof for this request and
    /// token, signed by the key the token names, never seen before; the token itself never seen
    /// before when the gate takes tokens once), then the bank's own records: the attestation the
    /// token names, its terms, its status (expiry, the bank's revocations, the platform's from a
    /// fresh enough feed), the bank's current policy, the account's owner (asked of `accounts`,
    /// the bank's own account system), and the bank's counts for today.
    ///
    /// A served access is recorded in the journal, with the counts, the presented ids and where
    /// its data goes, in one commit *before* this returns the [`Admission`]: the
    /// [`VerifiedAccess`] that the data methods need, and the delivery the journal recorded,
    /// which [`Bank::deliver`] carries out. A refusal is journalled with its reason. If either
    /// cannot be recorded, nothing is served. [`Bank::serve`] does all of it in one call.
    ///
    /// # Errors
    /// [`GateError::Refused`] with the first failed check; [`GateError::Store`];
    /// [`GateError::AccountSystem`]; [`GateError::Contention`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.check", level = "debug", skip_all)
    )]
    pub fn check<H: DataHolder>(
        &self,
        request: &GateRequest<'_>,
        accounts: &H,
    ) -> Result<Admission, GateError<H::Error>> {
        for tried in 1..=MAX_ATTEMPTS {
            crate::store::back_off(tried);
            match self.attempt(request, accounts) {
                Ok(admission) => return Ok(admission),
                Err(Stop::Retry) => continue,
                Err(Stop::Fail(error)) => return Err(error),
                Err(Stop::Refuse(refusal, claims, subject)) => {
                    return Err(self.journal_refusal(refusal, claims.as_deref(), subject));
                }
            }
        }
        Err(GateError::Contention(MAX_ATTEMPTS))
    }

    /// Delivers `data`, the data of the admitted access (what the data methods returned for
    /// [`Admission::access`]), as the journal recorded: sealed to the devices named there (one
    /// HPKE envelope each, under the access's context, see [`crate::seal_response`]), or
    /// unsealed. Data of another scope or account seals, but the device refuses it.
    ///
    /// # Errors
    /// [`HpkeError`]: the random source failed (nothing is delivered; the journal says served).
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.deliver", level = "debug", skip_all)
    )]
    pub fn deliver(
        &self,
        admission: &Admission,
        data: crate::AccountData,
    ) -> Result<Response, HpkeError> {
        let Some(devices) = &admission.to else {
            return Ok(Response::Plaintext(data));
        };
        let access = &admission.access;
        let context = ResponseContext {
            holder: self.id.clone(),
            consent: access.consent().clone(),
            token_id: access.token_id().unwrap_or_default().to_owned(),
            scope: access.scope(),
            account: access.account().clone(),
            sequence: admission.journal_seq,
        };
        seal_response(&data, &context, devices, self.random.as_ref()).map(Response::Sealed)
    }

    /// [`Bank::check`], then the data of the verified scope and account from `holder`, delivered
    /// by [`Bank::deliver`]: sealed to the subject's devices the approval named, or unsealed for
    /// a use (scope and purpose) both the bank's policy and the approval allow; the journal entry
    /// records which.
    ///
    /// # Errors
    /// As [`Bank::check`]; [`GateError::Seal`] when the response could not be sealed (nothing is
    /// served then); the data path's [`DataError`] (as `Ok(Err(..))`: the access was journalled
    /// as served, the holder then failed or refused).
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "bank.serve", level = "debug", skip_all)
    )]
    pub fn serve<H: DataHolder>(
        &self,
        request: &GateRequest<'_>,
        holder: &H,
    ) -> Result<Served<H::Error>, GateError<H::Error>> {
        let admission = self.check(request, holder)?;
        let data = match serve(holder, admission.access()) {
            Ok(data) => data,
            Err(error) => return Ok(Err(error)),
        };
        self.deliver(&admission, data)
            .map(Ok)
            .map_err(GateError::Seal)
    }

    /// The checks without recording anything: what [`Bank::check`] would decide now, for
    /// diagnostics and for measuring the checks apart from the journal's write. What it admits
    /// is a [`Prechecked`], which serves no data: nothing was journalled, no id remembered as
    /// presented, nothing counted against the day's limit.
    ///
    /// # Errors
    /// As [`Bank::check`], with `journal_seq` `None` (nothing is journalled).
    pub fn precheck<H: DataHolder>(
        &self,
        request: &GateRequest<'_>,
        accounts: &H,
    ) -> Result<Prechecked, GateError<H::Error>> {
        match self.decide(request, accounts) {
            Ok(decided) => Ok(Prechecked {
                scope: decided.claims.scope,
                purpose: decided.claims.purpose,
                delivery: decided.plan.delivery(),
            }),
            Err(Stop::Refuse(refusal, ..)) => Err(GateError::Refused {
                refusal,
                journal_seq: None,
            }),
            Err(Stop::Fail(error)) => Err(error),
            Err(Stop::Retry) => Err(GateError::Contention(1)),
        }
    }

    fn attempt<H: DataHolder>(
        &self,
        request: &GateRequest<'_>,
        accounts: &H,
    ) -> Result<Admission, Stop<H::Error>> {
        let decided = self.decide(request, accounts)?;
        let Decided {
            claims,
            view,
            proof_id,
            proof_at,
            token_at,
            now,
            plan,
            token_digest,
            limit,
        } = decided;
        let Some(attestation) = view.attestation else {
            return Err(Stop::Fail(GateError::Store(StoreError::Conflict)));
        };
        let day = now.date();
        // The subject's key as the view read it (the commit checks it is still the stored one),
        // or a new one that the commit inserts.
        let keyed = Keyed::stored_or_made(
            &attestation.subject,
            view.subject_key.clone(),
            self.random.as_ref(),
            now,
        )
        .map_err(|_| {
            Stop::Fail(GateError::Store(StoreError::Unavailable(
                "no randomness for the subject's key".into(),
            )))
        })?;
        // The journal names the customer by a pseudonym of this platform's relationship.
        let scoped = keyed.key.for_platform(&attestation.platform);
        let delivery = match plan.delivery() {
            Delivery::Sealed { devices } => Delivery::Sealed {
                devices: devices
                    .iter()
                    .map(|d| scoped.device(d).as_str().to_owned())
                    .collect(),
            },
            Delivery::Plaintext => Delivery::Plaintext,
        };
        let entry = self.record(
            Actor::Platform(claims.client_id.clone()),
            AuditEvent::AccessServed {
                attestation: attestation.id.clone(),
                consent: claims.cid.clone(),
                subject: scoped.subject(&attestation.subject),
                platform: claims.client_id.clone(),
                scope: claims.scope,
                purpose: claims.purpose,
                account: scoped.account(&claims.acct),
                presence: claims.presence,
                token_id: claims.jti.clone(),
                proof_id: proof_id.clone(),
                delivery: Some(delivery),
                token_digest: Some(token_digest),
            },
        );
        let mut commit = keyed
            .store_in(Commit::new(entry))
            .precondition(Precondition::attestation_version(
                &attestation.id,
                attestation.version,
            ))
            .precondition(Precondition::served_below(
                &attestation.id,
                day,
                claims.presence,
                limit,
            ))
            .precondition(Precondition::BankPolicyVersion {
                version: view.policy.as_ref().map(|p| p.version),
            })
            // The view found no revocation on the platform (else it refused): a feed applied
            // since that revokes the consent fails this commit, which then decides again.
            .precondition(Precondition::not_revoked_at_platform(&claims.cid))
            .change(Change::CountServed {
                attestation: attestation.id.clone(),
                day,
                presence: claims.presence,
            })
            .change(Change::RememberSeen {
                kind: SeenKind::Proof,
                id: proof_id.clone(),
                at: proof_at,
            });
        if self.gate.single_use_tokens {
            commit = commit.change(Change::RememberSeen {
                kind: SeenKind::Token,
                id: claims.jti.clone(),
                at: token_at,
            });
        }
        if let Plan::Sealed { live, .. } = &plan {
            commit = commit.precondition(Precondition::LiveDeviceKeys {
                subject: attestation.subject.clone(),
                thumbprints: live.clone(),
            });
        }
        // Ids are forgotten once no gate on this ledger could take them, whatever its settings
        // and within `CLOCK_SKEW_ALLOWANCE` of this gate's clock: a proof once the widest window
        // and leeway have passed since its `iat`, a token once the widest leeway has passed
        // since its `exp`. Cutting by this gate's own settings would let a gate with a narrower
        // window forget a proof that another process sharing the ledger, with a wider one, still
        // takes; cutting by this gate's clock alone, a gate whose clock is behind.
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PRUNE_EVERY)
        {
            commit = commit
                .change(Change::PruneSeen {
                    kind: SeenKind::Proof,
                    before: now - MAX_PROOF_WINDOW - MAX_LEEWAY - CLOCK_SKEW_ALLOWANCE,
                    limit: PRUNE_PER_CALL,
                })
                .change(Change::PruneSeen {
                    kind: SeenKind::Token,
                    before: now - MAX_LEEWAY - CLOCK_SKEW_ALLOWANCE,
                    limit: PRUNE_PER_CALL,
                });
        }
        match self.ledger.commit(commit) {
            Ok(receipt) => Ok(Admission {
                delivery: plan.delivery(),
                to: match plan {
                    Plan::Sealed { to, .. } => Some(to),
                    Plan::Plaintext => None,
                },
                access: VerifiedAccess::from_claims(claims),
                journal_seq: receipt.audit_seqs.start,
            }),
            Err(StoreError::Conflict) => Err(Stop::Retry),
            // Another process took the same proof or token between our read and our write.
            Err(StoreError::Duplicate {
                kind: RecordKind::Presented(kind),
                ..
            }) => {
                let refusal = match kind {
                    SeenKind::Proof => GateRefusal::Proof(dpop::DpopError::Replayed),
                    SeenKind::Token => GateRefusal::TokenReplayed,
                };
                Err(Stop::Refuse(
                    refusal,
                    Some(Box::new(claims)),
                    Some((
                        attestation.subject,
                        attestation.platform,
                        attestation.id,
                        attestation.version,
                    )),
                ))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Every check, reading but writing nothing.
    fn decide<H: DataHolder>(
        &self,
        request: &GateRequest<'_>,
        accounts: &H,
    ) -> Result<Decided, Stop<H::Error>> {
        let now = self.now();
        let settings = &self.gate;
        // 1. The token: the broker's signature and every claim.
        let expected = TokenExpectations {
            issuer: &self.broker,
            audience: &self.id,
            leeway: settings.leeway,
            max_lifetime: settings.max_token_lifetime,
        };
        // From the token's signature to the end of the proof's check, in one of
        // `verifying_at_once` places: CPU only, nothing read from the ledger nor waited for.
        let (claims, verifying) = token::check_token_in(
            request.token,
            |kid| self.broker_key(kid),
            &expected,
            now,
            Some(&self.verifying),
        )
        .map_err(|e| Stop::Refuse(GateRefusal::Token(e), None, None))?;
        let refuse = |refusal: GateRefusal, claims: &AccessClaims, subject: Option<Who>| {
            Stop::Refuse(refusal, Some(Box::new(claims.clone())), subject)
        };
        // 2. The sender constraint.
        let Some(cnf) = &claims.cnf else {
            return Err(refuse(GateRefusal::NotSenderConstrained, &claims, None));
        };
        let (proof, token_digest) = dpop::check_proof_hashed(
            request.proof,
            &request.http,
            request.token,
            &cnf.jkt,
            settings.proof_window,
            now,
        )
        .map_err(|e| refuse(GateRefusal::Proof(e), &claims, None))?;
        drop(verifying);
        // The ids are remembered with the times their signatures cover (both checked against
        // the clock above, so within range; refused, not guessed, if not).
        let Ok(proof_at) = OffsetDateTime::from_unix_timestamp(proof.iat) else {
            let too_old = GateRefusal::Proof(dpop::DpopError::TooOld);
            return Err(refuse(too_old, &claims, None));
        };
        let Ok(token_at) = OffsetDateTime::from_unix_timestamp(claims.exp) else {
            let expired = GateRefusal::Token(token::TokenError::Expired { exp: claims.exp });
            return Err(refuse(expired, &claims, None));
        };
        let view = self.ledger.gate_view(&GateQuery {
            attestation: &claims.att,
            consent: &claims.cid,
            day: now.date(),
            proof_id: &proof.jti,
            proof_at,
            token_id: &claims.jti,
            token_at,
        })?;
        if view.proof_seen {
            let replayed = GateRefusal::Proof(dpop::DpopError::Replayed);
            return Err(refuse(replayed, &claims, None));
        }
        if settings.single_use_tokens && view.token_seen {
            return Err(refuse(GateRefusal::TokenReplayed, &claims, None));
        }
        // 3. The bank's ledger.
        let Some(attestation) = &view.attestation else {
            return Err(refuse(GateRefusal::UnknownAttestation, &claims, None));
        };
        let subject = Some((
            attestation.subject.clone(),
            attestation.platform.clone(),
            attestation.id.clone(),
            attestation.version,
        ));
        let mismatch = |claim: &str| {
            refuse(
                GateRefusal::AttestationMismatch {
                    claim: claim.to_owned(),
                },
                &claims,
                subject.clone(),
            )
        };
        if attestation.wire_subject() != &claims.sub {
            return Err(mismatch("sub"));
        }
        if attestation.platform != claims.client_id {
            return Err(mismatch("client_id"));
        }
        if attestation.consent != claims.cid {
            return Err(mismatch("cid"));
        }
        if attestation.broker != claims.iss {
            return Err(mismatch("iss"));
        }
        if attestation.superseded_by.is_some() {
            return Err(refuse(GateRefusal::Superseded, &claims, subject));
        }
        // 4. The terms the subject approved at the bank.
        let terms = if !attestation.scopes.contains(claims.scope) {
            Some(GateRefusal::ScopeNotAttested(claims.scope))
        } else if !attestation.purposes.contains(claims.purpose) {
            Some(GateRefusal::PurposeNotAttested(claims.purpose))
        } else if !attestation.accounts.contains(&claims.acct) {
            Some(GateRefusal::AccountNotAttested)
        } else {
            None
        };
        if let Some(refusal) = terms {
            return Err(refuse(refusal, &claims, subject));
        }
        // 5. Its status.
        let status = if now >= attestation.expires_at {
            Some(GateRefusal::Expired {
                at: attestation.expires_at,
            })
        } else if let Some(revoked) = &attestation.revoked {
            Some(GateRefusal::RevokedAtBank { by: revoked.by })
        } else if view.platform_revoked_at.is_some() {
            Some(GateRefusal::RevokedAtPlatform)
        } else if view
            .feed
            .is_none_or(|feed| feed.generated_at + settings.feed_staleness < now)
        {
            Some(GateRefusal::RevocationFeedStale {
                generated_at: view.feed.map(|feed| feed.generated_at),
            })
        } else {
            None
        };
        if let Some(refusal) = status {
            return Err(refuse(refusal, &claims, subject));
        }
        // 6. The bank's current policy.
        let policy = match &view.policy {
            Some(record) if record.policy.enabled_scopes.contains(claims.scope) => &record.policy,
            _ => {
                let refusal = GateRefusal::PolicyForbidsScope(claims.scope);
                return Err(refuse(refusal, &claims, subject));
            }
        };
        // 7. The account's owner, in the bank's own account system.
        let owner = accounts
            .account_owner(&claims.acct)
            .map_err(|e| Stop::Fail(GateError::AccountSystem(e)))?;
        if owner.as_ref() != Some(&attestation.subject) {
            return Err(refuse(GateRefusal::AccountNotSubjects, &claims, subject));
        }
        // 8. The bank's counts today, against the day's limit for this presence (which the
        // journal entry's commit checks again where it increments the count).
        let (limit, over) = match claims.presence {
            Presence::Unattended if attestation.unattended_daily_limit == 0 => {
                (0, Some(GateRefusal::UnattendedNotApproved))
            }
            Presence::Unattended => {
                let limit = attestation
                    .unattended_daily_limit
                    .min(policy.unattended_daily_limit);
                let over = (view.served.unattended >= limit)
                    .then_some(GateRefusal::UnattendedLimitReached { limit });
                (limit, over)
            }
            Presence::SubjectPresent => {
                let ceiling = settings.present_daily_ceiling;
                let over = (view.served.present >= ceiling)
                    .then_some(GateRefusal::PresentCeilingReached { ceiling });
                (ceiling, over)
            }
        };
        if let Some(refusal) = over {
            return Err(refuse(refusal, &claims, subject));
        }
        // 9. Where the response goes: sealed unless both the policy and the approval allow this
        // scope unsealed for this purpose; to the approval's devices that are still registered.
        let plan = if policy.plaintext.contains(claims.scope, claims.purpose)
            && attestation.plaintext.contains(claims.scope, claims.purpose)
        {
            Plan::Plaintext
        } else {
            // The subject's keys that are not revoked, in the order registered (read with the
            // view; the commit checks they are still the live ones).
            let live: Vec<(String, DevicePublicKey)> = view
                .device_keys
                .iter()
                .filter(|record| record.revoked_at.is_none())
                .map(|record| (record.key.thumbprint(), record.key))
                .collect();
            let to: Vec<DevicePublicKey> = live
                .iter()
                .filter(|(thumbprint, _)| attestation.devices.contains(thumbprint))
                .map(|(_, key)| *key)
                .collect();
            if to.is_empty() {
                return Err(refuse(GateRefusal::NoDeviceToSealTo, &claims, subject));
            }
            Plan::Sealed {
                to,
                live: live.into_iter().map(|(thumbprint, _)| thumbprint).collect(),
            }
        };
        Ok(Decided {
            // The proof's `ath` is this digest: base64url of the token's SHA-256.
            token_digest,
            plan,
            claims,
            view,
            proof_id: proof.jti,
            proof_at,
            token_at,
            now,
            limit,
        })
    }

    /// Journals a refusal of a request whose token verified, with what the gate could establish;
    /// if even that fails, nothing was served and the failure is the answer. A request whose
    /// token did not verify is refused without an entry.
    fn journal_refusal<E>(
        &self,
        refusal: GateRefusal,
        claims: Option<&AccessClaims>,
        subject: Option<Who>,
    ) -> GateError<E> {
        let Some(verified) = claims else {
            return GateError::Refused {
                refusal,
                journal_seq: None,
            };
        };
        let claims = Some(verified);
        let mut subject = subject;
        for tried in 1..=MAX_ATTEMPTS {
            crate::store::back_off(tried);
            // The subject (the ledger's, never the token's word) and the account only as
            // pseudonyms of the customer's relationship with the approval's platform, and only
            // while the customer has a key and the approval is as it was read: a refusal never
            // makes a key, and never ties an approval an erasure deleted to a key made since.
            let keyed = match subject.as_ref() {
                Some((customer, ..)) => match Keyed::read_existing(&self.ledger, customer) {
                    Ok(keyed) => keyed,
                    Err(error) => return GateError::Store(error),
                },
                None => None,
            };
            let (who, account) = match (&keyed, subject.as_ref()) {
                (Some(keyed), Some((customer, platform, ..))) => {
                    let scoped = keyed.key.for_platform(platform);
                    (
                        Some(scoped.subject(customer)),
                        Some(scoped.account(&verified.acct)),
                    )
                }
                _ => (None, None),
            };
            let actor = Actor::Platform(verified.client_id.clone());
            let entry = self.record(
                actor,
                AuditEvent::AccessRefusedAtGate {
                    refusal: refusal.clone(),
                    token_id: claims.map(|c| c.jti.clone()),
                    attestation: claims.map(|c| c.att.clone()),
                    consent: claims.map(|c| c.cid.clone()),
                    subject: who,
                    platform: claims.map(|c| c.client_id.clone()),
                    scope: claims.map(|c| c.scope),
                    account,
                    presence: claims.map(|c| c.presence),
                },
            );
            let commit = match (&keyed, subject.as_ref()) {
                (Some(keyed), Some((_, _, attestation, version))) => keyed
                    .store_in(Commit::new(entry))
                    .precondition(Precondition::attestation_version(attestation, *version)),
                _ => Commit::new(entry),
            };
            match self.ledger.commit(commit) {
                Ok(receipt) => {
                    return GateError::Refused {
                        refusal,
                        journal_seq: Some(receipt.audit_seqs.start),
                    };
                }
                // The key or the approval changed (an erasure, a revocation): read the approval
                // again; gone, the refusal names nobody.
                Err(StoreError::Conflict) => {
                    if let Some((customer, platform, attestation, _)) = subject.take() {
                        match self.ledger.attestation_record(&attestation) {
                            Ok(Some(record)) => {
                                subject = Some((customer, platform, attestation, record.version));
                            }
                            Ok(None) => {}
                            Err(error) => return GateError::Store(error),
                        }
                    }
                }
                Err(error) => return GateError::Store(error),
            }
        }
        GateError::Contention(MAX_ATTEMPTS)
    }
}

/// Whom a refusal is about, as the ledger knows it: the customer, the approval's platform, and
/// the approval (id and version) it was read from.
type Who = (SubjectId, crate::ids::PlatformId, String, u64);

/// What the checks established for an access they admit.
struct Decided {
    /// The commitment to the token presented, for the journal (the monitor matches it).
    token_digest: String,
    /// The day's limit of accesses with the request's presence (the count must stay below it).
    limit: u32,
    plan: Plan,
    claims: AccessClaims,
    view: GateView,
    proof_id: String,
    /// The proof's `iat`.
    proof_at: OffsetDateTime,
    /// The token's `exp`.
    token_at: OffsetDateTime,
    now: OffsetDateTime,
}

/// Where an admitted access's data goes.
enum Plan {
    /// Sealed `to` these keys; `live` are the thumbprints of all the subject's keys not revoked
    /// when read (the commit's precondition).
    Sealed {
        to: Vec<DevicePublicKey>,
        live: Vec<String>,
    },
    Plaintext,
}

impl Plan {
    /// As the journal records it.
    fn delivery(&self) -> Delivery {
        match self {
            Self::Sealed { to, .. } => Delivery::Sealed {
                devices: to.iter().map(DevicePublicKey::thumbprint).collect(),
            },
            Self::Plaintext => Delivery::Plaintext,
        }
    }
}

/// An access the gate admitted and journalled, made only by [`Bank::check`]: the verified access
/// for the data methods, and where its data goes, as the journal recorded it. Hand the data to
/// [`Bank::deliver`].
#[derive(Debug)]
pub struct Admission {
    access: VerifiedAccess,
    /// The devices to seal to; `None`: unsealed.
    to: Option<Vec<DevicePublicKey>>,
    delivery: Delivery,
    journal_seq: u64,
}

impl Admission {
    /// The verified access, for the data methods.
    pub fn access(&self) -> &VerifiedAccess {
        &self.access
    }

    /// The verified access alone, for a caller that delivers by other means (the journal still
    /// says what [`Admission::delivery`] says).
    pub fn into_access(self) -> VerifiedAccess {
        self.access
    }

    /// Where the data goes, as the journal recorded it.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// The journal's entry that recorded the access (the sealed context's `sequence`).
    pub fn journal_seq(&self) -> u64 {
        self.journal_seq
    }
}

/// What [`Bank::precheck`] admitted: the checks passed, nothing recorded. It serves no data: the
/// data methods take a [`VerifiedAccess`], which the gate makes only with a journalled
/// [`Bank::check`], and there is no way from one to the other:
///
/// ```compile_fail,E0308
/// fn launder(prechecked: consent_broker::Prechecked) -> consent_broker::VerifiedAccess {
///     prechecked
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prechecked {
    scope: Scope,
    purpose: Purpose,
    delivery: Delivery,
}

impl Prechecked {
    /// The scope the token asks for.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The purpose the token states.
    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// Where a check would send the data, as its journal entry would record it.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::GateSettings;
    use crate::MemoryStore;
    use crate::testing::{TestBank, TestBroker};

    /// The setting reaches the bank's limiter: as given, 0 taken as 1, the cores by default.
    #[test]
    fn the_bound_on_verifying_at_once_is_the_banks() {
        let kit = TestBroker::memory();
        for (asked, kept) in [(0, 1), (1, 1), (3, 3), (usize::MAX, usize::MAX)] {
            let settings = GateSettings {
                verifying_at_once: asked,
                ..GateSettings::default()
            };
            let bank = TestBank::another_gate(&kit, MemoryStore::new(), settings);
            assert_eq!(bank.verifying.bound(), kept);
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let bank = TestBank::another_gate(&kit, MemoryStore::new(), GateSettings::default());
        assert_eq!(bank.verifying.bound(), cores);
    }
}

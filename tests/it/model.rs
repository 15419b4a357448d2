//! Model-based property tests: random sequences of operations run against the real broker and
//! against a small reference model of the consent lifecycle and the policy, written from the
//! rules in the README (not from the broker's code). Every access decision and every deny reason,
//! in order, must match the model; so must the outcome of every request, approval, rejection,
//! revocation and re-authorisation, and every consent's status after every step.
//!
//! Invariants checked after every step, independently of the model's verdicts:
//! - no permit without an authorised, unexpired, unrevoked grant covering scope, purpose and
//!   account;
//! - no permit ever for a prohibited purpose or scope;
//! - unattended permits per grant per day never above the holder's limit;
//! - every access decision audited exactly once (one new entry, of the decided kind, with the
//!   returned reasons);
//! - the audit log verifies (every Merkle node recomputed), at the end of every case.
//!
//! Cases: 256 by default; `CONSENT_BROKER_MODEL_CASES` sets more (CI runs 2,000).

use std::collections::HashMap;

use crate::support::{Fixture, id, purposes_of, reasons_without_accounts, scopes_of};
use consent_broker::*;
use proptest::prelude::*;
use time::{Date, Duration, OffsetDateTime};

const ACCOUNTS: [&str; 3] = ["acc-1", "acc-2", "acc-3"];
const SUBJECTS: [&str; 2] = ["alice", "bob"];
/// `chat` is registered for every purpose, `chat-cs` for customer service only, `ghost` is not
/// registered at all.
const PLATFORMS: [&str; 3] = ["chat", "chat-cs", "ghost"];
const APPROVAL_WINDOW: Duration = Duration::minutes(10);
/// Clock jumps: around the approval window, a day boundary, and past grant expiries.
const STEPS: [Duration; 7] = [
    Duration::seconds(1),
    Duration::minutes(5),
    Duration::minutes(11),
    Duration::hours(1),
    Duration::hours(13),
    Duration::days(1),
    Duration::days(30),
];

fn accounts_of(mask: u8) -> AccountSet {
    ACCOUNTS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, a)| id::<AccountId>(a))
        .collect()
}

fn platform_purposes(platform: usize) -> u8 {
    match platform {
        0 => 0b11,
        1 => 0b01,
        _ => 0,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Request {
        subject: usize,
        platform: usize,
        scopes: u8,
        purposes: u8,
        /// `None`: the subject chooses at the bank.
        accounts: Option<u8>,
        days: i64,
        ads: bool,
        /// Keep the request inside what the holder offers and the platform registered (most
        /// requests), so that grants come about often enough to be exercised.
        within_limits: bool,
    },
    Approve {
        consent: usize,
        scopes: u8,
        purposes: u8,
        accounts: u8,
        /// The approved expiry, in thousandths of the requested duration (over 1000: too late).
        per_mille: i64,
        /// The unattended accesses per day the subject agrees to (0: none).
        unattended: u32,
        forged: bool,
    },
    Reauthorise {
        consent: usize,
        per_mille: i64,
        forged: bool,
    },
    Reject {
        consent: usize,
    },
    Revoke {
        consent: usize,
        by: usize,
    },
    Access {
        /// An index past the known consents asks for an unknown one.
        consent: usize,
        platform: usize,
        /// 0..3 a scope, 3 `ads` given as a scope.
        scope: usize,
        /// 0..2 a purpose, 2 `ads`.
        purpose: usize,
        account: usize,
        unattended: bool,
        /// Ask for what the consent covers (its platform, and a scope, purpose and account it
        /// names), so that permits are common; unaligned accesses explore the denials.
        aligned: bool,
    },
    Advance {
        step: usize,
    },
    /// The subject asks to be erased.
    Erase {
        subject: usize,
    },
    /// Retention deletes the state of consents that ended more than `KEEP[keep]` ago.
    Retain {
        keep: usize,
    },
}

/// Retention periods the model tries.
const KEEP: [Duration; 3] = [Duration::ZERO, Duration::hours(1), Duration::days(30)];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..2usize, 0..2usize, 1..8u8, 1..4u8, prop::option::weighted(0.8, 1..8u8), 1..120i64, prop::bool::weighted(0.1), prop::bool::weighted(0.85))
            .prop_map(|(subject, platform, scopes, purposes, accounts, days, ads, within_limits)| Op::Request {
                subject, platform, scopes, purposes, accounts, days, ads, within_limits,
            }),
        4 => (prop_oneof![3 => 0..3usize, 1 => 3..6usize], 0..8u8, 0..4u8, 0..8u8, 0..1100i64, prop_oneof![1 => Just(0u32), 3 => 1..6u32], prop::bool::weighted(0.15))
            .prop_map(|(consent, scopes, purposes, accounts, per_mille, unattended, forged)| Op::Approve {
                consent, scopes, purposes, accounts, per_mille, unattended, forged,
            }),
        2 => (0..6usize, 0..1100i64, prop::bool::weighted(0.2))
            .prop_map(|(consent, per_mille, forged)| Op::Reauthorise { consent, per_mille, forged }),
        1 => (0..6usize).prop_map(|consent| Op::Reject { consent }),
        1 => (0..6usize, 0..3usize).prop_map(|(consent, by)| Op::Revoke { consent, by }),
        8 => (prop_oneof![4 => 0..3usize, 1 => 3..7usize], 0..3usize, prop_oneof![6 => 0..3usize, 1 => Just(3usize)], prop_oneof![6 => 0..2usize, 1 => Just(2usize)], 0..3usize, any::<bool>(), prop::bool::weighted(0.7))
            .prop_map(|(consent, platform, scope, purpose, account, unattended, aligned)| Op::Access {
                consent, platform, scope, purpose, account, unattended, aligned,
            }),
        2 => (0..STEPS.len()).prop_map(|step| Op::Advance { step }),
        // Mostly subjects the broker never saw (nothing to erase): erasing often would leave
        // too few grants for the other paths.
        1 => (0..6usize).prop_map(|subject| Op::Erase { subject }),
        1 => (0..KEEP.len()).prop_map(|keep| Op::Retain { keep }),
    ]
}

/// The holder's policy for a case.
#[derive(Debug, Clone)]
struct Policy {
    enabled: u8,
    limit: u32,
    max_days: i64,
}

fn policy() -> impl Strategy<Value = Policy> {
    (1..8u8, 0..4u32, 20..=120i64).prop_map(|(enabled, limit, max_days)| Policy {
        enabled,
        limit,
        max_days,
    })
}

// ---------------------------------------------------------------------------------------------
// The reference model.

#[derive(Debug, Clone, Copy, PartialEq)]
struct MGrant {
    scopes: u8,
    purposes: u8,
    accounts: u8,
    expires_at: OffsetDateTime,
    /// The attested unattended accesses per day.
    unattended: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MState {
    Requested,
    Authorised(MGrant),
    Rejected,
    Revoked(MGrant, Revoker),
}

#[derive(Debug, Clone)]
struct MConsent {
    id: ConsentId,
    subject: usize,
    platform: usize,
    scopes: u8,
    purposes: u8,
    accounts: Option<u8>,
    duration: Duration,
    deadline: OffsetDateTime,
    state: MState,
    /// When it was rejected or revoked.
    ended_at: Option<OffsetDateTime>,
    /// Its state was deleted (the subject erased, or retention).
    gone: bool,
}

impl MConsent {
    /// When it stops being live or pending (retention counts from here).
    fn ends_at(&self) -> OffsetDateTime {
        match (self.state, self.ended_at) {
            (MState::Rejected | MState::Revoked(..), Some(at)) => at,
            (MState::Authorised(grant), _) => grant.expires_at,
            _ => self.deadline,
        }
    }

    fn awaiting(&self, now: OffsetDateTime) -> bool {
        !self.gone && self.state == MState::Requested && now < self.deadline
    }

    fn live(&self, now: OffsetDateTime) -> Option<MGrant> {
        if self.gone {
            return None;
        }
        match self.state {
            MState::Authorised(grant) if now < grant.expires_at => Some(grant),
            _ => None,
        }
    }

    fn status(&self, now: OffsetDateTime) -> ConsentStatus {
        match self.state {
            MState::Requested if now >= self.deadline => ConsentStatus::Expired,
            MState::Requested => ConsentStatus::Requested,
            MState::Authorised(grant) if now >= grant.expires_at => ConsentStatus::Expired,
            MState::Authorised(_) => ConsentStatus::Authorised,
            MState::Rejected => ConsentStatus::Rejected,
            MState::Revoked(_, by) => ConsentStatus::Revoked {
                by,
                reason: RevocationReason::SubjectWithdrew,
            },
        }
    }
}

/// How a call that is not an access decision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Refused by the request rules (`Error::Request`).
    Request,
    /// Refused by the lifecycle (`Error::Consent`).
    Lifecycle,
    /// Refused attestation (`Error::Attestation`).
    Attestation,
    /// The consent's state was deleted (`Error::UnknownConsent`).
    Unknown,
}

fn outcome<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(Error::Request(_)) => Outcome::Request,
        Err(Error::Consent(_)) => Outcome::Lifecycle,
        Err(Error::Attestation(_)) => Outcome::Attestation,
        Err(Error::UnknownConsent(_)) => Outcome::Unknown,
        Err(other) => panic!("unexpected error from the broker: {other:?}"),
    }
}

struct Model {
    policy: Policy,
    now: OffsetDateTime,
    consents: Vec<MConsent>,
    unattended: HashMap<(usize, Date), u32>,
    /// Subjects with a key at the broker (made at their first accepted request).
    keyed: [bool; 2],
}

impl Model {
    fn request(&self, platform: usize, scopes: u8, purposes: u8, days: i64, ads: bool) -> Outcome {
        let unregistered = purposes & !platform_purposes(platform) != 0;
        let too_long = days > self.policy.max_days;
        if ads || unregistered || scopes & !self.policy.enabled != 0 || too_long {
            Outcome::Request
        } else {
            Outcome::Ok
        }
    }

    /// An aligned access made concrete: the consent's platform, and the first scope, purpose and
    /// account it names at or after the drawn ones.
    fn align(&self, op: &Op) -> Op {
        let Op::Access {
            consent,
            scope,
            purpose,
            account,
            aligned: true,
            ..
        } = *op
        else {
            return op.clone();
        };
        let Some(c) = self.consents.get(consent) else {
            return op.clone();
        };
        let (scopes, purposes, accounts) = match c.state {
            MState::Authorised(g) | MState::Revoked(g, _) => (g.scopes, g.purposes, g.accounts),
            _ => (c.scopes, c.purposes, c.accounts.unwrap_or(0b111)),
        };
        let named = |mask: u8, from: usize, width: usize| {
            (0..width)
                .map(|i| (from + i) % width)
                .find(|bit| mask & (1 << bit) != 0)
                .unwrap_or(from % width)
        };
        let Op::Access { unattended, .. } = *op else {
            unreachable!()
        };
        Op::Access {
            consent,
            platform: c.platform,
            scope: named(scopes, scope, 3),
            purpose: named(purposes, purpose, 2),
            account: named(accounts, account, 3),
            unattended,
            aligned: true,
        }
    }

    fn latest_expiry(&self, consent: &MConsent) -> OffsetDateTime {
        self.now + consent.duration.min(Duration::days(self.policy.max_days))
    }

    fn access(&self, op: &Op) -> Vec<DenyReason> {
        let Op::Access {
            consent,
            platform,
            scope,
            purpose,
            account,
            unattended,
            ..
        } = *op
        else {
            unreachable!()
        };
        let mut reasons = Vec::new();
        if purpose == 2 {
            reasons.push(DenyReason::ProhibitedPurpose {
                prohibited: ProhibitedUse::Ads,
            });
        }
        if scope == 3 {
            reasons.push(DenyReason::ProhibitedScope {
                prohibited: ProhibitedUse::Ads,
            });
        }
        if !reasons.is_empty() {
            return reasons;
        }
        let Some(c) = self.consents.get(consent).filter(|c| !c.gone) else {
            return vec![DenyReason::UnknownConsent];
        };
        let (scope, purpose) = (Scope::ALL[scope], Purpose::ALL[purpose]);
        // Another platform's consent: that alone, nothing else about it.
        if c.platform != platform {
            return vec![DenyReason::WrongPlatform];
        }
        if platform_purposes(platform) & (1 << purpose as u8) == 0 {
            reasons.push(DenyReason::PurposeNotRegistered { purpose });
        }
        let attested = match c.state {
            MState::Authorised(g) | MState::Revoked(g, _) => Some(g.unattended),
            _ => None,
        };
        // What the access is compared against: the grant if there is one, else the request.
        let (scopes, purposes, accounts) = match c.state {
            MState::Requested => {
                reasons.push(DenyReason::NotAuthorised);
                (c.scopes, c.purposes, c.accounts.unwrap_or(0b111))
            }
            MState::Rejected => {
                reasons.push(DenyReason::Rejected);
                (c.scopes, c.purposes, c.accounts.unwrap_or(0b111))
            }
            MState::Revoked(g, by) => {
                reasons.push(DenyReason::Revoked { by });
                (g.scopes, g.purposes, g.accounts)
            }
            MState::Authorised(g) => {
                if self.now >= g.expires_at {
                    reasons.push(DenyReason::Expired { at: g.expires_at });
                }
                (g.scopes, g.purposes, g.accounts)
            }
        };
        if scopes & (1 << scope as u8) == 0 {
            reasons.push(DenyReason::ScopeNotGranted { scope });
        }
        if purposes & (1 << purpose as u8) == 0 {
            reasons.push(DenyReason::PurposeNotGranted { purpose });
        }
        if accounts & (1 << account) == 0 {
            reasons.push(DenyReason::AccountNotGranted {
                account: id(ACCOUNTS[account]),
            });
        }
        if self.policy.enabled & (1 << scope as u8) == 0 {
            reasons.push(DenyReason::HolderForbidsScope { scope });
        }
        let used = self
            .unattended
            .get(&(consent, self.now.date()))
            .copied()
            .unwrap_or(0);
        // The subject's attested limit, within the holder's.
        let limit = attested.map_or(self.policy.limit, |a| a.min(self.policy.limit));
        if unattended && attested == Some(0) {
            reasons.push(DenyReason::UnattendedNotApproved);
        } else if unattended && used >= limit {
            reasons.push(DenyReason::FrequencyExceeded { limit });
        }
        reasons
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

struct World<S: Store = MemoryStore> {
    fx: Fixture<S>,
    forger: AttestationSigner,
    model: Model,
    /// Unattended permits the broker returned, per consent and day.
    unattended_permits: HashMap<(usize, Date), u32>,
    access_decisions: u64,
}

impl<S: Store> World<S> {
    fn new(policy: Policy, store: S) -> Self {
        let holder_policy = HolderPolicy {
            enabled_scopes: scopes_of(policy.enabled),
            max_consent_duration: Duration::days(policy.max_days),
            unattended_daily_limit: policy.limit,
            plaintext: PlaintextUses::new(),
        };
        let fx = Fixture::with_policy(store, holder_policy);
        fx.broker
            .register_platform(PlatformProfile {
                id: id(PLATFORMS[1]),
                registered_purposes: purposes_of(platform_purposes(1)),
            })
            .unwrap();
        let forger =
            AttestationSigner::new(fx.bank.clone(), SigningKey::generate(&fx.rng).unwrap())
                .unwrap();
        let now = fx.broker.now();
        Self {
            fx,
            forger,
            model: Model {
                policy,
                now,
                consents: Vec::new(),
                unattended: HashMap::new(),
                keyed: [false; 2],
            },
            unattended_permits: HashMap::new(),
            access_decisions: 0,
        }
    }

    /// The holder's attestation (or a forger's) approving `grant` for the consent `c`.
    fn attest(&self, forged: bool, c: &MConsent, grant: MGrant) -> String {
        let signer = if forged {
            &self.forger
        } else {
            self.fx.bank_signer()
        };
        let statement = ApprovalStatement {
            consent: c.id.clone(),
            subject: id(SUBJECTS[c.subject]),
            platform: id(PLATFORMS[c.platform]),
            scopes: scopes_of(grant.scopes),
            purposes: purposes_of(grant.purposes),
            accounts: accounts_of(grant.accounts),
            consent_expires_at: grant.expires_at,
            unattended_daily_limit: grant.unattended,
            devices: Vec::new(),
            plaintext: PlaintextUses::new(),
        };
        signer
            .sign(
                &statement,
                self.fx.broker.id(),
                self.fx.broker.now(),
                &self.fx.rng,
            )
            .unwrap()
    }

    fn audit_len(&self) -> u64 {
        self.fx.broker.store().audit_len().unwrap()
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.model.now;
        let op = &self.model.align(op);
        match *op {
            Op::Request {
                subject,
                platform,
                scopes,
                purposes,
                accounts,
                days,
                ads,
                within_limits,
            } => {
                let (scopes, purposes, days) = if within_limits {
                    let keep = |mask: u8, allowed: u8| {
                        if mask & allowed == 0 {
                            allowed
                        } else {
                            mask & allowed
                        }
                    };
                    (
                        keep(scopes, self.model.policy.enabled),
                        keep(purposes, platform_purposes(platform)),
                        days.min(self.model.policy.max_days),
                    )
                } else {
                    (scopes, purposes, days)
                };
                let mut requested_purposes: Vec<RequestedPurpose> =
                    purposes_of(purposes).iter().map(Into::into).collect();
                if ads {
                    requested_purposes.push(RequestedPurpose::Prohibited(ProhibitedUse::Ads));
                }
                let result = self.fx.broker.request_consent(ConsentRequestDraft {
                    subject: id(SUBJECTS[subject]),
                    platform: id(PLATFORMS[platform]),
                    holder: self.fx.bank.clone(),
                    scopes: scopes_of(scopes).iter().map(Into::into).collect(),
                    purposes: requested_purposes,
                    accounts: match accounts {
                        Some(mask) => AccountSelection::Listed(accounts_of(mask)),
                        None => AccountSelection::SubjectChooses,
                    },
                    duration: Duration::days(days),
                });
                let expected = self.model.request(platform, scopes, purposes, days, ads);
                prop_assert_eq!(outcome(&result), expected, "request {:?}", op);
                // A key is made with the first accepted request (a refusal makes none).
                if expected == Outcome::Ok {
                    self.model.keyed[subject] = true;
                }
                hit(if expected == Outcome::Ok {
                    "request accepted"
                } else {
                    "request refused"
                });
                if let Ok(request) = result {
                    self.model.consents.push(MConsent {
                        id: request.id().clone(),
                        subject,
                        platform,
                        scopes,
                        purposes,
                        accounts,
                        duration: Duration::days(days),
                        deadline: now + APPROVAL_WINDOW,
                        state: MState::Requested,
                        ended_at: None,
                        gone: false,
                    });
                }
            }
            Op::Approve {
                consent,
                scopes,
                purposes,
                accounts,
                per_mille,
                unattended,
                forged,
            } => {
                let Some(c) = self.model.consents.get(consent).cloned() else {
                    return Ok(());
                };
                // What the subject approves: a non-empty part of what was asked.
                let pick = |mask: u8, of: u8| if mask & of == 0 { of } else { mask & of };
                let scopes = pick(scopes, c.scopes);
                let purposes = pick(purposes, c.purposes);
                let accounts = pick(accounts, c.accounts.unwrap_or(0b111));
                let expires_at =
                    now + Duration::seconds(c.duration.whole_seconds() * per_mille / 1000);
                let token = self.attest(
                    forged,
                    &c,
                    MGrant {
                        scopes,
                        purposes,
                        accounts,
                        expires_at,
                        unattended,
                    },
                );
                let result = self.fx.broker.approve(&c.id, &token);
                let expected = if c.gone {
                    Outcome::Unknown
                } else if !c.awaiting(now) {
                    Outcome::Lifecycle
                } else if forged || expires_at <= now || expires_at > self.model.latest_expiry(&c) {
                    Outcome::Attestation
                } else {
                    Outcome::Ok
                };
                prop_assert_eq!(outcome(&result), expected, "approve {:?} of {:?}", op, c);
                hit(match expected {
                    Outcome::Ok => "approved",
                    Outcome::Attestation => "approval refused (attestation)",
                    _ => "approval refused (lifecycle)",
                });
                if expected == Outcome::Ok {
                    self.model.consents[consent].state = MState::Authorised(MGrant {
                        scopes,
                        purposes,
                        accounts,
                        expires_at,
                        unattended,
                    });
                }
            }
            Op::Reauthorise {
                consent,
                per_mille,
                forged,
            } => {
                let Some(c) = self.model.consents.get(consent).cloned() else {
                    return Ok(());
                };
                let current = match c.state {
                    MState::Authorised(g) | MState::Revoked(g, _) => g,
                    _ => MGrant {
                        scopes: c.scopes,
                        purposes: c.purposes,
                        accounts: c.accounts.unwrap_or(0b001),
                        expires_at: now,
                        unattended: DEFAULT_UNATTENDED_DAILY_LIMIT,
                    },
                };
                let expires_at =
                    now + Duration::seconds(c.duration.whole_seconds() * per_mille / 1000);
                let token = self.attest(
                    forged,
                    &c,
                    MGrant {
                        scopes: current.scopes,
                        purposes: current.purposes,
                        accounts: current.accounts,
                        expires_at,
                        unattended: current.unattended,
                    },
                );
                let result = self.fx.broker.reauthorise(&c.id, &token);
                let expected = match c.live(now) {
                    None if c.gone => Outcome::Unknown,
                    None => Outcome::Lifecycle,
                    Some(_)
                        if forged
                            || expires_at <= now
                            || expires_at > self.model.latest_expiry(&c) =>
                    {
                        Outcome::Attestation
                    }
                    Some(grant) if expires_at <= grant.expires_at => Outcome::Lifecycle,
                    Some(_) => Outcome::Ok,
                };
                prop_assert_eq!(
                    outcome(&result),
                    expected,
                    "reauthorise {:?} of {:?}",
                    op,
                    c
                );
                hit(if expected == Outcome::Ok {
                    "reauthorised"
                } else {
                    "reauthorisation refused"
                });
                if expected == Outcome::Ok {
                    self.model.consents[consent].state = MState::Authorised(MGrant {
                        expires_at,
                        ..current
                    });
                }
            }
            Op::Reject { consent } => {
                let Some(c) = self.model.consents.get(consent).cloned() else {
                    return Ok(());
                };
                let result = self.fx.broker.reject(&c.id);
                let expected = if c.gone {
                    Outcome::Unknown
                } else if c.awaiting(now) {
                    Outcome::Ok
                } else {
                    Outcome::Lifecycle
                };
                prop_assert_eq!(outcome(&result), expected, "reject {:?} of {:?}", op, c);
                if expected == Outcome::Ok {
                    hit("rejected");
                }
                if expected == Outcome::Ok {
                    self.model.consents[consent].state = MState::Rejected;
                    self.model.consents[consent].ended_at = Some(now);
                }
            }
            Op::Revoke { consent, by } => {
                let Some(c) = self.model.consents.get(consent).cloned() else {
                    return Ok(());
                };
                let by = [Revoker::Subject, Revoker::Holder, Revoker::Platform][by];
                let result = self.fx.revoke(&c.id, by, RevocationReason::SubjectWithdrew);
                let expected = match c.live(now) {
                    Some(_) => Outcome::Ok,
                    None if c.gone => Outcome::Unknown,
                    None => Outcome::Lifecycle,
                };
                prop_assert_eq!(outcome(&result), expected, "revoke {:?} of {:?}", op, c);
                hit(if expected == Outcome::Ok {
                    "revoked"
                } else {
                    "revocation refused"
                });
                if let Some(grant) = c.live(now) {
                    self.model.consents[consent].state = MState::Revoked(grant, by);
                    self.model.consents[consent].ended_at = Some(now);
                }
            }
            Op::Access {
                consent,
                platform,
                scope,
                purpose,
                account,
                unattended,
                ..
            } => self.access(op, consent, platform, scope, purpose, account, unattended)?,
            Op::Advance { step } => {
                self.fx.clock.advance(STEPS[step]);
                self.model.now += STEPS[step];
            }
            Op::Erase { subject } => self.erase(subject)?,
            Op::Retain { keep } => self.retain(keep)?,
        }
        self.check_statuses()
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per index the generated operation picks"
    )]
    fn access(
        &mut self,
        op: &Op,
        consent: usize,
        platform: usize,
        scope: usize,
        purpose: usize,
        account: usize,
        unattended: bool,
    ) -> Result<(), TestCaseError> {
        let now = self.model.now;
        let request = AccessRequest {
            consent: self
                .model
                .consents
                .get(consent)
                .map_or_else(|| id("cns_unknown"), |c| c.id.clone()),
            platform: id(PLATFORMS[platform]),
            scope: match scope {
                3 => RequestedScope::Prohibited(ProhibitedUse::Ads),
                s => Scope::ALL[s].into(),
            },
            purpose: match purpose {
                2 => RequestedPurpose::Prohibited(ProhibitedUse::Ads),
                p => Purpose::ALL[p].into(),
            },
            account: id(ACCOUNTS[account]),
            presence: if unattended {
                Presence::Unattended
            } else {
                Presence::SubjectPresent
            },
        };
        let before = self.audit_len();
        let outcome = self.fx.broker.authorise_access(&request).unwrap();
        self.access_decisions += 1;
        let expected = self.model.access(op);
        let decision = outcome.decision();
        prop_assert_eq!(decision.reasons(), &expected[..], "access {:?}", op);

        // Audited exactly once, as decided.
        prop_assert_eq!(self.audit_len(), before + 1);
        prop_assert_eq!(outcome.audit_seq(), before);
        let entry = self.fx.broker.audit_log().unwrap().pop().unwrap();
        let kind = if outcome.decision().is_permit() {
            AuditKind::AccessPermitted
        } else {
            AuditKind::AccessDenied
        };
        prop_assert_eq!(entry.kind(), kind);
        // The log names an account in a reason by its pseudonym under the subject's key.
        // Only for the consent's own platform: another platform's denial names no subject, and
        // keeps no reason naming an account.
        let subject = entry
            .consent()
            .and_then(|c| self.fx.broker.consent(c).ok())
            .filter(|view| view.consent.request().platform().as_str() == PLATFORMS[platform])
            .map(|view| view.consent.request().subject().clone());
        let logged = match &subject {
            Some(subject) => self.fx.logged_reasons(subject, decision.reasons()),
            None => reasons_without_accounts(decision.reasons()),
        };
        prop_assert_eq!(entry.reasons(), logged.as_slice());

        for reason in decision.reasons() {
            hit(match reason {
                DenyReason::FrequencyExceeded { .. } => "denied: frequency",
                DenyReason::UnattendedNotApproved => "denied: unattended not approved",
                DenyReason::Expired { .. } => "denied: expired",
                DenyReason::Revoked { .. } => "denied: revoked",
                DenyReason::ProhibitedPurpose { .. } | DenyReason::ProhibitedScope { .. } => {
                    "denied: prohibited"
                }
                DenyReason::AccountNotGranted { .. } => "denied: account",
                _ => "denied: other",
            });
        }
        if decision.is_permit() {
            hit(if unattended {
                "unattended permit"
            } else {
                "permit"
            });
        }
        if let AccessOutcome::Permitted(permit) = &outcome {
            // Independently of the model's reasons: a permit needs a live grant that covers the
            // access, and never a prohibited use.
            prop_assert!(purpose != 2 && scope != 3, "permit for a prohibited use");
            let view = self.fx.broker.consent(permit.consent()).unwrap();
            prop_assert_eq!(view.status, ConsentStatus::Authorised);
            let grant = view.consent.grant().unwrap();
            prop_assert!(now < grant.expires_at());
            prop_assert!(grant.scopes().contains(permit.scope()));
            prop_assert!(grant.purposes().contains(permit.purpose()));
            prop_assert!(grant.accounts().contains(permit.account()));
            prop_assert_eq!(view.consent.request().platform(), permit.platform());
            if unattended {
                let day = (consent, now.date());
                *self.model.unattended.entry(day).or_default() += 1;
                let used = self.unattended_permits.entry(day).or_default();
                *used += 1;
                prop_assert!(
                    *used <= self.model.policy.limit,
                    "{} unattended permits in a day, limit {}",
                    used,
                    self.model.policy.limit
                );
            }
        }
        Ok(())
    }

    fn erase(&mut self, subject: usize) -> Result<(), TestCaseError> {
        let now = self.model.now;
        let Some(name) = SUBJECTS.get(subject) else {
            let nobody: SubjectId = id(&format!("nobody-{subject}"));
            let len = self.audit_len();
            prop_assert_eq!(self.fx.broker.erase_subject(&nobody).unwrap(), None);
            prop_assert_eq!(self.audit_len(), len);
            return Ok(());
        };
        let who: SubjectId = id(name);
        let len = self.audit_len();
        let mine: Vec<usize> = (0..self.model.consents.len())
            .filter(|&i| self.model.consents[i].subject == subject && !self.model.consents[i].gone)
            .collect();
        let erased = self.fx.broker.erase_subject(&who).unwrap();
        if !self.model.keyed[subject] && mine.is_empty() {
            prop_assert_eq!(erased, None);
            prop_assert_eq!(self.audit_len(), len);
            return Ok(());
        }
        let erased = erased.expect("a subject with a key is erased");
        hit("erased");
        let ids: Vec<ConsentId> = mine
            .iter()
            .map(|&i| self.model.consents[i].id.clone())
            .collect();
        let live: Vec<ConsentId> = mine
            .iter()
            .filter(|&&i| self.model.consents[i].live(now).is_some())
            .map(|&i| self.model.consents[i].id.clone())
            .collect();
        prop_assert_eq!(&erased.consents, &ids);
        prop_assert_eq!(&erased.revoked, &live);
        // One entry per live consent revoked, then the erasure.
        prop_assert_eq!(self.audit_len(), len + live.len() as u64 + 1);
        prop_assert_eq!(self.fx.broker.pseudonym_of(&who).unwrap(), None);
        prop_assert!(self.fx.broker.consents_of(&who).unwrap().is_empty());
        prop_assert!(self.fx.broker.subject_history(&who).unwrap().is_empty());
        for i in mine {
            self.model.consents[i].gone = true;
        }
        self.model.keyed[subject] = false;
        Ok(())
    }

    fn retain(&mut self, keep: usize) -> Result<(), TestCaseError> {
        let before = self.model.now - KEEP[keep];
        let mut due: Vec<&MConsent> = self
            .model
            .consents
            .iter()
            .filter(|c| !c.gone && c.ends_at() < before)
            .collect();
        due.sort_by(|a, b| a.ends_at().cmp(&b.ends_at()).then_with(|| a.id.cmp(&b.id)));
        let expected: Vec<ConsentId> = due.iter().map(|c| c.id.clone()).collect();
        let len = self.audit_len();
        let retention = self.fx.broker.apply_retention(KEEP[keep]).unwrap();
        prop_assert_eq!(&retention.consents, &expected);
        prop_assert_eq!(self.audit_len(), len + u64::from(!expected.is_empty()));
        if !expected.is_empty() {
            hit("retention deleted");
        }
        for c in self.model.consents.iter_mut() {
            if expected.contains(&c.id) {
                c.gone = true;
            }
        }
        Ok(())
    }

    fn check_statuses(&self) -> Result<(), TestCaseError> {
        for c in &self.model.consents {
            if c.gone {
                prop_assert!(
                    matches!(self.fx.broker.consent(&c.id), Err(Error::UnknownConsent(_))),
                    "{:?} is still stored",
                    c
                );
                continue;
            }
            let view = self.fx.broker.consent(&c.id).unwrap();
            let expected = c.status(self.model.now);
            // The model does not track revocation reasons (every revocation here gives the same).
            prop_assert_eq!(view.status, expected, "status of {:?}", c);
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), TestCaseError> {
        let report = verify_log(&self.fx.broker.store(), None);
        prop_assert!(report.is_ok(), "audit log does not verify: {:?}", report);
        let accesses = self
            .fx
            .broker
            .audit_log()
            .unwrap()
            .iter()
            .filter(|e| {
                matches!(
                    e.kind(),
                    AuditKind::AccessPermitted | AuditKind::AccessDenied
                )
            })
            .count() as u64;
        prop_assert_eq!(accesses, self.access_decisions);
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("CONSENT_BROKER_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// How often each interesting path was taken, over all cases: the test fails if one never was,
/// so that a generator that stops reaching (say) live revocations cannot pass silently.
static COVERAGE: std::sync::LazyLock<std::sync::Mutex<HashMap<&'static str, u64>>> =
    std::sync::LazyLock::new(Default::default);

fn hit(path: &'static str) {
    *COVERAGE.lock().unwrap().entry(path).or_default() += 1;
}

/// The same model on the SQLite store (fewer cases: every commit is an fsync), so that
/// erasure and retention are checked against the model on a durable store too (the conformance
/// suite covers PostgreSQL).
#[test]
fn the_broker_on_sqlite_behaves_as_the_model() {
    let config = ProptestConfig {
        cases: cases() / 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (policy(), prop::collection::vec(op(), 1..40));
    let result = runner.run(&strategy, |(policy, ops)| {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("model.sqlite")).unwrap();
        let mut world = World::new(policy, store);
        for op in &ops {
            world.step(op)?;
        }
        world.finish()
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

#[test]
fn the_broker_behaves_as_the_model() {
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (policy(), prop::collection::vec(op(), 1..60));
    let result = runner.run(&strategy, |(policy, ops)| {
        let mut world = World::new(policy, MemoryStore::new());
        for op in &ops {
            world.step(op)?;
        }
        world.finish()
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let counts = COVERAGE.lock().unwrap();
    eprintln!("model: {} cases, paths taken: {counts:?}", cases());
    for path in [
        "request accepted",
        "request refused",
        "approved",
        "approval refused (attestation)",
        "approval refused (lifecycle)",
        "reauthorised",
        "reauthorisation refused",
        "rejected",
        "revoked",
        "revocation refused",
        "permit",
        "unattended permit",
        "denied: frequency",
        "denied: unattended not approved",
        "denied: expired",
        "denied: revoked",
        "denied: prohibited",
        "denied: account",
        "erased",
        "retention deleted",
    ] {
        assert!(
            counts.get(path).copied().unwrap_or(0) > 0,
            "no case reached {path:?}: {counts:?}"
        );
    }
}

//! Model-based test of the bank's gate: random sequences of attestations, re-authorisations,
//! revocations at the bank and on the platform, policy changes, feeds, clock jumps and
//! presentations, device keys registered and revoked, run against the real bank and against a
//! plain reference model of the bank's rules written from the documented order of `GateRefusal`
//! (not from the gate's code). The platform is fully dishonest: it signs its tokens itself with
//! the broker's key, with whatever claims it likes, so nothing but the bank's own records can
//! stop it. Every presentation's outcome must match the model: the exact refusal, or served,
//! unsealed or sealed to exactly the devices the model names (and opening on them).
//!
//! Cases: 256 by default; `CONSENT_BROKER_MODEL_CASES` sets more (CI runs 2,000).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use consent_broker::dpop::{DpopError, DpopSigner};
use consent_broker::hpke::DeviceSecretKey;
use consent_broker::testing::{GET_BALANCE, START, SeededRandom, TestBank, TestBroker};
use consent_broker::time::{Date, Duration, OffsetDateTime};
use consent_broker::*;
use proptest::prelude::*;
use serde_json::json;

use crate::support::{b64, id, purposes_of, scopes_of};

const ACCOUNTS: [&str; 3] = ["acc-current", "acc-savings", "acc-bob"];
/// `acc-bob` belongs to bob at the bank.
const OWNERS: [&str; 3] = ["alice", "alice", "bob"];
const STEPS: [Duration; 5] = [
    Duration::seconds(20),
    Duration::minutes(3),
    Duration::minutes(6),
    Duration::hours(11),
    Duration::days(40),
];
const STALENESS: Duration = Duration::minutes(5);
const CEILING: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Attest {
        scopes: u8,
        purposes: u8,
        accounts: u8,
        limit: u32,
        days: i64,
        /// Which of the subject's device keys the approval names: bit `i` is the `i`-th most
        /// recently registered.
        devices: u8,
        /// Uses approved unsealed: bit `2 * scope + purpose` (see [`uses_of`]).
        plain: u8,
    },
    RegisterDevice,
    RevokeDevice {
        /// The `which`-th most recently registered key.
        which: usize,
    },
    Reattest {
        which: usize,
    },
    RevokeAtBank {
        which: usize,
        by_subject: bool,
    },
    RevokeOnPlatform {
        which: usize,
    },
    Feed,
    Policy {
        enabled: u8,
        limit: u32,
        plain: u8,
    },
    Advance {
        step: usize,
    },
    Present(Presentation),
}

#[derive(Debug, Clone)]
struct Presentation {
    /// Which attestation the token names, the most recent first (modulo how many of the four
    /// most recent there are); 4 and 5 name one the bank never signed.
    which: usize,
    /// 0 honest, 1 another subject, 2 another platform, 3 another consent.
    lie: u8,
    scope: usize,
    purpose: usize,
    account: usize,
    unattended: bool,
    /// 0 a good proof, 1 another key's, 2 an old one, 3 none bound (no `cnf`).
    proof: u8,
    /// Present the last served request again (same token and proof), or the last served token
    /// with a fresh proof.
    again: u8,
}

fn presentation() -> impl Strategy<Value = Presentation> {
    (
        prop_oneof![6 => 0..4usize, 1 => 4..6usize],
        prop_oneof![8 => Just(0u8), 1 => 1..4u8],
        prop_oneof![4 => Just(0usize), 1 => 0..3usize],
        prop_oneof![4 => Just(0usize), 1 => 0..2usize],
        0..3usize,
        any::<bool>(),
        prop_oneof![8 => Just(0u8), 1 => 1..4u8],
        prop_oneof![8 => Just(0u8), 1 => 1..3u8],
    )
        .prop_map(
            |(which, lie, scope, purpose, account, unattended, proof, again)| Presentation {
                which,
                lie,
                scope,
                purpose,
                account,
                unattended,
                proof,
                again,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (
            (1..4u8, 1..4u8, 1..8u8, 0..4u32, 1..60i64),
            prop_oneof![6 => Just(1u8), 1 => 0..4u8],
            prop_oneof![1 => Just(0u8), 1 => 0..64u8],
        )
            .prop_map(|((scopes, purposes, accounts, limit, days), devices, plain)| {
                Op::Attest { scopes, purposes, accounts, limit, days, devices, plain }
            }),
        1 => Just(Op::RegisterDevice),
        2 => (0..2usize).prop_map(|which| Op::RevokeDevice { which }),
        1 => (0..4usize).prop_map(|which| Op::Reattest { which }),
        1 => (0..4usize, any::<bool>()).prop_map(|(which, by_subject)| Op::RevokeAtBank { which, by_subject }),
        1 => (0..4usize).prop_map(|which| Op::RevokeOnPlatform { which }),
        1 => Just(Op::Feed),
        1 => (1..8u8, 0..5u32, prop_oneof![1 => Just(0u8), 1 => Just(63u8), 1 => 0..64u8])
            .prop_map(|(enabled, limit, plain)| Op::Policy { enabled, limit, plain }),
        1 => (0..STEPS.len()).prop_map(|step| Op::Advance { step }),
        10 => presentation().prop_map(Op::Present),
    ]
}

fn accounts_of(mask: u8) -> AccountSet {
    ACCOUNTS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, a)| id::<AccountId>(a))
        .collect()
}

/// An attestation as the model keeps it.
#[derive(Debug, Clone)]
struct MAtt {
    id: String,
    consent: String,
    scopes: u8,
    purposes: u8,
    accounts: u8,
    limit: u32,
    expires_at: OffsetDateTime,
    revoked: Option<Revoker>,
    superseded: bool,
    /// The device keys named (thumbprints).
    devices: Vec<String>,
    plain: u8,
}

/// A device key as the model keeps it.
#[derive(Debug, Clone)]
struct MKey {
    thumbprint: String,
    live: bool,
}

/// How the model expects a served access delivered: unsealed (`None`), or sealed to these
/// thumbprints, in the order the keys were registered.
type Delivered = Option<Vec<String>>;

/// The uses (scope, purpose) of a mask: bit `2 * scope + purpose`, indices into `Scope::ALL` and
/// `Purpose::ALL`.
fn uses_of(mask: u8) -> PlaintextUses {
    Scope::ALL
        .iter()
        .enumerate()
        .flat_map(|(i, scope)| {
            Purpose::ALL
                .iter()
                .enumerate()
                .filter(move |(j, _)| mask & (1 << (2 * i + j)) != 0)
                .map(move |(_, purpose)| (*scope, *purpose))
        })
        .collect()
}

/// Every use of `scopes` × `purposes` (masks over `Scope::ALL`, `Purpose::ALL`), as a use mask.
fn cross(scopes: u8, purposes: u8) -> u8 {
    let mut uses = 0;
    for i in 0..Scope::ALL.len() {
        for j in 0..Purpose::ALL.len() {
            if scopes & (1 << i) != 0 && purposes & (1 << j) != 0 {
                uses |= 1 << (2 * i + j);
            }
        }
    }
    uses
}

/// The reference model: the bank's rules, plainly.
struct Model {
    atts: Vec<MAtt>,
    keys: Vec<MKey>,
    policy_scopes: u8,
    policy_limit: u32,
    policy_plain: u8,
    platform_revoked: HashSet<String>,
    feed_at: OffsetDateTime,
    served: HashMap<(String, Date), (u32, u32)>,
    now: OffsetDateTime,
}

impl Model {
    fn decide(
        &self,
        p: &Presentation,
        att: Option<&MAtt>,
        proof_ok: Option<GateRefusal>,
    ) -> Result<Delivered, GateRefusal> {
        if let Some(refusal) = proof_ok {
            return Err(refusal);
        }
        let Some(a) = att else {
            return Err(GateRefusal::UnknownAttestation);
        };
        match p.lie {
            1 => return Err(mismatch("sub")),
            2 => return Err(mismatch("client_id")),
            3 => return Err(mismatch("cid")),
            _ => {}
        }
        if a.superseded {
            return Err(GateRefusal::Superseded);
        }
        let scope = Scope::ALL[p.scope];
        if a.scopes & (1 << p.scope) == 0 {
            return Err(GateRefusal::ScopeNotAttested(scope));
        }
        if a.purposes & (1 << p.purpose) == 0 {
            return Err(GateRefusal::PurposeNotAttested(Purpose::ALL[p.purpose]));
        }
        if a.accounts & (1 << p.account) == 0 {
            return Err(GateRefusal::AccountNotAttested);
        }
        if self.now >= a.expires_at {
            return Err(GateRefusal::Expired { at: a.expires_at });
        }
        if let Some(by) = a.revoked {
            return Err(GateRefusal::RevokedAtBank { by });
        }
        if self.platform_revoked.contains(&a.consent) {
            return Err(GateRefusal::RevokedAtPlatform);
        }
        if self.feed_at + STALENESS < self.now {
            return Err(GateRefusal::RevocationFeedStale {
                generated_at: Some(self.feed_at),
            });
        }
        if self.policy_scopes & (1 << p.scope) == 0 {
            return Err(GateRefusal::PolicyForbidsScope(scope));
        }
        if OWNERS[p.account] != "alice" {
            return Err(GateRefusal::AccountNotSubjects);
        }
        let (unattended, present) = self
            .served
            .get(&(a.id.clone(), self.now.date()))
            .copied()
            .unwrap_or_default();
        if p.unattended {
            if a.limit == 0 {
                return Err(GateRefusal::UnattendedNotApproved);
            }
            let limit = a.limit.min(self.policy_limit);
            if unattended >= limit {
                return Err(GateRefusal::UnattendedLimitReached { limit });
            }
        } else if present >= CEILING {
            return Err(GateRefusal::PresentCeilingReached { ceiling: CEILING });
        }
        let bit = 1 << (2 * p.scope + p.purpose);
        if self.policy_plain & a.plain & bit != 0 {
            return Ok(None);
        }
        let to: Vec<String> = self
            .keys
            .iter()
            .filter(|k| k.live && a.devices.contains(&k.thumbprint))
            .map(|k| k.thumbprint.clone())
            .collect();
        if to.is_empty() {
            return Err(GateRefusal::NoDeviceToSealTo);
        }
        Ok(Some(to))
    }

    /// What attesting these terms should give: the bank's policy first, then the devices.
    fn attest_outcome(
        &self,
        scopes: u8,
        limit: u32,
        purposes: u8,
        devices: &[String],
        plain: u8,
    ) -> Result<(), &'static str> {
        if scopes & !self.policy_scopes != 0
            || limit > self.policy_limit
            || plain & !self.policy_plain != 0
        {
            return Err("outside policy");
        }
        if devices
            .iter()
            .any(|d| !self.keys.iter().any(|k| k.live && k.thumbprint == *d))
        {
            return Err("unknown device");
        }
        if devices.is_empty() && cross(scopes, purposes) & !plain != 0 {
            return Err("no device");
        }
        Ok(())
    }

    /// The thumbprints of the keys `mask` picks, bit `i` the `i`-th most recently registered.
    fn pick(&self, mask: u8) -> Vec<String> {
        self.keys
            .iter()
            .rev()
            .enumerate()
            .filter(|(i, _)| *i < 8 && mask & (1 << i) != 0)
            .map(|(_, k)| k.thumbprint.clone())
            .collect()
    }
}

fn attest_error(error: &BankError) -> &'static str {
    match error {
        BankError::OutsidePolicy(_) => "outside policy",
        BankError::UnknownDevice(_) => "unknown device",
        BankError::NoDevice => "no device",
        _ => "other",
    }
}

fn mismatch(claim: &str) -> GateRefusal {
    GateRefusal::AttestationMismatch {
        claim: claim.to_owned(),
    }
}

/// The real bank beside a test broker (whose keys the dishonest platform holds).
struct World {
    kit: TestBroker,
    bank: TestBank,
    model: Model,
    broker_key: SigningKey,
    thief: DpopSigner,
    rng: SystemRandom,
    feed_position: u64,
    /// The log the model's feeds describe: the broker's real log up to the bank's first feed
    /// position, then one made-up entry per feed.
    feed_base: u64,
    consents: u64,
    tokens: u64,
    /// The last request served: its token and proof, and its token's `jti`.
    last_served: Option<(String, String)>,
    /// The subject's device keys, as registered (the model's `keys` in the same order).
    device_keys: Vec<DeviceSecretKey>,
}

impl World {
    fn new() -> Self {
        let kit = TestBroker::memory();
        let bank = TestBank::with_settings(
            &kit,
            MemoryStore::new(),
            GateSettings {
                feed_staleness: STALENESS,
                present_daily_ceiling: CEILING,
                ..GateSettings::default()
            },
        );
        let feed_position = bank.bank.ledger().feed_state().unwrap().unwrap().position;
        // The bank starts out allowing either purpose unsealed (where the subject agrees too).
        let mut policy = bank.bank.policy().unwrap().unwrap().policy;
        policy.plaintext = uses_of(0b11_1111);
        bank.bank.set_policy(policy.clone()).unwrap();
        let device_keys = vec![DeviceSecretKey::from_bytes(bank.device.to_bytes())];
        let model = Model {
            atts: Vec::new(),
            keys: vec![MKey {
                thumbprint: bank.device.public_key().thumbprint(),
                live: true,
            }],
            policy_scopes: mask(policy.enabled_scopes),
            policy_limit: policy.unattended_daily_limit,
            policy_plain: 0b11_1111,
            platform_revoked: HashSet::new(),
            feed_at: START,
            served: HashMap::new(),
            now: START,
        };
        Self {
            broker_key: SigningKey::from_pkcs8_der(
                BrokerKeys::ephemeral(&SeededRandom::new(1))
                    .unwrap()
                    .token()
                    .to_pkcs8_der(),
            )
            .unwrap(),
            kit,
            bank,
            model,
            thief: DpopSigner::new(SigningKey::from_seed(&[8; 32]).unwrap()).unwrap(),
            rng: SystemRandom::new(),
            feed_position,
            feed_base: feed_position,
            consents: 0,
            tokens: 0,
            last_served: None,
            device_keys,
        }
    }

    fn now(&self) -> OffsetDateTime {
        self.kit.broker.now()
    }

    /// A JWS signed with the broker's token key, as the platform (which holds it) can make.
    fn signed(&self, typ: &str, claims: &serde_json::Value) -> String {
        let header = json!({ "alg": "EdDSA", "typ": typ, "kid": self.broker_key.kid() });
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(
            self.broker_key.to_pkcs8_der(),
        )
        .unwrap();
        format!("{input}.{}", b64(pair.sign(input.as_bytes())))
    }

    fn feed(&mut self, revoked: Option<&str>) {
        let now = self.now();
        let after = self.feed_position;
        let position = after + 1;
        let entries: Vec<_> = revoked
            .iter()
            .map(|consent| json!({ "consent": consent, "seq": after, "at": now.unix_timestamp(), "by": "platform" }))
            .collect();
        let log = crate::support::ForgedLog {
            real: StoreNodes(&self.kit.broker.store()),
            real_len: self.feed_base,
        };
        let root = merkle::root(position, &log).unwrap();
        let proof = merkle::consistency_proof(after, position, &log).unwrap();
        let feed = self.signed(
            "revocation-feed+jwt",
            &json!({
                "iss": "broker", "aud": "bank", "iat": now.unix_timestamp(),
                "after": after, "position": position, "revoked": entries,
                "root": encode_hashes(&[root]).concat(), "consistency": encode_hashes(&proof),
            }),
        );
        self.bank.bank.apply_revocation_feed(&feed).unwrap();
        self.feed_position = position;
        self.model.feed_at = now;
        if let Some(consent) = revoked {
            self.model.platform_revoked.insert(consent.to_owned());
        }
    }

    #[allow(clippy::too_many_arguments, reason = "the terms of one approval")]
    fn attest(
        &mut self,
        scopes: u8,
        purposes: u8,
        accounts: u8,
        limit: u32,
        days: i64,
        devices: Vec<String>,
        plain: u8,
        consent: Option<String>,
    ) -> Result<String, BankError> {
        let consent = consent.unwrap_or_else(|| {
            self.consents += 1;
            format!("cns_m{}", self.consents)
        });
        let statement = ApprovalStatement {
            consent: id(&consent),
            subject: self.bank.customer.clone(),
            platform: id("chat"),
            scopes: scopes_of(scopes),
            purposes: purposes_of(purposes),
            accounts: accounts_of(accounts),
            consent_expires_at: self.now() + Duration::days(days),
            unattended_daily_limit: limit,
            devices: devices.clone(),
            plaintext: uses_of(plain),
        };
        let signed = self.bank.bank.attest(&statement)?;
        let attestation: serde_json::Value =
            serde_json::from_slice(&crate::support::unb64(signed.split('.').nth(1).unwrap()))
                .unwrap();
        let jti = attestation["jti"].as_str().unwrap().to_owned();
        for old in self.model.atts.iter_mut().filter(|a| a.consent == consent) {
            old.superseded = true;
        }
        self.model.atts.push(MAtt {
            id: jti.clone(),
            consent,
            scopes,
            purposes,
            accounts,
            limit,
            expires_at: statement.consent_expires_at,
            revoked: None,
            superseded: false,
            devices,
            plain,
        });
        Ok(jti)
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.model.now = self.now();
        match op {
            Op::Attest {
                scopes,
                purposes,
                accounts,
                limit,
                days,
                devices,
                plain,
            } => {
                let devices = self.model.pick(*devices);
                let expected = self
                    .model
                    .attest_outcome(*scopes, *limit, *purposes, &devices, *plain);
                let result = self.attest(
                    *scopes, *purposes, *accounts, *limit, *days, devices, *plain, None,
                );
                prop_assert_eq!(
                    result.as_ref().map(|_| ()).map_err(attest_error),
                    expected,
                    "attest {:?}: {:?}",
                    op,
                    result
                );
                hit(match expected {
                    Ok(()) => "attested",
                    Err("unknown device") => "attestation names a revoked device",
                    Err("no device") => "attestation names no device",
                    Err(_) => "attestation refused",
                });
            }
            Op::Reattest { which } => {
                let Some(a) = self.model.atts.iter().rev().nth(*which).cloned() else {
                    return Ok(());
                };
                if a.superseded
                    || a.revoked.is_some()
                    || self
                        .model
                        .attest_outcome(a.scopes, a.limit, a.purposes, &a.devices, a.plain)
                        .is_err()
                {
                    return Ok(());
                }
                self.attest(
                    a.scopes,
                    a.purposes,
                    a.accounts,
                    a.limit,
                    30,
                    a.devices,
                    a.plain,
                    Some(a.consent),
                )
                .unwrap();
                hit("re-attested");
            }
            Op::RegisterDevice => {
                let key = DeviceSecretKey::derive(
                    format!("device {}", self.device_keys.len()).as_bytes(),
                );
                self.bank
                    .bank
                    .register_device(&self.bank.customer, key.public_key())
                    .unwrap();
                self.model.keys.push(MKey {
                    thumbprint: key.public_key().thumbprint(),
                    live: true,
                });
                self.device_keys.push(key);
                hit("device registered");
            }
            Op::RevokeDevice { which } => {
                let Some(index) = self.model.keys.len().checked_sub(which + 1) else {
                    return Ok(());
                };
                let key = self.model.keys[index].clone();
                let result = self
                    .bank
                    .bank
                    .revoke_device(&self.bank.customer, &key.thumbprint);
                prop_assert_eq!(result.is_ok(), key.live, "revoke device: {:?}", result);
                if key.live {
                    self.model.keys[index].live = false;
                    hit("device revoked");
                } else {
                    prop_assert!(matches!(result, Err(BankError::UnknownDevice(_))));
                }
            }
            Op::RevokeAtBank { which, by_subject } => {
                let Some(a) = self.model.atts.iter().rev().nth(*which).cloned() else {
                    return Ok(());
                };
                let by = if *by_subject {
                    Revoker::Subject
                } else {
                    Revoker::Holder
                };
                let live =
                    self.model.atts.iter().rposition(|m| {
                        m.consent == a.consent && !m.superseded && m.revoked.is_none()
                    });
                let result = self.bank.bank.revoke(
                    &self.bank.customer,
                    &id(&a.consent),
                    by,
                    RevocationReason::SuspectedMisuse,
                );
                prop_assert_eq!(
                    result.is_ok(),
                    live.is_some(),
                    "revoke {:?}: {:?}",
                    op,
                    result
                );
                if let Some(index) = live {
                    self.model.atts[index].revoked = Some(by);
                    hit("revoked at the bank");
                }
            }
            Op::RevokeOnPlatform { which } => {
                let Some(a) = self.model.atts.iter().rev().nth(*which).cloned() else {
                    return Ok(());
                };
                self.feed(Some(&a.consent));
                hit("revoked on the platform");
            }
            Op::Feed => self.feed(None),
            Op::Policy {
                enabled,
                limit,
                plain,
            } => {
                let policy = HolderPolicy {
                    enabled_scopes: scopes_of(*enabled),
                    unattended_daily_limit: *limit,
                    plaintext: uses_of(*plain),
                    ..HolderPolicy::default()
                };
                self.bank.bank.set_policy(policy).unwrap();
                self.model.policy_scopes = *enabled;
                self.model.policy_limit = *limit;
                self.model.policy_plain = *plain;
            }
            Op::Advance { step } => self.kit.clock.advance(STEPS[*step]),
            Op::Present(p) => self.present(p)?,
        }
        Ok(())
    }

    fn present(&mut self, p: &Presentation) -> Result<(), TestCaseError> {
        let now = self.now();
        // Again: the very request served last (its proof is then a replay), or its token with a
        // fresh proof (the token is then a replay).
        if p.again > 0 {
            let Some((token, proof)) = self.last_served.clone() else {
                return Ok(());
            };
            let proof = if p.again == 1 {
                proof
            } else {
                self.kit
                    .sender
                    .proof(&GET_BALANCE, &token, now, &self.rng)
                    .unwrap()
            };
            let request = GateRequest {
                token: &token,
                proof: &proof,
                http: GET_BALANCE,
            };
            let outcome = self.bank.bank.check(&request, &self.bank.accounts);
            let refusal = match outcome {
                Err(GateError::Refused { refusal, .. }) => refusal,
                other => {
                    return Err(TestCaseError::fail(format!(
                        "a replay was not refused: {other:?}"
                    )));
                }
            };
            // An expired token fails before its proof is looked at.
            let expected_replay = if p.again == 1 {
                GateRefusal::Proof(DpopError::Replayed)
            } else {
                GateRefusal::TokenReplayed
            };
            prop_assert!(
                refusal == expected_replay
                    || matches!(
                        refusal,
                        GateRefusal::Token(TokenError::Expired { .. })
                            | GateRefusal::Proof(DpopError::TooOld)
                    ),
                "replay refused as {:?}",
                refusal
            );
            hit("replay refused");
            return Ok(());
        }
        // Among the four most recent (fewer when fewer were signed).
        let att = if p.which < 4 && !self.model.atts.is_empty() {
            let recent = self.model.atts.len().min(4);
            self.model.atts.iter().rev().nth(p.which % recent).cloned()
        } else {
            None
        };
        let att_id = att
            .as_ref()
            .map_or_else(|| "never-attested".to_owned(), |a| a.id.clone());
        let consent = match (&att, p.lie) {
            (_, 3) | (None, _) => "cns_other".to_owned(),
            (Some(a), _) => a.consent.clone(),
        };
        self.tokens += 1;
        let mut claims = json!({
            "iss": "broker", "aud": "bank",
            "sub": if p.lie == 1 { "bob" } else { "alice" },
            "client_id": if p.lie == 2 { "other-chat" } else { "chat" },
            "cid": consent, "att": att_id,
            "scope": Scope::ALL[p.scope].to_string(),
            "purpose": Purpose::ALL[p.purpose].to_string(),
            "acct": ACCOUNTS[p.account],
            "presence": if p.unattended { "unattended" } else { "subject_present" },
            "cnf": { "jkt": self.kit.sender.thumbprint() },
            "iat": now.unix_timestamp(), "nbf": now.unix_timestamp(),
            "exp": now.unix_timestamp() + 300,
            "jti": format!("model-token-{:08}", self.tokens),
        });
        if p.proof == 3 {
            claims.as_object_mut().unwrap().remove("cnf");
        }
        let token = self.signed("at+jwt", &claims);
        let proof = match p.proof {
            1 => self
                .thief
                .proof(&GET_BALANCE, &token, now, &self.rng)
                .unwrap(),
            2 => self
                .kit
                .sender
                .proof(&GET_BALANCE, &token, now - Duration::minutes(2), &self.rng)
                .unwrap(),
            _ => self
                .kit
                .sender
                .proof(&GET_BALANCE, &token, now, &self.rng)
                .unwrap(),
        };
        let proof_refusal = match p.proof {
            1 => Some(GateRefusal::Proof(DpopError::KeyMismatch)),
            2 => Some(GateRefusal::Proof(DpopError::TooOld)),
            3 => Some(GateRefusal::NotSenderConstrained),
            _ => None,
        };
        let expected = self.model.decide(p, att.as_ref(), proof_refusal);
        let request = GateRequest {
            token: &token,
            proof: &proof,
            http: GET_BALANCE,
        };
        let outcome = self.bank.bank.serve(&request, &self.bank.accounts);
        match (&expected, outcome) {
            (Ok(delivered), Ok(Ok(response))) => {
                let a = att.unwrap();
                let data = match (delivered, response) {
                    (None, Response::Plaintext(data)) => {
                        hit("served unsealed");
                        data
                    }
                    (Some(to), Response::Sealed(sealed)) => {
                        let sealed_to: Vec<&str> =
                            sealed.envelopes.iter().map(|e| e.device.as_str()).collect();
                        prop_assert_eq!(&sealed_to, to, "sealed to");
                        // It opens on each named device, and on no other registered one.
                        let mut opened = None;
                        for key in &self.device_keys {
                            let result = open_response(&sealed, key);
                            if to.contains(&key.public_key().thumbprint()) {
                                opened = Some(result.unwrap());
                            } else {
                                prop_assert_eq!(result, Err(OpenError::NotForThisDevice));
                            }
                        }
                        // The context names the journal entry that recorded the access and where
                        // its data went.
                        let seq = sealed.context.sequence;
                        let entry = self
                            .bank
                            .bank
                            .journal()
                            .audit_entries(seq..seq + 1)
                            .unwrap()
                            .pop()
                            .unwrap();
                        match entry.event {
                            AuditEvent::AccessServed {
                                token_id, delivery, ..
                            } => {
                                prop_assert_eq!(&token_id, &sealed.context.token_id);
                                // The journal names the devices by their pseudonyms.
                                prop_assert_eq!(
                                    delivery,
                                    Some(Delivery::Sealed {
                                        devices: to
                                            .iter()
                                            .map(|d| self.bank.journalled_device(&id("chat"), d))
                                            .collect()
                                    })
                                );
                            }
                            other => {
                                return Err(TestCaseError::fail(format!(
                                    "entry {seq} is not the access: {other:?}"
                                )));
                            }
                        }
                        opened.unwrap()
                    }
                    (delivered, response) => {
                        return Err(TestCaseError::fail(format!(
                            "model delivers {delivered:?}, gate {response:?}, for {p:?}"
                        )));
                    }
                };
                prop_assert!(data.is_for(Scope::ALL[p.scope], &id(ACCOUNTS[p.account])));
                let counts = self.model.served.entry((a.id, now.date())).or_default();
                if p.unattended {
                    counts.0 += 1;
                } else {
                    counts.1 += 1;
                }
                self.last_served = Some((token, proof));
                hit(if p.unattended {
                    "served unattended"
                } else {
                    "served"
                });
            }
            (Err(expected), Err(GateError::Refused { refusal, .. })) => {
                prop_assert_eq!(&refusal, expected, "presentation {:?}", p);
                hit(refusal_path(&refusal));
            }
            (expected, outcome) => {
                return Err(TestCaseError::fail(format!(
                    "model {expected:?}, gate {outcome:?}, for {p:?}"
                )));
            }
        }
        Ok(())
    }
}

fn mask(scopes: ScopeSet) -> u8 {
    Scope::ALL
        .iter()
        .enumerate()
        .filter(|(_, s)| scopes.contains(**s))
        .fold(0, |mask, (i, _)| mask | 1 << i)
}

fn refusal_path(refusal: &GateRefusal) -> &'static str {
    match refusal {
        GateRefusal::UnknownAttestation => "unknown attestation",
        GateRefusal::AttestationMismatch { .. } => "mismatch",
        GateRefusal::Superseded => "superseded",
        GateRefusal::ScopeNotAttested(_)
        | GateRefusal::PurposeNotAttested(_)
        | GateRefusal::AccountNotAttested => "outside the terms",
        GateRefusal::Expired { .. } => "expired",
        GateRefusal::RevokedAtBank { .. } => "refused: revoked at the bank",
        GateRefusal::RevokedAtPlatform => "refused: revoked on the platform",
        GateRefusal::RevocationFeedStale { .. } => "feed stale",
        GateRefusal::PolicyForbidsScope(_) => "policy",
        GateRefusal::AccountNotSubjects => "not the subject's account",
        GateRefusal::UnattendedNotApproved | GateRefusal::UnattendedLimitReached { .. } => {
            "unattended limit"
        }
        GateRefusal::PresentCeilingReached { .. } => "present ceiling",
        GateRefusal::NoDeviceToSealTo => "no device to seal to",
        _ => "proof or token",
    }
}

static COVERAGE: Mutex<Option<HashMap<&'static str, u32>>> = Mutex::new(None);

fn hit(path: &'static str) {
    let mut coverage = COVERAGE.lock().unwrap();
    *coverage
        .get_or_insert_with(HashMap::new)
        .entry(path)
        .or_default() += 1;
}

fn cases() -> u32 {
    std::env::var("CONSENT_BROKER_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(256, |cases: u32| cases.clamp(1, 2_000))
}

#[test]
fn the_gate_decides_as_the_model_of_the_banks_rules() {
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..50), |ops| {
        let mut world = World::new();
        for op in &ops {
            world.step(op)?;
        }
        // The bank's journal verifies, every node recomputed.
        consent_broker::verify_log(world.bank.bank.journal(), None)
            .map_err(|e| TestCaseError::fail(format!("journal: {e}")))?;
        Ok(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    let coverage = COVERAGE.lock().unwrap().clone().unwrap_or_default();
    eprintln!("gate model: {} cases, paths taken: {coverage:?}", cases());
    for path in [
        "attested",
        "attestation refused",
        "re-attested",
        "revoked at the bank",
        "revoked on the platform",
        "served",
        "served unattended",
        "replay refused",
        "unknown attestation",
        "mismatch",
        "superseded",
        "outside the terms",
        "expired",
        "refused: revoked at the bank",
        "refused: revoked on the platform",
        "feed stale",
        "policy",
        "not the subject's account",
        "unattended limit",
        "proof or token",
        "attestation names a revoked device",
        "attestation names no device",
        "device registered",
        "device revoked",
        "served unsealed",
        "no device to seal to",
    ] {
        assert!(
            coverage.get(path).copied().unwrap_or(0) > 0,
            "no case reached {path:?}: {coverage:?}"
        );
    }
}

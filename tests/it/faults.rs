//! Fault injection: a store that fails, on purpose, at every point a real one can.
//!
//! The test kit's `FaultStore` wraps any [`Store`] and forwards to it, except that, driven by a
//! seeded generator (or a script), it fails:
//!
//! - a commit **before** the write: an error, the inner store never sees the commit;
//! - a commit **during** the write: the commit goes to the inner store with one more change that
//!   must fail (an update of a holder that does not exist), after every real change was applied,
//!   so the inner store has to roll all of them back;
//! - a commit **after** the write: the inner store commits, then the caller gets an error. The
//!   outcome is recorded but the caller cannot know it (the ambiguous case);
//! - a **read**: an error instead of the answer.
//!
//! The broker is then driven through random operations with faults on, and each operation is
//! checked against what the inner store shows: an answer returned is recorded (every permit,
//! denial and token has its entry); a call that failed recorded nothing, except exactly what an
//! after-write fault let through; no permit comes out of a commit that failed (fail closed);
//! usage moves only with recorded unattended permits; an attestation whose commit failed is still
//! usable. After the faults stop, the log verifies and the broker works again. Scripted tests
//! put each kind of commit fault on a permit's and a token's commit, one at a time.
//!
//! `CONSENT_BROKER_FAULT_ROUNDS` sets the number of seeds per store (default 6, 250 operations
//! each); `CONSENT_BROKER_FAULT_SEED` runs that one seed only.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::support::*;
use consent_broker::checkpoint::NoteVerifier;
use consent_broker::*;
use time::{Date, Duration};

const OPS_PER_SEED: usize = 250;
const DAILY_LIMIT: u32 = 3;
/// Per mille of commits failed before, during and after the write; per mille of reads failed.
const BEFORE: u64 = 60;
const DURING: u64 = 60;
const AFTER: u64 = 60;
const READ: u64 = 15;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {value:?}"))
    })
}

/// xorshift64*: tiny and seeded.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn is_injected(error: &Error) -> bool {
    FaultStore::<MemoryStore>::is_injected(error)
}

type Faulty<S> = Arc<FaultStore<S>>;

/// The fixture over a fault store, and the fault store itself (the broker only lends it out
/// read-only).
fn fixture<S: Store>(inner: S, seed: u64) -> (Fixture<Faulty<S>>, Faulty<S>) {
    let policy = HolderPolicy {
        unattended_daily_limit: DAILY_LIMIT,
        ..HolderPolicy::default()
    };
    let store = Arc::new(FaultStore::new(inner, seed));
    store.rates(FaultRates {
        before: BEFORE,
        during: DURING,
        after: AFTER,
        read: READ,
    });
    (Fixture::with_policy(Arc::clone(&store), policy), store)
}

/// A valid attestation of everything `request` asked for, until 30 days and `extra` seconds
/// from now (re-authorisations pass a growing `extra`, so that they extend).
fn attestation<S: Store>(fx: &Fixture<S>, request: &ConsentRequest, extra: i64) -> String {
    let statement = ApprovalStatement {
        consent_expires_at: fx.broker.now() + Duration::days(30) + Duration::seconds(extra),
        ..fx.full_statement(request)
    };
    fx.attest(&statement)
}

/// Whether `entry` records a decision on exactly `request`.
/// Whether `entry` records a decision on `request`, reading the subject's key from `state` (a
/// store read without injected faults).
fn records(state: &impl StateRead, entry: &AuditEntry, request: &AccessRequest) -> bool {
    // The log names the account by its pseudonym under the subject's key; a denial before any
    // consent was read names none.
    let expected = state
        .consent(&request.consent)
        .unwrap()
        .and_then(|consent| state.subject_key(consent.request().subject()).unwrap())
        .map(|key| key.account(&request.account));
    match &entry.event {
        AuditEvent::AccessPermitted {
            consent,
            scope,
            purpose,
            account,
            presence,
            ..
        } => {
            consent == &request.consent
                && RequestedScope::from(*scope) == request.scope
                && RequestedPurpose::from(*purpose) == request.purpose
                && Some(account) == expected.as_ref()
                && presence == &request.presence
        }
        AuditEvent::AccessDenied {
            consent,
            scope,
            purpose,
            account,
            presence,
            ..
        } => {
            consent == &request.consent
                && scope == &request.scope
                && purpose == &request.purpose
                && (account.is_none() || account.as_ref() == expected.as_ref())
                && presence == &request.presence
        }
        _ => false,
    }
}

fn is_unattended_permit(entry: &AuditEntry) -> bool {
    matches!(
        entry.event,
        AuditEvent::AccessPermitted {
            presence: Presence::Unattended,
            ..
        }
    )
}

fn unattended_permits(entries: &[AuditEntry]) -> u32 {
    entries.iter().filter(|e| is_unattended_permit(e)).count() as u32
}

fn token_id(entry: &AuditEntry) -> Option<&String> {
    match &entry.event {
        AuditEvent::TokenIssued { token_id, .. } => Some(token_id),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct SeedReport {
    failures: Vec<String>,
    /// After-write faults on a commit carrying a permit / a token: the caller saw an error, the
    /// log has the record.
    after_on_permit: u64,
    after_on_token: u64,
    /// Permits / tokens in the log of calls that returned an error, as the operations saw them.
    ambiguous_permits: u64,
    ambiguous_tokens: u64,
    /// Permits recorded by `authorise_with_token` calls that then failed for another reason than
    /// an after-write fault on that permit's commit.
    orphan_permits: u64,
    /// Attestations retried (and accepted) after their commit failed.
    retried_attestations: u64,
    ops: BTreeMap<&'static str, u64>,
    totals: BTreeMap<Fault, u64>,
}

enum Op {
    Access(AccessRequest),
    Token(AccessRequest),
    Request,
    Approve(ConsentRequest),
    Reauthorise(ConsentRequest),
    Revoke(ConsentId),
    Checkpoint,
}

fn run_seed<S: Store>(inner: S, seed: u64) -> SeedReport {
    let (fx, store) = fixture(inner, seed);
    let raw = store.inner();
    let mut report = SeedReport::default();
    let mut rng = Rng::new(seed ^ 0xA5A5_A5A5);
    let mut consents: Vec<ConsentRequest> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut extension = 1i64;
    let subjects: [SubjectId; 2] = [id("alice"), id("bob")];
    for n in 0..3 {
        let request = fx
            .broker
            .request_consent(ConsentRequestDraft {
                subject: subjects[n % 2].clone(),
                ..fx.draft()
            })
            .unwrap();
        if n < 2 {
            fx.broker
                .approve(request.id(), &attestation(&fx, &request, 0))
                .unwrap();
        }
        consents.push(request);
    }
    store.random_faults(true);

    for step in 0..OPS_PER_SEED {
        let mut fail = |message: String| {
            report
                .failures
                .push(format!("seed {seed:#x} step {step}: {message}"))
        };
        let recent = |rng: &mut Rng| {
            let window = consents.len().min(4);
            consents[consents.len() - 1 - rng.below(window)].clone()
        };
        let roll = rng.below(1000);
        let op = match roll {
            0..=649 => {
                let consent = if rng.below(30) == 0 {
                    id("cns_unknown")
                } else {
                    consents[consents.len() - 1 - rng.below(consents.len().min(8))]
                        .id()
                        .clone()
                };
                let request = AccessRequest {
                    consent,
                    platform: fx.platform.clone(),
                    scope: match rng.below(10) {
                        0..=4 => Scope::Balance.into(),
                        5..=8 => Scope::Alerts.into(),
                        _ => Scope::Transactions.into(),
                    },
                    purpose: match rng.below(20) {
                        0..=9 => Purpose::CustomerService.into(),
                        10..=18 => Purpose::FraudProtection.into(),
                        _ => RequestedPurpose::Prohibited(ProhibitedUse::CrossSelling),
                    },
                    account: match rng.below(10) {
                        0..=4 => fx.current.clone(),
                        5..=8 => fx.savings.clone(),
                        _ => id("acc-not-granted"),
                    },
                    presence: if rng.below(2) == 0 {
                        Presence::Unattended
                    } else {
                        Presence::SubjectPresent
                    },
                };
                if roll < 400 {
                    Op::Access(request)
                } else {
                    Op::Token(request)
                }
            }
            650..=719 => Op::Request,
            720..=799 => Op::Approve(recent(&mut rng)),
            800..=859 => Op::Reauthorise(recent(&mut rng)),
            860..=909 => Op::Revoke(recent(&mut rng).id().clone()),
            910..=949 => Op::Checkpoint,
            _ => {
                fx.clock.advance(Duration::hours(3));
                *report.ops.entry("clock moves").or_default() += 1;
                continue;
            }
        };

        let day = fx.broker.now().date();
        let before = raw.audit_len().unwrap();
        let target = match &op {
            Op::Access(request) | Op::Token(request) => Some(request.consent.clone()),
            Op::Approve(request) | Op::Reauthorise(request) => Some(request.id().clone()),
            Op::Revoke(consent) => Some(consent.clone()),
            Op::Request | Op::Checkpoint => None,
        };
        let consent_before = target.as_ref().map(|c| raw.consent(c).unwrap());
        let usage_before = target.as_ref().map(|c| raw.usage(c, day).unwrap());
        let consents_before: usize = subjects
            .iter()
            .map(|s| raw.consents_of_subject(s).unwrap().len())
            .sum();
        store.take_injected();
        let mut attested: Option<String> = None;

        // Run it. `Ok(expected)` lists the kinds the call must have recorded, in order.
        let (name, result): (&'static str, Result<Vec<AuditKind>, Error>) = match &op {
            Op::Access(request) => (
                "access",
                fx.broker.authorise_access(request).map(|outcome| {
                    let seq = outcome.audit_seq();
                    match &outcome {
                        AccessOutcome::Permitted(permit) => {
                            if permit.consent() != &request.consent
                                || permit.account() != &request.account
                                || permit.presence() != request.presence
                            {
                                fail(format!("permit {permit:?} does not match {request:?}"));
                            }
                        }
                        AccessOutcome::Denied(_) => {}
                    }
                    if seq != before {
                        fail(format!("answer names entry {seq}, expected {before}"));
                    }
                    vec![match outcome {
                        AccessOutcome::Permitted(_) => AuditKind::AccessPermitted,
                        AccessOutcome::Denied(_) => AuditKind::AccessDenied,
                    }]
                }),
            ),
            Op::Token(request) => (
                "token",
                fx.broker
                    .authorise_with_token(request)
                    .map(|outcome| match outcome {
                        TokenOutcome::Issued(token) => {
                            let issued = raw.audit_entries(before + 1..before + 2).unwrap();
                            if issued.first().and_then(token_id) != Some(&token.token_id) {
                                fail(format!("token {token:?} is not the one recorded"));
                            }
                            vec![AuditKind::AccessPermitted, AuditKind::TokenIssued]
                        }
                        TokenOutcome::Denied(denial) => {
                            if denial.audit_seq != before {
                                fail(format!("denial {denial:?}, expected entry {before}"));
                            }
                            vec![AuditKind::AccessDenied]
                        }
                    }),
            ),
            Op::Request => (
                "request",
                fx.broker
                    .request_consent(ConsentRequestDraft {
                        subject: subjects[rng.below(2)].clone(),
                        ..fx.draft()
                    })
                    .map(|request| {
                        consents.push(request);
                        vec![AuditKind::ConsentRequested]
                    }),
            ),
            Op::Approve(request) => {
                let token = attestation(&fx, request, 0);
                let result = fx.broker.approve(request.id(), &token);
                attested = Some(token);
                ("approve", result.map(|_| vec![AuditKind::ConsentApproved]))
            }
            Op::Reauthorise(request) => {
                extension += 1;
                let token = attestation(&fx, request, extension);
                let result = fx.broker.reauthorise(request.id(), &token);
                attested = Some(token);
                (
                    "reauthorise",
                    result.map(|_| vec![AuditKind::ConsentReauthorised]),
                )
            }
            Op::Revoke(consent) => (
                "revoke",
                fx.revoke(consent, Revoker::Subject, RevocationReason::SubjectWithdrew)
                    .map(|_| vec![AuditKind::ConsentRevoked]),
            ),
            Op::Checkpoint => (
                "checkpoint",
                fx.broker.checkpoint().map(|checkpoint| {
                    notes.push(checkpoint.note);
                    Vec::new()
                }),
            ),
        };
        *report.ops.entry(name).or_default() += 1;

        let injected = store.take_injected();
        let after = raw.audit_len().unwrap();
        let new = raw.audit_entries(before..after).unwrap();
        let after_write: HashSet<u64> = injected
            .iter()
            .filter(|i| i.fault == Fault::After)
            .flat_map(|i| i.seqs.clone())
            .collect();
        for fault in injected.iter().filter(|i| i.fault == Fault::After) {
            // A token's issuing is committed together with its permit: such a commit is a
            // token commit (the call asked for a token), not a bare permit's.
            if fault.kinds.contains(&AuditKind::TokenIssued) {
                report.after_on_token += 1;
            } else if fault.kinds.contains(&AuditKind::AccessPermitted) {
                report.after_on_permit += 1;
            }
        }
        let kinds: Vec<AuditKind> = new.iter().map(|e| e.kind()).collect();
        match &result {
            Ok(expected) => {
                // An answer: no fault on its way, and exactly its records.
                if !injected.is_empty() {
                    fail(format!(
                        "{name} answered Ok although {injected:?} was injected"
                    ));
                }
                if &kinds != expected {
                    fail(format!(
                        "{name} answered Ok; it recorded {kinds:?}, not {expected:?}"
                    ));
                }
                if let (Op::Access(request) | Op::Token(request), Some(entry)) = (&op, new.first())
                    && !records(&raw, entry, request)
                {
                    fail(format!(
                        "{name}: entry {entry:?} does not record {request:?}"
                    ));
                }
            }
            Err(error) if injected.is_empty() => {
                // A refusal of the broker's own: audited, never for an access.
                let refusal = matches!(
                    kinds.as_slice(),
                    [AuditKind::ApprovalRefused | AuditKind::ReauthorisationRefused]
                );
                let natural = matches!(error, Error::Consent(_) | Error::Attestation(_));
                // A revocation that is not allowed is refused without an entry.
                let unaudited = kinds.is_empty() && matches!(op, Op::Revoke(_));
                if matches!(op, Op::Access(_) | Op::Token(_)) || !natural || !(refusal || unaudited)
                {
                    fail(format!(
                        "{name} failed without a fault: {error:?}, recorded {kinds:?}"
                    ));
                }
            }
            Err(error) => {
                if !is_injected(error) {
                    fail(format!("{name}: {injected:?} surfaced as {error:?}"));
                }
                // Fail closed: only what an after-write fault let through is recorded (with, for
                // a token, the permit it was issued for).
                for (n, entry) in new.iter().enumerate() {
                    let token_follows = new.get(n + 1).is_some_and(|next| {
                        next.kind() == AuditKind::TokenIssued && after_write.contains(&next.seq)
                    });
                    if entry.kind() == AuditKind::AccessPermitted && token_follows {
                        continue;
                    }
                    if after_write.contains(&entry.seq) {
                        match entry.kind() {
                            AuditKind::AccessPermitted => report.ambiguous_permits += 1,
                            AuditKind::TokenIssued => report.ambiguous_tokens += 1,
                            _ => {}
                        }
                        continue;
                    }
                    if matches!(op, Op::Token(_)) && entry.kind() == AuditKind::AccessPermitted {
                        report.orphan_permits += 1;
                    }
                    fail(format!(
                        "{name} failed ({error:?}, faults {injected:?}) but entry {} ({:?}) was \
                         recorded",
                        entry.seq,
                        entry.kind()
                    ));
                }
                // State moved only with a recorded commit.
                if new.is_empty()
                    && let Some(consent) = &target
                    && raw.consent(consent).unwrap() != consent_before.clone().flatten()
                {
                    fail(format!(
                        "{name} failed, recorded nothing, and changed {consent}"
                    ));
                }
                let consents_now: usize = subjects
                    .iter()
                    .map(|s| raw.consents_of_subject(s).unwrap().len())
                    .sum();
                if new.is_empty() && consents_now != consents_before {
                    fail(format!(
                        "{name} failed, recorded nothing, and stored a consent"
                    ));
                }
            }
        }
        // Usage moves with the recorded unattended permits, and only with them.
        if let (Some(consent), Some(usage_before)) = (&target, usage_before) {
            let usage_after = raw.usage(consent, day).unwrap();
            let counted = usage_after.unattended_today - usage_before.unattended_today;
            if counted != unattended_permits(&new) {
                fail(format!(
                    "{name}: usage of {consent} moved by {counted}, {} unattended permits recorded",
                    unattended_permits(&new)
                ));
            }
        }
        // An attestation whose approval commit failed before or during the write was not
        // consumed: it is accepted once the store works again.
        let rolled_back = injected.iter().any(|i| {
            matches!(i.fault, Fault::Before | Fault::During)
                && i.kinds.iter().any(|k| {
                    matches!(
                        k,
                        AuditKind::ConsentApproved | AuditKind::ConsentReauthorised
                    )
                })
        });
        if let (Op::Approve(request) | Op::Reauthorise(request), Some(token), true) =
            (&op, &attested, rolled_back)
        {
            store.random_faults(false);
            let retried = match op {
                Op::Approve(_) => fx.broker.approve(request.id(), token),
                _ => fx.broker.reauthorise(request.id(), token),
            };
            store.random_faults(true);
            match retried {
                Ok(_) => report.retried_attestations += 1,
                Err(error) => fail(format!(
                    "{name}: the attestation of a commit that failed ({injected:?}) is refused \
                     on retry: {error:?}"
                )),
            }
        }
    }
    store.random_faults(false);
    report.totals = store.totals();

    // The faults have stopped: the log verifies, and checks hold over all of it.
    let verifier = NoteVerifier::from_vkey(&fx.broker.checkpoint_verifier_key()).unwrap();
    if let Err(error) = verify_log(raw, None) {
        report
            .failures
            .push(format!("seed {seed:#x}: the log does not verify: {error}"));
    }
    for note in &notes {
        if let Err(error) = verify_log(raw, Some((note, &verifier))) {
            report.failures.push(format!(
                "seed {seed:#x}: the log fails a checkpoint signed under faults: {error}"
            ));
        }
    }
    let log = fx.audit();
    check_log(&fx, &log, seed, &mut report.failures);
    if report.ambiguous_permits != report.after_on_permit
        || report.ambiguous_tokens != report.after_on_token
    {
        report.failures.push(format!(
            "seed {seed:#x}: {} after-write faults on permits and {} on tokens were injected, \
             but calls saw {} and {}",
            report.after_on_permit,
            report.after_on_token,
            report.ambiguous_permits,
            report.ambiguous_tokens
        ));
    }

    // Recovery: everything works and is recorded again.
    let len = fx.audit_len();
    let request = fx
        .broker
        .request_consent(fx.draft())
        .expect("a request after the faults stopped");
    fx.broker
        .approve(request.id(), &attestation(&fx, &request, 0))
        .expect("an approval after the faults stopped");
    let access = fx.access(request.id());
    let AccessOutcome::Permitted(permit) = fx.broker.authorise_access(&access).unwrap() else {
        panic!("seed {seed:#x}: a fresh grant did not permit after the faults stopped");
    };
    let TokenOutcome::Issued(token) = fx.broker.authorise_with_token(&access).unwrap() else {
        panic!("seed {seed:#x}: no token after the faults stopped");
    };
    fx.revoke(
        request.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    let denied = fx.decide(&access);
    let log = fx.audit();
    let tail: Vec<AuditKind> = log[len as usize..].iter().map(|e| e.kind()).collect();
    assert_eq!(
        tail,
        [
            AuditKind::ConsentRequested,
            AuditKind::ConsentApproved,
            AuditKind::AccessPermitted,
            AuditKind::AccessPermitted,
            AuditKind::TokenIssued,
            AuditKind::ConsentRevoked,
            AuditKind::AccessDenied,
        ],
        "seed {seed:#x}: recovery"
    );
    assert_eq!(
        log[permit.audit_seq() as usize].kind(),
        AuditKind::AccessPermitted
    );
    assert_eq!(token_id(&log[len as usize + 4]), Some(&token.token_id));
    assert_eq!(
        denied.reasons(),
        [DenyReason::Revoked {
            by: Revoker::Subject
        }]
    );
    verify_log(raw, None).unwrap();
    report
}

/// Whole-log invariants: limits, and nothing after a revocation.
fn check_log<S: Store>(fx: &Fixture<S>, log: &[AuditEntry], seed: u64, failures: &mut Vec<String>) {
    let mut unattended: BTreeMap<(String, Date), u32> = BTreeMap::new();
    let mut revoked: HashSet<&ConsentId> = HashSet::new();
    for entry in log {
        let Some(consent) = entry.consent() else {
            continue;
        };
        match entry.kind() {
            AuditKind::ConsentRevoked => {
                revoked.insert(consent);
            }
            AuditKind::AccessPermitted | AuditKind::TokenIssued if revoked.contains(consent) => {
                failures.push(format!(
                    "seed {seed:#x}: entry {} ({:?}) follows the revocation of {consent}",
                    entry.seq,
                    entry.kind()
                ));
            }
            _ => {}
        }
        if is_unattended_permit(entry) {
            *unattended
                .entry((consent.to_string(), entry.at.date()))
                .or_default() += 1;
        }
    }
    for ((consent, day), count) in unattended {
        let usage = fx.broker.store().usage(&id(&consent), day).unwrap();
        if count > DAILY_LIMIT || usage.unattended_today != count {
            failures.push(format!(
                "seed {seed:#x}: {consent} on {day}: {count} unattended permits, usage {usage:?}"
            ));
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = env_number("CONSENT_BROKER_FAULT_SEED") {
        return vec![seed];
    }
    let rounds = env_number("CONSENT_BROKER_FAULT_ROUNDS").unwrap_or(6);
    (1..=rounds).map(|n| n * 0x1000_0001).collect()
}

fn random_faults<S: Store>(label: &str, mut open: impl FnMut(u64) -> S) {
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut totals: BTreeMap<Fault, u64> = BTreeMap::new();
    let mut sums = SeedReport::default();
    let seeds = seeds();
    for &seed in &seeds {
        let report = run_seed(open(seed), seed);
        failures.extend(report.failures.iter().take(12).cloned());
        for (fault, n) in &report.totals {
            *totals.entry(*fault).or_default() += n;
        }
        for (op, n) in &report.ops {
            *sums.ops.entry(op).or_default() += n;
        }
        sums.after_on_permit += report.after_on_permit;
        sums.after_on_token += report.after_on_token;
        sums.ambiguous_permits += report.ambiguous_permits;
        sums.ambiguous_tokens += report.ambiguous_tokens;
        sums.orphan_permits += report.orphan_permits;
        sums.retried_attestations += report.retried_attestations;
    }
    eprintln!(
        "faults[{label}]: {} seeds x {OPS_PER_SEED} ops in {:.2?}; injected {totals:?}; \
         after-write on permit commits {} (calls saw {} ambiguous permits), on token commits {} \
         (saw {}); token calls that failed after recording their permit {}; attestations \
         usable again after a failed commit {}; ops {:?}",
        seeds.len(),
        started.elapsed(),
        sums.after_on_permit,
        sums.ambiguous_permits,
        sums.after_on_token,
        sums.ambiguous_tokens,
        sums.orphan_permits,
        sums.retried_attestations,
        sums.ops,
    );
    assert!(
        failures.is_empty(),
        "faults[{label}]: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for fault in [Fault::Before, Fault::During, Fault::After, Fault::Read] {
        assert!(
            totals.get(&fault).copied().unwrap_or(0) > 0,
            "no {fault:?} fault was injected"
        );
    }
}

#[test]
fn random_faults_on_the_memory_store() {
    random_faults("memory", |_| MemoryStore::new());
}

#[test]
fn random_faults_on_the_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    random_faults("sqlite", |seed| {
        SqliteStore::open(dir.path().join(format!("faults-{seed:x}.db"))).unwrap()
    });
}

/// An unattended access whose permit commit fails before, during and after the write.
fn permit_commit_faults<S: Store>(inner: S) {
    let (fx, store) = fixture(inner, 1);
    let request = fx.granted();
    let poll = AccessRequest {
        presence: Presence::Unattended,
        ..fx.access(request.id())
    };
    let day = fx.broker.now().date();
    let usage = || {
        store
            .inner()
            .usage(request.id(), day)
            .unwrap()
            .unattended_today
    };

    // Before and during: an error, nothing recorded, no slot spent.
    for fault in [Fault::Before, Fault::During] {
        store.script(AuditKind::AccessPermitted, fault);
        let len = fx.audit_len();
        let error = fx.broker.authorise_access(&poll).unwrap_err();
        assert!(is_injected(&error), "{fault:?}: {error:?}");
        assert_eq!(fx.audit_len(), len, "{fault:?}: nothing recorded");
        assert_eq!(usage(), 0, "{fault:?}: no slot spent");
        let injected = store.take_injected();
        assert_eq!(injected.len(), 1);
        assert_eq!(injected[0].fault, fault);
    }

    // After: the permit is recorded and its slot spent, but the caller sees an error.
    store.script(AuditKind::AccessPermitted, Fault::After);
    let len = fx.audit_len();
    let error = fx.broker.authorise_access(&poll).unwrap_err();
    assert!(is_injected(&error), "{error:?}");
    assert_eq!(fx.audit_len(), len + 1);
    let entry = fx.last_audit();
    assert_eq!(entry.kind(), AuditKind::AccessPermitted);
    assert!(records(&fx.broker.store(), &entry, &poll));
    assert_eq!(store.take_injected()[0].seqs, len..len + 1);
    assert_eq!(usage(), 1);

    // The ambiguous permit counts against the limit; the store works again.
    assert_eq!(fx.decide(&poll), Decision::Permit);
    assert_eq!(fx.decide(&poll), Decision::Permit);
    assert_eq!(
        fx.decide(&poll).reasons(),
        [DenyReason::FrequencyExceeded { limit: DAILY_LIMIT }]
    );
    assert_eq!(usage(), DAILY_LIMIT);

    // A token call whose commit fails after the write: permit and token recorded together, an
    // error returned.
    let present = fx.access(request.id());
    store.script(AuditKind::TokenIssued, Fault::After);
    let len = fx.audit_len();
    let error = fx.broker.authorise_with_token(&present).unwrap_err();
    assert!(is_injected(&error), "{error:?}");
    let kinds: Vec<AuditKind> = fx.audit()[len as usize..]
        .iter()
        .map(|e| e.kind())
        .collect();
    assert_eq!(kinds, [AuditKind::AccessPermitted, AuditKind::TokenIssued]);
    // One commit holds both: the permit is never recorded without its token.
    assert!(store.take_injected()[0].kinds == [AuditKind::AccessPermitted, AuditKind::TokenIssued]);
    verify_log(store.inner(), None).unwrap();
}

#[test]
fn each_commit_fault_on_a_permit_memory_store() {
    permit_commit_faults(MemoryStore::new());
}

#[test]
fn each_commit_fault_on_a_permit_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    permit_commit_faults(SqliteStore::open(dir.path().join("permit.db")).unwrap());
}

/// `authorise_with_token` used to record the permit in one commit and the token in another; when
/// the second failed, the call returned `Error::Store` ("nothing was recorded, nothing
/// permitted") yet the permit stayed in the log and an unattended one had spent a slot of the
/// day. Found by this suite; the permit and its token are now one commit.
#[test]
fn a_token_call_that_fails_records_no_permit_and_spends_no_slot() {
    for fault in [Fault::Before, Fault::During] {
        let (fx, store) = fixture(MemoryStore::new(), 1);
        let request = fx.granted();
        let poll = AccessRequest {
            presence: Presence::Unattended,
            ..fx.access(request.id())
        };
        let day = fx.broker.now().date();
        store.script(AuditKind::TokenIssued, fault);
        let len = fx.audit_len();
        let error = fx.broker.authorise_with_token(&poll).unwrap_err();
        assert!(is_injected(&error), "{fault:?}: {error:?}");
        let recorded: Vec<AuditKind> = fx.audit()[len as usize..]
            .iter()
            .map(|e| e.kind())
            .collect();
        let spent = store
            .inner()
            .usage(request.id(), day)
            .unwrap()
            .unattended_today;
        assert!(
            recorded.is_empty() && spent == 0,
            "{fault:?} fault on the token commit: the call returned {error:?}, yet recorded \
             {recorded:?} and spent {spent} unattended slot(s)"
        );
    }
}

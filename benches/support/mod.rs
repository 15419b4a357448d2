//! One setup for every benchmark: a broker on a manual clock over a shared in-memory store, a
//! registered bank and platform, and a live balance grant.
#![expect(clippy::unwrap_used, reason = "a benchmark's setup fails by panicking")]
#![allow(dead_code, reason = "each benchmark uses its own part of the setup")]

use std::sync::Arc;

use consent_broker::time::Duration;
use consent_broker::time::macros::datetime;
use consent_broker::*;

pub struct Setup<S: Store = Arc<MemoryStore>> {
    pub broker: Broker<S>,
    pub store: S,
    pub clock: Arc<ManualClock>,
    pub bank: HolderId,
    pub profile: PlatformProfile,
    pub policy: HolderPolicy,
    pub consent: Consent,
    /// Balance, customer service, the granted account, subject present: a permit.
    pub access: AccessRequest,
}

/// The benchmarks' broker keys (a fixed seed), the same for every broker on one store.
pub fn keys() -> BrokerKeys {
    BrokerKeys::ephemeral(&consent_broker::testing::SeededRandom::new(1)).unwrap()
}

pub fn setup() -> Setup {
    setup_on(Arc::new(MemoryStore::new()))
}

/// The same setup on any store.
pub fn setup_on<S: Store + Clone>(store: S) -> Setup<S> {
    let clock = Arc::new(ManualClock::new(datetime!(2026-11-21 09:00 UTC)));
    let broker = Broker::builder("broker".parse().unwrap(), store.clone())
        .clock(clock.clone())
        .keys(keys())
        .build()
        .unwrap();
    let rng = SystemRandom::new();
    let bank: HolderId = "bank".parse().unwrap();
    let signer = AttestationSigner::new(bank.clone(), SigningKey::generate(&rng).unwrap()).unwrap();
    let policy = HolderPolicy::default();
    broker
        .register_holder(HolderRegistration {
            id: bank.clone(),
            policy: policy.clone(),
            attestation_keys: vec![signer.public_key()],
        })
        .unwrap();
    let profile = PlatformProfile {
        id: "chat".parse().unwrap(),
        registered_purposes: PurposeSet::from(Purpose::ALL),
    };
    broker.register_platform(profile.clone()).unwrap();
    let account: AccountId = "acc-1".parse().unwrap();
    let request = broker
        .request_consent(ConsentRequestDraft {
            subject: "alice".parse().unwrap(),
            platform: profile.id.clone(),
            holder: bank.clone(),
            scopes: vec![Scope::Balance.into()],
            purposes: vec![Purpose::CustomerService.into()],
            accounts: AccountSelection::Listed(AccountSet::from([account.clone()])),
            duration: Duration::days(90),
        })
        .unwrap();
    let statement = ApprovalStatement {
        consent: request.id().clone(),
        subject: request.subject().clone(),
        platform: request.platform().clone(),
        scopes: request.scopes(),
        purposes: request.purposes(),
        accounts: AccountSet::from([account.clone()]),
        consent_expires_at: broker.now() + Duration::days(90),
        unattended_daily_limit: DEFAULT_UNATTENDED_DAILY_LIMIT,
        devices: Vec::new(),
        plaintext: PlaintextUses::new(),
    };
    let attestation = signer
        .sign(&statement, broker.id(), broker.now(), &rng)
        .unwrap();
    let consent = broker.approve(request.id(), &attestation).unwrap();
    let access = AccessRequest {
        consent: request.id().clone(),
        platform: profile.id.clone(),
        scope: Scope::Balance.into(),
        purpose: Purpose::CustomerService.into(),
        account,
        presence: Presence::SubjectPresent,
    };
    Setup {
        broker,
        store,
        clock,
        bank,
        profile,
        policy,
        consent,
        access,
    }
}

/// No ceiling and no staleness within a benchmark's run: every access the gate is shown is
/// served.
pub fn open_gate() -> GateSettings {
    GateSettings {
        present_daily_ceiling: u32::MAX,
        feed_staleness: Duration::days(365),
        ..GateSettings::default()
    }
}

/// A fresh token for `access` from the kit's broker and a fresh DPoP proof for it (made outside
/// any timed part).
pub fn token_and_proof<S: Store>(
    kit: &consent_broker::testing::TestBroker<S>,
    access: &AccessRequest,
    random: &dyn RandomSource,
) -> (String, String) {
    let token = kit.token(access).token;
    let proof = kit
        .sender
        .proof(
            &consent_broker::testing::GET_BALANCE,
            &token,
            kit.broker.now(),
            random,
        )
        .unwrap();
    (token, proof)
}

/// Runs `work(thread, each)` on `threads` threads at once, `each` being `iterations` shared out
/// (rounded up), and returns the wall time scaled to `iterations`: criterion's time per
/// iteration is then one over the aggregate throughput.
pub fn timed_threads(
    threads: usize,
    iterations: u64,
    work: impl Fn(usize, u64) + Sync,
) -> std::time::Duration {
    let each = iterations.div_ceil(threads as u64);
    let start = std::time::Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let work = &work;
            scope.spawn(move || work(thread, each));
        }
    });
    start
        .elapsed()
        .mul_f64(iterations as f64 / (each * threads as u64).max(1) as f64)
}

/// Runs `iterations` decisions spread over `callers` threads taking turns over `brokers`, and
/// returns the wall time scaled to `iterations` (criterion's time per decision is then one over
/// the aggregate throughput).
pub fn concurrently<S: Store>(
    brokers: &[&Broker<S>],
    callers: usize,
    access: &AccessRequest,
    iterations: u64,
) -> std::time::Duration {
    // Each caller asks with ids of its own, as a request thread that parsed its own request
    // would (not clones of one request's ids, whose shared counts every caller would write).
    let own: Vec<AccessRequest> = (0..callers).map(|_| parsed_apart(access)).collect();
    timed_threads(callers, iterations, |caller, each| {
        let broker = brokers.get(caller % brokers.len()).unwrap();
        let access = own.get(caller).unwrap();
        for _ in 0..each {
            broker.authorise_access(access).unwrap();
        }
    })
}

/// A copy of `access` sharing no id with it: as parsed from a request of its own.
pub fn parsed_apart(access: &AccessRequest) -> AccessRequest {
    AccessRequest {
        consent: access.consent.as_str().parse().unwrap(),
        platform: access.platform.as_str().parse().unwrap(),
        account: access.account.as_str().parse().unwrap(),
        ..access.clone()
    }
}

/// What [`interleaved`] measured: the median of the pairs' ratios `second ÷ first`, its
/// quartiles, and each side's median time per call.
pub struct Interleaved {
    pub pairs: usize,
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub first_ns: f64,
    pub second_ns: f64,
}

impl Interleaved {
    /// As JSON, for `scripts/bench-report`.
    pub fn json(&self) -> String {
        format!(
            "{{\"pairs\": {}, \"median\": {}, \"q1\": {}, \"q3\": {}, \"first_ns\": {}, \"second_ns\": {}}}\n",
            self.pairs, self.median, self.q1, self.q3, self.first_ns, self.second_ns
        )
    }
}

/// Times `pairs` pairs of blocks, one of `first` and one of `second` (which of them runs first
/// alternating from pair to pair), each call returning its block's time per call. On a shared
/// host whose speed moves by a third from one minute to the next, a ratio of two runs made
/// minutes apart measures the host as much as the code; blocks a few milliseconds apart see
/// the same host.
pub fn interleaved(
    pairs: usize,
    mut first: impl FnMut() -> std::time::Duration,
    mut second: impl FnMut() -> std::time::Duration,
) -> Interleaved {
    let mut times = (Vec::new(), Vec::new());
    for pair in 0..pairs {
        let (a, b) = if pair % 2 == 0 {
            let a = first();
            (a, second())
        } else {
            let b = second();
            (first(), b)
        };
        times.0.push(a.as_nanos() as f64);
        times.1.push(b.as_nanos() as f64);
    }
    let mut ratios: Vec<f64> = times.1.iter().zip(&times.0).map(|(b, a)| b / a).collect();
    let quantile = |values: &mut Vec<f64>, q: usize| {
        values.sort_by(f64::total_cmp);
        values
            .get(values.len().saturating_sub(1) * q / 4)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Interleaved {
        pairs,
        median: quantile(&mut ratios, 2),
        q1: quantile(&mut ratios, 1),
        q3: quantile(&mut ratios, 3),
        first_ns: quantile(&mut times.0, 2),
        second_ns: quantile(&mut times.1, 2),
    }
}

/// Writes `json` to `name` in Cargo's target `tmp` directory, where `scripts/bench-report` reads
/// the figures criterion does not keep.
pub fn write_report(name: &str, json: &str) {
    let path = format!("{}/{name}", env!("CARGO_TARGET_TMPDIR"));
    if let Err(error) = std::fs::write(&path, json) {
        eprintln!("could not write {path}: {error}");
    }
}

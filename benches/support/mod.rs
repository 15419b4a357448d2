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
    first: impl FnMut() -> std::time::Duration,
    second: impl FnMut() -> std::time::Duration,
) -> Interleaved {
    let timed = timed_pairs(pairs, first, second, || 0.0);
    summary(timed.iter().map(|&(a, b, _)| (a, b)))
}

/// Each pair's two times per call (ns) and what `beside` measured just before the pair.
fn timed_pairs<T>(
    pairs: usize,
    mut first: impl FnMut() -> std::time::Duration,
    mut second: impl FnMut() -> std::time::Duration,
    mut beside: impl FnMut() -> T,
) -> Vec<(f64, f64, T)> {
    (0..pairs)
        .map(|pair| {
            let before = beside();
            let (a, b) = if pair % 2 == 0 {
                let a = first();
                (a, second())
            } else {
                let b = second();
                (first(), b)
            };
            (a.as_nanos() as f64, b.as_nanos() as f64, before)
        })
        .collect()
}

fn median_of(values: &mut [f64], q: usize) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get(values.len().saturating_sub(1) * q / 4)
        .copied()
        .unwrap_or(f64::NAN)
}

/// The median ratio `second ÷ first` of `pairs` and its quartiles.
fn summary(pairs: impl Iterator<Item = (f64, f64)>) -> Interleaved {
    let (mut first, mut second): (Vec<f64>, Vec<f64>) = pairs.unzip();
    let mut ratios: Vec<f64> = second.iter().zip(&first).map(|(b, a)| b / a).collect();
    Interleaved {
        pairs: ratios.len(),
        median: median_of(&mut ratios, 2),
        q1: median_of(&mut ratios, 1),
        q3: median_of(&mut ratios, 3),
        first_ns: median_of(&mut first, 2),
        second_ns: median_of(&mut second, 2),
    }
}

/// [`interleaved`] for work that runs on both cores, each pair preceded by [`core_exchanges`]:
/// all the pairs, and apart the pairs before which the two threads exchanged with few stalls
/// (quiet) and those before which [`INTERRUPTED_FROM`] or more of the blocks stalled
/// (interrupted: the host ran something else on one of the two virtual cores for a while).
pub fn interleaved_by_interference(
    pairs: usize,
    first: impl FnMut() -> std::time::Duration,
    second: impl FnMut() -> std::time::Duration,
) -> (Interleaved, Interference) {
    let timed = timed_pairs(pairs, first, second, core_exchanges);
    let all = summary(timed.iter().map(|(a, b, _)| (*a, *b)));
    let side = |interrupted: bool| {
        let chosen: Vec<_> = timed
            .iter()
            .filter(|(_, _, exchanges)| (exchanges.stalled >= INTERRUPTED_FROM) == interrupted)
            .collect();
        let mut trips: Vec<f64> = chosen.iter().map(|(_, _, e)| e.median_ns).collect();
        let stalled =
            chosen.iter().map(|(_, _, e)| e.stalled).sum::<f64>() / chosen.len().max(1) as f64;
        (!chosen.is_empty()).then(|| Side {
            pairs: summary(chosen.iter().map(|(a, b, _)| (*a, *b))),
            round_trip_ns: median_of(&mut trips, 2),
            stalled,
        })
    };
    let interference = Interference {
        quiet: side(false),
        interrupted: side(true),
    };
    (all, interference)
}

/// One side of [`Interference`]: its pairs, the median round trip before them, and the mean
/// share of stalled exchanges.
pub struct Side {
    pub pairs: Interleaved,
    pub round_trip_ns: f64,
    pub stalled: f64,
}

/// The pairs of [`interleaved_by_interference`] by whether the exchanges before them stalled
/// (`None`: no pair on that side).
pub struct Interference {
    pub quiet: Option<Side>,
    pub interrupted: Option<Side>,
}

impl Interference {
    /// The pairs and both sides as JSON, for `scripts/bench-report`.
    pub fn json(&self, all: &Interleaved) -> String {
        let side = |found: &Option<Side>| match found {
            Some(side) => format!(
                "{{\"round_trip_ns\": {}, \"stalled\": {}, \"pairs\": {}, \"median\": {}, \"q1\": {}, \"q3\": {}}}",
                side.round_trip_ns,
                side.stalled,
                side.pairs.pairs,
                side.pairs.median,
                side.pairs.q1,
                side.pairs.q3
            ),
            None => "null".to_owned(),
        };
        let all = all.json();
        format!(
            "{}, \"stalled_from_ns\": {STALLED_NS}, \"interrupted_from\": {INTERRUPTED_FROM}, \"quiet\": {}, \"interrupted\": {}}}\n",
            all.trim_end().trim_end_matches('}'),
            side(&self.quiet),
            side(&self.interrupted)
        )
    }
}

/// A block of exchanges whose mean round trip is longer than this (ns) stalled: one of the two
/// threads was off its core for part of it (a round trip between two cores takes 50–600 ns).
pub const STALLED_NS: f64 = 2_000.0;

/// The share of stalled blocks from which the exchanges before a pair count as interrupted: a
/// timer tick in the millisecond the exchanges take stalls one block of about 300 (0.3 %); the
/// host running something else on one of the two virtual cores stalls many, or all.
pub const INTERRUPTED_FROM: f64 = 0.02;

/// What [`core_exchanges`] measured.
pub struct Exchanges {
    /// The median of the blocks' mean round trips (ns).
    pub median_ns: f64,
    /// The share of blocks that stalled ([`STALLED_NS`]); 1 when not one block completed.
    pub stalled: f64,
}

/// The time for a write on one core to be seen on another and answered: two threads taking
/// turns to write one atomic, up to 20,000 exchanges (stopping after 50 ms), timed in blocks of
/// 64. The median of the blocks' means is the round trip between the cores: about 50 ns on this
/// machine when both run. A block whose mean is past [`STALLED_NS`] stalled: the host took one
/// of the two virtual cores for something else meanwhile, which a decision on two cores then
/// waits for too. (The mean of all exchanges, which this measured before, mixes the two: its
/// "far" round trips of 350–1,400 ns were such stalls.)
pub fn core_exchanges() -> Exchanges {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const EXCHANGES: u64 = 20_000;
    const BLOCK: u64 = 64;
    let turn = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = std::time::Instant::now();
    let deadline = started + std::time::Duration::from_millis(50);
    let mut blocks: Vec<f64> = Vec::with_capacity((EXCHANGES / BLOCK) as usize);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..EXCHANGES {
                while turn.load(Ordering::Acquire) != 2 * i + 1 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::hint::spin_loop();
                }
                turn.store(2 * i + 2, Ordering::Release);
            }
        });
        let mut block_start = std::time::Instant::now();
        for i in 0..EXCHANGES {
            turn.store(2 * i + 1, Ordering::Release);
            let mut spins = 0u32;
            while turn.load(Ordering::Acquire) != 2 * i + 2 {
                spins = spins.wrapping_add(1);
                // The clock read now and then: on every spin it would lengthen the trip.
                if spins.is_multiple_of(1024) && std::time::Instant::now() > deadline {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                std::hint::spin_loop();
            }
            if (i + 1).is_multiple_of(BLOCK) {
                let now = std::time::Instant::now();
                blocks.push((now - block_start).as_nanos() as f64 / BLOCK as f64);
                block_start = now;
                if now > deadline {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    });
    if blocks.is_empty() {
        // Not one block in 50 ms: the two threads hardly ever ran at once.
        return Exchanges {
            median_ns: started.elapsed().as_nanos() as f64,
            stalled: 1.0,
        };
    }
    let stalled = blocks.iter().filter(|&&b| b > STALLED_NS).count() as f64 / blocks.len() as f64;
    Exchanges {
        median_ns: median_of(&mut blocks, 2),
        stalled,
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

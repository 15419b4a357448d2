//! The checked call against the same consent rules written as Cedar policies (cedar-policy 4).
//!
//! Before anything is timed, a grid of requests is decided by both `evaluate` and Cedar and the
//! two decisions must agree. Policies are parsed once; inputs are prepared outside the timed
//! loops. Cedar is timed twice: on a request prepared in advance, and on a request built inside
//! the loop from the same typed inputs `evaluate` takes (so both sides pay for reading their
//! inputs). After the criterion group, a short manual timing prints the Cedar/`evaluate` ratios.
//!
//! Run: `cargo bench --features cedar-bench --bench cedar`.
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented entry point"
)]
#![expect(clippy::unwrap_used, reason = "a benchmark fails by panicking")]
#![expect(
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a benchmark fails by panicking"
)]

use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration as StdDuration, Instant};

use cedar_policy as cedar;
use cedar_policy::{
    Authorizer, Context, Entities, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression,
};
use consent_broker::*;
use criterion::{Criterion, criterion_group, criterion_main};
use time::{Duration, OffsetDateTime};

mod support;

/// The rules of `evaluate`, in Cedar. Principal: the requesting platform; action:
/// `Action::"access"`; resource: the account.
///
/// The grant, the holder's policy, the platform's profile and today's usage travel in the
/// request's context rather than as attributes of `Consent`/`Platform` entities. Cedar's
/// context is its channel for per-request data, and this data is exactly that: the broker has
/// already looked the consent up by id. Context needs no entity store, so Cedar is not charged
/// for building an `Entities` (with its transitive-closure computation) for every request, and
/// every lookup below is a record field read rather than an entity lookup followed by an
/// attribute read: the idiomatic form that is also the fastest, so the comparison favours Cedar
/// where it can.
const POLICIES: &str = r#"
@id("grant")
permit (principal, action == Action::"access", resource)
when {
    principal == context.granted_platform &&
    principal == context.profile_platform &&
    context.registered_purposes.contains(context.purpose) &&
    context.status == "authorised" &&
    context.now < context.expires_at &&
    context.granted_accounts.contains(resource) &&
    context.granted_scopes.contains(context.scope) &&
    context.granted_purposes.contains(context.purpose) &&
    context.enabled_scopes.contains(context.scope) &&
    (!context.unattended || context.unattended_today < context.limit)
};

@id("prohibited_purpose")
forbid (principal, action, resource)
when { ["ads", "cross_selling", "data_sale"].contains(context.purpose) };

@id("prohibited_scope")
forbid (principal, action, resource)
when { ["ads", "cross_selling", "data_sale"].contains(context.scope) };

@id("revoked")
forbid (principal, action, resource)
when { context.status == "revoked" };
"#;

/// What does not change from request to request: entity type names and the action.
struct Vocabulary {
    platform: EntityTypeName,
    account: EntityTypeName,
    action: EntityUid,
}

impl Vocabulary {
    fn new() -> Self {
        Self {
            platform: EntityTypeName::from_str("Platform").unwrap(),
            account: EntityTypeName::from_str("Account").unwrap(),
            action: EntityUid::from_type_name_and_id(
                EntityTypeName::from_str("Action").unwrap(),
                EntityId::new("access"),
            ),
        }
    }

    fn platform(&self, id: &PlatformId) -> EntityUid {
        EntityUid::from_type_name_and_id(self.platform.clone(), EntityId::new(id.as_str()))
    }

    fn account(&self, id: &AccountId) -> EntityUid {
        EntityUid::from_type_name_and_id(self.account.clone(), EntityId::new(id.as_str()))
    }
}

fn string(word: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(word.to_owned())
}

/// Nanoseconds since the epoch, so Cedar compares instants exactly as `evaluate` does.
fn instant(at: OffsetDateTime) -> RestrictedExpression {
    RestrictedExpression::new_long(i64::try_from(at.unix_timestamp_nanos()).unwrap())
}

/// Cedar's request from the same typed inputs `evaluate` takes.
fn cedar_request(
    vocab: &Vocabulary,
    request: &AccessRequest,
    consent: Option<&Consent>,
    holder_policy: &HolderPolicy,
    platform: &PlatformProfile,
    usage: Usage,
    now: OffsetDateTime,
) -> Request {
    // A consent that is not authorised or revoked has no grant; it is denied on its status
    // alone, so its grant sets are left empty.
    let (status, grant, granted_platform) = match consent {
        None => ("unknown", None, None),
        Some(consent) => {
            let (status, grant) = match consent.state() {
                ConsentState::Requested => ("requested", None),
                ConsentState::Rejected { .. } => ("rejected", None),
                ConsentState::Revoked { grant, .. } => ("revoked", Some(grant)),
                ConsentState::Authorised { grant } => ("authorised", Some(grant)),
            };
            (status, grant, Some(consent.request().platform()))
        }
    };
    let granted_platform = match granted_platform {
        Some(id) => vocab.platform(id),
        // No consent: a platform id no real platform can have (ids are never empty).
        None => EntityUid::from_type_name_and_id(vocab.platform.clone(), EntityId::new("")),
    };
    let (scopes, purposes, accounts, expires_at) = match grant {
        Some(grant) => (
            RestrictedExpression::new_set(grant.scopes().iter().map(|s| string(s.as_str()))),
            RestrictedExpression::new_set(grant.purposes().iter().map(|p| string(p.as_str()))),
            RestrictedExpression::new_set(
                grant
                    .accounts()
                    .iter()
                    .map(|a| RestrictedExpression::new_entity_uid(vocab.account(a))),
            ),
            instant(grant.expires_at()),
        ),
        None => (
            RestrictedExpression::new_set([]),
            RestrictedExpression::new_set([]),
            RestrictedExpression::new_set([]),
            RestrictedExpression::new_long(i64::MIN),
        ),
    };
    let context = Context::from_pairs([
        ("scope".to_owned(), string(request.scope.as_str())),
        ("purpose".to_owned(), string(request.purpose.as_str())),
        ("status".to_owned(), string(status)),
        ("now".to_owned(), instant(now)),
        ("expires_at".to_owned(), expires_at),
        (
            "granted_platform".to_owned(),
            RestrictedExpression::new_entity_uid(granted_platform),
        ),
        ("granted_scopes".to_owned(), scopes),
        ("granted_purposes".to_owned(), purposes),
        ("granted_accounts".to_owned(), accounts),
        (
            "profile_platform".to_owned(),
            RestrictedExpression::new_entity_uid(vocab.platform(&platform.id)),
        ),
        (
            "registered_purposes".to_owned(),
            RestrictedExpression::new_set(
                platform
                    .registered_purposes
                    .iter()
                    .map(|p| string(p.as_str())),
            ),
        ),
        (
            "enabled_scopes".to_owned(),
            RestrictedExpression::new_set(
                holder_policy
                    .enabled_scopes
                    .iter()
                    .map(|s| string(s.as_str())),
            ),
        ),
        (
            "unattended".to_owned(),
            RestrictedExpression::new_bool(request.presence == Presence::Unattended),
        ),
        (
            "unattended_today".to_owned(),
            RestrictedExpression::new_long(i64::from(usage.unattended_today)),
        ),
        (
            "limit".to_owned(),
            RestrictedExpression::new_long(i64::from(holder_policy.unattended_daily_limit)),
        ),
    ])
    .unwrap();
    Request::new(
        vocab.platform(&request.platform),
        vocab.action.clone(),
        vocab.account(&request.account),
        context,
        None,
    )
    .unwrap()
}

/// One set of inputs to both deciders.
struct Case {
    name: &'static str,
    access: AccessRequest,
    consent: Option<Consent>,
    policy: HolderPolicy,
    profile: PlatformProfile,
    usage: Usage,
    now: OffsetDateTime,
    permit: bool,
}

fn grid(s: &support::Setup) -> Vec<Case> {
    let now = s.broker.now();
    let base = Case {
        name: "permit",
        access: s.access.clone(),
        consent: Some(s.consent.clone()),
        policy: s.policy.clone(),
        profile: s.profile.clone(),
        usage: Usage::default(),
        now,
        permit: true,
    };
    let with = |name, permit, change: &dyn Fn(&mut Case)| {
        let mut case = Case {
            name,
            access: base.access.clone(),
            consent: base.consent.clone(),
            policy: base.policy.clone(),
            profile: base.profile.clone(),
            usage: base.usage,
            now: base.now,
            permit,
        };
        change(&mut case);
        case
    };
    let ConsentState::Authorised { grant } = s.consent.state() else {
        panic!("the setup's consent is authorised");
    };
    let mut cases = vec![
        with("scope_not_granted", false, &|c| {
            c.access.scope = Scope::Alerts.into();
        }),
        with("purpose_not_granted", false, &|c| {
            c.access.purpose = Purpose::FraudProtection.into();
        }),
        with("purpose_ads", false, &|c| {
            c.access.purpose = RequestedPurpose::Prohibited(ProhibitedUse::Ads);
        }),
        with("purpose_data_sale", false, &|c| {
            c.access.purpose = RequestedPurpose::Prohibited(ProhibitedUse::DataSale);
        }),
        with("scope_cross_selling", false, &|c| {
            c.access.scope = RequestedScope::Prohibited(ProhibitedUse::CrossSelling);
        }),
        with("revoked", false, &|c| {
            let grant = serde_json::to_value(grant).unwrap();
            c.consent = Some(in_state(
                &s.consent,
                serde_json::json!({
                    "state": "revoked", "grant": grant, "by": "subject",
                    "reason": "subject_withdrew", "at": now.unix_timestamp(),
                }),
            ));
        }),
        with("requested", false, &|c| {
            c.consent = Some(in_state(
                &s.consent,
                serde_json::json!({ "state": "requested" }),
            ));
        }),
        with("rejected", false, &|c| {
            c.consent = Some(in_state(
                &s.consent,
                serde_json::json!({ "state": "rejected", "at": now.unix_timestamp() }),
            ));
        }),
        with("unknown_consent", false, &|c| c.consent = None),
        with("expired", false, &|c| c.now = now + Duration::days(91)),
        with("expired_exactly", false, &|c| c.now = grant.expires_at()),
        with("not_yet_expired", true, &|c| {
            c.now = grant.expires_at() - Duration::nanoseconds(1);
        }),
        with("wrong_account", false, &|c| {
            c.access.account = "acc-2".parse().unwrap();
        }),
        with("wrong_platform", false, &|c| {
            c.access.platform = "other".parse().unwrap();
        }),
        with("purpose_not_registered", false, &|c| {
            c.profile.registered_purposes = [Purpose::FraudProtection].into();
        }),
        with("holder_forbids_scope", false, &|c| {
            c.policy.enabled_scopes = [Scope::Alerts].into();
        }),
        with("unattended_under_limit", true, &|c| {
            c.access.presence = Presence::Unattended;
            c.usage.unattended_today = c.policy.unattended_daily_limit - 1;
        }),
        with("frequency_exceeded", false, &|c| {
            c.access.presence = Presence::Unattended;
            c.usage.unattended_today = c.policy.unattended_daily_limit;
        }),
        with("present_over_limit", true, &|c| {
            c.usage.unattended_today = c.policy.unattended_daily_limit + 10;
        }),
    ];
    cases.insert(0, base);
    cases
}

/// `consent` in another lifecycle state, through the stored form (a consent's state changes only
/// through the broker's transitions; the grid needs every state side by side).
fn in_state(consent: &Consent, state: serde_json::Value) -> Consent {
    let mut stored = serde_json::to_value(consent).unwrap();
    stored["state"] = state;
    Consent::from_stored(stored.to_string().as_bytes()).unwrap()
}

/// Cedar must decide every case of the grid as `evaluate` does.
fn check_agreement(
    s: &support::Setup,
    vocab: &Vocabulary,
    authorizer: &Authorizer,
    policies: &PolicySet,
    entities: &Entities,
) {
    let cases = grid(s);
    for case in &cases {
        let ours = evaluate(
            &case.access,
            case.consent.as_ref(),
            &case.policy,
            &case.profile,
            case.usage,
            case.now,
        );
        let request = cedar_request(
            vocab,
            &case.access,
            case.consent.as_ref(),
            &case.policy,
            &case.profile,
            case.usage,
            case.now,
        );
        let response = authorizer.is_authorized(&request, policies, entities);
        assert!(
            response.diagnostics().errors().next().is_none(),
            "{}: Cedar reported errors: {:?}",
            case.name,
            response.diagnostics().errors().collect::<Vec<_>>()
        );
        let theirs = response.decision() == cedar::Decision::Allow;
        assert_eq!(
            ours.is_permit(),
            case.permit,
            "{}: evaluate gave {ours:?}",
            case.name
        );
        assert_eq!(
            theirs,
            ours.is_permit(),
            "{}: Cedar {:?}, evaluate {ours:?}",
            case.name,
            response.decision()
        );
    }
    eprintln!(
        "cedar: {} cases, Cedar and evaluate agree on every one",
        cases.len()
    );
}

/// Mean time per call of `f` over `n` calls.
fn per_call<R>(n: u32, mut f: impl FnMut() -> R) -> StdDuration {
    for _ in 0..n / 10 {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    start.elapsed() / n
}

fn bench(c: &mut Criterion) {
    let s = support::setup();
    let vocab = Vocabulary::new();
    let policies = PolicySet::from_str(POLICIES).unwrap();
    let entities = Entities::empty();
    let authorizer = Authorizer::new();
    check_agreement(&s, &vocab, &authorizer, &policies, &entities);

    let now = s.broker.now();
    let ads = AccessRequest {
        purpose: RequestedPurpose::Prohibited(ProhibitedUse::Ads),
        ..s.access.clone()
    };
    let build = |access: &AccessRequest| {
        cedar_request(
            &vocab,
            access,
            Some(&s.consent),
            &s.policy,
            &s.profile,
            Usage::default(),
            now,
        )
    };
    let permit_request = build(&s.access);
    let ads_request = build(&ads);

    let ours = |access: &AccessRequest| {
        evaluate(
            black_box(access),
            Some(&s.consent),
            &s.policy,
            &s.profile,
            Usage::default(),
            now,
        )
    };
    let prepared =
        |request: &Request| authorizer.is_authorized(black_box(request), &policies, &entities);
    let built_in_loop = |access: &AccessRequest| {
        let request = cedar_request(
            &vocab,
            black_box(access),
            Some(&s.consent),
            &s.policy,
            &s.profile,
            Usage::default(),
            now,
        );
        authorizer.is_authorized(&request, &policies, &entities)
    };

    let mut group = c.benchmark_group("cedar");
    group.bench_function("evaluate/permit", |b| b.iter(|| ours(&s.access)));
    group.bench_function("evaluate/deny_ads", |b| b.iter(|| ours(&ads)));
    group.bench_function("cedar/permit_prepared", |b| {
        b.iter(|| prepared(&permit_request).decision())
    });
    group.bench_function("cedar/deny_ads_prepared", |b| {
        b.iter(|| prepared(&ads_request).decision())
    });
    group.bench_function("cedar/permit_built_in_loop", |b| {
        b.iter(|| built_in_loop(&s.access).decision())
    });
    group.finish();

    const N: u32 = 200_000;
    let ours_permit = per_call(N, || ours(&s.access));
    let ours_deny = per_call(N, || ours(&ads));
    let cedar_permit = per_call(N, || prepared(&permit_request).decision());
    let cedar_deny = per_call(N, || prepared(&ads_request).decision());
    let cedar_permit_built = per_call(N, || built_in_loop(&s.access).decision());
    let cedar_deny_built = per_call(N, || built_in_loop(&ads).decision());
    let ratio = |theirs: StdDuration, ours: StdDuration| theirs.as_secs_f64() / ours.as_secs_f64();
    eprintln!("cedar/evaluate, mean of {N} calls each:");
    eprintln!(
        "  permit: evaluate {ours_permit:?}; Cedar prepared {cedar_permit:?} ({:.1}x), \
         built in loop {cedar_permit_built:?} ({:.1}x)",
        ratio(cedar_permit, ours_permit),
        ratio(cedar_permit_built, ours_permit),
    );
    eprintln!(
        "  deny (ads): evaluate {ours_deny:?}; Cedar prepared {cedar_deny:?} ({:.1}x), \
         built in loop {cedar_deny_built:?} ({:.1}x)",
        ratio(cedar_deny, ours_deny),
        ratio(cedar_deny_built, ours_deny),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! What the review of the first round found, each as the attack or mistake it allowed. Every
//! test here failed on the code before the fix (the note on each says how).

use std::sync::Arc;

use consent_broker::time::{Duration, OffsetDateTime, UtcOffset};
use consent_broker::*;

use crate::support::*;

/// Before: `issue_token` checked only the consent's version, so a permit decided at 09:00 still
/// became a token hours later. Now it lapses after the permit lifetime (60 s by default).
#[test]
fn a_permit_lapses_after_its_lifetime() {
    let fx = Fixture::new();
    let request = fx.granted();
    let decide = || match fx
        .broker
        .authorise_access(&fx.access(request.id()))
        .unwrap()
    {
        AccessOutcome::Permitted(permit) => permit,
        AccessOutcome::Denied(denial) => panic!("expected a permit: {denial:?}"),
    };
    let permit = decide();
    assert_eq!(permit.lapses_at(), START + Duration::seconds(60));
    fx.clock.advance(Duration::seconds(59));
    assert!(fx.broker.issue_token(permit).is_ok(), "within its lifetime");

    let permit = decide();
    fx.clock.advance(Duration::seconds(60));
    let len = fx.audit_len();
    assert_eq!(
        fx.broker.issue_token(permit),
        Err(Error::PermitLapsed(request.id().clone()))
    );
    assert_eq!(fx.audit_len(), len, "a lapsed permit issues nothing");

    // Configurable, within 1 s to 15 minutes.
    let strict = Fixture::with_builder(MemoryStore::new(), |b| b.permit_lifetime(Duration::SECOND));
    let request = strict.granted();
    let AccessOutcome::Permitted(permit) = strict
        .broker
        .authorise_access(&strict.access(request.id()))
        .unwrap()
    else {
        panic!("expected a permit");
    };
    strict.clock.advance(Duration::SECOND);
    assert_eq!(
        strict.broker.issue_token(permit),
        Err(Error::PermitLapsed(request.id().clone()))
    );
    for bad in [Duration::ZERO, Duration::minutes(16)] {
        let built = Broker::builder(id("broker"), MemoryStore::new())
            .keys(keys())
            .permit_lifetime(bad)
            .build();
        assert!(
            matches!(built, Err(Error::InvalidPermitLifetime { .. })),
            "{bad}"
        );
    }
}

/// Before: a permit decided while the bank shared `balance` became a `balance` token after the
/// bank stopped sharing it. Now the holder's policy must be as it was at the decision.
#[test]
fn a_permit_decided_before_a_policy_change_never_becomes_a_token() {
    let fx = Fixture::new();
    let request = fx.granted();
    let AccessOutcome::Permitted(permit) = fx
        .broker
        .authorise_access(&fx.access(request.id()))
        .unwrap()
    else {
        panic!("expected a permit");
    };
    fx.set_policy(HolderPolicy {
        enabled_scopes: ScopeSet::from([Scope::Alerts]),
        ..HolderPolicy::default()
    })
    .unwrap();
    let len = fx.audit_len();
    assert_eq!(
        fx.broker.issue_token(permit),
        Err(Error::PermitStale(request.id().clone()))
    );
    assert_eq!(fx.audit_len(), len, "no token issued, nothing recorded");
    // Decided again, the access is refused for the new policy.
    assert_eq!(
        fx.decide(&fx.access(request.id())).reasons(),
        [DenyReason::HolderForbidsScope {
            scope: Scope::Balance
        }]
    );
}

/// Before: a subject's history included an entry naming a consent id if it was made in the same
/// second as (or after) the consent's request, even before it: a platform that probed for the
/// next sequential id just before requesting it had its probe shown as the subject's. Now the
/// entry that requested the consent must come first in the log.
#[test]
fn a_probe_for_a_consent_id_before_its_request_is_not_in_the_subjects_history() {
    let fx = Fixture::new();
    let probe = fx
        .broker
        .authorise_access(&fx.access(&id("cns_1")))
        .unwrap();
    assert_eq!(
        probe.decision().reasons(),
        [DenyReason::UnknownConsent],
        "cns_1 does not exist yet"
    );
    let request = fx.request();
    assert_eq!(request.id().as_str(), "cns_1");
    assert_eq!(
        request.requested_at(),
        START,
        "the same second as the probe"
    );
    let history = fx.broker.subject_history(&fx.alice).unwrap();
    assert!(
        history.iter().all(|e| e.seq != probe.audit_seq()),
        "{history:#?}"
    );
    assert_eq!(
        history.iter().map(AuditEntry::kind).collect::<Vec<_>>(),
        [AuditKind::ConsentRequested]
    );
    // A denial naming the consent after its request is the subject's.
    let later = fx
        .broker
        .authorise_access(&fx.access(request.id()))
        .unwrap();
    fx.broker.assert_history(
        &fx.alice,
        &[AuditKind::ConsentRequested, AuditKind::AccessDenied],
    );
    assert_eq!(
        fx.broker
            .subject_history(&fx.alice)
            .unwrap()
            .last()
            .map(|e| e.seq),
        Some(later.audit_seq())
    );
}

/// A clock that reads a manual clock at another offset, as a host's local clock would.
struct AtOffset(Arc<ManualClock>, UtcOffset);

impl Clock for AtOffset {
    fn now(&self) -> OffsetDateTime {
        self.0.now().to_offset(self.1)
    }
}

/// Before: the day of the unattended limit was the date at whatever offset the injected clock
/// returned, so a clock at +14:00 started a new "day" at 10:00 UTC and allowed four more
/// unattended accesses on the same UTC day. Now it is the UTC day.
#[test]
fn the_daily_limit_counts_utc_days_whatever_the_clocks_offset() {
    let manual = Arc::new(ManualClock::new(START));
    let offset = UtcOffset::from_hms(14, 0, 0).unwrap();
    let fx = Fixture::with_builder(MemoryStore::new(), |b| {
        b.clock(Arc::new(AtOffset(Arc::clone(&manual), offset)))
    });
    let request = fx.granted();
    let poll = AccessRequest {
        presence: Presence::Unattended,
        ..fx.access(request.id())
    };
    // 09:00 UTC is 23:00 at +14:00; 11:00 UTC is 01:00 the next local day, the same UTC day.
    for _ in 0..4 {
        assert_eq!(fx.decide(&poll), Decision::Permit);
    }
    manual.advance(Duration::hours(2));
    assert_eq!(
        fx.decide(&poll).reasons(),
        [DenyReason::FrequencyExceeded { limit: 4 }]
    );
    assert_eq!(fx.broker.now().offset(), UtcOffset::UTC);
    // The next UTC day allows four again.
    manual.set(START + Duration::hours(15));
    assert_eq!(fx.decide(&poll), Decision::Permit);
}

/// Before: when the system random source failed, consent ids fell back to a counter
/// (`cns_fallback-0`, …) that anyone could predict. Now the request fails, typed, recording
/// nothing; token ids likewise.
#[test]
fn when_randomness_fails_nothing_predictable_is_made_and_nothing_is_recorded() {
    let fx = Fixture::with_builder(MemoryStore::new(), |b| {
        b.ids(Arc::new(RandomIds::from_source(Arc::new(
            FailingRandom::always(),
        ))))
    });
    let len = fx.audit_len();
    let refused = fx.broker.request_consent(fx.draft());
    assert_eq!(refused, Err(Error::Id(IdError::RandomnessUnavailable)));
    assert!(refused.unwrap_err().is_retryable());
    assert_eq!(fx.audit_len(), len);
    assert!(fx.broker.consents_of(&fx.alice).unwrap().is_empty());

    // A subject's key: without randomness there is none, and nothing is recorded.
    let fx = Fixture::with_builder(MemoryStore::new(), |b| {
        b.random(Arc::new(FailingRandom::always()))
    });
    let len = fx.audit_len();
    assert_eq!(
        fx.broker.request_consent(fx.draft()),
        Err(Error::Key(KeyError::RandomnessUnavailable))
    );
    assert_eq!(fx.audit_len(), len);
    assert_eq!(fx.broker.store().subject_key(&fx.alice).unwrap(), None);

    // Token ids: the permit and its token are one commit, so neither is recorded, and no
    // unattended slot is spent. (Two successes: the subject's key, made at the request, and the
    // nonce that seals the attestation at the approval.)
    let fx = Fixture::with_builder(MemoryStore::new(), |b| {
        b.random(Arc::new(FailingRandom::after(2)))
    });
    let request = fx.granted();
    let poll = AccessRequest {
        presence: Presence::Unattended,
        ..fx.access(request.id())
    };
    let len = fx.audit_len();
    assert_eq!(
        fx.broker.authorise_with_token(&poll),
        Err(Error::Key(KeyError::RandomnessUnavailable))
    );
    assert_eq!(fx.audit_len(), len);
    assert_eq!(
        fx.broker.store().usage(request.id(), START.date()).unwrap(),
        Usage::default()
    );
}

/// The approval window is half-open: an approval at the deadline itself is refused, as the
/// code always did; the documentation said "after" (now: "from this instant on").
#[test]
fn an_approval_at_the_deadline_itself_is_refused() {
    let fx = Fixture::new();
    let request = fx.request();
    let token = fx.attest(&fx.full_statement(&request));
    fx.clock.set(request.approval_deadline());
    assert!(matches!(
        fx.broker.approve(request.id(), &token),
        Err(Error::Consent(ConsentError::ApprovalWindowClosed { .. }))
    ));
}

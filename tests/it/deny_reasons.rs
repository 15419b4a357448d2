//! Each deny reason, as a bank's auditor would check it: the exact decision, the exact reasons,
//! and the audit entry the decision wrote.

use crate::support::*;
use consent_broker::*;
use time::Duration;

/// Asserts that the last audit entry records exactly this access decision.
fn assert_audited(
    fx: &Fixture,
    access: &AccessRequest,
    decision: &Decision,
    subject: Option<&SubjectId>,
) {
    let entry = fx.last_audit();
    let kind = if decision.is_permit() {
        AuditKind::AccessPermitted
    } else {
        AuditKind::AccessDenied
    };
    assert_eq!(entry.kind(), kind);
    assert_eq!(entry.actor, Actor::Platform(access.platform.clone()));
    assert_eq!(entry.consent(), Some(&access.consent));
    // The subject and the account by their pseudonyms, and only when the consent is known and
    // the platform asking is the consent's own: another platform learns nothing from the log
    // about the subject's accounts, and cannot write into the subject's history.
    let own = fx
        .broker
        .consent(&access.consent)
        .is_ok_and(|view| view.consent.request().platform() == &access.platform);
    let subject = subject.filter(|_| own);
    assert_eq!(entry.subject(), subject.map(|s| fx.pseudonym(s)).as_ref());
    assert_eq!(entry.event.scope(), Some(access.scope));
    assert_eq!(entry.event.purpose(), Some(access.purpose));
    assert_eq!(
        entry.event.account(),
        subject
            .map(|s| fx.account_pseudonym(s, &access.account))
            .as_ref()
    );
    assert_eq!(entry.event.presence(), Some(access.presence));
    let reasons: Vec<DenyReason> = match subject {
        Some(subject) => fx.logged_reasons(subject, decision.reasons()),
        // Without a subject, a reason naming an account is not kept.
        None => reasons_without_accounts(decision.reasons()),
    };
    assert_eq!(entry.reasons(), reasons);
    assert_eq!(entry.at, fx.broker.now());
}

fn deny(reasons: Vec<DenyReason>) -> Decision {
    Decision::Deny { reasons }
}

#[test]
fn a_covered_access_is_permitted_and_the_permit_is_recorded() {
    let fx = Fixture::new();
    let request = fx.granted();
    let access = fx.access(request.id());
    let before = fx.audit_len();
    let AccessOutcome::Permitted(permit) = fx.broker.authorise_access(&access).unwrap() else {
        panic!("expected a permit");
    };
    assert_eq!(fx.audit_len(), before + 1);
    assert_eq!(permit.audit_seq(), before);
    assert_eq!(permit.consent(), request.id());
    assert_eq!(permit.subject(), &fx.alice);
    assert_eq!(permit.holder(), &fx.bank);
    assert_eq!(
        (permit.scope(), permit.purpose()),
        (Scope::Balance, Purpose::CustomerService)
    );
    assert_eq!(permit.account(), &fx.current);
    assert_audited(&fx, &access, &Decision::Permit, Some(&fx.alice));
}

#[test]
fn prohibited_purposes_are_refused_before_any_grant_lookup() {
    let fx = Fixture::new();
    let request = fx.granted();
    for prohibited in ProhibitedUse::ALL {
        let access = AccessRequest {
            purpose: RequestedPurpose::Prohibited(prohibited),
            ..fx.access(request.id())
        };
        let expected = deny(vec![DenyReason::ProhibitedPurpose { prohibited }]);
        assert_eq!(fx.decide(&access), expected);
        // No grant was consulted, so the entry does not even name the subject.
        assert_audited(&fx, &access, &expected, None);
    }
    // Decided before lookup: an unknown consent gives the same single reason, not UnknownConsent.
    let unknown = AccessRequest {
        purpose: "ads".parse().unwrap(),
        ..fx.access(&id("cns_nope"))
    };
    assert_eq!(
        fx.decide(&unknown),
        deny(vec![DenyReason::ProhibitedPurpose {
            prohibited: ProhibitedUse::Ads
        }])
    );
}

#[test]
fn ads_as_a_scope_is_refused_the_same_way() {
    let fx = Fixture::new();
    let request = fx.granted();
    let access = AccessRequest {
        scope: "ads".parse().unwrap(),
        ..fx.access(request.id())
    };
    let expected = deny(vec![DenyReason::ProhibitedScope {
        prohibited: ProhibitedUse::Ads,
    }]);
    assert_eq!(fx.decide(&access), expected);
    assert_audited(&fx, &access, &expected, None);
    // Both at once: both reasons.
    let both = AccessRequest {
        purpose: "data_sale".parse().unwrap(),
        ..access
    };
    assert_eq!(
        fx.decide(&both),
        deny(vec![
            DenyReason::ProhibitedPurpose {
                prohibited: ProhibitedUse::DataSale
            },
            DenyReason::ProhibitedScope {
                prohibited: ProhibitedUse::Ads
            },
        ])
    );
}

#[test]
fn no_configuration_lever_permits_a_prohibited_use() {
    // The most permissive holder policy: every scope, the longest duration, an enormous limit.
    let permissive = HolderPolicy {
        enabled_scopes: ScopeSet::from(Scope::ALL),
        max_consent_duration: Duration::days(365),
        unattended_daily_limit: u32::MAX,
        plaintext: Scope::ALL
            .into_iter()
            .flat_map(|scope| Purpose::ALL.map(|purpose| (scope, purpose)))
            .collect(),
    };
    let fx = Fixture::with_policy(MemoryStore::new(), permissive.clone());
    // The widest grant: every scope, every purpose, subject-chosen accounts, the longest duration.
    let request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            scopes: Scope::ALL
                .iter()
                .map(|s| RequestedScope::Data(*s))
                .collect(),
            purposes: Purpose::ALL
                .iter()
                .map(|p| RequestedPurpose::Permitted(*p))
                .collect(),
            accounts: AccountSelection::SubjectChooses,
            duration: Duration::days(365),
            ..fx.draft()
        })
        .unwrap();
    let mut statement = fx.full_statement(&request);
    statement.accounts = AccountSet::from([fx.current.clone(), fx.savings.clone()]);
    fx.broker
        .approve(request.id(), &fx.attest(&statement))
        .unwrap();
    // Sanity: the levers really are wide open for a grantable purpose.
    for scope in Scope::ALL {
        for presence in [Presence::SubjectPresent, Presence::Unattended] {
            let access = AccessRequest {
                scope: scope.into(),
                presence,
                ..fx.access(request.id())
            };
            assert_eq!(fx.decide(&access), Decision::Permit, "{scope} {presence:?}");
        }
    }
    // The pure core with every input as permissive as its type allows.
    let profile = PlatformProfile {
        id: fx.platform.clone(),
        registered_purposes: PurposeSet::from(Purpose::ALL),
    };
    let consent = fx.broker.consent(request.id()).unwrap().consent;
    for prohibited in ProhibitedUse::ALL {
        for scope in Scope::ALL {
            for account in [&fx.current, &fx.savings] {
                for presence in [Presence::SubjectPresent, Presence::Unattended] {
                    let as_purpose = AccessRequest {
                        scope: scope.into(),
                        purpose: RequestedPurpose::Prohibited(prohibited),
                        account: account.clone(),
                        presence,
                        ..fx.access(request.id())
                    };
                    let expected = deny(vec![DenyReason::ProhibitedPurpose { prohibited }]);
                    assert_eq!(fx.decide(&as_purpose), expected);
                    let pure = evaluate(
                        &as_purpose,
                        Some(&consent),
                        &permissive,
                        &profile,
                        Usage::default(),
                        fx.broker.now(),
                    );
                    assert_eq!(pure, expected);
                }
            }
        }
        let as_scope = AccessRequest {
            scope: RequestedScope::Prohibited(prohibited),
            ..fx.access(request.id())
        };
        assert_eq!(
            fx.decide(&as_scope),
            deny(vec![DenyReason::ProhibitedScope { prohibited }])
        );
        // And a prohibited use cannot even enter a grant, a request or a platform profile.
        assert!(prohibited.as_str().parse::<Purpose>().is_err());
        assert!(prohibited.as_str().parse::<Scope>().is_err());
        let draft = ConsentRequestDraft {
            purposes: vec![RequestedPurpose::Prohibited(prohibited)],
            ..fx.draft()
        };
        assert_eq!(
            fx.broker.request_consent(draft),
            Err(Error::Request(RequestError::ProhibitedPurpose(prohibited)))
        );
    }
    // No entry in the whole log permits a prohibited use.
    for entry in fx.audit() {
        if entry.kind() == AuditKind::AccessPermitted {
            assert!(matches!(
                entry.event.purpose(),
                Some(RequestedPurpose::Permitted(_))
            ));
            assert!(matches!(entry.event.scope(), Some(RequestedScope::Data(_))));
        }
    }
}

#[test]
fn unknown_consent() {
    let fx = Fixture::new();
    let access = fx.access(&id("cns_404"));
    let expected = deny(vec![DenyReason::UnknownConsent]);
    assert_eq!(fx.decide(&access), expected);
    assert_audited(&fx, &access, &expected, None);
}

#[test]
fn wrong_platform() {
    let fx = Fixture::new();
    fx.broker
        .register_platform(PlatformProfile {
            id: id("other-app"),
            registered_purposes: PurposeSet::from(Purpose::ALL),
        })
        .unwrap();
    let request = fx.granted();
    let access = AccessRequest {
        platform: id("other-app"),
        ..fx.access(request.id())
    };
    let expected = deny(vec![DenyReason::WrongPlatform]);
    assert_eq!(fx.decide(&access), expected);
    assert_audited(&fx, &access, &expected, Some(&fx.alice));
}

/// A platform naming another platform's consent is refused for that alone: the answer says
/// nothing else about the grant (not that its purposes are not the stranger's, not whether an
/// account it guesses is the subject's). (`PurposeNotRegistered` for the consent's own platform
/// is covered by the model-based test, whose `chat-cs` is registered for one purpose.)
#[test]
fn another_platforms_consent_is_refused_for_that_alone() {
    let fx = Fixture::new();
    let request = fx.granted();
    for account in [fx.current.clone(), fx.savings.clone(), id("acc-guess")] {
        let access = AccessRequest {
            platform: id("stranger"),
            account,
            ..fx.access(request.id())
        };
        let expected = deny(vec![DenyReason::WrongPlatform]);
        assert_eq!(fx.decide(&access), expected);
        assert_audited(&fx, &access, &expected, Some(&fx.alice));
    }
}

#[test]
fn not_authorised_while_requested() {
    let fx = Fixture::new();
    let request = fx.request();
    let access = fx.access(request.id());
    let expected = deny(vec![DenyReason::NotAuthorised]);
    assert_eq!(fx.decide(&access), expected);
    assert_audited(&fx, &access, &expected, Some(&fx.alice));
}

#[test]
fn rejected() {
    let fx = Fixture::new();
    let request = fx.request();
    fx.broker.reject(request.id()).unwrap();
    assert_eq!(
        fx.decide(&fx.access(request.id())),
        deny(vec![DenyReason::Rejected])
    );
}

#[test]
fn revoked_by_each_party() {
    for by in [Revoker::Subject, Revoker::Holder, Revoker::Platform] {
        let fx = Fixture::new();
        let request = fx.granted();
        let access = fx.access(request.id());
        assert_eq!(fx.decide(&access), Decision::Permit);
        fx.revoke(request.id(), by, RevocationReason::SubjectWithdrew)
            .unwrap();
        let expected = deny(vec![DenyReason::Revoked { by }]);
        assert_eq!(fx.decide(&access), expected);
        assert_audited(&fx, &access, &expected, Some(&fx.alice));
    }
}

#[test]
fn expired_is_derived_from_the_clock() {
    let fx = Fixture::new();
    let request = fx.granted();
    let expires_at = fx
        .broker
        .consent(request.id())
        .unwrap()
        .consent
        .grant()
        .unwrap()
        .expires_at();
    let access = fx.access(request.id());
    fx.clock.set(expires_at - Duration::seconds(1));
    assert_eq!(fx.decide(&access), Decision::Permit);
    fx.clock.set(expires_at);
    let expected = deny(vec![DenyReason::Expired { at: expires_at }]);
    assert_eq!(fx.decide(&access), expected);
    assert_audited(&fx, &access, &expected, Some(&fx.alice));
    // Nothing was written to the consent when it expired: the status is derived from the clock.
    assert_eq!(
        fx.broker.consent(request.id()).unwrap().status,
        ConsentStatus::Expired
    );
}

#[test]
fn scope_purpose_and_account_not_granted_after_a_partial_approval() {
    let fx = Fixture::new();
    let request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            purposes: vec![Purpose::CustomerService.into()],
            ..fx.draft()
        })
        .unwrap();
    let mut statement = fx.full_statement(&request);
    statement.scopes = ScopeSet::from([Scope::Balance]);
    statement.accounts = AccountSet::from([fx.current.clone()]);
    fx.broker
        .approve(request.id(), &fx.attest(&statement))
        .unwrap();

    let alerts = AccessRequest {
        scope: Scope::Alerts.into(),
        ..fx.access(request.id())
    };
    assert_eq!(
        fx.decide(&alerts),
        deny(vec![DenyReason::ScopeNotGranted {
            scope: Scope::Alerts
        }])
    );
    let fraud = AccessRequest {
        purpose: Purpose::FraudProtection.into(),
        ..fx.access(request.id())
    };
    assert_eq!(
        fx.decide(&fraud),
        deny(vec![DenyReason::PurposeNotGranted {
            purpose: Purpose::FraudProtection
        }])
    );
    let savings = AccessRequest {
        account: fx.savings.clone(),
        ..fx.access(request.id())
    };
    let expected = deny(vec![DenyReason::AccountNotGranted {
        account: fx.savings.clone(),
    }]);
    assert_eq!(fx.decide(&savings), expected);
    assert_audited(&fx, &savings, &expected, Some(&fx.alice));
}

#[test]
fn holder_forbids_a_scope_after_the_grant() {
    let fx = Fixture::new();
    let request = fx.granted();
    let alerts = AccessRequest {
        scope: Scope::Alerts.into(),
        ..fx.access(request.id())
    };
    assert_eq!(fx.decide(&alerts), Decision::Permit);
    let policy = HolderPolicy {
        enabled_scopes: ScopeSet::from([Scope::Balance]),
        ..HolderPolicy::default()
    };
    fx.set_policy(policy).unwrap();
    assert_eq!(fx.last_audit().kind(), AuditKind::HolderPolicyChanged);
    let expected = deny(vec![DenyReason::HolderForbidsScope {
        scope: Scope::Alerts,
    }]);
    assert_eq!(fx.decide(&alerts), expected);
    assert_audited(&fx, &alerts, &expected, Some(&fx.alice));
    assert_eq!(fx.decide(&fx.access(request.id())), Decision::Permit);
}

#[test]
fn transactions_are_refused_unless_the_holder_enables_them() {
    let fx = Fixture::new();
    let request = fx.granted();
    let transactions = AccessRequest {
        scope: Scope::Transactions.into(),
        ..fx.access(request.id())
    };
    assert_eq!(
        fx.decide(&transactions),
        deny(vec![
            DenyReason::ScopeNotGranted {
                scope: Scope::Transactions
            },
            DenyReason::HolderForbidsScope {
                scope: Scope::Transactions
            },
        ])
    );
}

#[test]
fn frequency_counts_each_served_unattended_access_exactly_once() {
    let fx = Fixture::new();
    let request = fx.granted();
    let poll = AccessRequest {
        presence: Presence::Unattended,
        ..fx.access(request.id())
    };
    let day = fx.broker.now().date();
    // A denied unattended access consumes nothing.
    let denied = AccessRequest {
        account: fx.current.clone(),
        scope: Scope::Transactions.into(),
        ..poll.clone()
    };
    assert!(!fx.decide(&denied).is_permit());
    assert_eq!(
        fx.broker
            .store()
            .usage(request.id(), day)
            .unwrap()
            .unattended_today,
        0
    );
    for used in 1..=4 {
        assert_eq!(fx.decide(&poll), Decision::Permit);
        assert_eq!(
            fx.broker
                .store()
                .usage(request.id(), day)
                .unwrap()
                .unattended_today,
            used
        );
        // Subject-present access in between is not counted.
        assert_eq!(fx.decide(&fx.access(request.id())), Decision::Permit);
    }
    let expected = deny(vec![DenyReason::FrequencyExceeded { limit: 4 }]);
    assert_eq!(fx.decide(&poll), expected);
    assert_audited(&fx, &poll, &expected, Some(&fx.alice));
    assert_eq!(
        fx.broker
            .store()
            .usage(request.id(), day)
            .unwrap()
            .unattended_today,
        4
    );
    // A new UTC day starts a new count.
    fx.clock.advance(Duration::days(1));
    assert_eq!(fx.decide(&poll), Decision::Permit);
}

#[test]
fn a_denial_lists_every_rule_that_failed() {
    let fx = Fixture::new();
    fx.broker
        .register_platform(PlatformProfile {
            id: id("other-app"),
            registered_purposes: PurposeSet::new(),
        })
        .unwrap();
    let request = fx
        .broker
        .request_consent(ConsentRequestDraft {
            scopes: vec![Scope::Balance.into()],
            purposes: vec![Purpose::CustomerService.into()],
            accounts: AccountSelection::Listed(AccountSet::from([fx.current.clone()])),
            ..fx.draft()
        })
        .unwrap();
    fx.broker
        .approve(request.id(), &fx.attest(&fx.full_statement(&request)))
        .unwrap();
    // Use up the day's unattended slots.
    let poll = AccessRequest {
        presence: Presence::Unattended,
        ..fx.access(request.id())
    };
    for _ in 0..4 {
        assert_eq!(fx.decide(&poll), Decision::Permit);
    }
    let policy = HolderPolicy {
        enabled_scopes: ScopeSet::from([Scope::Balance]),
        ..HolderPolicy::default()
    };
    fx.set_policy(policy).unwrap();
    fx.revoke(
        request.id(),
        Revoker::Holder,
        RevocationReason::SuspectedMisuse,
    )
    .unwrap();
    // The consent's own platform: every rule about the grant is examined and reported.
    let everything_wrong = AccessRequest {
        platform: fx.platform.clone(),
        scope: Scope::Alerts.into(),
        purpose: Purpose::FraudProtection.into(),
        account: fx.savings.clone(),
        presence: Presence::Unattended,
        consent: request.id().clone(),
    };
    let expected = deny(vec![
        DenyReason::Revoked {
            by: Revoker::Holder,
        },
        DenyReason::ScopeNotGranted {
            scope: Scope::Alerts,
        },
        DenyReason::PurposeNotGranted {
            purpose: Purpose::FraudProtection,
        },
        DenyReason::AccountNotGranted {
            account: fx.savings.clone(),
        },
        DenyReason::HolderForbidsScope {
            scope: Scope::Alerts,
        },
        DenyReason::FrequencyExceeded { limit: 4 },
    ]);
    assert_eq!(fx.decide(&everything_wrong), expected);
    assert_audited(&fx, &everything_wrong, &expected, Some(&fx.alice));
}

#[test]
fn the_pure_call_is_deterministic_and_reads_no_clock() {
    let fx = Fixture::new();
    let request = fx.granted();
    let consent = fx.broker.consent(request.id()).unwrap().consent;
    let expires_at = consent.grant().unwrap().expires_at();
    let profile = PlatformProfile {
        id: fx.platform.clone(),
        registered_purposes: PurposeSet::from(Purpose::ALL),
    };
    let access = fx.access(request.id());
    let policy = HolderPolicy::default();
    // The same inputs give the same answer, whatever the broker's clock says.
    fx.clock.advance(Duration::days(1000));
    let at = |t| {
        evaluate(
            &access,
            Some(&consent),
            &policy,
            &profile,
            Usage::default(),
            t,
        )
    };
    assert_eq!(at(START), Decision::Permit);
    assert_eq!(at(START), at(START));
    assert_eq!(
        at(expires_at),
        deny(vec![DenyReason::Expired { at: expires_at }])
    );
    assert_eq!(
        evaluate(&access, None, &policy, &profile, Usage::default(), START),
        deny(vec![DenyReason::UnknownConsent])
    );
}

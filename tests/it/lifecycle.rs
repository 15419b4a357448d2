//! Each lifecycle transition, with the state it leaves and the audit entry it writes.

use crate::support::*;
use consent_broker::*;
use time::Duration;

#[test]
fn a_request_waits_for_the_subject() {
    let fx = Fixture::new();
    let before = fx.audit_len();
    let request = fx.request();
    assert_eq!(request.id().as_str(), "cns_1");
    assert_eq!(
        request.scopes(),
        ScopeSet::from([Scope::Balance, Scope::Alerts])
    );
    assert_eq!(request.approval_deadline(), START + Duration::minutes(10));
    let view = fx.broker.consent(request.id()).unwrap();
    assert_eq!(view.status, ConsentStatus::Requested);
    assert_eq!(view.consent.version(), 1);
    assert_eq!(view.consent.grant(), None);

    assert_eq!(fx.audit_len(), before + 1);
    let entry = fx.last_audit();
    assert_eq!(entry.seq, before);
    assert_eq!(entry.at, START);
    assert_eq!(entry.actor, Actor::Platform(fx.platform.clone()));
    assert_eq!(
        entry.event,
        AuditEvent::ConsentRequested {
            consent: request.id().clone(),
            subject: fx.pseudonym(&fx.alice),
        }
    );
}

#[test]
fn approval_with_the_holders_attestation_authorises_exactly_what_was_approved() {
    let fx = Fixture::new();
    let request = fx.request();
    let mut statement = fx.full_statement(&request);
    statement.scopes = ScopeSet::from([Scope::Balance]);
    statement.accounts = AccountSet::from([fx.current.clone()]);
    statement.consent_expires_at = START + Duration::days(30);
    let token = fx.attest(&statement);
    fx.clock.advance(Duration::minutes(1));
    let consent = fx.broker.approve(request.id(), &token).unwrap();

    assert_eq!(consent.status(fx.broker.now()), ConsentStatus::Authorised);
    assert_eq!(consent.version(), 2);
    let grant = consent.grant().unwrap();
    assert_eq!(grant.scopes(), ScopeSet::from([Scope::Balance]));
    assert_eq!(grant.purposes(), request.purposes());
    assert_eq!(grant.accounts(), &AccountSet::from([fx.current.clone()]));
    assert_eq!(grant.authorised_at(), START + Duration::minutes(1));
    assert_eq!(grant.expires_at(), START + Duration::days(30));
    assert_eq!(fx.broker.consent(request.id()).unwrap().consent, consent);

    let entry = fx.last_audit();
    assert_eq!(entry.kind(), AuditKind::ConsentApproved);
    assert_eq!(entry.actor, Actor::Holder(fx.bank.clone()));
    assert_eq!(entry.consent(), Some(request.id()));
    assert_eq!(entry.subject(), Some(&fx.pseudonym(&fx.alice)));
    let AuditEvent::ConsentApproved {
        attestation,
        attestation_id: jti,
        attestation_digest,
        ..
    } = &entry.event
    else {
        panic!("not an approval: {entry:?}");
    };
    // The evidence: a commitment in the clear, the attestation itself sealed to the subject.
    assert_eq!(attestation, &None);
    assert_eq!(
        attestation_digest.as_deref(),
        Some(consent_broker::privacy::commitment(token.as_bytes()).as_str())
    );
    assert_eq!(
        fx.broker.open_attestation(&fx.alice, &entry).unwrap(),
        token
    );
    assert!(jti.len() >= 22, "128-bit jti, base64url: {jti}");
}

#[test]
fn rejection_is_final() {
    let fx = Fixture::new();
    let request = fx.request();
    let consent = fx.broker.reject(request.id()).unwrap();
    assert_eq!(consent.status(fx.broker.now()), ConsentStatus::Rejected);
    assert_eq!(consent.state(), &ConsentState::Rejected { at: START });
    let entry = fx.last_audit();
    assert_eq!(
        (entry.at, &entry.actor, &entry.event),
        (
            START,
            // The platform reported it: the log says who asserted it.
            &Actor::Platform(fx.platform.clone()),
            &AuditEvent::ConsentRejected {
                consent: request.id().clone(),
                subject: fx.pseudonym(&fx.alice),
            }
        )
    );
    let token = fx.attest(&fx.full_statement(&request));
    assert!(matches!(
        fx.broker.approve(request.id(), &token),
        Err(Error::Consent(ConsentError::AlreadyDecided {
            status: ConsentStatus::Rejected,
            ..
        }))
    ));
    assert_eq!(fx.broker.consent(request.id()).unwrap().consent, consent);
}

#[test]
fn an_unapproved_request_cannot_be_approved_after_the_window() {
    let fx = Fixture::new();
    let request = fx.request();
    fx.clock.advance(Duration::minutes(10));
    assert_eq!(
        fx.broker.consent(request.id()).unwrap().status,
        ConsentStatus::Expired
    );
    let token = fx.attest(&fx.full_statement(&request));
    let error = ConsentError::ApprovalWindowClosed {
        consent: request.id().clone(),
        deadline: request.approval_deadline(),
    };
    assert_eq!(
        fx.broker.approve(request.id(), &token),
        Err(Error::Consent(error.clone()))
    );
    let entry = fx.last_audit();
    assert_eq!(entry.kind(), AuditKind::ApprovalRefused);
    assert_eq!(
        entry.event.refusal().cloned(),
        Some(Refusal::Lifecycle(error))
    );
    assert_eq!(
        fx.broker.reject(request.id()).map(|_| ()),
        Err(Error::Consent(ConsentError::ApprovalWindowClosed {
            consent: request.id().clone(),
            deadline: request.approval_deadline(),
        }))
    );
}

#[test]
fn the_approval_window_is_configurable() {
    let fx = Fixture::new();
    let broker = Broker::builder(id("broker"), MemoryStore::new())
        .clock(fx.clock.clone())
        .approval_window(Duration::minutes(2))
        .keys(keys())
        .build()
        .unwrap();
    broker
        .register_holder(HolderRegistration {
            id: fx.bank.clone(),
            policy: HolderPolicy::default(),
            attestation_keys: vec![fx.bank_signer().public_key()],
        })
        .unwrap();
    broker
        .register_platform(PlatformProfile {
            id: fx.platform.clone(),
            registered_purposes: PurposeSet::from(Purpose::ALL),
        })
        .unwrap();
    let request = broker.request_consent(fx.draft()).unwrap();
    assert_eq!(request.approval_deadline(), START + Duration::minutes(2));
}

#[test]
fn revocation_by_each_party_is_immediate_and_final() {
    for (by, reason) in [
        (Revoker::Subject, RevocationReason::SubjectWithdrew),
        (Revoker::Holder, RevocationReason::SuspectedMisuse),
        (Revoker::Platform, RevocationReason::NoLongerNeeded),
    ] {
        let fx = Fixture::new();
        let request = fx.granted();
        // The bank's revocation reaches the broker only as its signed instruction; the subject's
        // (in the chat) and the platform's are the platform's word, and the log says so.
        let revoke = || match by {
            Revoker::Holder => fx
                .kit
                .bank
                .instruct(
                    &fx.broker,
                    &Instruction::Revoke {
                        consent: request.id().clone(),
                        by,
                        reason,
                    },
                )
                .map(drop),
            _ => fx.revoke(request.id(), by, reason).map(drop),
        };
        revoke().unwrap();
        let consent = fx.broker.consent(request.id()).unwrap().consent;
        assert_eq!(
            consent.status(fx.broker.now()),
            ConsentStatus::Revoked { by, reason }
        );
        assert_eq!(consent.version(), 3);
        let (actor, signed) = match by {
            Revoker::Holder => (Actor::Holder(fx.bank.clone()), true),
            _ => (Actor::Platform(fx.platform.clone()), false),
        };
        let entry = fx.last_audit();
        assert_eq!((entry.at, &entry.actor), (START, &actor));
        match &entry.event {
            AuditEvent::ConsentRevoked {
                consent,
                subject,
                revocation,
                instruction,
                holder,
            } => {
                assert_eq!(holder.as_ref(), Some(&fx.bank));
                assert_eq!(consent, request.id());
                assert_eq!(subject, &fx.pseudonym(&fx.alice));
                assert_eq!(revocation, &Revocation { by, reason });
                assert_eq!(instruction.is_some(), signed);
            }
            other => panic!("not a revocation: {other:?}"),
        }
        // Final: no second revocation, no re-authorisation, no approval; nothing written.
        let len = fx.audit_len();
        assert!(matches!(
            revoke(),
            Err(Error::Consent(ConsentError::NotLive { .. }))
        ));
        let mut statement = fx.full_statement(&request);
        statement.consent_expires_at = START + Duration::days(90);
        assert!(matches!(
            fx.broker.reauthorise(request.id(), &fx.attest(&statement)),
            Err(Error::Consent(ConsentError::NotLive {
                status: ConsentStatus::Revoked { .. },
                ..
            }))
        ));
        assert_eq!(
            fx.audit().pop().unwrap().kind(),
            AuditKind::ReauthorisationRefused
        );
        assert_eq!(fx.audit_len(), len + 1);
        assert_eq!(fx.broker.consent(request.id()).unwrap().consent, consent);
        assert!(!fx.decide(&fx.access(request.id())).is_permit());
    }
}

#[test]
fn expiry_is_derived_and_final() {
    let fx = Fixture::new();
    let request = fx.granted();
    let consent = fx.broker.consent(request.id()).unwrap().consent;
    let expires_at = consent.grant().unwrap().expires_at();
    assert_eq!(expires_at, START + Duration::days(90));
    fx.clock.set(expires_at);
    assert_eq!(
        fx.broker.consent(request.id()).unwrap().status,
        ConsentStatus::Expired
    );
    // Nothing was written when it expired.
    assert_eq!(
        fx.broker.consent(request.id()).unwrap().consent.version(),
        consent.version()
    );
    assert!(matches!(
        fx.revoke(
            request.id(),
            Revoker::Subject,
            RevocationReason::SubjectWithdrew
        ),
        Err(Error::Consent(ConsentError::NotLive {
            status: ConsentStatus::Expired,
            ..
        }))
    ));
    let mut statement = fx.full_statement(&request);
    statement.consent_expires_at = fx.broker.now() + Duration::days(30);
    assert!(matches!(
        fx.broker.reauthorise(request.id(), &fx.attest(&statement)),
        Err(Error::Consent(ConsentError::NotLive {
            status: ConsentStatus::Expired,
            ..
        }))
    ));
}

#[test]
fn reauthorisation_extends_a_live_grant() {
    let fx = Fixture::new();
    let request = fx.granted();
    let first_expiry = START + Duration::days(90);
    fx.clock.advance(Duration::days(60));
    let mut statement = fx.full_statement(&request);
    statement.consent_expires_at = fx.broker.now() + Duration::days(90);
    let consent = fx
        .broker
        .reauthorise(request.id(), &fx.attest(&statement))
        .unwrap();
    let grant = consent.grant().unwrap();
    assert!(grant.expires_at() > first_expiry);
    assert_eq!(grant.expires_at(), START + Duration::days(150));
    assert_eq!(grant.authorised_at(), START + Duration::days(60));
    assert_eq!(consent.version(), 3);
    let entry = fx.last_audit();
    assert_eq!(entry.kind(), AuditKind::ConsentReauthorised);
    assert_eq!(entry.actor, Actor::Holder(fx.bank.clone()));
    // Past the first expiry, the extended grant still permits.
    fx.clock.set(first_expiry + Duration::days(1));
    assert_eq!(fx.decide(&fx.access(request.id())), Decision::Permit);
    // Never beyond the holder's maximum from now.
    statement.consent_expires_at = fx.broker.now() + Duration::days(91);
    assert!(matches!(
        fx.broker.reauthorise(request.id(), &fx.attest(&statement)),
        Err(Error::Attestation(
            AttestationError::ConsentExpiryOutOfRange { .. }
        ))
    ));
}

#[test]
fn the_subject_lists_their_consents_with_live_status() {
    let fx = Fixture::new();
    let live = fx.granted();
    let pending = fx.request();
    let rejected = fx.request();
    fx.broker.reject(rejected.id()).unwrap();
    let revoked = fx.granted();
    fx.revoke(
        revoked.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    let listed: Vec<(ConsentId, ConsentStatus)> = fx
        .broker
        .consents_of(&fx.alice)
        .unwrap()
        .into_iter()
        .map(|v| (v.consent.id().clone(), v.status))
        .collect();
    assert_eq!(
        listed,
        vec![
            (live.id().clone(), ConsentStatus::Authorised),
            (pending.id().clone(), ConsentStatus::Requested),
            (rejected.id().clone(), ConsentStatus::Rejected),
            (
                revoked.id().clone(),
                ConsentStatus::Revoked {
                    by: Revoker::Subject,
                    reason: RevocationReason::SubjectWithdrew
                }
            ),
        ]
    );
    assert!(fx.broker.consents_of(&id("bob")).unwrap().is_empty());
    fx.clock.advance(Duration::days(91));
    let statuses: Vec<ConsentStatus> = fx
        .broker
        .consents_of(&fx.alice)
        .unwrap()
        .into_iter()
        .map(|v| v.status)
        .collect();
    assert_eq!(statuses[0], ConsentStatus::Expired);
    assert_eq!(statuses[1], ConsentStatus::Expired);
}

#[test]
fn every_transition_appends_to_a_gap_free_log() {
    let fx = Fixture::new();
    let request = fx.granted();
    fx.decide(&fx.access(request.id()));
    fx.revoke(
        request.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    let kinds: Vec<AuditKind> = fx.audit().into_iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        vec![
            AuditKind::SigningKeyActivated,
            AuditKind::CheckpointKeyActivated,
            AuditKind::HolderRegistered,
            AuditKind::PlatformRegistered,
            AuditKind::ConsentRequested,
            AuditKind::ConsentApproved,
            AuditKind::AccessPermitted,
            AuditKind::ConsentRevoked,
        ]
    );
    let seqs: Vec<u64> = fx.audit().into_iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..8).collect::<Vec<u64>>());
}

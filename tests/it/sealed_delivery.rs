//! What the bank serves leaves it sealed to the subject's devices: the platform relays bytes it
//! cannot open, a response cannot be moved into another consent, token, account or journal
//! entry, only devices the subject registered at the bank and named in the approval receive, a
//! revoked device receives nothing, and data leaves unsealed only where both the bank's policy
//! and the subject allow it.

use std::convert::Infallible;

use consent_broker::hpke::{self, DeviceSecretKey};
use consent_broker::testing::{TestBank, TestBroker};
use consent_broker::time::Duration;
use consent_broker::*;

use crate::support::{b64, id, unb64};

struct World {
    kit: TestBroker,
    bank: TestBank,
}

fn world() -> World {
    let kit = TestBroker::memory();
    let bank = TestBank::beside(&kit);
    World { kit, bank }
}

impl World {
    /// The platform gets a token for `access` and presents it at the bank's gate.
    fn serve(&self, access: &AccessRequest) -> Result<Response, GateError<Infallible>> {
        let token = self.kit.token(access);
        self.bank.sync(&self.kit).unwrap();
        let mut proof = String::new();
        let request = self.bank.present(&self.kit, &token.token, &mut proof);
        self.bank
            .bank
            .serve(&request, &self.bank.accounts)
            .map(|served| served.unwrap())
    }

    fn sealed(&self, access: &AccessRequest) -> SealedResponse {
        match self.serve(access) {
            Ok(Response::Sealed(sealed)) => sealed,
            other => panic!("expected a sealed response, got {other:?}"),
        }
    }

    /// A delivery as the journal records it: the devices by their pseudonyms under the
    /// customer's key at the bank.
    fn journalled(&self, devices: &[String]) -> Delivery {
        Delivery::Sealed {
            devices: devices
                .iter()
                .map(|d| self.bank.journalled_device(&self.kit.platform, d))
                .collect(),
        }
    }

    /// Registers a new device of the subject's at the bank.
    fn new_device(&self, name: &str) -> DeviceSecretKey {
        let key = DeviceSecretKey::derive(name.as_bytes());
        self.bank
            .bank
            .register_device(&self.bank.customer, key.public_key())
            .unwrap();
        key
    }

    /// Approves the kit's request at the bank, naming `devices` and the uses unsealed.
    fn approve(&self, devices: &[&DeviceSecretKey], plaintext: PlaintextUses) -> Consent {
        let request = self.kit.request();
        self.bank
            .approve(&self.kit, &request, |statement| {
                statement.devices = devices
                    .iter()
                    .map(|key| key.public_key().thumbprint())
                    .collect();
                statement.plaintext = plaintext;
            })
            .unwrap()
    }

    fn journal_entry(&self, seq: u64) -> AuditEntry {
        self.bank
            .bank
            .journal()
            .audit_entries(seq..seq + 1)
            .unwrap()
            .pop()
            .unwrap()
    }

    fn served_count(&self) -> usize {
        let journal = self.bank.bank.journal();
        journal
            .audit_entries(0..journal.audit_len().unwrap())
            .unwrap()
            .iter()
            .filter(|e| e.kind() == AuditKind::AccessServed)
            .count()
    }
}

fn thumbprints(sealed: &SealedResponse) -> Vec<String> {
    sealed.envelopes.iter().map(|e| e.device.clone()).collect()
}

#[test]
fn a_served_balance_is_sealed_to_the_subjects_phone_and_opens_only_there() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let access = w.kit.access(consent.id());
    let sealed = w.sealed(&access);
    let phone = w.bank.device.public_key().thumbprint();
    assert_eq!(thumbprints(&sealed), std::slice::from_ref(&phone));

    // What the platform relays holds no figure; the phone opens the balance.
    let relayed = serde_json::to_string(&Response::Sealed(sealed.clone())).unwrap();
    assert!(!relayed.contains("4200"), "{relayed}");
    let Response::Sealed(relayed) = serde_json::from_str(&relayed).unwrap() else {
        panic!("the relayed response is not sealed");
    };
    match open_response(&relayed, &w.bank.device).unwrap() {
        AccountData::Balance(balance) => {
            assert_eq!(balance.available.minor_units, 4_200);
            assert_eq!(balance.account, w.kit.current);
        }
        other => panic!("{other:?}"),
    }
    // Any other key, the platform's included, is not one it was sealed to.
    let platform_key = DeviceSecretKey::derive(b"a key the platform made");
    assert_eq!(
        open_response(&relayed, &platform_key),
        Err(OpenError::NotForThisDevice)
    );

    // The context names the journal entry that recorded the access, and that entry records
    // where the data went.
    let context = &relayed.context;
    assert_eq!(
        (
            &context.holder,
            &context.consent,
            context.scope,
            &context.account
        ),
        (
            w.kit.bank.id(),
            consent.id(),
            Scope::Balance,
            &w.kit.current
        )
    );
    match w.journal_entry(context.sequence).event {
        AuditEvent::AccessServed {
            token_id, delivery, ..
        } => {
            assert_eq!(token_id, context.token_id);
            // Sealed to the phone, which the journal names by its pseudonym only.
            assert_eq!(delivery, Some(w.journalled(&[phone])));
        }
        other => panic!("entry {} is {other:?}", context.sequence),
    }
}

#[test]
fn a_response_moved_to_another_context_or_altered_does_not_open() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let access = w.kit.access(consent.id());
    let sealed = w.sealed(&access);
    let other = w.bank.granted(&w.kit);
    type Move = fn(&mut ResponseContext, &ConsentId);
    let moves: [(&str, Move); 6] = [
        ("consent", |c, other| c.consent = other.clone()),
        ("token", |c, _| c.token_id.push('x')),
        ("scope", |c, _| c.scope = Scope::Alerts),
        ("account", |c, _| c.account = id("acc-savings")),
        ("sequence", |c, _| c.sequence += 1),
        ("holder", |c, _| c.holder = id("other-bank")),
    ];
    for (what, move_it) in moves {
        let mut moved = sealed.clone();
        move_it(&mut moved.context, other.id());
        assert_eq!(
            open_response(&moved, &w.bank.device),
            Err(OpenError::DoesNotOpen),
            "moved to another {what}"
        );
    }
    // The envelope of another real response, under this one's context.
    let second = w.sealed(&access);
    let mut swapped = sealed.clone();
    swapped.envelopes = second.envelopes.clone();
    assert_eq!(
        open_response(&swapped, &w.bank.device),
        Err(OpenError::DoesNotOpen)
    );
    assert!(open_response(&second, &w.bank.device).is_ok());
    // A flipped bit anywhere in `enc` or the ciphertext.
    let envelope = &sealed.envelopes[0];
    for field in 0..2 {
        let encoded = if field == 0 {
            &envelope.enc
        } else {
            &envelope.ciphertext
        };
        let bytes = unb64(encoded);
        for bit in (0..bytes.len() * 8).step_by(37) {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let mut altered = sealed.clone();
            let target = if field == 0 {
                &mut altered.envelopes[0].enc
            } else {
                &mut altered.envelopes[0].ciphertext
            };
            *target = b64(&flipped);
            assert_eq!(
                open_response(&altered, &w.bank.device),
                Err(OpenError::DoesNotOpen),
                "field {field}, bit {bit}"
            );
        }
    }
    // Relabelled for another device: that device cannot open it either.
    let tablet = DeviceSecretKey::derive(b"tablet");
    let mut relabelled = sealed.clone();
    relabelled.envelopes[0].device = tablet.public_key().thumbprint();
    assert_eq!(
        open_response(&relabelled, &tablet),
        Err(OpenError::DoesNotOpen)
    );
}

#[test]
fn only_devices_the_approval_names_receive_and_a_revoked_one_receives_nothing() {
    let w = world();
    let phone = &w.bank.device;
    let consent = w.approve(&[phone], PlaintextUses::new());
    let access = w.kit.access(consent.id());
    // A tablet registered after the approval: the approval does not name it.
    let tablet = w.new_device("tablet");
    let sealed = w.sealed(&access);
    assert_eq!(
        open_response(&sealed, &tablet),
        Err(OpenError::NotForThisDevice)
    );
    assert!(open_response(&sealed, phone).is_ok());

    // Approved again naming both: both receive, each its own envelope.
    let both = w.approve(&[phone, &tablet], PlaintextUses::new());
    let access = w.kit.access(both.id());
    let sealed = w.sealed(&access);
    assert_eq!(
        thumbprints(&sealed),
        [
            phone.public_key().thumbprint(),
            tablet.public_key().thumbprint()
        ]
    );
    assert_eq!(
        open_response(&sealed, phone).unwrap(),
        open_response(&sealed, &tablet).unwrap()
    );

    // The phone is lost: revoked at the bank, it receives nothing more.
    let subject = &w.bank.customer;
    w.bank
        .bank
        .revoke_device(subject, &phone.public_key().thumbprint())
        .unwrap();
    let sealed = w.sealed(&access);
    assert_eq!(thumbprints(&sealed), [tablet.public_key().thumbprint()]);
    assert_eq!(
        open_response(&sealed, phone),
        Err(OpenError::NotForThisDevice)
    );
    // Revoking it again, or a key that is not the subject's, is refused.
    assert!(matches!(
        w.bank
            .bank
            .revoke_device(subject, &phone.public_key().thumbprint()),
        Err(BankError::UnknownDevice(_))
    ));
    assert!(matches!(
        w.bank
            .bank
            .revoke_device(&id("bob"), &tablet.public_key().thumbprint()),
        Err(BankError::UnknownDevice(_))
    ));

    // With no named device left, the gate refuses, journals why, and serves nothing.
    w.bank
        .bank
        .revoke_device(subject, &tablet.public_key().thumbprint())
        .unwrap();
    let served = w.served_count();
    match w.serve(&access) {
        Err(GateError::Refused {
            refusal: GateRefusal::NoDeviceToSealTo,
            journal_seq: Some(seq),
        }) => assert_eq!(w.journal_entry(seq).kind(), AuditKind::AccessRefusedAtGate),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(w.served_count(), served);
    let kinds: Vec<AuditKind> = w
        .bank
        .bank
        .subject_view(subject)
        .unwrap()
        .journal
        .iter()
        .map(AuditEntry::kind)
        .filter(|k| {
            matches!(
                k,
                AuditKind::DeviceKeyRegistered | AuditKind::DeviceKeyRevoked
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            AuditKind::DeviceKeyRegistered,
            AuditKind::DeviceKeyRegistered,
            AuditKind::DeviceKeyRevoked,
            AuditKind::DeviceKeyRevoked
        ]
    );
}

#[test]
fn an_approval_names_only_live_keys_of_the_subjects_own() {
    let w = world();
    let request = w.kit.request();
    let mut statement = w.bank.statement(&w.kit, &request);
    let attest = |statement: &ApprovalStatement| w.bank.bank.attest(statement);

    // A key never registered (the platform's own), a key of bob's, a revoked key.
    let platforms = DeviceSecretKey::derive(b"the platform's key");
    let bobs = DeviceSecretKey::derive(b"bob's phone");
    w.bank
        .bank
        .register_device(&id("bob"), bobs.public_key())
        .unwrap();
    let old = w.new_device("old phone");
    w.bank
        .bank
        .revoke_device(&w.bank.customer, &old.public_key().thumbprint())
        .unwrap();
    for key in [&platforms, &bobs, &old] {
        statement.devices = vec![
            w.bank.device.public_key().thumbprint(),
            key.public_key().thumbprint(),
        ];
        let refused = attest(&statement);
        assert_eq!(
            refused,
            Err(BankError::UnknownDevice(key.public_key().thumbprint()))
        );
        // The error carries the thumbprint for the caller, and leaves it out of its message.
        let message = refused.unwrap_err().to_string();
        assert!(
            !message.contains(&key.public_key().thumbprint()),
            "{message}"
        );
    }
    // A key registered once cannot be registered again, for anyone: a platform that registered
    // a relayed key under a customer of its own first is found out when the subject registers.
    for subject in [&w.bank.customer, &id("bob")] {
        assert_eq!(
            w.bank.bank.register_device(subject, bobs.public_key()),
            Err(BankError::DeviceKeyInUse)
        );
    }
    // No device at all: nothing could ever be delivered.
    statement.devices = Vec::new();
    assert_eq!(attest(&statement), Err(BankError::NoDevice));
    assert_eq!(
        w.bank
            .bank
            .ledger()
            .attestations_of_consent(request.id())
            .unwrap(),
        [],
        "nothing was recorded"
    );
}

#[test]
fn unsealed_only_where_both_the_banks_policy_and_the_subject_allow_it() {
    let w = world();
    let fraud = PlaintextUses::from([(Scope::Alerts, Purpose::FraudProtection)]);
    let phone = &w.bank.device;
    // The subject agrees to unsealed fraud alerts; the bank's policy does not allow it yet.
    let request = w.kit.request();
    let mut statement = w.bank.statement(&w.kit, &request);
    statement.plaintext = fraud;
    assert!(matches!(
        w.bank.bank.attest(&statement),
        Err(BankError::OutsidePolicy(_))
    ));

    let policy = |plaintext: PlaintextUses| HolderPolicy {
        plaintext,
        ..w.kit.bank.policy().clone()
    };
    w.bank.bank.set_policy(policy(fraud)).unwrap();
    // The subject agreed to nothing unsealed: sealed, whatever the bank allows.
    let sealed_only = w.approve(&[phone], PlaintextUses::new());
    let alerts = AccessRequest {
        scope: Scope::Alerts.into(),
        purpose: Purpose::FraudProtection.into(),
        ..w.kit.access(sealed_only.id())
    };
    assert!(matches!(w.serve(&alerts), Ok(Response::Sealed(_))));

    // Both agree to alerts for fraud protection: those leave unsealed, alerts for customer
    // service stay sealed, and the journal says which.
    let consent = w.approve(&[phone], fraud);
    let alerts = AccessRequest {
        consent: consent.id().clone(),
        ..alerts
    };
    match w.serve(&alerts) {
        Ok(Response::Plaintext(AccountData::Alerts(alerts))) => assert_eq!(alerts.len(), 1),
        other => panic!("expected unsealed alerts, got {other:?}"),
    }
    let journal = w.bank.bank.journal();
    let last = journal.audit_len().unwrap() - 1;
    assert!(matches!(
        w.journal_entry(last).event,
        AuditEvent::AccessServed {
            delivery: Some(Delivery::Plaintext),
            ..
        }
    ));
    let customer_service = AccessRequest {
        purpose: Purpose::CustomerService.into(),
        ..alerts.clone()
    };
    assert!(matches!(
        w.serve(&customer_service),
        Ok(Response::Sealed(_))
    ));
    // The purpose is the platform's word: labelling a balance "fraud protection" does not let it
    // out unsealed, since only alerts were agreed to unsealed.
    let relabelled = AccessRequest {
        scope: Scope::Balance.into(),
        purpose: Purpose::FraudProtection.into(),
        ..w.kit.access(consent.id())
    };
    assert!(matches!(w.serve(&relabelled), Ok(Response::Sealed(_))));
    let unattended = AccessRequest {
        presence: Presence::Unattended,
        ..relabelled
    };
    assert!(matches!(w.serve(&unattended), Ok(Response::Sealed(_))));

    // The bank withdraws it: sealed again from the next access on.
    w.bank
        .bank
        .set_policy(policy(PlaintextUses::new()))
        .unwrap();
    assert!(matches!(w.serve(&alerts), Ok(Response::Sealed(_))));
}

#[test]
fn alerts_pushed_while_the_subject_is_away_are_sealed_the_same_way() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let poll = AccessRequest {
        scope: Scope::Alerts.into(),
        purpose: Purpose::FraudProtection.into(),
        presence: Presence::Unattended,
        ..w.kit.access(consent.id())
    };
    let sealed = w.sealed(&poll);
    assert!(!serde_json::to_string(&sealed).unwrap().contains("abroad"));
    match open_response(&sealed, &w.bank.device).unwrap() {
        AccountData::Alerts(alerts) => assert_eq!(alerts[0].message, "A card payment abroad"),
        other => panic!("{other:?}"),
    }
}

fn context(account: &str) -> ResponseContext {
    ResponseContext {
        holder: id("bank"),
        consent: id("cns_1"),
        token_id: "tok-1".into(),
        scope: Scope::Balance,
        account: id(account),
        sequence: 7,
    }
}

fn balance(account: &str, minor_units: i64) -> AccountData {
    AccountData::Balance(Balance {
        account: id(account),
        available: Money {
            minor_units,
            currency: "EUR".into(),
        },
        as_of: consent_broker::testing::START,
    })
}

fn alerts(count: usize) -> AccountData {
    AccountData::Alerts(
        (0..count)
            .map(|i| FraudAlert {
                account: id("acc-1"),
                reference: format!("FA-{i}"),
                message: "A card payment abroad".into(),
                raised_at: consent_broker::testing::START + Duration::minutes(i as i64),
            })
            .collect(),
    )
}

fn sealed_len(data: &AccountData, context: &ResponseContext) -> usize {
    let device = DeviceSecretKey::derive(b"phone").public_key();
    let sealed = seal_response(data, context, &[device], &SystemRandom::new()).unwrap();
    unb64(&sealed.envelopes[0].ciphertext).len()
}

#[test]
fn padding_hides_a_balances_magnitude_and_how_many_alerts_there_are() {
    let small = sealed_len(&balance("acc-1", 1), &context("acc-1"));
    let large = sealed_len(&balance("acc-1", i64::MAX), &context("acc-1"));
    let negative = sealed_len(&balance("acc-1", i64::MIN), &context("acc-1"));
    assert_eq!(small, PAD_BUCKETS[0] + hpke::TAG_LEN);
    assert_eq!((small, small), (large, negative));
    let alerts_context = ResponseContext {
        scope: Scope::Alerts,
        ..context("acc-1")
    };
    let none = sealed_len(&alerts(0), &alerts_context);
    let two = sealed_len(&alerts(2), &alerts_context);
    assert_eq!(none, two);
    // Many alerts take a larger bucket; beyond the last, a multiple of it.
    let many = sealed_len(&alerts(60), &alerts_context);
    assert!(PAD_BUCKETS.contains(&(many - hpke::TAG_LEN)), "{many}");
    let huge = sealed_len(&alerts(400), &alerts_context) - hpke::TAG_LEN;
    assert_eq!(huge % PAD_BUCKETS[3], 0, "{huge}");
    assert!(huge > PAD_BUCKETS[3]);
}

#[test]
fn the_device_refuses_data_that_is_not_what_the_context_names() {
    let device = DeviceSecretKey::derive(b"phone");
    let random = SystemRandom::new();
    // Sealed for the right context, but the data is another account's, or another scope's.
    for (data, what) in [
        (balance("acc-2", 5), "another account"),
        (alerts(1), "another scope"),
    ] {
        let sealed =
            seal_response(&data, &context("acc-1"), &[device.public_key()], &random).unwrap();
        assert_eq!(
            open_response(&sealed, &device),
            Err(OpenError::Malformed),
            "{what}"
        );
    }
    // The right context, but not a padded response.
    let good = seal_response(
        &balance("acc-1", 5),
        &context("acc-1"),
        &[device.public_key()],
        &random,
    )
    .unwrap();
    let thumbprint = device.public_key().thumbprint();
    for plaintext in [
        b"{\"scope\":\"balance\"}".to_vec(),
        vec![0u8; 512],
        [&[0u8, 0, 1, 0][..], &[0u8; 508]].concat(),
        vec![0u8; 700],
    ] {
        let raw = hpke::seal(
            &device.public_key(),
            &context("acc-1").info(),
            thumbprint.as_bytes(),
            &plaintext,
            &random,
        )
        .unwrap();
        let mut sealed = good.clone();
        sealed.envelopes[0].enc = b64(raw.enc);
        sealed.envelopes[0].ciphertext = b64(&raw.ciphertext);
        assert_eq!(
            open_response(&sealed, &device),
            Err(OpenError::Malformed),
            "{} bytes",
            plaintext.len()
        );
    }
}

#[test]
fn both_kinds_of_response_round_trip_through_json() {
    let device = DeviceSecretKey::derive(b"phone");
    let sealed = seal_response(
        &balance("acc-1", 5),
        &context("acc-1"),
        &[device.public_key()],
        &SystemRandom::new(),
    )
    .unwrap();
    for response in [
        Response::Sealed(sealed),
        Response::Plaintext(balance("acc-1", 5)),
    ] {
        let json = serde_json::to_string(&response).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), response);
    }
    let plaintext = serde_json::to_value(Response::Plaintext(balance("acc-1", 5))).unwrap();
    assert_eq!(plaintext["delivery"], "plaintext");
    assert_eq!(plaintext["scope"], "balance");
}

/// The gate journals an access before it seals the response (the envelope's `info` carries the
/// journal's sequence). Without randomness the seal fails: the caller gets a retryable
/// `GateError::Seal` and no data, and the journal over-records (served, nothing delivered), as
/// docs/RELIABILITY.md says; it never under-records.
#[test]
fn a_seal_that_fails_after_the_journal_delivers_nothing_and_the_journal_over_records() {
    use consent_broker::testing::FailingRandom;
    use std::sync::Arc;

    let kit = TestBroker::memory();
    let ledger = Arc::new(MemoryStore::new());
    let bank = TestBank::on(&kit, ledger.clone());
    let consent = bank.granted(&kit);
    // The same bank's ledger, served by a process whose random source has failed.
    let keys = BankKeys::new(
        SigningKey::from_seed(&[8; 32]).unwrap(),
        SigningKey::from_seed(&[9; 32]).unwrap(),
    );
    let broken = Bank::builder(kit.bank.id().clone(), ledger, keys, kit.broker.id().clone())
        .clock(kit.clock.clone())
        .random(Arc::new(FailingRandom::always()))
        .build()
        .unwrap();
    broken
        .trust_broker_keys(&kit.broker.jwks().unwrap())
        .unwrap();
    let token = kit.token(&kit.access(consent.id()));
    let mut proof = String::new();
    let request = bank.present(&kit, &token.token, &mut proof);
    let journal_before = broken.journal().audit_len().unwrap();
    match broken.serve(&request, &bank.accounts) {
        Err(error @ GateError::Seal(hpke::HpkeError::RandomnessUnavailable)) => {
            assert!(error.is_retryable());
        }
        other => panic!("expected the seal to fail, got {other:?}"),
    }
    let journal = broken.journal();
    assert_eq!(journal.audit_len().unwrap(), journal_before + 1);
    let last = journal
        .audit_entries(journal_before..journal_before + 1)
        .unwrap()
        .pop()
        .unwrap();
    assert!(matches!(
        last.event,
        AuditEvent::AccessServed {
            delivery: Some(Delivery::Sealed { .. }),
            ..
        }
    ));
}

/// A bank that calls its data methods itself: `check` hands it the admission with the delivery
/// the journal recorded, and `deliver` seals as recorded, under the journal's sequence.
#[test]
fn check_then_deliver_seals_as_the_journal_recorded() {
    let w = world();
    let consent = w.bank.granted(&w.kit);
    let token = w.kit.token(&w.kit.access(consent.id()));
    w.bank.sync(&w.kit).unwrap();
    let mut proof = String::new();
    let request = w.bank.present(&w.kit, &token.token, &mut proof);
    let admission = w.bank.bank.check(&request, &w.bank.accounts).unwrap();
    let phone = w.bank.device.public_key().thumbprint();
    assert_eq!(
        admission.delivery(),
        &Delivery::Sealed {
            devices: vec![phone.clone()]
        }
    );
    match w.journal_entry(admission.journal_seq()).event {
        AuditEvent::AccessServed { delivery, .. } => {
            let Delivery::Sealed { devices } = admission.delivery() else {
                panic!("not sealed");
            };
            assert_eq!(delivery, Some(w.journalled(devices)));
        }
        other => panic!("{other:?}"),
    }
    let data = serve(&w.bank.accounts, admission.access()).unwrap();
    let sealed = match w.bank.bank.deliver(&admission, data.clone()).unwrap() {
        Response::Sealed(sealed) => sealed,
        other => panic!("{other:?}"),
    };
    assert_eq!(sealed.context.sequence, admission.journal_seq());
    assert_eq!(thumbprints(&sealed), [phone]);
    assert_eq!(open_response(&sealed, &w.bank.device).unwrap(), data);
}

/// What the platform relays is bounded before any decoding or cryptography, and so is what the
/// bank seals.
#[test]
fn sealed_responses_are_bounded_on_both_sides() {
    let random = SystemRandom::new();
    let phone = DeviceSecretKey::derive(b"phone");
    let data = balance("acc-1", 5);
    let sealed = seal_response(&data, &context("acc-1"), &[phone.public_key()], &random).unwrap();

    let mut huge = sealed.clone();
    huge.envelopes[0].ciphertext = "A".repeat(2 * MAX_RESPONSE_BYTES);
    assert_eq!(open_response(&huge, &phone), Err(OpenError::DoesNotOpen));
    let mut long_enc = sealed.clone();
    long_enc.envelopes[0].enc.push('A');
    assert_eq!(
        open_response(&long_enc, &phone),
        Err(OpenError::DoesNotOpen)
    );
    let mut crowded = sealed.clone();
    crowded.envelopes = vec![sealed.envelopes[0].clone(); MAX_ENVELOPES + 1];
    assert_eq!(open_response(&crowded, &phone), Err(OpenError::Malformed));
    assert!(open_response(&sealed, &phone).is_ok());

    let devices: Vec<_> = (0..=MAX_ENVELOPES)
        .map(|i| DeviceSecretKey::derive(&[i as u8]).public_key())
        .collect();
    assert_eq!(
        seal_response(&data, &context("acc-1"), &devices, &random),
        Err(hpke::HpkeError::SealFailed)
    );
    assert!(seal_response(&data, &context("acc-1"), &devices[1..], &random).is_ok());
    let mut too_many = 1;
    while serde_json::to_vec(&alerts(too_many)).unwrap().len() + 4 <= MAX_RESPONSE_BYTES {
        too_many *= 2;
    }
    let context = ResponseContext {
        scope: Scope::Alerts,
        ..context("acc-1")
    };
    assert_eq!(
        seal_response(&alerts(too_many), &context, &[phone.public_key()], &random),
        Err(hpke::HpkeError::SealFailed)
    );
    let mut fits = too_many / 2;
    while serde_json::to_vec(&alerts(fits)).unwrap().len() + 4 > MAX_RESPONSE_BYTES {
        fits /= 2;
    }
    let big = seal_response(&alerts(fits), &context, &[phone.public_key()], &random).unwrap();
    assert_eq!(open_response(&big, &phone).unwrap(), alerts(fits));
}

/// A subject has at most `MAX_LIVE_DEVICES` live device keys (each sealed response is sealed to
/// every live key an approval names, and the gate reads them all): past it a registration is
/// refused until one is revoked. Two processes of the bank registering the last place at once
/// (the other registers between this one's read of the keys and its commit) do not both land:
/// the commit finds the live keys changed, reads them again and refuses.
#[test]
fn a_subject_has_at_most_the_bound_of_live_device_keys_even_registering_at_once() {
    let kit = TestBroker::memory();
    let ledger = std::sync::Arc::new(consent_broker::testing::FaultStore::new(
        MemoryStore::new(),
        1,
    ));
    let bank = TestBank::with_settings(&kit, ledger.clone(), GateSettings::default());
    let customer = bank.customer.clone();
    let live = || {
        bank.bank
            .devices(&customer)
            .unwrap()
            .iter()
            .filter(|d| d.revoked_at.is_none())
            .count()
    };
    let key = |n: usize| DeviceSecretKey::derive(format!("device {n}").as_bytes()).public_key();
    for n in 0..MAX_LIVE_DEVICES - 1 - live() {
        bank.bank.register_device(&customer, key(n)).unwrap();
    }
    assert_eq!(live(), MAX_LIVE_DEVICES - 1);
    let other = TestBank::another_gate(&kit, ledger.clone(), GateSettings::default());
    let (theirs, last) = (customer.clone(), key(100));
    ledger.after_next_read("device_keys", move || {
        other.register_device(&theirs, last).unwrap();
    });
    let too_many = Err(BankError::TooManyDevices {
        limit: MAX_LIVE_DEVICES,
    });
    assert_eq!(bank.bank.register_device(&customer, key(101)), too_many);
    assert_eq!(live(), MAX_LIVE_DEVICES);
    assert_eq!(bank.bank.register_device(&customer, key(102)), too_many);
    // A lost phone revoked: a place again.
    let first = bank.bank.devices(&customer).unwrap()[0].key.thumbprint();
    bank.bank.revoke_device(&customer, &first).unwrap();
    bank.bank.register_device(&customer, key(102)).unwrap();
    assert_eq!(live(), MAX_LIVE_DEVICES);
}

//! Bad input gets a typed error, never a panic, and leaves the state as it was.
//!
//! First the wire: every public type that can be deserialized refuses malformed JSON with an
//! error (naming the problem where a caller needs to know it). Then the broker: every refused
//! request, unknown id, disallowed transition and duplicate registration returns its exact error,
//! is audited where the broker audits it, and stores nothing.

use crate::support::*;

use std::any::type_name;
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use consent_broker::*;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::Duration;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A consent as a store reads it back with [`Consent::from_stored`], the only way a consent
/// leaves JSON: the deserializer these tests put malformed input through.
#[derive(Debug, PartialEq, serde::Serialize)]
#[serde(transparent)]
struct Stored(Consent);

impl<'de> serde::Deserialize<'de> for Stored {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = <Value as serde::Deserialize>::deserialize(deserializer)?;
        Consent::from_stored(json.to_string().as_bytes())
            .map(Stored)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `json` as `T`, which must fail; returns the error message.
fn refuses<T: DeserializeOwned + Debug>(json: &str) -> String {
    match serde_json::from_str::<T>(json) {
        Ok(value) => panic!(
            "{} accepted {:?} as {value:?}",
            type_name::<T>(),
            shorten(json)
        ),
        Err(error) => error.to_string(),
    }
}

/// `refuses`, and the message must contain `needle`.
fn refuses_with<T: DeserializeOwned + Debug>(json: &str, needle: &str) {
    let message = refuses::<T>(json);
    assert!(
        message.contains(needle),
        "{}: {:?} was refused with {message:?}, which does not contain {needle:?}",
        type_name::<T>(),
        shorten(json)
    );
}

fn parses<T: DeserializeOwned + Debug>(json: &str) -> T {
    serde_json::from_str(json)
        .unwrap_or_else(|error| panic!("{} refused {json:?}: {error}", type_name::<T>()))
}

fn shorten(json: &str) -> String {
    if json.len() > 80 {
        let end = (0..=80)
            .rev()
            .find(|&end| json.is_char_boundary(end))
            .unwrap_or(0);
        format!("{}… ({} bytes)", &json[..end], json.len())
    } else {
        json.to_owned()
    }
}

/// The object `value` with `field` set to `to`, or removed for `None`, as JSON text.
fn with(value: &Value, field: &str, to: Option<Value>) -> String {
    let mut value = value.clone();
    let object = value.as_object_mut().unwrap();
    match to {
        Some(to) => {
            object.insert(field.to_owned(), to);
        }
        None => {
            object.remove(field);
        }
    }
    value.to_string()
}

/// Inputs that no type of this crate accepts.
fn universally_malformed() -> Vec<String> {
    let deep_open = "[".repeat(10_000);
    let deep_balanced = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    [
        "",
        " ",
        "{",
        "}",
        "[",
        "{}",
        "[]",
        "null",
        "true",
        "0",
        "-1",
        "1e999",
        "123456789012345678901234567890",
        "{\"a\":}",
        "[1,2,",
        "\"unterminated",
        "\"bad escape \\q\"",
        "{\"seq\":0}",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([deep_open, deep_balanced, deep_object])
    .collect()
}

/// A valid document for `T` (which must parse back to `value`), every strict prefix of which
/// must be refused, followed by the inputs nothing accepts.
fn refuses_malformed<T>(value: &T)
where
    T: DeserializeOwned + serde::Serialize + Debug + PartialEq,
{
    let valid = serde_json::to_string(value).unwrap();
    assert_eq!(&parses::<T>(&valid), value);
    for end in (0..valid.len()).filter(|&end| valid.is_char_boundary(end)) {
        refuses::<T>(&valid[..end]);
    }
    refuses::<T>(&format!("{valid},"));
    refuses::<T>(&format!("{valid}{valid}"));
    for json in universally_malformed() {
        refuses::<T>(&json);
    }
}

/// A fixture that has been through a whole story, so that every kind of value exists.
fn storied() -> (Fixture, ConsentRequest) {
    let fx = Fixture::new();
    let request = fx.granted();
    fx.decide(&fx.access(request.id()));
    let mut ads = fx.access(request.id());
    ads.purpose = "ads".parse().unwrap();
    fx.decide(&ads);
    // The bank's attestation of a consent approved already: refused, and logged (the holder's).
    let refused = fx
        .broker
        .approve(request.id(), &fx.attest(&fx.full_statement(&request)));
    assert!(refused.is_err());
    fx.revoke(
        request.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )
    .unwrap();
    fx.decide(&fx.access(request.id()));
    (fx, request)
}

fn draft_json(fx: &Fixture) -> Value {
    serde_json::to_value(fx.draft()).unwrap()
}

/// Submits `draft`, which must be refused; checks the one `ConsentRequestRefused` entry and that
/// the subject's consents are unchanged. Returns the refusal.
fn refused_request(fx: &Fixture, draft: ConsentRequestDraft) -> RequestError {
    let consents = fx.broker.consents_of(&draft.subject).unwrap();
    // A refusal names the subject only if it had a key already, and makes none.
    let pseudonym = fx.broker.pseudonym_of(&draft.subject).unwrap();
    let seq = fx.audit_len();
    let error = fx
        .broker
        .request_consent(draft.clone())
        .expect_err("the request must be refused");
    assert_eq!(fx.broker.pseudonym_of(&draft.subject).unwrap(), pseudonym);
    let Error::Request(refusal) = error else {
        panic!("not a request refusal: {error:?}");
    };
    let expected = AuditEntry {
        seq,
        at: fx.broker.now(),
        actor: Actor::Platform(draft.platform.clone()),
        event: AuditEvent::ConsentRequestRefused {
            subject: pseudonym,
            refusal: Refusal::Request(refusal.clone()),
        },
    };
    assert_eq!(fx.audit()[seq as usize..], [expected]);
    assert_eq!(fx.broker.consents_of(&draft.subject).unwrap(), consents);
    refusal
}

/// Runs `call`, which must fail without touching the audit log or the consent `id` (if any).
fn unaudited<T: Debug>(
    fx: &Fixture,
    id: Option<&ConsentId>,
    call: impl FnOnce() -> Result<T, Error>,
) -> Error {
    let before = id.map(|id| fx.broker.store().consent(id).unwrap());
    let audit = fx.audit();
    let error = call().expect_err("the call must fail");
    assert_eq!(fx.audit(), audit);
    assert_eq!(id.map(|id| fx.broker.store().consent(id).unwrap()), before);
    error
}

// ---------------------------------------------------------------------------------------------
// The wire: malformed JSON for every deserializable type

#[test]
fn every_deserializable_type_refuses_truncated_and_malformed_json() {
    let (fx, request) = storied();
    let consent = fx.broker.consent(request.id()).unwrap().consent;
    let audit = fx.audit();
    assert!(audit.len() >= 10);

    refuses_malformed(&fx.draft());
    refuses_malformed(&ConsentRequestDraft {
        accounts: AccountSelection::SubjectChooses,
        ..fx.draft()
    });
    refuses_malformed(&fx.access(request.id()));
    refuses_malformed(&HolderPolicy::default());
    refuses_malformed(&PlatformProfile {
        id: fx.platform.clone(),
        registered_purposes: PurposeSet::from(Purpose::ALL),
    });
    refuses_malformed(&Decision::Permit);
    refuses_malformed(&fx.decide(&fx.access(request.id())));
    refuses_malformed(&DenyReason::Expired { at: START });
    refuses_malformed(&DenyReason::UnknownConsent);
    for entry in &audit {
        refuses_malformed(entry);
    }
    refuses_malformed(&Stored(consent));
    refuses_malformed(&Scope::Balance);
    refuses_malformed(&Purpose::FraudProtection);
    refuses_malformed(&RequestedScope::Prohibited(ProhibitedUse::Ads));
    refuses_malformed(&RequestedPurpose::Permitted(Purpose::CustomerService));
    refuses_malformed(&fx.alice);
    refuses_malformed(&fx.platform);
    refuses_malformed(&fx.bank);
    refuses_malformed(&fx.current);
    refuses_malformed(request.id());
    refuses_malformed(fx.broker.id());
    refuses_malformed(&fx.bank_signer().public_key());
}

#[test]
fn deep_nesting_is_refused_at_the_recursion_limit_not_by_a_stack_overflow() {
    // Tagged enums buffer the members around their tag: a deep member must hit the limit.
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for tagged in [
        format!("{{\"x\":{deep_array},\"decision\":\"permit\"}}"),
        format!("{{\"decision\":\"deny\",\"x\":{deep_array},\"reasons\":[]}}"),
    ] {
        refuses_with::<Decision>(&tagged, "recursion limit exceeded");
    }
    refuses_with::<DenyReason>(
        &format!("{{\"x\":{deep_array},\"reason\":\"unknown_consent\"}}"),
        "recursion limit exceeded",
    );
    refuses_with::<Decision>(&deep_array, "invalid type: sequence");
    // An audit entry keeps unknown members for its flattened record: they must not nest forever.
    let (fx, _) = storied();
    let mut entry = serde_json::to_value(fx.last_audit()).unwrap();
    let deep_object: Value = {
        let mut value = json!(1);
        for _ in 0..100 {
            value = json!({ "a": value });
        }
        value
    };
    entry["extra"] = deep_object;
    let nested_100 = entry.to_string();
    // 100 levels are fine (the member is ignored) ...
    assert_eq!(parses::<AuditEntry>(&nested_100), fx.last_audit());
    // ... 10 000 levels are refused.
    let deep = format!(
        "{{\"extra\":{}1{},{}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000),
        &serde_json::to_string(&fx.last_audit()).unwrap()[1..]
    );
    refuses_with::<AuditEntry>(&deep, "recursion limit exceeded");
    let deep = with(
        &draft_json(&fx),
        "scopes",
        Some(json!([[[[[[[[["balance"]]]]]]]]])),
    );
    refuses_with::<ConsentRequestDraft>(&deep, "invalid type: sequence");
}

#[test]
fn every_id_type_refuses_empty_spaced_overlong_and_non_ascii_ids() {
    fn check<T: DeserializeOwned + Debug + ToString>(kind: &str) {
        refuses_with::<T>("\"\"", &format!("{kind} must not be empty"));
        refuses_with::<T>("\"alice smith\"", &format!("{kind} contains ' ' at byte 5"));
        refuses_with::<T>(
            &format!("\"{}\"", "a".repeat(129)),
            &format!("{kind} is 129 bytes long; at most 128 are allowed"),
        );
        refuses_with::<T>(
            &format!("\"{}\"", "é".repeat(100)),
            &format!("{kind} is 200 bytes long"),
        );
        refuses_with::<T>("\"café\"", &format!("{kind} contains 'é' at byte 3"));
        refuses_with::<T>("\"a\\nb\"", &format!("{kind} contains '\\n' at byte 1"));
        refuses_with::<T>("\"a\\u0000\"", &format!("{kind} contains '\\0' at byte 1"));
        refuses_with::<T>("\"a/b\"", &format!("{kind} contains '/' at byte 1"));
        refuses_with::<T>("42", "invalid type: integer `42`, expected a string");
        refuses_with::<T>("[\"alice\"]", "invalid type: sequence, expected a string");
        refuses_with::<T>("{\"id\":\"alice\"}", "invalid type: map, expected a string");
        // The edges that are allowed.
        let longest = "a".repeat(128);
        assert_eq!(parses::<T>(&format!("\"{longest}\"")).to_string(), longest);
        assert_eq!(
            parses::<T>("\"cns_ab-9.x~y:z@w\"").to_string(),
            "cns_ab-9.x~y:z@w"
        );
    }
    check::<SubjectId>("subject id");
    check::<PlatformId>("platform id");
    check::<HolderId>("holder id");
    check::<AccountId>("account id");
    check::<ConsentId>("consent id");
    check::<BrokerId>("broker id");
}

#[test]
fn unknown_scope_and_purpose_words_are_named_and_prohibited_ones_never_grantable() {
    for word in [
        "Balance",
        "BALANCE",
        "balance ",
        "",
        "transaction",
        "ad",
        "advertising",
    ] {
        let json = format!("\"{word}\"");
        refuses_with::<Scope>(&json, &format!("unknown scope {json}"));
        refuses_with::<RequestedScope>(&json, &format!("unknown scope {json}"));
    }
    for word in [
        "Customer_Service",
        "customer-service",
        "marketing",
        "",
        "Ads",
        "sale",
    ] {
        let json = format!("\"{word}\"");
        refuses_with::<Purpose>(&json, &format!("unknown purpose {json}"));
        refuses_with::<RequestedPurpose>(&json, &format!("unknown purpose {json}"));
    }
    for prohibited in ProhibitedUse::ALL {
        let json = format!("\"{prohibited}\"");
        // Recognised where a request may name it, so that it can be refused precisely ...
        assert_eq!(
            parses::<RequestedScope>(&json),
            RequestedScope::Prohibited(prohibited)
        );
        assert_eq!(
            parses::<RequestedPurpose>(&json),
            RequestedPurpose::Prohibited(prohibited)
        );
        // ... and never where a grant or a registration would hold it.
        let never = format!("{prohibited} is a prohibited use and can never be granted");
        refuses_with::<Scope>(&json, &never);
        refuses_with::<Purpose>(&json, &never);
        refuses_with::<HolderPolicy>(
            &json!({ "enabled_scopes": [prohibited], "max_consent_duration_seconds": 60,
                     "unattended_daily_limit": 1 })
            .to_string(),
            &never,
        );
        refuses_with::<PlatformProfile>(
            &json!({ "id": "chat", "registered_purposes": ["customer_service", prohibited] })
                .to_string(),
            &never,
        );
        refuses_with::<DenyReason>(
            &json!({ "reason": "purpose_not_granted", "purpose": prohibited }).to_string(),
            &never,
        );
    }
    for json in ["42", "null", "[\"balance\"]", "{\"scope\":\"balance\"}"] {
        refuses_with::<Scope>(json, "invalid type");
        refuses_with::<Purpose>(json, "invalid type");
        refuses_with::<RequestedScope>(json, "invalid type");
        refuses_with::<RequestedPurpose>(json, "invalid type");
    }
}

#[test]
fn a_consent_request_draft_refuses_wrong_types_unknown_fields_and_huge_numbers() {
    let fx = Fixture::new();
    let draft = draft_json(&fx);
    assert_eq!(
        parses::<ConsentRequestDraft>(&draft.to_string()),
        fx.draft()
    );
    let cases: &[(&str, Option<Value>, &str)] = &[
        (
            "subject",
            Some(json!(42)),
            "invalid type: integer `42`, expected a string",
        ),
        (
            "subject",
            Some(json!("alice smith")),
            "subject id contains ' '",
        ),
        ("platform", Some(json!("")), "platform id must not be empty"),
        (
            "holder",
            Some(json!("b".repeat(129))),
            "holder id is 129 bytes long",
        ),
        ("holder", None, "missing field `holder`"),
        (
            "scopes",
            Some(json!("balance")),
            "invalid type: string \"balance\", expected a sequence",
        ),
        (
            "scopes",
            Some(json!(["Balance"])),
            "unknown scope \"Balance\"",
        ),
        (
            "scopes",
            Some(json!(null)),
            "invalid type: null, expected a sequence",
        ),
        (
            "purposes",
            Some(json!(["marketing"])),
            "unknown purpose \"marketing\"",
        ),
        (
            "purposes",
            Some(json!({"customer_service": true})),
            "invalid type: map",
        ),
        (
            "accounts",
            Some(json!({"listed": "acc-current"})),
            "invalid type: string",
        ),
        (
            "accounts",
            Some(json!({"listed": ["acc current"]})),
            "account id contains ' '",
        ),
        (
            "accounts",
            Some(json!({"everything": []})),
            "unknown variant `everything`",
        ),
        ("accounts", Some(json!("all")), "unknown variant `all`"),
        (
            "duration_seconds",
            Some(json!("90d")),
            "invalid type: string \"90d\", expected i64",
        ),
        (
            "duration_seconds",
            Some(json!(1.5)),
            "invalid type: floating point `1.5`, expected i64",
        ),
        (
            "duration_seconds",
            Some(json!(9_223_372_036_854_775_808_u64)),
            "invalid value: integer `9223372036854775808`, expected i64",
        ),
        ("duration_seconds", None, "missing field `duration_seconds`"),
        ("note", Some(json!("please")), "unknown field `note`"),
    ];
    for (field, to, needle) in cases {
        refuses_with::<ConsentRequestDraft>(&with(&draft, field, to.clone()), needle);
    }
    // The duration's wire name is `duration_seconds`; `duration` is an unknown field.
    let renamed = with(&draft, "duration_seconds", None);
    refuses_with::<ConsentRequestDraft>(
        &with(
            &serde_json::from_str(&renamed).unwrap(),
            "duration",
            Some(json!(60)),
        ),
        "unknown field `duration`",
    );
    for number in ["1e999", "-1e999", "123456789012345678901234567890"] {
        let json = draft.to_string().replace("7776000", number);
        let message = refuses::<ConsentRequestDraft>(&json);
        assert!(
            message.contains("number out of range") || message.contains("invalid type"),
            "{number}: {message}"
        );
    }
}

#[test]
fn access_requests_policies_and_profiles_refuse_bad_fields() {
    let fx = Fixture::new();
    let access = serde_json::to_value(fx.access(&id("cns_1"))).unwrap();
    for (field, to, needle) in [
        ("consent", Some(json!("cns 1")), "consent id contains ' '"),
        ("platform", Some(json!(7)), "invalid type: integer `7`"),
        ("scope", Some(json!(["balance"])), "invalid type: sequence"),
        (
            "scope",
            Some(json!("everything")),
            "unknown scope \"everything\"",
        ),
        (
            "purpose",
            Some(json!("curiosity")),
            "unknown purpose \"curiosity\"",
        ),
        (
            "presence",
            Some(json!("sometimes")),
            "unknown variant `sometimes`",
        ),
        ("presence", None, "missing field `presence`"),
        ("token", Some(json!("let me in")), "unknown field `token`"),
    ] {
        refuses_with::<AccessRequest>(&with(&access, field, to), needle);
    }

    let policy = serde_json::to_value(HolderPolicy::default()).unwrap();
    for (field, to, needle) in [
        (
            "enabled_scopes",
            Some(json!(["balance", "everything"])),
            "unknown scope \"everything\"",
        ),
        (
            "enabled_scopes",
            Some(json!("balance")),
            "invalid type: string",
        ),
        (
            "max_consent_duration_seconds",
            Some(json!("forever")),
            "invalid type: string",
        ),
        (
            "max_consent_duration_seconds",
            Some(json!(1.5)),
            "invalid type: floating point `1.5`, expected i64",
        ),
        (
            "unattended_daily_limit",
            Some(json!(-1)),
            "invalid value: integer `-1`, expected u32",
        ),
        (
            "unattended_daily_limit",
            Some(json!(4_294_967_296_u64)),
            "invalid value: integer `4294967296`, expected u32",
        ),
        (
            "unattended_daily_limit",
            None,
            "missing field `unattended_daily_limit`",
        ),
        ("allow_ads", Some(json!(true)), "unknown field `allow_ads`"),
        (
            "max_consent_duration",
            Some(json!(60)),
            "unknown field `max_consent_duration`",
        ),
    ] {
        refuses_with::<HolderPolicy>(&with(&policy, field, to), needle);
    }

    let profile = json!({ "id": "chat", "registered_purposes": ["customer_service"] });
    for (field, to, needle) in [
        ("id", Some(json!("chat app")), "platform id contains ' '"),
        (
            "registered_purposes",
            Some(json!(["everything"])),
            "unknown purpose \"everything\"",
        ),
        (
            "registered_purposes",
            Some(json!("customer_service")),
            "invalid type: string",
        ),
        (
            "registered_purposes",
            None,
            "missing field `registered_purposes`",
        ),
        (
            "registered_scopes",
            Some(json!(["balance"])),
            "unknown field `registered_scopes`",
        ),
    ] {
        refuses_with::<PlatformProfile>(&with(&profile, field, to), needle);
    }
}

#[test]
fn decisions_deny_reasons_audit_entries_and_consents_refuse_bad_fields() {
    for (json, needle) in [
        (json!({ "decision": "allow" }), "unknown variant `allow`"),
        (json!({ "decision": "deny" }), "missing field `reasons`"),
        (
            json!({ "decision": "deny", "reasons": "all" }),
            "invalid type: string",
        ),
        (
            json!({ "decision": "deny", "reasons": [{ "reason": "because" }] }),
            "unknown variant `because`",
        ),
        (json!({ "reasons": [] }), "missing field `decision`"),
    ] {
        refuses_with::<Decision>(&json.to_string(), needle);
    }
    for (json, needle) in [
        (
            json!({ "reason": "expired", "at": "yesterday" }),
            "invalid type: string",
        ),
        (
            json!({ "reason": "expired", "at": 253_402_300_800_i64 }),
            "invalid timestamp",
        ),
        (json!({ "reason": "expired" }), "missing field `at`"),
        (
            json!({ "reason": "frequency_exceeded", "limit": -1 }),
            "invalid value: integer `-1`",
        ),
        (
            json!({ "reason": "revoked", "by": "the_bank" }),
            "unknown variant `the_bank`",
        ),
        (
            json!({ "reason": "scope_not_granted", "scope": "ads" }),
            "ads is a prohibited use",
        ),
        (
            json!({ "reason": "account_not_granted", "account": "" }),
            "account id must not be empty",
        ),
        (
            json!({ "reasons": "unknown_consent" }),
            "missing field `reason`",
        ),
    ] {
        refuses_with::<DenyReason>(&json.to_string(), needle);
    }

    let (fx, request) = storied();
    let entry = serde_json::to_value(fx.last_audit()).unwrap();
    for (field, to, needle) in [
        (
            "seq",
            Some(json!(-1)),
            "invalid value: integer `-1`, expected u64",
        ),
        ("seq", Some(json!(18_446_744_073_709_551_615_u64)), ""),
        ("at", Some(json!(253_402_300_800_i64)), "invalid timestamp"),
        (
            "actor",
            Some(json!({ "bank": "bank" })),
            "unknown variant `bank`",
        ),
        (
            "actor",
            Some(json!({ "holder": "the bank" })),
            "holder id contains ' '",
        ),
        (
            "purpose",
            Some(json!("curiosity")),
            "unknown purpose \"curiosity\"",
        ),
        ("kind", None, "missing field `kind`"),
    ] {
        let json = with(&entry, field, to);
        if needle.is_empty() {
            // u64::MAX is a valid sequence number: only the neighbours must fail.
            parses::<AuditEntry>(&json);
            refuses::<AuditEntry>(&json.replace("18446744073709551615", "18446744073709551616"));
        } else {
            refuses_with::<AuditEntry>(&json, needle);
        }
    }
    // A refusal's members are checked on the kinds that have one.
    let refused = fx
        .audit()
        .into_iter()
        .find(|e| e.kind() == AuditKind::ApprovalRefused)
        .unwrap();
    let refused = serde_json::to_value(refused).unwrap();
    refuses_with::<AuditEntry>(
        &with(
            &refused,
            "refusal",
            Some(json!({ "attestation": { "error": "teleported" } })),
        ),
        "unknown variant `teleported`",
    );
    refuses_with::<AuditEntry>(&with(&refused, "refusal", None), "missing field `refusal`");
    // A kind this version does not know parses as `Unrecognised` (a newer version may write it),
    // its members ignored; a known kind with bad members is refused, as above.
    let teleported = with(&entry, "kind", Some(json!("consent_teleported")));
    assert_eq!(
        parses::<AuditEntry>(&teleported).kind(),
        AuditKind::Unrecognised
    );
    // A prohibited word is recorded as what was asked, so an audit entry naming one parses.
    let asked_for_ads = with(&entry, "purpose", Some(json!("ads")));
    assert_eq!(
        parses::<AuditEntry>(&asked_for_ads).event.purpose(),
        Some(RequestedPurpose::Prohibited(ProhibitedUse::Ads))
    );

    let consent = serde_json::to_value(fx.broker.consent(request.id()).unwrap().consent).unwrap();
    let mut ads_grant = consent.clone();
    ads_grant["state"]["grant"]["purposes"] = json!(["customer_service", "ads"]);
    refuses_with::<Stored>(&ads_grant.to_string(), "ads is a prohibited use");
    let mut no_grant = consent.clone();
    no_grant["state"] = json!({ "state": "authorised" });
    refuses_with::<Stored>(&no_grant.to_string(), "missing field `grant`");
    let mut teleported = consent.clone();
    teleported["state"] = json!({ "state": "teleported" });
    refuses_with::<Stored>(&teleported.to_string(), "unknown variant `teleported`");
    let mut far = consent.clone();
    far["request"]["requested_at"] = json!(253_402_300_800_i64);
    refuses_with::<Stored>(&far.to_string(), "invalid timestamp");
    for version in [
        json!(-1),
        json!(1.0),
        json!("2"),
        json!(18_446_744_073_709_551_616_f64),
    ] {
        refuses_with::<Stored>(&with(&consent, "version", Some(version)), "expected u64");
    }
}

#[test]
fn an_ed25519_public_key_must_be_32_bytes_of_unpadded_base64url() {
    let fx = Fixture::new();
    let x = fx.bank_signer().public_key().to_base64url();
    assert_eq!(
        parses::<Ed25519PublicKey>(&format!("\"{x}\"")),
        fx.bank_signer().public_key()
    );
    let encoding = "an Ed25519 public key in a JWK must be unpadded base64url";
    refuses_with::<Ed25519PublicKey>(&format!("\"{x}=\""), encoding);
    refuses_with::<Ed25519PublicKey>("\"not base64!\"", encoding);
    refuses_with::<Ed25519PublicKey>("\"+/+/+/+/\"", encoding);
    refuses_with::<Ed25519PublicKey>("\"\"", "an Ed25519 public key is 32 bytes, got 0");
    let bytes = fx.bank_signer().public_key().as_bytes().to_vec();
    let short = URL_SAFE_NO_PAD.encode(&bytes[..31]);
    refuses_with::<Ed25519PublicKey>(
        &format!("\"{short}\""),
        "an Ed25519 public key is 32 bytes, got 31",
    );
    let long = URL_SAFE_NO_PAD.encode([bytes.as_slice(), &[0]].concat());
    refuses_with::<Ed25519PublicKey>(
        &format!("\"{long}\""),
        "an Ed25519 public key is 32 bytes, got 33",
    );
    refuses_with::<Ed25519PublicKey>("32", "invalid type: integer `32`");
    refuses_with::<Ed25519PublicKey>(
        &format!("{{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"{x}\"}}"),
        "invalid type: map",
    );
}

#[test]
fn a_denial_without_reasons_does_not_parse() {
    refuses::<Decision>(r#"{"decision":"deny","reasons":[]}"#);
}

// ---------------------------------------------------------------------------------------------
// Requests: refused precisely, audited, nothing stored

#[test]
fn a_draft_naming_a_prohibited_use_parses_and_is_refused_precisely() {
    let fx = Fixture::new();
    let draft = draft_json(&fx);
    for prohibited in ProhibitedUse::ALL {
        let as_purpose = with(
            &draft,
            "purposes",
            Some(json!(["customer_service", prohibited])),
        );
        let parsed: ConsentRequestDraft = parses(&as_purpose);
        assert_eq!(
            parsed.purposes,
            [
                RequestedPurpose::Permitted(Purpose::CustomerService),
                RequestedPurpose::Prohibited(prohibited)
            ]
        );
        assert_eq!(
            refused_request(&fx, parsed),
            RequestError::ProhibitedPurpose(prohibited)
        );

        let as_scope = with(&draft, "scopes", Some(json!([prohibited, "balance"])));
        let parsed: ConsentRequestDraft = parses(&as_scope);
        assert_eq!(
            refused_request(&fx, parsed),
            RequestError::ProhibitedScope(prohibited)
        );
    }
    // A prohibited purpose is reported before a prohibited scope, and before any lookup.
    let both = ConsentRequestDraft {
        holder: id("no-such-bank"),
        platform: id("no-such-platform"),
        scopes: vec!["data_sale".parse().unwrap()],
        purposes: vec!["ads".parse().unwrap()],
        ..fx.draft()
    };
    assert_eq!(
        refused_request(&fx, both),
        RequestError::ProhibitedPurpose(ProhibitedUse::Ads)
    );
    assert!(fx.broker.consents_of(&fx.alice).unwrap().is_empty());
}

#[test]
fn an_empty_request_is_refused() {
    let fx = Fixture::new();
    let draft = draft_json(&fx);
    let cases = [
        (
            with(&draft, "scopes", Some(json!([]))),
            RequestError::NoScopes,
        ),
        (
            with(&draft, "purposes", Some(json!([]))),
            RequestError::NoPurposes,
        ),
        (
            with(&draft, "accounts", Some(json!({ "listed": [] }))),
            RequestError::NoAccounts,
        ),
    ];
    for (json, expected) in cases {
        assert_eq!(refused_request(&fx, parses(&json)), expected);
    }
    assert!(fx.broker.consents_of(&fx.alice).unwrap().is_empty());
}

#[test]
fn a_duration_must_be_positive_and_within_the_holder_maximum() {
    let fx = Fixture::new();
    let draft = |duration: Duration| ConsentRequestDraft {
        duration,
        ..fx.draft()
    };
    for seconds in [0, -1, -86_400, i64::MIN] {
        assert_eq!(
            refused_request(&fx, draft(Duration::seconds(seconds))),
            RequestError::DurationNotPositive { seconds }
        );
    }
    let ninety_days = Duration::days(90).whole_seconds();
    for requested in [
        Duration::days(91),
        Duration::days(90) + Duration::seconds(1),
        Duration::seconds(i64::MAX),
    ] {
        assert_eq!(
            refused_request(&fx, draft(requested)),
            RequestError::DurationTooLong {
                requested_seconds: requested.whole_seconds(),
                max_seconds: ninety_days,
            }
        );
    }
    // Also from the wire, at the extremes of the integer.
    let json = with(&draft_json(&fx), "duration_seconds", Some(json!(i64::MIN)));
    assert_eq!(
        refused_request(&fx, parses(&json)),
        RequestError::DurationNotPositive { seconds: i64::MIN }
    );
    assert!(fx.broker.consents_of(&fx.alice).unwrap().is_empty());
    let request = fx
        .broker
        .request_consent(draft(Duration::days(90)))
        .unwrap();
    assert_eq!(request.duration(), Duration::days(90));
}

#[test]
fn a_holder_maximum_above_365_days_is_capped_at_365() {
    for policy in [
        HolderPolicy {
            max_consent_duration: Duration::days(400),
            ..HolderPolicy::default()
        },
        parses::<HolderPolicy>(
            r#"{"enabled_scopes":["balance","alerts"],
                "max_consent_duration_seconds":9223372036854775807,
                "unattended_daily_limit":4}"#,
        ),
    ] {
        let fx = Fixture::with_policy(MemoryStore::new(), policy);
        let draft = |duration: Duration| ConsentRequestDraft {
            duration,
            ..fx.draft()
        };
        assert_eq!(
            refused_request(&fx, draft(Duration::days(366))),
            RequestError::DurationTooLong {
                requested_seconds: Duration::days(366).whole_seconds(),
                max_seconds: Duration::days(365).whole_seconds(),
            }
        );
        let request = fx
            .broker
            .request_consent(draft(Duration::days(365)))
            .unwrap();
        // The approval is capped the same way.
        let statement = fx.full_statement(&request);
        assert_eq!(statement.consent_expires_at, START + Duration::days(365));
        let consent = fx
            .broker
            .approve(request.id(), &fx.attest(&statement))
            .unwrap();
        assert_eq!(
            consent.grant().unwrap().expires_at(),
            START + Duration::days(365)
        );
    }
}

#[test]
fn a_scope_the_holder_does_not_offer_is_refused() {
    let fx = Fixture::new();
    let draft = ConsentRequestDraft {
        scopes: vec![Scope::Balance.into(), Scope::Transactions.into()],
        ..fx.draft()
    };
    assert_eq!(
        refused_request(&fx, draft),
        RequestError::ScopeNotOffered(Scope::Transactions)
    );
    assert!(fx.broker.consents_of(&fx.alice).unwrap().is_empty());
}

#[test]
fn unknown_parties_and_unregistered_purposes_are_refused() {
    let fx = Fixture::new();
    let stranger_bank: HolderId = id("stranger-bank");
    let stranger_app: PlatformId = id("stranger-app");
    assert_eq!(
        refused_request(
            &fx,
            ConsentRequestDraft {
                holder: stranger_bank.clone(),
                ..fx.draft()
            }
        ),
        RequestError::UnknownHolder(stranger_bank.clone())
    );
    assert_eq!(
        refused_request(
            &fx,
            ConsentRequestDraft {
                platform: stranger_app.clone(),
                ..fx.draft()
            }
        ),
        RequestError::UnknownPlatform(stranger_app.clone())
    );
    // Both unknown: the holder is looked up first.
    assert_eq!(
        refused_request(
            &fx,
            ConsentRequestDraft {
                holder: stranger_bank.clone(),
                platform: stranger_app,
                ..fx.draft()
            }
        ),
        RequestError::UnknownHolder(stranger_bank)
    );

    let support_bot: PlatformId = id("support-bot");
    fx.broker
        .register_platform(PlatformProfile {
            id: support_bot.clone(),
            registered_purposes: PurposeSet::from([Purpose::CustomerService]),
        })
        .unwrap();
    assert_eq!(
        refused_request(
            &fx,
            ConsentRequestDraft {
                platform: support_bot.clone(),
                ..fx.draft()
            }
        ),
        RequestError::PurposeNotRegistered(Purpose::FraudProtection)
    );
    assert!(fx.broker.consents_of(&fx.alice).unwrap().is_empty());
    fx.broker
        .request_consent(ConsentRequestDraft {
            platform: support_bot,
            purposes: vec![Purpose::CustomerService.into()],
            ..fx.draft()
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Unknown consents and disallowed transitions

#[test]
fn every_call_on_an_unknown_consent_says_so() {
    let fx = Fixture::new();
    let known = fx.granted();
    let unknown: ConsentId = id("cns_404");
    let token = fx.attest(&fx.full_statement(&known));
    let expected = Error::UnknownConsent(unknown.clone());

    assert_eq!(
        unaudited(&fx, None, || fx.broker.approve(&unknown, &token)),
        expected
    );
    assert_eq!(
        unaudited(&fx, None, || fx.broker.approve(&unknown, "")),
        expected
    );
    assert_eq!(
        unaudited(&fx, None, || fx.broker.reject(&unknown)),
        expected
    );
    assert_eq!(
        unaudited(&fx, None, || fx.revoke(
            &unknown,
            Revoker::Platform,
            RevocationReason::NoLongerNeeded
        )),
        expected
    );
    assert_eq!(
        unaudited(&fx, None, || fx.broker.reauthorise(&unknown, &token)),
        expected
    );
    assert_eq!(
        unaudited(&fx, None, || fx.broker.consent(&unknown)),
        expected
    );
    assert_eq!(fx.broker.store().consent(&unknown).unwrap(), None);

    // The checked call answers with a recorded denial, never an error.
    let seq = fx.audit_len();
    let access = fx.access(&unknown);
    let outcome = fx.broker.authorise_access(&access).unwrap();
    assert_eq!(
        outcome.decision(),
        Decision::Deny {
            reasons: vec![DenyReason::UnknownConsent]
        }
    );
    assert_eq!(outcome.audit_seq(), seq);
    let expected_entry = AuditEntry {
        seq,
        at: fx.broker.now(),
        actor: Actor::Platform(fx.platform.clone()),
        event: AuditEvent::AccessDenied {
            consent: unknown.clone(),
            // No consent, so no subject: neither the subject nor the account is named.
            subject: None,
            scope: access.scope,
            purpose: access.purpose,
            account: None,
            presence: access.presence,
            reasons: vec![DenyReason::UnknownConsent],
        },
    };
    assert_eq!(fx.audit()[seq as usize..], [expected_entry]);
}

#[test]
fn a_decided_request_cannot_be_decided_again() {
    let fx = Fixture::new();
    let request = fx.request();
    let token = fx.attest(&fx.full_statement(&request));
    let rejected = fx.broker.reject(request.id()).unwrap();
    assert_eq!(rejected.version(), 2);
    assert_eq!(rejected.state(), &ConsentState::Rejected { at: START });

    // Rejecting twice: refused, not recorded, nothing changed.
    fx.clock.advance(Duration::minutes(1));
    assert_eq!(
        unaudited(&fx, Some(request.id()), || fx.broker.reject(request.id())),
        Error::Consent(ConsentError::AlreadyDecided {
            consent: request.id().clone(),
            status: ConsentStatus::Rejected,
        })
    );

    // Approving the rejected request: refused and audited as a lifecycle refusal.
    let seq = fx.audit_len();
    let refusal = ConsentError::AlreadyDecided {
        consent: request.id().clone(),
        status: ConsentStatus::Rejected,
    };
    assert_eq!(
        fx.broker.approve(request.id(), &token),
        Err(Error::Consent(refusal.clone()))
    );
    let expected = AuditEntry {
        seq,
        at: fx.broker.now(),
        actor: Actor::Holder(fx.bank.clone()),
        event: AuditEvent::ApprovalRefused {
            consent: request.id().clone(),
            subject: fx.pseudonym(&fx.alice),
            refusal: Refusal::Lifecycle(refusal),
        },
    };
    assert_eq!(fx.audit()[seq as usize..], [expected]);
    assert_eq!(fx.broker.consent(request.id()).unwrap().consent, rejected);

    // An approved request cannot be rejected.
    let approved = fx.granted();
    assert_eq!(
        unaudited(&fx, Some(approved.id()), || fx.broker.reject(approved.id())),
        Error::Consent(ConsentError::AlreadyDecided {
            consent: approved.id().clone(),
            status: ConsentStatus::Authorised,
        })
    );
    // A request past its window cannot be rejected either.
    let late = fx.request();
    fx.clock.advance(Duration::minutes(10));
    assert_eq!(
        unaudited(&fx, Some(late.id()), || fx.broker.reject(late.id())),
        Error::Consent(ConsentError::ApprovalWindowClosed {
            consent: late.id().clone(),
            deadline: late.requested_at() + Duration::minutes(10),
        })
    );
}

#[test]
fn only_a_live_grant_can_be_revoked() {
    let fx = Fixture::new();
    let pending = fx.request();
    assert_eq!(
        unaudited(&fx, Some(pending.id()), || fx.revoke(
            pending.id(),
            Revoker::Subject,
            RevocationReason::SubjectWithdrew
        )),
        Error::Consent(ConsentError::NotLive {
            consent: pending.id().clone(),
            status: ConsentStatus::Requested,
        })
    );
    assert_eq!(
        fx.broker.consent(pending.id()).unwrap().consent.state(),
        &ConsentState::Requested
    );

    let granted = fx.granted();
    let revoked = fx
        .revoke(
            granted.id(),
            Revoker::Holder,
            RevocationReason::SuspectedMisuse,
        )
        .unwrap();
    assert_eq!(revoked.version(), 3);
    for (by, reason) in [
        (Revoker::Holder, RevocationReason::SuspectedMisuse),
        (Revoker::Subject, RevocationReason::SubjectWithdrew),
        (Revoker::Platform, RevocationReason::NoLongerNeeded),
    ] {
        assert_eq!(
            unaudited(&fx, Some(granted.id()), || fx.revoke(
                granted.id(),
                by,
                reason
            )),
            Error::Consent(ConsentError::NotLive {
                consent: granted.id().clone(),
                status: ConsentStatus::Revoked {
                    by: Revoker::Holder,
                    reason: RevocationReason::SuspectedMisuse,
                },
            })
        );
    }
    assert_eq!(fx.broker.consent(granted.id()).unwrap().consent, revoked);
}

// ---------------------------------------------------------------------------------------------
// Registrations and ids

/// Registering the same holder again with another key (or policy) is refused as a mismatch,
/// naming what differs; nothing is written.
#[test]
fn a_holder_registered_twice_keeps_its_first_registration() {
    let fx = Fixture::new();
    let first = fx.broker.store().holder(&fx.bank).unwrap().unwrap();
    let impostor =
        AttestationSigner::new(fx.bank.clone(), SigningKey::generate(&fx.rng).unwrap()).unwrap();
    let error = unaudited(&fx, None, || {
        fx.broker.register_holder(HolderRegistration {
            id: fx.bank.clone(),
            policy: HolderPolicy {
                enabled_scopes: ScopeSet::from(Scope::ALL),
                ..HolderPolicy::default()
            },
            attestation_keys: vec![impostor.public_key()],
        })
    });
    assert_eq!(
        error,
        Error::RegistrationMismatch {
            kind: RecordKind::Holder,
            id: "bank".into(),
            field: RegistrationField::AttestationKeys,
        }
    );
    // What an operator reads at start-up: words, not the enum's debug names.
    assert_eq!(
        error.to_string(),
        "holder bank is registered with different attestation keys"
    );
    // The same key with another policy: refused too, naming the policy.
    let error = unaudited(&fx, None, || {
        fx.broker.register_holder(HolderRegistration {
            policy: HolderPolicy {
                enabled_scopes: ScopeSet::from(Scope::ALL),
                ..HolderPolicy::default()
            },
            ..fx.kit.bank.registration()
        })
    });
    assert_eq!(
        error,
        Error::RegistrationMismatch {
            kind: RecordKind::Holder,
            id: "bank".into(),
            field: RegistrationField::Policy,
        }
    );
    assert_eq!(fx.broker.store().holder(&fx.bank).unwrap(), Some(first));
    // The first key still attests; the second was never registered.
    let request = fx.request();
    let statement = fx.full_statement(&request);
    let forged = impostor
        .sign(&statement, fx.broker.id(), fx.broker.now(), &fx.rng)
        .unwrap();
    assert_eq!(
        fx.broker.approve(request.id(), &forged),
        Err(Error::Attestation(AttestationError::UnknownKey {
            holder: fx.bank.clone()
        }))
    );
    fx.broker
        .approve(request.id(), &fx.attest(&statement))
        .unwrap();
}

#[test]
fn a_platform_registered_twice_keeps_its_first_registration() {
    let fx = Fixture::new();
    let first = fx.broker.store().platform(&fx.platform).unwrap().unwrap();
    let error = unaudited(&fx, None, || {
        fx.broker.register_platform(PlatformProfile {
            id: fx.platform.clone(),
            registered_purposes: PurposeSet::from([Purpose::CustomerService]),
        })
    });
    assert_eq!(
        error,
        Error::RegistrationMismatch {
            kind: RecordKind::Platform,
            id: "chat".into(),
            field: RegistrationField::Purposes,
        }
    );
    assert_eq!(
        fx.broker.store().platform(&fx.platform).unwrap(),
        Some(first)
    );
}

#[test]
fn a_holder_without_attestation_keys_is_not_registered() {
    let fx = Fixture::new();
    let keyless: HolderId = id("keyless-bank");
    let error = unaudited(&fx, None, || {
        fx.broker.register_holder(HolderRegistration {
            id: keyless.clone(),
            policy: HolderPolicy::default(),
            attestation_keys: vec![],
        })
    });
    assert_eq!(error, Error::NoAttestationKeys(keyless.clone()));
    assert_eq!(fx.broker.store().holder(&keyless).unwrap(), None);
    assert_eq!(
        refused_request(
            &fx,
            ConsentRequestDraft {
                holder: keyless.clone(),
                ..fx.draft()
            }
        ),
        RequestError::UnknownHolder(keyless)
    );
}

/// An id generator that breaks its promise: the same consent id every time.
struct SameId;

impl IdGenerator for SameId {
    fn consent_id(&self) -> Result<ConsentId, IdError> {
        Ok(id("cns_same"))
    }
}

#[test]
fn a_repeated_consent_id_is_refused_and_the_first_consent_is_untouched() {
    let clock = Arc::new(ManualClock::new(START));
    let broker = Broker::builder(id("broker"), MemoryStore::new())
        .clock(clock)
        .ids(Arc::new(SameId))
        .keys(keys())
        .build()
        .unwrap();
    let rng = ring::rand::SystemRandom::new();
    let bank: HolderId = id("bank");
    let signer = AttestationSigner::new(bank.clone(), SigningKey::generate(&rng).unwrap()).unwrap();
    broker
        .register_holder(HolderRegistration {
            id: bank.clone(),
            policy: HolderPolicy::default(),
            attestation_keys: vec![signer.public_key()],
        })
        .unwrap();
    broker
        .register_platform(PlatformProfile {
            id: id("chat"),
            registered_purposes: PurposeSet::from(Purpose::ALL),
        })
        .unwrap();
    let alice: SubjectId = id("alice");
    let bob: SubjectId = id("bob");
    let draft = |subject: &SubjectId, scope: Scope| ConsentRequestDraft {
        subject: subject.clone(),
        platform: id("chat"),
        holder: bank.clone(),
        scopes: vec![scope.into()],
        purposes: vec![Purpose::CustomerService.into()],
        accounts: AccountSelection::SubjectChooses,
        duration: Duration::days(30),
    };
    let first = broker
        .request_consent(draft(&alice, Scope::Balance))
        .unwrap();
    assert_eq!(first.id().as_str(), "cns_same");
    let stored = broker.consent(first.id()).unwrap();
    let audit_len = broker.store().audit_len().unwrap();

    assert_eq!(
        broker.request_consent(draft(&bob, Scope::Alerts)),
        Err(Error::Store(StoreError::Duplicate {
            kind: RecordKind::Consent,
            id: "cns_same".into(),
        }))
    );
    assert_eq!(broker.consent(first.id()).unwrap(), stored);
    assert_eq!(broker.store().audit_len().unwrap(), audit_len);
    assert!(broker.consents_of(&bob).unwrap().is_empty());
    assert_eq!(broker.consents_of(&alice).unwrap(), [stored]);
}

// ---------------------------------------------------------------------------------------------
// Configuration at the edges of time

#[test]
fn a_holder_policy_without_a_positive_maximum_is_refused_and_the_pure_path_does_not_panic() {
    // A policy from the wire with the smallest duration parses (it is well-formed JSON) ...
    let policy: HolderPolicy = parses(
        r#"{"enabled_scopes":["balance","alerts"],
            "max_consent_duration_seconds":-9223372036854775808,
            "unattended_daily_limit":4}"#,
    );
    let refusal = Error::InvalidPolicy(PolicyError::MaxDurationNotPositive { seconds: i64::MIN });
    // ... but the broker refuses to apply it, and nothing changes.
    let fx = Fixture::new();
    let pending = fx.request();
    let token = fx.attest(&fx.full_statement(&pending));
    let audit_len = fx.audit_len();
    assert_eq!(fx.set_policy(policy.clone()), Err(refusal.clone()));
    assert_eq!(
        fx.broker.register_holder(HolderRegistration {
            id: id("bank-2"),
            policy: policy.clone(),
            attestation_keys: vec![fx.bank_signer().public_key()],
        }),
        Err(refusal)
    );
    let zero = HolderPolicy {
        max_consent_duration: Duration::ZERO,
        ..HolderPolicy::default()
    };
    assert_eq!(
        fx.set_policy(zero),
        Err(Error::InvalidPolicy(PolicyError::MaxDurationNotPositive {
            seconds: 0
        }))
    );
    assert_eq!(fx.audit_len(), audit_len);
    fx.broker.approve(pending.id(), &token).unwrap();

    // The pure validation never panics on such limits either.
    let offered = policy.enabled_scopes;
    let limits = consent_broker::RequestLimits {
        offered_scopes: &offered,
        max_duration: policy.effective_max_duration(),
        approval_window: Duration::MAX,
    };
    let request = catch_unwind(AssertUnwindSafe(|| {
        ConsentRequest::from_draft(fx.draft(), id("cns_x"), limits, fx.broker.now())
    }))
    .expect("from_draft must not panic");
    assert_eq!(
        request,
        Err(RequestError::DurationTooLong {
            requested_seconds: Duration::days(90).whole_seconds(),
            max_seconds: i64::MIN,
        })
    );
}

#[test]
fn an_absurd_approval_window_does_not_panic() {
    let fx = Fixture::new();
    let broker = Broker::builder(id("broker"), MemoryStore::new())
        .clock(fx.clock.clone())
        .approval_window(Duration::MAX)
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
    let request = catch_unwind(AssertUnwindSafe(|| broker.request_consent(fx.draft())))
        .expect("request_consent must not panic")
        .unwrap();
    // The deadline saturates at the last representable instant: "never closes".
    assert_eq!(
        request.approval_deadline(),
        time::PrimitiveDateTime::MAX.assume_utc()
    );
    let view = broker.consent(request.id()).unwrap();
    assert_eq!(view.status, ConsentStatus::Requested);
}

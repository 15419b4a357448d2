//! The bodies of the fuzz targets, shared by the libFuzzer binaries (`fuzz/fuzz_targets/*.rs`),
//! the corpus replay test (`tests/it/fuzz_corpus.rs`) and the hostile-input test
//! (`tests/it/hostile.rs`), which include this file with `#[path] mod targets;`: the code that
//! is fuzzed is exactly the code that is replayed under `cargo test`.
//!
//! Every body takes arbitrary bytes, feeds them to the public parsing entry points of one area,
//! and checks what must hold whatever the input (a panic anywhere is a bug):
//!
//! | body | entry points |
//! | --- | --- |
//! | [`token_verify`] | `check_token`, `TokenVerifier::verify`, `AccessClaims` JSON |
//! | [`attestation_verify`] | `check_attestation` against a pending request |
//! | [`consent_request_json`] | `ConsentRequestDraft` JSON, `check_prohibited`, `ConsentRequest::from_draft`, `Consent::from_stored` |
//! | [`access_request_json`] | `AccessRequest` JSON, `evaluate`, `HolderPolicy`, `PlatformProfile`, `Decision`, `DenyReason` JSON |
//! | [`checkpoint_note`] | `open_note`, `verify_checkpoint`, `Checkpoint::parse_body`, `NoteVerifier::from_vkey`, `NoteSigner::sign` |
//! | [`proof_decode`] | `Receipt` JSON and `Receipt::verify`, `decode_hashes`, `verify_inclusion`, `verify_consistency`, the provers |
//! | [`audit_log_verify`] | `AuditEntry::from_bytes`, `verify_log`, `LogRead::audit_entries`, `subject_history`, `consent_history`, `checkpoint_log` over a store of arbitrary bytes |
//! | [`dpop_proof`] | `dpop::check_proof` for a fixed request, token and key, `dpop::normalise_htu` |
//! | [`revocation_feed`] | `feed::check_feed` against the broker's keys, for the bank |
//! | [`sealed_response`] | `SealedResponse` JSON and `open_response` on the subject's device, `hpke::open` |
//! | [`tiles`] | `Tile::parse`, and `TiledLog::update` / `verify_tiles` over a published directory made of the input |
//! | [`cosignatures`] | `verify_witnessed` with the fixture's log and witness keys, `CosignatureVerifier::from_vkey`, `AddCheckpoint::parse` |
//! | [`keys_ids`] | `Jwks::from_json`, `Jwk` JSON, `Ed25519PublicKey::from_base64url`, `SigningKey::from_pkcs8_der`, `NoteSigner::new`, every id and vocabulary `FromStr` |
//!
//! The fixture (keys, a broker, a live grant, a pending request) is built once per process and is
//! deterministic: fixed key seeds, a manual clock at [`NOW`] and sequential consent ids, so that
//! the tokens, attestations and checkpoints committed in `fuzz/corpus/` stay valid.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "included both by the fuzz crate and by the tests, each of which uses part of it; fixtures fail by panicking"
)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use consent_broker::checkpoint::{
    self, Checkpoint, NoteSigner, NoteVerifier, open_note, verify_checkpoint,
};
use consent_broker::merkle::{self, Hash, MemoryNodes, MerkleError, NodeSource};
use consent_broker::time::macros::datetime;
use consent_broker::time::{Date, Duration, OffsetDateTime};
use consent_broker::*;

/// The fixture's clock: every token, attestation and decision is checked at this instant.
pub const NOW: OffsetDateTime = datetime!(2026-11-21 09:00 UTC);

/// PKCS#8 v1 header of a bare Ed25519 seed (RFC 8410); the 32-byte seed follows.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Seed of the broker's token signing key.
pub const TOKEN_KEY_SEED: u8 = 1;
/// Seed of the broker's checkpoint key.
pub const CHECKPOINT_KEY_SEED: u8 = 2;
/// Seed of the bank's attestation key.
pub const BANK_KEY_SEED: u8 = 3;
/// Seed of the platform's DPoP key.
pub const DPOP_KEY_SEED: u8 = 5;
/// What the subject's device key is derived from.
pub const DEVICE_KEY_IKM: &[u8] = b"the fuzz subject's phone";
/// The access token every DPoP proof of the `dpop_proof` target is checked against.
pub const PROOF_TOKEN: &str = "fuzz.access.token";
/// The request every DPoP proof of the `dpop_proof` target is checked against.
pub const PROOF_REQUEST: consent_broker::dpop::HttpRequest<'static> =
    consent_broker::dpop::HttpRequest {
        method: "GET",
        url: "https://bank.example/v1/balance",
    };

/// A fixed Ed25519 key as PKCS#8 v1 DER: the seed is 32 copies of `seed`.
pub fn pkcs8(seed: u8) -> Vec<u8> {
    let mut der = PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(&[seed; 32]);
    der
}

/// A compact JWS of the JSON texts `header` and `payload` (taken as they are, so that they can
/// hold what `serde_json::Value` cannot, such as duplicate keys), signed with the fixed key
/// `key_seed` (see [`pkcs8`]).
pub fn sign_jws(header: &str, payload: &str, key_seed: u8) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let key = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8(key_seed))
        .expect("a fixed key");
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.as_ref()))
}

/// Parses a fixture id.
pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("fixture id")
}

/// Everything the bodies check against.
pub struct Fixture {
    /// Broker `broker`, token key [`TOKEN_KEY_SEED`], checkpoint key [`CHECKPOINT_KEY_SEED`].
    pub broker: Broker<Arc<MemoryStore>>,
    /// The bank's verifier of the broker's tokens, over the broker's store.
    pub verifier: TokenVerifier<StoreStatus<Arc<MemoryStore>>>,
    /// The broker's token key and its kid.
    pub token_key: Ed25519PublicKey,
    /// The kid of [`Fixture::token_key`].
    pub token_kid: String,
    /// The holder, `bank`.
    pub bank: HolderId,
    /// The bank's attestation signer (key [`BANK_KEY_SEED`]).
    pub bank_signer: AttestationSigner,
    /// The bank's registered attestation keys.
    pub holder_keys: Vec<Ed25519PublicKey>,
    /// `cns_1`: balance and alerts, both purposes, two listed accounts, approved: live.
    pub granted: Consent,
    /// `cns_2`: balance and alerts, both purposes, the subject chooses the accounts; awaiting
    /// approval, so attestations are verified against it.
    pub pending: ConsentRequest,
    /// The bank's policy (the default: balance and alerts, 90 days).
    pub policy: HolderPolicy,
    /// The platform, `chat`, registered for every purpose.
    pub profile: PlatformProfile,
    /// Signs notes with the broker's checkpoint key and name.
    pub note_signer: NoteSigner,
    /// Verifies the broker's checkpoints.
    pub note_verifier: NoteVerifier,
    /// The platform's DPoP key (seed [`DPOP_KEY_SEED`]).
    pub dpop: consent_broker::dpop::DpopSigner,
    /// The subject's device key ([`DEVICE_KEY_IKM`]).
    pub device: consent_broker::hpke::DeviceSecretKey,
    /// A balance of `acc-1` sealed to [`Fixture::device`] under [`sealed_context`].
    pub sealed: SealedResponse,
    /// A Merkle tree of 64 leaves (`leaf_hash` of the index as 8 little-endian bytes); it holds
    /// the complete subtrees of every size up to 64.
    pub tree: MemoryNodes,
}

/// The draft behind both consents, with its accounts.
pub fn draft(accounts: AccountSelection) -> ConsentRequestDraft {
    ConsentRequestDraft {
        subject: id("alice"),
        platform: id("chat"),
        holder: id("bank"),
        scopes: vec![Scope::Balance.into(), Scope::Alerts.into()],
        purposes: vec![
            Purpose::CustomerService.into(),
            Purpose::FraudProtection.into(),
        ],
        accounts,
        duration: Duration::days(90),
    }
}

/// The two listed accounts of `cns_1`.
pub fn listed_accounts() -> AccountSet {
    AccountSet::from([id("acc-current"), id("acc-savings")])
}

/// The leaves of [`Fixture::tree`].
pub fn tree_leaf(index: u64) -> Hash {
    merkle::leaf_hash(&index.to_le_bytes())
}

fn build_fixture() -> Fixture {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(NOW));
    let keys = BrokerKeys::new(
        SigningKey::from_pkcs8_der(&pkcs8(TOKEN_KEY_SEED)).expect("token key"),
        SigningKey::from_pkcs8_der(&pkcs8(CHECKPOINT_KEY_SEED)).expect("checkpoint key"),
    );
    let broker = Broker::builder(id("broker"), store.clone())
        .clock(clock.clone())
        .ids(Arc::new(SequentialIds::new()))
        .keys(keys)
        .build()
        .expect("broker");
    let bank: HolderId = id("bank");
    let bank_signer = AttestationSigner::new(
        bank.clone(),
        SigningKey::from_pkcs8_der(&pkcs8(BANK_KEY_SEED)).expect("bank key"),
    )
    .expect("attestation signer");
    let policy = HolderPolicy::default();
    broker
        .register_holder(HolderRegistration {
            id: bank.clone(),
            policy: policy.clone(),
            attestation_keys: vec![bank_signer.public_key()],
        })
        .expect("holder");
    let profile = PlatformProfile {
        id: id("chat"),
        registered_purposes: PurposeSet::from(Purpose::ALL),
    };
    broker.register_platform(profile.clone()).expect("platform");

    let request = broker
        .request_consent(draft(AccountSelection::Listed(listed_accounts())))
        .expect("cns_1");
    let statement = ApprovalStatement {
        consent: request.id().clone(),
        subject: request.subject().clone(),
        platform: request.platform().clone(),
        scopes: request.scopes(),
        purposes: request.purposes(),
        accounts: listed_accounts(),
        consent_expires_at: NOW + request.duration(),
        unattended_daily_limit: DEFAULT_UNATTENDED_DAILY_LIMIT,
        devices: Vec::new(),
        plaintext: PlaintextUses::new(),
    };
    let attestation = bank_signer
        .sign(
            &statement,
            broker.id(),
            NOW,
            &ring::rand::SystemRandom::new(),
        )
        .expect("attestation");
    let granted = broker
        .approve(request.id(), &attestation)
        .expect("approval");
    let pending = broker
        .request_consent(draft(AccountSelection::SubjectChooses))
        .expect("cns_2");

    let verifier = TokenVerifier::new(
        bank.clone(),
        broker.id().clone(),
        &broker.jwks().expect("jwks"),
        clock,
        StoreStatus(store),
    )
    .expect("verifier");
    let token_key = broker.jwks().expect("jwks").public_keys().expect("jwks")[0];
    let note_signer =
        NoteSigner::new(broker.log_origin(), &pkcs8(CHECKPOINT_KEY_SEED)).expect("note signer");
    let note_verifier =
        NoteVerifier::from_vkey(&broker.checkpoint_verifier_key()).expect("note verifier");
    assert_eq!(note_verifier.to_vkey(), note_signer.verifier_key());
    let mut tree = MemoryNodes::new();
    for index in 0..64 {
        tree.push(tree_leaf(index)).expect("tree");
    }
    let dpop = consent_broker::dpop::DpopSigner::new(
        SigningKey::from_pkcs8_der(&pkcs8(DPOP_KEY_SEED)).expect("dpop key"),
    )
    .expect("dpop signer");
    let device = consent_broker::hpke::DeviceSecretKey::derive(DEVICE_KEY_IKM);
    let sealed = seal_response(
        &sealed_balance(),
        &sealed_context(),
        &[device.public_key()],
        &ring::rand::SystemRandom::new(),
    )
    .expect("sealing");
    Fixture {
        device,
        sealed,
        dpop,
        token_kid: token_key.thumbprint(),
        token_key,
        holder_keys: vec![bank_signer.public_key()],
        bank_signer,
        bank,
        verifier,
        broker,
        granted,
        pending,
        policy,
        profile,
        note_signer,
        note_verifier,
        tree,
    }
}

/// The context of [`Fixture::sealed`].
pub fn sealed_context() -> ResponseContext {
    ResponseContext {
        holder: id("bank"),
        consent: id("cns_1"),
        token_id: "tok-1".to_owned(),
        scope: Scope::Balance,
        account: id("acc-1"),
        sequence: 7,
    }
}

/// The data of [`Fixture::sealed`].
pub fn sealed_balance() -> AccountData {
    AccountData::Balance(Balance {
        account: id("acc-1"),
        available: Money {
            minor_units: 4_200,
            currency: "EUR".into(),
        },
        as_of: NOW,
    })
}

/// The process-wide fixture.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

/// What a JSON value of `T` must do: if `bytes` parse, the value serializes and parses back to
/// itself.
fn json_round_trip<T>(bytes: &[u8]) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let value: T = serde_json::from_slice(bytes).ok()?;
    let json = serde_json::to_vec(&value).expect("a parsed value serializes");
    let back: T = serde_json::from_slice(&json).expect("a serialized value parses");
    assert_eq!(
        back,
        value,
        "JSON round trip of {}",
        std::any::type_name::<T>()
    );
    Some(value)
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// `check_token` and `TokenVerifier::verify` on arbitrary bytes (lossily made UTF-8).
pub fn token_verify(data: &[u8]) {
    let fx = fixture();
    let token = String::from_utf8_lossy(data);
    let expected = TokenExpectations {
        issuer: fx.broker.id(),
        audience: &fx.bank,
        leeway: MAX_LEEWAY,
        max_lifetime: MAX_TOKEN_LIFETIME,
    };
    let checked = check_token(
        &token,
        |kid| (kid == fx.token_kid).then_some(fx.token_key),
        &expected,
        NOW,
    );
    if let Ok(claims) = &checked {
        assert!(token.len() <= MAX_TOKEN_LEN);
        assert_eq!(&claims.iss, fx.broker.id());
        assert_eq!(claims.aud, fx.bank);
        assert!(claims.exp > claims.iat);
        assert!(claims.exp - claims.iat <= MAX_TOKEN_LIFETIME.whole_seconds());
        assert!((16..=128).contains(&claims.jti.len()));
    }
    let verified = fx.verifier.verify(&token);
    if let Ok(access) = &verified {
        let claims = checked
            .as_ref()
            .expect("a token the verifier accepts passes the pure check");
        assert_eq!(access.consent(), &claims.cid);
        assert_eq!(access.consent(), fx.granted.id());
        assert_eq!(access.scope(), claims.scope);
        assert_eq!(access.purpose(), claims.purpose);
        assert_eq!(access.account(), &claims.acct);
        assert_eq!(access.token_id(), Some(claims.jti.as_str()));
        let grant = fx.granted.grant().expect("cns_1 is granted");
        assert!(grant.scopes().contains(access.scope()));
        assert!(grant.purposes().contains(access.purpose()));
        assert!(grant.accounts().contains(access.account()));
    }
    let _ = json_round_trip::<AccessClaims>(data);
}

// ---------------------------------------------------------------------------------------------
// Attestations

/// `check_attestation` on arbitrary bytes against the pending request `cns_2`.
pub fn attestation_verify(data: &[u8]) {
    let fx = fixture();
    let token = String::from_utf8_lossy(data);
    let expected = Expectations {
        broker: fx.broker.id(),
        request: &fx.pending,
        holder_keys: &fx.holder_keys,
        latest_expiry: NOW + fx.pending.duration(),
    };
    if let Ok(checked) = check_attestation(&token, &expected, NOW) {
        let statement = &checked.statement;
        assert_eq!(&statement.consent, fx.pending.id());
        assert_eq!(&statement.subject, fx.pending.subject());
        assert!(statement.scopes.is_subset(&fx.pending.scopes()));
        assert!(statement.purposes.is_subset(&fx.pending.purposes()));
        assert!(!statement.scopes.is_empty());
        assert!(!statement.accounts.is_empty());
        assert!(statement.consent_expires_at > NOW);
        assert!(statement.consent_expires_at <= expected.latest_expiry);
        assert!(!checked.attestation_id.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Consent requests and access requests

/// `ConsentRequestDraft` from JSON, then its validation; a stored `Consent` read back.
pub fn consent_request_json(data: &[u8]) {
    let fx = fixture();
    if let Some(draft) = json_round_trip::<ConsentRequestDraft>(data) {
        let prohibited = draft.check_prohibited();
        let limits = RequestLimits {
            offered_scopes: &fx.policy.enabled_scopes,
            max_duration: fx.policy.effective_max_duration(),
            approval_window: DEFAULT_APPROVAL_WINDOW,
        };
        match ConsentRequest::from_draft(draft, id("cns_fuzz"), limits, NOW) {
            Ok(request) => {
                assert_eq!(prohibited, Ok(()));
                assert!(!request.scopes().is_empty());
                assert!(!request.purposes().is_empty());
                assert!(request.scopes().is_subset(limits.offered_scopes));
                assert!(request.duration().is_positive());
                assert!(request.duration() <= limits.max_duration);
                assert_eq!(request.requested_at(), NOW);
                assert_eq!(request.approval_deadline(), NOW + DEFAULT_APPROVAL_WINDOW);
            }
            Err(error) => {
                if let Err(first) = prohibited {
                    assert_eq!(error, first, "prohibited uses are reported first");
                }
            }
        }
    }
    if let Ok(consent) = Consent::from_stored(data) {
        let json = serde_json::to_vec(&consent).expect("a consent serializes");
        assert_eq!(
            Consent::from_stored(&json).expect("a stored consent reads back"),
            consent
        );
        let _ = consent.status(NOW);
        let _ = consent.ensure_live(NOW);
        let _ = consent.ensure_awaiting_decision(NOW);
    }
}

/// `AccessRequest` from JSON and the checked policy call over it; the policy types' JSON.
pub fn access_request_json(data: &[u8]) {
    let fx = fixture();
    if let Some(access) = json_round_trip::<AccessRequest>(data) {
        let prohibited = prohibited_reasons(&access);
        let decide = |consent: Option<&Consent>, usage: Usage| {
            evaluate(&access, consent, &fx.policy, &fx.profile, usage, NOW)
        };
        let decision = decide(Some(&fx.granted), Usage::default());
        if !prohibited.is_empty() {
            assert_eq!(
                decision,
                Decision::Deny {
                    reasons: prohibited.clone()
                },
                "a prohibited use is refused before the grant is looked at"
            );
        }
        if decision.is_permit() {
            let grant = fx.granted.grant().expect("cns_1 is granted");
            assert_eq!(&access.platform, &fx.profile.id);
            assert!(grant.accounts().contains(&access.account));
        } else {
            assert!(!decision.reasons().is_empty());
        }
        assert!(!decide(None, Usage::default()).is_permit());
        let exhausted = decide(
            Some(&fx.granted),
            Usage {
                unattended_today: u32::MAX,
            },
        );
        if access.presence == Presence::Unattended {
            assert!(!exhausted.is_permit());
        }
    }
    if let Some(policy) = json_round_trip::<HolderPolicy>(data) {
        let valid = policy.validate();
        assert!(policy.effective_max_duration() <= ABSOLUTE_MAX_CONSENT_DURATION);
        if valid.is_ok() {
            assert!(policy.max_consent_duration.is_positive());
        }
    }
    let _ = json_round_trip::<PlatformProfile>(data);
    if let Some(decision) = json_round_trip::<Decision>(data) {
        assert_eq!(decision.is_permit(), decision.reasons().is_empty());
    }
    let _ = json_round_trip::<DenyReason>(data);
    let _ = json_round_trip::<Usage>(data);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints and signed notes

/// Signed notes, checkpoint bodies and verifier keys from arbitrary text.
pub fn checkpoint_note(data: &[u8]) {
    let fx = fixture();
    let text = String::from_utf8_lossy(data);
    let verifiers = std::slice::from_ref(&fx.note_verifier);

    if let Ok(opened) = open_note(&text, verifiers) {
        assert!(
            text.starts_with(&opened),
            "the text is a prefix of the note"
        );
    }
    let verified = verify_checkpoint(&text, &fx.note_verifier, None);
    if let Ok(checkpoint) = &verified {
        assert_eq!(
            verify_checkpoint(&text, &fx.note_verifier, Some(&checkpoint.origin)).as_ref(),
            Ok(checkpoint)
        );
    }
    let _ = verify_checkpoint(&text, &fx.note_verifier, Some(fx.broker.log_origin()));

    // A parsed body formats back to exactly itself: one encoding per checkpoint.
    if let Ok(checkpoint) = Checkpoint::parse_body(&text) {
        let body = checkpoint
            .to_body()
            .expect("a parsed checkpoint can be formatted");
        assert_eq!(body, text, "a checkpoint body has exactly one encoding");
        assert_eq!(Checkpoint::parse_body(&body).as_ref(), Ok(&checkpoint));
    }

    // What the signer signs, the opener opens, and a checkpoint reads the same through either.
    if let Ok(note) = fx.note_signer.sign(&text) {
        assert_eq!(open_note(&note, verifiers).as_deref(), Ok(&*text));
        let through_note = verify_checkpoint(&note, &fx.note_verifier, None);
        match Checkpoint::parse_body(&text) {
            Ok(checkpoint) => assert_eq!(through_note, Ok(checkpoint)),
            Err(error) => assert_eq!(through_note, Err(error)),
        }
        let mut tampered = note.clone().into_bytes();
        if let Some(first) = tampered.first_mut() {
            // Still ASCII (no control character), but another text.
            *first = if *first == b'x' { b'y' } else { b'x' };
            if let Ok(tampered) = String::from_utf8(tampered) {
                assert!(open_note(&tampered, verifiers).is_err());
            }
        }
    }

    if let Ok(verifier) = NoteVerifier::from_vkey(&text) {
        assert_eq!(
            NoteVerifier::from_vkey(&verifier.to_vkey()).as_ref(),
            Ok(&verifier)
        );
        let _ = open_note(&text, std::slice::from_ref(&verifier));
    }
}

// ---------------------------------------------------------------------------------------------
// Proofs

fn take_u64(bytes: &[u8]) -> (u64, &[u8]) {
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    (u64::from_le_bytes(word), &bytes[n..])
}

fn take_hash(bytes: &[u8]) -> (Hash, &[u8]) {
    let mut hash = [0u8; 32];
    let n = bytes.len().min(32);
    hash[..n].copy_from_slice(&bytes[..n]);
    (hash, &bytes[n..])
}

/// Receipts from JSON, and inclusion and consistency proofs from raw bytes:
/// `[mode][a: u64 LE][b: u64 LE][hash 1][hash 2][proof hashes…]`; an even mode verifies the
/// inclusion of leaf `hash 1` at index `a` in a tree of size `b` and root `hash 2`, an odd mode
/// the consistency of sizes `a` and `b` with roots `hash 1` and `hash 2`.
pub fn proof_decode(data: &[u8]) {
    let fx = fixture();
    if let Some(receipt) = json_round_trip::<Receipt>(data) {
        let decoded = decode_hashes(&receipt.proof);
        if let Ok(entry) = receipt.verify(&fx.note_verifier) {
            assert_eq!(entry.seq, receipt.index);
            assert!(receipt.index < receipt.tree_size);
            assert_eq!(decoded.map(|d| d.len()), Some(receipt.proof.len()));
        }
    }

    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (a, rest) = take_u64(rest);
    let (b, rest) = take_u64(rest);
    let (first, rest) = take_hash(rest);
    let (second, rest) = take_hash(rest);
    let proof: Vec<Hash> = rest
        .chunks_exact(32)
        .map(|chunk| take_hash(chunk).0)
        .collect();
    if mode & 1 == 0 {
        let _ = merkle::verify_inclusion(a, b, &first, &proof, &second);
    } else {
        let _ = merkle::verify_consistency(a, b, &first, &second, &proof);
    }

    // The provers never panic on any index or size, and what they prove verifies; a proof
    // with one bit flipped does not.
    let tree = &fx.tree;
    let _ = merkle::root(a, tree);
    let _ = merkle::inclusion_proof(a, b, tree);
    let _ = merkle::consistency_proof(a, b, tree);
    let size = b % 64 + 1;
    let index = a % size;
    let root = merkle::root(size, tree).expect("sizes up to 64 are stored");
    let mut path = merkle::inclusion_proof(index, size, tree).expect("in range");
    assert_eq!(
        merkle::verify_inclusion(index, size, &tree_leaf(index), &path, &root),
        Ok(())
    );
    let old = a.rotate_right(7) % size + 1;
    let old_root = merkle::root(old, tree).expect("stored");
    let mut consistency = merkle::consistency_proof(old, size, tree).expect("in range");
    assert_eq!(
        merkle::verify_consistency(old, size, &old_root, &root, &consistency),
        Ok(())
    );
    let bit = usize::from(mode >> 1);
    if !path.is_empty() {
        let at = bit % path.len();
        path[at][bit % 32] ^= 1 << (bit % 8);
        assert!(merkle::verify_inclusion(index, size, &tree_leaf(index), &path, &root).is_err());
    }
    if !consistency.is_empty() {
        let at = bit % consistency.len();
        consistency[at][bit % 32] ^= 1 << (bit % 8);
        assert!(merkle::verify_consistency(old, size, &old_root, &root, &consistency).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// The audit log

/// A [`Store`] that holds only an audit log of arbitrary bytes and its Merkle nodes, which it
/// hands out as they are; everything else is empty. `hidden` leaves one entry out of
/// `audit_bytes`, and `claimed_len` overrides `audit_len`; `reads` counts the calls of
/// `audit_bytes`.
#[derive(Debug, Default)]
pub struct LogStore {
    /// The entries, in order.
    pub entries: Vec<StoredEntry>,
    /// Merkle nodes by `(level, index)`.
    pub nodes: BTreeMap<(u32, u64), Hash>,
    /// An entry `audit_bytes` leaves out.
    pub hidden: Option<u64>,
    /// What `audit_len` says instead of the number of entries.
    pub claimed_len: Option<u64>,
    /// How many times `audit_bytes` was called.
    pub reads: AtomicU64,
}

struct MapNodes<'a>(&'a BTreeMap<(u32, u64), Hash>);

impl NodeSource for MapNodes<'_> {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        self.0
            .get(&(level, index))
            .copied()
            .ok_or(MerkleError::MissingNode { level, index })
    }
}

impl LogStore {
    /// Appends `bytes` as the next entry, with its leaf and the nodes it completes.
    pub fn append(&mut self, bytes: &[u8]) {
        let seq = self.entries.len() as u64;
        let nodes = merkle::append(seq, merkle::leaf_hash(bytes), &MapNodes(&self.nodes))
            .expect("the log's own nodes are all there");
        for (level, index, hash) in nodes {
            self.nodes.insert((level, index), hash);
        }
        self.entries.push(StoredEntry {
            seq,
            bytes: bytes.to_vec(),
        });
    }

    /// A log of these entries.
    pub fn of<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut store = Self::default();
        for entry in entries {
            store.append(entry);
        }
        store
    }

    /// The root of the first `size` entries, from the stored nodes.
    pub fn root(&self, size: u64) -> Result<Hash, MerkleError> {
        merkle::root(size, &MapNodes(&self.nodes))
    }
}

impl LogRead for LogStore {
    fn audit_len(&self) -> Result<u64, StoreError> {
        Ok(self.claimed_len.unwrap_or(self.entries.len() as u64))
    }
    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .entries
            .iter()
            .filter(|entry| range.contains(&entry.seq) && Some(entry.seq) != self.hidden)
            .cloned()
            .collect())
    }
    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Hash>, StoreError> {
        Ok(self.nodes.get(&(level, index)).copied())
    }
    fn merkle_nodes(&self, level: u32, range: Range<u64>) -> Result<Vec<(u64, Hash)>, StoreError> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        Ok(self
            .nodes
            .range((level, range.start)..(level, range.end))
            .map(|(&(_, index), &hash)| (index, hash))
            .collect())
    }
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(None)
    }
}

/// Empty state: the log is all this store has, and signing a checkpoint over it only needs the
/// state traits to exist.
impl StateRead for LogStore {
    fn holder(&self, _: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
        Ok(None)
    }
    fn platform(&self, _: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
        Ok(None)
    }
    fn consent(&self, _: &ConsentId) -> Result<Option<Consent>, StoreError> {
        Ok(None)
    }
    fn consents_of_subject(&self, _: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        Ok(Vec::new())
    }
    fn usage(&self, _: &ConsentId, _: Date) -> Result<Usage, StoreError> {
        Ok(Usage::default())
    }
    fn attestation_used(&self, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        Ok(Vec::new())
    }
    fn subject_key(&self, _: &SubjectId) -> Result<Option<consent_broker::SubjectKey>, StoreError> {
        Ok(None)
    }
    fn consents_ended_before(
        &self,
        _: time::OffsetDateTime,
        _: u32,
    ) -> Result<Vec<Consent>, StoreError> {
        Ok(Vec::new())
    }
}

impl Store for LogStore {
    fn commit(&self, _: Commit) -> Result<CommitReceipt, StoreError> {
        Err(StoreError::Unavailable("a read-only log".into()))
    }
    fn record_checkpoint(&self, _: &SignedCheckpoint) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("a read-only log".into()))
    }
}

/// What [`verify_log`] must report first for a log tampered as [`audit_log_verify`] does.
fn first_failure(
    size: u64,
    nodes: bool,
    hidden: Option<u64>,
    altered: Option<u64>,
    checkpoint_size: Option<u64>,
) -> Option<LogError> {
    // Entries are checked in order; at one position the sequence number is checked before the
    // leaf. After every entry comes the truncation check.
    let mut failures = Vec::new();
    if let Some(index) = hidden {
        failures.push((index, 0, LogError::MissingEntry { index }));
    }
    if size > 0 && !nodes {
        failures.push((0, 1, LogError::ForgedEntry { index: 0 }));
    }
    if let (Some(index), true) = (altered, nodes) {
        failures.push((index, 1, LogError::AlteredEntry { index }));
    }
    failures.sort_by_key(|(index, order, _)| (*index, *order));
    if let Some((_, _, failure)) = failures.into_iter().next() {
        return Some(failure);
    }
    match checkpoint_size {
        Some(checkpoint_size) if checkpoint_size > size => Some(LogError::Truncated {
            log_size: size,
            checkpoint_size,
        }),
        _ => None,
    }
}

/// An audit log from arbitrary bytes: `[mode][entry 0]\n[entry 1]\n…`. Every entry is parsed as
/// an `AuditEntry`; the log, with a correct Merkle tree when `mode & 1`, is then tampered with
/// (`mode & 2`: entry `k` goes missing; `mode & 4`: the leaf of entry `k` is altered, where
/// `k = (mode >> 4) % len`) and verified, against a checkpoint of size `mode >> 4` signed by the
/// broker's key when `mode & 8`. An untampered log verifies with the right root; a tampered one
/// is refused naming the first bad entry.
pub fn audit_log_verify(data: &[u8]) {
    let fx = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let entries: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    for bytes in &entries {
        if let Ok(entry) = AuditEntry::from_bytes(bytes) {
            let again = entry.to_bytes().expect("an entry serializes");
            assert_eq!(AuditEntry::from_bytes(&again).ok().as_ref(), Some(&entry));
        }
    }

    let mut store = LogStore::of(entries.iter().copied());
    let size = store.entries.len() as u64;
    let k = u64::from(mode >> 4);
    let pick = k % size;
    let nodes = mode & 1 != 0;
    let hidden = (mode & 2 != 0).then_some(pick);
    let altered = (mode & 4 != 0).then_some(pick);
    let checkpoint_size = (mode & 8 != 0).then_some(k);

    let root = store.root(size).expect("a complete tree");
    let note = checkpoint_size.map(|checkpoint_size| {
        let checkpoint = Checkpoint {
            origin: fx.note_signer.name().to_owned(),
            size: checkpoint_size,
            root: store.root(checkpoint_size).unwrap_or(merkle::EMPTY_ROOT),
            extensions: Vec::new(),
        };
        checkpoint::sign_checkpoint(&checkpoint, &fx.note_signer).expect("a checkpoint signs")
    });
    if !nodes {
        store.nodes.clear();
    }
    store.hidden = hidden;
    if let (Some(index), true) = (altered, nodes) {
        let leaf = store
            .nodes
            .get_mut(&(0, index))
            .expect("every leaf is stored");
        leaf[0] ^= 1;
    }

    let result = verify_log(
        &store,
        note.as_deref().map(|note| (note, &fx.note_verifier)),
    );
    match first_failure(size, nodes, hidden, altered, checkpoint_size) {
        Some(failure) => assert_eq!(result, Err(failure)),
        None => {
            let report = result.expect("an untampered log verifies");
            assert_eq!(report.size, size);
            assert_eq!(report.root, root);
            assert_eq!(report.checkpoint.map(|c| c.size), checkpoint_size);
        }
    }

    let parsed = store.audit_entries(0..size);
    if hidden.is_none()
        && let Ok(parsed) = &parsed
    {
        assert_eq!(parsed.len() as u64, size);
    }
    let _ = subject_history(&store, &id("alice"));
    let _ = consent_history(&store, &id("cns_1"));
    let _ = checkpoint_log(&store, fx.note_signer.name(), &fx.note_signer);
}

// ---------------------------------------------------------------------------------------------
// Keys and ids

/// Every key, id and vocabulary parser, on arbitrary bytes.
pub fn keys_ids(data: &[u8]) {
    let text = String::from_utf8_lossy(data);

    if let Ok(key) = SigningKey::from_pkcs8_der(data) {
        assert_eq!(key.kid(), key.public_key().thumbprint());
    }
    let _ = NoteSigner::new("fuzz", data);

    if let Ok(jwks) = Jwks::from_json(&text) {
        let keys = jwks.public_keys().expect("a parsed JWKS has valid keys");
        assert_eq!(keys.len(), jwks.keys.len());
        assert_eq!(Jwks::from_json(&jwks.to_json()).as_ref(), Ok(&jwks));
    }
    if let Some(jwk) = json_round_trip::<Jwk>(data)
        && let Ok(key) = jwk.public_key()
    {
        assert_eq!(Jwk::from_public_key(&key), jwk);
    }
    if let Ok(key) = Ed25519PublicKey::from_base64url(&text) {
        assert_eq!(key.to_base64url(), text, "one encoding per key");
    }
    let _ = json_round_trip::<Ed25519PublicKey>(data);

    fn id_parses<T>(text: &str, data: &[u8])
    where
        T: std::str::FromStr + std::fmt::Display + serde::de::DeserializeOwned,
        T: serde::Serialize + PartialEq + std::fmt::Debug,
    {
        if let Ok(id) = text.parse::<T>() {
            let shown = id.to_string();
            assert_eq!(shown, text);
            assert!(!shown.is_empty() && shown.len() <= MAX_ID_LEN);
            assert!(
                shown
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~:@".contains(&b))
            );
        }
        let _ = json_round_trip::<T>(data);
    }
    id_parses::<SubjectId>(&text, data);
    id_parses::<PlatformId>(&text, data);
    id_parses::<HolderId>(&text, data);
    id_parses::<AccountId>(&text, data);
    id_parses::<ConsentId>(&text, data);
    id_parses::<BrokerId>(&text, data);

    fn word_parses<T>(text: &str, data: &[u8])
    where
        T: std::str::FromStr + std::fmt::Display + serde::de::DeserializeOwned,
        T: serde::Serialize + PartialEq + std::fmt::Debug,
    {
        if let Ok(word) = text.parse::<T>() {
            assert_eq!(word.to_string(), text);
        }
        let _ = json_round_trip::<T>(data);
    }
    word_parses::<Scope>(&text, data);
    word_parses::<Purpose>(&text, data);
    word_parses::<ProhibitedUse>(&text, data);
    let _ = text.parse::<RequestedScope>();
    let _ = text.parse::<RequestedPurpose>();
    let _ = json_round_trip::<RequestedScope>(data);
    let _ = json_round_trip::<RequestedPurpose>(data);
    let _ = json_round_trip::<ScopeSet>(data);
    let _ = json_round_trip::<PurposeSet>(data);
    let _ = json_round_trip::<AccountSet>(data);
}

// ---------------------------------------------------------------------------------------------
// The bank's inputs from the platform: DPoP proofs and revocation feeds

/// A DPoP proof for [`PROOF_REQUEST`] and [`PROOF_TOKEN`], bound to the fixture's key.
pub fn dpop_proof(data: &[u8]) {
    use consent_broker::dpop::{self, DEFAULT_PROOF_WINDOW, MAX_PROOF_LEN};
    let fx = fixture();
    let proof = String::from_utf8_lossy(data);
    let checked = dpop::check_proof(
        &proof,
        &PROOF_REQUEST,
        PROOF_TOKEN,
        fx.dpop.thumbprint(),
        DEFAULT_PROOF_WINDOW,
        NOW,
    );
    if let Ok(checked) = checked {
        assert!(proof.len() <= MAX_PROOF_LEN);
        assert!((16..=128).contains(&checked.jti.len()));
        let now = NOW.unix_timestamp();
        assert!(checked.iat <= now + MAX_LEEWAY.whole_seconds());
        assert!(checked.iat >= now - DEFAULT_PROOF_WINDOW.whole_seconds());
    }
    // The URL comparison never panics, and is idempotent.
    if let Some(normal) = dpop::normalise_htu(&proof) {
        assert_eq!(
            dpop::normalise_htu(&normal).as_deref(),
            Some(normal.as_str())
        );
    }
}

/// A revocation feed for the bank, checked against the broker's token key.
pub fn revocation_feed(data: &[u8]) {
    let fx = fixture();
    let feed = String::from_utf8_lossy(data);
    let checked = consent_broker::feed::check_feed(
        &feed,
        |kid| (kid == fx.token_kid).then_some(fx.token_key),
        fx.broker.id(),
        &fx.bank,
        NOW,
    );
    if let Ok(contents) = checked {
        assert_eq!(&contents.iss, fx.broker.id());
        assert_eq!(contents.aud, fx.bank);
        assert!(contents.position >= contents.after);
        assert!(contents.iat <= NOW.unix_timestamp() + 30);
    }
}

/// What the platform relays to the subject's device: a `SealedResponse` as JSON (input starting
/// with `{`), or raw bytes put in place of the fixture's ciphertext (first byte even) or of its
/// encapsulated key and ciphertext (odd), opened with the device's key. Whatever opens is data
/// of the context's scope and account; anything but the fixture's own bytes does not open.
pub fn sealed_response(data: &[u8]) {
    let fx = fixture();
    if data.first() == Some(&b'{') {
        let text = String::from_utf8_lossy(data);
        if let Ok(sealed) = serde_json::from_str::<SealedResponse>(&text) {
            if let Ok(opened) = open_response(&sealed, &fx.device) {
                assert!(opened.is_for(sealed.context.scope, &sealed.context.account));
            }
            let again = serde_json::to_string(&sealed).expect("a sealed response serializes");
            let back: SealedResponse = serde_json::from_str(&again).expect("and parses back");
            assert_eq!(back, sealed);
        }
        return;
    }
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut sealed = fx.sealed.clone();
    let envelope = &mut sealed.envelopes[0];
    let original = envelope.clone();
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 && rest.len() >= 32 => {
            let (enc, ciphertext) = rest.split_at(32);
            envelope.enc = b64(enc);
            envelope.ciphertext = b64(ciphertext);
            let enc: [u8; 32] = enc.try_into().expect("32 bytes");
            let opened = consent_broker::hpke::open(&fx.device, &enc, b"info", b"aad", ciphertext);
            assert!(opened.is_err(), "arbitrary bytes opened under HPKE");
        }
        _ => envelope.ciphertext = b64(data.get(1..).unwrap_or_default()),
    }
    let changed = *envelope != original;
    let opened = open_response(&sealed, &fx.device);
    assert_eq!(opened.is_ok(), !changed, "{opened:?}");
}

/// A published directory of three files: the checkpoint, the first level-0 tile, the first
/// entry bundle (whatever their width).
pub struct TileFiles(pub Vec<Vec<u8>>);

impl consent_broker::tiles::TileSource for TileFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, consent_broker::tiles::TileError> {
        let index = if path == "checkpoint" {
            0
        } else if path.starts_with("tile/0/000") {
            1
        } else if path.starts_with("tile/entries/000") {
            2
        } else {
            return Ok(None);
        };
        Ok(self.0.get(index).cloned())
    }
}

/// Files framed as in [`tiles`]: each a 4-byte big-endian length and its bytes.
pub fn framed_files(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let Some((file, rest)) = rest.split_at_checked(len.min(rest.len())) else {
            break;
        };
        files.push(file.to_vec());
        data = rest;
    }
    files
}

/// Frames files for [`tiles`].
pub fn frame_files(files: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for file in files {
        out.extend_from_slice(&u32::try_from(file.len()).expect("small").to_be_bytes());
        out.extend_from_slice(file);
    }
    out
}

/// Tiles as a reader gets them from a server: the input is a tile path up to the first `0xff`
/// byte, then a directory of a checkpoint, one level-0 tile and one entry bundle, each framed
/// with its length ([`framed_files`]). The path is parsed, the directory verified. Nothing but
/// the fixture's own published log verifies.
pub fn tiles(data: &[u8]) {
    use consent_broker::tiles::{Tile, TiledLog, verify_tiles};
    let (path, rest) = match data.iter().position(|b| *b == 0xff) {
        Some(at) => data.split_at(at),
        None => (data, &[][..]),
    };
    let path = String::from_utf8_lossy(path);
    if let Ok(tile) = Tile::parse(&path) {
        assert_eq!(tile.path(), path);
    }
    let files = TileFiles(framed_files(rest.get(1..).unwrap_or_default()));
    let fx = fixture();
    let mut log = TiledLog::new();
    if let Ok(entries) = log.update(&files, &fx.note_verifier, None) {
        assert_eq!(u64::try_from(entries.len()).ok(), Some(log.size()));
    }
    let _ = verify_tiles(&files, &fx.note_verifier, None);
}

/// A checkpoint with cosignatures, a witness vkey and an add-checkpoint body, as a witness or a
/// verifier gets them.
pub fn cosignatures(data: &[u8]) {
    use consent_broker::cosignature::{CosignatureVerifier, WitnessPolicy, verify_witnessed};
    let text = String::from_utf8_lossy(data);
    let fx = fixture();
    let witness = CosignatureVerifier::from_public_key(
        WITNESS_NAME,
        SigningKey::from_pkcs8_der(&pkcs8(WITNESS_KEY_SEED))
            .expect("witness key")
            .public_key()
            .as_bytes(),
    )
    .expect("witness");
    for quorum in [0, 1] {
        let policy = WitnessPolicy {
            witnesses: vec![witness.clone()],
            quorum,
        };
        if let Ok(witnessed) = verify_witnessed(&text, &fx.note_verifier, None, &policy) {
            assert!(witnessed.cosigned_by.len() >= quorum);
        }
    }
    if let Ok(verifier) = CosignatureVerifier::from_vkey(&text) {
        assert_eq!(
            CosignatureVerifier::from_vkey(&verifier.to_vkey()).ok(),
            Some(verifier)
        );
    }
    if let Ok(request) = consent_broker::witness::AddCheckpoint::parse(&text) {
        assert_eq!(
            consent_broker::witness::AddCheckpoint::parse(&request.to_body()).ok(),
            Some(request)
        );
    }
}

/// The witness of the [`cosignatures`] target.
pub const WITNESS_NAME: &str = "witness.example";
/// Seed of that witness's key.
pub const WITNESS_KEY_SEED: u8 = 8;

/// The body of a fuzz target.
pub type Body = fn(&[u8]);

/// Every target: its name (the name of its `fuzz_targets/` file and `corpus/` directory) and
/// its body.
/// The subject key of the `sealed_field` target (fixed bytes) and the subject it is for.
pub const FIELD_KEY: [u8; 32] = [7; 32];
/// The subject of the `sealed_field` target.
pub const FIELD_SUBJECT: &str = "alice";

/// What a log's reader does with a subject's key: open a sealed field of an entry (input as a
/// sealed field, or as a whole audit entry), make pseudonyms of arbitrary ids, and scrub parser
/// messages. Nothing panics; only the fixture's own sealing opens; pseudonyms have their form;
/// scrubbing is idempotent and leaves nothing quoted.
pub fn sealed_field(data: &[u8]) {
    use consent_broker::privacy::{SealedField, unquoted};
    let key = SubjectKey::from_bytes(&FIELD_KEY);
    let subject: SubjectId = FIELD_SUBJECT.parse().expect("a valid id");
    let pseudonym = key.subject(&subject);
    let text = String::from_utf8_lossy(data);
    match data.first() {
        Some(b'{') => {
            if let Ok(entry) = AuditEntry::from_bytes(data)
                && let AuditEvent::ConsentApproved {
                    subject: about,
                    sealed_attestation: Some(sealed),
                    ..
                } = &entry.event
            {
                let _ = key.open("attestation", about, sealed);
            }
        }
        Some(b'"') => {
            // Only a sealing under this key, field and subject opens, and never to more bytes
            // than it carried.
            if let Ok(sealed) = serde_json::from_str::<SealedField>(&text)
                && let Ok(opened) = key.open("attestation", &pseudonym, &sealed)
            {
                assert!(opened.len() <= data.len());
            }
        }
        _ => {
            if let Ok(id) = text.parse::<SubjectId>() {
                for made in [key.subject(&id), key.device(id.as_str())] {
                    assert!(made.as_str().starts_with("ps_"));
                    assert_eq!(made.as_str().len(), 25);
                }
            }
            let once = unquoted(&text);
            assert_eq!(unquoted(&once), once);
            for quote in ['"', '`'] {
                let mut inside = false;
                for c in once.chars() {
                    if c == quote {
                        inside = !inside;
                    } else if inside {
                        assert_eq!(c, '…', "something quoted survived in {once:?}");
                    }
                }
            }
        }
    }
}

pub const TARGETS: [(&str, Body); 14] = [
    ("token_verify", token_verify),
    ("attestation_verify", attestation_verify),
    ("consent_request_json", consent_request_json),
    ("access_request_json", access_request_json),
    ("checkpoint_note", checkpoint_note),
    ("proof_decode", proof_decode),
    ("audit_log_verify", audit_log_verify),
    ("keys_ids", keys_ids),
    ("dpop_proof", dpop_proof),
    ("revocation_feed", revocation_feed),
    ("sealed_response", sealed_response),
    ("tiles", tiles),
    ("cosignatures", cosignatures),
    ("sealed_field", sealed_field),
];

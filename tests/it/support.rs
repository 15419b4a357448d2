//! Shared support for the integration tests: the crate's own test kit
//! ([`consent_broker::testing`]), and a [`Fixture`] over it with the helpers these tests use
//! everywhere (requests as `ConsentRequest`s, statements, attestations, the log).
#![allow(
    dead_code,
    reason = "each test module uses a different part of the support"
)]

use std::ops::Deref;

#[allow(
    unused_imports,
    reason = "each test binary uses its own part of the kit"
)]
pub use consent_broker::testing::{
    FailingRandom, Fault, FaultRates, FaultStore, Injected, LogAssertions, START, SeededRandom,
    SimulatedBank, TestBroker,
};
use consent_broker::*;

/// Unpadded base64url, as JOSE encodes.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs a JWS with the test kit's broker token key (seeded: the platform holds it).
pub fn sign_as_broker(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let keys = BrokerKeys::ephemeral(&SeededRandom::new(1)).unwrap();
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let pair =
        ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(keys.token().to_pkcs8_der())
            .unwrap();
    format!("{input}.{}", b64(pair.sign(input.as_bytes())))
}

/// A log a dishonest platform describes: the real log's tree below `real_len` entries, and a
/// made-up entry hash at every position past it (a platform can sign a root and a consistency
/// proof for any length it likes). Each node past the real log is computed from the leaves:
/// keep the length to thousands.
pub struct ForgedLog<N> {
    pub real: N,
    pub real_len: u64,
}

impl<N: merkle::NodeSource> merkle::NodeSource for ForgedLog<N> {
    fn node(&self, level: u32, index: u64) -> Result<merkle::Hash, merkle::MerkleError> {
        if (index + 1) << level <= self.real_len {
            return self.real.node(level, index);
        }
        if level == 0 {
            let mut made_up = level.to_be_bytes().to_vec();
            made_up.extend_from_slice(&index.to_be_bytes());
            return Ok(merkle::leaf_hash(&made_up));
        }
        let left = self.node(level - 1, 2 * index)?;
        let right = self.node(level - 1, 2 * index + 1)?;
        Ok(merkle::node_hash(&left, &right))
    }
}

/// The root of the tree `nodes` hold at `position` and the consistency proof from `after` to
/// it, as a revocation feed names them (standard base64).
pub fn feed_tree(
    nodes: &impl merkle::NodeSource,
    after: u64,
    position: u64,
) -> (String, Vec<String>) {
    let root = match position {
        0 => merkle::EMPTY_ROOT,
        _ => merkle::root(position, nodes).unwrap(),
    };
    let proof = match after {
        0 => Vec::new(),
        _ if after == position => Vec::new(),
        _ => merkle::consistency_proof(after, position, nodes).unwrap(),
    };
    (encode_hashes(&[root]).concat(), encode_hashes(&proof))
}

/// A revocation feed the platform signs with the broker's token key, complete and dated
/// `iat`, covering the log `nodes` hold from `after` to `position` (with its root there and
/// the proof that it extends the tree at `after`) and carrying the stops of `revoked`
/// (consent, log position): what a dishonest platform hands the test kit's bank.
pub fn feed_as_broker(
    nodes: &impl merkle::NodeSource,
    after: u64,
    position: u64,
    iat: i64,
    revoked: &[(&ConsentId, u64)],
) -> String {
    let keys = BrokerKeys::ephemeral(&SeededRandom::new(1)).unwrap();
    let header = serde_json::json!({
        "alg": "EdDSA", "typ": "revocation-feed+jwt", "kid": keys.token().kid(),
    });
    let revoked: Vec<serde_json::Value> = revoked
        .iter()
        .map(|(consent, seq)| {
            serde_json::json!({ "consent": consent, "seq": seq, "at": iat, "by": "subject" })
        })
        .collect();
    let (root, consistency) = feed_tree(nodes, after, position);
    let contents = serde_json::json!({
        "iss": "broker", "aud": "bank", "iat": iat, "after": after,
        "position": position, "revoked": revoked, "root": root, "consistency": consistency,
    });
    sign_as_broker(&header, &contents)
}

/// Decodes unpadded base64url that the test knows is valid.
pub fn unb64(segment: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap()
}

/// The scopes whose bits are set in `mask` (bit `i` is `Scope::ALL[i]`).
pub fn scopes_of(mask: u8) -> ScopeSet {
    Scope::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, s)| *s)
        .collect()
}

/// The purposes whose bits are set in `mask` (bit `i` is `Purpose::ALL[i]`).
pub fn purposes_of(mask: u8) -> PurposeSet {
    Purpose::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, p)| *p)
        .collect()
}

/// Parses an id (or anything else) that the test knows is valid.
pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

/// A [`TestBroker`] (reachable through `Deref`: `broker`, `clock`, `platform`, `current`,
/// `savings`), with the bank's and the subject's ids at hand and a system random source.
pub struct Fixture<S: Store = MemoryStore> {
    /// The kit's broker, bank and clock.
    pub kit: TestBroker<S>,
    /// The bank's id.
    pub bank: HolderId,
    /// The subject.
    pub alice: SubjectId,
    /// A system random source for the tests' own keys and attestations.
    pub rng: SystemRandom,
    /// The store, for a fixture made with [`Fixture::sharing`] (the broker lends its own out
    /// read-only; a bank-side verifier needs a handle of its own, as in an embedding).
    shared: Option<S>,
}

impl<S: Store> Deref for Fixture<S> {
    type Target = TestBroker<S>;
    fn deref(&self) -> &TestBroker<S> {
        &self.kit
    }
}

impl Fixture<MemoryStore> {
    pub fn new() -> Self {
        Self::with_store(MemoryStore::new())
    }
}

impl<S: Store + Clone> Fixture<S> {
    /// As [`Fixture::with_builder`], keeping a handle on the store ([`Fixture::shared_store`]).
    pub fn sharing(
        store: S,
        configure: impl FnOnce(BrokerBuilder<S, BrokerKeys>) -> BrokerBuilder<S, BrokerKeys>,
    ) -> Self {
        let mut fixture = Self::with_builder(store.clone(), configure);
        fixture.shared = Some(store);
        fixture
    }

    /// As [`Fixture::with_policy`], keeping a handle on the store.
    pub fn sharing_with_policy(store: S, policy: HolderPolicy) -> Self {
        let mut fixture = Self::with_policy(store.clone(), policy);
        fixture.shared = Some(store);
        fixture
    }
}

impl<S: Store> Fixture<S> {
    fn from_kit(kit: TestBroker<S>) -> Self {
        Self {
            bank: kit.bank.id().clone(),
            alice: kit.subject.clone(),
            kit,
            rng: SystemRandom::new(),
            shared: None,
        }
    }

    /// The bank (default policy) and the platform (all purposes) registered on `store`.
    pub fn with_store(store: S) -> Self {
        Self::from_kit(TestBroker::on(store))
    }

    pub fn with_policy(store: S, policy: HolderPolicy) -> Self {
        Self::from_kit(TestBroker::with_policy(store, policy))
    }

    /// The fixture with a broker configured further by `configure` (keys, clock, lifetimes).
    pub fn with_builder(
        store: S,
        configure: impl FnOnce(BrokerBuilder<S, BrokerKeys>) -> BrokerBuilder<S, BrokerKeys>,
    ) -> Self {
        Self::from_kit(TestBroker::configured(
            store,
            HolderPolicy::default(),
            configure,
        ))
    }

    /// The store handle kept by [`Fixture::sharing`].
    pub fn shared_store(&self) -> S
    where
        S: Clone,
    {
        self.shared
            .clone()
            .expect("a fixture made with Fixture::sharing")
    }

    /// The bank's attestation signer.
    pub fn bank_signer(&self) -> &AttestationSigner {
        self.kit.bank.signer()
    }

    /// The statement approving everything requested (listed accounts), for the request's full
    /// duration from now.
    pub fn full_statement(&self, request: &ConsentRequest) -> ApprovalStatement {
        self.kit.bank.full_statement(request, self.broker.now())
    }

    /// The bank's attestation of `statement`, signed now.
    pub fn attest(&self, statement: &ApprovalStatement) -> String {
        self.kit.bank.attest(&self.broker, statement).unwrap()
    }

    /// Requests and approves everything: a live grant.
    pub fn granted(&self) -> ConsentRequest {
        let request = self.request();
        self.kit.bank.approve_all(&self.broker, &request).unwrap();
        request
    }

    /// The bank changes its policy: a signed instruction the broker applies.
    pub fn set_policy(&self, policy: HolderPolicy) -> Result<(), Error> {
        self.kit
            .bank
            .instruct(&self.broker, &Instruction::SetPolicy { policy })
            .map(drop)
    }

    /// Revokes as `by` would: the bank by its signed instruction, the subject (in the chat) and
    /// the platform through the platform's broker.
    pub fn revoke(
        &self,
        consent: &ConsentId,
        by: Revoker,
        reason: RevocationReason,
    ) -> Result<Consent, Error> {
        if by == Revoker::Holder {
            let revoke = Instruction::Revoke {
                consent: consent.clone(),
                by,
                reason,
            };
            self.kit.bank.instruct(&self.broker, &revoke)?;
            return Ok(self.broker.consent(consent)?.consent);
        }
        self.broker.revoke(consent, by, reason)
    }

    pub fn audit(&self) -> Vec<AuditEntry> {
        self.broker.audit_log().unwrap()
    }

    /// The subject's pseudonym in the broker's log (its key must exist).
    pub fn pseudonym(&self, subject: &SubjectId) -> Pseudonym {
        self.broker
            .pseudonym_of(subject)
            .unwrap()
            .expect("the subject has a key")
    }

    /// An account's pseudonym under the subject's key, as the log's types hold it.
    pub fn account_pseudonym(&self, subject: &SubjectId, account: &AccountId) -> Pseudonym {
        self.broker
            .store()
            .subject_key(subject)
            .unwrap()
            .expect("the subject has a key")
            .account(account)
    }

    /// Reasons as the log keeps them: an account a reason names, as its pseudonym.
    pub fn logged_reasons(&self, subject: &SubjectId, reasons: &[DenyReason]) -> Vec<DenyReason> {
        reasons
            .iter()
            .map(|reason| match reason {
                DenyReason::AccountNotGranted { account } => DenyReason::AccountNotGranted {
                    account: self
                        .account_pseudonym(subject, account)
                        .as_str()
                        .parse()
                        .unwrap(),
                },
                other => other.clone(),
            })
            .collect()
    }

    pub fn last_audit(&self) -> AuditEntry {
        self.audit().pop().unwrap()
    }

    pub fn audit_len(&self) -> u64 {
        self.broker.store().audit_len().unwrap()
    }
}

/// The broker keys every fixture uses (from a fixed seed), for brokers a test builds itself.
pub fn keys() -> BrokerKeys {
    BrokerKeys::ephemeral(&SeededRandom::new(1)).unwrap()
}

fn copy(key: &SigningKey) -> SigningKey {
    SigningKey::from_pkcs8_der(key.to_pkcs8_der()).unwrap()
}

/// [`keys`] with this token key.
pub fn keys_with_token(token: SigningKey) -> BrokerKeys {
    BrokerKeys::new(token, copy(keys().checkpoint()))
}

/// [`keys`] with this checkpoint key.
pub fn keys_with_checkpoint(checkpoint: SigningKey) -> BrokerKeys {
    BrokerKeys::new(copy(keys().token()), checkpoint)
}

/// A grant's contents, to compare with what a test expects.
pub fn grant_parts(
    grant: &Grant,
) -> (
    ScopeSet,
    PurposeSet,
    AccountSet,
    time::OffsetDateTime,
    time::OffsetDateTime,
) {
    (
        grant.scopes(),
        grant.purposes(),
        grant.accounts().clone(),
        grant.authorised_at(),
        grant.expires_at(),
    )
}

/// Copies the directory tree `from` into `to` (which exists).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Reasons as the log keeps them for a denial that names no subject: a reason naming an
/// account is left out.
pub fn reasons_without_accounts(reasons: &[DenyReason]) -> Vec<DenyReason> {
    reasons
        .iter()
        .filter(|r| !matches!(r, DenyReason::AccountNotGranted { .. }))
        .cloned()
        .collect()
}

/// Rewrites the stored JSON of `consent` in a SQLite broker database, as a platform that edits
/// its own database would.
pub fn edit_stored_consent(
    db: &std::path::Path,
    consent: &ConsentId,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let connection = rusqlite::Connection::open(db).unwrap();
    let json: String = connection
        .query_row(
            "SELECT record FROM consents WHERE id = ?1",
            [consent.as_str()],
            |row| row.get(0),
        )
        .unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&json).unwrap();
    edit(&mut record);
    connection
        .execute(
            "UPDATE consents SET record = ?1 WHERE id = ?2",
            [record.to_string(), consent.as_str().to_owned()],
        )
        .unwrap();
}

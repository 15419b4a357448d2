//! The story consent-broker exists for, step by step.
//!
//! A messaging platform ("chat") wants to show Alice her balance and fraud alerts from her bank.
//! Alice opts in at the bank, which records her approval in its own ledger and attests it; every
//! access goes through the broker's checked call; the bank serves data only through its gate,
//! which checks each DPoP-bound token against the bank's own records and seals what it serves to
//! Alice's phone, so the platform relays her balance without being able to read it; nothing is
//! permitted for advertising; revocation and expiry are final; and the audit trail shows all of
//! it. At the end the story searches everything the platform stored for Alice's figures. (The
//! platform cheating, and the gate refusing it, is `examples/dishonest_platform.rs`.)
//!
//! Run: `cargo run --example messenger_bank`. The example checks each outcome against the story
//! and exits non-zero if any differs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use consent_broker::checkpoint::NoteVerifier;
use consent_broker::dpop::{DpopSigner, HttpRequest};
use consent_broker::time::Duration;
use consent_broker::time::format_description::well_known::Rfc3339;
use consent_broker::time::macros::datetime;
use consent_broker::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The fraud alert pending on Alice's current account.
const ALERT: &str = "Card used in two countries within an hour";

/// The bank's data, served only through verified access.
struct FirstBank {
    balances: HashMap<AccountId, i64>,
}

impl DataHolder for FirstBank {
    type Error = String;

    fn account_owner(&self, account: &AccountId) -> std::result::Result<Option<SubjectId>, String> {
        // The story's bank has one customer.
        self.balances
            .contains_key(account)
            .then(|| SubjectId::new("alice").map_err(|e| e.to_string()))
            .transpose()
    }

    fn balance(&self, grant: BalanceGrant<'_>) -> std::result::Result<Balance, DataError<String>> {
        let minor_units = *self
            .balances
            .get(grant.account())
            .ok_or_else(|| DataError::Holder("no such account".to_owned()))?;
        Ok(Balance {
            account: grant.account().clone(),
            available: Money {
                minor_units,
                currency: "EUR".into(),
            },
            as_of: datetime!(2026-11-21 08:59 UTC),
        })
    }

    fn pending_alerts(
        &self,
        grant: AlertsGrant<'_>,
    ) -> std::result::Result<Vec<FraudAlert>, DataError<String>> {
        Ok(vec![FraudAlert {
            account: grant.account().clone(),
            reference: "FA-1".into(),
            message: ALERT.into(),
            raised_at: datetime!(2026-11-21 08:30 UTC),
        }])
    }
}

/// The bank's ledger: a store of the bank's own (its approvals, policy, counts and journal).
trait Ledger: Store + LedgerRead {}
impl<T: Store + LedgerRead> Ledger for T {}

const BALANCE_URL: HttpRequest<'static> = HttpRequest {
    method: "GET",
    url: "https://first-bank.example/v1/balance",
};

struct Story {
    broker: Broker<Arc<dyn Store>>,
    /// The bank, on its own ledger: it decides every access from its own records.
    bank: Bank<Arc<dyn Ledger>>,
    bank_data: FirstBank,
    clock: Arc<ManualClock>,
    /// The platform's DPoP key: its tokens are bound to it.
    dpop: DpopSigner,
    /// Alice's phone's key (on her phone; the platform never holds it).
    phone: hpke::DeviceSecretKey,
    /// Alice as her bank knows her (the platform never sees this id).
    customer: SubjectId,
    /// The platform's log of the responses it relayed to Alice's phone.
    relay_log: Vec<u8>,
    rng: SystemRandom,
    step: u32,
}

impl Story {
    fn step(&mut self, title: &str) {
        self.step += 1;
        println!("\n{}. {title}", self.step);
    }

    /// The bank brings its view of the platform's revocations up to date (the broker's signed
    /// feed, from where the bank's ledger left off).
    fn sync_feed(&self) -> Result<()> {
        let position = self
            .bank
            .ledger()
            .feed_state()?
            .map_or(0, |feed| feed.position);
        let feed = self.broker.revocation_feed(self.bank.id(), position)?;
        self.bank.apply_revocation_feed(&feed)?;
        Ok(())
    }

    /// The bank authenticates Alice, shows her the request, records what she approved in its
    /// ledger and signs it.
    fn bank_attests(
        &self,
        request: &ConsentRequest,
        scopes: &[Scope],
        accounts: &[&AccountId],
        lasting: Duration,
    ) -> Result<String> {
        let statement = ApprovalStatement {
            consent: request.id().clone(),
            // The bank approves for the customer it authenticated; the attestation names her by
            // the identifier the bank gave the chat.
            subject: self.customer.clone(),
            platform: request.platform().clone(),
            scopes: scopes.iter().copied().collect(),
            purposes: request.purposes(),
            accounts: accounts.iter().map(|a| (*a).clone()).collect(),
            consent_expires_at: self.broker.now() + lasting,
            unattended_daily_limit: DEFAULT_UNATTENDED_DAILY_LIMIT,
            devices: vec![self.phone.public_key().thumbprint()],
            plaintext: PlaintextUses::new(),
        };
        Ok(self.bank.attest(&statement)?)
    }

    /// The platform presents `token` with a fresh proof of its key; the bank's gate decides.
    fn present(&self, token: &str) -> std::result::Result<Served<String>, GateError<String>> {
        let proof = self
            .dpop
            .proof(&BALANCE_URL, token, self.broker.now(), &self.rng)
            .map_err(|e| GateError::AccountSystem(e.to_string()))?;
        let request = GateRequest {
            token,
            proof: &proof,
            http: BALANCE_URL,
        };
        self.bank.serve(&request, &self.bank_data)
    }

    /// The platform gets a token; the bank's gate checks it against the bank's own records and
    /// serves the data, sealed to Alice's phone; the platform relays it (and logs what it
    /// relayed); her phone opens it.
    fn fetch_with_token(&mut self, request: &AccessRequest) -> Result<String> {
        let TokenOutcome::Issued(token) = self.broker.authorise_with_token(request)? else {
            return Err("expected a permit and a token".into());
        };
        println!(
            "   token {} issued, expires {}",
            token.token_id,
            token.expires_at.format(&Rfc3339)?
        );
        self.sync_feed()?;
        let Response::Sealed(sealed) = self.present(&token.token)?? else {
            return Err("the bank served it unsealed".into());
        };
        let relayed = serde_json::to_string(&sealed)?;
        self.relay_log.extend_from_slice(relayed.as_bytes());
        self.relay_log.push(b'\n');
        println!(
            "   the bank's gate checked it against the bank's own ledger and sealed the answer to \
             Alice's phone (journal entry {}); the platform relays {} bytes it cannot read",
            sealed.context.sequence,
            relayed.len()
        );
        let opened = open_response(&serde_json::from_str(&relayed)?, &self.phone)?;
        println!(
            "   Alice's phone opens it: {}",
            serde_json::to_string(&opened)?
        );
        Ok(token.token)
    }

    fn access(&self, request: &AccessRequest, expect: &Decision) -> Result<()> {
        let outcome = self.broker.authorise_access(request)?;
        let decision = outcome.decision();
        println!(
            "   {} {} for {} ({:?}) -> {}",
            request.account,
            request.scope,
            request.purpose,
            request.presence,
            describe(&decision)
        );
        if &decision != expect {
            return Err(format!("expected {expect:?}, got {decision:?}").into());
        }
        Ok(())
    }
}

fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Permit => "PERMIT".to_owned(),
        Decision::Deny { reasons } => {
            let reasons: Vec<String> = reasons
                .iter()
                .map(|r| serde_json::to_string(r).unwrap_or_else(|_| format!("{r:?}")))
                .collect();
            format!("DENY {}", reasons.join(" "))
        }
    }
}

fn deny(reasons: Vec<DenyReason>) -> Decision {
    Decision::Deny { reasons }
}

/// Where the story keeps its data: `--db PATH` or `CONSENT_BROKER_DB`, `--memory` for none.
pub enum Storage {
    /// A SQLite file (the bank's ledger beside it, `<db>.bank.sqlite`).
    Sqlite(PathBuf),
    /// `--postgres URL` or `CONSENT_BROKER_POSTGRES` (needs `--features postgres`).
    #[cfg(feature = "postgres")]
    Postgres(String),
    /// Nothing kept.
    Memory,
}

fn storage() -> Result<Storage> {
    let mut args = std::env::args().skip(1);
    let mut storage = match std::env::var_os("CONSENT_BROKER_DB") {
        Some(path) => Storage::Sqlite(path.into()),
        None => Storage::Sqlite(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join("messenger_bank.sqlite"),
        ),
    };
    #[cfg(feature = "postgres")]
    if let Ok(url) = std::env::var("CONSENT_BROKER_POSTGRES") {
        storage = Storage::Postgres(url);
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--db" => storage = Storage::Sqlite(args.next().ok_or("--db needs a path")?.into()),
            "--memory" => storage = Storage::Memory,
            #[cfg(feature = "postgres")]
            "--postgres" => {
                storage = Storage::Postgres(args.next().ok_or("--postgres needs a URL")?);
            }
            other => {
                return Err(
                    format!("unknown argument {other:?} (use --db PATH or --memory)").into(),
                );
            }
        }
    }
    Ok(storage)
}

/// Where the story keeps its keys: a directory beside the database (`<db>.keys/`), holding the
/// broker's token and checkpoint keys and the example bank's attestation key, each created with
/// mode 0600 on the first run and reused on every later one, so the verifier key printed at the
/// end keeps verifying the log across runs. In memory, nothing is kept.
fn key_directory(storage: &Storage) -> Result<Option<PathBuf>> {
    let directory = match storage {
        Storage::Sqlite(db) => db.with_extension("keys"),
        #[cfg(feature = "postgres")]
        Storage::Postgres(_) => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("messenger_bank-postgres.keys"),
        Storage::Memory => return Ok(None),
    };
    std::fs::create_dir_all(&directory)?;
    Ok(Some(directory))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    tell(&storage()?)
}

/// The story, on `storage`. (`tests/it/platform_blind.rs` runs it too, then searches what the
/// platform stored.)
pub fn tell(storage: &Storage) -> Result<()> {
    let store: Arc<dyn Store> = match storage {
        Storage::Sqlite(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            println!("Data: SQLite database {}", path.display());
            Arc::new(SqliteStore::open(path)?)
        }
        #[cfg(feature = "postgres")]
        Storage::Postgres(url) => {
            println!("Data: PostgreSQL database {url}");
            Arc::new(PostgresStore::open(url)?)
        }
        Storage::Memory => {
            println!("Data: in memory (nothing is kept after this run)");
            Arc::new(MemoryStore::new())
        }
    };
    let earlier = store.audit_len()?;
    let last_time = match earlier.checked_sub(1) {
        Some(last) => store.audit_entries(last..earlier)?.first().map(|e| e.at),
        None => None,
    };
    if let Some(last) = last_time {
        println!(
            "      {earlier} audit entries from earlier runs are kept; this run appends to them."
        );
        // Earlier runs moved the story's clock ahead (the expiry step); start after them so the
        // log stays in time order.
        let _ = last;
    }
    let now = SystemClock.now();
    let start = last_time.map_or(now, |last| now.max(last + Duration::minutes(1)));
    let clock = Arc::new(ManualClock::new(start));
    let broker_id = BrokerId::new("consent-broker.chat.example")?;
    let rng = SystemRandom::new();
    let keys = key_directory(storage)?;
    let broker_keys = match &keys {
        Some(directory) => BrokerKeys::load_or_create(directory, &rng)?,
        None => BrokerKeys::ephemeral(&rng)?,
    };
    let dpop = DpopSigner::new(match &keys {
        Some(directory) => {
            KeyFile::new(directory.join("platform-dpop-key.der"))
                .load_or_create(&rng)?
                .0
        }
        None => SigningKey::generate(&rng)?,
    })?;
    let chat = PlatformId::new("chat")?;
    let broker = Broker::builder(broker_id.clone(), store.clone())
        .clock(clock.clone())
        .keys(broker_keys)
        .sender_key(chat.clone(), &dpop.public_key())
        .build()?;
    let bank = HolderId::new("first-bank")?;
    let alice = SubjectId::new("alice")?;
    let current = AccountId::new("acc-current")?;
    let savings = AccountId::new("acc-savings")?;
    // The bank: its own ledger (a SQLite file of its own beside the platform's, or memory), its
    // own keys, kept like the broker's.
    let (bank_keys, ledger): (BankKeys, Arc<dyn Ledger>) = match (&keys, storage) {
        (Some(directory), Storage::Sqlite(path)) => (
            BankKeys::new(
                KeyFile::new(directory.join("bank-key.der"))
                    .load_or_create(&rng)?
                    .0,
                KeyFile::new(directory.join("bank-journal-key.der"))
                    .load_or_create(&rng)?
                    .0,
            ),
            Arc::new(SqliteStore::open(path.with_extension("bank.sqlite"))?),
        ),
        _ => (BankKeys::ephemeral(&rng)?, Arc::new(MemoryStore::new())),
    };
    let bank_side = Bank::builder(bank.clone(), ledger, bank_keys, broker_id)
        .clock(clock.clone())
        .build()?;
    if bank_side.policy()?.map(|record| record.policy) != Some(HolderPolicy::default()) {
        bank_side.set_policy(HolderPolicy::default())?;
    }
    bank_side.trust_broker_keys(&broker.jwks()?)?;
    let bank_data = FirstBank {
        balances: HashMap::from([(current.clone(), 123_456), (savings.clone(), 9_876_543)]),
    };
    let mut story = Story {
        broker,
        bank: bank_side,
        bank_data,
        clock,
        dpop,
        phone: phone_key(storage, &rng)?,
        customer: alice.clone(),
        relay_log: Vec::new(),
        rng,
        step: 0,
    };

    story.step("The bank and the platform register with the broker");
    // Registration runs on every start: registering again what is registered changes nothing,
    // and a bank registered with another key is refused, not hidden.
    let registered = story
        .broker
        .register_holder(HolderRegistration {
            id: bank.clone(),
            policy: HolderPolicy::default(),
            attestation_keys: vec![story.bank.attestation_key()],
        })
        .map_err(|error| match error {
            Error::RegistrationMismatch { .. } => format!(
                "{error}: the database was made with other keys; delete it and its .keys \
                 directory to start fresh"
            ),
            other => other.to_string(),
        })?;
    story.broker.register_platform(PlatformProfile {
        id: chat.clone(),
        registered_purposes: PurposeSet::from(Purpose::ALL),
    })?;
    if registered == Registered::Unchanged {
        println!("   (registered by an earlier run)");
    }
    println!("   holder {bank}: shares balance and alerts, at most 4 unattended accesses a day");
    println!("   platform {chat}: registered for customer_service and fraud_protection");

    story.step("Alice links the chat at her bank; the chat knows her only by a pairwise id");
    let alice_at_bank = alice.clone();
    let alice = story.bank.link_subject(&alice_at_bank, &chat)?;
    println!("   the bank knows her as {alice_at_bank}; the chat, as {alice}");

    story.step("Alice registers her phone's key at her bank");
    let phone = story.phone.public_key();
    println!(
        "   her phone and her bank's app both show {}: she confirms they match",
        phone.confirmation_code()
    );
    let known = story
        .bank
        .devices(&alice_at_bank)?
        .iter()
        .any(|d| d.key == phone);
    if known {
        println!("   (registered by an earlier run)");
    } else {
        story.bank.register_device(&alice_at_bank, phone)?;
    }

    story.step("The platform asks Alice for balance + alerts on both her accounts");
    let request = story.broker.request_consent(ConsentRequestDraft {
        subject: alice.clone(),
        platform: chat.clone(),
        holder: bank.clone(),
        scopes: vec![Scope::Balance.into(), Scope::Alerts.into()],
        purposes: vec![
            Purpose::CustomerService.into(),
            Purpose::FraudProtection.into(),
        ],
        accounts: AccountSelection::Listed(AccountSet::from([current.clone(), savings.clone()])),
        duration: Duration::days(90),
    })?;
    let deadline = request.approval_deadline().format(&Rfc3339)?;
    println!(
        "   consent {} requested; Alice has until {deadline} to approve",
        request.id()
    );

    story.step("At the bank, Alice approves balance and alerts on her current account only");
    let attestation = story.bank_attests(
        &request,
        &[Scope::Balance, Scope::Alerts],
        &[&current],
        Duration::days(90),
    )?;
    let approved = story.broker.approve(request.id(), &attestation)?;
    println!(
        "   consent {} is {:?}",
        request.id(),
        approved.status(story.broker.now())
    );

    let balance = AccessRequest {
        consent: request.id().clone(),
        platform: chat.clone(),
        scope: Scope::Balance.into(),
        purpose: Purpose::CustomerService.into(),
        account: current.clone(),
        presence: Presence::SubjectPresent,
    };

    let first_decision_seq = story.broker.store().audit_len()?;
    story.step("Alice asks the chat for her balance (customer service)");
    story.access(&balance, &Decision::Permit)?;
    story.fetch_with_token(&balance)?;

    story.step("The platform asks for her savings balance, which Alice did not approve");
    let savings_balance = AccessRequest {
        account: savings.clone(),
        ..balance.clone()
    };
    story.access(
        &savings_balance,
        &deny(vec![DenyReason::AccountNotGranted {
            account: savings.clone(),
        }]),
    )?;

    story.step("The platform asks for the balance to target ads");
    let ads = AccessRequest {
        purpose: "ads".parse()?,
        ..balance.clone()
    };
    story.access(
        &ads,
        &deny(vec![DenyReason::ProhibitedPurpose {
            prohibited: ProhibitedUse::Ads,
        }]),
    )?;

    story.step("Unattended fraud-alert checks: four a day, then no more");
    let poll = AccessRequest {
        scope: Scope::Alerts.into(),
        purpose: Purpose::FraudProtection.into(),
        presence: Presence::Unattended,
        ..balance.clone()
    };
    println!("   the first finds an alert; it reaches Alice's phone while she is away, sealed:");
    story.fetch_with_token(&poll)?;
    for _ in 1..4 {
        story.access(&poll, &Decision::Permit)?;
    }
    story.access(
        &poll,
        &deny(vec![DenyReason::FrequencyExceeded { limit: 4 }]),
    )?;
    println!("   (Alice herself can still ask:)");
    story.access(&balance, &Decision::Permit)?;

    story.step("The platform tries to approve a consent by itself, with its own key");
    let second = story.broker.request_consent(ConsentRequestDraft {
        scopes: vec![Scope::Alerts.into()],
        purposes: vec![Purpose::FraudProtection.into()],
        ..draft_for(&alice, &chat, &bank, &current)
    })?;
    let platform_key = SigningKey::generate(&story.rng)?;
    let forger = AttestationSigner::new(bank.clone(), platform_key)?;
    let forged = forger.sign(
        &ApprovalStatement {
            consent: second.id().clone(),
            subject: alice.clone(),
            platform: second.platform().clone(),
            scopes: ScopeSet::from([Scope::Alerts]),
            purposes: PurposeSet::from([Purpose::FraudProtection]),
            accounts: AccountSet::from([current.clone()]),
            consent_expires_at: story.broker.now() + Duration::days(30),
            unattended_daily_limit: DEFAULT_UNATTENDED_DAILY_LIMIT,
            devices: Vec::new(),
            plaintext: PlaintextUses::new(),
        },
        story.broker.id(),
        story.broker.now(),
        &story.rng,
    )?;
    match story.broker.approve(second.id(), &forged) {
        // Not logged: no key of the bank's signed it, so it is nobody's word but the poster's.
        Err(Error::Attestation(error)) => println!("   refused, and not logged: {error}"),
        other => return Err(format!("a forged attestation was not refused: {other:?}").into()),
    }
    println!(
        "   consent {} is {:?}",
        second.id(),
        story.broker.consent(second.id())?.status
    );

    story.step("Alice revokes her consent in the chat");
    // The platform holds a token it got just before, not yet presented.
    let TokenOutcome::Issued(held) = story.broker.authorise_with_token(&balance)? else {
        return Err("expected a token".into());
    };
    let token_before_revocation = held.token;
    story.broker.revoke(
        request.id(),
        Revoker::Subject,
        RevocationReason::SubjectWithdrew,
    )?;
    story.access(
        &balance,
        &deny(vec![DenyReason::Revoked {
            by: Revoker::Subject,
        }]),
    )?;
    println!("   the platform presents the token it got before the revocation ...");
    story.sync_feed()?;
    match story.present(&token_before_revocation) {
        Err(GateError::Refused { refusal, .. }) => {
            println!("   the bank's gate refuses it: {refusal}")
        }
        other => {
            return Err(
                format!("the bank accepted a token of a revoked consent: {other:?}").into(),
            );
        }
    }

    story.step("A second, one-day grant runs past its expiry");
    let short = story.broker.request_consent(ConsentRequestDraft {
        duration: Duration::days(1),
        ..draft_for(&alice, &chat, &bank, &current)
    })?;
    let attestation =
        story.bank_attests(&short, &[Scope::Balance], &[&current], Duration::days(1))?;
    let granted = story.broker.approve(short.id(), &attestation)?;
    let expires_at = granted.grant().map(Grant::expires_at).ok_or("no grant")?;
    let in_time = AccessRequest {
        consent: short.id().clone(),
        ..balance.clone()
    };
    story.access(&in_time, &Decision::Permit)?;
    story.clock.advance(Duration::days(2));
    println!("   two days later ...");
    story.access(
        &in_time,
        &deny(vec![DenyReason::Expired { at: expires_at }]),
    )?;

    story.step("Alice's consents, as she would see them");
    for view in story.broker.consents_of(&alice)? {
        let scopes = match view.consent.grant() {
            Some(grant) => grant.scopes(),
            None => view.consent.request().scopes(),
        };
        let scopes: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
        println!(
            "   {} {:?} scopes {:?}",
            view.consent.id(),
            view.status,
            scopes
        );
    }

    story.step("What the platform stored and logged holds none of Alice's figures");
    let mut platform_bytes = vec![(
        "the platform's relay log".to_owned(),
        story.relay_log.clone(),
    )];
    if let Storage::Sqlite(path) = storage {
        let log = path.with_extension("relay.log");
        std::fs::write(&log, &story.relay_log)?;
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            if let Ok(bytes) = std::fs::read(&file) {
                platform_bytes.push((file.display().to_string(), bytes));
            }
        }
    }
    for figure in ["123456", "1234.56", "9876543", ALERT] {
        for (name, bytes) in &platform_bytes {
            if let Some(form) = find_figure(bytes, figure) {
                return Err(format!("{name} holds Alice's figure {figure} ({form})").into());
            }
        }
    }
    println!(
        "   searched {} bytes ({}) for 123456, 1234.56, 9876543 and the alert's text, as text, \
         base64 and hex: none",
        platform_bytes.iter().map(|(_, b)| b.len()).sum::<usize>(),
        platform_bytes
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    story.step("The audit trail of this run");
    let total = story.broker.store().audit_len()?;
    for entry in story.broker.store().audit_entries(earlier..total)? {
        println!("   {}", serde_json::to_string(&entry)?);
    }

    story.step("A signed checkpoint, and a receipt Alice can keep");
    let checkpoint = story.broker.checkpoint()?;
    print!(
        "{}",
        checkpoint
            .note
            .lines()
            .map(|l| format!("   {l}\n"))
            .collect::<String>()
    );
    let receipt = story.broker.receipt(first_decision_seq)?;
    let vkey = story.broker.checkpoint_verifier_key();
    let proven = receipt.verify(&NoteVerifier::from_vkey(&vkey)?)?;
    println!(
        "   receipt for entry {}: {:?}, proven by a {}-hash inclusion proof",
        receipt.index,
        proven.kind(),
        receipt.proof.len()
    );
    if let Storage::Sqlite(path) = storage {
        witness_publish_and_monitor(&mut story, path, &vkey)?;
    }

    story.step("Alice asks her bank and the chat to forget her");
    let at_bank = story
        .bank
        .erase_customer(&alice_at_bank)?
        .ok_or("the bank held nothing about Alice")?;
    // The bank's erasure revoked her live approvals; its signed instructions end the
    // platform's consents too.
    // (A consent the platform ended already, in the chat or by expiry, is refused as not live:
    // nothing left to end.)
    for instruction in &at_bank.instructions {
        match story.broker.apply_holder_instruction(instruction) {
            Ok(_) | Err(Error::Consent(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let at_platform = story
        .broker
        .erase_subject(&alice)?
        .ok_or("the platform held nothing about Alice")?;
    let verifier = NoteVerifier::from_vkey(&vkey)?;
    let report = verify_log(&story.broker.store(), Some((&checkpoint.note, &verifier)))?;
    println!(
        "   the bank deleted her key, {} approvals (revoking first the {} still live), her \
         phone's key and her link; the platform deleted her key and {} consents",
        at_bank.attestations.len(),
        at_bank.instructions.len(),
        at_platform.consents.len(),
    );
    println!(
        "   the log ({} entries) still verifies against the checkpoint signed above; nothing in \
         it links to her: her history has {} entries, her pseudonym {} names nobody",
        report.size,
        story.broker.subject_history(&alice)?.len(),
        at_platform.pseudonym
    );
    if let Storage::Sqlite(path) = storage {
        let checkpoint_file = path.with_extension("checkpoint");
        let vkey_file = path.with_extension("vkey");
        check_last_runs_checkpoint(&story.broker, &checkpoint_file, &vkey_file)?;
        std::fs::write(&checkpoint_file, &checkpoint.note)?;
        std::fs::write(&vkey_file, format!("{vkey}\n"))?;
        println!(
            "\nThe log ({} entries) is kept in {}; run again to add to it.",
            story.broker.store().audit_len()?,
            path.display()
        );
        println!(
            "An auditor keeps the checkpoint ({}) and the verifier key ({}), then runs:",
            checkpoint_file.display(),
            vkey_file.display()
        );
        println!(
            "   cargo run --features cli --bin consent-broker -- audit verify --db {} --checkpoint {} --vkey-file {}",
            path.display(),
            checkpoint_file.display(),
            vkey_file.display()
        );
    }
    Ok(())
}

/// The log leaves the platform's hands: the bank, as a witness, cosigns the checkpoint only if
/// it extends what the bank cosigned before (its state is kept in `<db>.witness.sqlite`, across
/// runs); the platform publishes the log as C2SP tiles in `<db>.tiles/`; and the bank's monitor
/// reads those tiles and finds every token its gate served there.
fn witness_publish_and_monitor(story: &mut Story, path: &Path, vkey: &str) -> Result<()> {
    use consent_broker::cosignature::{CosignatureSigner, WitnessPolicy};
    use consent_broker::tiles::{DirTiles, publish};
    use consent_broker::witness::{Cosigning, Witness, WitnessClient};
    story.step("The bank witnesses the log, the platform publishes it, the bank monitors it");
    let (witness_key, _) =
        KeyFile::new(path.with_extension("witness.key")).load_or_create(&story.rng)?;
    let log_key = NoteVerifier::from_vkey(vkey)?;
    let witness = Witness::open(
        path.with_extension("witness.sqlite"),
        CosignatureSigner::new("first-bank.example/witness", witness_key.to_pkcs8_der())?,
        story.clock.clone(),
    )?
    .follow(story.broker.log_origin(), log_key.clone());
    let mut cosigning = Cosigning::new(vec![(
        &witness as &dyn WitnessClient,
        witness.verifier().clone(),
    )]);
    let (checkpoint, cosigned) = story.broker.witnessed_checkpoint(&mut cosigning)?;
    if let Some(alarm) = cosigned.alarms.first() {
        return Err(format!("the bank's witness refused the checkpoint: {alarm}").into());
    }
    let tiles = path.with_extension("tiles");
    let witnessed = StoredCheckpoint {
        note: cosigned.note,
        ..checkpoint
    };
    let published = publish(&story.broker.store(), &tiles, &witnessed)?;
    println!(
        "   the bank's witness cosigned size {} (consistent with what it cosigned before); {} new \
         tiles and bundles published in {}",
        witnessed.size,
        published.files,
        tiles.display()
    );
    let policy = WitnessPolicy {
        witnesses: vec![witness.verifier().clone()],
        quorum: 1,
    };
    // The monitor's state is the bank's, kept beside its ledger across runs: a restarted monitor
    // goes on from the checkpoint it verified last, so the platform cannot show it less.
    let state_file = path.with_extension("monitor.json");
    let monitor = LogMonitor::new(story.broker.log_origin(), log_key, policy)?;
    let (mut monitor, went_on) = match monitor.restore_from(&state_file) {
        Ok(restored) => (restored, true),
        Err(MonitorError::Saved(SavedStateError::Unreadable(std::io::ErrorKind::NotFound))) => {
            (monitor, false)
        }
        // A state an older version of the library saved: held to its checkpoint, the journal
        // and the log read again from their start (the first save writes the state whole).
        Err(MonitorError::Saved(SavedStateError::Format)) => {
            (monitor.pinned_to(&std::fs::read(&state_file)?)?, false)
        }
        Err(e) => {
            return Err(format!(
                "the bank's monitor state in {}: {e} (LogMonitor::pinned_to keeps its \
                 checkpoint; removing the file starts anew)",
                state_file.display()
            )
            .into());
        }
    };
    let report = monitor.check(&story.bank, &DirTiles::new(&tiles), story.clock.now())?;
    if !report.is_clean() {
        return Err(
            format!("the bank's monitor found the platform's log wanting: {report:?}").into(),
        );
    }
    // Durably: the first save written in full and flushed, then renamed over the file, and the
    // rename flushed with its directory; the saves after it append what their passes changed.
    monitor.save_to(&state_file)?;
    let cosigned_at = report
        .cosigned_at
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| "no time".to_owned());
    println!(
        "   the bank's monitor verified the tiles up to size {}{}, under a checkpoint its witness \
         cosigned at {cosigned_at} (older than a day would be an alarm): every token its gate \
         served is there, for what it was served, with its approval; its state is kept in {}",
        report.log_size,
        if went_on {
            " from where its saved state left off"
        } else {
            ""
        },
        state_file.display()
    );
    println!(
        "   anyone can check the tiles: cargo run --features cli --bin consent-broker -- audit \
         verify --tiles {} --vkey '{vkey}' --witness '{}' --quorum 1",
        tiles.display(),
        witness.verifier().to_vkey()
    );
    Ok(())
}

/// What an auditor who kept the last run's checkpoint and verifier key does on this run: the
/// saved key still verifies the saved checkpoint (the broker's keys were reused, not replaced),
/// and today's log, every entry re-hashed, extends what that checkpoint committed to. A broker
/// that had silently made new keys, or a log rewritten between runs, stops the story here.
fn check_last_runs_checkpoint(
    broker: &Broker<Arc<dyn Store>>,
    checkpoint_file: &Path,
    vkey_file: &Path,
) -> Result<()> {
    let (Ok(old_note), Ok(old_vkey)) = (
        std::fs::read_to_string(checkpoint_file),
        std::fs::read_to_string(vkey_file),
    ) else {
        return Ok(()); // The first run: nothing kept yet.
    };
    let verifier = NoteVerifier::from_vkey(old_vkey.trim())?;
    let report = verify_log(&broker.store(), Some((&old_note, &verifier)))?;
    let kept = report.checkpoint.map_or(0, |c| c.size);
    println!(
        "   the checkpoint kept from the last run ({kept} entries) verifies with the verifier \
         key printed then, and this log of {} entries extends it",
        report.size
    );
    Ok(())
}

fn draft_for(
    subject: &SubjectId,
    platform: &PlatformId,
    holder: &HolderId,
    account: &AccountId,
) -> ConsentRequestDraft {
    ConsentRequestDraft {
        subject: subject.clone(),
        platform: platform.clone(),
        holder: holder.clone(),
        scopes: vec![Scope::Balance.into()],
        purposes: vec![Purpose::CustomerService.into()],
        accounts: AccountSelection::Listed(AccountSet::from([account.clone()])),
        duration: Duration::days(30),
    }
}

/// Alice's phone's key: in a real deployment it is made on the phone and never leaves it. Here
/// it is kept apart from the platform's files, in `<db>.phone/alice-phone.x25519` (mode 0600), so
/// later runs find it registered.
fn phone_key(storage: &Storage, rng: &SystemRandom) -> Result<hpke::DeviceSecretKey> {
    let Storage::Sqlite(db) = storage else {
        return Ok(hpke::DeviceSecretKey::generate(rng)?);
    };
    let directory = db.with_extension("phone");
    std::fs::create_dir_all(&directory)?;
    let file = directory.join("alice-phone.x25519");
    if let Ok(bytes) = std::fs::read(&file) {
        let bytes: [u8; hpke::KEY_LEN] = bytes
            .try_into()
            .map_err(|_| format!("{} is not a 32-byte key", file.display()))?;
        return Ok(hpke::DeviceSecretKey::from_bytes(bytes));
    }
    let key = hpke::DeviceSecretKey::generate(rng)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&file)?, &key.to_bytes())?;
    Ok(key)
}

/// Whether `bytes` hold `figure` as text, as hex (either case) or in base64 (standard or URL-safe,
/// at any of the three alignments): the form found.
fn find_figure(bytes: &[u8], figure: &str) -> Option<&'static str> {
    use base64::Engine as _;
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if contains(figure.as_bytes()) {
        return Some("text");
    }
    let hex: String = figure.bytes().map(|b| format!("{b:02x}")).collect();
    if contains(hex.as_bytes()) || contains(hex.to_uppercase().as_bytes()) {
        return Some("hex");
    }
    for engine in [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        for shift in 0..3 {
            // The figure after `shift` leading bytes: the characters wholly its own.
            let mut input = vec![0u8; shift];
            input.extend_from_slice(figure.as_bytes());
            let encoded = engine.encode(&input);
            let start = (shift * 4).div_ceil(3);
            let end = (input.len() * 4) / 3;
            if let Some(core) = encoded.get(start..end).filter(|c| c.len() >= 4)
                && contains(core.as_bytes())
            {
                return Some("base64");
            }
        }
    }
    None
}

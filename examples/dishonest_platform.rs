//! The platform cheats, and the bank's gate stops it.
//!
//! The platform embeds the broker, so it owns the broker's database, keys and clock. Here it
//! uses that: it edits its own SQLite file to widen Alice's consent to another customer's account
//! and to transactions, resets its own count of background polls, labels its polls as Alice
//! being present, and lets a token be copied. Its broker dutifully issues every token the edited
//! database allows. The bank decides from its own ledger, so each request is refused with its
//! precise reason, and the bank's journal (and Alice's view at the bank) show what was tried.
//!
//! Run: `cargo run --example dishonest_platform`. Files go to `target/dishonest_platform/`,
//! made afresh on each run; keys are ephemeral (an example's choice: see `BrokerKeys` and
//! `BankKeys` for keys kept in files).

use std::path::Path;

use consent_broker::checkpoint::NoteVerifier;
use consent_broker::dpop::{DpopSigner, HttpRequest};
use consent_broker::time::Duration;
use consent_broker::*;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The bank's account system: who owns which account, and the data.
struct Accounts;

impl DataHolder for Accounts {
    type Error = String;

    fn account_owner(&self, account: &AccountId) -> std::result::Result<Option<SubjectId>, String> {
        let owner = match account.as_str() {
            "acc-alice" => "alice",
            "acc-bob" => "bob",
            _ => return Ok(None),
        };
        SubjectId::new(owner).map(Some).map_err(|e| e.to_string())
    }

    fn balance(&self, grant: BalanceGrant<'_>) -> std::result::Result<Balance, DataError<String>> {
        Ok(Balance {
            account: grant.account().clone(),
            available: Money {
                minor_units: 12_345,
                currency: "EUR".into(),
            },
            as_of: consent_broker::time::OffsetDateTime::now_utc(),
        })
    }
}

const URL: &str = "https://bank.example/v1/balance";
const GET: HttpRequest<'static> = HttpRequest {
    method: "GET",
    url: URL,
};

struct Platform {
    broker: Broker<SqliteStore>,
    dpop: DpopSigner,
    db: std::path::PathBuf,
    random: SystemRandom,
}

impl Platform {
    /// A token from the platform's broker for `access`, with a DPoP proof for the request.
    fn token(&self, access: &AccessRequest) -> Result<(String, String)> {
        let token = match self.broker.authorise_with_token(access)? {
            TokenOutcome::Issued(token) => token.token,
            TokenOutcome::Denied(denial) => {
                return Err(format!("the broker denied it: {:?}", denial.reasons).into());
            }
        };
        let proof = self
            .dpop
            .proof(&GET, &token, self.broker.now(), &self.random)?;
        Ok((token, proof))
    }

    /// Runs `sql` on the platform's own database, as a dishonest operator would.
    fn edit(&self, sql: &str) -> Result<()> {
        rusqlite::Connection::open(&self.db)?.execute_batch(sql)?;
        Ok(())
    }
}

fn step(title: &str) {
    println!("\n== {title}");
}

/// Presents a request at the bank's gate and says what happened.
/// A served response is sealed to Alice's phone: the platform relays it, her phone opens it.
fn present(
    bank: &Bank<SqliteStore>,
    token: &str,
    proof: &str,
    what: &str,
    phone: &hpke::DeviceSecretKey,
) -> Result<()> {
    let request = GateRequest {
        token,
        proof,
        http: GET,
    };
    match bank.serve(&request, &Accounts) {
        Ok(Ok(Response::Sealed(sealed))) => match open_response(&sealed, phone)? {
            AccountData::Balance(balance) => println!(
                "   {what}: served sealed to Alice's phone, which opens it: balance {} {}",
                balance.available.minor_units, balance.available.currency
            ),
            data => println!("   {what}: served sealed, Alice's phone opens {data:?}"),
        },
        Ok(Ok(Response::Plaintext(data))) => println!("   {what}: served in the clear {data:?}"),
        Ok(Err(error)) => println!("   {what}: admitted, then the data path refused: {error}"),
        Err(GateError::Refused { refusal, .. }) => println!("   {what}: REFUSED, {refusal}"),
        Err(error) => return Err(error.to_string().into()),
    }
    Ok(())
}

fn main() -> Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dishonest_platform");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let random = SystemRandom::new();
    let (alice, bank_id, chat): (SubjectId, HolderId, PlatformId) =
        ("alice".parse()?, "first-bank".parse()?, "chat".parse()?);
    let (own, bobs): (AccountId, AccountId) = ("acc-alice".parse()?, "acc-bob".parse()?);

    step("The platform's broker and the bank, each with its own database and keys");
    let dpop = DpopSigner::new(SigningKey::generate(&random)?)?;
    let db = dir.join("platform.sqlite");
    let broker = Broker::builder("broker.chat.example".parse()?, SqliteStore::open(&db)?)
        .keys(BrokerKeys::ephemeral(&random)?)
        .sender_key(chat.clone(), &dpop.public_key())
        .build()?;
    let bank = Bank::builder(
        bank_id.clone(),
        SqliteStore::open(dir.join("bank.sqlite"))?,
        BankKeys::ephemeral(&random)?,
        broker.id().clone(),
    )
    .gate(GateSettings {
        present_daily_ceiling: 3,
        ..GateSettings::default()
    })
    .build()?;
    let policy = HolderPolicy::default();
    bank.set_policy(policy.clone())?;
    broker.register_holder(HolderRegistration {
        id: bank_id.clone(),
        policy,
        attestation_keys: vec![bank.attestation_key()],
    })?;
    broker.register_platform(PlatformProfile {
        id: chat.clone(),
        registered_purposes: PurposeSet::from(Purpose::ALL),
    })?;
    bank.trust_broker_keys(&broker.jwks()?)?;
    bank.apply_revocation_feed(&broker.revocation_feed(&bank_id, 0)?)?;
    let platform = Platform {
        broker,
        dpop,
        db,
        random: SystemRandom::new(),
    };
    println!("   platform database: {}", platform.db.display());

    step("Alice registers her phone's key at her bank (she compares the confirmation codes)");
    let phone = hpke::DeviceSecretKey::generate(&random)?;
    println!(
        "   code shown by phone and bank: {}",
        phone.public_key().confirmation_code()
    );
    bank.register_device(&alice, phone.public_key())?;
    // The chat knows Alice only by the pairwise identifier her bank gave it.
    let alice_in_chat = bank.link_subject(&alice, &chat)?;

    step("Alice approves, at her bank, balance checks on her own account, two polls a day");
    let request = platform.broker.request_consent(ConsentRequestDraft {
        subject: alice_in_chat.clone(),
        platform: chat.clone(),
        holder: bank_id.clone(),
        scopes: vec![Scope::Balance.into()],
        purposes: vec![Purpose::CustomerService.into()],
        accounts: AccountSelection::Listed(AccountSet::from([own.clone()])),
        duration: Duration::days(30),
    })?;
    let attestation = bank.attest(&ApprovalStatement {
        consent: request.id().clone(),
        subject: alice.clone(),
        platform: chat.clone(),
        scopes: request.scopes(),
        purposes: request.purposes(),
        accounts: AccountSet::from([own.clone()]),
        consent_expires_at: platform.broker.now() + Duration::days(30),
        unattended_daily_limit: 2,
        devices: vec![phone.public_key().thumbprint()],
        plaintext: PlaintextUses::new(),
    })?;
    platform.broker.approve(request.id(), &attestation)?;
    let access = |scope: Scope, account: &AccountId, presence: Presence| AccessRequest {
        consent: request.id().clone(),
        platform: chat.clone(),
        scope: scope.into(),
        purpose: Purpose::CustomerService.into(),
        account: account.clone(),
        presence,
    };

    step("An honest request");
    let (token, proof) = platform.token(&access(Scope::Balance, &own, Presence::SubjectPresent))?;
    present(&bank, &token, &proof, "Alice asks for her balance", &phone)?;

    step("The platform edits its own database: Bob's account and transactions in Alice's grant");
    platform.edit(&format!(
        "UPDATE consents SET record = json_set(record,
             '$.state.grant.accounts', json_array('{own}', '{bobs}'),
             '$.state.grant.scopes', json_array('balance', 'alerts', 'transactions'))
         WHERE id = '{id}';
         UPDATE holders SET record = json_set(record,
             '$.policy.enabled_scopes', json_array('balance', 'alerts', 'transactions'));",
        id = request.id()
    ))?;
    let (token, proof) =
        platform.token(&access(Scope::Balance, &bobs, Presence::SubjectPresent))?;
    present(
        &bank,
        &token,
        &proof,
        "Bob's balance, under Alice's consent",
        &phone,
    )?;
    let (token, proof) =
        platform.token(&access(Scope::Transactions, &own, Presence::SubjectPresent))?;
    present(&bank, &token, &proof, "Alice's transactions", &phone)?;

    step("Background polls: two agreed; the platform resets its count, then calls them 'present'");
    for poll in 1..=3 {
        let (token, proof) = platform.token(&access(Scope::Balance, &own, Presence::Unattended))?;
        let what = format!("unattended poll {poll}");
        present(&bank, &token, &proof, &what, &phone)?;
        platform.edit("DELETE FROM usage")?;
    }
    for poll in 1..=3 {
        let (token, proof) =
            platform.token(&access(Scope::Balance, &own, Presence::SubjectPresent))?;
        let what = format!("poll labelled 'present' {poll}");
        present(&bank, &token, &proof, &what, &phone)?;
    }

    step("A token copied by someone without the platform's key");
    let (token, _) = platform.token(&access(Scope::Balance, &own, Presence::SubjectPresent))?;
    let thief = DpopSigner::new(SigningKey::generate(&random)?)?;
    let stolen_proof = thief.proof(&GET, &token, platform.broker.now(), &random)?;
    present(&bank, &token, &stolen_proof, "the copied token", &phone)?;

    step("What Alice sees at her bank");
    let view = bank.subject_view(&alice)?;
    for entry in &view.journal {
        match &entry.event {
            AuditEvent::AccessServed {
                account, presence, ..
            } => println!("   #{:>2} served {account} ({presence:?})", entry.seq),
            AuditEvent::AccessRefusedAtGate {
                refusal, account, ..
            } => println!(
                "   #{:>2} refused {}: {refusal}",
                entry.seq,
                account.as_ref().map_or("-", |a| a.as_str())
            ),
            other => println!("   #{:>2} {:?}", entry.seq, other.kind()),
        }
    }

    step("Anyone can check the bank's journal against its signed checkpoint");
    let checkpoint = bank.checkpoint()?;
    let verifier = NoteVerifier::from_vkey(&bank.journal_verifier_key())?;
    let report = verify_log(bank.journal(), Some((&checkpoint.note, &verifier)))?;
    println!(
        "   the journal's {} entries verify against the checkpoint signed by {}",
        report.size,
        bank.id()
    );
    Ok(())
}

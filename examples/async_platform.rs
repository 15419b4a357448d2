//! A platform's service in async Rust (tokio): the broker shared behind an `Arc`, each call on a
//! blocking thread.
//!
//! The broker's API is synchronous: a call reads the store, decides, and commits (on SQLite, one
//! fsynced transaction, a fraction of a millisecond on a local disk; on PostgreSQL, round trips
//! to the server). From async code, run each call with `tokio::task::spawn_blocking` so that the
//! executor's worker threads never wait on the disk or the network.
//!
//! Run: `cargo run --example async_platform`.
#![expect(
    clippy::expect_used,
    reason = "a task that panicked is a bug, not an answer"
)]

use std::sync::Arc;

use consent_broker::time::Duration;
use consent_broker::*;

type SharedBroker = Arc<Broker<SqliteStore>>;

/// What a chat handler does when a person asks "what is my balance?": ask the broker, off the
/// executor's threads, and answer with the decision.
async fn on_balance_question(broker: SharedBroker, access: AccessRequest) -> Result<String, Error> {
    let outcome = tokio::task::spawn_blocking(move || broker.authorise_with_token(&access))
        .await
        .expect("the blocking task ran to completion")?;
    Ok(match outcome {
        TokenOutcome::Issued(token) => {
            format!("token {} (expires {})", token.token_id, token.expires_at)
        }
        TokenOutcome::Denied(denial) => {
            let reasons: Vec<String> = denial.reasons.iter().map(ToString::to_string).collect();
            format!("refused: {}", reasons.join("; "))
        }
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let random = SystemRandom::new();
    // Start-up: open the store, load the kept keys (made on the first start), register. All of it
    // blocks, so it runs on a blocking thread too.
    let keys_dir = dir.path().to_owned();
    let broker: SharedBroker = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let store = SqliteStore::open(keys_dir.join("platform.sqlite"))?;
        let keys = BrokerKeys::load_or_create(&keys_dir, &SystemRandom::new())
            .map_err(|e| Error::Store(StoreError::Unavailable(e.to_string())))?;
        Ok(Arc::new(
            Broker::builder(BrokerId::new("broker.chat.example")?, store)
                .keys(keys)
                .build()?,
        ))
    })
    .await??;

    // The bank's side, simulated here: its key, its registration, the subject's approval.
    let bank = HolderId::new("first-bank")?;
    let signer = AttestationSigner::new(bank.clone(), SigningKey::generate(&random)?)?;
    broker.register_holder(HolderRegistration {
        id: bank.clone(),
        policy: HolderPolicy::default(),
        attestation_keys: vec![signer.public_key()],
    })?;
    let chat = PlatformId::new("chat")?;
    broker.register_platform(PlatformProfile {
        id: chat.clone(),
        registered_purposes: PurposeSet::from(Purpose::ALL),
    })?;
    let account = AccountId::new("acc-1")?;
    let request = broker.request_consent(ConsentRequestDraft {
        subject: SubjectId::new("alice")?,
        platform: chat.clone(),
        holder: bank,
        scopes: vec![Scope::Balance.into()],
        purposes: vec![Purpose::CustomerService.into()],
        accounts: AccountSelection::Listed(AccountSet::from([account.clone()])),
        duration: Duration::days(30),
    })?;
    let statement = ApprovalStatement {
        consent: request.id().clone(),
        subject: request.subject().clone(),
        platform: request.platform().clone(),
        scopes: request.scopes(),
        purposes: request.purposes(),
        accounts: AccountSet::from([account.clone()]),
        consent_expires_at: broker.now() + Duration::days(30),
        unattended_daily_limit: DEFAULT_UNATTENDED_DAILY_LIMIT,
        devices: Vec::new(),
        plaintext: PlaintextUses::new(),
    };
    broker.approve(
        request.id(),
        &signer.sign(&statement, broker.id(), broker.now(), &random)?,
    )?;

    // Many conversations at once: each question is a task; each broker call a blocking one.
    let question = AccessRequest {
        consent: request.id().clone(),
        platform: chat,
        scope: Scope::Balance.into(),
        purpose: Purpose::CustomerService.into(),
        account,
        presence: Presence::SubjectPresent,
    };
    let mut handlers = tokio::task::JoinSet::new();
    for n in 0..8 {
        let mut access = question.clone();
        if n == 7 {
            access.purpose = "ads".parse()?;
        }
        handlers.spawn(on_balance_question(Arc::clone(&broker), access));
    }
    let mut answers = Vec::new();
    while let Some(answer) = handlers.join_next().await {
        answers.push(answer??);
    }
    answers.sort();
    for answer in &answers {
        println!("{answer}");
    }
    let refused = answers.iter().filter(|a| a.starts_with("refused")).count();
    assert_eq!(refused, 1, "only the question for ads is refused");
    // Every decision and token is in the log: 2 key activations, 2 registrations, the request,
    // the approval, then 7 permits with their tokens and 1 denial.
    let entries = broker.audit_log()?.len();
    assert_eq!(entries, 6 + 7 * 2 + 1);
    println!(
        "{entries} audit entries; the log verifies: {:?}",
        verify_log(&broker.store(), None).map(|r| r.size)
    );
    Ok(())
}

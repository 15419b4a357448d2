//! Bulk data for benchmarks and load tests: logs and stores of a size no test would build one
//! call at a time.

use time::OffsetDateTime;

use crate::audit::{Actor, AuditEvent, AuditRecord};
use crate::consent::{AccountSelection, Consent};
use crate::ids::AccountId;
use crate::policy::{DenyReason, Presence};
use crate::privacy::{SubjectKey, SubjectKeyRecord};
use crate::sets::AccountSet;
use crate::store::{Change, Commit, Store, StoreError};
use crate::vocab::{Purpose, Scope};

/// Why bulk data was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store publishes broker keys: a broker has run on it, so it is not a store made for
    /// a benchmark, and made-up decisions must not land in its log.
    #[error("bulk decisions go only into a store no broker has run on")]
    BrokerStore,
}

/// How many records or consents one commit carries.
const BATCH: u64 = 1_000;

/// Parses an id the bulk data makes up.
fn id<T: std::str::FromStr>(text: String) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| StoreError::Unavailable(format!("bulk id {text}: {e}")))
}

fn decision(n: u64, at: OffsetDateTime) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord::new(
        at,
        Actor::Platform(id("chat".into())?),
        AuditEvent::AccessDenied {
            consent: id(format!("cns_{n:022}"))?,
            subject: Some(id("ps_AAAAAAAAAAAAAAAAAAAAAA".into())?),
            scope: Scope::Balance.into(),
            purpose: Purpose::CustomerService.into(),
            account: Some(id("ps_BBBBBBBBBBBBBBBBBBBBBB".into())?),
            presence: Presence::SubjectPresent,
            reasons: vec![DenyReason::UnknownConsent],
        },
    ))
}

/// Appends `count` made-up access-decision records (about 260 bytes each, like the broker's) to
/// `store`'s log, in commits of up to a thousand, changing no state: a log to verify or prove
/// against in a benchmark. Only into a store no broker has run on (one that publishes no
/// keys), so that made-up decisions never join a real log.
///
/// # Errors
/// [`BulkError::BrokerStore`]; the store's.
pub fn append_decisions<S: Store + ?Sized>(
    store: &S,
    count: u64,
    at: OffsetDateTime,
) -> Result<(), BulkError> {
    if !store.published_keys()?.is_empty() {
        return Err(BulkError::BrokerStore);
    }
    let mut next = 0;
    while next < count {
        let end = (next + BATCH).min(count);
        let mut commit = Commit::new(decision(next, at)?);
        for n in next + 1..end {
            commit.push_record(decision(n, at)?);
        }
        store.commit(commit)?;
        next = end;
    }
    Ok(())
}

/// **Dangerous, for benchmarks only**: stores `count` copies of the consent `template` (a live
/// grant, say), each with its own id `cns_<n>`, subject `subject-<n>` and single account
/// `acc-<n>`, with every id parsed afresh (nothing shared but what the store itself shares).
/// Each subject gets a fresh random key, stored with its copy, and a granted copy keeps its
/// pseudonyms made under that key, as an approval through the broker would leave it.
/// No attestation stands behind them: each commit of up to a thousand carries one
/// `test_data_imported` entry, so the log says so.
///
/// # Errors
/// The store's.
pub fn dangerous_copy_grants<S: Store + ?Sized>(
    store: &S,
    template: &Consent,
    count: u64,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let random = ring::rand::SystemRandom::new();
    let mut next = 1u64;
    while next <= count {
        let end = (next + BATCH).min(count + 1);
        let record = AuditRecord::new(
            at,
            Actor::Platform(template.request.platform.clone()),
            AuditEvent::TestDataImported {
                consents: end - next,
            },
        );
        let mut commit = Commit::new(record);
        for n in next..end {
            let key = SubjectKey::generate(&random)
                .map_err(|_| StoreError::Unavailable("no random bytes for a subject key".into()))?;
            let consent = copy(template, n)?.with_pseudonyms(&key);
            commit = commit
                .change(Change::InsertSubjectKey {
                    record: SubjectKeyRecord {
                        subject: consent.request.subject.clone(),
                        key,
                        created_at: at,
                    },
                })
                .change(Change::InsertConsent { consent });
        }
        store.commit(commit)?;
        next = end;
    }
    Ok(())
}

fn copy(template: &Consent, n: u64) -> Result<Consent, StoreError> {
    let mut consent = template.clone();
    let request = &mut consent.request;
    request.id = id(format!("cns_{n:022}"))?;
    request.subject = id(format!("subject-{n}"))?;
    request.platform = id(request.platform.as_str().to_owned())?;
    request.holder = id(request.holder.as_str().to_owned())?;
    let account: AccountId = id(format!("acc-{n:08}"))?;
    request.accounts = AccountSelection::Listed(AccountSet::from([account]));
    if let Some(grant) = match &mut consent.state {
        crate::consent::ConsentState::Authorised { grant }
        | crate::consent::ConsentState::Revoked { grant, .. } => Some(grant),
        _ => None,
    } {
        grant.accounts = AccountSet::from([id::<AccountId>(format!("acc-{n:08}"))?]);
    }
    Ok(consent)
}

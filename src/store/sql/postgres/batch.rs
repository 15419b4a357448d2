//! Group commit in one round trip: the commits queued on a broker's writer are sent together as one
//! call of the server-side function `consent_broker_commit` (schema version 6, replaced by 7, 8 and
//! 9), which takes the commit lock, checks each commit's preconditions, applies its changes,
//! numbers its audit entries and computes the Merkle nodes they complete, all in the statement's
//! own transaction. One statement, one transaction, one flush of the server's write-ahead log for
//! the batch.
//!
//! A commit is sent this way when all of its preconditions and changes are of the kinds a
//! decision, a token, or the bank's gate makes (see [`Fast::of`]); any other commit (a consent's
//! creation, a key's rotation, an erasure) is applied statement by statement in a transaction of
//! its own, in its turn. Within a batch the function applies commits in order, each seeing the
//! ones before it, exactly as the statement-by-statement path would one after another:
//! preconditions first (any that fails refuses the commit with `Conflict`), then the ids the
//! commit would remember as seen (one already seen refuses it with `Duplicate`), and only then
//! its changes, which cannot fail on their own. A refused commit writes nothing and takes no
//! sequence number; the others land, numbered consecutively.
//!
//! The server builds each entry as `{"seq":` + its number + the bytes the broker encoded after
//! it ([`PreparedEntry::after_seq`]), which is byte for byte what
//! [`AuditRecord::entry_bytes`](crate::AuditRecord::entry_bytes) gives, and hashes it as RFC 6962
//! says (`SHA-256(0x00 || entry)`, nodes `SHA-256(0x01 || left || right)`), so the log verifies
//! with any RFC 6962 tool, as before.

use postgres::types::ToSql;

use super::connection::{Worker, connection_lost, pg_error, retryable, schema_refusal};
use super::{PostgresStore, Reply};
use crate::audit::PreparedEntry;
use crate::policy::{Presence, Usage};
use crate::store::sql::day_key;
use crate::store::{Change, Commit, CommitReceipt, Precondition, RecordKind, SeenKind, StoreError};

/// The call, prepared once per connection.
const CALL: &str = "SELECT consent_broker_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                    $12, $13, $14, $15)";

/// A commit queued on the writer, with its entries encoded by its caller.
pub(super) struct Pending {
    pub(super) commit: Commit,
    pub(super) records: Vec<PreparedEntry>,
    pub(super) reply: Reply<CommitReceipt>,
}

/// One precondition, as the function's arrays carry it.
struct Check {
    kind: &'static str,
    id: String,
    arg: String,
    num: Option<i64>,
    blob: Option<Vec<u8>>,
}

/// One change, as the function's arrays carry it.
struct Apply {
    kind: &'static str,
    id: String,
    arg: String,
    num: i64,
    num2: i64,
}

/// A commit in the form the function takes.
pub(super) struct Fast {
    checks: Vec<Check>,
    changes: Vec<Apply>,
}

impl Fast {
    /// The commit's form for the function, or `None` if it holds a precondition or a change the
    /// function does not know (it is then applied statement by statement).
    pub(super) fn of(commit: &Commit) -> Option<Self> {
        let mut checks = Vec::with_capacity(commit.preconditions().len() + 2);
        for precondition in commit.preconditions() {
            checks.push(check(precondition)?);
        }
        let mut changes = Vec::with_capacity(commit.changes().len());
        let mut pruned = false;
        // The ids remembered as seen are checked after every precondition, as the
        // statement-by-statement path finds a duplicate only once the preconditions held. That
        // is the same only if no id is remembered after a prune (which may free it) or twice in
        // one commit: such a commit takes the statement-by-statement path.
        for change in commit.changes() {
            match change {
                Change::RememberSeen { kind, id, at, .. } => {
                    let at = at.unix_timestamp();
                    let twice = checks.iter().any(|c| {
                        c.kind == "unseen"
                            && c.id == *id
                            && c.arg == kind.as_str()
                            && c.num == Some(at)
                    });
                    if pruned || twice {
                        return None;
                    }
                    checks.push(Check {
                        kind: "unseen",
                        id: id.clone(),
                        arg: kind.as_str().to_owned(),
                        num: Some(at),
                        blob: None,
                    });
                }
                Change::PruneSeen { .. } => pruned = true,
                _ => {}
            }
            changes.push(apply(change)?);
        }
        Some(Self { checks, changes })
    }
}

fn check(precondition: &Precondition) -> Option<Check> {
    let plain = |kind, id: &str, num| Check {
        kind,
        id: id.to_owned(),
        arg: String::new(),
        num,
        blob: None,
    };
    // A version past `i64::MAX` cannot be sent without saturating onto one a row may hold: such
    // a commit takes the statement-by-statement path, which compares exactly.
    let version = |version: &u64| i64::try_from(*version).ok();
    Some(match precondition {
        Precondition::ConsentVersion {
            consent,
            version: v,
        } => plain("consent", consent.as_str(), Some(version(v)?)),
        Precondition::HolderVersion { holder, version: v } => {
            plain("holder", holder.as_str(), Some(version(v)?))
        }
        Precondition::UsageIs {
            consent,
            day,
            usage: Usage { unattended_today },
        } => Check {
            arg: day_key(*day),
            ..plain(
                "usage",
                consent.as_str(),
                Some(i64::from(*unattended_today)),
            )
        },
        Precondition::KeyActive { key_use, kid } => Check {
            arg: key_use.as_str().to_owned(),
            ..plain("key", kid, None)
        },
        // Compared by digest: the key itself never leaves this process on this path (a
        // statement logged with its parameters would otherwise hold it, defeating erasure).
        Precondition::SubjectKeyIs { subject, key } => Check {
            blob: Some(
                ring::digest::digest(&ring::digest::SHA256, key.to_bytes().as_slice())
                    .as_ref()
                    .to_vec(),
            ),
            ..plain("subject_key", subject.as_str(), None)
        },
        Precondition::AttestationVersion {
            attestation,
            version: v,
        } => plain("attestation", attestation, Some(version(v)?)),
        Precondition::ServedBelow {
            attestation,
            day,
            presence,
            limit,
        } => Check {
            arg: day_key(*day),
            ..plain(
                match presence {
                    Presence::Unattended => "served_unattended_below",
                    Presence::SubjectPresent => "served_present_below",
                },
                attestation,
                Some(i64::from(*limit)),
            )
        },
        Precondition::BankPolicyVersion { version: v } => {
            let expected = match v {
                Some(v) => Some(version(v)?),
                None => None,
            };
            plain("policy", "", expected)
        }
        // The live keys' thumbprints in the order registered, joined by commas. A thumbprint is
        // base64url (RFC 7638) and has none; a list where one had could join equal to another
        // list, so it takes the statement-by-statement path.
        Precondition::LiveDeviceKeys {
            subject,
            thumbprints,
        } if !thumbprints.iter().any(|t| t.contains(',')) => Check {
            arg: thumbprints.join(","),
            ..plain("live_devices", subject.as_str(), None)
        },
        Precondition::NotRevokedAtPlatform { consent } => {
            plain("not_revoked_at_platform", consent.as_str(), None)
        }
        _ => return None,
    })
}

fn apply(change: &Change) -> Option<Apply> {
    Some(match change {
        Change::CountUnattendedAccess { consent, day } => Apply {
            kind: "usage",
            id: consent.as_str().to_owned(),
            arg: day_key(*day),
            num: 0,
            num2: 0,
        },
        Change::CountServed {
            attestation,
            day,
            presence,
        } => {
            let (unattended, present) = crate::store::sql::ledger::served_increments(*presence);
            Apply {
                kind: "served",
                id: attestation.clone(),
                arg: day_key(*day),
                num: unattended,
                num2: present,
            }
        }
        Change::RememberSeen { kind, id, at } => Apply {
            kind: "seen",
            id: id.clone(),
            arg: kind.as_str().to_owned(),
            num: at.unix_timestamp(),
            num2: 0,
        },
        Change::PruneSeen {
            kind,
            before,
            limit,
        } => Apply {
            kind: "prune",
            id: String::new(),
            arg: kind.as_str().to_owned(),
            num: before.unix_timestamp(),
            num2: i64::from(*limit),
        },
        _ => return None,
    })
}

/// The function's arguments for a run of commits, in order.
#[derive(Default)]
struct Arguments<'a> {
    check_commit: Vec<i32>,
    check_kind: Vec<&'static str>,
    check_id: Vec<&'a str>,
    check_arg: Vec<&'a str>,
    check_num: Vec<Option<i64>>,
    check_blob: Vec<Option<&'a [u8]>>,
    change_commit: Vec<i32>,
    change_kind: Vec<&'static str>,
    change_id: Vec<&'a str>,
    change_arg: Vec<&'a str>,
    change_num: Vec<i64>,
    change_num2: Vec<i64>,
    entry_commit: Vec<i32>,
    entry_tail: Vec<&'a [u8]>,
}

impl<'a> Arguments<'a> {
    /// The run's arguments, borrowed from it (nothing is copied but the numbers).
    fn new(run: &'a [(Pending, Fast)]) -> Result<Self, StoreError> {
        let mut args = Self::default();
        for (position, (pending, fast)) in run.iter().enumerate() {
            let position = i32::try_from(position)
                .map_err(|_| StoreError::Unavailable("too many commits in one batch".into()))?;
            for check in &fast.checks {
                args.check_commit.push(position);
                args.check_kind.push(check.kind);
                args.check_id.push(&check.id);
                args.check_arg.push(&check.arg);
                args.check_num.push(check.num);
                args.check_blob.push(check.blob.as_deref());
            }
            for change in &fast.changes {
                args.change_commit.push(position);
                args.change_kind.push(change.kind);
                args.change_id.push(&change.id);
                args.change_arg.push(&change.arg);
                args.change_num.push(change.num);
                args.change_num2.push(change.num2);
            }
            for record in &pending.records {
                let tail = record.after_seq();
                // Both engines keep entries as UTF-8; checked before anything is sent.
                std::str::from_utf8(tail)
                    .map_err(|_| StoreError::Unavailable("an audit entry is not UTF-8".into()))?;
                args.entry_commit.push(position);
                args.entry_tail.push(tail);
            }
        }
        Ok(args)
    }
}

/// Applies a run of commits in one call, retrying a serialisation failure or deadlock, and
/// answers each caller: its receipt, `Conflict` or `Duplicate` if it alone was refused, or the
/// error that failed the whole call (nothing of the run is then in the database, unless the
/// connection was lost after the server received the call: then the outcome is unknown, as with
/// any database, and said so in the error).
pub(super) fn commit_run(
    worker: &mut Worker,
    run: Vec<(Pending, Fast)>,
    alone: fn(&mut Worker, &Commit) -> Result<CommitReceipt, StoreError>,
) {
    let outcome = Arguments::new(&run)
        .map_err(|error| Failed {
            error,
            isolate: true,
        })
        .and_then(|args| call(worker, &args, run.len()));
    match outcome {
        Ok(verdicts) => {
            let mut offset = 0;
            for ((pending, fast), verdict) in run.into_iter().zip(verdicts) {
                let answer = answer(&pending, &fast, offset, verdict);
                offset += fast.checks.len();
                let _ = pending.reply.send(answer);
            }
        }
        // Something in one commit's data failed the whole call (nothing of it was written): each
        // commit is applied alone, statement by statement, so only that one fails.
        Err(Failed { isolate: true, .. }) if run.len() > 1 => {
            for (pending, _) in run {
                let _ = pending.reply.send(alone(worker, &pending.commit));
            }
        }
        Err(Failed { error, .. }) => {
            for (pending, _) in run {
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Why a call failed, and whether one commit's data may be the cause (then each is tried alone).
struct Failed {
    error: StoreError,
    isolate: bool,
}

impl From<StoreError> for Failed {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            isolate: false,
        }
    }
}

/// What the function said of one commit (whose checks begin at `offset` in the batch's): its
/// first sequence number, or why it was refused.
fn answer(
    pending: &Pending,
    fast: &Fast,
    offset: usize,
    verdict: i64,
) -> Result<CommitReceipt, StoreError> {
    match verdict {
        first @ 0.. => {
            let first = u64::try_from(first).unwrap_or_default();
            Ok(CommitReceipt {
                audit_seqs: first..first + pending.records.len() as u64,
            })
        }
        -1 => Err(StoreError::Conflict),
        refused => {
            // -2 - k: the batch's check k (one of this commit's) found its id already seen.
            let k = usize::try_from(-2 - refused).unwrap_or(usize::MAX);
            let seen = k
                .checked_sub(offset)
                .and_then(|k| fast.checks.get(k))
                .filter(|check| check.kind == "unseen")
                .and_then(|check| Some((SeenKind::from_name(&check.arg)?, check)));
            Err(match seen {
                Some((kind, check)) => StoreError::Duplicate {
                    kind: RecordKind::Presented(kind),
                    id: check.id.clone(),
                },
                None => StoreError::Corrupt(format!("the commit function answered {refused}")),
            })
        }
    }
}

/// Calls the function, one round trip; a serialisation failure or deadlock is retried.
fn call(worker: &mut Worker, args: &Arguments, commits: usize) -> Result<Vec<i64>, Failed> {
    let count = i32::try_from(commits)
        .map_err(|_| StoreError::Unavailable("too many commits in one batch".into()))?;
    let params: [&(dyn ToSql + Sync); 15] = [
        &count,
        &args.check_commit,
        &args.check_kind,
        &args.check_id,
        &args.check_arg,
        &args.check_num,
        &args.check_blob,
        &args.change_commit,
        &args.change_kind,
        &args.change_id,
        &args.change_arg,
        &args.change_num,
        &args.change_num2,
        &args.entry_commit,
        &args.entry_tail,
    ];
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (client, statements) = worker.connected()?;
        let prepared = match statements.get(CALL) {
            Some(statement) => Ok(statement.clone()),
            None => client.prepare(CALL).inspect(|statement| {
                statements.insert(CALL.to_owned(), statement.clone());
            }),
        };
        // Whether the call itself was sent: before it, a lost connection leaves nothing behind.
        let sent = prepared.is_ok();
        let result = prepared.and_then(|statement| client.query_one(&statement, &params));
        let error = match result {
            // The call's transaction has committed by now: an answer that cannot be read says
            // nothing of which commits landed, so none of them is failed for certain.
            Ok(row) => {
                let verdicts: Vec<i64> = row.try_get(0).map_err(|e| {
                    StoreError::OutcomeUnknown(format!("the commit function's answer: {e}"))
                })?;
                if verdicts.len() != commits {
                    return Err(StoreError::OutcomeUnknown(format!(
                        "the commit function answered for {} commits of {commits}",
                        verdicts.len()
                    ))
                    .into());
                }
                return Ok(verdicts);
            }
            Err(error) => error,
        };
        if retryable(&error) && attempt < PostgresStore::MAX_TRANSACTION_ATTEMPTS {
            crate::store::back_off(attempt);
            continue;
        }
        // The call ran and wrote nothing: the database's schema is not this build's.
        if let Some(refused) = schema_refusal(&error) {
            return Err(refused.into());
        }
        if connection_lost(&error) {
            worker.client = None;
            if sent {
                // The connection broke with the call sent: whether the server committed it
                // before the break is unknown to this side.
                return Err(StoreError::OutcomeUnknown(pg_error(&error).to_string()).into());
            }
        }
        // A data exception (22), an integrity constraint (23) or an exception the function
        // raised (P0001) may come from one commit's data; anything else is no commit's doing.
        let isolate = error.code().is_some_and(|code| {
            let code = code.code();
            code.starts_with("22") || code.starts_with("23") || code == "P0001"
        });
        return Err(Failed {
            error: pg_error(&error),
            isolate,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Fast;
    use crate::audit::{Actor, AuditEvent, AuditRecord};
    use crate::store::{Change, Commit, Precondition, SeenKind};
    use time::OffsetDateTime;

    /// A gate check's commit, as `Bank::check` builds it for a sealed response.
    fn sealed_check(thumbprints: &[&str]) -> Commit {
        let at = OffsetDateTime::UNIX_EPOCH;
        Commit::new(AuditRecord::new(
            at,
            Actor::Platform("chat".parse().unwrap_or_else(|_| unreachable!())),
            AuditEvent::PlatformRegistered { purposes: None },
        ))
        .precondition(Precondition::attestation_version("att-1", 1))
        .precondition(Precondition::BankPolicyVersion { version: Some(1) })
        .precondition(Precondition::LiveDeviceKeys {
            subject: "alice".parse().unwrap_or_else(|_| unreachable!()),
            thumbprints: thumbprints.iter().map(|t| (*t).to_owned()).collect(),
        })
        .change(Change::RememberSeen {
            kind: SeenKind::Proof,
            id: "p-1".into(),
            at,
        })
        .change(Change::PruneSeen {
            kind: SeenKind::Proof,
            before: at,
            limit: 8,
        })
    }

    #[test]
    fn a_sealed_gate_check_goes_to_the_commit_function() {
        let fast = Fast::of(&sealed_check(&["tp-a", "tp-b"]));
        let check = fast
            .as_ref()
            .and_then(|fast| fast.checks.iter().find(|c| c.kind == "live_devices"));
        assert_eq!(
            check.map(|c| (c.id.as_str(), c.arg.as_str())),
            Some(("alice", "tp-a,tp-b"))
        );
        // A list that joins ambiguously is left to the statement-by-statement path.
        assert!(Fast::of(&sealed_check(&["tp-a,tp-b"])).is_none());
    }
}

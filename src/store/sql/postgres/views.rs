//! The readers' side: a pool of connections sharing one queue, and the access view (everything a
//! decision reads) answered for every caller queued at once in one statement.
//!
//! A decision's read is its only other round trip. Under load, the callers of one broker ask for
//! their views while a reader is busy with the previous statement; the next statement answers all
//! of them (one snapshot, one round trip, one transaction on the server), so the server's cost
//! per statement is shared the way group commit shares a flush.

use std::sync::mpsc::Receiver;
use std::sync::{Mutex, PoisonError};

use postgres::Client;
use time::Date;

use super::connection::{Db, Job, Worker};
use super::{Failure, Reply, read};
use crate::ids::{ConsentId, PlatformId};
use crate::store::sql::Row;
use crate::store::{AccessView, StoreError};

/// What a reader thread is given.
pub(super) enum Read {
    /// An access view, answered with the others queued behind it.
    View(Box<ViewQuery>),
    /// Any other read.
    Run(Job),
}

/// One caller's access view.
pub(super) struct ViewQuery {
    pub(super) consent: ConsentId,
    pub(super) platform: PlatformId,
    pub(super) day: Date,
    pub(super) reply: Reply<AccessView>,
}

/// The most views one statement answers.
const MAX_VIEWS: usize = 128;

/// Every queued caller's consent, platform, the consent's holder (by the `holder` column the
/// trigger keeps from the consent's record), usage on the day and subject key, one row per
/// caller in order.
const VIEWS: &str = "SELECT c.record, p.record, h.record, u.unattended, k.key \
     FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) \
     WITH ORDINALITY AS q (consent, platform, day, n) \
     LEFT JOIN consents c ON c.id = q.consent \
     LEFT JOIN platforms p ON p.id = q.platform \
     LEFT JOIN holders h ON h.id = c.holder \
     LEFT JOIN usage u ON u.consent = c.id AND u.day = q.day \
     LEFT JOIN subject_keys k ON k.subject = c.subject \
     ORDER BY q.n";

/// A reader's thread: reads from the shared queue, the access views among them in batches.
pub(super) fn read_loop(worker: &mut Worker, reads: &Mutex<Receiver<Read>>) {
    loop {
        let (views, other) = {
            let queue = reads.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(first) = queue.recv() else {
                return;
            };
            match first {
                Read::Run(job) => (Vec::new(), Some(job)),
                Read::View(view) => {
                    let mut views = vec![*view];
                    let mut other = None;
                    while views.len() < MAX_VIEWS {
                        match queue.try_recv() {
                            Ok(Read::View(view)) => views.push(*view),
                            Ok(Read::Run(job)) => {
                                other = Some(job);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    (views, other)
                }
            }
        };
        if !views.is_empty() {
            answer(worker, views);
        }
        if let Some(job) = other {
            job(worker);
        }
    }
}

/// Runs `read` on the worker's connection; a read that fails because the connection was lost
/// since its last use (the server restarted, a proxy closed it) is made once more on a new
/// connection: reads change nothing, and a pool the server dropped together costs no error.
pub(super) fn retrying<T>(
    worker: &mut Worker,
    read: impl Fn(&mut Db<'_, Client>) -> Result<T, Failure<postgres::Error>>,
) -> Result<T, StoreError> {
    let was_connected = worker.client.is_some();
    let result = worker.with(&read);
    if was_connected && worker.client.is_none() && result.is_err() {
        return worker.with(&read);
    }
    result
}

/// Answers every caller in `views` from one statement.
fn answer(worker: &mut Worker, views: Vec<ViewQuery>) {
    match retrying(worker, |db| rows(db, &views)) {
        Ok(answers) => {
            for (view, answer) in views.into_iter().zip(answers) {
                let _ = view.reply.send(answer);
            }
        }
        Err(error) => {
            for view in views {
                let _ = view.reply.send(Err(error.clone()));
            }
        }
    }
}

/// The statement's rows, each decoded for its caller (a row that does not decode fails that
/// caller alone).
fn rows(
    db: &mut Db<'_, Client>,
    views: &[ViewQuery],
) -> Result<Vec<Result<AccessView, StoreError>>, Failure<postgres::Error>> {
    let consents: Vec<&str> = views.iter().map(|v| v.consent.as_str()).collect();
    let platforms: Vec<&str> = views.iter().map(|v| v.platform.as_str()).collect();
    let days: Vec<String> = views.iter().map(|v| super::super::day_key(v.day)).collect();
    let statement = db.statement(VIEWS).map_err(Failure::Engine)?;
    let rows = db
        .client
        .query(&statement, &[&consents, &platforms, &days])
        .map_err(Failure::Engine)?;
    if rows.len() != views.len() {
        return Err(Failure::Refused(StoreError::Corrupt(format!(
            "the access views returned {} rows for {} callers",
            rows.len(),
            views.len()
        ))));
    }
    let mut answers = Vec::with_capacity(views.len());
    for (view, row) in views.iter().zip(&rows) {
        answers.push(match decode(db, view, row) {
            Ok(answer) => Ok(answer),
            Err(Failure::Refused(error)) => Err(error),
            Err(engine) => return Err(engine),
        });
    }
    Ok(answers)
}

fn decode(
    db: &mut Db<'_, Client>,
    view: &ViewQuery,
    row: &postgres::Row,
) -> Result<AccessView, Failure<postgres::Error>> {
    let platform = row
        .optional_bytes(1)?
        .map(|json| read::decode_platform(&view.platform, &json))
        .transpose()?;
    let Some(consent) = row.optional_bytes(0)? else {
        return Ok(AccessView {
            platform,
            ..AccessView::default()
        });
    };
    let consent = read::decode_consent(&view.consent, &consent)?;
    let holder_id = &consent.request.holder;
    let holder = match row
        .optional_bytes(2)?
        .map(|json| read::decode_holder(holder_id, &json))
        .transpose()?
    {
        Some(holder) if holder.id == *holder_id => Some(holder),
        // Not found by the column (or another's): read it by the decoded id.
        _ => read::holder(db, holder_id)?,
    };
    Ok(AccessView {
        holder,
        usage: read::decode_usage(&view.consent, row.int(3)?)?,
        subject_key: row
            .optional_bytes(4)?
            .map(super::super::privacy::decode_subject_key)
            .transpose()?,
        subject_key_unread: false,
        platform,
        consent: Some(consent),
    })
}

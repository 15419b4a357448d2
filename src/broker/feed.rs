//! The feed of platform-side revocations a bank follows (see [`crate::feed`]).

use super::Broker;
use crate::audit::AuditEvent;
use crate::auditor::{StoreNodes, encode_hashes};
use crate::error::Error;
use crate::feed::{self, FeedRevocation, RevocationFeed};
use crate::ids::HolderId;
use crate::merkle::{self, EMPTY_ROOT};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::PoisonError;

/// How many log entries one read of the feed takes at a time.
const CHUNK: u64 = 4_096;

/// The platform-side revocations this broker has found in the log, by holder, in log order,
/// and how far it has read: each feed reads only the entries appended since the last (the log
/// is append-only, so what was read stays true, as long as it is the same log: the index holds
/// the tree of the entries it read, hashed from their bytes, and reads again from the start a
/// log whose stored tree there differs). One entry per revocation (about 100 bytes).
#[derive(Debug, Default)]
pub(super) struct FeedIndex {
    /// The log is read up to here (exclusive).
    scanned: u64,
    /// The tree of the log's first `scanned` entries, as read (O(log n) hashes).
    tree: merkle::TreeBuilder,
    by_holder: HashMap<HolderId, Vec<FeedRevocation>>,
}

impl<S: Store> Broker<S> {
    /// The revocations of `holder`'s consents recorded in the log from position `after` to its
    /// end, signed with the broker's token key: what the bank applies to learn of revocations
    /// made on the platform's side. The bank asks from where its last feed ended.
    ///
    /// # Errors
    /// [`Error::FeedBeyondLog`] when `after` is past the log's end (no feed then: the holder's
    /// view goes stale); [`Error::Store`]; [`Error::Provider`].
    #[cfg_attr(
        feature = "tracing",
        tracing::instrument(name = "broker.revocation_feed", level = "debug", skip_all)
    )]
    pub fn revocation_feed(&self, holder: &HolderId, after: u64) -> Result<String, Error> {
        self.revocation_feed_page(holder, after, feed::MAX_FEED_REVOCATIONS)
    }

    /// [`Broker::revocation_feed`] with at most `most` revocations (at least one): when more
    /// are due, the feed is a page, not complete, and ends at the first revocation left out,
    /// where the next page starts.
    ///
    /// # Errors
    /// As [`Broker::revocation_feed`].
    pub fn revocation_feed_page(
        &self,
        holder: &HolderId,
        after: u64,
        most: usize,
    ) -> Result<String, Error> {
        let now = self.now();
        // One reader at a time brings the index up to the log's end; then the feed is a slice.
        let mut index = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        let position = self.store.audit_len()?;
        if after > position {
            return Err(Error::FeedBeyondLog {
                after,
                len: position,
            });
        }
        let nodes = StoreNodes(&self.store);
        // A log shorter than what was read, or whose tree differs there (a restored store, a
        // failover to a replica that was behind and has grown since): what the index holds may
        // not be this log's. Read it again.
        if index.scanned > 0
            && (position < index.scanned
                || merkle::root(index.scanned, &nodes)? != index.tree.root())
        {
            *index = FeedIndex::default();
        }
        while index.scanned < position {
            let start = index.scanned;
            let end = start.saturating_add(CHUNK).min(position);
            let chunk = self.store.audit_bytes(start..end)?;
            // Every entry, in order: a short or gapped read must not become a revocation left
            // out of every feed to come. No feed then (the bank's view goes stale: fail closed).
            let whole = u64::try_from(chunk.len()).is_ok_and(|n| n == end - start)
                && chunk
                    .iter()
                    .zip(start..end)
                    .all(|(entry, seq)| entry.seq == seq);
            if !whole {
                return Err(Error::Store(crate::store::StoreError::Corrupt(format!(
                    "the log's entries {start}..{end} were not all read"
                ))));
            }
            // The chunk's revocations and its entries' hashes onto the tree, all read before the
            // index takes any of them: a fault midway leaves the index as it was.
            let mut found = Vec::new();
            let mut tree = index.tree.clone();
            for stored in chunk {
                tree.push(merkle::leaf_hash(&stored.bytes));
                let entry = stored.parse()?;
                let AuditEvent::ConsentRevoked {
                    consent,
                    revocation,
                    holder: named,
                    ..
                } = &entry.event
                else {
                    continue;
                };
                // The entry names the holder (an erasure deletes the consent's row in the same
                // commit); entries from before that member, the consent's row.
                let theirs = match named {
                    Some(named) => Some(named.clone()),
                    None => self.store.consent(consent)?.map(|c| c.request.holder),
                };
                if let Some(theirs) = theirs {
                    found.push((
                        theirs,
                        FeedRevocation {
                            consent: consent.clone(),
                            seq: entry.seq,
                            at: entry.at.unix_timestamp(),
                            by: revocation.by,
                        },
                    ));
                }
            }
            // The entries read are the log whose tree the store holds at their end (not another
            // store's, met in a failover between two reads): else no feed.
            if merkle::root(end, &nodes)? != tree.root() {
                return Err(Error::Store(crate::store::StoreError::Corrupt(format!(
                    "the log's entries {start}..{end} do not give its tree's root"
                ))));
            }
            for (theirs, revocation) in found {
                index.by_holder.entry(theirs).or_default().push(revocation);
            }
            index.scanned = end;
            index.tree = tree;
        }
        let mut next = index.scanned.min(position);
        let mut complete = true;
        let mut revoked: Vec<FeedRevocation> = index
            .by_holder
            .get(holder)
            .map(|all| {
                let from = all.partition_point(|r| r.seq < after);
                all.iter()
                    .skip(from)
                    .take_while(|r| r.seq < next)
                    .take(most.max(1).saturating_add(1))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let (scanned, scanned_root) = (index.scanned, index.tree.root());
        drop(index);
        // One more than fits: this feed is a page, ending where the next one starts.
        if revoked.len() > most.max(1)
            && let Some(first_left) = revoked.pop()
        {
            next = first_left.seq;
            complete = false;
        }
        let position = next.max(after);
        // The log's tree at the feed's end, and that it extends the tree at its start: the bank
        // holds each feed's log to the last one's.
        let root = match position {
            0 => EMPTY_ROOT,
            _ if position == scanned => scanned_root,
            _ => merkle::root(position, &nodes)?,
        };
        let consistency = if after == 0 || after == position {
            Vec::new()
        } else {
            merkle::consistency_proof(after, position, &nodes)?
        };
        let contents = RevocationFeed {
            iss: self.settings.id.clone(),
            aud: holder.clone(),
            iat: now.unix_timestamp(),
            after,
            position,
            revoked,
            complete,
            root: encode_hashes(&[root]).pop(),
            consistency: encode_hashes(&consistency),
        };
        Ok(feed::sign(&contents, &self.token_key())?)
    }
}

//! The broker's feed index against a store that changes under it (a failover to a replica),
//! and feeds of other trees against a bank holding a root.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use consent_broker::testing::{TestBank, TestBroker};
use consent_broker::time::{Date, OffsetDateTime};
use consent_broker::*;

/// A platform's store with a replica: commits go to both until the replica is left behind,
/// then to the primary alone; on failover, the broker (the same process) reads and writes the
/// replica, which is behind.
#[derive(Default)]
struct Failover {
    primary: MemoryStore,
    replica: MemoryStore,
    /// 0: both in step; 1: the replica left behind; 2: failed over to the replica.
    mode: Arc<AtomicU8>,
    /// Fail over to the replica (mode 2) right after the next read of entries.
    flip_after_read: Arc<std::sync::atomic::AtomicBool>,
}

impl Failover {
    fn active(&self) -> &MemoryStore {
        if self.mode.load(Ordering::SeqCst) == 2 {
            &self.replica
        } else {
            &self.primary
        }
    }
}

impl LogRead for Failover {
    fn audit_len(&self) -> Result<u64, StoreError> {
        self.active().audit_len()
    }
    fn audit_bytes(&self, range: Range<u64>) -> Result<Vec<StoredEntry>, StoreError> {
        let read = self.active().audit_bytes(range);
        if self.flip_after_read.swap(false, Ordering::SeqCst) {
            self.mode.store(2, Ordering::SeqCst);
        }
        read
    }
    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<merkle::Hash>, StoreError> {
        self.active().merkle_node(level, index)
    }
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.active().latest_checkpoint()
    }
    fn derived_levels(&self) -> u32 {
        self.active().derived_levels()
    }
}

impl StateRead for Failover {
    fn holder(&self, id: &HolderId) -> Result<Option<HolderRecord>, StoreError> {
        self.active().holder(id)
    }
    fn platform(&self, id: &PlatformId) -> Result<Option<PlatformProfile>, StoreError> {
        self.active().platform(id)
    }
    fn consent(&self, id: &ConsentId) -> Result<Option<Consent>, StoreError> {
        self.active().consent(id)
    }
    fn consents_of_subject(&self, subject: &SubjectId) -> Result<Vec<Consent>, StoreError> {
        self.active().consents_of_subject(subject)
    }
    fn usage(&self, consent: &ConsentId, day: Date) -> Result<Usage, StoreError> {
        self.active().usage(consent, day)
    }
    fn attestation_used(&self, attestation_id: &str) -> Result<bool, StoreError> {
        self.active().attestation_used(attestation_id)
    }
    fn published_keys(&self) -> Result<Vec<PublishedKey>, StoreError> {
        self.active().published_keys()
    }
    fn subject_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, StoreError> {
        self.active().subject_key(subject)
    }
    fn consents_ended_before(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Consent>, StoreError> {
        self.active().consents_ended_before(before, limit)
    }
    fn access_view(
        &self,
        consent: &ConsentId,
        platform: &PlatformId,
        day: Date,
    ) -> Result<AccessView, StoreError> {
        self.active().access_view(consent, platform, day)
    }
    fn keep_access_views(&self) -> bool {
        self.active().keep_access_views()
    }
}

impl Store for Failover {
    fn commit(&self, commit: Commit) -> Result<CommitReceipt, StoreError> {
        match self.mode.load(Ordering::SeqCst) {
            0 => {
                let receipt = self.primary.commit(commit.clone())?;
                self.replica.commit(commit)?;
                Ok(receipt)
            }
            1 => self.primary.commit(commit),
            _ => self.replica.commit(commit),
        }
    }
    fn record_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        if self.mode.load(Ordering::SeqCst) == 0 {
            self.replica.record_checkpoint(checkpoint)?;
        }
        self.active().record_checkpoint(checkpoint)
    }
}

/// The platform fails over to a replica that was behind while its broker keeps running, the
/// subject's stop is logged on the replica below the bank's position, and the log grows past
/// what the broker's index had read. The feed is refused as `Inconsistent`, the bank follows it
/// anew, and the broker's feed from 0 must be read from this log, not from an index of the old
/// one (which holds no stop: the gate would serve the consent the log shows stopped).
#[test]
fn after_a_failover_to_a_replica_that_grew_past_the_index_the_feed_reads_the_log_anew() {
    let store = Failover::default();
    let mode = Arc::clone(&store.mode);
    let kit = TestBroker::on(store);
    let bank = TestBank::beside(&kit);
    let consent = bank.granted(&kit);
    bank.sync(&kit).unwrap();
    // The replica is left behind; the primary grows and the bank follows it.
    mode.store(1, Ordering::SeqCst);
    let token = kit.token(&kit.access(consent.id()));
    bank.sync(&kit).unwrap();
    let followed = bank.bank.ledger().feed_state().unwrap().unwrap().position;
    // Failover: the same broker on the replica; the subject withdraws there.
    mode.store(2, Ordering::SeqCst);
    let stop = kit.withdrawn(consent.id());
    assert!(stop < followed, "the stop is below the bank's position");
    while kit.broker.store().audit_len().unwrap() <= followed + 2 {
        kit.decide(&kit.access(consent.id()));
    }
    assert!(matches!(
        bank.sync(&kit),
        Err(BankError::Feed(feed::FeedError::Inconsistent))
    ));
    bank.bank.follow_revocation_feed_anew().unwrap();
    bank.sync(&kit).unwrap();
    refused_as_stopped_at_the_platform(&kit, &bank, &token, stop);
}

/// Feeds a platform might try against a bank holding a root: standing still or growing on
/// another tree, and starting again from 0 (back to trust on first use) are all refused, and
/// the bank's feed state is left as it was.
#[test]
fn feeds_of_another_tree_or_from_the_start_are_refused() {
    use consent_broker::feed::FeedError;
    let kit = TestBroker::memory();
    let bank = TestBank::beside(&kit);
    bank.granted(&kit);
    bank.sync(&kit).unwrap();
    let held = bank.bank.ledger().feed_state().unwrap().unwrap();
    let now = kit.broker.now().unix_timestamp();
    let forged = crate::support::ForgedLog {
        real: StoreNodes(&kit.broker.store()),
        real_len: held.position - 1,
    };
    // Standing still on another tree.
    let still = crate::support::feed_as_broker(&forged, held.position, held.position, now, &[]);
    assert_eq!(
        bank.bank.apply_revocation_feed(&still),
        Err(BankError::Feed(FeedError::Inconsistent))
    );
    // Growing from another tree.
    let grown = crate::support::feed_as_broker(&forged, held.position, held.position + 5, now, &[]);
    assert_eq!(
        bank.bank.apply_revocation_feed(&grown),
        Err(BankError::Feed(FeedError::Inconsistent))
    );
    // Restarting at 0 (a downgrade to the trust-on-first-use start): a gap.
    let restart = crate::support::feed_as_broker(
        &StoreNodes(&kit.broker.store()),
        0,
        held.position,
        now,
        &[],
    );
    assert!(matches!(
        bank.bank.apply_revocation_feed(&restart),
        Err(BankError::Feed(FeedError::Gap { .. }))
    ));
    assert_eq!(bank.bank.ledger().feed_state().unwrap(), Some(held));
}

/// The index reads a chunk's entries from one store and the tree's root at its end from
/// another (a failover between the two reads, onto a replica written meanwhile: two broker
/// processes of a store group failing over at different times). Were it to hold the first
/// store's revocations under the second's root, the feed, consistent with the bank's root,
/// would pass over the stop the replica's log holds in the chunk, and no later feed would carry
/// it: the entries read are hashed onto the index's tree and must give the store's root, so
/// that feed is refused and the next reads the replica's log from the start.
#[test]
fn a_failover_between_a_chunks_entries_and_its_root_loses_no_stop() {
    let store = Failover::default();
    let mode = Arc::clone(&store.mode);
    let flip = Arc::clone(&store.flip_after_read);
    let kit = TestBroker::on(store);
    let bank = TestBank::beside(&kit);
    let kept = bank.granted(&kit);
    let stopped = bank.granted(&kit);
    bank.sync(&kit).unwrap();
    let held = bank.bank.ledger().feed_state().unwrap().unwrap().position;
    // The replica is written alone for a while (another process failed over): the stop.
    mode.store(2, Ordering::SeqCst);
    let token = kit.token(&kit.access(stopped.id()));
    let stop = kit.withdrawn(stopped.id());
    for _ in 0..3 {
        kit.decide(&kit.access(kept.id()));
    }
    let replica_len = kit.broker.store().audit_len().unwrap();
    // This process is on the primary, which grew as far without the stop.
    mode.store(1, Ordering::SeqCst);
    while kit.broker.store().audit_len().unwrap() < replica_len {
        kit.decide(&kit.access(kept.id()));
    }
    assert_eq!(kit.broker.store().audit_len().unwrap(), replica_len);
    // The feed reads the primary's entries, then fails over before the root: no feed.
    flip.store(true, Ordering::SeqCst);
    let refused = kit.broker.revocation_feed(bank.bank.id(), held);
    assert!(
        matches!(refused, Err(Error::Store(StoreError::Corrupt(_)))),
        "{refused:?}"
    );
    assert!(stop >= held && stop < replica_len);
    // From here on the broker is on the replica, whose log holds the stop; it grows, and the
    // next feed carries the stop.
    for _ in 0..3 {
        kit.decide(&kit.access(kept.id()));
    }
    bank.sync(&kit).unwrap();
    refused_as_stopped_at_the_platform(&kit, &bank, &token, stop);
}

/// The gate refuses `token` as stopped on the platform's side: the stop at `stop` in the log
/// reached the bank.
fn refused_as_stopped_at_the_platform<S: Store>(
    kit: &TestBroker<S>,
    bank: &TestBank,
    token: &AccessToken,
    stop: u64,
) {
    let mut proof = String::new();
    let request = bank.present(kit, &token.token, &mut proof);
    let checked = bank.bank.check(&request, &bank.accounts).map(drop);
    assert!(
        matches!(
            checked,
            Err(GateError::Refused {
                refusal: GateRefusal::RevokedAtPlatform,
                ..
            })
        ),
        "the log shows the stop at {stop}, the gate: {checked:?}"
    );
}

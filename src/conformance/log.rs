//! The audit log a store keeps: entry bytes, sequence numbers, Merkle nodes, checkpoints.

use super::*;

/// The audit log: consecutive sequence numbers per commit, exact bytes, clamped reads, and
/// the Merkle nodes of complete subtrees.
pub fn audit_log<H: Harness>() {
    let h = fresh::<H>();
    let s = h.store();
    assert_eq!(s.audit_len().unwrap(), 0);
    assert_eq!(s.audit_entries(0..10).unwrap(), vec![]);
    let receipt = s
        .commit(commit(vec![], vec![record(0), record(1)]))
        .unwrap();
    assert_eq!(receipt.audit_seqs, 0..2);
    let receipt = s.commit(commit(vec![], vec![record(2)])).unwrap();
    assert_eq!(receipt.audit_seqs, 2..3);
    let bytes: Vec<Vec<u8>> = (0..3).map(|n| record(n).entry_bytes(n).unwrap()).collect();
    let stored = s.audit_bytes(0..3).unwrap();
    assert_eq!(
        stored.iter().map(|e| e.bytes.clone()).collect::<Vec<_>>(),
        bytes,
        "entries are kept as the exact bytes written"
    );
    let expected: Vec<AuditEntry> = bytes
        .iter()
        .map(|b| AuditEntry::from_bytes(b).unwrap())
        .collect();
    assert_eq!(s.audit_entries(0..3).unwrap(), expected);
    assert_eq!(s.audit_entries(1..2).unwrap(), expected[1..2].to_vec());
    assert_eq!(s.audit_entries(2..100).unwrap(), expected[2..].to_vec());
    assert_eq!(s.audit_entries(5..9).unwrap(), vec![]);
    assert_eq!(s.audit_entries(0..u64::MAX).unwrap(), expected);
    // Merkle nodes in bulk: 3 leaves, 1 complete pair, nothing above; huge ranges and levels
    // return at once.
    let leaves = s.merkle_nodes(0, 0..u64::MAX).unwrap();
    assert_eq!(
        leaves,
        (0u64..)
            .zip(&bytes)
            .map(|(i, b)| (i, merkle::leaf_hash(b)))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        s.merkle_nodes(1, 0..u64::MAX).unwrap(),
        vec![(0, merkle::node_hash(&leaves[0].1, &leaves[1].1))]
    );
    assert_eq!(s.merkle_nodes(2, 0..u64::MAX).unwrap(), vec![]);
    assert_eq!(s.merkle_nodes(200, 0..u64::MAX).unwrap(), vec![]);
    assert_eq!(Some(leaves[1].1), s.merkle_node(0, 1).unwrap());
    assert_eq!(s.merkle_node(0, 3).unwrap(), None);
    #[allow(
        clippy::reversed_empty_ranges,
        reason = "a reversed range must read nothing"
    )]
    let reversed = s.audit_entries(2..1).unwrap();
    assert_eq!(reversed, vec![]);
}

/// Checkpoints: the latest is returned; one per size (the first); never a smaller one.
pub fn checkpoints<H: Harness>() {
    let h = fresh::<H>();
    let s = h.store();
    assert_eq!(s.latest_checkpoint().unwrap(), None);
    let checkpoint = |size, note: &str| StoredCheckpoint {
        size,
        root: [size as u8; 32],
        note: note.into(),
    };
    s.record_checkpoint(&SignedCheckpoint::new(checkpoint(2, "two")))
        .unwrap();
    s.record_checkpoint(&SignedCheckpoint::new(checkpoint(5, "five")))
        .unwrap();
    assert_eq!(s.latest_checkpoint().unwrap(), Some(checkpoint(5, "five")));
    s.record_checkpoint(&SignedCheckpoint::new(checkpoint(5, "five again")))
        .unwrap();
    assert_eq!(s.latest_checkpoint().unwrap(), Some(checkpoint(5, "five")));
    assert_eq!(
        s.record_checkpoint(&SignedCheckpoint::new(checkpoint(4, "four"))),
        Err(StoreError::Conflict)
    );
    assert_eq!(s.latest_checkpoint().unwrap(), Some(checkpoint(5, "five")));
}

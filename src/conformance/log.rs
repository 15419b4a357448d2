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

/// The Merkle nodes at every level, stored or derived from the leaves (see
/// [`LogRead::derived_levels`]), equal the nodes computed here from the entries' bytes, after
/// every commit of a log grown unevenly (commits of one to five entries), whole and by range,
/// one by one and in bulk; no node of an incomplete subtree is answered.
pub fn merkle_nodes_at_every_level<H: Harness>() {
    let h = fresh::<H>();
    let s = h.store();
    let mut leaves: Vec<merkle::Hash> = Vec::new();
    for (round, size) in [1u64, 2, 3, 5, 1, 4, 2, 5, 3, 1, 5, 5, 2]
        .into_iter()
        .enumerate()
    {
        let first = leaves.len() as u64;
        let records: Vec<_> = (first..first + size).map(record).collect();
        let receipt = s.commit(commit(vec![], records)).unwrap();
        assert_eq!(receipt.audit_seqs, first..first + size);
        leaves.extend(
            (first..first + size).map(|n| merkle::leaf_hash(&record(n).entry_bytes(n).unwrap())),
        );
        let len = leaves.len() as u64;
        // Every complete subtree's root, level by level, computed from the leaves alone.
        let mut level_nodes = leaves.clone();
        for level in 0..7u32 {
            let expected: Vec<(u64, merkle::Hash)> =
                (0u64..).zip(level_nodes.iter().copied()).collect();
            assert_eq!(
                s.merkle_nodes(level, 0..u64::MAX).unwrap(),
                expected,
                "level {level} after {len} entries (commit {round})"
            );
            for (index, hash) in &expected {
                assert_eq!(s.merkle_node(level, *index).unwrap(), Some(*hash));
            }
            let past = expected.len() as u64;
            assert_eq!(
                s.merkle_node(level, past).unwrap(),
                None,
                "level {level}: incomplete"
            );
            // A range starting and ending inside the level.
            if past >= 3 {
                assert_eq!(
                    s.merkle_nodes(level, 1..past - 1).unwrap(),
                    expected[1..expected.len() - 1].to_vec()
                );
            }
            assert_eq!(s.merkle_nodes(level, past..past + 5).unwrap(), vec![]);
            level_nodes = level_nodes
                .chunks_exact(2)
                .map(|pair| merkle::node_hash(&pair[0], &pair[1]))
                .collect();
        }
    }
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

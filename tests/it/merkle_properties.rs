//! Property, exhaustive and malformed-input tests of `audit::merkle` against a naive
//! recursive reference written straight from RFC 6962 §2.1 / RFC 9162 §2.1.3.1 and §2.1.4.1
//! (its own hashing too, so a bug in the library's hashing cannot cancel out).
//!
//! Proptest runs 256 cases by default; `PROPTEST_CASES` overrides it.

use std::cell::RefCell;
use std::collections::HashSet;

use consent_broker::merkle::{
    EMPTY_ROOT, Hash, MemoryNodes, MerkleError, NodeSource, ProofError, TreeBuilder, append,
    consistency_proof, inclusion_proof, leaf_hash, node_hash, root, verify_consistency,
    verify_inclusion,
};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------------------------
// Reference implementation (RFC 6962 §2.1, RFC 9162 §2.1.3.1 / §2.1.4.1, recursive, O(n)).
// ---------------------------------------------------------------------------------------------

fn sha(parts: &[&[u8]]) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    ctx.finish().as_ref().try_into().unwrap()
}

fn ref_leaf(data: &[u8]) -> Hash {
    sha(&[&[0x00], data])
}

fn ref_node(l: &Hash, r: &Hash) -> Hash {
    sha(&[&[0x01], l, r])
}

/// Largest power of two strictly less than `n` (n >= 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D) over leaf hashes.
fn ref_mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => sha(&[]),
        1 => d[0],
        n => {
            let k = split(n);
            ref_node(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
        }
    }
}

/// PATH(m, D).
fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let k = split(n);
    if m < k {
        let mut p = ref_path(m, &d[..k]);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &d[k..]);
        p.push(ref_mth(&d[..k]));
        p
    }
}

/// Which side each PATH(m, D[0:n]) element is on (true = left sibling): the proof's "shape".
fn ref_path_shape(m: usize, n: usize) -> Vec<bool> {
    if n <= 1 {
        return vec![];
    }
    let k = split(n);
    if m < k {
        let mut p = ref_path_shape(m, k);
        p.push(false);
        p
    } else {
        let mut p = ref_path_shape(m - k, n - k);
        p.push(true);
        p
    }
}

/// SUBPROOF(m, D, b).
fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![ref_mth(d)] };
    }
    let k = split(n);
    if m <= k {
        let mut p = ref_subproof(m, &d[..k], b);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &d[k..], false);
        p.push(ref_mth(&d[..k]));
        p
    }
}

/// PROOF(m, D).
fn ref_consistency(m: usize, d: &[Hash]) -> Vec<Hash> {
    ref_subproof(m, d, true)
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// A source that records every read, to check the O(log n) bound and that nothing is read
/// twice.
struct Counting<'a> {
    inner: &'a MemoryNodes,
    reads: RefCell<Vec<(u32, u64)>>,
}

impl<'a> Counting<'a> {
    fn new(inner: &'a MemoryNodes) -> Self {
        Self {
            inner,
            reads: RefCell::new(Vec::new()),
        }
    }

    /// Number of reads since the last call; asserts none was repeated.
    fn take(&self) -> usize {
        let reads = std::mem::take(&mut *self.reads.borrow_mut());
        let distinct: HashSet<_> = reads.iter().collect();
        assert_eq!(
            distinct.len(),
            reads.len(),
            "a node was read twice: {reads:?}"
        );
        reads.len()
    }
}

impl NodeSource for Counting<'_> {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        self.reads.borrow_mut().push((level, index));
        self.inner.node(level, index)
    }
}

fn ceil_log2(n: u64) -> usize {
    (u64::BITS - n.saturating_sub(1).leading_zeros()) as usize
}

fn floor_log2(n: u64) -> usize {
    (u64::BITS - 1 - n.leading_zeros()) as usize
}

/// Builds the tree leaf by leaf through `append`, checking the nodes it writes and reads, and
/// checks `root()`, `TreeBuilder` and (where `naive_every` says so) the reference at each size.
fn build(hashes: &[Hash], naive_every: bool) -> MemoryNodes {
    let mut nodes = MemoryNodes::new();
    let mut builder = TreeBuilder::new();
    assert_eq!(builder.root(), EMPTY_ROOT);
    for (i, leaf) in hashes.iter().enumerate() {
        let size = i as u64;
        let counting = Counting::new(&nodes);
        let written = append(size, *leaf, &counting).unwrap();
        let new_size = size + 1;
        assert!(
            written.len() <= floor_log2(new_size) + 1,
            "append wrote {written:?}"
        );
        assert_eq!(written.len(), 1 + size.trailing_ones() as usize);
        assert_eq!(written.first(), Some(&(0, size, *leaf)));
        assert_eq!(counting.take(), size.trailing_ones() as usize);
        nodes.push(*leaf).unwrap();
        builder.push(*leaf);
        assert_eq!(nodes.size(), new_size);
        assert_eq!(builder.size(), new_size);

        let counting = Counting::new(&nodes);
        let r = root(new_size, &counting).unwrap();
        assert_eq!(counting.take(), new_size.count_ones() as usize);
        assert_eq!(r, builder.root(), "size {new_size}");
        if naive_every {
            assert_eq!(r, ref_mth(&hashes[..=i]), "size {new_size}");
        }
    }
    nodes
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut h = *h;
    h[bit / 8] ^= 1 << (bit % 8);
    h
}

/// Checks one inclusion proof completely and tampers with it; `bits` are the bit positions
/// to flip in every hash.
fn check_inclusion(
    nodes: &MemoryNodes,
    hashes: &[Hash],
    index: usize,
    size: usize,
    bits: &[usize],
) {
    let (i, n) = (index as u64, size as u64);
    let counting = Counting::new(nodes);
    let proof = inclusion_proof(i, n, &counting).unwrap();
    assert!(counting.take() <= 2 * ceil_log2(n), "reads for ({i}, {n})");
    assert_eq!(proof, ref_path(index, &hashes[..size]), "proof ({i}, {n})");
    assert!(proof.len() <= ceil_log2(n));
    let leaf = hashes[index];
    let r = root(n, nodes).unwrap();
    assert_eq!(verify_inclusion(i, n, &leaf, &proof, &r), Ok(()));

    let fails = |i: u64, n: u64, leaf: &Hash, proof: &[Hash], r: &Hash| {
        verify_inclusion(i, n, leaf, proof, r).is_err()
    };
    for &bit in bits {
        assert!(fails(i, n, &flip(&leaf, bit), &proof, &r), "leaf bit {bit}");
        assert!(fails(i, n, &leaf, &proof, &flip(&r, bit)), "root bit {bit}");
        for j in 0..proof.len() {
            let mut p = proof.clone();
            p[j] = flip(&p[j], bit);
            assert!(fails(i, n, &leaf, &p, &r), "proof[{j}] bit {bit}");
        }
    }
    // Another index, same everything else.
    for other in [i.wrapping_sub(1), i + 1] {
        assert!(
            fails(other, n, &leaf, &proof, &r),
            "index {other} instead of {i}"
        );
    }
    // Another size: never valid against that size's own root. Against the original root it
    // is accepted exactly when the path has the same shape, because (as in RFC 6962) a proof
    // does not authenticate the tree size; a signed tree head binds size and root.
    for other in [size - 1, size + 1] {
        if other == 0 || other > hashes.len() {
            continue;
        }
        let other_root = root(other as u64, nodes).unwrap();
        assert!(
            fails(i, other as u64, &leaf, &proof, &other_root),
            "size {other} own root"
        );
        let same_shape =
            index < other && ref_path_shape(index, other) == ref_path_shape(index, size);
        assert_eq!(
            !fails(i, other as u64, &leaf, &proof, &r),
            same_shape,
            "size {other} instead of {n} (index {i}) with the original root"
        );
    }
    // Dropping or adding an element.
    for j in 0..proof.len() {
        let mut p = proof.clone();
        p.remove(j);
        assert!(fails(i, n, &leaf, &p, &r), "dropped proof[{j}]");
    }
    for j in 0..=proof.len() {
        for extra in [leaf, r, EMPTY_ROOT] {
            let mut p = proof.clone();
            p.insert(j, extra);
            assert!(fails(i, n, &leaf, &p, &r), "inserted at {j}");
        }
    }
}

/// Checks one consistency proof completely and tampers with it.
fn check_consistency(nodes: &MemoryNodes, hashes: &[Hash], old: usize, new: usize, bits: &[usize]) {
    let (m, n) = (old as u64, new as u64);
    let counting = Counting::new(nodes);
    let proof = consistency_proof(m, n, &counting).unwrap();
    assert!(
        counting.take() <= 2 * ceil_log2(n) + 1,
        "reads for ({m}, {n})"
    );
    let want = if old == new {
        vec![]
    } else {
        ref_consistency(old, &hashes[..new])
    };
    assert_eq!(proof, want, "proof ({m}, {n})");
    assert!(proof.len() <= ceil_log2(n) + 1);
    let (r1, r2) = (root(m, nodes).unwrap(), root(n, nodes).unwrap());
    assert_eq!(verify_consistency(m, n, &r1, &r2, &proof), Ok(()));

    let fails = |m: u64, n: u64, r1: &Hash, r2: &Hash, p: &[Hash]| {
        verify_consistency(m, n, r1, r2, p).is_err()
    };
    for &bit in bits {
        assert!(fails(m, n, &flip(&r1, bit), &r2, &proof), "root1 bit {bit}");
        assert!(fails(m, n, &r1, &flip(&r2, bit), &proof), "root2 bit {bit}");
        for j in 0..proof.len() {
            let mut p = proof.clone();
            p[j] = flip(&p[j], bit);
            assert!(fails(m, n, &r1, &r2, &p), "proof[{j}] bit {bit}");
        }
    }
    if old != new {
        assert!(fails(m, n, &r2, &r1, &proof), "swapped roots");
    }
    // Another size, with that size's own root: never valid.
    let sizes = hashes.len();
    for other in [old - 1, old + 1] {
        if (1..=sizes).contains(&other) && other != old {
            let other_root = root(other as u64, nodes).unwrap();
            assert!(
                fails(other as u64, n, &other_root, &r2, &proof),
                "old {other} for {m}"
            );
        }
    }
    for other in [new - 1, new + 1] {
        if (1..=sizes).contains(&other) && other != new {
            let other_root = root(other as u64, nodes).unwrap();
            assert!(
                fails(m, other as u64, &r1, &other_root, &proof),
                "new {other} for {n}"
            );
        }
    }
    for j in 0..proof.len() {
        let mut p = proof.clone();
        p.remove(j);
        assert!(fails(m, n, &r1, &r2, &p), "dropped proof[{j}]");
    }
    for j in 0..=proof.len() {
        for extra in [r1, r2, EMPTY_ROOT] {
            let mut p = proof.clone();
            p.insert(j, extra);
            assert!(fails(m, n, &r1, &r2, &p), "inserted at {j}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

proptest! {
    // `ProptestConfig::default()` is 256 cases unless `PROPTEST_CASES` says otherwise.
    #![proptest_config(ProptestConfig::default())]

    /// Random trees of 1..=300 leaves (one more leaf is built so that `size + 1` exists).
    #[test]
    fn random_trees(
        data in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 2..=301),
        index in any::<Index>(),
        old in any::<Index>(),
        new in any::<Index>(),
        bit in 0usize..256,
    ) {
        // Leaf data is made unique by prefixing its index, as audit entries are (they carry
        // their sequence number). With two equal neighbouring leaves, a proof for one is by
        // construction also a proof for the other, so "index ± 1 fails" would not hold.
        let data: Vec<Vec<u8>> = data
            .into_iter()
            .enumerate()
            .map(|(i, d)| [&(i as u64).to_be_bytes()[..], &d].concat())
            .collect();
        let hashes: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        for (h, d) in hashes.iter().zip(&data) {
            prop_assert_eq!(*h, ref_leaf(d));
        }
        let nodes = build(&hashes, false);
        let size = hashes.len() - 1;
        prop_assert_eq!(root(size as u64, &nodes).unwrap(), ref_mth(&hashes[..size]));

        // Every inclusion proof of the tree of `size` verifies.
        let r = root(size as u64, &nodes).unwrap();
        for (i, leaf) in hashes.iter().enumerate().take(size) {
            let proof = inclusion_proof(i as u64, size as u64, &nodes).unwrap();
            prop_assert_eq!(proof.len(), ref_path_shape(i, size).len());
            prop_assert_eq!(verify_inclusion(i as u64, size as u64, leaf, &proof, &r), Ok(()));
        }
        // Every consistency proof from an older size to `size` verifies.
        for o in 1..=size {
            let proof = consistency_proof(o as u64, size as u64, &nodes).unwrap();
            let r1 = root(o as u64, &nodes).unwrap();
            prop_assert_eq!(verify_consistency(o as u64, size as u64, &r1, &r, &proof), Ok(()));
        }
        // One random leaf and one random old <= new pair in full detail.
        check_inclusion(&nodes, &hashes, index.index(size), size, &[bit]);
        let new = new.index(size) + 1;
        let old = old.index(new) + 1;
        check_consistency(&nodes, &hashes, old, new, &[bit]);
    }

    /// Verification never panics, whatever the sizes and proof: it returns a typed error (or,
    /// for an empty proof of a one-leaf tree, checks the root).
    #[test]
    fn verify_never_panics(
        a in any::<u64>(),
        b in any::<u64>(),
        near_max in any::<bool>(),
        proof in prop::collection::vec(any::<[u8; 32]>(), 0..70),
        h1 in any::<[u8; 32]>(),
        h2 in any::<[u8; 32]>(),
    ) {
        let (a, b) = if near_max { (u64::MAX - (a % 130), u64::MAX - (b % 130)) } else { (a, b) };
        let _ = verify_inclusion(a, b, &h1, &proof, &h2);
        let _ = verify_consistency(a, b, &h1, &h2, &proof);
        let _ = verify_inclusion(a % 300, b % 300, &h1, &proof, &h2);
        let _ = verify_consistency(a % 300, b % 300, &h1, &h2, &proof);
    }

    /// Proof generation never panics either: out-of-range requests are typed errors.
    #[test]
    fn proofs_never_panic(a in any::<u64>(), b in any::<u64>(), small in any::<bool>()) {
        let mut nodes = MemoryNodes::new();
        for i in 0u8..37 {
            nodes.push(leaf_hash(&[i])).unwrap();
        }
        let (a, b) = if small { (a % 45, b % 45) } else { (a, b) };
        let inclusion = inclusion_proof(a, b, &nodes);
        // A proof never needs the proven leaf itself, so the last leaf of a tree one leaf larger
        // than what is stored is still provable (its siblings all exist).
        prop_assert_eq!(inclusion.is_ok(), a < b && (b <= 37 || (b == 38 && a == 37)));
        let consistency = consistency_proof(a, b, &nodes);
        prop_assert_eq!(consistency.is_ok(), 0 < a && (a == b || (a < b && b <= 37)));
        prop_assert_eq!(root(a, &nodes).is_ok(), a <= 37);
        let _ = append(a, EMPTY_ROOT, &nodes);
    }
}

/// All sizes 1..=64: every index and every old <= new pair, compared with the reference and
/// tampered with (one bit per hash, rotating through the positions).
#[test]
fn exhaustive_up_to_64() {
    let hashes: Vec<Hash> = (0u32..65).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let nodes = build(&hashes, true);
    let (mut inclusions, mut consistencies) = (0, 0);
    for size in 1..=64 {
        for index in 0..size {
            check_inclusion(&nodes, &hashes, index, size, &[(index * 37 + size) % 256]);
            inclusions += 1;
        }
        for old in 1..=size {
            check_consistency(&nodes, &hashes, old, size, &[(old * 41 + size) % 256]);
            consistencies += 1;
        }
    }
    assert_eq!((inclusions, consistencies), (2080, 2080));
}

/// Every bit of every hash, for a few proofs of a 300-leaf tree (odd and power-of-two old
/// sizes, left and right parts).
#[test]
fn every_single_bit_flip_is_rejected() {
    let hashes: Vec<Hash> = (0u32..301).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let nodes = build(&hashes, false);
    let all: Vec<usize> = (0..256).collect();
    for (index, size) in [(0, 300), (123, 300), (299, 300), (256, 257)] {
        check_inclusion(&nodes, &hashes, index, size, &all);
    }
    for (old, new) in [(77, 300), (64, 300), (299, 300), (1, 300), (255, 256)] {
        check_consistency(&nodes, &hashes, old, new, &all);
    }
}

/// The RFC 6962 property behind the "size ± 1" caveat, pinned with a concrete case: the proof
/// of leaf 0 in a 3-leaf tree has the same shape as in a 4-leaf tree, so it also "verifies"
/// for size 4 against the 3-leaf root. That is not a forgery (the 3-leaf root is only ever
/// trusted together with size 3, from a signed tree head), but callers must not take the size
/// from anywhere else.
#[test]
fn proofs_do_not_authenticate_the_size() {
    let hashes: Vec<Hash> = (0u8..4).map(|i| leaf_hash(&[i])).collect();
    let nodes = build(&hashes, true);
    let proof = inclusion_proof(0, 3, &nodes).unwrap();
    let r3 = root(3, &nodes).unwrap();
    assert_eq!(verify_inclusion(0, 3, &hashes[0], &proof, &r3), Ok(()));
    assert_eq!(verify_inclusion(0, 4, &hashes[0], &proof, &r3), Ok(()));
    let r4 = root(4, &nodes).unwrap();
    assert_eq!(
        verify_inclusion(0, 4, &hashes[0], &proof, &r4),
        Err(ProofError::RootMismatch)
    );
}

#[test]
fn library_hashing_matches_reference() {
    assert_eq!(EMPTY_ROOT, sha(&[]));
    assert_eq!(leaf_hash(b""), ref_leaf(b""));
    let (a, b) = (ref_leaf(b"a"), ref_leaf(b"b"));
    assert_eq!(node_hash(&a, &b), ref_node(&a, &b));
}

// ---------------------------------------------------------------------------------------------
// Malformed input: typed errors, no panic.
// ---------------------------------------------------------------------------------------------

fn small_tree(n: u8) -> MemoryNodes {
    let mut nodes = MemoryNodes::new();
    for i in 0..n {
        nodes.push(leaf_hash(&[i])).unwrap();
    }
    nodes
}

#[test]
fn generation_rejects_bad_ranges() {
    let nodes = small_tree(10);
    assert_eq!(
        inclusion_proof(10, 10, &nodes),
        Err(MerkleError::IndexOutOfRange {
            index: 10,
            size: 10
        })
    );
    assert_eq!(
        inclusion_proof(0, 0, &nodes),
        Err(MerkleError::IndexOutOfRange { index: 0, size: 0 })
    );
    assert_eq!(
        inclusion_proof(u64::MAX, u64::MAX, &nodes),
        Err(MerkleError::IndexOutOfRange {
            index: u64::MAX,
            size: u64::MAX
        })
    );
    assert_eq!(
        consistency_proof(0, 5, &nodes),
        Err(MerkleError::SizeOutOfRange { old: 0, new: 5 })
    );
    assert_eq!(
        consistency_proof(0, 0, &nodes),
        Err(MerkleError::SizeOutOfRange { old: 0, new: 0 })
    );
    assert_eq!(
        consistency_proof(6, 5, &nodes),
        Err(MerkleError::SizeOutOfRange { old: 6, new: 5 })
    );
    assert_eq!(consistency_proof(7, 7, &nodes), Ok(vec![]));
    assert_eq!(consistency_proof(u64::MAX, u64::MAX, &nodes), Ok(vec![]));
}

#[test]
fn generation_beyond_the_store_is_a_missing_node() {
    let nodes = small_tree(10);
    assert_eq!(
        root(11, &nodes),
        Err(MerkleError::MissingNode {
            level: 0,
            index: 10
        })
    );
    for size in [11, 1000, u64::MAX - 1, u64::MAX] {
        assert!(matches!(
            root(size, &nodes),
            Err(MerkleError::MissingNode { .. })
        ));
        // (The proof for leaf 10 of an 11-leaf tree needs only leaves 0..10, all stored.)
        for index in [0, 9, size - 1]
            .into_iter()
            .filter(|&i| (i, size) != (10, 11))
        {
            let got = inclusion_proof(index, size, &nodes);
            assert!(
                matches!(got, Err(MerkleError::MissingNode { .. })),
                "({index}, {size}): {got:?}"
            );
        }
        for old in [1, 10, size - 1] {
            assert!(matches!(
                consistency_proof(old, size, &nodes),
                Err(MerkleError::MissingNode { .. })
            ));
        }
    }
    // An empty store cannot even supply a left sibling.
    assert_eq!(
        append(1, EMPTY_ROOT, &MemoryNodes::new()),
        Err(MerkleError::MissingNode { level: 0, index: 0 })
    );
}

#[test]
fn append_at_the_limits() {
    let empty = MemoryNodes::new();
    // A full tree cannot grow.
    assert_eq!(
        append(u64::MAX, EMPTY_ROOT, &empty),
        Err(MerkleError::IndexOutOfRange {
            index: u64::MAX,
            size: u64::MAX
        })
    );
    // u64::MAX - 1 is even: the new leaf completes nothing and reads nothing.
    assert_eq!(
        append(u64::MAX - 1, EMPTY_ROOT, &empty),
        Ok(vec![(0, u64::MAX - 1, EMPTY_ROOT)])
    );
    // 2^63 - 1 has 63 trailing ones: the first left sibling is missing.
    assert_eq!(
        append((1 << 63) - 1, EMPTY_ROOT, &empty),
        Err(MerkleError::MissingNode {
            level: 0,
            index: (1 << 63) - 2
        })
    );
}

#[test]
fn verify_inclusion_rejects_malformed_input() {
    let h = leaf_hash(b"x");
    let z = [0u8; 32];
    assert_eq!(
        verify_inclusion(0, 0, &h, &[], &h),
        Err(ProofError::IndexBeyondSize)
    );
    assert_eq!(
        verify_inclusion(5, 5, &h, &[], &h),
        Err(ProofError::IndexBeyondSize)
    );
    assert_eq!(
        verify_inclusion(6, 5, &h, &[], &h),
        Err(ProofError::IndexBeyondSize)
    );
    assert_eq!(
        verify_inclusion(u64::MAX, u64::MAX, &h, &[], &h),
        Err(ProofError::IndexBeyondSize)
    );
    assert_eq!(verify_inclusion(0, 1, &h, &[], &h), Ok(()));
    assert_eq!(
        verify_inclusion(0, 1, &h, &[h], &h),
        Err(ProofError::WrongLength {
            expected: 0,
            got: 1
        })
    );
    // Huge sizes: index 0 of a u64::MAX tree needs 64 hashes, the last leaf 63.
    assert_eq!(
        verify_inclusion(0, u64::MAX, &h, &[], &h),
        Err(ProofError::WrongLength {
            expected: 64,
            got: 0
        })
    );
    assert_eq!(
        verify_inclusion(u64::MAX - 1, u64::MAX, &h, &[z; 3], &h),
        Err(ProofError::WrongLength {
            expected: 63,
            got: 3
        })
    );
    assert_eq!(
        verify_inclusion(0, u64::MAX, &h, &[z; 64], &h),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_inclusion(u64::MAX - 1, u64::MAX, &h, &[z; 63], &h),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_inclusion(1 << 63, u64::MAX, &h, &[z; 63], &h),
        Err(ProofError::WrongLength {
            expected: 64,
            got: 63
        })
    );
    assert_eq!(
        verify_inclusion(1 << 63, u64::MAX, &h, &[z; 64], &h),
        Err(ProofError::RootMismatch)
    );
}

#[test]
fn verify_consistency_rejects_malformed_input() {
    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    let z = [0u8; 32];
    assert_eq!(
        verify_consistency(5, 4, &a, &a, &[]),
        Err(ProofError::SizeOrder)
    );
    assert_eq!(
        verify_consistency(1, 0, &a, &a, &[]),
        Err(ProofError::SizeOrder)
    );
    assert_eq!(
        verify_consistency(u64::MAX, 0, &a, &a, &[]),
        Err(ProofError::SizeOrder)
    );
    assert_eq!(
        verify_consistency(0, 0, &a, &a, &[]),
        Err(ProofError::EmptyTree)
    );
    assert_eq!(
        verify_consistency(0, 5, &a, &b, &[]),
        Err(ProofError::EmptyTree)
    );
    assert_eq!(
        verify_consistency(0, 5, &EMPTY_ROOT, &b, &[z]),
        Err(ProofError::EmptyTree)
    );
    assert_eq!(verify_consistency(3, 3, &a, &a, &[]), Ok(()));
    assert_eq!(
        verify_consistency(3, 3, &a, &b, &[]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &a, &a, &[a]),
        Err(ProofError::WrongLength {
            expected: 0,
            got: 1
        })
    );
    assert_eq!(
        verify_consistency(1, 2, &a, &b, &[]),
        Err(ProofError::WrongLength {
            expected: 1,
            got: 0
        })
    );
    assert_eq!(verify_consistency(u64::MAX, u64::MAX, &a, &a, &[]), Ok(()));
    // Huge sizes with empty, short and exact-length proofs.
    assert_eq!(
        verify_consistency(1, u64::MAX, &a, &b, &[]),
        Err(ProofError::WrongLength {
            expected: 64,
            got: 0
        })
    );
    assert_eq!(
        verify_consistency(1, u64::MAX, &a, &b, &[z; 64]),
        Err(ProofError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(u64::MAX - 1, u64::MAX, &a, &b, &[z; 2]),
        Err(ProofError::WrongLength {
            expected: 64,
            got: 2
        })
    );
    assert_eq!(
        verify_consistency(u64::MAX - 1, u64::MAX, &a, &b, &[z; 64]),
        Err(ProofError::RootMismatch)
    );
    // The old tree is the whole left half: the proof is just the right half's hash.
    assert_eq!(
        verify_consistency(1 << 63, u64::MAX, &a, &b, &[z; 63]),
        Err(ProofError::WrongLength {
            expected: 1,
            got: 63
        })
    );
    assert_eq!(
        verify_consistency(1 << 63, u64::MAX, &a, &b, &[z]),
        Err(ProofError::RootMismatch)
    );
    for (m, n) in [(u64::MAX - 1, u64::MAX), (1 << 63, u64::MAX), (3, u64::MAX)] {
        for len in 0..=130 {
            let r = verify_consistency(m, n, &a, &b, &vec![z; len]);
            assert!(
                matches!(
                    r,
                    Err(ProofError::WrongLength { .. } | ProofError::RootMismatch)
                ),
                "({m}, {n}) with {len}: {r:?}"
            );
        }
    }
}

#[test]
fn tree_builder_and_memory_nodes_start_empty() {
    let builder = TreeBuilder::new();
    assert_eq!((builder.size(), builder.root()), (0, EMPTY_ROOT));
    let nodes = MemoryNodes::new();
    assert_eq!(nodes.size(), 0);
    assert_eq!(
        nodes.node(0, 0),
        Err(MerkleError::MissingNode { level: 0, index: 0 })
    );
    assert_eq!(
        nodes.node(u32::MAX, u64::MAX),
        Err(MerkleError::MissingNode {
            level: u32::MAX,
            index: u64::MAX
        })
    );
}

/// The case proptest found: the last leaf of a tree one larger than what is stored.
#[test]
fn the_last_leaf_needs_no_stored_leaf_of_its_own() {
    let mut nodes = MemoryNodes::new();
    for i in 0u8..37 {
        nodes.push(leaf_hash(&[i])).unwrap();
    }
    assert!(inclusion_proof(37, 38, &nodes).is_ok());
    assert!(inclusion_proof(36, 38, &nodes).is_err());
    assert!(consistency_proof(37, 38, &nodes).is_err());
}

//! The RFC 6962 / RFC 9162 Merkle tree behind the tamper-evident audit log.
//!
//! # What this module owns
//!
//! * **Hashing** (RFC 6962 §2.1): [`leaf_hash`] is `SHA-256(0x00 || entry)`, [`node_hash`] is
//!   `SHA-256(0x01 || left || right)` and [`EMPTY_ROOT`] is the hash of the empty tree.
//! * **The node store abstraction**: [`NodeSource`] hands out the hashes of *complete* subtrees
//!   (node `(level, index)` covers leaves `[index·2^level, (index+1)·2^level)`). [`append`] says
//!   which nodes to store when a leaf is added; [`MemoryNodes`] is an in-memory store.
//! * **Roots and proofs** from the store: [`root`], [`inclusion_proof`] (RFC 9162 §2.1.3.1) and
//!   [`consistency_proof`] (RFC 9162 §2.1.4.1). The right edge of a tree whose size is not a
//!   power of two is never stored; it is folded from the complete subtrees that cover it.
//! * **Verification**: [`verify_inclusion`] (RFC 9162 §2.1.3.2) and [`verify_consistency`]
//!   (RFC 9162 §2.1.4.2), plus [`TreeBuilder`], a streaming root computation for re-verifying a
//!   whole log in O(log n) memory.
//!
//! # What it must never do
//!
//! * **Panic on any input.** Sizes and indices anywhere in `0..=u64::MAX`, proofs of any length
//!   and stores that lack nodes all end in a typed error ([`MerkleError`], [`ProofError`]).
//! * **Accept a proof that does not verify.** Verification follows the RFC 9162 algorithms step
//!   by step and additionally rejects proofs whose length differs from the one the sizes imply.
//! * **Read more than O(log n) nodes** for a root or a proof. A root reads one node per set bit
//!   of the size; a proof reads one node per level plus the single right-edge subtree it may
//!   need, and no node twice (see [`inclusion_proof`]).
//!
//! Note that, as in RFC 6962, a proof authenticates a leaf (or a prefix) against a *root*; it
//! does not by itself authenticate the tree size. Callers must take the size and root together
//! from the same signed tree head.
//!
//! One file of about 700 lines, on purpose: the provers and the verifiers walk the same RFC 9162
//! decomposition of a tree, and a reviewer checks each against the other side by side.
//!
//! # Example
//!
//! ```
//! use consent_broker::merkle::{
//!     MemoryNodes, inclusion_proof, leaf_hash, root, verify_inclusion,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut nodes = MemoryNodes::new();
//! for entry in [&b"a"[..], b"b", b"c"] {
//!     nodes.push(leaf_hash(entry))?;
//! }
//! let head = root(nodes.size(), &nodes)?;
//! let proof = inclusion_proof(1, 3, &nodes)?;
//! verify_inclusion(1, 3, &leaf_hash(b"b"), &proof, &head)?;
//! # Ok(())
//! # }
//! ```

use ring::digest;

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree, RFC 6962 `MTH({}) = SHA-256()`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Domain-separation prefix of leaf hashes (RFC 6962 §2.1), so a leaf can never be passed off
/// as an interior node (second-preimage resistance).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of interior node hashes (RFC 6962 §2.1).
const NODE_PREFIX: u8 = 0x01;

/// Turns a finished SHA-256 context into a [`Hash`].
fn finish(ctx: digest::Context) -> Hash {
    let digest = ctx.finish();
    let mut out = [0u8; 32];
    // SHA-256 always yields 32 bytes; zipping instead of `copy_from_slice` keeps this free of
    // any panic path even in theory.
    for (dst, src) in out.iter_mut().zip(digest.as_ref()) {
        *dst = *src;
    }
    out
}

/// The RFC 6962 leaf hash `SHA-256(0x00 || entry)` of a log entry.
#[must_use]
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(entry);
    finish(ctx)
}

/// The RFC 6962 interior node hash `SHA-256(0x01 || left || right)`.
#[must_use]
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    finish(ctx)
}

/// Errors of tree construction and proof generation (the prover side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// The [`NodeSource`] does not hold a node that the operation needs: the store is shorter
    /// than the size asked for, or it has lost data.
    #[error("merkle node (level {level}, index {index}) is not stored")]
    MissingNode {
        /// Level of the missing node (0 = leaves).
        level: u32,
        /// Index of the missing node within its level.
        index: u64,
    },
    /// A leaf index is not below the tree size (this includes every index of the empty tree),
    /// or, for [`append`], the tree already holds `u64::MAX` leaves and cannot grow.
    #[error("leaf index {index} is out of range for a tree of {size} leaves")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size it was checked against.
        size: u64,
    },
    /// A consistency proof was requested for sizes other than `0 < old <= new`.
    #[error("tree sizes out of range: old {old}, new {new} (need 0 < old <= new)")]
    SizeOutOfRange {
        /// The older (smaller) tree size.
        old: u64,
        /// The newer (larger) tree size.
        new: u64,
    },
    /// The node store itself failed (I/O, corruption, broken invariant).
    #[error("merkle node source failed: {0}")]
    Source(String),
}

/// Why a proof was rejected (the verifier side).
///
/// The variants tell the caller *which check* failed, never which hash was wrong or what the
/// expected hash would have been, so an error gives a forger nothing to iterate on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not below the tree size (every index of the empty tree included).
    #[error("leaf index is not below the tree size")]
    IndexBeyondSize,
    /// The proof has a different number of hashes than the claimed sizes require.
    #[error("proof has {got} hashes, the claimed sizes require {expected}")]
    WrongLength {
        /// Number of hashes the claimed sizes require.
        expected: usize,
        /// Number of hashes supplied.
        got: usize,
    },
    /// The proof is well-formed but the recomputed root(s) differ from the supplied one(s).
    #[error("proof does not match the supplied root")]
    RootMismatch,
    /// The first tree of a consistency proof is larger than the second.
    #[error("first tree size is larger than the second")]
    SizeOrder,
    /// A consistency proof from the empty tree: RFC 9162 defines none (it requires
    /// `0 < first`), so there is nothing that could be verified.
    #[error("consistency with the empty tree cannot be proven")]
    EmptyTree,
}

/// Where complete-subtree hashes live. Node `(level, index)` is the hash of leaves
/// `[index·2^level, (index+1)·2^level)`; level 0 holds leaf hashes.
///
/// Only complete subtrees are ever asked for; the right edge of a tree whose size is not a
/// power of two is computed from them.
pub trait NodeSource {
    /// The node, or `Err(MerkleError::MissingNode { .. })` if it is not stored.
    ///
    /// # Errors
    ///
    /// [`MerkleError::MissingNode`] if the node is not stored, [`MerkleError::Source`] if the
    /// store failed.
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError>;
}

/// The nodes to store when the leaf with hash `leaf` is appended to a tree of `size` leaves:
/// the leaf itself at `(0, size)` and every complete subtree it completes, bottom-up.
///
/// Reads only the left siblings it needs (one per trailing 1-bit of `size`, so O(log n));
/// returns `1 + size.trailing_ones()` nodes, which is amortised O(1) and at most
/// `log2(size + 1) + 1`.
///
/// # Errors
///
/// [`MerkleError::IndexOutOfRange`] if `size == u64::MAX` (the tree cannot grow), or the
/// source's error for a missing left sibling.
pub fn append(
    size: u64,
    leaf: Hash,
    source: &impl NodeSource,
) -> Result<Vec<(u32, u64, Hash)>, MerkleError> {
    // The new size must itself be representable, otherwise later roots would be unaddressable.
    if size == u64::MAX {
        return Err(MerkleError::IndexOutOfRange { index: size, size });
    }
    let mut out = Vec::with_capacity(1 + size.trailing_ones() as usize);
    out.push((0, size, leaf));
    let (mut level, mut index, mut hash) = (0u32, size, leaf);
    // Each trailing 1-bit of the index is a complete left sibling at that level, which the new
    // node now pairs up with; the first 0-bit is where the new node has no sibling yet.
    while index & 1 == 1 {
        // `index` is odd here, so `index - 1` cannot underflow.
        let left = source.node(level, index - 1)?;
        hash = node_hash(&left, &hash);
        // At most 63 iterations: `size < u64::MAX` has at most 63 trailing ones.
        level += 1;
        index >>= 1;
        out.push((level, index, hash));
    }
    Ok(out)
}

/// The largest power of two strictly below `n`, the RFC 6962 split point `k` (for `n >= 2`).
fn split_point(n: u64) -> u64 {
    // `n - 1 >= 1` has at most 63 leading zeros; saturating keeps even a misuse panic-free.
    let zeros = n.saturating_sub(1).leading_zeros().min(63);
    1u64 << (63 - zeros)
}

/// `MTH(D[start:end])` for a range that is a subtree of the RFC 6962 tree shape (its start is
/// a multiple of the smallest power of two >= its length), folded from the complete subtrees
/// that cover it: exactly `(end - start).count_ones()` reads.
fn range_hash(start: u64, end: u64, source: &impl NodeSource) -> Result<Hash, MerkleError> {
    let len = end.checked_sub(start).ok_or(MerkleError::SizeOutOfRange {
        old: start,
        new: end,
    })?;
    // Walk the set bits of `len` from the lowest: the lowest bit is the rightmost (smallest)
    // subtree, and each higher bit is a subtree to its left, hashed in as `node_hash(left, acc)`.
    let mut acc: Option<Hash> = None;
    for level in 0..u64::BITS {
        let width = 1u64 << level;
        if len & width == 0 {
            continue;
        }
        // Leaves before this subtree: all of `len`'s bits above `level`.
        let above = len & !(u64::MAX >> (63 - level));
        let offset = start
            .checked_add(above)
            .ok_or(MerkleError::IndexOutOfRange {
                index: start,
                size: end,
            })?;
        let node = source.node(level, offset >> level)?;
        acc = Some(match acc {
            None => node,
            Some(right) => node_hash(&node, &right),
        });
    }
    Ok(acc.unwrap_or(EMPTY_ROOT))
}

/// The Merkle tree hash (RFC 6962 `MTH`) of the first `size` leaves, from stored complete
/// subtrees: one read per set bit of `size` (at most 64). `size == 0` gives [`EMPTY_ROOT`].
///
/// # Errors
///
/// The source's error if a needed node is missing (e.g. `size` exceeds the stored tree).
pub fn root(size: u64, source: &impl NodeSource) -> Result<Hash, MerkleError> {
    range_hash(0, size, source)
}

/// The RFC 9162 §2.1.3.1 inclusion proof (audit path) of leaf `index` in the tree of `size`
/// leaves, ordered from the leaf's sibling up to the root's child.
///
/// The path is found by descending from the root as the RFC's recursive `PATH` does. Every
/// sibling is a complete subtree (one read) except at most one: the first time the descent
/// leaves the right edge, the sibling is the right-edge subtree, folded from its complete parts
/// (one read per set bit of its size). After that the descent is inside a complete subtree, so
/// no subtree is ever computed twice and the total stays below `2·64` reads.
///
/// # Errors
///
/// [`MerkleError::IndexOutOfRange`] if `index >= size`; the source's error if a needed node is
/// missing.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    source: &impl NodeSource,
) -> Result<Vec<Hash>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    // Siblings are found top-down but the proof lists them bottom-up.
    let mut siblings = Vec::with_capacity(64);
    let (mut lo, mut hi) = (0u64, size);
    // Invariant: lo <= index < hi, and [lo, hi) is a subtree of the RFC tree shape.
    while hi - lo > 1 {
        // mid = lo + k with k < hi - lo, so mid < hi: no overflow.
        let mid = lo + split_point(hi - lo);
        if index < mid {
            siblings.push(range_hash(mid, hi, source)?);
            hi = mid;
        } else {
            siblings.push(range_hash(lo, mid, source)?);
            lo = mid;
        }
    }
    siblings.reverse();
    Ok(siblings)
}

/// The RFC 9162 §2.1.4.1 consistency proof between sizes `old` and `new`
/// (`0 < old <= new`; `old == new` gives an empty proof).
///
/// Follows the RFC's recursive `SUBPROOF` iteratively; as in [`inclusion_proof`], at most one
/// element is a right-edge subtree folded from its parts, every other element is one stored
/// node, and no node is read twice.
///
/// # Errors
///
/// [`MerkleError::SizeOutOfRange`] unless `0 < old <= new`; the source's error if a needed
/// node is missing.
pub fn consistency_proof(
    old: u64,
    new: u64,
    source: &impl NodeSource,
) -> Result<Vec<Hash>, MerkleError> {
    if old == 0 || old > new {
        return Err(MerkleError::SizeOutOfRange { old, new });
    }
    let mut elements = Vec::with_capacity(65);
    let (mut lo, mut hi) = (0u64, new);
    // RFC `b`: true while the old tree is the whole left part of the current subtree, in which
    // case the verifier already knows its hash (it is `root1`) and it is not sent.
    let mut old_is_whole_subtree = true;
    // Invariant: lo < old <= hi (lo starts at 0 < old and only moves to a mid below old).
    while old < hi {
        // hi - lo >= 2 because lo < old < hi; mid < hi, so no overflow.
        let mid = lo + split_point(hi - lo);
        if old <= mid {
            elements.push(range_hash(mid, hi, source)?);
            hi = mid;
        } else {
            elements.push(range_hash(lo, mid, source)?);
            lo = mid;
            old_is_whole_subtree = false;
        }
    }
    if !old_is_whole_subtree {
        // `old == hi` here: the old tree's last subtree [lo, old), which the verifier must be
        // given to start from.
        elements.push(range_hash(lo, hi, source)?);
    }
    // The RFC lists the deepest element first.
    elements.reverse();
    Ok(elements)
}

/// Number of hashes in the inclusion proof of `index` in a tree of `size > index` leaves: the
/// levels below the point where the paths to `index` and to the last leaf diverge, plus one
/// left sibling per set bit of `index` above it.
fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let last = size.saturating_sub(1);
    let inner = u64::BITS - (index ^ last).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    // Both parts are at most 64, so the sum always fits.
    (inner + border) as usize
}

/// RFC 9162 §2.1.3.2: verifies that `leaf` is the leaf hash at `index` in the tree of `size`
/// leaves whose root is `root`.
///
/// # Errors
///
/// [`ProofError::IndexBeyondSize`] if `index >= size`, [`ProofError::WrongLength`] if the proof
/// length differs from the one `index` and `size` imply, [`ProofError::RootMismatch`] if the
/// recomputed root differs from `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    // Step 1.
    if index >= size {
        return Err(ProofError::IndexBeyondSize);
    }
    // Not an RFC step: the loop below detects a short or long proof too, but checking the
    // length first rejects padded or truncated proofs before hashing anything and gives the
    // caller a precise error.
    let expected = inclusion_proof_len(index, size);
    let wrong_length = ProofError::WrongLength {
        expected,
        got: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Steps 2 and 3 (`size - 1` cannot underflow: size > index >= 0).
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    // Step 4.
    for p in proof {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                // On the right border: skip the levels where this subtree has no right sibling.
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5. Roots are public values, so a plain (not constant-time) comparison is fine.
    if snode != 0 {
        return Err(wrong_length);
    }
    if r != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Number of hashes in the consistency proof between `0 < size1 < size2`.
fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let last1 = size1.saturating_sub(1);
    // Levels below the point where the paths to the last leaves of both trees diverge...
    let inner = u64::BITS - (last1 ^ size2.saturating_sub(1)).leading_zeros();
    // ...plus one left sibling per set bit of the old last leaf above it...
    let border = last1.checked_shr(inner).unwrap_or(0).count_ones();
    // ...minus the levels inside the old tree's last complete subtree, whose hash is the seed.
    let inner = inner.saturating_sub(size1.trailing_zeros());
    // The seed is sent unless the old tree is itself a complete subtree (then it is `root1`).
    let seed = u32::from(!size1.is_power_of_two());
    // Each part is at most 64, so the sum always fits.
    (seed + inner + border) as usize
}

/// RFC 9162 §2.1.4.2: verifies that the tree of `size1` leaves with root `root1` is a prefix of
/// the tree of `size2` leaves with root `root2`.
///
/// Beyond the RFC algorithm (which requires `0 < size1 < size2`): `size1 == size2` requires an
/// empty proof and `root1 == root2`; `size1 == 0` is rejected with [`ProofError::EmptyTree`],
/// as RFC 9162 defines no proof from the empty tree (and the RFC 6962 vectors expect an error).
///
/// # Errors
///
/// [`ProofError::SizeOrder`] if `size1 > size2`, [`ProofError::EmptyTree`] if `size1 == 0`,
/// [`ProofError::WrongLength`] if the proof length differs from the one the sizes imply,
/// [`ProofError::RootMismatch`] if either recomputed root differs from the supplied one.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizeOrder);
    }
    if size1 == 0 {
        return Err(ProofError::EmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                expected: 0,
                got: proof.len(),
            });
        }
        if root1 != root2 {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    // As for inclusion: the length check is not an RFC step but rejects padded or truncated
    // proofs up front (this also covers step 1, the empty proof).
    let expected = consistency_proof_len(size1, size2);
    let wrong_length = ProofError::WrongLength {
        expected,
        got: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Step 2: prepend `root1` when the old tree is a complete subtree; chained lazily instead
    // of copying the proof.
    let prefix = size1.is_power_of_two().then_some(root1);
    let mut path = prefix.into_iter().chain(proof);
    // Step 3 (`size1 - 1` cannot underflow: size1 > 0; size2 > size1).
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    // Step 4: skip the levels inside the old tree's last complete subtree.
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5.
    let Some(first) = path.next() else {
        return Err(wrong_length);
    };
    let (mut fr, mut sr) = (*first, *first);
    // Step 6.
    for c in path {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7. One error for either root, so the caller (or a forger) is not told which matched.
    if snode != 0 {
        return Err(wrong_length);
    }
    if fr != *root1 || sr != *root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// A streaming tree builder for verifying a whole log: push leaf hashes in order and read the
/// root at any point. Keeps only the roots of the complete subtrees of the current size (one
/// per set bit), so O(log n) memory.
#[derive(Debug, Clone, Default)]
pub struct TreeBuilder {
    /// Number of leaves pushed.
    size: u64,
    /// Roots of the complete subtrees that make up the tree, leftmost (largest) first; one per
    /// set bit of `size`.
    peaks: Vec<Hash>,
}

impl TreeBuilder {
    /// An empty builder (size 0, root [`EMPTY_ROOT`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the leaf hash `leaf`.
    ///
    /// A tree of `u64::MAX` leaves cannot grow; there `push` leaves the builder unchanged, so
    /// [`size`](Self::size) no longer matches the number of leaves pushed. Use
    /// [`try_push`](Self::try_push) to get that as an error.
    pub fn push(&mut self, leaf: Hash) {
        // Ignoring the error is sound: the only failure leaves `self` untouched and observable
        // through `size()` (and takes 2^64 pushes to reach).
        let _ = self.try_push(leaf);
    }

    /// Appends the leaf hash `leaf`, or reports that the tree is full.
    ///
    /// # Errors
    ///
    /// [`MerkleError::IndexOutOfRange`] if the builder already holds `u64::MAX` leaves; the
    /// builder is unchanged.
    pub fn try_push(&mut self, leaf: Hash) -> Result<(), MerkleError> {
        let new_size = self
            .size
            .checked_add(1)
            .ok_or(MerkleError::IndexOutOfRange {
                index: self.size,
                size: self.size,
            })?;
        // Same carry as `append`: each trailing 1-bit of the old size is a peak that the new
        // leaf completes into a larger subtree.
        let carries = self.size.trailing_ones() as usize;
        let keep = self
            .peaks
            .len()
            .checked_sub(carries)
            .ok_or_else(|| MerkleError::Source("tree builder lost its peaks".to_owned()))?;
        let hash = self
            .peaks
            .drain(keep..)
            .rev()
            .fold(leaf, |right, left| node_hash(&left, &right));
        self.peaks.push(hash);
        self.size = new_size;
        Ok(())
    }

    /// Number of leaves pushed so far.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the complete subtrees that make up the leaves pushed so far, leftmost
    /// (largest) first, one per set bit of [`size`](Self::size): with the size, all a verifier
    /// needs to keep of a log to go on from it ([`TreeBuilder::from_peaks`]).
    #[must_use]
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// A builder at `size` leaves whose complete subtrees have the roots `peaks` (as
    /// [`peaks`](Self::peaks) gave them); `None` unless there is one per set bit of `size`.
    #[must_use]
    pub fn from_peaks(size: u64, peaks: Vec<Hash>) -> Option<Self> {
        (peaks.len() == size.count_ones() as usize).then_some(Self { size, peaks })
    }

    /// The root of the leaves pushed so far ([`EMPTY_ROOT`] for none).
    #[must_use]
    pub fn root(&self) -> Hash {
        // Fold right to left: the smallest (rightmost) peak is hashed into its left neighbours.
        let mut peaks = self.peaks.iter().rev();
        let Some(last) = peaks.next() else {
            return EMPTY_ROOT;
        };
        peaks.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// A growable sequence kept in chunks of at most [`Chunked::CHUNK`] elements. Pushing never moves
/// what is stored: a `Vec` that doubles a log of millions of entries copies all of them at once,
/// under the lock of whoever appends, while here a full chunk is followed by a new one. A short
/// sequence costs what a `Vec` does (its first chunk grows like one).
#[derive(Debug, Clone)]
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    /// Elements per chunk.
    const CHUNK: usize = 1 << 14;

    /// How many elements are stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `value`.
    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < Self::CHUNK => last.push(value),
            _ => {
                // The first chunk grows as a `Vec` does; the later ones are made full size.
                let mut chunk = if self.chunks.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(Self::CHUNK)
                };
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// The element at `index`, if stored.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.chunks
            .get(index / Self::CHUNK)?
            .get(index % Self::CHUNK)
    }
}

/// An in-memory [`NodeSource`] that also appends: the complete-subtree hashes, by level. Used
/// by the in-memory store and in tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryNodes {
    /// `levels[l][i]` is node `(l, i)`; level `l` holds `size >> l` nodes.
    levels: Vec<Chunked<Hash>>,
    /// Number of leaves.
    size: u64,
}

impl MemoryNodes {
    /// An empty tree.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves stored.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf hash `leaf`, storing the nodes [`append`] returns.
    ///
    /// # Errors
    ///
    /// [`MerkleError::IndexOutOfRange`] if the tree is full, [`MerkleError::Source`] if the
    /// nodes do not fit the stored levels (a broken invariant). On error nothing is stored.
    pub fn push(&mut self, leaf: Hash) -> Result<(), MerkleError> {
        let nodes = append(self.size, leaf, self)?;
        // Check every node lands at the end of its level before storing any, so a failure
        // cannot leave a half-updated tree behind.
        for (level, index, _) in &nodes {
            let stored = self.level(*level).map_or(0, Chunked::len);
            if u64::try_from(stored).ok() != Some(*index) {
                return Err(MerkleError::Source(format!(
                    "node (level {level}, index {index}) does not extend its level of {stored}"
                )));
            }
        }
        for (level, _, hash) in nodes {
            let slot = usize::try_from(level)
                .map_err(|_| MerkleError::Source(format!("level {level} is not addressable")))?;
            if self.levels.len() <= slot {
                self.levels
                    .resize_with(slot.saturating_add(1), Chunked::default);
            }
            if let Some(row) = self.levels.get_mut(slot) {
                row.push(hash);
            }
        }
        // `append` refused `size == u64::MAX`, so this cannot overflow.
        self.size = self.size.saturating_add(1);
        Ok(())
    }

    /// The stored nodes of one level, if any.
    fn level(&self, level: u32) -> Option<&Chunked<Hash>> {
        usize::try_from(level)
            .ok()
            .and_then(|slot| self.levels.get(slot))
    }
}

impl NodeSource for MemoryNodes {
    fn node(&self, level: u32, index: u64) -> Result<Hash, MerkleError> {
        self.level(level)
            .zip(usize::try_from(index).ok())
            .and_then(|(row, slot)| row.get(slot))
            .copied()
            .ok_or(MerkleError::MissingNode { level, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushed across several chunk boundaries, every element is where it was put.
    #[test]
    fn a_chunked_sequence_keeps_every_element_in_place() {
        let n = 3 * Chunked::<u64>::CHUNK + 7;
        let mut seq = Chunked::default();
        for i in 0..n {
            seq.push(i as u64);
        }
        assert_eq!(seq.len(), n);
        for i in 0..n {
            assert_eq!(seq.get(i), Some(&(i as u64)), "element {i}");
        }
        assert_eq!(seq.get(n), None);
        assert_eq!(seq.get(usize::MAX), None);
    }

    /// RFC 6962's MTH, straight from the definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves {
            [] => Hash::default(),
            [one] => *one,
            _ => {
                let k = split_point(leaves.len() as u64) as usize;
                let (left, right) = leaves.split_at(k);
                node_hash(&mth(left), &mth(right))
            }
        }
    }

    /// A tree whose levels span several chunks: its roots equal MTH computed from the leaves, and
    /// inclusion proofs made from its nodes verify.
    #[test]
    fn memory_nodes_across_chunks_give_the_rfc_6962_roots() {
        let n = 2 * Chunked::<Hash>::CHUNK + 5;
        let leaves: Vec<Hash> = (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect();
        let mut nodes = MemoryNodes::new();
        for leaf in &leaves {
            nodes.push(*leaf).unwrap();
        }
        for size in [
            1,
            2,
            3,
            Chunked::<Hash>::CHUNK,
            Chunked::<Hash>::CHUNK + 1,
            n,
        ] {
            let expected = mth(leaves.get(..size).unwrap());
            assert_eq!(root(size as u64, &nodes).unwrap(), expected, "size {size}");
        }
        let top = root(n as u64, &nodes).unwrap();
        for index in [0, Chunked::<Hash>::CHUNK - 1, Chunked::<Hash>::CHUNK, n - 1] {
            let proof = inclusion_proof(index as u64, n as u64, &nodes).unwrap();
            let leaf = leaves.get(index).unwrap();
            verify_inclusion(index as u64, n as u64, leaf, &proof, &top).unwrap();
        }
    }
}

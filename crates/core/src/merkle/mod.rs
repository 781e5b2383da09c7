//! Pure RFC 6962 Merkle tree math: hashing, proof construction and proof verification.
//!
//! Nothing here does I/O. Proofs are built in two steps: [`inclusion_plan`] and
//! [`consistency_plan`] say which subtree hashes a proof is made of, as leaf ranges, and
//! [`prove`] reads the complete-subtree hashes those ranges decompose into through a
//! [`HashReader`] (the store, a test's in-memory tree, ...) and folds them into proof hashes.
//! Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency).

mod frontier;
pub mod tiles;

pub use frontier::{Frontier, FrontierError};

use sha2::{Digest, Sha256};
use std::ops::Range;

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree, SHA-256 of the empty string (RFC 6962 §2.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Leaf hash: SHA-256(0x00 || data) (RFC 6962 §2.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Interior node hash: SHA-256(0x01 || left || right) (RFC 6962 §2.1).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A complete subtree of `2^level` leaves, the `index`-th of its level: it covers leaves
/// `[index << level, (index + 1) << level)`. Complete subtrees never change once written,
/// which is what makes them storable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// Height above the leaves (0 = a leaf hash).
    pub level: u8,
    /// Position within the level.
    pub index: u64,
}

impl NodeId {
    /// The node at `level`, `index`.
    pub fn new(level: u8, index: u64) -> Self {
        NodeId { level, index }
    }
}

/// Why a proof or a proof request was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The sizes of a consistency request are out of order or zero.
    #[error("no consistency proof exists from size {size1} to size {size2}")]
    BadSizes { size1: u64, size2: u64 },
    /// The proof has the wrong number of hashes for its sizes.
    #[error("proof has {got} hashes, expected {want}")]
    WrongLength { got: usize, want: usize },
    /// The proof is well formed but does not lead to the expected root.
    #[error("proof does not match the root")]
    RootMismatch,
}

/// Reads complete-subtree hashes; implemented by the store and by test trees.
pub trait HashReader {
    /// The error a read can fail with.
    type Error: From<ProofError>;
    /// The hashes of `nodes`, in the same order. Every node lies inside the tree.
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, Self::Error>;
}

/// Largest power of two strictly less than `n` (n ≥ 2): where RFC 6962 splits a tree of n leaves.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The complete subtrees that make up leaves `range`, left to right. `range.start` must be a
/// multiple of the largest power of two ≤ its length, as every RFC 6962 subtree is, or zero.
pub fn subtree_nodes(range: Range<u64>) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let len = range.end - start;
        let level = 63 - len.leading_zeros() as u8; // largest 2^level ≤ len
        let level = if start == 0 {
            level
        } else {
            level.min(start.trailing_zeros() as u8)
        };
        nodes.push(NodeId::new(level, start >> level));
        start += 1 << level;
    }
    nodes
}

/// Folds the hashes of consecutive complete subtrees (left to right) into the hash of the
/// subtree they make up, RFC 6962 style: the right edge is combined first.
pub fn fold(hashes: &[Hash]) -> Hash {
    match hashes.split_last() {
        None => EMPTY_ROOT,
        Some((last, rest)) => rest.iter().rev().fold(*last, |acc, h| node_hash(h, &acc)),
    }
}

/// The root of a complete subtree from its 2^k hashes one row down (a full tile row). For a
/// row of another length it is the RFC 6962 (§2.1, MTH) root of the tree built over the row's
/// hashes, the largest power of two on the left, as over leaf hashes; the empty row gives
/// [`EMPTY_ROOT`]. No hash of the row is ever left out.
pub fn balanced_root(row: &[Hash]) -> Hash {
    match row.len() {
        0 => EMPTY_ROOT,
        1 => row[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&balanced_root(&row[..k]), &balanced_root(&row[k..]))
        }
    }
}

/// The leaf ranges whose subtree hashes form the inclusion proof of leaf `index` in a tree of
/// `size` leaves, leaf sibling first (RFC 6962 §2.1.1, PATH).
pub fn inclusion_plan(index: u64, size: u64) -> Result<Vec<Range<u64>>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut path = Vec::new();
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            path.push(lo + k..hi);
            hi = lo + k;
        } else {
            path.push(lo..lo + k);
            lo += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The leaf ranges whose subtree hashes form the consistency proof from `size1` to `size2`
/// (RFC 6962 §2.1.2, SUBPROOF). Sizes must satisfy 0 < size1 ≤ size2; equal sizes give an
/// empty proof.
pub fn consistency_plan(size1: u64, size2: u64) -> Result<Vec<Range<u64>>, ProofError> {
    if size1 == 0 || size1 > size2 {
        return Err(ProofError::BadSizes { size1, size2 });
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut whole) = (0, size2, true);
    let m = size1;
    loop {
        let n = hi - lo;
        let mm = m - lo;
        if mm == n {
            if !whole {
                path.push(lo..hi);
            }
            break;
        }
        let k = split(n);
        if mm <= k {
            path.push(lo + k..hi);
            hi = lo + k;
        } else {
            path.push(lo..lo + k);
            lo += k;
            whole = false;
        }
    }
    path.reverse();
    Ok(path)
}

/// Turns a plan of leaf ranges into proof hashes, reading every needed complete subtree in one
/// `read_hashes` call.
pub fn prove<R: HashReader>(plan: &[Range<u64>], reader: &R) -> Result<Vec<Hash>, R::Error> {
    let parts: Vec<Vec<NodeId>> = plan.iter().map(|r| subtree_nodes(r.clone())).collect();
    let all: Vec<NodeId> = parts.iter().flatten().copied().collect();
    let hashes = reader.read_hashes(&all)?;
    if hashes.len() != all.len() {
        return Err(ProofError::WrongLength {
            got: hashes.len(),
            want: all.len(),
        }
        .into());
    }
    let mut at = 0;
    Ok(parts
        .iter()
        .map(|p| {
            let h = fold(&hashes[at..at + p.len()]);
            at += p.len();
            h
        })
        .collect())
}

/// The root of the tree of `size` leaves.
pub fn root<R: HashReader>(size: u64, reader: &R) -> Result<Hash, R::Error> {
    let nodes = subtree_nodes(0..size);
    let hashes = reader.read_hashes(&nodes)?;
    if hashes.len() != nodes.len() {
        return Err(ProofError::WrongLength {
            got: hashes.len(),
            want: nodes.len(),
        }
        .into());
    }
    Ok(fold(&hashes))
}

/// Inclusion proof of leaf `index` in the tree of `size` leaves.
pub fn inclusion_proof<R: HashReader>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, R::Error> {
    prove(&inclusion_plan(index, size)?, reader)
}

/// Consistency proof from `size1` to `size2`.
pub fn consistency_proof<R: HashReader>(
    size1: u64,
    size2: u64,
    reader: &R,
) -> Result<Vec<Hash>, R::Error> {
    prove(&consistency_plan(size1, size2)?, reader)
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: inclusion_len(index, size),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
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
    if snode != 0 {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: inclusion_len(index, size),
        });
    }
    if &r == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The number of hashes in the inclusion proof of `index` in a tree of `size` leaves.
fn inclusion_len(index: u64, size: u64) -> usize {
    inclusion_plan(index, size).map_or(0, |p| p.len())
}

/// Verifies that the tree of `size2` leaves with `root2` extends the tree of `size1` leaves
/// with `root1` (RFC 9162 §2.1.4.2). A proof from size 0 is rejected, as the shared vectors
/// require: there is nothing to prove about an empty tree.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 == 0 || size1 > size2 {
        return Err(ProofError::BadSizes { size1, size2 });
    }
    let want = consistency_plan(size1, size2).map_or(0, |p| p.len());
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    if size1 == size2 {
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    // If size1 is a power of two, the proof omits the old root: prepend it.
    let mut path: Vec<&Hash> = proof.iter().collect();
    if size1.is_power_of_two() {
        path.insert(0, root1);
    }
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (first, rest) = path.split_first().ok_or(ProofError::WrongLength {
        got: proof.len(),
        want,
    })?;
    let (mut fr, mut sr) = (**first, **first);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want,
            });
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
    if snode != 0 {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    if &fr == root1 && &sr == root2 {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, <[u8; 32]>::from(Sha256::digest(b"")));
    }

    #[test]
    fn subtree_nodes_decompose_ranges() {
        assert_eq!(
            subtree_nodes(0..7),
            vec![NodeId::new(2, 0), NodeId::new(1, 2), NodeId::new(0, 6)]
        );
        assert_eq!(subtree_nodes(8..12), vec![NodeId::new(2, 2)]);
        assert_eq!(
            subtree_nodes(8..11),
            vec![NodeId::new(1, 4), NodeId::new(0, 10)]
        );
        assert!(subtree_nodes(5..5).is_empty());
    }

    #[test]
    fn plans_reject_bad_requests() {
        assert!(inclusion_plan(3, 3).is_err());
        assert!(consistency_plan(0, 3).is_err());
        assert!(consistency_plan(4, 3).is_err());
        assert_eq!(consistency_plan(3, 3), Ok(vec![]));
        assert_eq!(inclusion_plan(0, 1), Ok(vec![]));
    }
}

//! The right edge of an RFC 6962 tree (a compact range from 0): enough to append leaves or
//! whole subtrees and compute the root, without the rest of the tree.

use super::{fold, node_hash, Hash, EMPTY_ROOT};

/// Why a subtree cannot be appended to a [`Frontier`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontierError {
    /// The tree size is not a multiple of the subtree's width.
    #[error("a subtree of height {height} cannot start at tree size {size}")]
    OffBoundary {
        /// The tree size.
        size: u64,
        /// The subtree's height.
        height: u8,
    },
    /// The tree would pass 2^64 leaves.
    #[error("a subtree of height {height} does not fit in the tree")]
    TooLarge {
        /// The subtree's height.
        height: u8,
    },
}

/// The right edge of a Merkle tree: the hashes of the complete subtrees that make it up, largest
/// first, one per set bit of `size`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// A frontier from its parts; None when the hash count does not fit the size.
    pub fn new(size: u64, hashes: Vec<Hash>) -> Option<Frontier> {
        (hashes.len() == size.count_ones() as usize).then_some(Frontier { size, hashes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The complete-subtree hashes, largest subtree first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        // A leaf is a subtree of height 0, on its boundary at any size; a tree of 2^64 leaves
        // is out of reach.
        let _ = self.push_subtree(0, leaf);
    }

    /// Appends a complete subtree of 2^`height` leaves by its root, merging equal-sized
    /// subtrees at the right edge (RFC 6962 §2.1: a subtree is complete only on its own
    /// boundary). The size must be a multiple of 2^`height`, as it is for a full entry bundle
    /// pushed whole; otherwise, or past 2^64 leaves, nothing changes and it is an error.
    pub fn push_subtree(&mut self, height: u8, root: Hash) -> Result<(), FrontierError> {
        let width = 1u64
            .checked_shl(u32::from(height))
            .filter(|_| height < 64)
            .ok_or(FrontierError::TooLarge { height })?;
        if self.size % width != 0 {
            return Err(FrontierError::OffBoundary {
                size: self.size,
                height,
            });
        }
        let new_size = self
            .size
            .checked_add(width)
            .ok_or(FrontierError::TooLarge { height })?;
        let mut hash = root;
        let mut size = self.size >> height;
        while size & 1 == 1 {
            match self.hashes.pop() {
                Some(left) => hash = node_hash(&left, &hash),
                None => break,
            }
            size >>= 1;
        }
        self.hashes.push(hash);
        self.size = new_size;
        Ok(())
    }

    /// The RFC 6962 root of the tree.
    pub fn root(&self) -> Hash {
        if self.hashes.is_empty() {
            EMPTY_ROOT
        } else {
            fold(&self.hashes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, root, HashReader, NodeId, ProofError};

    struct Leaves(Vec<Hash>);

    impl HashReader for Leaves {
        type Error = ProofError;
        fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, ProofError> {
            Ok(nodes
                .iter()
                .map(|n| {
                    let start = (n.index << n.level) as usize;
                    let mut f = Frontier::default();
                    self.0[start..start + (1 << n.level)]
                        .iter()
                        .for_each(|h| f.push(*h));
                    f.root()
                })
                .collect())
        }
    }

    #[test]
    fn frontier_roots_match_rfc6962() {
        let leaves: Vec<Hash> = (0..70u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let reader = Leaves(leaves.clone());
        let mut f = Frontier::default();
        assert_eq!(f.root(), EMPTY_ROOT);
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.hashes().len(), f.size().count_ones() as usize);
            assert_eq!(Ok(f.root()), root(i as u64 + 1, &reader), "size {}", i + 1);
        }
        assert!(Frontier::new(3, vec![[0; 32]]).is_none());
        // Whole subtrees on their boundaries fold in like their leaves.
        let mut by_leaf = Frontier::default();
        let mut by_subtree = Frontier::default();
        for chunk in leaves[..64].chunks(8) {
            chunk.iter().for_each(|l| by_leaf.push(*l));
            by_subtree
                .push_subtree(3, root(8, &Leaves(chunk.to_vec())).expect("root"))
                .expect("on its boundary");
            assert_eq!(by_subtree, by_leaf);
        }
    }
}

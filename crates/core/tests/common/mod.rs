//! Helpers shared by the integration tests: an independent, naive RFC 6962 tree.
#![allow(dead_code)]

use btlog_core::merkle::{HashReader, NodeId, ProofError};
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// Every complete subtree hash of a tree, level by level, built with the naive node hash.
pub struct Levels(Vec<Vec<Hash>>);

impl Levels {
    pub fn new(leaves: &[Hash]) -> Levels {
        let mut levels = vec![leaves.to_vec()];
        while let Some(up) = levels.last().filter(|l| l.len() > 1).map(|l| {
            l.chunks_exact(2)
                .map(|p| naive_node(&p[0], &p[1]))
                .collect::<Vec<_>>()
        }) {
            levels.push(up);
        }
        Levels(levels)
    }
}

impl HashReader for Levels {
    type Error = ProofError;
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, ProofError> {
        Ok(nodes
            .iter()
            .map(|n| self.0[n.level as usize][n.index as usize])
            .collect())
    }
}

/// rs_merkle's hasher for RFC 6962 interior nodes: it is called on `left || right`, and the
/// leaves are handed to rs_merkle already hashed with the 0x00 prefix.
#[derive(Clone)]
pub struct Rfc6962Node;

impl rs_merkle::Hasher for Rfc6962Node {
    type Hash = [u8; 32];
    fn hash(data: &[u8]) -> [u8; 32] {
        Sha256::new()
            .chain_update([1u8])
            .chain_update(data)
            .finalize()
            .into()
    }
}

/// SHA-256(0x00 || data), written here independently of btlog.
pub fn naive_leaf(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(data)
        .finalize()
        .into()
}

/// SHA-256(0x01 || l || r).
pub fn naive_node(l: &Hash, r: &Hash) -> Hash {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(l)
        .chain_update(r)
        .finalize()
        .into()
}

fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// MTH(D[n]) of RFC 6962 §2.1, recursively, over leaf hashes.
pub fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest(b"").into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            naive_node(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]) of RFC 6962 §2.1.1.
pub fn naive_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return vec![];
    }
    let k = split(n);
    if m < k {
        let mut p = naive_path(m, &leaves[..k]);
        p.push(naive_root(&leaves[k..]));
        p
    } else {
        let mut p = naive_path(m - k, &leaves[k..]);
        p.push(naive_root(&leaves[..k]));
        p
    }
}

/// PROOF(m, D[n]) of RFC 6962 §2.1.2.
pub fn naive_consistency(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    fn sub(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole {
                vec![]
            } else {
                vec![naive_root(leaves)]
            };
        }
        let k = split(n);
        if m <= k {
            let mut p = sub(m, &leaves[..k], whole);
            p.push(naive_root(&leaves[k..]));
            p
        } else {
            let mut p = sub(m - k, &leaves[k..], false);
            p.push(naive_root(&leaves[..k]));
            p
        }
    }
    sub(m, leaves, true)
}

/// Deterministic test entry number `i`, about 128 bytes.
pub fn test_entry(i: u64) -> Vec<u8> {
    format!("btlog-test-entry {i:020} {}\n", "x".repeat(90)).into_bytes()
}

/// The directory of the package under test, read when the test runs (cargo sets
/// `CARGO_MANIFEST_DIR` for it). Not `env!`: the build cache is shared between clones at
/// different paths, and a test binary built in one clone must not read another's files.
pub fn package_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .expect("run by cargo, which sets CARGO_MANIFEST_DIR")
}

//! Property tests of the Merkle code against independent oracles: a naive recursive RFC 6962
//! implementation (tests/common), rs_merkle (roots and inclusion proofs; it keeps whole trees
//! in memory and has no consistency proofs, which is why it is an oracle and not the engine),
//! ct-merkle and tlog_tiles (consistency and inclusion verification).

mod common;

use btlog_core::merkle::{self, Hash};
use common::{naive_consistency, naive_leaf, naive_path, naive_root, Levels, Rfc6962Node};
use proptest::prelude::*;

fn leaves(n: usize, seed: u64) -> Vec<Hash> {
    (0..n as u64)
        .map(|i| naive_leaf(&[seed.to_le_bytes(), i.to_le_bytes()].concat()))
        .collect()
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut h = *h;
    h[bit / 8 % 32] ^= 1 << (bit % 8);
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn roots_and_inclusion_match_oracles(n in 1usize..600, seed: u64, pick: u64, bit in 0usize..256) {
        let leaves = leaves(n, seed);
        let tree = Levels::new(&leaves);
        let root = merkle::root(n as u64, &tree).unwrap();
        prop_assert_eq!(root, naive_root(&leaves));
        let rs = rs_merkle::MerkleTree::<Rfc6962Node>::from_leaves(&leaves);
        prop_assert_eq!(Some(root), rs.root());

        let index = (pick % n as u64) as usize;
        let proof = merkle::inclusion_proof(index as u64, n as u64, &tree).unwrap();
        prop_assert_eq!(&proof, &naive_path(index, &leaves));
        let rs_proof = rs.proof(&[index]);
        prop_assert_eq!(proof.as_slice(), rs_proof.proof_hashes());
        merkle::verify_inclusion(&leaves[index], index as u64, n as u64, &proof, &root).unwrap();

        // Independent verifier: tlog_tiles.
        let tp: Vec<tlog_tiles::Hash> = proof.iter().map(|h| tlog_tiles::Hash(*h)).collect();
        prop_assert!(tlog_tiles::check_record(&tp, n as u64, tlog_tiles::Hash(root), index as u64, tlog_tiles::Hash(leaves[index])).is_ok());

        // Every single-bit change to the proof, the root, the leaf or the index is rejected.
        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(merkle::verify_inclusion(&leaves[index], index as u64, n as u64, &bad, &root).is_err());
        }
        prop_assert!(merkle::verify_inclusion(&leaves[index], index as u64, n as u64, &proof, &flip(&root, bit)).is_err());
        prop_assert!(merkle::verify_inclusion(&flip(&leaves[index], bit), index as u64, n as u64, &proof, &root).is_err());
        let other = index as u64 ^ (1 << (bit % 12));
        if other != index as u64 {
            prop_assert!(merkle::verify_inclusion(&leaves[index], other, n as u64, &proof, &root).is_err());
        }
        // Wrong lengths: a hash removed or added.
        if let Some((_, shorter)) = proof.split_last() {
            prop_assert!(merkle::verify_inclusion(&leaves[index], index as u64, n as u64, shorter, &root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(merkle::verify_inclusion(&leaves[index], index as u64, n as u64, &longer, &root).is_err());
    }

    #[test]
    fn consistency_matches_oracles(n in 1usize..600, seed: u64, pick: u64, bit in 0usize..256) {
        let leaves = leaves(n, seed);
        let tree = Levels::new(&leaves);
        let m = (pick % n as u64) as usize + 1;
        let root_n = merkle::root(n as u64, &tree).unwrap();
        let root_m = merkle::root(m as u64, &tree).unwrap();
        let proof = merkle::consistency_proof(m as u64, n as u64, &tree).unwrap();
        prop_assert_eq!(&proof, &naive_consistency(m, &leaves[..n]));
        merkle::verify_consistency(m as u64, n as u64, &proof, &root_m, &root_n).unwrap();

        // ct-merkle builds the same proof and its verifier accepts ours.
        let mut ct = ct_merkle::mem_backed_tree::MemoryBackedTree::<sha2_011::Sha256, Vec<u8>>::new();
        let data: Vec<Vec<u8>> = (0..n as u64).map(|i| [seed.to_le_bytes(), i.to_le_bytes()].concat()).collect();
        for d in &data[..m] { ct.push(d.clone()); }
        let ct_old = ct.root();
        for d in &data[m..] { ct.push(d.clone()); }
        let ct_root = ct.root();
        prop_assert_eq!(ct_root.as_bytes().as_slice(), root_n.as_slice());
        let ct_proof = ct.prove_consistency(n - m);
        let flat = proof.concat();
        prop_assert_eq!(ct_proof.as_bytes(), flat.as_slice());
        let ours = ct_merkle::ConsistencyProof::<sha2_011::Sha256>::try_from_bytes(proof.concat()).unwrap();
        prop_assert!(ct.root().verify_consistency(&ct_old, &ours).is_ok());

        // tlog_tiles's verifier accepts it too.
        let tp: Vec<tlog_tiles::Hash> = proof.iter().map(|h| tlog_tiles::Hash(*h)).collect();
        prop_assert!(tlog_tiles::check_tree(&tp, n as u64, tlog_tiles::Hash(root_n), m as u64, tlog_tiles::Hash(root_m)).is_ok());

        for i in 0..proof.len() {
            let mut bad = proof.clone();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(merkle::verify_consistency(m as u64, n as u64, &bad, &root_m, &root_n).is_err());
        }
        prop_assert!(merkle::verify_consistency(m as u64, n as u64, &proof, &flip(&root_m, bit), &root_n).is_err());
        prop_assert!(merkle::verify_consistency(m as u64, n as u64, &proof, &root_m, &flip(&root_n, bit)).is_err());
        let other = m as u64 ^ (1 << (bit % 12));
        if other != m as u64 {
            prop_assert!(merkle::verify_consistency(other, n as u64, &proof, &root_m, &root_n).is_err());
        }
        prop_assert!(merkle::verify_consistency(0, n as u64, &proof, &root_m, &root_n).is_err());
    }

    /// Issue #13 item 14: `balanced_root` of any number of hashes is the RFC 6962 root built
    /// over them (for 2^k, the complete subtree's root), never a hash that drops some.
    #[test]
    fn balanced_root_is_the_rfc6962_root_of_any_row(n in 1usize..600, seed: u64) {
        let row = leaves(n, seed);
        prop_assert_eq!(merkle::balanced_root(&row), naive_root(&row));
    }

    /// Issue #13 item 14: `Frontier::push_subtree` appends a complete subtree only on its
    /// boundary (then as its leaves would), and refuses any other, leaving the frontier as
    /// it was, in every build (not only with debug assertions).
    #[test]
    fn frontier_push_subtree_checks_its_boundary(start in 0usize..300, height in 0u8..9, seed: u64) {
        let width = 1usize << height;
        let all = leaves(start + width, seed);
        let mut f = merkle::Frontier::default();
        for l in &all[..start] {
            f.push(*l);
        }
        let before = f.clone();
        let pushed = f.push_subtree(height, naive_root(&all[start..]));
        if start % width == 0 {
            prop_assert!(pushed.is_ok());
            prop_assert_eq!(f.size(), (start + width) as u64);
            prop_assert_eq!(f.root(), naive_root(&all));
        } else {
            prop_assert_eq!(pushed, Err(merkle::FrontierError::OffBoundary { size: start as u64, height }));
            prop_assert_eq!(f, before);
        }
    }
}

#[test]
fn frontier_refuses_subtrees_past_2_64_leaves() {
    let mut f = merkle::Frontier::default();
    for height in [64, 65, 255] {
        assert_eq!(
            f.push_subtree(height, [0; 32]),
            Err(merkle::FrontierError::TooLarge { height })
        );
    }
    f.push_subtree(63, [1; 32]).expect("2^63 leaves");
    assert_eq!(
        f.push_subtree(63, [2; 32]),
        Err(merkle::FrontierError::TooLarge { height: 63 })
    );
    assert_eq!(f.size(), 1 << 63);
}

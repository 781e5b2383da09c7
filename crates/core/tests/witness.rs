//! The tlog-witness rules (`btlog_core::witness`) against the independent naive tree: a witness
//! holding any size m cosigns exactly the checkpoints that extend it, with the real proof, and
//! refuses every altered proof, stale size and second root; request bodies round-trip.

mod common;

use btlog_core::checkpoint::Checkpoint;
use btlog_core::witness::{judge, AddCheckpoint, MalformedRequest, Refusal};
use common::{naive_consistency, naive_leaf, naive_root, Hash};
use proptest::prelude::*;

fn leaves(n: usize) -> Vec<Hash> {
    (0..n).map(|i| naive_leaf(&i.to_be_bytes())).collect()
}

fn cp(leaves: &[Hash]) -> Checkpoint {
    Checkpoint {
        origin: "log.example/x".into(),
        size: leaves.len() as u64,
        root: naive_root(leaves),
    }
}

proptest! {
    #[test]
    fn a_witness_cosigns_exactly_the_extensions_of_what_it_holds(
        (m, n) in (1usize..80).prop_flat_map(|n| (1..=n, Just(n))),
        flip in any::<(usize, u8)>(),
    ) {
        let all = leaves(n);
        let held = Some((m as u64, naive_root(&all[..m])));
        let proof = naive_consistency(m, &all);
        prop_assert_eq!(judge(held, m as u64, &proof, &cp(&all)), Ok(()));
        // Any altered proof hash is refused with 422 (same size has an empty proof).
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = flip.0 % bad.len();
            bad[i][flip.1 as usize % 32] ^= 1;
            let refused = judge(held, m as u64, &bad, &cp(&all)).expect_err("altered proof");
            prop_assert_eq!(refused.status(), 422);
        }
        // Another old size is stale: 409 with the held size.
        let stale = judge(held, m as u64 - 1, &proof, &cp(&all)).expect_err("stale");
        prop_assert_eq!(stale.known_size(), Some(m as u64));
        // Another tree of the held size is a fork.
        let mut other = all[..m].to_vec();
        other[0] = naive_leaf(b"fork");
        let fork = judge(held, m as u64, &[], &cp(&other)).expect_err("fork");
        prop_assert!(fork.is_fork());
        prop_assert_eq!(fork.status(), 409);
    }

    #[test]
    fn request_bodies_round_trip(old in any::<u64>(), k in 0usize..64, note in "[a-z]{1,8}\n[0-9]{1,4}\n") {
        let req = AddCheckpoint { old, proof: vec![[9u8; 32]; k], checkpoint: note };
        let text = req.format();
        match AddCheckpoint::parse(text.as_bytes()) {
            Ok(back) => prop_assert_eq!(back, req),
            Err(e) => prop_assert!(k > 63, "{e}"),
        }
    }
}

#[test]
fn the_spec_order_of_checks() {
    let all = leaves(8);
    // old larger than the checkpoint: 400, before anything else.
    assert!(matches!(
        judge(None, 9, &[], &cp(&all)),
        Err(Refusal::OldAfterSize { old: 9, size: 8 })
    ));
    // Nothing held: old must be 0 and the proof empty.
    assert_eq!(judge(None, 0, &[], &cp(&all)), Ok(()));
    assert_eq!(
        judge(None, 3, &[], &cp(&all)).map_err(|r| r.status()),
        Err(409)
    );
    assert_eq!(
        judge(None, 0, &[[0; 32]], &cp(&all)).map_err(|r| r.status()),
        Err(422)
    );
    for bad in [
        "old 1",
        "old 01\n\nx",
        "old -1\n\nx",
        "new 1\n\nx",
        "old 1\nAAAA\n\nx",
    ] {
        assert!(
            matches!(
                AddCheckpoint::parse(bad.as_bytes()),
                Err(MalformedRequest(_))
            ),
            "{bad:?}"
        );
    }
}

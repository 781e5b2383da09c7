//! C2SP tlog-policy: the spec's example parses and is evaluated as it says (groups, thresholds,
//! `quorum none`), every malformed policy is refused with its line, the log's key never counts
//! as a witness, and `max_age` refuses a quorum met only by old cosignatures.

use btlog_core::checkpoint::Checkpoint;
use btlog_core::keys;
use btlog_core::note::{Note, Signer};
use btlog_core::policy::{Policy, QuorumError};

const NOW: u64 = 1_800_000_000;

fn log() -> Signer {
    let seed = [7u8; 32];
    Signer::new(
        "log.example/l",
        ed25519_dalek::SigningKey::from_bytes(&seed),
    )
    .expect("log")
}

fn witness(name: &str, seed: u8) -> Signer {
    Signer::cosigner(name, ed25519_dalek::SigningKey::from_bytes(&[seed; 32])).expect("witness")
}

/// The checkpoint signed by the log and cosigned by `by` at the given ages.
fn checkpoint(by: &[(&Signer, u64)]) -> String {
    let at: Vec<(&Signer, u64)> = by.iter().map(|(w, age)| (*w, NOW - age)).collect();
    cosigned_at(&at)
}

/// The checkpoint signed by the log and cosigned by `by` at the given timestamps.
fn cosigned_at(by: &[(&Signer, u64)]) -> String {
    let text = Checkpoint {
        origin: "log.example/l".into(),
        size: 10,
        root: [3; 32],
    }
    .sign(&log())
    .expect("sign");
    let mut note = Note::parse(text.as_bytes()).expect("note");
    for (w, time) in by {
        note.cosign(w, *time).expect("cosign");
    }
    note.format()
}

fn xs_and_ys() -> (Vec<Signer>, Vec<Signer>, Policy) {
    let xs: Vec<Signer> = (1..=3)
        .map(|i| witness(&format!("x{i}.example"), i))
        .collect();
    let ys: Vec<Signer> = (1..=3)
        .map(|i| witness(&format!("y{i}.example"), 10 + i))
        .collect();
    let mut text = format!("# the spec's example\nlog {}\n\n", log().verifier().vkey());
    for (i, w) in xs.iter().enumerate() {
        text.push_str(&format!("witness X{} {}\n", i + 1, w.verifier().vkey()));
    }
    text.push_str("group X-witnesses 2 X1 X2 X3\n\n");
    for (i, w) in ys.iter().enumerate() {
        text.push_str(&format!(
            "  witness\tY{} {} https://y.example/w\n",
            i + 1,
            w.verifier().vkey()
        ));
    }
    text.push_str("group Y-witnesses any Y1 Y2 Y3\ngroup X-and-Y all X-witnesses Y-witnesses\nquorum X-and-Y\n");
    (xs, ys, Policy::parse(text.as_bytes()).expect("policy"))
}

#[test]
fn the_spec_example_needs_two_xs_and_one_y() {
    let (xs, ys, policy) = xs_and_ys();
    let ok = checkpoint(&[(&xs[0], 5), (&xs[2], 5), (&ys[1], 5)]);
    assert_eq!(
        policy.check(&ok, NOW, None).expect("met"),
        vec!["X1", "X3", "Y2"]
    );
    for short in [
        checkpoint(&[(&xs[0], 5), (&ys[0], 5)]),
        checkpoint(&[(&xs[0], 5), (&xs[1], 5), (&xs[2], 5)]),
        checkpoint(&[]),
    ] {
        assert!(matches!(
            policy.check(&short, NOW, None),
            Err(QuorumError::NotMet { .. })
        ));
    }
    // Old cosignatures: with a maximum age the quorum must be met by fresh ones.
    let old = checkpoint(&[(&xs[0], 5), (&xs[1], 7200), (&ys[0], 5)]);
    assert!(policy.check(&old, NOW, None).is_ok());
    let e = policy.check(&old, NOW, Some(3600)).expect_err("stale");
    assert!(matches!(e, QuorumError::Stale { .. }), "{e}");
    assert!(e.to_string().contains("X2 7200 s"), "{e}");
    // A timestamp in the future is not fresh (it would stay fresh forever).
    let future = checkpoint(&[(&xs[0], 5), (&xs[1], 5), (&ys[0], 0)]);
    let later = NOW + 86_400;
    assert!(
        policy.check(&future, later, Some(3600)).is_err(),
        "a day later, stale"
    );
    let ahead = cosigned_at(&[
        (&xs[0], NOW + 100_000),
        (&xs[1], NOW + 100_000),
        (&ys[0], NOW + 100_000),
    ]);
    assert!(
        policy.check(&ahead, NOW, None).is_ok(),
        "counted without a maximum age"
    );
    assert!(matches!(
        policy.check(&ahead, NOW, Some(3600)),
        Err(QuorumError::Stale { .. })
    ));
    // A cosignature by a listed witness that does not verify refuses the note.
    let mut forged = checkpoint(&[(&xs[0], 5), (&xs[1], 5), (&ys[0], 5)]);
    let at = forged.rfind("y1.example ").expect("line") + "y1.example ".len() + 10;
    forged.replace_range(
        at..at + 1,
        if &forged[at..at + 1] == "A" { "B" } else { "A" },
    );
    assert!(policy.check(&forged, NOW, None).is_err());
    // Another log, or the right log name with another key: not from the policy's log.
    let other = Signer::new(
        "log.example/l",
        ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
    )
    .expect("key");
    let text = Checkpoint {
        origin: "log.example/l".into(),
        size: 1,
        root: [0; 32],
    }
    .sign(&other)
    .expect("sign");
    assert!(matches!(
        policy.check(&text, NOW, None),
        Err(QuorumError::NotFromLog(_))
    ));
}

#[test]
fn quorum_none_and_single_witness() {
    let w = witness("w.example", 1);
    let none = format!("log {}\nquorum none\n", log().verifier().vkey());
    assert!(Policy::parse(none.as_bytes())
        .expect("none")
        .check(&checkpoint(&[]), NOW, None)
        .is_ok());
    let one = format!(
        "log {}\nwitness W {}\nquorum W\n",
        log().verifier().vkey(),
        w.verifier().vkey()
    );
    let p = Policy::parse(one.as_bytes()).expect("one");
    assert!(p.check(&checkpoint(&[]), NOW, None).is_err());
    assert!(p.check(&checkpoint(&[(&w, 1)]), NOW, Some(60)).is_ok());
}

#[test]
fn malformed_policies_are_refused_with_their_line() {
    let l = log().verifier().vkey();
    let w = witness("w.example", 1).verifier().vkey();
    let w2 = witness("w2.example", 2).verifier().vkey();
    // The log's key given as a witness (as a cosignature key over the same public key).
    let log_as_witness = Signer::cosigner(
        "log.example/l",
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
    )
    .expect("key")
    .verifier()
    .vkey();
    let generated = keys::generate("z.example").expect("key").verifier().vkey();
    for (text, line) in [
        (format!("log {l}\n"), 0),
        (format!("log {l}\nquorum W\n"), 2),
        (format!("log {l}\nwitness W {w}\nquorum W\nquorum W\n"), 4),
        (format!("log {l}\nlog {l}\nquorum none\n"), 2),
        (
            format!("log {l}\nwitness W {w}\nwitness V {w}\nquorum W\n"),
            3,
        ),
        (
            format!("log {l}\nwitness W {w}\nwitness W {w2}\nquorum W\n"),
            3,
        ),
        (format!("log {l}\nwitness W {generated}\nquorum W\n"), 2),
        (format!("log {w}\nquorum none\n"), 1),
        (
            format!("log {l}\nwitness L {log_as_witness}\nquorum L\n"),
            2,
        ),
        (
            format!("log {l}\nwitness W {w}\ngroup G 2 W\nquorum G\n"),
            3,
        ),
        (
            format!("log {l}\nwitness W {w}\ngroup G 0 W\nquorum G\n"),
            3,
        ),
        (
            format!("log {l}\nwitness W {w}\ngroup G any W W\nquorum G\n"),
            3,
        ),
        (
            format!("log {l}\nwitness W {w}\ngroup G any\nquorum G\n"),
            3,
        ),
        (
            format!("log {l}\nwitness W {w}\ngroup G any H\ngroup H any W\nquorum G\n"),
            3,
        ),
        (format!("log {l}\nwitness none {w}\nquorum none\n"), 2),
        (
            format!("log {l}\nwitness W {w}\ngroup none any W\nquorum none\n"),
            3,
        ),
        (format!("log {l}\nquorum none\nwhat is this\n"), 3),
        (format!("log {l}\r\nquorum none\n"), 0),
    ] {
        let e = Policy::parse(text.as_bytes()).expect_err(&text);
        assert_eq!(e.line, line, "{text:?}: {e}");
    }
}

/// Groups of earlier groups, doubling at every level: evaluated once each (this took 2^60
/// steps when shared subgroups were re-evaluated).
#[test]
fn deeply_shared_groups_are_evaluated_once() {
    let w = witness("w.example", 1);
    let mut text = format!(
        "log {}\nwitness W {}\ngroup g0 any W\ngroup h0 any W\n",
        log().verifier().vkey(),
        w.verifier().vkey()
    );
    for i in 1..60 {
        text.push_str(&format!(
            "group g{i} any g{} h{}\ngroup h{i} any g{} h{}\n",
            i - 1,
            i - 1,
            i - 1,
            i - 1
        ));
    }
    text.push_str("quorum g59\n");
    let p = Policy::parse(text.as_bytes()).expect("policy");
    assert!(p.check(&checkpoint(&[(&w, 1)]), NOW, None).is_ok());
    assert!(p.check(&checkpoint(&[]), NOW, None).is_err());
}

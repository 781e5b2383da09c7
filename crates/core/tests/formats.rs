//! Wire formats (PROTOCOL.md §2, §3, §5): known answers, strict parsing, interop with Cloudflare's
//! `signed_note`, and property tests (round trips; mutated encodings never panic and never parse
//! as a different value).

use btlog_core::checkpoint::{Checkpoint, CheckpointError};
use btlog_core::entry::{
    Entry, EntryData, EntryError, EntryFields, Identity, Kind, MAX_ENTRY_BYTES,
};
use btlog_core::keys::{self, KeyError};
use btlog_core::merkle::{leaf_hash, node_hash, Hash, EMPTY_ROOT};
use btlog_core::note::{KeyType, Note, NoteError, Signer, Verifier, MAX_SIGNATURES};
use btlog_core::proof_bundle::{ArtifactClaim, ProofBundleError, TlogProof};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;

// C2SP signed-note §Example (vkey and note), and golang.org/x/mod/sumdb/note's documentation.
const C2SP_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const C2SP_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
const GO_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

const ORIGIN: &str = "example.com/btlog";

fn signer(name: &str, seed: u8) -> Signer {
    Signer::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

fn cosigner(name: &str, seed: u8) -> Signer {
    Signer::cosigner(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
}

fn verifies(note: &[u8], vkey: &Verifier) -> bool {
    Note::parse(note).is_ok_and(|n| n.verify(&[vkey]).is_ok())
}

/// Replaces byte `i` (ASCII) with another printable ASCII byte.
fn flip(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    out
}

// ---------------------------------------------------------------------------------------------
// Signed notes (PROTOCOL.md §3)

#[test]
fn c2sp_example_verifies() {
    let vkey = Verifier::parse(C2SP_VKEY).unwrap();
    assert_eq!(vkey.name(), "example.com/foo");
    assert_eq!(vkey.key_id(), 0x530d903a);
    assert_eq!(vkey.vkey(), C2SP_VKEY);
    let note = Note::parse(C2SP_NOTE.as_bytes()).unwrap();
    assert_eq!(note.text(), "This is an example message.\n");
    assert_eq!(note.format(), C2SP_NOTE);
    let verified = note.verify(&[&vkey]).unwrap();
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0].name, "example.com/foo");
}

#[test]
fn c2sp_example_one_character_changes_fail() {
    let vkey = Verifier::parse(C2SP_VKEY).unwrap();
    let note = C2SP_NOTE.as_bytes();
    for i in (0..note.len()).filter(|&i| note[i].is_ascii() && note[i] != b'\n') {
        assert!(!verifies(&flip(note, i), &vkey), "note byte {i} changed");
    }
    let key = C2SP_VKEY.as_bytes();
    for i in 0..key.len() {
        let changed = String::from_utf8(flip(key, i)).unwrap();
        let ok = Verifier::parse(&changed).is_ok_and(|v| verifies(note, &v));
        assert!(!ok, "vkey byte {i} changed");
    }
}

#[test]
fn go_sumdb_note_known_answer() {
    let s = keys::parse_private_key(GO_SKEY).unwrap();
    assert_eq!(s.verifier().vkey(), GO_VKEY);
    assert_eq!(keys::format_private_key(&s), GO_SKEY);
    let mut note = Note::new(GO_TEXT).unwrap();
    note.sign(&s).unwrap();
    assert_eq!(note.format(), format!("{GO_TEXT}\n{GO_SIG}"));
    // Signing again replaces the signature by the same key.
    note.sign(&s).unwrap();
    assert_eq!(note.signatures().len(), 1);
}

#[test]
fn unknown_signatures_are_ignored_and_bad_known_ones_reject() {
    let (log, other) = (signer(ORIGIN, 1), signer("other.example", 2));
    let mut note = Note::new("hello\n").unwrap();
    note.sign(&other).unwrap();
    note.sign(&log).unwrap();
    let text = note.format();
    let vkey = log.verifier();
    assert_eq!(
        Note::parse(text.as_bytes())
            .unwrap()
            .verify(&[&vkey])
            .unwrap()
            .len(),
        1
    );
    // Only unknown keys: rejected.
    let unknown = signer("nobody", 3).verifier();
    let parsed = Note::parse(text.as_bytes()).unwrap();
    assert_eq!(parsed.verify(&[&unknown]), Err(NoteError::NoKnownSignature));
    // Same name, other key: a different key id, so ignored; same name and id, wrong key: fails.
    let same_name = signer(ORIGIN, 9).verifier();
    assert_eq!(
        parsed.verify(&[&same_name]),
        Err(NoteError::NoKnownSignature)
    );
    let mut forged = Note::new("hello\n").unwrap();
    forged.sign(&log).unwrap();
    let forged = forged.format().replace("hello", "jello");
    let err = Note::parse(forged.as_bytes()).unwrap().verify(&[&vkey]);
    assert!(matches!(err, Err(NoteError::BadSignature { .. })));
}

#[test]
fn many_signatures_accepted_up_to_the_limit() {
    let mut note = Note::new("text\n").unwrap();
    for i in 0..MAX_SIGNATURES {
        note.sign(&signer(&format!("w{i}.example"), i as u8))
            .unwrap();
    }
    let text = note.format();
    let parsed = Note::parse(text.as_bytes()).unwrap();
    let v = signer("w57.example", 57).verifier();
    assert_eq!(parsed.verify(&[&v]).unwrap().len(), 1);
    assert_eq!(
        note.sign(&signer("one-too-many", 200)),
        Err(NoteError::TooManySignatures)
    );
    let extra = format!("{text}{}", parsed.signatures()[0].format_line());
    assert_eq!(
        Note::parse(extra.as_bytes()),
        Err(NoteError::TooManySignatures)
    );
}

#[test]
fn malformed_notes_are_rejected() {
    let sig = &C2SP_NOTE[C2SP_NOTE.find('\u{2014}').unwrap()..];
    let cases: &[&str] = &[
        "",
        "text\n",
        "text\n\n",
        "text\n— example.com/foo AAAAAAA=\n",
        "text\n\n— example.com/foo AAAAAA==\n",
        "text\n\n— example.com/foo AAAAAAA=",
        "text\n\n- example.com/foo AAAAAAA=\n",
        "text\n\n—  example.com/foo AAAAAAA=\n",
        "text\n\n— a+b AAAAAAA=\n",
        "text\n\n— example.com/foo AAAAAAA\n",
        "text\n\n— example.com/foo AAAAAAB=\n",
        "te\txt\n\n— example.com/foo AAAAAAA=\n",
        "text\r\n\n— example.com/foo AAAAAAA=\n",
        "text\n\n— example.com/foo AAAAAAA=\n\n",
    ];
    for case in cases {
        assert!(Note::parse(case.as_bytes()).is_err(), "{case:?}");
    }
    let big = format!("{}\n\n{sig}", "a".repeat(64 * 1024));
    assert!(matches!(
        Note::parse(big.as_bytes()),
        Err(NoteError::TooLarge(_))
    ));
    assert_eq!(Note::new("no newline"), Err(NoteError::BadText));
}

#[test]
fn cosignatures_verify_with_a_cosigner_vkey() {
    let (log, witness) = (signer(ORIGIN, 1), cosigner("witness.example/w1", 4));
    let body = Checkpoint {
        origin: ORIGIN.into(),
        size: 5,
        root: [7; 32],
    };
    let mut note = Note::parse(body.sign(&log).unwrap().as_bytes()).unwrap();
    note.cosign(&witness, 1_679_315_147).unwrap();
    let wv = Verifier::parse(&witness.verifier().vkey()).unwrap();
    assert_eq!(wv.key_type(), KeyType::Cosignature);
    let text = note.format();
    let parsed = Note::parse(text.as_bytes()).unwrap();
    let verified = parsed.verify(&[&log.verifier(), &wv]).unwrap();
    assert_eq!(verified.len(), 2);
    assert_eq!(verified[1].timestamp, Some(1_679_315_147));
    assert_eq!(parsed.signatures()[1].bytes.len(), 72);
    // The log's checkpoint verification ignores the cosignature.
    assert!(Checkpoint::verify(text.as_bytes(), &log.verifier()).is_ok());
    // An Ed25519 verifier with the witness's key does not match the cosignature's key id.
    let plain = Verifier::new(wv.name(), KeyType::Ed25519, *wv.public_key()).unwrap();
    assert_eq!(parsed.verify(&[&plain]), Err(NoteError::NoKnownSignature));
    // A changed timestamp breaks the cosignature.
    let mut tampered = parsed.clone();
    let mut sigs = tampered.signatures().to_vec();
    sigs[1].bytes[7] ^= 1;
    tampered = rebuild(&tampered, sigs);
    assert!(matches!(
        tampered.verify(&[&wv]),
        Err(NoteError::BadSignature { .. })
    ));
    // Key types are not interchangeable.
    assert!(note.sign(&witness).is_err());
    assert!(note.cosign(&log, 1).is_err());
    assert_eq!(
        note.cosign(&witness, 1 << 63),
        Err(NoteError::TimestampTooLarge)
    );
}

fn rebuild(note: &Note, sigs: Vec<btlog_core::note::Signature>) -> Note {
    let mut text = format!("{}\n", note.text());
    for s in sigs {
        text.push_str(&s.format_line());
    }
    Note::parse(text.as_bytes()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Checkpoints (PROTOCOL.md §3)

fn checkpoint(size: u64) -> Checkpoint {
    Checkpoint {
        origin: ORIGIN.into(),
        size,
        root: [0xab; 32],
    }
}

#[test]
fn checkpoint_sign_and_verify() {
    let log = signer(ORIGIN, 1);
    let cp = checkpoint(42);
    let text = cp.sign(&log).unwrap();
    assert!(text.starts_with(&format!("{ORIGIN}\n42\n")));
    let (parsed, note) = Checkpoint::verify(text.as_bytes(), &log.verifier()).unwrap();
    assert_eq!(parsed, cp);
    assert_eq!(note.format(), text);
    let other = signer(ORIGIN, 2).verifier();
    assert!(matches!(
        Checkpoint::verify(text.as_bytes(), &other),
        Err(CheckpointError::Signature(NoteError::NoKnownSignature))
    ));
    let wrong_name = signer("other.example", 1);
    assert!(matches!(
        cp.sign(&wrong_name),
        Err(CheckpointError::OriginMismatch { .. })
    ));
    assert!(matches!(
        Checkpoint::verify(text.as_bytes(), &wrong_name.verifier()),
        Err(CheckpointError::OriginMismatch { .. })
    ));
}

#[test]
fn checkpoint_bodies_are_strict() {
    let root = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=";
    assert_eq!(
        Checkpoint::parse_body(&format!("{ORIGIN}\n0\n{root}\n")).unwrap(),
        checkpoint(0)
    );
    let bad = [
        (
            format!("{ORIGIN}\n1\n{root}\next\n"),
            CheckpointError::ExtensionLines,
        ),
        (format!("{ORIGIN}\n01\n{root}\n"), CheckpointError::BadSize),
        (format!("{ORIGIN}\n+1\n{root}\n"), CheckpointError::BadSize),
        (
            format!("{ORIGIN}\n18446744073709551616\n{root}\n"),
            CheckpointError::BadSize,
        ),
        (
            format!("{ORIGIN}\n1\n{}\n", &root[1..]),
            CheckpointError::BadRoot,
        ),
        (
            format!("{ORIGIN}\n1\n{root}"),
            CheckpointError::MissingNewline,
        ),
        (
            format!("{ORIGIN}\n1\n"),
            CheckpointError::MissingLine("root hash"),
        ),
        (
            format!("bad origin\n1\n{root}\n"),
            CheckpointError::InvalidOrigin,
        ),
    ];
    for (body, err) in bad {
        assert_eq!(Checkpoint::parse_body(&body), Err(err), "{body:?}");
    }
}

#[test]
fn interop_btlog_checkpoints_verify_with_signed_note() {
    use signed_note::{StandardVerifier, VerifierList};
    let log = keys::generate(ORIGIN).unwrap();
    let text = checkpoint(7).sign(&log).unwrap();
    let theirs = signed_note::Note::from_bytes(text.as_bytes()).unwrap();
    let verifier = StandardVerifier::new(&log.verifier().vkey()).unwrap();
    let list = VerifierList::new(vec![Box::new(verifier)]);
    let (verified, _) = theirs.verify(&list).unwrap();
    assert_eq!(verified.len(), 1);
    assert_eq!(theirs.to_bytes(), text.as_bytes());
}

#[test]
fn interop_signed_note_notes_verify_with_btlog() {
    use signed_note::{Signer as _, StandardSigner};
    let (skey, vkey) = signed_note::generate_key(&mut rand::rngs::OsRng, ORIGIN);
    let theirs = StandardSigner::new(&skey).unwrap();
    let body = checkpoint(9).body();
    let mut note = signed_note::Note::new(body.as_bytes(), &[]).unwrap();
    note.add_sigs(&[&theirs]).unwrap();
    let bytes = note.to_bytes();
    let verifier = keys::parse_vkey(&vkey).unwrap();
    let (cp, _) = Checkpoint::verify(&bytes, &verifier).unwrap();
    assert_eq!(cp, checkpoint(9));
    // Their private key file text loads here and signs identically (Ed25519 is deterministic).
    let ours = keys::parse_private_key(&skey).unwrap();
    assert_eq!(ours.key_id(), theirs.key_id());
    assert_eq!(checkpoint(9).sign(&ours).unwrap().as_bytes(), bytes);
}

// ---------------------------------------------------------------------------------------------
// Key text (PROTOCOL.md §3)

#[test]
fn malformed_private_keys() {
    let cases = [
        GO_SKEY.replace("PRIVATE+KEY+", "PUBLIC+KEY+"),
        GO_SKEY.replace("c74f20a3", "c74f20a4"),
        GO_SKEY.replace("c74f20a3", "C74F20A3"),
        GO_SKEY.replace("AYEK", "AYE*"),
        GO_SKEY.replace("+AYEK", "+AoEK"),
        GO_SKEY.replace("+AYEK", "+"),
        GO_SKEY.replace("PeterNeumann", ""),
        "PRIVATE+KEY+name".to_string(),
    ];
    for case in &cases {
        assert!(keys::parse_private_key(case).is_err(), "{case}");
    }
    assert!(matches!(
        keys::parse_private_key(&cases[1]),
        Err(KeyError::KeyIdMismatch { .. })
    ));
    assert!(keys::parse_private_key(&format!("{GO_SKEY}\n")).is_ok());
    assert!(keys::parse_vkey(&GO_VKEY.replace("c74f20a3", "c74f20a4")).is_err());
}

// ---------------------------------------------------------------------------------------------
// Entries (PROTOCOL.md §2)

fn sample() -> EntryData {
    EntryData {
        kind: Kind::Publish,
        registry: "registry.npmjs.org".into(),
        package: "pkg:npm/%40scope/left-pad".into(),
        version: "1.3.0".into(),
        file: "left-pad-1.3.0.tgz".into(),
        sha256: [0x5f; 32],
        sha512: None,
        size: Some(10234),
        publisher: Some(
            "github.com/scope/left-pad/.github/workflows/release.yml@refs/tags/v1.3.0".into(),
        ),
        provenance: Some([0x9c; 32]),
        time: Some("2026-11-21T12:00:00Z".into()),
    }
}

fn sample_text() -> String {
    String::from_utf8(Entry::new(sample()).unwrap().encode()).unwrap()
}

#[test]
fn entry_encodes_as_in_the_spec() {
    let want = format!(
        "btlog-entry/v1\nkind publish\nregistry registry.npmjs.org\npackage pkg:npm/%40scope/left-pad\n\
         version 1.3.0\nfile left-pad-1.3.0.tgz\nsha256 {}\nsize 10234\n\
         publisher github.com/scope/left-pad/.github/workflows/release.yml@refs/tags/v1.3.0\n\
         provenance sha256:{}\ntime 2026-11-21T12:00:00Z\n",
        "5f".repeat(32),
        "9c".repeat(32)
    );
    assert_eq!(sample_text(), want);
    let entry = Entry::parse(want.as_bytes()).unwrap();
    assert_eq!(entry.data(), &sample());
    assert_eq!(entry.leaf_hash(), leaf_hash(want.as_bytes()));
}

#[test]
fn every_kind_round_trips() {
    for kind in Kind::ALL {
        let mut data = sample();
        data.kind = kind;
        data.sha512 = Some([0xee; 64]);
        if kind.is_owner() {
            data.version = "-".into();
            data.file = "-".into();
        }
        let entry = Entry::new(data.clone()).unwrap();
        let bytes = entry.encode();
        assert_eq!(Entry::parse(&bytes).unwrap(), entry);
        assert_eq!(Entry::parse(&bytes).unwrap().encode(), bytes);
    }
}

fn parse_err(text: &str) -> EntryError {
    Entry::parse(text.as_bytes()).unwrap_err()
}

fn field_of(text: &str) -> Option<String> {
    parse_err(text).field().map(str::to_owned)
}

#[test]
fn non_canonical_entries_are_refused_naming_the_field() {
    let t = sample_text();
    let swap = t.replace(
        "kind publish\nregistry registry.npmjs.org\n",
        "registry registry.npmjs.org\nkind publish\n",
    );
    assert_eq!(
        parse_err(&swap),
        EntryError::KeyOrder {
            key: "kind",
            after: "registry"
        }
    );
    assert_eq!(
        parse_err(&t.replace("size 10234\n", "color red\nsize 10234\n")),
        EntryError::UnknownKey("color".into())
    );
    assert_eq!(
        parse_err(&t.replace("size 10234\n", "size 10234\nsize 10234\n")),
        EntryError::DuplicateKey("size")
    );
    let no_sha = t.replace(&format!("sha256 {}\n", "5f".repeat(32)), "");
    assert_eq!(parse_err(&no_sha), EntryError::MissingKey("sha256"));
    assert_eq!(
        parse_err(&t.replace("size 10234\n", "\nsize 10234\n")),
        EntryError::EmptyLine(8)
    );
    assert_eq!(
        parse_err(&t[..t.len() - 1]),
        EntryError::MissingFinalNewline
    );
    assert_eq!(
        parse_err(&t.replace("btlog-entry/v1", "btlog-entry/v2")),
        EntryError::BadHeader
    );
    assert_eq!(
        parse_err(&t.replace("kind publish", "kind")),
        EntryError::MalformedLine(2)
    );
    let cases = [
        (t.replace(&"5f".repeat(32), &"5F".repeat(32)), "sha256"),
        (t.replace(&"5f".repeat(32), &"5f".repeat(31)), "sha256"),
        (t.replace("size 10234", "size 010234"), "size"),
        (t.replace("size 10234", "size +10234"), "size"),
        (t.replace("size 10234", "size 18446744073709551616"), "size"),
        (t.replace("sha256:", "sha512:"), "provenance"),
        (t.replace("kind publish", "kind Publish"), "kind"),
        (t.replace("kind publish", "kind  publish"), "kind"),
        (
            t.replace("registry.npmjs.org", "Registry.npmjs.org"),
            "registry",
        ),
        (t.replace("version 1.3.0", "version 1.3.0 "), "version"),
        (t.replace("version 1.3.0", "version 1.3\u{7}.0"), "version"),
        (t.replace("version 1.3.0", "version -"), "version"),
        (t.replace("file left-pad", "file left pad"), "file"),
        (
            t.replace("left-pad-1.3.0.tgz\n", "left-pad-1.3.0.tgz\r\n"),
            "file",
        ),
        (
            t.replace("publisher github", "publisher \tgithub"),
            "publisher",
        ),
        (
            t.replace("publisher github", "publisher  github"),
            "publisher",
        ),
        (
            t.replace("publisher github", "publisher git\u{202e}hub"),
            "publisher",
        ),
        (t.replace("left-pad\n", "left-pad@1.3.0\n"), "package"),
        (t.replace("%40scope", "@scope"), "package"),
        (t.replace("%40scope", "%4"), "package"),
        (t.replace("%40scope", "%4a"), "package"),
        (t.replace("pkg:npm", "pkg:NPM"), "package"),
        (t.replace("12:00:00Z", "12:00:00+00:00"), "time"),
        (t.replace("2026-11-21", "2026-02-29"), "time"),
    ];
    for (text, field) in cases {
        assert_eq!(field_of(&text).as_deref(), Some(field), "{text:?}");
    }
    let huge = format!("{t}{}", "x".repeat(MAX_ENTRY_BYTES));
    assert!(matches!(parse_err(&huge), EntryError::TooLarge(_)));
    assert_eq!(Entry::parse(&[0xff, b'\n']), Err(EntryError::NotUtf8));
}

#[test]
fn owner_entries_use_placeholders() {
    let mut data = sample();
    data.kind = Kind::OwnerAdd;
    let err = Entry::new(data.clone()).unwrap_err();
    assert_eq!(err.field(), Some("version"));
    data.version = "-".into();
    data.file = "-".into();
    let entry = Entry::new(data).unwrap();
    assert!(String::from_utf8(entry.encode())
        .unwrap()
        .contains("\nversion -\nfile -\n"));
}

#[test]
fn values_cannot_forge_lines() {
    for evil in ["a\nsize 1", "a\rb", "a\u{0}", "a\u{85}b", "a\u{2028}b"] {
        let mut data = sample();
        data.publisher = Some(evil.into());
        assert_eq!(
            Entry::new(data).unwrap_err().field(),
            Some("publisher"),
            "{evil:?}"
        );
        let mut data = sample();
        data.version = evil.into();
        assert_eq!(
            Entry::new(data).unwrap_err().field(),
            Some("version"),
            "{evil:?}"
        );
    }
}

#[test]
fn identity_keys_are_unambiguous() {
    let id = |p: &str, v: &str, f: &str| Identity {
        package: p.into(),
        version: v.into(),
        file: f.into(),
    };
    assert_ne!(id("pkg:a/b", "1", "x").key(), id("pkg:a/b1", "", "x").key());
    assert_ne!(id("pkg:a/b", "1", "x").key(), id("pkg:a/b", "1x", "").key());
    let entry = Entry::new(sample()).unwrap();
    assert_eq!(
        entry.identity().key(),
        id("pkg:npm/%40scope/left-pad", "1.3.0", "left-pad-1.3.0.tgz").key()
    );
}

#[test]
fn json_request_shape() {
    let json = format!(
        r#"{{"kind":"publish","package":"pkg:npm/%40scope/left-pad","version":"1.3.0","file":"left-pad-1.3.0.tgz","sha256":"{}","size":10234,"publisher":"github.com/scope/left-pad/.github/workflows/release.yml@refs/tags/v1.3.0","provenance":"sha256:{}","time":"2026-11-21T12:00:00Z"}}"#,
        "5f".repeat(32),
        "9c".repeat(32)
    );
    let fields: EntryFields = serde_json::from_str(&json).unwrap();
    let entry = fields.clone().into_entry("registry.npmjs.org").unwrap();
    assert_eq!(entry.data(), &sample());
    assert_eq!(EntryFields::from(&entry), fields);
    assert_eq!(serde_json::to_string(&fields).unwrap(), json);
    let with_registry = json.replace(r#""kind""#, r#""registry":"evil","kind""#);
    assert!(serde_json::from_str::<EntryFields>(&with_registry).is_err());
    let mut upper = fields;
    upper.sha256 = upper.sha256.to_uppercase();
    assert_eq!(upper.into_entry("r").unwrap_err().field(), Some("sha256"));
}

// ---------------------------------------------------------------------------------------------
// tlog-proof (PROTOCOL.md §5)

fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn audit_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    let (mut path, sibling) = if m < k {
        (audit_path(m, &leaves[..k]), mth(&leaves[k..]))
    } else {
        (audit_path(m - k, &leaves[k..]), mth(&leaves[..k]))
    };
    path.push(sibling);
    path
}

/// A log of `n` entries for versions 1.0.0…; returns the tlog-proof for `index` and the log key.
fn proof_for(n: usize, index: usize) -> (TlogProof, Signer) {
    let entries: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut d = sample();
            d.version = format!("1.0.{i}");
            d.sha256 = [i as u8; 32];
            Entry::new(d).unwrap().encode()
        })
        .collect();
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let log = signer(ORIGIN, 1);
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: n as u64,
        root: mth(&leaves),
    };
    let proof = TlogProof::new(
        entries[index].clone(),
        index as u64,
        audit_path(index, &leaves),
        cp.sign(&log).unwrap(),
    );
    (proof, log)
}

fn claim(i: u8) -> ArtifactClaim {
    ArtifactClaim {
        package: "pkg:npm/%40scope/left-pad".into(),
        version: format!("1.0.{i}"),
        file: "left-pad-1.3.0.tgz".into(),
        sha256: [i; 32],
    }
}

#[test]
fn tlog_proof_round_trip_and_offline_verification() {
    for (n, i) in [(1, 0), (2, 1), (7, 3), (13, 12)] {
        let (proof, log) = proof_for(n, i);
        let text = proof.format();
        assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "));
        let parsed = TlogProof::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed, proof);
        let ok = parsed
            .verify_offline(&log.verifier(), &claim(i as u8))
            .unwrap();
        assert_eq!(ok.checkpoint.size, n as u64);
        assert_eq!(ok.entry.version, format!("1.0.{i}"));
    }
}

#[test]
fn tlog_proof_failures_are_precise() {
    let (proof, log) = proof_for(7, 3);
    let v = log.verifier();
    let good = claim(3);
    let mismatch = |c: ArtifactClaim| match proof.verify_offline(&v, &c) {
        Err(ProofBundleError::Mismatch { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        mismatch(ArtifactClaim {
            package: "pkg:npm/x".into(),
            ..good.clone()
        }),
        "package"
    );
    assert_eq!(
        mismatch(ArtifactClaim {
            version: "9".into(),
            ..good.clone()
        }),
        "version"
    );
    assert_eq!(
        mismatch(ArtifactClaim {
            file: "f".into(),
            ..good.clone()
        }),
        "file"
    );
    assert_eq!(
        mismatch(ArtifactClaim {
            sha256: [0; 32],
            ..good.clone()
        }),
        "sha256"
    );
    let other_key = signer(ORIGIN, 2).verifier();
    assert!(matches!(
        proof.verify_offline(&other_key, &good),
        Err(ProofBundleError::Checkpoint(CheckpointError::Signature(_)))
    ));
    let mut bad_path = proof.clone();
    bad_path.proof[0][0] ^= 1;
    assert!(matches!(
        bad_path.verify_offline(&v, &good),
        Err(ProofBundleError::Inclusion(_))
    ));
    let mut far = proof.clone();
    far.index = 7;
    assert!(matches!(
        far.verify_offline(&v, &good),
        Err(ProofBundleError::IndexOutOfRange { index: 7, size: 7 })
    ));
    let mut wrong_index = proof.clone();
    wrong_index.index = 2;
    assert!(matches!(
        wrong_index.verify_offline(&v, &good),
        Err(ProofBundleError::Inclusion(_))
    ));
}

#[test]
fn tlog_proof_rejects_non_publish_and_bad_entries() {
    let mut d = sample();
    d.kind = Kind::Yank;
    d.version = "1.0.0".into();
    d.sha256 = [0; 32];
    let entry = Entry::new(d).unwrap().encode();
    let log = signer(ORIGIN, 1);
    let single = |entry: Vec<u8>| TlogProof {
        checkpoint: Checkpoint {
            origin: ORIGIN.into(),
            size: 1,
            root: leaf_hash(&entry),
        }
        .sign(&log)
        .unwrap(),
        entry,
        index: 0,
        proof: vec![],
    };
    assert!(matches!(
        single(entry).verify_offline(&log.verifier(), &claim(0)),
        Err(ProofBundleError::NotPublish(Kind::Yank))
    ));
    assert!(matches!(
        single(b"not an entry\n".to_vec()).verify_offline(&log.verifier(), &claim(0)),
        Err(ProofBundleError::Entry(_))
    ));
}

#[test]
fn tlog_proof_witness_policy() {
    let (mut proof, log) = proof_for(3, 1);
    let w = cosigner("witness.example", 8);
    let mut note = Note::parse(proof.checkpoint.as_bytes()).unwrap();
    note.cosign(&w, 1_700_000_000).unwrap();
    proof.checkpoint = note.format();
    let wv = w.verifier();
    let stranger = cosigner("stranger.example", 9).verifier();
    let ok = proof
        .verify_with_witnesses(&log.verifier(), &[&wv, &stranger], 1, &claim(1))
        .unwrap();
    assert_eq!(ok.witnesses.len(), 1);
    assert!(matches!(
        proof.verify_with_witnesses(&log.verifier(), &[&wv, &stranger], 2, &claim(1)),
        Err(ProofBundleError::WitnessQuorum { got: 1, need: 2 })
    ));
    let parsed = TlogProof::parse(proof.format().as_bytes()).unwrap();
    assert_eq!(parsed.checkpoint, proof.checkpoint);
}

/// Issue #13 item 13: a witness quorum counts distinct cosignature/v1 keys other than the
/// log's own: the log's key (as itself, as a cosigner under another name) or name cannot be a
/// witness, an Ed25519 key is not a witness key, and one key under two names counts once.
#[test]
fn witness_quorum_counts_distinct_keys_other_than_the_logs() {
    let (mut proof, log) = proof_for(3, 1);
    let lv = log.verifier();
    let refused = |witnesses: &[&Verifier], quorum: usize, proof: &TlogProof| -> String {
        match proof.verify_with_witnesses(&lv, witnesses, quorum, &claim(1)) {
            Ok(v) => panic!("quorum {quorum} met by {:?}", v.witnesses),
            Err(e) => e.to_string(),
        }
    };
    // The log's own signature offered as a witness's.
    assert!(refused(&[&lv], 1, &proof).contains("witness key"));
    let t = 1_700_000_000;
    let log_key_as_cosigner = cosigner("witness.example/sneaky", 1);
    let named_as_log = cosigner(ORIGIN, 5);
    let (w1, w1_renamed) = (
        cosigner("witness.example/one", 8),
        cosigner("witness.example/one-again", 8),
    );
    let ed25519 = signer("witness.example/ed", 9);
    let mut note = Note::parse(proof.checkpoint.as_bytes()).unwrap();
    for w in [&log_key_as_cosigner, &named_as_log, &w1, &w1_renamed] {
        note.cosign(w, t).unwrap();
    }
    note.sign(&ed25519).unwrap();
    proof.checkpoint = note.format();
    for bad in [&log_key_as_cosigner, &named_as_log, &ed25519] {
        let said = refused(&[&bad.verifier()], 1, &proof);
        assert!(said.contains("witness key"), "{}: {said}", bad.name());
    }
    // One key under two names, or one witness listed twice, is one witness.
    let (v1, v1r) = (w1.verifier(), w1_renamed.verifier());
    for witnesses in [[&v1, &v1r], [&v1, &v1]] {
        assert_eq!(
            refused(&witnesses, 2, &proof),
            "checkpoint has 1 valid witness cosignatures, 2 required"
        );
    }
    let ok = proof
        .verify_with_witnesses(&lv, &[&v1, &v1r], 1, &claim(1))
        .unwrap();
    assert_eq!(ok.witnesses.len(), 1);
}

#[test]
fn malformed_tlog_proofs() {
    let (proof, _) = proof_for(4, 2);
    let t = proof.format();
    let extra_line = t.lines().nth(1).unwrap().to_owned();
    let cases = [
        t.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
        t.replace(&format!("{extra_line}\n"), ""),
        t.replace("index 2", "index 02"),
        t.replace("index 2", "index -2"),
        t.replace("\n\n", "\n"),
        t.replace(
            &format!("\n{ORIGIN}\n4\n"),
            &format!("\n{ORIGIN}\n4\nextension\n"),
        ),
        format!("{t}trailing"),
        t.replace("extra ", "extra  "),
    ];
    for case in &cases {
        assert!(TlogProof::parse(case.as_bytes()).is_err(), "{case}");
    }
    let mut lines: Vec<&str> = t.split('\n').collect();
    lines[3] = "AAAA";
    assert!(TlogProof::parse(lines.join("\n").as_bytes()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Properties

fn hash32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn time() -> impl Strategy<Value = String> {
    (
        1970u32..2100,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
    )
        .prop_map(|(y, mo, d, h, mi, s)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"))
}

fn entry_data() -> impl Strategy<Value = EntryData> {
    let text = (
        proptest::sample::select(Kind::ALL.to_vec()),
        "[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?",
        // A name segment is never `.` or `..`.
        "pkg:[a-z]{1,6}/(%40[a-z0-9]{1,8}/)?[A-Za-z0-9._~-]{1,20}(%2B|%20)?"
            .prop_filter("not a dot segment", |p| {
                !p.ends_with("/.") && !p.ends_with("/..")
            }),
        "[!-~]{2,20}",
        "[!-~]{1,30}",
        proptest::option::of("[a-zA-Z0-9./@:_-]{1,30}( [a-z]{1,5})?"),
    );
    let digests = (
        hash32(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 64)),
        proptest::option::of(any::<u64>()),
        proptest::option::of(hash32()),
        proptest::option::of(time()),
    );
    (text, digests).prop_map(|((kind, registry, package, version, file, publisher), d)| {
        let owner = kind.is_owner();
        EntryData {
            kind,
            registry,
            package,
            version: if owner { "-".into() } else { version },
            file: match (owner, file.as_str()) {
                (true, _) => "-".into(),
                (false, "-") => "x".into(),
                _ => file,
            },
            sha256: d.0,
            sha512: d.1.map(|v| v.try_into().unwrap()),
            size: d.2,
            publisher,
            provenance: d.3,
            time: d.4,
        }
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (
            any::<usize>(),
            prop_oneof![Just(b'\n'), Just(b' '), Just(b'0'), any::<u8>()]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
    ];
    proptest::collection::vec(one, 1..4)
}

fn mutate(bytes: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for m in muts {
        let len = out.len().max(1);
        match *m {
            Mutation::Set(i, b) if !out.is_empty() => out[i % len] = b,
            Mutation::Insert(i, b) => out.insert(i % (out.len() + 1), b),
            Mutation::Remove(i) if !out.is_empty() => {
                out.remove(i % len);
            }
            _ => {}
        }
    }
    out
}

fn make_note(text: &str, seeds: &[u8]) -> (String, Verifier) {
    let mut note = Note::new(text).unwrap();
    for &s in seeds {
        note.sign(&signer(&format!("k{s}.example"), s)).unwrap();
    }
    let main = signer("main.example", 0);
    note.sign(&main).unwrap();
    (note.format(), main.verifier())
}

proptest! {
    #[test]
    fn entry_round_trip(data in entry_data()) {
        let entry = Entry::new(data.clone()).unwrap();
        let bytes = entry.encode();
        let parsed = Entry::parse(&bytes).unwrap();
        prop_assert_eq!(parsed.data(), &data);
        prop_assert_eq!(parsed.encode(), bytes);
    }

    #[test]
    fn mutated_entries_are_canonical_or_refused(data in entry_data(), muts in mutations()) {
        let bytes = Entry::new(data).unwrap().encode();
        let changed = mutate(&bytes, &muts);
        if let Ok(e) = Entry::parse(&changed) {
            prop_assert_eq!(e.encode(), changed);
        }
    }

    #[test]
    fn note_round_trip(text in "([ -~\u{a0}-\u{2fff}]{0,40}\n){1,5}", seeds in proptest::collection::vec(1u8..50, 0..4)) {
        let (formatted, vkey) = make_note(&text, &seeds);
        let parsed = Note::parse(formatted.as_bytes()).unwrap();
        prop_assert_eq!(parsed.text(), text.as_str());
        prop_assert_eq!(parsed.format(), formatted);
        prop_assert!(parsed.verify(&[&vkey]).is_ok());
    }

    #[test]
    fn mutated_notes_are_canonical_or_refused(text in "([ -~]{1,30}\n){1,4}", seeds in proptest::collection::vec(1u8..50, 0..3), muts in mutations()) {
        let (formatted, vkey) = make_note(&text, &seeds);
        let changed = mutate(formatted.as_bytes(), &muts);
        if let Ok(note) = Note::parse(&changed) {
            prop_assert_eq!(note.format().into_bytes(), changed);
            if note.verify(&[&vkey]).is_ok() {
                prop_assert_eq!(note.text(), text.as_str());
            }
        }
    }

    #[test]
    fn mutated_checkpoints_never_verify_as_another(size in any::<u64>(), root in hash32(), muts in mutations()) {
        let log = signer(ORIGIN, 1);
        let cp = Checkpoint { origin: ORIGIN.into(), size, root };
        let text = cp.sign(&log).unwrap();
        let changed = mutate(text.as_bytes(), &muts);
        if let Ok((got, note)) = Checkpoint::verify(&changed, &log.verifier()) {
            prop_assert_eq!(got, cp);
            prop_assert_eq!(note.format().into_bytes(), changed);
        }
    }

    #[test]
    fn mutated_tlog_proofs_are_canonical_or_refused(n in 1usize..20, i in any::<usize>(), muts in mutations()) {
        let (proof, log) = proof_for(n, i % n);
        let changed = mutate(proof.format().as_bytes(), &muts);
        if let Ok(p) = TlogProof::parse(&changed) {
            prop_assert_eq!(p.format().into_bytes(), changed);
            if p.verify_offline(&log.verifier(), &claim((i % n) as u8)).is_ok() {
                prop_assert_eq!(p.entry, proof.entry);
            }
        }
    }
}

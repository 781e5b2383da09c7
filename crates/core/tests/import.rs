//! Registry metadata as entries (PROTOCOL.md §11), on real crates.io index files
//! (`tests/vectors/ecosystems/`): every version becomes a valid publish with the index's
//! checksum, a yanked version also a yank, and a malformed line is refused with its number.

mod common;

use btlog_core::entry::Kind;
use btlog_core::import::{crates_index, npm_packument, npm_purl, pypi_name, pypi_project};

fn file(name: &str) -> String {
    let dir = match name {
        n if n.starts_with("left-pad") => "npm",
        n if n.ends_with(".json") => "pypi",
        _ => "crates.io",
    };
    let path = common::package_dir()
        .join("tests/vectors/ecosystems")
        .join(dir)
        .join(name);
    std::fs::read_to_string(path).expect("vector")
}

#[test]
fn a_crates_io_index_file_becomes_publishes_and_yanks() {
    let itoa = crates_index(&file("itoa")).expect("itoa");
    assert_eq!(itoa.len(), 38);
    assert!(itoa.iter().all(|e| e.kind == Kind::Publish));
    let last = itoa.last().expect("versions");
    assert_eq!(last.package, "pkg:cargo/itoa");
    assert_eq!(last.file, format!("itoa-{}.crate", last.version));
    for e in &itoa {
        e.clone().into_entry("crates.io").expect("a valid entry");
    }
    // Cargo.lock's checksum of itoa 1.0.18 is the index's cksum.
    let v = itoa.iter().find(|e| e.version == "1.0.18").expect("1.0.18");
    assert_eq!(
        v.sha256,
        "8f42a60cbdf9a97f5d2305f08a87dc4e09308d1276d28c869c684d7777685682"
    );

    let hex = crates_index(&file("hex")).expect("hex");
    let kinds: Vec<(Kind, &str)> = hex.iter().map(|e| (e.kind, e.version.as_str())).collect();
    assert_eq!(kinds.iter().filter(|(k, _)| *k == Kind::Publish).count(), 9);
    let yank = kinds
        .iter()
        .position(|k| *k == (Kind::Yank, "0.4.1"))
        .expect("0.4.1 yanked");
    assert_eq!(
        kinds[yank - 1],
        (Kind::Publish, "0.4.1"),
        "the yank follows its publish"
    );
    for e in &hex {
        e.clone().into_entry("crates.io").expect("a valid entry");
    }
}

#[test]
fn malformed_index_lines_are_refused_with_their_number() {
    let text = format!(
        "{}\n\n{{\"name\": \"x\"}}\n",
        file("itoa").lines().next().expect("line")
    );
    assert_eq!(crates_index(&text).expect_err("missing fields").line, 3);
    assert_eq!(crates_index("not json\n").expect_err("junk").line, 1);
    assert_eq!(crates_index("").map(|v| v.len()), Ok(0));
}

#[test]
fn a_pypi_project_becomes_publishes_and_yanks_in_upload_order() {
    let attrs = pypi_project(&file("attrs.json")).expect("attrs");
    let publishes: Vec<_> = attrs.iter().filter(|e| e.kind == Kind::Publish).collect();
    assert_eq!(publishes.len(), 72);
    let yanks: Vec<_> = attrs.iter().filter(|e| e.kind == Kind::Yank).collect();
    assert_eq!(yanks.len(), 2);
    assert!(yanks
        .iter()
        .all(|y| y.version == "21.1.0" && y.package == "pkg:pypi/attrs"));
    let times: Vec<&str> = publishes
        .iter()
        .map(|e| e.time.as_deref().expect("time"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "upload order");
    for e in &attrs {
        e.clone().into_entry("pypi.org").expect("a valid entry");
    }
    assert_eq!(pypi_name("Zope.Interface__x"), "zope-interface-x");
    assert!(pypi_project("{}").is_err());
}

#[test]
fn an_npm_packument_with_its_tarballs_becomes_publishes() {
    let dir = common::package_dir().join("tests/vectors/ecosystems/npm");
    let tgz = std::fs::read(dir.join("left-pad-1.3.0.tgz")).expect("tarball");
    let have = |f: &str| (f == "left-pad-1.3.0.tgz").then(|| tgz.clone());
    let (entries, missing) = npm_packument(&file("left-pad.json"), &have).expect("left-pad");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        missing.len(),
        14,
        "the other versions wait for their tarballs"
    );
    let e = &entries[0];
    assert_eq!(
        (e.package.as_str(), e.version.as_str(), e.file.as_str()),
        ("pkg:npm/left-pad", "1.3.0", "left-pad-1.3.0.tgz")
    );
    assert_eq!(
        e.sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tgz))
    );
    assert_eq!(e.size, Some(tgz.len() as u64));
    e.clone()
        .into_entry("registry.npmjs.org")
        .expect("a valid entry");
    // A tarball that is not the one published is refused.
    let mut other = tgz.clone();
    other[100] ^= 1;
    let forged = |f: &str| (f == "left-pad-1.3.0.tgz").then(|| other.clone());
    assert!(npm_packument(&file("left-pad.json"), &forged).is_err());
    assert_eq!(npm_purl("@acme/widget"), "pkg:npm/%40acme/widget");
}

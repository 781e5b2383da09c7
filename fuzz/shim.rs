//! The format modules of btlog compiled from ../src by path (see Cargo.toml), without the
//! storage layers, so the fuzz targets build quickly with the nightly compiler.

#[path = "../src/checkpoint.rs"]
pub mod checkpoint;
#[path = "../src/entry.rs"]
pub mod entry;
#[path = "../src/keys.rs"]
pub mod keys;
#[path = "../src/merkle/mod.rs"]
pub mod merkle;
#[path = "../src/note.rs"]
pub mod note;
#[path = "../src/proof_bundle.rs"]
pub mod proof_bundle;

//! What `btlog serve` refuses at start: a log that has signed checkpoints never gets a new key,
//! whether its `log.key` went missing or `--key` names another log's key.

use crate::server::config;
use btlog_core::keys;
use btlog_server::log::{Log, OpenError};

fn open(config: &btlog_server::config::Config) -> Result<Log, OpenError> {
    Log::open(config)
}

#[tokio::test]
async fn a_lost_key_is_not_replaced_and_a_foreign_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(&dir.path().join("data"));
    let log = open(&config).expect("first start creates the key");
    let vkey = log.verifier().vkey();
    log.shutdown().await;
    drop(log);

    // The key file is lost: a new key would re-sign the tree under a vkey nobody holds.
    let key = config.key_path();
    std::fs::rename(&key, dir.path().join("log.key.bak")).expect("move key away");
    let e = open(&config).err().expect("refused without its key");
    assert!(matches!(e, OpenError::KeyMissing { .. }), "{e}");
    assert!(e.to_string().contains("has signed checkpoints"), "{e}");
    assert!(!key.exists(), "no key was created");

    // Another log's key, same origin or not, does not verify the stored checkpoints.
    for origin in ["test.example/log", "other.example/log"] {
        let foreign = dir.path().join(format!("{}.key", origin.replace('/', "_")));
        btlog_client::keyfile::write_private_key(&foreign, &keys::generate(origin).expect("key"))
            .expect("write key");
        config.key = Some(foreign);
        let e = open(&config).err().expect("refused with another key");
        assert!(matches!(e, OpenError::KeyMismatch { .. }), "{origin}: {e}");
    }

    // With its own key back, the log opens and serves the same vkey.
    config.key = None;
    std::fs::rename(dir.path().join("log.key.bak"), &key).expect("restore key");
    let log = open(&config).expect("opens with its key");
    assert_eq!(log.verifier().vkey(), vkey);
    log.shutdown().await;
}

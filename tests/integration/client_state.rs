//! Issue #13 item 11: the installer's checkpoint state under concurrent `verify` runs. Each run
//! loads the stored checkpoint, checks the served one against it (a consistency proof from the
//! log) and saves it when newer; runs sharing a state directory must never leave an older
//! checkpoint stored than one of them verified.

use btlog_client::api::state::{CheckpointState, Stored};
use btlog_client::api::verify::advance;
use btlog_client::api::Api;
use btlog_core::checkpoint::Checkpoint;
use serde_json::json;

use crate::server::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_verifications_never_move_the_stored_checkpoint_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(&dir.path().join("log"));
    let token = add_token(&cfg.data);
    let server = start(&cfg).await;
    let url = format!("http://{}", server.http_addr());
    let vkey = server.log().verifier().clone();
    // One signed checkpoint per size 1..=N, from the submit replies.
    const N: usize = 24;
    let http = reqwest::Client::new();
    let mut served = Vec::new();
    for i in 0..N {
        let name = format!("pkg:npm/s-{i}");
        let reply: serde_json::Value = http
            .post(format!("{url}/v1/entries"))
            .bearer_auth(&token)
            .json(&json!({ "entries": [publish(&name, "1.0.0", "a.tgz", &digest(&name))] }))
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        let note = reply["checkpoint"].as_str().expect("checkpoint").to_owned();
        let (checkpoint, _) = Checkpoint::verify(note.as_bytes(), &vkey).expect("verifies");
        assert_eq!(checkpoint.size, i as u64 + 1);
        served.push(Stored { checkpoint, note });
    }
    let api = Api::new(&url).expect("api");
    for round in 0..8 {
        let state = CheckpointState::new(dir.path().join(format!("state-{round}")));
        // Odd rounds start from a stored checkpoint (every run then fetches a proof), even
        // rounds from none (trust on first use).
        let rest = if round % 2 == 1 {
            advance(&api, &vkey, &state, served[0].clone())
                .await
                .expect("first");
            &served[1..]
        } else {
            &served[..]
        };
        let runs: Vec<_> = rest
            .iter()
            .rev()
            .map(|s| {
                let (api, vkey, state, s) = (api.clone(), vkey.clone(), state.clone(), s.clone());
                tokio::spawn(async move { advance(&api, &vkey, &state, s).await })
            })
            .collect();
        for run in runs {
            run.await.expect("join").expect("advance");
        }
        let stored = state.load(&vkey).expect("load").expect("stored");
        assert_eq!(stored.checkpoint.size, N as u64, "round {round}");
    }
    server.shutdown().await.expect("shutdown");
}

//! The log asks its witnesses (PROTOCOL.md §10.1): after each checkpoint is signed, every
//! configured witness gets it over tlog-witness `add-checkpoint`, with the consistency proof from
//! the size that witness last cosigned (learned from its 409 when unknown). Once `quorum`
//! cosignatures verify, the checkpoint with them becomes the one the log serves. This runs
//! beside the sequencer: submissions are answered with the log-signed checkpoint as before, and
//! a witness that is down or slow only delays what `/checkpoint` serves, never ingest.

use super::sequencer::SignedCheckpoint;
use crate::config::WitnessEndpoint;
use btlog_core::note::{Note, Verifier};
use btlog_core::witness::AddCheckpoint;
use btlog_store::Store;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a round may go without a quorum before it moves to a newer checkpoint.
const ROUND_PATIENCE: Duration = Duration::from_secs(1);
/// Longest one add-checkpoint request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a witness (a few cosignature lines).
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// Waits before asking again when the quorum was not met, doubling up to the last.
const RETRY: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// One configured witness and what the log knows of it.
struct Witness {
    verifier: Verifier,
    url: String,
    /// The size it last cosigned, as far as the log knows (None: ask with 0 and learn).
    known: Option<u64>,
    stats: Arc<WitnessStats>,
}

/// Per-witness figures for `/metrics`.
#[derive(Default)]
pub struct WitnessStats {
    name: String,
    cosigned_size: AtomicU64,
    failures: AtomicU64,
    requests: AtomicU64,
    micros: AtomicU64,
}

/// The witnesses' figures, rendered into `/metrics`.
#[derive(Default)]
pub struct WitnessMetrics(Vec<Arc<WitnessStats>>);

impl WitnessMetrics {
    /// Prometheus text for every witness.
    pub fn render(&self, out: &mut String) {
        if self.0.is_empty() {
            return;
        }
        let gauges = [
            ("btlog_witness_cosigned_size", "gauge"),
            ("btlog_witness_failures_total", "counter"),
            ("btlog_witness_requests_total", "counter"),
            ("btlog_witness_request_seconds_total", "counter"),
        ];
        for (name, kind) in gauges {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for w in &self.0 {
                let value = match name {
                    "btlog_witness_cosigned_size" => w.cosigned_size.load(Ordering::Relaxed) as f64,
                    "btlog_witness_failures_total" => w.failures.load(Ordering::Relaxed) as f64,
                    "btlog_witness_requests_total" => w.requests.load(Ordering::Relaxed) as f64,
                    _ => w.micros.load(Ordering::Relaxed) as f64 / 1e6,
                };
                let _ = writeln!(out, "{name}{{witness=\"{}\"}} {value}", w.name);
            }
        }
    }
}

/// Starts asking `endpoints` for cosignatures of every checkpoint `latest` sees; each time
/// `quorum` of them cosigned one, it is sent on `served` with their cosignature lines.
pub(super) fn spawn(
    store: Store,
    endpoints: Vec<(Verifier, String)>,
    quorum: usize,
    mut latest: watch::Receiver<SignedCheckpoint>,
    served: watch::Sender<SignedCheckpoint>,
) -> WitnessMetrics {
    let witnesses: Vec<Witness> = endpoints
        .into_iter()
        .map(|(verifier, url)| Witness {
            stats: Arc::new(WitnessStats {
                name: verifier.name().to_owned(),
                ..WitnessStats::default()
            }),
            verifier,
            url,
            known: None,
        })
        .collect();
    let metrics = WitnessMetrics(witnesses.iter().map(|w| w.stats.clone()).collect());
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap_or_default();
    // Rounds: every witness is asked for the same target checkpoint, so a quorum can form at
    // one size however fast the log signs; the target moves to the newest checkpoint once it
    // is served. Each witness has a task of its own, so a slow or hanging one holds up
    // neither the others nor the round.
    let (target_tx, target) = watch::channel(latest.borrow_and_update().clone());
    let (results, mut answers) = tokio::sync::mpsc::channel(4 * witnesses.len());
    for (i, mut w) in witnesses.into_iter().enumerate() {
        let (mut target, results, http, store) =
            (target.clone(), results.clone(), http.clone(), store.clone());
        tokio::spawn(async move {
            let mut attempt = 0;
            loop {
                let checkpoint = target.borrow_and_update().clone();
                let cosigned = w.cosign(&http, &store, &checkpoint).await;
                let ok = cosigned.is_some();
                if let Some(lines) = cosigned {
                    attempt = 0;
                    if results.send((i, checkpoint.size, lines)).await.is_err() {
                        return;
                    }
                }
                let wait = RETRY[attempt.min(RETRY.len() - 1)];
                tokio::select! {
                    changed = target.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(wait), if !ok => attempt += 1,
                }
            }
        });
    }
    drop(results);
    tokio::spawn(async move {
        let mut round = target_tx.borrow().clone();
        let mut lines: std::collections::BTreeMap<usize, String> = Default::default();
        let mut started = tokio::time::Instant::now();
        let mut newer = false;
        loop {
            let met = lines.len() >= quorum;
            tokio::select! {
                answer = answers.recv() => {
                    let Some((i, size, cosignature)) = answer else { return };
                    if size == round.size && !met {
                        lines.insert(i, cosignature);
                        if lines.len() == quorum {
                            publish(&served, &round, &lines);
                        }
                    }
                }
                changed = latest.changed(), if !newer => {
                    if changed.is_err() {
                        return;
                    }
                    newer = true;
                }
                () = tokio::time::sleep_until(started + ROUND_PATIENCE), if newer && !met => {}
            }
            // The next round targets the newest checkpoint: once this one is served, or after
            // ROUND_PATIENCE without a quorum (witnesses may already hold a newer size, which
            // anyone can hand them, and could never cosign this one).
            let met = lines.len() >= quorum;
            if newer && (met || started.elapsed() >= ROUND_PATIENCE) {
                round = latest.borrow_and_update().clone();
                lines.clear();
                started = tokio::time::Instant::now();
                newer = false;
                let _ = target_tx.send(round.clone());
            }
        }
    });
    metrics
}

/// Serves `round` with the cosignature `lines`, if the note stays within the note limits.
fn publish(
    served: &watch::Sender<SignedCheckpoint>,
    round: &SignedCheckpoint,
    lines: &std::collections::BTreeMap<usize, String>,
) {
    let note = format!(
        "{}{}",
        round.note,
        lines.values().cloned().collect::<String>()
    );
    match Note::parse(note.as_bytes()) {
        Ok(_) => {
            let _ = served.send(SignedCheckpoint {
                size: round.size,
                note,
                signed_at: round.signed_at,
            });
        }
        Err(e) => tracing::error!(size = round.size, error = %e, "cosigned checkpoint not served"),
    }
}

impl Witness {
    /// Asks this witness to cosign `checkpoint`; its verified cosignature line, or None.
    async fn cosign(
        &mut self,
        http: &reqwest::Client,
        store: &Store,
        checkpoint: &SignedCheckpoint,
    ) -> Option<String> {
        // At most twice: a 409 teaches the size the witness holds, then the real request.
        for _ in 0..2 {
            let old = self.known.unwrap_or(0).min(checkpoint.size);
            let proof = if old == 0 || old == checkpoint.size {
                Vec::new()
            } else {
                match store.consistency_proof(old, checkpoint.size) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(witness = self.verifier.name(), error = %e, "consistency proof");
                        return None;
                    }
                }
            };
            let body = AddCheckpoint {
                old,
                proof,
                checkpoint: checkpoint.note.clone(),
            }
            .format();
            let began = std::time::Instant::now();
            let answer = self.post(http, body).await;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            self.stats
                .micros
                .fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
            match answer {
                Ok((200, text)) => match self.check_lines(&checkpoint.note, &text) {
                    Ok(lines) => {
                        self.known = Some(checkpoint.size);
                        self.stats
                            .cosigned_size
                            .store(checkpoint.size, Ordering::Relaxed);
                        return Some(lines);
                    }
                    Err(e) => {
                        self.fail(&format!("its cosignature does not verify: {e}"));
                        return None;
                    }
                },
                Ok((409, text)) => match text.trim_end_matches('\n').parse::<u64>() {
                    Ok(size) if size <= checkpoint.size && Some(size) != self.known => {
                        self.known = Some(size);
                    }
                    _ => {
                        self.fail(&format!("409 with size {text:?}: it holds a tree this log did not sign, or a newer one"));
                        return None;
                    }
                },
                Ok((status, text)) => {
                    self.fail(&format!("HTTP {status}: {}", text.trim_end()));
                    return None;
                }
                Err(e) => {
                    self.fail(&e);
                    return None;
                }
            }
        }
        None
    }

    async fn post(&self, http: &reqwest::Client, body: String) -> Result<(u16, String), String> {
        let mut resp = http
            .post(&self.url)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let mut text = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if text.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
            }
            text.extend_from_slice(&chunk);
        }
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    }

    /// The answer's lines that are this witness's verifying cosignatures of `note`.
    fn check_lines(&self, note: &str, answer: &str) -> Result<String, String> {
        let cosigned =
            Note::parse(format!("{note}{answer}").as_bytes()).map_err(|e| e.to_string())?;
        cosigned
            .verify(&[&self.verifier])
            .map_err(|e| e.to_string())?;
        // Only this witness's own key's line, once: other lines would only bloat the note.
        let line = cosigned
            .signatures()
            .iter()
            .find(|s| s.name == self.verifier.name() && s.key_id == self.verifier.key_id())
            .map(|s| s.format_line())
            .ok_or("no cosignature by its key")?;
        Ok(line)
    }

    fn fail(&self, why: &str) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(witness = self.verifier.name(), url = %self.url, "witness: {why}");
    }
}

/// Parses and checks the configured witnesses: cosignature keys, none the log's.
pub(super) fn endpoints(
    configured: &[WitnessEndpoint],
    log: &Verifier,
) -> Result<Vec<(Verifier, String)>, String> {
    configured
        .iter()
        .map(|w| {
            let v = btlog_core::keys::parse_vkey(&w.vkey)
                .map_err(|e| format!("witness vkey {:?}: {e}", w.vkey))?;
            if v.key_type() != btlog_core::note::KeyType::Cosignature {
                return Err(format!("witness {} is not a cosignature key", v.name()));
            }
            if v.name() == log.name() || v.public_key() == log.public_key() {
                return Err(format!("witness {} is the log's own key or name", v.name()));
            }
            Ok((v, w.url.clone()))
        })
        .collect()
}

//! A small Prometheus registry of atomics: tree size, appends, batch sizes and latency,
//! request counts by status, queue depth, and whether the writer stopped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The log's metrics; shared by the sequencer and the front ends.
#[derive(Debug)]
pub struct Metrics {
    entries_appended: AtomicU64,
    queue_depth: AtomicU64,
    batch_entries: Histogram,
    batch_seconds: Histogram,
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            entries_appended: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            batch_entries: Histogram::new(&[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
            batch_seconds: Histogram::new(&[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            requests: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// Records one committed batch of `entries` new entries that took `latency`.
    pub fn record_batch(&self, entries: usize, latency: Duration) {
        self.entries_appended
            .fetch_add(entries as u64, Ordering::Relaxed);
        self.batch_entries.observe(entries as f64);
        self.batch_seconds.observe(latency.as_secs_f64());
    }

    /// A submission entered the queue.
    pub fn queued(&self) {
        self.queue_depth.fetch_add(1, Ordering::Relaxed);
    }

    /// A submission left the queue.
    pub fn dequeued(&self) {
        let _ = self
            .queue_depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(1))
            });
    }

    /// Counts one finished request of front end `api` with `status`.
    pub fn record_request(&self, api: &'static str, status: impl ToString) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((api, status.to_string())).or_insert(0) += 1;
    }

    /// The Prometheus text exposition, with the current `tree_size` and whether the writer
    /// stopped after a storage failure (`btlog_writer_stopped` 1 until a restart).
    pub fn render(&self, tree_size: u64, writer_stopped: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# TYPE btlog_tree_size gauge\nbtlog_tree_size {tree_size}"
        );
        let _ = writeln!(
            out,
            "# TYPE btlog_writer_stopped gauge\nbtlog_writer_stopped {}",
            u8::from(writer_stopped)
        );
        let _ = writeln!(
            out,
            "# TYPE btlog_entries_appended_total counter\nbtlog_entries_appended_total {}",
            self.entries_appended.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE btlog_queue_depth gauge\nbtlog_queue_depth {}",
            self.queue_depth.load(Ordering::Relaxed)
        );
        self.batch_entries.render(&mut out, "btlog_batch_entries");
        self.batch_seconds.render(&mut out, "btlog_batch_seconds");
        let _ = writeln!(out, "# TYPE btlog_requests_total counter");
        let map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((api, status), n) in map.iter() {
            let _ = writeln!(
                out,
                "btlog_requests_total{{api=\"{api}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

/// How often `/metrics` reads the store engine's figures at most.
const ENGINE_READ_INTERVAL: Duration = Duration::from_secs(1);

/// The store engine's figures, read at most once per [`ENGINE_READ_INTERVAL`]: `/metrics` is
/// unauthenticated, and a reading is some 26 RocksDB property reads, some under the
/// database's mutex, which a client scraping in a loop must not put in the writer's way.
#[derive(Debug, Default)]
pub struct EngineReadings {
    last: Mutex<Option<(Instant, btlog_store::EngineStats)>>,
}

impl EngineReadings {
    /// The reading taken at most [`ENGINE_READ_INTERVAL`] before `now`, or a new one by `read`.
    pub fn get(
        &self,
        now: Instant,
        read: impl FnOnce() -> btlog_store::EngineStats,
    ) -> btlog_store::EngineStats {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some((at, stats)) if now.saturating_duration_since(at) < ENGINE_READ_INTERVAL => stats,
            _ => {
                let stats = read();
                *last = Some((now, stats));
                stats
            }
        }
    }
}

/// The store engine's memory, by kind, and its compaction debt.
pub fn render_engine(stats: &btlog_store::EngineStats, out: &mut String) {
    let _ = writeln!(out, "# TYPE btlog_store_memory_bytes gauge");
    for (kind, bytes) in [
        ("memtables", stats.memtable_bytes),
        ("table_readers", stats.table_reader_bytes),
        ("block_cache", stats.block_cache_bytes),
        ("block_cache_pinned", stats.block_cache_pinned_bytes),
        ("identity_filters", stats.identity_filter_bytes),
        ("package_filters", stats.package_filter_bytes),
    ] {
        let _ = writeln!(out, "btlog_store_memory_bytes{{kind=\"{kind}\"}} {bytes}");
    }
    let _ = writeln!(
        out,
        "# TYPE btlog_store_pending_compaction_bytes gauge\nbtlog_store_pending_compaction_bytes {}",
        stats.pending_compaction_bytes
    );
}

#[derive(Debug)]
struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in millionths, to stay in an integer atomic.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_figures_are_read_at_most_once_a_second() {
        let readings = EngineReadings::default();
        let reads = std::cell::Cell::new(0u64);
        let read = || {
            reads.set(reads.get() + 1);
            btlog_store::EngineStats {
                memtable_bytes: reads.get(),
                ..Default::default()
            }
        };
        let t0 = Instant::now();
        assert_eq!(readings.get(t0, read).memtable_bytes, 1);
        let soon = t0 + Duration::from_millis(999);
        assert_eq!(readings.get(soon, read).memtable_bytes, 1, "cached");
        // A clock read before the last reading (another thread's) still gets the cache.
        assert_eq!(readings.get(t0, read).memtable_bytes, 1);
        let later = t0 + ENGINE_READ_INTERVAL;
        assert_eq!(readings.get(later, read).memtable_bytes, 2, "read again");
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.record_batch(3, Duration::from_millis(2));
        m.record_request("http", 200);
        let text = m.render(3, false);
        assert!(text.contains("btlog_tree_size 3"));
        assert!(text.contains("btlog_writer_stopped 0"));
        assert!(text.contains("btlog_batch_entries_bucket{le=\"4\"} 1"));
        assert!(text.contains("btlog_batch_entries_bucket{le=\"1\"} 0"));
        assert!(text.contains("btlog_requests_total{api=\"http\",status=\"200\"} 1"));
    }
}

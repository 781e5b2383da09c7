//! Compaction by column family, from RocksDB's info logs (`LOG` and `LOG.old.*` in the
//! database directory): each `compaction_finished` event of the event log (CPU time, bytes
//! written), matched to its column family by its job's `Compacting` line. Job numbers start
//! again at each open of the database, so each log file is matched on its own.

use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

/// The compactions of one column family.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Compactions {
    pub(crate) jobs: u64,
    pub(crate) cpu_s: f64,
    pub(crate) written: u64,
}

/// The compactions recorded in the info logs under `db`, by column family.
pub(crate) fn by_column_family(db: &Path) -> Result<BTreeMap<String, Compactions>> {
    let mut out = BTreeMap::new();
    for item in fs::read_dir(db).with_context(|| format!("reading {}", db.display()))? {
        let path = item?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "LOG" || name.starts_with("LOG.old.") {
            // Logs are text, but a line cut by a crash may not be UTF-8.
            let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            add_log(&String::from_utf8_lossy(&bytes), &mut out);
        }
    }
    Ok(out)
}

/// Adds the compactions of one info log to `out`.
fn add_log(log: &str, out: &mut BTreeMap<String, Compactions>) {
    let mut families: HashMap<u64, &str> = HashMap::new();
    for line in log.lines() {
        if let Some((family, job)) = compacting(line) {
            families.insert(job, family);
        } else if let Some(event) = line.split_once("EVENT_LOG_v1 ").map(|(_, e)| e) {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(event) else {
                continue;
            };
            if event["event"] != "compaction_finished" {
                continue;
            }
            let Some(family) = event["job"].as_u64().and_then(|j| families.get(&j)) else {
                continue;
            };
            let c = out.entry(family.to_string()).or_default();
            c.jobs += 1;
            c.cpu_s += event["compaction_time_cpu_micros"].as_f64().unwrap_or(0.0) / 1e6;
            c.written += event["total_output_size"].as_u64().unwrap_or(0);
        }
    }
}

/// The column family and job of a line `... [family] [JOB n] Compacting ...`.
fn compacting(line: &str) -> Option<(&str, u64)> {
    let (head, rest) = line.split_once("] [JOB ")?;
    let (job, rest) = rest.split_once(']')?;
    if !rest.starts_with(" Compacting") {
        return None;
    }
    let (_, family) = head.rsplit_once('[')?;
    Some((family, job.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_finished_compactions_to_their_column_families() {
        let log = r#"
2026/12/01-16:03:25.688 16871 [db/compaction/compaction_job.cc:2115] [identities_by_epoch] [JOB 25] Compacting 8@0 files to L6, score 1.00
2026/12/01-16:03:25.900 16871 [db/compaction/compaction_job.cc:2115] [leaves_by_epoch] [JOB 26] Compacting 8@0 + 1@6 files to L6, score 1.00
2026/12/01-16:03:26.106 16871 (Original Log Time 2026/12/01-16:03:26.106) EVENT_LOG_v1 {"time_micros": 1, "job": 25, "event": "compaction_finished", "compaction_time_cpu_micros": 257813, "total_output_size": 22774019}
2026/12/01-16:03:27.000 16871 EVENT_LOG_v1 {"time_micros": 2, "job": 26, "event": "compaction_finished", "compaction_time_cpu_micros": 1000000, "total_output_size": 5}
2026/12/01-16:03:27.719 16871 EVENT_LOG_v1 {"time_micros": 3, "job": 25, "event": "compaction_finished", "compaction_time_cpu_micros": 742187, "total_output_size": 1}
2026/12/01-16:03:27.800 16872 EVENT_LOG_v1 {"time_micros": 4, "job": 2, "event": "flush_finished"}
2026/12/01-16:03:27.900 16871 EVENT_LOG_v1 {"time_micros": 5, "job": 99, "event": "compaction_finished", "compaction_time_cpu_micros": 1}
2026/12/01-16:03:28.000 16871 EVENT_LOG_v1 {"cut short
"#;
        let mut out = BTreeMap::new();
        add_log(log, &mut out);
        // Job numbers start again in the next log: job 25 there is the tiles'.
        add_log(
            "x [tiles] [JOB 25] Compacting 4@0 files to L6\n\
             y EVENT_LOG_v1 {\"job\": 25, \"event\": \"compaction_finished\", \
             \"compaction_time_cpu_micros\": 500000, \"total_output_size\": 7}\n",
            &mut out,
        );
        let identities = &out["identities_by_epoch"];
        assert_eq!((identities.jobs, identities.written), (2, 22774020));
        assert!((identities.cpu_s - 1.0).abs() < 1e-9);
        assert_eq!(
            out["leaves_by_epoch"],
            Compactions {
                jobs: 1,
                cpu_s: 1.0,
                written: 5
            }
        );
        assert_eq!(out["tiles"].written, 7);
        assert_eq!(out.len(), 3);
    }
}

//! A fixed piece of work timed before each step of a scale series: how fast this machine is at
//! that moment, to tell a log that got slower from a machine that did.
//!
//! Within one series the gRPC threads' CPU time per entry, for the same work at every size,
//! rose by up to 1.8× (BENCHMARKS.md, "Scale"), and a fresh server's first million, run right
//! after a 30M series, was once as slow as that series' last. The probe times two things in
//! the load generator's own process, each the best of three tries so that one preemption does
//! not count: a dependent random read over 64 MiB (memory latency, which other tenants'
//! caches and memory traffic change), and SHA-256 over 16 MiB (the core's speed).

use sha2::{Digest, Sha256};
use std::time::Instant;

/// Reads a chase makes; ~0.1 s at ~100 ns a read.
const CHASE_READS: usize = 1 << 20;
/// Slots of the chase: 64 MiB of u32, well past the last-level cache.
const CHASE_SLOTS: usize = 16 << 20;
/// Bytes hashed a try.
const HASH_BYTES: usize = 16 << 20;

/// The probe's buffers, built once.
pub(crate) struct Probe {
    /// A single cycle through every slot (Sattolo's algorithm), so each read depends on the
    /// last and no prefetcher can guess the next.
    next: Vec<u32>,
    data: Vec<u8>,
}

/// One measurement.
pub(crate) struct Speed {
    /// Nanoseconds a dependent random read over 64 MiB.
    pub(crate) read_ns: f64,
    /// SHA-256 throughput, MB/s.
    pub(crate) sha256_mb_s: f64,
}

impl Probe {
    pub(crate) fn new() -> Probe {
        let mut next: Vec<u32> = (0..CHASE_SLOTS as u32).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..CHASE_SLOTS).rev() {
            // xorshift64: a fixed sequence, so every series chases the same cycle.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let j = (state % i as u64) as usize;
            next.swap(i, j);
        }
        let data = (0..HASH_BYTES).map(|i| i as u8).collect();
        Probe { next, data }
    }

    /// Times the probe now.
    pub(crate) fn run(&self) -> Speed {
        let best = |f: &dyn Fn() -> f64| (0..3).map(|_| f()).fold(f64::INFINITY, f64::min);
        let read_ns = best(&|| {
            let started = Instant::now();
            let mut at = 0u32;
            for _ in 0..CHASE_READS {
                at = self.next[at as usize];
            }
            std::hint::black_box(at);
            started.elapsed().as_nanos() as f64 / CHASE_READS as f64
        });
        let hash_s = best(&|| {
            let started = Instant::now();
            std::hint::black_box(Sha256::digest(&self.data));
            started.elapsed().as_secs_f64()
        });
        Speed {
            read_ns,
            sha256_mb_s: HASH_BYTES as f64 / hash_s / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chase visits every slot once before it comes back: one cycle, no short loop that
    /// would stay in the cache.
    #[test]
    fn the_chase_is_one_cycle_through_every_slot() {
        let probe = Probe::new();
        let mut at = 0u32;
        let mut steps = 0usize;
        loop {
            at = probe.next[at as usize];
            steps += 1;
            if at == 0 {
                break;
            }
            assert!(steps < CHASE_SLOTS, "no cycle back to 0");
        }
        assert_eq!(steps, CHASE_SLOTS);
        let speed = probe.run();
        assert!(speed.read_ns > 0.0 && speed.sha256_mb_s > 0.0);
    }
}

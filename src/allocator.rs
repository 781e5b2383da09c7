//! The allocator of the binaries that hold a RocksDB, `btlog` and `btlog-monitor`: jemalloc, for
//! Rust and for RocksDB's C++ alike (its `malloc` is the process's, so `operator new` reaches
//! it too).
//!
//! With glibc's malloc (capped at two arenas, trimmed every 5 s, to hold the memory down) the
//! server's CPU per entry grew with the log. Threads share an arena under its lock (the writer
//! frees what the gRPC threads allocated): at 10M entries the writer spent ~16% of its time in
//! `free`, `malloc_consolidate` and the lock's wake-ups, against ~7% at 1M. With jemalloc, on
//! logs of 38–47M entries, 1M entries took 12.0–13.5 s of server CPU against 14.6–17.8 s, and
//! a 30M series ran its 30th million at 111.5k entries/s against 78.2k (BENCHMARKS.md,
//! "Eleventh pass"). A monitor catching up on 30M entries from empty, alternated twice, took
//! 191 s of CPU against 194–212 s with glibc, and peaked at 183 MB against 201–206.
//!
//! jemalloc keeps per-thread caches and arenas assigned round-robin; freed pages go back to
//! the system after [`MALLOC_CONF`]'s decay, from a background thread, instead of a periodic
//! trim.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Dirty pages (freed, still mapped) are returned to the system within about a second, by
/// jemalloc's background thread rather than by the threads that allocate; the "muzzy" stage
/// (pages handed back lazily with `MADV_FREE`, still counted in the RSS) is skipped, so the RSS
/// reflects what is in use. Read by jemalloc before `main`, hence a static.
const MALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// The options jemalloc reads at its start (`malloc_conf`, unprefixed as the allocator is).
#[allow(non_upper_case_globals)]
#[no_mangle]
pub static malloc_conf: Option<&'static std::ffi::c_char> = Some(
    // SAFETY: a u8 and a c_char have the same size and alignment; the string is static and
    // NUL-terminated.
    unsafe { &*(MALLOC_CONF.as_ptr() as *const std::ffi::c_char) },
);

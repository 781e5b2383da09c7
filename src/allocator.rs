//! The binaries' memory allocator: jemalloc. The log's writer and RocksDB allocate and free
//! many small and large buffers per batch (entries, write batches, memtable and compaction
//! blocks); under glibc's malloc that took ~8% of the writer thread. With jemalloc, ingest
//! ran 0.87x the CPU (BENCHMARKS.md, "Scale").

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

//! In-process cost of a cached lookup in usage-authz's `VerdictCache`, at
//! several entry counts, and the heap each entry takes. This isolates the
//! cache from gRPC, so a lookup that grew with the entry count would show
//! here first.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use usage_authz::cache::{Lookup, VerdictCache};
use usage_authz::config::CacheConfig;
use usage_authz::decision::{Verdict, Workspace};
use usage_authz::keys::KeyDigest;

use crate::heap;
use crate::stats::{new_histogram, record};

/// Lookups between two clock reads, because one read per lookup would add
/// the clock's own cost to every sample.
const LOOKUPS_PER_SAMPLE: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct LookupCost {
    pub entries: u64,
    pub lookups: u64,
    pub mean_ns: f64,
    /// Percentiles of the mean over each run of `LOOKUPS_PER_SAMPLE`
    /// consecutive lookups.
    pub p50_ns: f64,
    pub p99_ns: f64,
    /// Heap bytes requested per entry while filling (allocator overhead
    /// excluded).
    pub heap_bytes_per_entry: f64,
    pub heap_allocations_per_entry: f64,
}

struct FilledCache {
    entries: u64,
    cache: VerdictCache,
    /// The cached digests in random order, walked in sequence so that the
    /// walk itself stays cheap and cache-friendly.
    digests: Vec<KeyDigest>,
    position: usize,
    samples: Histogram<u64>,
    lookups: u64,
    busy: Duration,
    heap_bytes: f64,
    heap_allocations: f64,
}

async fn fill(entries: u64, seed: u64) -> FilledCache {
    let mut digests: Vec<KeyDigest> = (0..entries)
        .map(|n| KeyDigest::of(&format!("bench-lookup-{entries}-{n}")))
        .collect();
    let config = CacheConfig {
        max_entries: entries * 2,
        ..CacheConfig::default()
    };
    let workspace = Workspace::parse("bench").expect("valid slug");

    let before = heap::snapshot();
    let cache = VerdictCache::new(&config);
    for digest in &digests {
        let verdict = Verdict::Allowed {
            workspace: workspace.clone(),
        };
        cache.insert(*digest, verdict).await;
    }
    let stored = cache.entry_count().await;
    let after = heap::snapshot();
    assert_eq!(stored, entries, "the cache dropped entries while filling");

    digests.shuffle(&mut SmallRng::seed_from_u64(seed));
    FilledCache {
        entries,
        cache,
        digests,
        position: 0,
        samples: new_histogram(),
        lookups: 0,
        busy: Duration::ZERO,
        heap_bytes: (after.bytes - before.bytes) as f64 / entries as f64,
        heap_allocations: (after.allocations - before.allocations) as f64 / entries as f64,
    }
}

impl FilledCache {
    async fn look_up_for(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            let started = Instant::now();
            for _ in 0..LOOKUPS_PER_SAMPLE {
                let digest = self.digests[self.position];
                self.position = (self.position + 1) % self.digests.len();
                let (result, lookup) = self
                    .cache
                    .get_or_check(digest, async { Err::<Verdict, ()>(()) })
                    .await;
                assert!(result.is_ok(), "a lookup of a filled entry failed");
                assert_eq!(lookup, Lookup::Hit, "a filled entry was not found");
            }
            let elapsed = started.elapsed();
            record(&mut self.samples, elapsed / LOOKUPS_PER_SAMPLE as u32);
            self.lookups += LOOKUPS_PER_SAMPLE as u64;
            self.busy += elapsed;
        }
    }

    fn cost(&self) -> LookupCost {
        LookupCost {
            entries: self.entries,
            lookups: self.lookups,
            mean_ns: self.busy.as_nanos() as f64 / self.lookups.max(1) as f64,
            p50_ns: self.samples.value_at_quantile(0.50) as f64,
            p99_ns: self.samples.value_at_quantile(0.99) as f64,
            heap_bytes_per_entry: self.heap_bytes,
            heap_allocations_per_entry: self.heap_allocations,
        }
    }
}

/// Fills one cache with `entries` entries and returns its heap cost, for
/// running under a heap profiler such as `valgrind --tool=dhat`.
pub async fn fill_once(entries: u64) -> LookupCost {
    fill(entries, 0).await.cost()
}

/// Fills one cache per size, then looks up random cached digests in each,
/// alternating between the caches for `rounds` rounds of `per_round`.
pub async fn measure(sizes: &[u64], rounds: u32, per_round: Duration) -> Vec<LookupCost> {
    let mut caches = Vec::new();
    for (index, &entries) in sizes.iter().enumerate() {
        caches.push(fill(entries, index as u64).await);
    }
    for _ in 0..rounds {
        for cache in &mut caches {
            cache.look_up_for(per_round).await;
        }
    }
    caches.iter().map(FilledCache::cost).collect()
}

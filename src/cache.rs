//! Verdict cache: keyed by the SHA-256 digest of the key (never the key),
//! bounded by entry count, with a lifetime chosen per entry by its outcome.
//!
//! Concurrent misses for one key share a single usage-check call: moka runs
//! one initialiser per key and hands its result to every waiter. Errors are
//! handed to the waiters too, but never stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use crate::config::CacheConfig;
use crate::decision::Verdict;
use crate::keys::KeyDigest;

/// How long each kind of verdict lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub ok_ttl: Duration,
    pub deny_ttl: Duration,
}

impl CachePolicy {
    pub fn new(config: &CacheConfig) -> Self {
        CachePolicy {
            ok_ttl: Duration::from_secs(config.ok_ttl_secs),
            deny_ttl: Duration::from_secs(config.deny_ttl_secs),
        }
    }

    /// An allowed key is trusted for longer than a denial, so that a key that
    /// gets fixed (credits topped up, key re-enabled) recovers quickly.
    pub fn ttl_for(&self, verdict: &Verdict) -> Duration {
        match verdict {
            Verdict::Allowed { .. } => self.ok_ttl,
            Verdict::Unauthorized | Verdict::PaymentRequired { .. } => self.deny_ttl,
        }
    }
}

/// A cached verdict with the lifetime it was stored with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedVerdict {
    pub verdict: Verdict,
    pub ttl: Duration,
    pub stored_at: Instant,
}

/// Whether a lookup was answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// This call, or one it waited on, asked the usage-check API.
    Miss,
}

struct PerEntryTtl;

impl Expiry<KeyDigest, Arc<CachedVerdict>> for PerEntryTtl {
    fn expire_after_create(&self, _: &KeyDigest, value: &Arc<CachedVerdict>, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &KeyDigest,
        value: &Arc<CachedVerdict>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

#[derive(Clone)]
pub struct VerdictCache {
    entries: Cache<KeyDigest, Arc<CachedVerdict>>,
    policy: CachePolicy,
}

impl VerdictCache {
    pub fn new(config: &CacheConfig) -> Self {
        let entries = Cache::builder()
            .max_capacity(config.max_entries)
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .build();
        VerdictCache {
            entries,
            policy: CachePolicy::new(config),
        }
    }

    pub fn policy(&self) -> CachePolicy {
        self.policy
    }

    /// Returns the cached verdict for `digest`, or runs `check` to get one.
    /// Concurrent callers with the same digest wait for one `check`; a
    /// failed `check` is returned to all of them and not stored.
    pub async fn get_or_check<F, E>(
        &self,
        digest: KeyDigest,
        check: F,
    ) -> (Result<Arc<CachedVerdict>, Arc<E>>, Lookup)
    where
        F: Future<Output = Result<Verdict, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(cached) = self.entries.get(&digest).await {
            return (Ok(cached), Lookup::Hit);
        }
        let policy = self.policy;
        let result = self
            .entries
            .entry(digest)
            .or_try_insert_with(async move {
                let verdict = check.await?;
                Ok(Arc::new(CachedVerdict {
                    ttl: policy.ttl_for(&verdict),
                    verdict,
                    stored_at: Instant::now(),
                }))
            })
            .await;
        match result {
            // Another caller may have stored the entry between the two
            // lookups; that still answered from the cache.
            Ok(entry) if !entry.is_fresh() => (Ok(entry.into_value()), Lookup::Hit),
            Ok(entry) => (Ok(entry.into_value()), Lookup::Miss),
            Err(error) => (Err(error), Lookup::Miss),
        }
    }

    /// Stores a verdict, replacing any entry for the digest.
    pub async fn insert(&self, digest: KeyDigest, verdict: Verdict) {
        let cached = CachedVerdict {
            ttl: self.policy.ttl_for(&verdict),
            verdict,
            stored_at: Instant::now(),
        };
        self.entries.insert(digest, Arc::new(cached)).await;
    }

    pub async fn get(&self, digest: &KeyDigest) -> Option<Arc<CachedVerdict>> {
        self.entries.get(digest).await
    }

    pub async fn invalidate(&self, digest: &KeyDigest) {
        self.entries.invalidate(digest).await;
    }

    /// Number of entries, after pending evictions and expiries are applied.
    pub async fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Workspace;

    fn config(ok: u64, deny: u64) -> CacheConfig {
        CacheConfig {
            ok_ttl_secs: ok,
            deny_ttl_secs: deny,
            max_entries: 100,
        }
    }

    #[test]
    fn ttl_by_outcome() {
        let policy = CachePolicy::new(&config(3600, 60));
        let allowed = Verdict::Allowed {
            workspace: Workspace::parse("acme").unwrap(),
        };
        let no_credits = Verdict::PaymentRequired {
            workspace: None,
            reason: None,
        };
        assert_eq!(policy.ttl_for(&allowed), Duration::from_secs(3600));
        assert_eq!(policy.ttl_for(&Verdict::Unauthorized), Duration::from_secs(60));
        assert_eq!(policy.ttl_for(&no_credits), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn failure_is_not_stored() {
        let cache = VerdictCache::new(&config(60, 60));
        let digest = KeyDigest::of("k");
        let (result, lookup) = cache
            .get_or_check(digest, async { Err::<Verdict, _>("backend down") })
            .await;
        assert!(result.is_err());
        assert_eq!(lookup, Lookup::Miss);
        assert!(cache.get(&digest).await.is_none());
    }

    #[tokio::test]
    async fn second_lookup_is_a_hit() {
        let cache = VerdictCache::new(&config(60, 60));
        let digest = KeyDigest::of("k");
        let (first, lookup) = cache
            .get_or_check(digest, async { Ok::<_, ()>(Verdict::Unauthorized) })
            .await;
        assert_eq!(first.unwrap().verdict, Verdict::Unauthorized);
        assert_eq!(lookup, Lookup::Miss);
        let (second, lookup) = cache
            .get_or_check(digest, async {
                panic!("must not call the API on a hit") as Result<Verdict, ()>
            })
            .await;
        assert_eq!(second.unwrap().verdict, Verdict::Unauthorized);
        assert_eq!(lookup, Lookup::Hit);
    }

    #[tokio::test]
    async fn entry_expires_after_its_ttl() {
        let cache = VerdictCache::new(&config(1, 1));
        let digest = KeyDigest::of("k");
        cache.insert(digest, Verdict::Unauthorized).await;
        assert!(cache.get(&digest).await.is_some());
        // moka reads the system clock, so this waits in real time.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(cache.get(&digest).await.is_none());
    }
}

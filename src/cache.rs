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

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::CacheConfig;
use crate::decision::{Verdict, Workspace};
use crate::keys::KeyDigest;

/// How long each kind of verdict lives, and when an allowed one is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    pub ok_ttl: Duration,
    pub deny_ttl: Duration,
    /// Zero turns refresh-ahead off.
    pub refresh_ahead: Duration,
    pub jitter_percent: u8,
}

impl CachePolicy {
    pub fn new(config: &CacheConfig) -> Self {
        CachePolicy {
            ok_ttl: Duration::from_secs(config.ok_ttl_secs),
            deny_ttl: Duration::from_secs(config.deny_ttl_secs),
            refresh_ahead: Duration::from_secs(config.refresh_ahead_secs)
                .min(Duration::from_secs(config.ok_ttl_secs) / 2),
            jitter_percent: config.ttl_jitter_percent,
        }
    }

    /// An allowed key is trusted for longer than a denial, so that a key that
    /// gets fixed (credits topped up, key re-enabled) recovers quickly.
    fn base_ttl(&self, verdict: &Verdict) -> Duration {
        match verdict {
            Verdict::Allowed { .. } => self.ok_ttl,
            Verdict::Unauthorized | Verdict::PaymentRequired { .. } => self.deny_ttl,
        }
    }

    /// The lifetime of one entry: the base lifetime moved by up to
    /// `jitter_percent` either way. `unit` is a random number in [0, 1).
    pub fn ttl_for(&self, verdict: &Verdict, unit: f64) -> Duration {
        let base = self.base_ttl(verdict);
        let spread = base.as_secs_f64() * f64::from(self.jitter_percent) / 100.0;
        let offset = spread * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base.as_secs_f64() + offset).max(0.001))
    }

    /// Whether a read at `now` should start a background refresh: only for
    /// allowed entries inside the refresh window. Denials are not refreshed,
    /// since keeping a denied key warm would only spend usage-check calls.
    pub fn should_refresh(&self, entry: &CachedVerdict, now: Instant) -> bool {
        if self.refresh_ahead.is_zero() || !matches!(entry.verdict, Verdict::Allowed { .. }) {
            return false;
        }
        entry.expires_at.saturating_duration_since(now) <= self.refresh_ahead
    }
}

/// A cached verdict and the moment it expires. Stored by value in the cache:
/// a separate allocation per entry would cost more than the entry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedVerdict {
    pub verdict: Verdict,
    pub expires_at: Instant,
}

impl CachedVerdict {
    fn new(verdict: Verdict, ttl: Duration) -> Self {
        CachedVerdict {
            verdict,
            expires_at: Instant::now() + ttl,
        }
    }

    fn workspace(&self) -> Option<&Workspace> {
        match &self.verdict {
            Verdict::Allowed { workspace } => Some(workspace),
            Verdict::PaymentRequired { workspace, .. } => workspace.as_ref(),
            Verdict::Unauthorized => None,
        }
    }
}

/// Entries whose refresh has started, with the expiry of the entry each
/// refresh is for. A claim ends when a refresh stores its answer, or when
/// the entry it was for has expired.
#[derive(Default)]
struct RefreshClaims(Mutex<HashMap<KeyDigest, Instant>>);

/// Number of claims above which expired ones are swept out on each claim.
const CLAIMS_SWEEP_THRESHOLD: usize = 1024;

impl RefreshClaims {
    /// Returns true for exactly one caller per cached entry.
    fn claim(&self, digest: KeyDigest, entry: &CachedVerdict, now: Instant) -> bool {
        let mut claims = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if claims.len() > CLAIMS_SWEEP_THRESHOLD {
            claims.retain(|_, expires_at| *expires_at > now);
        }
        match claims.get(&digest) {
            Some(expires_at) if *expires_at == entry.expires_at => false,
            _ => {
                claims.insert(digest, entry.expires_at);
                true
            }
        }
    }

    fn release(&self, digest: &KeyDigest) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(digest);
    }
}

/// Whether a lookup was answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// This call, or one it waited on, asked the usage-check API.
    Miss,
}

/// Entry counts by outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EntryCounts {
    pub allowed: u64,
    pub unauthorized: u64,
    pub payment_required: u64,
}

struct PerEntryTtl;

impl Expiry<KeyDigest, CachedVerdict> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _: &KeyDigest,
        value: &CachedVerdict,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _: &KeyDigest,
        value: &CachedVerdict,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(updated_at))
    }
}

#[derive(Clone)]
pub struct VerdictCache {
    entries: Cache<KeyDigest, CachedVerdict>,
    policy: CachePolicy,
    max_entries: u64,
    refresh_claims: Arc<RefreshClaims>,
}

impl VerdictCache {
    pub fn new(config: &CacheConfig) -> Self {
        let entries = Cache::builder()
            .max_capacity(config.max_entries)
            .expire_after(PerEntryTtl)
            .build();
        VerdictCache {
            entries,
            policy: CachePolicy::new(config),
            max_entries: config.max_entries,
            refresh_claims: Arc::default(),
        }
    }

    pub fn max_entries(&self) -> u64 {
        self.max_entries
    }

    fn entry_for(&self, verdict: Verdict) -> CachedVerdict {
        let ttl = self.policy.ttl_for(&verdict, rand::random::<f64>());
        CachedVerdict::new(verdict, ttl)
    }

    /// Whether a hit on `entry` at `now` should start the one background
    /// refresh of that entry; true for one caller per entry.
    pub fn claim_refresh(&self, digest: KeyDigest, entry: &CachedVerdict, now: Instant) -> bool {
        self.policy.should_refresh(entry, now) && self.refresh_claims.claim(digest, entry, now)
    }

    /// Stores the answer of a refresh and ends its claim.
    pub async fn complete_refresh(&self, digest: KeyDigest, verdict: Verdict) {
        self.insert(digest, verdict).await;
        self.refresh_claims.release(&digest);
    }

    /// Returns the cached verdict for `digest`, or runs `check` to get one.
    /// Concurrent callers with the same digest wait for one `check`; a
    /// failed `check` is returned to all of them and not stored.
    pub async fn get_or_check<F, E>(
        &self,
        digest: KeyDigest,
        check: F,
    ) -> (Result<CachedVerdict, Arc<E>>, Lookup)
    where
        F: Future<Output = Result<Verdict, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(cached) = self.entries.get(&digest).await {
            return (Ok(cached), Lookup::Hit);
        }
        let result = self
            .entries
            .entry(digest)
            .or_try_insert_with(async move { Ok(self.entry_for(check.await?)) })
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
        self.entries.insert(digest, self.entry_for(verdict)).await;
    }

    pub async fn get(&self, digest: &KeyDigest) -> Option<CachedVerdict> {
        self.entries.get(digest).await
    }

    /// Drops one entry; returns whether it was cached.
    pub async fn invalidate(&self, digest: &KeyDigest) -> bool {
        self.entries.remove(digest).await.is_some()
    }

    /// Drops every entry naming `workspace` and returns how many there were.
    /// Walks the whole cache, which takes about a second per million
    /// entries; lookups go on meanwhile.
    pub async fn invalidate_workspace(&self, workspace: &Workspace) -> u64 {
        let matching: Vec<Arc<KeyDigest>> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.workspace() == Some(workspace))
            .map(|(digest, _)| digest)
            .collect();
        let mut dropped = 0;
        for digest in matching {
            if self.entries.remove(&*digest).await.is_some() {
                dropped += 1;
            }
        }
        dropped
    }

    /// Number of entries, after pending evictions and expiries are applied.
    pub async fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }

    /// Counts live entries by outcome by walking the cache.
    pub fn count_by_outcome(&self) -> EntryCounts {
        let mut counts = EntryCounts::default();
        for (_, entry) in self.entries.iter() {
            match entry.verdict {
                Verdict::Allowed { .. } => counts.allowed += 1,
                Verdict::Unauthorized => counts.unauthorized += 1,
                Verdict::PaymentRequired { .. } => counts.payment_required += 1,
            }
        }
        counts
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
            refresh_ahead_secs: 0,
            ttl_jitter_percent: 0,
        }
    }

    fn acme() -> Verdict {
        Verdict::Allowed {
            workspace: Workspace::parse("acme").unwrap(),
        }
    }

    #[test]
    fn ttl_by_outcome() {
        let policy = CachePolicy::new(&config(3600, 60));
        let no_credits = Verdict::PaymentRequired {
            workspace: None,
            reason: None,
        };
        assert_eq!(policy.ttl_for(&acme(), 0.3), Duration::from_secs(3600));
        assert_eq!(
            policy.ttl_for(&Verdict::Unauthorized, 0.9),
            Duration::from_secs(60)
        );
        assert_eq!(policy.ttl_for(&no_credits, 0.0), Duration::from_secs(60));
    }

    #[test]
    fn jitter_table() {
        let mut cache_config = config(1000, 60);
        cache_config.ttl_jitter_percent = 10;
        let policy = CachePolicy::new(&cache_config);
        // (random unit, expected seconds)
        let rows = [
            (0.0, 900.0),
            (0.25, 950.0),
            (0.5, 1000.0),
            (0.75, 1050.0),
            (0.999_999, 1100.0),
        ];
        for (unit, seconds) in rows {
            let ttl = policy.ttl_for(&acme(), unit).as_secs_f64();
            assert!(
                (ttl - seconds).abs() < 0.01,
                "unit {unit}: {ttl} s, expected {seconds} s"
            );
        }
    }

    #[test]
    fn refresh_window_table() {
        let mut cache_config = config(100, 10);
        cache_config.refresh_ahead_secs = 20;
        let policy = CachePolicy::new(&cache_config);
        let secs = Duration::from_secs;
        let start = Instant::now();
        let entry = |verdict: Verdict, ttl: Duration| CachedVerdict {
            verdict,
            expires_at: start + ttl,
        };
        let allowed = entry(acme(), secs(100));
        let denied = entry(Verdict::Unauthorized, secs(10));
        // (entry, seconds after it was stored, refresh?)
        let rows = [
            (&allowed, 0, false),
            (&allowed, 79, false),
            (&allowed, 80, true),
            (&allowed, 99, true),
            (&allowed, 150, true),
            (&denied, 9, false),
        ];
        for (entry, after, expected) in rows {
            let now = start + secs(after);
            assert_eq!(
                policy.should_refresh(entry, now),
                expected,
                "{:?} at +{after}s",
                entry.verdict
            );
        }
        let mut off = cache_config.clone();
        off.refresh_ahead_secs = 0;
        assert!(!CachePolicy::new(&off).should_refresh(&allowed, start + secs(99)));
    }

    #[test]
    fn refresh_window_is_capped_at_half_the_lifetime() {
        let mut cache_config = config(10, 5);
        cache_config.refresh_ahead_secs = 300;
        assert_eq!(
            CachePolicy::new(&cache_config).refresh_ahead,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn refresh_is_claimed_once_per_entry() {
        let claims = RefreshClaims::default();
        let digest = KeyDigest::of("k");
        let entry = CachedVerdict::new(acme(), Duration::from_secs(10));
        let now = Instant::now();
        assert!(claims.claim(digest, &entry, now));
        assert!(!claims.claim(digest, &entry, now));
        // A replacement entry has its own expiry, so it can be claimed.
        let replacement = CachedVerdict::new(acme(), Duration::from_secs(20));
        assert!(claims.claim(digest, &replacement, now));
        claims.release(&digest);
        assert!(claims.claim(digest, &replacement, now));
    }

    #[test]
    fn expired_claims_are_swept() {
        let claims = RefreshClaims::default();
        let expired = CachedVerdict::new(acme(), Duration::ZERO);
        let later = Instant::now() + Duration::from_secs(1);
        for n in 0..=CLAIMS_SWEEP_THRESHOLD {
            assert!(claims.claim(KeyDigest::of(&n.to_string()), &expired, later));
        }
        let live = CachedVerdict::new(acme(), Duration::from_secs(60));
        assert!(claims.claim(KeyDigest::of("live"), &live, later));
        assert_eq!(claims.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn workspace_invalidation_is_scoped() {
        let cache = VerdictCache::new(&config(60, 60));
        let other = Verdict::Allowed {
            workspace: Workspace::parse("other").unwrap(),
        };
        let broke = Verdict::PaymentRequired {
            workspace: Workspace::parse("acme"),
            reason: None,
        };
        cache.insert(KeyDigest::of("a1"), acme()).await;
        cache.insert(KeyDigest::of("a2"), acme()).await;
        cache.insert(KeyDigest::of("a3"), broke).await;
        cache.insert(KeyDigest::of("o1"), other).await;
        cache.insert(KeyDigest::of("u1"), Verdict::Unauthorized).await;

        let dropped = cache
            .invalidate_workspace(&Workspace::parse("acme").unwrap())
            .await;
        assert_eq!(dropped, 3);
        for key in ["a1", "a2", "a3"] {
            assert!(
                cache.get(&KeyDigest::of(key)).await.is_none(),
                "{key} still cached"
            );
        }
        for key in ["o1", "u1"] {
            assert!(
                cache.get(&KeyDigest::of(key)).await.is_some(),
                "{key} was dropped"
            );
        }
        assert_eq!(
            cache.count_by_outcome(),
            EntryCounts {
                allowed: 1,
                unauthorized: 1,
                payment_required: 0
            }
        );
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

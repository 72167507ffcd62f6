//! The gRPC `envoy.service.auth.v3.Authorization` implementation: the I/O
//! shell around the pure decision functions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::cache::{CachedVerdict, Lookup, VerdictCache};
use crate::config::Config;
use crate::decision::{self, Decision, Denial, Gate};
use crate::keys::{ApiKey, KeyDigest, KeyRules};
use crate::metrics::{Metrics, ResultLabels};
use crate::request::HttpView;
use crate::response::Renderer;
use crate::routes::RouteRules;
use crate::usage_check::UsageCheckClient;

/// Everything a check needs, shared by all connections.
pub struct Authorizer {
    routes: RouteRules,
    keys: KeyRules,
    renderer: Renderer,
    cache: VerdictCache,
    client: UsageCheckClient,
    metrics: Arc<Metrics>,
    backend_warnings: RateLimitedWarning,
}

impl Authorizer {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        Ok(Authorizer {
            routes: RouteRules::new(&config.routes),
            keys: KeyRules::new(&config.keys),
            renderer: Renderer::new(config),
            cache: VerdictCache::new(&config.cache),
            client: UsageCheckClient::new(&config.usage_check)?,
            metrics,
            backend_warnings: RateLimitedWarning::default(),
        })
    }

    pub fn cache(&self) -> &VerdictCache {
        &self.cache
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Decides one request and records it in the metrics.
    pub async fn check(self: &Arc<Self>, request: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        self.metrics.checks_in_flight.inc();
        let decision = self.decide(request).await;
        self.metrics.checks_in_flight.dec();
        self.metrics.record_decision(&decision, started.elapsed());
        if let Decision::Denied(denial) = &decision {
            tracing::debug!(reason = denial.reason(), "request denied");
        }
        self.renderer.render(&decision)
    }

    /// Decides one request: exemption and key checks first, then the cache,
    /// then the usage-check API.
    pub async fn decide(self: &Arc<Self>, request: &CheckRequest) -> Decision {
        let view = HttpView::of(request);
        let (key, channel) = match decision::gate(&view, &self.routes, &self.keys) {
            Gate::Decided(decision) => return decision,
            Gate::NeedsUsageCheck(key, channel) => (key, channel),
        };

        let digest = key.digest();
        let (result, lookup) = self
            .cache
            .get_or_check(digest, async {
                self.client.check(&key, self.metrics.as_ref()).await
            })
            .await;
        self.metrics
            .record_lookup(lookup, result.as_ref().ok().map(|cached| &cached.verdict));
        match result {
            Ok(cached) => {
                if lookup == Lookup::Hit {
                    self.refresh_if_due(&cached, &key, digest);
                }
                tracing::debug!(
                    key.fingerprint = %digest.fingerprint(),
                    key.channel = channel.as_str(),
                    cache = if lookup == Lookup::Hit { "hit" } else { "miss" },
                    outcome = cached.verdict.outcome(),
                    "usage verdict"
                );
                Decision::from(cached.verdict)
            }
            Err(error) => {
                if let Some(suppressed) = self.backend_warnings.should_log() {
                    tracing::warn!(
                        error = %error,
                        error.kind = error.kind(),
                        key.fingerprint = %digest.fingerprint(),
                        suppressed_since_last = suppressed,
                        "usage check failed; denying with 503"
                    );
                }
                Decision::Denied(Denial::BackendUnavailable)
            }
        }
    }

    /// Starts one background usage check when an allowed entry nears its
    /// expiry. Callers keep the cached answer meanwhile; a failed refresh
    /// leaves the old entry to expire on time.
    fn refresh_if_due(self: &Arc<Self>, cached: &CachedVerdict, key: &ApiKey, digest: KeyDigest) {
        if !self.cache.claim_refresh(digest, cached, Instant::now()) {
            return;
        }
        let authorizer = Arc::clone(self);
        let key = key.clone();
        tokio::spawn(async move {
            match authorizer.client.check(&key, authorizer.metrics.as_ref()).await {
                Ok(verdict) => {
                    tracing::debug!(
                        key.fingerprint = %digest.fingerprint(),
                        outcome = verdict.outcome(),
                        "refreshed verdict ahead of expiry"
                    );
                    authorizer.cache.complete_refresh(digest, verdict).await;
                    authorizer
                        .metrics
                        .cache_refreshes
                        .get_or_create(&ResultLabels { result: "replaced" })
                        .inc();
                }
                Err(error) => {
                    tracing::warn!(
                        error = %error,
                        error.kind = error.kind(),
                        key.fingerprint = %digest.fingerprint(),
                        "refresh ahead of expiry failed; the cached verdict expires as scheduled"
                    );
                    authorizer
                        .metrics
                        .cache_refreshes
                        .get_or_create(&ResultLabels { result: "failed" })
                        .inc();
                }
            }
        });
    }
}

/// The tonic service; a cheap handle on the shared [`Authorizer`].
#[derive(Clone)]
pub struct AuthzService {
    authorizer: Arc<Authorizer>,
}

impl AuthzService {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        AuthzService { authorizer }
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(&self, request: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.authorizer.check(request.get_ref()).await))
    }
}

/// Lets one warning through per second and counts the ones held back, so an
/// API outage under load logs a steady trickle instead of a line per request.
#[derive(Default)]
struct RateLimitedWarning {
    last_second: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimitedWarning {
    /// Returns the number of warnings suppressed since the last one logged,
    /// or `None` if this one should be suppressed too.
    fn should_log(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_second.load(Ordering::Relaxed);
        if now > last
            && self
                .last_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

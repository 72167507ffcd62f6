//! The gRPC `envoy.service.auth.v3.Authorization` implementation: the I/O
//! shell around the pure decision functions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::cache::{Lookup, VerdictCache};
use crate::config::Config;
use crate::decision::{self, Decision, Denial, Gate};
use crate::keys::KeyRules;
use crate::request::HttpView;
use crate::response::Renderer;
use crate::routes::RouteRules;
use crate::usage_check::{NoObserver, UsageCheckClient};

/// Everything a check needs, shared by all connections.
pub struct Authorizer {
    routes: RouteRules,
    keys: KeyRules,
    renderer: Renderer,
    cache: VerdictCache,
    client: UsageCheckClient,
    backend_warnings: RateLimitedWarning,
}

impl Authorizer {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Authorizer {
            routes: RouteRules::new(&config.routes),
            keys: KeyRules::new(&config.keys),
            renderer: Renderer::new(config),
            cache: VerdictCache::new(&config.cache),
            client: UsageCheckClient::new(&config.usage_check)?,
            backend_warnings: RateLimitedWarning::default(),
        })
    }

    pub fn cache(&self) -> &VerdictCache {
        &self.cache
    }

    /// Decides one request: exemption and key checks first, then the cache,
    /// then the usage-check API.
    pub async fn decide(&self, request: &CheckRequest) -> Decision {
        let view = HttpView::of(request);
        let (key, channel) = match decision::gate(&view, &self.routes, &self.keys) {
            Gate::Decided(decision) => return decision,
            Gate::NeedsUsageCheck(key, channel) => (key, channel),
        };

        let digest = key.digest();
        let (result, lookup) = self
            .cache
            .get_or_check(digest, async { self.client.check(&key, &NoObserver).await })
            .await;
        match result {
            Ok(cached) => {
                tracing::debug!(
                    key.fingerprint = %digest.fingerprint(),
                    key.channel = channel.as_str(),
                    cache = if lookup == Lookup::Hit { "hit" } else { "miss" },
                    outcome = cached.verdict.outcome(),
                    "usage verdict"
                );
                Decision::from(cached.verdict.clone())
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

    pub fn render(&self, decision: &Decision) -> CheckResponse {
        self.renderer.render(decision)
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
        let decision = self.authorizer.decide(request.get_ref()).await;
        if let Decision::Denied(denial) = &decision {
            tracing::debug!(reason = denial.reason(), "request denied");
        }
        Ok(Response::new(self.authorizer.render(&decision)))
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

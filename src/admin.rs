//! The admin gRPC API (`usage_authz.admin.v1.CacheAdmin`): invalidate one
//! key or a whole workspace, and read cache statistics. Served on its own
//! listener with gRPC reflection, behind a bearer token.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::config::AdminToken;
use crate::decision::Workspace;
use crate::keys::KeyDigest;
use crate::metrics::{Metrics, ScopeLabels};
use crate::service::Authorizer;

/// Generated protobuf and gRPC types of the admin API.
pub mod pb {
    tonic::include_proto!("usage_authz.admin.v1");

    /// Descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("admin_descriptor");
}

use pb::cache_admin_server::CacheAdmin;
use pb::invalidate_key_request::Key;

pub struct AdminService {
    authorizer: Arc<Authorizer>,
}

impl AdminService {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        AdminService { authorizer }
    }

    fn metrics(&self) -> &Metrics {
        self.authorizer.metrics()
    }
}

#[tonic::async_trait]
impl CacheAdmin for AdminService {
    async fn invalidate_key(
        &self,
        request: Request<pb::InvalidateKeyRequest>,
    ) -> Result<Response<pb::InvalidateKeyResponse>, Status> {
        let digest = match request.into_inner().key {
            Some(Key::ApiKey(key)) if !key.is_empty() => KeyDigest::of(&key),
            Some(Key::KeySha256(hex)) => KeyDigest::from_hex(&hex).ok_or_else(|| {
                Status::invalid_argument(
                    "key_sha256 must be 64 hex digits: the SHA-256 of the key's UTF-8 bytes",
                )
            })?,
            _ => return Err(Status::invalid_argument("set api_key or key_sha256")),
        };
        let was_cached = self.authorizer.cache().invalidate(&digest).await;
        if was_cached {
            self.metrics()
                .cache_invalidations
                .get_or_create(&ScopeLabels { scope: "key" })
                .inc();
        }
        tracing::info!(key.fingerprint = %digest.fingerprint(), was_cached, "admin invalidated key");
        Ok(Response::new(pb::InvalidateKeyResponse { was_cached }))
    }

    async fn invalidate_workspace(
        &self,
        request: Request<pb::InvalidateWorkspaceRequest>,
    ) -> Result<Response<pb::InvalidateWorkspaceResponse>, Status> {
        let text = request.into_inner().workspace;
        let workspace = Workspace::parse(&text).ok_or_else(|| {
            Status::invalid_argument(format!(
                "workspace {text:?} is not a valid slug: expected [A-Za-z0-9][A-Za-z0-9_-]*, at most 128 bytes"
            ))
        })?;
        let invalidated = self.authorizer.cache().invalidate_workspace(&workspace).await;
        self.metrics()
            .cache_invalidations
            .get_or_create(&ScopeLabels { scope: "workspace" })
            .inc_by(invalidated);
        tracing::info!(workspace = %workspace, invalidated, "admin invalidated workspace");
        Ok(Response::new(pb::InvalidateWorkspaceResponse { invalidated }))
    }

    async fn get_cache_stats(
        &self,
        _request: Request<pb::GetCacheStatsRequest>,
    ) -> Result<Response<pb::CacheStats>, Status> {
        let cache = self.authorizer.cache();
        let entries = cache.entry_count().await;
        let counts = cache.count_by_outcome();
        let metrics = self.metrics();
        Ok(Response::new(pb::CacheStats {
            entries,
            max_entries: cache.max_entries(),
            allowed_entries: counts.allowed,
            unauthorized_entries: counts.unauthorized,
            payment_required_entries: counts.payment_required,
            hits_total: metrics.lookups_total("hit"),
            misses_total: metrics.lookups_total("miss"),
            refreshes_total: metrics.refreshes_total(),
            invalidations_total: metrics.invalidations_total(),
        }))
    }
}

/// Checks `authorization: Bearer <token>` on every admin call. Without a
/// configured token, which start-up allows only on a loopback address,
/// every call passes.
#[derive(Clone)]
pub struct TokenCheck {
    expected: Option<Arc<Vec<u8>>>,
}

impl TokenCheck {
    pub fn new(token: Option<&AdminToken>) -> Self {
        TokenCheck {
            expected: token.map(|t| Arc::new(format!("Bearer {}", t.expose()).into_bytes())),
        }
    }

    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes())
            .unwrap_or_default();
        // Constant-time, so response timing does not reveal how much of a
        // guessed token was right.
        if bool::from(presented.ct_eq(expected.as_slice())) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "missing or wrong admin token: send `authorization: Bearer <admin.token>`",
            ))
        }
    }
}

//! The listeners and their lifecycle: `Authorization/Check` and
//! `grpc.health.v1.Health` on the gRPC port, metrics and probes on the HTTP
//! port, the admin API on its own port, and a bounded graceful drain on
//! shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::admin::{
    AdminService, TokenCheck, pb::FILE_DESCRIPTOR_SET, pb::cache_admin_server::CacheAdminServer,
};
use crate::config::Config;
use crate::http_endpoints::{Readiness, serve_http};
use crate::metrics::Metrics;
use crate::service::{Authorizer, AuthzService};

/// The three bound listeners. Binding is left to the caller so that tests
/// can pass `127.0.0.1:0` listeners and read their ports.
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses of the configuration; errors name the key.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let bind = |key: &'static str, addr: std::net::SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| anyhow::anyhow!("cannot listen on {key} = {addr}: {error}"))
        };
        Ok(Listeners {
            grpc: bind("server.grpc_addr", config.server.grpc_addr).await?,
            metrics: bind("server.metrics_addr", config.server.metrics_addr).await?,
            admin: bind("admin.addr", config.admin.addr).await?,
        })
    }
}

/// Runs every listener until `shutdown` completes, then drains the gRPC
/// listener for at most `server.shutdown_grace_secs`.
pub async fn run(
    listeners: Listeners,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let authorizer = Arc::new(Authorizer::new(config, metrics)?);
    let readiness = Readiness::default();

    let http_task = tokio::spawn(serve_http(
        listeners.metrics,
        Arc::clone(&authorizer),
        readiness.clone(),
    ));
    let admin_task = tokio::spawn(serve_admin(
        listeners.admin,
        Arc::clone(&authorizer),
        TokenCheck::new(config.admin.token.as_ref()),
    ));
    if config.admin.token.is_none() {
        tracing::warn!(admin.addr = %config.admin.addr, "admin API has no token; any local process can invalidate cache entries");
    }

    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let result = serve_grpc(listeners.grpc, authorizer, grace, readiness, shutdown).await;
    http_task.abort();
    admin_task.abort();
    result
}

/// Serves the admin API, with reflection, until the task is dropped.
async fn serve_admin(
    listener: TcpListener,
    authorizer: Arc<Authorizer>,
    token: TokenCheck,
) -> anyhow::Result<()> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let result = tonic::transport::Server::builder()
        .layer(tonic::service::InterceptorLayer::new(move |request| {
            token.check(request)
        }))
        .add_service(CacheAdminServer::new(AdminService::new(authorizer)))
        .add_service(reflection)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await;
    if let Err(error) = &result {
        tracing::error!(%error, "admin listener stopped");
    }
    Ok(result?)
}

/// Health service name of the Check API, as Envoy's gRPC health checks and
/// `grpc_health_probe -service` name it.
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// Serves checks on `listener` until `shutdown` completes, then reports
/// NOT_SERVING, stops accepting, and waits at most `grace` for in-flight
/// checks. Returns once drained or when `grace` runs out.
pub async fn serve_grpc(
    listener: TcpListener,
    authorizer: Arc<Authorizer>,
    grace: Duration,
    readiness: Readiness,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    readiness.set(true);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Check calls are small and latency-bound, so Nagle's delay would only
    // add latency.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serving = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(AuthorizationServer::new(AuthzService::new(authorizer)))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    tokio::pin!(serving);

    tokio::select! {
        result = &mut serving => return result.map_err(Into::into),
        () = shutdown => {}
    }

    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "shutting down: health is NOT_SERVING, draining in-flight checks"
    );
    readiness.set(false);
    set_health(&health, ServingStatus::NotServing).await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(grace, serving).await {
        Ok(result) => {
            tracing::info!("drained gRPC connections");
            result.map_err(Into::into)
        }
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                "grace period ended before every connection closed; exiting anyway"
            );
            Ok(())
        }
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(AUTHORIZATION_SERVICE, status).await;
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on Unix");
        tokio::select! {
            _ = interrupt => tracing::info!(signal = "SIGINT", "shutdown requested"),
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        tracing::info!(signal = "ctrl-c", "shutdown requested");
    }
}

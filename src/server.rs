//! The gRPC listener: `Authorization/Check` and `grpc.health.v1.Health` on
//! one port, with a bounded graceful drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::service::{Authorizer, AuthzService};

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
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;

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

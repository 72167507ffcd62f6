use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use usage_authz::cli::Cli;
use usage_authz::config::Config;
use usage_authz::server;
use usage_authz::service::Authorizer;
use usage_authz::telemetry;

/// Exit code for a configuration error (EX_CONFIG from sysexits.h).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("usage-authz: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(config.log.format);

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "exiting on error");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let authorizer = Arc::new(Authorizer::new(&config)?);
    let listener = tokio::net::TcpListener::bind(config.server.grpc_addr)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on server.grpc_addr {}: {e}",
                config.server.grpc_addr
            )
        })?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        grpc.addr = %listener.local_addr()?,
        config = %config.to_log_string(),
        "usage-authz listening"
    );
    server::serve_grpc(
        listener,
        authorizer,
        Duration::from_secs(config.server.shutdown_grace_secs),
        server::shutdown_signal(),
    )
    .await
}

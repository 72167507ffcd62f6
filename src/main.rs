use std::process::ExitCode;

use clap::Parser;
use usage_authz::cli::{Cli, Command};
use usage_authz::config::Config;
use usage_authz::server::{self, Listeners};
use usage_authz::{admin_cli, telemetry};

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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("usage-authz: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    if let Some(Command::Admin(args)) = cli.command {
        return match runtime.block_on(admin_cli::run(args, &config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("usage-authz admin: {error:#}");
                ExitCode::FAILURE
            }
        };
    }

    telemetry::init(config.log.format);
    match runtime.block_on(serve(config)) {
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        grpc.addr = %listeners.grpc.local_addr()?,
        metrics.addr = %listeners.metrics.local_addr()?,
        admin.addr = %listeners.admin.local_addr()?,
        config = %config.to_log_string(),
        "usage-authz listening"
    );
    server::run(listeners, &config, server::shutdown_signal()).await
}

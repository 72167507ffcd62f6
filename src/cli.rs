//! Command-line interface.

use std::path::PathBuf;

use clap::Parser;

/// Envoy ext_authz gRPC service that allows a request only when its API key
/// may run inference and its workspace can spend credits.
#[derive(Debug, Parser)]
#[command(name = "usage-authz", version, about)]
pub struct Cli {
    /// TOML configuration file. Environment variables prefixed with
    /// USAGE_AUTHZ_ override it, e.g. USAGE_AUTHZ_CACHE__OK_TTL_SECS=600.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Envoy ext_authz gRPC service that allows a request only when its API key
/// may run inference and its workspace can spend credits.
#[derive(Debug, Parser)]
#[command(name = "usage-authz", version, about)]
pub struct Cli {
    /// TOML configuration file. Environment variables prefixed with
    /// USAGE_AUTHZ_ override it, e.g. USAGE_AUTHZ_CACHE__OK_TTL_SECS=600.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Call the admin API of a running instance (address and token from the
    /// configuration's [admin] section).
    Admin(AdminArgs),
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Admin address to call instead of admin.addr, e.g. 10.0.3.7:9003 or
    /// usage-authz-0.usage-authz-admin:9003 (host names are resolved).
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,

    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Drop cached verdicts, so the next request asks the usage-check API.
    Invalidate(InvalidateTarget),
    /// Print cache statistics as JSON.
    Stats,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct InvalidateTarget {
    /// The API key, or `-` to read it from standard input. It is hashed
    /// locally; only its SHA-256 is sent. Prefer `-`: a key given here shows
    /// in the process list and the shell history.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,

    /// SHA-256 of the API key, as 64 hex digits.
    #[arg(long, value_name = "HEX")]
    pub key_sha256: Option<String>,

    /// Workspace slug: drops every verdict of that workspace.
    #[arg(long, value_name = "SLUG")]
    pub workspace: Option<String>,
}

//! `usage-authz admin …`: a client for the admin API of a running instance.

use std::io::{Read, Write};
use std::net::SocketAddr;

use tonic::Request;
use tonic::metadata::MetadataValue;

use crate::admin::pb::cache_admin_client::CacheAdminClient;
use crate::admin::pb::{self, invalidate_key_request::Key};
use crate::cli::{AdminAction, AdminArgs};
use crate::config::Config;
use crate::keys::KeyDigest;

/// Runs one admin command and prints its result on standard output.
pub async fn run(args: AdminArgs, config: &Config) -> anyhow::Result<()> {
    let output = execute(args, config).await?;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush()) {
        // A reader that stops early (`| head -1`) is not an error of ours.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Calls the admin API and returns the text to print.
async fn execute(args: AdminArgs, config: &Config) -> anyhow::Result<String> {
    let addr = args
        .addr
        .unwrap_or_else(|| connect_addr(config.admin.addr).to_string());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|error| anyhow::anyhow!("cannot connect to the admin API at {addr}: {error}"))?;
    let authorization = match &config.admin.token {
        Some(token) => Some(MetadataValue::try_from(format!("Bearer {}", token.expose()))?),
        None => None,
    };
    let mut client = CacheAdminClient::with_interceptor(channel, move |mut request: Request<()>| {
        if let Some(value) = &authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    });

    match args.action {
        AdminAction::Stats => {
            let stats = client
                .get_cache_stats(pb::GetCacheStatsRequest {})
                .await?
                .into_inner();
            let json = serde_json::json!({
                "entries": stats.entries,
                "max_entries": stats.max_entries,
                "allowed_entries": stats.allowed_entries,
                "unauthorized_entries": stats.unauthorized_entries,
                "payment_required_entries": stats.payment_required_entries,
                "hits_total": stats.hits_total,
                "misses_total": stats.misses_total,
                "refreshes_total": stats.refreshes_total,
                "invalidations_total": stats.invalidations_total,
            });
            Ok(format!("{}\n", serde_json::to_string_pretty(&json)?))
        }
        AdminAction::Invalidate(target) => {
            if let Some(workspace) = target.workspace {
                let response = client
                    .invalidate_workspace(pb::InvalidateWorkspaceRequest {
                        workspace: workspace.clone(),
                    })
                    .await?
                    .into_inner();
                let noun = if response.invalidated == 1 {
                    "verdict"
                } else {
                    "verdicts"
                };
                return Ok(format!(
                    "workspace {workspace}: {} cached {noun} dropped\n",
                    response.invalidated
                ));
            }
            let digest = match (target.key, target.key_sha256) {
                (Some(key), _) => KeyDigest::of(&read_key(key)?),
                (None, Some(hex)) => KeyDigest::from_hex(&hex)
                    .ok_or_else(|| anyhow::anyhow!("--key-sha256 must be 64 hex digits"))?,
                (None, None) => anyhow::bail!("pass --key, --key-sha256 or --workspace"),
            };
            let response = client
                .invalidate_key(pb::InvalidateKeyRequest {
                    key: Some(Key::KeySha256(digest.to_hex())),
                })
                .await?
                .into_inner();
            let state = if response.was_cached {
                "dropped"
            } else {
                "was not cached"
            };
            Ok(format!("key {}…: {state}\n", digest.fingerprint()))
        }
    }
}

/// `-` reads the key from standard input, which keeps it out of the process
/// list and shell history.
fn read_key(argument: String) -> anyhow::Result<String> {
    if argument != "-" {
        return Ok(argument);
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let key = text.trim_end_matches(['\r', '\n']).to_string();
    anyhow::ensure!(!key.is_empty(), "no key on standard input");
    Ok(key)
}

/// A listener on 0.0.0.0 or [::] is reached through loopback.
fn connect_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], v4.port())),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

//! The systems under test on loopback: usage-authz instances, the no-op
//! authorizer, Envoy and the usage-check stand-in, started and checked
//! before any load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::grpc_load::{self, GrpcTarget, Requests, Until};
use crate::http_load;
use crate::procs::{ChildProcess, ensure_free, unused_loopback_port};
use crate::stub::UsageCheckStub;
use crate::wire::encoded_check;

/// Fixed loopback ports. The Envoy listeners and the two authorizers it
/// calls must match bench/envoy.yaml.
pub mod ports {
    /// usage-authz with the hot key and 100,000 keys cached, called by Envoy.
    pub const AUTHZ_MAIN: u16 = 19101;
    /// The no-op authorizer, called by Envoy.
    pub const NOOP: u16 = 19102;
    /// The usage-check stand-in every usage-authz instance calls.
    pub const USAGE_CHECK_STUB: u16 = 19103;
    /// usage-authz for cache misses and upstream amplification.
    pub const AUTHZ_MISS: u16 = 19104;
    /// usage-authz with 1,000 keys cached.
    pub const AUTHZ_SMALL: u16 = 19105;
    /// usage-authz filled with 1,000,000 keys for the memory figure.
    pub const AUTHZ_MEMORY: u16 = 19106;
    pub const ENVOY_USAGE_AUTHZ: u16 = 19110;
    pub const ENVOY_NOOP: u16 = 19111;
    pub const ENVOY_NO_AUTHZ: u16 = 19112;
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Path the usage-authz instances call on the stand-in.
const USAGE_CHECK_PATH: &str = "/serverless/usage-check";

/// Maximum wait for a process to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Binaries {
    pub usage_authz: PathBuf,
    pub envoy: PathBuf,
    pub envoy_config: PathBuf,
    /// This benchmark binary, which also serves the no-op authorizer.
    pub bench: PathBuf,
}

pub struct Systems {
    pub stub: UsageCheckStub,
    pub noop: ChildProcess,
    pub authz_main: ChildProcess,
    pub authz_miss: ChildProcess,
    pub authz_small: ChildProcess,
    pub authz_memory: ChildProcess,
    pub envoy: ChildProcess,
}

/// Environment for one usage-authz instance. Every listener address in the
/// configuration is moved to loopback: the gRPC one to `grpc_port` and any
/// other (metrics, admin, ...) to an unused port. Several instances can then
/// run side by side, whatever listeners the build has.
fn usage_authz_env(grpc_port: u16) -> anyhow::Result<Vec<(String, String)>> {
    let defaults = serde_json::to_value(usage_authz::config::Config::default())?;
    let sections = defaults.as_object().context("the configuration is not a table")?;
    let mut env = vec![
        ("RUST_LOG".to_string(), "warn".to_string()),
        (
            "USAGE_AUTHZ_USAGE_CHECK__URL".to_string(),
            format!("http://{}{USAGE_CHECK_PATH}", loopback(ports::USAGE_CHECK_STUB)),
        ),
    ];
    for (section, fields) in sections {
        let Some(fields) = fields.as_object() else {
            continue;
        };
        for (key, value) in fields {
            let is_address = value
                .as_str()
                .is_some_and(|text| text.parse::<SocketAddr>().is_ok());
            if !is_address {
                continue;
            }
            let port = if (section.as_str(), key.as_str()) == ("server", "grpc_addr") {
                grpc_port
            } else {
                unused_loopback_port()?
            };
            env.push((
                format!("USAGE_AUTHZ_{}__{}", section.to_uppercase(), key.to_uppercase()),
                loopback(port).to_string(),
            ));
        }
    }
    Ok(env)
}

fn spawn_usage_authz(
    name: &str,
    port: u16,
    cpus: &str,
    binaries: &Binaries,
    logs: &Path,
) -> anyhow::Result<ChildProcess> {
    ChildProcess::spawn_pinned(
        name,
        cpus,
        &binaries.usage_authz,
        &[],
        &usage_authz_env(port)?,
        logs,
    )
}

/// Waits until a skipped-route check on `addr` succeeds.
async fn wait_for_grpc(process: &mut ChildProcess, addr: SocketAddr) -> anyhow::Result<()> {
    let started = Instant::now();
    let probe = encoded_check("/healthz");
    loop {
        process.ensure_running()?;
        if let Ok(target) = GrpcTarget::connect(addr, 1).await {
            let run = grpc_load::run(
                &target,
                &Requests::list(vec![probe.clone()]),
                1,
                Until::Exhausted,
                false,
            )
            .await;
            if run.ok == 1 {
                return Ok(());
            }
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "{} did not respond to a check on {addr} within {START_TIMEOUT:?}",
                process.name
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `GET {target}` returns 200 on every listener.
async fn wait_for_http(
    process: &mut ChildProcess,
    listeners: &[SocketAddr],
    target: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for &listener in listeners {
        loop {
            process.ensure_running()?;
            match http_load::get_once(listener, target).await {
                Ok(()) => break,
                Err(error) if started.elapsed() > START_TIMEOUT => {
                    bail!(
                        "{} did not respond on {listener} within {START_TIMEOUT:?}: {error}",
                        process.name
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

impl Systems {
    /// Starts every system with its servers pinned to `server_cpus`, and
    /// returns once each one responds. `envoy_probe` is a request target all
    /// three Envoy listeners must allow.
    pub async fn start(
        binaries: &Binaries,
        server_cpus: &str,
        logs: &Path,
        envoy_probe: &str,
    ) -> anyhow::Result<Systems> {
        let all = [
            ports::AUTHZ_MAIN,
            ports::NOOP,
            ports::USAGE_CHECK_STUB,
            ports::AUTHZ_MISS,
            ports::AUTHZ_SMALL,
            ports::AUTHZ_MEMORY,
            ports::ENVOY_USAGE_AUTHZ,
            ports::ENVOY_NOOP,
            ports::ENVOY_NO_AUTHZ,
        ];
        ensure_free(&all.map(loopback))?;

        let stub = UsageCheckStub::start(loopback(ports::USAGE_CHECK_STUB))?;
        let mut noop = ChildProcess::spawn_pinned(
            "noop-authorizer",
            server_cpus,
            &binaries.bench,
            &[
                "noop-server".to_string(),
                "--addr".to_string(),
                loopback(ports::NOOP).to_string(),
            ],
            &[],
            logs,
        )?;
        let mut authz_main =
            spawn_usage_authz("usage-authz-main", ports::AUTHZ_MAIN, server_cpus, binaries, logs)?;
        let mut authz_miss =
            spawn_usage_authz("usage-authz-miss", ports::AUTHZ_MISS, server_cpus, binaries, logs)?;
        let mut authz_small = spawn_usage_authz(
            "usage-authz-small",
            ports::AUTHZ_SMALL,
            server_cpus,
            binaries,
            logs,
        )?;
        let mut authz_memory = spawn_usage_authz(
            "usage-authz-memory",
            ports::AUTHZ_MEMORY,
            server_cpus,
            binaries,
            logs,
        )?;

        wait_for_grpc(&mut noop, loopback(ports::NOOP)).await?;
        wait_for_grpc(&mut authz_main, loopback(ports::AUTHZ_MAIN)).await?;
        wait_for_grpc(&mut authz_miss, loopback(ports::AUTHZ_MISS)).await?;
        wait_for_grpc(&mut authz_small, loopback(ports::AUTHZ_SMALL)).await?;
        wait_for_grpc(&mut authz_memory, loopback(ports::AUTHZ_MEMORY)).await?;

        // `--disable-hot-restart` drops the shared-memory base id, so a
        // developer's Envoy on the same host cannot clash with this one.
        let envoy_args = [
            "-c".to_string(),
            binaries.envoy_config.display().to_string(),
            "--concurrency".to_string(),
            "1".to_string(),
            "--disable-hot-restart".to_string(),
            "--log-level".to_string(),
            "warn".to_string(),
        ];
        let mut envoy =
            ChildProcess::spawn_pinned("envoy", server_cpus, &binaries.envoy, &envoy_args, &[], logs)?;
        let listeners = [ports::ENVOY_NO_AUTHZ, ports::ENVOY_NOOP, ports::ENVOY_USAGE_AUTHZ].map(loopback);
        wait_for_http(&mut envoy, &listeners, envoy_probe).await?;

        Ok(Systems {
            stub,
            noop,
            authz_main,
            authz_miss,
            authz_small,
            authz_memory,
            envoy,
        })
    }

    /// Fails if any server has exited, so figures are never taken from a
    /// dead system.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        for process in [
            &mut self.noop,
            &mut self.authz_main,
            &mut self.authz_miss,
            &mut self.authz_small,
            &mut self.authz_memory,
            &mut self.envoy,
        ] {
            process.ensure_running()?;
        }
        Ok(())
    }
}

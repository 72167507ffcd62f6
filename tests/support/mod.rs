//! A full local stack for end-to-end tests: wiremock as the usage-check API,
//! the usage-authz binary, the demo upstream, and the real Envoy in front.
//! Every address is on loopback, and every process is killed when the stack
//! is dropped.

// Each test target that includes this module uses a different part of it.
#![allow(dead_code, unused_imports)]

pub mod envoy;
pub mod http;
pub mod process;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

pub use envoy::EnvoyVariant;
use envoy::{Envoy, render_config};
pub use http::{Echo, Reply, raw_request, read_echo};
use process::{ManagedProcess, find_socket_addr, free_port};

/// Path of the usage-check endpoint that wiremock serves.
pub const USAGE_CHECK_PATH: &str = "/serverless/usage-check";

/// The exact 401 message usage-authz sends when the API rejects a key.
pub const UNAUTHORIZED_MESSAGE: &str =
    "Unauthorized api_key. This key is not authorized for serverless inference.";

/// The fixed part of the 402 message; the API's reason follows it.
pub const PAYMENT_REQUIRED_MESSAGE: &str = "This workspace cannot currently spend credits for serverless inference. \
     Verify billing or credit cap settings.";

pub const UNAVAILABLE_MESSAGE: &str = "authorization backend unavailable";

/// Settings for usage-authz and Envoy in one stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub ok_ttl_secs: u64,
    pub deny_ttl_secs: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    /// Replaces the wiremock URL, e.g. to point at a closed port.
    pub usage_check_url: Option<String>,
    /// Admin API bearer token; without one the admin API is open on loopback.
    pub admin_token: Option<String>,
    pub envoy: EnvoyVariant,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            ok_ttl_secs: 3600,
            deny_ttl_secs: 60,
            timeout_ms: 1500,
            // No retries by default, so call counts stay exact.
            retries: 0,
            usage_check_url: None,
            admin_token: None,
            envoy: EnvoyVariant::Shipped,
        }
    }
}

pub struct Stack {
    pub usage_api: MockServer,
    /// Envoy's listener; every test request goes here.
    pub envoy_addr: SocketAddr,
    /// usage-authz's admin gRPC listener.
    pub admin_addr: SocketAddr,
    client: reqwest::Client,
    /// Keys handed out by `new_key`, with their labels, for the log check.
    keys: Mutex<Vec<(String, String)>>,
    authz: ManagedProcess,
    authz_stopped: bool,
    envoy: Envoy,
    _upstream: ManagedProcess,
    // Declared last so the log files outlive the processes writing them.
    _dir: TempDir,
}

impl Stack {
    pub async fn start(options: StackOptions) -> Stack {
        let usage_api = MockServer::start().await;
        let dir = tempfile::tempdir().expect("failed to create a temporary directory");

        let mut upstream = start_upstream(&dir).await;
        let upstream_addr = upstream
            .wait_for("its listening address", Duration::from_secs(10), |log| {
                find_socket_addr(log, "addr")
            })
            .await;

        let url = options
            .usage_check_url
            .clone()
            .unwrap_or_else(|| format!("{}{USAGE_CHECK_PATH}", usage_api.uri()));
        let (authz, authz_port) = start_authz(&options, &url, &dir).await;
        let admin_addr = find_socket_addr(&authz.output(), "admin.addr")
            .expect("usage-authz logged no admin.addr in its start-up line");

        let config = render_config(options.envoy, authz_port, upstream_addr.port());
        let envoy = Envoy::start(&config, dir.path()).await;

        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("failed to build an HTTP client");

        Stack {
            usage_api,
            envoy_addr: envoy.listener,
            admin_addr,
            client,
            keys: Mutex::new(Vec::new()),
            authz,
            authz_stopped: false,
            envoy,
            _upstream: upstream,
            _dir: dir,
        }
    }

    /// Returns a fresh random key and remembers it, so `finish` can check
    /// that no log line contains it.
    pub fn new_key(&self, label: &str) -> String {
        let key = format!("e2e-{label}-{:016x}", rand::random::<u64>());
        self.track_key(label, &key);
        key
    }

    /// Remembers a key built by the test itself for the log check.
    pub fn track_key(&self, label: &str, key: &str) {
        let mut keys = self.keys.lock().unwrap();
        keys.push((label.to_owned(), key.to_owned()));
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.envoy_addr)
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn get(&self, path_and_query: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path_and_query))
    }

    /// Sends a GET through Envoy and reads the reply.
    pub async fn fetch(&self, path_and_query: &str) -> Reply {
        Reply::from_reqwest(
            self.get(path_and_query)
                .send()
                .await
                .expect("request through Envoy failed"),
        )
        .await
    }

    /// Mounts a wiremock mock that returns `response` to usage checks for
    /// `key` and expects exactly `times` of them by the end of the test.
    pub async fn expect_usage_checks(&self, key: &str, response: ResponseTemplate, times: u64) {
        usage_check_for(key)
            .respond_with(response)
            .expect(times)
            .mount(&self.usage_api)
            .await;
    }

    /// Number of usage-check calls wiremock has received for `key`.
    pub async fn usage_calls(&self, key: &str) -> usize {
        let requests = self.usage_api.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .filter(|request| {
                request
                    .url
                    .query_pairs()
                    .any(|(name, value)| name == "api_key" && value == key)
            })
            .count()
    }

    /// Kills usage-authz, to test how Envoy responds without it.
    pub fn stop_authz(&mut self) {
        self.authz.stop();
        self.authz_stopped = true;
    }

    /// Checks the mocks' expected call counts, then that no log line of
    /// usage-authz or Envoy contains any key the test used.
    pub async fn finish(mut self) {
        self.usage_api.verify().await;

        if !self.authz_stopped {
            self.authz.assert_running("before the end of the test");
        }
        // Let Envoy flush its access log (flush interval 100 ms).
        tokio::time::sleep(Duration::from_millis(300)).await;

        let authz_log = self.authz.output();
        assert!(
            authz_log.contains("DEBUG"),
            "usage-authz wrote no debug lines, so the key check would prove little; is RUST_LOG=debug honoured?\n{authz_log}"
        );
        let logs = [("usage-authz", authz_log), ("envoy", self.envoy.process.output())];
        let keys = self.keys.lock().unwrap();
        for (process, log) in &logs {
            for (label, key) in keys.iter() {
                if let Some(line) = log.lines().find(|line| line.contains(key.as_str())) {
                    panic!(
                        "the {process} output contains the API key labelled {label:?}, in this line \
                         (key replaced by <KEY>):\n{}",
                        line.replace(key.as_str(), "<KEY>")
                    );
                }
            }
        }
    }
}

async fn start_upstream(dir: &TempDir) -> ManagedProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo-upstream"));
    command.args(["--addr", "127.0.0.1:0"]).env("RUST_LOG", "info");
    ManagedProcess::spawn("demo-upstream", command, dir.path())
}

/// Starts usage-authz on a free port, trying another port if the chosen one
/// was taken in the meantime.
async fn start_authz(options: &StackOptions, url: &str, dir: &TempDir) -> (ManagedProcess, u16) {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_usage-authz"));
        command
            .env("RUST_LOG", "debug")
            .env("USAGE_AUTHZ_SERVER__GRPC_ADDR", format!("127.0.0.1:{port}"))
            .env("USAGE_AUTHZ_SERVER__SHUTDOWN_GRACE_SECS", "1")
            // Port 0 on loopback: parallel tests must not collide on the
            // default metrics (0.0.0.0:9002) and admin ports.
            .env("USAGE_AUTHZ_SERVER__METRICS_ADDR", "127.0.0.1:0")
            .env("USAGE_AUTHZ_ADMIN__ADDR", "127.0.0.1:0")
            // Background refreshes and spread lifetimes would make the
            // usage-check call counts and expiry times inexact.
            .env("USAGE_AUTHZ_CACHE__REFRESH_AHEAD_SECS", "0")
            .env("USAGE_AUTHZ_CACHE__TTL_JITTER_PERCENT", "0")
            .env("USAGE_AUTHZ_USAGE_CHECK__URL", url)
            .env(
                "USAGE_AUTHZ_USAGE_CHECK__TIMEOUT_MS",
                options.timeout_ms.to_string(),
            )
            .env("USAGE_AUTHZ_USAGE_CHECK__RETRIES", options.retries.to_string())
            .env("USAGE_AUTHZ_CACHE__OK_TTL_SECS", options.ok_ttl_secs.to_string())
            .env(
                "USAGE_AUTHZ_CACHE__DENY_TTL_SECS",
                options.deny_ttl_secs.to_string(),
            );
        if let Some(token) = &options.admin_token {
            command.env("USAGE_AUTHZ_ADMIN__TOKEN", token);
        }
        let mut authz = ManagedProcess::spawn(&format!("usage-authz-{attempt}"), command, dir.path());

        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let logged = authz.output().contains("listening");
            if logged && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (authz, port);
            }
            if let Some(status) = authz.exit_status() {
                let output = authz.output();
                let port_taken = output.contains("Address already in use");
                if port_taken && attempt < ATTEMPTS {
                    break;
                }
                panic!("usage-authz exited with {status} during start-up\n{output}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "usage-authz did not listen on port {port} within 20 s\n{}",
                authz.output()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    unreachable!("every start-up attempt either returns or panics")
}

/// A usage-check request for `key`, as usage-authz must send it.
pub fn usage_check_for(key: &str) -> MockBuilder {
    Mock::given(method("GET"))
        .and(path(USAGE_CHECK_PATH))
        .and(query_param("api_key", key))
        .and(query_param("nocache", "true"))
}

/// Any request to the usage-check API.
pub fn any_usage_check() -> MockBuilder {
    Mock::given(method("GET"))
}

/// Builds the API's 200 response for a key whose workspace may spend credits.
pub fn allowed(workspace: &str, workspace_id: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "workspace": workspace,
        "workspaceId": workspace_id,
        "underCap": true,
    }))
}

/// Builds the API's 402 response for a workspace that cannot spend credits.
pub fn no_credits(workspace: &str, reason: &str) -> ResponseTemplate {
    ResponseTemplate::new(402).set_body_json(json!({
        "workspace": workspace,
        "workspaceId": format!("id-{workspace}"),
        "underCap": false,
        "error": reason,
    }))
}

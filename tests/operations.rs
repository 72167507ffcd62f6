//! Operating the service: metrics and probes, the admin API and its command
//! line, refresh ahead of expiry, start-up refusals and SIGTERM. Servers
//! listen on 127.0.0.1:0; the usage-check API is wiremock on loopback.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::check_request;
use envoy_types::ext_authz::v3::pb::{CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Channel;
use usage_authz::admin::pb;
use usage_authz::admin::pb::cache_admin_client::CacheAdminClient;
use usage_authz::config::{AdminToken, Config};
use usage_authz::keys::KeyDigest;
use usage_authz::server::{self, Listeners};
use wiremock::matchers::{path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CHECK_PATH: &str = "/serverless/usage-check";
const TOKEN: &str = "test-admin-token-0123456789abcdef";

struct Running {
    grpc: SocketAddr,
    metrics: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(config: Config) -> Running {
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let listeners = Listeners {
        grpc: bind().await,
        metrics: bind().await,
        admin: bind().await,
    };
    let running = Running {
        grpc: listeners.grpc.local_addr().unwrap(),
        metrics: listeners.metrics.local_addr().unwrap(),
        admin: listeners.admin.local_addr().unwrap(),
        stop: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server::run(listeners, &config, async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        stop: Some(stop),
        ..running
    }
}

fn config_for(mock: &MockServer) -> Config {
    let mut config = Config::default();
    config.usage_check.url = format!("{}{CHECK_PATH}", mock.uri());
    config.usage_check.timeout_ms = 300;
    config.usage_check.retries = 1;
    config.cache.ttl_jitter_percent = 0;
    config.cache.refresh_ahead_secs = 0;
    config.admin.token = Some(AdminToken::new(TOKEN));
    config
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn check(client: &mut AuthorizationClient<Channel>, key: &str) -> CheckResponse {
    client
        .check(check_request("GET", &format!("/infer?api_key={key}"), &[], b""))
        .await
        .unwrap()
        .into_inner()
}

fn http_status(response: &CheckResponse) -> i32 {
    match &response.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(denied)) => denied.status.as_ref().unwrap().code,
        other => panic!("unexpected response {other:?}"),
    }
}

fn admin_client(
    channel: Channel,
    token: Option<&str>,
) -> CacheAdminClient<
    tonic::service::interceptor::InterceptedService<Channel, impl tonic::service::Interceptor>,
> {
    let header = token.map(|t| {
        format!("Bearer {t}")
            .parse::<tonic::metadata::MetadataValue<_>>()
            .unwrap()
    });
    CacheAdminClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        if let Some(value) = &header {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    })
}

/// Parses the Prometheus text format into `series{labels}` → value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad metrics line {line:?}"));
            let value = value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            (series.to_string(), value)
        })
        .collect()
}

async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let response = reqwest::get(format!("http://{addr}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    parse_metrics(&response.text().await.unwrap())
}

fn value(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_follow_each_kind_of_traffic() {
    let mock = MockServer::start().await;
    let answer = |key: &str, template: ResponseTemplate| {
        Mock::given(path(CHECK_PATH))
            .and(query_param("api_key", key))
            .respond_with(template)
    };
    answer(
        "good",
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"workspace": "acme", "underCap": true})),
    )
    .mount(&mock)
    .await;
    answer("revoked", ResponseTemplate::new(401)).mount(&mock).await;
    answer(
        "broke",
        ResponseTemplate::new(402).set_body_json(serde_json::json!({"workspace": "acme", "underCap": false})),
    )
    .mount(&mock)
    .await;
    answer("flaky", ResponseTemplate::new(503)).mount(&mock).await;
    answer(
        "slow",
        ResponseTemplate::new(200).set_delay(Duration::from_secs(2)),
    )
    .mount(&mock)
    .await;
    let running = start(config_for(&mock)).await;
    let mut client = AuthorizationClient::new(channel(running.grpc).await);

    let before = scrape(running.metrics).await;
    for key in ["good", "good", "revoked", "broke", "flaky", "slow"] {
        check(&mut client, key).await;
    }
    client
        .check(check_request("GET", "/healthz", &[], b""))
        .await
        .unwrap();
    client
        .check(check_request("GET", "/infer", &[], b""))
        .await
        .unwrap();
    client
        .check(check_request("GET", "/infer?api_key=a&api_key=b", &[], b""))
        .await
        .unwrap();
    let after = scrape(running.metrics).await;

    let increased = |series: &str, by: f64| {
        let delta = value(&after, series) - value(&before, series);
        assert_eq!(delta, by, "{series} changed by {delta}, expected {by}");
    };
    increased(
        r#"usage_authz_decisions_total{outcome="allowed",reason="none"}"#,
        2.0,
    );
    increased(
        r#"usage_authz_decisions_total{outcome="skipped",reason="none"}"#,
        1.0,
    );
    increased(
        r#"usage_authz_decisions_total{outcome="denied",reason="missing_key"}"#,
        1.0,
    );
    increased(
        r#"usage_authz_decisions_total{outcome="denied",reason="ambiguous_key"}"#,
        1.0,
    );
    increased(
        r#"usage_authz_decisions_total{outcome="denied",reason="unauthorized"}"#,
        1.0,
    );
    increased(
        r#"usage_authz_decisions_total{outcome="denied",reason="payment_required"}"#,
        1.0,
    );
    increased(
        r#"usage_authz_decisions_total{outcome="denied",reason="backend_unavailable"}"#,
        2.0,
    );
    increased(
        r#"usage_authz_cache_lookups_total{result="hit",outcome="allowed"}"#,
        1.0,
    );
    increased(
        r#"usage_authz_cache_lookups_total{result="miss",outcome="allowed"}"#,
        1.0,
    );
    increased(
        r#"usage_authz_cache_lookups_total{result="miss",outcome="unauthorized"}"#,
        1.0,
    );
    increased(
        r#"usage_authz_cache_lookups_total{result="miss",outcome="payment_required"}"#,
        1.0,
    );
    increased(
        r#"usage_authz_cache_lookups_total{result="miss",outcome="error"}"#,
        2.0,
    );
    increased(r#"usage_authz_usage_check_requests_total{result="2xx"}"#, 1.0);
    increased(r#"usage_authz_usage_check_requests_total{result="4xx"}"#, 2.0);
    // "flaky" is tried twice (one retry); "slow" runs into the deadline.
    increased(r#"usage_authz_usage_check_requests_total{result="5xx"}"#, 2.0);
    increased(r#"usage_authz_usage_check_requests_total{result="timeout"}"#, 1.0);
    increased("usage_authz_usage_check_retries_total", 1.0);
    increased("usage_authz_check_duration_seconds_count", 9.0);
    increased("usage_authz_usage_check_duration_seconds_count", 5.0);
    assert_eq!(
        value(&after, "usage_authz_cache_entries"),
        3.0,
        "good, revoked and broke are cached"
    );
    assert_eq!(value(&after, "usage_authz_checks_in_flight"), 0.0);

    // No label may carry a key, a digest of one, a workspace or a path.
    let text = reqwest::get(format!("http://{}/metrics", running.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [
        "good",
        "revoked",
        "broke",
        "acme",
        "/infer",
        &KeyDigest::of("good").fingerprint(),
    ] {
        assert!(
            !text.contains(&format!("\"{secret}")),
            "metrics mention {secret:?}"
        );
    }
}

#[tokio::test]
async fn connection_errors_are_counted() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mock = MockServer::start().await;
    let mut config = config_for(&mock);
    config.usage_check.url = format!("http://127.0.0.1:{port}{CHECK_PATH}");
    let running = start(config).await;
    let mut client = AuthorizationClient::new(channel(running.grpc).await);

    assert_eq!(http_status(&check(&mut client, "k").await), 503);
    let metrics = scrape(running.metrics).await;
    // One attempt and one retry.
    assert_eq!(
        value(
            &metrics,
            r#"usage_authz_usage_check_requests_total{result="connect_error"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn probes_report_health_and_readiness() {
    let mock = MockServer::start().await;
    let running = start(config_for(&mock)).await;
    // The probes become ready once the gRPC listener serves.
    channel(running.grpc).await;
    for (probe, status) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        let response = reqwest::get(format!("http://{}{probe}", running.metrics))
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{probe}");
    }
}

#[tokio::test]
async fn admin_rejects_missing_or_wrong_token() {
    let mock = MockServer::start().await;
    let running = start(config_for(&mock)).await;
    let admin_channel = channel(running.admin).await;

    for token in [None, Some("wrong-token-wrong-token-wrong"), Some("")] {
        let mut client = admin_client(admin_channel.clone(), token);
        let status = client
            .get_cache_stats(pb::GetCacheStatsRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "token {token:?}");
        let status = client
            .invalidate_workspace(pb::InvalidateWorkspaceRequest {
                workspace: "acme".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "token {token:?}");
    }
    let mut client = admin_client(admin_channel, Some(TOKEN));
    let stats = client
        .get_cache_stats(pb::GetCacheStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.entries, 0);
    assert_eq!(stats.max_entries, 1_000_000);
}

#[tokio::test]
async fn admin_invalidates_key_and_workspace() {
    let mock = MockServer::start().await;
    for (key, slug) in [("a1", "acme"), ("a2", "acme"), ("o1", "other")] {
        Mock::given(path(CHECK_PATH))
            .and(query_param("api_key", key))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"workspace": slug, "underCap": true})),
            )
            .mount(&mock)
            .await;
    }
    let running = start(config_for(&mock)).await;
    let mut client = AuthorizationClient::new(channel(running.grpc).await);
    let mut admin = admin_client(channel(running.admin).await, Some(TOKEN));
    for key in ["a1", "a2", "o1"] {
        check(&mut client, key).await;
    }
    let stats = admin
        .get_cache_stats(pb::GetCacheStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (stats.entries, stats.allowed_entries, stats.misses_total),
        (3, 3, 3)
    );

    let by_raw_key = pb::InvalidateKeyRequest {
        key: Some(pb::invalidate_key_request::Key::ApiKey("a1".into())),
    };
    assert!(
        admin
            .invalidate_key(by_raw_key.clone())
            .await
            .unwrap()
            .into_inner()
            .was_cached
    );
    assert!(
        !admin
            .invalidate_key(by_raw_key)
            .await
            .unwrap()
            .into_inner()
            .was_cached
    );
    let by_digest = pb::InvalidateKeyRequest {
        key: Some(pb::invalidate_key_request::Key::KeySha256(
            KeyDigest::of("o1").to_hex(),
        )),
    };
    assert!(
        admin
            .invalidate_key(by_digest)
            .await
            .unwrap()
            .into_inner()
            .was_cached
    );
    let bad_digest = pb::InvalidateKeyRequest {
        key: Some(pb::invalidate_key_request::Key::KeySha256("abc".into())),
    };
    assert_eq!(
        admin.invalidate_key(bad_digest).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    let dropped = admin
        .invalidate_workspace(pb::InvalidateWorkspaceRequest {
            workspace: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .invalidated;
    assert_eq!(dropped, 1, "only a2 of acme was still cached");
    let stats = admin
        .get_cache_stats(pb::GetCacheStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.entries, stats.invalidations_total), (0, 3));
}

#[tokio::test]
async fn refresh_ahead_never_makes_callers_wait() {
    let mock = MockServer::start().await;
    let call_delay = Duration::from_millis(400);
    Mock::given(path(CHECK_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"workspace": "acme", "underCap": true}))
                .set_delay(call_delay),
        )
        .expect(2)
        .mount(&mock)
        .await;
    let mut config = config_for(&mock);
    config.usage_check.timeout_ms = 1500;
    config.cache.ok_ttl_secs = 2;
    config.cache.refresh_ahead_secs = 1;
    let running = start(config).await;
    let mut client = AuthorizationClient::new(channel(running.grpc).await);

    // The first read misses and waits for the call, so the entry is stored
    // at t ≈ 0.4 s and expires at t ≈ 2.4 s. Reads then go on every 20 ms
    // until t ≈ 2.6 s, across that expiry. The refresh starts at t ≈ 1.4 s
    // and its answer replaces the entry at t ≈ 1.8 s, with a new expiry at
    // t ≈ 3.8 s, whose own refresh window (from t ≈ 2.8 s) is never reached.
    assert_eq!(http_status(&check(&mut client, "busy").await), 200);
    let until = Instant::now() + Duration::from_millis(2200);
    let mut slowest = Duration::ZERO;
    let mut reads = 0;
    while Instant::now() < until {
        let started = Instant::now();
        assert_eq!(http_status(&check(&mut client, "busy").await), 200);
        slowest = slowest.max(started.elapsed());
        reads += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A read that waited for a usage-check call would take at least the
    // call's 400 ms delay.
    assert!(
        slowest < call_delay,
        "a read took {slowest:?}, so it waited for a call"
    );
    let metrics = scrape(running.metrics).await;
    assert_eq!(
        value(
            &metrics,
            r#"usage_authz_cache_lookups_total{result="miss",outcome="allowed"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &metrics,
            r#"usage_authz_cache_lookups_total{result="hit",outcome="allowed"}"#
        ),
        reads as f64
    );
    assert_eq!(
        value(
            &metrics,
            r#"usage_authz_cache_refreshes_total{result="replaced"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn failed_refresh_keeps_entry_until_expiry() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"workspace": "acme", "underCap": true})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&mock)
        .await;
    Mock::given(path(CHECK_PATH))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(2)
        .mount(&mock)
        .await;
    let mut config = config_for(&mock);
    config.usage_check.retries = 0;
    config.cache.ok_ttl_secs = 2;
    config.cache.refresh_ahead_secs = 1;
    let running = start(config).await;
    let mut client = AuthorizationClient::new(channel(running.grpc).await);

    assert_eq!(http_status(&check(&mut client, "k").await), 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Inside the window: the cached answer, and a refresh that fails.
    assert_eq!(http_status(&check(&mut client, "k").await), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(http_status(&check(&mut client, "k").await), 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Past the expiry the failing API decides.
    assert_eq!(http_status(&check(&mut client, "k").await), 503);
    let metrics = scrape(running.metrics).await;
    assert_eq!(
        value(&metrics, r#"usage_authz_cache_refreshes_total{result="failed"}"#),
        1.0
    );
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_usage-authz"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[test]
fn non_loopback_admin_without_token_refuses_to_start() {
    let output = binary()
        .env("USAGE_AUTHZ_ADMIN__ADDR", "0.0.0.0:0")
        .env("USAGE_AUTHZ_USAGE_CHECK__URL", "http://127.0.0.1:9/check")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin.addr = 0.0.0.0:0"), "{stderr}");
}

#[test]
fn short_admin_token_refuses_to_start() {
    let output = binary()
        .env("USAGE_AUTHZ_ADMIN__TOKEN", "tok3n-x")
        .env("USAGE_AUTHZ_USAGE_CHECK__URL", "http://127.0.0.1:9/check")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin.token"), "{stderr}");
    assert!(
        !stderr.contains("tok3n-x"),
        "the token must not be echoed: {stderr}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_calls_admin_api() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"workspace": "acme", "underCap": true})),
        )
        .mount(&mock)
        .await;
    let running = start(config_for(&mock)).await;
    let mut client = AuthorizationClient::new(channel(running.grpc).await);
    check(&mut client, "cli-key").await;

    let admin = |args: &[&str], stdin: &str, token: &str| {
        let mut command = binary();
        command
            .env("USAGE_AUTHZ_ADMIN__TOKEN", token)
            .arg("admin")
            .arg("--addr")
            .arg(running.admin.to_string())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };

    let stats = tokio::task::block_in_place(|| admin(&["stats"], "", TOKEN));
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(json["entries"], 1);

    let invalidated =
        tokio::task::block_in_place(|| admin(&["invalidate", "--key", "-"], "cli-key\n", TOKEN));
    let stdout = String::from_utf8_lossy(&invalidated.stdout);
    assert!(
        invalidated.status.success(),
        "{}",
        String::from_utf8_lossy(&invalidated.stderr)
    );
    assert!(stdout.contains("dropped"), "{stdout}");
    assert!(
        !stdout.contains("cli-key"),
        "the key must not be echoed: {stdout}"
    );

    let denied = tokio::task::block_in_place(|| admin(&["stats"], "", "wrong-token-wrong-token-wrong"));
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("admin token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_zero() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"workspace": "acme", "underCap": true}))
                .set_delay(Duration::from_millis(800)),
        )
        .expect(1)
        .mount(&mock)
        .await;
    let (grpc_port, metrics_port, admin_port) = (free_port(), free_port(), free_port());
    let mut child = binary()
        .env("USAGE_AUTHZ_SERVER__GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env(
            "USAGE_AUTHZ_SERVER__METRICS_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("USAGE_AUTHZ_ADMIN__ADDR", format!("127.0.0.1:{admin_port}"))
        .env("USAGE_AUTHZ_SERVER__SHUTDOWN_GRACE_SECS", "5")
        .env(
            "USAGE_AUTHZ_USAGE_CHECK__URL",
            format!("{}{CHECK_PATH}", mock.uri()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(&readyz)
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "service did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut client =
        AuthorizationClient::new(channel(format!("127.0.0.1:{grpc_port}").parse().unwrap()).await);
    let in_flight = tokio::spawn(async move { check(&mut client, "slow-key").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let draining = reqwest::get(&readyz).await.unwrap();
    assert_eq!(draining.status(), 503, "readyz while draining");

    assert_eq!(
        http_status(&in_flight.await.unwrap()),
        200,
        "in-flight check finishes"
    );
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("usage-authz listening"), "{stderr}");
    assert!(!stderr.contains("slow-key"), "a key reached the log: {stderr}");
}

/// Lists the admin port's services through gRPC reflection, as `grpcurl
/// list` does.
async fn list_admin_services(addr: SocketAddr, token: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let header = token.map(|t| {
        format!("Bearer {t}")
            .parse::<tonic::metadata::MetadataValue<_>>()
            .unwrap()
    });
    let mut client = ServerReflectionClient::with_interceptor(
        channel(addr).await,
        move |mut request: tonic::Request<()>| {
            if let Some(value) = &header {
                request.metadata_mut().insert("authorization", value.clone());
            }
            Ok(request)
        },
    );
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let response = responses.message().await?.expect("reflection sent no response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

#[tokio::test]
async fn admin_reflection_lists_cache_admin() {
    let mock = MockServer::start().await;
    let running = start(config_for(&mock)).await;

    let services = list_admin_services(running.admin, Some(TOKEN)).await.unwrap();
    assert!(
        services
            .iter()
            .any(|name| name == "usage_authz.admin.v1.CacheAdmin"),
        "reflection lists {services:?}"
    );
    let denied = list_admin_services(running.admin, None).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
}

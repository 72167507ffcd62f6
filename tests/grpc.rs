//! Integration tests: the gRPC server on 127.0.0.1:0, called through a tonic
//! client, with the usage-check API served by wiremock on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::check_request;
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use usage_authz::config::Config;
use usage_authz::http_endpoints::Readiness;
use usage_authz::metrics::Metrics;
use usage_authz::server::serve_grpc;
use usage_authz::service::Authorizer;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CHECK_PATH: &str = "/serverless/usage-check";

struct TestServer {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    async fn start(config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let authorizer = Arc::new(Authorizer::new(&config, Arc::new(Metrics::new())).unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let task = tokio::spawn(serve_grpc(
            listener,
            authorizer,
            grace,
            Readiness::default(),
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn client(&self) -> AuthorizationClient<Channel> {
        AuthorizationClient::new(self.channel().await)
    }

    async fn check(&self, request: CheckRequest) -> CheckResponse {
        self.client().await.check(request).await.unwrap().into_inner()
    }
}

fn config_for(mock: &MockServer) -> Config {
    let mut config = Config::default();
    config.usage_check.url = format!("{}{CHECK_PATH}", mock.uri());
    config.usage_check.timeout_ms = 500;
    // Exact lifetimes, so the expiry tests can count calls.
    config.cache.ttl_jitter_percent = 0;
    config.cache.refresh_ahead_secs = 0;
    config
}

fn get_with_key(key: &str) -> CheckRequest {
    check_request("GET", &format!("/infer?api_key={key}"), &[], b"")
}

/// What a `CheckResponse` amounts to, for compact assertions.
#[derive(Debug, PartialEq)]
enum Outcome {
    Allowed {
        workspace: String,
    },
    Skipped,
    Denied {
        http: i32,
        grpc: i32,
        message: String,
        workspace: Option<String>,
    },
}

fn outcome(response: &CheckResponse) -> Outcome {
    let grpc = response.status.as_ref().map(|s| s.code).unwrap_or(-1);
    match &response.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            assert_eq!(grpc, 0);
            match ok.headers.first() {
                Some(option) => Outcome::Allowed {
                    workspace: option.header.as_ref().unwrap().value.clone(),
                },
                None => {
                    assert_eq!(ok.headers_to_remove, vec!["x-workspace-id".to_string()]);
                    Outcome::Skipped
                }
            }
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
            let http = denied.status.as_ref().unwrap().code;
            assert_eq!(body["status"], http, "body status matches HTTP status");
            let workspace = denied
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "x-workspace-id")
                .map(|h| h.value.clone());
            Outcome::Denied {
                http,
                grpc,
                message: body["message"].as_str().unwrap().to_string(),
                workspace,
            }
        }
        other => panic!("unexpected http_response {other:?}"),
    }
}

fn unavailable() -> Outcome {
    Outcome::Denied {
        http: 503,
        grpc: 14,
        message: "authorization backend unavailable".into(),
        workspace: None,
    }
}

fn allowed_body(slug: &str) -> serde_json::Value {
    serde_json::json!({ "workspace": slug, "workspaceId": "id-1", "underCap": true })
}

#[tokio::test]
async fn allowed_key_is_cached() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(CHECK_PATH))
        .and(query_param("api_key", "good-key"))
        .and(query_param("nocache", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(allowed_body("acme")))
        .expect(1)
        .mount(&mock)
        .await;
    let server = TestServer::start(config_for(&mock)).await;

    for _ in 0..3 {
        let response = server.check(get_with_key("good-key")).await;
        assert_eq!(
            outcome(&response),
            Outcome::Allowed {
                workspace: "acme".into()
            }
        );
    }
}

#[tokio::test]
async fn unauthorized_key_is_cached() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&mock)
        .await;
    let server = TestServer::start(config_for(&mock)).await;

    for _ in 0..2 {
        let response = server
            .check(check_request(
                "POST",
                "/infer",
                &[("authorization", "Bearer bad-key")],
                b"",
            ))
            .await;
        assert_eq!(
            outcome(&response),
            Outcome::Denied {
                http: 401,
                grpc: 16,
                message: "Unauthorized api_key. This key is not authorized for serverless inference.".into(),
                workspace: None,
            }
        );
    }
}

#[tokio::test]
async fn no_credits_is_402_with_workspace() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(ResponseTemplate::new(402).set_body_json(serde_json::json!({
            "workspace": "broke-co", "workspaceId": "id-9", "underCap": false, "error": "Credit cap reached"
        })))
        .expect(1)
        .mount(&mock)
        .await;
    let server = TestServer::start(config_for(&mock)).await;

    let body = br#"{"api_key":"poor-key","image":"..."}"#;
    let request = check_request("POST", "/infer", &[("content-type", "application/json")], body);
    for _ in 0..2 {
        assert_eq!(
            outcome(&server.check(request.clone()).await),
            Outcome::Denied {
                http: 402,
                grpc: 7,
                message: "This workspace cannot currently spend credits for serverless inference. \
                          Verify billing or credit cap settings. Credit cap reached"
                    .into(),
                workspace: Some("broke-co".into()),
            }
        );
    }
}

#[tokio::test]
async fn failures_are_503_and_not_cached() {
    let rows: Vec<(&str, ResponseTemplate)> = vec![
        ("server error", ResponseTemplate::new(500)),
        ("not found", ResponseTemplate::new(404)),
        ("forbidden", ResponseTemplate::new(403)),
        (
            "redirect",
            ResponseTemplate::new(302).insert_header("location", "http://127.0.0.1:1/"),
        ),
        (
            "non-json 200",
            ResponseTemplate::new(200).set_body_string("<html>ok</html>"),
        ),
        (
            "200 not under cap",
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"workspace": "acme", "underCap": false})),
        ),
        (
            "200 bad slug",
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"workspace": "a b", "underCap": true})),
        ),
        (
            "slow answer",
            ResponseTemplate::new(200)
                .set_body_json(allowed_body("acme"))
                .set_delay(Duration::from_millis(1500)),
        ),
    ];
    for (name, template) in rows {
        let mock = MockServer::start().await;
        Mock::given(path(CHECK_PATH))
            .respond_with(template)
            .expect(2)
            .named(name)
            .mount(&mock)
            .await;
        let mut config = config_for(&mock);
        config.usage_check.retries = 0;
        let server = TestServer::start(config).await;

        for attempt in 0..2 {
            let response = server.check(get_with_key("some-key")).await;
            assert_eq!(
                outcome(&response),
                unavailable(),
                "case {name:?}, request {attempt}"
            );
        }
        mock.verify().await;
    }
}

#[tokio::test]
async fn gateway_errors_are_retried_within_deadline() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&mock)
        .await;
    let mut config = config_for(&mock);
    config.usage_check.retries = 2;
    let server = TestServer::start(config).await;

    assert_eq!(outcome(&server.check(get_with_key("k")).await), unavailable());
}

#[tokio::test]
async fn retry_recovers_from_one_bad_gateway() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&mock)
        .await;
    Mock::given(path(CHECK_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(allowed_body("acme")))
        .expect(1)
        .with_priority(2)
        .mount(&mock)
        .await;
    let server = TestServer::start(config_for(&mock)).await;

    assert_eq!(
        outcome(&server.check(get_with_key("k")).await),
        Outcome::Allowed {
            workspace: "acme".into()
        }
    );
}

#[tokio::test]
async fn connection_refused_is_503() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = Config::default();
    config.usage_check.url = format!("http://127.0.0.1:{port}{CHECK_PATH}");
    config.usage_check.timeout_ms = 500;
    let server = TestServer::start(config).await;

    assert_eq!(outcome(&server.check(get_with_key("k")).await), unavailable());
}

#[tokio::test]
async fn entries_expire_by_outcome() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .and(query_param("api_key", "good"))
        .respond_with(ResponseTemplate::new(200).set_body_json(allowed_body("acme")))
        .expect(2)
        .mount(&mock)
        .await;
    Mock::given(path(CHECK_PATH))
        .and(query_param("api_key", "bad"))
        .respond_with(ResponseTemplate::new(401))
        .expect(3)
        .mount(&mock)
        .await;
    let mut config = config_for(&mock);
    config.cache.ok_ttl_secs = 3;
    config.cache.deny_ttl_secs = 1;
    let server = TestServer::start(config).await;

    // t=0: both miss. t≈1.3 s: the denial has expired, the allow has not.
    // t≈3.3 s: both have expired.
    server.check(get_with_key("good")).await;
    server.check(get_with_key("bad")).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    server.check(get_with_key("good")).await;
    server.check(get_with_key("bad")).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    server.check(get_with_key("good")).await;
    server.check(get_with_key("bad")).await;
}

#[tokio::test]
async fn concurrent_misses_make_one_call() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(allowed_body("acme"))
                .set_delay(Duration::from_millis(200)),
        )
        .expect(1)
        .mount(&mock)
        .await;
    let server = TestServer::start(config_for(&mock)).await;
    let client = server.client().await;

    let calls = (0..64).map(|_| {
        let mut client = client.clone();
        async move {
            client
                .check(get_with_key("fresh-key"))
                .await
                .unwrap()
                .into_inner()
        }
    });
    let responses = futures::future::join_all(calls).await;
    for response in &responses {
        assert_eq!(
            outcome(response),
            Outcome::Allowed {
                workspace: "acme".into()
            }
        );
    }
}

#[tokio::test]
async fn concurrent_failures_share_one_call() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(ResponseTemplate::new(500).set_delay(Duration::from_millis(200)))
        .expect(2)
        .mount(&mock)
        .await;
    let server = TestServer::start(config_for(&mock)).await;
    let client = server.client().await;

    for _round in 0..2 {
        let calls = (0..16).map(|_| {
            let mut client = client.clone();
            async move { client.check(get_with_key("k")).await.unwrap().into_inner() }
        });
        for response in futures::future::join_all(calls).await {
            assert_eq!(outcome(&response), unavailable());
        }
    }
}

#[tokio::test]
async fn bad_keys_never_reach_the_api() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(allowed_body("acme")))
        .expect(0)
        .mount(&mock)
        .await;
    let server = TestServer::start(config_for(&mock)).await;
    let long_key = format!("/infer?api_key={}", "k".repeat(513));

    let rows: Vec<(&str, CheckRequest)> = vec![
        ("missing", check_request("GET", "/infer", &[], b"")),
        ("empty query", check_request("GET", "/infer?api_key=", &[], b"")),
        (
            "repeated query",
            check_request("GET", "/infer?api_key=a&api_key=a", &[], b""),
        ),
        (
            "joined authorization",
            check_request("GET", "/infer", &[("authorization", "Bearer a,Bearer b")], b""),
        ),
        ("too long", check_request("GET", &long_key, &[], b"")),
        (
            "control char",
            check_request("GET", "/infer?api_key=a%07b", &[], b""),
        ),
        (
            "non-string body",
            check_request(
                "POST",
                "/infer",
                &[("content-type", "application/json")],
                br#"{"api_key":7}"#,
            ),
        ),
        ("head without key", check_request("HEAD", "/infer", &[], b"")),
        ("dot segments", check_request("GET", "/static/../infer", &[], b"")),
        ("encoded skip path", check_request("GET", "/%64ocs", &[], b"")),
        ("no attributes", CheckRequest { attributes: None }),
    ];
    for (name, request) in rows {
        match outcome(&server.check(request).await) {
            Outcome::Denied {
                http: 401, grpc: 16, ..
            } => {}
            other => panic!("case {name:?}: expected a 401 denial, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn skipped_routes_strip_workspace_header() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&mock)
        .await;
    let server = TestServer::start(config_for(&mock)).await;
    let spoof = [("x-workspace-id", "evil")];

    for (verb, target) in [
        ("GET", "/healthz"),
        ("GET", "/static/app.js?v=1"),
        ("OPTIONS", "/infer"),
        ("GET", "/"),
    ] {
        let response = server.check(check_request(verb, target, &spoof, b"")).await;
        assert_eq!(outcome(&response), Outcome::Skipped, "{verb} {target}");
    }
}

#[tokio::test]
async fn health_reports_serving() {
    let mock = MockServer::start().await;
    let server = TestServer::start(config_for(&mock)).await;
    let mut health = HealthClient::new(server.channel().await);

    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
}

#[tokio::test]
async fn shutdown_finishes_in_flight_checks() {
    let mock = MockServer::start().await;
    Mock::given(path(CHECK_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(allowed_body("acme"))
                .set_delay(Duration::from_millis(300)),
        )
        .expect(1)
        .mount(&mock)
        .await;
    let mut server = TestServer::start(config_for(&mock)).await;
    let mut client = server.client().await;

    let in_flight = tokio::spawn(async move { client.check(get_with_key("slow")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop.take().unwrap().send(()).unwrap();

    let response = in_flight.await.unwrap().unwrap().into_inner();
    assert_eq!(
        outcome(&response),
        Outcome::Allowed {
            workspace: "acme".into()
        }
    );
    let finished = tokio::time::timeout(Duration::from_secs(5), &mut server.task).await;
    assert!(
        matches!(finished, Ok(Ok(Ok(())))),
        "server did not stop cleanly: {finished:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "listener still accepts after shutdown"
    );
}

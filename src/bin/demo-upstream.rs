//! Demo upstream for local runs and end-to-end tests: responds to every
//! request with 200 and a JSON description of what reached it, so a person or a test
//! can see the headers that Envoy forwarded (in particular `x-workspace-id`).
//!
//! The reply has the form
//! `{"method": "POST", "path": "/predict", "query": "a=1", "body_bytes": 12,
//!   "headers": {"x-workspace-id": ["acme"], ...}}`.
//! API keys are never echoed: the `authorization` header values and the
//! `api_key` query parameter value are replaced by `[redacted]`, and only the
//! body length is reported.

mod local_http;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use clap::Parser;
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tracing::{debug, warn};

use local_http::{Reply, Request};

const REDACTED: &str = "[redacted]";

/// Query parameters whose values are redacted in the echo, because clients
/// send API keys in them.
const SECRET_QUERY_PARAMS: &[&str] = &["api_key"];

#[derive(Parser, Debug)]
#[command(about = "Demo upstream that echoes each request's method, path and headers as JSON")]
struct Args {
    /// Socket address to listen on. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    local_http::init_logging();
    let args = Args::parse();
    local_http::serve(args.addr, echo).await
}

async fn echo(request: Request) -> Reply {
    let (parts, body) = request.into_parts();

    let body_bytes = match count_body_bytes(body).await {
        Ok(count) => count,
        Err(err) => {
            warn!(error = %err, "failed to read the request body");
            let message = json!({"error": format!("failed to read the request body: {err}")});
            return local_http::json_reply(StatusCode::BAD_REQUEST, &message);
        }
    };

    let echo = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().map(redact_query),
        "body_bytes": body_bytes,
        "headers": headers_as_lists(&parts.headers),
    });
    debug!(method = %parts.method, path = parts.uri.path(), "echoed request");
    local_http::json_reply(StatusCode::OK, &echo)
}

/// Reads the body to its end without keeping it, and returns its length.
async fn count_body_bytes(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            total += data.len() as u64;
        }
    }
    Ok(total)
}

/// Groups header values by name, keeping repeated headers as separate list
/// entries so tests can tell one value from two.
fn headers_as_lists(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut lists = BTreeMap::new();
    for name in headers.keys() {
        let values = headers
            .get_all(name)
            .iter()
            .map(|value| {
                if name == header::AUTHORIZATION {
                    REDACTED.to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                }
            })
            .collect();
        lists.insert(name.as_str().to_owned(), values);
    }
    lists
}

/// Replaces the values of `SECRET_QUERY_PARAMS` in a raw query string and
/// keeps everything else byte for byte. Names are compared after form
/// decoding, because usage-authz also accepts `api%5Fkey` as `api_key`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded: String = url::form_urlencoded::parse(name.as_bytes())
                .map(|(decoded_name, _)| decoded_name.into_owned())
                .collect();
            if SECRET_QUERY_PARAMS.contains(&decoded.as_str()) {
                format!("{name}={REDACTED}")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_query_hides_api_key_values() {
        assert_eq!(redact_query("api_key=secret&x=1"), "api_key=[redacted]&x=1");
        assert_eq!(
            redact_query("x=1&api_key=a&api_key=b"),
            "x=1&api_key=[redacted]&api_key=[redacted]"
        );
    }

    #[test]
    fn redact_query_decodes_param_names() {
        assert_eq!(redact_query("api%5Fkey=secret"), "api%5Fkey=[redacted]");
        assert_eq!(redact_query("api_key"), "api_key=[redacted]");
    }

    #[test]
    fn redact_query_keeps_other_params() {
        assert_eq!(redact_query("model=m&flag"), "model=m&flag");
    }

    #[test]
    fn headers_as_lists_keeps_repeats_and_redacts_authorization() {
        let mut headers = HeaderMap::new();
        headers.append("x-workspace-id", "a".parse().unwrap());
        headers.append("x-workspace-id", "b".parse().unwrap());
        headers.append(header::AUTHORIZATION, "Bearer secret".parse().unwrap());

        let lists = headers_as_lists(&headers);

        assert_eq!(lists["x-workspace-id"], vec!["a", "b"]);
        assert_eq!(lists["authorization"], vec![REDACTED]);
    }
}

//! HTTP helpers: the demo upstream's echo, JSON denial checks, and raw
//! requests for targets that reqwest would normalize before sending.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `demo-upstream` reports about the request that reached it.
#[derive(Debug, Deserialize)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body_bytes: u64,
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Echo {
    /// Values of `name` that reached the upstream, one per header line.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers.get(name).cloned().unwrap_or_default()
    }
}

/// Reads a 200 response that came from the demo upstream.
pub async fn read_echo(response: reqwest::Response, case: &str) -> Echo {
    let status = response.status();
    let text = response.text().await.expect("failed to read a response body");
    assert_eq!(
        status, 200,
        "{case}: expected the upstream's 200, got {status} with body {text}"
    );
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{case}: upstream echo is not valid JSON ({err}): {text}"))
}

/// A response read from the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub workspace_headers: Vec<String>,
    pub body: String,
}

impl Reply {
    pub async fn from_reqwest(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let header_text = |name: &str| -> Vec<String> {
            response
                .headers()
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .collect()
        };
        let content_type = header_text("content-type").into_iter().next();
        let workspace_headers = header_text("x-workspace-id");
        let body = response.text().await.expect("failed to read a response body");
        Reply {
            status,
            content_type,
            workspace_headers,
            body,
        }
    }

    /// Checks a denial from usage-authz: status, JSON content type, and a
    /// body of `{"status": <status>, "message": ...}`, with the exact
    /// message when one is given.
    pub fn assert_denial(&self, case: &str, status: u16, message: Option<&str>) {
        assert_eq!(self.status, status, "{case}: status (body: {})", self.body);
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "{case}: content-type (body: {})",
            self.body
        );
        let body: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("{case}: body is not JSON ({err}): {}", self.body));
        assert_eq!(body["status"], status, "{case}: body status field in {body}");
        assert!(
            body["message"].is_string(),
            "{case}: body has no message string: {body}"
        );
        if let Some(message) = message {
            assert_eq!(body["message"], message, "{case}: body message");
        }
        let fields = body.as_object().map(|object| object.len());
        assert_eq!(
            fields,
            Some(2),
            "{case}: body must have only status and message: {body}"
        );
    }
}

/// Sends one HTTP/1.1 request with the target exactly as given, which
/// reqwest cannot do for targets with dot segments, and reads the response
/// until the server closes the connection.
pub async fn raw_request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = format!("{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");

    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await?;
        Ok::<_, std::io::Error>(bytes)
    };
    let bytes = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {target}: no complete response within 10 s"))
        .unwrap_or_else(|err| panic!("{method} {target}: request failed: {err}"));
    parse_http1_response(&String::from_utf8_lossy(&bytes), target)
}

/// Parses a response that has a Content-Length body or no body; Envoy's
/// local replies and the demo upstream's replies both have one of these.
fn parse_http1_response(text: &str, target: &str) -> Reply {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{target}: response has no header end: {text:?}"));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{target}: invalid status line {status_line:?}"));

    let mut content_type = None;
    let mut workspace_headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = Some(value),
            "x-workspace-id" => workspace_headers.push(value),
            _ => {}
        }
    }
    Reply {
        status,
        content_type,
        workspace_headers,
        body: body.to_owned(),
    }
}

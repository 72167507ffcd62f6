//! The platform's usage-check API: one `GET {url}?api_key=<key>&nocache=true`
//! per cache miss, and the parsing of its answer into a [`Verdict`].
//!
//! Only 200 (allowed), 401 and 402 are answers. Everything else, including a
//! 200 whose body is not exactly what the API promises, is an error, and an
//! error denies the request with 503 and is never cached.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::UsageCheckConfig;
use crate::decision::{Verdict, Workspace};
use crate::keys::ApiKey;

/// Longest body read from the API; its answers are a few dozen bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest 402 reason, in characters, passed on to the client.
pub const MAX_REASON_CHARS: usize = 256;

/// First retry delay; each further retry waits twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// Reason the API gave no usable response. None of these carries the key or
/// the request URL, which contains the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageCheckError {
    /// The overall deadline passed, retries included.
    Timeout,
    /// The API could not be reached.
    Connect,
    /// The request failed after connecting (reset, protocol error, body
    /// read failure).
    Transport,
    /// A status other than 200, 401 or 402.
    Status(u16),
    /// A 200 whose body breaks the contract.
    InvalidAnswer(&'static str),
}

impl UsageCheckError {
    /// A short, bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UsageCheckError::Timeout => "timeout",
            UsageCheckError::Connect => "connect_error",
            UsageCheckError::Transport => "transport_error",
            UsageCheckError::Status(_) => "unexpected_status",
            UsageCheckError::InvalidAnswer(_) => "invalid_answer",
        }
    }

    /// Connection errors and gateway statuses are worth another attempt: the
    /// request probably never reached a healthy API instance.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            UsageCheckError::Connect | UsageCheckError::Status(502 | 503 | 504)
        )
    }
}

impl fmt::Display for UsageCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageCheckError::Timeout => write!(f, "usage-check API did not respond within the deadline"),
            UsageCheckError::Connect => write!(f, "usage-check API could not be reached"),
            UsageCheckError::Transport => write!(f, "usage-check request failed after connecting"),
            UsageCheckError::Status(code) => {
                write!(f, "usage-check API returned unexpected HTTP status {code}")
            }
            UsageCheckError::InvalidAnswer(why) => {
                write!(f, "usage-check API returned an invalid response: {why}")
            }
        }
    }
}

impl std::error::Error for UsageCheckError {}

/// Reports each attempt, so the caller can count calls, retries and latency
/// without this module knowing about metrics.
pub trait AttemptObserver: Send + Sync {
    /// One HTTP attempt finished with `result` after `elapsed`.
    fn attempt(&self, result: &Result<Verdict, UsageCheckError>, elapsed: Duration);
    /// A retry is about to be made.
    fn retry(&self);
}

/// HTTP client for the usage-check API.
#[derive(Clone)]
pub struct UsageCheckClient {
    http: reqwest::Client,
    url: Url,
    deadline: Duration,
    retries: u32,
}

impl fmt::Debug for UsageCheckClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsageCheckClient")
            .field("host", &self.url.host_str())
            .field("deadline", &self.deadline)
            .field("retries", &self.retries)
            .finish()
    }
}

impl UsageCheckClient {
    pub fn new(config: &UsageCheckConfig) -> anyhow::Result<Self> {
        let url = Url::parse(&config.url)?;
        let http = reqwest::Client::builder()
            // A redirect would carry the key, in the query, to another URL.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("usage-authz/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(UsageCheckClient {
            http,
            url,
            deadline: Duration::from_millis(config.timeout_ms),
            retries: config.retries,
        })
    }

    /// Builds the request URL. The key goes in as one form-encoded query
    /// value, so `&`, `=` or `#` in a key cannot add parameters.
    fn request_url(&self, key: &ApiKey) -> Url {
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("api_key", key.expose())
            .append_pair("nocache", "true");
        url
    }

    /// Asks the API about `key`, retrying connection errors and 502/503/504
    /// with exponential backoff, all within the configured deadline.
    pub async fn check(
        &self,
        key: &ApiKey,
        observer: &dyn AttemptObserver,
    ) -> Result<Verdict, UsageCheckError> {
        let url = self.request_url(key);
        let attempts = async {
            let mut backoff = FIRST_BACKOFF;
            let mut retries_left = self.retries;
            loop {
                let started = tokio::time::Instant::now();
                let result = self.attempt(url.clone()).await;
                observer.attempt(&result, started.elapsed());
                match result {
                    Err(error) if error.is_retryable() && retries_left > 0 => {
                        retries_left -= 1;
                        observer.retry();
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(self.deadline, attempts).await {
            Ok(result) => result,
            Err(_) => {
                observer.attempt(&Err(UsageCheckError::Timeout), self.deadline);
                Err(UsageCheckError::Timeout)
            }
        }
    }

    async fn attempt(&self, url: Url) -> Result<Verdict, UsageCheckError> {
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(classify_transport_error)?;
        let status = response.status().as_u16();
        if !matches!(status, 200 | 401 | 402) {
            return Err(UsageCheckError::Status(status));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify_transport_error)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(UsageCheckError::InvalidAnswer("body larger than 64 KiB"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_answer(status, &body)
    }
}

/// Maps a reqwest error to a kind. The error itself is dropped here because
/// its text includes the request URL, and so the key.
fn classify_transport_error(error: reqwest::Error) -> UsageCheckError {
    if error.is_timeout() {
        UsageCheckError::Timeout
    } else if error.is_connect() {
        UsageCheckError::Connect
    } else {
        UsageCheckError::Transport
    }
}

/// The body of a 200 or 402. Unknown fields are allowed, so the API can add
/// fields without breaking the gate.
#[derive(Deserialize)]
struct Answer {
    workspace: Option<serde_json::Value>,
    #[serde(rename = "workspaceId")]
    workspace_id: Option<serde_json::Value>,
    #[serde(rename = "underCap")]
    under_cap: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
}

/// Parses an answer of status 200, 401 or 402 into a verdict.
pub fn parse_answer(status: u16, body: &[u8]) -> Result<Verdict, UsageCheckError> {
    match status {
        200 => {
            let answer: Answer = serde_json::from_slice(body)
                .map_err(|_| UsageCheckError::InvalidAnswer("200 body is not a JSON object"))?;
            if answer.under_cap != Some(serde_json::Value::Bool(true)) {
                return Err(UsageCheckError::InvalidAnswer("200 without \"underCap\": true"));
            }
            let workspace = workspace_of(&answer).ok_or(UsageCheckError::InvalidAnswer(
                "200 without a valid workspace slug",
            ))?;
            Ok(Verdict::Allowed { workspace })
        }
        401 => Ok(Verdict::Unauthorized),
        // A 402 denies whatever its body holds; the body only adds detail.
        402 => {
            let answer: Option<Answer> = serde_json::from_slice(body).ok();
            Ok(Verdict::PaymentRequired {
                workspace: answer.as_ref().and_then(workspace_of),
                reason: answer
                    .and_then(|a| a.error)
                    .and_then(|e| e.as_str().map(clean_reason))
                    .filter(|reason| !reason.is_empty())
                    .map(Arc::from),
            })
        }
        other => Err(UsageCheckError::Status(other)),
    }
}

/// `workspace`, or `workspaceId` when `workspace` is absent or null. A
/// present but invalid `workspace` does not fall back: the answer is wrong.
fn workspace_of(answer: &Answer) -> Option<Workspace> {
    let chosen = match &answer.workspace {
        None | Some(serde_json::Value::Null) => answer.workspace_id.as_ref()?,
        Some(value) => value,
    };
    Workspace::parse(chosen.as_str()?)
}

/// Strips control characters and caps the length, so the API's text is safe
/// inside a JSON body and a log line.
pub fn clean_reason(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests;

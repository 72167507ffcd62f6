//! Stand-in for the platform's usage-check API, for local runs and demos.
//!
//! It responds to `GET <any path>?api_key=<key>&nocache=true` as usage-authz
//! expects the real API to, with outcomes taken from a TOML keys file:
//!
//! ```toml
//! [[keys]]
//! key = "demo-allowed-key"
//! status = "allow"             # 200, underCap true
//! workspace = "acme-labs"
//! workspace_id = "ws_demo_0001"
//!
//! [[keys]]
//! key = "demo-no-credits-key"
//! status = "no_credits"        # 402, underCap false
//! workspace = "broke-co"
//! workspace_id = "ws_demo_0002"
//! error = "credit cap reached"
//! ```
//!
//! Other statuses: `unauthorized` (401) and `server_error` (500). An entry may
//! set `delay_ms` to delay its response. Keys that are not in the file get 401.
//! The file is read again on every request, so edits apply at once. While
//! it is invalid, every request gets 500, and the error is logged once per
//! edit. Keys are never logged.

mod local_http;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use figment::Figment;
use figment::providers::{Format, Toml};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{debug, error, info};

use local_http::{Reply, Request};

#[derive(Parser, Debug)]
#[command(about = "Stand-in usage-check API whose responses come from a hand-edited TOML keys file")]
struct Args {
    /// Socket address to listen on. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9100")]
    addr: SocketAddr,

    /// TOML file with `[[keys]]` entries, read again on every request.
    #[arg(long)]
    keys: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeyStatus {
    /// 200 with `underCap: true`.
    Allow,
    /// 401.
    Unauthorized,
    /// 402 with `underCap: false` and the entry's `error` text.
    NoCredits,
    /// 500, to show how usage-authz handles a failing API.
    ServerError,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    key: String,
    status: KeyStatus,
    workspace: Option<String>,
    workspace_id: Option<String>,
    error: Option<String>,
    delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

type KeyTable = HashMap<String, KeyEntry>;

const DEFAULT_NO_CREDITS_ERROR: &str = "credit cap reached";

/// Keys file that is parsed again whenever its text changes.
struct KeyStore {
    path: PathBuf,
    last: Mutex<LastLoad>,
}

struct LastLoad {
    text: Option<String>,
    table: Result<Arc<KeyTable>, String>,
}

impl KeyStore {
    fn new(path: PathBuf) -> Self {
        let last = LastLoad {
            text: None,
            table: Err("not loaded yet".to_owned()),
        };
        Self {
            path,
            last: Mutex::new(last),
        }
    }

    /// Reads the file and returns its table, parsing only when the text has
    /// changed since the last call. Logs each new error or reload once.
    async fn current(&self) -> Result<Arc<KeyTable>, String> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(err) => {
                let message = format!(
                    "failed to read keys file {}: {err}; check the --keys path",
                    self.path.display()
                );
                self.record_read_failure(&message);
                return Err(message);
            }
        };

        let mut last = self.last.lock().expect("key store lock poisoned");
        if last.text.as_deref() == Some(text.as_str()) {
            return last.table.clone();
        }
        let table = parse_keys(&text).map(Arc::new);
        match &table {
            Ok(table) => info!(path = %self.path.display(), entries = table.len(), "loaded keys file"),
            Err(err) => {
                error!(path = %self.path.display(), error = %err, "invalid keys file, responding with 500 until it is fixed")
            }
        }
        last.text = Some(text);
        last.table = table.clone();
        table
    }

    /// Stores a read failure, logging it only when it differs from the last one.
    fn record_read_failure(&self, message: &str) {
        let mut last = self.last.lock().expect("key store lock poisoned");
        if last.table.as_ref().err().map(String::as_str) == Some(message) {
            return;
        }
        error!(error = %message, "keys file unreadable, responding with 500 until it is readable");
        last.text = None;
        last.table = Err(message.to_owned());
    }
}

/// Parses and checks a keys file. Error messages never contain a key.
fn parse_keys(text: &str) -> Result<KeyTable, String> {
    let file: KeysFile = Figment::from(Toml::string(text))
        .extract()
        .map_err(|err| redact_key_values(&err.to_string(), text))?;

    let mut table = KeyTable::new();
    for (index, entry) in file.keys.into_iter().enumerate() {
        check_entry(index, &entry)?;
        if table.contains_key(&entry.key) {
            return Err(format!(
                "keys[{index}] repeats the key of an earlier entry; remove one of them"
            ));
        }
        table.insert(entry.key.clone(), entry);
    }
    Ok(table)
}

fn check_entry(index: usize, entry: &KeyEntry) -> Result<(), String> {
    if entry.key.is_empty() {
        return Err(format!("keys[{index}].key is empty; set a non-empty key"));
    }
    let needs_workspace = matches!(entry.status, KeyStatus::Allow | KeyStatus::NoCredits);
    if needs_workspace && entry.workspace.is_none() && entry.workspace_id.is_none() {
        return Err(format!(
            "keys[{index}] has status {:?} but neither workspace nor workspace_id; set at least one",
            entry.status
        ));
    }
    Ok(())
}

/// Replaces every `key = "..."` value found in `text` inside `message`,
/// because TOML parse errors quote the offending line.
fn redact_key_values(message: &str, text: &str) -> String {
    let mut redacted = message.to_owned();
    for line in text.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if name.trim() != "key" {
            continue;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if !value.is_empty() {
            redacted = redacted.replace(value, "[redacted]");
        }
    }
    redacted
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    local_http::init_logging();
    let args = Args::parse();

    let store = Arc::new(KeyStore::new(args.keys.clone()));
    // Fail at start-up on a bad file. Later bad edits only turn responses into 500.
    store
        .current()
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("cannot start with keys file {}", args.keys.display()))?;

    local_http::serve(args.addr, move |request| {
        let store = Arc::clone(&store);
        async move { answer(&store, request).await }
    })
    .await
}

async fn answer(store: &KeyStore, request: Request) -> Reply {
    if request.method() != Method::GET {
        let message = json!({"error": format!("method {} is not allowed; use GET", request.method())});
        return local_http::json_reply(StatusCode::METHOD_NOT_ALLOWED, &message);
    }

    let query = request.uri().query().unwrap_or("");
    let keys: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == "api_key")
        .map(|(_, value)| value.into_owned())
        .collect();
    let [key] = keys.as_slice() else {
        debug!(
            count = keys.len(),
            "rejected request without exactly one api_key parameter"
        );
        let message = json!({"error": "expected exactly one api_key query parameter"});
        return local_http::json_reply(StatusCode::BAD_REQUEST, &message);
    };

    let table = match store.current().await {
        Ok(table) => table,
        Err(err) => {
            return local_http::json_reply(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": err}));
        }
    };

    let Some(entry) = table.get(key) else {
        debug!(status = 401, "unknown key");
        return local_http::json_reply(StatusCode::UNAUTHORIZED, &json!({"message": "Unauthorized"}));
    };
    if let Some(delay) = entry.delay_ms {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    let (status, body) = reply_for(entry);
    debug!(
        status = status.as_u16(),
        workspace = entry.workspace.as_deref().unwrap_or(""),
        "responded to usage check"
    );
    local_http::json_reply(status, &body)
}

fn reply_for(entry: &KeyEntry) -> (StatusCode, Value) {
    match entry.status {
        KeyStatus::Allow => (StatusCode::OK, workspace_body(entry, true)),
        KeyStatus::NoCredits => {
            let mut body = workspace_body(entry, false);
            let error = entry.error.as_deref().unwrap_or(DEFAULT_NO_CREDITS_ERROR);
            body["error"] = json!(error);
            (StatusCode::PAYMENT_REQUIRED, body)
        }
        KeyStatus::Unauthorized => (StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"})),
        KeyStatus::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "simulated usage-check failure (status = \"server_error\" in the keys file)"}),
        ),
    }
}

/// Builds `{"workspace", "workspaceId", "underCap"}`, leaving out the
/// workspace fields that the entry does not set.
fn workspace_body(entry: &KeyEntry, under_cap: bool) -> Value {
    let mut body = json!({"underCap": under_cap});
    if let Some(workspace) = &entry.workspace {
        body["workspace"] = json!(workspace);
    }
    if let Some(workspace_id) = &entry.workspace_id {
        body["workspaceId"] = json!(workspace_id);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        [[keys]]
        key = "k-allow"
        status = "allow"
        workspace = "acme"
        workspace_id = "ws_1"

        [[keys]]
        key = "k-broke"
        status = "no_credits"
        workspace_id = "ws_2"
    "#;

    #[test]
    fn parse_keys_reads_entries() {
        let table = parse_keys(SAMPLE).unwrap();

        assert_eq!(table.len(), 2);
        assert_eq!(table["k-allow"].status, KeyStatus::Allow);
        assert_eq!(table["k-broke"].workspace_id.as_deref(), Some("ws_2"));
    }

    #[test]
    fn parse_keys_rejects_duplicates_without_naming_key() {
        let text = format!("{SAMPLE}\n[[keys]]\nkey = \"k-allow\"\nstatus = \"unauthorized\"\n");

        let err = parse_keys(&text).unwrap_err();

        assert!(err.contains("keys[2]"), "{err}");
        assert!(!err.contains("k-allow"), "{err}");
    }

    #[test]
    fn parse_keys_requires_workspace_for_allow() {
        let err = parse_keys("[[keys]]\nkey = \"k\"\nstatus = \"allow\"\n").unwrap_err();

        assert!(err.contains("workspace"), "{err}");
    }

    #[test]
    fn parse_keys_syntax_error_hides_key() {
        let err = parse_keys("[[keys]]\nkey = \"secret-key-1\nstatus = \"allow\"\n").unwrap_err();

        assert!(!err.contains("secret-key-1"), "{err}");
    }

    #[test]
    fn parse_keys_rejects_unknown_status() {
        let err = parse_keys("[[keys]]\nkey = \"k\"\nstatus = \"alow\"\n").unwrap_err();

        assert!(err.contains("alow"), "{err}");
    }

    #[test]
    fn reply_for_no_credits_has_contract_fields() {
        let table = parse_keys(SAMPLE).unwrap();

        let (status, body) = reply_for(&table["k-broke"]);

        assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(body["underCap"], false);
        assert_eq!(body["workspaceId"], "ws_2");
        assert_eq!(body["error"], DEFAULT_NO_CREDITS_ERROR);
        assert!(body.get("workspace").is_none(), "{body}");
    }
}

//! Configuration: TOML file, then `USAGE_AUTHZ_*` environment variables, over
//! built-in defaults. Every value is checked before start-up goes on, and all
//! problems are reported together so one run shows every bad key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override the file; `__` separates
/// the section from the key, as in `USAGE_AUTHZ_CACHE__OK_TTL_SECS`.
pub const ENV_PREFIX: &str = "USAGE_AUTHZ_";

/// Environment variable of the admin token, read as a raw string.
pub const ADMIN_TOKEN_ENV: &str = "USAGE_AUTHZ_ADMIN__TOKEN";

/// The platform's public usage-check endpoint; tests and demos override it.
pub const DEFAULT_USAGE_CHECK_URL: &str = "https://api.roboflow.com/serverless/usage-check";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub usage_check: UsageCheckConfig,
    pub cache: CacheConfig,
    pub routes: RoutesConfig,
    pub keys: KeysConfig,
    pub headers: HeadersConfig,
    pub log: LogConfig,
    pub admin: AdminConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the gRPC listener serving `Authorization/Check` and health.
    #[serde(deserialize_with = "socket_addr")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP listener serving `/metrics`, `/healthz` and
    /// `/readyz`.
    #[serde(deserialize_with = "socket_addr")]
    pub metrics_addr: SocketAddr,
    /// Upper bound, in seconds, on draining in-flight checks after SIGTERM.
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageCheckConfig {
    /// Endpoint called as `GET {url}?api_key=<key>&nocache=true`.
    pub url: String,
    /// Overall deadline in milliseconds for one check, retries included.
    pub timeout_ms: u64,
    /// Extra attempts after a connection error or a 502, 503 or 504.
    pub retries: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Lifetime in seconds of an "allowed" verdict.
    pub ok_ttl_secs: u64,
    /// Lifetime in seconds of a 401 or 402 verdict.
    pub deny_ttl_secs: u64,
    /// Maximum number of cached keys; the least useful are evicted past it.
    pub max_entries: u64,
    /// An allowed verdict read this many seconds or less before it expires
    /// starts one background usage check; 0 turns refresh-ahead off. The
    /// window is capped at half of `ok_ttl_secs`, so a short lifetime does
    /// not turn every read into a refresh.
    pub refresh_ahead_secs: u64,
    /// Each lifetime is spread by up to this many percent either way, so
    /// verdicts cached together do not expire together.
    pub ttl_jitter_percent: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// HTTP methods that need a key; every other method passes unchecked.
    pub auth_methods: Vec<String>,
    /// Paths, compared whole, that pass unchecked.
    pub skip_paths: Vec<String>,
    /// Path prefixes, matched on a segment boundary, that pass unchecked.
    pub skip_prefixes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Query parameter that carries the key.
    pub query_param: String,
    /// Top-level string field of a JSON body that carries the key.
    pub body_field: String,
    /// Longest accepted key, in bytes.
    pub max_length: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// Header that carries the workspace slug to the upstream and the client.
    pub workspace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin gRPC listener (cache invalidation, statistics).
    #[serde(deserialize_with = "socket_addr")]
    pub addr: SocketAddr,
    /// Bearer token every admin call must carry. Never serialized, so it
    /// stays out of the start-up log line.
    #[serde(skip_serializing)]
    pub token: Option<AdminToken>,
    /// File whose content (trimmed) is the admin token; an alternative to
    /// `token` for secrets mounted as files.
    pub token_file: Option<PathBuf>,
}

/// The admin bearer token. Its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        AdminToken(token.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Shortest admin token accepted, in bytes.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            usage_check: UsageCheckConfig::default(),
            cache: CacheConfig::default(),
            routes: RoutesConfig::default(),
            keys: KeysConfig::default(),
            headers: HeadersConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 9001)),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9002)),
            shutdown_grace_secs: 10,
        }
    }
}

impl Default for UsageCheckConfig {
    fn default() -> Self {
        UsageCheckConfig {
            url: DEFAULT_USAGE_CHECK_URL.to_string(),
            timeout_ms: 1500,
            retries: 2,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ok_ttl_secs: 3600,
            deny_ttl_secs: 60,
            max_entries: 1_000_000,
            refresh_ahead_secs: 300,
            ttl_jitter_percent: 10,
        }
    }
}

impl CacheConfig {
    /// The refresh window actually used: `refresh_ahead_secs`, capped at half
    /// of `ok_ttl_secs`.
    pub fn effective_refresh_ahead_secs(&self) -> u64 {
        self.refresh_ahead_secs.min(self.ok_ttl_secs / 2)
    }
}

impl Default for RoutesConfig {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        RoutesConfig {
            // HEAD is served by GET handlers in common frameworks, so it must
            // not bypass the check.
            auth_methods: strings(&["GET", "HEAD", "POST"]),
            skip_paths: strings(&[
                "/",
                "/docs",
                "/info",
                "/healthz",
                "/readiness",
                "/metrics",
                "/openapi.json",
                "/model/registry",
            ]),
            skip_prefixes: strings(&["/static/", "/_next/"]),
        }
    }
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            query_param: "api_key".to_string(),
            body_field: "api_key".to_string(),
            max_length: 512,
        }
    }
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            workspace: "x-workspace-id".to_string(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 9003)),
            token: None,
            token_file: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
        }
    }
}

impl AdminConfig {
    /// Reads `token_file` into `token`. Setting both is an error, because
    /// it is unclear which one the operator meant.
    fn resolve_token_file(&mut self) -> Result<(), String> {
        let Some(path) = &self.token_file else {
            return Ok(());
        };
        if self.token.is_some() {
            return Err("admin.token and admin.token_file are both set; keep one".to_string());
        }
        let text = std::fs::read_to_string(path).map_err(|error| {
            format!(
                "admin.token_file = {}: cannot read the file ({error})",
                path.display()
            )
        })?;
        self.token = Some(AdminToken(text.trim().to_string()));
        Ok(())
    }
}

/// Rewrites a figment error in the terms an operator uses: the dotted key,
/// the environment variable or file it came from, and what is expected.
fn describe(error: &figment::Error) -> String {
    use figment::error::Kind;

    let key = error.path.join(".").to_lowercase();
    let origin = match error.metadata.as_ref() {
        Some(metadata) if metadata.name.contains("environment") => {
            format!(
                " (environment variable {ENV_PREFIX}{})",
                key.replace('.', "__").to_uppercase()
            )
        }
        Some(metadata) => match &metadata.source {
            Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
            _ => String::new(),
        },
        None => String::new(),
    };
    let problem = match &error.kind {
        Kind::InvalidType(actual, expected) => format!("found {actual}, expected {}", plain_type(expected)),
        Kind::InvalidValue(actual, expected) => format!("found {actual}, expected {}", plain_type(expected)),
        Kind::UnknownField(field, known) => {
            format!(
                "unknown key {field:?}; the keys of this section are {}",
                known.join(", ")
            )
        }
        Kind::UnknownVariant(value, known) => {
            format!("unknown value {value:?}; expected one of {}", known.join(", "))
        }
        other => other.to_string(),
    };
    if key.is_empty() {
        format!("{problem}{origin}")
    } else {
        format!("{key}: {problem}{origin}")
    }
}

/// Names serde's expected types in configuration terms.
fn plain_type(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more".to_string(),
        "a sequence" => {
            "a list, e.g. [\"GET\", \"POST\"] in TOML or '[GET, POST]' in the environment".to_string()
        }
        other => other.to_string(),
    }
}

/// Parses an `IP:PORT` address, naming the rejected text in the error.
fn socket_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid socket address {text:?}: expected IP:PORT such as 0.0.0.0:9001 or [::1]:9001 (host names are not resolved)"
        ))
    })
}

/// Every problem found while loading the configuration, one per line.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration:")?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads the configuration from an optional TOML file and the process
    /// environment, then validates it.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_from(
            file,
            Env::prefixed(ENV_PREFIX).split("__"),
            std::env::var(ADMIN_TOKEN_ENV).ok(),
        )
    }

    /// Loads the configuration with an explicit environment provider and
    /// admin token variable, so tests need not touch the process environment.
    pub fn load_from(
        file: Option<&Path>,
        env: Env,
        env_token: Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            // Figment treats a missing file as empty; a named file that is
            // absent is an operator mistake, so it must stop start-up.
            if !path.is_file() {
                return Err(ConfigError {
                    problems: vec![format!(
                        "config file {} not found or not a regular file; pass an existing TOML file to --config",
                        path.display()
                    )],
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Figment parses environment values as TOML-like literals, so an
        // all-digit token would arrive as a number; the token is read raw.
        figment = figment.merge(env.ignore(&["admin.token"]));
        if let Some(token) = env_token {
            figment = figment.merge(Serialized::default("admin.token", token));
        }

        let mut config: Config = figment.extract().map_err(|err| ConfigError {
            problems: err.into_iter().map(|e| describe(&e)).collect(),
        })?;
        let mut problems = config
            .admin
            .resolve_token_file()
            .err()
            .into_iter()
            .collect::<Vec<_>>();
        problems.extend(config.validate());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Returns one message per invalid value, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, message: String| {
            if !ok {
                problems.push(message);
            }
        };

        match url::Url::parse(&self.usage_check.url) {
            Ok(url) => check(
                matches!(url.scheme(), "http" | "https") && url.host().is_some(),
                format!(
                    "usage_check.url = {:?} is not an http:// or https:// URL with a host",
                    self.usage_check.url
                ),
            ),
            Err(err) => check(
                false,
                format!(
                    "usage_check.url = {:?} is not a valid URL ({err}); expected e.g. {DEFAULT_USAGE_CHECK_URL}",
                    self.usage_check.url
                ),
            ),
        }
        check(
            self.usage_check.timeout_ms > 0,
            "usage_check.timeout_ms must be at least 1 (milliseconds)".to_string(),
        );
        check(
            self.usage_check.retries <= 10,
            format!(
                "usage_check.retries = {} is above the limit of 10",
                self.usage_check.retries
            ),
        );
        check(
            self.cache.max_entries > 0,
            "cache.max_entries must be at least 1".to_string(),
        );
        check(
            self.cache.ok_ttl_secs > 0,
            "cache.ok_ttl_secs must be at least 1 (seconds)".to_string(),
        );
        check(
            self.cache.deny_ttl_secs > 0,
            "cache.deny_ttl_secs must be at least 1 (seconds)".to_string(),
        );
        check(
            self.cache.ttl_jitter_percent <= 50,
            format!(
                "cache.ttl_jitter_percent = {} is above the limit of 50",
                self.cache.ttl_jitter_percent
            ),
        );
        check(
            !self.routes.auth_methods.is_empty(),
            "routes.auth_methods is empty, which would let every request through unchecked; list at least one method".to_string(),
        );
        for method in &self.routes.auth_methods {
            check(
                http::Method::from_bytes(method.as_bytes()).is_ok(),
                format!("routes.auth_methods contains {method:?}, which is not an HTTP method token"),
            );
        }
        for path in &self.routes.skip_paths {
            check(
                path.starts_with('/'),
                format!("routes.skip_paths contains {path:?}; a path must start with '/'"),
            );
        }
        for prefix in &self.routes.skip_prefixes {
            check(
                prefix.starts_with('/') && prefix.len() > 1,
                format!(
                    "routes.skip_prefixes contains {prefix:?}; a prefix must start with '/' and name at least one segment, e.g. \"/static/\""
                ),
            );
        }
        check(
            !self.keys.query_param.is_empty(),
            "keys.query_param must not be empty".to_string(),
        );
        check(
            !self.keys.body_field.is_empty(),
            "keys.body_field must not be empty".to_string(),
        );
        check(
            self.keys.max_length > 0,
            "keys.max_length must be at least 1 (bytes)".to_string(),
        );
        check(
            http::HeaderName::from_bytes(self.headers.workspace.as_bytes()).is_ok()
                && self.headers.workspace == self.headers.workspace.to_ascii_lowercase(),
            format!(
                "headers.workspace = {:?} is not a valid lowercase HTTP header name",
                self.headers.workspace
            ),
        );
        match &self.admin.token {
            Some(token) => check(
                token.expose().len() >= MIN_ADMIN_TOKEN_LEN,
                format!(
                    "admin.token is shorter than {MIN_ADMIN_TOKEN_LEN} bytes; use a random token, e.g. `openssl rand -hex 32`"
                ),
            ),
            None => check(
                self.admin.addr.ip().is_loopback(),
                format!(
                    "admin.addr = {} is not a loopback address and no admin token is set; set admin.token or admin.token_file, or bind admin.addr to 127.0.0.1",
                    self.admin.addr
                ),
            ),
        }
        problems
    }

    /// Renders the configuration for the start-up log line: the values in
    /// effect, with any credentials in the usage-check URL removed.
    pub fn to_log_string(&self) -> String {
        let mut shown = self.clone();
        shown.cache.refresh_ahead_secs = self.cache.effective_refresh_ahead_secs();
        if let Ok(mut url) = url::Url::parse(&shown.usage_check.url) {
            if !url.username().is_empty() || url.password().is_some() {
                let _ = url.set_username("");
                let _ = url.set_password(None);
                shown.usage_check.url = url.to_string();
            }
        }
        serde_json::to_string(&shown).unwrap_or_else(|_| "<unprintable>".to_string())
    }
}

#[cfg(test)]
mod tests;

//! Finding the API key: the one key the upstream will read, or the reason
//! there is none.
//!
//! Channels are tried in the upstream's order and the first that carries a
//! key wins: the query parameter, then `Authorization: Bearer`, then a field
//! of a JSON body. A channel that carries more than one value is ambiguous,
//! since the upstream might read a different value than the one checked.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use sha2::{Digest, Sha256};

use crate::config::KeysConfig;
use crate::request::{HeaderValue, HttpView};

/// An API key. It has no `Display`, and its `Debug` is redacted, so it cannot
/// reach a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key that has already passed [`KeyRules`] validation.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// Returns the raw key, for the usage-check call and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> KeyDigest {
        KeyDigest::of(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// SHA-256 of a key: the cache key, and the source of the log fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        KeyDigest(Sha256::digest(key.as_bytes()).into())
    }

    /// Parses a digest written as 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).ok()?;
        Some(KeyDigest(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Returns the first 12 hex digits of the digest: enough to correlate log lines
    /// of one key, far too little to recover or test a key.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDigest({}…)", self.fingerprint())
    }
}

/// Where a key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChannel {
    Query,
    Bearer,
    Body,
}

impl KeyChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyChannel::Query => "query",
            KeyChannel::Bearer => "bearer",
            KeyChannel::Body => "body",
        }
    }
}

/// Why no key can be checked. Each of these is a 401 without a usage-check
/// call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// No channel carries a key.
    Missing,
    /// A channel carries more than one value.
    Ambiguous(KeyChannel),
    Empty(KeyChannel),
    TooLong(KeyChannel),
    /// Control characters, or bytes that are not UTF-8.
    InvalidCharacters(KeyChannel),
    /// The JSON body field is present but is not a string.
    NotAString,
}

impl KeyError {
    /// A short reason for logs and metrics; it never contains the key.
    pub fn reason(self) -> &'static str {
        match self {
            KeyError::Missing => "missing",
            KeyError::Ambiguous(_) => "ambiguous",
            KeyError::Empty(_) => "empty",
            KeyError::TooLong(_) => "too_long",
            KeyError::InvalidCharacters(_) => "invalid_characters",
            KeyError::NotAString => "not_a_string",
        }
    }
}

/// Key extraction settings, prepared once from the configuration.
#[derive(Debug, Clone)]
pub struct KeyRules {
    query_param: String,
    body_field: String,
    max_length: usize,
}

impl KeyRules {
    pub fn new(config: &KeysConfig) -> Self {
        KeyRules {
            query_param: config.query_param.clone(),
            body_field: config.body_field.clone(),
            max_length: config.max_length,
        }
    }

    /// Finds the key the upstream will read.
    pub fn extract(&self, view: &HttpView<'_>) -> Result<(ApiKey, KeyChannel), KeyError> {
        let candidate = match self.from_query(view.query()) {
            Some(found) => found,
            None => match from_authorization(&view.header_values("authorization")) {
                Some(found) => found,
                None => match self.from_json_body(view) {
                    Some(found) => found,
                    None => return Err(KeyError::Missing),
                },
            },
        };
        let (raw, channel) = candidate?;
        self.validate(raw, channel).map(|key| (key, channel))
    }

    fn validate(&self, raw: Vec<u8>, channel: KeyChannel) -> Result<ApiKey, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty(channel));
        }
        if raw.len() > self.max_length {
            return Err(KeyError::TooLong(channel));
        }
        let key = String::from_utf8(raw).map_err(|_| KeyError::InvalidCharacters(channel))?;
        if key.chars().any(char::is_control) {
            return Err(KeyError::InvalidCharacters(channel));
        }
        Ok(ApiKey(key))
    }

    /// `None` when the query has no such parameter. Names and values are
    /// decoded as `application/x-www-form-urlencoded`, as web frameworks
    /// decode them, so `api%5Fkey` counts and `+` is a space.
    fn from_query(&self, query: Option<&str>) -> Option<Result<(Vec<u8>, KeyChannel), KeyError>> {
        let mut values = query?
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (*form_decode(name) == *self.query_param.as_bytes()).then(|| form_decode(value).into_owned())
            });
        let first = values.next()?;
        if values.next().is_some() {
            return Some(Err(KeyError::Ambiguous(KeyChannel::Query)));
        }
        Some(Ok((first, KeyChannel::Query)))
    }

    /// `None` unless the body is a JSON object (by `content-type`) that has
    /// the field.
    fn from_json_body(&self, view: &HttpView<'_>) -> Option<Result<(Vec<u8>, KeyChannel), KeyError>> {
        let content_types = view.header_values("content-type");
        let [HeaderValue::Text(content_type)] = content_types.as_slice() else {
            return None;
        };
        if !is_json_media_type(content_type) {
            return None;
        }
        let mut deserializer = serde_json::Deserializer::from_slice(view.body());
        let found = FieldScan {
            field: &self.body_field,
        }
        .deserialize(&mut deserializer)
        .ok()?;
        // Trailing bytes make the body invalid JSON for the upstream too.
        deserializer.end().ok()?;
        match found {
            FieldValue::Absent => None,
            FieldValue::Repeated => Some(Err(KeyError::Ambiguous(KeyChannel::Body))),
            FieldValue::NotAString => Some(Err(KeyError::NotAString)),
            FieldValue::Text(text) => Some(Ok((text.into_bytes(), KeyChannel::Body))),
        }
    }
}

/// `None` unless an `Authorization` header with the Bearer scheme is present.
fn from_authorization(values: &[HeaderValue<'_>]) -> Option<Result<(Vec<u8>, KeyChannel), KeyError>> {
    let channel = KeyChannel::Bearer;
    let value = match values {
        [] => return None,
        [HeaderValue::Text(text)] => *text,
        [HeaderValue::NotUtf8] => return Some(Err(KeyError::InvalidCharacters(channel))),
        // Raw headers: one entry per header line.
        _ => return Some(Err(KeyError::Ambiguous(channel))),
    };
    // Envoy joins repeated headers with commas in the `headers` map, and a
    // Bearer token (RFC 6750 b64token) never contains one.
    if value.contains(',') {
        return Some(Err(KeyError::Ambiguous(channel)));
    }
    let value = value.trim_matches([' ', '\t']);
    let (scheme, token) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(Ok((
        token.trim_start_matches([' ', '\t']).as_bytes().to_vec(),
        channel,
    )))
}

/// Matches `application/json` with any parameters, case-insensitively.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Decodes `+` and `%XX`. Text with neither, the usual case on the hot
/// path, is borrowed rather than copied.
fn form_decode(text: &str) -> Cow<'_, [u8]> {
    if !text.contains(['+', '%']) {
        return Cow::Borrowed(text.as_bytes());
    }
    let spaced = text.replace('+', " ");
    Cow::Owned(percent_decode(spaced.as_bytes()).collect())
}

enum FieldValue {
    Absent,
    Repeated,
    NotAString,
    Text(String),
}

/// Scans the top level of a JSON object for one field without building the
/// whole document, and notices the field given twice (JSON parsers disagree
/// on which of the two wins).
struct FieldScan<'f> {
    field: &'f str,
}

impl<'de> DeserializeSeed<'de> for FieldScan<'_> {
    type Value = FieldValue;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<FieldValue, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldScan<'_> {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldValue, A::Error> {
        let mut found = FieldValue::Absent;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if name != self.field {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = map.next_value::<serde_json::Value>()?;
            found = match (found, value) {
                (FieldValue::Absent, serde_json::Value::String(text)) => FieldValue::Text(text),
                (FieldValue::Absent, _) => FieldValue::NotAString,
                _ => FieldValue::Repeated,
            };
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests;

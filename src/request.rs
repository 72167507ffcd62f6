//! Read-only view of the HTTP attributes Envoy forwards in a `CheckRequest`.
//!
//! Nothing here interprets the request, because [`crate::routes`] and
//! [`crate::keys`] do. The view hides two encodings Envoy may use. Headers
//! arrive either in the `headers` map (repeated headers joined with commas)
//! or, with `encode_raw_headers`, in `header_map` (one entry per header
//! line). The body arrives in `body` (UTF-8 only) or, with `pack_as_bytes`,
//! in `raw_body`.

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

/// The HTTP part of a `CheckRequest`.
#[derive(Debug, Clone, Copy)]
pub struct HttpView<'a> {
    http: &'a HttpRequest,
}

/// One value of a header as Envoy forwarded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Text(&'a str),
    /// A raw header value that is not valid UTF-8.
    NotUtf8,
}

fn empty_http_request() -> &'static HttpRequest {
    static EMPTY: std::sync::OnceLock<HttpRequest> = std::sync::OnceLock::new();
    EMPTY.get_or_init(HttpRequest::default)
}

impl<'a> HttpView<'a> {
    /// Views the HTTP attributes of a check. A request without them is seen
    /// as an empty request, whose empty method and path are never exempt, so
    /// it is denied for lack of a key.
    pub fn of(request: &'a CheckRequest) -> Self {
        let http = request
            .attributes
            .as_ref()
            .and_then(|attributes| attributes.request.as_ref())
            .and_then(|request| request.http.as_ref())
            .unwrap_or_else(|| empty_http_request());
        HttpView { http }
    }

    pub fn new(http: &'a HttpRequest) -> Self {
        HttpView { http }
    }

    pub fn method(&self) -> &'a str {
        &self.http.method
    }

    /// The path part of the target: everything before the first `?`.
    pub fn path(&self) -> &'a str {
        split_target(&self.http.path).0
    }

    /// The query string after the first `?`, if the target has one.
    pub fn query(&self) -> Option<&'a str> {
        split_target(&self.http.path).1
    }

    /// Every value of the header `name` (lowercase), one per header line when
    /// Envoy sent raw headers, or the single comma-joined value otherwise.
    pub fn header_values(&self, name: &str) -> Vec<HeaderValue<'a>> {
        if let Some(map) = self.http.header_map.as_ref().filter(|m| !m.headers.is_empty()) {
            return map
                .headers
                .iter()
                .filter(|header| header.key.eq_ignore_ascii_case(name))
                .map(|header| {
                    // Envoy fills only `raw_value` in `header_map`; `value` is
                    // read as a fallback for senders that use the text field.
                    if header.raw_value.is_empty() {
                        HeaderValue::Text(&header.value)
                    } else {
                        match std::str::from_utf8(&header.raw_value) {
                            Ok(text) => HeaderValue::Text(text),
                            Err(_) => HeaderValue::NotUtf8,
                        }
                    }
                })
                .collect();
        }
        self.http
            .headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| HeaderValue::Text(value))
            .collect()
    }

    /// The request body as Envoy buffered it, which may be cut short when it
    /// is larger than the filter's `max_request_bytes`.
    pub fn body(&self) -> &'a [u8] {
        if self.http.raw_body.is_empty() {
            self.http.body.as_bytes()
        } else {
            &self.http.raw_body
        }
    }
}

fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

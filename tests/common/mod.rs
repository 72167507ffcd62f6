//! Builders shared by the gRPC-level test targets.

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request as AttrRequest};

/// Builds a `CheckRequest` as Envoy sends it for one HTTP request, with the
/// headers in the `headers` map and the body in `raw_body`.
pub fn check_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: target.into(),
                    headers: headers
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.to_string()))
                        .collect(),
                    raw_body: body.to_vec(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

//! Rendering a [`Decision`] as Envoy's `CheckResponse`.
//!
//! Checked against Envoy 1.40's ext_authz HTTP filter. An OK `status` lets
//! the request through with `ok_response` applied. Any other `status` denies
//! it, and Envoy sends `denied_response` (status, headers, body) to the
//! client as it is. So every outcome, failures included, is a `CheckResponse`; a
//! gRPC error would hand the decision to Envoy's `failure_mode_allow`.

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse,
    HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::pb::google::rpc;

use crate::config::Config;
use crate::decision::{Decision, Denial, Workspace};
use crate::keys::KeyError;

pub const UNAUTHORIZED_MESSAGE: &str =
    "Unauthorized api_key. This key is not authorized for serverless inference.";
pub const PAYMENT_REQUIRED_MESSAGE: &str = "This workspace cannot currently spend credits for serverless inference. Verify billing or credit cap settings.";
pub const BACKEND_UNAVAILABLE_MESSAGE: &str = "authorization backend unavailable";

/// gRPC status codes (google.rpc.Code) used in `CheckResponse.status`.
mod code {
    pub const OK: i32 = 0;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Renderer of decisions, with the configured names its messages mention.
#[derive(Debug, Clone)]
pub struct Renderer {
    workspace_header: String,
    query_param: String,
    body_field: String,
    max_key_length: usize,
}

impl Renderer {
    pub fn new(config: &Config) -> Self {
        Renderer {
            workspace_header: config.headers.workspace.clone(),
            query_param: config.keys.query_param.clone(),
            body_field: config.keys.body_field.clone(),
            max_key_length: config.keys.max_length,
        }
    }

    pub fn render(&self, decision: &Decision) -> CheckResponse {
        match decision {
            Decision::Skipped => ok(OkHttpResponse {
                // A client must not be able to name its own workspace to the
                // upstream, even on routes that need no key.
                headers_to_remove: vec![self.workspace_header.clone()],
                ..Default::default()
            }),
            Decision::Allowed { workspace } => ok(OkHttpResponse {
                headers: vec![self.workspace_header(workspace)],
                response_headers_to_add: vec![self.workspace_header(workspace)],
                ..Default::default()
            }),
            Decision::Denied(denial) => self.denied(denial),
        }
    }

    fn denied(&self, denial: &Denial) -> CheckResponse {
        let (grpc_code, http_status, message) = match denial {
            Denial::BadKey(error) => (
                code::UNAUTHENTICATED,
                HttpStatusCode::Unauthorized,
                self.bad_key_message(*error),
            ),
            Denial::Unauthorized => (
                code::UNAUTHENTICATED,
                HttpStatusCode::Unauthorized,
                UNAUTHORIZED_MESSAGE.to_string(),
            ),
            Denial::PaymentRequired { reason, .. } => (
                code::PERMISSION_DENIED,
                HttpStatusCode::PaymentRequired,
                match reason {
                    Some(reason) => format!("{PAYMENT_REQUIRED_MESSAGE} {reason}"),
                    None => PAYMENT_REQUIRED_MESSAGE.to_string(),
                },
            ),
            Denial::BackendUnavailable => (
                code::UNAVAILABLE,
                HttpStatusCode::ServiceUnavailable,
                BACKEND_UNAVAILABLE_MESSAGE.to_string(),
            ),
        };

        let mut headers = vec![overwrite("content-type", "application/json")];
        if let Denial::PaymentRequired {
            workspace: Some(workspace),
            ..
        } = denial
        {
            headers.push(self.workspace_header(workspace));
        }
        let body = json_body(http_status as i32, &message);

        CheckResponse {
            status: Some(rpc::Status {
                code: grpc_code,
                message: denial.reason().to_string(),
                details: vec![],
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus {
                    code: http_status as i32,
                }),
                headers,
                body,
            })),
            dynamic_metadata: None,
        }
    }

    fn bad_key_message(&self, error: KeyError) -> String {
        match error {
            KeyError::Missing => format!(
                "Missing api_key. Send it as the {} query parameter, as an Authorization: Bearer header, or as the {} field of a JSON body.",
                self.query_param, self.body_field
            ),
            KeyError::Ambiguous(channel) => format!(
                "Ambiguous api_key: the request carries more than one key in its {} channel. Send exactly one.",
                channel.as_str()
            ),
            KeyError::Empty(channel) => format!(
                "Invalid api_key: the key in the {} channel is empty.",
                channel.as_str()
            ),
            KeyError::TooLong(channel) => format!(
                "Invalid api_key: the key in the {} channel is longer than {} bytes.",
                channel.as_str(),
                self.max_key_length
            ),
            KeyError::InvalidCharacters(channel) => format!(
                "Invalid api_key: the key in the {} channel contains control characters or is not valid UTF-8.",
                channel.as_str()
            ),
            KeyError::NotAString => format!(
                "Invalid api_key: the {} field of the JSON body must be a string.",
                self.body_field
            ),
        }
    }

    fn workspace_header(&self, workspace: &Workspace) -> HeaderValueOption {
        overwrite(&self.workspace_header, workspace.as_str())
    }
}

/// `{"status": <code>, "message": "<text>"}`, written by hand so the keys keep
/// this order (serde_json's map would sort them).
fn json_body(status: i32, message: &str) -> String {
    let quoted = serde_json::Value::String(message.to_string()).to_string();
    format!("{{\"status\":{status},\"message\":{quoted}}}")
}

fn ok(response: OkHttpResponse) -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: code::OK,
            message: String::new(),
            details: vec![],
        }),
        http_response: Some(HttpResponse::OkResponse(response)),
        dynamic_metadata: None,
    }
}

/// A header that replaces any value of the same name. Envoy's reading of the
/// append fields changed between 1.36 and 1.37: the deprecated `append` flag
/// versus `append_action`, whose zero value (APPEND_IF_EXISTS_OR_ADD) means
/// append. Setting both to "overwrite" gives the same result on either side.
#[allow(deprecated)] // `append` is set on purpose, for Envoy 1.36 and older.
fn overwrite(name: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            raw_value: vec![],
        }),
        append: Some(BoolValue { value: false }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

#[cfg(test)]
mod tests;

use envoy_types::ext_authz::v3::pb::HttpResponse;

use super::*;
use crate::keys::KeyChannel;

fn renderer() -> Renderer {
    Renderer::new(&Config::default())
}

fn header_pairs(headers: &[HeaderValueOption]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            let header = h.header.as_ref().unwrap();
            (header.key.clone(), header.value.clone())
        })
        .collect()
}

fn denied_parts(response: &CheckResponse) -> (i32, i32, Vec<(String, String)>, serde_json::Value) {
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        panic!("expected a denied response, got {response:?}");
    };
    (
        response.status.as_ref().unwrap().code,
        denied.status.as_ref().unwrap().code,
        header_pairs(&denied.headers),
        serde_json::from_str(&denied.body).unwrap(),
    )
}

fn acme() -> Workspace {
    Workspace::parse("acme").unwrap()
}

#[test]
fn allowed_overwrites_workspace_header_both_ways() {
    let response = renderer().render(&Decision::Allowed { workspace: acme() });
    assert_eq!(response.status.as_ref().unwrap().code, code::OK);
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("expected an ok response");
    };
    let expected = vec![("x-workspace-id".to_string(), "acme".to_string())];
    assert_eq!(header_pairs(&ok.headers), expected);
    assert_eq!(header_pairs(&ok.response_headers_to_add), expected);
    for option in ok.headers.iter().chain(&ok.response_headers_to_add) {
        #[allow(deprecated)]
        let append = option.append.as_ref().map(|flag| flag.value);
        assert_eq!(append, Some(false));
        assert_eq!(
            option.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        );
    }
}

#[test]
fn skipped_removes_workspace_header() {
    let response = renderer().render(&Decision::Skipped);
    assert_eq!(response.status.as_ref().unwrap().code, code::OK);
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("expected an ok response");
    };
    assert!(ok.headers.is_empty());
    assert_eq!(ok.headers_to_remove, vec!["x-workspace-id".to_string()]);
}

#[test]
fn denial_table() {
    let json = ("content-type".to_string(), "application/json".to_string());
    let workspace = ("x-workspace-id".to_string(), "acme".to_string());
    let rows = vec![
        (
            Denial::Unauthorized,
            16,
            401,
            vec![json.clone()],
            UNAUTHORIZED_MESSAGE.to_string(),
        ),
        (
            Denial::BadKey(KeyError::TooLong(KeyChannel::Query)),
            16,
            401,
            vec![json.clone()],
            "Invalid api_key: the key in the query channel is longer than 512 bytes.".to_string(),
        ),
        (
            Denial::BadKey(KeyError::NotAString),
            16,
            401,
            vec![json.clone()],
            "Invalid api_key: the api_key field of the JSON body must be a string.".to_string(),
        ),
        (
            Denial::PaymentRequired {
                workspace: Some(acme()),
                reason: Some("Credit cap reached".into()),
            },
            7,
            402,
            vec![json.clone(), workspace],
            format!("{PAYMENT_REQUIRED_MESSAGE} Credit cap reached"),
        ),
        (
            Denial::PaymentRequired {
                workspace: None,
                reason: None,
            },
            7,
            402,
            vec![json.clone()],
            PAYMENT_REQUIRED_MESSAGE.to_string(),
        ),
        (
            Denial::BackendUnavailable,
            14,
            503,
            vec![json.clone()],
            BACKEND_UNAVAILABLE_MESSAGE.to_string(),
        ),
    ];
    for (denial, grpc, http, headers, message) in rows {
        let (got_grpc, got_http, got_headers, body) =
            denied_parts(&renderer().render(&Decision::Denied(denial.clone())));
        assert_eq!(got_grpc, grpc, "{denial:?}");
        assert_eq!(got_http, http, "{denial:?}");
        assert_eq!(got_headers, headers, "{denial:?}");
        assert_eq!(
            body,
            serde_json::json!({ "status": http, "message": message }),
            "{denial:?}"
        );
    }
}

#[test]
fn missing_and_ambiguous_keys_explain_themselves() {
    let (_, http, _, body) =
        denied_parts(&renderer().render(&Decision::Denied(Denial::BadKey(KeyError::Missing))));
    assert_eq!(http, 401);
    assert!(body["message"].as_str().unwrap().starts_with("Missing api_key."));
    let (_, http, _, body) = denied_parts(&renderer().render(&Decision::Denied(Denial::BadKey(
        KeyError::Ambiguous(KeyChannel::Query),
    ))));
    assert_eq!(http, 401);
    assert!(body["message"].as_str().unwrap().starts_with("Ambiguous api_key"));
}

#[test]
fn body_lists_status_before_message() {
    let response = renderer().render(&Decision::Denied(Denial::BackendUnavailable));
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        panic!("expected a denied response");
    };
    assert_eq!(
        denied.body,
        r#"{"status":503,"message":"authorization backend unavailable"}"#
    );
}

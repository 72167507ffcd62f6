use super::*;

fn allowed(slug: &str) -> Result<Verdict, UsageCheckError> {
    Ok(Verdict::Allowed {
        workspace: Workspace::parse(slug).unwrap(),
    })
}

#[test]
fn answer_table() {
    let invalid = |why| Err(UsageCheckError::InvalidAnswer(why));
    let no_slug = invalid("200 without a valid workspace slug");
    let not_under_cap = invalid("200 without \"underCap\": true");
    let not_object = invalid("200 body is not a JSON object");
    let rows: Vec<(&str, u16, &str, Result<Verdict, UsageCheckError>)> = vec![
        (
            "allowed",
            200,
            r#"{"workspace":"acme","workspaceId":"id1","underCap":true}"#,
            allowed("acme"),
        ),
        (
            "extra fields",
            200,
            r#"{"workspace":"acme","underCap":true,"plan":"pro"}"#,
            allowed("acme"),
        ),
        (
            "falls back to id",
            200,
            r#"{"workspaceId":"ws_123","underCap":true}"#,
            allowed("ws_123"),
        ),
        (
            "null slug falls back",
            200,
            r#"{"workspace":null,"workspaceId":"ws1","underCap":true}"#,
            allowed("ws1"),
        ),
        (
            "bad slug, no fallback",
            200,
            r#"{"workspace":"a b","workspaceId":"ok","underCap":true}"#,
            no_slug.clone(),
        ),
        (
            "header injection slug",
            200,
            r#"{"workspace":"a\r\nx: y","underCap":true}"#,
            no_slug.clone(),
        ),
        (
            "numeric slug",
            200,
            r#"{"workspace":42,"underCap":true}"#,
            no_slug.clone(),
        ),
        (
            "no workspace at all",
            200,
            r#"{"underCap":true}"#,
            no_slug.clone(),
        ),
        (
            "under cap false",
            200,
            r#"{"workspace":"acme","underCap":false}"#,
            not_under_cap.clone(),
        ),
        (
            "under cap string",
            200,
            r#"{"workspace":"acme","underCap":"true"}"#,
            not_under_cap.clone(),
        ),
        (
            "under cap missing",
            200,
            r#"{"workspace":"acme"}"#,
            not_under_cap.clone(),
        ),
        ("not json", 200, "OK", not_object.clone()),
        ("json array", 200, "[]", not_object.clone()),
        ("empty body", 200, "", not_object.clone()),
        ("unauthorized", 401, "", Ok(Verdict::Unauthorized)),
        (
            "unauthorized with body",
            401,
            r#"{"error":"bad key"}"#,
            Ok(Verdict::Unauthorized),
        ),
        (
            "no credits",
            402,
            r#"{"workspace":"acme","workspaceId":"id","underCap":false,"error":"Credit cap reached"}"#,
            Ok(Verdict::PaymentRequired {
                workspace: Workspace::parse("acme"),
                reason: Some("Credit cap reached".into()),
            }),
        ),
        (
            "no credits, bad slug dropped",
            402,
            r#"{"workspace":"a/b","underCap":false,"error":"x"}"#,
            Ok(Verdict::PaymentRequired {
                workspace: None,
                reason: Some("x".into()),
            }),
        ),
        (
            "no credits, error not a string",
            402,
            r#"{"workspace":"acme","error":{"code":1}}"#,
            Ok(Verdict::PaymentRequired {
                workspace: Workspace::parse("acme"),
                reason: None,
            }),
        ),
        (
            "no credits, not json",
            402,
            "Payment Required",
            Ok(Verdict::PaymentRequired {
                workspace: None,
                reason: None,
            }),
        ),
        (
            "no credits, control chars stripped",
            402,
            r#"{"error":"cap\r\nreached\u0000"}"#,
            Ok(Verdict::PaymentRequired {
                workspace: None,
                reason: Some("capreached".into()),
            }),
        ),
        ("server error", 500, "", Err(UsageCheckError::Status(500))),
        ("forbidden", 403, "", Err(UsageCheckError::Status(403))),
    ];
    for (name, status, body, expected) in rows {
        assert_eq!(parse_answer(status, body.as_bytes()), expected, "case {name:?}");
    }
}

#[test]
fn reason_length_is_capped() {
    let long = "x".repeat(MAX_REASON_CHARS * 2);
    assert_eq!(clean_reason(&long).chars().count(), MAX_REASON_CHARS);
}

#[test]
fn key_is_one_encoded_query_value() {
    let client = UsageCheckClient::new(&UsageCheckConfig {
        url: "http://127.0.0.1:1/serverless/usage-check".into(),
        timeout_ms: 100,
        retries: 0,
    })
    .unwrap();
    let url = client.request_url(&ApiKey::new("a&nocache=false#x y+z"));
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        pairs,
        vec![
            ("api_key".to_string(), "a&nocache=false#x y+z".to_string()),
            ("nocache".to_string(), "true".to_string()),
        ]
    );
}

#[test]
fn errors_do_not_mention_keys_or_urls() {
    for error in [
        UsageCheckError::Timeout,
        UsageCheckError::Connect,
        UsageCheckError::Transport,
        UsageCheckError::Status(500),
        UsageCheckError::InvalidAnswer("x"),
    ] {
        let text = error.to_string();
        assert!(!text.contains("api_key"), "{text}");
        assert!(!text.contains("http"), "{text}");
    }
}

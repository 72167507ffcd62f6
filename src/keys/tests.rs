use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue as RawHeader};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

use super::*;

/// Builds an HTTP request as Envoy forwards it (headers joined in a map).
fn request(target: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path: target.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        raw_body: body.to_vec(),
        ..Default::default()
    }
}

fn rules() -> KeyRules {
    KeyRules::new(&KeysConfig::default())
}

fn extract(http: &HttpRequest) -> Result<(String, KeyChannel), KeyError> {
    rules()
        .extract(&HttpView::new(http))
        .map(|(key, channel)| (key.expose().to_string(), channel))
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn extraction_table() {
    use KeyChannel::*;
    let long = "k".repeat(513);
    let max = "k".repeat(512);
    let long_query = format!("/p?api_key={long}");
    let max_query = format!("/p?api_key={max}");
    let long_header = format!("Bearer {long}");
    type Row<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a [u8],
        Result<(&'a str, KeyChannel), KeyError>,
    );
    let rows: Vec<Row> = vec![
        // Query parameter.
        ("plain query", "/p?api_key=abc", vec![], b"", Ok(("abc", Query))),
        (
            "query among others",
            "/p?x=1&api_key=abc&y=2",
            vec![],
            b"",
            Ok(("abc", Query)),
        ),
        (
            "percent-decoded",
            "/p?api_key=a%2Fb%3D%26c",
            vec![],
            b"",
            Ok(("a/b=&c", Query)),
        ),
        (
            "plus is a space",
            "/p?api_key=a+b",
            vec![],
            b"",
            Ok(("a b", Query)),
        ),
        (
            "encoded name",
            "/p?api%5Fkey=abc",
            vec![],
            b"",
            Ok(("abc", Query)),
        ),
        (
            "repeated param",
            "/p?api_key=a&api_key=b",
            vec![],
            b"",
            Err(KeyError::Ambiguous(Query)),
        ),
        (
            "repeated, one encoded",
            "/p?api_key=a&api%5fkey=a",
            vec![],
            b"",
            Err(KeyError::Ambiguous(Query)),
        ),
        (
            "empty value",
            "/p?api_key=",
            vec![],
            b"",
            Err(KeyError::Empty(Query)),
        ),
        (
            "bare name",
            "/p?api_key",
            vec![],
            b"",
            Err(KeyError::Empty(Query)),
        ),
        (
            "control char",
            "/p?api_key=a%0Ab",
            vec![],
            b"",
            Err(KeyError::InvalidCharacters(Query)),
        ),
        (
            "nul char",
            "/p?api_key=a%00b",
            vec![],
            b"",
            Err(KeyError::InvalidCharacters(Query)),
        ),
        (
            "not utf-8",
            "/p?api_key=%FF%FE",
            vec![],
            b"",
            Err(KeyError::InvalidCharacters(Query)),
        ),
        (
            "too long",
            &long_query,
            vec![],
            b"",
            Err(KeyError::TooLong(Query)),
        ),
        ("max length", &max_query, vec![], b"", Ok((&max, Query))),
        (
            "similar name only",
            "/p?api_keys=abc&xapi_key=d",
            vec![],
            b"",
            Err(KeyError::Missing),
        ),
        (
            "query wins over header",
            "/p?api_key=q",
            vec![("authorization", "Bearer h")],
            b"",
            Ok(("q", Query)),
        ),
        (
            "empty query does not fall through",
            "/p?api_key=",
            vec![("authorization", "Bearer h")],
            b"",
            Err(KeyError::Empty(Query)),
        ),
        // Authorization header.
        (
            "bearer",
            "/p",
            vec![("authorization", "Bearer abc")],
            b"",
            Ok(("abc", Bearer)),
        ),
        (
            "bearer lowercase",
            "/p",
            vec![("authorization", "bearer abc")],
            b"",
            Ok(("abc", Bearer)),
        ),
        (
            "bearer uppercase",
            "/p",
            vec![("authorization", "BEARER abc")],
            b"",
            Ok(("abc", Bearer)),
        ),
        (
            "bearer extra spaces",
            "/p",
            vec![("authorization", "Bearer   abc")],
            b"",
            Ok(("abc", Bearer)),
        ),
        (
            "bearer without token",
            "/p",
            vec![("authorization", "Bearer")],
            b"",
            Err(KeyError::Empty(Bearer)),
        ),
        (
            "joined repeated headers",
            "/p",
            vec![("authorization", "Bearer a,Bearer b")],
            b"",
            Err(KeyError::Ambiguous(Bearer)),
        ),
        (
            "basic scheme is not a key",
            "/p",
            vec![("authorization", "Basic dXNlcg==")],
            b"",
            Err(KeyError::Missing),
        ),
        (
            "bearer too long",
            "/p",
            vec![("authorization", &long_header)],
            b"",
            Err(KeyError::TooLong(Bearer)),
        ),
        (
            "header wins over body",
            "/p",
            vec![("authorization", "Bearer h"), JSON],
            br#"{"api_key":"b"}"#,
            Ok(("h", Bearer)),
        ),
        // JSON body.
        (
            "json body",
            "/p",
            vec![JSON],
            br#"{"api_key":"abc","image":"x"}"#,
            Ok(("abc", Body)),
        ),
        (
            "json with charset",
            "/p",
            vec![("content-type", "application/json; charset=utf-8")],
            br#"{"api_key":"abc"}"#,
            Ok(("abc", Body)),
        ),
        (
            "json type uppercase",
            "/p",
            vec![("content-type", "Application/JSON")],
            br#"{"api_key":"abc"}"#,
            Ok(("abc", Body)),
        ),
        (
            "escaped field name",
            "/p",
            vec![JSON],
            br#"{"api\u005fkey":"abc"}"#,
            Ok(("abc", Body)),
        ),
        (
            "nested field ignored",
            "/p",
            vec![JSON],
            br#"{"inner":{"api_key":"abc"}}"#,
            Err(KeyError::Missing),
        ),
        (
            "repeated field",
            "/p",
            vec![JSON],
            br#"{"api_key":"a","api_key":"b"}"#,
            Err(KeyError::Ambiguous(Body)),
        ),
        (
            "number field",
            "/p",
            vec![JSON],
            br#"{"api_key":123}"#,
            Err(KeyError::NotAString),
        ),
        (
            "null field",
            "/p",
            vec![JSON],
            br#"{"api_key":null}"#,
            Err(KeyError::NotAString),
        ),
        (
            "empty string field",
            "/p",
            vec![JSON],
            br#"{"api_key":""}"#,
            Err(KeyError::Empty(Body)),
        ),
        (
            "control char in field",
            "/p",
            vec![JSON],
            br#"{"api_key":"a\nb"}"#,
            Err(KeyError::InvalidCharacters(Body)),
        ),
        (
            "truncated body",
            "/p",
            vec![JSON],
            br#"{"api_key":"abc","ima"#,
            Err(KeyError::Missing),
        ),
        (
            "trailing garbage",
            "/p",
            vec![JSON],
            br#"{"api_key":"abc"} x"#,
            Err(KeyError::Missing),
        ),
        (
            "array body",
            "/p",
            vec![JSON],
            br#"["api_key"]"#,
            Err(KeyError::Missing),
        ),
        (
            "not json content type",
            "/p",
            vec![("content-type", "text/plain")],
            br#"{"api_key":"abc"}"#,
            Err(KeyError::Missing),
        ),
        (
            "json-like subtype",
            "/p",
            vec![("content-type", "application/jsonx")],
            br#"{"api_key":"abc"}"#,
            Err(KeyError::Missing),
        ),
        (
            "no content type",
            "/p",
            vec![],
            br#"{"api_key":"abc"}"#,
            Err(KeyError::Missing),
        ),
        (
            "binary body",
            "/p",
            vec![JSON],
            b"\xff\xfe\x00",
            Err(KeyError::Missing),
        ),
        ("nothing at all", "/p", vec![], b"", Err(KeyError::Missing)),
    ];
    for (name, target, headers, body, expected) in rows {
        let http = request(target, &headers, body);
        let expected = expected.map(|(key, channel)| (key.to_string(), channel));
        assert_eq!(extract(&http), expected, "case {name:?}");
    }
}

#[test]
fn body_read_from_utf8_field() {
    let mut http = request("/p", &[JSON], b"");
    http.body = r#"{"api_key":"abc"}"#.into();
    assert_eq!(extract(&http), Ok(("abc".to_string(), KeyChannel::Body)));
}

#[test]
fn raw_headers_repeated_authorization_is_ambiguous() {
    let mut http = request("/p", &[], b"");
    let header = |value: &str| RawHeader {
        key: "authorization".into(),
        value: String::new(),
        raw_value: value.as_bytes().to_vec(),
    };
    http.header_map = Some(HeaderMap {
        headers: vec![header("Bearer a"), header("Bearer a")],
    });
    assert_eq!(extract(&http), Err(KeyError::Ambiguous(KeyChannel::Bearer)));
    http.header_map = Some(HeaderMap {
        headers: vec![header("Bearer a")],
    });
    assert_eq!(extract(&http), Ok(("a".to_string(), KeyChannel::Bearer)));
}

#[test]
fn raw_header_not_utf8_is_invalid() {
    let mut http = request("/p", &[], b"");
    http.header_map = Some(HeaderMap {
        headers: vec![RawHeader {
            key: "authorization".into(),
            value: String::new(),
            raw_value: b"Bearer \xff".to_vec(),
        }],
    });
    assert_eq!(
        extract(&http),
        Err(KeyError::InvalidCharacters(KeyChannel::Bearer))
    );
}

#[test]
fn configured_names_are_used() {
    let rules = KeyRules::new(&KeysConfig {
        query_param: "token".into(),
        body_field: "key".into(),
        max_length: 4,
    });
    let by_query = request("/p?token=abcd&api_key=zzz", &[], b"");
    let (key, _) = rules.extract(&HttpView::new(&by_query)).unwrap();
    assert_eq!(key.expose(), "abcd");
    let by_body = request("/p", &[JSON], br#"{"key":"abcde"}"#);
    assert_eq!(
        rules.extract(&HttpView::new(&by_body)).unwrap_err(),
        KeyError::TooLong(KeyChannel::Body)
    );
}

#[test]
fn debug_output_hides_the_key() {
    let key = ApiKey::new("super-secret-key");
    assert!(!format!("{key:?}").contains("super-secret"));
    assert!(!format!("{:?}", key.digest()).contains("super-secret"));
}

#[test]
fn digest_hex_round_trip() {
    let digest = KeyDigest::of("abc");
    assert_eq!(
        digest.to_hex(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(KeyDigest::from_hex(&digest.to_hex()), Some(digest));
    assert_eq!(KeyDigest::from_hex("xyz"), None);
    assert_eq!(digest.fingerprint(), "ba7816bf8f01");
}

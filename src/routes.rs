//! Which requests pass without a key: methods outside the authenticated set
//! and paths on the skip list.
//!
//! A path is matched against its literal text, so it is only exempt when the
//! upstream cannot route it anywhere else. Any text an HTTP framework might
//! decode or normalise first (percent escapes, dot segments, `;` parameters,
//! backslashes, repeated slashes) makes the path ineligible for skipping: the
//! request then goes through the full check.

use crate::config::RoutesConfig;

/// The exemption rules, prepared once from the configuration.
#[derive(Debug, Clone)]
pub struct RouteRules {
    auth_methods: Vec<String>,
    skip_paths: Vec<String>,
    skip_prefixes: Vec<String>,
}

impl RouteRules {
    pub fn new(config: &RoutesConfig) -> Self {
        RouteRules {
            auth_methods: config
                .auth_methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            skip_paths: config.skip_paths.clone(),
            skip_prefixes: config.skip_prefixes.clone(),
        }
    }

    /// Returns true when the request needs no key. `path` is the target with
    /// the query already cut off.
    pub fn is_exempt(&self, method: &str, path: &str) -> bool {
        !self.method_needs_key(method) || self.path_is_skipped(path)
    }

    /// Methods are compared case-insensitively, because some servers treat
    /// `get` as `GET`; an empty method always needs a key.
    pub fn method_needs_key(&self, method: &str) -> bool {
        method.is_empty() || self.auth_methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }

    pub fn path_is_skipped(&self, path: &str) -> bool {
        if !is_plain_path(path) {
            return false;
        }
        self.skip_paths.iter().any(|skip| skip == path)
            || self
                .skip_prefixes
                .iter()
                .any(|prefix| matches_prefix(path, prefix))
    }
}

/// A prefix ends on a segment boundary: `/static/` matches `/static/app.js`;
/// `/static` matches `/static` and `/static/app.js` but not `/staticfile`.
fn matches_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// True when the path's literal text is the only way to read it: absolute,
/// printable ASCII, and free of anything a framework decodes or normalises.
pub fn is_plain_path(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    let forbidden = |b: u8| matches!(b, b'%' | b';' | b'\\' | b'#') || !(0x21..0x7f).contains(&b);
    if path.bytes().any(forbidden) {
        return false;
    }
    if path.contains("//") {
        return false;
    }
    !path.split('/').any(|segment| segment == "." || segment == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> RouteRules {
        RouteRules::new(&RoutesConfig::default())
    }

    #[test]
    fn exemption_table() {
        // (method, path, exempt)
        let cases = [
            ("GET", "/", true),
            ("GET", "/docs", true),
            ("GET", "/healthz", true),
            ("GET", "/model/registry", true),
            ("GET", "/static/app.js", true),
            ("GET", "/_next/data/x.json", true),
            ("GET", "/static/", true),
            ("OPTIONS", "/predict", true),
            ("PUT", "/predict", true),
            ("GET", "/predict", false),
            ("POST", "/predict", false),
            ("HEAD", "/predict", false),
            ("head", "/predict", false),
            ("get", "/predict", false),
            ("", "/predict", false),
            ("", "/healthz", true),
            // Exact paths compare whole.
            ("GET", "/docs/", false),
            ("GET", "/docsx", false),
            ("GET", "/healthz/extra", false),
            ("GET", "/model", false),
            // Prefixes end on a segment boundary.
            ("GET", "/static", false),
            ("GET", "/staticfile", false),
            ("GET", "/static_/x", false),
            // Anything the upstream might decode or normalise is checked.
            ("GET", "/static/../predict", false),
            ("GET", "/static/./x", false),
            ("GET", "/static/..", false),
            ("GET", "/docs/.", false),
            ("GET", "/%64ocs", false),
            ("GET", "/static/%2e%2e/predict", false),
            ("GET", "/static/x;jsessionid=1", false),
            ("GET", "/docs;x", false),
            ("GET", "/static\\..\\predict", false),
            ("GET", "//docs", false),
            ("GET", "/static//x", false),
            ("GET", "/static/ x", false),
            ("GET", "/static/é", false),
            ("GET", "docs", false),
            ("GET", "", false),
            ("GET", "*", false),
            ("GET", "http://host/docs", false),
        ];
        let rules = rules();
        for (method, path, exempt) in cases {
            assert_eq!(
                rules.is_exempt(method, path),
                exempt,
                "method {method:?} path {path:?}"
            );
        }
    }

    #[test]
    fn prefix_without_trailing_slash() {
        let rules = RouteRules::new(&RoutesConfig {
            auth_methods: vec!["GET".into()],
            skip_paths: vec![],
            skip_prefixes: vec!["/assets".into()],
        });
        assert!(rules.path_is_skipped("/assets"));
        assert!(rules.path_is_skipped("/assets/a.css"));
        assert!(!rules.path_is_skipped("/assetsx"));
    }

    #[test]
    fn configured_methods_are_case_insensitive() {
        let rules = RouteRules::new(&RoutesConfig {
            auth_methods: vec!["post".into()],
            skip_paths: vec![],
            skip_prefixes: vec![],
        });
        assert!(rules.method_needs_key("POST"));
        assert!(!rules.method_needs_key("GET"));
    }
}

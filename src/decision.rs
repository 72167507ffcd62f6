//! The outcome types of a check, and the pure first step that decides
//! whether a request is exempt, denied outright, or needs a usage check.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use crate::keys::{ApiKey, KeyChannel, KeyError, KeyRules};
use crate::request::HttpView;
use crate::routes::RouteRules;

/// A workspace slug the usage-check API returned: `[A-Za-z0-9][A-Za-z0-9_-]*`,
/// at most 128 bytes. Only a valid slug is ever put in a header.
///
/// Slugs are interned: the many cached keys of one workspace share one
/// allocation, and cloning a slug on a cache hit is a reference count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workspace(Arc<str>);

pub const MAX_WORKSPACE_LEN: usize = 128;

/// Most distinct slugs interned; past it, new slugs get their own
/// allocation, so answers naming ever new workspaces cannot grow the table
/// without bound.
const MAX_INTERNED_WORKSPACES: usize = 100_000;

impl Workspace {
    pub fn parse(text: &str) -> Option<Workspace> {
        let mut bytes = text.bytes();
        let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        (first_ok && rest_ok && text.len() <= MAX_WORKSPACE_LEN).then(|| Workspace(intern(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Workspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn intern(text: &str) -> Arc<str> {
    static SLUGS: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    let mut slugs = SLUGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(slug) = slugs.get(text) {
        return Arc::clone(slug);
    }
    let slug: Arc<str> = Arc::from(text);
    if slugs.len() < MAX_INTERNED_WORKSPACES {
        slugs.insert(Arc::clone(&slug));
    }
    slug
}

/// The usage-check API's answer about a key: the only thing that is cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        workspace: Workspace,
    },
    /// The key may not run inference (HTTP 401).
    Unauthorized,
    /// The key's workspace cannot spend credits (HTTP 402). `reason` is the
    /// API's `error` text, already cleaned for display.
    PaymentRequired {
        workspace: Option<Workspace>,
        reason: Option<Arc<str>>,
    },
}

impl Verdict {
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Allowed { .. } => "allowed",
            Verdict::Unauthorized => "unauthorized",
            Verdict::PaymentRequired { .. } => "payment_required",
        }
    }
}

/// The final answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The route needs no key; the request goes on unchanged except that any
    /// client-supplied workspace header is removed.
    Skipped,
    Allowed {
        workspace: Workspace,
    },
    Denied(Denial),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No usable key: missing, ambiguous, or malformed. HTTP 401.
    BadKey(KeyError),
    /// The usage-check API rejected the key. HTTP 401.
    Unauthorized,
    /// The workspace cannot spend credits. HTTP 402.
    PaymentRequired {
        workspace: Option<Workspace>,
        reason: Option<Arc<str>>,
    },
    /// The usage-check API could not give a valid answer. HTTP 503.
    BackendUnavailable,
}

impl Denial {
    /// A short, bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::BadKey(KeyError::Missing) => "missing_key",
            Denial::BadKey(KeyError::Ambiguous(_)) => "ambiguous_key",
            Denial::BadKey(_) => "invalid_key",
            Denial::Unauthorized => "unauthorized",
            Denial::PaymentRequired { .. } => "payment_required",
            Denial::BackendUnavailable => "backend_unavailable",
        }
    }
}

impl From<Verdict> for Decision {
    fn from(verdict: Verdict) -> Decision {
        match verdict {
            Verdict::Allowed { workspace } => Decision::Allowed { workspace },
            Verdict::Unauthorized => Decision::Denied(Denial::Unauthorized),
            Verdict::PaymentRequired { workspace, reason } => {
                Decision::Denied(Denial::PaymentRequired { workspace, reason })
            }
        }
    }
}

/// What the request needs before it can be answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    /// Answer at once with this decision.
    Decided(Decision),
    /// Look the key up in the cache or ask the usage-check API.
    NeedsUsageCheck(ApiKey, KeyChannel),
}

/// Decides everything that can be decided from the request alone.
pub fn gate(view: &HttpView<'_>, routes: &RouteRules, keys: &KeyRules) -> Gate {
    if routes.is_exempt(view.method(), view.path()) {
        return Gate::Decided(Decision::Skipped);
    }
    match keys.extract(view) {
        Ok((key, channel)) => Gate::NeedsUsageCheck(key, channel),
        Err(error) => Gate::Decided(Decision::Denied(Denial::BadKey(error))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_slug_table() {
        let long_ok = "a".repeat(MAX_WORKSPACE_LEN);
        let too_long = "a".repeat(MAX_WORKSPACE_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("acme", true),
            ("Acme-42_prod", true),
            ("0team", true),
            (&long_ok, true),
            ("", false),
            ("-acme", false),
            ("_acme", false),
            ("acme corp", false),
            ("acme\r\nx-evil: 1", false),
            ("acme/../x", false),
            ("acmé", false),
            (&too_long, false),
        ];
        for (text, valid) in cases {
            assert_eq!(Workspace::parse(text).is_some(), *valid, "slug {text:?}");
        }
    }

    #[test]
    fn equal_slugs_share_one_allocation() {
        let first = Workspace::parse("shared-slug").unwrap();
        let second = Workspace::parse("shared-slug").unwrap();
        assert!(Arc::ptr_eq(&first.0, &second.0));
    }
}

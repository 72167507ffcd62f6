//! Prometheus metrics. Labels take values from small fixed sets (outcomes,
//! reasons, result classes). No label carries a key, a fingerprint of one, a
//! workspace or a path, so the number of series stays bounded.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::cache::Lookup;
use crate::decision::{Decision, Verdict};
use crate::usage_check::{AttemptObserver, UsageCheckError};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// allowed, skipped or denied.
    pub outcome: &'static str,
    /// For denials: missing_key, ambiguous_key, invalid_key, unauthorized,
    /// payment_required or backend_unavailable; "none" otherwise.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLookupLabels {
    /// hit or miss.
    pub result: &'static str,
    /// allowed, unauthorized, payment_required, or error (a miss whose
    /// usage check failed).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: &'static str,
}

/// Counters of the label sets the hot path uses, resolved once so that a
/// check increments an atomic instead of hashing labels under a lock.
struct HotCounters {
    skipped: Counter,
    allowed: Counter,
    /// Indexed like [`DENIAL_REASONS`].
    denied: Vec<Counter>,
    /// Indexed by [`Lookup`] (hit, miss), then like [`LOOKUP_OUTCOMES`].
    lookups: [Vec<Counter>; 2],
}

/// Every value of the `reason` label of denials.
const DENIAL_REASONS: [&str; 6] = [
    "missing_key",
    "ambiguous_key",
    "invalid_key",
    "unauthorized",
    "payment_required",
    "backend_unavailable",
];

/// Every value of the `outcome` label of cache lookups.
const LOOKUP_OUTCOMES: [&str; 4] = ["allowed", "unauthorized", "payment_required", "error"];

/// Every metric of the service, registered in one registry.
pub struct Metrics {
    registry: Registry,
    hot: HotCounters,
    pub decisions: Family<DecisionLabels, Counter>,
    pub check_duration: Histogram,
    pub checks_in_flight: Gauge,
    pub cache_lookups: Family<CacheLookupLabels, Counter>,
    pub cache_entries: Gauge,
    pub cache_refreshes: Family<ResultLabels, Counter>,
    pub cache_invalidations: Family<ScopeLabels, Counter>,
    pub usage_check_requests: Family<ResultLabels, Counter>,
    pub usage_check_duration: Histogram,
    pub usage_check_retries: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("usage_authz");
        // 50 µs to about 3.3 s: a cache hit sits in the first buckets, a
        // usage-check call near the top.
        let check_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 17));
        let usage_check_duration = Histogram::new(exponential_buckets(0.001, 2.0, 13));
        let metrics = Metrics {
            decisions: Family::default(),
            check_duration,
            checks_in_flight: Gauge::default(),
            cache_lookups: Family::default(),
            cache_entries: Gauge::default(),
            cache_refreshes: Family::default(),
            cache_invalidations: Family::default(),
            usage_check_requests: Family::default(),
            usage_check_duration,
            usage_check_retries: Counter::default(),
            registry: Registry::default(),
            hot: HotCounters {
                skipped: Counter::default(),
                allowed: Counter::default(),
                denied: Vec::new(),
                lookups: [Vec::new(), Vec::new()],
            },
        };
        registry.register(
            "decisions",
            "Check decisions by outcome and denial reason",
            metrics.decisions.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "Time to answer one Check call",
            metrics.check_duration.clone(),
        );
        registry.register(
            "checks_in_flight",
            "Check calls being answered now",
            metrics.checks_in_flight.clone(),
        );
        registry.register(
            "cache_lookups",
            "Verdict cache lookups by result (hit or miss) and outcome",
            metrics.cache_lookups.clone(),
        );
        registry.register(
            "cache_entries",
            "Verdicts in the cache, read at scrape time",
            metrics.cache_entries.clone(),
        );
        registry.register(
            "cache_refreshes",
            "Background refreshes of allowed verdicts near expiry, by result",
            metrics.cache_refreshes.clone(),
        );
        registry.register(
            "cache_invalidations",
            "Verdicts dropped through the admin API, by scope (key or workspace)",
            metrics.cache_invalidations.clone(),
        );
        registry.register(
            "usage_check_requests",
            "HTTP attempts to the usage-check API by result: status class, timeout, connect_error, transport_error or invalid_answer",
            metrics.usage_check_requests.clone(),
        );
        registry.register(
            "usage_check_duration_seconds",
            "Duration of one HTTP attempt to the usage-check API",
            metrics.usage_check_duration.clone(),
        );
        registry.register(
            "usage_check_retries",
            "Retries of usage-check calls after a connection error or a 502, 503 or 504",
            metrics.usage_check_retries.clone(),
        );
        // Resolving every label set up front also exports each series at 0
        // from the start, so rate() over any reason always has a series to read.
        let decision = |outcome, reason| {
            metrics
                .decisions
                .get_or_create_owned(&DecisionLabels { outcome, reason })
        };
        let lookups = |result| {
            LOOKUP_OUTCOMES
                .iter()
                .map(|outcome| {
                    metrics
                        .cache_lookups
                        .get_or_create_owned(&CacheLookupLabels { result, outcome })
                })
                .collect()
        };
        let hot = HotCounters {
            skipped: decision("skipped", "none"),
            allowed: decision("allowed", "none"),
            denied: DENIAL_REASONS
                .iter()
                .map(|reason| decision("denied", reason))
                .collect(),
            lookups: [lookups("hit"), lookups("miss")],
        };
        Metrics {
            registry,
            hot,
            ..metrics
        }
    }

    pub fn record_decision(&self, decision: &Decision, elapsed: Duration) {
        self.check_duration.observe(elapsed.as_secs_f64());
        match decision {
            Decision::Skipped => self.hot.skipped.inc(),
            Decision::Allowed { .. } => self.hot.allowed.inc(),
            Decision::Denied(denial) => {
                let reason = denial.reason();
                match DENIAL_REASONS.iter().position(|known| *known == reason) {
                    Some(index) => self.hot.denied[index].inc(),
                    // Not reached while DENIAL_REASONS lists every reason,
                    // which a unit test checks.
                    None => self
                        .decisions
                        .get_or_create(&DecisionLabels {
                            outcome: "denied",
                            reason,
                        })
                        .inc(),
                }
            }
        };
    }

    pub fn record_lookup(&self, lookup: Lookup, verdict: Option<&Verdict>) {
        let by_outcome = match lookup {
            Lookup::Hit => &self.hot.lookups[0],
            Lookup::Miss => &self.hot.lookups[1],
        };
        let outcome = match verdict {
            Some(Verdict::Allowed { .. }) => 0,
            Some(Verdict::Unauthorized) => 1,
            Some(Verdict::PaymentRequired { .. }) => 2,
            None => 3,
        };
        by_outcome[outcome].inc();
    }

    /// Sum of cache lookups with the given result, over all outcomes.
    pub fn lookups_total(&self, result: &'static str) -> u64 {
        LOOKUP_OUTCOMES
            .into_iter()
            .map(|outcome| {
                self.cache_lookups
                    .get(&CacheLookupLabels { result, outcome })
                    .map_or(0, |counter| counter.get())
            })
            .sum()
    }

    pub fn refreshes_total(&self) -> u64 {
        ["replaced", "failed"]
            .into_iter()
            .map(|result| {
                self.cache_refreshes
                    .get(&ResultLabels { result })
                    .map_or(0, |c| c.get())
            })
            .sum()
    }

    pub fn invalidations_total(&self) -> u64 {
        ["key", "workspace"]
            .into_iter()
            .map(|scope| {
                self.cache_invalidations
                    .get(&ScopeLabels { scope })
                    .map_or(0, |c| c.get())
            })
            .sum()
    }

    /// Renders every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl AttemptObserver for Metrics {
    fn attempt(&self, result: &Result<Verdict, UsageCheckError>, elapsed: Duration) {
        let class = match result {
            Ok(Verdict::Allowed { .. }) => "2xx",
            Ok(_) => "4xx",
            Err(UsageCheckError::Status(code)) => match code {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Err(UsageCheckError::Timeout) => "timeout",
            Err(UsageCheckError::Connect) => "connect_error",
            Err(UsageCheckError::Transport) => "transport_error",
            Err(UsageCheckError::InvalidAnswer(_)) => "invalid_answer",
        };
        self.usage_check_requests
            .get_or_create(&ResultLabels { result: class })
            .inc();
        // A deadline hit is reported with the whole deadline, which would
        // only repeat the timeout setting in the histogram.
        if !matches!(result, Err(UsageCheckError::Timeout)) {
            self.usage_check_duration.observe(elapsed.as_secs_f64());
        }
    }

    fn retry(&self) {
        self.usage_check_retries.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Denial;
    use crate::keys::{KeyChannel, KeyError};

    #[test]
    fn every_denial_reason_has_a_resolved_counter() {
        let denials = [
            Denial::BadKey(KeyError::Missing),
            Denial::BadKey(KeyError::Ambiguous(KeyChannel::Query)),
            Denial::BadKey(KeyError::Empty(KeyChannel::Bearer)),
            Denial::BadKey(KeyError::TooLong(KeyChannel::Body)),
            Denial::BadKey(KeyError::InvalidCharacters(KeyChannel::Query)),
            Denial::BadKey(KeyError::NotAString),
            Denial::Unauthorized,
            Denial::PaymentRequired {
                workspace: None,
                reason: None,
            },
            Denial::BackendUnavailable,
        ];
        for denial in denials {
            assert!(DENIAL_REASONS.contains(&denial.reason()), "{denial:?}");
        }
    }

    #[test]
    fn every_series_is_exported_from_the_start() {
        let text = Metrics::new().encode();
        for reason in DENIAL_REASONS {
            let series = format!("usage_authz_decisions_total{{outcome=\"denied\",reason=\"{reason}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        assert!(text.contains("usage_authz_cache_lookups_total{result=\"hit\",outcome=\"error\"} 0"));
    }
}

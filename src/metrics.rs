//! Prometheus metrics. Labels take values from small fixed sets (outcomes,
//! reasons, result classes); no label ever carries a key, a fingerprint of
//! one, a workspace or a path, so the series count stays bounded.

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

/// Every metric of the service, registered in one registry.
pub struct Metrics {
    registry: Registry,
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
        Metrics { registry, ..metrics }
    }

    pub fn record_decision(&self, decision: &Decision, elapsed: Duration) {
        let labels = match decision {
            Decision::Skipped => DecisionLabels {
                outcome: "skipped",
                reason: "none",
            },
            Decision::Allowed { .. } => DecisionLabels {
                outcome: "allowed",
                reason: "none",
            },
            Decision::Denied(denial) => DecisionLabels {
                outcome: "denied",
                reason: denial.reason(),
            },
        };
        self.decisions.get_or_create(&labels).inc();
        self.check_duration.observe(elapsed.as_secs_f64());
    }

    pub fn record_lookup(&self, lookup: Lookup, verdict: Option<&Verdict>) {
        let labels = CacheLookupLabels {
            result: match lookup {
                Lookup::Hit => "hit",
                Lookup::Miss => "miss",
            },
            outcome: verdict.map_or("error", Verdict::outcome),
        };
        self.cache_lookups.get_or_create(&labels).inc();
    }

    /// Sum of cache lookups with the given result, over all outcomes.
    pub fn lookups_total(&self, result: &'static str) -> u64 {
        ["allowed", "unauthorized", "payment_required", "error"]
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

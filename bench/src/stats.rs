//! Latency histograms and the figures one measured point reports.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram records, in nanoseconds (60 s); slower
/// calls are clamped to it.
const MAX_RECORDED_NANOS: u64 = 60_000_000_000;

/// Creates an empty latency histogram in nanoseconds with 3 significant
/// digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_RECORDED_NANOS, 3).expect("static histogram bounds are valid")
}

pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
    histogram.saturating_record(nanos);
}

/// Outcome of one closed-loop run.
pub struct RunResult {
    pub latencies: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// The first error seen, for the log. Later errors are only counted.
    pub first_error: Option<String>,
}

impl RunResult {
    pub fn empty() -> Self {
        RunResult {
            latencies: new_histogram(),
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            first_error: None,
        }
    }

    /// Adds another run of the same system, as one more round of it.
    pub fn absorb(&mut self, other: RunResult) {
        self.latencies
            .add(&other.latencies)
            .expect("histograms share bounds");
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn throughput(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.ok as f64 / self.elapsed.as_secs_f64()
        }
    }
}

/// CPU time a process used during a run, as a percentage of one core.
#[derive(Debug, Clone, Serialize)]
pub struct CpuShare {
    pub process: String,
    pub core_percent: f64,
}

/// The published figures of one system at one load level.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub system: String,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub throughput: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub cpu: Vec<CpuShare>,
    /// Throughput of each round on its own, to show the spread between
    /// rounds. Empty for a single run.
    pub round_throughputs: Vec<f64>,
    /// p99 of each round on its own, in microseconds.
    pub round_p99_us: Vec<f64>,
}

fn quantile_us(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

impl Summary {
    pub fn of(system: &str, run: &RunResult, cpu: Vec<CpuShare>) -> Self {
        Summary {
            system: system.to_string(),
            requests: run.ok,
            errors: run.errors,
            seconds: run.elapsed.as_secs_f64(),
            throughput: run.throughput(),
            p50_us: quantile_us(&run.latencies, 0.50),
            p99_us: quantile_us(&run.latencies, 0.99),
            p999_us: quantile_us(&run.latencies, 0.999),
            max_us: run.latencies.max() as f64 / 1_000.0,
            cpu,
            round_throughputs: Vec::new(),
            round_p99_us: Vec::new(),
        }
    }

    /// Keeps the throughput and p99 of every round, from their own
    /// summaries.
    pub fn with_rounds(mut self, rounds: &[Summary]) -> Self {
        self.round_throughputs = rounds.iter().map(|round| round.throughput).collect();
        self.round_p99_us = rounds.iter().map(|round| round.p99_us).collect();
        self
    }

    /// Formats the figures as one line for the progress log.
    pub fn line(&self) -> String {
        let cpu: Vec<String> = self
            .cpu
            .iter()
            .map(|share| format!("{} {:.0}%", share.process, share.core_percent))
            .collect();
        format!(
            "{:<34} {:>9.0} req/s  p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  errors {}  cpu [{}]",
            self.system,
            self.throughput,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.errors,
            cpu.join(", ")
        )
    }
}

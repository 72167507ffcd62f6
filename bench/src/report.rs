//! The suite's figures, and BENCHMARKS.md rendered from them.

use std::fmt::Write;

use serde::Serialize;

use crate::cache_cost::LookupCost;
use crate::procs::{OTHER_PROCESSES, STOLEN};
use crate::stats::Summary;
use crate::suite::{DIRECT_CONCURRENCY, DIRECT_CONNECTIONS, FILL_CONCURRENCY, FILL_CONNECTIONS};

/// Targets the figures are judged against.
pub mod targets {
    /// Cached Check throughput as a share of the no-op authorizer's.
    pub const DIRECT_THROUGHPUT_SHARE: f64 = 0.85;
    /// Throughput through Envoy as a share of Envoy with the no-op
    /// authorizer.
    pub const ENVOY_THROUGHPUT_SHARE: f64 = 0.90;
    /// Latency usage-authz adds over Envoy without ext_authz, as a multiple
    /// of what the no-op authorizer adds.
    pub const ENVOY_ADDED_LATENCY_FACTOR: f64 = 1.2;
    pub const MAX_BYTES_PER_KEY: f64 = 300.0;
}

/// A core counts as saturated from this share of its time on.
const SATURATED_PERCENT: f64 = 90.0;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub load_average_start: String,
    pub load_average_end: String,
    pub envoy_version: String,
    pub rustc_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub command: String,
    pub revision: String,
    pub server_cpus: String,
    pub client_cpus: String,
    pub warmup_seconds: f64,
    pub measure_seconds: f64,
    pub rounds: u32,
    pub build_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fill {
    pub instance: String,
    pub keys: u64,
    pub seconds: f64,
    pub checks_per_second: f64,
    pub usage_check_calls: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub label: String,
    pub floor: Summary,
    pub subject: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvoyLevel {
    pub label: String,
    pub connections: usize,
    pub no_authz: Summary,
    pub noop: Summary,
    pub usage_authz: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Amplification {
    pub api_delay_ms: u64,
    pub requests: usize,
    pub keys: usize,
    pub connections: usize,
    pub usage_check_calls: u64,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub keys: u64,
    pub rss_before: u64,
    pub rss_after: u64,
    pub bytes_per_key: f64,
    pub fill: Fill,
    pub recheck_keys: usize,
    pub recheck_allowed: u64,
    pub recheck_usage_check_calls: u64,
    /// The main instance's keys (the hot key and 100,000 more) and its RSS
    /// before and after they were cached.
    pub main_keys: u64,
    pub main_rss_empty: u64,
    pub main_rss_filled: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub suite_seconds: f64,
    pub fills: Vec<Fill>,
    pub direct_floor: Summary,
    pub direct: Vec<Summary>,
    pub direct_usage_check_calls: u64,
    pub growth: Vec<Comparison>,
    pub envoy: Vec<EnvoyLevel>,
    pub amplification: Vec<Amplification>,
    pub memory: Memory,
    pub sizes: Vec<Summary>,
    pub sizes_usage_check_calls: u64,
    pub lookups: Vec<LookupCost>,
}

fn client_percent(summary: &Summary) -> f64 {
    summary
        .cpu
        .iter()
        .filter(|share| share.process == "bench")
        .map(|share| share.core_percent)
        .sum()
}

fn server_percent(summary: &Summary) -> f64 {
    summary
        .cpu
        .iter()
        .filter(|share| !["bench", OTHER_PROCESSES, STOLEN].contains(&share.process.as_str()))
        .map(|share| share.core_percent)
        .sum()
}

/// CPU time of unwatched processes and other virtual machines, in percent of
/// one core, above which a row is reported as disturbed.
const DISTURBED_PERCENT: f64 = 10.0;

/// CPU time, in percent of one core, that other processes used or the
/// hypervisor gave to other virtual machines during a row.
fn interference_percent(summary: &Summary) -> f64 {
    summary
        .cpu
        .iter()
        .filter(|share| share.process == OTHER_PROCESSES || share.process == STOLEN)
        .map(|share| share.core_percent)
        .sum()
}

/// Names the rows during which other processes or virtual machines took
/// CPU time.
fn disturbed_rows(results: &Results) -> Vec<String> {
    let mut summaries: Vec<&Summary> = vec![&results.direct_floor];
    summaries.extend(&results.direct);
    for comparison in &results.growth {
        summaries.push(&comparison.floor);
        summaries.push(&comparison.subject);
    }
    for level in &results.envoy {
        summaries.extend([&level.no_authz, &level.noop, &level.usage_authz]);
    }
    summaries.extend(&results.sizes);
    summaries
        .into_iter()
        .filter(|summary| interference_percent(summary) > DISTURBED_PERCENT)
        .map(|summary| format!("{} ({:.0}%)", summary.system, interference_percent(summary)))
        .collect()
}

/// Names the core, if any, that bounded a point.
fn limit(summary: &Summary) -> &'static str {
    if server_percent(summary) >= SATURATED_PERCENT {
        "server core"
    } else if client_percent(summary) >= SATURATED_PERCENT {
        "load generator core"
    } else {
        "round trips (no core saturated)"
    }
}

fn ratio(subject: f64, floor: f64) -> String {
    if floor > 0.0 {
        format!("{:.2}", subject / floor)
    } else {
        "n/a".to_string()
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn cpu_cell(summary: &Summary) -> String {
    summary
        .cpu
        .iter()
        .map(|share| format!("{} {:.0}%", share.process, share.core_percent))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One verdict of the targets table.
struct TargetRow {
    target: String,
    measured: String,
    met: bool,
}

fn target_rows(results: &Results) -> Vec<TargetRow> {
    let mut rows = Vec::new();
    let floor = &results.direct_floor;
    for subject in results
        .direct
        .iter()
        .filter(|s| s.system.contains("hot") || s.system.contains("random"))
    {
        let share = subject.throughput / floor.throughput;
        rows.push(TargetRow {
            target: format!(
                "cached Check throughput ≥ {:.0}% of the no-op floor ({})",
                targets::DIRECT_THROUGHPUT_SHARE * 100.0,
                subject.system
            ),
            measured: format!(
                "{:.0}% ({:.0} vs {:.0} req/s)",
                share * 100.0,
                subject.throughput,
                floor.throughput
            ),
            met: share >= targets::DIRECT_THROUGHPUT_SHARE,
        });
    }
    for level in &results.envoy {
        let share = level.usage_authz.throughput / level.noop.throughput;
        rows.push(TargetRow {
            target: format!(
                "through Envoy, {}: throughput ≥ {:.0}% of Envoy + no-op",
                level.label,
                targets::ENVOY_THROUGHPUT_SHARE * 100.0
            ),
            measured: format!(
                "{:.0}% ({:.0} vs {:.0} req/s)",
                share * 100.0,
                level.usage_authz.throughput,
                level.noop.throughput
            ),
            met: share >= targets::ENVOY_THROUGHPUT_SHARE,
        });
        for (name, pick) in [
            ("p50", (|s: &Summary| s.p50_us) as fn(&Summary) -> f64),
            ("p99", |s: &Summary| s.p99_us),
        ] {
            let added_authz = pick(&level.usage_authz) - pick(&level.no_authz);
            let added_noop = pick(&level.noop) - pick(&level.no_authz);
            let allowed = added_noop.max(0.0) * targets::ENVOY_ADDED_LATENCY_FACTOR;
            rows.push(TargetRow {
                target: format!(
                    "through Envoy, {}: added {name} ≤ {:.1}× the no-op's",
                    level.label,
                    targets::ENVOY_ADDED_LATENCY_FACTOR
                ),
                measured: format!(
                    "{added_authz:.1} µs vs {added_noop:.1} µs ({}×)",
                    ratio(added_authz, added_noop)
                ),
                met: added_authz <= allowed,
            });
        }
    }
    let memory = &results.memory;
    rows.push(TargetRow {
        target: format!(
            "≤ {:.0} bytes of RSS per cached key at {} keys",
            targets::MAX_BYTES_PER_KEY,
            memory.keys
        ),
        measured: format!("{:.0} bytes", memory.bytes_per_key),
        met: memory.bytes_per_key <= targets::MAX_BYTES_PER_KEY,
    });
    for run in &results.amplification {
        rows.push(TargetRow {
            target: format!(
                "one usage-check call per new key: {} concurrent checks over {} keys, API delay {} ms",
                run.requests, run.keys, run.api_delay_ms
            ),
            measured: format!("{} calls", run.usage_check_calls),
            met: run.usage_check_calls == run.keys as u64 && run.summary.errors == 0,
        });
    }
    for fill in results.fills.iter().chain([&memory.fill]) {
        rows.push(TargetRow {
            target: format!(
                "one usage-check call per new key: fill of {} ({} keys)",
                fill.instance, fill.keys
            ),
            measured: format!("{} calls", fill.usage_check_calls),
            met: fill.usage_check_calls == fill.keys,
        });
    }
    rows
}

/// Per-round throughput, e.g. "71250 / 66376".
fn rounds_cell(summary: &Summary) -> String {
    summary
        .round_throughputs
        .iter()
        .map(|throughput| format!("{throughput:.0}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn summary_row(out: &mut String, summary: &Summary, floor: Option<&Summary>) {
    let ratios = match floor {
        Some(floor) => format!(
            "{} | {} | {} | {}",
            ratio(summary.throughput, floor.throughput),
            ratio(summary.p50_us, floor.p50_us),
            ratio(summary.p99_us, floor.p99_us),
            ratio(summary.p999_us, floor.p999_us)
        ),
        None => "1.00 | 1.00 | 1.00 | 1.00".to_string(),
    };
    let _ = writeln!(
        out,
        "| {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
        summary.system,
        summary.throughput,
        rounds_cell(summary),
        summary.p50_us,
        summary.p99_us,
        summary.p999_us,
        ratios,
        summary.errors,
        cpu_cell(summary),
        limit(summary)
    );
}

const SUMMARY_HEADER: &str = "| system | req/s | req/s by round | p50 µs | p99 µs | p99.9 µs | req/s ratio | p50 ratio | p99 ratio | p99.9 ratio | errors | CPU (% of one core) | limited by |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|";

/// Renders BENCHMARKS.md.
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let machine = &results.machine;
    let settings = &results.settings;
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `{}` from the figures of one run; every number below comes from that run. \
Re-run the same command to reproduce them. Raw figures are in `bench/results.json`.\n",
        settings.command
    );

    let _ = writeln!(out, "## Machine and method\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| CPU | {} × {} |", machine.cpus, machine.cpu_model);
    let _ = writeln!(out, "| memory | {:.1} GiB |", machine.memory_gib);
    let _ = writeln!(out, "| kernel | {} |", machine.kernel);
    let _ = writeln!(
        out,
        "| load average (1, 5, 15 min) at start | {} |",
        machine.load_average_start
    );
    let _ = writeln!(out, "| load average at end | {} |", machine.load_average_end);
    let _ = writeln!(out, "| Envoy | {} |", machine.envoy_version);
    let _ = writeln!(out, "| Rust | {} |", machine.rustc_version);
    let _ = writeln!(out, "| usage-authz revision | {} |", settings.revision);
    let _ = writeln!(
        out,
        "| wall time | {:.0} s: {:.0} s release build, {:.0} s suite |",
        settings.build_seconds + results.suite_seconds,
        settings.build_seconds,
        results.suite_seconds
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- **Cores.** Every server runs with `taskset -c {}`: the usage-authz instances (release build, \
`RUST_LOG=warn`), the no-op authorizer and Envoy (`--concurrency 1`). The load generator and the \
stand-in usage-check API share one process with `taskset -c {}`. Through Envoy, Envoy and the \
authorizer therefore share one core, so every microsecond of authorization CPU is taken from Envoy.",
        settings.server_cpus, settings.client_cpus
    );
    let _ = writeln!(
        out,
        "- **Points.** Each point is {:.1} s of warm-up then {:.1} s measured. The systems of one table \
run one after another, and the whole sequence repeats {} times. A row merges its rounds, and \
\"req/s by round\" shows the spread between them.",
        settings.warmup_seconds, settings.measure_seconds, settings.rounds
    );
    let _ = writeln!(
        out,
        "- **Latency** is measured by the load generator from sending a request to reading its whole \
answer, in a closed loop (each in-flight slot sends its next request when the answer arrives), and \
recorded in an HdrHistogram with 3 significant digits. Closed-loop latency at saturation includes \
queueing and understates what an open-loop client would see."
    );
    let _ = writeln!(
        out,
        "- **Ratios** are usage-authz over the no-op authorizer: above 1.00 is slower for latency, \
below 1.00 is slower for throughput. The no-op authorizer is a tonic `Authorization` server, on \
tokio's default runtime with TCP_NODELAY like usage-authz, that answers OK with one header and does \
nothing else: the floor for any tonic-based authorizer."
    );
    let _ = writeln!(
        out,
        "- **CPU** is user plus system time from /proc/PID/stat over the measured seconds, in percent of \
one core. `bench` is the load generator process, and `other` is the busy time of every other process on \
the host (the idle servers of other tables, or a build running beside the suite, which makes the row \
unreliable). `steal` is time the hypervisor gave to other virtual machines while this one wanted to run. \
\"limited by\" names a core at {SATURATED_PERCENT:.0}% or more. With neither, the closed \
loop's round trips set the rate.",
    );
    let _ = writeln!(
        out,
        "- **Checks** carry the key in the query (`GET /infer?api_key=…`) with the attributes and headers \
Envoy sends for a plain GET. They are encoded once before the run, so that the load generator does not \
spend its core on protobuf encoding, except where a table says they are encoded per call. The stand-in \
usage-check API is a hyper HTTP/1.1 server in the load generator process that allows every key and \
responds at once (scenario 3 also runs it with a 20 ms delay).\n"
    );

    let disturbed = disturbed_rows(results);
    if !disturbed.is_empty() {
        let _ = writeln!(
            out,
            "**Other processes or virtual machines took more than {DISTURBED_PERCENT:.0}% of a core \
during these rows, so their figures understate what the systems can do:** {}.\n",
            disturbed.join(", ")
        );
    }

    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(
        out,
        "Where a target is missed, `bench/PROFILE.md` has the profile and the proposed change; \
`bench/profile.sh` reproduces its counts.\n"
    );
    let _ = writeln!(out, "| target | measured | result |\n|---|---|---|");
    for row in target_rows(results) {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            row.target,
            row.measured,
            verdict(row.met)
        );
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## 1. Check RPC, direct\n");
    let _ = writeln!(
        out,
        "{} concurrent unary `Check` calls over {} HTTP/2 connections. The hot key and 100,000 keys were \
cached before the run; the random-key rows pick one of the 100,000 per call. The skipped route is \
`GET /healthz` without a key. Each cache-miss call carries a key never sent before, so usage-authz \
calls the stand-in API once per check ({} calls during this table, warm-up included).\n",
        DIRECT_CONCURRENCY, DIRECT_CONNECTIONS, results.direct_usage_check_calls
    );
    let _ = writeln!(out, "{SUMMARY_HEADER}");
    summary_row(&mut out, &results.direct_floor, None);
    for subject in &results.direct {
        summary_row(&mut out, subject, Some(&results.direct_floor));
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Cache fills, at {FILL_CONCURRENCY} checks in flight over {FILL_CONNECTIONS} connections:\n"
    );
    let _ = writeln!(
        out,
        "| instance | new keys | seconds | checks/s | usage-check calls |\n|---|---:|---:|---:|---:|"
    );
    for fill in results.fills.iter().chain([&results.memory.fill]) {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {} |",
            fill.instance, fill.keys, fill.seconds, fill.checks_per_second, fill.usage_check_calls
        );
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## 2. Through Envoy\n");
    let _ = writeln!(
        out,
        "HTTP/1.1 `GET /infer?api_key=…` with a cached key through one Envoy process (`--concurrency 1`) \
with three listeners that differ only in the ext_authz filter: none, the no-op authorizer, usage-authz. \
The route answers with `direct_response`, so there is no upstream. Config: `bench/envoy.yaml`. \
\"added\" is the latency over Envoy without ext_authz at the same load.\n"
    );
    for level in &results.envoy {
        let _ = writeln!(out, "### {}\n", level.label);
        let _ = writeln!(
            out,
            "| system | req/s | req/s by round | p50 µs | p99 µs | p99 by round | p99.9 µs | added p50 µs | added p99 µs | req/s vs no-op | errors | CPU (% of one core) | limited by |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
        );
        for summary in [&level.no_authz, &level.noop, &level.usage_authz] {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
                summary.system,
                summary.throughput,
                rounds_cell(summary),
                summary.p50_us,
                summary.p99_us,
                summary
                    .round_p99_us
                    .iter()
                    .map(|p99| format!("{p99:.0}"))
                    .collect::<Vec<_>>()
                    .join(" / "),
                summary.p999_us,
                summary.p50_us - level.no_authz.p50_us,
                summary.p99_us - level.no_authz.p99_us,
                ratio(summary.throughput, level.noop.throughput),
                summary.errors,
                cpu_cell(summary),
                limit(summary)
            );
        }
        let _ = writeln!(out);
    }

    let _ = writeln!(out, "## 3. Upstream amplification\n");
    let _ = writeln!(
        out,
        "A fresh set of 100 keys, each requested 10 times, shuffled: 1,000 `Check` calls released together \
from a barrier over {} HTTP/2 connections. The calls counted are the requests the stand-in usage-check \
API received. With a 20 ms API delay every caller of a key arrives while its call is still open, so \
the count shows whether concurrent callers share one call.\n",
        results.amplification.first().map_or(0, |run| run.connections)
    );
    let _ = writeln!(
        out,
        "| API delay | checks | new keys | usage-check calls | p50 µs | p99 µs | max µs | errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in &results.amplification {
        let _ = writeln!(
            out,
            "| {} ms | {} | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            run.api_delay_ms,
            run.requests,
            run.keys,
            run.usage_check_calls,
            run.summary.p50_us,
            run.summary.p99_us,
            run.summary.max_us,
            run.summary.errors
        );
    }
    let _ = writeln!(out);

    let memory = &results.memory;
    let _ = writeln!(out, "## 4. Memory\n");
    let _ = writeln!(
        out,
        "VmRSS of a usage-authz process (default `cache.max_entries` of 1,000,000) from /proc/PID/status, \
after 1 s of skipped-route checks and again 2 s after {} distinct keys were cached.\n",
        memory.keys
    );
    let _ = writeln!(out, "| | |\n|---|---:|");
    let _ = writeln!(out, "| RSS before the fill | {:.1} MiB |", mib(memory.rss_before));
    let _ = writeln!(
        out,
        "| RSS after {} keys | {:.1} MiB |",
        memory.keys,
        mib(memory.rss_after)
    );
    let _ = writeln!(
        out,
        "| **bytes per cached key** | **{:.0}** |",
        memory.bytes_per_key
    );
    let _ = writeln!(
        out,
        "| re-read of {} random cached keys | {} allowed, {} usage-check calls |",
        memory.recheck_keys, memory.recheck_allowed, memory.recheck_usage_check_calls
    );
    let _ = writeln!(
        out,
        "| main instance, {} keys | {:.1} → {:.1} MiB, {:.0} bytes per key |",
        memory.main_keys,
        mib(memory.main_rss_empty),
        mib(memory.main_rss_filled),
        (memory.main_rss_filled as f64 - memory.main_rss_empty as f64) / memory.main_keys as f64
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Heap requested per entry by usage-authz's `VerdictCache` in the load generator's process (counted by \
its global allocator, malloc overhead excluded), for comparison with the RSS figure:\n"
    );
    let _ = writeln!(
        out,
        "| entries | heap bytes per entry | allocations per entry |\n|---:|---:|---:|"
    );
    for cost in &results.lookups {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} |",
            cost.entries, cost.heap_bytes_per_entry, cost.heap_allocations_per_entry
        );
    }
    let _ = writeln!(out);

    let _ = writeln!(out, "## 5. Cost growth\n");
    let _ = writeln!(out, "### Concurrency\n");
    let _ = writeln!(
        out,
        "One hot cached key against the no-op authorizer, at each number of calls in flight.\n"
    );
    let _ = writeln!(
        out,
        "| in flight | no-op req/s | usage-authz req/s | req/s ratio | no-op p99 µs | usage-authz p99 µs | p99 ratio | usage-authz CPU | limited by |\n|---|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for comparison in &results.growth {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {} | {:.1} | {:.1} | {} | {} | {} |",
            comparison.label,
            comparison.floor.throughput,
            comparison.subject.throughput,
            ratio(comparison.subject.throughput, comparison.floor.throughput),
            comparison.floor.p99_us,
            comparison.subject.p99_us,
            ratio(comparison.subject.p99_us, comparison.floor.p99_us),
            cpu_cell(&comparison.subject),
            limit(&comparison.subject)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "### Entry count\n");
    let _ = writeln!(
        out,
        "Random cached keys on three usage-authz instances holding 1,000, 100,000 and 1,000,000 entries, \
{} calls in flight over {} connections, each check encoded per call. Usage-check calls during this table: {} \
(0 means every lookup was a hit).\n",
        DIRECT_CONCURRENCY, DIRECT_CONNECTIONS, results.sizes_usage_check_calls
    );
    let _ = writeln!(out, "{SUMMARY_HEADER}");
    if let Some(first) = results.sizes.first() {
        summary_row(&mut out, first, None);
        for summary in &results.sizes[1..] {
            summary_row(&mut out, summary, Some(first));
        }
    }
    let _ = writeln!(
        out,
        "\nRatios in this table are against the 1,000-entry instance.\n"
    );
    let _ = writeln!(
        out,
        "The lookup alone, in process: `VerdictCache::get_or_check` on random cached digests, on one thread, \
timed in runs of 64 lookups.\n"
    );
    let _ = writeln!(
        out,
        "| entries | lookups | mean ns | p50 ns | p99 ns |\n|---:|---:|---:|---:|---:|"
    );
    for cost in &results.lookups {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.0} |",
            cost.entries, cost.lookups, cost.mean_ns, cost.p50_ns, cost.p99_ns
        );
    }
    out
}

//! Host facts for the report: CPU, memory, kernel, load, and the versions of
//! the tools in the run.

use std::path::Path;
use std::process::Command;

use crate::report::Machine;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Returns the three load averages from /proc/loadavg, e.g. "0.52 0.61 0.40".
pub fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_line_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|output| {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Describes the host. The caller fills `load_average_end` after the run.
pub fn describe(envoy: &Path) -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpus = cpuinfo
        .lines()
        .filter(|line| line.starts_with("processor"))
        .count();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    let memory_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let envoy_version = first_line_of(envoy, &["--version"]);
    // `envoy --version` prints "<path> version: <sha>/<version>/...", and
    // the path adds nothing to the report.
    let envoy_version = envoy_version
        .split_once("version: ")
        .map_or(envoy_version.clone(), |(_, version)| version.to_string());
    Machine {
        cpus,
        cpu_model,
        memory_gib: memory_kib / 1_048_576.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        load_average_start: load_average(),
        load_average_end: String::new(),
        envoy_version,
        rustc_version: first_line_of(Path::new("rustc"), &["--version"]),
    }
}

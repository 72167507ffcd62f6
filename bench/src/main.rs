//! usage-authz-bench: the load generator and benchmark suite for usage-authz.
//!
//! `suite` starts every system on loopback, runs the scenarios and writes
//! BENCHMARKS.md, and bench/run.sh builds everything and calls it. The other
//! subcommands are the pieces it runs, also usable alone for profiling.

mod cache_cost;
mod grpc_load;
mod heap;
mod http_load;
mod machine;
mod noop;
mod procs;
mod report;
mod stats;
mod stub;
mod suite;
mod systems;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::grpc_load::{GrpcTarget, Requests, Until};
use crate::report::Settings;
use crate::stats::Summary;
use crate::suite::{HOT_KEY, Timing};
use crate::systems::{Binaries, Systems};
use crate::wire::{encoded_check, keyed_target};

#[global_allocator]
static ALLOCATOR: heap::CountingAllocator = heap::CountingAllocator;

#[derive(Parser)]
#[command(
    name = "usage-authz-bench",
    about = "Load generator and benchmark suite for usage-authz"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every scenario on loopback and write BENCHMARKS.md.
    Suite(SuiteArgs),
    /// Serve the no-op authorizer until killed.
    NoopServer {
        /// Address to listen on, e.g. 127.0.0.1:19102.
        #[arg(long)]
        addr: SocketAddr,
    },
    /// Send a fixed number of Check calls to one server and print the
    /// figures, for driving a server under a profiler.
    Load(LoadArgs),
    /// Send `GET {target}` over HTTP/1.1 keep-alive connections for a fixed
    /// time and print the figures, for loading Envoy under a profiler.
    HttpLoad {
        /// Listener to load, e.g. 127.0.0.1:19110.
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/infer?api_key=bench-hot-key")]
        target: String,
        #[arg(long, default_value_t = 2)]
        connections: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Fill an in-process VerdictCache and print its heap cost per entry,
    /// for running under a heap profiler.
    CacheFill {
        /// Number of entries to insert.
        #[arg(long, default_value_t = 100_000)]
        entries: u64,
    },
}

#[derive(clap::Args)]
struct SuiteArgs {
    /// usage-authz release binary under test.
    #[arg(long)]
    usage_authz: PathBuf,
    /// Envoy binary.
    #[arg(long)]
    envoy: PathBuf,
    /// Envoy configuration with the three bench listeners.
    #[arg(long, default_value = "bench/envoy.yaml")]
    envoy_config: PathBuf,
    /// Markdown report to write.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// JSON file for the raw figures.
    #[arg(long, default_value = "bench/results.json")]
    json: PathBuf,
    /// Directory for the servers' logs.
    #[arg(long, default_value = "target/bench-logs")]
    logs: PathBuf,
    /// CPU list (taskset -c syntax) for every server.
    #[arg(long, default_value = "0")]
    server_cpus: String,
    /// CPU list for this process: load generator and usage-check stand-in.
    #[arg(long, default_value = "1")]
    client_cpus: String,
    /// Warm-up before each measured point, in seconds.
    #[arg(long, default_value_t = 0.5)]
    warmup_secs: f64,
    /// Measured time of each point, in seconds.
    #[arg(long, default_value_t = 4.0)]
    measure_secs: f64,
    /// Rounds of each alternating comparison.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// The command that ran the suite, for the report.
    #[arg(long, default_value = "bench/run.sh")]
    command: String,
    /// Source revision of the build under test, for the report.
    #[arg(long, default_value = "unknown")]
    revision: String,
    /// Seconds the release build took, for the report's wall time.
    #[arg(long, default_value_t = 0.0)]
    build_seconds: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum LoadKind {
    /// One key, cached after the first call.
    Hot,
    /// `GET /healthz` without a key.
    Skip,
    /// A random one of `--keys` cached keys per call, from a pool of
    /// pre-encoded checks.
    RandomPool,
    /// A random one of `--keys` cached keys per call, encoded per call.
    RandomEncoded,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// gRPC server to load.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum, default_value = "hot")]
    kind: LoadKind,
    /// Number of calls to send.
    #[arg(long, default_value_t = 20_000)]
    calls: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Number of distinct keys for the random kinds.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Before the counted calls, send each of the `--keys` keys once, so
    /// that the random kinds hit the cache.
    #[arg(long)]
    fill: bool,
    /// Also serve the usage-check stand-in on this address, for a
    /// usage-authz whose usage_check.url points there.
    #[arg(long)]
    stub_addr: Option<SocketAddr>,
}

/// Parses a `taskset -c` style list such as "1", "0,2" or "2-3".
fn parse_cpu_list(list: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for item in list.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        match item.split_once('-') {
            Some((first, last)) => cpus.extend(first.parse::<usize>()?..=last.parse::<usize>()?),
            None => cpus.push(item.parse()?),
        }
    }
    if cpus.is_empty() {
        bail!("CPU list {list:?} names no CPU; expected e.g. \"1\" or \"2-3\"");
    }
    Ok(cpus)
}

/// Pins the calling thread, and so every thread it starts later, to `list`.
fn pin_to(list: &str) -> anyhow::Result<()> {
    let cpus = parse_cpu_list(list)?;
    // SAFETY: cpu_set_t is plain data; CPU_ZERO and CPU_SET only write
    // inside it, and sched_setaffinity reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "cannot pin the load generator to CPUs {list}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

fn run_suite(args: SuiteArgs) -> anyhow::Result<()> {
    pin_to(&args.client_cpus)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let clock = Instant::now();
        let mut machine = machine::describe(&args.envoy);
        std::fs::create_dir_all(&args.logs)
            .with_context(|| format!("cannot create {}", args.logs.display()))?;
        let binaries = Binaries {
            usage_authz: args.usage_authz.clone(),
            envoy: args.envoy.clone(),
            envoy_config: args.envoy_config.clone(),
            bench: std::env::current_exe()?,
        };
        let timing = Timing {
            warmup: Duration::from_secs_f64(args.warmup_secs),
            measure: Duration::from_secs_f64(args.measure_secs),
            rounds: args.rounds,
        };
        let settings = Settings {
            command: args.command.clone(),
            revision: args.revision.clone(),
            server_cpus: args.server_cpus.clone(),
            client_cpus: args.client_cpus.clone(),
            warmup_seconds: args.warmup_secs,
            measure_seconds: args.measure_secs,
            rounds: args.rounds,
            build_seconds: args.build_seconds,
        };

        eprintln!(
            "starting the systems under test (logs in {})",
            args.logs.display()
        );
        let mut systems =
            Systems::start(&binaries, &args.server_cpus, &args.logs, &keyed_target(HOT_KEY)).await?;
        let mut results = suite::run(&mut systems, timing, settings, clock).await?;
        drop(systems);

        machine.load_average_end = machine::load_average();
        results.machine = machine;
        results.suite_seconds = clock.elapsed().as_secs_f64();
        std::fs::write(&args.json, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("cannot write {}", args.json.display()))?;
        std::fs::write(&args.out, report::markdown(&results))
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        eprintln!(
            "wrote {} and {} after {:.0} s",
            args.out.display(),
            args.json.display(),
            results.suite_seconds
        );
        Ok(())
    })
}

fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _stub = args.stub_addr.map(stub::UsageCheckStub::start).transpose()?;
        let target = GrpcTarget::connect(args.addr, args.connections).await?;
        let prefix = "bench-load-";
        if args.fill {
            let fill = Requests::numbered(prefix, 0, Some(args.keys));
            let run = grpc_load::run(&target, &fill, args.concurrency, Until::Exhausted, false).await;
            if let Some(error) = run.first_error {
                bail!("caching {} keys failed: {error}", args.keys);
            }
        }
        let requests = match args.kind {
            LoadKind::Hot => Requests::Same(encoded_check(&keyed_target(HOT_KEY))),
            LoadKind::Skip => Requests::Same(encoded_check("/healthz")),
            LoadKind::RandomPool => Requests::RandomPick(std::sync::Arc::new(
                (0..args.keys)
                    .map(|n| encoded_check(&keyed_target(&format!("{prefix}{n}"))))
                    .collect(),
            )),
            LoadKind::RandomEncoded => Requests::random_numbered(prefix, args.keys),
        };
        let requests = Requests::Limited {
            inner: Box::new(requests),
            remaining: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(args.calls)),
        };
        let run = grpc_load::run(&target, &requests, args.concurrency, Until::Exhausted, false).await;
        println!("{}", Summary::of("load", &run, vec![]).line());
        if let Some(error) = run.first_error {
            bail!(
                "{} of {} calls failed; first error: {error}",
                run.errors,
                args.calls
            );
        }
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Suite(args) => run_suite(args),
        Command::NoopServer { addr } => noop::serve(addr),
        Command::Load(args) => run_load(args),
        Command::HttpLoad {
            addr,
            target,
            connections,
            seconds,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let run = runtime.block_on(http_load::run(
                addr,
                &target,
                connections,
                Duration::from_secs_f64(seconds),
            ));
            println!("{}", Summary::of("http load", &run, vec![]).line());
            match run.first_error {
                Some(error) => bail!("{} requests failed; first error: {error}", run.errors),
                None => Ok(()),
            }
        }
        Command::CacheFill { entries } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let cost = runtime.block_on(cache_cost::fill_once(entries));
            println!(
                "{} entries: {:.0} heap bytes and {:.1} allocations per entry",
                cost.entries, cost.heap_bytes_per_entry, cost.heap_allocations_per_entry
            );
            Ok(())
        }
    }
}

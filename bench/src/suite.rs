//! The scenarios. Each compares systems in the same run, alternating them
//! point by point for several rounds, so slow drift on the host (another
//! build, thermal limits) lands on every system alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};

use crate::cache_cost;
use crate::grpc_load::{self, GrpcTarget, Requests, Until};
use crate::http_load;
use crate::procs::{CpuUse, CpuWatch};
use crate::report::{Amplification, Comparison, EnvoyLevel, Fill, Memory, Results, Settings};
use crate::stats::{CpuShare, RunResult, Summary};
use crate::systems::{Systems, loopback, ports};
use crate::wire::{encoded_check, keyed_target};

/// The key every "hot" check carries. Synthetic, like every key here.
pub const HOT_KEY: &str = "bench-hot-key";

const MAIN_KEYS: u64 = 100_000;
const SMALL_KEYS: u64 = 1_000;
const MEMORY_KEYS: u64 = 1_000_000;
const MAIN_PREFIX: &str = "bench-main-";
const SMALL_PREFIX: &str = "bench-small-";
const MEMORY_PREFIX: &str = "bench-mem-";
const MISS_PREFIX: &str = "bench-miss-";

/// Load of the direct Check scenarios: calls in flight, and the HTTP/2
/// connections they share.
pub const DIRECT_CONCURRENCY: usize = 64;
pub const DIRECT_CONNECTIONS: usize = 4;
/// Load of the fills, which only need to be fast.
pub const FILL_CONCURRENCY: usize = 256;
pub const FILL_CONNECTIONS: usize = 8;
const GROWTH_CONCURRENCY: [usize; 4] = [1, 10, 100, 1000];
/// (label, connections) of the Envoy scenario. 32 connections saturate
/// Envoy on one worker.
const ENVOY_LEVELS: [(&str, usize); 2] = [("low, 2 connections", 2), ("saturation, 32 connections", 32)];
const AMPLIFICATION_REQUESTS: usize = 1_000;
const AMPLIFICATION_KEYS: usize = 100;
/// Delays of the stand-in API in the amplification scenario: at once, and
/// slow enough that every caller of a key arrives while its call is open.
const AMPLIFICATION_DELAYS_MS: [u64; 2] = [0, 20];
/// Cached keys re-read after the memory fill to confirm they stayed cached.
const MEMORY_RECHECK_KEYS: usize = 10_000;

/// One system in an alternating comparison.
pub struct Contender<'a> {
    pub name: String,
    pub load: Load<'a>,
    /// Processes whose CPU time is reported, by label. `None` is this
    /// process (load generator and usage-check stand-in).
    pub watch: Vec<(String, Option<u32>)>,
}

pub enum Load<'a> {
    Grpc {
        target: &'a GrpcTarget,
        requests: Requests,
        concurrency: usize,
    },
    Http {
        listener: std::net::SocketAddr,
        target: String,
        connections: usize,
    },
}

impl Load<'_> {
    async fn run(&self, duration: Duration) -> RunResult {
        match self {
            Load::Grpc {
                target,
                requests,
                concurrency,
            } => grpc_load::run(target, requests, *concurrency, Until::Elapsed(duration), false).await,
            Load::Http {
                listener,
                target,
                connections,
            } => http_load::run(*listener, target, *connections, duration).await,
        }
    }
}

/// Timing of every measured point.
#[derive(Clone, Copy)]
pub struct Timing {
    pub warmup: Duration,
    pub measure: Duration,
    pub rounds: u32,
}

struct Tally {
    run: RunResult,
    cpu: Vec<CpuUse>,
    rounds: Vec<Summary>,
}

fn cpu_shares(uses: &[CpuUse]) -> Vec<CpuShare> {
    let mut shares: Vec<CpuShare> = Vec::new();
    let mut walls: Vec<f64> = Vec::new();
    for usage in uses {
        match shares.iter().position(|share| share.process == usage.process) {
            Some(index) => {
                shares[index].core_percent += usage.cpu_seconds;
                walls[index] += usage.wall_seconds;
            }
            None => {
                shares.push(CpuShare {
                    process: usage.process.clone(),
                    core_percent: usage.cpu_seconds,
                });
                walls.push(usage.wall_seconds);
            }
        }
    }
    for (share, wall) in shares.iter_mut().zip(walls) {
        share.core_percent = 100.0 * share.core_percent / wall.max(f64::EPSILON);
    }
    shares
}

fn elapsed_label(started: Instant) -> String {
    format!("[{:>5.1}s]", started.elapsed().as_secs_f64())
}

/// Runs every contender for `timing.rounds` rounds, one point each per
/// round in the given order, and returns their summaries in that order.
pub async fn alternate(contenders: &[Contender<'_>], timing: Timing, clock: Instant) -> Vec<Summary> {
    let mut tallies: Vec<Tally> = contenders
        .iter()
        .map(|_| Tally {
            run: RunResult::empty(),
            cpu: Vec::new(),
            rounds: Vec::new(),
        })
        .collect();
    for _ in 0..timing.rounds {
        for (contender, tally) in contenders.iter().zip(&mut tallies) {
            if !timing.warmup.is_zero() {
                contender.load.run(timing.warmup).await;
            }
            let watch = CpuWatch::start(&contender.watch);
            let run = contender.load.run(timing.measure).await;
            tally.cpu.extend(watch.finish());
            // The watch reports each watched process, then the rest of the
            // host and the stolen time.
            let this_round = &tally.cpu[tally.cpu.len() - contender.watch.len() - 2..];
            let point = Summary::of(&contender.name, &run, cpu_shares(this_round));
            eprintln!("{} {}", elapsed_label(clock), point.line());
            if let Some(error) = &run.first_error {
                eprintln!("         first error: {error}");
            }
            tally.run.absorb(run);
            tally.rounds.push(point);
        }
    }
    contenders
        .iter()
        .zip(tallies)
        .map(|(contender, tally)| {
            Summary::of(&contender.name, &tally.run, cpu_shares(&tally.cpu)).with_rounds(&tally.rounds)
        })
        .collect()
}

fn watch(label: &str, pid: u32) -> Vec<(String, Option<u32>)> {
    vec![(label.to_string(), Some(pid)), ("bench".to_string(), None)]
}

async fn fill(
    target: &GrpcTarget,
    instance: &str,
    prefix: &str,
    keys: u64,
    systems: &Systems,
) -> anyhow::Result<Fill> {
    let calls_before = systems.stub.calls();
    let run = grpc_load::run(
        target,
        &Requests::numbered(prefix, 0, Some(keys)),
        FILL_CONCURRENCY,
        Until::Exhausted,
        false,
    )
    .await;
    ensure!(
        run.errors == 0 && run.ok == keys,
        "filling {instance}: {} of {keys} checks allowed, {} errors (first: {:?})",
        run.ok,
        run.errors,
        run.first_error
    );
    Ok(Fill {
        instance: instance.to_string(),
        keys,
        seconds: run.elapsed.as_secs_f64(),
        checks_per_second: run.throughput(),
        usage_check_calls: systems.stub.calls() - calls_before,
    })
}

/// Runs the whole suite and returns every figure.
pub async fn run(
    systems: &mut Systems,
    timing: Timing,
    settings: Settings,
    clock: Instant,
) -> anyhow::Result<Results> {
    let noop_target = GrpcTarget::connect(loopback(ports::NOOP), DIRECT_CONNECTIONS).await?;
    let main_target = GrpcTarget::connect(loopback(ports::AUTHZ_MAIN), DIRECT_CONNECTIONS).await?;
    let miss_target = GrpcTarget::connect(loopback(ports::AUTHZ_MISS), DIRECT_CONNECTIONS).await?;
    let small_target = GrpcTarget::connect(loopback(ports::AUTHZ_SMALL), DIRECT_CONNECTIONS).await?;
    let main_fill_target = GrpcTarget::connect(loopback(ports::AUTHZ_MAIN), FILL_CONNECTIONS).await?;
    let small_fill_target = GrpcTarget::connect(loopback(ports::AUTHZ_SMALL), FILL_CONNECTIONS).await?;
    let memory_target = GrpcTarget::connect(loopback(ports::AUTHZ_MEMORY), FILL_CONNECTIONS).await?;
    let noop_pid = systems.noop.pid();
    let main_pid = systems.authz_main.pid();

    let hot = encoded_check(&keyed_target(HOT_KEY));
    let skipped = encoded_check("/healthz");

    // Fills: the hot key and 100,000 keys on the main instance, 1,000 on the
    // small one.
    eprintln!("{} filling caches", elapsed_label(clock));
    let main_rss_empty = systems.authz_main.rss_bytes()?;
    grpc_load::run(
        &main_target,
        &Requests::Same(hot.clone()),
        1,
        Until::Elapsed(Duration::from_millis(200)),
        false,
    )
    .await;
    let mut fills = vec![
        fill(
            &main_fill_target,
            "usage-authz-main",
            MAIN_PREFIX,
            MAIN_KEYS,
            systems,
        )
        .await?,
    ];
    let main_rss_filled = systems.authz_main.rss_bytes()?;
    fills.push(
        fill(
            &small_fill_target,
            "usage-authz-small",
            SMALL_PREFIX,
            SMALL_KEYS,
            systems,
        )
        .await?,
    );
    for filled in &fills {
        eprintln!(
            "{} filled {} with {} keys: {:.0} checks/s, {} usage-check calls",
            elapsed_label(clock),
            filled.instance,
            filled.keys,
            filled.checks_per_second,
            filled.usage_check_calls
        );
    }

    // 1. Check RPC, direct.
    eprintln!("{} scenario 1: Check RPC, direct", elapsed_label(clock));
    let main_pool: Vec<Bytes> = (0..MAIN_KEYS)
        .map(|n| encoded_check(&keyed_target(&format!("{MAIN_PREFIX}{n}"))))
        .collect();
    let main_pool = Arc::new(main_pool);
    let grpc = |target, requests| Load::Grpc {
        target,
        requests,
        concurrency: DIRECT_CONCURRENCY,
    };
    let direct_contenders = vec![
        Contender {
            name: "no-op authorizer".to_string(),
            load: grpc(&noop_target, Requests::Same(hot.clone())),
            watch: watch("no-op", noop_pid),
        },
        Contender {
            name: "usage-authz, one hot key".to_string(),
            load: grpc(&main_target, Requests::Same(hot.clone())),
            watch: watch("usage-authz", main_pid),
        },
        Contender {
            name: "usage-authz, 100,000 random keys".to_string(),
            load: grpc(&main_target, Requests::RandomPick(main_pool.clone())),
            watch: watch("usage-authz", main_pid),
        },
        Contender {
            name: "usage-authz, skipped route".to_string(),
            load: grpc(&main_target, Requests::Same(skipped.clone())),
            watch: watch("usage-authz", main_pid),
        },
        Contender {
            name: "usage-authz, cache miss".to_string(),
            load: grpc(&miss_target, Requests::numbered(MISS_PREFIX, 0, None)),
            watch: watch("usage-authz", systems.authz_miss.pid()),
        },
    ];
    let calls_before_direct = systems.stub.calls();
    let direct = alternate(&direct_contenders, timing, clock).await;
    let direct_calls = systems.stub.calls() - calls_before_direct;
    systems.ensure_running()?;

    // 5a. Cost growth with concurrency, hot key against the no-op floor.
    eprintln!("{} scenario 5a: concurrency", elapsed_label(clock));
    let noop_single = GrpcTarget::connect(loopback(ports::NOOP), 1).await?;
    let main_single = GrpcTarget::connect(loopback(ports::AUTHZ_MAIN), 1).await?;
    let mut growth = Vec::new();
    for concurrency in GROWTH_CONCURRENCY {
        let (noop, main) = if concurrency == 1 {
            (&noop_single, &main_single)
        } else {
            (&noop_target, &main_target)
        };
        let contenders = vec![
            Contender {
                name: format!("no-op authorizer, {concurrency} in flight"),
                load: Load::Grpc {
                    target: noop,
                    requests: Requests::Same(hot.clone()),
                    concurrency,
                },
                watch: watch("no-op", noop_pid),
            },
            Contender {
                name: format!("usage-authz hot key, {concurrency} in flight"),
                load: Load::Grpc {
                    target: main,
                    requests: Requests::Same(hot.clone()),
                    concurrency,
                },
                watch: watch("usage-authz", main_pid),
            },
        ];
        let summaries = alternate(&contenders, timing, clock).await;
        growth.push(Comparison {
            label: format!(
                "{concurrency} in flight over {} connection(s)",
                noop.connections()
            ),
            floor: summaries[0].clone(),
            subject: summaries[1].clone(),
        });
    }
    systems.ensure_running()?;

    // 2. Through Envoy.
    eprintln!("{} scenario 2: through Envoy", elapsed_label(clock));
    let envoy_pid = systems.envoy.pid();
    let hot_target = keyed_target(HOT_KEY);
    let mut envoy = Vec::new();
    for (label, connections) in ENVOY_LEVELS {
        let http = |port| Load::Http {
            listener: loopback(port),
            target: hot_target.clone(),
            connections,
        };
        let contenders = vec![
            Contender {
                name: format!("Envoy, no ext_authz, {connections} conn"),
                load: http(ports::ENVOY_NO_AUTHZ),
                watch: vec![
                    ("envoy".to_string(), Some(envoy_pid)),
                    ("bench".to_string(), None),
                ],
            },
            Contender {
                name: format!("Envoy + no-op, {connections} conn"),
                load: http(ports::ENVOY_NOOP),
                watch: vec![
                    ("envoy".to_string(), Some(envoy_pid)),
                    ("no-op".to_string(), Some(noop_pid)),
                    ("bench".to_string(), None),
                ],
            },
            Contender {
                name: format!("Envoy + usage-authz, {connections} conn"),
                load: http(ports::ENVOY_USAGE_AUTHZ),
                watch: vec![
                    ("envoy".to_string(), Some(envoy_pid)),
                    ("usage-authz".to_string(), Some(main_pid)),
                    ("bench".to_string(), None),
                ],
            },
        ];
        let summaries = alternate(&contenders, timing, clock).await;
        envoy.push(EnvoyLevel {
            label: label.to_string(),
            connections,
            no_authz: summaries[0].clone(),
            noop: summaries[1].clone(),
            usage_authz: summaries[2].clone(),
        });
    }
    systems.ensure_running()?;

    // 3. Upstream amplification.
    eprintln!("{} scenario 3: upstream amplification", elapsed_label(clock));
    let amplification_target = GrpcTarget::connect(loopback(ports::AUTHZ_MISS), FILL_CONNECTIONS).await?;
    let mut amplification = Vec::new();
    for delay_ms in AMPLIFICATION_DELAYS_MS {
        let mut checks: Vec<Bytes> = (0..AMPLIFICATION_REQUESTS)
            .map(|n| {
                let key = format!("bench-amp-{delay_ms}ms-{}", n % AMPLIFICATION_KEYS);
                encoded_check(&keyed_target(&key))
            })
            .collect();
        checks.shuffle(&mut SmallRng::seed_from_u64(delay_ms));
        systems.stub.set_delay(Duration::from_millis(delay_ms));
        let calls_before = systems.stub.calls();
        let run = grpc_load::run(
            &amplification_target,
            &Requests::list(checks),
            AMPLIFICATION_REQUESTS,
            Until::Exhausted,
            true,
        )
        .await;
        let calls = systems.stub.calls() - calls_before;
        systems.stub.set_delay(Duration::ZERO);
        let summary = Summary::of(
            &format!("1,000 checks, 100 new keys, API delay {delay_ms} ms"),
            &run,
            vec![],
        );
        eprintln!(
            "{} {}  usage-check calls {calls}",
            elapsed_label(clock),
            summary.line()
        );
        amplification.push(Amplification {
            api_delay_ms: delay_ms,
            requests: AMPLIFICATION_REQUESTS,
            keys: AMPLIFICATION_KEYS,
            connections: amplification_target.connections(),
            usage_check_calls: calls,
            summary,
        });
    }
    systems.ensure_running()?;

    // 4. Memory: RSS of a fresh instance before and after a million keys.
    eprintln!("{} scenario 4: memory", elapsed_label(clock));
    // Skipped-route checks touch the gRPC path, buffers and runtime without
    // caching anything, so the baseline includes them.
    grpc_load::run(
        &memory_target,
        &Requests::Same(skipped.clone()),
        FILL_CONCURRENCY,
        Until::Elapsed(Duration::from_secs(1)),
        false,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = systems.authz_memory.rss_bytes()?;
    let memory_fill = fill(
        &memory_target,
        "usage-authz-memory",
        MEMORY_PREFIX,
        MEMORY_KEYS,
        systems,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = systems.authz_memory.rss_bytes()?;
    let recheck: Vec<Bytes> = {
        let mut rng = SmallRng::seed_from_u64(7);
        let numbers: Vec<u64> = (0..MEMORY_KEYS).collect();
        numbers
            .choose_multiple(&mut rng, MEMORY_RECHECK_KEYS)
            .map(|n| encoded_check(&keyed_target(&format!("{MEMORY_PREFIX}{n}"))))
            .collect()
    };
    let calls_before_recheck = systems.stub.calls();
    let recheck_run = grpc_load::run(
        &memory_target,
        &Requests::list(recheck),
        DIRECT_CONCURRENCY,
        Until::Exhausted,
        false,
    )
    .await;
    let recheck_calls = systems.stub.calls() - calls_before_recheck;
    let memory = Memory {
        keys: MEMORY_KEYS,
        rss_before,
        rss_after,
        bytes_per_key: (rss_after as f64 - rss_before as f64) / MEMORY_KEYS as f64,
        fill: memory_fill,
        recheck_keys: MEMORY_RECHECK_KEYS,
        recheck_allowed: recheck_run.ok,
        recheck_usage_check_calls: recheck_calls,
        main_keys: MAIN_KEYS + 1,
        main_rss_empty,
        main_rss_filled,
    };
    eprintln!(
        "{} RSS {:.1} MiB -> {:.1} MiB for {} keys: {:.0} bytes per key, and {} keys re-read with {} usage-check calls",
        elapsed_label(clock),
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        MEMORY_KEYS,
        memory.bytes_per_key,
        MEMORY_RECHECK_KEYS,
        recheck_calls
    );
    systems.ensure_running()?;

    // 5b. Cached lookups at 1,000, 100,000 and 1,000,000 entries.
    eprintln!("{} scenario 5b: entry count", elapsed_label(clock));
    let per_size = |name: &str, target, prefix: &str, count, pid| Contender {
        name: name.to_string(),
        load: Load::Grpc {
            target,
            requests: Requests::random_numbered(prefix, count),
            concurrency: DIRECT_CONCURRENCY,
        },
        watch: watch("usage-authz", pid),
    };
    let memory_direct = GrpcTarget::connect(loopback(ports::AUTHZ_MEMORY), DIRECT_CONNECTIONS).await?;
    let size_contenders = vec![
        per_size(
            "usage-authz, 1,000 entries",
            &small_target,
            SMALL_PREFIX,
            SMALL_KEYS,
            systems.authz_small.pid(),
        ),
        per_size(
            "usage-authz, 100,000 entries",
            &main_target,
            MAIN_PREFIX,
            MAIN_KEYS,
            main_pid,
        ),
        per_size(
            "usage-authz, 1,000,000 entries",
            &memory_direct,
            MEMORY_PREFIX,
            MEMORY_KEYS,
            systems.authz_memory.pid(),
        ),
    ];
    let calls_before_sizes = systems.stub.calls();
    let sizes = alternate(&size_contenders, timing, clock).await;
    let sizes_calls = systems.stub.calls() - calls_before_sizes;
    systems.ensure_running()?;

    eprintln!("{} scenario 5b: in-process cache lookups", elapsed_label(clock));
    let lookups = cache_cost::measure(
        &[SMALL_KEYS, MAIN_KEYS, MEMORY_KEYS],
        timing.rounds,
        timing.measure / 2,
    )
    .await;
    for cost in &lookups {
        eprintln!(
            "{} {:>9} entries: mean {:.0} ns, p50 {:.0} ns, p99 {:.0} ns per lookup; heap {:.0} bytes, {:.1} allocations per entry",
            elapsed_label(clock),
            cost.entries,
            cost.mean_ns,
            cost.p50_ns,
            cost.p99_ns,
            cost.heap_bytes_per_entry,
            cost.heap_allocations_per_entry
        );
    }

    Ok(Results {
        settings,
        fills,
        direct_floor: direct[0].clone(),
        direct: direct[1..].to_vec(),
        direct_usage_check_calls: direct_calls,
        growth,
        envoy,
        amplification,
        memory,
        sizes,
        sizes_usage_check_calls: sizes_calls,
        lookups,
        machine: Default::default(),
        suite_seconds: 0.0,
    })
}

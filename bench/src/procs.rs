//! The processes under test: start them pinned to a CPU with `taskset`, read
//! their CPU time and resident memory from /proc, and kill them on drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

/// A child process started by the suite. Dropping it kills it (SIGKILL) and
/// reaps it, so no server outlives a failed run.
pub struct ChildProcess {
    pub name: String,
    child: std::process::Child,
    log_path: PathBuf,
}

impl ChildProcess {
    /// Starts `program` pinned to `cpus` (a `taskset -c` list), with stdout
    /// and stderr appended to `{log_dir}/{name}.log`.
    pub fn spawn_pinned(
        name: &str,
        cpus: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut command = Command::new("taskset");
        command
            .arg("-c")
            .arg(cpus)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The caller's USAGE_AUTHZ_* settings would change what is measured.
        for (variable, _) in std::env::vars() {
            if variable.starts_with("USAGE_AUTHZ_") {
                command.env_remove(variable);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {name} ({}) under taskset", program.display()))?;
        Ok(ChildProcess {
            name: name.to_string(),
            child,
            log_path,
        })
    }

    /// Returns the process id. `taskset` execs the program, so this is the
    /// program's own id once it runs.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the end of the process log if the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited with {status}; last lines of {}:\n{}",
                self.name,
                self.log_path.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_bytes(self.pid())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of `pid` (VmRSS in /proc/PID/status), in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .context("VmRSS missing from /proc/PID/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS line has no value")?
        .parse()?;
    Ok(kib * 1024)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// User plus system CPU time of all threads of `pid`, in seconds. `None`
/// means the calling process itself.
pub fn cpu_seconds(pid: Option<u32>) -> anyhow::Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(&path)?;
    // The command name may contain spaces, so fields are counted after its
    // closing parenthesis. utime and stime are fields 14 and 15 of the line,
    // which makes them the 12th and 13th after the name.
    let after_name = stat.rsplit_once(')').context("malformed stat line")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime missing")?.parse()?;
    let stime: f64 = fields.get(12).context("stime missing")?.parse()?;
    Ok((utime + stime) / clock_ticks_per_second())
}

/// CPU time one process used during a run.
#[derive(Debug, Clone)]
pub struct CpuUse {
    pub process: String,
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
}

/// Label of the CPU time that no watched process used: other processes on
/// the host, such as a build running beside the benchmark.
pub const OTHER_PROCESSES: &str = "other";

/// Label of the CPU time the hypervisor gave to other guests while this VM
/// wanted to run ("steal" in /proc/stat).
pub const STOLEN: &str = "steal";

/// Busy and stolen CPU time of the whole host (all CPUs) from /proc/stat, in
/// seconds.
fn host_seconds() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse::<f64>())
        .collect::<Result<_, _>>()?;
    // Fields: user nice system idle iowait irq softirq steal guest guest_nice.
    // Guest time is already counted in user.
    let field = |index: usize| ticks.get(index).copied().unwrap_or(0.0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6);
    Ok((
        busy / clock_ticks_per_second(),
        field(7) / clock_ticks_per_second(),
    ))
}

/// Samples CPU time of a set of processes across one run, and the busy time
/// of the rest of the host.
pub struct CpuWatch {
    processes: Vec<(String, Option<u32>, f64)>,
    host: (f64, f64),
    started: Instant,
}

impl CpuWatch {
    /// `processes` pairs a label with a pid, where `None` is this process.
    pub fn start(processes: &[(String, Option<u32>)]) -> Self {
        CpuWatch {
            processes: processes
                .iter()
                .map(|(name, pid)| (name.clone(), *pid, cpu_seconds(*pid).unwrap_or(0.0)))
                .collect(),
            host: host_seconds().unwrap_or((0.0, 0.0)),
            started: Instant::now(),
        }
    }

    /// Returns the CPU time of each watched process, then that of all other
    /// processes under the label [`OTHER_PROCESSES`], then the stolen time
    /// under [`STOLEN`].
    pub fn finish(self) -> Vec<CpuUse> {
        let wall_seconds = self.started.elapsed().as_secs_f64();
        let (busy_now, stolen_now) = host_seconds().unwrap_or(self.host);
        let host_busy = busy_now - self.host.0;
        let mut uses: Vec<CpuUse> = self
            .processes
            .into_iter()
            .map(|(process, pid, before)| CpuUse {
                process,
                cpu_seconds: cpu_seconds(pid).unwrap_or(before) - before,
                wall_seconds,
            })
            .collect();
        let watched: f64 = uses.iter().map(|usage| usage.cpu_seconds).sum();
        uses.push(CpuUse {
            process: OTHER_PROCESSES.to_string(),
            cpu_seconds: (host_busy - watched).max(0.0),
            wall_seconds,
        });
        uses.push(CpuUse {
            process: STOLEN.to_string(),
            cpu_seconds: stolen_now - self.host.1,
            wall_seconds,
        });
        uses
    }
}

/// Fails unless every address can be bound now, so a leftover server from
/// another run is reported before it skews the numbers.
pub fn ensure_free(addresses: &[SocketAddr]) -> anyhow::Result<()> {
    for address in addresses {
        TcpListener::bind(address).with_context(|| {
            format!("{address} is already in use; stop the process holding it (see `ss -ltnp`) and run again")
        })?;
    }
    Ok(())
}

/// Returns a loopback port that was free a moment ago, for listeners that
/// no client of the suite uses.
pub fn unused_loopback_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

//! Child processes for the end-to-end tests: spawned with their output in
//! files, killed when dropped.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variables removed from every child, so the developer's shell
/// cannot change a test: proxies would send loopback traffic elsewhere, and
/// `USAGE_AUTHZ_*` would override the test's configuration.
const PROXY_VARIABLES: &[&str] = &[
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// A running child process whose stdout and stderr go to files. Dropping it
/// kills the process.
pub struct ManagedProcess {
    pub name: String,
    child: Child,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl ManagedProcess {
    /// Spawns `command` with its output in `<dir>/<name>.stdout.log` and
    /// `<dir>/<name>.stderr.log`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> ManagedProcess {
        let stdout_path = dir.join(format!("{name}.stdout.log"));
        let stderr_path = dir.join(format!("{name}.stderr.log"));
        let stdout = File::create(&stdout_path).expect("failed to create a stdout log file");
        let stderr = File::create(&stderr_path).expect("failed to create a stderr log file");

        for variable in PROXY_VARIABLES {
            command.env_remove(variable);
        }
        for (variable, _) in std::env::vars_os() {
            if variable.to_string_lossy().starts_with("USAGE_AUTHZ_") {
                command.env_remove(&variable);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));

        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("failed to start {name} ({command:?}): {err}"));
        ManagedProcess {
            name: name.to_owned(),
            child,
            stdout_path,
            stderr_path,
        }
    }

    /// Returns the exit status if the process has ended.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("failed to poll a child process")
    }

    /// Returns stdout followed by stderr, as written so far.
    pub fn output(&self) -> String {
        let stdout = std::fs::read_to_string(&self.stdout_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        format!(
            "--- {} stdout ---\n{stdout}\n--- {} stderr ---\n{stderr}",
            self.name, self.name
        )
    }

    /// Panics with the process output if it has exited.
    pub fn assert_running(&mut self, during: &str) {
        if let Some(status) = self.exit_status() {
            panic!("{} exited with {status} {during}\n{}", self.name, self.output());
        }
    }

    /// Waits until `ready` returns a value, failing if the process exits or
    /// `timeout` passes first.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        loop {
            if let Some(value) = ready(&self.output()) {
                return value;
            }
            self.assert_running(&format!("while waiting for {what}"));
            if started.elapsed() > timeout {
                panic!(
                    "{} did not report {what} within {timeout:?}\n{}",
                    self.name,
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Kills the process and waits for it, so its log files are complete.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Returns a loopback port that was free a moment ago. Another process can
/// take it before the caller binds it, so callers retry on a bind failure.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("failed to bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("failed to read a bound address")
        .port()
}

/// Finds `field=<socket address>` in log text, e.g. `addr=127.0.0.1:4000`.
pub fn find_socket_addr(log: &str, field: &str) -> Option<SocketAddr> {
    let needle = format!("{field}=");
    log.lines().find_map(|line| {
        let start = line.find(&needle)? + needle.len();
        let text: String = line[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        text.parse().ok()
    })
}

//! Starting and stopping the real `webb-agent` binary.

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::lab::Lab;

/// A workspace binary (`webb-agent`, `webb`), found next to the test
/// executable's target directory, or in `WEBB_BIN_DIR`.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("WEBB_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|d| d.join(name))
        .collect::<Vec<_>>();
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} not found near {} (looked in {candidates:?}); run `cargo build --workspace` first \
                 or set WEBB_BIN_DIR",
                exe.display()
            )
        })
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// Waits until `port` on loopback accepts connections, failing with the
/// process's log if it exits first or takes longer than `timeout`.
pub fn wait_listening(child: &mut Child, port: u16, what: &str, log: &Path, timeout: Duration) {
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}:\n{}", log_text());
        }
        assert!(
            start.elapsed() < timeout,
            "{what} not listening:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the `webb` CLI with no config file; its output, success asserted
/// (stderr in the message).
pub fn webb_ok(args: &[&str]) -> String {
    let out = std::process::Command::new(binary("webb"))
        .args(args)
        .env("WEBB_CONFIG", "/dev/null")
        .output()
        .expect("running webb");
    assert!(
        out.status.success(),
        "webb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("webb prints UTF-8")
}

pub struct AgentProcess {
    pub child: Option<Child>,
    pub addr: String,
    pub log: PathBuf,
}

impl AgentProcess {
    /// Starts an agent watching every pod of the lab and waits until its
    /// health service says SERVING.
    pub fn start(lab: &Lab, node_name: &str, extra: &[&str]) -> Self {
        Self::start_on(lab, node_name, free_port(), extra)
    }

    /// Like [`AgentProcess::start`], on a given loopback port (to restart an
    /// agent where its relay expects it).
    pub fn start_on(lab: &Lab, node_name: &str, port: u16, extra: &[&str]) -> Self {
        Self::start_at(lab, node_name, &format!("127.0.0.1:{port}"), extra)
    }

    /// Like [`AgentProcess::start`], listening on `addr` (the lab host's
    /// address, where an EndpointSlice may name it: not loopback).
    pub fn start_at(lab: &Lab, node_name: &str, addr: &str, extra: &[&str]) -> Self {
        let mut agent = Self::spawn(lab, node_name, addr, &lab.endpoints_path(), extra);
        agent.wait_ready(Duration::from_secs(20));
        agent
    }

    /// Like [`AgentProcess::start`], reading another endpoints file than the
    /// lab's (a node that runs some of the lab's pods and knows the others
    /// as another node's).
    pub fn start_with_endpoints(
        lab: &Lab,
        node_name: &str,
        endpoints: &Path,
        extra: &[&str],
    ) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut agent = Self::spawn(lab, node_name, &addr, endpoints, extra);
        agent.wait_ready(Duration::from_secs(20));
        agent
    }

    fn spawn(lab: &Lab, node_name: &str, addr: &str, endpoints: &Path, extra: &[&str]) -> Self {
        let addr = addr.to_owned();
        let log = lab.dir.join(format!("agent-{node_name}.log"));
        let mut cmd = Command::new(binary("webb-agent"));
        cmd.args(["--listen", &addr, "--node-name", node_name])
            .arg("--endpoints")
            .arg(endpoints)
            .args(extra)
            .env("WEBB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(File::create(&log).expect("agent log"))
            .stderr(File::create(&log).expect("agent log"));
        if let Some(cg) = &lab.cgroup_parent {
            cmd.arg("--cgroup").arg(cg);
        }
        let child = cmd.spawn().expect("starting webb-agent");
        Self {
            child: Some(child),
            addr,
            log,
        }
    }

    /// Starts an agent that serves TLS (its `extra` args carry the
    /// certificate); readiness is the port accepting connections.
    pub fn start_tls(lab: &Lab, node_name: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let mut agent = Self::spawn(
            lab,
            node_name,
            &format!("127.0.0.1:{port}"),
            &lab.endpoints_path(),
            extra,
        );
        if let Some(child) = agent.child.as_mut() {
            wait_listening(
                child,
                port,
                "webb-agent",
                &agent.log,
                Duration::from_secs(20),
            );
        }
        agent
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "webb-agent exited early with {status}:\n{}",
                    self.log_text()
                );
            }
            if rt.block_on(crate::client::is_serving(&self.addr)) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "webb-agent not serving after {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for the agent to exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent running");
        // SAFETY: kill with a valid pid and signal.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                panic!(
                    "webb-agent did not exit within 15 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! Starting and stopping the real `webb-relay` binary.

use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::agent::{binary, free_port, wait_listening};

/// A running relay on a loopback port, killed when dropped.
pub struct RelayProcess {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
}

impl RelayProcess {
    /// Starts `webb-relay --listen 127.0.0.1:PORT ARGS...` and waits until
    /// it accepts connections (TLS or not).
    pub fn start(args: &[&str]) -> Self {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("webb-relay-{port}.log"));
        let child = Command::new(binary("webb-relay"))
            .args(["--listen", &addr])
            .args(args)
            .env("WEBB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("relay log"))
            .spawn()
            .expect("starting webb-relay");
        let mut relay = Self { child, addr, log };
        wait_listening(
            &mut relay.child,
            port,
            "webb-relay",
            &relay.log,
            Duration::from_secs(10),
        );
        relay
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The relay's peak resident memory (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

//! A real Prometheus server (the Debian package) for end-to-end tests:
//! scrapes the given targets every second, stores in the lab's directory,
//! answers PromQL over its HTTP API. Stopped on drop.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Prometheus {
    child: Child,
    pub addr: String,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port` serving /metrics)
    /// and waits until it is ready.
    pub fn start(dir: &Path, targets: &[String]) -> Self {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: webb\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus config");
        let addr = format!("127.0.0.1:{}", crate::agent::free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus (scripts/setup.sh installs it)");
        let p = Self { child, addr };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if p.get("/-/ready").is_some_and(|b| b.contains("Ready")) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "prometheus not ready in 20 s: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
    }

    fn get(&self, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "5",
                &format!("http://{}{path}", self.addr),
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An instant PromQL query: each result series' labels and value.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let out = Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "5",
                "-G",
                "--data-urlencode",
                &format!("query={promql}"),
                &format!("http://{}/api/v1/query", self.addr),
            ])
            .output()
            .expect("curl");
        let body: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        assert_eq!(body["status"], "success", "{promql}: {body}");
        body["data"]["result"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        let labels = r["metric"].as_object().cloned().unwrap_or_default();
                        let v = r["value"][1]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(f64::NAN);
                        (labels, v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `promql` until `done` holds for its result, or panics after
    /// `timeout` showing the last result.
    pub fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        done: impl Fn(&[(serde_json::Map<String, serde_json::Value>, f64)]) -> bool,
    ) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let start = Instant::now();
        loop {
            let r = self.query(promql);
            if done(&r) {
                return r;
            }
            if start.elapsed() > timeout {
                panic!("{promql}: condition not met in {timeout:?}; last result {r:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The real `webb-agent` against a simulated cluster in the API double:
//! 5,000 pods on 100 nodes (50 per node, 500 Deployments of 10 replicas in
//! 20 namespaces, their ReplicaSets), 20 namespaces, 100 nodes, 50
//! NetworkPolicies.
//!
//! `cargo build --release --bins && sudo target/release/webb-bench-kube`
//!
//! Measured:
//! 1. start to fully named: from spawning the agent until its ServerStatus
//!    says the Kubernetes source is synced and names all 5,000 endpoints;
//! 2. memory: the agent's RSS with the cluster, against an agent started
//!    the same way with an empty cluster;
//! 3. churn: 500 pod changes/s for 10 s (a replica deleted, then recreated
//!    at a new address: half the changes are deletions), then how long after
//!    the last change the agent's endpoint count is right again, sampled
//!    every 10 ms during the run as its lag in events;
//! 4. API requests per kind (one list and one watch each is the target).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use webb_tests::{
    agent::AgentProcess,
    block_on, client,
    kube_api::KubeApi,
    kube_sim::{Churn, Cluster},
    lab::Lab,
};

const CLUSTER: Cluster = Cluster {
    pods: 5000,
    nodes: 100,
};
const PODS: u32 = CLUSTER.pods;
const NODES: u32 = CLUSTER.nodes;

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// User + system CPU time of a process, in seconds.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start past ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; 12 and 13 after the state.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn endpoints(addr: &str) -> (u64, String) {
    block_on(async {
        let s = client::status(addr).await;
        (
            s.webb_endpoints,
            s.webb_sources
                .get("kubernetes")
                .cloned()
                .unwrap_or_default(),
        )
    })
}

fn start_agent(lab: &Lab, kubeconfig: &Path) -> AgentProcess {
    AgentProcess::start(
        lab,
        "node-7",
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--no-kernel-drops",
        ],
    )
}

fn main() {
    if let Some(reason) = webb_tests::lab::privileged_skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let lab = Lab::new(&[]);
    lab.write_endpoints("");
    let kubeconfig = lab.dir.join("kubeconfig");

    // Baseline: the same agent, an empty cluster.
    let empty = KubeApi::start();
    empty.write_kubeconfig(&kubeconfig);
    let agent = start_agent(&lab, &kubeconfig);
    std::thread::sleep(Duration::from_secs(2));
    let baseline = rss_mib(agent.child.as_ref().unwrap().id());
    drop(agent);
    drop(empty);

    let api = KubeApi::start();
    let filled = Instant::now();
    CLUSTER.fill(&api);
    println!(
        "cluster in the double: {PODS} pods, {NODES} nodes, 500 ReplicaSets, 50 policies ({:.1} s to create)",
        filled.elapsed().as_secs_f64()
    );
    api.write_kubeconfig(&kubeconfig);
    let started = Instant::now();
    let agent = start_agent(&lab, &kubeconfig);
    let serving = started.elapsed();
    let named = loop {
        let (n, state) = endpoints(&agent.addr);
        if n == u64::from(PODS) && state == "synced" {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not named after 60 s: {n} endpoints, {state}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let pid = agent.child.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_mib(pid);
    println!(
        "start to fully named: {:.2} s (serving gRPC after {:.2} s; target < 3 s)",
        named.as_secs_f64(),
        serving.as_secs_f64()
    );
    println!(
        "agent RSS: {rss:.1} MiB with the cluster, {baseline:.1} MiB with an empty one: {:.1} MiB for the cluster (target <= 64 MiB)",
        rss - baseline
    );

    // Churn at 500 changes/s for 10 s: even changes delete a replica, odd
    // ones recreate it at a new address.
    let rate = 500u32;
    let seconds = 10u32;
    let total = rate * seconds;
    let cpu_before = cpu_s(pid);
    let mut churn = Churn::new(CLUSTER);
    let mut worst_lag = 0i64;
    let began = Instant::now();
    let mut deleted = 0i64;
    for c in 0..total {
        let due = began + Duration::from_secs_f64(f64::from(c) / f64::from(rate));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        deleted += churn.step(&api);
        if c % 50 == 0 {
            let (n, _) = endpoints(&agent.addr);
            let want = i64::from(PODS) - deleted;
            worst_lag = worst_lag.max((want - n as i64).abs());
        }
    }
    let sent = began.elapsed();
    let churn_cpu = cpu_s(pid) - cpu_before;
    let settle = Instant::now();
    loop {
        let (n, _) = endpoints(&agent.addr);
        if n == u64::from(PODS) {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(30),
            "never settled: {n}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "churn: {total} pod changes in {:.1} s ({:.0}/s); settled {:.0} ms after the last; largest sampled lag {worst_lag} events (every 50th change sampled)",
        sent.as_secs_f64(),
        f64::from(total) / sent.as_secs_f64(),
        settle.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "agent CPU during the churn: {:.2} s in {:.1} s ({:.0}% of a core, {:.0} us per change, the status polls included)",
        churn_cpu,
        sent.as_secs_f64(),
        100.0 * churn_cpu / sent.as_secs_f64(),
        churn_cpu * 1e6 / f64::from(total)
    );
    let requests = api.requests();
    let line: Vec<String> = requests
        .iter()
        .map(|((k, v), n)| format!("{k} {v} {n}"))
        .collect();
    println!("API requests: {}", line.join(", "));
    println!(
        "agent RSS after churn: {:.1} MiB",
        rss_mib(agent.child.as_ref().unwrap().id())
    );
}

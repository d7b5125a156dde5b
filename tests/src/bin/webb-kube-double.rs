//! The Kubernetes API double as a process, holding a simulated cluster, for
//! benchmarks that run the agent from a script (`scripts/bench/datapath.sh
//! ... kube`): writes a kubeconfig for it, then churns pods at the rate
//! asked until killed.
//!
//! `webb-kube-double --kubeconfig FILE [--pods 5000] [--nodes 100]
//! [--churn 100]`

use std::time::{Duration, Instant};

use clap::Parser;
use webb_tests::{
    kube_api::KubeApi,
    kube_sim::{Churn, Cluster},
};

#[derive(Parser)]
struct Args {
    /// Where to write the kubeconfig that reaches the double
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    #[arg(long, default_value_t = 5000)]
    pods: u32,
    #[arg(long, default_value_t = 100)]
    nodes: u32,
    /// Pod changes per second (half deletions, half re-creations at a new
    /// address); 0 for none
    #[arg(long, default_value_t = 100)]
    churn: u32,
}

fn main() {
    let args = Args::parse();
    let cluster = Cluster {
        pods: args.pods,
        nodes: args.nodes.max(1),
    };
    let api = KubeApi::start();
    cluster.fill(&api);
    api.write_kubeconfig(&args.kubeconfig);
    println!("ready {} pods {} nodes", cluster.pods, cluster.nodes);
    let mut churn = Churn::new(cluster);
    let began = Instant::now();
    let mut c = 0u64;
    loop {
        if args.churn == 0 {
            std::thread::sleep(Duration::from_secs(3600));
            continue;
        }
        let due = began + Duration::from_secs_f64(c as f64 / f64::from(args.churn));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        churn.step(&api);
        c += 1;
    }
}

//! The reconciler on a simulated cluster: 5,000 pods on 100 nodes (50 per
//! node, 500 Deployments with 10 replicas, 20 namespaces, 50 policies),
//! as the Kubernetes source delivers them: one list (a Replace), then pod
//! changes one watch event at a time, each followed by a rebuild, the
//! worst case (the reconciler batches what arrives together).
//!
//! `cargo bench -p webb-agent --bench cluster`
//!
//! The kernel is a stand-in that counts map operations, so this measures
//! naming, identities, policy compilation and the kernel diff, which is
//! what the agent adds on top of the map writes themselves.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Instant,
};

use webb_agent::{
    cluster::{Change, Kernel, KernelDiff, Pod, Reconciler, Source, Update},
    kernel::DropReasons,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Default)]
struct Counting {
    operations: usize,
}

impl Kernel for Counting {
    fn apply(&mut self, diff: &KernelDiff) -> anyhow::Result<()> {
        self.operations += diff.operations();
        Ok(())
    }
    fn watch(&mut self, _: &BTreeSet<String>) -> Vec<String> {
        Vec::new()
    }
}

fn pod(i: u32, generation: u32) -> Pod {
    let deployment = i / 10;
    Pod {
        namespace: format!("ns-{}", deployment % 20),
        name: format!("app-{deployment}-{generation:x}{i:05}"),
        uid: format!("uid-{i}-{generation}"),
        labels: BTreeMap::from([
            ("app".to_owned(), format!("app-{deployment}")),
            (
                "tier".to_owned(),
                ["web", "api", "db"][(deployment % 3) as usize].to_owned(),
            ),
            ("pod-template-hash".to_owned(), format!("{deployment:x}abc")),
        ]),
        ips: vec![IpAddr::V4(Ipv4Addr::new(
            10,
            (i >> 16) as u8 + 40,
            (i >> 8) as u8,
            i as u8,
        ))],
        node: Some(format!("node-{}", i % 100)),
        owner: Some((
            "ReplicaSet".to_owned(),
            format!("app-{deployment}-{deployment:x}abc"),
        )),
        created: i64::from(generation),
        ..Pod::default()
    }
}

fn policies() -> Vec<webb_agent::policy::NetworkPolicy> {
    let mut text = String::new();
    for p in 0..50 {
        text.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{p}, namespace: ns-{}}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: app-{}}}}}\n  ingress:\n    - from: [{{podSelector: {{matchLabels: {{tier: web}}}}}}]\n      ports: [{{port: 8080}}]\n",
            (p * 10) % 20,
            p * 10
        ));
    }
    webb_agent::policy::parse(&text).expect("policies")
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    const PODS: u32 = 5000;
    let rss_before = rss_kib();
    let mut r = Reconciler::new("node-7", Arc::new(DropReasons::default()), true);
    let mut k = Counting::default();
    let all: Vec<Pod> = (0..PODS).map(|i| pod(i, 0)).collect();
    let start = Instant::now();
    r.apply(Update::Policies(Source::Kube, Change::Replace(policies())));
    r.apply(Update::Pods(Source::Kube, Change::Replace(all)));
    r.reconcile(&mut k);
    let initial = start.elapsed();
    let rss_after = rss_kib();
    println!(
        "initial list: {PODS} pods on 100 nodes, 50 policies named and compiled in {:.1} ms \
         ({} kernel map operations); RSS grew {} KiB",
        initial.as_secs_f64() * 1e3,
        k.operations,
        rss_after.saturating_sub(rss_before)
    );

    // Pod churn: a replica replaced (deleted, recreated under a new name at
    // a new address), one watch event and one rebuild at a time.
    const CHANGES: u32 = 2000;
    let ops_before = k.operations;
    let mut generation = vec![0u32; PODS as usize];
    let start = Instant::now();
    for c in 0..CHANGES {
        let i = (c * 7919) % PODS;
        let old = pod(i, generation[i as usize]);
        generation[i as usize] = c + 1;
        r.apply(Update::Pods(Source::Kube, Change::Delete(old.key())));
        r.reconcile(&mut k);
        let mut new = pod(i, c + 1);
        new.ips = vec![IpAddr::V4(Ipv4Addr::new(
            10,
            60 + (c >> 16) as u8,
            (c >> 8) as u8,
            c as u8,
        ))];
        r.apply(Update::Pods(Source::Kube, Change::Upsert(new)));
        r.reconcile(&mut k);
    }
    let secs = start.elapsed().as_secs_f64();
    let events = f64::from(CHANGES * 2);
    println!(
        "pod churn: {:.0} watch events/s applied one rebuild each ({:.0} us per event; {:.1} kernel map operations per event; {} policy compiles)",
        events / secs,
        secs / events * 1e6,
        (k.operations - ops_before) as f64 / events,
        r.stats.policy_compiles
    );
}

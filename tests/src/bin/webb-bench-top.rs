//! Benchmark of `webb top`'s two halves (issue 21's targets).
//!
//! `cargo build --release --bins && target/release/webb-bench-top`
//!
//! 1. Aggregation on one core: 1,000,000 generated flows (500 workloads in
//!    20 namespaces, 5,000 pairs, skewed; TCP and UDP reports with packet
//!    and byte counts, replies, HTTP and DNS with latencies and errors, drops,
//!    addresses outside the cluster) through `webb_proto::top::Aggregator`,
//!    the code every agent runs, by workload and by workload,port.
//! 2. A 100-node Top over the real `webb-relay`: 100 in-process nodes serve
//!    the Observer and Analysis APIs; each answers Top with the aggregate of
//!    its own 10,000 generated flows (summed once at start with the same
//!    Aggregator: on a cluster each node sums on its own CPU, in parallel,
//!    and phase 1 gives that time). Measured: Top through the relay over
//!    gRPC (fan-out, 100 answers, merge), and the real `webb top --once -o
//!    json` against the relay, process start included.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::{Request, Response, Status};
use webb_proto::{
    analysis::{
        TopKey, TopRequest, TopResponse, WhatIfRequest, WhatIfResponse,
        analysis_client::AnalysisClient,
        analysis_server::{Analysis, AnalysisServer},
    },
    flow::{
        Endpoint, EndpointData, Flow, FlowType, Http, Ip, L7FlowType, Layer4, Layer7, Tcp,
        TraceObservationPoint, Udp, Verdict, Workload, layer4::Protocol, layer7::Record,
    },
    observer::{
        GetFlowsRequest, ServerStatusRequest, observer_client::ObserverClient,
        observer_server::ObserverServer,
    },
    top::Aggregator,
    wkt::{BoolValue, Timestamp},
};
use webb_tests::{
    relay::RelayProcess,
    synthetic::{FlowStream, Script, SyntheticNode},
};

const NODES: usize = 100;
const FLOWS_PER_NODE: usize = 10_000;

/// xorshift64: deterministic flows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The cluster's workloads (two pods each) and the pairs that talk.
struct Cluster {
    pods: Vec<[Endpoint; 2]>,
    pairs: Vec<(usize, usize, u32)>,
}

impl Cluster {
    fn new() -> Self {
        let mut pods = Vec::new();
        for ns in 0..20 {
            for w in 0..25 {
                let name = format!("svc-{w}");
                let make = |i: u32| -> Endpoint {
                    EndpointData {
                        id: ns * 100 + w * 2 + i,
                        identity: 1000 + ns * 25 + w,
                        namespace: format!("ns-{ns}"),
                        pod_name: format!("{name}-7d9f8c-{i}"),
                        labels: vec![format!("k8s:app={name}")],
                        workloads: vec![Workload {
                            name: name.clone(),
                            kind: "Deployment".into(),
                        }],
                        ..Default::default()
                    }
                    .into()
                };
                pods.push([make(0), make(1)]);
            }
        }
        let mut rng = Rng(0x5eed);
        let ports = [80, 443, 5432, 6379, 8080, 9090];
        let pairs = (0..5_000)
            .map(|_| {
                let c = rng.below(pods.len() as u64) as usize;
                let s = rng.below(pods.len() as u64) as usize;
                (c, s, ports[rng.below(ports.len() as u64) as usize])
            })
            .collect();
        Self { pods, pairs }
    }

    /// The pairs with an end among node `node`'s workloads (of `nodes`, each
    /// hosting an equal share).
    fn pairs_on(&self, node: usize, nodes: usize) -> Vec<usize> {
        let per = self.pods.len() / nodes;
        let here = |w: usize| w / per == node;
        (0..self.pairs.len())
            .filter(|&k| here(self.pairs[k].0) || here(self.pairs[k].1))
            .collect()
    }

    /// `n` flows starting at second `t0` over `among` (indexes into the
    /// pairs), skewed towards the first.
    fn flows(&self, seed: u64, n: usize, t0: i64, among: &[usize]) -> Vec<Flow> {
        let mut rng = Rng(seed | 1);
        let world: Endpoint = EndpointData {
            identity: 2,
            labels: vec!["reserved:world".into()],
            ..Default::default()
        }
        .into();
        (0..n)
            .map(|i| {
                // The square skews: a few pairs carry most flows.
                let r = rng.below(1 << 16);
                let k = among[((r * r * among.len() as u64) >> 32) as usize];
                let (c, s, port) = self.pairs[k];
                let (client, server) = (
                    self.pods[c][i % 2].clone(),
                    self.pods[s][(i / 2) % 2].clone(),
                );
                let outside = rng.below(20) == 0;
                let client_ip = format!("10.{}.{}.{}", c / 250, c % 250, 10 + i % 2);
                let server_ip = if outside {
                    "93.184.216.34".to_owned()
                } else {
                    format!("10.{}.{}.{}", s / 250, s % 250, 10 + (i / 2) % 2)
                };
                let server = if outside { world.clone() } else { server };
                let reply = rng.below(2) == 0;
                let kind = rng.below(100);
                let (src, dst) = if reply {
                    (server.clone(), client.clone())
                } else {
                    (client.clone(), server.clone())
                };
                let (sport, dport) = if reply {
                    (port, 40_000 + (i % 20_000) as u32)
                } else {
                    (40_000 + (i % 20_000) as u32, port)
                };
                let mut f = Flow {
                    time: Some(Timestamp {
                        seconds: t0 + (i / 10_000) as i64,
                        nanos: ((i % 10_000) * 100_000) as i32,
                    }),
                    verdict: Verdict::Forwarded as i32,
                    r#type: FlowType::L3L4 as i32,
                    ip: Some(Ip {
                        source: if reply {
                            server_ip.clone()
                        } else {
                            client_ip.clone()
                        },
                        destination: if reply { client_ip } else { server_ip },
                        ..Default::default()
                    }),
                    source: Some(src),
                    destination: Some(dst),
                    is_reply: Some(BoolValue { value: reply }),
                    trace_observation_point: if rng.below(2) == 0 {
                        TraceObservationPoint::FromEndpoint as i32
                    } else {
                        TraceObservationPoint::ToEndpoint as i32
                    },
                    webb_packets: 1 + rng.below(20),
                    webb_bytes: 60 + rng.below(30_000),
                    ..Default::default()
                };
                let tcp = Protocol::Tcp(Tcp {
                    source_port: sport,
                    destination_port: dport,
                    ..Default::default()
                });
                f.l4 = Some(Layer4 {
                    protocol: Some(match kind {
                        0..65 => tcp,
                        _ if kind < 75 => Protocol::Udp(Udp {
                            source_port: sport,
                            destination_port: 53,
                        }),
                        _ => tcp,
                    }),
                });
                if (75..90).contains(&kind) {
                    f.r#type = FlowType::L7 as i32;
                    f.l7 = Some(Box::new(Layer7 {
                        r#type: if reply {
                            L7FlowType::Response as i32
                        } else {
                            L7FlowType::Request as i32
                        },
                        latency_ns: if reply {
                            1_000_000 + rng.below(50_000_000)
                        } else {
                            0
                        },
                        record: Some(Record::Http(Http {
                            code: if rng.below(50) == 0 { 503 } else { 200 },
                            method: "GET".into(),
                            url: format!("http://svc:{port}/api"),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }));
                } else if kind >= 95 {
                    f.verdict = Verdict::Dropped as i32;
                }
                f
            })
            .collect()
    }
}

/// A node whose Top is its flows' aggregate.
struct Node {
    answer: TopResponse,
}

#[tonic::async_trait]
impl Analysis for Node {
    async fn top(&self, _: Request<TopRequest>) -> Result<Response<TopResponse>, Status> {
        Ok(Response::new(self.answer.clone()))
    }

    async fn what_if(&self, _: Request<WhatIfRequest>) -> Result<Response<WhatIfResponse>, Status> {
        Err(Status::unimplemented("benchmark node"))
    }
}

/// GetFlows of a benchmark node: nothing (Top is what is measured).
struct NoFlows;

impl Script for NoFlows {
    fn get_flows(&self, _: &str, _: GetFlowsRequest) -> FlowStream {
        Box::pin(futures::stream::empty())
    }
}

fn aggregate(flows: &[Flow], by: Vec<TopKey>) -> (TopResponse, Duration) {
    let start = Instant::now();
    let mut agg = Aggregator::new(by);
    for f in flows {
        agg.add(f);
    }
    let answer = agg.finish();
    (answer, start.elapsed())
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort_unstable();
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cluster = Arc::new(Cluster::new());
    let t0 = Timestamp::from(std::time::SystemTime::now()).seconds - 3600;

    // 1. One core.
    let all: Vec<usize> = (0..cluster.pairs.len()).collect();
    let flows = cluster.flows(7, 1_000_000, t0, &all);
    for (name, by) in [
        ("workload", vec![TopKey::Workload]),
        ("workload,port", vec![TopKey::Workload, TopKey::Port]),
    ] {
        let mut best = Duration::MAX;
        let mut pairs = 0;
        for _ in 0..3 {
            let (a, took) = aggregate(&flows, by.clone());
            best = best.min(took);
            pairs = a.pairs.len();
        }
        println!(
            "aggregate by {name}: {} flows in {:.1} ms (best of 3): {:.0} flows/s on one core, {pairs} pairs",
            flows.len(),
            best.as_secs_f64() * 1e3,
            flows.len() as f64 / best.as_secs_f64(),
        );
    }
    drop(flows);

    // 2. 100 nodes behind the real relay: each node's flows touch its own
    // workloads (as on a cluster), then every node sees every pair (worst).
    for spread in [true, false] {
        relay_top(&cluster, t0, &all, spread).await?;
    }
    Ok(())
}

async fn relay_top(cluster: &Cluster, t0: i64, all: &[usize], spread: bool) -> anyhow::Result<()> {
    let mut peers = Vec::new();
    let mut pairs_per_node = 0;
    for i in 0..NODES {
        let among = if spread {
            cluster.pairs_on(i, NODES)
        } else {
            all.to_vec()
        };
        let flows = cluster.flows(1000 + i as u64, FLOWS_PER_NODE, t0, &among);
        let (mut answer, _) = aggregate(&flows, vec![TopKey::Workload]);
        answer.nodes = vec![format!("node-{i}")];
        pairs_per_node += answer.pairs.len();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        peers.push(listener.local_addr()?.to_string());
        let observer = SyntheticNode {
            name: format!("node-{i}"),
            script: NoFlows,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ObserverServer::new(observer))
                .add_service(AnalysisServer::new(Node { answer }))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
    }
    let mut args = Vec::new();
    for p in &peers {
        args.extend(["--peer", p.as_str()]);
    }
    let relay = RelayProcess::start(&args);
    let start = Instant::now();
    loop {
        if let Ok(mut c) = ObserverClient::connect(format!("http://{}", relay.addr)).await
            && let Ok(s) = c.server_status(ServerStatusRequest {}).await
            && s.into_inner().num_connected_nodes.map(|n| n.value) == Some(NODES as u32)
        {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the relay did not connect its {NODES} nodes:\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{NODES} nodes, {}: {} pairs per node on average ({FLOWS_PER_NODE} flows each)",
        if spread {
            "each node's flows touch its own workloads"
        } else {
            "every node sees every pair (worst case)"
        },
        pairs_per_node / NODES
    );
    let mut client = AnalysisClient::connect(format!("http://{}", relay.addr))
        .await?
        .max_decoding_message_size(256 << 20);
    let mut took = Vec::new();
    let mut merged_pairs = 0;
    for _ in 0..20 {
        let start = Instant::now();
        let a = client
            .top(TopRequest {
                by: vec![TopKey::Workload as i32],
                ..Default::default()
            })
            .await?
            .into_inner();
        took.push(start.elapsed());
        anyhow::ensure!(a.nodes.len() == NODES, "{} nodes answered", a.nodes.len());
        merged_pairs = a.pairs.len();
    }
    let first = took[0];
    println!(
        "Top through the relay (gRPC): first {:.1} ms; p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms over 20; {merged_pairs} pairs merged",
        first.as_secs_f64() * 1e3,
        quantile(&mut took, 0.5).as_secs_f64() * 1e3,
        quantile(&mut took, 0.9).as_secs_f64() * 1e3,
        quantile(&mut took, 1.0).as_secs_f64() * 1e3,
    );
    let mut cli = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let out = tokio::process::Command::new(webb_tests::agent::binary("webb"))
            .args(["top", "--once", "-o", "json", "--server", &relay.addr])
            .env("WEBB_CONFIG", "/dev/null")
            .output()
            .await?;
        cli.push(start.elapsed());
        anyhow::ensure!(
            out.status.success(),
            "webb top failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    println!(
        "webb top --once -o json through the relay (process included): p50 {:.1} ms, max {:.1} ms over 5",
        quantile(&mut cli, 0.5).as_secs_f64() * 1e3,
        quantile(&mut cli, 1.0).as_secs_f64() * 1e3,
    );
    Ok(())
}

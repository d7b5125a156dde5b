//! Ingest benchmark: how fast kernel records become stored flows, how fast a
//! `GetFlows follow` subscriber receives them over loopback gRPC, and how
//! long a 1%-selective query over a full 65,535-flow ring takes.
//!
//! `cargo bench -p webb-agent --bench ingest`
//! (`-- --metrics`: ingest with every metric family on versus off;
//! `-- --store [--store-flows=N]`: the flow store's write rate, bytes per
//! flow on disk, reopen time and a 1%-selective query;
//! `-- --export`: the flow exporter's write rate, and ingest with it on;
//! `-- --ring [--ring-flows=N]`: a 1,048,575-flow ring: ingest rate, RSS
//! per stored flow, a 1%-selective query)
//!
//! The records are synthetic FlowEvents with the kernel's layout (varied
//! 5-tuples, points, kinds), decoded by the agent's real decoder and
//! published to the real Hub; the subscriber is a real tonic client on a
//! real TCP socket.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use node_agent_ebpf::{FlowEvent, FlowKey, emit, kind, point, tcp, v4_mapped};
use tokio_stream::wrappers::TcpListenerStream;
use webb_agent::{
    decode::Decoder,
    ingest::{FlowSink, MadeRecords, Pipeline, SourceCounters, record_bytes},
    metrics::{self, Metrics},
    observer::{Hub, Query},
    server::Service,
    store::{self, FlowStore},
};
use webb_proto::{
    filter::FlowFilters,
    flow::{Flow, FlowFilter},
    observer::{
        GetFlowsRequest, get_flows_response::ResponseTypes, observer_client::ObserverClient,
        observer_server::ObserverServer,
    },
};

mod common;

/// The same allocator as the webb-agent binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENDPOINTS: &str = "
host_ips: [10.99.0.1]
endpoints:
  - {namespace: shop, pod: frontend-1, labels: {app: frontend, tier: web}, workload: {kind: Deployment, name: frontend}, ips: [10.99.0.10]}
  - {namespace: shop, pod: cart-1, labels: {app: cart}, workload: {kind: Deployment, name: cart}, ips: [10.99.0.11]}
  - {namespace: shop, pod: db-0, labels: {app: db}, workload: {kind: StatefulSet, name: db}, ips: [10.99.0.12]}
";

fn decoder() -> Decoder {
    common::decoder(ENDPOINTS)
}

/// A mix like real traffic: mostly TCP between pods, some UDP, some drops.
fn event(i: u64) -> FlowEvent {
    let (src, dst) = match i % 3 {
        0 => ([10, 99, 0, 10], [10, 99, 0, 11]),
        1 => ([10, 99, 0, 11], [10, 99, 0, 12]),
        _ => ([10, 99, 0, 10], [93, 184, 216, 34]),
    };
    let udp = i.is_multiple_of(5);
    FlowEvent {
        ts_ns: 1_000_000 + i * 1_000,
        packets: 1 + i % 7,
        bytes: 60 * (1 + i % 7),
        key: FlowKey {
            src: v4_mapped(src),
            dst: v4_mapped(dst),
            sport: 30_000 + (i % 30_000) as u16,
            dport: if udp { 53 } else { 8080 },
            proto: if udp { 17 } else { 6 },
            point: if i.is_multiple_of(2) {
                point::TC_INGRESS
            } else {
                point::TC_EGRESS
            },
            _pad: [0; 2],
        },
        ifindex: 7,
        kind: if i.is_multiple_of(50) {
            kind::KERNEL_DROP
        } else {
            kind::TRACE
        },
        drop_reason: 3,
        emit: emit::NEW,
        tcp_flags: if udp { 0 } else { tcp::SYN },
        ip_version: 4,
        ..Default::default()
    }
}

/// `n` of the mix's records, made as they are consumed, like a ring
/// buffer's.
fn made_records(n: u64) -> MadeRecords<impl FnMut() -> Option<Vec<u8>>> {
    let mut i = 0;
    MadeRecords {
        make: move || {
            (i < n).then(|| {
                i += 1;
                record_bytes(&event(i - 1)).to_vec()
            })
        },
        counters: SourceCounters::default(),
    }
}

/// Decode + publish into a 65,535-flow ring, in batches like the ingest loop.
fn bench_ingest(n: u64) -> f64 {
    bench_ingest_with(n, None, Vec::new())
}

/// Every metric family on, with namespace contexts on the flow family.
const ALL_METRICS: &str = "flow:sourceContext=namespace;destinationContext=namespace \
    drop:sourceContext=namespace;destinationContext=namespace tcp icmp port-distribution dns:query http";

/// Like `bench_ingest`, counting every batch into the metrics first when
/// `metrics` is given (as the agent does with `--metrics`): the agent's own
/// ingest pipeline over made-up records.
fn bench_ingest_with(n: u64, metrics: Option<&str>, extra: Vec<Box<dyn FlowSink>>) -> f64 {
    let hub = Arc::new(Hub::new(65_535));
    let mut sinks: Vec<Box<dyn FlowSink>> = extra;
    if let Some(spec) = metrics {
        sinks.push(Box::new(Arc::new(Metrics::new(
            metrics::options::parse(spec).expect("metrics spec"),
            2000,
            hub.clone(),
        ))));
    }
    sinks.push(Box::new(hub.clone()));
    let mut pipeline = Pipeline::new(decoder(), hub.clone(), sinks);
    let mut source = made_records(n);
    let start = Instant::now();
    while pipeline.step(&mut source) > 0 {}
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(hub.status().seen_flows, n);
    n as f64 / secs
}

/// The flow store: flows/s written (encoded, compressed, on disk), bytes on
/// disk per flow for this mix, the time to open the store again, and the
/// median of three 1%-selective queries over all of it.
fn bench_store(n: u64) -> (f64, f64, Duration, Duration, usize) {
    let dir = std::env::temp_dir().join(format!("webb-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = store::Options {
        dir: dir.clone(),
        max_size: u64::MAX,
        max_age: Duration::from_secs(86_400),
    };
    let store = FlowStore::open(opts.clone()).expect("open store");
    let mut d = decoder();
    let mut seq = 0;
    let start = Instant::now();
    while seq < n {
        let items: Vec<_> = (seq..(seq + 4096).min(n))
            .map(|k| webb_agent::observer::flow_item(d.decode(&event(k)), "bench-node"))
            .collect();
        store.append(seq, &items);
        seq += items.len() as u64;
    }
    store.close();
    let secs = start.elapsed().as_secs_f64();
    let bytes = store.status().bytes;
    drop(store);
    let start = Instant::now();
    let store = FlowStore::open(opts).expect("reopen store");
    let open = start.elapsed();
    let ports: Vec<String> = (30_000..30_300).map(|p| p.to_string()).collect();
    let q = Query {
        filters: FlowFilters::compile(
            &[FlowFilter {
                source_port: ports,
                ..Default::default()
            }],
            &[],
        )
        .expect("filter"),
        ..Default::default()
    };
    let mut times = Vec::new();
    let mut matched = 0;
    for _ in 0..3 {
        let start = Instant::now();
        matched = store.read(&q, n, usize::MAX, false).0.len();
        times.push(start.elapsed());
    }
    times.sort();
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
    (
        n as f64 / secs,
        bytes as f64 / n as f64,
        open,
        times[1],
        matched,
    )
}

/// The exporter as the agent runs it (a sink; its writer thread encodes
/// JSON lines and writes them to a file rotated at 10 MB): flows written
/// per second, what it dropped, and the ingest rate with it on.
fn bench_export(n: u64) -> (f64, u64, f64, u64) {
    use webb_agent::export;
    let dir = std::env::temp_dir().join(format!("webb-bench-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = export::Options {
        target: export::Target::File(dir.join("events.log")),
        max_size: 10 << 20,
        max_backups: 0,
        compress: false,
        filters: Default::default(),
        mask: None,
    };
    // The writer alone: decoded flows handed over in the pipeline's batches,
    // waiting for room rather than dropping, so its own rate is measured.
    let mut d = decoder();
    let items: Vec<_> = (0..n)
        .map(|k| webb_agent::observer::flow_item(d.decode(&event(k)), "bench-node"))
        .collect();
    let mut ex = export::Exporter::start(opts.clone()).expect("exporter");
    let c = ex.counters();
    let start = Instant::now();
    for (k, chunk) in items.chunks(512).enumerate() {
        // At most 256 batches ahead of the writer (its queue holds 1,024).
        while (k as u64) * 512 > c.exported.load(std::sync::atomic::Ordering::Relaxed) + 256 * 512 {
            std::thread::yield_now();
        }
        ex.accept(0, chunk);
    }
    drop(ex);
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let dropped = c.dropped.load(std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&dir);
    // Ingest with the exporter as one more sink, at full speed.
    let ex = export::Exporter::start(opts).expect("exporter");
    let c = ex.counters();
    let ingest = bench_ingest_with(n, None, vec![Box::new(ex)]);
    let ingest_dropped = c.dropped.load(std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&dir);
    (rate, dropped, ingest, ingest_dropped)
}

/// Flows/s delivered to one follow subscriber over loopback when flows are
/// published at `rate` per second, with the number of events it lost.
async fn bench_follow(n: u64, rate: u64) -> (f64, u64, u64) {
    let hub = Arc::new(Hub::new(65_535));
    let svc = Service {
        hub: hub.clone(),
        store: None,
        node_name: "bench-node".into(),
        address: String::new(),
        peers: tokio::sync::watch::channel(Vec::new()).1,
        cluster_status: tokio::sync::watch::channel(Default::default()).1,
        agent_events: Arc::new(webb_agent::agent_events::AgentEvents::new("bench-node")),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ObserverServer::new(svc))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut client = ObserverClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut stream = client
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .expect("follow")
        .into_inner();
    // Decode up front: this measures delivery, not decoding.
    let mut d = decoder();
    let flows: Vec<Flow> = (0..n).map(|i| d.decode(&event(i))).collect();
    let publisher = {
        let hub = hub.clone();
        std::thread::spawn(move || {
            // Publish in 2 ms batches, as the ingest loop does, at `rate`.
            let per_batch = (rate / 500).max(1) as usize;
            let start = Instant::now();
            let mut it = flows.into_iter().peekable();
            let mut k = 0u32;
            while it.peek().is_some() {
                let mut batch: Vec<Flow> = it.by_ref().take(per_batch).collect();
                hub.publish(&mut batch, "bench-node");
                k += 1;
                let due = start + Duration::from_millis(2) * k;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    let start = Instant::now();
    let (mut got, mut lost) = (0u64, 0u64);
    while got + lost < n {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(r))) => match r.response_types {
                Some(ResponseTypes::Flow(_)) => got += 1,
                Some(ResponseTypes::LostEvents(l)) => lost += l.num_events_lost,
                _ => {}
            },
            _ => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    publisher.join().expect("publisher");
    (got as f64 / secs, got, lost)
}

/// Median time of a 1%-selective query over a full 65,535-flow ring.
fn bench_query() -> (Duration, usize) {
    let hub = Hub::new(65_535);
    let mut d = decoder();
    let flows: Vec<Flow> = (0..65_535).map(|i| d.decode(&event(i))).collect();
    let mut flows = flows;
    hub.publish(&mut flows, "bench-node");
    query_times(&hub)
}

/// The process's resident memory.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// A ring of `capacity` flows filled through the agent's own pipeline:
/// the ingest rate, the memory each stored flow takes (the process's RSS
/// grown, over the flows), and the median 1%-selective query over it.
fn bench_ring(capacity: usize) -> (f64, f64, Duration, usize) {
    let before = rss_bytes();
    let hub = Arc::new(Hub::new(capacity));
    let sinks: Vec<Box<dyn FlowSink>> = vec![Box::new(hub.clone())];
    let mut pipeline = Pipeline::new(decoder(), hub.clone(), sinks);
    let n = capacity as u64;
    let mut source = made_records(n);
    let start = Instant::now();
    while pipeline.step(&mut source) > 0 {}
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let per_flow = rss_bytes().saturating_sub(before) as f64 / n as f64;
    let (q, matched) = query_times(&hub);
    (rate, per_flow, q, matched)
}

/// Median of 9 runs of the 1%-selective query (source ports 30000..30299
/// of the mix's 30000).
fn query_times(hub: &Hub) -> (Duration, usize) {
    // Source ports 30000..30299 of 30000 distinct: 1% of the flows.
    let ports: Vec<String> = (30_000..30_300).map(|p| p.to_string()).collect();
    let filters = FlowFilters::compile(
        &[FlowFilter {
            source_port: ports,
            ..Default::default()
        }],
        &[],
    )
    .expect("filter");
    let mut times = Vec::new();
    let mut matched = 0;
    for _ in 0..9 {
        let start = Instant::now();
        let snap = hub.query(&Query {
            filters: filters.clone(),
            ..Default::default()
        });
        times.push(start.elapsed());
        matched = snap.history.len();
    }
    times.sort();
    (times[times.len() / 2], matched)
}

fn main() {
    let n = 2_000_000;
    let rate = bench_ingest(n);
    println!("ingest: {n} events decoded and stored in {rate:.0} events/s");
    if std::env::args().any(|a| a == "--ingest-only") {
        return;
    }
    if std::env::args().any(|a| a == "--store") {
        // `--store-flows=N` for another size (120M make a 2 GiB store).
        let n = std::env::args()
            .find_map(|a| a.strip_prefix("--store-flows=")?.parse().ok())
            .unwrap_or(10_000_000);
        let (rate, per_flow, open, query, matched) = bench_store(n);
        println!(
            "store: {n} flows written at {rate:.0} flows/s (the writer thread encodes, compresses, writes), {per_flow:.1} bytes per flow on disk"
        );
        println!(
            "store: reopened in {:.1} ms; 1%-selective query over all {n} -> {matched} flows, median {:.0} ms",
            open.as_secs_f64() * 1e3,
            query.as_secs_f64() * 1e3
        );
        return;
    }
    if std::env::args().any(|a| a == "--ring") {
        // `--ring-flows=N` for another size.
        let n = std::env::args()
            .find_map(|a| a.strip_prefix("--ring-flows=")?.parse().ok())
            .unwrap_or(1_048_575);
        let (rate, per_flow, q, matched) = bench_ring(n);
        println!(
            "ring: {n} flows ingested at {rate:.0} events/s, {per_flow:.0} bytes of RSS per stored flow ({:.1} MiB)",
            per_flow * n as f64 / f64::from(1 << 20)
        );
        println!(
            "ring: 1%-selective filter over {n} flows -> {matched} flows, median {:.1} ms",
            q.as_secs_f64() * 1e3
        );
        return;
    }
    if std::env::args().any(|a| a == "--export") {
        let n = 1_000_000;
        let (rate, dropped, ingest, ingest_dropped) = bench_export(n);
        println!(
            "export: {n} flows written as JSON lines at {rate:.0} flows/s by the writer thread ({dropped} dropped)"
        );
        println!(
            "export: ingest with the exporter on at {ingest:.0} events/s ({ingest_dropped} flows the writer could not keep up with, dropped and counted)"
        );
        return;
    }
    if std::env::args().any(|a| a == "--metrics") {
        // Off and on interleaved (ABBA), five pairs, medians compared.
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for pair in 0..5 {
            let order = if pair % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for with in order {
                let r = bench_ingest_with(n, with.then_some(ALL_METRICS), Vec::new());
                println!(
                    "ingest: metrics {} {r:.0} events/s",
                    if with { "on " } else { "off" }
                );
                if with { on.push(r) } else { off.push(r) }
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (off, on) = (median(&mut off), median(&mut on));
        println!(
            "ingest with every metric family on: {on:.0} events/s vs {off:.0} off, ratio {:.3}",
            on / off
        );
        return;
    }
    println!(
        "sizes: Flow {} bytes, GetFlowsResponse {} bytes",
        std::mem::size_of::<Flow>(),
        std::mem::size_of::<webb_proto::observer::GetFlowsResponse>()
    );
    let (q, matched) = bench_query();
    println!(
        "query: 1%-selective filter over 65535 flows -> {matched} flows, median {:.2} ms",
        q.as_secs_f64() * 1e3
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rates: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rates = if rates.is_empty() {
        vec![200_000, 250_000, 300_000]
    } else {
        rates
    };
    for rate in rates {
        let n = rate * 4;
        let (fps, got, lost) = rt.block_on(bench_follow(n, rate));
        println!(
            "follow: published {n} at {rate}/s; {got} delivered to one subscriber over loopback at {fps:.0} flows/s, {lost} lost"
        );
    }
}

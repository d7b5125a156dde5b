//! Benchmark of the real `webb-relay` binary over 8 synthetic node streams.
//!
//! `cargo build --release --bins && target/release/webb-bench-relay`
//!
//! The nodes are in-process gRPC servers that speak the Observer API like an
//! agent (flows with real-sized contents, heartbeats when asked). Phases, each
//! with fresh nodes and a fresh relay:
//! 1. as fast as possible, read directly: one client reading the 8 streams;
//! 2. as fast as possible, through the relay: one client; then the same with
//!    `webb observe --follow -o json` (and `-o compact`) as the client, its
//!    output lines counted, to report the CLI's rate next to the relay's;
//! 3. paced at a fixed total rate through the relay: p99 added latency (flow
//!    time set at sending, measured at the client) and the relay's peak RSS;
//! 4. idle (10 flows/s per node): p99 added latency.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use webb_proto::{
    observer::{
        GetFlowsRequest, GetFlowsResponse, ServerStatusRequest, get_flows_response::ResponseTypes,
        observer_client::ObserverClient, observer_server::ObserverServer,
    },
    wkt::Timestamp,
};
use webb_tests::{
    relay::RelayProcess,
    synthetic::{FlowStream, Script, SyntheticNode, heartbeat},
};

const NODES: usize = 8;
const FIXTURE: &str = include_str!("../../../tui/tests/fixtures/flows.jsonl");

#[derive(Clone, Copy)]
enum Mode {
    /// As fast as the reader takes them.
    Max,
    /// This many flows per second.
    Paced(u64),
}

/// What each synthetic node streams: copies of one real-sized flow, stamped
/// with the time they are sent.
#[derive(Clone)]
struct Stream {
    template: GetFlowsResponse,
    mode: Mode,
    stop: Arc<AtomicBool>,
}

fn now() -> Timestamp {
    Timestamp::from(std::time::SystemTime::now())
}

impl Script for Stream {
    fn get_flows(&self, node: &str, req: GetFlowsRequest) -> FlowStream {
        let (script, node) = (self.clone(), node.to_owned());
        let beats = req.webb_heartbeat_ms > 0;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let mut sent: u64 = 0;
            let began = Instant::now();
            while !script.stop.load(Ordering::Relaxed) {
                let batch = match script.mode {
                    Mode::Max => 64,
                    Mode::Paced(rate) => {
                        let due = (began.elapsed().as_secs_f64() * rate as f64) as u64;
                        if due <= sent {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            if beats && tx.send(Ok(heartbeat(&node, now()))).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        due - sent
                    }
                };
                for _ in 0..batch {
                    let mut r = script.template.clone();
                    let t = now();
                    r.time = Some(t);
                    if let Some(ResponseTypes::Flow(f)) = r.response_types.as_mut() {
                        f.time = Some(t);
                    }
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                if beats
                    && matches!(script.mode, Mode::Max)
                    && sent.is_multiple_of(1024)
                    && tx.send(Ok(heartbeat(&node, now()))).await.is_err()
                {
                    return;
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

struct Cluster {
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn start_nodes(mode: Mode) -> anyhow::Result<Cluster> {
    let template = FIXTURE
        .lines()
        .map(webb_proto::json::parse_line)
        .find_map(|r| {
            r.ok()
                .filter(|r| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
        })
        .ok_or_else(|| anyhow::anyhow!("no flow in the fixture"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut addrs = Vec::new();
    for i in 0..NODES {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        addrs.push(listener.local_addr()?.to_string());
        let node = SyntheticNode {
            name: format!("synthetic-{i}"),
            script: Stream {
                template: template.clone(),
                mode,
                stop: stop.clone(),
            },
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ObserverServer::new(node))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
    }
    Ok(Cluster { addrs, stop })
}

/// Starts the real relay in front of the cluster and waits until it has
/// connected every node.
async fn start_relay(c: &Cluster) -> anyhow::Result<RelayProcess> {
    let mut args = Vec::new();
    for a in &c.addrs {
        args.extend(["--peer", a.as_str()]);
    }
    let relay = RelayProcess::start(&args);
    let start = Instant::now();
    loop {
        if let Ok(mut cl) = ObserverClient::connect(format!("http://{}", relay.addr)).await
            && let Ok(s) = cl.server_status(ServerStatusRequest {}).await
            && s.into_inner().num_connected_nodes.map(|n| n.value) == Some(NODES as u32)
        {
            return Ok(relay);
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(15),
            "relay did not connect its nodes:\n{}",
            relay.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads one follow stream for `secs`, returning (flows, added latencies in µs).
async fn read(addr: String, secs: f64, measure: bool) -> anyhow::Result<(u64, Vec<u64>)> {
    let mut c = ObserverClient::connect(format!("http://{addr}"))
        .await?
        .max_decoding_message_size(64 << 20);
    let mut s = c
        .get_flows(GetFlowsRequest {
            follow: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let (mut n, mut lat) = (0u64, Vec::new());
    // Skip the first half second (connection set-up).
    let warm = Instant::now() + Duration::from_millis(500);
    while let Ok(Some(Ok(r))) = tokio::time::timeout_at(end, s.next()).await {
        if !matches!(r.response_types, Some(ResponseTypes::Flow(_))) || Instant::now() < warm {
            continue;
        }
        n += 1;
        if measure && let Some(t) = r.time {
            lat.push(((now().as_nanos() - t.as_nanos()) / 1000).max(0) as u64);
        }
    }
    Ok((n, lat))
}

/// Runs `webb observe --follow -o FORMAT` against `addr` for `secs` and
/// counts the lines it prints after the first half second. The output is
/// read on a thread of its own: a task would queue behind the synthetic
/// nodes' tasks, and a full pipe would stall the CLI.
async fn read_cli(addr: &str, secs: f64, format: &str) -> anyhow::Result<u64> {
    use std::io::Read as _;
    let mut child = std::process::Command::new(webb_tests::agent::binary("webb"))
        .args([
            "observe", "--follow", "-o", format, "--color", "never", "--server", addr,
        ])
        .env("WEBB_CONFIG", "/dev/null")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let counter = std::thread::spawn(move || -> std::io::Result<u64> {
        let warm = Instant::now() + Duration::from_millis(500);
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        while Instant::now() < end {
            let k = out.read(&mut buf)?;
            if k == 0 {
                return Err(std::io::Error::other("webb observe ended early"));
            }
            if Instant::now() >= warm {
                n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
            }
        }
        Ok(n)
    });
    let counted = tokio::task::spawn_blocking(move || counter.join()).await?;
    child.kill()?;
    child.wait()?;
    counted
        .map_err(|_| anyhow::anyhow!("the counting thread panicked"))?
        .map_err(Into::into)
}

fn p99_ms(mut v: Vec<u64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)] as f64 / 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    const SECS: f64 = 5.5;
    let measured = SECS - 0.5;
    println!(
        "webb-bench-relay: {NODES} synthetic node streams; {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Direct.
    let cluster = start_nodes(Mode::Max).await?;
    let reads = cluster
        .addrs
        .iter()
        .map(|a| tokio::spawn(read(a.clone(), SECS, false)));
    let mut direct = 0u64;
    for r in futures::future::join_all(reads).await {
        direct += r??.0;
    }
    drop(cluster);
    let direct_rate = direct as f64 / measured;
    println!("direct: one client reading the {NODES} streams: {direct_rate:.0} flows/s");

    // 2. Through the relay.
    let cluster = start_nodes(Mode::Max).await?;
    let relay = start_relay(&cluster).await?;
    let (merged, _) = read(relay.addr.clone(), SECS, false).await?;
    let merged_rate = merged as f64 / measured;
    println!(
        "relay: one client, merged: {merged_rate:.0} flows/s = {:.2} of direct; relay peak RSS {:.1} MiB",
        merged_rate / direct_rate,
        relay.peak_rss_mib()
    );
    drop(relay);
    drop(cluster);
    for format in ["json", "compact"] {
        let cluster = start_nodes(Mode::Max).await?;
        let relay = start_relay(&cluster).await?;
        let printed = read_cli(&relay.addr, SECS, format).await? as f64 / measured;
        println!(
            "relay: webb observe --follow -o {format} as the client: {printed:.0} flows/s printed \
             = {:.2} of the plain client's rate above",
            printed / merged_rate
        );
        drop(relay);
        drop(cluster);
    }

    // 3. Paced load through the relay.
    let total = 150_000u64.min((merged_rate * 0.8) as u64);
    let cluster = start_nodes(Mode::Paced(total / NODES as u64)).await?;
    let relay = start_relay(&cluster).await?;
    let (n, lat) = read(relay.addr.clone(), SECS, true).await?;
    println!(
        "relay at {total} flows/s offered ({:.0} received/s): p99 added latency {:.1} ms; relay peak RSS {:.1} MiB",
        n as f64 / measured,
        p99_ms(lat),
        relay.peak_rss_mib()
    );
    drop(relay);
    drop(cluster);

    // 4. Idle.
    let cluster = start_nodes(Mode::Paced(10)).await?;
    let relay = start_relay(&cluster).await?;
    let (n, lat) = read(relay.addr.clone(), SECS, true).await?;
    println!(
        "relay idle ({NODES} x 10 flows/s, {n} flows): p99 added latency {:.1} ms (sort delay 200 ms)",
        p99_ms(lat)
    );
    Ok(())
}

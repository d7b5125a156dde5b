//! Benchmark of the real agent with a full ring: RSS of `webb-agent` holding
//! 65,535 flows, and the time a 1%-selective GetFlows query takes over
//! loopback gRPC, and how fast the bare client and `webb observe` drain
//! the full ring, first sharing the CPUs with the agent, then on a CPU of
//! their own.
//!
//! `sudo target/release/webb-bench-agent` (after `cargo build --release --bins`)
//! (`WEBB_BENCH_HOLD=600` keeps the full agent up for 600 s, or until
//! Ctrl-C / SIGINT, before the drains, and prints its address, to profile a
//! reader by hand)
//!
//! The flows are real: a lab pod sends UDP datagrams to many ports of
//! another pod, and the agent's kernel programs report each (leaving the
//! client, entering the server, dropped by the kernel for want of a socket).

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use prost::Message as _;
use webb_proto::{
    flow::FlowFilter,
    observer::{GetFlowsRequest, GetFlowsResponse},
};
use webb_tests::{
    agent::AgentProcess,
    client,
    lab::{Lab, PodSpec, privileged_skip_reason},
};

/// The agent's default ring; `WEBB_BENCH_RING=N` sets another (a bigger
/// ring makes each drain longer, so fixed costs such as starting the CLI
/// weigh less in the ratios).
const RING: u64 = 65_535;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    if let Some(reason) = privileged_skip_reason() {
        anyhow::bail!("cannot run: {reason}");
    }
    let lab = Lab::new(&[
        PodSpec::new("shop", "client", "client"),
        PodSpec::new("shop", "server", "server"),
    ]);
    let ring: u64 = match std::env::var("WEBB_BENCH_RING") {
        Ok(v) => v
            .parse()
            .map_err(|e| anyhow::anyhow!("WEBB_BENCH_RING={v}: {e}"))?,
        Err(_) => RING,
    };
    let agent = AgentProcess::start(&lab, "bench-node", &["--ring-capacity", &ring.to_string()]);
    let pid = agent.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let idle_kib = rss_kib(pid);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    // Datagrams to many ports (30,000 for the default ring), paced so the
    // kernel ring never fills: each becomes three flows.
    let datagrams = ring * 30_000 / RING;
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range({}):\n    s.sendto(b'x',('{}',10000+i%50000))\n    \
         if i%500==0: time.sleep(0.01)\n",
        datagrams, s.ip
    );
    let out = c.run("python3", &["-c", &script]);
    anyhow::ensure!(
        out.status.success(),
        "traffic: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let start = Instant::now();
        let st = loop {
            let st = client::status(&agent.addr).await;
            if st.num_flows >= ring || start.elapsed() > Duration::from_secs(30) {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        anyhow::ensure!(st.num_flows == ring, "ring holds only {} flows", st.num_flows);
        let full_kib = rss_kib(pid);
        println!(
            "agent RSS: {:.1} MiB with a full {ring}-flow ring (idle {:.1} MiB); seen {} flows, lost {}",
            full_kib as f64 / 1024.0,
            idle_kib as f64 / 1024.0,
            st.seen_flows,
            st.webb_lost_events
        );
        // The query is timed on a settled agent: the traffic's flows keep
        // arriving for a while after the ring is full (reports of flows
        // still open), and ingest shares the 2 CPUs with the query.
        let settle = Instant::now();
        let mut seen = st.seen_flows;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = client::status(&agent.addr).await.seen_flows;
            if now == seen || settle.elapsed() > Duration::from_secs(30) {
                break;
            }
            seen = now;
        }
        println!(
            "settled after {:.1} s ({} flows seen since the ring was full)",
            settle.elapsed().as_secs_f64(),
            seen - st.seen_flows
        );
        // 1% of the flows: destination ports covering 1% of those in the
        // ring. The traffic above sent to ports 10000 + i % 50000, every one
        // of them among the ring's newest flows (computed, not read: reading
        // the whole ring first would weigh on the timed queries).
        let ports: Vec<u32> = (10000..10000 + datagrams.min(50_000) as u32).collect();
        let take = (ports.len() / 100).max(1);
        // From the middle: the lowest ports are the ring's oldest flows,
        // the first to go if a late packet adds a flow.
        let filter = FlowFilter {
            destination_port: ports
                .iter()
                .skip(ports.len() / 2)
                .take(take)
                .map(|p| p.to_string())
                .collect(),
            ..Default::default()
        };
        let mut times = Vec::new();
        let mut matched = 0;
        for _ in 0..9 {
            let t = Instant::now();
            let rs = client::responses(
                &agent.addr,
                GetFlowsRequest {
                    whitelist: vec![filter.clone()],
                    ..Default::default()
                },
            )
            .await;
            times.push(t.elapsed());
            matched = rs.len();
        }
        let each: Vec<String> = times
            .iter()
            .map(|t| format!("{:.0}", t.as_secs_f64() * 1e3))
            .collect();
        times.sort();
        println!(
            "query: 1%-selective filter ({take} of {} ports) over {ring} flows -> {matched} flows ({:.2}% of the ring), \
             median {:.1} ms, max {:.1} ms over loopback gRPC (each, in order: {} ms)",
            ports.len(),
            100.0 * matched as f64 / ring as f64,
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            each.join(", ")
        );
        // `WEBB_BENCH_HOLD=SECONDS`: keep the agent and its full ring up
        // that long first (Ctrl-C ends it early and still cleans up), to
        // profile a reader against it by hand.
        if let Some(secs) = std::env::var("WEBB_BENCH_HOLD").ok().and_then(|s| s.parse().ok()) {
            println!("holding {secs} s: agent (pid {pid}) at {}", agent.addr);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(secs)) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // The CLI next to the server: drain the whole ring with a bare gRPC
        // client (the server's rate), then with `webb observe --all` into
        // /dev/null in each output format. First as they come (reader and
        // agent share both CPUs), then with the agent on CPU 0 and the
        // reader on CPU 1, as when the CLI runs on a laptop and the server
        // in the cluster.
        drains(&agent.addr, pid, "shared CPUs").await?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus >= 2 {
            pin_process(pid, 0)?;
            pin_this_thread(1)?;
            drains(&agent.addr, pid, "agent on CPU 0, reader on CPU 1").await?;
        } else {
            println!("separate CPUs: skipped, this machine has {cpus} CPU");
        }
        anyhow::Ok(())
    })?;
    Ok(())
}

/// CPU time a process has used, all threads, in nanoseconds (schedstat).
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// User plus system time of this thread or of the children reaped so far.
fn rusage_ns(who: libc::c_int) -> u64 {
    // SAFETY: getrusage fills the zeroed rusage we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `who` is RUSAGE_THREAD or RUSAGE_CHILDREN.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0;
    }
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

/// Pins every thread of `pid` to `cpu`.
fn pin_process(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let st = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(st.success(), "taskset -a -p -c {cpu} {pid} failed");
    Ok(())
}

/// Pins the calling thread, and the processes it starts, to `cpu`.
fn pin_this_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity only read and write the set we own.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    anyhow::ensure!(
        rc == 0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// One drain: its wall time and the CPU time the reader and the agent spent.
#[derive(Clone, Copy)]
struct Drain {
    wall: Duration,
    reader_cpu: Duration,
    agent_cpu: Duration,
}

/// Readings taken when a drain starts.
struct DrainStart {
    pid: u32,
    who: libc::c_int,
    agent_ns: u64,
    reader_ns: u64,
    at: Instant,
}

impl DrainStart {
    /// `who` says whose CPU time is the reader's: this thread's
    /// (RUSAGE_THREAD) or that of the child processes (RUSAGE_CHILDREN).
    fn now(pid: u32, who: libc::c_int) -> Self {
        Self {
            pid,
            who,
            agent_ns: process_cpu_ns(pid),
            reader_ns: rusage_ns(who),
            at: Instant::now(),
        }
    }

    fn end(self) -> Drain {
        let wall = self.at.elapsed();
        Drain {
            wall,
            reader_cpu: Duration::from_nanos(rusage_ns(self.who).saturating_sub(self.reader_ns)),
            agent_cpu: Duration::from_nanos(process_cpu_ns(self.pid).saturating_sub(self.agent_ns)),
        }
    }
}

/// Reads every response of `GetFlows --all` as it arrives and drops it,
/// decoded or not: the least work a reader can do.
async fn bare_drain(addr: &str, decode: bool) -> anyhow::Result<usize> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let req = GetFlowsRequest {
        number: u64::MAX,
        ..Default::default()
    };
    let mut stream = webb_proto::undecoded::get_flows(channel, req, 64 << 20).await?;
    let mut n = 0;
    while let Some(bytes) = stream.next().await {
        let bytes = bytes?;
        if decode {
            GetFlowsResponse::decode(&bytes[..])?;
        }
        n += 1;
    }
    Ok(n)
}

/// Drains the full ring with bare in-process readers (the server's rate),
/// then with `webb observe --all -o FORMAT > /dev/null`, best of 3 each.
async fn drains(addr: &str, pid: u32, label: &str) -> anyhow::Result<()> {
    // Rounds of one drain per reader, interleaved, so each reader's drain is
    // compared with the bare reader's of the same round: the agent's own
    // speed drifts by 2x within a minute on a shared host.
    const ROUNDS: usize = 7;
    let readers = [
        Reader::Bare { decode: false },
        Reader::Bare { decode: true },
        Reader::Cli("json"),
        Reader::Cli("compact"),
        Reader::Cli("table"),
    ];
    let mut drains: Vec<Vec<Drain>> = vec![Vec::with_capacity(ROUNDS); readers.len()];
    let mut n = 0;
    for _ in 0..ROUNDS {
        for (reader, runs) in readers.iter().zip(&mut drains) {
            let (flows, d) = reader.drain(addr, pid).await?;
            n = flows.unwrap_or(n);
            runs.push(d);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let per_flow = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    let bare = &drains[0];
    println!("[{label}] {n} flows per drain; medians of {ROUNDS} interleaved rounds:");
    for (reader, runs) in readers.iter().zip(&drains) {
        let wall = median(runs.iter().map(|d| d.wall.as_secs_f64()).collect());
        let ratios: Vec<f64> = runs
            .iter()
            .zip(bare)
            .map(|(d, b)| d.wall.as_secs_f64() / b.wall.as_secs_f64())
            .collect();
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        println!(
            "[{label}] {reader}: {:.0} ms = {:.0} flows/s, {:.2}x the bare reader's time (rounds {lo:.2}-{hi:.2}); \
             CPU per flow: reader {:.2} us, agent {:.2} us; agent busy {:.0}% of the drain",
            wall * 1e3,
            n as f64 / wall,
            median(ratios.clone()),
            median(runs.iter().map(|d| per_flow(d.reader_cpu)).collect()),
            median(runs.iter().map(|d| per_flow(d.agent_cpu)).collect()),
            100.0
                * median(
                    runs.iter()
                        .map(|d| d.agent_cpu.as_secs_f64() / d.wall.as_secs_f64())
                        .collect()
                ),
        );
    }
    Ok(())
}

/// Who drains the ring.
enum Reader {
    /// An in-process gRPC reader that drops each response, decoded or not.
    Bare { decode: bool },
    /// `webb observe --all -o FORMAT > /dev/null`, a separate process.
    Cli(&'static str),
}

impl std::fmt::Display for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bare { decode: false } => {
                f.write_str("bare reader, drops the bytes (the server)")
            }
            Self::Bare { decode: true } => f.write_str("bare reader, prost-decodes each response"),
            Self::Cli(format) => write!(f, "webb observe --all -o {format} > /dev/null"),
        }
    }
}

impl Reader {
    /// The drain, and the flows read when this process counted them.
    async fn drain(&self, addr: &str, pid: u32) -> anyhow::Result<(Option<usize>, Drain)> {
        match self {
            Self::Bare { decode } => {
                let start = DrainStart::now(pid, libc::RUSAGE_THREAD);
                let n = bare_drain(addr, *decode).await?;
                Ok((Some(n), start.end()))
            }
            Self::Cli(format) => {
                let start = DrainStart::now(pid, libc::RUSAGE_CHILDREN);
                let st = std::process::Command::new(webb_tests::agent::binary("webb"))
                    .args([
                        "observe", "--all", "-o", format, "--color", "never", "--server", addr,
                    ])
                    .env("WEBB_CONFIG", "/dev/null")
                    .stdout(std::process::Stdio::null())
                    .status()?;
                let d = start.end();
                anyhow::ensure!(st.success(), "webb observe failed");
                Ok((None, d))
            }
        }
    }
}

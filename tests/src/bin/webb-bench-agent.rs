//! Benchmark of the real agent with a full ring: RSS of `webb-agent` holding
//! 65,535 flows, and the time a 1%-selective GetFlows query takes over
//! loopback gRPC.
//!
//! `sudo target/release/webb-bench-agent` (after `cargo build --release --bins`)
//!
//! The flows are real: a lab pod sends UDP datagrams to many ports of
//! another pod, and the agent's kernel programs report each (leaving the
//! client, entering the server, dropped by the kernel for want of a socket).

use std::time::{Duration, Instant};

use webb_proto::{flow::FlowFilter, observer::GetFlowsRequest};
use webb_tests::{
    agent::AgentProcess,
    client,
    lab::{Lab, PodSpec, privileged_skip_reason},
};

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
    let agent = AgentProcess::start(&lab, "bench-node", &["--ring-capacity", &RING.to_string()]);
    let pid = agent.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let idle_kib = rss_kib(pid);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    // 30,000 datagrams to distinct ports, paced so the kernel ring never
    // fills: each becomes three flows.
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range(30000):\n    s.sendto(b'x',('{}',10000+i))\n    \
         if i%500==0: time.sleep(0.01)\n",
        s.ip
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
            if st.num_flows >= RING || start.elapsed() > Duration::from_secs(30) {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        anyhow::ensure!(st.num_flows == RING, "ring holds only {} flows", st.num_flows);
        let full_kib = rss_kib(pid);
        println!(
            "agent RSS: {:.1} MiB with a full {RING}-flow ring (idle {:.1} MiB); seen {} flows, lost {}",
            full_kib as f64 / 1024.0,
            idle_kib as f64 / 1024.0,
            st.seen_flows,
            st.webb_lost_events
        );
        // 1% of the flows: destination ports covering 1% of those in the ring.
        let all = client::flows(&agent.addr, vec![]).await;
        let mut ports: Vec<u32> = all
            .iter()
            .filter_map(|f| match f.l4.as_ref()?.protocol.as_ref()? {
                webb_proto::flow::layer4::Protocol::Udp(u) => Some(u.destination_port),
                _ => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let take = (ports.len() / 100).max(1);
        let filter = FlowFilter {
            destination_port: ports.iter().take(take).map(|p| p.to_string()).collect(),
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
        times.sort();
        println!(
            "query: 1%-selective filter ({take} of {} ports) over {RING} flows -> {matched} flows ({:.2}% of the ring), \
             median {:.1} ms, max {:.1} ms over loopback gRPC",
            ports.len(),
            100.0 * matched as f64 / RING as f64,
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
        // The CLI next to the server: drain the whole ring with a bare gRPC
        // client (the server's rate), then with `webb observe --all` into
        // /dev/null in each output format.
        let mut raw = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let rs = client::responses(
                &agent.addr,
                GetFlowsRequest {
                    number: u64::MAX,
                    ..Default::default()
                },
            )
            .await;
            raw.push((rs.len(), t.elapsed()));
        }
        let (n, best) = raw.iter().min_by_key(|(_, d)| *d).copied().unwrap_or_default();
        println!(
            "server: GetFlows --all drains {n} flows in {:.0} ms = {:.0} flows/s (bare gRPC client, best of 3)",
            best.as_secs_f64() * 1e3,
            n as f64 / best.as_secs_f64()
        );
        for format in ["json", "compact", "table"] {
            let mut best = Duration::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                let st = std::process::Command::new(webb_tests::agent::binary("webb"))
                    .args(["observe", "--all", "-o", format, "--color", "never", "--server", &agent.addr])
                    .env("WEBB_CONFIG", "/dev/null")
                    .stdout(std::process::Stdio::null())
                    .status()?;
                anyhow::ensure!(st.success(), "webb observe failed");
                best = best.min(t.elapsed());
            }
            println!(
                "cli: webb observe --all -o {format} > /dev/null: {:.0} ms = {:.0} flows/s ({:.2}x the bare client's time)",
                best.as_secs_f64() * 1e3,
                n as f64 / best.as_secs_f64(),
                best.as_secs_f64() / raw.iter().map(|(_, d)| *d).min().unwrap_or_default().as_secs_f64()
            );
        }
        anyhow::Ok(())
    })?;
    Ok(())
}

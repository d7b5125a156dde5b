//! End-to-end tests of `webb top`: known traffic between lab pods, real
//! agents aggregating their own flows (webb.analysis.Analysis/Top), a real
//! relay merging them, and the real `webb top` CLI.

use std::time::{Duration, Instant};

use webb_proto::{
    analysis::{TopKey, TopPair, TopRequest, TopResponse, analysis_client::AnalysisClient},
    flow::FlowFilter,
    top::Figures,
    wkt::Timestamp,
};
use webb_tests::{
    agent::{AgentProcess, webb_ok},
    block_on,
    lab::{Lab, PodSpec},
    privileged,
    relay::RelayProcess,
    traffic::{ping, udp_send},
};

fn lab() -> Lab {
    Lab::new(&[
        PodSpec::new("shop", "client", "client"),
        PodSpec::new("shop", "server", "server"),
    ])
}

async fn top(addr: &str, req: TopRequest) -> TopResponse {
    let mut c = AnalysisClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    c.top(req).await.expect("Top").into_inner()
}

fn protocol(p: &str) -> Vec<FlowFilter> {
    vec![FlowFilter {
        protocol: vec![p.into()],
        ..Default::default()
    }]
}

/// Asks until `done` holds (the agents see the traffic a moment after it
/// is sent) and returns that answer; panics with the last one after 10 s.
fn top_until(addr: &str, req: TopRequest, done: impl Fn(&TopResponse) -> bool) -> TopResponse {
    block_on(async {
        let start = Instant::now();
        loop {
            let a = top(addr, req.clone()).await;
            if done(&a) {
                return a;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "not there after 10 s: {a:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn pair<'a>(a: &'a TopResponse, source: &str, destination: &str) -> &'a TopPair {
    a.pairs
        .iter()
        .find(|p| p.keys[0].source == source && p.keys[0].destination == destination)
        .unwrap_or_else(|| panic!("no pair {source} -> {destination}: {a:#?}"))
}

fn forward(p: &TopPair) -> (u64, u64) {
    let (s, d) = (
        p.forward_sent.unwrap_or_default(),
        p.forward_delivered.unwrap_or_default(),
    );
    (s.packets.max(d.packets), s.bytes.max(d.bytes))
}

fn reverse(p: &TopPair) -> (u64, u64) {
    let (s, d) = (
        p.reverse_sent.unwrap_or_default(),
        p.reverse_delivered.unwrap_or_default(),
    );
    (s.packets.max(d.packets), s.bytes.max(d.bytes))
}

/// A short flush interval: the datapath reports a busy 5-tuple's counters
/// again on its next packet once this long has passed, so each ping (0.2 s
/// apart) carries the counts so far.
const FLUSH: [&str; 2] = ["--flush-interval", "100ms"];

fn by_workload(since: Timestamp, proto: &str) -> TopRequest {
    TopRequest {
        by: vec![TopKey::Workload as i32],
        since: Some(since),
        whitelist: protocol(proto),
        ..Default::default()
    }
}

fn now() -> Timestamp {
    Timestamp::from(std::time::SystemTime::now())
}

#[test]
fn an_agents_top_sums_equal_the_traffic_sent() {
    let Some(_g) = privileged() else { return };
    let lab = lab();
    let agent = AgentProcess::start(&lab, "lab-node-1", &FLUSH);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    let server_ip = s.ip.to_string();

    // 4 echo requests and their 4 replies: one 5-tuple each way, 98-byte
    // frames (14 Ethernet + 20 IP + 8 ICMP + 56 data), the replies counted
    // on the requests' pair.
    let since = now();
    assert!(ping(c, &server_ip, 4));
    let icmp = top_until(&agent.addr, by_workload(since, "icmp"), |a| {
        a.pairs.iter().any(|p| reverse(p).0 >= 4)
    });
    let p = pair(&icmp, "shop/client", "shop/server");
    assert_eq!(forward(p), (4, 4 * 98), "{p:#?}");
    assert_eq!(reverse(p), (4, 4 * 98), "{p:#?}");
    assert_eq!(p.drops, 0);
    assert!(
        !icmp
            .pairs
            .iter()
            .any(|p| p.keys[0].source == "shop/server" && p.keys[0].destination == "shop/client"),
        "replies are not a pair of their own: {icmp:#?}"
    );
    let f = Figures::of(p);
    assert_eq!((f.packets, f.bytes), (8, 8 * 98));
    assert_eq!(icmp.nodes, ["lab-node-1"]);

    // 6 datagrams, each from its own socket: 6 one-packet 5-tuples of 45-byte
    // frames (14 + 20 IP + 8 UDP + 3 data), to ports nothing listens on, so
    // the server's kernel drops each (its drop counted, its bytes once).
    let since = now();
    for port in 24000..24006 {
        udp_send(c, &server_ip, port);
    }
    let udp = top_until(&agent.addr, by_workload(since, "udp"), |a| {
        a.pairs.iter().any(|p| p.drops >= 6)
    });
    let p = pair(&udp, "shop/client", "shop/server");
    assert_eq!(forward(p), (6, 6 * 45), "{p:#?}");
    assert_eq!(reverse(p), (0, 0), "{p:#?}");
    assert_eq!(p.drops, 6, "{p:#?}");
    assert_eq!(udp.pairs.len(), 1, "{udp:#?}");

    // By port: one pair per destination port, each one datagram.
    let by_port = TopRequest {
        by: vec![TopKey::Workload as i32, TopKey::Port as i32],
        ..by_workload(since, "udp")
    };
    let a = block_on(top(&agent.addr, by_port));
    let mut ports: Vec<(String, u64)> = a
        .pairs
        .iter()
        .map(|p| (p.keys[1].pair.clone(), forward(p).0))
        .collect();
    ports.sort();
    let want: Vec<(String, u64)> = (24000..24006).map(|p| (format!("{p}/UDP"), 1)).collect();
    assert_eq!(ports, want);

    // --until before the traffic: nothing.
    let before = TopRequest {
        until: Some(since),
        ..by_workload(
            Timestamp {
                seconds: since.seconds - 60,
                nanos: 0,
            },
            "udp",
        )
    };
    let a = block_on(top(&agent.addr, before));
    assert!(a.pairs.is_empty(), "{a:#?}");
}

#[test]
fn the_relay_merges_the_agents_tops_and_names_a_dead_node() {
    let Some(_g) = privileged() else { return };
    let labs = [lab(), lab()];
    let agents: Vec<AgentProcess> = labs
        .iter()
        .enumerate()
        .map(|(i, l)| AgentProcess::start(l, &format!("lab-node-{}", i + 1), &FLUSH))
        .collect();
    let mut peers = Vec::new();
    for a in &agents {
        peers.extend(["--peer", a.addr.as_str()]);
    }
    let relay = RelayProcess::start(&peers);
    let since = now();
    // 3 datagrams on node 1, 5 on node 2.
    for (lab, n) in labs.iter().zip([3u16, 5]) {
        let (c, s) = (lab.pod("client"), lab.pod("server"));
        for port in 0..n {
            udp_send(c, &s.ip.to_string(), 25000 + port);
        }
    }
    let a = top_until(&relay.addr, by_workload(since, "udp"), |a| {
        a.pairs.iter().any(|p| p.drops >= 8)
    });
    let mut nodes = a.nodes.clone();
    nodes.sort();
    assert_eq!(nodes, ["lab-node-1", "lab-node-2"]);
    assert!(a.unavailable_nodes.is_empty(), "{a:#?}");
    let p = pair(&a, "shop/client", "shop/server");
    assert_eq!(forward(p), (8, 8 * 45), "{p:#?}");
    assert_eq!(p.drops, 8);

    // By node: each node's own share.
    let by_node = TopRequest {
        by: vec![TopKey::Node as i32],
        ..by_workload(since, "udp")
    };
    let a = block_on(top(&relay.addr, by_node));
    let mut per_node: Vec<(String, u64)> = a
        .pairs
        .iter()
        .map(|p| (p.keys[0].pair.clone(), forward(p).0))
        .collect();
    per_node.sort();
    assert_eq!(
        per_node,
        [("lab-node-1".to_owned(), 3), ("lab-node-2".to_owned(), 5)]
    );

    // The CLI, as a script uses it.
    let since_text = format!("{}", since);
    let out = webb_ok(&[
        "top",
        "--server",
        &relay.addr,
        "--since",
        &since_text,
        "--protocol",
        "udp",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    let pairs = v["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 1, "{v}");
    assert_eq!(pairs[0]["source"]["workload"], "shop/client", "{v}");
    assert_eq!(pairs[0]["destination"]["workload"], "shop/server", "{v}");
    assert_eq!(pairs[0]["packets"], 8, "{v}");
    assert_eq!(pairs[0]["bytes"], 8 * 45, "{v}");
    assert_eq!(pairs[0]["drops"], 8, "{v}");
    let table = webb_ok(&[
        "top",
        "--server",
        &relay.addr,
        "--since",
        &since_text,
        "--protocol",
        "udp",
        "--by",
        "node",
    ]);
    assert!(
        table.contains("lab-node-1") && table.contains("lab-node-2"),
        "{table}"
    );

    // A node that stops answering is named, and the rest still answers.
    let mut agents = agents;
    let dead = agents.pop().expect("two agents");
    dead.stop();
    let a = top_until(&relay.addr, by_workload(since, "udp"), |a| {
        !a.unavailable_nodes.is_empty()
    });
    assert_eq!(a.nodes, ["lab-node-1"], "{a:#?}");
    assert_eq!(forward(pair(&a, "shop/client", "shop/server")).0, 3);
}

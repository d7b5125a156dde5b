//! End-to-end tests of webb-relay: three lab "nodes" (each its own bridge,
//! pods and real `webb-agent`), the real relay binary, real clients.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use webb_proto::{
    flow::FlowFilter,
    observer::{
        GetFlowsRequest, GetFlowsResponse, get_flows_response::ResponseTypes,
        observer_client::ObserverClient,
    },
    relay::NodeState,
};
use webb_tests::{
    agent::AgentProcess,
    block_on, client,
    lab::{Lab, PodSpec},
    privileged,
    relay::RelayProcess,
    traffic::ping,
};

fn flow_node(r: &GetFlowsResponse) -> Option<&str> {
    match &r.response_types {
        Some(ResponseTypes::Flow(f)) => Some(f.node_name.as_str()),
        _ => None,
    }
}

#[test]
fn relay_merges_nodes_in_time_order_and_survives_a_dead_node() {
    let Some(_g) = privileged() else { return };
    let labs: Vec<Lab> = (0..3)
        .map(|_| {
            Lab::new(&[
                PodSpec::new("shop", "client", "client"),
                PodSpec::new("shop", "server", "server"),
            ])
        })
        .collect();
    let mut agents: Vec<Option<AgentProcess>> = labs
        .iter()
        .enumerate()
        .map(|(i, lab)| {
            Some(AgentProcess::start(
                lab,
                &format!("lab-node-{}", i + 1),
                &[],
            ))
        })
        .collect();
    let addrs: Vec<String> = agents
        .iter()
        .map(|a| a.as_ref().unwrap().addr.clone())
        .collect();
    let mut peers = Vec::new();
    for a in &addrs {
        peers.extend(["--peer", a.as_str()]);
    }
    let metrics_addr = format!("127.0.0.1:{}", webb_tests::agent::free_port());
    peers.extend(["--metrics-listen", metrics_addr.as_str()]);
    let relay = RelayProcess::start(&peers);

    // Status: three connected nodes, named by the agents themselves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = block_on(client::status(&relay.addr));
        if st.num_connected_nodes.map(|n| n.value) == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "nodes not connected: {st:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Agent events: the cluster's newest two, not two per node.
    let text = webb_tests::agent::webb_ok(&[
        "observe",
        "agent-events",
        "--server",
        &relay.addr,
        "--last",
        "2",
    ]);
    assert_eq!(text.lines().count(), 2, "{text}");

    // Traffic on every node, interleaved in time.
    for _ in 0..3 {
        for lab in &labs {
            let (c, s) = (lab.pod("client"), lab.pod("server"));
            assert!(ping(c, &s.ip.to_string(), 1));
        }
    }
    std::thread::sleep(Duration::from_millis(500));

    block_on(async {
        // History through the relay: every node present, in time order.
        let rs = client::responses(
            &relay.addr,
            GetFlowsRequest {
                number: u64::MAX,
                ..Default::default()
            },
        )
        .await;
        let flows = client::only_flows(rs);
        for n in ["lab-node-1", "lab-node-2", "lab-node-3"] {
            assert!(flows.iter().any(|f| f.node_name == n), "no flow from {n}");
        }
        let times: Vec<_> = flows.iter().map(|f| f.time.unwrap()).collect();
        // The merge keeps each node's order, and an agent publishes in the
        // order it drains its kernel ring, which under load can put a flow
        // a few microseconds before one stamped earlier on another CPU. So
        // the merged history may step back only as far as some node's own
        // stream steps back (none at all when every node is sorted).
        let step_back = |ts: &[webb_proto::wkt::Timestamp]| {
            ts.windows(2)
                .map(|w| (w[0].as_nanos() - w[1].as_nanos()).max(0))
                .max()
                .unwrap_or(0)
        };
        let own = ["lab-node-1", "lab-node-2", "lab-node-3"]
            .iter()
            .map(|n| {
                let ts: Vec<_> = flows
                    .iter()
                    .filter(|f| f.node_name == *n)
                    .map(|f| f.time.unwrap())
                    .collect();
                step_back(&ts)
            })
            .max()
            .unwrap_or(0);
        assert!(
            step_back(&times) <= own,
            "merged history out of order: steps back {} ns, the nodes' own streams {own} ns",
            step_back(&times)
        );

        // --last N is the cluster's newest N (Hubble's relay gives N per
        // node), and --first N its oldest N.
        assert!(flows.len() > 10, "{} flows", flows.len());
        for first in [false, true] {
            let rs = client::responses(
                &relay.addr,
                GetFlowsRequest {
                    number: 5,
                    first,
                    ..Default::default()
                },
            )
            .await;
            let got: Vec<_> = client::only_flows(rs)
                .iter()
                .map(|f| f.time.unwrap())
                .collect();
            assert_eq!(got.len(), 5, "first={first}: {got:?}");
            assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
            if first {
                assert_eq!(got[..], times[..5], "the oldest 5");
            } else {
                // Flows may have arrived since the full listing; none of
                // the five may be older than its newest five.
                assert!(
                    got[0].as_nanos() >= times[times.len() - 5].as_nanos() - own,
                    "{got:?}"
                );
            }
        }

        // --last 5 --follow: the cluster's newest 5 too, then live. The
        // agents mark where their history ends, so the relay sends them
        // without waiting out its bound for agents that mark nothing.
        let mut c = client::connect(&relay.addr).await;
        let began = Instant::now();
        let mut s = c
            .get_flows(GetFlowsRequest {
                number: 5,
                follow: true,
                ..Default::default()
            })
            .await
            .expect("GetFlows")
            .into_inner();
        let mut got = Vec::new();
        while got.len() < 5 {
            match tokio::time::timeout(Duration::from_secs(10), s.next()).await {
                Ok(Some(Ok(r))) => {
                    if let Some(ResponseTypes::Flow(f)) = r.response_types {
                        got.push(f.time.unwrap());
                    }
                }
                other => panic!("--last 5 --follow after {got:?}: {other:?}"),
            }
        }
        let waited = began.elapsed();
        assert!(waited < Duration::from_secs(3), "held {waited:?}");
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
        assert!(
            got[0].as_nanos() >= times[times.len() - 5].as_nanos() - own,
            "not the newest 5 of {} flows: {got:?}",
            times.len()
        );
        drop(s);

        // GetNodes names and counts them (counts refresh every second).
        let mut c = ObserverClient::connect(format!("http://{}", relay.addr))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let nodes = loop {
            let nodes = c
                .get_nodes(webb_proto::observer::GetNodesRequest {})
                .await
                .unwrap()
                .into_inner()
                .nodes;
            if nodes.iter().all(|n| n.seen_flows > 0) || Instant::now() > deadline {
                break nodes;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut names: Vec<_> = nodes.iter().map(|n| n.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["lab-node-1", "lab-node-2", "lab-node-3"]);
        assert!(
            nodes
                .iter()
                .all(|n| n.state == NodeState::NodeConnected as i32 && n.seen_flows > 0)
        );
    });

    // The relay's own metrics say as much.
    let out = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{metrics_addr}/metrics")])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#"webb_relay_nodes{state="connected"} 3"#),
        "{text}"
    );
    let forwarded: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("webb_relay_flows_forwarded_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(forwarded > 0.0, "{text}");
    assert!(
        text.contains("webb_relay_merge_delay_seconds_count"),
        "{text}"
    );

    // A live follow: kill -9 one agent; within 5 s the stream says so and
    // status agrees, while the others keep streaming.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, GetFlowsResponse)>();
    let relay_addr = relay.addr.clone();
    rt.spawn(async move {
        let mut c = ObserverClient::connect(format!("http://{relay_addr}"))
            .await
            .unwrap();
        let mut s = c
            .get_flows(GetFlowsRequest {
                follow: true,
                whitelist: vec![FlowFilter {
                    protocol: vec!["icmp".into()],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        while let Some(Ok(r)) = s.next().await {
            if tx.send((Instant::now(), r)).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut victim = agents[1].take().unwrap();
    let killed_at = Instant::now();
    // SAFETY: SIGKILL to our own child.
    unsafe { libc::kill(victim.child.as_ref().unwrap().id() as i32, libc::SIGKILL) };
    let _ = victim.child.take().unwrap().wait();
    drop(victim);
    // Keep traffic flowing on the survivors.
    let mut saw_unavailable = None;
    let mut survivors_after = std::collections::BTreeSet::new();
    while killed_at.elapsed() < Duration::from_secs(6) {
        for i in [0, 2] {
            let (c, s) = (labs[i].pod("client"), labs[i].pod("server"));
            ping(c, &s.ip.to_string(), 1);
        }
        while let Ok((at, r)) = rx.try_recv() {
            if let Some(ResponseTypes::NodeStatus(ns)) = &r.response_types
                && ns.state_change == NodeState::NodeUnavailable as i32
                && ns.node_names.iter().any(|n| n == "lab-node-2")
            {
                saw_unavailable.get_or_insert(at.duration_since(killed_at));
            }
            if let Some(n) = flow_node(&r)
                && at > killed_at + Duration::from_secs(1)
            {
                survivors_after.insert(n.to_owned());
            }
        }
    }
    let took = saw_unavailable.unwrap_or_else(|| {
        panic!(
            "no NODE_UNAVAILABLE for lab-node-2 in the stream:\n{}",
            relay.log_text()
        )
    });
    assert!(
        took <= Duration::from_secs(5),
        "unavailable reported after {took:?}"
    );
    assert!(
        survivors_after.contains("lab-node-1") && survivors_after.contains("lab-node-3"),
        "{survivors_after:?}"
    );
    let st = block_on(client::status(&relay.addr));
    assert_eq!(st.num_unavailable_nodes.map(|n| n.value), Some(1));
    assert_eq!(st.unavailable_nodes, ["lab-node-2"]);

    // Restart it on the same address: its flows come back in the same stream.
    let port = addrs[1].rsplit(':').next().unwrap();
    let restarted = AgentProcess::start_on(&labs[1], "lab-node-2", port.parse().unwrap(), &[]);
    agents[1] = Some(restarted);
    let back = Instant::now();
    let mut resumed = false;
    while back.elapsed() < Duration::from_secs(10) && !resumed {
        let (c, s) = (labs[1].pod("client"), labs[1].pod("server"));
        ping(c, &s.ip.to_string(), 1);
        while let Ok((_, r)) = rx.try_recv() {
            if flow_node(&r) == Some("lab-node-2") {
                resumed = true;
            }
        }
    }
    assert!(
        resumed,
        "lab-node-2's flows did not resume:\n{}",
        relay.log_text()
    );
    drop(rx);
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// Flows' (node, time) in the order received.
fn flow_times(rs: &[GetFlowsResponse]) -> Vec<(String, (i64, i32))> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) => {
                let t = f.time.unwrap_or_default();
                Some((f.node_name.clone(), (t.seconds, t.nanos)))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_relay_reads_every_nodes_flow_store_merged_in_time_order() {
    let Some(_g) = privileged() else { return };
    let labs: Vec<Lab> = (0..2)
        .map(|_| {
            Lab::new(&[
                PodSpec::new("shop", "client", "client"),
                PodSpec::new("shop", "server", "server"),
            ])
        })
        .collect();
    // Rings of 8 flows: what the query returns comes from the stores.
    let agents: Vec<AgentProcess> = labs
        .iter()
        .enumerate()
        .map(|(i, lab)| {
            let store = lab.dir.join("flows");
            AgentProcess::start(
                lab,
                &format!("lab-node-{}", i + 1),
                &[
                    "--ring-capacity",
                    "8",
                    "--flow-store",
                    store.to_str().unwrap(),
                ],
            )
        })
        .collect();
    let mut peers = Vec::new();
    for a in &agents {
        peers.extend(["--peer", a.addr.as_str()]);
    }
    let relay = RelayProcess::start(&peers);
    let since = webb_proto::wkt::Timestamp::from(std::time::SystemTime::now());
    // Interleaved traffic: 5 UDP datagrams a node, to distinct ports.
    for port in 23000..23005 {
        for lab in &labs {
            let (c, s) = (lab.pod("client"), lab.pod("server"));
            webb_tests::traffic::udp_send(c, &s.ip.to_string(), port);
        }
    }
    let query = GetFlowsRequest {
        since: Some(since),
        whitelist: vec![FlowFilter {
            protocol: vec!["udp".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let (direct, through) = block_on(async {
        let start = Instant::now();
        loop {
            let mut direct = Vec::new();
            for a in &agents {
                direct.extend(flow_times(&client::responses(&a.addr, query.clone()).await));
            }
            let through = client::responses(&relay.addr, query.clone()).await;
            let per_node = |n: &str| direct.iter().filter(|(node, _)| node == n).count();
            if per_node("lab-node-1") >= 10 && per_node("lab-node-2") >= 10 {
                let t = flow_times(&through);
                if t.len() == direct.len() {
                    break (direct, through);
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} flows from the agents, {} through the relay",
                direct.len(),
                flow_times(&through).len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    // Far more than the rings hold: the stores answered, on both nodes.
    assert!(direct.len() >= 20, "{}", direct.len());
    assert!(
        through
            .iter()
            .all(|r| !matches!(r.response_types, Some(ResponseTypes::LostEvents(_)))),
        "nothing is reported lost: the stores hold it all"
    );
    let t = flow_times(&through);
    // Every node's stored flows, each once, merged in time order.
    let mut want = direct.clone();
    want.sort_by_key(|(_, t)| *t);
    let mut got_sorted = t.clone();
    got_sorted.sort_by_key(|(_, t)| *t);
    assert_eq!(got_sorted, want);
    assert!(
        t.windows(2).all(|w| w[0].1 <= w[1].1),
        "not in time order: {t:?}"
    );
    for node in ["lab-node-1", "lab-node-2"] {
        assert!(
            t.iter().filter(|(n, _)| n == node).count() >= 10,
            "{node}: {t:?}"
        );
    }
}

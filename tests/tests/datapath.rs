//! End-to-end tests of what the datapath reports per packet: one TCP
//! connection carrying one HTTP request (real curl, the lab's real HTTP
//! server) between two lab pods, on one node and on two, through the real
//! kernel programs and the agents' real gRPC. Each packet state change is
//! reported once per node and point as Cilium reports it (from-endpoint
//! where a packet leaves its pod, to-endpoint where it is delivered), the
//! request and the response once per node, and the packets and bytes the
//! reports carry add up to what the pods' interfaces counted.

use std::{collections::BTreeMap, time::Duration};

use webb_proto::flow::{
    Flow, FlowFilter, FlowType, L7FlowType, TraceObservationPoint, Verdict, layer4::Protocol,
};
use webb_tests::{
    agent::AgentProcess,
    block_on, client,
    lab::{Lab, Pod, PodSpec},
    privileged,
    traffic::http_server,
};

const PORT: u16 = 8080;

fn lab() -> Lab {
    let lab = Lab::new(&[
        PodSpec::new("shop", "client", "client"),
        PodSpec::new("shop", "server", "server"),
    ]);
    // Only the connection under test leaves the pods: no IPv6 (router and
    // neighbour solicitations), and each knows the other's MAC address for
    // good (no ARP). What arrives may still include the bridge's own
    // broadcasts, so what a pod sent is the measure.
    let mac = |p: &Pod| {
        let out = p.run("cat", &["/sys/class/net/eth0/address"]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    for (from, to) in [(c, s), (s, c)] {
        from.run("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        let out = from.run(
            "ip",
            &[
                "neigh",
                "replace",
                &to.ip.to_string(),
                "lladdr",
                &mac(to),
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
        assert!(out.status.success(), "ip neigh in {}: {out:?}", from.name);
    }
    lab
}

/// What the pod's `eth0` has sent: (frames, bytes), Ethernet header
/// included, as TC on the host side of its veth sees them.
fn sent(pod: &Pod) -> (u64, u64) {
    let read = |name: &str| -> u64 {
        let out = pod.run("cat", &[&format!("/sys/class/net/eth0/statistics/{name}")]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} of {}: {out:?}", pod.name))
    };
    (read("tx_packets"), read("tx_bytes"))
}

fn minus(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0 - b.0, a.1 - b.1)
}

/// One HTTP/1.1 request on one connection, closed after the response.
fn one_request(c: &Pod, s: &Pod) {
    let url = format!("http://{}:{PORT}/ok/datapath", s.ip);
    let out = c.run(
        "curl",
        &["-sS", "-o", "/dev/null", "-H", "Connection: close", &url],
    );
    assert!(out.status.success(), "curl: {out:?}");
}

fn point(f: &Flow) -> TraceObservationPoint {
    TraceObservationPoint::try_from(f.trace_observation_point)
        .unwrap_or(TraceObservationPoint::UnknownPoint)
}

fn tcp_flags(f: &Flow) -> String {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => {
            let x = t.flags.unwrap_or_default();
            [
                (x.syn, "SYN"),
                (x.ack, "ACK"),
                (x.psh, "PSH"),
                (x.fin, "FIN"),
                (x.rst, "RST"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join("|")
        }
        _ => String::new(),
    }
}

fn to_server(f: &Flow) -> bool {
    match f.l4.as_ref().and_then(|l| l.protocol.as_ref()) {
        Some(Protocol::Tcp(t)) => t.destination_port == u32::from(PORT),
        _ => false,
    }
}

/// A node's flows of the connection, once its last report is in: each
/// side's FIN and the packets after it.
fn connection_flows(agent: &AgentProcess, want_closed: usize) -> Vec<Flow> {
    let to = FlowFilter {
        destination_port: vec![PORT.to_string()],
        ..Default::default()
    };
    let from = FlowFilter {
        source_port: vec![PORT.to_string()],
        ..Default::default()
    };
    block_on(client::wait_for(
        &agent.addr,
        vec![to, from],
        Duration::from_secs(10),
        |fl| {
            let l3 = fl.iter().filter(|f| f.r#type == FlowType::L3L4 as i32);
            let fins = l3.filter(|f| tcp_flags(f).contains("FIN")).count();
            let l7 = fl
                .iter()
                .filter(|f| f.r#type == FlowType::L7 as i32)
                .count();
            fins >= want_closed && l7 >= 2
        },
    ))
}

/// Per (point, direction): the reports, as (emit reason, TCP flags) lines.
type Reports = BTreeMap<(String, &'static str), Vec<String>>;

fn reports(flows: &[Flow]) -> Reports {
    let mut out = Reports::new();
    for f in flows.iter().filter(|f| f.r#type == FlowType::L3L4 as i32) {
        assert_eq!(f.verdict, Verdict::Forwarded as i32, "{f:?}");
        let dir = if to_server(f) { "request" } else { "reply" };
        out.entry((format!("{:?}", point(f)), dir))
            .or_default()
            .push(tcp_flags(f));
    }
    out
}

/// Sums the packets and bytes reported per (point, direction).
fn traffic(flows: &[Flow]) -> BTreeMap<(String, &'static str), (u64, u64)> {
    let mut out = BTreeMap::new();
    for f in flows.iter().filter(|f| f.r#type == FlowType::L3L4 as i32) {
        let dir = if to_server(f) { "request" } else { "reply" };
        let e = out
            .entry((format!("{:?}", point(f)), dir))
            .or_insert((0, 0));
        e.0 += f.webb_packets;
        e.1 += f.webb_bytes;
    }
    out
}

/// Each state change of a direction at a point once: its SYN, its FIN, and
/// (the closing) each packet after its FIN, none of them twice.
fn assert_once_per_state_change(r: &Reports) {
    for (k, lines) in r {
        let syns = lines.iter().filter(|l| l.contains("SYN")).count();
        let fins = lines.iter().filter(|l| l.contains("FIN")).count();
        assert_eq!(syns, 1, "{k:?}: {lines:?}");
        assert_eq!(fins, 1, "{k:?}: {lines:?}");
        assert!(
            lines[0].contains("SYN"),
            "{k:?} starts with its SYN: {lines:?}"
        );
        let fin_at = lines.iter().position(|l| l.contains("FIN")).unwrap_or(0);
        assert!(
            lines.len() - fin_at <= 3,
            "{k:?}: at most the FIN and the packets closing after it: {lines:?}"
        );
    }
}

fn l7(flows: &[Flow]) -> (usize, usize) {
    let l7: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.r#type == FlowType::L7 as i32)
        .collect();
    let responses = l7
        .iter()
        .filter(|f| {
            f.l7.as_ref()
                .is_some_and(|l| l.r#type == L7FlowType::Response as i32 && l.latency_ns > 0)
        })
        .count();
    (l7.len() - responses, responses)
}

#[test]
fn one_node_reports_each_packet_once_per_point_and_each_message_once() {
    let Some(_g) = privileged() else { return };
    let lab = lab();
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    let _http = http_server(s, PORT, 0);
    let (c0, s0) = (sent(c), sent(s));
    one_request(c, s);
    let _ = connection_flows(&agent, 4);
    // Give the last closing reports (the final ACK) a moment to arrive.
    std::thread::sleep(Duration::from_millis(500));
    let flows = connection_flows(&agent, 4);
    let (requests, replies) = (minus(sent(c), c0), minus(sent(s), s0));

    let r = reports(&flows);
    let keys: Vec<_> = r.keys().cloned().collect();
    assert_eq!(
        keys,
        [
            ("FromEndpoint".to_owned(), "reply"),
            ("FromEndpoint".to_owned(), "request"),
            ("ToEndpoint".to_owned(), "reply"),
            ("ToEndpoint".to_owned(), "request"),
        ],
        "from-endpoint and to-endpoint, each direction, nothing from the cgroup programs: {r:#?}"
    );
    assert_once_per_state_change(&r);
    // One request and one response, with its latency, for the node.
    assert_eq!(l7(&flows), (1, 1), "{flows:#?}");

    // The counts the reports carried are what the pods sent, leaving the
    // sender and entering the receiver alike.
    let t = traffic(&flows);
    let at = |p: &str, d| t[&(p.to_owned(), d)];
    assert_eq!(at("FromEndpoint", "request"), requests, "{t:?}");
    assert_eq!(at("ToEndpoint", "request"), requests, "{t:?}");
    assert_eq!(at("FromEndpoint", "reply"), replies, "{t:?}");
    assert_eq!(at("ToEndpoint", "reply"), replies, "{t:?}");
    drop(agent);
}

#[test]
fn two_nodes_report_each_packet_once_per_node_and_each_message_once_each() {
    let Some(_g) = privileged() else { return };
    let lab = lab();
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    // Two agents on the lab's kernel, each with one pod of its own and the
    // other known as a pod of another node.
    let node = |local: &Pod, remote: &Pod, file: &str| {
        let mut y = format!("host_ips: [{}]\nendpoints:\n", lab.host_ip);
        local.write_endpoint(&mut y, true);
        remote.write_endpoint(&mut y, false);
        let path = lab.dir.join(file);
        std::fs::write(&path, y).expect("endpoints file");
        path
    };
    let e1 = node(c, s, "node-1.yaml");
    let e2 = node(s, c, "node-2.yaml");
    let a1 = AgentProcess::start_with_endpoints(&lab, "lab-node-1", &e1, &["--shared-kernel"]);
    let a2 = AgentProcess::start_with_endpoints(&lab, "lab-node-2", &e2, &["--shared-kernel"]);
    let _http = http_server(s, PORT, 0);
    let (c0, s0) = (sent(c), sent(s));
    one_request(c, s);
    let _ = (connection_flows(&a1, 2), connection_flows(&a2, 2));
    std::thread::sleep(Duration::from_millis(500));
    let (f1, f2) = (connection_flows(&a1, 2), connection_flows(&a2, 2));
    let (requests, replies) = (minus(sent(c), c0), minus(sent(s), s0));

    let (r1, r2) = (reports(&f1), reports(&f2));
    let keys = |r: &Reports| r.keys().cloned().collect::<Vec<_>>();
    // Node 1 sees the request leave the client and the reply delivered to
    // it; node 2 the request delivered to the server and the reply leave it.
    assert_eq!(
        keys(&r1),
        [
            ("FromEndpoint".to_owned(), "request"),
            ("ToEndpoint".to_owned(), "reply"),
        ],
        "{r1:#?}"
    );
    assert_eq!(
        keys(&r2),
        [
            ("FromEndpoint".to_owned(), "reply"),
            ("ToEndpoint".to_owned(), "request"),
        ],
        "{r2:#?}"
    );
    assert_once_per_state_change(&r1);
    assert_once_per_state_change(&r2);
    assert_eq!(l7(&f1), (1, 1), "node 1: {f1:#?}");
    assert_eq!(l7(&f2), (1, 1), "node 2: {f2:#?}");

    let (t1, t2) = (traffic(&f1), traffic(&f2));
    let at = |t: &BTreeMap<_, _>, p: &str, d| t[&(p.to_owned(), d)];
    assert_eq!(at(&t1, "FromEndpoint", "request"), requests, "{t1:?}");
    assert_eq!(at(&t1, "ToEndpoint", "reply"), replies, "{t1:?}");
    assert_eq!(at(&t2, "ToEndpoint", "request"), requests, "{t2:?}");
    assert_eq!(at(&t2, "FromEndpoint", "reply"), replies, "{t2:?}");
}

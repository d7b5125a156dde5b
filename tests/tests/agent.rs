//! End-to-end tests of the node agent: a lab of network namespaces, the real
//! `webb-agent` binary with its real kernel programs, real traffic (ping,
//! socat), and assertions over real gRPC.
//!
//! The tests need root and a kernel with BTF; elsewhere each prints why it
//! skipped. They run one at a time (the datapath is per machine).

use std::{
    os::unix::fs::MetadataExt as _,
    process::Command,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use webb_proto::{
    flow::{
        DropReason, Flow, FlowFilter, LostEventSource, TraceObservationPoint, TrafficDirection,
        Verdict, layer4::Protocol,
    },
    observer::{GetFlowsRequest, get_flows_response::ResponseTypes},
    wkt::Timestamp,
};
use webb_tests::{
    agent::{AgentProcess, binary},
    block_on, client,
    lab::{Lab, Pod, PodSpec},
    privileged,
    traffic::{Background, listen_tcp, ping, tcp_send, udp_send},
};

fn two_pods() -> Lab {
    Lab::new(&[
        PodSpec::new("shop", "client", "client"),
        PodSpec::new("shop", "server", "server"),
    ])
}

fn pod_filter(pod: &Pod) -> FlowFilter {
    FlowFilter {
        source_pod: vec![format!("{}/{}", pod.namespace, pod.name)],
        ..Default::default()
    }
}

fn tcp(f: &Flow) -> Option<&webb_proto::flow::Tcp> {
    match f.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(t) => Some(t),
        _ => None,
    }
}

fn point(f: &Flow) -> TraceObservationPoint {
    TraceObservationPoint::try_from(f.trace_observation_point).unwrap_or_default()
}

#[test]
fn ping_tcp_and_udp_become_forwarded_flows() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    let server_ip = s.ip.to_string();

    assert!(ping(c, &server_ip, 2), "ping inside the lab works");
    let _listener = listen_tcp(s, 8080);
    assert!(tcp_send(c, &server_ip, 8080, 3), "TCP connection works");
    let _udp = Background(
        s.cmd("socat", &["-u", "UDP-RECV:9999", "OPEN:/dev/null"])
            .spawn()
            .expect("udp listener"),
    );
    std::thread::sleep(Duration::from_millis(200));
    udp_send(c, &server_ip, 9999);

    block_on(async {
        let timeout = Duration::from_secs(5);
        let all = client::wait_for(&agent.addr, vec![], timeout, |fl| {
            fl.iter().any(|f| tcp(f).is_some_and(|t| t.flags.as_ref().is_some_and(|x| x.fin)))
                && fl.iter().any(|f| matches!(f.l4.as_ref().and_then(|l| l.protocol.as_ref()), Some(Protocol::Udp(u)) if u.destination_port == 9999))
        })
        .await;
        for f in &all {
            assert_eq!(f.node_name, "lab-node-1");
        }

        // ICMP echo: request from the client, reply flagged as a reply.
        let icmp: Vec<&Flow> = all
            .iter()
            .filter(|f| {
                matches!(
                    f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                    Some(Protocol::IcmPv4(_))
                )
            })
            .collect();
        let req = icmp
            .iter()
            .find(|f| {
                matches!(f.l4.as_ref().and_then(|l| l.protocol.as_ref()), Some(Protocol::IcmPv4(i)) if i.r#type == 8)
                    && point(f) == TraceObservationPoint::FromEndpoint
            })
            .expect("echo request seen leaving the client");
        assert_eq!(req.source.as_ref().unwrap().pod_name, "client");
        assert_eq!(req.destination.as_ref().unwrap().pod_name, "server");
        assert_eq!(req.traffic_direction, TrafficDirection::Egress as i32);
        assert_eq!(req.verdict, Verdict::Forwarded as i32);
        assert_eq!(req.event_type.unwrap().r#type, 4);
        let reply = icmp
            .iter()
            .find(|f| matches!(f.l4.as_ref().and_then(|l| l.protocol.as_ref()), Some(Protocol::IcmPv4(i)) if i.r#type == 0))
            .expect("echo reply");
        assert_eq!(reply.is_reply.map(|r| r.value), Some(true));
        assert_eq!(reply.source.as_ref().unwrap().pod_name, "server");

        // TCP: SYN out of the client, into the server, SYN-ACK back as a reply, FIN.
        let syn_out = all
            .iter()
            .find(|f| {
                tcp(f).is_some_and(|t| {
                    t.destination_port == 8080 && t.flags.as_ref().is_some_and(|x| x.syn && !x.ack)
                }) && point(f) == TraceObservationPoint::FromEndpoint
            })
            .expect("SYN from the client");
        let t = tcp(syn_out).unwrap();
        assert!(
            t.source_port >= 1024,
            "ephemeral source port {}",
            t.source_port
        );
        let ip = syn_out.ip.as_ref().unwrap();
        assert_eq!(
            (ip.source.as_str(), ip.destination.as_str()),
            (c.ip.to_string().as_str(), server_ip.as_str())
        );
        assert_eq!(syn_out.traffic_direction, TrafficDirection::Egress as i32);
        assert_eq!(syn_out.interface.as_ref().unwrap().name, c.host_if);
        let src = syn_out.source.as_ref().unwrap();
        assert_eq!(src.namespace, "shop");
        assert!(
            src.labels.contains(&"k8s:app=client".to_owned()),
            "{:?}",
            src.labels
        );
        assert_eq!(src.workloads[0].name, "client");
        let syn_in = all
            .iter()
            .find(|f| {
                tcp(f).is_some_and(|t| {
                    t.destination_port == 8080 && t.flags.as_ref().is_some_and(|x| x.syn)
                }) && point(f) == TraceObservationPoint::ToEndpoint
            })
            .expect("SYN into the server");
        assert_eq!(syn_in.traffic_direction, TrafficDirection::Ingress as i32);
        let syn_ack = all
            .iter()
            .find(|f| {
                tcp(f).is_some_and(|t| {
                    t.source_port == 8080 && t.flags.as_ref().is_some_and(|x| x.syn && x.ack)
                })
            })
            .expect("SYN-ACK");
        assert_eq!(syn_ack.is_reply.map(|r| r.value), Some(true));
        #[allow(deprecated)]
        let summary = &syn_ack.summary;
        assert_eq!(summary, "TCP Flags: SYN, ACK");

        let udp = all
            .iter()
            .find(|f| matches!(f.l4.as_ref().and_then(|l| l.protocol.as_ref()), Some(Protocol::Udp(u)) if u.destination_port == 9999))
            .unwrap();
        assert_eq!(udp.source.as_ref().unwrap().pod_name, "client");
        assert_eq!(udp.verdict, Verdict::Forwarded as i32);
    });
}

const DENY_CLIENT: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-allow-admin-only, namespace: shop}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector: {matchLabels: {app: admin}}
      ports:
        - {protocol: TCP, port: 8080}
";

#[test]
fn network_policy_drops_and_names_the_policy() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let policy = lab.write_policy(DENY_CLIENT);
    let agent = AgentProcess::start(&lab, "lab-node-1", &["--policy", policy.to_str().unwrap()]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    let _listener = listen_tcp(s, 8080);

    let start = Instant::now();
    assert!(
        !tcp_send(c, &s.ip.to_string(), 8080, 2),
        "the policy must stop the connection"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "it times out rather than being refused"
    );
    // The server may still reach the client, and the replies come back.
    assert!(
        ping(s, &c.ip.to_string(), 1),
        "egress from the isolated pod is not restricted"
    );

    block_on(async {
        let dropped = FlowFilter {
            verdict: vec![Verdict::Dropped as i32],
            destination_pod: vec!["shop/server".into()],
            ..Default::default()
        };
        let drops = client::wait_for(&agent.addr, vec![dropped], Duration::from_secs(5), |f| {
            !f.is_empty()
        })
        .await;
        for f in &drops {
            assert_eq!(f.drop_reason_desc, DropReason::PolicyDenied as i32);
            assert_eq!(f.event_type.unwrap().r#type, 1);
            assert_eq!(tcp(f).unwrap().destination_port, 8080);
            assert_eq!(f.source.as_ref().unwrap().pod_name, "client");
            assert_eq!(f.ingress_denied_by.len(), 1);
            assert_eq!(f.ingress_denied_by[0].name, "server-allow-admin-only");
            assert_eq!(f.ingress_denied_by[0].namespace, "shop");
        }
        // SYN retransmissions are dropped again and reported again.
        assert!(drops.len() >= 2, "{} drop flows", drops.len());
        assert!(client::status(&agent.addr).await.webb_policy_drops >= 2);
    });
    drop(agent);

    // Audit mode: the same traffic passes, marked AUDIT.
    let agent = AgentProcess::start(
        &lab,
        "lab-node-1",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--policy-mode",
            "audit",
        ],
    );
    assert!(
        tcp_send(c, &s.ip.to_string(), 8080, 3),
        "audit mode lets the connection through"
    );
    block_on(async {
        let audit = FlowFilter {
            verdict: vec![Verdict::Audit as i32],
            ..Default::default()
        };
        let flows = client::wait_for(&agent.addr, vec![audit], Duration::from_secs(5), |f| {
            !f.is_empty()
        })
        .await;
        assert_eq!(
            flows[0].ingress_denied_by[0].name,
            "server-allow-admin-only"
        );
    });
}

#[test]
fn udp_to_a_closed_port_is_a_kernel_drop_with_its_reason() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    udp_send(c, &s.ip.to_string(), 9);
    block_on(async {
        let f = FlowFilter {
            verdict: vec![Verdict::Dropped as i32],
            destination_port: vec!["9".into()],
            ..Default::default()
        };
        let drops = client::wait_for(&agent.addr, vec![f], Duration::from_secs(5), |f| {
            !f.is_empty()
        })
        .await;
        let d = &drops[0];
        assert_eq!(d.webb_kernel_drop_reason, "NO_SOCKET");
        assert_eq!(d.drop_reason_desc, DropReason::SocketLookupFailed as i32);
        assert_eq!(d.event_type.unwrap().r#type, 1);
        assert_eq!(d.destination.as_ref().unwrap().pod_name, "server");
        assert_eq!(d.traffic_direction, TrafficDirection::Ingress as i32);
    });
}

#[test]
fn filters_are_applied_by_the_server() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    assert!(ping(c, &s.ip.to_string(), 1));
    udp_send(c, &s.ip.to_string(), 9);
    block_on(async {
        // Wait for the forwarded UDP flow itself: the ICMP flows alone can
        // reach four before the ring hands the UDP one over.
        client::wait_for(&agent.addr, vec![], Duration::from_secs(5), |f| {
            f.len() >= 4
                && f.iter().any(|f| {
                    f.verdict == Verdict::Forwarded as i32
                        && matches!(
                            f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                            Some(Protocol::Udp(_))
                        )
                })
        })
        .await;
        let icmp = FlowFilter {
            protocol: vec!["icmp".into()],
            ..Default::default()
        };
        let got = client::flows(&agent.addr, vec![icmp.clone()]).await;
        assert!(!got.is_empty());
        assert!(got.iter().all(|f| matches!(
            f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
            Some(Protocol::IcmPv4(_) | Protocol::IcmPv6(_))
        )));

        // Whitelist ICMP or UDP, blacklist drops: only forwarded ICMP/UDP remain.
        let udp = FlowFilter {
            protocol: vec!["udp".into()],
            ..Default::default()
        };
        let drops = FlowFilter {
            verdict: vec![Verdict::Dropped as i32],
            ..Default::default()
        };
        let rs = client::responses(
            &agent.addr,
            GetFlowsRequest {
                whitelist: vec![icmp, udp],
                blacklist: vec![drops],
                ..Default::default()
            },
        )
        .await;
        let got = client::only_flows(rs);
        assert!(got.iter().any(|f| matches!(
            f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
            Some(Protocol::Udp(_))
        )));
        assert!(got.iter().all(|f| f.verdict != Verdict::Dropped as i32));
        assert!(got.iter().all(|f| !matches!(
            f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
            Some(Protocol::Tcp(_))
        )));

        // The pod filter sees only the client's flows.
        let mine = client::flows(&agent.addr, vec![pod_filter(c)]).await;
        assert!(
            !mine.is_empty()
                && mine
                    .iter()
                    .all(|f| f.source.as_ref().unwrap().pod_name == "client")
        );

        // A bad filter is the client's error, with the reason.
        let bad = FlowFilter {
            source_ip: vec!["10.0.0.999".into()],
            ..Default::default()
        };
        let err = client::connect(&agent.addr)
            .await
            .get_flows(GetFlowsRequest {
                whitelist: vec![bad],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("10.0.0.999"), "{}", err.message());
    });
}

#[test]
fn follow_delivers_a_new_flow_within_a_second() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    block_on(async {
        let mut stream = client::connect(&agent.addr)
            .await
            .get_flows(GetFlowsRequest {
                follow: true,
                whitelist: vec![FlowFilter {
                    destination_port: vec!["7777".into()],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .await
            .expect("follow")
            .into_inner();
        // The stream is registered once the call returned.
        let sent = Instant::now();
        udp_send(c, &s.ip.to_string(), 7777);
        let first = tokio::time::timeout(Duration::from_secs(3), stream.next())
            .await
            .expect("a flow within 3 s")
            .expect("stream open")
            .expect("no error");
        let latency = sent.elapsed();
        assert!(matches!(first.response_types, Some(ResponseTypes::Flow(_))));
        assert!(
            latency < Duration::from_secs(1),
            "follow latency {latency:?}"
        );
    });
}

/// Writes raw frames onto the client's eth0 with an AF_PACKET socket.
fn send_raw_frames(pod: &Pod, frames_hex: &[&str]) {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('eth0',0))\nfor h in {frames_hex:?}:\n    s.send(bytes.fromhex(h))\n"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &pod.netns, "python3", "-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "raw send: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn garbage_frames_are_counted_and_the_agent_keeps_serving() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    let eth = "ffffffffffff020000000001";
    let frames = [
        // IPv4 ethertype, version nibble 6.
        format!("{eth}0800{}", "65".repeat(30)),
        // IPv4 with IHL 2.
        format!("{eth}0800{}", "42".repeat(30)),
        // IPv4 header cut short.
        format!("{eth}08004500"),
        // IPv6 ethertype, 3 bytes of header.
        format!("{eth}86dd600000"),
        // VLAN tag, then a cut IPv4 header.
        format!("{eth}810000050800450000"),
        // An ethertype nobody uses, with junk.
        format!("{eth}88b5{}", "ab".repeat(40)),
    ];
    let refs: Vec<&str> = frames.iter().map(String::as_str).collect();
    block_on(async {
        let before = client::status(&agent.addr).await;
        for _ in 0..10 {
            send_raw_frames(c, &refs);
        }
        let start = Instant::now();
        let after = loop {
            let st = client::status(&agent.addr).await;
            if st.webb_malformed_packets >= before.webb_malformed_packets + 40
                || start.elapsed() > Duration::from_secs(5)
            {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Five malformed kinds per round; the kernel may discard a frame
        // before TC sees it (a VLAN tag it cannot pull), so at least four.
        assert!(
            after.webb_malformed_packets >= before.webb_malformed_packets + 40,
            "malformed: {} -> {}",
            before.webb_malformed_packets,
            after.webb_malformed_packets
        );
        assert!(after.webb_non_ip_packets >= before.webb_non_ip_packets + 10);
    });
    // Still serving, still seeing real traffic.
    assert!(ping(c, &s.ip.to_string(), 1));
    block_on(async {
        client::wait_for(
            &agent.addr,
            vec![pod_filter(c)],
            Duration::from_secs(5),
            |f| {
                f.iter().any(|f| {
                    matches!(
                        f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                        Some(Protocol::IcmPv4(_))
                    )
                })
            },
        )
        .await;
    });
}

/// A cgroup made for a test under the lab's, removed (empty) when dropped.
struct TestCgroup(std::path::PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn cgroup_programs_report_host_sockets_and_name_them_at_a_pods_interface() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let Some(parent) = lab.cgroup_parent.clone() else {
        eprintln!(
            "skipped: no cgroup v2 hierarchy at {}",
            webb_tests::lab::CGROUP2_ROOT
        );
        return;
    };
    // A host-network pod: a process of the host's network namespace in a
    // cgroup of its own, which the endpoints file names.
    let host_pod = TestCgroup(parent.join("node-exporter"));
    std::fs::create_dir(&host_pod.0).expect("host pod cgroup");
    let host_cgroup_id = std::fs::metadata(&host_pod.0).expect("cgroup dir").ino();
    let mut y = lab.endpoints_yaml();
    y.push_str(&format!(
        "  - namespace: monitoring\n    pod: node-exporter\n    labels: {{app: node-exporter}}\n    host_network: true\n    cgroup: {}\n",
        host_pod.0.display()
    ));
    lab.write_endpoints(&y);
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    let _listener = listen_tcp(s, 8081);
    // A pod's socket: reported at its veth by TC, never by the cgroup
    // programs.
    assert!(tcp_send(c, &s.ip.to_string(), 8081, 3));
    // The host pod to a pod: reported where it enters the pod, named by
    // the host socket's cgroup.
    let host_send = |ip: &str, port: u16| {
        let out = webb_tests::lab::in_cgroup(Some(&host_pod.0), "socat")
            .args([
                "-u",
                "OPEN:/dev/null",
                &format!("TCP:{ip}:{port},connect-timeout=3"),
            ])
            .output()
            .expect("socat");
        assert!(out.status.success(), "host socat: {out:?}");
    };
    host_send(&s.ip.to_string(), 8081);
    // The host pod to something no watched interface sees: reported by the
    // cgroup programs themselves.
    let _local = Background(
        Command::new("socat")
            .args([
                "-u",
                "TCP-LISTEN:18082,bind=127.0.0.1,reuseaddr",
                "OPEN:/dev/null",
            ])
            .spawn()
            .expect("loopback listener"),
    );
    std::thread::sleep(Duration::from_millis(300));
    host_send("127.0.0.1", 18082);
    block_on(async {
        let f = |port: &str| FlowFilter {
            destination_port: vec![port.into()],
            ..Default::default()
        };
        let flows = client::wait_for(
            &agent.addr,
            vec![f("8081"), f("18082")],
            Duration::from_secs(5),
            |fl| {
                fl.iter()
                    .any(|f| point(f) == TraceObservationPoint::ToStack)
                    && fl.iter().any(|f| {
                        f.cgroup_id == host_cgroup_id
                            && point(f) == TraceObservationPoint::ToEndpoint
                    })
            },
        )
        .await;
        let from_host_pod = |f: &Flow| {
            f.source
                .as_ref()
                .is_some_and(|e| e.pod_name == "node-exporter")
        };
        // Nothing from a pod's socket at a cgroup point.
        assert!(
            !flows.iter().any(|f| matches!(
                point(f),
                TraceObservationPoint::ToStack | TraceObservationPoint::FromStack
            ) && !from_host_pod(f)),
            "{flows:#?}"
        );
        // The host pod's connection to the server, at the server's veth.
        let named = flows
            .iter()
            .find(|f| {
                point(f) == TraceObservationPoint::ToEndpoint && f.cgroup_id == host_cgroup_id
            })
            .expect("the host pod's SYN entering the server");
        assert!(from_host_pod(named), "{named:#?}");
        assert_eq!(named.source.as_ref().unwrap().namespace, "monitoring");
        assert_eq!(named.destination.as_ref().unwrap().pod_name, "server");
        // Its loopback connection, at the socket.
        let sock = flows
            .iter()
            .find(|f| point(f) == TraceObservationPoint::ToStack)
            .expect("the loopback SYN at the host pod's socket");
        assert_eq!(sock.cgroup_id, host_cgroup_id, "{sock:#?}");
        assert!(from_host_pod(sock), "{sock:#?}");
        assert_eq!(sock.traffic_direction, TrafficDirection::Egress as i32);
    });
    drop(agent);
}

fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("bpftool");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn shutdown_detaches_everything() {
    let Some(_g) = privileged() else { return };
    if webb_tests::lab::which("bpftool").is_none() {
        eprintln!("skipped: bpftool is not installed; run scripts/setup.sh");
        return;
    }
    let lab = two_pods();
    // A cgroup of host processes beside the pods': the cgroup programs are
    // attached there (a pod's cgroup is left to TC).
    let _host = lab.cgroup_parent.as_ref().map(|p| {
        let c = TestCgroup(p.join("host-processes"));
        std::fs::create_dir(&c.0).expect("host cgroup");
        c
    });
    let tracefs_before = std::path::Path::new("/sys/kernel/tracing/events").exists();
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    // bpftool 7.1 lists TCX links without their interface: find webb's
    // programs by name, then make sure no link or program is left for them.
    let progs = bpftool(&["prog", "show"]);
    let ids: Vec<String> = progs
        .lines()
        .filter(|l| l.contains("name webb_"))
        .filter_map(|l| l.split(':').next().map(|id| id.trim().to_owned()))
        .collect();
    for name in [
        "webb_tc_ingress",
        "webb_tc_egress",
        "webb_cgroup_ingress",
        "webb_cgroup_egress",
        "webb_kfree_skb",
    ] {
        assert!(
            progs.contains(name),
            "{name} loaded while running:\n{progs}"
        );
    }
    let links = bpftool(&["link", "show"]);
    for id in &ids {
        assert!(
            links.contains(&format!("prog {id} ")),
            "program {id} is linked while running:\n{links}"
        );
    }
    let status = agent.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let links = bpftool(&["link", "show"]);
    for id in &ids {
        assert!(
            !links.contains(&format!("prog {id} ")),
            "program {id} still linked:\n{links}"
        );
    }
    for p in &lab.pods {
        let qdisc = Command::new("tc")
            .args(["qdisc", "show", "dev", &p.host_if])
            .output()
            .expect("tc");
        assert!(
            !String::from_utf8_lossy(&qdisc.stdout).contains("clsact"),
            "no clsact qdisc left"
        );
    }
    if let Some(cg) = &lab.cgroup_parent {
        let cgs = bpftool(&["cgroup", "tree", cg.to_str().unwrap()]);
        assert!(!cgs.contains("webb"), "cgroup programs left: {cgs}");
    }
    let progs = bpftool(&["prog", "show"]);
    assert!(!progs.contains("webb_"), "programs left loaded:\n{progs}");
    assert!(!bpftool(&["link", "show"]).contains("webb_"));
    assert_eq!(
        std::path::Path::new("/sys/kernel/tracing/events").exists(),
        tracefs_before,
        "tracefs left as it was found"
    );
}

#[test]
fn the_ring_reports_what_it_overwrote() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let agent = AgentProcess::start(&lab, "lab-node-1", &["--ring-capacity", "8"]);
    let since = Timestamp::from(std::time::SystemTime::now());
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    for port in 20000..20010 {
        udp_send(c, &s.ip.to_string(), port);
    }
    block_on(async {
        let start = Instant::now();
        loop {
            if client::status(&agent.addr).await.seen_flows >= 20
                || start.elapsed() > Duration::from_secs(5)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let rs = client::responses(
            &agent.addr,
            GetFlowsRequest {
                since: Some(since),
                ..Default::default()
            },
        )
        .await;
        let Some(ResponseTypes::LostEvents(lost)) = &rs[0].response_types else {
            panic!("first response should report lost events, got {:?}", rs[0]);
        };
        assert_eq!(lost.source, LostEventSource::HubbleRingBuffer as i32);
        assert!(lost.num_events_lost >= 10, "lost {}", lost.num_events_lost);
        // The report says from when the history it has starts: the oldest
        // flow still held, and the first one gone (from `since` on).
        let oldest = rs
            .iter()
            .find_map(|r| match &r.response_types {
                Some(ResponseTypes::Flow(f)) => f.time,
                _ => None,
            })
            .unwrap();
        let (first, last) = (lost.first.unwrap(), lost.last.unwrap());
        assert_eq!(last, oldest);
        assert!(
            since <= first && first <= last,
            "{since:?} {first:?} {last:?}"
        );
        assert_eq!(
            client::only_flows(rs).len(),
            8,
            "the ring keeps its capacity"
        );
        let st = client::status(&agent.addr).await;
        assert_eq!((st.num_flows, st.max_flows), (8, 8));
        assert!(st.seen_flows >= 20);
    });
}

#[test]
fn endpoint_changes_are_picked_up_while_running() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    let renamed = lab
        .endpoints_yaml()
        .replace("app: client", "app: client-v2");
    // Make sure the modification time moves.
    std::thread::sleep(Duration::from_millis(1100));
    lab.write_endpoints(&renamed);
    block_on(async {
        let start = Instant::now();
        loop {
            udp_send(c, &s.ip.to_string(), 30000);
            let got = client::flows(
                &agent.addr,
                vec![FlowFilter {
                    source_label: vec!["k8s:app=client-v2".into()],
                    ..Default::default()
                }],
            )
            .await;
            if !got.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(8),
                "reload not seen:\n{}",
                agent.log_text()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // A broken file is reported and the previous endpoints stay.
    lab.write_endpoints("endpoints:\n  - namespace: shop\n    pod: x\n    ips: [not-an-ip]\n");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        agent.log_text().contains("reload failed"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let run = |args: &[&str]| {
        let out = Command::new(binary("webb-agent"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("webb-agent");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--interface", "nope0"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--interface nope0: no such network interface"),
        "{err}"
    );

    let bad = lab.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "endpoints:\n  - namespace: shop\n    pod: a\n    ips: [10.0.0.1]\n    colour: blue\n",
    )
    .unwrap();
    let (code, err) = run(&["--endpoints", bad.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("colour") && err.contains("line 5"), "{err}");

    let (code, err) = run(&["--policy", "/nonexistent/policy.yaml"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot read policy file /nonexistent/policy.yaml"),
        "{err}"
    );

    let (code, err) = run(&["--ring-capacity", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--ring-capacity"), "{err}");
}

#[test]
fn nodes_namespaces_peers_and_status_describe_the_agent() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let agent = AgentProcess::start(&lab, "lab-node-7", &[]);
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    assert!(ping(c, &s.ip.to_string(), 1));
    block_on(async {
        client::wait_for(
            &agent.addr,
            vec![pod_filter(c)],
            Duration::from_secs(5),
            |f| !f.is_empty(),
        )
        .await;
        let mut obs = client::connect(&agent.addr).await;
        let nodes = obs
            .get_nodes(webb_proto::observer::GetNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].name, "lab-node-7");
        assert_eq!(nodes[0].address, agent.addr);
        assert_eq!(
            nodes[0].state,
            webb_proto::relay::NodeState::NodeConnected as i32
        );
        assert!(nodes[0].num_flows > 0 && nodes[0].max_flows == 4095);

        let ns = obs
            .get_namespaces(webb_proto::observer::GetNamespacesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(
            ns.namespaces.iter().any(|n| n.namespace == "shop"),
            "{ns:?}"
        );

        let st = client::status(&agent.addr).await;
        assert!(st.version.starts_with("webb "), "{}", st.version);
        assert!(st.seen_flows >= st.num_flows && st.uptime_ns > 0);
        assert!(st.num_connected_nodes.is_none(), "an agent is not a relay");

        // Agent events: the start, and the endpoints the file names.
        let mut events = obs
            .get_agent_events(webb_proto::observer::GetAgentEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut types = Vec::new();
        while let Some(e) = events.next().await {
            let e = e.unwrap();
            assert_eq!(e.node_name, "lab-node-7");
            types.push(e.agent_event.unwrap().r#type);
        }
        use webb_proto::flow::AgentEventType as T;
        assert_eq!(types[0], T::AgentStarted as i32, "{types:?}");
        assert!(types.contains(&(T::EndpointCreated as i32)), "{types:?}");
        assert!(types.contains(&(T::IpcacheUpserted as i32)), "{types:?}");
        // Debug events: webb's datapath writes none; the answer is empty.
        let mut debug = obs
            .get_debug_events(webb_proto::observer::GetDebugEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(debug.next().await.is_none());

        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", agent.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut peers = webb_proto::peer::peer_client::PeerClient::new(ch)
            .notify(webb_proto::peer::NotifyRequest {})
            .await
            .unwrap()
            .into_inner();
        let me = tokio::time::timeout(Duration::from_secs(2), peers.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(me.name, "lab-node-7");
        assert_eq!(
            me.r#type,
            webb_proto::peer::ChangeNotificationType::PeerAdded as i32
        );
        assert!(me.tls.is_none(), "plaintext peers carry no tls field");
    });

    // The same through the CLI, as Hubble's: `observe debug-events` reads
    // the empty answer and exits 0; `watch peers` prints the node and keeps
    // the stream open until stopped.
    let webb = |args: &[&str]| {
        Command::new(binary("webb"))
            .args(args)
            .args(["--server", &agent.addr])
            .env("WEBB_CONFIG", "/dev/null")
            .output()
            .unwrap()
    };
    let out = webb(&["observe", "debug-events", "-o", "compact"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let mut watch = Command::new(binary("webb"))
        .args(["watch", "peers", "--server", &agent.addr])
        .env("WEBB_CONFIG", "/dev/null")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(watch.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first, format!("PEER_ADDED   {} lab-node-7\n", agent.addr));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        watch.try_wait().unwrap().is_none(),
        "watch peers ended while the server kept the stream open"
    );
    watch.kill().unwrap();
    let _ = watch.wait();
}

#[test]
fn pods_that_appear_later_are_watched() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "client", "client"),
        PodSpec::new("shop", "server", "server"),
        PodSpec::new("shop", "late", "late"),
    ]);
    // Start with only the first two pods in the endpoints file.
    let full = lab.endpoints_yaml();
    let first_two: String = full
        .split("  - namespace:")
        .take(3)
        .collect::<Vec<_>>()
        .join("  - namespace:");
    lab.write_endpoints(&first_two);
    let agent = AgentProcess::start(&lab, "lab-node-1", &[]);
    let (late, s) = (lab.pod("late"), lab.pod("server"));
    std::thread::sleep(Duration::from_millis(1100));
    lab.write_endpoints(&full);
    block_on(async {
        let start = Instant::now();
        loop {
            assert!(ping(late, &s.ip.to_string(), 1));
            let got = client::flows(&agent.addr, vec![pod_filter(late)]).await;
            if got
                .iter()
                .any(|f| point(f) == TraceObservationPoint::FromEndpoint)
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(8),
                "late pod not watched:\n{}",
                agent.log_text()
            );
        }
    });
}

fn udp_ports(flows: &[Flow]) -> std::collections::BTreeSet<u32> {
    flows
        .iter()
        .filter_map(|f| match f.l4.as_ref()?.protocol.as_ref()? {
            Protocol::Udp(u) => Some(u.destination_port),
            _ => None,
        })
        .collect()
}

/// `--flow-store`: history past the ring and across a `kill -9`, each flow
/// exactly once and in order; a second agent on the directory is refused.
#[test]
fn the_flow_store_keeps_history_past_the_ring_and_across_a_restart() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let store = lab.dir.join("flows");
    let store_arg = store.to_string_lossy().into_owned();
    let extra = ["--ring-capacity", "8", "--flow-store", &store_arg];
    let mut agent = AgentProcess::start(&lab, "lab-node-1", &extra);
    let since = Timestamp::from(std::time::SystemTime::now());
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    let server_ip = s.ip.to_string();
    for port in 21000..21010 {
        udp_send(c, &server_ip, port);
    }
    let query = |addr: String| async move {
        client::responses(
            &addr,
            GetFlowsRequest {
                since: Some(since),
                ..Default::default()
            },
        )
        .await
    };
    let before: Vec<Flow> = block_on(async {
        let start = Instant::now();
        loop {
            let rs = query(agent.addr.clone()).await;
            assert!(
                rs.iter()
                    .all(|r| !matches!(r.response_types, Some(ResponseTypes::LostEvents(_)))),
                "the store had what the 8-flow ring overwrote: {rs:?}"
            );
            let flows = client::only_flows(rs);
            if udp_ports(&flows).contains(&21009) || start.elapsed() > Duration::from_secs(5) {
                break flows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(before.len() >= 20, "{} flows", before.len());
    assert_eq!(udp_ports(&before), (21000..21010).collect());

    // A second agent on the same directory is refused before it attaches.
    let out = Command::new(binary("webb-agent"))
        .args(["--flow-store", &store_arg, "--listen", "127.0.0.1:0"])
        .output()
        .expect("run webb-agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("in use by another webb-agent"), "{err}");

    // kill -9 once the last flows are at most a flush old.
    std::thread::sleep(Duration::from_millis(1500));
    let mut child = agent.child.take().expect("running");
    child.kill().expect("kill -9");
    let _ = child.wait();
    let agent = AgentProcess::start(&lab, "lab-node-1", &extra);
    for port in 22000..22003 {
        udp_send(c, &server_ip, port);
    }
    block_on(async {
        let start = Instant::now();
        let flows = loop {
            let flows = client::only_flows(query(agent.addr.clone()).await);
            if udp_ports(&flows).contains(&22002) || start.elapsed() > Duration::from_secs(5) {
                break flows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut want: std::collections::BTreeSet<u32> = (21000..21010).collect();
        want.extend(22000..22003);
        assert_eq!(udp_ports(&flows), want, "before and after the restart");
        let ids: std::collections::HashSet<&str> = flows.iter().map(|f| f.uuid.as_str()).collect();
        assert_eq!(ids.len(), flows.len(), "each flow once");
        for old in &before {
            assert!(
                ids.contains(old.uuid.as_str()),
                "kept across the restart: {old:?}"
            );
        }
        let times: Vec<Timestamp> = flows.iter().filter_map(|f| f.time).collect();
        assert!(times.is_sorted(), "in time order");
        // --first 3: the oldest three, from the store, before the restart.
        let first = client::only_flows(
            client::responses(
                &agent.addr,
                GetFlowsRequest {
                    since: Some(since),
                    first: true,
                    number: 3,
                    ..Default::default()
                },
            )
            .await,
        );
        let ids: Vec<&str> = first.iter().map(|f| f.uuid.as_str()).collect();
        let oldest: Vec<&str> = flows.iter().take(3).map(|f| f.uuid.as_str()).collect();
        assert_eq!(ids, oldest);
        // ServerStatus tells the window the node holds.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let st = client::status(&agent.addr).await;
        assert!(st.webb_stored_flows >= flows.len() as u64, "{st:?}");
        assert!(st.webb_store_bytes > 0);
        assert!(st.webb_oldest_flow.is_some_and(|t| t <= times[0]), "{st:?}");
        assert_eq!(
            (st.webb_store_not_stored, st.webb_store_corrupt_blocks),
            (0, 0)
        );
    });
}

/// Follows the export file as log shippers do (Fluent Bit, Vector): reads
/// what is written; when the file is rotated away, drains the old one,
/// then reads any rotated file it has not read (several rotations may pass
/// between two looks), oldest first, before the new live file.
fn follow(
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    use std::io::Read as _;
    let dir = path.parent().unwrap().to_owned();
    let mut seen = std::collections::HashSet::new();
    let (mut text, mut lines) = (Vec::new(), Vec::new());
    let take = |text: &mut Vec<u8>, lines: &mut Vec<String>| {
        let Some(last) = text.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let whole: Vec<u8> = text.drain(..=last).collect();
        lines.extend(
            std::str::from_utf8(&whole)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
    };
    // Reads the rotated files not read yet, oldest (by name) first.
    let catch_up = |seen: &mut std::collections::HashSet<u64>, lines: &mut Vec<String>| {
        let mut backups: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| *p != path)
            .collect();
        backups.sort();
        for b in backups {
            let mut f = std::fs::File::open(&b).unwrap();
            if seen.insert(f.metadata().unwrap().ino()) {
                let mut t = Vec::new();
                f.read_to_end(&mut t).unwrap();
                assert!(t.ends_with(b"\n"), "a rotated file ends mid-line: {b:?}");
                take(&mut t, lines);
            }
        }
    };
    let open = |seen: &mut std::collections::HashSet<u64>, lines: &mut Vec<String>| loop {
        // Whatever was rotated before the live file was opened is older.
        catch_up(seen, lines);
        if let Ok(f) = std::fs::File::open(&path) {
            let before = seen.len();
            catch_up(seen, lines);
            if seen.len() == before {
                seen.insert(f.metadata().unwrap().ino());
                return f;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut file = open(&mut seen, &mut lines);
    loop {
        let done = stop.load(std::sync::atomic::Ordering::Relaxed);
        file.read_to_end(&mut text).unwrap();
        take(&mut text, &mut lines);
        let rotated = std::fs::metadata(&path)
            .map(|m| m.ino() != file.metadata().unwrap().ino())
            .unwrap_or(true);
        if rotated {
            // The old file is complete once renamed: read its end first.
            file.read_to_end(&mut text).unwrap();
            take(&mut text, &mut lines);
            assert!(text.is_empty(), "a line split across files");
            file = open(&mut seen, &mut lines);
            continue;
        }
        if done {
            assert!(text.is_empty(), "a cut line at the end");
            return lines;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn flows_are_exported_as_json_lines_that_a_follower_reads_across_rotations() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let dir = lab.dir.join("export");
    let path = dir.join("events.log");
    let path_arg = path.to_string_lossy().into_owned();
    let agent = AgentProcess::start(
        &lab,
        "lab-node-1",
        &[
            "--export-file-path",
            &path_arg,
            "--export-file-max-size-mb",
            "1",
            "--export-file-max-backups",
            "0",
            "--export-denylist",
            r#"{"source_ip":["203.0.113.99"]}"#,
        ],
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let (p, s) = (path.clone(), stop.clone());
        std::thread::spawn(move || follow(p, s))
    };
    // Datagrams to 1,500 closed ports: a few MB of flows (forwarded, and
    // the kernel's NO_SOCKET drops), so the file rotates several times.
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    let script = format!(
        "import socket\nfor p in range(30000, 31500):\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{}', p))\n",
        s.ip
    );
    let out = c.run("python3", &["-c", &script]);
    assert!(out.status.success(), "{out:?}");
    // Everything published, then the agent stopped: the exporter writes
    // what it was handed before it exits.
    std::thread::sleep(Duration::from_secs(2));
    let ring: Vec<Flow> = block_on(client::flows(&agent.addr, vec![]));
    drop(agent);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let followed = follower.join().unwrap();

    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "rotated: {files:?}");
    let mut on_disk = Vec::new();
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 1 << 20, "{f:?}");
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.ends_with('\n'));
        on_disk.extend(text.lines().map(str::to_owned));
    }
    // The follower saw every line once, whole, in the order written (the
    // backups sort by name, oldest first, then the live file).
    if followed != on_disk {
        let first = on_disk.iter().position(|l| Some(l) == followed.first());
        let last = on_disk.iter().position(|l| Some(l) == followed.last());
        let sizes: Vec<u64> = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .collect();
        panic!(
            "followed {} of {} lines (from line {first:?} to {last:?}); files {files:?} {sizes:?}",
            followed.len(),
            on_disk.len()
        );
    }
    let uuids: std::collections::HashSet<String> = on_disk
        .iter()
        .map(|l| {
            let r = webb_proto::json::parse_line(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            match r.response_types {
                Some(ResponseTypes::Flow(f)) => f.uuid,
                other => panic!("not a flow: {other:?}"),
            }
        })
        .collect();
    assert_eq!(uuids.len(), on_disk.len(), "every flow once");
    // Nothing the ring still holds is missing from the export.
    assert!(ring.len() > 1000, "{} flows in the ring", ring.len());
    let missing = ring.iter().filter(|f| !uuids.contains(&f.uuid)).count();
    assert_eq!(missing, 0, "of {} flows in the ring", ring.len());

    // `webb observe --input-file` reads an exported file back.
    let printed = webb_tests::agent::webb_ok(&[
        "observe",
        "--input-file",
        files[0].to_str().unwrap(),
        "-o",
        "json",
    ]);
    let first = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(printed, first);
    eprintln!(
        "exported {} flows in {} files; the ring held {}",
        on_disk.len(),
        files.len(),
        ring.len()
    );
}

#[test]
fn dynamic_flow_logs_follow_their_config_file() {
    let Some(_g) = privileged() else { return };
    let lab = two_pods();
    let dir = lab.dir.join("flowlogs");
    std::fs::create_dir_all(&dir).unwrap();
    let (config, drops, all) = (
        dir.join("flowlogs.yaml"),
        dir.join("drops.log"),
        dir.join("all.log"),
    );
    std::fs::write(
        &config,
        format!(
            "flowLogs:\n  - name: drops\n    filePath: {}\n    includeFilters: [{{verdict: [DROPPED]}}]\n",
            drops.display()
        ),
    )
    .unwrap();
    let agent = AgentProcess::start(
        &lab,
        "lab-node-1",
        &["--flowlogs-config-path", config.to_str().unwrap()],
    );
    let (c, s) = (lab.pod("client"), lab.pod("server"));
    // Datagrams to closed ports: forwarded flows and the kernel's drops.
    let traffic = || {
        let script = format!(
            "import socket\nfor p in range(30000, 30050):\n    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{}', p))\n",
            s.ip
        );
        let out = c.run("python3", &["-c", &script]);
        assert!(out.status.success(), "{out:?}");
    };
    let verdicts = |path: &std::path::Path| -> Vec<i32> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(
                |l| match webb_proto::json::parse_line(l).unwrap().response_types {
                    Some(ResponseTypes::Flow(f)) => Some(f.verdict),
                    _ => None,
                },
            )
            .collect()
    };
    traffic();
    std::thread::sleep(Duration::from_secs(2));
    let dropped = verdicts(&drops);
    assert!(dropped.len() >= 40, "{} drops logged", dropped.len());
    assert!(dropped.iter().all(|v| *v == Verdict::Dropped as i32));

    // A second log, added while the agent runs: it is read within seconds.
    std::fs::write(
        &config,
        format!(
            "flowLogs:\n  - name: drops\n    filePath: {}\n    includeFilters: [{{verdict: [DROPPED]}}]\n  - name: all\n    filePath: {}\n",
            drops.display(),
            all.display()
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !verdicts(&all).contains(&(Verdict::Forwarded as i32)) {
        assert!(Instant::now() < deadline, "the added log wrote nothing");
        traffic();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        verdicts(&drops)
            .iter()
            .all(|v| *v == Verdict::Dropped as i32)
    );
    drop(agent);
}

//! The agent on a "cluster": the real `webb-agent` with its real kernel
//! programs, lab pods in real namespaces, and the Kubernetes API served by
//! the protocol-following double in `webb_tests::kube_api` (no real API
//! server can be installed in CI). The endpoints file is empty: everything
//! the agent names, it learnt from the API, and every interface it watches,
//! it found itself.

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;
use webb_proto::flow::{Flow, FlowFilter, Verdict};
use webb_tests::{
    agent::AgentProcess,
    block_on, client,
    kube_api::{KubeApi, pod_object},
    lab::{Lab, PodSpec, sh},
    privileged,
    traffic::{listen_tcp, ping, tcp_send},
};

const NODE: &str = "kube-node-1";

/// A pod laid out the way routed CNIs (Calico, kindnet/ptp) lay them out:
/// a veth with no bridge, a /32 on the pod side and a host route to it.
struct RoutedPod {
    netns: String,
    host_if: String,
    ip: Ipv4Addr,
}

impl RoutedPod {
    fn new(id: u32, host_ip: Ipv4Addr) -> Self {
        let netns = format!("webb{id}-routed");
        let host_if = format!("wr{id}");
        let ip = Ipv4Addr::new(10, 212, (id % 250) as u8 + 1, 7);
        let _ = Command::new("ip").args(["netns", "del", &netns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        sh(&["ip", "netns", "add", &netns]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&["ip", "-n", &netns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ip}/32"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &netns, "link", "set", "eth0", "up"]);
        let host = format!("{host_ip}");
        sh(&[
            "ip", "-n", &netns, "route", "add", &host, "dev", "eth0", "scope", "link",
        ]);
        sh(&[
            "ip",
            "route",
            "add",
            &format!("{ip}/32"),
            "dev",
            &host_if,
            "scope",
            "link",
            "src",
            &host,
        ]);
        // Replies to pods elsewhere (through a Service's NAT) go back
        // through the node, as a CNI's default route sends them.
        sh(&[
            "ip", "-n", &netns, "route", "add", "default", "via", &host, "dev", "eth0",
        ]);
        Self { netns, host_if, ip }
    }

    /// A TCP listener in the pod.
    fn listen(&self, port: u16) -> webb_tests::traffic::Background {
        let c = Command::new("ip")
            .args(["netns", "exec", &self.netns, "socat", "-u"])
            .arg(format!("TCP-LISTEN:{port},reuseaddr,fork"))
            .arg("OPEN:/dev/null")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat listener");
        std::thread::sleep(Duration::from_millis(300));
        webb_tests::traffic::Background(c)
    }

    fn ping_from_host(&self, count: u32) -> bool {
        Command::new("ping")
            .args(["-c", &count.to_string(), "-W", "1", "-i", "0.2"])
            .arg(self.ip.to_string())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for RoutedPod {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// A Service's ClusterIP as kube-proxy's nftables mode makes one: a DNAT
/// in the node's prerouting to the backend, replies un-NATed by conntrack.
/// Its own table, removed on drop.
struct ClusterIp {
    table: String,
}

impl ClusterIp {
    fn new(id: u32, vip: &str, port: u16, backend: Ipv4Addr, target: u16) -> Self {
        let table = format!("webb{id}svc");
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &table])
            .output();
        let script = format!(
            "table ip {table} {{\n chain pre {{\n  type nat hook prerouting priority dstnat;\n  \
             ip daddr {vip} tcp dport {port} dnat to {backend}:{target}\n }}\n}}\n"
        );
        let out = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(script.as_bytes())?;
                c.wait_with_output()
            })
            .expect("nft");
        assert!(
            out.status.success(),
            "nft: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { table }
    }
}

impl Drop for ClusterIp {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.table])
            .output();
    }
}

/// A host-network pod's container cgroup where the kubelet (systemd
/// driver) and containerd put it, under the lab's cgroup; removed on drop.
struct KubeletCgroup {
    dirs: Vec<std::path::PathBuf>,
}

impl KubeletCgroup {
    const UID: &str = "6f1d2c3b-4a5e-4f60-8a9b-0c1d2e3f4a5b";

    /// The kubelet's systemd-driver layout for the pod with this uid.
    fn new(parent: &std::path::Path, uid: &str) -> Self {
        let mut dirs = Vec::new();
        let mut at = parent.to_path_buf();
        for d in [
            "kubepods.slice".to_owned(),
            "kubepods-besteffort.slice".to_owned(),
            format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_")),
            "cri-containerd-0a1b2c3d4e5f.scope".to_owned(),
        ] {
            at = at.join(d);
            std::fs::create_dir(&at).unwrap();
            dirs.push(at.clone());
        }
        Self { dirs }
    }

    fn container(&self) -> &std::path::Path {
        self.dirs.last().unwrap()
    }
}

impl Drop for KubeletCgroup {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The agent's log without its colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn from_pod(name: &str) -> FlowFilter {
    FlowFilter {
        source_pod: vec![name.into()],
        ..Default::default()
    }
}

fn names(f: &Flow) -> (String, String) {
    let n = |e: &Option<webb_proto::flow::Endpoint>| {
        e.as_ref()
            .map(|e| format!("{}/{}", e.namespace, e.pod_name))
            .unwrap_or_default()
    };
    (n(&f.source), n(&f.destination))
}

fn cluster(api: &KubeApi, lab: &Lab) {
    api.apply(
        "namespaces",
        json!({"metadata": {"name": "shop", "labels": {"team": "payments", "kubernetes.io/metadata.name": "shop"}}}),
    );
    api.apply(
        "nodes",
        json!({"metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": "lab-a"}},
               "status": {"addresses": [{"type": "InternalIP", "address": lab.host_ip.to_string()}]}}),
    );
    api.apply(
        "nodes",
        json!({"metadata": {"name": "kube-node-2"},
               "status": {"addresses": [{"type": "InternalIP", "address": "10.211.0.2"}]}}),
    );
    api.apply(
        "replicasets",
        json!({"metadata": {"name": "frontend-5f6d7", "namespace": "shop",
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "frontend",
                                    "uid": "u-fe", "controller": true}]}}),
    );
    let fe = lab.pod("frontend");
    api.apply(
        "pods",
        pod_object(
            "shop",
            "frontend-5f6d7-x1",
            &[("app", "frontend"), ("pod-template-hash", "5f6d7")],
            NODE,
            &fe.ip.to_string(),
            Some(("ReplicaSet", "frontend-5f6d7")),
        ),
    );
    let db = lab.pod("db");
    api.apply(
        "pods",
        pod_object(
            "shop",
            "db-0",
            &[("app", "db")],
            NODE,
            &db.ip.to_string(),
            Some(("StatefulSet", "db")),
        ),
    );
    // A pod of another node: named, never watched here.
    api.apply(
        "pods",
        pod_object(
            "shop",
            "cart-1",
            &[("app", "cart")],
            "kube-node-2",
            "10.211.1.9",
            None,
        ),
    );
}

#[test]
fn pods_are_named_from_the_api_and_their_interfaces_found_on_both_cni_shapes() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "frontend", "frontend"),
        PodSpec::new("shop", "db", "db"),
    ]);
    // No file names anything: the API does.
    lab.write_endpoints("");
    let routed = RoutedPod::new(lab.id, lab.host_ip);
    let api = KubeApi::start();
    cluster(&api, &lab);
    api.apply(
        "pods",
        pod_object(
            "shop",
            "payments-1",
            &[("app", "payments")],
            NODE,
            &routed.ip.to_string(),
            None,
        ),
    );
    let vip = format!("10.96.{}.20", lab.id % 250);
    let _cluster_ip = ClusterIp::new(lab.id, &vip, 80, routed.ip, 8080);
    // The node routes between its pods: forwarding on these two interfaces
    // alone (IPv4 decides by the incoming one), gone with them.
    for dev in [&lab.bridge, &routed.host_if] {
        sh(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{dev}.forwarding=1"),
        ]);
    }
    api.apply(
        "services",
        json!({"metadata": {"name": "payments", "namespace": "shop"},
               "spec": {"clusterIP": vip, "clusterIPs": [vip],
                        "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
    );
    // A host-network pod (a node exporter): its address is the node's, its
    // container's cgroup where the kubelet puts it.
    let mut exporter = pod_object(
        "monitoring",
        "node-exporter-7x",
        &[("app", "node-exporter")],
        NODE,
        &lab.host_ip.to_string(),
        Some(("DaemonSet", "node-exporter")),
    );
    exporter["metadata"]["uid"] = json!(KubeletCgroup::UID);
    exporter["spec"]["hostNetwork"] = json!(true);
    // A real API server gives the pod its own uid: the cgroup follows it.
    let uid = api.apply("pods", exporter)["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let kubelet_cgroup = lab
        .cgroup_parent
        .as_deref()
        .map(|p| KubeletCgroup::new(p, &uid));
    let kubeconfig = lab.dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let agent = AgentProcess::start(&lab, NODE, &["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let (fe, db) = (lab.pod("frontend"), lab.pod("db"));
    let _listener = listen_tcp(db, 5432);

    // The host learns bridged pods' MACs from their first packet to it (in
    // a cluster: the kubelet's probes); then the agent finds their ports.
    let start = Instant::now();
    let log_has = |s: &str| plain(&agent.log_text()).contains(s);
    while !(log_has(&format!("interface={}", fe.host_if))
        && log_has(&format!("interface={}", db.host_if))
        && log_has(&format!("interface={}", routed.host_if)))
    {
        ping(fe, &lab.host_ip.to_string(), 1);
        ping(db, &lab.host_ip.to_string(), 1);
        routed.ping_from_host(1);
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "interfaces not discovered:\n{}",
            agent.log_text()
        );
    }
    let discovered = start.elapsed();
    assert!(tcp_send(fe, &db.ip.to_string(), 5432, 3));
    assert!(routed.ping_from_host(2));

    block_on(async {
        let flows = client::wait_for(
            &agent.addr,
            vec![from_pod("shop/frontend-5f6d7-x1")],
            Duration::from_secs(5),
            |f| f.iter().any(|f| names(f).1 == "shop/db-0"),
        )
        .await;
        let f = flows.iter().find(|f| names(f).1 == "shop/db-0").unwrap();
        let src = f.source.as_ref().unwrap();
        assert_eq!(src.workloads[0].kind, "Deployment");
        assert_eq!(src.workloads[0].name, "frontend");
        assert!(
            src.labels.contains(&"k8s:app=frontend".to_owned()),
            "{:?}",
            src.labels
        );
        let dst = f.destination.as_ref().unwrap();
        assert_eq!(dst.workloads[0].kind, "StatefulSet");
        assert_eq!(f.node_labels, ["topology.kubernetes.io/zone=lab-a"]);
        // --node-label selects by them, on the server.
        let zone = |z: &str| FlowFilter {
            node_labels: vec![format!("topology.kubernetes.io/zone={z}")],
            ..Default::default()
        };
        assert!(
            !client::flows(&agent.addr, vec![zone("lab-a")])
                .await
                .is_empty()
        );
        assert!(
            client::flows(&agent.addr, vec![zone("lab-b")])
                .await
                .is_empty()
        );
        // `webb status` says where names come from.
        let st = client::status(&agent.addr).await;
        assert_eq!(st.webb_sources["kubernetes"], "synced");
        assert_eq!(st.webb_sources["file"], "synced");
        assert_eq!(st.webb_endpoints, 4, "frontend, db, payments and cart");
        // Routed pod: found from its host route, named from the API.
        let to_routed = FlowFilter {
            destination_pod: vec!["shop/payments-1".into()],
            ..Default::default()
        };
        client::wait_for(&agent.addr, vec![to_routed], Duration::from_secs(5), |f| {
            !f.is_empty()
        })
        .await;

        // The host-network pod's socket is named with its pod, from its
        // cgroup, though its address is the node's.
        if let Some(cg) = &kubelet_cgroup {
            let sent = webb_tests::lab::in_cgroup(Some(cg.container()), "socat")
                .args(["-u", "OPEN:/dev/null"])
                .arg(format!("TCP:{}:5432,connect-timeout=3", db.ip))
                .status()
                .unwrap();
            assert!(sent.success());
            let flows = client::wait_for(
                &agent.addr,
                vec![from_pod("monitoring/node-exporter-7x")],
                Duration::from_secs(5),
                |f| f.iter().any(|f| names(f).1 == "shop/db-0"),
            )
            .await;
            let f = flows.iter().find(|f| names(f).1 == "shop/db-0").unwrap();
            let src = f.source.as_ref().unwrap();
            assert_eq!(f.ip.as_ref().unwrap().source, lab.host_ip.to_string());
            assert_eq!(
                src.identity, 1,
                "a host-network pod has the host's identity"
            );
            assert_eq!(src.workloads[0].kind, "DaemonSet");
            assert!(f.cgroup_id != 0);
        }

        // A Service in front of the routed pod: a flow to its ClusterIP is
        // named with it (destination_service), the NATed reply too
        // (source_service), and --to-service selects them on the server.
        let _listener = routed.listen(8080);
        assert!(tcp_send(fe, &vip, 80, 3), "through the ClusterIP");
        let to_svc = FlowFilter {
            destination_service: vec!["shop/payments".into()],
            ..Default::default()
        };
        let flows = client::wait_for(&agent.addr, vec![to_svc], Duration::from_secs(5), |f| {
            !f.is_empty()
        })
        .await;
        let f = &flows[0];
        assert_eq!(f.ip.as_ref().unwrap().destination, vip);
        let svc = f.destination_service.as_ref().unwrap();
        assert_eq!((&*svc.namespace, &*svc.name), ("shop", "payments"));
        assert_eq!(names(f).0, "shop/frontend-5f6d7-x1");
        let from_svc = FlowFilter {
            source_service: vec!["shop/payments".into()],
            ..Default::default()
        };
        let replies = client::wait_for(&agent.addr, vec![from_svc], Duration::from_secs(5), |f| {
            !f.is_empty()
        })
        .await;
        // A late segment the kernel drops after the socket closed is a
        // drop flow, which carries no reply flag (as Hubble's); every
        // forwarded one is a reply, all from the Service's address.
        assert!(
            replies.iter().any(|f| f.verdict != Verdict::Dropped as i32),
            "{replies:?}"
        );
        assert!(
            replies.iter().all(|f| f.ip.as_ref().unwrap().source == vip
                && (f.verdict == Verdict::Dropped as i32
                    || f.is_reply.as_ref().is_some_and(|b| b.value))),
            "{:#?}",
            replies
                .iter()
                .map(|f| (
                    f.is_reply,
                    f.verdict,
                    f.ip.clone(),
                    f.trace_observation_point,
                    f.l4.clone()
                ))
                .collect::<Vec<_>>()
        );
        // The backend's own address is not the Service.
        let at_backend = client::flows(
            &agent.addr,
            vec![FlowFilter {
                destination_ip: vec![routed.ip.to_string()],
                destination_service: vec!["shop/payments".into()],
                ..Default::default()
            }],
        )
        .await;
        assert!(at_backend.is_empty(), "{at_backend:?}");

        // The Peer service lists every node's agent, so hubble-relay
        // pointed at this one agent finds the cluster; a node that goes is
        // deleted from it.
        use futures::StreamExt as _;
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
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(5), peers.next())
                .await
                .expect("a peer notification")
                .unwrap()
                .unwrap()
        };
        assert_eq!(next().await.name, NODE);
        let other = next().await;
        let port = agent.addr.rsplit(':').next().unwrap();
        assert_eq!(
            (other.name.as_str(), other.address),
            ("kube-node-2", format!("10.211.0.2:{port}"))
        );
        api.delete("nodes", "kube-node-2");
        let gone = next().await;
        assert_eq!(gone.name, "kube-node-2");
        assert_eq!(
            gone.r#type,
            webb_proto::peer::ChangeNotificationType::PeerDeleted as i32
        );
    });

    // Pod churn: db-0 is replaced by db-1 at the same address, and the new
    // pod's creation arrives before the old one's deletion.
    let mut new_db = pod_object(
        "shop",
        "db-1",
        &[("app", "db")],
        NODE,
        &db.ip.to_string(),
        Some(("StatefulSet", "db")),
    );
    new_db["metadata"]["creationTimestamp"] = json!("2026-12-02T00:00:00Z");
    let churn = Instant::now();
    api.apply("pods", new_db);
    let renamed = block_on(async {
        loop {
            assert!(tcp_send(fe, &db.ip.to_string(), 5432, 2));
            let flows = client::flows(&agent.addr, vec![from_pod("shop/frontend-5f6d7-x1")]).await;
            if flows.iter().any(|f| names(f).1 == "shop/db-1") {
                break churn.elapsed();
            }
            assert!(
                churn.elapsed() < Duration::from_secs(5),
                "the reused address still has the old name"
            );
        }
    });
    api.delete("pods", "shop/db-0");

    // A NetworkPolicy from the API is enforced: only cart may reach db.
    api.apply(
        "networkpolicies",
        json!({"metadata": {"name": "db-allow-cart", "namespace": "shop"},
               "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cart"}}}]}]}}),
    );
    let denied = block_on(async {
        let start = Instant::now();
        loop {
            tcp_send(fe, &db.ip.to_string(), 5432, 1);
            let dropped = FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                destination_pod: vec!["shop/db-1".into()],
                ..Default::default()
            };
            let flows = client::flows(&agent.addr, vec![dropped]).await;
            if let Some(f) = flows.first() {
                assert_eq!(f.ingress_denied_by[0].name, "db-allow-cart");
                break start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the API's policy was not enforced:\n{}",
                agent.log_text()
            );
        }
    });

    // What the agent learned and did is served as Hubble's agent events:
    // `webb observe agent-events` (and `hubble observe agent-events`), from
    // the agent and through a relay.
    let agent_events_n = |server: &str, last: &str| {
        webb_tests::agent::webb_ok(&[
            "observe",
            "agent-events",
            "--server",
            server,
            "--last",
            last,
        ])
    };
    let agent_events = |server: &str| agent_events_n(server, "10000");
    let text = agent_events(&agent.addr);
    for want in [
        ": AGENT_STARTED (start time: ".to_owned(),
        "ENDPOINT_CREATED (id: ".to_owned(),
        "namespace: shop, pod name: frontend-5f6d7-x1)".to_owned(),
        // An interface attached: Cilium's endpoint regeneration.
        "ENDPOINT_REGENERATE_SUCCESS (id: ".to_owned(),
        "ENDPOINT_DELETED (id: ".to_owned(),
        format!("IPCACHE_UPSERTED (cidr: {}/32, identity: ", db.ip),
        format!("IPCACHE_DELETED (cidr: {}/32", db.ip),
        "POLICY_UPDATED (labels: [k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy,k8s:io.cilium.k8s.policy.name=db-allow-cart,k8s:io.cilium.k8s.policy.namespace=shop]"
            .to_owned(),
    ] {
        assert!(text.contains(&want), "no {want:?} in:\n{text}");
    }
    // Service ids count from 1 in the order the agent learns them (a real
    // cluster has `default/kubernetes` first).
    let service =
        format!(", frontend: {vip}:80, type: ClusterIP, namespace: shop, name: payments)");
    assert!(
        text.lines()
            .any(|l| l.contains("SERVICE_UPSERTED (id: ") && l.ends_with(&service)),
        "no SERVICE_UPSERTED ...{service:?} in:\n{text}"
    );
    let relay = webb_tests::relay::RelayProcess::start(&["--peer", &agent.addr]);
    let start = Instant::now();
    loop {
        let through = agent_events(&relay.addr);
        if through.contains(&service) && through.contains("AGENT_STARTED") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "through the relay:\n{through}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // --last N through the relay: the cluster's newest N.
    let newest = agent_events_n(&relay.addr, "2");
    assert_eq!(newest.lines().count(), 2, "{newest}");
    assert!(text.ends_with(&newest), "not the newest two:\n{newest}");
    drop(relay);

    // The API server forgets history and drops every watch: the agent
    // re-lists (410 Gone) and keeps naming what changes after. (A real
    // server is restarted for it, where the tests were told how.)
    let lists_before: u64 = api
        .requests()
        .iter()
        .filter(|((_, verb), _)| verb == "list")
        .map(|(_, n)| n)
        .sum();
    let faults = api.supports_faults();
    if !faults {
        eprintln!("not checked: 410 Gone and dropped watches (WEBB_TEST_KUBE_RESTART)");
    }
    if faults {
        api.compact();
        api.drop_watches();
    }
    let mut renamed_fe = pod_object(
        "shop",
        "frontend-5f6d7-x2",
        &[("app", "frontend"), ("pod-template-hash", "5f6d7")],
        NODE,
        &fe.ip.to_string(),
        Some(("ReplicaSet", "frontend-5f6d7")),
    );
    renamed_fe["metadata"]["creationTimestamp"] = json!("2026-12-02T00:00:00Z");
    api.apply("pods", renamed_fe);
    block_on(async {
        let start = Instant::now();
        loop {
            ping(fe, &lab.host_ip.to_string(), 1);
            let flows = client::flows(&agent.addr, vec![from_pod("shop/frontend-5f6d7-x2")]).await;
            let lists: u64 = api
                .requests()
                .iter()
                .filter(|((_, verb), _)| verb == "list")
                .map(|(_, n)| n)
                .sum();
            if !flows.is_empty() && (lists > lists_before || !faults) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "after 410 Gone and dropped watches: {} flows named anew, {:?}\n{}",
                flows.len(),
                api.requests(),
                agent.log_text()
            );
        }
    });
    let requests = api.requests();
    for kind in [
        "pods",
        "namespaces",
        "nodes",
        "services",
        "networkpolicies",
        "replicasets",
        "jobs",
    ] {
        let watches = requests
            .get(&(kind.to_owned(), "watch".to_owned()))
            .copied()
            .unwrap_or(0);
        assert!(
            (1..=4).contains(&watches),
            "{kind}: {watches} watch requests (one per kind, plus resumes)"
        );
    }
    eprintln!(
        "interfaces discovered in {discovered:?}; reused address renamed in {renamed:?}; \
         API policy enforced in {denied:?}; requests {requests:?}"
    );
}

#[test]
fn an_unreachable_or_forbidding_api_server_is_reported_and_flows_are_still_served() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[
        PodSpec::new("shop", "frontend", "frontend"),
        PodSpec::new("shop", "db", "db"),
    ]);
    lab.write_endpoints("");
    let api = KubeApi::start();
    cluster(&api, &lab);
    api.forbid("networkpolicies", true);
    let kubeconfig = lab.dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    // Nothing listens on this kubeconfig's server.
    let dead = lab.dir.join("dead-kubeconfig");
    std::fs::write(
        &dead,
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace(&api.addr.to_string(), "127.0.0.1:9"),
    )
    .unwrap();
    let agent = AgentProcess::start(
        &lab,
        NODE,
        &[
            "--kubeconfig",
            dead.to_str().unwrap(),
            "--interface",
            &lab.pod("frontend").host_if,
        ],
    );
    assert!(ping(lab.pod("frontend"), &lab.pod("db").ip.to_string(), 1));
    block_on(async {
        // Served, named by address only.
        let flows = client::wait_for(&agent.addr, vec![], Duration::from_secs(5), |f| {
            !f.is_empty()
        })
        .await;
        assert!(
            flows
                .iter()
                .all(|f| f.source.as_ref().unwrap().pod_name.is_empty())
        );
    });
    block_on(async {
        let st = client::status(&agent.addr).await;
        let state = &st.webb_sources["kubernetes"];
        assert!(state != "synced", "{state}");
    });
    let start = Instant::now();
    while !plain(&agent.log_text()).contains("watching pods") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no word of the unreachable API server:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);

    // Reachable, but policies are forbidden: the log names verb and
    // resource, and pods are named all the same.
    let agent = AgentProcess::start(
        &lab,
        NODE,
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--interface",
            &lab.pod("frontend").host_if,
        ],
    );
    let start = Instant::now();
    while !plain(&agent.log_text()).contains("forbidden to list and watch networkpolicies") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no word of the 403:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ping(lab.pod("frontend"), &lab.pod("db").ip.to_string(), 1));
    block_on(async {
        let st = client::status(&agent.addr).await;
        assert!(
            st.webb_sources["kubernetes"].contains("forbidden to list and watch networkpolicies"),
            "{:?}",
            st.webb_sources
        );
        client::wait_for(
            &agent.addr,
            vec![from_pod("shop/frontend-5f6d7-x1")],
            Duration::from_secs(5),
            |f| !f.is_empty(),
        )
        .await;
    });
}

#[test]
fn the_relay_finds_agents_from_the_services_endpointslices() {
    let Some(_g) = privileged() else { return };
    let lab = Lab::new(&[PodSpec::new("shop", "frontend", "frontend")]);
    // On the node's address: an EndpointSlice never names loopback (a
    // real API server refuses it).
    let agent = AgentProcess::start_at(
        &lab,
        NODE,
        &format!("{}:{}", lab.host_ip, webb_tests::agent::free_port()),
        &[],
    );
    let api = KubeApi::start();
    let port: u16 = agent.addr.rsplit(':').next().unwrap().parse().unwrap();
    let slice = |ready_ip: &str| {
        json!({"metadata": {"name": "webb-agent-abc12", "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": "webb-agent"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": port, "protocol": "TCP"},
                  {"name": "metrics", "port": 9965, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ready_ip], "nodeName": NODE, "conditions": {"ready": true}},
            // Not ready: not a node to relay.
            {"addresses": ["10.211.0.9"], "nodeName": "kube-node-9", "conditions": {"ready": false}}
        ]})
    };
    api.apply("endpointslices", slice(&lab.host_ip.to_string()));
    // Another Service's slice in the namespace is not ours.
    api.apply(
        "endpointslices",
        json!({"metadata": {"name": "other-x", "namespace": "kube-system",
                            "labels": {"kubernetes.io/service-name": "kube-dns"}},
               "addressType": "IPv4", "ports": [{"name": "dns", "port": 53}],
               "endpoints": [{"addresses": ["10.211.0.3"], "nodeName": "kube-node-3"}]}),
    );
    let kubeconfig = lab.dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let relay = webb_tests::relay::RelayProcess::start(&[
        "--peer-k8s-service",
        "kube-system/webb-agent",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ]);
    let nodes = |want: usize| {
        block_on(async {
            let mut c = webb_proto::observer::observer_client::ObserverClient::connect(format!(
                "http://{}",
                relay.addr
            ))
            .await
            .unwrap();
            let start = Instant::now();
            loop {
                let nodes = c
                    .get_nodes(webb_proto::observer::GetNodesRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .nodes;
                let connected = nodes
                    .iter()
                    .filter(|n| n.state == webb_proto::relay::NodeState::NodeConnected as i32)
                    .count();
                if nodes.len() == want && connected == want {
                    return nodes;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "want {want} connected nodes, have {nodes:?}\n{}",
                    relay.log_text()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let got = nodes(1);
    assert_eq!(got[0].name, NODE);
    assert_eq!(got[0].address, agent.addr);
    // The agent's pod goes: the relay drops the node.
    api.delete("endpointslices", "kube-system/webb-agent-abc12");
    nodes(0);
}

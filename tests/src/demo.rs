//! The demo lab: a two-node "cluster" in network namespaces, with pods,
//! cluster DNS, a world address, a NetworkPolicy, real traffic, one
//! `webb-agent` per node and a `webb-relay` in front of them.
//!
//! ```text
//!  host: webb-relay 127.0.0.1:4245 ── webb-demo0 10.214.0.1
//!                                         │  (underlay bridge, netns webb-demo-net)
//!        ┌────────────────────────────────┼─────────────────────────┐
//!  webb-demo-node1 10.214.0.11     webb-demo-node2 10.214.0.12    webb-demo-world
//!   webb-agent :4244                webb-agent :4244              10.214.0.100
//!   cni0 10.215.1.1/24              cni0 10.215.2.1/24            203.0.113.10 (api.example.com)
//!    ├ shop/frontend                 ├ shop/payments
//!    └ shop/cart                     ├ shop/db
//!                                    └ kube-system/coredns (dnsmasq)
//! ```
//!
//! Everything has a fixed name under `webb-demo`, so tearing down finds what
//! is there rather than trusting a record: a demo killed half-way is still
//! removed by `--down`. Every process the demo starts runs in the
//! `webb-demo` cgroup (pods in theirs, agents, relay and the world in
//! `system`), which is how tear-down finds and stops them.

use std::{
    fmt::Write as _,
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

mod traffic;
pub use traffic::run as traffic;

use crate::{
    agent::binary,
    lab::{Pod, cgroup2_root, in_cgroup, netns_command},
    traffic::{dns_server_command, http_server_command, is_listening, write_resolv_conf},
};

/// Prefix of every namespace, link and cgroup the demo makes.
pub const PREFIX: &str = "webb-demo";
/// Logs, endpoints and policy files of a running demo.
pub const STATE_DIR: &str = "/run/webb-demo";
/// The host's link into the lab's underlay.
pub const HOST_LINK: &str = "webb-demo0";
const UNDERLAY_NETNS: &str = "webb-demo-net";
const WORLD_NETNS: &str = "webb-demo-world";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 1);
const WORLD_UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 100);
/// The `world` address: a documentation address (TEST-NET-3) that lives in
/// the lab's own world namespace, named `api.example.com` by the lab's DNS.
pub const WORLD_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const WORLD_NAME: &str = "api.example.com";
const AGENT_PORT: u16 = 4244;
const HTTP_PORT: u16 = 8080;
const DB_PORT: u16 = 5432;
/// Nothing listens there: datagrams to it are dropped by the kernel.
const CLOSED_UDP_PORT: u16 = 9;
const CLUSTER_DOMAIN: &str = "cluster.local";

/// The policy the lab enforces: only cart may reach db, so frontend's
/// attempts are dropped.
const POLICY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-allow-cart, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector: {matchLabels: {app: cart}}
      ports:
        - {protocol: TCP, port: 5432}
";

/// One lab node: a network namespace with a bridge for its pods.
struct NodeSpec {
    name: &'static str,
    index: u8,
    /// (namespace, pod/app name) of the pods it runs.
    pods: &'static [(&'static str, &'static str)],
}

const NODES: [NodeSpec; 2] = [
    NodeSpec {
        name: "demo-node-1",
        index: 1,
        pods: &[("shop", "frontend"), ("shop", "cart")],
    },
    NodeSpec {
        name: "demo-node-2",
        index: 2,
        pods: &[
            ("shop", "payments"),
            ("shop", "db"),
            ("kube-system", "coredns"),
        ],
    },
];

impl NodeSpec {
    fn netns(&self) -> String {
        format!("{PREFIX}-node{}", self.index)
    }

    fn underlay_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, 0, 10 + self.index)
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 215, self.index, 1)
    }

    fn pod_subnet(&self) -> String {
        format!("10.215.{}.0/24", self.index)
    }

    fn agent_addr(&self) -> String {
        format!("{}:{AGENT_PORT}", self.underlay_ip())
    }

    fn cgroup(&self, root: &Path) -> PathBuf {
        root.join(format!("node{}", self.index))
    }
}

/// Every pod of the lab, with the node it runs on. Addresses follow from
/// the node and the pod's place on it, so the traffic generators can work
/// them out too.
fn pods(cgroups: Option<&Path>) -> Vec<(&'static NodeSpec, Pod)> {
    let mut out = Vec::new();
    for node in &NODES {
        for (k, (namespace, name)) in node.pods.iter().enumerate() {
            let g = node.gateway().octets();
            out.push((
                node,
                Pod {
                    namespace: (*namespace).to_owned(),
                    name: (*name).to_owned(),
                    labels: vec![("app".to_owned(), (*name).to_owned())],
                    workload: Some(("Deployment".to_owned(), (*name).to_owned())),
                    netns: format!("{PREFIX}-{name}"),
                    host_if: format!("lxc-{name}"),
                    ip: Ipv4Addr::new(g[0], g[1], g[2], 10 + k as u8),
                    cgroup: cgroups.map(|root| node.cgroup(root).join(name)),
                },
            ));
        }
    }
    out
}

fn pod_ip(name: &str) -> Ipv4Addr {
    pods(None)
        .into_iter()
        .find(|(_, p)| p.name == name)
        .map_or(Ipv4Addr::UNSPECIFIED, |(_, p)| p.ip)
}

/// The demo's cgroup: `<cgroup2>/webb-demo`.
fn cgroup_root() -> Option<PathBuf> {
    cgroup2_root().map(|r| r.join(PREFIX))
}

/// True when a demo lab (or what is left of one) is on this machine.
pub fn is_up() -> bool {
    netns_list().iter().any(|n| n.starts_with(PREFIX))
        || Path::new("/sys/class/net").join(HOST_LINK).exists()
        || cgroup_root().is_some_and(|c| c.exists())
}

/// A lab brought up by [`up`].
pub struct Demo {
    /// Where the relay listens.
    pub relay: String,
    /// The processes started, reaped on tear-down when this process does it.
    children: Vec<Child>,
}

impl Demo {
    /// Leaves the lab running when this process exits (`--keep`): the
    /// children are not waited for; `--down` stops them later.
    pub fn keep(mut self) {
        self.children.clear();
    }

    /// Tears the lab down and reaps the processes this demo started.
    pub fn down(mut self) -> Teardown {
        let report = down();
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        report
    }
}

fn say(msg: &str) {
    eprintln!("demo: {msg}");
}

/// Builds the lab, starts the servers, the traffic, the agents and the
/// relay (listening on `relay_listen`), and waits until the relay has both
/// nodes. On failure, whatever was built is torn down again.
pub fn up(relay_listen: &str) -> anyhow::Result<Demo> {
    if is_up() {
        bail!(
            "a demo lab is already up (a `--keep` run?); tear it down first with \
             `sudo bash scripts/demo.sh --down`"
        );
    }
    let mut demo = Demo {
        relay: relay_listen.to_owned(),
        children: Vec::new(),
    };
    match build(&mut demo) {
        Ok(()) => Ok(demo),
        Err(e) => {
            let logs = recent_logs(5);
            let _ = demo.down();
            Err(e.context(format!(
                "the demo lab did not come up; torn down again{logs}"
            )))
        }
    }
}

fn build(demo: &mut Demo) -> anyhow::Result<()> {
    let state = Path::new(STATE_DIR);
    std::fs::create_dir_all(state).with_context(|| format!("creating {STATE_DIR}"))?;
    let cgroups = cgroup_root();
    if let Some(root) = &cgroups {
        for dir in [root.join("system")]
            .into_iter()
            .chain(NODES.iter().map(|n| n.cgroup(root)))
        {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating cgroup {}", dir.display()))?;
        }
    }
    let system = cgroups.as_ref().map(|r| r.join("system"));
    let pods = pods(cgroups.as_deref());

    say("building two lab nodes, their pods and the world");
    underlay()?;
    for node in &NODES {
        lab_node(node)?;
    }
    world()?;
    for (node, pod) in &pods {
        add_pod(node, pod)?;
    }
    std::fs::write(state.join("policy.yaml"), POLICY)?;
    for node in &NODES {
        std::fs::write(
            state.join(format!("endpoints-{}.yaml", node.name)),
            endpoints_yaml(node, &pods),
        )?;
    }
    for (_, pod) in &pods {
        resolver(&pod.netns, find(&pods, "coredns").ip)?;
    }

    say("starting servers: dnsmasq, HTTP (frontend, cart, payments, world), db");
    demo.start_servers(&pods, system.as_deref())?;
    say("starting one webb-agent per node");
    demo.start_agents(cgroups.as_deref())?;
    say("starting webb-relay and the traffic generators");
    demo.start_relay(system.as_deref())?;
    let me = std::env::current_exe().context("finding the webb-demo binary")?;
    let me = me.to_string_lossy();
    for role in ["frontend", "cart", "payments"] {
        let cmd = find(&pods, role).cmd(&me, &["traffic", role]);
        demo.spawn(&format!("traffic-{role}"), cmd)?;
    }
    let mut world_traffic = netns_command(WORLD_NETNS, system.as_deref(), &me);
    world_traffic.args(["traffic", "world"]);
    demo.spawn("traffic-world", world_traffic)
}

impl Demo {
    /// Cluster DNS (dnsmasq in coredns: every pod by its service name, the
    /// world by name, NXDOMAIN for the rest of both zones), the HTTP
    /// servers with different latencies, and db; waits until they listen.
    fn start_servers(
        &mut self,
        pods: &[(&NodeSpec, Pod)],
        system: Option<&Path>,
    ) -> anyhow::Result<()> {
        let mut records: Vec<String> = pods
            .iter()
            .map(|(_, p)| {
                let name = format!("{}.{}.svc.{CLUSTER_DOMAIN}", p.name, p.namespace);
                format!("--host-record={name},{}", p.ip)
            })
            .collect();
        records.push(format!("--host-record={WORLD_NAME},{WORLD_IP}"));
        records.push("--local=/example.com/".to_owned());
        let coredns = find(pods, "coredns");
        self.spawn("dns", dns_server_command(coredns, CLUSTER_DOMAIN, &records))?;
        for (name, delay_ms) in [("frontend", 5), ("cart", 15), ("payments", 40)] {
            let cmd = http_server_command(find(pods, name), HTTP_PORT, delay_ms);
            self.spawn(&format!("http-{name}"), cmd)?;
        }
        let listen = format!("TCP-LISTEN:{DB_PORT},reuseaddr,fork");
        let db = find(pods, "db").cmd("socat", &["-u", &listen, "OPEN:/dev/null"]);
        self.spawn("db", db)?;
        let mut world_http = netns_command(WORLD_NETNS, system, "python3");
        world_http.args([crate::traffic::HTTP_SERVER_SCRIPT, "80", "--delay-ms", "60"]);
        self.spawn("http-world", world_http)?;
        for (name, port) in [
            ("coredns", 53),
            ("frontend", HTTP_PORT),
            ("cart", HTTP_PORT),
            ("payments", HTTP_PORT),
            ("db", DB_PORT),
        ] {
            let pod = find(pods, name);
            let what = format!("a server on {name}:{port}");
            wait(&what, Duration::from_secs(10), || is_listening(pod, port))?;
        }
        Ok(())
    }

    /// One agent per node, entered into the node's network namespace with
    /// `nsenter` (not `ip netns exec`, which would hide the cgroup tree),
    /// serving on the node's underlay address; waits until both serve.
    fn start_agents(&mut self, cgroups: Option<&Path>) -> anyhow::Result<()> {
        let state = Path::new(STATE_DIR);
        for node in &NODES {
            let mut cmd = in_cgroup(cgroups.map(|r| r.join("system")).as_deref(), "nsenter");
            cmd.arg(format!("--net=/run/netns/{}", node.netns()))
                .arg("--")
                .arg(binary("webb-agent"))
                .args(["--listen", &node.agent_addr(), "--node-name", node.name])
                // Both lab nodes share this machine's kernel.
                .arg("--shared-kernel")
                .arg("--endpoints")
                .arg(state.join(format!("endpoints-{}.yaml", node.name)))
                .arg("--policy")
                .arg(state.join("policy.yaml"))
                // History past the ring, as the manifests keep it.
                .arg("--flow-store")
                .arg(state.join(format!("store-{}", node.name)))
                .args([
                    "--metrics",
                    "flow drop dns:query http tcp icmp port-distribution",
                    "--metrics-listen",
                    &format!("{}:9965", node.underlay_ip()),
                ]);
            if let Some(root) = cgroups {
                cmd.arg("--cgroup").arg(node.cgroup(root));
            }
            self.spawn(&format!("agent-{}", node.name), cmd)?;
        }
        for node in &NODES {
            let addr = node.agent_addr();
            let what = format!("webb-agent on {} ({addr})", node.name);
            wait(&what, Duration::from_secs(30), || {
                crate::block_on(crate::client::is_serving(&addr))
            })?;
        }
        Ok(())
    }

    /// The relay, peered with both agents; waits until it has both nodes.
    fn start_relay(&mut self, system: Option<&Path>) -> anyhow::Result<()> {
        let mut relay = in_cgroup(system, &binary("webb-relay").to_string_lossy());
        relay.args(["--listen", &self.relay]);
        for node in &NODES {
            relay.args(["--peer", &node.agent_addr()]);
        }
        self.spawn("relay", relay)?;
        let addr = self.relay.clone();
        wait(
            "webb-relay connected to both nodes",
            Duration::from_secs(30),
            || crate::block_on(connected_nodes(&addr)) == Some(NODES.len() as u32),
        )
    }
}

/// The number of nodes a relay says it is connected to.
async fn connected_nodes(addr: &str) -> Option<u32> {
    let mut client =
        webb_proto::observer::observer_client::ObserverClient::connect(format!("http://{addr}"))
            .await
            .ok()?;
    let status = client
        .server_status(webb_proto::observer::ServerStatusRequest {})
        .await
        .ok()?;
    status.into_inner().num_connected_nodes.map(|n| n.value)
}

fn find<'a>(pods: &'a [(&NodeSpec, Pod)], name: &str) -> &'a Pod {
    pods.iter()
        .find(|(_, p)| p.name == name)
        .map(|(_, p)| p)
        .unwrap_or_else(|| unreachable!("the demo has a pod named {name}"))
}

impl Demo {
    /// Starts a lab process in its own process group (a Ctrl-C meant for
    /// the dashboard does not reach it), logging to `STATE_DIR/NAME.log`.
    fn spawn(&mut self, name: &str, mut cmd: Command) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt as _;
        let log = Path::new(STATE_DIR).join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env(
                "WEBB_LOG",
                std::env::var("WEBB_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push(child);
        Ok(())
    }
}

/// The last `lines` lines of every log of the running demo, for an error
/// message.
pub fn recent_logs(lines: usize) -> String {
    let mut out = String::new();
    let Ok(dir) = std::fs::read_dir(STATE_DIR) else {
        return out;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            if !tail.is_empty() {
                let _ = write!(out, "\n--- {} (last lines)", path.display());
                for l in tail.iter().rev() {
                    let _ = write!(out, "\n{l}");
                }
            }
        }
    }
    out
}

fn wait(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > timeout {
            bail!("{what}: not ready after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Runs `ip` with a command line of whitespace-separated words (no word
/// in the lab's commands has a space), failing with its error output.
fn ip(command_line: &str) -> anyhow::Result<()> {
    let args: Vec<&str> = command_line.split_whitespace().collect();
    run("ip", &args)
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The underlay: a bridge in its own namespace (so the host's bridge
/// netfilter settings do not apply), with the host attached as 10.214.0.1.
fn underlay() -> anyhow::Result<()> {
    let u = UNDERLAY_NETNS;
    ip(&format!("netns add {u}"))?;
    ip(&format!("-n {u} link add br0 type bridge"))?;
    ip(&format!("-n {u} link set br0 up"))?;
    ip(&format!(
        "link add {HOST_LINK} type veth peer name host netns {u}"
    ))?;
    ip(&format!("-n {u} link set host master br0 up"))?;
    ip(&format!("addr add {HOST_IP}/24 dev {HOST_LINK}"))?;
    ip(&format!("link set {HOST_LINK} up"))
}

/// Plugs a namespace into the underlay with `addr` on its `eth0`.
fn uplink(ns: &str, port: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    let u = UNDERLAY_NETNS;
    ip(&format!(
        "-n {ns} link add eth0 type veth peer name {port} netns {u}"
    ))?;
    ip(&format!("-n {u} link set {port} master br0 up"))?;
    ip(&format!("-n {ns} addr add {addr}/24 dev eth0"))?;
    ip(&format!("-n {ns} link set eth0 up"))?;
    ip(&format!("-n {ns} link set lo up"))
}

/// A node: its namespace on the underlay, a `cni0` bridge for its pods,
/// forwarding on, and routes to the other node's pods and to the world.
fn lab_node(node: &NodeSpec) -> anyhow::Result<()> {
    let ns = node.netns();
    ip(&format!("netns add {ns}"))?;
    uplink(&ns, &format!("node{}", node.index), node.underlay_ip())?;
    ip(&format!("-n {ns} link add cni0 type bridge"))?;
    ip(&format!("-n {ns} addr add {}/24 dev cni0", node.gateway()))?;
    ip(&format!("-n {ns} link set cni0 up"))?;
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    )?;
    for other in NODES.iter().filter(|o| o.index != node.index) {
        let (net, via) = (other.pod_subnet(), other.underlay_ip());
        ip(&format!("-n {ns} route add {net} via {via}"))?;
    }
    ip(&format!(
        "-n {ns} route add {WORLD_IP}/32 via {WORLD_UNDERLAY_IP}"
    ))
}

/// The world: a namespace holding the outside address, routed back to the
/// pods through their nodes (and answering from the outside address).
fn world() -> anyhow::Result<()> {
    let w = WORLD_NETNS;
    ip(&format!("netns add {w}"))?;
    uplink(w, "world", WORLD_UNDERLAY_IP)?;
    ip(&format!("-n {w} addr add {WORLD_IP}/32 dev lo"))?;
    for node in &NODES {
        let (net, via) = (node.pod_subnet(), node.underlay_ip());
        ip(&format!("-n {w} route add {net} via {via} src {WORLD_IP}"))?;
    }
    Ok(())
}

fn add_pod(node: &NodeSpec, pod: &Pod) -> anyhow::Result<()> {
    let (node_ns, ns, veth) = (node.netns(), &pod.netns, &pod.host_if);
    ip(&format!("netns add {ns}"))?;
    ip(&format!(
        "-n {node_ns} link add {veth} type veth peer name eth0 netns {ns}"
    ))?;
    ip(&format!("-n {node_ns} link set {veth} master cni0 up"))?;
    ip(&format!("-n {ns} link set lo up"))?;
    ip(&format!("-n {ns} addr add {}/24 dev eth0", pod.ip))?;
    ip(&format!("-n {ns} link set eth0 up"))?;
    ip(&format!("-n {ns} route add default via {}", node.gateway()))?;
    if let Some(cg) = &pod.cgroup {
        std::fs::create_dir_all(cg).with_context(|| format!("creating cgroup {}", cg.display()))?;
    }
    Ok(())
}

/// The endpoints file of one node's agent: its own pods with their
/// interfaces and cgroups, the other node's pods by address only.
fn endpoints_yaml(node: &NodeSpec, pods: &[(&NodeSpec, Pod)]) -> String {
    let mut y = format!(
        "host_ips: [{}, {}]\nendpoints:\n",
        node.gateway(),
        node.underlay_ip()
    );
    for (on, pod) in pods {
        pod.write_endpoint(&mut y, on.index == node.index);
    }
    y
}

/// A Kubernetes-like resolver for a pod: short names and the search list,
/// ndots 5.
fn resolver(netns: &str, server: Ipv4Addr) -> anyhow::Result<()> {
    let search = format!("shop.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}");
    write_resolv_conf(
        netns,
        &server.to_string(),
        &search,
        "ndots:5 timeout:1 attempts:2",
    )
    .map(|_| ())
    .context("writing the pod's resolv.conf")
}

/// What tear-down found and removed.
#[derive(Debug, Default)]
pub struct Teardown {
    pub processes: usize,
    pub namespaces: usize,
    pub links: usize,
    pub cgroups: usize,
}

impl std::fmt::Display for Teardown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped {} processes; removed {} network namespaces, {} host links, {} cgroups",
            self.processes, self.namespaces, self.links, self.cgroups
        )
    }
}

fn netns_list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process in the demo's cgroup tree and namespaces.
fn demo_processes() -> Vec<i32> {
    let mut pids = Vec::new();
    if let Some(root) = cgroup_root() {
        for dir in cgroup_dirs(&root) {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    for ns in netns_list().iter().filter(|n| n.starts_with(PREFIX)) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
            pids.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok()),
            );
        }
    }
    let me = std::process::id() as i32;
    pids.retain(|p| *p != me);
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A cgroup directory and every one below it, deepest first.
fn cgroup_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(cgroup_dirs(&e.path()));
            }
        }
    }
    if root.is_dir() {
        out.push(root.to_path_buf());
    }
    out
}

/// Tears down whatever is left of a demo lab: processes (SIGTERM, so that
/// agents detach their programs, then SIGKILL), namespaces, the host link,
/// cgroups, resolver files and the state directory.
pub fn down() -> Teardown {
    let mut report = Teardown::default();
    let pids = demo_processes();
    report.processes = pids.len();
    for &pid in &pids {
        // SAFETY: kill with a pid we just read and a valid signal.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let gone = |deadline: Duration| {
        let start = Instant::now();
        while !demo_processes().is_empty() && start.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    gone(Duration::from_secs(5));
    for pid in demo_processes() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    gone(Duration::from_secs(2));

    let mut namespaces: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(PREFIX))
        .collect();
    // Pods first, the underlay last: nothing is left plugged into a
    // namespace that is already gone.
    namespaces.sort_by_key(|n| (n == UNDERLAY_NETNS, n.contains("-node"), n.clone()));
    for ns in namespaces {
        if ip(&format!("netns del {ns}")).is_ok() {
            report.namespaces += 1;
        }
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&ns));
    }
    if Path::new("/sys/class/net").join(HOST_LINK).exists()
        && ip(&format!("link del {HOST_LINK}")).is_ok()
    {
        report.links += 1;
    }
    if let Some(root) = cgroup_root() {
        for dir in cgroup_dirs(&root) {
            if std::fs::remove_dir(&dir).is_ok() {
                report.cgroups += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(STATE_DIR);
    report
}

/// The `webb observe` commands printed for a running demo.
pub fn try_these(relay: &str) -> String {
    let server = if relay == "127.0.0.1:4245" || relay == "localhost:4245" {
        String::new()
    } else {
        format!(" --server {relay}")
    };
    let mut s = String::new();
    let _ = writeln!(s, "  webb observe{server} --follow");
    let _ = writeln!(s, "  webb observe{server} --verdict DROPPED --follow");
    let _ = writeln!(s, "  webb observe{server} --to-pod shop/db --last 10");
    let _ = writeln!(
        s,
        "  webb observe{server} --type l7 --http-status 5+ --follow"
    );
    let _ = writeln!(
        s,
        "  webb observe{server} --dns-query example.com -o json | jq .flow.l7.dns"
    );
    let _ = writeln!(s, "  webb list nodes{server}");
    let _ = writeln!(s, "  webb ui{server}");
    s
}

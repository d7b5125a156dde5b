//! The endpoints file: which addresses, interfaces and cgroups belong to which
//! pod, and the numeric identities derived from their labels.
//!
//! ```yaml
//! host_ips: [10.99.0.1]          # the node's own addresses (identity "host")
//! namespaces:                    # optional namespace labels, for policy
//!   shop: {team: payments}
//! endpoints:
//!   - namespace: shop
//!     pod: frontend-7d9c
//!     labels: {app: frontend}
//!     workload: {kind: Deployment, name: frontend}
//!     ips: [10.99.0.10]
//!     interface: lxc-frontend    # optional: host side of the pod's veth
//!     cgroup: /sys/fs/cgroup/unified/webb/frontend   # optional
//! ```
//!
//! The file is one source of the agent's cluster state (see [`crate::cluster`]);
//! identities are a hash of each label set ([`crate::cluster::identity`]), so
//! they are stable across restarts and equal for pods with equal labels, as
//! Cilium's are.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::Path,
    sync::Arc,
};

use anyhow::Context as _;
use serde::Deserialize;
use webb_proto::flow::{Endpoint, EndpointData, Workload};

pub use node_agent_ebpf::identity::{
    HOST as HOST_IDENTITY, REMOTE_NODE as REMOTE_NODE_IDENTITY, WORLD as WORLD_IDENTITY,
};

#[cfg(test)]
use crate::cluster::identity::FIRST_IDENTITY;
use crate::cluster::identity::fnv1a;

/// The namespace label every pod carries, as in Cilium.
pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// The label Kubernetes puts on every namespace.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EndpointsFile {
    #[serde(default)]
    pub host_ips: Vec<IpAddr>,
    #[serde(default)]
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub namespace: String,
    pub pod: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub workload: Option<WorkloadSpec>,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub cgroup: Option<std::path::PathBuf>,
    /// A pod on the node's network (its addresses are `host_ips`), named
    /// by its `cgroup` alone.
    #[serde(default)]
    pub host_network: bool,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub kind: String,
    pub name: String,
}

/// One resolved endpoint, with its wire form prebuilt so flows only clone it.
#[derive(Debug, PartialEq)]
pub struct EndpointInfo {
    pub namespace: String,
    pub pod: String,
    /// `k8s:key=value` labels, sorted, including the namespace label.
    pub labels: Vec<String>,
    /// Plain `key=value` labels for selector matching.
    pub label_map: BTreeMap<String, String>,
    pub identity: u32,
    /// The addresses this endpoint owns (an address two pods claim belongs
    /// to the newer one).
    pub ips: Vec<IpAddr>,
    /// The node it runs on, when known.
    pub node: Option<String>,
    /// Runs on this node (its packets are ours to enforce and report).
    pub local: bool,
    pub interface: Option<String>,
    pub cgroup: Option<std::path::PathBuf>,
    pub proto: Endpoint,
}

impl EndpointInfo {
    /// Resolves a pod into its endpoint: labels with the namespace label,
    /// and the wire form every flow will share.
    pub fn new(
        pod: &crate::cluster::Pod,
        identity: u32,
        workload: Option<(String, String)>,
        ips: Vec<IpAddr>,
        local: bool,
        interface: Option<String>,
    ) -> Self {
        let label_map = label_map(pod);
        let labels = k8s_labels(&label_map);
        let proto = EndpointData {
            id: endpoint_id(&pod.namespace, &pod.name),
            identity,
            namespace: pod.namespace.clone(),
            labels: labels.clone(),
            pod_name: pod.name.clone(),
            workloads: workload
                .into_iter()
                .map(|(kind, name)| Workload { name, kind })
                .collect(),
            ..Default::default()
        }
        .into();
        Self {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            labels,
            label_map,
            identity,
            ips,
            node: pod.node.clone(),
            local,
            interface,
            cgroup: pod.cgroup.clone(),
            proto,
        }
    }
}

/// A pod's labels for selector matching: its own plus the namespace label.
pub fn label_map(pod: &crate::cluster::Pod) -> BTreeMap<String, String> {
    let mut m = pod.labels.clone();
    m.insert(NAMESPACE_LABEL.to_owned(), pod.namespace.clone());
    m
}

/// The identity-relevant labels in Cilium's `k8s:key=value` form, sorted.
pub fn k8s_labels(label_map: &BTreeMap<String, String>) -> Vec<String> {
    label_map
        .iter()
        .map(|(k, v)| format!("k8s:{k}={v}"))
        .collect()
}

/// Endpoints by address, in shards that are shared between successive
/// tables: a new table after one pod's change copies the one shard it
/// touches, not the cluster's every address (5,000 pods: a change costs
/// microseconds instead of a rebuild of the whole index).
#[derive(Debug, Clone)]
pub struct IpIndex {
    shards: Vec<Arc<HashMap<IpAddr, Arc<EndpointInfo>, rustc_hash::FxBuildHasher>>>,
}

const IP_SHARDS: usize = 64;

impl Default for IpIndex {
    fn default() -> Self {
        Self {
            shards: (0..IP_SHARDS).map(|_| Arc::default()).collect(),
        }
    }
}

impl IpIndex {
    fn shard(ip: &IpAddr) -> usize {
        use std::hash::BuildHasher as _;
        (rustc_hash::FxBuildHasher.hash_one(ip) >> 32) as usize % IP_SHARDS
    }

    pub fn get(&self, ip: &IpAddr) -> Option<&Arc<EndpointInfo>> {
        self.shards[Self::shard(ip)].get(ip)
    }

    pub fn insert(&mut self, ip: IpAddr, e: Arc<EndpointInfo>) {
        Arc::make_mut(&mut self.shards[Self::shard(&ip)]).insert(ip, e);
    }

    /// Removes the address if it is this endpoint's.
    pub fn remove_if(&mut self, ip: &IpAddr, e: &Arc<EndpointInfo>) {
        let i = Self::shard(ip);
        if self.shards[i]
            .get(ip)
            .is_some_and(|now| Arc::ptr_eq(now, e))
        {
            Arc::make_mut(&mut self.shards[i]).remove(ip);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Arc<EndpointInfo>)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One endpoint before and after a change (None: absent).
pub type EndpointChange = (Option<Arc<EndpointInfo>>, Option<Arc<EndpointInfo>>);

/// Service frontends: (address, port) to the Service a flow is named with.
pub type ServiceTable = HashMap<(IpAddr, u16), Arc<webb_proto::flow::Service>>;

/// Every endpoint, indexed for the per-event lookups.
#[derive(Debug, Default)]
pub struct EndpointTable {
    pub endpoints: Vec<Arc<EndpointInfo>>,
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    pub host_ips: HashSet<IpAddr>,
    /// Other nodes' addresses, by node name (identity `remote-node`).
    pub remote_nodes: HashMap<IpAddr, String>,
    /// This node's labels as flows carry them (`key=value`, sorted), for
    /// `--node-label`.
    pub node_labels: Vec<String>,
    /// Service frontends (address, port) and the Service they name.
    pub services: Arc<ServiceTable>,
    /// Local pods by the id of any of their cgroups (the kubelet's tree, or
    /// a file's `cgroup:`), host-network pods included: a socket's flows
    /// are named with its pod even when its address is the node's.
    pub by_cgroup_id: HashMap<u64, Arc<EndpointInfo>>,
    by_ip: IpIndex,
    by_interface: HashMap<String, Arc<EndpointInfo>>,
    by_cgroup_path: HashMap<std::path::PathBuf, Arc<EndpointInfo>>,
    host: Endpoint,
    world: Endpoint,
    remote_node: Endpoint,
}

/// What an address is, from the node's point of view.
pub enum Peer<'a> {
    Endpoint(&'a Arc<EndpointInfo>),
    Host,
    RemoteNode,
    World,
}

impl EndpointTable {
    /// Reads and resolves an endpoints file; errors name the file, line and field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let file = EndpointsFile::load(path)?;
        Ok(crate::cluster::reconcile::table_of_file(file))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(crate::cluster::reconcile::table_of_file(
            EndpointsFile::parse(text)?,
        ))
    }

    /// Indexes resolved endpoints. Each address must belong to one endpoint
    /// (the reconciler settles claims before).
    pub fn build(
        endpoints: Vec<Arc<EndpointInfo>>,
        namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
        host_ips: HashSet<IpAddr>,
        remote_nodes: HashMap<IpAddr, String>,
    ) -> Self {
        let mut table = Self {
            namespace_labels,
            host_ips,
            remote_nodes,
            host: reserved_endpoint(HOST_IDENTITY, "reserved:host"),
            world: reserved_endpoint(WORLD_IDENTITY, "reserved:world"),
            remote_node: reserved_endpoint(REMOTE_NODE_IDENTITY, "reserved:remote-node"),
            ..Self::default()
        };
        for info in endpoints {
            for ip in &info.ips {
                table.by_ip.insert(*ip, info.clone());
            }
            if let Some(iface) = &info.interface {
                table.by_interface.insert(iface.clone(), info.clone());
            }
            if let Some(cg) = &info.cgroup {
                table.by_cgroup_path.insert(cg.clone(), info.clone());
            }
            table.endpoints.push(info);
        }
        table
    }

    /// A table like this one with these endpoints changed (before, after),
    /// sharing the address index's untouched shards; the caller sets the
    /// cluster-wide fields and gives the full endpoint list.
    pub fn derive(&self, endpoints: Vec<Arc<EndpointInfo>>, changes: &[EndpointChange]) -> Self {
        let mut by_ip = self.by_ip.clone();
        for old in changes.iter().filter_map(|(o, _)| o.as_ref()) {
            for ip in &old.ips {
                by_ip.remove_if(ip, old);
            }
        }
        for new in changes.iter().filter_map(|(_, n)| n.as_ref()) {
            for ip in &new.ips {
                by_ip.insert(*ip, new.clone());
            }
        }
        // Interfaces and cgroups belong to local pods (tens): indexed anew,
        // in the same order `build` uses, so a conflict settles alike.
        let mut by_interface = HashMap::new();
        let mut by_cgroup_path = HashMap::new();
        for e in &endpoints {
            if let Some(i) = &e.interface {
                by_interface.insert(i.clone(), e.clone());
            }
            if let Some(c) = &e.cgroup {
                by_cgroup_path.insert(c.clone(), e.clone());
            }
        }
        Self {
            endpoints,
            by_ip,
            by_interface,
            by_cgroup_path,
            host: self.host.clone(),
            world: self.world.clone(),
            remote_node: self.remote_node.clone(),
            ..Self::default()
        }
    }

    /// Every address and its endpoint.
    pub fn addresses(&self) -> impl Iterator<Item = (&IpAddr, &Arc<EndpointInfo>)> {
        self.by_ip.iter()
    }

    pub fn classify(&self, ip: &IpAddr) -> Peer<'_> {
        if let Some(e) = self.by_ip.get(ip) {
            Peer::Endpoint(e)
        } else if self.host_ips.contains(ip) {
            Peer::Host
        } else if self.remote_nodes.contains_key(ip) {
            Peer::RemoteNode
        } else {
            Peer::World
        }
    }

    /// The wire endpoint for an address: a pod, the host, another node, or
    /// the world.
    pub fn endpoint_for(&self, ip: &IpAddr) -> &Endpoint {
        match self.classify(ip) {
            Peer::Endpoint(e) => &e.proto,
            Peer::Host => &self.host,
            Peer::RemoteNode => &self.remote_node,
            Peer::World => &self.world,
        }
    }

    pub fn by_interface(&self, name: &str) -> Option<&Arc<EndpointInfo>> {
        self.by_interface.get(name)
    }

    /// The Service whose frontend is this address and port.
    pub fn service(&self, ip: &IpAddr, port: u16) -> Option<&webb_proto::flow::Service> {
        self.services.get(&(*ip, port)).map(|s| &**s)
    }

    pub fn by_ip(&self, ip: &IpAddr) -> Option<&Arc<EndpointInfo>> {
        self.by_ip.get(ip)
    }

    pub fn cgroups(&self) -> impl Iterator<Item = (&std::path::PathBuf, &Arc<EndpointInfo>)> {
        self.by_cgroup_path.iter()
    }

    /// The labels of a namespace, including the one Kubernetes always sets.
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self.namespace_labels.get(ns).cloned().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), ns.to_owned());
        labels
    }

    /// Namespaces with at least one endpoint.
    pub fn namespaces(&self) -> Vec<String> {
        let mut ns: Vec<String> = self.endpoints.iter().map(|e| e.namespace.clone()).collect();
        ns.sort();
        ns.dedup();
        ns
    }
}

impl EndpointsFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read endpoints file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("endpoints file {}", path.display()))
    }

    /// Parses and checks a file: every endpoint named and addressed, no
    /// address claimed twice.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: EndpointsFile = if text.trim().is_empty() {
            EndpointsFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?
        };
        let mut owners: HashMap<IpAddr, String> = HashMap::new();
        for (i, spec) in file.endpoints.iter().enumerate() {
            if spec.namespace.is_empty() || spec.pod.is_empty() {
                anyhow::bail!("endpoints[{i}]: namespace and pod must not be empty");
            }
            let name = format!("{}/{}", spec.namespace, spec.pod);
            if spec.host_network {
                if !spec.ips.is_empty() || spec.interface.is_some() {
                    anyhow::bail!(
                        "endpoints[{i}] ({name}): a host_network pod has the node's addresses (host_ips) and no interface of its own; remove ips and interface"
                    );
                }
                if spec.cgroup.is_none() {
                    anyhow::bail!(
                        "endpoints[{i}] ({name}): a host_network pod is known by its cgroup: cgroup is required"
                    );
                }
            } else if spec.ips.is_empty() {
                anyhow::bail!("endpoints[{i}] ({name}): ips: at least one address");
            }
            for ip in &spec.ips {
                if let Some(other) = owners.insert(*ip, name.clone()) {
                    anyhow::bail!(
                        "endpoints[{i}] ({name}): address {ip} already belongs to {other}"
                    );
                }
            }
        }
        Ok(file)
    }
}

fn reserved_endpoint(identity: u32, label: &str) -> Endpoint {
    EndpointData {
        identity,
        labels: vec![label.to_owned()],
        ..Default::default()
    }
    .into()
}

/// A stable endpoint ID (Cilium's per-node endpoint number) from the pod name.
fn endpoint_id(namespace: &str, pod: &str) -> u32 {
    1 + fnv1a(format!("{namespace}/{pod}").as_bytes(), 0) % 65534
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "
host_ips: [10.99.0.1]
endpoints:
  - namespace: shop
    pod: frontend-1
    labels: {app: frontend}
    workload: {kind: Deployment, name: frontend}
    ips: [10.99.0.10, 'fd00::10']
  - namespace: shop
    pod: frontend-2
    labels: {app: frontend}
    ips: [10.99.0.11]
  - namespace: shop
    pod: db-0
    labels: {app: db}
    ips: [10.99.0.20]
";

    #[test]
    fn identities_follow_labels() {
        let t = EndpointTable::parse(FILE).unwrap();
        let id = |ip: &str| t.endpoint_for(&ip.parse().unwrap()).identity;
        assert_eq!(id("10.99.0.10"), id("10.99.0.11"));
        assert_eq!(id("10.99.0.10"), id("fd00::10"));
        assert_ne!(id("10.99.0.10"), id("10.99.0.20"));
        assert_eq!(id("10.99.0.1"), HOST_IDENTITY);
        assert_eq!(id("8.8.8.8"), WORLD_IDENTITY);
        // Stable across loads.
        assert_eq!(
            EndpointTable::parse(FILE).unwrap().endpoints[2].identity,
            t.endpoints[2].identity
        );
        let fe = t.endpoint_for(&"10.99.0.10".parse().unwrap());
        assert_eq!(
            fe.labels,
            vec!["k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"]
        );
        assert_eq!(fe.workloads[0].kind, "Deployment");
        assert!(id("10.99.0.10") >= FIRST_IDENTITY);
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad = "endpoints:\n  - namespace: shop\n    pod: a\n    ips: [10.0.0.300]\n";
        let err = format!("{:#}", EndpointTable::parse(bad).unwrap_err());
        assert!(err.contains("line 4"), "{err}");
        let unknown = "endpoints:\n  - namespace: shop\n    pood: a\n    ips: []\n";
        let err = format!("{:#}", EndpointTable::parse(unknown).unwrap_err());
        assert!(err.contains("pood") && err.contains("line 3"), "{err}");
        let dup = "endpoints:\n  - {namespace: a, pod: x, ips: [10.0.0.1]}\n  - {namespace: a, pod: y, ips: [10.0.0.1]}\n";
        let err = format!("{:#}", EndpointTable::parse(dup).unwrap_err());
        assert!(err.contains("already belongs"), "{err}");
    }
}

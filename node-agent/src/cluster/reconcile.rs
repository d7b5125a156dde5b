//! The reconciler: cluster state in, naming context and kernel map changes
//! out (see the module above for where it sits).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use node_agent_ebpf::{endpoint_flags, identity as reserved};

use super::{ClusterState, Dirty, Pod, Source, Update, identity};
use crate::{
    decode::Context,
    endpoints::{EndpointInfo, EndpointTable, EndpointsFile, k8s_labels, label_map},
    kernel::DropReasons,
    policy::{self, CompiledPolicy, PolicyKeyOrd},
};

/// What the kernel's endpoint, CIDR and policy maps hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelState {
    /// Address → (identity, endpoint flags).
    pub endpoints: HashMap<IpAddr, (u32, u32)>,
    pub cidrs: BTreeMap<IpNet, u32>,
    pub policy: BTreeSet<PolicyKeyOrd>,
    pub policy_enabled: bool,
}

/// The changes that turn one [`KernelState`] into another: what the kernel
/// is asked to do, and nothing more.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelDiff {
    pub endpoints_set: Vec<(IpAddr, u32, u32)>,
    pub endpoints_removed: Vec<IpAddr>,
    pub cidrs_set: Vec<(IpNet, u32)>,
    pub cidrs_removed: Vec<IpNet>,
    pub policy_added: Vec<PolicyKeyOrd>,
    pub policy_removed: Vec<PolicyKeyOrd>,
    /// Set when the switch changes.
    pub policy_enabled: Option<bool>,
    /// What policy allows changed: flows the kernel remembers as denied are
    /// forgotten, so the change takes effect on their next packet.
    pub forget_denied: bool,
}

impl KernelDiff {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Map writes and deletes this diff costs.
    pub fn operations(&self) -> usize {
        self.endpoints_set.len()
            + self.endpoints_removed.len()
            + self.cidrs_set.len()
            + self.cidrs_removed.len()
            + self.policy_added.len()
            + self.policy_removed.len()
    }

    pub fn between(old: &KernelState, new: &KernelState) -> Self {
        let mut d = Self::default();
        for (ip, v) in &new.endpoints {
            if old.endpoints.get(ip) != Some(v) {
                d.endpoints_set.push((*ip, v.0, v.1));
            }
        }
        d.endpoints_removed = old
            .endpoints
            .keys()
            .filter(|ip| !new.endpoints.contains_key(ip))
            .copied()
            .collect();
        d.endpoints_set.sort();
        d.endpoints_removed.sort();
        for (net, id) in &new.cidrs {
            if old.cidrs.get(net) != Some(id) {
                d.cidrs_set.push((*net, *id));
            }
        }
        d.cidrs_removed = old
            .cidrs
            .keys()
            .filter(|n| !new.cidrs.contains_key(n))
            .copied()
            .collect();
        d.policy_added = new.policy.difference(&old.policy).copied().collect();
        d.policy_removed = old.policy.difference(&new.policy).copied().collect();
        if old.policy_enabled != new.policy_enabled {
            d.policy_enabled = Some(new.policy_enabled);
        }
        let isolation = |s: &KernelState| -> BTreeSet<(IpAddr, u32)> {
            s.endpoints
                .iter()
                .map(|(ip, (_, f))| {
                    (
                        *ip,
                        f & (endpoint_flags::INGRESS_ISOLATED | endpoint_flags::EGRESS_ISOLATED),
                    )
                })
                .filter(|(_, f)| *f != 0)
                .collect()
        };
        d.forget_denied = !d.policy_added.is_empty()
            || !d.policy_removed.is_empty()
            || !d.cidrs_set.is_empty()
            || !d.cidrs_removed.is_empty()
            || d.policy_enabled.is_some()
            || isolation(old) != isolation(new);
        d
    }
}

/// The kernel side of the reconciler: the real one is the datapath's maps
/// and attachments; tests record what they are asked.
pub trait Kernel {
    fn apply(&mut self, diff: &KernelDiff) -> anyhow::Result<()>;
    /// Watches each of these interfaces that exists and is not watched yet;
    /// returns the ones newly watched. One that does not exist yet is tried
    /// again on the next call.
    fn watch(&mut self, interfaces: &BTreeSet<String>) -> Vec<String>;
}

/// What a rebuild did, for the log, `webb status` and the benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub rebuilds: u64,
    pub endpoints_rebuilt: u64,
    pub policy_compiles: u64,
    pub kernel_operations: u64,
    pub kernel_failures: u64,
}

struct Cached {
    pod: Arc<Pod>,
    labels: Arc<[String]>,
    info: Arc<EndpointInfo>,
}

pub struct Reconciler {
    pub state: ClusterState,
    node_name: String,
    drop_reasons: Arc<DropReasons>,
    policy_enabled: bool,
    dirty: Dirty,
    cache: HashMap<String, Cached>,
    label_sets: BTreeSet<Arc<[String]>>,
    identities: HashMap<Vec<String>, u32>,
    table: Arc<EndpointTable>,
    policy: Arc<CompiledPolicy>,
    applied: KernelState,
    /// The last kernel update failed: the next reconcile retries it.
    kernel_stale: bool,
    watched: BTreeSet<String>,
    pub stats: Stats,
}

impl Reconciler {
    /// `policy_enabled`: some policy source is configured, so the kernel
    /// consults the policy maps.
    pub fn new(node_name: &str, drop_reasons: Arc<DropReasons>, policy_enabled: bool) -> Self {
        Self {
            state: ClusterState::default(),
            node_name: node_name.to_owned(),
            drop_reasons,
            policy_enabled,
            dirty: Dirty::default(),
            cache: HashMap::new(),
            label_sets: BTreeSet::new(),
            identities: HashMap::new(),
            table: Arc::new(EndpointTable::default()),
            policy: Arc::new(CompiledPolicy::default()),
            applied: KernelState::default(),
            kernel_stale: true,
            watched: BTreeSet::new(),
            stats: Stats::default(),
        }
    }

    pub fn apply(&mut self, update: Update) {
        self.state.apply(update, &mut self.dirty);
    }

    pub fn context(&self) -> Context {
        Context {
            node_name: self.node_name.clone(),
            endpoints: self.table.clone(),
            policy: self.policy.clone(),
            drop_reasons: self.drop_reasons.clone(),
        }
    }

    pub fn table(&self) -> &Arc<EndpointTable> {
        &self.table
    }

    /// Interfaces being watched for local pods.
    pub fn watched(&self) -> &BTreeSet<String> {
        &self.watched
    }

    /// Rebuilds what the updates since the last call changed and applies it
    /// to the kernel. Returns the new naming context when naming or policy
    /// changed. A kernel failure is logged, counted and retried on the next
    /// call; naming is published regardless.
    pub fn reconcile(&mut self, kernel: &mut dyn Kernel) -> Option<Context> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut published = None;
        if dirty.any() {
            self.stats.rebuilds += 1;
            let identities_changed = if dirty.endpoints || dirty.namespaces || dirty.nodes {
                self.rebuild_table()
            } else {
                false
            };
            if dirty.policies || dirty.namespaces || identities_changed {
                let policies: Vec<_> = self
                    .state
                    .policies
                    .merged()
                    .into_values()
                    .map(|p| (**p).clone())
                    .collect();
                self.policy = Arc::new(policy::compile(&policies, &self.table));
                self.stats.policy_compiles += 1;
            }
            published = Some(self.context());
        }
        if dirty.any() || self.kernel_stale {
            let want = self.kernel_state();
            let diff = KernelDiff::between(&self.applied, &want);
            match kernel.apply(&diff) {
                Ok(()) => {
                    self.stats.kernel_operations += diff.operations() as u64;
                    self.applied = want;
                    self.kernel_stale = false;
                }
                Err(e) => {
                    self.stats.kernel_failures += 1;
                    self.kernel_stale = true;
                    tracing::error!("updating kernel maps failed (retrying): {e:#}");
                }
            }
        }
        let wanted: BTreeSet<String> = self
            .table
            .endpoints
            .iter()
            .filter(|e| e.local)
            .filter_map(|e| e.interface.clone())
            .collect();
        for iface in kernel.watch(&wanted) {
            let pod = self
                .table
                .by_interface(&iface)
                .map(|e| format!("{}/{}", e.namespace, e.pod))
                .unwrap_or_default();
            tracing::info!(interface = %iface, %pod, "watching");
        }
        self.watched = wanted;
        published
    }

    /// Rebuilds the endpoint table; says whether the set of identities
    /// changed (which is when policy must be compiled again).
    fn rebuild_table(&mut self) -> bool {
        let pods = self.state.pods.merged();
        // An address two pods claim belongs to the newer one (an IP reused
        // before the old pod's deletion arrived); ties go to the name.
        let mut owner_of: HashMap<IpAddr, (i64, &str)> = HashMap::new();
        for (key, pod) in &pods {
            if pod.host_network {
                continue;
            }
            for ip in &pod.ips {
                let claim = (pod.created, *key);
                owner_of
                    .entry(*ip)
                    .and_modify(|c| {
                        if claim > *c {
                            *c = claim
                        }
                    })
                    .or_insert(claim);
            }
        }

        // Labels per pod, reused while the pod object is unchanged.
        let mut labels_of: HashMap<&str, Arc<[String]>> = HashMap::with_capacity(pods.len());
        for (key, pod) in &pods {
            if pod.host_network {
                continue;
            }
            let labels = match self.cache.get(*key) {
                Some(c) if Arc::ptr_eq(&c.pod, pod) => c.labels.clone(),
                _ => Arc::from(k8s_labels(&label_map(pod))),
            };
            labels_of.insert(key, labels);
        }
        let label_sets: BTreeSet<Arc<[String]>> = labels_of.values().cloned().collect();
        let identities_changed = label_sets != self.label_sets;
        if identities_changed {
            self.identities = identity::allocate(label_sets.iter().map(|l| &l[..]));
            self.label_sets = label_sets;
        }

        let owners = self.state.owners.merged();
        let mut cache = HashMap::with_capacity(pods.len());
        let mut endpoints = Vec::with_capacity(pods.len());
        for (key, pod) in &pods {
            let Some(labels) = labels_of.get(key) else {
                continue;
            };
            let ips: Vec<IpAddr> = pod
                .ips
                .iter()
                .filter(|ip| owner_of.get(ip).is_some_and(|(_, k)| k == key))
                .copied()
                .collect();
            if ips.is_empty() {
                continue;
            }
            let local = match &pod.node {
                Some(n) => *n == self.node_name,
                None => pod.interface.is_some() || pod.cgroup.is_some(),
            };
            let interface = pod.interface.clone().or_else(|| {
                local
                    .then(|| {
                        ips.iter()
                            .find_map(|ip| self.state.interfaces.get(ip).cloned())
                    })
                    .flatten()
            });
            let workload = ClusterState::workload_of(pod, &owners);
            let identity = self.identities[&labels[..]];
            let reusable = self.cache.get(*key).filter(|c| {
                Arc::ptr_eq(&c.pod, pod)
                    && c.info.identity == identity
                    && c.info.ips == ips
                    && c.info.local == local
                    && c.info.interface == interface
                    && c.info.proto.workloads.first().map(|w| (&w.kind, &w.name))
                        == workload.as_ref().map(|(k, n)| (k, n))
            });
            let info = match reusable {
                Some(c) => c.info.clone(),
                None => {
                    self.stats.endpoints_rebuilt += 1;
                    Arc::new(EndpointInfo::new(
                        pod, identity, workload, ips, local, interface,
                    ))
                }
            };
            endpoints.push(info.clone());
            cache.insert(
                (*key).to_owned(),
                Cached {
                    pod: (*pod).clone(),
                    labels: labels.clone(),
                    info,
                },
            );
        }
        self.cache = cache;

        let host_ips: HashSet<IpAddr> = self.state.host_ips(&self.node_name).into_iter().collect();
        let remote_nodes: HashMap<IpAddr, String> = self
            .state
            .nodes
            .merged()
            .into_values()
            .filter(|n| n.name != self.node_name)
            .flat_map(|n| n.addresses.iter().map(|a| (*a, n.name.clone())))
            .filter(|(a, _)| !host_ips.contains(a))
            .collect();
        let namespace_labels = self
            .state
            .namespaces
            .merged()
            .into_values()
            .map(|n| (n.name.clone(), n.labels.clone()))
            .collect();
        self.table = Arc::new(EndpointTable::build(
            endpoints,
            namespace_labels,
            host_ips,
            remote_nodes,
        ));
        identities_changed
    }

    fn kernel_state(&self) -> KernelState {
        let mut s = KernelState {
            policy_enabled: self.policy_enabled,
            ..KernelState::default()
        };
        for ip in &self.table.host_ips {
            s.endpoints
                .insert(*ip, (reserved::HOST, endpoint_flags::LOCAL));
        }
        for e in &self.table.endpoints {
            let mut flags = self.policy.isolation.get(&e.identity).copied().unwrap_or(0);
            if e.local && e.interface.is_some() {
                flags |= endpoint_flags::L7_AT_TC;
            }
            if e.local {
                flags |= endpoint_flags::LOCAL;
            }
            for ip in &e.ips {
                s.endpoints.insert(*ip, (e.identity, flags));
            }
        }
        s.cidrs = self.policy.cidrs.iter().copied().collect();
        s.policy = self.policy.keys.clone();
        s
    }

    /// Every other node's agent, as (node name, address): the node's first
    /// internal address on the agents' port (agents run on the host
    /// network), sorted by name.
    pub fn peers(&self, me: &str, port: u16) -> Vec<(String, String)> {
        self.state
            .nodes
            .merged()
            .into_values()
            .filter(|n| n.name != me)
            .filter_map(|n| {
                let a = n.addresses.first()?;
                Some((
                    n.name.clone(),
                    std::net::SocketAddr::new(*a, port).to_string(),
                ))
            })
            .collect()
    }

    /// Who is failing, for `webb status`.
    pub fn health(&self) -> Vec<(Source, super::Health)> {
        self.state
            .health
            .iter()
            .map(|(s, h)| (*s, h.clone()))
            .collect()
    }
}

/// The endpoint table an endpoints file alone gives (tests, benches and
/// fuzzers use it through [`EndpointTable::parse`]).
pub fn table_of_file(file: EndpointsFile) -> EndpointTable {
    let mut r = Reconciler::new("", Arc::new(DropReasons::default()), false);
    for u in super::file::updates_of(file) {
        r.apply(u);
    }
    r.rebuild_table();
    Arc::try_unwrap(std::mem::take(&mut r.table)).unwrap_or_else(|t| {
        EndpointTable::build(
            t.endpoints.clone(),
            t.namespace_labels.clone(),
            t.host_ips.clone(),
            t.remote_nodes.clone(),
        )
    })
}

//! The reconciler: cluster state in, naming context and kernel map changes
//! out (see the module above for where it sits).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use ipnet::IpNet;
use node_agent_ebpf::{endpoint_flags, identity as reserved};

use super::{ClusterState, Dirty, Owner, Pod, Source, Update, identity};
use crate::agent_events::{self, AgentEvents};
use crate::{
    decode::Context,
    endpoints::{
        EndpointChange, EndpointInfo, EndpointTable, EndpointsFile, ServiceTable, k8s_labels,
        label_map,
    },
    kernel::DropReasons,
    policy::{self, CompiledPolicy, PolicyKeyOrd},
};
use webb_proto::flow::AgentEvent;

/// What the kernel's endpoint, CIDR and policy maps hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelState {
    /// Address → (identity, endpoint flags).
    pub endpoints: HashMap<IpAddr, (u32, u32)>,
    pub cidrs: BTreeMap<IpNet, u32>,
    pub policy: BTreeSet<PolicyKeyOrd>,
    pub policy_enabled: bool,
}

/// The maps as the kernel's policy decision reads them: a [`KernelState`]
/// answers `node_agent_ebpf::policy_allows` exactly as the kernel holding
/// it does, so host tests and replays run the kernel's own decision.
impl node_agent_ebpf::PolicyRules for KernelState {
    fn has_rule(&self, key: &node_agent_ebpf::PolicyKey) -> bool {
        self.policy.contains(&PolicyKeyOrd::from(*key))
    }
}

impl node_agent_ebpf::PolicyMaps for KernelState {
    fn endpoint(&self, addr: &node_agent_ebpf::Addr) -> Option<node_agent_ebpf::EndpointInfo> {
        let ip = IpAddr::V6(std::net::Ipv6Addr::from(*addr)).to_canonical();
        self.endpoints
            .get(&ip)
            .map(|&(identity, flags)| node_agent_ebpf::EndpointInfo { identity, flags })
    }

    fn cidr_identity(&self, addr: &node_agent_ebpf::Addr) -> Option<u32> {
        let ip = IpAddr::V6(std::net::Ipv6Addr::from(*addr)).to_canonical();
        self.cidrs
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, id)| *id)
    }
}

/// What the kernel's endpoint map holds for one address, given the
/// endpoint table and the compiled policy: identity and flags (isolation,
/// AT_TC, LOCAL).
pub fn kernel_entry(
    table: &EndpointTable,
    policy: &CompiledPolicy,
    ip: &IpAddr,
) -> Option<(u32, u32)> {
    if let Some(e) = table.by_ip(ip) {
        let mut flags = policy.isolation.get(&e.identity).copied().unwrap_or(0);
        if e.local && e.interface.is_some() {
            flags |= endpoint_flags::AT_TC;
        }
        if e.local {
            flags |= endpoint_flags::LOCAL;
        }
        Some((e.identity, flags))
    } else if table.host_ips.contains(ip) {
        Some((reserved::HOST, endpoint_flags::LOCAL))
    } else {
        None
    }
}

impl KernelState {
    /// The maps as the agent writes them for this table and policy.
    pub fn of(table: &EndpointTable, policy: &CompiledPolicy, policy_enabled: bool) -> Self {
        let mut s = KernelState {
            policy_enabled,
            ..KernelState::default()
        };
        for ip in table
            .host_ips
            .iter()
            .chain(table.endpoints.iter().flat_map(|e| e.ips.iter()))
        {
            if let Some(v) = kernel_entry(table, policy, ip) {
                s.endpoints.insert(*ip, v);
            }
        }
        s.cidrs = policy.cidrs.iter().copied().collect();
        s.policy = policy.keys.clone();
        s
    }
}

/// A host-network pod's name for its sockets: identity `host`, no address
/// or interface of its own.
fn host_network_info(pod: &Pod, owners: &BTreeMap<&str, &Arc<Owner>>) -> Arc<EndpointInfo> {
    Arc::new(EndpointInfo::new(
        pod,
        reserved::HOST,
        ClusterState::workload_of(pod, owners),
        Vec::new(),
        true,
        None,
    ))
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
    /// Keeps the cgroup programs off the cgroups (by id) of the pods whose
    /// interfaces TC watches (they report those pods' packets), and on
    /// every other cgroup under `--cgroup`.
    fn watch_cgroups(&mut self, covered: &BTreeSet<u64>) {
        let _ = covered;
    }
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

/// A pod the reconciler knows, with its labels in identity form and its
/// endpoint (`None` while it owns no address).
struct Entry {
    pod: Arc<Pod>,
    labels: Arc<[String]>,
    info: Option<Arc<EndpointInfo>>,
}

pub struct Reconciler {
    pub state: ClusterState,
    node_name: String,
    drop_reasons: Arc<DropReasons>,
    policy_enabled: bool,
    dirty: Dirty,
    entries: BTreeMap<String, Entry>,
    /// Who claims each address: (creation time, pod key); the newest wins.
    claims: HashMap<IpAddr, Vec<(i64, String)>>,
    /// How many pods have each label set.
    label_count: HashMap<Arc<[String]>, usize>,
    identities: HashMap<Arc<[String]>, u32>,
    table: Arc<EndpointTable>,
    services: Arc<ServiceTable>,
    policy: Arc<CompiledPolicy>,
    pub(super) applied: KernelState,
    /// The last kernel update failed: the next reconcile retries it.
    kernel_stale: bool,
    watched: BTreeSet<String>,
    pub stats: Stats,
    /// Where agent events go (GetAgentEvents); none in benches.
    events: Option<Arc<AgentEvents>>,
    pending: Vec<AgentEvent>,
    /// The policies last compiled, to tell updated from deleted.
    policies_seen: BTreeMap<String, Arc<crate::policy::NetworkPolicy>>,
    policy_revision: u64,
    /// A stable number per Service frontend, and the Service it last named,
    /// for SERVICE_* events.
    service_ids: BTreeMap<(IpAddr, u16), (u32, String, String)>,
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
            entries: BTreeMap::new(),
            claims: HashMap::new(),
            label_count: HashMap::new(),
            identities: HashMap::new(),
            table: Arc::new(EndpointTable::default()),
            services: Arc::default(),
            policy: Arc::new(CompiledPolicy::default()),
            applied: KernelState::default(),
            kernel_stale: true,
            watched: BTreeSet::new(),
            stats: Stats::default(),
            events: None,
            pending: Vec::new(),
            policies_seen: BTreeMap::new(),
            policy_revision: 0,
            service_ids: BTreeMap::new(),
        }
    }

    /// Sends what the reconciler does from now on as agent events.
    pub fn set_events(&mut self, events: Arc<AgentEvents>) {
        self.events = Some(events);
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
        let mut kernel_scope = Some(HashSet::new());
        if dirty.any() {
            self.stats.rebuilds += 1;
            let (identities_changed, changed_ips) = self.rebuild_table(&dirty);
            if dirty.policies {
                self.policy_events();
            }
            if dirty.services {
                self.service_events();
            }
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
                // Isolation flags may change for any endpoint.
                kernel_scope = None;
            }
            if dirty.nodes {
                kernel_scope = None;
            }
            if let Some(scope) = &mut kernel_scope {
                scope.extend(changed_ips);
            }
            published = Some(self.context());
        }
        if self.kernel_stale {
            kernel_scope = None;
        }
        if kernel_scope.as_ref().is_none_or(|s| !s.is_empty()) {
            let diff = match &kernel_scope {
                None => KernelDiff::between(&self.applied, &self.kernel_state()),
                Some(ips) => self.kernel_diff_for(ips),
            };
            match kernel.apply(&diff) {
                Ok(()) => {
                    self.stats.kernel_operations += diff.operations() as u64;
                    self.record_applied(&diff, kernel_scope.is_none());
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
            if let Some(e) = self.table.by_interface(&iface) {
                self.pending.push(agent_events::endpoint_regenerated(
                    e.proto.id, &e.labels, None,
                ));
            }
        }
        // The cgroups of the pods whose interfaces TC watches: the cgroup
        // programs stay off them.
        let covered: BTreeSet<u64> = self
            .table
            .by_cgroup_id
            .iter()
            .filter(|(_, e)| e.local && e.interface.as_ref().is_some_and(|i| wanted.contains(i)))
            .map(|(id, _)| *id)
            .collect();
        kernel.watch_cgroups(&covered);
        self.watched = wanted;
        if let Some(sink) = &self.events
            && !self.pending.is_empty()
        {
            sink.publish(self.pending.drain(..));
        }
        self.pending.clear();
        published
    }

    /// POLICY_UPDATED for each NetworkPolicy added or changed, POLICY_DELETED
    /// for each gone; each change is a new revision.
    fn policy_events(&mut self) {
        let now: BTreeMap<String, Arc<crate::policy::NetworkPolicy>> = self
            .state
            .policies
            .merged()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        let rules = |p: &crate::policy::NetworkPolicy| {
            (p.spec.ingress.as_ref().map_or(0, Vec::len)
                + p.spec.egress.as_ref().map_or(0, Vec::len)) as i64
        };
        for (k, p) in &now {
            if self
                .policies_seen
                .get(k)
                .is_none_or(|old| !Arc::ptr_eq(old, p) && **old != **p)
            {
                self.policy_revision += 1;
                self.pending.push(agent_events::policy(
                    true,
                    &p.metadata.namespace,
                    &p.metadata.name,
                    self.policy_revision,
                    rules(p),
                ));
            }
        }
        for (k, p) in &self.policies_seen {
            if !now.contains_key(k) {
                self.policy_revision += 1;
                self.pending.push(agent_events::policy(
                    false,
                    &p.metadata.namespace,
                    &p.metadata.name,
                    self.policy_revision,
                    rules(p),
                ));
            }
        }
        self.policies_seen = now;
    }

    /// SERVICE_UPSERTED for each frontend added or renamed, SERVICE_DELETED
    /// for each gone, each frontend numbered once.
    fn service_events(&mut self) {
        let mut now: Vec<(&(IpAddr, u16), &Arc<webb_proto::flow::Service>)> =
            self.services.iter().collect();
        now.sort_by_key(|(f, _)| **f);
        let mut next = self.service_ids.values().map(|v| v.0).max().unwrap_or(0) + 1;
        for (f, svc) in now {
            let named = (svc.namespace.clone(), svc.name.clone());
            let id = match self.service_ids.get_mut(f) {
                Some(v) if (v.1.clone(), v.2.clone()) == named => continue,
                Some(v) => {
                    (v.1, v.2) = named;
                    v.0
                }
                None => {
                    next += 1;
                    self.service_ids.insert(*f, (next - 1, named.0, named.1));
                    next - 1
                }
            };
            self.pending.push(agent_events::service_upsert(
                id,
                &f.0,
                f.1,
                &svc.namespace,
                &svc.name,
            ));
        }
        let services = self.services.clone();
        self.service_ids.retain(|f, v| {
            let keep = services.contains_key(f);
            if !keep {
                self.pending.push(agent_events::service_delete(v.0));
            }
            keep
        });
    }

    /// ENDPOINT_CREATED/DELETED for local pods, IPCACHE_* for every address
    /// the change adds, moves or removes: removals first, so an address that
    /// changed hands ends upserted.
    fn endpoint_events(&mut self, changes: &[EndpointChange]) {
        if self.events.is_none() {
            return;
        }
        for (old, new) in changes {
            if let Some(o) = old {
                for ip in &o.ips {
                    if new.as_ref().is_none_or(|n| !n.ips.contains(ip)) {
                        self.pending.push(agent_events::ipcache(
                            false,
                            ip,
                            o.identity,
                            None,
                            &o.namespace,
                            &o.pod,
                        ));
                    }
                }
            }
        }
        for (old, new) in changes {
            let was_local = old.as_ref().is_some_and(|o| o.local);
            let is_local = new.as_ref().is_some_and(|n| n.local);
            match (old, new) {
                (Some(o), _) if was_local && !is_local => {
                    self.pending.push(agent_events::endpoint_update(
                        false,
                        o.proto.id,
                        &o.labels,
                        &o.namespace,
                        &o.pod,
                    ))
                }
                (_, Some(n)) if is_local && !was_local => {
                    self.pending.push(agent_events::endpoint_update(
                        true,
                        n.proto.id,
                        &n.labels,
                        &n.namespace,
                        &n.pod,
                    ))
                }
                _ => {}
            }
            if let Some(n) = new {
                for ip in &n.ips {
                    let before = old
                        .as_ref()
                        .filter(|o| o.ips.contains(ip))
                        .map(|o| o.identity);
                    if before != Some(n.identity) {
                        self.pending.push(agent_events::ipcache(
                            true,
                            ip,
                            n.identity,
                            before,
                            &n.namespace,
                            &n.pod,
                        ));
                    }
                }
            }
        }
    }

    /// Brings the endpoints of the pods the updates touched up to date (all
    /// of them when something every endpoint depends on changed) and
    /// rebuilds the table if any differs. Returns whether the set of
    /// identities changed (when policy must be compiled again) and the
    /// addresses whose endpoint changed.
    fn rebuild_table(&mut self, dirty: &Dirty) -> (bool, HashSet<IpAddr>) {
        let keys: Vec<String> = if dirty.all_endpoints {
            let mut all: BTreeSet<String> = self.entries.keys().cloned().collect();
            all.extend(self.state.pods.merged().into_keys().map(str::to_owned));
            all.into_iter().collect()
        } else {
            dirty.pods.iter().cloned().collect()
        };
        let mut affected: BTreeSet<String> = keys.iter().cloned().collect();
        let mut touched: HashSet<IpAddr> = dirty.interfaces.iter().copied().collect();
        let mut changed_ips: HashSet<IpAddr> = HashSet::new();
        let mut sets_changed = false;
        let mut endpoints_changed = false;
        let mut changes: Vec<EndpointChange> = Vec::new();

        for k in &keys {
            let old = self.entries.remove(k);
            if let Some(old) = &old {
                for ip in &old.pod.ips {
                    if let Some(c) = self.claims.get_mut(ip) {
                        c.retain(|(_, owner)| owner != k);
                        if c.is_empty() {
                            self.claims.remove(ip);
                        }
                    }
                    touched.insert(*ip);
                }
                let n = self.label_count.get_mut(&old.labels).expect("counted");
                *n -= 1;
                if *n == 0 {
                    self.label_count.remove(&old.labels);
                    sets_changed = true;
                }
            }
            let new = self.state.pods.get(k).filter(|p| !p.host_network).cloned();
            match new {
                Some(pod) => {
                    let labels = match &old {
                        Some(o)
                            if o.pod.labels == pod.labels && o.pod.namespace == pod.namespace =>
                        {
                            o.labels.clone()
                        }
                        _ => Arc::from(k8s_labels(&label_map(&pod))),
                    };
                    let n = self.label_count.entry(labels.clone()).or_insert(0);
                    if *n == 0 {
                        sets_changed = true;
                    }
                    *n += 1;
                    for ip in &pod.ips {
                        self.claims
                            .entry(*ip)
                            .or_default()
                            .push((pod.created, k.clone()));
                        touched.insert(*ip);
                    }
                    self.entries.insert(
                        k.clone(),
                        Entry {
                            pod,
                            labels,
                            info: old.and_then(|o| o.info),
                        },
                    );
                }
                None => {
                    if let Some(info) = old.and_then(|o| o.info) {
                        endpoints_changed = true;
                        changed_ips.extend(info.ips.iter().copied());
                        changes.push((Some(info), None));
                    }
                }
            }
        }
        // Whoever claims an address that changed hands may win or lose it.
        for ip in &touched {
            for (_, k) in self.claims.get(ip).into_iter().flatten() {
                affected.insert(k.clone());
            }
        }
        if sets_changed {
            self.identities = identity::allocate(self.label_count.keys().map(|l| &l[..]))
                .into_iter()
                .map(|(l, id)| (Arc::from(l), id))
                .collect();
            // A new label set may move another's number (a collision).
            for (k, e) in &self.entries {
                if e.info.as_ref().map(|i| i.identity) != Some(self.identities[&e.labels]) {
                    affected.insert(k.clone());
                }
            }
        }

        let owners = self.state.owners.merged();
        for k in &affected {
            let Some(e) = self.entries.get(k) else {
                continue;
            };
            let pod = &e.pod;
            let ips: Vec<IpAddr> = pod
                .ips
                .iter()
                .filter(|ip| {
                    self.claims
                        .get(ip)
                        .and_then(|c| c.iter().max())
                        .is_some_and(|(_, owner)| owner == k)
                })
                .copied()
                .collect();
            let info = if ips.is_empty() {
                None
            } else {
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
                let identity = self.identities[&e.labels];
                let reusable = e.info.as_ref().filter(|i| {
                    i.identity == identity
                        && i.ips == ips
                        && i.local == local
                        && i.interface == interface
                        && i.node == pod.node
                        && i.labels[..] == e.labels[..]
                        && i.cgroup == pod.cgroup
                        && i.proto.workloads.first().map(|w| (&w.kind, &w.name))
                            == workload.as_ref().map(|(k, n)| (k, n))
                });
                match reusable {
                    Some(i) => Some(i.clone()),
                    None => {
                        self.stats.endpoints_rebuilt += 1;
                        Some(Arc::new(EndpointInfo::new(
                            pod, identity, workload, ips, local, interface,
                        )))
                    }
                }
            };
            let same = match (&e.info, &info) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                endpoints_changed = true;
                for i in e.info.iter().chain(info.iter()) {
                    changed_ips.extend(i.ips.iter().copied());
                }
                changes.push((e.info.clone(), info.clone()));
                if let Some(e) = self.entries.get_mut(k) {
                    e.info = info;
                }
            }
        }

        self.endpoint_events(&changes);
        if dirty.services {
            self.services = Arc::new(service_table(&self.state));
        }
        if endpoints_changed || dirty.nodes || dirty.namespaces || dirty.services || dirty.cgroups {
            let host_ips: HashSet<IpAddr> =
                self.state.host_ips(&self.node_name).into_iter().collect();
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
            let endpoints = self
                .entries
                .values()
                .filter_map(|e| e.info.clone())
                .collect();
            // Only what changed is re-indexed, unless everything may have.
            let mut table = if dirty.all_endpoints || self.table.endpoints.is_empty() {
                EndpointTable::build(endpoints, namespace_labels, host_ips, remote_nodes)
            } else {
                let mut t = self.table.derive(endpoints, &changes);
                t.namespace_labels = namespace_labels;
                t.host_ips = host_ips;
                t.remote_nodes = remote_nodes;
                t
            };
            table.services = self.services.clone();
            table.by_cgroup_id = self.cgroup_table();
            table.node_labels = self
                .state
                .nodes
                .merged()
                .get(self.node_name.as_str())
                .map(|n| n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            self.table = Arc::new(table);
        }
        (sets_changed, changed_ips)
    }

    /// Local pods by cgroup id: the kubelet's cgroups by pod UID, and the
    /// cgroups a file names. A host-network pod has no endpoint of its own
    /// (its address is the node's): it is named here with identity `host`,
    /// as Cilium numbers it.
    fn cgroup_table(&self) -> HashMap<u64, Arc<EndpointInfo>> {
        let mut out = HashMap::new();
        let mut by_uid: HashMap<&str, Arc<EndpointInfo>> = HashMap::new();
        let owners = self.state.owners.merged();
        if !self.state.cgroups.is_empty() {
            for pod in self.state.pods.values() {
                if pod.uid.is_empty() || pod.node.as_deref() != Some(self.node_name.as_str()) {
                    continue;
                }
                let info = match self.entries.get(&pod.key()).and_then(|e| e.info.clone()) {
                    Some(info) => info,
                    None if pod.host_network => host_network_info(pod, &owners),
                    None => continue,
                };
                by_uid.insert(pod.uid.as_str(), info);
            }
        }
        for (id, uid) in &self.state.cgroups {
            if let Some(info) = by_uid.get(uid.as_str()) {
                out.insert(*id, info.clone());
            }
        }
        for e in self.entries.values() {
            if let Some(info) = &e.info
                && let Some(path) = &info.cgroup
                && let Some(id) = super::cgroups::cgroup_id(path)
            {
                out.insert(id, info.clone());
            }
        }
        // Host-network pods a file names by their cgroup.
        for pod in self.state.pods.values() {
            if pod.host_network
                && let Some(path) = &pod.cgroup
                && let Some(id) = super::cgroups::cgroup_id(path)
            {
                out.insert(id, host_network_info(pod, &owners));
            }
        }
        out
    }

    /// What the kernel's endpoint map should hold for one address.
    fn kernel_entry(&self, ip: &IpAddr) -> Option<(u32, u32)> {
        kernel_entry(&self.table, &self.policy, ip)
    }

    /// The endpoint map changes for these addresses alone (policy and CIDRs
    /// unchanged).
    fn kernel_diff_for(&self, ips: &HashSet<IpAddr>) -> KernelDiff {
        let mut d = KernelDiff::default();
        for ip in ips {
            match (self.kernel_entry(ip), self.applied.endpoints.get(ip)) {
                (Some(want), have) if have != Some(&want) => {
                    d.endpoints_set.push((*ip, want.0, want.1))
                }
                (None, Some(_)) => d.endpoints_removed.push(*ip),
                _ => {}
            }
        }
        d.endpoints_set.sort();
        d.endpoints_removed.sort();
        d
    }

    /// Updates what the kernel holds after a diff was applied.
    fn record_applied(&mut self, d: &KernelDiff, full: bool) {
        if full {
            self.applied = self.kernel_state();
            return;
        }
        for ip in &d.endpoints_removed {
            self.applied.endpoints.remove(ip);
        }
        for (ip, id, flags) in &d.endpoints_set {
            self.applied.endpoints.insert(*ip, (*id, *flags));
        }
    }

    pub(super) fn kernel_state(&self) -> KernelState {
        KernelState::of(&self.table, &self.policy, self.policy_enabled)
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

    /// What `webb status` shows.
    pub fn status(&self) -> super::Status {
        super::Status {
            endpoints: self.table.endpoints.len() as u64,
            sources: self
                .state
                .health
                .iter()
                .map(|(s, h)| {
                    let state = match h {
                        super::Health::Synced => "synced".to_owned(),
                        super::Health::Failing(why) => why.clone(),
                    };
                    (s.name().to_owned(), state)
                })
                .collect(),
        }
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
    let dirty = std::mem::take(&mut r.dirty);
    r.rebuild_table(&dirty);
    Arc::try_unwrap(std::mem::take(&mut r.table)).unwrap_or_else(|t| {
        EndpointTable::build(
            t.endpoints.clone(),
            t.namespace_labels.clone(),
            t.host_ips.clone(),
            t.remote_nodes.clone(),
        )
    })
}

/// Every Service frontend. Two Services claiming one frontend (a
/// misconfiguration the API server refuses for ClusterIPs, but possible with
/// external IPs) go to the first by namespace and name, so every node names
/// them alike.
fn service_table(state: &ClusterState) -> ServiceTable {
    let mut out = ServiceTable::new();
    for svc in state.services.merged().into_values() {
        let named = Arc::new(webb_proto::flow::Service {
            name: svc.name.clone(),
            namespace: svc.namespace.clone(),
        });
        for ip in &svc.ips {
            for (_, port) in &svc.ports {
                out.entry((*ip, *port)).or_insert_with(|| named.clone());
            }
        }
    }
    out
}

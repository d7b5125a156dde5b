//! What the agent knows about the cluster, and the one place that turns it
//! into names, identities, policy and kernel map contents.
//!
//! Sources (the endpoints and policy files in [`file`], the Kubernetes API in
//! [`k8s`], the node's own links in [`links`]) know nothing of each other or
//! of the kernel: each sends [`Update`]s on one channel. The [`Reconciler`]
//! folds them into a [`ClusterState`] and, once per batch of updates,
//! rebuilds what they changed: the endpoint table (endpoints of unchanged
//! pods are kept, so flows in the ring keep sharing them), identities, the
//! compiled policy only when something policy depends on changed, and the
//! kernel maps as a [`KernelDiff`] against what was applied last. It
//! publishes the result as the decoder's [`Context`]. The kernel is behind
//! the [`Kernel`] trait, so all of this is tested without one.
//!
//! This is the relay's `pool.rs` shape: many sources, one owner of the state.

pub mod cgroups;
pub mod file;
pub mod identity;
pub mod k8s;
pub mod links;
pub mod reconcile;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
};

pub use reconcile::{Kernel, KernelDiff, KernelState, Reconciler};

use crate::policy::NetworkPolicy;

/// Who said a fact. Two sources may describe the same object (a lab file and
/// the API); the API wins for a pod both name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    File,
    Kube,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Kube => "kubernetes",
        }
    }
}

/// A pod as naming and policy need it, and no more: the API's Pod objects are
/// slimmed to this on receipt, so a cluster-wide cache stays small.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub ips: Vec<IpAddr>,
    /// The node it is scheduled on (`spec.nodeName`); `None` in a file means
    /// "decide from interface and cgroup", as the file format always did.
    pub node: Option<String>,
    /// The pod's controlling owner (`kind`, `name`), resolved to a workload
    /// through [`Owner`]s.
    pub owner: Option<(String, String)>,
    /// A workload stated outright (the endpoints file).
    pub workload: Option<(String, String)>,
    /// Shares the node's network namespace: its addresses are the node's.
    pub host_network: bool,
    /// `metadata.creationTimestamp` in seconds: when two pods claim one
    /// address, the newer one owns it.
    pub created: i64,
    /// Node-local facts a file states outright; API pods get their interface
    /// from [`links`] instead.
    pub interface: Option<String>,
    pub cgroup: Option<PathBuf>,
}

impl Pod {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
}

/// A Service's frontends: a flow to (or a reply from) one of these
/// address:port pairs is named with the Service (`destination_service`,
/// `source_service`), as Cilium names flows by their frontend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// ClusterIPs, external IPs and load-balancer ingress addresses.
    pub ips: Vec<IpAddr>,
    /// `(IP protocol number, port)`.
    pub ports: Vec<(u8, u16)>,
}

/// An intermediate owner (a ReplicaSet, a Job) and its own controller, so
/// a pod's workload is named as Hubble names it (the Deployment, the CronJob).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub controller: Option<(String, String)>,
}

/// One object kind's change from one source.
#[derive(Debug, Clone)]
pub enum Change<T> {
    /// Everything the source knows of this kind now (a list, a re-list, a
    /// file read): what it said before and does not say now is gone.
    Replace(Vec<T>),
    Upsert(T),
    /// By key (`namespace/name`, or `name` for cluster-scoped kinds).
    Delete(String),
}

/// The health of a source, for `webb status` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Every watch has listed and is watching.
    Synced,
    /// Not (or no longer) connected: the message says why and what to fix.
    Failing(String),
}

#[derive(Debug, Clone)]
pub enum Update {
    Pods(Source, Change<Pod>),
    Namespaces(Source, Change<Namespace>),
    Policies(Source, Change<NetworkPolicy>),
    Nodes(Source, Change<Node>),
    Owners(Source, Change<Owner>),
    Services(Source, Change<Service>),
    /// The node's own addresses (identity `host`), as a source sees them.
    HostIps(Source, Vec<IpAddr>),
    /// The host-side interface of every local address the links source can
    /// place (routed or bridged veths), complete each time.
    Interfaces(BTreeMap<IpAddr, String>),
    /// Every local pod cgroup by id, to the pod's UID ([`cgroups`]),
    /// complete each time.
    Cgroups(BTreeMap<u64, String>),
    Health(Source, Health),
}

/// Something a store can key.
pub trait Keyed {
    fn key(&self) -> String;
}

impl Keyed for Pod {
    fn key(&self) -> String {
        Pod::key(self)
    }
}
impl Keyed for Namespace {
    fn key(&self) -> String {
        self.name.clone()
    }
}
impl Keyed for Node {
    fn key(&self) -> String {
        self.name.clone()
    }
}
impl Keyed for Service {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
impl Keyed for Owner {
    fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.kind, self.name)
    }
}
impl Keyed for NetworkPolicy {
    fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

/// The objects of one kind, per source.
#[derive(Debug)]
pub struct Store<T> {
    by_source: BTreeMap<Source, BTreeMap<String, Arc<T>>>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Self {
            by_source: BTreeMap::new(),
        }
    }
}

impl<T: Keyed + PartialEq> Store<T> {
    /// Applies a change; returns the keys whose object differs afterwards.
    pub fn apply(&mut self, source: Source, change: Change<T>) -> Vec<String> {
        let objects = self.by_source.entry(source).or_default();
        match change {
            Change::Replace(all) => {
                let mut new: BTreeMap<String, Arc<T>> = BTreeMap::new();
                let mut changed = Vec::new();
                for o in all {
                    let k = o.key();
                    // Keep the old Arc for an unchanged object.
                    let v = match objects.get(&k) {
                        Some(old) if **old == o => old.clone(),
                        _ => {
                            changed.push(k.clone());
                            Arc::new(o)
                        }
                    };
                    new.insert(k, v);
                }
                changed.extend(objects.keys().filter(|k| !new.contains_key(*k)).cloned());
                *objects = new;
                changed
            }
            Change::Upsert(o) => {
                let k = o.key();
                if objects.get(&k).is_some_and(|old| **old == o) {
                    return Vec::new();
                }
                objects.insert(k.clone(), Arc::new(o));
                vec![k]
            }
            Change::Delete(k) => match objects.remove(&k) {
                Some(_) => vec![k],
                None => Vec::new(),
            },
        }
    }

    /// The object a key names now: the later source (the API) wins.
    pub fn get(&self, key: &str) -> Option<&Arc<T>> {
        self.by_source.values().rev().find_map(|o| o.get(key))
    }

    /// Every object, one per key: the later source (the API) wins.
    pub fn merged(&self) -> BTreeMap<&str, &Arc<T>> {
        let mut out = BTreeMap::new();
        for objects in self.by_source.values() {
            for (k, v) in objects {
                out.insert(k.as_str(), v);
            }
        }
        out
    }

    /// Every object of every source, without merging (a key two sources
    /// hold comes twice).
    pub fn values(&self) -> impl Iterator<Item = &Arc<T>> {
        self.by_source.values().flat_map(|m| m.values())
    }

    pub fn len(&self) -> usize {
        self.by_source.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything the sources said, as they said it.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub pods: Store<Pod>,
    pub namespaces: Store<Namespace>,
    pub policies: Store<NetworkPolicy>,
    pub nodes: Store<Node>,
    pub owners: Store<Owner>,
    pub services: Store<Service>,
    pub host_ips: BTreeMap<Source, Vec<IpAddr>>,
    pub interfaces: BTreeMap<IpAddr, String>,
    pub cgroups: BTreeMap<u64, String>,
    pub health: BTreeMap<Source, Health>,
}

/// What `webb status` shows of the cluster state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Endpoints (pods) named.
    pub endpoints: u64,
    /// Each source's state: "synced", or why not.
    pub sources: BTreeMap<String, String>,
}

/// What an update touched, so a rebuild redoes only what depends on it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Pods whose object changed, by key.
    pub pods: std::collections::HashSet<String>,
    /// Addresses whose discovered interface changed.
    pub interfaces: Vec<IpAddr>,
    /// Something every endpoint may depend on (owners, nodes, host
    /// addresses): rebuild them all.
    pub all_endpoints: bool,
    pub policies: bool,
    pub namespaces: bool,
    pub nodes: bool,
    pub services: bool,
    pub cgroups: bool,
}

impl Dirty {
    pub fn any(&self) -> bool {
        !self.pods.is_empty()
            || !self.interfaces.is_empty()
            || self.all_endpoints
            || self.policies
            || self.namespaces
            || self.nodes
            || self.services
            || self.cgroups
    }
}

impl ClusterState {
    pub fn apply(&mut self, update: Update, dirty: &mut Dirty) {
        match update {
            Update::Pods(s, c) => dirty.pods.extend(self.pods.apply(s, c)),
            Update::Owners(s, c) => dirty.all_endpoints |= !self.owners.apply(s, c).is_empty(),
            Update::Namespaces(s, c) => dirty.namespaces |= !self.namespaces.apply(s, c).is_empty(),
            Update::Policies(s, c) => dirty.policies |= !self.policies.apply(s, c).is_empty(),
            Update::Nodes(s, c) => dirty.nodes |= !self.nodes.apply(s, c).is_empty(),
            Update::Services(s, c) => dirty.services |= !self.services.apply(s, c).is_empty(),
            Update::HostIps(s, ips) => {
                if self.host_ips.get(&s) != Some(&ips) {
                    self.host_ips.insert(s, ips);
                    dirty.nodes = true;
                }
            }
            Update::Interfaces(map) => {
                if self.interfaces != map {
                    let old = std::mem::take(&mut self.interfaces);
                    dirty.interfaces.extend(
                        map.iter()
                            .filter(|(ip, i)| old.get(ip) != Some(i))
                            .map(|(ip, _)| *ip),
                    );
                    dirty
                        .interfaces
                        .extend(old.keys().filter(|ip| !map.contains_key(ip)));
                    self.interfaces = map;
                }
            }
            Update::Cgroups(map) => {
                if self.cgroups != map {
                    self.cgroups = map;
                    dirty.cgroups = true;
                }
            }
            Update::Health(s, h) => {
                self.health.insert(s, h);
            }
        }
    }

    /// The workload a pod belongs to, as Hubble names it: the owner chain
    /// followed through ReplicaSets and Jobs to their Deployment or CronJob.
    /// A ReplicaSet not seen (yet) is named after its Deployment from the
    /// `pod-template-hash` suffix, as Kubernetes builds the name.
    pub fn workload_of(
        pod: &Pod,
        owners: &BTreeMap<&str, &Arc<Owner>>,
    ) -> Option<(String, String)> {
        if let Some(w) = &pod.workload {
            return Some(w.clone());
        }
        let (kind, name) = pod.owner.as_ref()?;
        let key = format!("{}/{kind}/{name}", pod.namespace);
        if let Some(o) = owners.get(key.as_str()) {
            if let Some((ck, cn)) = &o.controller
                && matches!(ck.as_str(), "Deployment" | "CronJob")
            {
                return Some((ck.clone(), cn.clone()));
            }
            return Some((kind.clone(), name.clone()));
        }
        if kind == "ReplicaSet"
            && let Some(hash) = pod.labels.get("pod-template-hash")
            && let Some(deployment) = name.strip_suffix(&format!("-{hash}"))
        {
            return Some(("Deployment".to_owned(), deployment.to_owned()));
        }
        Some((kind.clone(), name.clone()))
    }

    /// The node's own addresses from every source.
    pub fn host_ips(&self, node_name: &str) -> BTreeSet<IpAddr> {
        let mut ips: BTreeSet<IpAddr> = self.host_ips.values().flatten().copied().collect();
        if let Some(n) = self.nodes.merged().get(node_name) {
            ips.extend(n.addresses.iter().copied());
        }
        ips
    }
}

/// Applies updates as they arrive, each burst as one batch: everything
/// queued is folded in before one rebuild. Once a second it also retries
/// what could not be done yet (an interface that does not exist yet, a
/// failed kernel update). Runs until every source is gone.
pub async fn run(
    mut reconciler: Reconciler,
    mut updates: tokio::sync::mpsc::Receiver<Update>,
    mut kernel: impl Kernel,
    mut publish: impl FnMut(Option<crate::decode::Context>, &Reconciler),
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut health = BTreeMap::new();
    loop {
        tokio::select! {
            u = updates.recv() => {
                let Some(u) = u else { return };
                reconciler.apply(u);
                while let Ok(u) = updates.try_recv() {
                    reconciler.apply(u);
                }
            }
            _ = tick.tick() => {}
        }
        let ctx = reconciler.reconcile(&mut kernel);
        publish(ctx, &reconciler);
        if reconciler.state.health != health {
            health = reconciler.state.health.clone();
            for (s, h) in &health {
                match h {
                    Health::Synced => tracing::info!(source = s.name(), "names every pod"),
                    Health::Failing(why) => tracing::warn!(
                        source = s.name(),
                        "{why}; flows are named from what is known so far (by address only for the rest)"
                    ),
                }
            }
        }
    }
}

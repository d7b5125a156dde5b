//! The Kubernetes API as a source: one kube-rs watcher per kind.
//!
//! Each watcher lists (in pages), then watches from the list's
//! resourceVersion with bookmarks, resumes from the last version it saw when
//! a watch ends, lists again on `410 Gone`, and backs off with jitter while
//! the API server fails. A list becomes a [`Change::Replace`], so what was
//! deleted while the agent was not watching is gone after the re-list.
//!
//! Objects are slimmed to what naming and policy need on receipt (see
//! [`super::Pod`]); ReplicaSets and Jobs are watched as metadata only, for
//! their owners. Every request this module makes is one of the verbs in
//! [`RBAC`], which the deploy test holds `deploy/agent.yaml`'s ClusterRole to.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use k8s_openapi::{
    api::{
        apps::v1::ReplicaSet,
        batch::v1::Job,
        core::v1::{Namespace as KNamespace, Node as KNode, Pod as KPod, Service as KService},
        networking::v1::NetworkPolicy as KNetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{
    Api, Client, Resource,
    api::PartialObjectMeta,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};
use tokio::sync::mpsc;

use super::{Change, Health, Namespace, Node, Owner, Pod, Service, Source, Update};
use crate::policy::NetworkPolicy;

/// Every API request the agent makes: (API group, resource, verbs). The
/// ClusterRole in `deploy/agent.yaml` grants exactly these.
pub const RBAC: &[(&str, &str, &[&str])] = &[
    ("", "pods", &["list", "watch"]),
    ("", "namespaces", &["list", "watch"]),
    ("", "nodes", &["list", "watch"]),
    ("", "services", &["list", "watch"]),
    ("networking.k8s.io", "networkpolicies", &["list", "watch"]),
    ("apps", "replicasets", &["list", "watch"]),
    ("batch", "jobs", &["list", "watch"]),
];

/// How to reach the API server.
#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    /// A kubeconfig file; otherwise `KUBECONFIG`, `~/.kube/config` or the
    /// pod's service account, as kubectl finds them.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// A client for the API server. Only reading the configuration can fail
/// here; an unreachable server shows in the watches.
pub async fn client(opts: &KubeOptions) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: opts.context.clone(),
        ..Default::default()
    };
    let config = match &opts.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None if opts.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .context("--kube-context: cannot load the kubeconfig")?,
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration: not in a pod (no service account) and no kubeconfig \
             (--kubeconfig, KUBECONFIG or ~/.kube/config)",
        )?,
    };
    Client::try_from(config).context("cannot build a Kubernetes client")
}

/// Health of each watch, sent to the reconciler as one [`Health`].
#[derive(Default)]
struct Watches {
    state: Mutex<BTreeMap<&'static str, Result<(), String>>>,
}

impl Watches {
    /// Records a watch's state; returns the source's health if it changed.
    fn set(&self, resource: &'static str, now: Result<(), String>) -> Option<Health> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = health_of(&s);
        s.insert(resource, now);
        let after = health_of(&s);
        (before != after).then_some(after)
    }
}

fn health_of(s: &BTreeMap<&'static str, Result<(), String>>) -> Health {
    let failing: Vec<&str> = s
        .values()
        .filter_map(|r| r.as_ref().err())
        .map(String::as_str)
        .collect();
    if !failing.is_empty() {
        Health::Failing(failing.join("; "))
    } else if s.len() == RBAC.len() {
        Health::Synced
    } else {
        Health::Failing("listing the cluster".to_owned())
    }
}

/// Starts one watch per kind; they run until `tx` is closed.
pub fn spawn(client: Client, tx: mpsc::Sender<Update>) -> Vec<tokio::task::JoinHandle<()>> {
    let s = Arc::new(Watches::default());
    let c = client;
    vec![
        tokio::spawn(watch(
            Api::<KPod>::all(c.clone()),
            "pods",
            pod,
            Update::Pods,
            tx.clone(),
            s.clone(),
        )),
        tokio::spawn(watch(
            Api::<KNamespace>::all(c.clone()),
            "namespaces",
            namespace,
            Update::Namespaces,
            tx.clone(),
            s.clone(),
        )),
        tokio::spawn(watch(
            Api::<KNode>::all(c.clone()),
            "nodes",
            node,
            Update::Nodes,
            tx.clone(),
            s.clone(),
        )),
        tokio::spawn(watch(
            Api::<KService>::all(c.clone()),
            "services",
            service,
            Update::Services,
            tx.clone(),
            s.clone(),
        )),
        tokio::spawn(watch(
            Api::<KNetworkPolicy>::all(c.clone()),
            "networkpolicies",
            network_policy,
            Update::Policies,
            tx.clone(),
            s.clone(),
        )),
        tokio::spawn(watch_owners(
            Api::<PartialObjectMeta<ReplicaSet>>::all(c.clone()),
            "replicasets",
            tx.clone(),
            s.clone(),
        )),
        tokio::spawn(watch_owners(
            Api::<PartialObjectMeta<Job>>::all(c),
            "jobs",
            tx,
            s,
        )),
    ]
}

/// Describes a watch failure so that the reader knows what to fix.
fn describe(resource: &str, e: &watcher::Error) -> String {
    let api = match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => Some(k),
        _ => None,
    };
    match api {
        Some(kube::Error::Api(s)) if s.code == 403 => format!(
            "forbidden to list and watch {resource}: grant the agent's service account \
             `list` and `watch` on {resource} (deploy/agent.yaml's ClusterRole): {}",
            s.message
        ),
        Some(kube::Error::Api(s)) if s.code == 401 => format!(
            "the API server refused the agent's credentials for {resource} (401): {}",
            s.message
        ),
        _ => format!("watching {resource}: {e}"),
    }
}

/// Runs one kind's watch: a list becomes a Replace, later events Upserts and
/// Deletes. An object that cannot be used (a policy with a named port) is
/// reported and left out.
async fn watch<K, T>(
    api: Api<K>,
    resource: &'static str,
    convert: fn(K) -> anyhow::Result<T>,
    wrap: fn(Source, Change<T>) -> Update,
    tx: mpsc::Sender<Update>,
    watches: Arc<Watches>,
) where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    T: super::Keyed,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listing: Vec<T> = Vec::new();
    let mut failing = false;
    loop {
        let event = match stream.try_next().await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                let msg = describe(resource, &e);
                if !failing {
                    tracing::warn!("{msg} (retrying with backoff)");
                }
                failing = true;
                if let Some(h) = watches.set(resource, Err(msg)) {
                    let _ = tx.send(Update::Health(Source::Kube, h)).await;
                }
                continue;
            }
        };
        let update = match event {
            Event::Init => {
                listing.clear();
                None
            }
            Event::InitApply(o) => {
                match convert(o) {
                    Ok(t) => listing.push(t),
                    Err(e) => tracing::warn!("{resource}: {e:#}"),
                }
                None
            }
            Event::InitDone => {
                if failing {
                    tracing::info!("watching {resource} again");
                }
                failing = false;
                // The list first, then the health: "synced" means named.
                let list = wrap(Source::Kube, Change::Replace(std::mem::take(&mut listing)));
                if tx.send(list).await.is_err() {
                    return;
                }
                if let Some(h) = watches.set(resource, Ok(())) {
                    if h == Health::Synced {
                        tracing::info!("Kubernetes: every watch has listed and is watching");
                    }
                    let _ = tx.send(Update::Health(Source::Kube, h)).await;
                }
                None
            }
            Event::Apply(o) => match convert(o) {
                Ok(t) => Some(wrap(Source::Kube, Change::Upsert(t))),
                Err(e) => {
                    tracing::warn!("{resource}: {e:#}");
                    None
                }
            },
            Event::Delete(o) => Some(wrap(Source::Kube, Change::Delete(key_of(o.meta())))),
        };
        if let Some(u) = update
            && tx.send(u).await.is_err()
        {
            return;
        }
    }
}

/// Metadata-only watch of an intermediate owner kind (ReplicaSets, Jobs).
async fn watch_owners<K>(
    api: Api<PartialObjectMeta<K>>,
    resource: &'static str,
    tx: mpsc::Sender<Update>,
    watches: Arc<Watches>,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listing = Vec::new();
    let mut failing = false;
    let kind = K::kind(&()).into_owned();
    loop {
        let event: Event<PartialObjectMeta<K>> = match stream.try_next().await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                let msg = describe(resource, &e);
                if !failing {
                    tracing::warn!("{msg} (retrying with backoff)");
                }
                failing = true;
                if let Some(h) = watches.set(resource, Err(msg)) {
                    let _ = tx.send(Update::Health(Source::Kube, h)).await;
                }
                continue;
            }
        };
        let owner = |m: &ObjectMeta| Owner {
            namespace: m.namespace.clone().unwrap_or_default(),
            kind: kind.clone(),
            name: m.name.clone().unwrap_or_default(),
            controller: controller(m.owner_references.as_deref()),
        };
        let update = match event {
            Event::Init => {
                listing.clear();
                None
            }
            Event::InitApply(o) => {
                listing.push(owner(&o.metadata));
                None
            }
            Event::InitDone => {
                failing = false;
                let list =
                    Update::Owners(Source::Kube, Change::Replace(std::mem::take(&mut listing)));
                if tx.send(list).await.is_err() {
                    return;
                }
                if let Some(h) = watches.set(resource, Ok(())) {
                    let _ = tx.send(Update::Health(Source::Kube, h)).await;
                }
                None
            }
            Event::Apply(o) => Some(Change::Upsert(owner(&o.metadata))),
            Event::Delete(o) => {
                let o = owner(&o.metadata);
                Some(Change::Delete(super::Keyed::key(&o)))
            }
        };
        if let Some(c) = update
            && tx.send(Update::Owners(Source::Kube, c)).await.is_err()
        {
            return;
        }
    }
}

fn key_of(m: &ObjectMeta) -> String {
    let name = m.name.clone().unwrap_or_default();
    match &m.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    }
}

fn controller(refs: Option<&[OwnerReference]>) -> Option<(String, String)> {
    refs?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| (r.kind.clone(), r.name.clone()))
}

fn labels(m: &ObjectMeta) -> BTreeMap<String, String> {
    m.labels.clone().unwrap_or_default()
}

fn created(m: &ObjectMeta) -> i64 {
    m.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

/// A Pod slimmed to what naming needs. A pod that has finished (Succeeded,
/// Failed) no longer owns its addresses: they may already be another pod's.
pub fn pod(p: KPod) -> anyhow::Result<Pod> {
    let m = &p.metadata;
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let mut ips: Vec<IpAddr> = Vec::new();
    if !finished && let Some(s) = status {
        for a in s.pod_ips.iter().flatten() {
            if let Ok(ip) = a.ip.parse() {
                ips.push(ip);
            }
        }
        if ips.is_empty()
            && let Some(Ok(ip)) = s.pod_ip.as_deref().map(str::parse)
        {
            ips.push(ip);
        }
    }
    Ok(Pod {
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        labels: labels(m),
        ips,
        node: spec.and_then(|s| s.node_name.clone()),
        owner: controller(m.owner_references.as_deref()),
        workload: None,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        created: created(m),
        interface: None,
        cgroup: None,
    })
}

pub fn namespace(n: KNamespace) -> anyhow::Result<Namespace> {
    Ok(Namespace {
        name: n.metadata.name.clone().unwrap_or_default(),
        labels: labels(&n.metadata),
    })
}

pub fn node(n: KNode) -> anyhow::Result<Node> {
    let addresses = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    Ok(Node {
        name: n.metadata.name.clone().unwrap_or_default(),
        addresses,
        labels: labels(&n.metadata),
    })
}

/// A Service's frontends: its ClusterIPs (not `None`, a headless Service),
/// external IPs and load-balancer ingress addresses, with its ports.
pub fn service(s: KService) -> anyhow::Result<Service> {
    let spec = s.spec.as_ref();
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut add = |a: &str| {
        if let Ok(ip) = a.parse()
            && !ips.contains(&ip)
        {
            ips.push(ip);
        }
    };
    if let Some(spec) = spec {
        spec.cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .chain(spec.external_ips.iter().flatten())
            .for_each(|a| add(a));
    }
    let ingress = s
        .status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    for i in ingress.into_iter().flatten() {
        if let Some(a) = &i.ip {
            add(a);
        }
    }
    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => 6,
                "UDP" => 17,
                "SCTP" => 132,
                _ => return None,
            };
            u16::try_from(p.port).ok().map(|port| (proto, port))
        })
        .collect();
    Ok(Service {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
        ips,
        ports,
    })
}

/// The API's NetworkPolicy into the one the file gives: the same compiler
/// and checks apply (a named port is refused, with the policy's name).
pub fn network_policy(p: KNetworkPolicy) -> anyhow::Result<NetworkPolicy> {
    let name = key_of(&p.metadata);
    let value = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": p.metadata.name,
            "namespace": p.metadata.namespace,
            "labels": p.metadata.labels.unwrap_or_default(),
        },
        "spec": p.spec,
    });
    let text = serde_json::to_string(&value)?;
    let mut all = crate::policy::parse(&text).with_context(|| format!("NetworkPolicy {name}"))?;
    all.pop()
        .ok_or_else(|| anyhow::anyhow!("NetworkPolicy {name}: empty"))
}

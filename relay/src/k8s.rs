//! `--peer-k8s-service NAMESPACE/NAME`: the nodes are the ready endpoints
//! of a Kubernetes Service's EndpointSlices (the agents' headless Service),
//! watched through the API server (kube-rs), so an agent that starts, stops
//! or moves is added or removed as soon as its endpoint changes, without
//! DNS polling. Needs `list` and `watch` on `endpointslices`
//! (discovery.k8s.io) in that namespace.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};

use crate::pool::Pool;

/// Which Service, and how to reach the API server.
#[derive(Debug, Clone)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

impl ServiceRef {
    pub fn parse(
        s: &str,
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
    ) -> anyhow::Result<Self> {
        let (namespace, name) = s
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--peer-k8s-service {s:?}: expected NAMESPACE/NAME, e.g. kube-system/webb-agent"
                )
            })?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kubeconfig,
            context,
        })
    }
}

pub async fn client(svc: &ServiceRef) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: svc.context.clone(),
        ..Default::default()
    };
    let config = match &svc.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}: cannot read it", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        None if svc.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await.context(
            "--peer-k8s-service: no Kubernetes configuration (not in a pod, no --kubeconfig, KUBECONFIG or ~/.kube/config)",
        )?,
    };
    Ok(Client::try_from(config)?)
}

/// The agents an EndpointSlice lists: `address:port`, and its node's name.
type Agents = Vec<(String, Option<String>)>;

/// The agents of each slice, by slice name.
type Slices = BTreeMap<String, Agents>;

fn endpoints_of(slice: &EndpointSlice) -> Agents {
    // The agents' gRPC port: the port named grpc, else the only one.
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("grpc"))
        .or_else(|| (ports.len() == 1).then(|| &ports[0]))
        .and_then(|p| p.port)
        .unwrap_or(4244);
    slice
        .endpoints
        .iter()
        // Ready unless said otherwise, as the API defines it.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| {
            let a = e.addresses.first()?;
            let addr = match a.parse::<std::net::IpAddr>() {
                Ok(ip) => std::net::SocketAddr::new(ip, port as u16).to_string(),
                Err(_) => format!("{a}:{port}"),
            };
            Some((addr, e.node_name.clone()))
        })
        .collect()
}

/// Keeps the pool equal to the Service's ready endpoints until the process
/// ends. An API failure is logged with what to fix and retried with backoff;
/// the nodes known so far stay.
pub async fn follow(pool: Arc<Pool>, svc: ServiceRef, client: Client) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &svc.namespace);
    let config =
        watcher::Config::default().labels(&format!("kubernetes.io/service-name={}", svc.name));
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    // Slice name → its endpoints; the pool holds their union.
    let mut slices: Slices = BTreeMap::new();
    let mut listing: Option<Slices> = None;
    let mut known: BTreeSet<String> = BTreeSet::new();
    loop {
        let event = match stream.try_next().await {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(
                    "--peer-k8s-service {}/{}: {e} (the relay needs list and watch on endpointslices in {}; retrying)",
                    svc.namespace,
                    svc.name,
                    svc.namespace
                );
                continue;
            }
        };
        let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
        match event {
            Event::Init => listing = Some(BTreeMap::new()),
            Event::InitApply(s) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(name(&s), endpoints_of(&s));
                }
            }
            Event::InitDone => slices = listing.take().unwrap_or_default(),
            Event::Apply(s) => {
                slices.insert(name(&s), endpoints_of(&s));
            }
            Event::Delete(s) => {
                slices.remove(&name(&s));
            }
        }
        if listing.is_some() {
            continue;
        }
        let now: BTreeMap<&String, &Option<String>> = slices
            .values()
            .flatten()
            .map(|(addr, node)| (addr, node))
            .collect();
        for (addr, node) in &now {
            if !known.contains(*addr)
                && let Err(e) = pool.add(addr, node.as_deref(), None)
            {
                tracing::warn!("--peer-k8s-service: {e:#}");
            }
        }
        for addr in known.iter().filter(|a| !now.contains_key(a)) {
            pool.remove(addr);
        }
        known = now.keys().map(|a| (*a).clone()).collect();
    }
}

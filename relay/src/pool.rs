//! The node pool: which agents exist (static peers, a Peer service, or a DNS
//! name), whether each is reachable, and what it last reported.
//!
//! Every node is checked once a second while connected (ServerStatus with a
//! one-second deadline), so a dead node is `NODE_UNAVAILABLE` within about
//! two seconds; unreachable nodes are retried with backoff up to five
//! seconds. State changes are broadcast to open GetFlows streams.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt as _;
use tokio::sync::broadcast;
use tonic::transport::Channel;
use webb_proto::{
    DEFAULT_AGENT_PORT,
    observer::{
        GetNodesRequest, ServerStatusRequest, ServerStatusResponse, observer_client::ObserverClient,
    },
    peer::{ChangeNotificationType, NotifyRequest, peer_client::PeerClient},
    relay::NodeState,
    transport::{self, Address, ClientTls},
};

/// How often a connected node is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between retries of an unreachable node.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One node as the pool knows it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's own name once it has told us; its address until then.
    pub name: String,
    pub address: String,
    pub state: NodeState,
    pub tls: bool,
    pub server_name: String,
    pub status: Option<ServerStatusResponse>,
    pub last_error: String,
    pub channel: Channel,
}

/// A change of a node's state, for open streams.
#[derive(Debug, Clone)]
pub struct NodeEvent {
    pub name: String,
    pub address: String,
    pub state: NodeState,
    pub message: String,
}

struct Entry {
    info: NodeInfo,
    /// Stops the node's check loop when the node is removed.
    stop: tokio::sync::watch::Sender<bool>,
}

pub struct Pool {
    nodes: Mutex<BTreeMap<String, Entry>>,
    events: broadcast::Sender<NodeEvent>,
    tls: Option<ClientTls>,
    dial_timeout: Duration,
}

impl Pool {
    pub fn new(tls: Option<ClientTls>, dial_timeout: Duration) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(Self {
            nodes: Mutex::new(BTreeMap::new()),
            events,
            tls,
            dial_timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Every node, sorted by address.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.lock().values().map(|e| e.info.clone()).collect()
    }

    pub fn connected(&self) -> Vec<NodeInfo> {
        self.nodes()
            .into_iter()
            .filter(|n| n.state == NodeState::NodeConnected)
            .collect()
    }

    /// Adds a node by address (`host:port`, or an IP without port meaning
    /// 4244) and starts checking it. Adding a known address does nothing.
    pub fn add(
        self: &Arc<Self>,
        address: &str,
        name: Option<&str>,
        server_name: Option<&str>,
    ) -> anyhow::Result<()> {
        let addr = Address::parse(address, DEFAULT_AGENT_PORT)
            .map_err(|e| anyhow::anyhow!("peer {address:?}: {e}"))?;
        let key = addr.authority();
        let mut tls = self.tls.clone();
        if let (Some(t), Some(sn)) = (tls.as_mut(), server_name)
            && t.server_name.is_none()
        {
            t.server_name = Some(sn.to_owned());
        }
        let channel = transport::connect_lazy(&addr, tls.as_ref(), self.dial_timeout)
            .map_err(|e| anyhow::anyhow!("peer {address:?}: {e}"))?;
        let info = NodeInfo {
            name: name.unwrap_or(&key).to_owned(),
            address: key.clone(),
            state: NodeState::UnknownNodeState,
            tls: tls.is_some() || addr.tls,
            server_name: tls
                .as_ref()
                .and_then(|t| t.server_name.clone())
                .unwrap_or_default(),
            status: None,
            last_error: String::new(),
            channel,
        };
        self.insert(info);
        Ok(())
    }

    /// Adds a node reached over an existing channel (tests use in-memory
    /// transports).
    #[cfg(test)]
    pub fn add_channel(self: &Arc<Self>, key: &str, channel: Channel) {
        self.insert(NodeInfo {
            name: key.to_owned(),
            address: key.to_owned(),
            state: NodeState::UnknownNodeState,
            tls: false,
            server_name: String::new(),
            status: None,
            last_error: String::new(),
            channel,
        });
    }

    fn insert(self: &Arc<Self>, info: NodeInfo) {
        let key = info.address.clone();
        let channel = info.channel.clone();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        {
            let mut nodes = self.lock();
            if nodes.contains_key(&key) {
                return;
            }
            nodes.insert(
                key.clone(),
                Entry {
                    info,
                    stop: stop_tx,
                },
            );
        }
        tracing::info!(address = %key, "node added");
        let pool = self.clone();
        tokio::spawn(async move { pool.check_loop(key, channel, stop_rx).await });
    }

    /// Removes a node (a Peer service said it left, or DNS no longer has it).
    pub fn remove(&self, address: &str) {
        let key = Address::parse(address, DEFAULT_AGENT_PORT)
            .map(|a| a.authority())
            .unwrap_or_else(|_| address.to_owned());
        let removed = self.lock().remove(&key);
        if let Some(e) = removed {
            let _ = e.stop.send(true);
            tracing::info!(address = %key, "node removed");
            let _ = self.events.send(NodeEvent {
                name: e.info.name,
                address: key,
                state: NodeState::NodeGone,
                message: "removed from the peer list".to_owned(),
            });
        }
    }

    async fn check_loop(
        self: Arc<Self>,
        key: String,
        channel: Channel,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut client = ObserverClient::new(channel);
        let mut backoff = CHECK_EVERY;
        let mut named = false;
        loop {
            let result =
                tokio::time::timeout(CHECK_EVERY, client.server_status(ServerStatusRequest {}))
                    .await;
            let outcome = match result {
                Ok(Ok(r)) => Ok(r.into_inner()),
                Ok(Err(s)) => Err(format!("{}: {}", code_name(s.code()), s.message())),
                Err(_) => Err(format!("no answer within {CHECK_EVERY:?}")),
            };
            if outcome.is_ok() && !named {
                // The node's own name, from GetNodes (webb agents answer with
                // themselves; Hubble agents may not, and keep the address).
                if let Ok(Ok(r)) =
                    tokio::time::timeout(CHECK_EVERY, client.get_nodes(GetNodesRequest {})).await
                    && let Some(n) = r.into_inner().nodes.into_iter().next()
                    && !n.name.is_empty()
                {
                    self.rename(&key, &n.name);
                }
                named = true;
            }
            let wait = match outcome {
                Ok(status) => {
                    backoff = CHECK_EVERY;
                    self.update(&key, NodeState::NodeConnected, Some(status), String::new());
                    CHECK_EVERY
                }
                Err(message) => {
                    self.update(&key, NodeState::NodeUnavailable, None, message);
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    fn rename(&self, key: &str, name: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.info.name = name.to_owned();
        }
    }

    fn update(
        &self,
        key: &str,
        state: NodeState,
        status: Option<ServerStatusResponse>,
        message: String,
    ) {
        let event = {
            let mut nodes = self.lock();
            let Some(e) = nodes.get_mut(key) else { return };
            let changed = e.info.state != state;
            e.info.state = state;
            if status.is_some() {
                e.info.status = status;
            }
            e.info.last_error = message.clone();
            changed.then(|| NodeEvent {
                name: e.info.name.clone(),
                address: key.to_owned(),
                state,
                message,
            })
        };
        if let Some(ev) = event {
            match ev.state {
                NodeState::NodeConnected => {
                    tracing::info!(node = %ev.name, address = %ev.address, "node connected")
                }
                _ => {
                    tracing::warn!(node = %ev.name, address = %ev.address, error = %ev.message, "node unavailable")
                }
            }
            let _ = self.events.send(ev);
        }
    }

    /// Follows an agent's Peer service: adds and removes nodes as it says.
    /// Reconnects with backoff when the stream breaks.
    pub async fn follow_peer_service(self: Arc<Self>, address: Address) {
        let mut backoff = Duration::from_millis(500);
        loop {
            match transport::connect(&address, self.tls.as_ref(), self.dial_timeout).await {
                Ok(channel) => match PeerClient::new(channel).notify(NotifyRequest {}).await {
                    Ok(stream) => {
                        backoff = Duration::from_millis(500);
                        let mut stream = stream.into_inner();
                        while let Some(Ok(n)) = stream.next().await {
                            let kind = ChangeNotificationType::try_from(n.r#type)
                                .unwrap_or(ChangeNotificationType::Unknown);
                            let server_name = n.tls.as_ref().map(|t| t.server_name.as_str());
                            match kind {
                                ChangeNotificationType::PeerAdded
                                | ChangeNotificationType::PeerUpdated => {
                                    if let Err(e) = self.add(&n.address, Some(&n.name), server_name)
                                    {
                                        tracing::warn!("peer service {address}: {e:#}");
                                    }
                                }
                                ChangeNotificationType::PeerDeleted => self.remove(&n.address),
                                ChangeNotificationType::Unknown => {}
                            }
                        }
                        tracing::warn!("peer service {address}: stream ended; reconnecting");
                    }
                    Err(s) => tracing::warn!("peer service {address}: {}", s.message()),
                },
                Err(e) => tracing::warn!("peer service: {e}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Resolves `name:port` every `every` and keeps the pool equal to the
    /// answer (a Kubernetes headless service lists one address per agent).
    pub async fn follow_dns(self: Arc<Self>, name: String, port: u16, every: Duration) {
        let mut known: Vec<String> = Vec::new();
        loop {
            match tokio::net::lookup_host((name.as_str(), port)).await {
                Ok(addrs) => {
                    let mut now: Vec<String> = addrs.map(|a| a.to_string()).collect();
                    now.sort();
                    now.dedup();
                    for a in now.iter().filter(|a| !known.contains(a)) {
                        if let Err(e) = self.add(a, None, None) {
                            tracing::warn!("peer dns {name}: {e:#}");
                        }
                    }
                    for a in known.iter().filter(|a| !now.contains(a)) {
                        self.remove(a);
                    }
                    known = now;
                }
                Err(e) => tracing::warn!("peer dns {name}:{port}: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// gRPC code names as Go's grpc prints them (`Unavailable`).
pub fn code_name(c: tonic::Code) -> String {
    format!("{c:?}")
}

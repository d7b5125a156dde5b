//! The agent's gRPC API: Hubble's Observer and Peer services and the standard
//! health service, over the [`Hub`]. Handlers only query or subscribe; they
//! never wait on the ingest path.

use std::{pin::Pin, sync::Arc, sync::atomic::Ordering};

use futures::{Stream, StreamExt as _, stream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use webb_proto::{
    filter::FlowFilters,
    flow::{LostEvent, LostEventSource},
    mask::FlowMask,
    observer::{
        self, GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
        GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Namespace, Node,
        ServerStatusRequest, ServerStatusResponse, get_flows_response::ResponseTypes,
        observer_server::Observer,
    },
    peer::{ChangeNotification, ChangeNotificationType, NotifyRequest, peer_server::Peer},
    relay::NodeState,
    wkt::Timestamp,
};

use crate::observer::{Hub, Item, Query, count_lost};

type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;

/// Shared by the Observer and Peer services.
#[derive(Clone)]
pub struct Service {
    pub hub: Arc<Hub>,
    /// `--flow-store`: history older than the ring.
    pub store: Option<Arc<crate::store::FlowStore>>,
    pub node_name: String,
    /// The address peers and relays should dial (`--listen`, or
    /// `--advertise-address`).
    pub address: String,
    /// Every other node's agent (name, address), from the Kubernetes
    /// source's Nodes; empty without it.
    pub peers: tokio::sync::watch::Receiver<Vec<(String, String)>>,
    /// What the reconciler knows, for ServerStatus.
    pub cluster_status: tokio::sync::watch::Receiver<crate::cluster::Status>,
    /// What the agent learned and did, for GetAgentEvents.
    pub agent_events: Arc<crate::agent_events::AgentEvents>,
}

/// The request's field mask, compiled; a path naming no Flow field is the
/// client's mistake and is answered as one.
fn field_mask(req: &GetFlowsRequest) -> Result<Option<Arc<FlowMask>>, Status> {
    FlowMask::from_request(req)
        .map(|m| m.map(Arc::new))
        .map_err(|e| Status::invalid_argument(format!("invalid fieldmask: {e}")))
}

/// A history's report of what it no longer holds; with `span`, the time of
/// the first flow lost and of the oldest flow still held (Hubble prints
/// them as "(first: ..., last: ...)").
fn lost_report(
    node_name: &str,
    count: u64,
    span: Option<(Timestamp, Timestamp)>,
) -> GetFlowsResponse {
    let now = Timestamp::from(std::time::SystemTime::now());
    GetFlowsResponse {
        time: Some(now),
        node_name: node_name.to_owned(),
        response_types: Some(ResponseTypes::LostEvents(LostEvent {
            source: LostEventSource::HubbleRingBuffer as i32,
            num_events_lost: count,
            cpu: None,
            first: span.map(|(f, _)| f),
            last: span.map(|(_, l)| l),
        })),
    }
}

/// Removes the subscription when the client's stream is dropped.
struct Unsubscribe {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.id);
    }
}

#[tonic::async_trait]
impl Observer for Service {
    type GetFlowsStream = FlowStream;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<FlowStream>, Status> {
        let req = request.into_inner();
        let mask = field_mask(&req)?;
        let filters = FlowFilters::compile(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let (Some(s), Some(u)) = (req.since, req.until)
            && s > u
        {
            return Err(Status::invalid_argument("since is after until"));
        }
        let query = Query {
            filters,
            number: req.number,
            first: req.first,
            follow: req.follow,
            since: req.since,
            until: req.until,
        };
        // Read before the snapshot: every flow published after it has a
        // later time, so a heartbeat carrying it may follow the history.
        let history_watermark = self.hub.watermark();
        // The store reads files: off the async workers.
        let (hub, store) = (self.hub.clone(), self.store.clone());
        let found = tokio::task::spawn_blocking(move || {
            crate::store::history(&hub, store.as_deref(), &query)
        })
        .await
        .map_err(|e| Status::internal(format!("reading history: {e}")))?;
        let mut snap = found.snapshot;
        let mut head: Vec<Item> = Vec::with_capacity(1);
        if snap.overwritten > 0 {
            let report = lost_report(&self.node_name, snap.overwritten, snap.lost_span);
            count_lost(&self.hub, &report);
            head.push(Arc::new(report));
        }
        let ring = stream::iter(std::mem::take(&mut snap.history));
        // The store's part streams from a blocking reader a block at a
        // time, ahead of the ring's; the two together give at most `limit`.
        let history: Pin<Box<dyn Stream<Item = Item> + Send>> = match found.older {
            Some(scan) => {
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                tokio::task::spawn_blocking(move || {
                    for item in scan {
                        if tx.blocking_send(item).is_err() {
                            break;
                        }
                    }
                });
                Box::pin(
                    stream::iter(head).chain(ReceiverStream::new(rx).chain(ring).take(found.limit)),
                )
            }
            None => Box::pin(stream::iter(head).chain(ring)),
        };

        let hub = self.hub.clone();
        let until = req.until;
        // Each response leaves as its own message: cloned whole, or built
        // from just the masked fields.
        let mut masker = mask.map(|m| m.masker());
        let send = move |item: Item| {
            Ok(match &mut masker {
                Some(m) => m.response(&item),
                None => Arc::unwrap_or_clone(item),
            })
        };
        let out: FlowStream = match (snap.live.take(), snap.subscriber_id) {
            (Some(rx), Some(id)) => {
                let guard = Unsubscribe {
                    hub: hub.clone(),
                    id,
                };
                let counting = hub.clone();
                let live = ReceiverStream::new(rx).inspect(move |item| {
                    let _keep = &guard;
                    count_lost(&counting, item);
                });
                // Heartbeats (webb relays ask for them) go out only when no
                // flow is waiting, so a heartbeat never overtakes a flow
                // published before its watermark.
                let live: Pin<Box<dyn Stream<Item = Item> + Send>> = if req.webb_heartbeat_ms > 0 {
                    // The first heartbeat comes straight after the history,
                    // so a relay knows where this node's history ends (it
                    // holds the cluster's newest N until every node's has).
                    let history_end = Arc::new(GetFlowsResponse {
                        time: history_watermark,
                        node_name: self.node_name.clone(),
                        response_types: None,
                    });
                    let every =
                        std::time::Duration::from_millis(u64::from(req.webb_heartbeat_ms.max(10)));
                    let node_name = self.node_name.clone();
                    let beats =
                        tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(every))
                            .filter_map(move |_| {
                                let beat = hub.watermark().map(|time| {
                                    Arc::new(GetFlowsResponse {
                                        time: Some(time),
                                        node_name: node_name.clone(),
                                        response_types: None,
                                    })
                                });
                                std::future::ready(beat)
                            });
                    Box::pin(stream::once(std::future::ready(history_end)).chain(
                        stream::select_with_strategy(live, beats, |_: &mut ()| {
                            stream::PollNext::Left
                        }),
                    ))
                } else {
                    Box::pin(live)
                };
                Box::pin(
                    history
                        .chain(live)
                        .take_while(move |item| {
                            let within = until.is_none_or(|u| item.time.is_none_or(|t| t <= u));
                            std::future::ready(within)
                        })
                        .map(send),
                )
            }
            _ => Box::pin(history.map(send)),
        };
        Ok(Response::new(out))
    }

    type GetAgentEventsStream =
        Pin<Box<dyn Stream<Item = Result<GetAgentEventsResponse, Status>> + Send>>;

    /// The kept agent events the request selects, then, with `follow`, new
    /// ones as they happen. A follower too slow for them is told how many it
    /// missed (and they are counted) rather than holding the reconciler.
    async fn get_agent_events(
        &self,
        request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        let req = request.into_inner();
        if let (Some(s), Some(u)) = (req.since, req.until)
            && s > u
        {
            return Err(Status::invalid_argument("since is after until"));
        }
        let live = req.follow.then(|| self.agent_events.subscribe());
        let (kept, next) = self.agent_events.select(&req);
        let history = futures::stream::iter(kept.into_iter().map(Ok));
        let Some(rx) = live else {
            return Ok(Response::new(Box::pin(history)));
        };
        let events = self.agent_events.clone();
        let until = req.until;
        let live = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(move |item| {
                let events = events.clone();
                async move {
                    match item {
                        Ok((seq, r)) if seq >= next => Some(Ok(r)),
                        Ok(_) => None,
                        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(
                            n,
                        )) => {
                            events.count_lag(n);
                            tracing::warn!("a GetAgentEvents follower missed {n} agent events");
                            None
                        }
                    }
                }
            })
            .take_while(move |r| {
                let more = match (r, until) {
                    (Ok(r), Some(u)) => r.time.is_none_or(|t| t <= u),
                    _ => true,
                };
                async move { more }
            });
        Ok(Response::new(Box::pin(history.chain(live))))
    }

    type GetDebugEventsStream =
        Pin<Box<dyn Stream<Item = Result<GetDebugEventsResponse, Status>> + Send>>;

    /// Cilium's datapath debug messages. webb's datapath writes none, so
    /// the answer is empty: it ends at once, or with `follow` stays open
    /// (as Cilium's would with debug output off) until the client leaves.
    async fn get_debug_events(
        &self,
        req: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        let stream: Self::GetDebugEventsStream = if req.get_ref().follow {
            Box::pin(futures::stream::pending())
        } else {
            Box::pin(futures::stream::empty())
        };
        Ok(Response::new(stream))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let st = self.hub.status();
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: self.node_name.clone(),
                version: version(),
                address: self.address.clone(),
                state: NodeState::NodeConnected as i32,
                tls: Some(observer::Tls {
                    enabled: false,
                    server_name: String::new(),
                }),
                uptime_ns: self.hub.started.elapsed().as_nanos() as u64,
                num_flows: st.num_flows,
                max_flows: st.max_flows,
                seen_flows: st.seen_flows,
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let st = self.hub.status();
        Ok(Response::new(GetNamespacesResponse {
            namespaces: st
                .namespaces
                .into_iter()
                .map(|namespace| Namespace {
                    cluster: String::new(),
                    namespace,
                })
                .collect(),
        }))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let st = self.hub.status();
        let c = &self.hub.counters;
        let cluster = self.cluster_status.borrow().clone();
        let stored = self.store.as_ref().map(|s| (s.status(), s.counters()));
        let oldest = stored
            .as_ref()
            .and_then(|(s, _)| s.oldest)
            .into_iter()
            .chain(st.oldest)
            .min();
        let (stored_flows, store_bytes, not_stored, corrupt) =
            stored.as_ref().map_or((0, 0, 0, 0), |(s, c)| {
                (
                    s.items,
                    s.bytes,
                    c.not_stored.load(Ordering::Relaxed),
                    c.corrupt_blocks.load(Ordering::Relaxed),
                )
            });
        Ok(Response::new(ServerStatusResponse {
            num_flows: st.num_flows,
            max_flows: st.max_flows,
            seen_flows: st.seen_flows,
            uptime_ns: self.hub.started.elapsed().as_nanos() as u64,
            num_connected_nodes: None,
            num_unavailable_nodes: None,
            unavailable_nodes: Vec::new(),
            version: version(),
            flows_rate: st.flows_rate,
            webb_lost_events: c.lost_events.load(Ordering::Relaxed),
            webb_malformed_packets: c.malformed_packets.load(Ordering::Relaxed),
            webb_non_ip_packets: c.non_ip_packets.load(Ordering::Relaxed),
            webb_packets: c.packets.load(Ordering::Relaxed),
            webb_policy_drops: c.policy_drops.load(Ordering::Relaxed),
            webb_l7_flows: c.l7.flows.load(Ordering::Relaxed),
            webb_l7_counts: c
                .l7
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            webb_sources: cluster.sources.into_iter().collect(),
            webb_endpoints: cluster.endpoints,
            webb_oldest_flow: oldest,
            webb_stored_flows: stored_flows,
            webb_store_bytes: store_bytes,
            webb_store_not_stored: not_stored,
            webb_store_corrupt_blocks: corrupt,
            webb_kernel_events: c.kernel_events.load(Ordering::Relaxed),
            webb_flow_packets: c.flow_packets.load(Ordering::Relaxed),
            webb_flow_bytes: c.flow_bytes.load(Ordering::Relaxed),
        }))
    }
}

#[tonic::async_trait]
impl Peer for Service {
    type NotifyStream = Pin<Box<dyn Stream<Item = Result<ChangeNotification, Status>> + Send>>;

    /// Itself, then every other node's agent the Kubernetes source knows
    /// (each node's address on this agent's port, as Cilium agents list the
    /// cluster's nodes), with additions and removals as nodes come and go:
    /// the real hubble-relay pointed at any one agent serves the cluster.
    /// The stream stays open, as a Cilium agent's does, so relays can treat
    /// its end as the node leaving.
    async fn notify(
        &self,
        _: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let me = ChangeNotification {
            name: self.node_name.clone(),
            address: self.address.clone(),
            r#type: ChangeNotificationType::PeerAdded as i32,
            tls: None,
        };
        let note = |(name, address): &(String, String), t: ChangeNotificationType| {
            Ok(ChangeNotification {
                name: name.clone(),
                address: address.clone(),
                r#type: t as i32,
                tls: None,
            })
        };
        let mut peers = self.peers.clone();
        let mut known: Vec<(String, String)> = peers.borrow_and_update().clone();
        let first: Vec<Result<ChangeNotification, Status>> = std::iter::once(Ok(me))
            .chain(
                known
                    .iter()
                    .map(|p| note(p, ChangeNotificationType::PeerAdded)),
            )
            .collect();
        let changes = async_stream_changes(move |tx| async move {
            while peers.changed().await.is_ok() {
                let now = peers.borrow_and_update().clone();
                for p in known.iter().filter(|p| !now.contains(p)) {
                    if tx
                        .send(note(p, ChangeNotificationType::PeerDeleted))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                for p in now.iter().filter(|p| !known.contains(p)) {
                    if tx
                        .send(note(p, ChangeNotificationType::PeerAdded))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                known = now;
            }
            std::future::pending::<()>().await;
        });
        Ok(Response::new(Box::pin(stream::iter(first).chain(changes))))
    }
}

pub fn version() -> String {
    format!("webb {}", env!("CARGO_PKG_VERSION"))
}

/// A stream fed by a task that sends into a channel (ends when the task
/// does).
fn async_stream_changes<F, Fut>(
    f: F,
) -> impl Stream<Item = Result<ChangeNotification, Status>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ChangeNotification, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

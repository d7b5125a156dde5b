//! The relay's API: the same Observer service as an agent, for the whole
//! cluster, plus Peer (re-served from the pool) and health.

use std::{pin::Pin, sync::Arc, time::Instant};

use futures::{Stream, StreamExt as _, stream};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use webb_proto::{
    filter::FlowFilters,
    observer::{
        GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
        GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Namespace, Node,
        ServerStatusRequest, ServerStatusResponse, Tls, observer_client::ObserverClient,
        observer_server::Observer,
    },
    peer::{ChangeNotification, ChangeNotificationType, NotifyRequest, peer_server::Peer},
    relay::NodeState,
    wkt::UInt32Value,
};

use crate::{merge, pool::Pool};

#[derive(Clone)]
pub struct Relay {
    pub pool: Arc<Pool>,
    pub merge: merge::Options,
    pub started: Instant,
}

pub const VERSION: &str = concat!("webb-relay ", env!("CARGO_PKG_VERSION"));

/// What `ServerStatus` answers: the nodes' counts summed, and which nodes
/// could not be reached.
pub fn aggregate_status(nodes: &[crate::pool::NodeInfo], uptime_ns: u64) -> ServerStatusResponse {
    let mut s = ServerStatusResponse {
        version: VERSION.to_owned(),
        uptime_ns,
        ..Default::default()
    };
    let (mut connected, mut unavailable) = (0u32, 0u32);
    for n in nodes {
        if n.state == NodeState::NodeConnected {
            connected += 1;
            if let Some(st) = &n.status {
                s.num_flows += st.num_flows;
                s.max_flows += st.max_flows;
                s.seen_flows += st.seen_flows;
                s.flows_rate += st.flows_rate;
                s.webb_lost_events += st.webb_lost_events;
                s.webb_packets += st.webb_packets;
                s.webb_malformed_packets += st.webb_malformed_packets;
                s.webb_non_ip_packets += st.webb_non_ip_packets;
                s.webb_policy_drops += st.webb_policy_drops;
                s.webb_l7_flows += st.webb_l7_flows;
                for (k, v) in &st.webb_l7_counts {
                    *s.webb_l7_counts.entry(k.clone()).or_default() += v;
                }
                s.webb_endpoints += st.webb_endpoints;
                s.webb_oldest_flow = s.webb_oldest_flow.max(st.webb_oldest_flow);
                s.webb_stored_flows += st.webb_stored_flows;
                s.webb_store_bytes += st.webb_store_bytes;
                s.webb_store_not_stored += st.webb_store_not_stored;
                s.webb_store_corrupt_blocks += st.webb_store_corrupt_blocks;
                s.webb_kernel_events += st.webb_kernel_events;
                s.webb_flow_packets += st.webb_flow_packets;
                s.webb_flow_bytes += st.webb_flow_bytes;
                for (k, v) in &st.webb_sources {
                    s.webb_sources.insert(format!("{}/{k}", n.name), v.clone());
                }
            }
        } else {
            unavailable += 1;
            s.unavailable_nodes.push(n.name.clone());
        }
    }
    s.num_connected_nodes = Some(UInt32Value { value: connected });
    s.num_unavailable_nodes = Some(UInt32Value { value: unavailable });
    s
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Relay {
    /// The nodes an Analysis call asks (connected ones), and the names of
    /// the rest, which the answer lists as unavailable.
    fn analysis_nodes(&self) -> (Vec<crate::pool::NodeInfo>, Vec<String>) {
        let (connected, down): (Vec<_>, Vec<_>) = self
            .pool
            .nodes()
            .into_iter()
            .partition(|n| n.state == NodeState::NodeConnected);
        (connected, down.into_iter().map(|n| n.name).collect())
    }

    /// GetFlows with the responses still encoded, as the relay forwards them.
    pub fn get_flows_raw(
        &self,
        req: GetFlowsRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<crate::raw::Raw, Status>>, Status> {
        // Reject a bad filter here, once, rather than from every node.
        FlowFilters::compile(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let (Some(s), Some(u)) = (req.since, req.until)
            && s > u
        {
            return Err(Status::invalid_argument("since is after until"));
        }
        Ok(merge::start(self.pool.clone(), req, self.merge))
    }
}

#[tonic::async_trait]
impl Observer for Relay {
    type GetFlowsStream = BoxStream<GetFlowsResponse>;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        // Clients reach get_flows_raw (raw.rs); this typed path decodes.
        let rx = self.get_flows_raw(req)?;
        let typed = ReceiverStream::new(rx).map(|item| {
            item.and_then(|raw| {
                raw.decode()
                    .map_err(|e| Status::internal(format!("re-decoding a node's response: {e}")))
            })
        });
        Ok(Response::new(Box::pin(typed)))
    }

    type GetAgentEventsStream = BoxStream<GetAgentEventsResponse>;

    /// Every connected node's agent events: without `follow`, each node's
    /// selection merged in time order, and of `number` the cluster's oldest
    /// (`first`) or newest N; with it, each node's stream as its
    /// events come. A node that fails is left out and logged, as GetFlows
    /// leaves out an unavailable node. (hubble-relay does not serve this.)
    async fn get_agent_events(
        &self,
        request: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        let req = request.into_inner();
        let nodes = self.pool.connected();
        let calls = nodes.into_iter().map(|n| async move {
            let mut c = ObserverClient::new(n.channel);
            match c.get_agent_events(req).await {
                Ok(r) => Some(r.into_inner()),
                Err(e) => {
                    tracing::warn!(node = %n.name, "GetAgentEvents: {}", e.message());
                    None
                }
            }
        });
        let streams: Vec<_> = futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect();
        if req.follow {
            let merged = stream::select_all(streams.into_iter().map(|s| {
                // One node's stream failing ends that node's part only.
                s.take_while(|item| {
                    if let Err(e) = item {
                        tracing::warn!("GetAgentEvents: {}", e.message());
                    }
                    futures::future::ready(item.is_ok())
                })
                .boxed()
            }));
            return Ok(Response::new(Box::pin(merged)));
        }
        let mut all = Vec::new();
        for s in streams {
            let events: Vec<_> = s.filter_map(|i| async move { i.ok() }).collect().await;
            all.extend(events);
        }
        all.sort_by_key(|r: &GetAgentEventsResponse| r.time.unwrap_or_default());
        // Each node answered its N: the cluster's oldest or newest N are
        // kept, as GetFlows does.
        if let Ok(n) = usize::try_from(req.number)
            && n > 0
            && all.len() > n
        {
            if req.first {
                all.truncate(n);
            } else {
                all.drain(..all.len() - n);
            }
        }
        Ok(Response::new(Box::pin(stream::iter(
            all.into_iter().map(Ok),
        ))))
    }

    type GetDebugEventsStream = BoxStream<GetDebugEventsResponse>;

    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented(
            "GetDebugEvents is specific to the Cilium agent",
        ))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let nodes = self
            .pool
            .nodes()
            .into_iter()
            .map(|n| {
                let st = n.status.clone().unwrap_or_default();
                let connected = n.state == NodeState::NodeConnected;
                Node {
                    name: n.name,
                    version: st.version.clone(),
                    address: n.address,
                    state: n.state as i32,
                    tls: Some(Tls {
                        enabled: n.tls,
                        server_name: n.server_name,
                    }),
                    uptime_ns: if connected { st.uptime_ns } else { 0 },
                    num_flows: if connected { st.num_flows } else { 0 },
                    max_flows: if connected { st.max_flows } else { 0 },
                    seen_flows: if connected { st.seen_flows } else { 0 },
                }
            })
            .collect();
        Ok(Response::new(GetNodesResponse { nodes }))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let calls = self.pool.connected().into_iter().map(|n| async move {
            let mut c = ObserverClient::new(n.channel);
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                c.get_namespaces(GetNamespacesRequest {}),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|r| r.into_inner().namespaces)
            .unwrap_or_default()
        });
        let mut all: Vec<Namespace> = futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect();
        all.sort_by(|a, b| (&a.cluster, &a.namespace).cmp(&(&b.cluster, &b.namespace)));
        all.dedup();
        Ok(Response::new(GetNamespacesResponse { namespaces: all }))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let uptime = self.started.elapsed().as_nanos() as u64;
        Ok(Response::new(aggregate_status(&self.pool.nodes(), uptime)))
    }
}

#[tonic::async_trait]
impl Peer for Relay {
    type NotifyStream = BoxStream<ChangeNotification>;

    /// Every known node as PEER_ADDED, then additions and removals.
    async fn notify(
        &self,
        _: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let events = self.pool.subscribe();
        let known: Vec<_> = self
            .pool
            .nodes()
            .into_iter()
            .map(|n| {
                Ok(ChangeNotification {
                    name: n.name,
                    address: n.address,
                    r#type: ChangeNotificationType::PeerAdded as i32,
                    tls: None,
                })
            })
            .collect();
        let changes =
            tokio_stream::wrappers::BroadcastStream::new(events).filter_map(|ev| async move {
                let ev = ev.ok()?;
                let kind = match ev.state {
                    NodeState::NodeGone => ChangeNotificationType::PeerDeleted,
                    NodeState::NodeConnected => ChangeNotificationType::PeerUpdated,
                    _ => return None,
                };
                Some(Ok(ChangeNotification {
                    name: ev.name,
                    address: ev.address,
                    r#type: kind as i32,
                    tls: None,
                }))
            });
        Ok(Response::new(Box::pin(stream::iter(known).chain(changes))))
    }
}

/// webb's Analysis service for the cluster: every connected node answers
/// for its own flows, and the answers are merged. A node without the
/// service (a Hubble agent) has its flows of the window read and summed
/// here instead.
#[tonic::async_trait]
impl webb_proto::analysis::analysis_server::Analysis for Relay {
    async fn top(
        &self,
        request: Request<webb_proto::analysis::TopRequest>,
    ) -> Result<Response<webb_proto::analysis::TopResponse>, Status> {
        use webb_proto::analysis::{TopResponse, analysis_client::AnalysisClient};
        let req = request.into_inner();
        FlowFilters::compile(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let (Some(s), Some(u)) = (req.since, req.until)
            && s > u
        {
            return Err(Status::invalid_argument("since is after until"));
        }
        let (connected, down) = self.analysis_nodes();
        let req = &req;
        let calls = connected.into_iter().map(|n| async move {
            let asked = AnalysisClient::new(n.channel.clone())
                .top(req.clone())
                .await;
            let answer = match asked {
                Err(e) if e.code() == tonic::Code::Unimplemented => {
                    let mut flows =
                        ObserverClient::new(n.channel.clone()).max_decoding_message_size(64 << 20);
                    webb_proto::top::over_get_flows(&mut flows, req).await
                }
                other => other.map(Response::into_inner),
            };
            match answer {
                Ok(mut a) => {
                    a.nodes = vec![n.name];
                    a
                }
                Err(e) => {
                    tracing::warn!(node = %n.name, "Top: {}", e.message());
                    TopResponse {
                        unavailable_nodes: vec![n.name],
                        ..Default::default()
                    }
                }
            }
        });
        // Each answer is merged as it arrives, while slower nodes answer.
        let mut pending: futures::stream::FuturesUnordered<_> = calls.collect();
        let mut merger = webb_proto::top::Merger::default();
        while let Some(answer) = pending.next().await {
            merger.add(answer);
        }
        let mut merged = merger.finish();
        merged.unavailable_nodes.extend(down);
        merged.nodes.sort();
        merged.unavailable_nodes.sort();
        Ok(Response::new(merged))
    }

    /// Every connected node decides its own connections; candidates that do
    /// not parse are the caller's error, said once. A node without the
    /// service (a Hubble agent) cannot decide as webb's datapath does and is
    /// listed as unavailable.
    async fn what_if(
        &self,
        request: Request<webb_proto::analysis::WhatIfRequest>,
    ) -> Result<Response<webb_proto::analysis::WhatIfResponse>, Status> {
        use webb_proto::analysis::{WhatIfResponse, analysis_client::AnalysisClient};
        let req = request.into_inner();
        FlowFilters::compile(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (connected, down) = self.analysis_nodes();
        let req = &req;
        let calls = connected.into_iter().map(|n| async move {
            let asked = AnalysisClient::new(n.channel.clone())
                .what_if(req.clone())
                .await;
            (n.name, asked)
        });
        let mut answers = Vec::new();
        for (name, asked) in futures::future::join_all(calls).await {
            match asked {
                Ok(a) => {
                    let mut a = a.into_inner();
                    a.nodes = vec![name];
                    answers.push(a);
                }
                Err(e) if e.code() == tonic::Code::InvalidArgument => return Err(e),
                Err(e) => {
                    tracing::warn!(node = %name, "WhatIf: {}", e.message());
                    answers.push(WhatIfResponse {
                        unavailable_nodes: vec![name],
                        ..Default::default()
                    });
                }
            }
        }
        let mut merged = webb_proto::whatif::merge(answers);
        merged.unavailable_nodes.extend(down);
        merged.nodes.sort();
        merged.unavailable_nodes.sort();
        Ok(Response::new(merged))
    }
}

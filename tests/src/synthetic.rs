//! Synthetic nodes: the generated Observer server trait, answered by a
//! script. Unit tests of the relay and the relay benchmark use them where a
//! real agent would be too slow to steer; end-to-end tests never do.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};
use webb_proto::{
    observer::{
        GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
        GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Node, ServerStatusRequest,
        ServerStatusResponse, observer_server::Observer,
    },
    wkt::Timestamp,
};

pub type FlowStream = Pin<Box<dyn Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;

/// What a synthetic node answers to GetFlows.
pub trait Script: Send + Sync + 'static {
    fn get_flows(&self, node: &str, req: GetFlowsRequest) -> FlowStream;
    /// The flows its ring holds, for ServerStatus.
    fn num_flows(&self) -> u64 {
        0
    }
}

/// A node named `name` whose GetFlows is `script`. GetNodes answers with
/// itself, as a webb agent does.
pub struct SyntheticNode<S> {
    pub name: String,
    pub script: S,
}

/// A webb heartbeat: no response type, the node's watermark as its time.
pub fn heartbeat(node: &str, time: Timestamp) -> GetFlowsResponse {
    GetFlowsResponse {
        time: Some(time),
        node_name: node.to_owned(),
        response_types: None,
    }
}

#[tonic::async_trait]
impl<S: Script> Observer for SyntheticNode<S> {
    type GetFlowsStream = FlowStream;

    async fn get_flows(&self, r: Request<GetFlowsRequest>) -> Result<Response<FlowStream>, Status> {
        Ok(Response::new(
            self.script.get_flows(&self.name, r.into_inner()),
        ))
    }

    type GetAgentEventsStream = futures::stream::Empty<Result<GetAgentEventsResponse, Status>>;
    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("synthetic node"))
    }

    type GetDebugEventsStream = futures::stream::Empty<Result<GetDebugEventsResponse, Status>>;
    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("synthetic node"))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: self.name.clone(),
                ..Default::default()
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse::default()))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            num_flows: self.script.num_flows(),
            ..Default::default()
        }))
    }
}

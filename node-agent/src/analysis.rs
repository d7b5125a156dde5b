//! webb's Analysis service (`proto/webb/analysis.proto`): answers computed
//! on the node, from the same history GetFlows reads (the flow store, then
//! the ring), so a relay or `webb top` receives sums, not flows.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use webb_proto::{
    analysis::{TopRequest, TopResponse, analysis_server::Analysis},
    filter::FlowFilters,
    flow::Flow,
    observer::get_flows_response::ResponseTypes,
    top::{self, Aggregator},
    wkt::Timestamp,
};

use crate::{
    observer::{Hub, Query},
    store::FlowStore,
};

#[derive(Clone)]
pub struct Analyst {
    pub hub: Arc<Hub>,
    pub store: Option<Arc<FlowStore>>,
    pub node_name: String,
}

/// The Top answer over this node's history.
pub fn top(
    hub: &Hub,
    store: Option<&FlowStore>,
    node_name: &str,
    req: &TopRequest,
) -> Result<TopResponse, Status> {
    let filters = FlowFilters::compile(&req.whitelist, &req.blacklist)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let (Some(s), Some(u)) = (req.since, req.until)
        && s > u
    {
        return Err(Status::invalid_argument("since is after until"));
    }
    let since = req.since;
    let until = req
        .until
        .unwrap_or_else(|| Timestamp::from(std::time::SystemTime::now()));
    let query = Query {
        filters,
        number: 0,
        first: true,
        follow: false,
        since,
        until: Some(until),
    };
    let mut agg = Aggregator::new(top::keys(&req.by));
    let mut visit = |f: &Flow| agg.add(f);
    let selection = hub.select(&query, since);
    let mut gone = selection.overwritten;
    if let Some(store) = store {
        let mut scan = store.scan(&query, selection.first_seq);
        for item in scan.by_ref() {
            if let Some(ResponseTypes::Flow(f)) = &item.response_types {
                visit(f);
            }
        }
        // What neither holds: gone from before the store's oldest flow.
        gone = scan.missing;
    }
    selection.visit(&mut visit);
    let mut answer = agg.finish();
    answer.flows_gone = gone;
    answer.nodes = vec![node_name.to_owned()];
    Ok(answer)
}

#[tonic::async_trait]
impl Analysis for Analyst {
    async fn top(&self, request: Request<TopRequest>) -> Result<Response<TopResponse>, Status> {
        let req = request.into_inner();
        let this = self.clone();
        // The store reads files and the sums take a while: off the async
        // workers.
        tokio::task::spawn_blocking(move || {
            top(&this.hub, this.store.as_deref(), &this.node_name, &req)
        })
        .await
        .map_err(|e| Status::internal(format!("aggregating: {e}")))?
        .map(Response::new)
    }
}

//! webb's Analysis service (`proto/webb/analysis.proto`): answers computed
//! on the node, from the same history GetFlows reads (the flow store, then
//! the ring), so a relay or `webb top` receives sums, not flows.

mod whatif;

use std::sync::{Arc, RwLock};

use tonic::{Request, Response, Status};
use webb_proto::{
    analysis::{TopRequest, TopResponse, WhatIfRequest, WhatIfResponse, analysis_server::Analysis},
    filter::FlowFilters,
    flow::{Flow, FlowFilter},
    observer::get_flows_response::ResponseTypes,
    top::{self, Aggregator},
    wkt::Timestamp,
};

use crate::{
    decode::Context,
    observer::{Hub, Query},
    store::FlowStore,
};

#[derive(Clone)]
pub struct Analyst {
    pub hub: Arc<Hub>,
    pub store: Option<Arc<FlowStore>>,
    pub node_name: String,
    /// The endpoint table and policy in force, as the decoder names flows.
    pub context: Arc<RwLock<Context>>,
}

/// Calls `visit` on every flow of [since, until] (since absent: the oldest
/// held; until absent: now) that passes the filters, oldest first, from the
/// flow store and then the ring; returns how many flows the window wanted
/// that neither holds any more.
fn visit_window(
    hub: &Hub,
    store: Option<&FlowStore>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    (whitelist, blacklist): (&[FlowFilter], &[FlowFilter]),
    mut visit: impl FnMut(&Flow),
) -> Result<u64, Status> {
    let filters = FlowFilters::compile(whitelist, blacklist)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(Status::invalid_argument("since is after until"));
    }
    let until = until.unwrap_or_else(|| Timestamp::from(std::time::SystemTime::now()));
    let query = Query {
        filters,
        number: 0,
        first: true,
        follow: false,
        since,
        until: Some(until),
    };
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
    Ok(gone)
}

/// The Top answer over this node's history.
pub fn top(
    hub: &Hub,
    store: Option<&FlowStore>,
    node_name: &str,
    req: &TopRequest,
) -> Result<TopResponse, Status> {
    let mut agg = Aggregator::new(top::keys(&req.by));
    let gone = visit_window(
        hub,
        store,
        req.since,
        req.until,
        (&req.whitelist, &req.blacklist),
        |f| agg.add(f),
    )?;
    let mut answer = agg.finish();
    answer.flows_gone = gone;
    answer.nodes = vec![node_name.to_owned()];
    Ok(answer)
}

/// The WhatIf answer over this node's history: its connections decided by
/// the policies in force and by them with the candidates.
pub fn what_if(
    hub: &Hub,
    store: Option<&FlowStore>,
    context: &Context,
    req: &WhatIfRequest,
) -> Result<WhatIfResponse, Status> {
    let mut judge = whatif::Judge::new(&context.endpoints, &context.policy, &req.policies)?;
    let mut changes = webb_proto::whatif::Changes::default();
    let gone = visit_window(
        hub,
        store,
        req.since,
        req.until,
        (&req.whitelist, &req.blacklist),
        |f| judge.judge(f, &mut changes),
    )?;
    let mut answer = changes.finish();
    answer.flows_gone = gone;
    answer.nodes = vec![context.node_name.clone()];
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

    async fn what_if(
        &self,
        request: Request<WhatIfRequest>,
    ) -> Result<Response<WhatIfResponse>, Status> {
        let req = request.into_inner();
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let context = this
                .context
                .read()
                .map_err(|_| Status::internal("the naming context's lock is poisoned"))?
                .clone();
            what_if(&this.hub, this.store.as_deref(), &context, &req)
        })
        .await
        .map_err(|e| Status::internal(format!("deciding: {e}")))?
        .map(Response::new)
    }
}

//! gRPC helpers for tests: real connections to a real server.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use webb_proto::{
    flow::{Flow, FlowFilter},
    observer::{
        GetFlowsRequest, GetFlowsResponse, ServerStatusRequest, ServerStatusResponse,
        get_flows_response::ResponseTypes, observer_client::ObserverClient,
    },
};

pub type Client = ObserverClient<tonic::transport::Channel>;

pub async fn connect(addr: &str) -> Client {
    ObserverClient::connect(format!("http://{addr}"))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

/// True when the health service answers SERVING for Hubble's service name.
pub async fn is_serving(addr: &str) -> bool {
    let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
    else {
        return false;
    };
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    h.check(tonic_health::pb::HealthCheckRequest {
        service: webb_proto::OBSERVER_HEALTH_SERVICE.to_owned(),
    })
    .await
    .is_ok_and(|r| {
        r.into_inner().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    })
}

/// Every response of a non-follow query.
pub async fn responses(addr: &str, req: GetFlowsRequest) -> Vec<GetFlowsResponse> {
    let mut c = connect(addr).await;
    let mut s = c.get_flows(req).await.expect("GetFlows").into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.next().await {
        out.push(r.expect("stream item"));
    }
    out
}

pub fn only_flows(rs: Vec<GetFlowsResponse>) -> Vec<Flow> {
    rs.into_iter()
        .filter_map(|r| match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(*f),
            _ => None,
        })
        .collect()
}

/// Flows in the ring matching the filter.
pub async fn flows(addr: &str, whitelist: Vec<FlowFilter>) -> Vec<Flow> {
    only_flows(
        responses(
            addr,
            GetFlowsRequest {
                whitelist,
                ..Default::default()
            },
        )
        .await,
    )
}

/// Polls the ring until `done` holds for the matching flows, or panics
/// after `timeout` showing what was there.
pub async fn wait_for(
    addr: &str,
    whitelist: Vec<FlowFilter>,
    timeout: Duration,
    done: impl Fn(&[Flow]) -> bool,
) -> Vec<Flow> {
    let start = Instant::now();
    loop {
        let got = flows(addr, whitelist.clone()).await;
        if done(&got) {
            return got;
        }
        if start.elapsed() > timeout {
            let all = flows(addr, Vec::new()).await;
            #[allow(deprecated)]
            let summary: Vec<String> = all
                .iter()
                .map(|f| {
                    let ip = f.ip.clone().unwrap_or_default();
                    format!(
                        "{} -> {} {} v{} {}",
                        ip.source, ip.destination, f.summary, f.verdict, f.webb_kernel_drop_reason
                    )
                })
                .collect();
            panic!(
                "condition not met within {timeout:?}; {} matching flows; ring holds:\n{}",
                got.len(),
                summary.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn status(addr: &str) -> ServerStatusResponse {
    connect(addr)
        .await
        .server_status(ServerStatusRequest {})
        .await
        .expect("ServerStatus")
        .into_inner()
}
